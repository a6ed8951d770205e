"""The yardstick for the accept path: a bare FastAPI POST endpoint, a pydantic body, a 202.

Served by the benchmark with exactly the uvicorn flags of the real API, and with the API's very
logging set-up (``shared.log_config.configure_logging`` with the same settings): JSON lines,
uvicorn's per-request access log off. With uvicorn's default access log on, the yardstick spent
about a third of its time writing lines the API never writes, and the ratio of the real
``POST /payments`` to this one (what the accept goal is about) looked better than it was. For
the same reason it freezes its start-up objects out of garbage collection once started, as the
API does (``shared.process.freeze_startup_objects``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from pydantic import BaseModel, ConfigDict

from shared.log_config import configure_logging
from shared.process import freeze_startup_objects
from shared.settings.service_settings import get_settings


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    account_id: str
    amount: str
    currency: str = "usd"
    payment_method: str | None = None


configure_logging(get_settings())  # as api.main.create_app does


@asynccontextmanager
async def lifespan(_: FastAPI) -> AsyncIterator[None]:
    freeze_startup_objects()  # as api.main's lifespan does
    yield


app = FastAPI(title="bare", lifespan=lifespan)


@app.post("/payments", status_code=202)
async def create(body: Body) -> dict[str, str | None]:
    return {"object": "payment", "status": "queued", **body.model_dump()}
