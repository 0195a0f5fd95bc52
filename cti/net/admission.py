"""Who may open a connection, and how many: decided at accept, before any read.

One set of rules for every listening port (FastAGI, the sidebar's HTTP, the metrics
port): an optional allow list of networks, a cap per peer address (one host cannot take
every slot) and a cap over all addresses (what the descriptor table and the event loop
can carry). Plain Python and an injected clock: the accept loop calls it, so it never
blocks, and tests drive it with their own clock.

A flood of refused peers must not flood the log either (one flood once wrote 143,000
"too many connections" lines, 11,000 a second): :class:`RateLimitedLog` gives each
address at most one line a second, carrying the count since its previous line, and all
addresses together at most :data:`LOG_LINES_PER_SECOND`. The counters in
:attr:`Admission.refused` keep the exact totals for ``/metrics``.
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Callable, Iterable
from typing import Any, Literal

import structlog

log = structlog.get_logger(__name__)

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Reason = Literal["not_allowed", "per_address", "global"]
REASONS: tuple[Reason, ...] = ("not_allowed", "per_address", "global")

#: Loopback and the private ranges (RFC 1918, RFC 4193 unique local, IPv6 loopback).
PRIVATE_NETWORKS: tuple[Network, ...] = tuple(
    ipaddress.ip_network(net)
    for net in ("127.0.0.0/8", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7", "::1")
)
LOG_INTERVAL_S = 1.0
LOG_LINES_PER_SECOND = 20
#: Beyond this many addresses remembered for the log, the quiet ones are forgotten.
MAX_LOG_ADDRESSES = 4096
#: Allow-list verdicts remembered by address; beyond this many they are forgotten.
MAX_REMEMBERED_VERDICTS = 4096


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


class RateLimitedLog:
    """One warning line a second per address at most, with the count since the last.

    ``event`` is the line's message (``"agi connections refused"``), ``counted`` the
    name of the count's field; :meth:`note` takes the address and the line's other
    fields."""

    def __init__(
        self, event: str, counted: str, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.event = event
        self.counted = counted
        self._clock = clock
        self._logged: dict[str, tuple[float, int]] = {}  # address → (last line, since then)
        self._second = 0.0
        self._lines_this_second = 0

    def note(self, address: str, **fields: Any) -> None:
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
        # The count: since this address's previous line, this one included.
        log.warning(self.event, peer=address, **{self.counted: count}, **fields)

    def __len__(self) -> int:
        return len(self._logged)

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


class Admission:
    """Counts the connections per address; :meth:`admit` says yes or why not.

    ``allow`` None lets every address in (the caps still hold); ``name`` starts the log
    line (``"http connections refused"``)."""

    def __init__(
        self,
        *,
        name: str,
        max_per_address: int,
        max_connections: int,
        allow: tuple[Network, ...] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self.allow = allow
        self.max_per_address = max_per_address
        self.max_connections = max_connections
        self.refused: dict[str, int] = dict.fromkeys(REASONS, 0)  # by reason
        #: At the global cap, asked to free a slot at once for a newcomer from the given
        #: address (True: one was given back by :meth:`release`) before it is refused;
        #: the HTTP port closes an idle connection (cti.screenpop.connections).
        self.make_room: Callable[[str], bool] | None = None
        self.active = 0
        self._per_address: dict[str, int] = {}
        self.log = RateLimitedLog(f"{name} connections refused", "refused", clock)
        # A flood of strangers is judged thousands of times a second on the event loop
        # that routes the calls: the verdicts are remembered (parsing an address and
        # testing it against the networks took 5 µs) and the allow list's text is made
        # once (18 µs a refusal when it was made for each, though logged once a second).
        self._verdicts: dict[str, bool] = {}
        self._allow_text = ",".join(str(network) for network in allow or ())

    def allowed(self, address: str) -> bool:
        if self.allow is None:
            return True
        verdict = self._verdicts.get(address)
        if verdict is None:
            if len(self._verdicts) >= MAX_REMEMBERED_VERDICTS:
                self._verdicts.clear()  # bounded: IPv6 has plenty of addresses
            verdict = self._verdicts[address] = self._judge(address, self.allow)
        return verdict

    @staticmethod
    def _judge(address: str, allow: tuple[Network, ...]) -> bool:
        try:
            ip = ipaddress.ip_address(address.split("%", 1)[0])  # drop an IPv6 zone id
        except ValueError:
            return False  # not an IP peer at all (we only listen on TCP)
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped  # a dual-stack socket reports IPv4 peers as ::ffff:a.b.c.d
        return any(ip in network for network in allow)

    def admit(self, address: str) -> Reason | None:
        """None and a slot taken (give it back with :meth:`release`), or the refusal."""
        reason: Reason | None = None
        if not self.allowed(address):
            reason = "not_allowed"
        elif self._per_address.get(address, 0) >= self.max_per_address:
            reason = "per_address"
        elif self.active >= self.max_connections and not (
            self.make_room is not None and self.make_room(address)
        ):
            reason = "global"
        if reason is not None:
            self.refused[reason] += 1
            self.log.note(address, reason=reason, limit=self._limit(reason))
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

    def _limit(self, reason: Reason) -> object:
        if reason == "global":
            return self.max_connections
        if reason == "per_address":
            return self.max_per_address
        return self._allow_text


def _oldest(logged: dict[str, tuple[float, int]], n: int) -> Iterable[str]:
    return [a for a, _ in sorted(logged.items(), key=lambda item: item[1][0])[:n]]


#: Descriptors kept for all but the admitted connections: the database pool, Redis,
#: AMI, the listening sockets, the log, the files the sidebar serves, a margin.
RESERVED_DESCRIPTORS = 64
#: An HTTP connection may be a WebSocket, which reads Redis on a connection of its own.
DESCRIPTORS_PER_HTTP_CONNECTION = 2


def fit_caps(descriptors: int, agi: int | None, http: int | None) -> tuple[int | None, int | None]:
    """The connection caps lowered, if need be, so that a full house of FastAGI and HTTP
    connections cannot exhaust ``descriptors`` (RLIMIT_NOFILE): once the table is full,
    FastAGI's accept fails and calls are not routed. None: that port is not served here.

    Routing comes first: FastAGI keeps its cap up to half of what is left after the
    reserve, HTTP gets the rest (two descriptors a connection); a cap is never below 1.
    """
    budget = max(descriptors - RESERVED_DESCRIPTORS, 2)
    if agi is not None:
        agi = max(1, min(agi, budget // 2 if http is not None else budget))
        budget -= agi
    if http is not None:
        http = max(1, min(http, budget // DESCRIPTORS_PER_HTTP_CONNECTION))
    return agi, http
