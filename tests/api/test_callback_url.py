"""POST /payments' callback_url: refused when the SSRF rules can judge it then (400), else kept
on the payment; the client's default endpoint when absent."""

from __future__ import annotations

import fakeredis
import httpx
import pytest

from shared.settings.service_settings import Settings
from shared.store.keys import record_key
from tests.api.conftest import ClientFor
from tests.support import payment


@pytest.mark.parametrize(
    "url",
    ["ftp://shop.example.com/h", "https://10.0.0.1/h", "https://169.254.169.254/latest",
     "https://localhost/h", "https://u:p@shop.example.com/h", "x" * 2049,
     # Off the public internet though no private range names them: shared address space (a
     # cloud metadata address), IPv4 inside 6to4 and IPv4-mapped IPv6.
     "http://100.100.100.200/latest/meta-data", "http://100.64.0.1/x",
     "http://[2002:a9fe:a9fe::]/x", "http://[::ffff:127.0.0.1]/x",
     # Not a URL a request can be made for: a space in the host, CR/LF, NUL.
     "http://exa mple.com/x", "http://shop.example.com/x\r\nX-Injected: 1",
     "http://shop.example.com/x\x00",
     # What a resolver folds to this host: the root's trailing dot, full-width letters and
     # digits, ideographic dots, circled digits; and port 0, which is no port.
     "https://localhost./h", "https://127.0.0.1./h", "https://\uff4c\uff4f\uff43\uff41\uff4c\uff48\uff4f\uff53\uff54/h",
     "https://127\u30020\u30020\u30021/h", "https://\u2460\u2461\u2466.0.0.1/h",
     "https://shop.example.com:0/h"],
)  # fmt: skip
async def test_a_refused_callback_url_is_a_400_and_nothing_is_accepted(
    client: httpx.AsyncClient, redis: fakeredis.FakeAsyncRedis, url: str
) -> None:
    response = await client.post("/payments", json=payment(callback_url=url))

    assert response.status_code == 400
    assert response.json()["error"]["param"] == "callback_url"
    assert response.json()["error"]["code"] == "callback_url_invalid"
    assert await redis.llen("payments") == 0


async def test_an_allowed_callback_url_is_kept_on_the_payment(
    client: httpx.AsyncClient, redis: fakeredis.FakeAsyncRedis
) -> None:
    url = "https://shop.example.com/hooks/payments"
    response = await client.post("/payments", json=payment(callback_url=url))

    assert response.status_code == 202
    assert await redis.hget(record_key(response.json()["id"]), "callback_url") == url.encode()


async def test_the_clients_default_endpoint_applies_when_none_is_given(
    client_for: ClientFor, redis: fakeredis.FakeAsyncRedis
) -> None:
    settings = Settings(
        environment="test",
        redis_url="redis://fake",
        callback_endpoints="anonymous=https://default.example.com/h",
    )
    async with client_for(settings, redis) as c:
        response = await c.post("/payments", json=payment())
    stored = await redis.hget(record_key(response.json()["id"]), "callback_url")
    assert stored == b"https://default.example.com/h"
