"""Callback URLs off the public internet, or that do not parse, are refused at accept by the
running API (400 ``callback_url_invalid``): the addresses a deny list let
through (shared address space with a cloud metadata address, IPv4 inside 6to4 and
IPv4-mapped IPv6), a space in the host, CR/LF. The send-time check of a name resolving to
one of them: ``tests/worker/test_callbacks.py``."""

from __future__ import annotations

import httpx
import pytest

from tests.support import StripeAdmin

pytestmark = pytest.mark.integration

REFUSED = [
    "http://100.100.100.200/latest/meta-data",
    "http://[2002:a9fe:a9fe::]/x",
    "http://100.64.0.1/x",
    "http://exa mple.com/x",
    "http://shop.example.com/x\r\nX-Injected: 1",
    "http://[::ffff:127.0.0.1]/x",
]


@pytest.mark.parametrize("url", REFUSED)
def test_a_callback_url_off_the_public_internet_or_unparsable_is_a_400(
    api: httpx.Client, stripe: StripeAdmin, url: str
) -> None:
    customer = stripe.customer()
    answer = api.post("/payments", json={"account_id": customer, "amount": "1.00",
                                         "callback_url": url})  # fmt: skip

    assert answer.status_code == 400
    assert answer.json()["error"]["code"] == "callback_url_invalid"
    assert answer.json()["error"]["param"] == "callback_url"
