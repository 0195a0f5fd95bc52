"""The Asterisk servers (PBXes) cti follows, and how a device names its PBX.

Why every PBX has a name: uniqueids, Linkedids and channel names are unique only
within one Asterisk (two servers booted in the same second number their channels
alike), and so are device names: ``PJSIP/2001`` may exist on both. Each PBX gets its
own call model, so nothing collides inside one; what leaves a PBX (an event, a stream,
a timeline row, a metric, a device name) carries the PBX's name.

Devices: the **home** PBX is the first one listed (the only one, when
``CTI_PBXES`` is not set); its devices keep their plain names (``PJSIP/2001``), so a
single-PBX deployment and its agent records stay exactly as they were, and adding a
second PBX changes nothing for the agents of the first. A device on any other PBX is
``<device>@<pbx>`` (``PJSIP/2001@b``) everywhere cti names it: events, agent streams,
agent records, agent states, the wallboard. Before an AMI action goes to that PBX the
suffix is taken off again (:func:`split_device`).

Inter-PBX trunks: on every PBX, the PJSIP endpoint that leads to PBX ``b`` is named
``pbx-b`` (:data:`TRUNK_PREFIX`). Its channels are plumbing, never an agent
(:func:`agent_of`), and only they are trusted to carry a call's id from one PBX to
another (``X-CTI-Call-ID``, the FastAGI ``attach`` script).

Pure: no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

from cti.calls.model.records import default_agent_of

#: A PBX name: it lands in Redis keys, metric labels, device names and (upper-cased)
#: environment variable names, so it is short and plain.
NAME = re.compile(r"[a-z][a-z0-9_]{0,15}")
#: The one PBX's name when ``CTI_PBXES`` is not set.
DEFAULT_PBX = "default"
#: The inter-PBX endpoint leading to PBX ``b`` is ``pbx-b`` on every other PBX.
TRUNK_PREFIX = "pbx-"


@dataclass(frozen=True, slots=True)
class Pbx:
    """One Asterisk server: where its AMI is and who we log in as."""

    name: str
    host: str
    port: int
    username: str
    secret: str = field(default="", repr=False)
    #: The first PBX listed: its devices keep their plain names.
    home: bool = True

    def device(self, endpoint: str) -> str:
        """How cti names a device of this PBX (``PJSIP/2001`` → ``PJSIP/2001@b``)."""
        return endpoint if self.home else f"{endpoint}@{self.name}"

    def env_suffix(self) -> str:
        """``_B`` for PBX ``b``: the suffix of its own AMI variables."""
        return "_" + self.name.upper()


def split_device(device: str) -> tuple[str, str | None]:
    """``PJSIP/2001@b`` → (``PJSIP/2001``, ``b``); a home device → (itself, None).

    Only a suffix that is a PBX name counts, so a device whose own name holds an ``@``
    followed by something else is left whole."""
    endpoint, at, pbx = device.rpartition("@")
    if at and endpoint and NAME.fullmatch(pbx):
        return endpoint, pbx
    return device, None


def pbx_of(device: str, home: str) -> str:
    """The name of the PBX a device (as cti names it) is on."""
    return split_device(device)[1] or home


def parse_pbxes(raw: str) -> list[tuple[str, str, int]]:
    """``a=10.0.0.1:5038,b=10.0.0.2:5038`` → [(name, host, port), ...], in order.

    Raises ValueError with what is wrong in words."""
    seen: set[str] = set()
    out: list[tuple[str, str, int]] = []
    for item in raw.split(","):
        item = item.strip()
        if not item:
            continue
        name, eq, address = item.partition("=")
        name = name.strip()
        if not eq or not NAME.fullmatch(name):
            raise ValueError(
                f"{item[:80]!r}: expected name=host:port with a name of a-z 0-9 _ "
                "(starting with a letter, at most 16)"
            )
        if name in seen:
            raise ValueError(f"PBX {name!r} is listed twice")
        host, colon, port = address.strip().rpartition(":")
        host = host.strip("[]")
        if not colon or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"{item[:80]!r}: expected name=host:port (AMI's address)")
        seen.add(name)
        out.append((name, host, int(port)))
    if not out:
        raise ValueError("no PBX listed")
    return out


def trunk_peer(channel: str) -> str | None:
    """The PBX at the other end of an inter-PBX trunk channel (``PJSIP/pbx-b-0000001f``
    → ``b``), or None for any other channel."""
    _tech, slash, rest = channel.partition("/")
    if not slash or not rest.startswith(TRUNK_PREFIX):
        return None
    peer = rest[len(TRUNK_PREFIX) :].rpartition("-")[0] or rest[len(TRUNK_PREFIX) :]
    return peer if NAME.fullmatch(peer) else None


def agent_of(pbx: Pbx) -> Callable[[str], str | None]:
    """The call model's ``agent_of`` for a PBX: a channel's device as cti names it
    (:meth:`Pbx.device`); None for Local channels and inter-PBX trunks."""

    def device(channel: str) -> str | None:
        if trunk_peer(channel) is not None:
            return None
        endpoint = default_agent_of(channel)
        return None if endpoint is None else pbx.device(endpoint)

    return device
