"""The command line end to end: real processes, real sockets on 127.0.0.1, real H.264/Opus.

``pinkrelay serve`` runs as a subprocess; ``simulate`` streams three buttons
and presses one; ``console`` watches one of them, records it and reports
what arrives; ``demo`` runs everything in one process; ``serve`` stops
cleanly on SIGTERM.
"""

from __future__ import annotations

import json
import os
import pty
import queue
import signal
import socket
import subprocess
import sys
import termios
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import av
import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "peshawar-buttons.csv"
COMMAND = [sys.executable, "-m", "pinkrelay"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_listening(port: int, process: subprocess.Popen[str], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"relay exited early: {process.communicate()[1]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"relay not listening on {port} after {timeout} s")


def json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


@pytest.fixture
def relay(tmp_path: Path) -> Iterator[dict]:
    buttons, consoles = free_port(), free_port()
    data_dir = tmp_path / "var"
    process = subprocess.Popen(
        [
            *COMMAND,
            "serve",
            "--registry",
            str(EXAMPLE),
            "--data-dir",
            str(data_dir),
            "--buttons-listen",
            f"127.0.0.1:{buttons}",
            "--consoles-listen",
            f"127.0.0.1:{consoles}",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PINKRELAY_WEB_LISTEN": f"127.0.0.1:{free_port()}"},
    )
    try:
        wait_listening(consoles, process)
        yield {
            "process": process,
            "buttons": f"127.0.0.1:{buttons}",
            "consoles": f"127.0.0.1:{consoles}",
            "token_file": data_dir / "console-token",
        }
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.communicate(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.communicate()


@pytest.mark.slow
def test_simulate_and_console_see_the_alert_the_stream_and_record_it(
    relay: dict, tmp_path: Path
) -> None:
    watched = "kp-pesh-001"
    recordings = tmp_path / "recordings"
    console = subprocess.Popen(
        [
            *COMMAND,
            "console",
            "--relay",
            relay["consoles"],
            "--token-file",
            str(relay["token_file"]),
            "--watch",
            watched,
            "--record",
            str(recordings),
            "--json",
            "--duration",
            "6",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(0.7)
    simulate = subprocess.run(
        [
            *COMMAND,
            "simulate",
            "--relay",
            relay["buttons"],
            "--registry",
            str(EXAMPLE),
            "--buttons",
            "3",
            "--json",
            "--first-press-after",
            "1",
            "--duration",
            "5",
        ],
        check=False,
        capture_output=True,
        text=True,
        timeout=30,
    )
    console_out, console_err = console.communicate(timeout=30)
    assert simulate.returncode == 0, simulate.stderr
    assert console.returncode == 0, console_err

    sim_events = json_lines(simulate.stdout)
    presses = [e for e in sim_events if e["event"] == "press"]
    acks = [e for e in sim_events if e["event"] == "acked"]
    assert len(presses) == 1 and len(acks) == 1
    assert acks[0]["alert_id"] == presses[0]["alert_id"]
    assert presses[0]["button"] in ("kp-pesh-001", "kp-pesh-002", "kp-pesh-003")
    assert 0 <= acks[0]["latency_ms"] < 1000
    summary = next(e for e in sim_events if e["event"] == "summary")
    assert summary["buttons_connected"] == 3 and summary["media_sent"] > 500

    events = json_lines(console_out)
    alerts = [e for e in events if e["event"] == "alert"]
    assert len(alerts) == 1, alerts
    alert = alerts[0]
    assert alert["alert_id"] == presses[0]["alert_id"]
    assert alert["button"] == presses[0]["button"]
    assert alert["site"] and alert["state"] == "raised"
    assert 0 <= alert["latency_ms"] < 1000
    assert set(alert) == {"event", "alert_id", "button", "site", "state", "latency_ms"}

    assert {"event": "button_state", "button": watched, "state": "online"} in events

    stats = [e for e in events if e["event"] == "stream_stats" and e["button"] == watched]
    assert set(stats[0]) == {"event", "button", "fps", "kbps", "latency_ms", "dropped"}
    steady = [s for s in stats if 13.0 <= s["fps"] <= 17.0]
    assert len(steady) >= 2, stats
    assert all(s["kbps"] > 20 for s in steady)
    assert all(s["latency_ms"] is not None and 0 <= s["latency_ms"] < 500 for s in steady)
    assert sum(s["dropped"] for s in stats) == 0

    files = sorted(recordings.glob(f"{watched}-*.mkv"))
    assert len(files) == 1
    with av.open(str(files[0])) as container:
        assert container.streams.video[0].codec_context.name == "h264"
        assert container.streams.audio[0].codec_context.name == "opus"
        frames = sum(1 for _ in container.decode(video=0))
    assert frames > 30


@pytest.mark.slow
def test_demo_runs_everything_and_prints_the_alert(tmp_path: Path) -> None:
    started = time.monotonic()
    result = subprocess.run(
        [*COMMAND, "demo", "--duration", "8"],
        check=False,
        capture_output=True,
        text=True,
        timeout=40,
        cwd=tmp_path,
    )
    elapsed = time.monotonic() - started
    assert result.returncode == 0, result.stderr
    output = result.stdout
    assert "ALERT  PANIC at kp-pesh-001" in output
    assert "Qissa Khwani Bazaar" in output
    assert "STREAM kp-pesh-001:" in output
    assert "video frames decoded" in output
    assert elapsed < 16


def test_serve_stops_cleanly_on_sigterm(relay: dict) -> None:
    process = relay["process"]
    started = time.monotonic()
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=10)
    assert process.returncode == 0, stderr
    assert time.monotonic() - started < 5
    assert "SIGTERM" in stderr


def test_button_streams_and_presses_after_a_delay(relay: dict, tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    registry_secret = next(
        line.split(",")[1]
        for line in EXAMPLE.read_text().splitlines()
        if line.startswith("kp-pesh-002,")
    )
    secret.write_text(registry_secret + "\n")
    result = subprocess.run(
        [
            *COMMAND,
            "button",
            "--relay",
            relay["buttons"],
            "--id",
            "kp-pesh-002",
            "--secret-file",
            str(secret),
            "--video",
            "320x240@15",
            "--press-after",
            "0.5",
            "--duration",
            "2",
            "--json",
        ],
        check=False,
        capture_output=True,
        text=True,
        timeout=30,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, result.stderr
    events = json_lines(result.stdout)
    kinds = [e["event"] for e in events]
    assert kinds[0] == "connected" and "press" in kinds and "acked" in kinds
    summary = events[-1]
    assert summary["event"] == "summary"
    assert summary["video_frames"] >= 25 and summary["audio_packets"] >= 80
    assert summary["acks"] == 1


def test_button_presses_on_space_in_a_terminal_and_on_sigusr1(relay: dict, tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    registry_secret = next(
        line.split(",")[1]
        for line in EXAMPLE.read_text().splitlines()
        if line.startswith("kp-pesh-003,")
    )
    secret.write_text(registry_secret + "\n")
    controller, terminal = pty.openpty()
    process = subprocess.Popen(
        [
            *COMMAND,
            "button",
            "--relay",
            relay["buttons"],
            "--id",
            "kp-pesh-003",
            "--secret-file",
            str(secret),
            "--video",
            "160x120@10",
            "--json",
            "--duration",
            "20",
        ],
        stdin=terminal,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    os.close(terminal)
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(
        target=lambda: [lines.put(line) for line in process.stdout], daemon=True
    ).start()

    def next_event(name: str) -> dict:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                event = json.loads(lines.get(timeout=deadline - time.monotonic()))
            except queue.Empty:
                break
            if event["event"] == name:
                return event
        process.kill()
        raise AssertionError(f"no {name!r} event; stderr: {process.communicate()[1]}")

    try:
        next_event("connected")
        os.write(controller, b" ")
        first = next_event("press")
        assert next_event("acked")["alert_id"] == first["alert_id"]
        process.send_signal(signal.SIGUSR1)
        second = next_event("press")
        assert second["alert_id"] != first["alert_id"]
        assert next_event("acked")["alert_id"] == second["alert_id"]
        os.write(controller, b"q")
        summary = next_event("summary")
        assert summary["presses"] == 2 and summary["acks"] == 2
        assert process.wait(timeout=10) == 0
        assert termios.tcgetattr(controller)[3] & termios.ECHO
    finally:
        if process.poll() is None:
            process.kill()
        process.communicate()
        os.close(controller)
