"""The errors of the AMI client (:mod:`cti.ami.client`): what callers of its actions
catch."""

from __future__ import annotations

from cti.ami.protocol import Message


class AmiError(Exception):
    """Base of every error this module raises."""


class AmiNotConnected(AmiError):
    """No logged-in connection (yet, or any more): the action was not sent or lost."""


class AmiTimeout(AmiError):
    """No answer to an action within its timeout."""


class AmiActionError(AmiError):
    """Asterisk answered ``Response: Error``; the answer is in :attr:`message`."""

    def __init__(self, action: str, message: Message) -> None:
        self.action = action
        self.message = message
        super().__init__(f"{action} failed: {message.get('Message', '(no message)')}")


class AmiAuthError(AmiActionError):
    """The Login was rejected: a configuration error, retried only with backoff."""


class AmiConnectionLost(AmiNotConnected):
    """The connection ended (closed by Asterisk, no Pong, too slow a consumer)."""
