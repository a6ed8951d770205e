"""What the routes read from a request: an idempotency key is 1-255 printable ASCII characters."""

from __future__ import annotations

import re

import pytest

from api.request_helpers import checked_idempotency_key
from shared.errors import InvalidRequest

KEY_RULE = re.compile(r"[\x20-\x7e]{1,255}")


def _refusal(key: object) -> tuple[str, str] | None:
    try:
        checked_idempotency_key(key, "Idempotency-Key")
    except InvalidRequest as exc:
        return exc.code, exc.message
    return None


def _accepted(key: object) -> bool:
    refusal = _refusal(key)
    assert refusal in (
        None,
        ("idempotency_key_invalid", "Idempotency-Key must be 1-255 printable ASCII characters."),
    )
    return refusal is None


def test_a_key_is_accepted_exactly_when_the_rule_matches_it() -> None:
    codes = [*range(0x3000), *range(0x3000, 0x110000, 97), 0xD800, 0xFEFF, 0x10FFFF]
    for code in codes:
        for key in (chr(code), f"order-{chr(code)}"):
            assert _accepted(key) == bool(KEY_RULE.fullmatch(key)), repr(key)


@pytest.mark.parametrize("key", ["", "x" * 256, None, 5, b"order-1", ["order-1"]])
def test_empty_long_and_non_string_keys_are_refused(key: object) -> None:
    assert not _accepted(key)
    assert _accepted("x" * 255)
