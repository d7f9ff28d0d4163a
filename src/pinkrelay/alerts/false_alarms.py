"""False alarms per site over a rolling 12 months: shown with each alert, because police withdraw
response from sites with repeated false calls and the operator must know a site's record at once.

A false alarm is a closing step with outcome ``false`` (any category); a
test is not one. The site is the site stored with the alert (its name), so a
button moved to another site keeps its history where it happened. The
journal is read once (``load``) and each new false outcome is added
(``record``): no query per alert.
"""

from __future__ import annotations

import bisect
import sqlite3
from typing import Any

#: The rolling window: 365 days, in microseconds.
WINDOW_US = 365 * 24 * 3600 * 1_000_000

_QUERY = (
    "SELECT COALESCE(json_extract(a.site, '$.name'), ''), e.at FROM events e JOIN alerts a "
    "ON a.alert_id = e.alert_id WHERE e.kind = 'transition' AND e.outcome = 'false' AND e.at >= ? ORDER BY e.at"
)


def false_alarm_times(conn: sqlite3.Connection, since_us: int) -> dict[str, list[int]]:
    """Each site's false-alarm times since ``since_us``, oldest first."""
    present = {row[1] for row in conn.execute("PRAGMA table_info(events)")}
    if "outcome" not in present:  # a journal from before outcomes (alerts/migrations.py)
        return {}
    times: dict[str, list[int]] = {}
    for site, at in conn.execute(_QUERY, (since_us,)):
        times.setdefault(site, []).append(at)
    return times


def count_for_site(conn: sqlite3.Connection, site: str, now_us: int) -> int:
    return len(false_alarm_times(conn, now_us - WINDOW_US).get(site, []))


class FalseAlarms:
    """Each site's false alarms of the last 12 months, in memory."""

    def __init__(self) -> None:
        self._times: dict[str, list[int]] = {}

    async def load(self, journal: Any, now_us: int) -> None:
        self._times = await journal.execute(lambda conn: false_alarm_times(conn, now_us - WINDOW_US))

    def record(self, site: str, at_us: int) -> None:
        bisect.insort(self._times.setdefault(site, []), at_us)

    def count(self, site: str, now_us: int) -> int:
        times = self._times.get(site)
        if not times:
            return 0
        start = bisect.bisect_left(times, now_us - WINDOW_US)
        del times[:start]  # older than the window: never counted again
        return len(times)
