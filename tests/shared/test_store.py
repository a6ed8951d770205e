"""The accept step of the store: the record is the claim of a client's Idempotency-Key."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import fakeredis
import pytest
import redis

from shared.payments.payment_records import new_record_fields, payment_id_for
from shared.settings.service_settings import Settings
from shared.store import AsyncPaymentStore, keys
from shared.store.keys import ACCEPTED_COUNT, CLIENT_COUNTS, CLIENT_QUEUES, PENDING_INDEX
from shared.store.payment_store import ACCEPT_CALL_ITEMS, Claimed, ClientLimits

SECRET = b"test-secret"


def fields(client: str, key: str) -> dict[str, str]:
    return new_record_fields(
        payment_id=payment_id_for(secret=SECRET, client=client, idempotency_key=key),
        account_id="cus_A",
        amount_minor=4299,
        currency="usd",
        payment_method=None,
        idempotency_key=key,
        fingerprint="f" * 64,
    )


@pytest.fixture
def store() -> AsyncPaymentStore:
    return AsyncPaymentStore(fakeredis.FakeAsyncRedis(), Settings(environment="test"))


def test_ids_derive_from_client_and_key_and_are_not_guessable_without_the_secret() -> None:
    one = payment_id_for(secret=SECRET, client="client-a", idempotency_key="order-1")
    assert one == payment_id_for(secret=SECRET, client="client-a", idempotency_key="order-1")
    assert one != payment_id_for(secret=SECRET, client="client-b", idempotency_key="order-1")
    assert one != payment_id_for(secret=b"other", client="client-a", idempotency_key="order-1")
    assert one.startswith("pay_")
    assert len(one) == 28


async def test_the_same_key_again_finds_the_payment_and_enqueues_nothing(
    store: AsyncPaymentStore,
) -> None:
    first = await store.claim_and_enqueue(fields=fields("client-a", "order-1"), headers={})
    again = await store.claim_and_enqueue(fields=fields("client-a", "order-1"), headers={})
    assert first.created
    assert not again.created
    assert again.record is not None
    assert first.record is not None
    assert again.record.id == first.record.id
    assert await store._redis.llen("payments.anonymous") == 1
    assert await store._redis.smembers(CLIENT_QUEUES) == {b"payments.anonymous"}


def owned(key: str, customer: str = "cus_A", client: str = "c") -> dict[str, str]:
    return new_record_fields(
        payment_id=payment_id_for(secret=SECRET, client=client, idempotency_key=key),
        account_id=customer,
        amount_minor=4299,
        currency="usd",
        payment_method=None,
        idempotency_key=key,
        fingerprint="f" * 64,
        client=client,
    )


def _ids(claimed: Sequence[Claimed | Exception]) -> list[str | None]:
    return [c.record.id if isinstance(c, Claimed) and c.record else None for c in claimed]


async def test_one_call_accepts_a_batch_each_item_on_its_own(store: AsyncPaymentStore) -> None:
    limits = ClientLimits("c", max_rps=0, burst=1, max_backlog=1000)
    claims = [owned("k1"), owned("k2"), owned("k1"), None, owned("k3", customer="cus_B")]

    claimed = await store.claim_many(claims, headers={}, limits=limits)

    got = [c for c in claimed if isinstance(c, Claimed)]
    assert len(got) == 5
    k1, k2, again, token, k3 = got
    # The same key twice in one batch: the second finds the record the first wrote.
    assert [c.created for c in got] == [True, True, False, False, True]
    assert again.record is not None
    assert k1.record is not None
    assert again.record.id == k1.record.id
    assert token.record is None
    assert token.refusal is None
    # Places in the client's queue and in its accepts, as three single accepts would have them.
    assert [(c.ahead, c.seq) for c in (k1, k2, k3)] == [(0, 1), (1, 2), (2, 3)]
    r = store._redis
    queued = [json.loads(m)["headers"]["id"] for m in await r.lrange("payments.c", 0, -1)]
    assert queued[::-1] == _ids([k1, k2, k3])  # workers pop the tail: the batch's order
    assert await r.get(ACCEPTED_COUNT) == b"3"
    assert await r.get(keys.client_backlog("c")) == b"3"
    assert await r.hget(CLIENT_COUNTS, "c|accepted") == b"3"
    assert await r.hget(keys.record_key(str(k3.record and k3.record.id)), "queue_seq") == b"3"
    assert await r.zcard(PENDING_INDEX) == 3
    # Listed for GET /payments: all of them, by status and by customer.
    assert await r.zcard(keys.client_listed("c")) == 3
    assert await r.zcard(keys.client_status("c", "queued")) == 3
    assert await r.zcard(keys.client_customer("c", "cus_A")) == 2
    assert await r.zrange(keys.client_customer("c", "cus_B"), 0, -1) == [
        str(k3.record and k3.record.id).encode()
    ]


async def test_a_batch_past_the_client_s_share_refuses_the_items_past_it() -> None:
    store = AsyncPaymentStore(fakeredis.FakeAsyncRedis(), Settings(environment="test"))
    limits = ClientLimits("c", max_rps=0, burst=1, max_backlog=2)

    claimed = await store.claim_many([owned(f"k{i}") for i in range(4)], headers={}, limits=limits)

    refusals = [c.refusal if isinstance(c, Claimed) else c for c in claimed]
    assert refusals == [None, None, "client_backlog_full", "client_backlog_full"]
    assert await store._redis.hget(CLIENT_COUNTS, "c|backlog_full") == b"2"
    assert await store._redis.llen("payments.c") == 2


async def test_a_batch_past_the_whole_queue_s_bound_refuses_the_items_past_it() -> None:
    settings = Settings(environment="test", queue_max_backlog=1)
    store = AsyncPaymentStore(fakeredis.FakeAsyncRedis(), settings)
    limits = ClientLimits("c", max_rps=0, burst=1, max_backlog=1000)

    claimed = await store.claim_many([owned("k1"), owned("k2")], headers={}, limits=limits)

    assert [c.refusal if isinstance(c, Claimed) else c for c in claimed] == [None, "queue_full"]
    assert await store._redis.llen("payments.c") == 1


async def test_a_batch_takes_a_token_an_item_in_order_and_the_rest_are_rate_limited(
    store: AsyncPaymentStore,
) -> None:
    limits = ClientLimits("c", max_rps=1, burst=3, max_backlog=1000)
    claims = [owned("k1"), None, owned("k2"), owned("k3"), None]

    claimed = await store.claim_many(claims, headers={}, limits=limits)

    got = [c for c in claimed if isinstance(c, Claimed)]
    assert [(c.created, c.refusal, c.tokens_left) for c in got] == [
        (True, None, 2),
        (False, None, 1),
        (True, None, 0),
        (False, "rate_limited", 0),
        (False, "rate_limited", 0),
    ]
    assert 0 < got[3].retry_after_ms <= 1000
    assert await store._redis.hget(CLIENT_COUNTS, "c|limited") == b"2"
    # A later call finds the bucket empty too: the taken tokens were written.
    (later,) = await store.claim_many([owned("k4")], headers={}, limits=limits)
    assert isinstance(later, Claimed)
    assert later.refusal == "rate_limited"


async def test_a_big_batch_is_several_script_calls_in_order(store: AsyncPaymentStore) -> None:
    limits = ClientLimits("c", max_rps=0, burst=1, max_backlog=100_000)
    size = 2 * ACCEPT_CALL_ITEMS + 50
    claims: list[dict[str, str] | None] = [owned(f"k{i}") for i in range(size)]
    claims[ACCEPT_CALL_ITEMS + 5] = owned("k0")  # the first call's key again, in the second
    calls = 0
    script = store._accept

    async def counted(**kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        return await script(**kwargs)

    store._accept = counted  # type: ignore[assignment]
    claimed = await store.claim_many(claims, headers={}, limits=limits)

    assert calls == 3  # no script call holds Redis for more than ACCEPT_CALL_ITEMS items
    got = [c for c in claimed if isinstance(c, Claimed)]
    assert len(got) == size
    assert not got[ACCEPT_CALL_ITEMS + 5].created  # a replay of the first call's item
    new = [c for c in got if c.created]
    assert [c.seq for c in new] == list(range(1, size))  # the batch's order, across calls
    queued = [
        json.loads(m)["headers"]["id"] for m in await store._redis.lrange("payments.c", 0, -1)
    ]
    assert queued[::-1] == _ids(new)


async def test_a_call_that_cannot_reach_redis_fails_its_items_only(
    store: AsyncPaymentStore,
) -> None:
    limits = ClientLimits("c", max_rps=0, burst=1, max_backlog=100_000)
    claims: list[dict[str, str] | None] = [owned(f"k{i}") for i in range(ACCEPT_CALL_ITEMS + 10)]
    script, calls = store._accept, 0

    async def second_lost(**kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise redis.exceptions.ConnectionError("lost")
        return await script(**kwargs)

    store._accept = second_lost  # type: ignore[assignment]
    claimed = await store.claim_many(claims, headers={}, limits=limits)

    assert all(isinstance(c, Claimed) and c.created for c in claimed[:ACCEPT_CALL_ITEMS])
    assert all(isinstance(c, redis.exceptions.ConnectionError) for c in claimed[ACCEPT_CALL_ITEMS:])


async def test_a_batch_whose_calls_all_fail_to_reach_redis_raises(
    store: AsyncPaymentStore,
) -> None:
    async def down(**kwargs: Any) -> Any:
        raise redis.exceptions.ConnectionError("down")

    store._accept = down  # type: ignore[assignment]
    with pytest.raises(redis.exceptions.ConnectionError):
        await store.claim_many([owned(f"k{i}") for i in range(150)], headers={})
