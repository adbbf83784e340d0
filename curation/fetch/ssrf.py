"""SSRF guard: a urllib opener that never connects to a non-public address unless it is allow-listed.

The check sits where the socket is made, not where the URL is parsed: the opener's HTTP(S) connections
resolve the host themselves, check *every* address the name resolves to, and connect to the checked
address. So it holds for names as well as literals (``http://2130706433/``, ``http://localhost/``), after
every redirect (each hop opens a new connection through the same handlers) and against DNS rebinding
(the address that was checked is the one connected to; there is no second lookup).

Blocked unless allow-listed: loopback, private (RFC 1918, ULA), link-local, multicast, reserved,
unspecified, shared (CGNAT) and every other non-global range, cloud metadata endpoints, and IPv6 forms
that embed such an IPv4 address (IPv4-mapped, 6to4, NAT64). The opener has no proxy handler (a proxy
would make the guard check the proxy instead of the target) and only http/https handlers (no file:,
ftp:, data:).
"""

from __future__ import annotations

import http.client
import ipaddress
import socket
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import partial

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
Resolver = Callable[[str, int], list[str]]

# Instance-metadata services that hand out cloud credentials (AWS/GCP/Azure/OpenStack, AWS IPv6,
# AWS ECS task metadata, Alibaba Cloud). Most also fall in a blocked range; named here for the message.
METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a) for a in ("169.254.169.254", "fd00:ec2::254", "169.254.170.2", "100.100.100.200")
)
NAT64_PREFIX = ipaddress.ip_network("64:ff9b::/96")


class BlockedAddressError(OSError):
    """The URL's host is (or resolves to) an address the guard does not connect to.

    An OSError so that urllib wraps it in a URLError like any other connection failure."""

    def __init__(self, host: str, address: str, why: str, message: str | None = None) -> None:
        super().__init__(message or f"{host} -> {address}: {why} address (not in allowed_addresses)")
        self.host, self.address, self.why = host, address, why


def embedded_ipv4(ip: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address carries (IPv4-mapped, 6to4, NAT64), if any."""
    if ip.version != 6:
        return None
    if ip.ipv4_mapped:
        return ip.ipv4_mapped
    if ip.sixtofour:
        return ip.sixtofour
    if ip in NAT64_PREFIX:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def blocked_because(ip: IPAddress) -> str | None:
    """Why ``ip`` is not a public unicast address (None: it is)."""
    inner = embedded_ipv4(ip)
    if inner is not None:
        why = blocked_because(inner)
        return f"{why} (embedded in {ip})" if why else None
    checks = (
        (ip in METADATA_ADDRESSES, "cloud metadata"),
        (ip.is_unspecified, "unspecified"),
        (ip.is_loopback, "loopback"),
        (ip.is_link_local, "link-local"),
        (ip.is_multicast, "multicast"),
        (ip.is_reserved, "reserved"),
        (ip.is_private, "private"),
        (not ip.is_global, "non-global"),
    )
    return next((why for hit, why in checks if hit), None)


def parse_networks(entries: Iterable[str]) -> tuple[IPNetwork, ...]:
    """Allow-list entries: addresses or CIDR networks (``127.0.0.1``, ``10.0.0.0/8``, ``::1``)."""
    out = []
    for entry in entries:
        try:
            out.append(ipaddress.ip_network(entry.strip(), strict=False))
        except ValueError as e:
            raise ValueError(
                f"allowed_addresses entry {entry!r} is not an IP address or network (host names are not "
                "accepted: the guard checks addresses after resolution)"
            ) from e
    return tuple(out)


LOCAL_NAMES = frozenset({"localhost"})  # resolved from the hosts file, never by DNS


def _is_literal_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]").split("%", 1)[0])
        return True
    except ValueError:
        return False


def system_resolver(host: str, port: int) -> list[str]:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(info[4][0] for info in infos))


@dataclass(frozen=True)
class AddressGuard:
    """Which addresses may be connected to. ``only_allowed`` blocks every address outside the
    allow-list, public ones included (an offline demo or a closed test network)."""

    allowed: tuple[IPNetwork, ...] = ()
    only_allowed: bool = False
    resolver: Resolver = system_resolver

    @classmethod
    def from_config(cls, allowed: Iterable[str], only_allowed: bool = False) -> AddressGuard:
        return cls(parse_networks(allowed), only_allowed)

    def is_allowed(self, ip: IPAddress) -> bool:
        return any(ip.version == net.version and ip in net for net in self.allowed)

    def check(self, host: str, address: str) -> IPAddress:
        """The parsed address, or BlockedAddressError."""
        ip = ipaddress.ip_address(address.split("%", 1)[0])  # drop an IPv6 zone id
        if self.is_allowed(ip):
            return ip
        why = blocked_because(ip) or ("not allow-listed (only_allowed is set)" if self.only_allowed else None)
        if why:
            raise BlockedAddressError(host, str(ip), why)
        return ip

    def resolve(self, host: str, port: int) -> list[IPAddress]:
        """Every address ``host`` resolves to, each checked; one blocked address blocks the host.
        With ``only_allowed`` a host name other than localhost is blocked without any lookup: a closed
        run (the offline sample) sends no DNS query off the machine."""
        if self.only_allowed and not _is_literal_address(host) and host.lower().rstrip(".") not in LOCAL_NAMES:
            raise BlockedAddressError(
                host, "", "unresolved name",
                f"{host}: a host name is not looked up under only_allowed_addresses (literal addresses and localhost only)",
            )
        return [self.check(host, a) for a in self.resolver(host, port)]

    def create_connection(self, address: tuple[str, int], timeout=socket._GLOBAL_DEFAULT_TIMEOUT, source_address=None):
        """``socket.create_connection`` that connects only to checked addresses."""
        host, port = address
        last_error: OSError | None = None
        for ip in self.resolve(host, port):
            try:
                return socket.create_connection((str(ip), port), timeout, source_address)
            except OSError as e:
                last_error = e
        raise last_error or OSError(f"{host} resolves to no address")


class GuardedHTTPConnection(http.client.HTTPConnection):
    def __init__(self, *args, guard: AddressGuard, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._create_connection = guard.create_connection  # what HTTPConnection.connect() calls


class GuardedHTTPSConnection(http.client.HTTPSConnection):
    def __init__(self, *args, guard: AddressGuard, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._create_connection = guard.create_connection  # TLS wraps the checked socket (SNI = host)


class GuardedHTTPHandler(urllib.request.HTTPHandler):
    def __init__(self, guard: AddressGuard) -> None:
        super().__init__()
        self.guard = guard

    def http_open(self, req):
        return self.do_open(partial(GuardedHTTPConnection, guard=self.guard), req)


class GuardedHTTPSHandler(urllib.request.HTTPSHandler):
    def __init__(self, guard: AddressGuard) -> None:
        super().__init__()
        self.guard = guard

    def https_open(self, req):
        return self.do_open(partial(GuardedHTTPSConnection, guard=self.guard), req, context=self._context)


class LimitedRedirectHandler(urllib.request.HTTPRedirectHandler):
    def __init__(self, max_redirects: int) -> None:
        super().__init__()
        self.max_redirections = max_redirects


def build_opener(guard: AddressGuard, max_redirects: int = 10) -> urllib.request.OpenerDirector:
    """An opener with only guarded http/https, redirects, error processing; no proxies, no other schemes."""
    opener = urllib.request.OpenerDirector()
    for handler in (
        urllib.request.ProxyHandler({}),
        GuardedHTTPHandler(guard),
        GuardedHTTPSHandler(guard),
        urllib.request.HTTPDefaultErrorHandler(),
        LimitedRedirectHandler(max_redirects),
        urllib.request.HTTPErrorProcessor(),
        urllib.request.UnknownHandler(),
    ):
        opener.add_handler(handler)
    return opener
