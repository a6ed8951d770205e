"""``GET /{customer_id}/payments``: one page of a customer's charges as the caller may see it.

A client with ``customers:all`` (or ``admin``) sees Stripe's page as Stripe sends it. Any other
client sees only the charges its own payments made (their metadata names it; see
``shared.stripe.objects.CLIENT_METADATA``), with Stripe's pagination kept: ``limit`` charges of
the caller's a page, ``has_more`` true only while more of them may follow, ``next_cursor`` (as
``starting_after``) continuing after the last charge read. Filtering one Stripe page after the
fact would break ``limit``, so further Stripe pages are read until ``limit`` charges of the
caller are found or Stripe has no more, at most ``MAX_STRIPE_PAGES`` a request: past that
bound the page ends short, ``has_more`` true and the cursor after the last charge read, so
a customer with many charges of other clients costs each request a bounded number of calls.

A charge whose metadata names no client but carries our payment id (made before the service
tagged its charges) is the client's whose payment record says so, while the record lasts
(``RECORD_TTL_SECONDS``): ``owners_of`` looks them up, one Redis round trip a Stripe page.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Protocol

from shared.stripe.objects import ChargePage, ChargeSummary

# Stripe pages read for one request, at most.
MAX_STRIPE_PAGES = 5
# Stripe's largest page, asked for once the first page held charges of other clients.
STRIPE_MAX_LIMIT = 100


class ChargeLister(Protocol):
    async def list_charges(
        self, *, customer: str, limit: int, starting_after: str | None
    ) -> ChargePage: ...


# Payment ids -> the client of each whose record is still kept.
OwnersOf = Callable[[Sequence[str]], Awaitable[Mapping[str, str]]]


async def _owners(page: ChargePage, owners_of: OwnersOf | None) -> list[str | None]:
    owners = list(page.owners or (None,) * len(page.data))
    untagged = [c.payment_id for c, o in zip(page.data, owners, strict=True)
                if o is None and c.payment_id]  # fmt: skip
    if not untagged or owners_of is None:
        return owners
    found = await owners_of(untagged)
    return [o or found.get(c.payment_id or "") for c, o in zip(page.data, owners, strict=True)]


async def charges_for(
    gateway: ChargeLister,
    *,
    customer: str,
    client: str | None,
    limit: int,
    starting_after: str | None,
    owners_of: OwnersOf | None = None,
) -> ChargePage:
    """The page of the customer's charges ``client`` sees (None: every charge, as Stripe has
    them)."""
    if client is None:
        return await gateway.list_charges(
            customer=customer, limit=limit, starting_after=starting_after
        )
    shown: list[ChargeSummary] = []
    cursor = starting_after
    # One more than asked for: when the customer's charges are all the caller's (the usual
    # case) the first read is the only one, and it tells whether more follow.
    ask = min(limit + 1, STRIPE_MAX_LIMIT)
    for _ in range(MAX_STRIPE_PAGES):
        page = await gateway.list_charges(customer=customer, limit=ask, starting_after=cursor)
        owners = await _owners(page, owners_of)
        for charge, owner in zip(page.data, owners, strict=True):
            if owner != client:
                continue
            if len(shown) == limit:  # one more of the caller's: the next page starts here
                return ChargePage(data=shown, has_more=True)
            shown.append(charge)
        if not page.has_more or not page.data:
            return ChargePage(data=shown, has_more=False)
        cursor = page.data[-1].id
        ask = STRIPE_MAX_LIMIT
    # The bound: every charge read past the last one shown is another client's.
    return ChargePage(data=shown, has_more=True, cursor=cursor)
