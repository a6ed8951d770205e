"""One settings object for the API and the workers, read once from the environment."""

from __future__ import annotations

import hashlib
import math
import re
from functools import cached_property, lru_cache
from typing import Annotated, Literal

from pydantic import BeforeValidator, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from shared.callbacks import whsec
from shared.stripe.limits import RateLimits, parse_overrides, resolve

DAY = 24 * 60 * 60

# Only ever used against the local emulator, which accepts any key shaped like ``sk_...``.
EMULATOR_API_KEY = "sk_test_emulator"

# The placeholders of .env.example and docker-compose.yml's development defaults ("change-me…",
# "<your-stripe-secret-key>"): production refuses to start with one in any secret or REDIS_URL.
PLACEHOLDER = re.compile(r"change-?me|<[^<>]*>", re.IGNORECASE)


def split_commas(raw: str) -> tuple[str, ...]:
    """A comma-separated value's entries, stripped, blanks dropped."""
    return tuple(entry for entry in (part.strip() for part in raw.split(",")) if entry)


def _comma_separated(value: object) -> object:
    # The environment's comma-separated string; a list or tuple from Python stays as it is.
    if value is None:
        return ()
    if isinstance(value, SecretStr):
        value = value.get_secret_value()
    return split_commas(value) if isinstance(value, str) else value


# A comma-separated setting, split once when the settings are read. NoDecode: the environment
# keeps its plain "a,b" form instead of pydantic-settings' JSON for collection types.
CommaSeparated = Annotated[tuple[str, ...], NoDecode, BeforeValidator(_comma_separated)]
CommaSeparatedSecrets = Annotated[
    tuple[SecretStr, ...], NoDecode, BeforeValidator(_comma_separated)
]


class Settings(BaseSettings):
    # hide_input_in_errors: a refused value may be a secret; errors name it, never show it.
    model_config = SettingsConfigDict(
        env_file=None, extra="ignore", frozen=True, hide_input_in_errors=True
    )

    environment: Literal["development", "test", "production"] = "development"
    # DEBUG also logs every accepted payment in the API (development's default).
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] | None = None

    redis_url: str = "redis://localhost:6379/0"
    # Bounded so that a dead Redis turns into a 503 within a couple of seconds, not a hang.
    redis_socket_timeout: float = Field(default=1.0, gt=0, le=30)
    # --- replicated Redis (shared/settings/redis_url.py): REDIS_URL may name Sentinels
    # (redis+sentinel://...); their own AUTH password, when they have one.
    redis_sentinel_password: SecretStr | None = None
    # Accepted means replicated: after the accept script (and a worker's outcome write) WAIT
    # until this many replicas hold the write, else 503 not_durable. 0: no WAIT.
    redis_min_replicas: int = Field(default=0, ge=0, le=16)
    redis_wait_timeout_ms: int = Field(default=500, ge=1, le=30_000)

    stripe_api_key: SecretStr | None = None
    stripe_api_base: str | None = None
    stripe_timeout_seconds: float = Field(default=20.0, gt=0, le=80)
    # How often a worker writes the Stripe call timings it counted to Redis (GET /metrics).
    stripe_metrics_flush_seconds: float = Field(default=1.0, gt=0, le=60)

    # Client keys (comma-separated); enforced by the authentication layer.
    api_keys: CommaSeparatedSecrets = ()
    # Named clients with scopes and limits (JSON; see shared/settings/api_clients.py).
    api_clients: SecretStr | None = None
    # With neither API_KEYS nor API_CLIENTS the API refuses to start unless this is set: then
    # anyone may call it (development only; refused in production and with a live Stripe key).
    api_allow_anonymous: bool = False
    # Per-client request rate (token bucket in Redis), one token per request on every route
    # but the health checks, the API's description and Stripe's webhooks; a client's own
    # max_rps/burst override. 0 disables. Over it: 429 rate_limited with Retry-After and
    # RateLimit headers.
    client_max_rps: float = Field(default=200.0, ge=0)
    client_burst: int = Field(default=400, ge=1)
    # Flower's user:password (Flower reads it itself); here only to refuse a placeholder.
    flower_basic_auth: SecretStr | None = None

    # A client's Idempotency-Key lives as long as its payment's record: the payment id derives
    # from the key, so the record is the claim. At least a day, as Stripe keeps its own keys.
    record_ttl_seconds: int = Field(default=7 * DAY, ge=DAY)

    queue_name: str = "payments"
    max_body_bytes: int = Field(default=64 * 1024, gt=0)
    # POST /payments/batch's body: 1,000 items (its bound) of up to about 2 KB each.
    max_batch_body_bytes: int = Field(default=2 * 1024 * 1024, gt=0)
    max_wait_seconds: int = Field(default=30, ge=0, le=30)

    # Transient Stripe failures (network, 429, 5xx) are retried with exponential backoff and
    # full jitter: BACKOFF x 2^n seconds, capped. 8 retries span about two minutes (1+2+4+8+16+
    # 30+30+30 s at most): long enough to ride out a Stripe incident's first minutes, short
    # enough that a client hears "failed, not charged" while it still cares. Then the payment
    # fails with 503 and is kept as a dead letter an operator can replay.
    # A Stripe customer whose metadata under this key names a client belongs to that client:
    # a payment of another client for it fails customer_not_owned before any charge. A
    # customer without it is any client's. Empty: no customer belongs to a client.
    customer_owner_metadata_key: str = Field(default="", max_length=40, pattern=r"^[^\[\]]*$")

    charge_max_retries: int = Field(default=8, ge=0, le=20)
    charge_retry_backoff_seconds: float = Field(default=1.0, gt=0, le=60)
    charge_retry_backoff_max_seconds: float = Field(default=30.0, gt=0, le=120)

    # Payment ids (and so Stripe idempotency keys) are an HMAC of the client and its
    # Idempotency-Key under this secret, so a retry after Redis lost its data still reaches
    # Stripe with the same key. Every API process must share it, and it must not change while
    # keys are live. Required in production (the API refuses to start without it): derived
    # from STRIPE_API_KEY, rotating a leaked Stripe key would change every payment id, and a
    # retry after the rotation would charge again. Unset outside production: derived from it.
    payment_id_secret: SecretStr | None = None

    # An outcome Stripe could not be asked about (status `unknown`) is looked up again in the
    # background: after RECONCILE_BACKOFF_SECONDS, doubling up to the maximum (hours).
    reconcile_backoff_seconds: float = Field(default=30.0, gt=0)
    reconcile_backoff_max_seconds: float = Field(default=4 * 3600.0, gt=0)
    # How often a worker's maintenance thread runs the recovery sweep and the reconciler.
    maintenance_interval_seconds: float = Field(default=30.0, gt=0, le=3600)

    # Redelivery of a message whose worker died (Celery's Redis transport): after
    # VISIBILITY_TIMEOUT_SECONDS, checked every RESTORE_INTERVAL_SECONDS. It must exceed the
    # longest charge (Stripe timeout + rate-limit wait) and every retry countdown, or a live
    # task would be delivered twice; the per-payment lock guards that case anyway.
    visibility_timeout_seconds: int = Field(default=60, ge=10, le=3600)
    restore_interval_seconds: int = Field(default=5, ge=1, le=300)

    # The Stripe budget: all workers together keep Stripe's rate limits, the account's (global)
    # and each endpoint's, Stripe's published defaults for the key's mode unless said here
    # (shared/stripe/limits.py). STRIPE_MAX_RPS is the global limit when set (unset: 100/s for
    # a live key, 25/s for a sandbox's); 0 turns the whole budget off.
    stripe_max_rps: float | None = Field(default=None, ge=0)
    # JSON of requests/s by "global", "endpoint" (every endpoint's default) or an endpoint's
    # name ("POST /v1/payment_intents"), for an account whose limits Stripe raised; its
    # "global" wins over STRIPE_MAX_RPS.
    stripe_rate_limits: Annotated[dict[str, float], NoDecode] = Field(default_factory=dict)
    # Under that budget, a worker takes another message only while the budget is booked less
    # than this far ahead: a backlog waits in the clients' queues, where each client takes its
    # turns (worker.fair_queues), rather than in worker threads, which are served in booking
    # order. A calm client's charge waits about this long behind a greedy client's backlog.
    stripe_budget_lookahead_seconds: float = Field(default=2.0, gt=0, le=60)

    # The recovery sweep re-enqueues a payment that is still not final this long after its
    # last change and that no worker holds: the net under a message lost in transit.
    sweep_stale_seconds: int = Field(default=600, ge=30)

    # Backpressure: above this many queued charges, POST /payments answers 503 + Retry-After.
    queue_max_backlog: int = Field(default=50_000, ge=1)

    # Reads must not starve accepts: at most this many GET /{customer_id}/payments calls wait
    # on Stripe at once in one API process; past it the route answers 503 + Retry-After at once
    # (each list costs the event loop milliseconds of JSON, which accepts would wait behind).
    # The default keeps accepts close to their rate alone while lists read (docs/PERFORMANCE.md,
    # reads next to accepts); it also caps lists per process: scale reads with processes.
    list_max_concurrency: int = Field(default=2, ge=1, le=1024)
    list_retry_after_seconds: int = Field(default=1, ge=1, le=60)
    # No client holds more than this share of those slots (at least one; a client's own
    # list_concurrency in API_CLIENTS overrides it), so one client's lists cannot keep
    # another's out. With a single client there is no one to share with: it may use them all.
    list_client_share: float = Field(default=0.5, gt=0, le=1)
    # Accept scripts that arrive in one event-loop tick share one Redis round trip (a
    # non-transactional pipeline; each script atomic, each request its own answer).
    accept_group_commit: bool = True

    # Worker pool: a charge waits on Stripe's network latency, not on CPU, so one process runs
    # many at once in threads (a prefork pool would need a process per charge). Concurrency is
    # rate x time in flight: 150 charges/s x 2 Stripe calls x 0.2 s = 60 charges at once;
    # 128 leaves room for slower answers and retries before threads, not Stripe, are the limit.
    worker_pool: Literal["threads", "prefork", "solo", "gevent", "eventlet"] = "threads"
    worker_send_task_events: bool = False
    worker_concurrency: int = Field(default=128, ge=1, le=1024)

    # --- payment lifecycle: Stripe webhooks in, callbacks out (docs/API.md).
    # Stripe's webhook signing secrets (whsec_...), comma-separated during a rotation.
    stripe_webhook_secret: CommaSeparatedSecrets = ()
    # Master Standard Webhooks secrets (whsec_<base64>): each client's callbacks are signed with
    # a secret derived from each of these and its name (shared.callbacks.signing), never with a
    # master itself. The first is current; during a rotation every one signs. Checked at start
    # (shared.callbacks.whsec).
    callback_signing_secrets: CommaSeparatedSecrets = ()
    # A client key's default callback endpoint: key_<12 hex>=https://... (the key's identity,
    # as logs show it), comma-separated; a payment's own callback_url wins. Here by client.
    callback_endpoints: Annotated[dict[str, str], NoDecode] = Field(default_factory=dict)
    # Hosts callbacks may go to (comma-separated; a leading "." allows subdomains); empty:
    # any public host. Here lowercased.
    callback_allowed_hosts: CommaSeparated = ()
    # Only global addresses (the public internet) are allowed unless this is set
    # (development and tests; refused in production).
    callback_allow_private_networks: bool = False
    callback_queue: str = "callbacks"
    # The hard deadline of one callback attempt: the whole exchange (lookup, connect, TLS,
    # send, status line), however the receiver trickles its answer; then the attempt failed
    # and is retried on the schedule. 15-30 s is Standard Webhooks' recommendation.
    callback_timeout_seconds: float = Field(default=15.0, gt=0, le=30)
    # Callbacks in flight at once in one worker process (unset: a quarter of
    # WORKER_CONCURRENCY, at least 1), so that charges always have threads; and of one client's
    # payments (unset: half of that, at least 1), so that one client's receivers cannot take
    # the whole callback share. A callback that finds no free slot goes back to its queue.
    callback_max_in_flight: int | None = Field(default=None, ge=1, le=1024)
    callback_max_in_flight_per_client: int | None = Field(default=None, ge=1, le=1024)
    # Retries with exponential backoff (10 s doubling, capped at 2 h) and jitter: 25 attempts
    # span about a day; then a dead letter.
    callback_max_attempts: int = Field(default=25, ge=1, le=100)
    callback_retry_backoff_seconds: float = Field(default=10.0, gt=0)
    callback_retry_backoff_max_seconds: float = Field(default=7200.0, gt=0)
    # The callbacks' recovery sweep: a callback not delivered this long after its message was
    # pushed, and provably lost (no worker holds it, the queue moved past it), is pushed again.
    # Below SWEEP_STALE_SECONDS' floor on purpose: a rare duplicate is harmless (receivers
    # dedupe on webhook-id), so tests may use a few seconds.
    callback_sweep_stale_seconds: int = Field(default=600, ge=1)
    # How often one worker of the fleet lists Stripe's events of the handled types whose
    # webhook delivery failed or is pending (GET /v1/events) and takes those never taken, as
    # their webhook would have: the net under an endpoint that was down or misconfigured,
    # whose events Stripe no longer resends. 0 turns the round off.
    stripe_events_catchup_seconds: float = Field(default=300.0, ge=0, le=86400)

    @field_validator("redis_url")
    @classmethod
    def _redis_url_parses(cls, value: str) -> str:
        from shared.settings.redis_url import parse_sentinel_url

        parse_sentinel_url(value)  # a malformed Sentinel URL is refused at start, saying why
        return value

    @field_validator("callback_signing_secrets")
    @classmethod
    def _callback_secrets_are_whsec(cls, value: tuple[SecretStr, ...]) -> tuple[SecretStr, ...]:
        # As a client's own callback_signing_secrets are (shared.settings.api_clients): refused
        # at start, naming the entry's position, never the secret.
        position = whsec.first_malformed(secret.get_secret_value() for secret in value)
        if position is not None:
            raise ValueError(f"CALLBACK_SIGNING_SECRETS entry {position} is not {whsec.FORMAT}")
        return value

    @field_validator("callback_endpoints", mode="before")
    @classmethod
    def _endpoints_by_client(cls, value: object) -> object:
        if not isinstance(value, str):
            return value
        pairs = (entry.split("=", 1) for entry in split_commas(value) if "=" in entry)
        return {name.strip(): url.strip() for name, url in pairs if name.strip() and url.strip()}

    @field_validator("callback_allowed_hosts")
    @classmethod
    def _hosts_lowercased(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(host.lower() for host in value)

    @field_validator("stripe_rate_limits", mode="before")
    @classmethod
    def _rate_limits_parse(cls, value: object) -> object:
        if value is None or isinstance(value, str | dict):
            return parse_overrides(value)
        return value

    @field_validator("stripe_max_rps", mode="before")
    @classmethod
    def _unset_when_blank(cls, value: object) -> object:
        return None if value == "" else value

    @field_validator("stripe_api_base", mode="before")
    @classmethod
    def _blank_is_none(cls, value: object) -> object:
        return None if value == "" else value

    @model_validator(mode="after")
    def _secrets_outside_development(self) -> Settings:
        longest_charge = self.lease_seconds
        if self.visibility_timeout_seconds <= max(
            longest_charge, self.charge_retry_backoff_max_seconds
        ):
            visibility = self.visibility_timeout_seconds
            raise ValueError(
                f"VISIBILITY_TIMEOUT_SECONDS ({visibility} s) must exceed the longest charge, "
                f"2 x STRIPE_TIMEOUT_SECONDS + 10 = {longest_charge:g} s, and "
                f"CHARGE_RETRY_BACKOFF_MAX_SECONDS ({self.charge_retry_backoff_max_seconds:g} s), "
                "or a running charge would be delivered twice. Raise VISIBILITY_TIMEOUT_SECONDS "
                f"to {math.floor(max(longest_charge, self.charge_retry_backoff_max_seconds)) + 1}"
                f" or more, or lower STRIPE_TIMEOUT_SECONDS below {(visibility - 10) / 2:g} and "
                f"CHARGE_RETRY_BACKOFF_MAX_SECONDS below {visibility}."
            )
        if self.environment == "production":
            key = self.stripe_api_key.get_secret_value() if self.stripe_api_key else ""
            if not key or key == EMULATOR_API_KEY:
                raise ValueError("STRIPE_API_KEY is required when ENVIRONMENT=production")
        return self

    @model_validator(mode="after")
    def _callback_attempt_fits_visibility(self) -> Settings:
        # A callback attempt outliving its message's visibility would be delivered again
        # beside it (the event's lease would hold the second back, but only by waiting).
        if self.visibility_timeout_seconds <= self.callback_timeout_seconds + 5:
            raise ValueError(
                f"VISIBILITY_TIMEOUT_SECONDS ({self.visibility_timeout_seconds} s) must exceed "
                f"CALLBACK_TIMEOUT_SECONDS + 5 = {self.callback_timeout_seconds + 5:g} s"
            )
        return self

    @model_validator(mode="after")
    def _wait_fits_socket_timeout(self) -> Settings:
        # A WAIT longer than the API's socket timeout would end as a timeout (503
        # redis_unavailable) instead of its own answer.
        wait_ms, socket_ms = self.redis_wait_timeout_ms, self.redis_socket_timeout * 1000
        if self.redis_min_replicas and wait_ms >= socket_ms:
            raise ValueError(
                f"REDIS_WAIT_TIMEOUT_MS ({self.redis_wait_timeout_ms}) must stay below "
                f"REDIS_SOCKET_TIMEOUT ({self.redis_socket_timeout:g} s): raise the socket timeout "
                "or lower the wait"
            )
        return self

    @model_validator(mode="after")
    def _callbacks_safe_in_production(self) -> Settings:
        if self.environment == "production" and self.callback_allow_private_networks:
            raise ValueError(
                "CALLBACK_ALLOW_PRIVATE_NETWORKS is refused when ENVIRONMENT=production: "
                "callbacks must never reach the service's own network (SSRF)"
            )
        return self

    @cached_property
    def stripe_webhook_secrets(self) -> tuple[str, ...]:
        """STRIPE_WEBHOOK_SECRET's secrets: any one verifies a webhook (rotation)."""
        return tuple(secret.get_secret_value() for secret in self.stripe_webhook_secret)

    @model_validator(mode="after")
    def _no_placeholders_in_production(self) -> Settings:
        if self.environment != "production":
            return self
        values = [("REDIS_URL", self.redis_url)]
        for name, value in self:
            for entry in value if isinstance(value, tuple) else (value,):
                if isinstance(entry, SecretStr):
                    values.append((name.upper(), entry.get_secret_value()))
        for name, value in values:
            if PLACEHOLDER.search(value):
                raise ValueError(
                    f"{name} still holds a placeholder from .env.example or docker-compose.yml "
                    "(change-me, <...>); set a real value when ENVIRONMENT=production"
                )
        return self

    @cached_property
    def client_keys(self) -> tuple[str, ...]:
        """API_KEYS entries: raw keys, or ``sha256:<hex>`` digests of keys."""
        return tuple(key.get_secret_value() for key in self.api_keys)

    @property
    def callback_slots(self) -> int:
        """Callbacks in flight at once in one worker process (CALLBACK_MAX_IN_FLIGHT)."""
        if self.callback_max_in_flight is not None:
            return self.callback_max_in_flight
        return max(1, self.worker_concurrency // 4)

    @property
    def callback_client_slots(self) -> int:
        """Of those, one client's at most (CALLBACK_MAX_IN_FLIGHT_PER_CLIENT)."""
        if self.callback_max_in_flight_per_client is not None:
            return min(self.callback_max_in_flight_per_client, self.callback_slots)
        return max(1, self.callback_slots // 2)

    @property
    def callback_lease_seconds(self) -> float:
        """An attempt's hold on its event: it outlives the attempt's deadline, its lookups and
        its outcome's write."""
        return self.callback_timeout_seconds + 30

    @property
    def lease_seconds(self) -> float:
        """A worker's hold on a payment: it outlives a charge's two Stripe calls (and is
        extended while the worker waits for the Stripe budget)."""
        return 2 * self.stripe_timeout_seconds + 10

    @property
    def payment_id_key(self) -> bytes:
        """The secret payment ids are derived with (see payment_id_secret)."""
        if self.payment_id_secret is not None:
            return self.payment_id_secret.get_secret_value().encode()
        return hashlib.sha256(b"payment-id:" + self.stripe_key.encode()).digest()

    @cached_property
    def stripe_limits(self) -> RateLimits:
        """The Stripe rate limits the budget keeps (STRIPE_MAX_RPS, STRIPE_RATE_LIMITS, the
        key's mode)."""
        return resolve(
            stripe_key=self.stripe_key,
            max_rps=self.stripe_max_rps,
            overrides=self.stripe_rate_limits,
        )

    @property
    def stripe_key(self) -> str:
        """The Stripe secret key; the emulator's placeholder outside production."""
        if self.stripe_api_key is not None:
            return self.stripe_api_key.get_secret_value()
        return EMULATOR_API_KEY


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
