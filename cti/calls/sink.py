"""Where the core takes in AMI messages: :class:`CallModelSink` feeds a
:class:`~cti.calls.model.CallModel` from the AMI client.

It lives in the core, not in :mod:`cti.ami`: the transport delivers messages to any
``EventSink`` (``reset`` / ``apply`` / ``connected``) and knows nothing of calls; this
class is the core's side of that port. The live daemon's sink is the call tracker
(:mod:`cti.calls.tracker`); this plain one serves tests, tools and the screen-pop
service's call control, which only needs the model's view.
"""

from __future__ import annotations

from collections.abc import Callable

from cti.ami.protocol import Message
from cti.calls.effects import Effect
from cti.calls.model import CallModel


class CallModelSink:
    """Feeds a :class:`CallModel`; its effects go to ``on_effects`` or, without one, to
    :attr:`effects` (tests, tools)."""

    def __init__(
        self,
        model: CallModel | None = None,
        on_effects: Callable[[list[Effect]], None] | None = None,
    ) -> None:
        self.model = model if model is not None else CallModel()
        self.effects: list[Effect] = []
        self.up = False
        self._on_effects = on_effects if on_effects is not None else self.effects.extend

    def reset(self) -> None:
        self.model.reset()

    def apply(self, msg: Message) -> None:
        effects = self.model.apply(msg)
        if effects:
            self._on_effects(effects)

    def connected(self, up: bool) -> None:
        self.up = up
