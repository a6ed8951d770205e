"""Who may call the API: named clients, their key digests, scopes and limits.

Two sources, both read once at start:
- ``API_KEYS`` (unchanged): comma-separated keys or ``sha256:<hex>`` digests. Each entry is a
  client of its own, named by its digest (``key_<12 hex>``), with the default scope.
- ``API_CLIENTS``: a JSON list, one object a client, e.g.::

      [{"name": "shop-eu",
        "keys": ["sha256:9f86d0…", {"digest": "sha256:60303a…", "not_after": "2026-12-31"}],
        "scopes": ["payments", "customers:all"],
        "max_rps": 50, "burst": 100, "backlog_share": 0.5,
        "callback_signing_secrets": ["whsec_…"]}]

  A client is its name: ids of its payments derive from the name, so its keys rotate freely.
  Rotation takes one restart: add the new key and give the old one a ``not_after`` date; past
  it the old key is refused, with no second deploy.

``callback_signing_secrets`` (optional; a list, or one comma-separated string, of Standard
Webhooks ``whsec_<base64>`` secrets): when set, this client's callbacks are signed with these
instead of CALLBACK_SIGNING_SECRETS (the first is current, every one signs during a rotation).
The workers read API_CLIENTS for them. A malformed entry stops the process at start, naming
the client and the entry's position, never the secret.

Scopes: ``payments`` (the default: create payments and read its own, list the charges of
customers it has paid), ``customers:all`` (list any customer's charges), ``admin`` (read every
payment, list and replay dead letters).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

import orjson

from shared.callbacks import whsec
from shared.settings.service_settings import Settings

SCOPES = frozenset({"payments", "customers:all", "admin"})
DEFAULT_SCOPES = frozenset({"payments"})


@dataclass(frozen=True, slots=True)
class Client:
    name: str
    scopes: frozenset[str] = DEFAULT_SCOPES
    max_rps: float | None = None  # None: CLIENT_MAX_RPS
    burst: int | None = None  # None: CLIENT_BURST
    backlog_share: float | None = None  # None: an equal share of QUEUE_MAX_BACKLOG
    # Its own callback signing secrets (whsec_…); empty: CALLBACK_SIGNING_SECRETS. Never shown.
    callback_signing_secrets: tuple[str, ...] = field(default=(), repr=False)

    @property
    def is_admin(self) -> bool:
        return "admin" in self.scopes

    def may(self, scope: str) -> bool:
        return scope in self.scopes or self.is_admin


ANONYMOUS = Client("anonymous", frozenset({"payments", "customers:all"}))


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


class ClientConfigError(ValueError):
    pass


def digest_of(entry: str) -> bytes:
    """A configured key: a raw key, or its ``sha256:<hex>`` digest."""
    if entry.startswith("sha256:"):
        hexdigest = entry.removeprefix("sha256:").lower()
        try:
            raw = bytes.fromhex(hexdigest)
        except ValueError:
            raw = b""
        if len(raw) != 32:
            raise ClientConfigError(f"not a SHA-256 digest: {entry[:20]}…")
        return raw
    return hashlib.sha256(entry.encode()).digest()


def legacy_name(digest: bytes) -> str:
    """An API_KEYS entry's client name (as payment ids and logs have always shown it)."""
    return "key_" + digest.hex()[:12]


def load(settings: Settings) -> Registry:
    entries: dict[bytes, KeyEntry] = {}
    clients: list[Client] = []

    def add(entry: KeyEntry) -> None:
        if entry.digest in entries:
            raise ClientConfigError(f"a key is configured twice ({entry.client.name})")
        entries[entry.digest] = entry

    for raw in settings.client_keys:
        digest = digest_of(raw)
        client = Client(legacy_name(digest))
        clients.append(client)
        add(KeyEntry(digest, client))
    for spec in _client_specs(settings):
        client = _client(spec)
        if any(c.name == client.name for c in clients):
            raise ClientConfigError(f"client {client.name!r} is configured twice")
        clients.append(client)
        for key in spec.get("keys") or ():
            if isinstance(key, str):
                add(KeyEntry(digest_of(key), client))
            elif isinstance(key, dict) and isinstance(key.get("digest"), str):
                not_after = key.get("not_after")
                add(KeyEntry(digest_of(key["digest"]), client,
                             date.fromisoformat(not_after) if not_after else None))  # fmt: skip
            else:
                raise ClientConfigError(
                    f"{client.name}: a key is a string or {{digest, not_after}}"
                )
    return Registry(entries, tuple(clients))


def _client_specs(settings: Settings) -> list[dict[str, Any]]:
    raw = settings.api_clients.get_secret_value() if settings.api_clients else ""
    if not raw.strip():
        return []
    try:
        specs = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ClientConfigError(f"API_CLIENTS is not valid JSON: {exc}") from None
    if not isinstance(specs, list) or not all(isinstance(s, dict) for s in specs):
        raise ClientConfigError("API_CLIENTS must be a JSON list of objects")
    return specs


def _client(spec: dict[str, Any]) -> Client:
    name = spec.get("name")
    if not isinstance(name, str) or not name or len(name) > 64 or not name.isascii():
        raise ClientConfigError("every API_CLIENTS entry needs a name (1-64 ASCII characters)")
    scopes = frozenset(spec.get("scopes") or DEFAULT_SCOPES)
    unknown = scopes - SCOPES
    if unknown:
        raise ClientConfigError(f"{name}: unknown scopes {sorted(unknown)}")
    if not spec.get("keys"):
        raise ClientConfigError(f"{name}: no keys")
    share = spec.get("backlog_share")
    if share is not None and not 0 < float(share) <= 1:
        raise ClientConfigError(f"{name}: backlog_share must be in (0, 1]")
    return Client(
        name=name,
        scopes=scopes,
        max_rps=float(spec["max_rps"]) if spec.get("max_rps") is not None else None,
        burst=int(spec["burst"]) if spec.get("burst") is not None else None,
        backlog_share=float(share) if share is not None else None,
        callback_signing_secrets=_signing_secrets(name, spec.get("callback_signing_secrets")),
    )


def _signing_secrets(name: str, raw: object) -> tuple[str, ...]:
    """A client's ``callback_signing_secrets``: a list, or a comma-separated string, of
    ``whsec_<base64>`` secrets. Errors name the client and the entry, never the secret."""
    if raw is None:
        return ()
    if isinstance(raw, str):
        entries: list[object] = list(whsec.split(raw))
    elif isinstance(raw, list):
        entries = list(raw)
    else:
        raise ClientConfigError(
            f"{name}: callback_signing_secrets must be a list or a comma-separated string"
        )
    position = whsec.first_malformed(entries)
    if position is not None:
        raise ClientConfigError(
            f"{name}: callback_signing_secrets entry {position} is not {whsec.FORMAT}"
        )
    return tuple(str(entry) for entry in entries)
