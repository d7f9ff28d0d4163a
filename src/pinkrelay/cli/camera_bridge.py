"""``pinkrelay camera-bridge``: an IP camera as a panic button, the reference a device maker can copy.

The bridge pulls the camera's RTSP stream (pinkrelay.media.RtspSource: H.264
passed through, never re-encoded; AAC or Opus audio) and speaks protocol v1
to the relay as the button ``--id`` with ``--secret-file``, so the camera's
site, supervision and evidence work like any button's. It is connected to
the relay while the camera streams: when the stream is lost the bridge
leaves, so the relay marks the button offline after its supervision window,
and it retries the camera with backoff. A press is always delivered: with
the camera down the bridge connects just for the press.

Presses (``--press-on``, repeatable):

* ``http:HOST:PORT``: ``POST /press`` on this address raises an alert and
  answers 200 with the alert id once the relay stored it; ``GET /status``
  shows the camera, the relay link and the failure counters;
* ``file:PATH``: each line read from PATH is a press: a serial line (a
  character device such as /dev/ttyUSB0 sending a line per press), a FIFO,
  or a GPIO input exported as a character stream;
* ``onvif:URL``: the camera's own ONVIF events (``URL`` is its device
  service, ``http://USER:PASS@HOST/onvif/device_service``; ``#TOKEN`` keeps
  one digital input): a ``tns1:Device/Trigger/DigitalInput`` turning on is a
  press (pinkrelay.integrations.onvif).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import random
import re
from pathlib import Path
from typing import Any

import h11
import trio

from ..clients import ButtonClient
from ..integrations.onvif import OnvifPresses, OnvifTarget
from ..logs import setup_logging
from ..media.errors import MediaError, SourceUnavailable
from ..tls import ClientTls
from .common import (
    client_tls_of,
    DEFAULT_BUTTONS_PORT,
    CommandError,
    add_relay_option,
    positive_float,
    read_text_file,
    relay_address,
    run_trio,
    wait_for_stop,
    wall_us,
)

log = logging.getLogger("pinkrelay.camera_bridge")
_HTTP = re.compile(r"^http:(?P<host>[^:]+|\[[^\]]+\]):(?P<port>\d{1,5})$")


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "camera-bridge", allow_abbrev=False, help="an IP camera (RTSP) as a panic button",
        description="Relay an IP camera's RTSP stream as a button and raise an alert on an HTTP call "
        "or a line on a serial device or file.")
    add_relay_option(parser, DEFAULT_BUTTONS_PORT, "button")
    parser.add_argument("--rtsp", required=True, metavar="URL", help="the camera's RTSP URL (H.264)")
    parser.add_argument("--id", required=True, metavar="ID", help="the camera's button id in the registry")
    parser.add_argument("--secret-file", required=True, metavar="FILE", help="file holding its secret")
    parser.add_argument("--press-on", action="append", default=[], metavar="http:HOST:PORT|file:PATH|onvif:URL",
                        help="where presses come from (repeatable)")
    parser.add_argument("--retry-max", type=positive_float, default=30.0, metavar="S",
                        help="longest wait between attempts to reach the camera (default 30)")
    parser.add_argument("--keyframe-timeout", type=positive_float, default=10.0, metavar="S",
                        help="a camera that sends no keyframe for this long is reported (default 10)")
    parser.add_argument("--duration", type=positive_float, metavar="S", help="stop after S seconds")
    parser.set_defaults(handler=run)


def parse_press_inputs(specs: list[str]) -> list[tuple[str, Any]]:
    """``--press-on`` values as (kind, where); CommandError names a bad one."""
    inputs: list[tuple[str, Any]] = []
    for spec in specs:
        match = _HTTP.match(spec)
        if match and int(match["port"]) < 65536:  # port 0: a free port, printed at start
            inputs.append(("http", (match["host"].strip("[]"), int(match["port"]))))
        elif spec.startswith("file:") and len(spec) > 5:
            inputs.append(("file", Path(spec[5:])))
        elif spec.startswith("onvif:"):
            try:
                inputs.append(("onvif", OnvifTarget.parse(spec[6:])))
            except ValueError as error:
                raise CommandError(f"--press-on {spec!r}: {error}") from None
        else:
            raise CommandError(f"--press-on {spec!r}: use http:HOST:PORT (e.g. http:127.0.0.1:8081), "
                               "file:PATH (e.g. file:/dev/ttyUSB0) or onvif:URL (e.g. "
                               "onvif:http://user:pass@192.0.2.64/onvif/device_service#DigitalInput1)")
    return inputs


class CameraBridge:
    """One camera, one button; ``await run()`` until cancelled."""

    def __init__(self, relay: Any, button_id: str, secret: bytes, rtsp_url: str, *,
                 press_inputs: list[tuple[str, Any]] = (), retry_min: float = 0.5, retry_max: float = 30.0,
                 keyframe_timeout: float = 10.0, tls: ClientTls | None = None) -> None:
        self.button = ButtonClient(relay, button_id, secret, tls=tls)
        self.rtsp_url = rtsp_url
        self.press_inputs = list(press_inputs)
        self.retry_min, self.retry_max = retry_min, retry_max
        self.keyframe_timeout = keyframe_timeout
        #: What went wrong, counted: camera unreachable or lost, unsupported codec, keyframes missing.
        self.counters = {"camera_failures": 0, "unsupported_stream": 0, "keyframe_timeouts": 0,
                         "presses": 0, "packets": 0}
        self.last_error = ""
        self.camera_up = False
        self.http_addresses: list[tuple[str, int]] = []
        self._link_scope: trio.CancelScope | None = None
        self._link_wanted = trio.Event()
        self._nursery: trio.Nursery | None = None

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            nursery.start_soon(self._keep_link)
            for kind, where in self.press_inputs:
                if kind == "http":
                    self.http_addresses.append(await nursery.start(self._serve_http, where))
                elif kind == "onvif":
                    nursery.start_soon(OnvifPresses(where, self.press, counters=self.counters,
                                                    on_error=self._input_failed).run)
                else:
                    nursery.start_soon(self._read_press_lines, where)
            nursery.start_soon(self._camera_loop)
            task_status.started(self)

    def _input_failed(self, reason: str) -> None:
        self.last_error = reason

    def status(self) -> dict[str, Any]:
        """What ``GET /status`` answers: the camera, the relay link, the counters and the last error."""
        return {"button": self.button.button_id, "camera_up": self.camera_up,
                "connected": self.button.connected.is_set(), "counters": dict(self.counters),
                "last_error": self.last_error}

    # -- the relay link: up while the camera streams or a press waits ------------------

    def _update_link(self) -> None:
        wanted = self.camera_up or self.button.pending_presses > 0
        if wanted:
            self._link_wanted.set()
        elif self._link_scope is not None:
            self.button.close("camera stream lost")
            self._link_scope.cancel()

    async def _keep_link(self) -> None:
        while True:
            await self._link_wanted.wait()
            with trio.CancelScope() as scope:
                self._link_scope = scope
                await self.button.run()
            self._link_scope = None
            self._link_wanted = trio.Event()
            self.button.link = None
            self.button.connected = trio.Event()
            self._update_link()

    async def press(self) -> str:
        """Raise an alert; returns its id once the relay stored it."""
        self.counters["presses"] += 1
        pending = self.button.start_press()
        self._update_link()
        await pending.done.wait()
        self._update_link()
        log.warning("camera %s: press stored as alert %s", self.button.button_id, pending.alert.alert_id)
        return pending.alert.alert_id

    # -- the camera ---------------------------------------------------------------------

    async def _camera_loop(self) -> None:
        failures = 0
        while True:
            try:
                from ..media.rtsp import RtspSource  # PyAV: loaded by this command only, not by every other

                source = await trio.to_thread.run_sync(RtspSource, self.rtsp_url, abandon_on_cancel=True)
            except MediaError as error:
                failures += 1
                self._camera_failed(error)
            else:
                failures = 0
                try:
                    await self._relay(source)
                except MediaError as error:
                    failures += 1
                    self._camera_failed(error)
                finally:
                    self.camera_up = False
                    self._update_link()
            wait = min(self.retry_max, self.retry_min * 2 ** min(failures, 16)) * random.uniform(0.5, 1.0)
            await trio.sleep(wait)

    def _camera_failed(self, error: MediaError) -> None:
        from ..media.rtsp import UnsupportedStream

        key = "unsupported_stream" if isinstance(error, UnsupportedStream) else "camera_failures"
        self.counters[key] += 1
        self.last_error = str(error)
        log.warning("camera %s: %s; trying again", self.button.button_id, error)

    async def _relay(self, source: Any) -> None:
        """Pass the camera's packets to the relay until the stream fails (raises MediaError).

        A worker thread reads the camera and closes it when it is done: PyAV
        must not have a container closed under a read in progress.
        """
        send, receive = trio.open_memory_channel[Any](256)
        token = trio.lowlevel.current_trio_token()

        def read() -> None:
            try:
                for packet in source.packets():
                    trio.from_thread.run(send.send, packet, trio_token=token)
                trio.from_thread.run(send.send, SourceUnavailable(f"camera {self.rtsp_url}: stopped"),
                                     trio_token=token)
            except MediaError as error:
                with contextlib.suppress(Exception, trio.Cancelled):
                    trio.from_thread.run(send.send, error, trio_token=token)
            except (trio.RunFinishedError, trio.ClosedResourceError, trio.BrokenResourceError, trio.Cancelled):
                pass  # the bridge stopped listening: just close the camera
            finally:
                source.close()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(lambda: trio.to_thread.run_sync(read, abandon_on_cancel=True))
            with receive:
                try:
                    self.button.set_tracks([track.to_dict() for track in source.tracks])
                    self.camera_up = True
                    self._update_link()
                    log.info("camera %s: streaming %s", self.button.button_id, self.rtsp_url)
                    failure = await self._pump(receive)
                finally:
                    source.stop()
            nursery.cancel_scope.cancel()
        raise failure

    async def _pump(self, receive: trio.MemoryReceiveChannel[Any]) -> MediaError:
        """Send packets until the reader reports why the stream stopped; return that error."""
        base_us, first_pts = wall_us(), None
        last_keyframe = trio.current_time()
        reported = False
        while True:
            with trio.move_on_after(self.keyframe_timeout):
                item = await receive.receive()
                if isinstance(item, MediaError):
                    return item
                if item.kind == "video" and item.keyframe:
                    last_keyframe, reported = trio.current_time(), False
                if first_pts is None:
                    first_pts = item.pts_us
                self.counters["packets"] += 1
                self.button.send_media(item.kind, item.data, base_us + item.pts_us - first_pts, item.keyframe)
            if not reported and trio.current_time() - last_keyframe > self.keyframe_timeout:
                reported = True
                self.counters["keyframe_timeouts"] += 1
                self.last_error = (f"camera {self.rtsp_url} sent no keyframe for {self.keyframe_timeout:g} s; "
                                   "consoles cannot start its picture: set the camera's I-frame "
                                   "interval (GOP) to a few seconds")
                log.warning("camera %s: %s", self.button.button_id, self.last_error)
            if trio.current_time() - last_keyframe > 3 * self.keyframe_timeout:
                return SourceUnavailable(f"camera {self.rtsp_url}: no keyframe for "
                                         f"{3 * self.keyframe_timeout:g} s; reconnecting to it")

    # -- press inputs -------------------------------------------------------------------

    async def _serve_http(self, where: tuple[str, int], *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(where[1], host=where[0])
        task_status.started(listeners[0].socket.getsockname()[:2])
        await trio.serve_listeners(self._http_client, listeners)

    async def _http_client(self, stream: trio.SocketStream) -> None:
        conn = h11.Connection(h11.SERVER)
        request = None
        with trio.move_on_after(10):
            while request is None:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    data = await stream.receive_some(4096)
                    if not data:
                        return
                    conn.receive_data(data)
                elif isinstance(event, h11.Request):
                    request = event
                else:
                    return
        if request is None:
            return
        if request.method == b"GET" and request.target == b"/status":
            status, body = 200, self.status()
        elif request.method != b"POST" or request.target != b"/press":
            status, body = 404, {"error": "POST /press raises an alert; GET /status shows the bridge"}
        else:
            with trio.move_on_after(30) as waiting:
                alert_id = await self.press()
            status, body = (503, {"error": "the relay did not store the press within 30 s; it is still "
                                           "being retried"}) if waiting.cancelled_caught else (
                200, {"alert_id": alert_id})
        payload = json.dumps(body).encode()
        await stream.send_all(conn.send(h11.Response(status_code=status, headers=[
            ("content-type", "application/json"), ("content-length", str(len(payload))),
            ("connection", "close")])) + conn.send(h11.Data(data=payload)) + conn.send(h11.EndOfMessage()))
        await stream.aclose()

    async def _read_press_lines(self, path: Path) -> None:
        """Each line from ``path`` (serial device, FIFO, file being appended to) is a press."""
        while True:
            try:
                handle = await trio.open_file(path, "rb", buffering=0)
            except OSError as error:
                log.warning("press input %s: %s; trying again in 5 s", path, error.strerror or error)
                await trio.sleep(5)
                continue
            async with handle:
                pending = b""
                while True:
                    chunk = await handle.read(256)
                    if not chunk:
                        await trio.sleep(0.05)  # a regular file: wait for more; a tty/FIFO blocks in read
                        continue
                    pending += chunk
                    *lines, pending = pending.split(b"\n")
                    for _ in lines:
                        assert self._nursery is not None
                        self._nursery.start_soon(self.press)


def run(args: argparse.Namespace) -> int:
    setup_logging("text", "info")
    return run_trio(_main, args)


async def _main(args: argparse.Namespace) -> int:
    inputs = parse_press_inputs(args.press_on)
    if not args.rtsp.startswith(("rtsp://", "rtsps://")):
        raise CommandError(f"--rtsp {args.rtsp!r} is not an rtsp:// URL")
    secret = read_text_file(args.secret_file, "--secret-file").strip().encode()
    bridge = CameraBridge(relay_address(args.relay), args.id, secret, args.rtsp, press_inputs=inputs,
                          retry_max=args.retry_max, keyframe_timeout=args.keyframe_timeout,
                          tls=client_tls_of(args))
    async with trio.open_nursery() as nursery:
        await nursery.start(bridge.run)
        for host, port in bridge.http_addresses:
            print(f"camera-bridge {args.id}: presses on http://{host}:{port}/press", flush=True)
        reason = await wait_for_stop(args.duration)
        print(f"camera-bridge {args.id}: stopping ({reason})", flush=True)
        bridge.button.close("bridge stopped")
        nursery.cancel_scope.cancel()
    return 0
