"""A payment's ``metadata`` and ``description``: Stripe's rules for them, and the keys of the
PaymentIntent's metadata the service keeps for itself.

Stripe allows 50 metadata keys on an object, each key at most 40 characters without square
brackets, each value a string of at most 500 characters, and a PaymentIntent description of at
most 1,000 characters. The service writes keys of its own into the same metadata (our payment
id, which reconciliation looks for, and the client that made the payment, which the customer
list filters on), so a client may use 50 less those keys and never one of them: a client's key
that overwrote ours would hide a charge from reconciliation.

As on Stripe, a key sent with an empty value is not set, and an empty ``metadata`` or
``description`` is the same as none.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from shared.errors import InvalidRequest

# The service's own keys in a PaymentIntent's metadata (shared.stripe.gateway writes them).
PAYMENT_ID_KEY = "payment_id"
CLIENT_KEY = "client"
RESERVED_KEYS = frozenset({PAYMENT_ID_KEY, CLIENT_KEY})
_RESERVED_NAMES = " and ".join(sorted(RESERVED_KEYS))

STRIPE_MAX_KEYS = 50
MAX_KEYS = STRIPE_MAX_KEYS - len(RESERVED_KEYS)
MAX_KEY_LENGTH = 40
MAX_VALUE_LENGTH = 500
MAX_DESCRIPTION_LENGTH = 1000

# What /openapi.json says of the field (the checks below are the service's own).
METADATA_SCHEMA: dict[str, Any] = {
    "type": "object",
    "maxProperties": MAX_KEYS,
    "propertyNames": {
        "minLength": 1,
        "maxLength": MAX_KEY_LENGTH,
        "pattern": r"^[^\[\]]+$",
        "not": {"enum": sorted(RESERVED_KEYS)},
    },
    "additionalProperties": {"type": "string", "maxLength": MAX_VALUE_LENGTH},
}


def _refused(
    message: str, key: str | None = None, code: str = "metadata_invalid"
) -> InvalidRequest:
    param = "metadata" if key is None else f"metadata[{key}]"
    return InvalidRequest(message, code=code, param=param)


def key_reserved(key: str) -> InvalidRequest:
    return _refused(
        f"metadata[{key}] is reserved: the service sets {_RESERVED_NAMES} itself.",
        key,
        code="metadata_key_reserved",
    )


def value_too_long(key: str) -> InvalidRequest:
    return _refused(f"metadata[{key}] must be at most {MAX_VALUE_LENGTH} characters.", key)


def checked_metadata(metadata: Mapping[str, Any]) -> dict[str, str]:
    """The metadata a request sets, in its order (keys with an empty value left out), or the
    400 naming the first key that breaks a rule."""
    if len(metadata) > MAX_KEYS:
        raise _refused(
            f"metadata may have at most {MAX_KEYS} keys (Stripe's {STRIPE_MAX_KEYS}, less the "
            f"{len(RESERVED_KEYS)} the service sets).",
        )
    kept: dict[str, str] = {}
    for key, value in metadata.items():
        if key in RESERVED_KEYS:
            raise key_reserved(key)
        if not key or len(key) > MAX_KEY_LENGTH or "[" in key or "]" in key:
            raise _refused(
                f"metadata keys must be 1-{MAX_KEY_LENGTH} characters without square brackets.",
                key,
            )
        if type(value) is not str:
            raise _refused(f"metadata[{key}] must be a string: metadata values are strings.", key)
        if len(value) > MAX_VALUE_LENGTH:
            raise value_too_long(key)
        if value:
            kept[key] = value
    return kept


def canonical(metadata: Mapping[str, str]) -> str:
    """The metadata as one string whatever the order of its keys (for the request's
    fingerprint)."""
    return orjson.dumps(metadata, option=orjson.OPT_SORT_KEYS).decode()


def client_metadata(metadata: Any) -> dict[str, str]:
    """A Stripe object's metadata as a client sees it: without the service's own keys."""
    if not isinstance(metadata, dict) or not metadata:
        return {}
    return {str(k): str(v) for k, v in metadata.items() if k not in RESERVED_KEYS}
