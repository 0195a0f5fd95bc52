"""What the leader keeps of what it published, and how it decides Redis lost some of it
(cti.calls.recent), with an injected clock and no sockets.

What must hold: the window keeps the last ``window_s`` seconds of published events,
whatever the rate; a batch that finds the previous batch's mark proves everything
before it survived, any other finding (an older mark: a failover's replication window;
nothing: Redis came back empty) says the window must go out again, once.
"""

from __future__ import annotations

from cti.calls.events import CallEvent
from cti.calls.recent import PublishMarks, RecentlyPublished, mark_key

CALL = "6f1c1d1e-0000-4000-8000-0000000000a1"


def event(n: int) -> CallEvent:
    return CallEvent(
        kind="ringing",
        call_key=CALL,
        call_id=CALL,
        linkedid="1795410950.10",
        fingerprint=f"ringing|{n}",
        at=1795410950.5,
        agent="PJSIP/2001",
        recipients=("PJSIP/2001",),
    )


def fingerprints(pairs: list[tuple[float, CallEvent]]) -> list[str]:
    return [e.fingerprint for _at, e in pairs]


def test_the_window_keeps_what_went_out_in_the_last_seconds_only() -> None:
    window = RecentlyPublished(window_s=120)
    window.add(1000.0, [event(1), event(2)])
    window.add(1100.0, [event(3)])
    window.add(1121.0, [event(4)])  # 1000 is now 121 s old
    assert len(window) == 2
    taken = window.take(1200.0)
    assert fingerprints(taken) == ["ringing|3", "ringing|4"]
    assert [at for at, _e in taken] == [1100.0, 1121.0]
    assert len(window) == 0


def test_the_window_is_bounded_by_time_not_by_the_rate() -> None:
    window = RecentlyPublished(window_s=10)
    for second in range(100):
        window.add(float(second), [event(second * 1000 + i) for i in range(50)])
    assert len(window) == 11 * 50  # seconds 89..99
    assert window.overflow == 0


def test_the_count_cap_is_only_a_backstop() -> None:
    window = RecentlyPublished(window_s=120, max_events=5)
    window.add(0.0, [event(i) for i in range(8)])
    assert fingerprints(window.take(0.0)) == [f"ringing|{i}" for i in range(3, 8)]
    assert window.overflow == 3


def test_a_batch_that_finds_the_last_mark_vouches_for_everything_before() -> None:
    marks = PublishMarks("t")
    first = marks.next()
    assert marks.batch_went_in(first, None)  # nothing claimed yet: nothing to check
    second = marks.next()
    assert marks.batch_went_in(second, first)
    assert marks.still_there(second)
    assert marks.expected == second


def test_an_older_mark_means_the_last_batches_were_lost_in_a_failover() -> None:
    marks = PublishMarks("t")
    one, two, three = marks.next(), marks.next(), marks.next()
    marks.batch_went_in(one, None)
    marks.batch_went_in(two, one)
    # The promoted replica had `one` but not `two`: batch three finds `one`.
    assert not marks.batch_went_in(three, one)
    # Three went in on the new master: the claim goes on from it.
    assert marks.batch_went_in(marks.next(), three)


def test_no_mark_means_redis_came_back_empty() -> None:
    marks = PublishMarks("t")
    one = marks.next()
    marks.batch_went_in(one, None)
    assert not marks.still_there(None)
    # Found once: the window goes out once, not at every check until the next batch.
    assert marks.expected is None
    assert marks.still_there(None)
    assert marks.batch_went_in(marks.next(), None)


def test_a_new_lease_starts_a_new_claim() -> None:
    marks = PublishMarks("t")
    marks.batch_went_in(marks.next(), None)
    marks.forget()
    assert marks.still_there("someone else's")
    assert marks.batch_went_in(marks.next(), "anything")


def test_marks_are_unique_per_leader_and_kept_apart_per_lease() -> None:
    a, b = PublishMarks(), PublishMarks()
    assert a.next() != b.next()
    assert mark_key("cti:ami:leader", "h:1:x") != mark_key("cti:ami:leader:b", "h:1:x")
    assert mark_key("cti:ami:leader", "h:1:x") != mark_key("cti:ami:leader", "h:2:y")
