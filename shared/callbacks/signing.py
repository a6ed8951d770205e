"""Callback signatures: Standard Webhooks (the ``standardwebhooks`` package, no hand-rolled
crypto), with CALLBACK_SIGNING_SECRETS or a client's own ``callback_signing_secrets``."""

from __future__ import annotations

from datetime import datetime

from standardwebhooks.webhooks import Webhook

from shared.settings.service_settings import Settings


def signing_secrets(settings: Settings) -> tuple[str, ...]:
    """CALLBACK_SIGNING_SECRETS: the first signs; every one does during a rotation."""
    return tuple(secret.get_secret_value() for secret in settings.callback_signing_secrets)


def client_signing_secrets(settings: Settings) -> dict[str, tuple[str, ...]]:
    """Clients of API_CLIENTS with secrets of their own (``callback_signing_secrets``), by
    name: their callbacks are signed with these instead of CALLBACK_SIGNING_SECRETS. Raises
    ClientConfigError for a malformed entry (read when a worker starts)."""
    from shared.settings.api_clients import load

    return {c.name: c.callback_signing_secrets for c in load(settings).clients
            if c.callback_signing_secrets}  # fmt: skip


def sign(secrets: tuple[str, ...], msg_id: str, at: datetime, body: str) -> str:
    """``webhook-signature``: one ``v1,<base64>`` per secret (the first is the current one;
    during a rotation receivers holding either secret verify)."""
    return " ".join(Webhook(secret).sign(msg_id, at, body) for secret in secrets)
