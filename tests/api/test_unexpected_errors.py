"""What no handler answers: a 500 error object that still carries the request's id, is logged
with the request's context and counted; and a client gone mid-request, which is no server
error at all."""

from __future__ import annotations

from typing import Any

import fakeredis
import pytest
import structlog
from structlog.testing import capture_logs

from api import auth
from api.main import create_app
from shared.settings.service_settings import Settings
from shared.store.payment_store import AsyncPaymentStore
from tests.support import app_client, payment

KEY = "unexpected_errors_key_0123456789"
AUTH = {"Authorization": f"Bearer {KEY}"}


def app() -> Any:
    settings = Settings(environment="test", redis_url="redis://fake", api_keys=KEY)
    return create_app(settings, redis=fakeredis.FakeAsyncRedis())


def answers_counted(exposed: str, route: str, status: int) -> float:
    prefix = f'payments_http_requests_total{{method="GET",route="{route}",status="{status}"}} '
    lines = [line for line in exposed.splitlines() if line.startswith(prefix)]
    return float(lines[0].removeprefix(prefix)) if lines else 0.0


async def test_an_unexpected_failure_on_any_route_keeps_its_request_id_log_and_count(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def broken(*args: Any, **kwargs: Any) -> Any:
        raise ZeroDivisionError

    monkeypatch.setattr(AsyncPaymentStore, "get", broken)
    the_app = app()
    async with app_client(the_app, raise_app_exceptions=False) as client:
        with capture_logs(processors=[structlog.contextvars.merge_contextvars]) as logs:
            # A logger first used under the capture (the module's may be cached already).
            monkeypatch.setattr(auth, "log", structlog.get_logger("api.auth"))
            response = await client.get(
                "/payments/pay_" + "a" * 24, headers={**AUTH, "X-Request-ID": "trace-me-123"}
            )
        exposed = (await client.get("/metrics", headers=AUTH)).text
        again = await client.post("/payments", json=payment(), headers=AUTH)

    assert response.status_code == 500
    assert response.json()["error"]["code"] == "internal_error"
    assert response.headers["x-request-id"] == "trace-me-123"
    failed = [e for e in logs if e["event"] == "request.failed"]
    assert len(failed) == 1  # logged once, with the request's context
    assert failed[0]["request_id"] == "trace-me-123"
    assert failed[0]["client"]
    assert answers_counted(exposed, "/payments/{payment_id}", 500) == 1
    assert again.status_code == 202  # the app goes on serving


@pytest.mark.parametrize("path", ["/payments", "/payments/pay_" + "a" * 24 + "/refunds"])
async def test_a_client_gone_before_its_body_arrived_is_no_server_error(
    path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    the_app = app()
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
        "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"",
        "root_path": "", "client": ("127.0.0.1", 5000), "server": ("test", 80),
        "headers": [(b"authorization", AUTH["Authorization"].encode()),
                    (b"content-type", b"application/json"), (b"content-length", b"100"),
                    (b"idempotency-key", b"gone-1")],
    }  # fmt: skip
    async with app_client(the_app) as client:
        with capture_logs() as logs:
            monkeypatch.setattr(auth, "log", structlog.get_logger("api.auth"))
            await the_app(scope, receive, send)
        exposed = (await client.get("/metrics", headers=AUTH)).text

    assert not [m for m in sent if m.get("status", 0) >= 500]
    assert not [e for e in logs if e["log_level"] in ("error", "critical")]
    assert 'status="500"' not in exposed


@pytest.mark.parametrize(("method", "path"), [("GET", "/payments/"), ("POST", "/payments/")])
async def test_a_trailing_slash_is_no_route_not_a_redirect(method: str, path: str) -> None:
    async with app_client(app()) as client:
        response = await client.request(method, path, headers=AUTH, json=payment())
    assert response.status_code == 404
    assert response.json()["error"]["type"] == "invalid_request_error"
