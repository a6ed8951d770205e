from __future__ import annotations

import pytest

from shared.payments.money import AmountError, format_minor, parse_amount


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
