"""Talk-back playout at the button: Opus packets of an operator's voice → PCM → a speaker or a WAV file.

A button gets talk-back as one Opus packet per message (docs/protocol.md
§5.19). ``TalkBackPlayer`` decodes each as it arrives and hands 48 kHz mono
``s16`` samples to its sinks at once: no jitter buffer beyond the sound
card's own, because a few milliseconds of silence between packets on a
loaded network hurt less than a voice that lags the operator. Each talk
session (one press-and-hold) gets a fresh decoder, so one session's state
never colours the next.

Sinks:

* ``WavSink``: every session's samples appended to one WAV file, for tests
  and for a record on the device; it notes when each packet was played.
* ``SpeakerSink``: the sound card, through ``sounddevice`` (PortAudio) when
  it is installed, else ALSA's ``aplay``; neither, or no output device, is a
  ``SpeakerUnavailable`` that says what to install or to use ``--talkback-wav``.

``playouts`` lists ``(captured_at_us, played_at_us)`` per packet, the
operator's capture time against the wall clock when its samples reached the
sinks: mouth-to-speaker latency (benchmarks/talkback_latency.py).
"""

from __future__ import annotations

import io
import shutil
import struct
import subprocess
import threading
import time
import wave
from collections import deque
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any, Protocol

import av
import numpy as np

from .decoder import Decoder
from .errors import MediaError, SourceUnavailable
from .tracks import TrackInfo

__all__ = ["SpeakerSink", "SpeakerUnavailable", "TalkBackPlayer", "WavSink", "ogg_opus"]

SAMPLE_RATE = 48000
#: Playout times remembered per player (about 20 minutes of 20 ms packets).
MAX_PLAYOUTS = 60_000


class SpeakerUnavailable(SourceUnavailable):
    """No way to play sound here: no audio library, no player, or no output device."""


class Sink(Protocol):
    def write(self, samples: bytes) -> None: ...

    def close(self) -> None: ...


def _wall_us() -> int:
    return time.time_ns() // 1000


class WavSink:
    """Appends 48 kHz mono 16-bit samples to one WAV file (the header is kept valid as it grows)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            self._file = wave.open(str(self.path), "wb")  # noqa: SIM115 - kept open for the session
        except OSError as error:
            raise SourceUnavailable(f"cannot write the talk-back WAV file {self.path}: "
                                    f"{error.strerror or error}") from None
        self._file.setnchannels(1)
        self._file.setsampwidth(2)
        self._file.setframerate(SAMPLE_RATE)
        self.samples = 0

    def write(self, samples: bytes) -> None:
        # writeframes patches the header's lengths each time: a reader sees every sample so far.
        self._file.writeframes(samples)
        self.samples += len(samples) // 2

    def close(self) -> None:
        self._file.close()


class SpeakerSink:
    """The sound card: sounddevice if installed, else ``aplay``; the choice is in ``backend``."""

    def __init__(self, device: str | None = None) -> None:
        self.backend = ""
        self._stream: Any = None
        self._process: subprocess.Popen[bytes] | None = None
        self._buffer: deque[bytes] = deque()
        self._pending = b""
        self._lock = threading.Lock()
        reasons = []
        try:
            self._open_sounddevice(device)
            return
        except ImportError:
            reasons.append("the Python package sounddevice is not installed (pip install sounddevice)")
        except Exception as error:  # noqa: BLE001 - PortAudio reports a missing device in many ways
            reasons.append(f"sounddevice found no output device ({error})")
        aplay = shutil.which("aplay")
        if aplay is None:
            reasons.append("ALSA's aplay is not installed (apt-get install alsa-utils)")
        else:
            self._open_aplay(aplay, device)
            return
        raise SpeakerUnavailable(
            "cannot play talk-back on a speaker: " + "; ".join(reasons)
            + ". Connect an audio device or use --talkback-wav FILE instead of --speaker"
        )

    def _open_sounddevice(self, device: str | None) -> None:
        import sounddevice  # optional: needs the PortAudio library

        self._stream = sounddevice.RawOutputStream(
            samplerate=SAMPLE_RATE, channels=1, dtype="int16", device=device, latency="low",
            callback=self._fill,
        )
        self._stream.start()
        self.backend = "sounddevice"

    def _open_aplay(self, aplay: str, device: str | None) -> None:
        command = [aplay, "-q", "-t", "raw", "-f", "S16_LE", "-r", str(SAMPLE_RATE), "-c", "1",
                   "--buffer-time=60000"]
        if device:
            command += ["-D", device]
        self._process = subprocess.Popen(command, stdin=subprocess.PIPE, stderr=subprocess.PIPE)
        time.sleep(0.05)
        if self._process.poll() is not None:
            error = (self._process.stderr.read() if self._process.stderr else b"").decode(errors="replace")
            raise SpeakerUnavailable(f"aplay cannot open the audio device{' ' + device if device else ''}: "
                                     f"{error.strip() or 'it exited'}; use --talkback-wav FILE instead")
        self.backend = "aplay"

    def _fill(self, out: Any, frames: int, _time: Any, _status: Any) -> None:
        """PortAudio's callback: what has arrived, then silence."""
        wanted = frames * 2
        with self._lock:
            data = self._pending
            while len(data) < wanted and self._buffer:
                data += self._buffer.popleft()
            self._pending = data[wanted:]
        chunk = data[:wanted]
        out[: len(chunk)] = chunk
        out[len(chunk):] = b"\x00" * (wanted - len(chunk))

    def write(self, samples: bytes) -> None:
        if self._stream is not None:
            with self._lock:
                self._buffer.append(samples)
            return
        assert self._process is not None and self._process.stdin is not None
        try:
            self._process.stdin.write(samples)
            self._process.stdin.flush()
        except BrokenPipeError:
            raise SpeakerUnavailable("aplay stopped playing (the audio device went away)") from None

    def close(self) -> None:
        if self._stream is not None:
            self._stream.close()
        if self._process is not None:
            if self._process.stdin is not None:
                self._process.stdin.close()
            self._process.terminate()
            self._process.wait(2)


class TalkBackPlayer:
    """Decodes talk-back messages (``pinkrelay.protocol.TalkBack``) and plays them on every sink."""

    def __init__(self, sinks: list[Any], on_talk: Any = None) -> None:
        if not sinks:
            raise ValueError("a talk-back player needs at least one sink (a speaker or a WAV file)")
        self.sinks = list(sinks)
        #: Called with ("start", message) at a talk's first message and ("end", message) at its last.
        self.on_talk = on_talk
        self._decoder: Any = None
        self._resampler: Any = None
        self.talk_id = ""
        self.sessions = 0
        self.packets = 0
        self.undecodable = 0
        self.playouts: deque[tuple[int, int]] = deque(maxlen=MAX_PLAYOUTS)

    def receive(self, message: Any) -> None:
        """Play one talk-back message now (any object with the TalkBack fields)."""
        if message.talk_id != self.talk_id:
            self._start(message.talk_id)
            if self.on_talk is not None:
                self.on_talk("start", message)
        if message.packet:
            samples = self._decode(message.packet)
            if samples:
                for sink in self.sinks:
                    sink.write(samples)
                self.packets += 1
                if message.captured_at:
                    self.playouts.append((message.captured_at, _wall_us()))
        if message.end:
            self.talk_id = ""
            self._decoder = None
            if self.on_talk is not None:
                self.on_talk("end", message)

    def latency_ms(self, last: int = 0) -> list[float]:
        """Mouth-to-speaker latency of the packets played (the last ``last`` only, if given), in ms."""
        playouts = list(self.playouts)[-last:] if last else list(self.playouts)
        return [(played - captured) / 1000.0 for captured, played in playouts]

    def _start(self, talk_id: str) -> None:
        self._decoder = Decoder(TrackInfo(kind="audio", codec="opus", sample_rate=SAMPLE_RATE, channels=1))
        self._resampler = av.AudioResampler(format="s16", layout="mono", rate=SAMPLE_RATE)
        self.talk_id = talk_id
        self.sessions += 1

    def _decode(self, packet: bytes) -> bytes:
        try:
            frames = self._decoder.decode(packet)
        except MediaError:
            # One bad packet costs 20 ms of sound, not the session.
            self.undecodable += 1
            return b""
        out = []
        for frame in frames:
            for converted in self._resampler.resample(frame):
                out.append(np.ascontiguousarray(converted.to_ndarray()).tobytes())
        return b"".join(out)

    def close(self) -> None:
        for sink in self.sinks:
            sink.close()


#: OpusHead (RFC 7845 §5.1): version 1, mono, 312 samples of pre-skip (libopus' look-ahead), 48 kHz, no gain.
_OPUS_HEAD = b"OpusHead" + struct.pack("<BBHIhB", 1, 1, 312, SAMPLE_RATE, 0, 0)
_OPUS_FRAME = 960  # samples of one 20 ms packet at 48 kHz


def ogg_opus(packets: Sequence[bytes]) -> bytes:
    """One talk's Opus packets as an Ogg Opus file (RFC 7845), muxed as they are, without re-encoding.

    Playable with any standard player (ffplay, VLC, opusdec); evidence keeps
    an operator's words in it. Packets are taken as 20 ms each, as the web
    control room sends them.
    """
    buffer = io.BytesIO()
    try:
        with av.open(buffer, "w", format="ogg") as container:
            stream = container.add_stream("libopus", rate=SAMPLE_RATE)
            stream.codec_context.layout = "mono"
            stream.codec_context.extradata = _OPUS_HEAD
            stream.time_base = Fraction(1, SAMPLE_RATE)
            for index, data in enumerate(packets):
                packet = av.Packet(data)
                packet.pts = packet.dts = index * _OPUS_FRAME
                packet.duration = _OPUS_FRAME
                packet.time_base = stream.time_base
                packet.stream = stream
                container.mux(packet)
    except (av.FFmpegError, ValueError) as error:
        raise MediaError(f"cannot write {len(packets)} talk-back packets as Ogg Opus: {error}") from error
    return buffer.getvalue()
