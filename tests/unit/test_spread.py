"""The leases spread over the instances (cti.calls.spread), driven turn by turn.

A small world stands in for Redis: one owner per PBX lease (``SET NX``: the first
taker wins), the announcements every instance read on its last turn, one clock. Each
round every live instance reads the others, then every one of its leases asks the rule
and does what it says; the clock moves on one renewal interval.
"""

from __future__ import annotations

import itertools
import random
from collections import Counter

import pytest

from cti.calls.spread import Peer, SpreadRule, Verdict

TTL = 5.0
RENEW = 1.0
PBXES = ("a", "b", "c", "d")


class World:
    def __init__(self, pbxes=PBXES, *, seed: int = 0) -> None:
        self.now = 0.0
        self.pbxes = pbxes
        self.leader: dict[str, str | None] = dict.fromkeys(pbxes)
        self.rules: dict[str, SpreadRule] = {}
        self.reach: dict[str, set[str]] = {}
        self.announced: dict[str, Peer] = {}
        self.random = random.Random(seed)
        self.changes = 0

    def join(self, owner: str, reach=None) -> SpreadRule:
        rule = SpreadRule(owner, ttl_s=TTL, clock=lambda: self.now, settle_views=3)
        self.rules[owner] = rule
        self.reach[owner] = set(self.pbxes if reach is None else reach)
        return rule

    def crash(self, owner: str) -> None:
        """Gone without a word: its leases and its announcement expire after a TTL."""
        del self.rules[owner]
        self.leader = {pbx: None if who == owner else who for pbx, who in self.leader.items()}
        self.announced.pop(owner, None)

    def round(self, *, shuffle: bool = False) -> None:
        owners = list(self.rules)
        if shuffle:
            self.random.shuffle(owners)
        for owner in owners:
            rule = self.rules[owner]
            self.announced[owner] = rule.me()
            rule.see(self.announced.values())
            pbxes = list(self.pbxes)
            if shuffle:
                self.random.shuffle(pbxes)
            for pbx in pbxes:
                self.turn(owner, rule, pbx)
        self.now += RENEW

    def turn(self, owner: str, rule: SpreadRule, pbx: str) -> None:
        held = self.leader[pbx] == owner
        rule.local(pbx, eligible=pbx in self.reach[owner], held=held)
        if pbx not in self.reach[owner]:
            return
        verdict = rule.decide(pbx)
        if verdict is Verdict.TAKE and self.leader[pbx] is None:
            self.leader[pbx] = owner
            rule.held(pbx, True)
            self.changes += 1
        elif verdict is Verdict.TAKE:
            rule.held(pbx, False)  # SET NX refused: someone else holds it
        elif verdict is Verdict.HAND_OVER:
            self.leader[pbx] = None
            rule.handed_over(pbx)
            self.changes += 1

    def loads(self) -> list[int]:
        counts = Counter(who for who in self.leader.values() if who is not None)
        return sorted((counts[owner] for owner in self.rules), reverse=True)

    def handovers(self) -> int:
        return sum(rule.handovers for rule in self.rules.values())

    def unled(self) -> list[str]:
        return [pbx for pbx, who in self.leader.items() if who is None]

    def run(self, rounds: int, **kw: bool) -> None:
        for _ in range(rounds):
            self.round(**kw)


def test_three_instances_started_together_split_four_pbxes_two_one_one():
    world = World()
    for owner in ("i1", "i2", "i3"):
        world.join(owner)
    world.run(4)  # settling (three views), then the lightest take one each
    assert not world.unled()
    world.run(20)
    assert world.loads() == [2, 1, 1]
    assert world.handovers() == 0  # they saw each other before taking: nothing to move


def test_an_instance_alone_takes_every_pbx_and_gives_some_up_as_others_join():
    world = World()
    world.join("i1")
    world.run(3)
    assert world.loads() == [4]
    world.join("i2")
    world.run(3 * int(TTL))
    assert world.loads() == [2, 2] and world.handovers() == 2
    world.join("i3")  # joins later: one lease is handed over to it, and only one
    world.run(4 * int(TTL))
    assert world.loads() == [2, 1, 1] and world.handovers() == 3
    assert world.rules["i3"].me().holds


def test_handovers_are_one_per_ttl_and_never_leave_a_pbx_unled_for_long():
    pbxes = tuple("abcdefgh")
    world = World(pbxes)
    world.join("i1", pbxes)
    world.run(2)
    world.join("i2", pbxes)
    unled_turns: Counter[str] = Counter()
    handed_at: list[float] = []
    for _ in range(60):
        before = world.handovers()
        world.round()
        if world.handovers() > before:
            handed_at.append(world.now)
        for pbx in world.unled():
            unled_turns[pbx] += 1
    assert world.loads() == [4, 4] and world.handovers() == 4
    gaps = [later - earlier for earlier, later in itertools.pairwise(handed_at)]
    assert all(gap >= TTL for gap in gaps)
    # Handed over at the end of one turn, taken by the lighter instance on the next.
    assert max(unled_turns.values()) <= 1


def test_an_instance_that_cannot_reach_a_pbx_never_takes_it():
    world = World()
    world.join("i1", reach=("a", "b", "c"))
    world.join("i2", reach=("a", "b", "c"))
    world.join("i3", reach=("a", "b", "c", "d"))
    world.run(40)
    assert world.leader["d"] == "i3"
    assert not world.unled() and world.loads() == [2, 1, 1]
    world.crash("i3")  # d is now out of everyone's reach: unled, and nobody pretends
    world.run(40)
    assert world.unled() == ["d"] and world.loads() == [2, 1]


def test_a_pbx_only_one_instance_reaches_is_led_by_it_even_over_its_share():
    world = World()
    world.join("i1")  # reaches all four
    world.join("i2", reach=("a",))
    world.join("i3", reach=("a",))
    world.run(40)
    assert {world.leader[pbx] for pbx in "bcd"} == {"i1"}
    assert world.leader["a"] in ("i2", "i3")
    assert world.loads() == [3, 1, 0]  # i1 is over the share, but nobody else can


def test_only_reachable_pbxes_are_handed_over():
    world = World()
    world.join("i1")
    world.run(3)
    assert world.loads() == [4]
    world.join("i2", reach=("d",))
    world.run(20)
    assert world.leader["d"] == "i2" and world.handovers() == 1


def test_no_flapping_over_many_turns_in_any_order():
    """Seven PBXes, three instances, every turn in a different order: they settle at
    3/2/2 with few moves, and then nothing moves any more."""
    for seed in range(10):
        world = World(tuple("abcdefg"), seed=seed)
        for owner in ("i1", "i2", "i3"):
            world.join(owner)
        world.run(30, shuffle=True)
        assert world.loads() == [3, 2, 2] and world.handovers() <= 2, seed
        settled = world.changes
        world.run(300, shuffle=True)
        assert world.changes == settled and not world.unled(), seed


def test_a_leader_that_dies_is_replaced_by_the_least_loaded():
    world = World()
    for owner in ("i1", "i2", "i3"):
        world.join(owner)
    world.run(20)
    heavy = next(owner for owner, rule in world.rules.items() if len(rule.me().holds) == 2)
    world.crash(heavy)
    world.run(1)
    assert not world.unled()
    assert world.loads() == [2, 2]


def test_waiting_for_a_lighter_instance_lasts_less_than_a_ttl():
    """A peer that still looks alive and lighter but never takes: after the patience
    (half a TTL) this instance takes the PBX itself."""
    now = [0.0]
    rule = SpreadRule("me", ttl_s=TTL, clock=lambda: now[0])
    rule.local("a", eligible=True, held=True)
    rule.local("b", eligible=True, held=False)
    rule.see([Peer("asleep", frozenset("ab"))])
    waited = 0.0
    while rule.decide("b") is Verdict.WAIT:
        now[0] += 0.5
        waited += 0.5
        rule.see([Peer("asleep", frozenset("ab"))])
    assert 0 < waited <= TTL / 2


def test_a_pbx_held_by_another_instance_is_left_alone():
    now = [0.0]
    rule = SpreadRule("me", ttl_s=TTL, clock=lambda: now[0])
    rule.local("a", eligible=True, held=False)
    for _ in range(20):
        rule.see([Peer("other", frozenset("a"), frozenset("a"))])
        assert rule.decide("a") is Verdict.WAIT
        now[0] += 1


def test_without_a_recent_view_the_lease_behaves_as_before():
    """Redis unreachable for a TTL: take when possible, keep what is held."""
    now = [0.0]
    rule = SpreadRule("me", ttl_s=TTL, clock=lambda: now[0])
    rule.local("a", eligible=True, held=False)
    assert rule.decide("a") is Verdict.TAKE  # never saw anyone
    rule.local("b", eligible=True, held=True)
    rule.local("c", eligible=True, held=True)
    rule.see([Peer("other", frozenset("abc"), frozenset())])
    assert rule.decide("a") is Verdict.WAIT
    now[0] += TTL + 0.1
    assert rule.decide("a") is Verdict.TAKE
    assert rule.decide("b") is Verdict.KEEP and rule.decide("c") is Verdict.KEEP


@pytest.mark.parametrize(("mine", "theirs", "verdict"), [(2, 1, Verdict.KEEP), (3, 1, None)])
def test_a_difference_of_one_is_left_alone(mine, theirs, verdict):
    now = [0.0]
    rule = SpreadRule("me", ttl_s=TTL, clock=lambda: now[0])
    held = "abcdefg"[:mine]
    for pbx in held:
        rule.local(pbx, eligible=True, held=True)
    now[0] += TTL  # not just taken
    theirs_held = frozenset("xyz"[:theirs])
    rule.see([Peer("other", frozenset(held) | theirs_held, theirs_held)])
    verdicts = [rule.decide(pbx) for pbx in held]
    if verdict is not None:
        assert set(verdicts) == {verdict}
    else:
        assert verdicts.count(Verdict.HAND_OVER) == 1
