"""Alerts: the lifecycle table, escalation clock and the durable journal."""

from __future__ import annotations

from .escalation import Escalator
from .journal import JournalError, Recorded, SqliteJournal
from .lifecycle import AlertState, LifecycleError, Step, transition

__all__ = [
    "AlertState",
    "Escalator",
    "JournalError",
    "LifecycleError",
    "Recorded",
    "SqliteJournal",
    "Step",
    "transition",
]
