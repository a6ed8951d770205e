"""Request context and client authentication: ``Authorization: Bearer <key>`` on every route
but the health checks.

Clients and their key digests come from ``API_KEYS`` and ``API_CLIENTS``
(shared/settings/api_clients.py).
A presented key is hashed, its digest looked up in a dict of the configured ones, and the entry
found (or a dummy when none is) compared once more in constant time: one SHA-256 and one
comparison per request, however many keys are configured. The lookup is keyed on the digest of
the presented key, which an attacker cannot steer, so its timing tells nothing about any
configured key. The client's name (never the key) scopes idempotency keys, owns payments and goes
into logs. Also bounds the total size of request headers (431), before any route runs.
"""

from __future__ import annotations

import hashlib
import hmac
import os

import orjson
import structlog
from fastapi.security import HTTPBearer
from starlette.requests import ClientDisconnect, HTTPConnection
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared.errors import AuthenticationFailed, InternalError, PaymentServiceError
from shared.settings.api_clients import ANONYMOUS, Client, KeyEntry, Registry
from shared.settings.api_clients import load as load_clients
from shared.settings.service_settings import Settings

log = structlog.get_logger(__name__)

# No client key: the health checks; the API's description and Swagger UI (shapes only, no data;
# the UI's Authorize button then sends the key on every call); Stripe's webhooks (signed).
OPEN_PATHS = frozenset(
    {"/healthz", "/readyz", "/docs", "/docs/oauth2-redirect", "/openapi.json", "/webhooks/stripe"}
)
MAX_HEADER_BYTES = 16 * 1024


class BearerKey(HTTPBearer):
    """The client key as FastAPI's security scheme, a dependency of every guarded router: the
    document then declares it on their routes, and /docs offers "Authorize" to send it. The
    key itself is checked by RequestContextMiddleware below, for every route at once and ahead
    of the accept fast path (api.accept_asgi), which no dependency reaches; as a dependency
    this does nothing."""

    def __init__(self) -> None:
        super().__init__(
            scheme_name="bearer",
            description="A client key from API_KEYS or API_CLIENTS (make run writes one to "
            ".run/api-key).",
            auto_error=False,
        )

    async def __call__(self, request: HTTPConnection) -> None:
        return None


bearer_key = BearerKey()


class RequestContextMiddleware:
    """Every request: a bounded header size (431), a request id (``X-Request-ID``, made when
    absent, returned on the answer, bound into every log line and passed into the task), and
    the client's key (401 unless the route is a health check)."""

    def __init__(self, app: ASGIApp, settings: Settings, registry: Registry | None = None) -> None:
        self.app = app
        self.registry = registry if registry is not None else load_clients(settings)
        self._by_digest: dict[bytes, KeyEntry] = self.registry.entries
        if not self.registry:
            log.warning(
                "auth.disabled", reason="API_ALLOW_ANONYMOUS", environment=settings.environment
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
            await _reject(send, headers_too_large(), request_id)
            return
        principal = ANONYMOUS
        if self.registry and scope["path"] not in OPEN_PATHS:
            found = self._identify(authorization)
            if found is None:
                await _reject(
                    send, AuthenticationFailed(), request_id, {"www-authenticate": "Bearer"}
                )
                return
            principal = found
        identity = principal.name
        state = scope.setdefault("state", {})
        state["client"] = identity
        state["principal"] = principal
        state["request_id"] = request_id
        raw_id = request_id.encode()
        answered = [0]

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", []).append((b"x-request-id", raw_id))
                answered[0] = message["status"]
            await send(message)

        # bind/reset rather than the bound_contextvars() context manager: same effect, without
        # a generator-based context manager on every request.
        tokens = structlog.contextvars.bind_contextvars(client=identity, request_id=request_id)
        try:
            await self.app(scope, receive, send_with_id)
        except ClientDisconnect:
            # The client went away before its body was read: no answer to give, and no
            # server error to count (499, as proxies log it).
            log.info("request.client_gone", path=scope["path"])
            answered[0] = answered[0] or 499
        except Exception as exc:
            # What no handler answered: answered here, inside the request's context, so that
            # the 500 carries its request id, its log line the client's, and it is counted.
            if answered[0]:
                raise  # the answer has begun: nothing else can be said on it
            log.exception("request.failed", path=scope["path"], exc_info=exc)
            answered[0] = 500
            await _reject(send, InternalError(), request_id)
        finally:
            structlog.contextvars.reset_contextvars(**tokens)
            _count(scope, answered[0])

    def _identify(self, authorization: bytes) -> Client | None:
        scheme, _, token = authorization.decode("latin-1").partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            return None
        presented = hashlib.sha256(token.encode()).digest()
        entry = self._by_digest.get(presented, _NO_MATCH)
        # One constant-time comparison, against the entry found or a dummy: the same work
        # whether the key is known or not, and whichever key it is.
        if hmac.compare_digest(presented, entry.digest) and entry is not _NO_MATCH:
            if entry.expired():
                log.info("auth.key_expired", client=entry.client.name)
                return None
            return entry.client
        return None


# No SHA-256 digest to match: a digest of all zeros is not one.
_NO_MATCH = KeyEntry(bytes(32), ANONYMOUS)


def _count(scope: Scope, status: int) -> None:
    """payments_http_requests_total, by the route's template (not the path: ids would make a
    series each)."""
    metrics = getattr(getattr(scope.get("app"), "state", None), "metrics", None)
    if metrics is None or not status:
        return
    route = getattr(scope.get("route"), "path", None) or "unmatched"
    metrics.count_answer(route, scope["method"], status)


def headers_too_large() -> PaymentServiceError:
    """The 431 for request headers over MAX_HEADER_BYTES in all (also the OpenAPI's example)."""
    return PaymentServiceError(
        f"Request headers must total at most {MAX_HEADER_BYTES} bytes.",
        code="headers_too_large",
        status=431,
    )


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
