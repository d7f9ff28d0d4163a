"""The relay as a service: the systemd unit, the notify protocol, Prometheus scraping it, the rules file.

Real tools only: systemd-analyze checks the shipped unit, a real
``pinkrelay serve`` process talks to a notify socket made here, Debian's
prometheus scrapes a real relay and is asked over its HTTP API, and promtool
checks the shipped rules. A missing tool fails the test (make test installs them).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from pinkrelay import load_registry

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "peshawar-buttons.csv"
UNIT = ROOT / "examples" / "systemd" / "pinkrelay.service"
RULES = ROOT / "examples" / "prometheus" / "alerts.yml"
DASHBOARD = ROOT / "examples" / "grafana" / "pinkrelay-dashboard.json"


def tool(name: str) -> str:
    path = shutil.which(name)
    assert path, f"{name} is not installed (make test installs it: scripts/install-system-deps.sh)"
    return path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def serve(tmp_path: Path, *flags: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "pinkrelay", "serve", "--no-web", "--registry", str(EXAMPLE),
         "--data-dir", str(tmp_path / "var"), "--buttons-listen", f"127.0.0.1:{free_port()}",
         "--consoles-listen", f"127.0.0.1:{free_port()}", *flags],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, **(env or {})},
    )


def stop(process: subprocess.Popen[str]) -> str:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        _, stderr = process.communicate(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        _, stderr = process.communicate()
    return stderr


def test_the_shipped_unit_passes_systemd_analyze_verify(tmp_path):
    text = UNIT.read_text()
    for hardening in ("Type=notify", "WatchdogSec=", "NoNewPrivileges=yes", "ProtectSystem=strict",
                      "ReadWritePaths=/var/lib/pinkrelay", "User=pinkrelay"):
        assert hardening in text, f"{UNIT.name} lost {hardening}"
    assert "\nCapabilityBoundingSet=\n" in text  # empty: no capability at all
    # verify needs ExecStart to exist: point it at this checkout's pinkrelay.
    unit = tmp_path / "pinkrelay.service"
    unit.write_text(text.replace("/opt/pinkrelay/bin/pinkrelay", str(Path(sys.executable).parent / "pinkrelay")))
    result = subprocess.run([tool("systemd-analyze"), "verify", str(unit)], capture_output=True, text=True,
                            timeout=60)
    # An unknown or misspelt directive is only a warning on stderr: that fails here too.
    assert result.returncode == 0 and not result.stderr.strip(), result.stderr


def test_serve_speaks_the_notify_protocol(tmp_path):
    path = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notify:
        notify.bind(str(path))
        notify.settimeout(15)
        relay = serve(tmp_path, "--metrics-listen", f"127.0.0.1:{free_port()}",
                      env={"NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": "200000"})
        try:
            first = notify.recv(4096).decode().splitlines()
            assert first[0] == "READY=1" and first[1].startswith("STATUS=buttons on 127.0.0.1:")
            started = time.monotonic()
            beats = 0
            while beats < 5:
                message = notify.recv(4096).decode()
                assert message == "WATCHDOG=1", message
                beats += 1
            # Every half of WATCHDOG_USEC (0.1 s), give or take a busy machine.
            assert time.monotonic() - started < 3
            relay.send_signal(signal.SIGTERM)
            message = notify.recv(4096).decode()
            while message == "WATCHDOG=1":
                message = notify.recv(4096).decode()
            assert message.splitlines()[0] == "STOPPING=1"
            stop(relay)
            assert relay.returncode == 0
        finally:
            stop(relay)


def test_a_busy_metrics_port_stops_serve_with_one_clear_line(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        relay = serve(tmp_path, "--metrics-listen", f"127.0.0.1:{port}")
        try:
            _, stderr = relay.communicate(timeout=30)  # it stops by itself
        finally:
            stop(relay)
    assert relay.returncode not in (0, None)
    assert f"cannot listen for metrics on 127.0.0.1:{port}" in stderr and "--metrics-listen" in stderr
    assert "Traceback" not in stderr


def test_the_rules_file_passes_promtool():
    result = subprocess.run([tool("promtool"), "check", "rules", str(RULES)], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 7 rules found" in result.stdout


def test_the_dashboard_asks_for_series_the_relay_exports(tmp_path):
    import json
    import re

    from pinkrelay.ops.metrics import RelayMetrics  # noqa: F401  (the exporter the dashboard reads)

    dashboard = json.loads(DASHBOARD.read_text())
    queries = [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])]
    assert queries, "the dashboard has no queries"
    names = {name for query in queries for name in re.findall(r"\b(pinkrelay_[a-z_]+)", query)}
    exported = set(re.findall(r'"(pinkrelay_[a-z_]+)"',
                              (ROOT / "src" / "pinkrelay" / "ops" / "metrics.py").read_text()))
    suffixes = ("_total", "_bucket", "_count", "_sum")
    unknown = {n for n in names if n not in exported and not any(
        n.endswith(s) and n[: -len(s)] in exported for s in suffixes)}
    assert not unknown, f"the dashboard asks for series the relay does not export: {sorted(unknown)}"


def test_prometheus_scrapes_the_relay(tmp_path):
    metrics_port, prometheus_port = free_port(), free_port()
    relay = serve(tmp_path, "--metrics-listen", f"127.0.0.1:{metrics_port}")
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
        f"rule_files:\n  - {RULES}\n"
        "scrape_configs:\n  - job_name: pinkrelay\n    static_configs:\n"
        f"      - targets: ['127.0.0.1:{metrics_port}']\n"
    )
    prometheus = subprocess.Popen(
        [tool("prometheus"), f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
         f"--web.listen-address=127.0.0.1:{prometheus_port}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    api = f"http://127.0.0.1:{prometheus_port}/api/v1"
    try:
        values: dict[str, float] = {}
        deadline = time.monotonic() + 40
        wanted = ("up", "pinkrelay_buttons_registered", "pinkrelay_ready", "pinkrelay_buttons_connected")
        while time.monotonic() < deadline and len(values) < len(wanted):
            time.sleep(0.5)
            for name in wanted:
                try:
                    answer = httpx.get(f"{api}/query", params={"query": f'{name}{{job="pinkrelay"}}'}, timeout=2)
                except httpx.HTTPError:
                    break  # prometheus still starting
                result = answer.json()["data"]["result"]
                if result:
                    values[name] = float(result[0]["value"][1])
        assert values.get("up") == 1.0, f"prometheus never scraped the relay: {values}"
        assert values["pinkrelay_buttons_registered"] == len(load_registry(EXAMPLE))
        assert values["pinkrelay_ready"] == 1.0
        assert values["pinkrelay_buttons_connected"] == 0.0
        rules = httpx.get(f"{api}/rules", timeout=5).json()["data"]["groups"]
        assert {rule["name"] for group in rules for rule in group["rules"]} >= {
            "PinkrelayDown", "PinkrelayButtonOffline", "PinkrelayAlertUnacknowledged", "PinkrelayDataDiskHighWater"}
    finally:
        prometheus.terminate()
        try:
            prometheus.wait(timeout=10)
        except subprocess.TimeoutExpired:
            prometheus.kill()
        stop(relay)
    assert relay.returncode == 0


pytestmark = pytest.mark.slow
