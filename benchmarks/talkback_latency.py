"""Talk-back latency on loopback: an operator's microphone in the web room to the button's playout.

The relay and its web control room run in their own process (``python -m
pinkrelay serve``). This process runs one button (a ButtonClient whose
talk-back player decodes with PyAV and writes a WAV file) on a trio loop in
a thread, and drives a headless Chromium whose fake microphone plays a sine
tone: the operator signs in, acknowledges the button's alert and holds T
for ``--seconds``. For every Opus packet it records:

* captured: the browser's capture time of its first sample
  (``performance.timeOrigin`` + the WebCodecs ``AudioData`` timestamp);
* arrived: when the button received the ``talkback`` message from the relay;
* played: when the decoded samples were handed to the button's sink (the
  WAV file here; a sound card adds its own output buffer, tens of ms).

Mouth-to-speaker is played − captured: the browser's capture and Opus
encoding (a 20 ms frame waits to be full), the WebSocket, the relay, the
button's link, the Opus decode. It prints p50/p95/p99 of each stage and
saves JSON under benchmarks/results/. Both clocks are this machine's.

    .venv/bin/python benchmarks/talkback_latency.py --seconds 20
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import wave
from pathlib import Path
from typing import Any

import numpy as np
import trio

import pinkrelay
from pinkrelay.media.talkback import TalkBackPlayer, WavSink
from pinkrelay.operators import OperatorStore

ROOT = Path(__file__).resolve().parent.parent
BUTTON = "kp-talk-001"
SECRET = "talkback-latency-secret-0001"
OPERATOR, OPERATOR_SECRET = "bench-operator", "bench-operator-secret-0001"
CHROMIUM = os.environ.get("PINKRELAY_CHROMIUM", "/usr/bin/chromium")
TONE_HZ = 440.0
TARGET_P95_MS = 150.0


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _wait_listening(address: pinkrelay.Address, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as probe:
            if probe.connect_ex((address.host, address.port)) == 0:
                return
        time.sleep(0.05)
    raise SystemExit(f"the relay did not listen on {address} within {timeout:g} s")


def _percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    p50, p95, p99 = (round(float(v), 3) for v in np.percentile(values, [50, 95, 99], method="lower"))
    return {"n": len(values), "p50": p50, "p95": p95, "p99": p99, "max": round(max(values), 3)}


def _write_tone(path: Path, seconds: float) -> None:
    rate = 48000
    t = np.arange(int(rate * seconds)) / rate
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes((0.3 * 32767 * np.sin(2 * np.pi * TONE_HZ * t)).astype("<i2").tobytes())


class TimedPlayer(TalkBackPlayer):
    """A talk-back player that also notes when each message arrived, before decoding it."""

    def __init__(self, sinks: list[Any]) -> None:
        super().__init__(sinks)
        self.arrivals: dict[int, int] = {}

    def receive(self, message: Any) -> None:
        if message.packet and message.captured_at:
            self.arrivals[message.captured_at] = time.time_ns() // 1000
        super().receive(message)


class ButtonThread:
    """The button on its own trio loop, so the browser can be driven from the main thread."""

    def __init__(self, address: pinkrelay.Address, player: TimedPlayer) -> None:
        self.address = address
        self.player = player
        self.client: pinkrelay.ButtonClient | None = None
        self.ready = threading.Event()
        self._token: Any = None
        self._stop: trio.Event | None = None
        self._thread = threading.Thread(target=lambda: trio.run(self._main), daemon=True)

    async def _main(self) -> None:
        self._token = trio.lowlevel.current_trio_token()
        self._stop = trio.Event()
        self.client = pinkrelay.ButtonClient(self.address, BUTTON, SECRET.encode(), talkback=self.player)
        async with trio.open_nursery() as nursery:
            await nursery.start(self.client.run)
            self.ready.set()
            await self._stop.wait()
            nursery.cancel_scope.cancel()

    def start(self) -> None:
        self._thread.start()
        if not self.ready.wait(15):
            raise SystemExit("the button did not connect to the relay")

    def press(self) -> str:
        assert self.client is not None
        pending = trio.from_thread.run_sync(self.client.start_press, trio_token=self._token)
        return pending.alert.alert_id

    def stop(self) -> None:
        if self._stop is not None:
            trio.from_thread.run_sync(self._stop.set, trio_token=self._token)
        if self._thread.is_alive():
            self._thread.join(10)


def _talk(url: str, tone: Path, button: ButtonThread, seconds: float) -> dict[str, Any]:
    from playwright.sync_api import sync_playwright

    args = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
            "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
            f"--use-file-for-fake-audio-capture={tone}"]
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=args, headless=True)
        page = browser.new_page(viewport={"width": 1600, "height": 1000})
        page.set_default_timeout(15_000)
        page.goto(url + "/signin")
        page.fill("#name", OPERATOR)
        page.fill("#secret", OPERATOR_SECRET)
        page.click("button[type=submit]")
        page.wait_for_selector("#link.up")
        alert_id = button.press()
        card = page.locator(f'li.alert[data-alert-id="{alert_id}"]')
        card.locator('button[data-action="acknowledged"]').click()
        page.wait_for_selector(f'li.alert[data-alert-id="{alert_id}"][data-state="acknowledged"]')
        page.keyboard.down("t")
        started = time.monotonic()
        while page.evaluate("document.body.dataset.talk") != "open":
            if time.monotonic() - started > 10:
                raise SystemExit("the relay did not open the talk within 10 s")
            time.sleep(0.02)
        time.sleep(seconds)
        page.keyboard.up("t")
        while page.evaluate("document.body.dataset.talk") != "idle":
            time.sleep(0.02)
        sent = int(page.evaluate("document.body.dataset.talkPackets"))
        version = browser.version
        browser.close()
    return {"alert_id": alert_id, "packets_sent": sent, "browser": f"Chromium {version} headless"}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=20.0, help="how long the operator talks (default 20)")
    args = parser.parse_args()
    if not 1 <= args.seconds <= 50:
        parser.error("--seconds must be within 1..50 (the whole run stays under a minute)")

    with tempfile.TemporaryDirectory(prefix="pinkrelay-talkback-") as work:
        work_dir = Path(work)
        (work_dir / "registry.csv").write_text(
            "id,secret,site_name,site_kind,latitude,longitude\n"
            f"{BUTTON},{SECRET},Benchmark site,other,34.0,71.5\n"
        )
        data_dir = work_dir / "var"
        data_dir.mkdir()
        OperatorStore.in_data_dir(data_dir).add(OPERATOR, "operator", secret=OPERATOR_SECRET)
        tone = work_dir / "tone.wav"
        _write_tone(tone, args.seconds + 10)
        buttons = pinkrelay.Address("127.0.0.1", _free_port())
        web = pinkrelay.Address("127.0.0.1", _free_port())
        relay = subprocess.Popen(
            [sys.executable, "-m", "pinkrelay", "serve", "--registry", str(work_dir / "registry.csv"),
             "--data-dir", str(data_dir), "--buttons-listen", str(buttons),
             "--consoles-listen", f"127.0.0.1:{_free_port()}", "--web-listen", str(web), "--metrics-listen", "127.0.0.1:0", "--log-level", "error"],
            cwd=ROOT,
        )
        player = TimedPlayer([WavSink(work_dir / "heard.wav")])
        button = ButtonThread(buttons, player)
        try:
            _wait_listening(web)
            _wait_listening(buttons)
            button.start()
            run = _talk(f"http://{web}", tone, button, args.seconds)
            deadline = time.monotonic() + 5
            while player.talk_id and time.monotonic() < deadline:
                time.sleep(0.02)
        finally:
            button.stop()
            relay.send_signal(signal.SIGTERM)
            relay.wait(timeout=10)
        player.close()
    playouts = list(player.playouts)
    stages = {
        "capture_to_arrival_ms": [(player.arrivals[c] - c) / 1000 for c, _ in playouts if c in player.arrivals],
        "arrival_to_playout_ms": [(p - player.arrivals[c]) / 1000 for c, p in playouts if c in player.arrivals],
        "mouth_to_speaker_ms": [(p - c) / 1000 for c, p in playouts],
    }
    result: dict[str, Any] = {
        **run,
        "packets_played": player.packets,
        "seconds": args.seconds,
        **{name: _percentiles(values) for name, values in stages.items()},
        "target_p95_ms": TARGET_P95_MS,
        "path": "Chromium fake microphone -> WebCodecs Opus 20 ms -> WebSocket -> pinkrelay serve (web room, "
                "talk-back desk) -> loopback TCP talkback frames -> ButtonClient -> PyAV Opus decode -> WAV sink",
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "command": " ".join([os.path.basename(sys.executable), *sys.argv]),
    }
    for stage in stages:
        figures = result[stage]
        if figures:
            print(f"{stage:24} p50 {figures['p50']:7.2f}  p95 {figures['p95']:7.2f}  p99 {figures['p99']:7.2f}"
                  f"  max {figures['max']:7.2f}  (n={figures['n']})")
    print(f"packets sent by the browser {result['packets_sent']}, played by the button {result['packets_played']}")
    p95 = result["mouth_to_speaker_ms"].get("p95")
    verdict = "within" if p95 is not None and p95 <= TARGET_P95_MS else "ABOVE"
    print(f"mouth-to-speaker p95 {p95} ms: {verdict} the {TARGET_P95_MS:g} ms target")
    out = ROOT / "benchmarks" / "results" / f"talkback-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"saved {out.relative_to(ROOT)}")
    return 0 if verdict == "within" else 1


if __name__ == "__main__":
    sys.exit(main())
