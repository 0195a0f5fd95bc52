"""The ``route`` script: ask the router, answer with channel variables.

Contract with the dialplan (README, "Dialplan contract"): ``CTI_ROUTE``,
``CTI_QUEUE``, ``CTI_PRIORITY``, ``CTI_TIER``, ``CTI_CUSTOMER_ID``, ``CTI_RULE`` and
``__CTI_CALL_ID``. Optional AGI arguments are ``key=value`` pairs from the IVR.

All seven variables are set with one ``EXEC MSet`` (Asterisk's multi-variable
``Set``): one round trip instead of seven, which was most of the cost of a route.
Should MSet be missing (``result=-2``) or a value be unsafe inside MSet's
``a=b,c=d`` syntax, the script falls back to one ``SET VARIABLE`` per variable.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

from cti.agi.protocol import exec_application, set_variable
from cti.agi.server import AgiSession, Script
from cti.router import RouteOutcome, Router, RouteRequest
from cti.routing.model import Decision
from cti.text import ControlCharacterError, refuse_control_characters

MAX_IVR_ARGS = 16
MAX_IVR_VALUE = 256
_IVR_KEY = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
_MSET_SAFE = re.compile(r"^[A-Za-z0-9_.+:-]*$")  # nothing MSet would split or unquote
APPLICATION_MISSING = "-2"


def parse_ivr_args(args: Iterable[str]) -> dict[str, str]:
    """``account=123`` style arguments; malformed or empty ones are ignored, and so is a
    value with a control character (the parser already drops those; this keeps the rule
    for any other caller): it goes to PostgreSQL and Redis, which must never see one."""
    ivr: dict[str, str] = {}
    for arg in list(args)[:MAX_IVR_ARGS]:
        key, sep, value = arg.partition("=")
        key, value = key.strip().lower(), value.strip()
        if sep and _IVR_KEY.match(key) and value and len(value) <= MAX_IVR_VALUE:
            try:
                ivr[key] = refuse_control_characters(value)
            except ControlCharacterError:
                continue
    return ivr


def route_variables(outcome: RouteOutcome) -> list[tuple[str, str]]:
    """The variables to set, in order; ``CTI_ROUTE`` last so it means "all are set"."""
    return decision_variables(outcome.call_id, outcome.decision)


def decision_variables(
    call_id: str, decision: Decision, extra: Sequence[tuple[str, str]] = ()
) -> list[tuple[str, str]]:
    """``route``'s variables for ``decision`` (and ``extra`` ones before ``CTI_ROUTE``)."""
    return [
        ("__CTI_CALL_ID", call_id),
        ("CTI_QUEUE", decision.queue or ""),
        ("CTI_PRIORITY", str(decision.priority)),
        ("CTI_TIER", decision.tier),
        ("CTI_CUSTOMER_ID", "" if decision.customer_id is None else str(decision.customer_id)),
        ("CTI_RULE", decision.rule),
        *extra,
        ("CTI_ROUTE", decision.route.value),
    ]


def route_script(router: Router) -> Script:
    async def route(session: AgiSession) -> None:
        request = session.request
        dnis = request.get("dnid") or request.get("extension")
        outcome = await router.route(
            RouteRequest(
                channel=request.get("channel"),
                uniqueid=request.get("uniqueid"),
                ani=request.get("callerid"),
                dnis=dnis,
                ivr=parse_ivr_args(request.args),
            )
        )
        await set_variables(session, route_variables(outcome))

    return route


async def set_variables(session: AgiSession, variables: list[tuple[str, str]]) -> None:
    """Set ``variables`` in order, in one round trip when Asterisk allows it."""
    if all(_MSET_SAFE.match(value) for _name, value in variables):
        pairs = ",".join(f"{name}={value}" for name, value in variables)
        reply = await session.command(exec_application("MSet", pairs))
        if session.hung_up or reply.code == 511:
            return  # the caller is gone; nothing left to route
        if reply.ok and reply.result != APPLICATION_MISSING:
            return
    for name, value in variables:
        if session.hung_up:
            return
        await session.command(set_variable(name, value))
