"""Logging: one line per connection, alert, refusal and drop decision, and never a flood.

Text for people, ``--log-format json`` for machines: one JSON object per
line with the time, level, message and the record's structured ``fields``
(ids such as button, alert_id, operator, peer).

A fuzzer, a broken device or a full disk repeats the same line thousands of
times a second, which would fill the log disk or journald and bury the lines
that matter. ``RepeatLimiter`` lets through ``burst`` lines of one kind from
one peer per interval and then one line saying how many were suppressed;
lines from different buttons or addresses are different kinds, so a press
from one button is never hidden by a flood from another.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
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


#: Lines of one kind from one peer let through per interval, and the interval in seconds.
REPEAT_BURST = 5
REPEAT_INTERVAL = 10.0
#: What differs between lines of one kind: UUIDs (alert ids) first, then any number.
_NUMBERS = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|\d+")
#: The fields that say who a line is about, most specific first.
_WHO = ("button", "operator", "identity", "consumer")


@dataclass(slots=True)
class _Window:
    started: float
    passed: int
    suppressed: int
    example: str
    level: int
    name: str


class RepeatLimiter(logging.Filter):
    """At most ``burst`` lines of one kind about one peer per ``interval``; then 'suppressed N similar'.

    A kind is the line with its numbers blanked (ports, counts, ids' digits)
    from the same logger at the same level; the peer is the record's button,
    operator or identity field, or the host of its peer address. When a kind's
    interval is over, the next line of any kind first emits a summary of what
    was held back, so the count is never lost, even if the flood stopped.
    """

    def __init__(self, handler: logging.Handler, *, burst: int = REPEAT_BURST, interval: float = REPEAT_INTERVAL,
                 clock: Callable[[], float] = time.monotonic, max_kinds: int = 4096) -> None:
        super().__init__()
        self.handler = handler
        self.burst = burst
        self.interval = interval
        self.clock = clock
        self.max_kinds = max_kinds
        self._windows: OrderedDict[tuple[Any, ...], _Window] = OrderedDict()
        #: Lines suppressed since start (for metrics and tests).
        self.suppressed_total = 0

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "repeat_summary", False):
            return True
        now = self.clock()
        self._flush(now)
        key = self._kind(record)
        window = self._windows.get(key)
        if window is None:
            self._windows[key] = _Window(now, 1, 0, record.getMessage(), record.levelno, record.name)
            while len(self._windows) > self.max_kinds:
                self._summarise(*self._windows.popitem(last=False))
            return True
        if window.passed < self.burst:
            window.passed += 1
            return True
        window.suppressed += 1
        self.suppressed_total += 1
        return False

    def _kind(self, record: logging.LogRecord) -> tuple[Any, ...]:
        fields = getattr(record, "fields", None) or {}
        who = next((str(fields[name]) for name in _WHO if fields.get(name)), "")
        if not who and fields.get("peer"):
            who = str(fields["peer"]).rpartition(":")[0] or str(fields["peer"])
        template = record.msg if isinstance(record.msg, str) else str(record.msg)
        return record.name, record.levelno, who, _NUMBERS.sub("#", template.replace(who, "@") if who else template)

    def _flush(self, now: float) -> None:
        while self._windows:
            key, window = next(iter(self._windows.items()))
            if now - window.started < self.interval:
                return
            del self._windows[key]
            self._summarise(key, window)

    def _summarise(self, key: tuple[Any, ...], window: _Window) -> None:
        if not window.suppressed:
            return
        record = logging.LogRecord(window.name, max(window.level, logging.WARNING), __file__, 0,
                                   f"suppressed {window.suppressed} similar lines in {self.interval:g} s, like: "
                                   f"{window.example}", None, None)
        record.repeat_summary = True
        record.fields = {"decision": "suppress", "suppressed": window.suppressed}
        self.handler.handle(record)


def setup_logging(fmt: str = "text", level: str = "info", stream: Any = None) -> None:
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(RepeatLimiter(handler))
    root = logging.getLogger("pinkrelay")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False


def event(logger: logging.Logger, level: int, message: str, /, **fields: Any) -> None:
    """Log ``message`` with structured ``fields`` (shown in JSON logs)."""
    if logger.isEnabledFor(level):
        logger.log(level, message, extra={"fields": fields})
