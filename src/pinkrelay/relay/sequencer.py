"""CursorSequencer: journal events reach consoles in cursor order. Sans-IO.

A console resumes after the highest cursor it has seen, so it must never see
cursor 11 before cursor 10: if it dropped off in between, 10 would be lost
to it. Cursors are handed out in submission order, but events are ready at
different times (a press is shown before its commit, an operator's step
after). The sequencer holds an event until every lower cursor has been sent
or given up (a request that failed releases its cursor with no event).

A cursor that is never released must not silence the control room: after
``max_wait`` seconds the sequencer skips it (``tick``) and says so.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

log = logging.getLogger("pinkrelay.relay")


class CursorSequencer:
    def __init__(self, first: int, send: Callable[[Any], None], *, max_wait: float = 1.0) -> None:
        self._next = first
        self._send = send
        self._ready: dict[int, Any] = {}
        self.max_wait = max_wait
        self._blocked_since: float | None = None
        self.skipped = 0

    @property
    def waiting(self) -> int:
        """Events held back behind a lower cursor not yet released."""
        return len(self._ready)

    def release(self, cursor: int, event: Any | None, now: float = 0.0) -> None:
        """``cursor`` is settled: send ``event`` (None: nothing to send) and all that waited for it."""
        if cursor < self._next:
            if event is not None:
                self._send(event)  # settled before this run's sequence began
            return
        self._ready[cursor] = event
        self._flush()
        if self._ready and self._blocked_since is None:
            self._blocked_since = now

    def _flush(self) -> None:
        while self._next in self._ready:
            ready = self._ready.pop(self._next)
            self._next += 1
            if ready is not None:
                self._send(ready)
        if not self._ready:
            self._blocked_since = None

    def tick(self, now: float) -> None:
        """Skip cursors that held others back for longer than ``max_wait``."""
        if self._blocked_since is None or now - self._blocked_since < self.max_wait:
            return
        lowest = min(self._ready)
        log.warning("cursors %d..%d were never settled; sending the %d event(s) waiting behind them",
                    self._next, lowest - 1, len(self._ready))
        self.skipped += lowest - self._next
        self._next = lowest
        self._blocked_since = None
        self._flush()
        if self._ready:
            self._blocked_since = now
