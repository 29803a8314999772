"""Per-client budgets on what costs the node: misses (transforms and fetches).

A token bucket per client (`EDGE_CLIENT_MISS_RATE` tokens a second, up to
`EDGE_CLIENT_MISS_BURST`): a page's first load spends from the burst, a client asking
for random widths runs dry and gets 429 with `Retry-After` until its bucket refills.
Hits never spend. Buckets are kept for the most recent `CLIENTS` clients only, so a
flood of spoofed or rotating addresses costs bounded memory (a forgotten client starts
again with a full bucket, which is as much as a new one gets).

The client is the socket peer; `X-Forwarded-For` names it only when the peer is one of
`EDGE_TRUSTED_PROXIES`, and then the rightmost address not itself a trusted proxy is
the client (the leftmost entries are whatever the client chose to send).
"""

from __future__ import annotations

import ipaddress
import math

from cachetools import LRUCache

from cdn_common.errors import TooManyRequests
from edge.clock import Clock

CLIENTS = 100_000  # buckets kept (about 150 bytes each)
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class MissBudget:
    def __init__(self, rate: float, burst: int, clock: Clock) -> None:
        self.rate = rate
        self.burst = float(burst)
        self.clock = clock
        self._buckets: LRUCache[str, tuple[float, float]] = LRUCache(CLIENTS)  # tokens, when
        self.refused = 0

    @property
    def enabled(self) -> bool:
        return self.rate > 0

    @property
    def clients(self) -> int:
        return len(self._buckets)

    def spend(self, client: str) -> None:
        """Take one token for `client`, or raise 429 with the seconds until one is back."""
        if not self.enabled:
            return
        now = self.clock()
        tokens, then = self._buckets.get(client, (self.burst, now))
        tokens = min(self.burst, tokens + (now - then) * self.rate)
        if tokens < 1:
            self._buckets[client] = (tokens, now)
            self.refused += 1
            raise TooManyRequests(retry_after=max(1, math.ceil((1 - tokens) / self.rate)))
        self._buckets[client] = (tokens - 1, now)


class ClientAddress:
    """Who a request comes from, given which peers are trusted proxies."""

    def __init__(self, trusted: tuple[str, ...]) -> None:
        self.trusted: tuple[Network, ...] = tuple(
            ipaddress.ip_network(cidr, strict=False) for cidr in trusted
        )

    def is_trusted(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address.strip().strip("[]"))
        except ValueError:
            return False
        return any(ip in network for network in self.trusted)

    def of(self, peer: str, forwarded_for: bytes | None) -> str:
        if not self.trusted or forwarded_for is None or not self.is_trusted(peer):
            return peer
        hops = [hop.strip() for hop in forwarded_for.decode("latin-1").split(",")]
        for hop in reversed(hops):
            if not hop:
                continue
            if not self.is_trusted(hop):
                try:
                    return str(ipaddress.ip_address(hop.strip("[]")))
                except ValueError:
                    return peer  # garbage where the client should be: the proxy answers
        return peer
