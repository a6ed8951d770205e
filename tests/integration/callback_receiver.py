"""A client's callback endpoint for integration tests: a small aiohttp server in a thread that
verifies every delivery with the ``standardwebhooks`` package and records it."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from aiohttp import web
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from devtools.processes import free_port


class CallbackReceiver:
    """Verifies each delivery with each of ``secrets`` (name -> ``whsec_…``) and records which
    verified it (``verified_with``; ``verified``: the first one did). Answers 500 the first
    time it sees an event id when ``fail_first``, else (and after) 200."""

    def __init__(self, secrets: dict[str, str], *, fail_first: bool = True) -> None:
        self.secrets = secrets
        self.fail_first = fail_first
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/hooks"
        self.deliveries: list[dict[str, Any]] = []
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        payload: dict[str, Any] = {}
        verified_with = []
        for name, secret in self.secrets.items():
            try:
                payload = Webhook(secret).verify(body, dict(request.headers))
                verified_with.append(name)
            except WebhookVerificationError:
                continue
        event_id = request.headers.get("webhook-id", "")
        first = all(d["id"] != event_id for d in self.deliveries)
        status = 500 if first and self.fail_first else 200
        self.deliveries.append(
            {"id": event_id, "status": status, "verified_with": verified_with,
             "verified": next(iter(self.secrets)) in verified_with,
             "type": payload.get("type"), "data": payload.get("data")}
        )  # fmt: skip
        return web.Response(status=status)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        app = web.Application()
        app.router.add_post("/hooks", self._handle)
        runner = web.AppRunner(app)
        self._loop.run_until_complete(runner.setup())
        site = web.TCPSite(runner, "127.0.0.1", self.port)
        self._loop.run_until_complete(site.start())
        self._ready.set()
        self._loop.run_forever()
        self._loop.run_until_complete(runner.cleanup())

    def __enter__(self) -> CallbackReceiver:
        self._thread.start()
        self._ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def acknowledged(self) -> dict[str, dict[str, Any]]:
        """The events answered 200, by type."""
        return {d["type"]: d for d in self.deliveries if d["status"] == 200}
