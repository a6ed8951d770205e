"""The state machine of payments and refunds: every status, and every move with its cause.

The moves are data, one row each (``PAYMENT_MOVES``, ``REFUND_MOVES``; Kill Bill's
``PaymentStates.xml`` is the model): from a status, to a status, why, and which step makes it
(the Lua script ``shared/store/lua/<step>.lua``, the one atomic write of that move). A script is
given its own rows as ``MOVES`` / ``REFUND_MOVES`` (``shared.store.lua_scripts``) and refuses
any other move, so no move is spelled inside Lua. A row whose two statuses are the same is a
step that acts on a record without moving it (a retried attempt, a sweep pushing a lost
message again): it says which statuses the step accepts.

What a Stripe object means for a record (which status, which fields) is
``shared.stripe.outcomes.settle``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Generic, TypeVar


class Status(StrEnum):
    """A payment's status."""

    QUEUED = "queued"
    PROCESSING = "processing"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    REQUIRES_ACTION = "requires_action"
    # Stripe may or may not have charged it and could not be asked: the service keeps asking
    # (see worker.attempts, reconcile_round) and never tells the client "not charged" meanwhile.
    UNKNOWN = "unknown"
    # After the charge: Stripe says so later (a refund of the whole amount, a dispute opened).
    REFUNDED = "refunded"
    DISPUTED = "disputed"
    # Never sent to Stripe, so never charged: its deadline (expires_at) passed while it was
    # queued, or its client canceled it while it was queued.
    EXPIRED = "expired"
    # Authorized, not captured (``capture_method: manual``): the amount is held on the card
    # until a capture takes it (succeeded) or a void, or Stripe after 7 days, releases it
    # (canceled: nothing was captured).
    REQUIRES_CAPTURE = "requires_capture"
    CANCELED = "canceled"


class CaptureStatus(StrEnum):
    """The status of the capture or void asked of an authorized payment (its record's
    ``capture_status``; the payment stays ``requires_capture`` until it settles)."""

    PENDING = "pending"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    # Stripe could not be asked whether it captured (or voided): the reconciler keeps asking,
    # and no other capture or void is accepted meanwhile.
    UNKNOWN = "unknown"


class RefundStatus(StrEnum):
    """A refund's status."""

    PENDING = "pending"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    # Stripe could not be asked whether it refunded: the task keeps asking, and the amount
    # stays claimed meanwhile (never "not refunded" until Stripe says so).
    UNKNOWN = "unknown"


# A new record's status (written by the step that creates it: accept, claim_refund).
PAYMENT_INITIAL = Status.QUEUED
REFUND_INITIAL = RefundStatus.PENDING

# Final for the charge path: past the charge, so a charge worker never attempts or overwrites
# it. Some still move after the fact (see the lifecycle rows), when Stripe reports what
# happened later.
FINAL_STATUSES = frozenset(
    {
        Status.SUCCEEDED,
        Status.FAILED,
        Status.REQUIRES_ACTION,
        Status.REFUNDED,
        Status.DISPUTED,
        Status.EXPIRED,
        Status.REQUIRES_CAPTURE,
        Status.CANCELED,
    }
)
# Settled for now: a request waiting for the outcome is answered (unknown may still move).
SETTLED_STATUSES = FINAL_STATUSES | {Status.UNKNOWN}
# Charged, whatever happened since (a refund, a dispute): answered 200 like a success, with
# the PaymentIntent as its confirmation.
CHARGED_STATUSES = frozenset({Status.SUCCEEDED, Status.REFUNDED, Status.DISPUTED})
# Only a succeeded payment can be refunded (a partly refunded one still is succeeded).
REFUNDABLE_STATUSES = frozenset({Status.SUCCEEDED})
# The service knows that nothing was sent to Stripe for these: no attempt has started since
# the payment was queued (an attempt's start moves it to processing, atomically). Only these
# may be canceled or expire.
UNSENT_STATUSES = frozenset({Status.QUEUED})
# An attempt may have reached Stripe and its answer is not in yet: a cancel must wait for it.
IN_FLIGHT_STATUSES = frozenset({Status.PROCESSING, Status.UNKNOWN})

FINAL_REFUND_STATUSES = frozenset({RefundStatus.SUCCEEDED, RefundStatus.FAILED})
# A settled capture or void is never written again; a failed one may be followed by a new one.
FINAL_CAPTURE_STATUSES = frozenset({CaptureStatus.SUCCEEDED, CaptureStatus.FAILED})


class Cause(StrEnum):
    """Why a record moves."""

    # A worker takes the payment to call Stripe (its first attempt, a retry, a redelivery).
    ATTEMPT = "attempt"
    # The recovery sweep pushes again the message of a payment or refund it proved lost.
    SWEEP = "sweep"
    # Stripe's answer to the attempt, or none at all (``unknown``: asked again later).
    STRIPE_ANSWER = "stripe_answer"
    # The reconciler asked Stripe what became of an unknown outcome (or still cannot ask).
    RECONCILED = "reconciled"
    # An operator replays a dead letter: charged again only if Stripe holds no charge for it.
    REPLAY = "replay"
    # A PaymentIntent fetched again after its webhook, or by the re-check of a payment waiting
    # for its customer (worker.action_recheck).
    INTENT = "intent"
    # charge.dispute.created, confirmed by the charge fetched again.
    DISPUTE = "dispute"
    # charge.refunded: refunds at Stripe (the dashboard's included) reach the amount.
    STRIPE_REFUNDS = "stripe_refunds"
    # Our own succeeded refunds reach the amount.
    OUR_REFUNDS = "our_refunds"
    # Its deadline (expires_at) passed before an attempt started: found by the worker that
    # takes its message, or by the maintenance round's look at the deadlines (worker.deadlines).
    DEADLINE = "deadline"
    # Its client asked: POST /payments/{id}/cancel.
    CLIENT_CANCEL = "client_cancel"
    # A client asks to capture or void an authorization (POST /payments/{id}/capture, cancel).
    CAPTURE_ASKED = "capture_asked"
    # Stripe's answer to a capture or void, or the reconciler's look at the PaymentIntent.
    CAPTURE_ANSWER = "capture_answer"


S = TypeVar("S", Status, RefundStatus)


@dataclass(frozen=True, slots=True)
class Move(Generic[S]):
    source: S
    target: S
    cause: Cause
    step: str  # the Lua script that writes it


def _rows(
    sources: Iterable[S], targets: Iterable[S], cause: Cause, step: str
) -> tuple[Move[S], ...]:
    return tuple(Move(s, t, cause, step) for s in sources for t in targets)


_S = Status
# What a charge attempt's answer may record.
_ANSWERS = (_S.SUCCEEDED, _S.FAILED, _S.REQUIRES_ACTION, _S.REQUIRES_CAPTURE, _S.UNKNOWN)

# Where an authorization stands or ends: held, captured (and refunded or disputed since: a
# webhook may tell all that before a capture's own answer is recorded), released.
_AUTHORIZATION_ENDS = (_S.REQUIRES_CAPTURE, _S.SUCCEEDED, _S.CANCELED, _S.REFUNDED, _S.DISPUTED)

PAYMENT_MOVES: tuple[Move[Status], ...] = (
    # --- the charge path -------------------------------------------------------------------
    Move(_S.QUEUED, _S.PROCESSING, Cause.ATTEMPT, "start_attempt"),
    Move(_S.PROCESSING, _S.PROCESSING, Cause.ATTEMPT, "start_attempt"),
    # A delivery of a payment whose outcome is unknown: the attempt reconciles first.
    Move(_S.UNKNOWN, _S.PROCESSING, Cause.ATTEMPT, "start_attempt"),
    Move(_S.QUEUED, _S.QUEUED, Cause.SWEEP, "requeue_stale"),
    Move(_S.PROCESSING, _S.PROCESSING, Cause.SWEEP, "requeue_stale"),
    # From queued too: a failover may lose the attempt's start but not its answer.
    *_rows((_S.PROCESSING, _S.QUEUED), _ANSWERS, Cause.STRIPE_ANSWER, "finish"),
    *_rows((_S.UNKNOWN,), _ANSWERS, Cause.RECONCILED, "finish"),
    # An unknown outcome found long after: the authorization had already been released.
    Move(_S.UNKNOWN, _S.CANCELED, Cause.RECONCILED, "finish"),
    Move(_S.FAILED, _S.QUEUED, Cause.REPLAY, "replay"),
    # --- never sent: an attempt that starts moves the payment out of queued in the same
    # script that checks its deadline (start_attempt refuses one past it), so a payment that
    # leaves queued this way was never sent to Stripe and never will be ---------------------
    Move(_S.QUEUED, _S.EXPIRED, Cause.DEADLINE, "expire"),
    # A first attempt whose create waited for its Stripe slot past the deadline: the worker
    # holding it sends nothing and ends it (expire with its lease's token; nothing was ever
    # sent: attempts 1, no PaymentIntent). No other processing payment is expired.
    Move(_S.PROCESSING, _S.EXPIRED, Cause.DEADLINE, "expire"),
    # (A cancel asked again answers the canceled payment and writes nothing: no row.)
    Move(_S.QUEUED, _S.CANCELED, Cause.CLIENT_CANCEL, "cancel"),
    # --- after the charge path's first answer: an event arriving late or out of order never
    # moves a payment backwards, and no move leads back into the charge path ---------------
    # 3-D Secure completed (or the PaymentIntent canceled, authentication failed).
    *_rows((_S.REQUIRES_ACTION,), (_S.SUCCEEDED, _S.FAILED), Cause.INTENT, "transition"),
    # The charge path could not learn the outcome: whatever Stripe reports is the truth.
    *_rows(
        (_S.UNKNOWN,),
        (_S.SUCCEEDED, _S.FAILED, _S.REQUIRES_ACTION, _S.REQUIRES_CAPTURE, _S.CANCELED),
        Cause.INTENT,
        "transition",
    ),
    # 3-D Secure completed on an authorization.
    Move(_S.REQUIRES_ACTION, _S.REQUIRES_CAPTURE, Cause.INTENT, "transition"),
    # An authorization captured (ours, or the dashboard's) or released (a void, or Stripe's
    # own after 7 days: payment_intent.canceled with cancellation_reason automatic).
    *_rows((_S.REQUIRES_CAPTURE,), (_S.SUCCEEDED, _S.CANCELED), Cause.INTENT, "transition"),
    # Stripe says its PaymentIntent succeeded after all (the customer retried 3-D Secure with
    # another card through Stripe.js): the customer was charged, so the record says so.
    Move(_S.FAILED, _S.SUCCEEDED, Cause.INTENT, "transition"),
    *_rows((_S.SUCCEEDED, _S.REFUNDED), (_S.DISPUTED,), Cause.DISPUTE, "transition"),
    *_rows((_S.SUCCEEDED, _S.DISPUTED), (_S.REFUNDED,), Cause.STRIPE_REFUNDS, "stripe_refunds"),
    *_rows((_S.SUCCEEDED, _S.DISPUTED), (_S.REFUNDED,), Cause.OUR_REFUNDS, "refund_finish"),
    # --- capture or void of an authorization: the payment stays requires_capture while it is
    # asked, attempted and, if Stripe cannot be asked, unknown (its own capture_status) --------
    Move(_S.REQUIRES_CAPTURE, _S.REQUIRES_CAPTURE, Cause.CAPTURE_ASKED, "capture_accept"),
    # Captured or released already (a webhook told before the attempt's answer was recorded):
    # the attempt only learns it, and records its own outcome.
    *(Move(s, s, Cause.ATTEMPT, "capture_start") for s in _AUTHORIZATION_ENDS),
    *(Move(s, s, Cause.SWEEP, "requeue_capture") for s in _AUTHORIZATION_ENDS),
    *_rows(
        (_S.REQUIRES_CAPTURE,),
        (_S.REQUIRES_CAPTURE, _S.SUCCEEDED, _S.CANCELED),
        Cause.CAPTURE_ANSWER,
        "capture_finish",
    ),
    *(Move(s, s, Cause.CAPTURE_ANSWER, "capture_finish") for s in _AUTHORIZATION_ENDS[1:]),
)

_R = RefundStatus
# What a refund attempt's answer may record.
_REFUND_ANSWERS = (_R.SUCCEEDED, _R.FAILED, _R.UNKNOWN)
REFUND_MOVES: tuple[Move[RefundStatus], ...] = (
    Move(_R.PENDING, _R.PENDING, Cause.SWEEP, "requeue_refund"),
    *_rows((_R.PENDING,), _REFUND_ANSWERS, Cause.STRIPE_ANSWER, "refund_finish"),
    *_rows((_R.UNKNOWN,), _REFUND_ANSWERS, Cause.RECONCILED, "refund_finish"),
)


def payment_moves(step: str) -> tuple[Move[Status], ...]:
    """The rows of PAYMENT_MOVES that ``step`` writes."""
    return tuple(m for m in PAYMENT_MOVES if m.step == step)


def refund_moves(step: str) -> tuple[Move[RefundStatus], ...]:
    """The rows of REFUND_MOVES that ``step`` writes."""
    return tuple(m for m in REFUND_MOVES if m.step == step)
