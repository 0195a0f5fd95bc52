"""The one error type of the domain: a refusal with a ``code``, a ``message`` and a ``field``.

Whatever a client can be refused (a malformed edit of call data, a stale version, a call
that is not theirs, a transfer Asterisk turned down) is a :class:`DomainError`. The
``code`` says which kind of refusal, in a word a program can switch on; the ``message``
is for a person and says what to do about it; ``field`` names the part of the request at
fault, when there is one. Adapters translate codes into their own terms in one place
(the HTTP statuses: :data:`cti.screenpop.errors.STATUS`), so no feature knows about HTTP
and no handler re-maps another feature's errors.

Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

ErrorCode = Literal[
    "invalid",  # malformed; sending the same again cannot help
    "too_large",  # a length, a count or a size over its limit
    "unauthorized",  # no valid session
    "bad_credentials",  # wrong user name or password
    "forbidden",  # not the caller's to see or change
    "unknown_call",  # no such call (told only to those who may know)
    "unknown_agent",  # no such agent (told to supervisors only)
    "not_in_plan",  # well formed, but not a pause reason or queue of the routing plan (yet)
    "stale_version",  # edited against a version that is no longer current
    "not_on_call",  # the agent has no leg on the call (any more)
    "other_pbx",  # needs two devices on one PBX (ChanSpy): they are on different ones
    "refused",  # Asterisk refused the action
    "ami_unavailable",  # no AMI connection, or Asterisk did not answer in time
    "too_many_attempts",  # too many failed logins for the name or address: wait
    "busy",  # more work at once than is taken: try again shortly
]


class DomainError(Exception):
    """A refused request; nothing was changed. ``details`` are further members of the
    error's JSON form (a stale version carries the current document)."""

    def __init__(
        self,
        code: ErrorCode,
        message: str,
        field: str | None = None,
        *,
        details: Mapping[str, Any] | None = None,
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(message)
        self.code: ErrorCode = code
        self.message = message
        self.field = field
        self.details: dict[str, Any] = dict(details or {})
        #: When trying again can succeed (``too_many_attempts``, ``busy``); None: unknown.
        self.retry_after_s = retry_after_s

    def as_json(self) -> dict[str, Any]:
        """``{"error": code, "message": ..., "field": ... or None, **details}``."""
        return {"error": self.code, "message": self.message, "field": self.field, **self.details}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.code!r}, {self.message!r}, {self.field!r})"
