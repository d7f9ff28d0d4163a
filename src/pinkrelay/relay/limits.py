"""Abuse limits at the relay's door and on each button's media. Sans-IO: time is an argument.

A relay that holds thousands of connections must not let one device or one
attacker take it down, and must never turn away the button that matters:

* ``Admission`` decides, before a byte is read, whether a new connection may
  start a handshake: unauthenticated connections per source address and in
  all, and a token bucket of handshakes per address. A button that has signed
  in no longer counts, so a slowloris of half-open connections fills only its
  own allowance. The handshake deadline (``handshake_timeout``) ends each of
  them anyway. Many buttons behind one NAT share an address: the defaults
  leave room for a campus reconnecting at once.
* ``MediaRate`` keeps a button's media to ``max_button_bitrate``: messages
  past the bucket are dropped (the button's alerts and control frames are
  never counted or dropped), and a button that stays over the limit for
  ``media_overrun_close`` seconds is closed with an ``error`` naming the limit.

Both count what they refuse, by reason, for the metrics, and say when a log
line is due so that a flood is logged once per interval, not once per attempt.
"""

from __future__ import annotations

import enum
import random
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field

#: Seconds between two log lines about the same refusal of the same address.
LOG_INTERVAL = 10.0
#: Seconds without a dropped message that end a button's media overrun.
OVERRUN_QUIET = 1.0


def backoff_delay(attempt: int, *, first: float = 1.0, cap: float = 30.0,
                  rng: Callable[[], float] = random.random) -> float:
    """Seconds before retry number ``attempt`` (1, 2, …): doubling from ``first`` up to ``cap``, with jitter.

    The jitter (a random half of the delay) keeps thousands of alerts that
    failed together, on a full disk say, from retrying together.
    """
    delay = min(cap, first * 2 ** max(0, attempt - 1))
    return delay * (0.5 + rng() / 2)


class Refusal(enum.StrEnum):
    """Why a connection was turned away before its handshake."""

    PER_ADDRESS = "unauthenticated_per_address"
    TOTAL = "unauthenticated_total"
    HANDSHAKE_RATE = "handshake_rate"


@dataclass(slots=True)
class _Bucket:
    tokens: float
    updated: float

    def take(self, rate: float, burst: float, now: float, amount: float = 1.0) -> bool:
        self.tokens = min(burst, self.tokens + (now - self.updated) * rate)
        self.updated = now
        if self.tokens < amount:
            return False
        self.tokens -= amount
        return True


@dataclass(slots=True)
class _LogGate:
    """One log line per key and interval, with how many were held back meanwhile."""

    interval: float = LOG_INTERVAL
    _last: dict[tuple[str, str], float] = field(default_factory=dict)
    _held: dict[tuple[str, str], int] = field(default_factory=dict)

    def due(self, key: tuple[str, str], now: float) -> int | None:
        """None: stay quiet; otherwise log now, mentioning this many held back since the last line."""
        last = self._last.get(key)
        if last is not None and now - last < self.interval:
            self._held[key] = self._held.get(key, 0) + 1
            return None
        self._last[key] = now
        if len(self._last) > 10_000:  # a flood from many addresses: forget the oldest
            for stale in sorted(self._last, key=self._last.__getitem__)[:5_000]:
                self._last.pop(stale, None)
                self._held.pop(stale, None)
        return self._held.pop(key, 0)


class Admission:
    """Who may start a handshake now."""

    def __init__(self, *, per_address: int, total: int, handshake_rate: float, handshake_burst: int) -> None:
        self.per_address = per_address
        self.total = total
        self.handshake_rate = handshake_rate
        self.handshake_burst = handshake_burst
        self._unauthenticated: defaultdict[str, int] = defaultdict(int)
        self.unauthenticated_total = 0
        self._buckets: dict[str, _Bucket] = {}
        self.refused: dict[str, int] = {reason.value: 0 for reason in Refusal}
        self.logs = _LogGate()

    def admit(self, address: str, now: float) -> Refusal | None:
        """A new connection from ``address``: None admits it (it counts until ``signed_in``/``left``)."""
        refusal = None
        if self._unauthenticated[address] >= self.per_address:
            refusal = Refusal.PER_ADDRESS
        elif self.unauthenticated_total >= self.total:
            refusal = Refusal.TOTAL
        elif self.handshake_rate > 0:
            bucket = self._buckets.get(address)
            if bucket is None:
                bucket = self._buckets[address] = _Bucket(float(self.handshake_burst), now)
                self._forget_full_buckets(now)
            if not bucket.take(self.handshake_rate, self.handshake_burst, now):
                refusal = Refusal.HANDSHAKE_RATE
        if refusal is not None:
            if not self._unauthenticated[address]:
                del self._unauthenticated[address]
            self.refused[refusal.value] += 1
            return refusal
        self._unauthenticated[address] += 1
        self.unauthenticated_total += 1
        return None

    def signed_in(self, address: str) -> None:
        """An admitted connection completed its handshake: it no longer counts."""
        self._release(address)

    def left(self, address: str) -> None:
        """An admitted connection closed before signing in."""
        self._release(address)

    def describe(self, refusal: Refusal, address: str) -> str:
        if refusal is Refusal.PER_ADDRESS:
            return (f"{self.per_address} connections from {address} have not signed in yet "
                    "(max_unauthenticated_per_address)")
        if refusal is Refusal.TOTAL:
            return f"{self.total} connections have not signed in yet (max_unauthenticated)"
        return (f"more than {self.handshake_rate:g} handshakes a second from {address} "
                "(handshake_rate_per_address); retry later")

    def _release(self, address: str) -> None:
        count = self._unauthenticated.get(address, 0)
        if count <= 1:
            self._unauthenticated.pop(address, None)
        else:
            self._unauthenticated[address] = count - 1
        if count:
            self.unauthenticated_total -= 1

    def _forget_full_buckets(self, now: float) -> None:
        """Bound the table: an address whose bucket has refilled is as good as new."""
        if len(self._buckets) <= 4096:
            return
        refill = self.handshake_burst / self.handshake_rate
        for address in [a for a, b in self._buckets.items() if now - b.updated >= refill]:
            del self._buckets[address]


class Verdict(enum.IntEnum):
    PASS = 0
    DROP = 1
    CLOSE = 2


class MediaRate:
    """One button's media bitrate against ``bits_per_second`` (a token bucket of ``burst`` seconds)."""

    __slots__ = ("bytes_per_second", "burst_bytes", "close_after", "_bucket", "over_since", "last_drop",
                 "dropped")

    def __init__(self, bits_per_second: int, *, burst: float = 2.0, close_after: float = 10.0,
                 now: float = 0.0) -> None:
        self.bytes_per_second = bits_per_second / 8
        self.burst_bytes = self.bytes_per_second * burst
        self.close_after = close_after
        self._bucket = _Bucket(self.burst_bytes, now)
        #: When the button went over the limit (None: within it), and its latest dropped message.
        self.over_since: float | None = None
        self.last_drop = float("-inf")
        self.dropped = 0

    def offer(self, nbytes: int, now: float) -> Verdict:
        """PASS, DROP (over the limit), or CLOSE (over it, with drops, for ``close_after`` seconds).

        A button at twice the limit has half its messages pass; it is still
        over the limit: only a whole second without a drop ends an overrun.
        """
        if self._bucket.take(self.bytes_per_second, self.burst_bytes, now, nbytes):
            if self.over_since is not None and now - self.last_drop >= OVERRUN_QUIET:
                self.over_since = None
            return Verdict.PASS
        self.dropped += 1
        self.last_drop = now
        if self.over_since is None:
            self.over_since = now
        return Verdict.CLOSE if now - self.over_since >= self.close_after else Verdict.DROP
