"""Pre-roll: the last seconds of every streaming button, kept so a recording starts before the press.

A ring holds references to the wire bytes the relay already built for
fan-out: nothing is copied when a message enters a ring, and a recording
that starts gets ``Message`` objects around the same bytes. The ring keeps
each message as its ``as_tuple()`` (numbers and the tuple of wire chunks),
not as the ``Message`` object: tuples of numbers and bytes are untracked by
Python's cycle collector, while 100 rings of 20 s hold some 130 000
messages, and walking that many tracked objects in every full collection
would pause the event loop for tens of milliseconds each time. A ring is a list of GOPs (a video keyframe and what followed it,
audio included), so whatever it holds is decodable from its first message.
It keeps the fewest whole GOPs that still reach ``pre_roll`` seconds back.

All rings share one memory budget. Over it, the ring that reaches furthest
back loses its oldest GOP, again until the total is under 90 % of the
budget (so a ring at the budget does not pay a scan per message). Cuts are
counted; the budget, the bytes held and the cuts are in the metrics.

What feeds a ring is ``offer(message, now)``: the hub calls it for each
message of the ring's stream today, and a compiled data plane can call the
same method later. Nothing here knows about sockets, files or trio.
"""

from __future__ import annotations

from collections import deque
from typing import Any

from ..._core import HEADER_SIZE, Lane, Message

_VIDEO = int(Lane.VIDEO)
#: After a cut for the budget, rings are cut down to this fraction of it.
LOW_WATER = 0.9


class PrerollRing:
    """One button's last ``pre_roll`` seconds, as whole GOPs of message references."""

    __slots__ = ("button_id", "_owner", "_gops", "_starts", "_current", "nbytes")

    def __init__(self, button_id: str, owner: Preroll) -> None:
        self.button_id = button_id
        self._owner = owner
        #: GOPs oldest first; each is a list of messages, a video keyframe first. Empty tuples until the
        #: first keyframe: a relay holds thousands of idle buttons, and two deques cost 1.2 KB each.
        self._gops: deque[list[Any]] | tuple[()] = ()
        #: When each GOP's keyframe arrived (relay clock, seconds).
        self._starts: deque[float] | tuple[()] = ()
        self._current: list[Any] | None = None
        self.nbytes = 0

    def offer(self, message: Any, now: float) -> None:
        """One message of this ring's stream, in arrival order (the hub's call on the media path)."""
        size = message.wire_size
        if message.lane == _VIDEO and message.keyframe:
            if not isinstance(self._gops, deque):
                self._gops, self._starts = deque(), deque()
            self._current = [message.as_tuple()]
            self._gops.append(self._current)
            self._starts.append(now)
            self._forget_older_than(now - self._owner.pre_roll)
        elif self._current is not None:
            self._current.append(message.as_tuple())
        else:
            return  # nothing decodable to attach it to until the first keyframe
        self.nbytes += size
        owner = self._owner
        owner.nbytes += size
        if owner.nbytes > owner.budget_bytes:
            owner.cut_for_budget(now)

    def span(self, now: float) -> float:
        """Seconds back from ``now`` that the ring reaches (0 when empty)."""
        return now - self._starts[0] if self._starts else 0.0

    @property
    def gop_count(self) -> int:
        return len(self._gops)

    def messages(self) -> list[Any]:
        """Every message held, oldest first, as ``Message`` objects around the same wire bytes."""
        return [Message(*entry) for gop in self._gops for entry in gop]

    def clear(self) -> None:
        while self._gops:
            self.cut_oldest()

    def cut_oldest(self) -> int:
        """Drop the oldest GOP; returns the bytes freed."""
        if not self._gops:
            return 0
        gop = self._gops.popleft()
        self._starts.popleft()
        if gop is self._current:
            self._current = None
        freed = sum(entry[6] + HEADER_SIZE * len(entry[5]) for entry in gop)  # size + headers = wire size
        self.nbytes -= freed
        self._owner.nbytes -= freed
        return freed

    def _forget_older_than(self, horizon: float) -> None:
        # Keep the newest GOP that started at or before the horizon: it is what reaches back far enough.
        starts = self._starts
        while len(starts) >= 2 and starts[1] <= horizon:
            self.cut_oldest()


class Preroll:
    """Every stream's ring, and the memory budget they share."""

    def __init__(self, pre_roll: float, budget_bytes: int) -> None:
        self.pre_roll = pre_roll
        self.budget_bytes = budget_bytes
        self.rings: dict[str, PrerollRing] = {}
        self.nbytes = 0
        self.gops_cut_for_budget = 0
        self.bytes_cut_for_budget = 0

    @property
    def enabled(self) -> bool:
        return self.pre_roll > 0 and self.budget_bytes > 0

    def open(self, button_id: str) -> PrerollRing:
        """A fresh ring for a button's (new or re-described) stream; an older one is emptied."""
        self.close(button_id)
        ring = self.rings[button_id] = PrerollRing(button_id, self)
        return ring

    def close(self, button_id: str, ring: PrerollRing | None = None) -> None:
        current = self.rings.get(button_id)
        if current is None or (ring is not None and current is not ring):
            return
        current.clear()
        del self.rings[button_id]

    def cut_for_budget(self, now: float) -> None:
        """Cut the rings that reach furthest back, a GOP at a time, to under LOW_WATER of the budget."""
        target = self.budget_bytes * LOW_WATER
        while self.nbytes > target:
            longest = max(self.rings.values(), key=lambda ring: ring.span(now), default=None)
            if longest is None or not longest.gop_count:
                return
            freed = longest.cut_oldest()
            self.gops_cut_for_budget += 1
            self.bytes_cut_for_budget += freed

    def stats(self, now: float) -> dict[str, Any]:
        spans = [ring.span(now) for ring in self.rings.values() if ring.gop_count]
        return {
            "preroll_rings": len(self.rings),
            "preroll_bytes": self.nbytes,
            "preroll_budget_bytes": self.budget_bytes,
            "preroll_gops_cut_for_budget": self.gops_cut_for_budget,
            "preroll_bytes_cut_for_budget": self.bytes_cut_for_budget,
            "preroll_shortest_seconds": round(min(spans), 3) if spans else 0.0,
        }
