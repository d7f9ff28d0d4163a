"""Logging: one line per connection, alert, refusal and drop decision.

Text for people, ``--log-format json`` for machines: one JSON object per
line with the time, level, message and the record's structured ``fields``
(ids such as button, alert_id, operator, peer).
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any


_RESERVED = frozenset({"t", "level", "logger", "message", "exception"})


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {}
        fields = getattr(record, "fields", None)
        if fields:
            # A field never hides the record's own keys (an alert's escalation
            # "level" must not replace the log level).
            entry.update({k if k not in _RESERVED else f"{k}_": v for k, v in fields.items()})
        entry.update(
            t=round(record.created, 6),
            level=record.levelname.lower(),
            logger=record.name,
            message=record.getMessage(),
        )
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s.%(msecs)03d %(levelname)-7s %(message)s", "%Y-%m-%dT%H:%M:%S")
        self.converter = time.gmtime


def setup_logging(fmt: str = "text", level: str = "info", stream: Any = None) -> None:
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger("pinkrelay")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False


def event(logger: logging.Logger, level: int, message: str, /, **fields: Any) -> None:
    """Log ``message`` with structured ``fields`` (shown in JSON logs)."""
    if logger.isEnabledFor(level):
        logger.log(level, message, extra={"fields": fields})
