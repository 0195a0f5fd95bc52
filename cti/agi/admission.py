"""Who may open a FastAGI connection, and how many: the FastAGI port's policy on the
shared rules of :mod:`cti.net.admission`.

Asterisk sits on the same host or on a private network, so by default only loopback
and the private ranges are let in; anything else that reaches the port is refused at
once, without a byte read, so that it cannot hold one of the slots real calls need.
Within the allowed addresses, one address may hold at most ``max_per_address``
sessions, so that a single misbehaving host cannot take all ``max_connections``.
"""

from __future__ import annotations

from cti.net.admission import PRIVATE_NETWORKS, Admission, Network

DEFAULT_ALLOW: tuple[Network, ...] = PRIVATE_NETWORKS
DEFAULT_MAX_CONNECTIONS = 1000
#: Half the global cap: one host can never take every slot, so a second Asterisk (or the
#: same one, once its misbehaving twin is capped) still gets in; yet 500 sessions at
#: once from one Asterisk is 2,500 calls a second even at the 200 ms route budget.
DEFAULT_MAX_PER_ADDRESS = 500


def agi_admission(
    allow: tuple[Network, ...] = DEFAULT_ALLOW,
    max_per_address: int = DEFAULT_MAX_PER_ADDRESS,
    max_connections: int = DEFAULT_MAX_CONNECTIONS,
) -> Admission:
    return Admission(
        name="agi", allow=allow, max_per_address=max_per_address, max_connections=max_connections
    )
