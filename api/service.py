"""The accept path: validate the amount, derive the payment id, and claim, record and enqueue
in one Redis step (``AsyncPaymentStore.claim_and_enqueue``); where a queued payment stands
(``api.queue_position``); a client's cancel of a payment not yet sent to Stripe (``cancel``)."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError
from redis.asyncio import Redis
from redis.exceptions import RedisError

from api.error_responses import validation_error
from api.queue_position import AcceptEstimates, QueueEstimates
from api.schemas import PAYMENT_ID_PATTERN, PaymentRequest, QueueFigures
from shared.callbacks.url_rules import callback_endpoint
from shared.errors import (
    IdempotencyKeyMismatch,
    InvalidRequest,
    PaymentInProgress,
    PaymentNotCancelable,
    PaymentNotFound,
    PaymentServiceError,
    RateLimited,
    ServiceUnavailable,
    StoreUnavailable,
)
from shared.payments.deadlines import deadline_of
from shared.payments.metadata import checked_metadata
from shared.payments.money import AmountError, parse_minor
from shared.payments.payment_records import (
    PaymentRecord,
    new_record_fields,
    payment_id_for,
    request_fingerprint,
)
from shared.payments.states import Status
from shared.settings.api_clients import ANONYMOUS, Client
from shared.settings.service_settings import Settings
from shared.store import AsyncPaymentStore
from shared.store.payment_store import Claimed, ClientLimits
from shared.store.unsent_store import AsyncCancelStore

_PAYMENT_ID = re.compile(PAYMENT_ID_PATTERN)


@dataclass(frozen=True, slots=True)
class NewPayment:
    fields: dict[str, str]
    fingerprint: str


@dataclass(frozen=True, slots=True)
class Accepted:
    record: PaymentRecord
    replayed: bool
    rate_limit_headers: dict[str, str]
    queue: QueueFigures | None = None  # a new payment's place in its client's queue


class PaymentService:
    def __init__(self, redis: Redis, settings: Settings, *, clients: int = 1) -> None:
        self._store = AsyncPaymentStore(redis, settings)
        self._cancels = AsyncCancelStore(redis, settings)
        self.queues = QueueEstimates(settings.stripe_limits)
        self._settings = settings
        self._secret = settings.payment_id_key
        # Without a share of its own, each client may hold an equal part of the backlog bound.
        self._equal_share = 1 / max(1, clients)

    def limits(self, principal: Client) -> ClientLimits:
        """The request rate and backlog share a client may use (its own, else the defaults)."""
        settings = self._settings
        rate = settings.client_max_rps if principal.max_rps is None else principal.max_rps
        burst = settings.client_burst if principal.burst is None else principal.burst
        share = principal.backlog_share or self._equal_share
        return ClientLimits(
            name=principal.name,
            max_rps=rate,
            burst=max(1, burst),
            max_backlog=max(1, int(settings.queue_max_backlog * share)),
        )

    async def accept(
        self,
        request: PaymentRequest,
        *,
        idempotency_key: str,
        client: str,
        headers: dict[str, Any],
        principal: Client | None = None,
    ) -> Accepted:
        new = self.new_payment(request, idempotency_key=idempotency_key, client=client)
        return await self.claim(new, headers=headers, principal=principal)

    def parse(
        self,
        body: bytes | str,
        *,
        idempotency_key: str,
        client: str,
        created_at: str | None = None,
    ) -> NewPayment:
        """A payment request's JSON as the record it makes: the one reading of a payment's
        fields, for ``POST /payments`` and each item of ``POST /payments/batch``, so that both
        take the same fields with the same checks and the same errors (InvalidRequest).
        ``created_at``: a batch's, which its payments share (else now)."""
        try:
            request = PaymentRequest.model_validate_json(body)
        except ValidationError as exc:
            raise validation_error(exc.errors(include_url=False)) from None
        return self.new_payment(
            request, idempotency_key=idempotency_key, client=client, created_at=created_at
        )

    def new_payment(
        self,
        request: PaymentRequest,
        *,
        idempotency_key: str,
        client: str,
        created_at: str | None = None,
    ) -> NewPayment:
        """The record a valid request makes (no Redis call); InvalidRequest for an amount,
        metadata or callback URL the model let through."""
        currency = request.currency
        try:
            amount_minor = parse_minor(request.amount, currency)
        except AmountError as exc:
            raise InvalidRequest(str(exc), code="amount_invalid", param="amount") from exc
        metadata = checked_metadata(request.metadata) if request.metadata else None
        description = request.description or None
        deadline = deadline_of(request.expires_at, request.expires_in)
        fingerprint = request_fingerprint(
            account_id=request.account_id,
            amount_minor=amount_minor,
            currency=currency,
            payment_method=request.payment_method,
            description=description,
            metadata=metadata,
            deadline=deadline.given if deadline else None,
            capture_method=request.capture_method,
        )
        # Keys are scoped to the client, as Stripe scopes them to an account.
        payment_id = payment_id_for(
            secret=self._secret, client=client, idempotency_key=idempotency_key
        )
        fields = new_record_fields(
            payment_id=payment_id,
            account_id=request.account_id,
            amount_minor=amount_minor,
            currency=currency,
            payment_method=request.payment_method,
            idempotency_key=idempotency_key,
            fingerprint=fingerprint,
            client=client,
            description=description,
            metadata=metadata,
            expires_ms=deadline.ms if deadline else None,
            capture_method=request.capture_method,
            created_at=created_at,
        )
        endpoint = callback_endpoint(self._settings, request.callback_url, client)
        if endpoint:
            fields["callback_url"] = endpoint
        return NewPayment(fields, fingerprint)

    async def claim(
        self, new: NewPayment, *, headers: dict[str, Any], principal: Client | None = None
    ) -> Accepted:
        """Claim the key, record and enqueue in one step, with the request's token: the new
        payment, the one the key already has (a replay; 422 for another request), or the
        refusal (429 over the client's rate, 503 over its share or the queue's bound)."""
        limits = self.limits(principal or ANONYMOUS)
        claimed = await self._store.claim_and_enqueue(
            fields=new.fields,
            headers=headers,
            limits=limits,
        )
        return self._accepted(claimed, new.fingerprint, limits)

    async def claim_many(
        self,
        news: Sequence[NewPayment | PaymentServiceError],
        *,
        headers: dict[str, Any],
        principal: Client | None = None,
    ) -> tuple[list[Accepted | PaymentServiceError], dict[str, str]]:
        """:meth:`claim` for each payment of a batch, in order and in as few Redis round
        trips as the set-up allows (one with the group commit), each with its own token: each
        one's Accepted, or its error; and the RateLimit headers after the last. An item
        already refused (its PaymentServiceError) takes its token as a refused
        ``POST /payments`` does, and keeps its error (429 instead once the client is over its
        rate)."""
        limits = self.limits(principal or ANONYMOUS)
        claims = [None if isinstance(new, PaymentServiceError) else new.fields for new in news]
        claimed = await self._store.claim_many(claims, headers=headers, limits=limits)
        estimates = self.queues.accepts()
        answers: list[Accepted | PaymentServiceError] = []
        rate_headers: dict[str, str] = {}
        for new, answer in zip(news, claimed, strict=True):
            try:
                if isinstance(answer, RedisError):
                    raise StoreUnavailable(headers={"Retry-After": "1"})
                if isinstance(answer, Exception):
                    raise answer
                rate_headers = _rate_limit_headers(
                    limits, answer.tokens_left, answer.retry_after_ms
                )
                if isinstance(new, PaymentServiceError):
                    if answer.refusal == "rate_limited":
                        raise _rate_limited(limits, rate_headers)
                    raise new
                answers.append(
                    self._accepted(answer, new.fingerprint, limits, rate_headers, estimates)
                )
            except PaymentServiceError as refused:
                answers.append(refused)
        return answers, rate_headers

    def _accepted(
        self,
        claimed: Claimed,
        fingerprint: str,
        limits: ClientLimits,
        rate_headers: dict[str, str] | None = None,
        estimates: AcceptEstimates | None = None,
    ) -> Accepted:
        """An accept script's answer as the request's: Accepted, or the refusal it says.
        ``rate_headers`` when already made of it; ``estimates``: a batch's (one accept call)."""
        if rate_headers is None:
            rate_headers = _rate_limit_headers(limits, claimed.tokens_left, claimed.retry_after_ms)
        if claimed.refusal == "rate_limited":
            raise _rate_limited(limits, rate_headers)
        if claimed.refusal == "client_backlog_full":
            raise ServiceUnavailable(
                "This client already has its whole share of the payments waiting to be "
                f"charged ({limits.max_backlog}); retry shortly.",
                code="queue_full",
                headers={"Retry-After": "5", **rate_headers},
            )
        if claimed.record is None:  # the queue as a whole is full
            raise ServiceUnavailable(
                "Too many payments are waiting to be charged; retry shortly.",
                code="queue_full",
                headers={"Retry-After": "5"},
            )
        if claimed.created:
            queue = None
            if claimed.ahead >= 0:
                queue = (estimates or self.queues).at_accept(
                    claimed.record, ahead=claimed.ahead, seq=claimed.seq
                )
            return Accepted(claimed.record, replayed=False, rate_limit_headers=rate_headers,
                            queue=queue)  # fmt: skip
        if claimed.record.key_fingerprint != fingerprint:
            raise IdempotencyKeyMismatch(param="Idempotency-Key", payment_id=claimed.record.id)
        return Accepted(claimed.record, replayed=True, rate_limit_headers=rate_headers)

    async def take_token(self, principal: Client | None) -> dict[str, str]:
        """One request from the client's request budget (every route but a valid accept,
        which takes it in its claim): its RateLimit headers, or 429."""
        limits = self.limits(principal or ANONYMOUS)
        taken = await self._store.take_token(limits)
        headers = _rate_limit_headers(limits, taken.tokens_left, taken.retry_after_ms)
        if taken.refusal == "rate_limited":
            raise _rate_limited(limits, headers)
        return headers

    async def get_for(self, payment_id: str, principal: Client | None) -> PaymentRecord:
        """A payment as its client (or an admin) sees it; anyone else gets the same 404 as for
        a payment that does not exist, so ids cannot be probed."""
        if not _PAYMENT_ID.fullmatch(payment_id):
            raise PaymentNotFound(f"No such payment: {payment_id}", param="id")
        record = await self.get(payment_id)
        if not visible_to(record, principal or ANONYMOUS):
            raise PaymentNotFound(f"No such payment: {payment_id}", param="id")
        return record

    async def standing(self, record: PaymentRecord) -> QueueFigures | None:
        """Where a queued payment stands in its client's queue (an estimate); None for a
        payment not queued, or one older than the client queues."""
        if record.status is not Status.QUEUED or not record.queue or not record.client:
            return None
        waiting, accepted = await self._store.queue_standing(record.queue, record.client)
        return self.queues.from_queue(record, waiting=waiting, accepted=accepted)

    async def cancel(self, payment_id: str, principal: Client | None) -> PaymentRecord:
        """Cancel a payment its client can see (the one visibility rule: ``get_for``). One not
        yet sent to Stripe ends ``canceled`` in one atomic step (shared.store.unsent_store),
        never to be charged: the worker that takes its message finds it final. A canceled one
        is answered as it is (idempotent). Any other goes to ``cancel_sent``."""
        await self.get_for(payment_id, principal)
        result = await self._cancels.cancel(payment_id)
        if result.record is None:
            raise PaymentNotFound(f"No such payment: {payment_id}", param="id")
        if result.canceled or result.already:
            return result.record
        return await self.cancel_sent(result.record)

    async def cancel_sent(self, record: PaymentRecord) -> PaymentRecord:
        """A cancel of a payment whose charge may already be at Stripe, or is final: the one
        place such a cancel is decided (an authorization to void goes here). An attempt in
        flight, an outcome unknown, or a queued payment some worker holds: 409
        payment_in_progress; so does one waiting for its customer's 3-D Secure (sent, and
        still to be charged if the customer completes it); a final one: 409
        payment_not_cancelable."""
        if record.status is Status.REQUIRES_ACTION:
            raise PaymentInProgress(
                "The payment's charge was sent to Stripe and waits for the customer's "
                "authentication (3-D Secure), so it can no longer be canceled: it is charged if "
                "the customer completes it. Poll the payment for its outcome.",
                payment_id=record.id,
            )
        if record.is_final:
            raise PaymentNotCancelable(
                f"The payment is {record.status.value} and can no longer be canceled.",
                payment_id=record.id,
            )
        raise PaymentInProgress(payment_id=record.id)

    async def may_list(self, principal: Client | None, customer: str) -> bool:
        """A client lists the charges of customers for which a payment of its own succeeded
        (an accept alone gives no such right), unless it may list all."""
        who = principal or ANONYMOUS
        return who.may("customers:all") or await self._store.has_paid(who.name, customer)

    async def clients_of(self, payment_ids: Sequence[str]) -> Mapping[str, str]:
        """The client of each of these payments, while their records are kept."""
        return await self._store.clients_of(payment_ids)

    @staticmethod
    def charges_of(principal: Client | None) -> str | None:
        """Whose charges the client sees in a customer's list: its own (its name), or every
        one (None) with ``customers:all``."""
        who = principal or ANONYMOUS
        return None if who.may("customers:all") else who.name

    async def get(self, payment_id: str) -> PaymentRecord:
        record = await self._store.get(payment_id)
        if record is None:
            raise PaymentNotFound(f"No such payment: {payment_id}", param="id")
        return record


def visible_to(record: PaymentRecord, principal: Client) -> bool:
    """Who sees a payment and its refunds: its own client and admins. A record older than
    client ownership (it has no client) stays visible to any authenticated client until it
    expires."""
    return principal.is_admin or record.client is None or record.client == principal.name


def _rate_limited(limits: ClientLimits, headers: dict[str, str]) -> RateLimited:
    reset = headers["RateLimit"].rsplit("t=", 1)[1]
    return RateLimited(
        f"Too many requests from this client: at most {limits.max_rps:g} a second (bursts of "
        f"{limits.burst}); retry after {reset} s.",
        headers={"Retry-After": reset, **headers},
    )


def _rate_limit_headers(limits: ClientLimits, tokens_left: int, retry_ms: int) -> dict[str, str]:
    """The IETF draft's RateLimit-Policy and RateLimit fields for a token bucket: a quota of
    ``burst`` requests over the seconds the bucket takes to fill again."""
    if limits.max_rps <= 0:
        return {}
    window = max(1, round(limits.burst / limits.max_rps))
    reset = max(1, -(-retry_ms // 1000)) if retry_ms else 0
    left = max(0, tokens_left)
    return {
        "RateLimit-Policy": f'"client";q={limits.burst};w={window}',
        "RateLimit": f'"client";r={left};t={reset}',
    }
