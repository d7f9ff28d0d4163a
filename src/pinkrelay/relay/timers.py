"""Every session's protocol deadlines (handshake, heartbeat, silence) in one heap, run by one task.

A relay holds tens of thousands of idle buttons. A timer task per session
costs a task, an event and a cancel scope each (about 3 KB) only to wake
every ten seconds; here a session is one heap entry. Deadlines are lazy,
as in the supervisor: traffic only ever moves a session's deadline later,
so an entry fires at the deadline it was scheduled for, the session acts
on the clock (``RelayConnection.handle_timer``, which does nothing when
nothing is due yet) and is scheduled again at its new deadline. The one
move to an earlier deadline (a handshake that ends, READY) reschedules
at once.
"""

from __future__ import annotations

import heapq
import itertools
import logging
from typing import Any

import trio

log = logging.getLogger("pinkrelay.relay")


class SessionTimers:
    """Deadlines of every session; ``run()`` fires them, the sessions say what to do."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Any]] = []
        self._order = itertools.count()
        #: The deadline each session's live entry is for (older entries of the session are stale).
        self._due: dict[Any, float] = {}
        self._wakeup = trio.Event()

    def __len__(self) -> int:
        return len(self._due)

    def schedule(self, session: Any) -> None:
        """(Re)schedule ``session`` at its connection's next deadline, or forget it when it has none."""
        deadline = session.conn.get_timer()
        if deadline is None:
            self._due.pop(session, None)
            return
        current = self._due.get(session)
        if current is not None and current <= deadline:
            return  # the earlier entry fires first and schedules the session again
        self._due[session] = deadline
        heapq.heappush(self._heap, (deadline, next(self._order), session))
        if self._heap[0][2] is session:
            self._wakeup.set()

    def forget(self, session: Any) -> None:
        self._due.pop(session, None)

    async def run(self) -> None:
        heap = self._heap
        while True:
            while heap and self._due.get(heap[0][2]) != heap[0][0]:
                heapq.heappop(heap)  # stale: rescheduled or forgotten
            with trio.move_on_at(heap[0][0] if heap else float("inf")):
                await self._wakeup.wait()
            self._wakeup = trio.Event()
            now = trio.current_time()
            while heap and heap[0][0] <= now:
                deadline, _, session = heapq.heappop(heap)
                if self._due.get(session) != deadline:
                    continue
                del self._due[session]
                try:
                    await session.timer_fired(now)
                except Exception:  # one session's failure must not stop every other session's clock
                    log.exception("%s: timer failed; closing it", session.describe())
                    session.close("relay error in a timer")
