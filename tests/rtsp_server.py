"""A real RTSP server (GStreamer's gst-rtsp-server) serving an MP4 file at rtsp://127.0.0.1:PORT/cam.

Usage (Debian's python3 with python3-gi): rtsp_server.py PORT FILE
Video H.264 or HEVC (from the file) and AAC audio; prints ``ready`` once it listens.
"""

from __future__ import annotations

import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402


def main() -> None:
    port, path = sys.argv[1], sys.argv[2]
    hevc = len(sys.argv) > 3 and sys.argv[3] == "hevc"
    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(port)
    factory = GstRtspServer.RTSPMediaFactory()
    video = "h265parse config-interval=-1 ! rtph265pay" if hevc else "h264parse config-interval=-1 ! rtph264pay"
    factory.set_launch(
        f"( filesrc location={path} ! qtdemux name=demux "
        f"demux.video_0 ! queue ! {video} name=pay0 pt=96 "
        f"demux.audio_0 ! queue ! aacparse ! rtpmp4gpay name=pay1 pt=97 )")
    factory.set_shared(True)
    server.get_mount_points().add_factory("/cam", factory)
    if server.attach(None) == 0:
        sys.exit(f"rtsp server: cannot listen on 127.0.0.1:{port}")
    print("ready", flush=True)
    GLib.MainLoop().run()


if __name__ == "__main__":
    main()
