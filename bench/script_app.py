"""The group-commit micro-benchmark: the bare yardstick plus one Lua script call.

The same endpoint as ``bench.bare_app`` (pydantic body, 202), which also runs one small script
(claim a key with ``SET NX``, push onto a list: the shape of the accept script) before answering.
``BENCH_GROUP_COMMIT=1`` sends the call through ``api.group_commit.GroupCommit``; otherwise
through redis-py's ``register_script``, as the accept path did. Served with the API's uvicorn
flags and logging, so that the difference between the two is the group commit alone.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI

from api.group_commit import GroupCommit
from bench.bare_app import Body
from shared.log_config import configure_logging
from shared.process import freeze_startup_objects
from shared.redis_clients import async_redis
from shared.settings.service_settings import get_settings

SCRIPT = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'EX', 600) then
  redis.call('LPUSH', KEYS[2], ARGV[1])
  return 1
end
return 0
"""

GROUPED = os.environ.get("BENCH_GROUP_COMMIT") == "1"
IN_FLIGHT = int(os.environ.get("BENCH_GROUP_COMMIT_IN_FLIGHT", "0")) or None

settings = get_settings()
configure_logging(settings)
Runner = Callable[..., Awaitable[Any]]
_state: dict[str, Any] = {}


@asynccontextmanager
async def lifespan(_: FastAPI) -> AsyncIterator[None]:
    client = async_redis(settings)
    run: Runner = (
        GroupCommit(client, max_in_flight=IN_FLIGHT).script(SCRIPT)
        if GROUPED
        else client.register_script(SCRIPT)
    )
    _state["run"] = run
    freeze_startup_objects()  # as api.main's lifespan does
    try:
        yield
    finally:
        await client.aclose()


app = FastAPI(title="bare+script", lifespan=lifespan)


@app.post("/payments", status_code=202)
async def create(body: Body) -> dict[str, str | None]:
    keys: Sequence[str] = (f"bench:script:{uuid.uuid4().hex}", "bench:script:queue")
    await _state["run"](keys=keys, args=[body.account_id])
    return {"object": "payment", "status": "queued", **body.model_dump()}
