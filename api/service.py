"""The accept path: validate the amount, derive the payment id, and claim, record and enqueue
in one Redis step (``AsyncPaymentStore.claim_and_enqueue``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis

from api.schemas import PaymentRequest
from shared.config import Settings
from shared.errors import (
    IdempotencyKeyMismatch,
    InvalidRequest,
    PaymentNotFound,
    ServiceUnavailable,
)
from shared.money import AmountError, parse_amount
from shared.records import (
    PaymentRecord,
    new_record_fields,
    payment_id_for,
    request_fingerprint,
)
from shared.store import AsyncPaymentStore


@dataclass(frozen=True, slots=True)
class Accepted:
    record: PaymentRecord
    replayed: bool


class PaymentService:
    def __init__(self, redis: Redis, settings: Settings) -> None:
        self._store = AsyncPaymentStore(redis, settings)
        self._secret = settings.payment_id_key

    async def accept(
        self,
        request: PaymentRequest,
        *,
        idempotency_key: str,
        client: str,
        headers: dict[str, Any],
    ) -> Accepted:
        try:
            money = parse_amount(request.amount, request.currency)
        except AmountError as exc:
            raise InvalidRequest(str(exc), code="amount_invalid", param="amount") from exc
        fingerprint = request_fingerprint(
            account_id=request.account_id,
            amount_minor=money.minor,
            currency=money.currency,
            payment_method=request.payment_method,
        )
        # Keys are scoped to the client, as Stripe scopes them to an account.
        payment_id = payment_id_for(
            secret=self._secret, client=client, idempotency_key=idempotency_key
        )
        fields = new_record_fields(
            payment_id=payment_id,
            account_id=request.account_id,
            amount_minor=money.minor,
            currency=money.currency,
            payment_method=request.payment_method,
            idempotency_key=idempotency_key,
            fingerprint=fingerprint,
        )
        fields["client"] = client  # only this client is shown the 3-D Secure client_secret
        claimed = await self._store.claim_and_enqueue(
            fields=fields, headers=headers, scoped_key=f"{client}:{idempotency_key}"
        )
        if claimed.record is None:
            raise ServiceUnavailable(
                "Too many payments are waiting to be charged; retry shortly.",
                code="queue_full",
                headers={"Retry-After": "5"},
            )
        if claimed.created:
            return Accepted(claimed.record, replayed=False)
        if claimed.record.key_fingerprint != fingerprint:
            raise IdempotencyKeyMismatch(param="Idempotency-Key", payment_id=claimed.record.id)
        return Accepted(claimed.record, replayed=True)

    async def get(self, payment_id: str) -> PaymentRecord:
        record = await self._store.get(payment_id)
        if record is None:
            raise PaymentNotFound(f"No such payment: {payment_id}", param="id")
        return record
