"""Client authentication: ``Authorization: Bearer <key>`` on every route but the health checks.

``API_KEYS`` holds keys or their ``sha256:<hex>`` digests (so a deployment need not hold the keys
themselves). A presented key is hashed and compared with every configured digest in constant
time. The key's identity (a digest prefix, never the key) scopes idempotency keys and goes into
logs. Also bounds the total size of request headers (431), before any route runs.
"""

from __future__ import annotations

import hashlib
import hmac

import orjson
import structlog
from starlette.types import ASGIApp, Receive, Scope, Send

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


class ClientAuthMiddleware:
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
        if sum(len(k) + len(v) for k, v in headers) > MAX_HEADER_BYTES:
            await _reject(
                send,
                PaymentServiceError(
                    f"Request headers must total at most {MAX_HEADER_BYTES} bytes.",
                    code="headers_too_large",
                    status=431,
                ),
            )
            return
        identity = "anonymous"
        if self.digests and scope["path"] not in OPEN_PATHS:
            found = self._identify(headers)
            if found is None:
                await _reject(send, AuthenticationFailed(), {"www-authenticate": "Bearer"})
                return
            identity = found
        scope.setdefault("state", {})["client"] = identity
        with structlog.contextvars.bound_contextvars(client=identity):
            await self.app(scope, receive, send)

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


async def _reject(
    send: Send, error: PaymentServiceError, headers: dict[str, str] | None = None
) -> None:
    body = orjson.dumps({"error": error.to_dict()})
    raw_headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
    ]
    raw_headers += [(k.encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": error.status_code, "headers": raw_headers})
    await send({"type": "http.response.body", "body": body})
