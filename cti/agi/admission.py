"""Who may open a FastAGI connection, and how many: decided at accept, before any read.

Asterisk sits on the same host or on a private network, so by default only loopback
and the private ranges are let in; anything else that reaches the port is refused at
once, without a byte read, so that it cannot hold one of the slots real calls need.
Within the allowed addresses, one address may hold at most ``max_per_address``
sessions, so that a single misbehaving host cannot take all ``max_connections``.

A flood of refused peers must not flood the log either (one flood once wrote 143,000
"too many connections" lines, 11,000 a second): each address gets at most one line a
second, carrying the count of refusals since its previous line, and all addresses
together at most :data:`LOG_LINES_PER_SECOND`. The counters in :attr:`refused` keep
the exact totals for ``/metrics``.
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Callable, Iterable
from typing import Literal

import structlog

log = structlog.get_logger(__name__)

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Reason = Literal["not_allowed", "per_address", "global"]
REASONS: tuple[Reason, ...] = ("not_allowed", "per_address", "global")

#: Loopback and the private ranges (RFC 1918, RFC 4193 unique local, IPv6 loopback).
DEFAULT_ALLOW: tuple[Network, ...] = tuple(
    ipaddress.ip_network(net)
    for net in ("127.0.0.0/8", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7", "::1")
)
DEFAULT_MAX_CONNECTIONS = 1000
#: Half the global cap: one host can never take every slot, so a second Asterisk (or the
#: same one, once its misbehaving twin is capped) still gets in; yet 500 sessions at
#: once from one Asterisk is 2,500 calls a second even at the 200 ms route budget.
DEFAULT_MAX_PER_ADDRESS = 500
LOG_INTERVAL_S = 1.0
LOG_LINES_PER_SECOND = 20
#: Beyond this many addresses remembered for the log, the quiet ones are forgotten.
MAX_LOG_ADDRESSES = 4096


def parse_networks(text: str) -> tuple[Network, ...]:
    """``"127.0.0.1, 10.0.0.0/8, fd00::/8"``: addresses or networks, comma-separated.

    A bare address is a network of one; host bits set in a network are refused
    (``10.1.2.3/8`` is more likely a typo than a wish), as is an empty entry.
    """
    networks = []
    for item in text.split(","):
        entry = item.strip()
        if not entry:
            raise ValueError("empty entry (two commas, or a trailing comma)")
        try:
            networks.append(ipaddress.ip_network(entry))
        except ValueError as exc:
            raise ValueError(f"{entry!r} is not an address or a network: {exc}") from None
    return tuple(networks)


class Admission:
    """Counts the sessions per address; :meth:`admit` says yes or why not.

    Plain Python and a clock: the server calls it from its accept callback, so it never
    blocks, and tests drive it with their own clock.
    """

    def __init__(
        self,
        allow: tuple[Network, ...] = DEFAULT_ALLOW,
        max_per_address: int = DEFAULT_MAX_PER_ADDRESS,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.allow = allow
        self.max_per_address = max_per_address
        self.max_connections = max_connections
        self.refused: dict[str, int] = dict.fromkeys(REASONS, 0)  # by reason
        self.active = 0
        self._per_address: dict[str, int] = {}
        self._clock = clock
        self._logged: dict[str, tuple[float, int]] = {}  # address → (last line, since then)
        self._second = 0.0
        self._lines_this_second = 0

    def allowed(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address.split("%", 1)[0])  # drop an IPv6 zone id
        except ValueError:
            return False  # not an IP peer at all (we only listen on TCP)
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped  # a dual-stack socket reports IPv4 peers as ::ffff:a.b.c.d
        return any(ip in network for network in self.allow)

    def admit(self, address: str) -> Reason | None:
        """None and a slot taken (give it back with :meth:`release`), or the refusal."""
        reason: Reason | None = None
        if not self.allowed(address):
            reason = "not_allowed"
        elif self.active >= self.max_connections:
            reason = "global"
        elif self._per_address.get(address, 0) >= self.max_per_address:
            reason = "per_address"
        if reason is not None:
            self.refused[reason] += 1
            self._log_refusal(address, reason)
            return reason
        self.active += 1
        self._per_address[address] = self._per_address.get(address, 0) + 1
        return None

    def release(self, address: str) -> None:
        self.active -= 1
        left = self._per_address[address] - 1
        if left:
            self._per_address[address] = left
        else:
            del self._per_address[address]

    def sessions_from(self, address: str) -> int:
        return self._per_address.get(address, 0)

    def _log_refusal(self, address: str, reason: Reason) -> None:
        now = self._clock()
        if address not in self._logged:
            self._forget_quiet(now)
        last, count = self._logged.get(address, (now - 2 * LOG_INTERVAL_S, 0))
        count += 1
        if now - self._second >= 1.0:
            self._second, self._lines_this_second = now, 0
        if now - last < LOG_INTERVAL_S or self._lines_this_second >= LOG_LINES_PER_SECOND:
            self._logged[address] = (last, count)  # told with this address's next line
            return
        self._lines_this_second += 1
        self._logged[address] = (now, 0)
        log.warning(
            "agi connections refused",
            peer=address,
            reason=reason,
            refused=count,  # since this address's previous line, this one included
            limit=self._limit(reason),
        )

    def _limit(self, reason: Reason) -> object:
        if reason == "global":
            return self.max_connections
        if reason == "per_address":
            return self.max_per_address
        return ",".join(str(network) for network in self.allow)

    def _forget_quiet(self, now: float) -> None:
        """Keep the log's memory bounded when many addresses knock (IPv6 has plenty)."""
        if len(self._logged) < MAX_LOG_ADDRESSES:
            return
        quiet = [a for a, (last, _) in self._logged.items() if now - last >= LOG_INTERVAL_S]
        for address in quiet:
            del self._logged[address]
        if len(self._logged) > MAX_LOG_ADDRESSES:  # all loud: forget the oldest half
            for address in _oldest(self._logged, len(self._logged) // 2):
                del self._logged[address]


def _oldest(logged: dict[str, tuple[float, int]], n: int) -> Iterable[str]:
    return [a for a, _ in sorted(logged.items(), key=lambda item: item[1][0])[:n]]
