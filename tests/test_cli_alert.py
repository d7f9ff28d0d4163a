"""Acting on alerts from a terminal: ``pinkrelay alert ...`` one-shots and the keys of ``pinkrelay console``.

A real ``pinkrelay serve`` process with the example registry, real buttons
pressing over loopback, and the commands run as an operator would, with the
secret the relay wrote on its first start. What they did is read back from
the journal with ``pinkrelay alerts show --json``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import trio

import pinkrelay

from test_relay_serve_process import REGISTRY, serve  # noqa: F401  (the fixture)

COMMAND = [sys.executable, "-m", "pinkrelay"]


def press(relay, button_id: str) -> str:
    async def scenario() -> str:
        async with trio.open_nursery() as nursery:
            button = pinkrelay.ButtonClient(relay.buttons, button_id, REGISTRY.secret(button_id))
            await nursery.start(button.run)
            receipt = await button.press(timeout=10)
            nursery.cancel_scope.cancel()
        return receipt.alert_id

    return trio.run(scenario)


def pinkrelay_cli(*argv: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "PINKRELAY_CONSOLE_TOKEN"}
    return subprocess.run([*COMMAND, *argv], capture_output=True, text=True, timeout=60, cwd=cwd, env=env)


def history(data_dir: Path, alert_id: str) -> dict:
    shown = pinkrelay_cli("alerts", "show", alert_id, "--json", "--data-dir", str(data_dir))
    assert shown.returncode == 0, shown.stderr
    return json.loads(shown.stdout)


@pytest.mark.slow
def test_alert_one_shots_ack_dispatch_resolve_and_refusals(serve, tmp_path):
    relay = serve("--no-web", "--no-metrics")
    secret = relay.data_dir / "duty-officer.secret"
    first = press(relay, "kp-pesh-001")
    auth = ["--relay", str(relay.consoles), "--token-file", str(secret)]

    acked = pinkrelay_cli("alert", "ack", first[:13], *auth)
    assert acked.returncode == 0, acked.stdout + acked.stderr
    assert acked.stdout.strip() == f"OK: alert {first} (kp-pesh-001) is acknowledged, by duty-officer"
    # --data-dir instead of --token-file: DATA_DIR/duty-officer.secret.
    dispatched = pinkrelay_cli("alert", "dispatch", first, "--unit", "rescue-15-van-7", "--relay", str(relay.consoles),
                               "--data-dir", str(relay.data_dir))
    assert dispatched.returncode == 0 and ", unit rescue-15-van-7" in dispatched.stdout, dispatched.stdout

    # A data directory made before the file was renamed: the console still finds console-token.
    legacy = tmp_path / "old"
    (legacy / "var").mkdir(parents=True)
    (legacy / "var" / "console-token").write_text(secret.read_text())
    again = pinkrelay_cli("alert", "ack", first, "--relay", str(relay.consoles), cwd=legacy)
    assert again.returncode == 1, again.stdout + again.stderr
    assert again.stdout.startswith("REFUSED: ") and "(bad-transition)" in again.stdout

    resolved = pinkrelay_cli("alert", "resolve", first, "--outcome", "genuine:harassment", "--note", "suspects gone", *auth)
    assert resolved.returncode == 0, resolved.stdout + resolved.stderr
    bad_outcome = pinkrelay_cli("alert", "resolve", first, "--outcome", "maybe", *auth)
    assert bad_outcome.returncode == 2 and "--outcome 'maybe': use one of genuine:CATEGORY" in bad_outcome.stderr
    closed = pinkrelay_cli("alert", "ack", first, *auth)
    assert closed.returncode == 2 and f"no open alert with id {first!r}" in closed.stderr
    no_unit = subprocess.run([*COMMAND, "alert", "dispatch", first, *auth], capture_output=True, text=True)
    assert no_unit.returncode == 2 and "--unit" in no_unit.stderr

    relay.stop()
    shown = history(relay.data_dir, first)
    steps = [(e["state"], e["operator"], e["unit"], e["note"]) for e in shown["events"] if e["kind"] == "transition"]
    assert steps == [
        ("acknowledged", "duty-officer", "", ""),
        ("dispatched", "duty-officer", "rescue-15-van-7", ""),
        ("resolved", "duty-officer", "", "suspects gone"),
    ], shown["events"]


@pytest.mark.slow
def test_console_keys_act_on_the_oldest_open_alert(serve):
    relay = serve("--no-web", "--no-metrics")
    older = press(relay, "kp-pesh-002")
    newer = press(relay, "kp-pesh-003")
    console = subprocess.Popen(
        [*COMMAND, "console", "--relay", str(relay.consoles), "--token-file",
         str(relay.data_dir / "duty-officer.secret"), "--keys", "--duration", "60"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    assert console.stdin is not None and console.stdout is not None
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(console.stdout.readline, "")), daemon=True)
    reader.start()

    def wait_for(text: str, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while not any(text in line for line in lines):
            assert time.monotonic() < deadline, f"no {text!r} in {lines}"
            time.sleep(0.05)

    # Each key waits for the relay's answer to the one before: the state the next key picks from.
    wait_for("signed in")
    wait_for(newer)  # both alerts are on the console
    keys = (
        ("a", f"UPDATE alert {older}: acknowledged"),
        ("d rescue-15-van-2", f"UPDATE alert {older}: dispatched"),
        ("x", "unknown key 'x'"),
        (f"a {newer[:13]}", f"UPDATE alert {newer}: acknowledged"),
        ("r genuine:harassment all calm", f"UPDATE alert {older}: resolved"),
        ("d", "not sent: d needs"),
    )
    for line, answer in keys:
        console.stdin.write(line + "\n")
        console.stdin.flush()
        wait_for(answer)
    console.send_signal(signal.SIGTERM)
    console.wait(timeout=30)
    reader.join(timeout=10)
    out, err = "".join(lines), console.stderr.read()
    assert console.returncode == 0, err
    assert f"UPDATE alert {older}: acknowledged by duty-officer" in out
    assert f"UPDATE alert {older}: dispatched by duty-officer, unit rescue-15-van-2" in out
    assert f"UPDATE alert {newer}: acknowledged by duty-officer" in out
    # (", escalation level 1" comes before the note when the machine was slow enough for an escalation)
    resolved = [line for line in lines if line.startswith(f"UPDATE alert {older}: resolved by duty-officer")]
    assert resolved and resolved[-1].rstrip().endswith(": all calm"), out
    assert "unknown key 'x'" in out
    assert "not sent: d needs the unit sent" in out
    relay.stop()
    assert history(relay.data_dir, newer)["state"] == "acknowledged"
    assert history(relay.data_dir, older)["state"] == "resolved"
