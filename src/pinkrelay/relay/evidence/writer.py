"""The evidence writer: one thread that muxes, hashes and stores every recording, off the media path.

The event loop only appends to a queue: ``offer()`` costs a deque append
and a counter, whatever the disk does. Each recording may have at most
``evidence_queue_bytes`` waiting; past that, or on any write error (a full
disk), the recording stops and ``on_failure`` is called on the event loop
(the desk makes it loud: log line, metric, notice to consoles). Live
delivery never waits for this thread.

Per recording the thread keeps a ``FragmentMuxer`` (pinkrelay/media, PyAV
stream copy), groups its fragments into segments of at least
``segment_us``, and writes each one as ``seg-N.m4s.tmp``, adds it to the
manifest, saves and signs the manifest, then renames the segment to its
name. A crash at any point leaves either a segment the manifest lists or a
``.tmp`` file the next run deals with (``recover``).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ...media.errors import MediaError
from ...media.packets import EncodedPacket
from ...media.tracks import TrackInfo
from ..._core import Lane
from .manifest import Manifest, init_name, segment_name

if TYPE_CHECKING:
    # PyAV (through media.fragments) is loaded by the writer thread when it first records: a relay
    # that never records does not pay its ~35 MB.
    from ...media.fragments import Fragment, FragmentMuxer

log = logging.getLogger("pinkrelay.evidence")

_VIDEO = int(Lane.VIDEO)
#: The thread drains the queue this often (media never wakes it; a start, stop or failure does).
DRAIN_INTERVAL = 0.05
_AUDIO_DURATION_US = {"opus": 20_000}
#: Messages muxed between two voluntary releases of the GIL (about a millisecond of work).
YIELD_EVERY = 16


@dataclass(eq=False)
class Recording:
    """One alert's recording. The event loop sets the request fields; the writer thread owns the rest."""

    alert_id: str
    button_id: str
    directory: Path
    manifest: Manifest
    #: Bytes offered by the event loop and bytes the writer has taken off the queue (one writer each).
    offered_bytes: int = 0
    taken_bytes: int = 0
    failed: str | None = None
    finished: bool = False
    #: Relay clock: when it stops (post_roll after resolve, max_incident after the start).
    stop_at: float = float("inf")
    stop_reason: str = "max_incident reached"
    #: What the next part is started for (the event loop's label for the manifest).
    next_part_reason: str = ""
    #: Writer-side state.
    part: int = 0
    muxer: FragmentMuxer | None = None
    track_index: dict[int, int] = field(default_factory=dict)
    track_kinds: list[str] = field(default_factory=list)
    pending: list[Fragment] = field(default_factory=list)
    shift_us: int = 0
    last_pts_us: int = -1
    gap_reason: str = ""
    fps: float = 30.0
    audio_codec: str = ""
    part_started: bool = False
    segments_written: int = 0
    bytes_written: int = 0

    @property
    def queued_bytes(self) -> int:
        return self.offered_bytes - self.taken_bytes

    @property
    def active(self) -> bool:
        return self.failed is None and not self.finished


class EvidenceWriter:
    """The writer thread and its queue (see module doc)."""

    def __init__(
        self,
        *,
        key: Any,
        segment_us: int,
        queue_bytes: int,
        on_failure: Callable[[Recording, str], None],
        call_soon: Callable[..., None],
    ) -> None:
        self.key = key
        self.segment_us = segment_us
        self.queue_bytes = queue_bytes
        self._on_failure = on_failure
        self._call_soon = call_soon
        self._queue: deque[tuple[Recording, str, Any]] = deque()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._stopping = False
        self.segments_written = 0
        self.bytes_written = 0
        self.failures = 0

    # -- the event loop's side -----------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="pinkrelay-evidence", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Finish what is queued (every recording's last segment included), then end the thread."""
        self._stopping = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def offer(self, recording: Recording, message: Any, now: float = 0.0) -> None:
        """One media message for a recording (the live tap's call on the media path)."""
        if recording.failed is not None or recording.finished:
            return
        size = message.wire_size
        if recording.queued_bytes + size > self.queue_bytes:
            self.fail(recording, f"its write queue is full ({recording.queued_bytes} bytes waiting, "
                      f"evidence_queue_bytes {self.queue_bytes}): the disk is slower than the media")
            return
        recording.offered_bytes += size
        self._put(recording, "media", message)

    def offer_many(self, recording: Recording, messages: list[Any]) -> None:
        """The pre-roll: one queue entry for all of it (it may exceed the queue bound once)."""
        if messages and recording.active:
            recording.offered_bytes += sum(message.wire_size for message in messages)
            self._put(recording, "many", messages)

    def offer_talkback(self, recording: Recording, talk: dict[str, Any], packets: list[bytes],
                       first_captured_us: int) -> None:
        """One operator's talk-back to the button (evidence/talkback.py): written as talk-NNN.ogg."""
        if recording.active and packets:
            size = sum(len(packet) for packet in packets)
            recording.offered_bytes += size
            self._put(recording, "talkback", (talk, packets, first_captured_us, size))

    def new_part(self, recording: Recording, tracks: Iterable[Any], reason: str) -> None:
        if recording.active:
            self._put(recording, "part", (tuple(tracks), reason))

    def end_part(self, recording: Recording, reason: str) -> None:
        if recording.active:
            self._put(recording, "end", reason)

    def finish(self, recording: Recording, reason: str) -> None:
        if recording.active:
            recording.finished = True
            self._put(recording, "finish", reason)

    def fail(self, recording: Recording, reason: str) -> None:
        """Stop a recording for good; the desk makes it loud. Safe from either side."""
        if recording.failed is not None:
            return
        recording.failed = reason
        self.failures += 1
        self._put(recording, "failed", reason)
        self._call_soon(self._on_failure, recording, reason)

    @property
    def queued(self) -> int:
        return len(self._queue)

    def _put(self, recording: Recording, op: str, arg: Any) -> None:
        self._queue.append((recording, op, arg))
        # Media waits for the next drain (DRAIN_INTERVAL): waking the thread per message would cost the
        # event loop a futex call and a fight for the GIL 1000s of times a second. Anything else wakes it.
        if op not in ("media", "many") and not self._wake.is_set():
            self._wake.set()

    # -- the thread ------------------------------------------------------------------------------

    def _run(self) -> None:
        queue = self._queue
        while True:
            self._wake.wait(DRAIN_INTERVAL)
            self._wake.clear()
            handled = 0
            while queue:
                recording, op, arg = queue.popleft()
                self._handle(recording, op, arg)
                handled += 1
                if handled % YIELD_EVERY == 0:
                    # Hand the GIL to the event loop if it waits for it, instead of making it wait out
                    # the interpreter's switch interval (5 ms) behind a burst such as 20 pre-rolls.
                    time.sleep(0)
            if self._stopping and not queue:
                return

    def _handle(self, recording: Recording, op: str, arg: Any) -> None:
        if op == "media":
            recording.taken_bytes += arg.wire_size
        elif op == "many":
            recording.taken_bytes += sum(message.wire_size for message in arg)
        elif op == "talkback":
            recording.taken_bytes += arg[3]
        if op == "failed":
            self._abandon(recording, arg)
            return
        if recording.failed is not None:
            return
        try:
            if op == "media":
                self._media(recording, arg)
            elif op == "many":
                for message in arg:
                    self._media(recording, message)
            elif op == "talkback":
                self._talkback(recording, *arg[:3])
            elif op == "part":
                self._close_part(recording)
                self._open_part(recording, *arg)
            elif op == "end":
                self._close_part(recording)
                recording.gap_reason = arg
            elif op == "finish":
                self._close_part(recording)
                data = recording.manifest.data
                data["state"] = "complete"
                data["stop_reason"] = arg
                data["ended_at"] = _wall_us()
                recording.manifest.save(recording.directory, self.key)
        except (OSError, MediaError, ValueError) as error:
            self.fail(recording, f"writing failed: {error}")

    def _abandon(self, recording: Recording, reason: str) -> None:
        """A failed recording keeps what it wrote: the manifest says where and why it stopped."""
        recording.muxer = None
        recording.pending = []
        data = recording.manifest.data
        data["state"] = "stopped"
        data["stop_reason"] = reason
        data["ended_at"] = _wall_us()
        try:
            recording.manifest.save(recording.directory, self.key)
        except OSError as error:
            log.error("recording %s: the manifest could not be saved after the stop either: %s",
                      recording.alert_id, error)

    def _open_part(self, recording: Recording, tracks: tuple[Any, ...], reason: str) -> None:
        video = next((t for t in tracks if t.kind == "video" and t.codec == "h264"), None)
        audio = next((t for t in tracks if t.kind == "audio" and t.codec in ("opus", "aac")), None)
        if video is None:
            recording.muxer = None
            log.warning("recording %s: button %s sends no H.264 video; nothing is recorded until it does",
                        recording.alert_id, recording.button_id)
            return
        chosen = [video] + ([audio] if audio is not None else [])
        infos = [TrackInfo(kind=t.kind, codec=t.codec, width=t.width, height=t.height, fps=t.fps,
                           sample_rate=t.sample_rate, channels=t.channels, bitrate=t.bitrate,
                           extradata=t.extradata) for t in chosen]
        recording.part += 1
        if recording.part > 1 and not recording.gap_reason:
            recording.gap_reason = f"new part: {reason}"  # whatever fell between the parts is stated
        recording.track_index = {t.track_id: i for i, t in enumerate(chosen)}
        recording.track_kinds = [t.kind for t in chosen]
        recording.fps = video.fps or 30.0
        recording.audio_codec = audio.codec if audio is not None else ""
        from ...media.fragments import FragmentMuxer

        recording.muxer = FragmentMuxer(infos, f"recording {recording.alert_id} part {recording.part}")
        recording.pending = []
        recording.shift_us = 0
        recording.part_started = False
        recording.manifest.data["parts"].append({
            "part": recording.part, "reason": reason, "started_at": _wall_us(),
            "tracks": [info.to_dict() | {"extradata": info.extradata.hex()} for info in infos],
        })

    def _media(self, recording: Recording, message: Any) -> None:
        muxer = recording.muxer
        if muxer is None:
            return
        index = recording.track_index.get(message.track)
        if index is None:
            return
        data = recording.manifest.data
        if data["origin_us"] is None:
            if message.lane != _VIDEO or not message.keyframe:
                return
            data["origin_us"] = message.timestamp
        pts = message.timestamp - data["origin_us"] + recording.shift_us
        if not recording.part_started:
            if message.lane != _VIDEO or not message.keyframe:
                return
            if pts <= recording.last_pts_us:
                # The button's clock went back across the interruption: keep one increasing time line.
                recording.shift_us += recording.last_pts_us + 1 - pts
                pts = recording.last_pts_us + 1
            recording.part_started = True
        kind = recording.track_kinds[index]
        if kind == "video":
            duration = int(1e6 / recording.fps)
        else:
            duration = _AUDIO_DURATION_US.get(recording.audio_codec, 21_333)
        packet = EncodedPacket(kind=kind, data=message.payload(), pts_us=pts, duration_us=duration,
                               keyframe=message.keyframe)
        fragments = muxer.write(index, packet)
        if kind == "video":
            recording.last_pts_us = max(recording.last_pts_us, pts)
        if muxer.init is not None and not recording.manifest.data["parts"][-1].get("init"):
            self._write_init(recording, muxer.init, pts)
        for fragment in fragments:
            self._add_fragment(recording, fragment)

    def _write_init(self, recording: Recording, payload: bytes, start_us: int) -> None:
        name = init_name(recording.part)
        self._store(recording, "init", name, payload, start_us, start_us)
        recording.manifest.data["parts"][-1]["init"] = name

    def _add_fragment(self, recording: Recording, fragment: Fragment) -> None:
        pending = recording.pending
        if pending and fragment.start_us - pending[0].start_us >= self.segment_us:
            self._write_segment(recording, fragment.start_us)  # replaces recording.pending
        recording.pending.append(fragment)

    def _write_segment(self, recording: Recording, end_us: int) -> None:
        pending, recording.pending = recording.pending, []
        if not pending:
            return
        start = pending[0].start_us
        manifest = recording.manifest
        segments = manifest.segments
        if recording.gap_reason and segments:
            manifest.data["gaps"].append({"after": segments[-1]["index"], "from_us": segments[-1]["end_us"],
                                          "to_us": start, "reason": recording.gap_reason})
        recording.gap_reason = ""
        payload = b"".join(fragment.data for fragment in pending)
        name = segment_name(len(manifest.pieces) + 1)
        self._store(recording, "media", name, payload, start, max(end_us, start + 1))
        recording.segments_written += 1
        self.segments_written += 1

    def _store(self, recording: Recording, kind: str, name: str, payload: bytes, start: int, end: int) -> None:
        directory = recording.directory
        temporary = directory / (name + ".tmp")
        with open(temporary, "wb") as handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        recording.manifest.add_piece(kind, name, payload, start, end, recording.part)
        recording.manifest.save(directory, self.key)
        os.replace(temporary, directory / name)
        recording.bytes_written += len(payload)
        self.bytes_written += len(payload)

    def _talkback(self, recording: Recording, talk: dict[str, Any], packets: list[bytes], captured_us: int) -> None:
        """Talk-back as its own chained piece: on the recording's time line where the operator began."""
        data = recording.manifest.data
        origin = data["origin_us"]
        start = max(0, captured_us - origin) if origin is not None and captured_us else 0
        entries = data.setdefault("talkback", [])
        name = f"talk-{len(entries) + 1:03d}.ogg"
        entries.append({**talk, "file": name})
        from ...media.talkback import ogg_opus

        self._store(recording, "talkback", name, ogg_opus(packets), start, start + len(packets) * 20_000)

    def _close_part(self, recording: Recording) -> None:
        muxer = recording.muxer
        if muxer is None:
            return
        recording.muxer = None
        fragments = muxer.close()
        for fragment in fragments:
            self._add_fragment(recording, fragment)
        self._write_segment(recording, recording.last_pts_us + int(1e6 / recording.fps))


def recover(directory: Path, manifest: Manifest) -> list[str]:
    """After a crash: finish renames the manifest already vouches for, drop pieces it never listed.

    Returns what was done, for the log.
    """
    done = []
    listed = {piece["file"] for piece in manifest.pieces}
    for temporary in sorted(directory.glob("*.tmp")):
        name = temporary.name[:-len(".tmp")]
        if name in listed and not (directory / name).exists():
            os.replace(temporary, directory / name)
            done.append(f"{name} completed")
        elif name not in ("manifest.json", "manifest.sig", "manifest.sig.next"):
            temporary.unlink()
            done.append(f"{name} dropped (written but never listed before the stop)")
    return done


def _wall_us() -> int:
    return time.time_ns() // 1000
