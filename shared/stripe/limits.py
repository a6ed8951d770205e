"""Stripe's rate limits as Stripe meters them: one for the account, one per endpoint.

Stripe counts requests per second per account (the global limit) and per endpoint, each named
operation apart: the method and the path template, ``GET /v1/customers/{id}`` one endpoint
whatever the id (docs/STRIPE.md names every endpoint the service calls). Its published defaults
(docs.stripe.com/rate-limits): live mode 100 requests/s in all, sandbox 25/s, and 25/s an
endpoint in both unless Stripe says otherwise for it; none of the endpoints the service calls
has a limit of its own (the Search and Files APIs do; the service uses neither). Stripe raises
an account's limits on request: ``STRIPE_RATE_LIMITS`` says so here.

``STRIPE_MAX_RPS``, the one budget the service had before, is still the global limit when set
(0 turns every budget off); a ``global`` entry in ``STRIPE_RATE_LIMITS`` wins over it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass

# Requests a second, per account (docs.stripe.com/rate-limits).
LIVE_GLOBAL = 100.0
SANDBOX_GLOBAL = 25.0
ENDPOINT_DEFAULT = 25.0

GLOBAL = "global"  # STRIPE_RATE_LIMITS' name of the account's limit
ENDPOINT = "endpoint"  # and of every endpoint's default

# Each Stripe call by its metric label (``payments_stripe_request_seconds{call}``) and the
# endpoint Stripe's limits count it under, as docs/STRIPE.md lists them.
ENDPOINTS: dict[str, str] = {
    "customers.retrieve": "GET /v1/customers/{id}",
    "payment_intents.create": "POST /v1/payment_intents",
    "payment_intents.retrieve": "GET /v1/payment_intents/{id}",
    "payment_intents.list": "GET /v1/payment_intents",
    "payment_intents.capture": "POST /v1/payment_intents/{id}/capture",
    "payment_intents.cancel": "POST /v1/payment_intents/{id}/cancel",
    "charges.list": "GET /v1/charges",
    "charges.retrieve": "GET /v1/charges/{id}",
    "refunds.create": "POST /v1/refunds",
    "refunds.retrieve": "GET /v1/refunds/{id}",
    "refunds.list": "GET /v1/refunds",
    "events.list": "GET /v1/events",
}


def is_live_key(key: str) -> bool:
    """A live-mode secret or restricted key; any other key is a sandbox's (or the emulator's)."""
    return key.startswith(("sk_live_", "rk_live_"))


def parse_overrides(raw: str | Mapping[str, object] | None) -> dict[str, float]:
    """``STRIPE_RATE_LIMITS``: a JSON object of requests/s by ``global``, ``endpoint`` (every
    endpoint's default) or an endpoint's name (``"POST /v1/payment_intents"``). A name the
    service never calls, or a rate that is not a positive number, is refused, saying which."""
    if raw is None or raw == "":
        return {}
    try:
        values = json.loads(raw) if isinstance(raw, str) else dict(raw)
    except json.JSONDecodeError as exc:
        raise ValueError(f"STRIPE_RATE_LIMITS is not JSON: {exc.msg}") from None
    if not isinstance(values, dict):
        raise ValueError("STRIPE_RATE_LIMITS must be a JSON object of requests/s by name")
    known = {GLOBAL, ENDPOINT, *ENDPOINTS.values()}
    limits: dict[str, float] = {}
    for name, rate in values.items():
        if name not in known:
            raise ValueError(
                f"STRIPE_RATE_LIMITS names {name!r}, which is not {GLOBAL!r}, {ENDPOINT!r} nor "
                f"an endpoint the service calls: {', '.join(sorted(ENDPOINTS.values()))}"
            )
        if isinstance(rate, bool) or not isinstance(rate, int | float) or rate <= 0:
            raise ValueError(f"STRIPE_RATE_LIMITS[{name!r}] must be a positive number")
        limits[name] = float(rate)
    return limits


@dataclass(frozen=True, slots=True)
class RateLimits:
    """The limits the Stripe budget keeps: requests/s for the account and each endpoint."""

    enabled: bool
    global_rps: float
    endpoint_default: float
    endpoints: Mapping[str, float]  # every endpoint the service calls

    def of(self, endpoint: str) -> float:
        return self.endpoints.get(endpoint, self.endpoint_default)

    @property
    def charge_rate(self) -> float:
        """Charges/s at most, by the binding limit, of charges that read their customer first
        (a customer read and a create: two calls of the account's, one of each endpoint's)."""
        return self.charges_per_second(reads_customer=True)

    def charges_per_second(self, *, reads_customer: bool) -> float:
        """Charges/s at most by the binding limit (infinite when the budget is off)."""
        if not self.enabled:
            return float("inf")
        create = self.of(ENDPOINTS["payment_intents.create"])
        if not reads_customer:
            return min(self.global_rps, create)
        return min(self.global_rps / 2, self.of(ENDPOINTS["customers.retrieve"]), create)


def resolve(
    *, stripe_key: str, max_rps: float | None, overrides: Mapping[str, float]
) -> RateLimits:
    """The limits in force: ``overrides`` (STRIPE_RATE_LIMITS) first, then STRIPE_MAX_RPS for
    the global limit, then Stripe's published defaults for the key's mode. STRIPE_MAX_RPS=0
    turns the budget off."""
    live = is_live_key(stripe_key)
    default_global = LIVE_GLOBAL if live else SANDBOX_GLOBAL
    global_rps = overrides.get(GLOBAL, max_rps if max_rps else default_global)
    endpoint_default = overrides.get(ENDPOINT, ENDPOINT_DEFAULT)
    endpoints = {name: overrides.get(name, endpoint_default) for name in ENDPOINTS.values()}
    return RateLimits(
        enabled=max_rps != 0,
        global_rps=global_rps,
        endpoint_default=endpoint_default,
        endpoints=endpoints,
    )
