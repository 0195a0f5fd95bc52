"""A call that crossed to another of our PBXes: whether to believe the call id it
carries, and what the receiving PBX decides for it.

The sending PBX puts the call's id in ``X-CTI-Call-ID`` on the inter-PBX trunk; the
receiving PBX's ``from-pbx`` context hands it to the FastAGI ``attach`` script
(:mod:`cti.agi.attach`, :mod:`cti.attach`). A SIP header is whatever the far end
chose to send, so the id is believed only from a channel of an inter-PBX trunk whose
far end is one of the PBXes we follow (:func:`cti.pbx.trunk_peer`): anyone on the
public trunk can send the header too, and honouring it there would hand a stranger
another caller's data. A believed id must still be a UUID as the router spells them,
and (the stores' part) a call we know; anything else is routed as a new call.

The receiving side re-decides the queue and priority *for its own service*
(:func:`redecide`): the routing engine runs again over this PBX's plan with the
customer the call already has (never a new lookup: the customer is a fact of the
call), the caller's IVR answers left out (they were answered at the entrance and the
agent has handled them since: an intent rule must not send the caller back into self
service), and the requested queue, when it is one of the plan's queues, is where the
call goes (a transfer's target beats a rule's queue); the rule that matched gives the
priority. A queue the plan does not know is read as a dialled number, as ``route``
reads the DNIS.

Pure: no I/O, no clock (``now`` is passed in).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from cti.calldata.document import CALL_ID, CallDocument
from cti.pbx import Pbx, trunk_peer
from cti.routing.engine import decide, fail_open
from cti.routing.model import CallFacts, Customer, Decision, DialledNumber, RouteKind
from cti.routing.phone import normalize
from cti.routing.table import RoutingTable
from cti.text import brief

#: The argument names of the ``attach`` script (README, "Dialplan contract").
CALL_ID_ARG, QUEUE_ARG = "call_id", "queue"
#: The longest queue name or number read from the ``queue=`` argument.
MAX_QUEUE_CHARS = 64


class AttachOutcome(StrEnum):
    """How an ``attach`` ended: ``attached``, or why the call was routed as new."""

    ATTACHED = "attached"
    NO_ID = "no_id"  # no X-CTI-Call-ID (or an empty one)
    UNTRUSTED = "untrusted"  # an id on a channel that is not one of our inter-PBX trunks
    MALFORMED = "malformed"  # not a UUID as the router makes them (or a control character)
    UNKNOWN = "unknown"  # a well-formed id of no call we know
    UNVERIFIED = "unverified"  # the stores could not say within the budget: fail open


@dataclass(frozen=True, slots=True)
class AttachArgs:
    """The script's arguments: ``call_id=`` (None when absent or empty) and ``queue=``."""

    call_id: str | None
    queue: str = ""
    #: An argument was dropped by the AGI parser for a control character: the id, most
    #: likely (it is the one the far end controls), so the claim is malformed.
    dropped: bool = False


def parse_attach_args(args: Sequence[str], dropped: bool = False) -> AttachArgs:
    """``call_id=…`` and ``queue=…`` from the AGI arguments; others are ignored.

    Asterisk splits ``AGI()``'s arguments at commas *after* expanding the header, so a
    header holding ``,queue=sales`` adds arguments between ``call_id=`` and the
    dialplan's own ``queue=``: the first ``call_id=`` counts (what the header starts
    with) and the last ``queue=`` (the dialplan's ``${EXTEN}``)."""
    call_id: str | None = None
    queue = ""
    for arg in args:
        key, sep, value = arg.partition("=")
        key = key.strip().lower()
        if sep and key == CALL_ID_ARG and call_id is None:
            call_id = value.strip()
        elif sep and key == QUEUE_ARG:
            queue = value.strip()
    return AttachArgs(
        call_id=call_id or None,
        queue=queue if len(queue) <= MAX_QUEUE_CHARS else "",
        dropped=dropped,
    )


@dataclass(frozen=True, slots=True)
class Claim:
    """What the request claims, judged before any store is asked.

    ``outcome`` None: a well-formed id from a trusted trunk, ``call_id`` (canonical,
    lower-case) to be looked up; otherwise the call is new, for ``reason``."""

    call_id: str | None
    outcome: AttachOutcome | None
    reason: str
    from_pbx: str | None = None


def judge_claim(
    channel: str, args: AttachArgs, pbxes: Collection[str], receiving: str | None = None
) -> Claim:
    """Believe the id only from an inter-PBX trunk of a PBX we follow (not the receiving
    PBX itself: a trunk to oneself is a loop, or a forgery), and only in the router's
    spelling. ``receiving``: the PBX that asks, when known."""
    peer = trunk_peer(channel)
    trusted = peer is not None and peer in pbxes and peer != receiving
    if args.call_id is None and not args.dropped:
        return Claim(None, AttachOutcome.NO_ID, "no call id", peer if trusted else None)
    if not trusted:
        return Claim(
            None,
            AttachOutcome.UNTRUSTED,
            f"call id on {brief(channel)}, not an inter-PBX trunk of a PBX we follow",
        )
    if args.call_id is None:
        return Claim(None, AttachOutcome.MALFORMED, "call id with a control character", peer)
    if not CALL_ID.match(args.call_id):
        return Claim(
            None, AttachOutcome.MALFORMED, f"call id {brief(args.call_id)} is not a UUID", peer
        )
    return Claim(args.call_id.lower(), None, "to be looked up", peer)


def receiving_pbx(peer_host: str, pbxes: Sequence[Pbx]) -> str | None:
    """The PBX that asks, by the address its FastAGI connection came from: known only
    when exactly one PBX is configured at that host (several PBXes on one host, or a
    name where the peer is an address, leave it unknown)."""
    named = [pbx.name for pbx in pbxes if peer_host and pbx.host == peer_host]
    return named[0] if len(named) == 1 else None


def customer_of(document: CallDocument) -> Customer | None:
    """The customer the route found for the call (its document's card), if any."""
    card = document.get("customer")
    if not card:
        return None
    return Customer(
        id=int(card["id"]),
        account_number=str(card["account_number"]),
        name=str(card["name"]),
        tier=str(card["tier"]),
        status=str(card["status"]),
        language=str(card["language"]),
    )


def number_of_queue(table: RoutingTable, queue: str) -> DialledNumber | None:
    """The dialled number whose default queue is ``queue`` (the lowest DNIS, so every
    instance picks the same): its service, time zone and hours are the queue's."""
    numbers = [n for n in table.numbers.values() if n.default_queue == queue]
    return min(numbers, key=lambda n: n.dnis) if numbers else None


def redecide(
    document: CallDocument,
    requested: str,
    table: RoutingTable,
    *,
    default_queue: str,
    region: str,
    now: datetime,
) -> Decision:
    """Where the crossing call goes on this PBX (see the module docstring).

    ``requested``: the ``queue=`` argument, a queue of the plan or a dialled number."""
    customer = customer_of(document)
    caller = normalize(document.get("ani") or None, region)
    is_queue = bool(requested) and table.queue(requested) is not None
    if is_queue:
        number = number_of_queue(table, requested)
        dnis = number.dnis if number is not None else requested
    else:
        number = table.number(requested) if requested else None
        dnis = requested
    facts = CallFacts(caller, dnis, number, customer, now, {})
    if not table.loaded:
        return fail_open(facts, default_queue)
    decision = decide(facts, table.rules, default_queue)
    if is_queue and decision.route is RouteKind.QUEUE:
        decision = dataclasses.replace(decision, queue=requested)
    return decision
