"""What a channel is and what it is handed."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Protocol

from authgate.approvals.service import ApprovalRequest
from authgate.store import User


class DeliveryError(Exception):
    """A channel could not deliver; logged by the router, never raised into the requester."""


@dataclass(frozen=True)
class Delivery:
    request: ApprovalRequest
    user: User | None
    #: intent ("open", "approve", "deny") -> one-time link URL, fresh for this channel.
    links: dict[str, str]
    #: The short code, only on the channels configured to carry it, and only when links require it.
    code: str | None
    code_required: bool

    @property
    def link(self) -> str:
        return self.links.get("open") or next(iter(self.links.values()))


class Channel(Protocol):
    name: str
    #: Which links this channel carries: ("open",) or ("approve", "deny").
    intents: tuple[str, ...]
    #: Shorter (128-bit) tokens, for SMS.
    short_links: bool
    #: Delivered before ``notify`` returns (no I/O); others run in the background.
    inline: bool

    def reaches(self, user: User | None) -> bool: ...

    async def send(self, delivery: Delivery) -> None: ...


_CONTROL = re.compile(r"[\x00-\x1f\x7f\u2028\u2029]+")


def one_line(text: str | None, limit: int) -> str:
    """Untrusted text made safe for a header, an SMS or a log line: no control characters, bounded."""
    cleaned = _CONTROL.sub(" ", text or "").strip()
    return cleaned if len(cleaned) <= limit else cleaned[: limit - 1] + "…"
