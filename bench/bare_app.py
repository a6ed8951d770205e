"""The yardstick for the accept path: a bare FastAPI POST endpoint, a pydantic body, a 202.

Served by the benchmark with exactly the uvicorn flags of the real API; the ratio of the real
``POST /payments`` to this one is what the accept goal is about.
"""

from __future__ import annotations

from fastapi import FastAPI
from pydantic import BaseModel, ConfigDict


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    account_id: str
    amount: str
    currency: str = "usd"
    payment_method: str | None = None


app = FastAPI(title="bare")


@app.post("/payments", status_code=202)
async def create(body: Body) -> dict[str, str | None]:
    return {"object": "payment", "status": "queued", **body.model_dump()}
