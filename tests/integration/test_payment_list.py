"""GET /payments through real processes: a client reconciles a bulk run from its own list
(the declined ones by status, every payment once through pages, the same rows as CSV)."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from tests.support import StripeAdmin, final

pytestmark = pytest.mark.integration


def every_page(api: httpx.Client, params: dict[str, Any]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    cursor = None
    while True:
        after: dict[str, str] = {"starting_after": cursor} if cursor else {}
        response = api.get("/payments", params={**params, **after})
        assert response.status_code == 200, response.text
        page = response.json()
        assert len(page["data"]) == params["limit"] or not page["has_more"]
        rows += page["data"]
        if not page["has_more"]:
            return rows
        cursor = page["next_cursor"]


def test_a_client_reconciles_a_bulk_run_from_its_own_list(
    api: httpx.Client, stripe: StripeAdmin
) -> None:
    paying = stripe.customer()
    declining = stripe.customer(card="pm_card_chargeCustomerFail")
    since = datetime.now(UTC).isoformat(timespec="milliseconds")
    run = paying[-8:]
    ids, declined = [], set()
    for i in range(50):
        customer = declining if i % 5 == 0 else paying
        body = {"account_id": customer, "amount": f"{1 + i / 100:.2f}",
                "metadata": {"line": f"={i}"}}  # fmt: skip
        response = api.post("/payments", json=body, headers={"Idempotency-Key": f"{run}-{i}"})
        assert response.status_code == 202, response.text
        ids.append(response.json()["id"])
        if customer == declining:
            declined.add(ids[-1])
    outcomes = {pid: final(api, pid)["status"] for pid in ids}
    assert {pid for pid, status in outcomes.items() if status == "failed"} == declined
    window = {"created[gte]": since}

    failed = api.get("/payments", params={**window, "status": "failed", "limit": 100}).json()
    paged = every_page(api, {**window, "limit": 7})
    exported = api.get("/payments", params={**window, "limit": 100},
                       headers={"Accept": "text/csv"})  # fmt: skip
    listed = api.get("/payments", params={**window, "limit": 100}).json()

    assert {p["id"] for p in failed["data"]} == declined
    assert failed["has_more"] is False
    assert {p["status"] for p in failed["data"]} == {"failed"}
    assert sorted(p["id"] for p in paged) == sorted(ids)
    assert len(paged) == 50
    created = [p["created_at"] for p in paged]
    assert created == sorted(created, reverse=True)
    assert {p["id"]: p["status"] for p in paged} == outcomes
    assert exported.status_code == 200
    rows = list(csv.DictReader(io.StringIO(exported.text)))
    assert [r["id"] for r in rows] == [p["id"] for p in listed["data"]] == [p["id"] for p in paged]
    for row, item in zip(rows, listed["data"], strict=True):
        assert (row["status"], row["amount"], row["account_id"]) == (
            item["status"], item["amount"], item["account_id"]
        )  # fmt: skip
        assert row["metadata"] == '{"line":"' + item["metadata"]["line"] + '"}'
    paying_only = api.get("/payments", params={**window, "customer": paying, "limit": 100})
    assert len(paying_only.json()["data"]) == 40
