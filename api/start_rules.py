"""What the API refuses to start with: it fails closed, at start, saying what to set.

- No client key (neither API_KEYS nor API_CLIENTS): an open payment API, refused unless
  API_ALLOW_ANONYMOUS=true asks for it, and never in production or with a live Stripe key
  (``sk_live_``/``rk_live_``), whatever API_ALLOW_ANONYMOUS says.
- Production without PAYMENT_ID_SECRET: payment ids would derive from STRIPE_API_KEY, so
  rotating a leaked key would change them, and a retry after the rotation would charge again.

Only the API reads these rules: the workers take no client requests and make no payment ids.
"""

from __future__ import annotations

from shared.settings.api_clients import Registry
from shared.settings.service_settings import Settings

LIVE_KEY_PREFIXES = ("sk_live_", "rk_live_")


class UnsafeStart(RuntimeError):
    """The API's settings would make it unsafe; the message says which and what to set."""


def refuse_unsafe_start(settings: Settings, clients: Registry) -> None:
    production = settings.environment == "production"
    if production and settings.api_allow_anonymous:
        raise UnsafeStart(
            "API_ALLOW_ANONYMOUS is refused when ENVIRONMENT=production: no open payment API"
        )
    if not clients:
        if production:
            raise UnsafeStart(
                "API_KEYS or API_CLIENTS is required when ENVIRONMENT=production: "
                "no open payment API"
            )
        if not settings.api_allow_anonymous:
            raise UnsafeStart(
                "API_KEYS or API_CLIENTS is required: with no client key anyone could pay. "
                "Set a client key (make run writes one to .run/api-key), or "
                "API_ALLOW_ANONYMOUS=true to run an open API in development"
            )
        if settings.stripe_key.startswith(LIVE_KEY_PREFIXES):
            raise UnsafeStart(
                "API_ALLOW_ANONYMOUS is refused with a live Stripe key (STRIPE_API_KEY "
                "sk_live_/rk_live_): an open API would take real payments from anyone"
            )
    if production and not (
        settings.payment_id_secret and settings.payment_id_secret.get_secret_value()
    ):
        raise UnsafeStart(
            "PAYMENT_ID_SECRET is required when ENVIRONMENT=production: payment ids (and "
            "Stripe idempotency keys) must not depend on STRIPE_API_KEY, which a rotation "
            "changes (make one with `openssl rand -hex 32`; never change it once payments exist)"
        )
