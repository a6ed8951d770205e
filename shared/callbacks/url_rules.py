"""Where callbacks may go: the URL rules checked at accept (no DNS) and the address rule the
workers check again on the resolved address at send time (``worker.callback_delivery``)."""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

from shared.errors import CallbackUrlRefused
from shared.settings.service_settings import Settings

MAX_URL_LENGTH = 2048


def _host_allowed(host: str, allowed: tuple[str, ...]) -> bool:
    if not allowed:
        return True
    for entry in allowed:
        if entry.startswith(".") and (host.endswith(entry) or host == entry[1:]):
            return True
        if host == entry:
            return True
    return False


def address_refused(address: str) -> bool:
    """Loopback, link-local, private, multicast, reserved and unspecified addresses (and
    IPv4 ones hiding in IPv6) are not the public internet."""
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return bool(
        ip.is_private or ip.is_loopback or ip.is_link_local or ip.is_multicast
        or ip.is_reserved or ip.is_unspecified
    )  # fmt: skip


def _names_this_network(host: str) -> bool:
    """A literal address that is not public, or a name of this host."""
    if host in ("localhost", "localhost.localdomain") or host.endswith(".localhost"):
        return True
    try:
        return address_refused(host)
    except ValueError:
        return False  # a name: judged on its resolved address at send time


def check_callback_url(url: str, settings: Settings) -> tuple[str, str, int]:
    """(scheme, host, port) of an endpoint the rules allow, judged without DNS: ``https`` only
    in production, no credentials, a host in CALLBACK_ALLOWED_HOSTS (when set), and no private
    address literal unless CALLBACK_ALLOW_PRIVATE_NETWORKS. Else CallbackUrlRefused. The
    resolved address is checked again at send time (worker.callback_delivery)."""
    if len(url) > MAX_URL_LENGTH:
        raise CallbackUrlRefused(f"callback_url must be at most {MAX_URL_LENGTH} characters.",
                                 param="callback_url")  # fmt: skip
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise CallbackUrlRefused("callback_url is not a URL.", param="callback_url") from None
    schemes = ("https",) if settings.environment == "production" else ("https", "http")
    if parts.scheme not in schemes:
        raise CallbackUrlRefused(
            f"callback_url must use {' or '.join(schemes)}.", param="callback_url"
        )
    host = (parts.hostname or "").lower()
    if not host or parts.username is not None or parts.password is not None:
        raise CallbackUrlRefused(
            "callback_url needs a host and no credentials.", param="callback_url"
        )
    if not _host_allowed(host, settings.callback_allowed_hosts):
        raise CallbackUrlRefused(
            f"callback_url's host {host} is not in CALLBACK_ALLOWED_HOSTS.", param="callback_url"
        )
    if not settings.callback_allow_private_networks and _names_this_network(host):
        raise CallbackUrlRefused(
            "callback_url points at a private, loopback or link-local address.",
            param="callback_url",
        )
    return parts.scheme, host, port or (443 if parts.scheme == "https" else 80)


def callback_endpoint(settings: Settings, requested: str | None, client: str) -> str | None:
    """Where a new payment's callbacks go: its own ``callback_url`` (checked now: a refused
    one is a 400), else its client's default endpoint (CALLBACK_ENDPOINTS), else nowhere."""
    if requested is not None:
        check_callback_url(requested, settings)
        return requested
    return settings.callback_endpoints.get(client)
