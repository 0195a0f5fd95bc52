"""Call events from recorded AMI traffic (cti.calls.events), and the leader / standby
hand-over of the events the tracker makes (cti.calls.tracker, cti.calls.leadership),
without sockets.

The fingerprints are what make a hand-over between daemon instances lose nothing and
double nothing, so they are pinned here: two models fed the same capture give the same
fingerprints, and every distinct piece of news in a call has its own.
"""

from __future__ import annotations

from collections import Counter

import pytest
import redis.asyncio as redis

from cti.calls.events import LINKEDID_PREFIX, CallEvent, call_key, data_changed, to_events
from cti.calls.leadership import Leadership
from cti.calls.model import CallModel
from cti.calls.publisher import EventPublisher
from cti.calls.tracker import CallTracker
from tests.unit.ami_replay import fixture_names, load, parse, replay_fixture

NOW = 1_800_000_000.0


def events_of(name: str) -> list[CallEvent]:
    return [event for effect in replay_fixture(name).effects for event in to_events(effect, NOW)]


@pytest.mark.parametrize("name", fixture_names())
def test_fingerprints_are_the_same_on_every_instance_and_unique_per_call(name: str) -> None:
    first, second = events_of(name), events_of(name)
    assert [e.fingerprint for e in first] == [e.fingerprint for e in second]
    per_call = Counter((e.call_key, e.fingerprint) for e in first)
    assert max(per_call.values()) == 1, per_call.most_common(3)
    assert all(e.at != NOW for e in first), "live events carry Asterisk's own timestamp"


def test_answered_call_news_in_order() -> None:
    events = events_of("answered_call")
    kinds = [e.kind for e in events]
    assert kinds == ["queued", "ringing", "connected", "left", "ended"] or kinds == [
        "queued",
        "ringing",
        "connected",
        "ended",
        "left",
    ], kinds
    ringing = next(e for e in events if e.kind == "ringing")
    assert ringing.agent == "PJSIP/2001" and ringing.recipients == ("PJSIP/2001",)
    assert ringing.data["queue"] == "support"
    assert ringing.call_id and ringing.call_key == ringing.call_id
    ended = next(e for e in events if e.kind == "ended")
    assert ended.to_call_agents and ended.data["agents"] == ["PJSIP/2001"]
    assert ended.as_json()["event"] == "ended"


def test_blind_transfer_reaches_everyone_on_the_call() -> None:
    events = events_of("blind_transfer_ami")
    transfer = next(e for e in events if e.kind == "transferred")
    assert transfer.to_call_agents
    assert transfer.data["kind"] == "blind" and transfer.data["from"] == "PJSIP/2001"
    assert transfer.data["to"] == "2002"
    assert [e.agent for e in events if e.kind == "connected"] == ["PJSIP/2001", "PJSIP/2002"]


def test_call_without_call_id_is_keyed_by_namespaced_linkedid() -> None:
    assert call_key(None, "1795410950.10") == LINKEDID_PREFIX + "1795410950.10"
    assert call_key("", "1.2") == "L:1.2"
    assert call_key("c0ffee", "1.2") == "c0ffee"


def test_data_changed_is_one_event_per_version() -> None:
    a = data_changed("c1", "1.1", 3, "PJSIP/2001", NOW)
    assert a.fingerprint == data_changed("c1", "1.1", 3, "PJSIP/2002", NOW + 1).fingerprint
    assert a.fingerprint != data_changed("c1", "1.1", 4, "PJSIP/2001", NOW).fingerprint
    assert a.to_call_agents and a.as_json()["version"] == 3


# -- the tracker and the leadership: leader / standby --------------------------------------
class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> float:
        return self.now


class Node:
    """One instance's tracker and leadership, wired as cti.app.following wires them.
    Nothing here touches Redis: the lease changes are told by the test, and what the
    leader publishes is read from its outbox (whose task does not run)."""

    def __init__(self, clock: Clock, **kw: object) -> None:
        self.ended: list[str] = []
        unconnected = redis.Redis()  # never used: no lease or outbox task runs here
        self.leadership = Leadership(
            unconnected,
            EventPublisher(unconnected, ttl_s=600),
            "me",
            call_ended=self.ended.append,
            clock=clock,
            **kw,  # type: ignore[arg-type]
        )
        self.tracker = CallTracker(
            CallModel(),
            handover=self.leadership.take,
            on_connected=self.leadership.ami_connected,
            clock=clock,
        )
        self.apply = self.tracker.apply
        self.reset = self.tracker.reset
        self.connected = self.tracker.connected
        self.set_leader = self.leadership.set_leader
        self.keep_unpublished = self.leadership.keep_unpublished

    @property
    def leader(self) -> bool:
        return self.leadership.leader

    @property
    def standby_backlog(self) -> int:
        return self.leadership.standby_backlog

    def published(self) -> list[CallEvent]:
        """What went to the outbox so far, in order."""
        return list(self.leadership.outbox.pending)

    def forget_published(self) -> None:
        self.leadership.outbox.take_all()


def test_leader_publishes_at_once_and_standby_holds_back() -> None:
    clock = Clock()
    leader, standby = Node(clock), Node(clock)
    leader.set_leader(True)
    for msg in parse(load("answered_call")):
        leader.apply(msg)
        standby.apply(msg)
    published, ended, standby_published = leader.published(), leader.ended, standby.published()
    assert [e.kind for e in published][-1] in ("ended", "left")
    assert ended == [published[0].call_id]
    assert standby_published == [] and standby.standby_backlog == len(published)


def test_takeover_replays_the_window_so_nothing_is_lost() -> None:
    """The leader died halfway through the call: the standby takes over and publishes
    its window, which holds everything (the publisher skips what was already out)."""
    clock = Clock()
    standby = Node(clock)
    messages = parse(load("blind_transfer_ami"))
    half = len(messages) // 2
    for msg in messages[:half]:
        standby.apply(msg)
    standby.set_leader(True)
    for msg in messages[half:]:
        standby.apply(msg)
    reference = events_of("blind_transfer_ami")
    published = standby.published()
    assert [e.fingerprint for e in published] == [e.fingerprint for e in reference]


def test_window_drops_old_events_only() -> None:
    clock = Clock()
    standby = Node(clock, standby_window_s=60)
    messages = parse(load("answered_call"))
    for msg in messages[: len(messages) // 2]:
        standby.apply(msg)
    old = standby.standby_backlog
    clock.now += 61
    for msg in messages[len(messages) // 2 :]:
        standby.apply(msg)
    recent = standby.standby_backlog  # the old half is pruned as the new one arrives
    standby.set_leader(True)
    published = standby.published()
    assert old > 0 and recent > 0
    assert len(published) == recent and standby.standby_backlog == 0


def steady_events(node: Node, clock: Clock, *, seconds: int, per_second: int, start: int) -> int:
    """``per_second`` distinct events each second for ``seconds``; returns the next number."""
    n = start
    for _ in range(seconds):
        node.leadership.take(
            [
                data_changed(f"c{n + i}", f"1.{n + i}", 1, "PJSIP/2001", clock.now)
                for i in range(per_second)
            ]
        )
        n += per_second
        clock.now += 1
    return n


def test_standby_memory_is_bounded_by_the_window_not_by_the_rate() -> None:
    """Ten minutes at 200 events/s: what the standby holds stops growing after its
    two-minute window (it used to grow to the count cap) and takeover republishes
    exactly the window."""
    clock = Clock()
    standby = Node(clock, standby_window_s=120)
    held = []
    n = 0
    for _minute in range(10):
        n = steady_events(standby, clock, seconds=60, per_second=200, start=n)
        held.append(standby.standby_backlog)
    assert held[0] == 60 * 200
    assert held[1:] == [120 * 200] * 9, held  # the window and no more
    assert standby.leadership.standby_overflow == 0
    standby.set_leader(True)
    published = standby.published()
    assert [e.call_id for e in published] == [f"c{i}" for i in range(n - 120 * 200, n)]


def test_the_count_cap_is_a_backstop_for_a_flood() -> None:
    clock = Clock()
    standby = Node(clock, standby_window_s=120, standby_max=1_000)
    steady_events(standby, clock, seconds=3, per_second=600, start=0)
    assert standby.standby_backlog == 1_000
    assert standby.leadership.standby_overflow == 800
    standby.set_leader(True)
    assert [e.call_id for e in standby.published()] == [f"c{i}" for i in range(800, 1_800)]


def test_refused_events_stay_ahead_of_newer_ones_and_age_out_with_them() -> None:
    clock = Clock()
    node = Node(clock, standby_window_s=120)
    node.set_leader(True)
    steady_events(node, clock, seconds=1, per_second=2, start=0)
    refused = node.published()
    node.forget_published()
    node.set_leader(False)
    steady_events(node, clock, seconds=1, per_second=2, start=2)
    node.keep_unpublished(refused)
    assert node.standby_backlog == 4
    clock.now += 119
    assert node.standby_backlog == 4
    clock.now += 2
    assert node.standby_backlog == 0


def test_events_refused_by_the_lease_are_kept_for_the_next_leader() -> None:
    clock = Clock()
    node = Node(clock)
    node.set_leader(True)
    messages = parse(load("answered_call"))
    for msg in messages:
        node.apply(msg)
    refused = node.published()[-2:]
    node.keep_unpublished(refused)
    assert not node.leader and node.standby_backlog == 2
    node.forget_published()
    node.set_leader(True)
    published = node.published()
    assert published == refused


def test_a_call_gone_after_an_ami_reconnect_is_reported_ended() -> None:
    """Asterisk restarted while the agent talked: its snapshot has no channels. The call
    ends for everyone on it, once, instead of staying up on their screens forever."""
    clock = Clock()
    node = Node(clock)
    ended = node.ended
    node.set_leader(True)
    for msg in parse(load("answered_call")):
        node.apply(msg)
        if any(e.kind == "connected" for e in node.published()):
            break
    call_id = node.published()[-1].call_id
    node.reset()
    node.reset()  # a second reconnect before the first snapshot: still one catch-up
    node.connected(True)  # the (empty) snapshot has been applied
    published = node.published()
    (gone,) = [e for e in published if e.kind == "ended"]
    assert gone.call_id == call_id and gone.to_call_agents
    assert gone.data["agents"] == ["PJSIP/2001"] and "AMI" in gone.data["cause_txt"]
    assert ended == [call_id]
    node.connected(False)
    node.connected(True)  # reconnect without a reset: nothing made up
    published = node.published()
    assert [e.kind for e in published].count("ended") == 1
