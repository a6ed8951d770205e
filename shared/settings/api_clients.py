"""Who may call the API: named clients, their key digests, scopes and limits.

Two sources, both read once at start:
- ``API_KEYS``: comma-separated keys or ``sha256:<hex>`` digests. Each entry is a client of its
  own, named by its digest (``key_<12 hex>``), with the scopes such a key always had in effect:
  ``payments`` and ``metrics`` (KEY_SCOPES).
- ``API_CLIENTS``: a JSON list, one object a client (:class:`ClientSpec`), e.g.::

      [{"name": "shop-eu",
        "keys": ["sha256:9f86d0…", {"digest": "sha256:60303a…", "not_after": "2026-12-31"}],
        "scopes": ["payments", "customers:all"],
        "max_rps": 50, "burst": 100, "backlog_share": 0.5, "list_concurrency": 2, "weight": 2,
        "callback_signing_secrets": ["whsec_…"]}]

  A client is its name: ids of its payments derive from the name, so its keys rotate freely.
  Rotation takes one restart: add the new key and give the old one a ``not_after`` date; past
  it the old key is refused, with no second deploy.

``callback_signing_secrets`` (optional; a list, or one comma-separated string, of Standard
Webhooks ``whsec_<base64>`` secrets): when set, this client's callbacks are signed with these
instead of the secrets derived for it from CALLBACK_SIGNING_SECRETS (shared.callbacks.signing;
the first is current, every one signs during a rotation).
The workers read API_CLIENTS for them. A malformed entry stops the process at start, naming
the client and the entry's position, never the secret.

``weight`` (default 1): while several clients have charges waiting, each gets turns of the
workers, and so of the Stripe budget, in proportion to its weight (worker.fair_queues).

Scopes (checked by api/scopes.py): ``payments`` (the default: create, read and refund its own
payments, list the charges of customers it has paid), ``metrics`` (read ``/metrics``, which
shows every client's name and volume), ``customers:all`` (list any customer's charges),
``admin`` (all of these, every payment, list and replay dead letters). A client of API_CLIENTS
has exactly the scopes it lists, ``payments`` when it lists none.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Annotated, Any

import orjson
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import ErrorDetails

from shared.callbacks import whsec
from shared.settings.service_settings import Settings, split_commas

SCOPES = frozenset({"payments", "metrics", "customers:all", "admin"})
DEFAULT_SCOPES = frozenset({"payments"})
# An API_KEYS entry names no scopes: it may use every route but the admin ones.
KEY_SCOPES = frozenset({"payments", "metrics"})


class ClientConfigError(ValueError):
    pass


def digest_of(entry: str) -> bytes:
    """A configured key: a raw key, or its ``sha256:<hex>`` digest. The ValueError for a
    malformed digest shows no part of it."""
    if entry.startswith("sha256:"):
        try:
            raw = bytes.fromhex(entry.removeprefix("sha256:"))
        except ValueError:
            raw = b""
        if len(raw) != 32:
            raise ValueError("is not a SHA-256 digest (sha256: then 64 hex digits)")
        return raw
    return hashlib.sha256(entry.encode()).digest()


def legacy_name(digest: bytes) -> str:
    """An API_KEYS entry's client name (as payment ids and logs have always shown it)."""
    return "key_" + digest.hex()[:12]


def _ascii(name: str) -> str:
    if not name.isascii():
        raise ValueError("must be ASCII")
    return name


def _whsec(entry: str) -> str:
    if not whsec.is_whsec(entry):
        raise ValueError(f"is not {whsec.FORMAT}")
    return entry


def _list_or_commas(value: object) -> object:
    if value is None:
        return ()
    if isinstance(value, str):
        return split_commas(value)
    if not isinstance(value, list | tuple):
        raise ValueError("must be a list or a comma-separated string")
    return value


# Secrets of a client's own: a malformed one is named by its position, never shown.
SigningSecrets = Annotated[
    tuple[Annotated[str, AfterValidator(_whsec)], ...], BeforeValidator(_list_or_commas)
]


class Client(BaseModel):
    """A caller of the API: its name, scopes and limits (None: the service's defaults)."""

    # hide_input_in_errors: a refused value may be a secret.
    model_config = ConfigDict(frozen=True, hide_input_in_errors=True)

    name: Annotated[str, Field(min_length=1, max_length=64), AfterValidator(_ascii)]
    scopes: frozenset[str] = DEFAULT_SCOPES
    max_rps: float | None = Field(default=None, ge=0)  # None: CLIENT_MAX_RPS
    burst: int | None = Field(default=None, ge=1)  # None: CLIENT_BURST
    backlog_share: float | None = Field(default=None, gt=0, le=1)  # None: an equal share
    # Its own cap on list calls in flight per API process; None: LIST_CLIENT_SHARE of them.
    list_concurrency: int | None = Field(default=None, ge=1)
    # Its part of the workers' turns (and so of the Stripe budget) while it has charges
    # waiting, against the others that have: weight / the sum of their weights.
    weight: float = Field(default=1, gt=0, le=1000)
    # Its own callback signing secrets; empty: derived from CALLBACK_SIGNING_SECRETS and its
    # name. Never logged.
    callback_signing_secrets: SigningSecrets = Field(default=(), repr=False)

    @field_validator("scopes", mode="before")
    @classmethod
    def _default_scopes(cls, value: object) -> object:
        return value or DEFAULT_SCOPES

    @field_validator("scopes")
    @classmethod
    def _known_scopes(cls, value: frozenset[str]) -> frozenset[str]:
        unknown = value - SCOPES
        if unknown:
            raise ValueError(f"include unknown {sorted(unknown)} (known: {sorted(SCOPES)})")
        return value

    @property
    def is_admin(self) -> bool:
        return "admin" in self.scopes

    def may(self, scope: str) -> bool:
        return scope in self.scopes or self.is_admin


# The caller when no client key is configured (API_ALLOW_ANONYMOUS, development only).
ANONYMOUS = Client(name="anonymous", scopes=frozenset({"payments", "metrics", "customers:all"}))


class ClientKey(BaseModel):
    """One of a client's keys: its digest (a raw key is hashed) and when it stops working."""

    model_config = ConfigDict(frozen=True, hide_input_in_errors=True)

    digest: bytes
    not_after: date | None = None

    @model_validator(mode="before")
    @classmethod
    def _a_string_is_the_digest(cls, value: object) -> object:
        if isinstance(value, str):
            return {"digest": value}
        if not isinstance(value, dict):
            raise ValueError("must be a string or {digest, not_after}")
        return value

    @field_validator("digest", mode="before")
    @classmethod
    def _digest(cls, value: object) -> bytes:
        if not isinstance(value, str):
            raise ValueError("must be a string: a key or sha256:<hex>")
        return digest_of(value)


class ClientSpec(Client):
    """One entry of API_CLIENTS: a client and its keys."""

    keys: tuple[ClientKey, ...] = Field(repr=False)

    @field_validator("keys")
    @classmethod
    def _some_key(cls, value: tuple[ClientKey, ...]) -> tuple[ClientKey, ...]:
        if not value:
            raise ValueError("is empty: a client needs at least one key")
        return value


@dataclass(frozen=True, slots=True)
class KeyEntry:
    digest: bytes
    client: Client
    not_after: date | None = None

    def expired(self, today: date | None = None) -> bool:
        return self.not_after is not None and (today or datetime.now(UTC).date()) > self.not_after


@dataclass(frozen=True)
class Registry:
    entries: dict[bytes, KeyEntry] = field(default_factory=dict)
    clients: tuple[Client, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.entries)


def load(settings: Settings) -> Registry:
    """Every client of API_KEYS and API_CLIENTS and its keys; ClientConfigError, naming the
    client and the entry (never a key or a secret), for a malformed one."""
    entries: dict[bytes, KeyEntry] = {}
    clients: list[Client] = []

    def add(entry: KeyEntry) -> None:
        if entry.digest in entries:
            raise ClientConfigError(f"a key is configured twice ({entry.client.name})")
        entries[entry.digest] = entry

    for position, raw in enumerate(settings.client_keys, start=1):
        try:
            digest = digest_of(raw)
        except ValueError as exc:
            raise ClientConfigError(f"API_KEYS entry {position} {exc}") from None
        client = Client(name=legacy_name(digest), scopes=KEY_SCOPES)
        clients.append(client)
        add(KeyEntry(digest, client))
    for spec in _client_specs(settings):
        if any(c.name == spec.name for c in clients):
            raise ClientConfigError(f"client {spec.name!r} is configured twice")
        clients.append(spec)
        for key in spec.keys:
            add(KeyEntry(key.digest, spec, key.not_after))
    return Registry(entries, tuple(clients))


def _client_specs(settings: Settings) -> list[ClientSpec]:
    """API_CLIENTS' entries, validated."""
    raw = settings.api_clients.get_secret_value() if settings.api_clients else ""
    if not raw.strip():
        return []
    try:
        specs = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ClientConfigError(f"API_CLIENTS is not valid JSON: {exc}") from None
    if not isinstance(specs, list) or not all(isinstance(s, dict) for s in specs):
        raise ClientConfigError("API_CLIENTS must be a JSON list of objects")
    return [_validated(position, spec) for position, spec in enumerate(specs, start=1)]


def _validated(position: int, spec: dict[str, Any]) -> ClientSpec:
    try:
        return ClientSpec.model_validate(spec)
    except ValidationError as exc:
        name = spec.get("name")
        named = isinstance(name, str) and 0 < len(name) <= 64 and name.isascii()
        who = name if named else f"API_CLIENTS entry {position}"
        problems = exc.errors(include_url=False, include_input=False)
        raise ClientConfigError(f"{who}: " + "; ".join(map(_problem, problems))) from None


def _problem(error: ErrorDetails) -> str:
    """Where and what, never the value: this module's own checks read on from the place
    ("keys entry 2 is not a SHA-256 digest"), pydantic's are sentences of their own."""
    where = " ".join(
        f"entry {part + 1}" if isinstance(part, int) else part for part in error["loc"]
    )
    if error["type"] == "value_error":
        return f"{where} {error['ctx']['error']}".strip()
    return f"{where}: {error['msg']}" if where else error["msg"]
