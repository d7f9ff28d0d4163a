"""A camera for the RTSP tests: an MP4 (H.264 or HEVC + AAC) encoded by PyAV, served by gst-rtsp-server."""

from __future__ import annotations

import socket
import subprocess
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

HERE = Path(__file__).parent
#: Debian's python3 has python3-gi and GStreamer's RTSP server (scripts/install-system-deps.sh).
SYSTEM_PYTHON = "/usr/bin/python3"


def write_camera_file(path: Path, *, seconds: float = 30.0, codec: str = "libx264", fps: int = 25,
                      gop: int = 25) -> Path:
    """``seconds`` of moving picture and a tone, keyframes every ``gop`` frames."""
    with av.open(str(path), "w", format="mp4") as container:
        video = container.add_stream(codec, rate=fps)
        video.width, video.height, video.pix_fmt = 320, 240, "yuv420p"
        video.codec_context.gop_size = gop
        if codec == "libx264":
            video.codec_context.options = {"preset": "ultrafast", "tune": "zerolatency", "bf": "0"}
        else:
            video.codec_context.options = {"preset": "ultrafast", "x265-params": "log-level=error:bframes=0"}
        audio = container.add_stream("aac", rate=48000)
        audio.layout = "mono"
        samples = 1024
        frames = int(seconds * fps)
        t = 0
        for n in range(frames):
            image = np.full((240, 320, 3), (n * 7) % 255, dtype=np.uint8)
            image[:, (n * 4) % 320] = 255
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts = n
            frame.time_base = Fraction(1, fps)
            for packet in video.encode(frame):
                container.mux(packet)
            while t < (n + 1) * 48000 // fps:
                tone = (0.2 * np.sin(2 * np.pi * 440 * (t + np.arange(samples)) / 48000)).astype(np.float32)
                audio_frame = av.AudioFrame.from_ndarray(tone.reshape(1, -1), format="fltp", layout="mono")
                audio_frame.sample_rate, audio_frame.pts = 48000, t
                for packet in audio.encode(audio_frame):
                    container.mux(packet)
                t += samples
        for stream in (video, audio):
            for packet in stream.encode(None):
                container.mux(packet)
    return path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class RtspServer:
    """gst-rtsp-server in its own process; ``url`` is its camera."""

    def __init__(self, media: Path, port: int | None = None, *, hevc: bool = False) -> None:
        self.media, self.port, self.hevc = media, port or free_port(), hevc
        self.url = f"rtsp://127.0.0.1:{self.port}/cam"
        self.process: subprocess.Popen | None = None

    def start(self) -> RtspServer:
        args = [SYSTEM_PYTHON, str(HERE / "rtsp_server.py"), str(self.port), str(self.media)]
        self.process = subprocess.Popen(args + (["hevc"] if self.hevc else []), stdout=subprocess.PIPE, text=True)
        line = self.process.stdout.readline().strip()
        assert line == "ready", f"the RTSP server did not start (said {line!r}); is gir1.2-gst-rtsp-server-1.0 installed?"
        return self

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
