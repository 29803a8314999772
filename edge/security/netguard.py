"""Server-side request forgery guard for absolute-URL sources.

Addresses are checked where the connection is made, after DNS, for every connection
httpx opens (so every redirect too): a name that resolves to a private, loopback,
link-local (cloud metadata), CGNAT, multicast or unspecified address is refused, as is
an IPv6 address that embeds one (IPv4-mapped, 6to4, Teredo, NAT64). The connection then
goes to the address that was checked, so a second DNS answer cannot swap it.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Callable, Iterable
from typing import Any

import httpcore
import httpx

from cdn_common.errors import Forbidden

IP = ipaddress.IPv4Address | ipaddress.IPv6Address
NAT64 = ipaddress.ip_network("64:ff9b::/96")


class ForbiddenAddress(Forbidden):
    message = "source address is not allowed"


def embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip.teredo is not None:
        return ip.teredo[1]
    if ip in NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def public_address(ip: IP) -> bool:
    """True only for globally routable unicast addresses."""
    if isinstance(ip, ipaddress.IPv6Address):
        inner = embedded_ipv4(ip)
        if inner is not None:
            return public_address(inner)
    return ip.is_global and not ip.is_multicast and not ip.is_unspecified


class GuardedBackend(httpcore.AsyncNetworkBackend):
    """httpcore's network backend with the address check between DNS and connect."""

    def __init__(self, allowed: Callable[[IP], bool] = public_address) -> None:
        self._inner = httpcore.AnyIOBackend()
        self._allowed = allowed

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's interface
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        loop = asyncio.get_running_loop()
        try:
            infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except socket.gaierror:
            raise httpcore.ConnectError(f"cannot resolve {host}") from None
        addresses = [ipaddress.ip_address(info[4][0]) for info in infos]
        if not addresses or not all(self._allowed(address) for address in addresses):
            raise ForbiddenAddress()
        return await self._inner.connect_tcp(
            str(addresses[0]), port, timeout, local_address, socket_options
        )

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's interface
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise ForbiddenAddress()

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


def guarded_transport(allowed: Callable[[IP], bool] = public_address) -> httpx.AsyncHTTPTransport:
    transport = httpx.AsyncHTTPTransport(retries=0)
    # httpx takes no backend argument; its pool does (httpcore.AsyncConnectionPool).
    transport._pool._network_backend = GuardedBackend(allowed)
    return transport
