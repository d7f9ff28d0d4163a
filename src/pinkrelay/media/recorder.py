"""Write received packets to an MP4 or Matroska file without re-encoding.

The control room keeps evidence of every alert, so recordings must be cheap
(no transcoding, a stream copy of what the button sent) and must open in
ordinary players: H.264 is stored as avcC + length-prefixed NAL units, audio
as raw Opus/AAC with its codec configuration.
"""

from __future__ import annotations

from collections import deque
from fractions import Fraction
from os import PathLike, fspath
from pathlib import Path
from types import TracebackType

import av

from . import h264
from ._audio import channel_layout
from ._timebase import MICROSECOND, frame_rate
from .errors import CodecUnavailable, MediaError
from .packets import EncodedPacket
from .tracks import TrackInfo

__all__ = ["Recorder", "add_copy_stream", "copy_packet"]

_FORMATS = {".mp4": "mp4", ".m4v": "mp4", ".mkv": "matroska"}
_STREAM_ENCODERS = {"h264": "libx264", "opus": "libopus", "aac": "aac"}
_MAX_PENDING = 512


class Recorder:
    """Mux :class:`EncodedPacket` objects for the given tracks into ``path`` (``.mp4``, ``.m4v`` or ``.mkv``).

    ``write(i, packet)`` takes packets of ``tracks[i]`` in increasing ``pts_us``
    order per track (tracks may interleave loosely; the muxer reorders). The
    file starts at the first video keyframe: earlier video packets cannot be
    decoded and are dropped, as are packets older than that keyframe or not
    newer than the previous packet of their track; ``dropped_packets`` counts
    them. Timestamps are shifted so the file starts at zero. H.264 tracks
    whose ``extradata`` is empty take SPS/PPS from their first keyframe.
    """

    def __init__(self, path: str | PathLike[str], tracks: list[TrackInfo]) -> None:
        self.path = Path(fspath(path))
        suffix = self.path.suffix.lower()
        if suffix not in _FORMATS:
            raise ValueError(f"cannot record to {self.path}: use a file name ending in one of {sorted(_FORMATS)}")
        if not tracks:
            raise ValueError(f"cannot record to {self.path} without tracks; pass at least one TrackInfo")
        if not self.path.parent.is_dir():
            raise FileNotFoundError(f"cannot record to {self.path}: directory {self.path.parent} does not exist")
        self.tracks = list(tracks)
        self._format = _FORMATS[suffix]
        self._extradata = [track.extradata for track in self.tracks]
        self._waiting = {i for i, track in enumerate(self.tracks) if track.kind == "video"}
        self._keyframe_pts: list[int] = []
        self._pending: deque[tuple[int, EncodedPacket]] = deque()
        self._last_pts = [-1] * len(self.tracks)
        self._container: av.container.OutputContainer | None = None
        self._streams: list[av.stream.Stream] = []
        self._origin = 0
        self._closed = False
        self.packets_written = [0] * len(self.tracks)
        self.dropped_packets = 0

    def write(self, track_index: int, packet: EncodedPacket) -> None:
        """Add one packet of ``tracks[track_index]`` to the recording."""
        if self._closed:
            raise MediaError(f"recorder for {self.path} is closed; create a new Recorder to record again")
        if not 0 <= track_index < len(self.tracks):
            raise IndexError(f"track index {track_index} is out of range; this recorder has {len(self.tracks)} tracks")
        track = self.tracks[track_index]
        if packet.kind != track.kind:
            raise ValueError(f"{packet.kind} packet written to {track.kind} track {track_index} of {self.path}")
        if track_index in self._waiting:
            if not packet.keyframe:
                self.dropped_packets += 1
                return
            self._accept_first_keyframe(track_index, packet)
        if self._container is None:
            if len(self._pending) >= _MAX_PENDING:
                self._pending.popleft()
                self.dropped_packets += 1
            self._pending.append((track_index, packet))
            if not self._waiting:
                self._start()
            return
        self._mux(track_index, packet)

    def close(self) -> None:
        """Finish the file (writes the MP4 index); safe to call more than once."""
        if self._closed:
            return
        self._closed = True
        try:
            if self._container is None:
                self._start()
            self._container.close()
        except av.FFmpegError as err:
            raise MediaError(f"cannot finish recording {self.path}: {err}") from err

    def __enter__(self) -> Recorder:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def _accept_first_keyframe(self, track_index: int, packet: EncodedPacket) -> None:
        if not self._extradata[track_index]:
            sps, pps = h264.parameter_sets(packet.data)
            if not (sps and pps):
                raise MediaError(
                    f"first keyframe of video track {track_index} for {self.path} has no SPS/PPS and the "
                    "TrackInfo has no extradata; pass the encoder's track_info after its first keyframe"
                )
            self._extradata[track_index] = h264.join_annexb(sps + pps)
        self._waiting.discard(track_index)
        self._keyframe_pts.append(packet.pts_us)

    def _start(self) -> None:
        pending = sorted(self._pending, key=lambda item: item[1].pts_us)
        self._pending.clear()
        if self._keyframe_pts:
            self._origin = min(self._keyframe_pts)
        elif pending:
            self._origin = pending[0][1].pts_us
        try:
            self._container = av.open(fspath(self.path), "w", format=self._format)
            self._streams = [
                add_copy_stream(self._container, track, self._extradata[i], self.path)
                for i, track in enumerate(self.tracks)
            ]
        except av.FFmpegError as err:
            raise MediaError(f"cannot start recording {self.path}: {err}") from err
        for track_index, packet in pending:
            self._mux(track_index, packet)

    def _mux(self, track_index: int, packet: EncodedPacket) -> None:
        pts = packet.pts_us - self._origin
        if pts < 0 or pts <= self._last_pts[track_index]:
            self.dropped_packets += 1
            return
        self._last_pts[track_index] = pts
        data = packet.data
        if self.tracks[track_index].kind == "video":
            data = h264.to_length_prefixed(data)
        try:
            self._container.mux(copy_packet(data, pts, packet, self._streams[track_index]))
        except av.FFmpegError as err:
            raise MediaError(f"cannot write {packet.kind} packet at {packet.pts_us} us to {self.path}: {err}") from err
        self.packets_written[track_index] += 1


def copy_packet(data: bytes, pts: int, packet: EncodedPacket, stream: av.stream.Stream) -> av.Packet:
    """An ``av.Packet`` of ``data`` (already in the container's form) at ``pts`` µs, for ``stream``."""
    av_packet = av.Packet(data)
    av_packet.pts = av_packet.dts = pts
    av_packet.duration = packet.duration_us
    av_packet.time_base = MICROSECOND
    av_packet.is_keyframe = packet.keyframe
    av_packet.stream = stream
    return av_packet


def add_copy_stream(
    container: av.container.OutputContainer, track: TrackInfo, extradata: bytes, path: object
) -> av.stream.Stream:
    """Create a stream whose parameters, including extradata, describe the incoming packets.

    PyAV only builds stream parameters from a codec context, so one is
    opened for the codec and its extradata replaced by the track's; it
    never encodes anything. ``path`` only names the output in errors.
    """
    name = _STREAM_ENCODERS[track.codec]
    if name not in av.codecs_available:
        raise CodecUnavailable(
            f"cannot record {track.codec} to {path}: this PyAV build lacks {name}; "
            "install the PyPI 'av' wheel, which bundles it"
        )
    if track.kind == "video":
        rate = frame_rate(track.fps or 30.0)
        stream = container.add_stream(name, rate=rate)
        context = stream.codec_context
        context.width = track.width
        context.height = track.height
        context.pix_fmt = "yuv420p"
        context.time_base = MICROSECOND
        context.thread_count = 1
        context.options = {"preset": "ultrafast"}
        context.open()
        context.extradata = h264.annexb_to_avcc(extradata) if extradata else None
        return stream
    stream = container.add_stream(name, rate=track.sample_rate)
    context = stream.codec_context
    context.layout = channel_layout(track.channels)
    formats = [f.name for f in context.codec.audio_formats or ()]
    context.format = "s16" if "s16" in formats else formats[0]
    context.time_base = Fraction(1, track.sample_rate)
    if track.bitrate:
        context.bit_rate = track.bitrate
    context.open()
    if extradata:
        context.extradata = extradata
    return stream
