"""The ``attach`` script: a call that crossed from another of our PBXes keeps its id.

Contract with the dialplan (README, "Dialplan contract"): the receiving PBX's
``from-pbx`` context runs
``AGI(agi://${CTI_AGI_ADDR}/attach,call_id=${PJSIP_HEADER(read,X-CTI-Call-ID)},queue=${EXTEN})``
and gets ``route``'s variables (``__CTI_CALL_ID``, ``CTI_QUEUE``, ``CTI_PRIORITY``,
``CTI_TIER``, ``CTI_CUSTOMER_ID``, ``CTI_RULE``, ``CTI_ROUTE`` last) plus
``CTI_ATTACHED=yes`` (the same call, the same id) or ``no`` (routed as a new call: no
id, an untrusted channel, a malformed or unknown id, or stores that could not say in
time). Who is believed, and what is decided, is :mod:`cti.attach`'s business.
"""

from __future__ import annotations

from collections.abc import Sequence

from cti.agi.route import decision_variables, set_variables
from cti.agi.server import AgiSession, Script
from cti.attach import Attacher, AttachRequest, AttachResult
from cti.pbx import Pbx
from cti.routing.attach import parse_attach_args, receiving_pbx


def attach_variables(result: AttachResult) -> list[tuple[str, str]]:
    """The variables to set, in order; ``CTI_ROUTE`` last, as for ``route``."""
    attached = ("CTI_ATTACHED", "yes" if result.attached else "no")
    return decision_variables(result.call_id, result.decision, [attached])


def attach_script(attacher: Attacher, pbxes: Sequence[Pbx]) -> Script:
    async def attach(session: AgiSession) -> None:
        request = session.request
        result = await attacher.attach(
            AttachRequest(
                channel=request.get("channel"),
                uniqueid=request.get("uniqueid"),
                ani=request.get("callerid"),
                dnis=request.get("dnid") or request.get("extension"),
                # An argument dropped for a control character: the id is the one the far
                # end writes, so the claim is taken as malformed rather than absent.
                args=parse_attach_args(request.args, dropped=bool(request.refused)),
                receiving=receiving_pbx(session.peer_host, pbxes),
            )
        )
        await set_variables(session, attach_variables(result))

    return attach
