"""`make demo` against stand-ins for the emulator and the API: which card it gives the customer,
and what it counts as success."""

from __future__ import annotations

import json
from pathlib import Path

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
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    decline: bool,
    card: str,
    paid_status: int,
    exit_code: int,
) -> None:
    stripe, api, attached = clients(paid_status)
    with stripe, api:
        assert demo.run_demo(stripe, api, decline=decline, run_dir=tmp_path) == exit_code
    assert attached == [card]
    assert f"HTTP {paid_status}" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("decline", "kept", "other"),
    [
        (False, "demo-customer", "demo-customer-declined"),
        (True, "demo-customer-declined", "demo-customer"),
    ],
)
def test_the_customer_is_kept_under_run_for_the_readmes_curl(
    tmp_path: Path, decline: bool, kept: str, other: str
) -> None:
    """The README's curl reads `$(cat .run/demo-customer)`: a paying customer, never the
    declining one."""
    stripe, api, _ = clients(402 if decline else 200)
    with stripe, api:
        demo.run_demo(stripe, api, decline=decline, run_dir=tmp_path / ".run")
    assert (tmp_path / ".run" / kept).read_text().strip() == "cus_Demo1"
    assert not (tmp_path / ".run" / other).exists()


def test_the_printed_curl_works_as_pasted(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each printed command is the request the demo made: same URL (no doubled slash), the
    key read from where `make run` writes it, the same body."""
    monkeypatch.delenv("API_KEY", raising=False)
    stripe, api, _ = clients(200)
    with stripe, api:
        demo.run_demo(stripe, api, run_dir=tmp_path)
    commands = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("$ curl")]
    assert commands == [
        f"$ curl -s -X POST 'http://api/payments?wait=10' "
        f'-H "Authorization: Bearer $(cat {demo.KEY_FILE})" '
        "-H 'Content-Type: application/json' -H 'Idempotency-Key: demo-cus_Demo1' "
        """-d '{"account_id": "cus_Demo1", "amount": "42.99"}'""",
        f'$ curl -s -H "Authorization: Bearer $(cat {demo.KEY_FILE})" '
        "'http://api/cus_Demo1/payments'",
    ]


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
