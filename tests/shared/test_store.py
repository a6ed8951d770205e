"""The accept step of the store: the record is the claim of a client's Idempotency-Key."""

from __future__ import annotations

import fakeredis
import pytest

from shared.payments.payment_records import new_record_fields, payment_id_for
from shared.settings.service_settings import Settings
from shared.store import AsyncPaymentStore
from shared.store.keys import CLIENT_QUEUES

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
