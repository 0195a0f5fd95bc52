"""The routing decision: first matching rule wins.

Enabled rules are tried in their order; the first whose every condition holds decides. When
no rule matches, the call goes to the dialled number's default queue at priority 0,
so an incomplete rule set never strands a caller. When the customer lookup could not
be made at all (database down or slow), :func:`fail_open` routes to the same default
without consulting rules that would have needed the customer.
"""

from __future__ import annotations

from collections.abc import Sequence

from cti.routing.hours import minute_of_day
from cti.routing.model import UNKNOWN_TIER, CallFacts, Decision, Match, RouteKind, Rule

NO_RULE = "default"
FAIL_OPEN_RULE = "fail-open"


def matches(match: Match, facts: CallFacts) -> bool:
    customer = facts.customer
    number = facts.number
    if match.known is not None and match.known != (customer is not None):
        return False
    # The plan lowercases the words of a match, so compare lowercased facts with them.
    if match.services is not None and (
        number is None or number.service.lower() not in match.services
    ):
        return False
    if match.tiers is not None and (customer.tier if customer else UNKNOWN_TIER) not in match.tiers:
        return False
    if match.statuses is not None and (customer is None or customer.status not in match.statuses):
        return False
    if match.languages is not None and (
        customer is None or customer.language not in match.languages
    ):
        return False
    if match.intents is not None and facts.ivr.get("intent", "").lower() not in match.intents:
        return False
    if match.open is not None and match.open != (number is None or number.is_open(facts.now)):
        return False
    if match.days is not None or match.time is not None:
        local = facts.now.astimezone(number.timezone) if number else facts.now
        if match.days is not None and local.weekday() not in match.days:
            return False
        if match.time is not None and not match.time.contains(minute_of_day(local)):
            return False
    return True


def decide(facts: CallFacts, rules: Sequence[Rule], default_queue: str) -> Decision:
    """Choose where the call goes. ``default_queue`` serves numbers we do not know."""
    for rule in rules:
        if rule.enabled and matches(rule.match, facts):
            return _decision(facts, rule.name, rule.route, rule.queue, rule.priority, default_queue)
    return _decision(facts, NO_RULE, RouteKind.QUEUE, None, 0, default_queue)


def fail_open(facts: CallFacts, default_queue: str) -> Decision:
    """The route when we could not look the caller up in time."""
    return _decision(facts, FAIL_OPEN_RULE, RouteKind.QUEUE, None, 0, default_queue)


def _decision(
    facts: CallFacts,
    rule: str,
    route: RouteKind,
    queue: str | None,
    priority: int,
    default_queue: str,
) -> Decision:
    number = facts.number
    customer = facts.customer
    if route is RouteKind.QUEUE and queue is None:
        queue = number.default_queue if number else default_queue
    return Decision(
        route=route,
        queue=queue if route is RouteKind.QUEUE else None,
        priority=priority,
        rule=rule,
        tier=customer.tier if customer else UNKNOWN_TIER,
        customer_id=customer.id if customer else None,
        service=number.service if number else None,
    )
