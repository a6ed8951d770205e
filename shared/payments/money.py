"""Money: decimal strings in major units at the edges, integer minor units everywhere else.

A float never holds an amount. Parsing is strict: ``"42.99"`` is an amount; ``42.99`` (a JSON
number), ``"4.299e1"``, ``"NaN"``, ``"1,000"``, ``" 5"`` and ``"+5"`` are not.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal

# Stripe's minimum charge amounts, in major units, for the currencies this service accepts.
# Source: Stripe docs "Minimum and maximum charge amounts" (settlement in the same currency).
MINIMUM_CHARGE: dict[str, Decimal] = {
    "usd": Decimal("0.50"),
    "aed": Decimal("2.00"),
    "aud": Decimal("0.50"),
    "bgn": Decimal("1.00"),
    "brl": Decimal("0.50"),
    "cad": Decimal("0.50"),
    "chf": Decimal("0.50"),
    "czk": Decimal("15.00"),
    "dkk": Decimal("2.50"),
    "eur": Decimal("0.50"),
    "gbp": Decimal("0.30"),
    "hkd": Decimal("4.00"),
    "huf": Decimal("175.00"),
    "inr": Decimal("0.50"),
    "jpy": Decimal("50"),
    "krw": Decimal("100"),
    "mxn": Decimal("10.00"),
    "myr": Decimal("2.00"),
    "nok": Decimal("3.00"),
    "nzd": Decimal("0.50"),
    "pln": Decimal("2.00"),
    "ron": Decimal("2.00"),
    "sek": Decimal("3.00"),
    "sgd": Decimal("0.50"),
    "thb": Decimal("10.00"),
}

# Stripe's zero-decimal currencies: the amount is already in the smallest unit.
ZERO_DECIMAL = frozenset(
    {
        "bif",
        "clp",
        "djf",
        "gnf",
        "jpy",
        "kmf",
        "krw",
        "mga",
        "pyg",
        "rwf",
        "ugx",
        "vnd",
        "vuv",
        "xaf",
        "xof",
        "xpf",
    }
)

SUPPORTED_CURRENCIES = frozenset(MINIMUM_CHARGE)

# Stripe accepts at most eight digits in minor units (999,999.99 in a two-decimal currency).
MAX_MINOR_UNITS = 99_999_999

# What an amount looks like on the wire (the API schema uses it too): digits and one optional
# point, nothing else. Range and decimal places are checked by parse_amount.
AMOUNT_PATTERN = r"^[0-9]{1,12}(\.[0-9]{1,12})?$"
_AMOUNT_RE = re.compile(AMOUNT_PATTERN)


class AmountError(ValueError):
    """An amount a client sent that cannot be charged; the message says why."""


def exponent(currency: str) -> int:
    """Digits after the decimal point in ``currency``'s major unit (format_minor knows it
    too)."""
    return 0 if currency in ZERO_DECIMAL else 2


@dataclass(frozen=True, slots=True)
class Money:
    minor: int
    currency: str

    def __str__(self) -> str:
        return format_minor(self.minor, self.currency)


# Each currency's minimum in minor units (exact: no minimum has more decimals than its currency).
_MINIMUM_MINOR = {
    currency: int(minimum.scaleb(exponent(currency)))
    for currency, minimum in MINIMUM_CHARGE.items()
}


def format_minor(minor: int, currency: str) -> str:
    """``4299, "usd"`` -> ``"42.99"``; ``500, "jpy"`` -> ``"500"``. Every answer writes its
    amounts with it: the two decimals are picked from a table rather than formatted."""
    if currency in ZERO_DECIMAL:
        return str(minor)
    if minor >= 0:
        whole, cents = divmod(minor, 100)
        return f"{whole}.{_TWO_DIGITS[cents]}"
    whole, cents = divmod(-minor, 100)
    return f"-{whole}.{_TWO_DIGITS[cents]}"


_TWO_DIGITS = tuple(f"{n:02d}" for n in range(100))


def parse_amount(text: str, currency: str) -> Money:
    """Parse a client's decimal string in major units into minor units, or raise AmountError."""
    return Money(minor=parse_minor(text, currency), currency=currency)


def parse_minor(text: str, currency: str) -> int:
    """:func:`parse_amount`'s minor units alone, without making a Money (every accept's)."""
    if currency not in SUPPORTED_CURRENCIES:
        raise AmountError(f"currency {currency!r} is not supported")
    if not _AMOUNT_RE.fullmatch(text):
        raise AmountError(
            'amount must be a decimal string in major units such as "42.99" '
            "(digits and one optional point; no sign, exponent, spaces or separators)"
        )
    # The pattern leaves digits and at most one point: minor units are the digits once the
    # decimals are padded to the currency's, exact without a Decimal.
    whole, _, decimals = text.partition(".")
    exp = exponent(currency)
    if len(decimals) > exp:
        places = "no decimal places" if exp == 0 else f"at most {exp} decimal places"
        raise AmountError(f"amount in {currency} takes {places}")
    minor = int(whole + decimals.ljust(exp, "0"))
    if minor < _MINIMUM_MINOR[currency]:
        raise AmountError(
            f"amount must be at least {MINIMUM_CHARGE[currency]} {currency} (Stripe's minimum)"
        )
    if minor > MAX_MINOR_UNITS:
        raise AmountError(
            f"amount must be at most {format_minor(MAX_MINOR_UNITS, currency)} {currency}"
        )
    return minor
