"""ButtonClient: what a panic button (or its simulator) embeds.

It keeps one authenticated connection to the relay and reconnects with
backoff when it drops. ``press()`` raises an alert and returns once the relay
has acknowledged it: the same alert id is sent again every
``retry_interval`` and after every reconnect until then, so a lost
acknowledgement never loses the press and the relay records it once.
Media goes through the uplink's priority queue: a press overtakes every
queued video byte, and when the uplink is congested video is dropped back to
the next keyframe (``needs_keyframe`` tells the encoder to make one). Every
connection's video starts with a keyframe too: after a reconnect the relay
has nothing to decode a delta frame against, so until the first keyframe
``send_media`` drops video and ``needs_keyframe`` stays true.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import trio

from .._core import DROPPED
from ..config import Address
from ..errors import ConnectionRefused
from ..ids import uuid7
from ..protocol import (
    Alert,
    AlertAck,
    ButtonConnection,
    KeyframeRequest,
    State,
    StreamDescription,
    TalkBack,
    TrackDescription,
)
from ..tls import ClientTls
from .link import Link, RelayRotation, wall_us

log = logging.getLogger("pinkrelay.button")


@dataclass(frozen=True, slots=True, kw_only=True)
class PressReceipt:
    """The relay stored the alert."""

    alert_id: str
    pressed_at: int
    acked_at: int
    attempts: int
    duplicate: bool

    @property
    def latency_ms(self) -> float:
        return (self.acked_at - self.pressed_at) / 1000.0


@dataclass(slots=True)
class _Pending:
    alert: Alert
    done: trio.Event
    receipt: PressReceipt | None = None


class ButtonClient:
    """One button's connection to the relay. Run ``run()`` in a nursery."""

    def __init__(
        self,
        relay: Address | str | Sequence[Address | str],
        button_id: str,
        secret: bytes,
        *,
        tracks: Sequence[dict[str, Any]] = (),
        reconnect: bool = True,
        retry_interval: float = 1.0,
        backoff_initial: float = 0.2,
        backoff_max: float = 10.0,
        connect_timeout: float = 5.0,
        tls: ClientTls | None = None,
        talkback: Any = None,
    ) -> None:
        #: The relays to connect to: one, or several of a cluster (tried in turn after a failed attempt).
        self.relays = RelayRotation(relay)
        self.button_id = button_id
        self._secret = secret
        self._track_specs = [dict(spec) for spec in tracks]
        self.reconnect = reconnect
        self.retry_interval = retry_interval
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.connect_timeout = connect_timeout
        #: TLS to the relay (pinkrelay.tls.client_tls); None: plaintext.
        self.tls = tls
        #: Plays operators' talk-back (``pinkrelay.media.talkback.TalkBackPlayer``, or anything
        #: with ``receive(message)``); with one, the hello offers talk-back to the relay.
        self.talkback = talkback
        #: Talk-back messages received, and those the player could not play.
        self.talkback_messages = 0
        self.talkback_failures = 0
        self.link: Link | None = None
        self.connected = trio.Event()
        self.keyframe_requested = False
        #: KeyframeRequest messages received from the relay (a console asked, or one joined).
        self.keyframe_requests = 0
        self.track_ids: dict[str, int] = {}
        #: The link whose video has begun with a keyframe; any other link must start with one.
        self._video_started_on: Link | None = None
        self.reconnects = 0
        self.last_error: str = ""
        self._pending: dict[str, _Pending] = {}
        self._seq: dict[str, int] = {}
        self.dropped_messages = 0
        self.sent_messages = 0

    # -- connection ----------------------------------------------------------------

    async def connect(self) -> None:
        """One attempt to connect and authenticate; raises OSError or ConnectionRefused."""
        conn = ButtonConnection(self.button_id, self._secret, talkback=self.talkback is not None, protocol=2)
        link = await Link.open(self.relays.current, conn, connect_timeout=self.connect_timeout, tls=self.tls)
        self.link = link
        self._describe(link)
        self.keyframe_requested = True
        for pending in self._pending.values():
            self._resend(pending)
        self.connected.set()

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Stay connected until cancelled; reconnect with backoff after a drop.

        A refusal (wrong secret, unknown button) is final: it raises
        ConnectionRefused, since retrying cannot fix it.
        """
        delay = self.backoff_initial
        started = False
        failure: Exception | None = None
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._retry_presses)
            while True:
                try:
                    await self.connect()
                except ConnectionRefused as error:
                    failure = error
                    break
                except OSError as error:
                    self.last_error = str(error)
                    self.relays.failed()
                    if not self.reconnect and self.relays.each_tried:
                        failure = error
                        break
                    if not self.reconnect:
                        continue  # without reconnecting, each relay is still tried once
                    log.warning("button %s: %s; retrying in %.1f s", self.button_id, error, delay)
                    await trio.sleep(delay * (0.5 + random.random() / 2))
                    delay = min(delay * 2, self.backoff_max)
                    continue
                delay = self.backoff_initial
                self.relays.connected()
                if not started:
                    task_status.started(self)
                    started = True
                assert self.link is not None
                reason = await self.link.serve(self._on_event)
                self.connected = trio.Event()
                self.last_error = reason
                log.info("button %s disconnected: %s", self.button_id, reason)
                if not self.reconnect:
                    nursery.cancel_scope.cancel()
                    return
                self.reconnects += 1
                await trio.sleep(self.backoff_initial * random.random())
            nursery.cancel_scope.cancel()
        if failure is not None:
            raise failure

    def close(self, reason: str = "button stopped") -> None:
        if self.link is not None:
            self.link.close(reason)

    async def _on_event(self, event: Any) -> None:
        if isinstance(event, AlertAck):
            pending = self._pending.pop(event.alert_id, None)
            if pending is not None:
                pending.receipt = PressReceipt(
                    alert_id=event.alert_id,
                    pressed_at=pending.alert.pressed_at,
                    acked_at=wall_us(),
                    attempts=pending.alert.attempt,
                    duplicate=event.duplicate,
                )
                pending.done.set()
        elif isinstance(event, KeyframeRequest):
            self.keyframe_requests += 1
            self.keyframe_requested = True
        elif isinstance(event, TalkBack) and self.talkback is not None:
            self.talkback_messages += 1
            try:
                self.talkback.receive(event)
            except Exception as error:  # noqa: BLE001 - a broken speaker must never cost the button its link
                self.talkback_failures += 1
                if self.talkback_failures == 1 or self.talkback_failures % 500 == 0:
                    log.error("button %s: cannot play talk-back (%d messages lost so far): %s",
                              self.button_id, self.talkback_failures, error)

    # -- tracks and media -------------------------------------------------------------

    def set_tracks(self, tracks: Sequence[dict[str, Any]]) -> None:
        """Describe the tracks (kind, codec, size, extradata...); sent now and on every reconnect."""
        self._track_specs = [dict(spec) for spec in tracks]
        if self.link is not None and self.link.conn.state is State.READY:
            self._describe(self.link)

    def _describe(self, link: Link) -> None:
        ids = list(link.conn.track_ids)  # type: ignore[attr-defined]
        if len(self._track_specs) > len(ids):
            raise ValueError(f"{len(self._track_specs)} tracks, but the relay allows {len(ids)}")
        descriptions = []
        self.track_ids = {}
        for spec, track_id in zip(self._track_specs, ids, strict=False):
            fields = {k: v for k, v in spec.items() if k in TrackDescription.__dataclass_fields__}
            descriptions.append(TrackDescription(track_id=track_id, **fields))
            self.track_ids[spec["kind"]] = track_id
        if descriptions:
            link.send(StreamDescription(tracks=descriptions))

    @property
    def needs_keyframe(self) -> bool:
        """True when the relay asked for a keyframe, the connection is new, or the uplink dropped video."""
        if self.keyframe_requested:
            return True
        link = self.link
        video = self.track_ids.get("video")
        if link is None or video is None:
            return False
        return link is not self._video_started_on or link.outbox.waiting_for_keyframe(video)

    def send_media(self, kind: str, data: bytes, timestamp_us: int, keyframe: bool = False) -> bool:
        """Queue one encoded packet; False when it was not sent.

        Not sent: offline, no such track described, dropped by a congested
        uplink, or a video delta frame on a connection whose video has not
        yet started with a keyframe (the relay could not decode it).
        """
        link = self.link
        track_id = self.track_ids.get(kind)
        if link is None or track_id is None or not self.connected.is_set():
            self.dropped_messages += 1
            return False
        if kind == "video":
            if self._video_started_on is not link:
                if not keyframe:
                    self.dropped_messages += 1
                    return False
                self._video_started_on = link
            if keyframe:
                self.keyframe_requested = False
        seq = self._seq.get(kind, 0)
        self._seq[kind] = seq + 1
        if link.send_media(track_id, seq, timestamp_us, data, keyframe) == DROPPED:
            self.dropped_messages += 1
            return False
        self.sent_messages += 1
        return True

    # -- alerts ------------------------------------------------------------------------

    async def press(self, *, kind: str = "panic", alert_id: str | None = None, timeout: float | None = None) -> PressReceipt:
        """Raise an alert and wait until the relay has stored it.

        Keeps retrying (same alert id) across reconnects; ``timeout`` (seconds)
        bounds the wait with trio.TooSlowError, while the press stays pending
        and is still retried in the background.
        """
        pending = self.start_press(kind=kind, alert_id=alert_id)
        if timeout is None:
            await pending.done.wait()
        else:
            with trio.fail_after(timeout):
                await pending.done.wait()
        assert pending.receipt is not None
        return pending.receipt

    def start_press(self, *, kind: str = "panic", alert_id: str | None = None) -> _Pending:
        """Raise an alert without waiting; the returned object's ``done`` is set on ack."""
        alert = Alert(alert_id=alert_id or uuid7(), pressed_at=wall_us(), kind=kind)
        pending = _Pending(alert=alert, done=trio.Event())
        self._pending[alert.alert_id] = pending
        self._send_alert(pending)
        return pending

    @property
    def pending_presses(self) -> int:
        return len(self._pending)

    def _send_alert(self, pending: _Pending) -> None:
        link = self.link
        if link is not None and link.conn.state is State.READY and not link.closed_reason:
            link.send(pending.alert)

    def _resend(self, pending: _Pending) -> None:
        pending.alert = replace(pending.alert, attempt=pending.alert.attempt + 1)
        self._send_alert(pending)

    async def _retry_presses(self) -> None:
        while True:
            await trio.sleep(self.retry_interval)
            now = wall_us()
            for pending in list(self._pending.values()):
                if now - pending.alert.pressed_at >= self.retry_interval * 1e6 * pending.alert.attempt:
                    self._resend(pending)
