"""A customer's charges as a client sees them: only its own, with Stripe's pagination kept
(``limit``, ``starting_after``, ``has_more``) and a bounded number of Stripe pages a request."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import pytest

from api.customer_charges import MAX_STRIPE_PAGES, STRIPE_MAX_LIMIT, charges_for
from shared.stripe.objects import ChargePage, ChargeSummary


def charge(n: int) -> ChargeSummary:
    return ChargeSummary(id=f"ch_{n:05d}", amount="1.00", currency="usd", status="succeeded",
                         created=100_000 - n, payment_intent=f"pi_{n}", description=None,
                         payment_id=None, failure_code=None, refunded=False)  # fmt: skip


@dataclass
class FakeStripeList:
    """Stripe's charge list of one customer, newest first, paged as Stripe pages it."""

    owners: list[str | None]
    reads: list[int] = field(default_factory=list)  # the limit of each call

    async def list_charges(
        self, *, customer: str, limit: int, starting_after: str | None
    ) -> ChargePage:
        assert 1 <= limit <= STRIPE_MAX_LIMIT
        self.reads.append(limit)
        ids = [charge(n).id for n in range(len(self.owners))]
        start = ids.index(starting_after) + 1 if starting_after else 0
        end = min(start + limit, len(ids))
        return ChargePage(
            data=[charge(n) for n in range(start, end)],
            has_more=end < len(ids),
            owners=tuple(self.owners[start:end]),
        )


async def walk(stripe: FakeStripeList, client: str | None, limit: int) -> list[ChargePage]:
    """Every page a client gets following next_cursor from the first."""
    pages, cursor = [], None
    while True:
        page = await charges_for(stripe, customer="cus_A", client=client, limit=limit,
                                 starting_after=cursor)  # fmt: skip
        pages.append(page)
        if not page.has_more:
            return pages
        cursor = page.next_cursor
        assert cursor is not None
        assert len(pages) < 1000


def shown(pages: list[ChargePage]) -> list[str]:
    return [c.id for page in pages for c in page.data]


def ids_of(owners: list[str | None], client: str) -> list[str]:
    return [charge(n).id for n, owner in enumerate(owners) if owner == client]


async def test_a_customer_of_one_client_costs_one_stripe_read_a_page() -> None:
    stripe = FakeStripeList(["shop"] * 7)
    pages = await walk(stripe, "shop", limit=3)
    assert [len(p.data) for p in pages] == [3, 3, 1]
    assert [p.has_more for p in pages] == [True, True, False]
    assert shown(pages) == ids_of(stripe.owners, "shop")
    assert stripe.reads == [4, 4, 4]  # limit + 1: enough to know whether more follow


async def test_exactly_limit_charges_says_there_are_no_more() -> None:
    stripe = FakeStripeList(["shop"] * 3)
    (page,) = await walk(stripe, "shop", limit=3)
    assert len(page.data) == 3
    assert page.has_more is False
    assert page.next_cursor is None


@pytest.mark.parametrize("limit", [1, 2, 5, 100])
async def test_each_client_gets_all_its_charges_once_in_order_and_no_other(limit: int) -> None:
    owners: list[str | None] = [["shop", "other", "other", None][n % 4] for n in range(450)]
    owners[200:430] = ["other"] * 230  # a stretch of another client's charges
    stripe = FakeStripeList(owners)
    for client in ("shop", "other"):
        pages = await walk(stripe, client, limit)
        assert shown(pages) == ids_of(owners, client)
        assert all(len(p.data) <= limit for p in pages)
        assert all(p.has_more for p in pages[:-1])
        assert not pages[-1].has_more


async def test_stripe_pages_read_for_one_request_are_bounded() -> None:
    owners: list[str | None] = [*(["other"] * 2000), "shop"]
    stripe = FakeStripeList(owners)
    first = await charges_for(stripe, customer="cus_A", client="shop", limit=10,
                              starting_after=None)  # fmt: skip
    assert len(stripe.reads) == MAX_STRIPE_PAGES
    # Nothing of the caller's in what was read: an empty page that says to go on, from the
    # last charge read (not from the start again).
    assert first.data == []
    assert first.has_more is True
    read = 11 + (MAX_STRIPE_PAGES - 1) * STRIPE_MAX_LIMIT
    assert first.next_cursor == charge(read - 1).id
    pages = await walk(stripe, "shop", limit=10)
    assert shown(pages) == [charge(2000).id]


async def test_customers_all_sees_stripe_s_page_as_it_is() -> None:
    owners: list[str | None] = ["shop", "other", None] * 5
    stripe = FakeStripeList(owners)
    page = await charges_for(stripe, customer="cus_A", client=None, limit=4,
                             starting_after=None)  # fmt: skip
    assert [c.id for c in page.data] == [charge(n).id for n in range(4)]
    assert page.has_more is True
    assert page.next_cursor == charge(3).id
    assert stripe.reads == [4]


async def test_an_untagged_charge_is_its_payment_record_s_client_s_while_the_record_lasts() -> None:
    """A charge made before the service tagged its charges: owned by the client its payment
    record names; one with no record (expired) or no payment id is nobody's."""

    def summary(n: int, payment_id: str | None) -> ChargeSummary:
        return replace(charge(n), payment_id=payment_id)

    class Untagged(FakeStripeList):
        async def list_charges(
            self, *, customer: str, limit: int, starting_after: str | None
        ) -> ChargePage:
            page = await super().list_charges(
                customer=customer, limit=limit, starting_after=starting_after
            )
            ids = {0: "pay_shop", 1: "pay_other", 2: "pay_gone", 3: None}
            data = [summary(int(c.id[3:]), ids.get(int(c.id[3:]))) for c in page.data]
            return replace(page, data=data)

    asked: list[list[str]] = []

    async def owners_of(payment_ids: Sequence[str]) -> dict[str, str]:
        asked.append(list(payment_ids))
        records = {"pay_shop": "shop", "pay_other": "other"}
        return {p: records[p] for p in payment_ids if p in records}

    stripe = Untagged([None, None, None, None, "shop"])
    page = await charges_for(stripe, customer="cus_A", client="shop", limit=10,
                             starting_after=None, owners_of=owners_of)  # fmt: skip
    assert [c.id for c in page.data] == [charge(0).id, charge(4).id]
    assert asked == [["pay_shop", "pay_other", "pay_gone"]]  # one look-up a Stripe page
