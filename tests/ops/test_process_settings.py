"""The lists of secrets and client settings per process that test_compose.py and test_ecs.py
check the deploy files against stay true to the code."""

from __future__ import annotations

import re

from ._settings_reads import settings_readers, worker_reads
from ._tools import (
    API_ONLY_SECRETS,
    API_SECRETS,
    NOT_READ_BY_WORKERS,
    READ_BUT_NOT_NEEDED_BY_WORKERS,
    REPO,
    SENTINEL_SECRETS,
    WORKER_CALLBACK_SETTINGS,
    WORKER_SECRETS,
)


def test_every_secret_setting_is_placed_for_the_workers() -> None:
    """A new secret in Settings must be put in WORKER_SECRETS (and so reach the workers in
    compose and ECS) or in NOT_READ_BY_WORKERS, on purpose."""
    from pydantic import SecretStr

    from shared.settings.service_settings import Settings

    secret_fields = {
        name.upper()
        for name, field in Settings.model_fields.items()
        if SecretStr in getattr(field.annotation, "__args__", (field.annotation,))
    }
    placed = {*WORKER_SECRETS, *SENTINEL_SECRETS, *NOT_READ_BY_WORKERS}
    assert secret_fields <= placed, f"not placed: {sorted(secret_fields - placed)}"
    assert {"CALLBACK_SIGNING_SECRETS", "API_CLIENTS", "STRIPE_API_KEY"} <= secret_fields


def test_every_secret_setting_is_given_to_a_process_that_reads_it() -> None:
    """Each secret of Settings reaches the workers or the API in compose and ECS (Flower reads
    FLOWER_BASIC_AUTH itself); an API-only secret is one the API's code reads."""
    from pydantic import SecretStr

    from shared.settings.service_settings import Settings

    secret_fields = {
        name.upper()
        for name, field in Settings.model_fields.items()
        if SecretStr in getattr(field.annotation, "__args__", (field.annotation,))
    }
    given = {*WORKER_SECRETS, *SENTINEL_SECRETS, *API_SECRETS, "FLOWER_BASIC_AUTH"}
    assert secret_fields <= given, f"given to no process: {sorted(secret_fields - given)}"
    assert "PAYMENT_ID_SECRET" in API_ONLY_SECRETS
    api_code = "\n".join(p.read_text(encoding="utf-8") for p in (REPO / "api").glob("*.py"))
    for name in API_ONLY_SECRETS:
        assert name in API_SECRETS
        assert name not in WORKER_SECRETS
        assert any(re.search(rf"\.{a}\b", api_code) for a in NOT_READ_BY_WORKERS[name]), name


def test_the_workers_read_what_they_are_given_and_nothing_kept_from_them() -> None:
    """Read in the code, not guessed: every attribute read in the modules a worker loads
    (worker/ and, transitively, what it imports from shared/), through a Settings field or any
    Settings property that reads it."""
    reads = worker_reads()
    for name, attributes in NOT_READ_BY_WORKERS.items():
        for attribute in sorted(settings_readers(name) | set(attributes)):
            found = [
                at for at in reads.get(attribute, ())
                if (at.module, at.function, attribute) not in READ_BUT_NOT_NEEDED_BY_WORKERS
            ]  # fmt: skip
            assert not found, (
                f"{found[0]} reads {attribute}: the workers need {name} in compose and ECS too"
            )
    for name in (*WORKER_SECRETS, *WORKER_CALLBACK_SETTINGS):
        used = [at for a in settings_readers(name) for at in reads.get(a, ()) if not at.settings]
        assert used, f"no code the workers run reads {name}: why do compose and ECS give it?"


def test_the_scan_sees_reads_in_shared_and_through_properties() -> None:
    """The scan itself: reads in shared/ modules the workers import inside a function count,
    and a property of Settings counts as a read of the fields it reads."""
    reads = worker_reads()
    assert "shared.settings.api_clients" in {at.module for at in reads["api_clients"]}
    assert {"stripe_key", "payment_id_key"} <= settings_readers("STRIPE_API_KEY")
    assert "client_keys" in settings_readers("API_KEYS")
    assert any(at.module == "shared.callbacks.url_rules" for at in reads["callback_allowed_hosts"])
