"""The one home of the service's Redis state: keys (``keys``), scripts (``lua/``) and the typed
steps that use them (``payments``)."""

from shared.store.payment_store import (
    BUSY,
    SKIP,
    AsyncPaymentStore,
    Busy,
    Claimed,
    PaymentStore,
    Skip,
    Started,
)

__all__ = [
    "BUSY",
    "SKIP",
    "AsyncPaymentStore",
    "Busy",
    "Claimed",
    "PaymentStore",
    "Skip",
    "Started",
]
