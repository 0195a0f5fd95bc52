"""Following several PBXes (``CTI_PBXES``) through real daemons, real Redis and
PostgreSQL, and two fake Asterisk Managers (tests/fakes/ami_server.py) replaying a
recorded answered call (tests/fixtures/ami/answered_call.txt) shifted to now.

* each PBX's events reach ``cti:events`` tagged with their PBX, the other PBX's agent
  named ``PJSIP/2001@b``;
* PBX b's AMI down: a's events are published as ever, ``/readyz`` names b (and stays
  ready: a works), ``/metrics`` shows b disconnected;
* the instance leading b is killed (SIGKILL, a real process): another takes b's lease
  within the TTL, a's leadership never moves, and nothing is lost or doubled;
* call control for ``PJSIP/2001@b`` goes to b's AMI, with the device unqualified.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import sys
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from cti.app.following import CallFollowing
from cti.app.service import screenpop_service
from cti.calls.lease import lease_key
from cti.calls.publisher import ALL_EVENTS_STREAM, agent_stream
from cti.config import Config, HostPort
from cti.errors import DomainError
from cti.pbx import Pbx
from tests.conftest import REDIS_URL
from tests.fakes.ami_server import FakeAmi
from tests.integration.conftest import RunningDaemon, start_daemon
from tests.processes import free_port, killed_on_exit
from tests.unit import ami_replay
from tests.waiting import until

TTL_S = 2
#: The answered call's blocks up to both legs in the bridge (the agent talking).
TALKING = 24


@pytest.fixture
async def fakes() -> AsyncIterator[tuple[FakeAmi, FakeAmi]]:
    a, b = await FakeAmi().start(), await FakeAmi().start()
    for fake in (a, b):
        for action in ("QueuePause", "BlindTransfer", "Originate", "Hangup"):
            fake.responses[action] = {"Response": "Success", "Message": "ok"}
    yield a, b
    await a.close()
    await b.close()


def pbxes(a: int, b: int) -> tuple[Pbx, Pbx]:
    return (
        Pbx("a", "127.0.0.1", a, "cti", "s3cret", home=True),
        Pbx("b", "127.0.0.1", b, "cti", "s3cret", home=False),
    )


@pytest.fixture
def two_pbx_config(config: Config, fakes: tuple[FakeAmi, FakeAmi]) -> Config:
    a, b = fakes
    return dataclasses.replace(
        config,
        ami_enabled=True,
        pbxes=pbxes(a.port, b.port),
        ami_lease_ttl_s=TTL_S,
        metrics_bind=HostPort("127.0.0.1", 0),
    )


async def daemon(config: Config, name: str) -> RunningDaemon:
    return await start_daemon(dataclasses.replace(config, instance_id=name))


def following(running: RunningDaemon) -> CallFollowing:
    calls = running.daemon.parts.calls
    assert calls is not None
    return calls


def call_blocks(tag: str) -> list[bytes]:
    """The recorded call renamed to ``tag`` (its call id too), its last event now."""
    blocks = ami_replay.renamed_events("answered_call", tag)
    stamps = [t for b in blocks if (t := ami_replay.block_timestamp(b)) is not None]
    return ami_replay.renamed_events("answered_call", tag, time.time() - max(stamps))


def call_id_of(tag: str) -> str:
    """The call id of the call :func:`call_blocks` renamed to ``tag``."""
    (call_id,) = {
        line.split(b"=", 1)[1].decode()
        for b in ami_replay.renamed_events("answered_call", tag)
        for line in b.split(b"\r\n")
        if line.startswith(b"ChanVariable: CTI_CALL_ID=") and line != b"ChanVariable: CTI_CALL_ID="
    }
    return call_id


CA, CB = call_id_of("ca"), call_id_of("cb")


async def published(redis_client) -> list[dict[str, Any]]:
    return [json.loads(e[b"e"]) for _, e in await redis_client.xrange(ALL_EVENTS_STREAM)]


async def events_of(redis_client, call_key: str) -> list[dict[str, Any]]:
    return [e for e in await published(redis_client) if e["call_key"] == call_key]


async def test_each_pbxs_events_are_published_tagged_with_their_pbx(
    two_pbx_config: Config, fakes: tuple[FakeAmi, FakeAmi], redis_client
) -> None:
    fake_a, fake_b = fakes
    running = await daemon(two_pbx_config, "one")
    try:
        calls = following(running)
        await until(lambda: all(f.leadership and f.leadership.leader for f in calls.pbxes))
        await fake_a.push(b"".join(call_blocks("ca")))
        await fake_b.push(b"".join(call_blocks("cb")))

        async def ended(key: str) -> list[dict[str, Any]] | None:
            events = await events_of(redis_client, key)
            return events if any(e["event"] == "ended" for e in events) else None

        on_a, on_b = await until(lambda: ended(CA)), await until(lambda: ended(CB))
        assert {e["pbx"] for e in on_a} == {"a"} and {e["pbx"] for e in on_b} == {"b"}
        assert {e["agent"] for e in on_a if e["agent"]} == {"PJSIP/2001"}
        assert {e["agent"] for e in on_b if e["agent"]} == {"PJSIP/2001@b"}
        assert [e["event"] for e in on_a] == [e["event"] for e in on_b]
        # Each agent's own stream has its own PBX's call only (and its own states).
        b_stream = [
            json.loads(e[b"e"]) for _, e in await redis_client.xrange(agent_stream("PJSIP/2001@b"))
        ]
        assert {e["call_key"] for e in b_stream if e["event"] != "agent_state"} == {CB}
        assert {e["agent"] for e in b_stream if e["event"] == "agent_state"} == {"PJSIP/2001@b"}
        assert await redis_client.get(lease_key("a")) == b"one"
        assert await redis_client.get(lease_key("b")) == b"one"
    finally:
        await running.daemon.shutdown(writer_grace_s=2)


async def test_a_second_instance_gets_one_of_the_two_leases(
    two_pbx_config: Config, fakes: tuple[FakeAmi, FakeAmi], redis_client
) -> None:
    """Two daemons that reach both PBXes lead one each (cti.calls.spread): the first
    takes both, hands one over once the second is there, and nothing moves after."""
    one = await daemon(two_pbx_config, "one")
    two: RunningDaemon | None = None
    try:
        await until(lambda: all(f.leadership and f.leadership.leader for f in following(one).pbxes))
        two = await daemon(two_pbx_config, "two")

        async def split() -> bool:
            held = await redis_client.mget([lease_key("a"), lease_key("b")])
            return sorted(h or b"" for h in held) == [b"one", b"two"]

        await until(split, within_s=TTL_S * 10)
        await asyncio.sleep(TTL_S * 2)
        assert await split()
        leases = [
            f.leadership.lease for d in (one, two) for f in following(d).pbxes if f.leadership
        ]
        assert sum(lease.changes for lease in leases) == 4  # one took two, one left, one taken
    finally:
        for running in (one, two):
            if running is not None:
                await running.daemon.shutdown(writer_grace_s=2)


async def get(port: int, path: str) -> tuple[int, str]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{port}{path}") as response,
    ):
        return response.status, await response.text()


async def test_one_pbx_down_leaves_the_other_followed_and_is_named(
    two_pbx_config: Config, fakes: tuple[FakeAmi, FakeAmi], redis_client
) -> None:
    fake_a, fake_b = fakes
    await fake_b.close()  # b's Asterisk is down from the start
    running = await daemon(two_pbx_config, "one")
    try:
        calls = following(running)
        lead_a = calls.pbx("a").leadership
        assert lead_a is not None
        await until(lambda: lead_a.leader)
        await fake_a.push(b"".join(call_blocks("ca")))
        await until(lambda: has_ended(redis_client, CA))
        assert {e["pbx"] for e in await events_of(redis_client, CA)} == {"a"}
        assert await redis_client.get(lease_key("b")) is None  # nobody can follow b
        metrics_port = running.daemon.parts.metrics_port
        assert metrics_port is not None and metrics_port.port is not None
        status, body = await get(metrics_port.port, "/readyz")
        ready = json.loads(body)
        assert status == 200, body  # a works: stay in the balancer
        assert (ready["ami"], ready["pbxes"], ready["ami_down"]) == (
            False,
            {"a": True, "b": False},
            ["b"],
        )
        _, text = await get(metrics_port.port, "/metrics")
        assert 'cti_ami_connected{pbx="a"} 1.0' in text
        assert 'cti_ami_connected{pbx="b"} 0.0' in text
        assert 'cti_ami_leader{pbx="a"} 1.0' in text
        assert 'cti_ami_leader{pbx="b"} 0.0' in text
        assert 'cti_ami_lease_changes_total{pbx="a"} 1.0' in text  # taken once
        assert 'cti_ami_lease_changes_total{pbx="b"} 0.0' in text
    finally:
        await running.daemon.shutdown(writer_grace_s=2)


async def test_every_pbx_down_makes_the_instance_unready(
    two_pbx_config: Config, fakes: tuple[FakeAmi, FakeAmi]
) -> None:
    for fake in fakes:
        await fake.close()
    running = await daemon(two_pbx_config, "one")
    try:
        metrics_port = running.daemon.parts.metrics_port
        assert metrics_port is not None and metrics_port.port is not None
        status, body = await get(metrics_port.port, "/readyz")
        assert status == 503, body
        assert json.loads(body)["ami_down"] == ["a", "b"]
    finally:
        await running.daemon.shutdown(writer_grace_s=2)


async def test_call_control_for_an_agent_on_b_goes_to_bs_ami_unqualified(
    two_pbx_config: Config, fakes: tuple[FakeAmi, FakeAmi], redis_client
) -> None:
    fake_a, fake_b = fakes
    running = await daemon(two_pbx_config, "one")
    try:
        calls = following(running)
        await until(lambda: all(f.ami.is_connected for f in calls.pbxes))
        await fake_b.push(b"".join(call_blocks("cb")[:TALKING]))
        model_b = calls.pbx("b").model

        def talking() -> bool:
            call = model_b.call(CB)
            return call is not None and any(
                ch.agent == "PJSIP/2001@b" and ch.connected for ch in call.channels.values()
            )

        await until(talking)
        leg = calls.control.agent_leg(CB, "PJSIP/2001@b")
        assert leg.name.startswith("PJSIP/2001-")
        await calls.control.blind_transfer(CB, "PJSIP/2001@b", "2003")
        await calls.control.pause("PJSIP/2001@b", True, "lunch")
        await calls.control.send("Originate", Channel="PJSIP/3001@b", Application="Wait")
        sent = await until(lambda: len(fake_b.actions("Originate")) == 1 and fake_b)
        [transfer] = sent.actions("BlindTransfer")
        assert (transfer.get("Channel"), transfer.get("Exten")) == (leg.name, "2003")
        [pause] = sent.actions("QueuePause")
        assert (pause.get("Interface"), pause.get("Reason")) == ("PJSIP/2001", "lunch")
        assert sent.actions("Originate")[0].get("Channel") == "PJSIP/3001"
        # Nothing went to a; and a's agent of the same number is a's (not on b's call).
        for name in ("BlindTransfer", "QueuePause", "Originate"):
            assert fake_a.actions(name) == []
        with pytest.raises(DomainError, match="not on call"):
            calls.control.agent_leg(CB, "PJSIP/2001")
    finally:
        await running.daemon.shutdown(writer_grace_s=2)


async def test_the_leader_of_b_killed_another_takes_b_and_a_never_pauses(
    two_pbx_config: Config, fakes: tuple[FakeAmi, FakeAmi], redis_client, seeded, tmp_path
) -> None:
    """ "one" (a real ``cti serve``, killed with SIGKILL) cannot log in to a (a wrong
    secret), so it leads b only; "two" (in this process) leads a and stands by for b."""
    fake_a, fake_b = fakes
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "cti", "serve",
        stderr=asyncio.subprocess.DEVNULL,
        env={
            **os.environ, "CTI_DATABASE_URL": seeded, "CTI_REDIS_URL": REDIS_URL,
            "CTI_AGI_BIND": f"127.0.0.1:{free_port()}", "CTI_LOG_FORMAT": "json",
            "CTI_PLAN_CACHE": str(tmp_path / "plan.toml"), "CTI_INSTANCE_ID": "one",
            "CTI_PBXES": f"a=127.0.0.1:{fake_a.port},b=127.0.0.1:{fake_b.port}",
            "CTI_AMI_SECRET": "s3cret", "CTI_AMI_SECRET_A": "not-the-secret",
            "CTI_AMI_LEASE_TTL_S": str(TTL_S),
        },
    )  # fmt: skip
    async with killed_on_exit(process):
        await until(lambda: redis_client.get(lease_key("b")), within_s=30)
        assert await redis_client.get(lease_key("b")) == b"one"
        two = await daemon(two_pbx_config, "two")
        try:
            calls = following(two)
            lead_a, lead_b = calls.pbx("a").leadership, calls.pbx("b").leadership
            assert lead_a is not None and lead_b is not None
            await until(lambda: lead_a.leader and calls.pbx("b").ami.is_connected)
            assert not lead_b.leader
            a_changes = lead_a.lease.changes
            on_a, on_b = call_blocks("ca"), call_blocks("cb")
            # b's call is answered while "one" leads b; a's first half meanwhile.
            await fake_b.push(b"".join(on_b[:TALKING]))
            await fake_a.push(b"".join(on_a[:TALKING]))
            await until(lambda: any_connected(redis_client, CB))  # published by "one"
            await until(lambda: lead_b.standby_backlog)  # and held by "two"
            # Mid-call: "one" dies without a word; b's call ends while nobody leads b.
            process.kill()
            killed_at = time.monotonic()
            await process.wait()
            await fake_b.push(b"".join(on_b[TALKING:]))
            await fake_a.push(b"".join(on_a[TALKING:]))
            # a's end is published by "two" whatever happens to b.
            await until(lambda: has_ended(redis_client, CA))
            await until(lambda: lead_b.leader, within_s=TTL_S * 5)
            took_over_s = time.monotonic() - killed_at
            await until(lambda: has_ended(redis_client, CB))
            assert lead_a.leader and lead_a.lease.changes == a_changes  # never moved
            assert took_over_s < TTL_S * 2.5, took_over_s
            # Nothing lost, nothing doubled, on either PBX.
            await asyncio.sleep(0.5)  # anything late would show now
            events = await published(redis_client)
            counts = Counter(json.dumps(e, sort_keys=True) for e in events)
            assert [e for e, n in counts.items() if n > 1] == []
            kinds_a = [e["event"] for e in events if e["call_key"] == CA]
            kinds_b = [e["event"] for e in events if e["call_key"] == CB]
            assert kinds_a == kinds_b and "ended" in kinds_b and "connected" in kinds_b
            assert {e["pbx"] for e in events if e["call_key"] == CB} == {"b"}
        finally:
            await two.daemon.shutdown(writer_grace_s=2)


async def any_connected(redis_client, key: str) -> bool:
    return any(e["event"] == "connected" for e in await events_of(redis_client, key))


async def has_ended(redis_client, key: str) -> bool:
    return any(e["event"] == "ended" for e in await events_of(redis_client, key))


async def test_the_sidebar_process_observes_every_pbx_for_call_control(
    two_pbx_config: Config, fakes: tuple[FakeAmi, FakeAmi], redis_client
) -> None:
    """``cti screenpop``: a call model per PBX of its own, publishing nothing; its
    /readyz (on the sidebar's port) names each PBX."""
    fake_a, fake_b = fakes
    config = dataclasses.replace(
        two_pbx_config,
        session_secret="s" * 48,
        http_bind=HostPort("127.0.0.1", 0),
        metrics_bind=None,
    )
    service = screenpop_service(config)
    await service.start()
    try:
        calls = service.parts.calls
        assert calls is not None and all(f.leadership is None for f in calls.pbxes)
        await until(lambda: all(f.ami.is_connected for f in calls.pbxes))
        await fake_b.push(b"".join(call_blocks("cb")[:TALKING]))
        leg = await until(lambda: leg_of(calls, CB, "PJSIP/2001@b"))
        await calls.control.hangup(CB, "PJSIP/2001@b")
        [hangup] = await until(lambda: fake_b.actions("Hangup"))
        assert hangup.get("Channel") == leg and fake_a.actions("Hangup") == []
        assert service.http is not None and service.http.port is not None
        status, body = await get(service.http.port, "/readyz")
        assert status == 200 and json.loads(body)["pbxes"] == {"a": True, "b": True}
        assert await redis_client.xlen(ALL_EVENTS_STREAM) == 0  # it publishes nothing
    finally:
        await service.shutdown(writer_grace_s=2)


def leg_of(calls: CallFollowing, call_key: str, agent: str) -> str | None:
    try:
        return calls.control.agent_leg(call_key, agent).name
    except DomainError:
        return None


async def test_a_call_still_on_another_pbx_keeps_its_data_when_one_part_ends(
    two_pbx_config: Config, fakes: tuple[FakeAmi, FakeAmi], redis_client
) -> None:
    """The same call (one CTI_CALL_ID) on a and b: a's part ending must not expire the
    data b's agent is working on (CTI_CALL_DATA_AFTER_END_S=0 would delete it at once);
    the last part ending does."""
    from tests.integration.test_calldata_store import new_document

    fake_a, fake_b = fakes
    config = dataclasses.replace(two_pbx_config, call_data_after_end_s=0)
    running = await daemon(config, "one")
    try:
        calls = following(running)
        await until(lambda: all(f.leadership and f.leadership.leader for f in calls.pbxes))
        store = running.daemon.parts.call_data.store
        call_id = str(uuid.uuid4())  # the recorded call's, as the route makes them
        await store.create_many([new_document(call_id=call_id)])  # type: ignore[list-item]
        # The same recorded call, with the same id, on both PBXes.
        blocks = [block.replace(CA.encode(), call_id.encode()) for block in call_blocks("ca")]
        await fake_b.push(b"".join(blocks[:TALKING]))  # b: the agent is talking
        live_b = calls.pbx("b").model
        await until(lambda: (c := live_b.call(call_id)) is not None and c.talking)
        await fake_a.push(b"".join(blocks))  # a's part goes all the way to its end
        await until(lambda: has_ended(redis_client, call_id))
        lead_a = calls.pbx("a").leadership
        assert lead_a is not None
        await until(lambda: lead_a.backlog == 0)
        expiry = next(w for w in calls.writers if w.name == "call-data-expiry")
        await until(lambda: expiry.backlog == 0)
        assert await store.get(call_id) is not None, "b's agent lost the call's data"
        await fake_b.push(b"".join(blocks[TALKING:]))  # now b's part ends too

        async def deleted() -> bool:
            return await store.get(call_id) is None

        await until(deleted)
    finally:
        await running.daemon.shutdown(writer_grace_s=2)
