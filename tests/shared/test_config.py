"""Settings that refuse to start say what to change; LOG_LEVEL reaches the workers too."""

from __future__ import annotations

import base64
import logging
from collections.abc import Iterator

import pytest
import structlog
from pydantic import ValidationError

from shared.settings.service_settings import Settings


def test_a_stripe_timeout_too_long_for_the_visibility_timeout_says_what_to_change() -> None:
    with pytest.raises(ValidationError) as refused:
        Settings(environment="test", stripe_timeout_seconds=30)
    message = str(refused.value)
    assert "2 x STRIPE_TIMEOUT_SECONDS + 10 = 70 s" in message
    assert "Raise VISIBILITY_TIMEOUT_SECONDS to 71 or more" in message
    assert "lower STRIPE_TIMEOUT_SECONDS below 25" in message
    # ... and following the advice works.
    Settings(environment="test", stripe_timeout_seconds=30, visibility_timeout_seconds=71)
    Settings(environment="test", stripe_timeout_seconds=24.9)


@pytest.mark.parametrize(
    ("configured", "command_line", "expected"),
    [
        ("DEBUG", logging.INFO, "DEBUG"),  # LOG_LEVEL wins over the entry point's --loglevel
        (None, logging.WARNING, logging.WARNING),
        (None, None, logging.INFO),
    ],
)
def test_workers_take_log_level_over_their_command_line(
    configured: str | None, command_line: int | None, expected: int | str
) -> None:
    from worker.celery_app import log_level

    assert log_level(configured, command_line) == expected


@pytest.fixture
def logging_restored() -> Iterator[None]:
    root = logging.getLogger()
    level, handlers, config = root.level, root.handlers[:], structlog.get_config()
    yield
    root.setLevel(level)
    root.handlers[:] = handlers
    structlog.configure(**config)


@pytest.mark.usefixtures("logging_restored")
def test_a_worker_started_with_loglevel_info_logs_at_log_level(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from celery.signals import setup_logging

    import worker.celery_app

    monkeypatch.setattr(
        worker.celery_app, "settings", Settings(environment="test", log_level="WARNING")
    )
    # What `celery -A worker.celery_app worker --loglevel=INFO` does when it sets up logging.
    setup_logging.send(sender=None, loglevel=logging.INFO, logfile=None, format="", colorize=False)
    assert logging.getLogger().level == logging.WARNING


# --- CALLBACK_SIGNING_SECRETS: checked at start, as a client's own secrets are ---------------


def whsec_of(size: int, fill: bytes = b"k") -> str:
    return "whsec_" + base64.b64encode(fill * size).decode()


GOOD = whsec_of(24)
# Not Standard Webhooks secrets: no prefix, not base64, 23 and 65 bytes, space-separated.
MALFORMED = [
    base64.b64encode(b"k" * 32).decode(),
    "whsec_%%%not-base64%%%",
    whsec_of(23, b"s"),
    whsec_of(65, b"l"),
    " ".join([whsec_of(24), whsec_of(24, b"o")]),  # rotation is comma-separated
]


@pytest.mark.parametrize(
    "configured",
    [GOOD, f"{GOOD},{whsec_of(64, b'o')}", f" {GOOD} , {whsec_of(32, b'o')} ,", "", " , "],
)
def test_well_formed_callback_signing_secrets_are_accepted(configured: str) -> None:
    settings = Settings(environment="test", callback_signing_secrets=configured)
    from shared.callbacks.signing import signing_secrets

    assert all(secret.startswith("whsec_") for secret in signing_secrets(settings))


@pytest.mark.parametrize("bad", MALFORMED)
@pytest.mark.parametrize("position", [1, 2])
def test_a_malformed_callback_signing_secret_is_refused_naming_its_position_not_it(
    bad: str, position: int
) -> None:
    configured = bad if position == 1 else f"{GOOD},{bad}"
    with pytest.raises(ValidationError) as refused:
        Settings(environment="test", callback_signing_secrets=configured)
    message = str(refused.value)
    assert f"CALLBACK_SIGNING_SECRETS entry {position} is not a Standard Webhooks secret" in message
    assert bad not in message
    assert GOOD not in message


def test_a_malformed_callback_signing_secret_in_the_environment_stops_the_start(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CALLBACK_SIGNING_SECRETS", "whsec_short")
    with pytest.raises(ValidationError, match="CALLBACK_SIGNING_SECRETS entry 1") as refused:
        Settings()
    assert "whsec_short" not in str(refused.value)
    monkeypatch.setenv("CALLBACK_SIGNING_SECRETS", GOOD)
    from shared.callbacks.signing import signing_secrets

    assert signing_secrets(Settings()) == (GOOD,)


@pytest.mark.parametrize("bad", MALFORMED)
def test_the_global_and_the_clients_secrets_follow_one_rule(bad: str) -> None:
    """The same check as API_CLIENTS' callback_signing_secrets
    (shared.callbacks.whsec)."""
    import orjson

    from shared.settings.api_clients import ClientConfigError, load

    client = {"name": "shop-eu", "keys": ["key-eu"]}
    for secret, accepted in ((GOOD, True), (whsec_of(64), True), (bad, False)):
        clients = orjson.dumps([{**client, "callback_signing_secrets": [secret]}]).decode()
        if accepted:
            Settings(environment="test", callback_signing_secrets=secret)
            load(Settings(environment="test", api_clients=clients))
            continue
        with pytest.raises(ValidationError, match="entry 1 is not a Standard Webhooks secret"):
            Settings(environment="test", callback_signing_secrets=secret)
        with pytest.raises(ClientConfigError, match="entry 1 is not a Standard Webhooks secret"):
            load(Settings(environment="test", api_clients=clients))


def test_the_integration_setup_passes_the_check() -> None:
    """What the integration stack gives its processes (tests/integration/test_lifecycle.py);
    compose's .env.example is checked in tests/ops/test_compose.py."""
    from shared.settings.api_clients import load
    from tests.integration import test_lifecycle

    values = {k.lower(): v for k, v in {**test_lifecycle.ENV, "ENVIRONMENT": "test"}.items()}
    settings = Settings.model_validate(values)
    assert len(settings.callback_signing_secrets) == 1
    assert load(settings).clients[0].callback_signing_secrets == (test_lifecycle.OWN_SECRET,)


# --- comma-separated settings: the environment's plain form, split once into the settings ---


def test_comma_separated_settings_keep_their_plain_environment_form(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from shared.callbacks.signing import signing_secrets

    digest = "sha256:" + "ab" * 32
    newer = whsec_of(32, b"n")
    monkeypatch.setenv("API_KEYS", f" key-1, {digest},, ")
    monkeypatch.setenv("STRIPE_WEBHOOK_SECRET", "whsec_old ,whsec_new")
    monkeypatch.setenv("CALLBACK_SIGNING_SECRETS", f"{GOOD}, {newer}")
    monkeypatch.setenv(
        "CALLBACK_ENDPOINTS",
        "shop=https://shop.example.com/h?a=1, key_0123456789ab = https://b.example.com/h,no-pair",
    )
    monkeypatch.setenv("CALLBACK_ALLOWED_HOSTS", ".Example.com, hooks.shop.test,")

    settings = Settings(environment="test")

    assert settings.client_keys == ("key-1", digest)
    assert settings.stripe_webhook_secrets == ("whsec_old", "whsec_new")
    assert signing_secrets(settings) == (GOOD, newer)
    assert settings.callback_endpoints == {
        "shop": "https://shop.example.com/h?a=1",
        "key_0123456789ab": "https://b.example.com/h",
    }
    assert settings.callback_allowed_hosts == (".example.com", "hooks.shop.test")
    for secret in ("key-1", "whsec_old", GOOD):
        assert secret not in repr(settings)


def test_a_placeholder_in_any_entry_of_a_secret_list_is_refused_in_production() -> None:
    with pytest.raises(ValidationError, match="API_KEYS still holds a placeholder"):
        Settings(
            environment="production", stripe_api_key="sk_live_x", api_keys="real-key,change-me"
        )


# --- API_CLIENTS: refused at start, naming the client and the entry, never a key or a secret ---


@pytest.mark.parametrize(
    ("clients", "says", "hidden"),
    [
        ([{"name": "shop", "keys": ["raw-key-1", "sha256:" + "ab" * 10]}],
         "shop: keys entry 2 digest is not a SHA-256 digest", "abab"),
        ([{"name": "shop", "keys": ["raw-key-1", {"digest": "raw-key-2", "not_after": "soon"}]}],
         "shop: keys entry 2 not_after", "raw-key"),
        ([{"name": "shop", "keys": ["raw-key-1", 7]}],
         "shop: keys entry 2 must be a string", "raw-key"),
        ([{"name": "shop", "keys": []}], "shop: keys is empty", "shop: keys:"),
        ([{"name": "shop", "keys": ["raw-key-1"], "scopes": ["payments", "everything"]}],
         "shop: scopes include unknown ['everything']", "raw-key"),
        ([{"name": "shop", "keys": ["raw-key-1"], "backlog_share": 1.5}],
         "shop: backlog_share: Input should be less than or equal to 1", "raw-key"),
        ([{"name": "ok", "keys": ["raw-key-1"]}, {"keys": ["raw-key-2"]}],
         "API_CLIENTS entry 2: name: Field required", "raw-key"),
        ([{"name": "caf\u00e9", "keys": ["raw-key-1"]}], "API_CLIENTS entry 1: name must be ASCII",
         "raw-key"),
    ],
)  # fmt: skip
def test_a_malformed_api_clients_entry_is_refused_naming_the_client_and_the_entry(
    clients: list[dict[str, object]], says: str, hidden: str
) -> None:
    import orjson

    from shared.settings.api_clients import ClientConfigError, load

    with pytest.raises(ClientConfigError) as refused:
        load(Settings(environment="test", api_clients=orjson.dumps(clients).decode()))
    assert says in str(refused.value)
    assert hidden not in str(refused.value)


def test_a_malformed_api_keys_digest_is_refused_by_position_not_shown() -> None:
    from shared.settings.api_clients import ClientConfigError, load

    with pytest.raises(
        ClientConfigError, match="API_KEYS entry 2 is not a SHA-256 digest"
    ) as refused:
        load(Settings(environment="test", api_keys="raw-key-1, sha256:c0ffee"))
    assert "c0ffee" not in str(refused.value)
