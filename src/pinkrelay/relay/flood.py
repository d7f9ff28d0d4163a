"""Press floods from one button: repeats collapse into its open alert, and past a rate they are refused. Sans-IO.

A broken or hostile button can send thousands of presses at once, each with
a new alert id. Every one within ``merge_window`` of the button's open alert
already collapses into it (stored as ``duplicate``, linked to it, never
escalated), but each would still be a journal row. So repeats draw from a
token bucket per button (``press_rate_per_button`` a second, up to
``press_burst_per_button`` at once); a repeat beyond it is refused with a
non-fatal ``error`` naming the limit, the button is marked suspicious, and the
consoles are told once per open alert. The first press of a button, one
that has no open alert to collapse into, never meets the bucket: it is never
refused, however suspicious the button.

Time is an argument; nothing here touches a socket or the journal.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class _Bucket:
    open_alert: str
    tokens: float
    at: float
    #: Repeats collapsed into the open alert, and repeats refused, since it was raised.
    repeats: int = 0
    refused: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class PressRefused:
    """A repeat press refused: what to tell the button, and whether the consoles must hear of it now."""

    button_id: str
    open_alert: str
    repeats: int
    refused: int
    #: The first refusal for this open alert: mark the button suspicious and tell the consoles.
    first: bool
    limit: str

    @property
    def message(self) -> str:
        return (f"press refused: button {self.button_id} pressed again x{self.repeats + self.refused} while its "
                f"alert {self.open_alert} is open, faster than {self.limit}; it is marked suspicious. The open "
                "alert stays raised; press again later if this is a new emergency")

    @property
    def note(self) -> str:
        return (f"button {self.button_id} is suspicious: pressed again x{self.repeats + self.refused} while this "
                f"alert is open; presses past {self.limit} are refused (not stored)")


class PressGuard:
    """Token buckets of repeat presses per button, each bound to the button's open alert."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = burst
        self.limit = f"press_rate_per_button {rate:g}/s (press_burst_per_button {burst})"
        self._buckets: dict[str, _Bucket] = {}
        #: Buttons that flooded presses this run (shown in stats and logs).
        self.suspicious: set[str] = set()
        self.refused_total = 0

    def offer(self, button_id: str, open_alert: str | None, now: float) -> PressRefused | None:
        """A new press from ``button_id``; ``open_alert``: the alert it would collapse into, if any.

        None: let it through (a first press always is). A repeat that finds
        the bucket empty is refused.
        """
        if open_alert is None or not self.rate:
            return None
        bucket = self._buckets.get(button_id)
        if bucket is None or bucket.open_alert != open_alert:
            bucket = self._buckets[button_id] = _Bucket(open_alert, float(self.burst), now)
        bucket.tokens = min(float(self.burst), bucket.tokens + (now - bucket.at) * self.rate)
        bucket.at = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            bucket.repeats += 1
            return None
        bucket.refused += 1
        self.refused_total += 1
        first = bucket.refused == 1
        if first:
            self.suspicious.add(button_id)
        return PressRefused(button_id=button_id, open_alert=open_alert, repeats=bucket.repeats,
                            refused=bucket.refused, first=first, limit=self.limit)

    def repeats(self, button_id: str) -> int:
        """How often the button pressed again into its open alert (accepted ones)."""
        bucket = self._buckets.get(button_id)
        return bucket.repeats if bucket is not None else 0

    def stats(self) -> dict[str, int]:
        return {"presses_refused": self.refused_total, "buttons_suspicious": len(self.suspicious)}
