"""docker-compose.yml: valid against the Compose spec, and the rules a user of it relies on."""

from __future__ import annotations

import re
from typing import Any

import pytest

from ._tools import (
    API_CLIENT_SETTINGS,
    API_ONLY_SECRETS,
    API_SECRETS,
    REPO,
    SENTINEL_SECRETS,
    STRIPE_KEY_RE,
    WORKER_CALLBACK_SETTINGS,
    WORKER_SECRETS,
    load_yaml,
    run_tool,
)

COMPOSE = REPO / "docker-compose.yml"
SECRETS = ("STRIPE_API_KEY", "API_KEYS", "API_CLIENTS", "FLOWER_BASIC_AUTH",
           "STRIPE_WEBHOOK_SECRET", "CALLBACK_SIGNING_SECRETS", "PAYMENT_ID_SECRET")  # fmt: skip
APP_SERVICES = ("api", "worker", "flower")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = load_yaml(COMPOSE)
    assert isinstance(data, dict)
    return data


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, Any]:
    svcs = compose["services"]
    assert isinstance(svcs, dict)
    return svcs


def env_of(service: dict[str, Any]) -> dict[str, Any]:
    env = service.get("environment") or {}
    if isinstance(env, list):  # list form: KEY=VALUE or bare KEY (pass-through)
        return {k: (v[0] if v else None) for k, *v in (item.split("=", 1) for item in env)}
    assert isinstance(env, dict)
    return env


# Innermost first: an argument holding no `${` (nested defaults resolve from the inside out).
_VAR = re.compile(
    r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?+])(?P<arg>(?:(?!\$\{)[^}])*))?\}"
)


def interpolate(value: str, env: dict[str, str]) -> str:
    """Compose's ${VAR}, ${VAR:-default}, ${VAR-default}, nested (enough for this file)."""

    def sub(m: re.Match[str]) -> str:
        name, op, arg = m["name"], m["op"], m["arg"] or ""
        if op == ":-":
            return env.get(name) or arg
        if op == "-":
            return env.get(name, arg)
        assert op is None, f"unsupported interpolation {m[0]!r}"
        return env.get(name, "")

    while True:
        expanded = _VAR.sub(sub, value)
        if expanded == value:
            return expanded
        value = expanded


def effective_env(service: dict[str, Any], shell: dict[str, str]) -> dict[str, str]:
    """What the container sees given the shell/.env variables (bare keys pass through if set)."""
    out: dict[str, str] = {}
    for key, value in env_of(service).items():
        if value is None:
            if key in shell:
                out[key] = shell[key]
        else:
            out[key] = interpolate(str(value), shell)
    return out


def seconds(duration: str) -> float:
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|us|h|m|s)", duration)
    assert parts, duration
    assert "".join(n + u for n, u in parts) == duration, duration
    scale = {"h": 3600, "m": 60, "s": 1, "ms": 1e-3, "us": 1e-6}
    return sum(float(n) * scale[u] for n, u in parts)


def test_valid_against_compose_spec() -> None:
    result = run_tool("check-jsonschema", "--builtin-schema", "vendor.compose-spec", str(COMPOSE))
    assert result.returncode == 0, result.stdout + result.stderr


def test_expected_services(services: dict[str, Any]) -> None:
    assert set(services) >= {"redis", "api", "worker", "flower", "stripe-emulator"}
    assert services["api"]["build"]["dockerfile"] == "Dockerfile.api"
    assert services["worker"]["build"]["dockerfile"] == "Dockerfile.worker"


def test_worker_can_be_scaled(services: dict[str, Any]) -> None:
    """`docker compose up --scale worker=4` fails on fixed ports/names; a fixed hostname would
    give every replica the same Celery node name."""
    worker = services["worker"]
    for key in ("ports", "container_name", "hostname"):
        assert key not in worker, f"worker sets {key}: --scale worker=N breaks"
    assert "deploy" not in worker or "replicas" not in worker["deploy"]


def test_worker_gets_the_grace_period_to_finish_charges(services: dict[str, Any]) -> None:
    grace = services["worker"].get("stop_grace_period")
    assert grace is not None, "without stop_grace_period Docker kills the worker after 10 s"
    assert seconds(str(grace)) >= 120


def test_worker_runs_the_image_entry_point(services: dict[str, Any]) -> None:
    # The CMD of Dockerfile.worker is the contract; an override here would silently diverge.
    assert "command" not in services["worker"]
    assert "entrypoint" not in services["worker"]


def published(service: dict[str, Any], shell: dict[str, str]) -> list[str]:
    """A service's published ports (short form), as compose reads them with this shell."""
    return [interpolate(str(port), shell) for port in service.get("ports") or ()]


def test_every_port_is_published_on_loopback_unless_told_otherwise(
    services: dict[str, Any],
) -> None:
    for name, service in services.items():
        for port in published(service, {}):
            assert port.startswith("127.0.0.1:"), f"{name} publishes {port} on every interface"
    assert published(services["api"], {"BIND_ADDRESS": "0.0.0.0"}) == ["0.0.0.0:8080:8080"]


def test_api_published_and_healthchecked_on_readyz(services: dict[str, Any]) -> None:
    api = services["api"]
    assert published(api, {}) == ["127.0.0.1:8080:8080"]
    test = api["healthcheck"]["test"]
    text = " ".join(test) if isinstance(test, list) else str(test)
    assert "http://127.0.0.1:8080/readyz" in text
    assert "curl" not in text, "python:3.11-slim has no curl"
    assert "wget" not in text, "python:3.11-slim has no wget"


@pytest.mark.parametrize("name", APP_SERVICES)
def test_app_services_wait_for_healthy_redis(services: dict[str, Any], name: str) -> None:
    depends = services[name]["depends_on"]
    assert isinstance(depends, dict), "list form cannot wait for health"
    assert depends["redis"]["condition"] == "service_healthy"


def test_redis_is_healthchecked_and_durable(compose: dict[str, Any]) -> None:
    redis = compose["services"]["redis"]
    assert str(redis["image"]).startswith("redis:7")
    cmd = redis["command"]
    cmd = cmd if isinstance(cmd, list) else str(cmd).split()
    joined = " ".join(cmd)
    assert "--appendonly yes" in joined
    assert "--appendfsync everysec" in joined
    mounts = [str(v) for v in redis["volumes"]]
    assert any(m.endswith(":/data") for m in mounts), mounts
    named = mounts[0].split(":", 1)[0]
    assert named in (compose.get("volumes") or {}), "queued payments must live in a named volume"


def test_emulator_only_in_dev_profile(services: dict[str, Any]) -> None:
    assert services["stripe-emulator"]["profiles"] == ["dev"]
    for name in ("redis", *APP_SERVICES):
        assert "profiles" not in services[name], f"{name} must start without --profile"
    for name in ("api", "worker"):
        dep = services[name]["depends_on"].get("stripe-emulator")
        if dep is not None:  # waiting for it is fine, but production must start without it
            assert dep.get("required") is False


def test_defaults_without_env_file_are_development_against_emulator(
    services: dict[str, Any],
) -> None:
    for name in ("api", "worker"):
        env = effective_env(services[name], {})
        assert env["ENVIRONMENT"] == "development"
        assert env["STRIPE_API_BASE"] == "http://stripe-emulator:8420"
        assert env["REDIS_URL"] == "redis://:change-me-dev-redis@redis:6379/0"
        assert "STRIPE_API_KEY" not in env  # unset, so the app's development default applies


def test_production_variables_reach_the_containers(services: dict[str, Any]) -> None:
    shell = {
        "ENVIRONMENT": "production",
        "STRIPE_API_KEY": "prod-key-placeholder",
        "STRIPE_API_BASE": "",
        "API_KEYS": "k1,k2",
        "FLOWER_BASIC_AUTH": "ops:pw",
        "WORKER_CONCURRENCY": "32",
    }
    api = effective_env(services["api"], shell)
    worker = effective_env(services["worker"], shell)
    flower = effective_env(services["flower"], shell)
    for env in (api, worker):
        assert env["ENVIRONMENT"] == "production"
        assert env["STRIPE_API_KEY"] == "prod-key-placeholder"
        assert env["STRIPE_API_BASE"] == ""  # real Stripe, not the emulator
    assert api["API_KEYS"] == "k1,k2"
    assert worker["WORKER_CONCURRENCY"] == "32"
    assert flower["FLOWER_BASIC_AUTH"] == "ops:pw"
    assert flower["ENVIRONMENT"] == "production"
    # Flower imports worker.celery_app, whose settings refuse production without the key.
    assert flower["STRIPE_API_KEY"] == "prod-key-placeholder"


# Every process gets, from the shell / .env, each secret and client setting its code reads.
READS = {
    "worker": (*WORKER_SECRETS, *SENTINEL_SECRETS, *WORKER_CALLBACK_SETTINGS),
    "api": (*API_SECRETS, *SENTINEL_SECRETS, *API_CLIENT_SETTINGS, *WORKER_CALLBACK_SETTINGS),
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(READS))
def test_each_process_gets_the_secrets_and_client_settings_it_reads(
    services: dict[str, Any], name: str
) -> None:
    shell = {var: f"value-of-{var.lower()}" for var in READS[name]}
    env = effective_env(services[name], shell)
    for var in READS[name]:
        assert env.get(var) == shell[var], f"{name} does not get {var} from the environment"


def test_workers_get_the_callback_signing_secrets_and_the_clients(
    services: dict[str, Any],
) -> None:
    """The workers sign callbacks with CALLBACK_SIGNING_SECRETS, or with a client's own
    callback_signing_secrets from API_CLIENTS, and re-check the URL rules at send time."""
    clients = '[{"name": "shop-eu", "keys": ["sha256:ab"], "callback_signing_secrets": ["w"]}]'
    shell = {
        "API_CLIENTS": clients,
        "CALLBACK_SIGNING_SECRETS": "whsec_a,whsec_b",
        "CALLBACK_ALLOWED_HOSTS": ".example.com",
        "CALLBACK_ALLOW_PRIVATE_NETWORKS": "true",
    }
    worker = effective_env(services["worker"], shell)
    assert worker.get("API_CLIENTS") == clients, "the workers need API_CLIENTS"
    assert worker.get("CALLBACK_SIGNING_SECRETS") == "whsec_a,whsec_b"
    assert worker.get("CALLBACK_ALLOWED_HOSTS") == ".example.com"
    assert worker.get("CALLBACK_ALLOW_PRIVATE_NETWORKS") == "true"
    # Unset stays unset: the application's defaults apply, no empty string.
    for var in shell:
        assert var not in effective_env(services["worker"], {}), var


def test_the_payment_id_secret_reaches_the_api_alone(services: dict[str, Any]) -> None:
    shell = {"PAYMENT_ID_SECRET": "0f3a9c2e7b5d"}
    assert effective_env(services["api"], shell)["PAYMENT_ID_SECRET"] == "0f3a9c2e7b5d"
    assert "PAYMENT_ID_SECRET" not in effective_env(services["api"], {})  # derived when unset
    for name in ("worker", "flower"):
        env = effective_env(services[name], shell)
        assert not set(API_ONLY_SECRETS) & set(env), f"{name} gets {API_ONLY_SECRETS}"


def test_env_example_says_how_to_make_the_payment_id_secret_and_never_to_change_it() -> None:
    text = (REPO / ".env.example").read_text(encoding="utf-8")
    assert re.search(r"^#\s*PAYMENT_ID_SECRET=", text, re.M)
    comment = text[: text.index("PAYMENT_ID_SECRET=")].rsplit("\n\n", 1)[-1]
    comment = comment[comment.rindex("CALLBACK_SIGNING_SECRETS=") :]
    assert "openssl rand" in comment, "how to make one"
    assert "NEVER change" in comment, "that it must not change once payments exist"


def test_env_example_documents_the_callback_secrets_and_clients() -> None:
    example = env_example()
    for var in ("API_CLIENTS", "CALLBACK_SIGNING_SECRETS", "CALLBACK_ENDPOINTS",
                "CALLBACK_ALLOWED_HOSTS", "CALLBACK_ALLOW_PRIVATE_NETWORKS"):  # fmt: skip
        assert var in example, f".env.example lacks {var}"


def test_flower(services: dict[str, Any]) -> None:
    flower = services["flower"]
    assert flower["command"] == ["celery", "-A", "worker.celery_app", "flower", "--port=5555"]
    assert any(str(p).endswith("5555:5555") for p in flower["ports"])
    assert "FLOWER_BASIC_AUTH" in env_of(flower)


def test_secrets_are_never_literal(services: dict[str, Any]) -> None:
    for name, service in services.items():
        for key, value in env_of(service).items():
            if key in SECRETS:
                assert value is None or re.fullmatch(rf"\$\{{{key}(:?-)?\}}", str(value)), (
                    f"{name}.{key} must come from the environment / .env, not the compose file"
                )
    for path in (COMPOSE, REPO / ".env.example"):
        text = path.read_text(encoding="utf-8")
        assert not STRIPE_KEY_RE.search(text), f"{path.name} contains a Stripe key"


def test_env_example_documents_every_variable_and_env_is_ignored() -> None:
    example = (REPO / ".env.example").read_text(encoding="utf-8")
    for var in (
        "ENVIRONMENT",
        "STRIPE_API_KEY",
        "STRIPE_API_BASE",
        "API_KEYS",
        "FLOWER_BASIC_AUTH",
        "REDIS_URL",
        "REDIS_PASSWORD",
        "WORKER_POOL",
        "WORKER_CONCURRENCY",
        "STRIPE_MAX_RPS",
    ):
        assert re.search(rf"^#?\s*{var}=", example, re.M), f".env.example lacks {var}"
    ignored = (REPO / ".gitignore").read_text(encoding="utf-8").split()
    assert ".env" in ignored, "a filled-in .env must never be committed"


# ---------------------------------------------------------------- Redis password


def redis_password_of(compose: dict[str, Any], shell: dict[str, str]) -> str:
    cmd = [interpolate(str(c), shell) for c in compose["services"]["redis"]["command"]]
    assert cmd[0] == "redis-server", "the image's entry point drops root only for redis-server"
    assert "--requirepass" in cmd, "Redis must ask for a password"
    return cmd[cmd.index("--requirepass") + 1]


@pytest.mark.parametrize(
    "shell",
    [{}, {"REDIS_PASSWORD": "0f3a9c2e7b"}, {"REDIS_PASSWORD": "0f3a9c2e7b", "ENVIRONMENT": "x"}],
)
def test_every_service_carries_the_redis_password(
    compose: dict[str, Any], services: dict[str, Any], shell: dict[str, str]
) -> None:
    password = redis_password_of(compose, shell)
    assert password == shell.get("REDIS_PASSWORD", "change-me-dev-redis")
    # Every service that talks to Redis: the API, workers, Flower.
    talkers = [n for n, svc in services.items() if "redis" in (svc.get("depends_on") or {})]
    assert set(talkers) == set(APP_SERVICES)
    for name in talkers:
        url = effective_env(services[name], shell)["REDIS_URL"]
        assert url == f"redis://:{password}@redis:6379/0", name


def test_redis_healthcheck_authenticates(compose: dict[str, Any]) -> None:
    redis = compose["services"]["redis"]
    shell = {"REDIS_PASSWORD": "0f3a9c2e7b"}
    env = effective_env(redis, shell)
    assert env["REDISCLI_AUTH"] == redis_password_of(compose, shell), "redis-cli's password"
    test = redis["healthcheck"]["test"]
    assert test[0] == "CMD-SHELL"
    # An unauthenticated or wrong-password ping prints NOAUTH/WRONGPASS and may exit 0: only
    # PONG is healthy. The password never sits on the check's command line.
    assert "redis-cli" in test[1]
    assert "PONG" in test[1]
    assert "-a " not in test[1]
    assert "REDIS_PASSWORD" not in test[1]


def test_redis_url_can_still_point_elsewhere(services: dict[str, Any]) -> None:
    shell = {"REDIS_URL": "rediss://:tok@cache.example:6379/0?ssl_cert_reqs=required"}
    for name in APP_SERVICES:
        assert effective_env(services[name], shell)["REDIS_URL"] == shell["REDIS_URL"]


# ---------------------------------------------------------------- placeholders in production


def env_example() -> dict[str, str]:
    """Every KEY=value of .env.example, commented-out ones included (what a user uncomments)."""
    text = (REPO / ".env.example").read_text(encoding="utf-8")
    return dict(re.findall(r"^#?\s*([A-Z][A-Z0-9_]*)=(.*)$", text, re.M))


REAL = {
    "STRIPE_API_KEY": "sk_live_" + "realistic0value",
    "API_KEYS": "k9Fq2,zX81p",
    "FLOWER_BASIC_AUTH": "ops:Zq81mX",
    "REDIS_PASSWORD": "0f3a9c2e7b",
    "PAYMENT_ID_SECRET": "5d1e0c4b9a",
}


def compose_settings(shell: dict[str, str]) -> Any:
    """Settings as the API/worker containers would build them from compose and this shell."""
    from shared.settings.service_settings import Settings

    env = effective_env(load_yaml(COMPOSE)["services"]["flower"], shell)
    env.update(effective_env(load_yaml(COMPOSE)["services"]["api"], shell))
    values: dict[str, Any] = {k.lower(): v for k, v in env.items()}
    # A container has only what compose gives it; this test process runs open (tests/conftest).
    values.setdefault("api_allow_anonymous", "false")
    return Settings.model_validate(values)


def production_settings(shell: dict[str, str]) -> Any:
    return compose_settings({**shell, "ENVIRONMENT": "production"})


def api_start_refusal(shell: dict[str, str]) -> str | None:
    """Why the API, as compose starts it with this shell, refuses to start (None: it starts)."""
    from api.start_rules import UnsafeStart, refuse_unsafe_start
    from shared.settings.api_clients import load

    settings = compose_settings(shell)
    try:
        refuse_unsafe_start(settings, load(settings))
    except UnsafeStart as exc:
        return str(exc)
    return None


def test_production_starts_with_real_values() -> None:
    shell = {**REAL, "ENVIRONMENT": "production", "STRIPE_API_BASE": ""}
    settings = production_settings(shell)
    assert settings.environment == "production"
    assert settings.redis_url == "redis://:0f3a9c2e7b@redis:6379/0"
    assert api_start_refusal(shell) is None


@pytest.mark.parametrize(
    ("change", "refusal"),
    [
        ({"PAYMENT_ID_SECRET": None}, "PAYMENT_ID_SECRET is required"),
        ({"API_KEYS": None}, "API_KEYS or API_CLIENTS is required"),
        ({"API_ALLOW_ANONYMOUS": "true"}, "API_ALLOW_ANONYMOUS is refused"),
    ],
)
def test_the_production_api_fails_closed(change: dict[str, str | None], refusal: str) -> None:
    shell = {**REAL, "ENVIRONMENT": "production", "STRIPE_API_BASE": ""}
    for name, value in change.items():
        if value is None:
            del shell[name]
        else:
            shell[name] = value
    assert refusal in (api_start_refusal(shell) or "")


def test_development_without_a_key_runs_open_only_when_asked() -> None:
    assert "API_ALLOW_ANONYMOUS=true" in (api_start_refusal({"API_ALLOW_ANONYMOUS": "false"}) or "")
    assert api_start_refusal({"API_ALLOW_ANONYMOUS": "true"}) is None


@pytest.mark.parametrize(
    "name",
    ["API_KEYS", "FLOWER_BASIC_AUTH", "REDIS_PASSWORD", "STRIPE_API_KEY", "PAYMENT_ID_SECRET"],
)
def test_production_refuses_each_placeholder_of_env_example(name: str) -> None:
    from pydantic import ValidationError

    example = env_example()
    assert name in example, f".env.example lacks {name}"
    placeholder = example[name]
    assert re.search(r"change-?me|<[^<>]*>", placeholder), f"{name}={placeholder} is no placeholder"
    shell = {**REAL, "ENVIRONMENT": "production", "STRIPE_API_BASE": "", name: placeholder}
    with pytest.raises(ValidationError, match="placeholder"):
        production_settings(shell)


def test_production_refuses_the_development_redis_password() -> None:
    from pydantic import ValidationError

    shell = {**REAL, "ENVIRONMENT": "production", "STRIPE_API_BASE": ""}
    del shell["REDIS_PASSWORD"]  # compose falls back to its development default
    with pytest.raises(ValidationError, match="REDIS_URL"):
        production_settings(shell)


def test_development_keeps_working_with_the_placeholders() -> None:
    from shared.settings.service_settings import Settings

    example = env_example()
    settings = Settings(
        environment="development",
        api_keys=example["API_KEYS"],
        flower_basic_auth=example["FLOWER_BASIC_AUTH"],
        redis_url=f"redis://:{example['REDIS_PASSWORD']}@redis:6379/0",
    )
    assert settings.client_keys


def test_env_example_callback_secret_is_made_as_documented_and_checked_at_start() -> None:
    """.env.example's command makes a secret every process accepts; its placeholder is refused
    at start (by name, never echoed) rather than failing at the first callback."""
    import subprocess
    import sys

    from pydantic import ValidationError

    from shared.settings.service_settings import Settings

    text = (REPO / ".env.example").read_text(encoding="utf-8")
    (command,) = re.findall(r"^#\s+python3 -c '([^']+)'$", text, re.M)
    made = subprocess.run(
        [sys.executable, "-c", command], capture_output=True, text=True, check=True, timeout=30
    ).stdout.strip()
    assert Settings(environment="development", callback_signing_secrets=made)
    assert production_settings({**REAL, "ENVIRONMENT": "production", "STRIPE_API_BASE": "",
                                "CALLBACK_SIGNING_SECRETS": made})  # fmt: skip
    placeholder = env_example()["CALLBACK_SIGNING_SECRETS"]
    for environment in ("development", "production"):
        with pytest.raises(ValidationError, match="CALLBACK_SIGNING_SECRETS entry 1") as refused:
            Settings(environment=environment, callback_signing_secrets=placeholder)
        assert placeholder not in str(refused.value)
