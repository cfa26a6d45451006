"""Log formatting: plain text for people, one JSON object per line for log pipelines. Both carry the request ID.

Only what a call site passes to the logger is written; authgate never passes secrets, tokens or request bodies,
and this module adds nothing from the request beyond its ID.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from authgate.ops import requestid

#: Attributes every LogRecord has; anything else on a record came from ``extra=`` and is written as a field.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime",
                                                                                  "request_id"}


class RequestIdFilter(logging.Filter):
    """Stamps each record with the ID of the request being served (``-`` outside a request)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = requestid.current.get() or "-"
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        request_id = getattr(record, "request_id", "-")
        if request_id != "-":
            entry["request_id"] = request_id
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                entry[key] = value if isinstance(value, str | int | float | bool | type(None)) else str(value)
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s]: %(message)s"


def handler(fmt: str) -> logging.Handler:
    """A stderr handler in ``fmt`` ("text" or "json") that knows the current request ID."""
    out = logging.StreamHandler()
    out.addFilter(RequestIdFilter())
    out.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    return out
