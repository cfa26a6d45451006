"""Request IDs: one per HTTP request, taken from a well-formed ``X-Request-ID`` (so a load balancer's ID
follows the request through) or made up, echoed on the response and attached to every log line written while
the request runs."""

from __future__ import annotations

import contextvars
import re
import secrets

HEADER = "x-request-id"
#: What we accept from outside: short, printable, no separators a log parser could trip over.
_ACCEPTABLE = re.compile(r"[A-Za-z0-9._:-]{1,64}")

current: contextvars.ContextVar[str | None] = contextvars.ContextVar("authgate_request_id", default=None)


def choose(incoming: bytes | None) -> str:
    """The caller's ID when it is safe to log verbatim, else a fresh random one."""
    if incoming:
        try:
            text = incoming.decode("ascii")
        except UnicodeDecodeError:
            text = ""
        if _ACCEPTABLE.fullmatch(text):
            return text
    return secrets.token_hex(8)
