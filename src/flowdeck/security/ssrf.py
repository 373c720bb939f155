"""Where webhooks may be sent: public addresses over http(s) only (no server-side request
forgery into the server's own networks), unless an operator allows chosen networks.

A URL is checked when a subscription is made and again at every delivery, against every
address its host resolves to (DNS can change); the delivery then connects to the address
that was checked, never resolving the name a second time.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

from flowdeck.errors import UrlRefused

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

_CGNAT = ipaddress.ip_network("100.64.0.0/10")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_DEFAULT_PORTS = {"http": 80, "https": 443}


@dataclass(frozen=True, slots=True)
class Target:
    """A parsed webhook URL."""

    url: str
    scheme: str  # http or https
    host: str  # lower case, without brackets
    port: int
    path: str  # path and query, at least "/"

    @property
    def host_header(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == _DEFAULT_PORTS[self.scheme] else f"{host}:{self.port}"

    def url_for(self, address: str) -> str:
        """The URL with its host replaced by an (already checked) address."""
        host = f"[{address}]" if ":" in address else address
        return f"{self.scheme}://{host}:{self.port}{self.path}"


def networks(cidrs: Iterable[str]) -> list[Network]:
    return [ipaddress.ip_network(c, strict=False) for c in cidrs]


def parse(url: str) -> Target:
    """Split a webhook URL; refuse what is not an absolute http(s) URL with a host."""
    if any(ord(c) < 33 or ord(c) == 127 for c in url):
        raise _refused(url, "the URL contains spaces or control characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise _refused(url, f"not a valid URL ({exc})") from exc
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS:
        raise _refused(url, "only http and https URLs are allowed")
    if not parts.hostname:
        raise _refused(url, "the URL has no host")
    if parts.username is not None or parts.password is not None:
        raise _refused(url, "credentials in the URL are not allowed")
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    host = parts.hostname.lower().split("%")[0]
    if host.endswith("."):  # a fully qualified name is the same host: 127.0.0.1., localhost.
        host = host[:-1]
        if not host or host.endswith("."):
            raise _refused(url, "the host is not a valid name")
    try:
        host = host if host.isascii() else host.encode("idna").decode("ascii")
    except UnicodeError as exc:
        raise _refused(url, "the host is not a valid name") from exc
    return Target(url, scheme, host, port or _DEFAULT_PORTS[scheme], path)


def refusal(address: IPAddress, allow: Iterable[Network] = ()) -> str | None:
    """Why a webhook may not go to this address (None: it may)."""
    allow = list(allow)
    if any(address in net for net in allow if net.version == address.version):
        return None
    if isinstance(address, ipaddress.IPv6Address):
        embedded = _embedded_ipv4(address)
        if embedded is not None:
            why = refusal(embedded, allow)
            return None if why is None else f"{why} (embedded in the IPv6 address {address})"
    checks = [
        (address.is_unspecified, "unspecified address"),
        (address.is_loopback, "loopback address"),
        (address.is_link_local, "link-local address"),
        (address.is_multicast, "multicast address"),
        (address.version == 4 and address in _CGNAT, "carrier-grade NAT address"),
        (
            address.version == 6 and address in ipaddress.ip_network("fc00::/7"),
            "unique-local address",
        ),
        (address.is_reserved, "reserved address"),
        (address.is_private, "private address"),
        (not address.is_global, "not a public address"),
    ]
    return next((why for hit, why in checks if hit), None)


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def check_addresses(target: Target, addresses: list[str], allow: Iterable[Network]) -> str:
    """The address to connect to, once every address the host resolved to is allowed."""
    if not addresses:
        raise _refused(target.url, f"{target.host} does not resolve")
    allow = list(allow)
    for text in addresses:
        why = refusal(ipaddress.ip_address(text.split("%")[0]), allow)
        if why is not None:
            raise _refused(target.url, f"{target.host} is (or resolves to) {text}, a {why}")
    return addresses[0]


def literal_addresses(host: str) -> list[str] | None:
    """The address a numeric host stands for (``127.1``, ``2130706433``, ``0x7f.0.0.1``,
    ``::1``, …), as the system's resolver reads it; None for a name."""
    try:
        infos = socket.getaddrinfo(host, None, flags=socket.AI_NUMERICHOST)
    except (socket.gaierror, UnicodeError, ValueError):
        return None
    return _unique(str(info[4][0]) for info in infos)


def resolve(host: str, port: int) -> list[str]:
    """Every address of a host (blocking)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError, ValueError):
        return []
    return _unique(str(info[4][0]) for info in infos)


def check_at_creation(url: str, allow: Iterable[Network]) -> Target:
    """The checks made when a subscription is made: the scheme, a numeric host, and the
    addresses of a name when it resolves now (it is checked again at every delivery)."""
    target = parse(url)
    addresses = literal_addresses(target.host)
    if addresses is None and (target.host == "localhost" or target.host.endswith(".localhost")):
        addresses = resolve(target.host, target.port) or ["127.0.0.1"]
    elif addresses is None:
        addresses = resolve(target.host, target.port)
        if not addresses:
            return target  # may resolve later; refused at delivery if it does not
    check_addresses(target, addresses, allow)
    return target


def _unique(items: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(items))


def _refused(url: str, reason: str) -> UrlRefused:
    return UrlRefused(f"webhook URL {url!r} refused: {reason}", url=url, reason=reason)
