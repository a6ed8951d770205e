"""Standard Webhooks secrets (``whsec_<base64>``), which sign the callbacks: the one check of
CALLBACK_SIGNING_SECRETS (shared.settings.service_settings) and of a client's
``callback_signing_secrets`` (shared.settings.api_clients), so that a malformed secret stops a
process at start, not at its first callback. Errors name an entry's position, never the
secret."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable

FORMAT = "a Standard Webhooks secret (whsec_ then the base64 of 24 to 64 bytes)"


def is_whsec(entry: object) -> bool:
    if not isinstance(entry, str) or not entry.startswith("whsec_"):
        return False
    try:
        key = base64.b64decode(entry.removeprefix("whsec_"), validate=True)
    except (binascii.Error, ValueError):
        return False
    return 24 <= len(key) <= 64  # the Standard Webhooks specification's sizes


def first_malformed(entries: Iterable[object]) -> int | None:
    """The 1-based position of the first entry that is not a secret, else None."""
    return next((n for n, entry in enumerate(entries, start=1) if not is_whsec(entry)), None)
