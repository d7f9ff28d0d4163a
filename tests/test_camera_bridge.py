"""pinkrelay camera-bridge against a real RTSP server (gst-rtsp-server) and the real relay."""

from __future__ import annotations

import logging
from functools import partial
import subprocess
import sys

import httpx
import pytest
import trio
from trio.testing import trio_test

import pinkrelay
from pinkrelay.cli.camera_bridge import CameraBridge, parse_press_inputs
from pinkrelay.cli.common import CommandError
from pinkrelay.media import Decoder, h264
from pinkrelay.protocol import Alert, ButtonState, Media, Site, StreamDescription, Subscribed

from relay_helpers import OPERATOR, TOKEN, relay_config, secret_for, wait_until
from rtsp_helpers import RtspServer, free_port, write_camera_file

CAMERA = "kp-cam-007"
SITE = Site(name="Board Bazaar camera 7", kind="market", latitude=33.99, longitude=71.47)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def h264_file(tmp_path_factory):
    return write_camera_file(tmp_path_factory.mktemp("camera") / "camera.mp4", seconds=30)


@pytest.fixture(scope="module")
def hevc_file(tmp_path_factory):
    return write_camera_file(tmp_path_factory.mktemp("camera") / "camera-hevc.mp4", seconds=10, codec="libx265")


def registry() -> pinkrelay.Registry:
    return pinkrelay.Registry([pinkrelay.Button(button_id=CAMERA, secret=secret_for(CAMERA), site=SITE)])


def bridge_for(relay, url: str, **changes) -> CameraBridge:
    settings = {"retry_min": 0.2, "retry_max": 0.5, "keyframe_timeout": 5.0, **changes}
    return CameraBridge(relay.buttons_address, CAMERA, secret_for(CAMERA), url,
                        press_inputs=parse_press_inputs(["http:127.0.0.1:0"]), **settings)


@trio_test
async def test_the_bridge_relays_the_camera_raises_presses_and_goes_offline_with_it(tmp_path, h264_file):
    camera = RtspServer(h264_file).start()
    try:
        config = relay_config(tmp_path, heartbeat_interval=0.5, supervision_window=1.5)
        async with pinkrelay.open_relay(config, registry=registry()) as relay, trio.open_nursery() as nursery:
            console = pinkrelay.ConsoleClient(relay.consoles_address, OPERATOR, TOKEN.encode())
            await nursery.start(console.run)
            bridge = await nursery.start(bridge_for(relay, camera.url).run)
            await wait_until(lambda: bridge.camera_up and bridge.button.connected.is_set(), timeout=10,
                             what="the bridge streaming")
            console.subscribe(CAMERA)
            subscribed, described, video, audio, alerts, states = None, (), [], [], [], []
            pressed = None

            async def press_over_http():
                nonlocal pressed
                host, port = bridge.http_addresses[0]
                async with httpx.AsyncClient(timeout=10) as http:
                    pressed = await http.post(f"http://{host}:{port}/press")

            with trio.move_on_after(10):
                async for event in console.events():
                    if isinstance(event, Subscribed):
                        subscribed = event
                        described = described or event.tracks
                    elif isinstance(event, StreamDescription) and event.button == CAMERA:
                        described = event.tracks  # the bridge described its tracks after the console joined
                    elif isinstance(event, Media) and event.button == CAMERA:
                        if event.lane != pinkrelay._core.Lane.VIDEO:
                            audio.append(event)
                            continue
                        video.append(event)
                        if len(video) == 30:  # the stream is live: press
                            nursery.start_soon(press_over_http)
                    elif isinstance(event, Alert):
                        alerts.append(event)
                        if event.kind == "panic":
                            break
            camera.kill()
            with trio.move_on_after(10):
                async for event in console.events():
                    if isinstance(event, ButtonState) and event.button == CAMERA and event.state == "offline":
                        states.append(event)
                        break
            await wait_until(lambda: pressed is not None, timeout=5)
            counters = dict(bridge.counters)
            last_error = bridge.last_error
            nursery.cancel_scope.cancel()
    finally:
        camera.kill()
    assert subscribed is not None
    tracks = {track.kind: track for track in described}
    assert tracks["video"].codec == "h264" and tracks["audio"].codec == "aac", described
    assert len(video) >= 30 and audio, "the console sees the camera's video and audio"
    assert video[0].keyframe and h264.is_keyframe(video[0].data)
    decoder = Decoder(pinkrelay.media.TrackInfo.from_dict({"kind": "video", "codec": "h264",
                                                           "extradata": tracks["video"].extradata}))
    pictures = [frame for media in video[:10] for frame in decoder.decode(media.data)]
    assert pictures and pictures[0].width == 320  # the camera's own H.264, passed through
    assert pressed.status_code == 200
    assert len(alerts) == 1, [(a.kind, a.state, a.alert_id, a.duplicate_of) for a in alerts]
    (alert,) = alerts
    assert alert.button == CAMERA and alert.site.name == SITE.name
    assert pressed.json()["alert_id"] == alert.alert_id
    assert states, "the relay marks the camera offline once its stream is gone"
    assert counters["camera_failures"] >= 1 and counters["presses"] == 1, (counters, last_error)


@trio_test
async def test_a_camera_that_switches_to_hevc_is_refused_clearly_and_nothing_else_is_affected(
        tmp_path, h264_file, hevc_file, caplog):
    caplog.set_level(logging.WARNING, logger="pinkrelay.camera_bridge")
    camera = RtspServer(h264_file).start()
    try:
        config = relay_config(tmp_path)
        registry_with_other = pinkrelay.Registry([*registry().values(), pinkrelay.Button(
            button_id="kp-other-001", secret=secret_for("kp-other-001"), site=SITE)])
        async with pinkrelay.open_relay(config, registry=registry_with_other) as relay, \
                trio.open_nursery() as nursery:
            bridge = await nursery.start(bridge_for(relay, camera.url).run)
            await wait_until(lambda: bridge.camera_up and bridge.counters["packets"] > 50, timeout=10)
            camera.kill()  # the camera is reconfigured: same address, now HEVC
            camera = RtspServer(hevc_file, camera.port, hevc=True).start()
            await wait_until(lambda: bridge.counters["unsupported_stream"] >= 2, timeout=15)
            await wait_until(lambda: not bridge.button.connected.is_set(), timeout=5)
            other = pinkrelay.ButtonClient(relay.buttons_address, "kp-other-001", secret_for("kp-other-001"))
            await nursery.start(other.run)
            receipt = await other.press(timeout=5)  # another button is unaffected
            host, port = bridge.http_addresses[0]
            async with httpx.AsyncClient(timeout=10) as http:  # and the camera's press still gets through
                pressed = await http.post(f"http://{host}:{port}/press")
                status = (await http.get(f"http://{host}:{port}/status")).json()
            stored = await relay.journal.get(pressed.json()["alert_id"])
            nursery.cancel_scope.cancel()
    finally:
        camera.kill()
    assert status["counters"]["unsupported_stream"] >= 2 and not status["camera_up"]
    assert "sends HEVC video" in status["last_error"]
    assert "sends HEVC video; pinkrelay relays H.264 only" in bridge.last_error
    assert "set the camera's video encoding to H.264" in bridge.last_error
    assert any("sends HEVC video" in record.getMessage() for record in caplog.records)
    assert receipt.alert_id and pressed.status_code == 200 and stored is not None and stored.button == CAMERA


@trio_test
async def test_the_command_runs_the_bridge_and_takes_a_press(tmp_path, h264_file):
    camera = RtspServer(h264_file).start()
    secret = tmp_path / "camera.secret"
    secret.write_bytes(secret_for(CAMERA) + b"\n")
    port = free_port()
    try:
        async with pinkrelay.open_relay(relay_config(tmp_path), registry=registry()) as relay:
            command = [sys.executable, "-m", "pinkrelay", "camera-bridge", "--relay", str(relay.buttons_address),
                       "--rtsp", camera.url, "--id", CAMERA, "--secret-file", str(secret),
                       "--press-on", f"http:127.0.0.1:{port}", "--duration", "5"]
            log = tmp_path / "bridge.out"
            with log.open("w") as out:
                process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
            try:
                await wait_until(lambda: CAMERA in relay.sessions_by_button, timeout=10, what="the bridge online")
                async with httpx.AsyncClient(timeout=10) as http:
                    pressed = await http.post(f"http://127.0.0.1:{port}/press")
                stored = await relay.journal.get(pressed.json()["alert_id"])
                await trio.to_thread.run_sync(partial(process.wait, timeout=15))
            finally:
                process.kill()
            output = log.read_text()
    finally:
        camera.kill()
    assert process.returncode == 0
    assert f"presses on http://127.0.0.1:{port}/press" in output and "stopping" in output
    assert stored is not None and stored.button == CAMERA and stored.site.name == SITE.name


def test_a_bad_press_input_stops_the_command_with_one_line(tmp_path):
    secret = tmp_path / "camera.secret"
    secret.write_bytes(secret_for(CAMERA))
    done = subprocess.run([sys.executable, "-m", "pinkrelay", "camera-bridge", "--rtsp", "rtsp://127.0.0.1:1/x",
                           "--id", CAMERA, "--secret-file", str(secret), "--press-on", "gpio:17"],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 2
    assert "--press-on 'gpio:17': use http:HOST:PORT" in done.stderr


def test_press_inputs_are_checked():
    assert parse_press_inputs(["http:127.0.0.1:8081", "file:/dev/ttyUSB0"])[1][0] == "file"
    with pytest.raises(CommandError, match="use http:HOST:PORT"):
        parse_press_inputs(["gpio:17"])


@pytest.fixture(scope="module")
def one_keyframe_file(tmp_path_factory):
    return write_camera_file(tmp_path_factory.mktemp("camera") / "one-keyframe.mp4", seconds=12, gop=10_000)


@trio_test
async def test_a_camera_that_stops_sending_keyframes_is_reported_and_a_serial_line_press_still_works(
        tmp_path, one_keyframe_file):
    camera = RtspServer(one_keyframe_file).start()
    serial = tmp_path / "serial-line"
    serial.write_bytes(b"")
    try:
        config = relay_config(tmp_path)
        async with pinkrelay.open_relay(config, registry=registry()) as relay, trio.open_nursery() as nursery:
            bridge = CameraBridge(relay.buttons_address, CAMERA, secret_for(CAMERA), camera.url,
                                  press_inputs=parse_press_inputs([f"file:{serial}"]), retry_min=0.2,
                                  retry_max=0.5, keyframe_timeout=1.0)
            await nursery.start(bridge.run)
            await wait_until(lambda: bridge.counters["keyframe_timeouts"] >= 1, timeout=10)
            with serial.open("ab") as line:
                line.write(b"PRESS\n")
            await wait_until(lambda: bridge.counters["presses"] == 1 and bridge.button.pending_presses == 0,
                             timeout=10, what="the press from the serial line stored")
            stored = await relay.journal.open_alerts()
            nursery.cancel_scope.cancel()
    finally:
        camera.kill()
    assert "sent no keyframe for 1 s" in bridge.last_error and "I-frame interval" in bridge.last_error
    assert [alert.button for alert in stored] == [CAMERA]
