"""Where callbacks may go: the URL rules checked at accept (no DNS) and the address rule the
workers check again on the resolved address at send time (``worker.callback_delivery``).

The address rule is an allow rule: only an address that is globally reachable (``ipaddress``'s
``is_global``, IANA's special-purpose registries) and not multicast, with every IPv4 address
carried inside an IPv6 one (IPv4-mapped, 6to4, NAT64, Teredo) global too. A deny list of
private ranges misses what it does not name (shared address space, 6to4 around a metadata
address, a NAT64 prefix in front of a loopback).
"""

from __future__ import annotations

import ipaddress
import re
import socket
import unicodedata
from urllib.parse import urlsplit

from shared.errors import CallbackUrlRefused
from shared.settings.service_settings import Settings

MAX_URL_LENGTH = 2048

Address = ipaddress.IPv4Address | ipaddress.IPv6Address

NAT64 = ipaddress.IPv6Network("64:ff9b::/96")  # RFC 6052: the IPv4 address in the last 32 bits
# IPv6 ranges that are not the public internet but that ``is_global`` misses on some Python
# versions: IPv4-compatible (deprecated), IPv4-translated (SIIT), local-use NAT64, site-local
# (deprecated), documentation, SRv6 segment identifiers.
NOT_GLOBAL_V6 = tuple(
    ipaddress.IPv6Network(net)
    for net in ("::/96", "::ffff:0:0:0/96", "64:ff9b:1::/48", "fec0::/10", "3fff::/20",
                "5f00::/16")
)  # fmt: skip
# A DNS name: labels of letters, digits, hyphens (and underscores, which some names carry).
HOST_LABEL = re.compile(r"^(?!-)[a-z0-9_-]{1,63}(?<!-)$")


def embedded_ipv4(ip: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    """The IPv4 addresses a 6to4, Teredo or NAT64 address carries (and would reach through a
    relay or a translator)."""
    found: list[ipaddress.IPv4Address] = []
    if ip.sixtofour is not None:
        found.append(ip.sixtofour)
    if ip.teredo is not None:
        found.extend(ip.teredo)  # (server, client)
    if ip in NAT64:
        found.append(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
    return found


def _global(ip: Address) -> bool:
    if not ip.is_global or ip.is_multicast:
        return False
    return not (isinstance(ip, ipaddress.IPv6Address) and any(ip in n for n in NOT_GLOBAL_V6))


def address_public(address: str | Address) -> bool:
    """The address is on the public internet: global, not multicast, and so is every IPv4
    address inside it."""
    ip = ipaddress.ip_address(address) if isinstance(address, str) else address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:  # the IPv4 address itself, written as IPv6
            return _global(ip.ipv4_mapped)
        return _global(ip) and all(_global(v4) for v4 in embedded_ipv4(ip))
    return _global(ip)


def address_refused(address: str) -> bool:
    """Not an address callbacks may reach (see ``address_public``)."""
    return not address_public(address)


def _literal_address(host: str) -> Address | None:
    """The address a host names by itself, without DNS: an IP literal, or one of the IPv4
    forms the system's resolver reads as an address (``127.1``, ``2130706433``,
    ``0x7f.0.0.1``)."""
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    try:
        return ipaddress.IPv4Address(socket.inet_aton(host))
    except OSError:
        return None


def _names_this_network(host: str) -> bool:
    """A literal address that is not public, or a name of this host."""
    if host in ("localhost", "localhost.localdomain") or host.endswith(".localhost"):
        return True
    address = _literal_address(host)
    # A name is judged on its resolved address at send time.
    return address is not None and not address_public(address)


def _unprintable(url: str) -> bool:
    """Whitespace or a control, format or unassigned character anywhere in the URL (a space
    in a host, CR/LF that would split a request, NUL)."""
    return any(ch.isspace() or unicodedata.category(ch)[0] == "C" for ch in url)


def _canonical_host(host: str, bracketed: bool) -> str | None:
    """The host as a resolver reads it, or None when it is no valid host: an IPv6 literal as
    given; a name in its ASCII (IDNA) form, which folds what a resolver folds (full-width
    letters and digits, ideographic dots, circled digits: ``localhost`` written full-width,
    ``127.0.0.1`` with U+3002 dots), lower case, without the root's trailing dot
    (``localhost.``)."""
    if bracketed or ":" in host:
        try:
            address = ipaddress.ip_address(host.split("%", 1)[0])
        except ValueError:
            return None
        return host if isinstance(address, ipaddress.IPv6Address) else None
    try:
        ascii_host = host.encode("idna").decode("ascii").lower().removesuffix(".")
    except UnicodeError:
        return None
    labels = ascii_host.split(".")
    if len(ascii_host) <= 253 and all(HOST_LABEL.match(label) for label in labels):
        return ascii_host
    return None


def _host_allowed(host: str, allowed: tuple[str, ...]) -> bool:
    if not allowed:
        return True
    for entry in allowed:
        if entry.startswith(".") and (host.endswith(entry) or host == entry[1:]):
            return True
        if host == entry:
            return True
    return False


def _refused(message: str) -> CallbackUrlRefused:
    return CallbackUrlRefused(message, param="callback_url")


def check_callback_url(url: str, settings: Settings) -> tuple[str, str, int]:
    """(scheme, host, port) of an endpoint the rules allow, judged without DNS: a URL that
    parses (no whitespace or control character, a valid host), ``https`` only in production,
    no credentials, a host in CALLBACK_ALLOWED_HOSTS (when set), and no address literal off
    the public internet unless CALLBACK_ALLOW_PRIVATE_NETWORKS. Else CallbackUrlRefused. The
    resolved address is checked again at send time (worker.callback_delivery)."""
    if len(url) > MAX_URL_LENGTH:
        raise _refused(f"callback_url must be at most {MAX_URL_LENGTH} characters.")
    if _unprintable(url):
        raise _refused("callback_url must not contain spaces or control characters.")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise _refused("callback_url is not a URL.") from None
    if port == 0:
        raise _refused("callback_url's port must be from 1 to 65535.")
    schemes = ("https",) if settings.environment == "production" else ("https", "http")
    if parts.scheme not in schemes:
        raise _refused(f"callback_url must use {' or '.join(schemes)}.")
    given = (parts.hostname or "").lower()
    if not given or parts.username is not None or parts.password is not None:
        raise _refused("callback_url needs a host and no credentials.")
    host = _canonical_host(given, bracketed="[" in parts.netloc)
    if host is None:
        raise _refused("callback_url's host is not a valid host name or address.")
    if not _host_allowed(host, settings.callback_allowed_hosts):
        raise _refused(f"callback_url's host {host} is not in CALLBACK_ALLOWED_HOSTS.")
    if not settings.callback_allow_private_networks and _names_this_network(host):
        raise _refused("callback_url points at an address that is not on the public internet.")
    return parts.scheme, host, port or (443 if parts.scheme == "https" else 80)


def callback_endpoint(settings: Settings, requested: str | None, client: str) -> str | None:
    """Where a new payment's callbacks go: its own ``callback_url`` (checked now: a refused
    one is a 400), else its client's default endpoint (CALLBACK_ENDPOINTS), else nowhere."""
    if requested is not None:
        check_callback_url(requested, settings)
        return requested
    return settings.callback_endpoints.get(client)
