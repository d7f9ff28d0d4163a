"""The reports page's data: ``GET /api/reports?from=T&to=T[&room=R]`` (alerts/reports.py computes it).

``T`` is ISO 8601 with a zone (the page sends ``Date.toISOString()``) or UNIX
seconds. The journal is read on its own read-only connection in a worker
thread, one report at a time, so a year's report never holds up an alert.
A supervisor may ask for any room or all of them; an operator gets her own
room's report whatever she asks for. Shifts are in the relay's local time.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from urllib.parse import parse_qs

import trio

from ..alerts import reports
from ..alerts.routing import DEFAULT_ROOM, ROOM_NAME

#: At most this long a period per report (a longer one is refused: ask for it by parts, or use the command).
MAX_PERIOD_US = 366 * 24 * 3600 * 1_000_000
_LIMITER = trio.CapacityLimiter(1)


def _time(text: str, name: str) -> int:
    try:
        return int(float(text) * 1_000_000)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{name}={text!r} is not a time: give ISO 8601 with a zone or UNIX seconds") from None
    if moment.tzinfo is None:
        raise ValueError(f"{name}={text!r} has no time zone (e.g. 2026-11-02T00:00:00Z)")
    return int(moment.timestamp() * 1_000_000)


async def report_for(relay: Any, query: bytes, role: str, room: str) -> tuple[int, dict[str, Any]]:
    """(HTTP status, the report or an error) for the query string of a request."""
    params = {key: values[0] for key, values in parse_qs(query.decode("latin-1")).items()}
    try:
        since, until = _time(params.get("from", ""), "from"), _time(params.get("to", ""), "to")
    except ValueError as error:
        return 400, {"error": str(error)}
    if until <= since or until - since > MAX_PERIOD_US:
        return 400, {"error": "to must be after from, and the period at most 366 days"}
    wanted = params.get("room") or None
    if wanted is not None and not ROOM_NAME.fullmatch(wanted):
        return 400, {"error": f"room {wanted!r} is not a room name"}
    if role != "supervisor":
        wanted = room  # an operator reports on her own room
    path = getattr(relay.journal, "path", None)
    if path is None:
        return 503, {"error": "reports read the SQLite journal, which this relay does not keep (a cluster relay); "
                              "run pinkrelay report where a journal is"}
    registry = relay.registry

    def rooms_of(button: str) -> tuple[str, ...]:
        entry = registry.get(button)
        return entry.control_rooms if entry is not None else (DEFAULT_ROOM,)

    def compute() -> dict[str, Any]:
        tz = datetime.now().astimezone().tzinfo
        conn = reports.open_read_only(path)
        try:
            return reports.compute(conn, since_us=since, until_us=until, rooms_of=rooms_of, room=wanted, tz=tz)
        finally:
            conn.close()

    return 200, await trio.to_thread.run_sync(compute, limiter=_LIMITER)
