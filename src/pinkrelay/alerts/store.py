"""AlertStore: what the relay asks of whatever stores its alerts, and the two answers it has.

The relay acknowledges a press only once ``record`` has returned, so the
store decides what "stored" means:

- ``SqliteJournal`` (alerts/journal.py), the default: one relay, a SQLite
  file committed with ``synchronous=FULL``. Its cursors are handed out before
  the commit (``take_cursor``), so the relay tells consoles at once and puts
  events in cursor order itself (relay/sequencer.py): ``announces`` is False.
- ``JetStreamAlertStore`` (cluster/bus.py), with ``cluster_nats_urls``: a
  replicated JetStream stream shared by several relays. Its cursors are
  stream sequences, known only after the PubAck, and every relay hears of
  every record from the stream, in order: ``announces`` is True, the store
  calls ``on_event`` for each, and the relay broadcasts what it is given.

A third store implements these calls; nothing else in the relay changes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from ..protocol import Alert, AlertUpdate, ButtonState
from .journal import Recorded
from .lifecycle import Step


class AlertStore(Protocol):
    #: True: stored events reach the relay through ``on_event``, in the store's order, with its cursors.
    announces: bool
    on_event: Callable[[Alert | AlertUpdate | ButtonState], None] | None
    on_commit: Callable[[float, int], None] | None

    async def open(self) -> None: ...
    async def close(self) -> None: ...

    @property
    def next_cursor(self) -> int: ...

    def take_cursor(self) -> int:
        """The next event's cursor if the store hands them out before storing; 0 if it cannot."""

    async def record(self, alert: Alert, *, merge_window_us: int = 0) -> Recorded:
        """Store a press once by its id; returns once it is durable. Raises JournalError if it is not."""

    async def apply(self, step: Step, *, level: int | None = None, cursor: int = 0) -> AlertUpdate:
        """Store a lifecycle step or escalation; StaleStep if the alert changed meanwhile."""

    async def get(self, alert_id: str) -> Alert | None: ...
    async def open_alerts(self) -> list[Alert]: ...
    async def recent_alerts(self, since_us: int, limit: int = 200_000) -> list[Alert]: ...
    async def snapshot(self, resume_from: int = 0) -> tuple[int, list[Alert], list[Alert | AlertUpdate]]: ...
    async def load_counters(self) -> dict[tuple[str, str], int]: ...
    async def save_counter(self, role: str, identity: str, counter: int) -> None: ...
    async def probe(self) -> None: ...
    async def audit(self, at: int, operator: str, action: str, subject: str, detail: str = "") -> None: ...
