"""What every HTTP answer of the sidebar carries, and how a malformed request is logged.

**Headers.** The page loads only its own files (``/static/app.js``, ``app.css``) and
talks only to its own origin (``fetch`` and the ``/ws`` WebSocket, which CSP's ``'self'``
covers in current browsers), with no inline script or style, so the policy can be
``default-src 'self'``: an injected ``<script>`` or ``style`` attribute does not run.
Images may also be ``data:`` URLs: the page's icon is ``data:,`` (no /favicon.ico
request), and an image cannot run anything.
``frame-ancestors 'none'`` stops another site framing the sidebar to click its buttons
(transfer, hang up) through a disguise; ``base-uri``/``form-action`` do not fall back to
``default-src``, so they are named. ``nosniff`` keeps a browser from running a
response as a type it guesses. ``no-referrer``: nothing the sidebar links to needs to
know where the agent came from. Added when a response is prepared, so error answers,
static files and the WebSocket handshake get them too.

**Malformed requests.** aiohttp logs every request it cannot parse with a full
traceback through the standard library: anyone who can reach the port writes twenty
lines of log per garbage packet (and the traceback says nothing about our code).
:class:`ServerLog` makes that one structured line with the peer and the parser's
reason; any other error keeps its traceback.
"""

from __future__ import annotations

import logging
from typing import Any

import structlog
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from cti.text import strip_control_characters

log = structlog.get_logger(__name__)

CONTENT_SECURITY_POLICY = (
    "default-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'self';"
    " frame-ancestors 'none'"
)
_MAX_REASON_CHARS = 120
HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


async def security_headers(request: web.Request, response: web.StreamResponse) -> None:
    """``on_response_prepare``: the headers above on every response."""
    for name, value in HEADERS.items():
        response.headers.setdefault(name, value)
    if request.path.startswith("/api/"):
        response.headers.setdefault("Cache-Control", "no-store")


class ServerLog(logging.Logger):
    """The logger handed to aiohttp's request handler (``AppRunner(logger=...)``).

    aiohttp calls ``exception("Error handling request from %s", remote, exc_info=exc)``
    for a request it could not parse (``debug`` for a first request with a bad method);
    those become one ``http request malformed`` line. Anything else (an error in the
    server itself) is logged with its traceback, through structlog like the rest."""

    def __init__(self) -> None:
        super().__init__("cti.http")

    def debug(self, msg: object, *args: object, **kwargs: Any) -> None:
        self._emit("debug", msg, args, kwargs.get("exc_info"))

    def exception(self, msg: object, *args: object, **kwargs: Any) -> None:
        self._emit("error", msg, args, kwargs.get("exc_info", True))

    def error(self, msg: object, *args: object, **kwargs: Any) -> None:
        self._emit("error", msg, args, kwargs.get("exc_info"))

    def warning(self, msg: object, *args: object, **kwargs: Any) -> None:
        self._emit("warning", msg, args, kwargs.get("exc_info"))

    def _emit(self, level: str, msg: object, args: tuple[object, ...], exc_info: object) -> None:
        if isinstance(exc_info, HttpProcessingError):
            remote = args[0] if args and isinstance(args[0], str) else None
            log.warning(
                "http request malformed",
                remote=remote,
                status=exc_info.code,
                reason=_first_line(exc_info.message),
            )
            return
        text = str(msg) % args if args else str(msg)
        getattr(log, level)(f"http server: {text}", exc_info=exc_info or None)


def _first_line(message: str) -> str:
    """The parser's reason without the request's bytes it quotes on the lines after
    (``Invalid method encountered:\\n\\n  b'...'\\n    ^``): that is the sender's text."""
    lines = message.strip().splitlines() or [""]
    return strip_control_characters(lines[0].strip().rstrip(":"))[:_MAX_REASON_CHARS]
