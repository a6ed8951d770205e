"""The yardstick for the accept path: a bare FastAPI POST endpoint, a pydantic body, a 202.

Served by the benchmark with exactly the uvicorn flags of the real API, and with the API's very
logging set-up (``shared.log_config.configure_logging`` with the same settings): JSON lines,
uvicorn's per-request access log off. With uvicorn's default access log on, the yardstick spent
about a third of its time writing lines the API never writes, and the ratio of the real
``POST /payments`` to this one (what the accept goal is about) looked better than it was.
"""

from __future__ import annotations

from fastapi import FastAPI
from pydantic import BaseModel, ConfigDict

from shared.config import get_settings
from shared.log_config import configure_logging


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    account_id: str
    amount: str
    currency: str = "usd"
    payment_method: str | None = None


configure_logging(get_settings())  # as api.main.create_app does

app = FastAPI(title="bare")


@app.post("/payments", status_code=202)
async def create(body: Body) -> dict[str, str | None]:
    return {"object": "payment", "status": "queued", **body.model_dump()}
