"""The talk-back desk: who may speak to a button, and the voice's way to it (docs/protocol.md §5.19).

An operator holds a control in a client (the web control room) and speaks;
the client opens a talk with ``open()``, hands each Opus packet to
``send()`` and ends with ``close()``. The desk decides and records; the
button's session carries the packets (``TalkBack`` frames, control lane:
only alert-lane frames go ahead of them).

Who may talk: a supervisor, to any connected button; an operator, only to
the button of an alert they hold, i.e. one they acknowledged that is still
open, in a room that answers the button. Everyone else is refused with a
``TalkBackRefused`` that names the reason. One talk per button at a time,
so a woman at a button never hears two officers at once.

Every talk is audited (``talk-start``, ``talk-stop``, and ``talk-refused``
for a refusal): who, which button and alert, from where, how long, how many
packets. ``evidence_hook`` is where an incident's evidence recording takes
the operator's voice; nothing is recorded while it is None.

Nothing here decodes audio: the relay passes the operator's packets on as
they came.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import trio

from .._core import Lane
from ..alerts.lifecycle import AlertState
from ..alerts.routing import Recipient
from ..errors import TalkBackRefused
from ..ids import uuid7
from ..logs import event as log_event
from ..protocol import Alert, TalkBack
from ..protocol.events import MAX_TALKBACK_PACKET

if TYPE_CHECKING:
    from .server import Relay
    from .sessions import ButtonSession

log = logging.getLogger("pinkrelay.relay")

#: Alert states in which an operator may talk: taken and not yet closed.
HELD_STATES = frozenset({AlertState.ACKNOWLEDGED.value, AlertState.DISPATCHED.value, AlertState.ON_SCENE.value})
#: Talk-back bytes a button may have queued and unread before its voice is dropped
#: (about 4 s of 32 kbit/s Opus with framing): a lagging button hears the present, not a backlog.
MAX_QUEUED_BYTES = 24 * 1024
#: Packets a second one talk may send (Opus needs 50 at 20 ms, 100 at 10 ms), and the burst allowed.
MAX_PACKET_RATE = 120.0
PACKET_BURST = 60.0


class EvidenceHook(Protocol):
    """What an incident's evidence recording implements to keep the operator's voice (issue 11)."""

    def talk_started(self, talk: Talk) -> None: ...

    def talk_packet(self, talk: Talk, packet: bytes, captured_at: int) -> None: ...

    def talk_ended(self, talk: Talk) -> None: ...


def wall_us() -> int:
    return time.time_ns() // 1000


@dataclass(eq=False)
class Talk:
    """One press-and-hold: an operator's voice to one button."""

    talk_id: str
    operator: str
    role: str
    button: str
    alert_id: str
    via: str
    session: ButtonSession
    started_at: int = field(default_factory=wall_us)
    seq: int = 0
    packets: int = 0
    bytes: int = 0
    dropped: int = 0
    #: Why the talk ended ("" while open).
    ended: str = ""
    audited: bool = False
    _tokens: float = PACKET_BURST
    _refilled: float = field(default_factory=time.monotonic)

    @property
    def open(self) -> bool:
        return not self.ended

    def _take_token(self, now: float) -> bool:
        self._tokens = min(PACKET_BURST, self._tokens + (now - self._refilled) * MAX_PACKET_RATE)
        self._refilled = now
        if self._tokens < 1.0:
            return False
        self._tokens -= 1.0
        return True


class TalkBackDesk:
    """Opens, carries and closes talks for ``relay``; one per relay (``relay.talkback``)."""

    def __init__(self, relay: Relay) -> None:
        self.relay = relay
        self.talks: dict[str, Talk] = {}
        #: Set by evidence recording to receive every talk's packets; None: not recorded.
        self.evidence_hook: EvidenceHook | None = None
        self.counters = {"talks": 0, "refused": 0, "packets": 0, "dropped": 0}

    # -- deciding ----------------------------------------------------------------------

    async def open(self, *, operator: str, role: str, room: str, button: str, via: str) -> Talk:
        """Start a talk to ``button``, or raise TalkBackRefused saying why not (and audit either)."""
        try:
            alert = await self._check(operator, role, room, button)
            session = self._session_of(button)
            self._check_free(button)  # again: another talk may have opened while the journal answered
        except TalkBackRefused as refusal:
            self.counters["refused"] += 1
            await self._audit(operator, "talk-refused", button, f"{via}: {refusal}")
            log_event(log, logging.INFO, f"talk-back from {operator} to {button} refused: {refusal}",
                      operator=operator, button=button, decision="refuse", action="talk")
            raise
        talk = Talk(talk_id=uuid7(), operator=operator, role=role, button=button,
                    alert_id=alert.alert_id if alert is not None else "", via=via, session=session)
        self.talks[button] = talk
        self.counters["talks"] += 1
        with trio.CancelScope(shield=True):  # registered: the caller must get the talk back to close it
            await self._audit(operator, "talk-start", button,
                              f"alert {talk.alert_id or '(none)'}; {via}; talk {talk.talk_id}")
        log_event(log, logging.INFO, f"operator {operator} ({role}) talking to button {button}"
                  + (f" about alert {talk.alert_id}" if talk.alert_id else "") + f" ({via})",
                  operator=operator, button=button, alert_id=talk.alert_id, talk_id=talk.talk_id, action="talk")
        if self.evidence_hook is not None:
            self.evidence_hook.talk_started(talk)
        return talk

    async def _check(self, operator: str, role: str, room: str, button: str) -> Alert | None:
        relay = self.relay
        if button not in relay.registry:
            raise TalkBackRefused(f"no button {button!r} in the registry")
        self._check_free(button)
        alerts = [a for a in await relay.journal.open_alerts() if a.button == button]
        alert = alerts[-1] if alerts else None
        if role == "supervisor":
            return alert
        if alert is None:
            raise TalkBackRefused(f"button {button} has no open alert; an operator talks to a button only "
                                  "about an alert they acknowledged (a supervisor may talk to any button)")
        if not relay.visible_to(Recipient(role=role, room=room), alert):
            rooms = ", ".join(relay._rooms(button))
            raise TalkBackRefused(f"button {button} is answered by room {rooms}, not by room {room!r}; "
                                  f"only its operator who holds alert {alert.alert_id} or a supervisor may talk")
        if alert.state not in HELD_STATES:
            raise TalkBackRefused(f"alert {alert.alert_id} of button {button} is {alert.state}, not acknowledged; "
                                  "acknowledge it (A) to take it, then talk")
        holder = await self.holder(alert.alert_id)
        if holder != operator:
            raise TalkBackRefused(f"alert {alert.alert_id} of button {button} is held by {holder or 'nobody'} "
                                  f"(acknowledged it); only {holder or 'its holder'} or a supervisor may talk")
        return alert

    def _check_free(self, button: str) -> None:
        busy = self.talks.get(button)
        if busy is not None:
            raise TalkBackRefused(f"{busy.operator} is talking to button {button} now; one voice at a time, "
                                  "wait until they let go")

    def _session_of(self, button: str) -> ButtonSession:
        session = self.relay.sessions_by_button.get(button)
        if session is None or not session.ready:
            raise TalkBackRefused(f"button {button} is not connected; talk-back needs its live session")
        hello = session.conn.hello
        if hello is None or not hello.talkback:
            raise TalkBackRefused(f"button {button} cannot play talk-back (its hello did not offer it: "
                                  "firmware without a speaker)")
        return session

    async def holder(self, alert_id: str) -> str:
        """Who holds an alert: the operator who last acknowledged it ("" if nobody did)."""

        def work(conn: Any) -> str:
            row = conn.execute(
                "SELECT operator FROM events WHERE alert_id = ? AND kind = 'transition' AND state = ? "
                "ORDER BY cursor DESC LIMIT 1",
                (alert_id, AlertState.ACKNOWLEDGED.value),
            ).fetchone()
            return row[0] if row else ""

        return await self.relay.journal.execute(work)

    # -- carrying ----------------------------------------------------------------------

    def send(self, talk: Talk, packet: bytes, captured_at: int) -> bool:
        """Pass one Opus packet on to the button now; False if it was dropped (``talk.ended`` says if over)."""
        if not talk.open:
            return False
        session = talk.session
        if not session.ready or self.relay.sessions_by_button.get(talk.button) is not session:
            self._end(talk, "the button's session ended")
            return False
        if not 0 < len(packet) <= MAX_TALKBACK_PACKET:
            raise ValueError(f"a talk-back packet is 1 to {MAX_TALKBACK_PACKET} bytes of Opus, "
                             f"not {len(packet)}")
        if (not talk._take_token(time.monotonic())
                or session.outbox.lane_bytes(Lane.CONTROL) > MAX_QUEUED_BYTES):
            talk.dropped += 1
            self.counters["dropped"] += 1
            return False
        first = talk.seq == 0
        session.send(TalkBack(talk_id=talk.talk_id, seq=talk.seq, captured_at=max(0, captured_at), packet=packet,
                              operator=talk.operator if first else "", alert_id=talk.alert_id if first else ""))
        talk.seq += 1
        talk.packets += 1
        talk.bytes += len(packet)
        self.counters["packets"] += 1
        if self.evidence_hook is not None:
            self.evidence_hook.talk_packet(talk, packet, captured_at)
        return True

    async def close(self, talk: Talk, reason: str = "released") -> None:
        """End the talk: tell the button, record how it went. Idempotent."""
        if talk.open:
            session = talk.session
            if session.ready and self.relay.sessions_by_button.get(talk.button) is session:
                session.send(TalkBack(talk_id=talk.talk_id, seq=talk.seq, end=True,
                                      operator=talk.operator if talk.seq == 0 else "",
                                      alert_id=talk.alert_id if talk.seq == 0 else ""))
            self._end(talk, reason)
        if talk.audited:
            return
        talk.audited = True
        seconds = (wall_us() - talk.started_at) / 1e6
        detail = (f"{talk.ended}; {seconds:.1f} s, {talk.packets} packets, {talk.bytes} bytes"
                  + (f", {talk.dropped} dropped" if talk.dropped else "") + f"; talk {talk.talk_id}")
        with trio.CancelScope(shield=True):
            await self._audit(talk.operator, "talk-stop", talk.button, detail)
        log_event(log, logging.INFO, f"operator {talk.operator} stopped talking to button {talk.button}: {detail}",
                  operator=talk.operator, button=talk.button, talk_id=talk.talk_id, action="talk-stop")

    def _end(self, talk: Talk, reason: str) -> None:
        if talk.ended:
            return
        talk.ended = reason
        if self.talks.get(talk.button) is talk:
            del self.talks[talk.button]
        if self.evidence_hook is not None:
            self.evidence_hook.talk_ended(talk)

    async def _audit(self, operator: str, action: str, subject: str, detail: str) -> None:
        try:
            await self.relay.journal.audit(wall_us(), operator, action, subject, detail)
        except Exception as error:  # noqa: BLE001 - a full disk must not stop the voice; it is logged loudly
            log_event(log, logging.ERROR, f"could not audit {action} of {operator} to {subject}: {error}",
                      operator=operator, button=subject, reason=str(error))
