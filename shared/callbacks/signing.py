"""Callback signatures: Standard Webhooks (the ``standardwebhooks`` package, no hand-rolled
crypto), each client's callbacks with secrets of its own.

A client's secrets are, in this order:
- its own ``callback_signing_secrets`` in API_CLIENTS, when the entry has them;
- else derived from each master secret of CALLBACK_SIGNING_SECRETS and the client's name:
  ``whsec_`` + base64(HMAC-SHA256(the master's key bytes, the name)). A client reads its own
  with ``GET /clients/me/callback-secret`` (api/client_routes.py) and so can verify its
  callbacks, but holds no secret that verifies, or could forge, another client's.

The first secret is the current one; during a rotation of the masters (or of a client's own
list) every one signs, so a receiver holding either side verifies.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from datetime import datetime

from standardwebhooks.webhooks import Webhook

from shared.settings.service_settings import Settings

# The name callbacks of a payment recorded without a client are signed for.
NO_CLIENT = "anonymous"


def signing_secrets(settings: Settings) -> tuple[str, ...]:
    """CALLBACK_SIGNING_SECRETS, the masters: the first is current; every one during a
    rotation."""
    return tuple(secret.get_secret_value() for secret in settings.callback_signing_secrets)


def client_signing_secrets(settings: Settings) -> dict[str, tuple[str, ...]]:
    """Clients of API_CLIENTS with secrets of their own (``callback_signing_secrets``), by
    name: their callbacks are signed with these instead of derived ones. Raises
    ClientConfigError for a malformed entry (read when a worker starts)."""
    from shared.settings.api_clients import load

    return {c.name: c.callback_signing_secrets for c in load(settings).clients
            if c.callback_signing_secrets}  # fmt: skip


def derived_secret(master: str, client: str) -> str:
    """The client's Standard Webhooks secret derived from one master ``whsec_`` secret."""
    key = base64.b64decode(master.removeprefix("whsec_"))
    digest = hmac.new(key, client.encode(), hashlib.sha256).digest()
    return "whsec_" + base64.b64encode(digest).decode()


class CallbackSecrets:
    """Every client's callback secrets, read once from the settings."""

    def __init__(self, settings: Settings) -> None:
        self._masters = signing_secrets(settings)
        self._own = client_signing_secrets(settings)
        self._derived: dict[str, tuple[str, ...]] = {}

    def of(self, client: str | None) -> tuple[str, ...]:
        """The secrets that sign ``client``'s callbacks, the current first; empty when none
        is configured (then no callback is sent unsigned)."""
        name = client or NO_CLIENT
        own = self._own.get(name)
        if own:
            return own
        derived = self._derived.get(name)
        if derived is None:
            derived = self._derived[name] = tuple(derived_secret(m, name) for m in self._masters)
        return derived

    def configured_by_client(self, client: str | None) -> bool:
        """Whether the client's secrets are its own ``callback_signing_secrets``."""
        return bool(self._own.get(client or NO_CLIENT))


def sign(secrets: tuple[str, ...], msg_id: str, at: datetime, body: str) -> str:
    """``webhook-signature``: one ``v1,<base64>`` per secret (the first is the current one;
    during a rotation receivers holding either secret verify)."""
    return " ".join(Webhook(secret).sign(msg_id, at, body) for secret in secrets)
