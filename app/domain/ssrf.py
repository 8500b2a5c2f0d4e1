"""The SSRF guard's decisions: which URLs and which IP addresses a scrape-sync may reach.

Pure: it judges an address someone already resolved. Resolving, and connecting to exactly the
addresses judged here, is `app.services.guarded_http`'s job (one lookup per connection, so a DNS
answer cannot change between the check and the connect).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from ipaddress import (
    IPv4Address,
    IPv4Network,
    IPv6Address,
    IPv6Network,
    ip_address,
    ip_network,
)

from app.domain.errors import FetchRefused

IPAddress = IPv4Address | IPv6Address
IPNetwork = IPv4Network | IPv6Network

ALLOWED_SCHEMES = frozenset({"http", "https"})
#: Instance-metadata services: they hand out cloud credentials to whoever asks from inside.
METADATA_ADDRESSES = frozenset(
    {
        ip_address("169.254.169.254"),  # AWS, GCP, Azure, OCI, DigitalOcean
        ip_address("fd00:ec2::254"),  # AWS over IPv6
        ip_address("100.100.100.200"),  # Alibaba Cloud
        ip_address("168.63.129.16"),  # Azure WireServer: a public address, reachable only inside
    }
)
_CGNAT = ip_network("100.64.0.0/10")  # shared address space (RFC 6598): carrier-internal
_NAT64 = (ip_network("64:ff9b::/96"), ip_network("64:ff9b:1::/48"))
_IPV4_COMPATIBLE = ip_network("::/96")  # deprecated ::a.b.c.d; the kernel may route it as IPv4
_RESERVED = "a reserved address"


def parse_networks(values: Iterable[str]) -> tuple[IPNetwork, ...]:
    """`["127.0.0.1/32", "10.1.0.0/16", "::1"]` as networks; a bare address is a /32 or /128.
    Host bits are allowed (`10.1.2.3/16` means 10.1.0.0/16). Raises ValueError on a typo."""
    return tuple(ip_network(value.strip(), strict=False) for value in values)


def url_refusal(scheme: str, *, has_userinfo: bool, host: str) -> str | None:
    """Why a URL may not be fetched whatever its host resolves to, or None."""
    if scheme.lower() not in ALLOWED_SCHEMES:
        return f"scheme {scheme!r} is not allowed (only http and https)"
    if has_userinfo:
        return "URLs with credentials (user:password@) are not allowed"
    if not host:
        return "the URL has no host"
    return None


def address_refusal(address: IPAddress, allow: Sequence[IPNetwork] = ()) -> str | None:
    """Why the guard refuses to connect to `address`, or None when it may.

    An address inside an `allow` network is always admitted (an operator's explicit choice);
    an IPv4-mapped IPv6 address (`::ffff:a.b.c.d`) is judged as the IPv4 address it is."""
    plain = _unmapped(address)
    if any(a in net for a in {address, plain} for net in allow if a.version == net.version):
        return None
    reason = _category(plain)
    if reason in (None, _RESERVED) and isinstance(plain, IPv6Address):
        # ::a.b.c.d and NAT64 are also "reserved": name the IPv4 address they lead to.
        reason = _embedded_refusal(plain) or reason
    if reason is None and not plain.is_global:
        reason = "not a globally routable address"
    return f"{address} is {reason}" if reason else None


def vet(addresses: Iterable[IPAddress], allow: Sequence[IPNetwork] = (), *, host: str) -> None:
    """Admit a host only if EVERY address it resolved to is admitted: a name answering with a
    public and a private address could be steered to the private one. Raises FetchRefused."""
    found = list(addresses)
    if not found:
        raise FetchRefused(f"{host} resolved to no address")
    for address in found:
        reason = address_refusal(address, allow)
        if reason is not None:
            shown = "" if host == str(address) else f"{host} resolves to "
            raise FetchRefused(f"refused by the SSRF guard: {shown}{reason}")


def _category(address: IPAddress) -> str | None:
    # The first match names the refusal; the order puts the most telling name first
    # (127.0.0.1 is also "private", 169.254.169.254 also "link-local").
    checks = (
        (address in METADATA_ADDRESSES, "a cloud metadata address"),
        (address.is_unspecified, "an unspecified address"),
        (address.is_loopback, "a loopback address"),
        (address.is_link_local, "a link-local address"),
        (address.is_multicast, "a multicast address"),
        (isinstance(address, IPv4Address) and address in _CGNAT, "a CGNAT (100.64/10) address"),
        (address.is_reserved, _RESERVED),
        (address.is_private, "a private address"),
    )
    return next((name for matched, name in checks if matched), None)


def _embedded_refusal(address: IPv6Address) -> str | None:
    """IPv6 forms that carry an IPv4 address a gateway may deliver to: judged as that IPv4."""
    for embedded in _embedded_ipv4(address):
        reason = _category(embedded) or (None if embedded.is_global else "not global")
        if reason is not None:
            return f"an IPv6 form of {embedded}, {reason}"
    return None


def _embedded_ipv4(address: IPv6Address) -> list[IPv4Address]:
    low32 = IPv4Address(int(address) & 0xFFFFFFFF)
    found = []
    if address in _IPV4_COMPATIBLE or any(address in net for net in _NAT64):
        found.append(low32)
    if address.sixtofour is not None:
        found.append(address.sixtofour)
    if address.teredo is not None:
        found.extend(address.teredo)
    return found


def _unmapped(address: IPAddress) -> IPAddress:
    if isinstance(address, IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address
