"""Console channel: prints the link (and the code, when one is needed) for the operator. Development and
the demo only: it puts live links in the output. On by default only when the issuer is on loopback."""

from __future__ import annotations

from collections.abc import Callable

from authgate.approvals.channels.base import Delivery, one_line
from authgate.store import User


class ConsoleChannel:
    name = "console"
    intents: tuple[str, ...] = ("open",)
    short_links = False
    inline = True

    def __init__(self, write: Callable[[str], None] = print) -> None:
        self.write = write

    def reaches(self, user: User | None) -> bool:
        return True

    async def send(self, delivery: Delivery) -> None:
        r = delivery.request
        who = delivery.user.username if delivery.user else (r.subject or "an admin")
        line = (f"[authgate] approval {r.id} ({one_line(r.kind, 32)}) from {one_line(r.client_id, 60) or '-'} "
                f"for {one_line(who, 60)}: {delivery.link}")
        if delivery.code:
            line += f"  code {delivery.code}"
        self.write(line)
