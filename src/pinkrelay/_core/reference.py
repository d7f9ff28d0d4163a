"""The pure-Python reference of pinkrelay's core: the specification in code.

Everything here has a twin with the same name and the same behaviour in the
compiled core (``_cpinkrelay.pyx``). The reference is the one to read; the
compiled one is the one that runs, unless ``PINKRELAY_PUREPYTHON=1``.
The property tests in ``tests/test_core_equivalence.py`` feed both the same
byte streams, split at arbitrary points, and demand identical results.

What lives here:

* ``Frame``, ``encode_frame``, ``encode_media``: the 24-byte header and the
  chunking of media messages.
* ``FrameDecoder``: bytes in, validated frames out, with every limit checked
  before anything of the declared size is allocated.
* ``Message``, ``Reassembler``: media chunks back into whole messages.
* ``SendQueue``: one outbound connection's lanes, the priority scheduler,
  the drop-to-keyframe policy, and the non-blocking scatter-gather write.
* ``recv_some``: a non-blocking read that says "nothing yet" without raising.
* ``deliver``: one media message to many subscribers in one call.
* ``Fanout``: the relay's fan-out work, in rounds and bounded slices, with
  audio riding along with video.

Nothing here imports trio or touches a socket other than through a file
descriptor it is given.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Sequence
from typing import Any

from ..errors import FrameError, LimitExceeded
from . import checks
from .wire import (
    DROPPED,
    HEADER,
    HEADER_SIZE,
    LANE_COUNT,
    LANE_WEIGHTS,
    MAGIC,
    MAX_SEQUENCE,
    MAX_TRACK_ID,
    MAX_TRACK_ID_V2,
    OVERFLOW,
    QUEUED,
    VERSION,
    VERSION_WIDE,
    VERSIONS,
    Flag,
    FrameType,
    Lane,
    Limits,
    QueueDefaults,
)

COMPILED = False

_KEYFRAME = int(Flag.KEYFRAME)
_END = int(Flag.END)
_MEDIA = int(FrameType.MEDIA)
_AUDIO = int(Lane.AUDIO)
_VIDEO = int(Lane.VIDEO)
_TIMESTAMP_MIN = -(2**63)
_TIMESTAMP_MAX = 2**63 - 1
_IOV_MAX_BUFFERS = 64
_WRITE_MAX_BYTES = 256 * 1024
_RECV_MAX_BYTES = 64 * 1024


class Frame:
    """One decoded frame: header fields plus the frame's wire bytes.

    ``wire`` is the whole frame as it travelled (header and payload), kept so
    a relay can forward it without building it again. ``payload`` is a
    zero-copy view of its body.
    """

    __slots__ = ("type", "flags", "lane", "track", "seq", "timestamp", "wire")

    def __init__(
        self, type: int, flags: int, lane: int, track: int, seq: int, timestamp: int, wire: bytes
    ) -> None:
        self.type = type
        self.flags = flags
        self.lane = lane
        self.track = track
        self.seq = seq
        self.timestamp = timestamp
        self.wire = wire

    @property
    def payload(self) -> memoryview:
        return memoryview(self.wire)[HEADER_SIZE:]

    @property
    def keyframe(self) -> bool:
        return bool(self.flags & _KEYFRAME)

    @property
    def end(self) -> bool:
        return bool(self.flags & _END)

    def as_tuple(self) -> tuple[int, int, int, int, int, int, bytes]:
        """Every field, for comparisons in tests and logs."""
        return (self.type, self.flags, self.lane, self.track, self.seq, self.timestamp, self.wire)

    def __repr__(self) -> str:
        return (
            f"Frame(type={self.type:#04x}, flags={self.flags:#04x}, lane={self.lane}, "
            f"track={self.track}, seq={self.seq}, timestamp={self.timestamp}, "
            f"length={len(self.wire) - HEADER_SIZE})"
        )


def encode_frame(
    type: int,
    lane: int,
    track: int,
    seq: int,
    timestamp: int,
    payload: Any,
    flags: int = _END,
) -> bytes:
    """Build one frame's wire bytes (header and payload)."""
    checks.check_fields(type, flags, lane, track)
    if not 0 <= track <= MAX_TRACK_ID_V2:
        raise FrameError(f"track {track} out of range 0..{MAX_TRACK_ID_V2}")
    if not 0 <= seq <= MAX_SEQUENCE:
        raise FrameError(f"sequence {seq} out of range 0..{MAX_SEQUENCE}")
    if not _TIMESTAMP_MIN <= timestamp <= _TIMESTAMP_MAX:
        raise FrameError(f"timestamp {timestamp} out of range {_TIMESTAMP_MIN}..{_TIMESTAMP_MAX}")
    length = len(payload)
    if length > 0xFFFFFFFF:
        raise LimitExceeded(f"payload of {length} bytes cannot be framed (limit 4 GiB)")
    if track > MAX_TRACK_ID:
        # Version 2: the track's bits 16-21 ride in the six high bits of the lane byte (protocol.md §2.5).
        return HEADER.pack(MAGIC, VERSION_WIDE, type, flags, lane | (track >> 16) << 2, track & 0xFFFF, seq,
                           timestamp, length) + payload
    return HEADER.pack(MAGIC, VERSION, type, flags, lane, track, seq, timestamp, length) + payload


def encode_media(
    track: int,
    lane: int,
    seq: int,
    timestamp: int,
    payload: Any,
    keyframe: bool = False,
    chunk_size: int = Limits.CHUNK_SIZE,
) -> list[bytes]:
    """Split one media message into frames of at most ``chunk_size`` payload bytes.

    Every chunk carries the message's track, sequence, timestamp and keyframe
    flag; only the last carries END. A sender may put any frame of another
    lane between two chunks.
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be at least 1, not {chunk_size}")
    view = memoryview(payload).cast("B") if not isinstance(payload, bytes) else payload
    total = len(view)
    flags = _KEYFRAME if keyframe else 0
    if total <= chunk_size:
        return [encode_frame(_MEDIA, lane, track, seq, timestamp, view, flags | _END)]
    frames = []
    for offset in range(0, total, chunk_size):
        last = offset + chunk_size >= total
        frames.append(
            encode_frame(
                _MEDIA,
                lane,
                track,
                seq,
                timestamp,
                view[offset : offset + chunk_size],
                flags | (_END if last else 0),
            )
        )
    return frames


class FrameDecoder:
    """Turn a byte stream, split anywhere, into validated frames.

    Header fields are checked as soon as their bytes arrive, so garbage is
    refused after a few bytes and a lying length field is refused before any
    of its payload is buffered. After the first error the decoder is dead:
    every later call raises the same error, so a caller cannot go on reading
    a stream that has lost its framing.
    """

    def __init__(
        self,
        max_frame_bytes: int = Limits.MAX_FRAME_BYTES,
        max_control_bytes: int = Limits.MAX_CONTROL_BYTES,
    ) -> None:
        self.max_frame_bytes = max_frame_bytes
        self.max_control_bytes = max_control_bytes
        self._buffer = bytearray()
        self._pos = 0
        self._error: Exception | None = None
        self.frames_decoded = 0
        self.bytes_received = 0

    @property
    def buffered(self) -> int:
        """Bytes received but not yet returned as a frame."""
        return len(self._buffer) - self._pos

    def feed(self, data: Any) -> None:
        if self._error is not None:
            raise self._error
        if self._pos and self._pos == len(self._buffer):
            self._buffer.clear()
            self._pos = 0
        self._buffer += data
        self.bytes_received += len(data)

    def next_frame(self) -> Frame | None:
        """The next complete frame, or None when more bytes are needed."""
        if self._error is not None:
            raise self._error
        try:
            return self._next()
        except (FrameError, LimitExceeded) as error:
            self._error = error
            raise

    @property
    def error(self) -> Exception | None:
        """The protocol error that ended this stream, once one was found."""
        return self._error

    def decode(self, data: Any) -> list[Frame]:
        """Feed ``data`` and return every frame it completes.

        Frames that precede a protocol error are returned first; the error is
        raised by this call only when no frame came before it, and otherwise
        by the next call (``error`` shows it at once). Nothing valid is lost.
        """
        self.feed(data)
        frames: list[Frame] = []
        while True:
            try:
                frame = self.next_frame()
            except (FrameError, LimitExceeded):
                if frames:
                    return frames
                raise
            if frame is None:
                return frames
            frames.append(frame)

    def _next(self) -> Frame | None:
        buffer = self._buffer
        pos = self._pos
        available = len(buffer) - pos
        if available < HEADER_SIZE:
            checks.check_prefix(bytes(buffer[pos : pos + 4]))
            return None
        magic, version, type, flags, lane, track, seq, timestamp, length = HEADER.unpack_from(
            buffer, pos
        )
        if version == VERSION_WIDE:
            track |= (lane >> 2) << 16
            lane &= 3
        self._check_header(magic, version, type, flags, lane, track, length)
        end = pos + HEADER_SIZE + length
        if end > len(buffer):
            return None
        frame = Frame(type, flags, lane, track, seq, timestamp, bytes(buffer[pos:end]))
        if end == len(buffer):
            buffer.clear()
            self._pos = 0
        elif end > 65536:
            del buffer[:end]
            self._pos = 0
        else:
            self._pos = end
        self.frames_decoded += 1
        return frame

    def _check_header(
        self,
        magic: bytes,
        version: int,
        type: int,
        flags: int,
        lane: int,
        track: int,
        length: int,
    ) -> None:
        if magic != MAGIC:
            checks.bad_magic(magic)
        if version not in VERSIONS:
            checks.bad_version(version)
        checks.check_fields(type, flags, lane, track)
        if type == _MEDIA:
            if length > self.max_frame_bytes:
                checks.frame_too_long(length, self.max_frame_bytes, track)
        elif length > self.max_control_bytes:
            checks.control_too_long(type, length, self.max_control_bytes)


class Message:
    """One whole media message (an encoded video or audio frame).

    ``chunks`` are the wire frames that carried it, ready to forward as they
    are; ``payload()`` joins their bodies when the bytes themselves are needed.
    """

    __slots__ = ("track", "lane", "seq", "timestamp", "keyframe", "chunks", "size")

    def __init__(
        self,
        track: int,
        lane: int,
        seq: int,
        timestamp: int,
        keyframe: bool,
        chunks: tuple[bytes, ...],
        size: int,
    ) -> None:
        self.track = track
        self.lane = lane
        self.seq = seq
        self.timestamp = timestamp
        self.keyframe = keyframe
        self.chunks = chunks
        self.size = size

    def payload(self) -> bytes:
        chunks = self.chunks
        if len(chunks) == 1:
            return chunks[0][HEADER_SIZE:]
        return b"".join([memoryview(chunk)[HEADER_SIZE:] for chunk in chunks])

    @property
    def wire_size(self) -> int:
        return self.size + HEADER_SIZE * len(self.chunks)

    def as_tuple(self) -> tuple[int, int, int, int, bool, tuple[bytes, ...], int]:
        return (
            self.track,
            self.lane,
            self.seq,
            self.timestamp,
            self.keyframe,
            self.chunks,
            self.size,
        )

    def __repr__(self) -> str:
        return (
            f"Message(track={self.track}, lane={self.lane}, seq={self.seq}, "
            f"timestamp={self.timestamp}, keyframe={self.keyframe}, "
            f"chunks={len(self.chunks)}, size={self.size})"
        )


class Reassembler:
    """Collect media chunks per track until the END chunk completes a message.

    Chunks of one message must be consecutive within their track and agree on
    sequence, timestamp, lane and keyframe flag; anything else is a protocol
    error. Memory held is bounded by max_partial_tracks × max_message_bytes.
    """

    def __init__(
        self,
        max_message_bytes: int = Limits.MAX_MESSAGE_BYTES,
        max_chunks_per_message: int = Limits.MAX_CHUNKS_PER_MESSAGE,
        max_partial_tracks: int = 64,
    ) -> None:
        self.max_message_bytes = max_message_bytes
        self.max_chunks_per_message = max_chunks_per_message
        self.max_partial_tracks = max_partial_tracks
        self._partial: dict[int, list[Any]] = {}

    @property
    def partial_tracks(self) -> int:
        return len(self._partial)

    def discard(self, track: int) -> None:
        """Forget a half-received message, e.g. when its track is removed."""
        self._partial.pop(track, None)

    def add(self, frame: Frame) -> Message | None:
        """Take one MEDIA frame; return the message it completes, if any."""
        track = frame.track
        size = len(frame.wire) - HEADER_SIZE
        keyframe = bool(frame.flags & _KEYFRAME)
        partial = self._partial.get(track)
        if partial is None:
            if size > self.max_message_bytes:
                checks.message_too_big(track, frame.seq, size, self.max_message_bytes)
            if frame.flags & _END:
                return Message(
                    track, frame.lane, frame.seq, frame.timestamp, keyframe, (frame.wire,), size
                )
            if len(self._partial) >= self.max_partial_tracks:
                checks.too_many_partial_tracks(self.max_partial_tracks)
            self._partial[track] = [frame.lane, frame.seq, frame.timestamp, keyframe, [frame.wire], size]
            return None
        lane, seq, timestamp, first_keyframe, chunks, total = partial
        if frame.seq != seq or frame.timestamp != timestamp or frame.lane != lane or keyframe != first_keyframe:
            checks.message_interrupted(
                track, seq, frame.seq, frame.timestamp, frame.lane, keyframe
            )
        total += size
        if total > self.max_message_bytes:
            checks.message_too_big(track, seq, total, self.max_message_bytes)
        if len(chunks) >= self.max_chunks_per_message:
            checks.too_many_chunks(track, seq, self.max_chunks_per_message)
        chunks.append(frame.wire)
        if frame.flags & _END:
            del self._partial[track]
            return Message(track, lane, seq, timestamp, keyframe, tuple(chunks), total)
        partial[5] = total
        return None


def _check_lane(lane: int) -> None:
    if not 0 <= lane < LANE_COUNT:
        raise ValueError(f"lane {lane} out of range 0..{LANE_COUNT - 1}")


def _message_size(chunks: Sequence[Any]) -> int:
    """Total bytes of a message's chunks; refuses a message or chunk with none.

    An empty chunk could never be accepted by a write, so it would stall the
    queue (and ``write_to`` would spin on it) for good.
    """
    if len(chunks) == 0:
        raise ValueError("a message needs at least one chunk")
    size = 0
    for index, chunk in enumerate(chunks):
        length = len(chunk)
        if length == 0:
            raise ValueError(f"chunk {index} of the message is empty")
        size += length
    return size


class _Entry:
    """One queued message: its wire chunks and how far they have been sent."""

    __slots__ = ("chunks", "next", "track", "keyframe", "queued_at", "size")

    def __init__(self, chunks: Sequence[Any], track: int, keyframe: bool, queued_at: float) -> None:
        self.chunks = chunks
        self.next = 0
        self.track = track
        self.keyframe = keyframe
        self.queued_at = queued_at
        self.size = _message_size(chunks)


def _pick_lane(credits: list[int], has_work: list[bool]) -> int:
    """The lane whose next chunk goes out; -1 when nothing is queued.

    Lanes are tried most urgent first; each send costs the lane one credit;
    when no lane with work has credit left, every lane is refilled to its
    weight. So alerts go first every time unless a flood of them has used up
    their round, and video still gets one chunk in every 85.
    """
    for lane in range(LANE_COUNT):
        if has_work[lane] and credits[lane] > 0:
            credits[lane] -= 1
            return lane
    if not any(has_work):
        return -1
    for lane in range(LANE_COUNT):
        credits[lane] = LANE_WEIGHTS[lane]
    for lane in range(LANE_COUNT):
        if has_work[lane]:
            credits[lane] -= 1
            return lane
    return -1


class SendQueue:
    """One outbound connection: four lanes, a scheduler, bounds and a writer.

    Nothing is taken from the queue until the kernel has accepted it: ``peek``
    shows the next buffers in scheduled order without changing anything, and
    ``consume`` commits exactly the bytes a write took. So an alert pushed
    while a write is blocked still goes out before every chunk not yet begun,
    and only the one chunk already on the wire, never more, can delay it.

    Bounds: video may hold ``max_video_bytes`` and ``max_video_age`` seconds;
    past either, every video message not yet begun is dropped and its track
    waits for the next keyframe (so the receiver never gets an undecodable
    frame). Audio drops its oldest messages past ``max_audio_bytes``. Alerts
    and control frames are never dropped: past ``max_control_bytes`` the push
    returns OVERFLOW and the owner must close the connection.
    """

    def __init__(
        self,
        fd: int = -1,
        max_video_bytes: int = QueueDefaults.MAX_VIDEO_BYTES,
        max_video_age: float = QueueDefaults.MAX_VIDEO_AGE,
        max_audio_bytes: int = QueueDefaults.MAX_AUDIO_BYTES,
        max_control_bytes: int = QueueDefaults.MAX_CONTROL_BYTES,
    ) -> None:
        self.fd = fd
        self.max_video_bytes = max_video_bytes
        self.max_video_age = max_video_age
        self.max_audio_bytes = max_audio_bytes
        self.max_control_bytes = max_control_bytes
        self.blocked = False
        self.error: OSError | None = None
        #: Set when an alert or control frame could not be queued (OVERFLOW).
        self.overflowed = False
        self.dropped_video = 0
        self.dropped_audio = 0
        self.bytes_sent = 0
        self._lanes: list[deque[_Entry]] = [deque() for _ in range(LANE_COUNT)]
        self._lane_bytes = [0] * LANE_COUNT
        self._credits = list(LANE_WEIGHTS)
        self._current_lane = -1
        self._offset = 0
        self._need_keyframe: set[int] = set()

    # -- state ---------------------------------------------------------------

    @property
    def pending_bytes(self) -> int:
        """Bytes queued and not yet accepted by the kernel."""
        return sum(self._lane_bytes) - self._offset

    @property
    def empty(self) -> bool:
        return not any(self._lanes)

    def lane_bytes(self, lane: int) -> int:
        _check_lane(lane)
        return self._lane_bytes[lane]

    def oldest_age(self, now: float) -> float:
        """Seconds the oldest queued media message has waited (0 when none)."""
        oldest = None
        for lane in (_AUDIO, _VIDEO):
            queue = self._lanes[lane]
            if queue and (oldest is None or queue[0].queued_at < oldest):
                oldest = queue[0].queued_at
        return 0.0 if oldest is None else max(0.0, now - oldest)

    def audio_waits(self, now: float, hold: float) -> bool:
        """Whether this queue holds only audio, all of it queued less than ``hold`` seconds ago.

        Such a queue is left unwritten by ``Fanout`` so that its audio leaves
        with the next video frame, in one write (see ``Fanout``).
        """
        lanes = self._lanes
        if lanes[0] or lanes[1] or lanes[_VIDEO] or not lanes[_AUDIO]:
            return False
        return lanes[_AUDIO][0].queued_at + hold > now

    def holds_audio_from(self, queued_at: float) -> bool:
        """Whether audio queued at or before ``queued_at`` is still waiting here."""
        queue = self._lanes[_AUDIO]
        return bool(queue) and queue[0].queued_at <= queued_at

    def waiting_for_keyframe(self, track: int) -> bool:
        return track in self._need_keyframe

    def wait_for_keyframe(self, track: int) -> None:
        """Drop this video track's frames until its next keyframe (a subscriber joining
        a stream whose decodable start the relay does not have)."""
        self._need_keyframe.add(track)

    # -- pushing -------------------------------------------------------------

    def push(
        self,
        lane: int,
        chunks: Sequence[Any],
        track: int = 0,
        keyframe: bool = False,
        now: float = 0.0,
    ) -> int:
        """Queue one message's wire chunks; returns QUEUED, DROPPED or OVERFLOW."""
        _check_lane(lane)
        entry = _Entry(chunks, track, keyframe, now)
        if lane == _VIDEO:
            return self._push_video(entry, now)
        if lane == _AUDIO:
            self._make_audio_room(entry.size)
        elif self._lane_bytes[0] + self._lane_bytes[1] + entry.size > self.max_control_bytes:
            self.overflowed = True
            return OVERFLOW
        self._append(lane, entry)
        return QUEUED

    def push_message(self, message: Message, now: float = 0.0) -> int:
        return self.push(message.lane, message.chunks, message.track, message.keyframe, now)

    def _append(self, lane: int, entry: _Entry) -> None:
        self._lanes[lane].append(entry)
        self._lane_bytes[lane] += entry.size

    def _push_video(self, entry: _Entry, now: float) -> int:
        track = entry.track
        if track in self._need_keyframe and not entry.keyframe:
            self.dropped_video += 1
            return DROPPED
        queue = self._lanes[_VIDEO]
        behind = self._lane_bytes[_VIDEO] + entry.size > self.max_video_bytes or (
            bool(queue) and now - queue[0].queued_at > self.max_video_age
        )
        if behind:
            self._drop_unstarted(_VIDEO)
            if not entry.keyframe:
                self._need_keyframe.add(track)
                self.dropped_video += 1
                return DROPPED
        if entry.keyframe:
            self._need_keyframe.discard(track)
        self._append(_VIDEO, entry)
        return QUEUED

    def _started(self, lane: int, index: int, entry: _Entry) -> bool:
        return entry.next > 0 or (index == 0 and self._current_lane == lane)

    def _drop_unstarted(self, lane: int) -> None:
        """Drop every message of ``lane`` not yet begun; video tracks then wait for a keyframe."""
        queue = self._lanes[lane]
        kept: deque[_Entry] = deque()
        for index, entry in enumerate(queue):
            if self._started(lane, index, entry):
                kept.append(entry)
                continue
            self._lane_bytes[lane] -= entry.size
            if lane == _VIDEO:
                self.dropped_video += 1
                self._need_keyframe.add(entry.track)
            else:
                self.dropped_audio += 1
        self._lanes[lane] = kept

    def _make_audio_room(self, size: int) -> None:
        queue = self._lanes[_AUDIO]
        index = 0
        while self._lane_bytes[_AUDIO] + size > self.max_audio_bytes and index < len(queue):
            entry = queue[index]
            if self._started(_AUDIO, index, entry):
                index += 1
                continue
            del queue[index]
            self._lane_bytes[_AUDIO] -= entry.size
            self.dropped_audio += 1

    # -- sending -------------------------------------------------------------

    def peek(self, max_buffers: int = _IOV_MAX_BUFFERS, max_bytes: int = _WRITE_MAX_BYTES) -> list[Any]:
        """The next buffers to write, in scheduled order, without removing them."""
        buffers: list[Any] = []
        total = 0
        credits = list(self._credits)
        positions = [[0, self._lanes[lane][0].next if self._lanes[lane] else 0] for lane in range(LANE_COUNT)]
        if self._current_lane >= 0:
            lane = self._current_lane
            entry = self._lanes[lane][0]
            chunk = memoryview(entry.chunks[entry.next])[self._offset :]
            buffers.append(chunk)
            total += len(chunk)
            self._advance(positions, lane)
        while len(buffers) < max_buffers and total < max_bytes:
            has_work = [self._has_chunk(positions, lane) for lane in range(LANE_COUNT)]
            lane = _pick_lane(credits, has_work)
            if lane < 0:
                break
            entry_index, chunk_index = positions[lane]
            chunk = self._lanes[lane][entry_index].chunks[chunk_index]
            buffers.append(chunk)
            total += len(chunk)
            self._advance(positions, lane)
        return buffers

    def _has_chunk(self, positions: list[list[int]], lane: int) -> bool:
        return positions[lane][0] < len(self._lanes[lane])

    def _advance(self, positions: list[list[int]], lane: int) -> None:
        position = positions[lane]
        queue = self._lanes[lane]
        position[1] += 1
        if position[1] >= len(queue[position[0]].chunks):
            position[0] += 1
            position[1] = queue[position[0]].next if position[0] < len(queue) else 0

    def consume(self, nbytes: int) -> None:
        """Commit ``nbytes`` written from the front of what ``peek`` showed."""
        self.bytes_sent += nbytes
        while nbytes > 0:
            lane = self._current_lane
            if lane < 0:
                has_work = [bool(queue) for queue in self._lanes]
                lane = _pick_lane(self._credits, has_work)
                if lane < 0:
                    raise ValueError("consume() of more bytes than were queued")
                self._offset = 0
            entry = self._lanes[lane][0]
            chunk_length = len(entry.chunks[entry.next])
            remaining = chunk_length - self._offset
            if nbytes < remaining:
                self._offset += nbytes
                self._current_lane = lane
                return
            nbytes -= remaining
            self._current_lane = -1
            self._offset = 0
            self._lane_bytes[lane] -= chunk_length
            entry.next += 1
            if entry.next == len(entry.chunks):
                self._lanes[lane].popleft()

    def write_to(self, fd: int = -1) -> int:
        """Write as much as the socket takes without blocking; return the bytes written.

        Raises OSError for a broken connection. When this returns with
        ``empty`` still false, the socket is full: wait until it is writable.
        """
        if fd < 0:
            fd = self.fd
        written = 0
        while True:
            buffers = self.peek()
            if not buffers:
                return written
            try:
                count = os.writev(fd, buffers)
            except (BlockingIOError, InterruptedError):
                return written
            self.consume(count)
            written += count
            if count < sum(len(buffer) for buffer in buffers):
                return written


def recv_some(fd: int, max_bytes: int) -> bytes | None:
    """Read what the socket ``fd`` holds now, up to ``max_bytes``, without blocking.

    At most 64 KiB per call. Returns the bytes, ``b""`` when the peer has closed, or ``None`` when
    nothing is waiting (no exception on the common path: the caller waits
    until the socket is readable, then calls again). Other errors raise
    OSError.
    """
    if max_bytes < 1:
        raise ValueError(f"max_bytes {max_bytes} must be at least 1")
    try:
        return os.read(fd, min(max_bytes, _RECV_MAX_BYTES))
    except (BlockingIOError, InterruptedError):
        return None


def deliver(
    queues: Sequence[SendQueue],
    lane: int,
    chunks: Sequence[Any],
    track: int = 0,
    keyframe: bool = False,
    now: float = 0.0,
    write: bool = True,
) -> list[SendQueue]:
    """Queue one message for every subscriber and try to send it at once.

    The common case (the subscriber's socket has room) finishes here with one
    scatter-gather write per subscriber. Returns the queues that need their
    owner's attention: newly blocked (wait until writable), overflowed
    (``queue.overflowed``), or broken (``queue.error`` holds the OSError). A
    bad lane or an empty message raises ValueError before any queue is
    touched. With ``write=False`` it only queues: call ``flush`` once after
    queueing several messages, so each subscriber gets them in one write.
    """
    _check_lane(lane)
    _message_size(chunks)
    attention = []
    for queue in queues:
        status = queue.push(lane, chunks, track, keyframe, now)
        if status == OVERFLOW:
            attention.append(queue)
            continue
        if write and status == QUEUED:
            _write_one(queue, attention)
    return attention


def flush(queues: Sequence[SendQueue]) -> list[SendQueue]:
    """Write what each queue holds, once per queue (repeats cost nothing); returns those needing attention."""
    attention: list[SendQueue] = []
    for queue in queues:
        if not queue.empty:
            _write_one(queue, attention)
    return attention


def _write_one(queue: SendQueue, attention: list[SendQueue]) -> int:
    """Write what ``queue`` holds now; returns the bytes written."""
    if queue.blocked or queue.fd < 0:
        return 0
    try:
        written = queue.write_to(queue.fd)
    except OSError as error:
        queue.error = error
        queue.blocked = True
        attention.append(queue)
        return 0
    if not queue.empty:
        queue.blocked = True
        attention.append(queue)
    return written


class Fanout:
    """Media messages on their way to many subscribers, worked off in bounded slices.

    ``add()`` queues one message for a tuple of subscriber queues; each call
    of ``run()`` does one slice of the work and returns the queues that need
    their owner's attention (blocked, overflowed or broken, as ``deliver``).
    The owner calls ``run()`` while ``busy`` and lets its event loop turn
    between calls, so one call never takes longer than writing
    ``slice_sockets`` sockets or ``slice_bytes`` bytes, whichever comes first.

    Work goes in rounds. A round starts by pushing every waiting message (up
    to ``round_pushes`` subscriber pushes) into its subscribers' queues
    without writing, then writes each queue it touched once: under load
    several messages leave in one scatter-gather write; when quiet a round
    is one message and adds no delay.

    Audio rides with video: with ``audio_hold`` > 0, a queue that holds only
    audio queued less than ``audio_hold`` seconds ago is not written; its
    audio leaves with the next video frame or control frame written to that
    subscriber, or on its own once ``audio_hold`` has passed (``next_due``
    says when). A 30 fps stream then costs one write per video frame instead
    of one per audio and video frame, about 30 instead of 77 a second per
    subscriber, and its audio reaches the subscriber at most ``audio_hold``
    later. Video, alerts and control frames are never held.
    """

    def __init__(
        self,
        audio_hold: float = 0.0,
        slice_sockets: int = 64,
        slice_bytes: int = 1024 * 1024,
        round_pushes: int = 8192,
    ) -> None:
        if not audio_hold >= 0.0:
            raise ValueError(f"audio_hold {audio_hold!r} must be zero or more seconds")
        if slice_sockets < 1 or slice_bytes < 1 or round_pushes < 1:
            raise ValueError("slice_sockets, slice_bytes and round_pushes must be at least 1")
        self.audio_hold = float(audio_hold)
        self.slice_sockets = slice_sockets
        self.slice_bytes = slice_bytes
        self.round_pushes = round_pushes
        self.messages = 0
        self.deliveries = 0
        self.rounds = 0
        self.writes = 0
        self._pending: deque[tuple[Sequence[SendQueue], Message]] = deque()
        #: (when pushed, subscribers) of audio pushed without writing, oldest first.
        self._held: deque[tuple[float, Sequence[SendQueue]]] = deque()
        self._touched: list[SendQueue] = []
        self._cursor = 0

    @property
    def pending(self) -> int:
        """Messages added and not yet pushed into their subscribers' queues."""
        return len(self._pending)

    @property
    def busy(self) -> bool:
        """Whether ``run()`` has work now (waiting messages or a round half written)."""
        return bool(self._pending) or self._cursor < len(self._touched)

    @property
    def next_due(self) -> float:
        """When the oldest held audio must be written (``inf`` when none is held)."""
        return self._held[0][0] + self.audio_hold if self._held else float("inf")

    def add(self, subscribers: Sequence[SendQueue], message: Message) -> None:
        """Queue ``message`` for every queue in ``subscribers`` (kept as given)."""
        self._pending.append((subscribers, message))

    def run(self, now: float) -> list[SendQueue]:
        """One slice: start a round if none is under way, then write up to the slice bounds."""
        attention: list[SendQueue] = []
        if self._cursor >= len(self._touched):
            self._start_round(now, attention)
        touched = self._touched
        hold = self.audio_hold
        sockets = written = 0
        while self._cursor < len(touched) and sockets < self.slice_sockets and written < self.slice_bytes:
            queue = touched[self._cursor]
            self._cursor += 1
            if queue.empty or queue.blocked or queue.fd < 0:
                continue
            if hold and queue.audio_waits(now, hold):
                continue
            written += _write_one(queue, attention)
            sockets += 1
            self.writes += 1
        if self._cursor >= len(touched):
            self._forget_audio_gone()
        return attention

    def _forget_audio_gone(self) -> None:
        """Drop held entries whose audio has left with a video frame: no wakeup for them."""
        held = self._held
        while held:
            queued_at, subscribers = held[0]
            if any(queue.holds_audio_from(queued_at) for queue in subscribers):
                return
            held.popleft()

    def _start_round(self, now: float, attention: list[SendQueue]) -> None:
        touched: list[SendQueue] = []
        seen: set[int] = set()
        hold = self.audio_hold

        def touch(queue: SendQueue) -> None:
            if id(queue) not in seen:
                seen.add(id(queue))
                touched.append(queue)

        held = self._held
        while held and held[0][0] + hold <= now:
            for queue in held.popleft()[1]:
                touch(queue)
        pushes = 0
        pending = self._pending
        while pending and pushes < self.round_pushes:
            subscribers, message = pending.popleft()
            _check_lane(message.lane)
            riding = hold > 0.0 and message.lane == _AUDIO
            for queue in subscribers:
                status = queue.push(message.lane, message.chunks, message.track, message.keyframe, now)
                if status == OVERFLOW:
                    attention.append(queue)
                elif status == QUEUED and not riding:
                    touch(queue)
            if riding and subscribers:
                held.append((now, subscribers))
            pushes += len(subscribers)
            self.messages += 1
        self.deliveries += pushes
        if touched:
            self.rounds += 1
        self._touched = touched
        self._cursor = 0
