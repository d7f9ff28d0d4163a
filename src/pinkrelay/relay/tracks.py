"""Track ids: which block of ids each button streams on, and when a block can be used again. Sans-IO.

Media frames name their track, not their button, and the relay forwards a
button's frames to consoles unchanged, so a track id must mean one button to
every console that could receive it. Each button that connects gets a block
of ``block_size`` consecutive ids (``max_tracks``). A block is **held** while
the button has a session or any console watches the button: a console that
watches a button that dropped off gets the same ids back when it returns, and
no console ever sees another button's media on ids it knows as someone else's.
When neither holds it, the block goes back to the free list and the lowest
free block is handed out next, so reconnect churn over weeks never runs the
space out.

Two sizes of id space exist (docs/protocol.md §2.5): protocol v1 headers
carry 16-bit track ids, v2 headers up to ``MAX_TRACK_ID_V2``. A v1 button can
only use blocks that end at or below 65535; a v2 button takes those too while
any are free (so consoles that speak only v1 can watch it), and a block above
them only when they are all taken.

Nothing here knows about sockets, sessions or the hub: the relay says when a
session starts and ends and when watching starts and stops.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable

from .._core.wire import MAX_TRACK_ID, MAX_TRACK_ID_V2


class TrackSpaceFull(Exception):
    """No block of track ids is free for this button; the message says why and what to do."""


class TrackSpace:
    """Blocks of track ids by button, freed when nobody holds them, lowest free block first."""

    def __init__(self, block_size: int, *, is_watched: Callable[[str], bool] = lambda button_id: False,
                 narrow_limit: int = MAX_TRACK_ID, wide_limit: int = MAX_TRACK_ID_V2) -> None:
        if block_size < 1:
            raise ValueError(f"block_size must be at least 1, not {block_size}")
        self.block_size = block_size
        #: Highest track id a v1 button may use, and a v2 button.
        self.narrow_limit = narrow_limit
        self.wide_limit = max(wide_limit, narrow_limit)
        self._narrow_blocks = narrow_limit // block_size
        self._wide_blocks = self.wide_limit // block_size
        self._free_narrow: list[int] = []
        self._free_wide: list[int] = []
        self._next_block = 0
        #: Block index by button, and what holds it: its session, or a console watching it (``is_watched``).
        self._blocks: dict[str, int] = {}
        self._connected: set[str] = set()
        self._is_watched = is_watched

    # -- what the relay tells it --------------------------------------------------

    def acquire(self, button_id: str, *, wide: bool = False) -> tuple[int, ...]:
        """The block for a button that has just signed in: the one it holds, or the lowest free one.

        Raises TrackSpaceFull when no block fits (a v1 button when every
        16-bit block is held).
        """
        block = self._blocks.get(button_id)
        if block is not None and (wide or self._is_narrow(block)):
            self._connected.add(button_id)
            return self.ids(block)
        if block is not None:
            # It had a wide block and now speaks v1 (a firmware downgrade): it needs a narrow one.
            self._give_back(button_id)
        block = self._take(wide)
        self._blocks[button_id] = block
        self._connected.add(button_id)
        return self.ids(block)

    def disconnected(self, button_id: str) -> None:
        """The button's session ended (a newer session of the same button calls ``acquire`` first)."""
        self._connected.discard(button_id)
        self._release_if_unheld(button_id)

    def unwatched(self, button_id: str) -> None:
        """A console stopped watching the button (unsubscribe, or the console left): free it if nothing holds it."""
        self._release_if_unheld(button_id)

    # -- what it answers ----------------------------------------------------------

    def block_of(self, button_id: str) -> tuple[int, ...] | None:
        block = self._blocks.get(button_id)
        return None if block is None else self.ids(block)

    def ids(self, block: int) -> tuple[int, ...]:
        first = block * self.block_size + 1
        return tuple(range(first, first + self.block_size))

    @property
    def held(self) -> int:
        return len(self._blocks)

    @property
    def capacity(self) -> int:
        """Blocks there are in all (v2 buttons); ``narrow_capacity`` for v1 buttons."""
        return self._wide_blocks

    @property
    def narrow_capacity(self) -> int:
        return self._narrow_blocks

    def stats(self) -> dict[str, int]:
        return {"track_blocks_held": self.held, "track_blocks_free": self.capacity - self.held}

    # -- inside -------------------------------------------------------------------

    def _is_narrow(self, block: int) -> bool:
        return block < self._narrow_blocks

    def _take(self, wide: bool) -> int:
        if self._free_narrow:
            return heapq.heappop(self._free_narrow)
        if self._next_block < self._narrow_blocks:
            self._next_block += 1
            return self._next_block - 1
        if not wide:
            raise TrackSpaceFull(
                f"all {self._narrow_blocks} blocks of {self.block_size} track ids that a protocol v1 button can "
                f"use are held ({self.held} buttons connected or watched); a button that offers protocol v2 "
                "in hello can use the wider space, or lower max_tracks")
        if self._free_wide:
            return heapq.heappop(self._free_wide)
        if self._next_block < self._wide_blocks:
            self._next_block += 1
            return self._next_block - 1
        raise TrackSpaceFull(
            f"all {self._wide_blocks} blocks of {self.block_size} track ids are held ({self.held} buttons "
            "connected or watched); lower max_tracks or spread the buttons over more relays")

    def _release_if_unheld(self, button_id: str) -> None:
        if button_id in self._connected or self._is_watched(button_id):
            return
        self._give_back(button_id)

    def _give_back(self, button_id: str) -> None:
        block = self._blocks.pop(button_id, None)
        if block is None:
            return
        heapq.heappush(self._free_narrow if self._is_narrow(block) else self._free_wide, block)
