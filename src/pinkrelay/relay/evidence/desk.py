"""The evidence desk: which streams have pre-roll, which alerts are being recorded, and until when.

It sits beside the relay, not in it: the hub tells it when a stream opens,
is described or closes (``Hub.listeners``), and it reads alerts and their
steps from the relay's event stream. A press starts a recording from the
button's pre-roll ring (references to messages already in memory) and
attaches a live tap to the stream; each tap ``offer``s messages to the
writer thread's queue (writer.py). A closing step (resolved, false alarm)
schedules the stop ``post_roll`` later; ``max_incident`` bounds every
recording. A relay that restarts resumes each unfinished recording into the
same directory when the button streams again; the manifest states the gap.

A stop the relay did not choose (queue full, disk full) is loud: an ERROR
log line, ``evidence_recordings_failed`` in the metrics, and a non-fatal
``evidence`` error to every signed-in console; alerts and live video go on.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import trio

from ...alerts.lifecycle import is_open
from ...logs import event as log_event
from ...protocol import Alert, AlertUpdate, Error
from .manifest import Manifest, load_or_create_key
from ..data_plane import as_message
from .preroll import Preroll
from .store import EvidenceStore
from .writer import EvidenceWriter, Recording, recover

log = logging.getLogger("pinkrelay.evidence")

#: How a supervisor's recording of a live stream (no alert) is started: its manifest's reason begins so.
MANUAL = "record action"
#: Seconds between retention sweeps.
SWEEP_INTERVAL = 60.0
EVENT_BUFFER = 10_000


def wall_us() -> int:
    return time.time_ns() // 1000


@dataclass(frozen=True, slots=True)
class EvidenceStopped:
    """Published on the relay's event stream when a recording stops on its own (the web room shows it)."""

    alert_id: str
    button: str
    message: str


class _Tap:
    """A recording's live tap on a stream: the hub's ``offer(message, now)`` goes to the writer's queue."""

    __slots__ = ("recording", "writer")

    def __init__(self, recording: Recording, writer: EvidenceWriter) -> None:
        self.recording = recording
        self.writer = writer

    def offer(self, message: Any, now: float) -> None:
        self.writer.offer(self.recording, message, now)


class EvidenceDesk:
    def __init__(self, relay: Any) -> None:
        self.relay = relay
        config = relay.config
        self.config = config
        self.preroll = Preroll(config.pre_roll, config.preroll_budget_bytes)
        self.store = EvidenceStore(config.evidence_root, config.data_dir)
        self.recordings: dict[str, Recording] = {}
        self.writer: EvidenceWriter | None = None
        self.counters = {"evidence_recordings_started": 0, "evidence_recordings_resumed": 0,
                         "evidence_recordings_finished": 0, "evidence_recordings_failed": 0,
                         "evidence_recordings_deleted": 0}
        self._wakeup = trio.Event()

    # -- running ---------------------------------------------------------------------------------

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Run beside the relay; evidence that cannot be stored never stops the relay, it says why."""
        key = None
        try:
            self.store.root.mkdir(parents=True, exist_ok=True)
            key = load_or_create_key(self.config.data_dir)
        except (OSError, ValueError) as error:
            log_event(log, logging.ERROR, f"evidence: {error}; recordings are made but cannot be signed or may "
                      f"fail to be written: check {self.store.root} and {self.config.data_dir}",
                      decision="evidence-unsigned")
        token = trio.lowlevel.current_trio_token()
        self.writer = EvidenceWriter(key=key, segment_us=int(self.config.evidence_segment * 1e6),
                                     queue_bytes=self.config.evidence_queue_bytes,
                                     on_failure=self._failed, call_soon=token.run_sync_soon)
        self.writer.start()
        try:
            await self._resume()
            async with self.relay.open_event_stream(EVENT_BUFFER, name="evidence") as events:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._timers)
                    nursery.start_soon(self._sweeps)
                    task_status.started()
                    async for item in events:
                        try:
                            if isinstance(item, Alert):
                                self.alert_raised(item)
                            elif isinstance(item, AlertUpdate):
                                self.alert_changed(item)
                        except (OSError, ValueError) as error:
                            alert_id = getattr(item, "alert_id", "?")
                            log_event(log, logging.ERROR, f"RECORDING NOT STARTED for alert {alert_id}: {error}; "
                                      "alerts and live video go on", alert_id=alert_id,
                                      decision="evidence-stopped")
                            self.counters["evidence_recordings_failed"] += 1
        finally:
            for recording in list(self.recordings.values()):
                self.writer.end_part(recording, "relay stopped")
            self.writer.stop()

    async def _resume(self) -> None:
        try:
            unfinished = self.store.recordings()
        except OSError as error:
            log.error("evidence: cannot read %s to resume recordings: %s", self.store.root, error)
            unfinished = []
        for manifest in unfinished:
            if manifest.data["state"] != "recording":
                continue
            alert_id = manifest.data["alert_id"]
            directory = self.store.directory(alert_id)
            try:
                for line in recover(directory, manifest):
                    log.info("recording %s: %s", alert_id, line)
                alert = await self.relay.journal.get(alert_id)
            except OSError as error:
                log.error("recording %s cannot be resumed: %s", alert_id, error)
                continue
            recording = Recording(alert_id=alert_id, button_id=manifest.data["button"], directory=directory,
                                  manifest=manifest)
            recording.part = len(manifest.data["parts"])
            segments = manifest.segments
            recording.last_pts_us = segments[-1]["end_us"] if segments else -1
            recording.gap_reason = "relay restarted mid-incident; recording resumed"
            recording.next_part_reason = "relay restart"
            now = trio.current_time()
            started_wall = manifest.data["started_at"]
            recording.stop_at = now + self.config.max_incident - (wall_us() - started_wall) / 1e6
            if alert is None or not is_open(alert.state):
                recording.stop_at = min(recording.stop_at, now + self.config.post_roll)
                recording.stop_reason = "post_roll after the alert, closed while the relay was down"
            self._register(recording)
            self.counters["evidence_recordings_resumed"] += 1
            log_event(log, logging.WARNING, f"recording of alert {alert_id} resumed after a restart; the gap "
                      "is stated in its manifest", alert_id=alert_id, button=recording.button_id)
            stream = self.relay.hub.streams.get(recording.button_id)
            if stream is not None and stream.tracks:
                recording.next_part_reason = ""
                self._attach(recording, stream, "relay restart")
        self._wakeup.set()

    async def _timers(self) -> None:
        while True:
            deadline = min((r.stop_at for r in self.recordings.values()), default=float("inf"))
            with trio.move_on_at(deadline):
                await self._wakeup.wait()
            self._wakeup = trio.Event()
            now = trio.current_time()
            for recording in list(self.recordings.values()):
                if recording.stop_at <= now:
                    self.stop(recording, recording.stop_reason)

    async def _sweeps(self) -> None:
        while True:
            busy = frozenset(self.recordings)
            try:
                deleted = await trio.to_thread.run_sync(lambda: self.store.sweep(
                    retention_days=self.config.evidence_retention_days,
                    high_water=self.config.evidence_disk_high_water, busy=busy))
            except OSError as error:
                log.error("evidence retention sweep of %s failed: %s; trying again in %g s", self.store.root,
                          error, SWEEP_INTERVAL)
                deleted = []
            for item in deleted:
                self.counters["evidence_recordings_deleted"] += 1
                log_event(log, logging.WARNING, f"recording of alert {item.alert_id} deleted ({item.bytes} "
                          f"bytes): {item.reason}", alert_id=item.alert_id, reason=item.reason)
                try:
                    await self.relay.journal.audit(wall_us(), "relay", "evidence-deleted", item.alert_id,
                                                   item.reason)
                except OSError as error:
                    log.error("audit entry not stored (evidence-deleted %s): %s", item.alert_id, error)
            await trio.sleep(SWEEP_INTERVAL)

    # -- streams (Hub.listeners) -----------------------------------------------------------------

    def stream_opened(self, stream: Any) -> None:
        if self.preroll.enabled and stream.publisher is None:
            stream.taps = (self.preroll.open(stream.button_id),)

    def stream_described(self, stream: Any) -> None:
        # On the data plane the pre-roll is the plane's own ring (relay/data_plane.py); here, the hub's tap.
        if self.preroll.enabled and stream.publisher is None:
            ring = self.preroll.open(stream.button_id)
            stream.taps = (ring,) + tuple(t for t in stream.taps if isinstance(t, _Tap))
        for recording in self.recordings_of(stream.button_id):
            reason, recording.next_part_reason = recording.next_part_reason or "stream described again", ""
            self._attach(recording, stream, reason)

    def stream_closed(self, stream: Any) -> None:
        for tap in stream.taps:
            if isinstance(tap, _Tap):
                self.writer.end_part(tap.recording, "the button's stream was interrupted")
                tap.recording.next_part_reason = "button reconnected"
            else:
                self.preroll.close(stream.button_id, tap)
        stream.taps = ()
        if stream.publisher is not None:
            stream.publisher.tap(False)

    def _attach(self, recording: Recording, stream: Any, reason: str) -> None:
        self.writer.new_part(recording, stream.tracks.values(), reason)
        tap = _Tap(recording, self.writer)
        stream.taps = tuple(t for t in stream.taps if not (isinstance(t, _Tap) and t.recording is recording)) + (tap,)
        if stream.publisher is not None:
            stream.publisher.tap(True)  # the data plane hands this button's messages to the taps too

    def recordings_of(self, button_id: str) -> list[Recording]:
        return [r for r in self.recordings.values() if r.button_id == button_id and r.active]

    # -- alerts ----------------------------------------------------------------------------------

    def alert_raised(self, alert: Alert) -> None:
        if alert.duplicate_of or alert.alert_id in self.recordings or not alert.button:
            return
        if not is_open(alert.state) or (self.store.directory(alert.alert_id)).exists():
            return
        if any(not r.manifest.data["reason"].startswith(MANUAL) for r in self.recordings_of(alert.button)):
            return  # the button's open incident is already being recorded
        self.start(alert.alert_id, alert.button, reason=f"{alert.kind} press", press_us=alert.pressed_at)

    def start(self, alert_id: str, button_id: str, *, reason: str, press_us: int | None = None) -> Recording:
        """Record a button from its pre-roll on (a press, or a supervisor's record action)."""
        directory = self.store.directory(alert_id)
        directory.mkdir(parents=True, exist_ok=True)
        manifest = Manifest.new(alert_id=alert_id, button=button_id, relay=self.config.relay_name,
                                started_at=wall_us(), reason=reason)
        manifest.data["press_us"] = press_us
        recording = Recording(alert_id=alert_id, button_id=button_id, directory=directory, manifest=manifest)
        recording.stop_at = trio.current_time() + self.config.max_incident
        self._register(recording)
        self.counters["evidence_recordings_started"] += 1
        stream = self.relay.hub.streams.get(button_id)
        preroll = 0
        if stream is not None and stream.tracks:
            ring = self.preroll.rings.get(button_id)
            self._attach(recording, stream, reason)
            if stream.publisher is not None:
                messages = [as_message(*kept) for kept in stream.publisher.preroll()]
                preroll = len(messages)
                self.writer.offer_many(recording, messages)
            elif ring is not None:
                messages = ring.messages()
                preroll = len(messages)
                self.writer.offer_many(recording, messages)
        log_event(log, logging.INFO, f"recording alert {alert_id} from button {button_id} "
                  f"({preroll} pre-roll messages)", alert_id=alert_id, button=button_id)
        self._wakeup.set()
        return recording

    def alert_changed(self, update: AlertUpdate) -> None:
        recording = self.recordings.get(update.alert_id)
        if recording is None or is_open(update.state):
            return
        stop_at = trio.current_time() + self.config.post_roll
        if stop_at < recording.stop_at:
            recording.stop_at = stop_at
            recording.stop_reason = f"post_roll {self.config.post_roll:g} s after the alert was {update.state}"
        self._wakeup.set()

    def stop(self, recording: Recording, reason: str) -> None:
        self._unregister(recording)
        self.writer.finish(recording, reason)
        self.counters["evidence_recordings_finished"] += 1
        log_event(log, logging.INFO, f"recording of alert {recording.alert_id} finished: {reason}",
                  alert_id=recording.alert_id)

    def _register(self, recording: Recording) -> None:
        self.recordings[recording.alert_id] = recording

    def _unregister(self, recording: Recording) -> None:
        self.recordings.pop(recording.alert_id, None)
        stream = self.relay.hub.streams.get(recording.button_id)
        if stream is not None:
            stream.taps = tuple(t for t in stream.taps if not (isinstance(t, _Tap) and t.recording is recording))
            if stream.publisher is not None and not any(isinstance(t, _Tap) for t in stream.taps):
                stream.publisher.tap(False)

    def _failed(self, recording: Recording, reason: str) -> None:
        """On the event loop: a recording the writer had to stop. Loud, and nothing else stops."""
        self._unregister(recording)
        self.counters["evidence_recordings_failed"] += 1
        text = (f"RECORDING STOPPED for alert {recording.alert_id} (button {recording.button_id}): {reason}; "
                f"live video and alerts go on; what was recorded so far is kept in {recording.directory}")
        log_event(log, logging.ERROR, text, alert_id=recording.alert_id, button=recording.button_id,
                  decision="evidence-stopped")
        notice = Error(code="evidence", message=text[:900], fatal=False)
        for console in list(self.relay.consoles):
            if console.ready:
                console.send(notice)
        self.relay.publish_event(EvidenceStopped(recording.alert_id, recording.button_id, text))

    def _plane_preroll(self) -> dict[str, Any]:
        link = getattr(self.relay, "data_plane", None)
        if link is None:
            return {}
        on_plane = sum(1 for stream in self.relay.hub.streams.values() if stream.publisher is not None)
        return {"preroll_bytes": self.preroll.nbytes + link.plane.preroll_bytes,
                "preroll_rings": len(self.preroll.rings) + on_plane}

    def stats(self) -> dict[str, Any]:
        writer = self.writer
        return {
            **self.counters,
            **self.preroll.stats(trio.current_time()),
            **self._plane_preroll(),
            "evidence_recording": len(self.recordings),
            "evidence_segments_written": writer.segments_written if writer else 0,
            "evidence_bytes_written": writer.bytes_written if writer else 0,
            "evidence_queue_bytes": sum(r.queued_bytes for r in self.recordings.values()),
        }

