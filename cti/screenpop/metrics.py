"""Prometheus metrics, in a registry of our own.

Our own registry rather than prometheus_client's global one: tests build many apps and
daemons in one process, and the global registry refuses a metric name registered
twice; it also keeps the process collectors out unless we ask for them.

Counters owned elsewhere (the AMI client's event count, the lease, the record writers'
figures) are read when scraped rather than copied on every event, so the AMI reader
and the writers pay nothing for them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from cti.pbx import DEFAULT_PBX

if TYPE_CHECKING:
    from cti.batch_writer import WriterStats
    from cti.breaker import BreakerState
    from cti.router import RouteOutcome

#: The attach outcomes (cti.routing.attach.AttachOutcome's values).
ATTACH_OUTCOMES = ("attached", "no_id", "untrusted", "malformed", "unknown", "unverified")

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

#: Route decisions: the budget is 200 ms, the usual decision a few ms.
DECISION_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.5, 1.0)
#: AgentCalled → screen pop on the agent's socket.
POP_BUCKETS = (0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0)


class AmiSource:
    """Where the AMI figures come from when scraped: callables, so that a process
    without AMI (or without the lease) reports zeros instead of leaving metrics out."""

    def __init__(
        self,
        connected: Callable[[], bool] = lambda: False,
        events: Callable[[], int] = lambda: 0,
        leader: Callable[[], bool] = lambda: False,
        standby_window: Callable[[], int] = lambda: 0,
        standby_overflow: Callable[[], int] = lambda: 0,
        lease_changes: Callable[[], int] = lambda: 0,
    ) -> None:
        self.lease_changes = lease_changes
        self.connected = connected
        self.events = events
        self.leader = leader
        self.standby_window = standby_window
        self.standby_overflow = standby_overflow


class _AmiCollector(Collector):
    """Each PBX's AMI figures, labelled ``pbx`` (``default`` without ``CTI_PBXES``; a
    process that follows no PBX reports that one with zeros)."""

    def __init__(self, sources: Callable[[], Mapping[str, AmiSource]]) -> None:
        self._sources = sources

    def collect(self) -> Iterator[Metric]:
        sources = self._sources() or {DEFAULT_PBX: AmiSource()}
        connected = GaugeMetricFamily(
            "cti_ami_connected", "1 while logged in to the PBX's AMI and resynced", labels=["pbx"]
        )
        events = CounterMetricFamily(
            "cti_ami_events", "Live AMI events read from the PBX", labels=["pbx"]
        )
        leader = GaugeMetricFamily(
            "cti_ami_leader",
            "1 while this instance holds the PBX's lease (publishes its call events)",
            labels=["pbx"],
        )
        window = GaugeMetricFamily(
            "cti_standby_window_events",
            "The PBX's call events a standby holds for a takeover (its window of recent events)",
            labels=["pbx"],
        )
        overflow = CounterMetricFamily(
            "cti_standby_overflow_events",
            "Events dropped from the PBX's standby window by its count cap before their time",
            labels=["pbx"],
        )
        changes = CounterMetricFamily(
            "cti_ami_lease_changes",
            "Times this instance took or gave up the PBX's lease (a handover, spreading the "
            "leases over the instances, a death: each shows as one change here and one on "
            "the other instance)",
            labels=["pbx"],
        )
        for pbx, source in sources.items():
            changes.add_metric([pbx], source.lease_changes())
            connected.add_metric([pbx], 1 if source.connected() else 0)
            events.add_metric([pbx], source.events())
            leader.add_metric([pbx], 1 if source.leader() else 0)
            window.add_metric([pbx], source.standby_window())
            overflow.add_metric([pbx], source.standby_overflow())
        yield from (connected, events, leader, window, overflow, changes)


class _WriterCollector(Collector):
    """The record writers' figures (:class:`cti.batch_writer.WriterStats`), by writer."""

    def __init__(self, writers: Callable[[], Sequence[WriterStats]]) -> None:
        self._writers = writers

    def collect(self) -> Iterator[Metric]:
        writers = self._writers()
        now = time.time()
        families: dict[str, GaugeMetricFamily | CounterMetricFamily] = {
            "backlog": GaugeMetricFamily(
                "cti_writer_backlog", "Records accepted and not yet written", labels=["writer"]
            ),
            "oldest": GaugeMetricFamily(
                "cti_writer_oldest_unwritten_seconds",
                "Age of the oldest record not yet written (0: none waiting)",
                labels=["writer"],
            ),
            "held": GaugeMetricFamily(
                "cti_writer_dead_letters_held",
                "Refused records whose dead letter could not be stored yet (kept in memory)",
                labels=["writer"],
            ),
            "written": CounterMetricFamily(
                "cti_writer_written", "Records written", labels=["writer"]
            ),
            "dead_lettered": CounterMetricFamily(
                "cti_writer_dead_lettered",
                "Records the store refused for good, set aside in the dead letters",
                labels=["writer"],
            ),
            "retries": CounterMetricFamily(
                "cti_writer_retries",
                "Batch writes that failed (store away) and were retried",
                labels=["writer"],
            ),
            "dropped": CounterMetricFamily(
                "cti_writer_dropped",
                "Records lost: queue full, or too many dead letters held",
                labels=["writer"],
            ),
        }
        for stats in writers:
            label = [stats.writer]
            families["backlog"].add_metric(label, stats.backlog)
            families["oldest"].add_metric(label, stats.oldest_age_s(now))
            families["held"].add_metric(label, stats.held)
            families["written"].add_metric(label, stats.written)
            families["dead_lettered"].add_metric(label, stats.dead_lettered)
            families["retries"].add_metric(label, stats.retries)
            families["dropped"].add_metric(label, stats.dropped)
        yield from families.values()


class _AgiCollector(Collector):
    """FastAGI connections refused at accept, by reason (cti.agi.admission); read when
    scraped. Every reason is reported, zero included, so alerts need no absent()."""

    REASONS = ("not_allowed", "per_address", "global")

    def __init__(self, source: Callable[[], Callable[[], Mapping[str, int]]]) -> None:
        self._source = source

    def collect(self) -> Iterator[Metric]:
        refused = self._source()()
        family = CounterMetricFamily(
            "cti_agi_refused", "FastAGI connections refused at accept, by reason", labels=["reason"]
        )
        for reason in self.REASONS:
            family.add_metric([reason], refused.get(reason, 0))
        yield family


class HttpPortSource:
    """One HTTP port's admission figures, read when scraped (cti.screenpop.connections)."""

    def __init__(
        self,
        refused: Callable[[], Mapping[str, int]],
        header_timeouts: Callable[[], int],
        active: Callable[[], int],
        evicted: Callable[[], int] = lambda: 0,
    ) -> None:
        self.refused = refused
        self.header_timeouts = header_timeouts
        self.evicted = evicted
        self.active = active


class _HttpCollector(Collector):
    """Each HTTP port's connections: refused at accept by reason, closed for a request
    not received within the header deadline, open now. Zeros included."""

    def __init__(self, ports: Callable[[], Mapping[str, HttpPortSource]]) -> None:
        self._ports = ports

    def collect(self) -> Iterator[Metric]:
        refused = CounterMetricFamily(
            "cti_http_refused",
            "HTTP connections refused at accept, by port and reason (per_address, global)",
            labels=["port", "reason"],
        )
        timeouts = CounterMetricFamily(
            "cti_http_header_timeouts",
            "HTTP connections closed: no complete request within the header deadline",
            labels=["port"],
        )
        evicted = CounterMetricFamily(
            "cti_http_evicted",
            "Idle HTTP connections closed to admit a new one at the global cap",
            labels=["port"],
        )
        active = GaugeMetricFamily(
            "cti_http_connections", "HTTP connections open now", labels=["port"]
        )
        for name, source in self._ports().items():
            counts = source.refused()
            for reason in ("per_address", "global"):
                refused.add_metric([name, reason], counts.get(reason, 0))
            timeouts.add_metric([name], source.header_timeouts())
            evicted.add_metric([name], source.evicted())
            active.add_metric([name], source.active())
        yield from (refused, timeouts, evicted, active)


class LoginQueueSource:
    """The password-check queue (cti.screenpop.password_checks.PasswordChecks)."""

    def __init__(self, waiting: Callable[[], int], refused: Callable[[], int]) -> None:
        self.waiting = waiting
        self.refused = refused


class _LoginQueueCollector(Collector):
    def __init__(self, source: Callable[[], LoginQueueSource | None]) -> None:
        self._source = source

    def collect(self) -> Iterator[Metric]:
        source = self._source()
        yield GaugeMetricFamily(
            "cti_password_checks_in_queue",
            "Logins holding a place in the password-check queue (waiting or checking)",
            value=source.waiting() if source is not None else 0,
        )
        yield CounterMetricFamily(
            "cti_password_checks_refused",
            "Logins refused at once (503 busy): the password-check queue was full",
            value=source.refused() if source is not None else 0,
        )


class _BreakerCollector(Collector):
    """The customer lookup's circuit breaker, one series per state (1 for the current)."""

    STATES = ("closed", "open", "half-open")

    def __init__(self, state: Callable[[], BreakerState | None]) -> None:
        self._state = state

    def collect(self) -> Iterator[Metric]:
        state = self._state()
        current = "closed" if state is None else state.value
        family = GaugeMetricFamily(
            "cti_lookup_breaker_state",
            "Customer lookup circuit breaker: 1 for its current state (open: calls fail "
            "open without a lookup; half-open: a probe of the database in flight)",
            labels=["state"],
        )
        for name in self.STATES:
            family.add_metric([name], 1 if name == current else 0)
        yield family


class _WallboardCollector(Collector):
    """The wallboard's figures per queue, from the web process's copy of the snapshot
    (cti.screenpop.wallboard): the numbers a Grafana user needs without our page."""

    STATES = ("available", "ringing", "on_call", "on_hold", "wrap_up", "paused")

    def __init__(self, snapshot: Callable[[], Mapping[str, Any] | None]) -> None:
        self._snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        snapshot = self._snapshot() or {}
        queues = snapshot.get("queues") or {}
        now = time.time()
        waiting = GaugeMetricFamily(
            "cti_wallboard_waiting", "Callers waiting in the queue now", labels=["queue"]
        )
        longest = GaugeMetricFamily(
            "cti_wallboard_longest_wait_seconds",
            "How long the queue's longest-waiting caller has waited (0: nobody waits)",
            labels=["queue"],
        )
        agents = GaugeMetricFamily(
            "cti_wallboard_agents", "The queue's members by state", labels=["queue", "state"]
        )
        level = GaugeMetricFamily(
            "cti_wallboard_service_level",
            "Answered within the queue's threshold / (answered + abandoned after the "
            "short-abandon threshold); absent while that is zero",
            labels=["queue", "period"],
        )
        for name, queue in queues.items():
            waiting.add_metric([name], queue.get("waiting", 0))
            since = queue.get("oldest_wait_since")
            longest.add_metric([name], max(0.0, now - since) if since is not None else 0.0)
            for state in self.STATES:
                agents.add_metric([name, state], queue.get("agents", {}).get(state, 0))
            for period in ("today", "rolling_30m"):
                value = (queue.get(period) or {}).get("service_level")
                if value is not None:
                    level.add_metric([name, period], value)
        yield from (waiting, longest, agents, level)


class Metrics:
    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock  # wall time: pop latency counts from Asterisk's event stamp
        self.registry = CollectorRegistry(auto_describe=True)
        self.routes = Counter(
            "cti_routes",
            "Calls routed, by route taken and fail-open reason ('no': decided by the rules)",
            ["route", "fail_open"],
            registry=self.registry,
        )
        self.route_decision = Histogram(
            "cti_route_decision_seconds",
            "Time from the route request to the decision (customer lookup included)",
            buckets=DECISION_BUCKETS,
            registry=self.registry,
        )
        self.attaches = Counter(
            "cti_attach",
            "FastAGI attach requests (calls from another of our PBXes), by outcome: "
            "'attached' kept its call id; any other was routed as a new call",
            ["outcome"],
            registry=self.registry,
        )
        for outcome in ATTACH_OUTCOMES:  # every outcome reported, zero included
            self.attaches.labels(outcome=outcome)
        self.pops = Counter(
            "cti_pops", "Ringing events sent live to the ringing agent's sidebar",
            registry=self.registry,
        )  # fmt: skip
        self.pop_latency = Histogram(
            "cti_pop_latency_seconds",
            "From the AgentCalled timestamp to the ringing frame sent to the agent",
            buckets=POP_BUCKETS,
            registry=self.registry,
        )
        self.resyncs = Counter(
            "cti_websocket_resyncs",
            "Sockets whose resume point was gone (trimmed by the retention, or Redis reset) "
            "and were sent a snapshot instead",
            ["reason"],
            registry=self.registry,
        )
        self.websocket_clients = Gauge(
            "cti_websocket_clients", "Open sidebar WebSockets", registry=self.registry
        )
        self._ami: dict[str, AmiSource] = {}
        self.registry.register(_AmiCollector(lambda: self._ami))
        #: The record writers' figures, read when scraped and by ``/readyz``.
        self.writers: Sequence[WriterStats] = ()
        self.registry.register(_WriterCollector(lambda: self.writers))
        self._agi_refused: Callable[[], Mapping[str, int]] = dict
        self.registry.register(_AgiCollector(lambda: self._agi_refused))
        self._breaker_state: Callable[[], BreakerState | None] = lambda: None
        self.registry.register(_BreakerCollector(lambda: self._breaker_state()))
        self._wallboard: Callable[[], Mapping[str, Any] | None] = lambda: None
        self.registry.register(_WallboardCollector(lambda: self._wallboard()))
        self.wallboard_clients = Gauge(
            "cti_wallboard_clients", "Open wallboard WebSockets", registry=self.registry
        )
        self.login_throttled = Counter(
            "cti_login_throttled",
            "Logins refused with 429: too many failures for the user name or the address",
            registry=self.registry,
        )
        self._http_ports: dict[str, HttpPortSource] = {}
        self.registry.register(_HttpCollector(lambda: self._http_ports))
        self._login_queue: LoginQueueSource | None = None
        self.registry.register(_LoginQueueCollector(lambda: self._login_queue))

    def watch_ami(self, source: AmiSource, pbx: str = DEFAULT_PBX) -> None:
        """Report this PBX's AMI figures (labelled ``pbx``)."""
        self._ami[pbx] = source

    def watch_breaker(self, state: Callable[[], BreakerState]) -> None:
        """Report the lookup breaker's state (:class:`cti.breaker.CircuitBreaker`)."""
        self._breaker_state = state

    def watch_writers(self, writers: Sequence[WriterStats]) -> None:
        """Report these writers (their :attr:`cti.batch_writer.BatchWriter.stats`)."""
        self.writers = tuple(writers)

    def watch_wallboard(self, snapshot: Callable[[], Mapping[str, Any] | None]) -> None:
        """Where the wallboard's figures come from (cti.screenpop.wallboard's relay)."""
        self._wallboard = snapshot

    def watch_agi(self, refused: Callable[[], Mapping[str, int]]) -> None:
        """Where the FastAGI refusal counts come from (cti.agi.admission.Admission.refused)."""
        self._agi_refused = refused

    def watch_http(self, port: str, source: HttpPortSource) -> None:
        """Report an HTTP port's admission (``port``: sidebar, metrics)."""
        self._http_ports[port] = source

    def watch_login_queue(self, source: LoginQueueSource) -> None:
        self._login_queue = source

    def observe_route(self, outcome: RouteOutcome) -> None:
        """The router's hook, called once per routed call: must not raise, and does not."""
        self.routes.labels(
            route=outcome.decision.route.value, fail_open=outcome.fail_open_reason or "no"
        ).inc()
        self.route_decision.observe(outcome.decision_us / 1_000_000)

    def observe_attach(self, outcome: str) -> None:
        """The attach service's hook, once per attach request: must not raise."""
        self.attaches.labels(outcome=str(outcome)).inc()

    def observe_pop(self, latency_s: float) -> None:
        self.pops.inc()
        self.pop_latency.observe(max(latency_s, 0.0))

    def observe_pop_since(self, at: float) -> None:
        """A pop of an event stamped ``at`` (epoch seconds), sent now."""
        self.observe_pop(self._clock() - at)

    def render(self) -> bytes:
        return generate_latest(self.registry)
