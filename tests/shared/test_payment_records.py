"""PaymentRecord.from_redis: a new record's fields take a shorter way to the same record; a
record's timestamps are what a datetime writes; a payment id is the HMAC of its key."""

from __future__ import annotations

import hmac
import itertools
import random
from dataclasses import fields
from datetime import UTC, datetime

import pytest

from shared.payments.payment_records import (
    NEW_RECORD_FIELDS,
    PaymentRecord,
    iso_from_ms,
    ms_from_iso,
    new_record_fields,
    now_iso,
    payment_id_for,
)
from shared.payments.states import Status

OPTIONAL = {
    "payment_method": "pm_card_visa",
    "client": "shop",
    "description": "Order 1001",
    "metadata": {"order_id": "1001"},
    "expires_ms": 1_900_000_000_123,
    "capture_method": "manual",
}
ADDED = {
    "callback_url": "https://shop.example.com/hooks",
    "queue": "charges:shop",
    "queue_seq": "17",
    "enqueued_at": "1900000000000",
}


def _new_fields(optional: dict[str, object]) -> dict[str, str]:
    return new_record_fields(
        payment_id="pay_0123456789abcdef01234567",
        account_id="cus_1",
        amount_minor=4299,
        currency="usd",
        idempotency_key="order-1001",
        fingerprint="ab" * 32,
        **{"payment_method": None, **optional},  # type: ignore[arg-type]
    )


def _general(raw: dict[str, str]) -> PaymentRecord:
    return PaymentRecord._from_hash(raw)


def _subsets(names: list[str]) -> list[tuple[str, ...]]:
    return [c for r in range(len(names) + 1) for c in itertools.combinations(names, r)]


@pytest.mark.parametrize("optional", _subsets(list(OPTIONAL)))
def test_a_new_records_fields_read_as_the_general_path_reads_them(
    optional: tuple[str, ...],
) -> None:
    written = _new_fields({name: OPTIONAL[name] for name in optional})
    for added in _subsets(list(ADDED)):
        raw = {**written, **{name: ADDED[name] for name in added}}
        assert raw.keys() <= NEW_RECORD_FIELDS
        record = PaymentRecord.from_redis(raw)
        assert record == _general(raw)
        assert all(hasattr(record, f.name) for f in fields(PaymentRecord))


@pytest.mark.parametrize(
    "odd",
    [
        {"payment_method": "", "client": "", "description": "", "metadata": ""},
        {"queue": "", "queue_seq": "", "expires_ms": "", "expires_at": ""},
        {"queue_seq": "0", "attempts": "2", "status": "processing"},
        {"updated_at": "", "capture_method": ""},
        {"callback_url": "", "enqueued_at": ""},
    ],
)
def test_empty_and_unusual_values_read_the_same_on_both_paths(odd: dict[str, str]) -> None:
    raw = {**_new_fields({}), **odd}
    assert PaymentRecord.from_redis(raw) == _general(raw)


def test_missing_or_malformed_fields_fail_alike() -> None:
    for name in ("id", "created_at", "amount_minor"):
        raw = _new_fields({})
        del raw[name]
        with pytest.raises(KeyError) as fast:
            PaymentRecord.from_redis(raw)
        with pytest.raises(KeyError) as general:
            _general(raw)
        assert fast.value.args == general.value.args
    for name, value in (("status", "nonsense"), ("amount_minor", "x"), ("attempts", "")):
        raw = {**_new_fields({}), name: value}
        with pytest.raises(ValueError, match=r".") as fast_error:
            PaymentRecord.from_redis(raw)
        with pytest.raises(ValueError, match=r".") as general_error:
            _general(raw)
        assert str(fast_error.value) == str(general_error.value)


def test_other_hashes_take_the_general_path() -> None:
    raw = {**_new_fields({}), "payment_intent": "pi_1", "error": '{"code": "card_declined"}'}
    assert PaymentRecord.from_redis(raw).error == {"code": "card_declined"}
    written = _new_fields({"client": "shop"})
    record = PaymentRecord.from_redis({k.encode(): v.encode() for k, v in written.items()})
    assert record == PaymentRecord.from_redis(written)
    assert record.status is Status.QUEUED
    mixed: dict[str, object] = {**_new_fields({}), "amount_minor": b"4299"}
    assert PaymentRecord.from_redis(mixed).amount_minor == 4299


def _datetime_stamp(ms: int) -> str:
    when = datetime.fromtimestamp(ms / 1000, UTC)
    return when.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def test_timestamps_within_a_minute_read_as_a_datetime_writes_them() -> None:
    rng = random.Random(7)
    base = 1_767_225_600_000  # 2026-01-01T00:00:00Z
    stamps = [base + offset for offset in (-1, 0, 1, 59_999, 60_000, 60_001, 999, 1000)]
    stamps += [base + rng.randrange(-120_000, 120_000) for _ in range(5_000)]
    stamps += [rng.randrange(-(10**12), 253_402_300_799_999) for _ in range(2_000)]
    stamps += [0, -1, -60_000, -60_001, 253_402_300_799_999]
    for ms in stamps:
        assert iso_from_ms(ms) == _datetime_stamp(ms), ms


def test_now_is_the_clocks_millisecond() -> None:
    before = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    now = now_iso()
    after = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    assert before <= now <= after
    assert len(now) == len("2026-01-01T00:00:00.000Z")
    assert ms_from_iso(iso_from_ms(ms_from_iso(now))) == ms_from_iso(now)


@pytest.mark.parametrize("secret_length", [0, 1, 32, 63, 64, 65, 200])
def test_payment_ids_are_the_hmac_of_the_client_and_key(secret_length: int) -> None:
    rng = random.Random(secret_length)
    secret = rng.randbytes(secret_length)
    for client, key in [("shop", "order-1"), ("", ""), ("clïent", "ключ " * 60), ("a\x1fb", "c")]:
        mac = hmac.digest(secret, f"{client}\x1f{key}".encode(), "sha256")
        assert payment_id_for(secret=secret, client=client, idempotency_key=key) == (
            "pay_" + mac[:12].hex()
        )
