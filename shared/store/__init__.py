"""The one home of the service's Redis state: keys (``keys``), scripts (``lua/``) and the typed
steps that use them (``payments``)."""

from shared.store.payment_store import (
    BUSY,
    PAST_DEADLINE,
    SKIP,
    AsyncPaymentStore,
    Busy,
    Claimed,
    PastDeadline,
    PaymentStore,
    Skip,
    Started,
)

__all__ = [
    "BUSY",
    "PAST_DEADLINE",
    "SKIP",
    "AsyncPaymentStore",
    "Busy",
    "Claimed",
    "PastDeadline",
    "PaymentStore",
    "Skip",
    "Started",
]
