"""Request context and client authentication: ``Authorization: Bearer <key>`` on every route
but the health checks.

``API_KEYS`` holds keys or their ``sha256:<hex>`` digests (so a deployment need not hold the keys
themselves). A presented key is hashed and compared with every configured digest in constant
time. The key's identity (a digest prefix, never the key) scopes idempotency keys and goes into
logs. Also bounds the total size of request headers (431), before any route runs.
"""

from __future__ import annotations

import hashlib
import hmac
import os

import orjson
import structlog
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared.config import Settings
from shared.errors import AuthenticationFailed, PaymentServiceError

log = structlog.get_logger(__name__)

OPEN_PATHS = frozenset({"/healthz", "/readyz"})
MAX_HEADER_BYTES = 16 * 1024


def key_digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def key_identity(digest: str) -> str:
    """How a client key shows up in logs and in idempotency scopes."""
    return "key_" + digest[:12]


def configured_digests(settings: Settings) -> tuple[str, ...]:
    return tuple(
        entry.removeprefix("sha256:").lower() if entry.startswith("sha256:") else key_digest(entry)
        for entry in settings.client_keys
    )


class RequestContextMiddleware:
    """Every request: a bounded header size (431), a request id (``X-Request-ID``, made when
    absent, returned on the answer, bound into every log line and passed into the task), and
    the client's key (401 unless the route is a health check)."""

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.digests = configured_digests(settings)
        if not self.digests:
            log.warning(
                "auth.disabled", reason="API_KEYS is empty", environment=settings.environment
            )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = scope["headers"]
        request_id = _request_id(headers)
        if sum(len(k) + len(v) for k, v in headers) > MAX_HEADER_BYTES:
            await _reject(
                send,
                PaymentServiceError(
                    f"Request headers must total at most {MAX_HEADER_BYTES} bytes.",
                    code="headers_too_large",
                    status=431,
                ),
                request_id,
            )
            return
        identity = "anonymous"
        if self.digests and scope["path"] not in OPEN_PATHS:
            found = self._identify(headers)
            if found is None:
                await _reject(
                    send, AuthenticationFailed(), request_id, {"www-authenticate": "Bearer"}
                )
                return
            identity = found
        state = scope.setdefault("state", {})
        state["client"] = identity
        state["request_id"] = request_id
        raw_id = request_id.encode()

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", []).append((b"x-request-id", raw_id))
            await send(message)

        with structlog.contextvars.bound_contextvars(client=identity, request_id=request_id):
            await self.app(scope, receive, send_with_id)

    def _identify(self, headers: list[tuple[bytes, bytes]]) -> str | None:
        value = next((v for k, v in headers if k == b"authorization"), b"")
        scheme, _, token = value.decode("latin-1").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return None
        presented = key_digest(token.strip())
        match = None
        for digest in self.digests:  # no early exit: the time says nothing about which key
            if hmac.compare_digest(presented, digest):
                match = digest
        return key_identity(match) if match else None


def _request_id(headers: list[tuple[bytes, bytes]]) -> str:
    given = next((v for k, v in headers if k == b"x-request-id"), b"")
    if 0 < len(given) <= 128 and all(0x21 <= c <= 0x7E for c in given):
        return given.decode()
    return os.urandom(16).hex()


async def _reject(
    send: Send,
    error: PaymentServiceError,
    request_id: str,
    headers: dict[str, str] | None = None,
) -> None:
    body = orjson.dumps({"error": error.to_dict()})
    raw_headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"x-request-id", request_id.encode()),
    ]
    raw_headers += [(k.encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": error.status_code, "headers": raw_headers})
    await send({"type": "http.response.body", "body": body})
