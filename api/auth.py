"""Request context and client authentication: ``Authorization: Bearer <key>`` on every route
but the health checks.

``API_KEYS`` holds keys or their ``sha256:<hex>`` digests (so a deployment need not hold the keys
themselves). A presented key is hashed, its digest looked up in a dict of the configured ones,
and the entry found (or a dummy when none is) compared once more in constant time: one SHA-256
and one comparison per request, however many keys are configured. The lookup is keyed on the
digest of the presented key, which an attacker cannot steer, so its timing tells nothing about
any configured key. The key's identity (a digest prefix, never the key) scopes idempotency keys
and goes into logs. Also bounds the total size of request headers (431), before any route runs.
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

OPEN_PATHS = frozenset({"/healthz", "/readyz", "/webhooks/stripe"})  # webhooks: signed, no key
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
        # digest bytes -> (the same bytes, to compare with; the key's identity)
        self._by_digest: dict[bytes, tuple[bytes, str]] = {
            bytes.fromhex(d): (bytes.fromhex(d), key_identity(d)) for d in self.digests
        }
        if not self.digests:
            log.warning(
                "auth.disabled", reason="API_KEYS is empty", environment=settings.environment
            )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        # One pass over the headers: their total size, the request id and the credentials.
        size = 0
        given_id = authorization = b""
        for name, value in scope["headers"]:
            size += len(name) + len(value)
            if name == b"authorization":
                authorization = value
            elif name == b"x-request-id":
                given_id = value
        request_id = _request_id(given_id)
        if size > MAX_HEADER_BYTES:
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
            found = self._identify(authorization)
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

        # bind/reset rather than the bound_contextvars() context manager: same effect, without
        # a generator-based context manager on every request.
        tokens = structlog.contextvars.bind_contextvars(client=identity, request_id=request_id)
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            structlog.contextvars.reset_contextvars(**tokens)

    def _identify(self, authorization: bytes) -> str | None:
        scheme, _, token = authorization.decode("latin-1").partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            return None
        presented = hashlib.sha256(token.encode()).digest()
        expected, identity = self._by_digest.get(presented, _NO_MATCH)
        # One constant-time comparison, against the entry found or a dummy: the same work
        # whether the key is known or not, and whichever key it is.
        if hmac.compare_digest(presented, expected) and identity:
            return identity
        return None


_NO_MATCH = (bytes(32), "")  # no SHA-256 digest to match: a digest of all zeros is not one


def _request_id(given: bytes) -> str:
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
