"""Fragmented MP4 in memory: an init segment, then one fragment per video keyframe.

The relay's evidence recorder (pinkrelay/relay/evidence/) must write media
in pieces that are each final once written, so that a crash loses at most
the piece being filled and every finished piece can be hashed at once. A
fragmented MP4 does exactly that: ``ftyp`` + ``moov`` (the init segment)
describe the tracks, and each ``moof`` + ``mdat`` pair (a fragment) holds
the samples from one video keyframe to the next. Concatenating the init
segment and any run of consecutive fragments gives a file players open.

PyAV muxes (stream copy, nothing is re-encoded) into a file object that
keeps the bytes; the top-level boxes are cut out of them as they complete.
Nothing here touches the disk.
"""

from __future__ import annotations

import io
import struct
from collections import deque
from dataclasses import dataclass

import av

from . import h264
from .errors import MediaError
from .packets import EncodedPacket
from .recorder import add_copy_stream, copy_packet
from .tracks import TrackInfo

__all__ = ["Fragment", "FragmentMuxer", "top_level_boxes"]

#: empty_moov: the init segment carries no samples; default_base_moof: each
#: fragment's offsets count from its own moof, so a fragment can move;
#: skip_trailer: no mfra index at the end, whose offsets would pin the file.
MOVFLAGS = "frag_keyframe+empty_moov+default_base_moof+skip_trailer"


@dataclass(frozen=True, slots=True)
class Fragment:
    """One ``moof`` + ``mdat``: the samples from the video keyframe at ``start_us`` up to the next."""

    data: bytes
    start_us: int


class _Capture(io.RawIOBase):
    """A write-only, non-seekable file that keeps what the muxer writes."""

    def __init__(self) -> None:
        super().__init__()
        self.buffer = bytearray()

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def write(self, data: bytes) -> int:  # type: ignore[override]
        self.buffer += data
        return len(data)


def top_level_boxes(data: bytes | bytearray | memoryview) -> list[tuple[bytes, int, int]]:
    """(type, offset, size) of each complete top-level ISO-BMFF box at the start of ``data``."""
    boxes = []
    offset = 0
    view = memoryview(data)
    while len(view) - offset >= 8:
        size, kind = struct.unpack_from(">I4s", view, offset)
        header = 8
        if size == 1:
            if len(view) - offset < 16:
                break
            (size,) = struct.unpack_from(">Q", view, offset + 8)
            header = 16
        if size < header:
            raise MediaError(f"box {kind!r} at offset {offset} declares {size} bytes, less than its header")
        if len(view) - offset < size:
            break
        boxes.append((bytes(kind), offset, size))
        offset += size
    return boxes


class FragmentMuxer:
    """Mux :class:`EncodedPacket` objects into an init segment and fragments, without re-encoding.

    ``write(i, packet)`` takes packets of ``tracks[i]`` with increasing
    ``pts_us`` per track; it returns the fragments that this packet
    completed (a video keyframe closes the fragment before it). Video before
    the first keyframe and audio older than it are dropped
    (``dropped_packets``). Output timestamps are the input's, so a caller
    that shifts them (a later part of one incident) keeps one time line.
    """

    def __init__(self, tracks: list[TrackInfo], label: str = "fragmented mp4") -> None:
        if not tracks or not any(track.kind == "video" for track in tracks):
            raise ValueError(f"{label}: a fragmented recording needs a video track, got {tracks!r}")
        self.tracks = list(tracks)
        self.label = label
        self.init: bytes | None = None
        self.dropped_packets = 0
        self._video = next(i for i, track in enumerate(self.tracks) if track.kind == "video")
        self._capture = _Capture()
        self._container: av.container.OutputContainer | None = None
        self._streams: list[av.stream.Stream] = []
        self._keyframes: deque[int] = deque()
        self._first_keyframe: int | None = None
        self._last_pts = [None] * len(self.tracks)
        self._extradata = [track.extradata for track in self.tracks]
        self._closed = False

    @property
    def started(self) -> bool:
        return self._container is not None

    def write(self, track_index: int, packet: EncodedPacket) -> list[Fragment]:
        if self._closed:
            raise MediaError(f"{self.label} is closed; start a new FragmentMuxer")
        if self._container is None:
            if track_index != self._video or not packet.keyframe:
                self.dropped_packets += 1
                return []
            self._start(packet)
        if self._first_keyframe is None or packet.pts_us < self._first_keyframe:
            self.dropped_packets += 1
            return []
        last = self._last_pts[track_index]
        if last is not None and packet.pts_us <= last:
            self.dropped_packets += 1
            return []
        self._last_pts[track_index] = packet.pts_us
        data = packet.data
        if track_index == self._video:
            data = h264.to_length_prefixed(data)
            if packet.keyframe:
                self._keyframes.append(packet.pts_us)
        try:
            self._container.mux(copy_packet(data, packet.pts_us, packet, self._streams[track_index]))
        except av.FFmpegError as err:
            raise MediaError(f"{self.label}: cannot mux {packet.kind} packet at {packet.pts_us} us: {err}") from err
        return self._collect()

    def close(self) -> list[Fragment]:
        """Flush the last fragment; safe to call more than once."""
        if self._closed or self._container is None:
            self._closed = True
            return []
        self._closed = True
        try:
            self._container.close()
        except av.FFmpegError as err:
            raise MediaError(f"{self.label}: cannot finish the last fragment: {err}") from err
        return self._collect()

    def _start(self, keyframe: EncodedPacket) -> None:
        video = self.tracks[self._video]
        if not self._extradata[self._video]:
            sps, pps = h264.parameter_sets(keyframe.data)
            if not (sps and pps):
                raise MediaError(f"{self.label}: the first keyframe has no SPS/PPS and the track has no extradata")
            self._extradata[self._video] = h264.join_annexb(sps + pps)
        try:
            self._container = av.open(self._capture, "w", format="mp4", options={"movflags": MOVFLAGS})
            self._streams = [
                add_copy_stream(self._container, track, self._extradata[i], self.label)
                for i, track in enumerate(self.tracks)
            ]
            self._container.start_encoding()
        except av.FFmpegError as err:
            raise MediaError(f"{self.label}: cannot start muxing {video.codec}: {err}") from err
        self._first_keyframe = keyframe.pts_us

    def _collect(self) -> list[Fragment]:
        buffer = self._capture.buffer
        boxes = top_level_boxes(buffer)
        fragments = []
        used = 0
        index = 0
        while index < len(boxes):
            kind, offset, size = boxes[index]
            if self.init is None:
                if kind != b"moov":
                    index += 1
                    continue
                self.init = bytes(buffer[:offset + size])
                used = offset + size
                index += 1
                continue
            if kind == b"moof":
                if index + 1 >= len(boxes):
                    break
                mdat_kind, mdat_offset, mdat_size = boxes[index + 1]
                if mdat_kind != b"mdat":
                    raise MediaError(f"{self.label}: moof followed by {mdat_kind!r}, not mdat")
                start = self._keyframes.popleft() if self._keyframes else self._first_keyframe or 0
                fragments.append(Fragment(bytes(buffer[offset:mdat_offset + mdat_size]), start))
                used = mdat_offset + mdat_size
                index += 2
                continue
            used = offset + size  # anything else between fragments (none expected) is dropped
            index += 1
        if used:
            del buffer[:used]
        return fragments


def join_parts(parts: list[tuple[bytes, int]], path: str) -> int:
    """Remux fragmented parts into one ordinary MP4 at ``path``; returns the packets written.

    Each part is (init segment + its fragments, where it starts on the
    recording's time line in µs): a part that began after an interruption
    stays where it happened, with the gap as a gap. The index goes at the
    front (``faststart``), so a browser can seek before it has the file.
    """
    if not parts:
        raise MediaError(f"nothing to write to {path}: the recording has no segments")
    written = 0
    try:
        output = av.open(path, "w", format="mp4", options={"movflags": "+faststart"})
    except av.FFmpegError as err:
        raise MediaError(f"cannot write {path}: {err}") from err
    with output:
        streams: dict[str, av.stream.Stream] = {}
        last: dict[str, int] = {}
        for number, (part, offset_us) in enumerate(parts, start=1):
            try:
                source = av.open(io.BytesIO(part), "r", format="mp4")
            except av.FFmpegError as err:
                raise MediaError(f"part {number} of the recording cannot be read: {err}") from err
            with source:
                for stream in source.streams:
                    if stream.type in ("video", "audio") and stream.type not in streams:
                        streams[stream.type] = output.add_stream_from_template(stream)
                first: dict[str, int] = {}
                for packet in source.demux():
                    kind = packet.stream.type
                    if packet.dts is None or packet.pts is None or kind not in streams:
                        continue
                    base = packet.time_base
                    start = first.setdefault(kind, packet.dts)
                    shift = int(offset_us * 1e-6 / base) - start
                    dts, pts = packet.dts + shift, packet.pts + shift
                    if dts <= last.get(kind, -(2**62)):
                        continue
                    last[kind] = dts
                    packet.dts, packet.pts = dts, pts
                    packet.stream = streams[kind]
                    packet.time_base = base
                    output.mux(packet)
                    written += 1
    return written
