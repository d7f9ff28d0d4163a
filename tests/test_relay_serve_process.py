"""``pinkrelay serve`` as operators run it: a real process, its log, its shutdown.

The relay runs as a subprocess on free ports with the example registry;
real ButtonClient, ConsoleClient and sans-IO sessions connect over real
sockets from this process. ``--log-format json`` must give a machine one
JSON object per stderr line with the ids it needs to follow a connection,
an authentication failure and an alert; SIGINT and SIGTERM must say
goodbye to every connected peer and exit 0 within a few seconds.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio

import pinkrelay
from pinkrelay.protocol import Alert, Goodbye, Welcome

from relay_helpers import handshake, raw_button

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "peshawar-buttons.csv"
REGISTRY = pinkrelay.load_registry(EXAMPLE)
OPERATOR = "duty-officer"  # the account a first start creates, secret in DATA_DIR/duty-officer.secret
PEER = re.compile(r"^127\.0\.0\.1:\d+$")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Serve:
    """A ``pinkrelay serve`` subprocess and where to reach it."""

    def __init__(self, tmp_path: Path, *flags: str) -> None:
        self.buttons = pinkrelay.Address("127.0.0.1", free_port())
        self.consoles = pinkrelay.Address("127.0.0.1", free_port())
        self.data_dir = tmp_path / "var"
        self.process = subprocess.Popen(
            [
                sys.executable, "-m", "pinkrelay", "serve",
                "--registry", str(EXAMPLE),
                "--data-dir", str(self.data_dir),
                "--buttons-listen", str(self.buttons),
                "--consoles-listen", str(self.consoles),
                *flags,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "PINKRELAY_WEB_LISTEN": f"127.0.0.1:{free_port()}"},
        )
        self._wait_listening()

    def _wait_listening(self, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"pinkrelay serve exited early: {self.process.communicate()[1]}")
            try:
                with socket.create_connection((self.buttons.host, self.buttons.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.05)
        raise AssertionError(f"pinkrelay serve not listening on {self.buttons} after {timeout} s")

    @property
    def console_token(self) -> bytes:
        return (self.data_dir / "duty-officer.secret").read_text().strip().encode()

    def stop(self, signum: int | None = signal.SIGTERM, timeout: float = 10.0) -> tuple[int, str, float]:
        """Signal the relay (``None``: it was signalled already); (exit code, stderr, seconds to exit)."""
        started = time.monotonic()
        if signum is not None and self.process.poll() is None:
            self.process.send_signal(signum)
        _, stderr = self.process.communicate(timeout=timeout)
        return self.process.returncode, stderr, time.monotonic() - started

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.communicate()


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Any]:
    started: list[Serve] = []

    def start(*flags: str) -> Serve:
        started.append(Serve(tmp_path, *flags))
        return started[-1]

    yield start
    for relay in started:
        relay.kill()


def test_json_log_has_one_object_per_line_with_the_ids_of_each_decision(serve):
    relay = serve("--log-format", "json")
    good, impostor = "kp-pesh-001", "kp-pesh-003"

    async def scenario() -> tuple[pinkrelay.PressReceipt, str]:
        async with trio.open_nursery() as nursery:
            console = pinkrelay.ConsoleClient(relay.consoles, OPERATOR, relay.console_token)
            await nursery.start(console.run)
            wrong = pinkrelay.ButtonClient(
                relay.buttons, impostor, b"not-the-secret-of-kp-pesh-003", reconnect=False
            )
            with pytest.raises(pinkrelay.ConnectionRefused):
                await wrong.run()
            button = pinkrelay.ButtonClient(relay.buttons, good, REGISTRY.secret(good))
            await nursery.start(button.run)
            assert button.link is not None
            host, port = button.link.stream.socket.getsockname()[:2]
            receipt = await button.press(timeout=10)
            with trio.fail_after(10):
                async for event in console.events():
                    if isinstance(event, Alert) and event.alert_id == receipt.alert_id:
                        break
            nursery.cancel_scope.cancel()
        return receipt, f"{host}:{port}"

    receipt, button_peer = trio.run(scenario)
    code, stderr, _ = relay.stop()
    assert code == 0, stderr

    lines = stderr.splitlines()
    assert lines, "the relay logged nothing"
    entries = []
    for number, line in enumerate(lines, start=1):
        try:
            entries.append(json.loads(line))
        except json.JSONDecodeError:
            pytest.fail(f"stderr line {number} is not JSON: {line!r}")
    assert all(isinstance(e, dict) and {"t", "level", "logger", "message"} <= set(e) for e in entries)

    def having(**fields) -> list[dict]:
        return [e for e in entries if all(e.get(k) == v for k, v in fields.items())]

    # The connection: accepted from its peer, then authenticated as the button.
    assert having(role="button", peer=button_peer), f"no connection line for {button_peer}"
    assert any(
        "authenticated" in e["message"] for e in having(role="button", identity=good, peer=button_peer)
    ), f"no line says {good} authenticated from {button_peer}"
    # The failed authentication: who claimed to be whom, from where, and what the relay decided.
    [refused] = having(decision="refuse", role="button", identity=impostor)
    assert refused["level"] == "warning" and PEER.match(refused["peer"]) and refused["reason"]
    # The alert, by id and button.
    [alert] = having(alert_id=receipt.alert_id, button=good, kind="panic")
    assert alert["level"] == "warning" and alert["cursor"] >= 1
    # The console, by operator and peer.
    assert having(role="console", identity=OPERATOR, level="info")
    assert any(PEER.match(e.get("peer", "")) for e in having(role="console", identity=OPERATOR))


async def read_until_goodbye(stream: trio.SocketStream, conn) -> Goodbye:
    while True:
        data = await stream.receive_some(65536)
        conn.receive_data(data, trio.current_time())
        for event in conn.events():
            if isinstance(event, Goodbye):
                return event
        if not data:
            raise AssertionError("the relay closed the connection without a goodbye")


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_says_goodbye_to_every_peer_and_exits_0_quickly(serve, signum):
    relay = serve("--log-format", "json")
    name = signal.Signals(signum).name
    button_id = "kp-pesh-002"

    signalled_at = 0.0

    async def scenario() -> tuple[Goodbye, Goodbye, float]:
        nonlocal signalled_at
        button = raw_button(button_id, REGISTRY.secret(button_id))
        button_stream = await trio.open_tcp_stream(relay.buttons.host, relay.buttons.port)
        await handshake(button_stream, button)
        console = pinkrelay.protocol.ConsoleConnection(OPERATOR, relay.console_token)
        console_stream = await trio.open_tcp_stream(relay.consoles.host, relay.consoles.port)
        await handshake(console_stream, console)
        assert isinstance(button.welcome, Welcome) and isinstance(console.welcome, Welcome)
        signalled, signalled_at = trio.current_time(), time.monotonic()
        relay.process.send_signal(signum)
        with trio.fail_after(5):
            async with trio.open_nursery() as nursery:
                results: dict[str, Goodbye] = {}

                async def wait(role, stream, conn):
                    results[role] = await read_until_goodbye(stream, conn)

                nursery.start_soon(wait, "button", button_stream, button)
                nursery.start_soon(wait, "console", console_stream, console)
        return results["button"], results["console"], trio.current_time() - signalled

    button_bye, console_bye, goodbye_after = trio.run(scenario)
    code, stderr, _ = relay.stop(None)
    exit_after = time.monotonic() - signalled_at
    assert code == 0, stderr
    assert exit_after < 5, f"exited {exit_after:.1f} s after {name}"
    for goodbye in (button_bye, console_bye):
        assert "shutting down" in goodbye.reason and name in goodbye.reason, goodbye
    assert goodbye_after < 3, f"goodbye came {goodbye_after:.1f} s after {name}"
    messages = [json.loads(line)["message"] for line in stderr.splitlines()]
    assert f"received {name}" in messages


def test_signals_repeated_during_shutdown_still_exit_0(serve):
    """An impatient operator presses Ctrl-C several times: the relay still shuts down cleanly."""
    relay = serve()
    for _ in range(4):
        relay.process.send_signal(signal.SIGTERM)
        time.sleep(0.05)
    deadline = time.monotonic() + 5
    while relay.process.poll() is None and time.monotonic() < deadline:
        relay.process.send_signal(signal.SIGINT)
        time.sleep(0.02)
    code, stderr, _ = relay.stop(None)
    assert code == 0, stderr
    assert stderr.count("shutting down: relay shutting down (SIGTERM)") == 1, stderr[-2000:]
