"""The one table of AMI events (cti.calls.model.AMI_EVENTS) builds both the model's
dispatcher and the filter the AMI connection asks Asterisk for, so they cannot drift.

Proved here: the filter is the table's live rows and nothing else, and it is what the
composition root (cti/daemon.py) gives the AMI client; every event the model has a
handler for is either asked for or an answer to the resync's list actions (which
filters do not touch); the dispatcher reaches every handler through the table and
nothing outside it; and the recorded Asterisk 22 traffic, passed through the filter the
way Asterisk applies a legacy filter (a regex searched in the event's text), gives the
model exactly the effects it gives unfiltered.
"""

from __future__ import annotations

import inspect
import re

import pytest

from cti.ami.filters import event_filter
from cti.ami.protocol import Message, MessageKind
from cti.app.following import CALL_MODEL_FILTERS
from cti.app.resources import create_ami_client
from cti.calls.model import AMI_EVENTS, CALL_CENTRE_EVENTS, CallModel, Source
from cti.config import Config
from tests.unit import ami_replay

#: The list actions the AMI client's resync sends (cti/ami/client.py, ``_resync``) and
#: the events that answer them.
RESYNC_REPLIES = {
    "CoreShowChannels": {"CoreShowChannel", "CoreShowChannelsComplete"},
    "QueueStatus": {"QueueParams", "QueueMember", "QueueEntry", "QueueStatusComplete"},
}


def test_the_filter_is_the_tables_live_events_in_table_order():
    live = [name for name, row in AMI_EVENTS.items() if row.source is Source.LIVE]
    assert list(CALL_CENTRE_EVENTS) == live
    assert len(set(CALL_CENTRE_EVENTS)) == len(CALL_CENTRE_EVENTS)


def test_the_daemon_asks_asterisk_for_the_tables_events():
    client = create_ami_client(
        Config(), sink=CallModel(), id_prefix="t", filters=CALL_MODEL_FILTERS
    )
    assert client.filters == (event_filter(CALL_CENTRE_EVENTS),)
    assert client.filters[0].fields()["Filter"] == "Event: (" + "|".join(CALL_CENTRE_EVENTS) + ")"


def test_every_event_with_a_handler_is_asked_for_or_answers_the_resync():
    replies = set().union(*RESYNC_REPLIES.values())
    for name, row in AMI_EVENTS.items():
        if row.source is Source.REPLY:
            assert name in replies, f"{name} answers no list action of the resync"
        elif not row.generic:
            assert row.source is Source.LIVE, f"{name} has a handler but is not asked for"
    assert replies <= set(AMI_EVENTS)


def test_the_resync_actions_are_the_ones_the_client_sends():
    from cti.ami import client

    source = inspect.getsource(client.AmiClient._resync)
    assert set(re.findall(r'_list_while_alive\(conn, "(\w+)"\)', source)) == set(RESYNC_REPLIES)


def test_every_handler_of_the_model_is_in_the_table_and_resolves_to_itself():
    handlers = {row.handler for row in AMI_EVENTS.values()}
    for handler in handlers:
        assert getattr(CallModel, handler.__name__) is handler, handler.__qualname__
    on_methods = {getattr(CallModel, name) for name in dir(CallModel) if name.startswith("_on_")}
    assert on_methods <= handlers, on_methods - handlers


def event(name: str, **fields: str) -> Message:
    return Message(MessageKind.EVENT, name, {k.lower(): v for k, v in fields.items()})


@pytest.mark.parametrize("name", sorted(AMI_EVENTS))
def test_the_dispatcher_knows_every_event_of_the_table(name):
    model = CallModel()
    model.apply(event(name, Uniqueid="1.1", Linkedid="1.1", Channel="PJSIP/trunk-1"))
    assert name not in model.stats.unknown


def test_an_event_outside_the_table_is_counted_as_unknown():
    model = CallModel()
    model.apply(event("SomethingNew", Uniqueid="1.1", Linkedid="1.1", Channel="PJSIP/x-1"))
    model.apply(event("SomethingElse"))
    assert model.stats.unknown == {"SomethingNew": 1}
    assert model.stats.non_call == 1


@pytest.mark.parametrize("fixture", ami_replay.fixture_names())
def test_the_recorded_traffic_through_the_filter_gives_the_same_effects(fixture):
    pattern = re.compile(event_filter(CALL_CENTRE_EVENTS).filter.encode())
    greeting, blocks = ami_replay.split_blocks(ami_replay.load(fixture))
    # Asterisk applies filters to events only, never to the answers of an action.
    kept = [
        block
        for block in blocks
        if not ami_replay.is_event_block(block) or b"ActionID:" in block or pattern.search(block)
    ]
    everything = ami_replay.replay(ami_replay.parse(greeting + b"".join(blocks)))
    filtered = ami_replay.replay(ami_replay.parse(greeting + b"".join(kept)))
    assert filtered.effects == everything.effects


def test_the_filter_does_drop_recorded_events():
    """Not vacuous: the captures (recorded unfiltered) hold events the filter drops."""
    pattern = re.compile(event_filter(CALL_CENTRE_EVENTS).filter.encode())
    dropped = {
        ami_replay.parse(block)[0].name
        for fixture in ami_replay.fixture_names()
        for block in ami_replay.split_blocks(ami_replay.load(fixture))[1]
        if ami_replay.is_event_block(block) and not pattern.search(block)
    }
    # (SoftHangupRequest was dropped too until the model needed it: a queued caller
    # asked to hang up abandons, one who was not timed out.)
    assert "BridgeCreate" in dropped
