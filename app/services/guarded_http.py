"""An httpx transport that connects only where the SSRF guard (`app.domain.ssrf`) says it may.

Why at the socket level: the guard must judge the very addresses the socket connects to. Vetting
a URL up front and letting httpx resolve the host again on connect leaves a window in which DNS
can answer differently (rebinding: public on the check, 127.0.0.1 on the connect). So this
transport's network backend replaces the resolving step of every TCP connect httpx makes: it
resolves the host once with `socket.getaddrinfo`, refuses if ANY answer is refused, and connects
to one of exactly those vetted IP addresses. Nothing above the socket changes: the URL, the Host
header, and TLS (SNI and certificate check against the host name, done by httpcore on the
connected socket) all keep the name. Redirect hops, retries and new pooled connections all pass
through here, so no connection escapes the check.
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import Callable, Iterable, Sequence
from ipaddress import ip_address

import httpcore
import httpx

from app.domain import ssrf
from app.domain.errors import FetchRefused

DEFAULT_LIMITS = httpx.Limits(max_connections=64, max_keepalive_connections=16)
#: `socket.getaddrinfo`'s shape, so tests can answer for names that resolve nowhere here.
Resolver = Callable[..., Sequence[tuple[object, ...]]]


def resolve(host: str, port: int, resolver: Resolver | None = None) -> list[ssrf.IPAddress]:
    """Every address `host` resolves to for a TCP connection, in resolver order, deduplicated.
    Raises httpcore.ConnectError when the name does not resolve."""
    try:
        infos = (resolver or socket.getaddrinfo)(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise httpcore.ConnectError(f"cannot resolve {host}: {exc}") from exc
    found: list[ssrf.IPAddress] = []
    for info in infos:
        sockaddr = info[4]
        assert isinstance(sockaddr, tuple)
        address = ip_address(str(sockaddr[0]))
        if address not in found:
            found.append(address)
    return found


class GuardedBackend(httpcore.SyncBackend):
    """httpcore's socket backend, resolving and vetting before each connect (see module doc)."""

    def __init__(
        self, allow: Sequence[ssrf.IPNetwork] = (), resolver: Resolver | None = None
    ) -> None:
        self.allow = tuple(allow)
        self.resolver = resolver

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.NetworkStream:
        addresses = resolve(host, port, self.resolver)
        ssrf.vet(addresses, self.allow, host=host)  # raises FetchRefused before any connect
        failure: httpcore.ConnectError | None = None
        for address in addresses:  # every one vetted: try them in the resolver's order
            try:
                # An IP literal: create_connection does no further lookup, so this socket goes
                # to the address judged above and nowhere else.
                return super().connect_tcp(
                    str(address), port, timeout, local_address, socket_options
                )
            except httpcore.ConnectError as exc:
                failure = exc
        assert failure is not None  # vet() refuses an empty list
        raise failure


class GuardedTransport(httpx.HTTPTransport):
    """`httpx.HTTPTransport` whose every connection goes through `GuardedBackend`.

    Never uses a proxy (`trust_env=False`): through a proxy the guard would judge the proxy's
    address, not the target's."""

    def __init__(
        self,
        allow: Sequence[ssrf.IPNetwork] = (),
        *,
        resolver: Resolver | None = None,
        limits: httpx.Limits = DEFAULT_LIMITS,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        super().__init__(trust_env=False, limits=limits)
        # httpx takes no network backend argument, so the pool it built is replaced by the same
        # pool around the guarded backend (httpx is pinned; tests prove the guard is consulted).
        self._pool = httpcore.ConnectionPool(
            ssl_context=ssl_context or httpx.create_ssl_context(trust_env=False),
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=GuardedBackend(allow, resolver),
        )


def check_url(url: httpx.URL) -> None:
    """Refuse what no address check can make safe: other schemes, embedded credentials."""
    reason = ssrf.url_refusal(url.scheme, has_userinfo=bool(url.userinfo), host=url.host)
    if reason is not None:
        raise FetchRefused(f"refused by the SSRF guard: {reason}")
