"""`make demo` against stand-ins for the emulator and the API: which card it gives the customer,
and what it counts as success."""

from __future__ import annotations

import json

import httpx
import pytest

from devtools import demo


def clients(paid_status: int) -> tuple[httpx.Client, httpx.Client, list[str]]:
    attached: list[str] = []

    def stripe(request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path == "/v1/customers":
            return httpx.Response(200, json={"id": "cus_Demo1"})
        if path.endswith("/attach"):
            attached.append(path.split("/")[3])
            return httpx.Response(200, json={"id": "pm_Attached1"})
        return httpx.Response(200, json={"id": "cus_Demo1"})

    def api(request: httpx.Request) -> httpx.Response:
        if request.method == "POST":
            assert json.loads(request.content)["account_id"] == "cus_Demo1"
            if paid_status == 402:
                return httpx.Response(402, json={"error": {"code": "card_declined"}})
            return httpx.Response(paid_status, json={"id": "pay_1", "status": "succeeded"})
        return httpx.Response(200, json={"object": "list", "data": []})

    return (
        httpx.Client(base_url="http://stripe", transport=httpx.MockTransport(stripe)),
        httpx.Client(base_url="http://api", transport=httpx.MockTransport(api)),
        attached,
    )


@pytest.mark.parametrize(
    ("decline", "card", "paid_status", "exit_code"),
    [
        (False, "pm_card_visa", 200, 0),
        (False, "pm_card_visa", 402, 1),
        (True, "pm_card_chargeCustomerFail", 402, 0),
        (True, "pm_card_chargeCustomerFail", 200, 1),  # a decline demo that got paid failed
    ],
)
def test_demo_pays_with_a_good_or_a_declining_card(
    capsys: pytest.CaptureFixture[str], decline: bool, card: str, paid_status: int, exit_code: int
) -> None:
    stripe, api, attached = clients(paid_status)
    with stripe, api:
        assert demo.run_demo(stripe, api, decline=decline) == exit_code
    assert attached == [card]
    assert f"HTTP {paid_status}" in capsys.readouterr().out


def test_decline_is_a_flag_or_make_demo_decline_1(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[bool] = []

    def run_demo(_stripe: httpx.Client, _api: httpx.Client, *, decline: bool) -> int:
        seen.append(decline)
        return 0

    monkeypatch.setattr(demo, "run_demo", run_demo)
    monkeypatch.delenv("DECLINE", raising=False)
    demo.main([])
    demo.main(["--decline"])
    monkeypatch.setenv("DECLINE", "1")  # what `make demo DECLINE=1` puts in the environment
    demo.main([])
    assert seen == [False, True, True]
