"""The API fails closed at start: no client key means no start unless an open API is asked for
(API_ALLOW_ANONYMOUS), never in production or with a live Stripe key; production needs its own
PAYMENT_ID_SECRET. Each refusal says what to set."""

from __future__ import annotations

from typing import Any

import pytest

from api.main import create_app
from api.start_rules import UnsafeStart
from shared.settings.service_settings import Settings

PRODUCTION: dict[str, Any] = {
    "environment": "production",
    "stripe_api_key": "sk_live_x",
    "api_keys": "a-real-client-key",
    "payment_id_secret": "a-real-payment-id-secret",
    "api_allow_anonymous": False,
}


def test_no_client_key_and_no_open_api_asked_for_is_refused() -> None:
    settings = Settings(environment="development", api_allow_anonymous=False)
    with pytest.raises(UnsafeStart, match="API_KEYS or API_CLIENTS is required") as refused:
        create_app(settings)
    assert "API_ALLOW_ANONYMOUS=true" in str(refused.value)


def test_an_open_api_in_development_when_asked_for() -> None:
    create_app(Settings(environment="development", api_allow_anonymous=True))


@pytest.mark.parametrize("key", ["sk_live_abc", "rk_live_abc"])
def test_never_an_open_api_with_a_live_stripe_key(key: str) -> None:
    settings = Settings(environment="development", api_allow_anonymous=True, stripe_api_key=key)
    with pytest.raises(UnsafeStart, match="live Stripe key"):
        create_app(settings)
    # With client keys the live key is the operator's business.
    create_app(Settings(environment="development", stripe_api_key=key, api_keys="k"))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"api_keys": ""}, "API_KEYS or API_CLIENTS is required when ENVIRONMENT=production"),
        ({"api_allow_anonymous": True}, "API_ALLOW_ANONYMOUS is refused"),
        ({"api_keys": "", "api_allow_anonymous": True}, "API_ALLOW_ANONYMOUS is refused"),
        ({"payment_id_secret": None}, "PAYMENT_ID_SECRET is required"),
        ({"payment_id_secret": ""}, "PAYMENT_ID_SECRET is required"),
    ],
)
def test_production_refuses(change: dict[str, Any], message: str) -> None:
    with pytest.raises(UnsafeStart, match=message):
        create_app(Settings(**{**PRODUCTION, **change}))


def test_production_starts_with_keys_and_a_payment_id_secret() -> None:
    create_app(Settings(**PRODUCTION))


def test_development_still_derives_the_payment_id_secret() -> None:
    settings = Settings(environment="development", api_keys="k")
    create_app(settings)
    assert settings.payment_id_key
