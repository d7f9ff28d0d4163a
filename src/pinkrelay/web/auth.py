"""Who may use the web control room: secrets checked against operator accounts, sessions, throttling.

* Secrets are the ones ``pinkrelay operators add`` printed. The store keeps
  only ``stored_key`` (SHA-256 of an HMAC of the scrypt hash, see
  pinkrelay/operators.py); the web sign-in recomputes it from the typed
  secret and compares in constant time. scrypt costs tens of milliseconds
  of CPU, so it runs in a worker thread, never on the relay's event loop,
  and at most two at once.
* Sessions live in memory only (a relay restart signs everyone out): a
  random 256-bit token in an HttpOnly, SameSite=Strict cookie, a separate
  CSRF token the page sends back in a header on every POST, an absolute
  lifetime of one shift (8 h) and an idle timeout (30 min without a request
  or an open board). Disabling an account ends its sessions within a second.
* Wrong secrets are counted per operator name and per client address in a
  sliding window; past the limit sign-in answers 429 with Retry-After
  without running scrypt at all, so guessing is slow and cheap to refuse.
"""

from __future__ import annotations

import hmac
import secrets
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field

import trio

from ..alerts.routing import Recipient
from ..operators import SCRYPT_N, SCRYPT_P, SCRYPT_R, Operator
from ..protocol.auth import scram_keys

SESSION_LIFETIME = 8 * 3600.0
SESSION_IDLE = 30 * 60.0
MAX_NAME_LENGTH = 64
MAX_SECRET_LENGTH = 256

_DECOY_SALT = secrets.token_bytes(16)


def secret_matches(operator: Operator | None, secret: str) -> bool:
    """True when ``secret`` is this operator's; a missing account costs the same scrypt."""
    if operator is None:
        scram_keys(secret.encode(), _DECOY_SALT, SCRYPT_N, SCRYPT_R, SCRYPT_P)
        return False
    try:
        salt = bytes.fromhex(operator.salt)
        expected = bytes.fromhex(operator.stored_key)
    except ValueError:
        return False
    _, stored_key = scram_keys(secret.encode(), salt, operator.n, operator.r, operator.p)
    return hmac.compare_digest(stored_key, expected)


async def check_secret(operator: Operator | None, secret: str, limiter: trio.CapacityLimiter) -> bool:
    """``secret_matches`` in a worker thread, so the relay's loop keeps moving alerts.

    ``limiter`` bounds how many run at once (two keep sign-in from taking every core).
    """
    return await trio.to_thread.run_sync(secret_matches, operator, secret, limiter=limiter)


@dataclass(eq=False)
class WebSession:
    """One signed-in browser."""

    token: str
    operator: str
    role: str
    csrf: str
    remote: str
    created: float
    last_seen: float
    #: Set when the session ends (sign-out, expiry, account disabled); open
    #: WebSockets of the session close on it.
    ended: trio.Event = field(default_factory=trio.Event)
    end_reason: str = ""
    #: Open WebSockets; while one is open the board counts as in use.
    sockets: int = 0
    #: The operator's control room (which alerts the board shows: alerts/routing.py).
    room: str = "main"

    @property
    def recipient(self) -> Recipient:
        return Recipient(role=self.role, room=self.room)


class SessionStore:
    """Sessions by cookie token, with an absolute lifetime and an idle timeout."""

    def __init__(
        self,
        *,
        lifetime: float = SESSION_LIFETIME,
        idle: float = SESSION_IDLE,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.lifetime = lifetime
        self.idle = idle
        self.clock = clock
        self._sessions: dict[str, WebSession] = {}
        #: Sessions a request found expired; the next sweep reports them, so every expiry is audited.
        self._expired: list[WebSession] = []

    def __len__(self) -> int:
        return len(self._sessions)

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(list(self._sessions.values()))

    def create(self, operator: str, role: str, remote: str, room: str = "main") -> WebSession:
        now = self.clock()
        session = WebSession(
            token=secrets.token_urlsafe(32),
            operator=operator,
            role=role,
            room=room,
            csrf=secrets.token_urlsafe(32),
            remote=remote,
            created=now,
            last_seen=now,
        )
        self._sessions[session.token] = session
        return session

    def expired_reason(self, session: WebSession, now: float) -> str:
        if now - session.created >= self.lifetime:
            return f"session older than {self.lifetime / 3600:g} h"
        if session.sockets == 0 and now - session.last_seen >= self.idle:
            return f"idle for {self.idle / 60:g} min"
        return ""

    def get(self, token: str | None, *, touch: bool = True) -> WebSession | None:
        """The live session for ``token`` (its idle clock restarted), or None."""
        if not token:
            return None
        session = self._sessions.get(token)
        if session is None:
            return None
        now = self.clock()
        reason = self.expired_reason(session, now)
        if reason:
            self.end(session, reason)
            self._expired.append(session)
            return None
        if touch:
            session.last_seen = now
        return session

    def end(self, session: WebSession, reason: str) -> None:
        if self._sessions.get(session.token) is session:
            del self._sessions[session.token]
        if not session.ended.is_set():
            session.end_reason = reason
            session.ended.set()

    def sweep(self) -> list[WebSession]:
        """End every expired session; returns them and those requests found expired (for the audit log)."""
        now = self.clock()
        ended, self._expired = self._expired, []
        for session in list(self._sessions.values()):
            reason = self.expired_reason(session, now)
            if reason:
                self.end(session, reason)
                ended.append(session)
            elif session.sockets:
                session.last_seen = now
        return ended

    def of_operator(self, name: str) -> list[WebSession]:
        return [s for s in self._sessions.values() if s.operator == name]


class RateLimiter:
    """Failures per key in a sliding window; a key at the limit must wait."""

    def __init__(
        self,
        limit: int,
        window: float = 60.0,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_keys: int = 10_000,
    ) -> None:
        self.limit = limit
        self.window = window
        self.clock = clock
        self.max_keys = max_keys
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()

    def _recent(self, key: str, now: float) -> deque[float] | None:
        times = self._failures.get(key)
        if times is None:
            return None
        while times and times[0] <= now - self.window:
            times.popleft()
        if not times:
            del self._failures[key]
            return None
        return times

    def retry_after(self, key: str) -> float:
        """Seconds until ``key`` may try again (0: now)."""
        now = self.clock()
        times = self._recent(key, now)
        if times is None or len(times) < self.limit:
            return 0.0
        return max(0.0, times[-self.limit] + self.window - now)

    def fail(self, key: str) -> None:
        now = self.clock()
        times = self._recent(key, now)
        if times is None:
            times = self._failures[key] = deque()
            while len(self._failures) > self.max_keys:
                self._failures.popitem(last=False)
        times.append(now)
        self._failures.move_to_end(key)

    def clear(self, key: str) -> None:
        self._failures.pop(key, None)


class SignInThrottle:
    """Wrong secrets, throttled per (address, name) with exponential backoff and per address.

    Throttling by name alone would let anyone who knows an operator's name
    lock that operator out of the control room during an emergency. Here only
    the address that failed waits: after ``free_failures`` wrong secrets for a
    name from one address, that address waits ``base_delay`` seconds for that
    name, doubling with every further failure up to ``max_delay``; and an
    address with ``per_address`` failures in ``window`` seconds (whatever the
    names: a password spray) waits for every name. A correct secret from an
    address that has not failed is always checked.
    """

    def __init__(
        self,
        *,
        free_failures: int = 3,
        base_delay: float = 2.0,
        max_delay: float = 300.0,
        per_address: int = 10,
        window: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        max_keys: int = 10_000,
    ) -> None:
        self.free_failures = free_failures
        self.base_delay = base_delay
        self.max_delay = max_delay
        self.clock = clock
        self.max_keys = max_keys
        self.addresses = RateLimiter(per_address, window, clock=clock)
        #: (address, name) -> (failures in a row, time of the last one)
        self._pairs: OrderedDict[tuple[str, str], tuple[int, float]] = OrderedDict()

    def delay_after(self, failures: int) -> float:
        """How long an (address, name) waits after this many failures in a row."""
        if failures < self.free_failures:
            return 0.0
        return min(self.max_delay, self.base_delay * 2 ** (failures - self.free_failures))

    def retry_after(self, name: str, address: str) -> float:
        """Seconds until ``address`` may try ``name`` again (0: now)."""
        wait = self.addresses.retry_after(address)
        pair = self._pairs.get((address, name))
        if pair is not None:
            failures, last = pair
            wait = max(wait, last + self.delay_after(failures) - self.clock())
        return max(0.0, wait)

    def failed(self, name: str, address: str) -> None:
        failures, _ = self._pairs.pop((address, name), (0, 0.0))
        self._pairs[(address, name)] = (failures + 1, self.clock())
        while len(self._pairs) > self.max_keys:
            self._pairs.popitem(last=False)
        self.addresses.fail(address)

    def succeeded(self, name: str, address: str) -> None:
        """The right secret: that address's run of failures for that name is over."""
        self._pairs.pop((address, name), None)


def parse_cookies(header: str) -> dict[str, str]:
    cookies: dict[str, str] = {}
    for part in header.split(";"):
        name, sep, value = part.strip().partition("=")
        if sep and name and name not in cookies:
            cookies[name] = value.strip().strip('"')
    return cookies


def tokens_equal(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())

