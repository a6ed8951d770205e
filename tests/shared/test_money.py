from __future__ import annotations

import random
import re
from decimal import Decimal

import pytest

from shared.payments.money import (
    AMOUNT_PATTERN,
    MAX_MINOR_UNITS,
    MINIMUM_CHARGE,
    SUPPORTED_CURRENCIES,
    AmountError,
    exponent,
    format_minor,
    parse_amount,
)


@pytest.mark.parametrize(
    ("text", "currency", "minor"),
    [
        ("42.99", "usd", 4299),
        ("42.9", "usd", 4290),
        ("42", "usd", 4200),
        ("0.50", "usd", 50),
        ("999999.99", "usd", 99_999_999),
        ("500", "jpy", 500),
        ("50", "jpy", 50),
        ("0.30", "gbp", 30),
    ],
)
def test_parses_decimal_strings_into_minor_units(text: str, currency: str, minor: int) -> None:
    money = parse_amount(text, currency)
    assert money.minor == minor
    assert money.currency == currency


@pytest.mark.parametrize(
    ("text", "currency", "why"),
    [
        ("42.999", "usd", "at most 2 decimal places"),
        ("500.5", "jpy", "no decimal places"),
        ("0.49", "usd", "at least 0.50"),
        ("0", "usd", "at least"),
        ("1000000.00", "usd", "at most 999999.99"),
        ("100000000", "jpy", "at most 99999999"),
        ("4.299e1", "usd", "decimal string"),
        ("NaN", "usd", "decimal string"),
        ("Infinity", "usd", "decimal string"),
        ("1,000", "usd", "decimal string"),
        (" 5", "usd", "decimal string"),
        ("5 ", "usd", "decimal string"),
        ("-5", "usd", "decimal string"),
        ("+5", "usd", "decimal string"),
        ("", "usd", "decimal string"),
        (".5", "usd", "decimal string"),
        ("5.", "usd", "decimal string"),
        ("\u0665", "usd", "decimal string"),  # ARABIC-INDIC DIGIT FIVE
        ("42.99", "xyz", "not supported"),
    ],
)
def test_refuses_what_cannot_be_charged_and_says_why(text: str, currency: str, why: str) -> None:
    with pytest.raises(AmountError, match=why):
        parse_amount(text, currency)


@pytest.mark.parametrize(
    ("minor", "currency", "text"),
    [(4299, "usd", "42.99"), (5, "usd", "0.05"), (500, "jpy", "500"), (100, "eur", "1.00")],
)
def test_formats_minor_units_for_display(minor: int, currency: str, text: str) -> None:
    assert format_minor(minor, currency) == text


def _parsed_by_decimal(text: str, currency: str) -> int | str:
    """The reading of an amount through Decimal, as parse_amount once did it: its minor
    units, or the message of its AmountError."""
    if currency not in SUPPORTED_CURRENCIES:
        return f"currency {currency!r} is not supported"
    if not re.fullmatch(AMOUNT_PATTERN, text):
        return (
            'amount must be a decimal string in major units such as "42.99" '
            "(digits and one optional point; no sign, exponent, spaces or separators)"
        )
    value = Decimal(text)
    exp = exponent(currency)
    exponent_of = value.as_tuple().exponent
    assert isinstance(exponent_of, int)
    if -exponent_of > exp:
        places = "no decimal places" if exp == 0 else f"at most {exp} decimal places"
        return f"amount in {currency} takes {places}"
    if value < MINIMUM_CHARGE[currency]:
        return f"amount must be at least {MINIMUM_CHARGE[currency]} {currency} (Stripe's minimum)"
    minor = int(value.scaleb(exp))
    if minor > MAX_MINOR_UNITS:
        return f"amount must be at most {format_minor(MAX_MINOR_UNITS, currency)} {currency}"
    return minor


def _parsed(text: str, currency: str) -> int | str:
    try:
        return parse_amount(text, currency).minor
    except AmountError as exc:
        return str(exc)


def test_minor_units_and_refusals_are_what_decimal_arithmetic_gives() -> None:
    rng = random.Random(11)
    texts = ["0", "0.0", "0.00", "0.000", "0.49", "0.5", "0.50", "00000000.50", "49", "50",
             "175", "174.99", "175.00", "999999.99", "999999.990", "1000000", "99999999",
             "100000000", "999999999999.999999999999", "000000000001", "1.000000000000",
             "4.299e1", "1,000", "-5", "", ".5", "5."]  # fmt: skip
    for _ in range(3_000):
        whole = str(rng.randrange(10 ** rng.randrange(1, 13))).zfill(rng.randrange(1, 4))[-12:]
        decimals = "".join(rng.choice("0123456789") for _ in range(rng.randrange(0, 5)))
        texts.append(f"{whole}.{decimals}" if decimals else whole)
    for currency in [*sorted(SUPPORTED_CURRENCIES), "xyz"]:
        for text in texts:
            assert _parsed(text, currency) == _parsed_by_decimal(text, currency), (text, currency)


def test_minor_units_format_as_their_decimal_in_major_units() -> None:
    values = [*range(-1_050, 1_050), 99_999_999, -99_999_999, 10**15 + 7]
    for currency in ("usd", "jpy"):
        for minor in values:
            expected = str(Decimal(minor).scaleb(-exponent(currency)))
            assert format_minor(minor, currency) == expected, (minor, currency)
