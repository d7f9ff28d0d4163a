"""A flood never floods the log: a full 2 MB data disk under an alert flood, plus a fuzz of garbage connections.

A real ``pinkrelay serve`` process logs to stderr as in production; its data
directory is a 2 MB tmpfs that the test fills up once the journal is open,
so every press fails to be stored and is retried by its button; meanwhile
garbage connections arrive from one address. The log must stay a few lines
a second, say what it held back, and every press must still reach the consoles.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import trio

import pinkrelay
from pinkrelay.protocol import Alert
from relay_helpers import small_tmpfs

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "peshawar-buttons.csv"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def small_disk(tmp_path):
    with small_tmpfs(tmp_path, "disk", "2m") as mount:
        yield mount


@pytest.mark.slow
def test_full_disk_alert_flood_and_fuzz_keep_the_log_bounded(tmp_path, small_disk):
    buttons, consoles = free_port(), free_port()
    data = small_disk / "var"
    relay = subprocess.Popen(
        [sys.executable, "-m", "pinkrelay", "serve", "--no-web", "--no-metrics", "--log-format", "json",
         "--registry", str(EXAMPLE), "--data-dir", str(data), "--buttons-listen", f"127.0.0.1:{buttons}",
         "--consoles-listen", f"127.0.0.1:{consoles}"],
        # 300 presses per button would mostly be refused by the press rate (relay/flood.py, tested on its
        # own); this test is about the log while nothing can be stored, so every press must get through.
        env={**os.environ, "PINKRELAY_PRESS_RATE_PER_BUTTON": "0"},
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    registry = pinkrelay.load_registry(EXAMPLE)
    button_ids = list(registry)[:3]
    started = time.monotonic()
    try:
        deadline = time.monotonic() + 20
        while not (data / "journal.sqlite3").exists() or not _listening(consoles):
            assert relay.poll() is None and time.monotonic() < deadline, "the relay did not start"
            time.sleep(0.05)
        # Fill the disk: from now on nothing can be stored.
        with open(small_disk / "filler", "wb") as filler:
            try:
                while True:
                    filler.write(b"\0" * 65536)
                    filler.flush()
            except OSError:
                pass
        seen = trio.run(_flood, buttons, consoles, registry, button_ids, data)
        flood_seconds = time.monotonic() - started
    except BaseException:
        relay.send_signal(signal.SIGTERM)
        _, stderr = relay.communicate(timeout=20)
        # The relay's own last words say why the clients lost it.
        print(f"relay exit code {relay.returncode}; its stderr ends:\n" + "\n".join(stderr.splitlines()[-40:]))
        raise
    relay.send_signal(signal.SIGTERM)
    _, stderr = relay.communicate(timeout=20)
    lines = [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]
    # 900 presses retried by their buttons for 12 s, 400 garbage connections: thousands of lines unbounded.
    assert len(lines) / flood_seconds < 30, f"{len(lines)} log lines in {flood_seconds:.0f} s"
    print(f"{len(lines)} log lines in {flood_seconds:.1f} s")
    summaries = [line for line in lines if line.get("decision") == "suppress"]
    assert summaries and sum(line["suppressed"] for line in summaries) > 500, summaries[:3]
    assert any("NOT stored" in line["message"] for line in lines)
    waiting = [line for line in lines if "alerts waiting to be stored" in line["message"]]
    assert any(line.get("waiting") == 900 for line in waiting), waiting[-3:]
    assert any("protocol error" in line["message"] for line in lines)
    assert seen == 900, f"consoles saw {seen} of 900 presses"  # shown, although none could be stored


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


async def _flood(buttons: int, consoles: int, registry, button_ids, data: Path) -> int:
    secret = (data / "duty-officer.secret").read_text().strip().encode()
    seen: set[str] = set()
    # Bounded: a relay that died would leave the clients' start waiting for ever.
    with trio.fail_after(60):
        await _flood_bounded(buttons, consoles, registry, button_ids, secret, seen)
    return len(seen)


async def _flood_bounded(buttons: int, consoles: int, registry, button_ids, secret: bytes, seen: set[str]) -> None:
    async with trio.open_nursery() as nursery:
        console = pinkrelay.ConsoleClient(pinkrelay.Address("127.0.0.1", consoles), "duty-officer", secret)
        await nursery.start(console.run)

        async def collect() -> None:
            async for event in console.events():
                if isinstance(event, Alert):
                    seen.add(event.alert_id)

        nursery.start_soon(collect)
        clients = []
        for button_id in button_ids:
            client = pinkrelay.ButtonClient(pinkrelay.Address("127.0.0.1", buttons), button_id,
                                            registry.secret(button_id), retry_interval=1.0)
            await nursery.start(client.run)
            clients.append(client)
        for client in clients:
            for _ in range(300):
                client.start_press()

        async def fuzz() -> None:
            for index in range(400):
                sock = trio.socket.socket()
                await sock.bind(("127.0.0.9", 0))
                await sock.connect(("127.0.0.1", buttons))
                await sock.send(b"\xff" * 32 + index.to_bytes(4, "big"))
                sock.close()
                await trio.sleep(0.02)

        nursery.start_soon(fuzz)
        await trio.sleep(12)
        nursery.cancel_scope.cancel()
