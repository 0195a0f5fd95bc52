"""The AMI client (cti.ami.client) over real sockets against a fake Asterisk
(tests/fakes/ami_server.py): login, filters, resync before live events, reconnects
(rejected login, half-open connection, restart, sink overflow), garbage on the wire, a
slow sink, and a recorded call replayed through the client into the call model.

Pings are slow unless a test is about what a Ping finds; every wait is on a condition
(tests.waiting.until), never a sleep.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest
from structlog.testing import capture_logs

from cti.ami import (
    AmiActionError,
    AmiClient,
    AmiNotConnected,
    AmiTimeout,
    Message,
    event_filter,
)
from cti.backoff import Backoff
from cti.calls.model import CALL_CENTRE_EVENTS
from cti.calls.sink import CallModelSink
from tests.fakes.ami_server import FakeAmi, event
from tests.unit.ami_replay import (
    fixture_names,
    is_event_block,
    load,
    replay_fixture,
    split_blocks,
)
from tests.waiting import until

#: Pings for the tests of what a Ping finds (a half-open connection, a silent resync):
#: quick, yet a Pong has a whole second, far more than a loaded machine needs.
FAST = {"ping_interval": 0.1, "ping_timeout": 1.0, "connect_timeout": 10.0}
#: Every other test: no Ping can time out while a loaded machine runs the test, so a
#: connection drops only when the test makes it drop.
STEADY = {"ping_interval": 30.0, "ping_timeout": 30.0, "connect_timeout": 10.0}

CHANNEL = {
    "Channel": "PJSIP/trunk-00000001",
    "ChannelState": "6",
    "ChannelStateDesc": "Up",
    "CallerIDNum": "2120000001",
    "Context": "cti-queue",
    "Exten": "sales",
    "Priority": "2",
    "Uniqueid": "100.1",
    "Linkedid": "100.1",
    "Application": "Queue",
    "ApplicationData": "sales,,,,",
}
MEMBER = ("QueueMember", {"Queue": "sales", "Name": "Agent 2001", "Location": "PJSIP/2001"})


class RecordingSink:
    """Records what the client tells it, as (what, event name or flag) tuples. ``gate``
    (when set) holds every apply until it is set; ``delay_s`` makes each apply slow."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, object]] = []
        self.delay_s = 0.0
        self.gate: asyncio.Event | None = None

    def reset(self) -> None:
        self.calls.append(("reset", None))

    async def apply(self, msg: Message) -> None:
        if self.gate is not None:
            await self.gate.wait()
        if self.delay_s:
            await asyncio.sleep(self.delay_s)  # the slow consumer under test, not a sync
        self.calls.append(("apply", msg.get("Uniqueid") or msg.name))

    def connected(self, up: bool) -> None:
        self.calls.append(("connected", up))

    def applied(self) -> list[object]:
        return [value for what, value in self.calls if what == "apply"]

    def count(self, what: str, value: object = None) -> int:
        return sum(1 for call in self.calls if call == (what, value))

    def since_last_loss(self) -> list[tuple[str, object]]:
        """The calls from the last ``connected(False)`` on."""
        lost = len(self.calls) - 1 - self.calls[::-1].index(("connected", False))
        return self.calls[lost:]


@pytest.fixture
async def server() -> AsyncIterator[FakeAmi]:
    fake = await FakeAmi(channels=[CHANNEL], queue_status=[MEMBER]).start()
    yield fake
    await fake.close()
    assert not fake.unknown, f"unexpected actions: {fake.unknown}"


def client_for(server: FakeAmi, sink, secret: str = "s3cret", **kw) -> AmiClient:
    options = {
        **STEADY,
        "backoff": Backoff(initial=0.05, cap=0.2),
        "id_prefix": "t",
        "filters": (event_filter(CALL_CENTRE_EVENTS),),  # as cti/daemon.py passes them
        **kw,
    }
    return AmiClient("127.0.0.1", server.port, "cti", secret, events_sink=sink, **options)


@contextlib.asynccontextmanager
async def running(client: AmiClient) -> AsyncIterator[asyncio.Task[None]]:
    stop = asyncio.Event()
    task = asyncio.create_task(client.run(stop))
    try:
        yield task
    finally:
        stop.set()
        async with asyncio.timeout(5):
            await task


SNAPSHOT = [
    ("reset", None),
    ("apply", "100.1"),
    ("apply", "CoreShowChannelsComplete"),
    ("apply", "QueueMember"),
    ("apply", "QueueStatusComplete"),
    ("connected", True),
]


async def test_snapshot_then_held_events_then_live_events_in_order(server):
    # A live event that arrives while CoreShowChannels is being answered waits for the
    # snapshot; FullyBooted (sent right after Login) waits too.
    server.during_resync = event("Newchannel", Uniqueid="200.1", Linkedid="200.1")
    sink = RecordingSink()
    client = client_for(server, sink)
    async with running(client):
        await until(lambda: sink.count("connected", True))
        await server.push(event("Hangup", Uniqueid="200.1") + event("Newstate", Uniqueid="9"))
        await until(lambda: len(sink.calls) == len(SNAPSHOT) + 4)
        assert sink.calls == [
            *SNAPSHOT,
            ("apply", "FullyBooted"),
            ("apply", "200.1"),
            ("apply", "200.1"),
            ("apply", "9"),
        ]
        login = server.actions("Login")[0]
        assert (login["Username"], login["Secret"], login["Events"]) == ("cti", "s3cret", "on")
        filters = server.actions("Filter")
        assert filters and all(f["Operation"] == "Add" for f in filters)
        assert "Newchannel" in filters[0]["Filter"]

        pong = await client.action("Ping")
        assert pong["Ping"] == "Pong"
        queue = await client.list_action("QueueStatus")
        assert [m.name for m in queue] == ["QueueMember", "QueueStatusComplete"]
        with pytest.raises(AmiActionError) as err:
            await client.action("NoSuchAction")
        assert err.value.message["Message"] == "Invalid/unknown command"
        server.unknown.clear()
    assert sink.calls[-1] == ("connected", False)
    assert server.actions("Logoff"), "a clean stop logs off"
    with pytest.raises(AmiNotConnected):
        await client.action("Ping")


async def test_wrong_secret_is_logged_clearly_and_retried_with_backoff(server):
    sink = RecordingSink()
    client = client_for(server, sink, secret="wrong")
    with capture_logs() as logs:
        async with running(client) as task:
            await until(lambda: server.login_failures >= 3)
            assert not task.done()
            assert client.stats.logins == 0 and not sink.calls
            server.secret = "wrong"  # the operator fixes the secret (here: the server's)
            await until(lambda: sink.count("connected", True))
    assert client.stats.login_failures >= 3
    assert "check CTI_AMI_SECRET" in (client.stats.last_error or "")
    errors = [line for line in logs if line["log_level"] == "error"]
    assert errors and errors[0]["event"] == "AMI rejected user cti: check CTI_AMI_SECRET"


async def test_a_login_refused_while_asterisk_shuts_down_is_not_a_wrong_secret(server):
    """Asterisk refuses every Login while it stops: that is a lost connection, retried,
    not the configuration error "check CTI_AMI_SECRET"."""
    server.login_failure_message = "Asterisk is shutting down"
    client = client_for(server, RecordingSink(), secret="wrong")
    with capture_logs() as logs:
        async with running(client):
            await until(lambda: server.login_failures >= 2)
    assert client.stats.login_failures == 0
    assert "shutting down" in (client.stats.last_error or "")
    assert not [line for line in logs if "CTI_AMI_SECRET" in line["event"]]


async def test_a_rejected_login_is_not_a_tight_loop(server):
    server.login_failure_delay_s = 0.0
    client = client_for(server, RecordingSink(), secret="wrong", backoff=Backoff(0.2, cap=1))
    async with running(client):
        await until(lambda: server.login_failures >= 3)
        # Measured where the Logins arrived: a poll that noticed the first one late
        # would shorten the gap on a loaded machine.
        elapsed = server.login_failure_times[2] - server.login_failure_times[0]
    assert elapsed >= 0.2 * 0.8 + 0.4 * 0.8  # two backoff waits: 0.2 s, then 0.4 s, ±20 %


async def test_half_open_connection_is_noticed_by_ping_and_resynced(server):
    sink = RecordingSink()
    client = client_for(server, sink, **FAST)
    async with running(client):
        await until(lambda: sink.count("connected", True))
        loop = asyncio.get_running_loop()
        server.hang()  # the socket stays open; nothing is answered any more
        hung_at = loop.time()
        await until(lambda: sink.count("connected", False), within_s=10)
        noticed = loop.time() - hung_at
        assert noticed <= FAST["ping_interval"] + FAST["ping_timeout"] + 0.5  # loaded CI slack
        assert client.stats.ping_timeouts == 1
        await until(lambda: sink.count("connected", True) == 2)
        assert sink.since_last_loss()[: len(SNAPSHOT) + 1] == [("connected", False), *SNAPSHOT]
        assert len(server.sessions) == 2
        await server.push(event("Newstate", Uniqueid="after"))
        await until(lambda: sink.applied()[-1] == "after")


async def test_restart_reconnects_and_applies_the_new_snapshot_before_live_events(server):
    sink = RecordingSink()
    client = client_for(server, sink)
    async with running(client):
        await until(lambda: sink.count("connected", True))
        await server.close()
        await until(lambda: sink.count("connected", False))
        channel = {**CHANNEL, "Uniqueid": "300.1", "Linkedid": "300.1"}
        restarted = FakeAmi(port=server.port, channels=[channel], queue_status=[MEMBER])
        restarted.during_resync = event("Newstate", Uniqueid="300.1")
        await restarted.start()
        try:
            await until(lambda: sink.count("connected", True) == 2, within_s=15)
            await restarted.push(event("Hangup", Uniqueid="300.1"))
            await until(lambda: sink.applied()[-1:] == ["300.1"] and sink.count("reset") == 2)
            await until(lambda: len(sink.calls) - sink.calls.index(("connected", False)) == 10)
            second = sink.calls[sink.calls.index(("connected", False)) :]
            assert second == [
                ("connected", False),
                ("reset", None),
                ("apply", "300.1"),
                ("apply", "CoreShowChannelsComplete"),
                ("apply", "QueueMember"),
                ("apply", "QueueStatusComplete"),
                ("connected", True),
                ("apply", "FullyBooted"),
                ("apply", "300.1"),  # Newstate, held during the resync
                ("apply", "300.1"),  # Hangup, live
            ]
        finally:
            await restarted.close()


async def test_garbage_on_the_wire_is_skipped_and_the_connection_kept(server):
    sink = RecordingSink()
    client = client_for(server, sink)
    async with running(client):
        await until(lambda: sink.count("connected", True))
        garbage = (
            b"this is not a header\r\n\xff\xfe\x00 junk\r\n\r\n"
            + b"X" * (100 * 1024)  # an oversized line: dropped up to the next empty line
            + b"\r\n\r\n"
        )
        await server.push(garbage + event("Newstate", Uniqueid="still-here"))
        await until(lambda: "still-here" in sink.applied())
        assert client.stats.connects == 1 and client.is_connected
        conn = client._conn
        assert conn is not None and conn.parser.stats.oversized == 1
        assert conn.parser.stats.garbage_lines >= 1
        # An event may have been lost in the garbage: the state is rebuilt from a new
        # snapshot, on the same connection.
        await until(lambda: client.stats.damaged_resyncs >= 1)
        await until(lambda: sink.count("reset") >= 2 and sink.count("connected", True) >= 2)
        assert len(server.actions("CoreShowChannels")) >= 2 and client.stats.connects == 1


async def test_a_connection_that_hangs_during_a_resync_is_dropped_as_fast_as_by_ping(server):
    """No Pings go out while the snapshot is read: silence is the check, not the 30 s
    resync timeout (an e2e run froze the AMI socket right as a resync started)."""
    server.unanswered = {"CoreShowChannels"}
    sink = RecordingSink()
    client = client_for(server, sink, **FAST)
    async with running(client):
        loop = asyncio.get_running_loop()
        started = loop.time()
        await until(lambda: client.stats.connects >= 2, within_s=10)
        assert loop.time() - started <= FAST["ping_interval"] + FAST["ping_timeout"] + 1.5
        assert "during a resync" in (client.stats.last_error or "")
        server.unanswered = set()
        await until(lambda: sink.count("connected", True))


async def test_a_slow_sink_does_not_delay_pings(server):
    sink = RecordingSink()
    sink.delay_s = 0.05
    client = client_for(server, sink, **FAST)
    async with running(client):
        await until(lambda: sink.count("connected", True))
        await server.push(b"".join(event("Newstate", Uniqueid=f"e{i}") for i in range(200)))
        pongs = server.sessions[0].pongs
        # 200 events take the sink >= 10 s; meanwhile Pings keep being answered.
        await until(lambda: server.sessions[0].pongs >= pongs + 8, within_s=15)
        assert client.stats.connects == 1 and client.stats.ping_timeouts == 0
        assert client.backlog > 100
        sink.delay_s = 0.0
        await until(lambda: sink.applied()[-1:] == ["e199"])
    assert sink.applied()[-200:] == [f"e{i}" for i in range(200)]


async def test_overflowing_backlog_forces_a_resync_instead_of_dropping_events(server):
    sink = RecordingSink()
    client = client_for(server, sink, max_backlog=50)
    async with running(client):
        await until(lambda: sink.count("connected", True))
        sink.gate = asyncio.Event()  # the sink stops consuming
        await server.push(b"".join(event("Newstate", Uniqueid=f"e{i}") for i in range(100)))
        await until(lambda: client.stats.overflows == 1)
        await until(lambda: client.stats.resyncs == 2)
        sink.gate.set()
        await until(lambda: sink.count("connected", True) == 2)
        # Whatever of the old backlog the sink got before the overflow, what follows the
        # loss is a full resync: no event of the dropped backlog comes after it.
        assert sink.since_last_loss()[: len(SNAPSHOT) + 1] == [("connected", False), *SNAPSHOT]
        assert sink.count("connected", False) == 1


async def test_a_refused_filter_is_skipped_with_a_warning(server):
    server.filter_permitted = False
    sink = RecordingSink()
    client = client_for(server, sink)
    with capture_logs() as logs:
        async with running(client):
            await until(lambda: sink.count("connected", True))
            assert client.is_connected
    assert any(line["event"].startswith("ami filter refused") for line in logs)


async def test_a_refused_queue_status_still_resyncs_the_channels(server):
    server.queue_status_error = "Invalid/unknown command"
    sink = RecordingSink()
    client = client_for(server, sink)
    async with running(client):
        await until(lambda: sink.count("connected", True))
    assert sink.calls[:4] == [
        ("reset", None),
        ("apply", "100.1"),
        ("apply", "CoreShowChannelsComplete"),
        ("connected", True),
    ]


async def test_an_unanswered_action_times_out_cleanly(server):
    client = client_for(server, RecordingSink(), ping_interval=30)
    async with running(client):
        await until(lambda: client.is_connected)
        server.hang()
        with pytest.raises(AmiTimeout, match=r"no answer within 0\.1 s"):
            await client.action("Ping", timeout_s=0.1)
        assert client.is_connected  # one slow answer is not a lost connection


@pytest.mark.parametrize("fixture", fixture_names())
async def test_a_recorded_call_through_the_client_gives_the_same_effects(fixture):
    _, blocks = split_blocks(load(fixture))
    events = b"".join(block for block in blocks if is_event_block(block))
    expected = replay_fixture(fixture).effects
    assert expected

    server = await FakeAmi().start()  # empty snapshot: the call starts after connecting
    sink = CallModelSink()
    client = client_for(server, sink)
    try:
        async with running(client):
            await until(lambda: sink.up)
            for start in range(0, len(events), 777):  # cut anywhere, even mid-character
                await server.push(events[start : start + 777])
            await until(lambda: len(sink.effects) >= len(expected))
            await until(lambda: client.backlog == 0)
    finally:
        await server.close()
    assert sink.effects == expected
    assert not server.unknown
