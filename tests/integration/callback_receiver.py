"""Clients' callback endpoints for integration tests: a small aiohttp server in a thread that
verifies every delivery with the ``standardwebhooks`` package and records it, and a receiver
that trickles its answer."""

from __future__ import annotations

import asyncio
import re
import threading
import time
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


class TricklingReceiver:
    """A hostile or broken callback endpoint: reads each request whole, then answers
    ``200 OK`` one byte every ``interval`` seconds, for as long as the sender stays. It notes
    when each connection opened and when the sender closed it, and the most open at once."""

    ANSWER = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"

    def __init__(self, interval: float = 2.0) -> None:
        self.interval = interval
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/hooks"
        self.connections: list[dict[str, float | None]] = []  # opened, closed (monotonic)
        self.most_open = 0
        self._open = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen: dict[str, float | None] = {"opened": time.monotonic(), "closed": None}
        self.connections.append(seen)
        self._open += 1
        self.most_open = max(self.most_open, self._open)
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            length = re.search(rb"(?i)content-length:\s*(\d+)", head)
            await reader.readexactly(int(length.group(1)) if length else 0)
            for byte in self.ANSWER:
                writer.write(bytes([byte]))
                await writer.drain()
                try:  # the next byte after the interval, unless the sender hangs up first
                    if not await asyncio.wait_for(reader.read(1), self.interval):
                        break
                except TimeoutError:
                    continue
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        finally:
            seen["closed"] = time.monotonic()
            self._open -= 1
            writer.close()

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(
            asyncio.start_server(self._handle, "127.0.0.1", self.port)
        )
        self._ready.set()
        self._loop.run_forever()
        server.close()

    def __enter__(self) -> TricklingReceiver:
        self._thread.start()
        self._ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def lifetimes(self, now: float | None = None) -> list[float]:
        """How long each connection stayed open (until now for one still open)."""
        now = time.monotonic() if now is None else now
        return [(c["closed"] or now) - (c["opened"] or now) for c in self.connections]
