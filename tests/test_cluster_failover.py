"""kill -9 of a relay of a cluster while buttons press: nothing acknowledged is lost, nothing is twice.

A 3-node nats-server cluster and three ``pinkrelay serve`` processes on
127.0.0.2-4. Two buttons (tests/crash_presser.py, a new alert id every
20 ms, each retried until acknowledged) know relays 1 and 2 and start on
relay 1; a third knows only relay 1. A console (tests/crash_console.py) is
on relay 3. Relay 1 is killed with SIGKILL, and the lone button with it (it
does not come back). Then:

* every acknowledged press is on the stream exactly once, and every press
  of the two buttons was stored (they failed over to relay 2);
* the console got every raise of the stream once, in stream order: no gap,
  no duplicate, although it never left relay 3;
* the lone button's offline alert is on the stream once, raised by relay 2
  or 3 after relay 1's lease lapsed.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import trio

from pinkrelay.cluster.bus import JetStreamAlertStore
from pinkrelay.protocol import Alert

from nats_helpers import fresh_namespace, free_port, nats_cluster  # noqa: F401 (the fixture)
from relay_helpers import secret_for
from test_crash_relay import Child, wait_until

pytestmark = [pytest.mark.core_independent, pytest.mark.slow]
HERE = Path(__file__).parent
OPERATOR, TOKEN = "desk-cluster", "cluster-console-token-0123456789"
BUTTONS = ["kp-fail-1", "kp-fail-2", "kp-lone-3"]
NFT = shutil.which("nft") or next((p for p in ("/usr/sbin/nft", "/sbin/nft") if os.path.exists(p)), None)


def listening_on(host: str, port: int) -> bool:
    import socket

    try:
        socket.create_connection((host, port), timeout=0.2).close()
        return True
    except OSError:
        return False


def start_relay(tmp_path: Path, index: int, urls: list[str], namespace: str, *, host: str = "",
                group: int | None = None, lease: float = 2.0) -> tuple[subprocess.Popen, str, str]:
    host = host or f"127.0.0.{index + 1}"
    buttons, consoles = free_port(host), free_port(host)
    config = tmp_path / f"relay-{index}.toml"
    nats_urls = ", ".join(f'"{url}"' for url in urls)
    config.write_text(
        f'[relay]\nrelay_name = "relay-{index}"\nheartbeat_interval = 0.5\nsupervision_window = 3.0\n'
        f'press_rate_per_button = 0\n'  # the pressers are load generators: 50 presses a second each
        f'console_tokens = {{ {OPERATOR} = "{TOKEN}" }}\n'
        f'[cluster]\nnats_urls = [{nats_urls}]\nnamespace = "{namespace}"\nlease = {lease}\n')
    log = open(tmp_path / f"relay-{index}.log", "ab")
    process = subprocess.Popen(
        [sys.executable, "-m", "pinkrelay", "serve", "--config", str(config), "--registry",
         str(tmp_path / "buttons.csv"), "--data-dir", str(tmp_path / f"var-{index}"), "--buttons-listen",
         f"{host}:{buttons}", "--consoles-listen", f"{host}:{consoles}", "--no-web", "--no-metrics"],
        stdout=log, stderr=subprocess.STDOUT, **({"group": group, "extra_groups": []} if group else {}))
    log.close()
    return process, f"{host}:{buttons}", f"{host}:{consoles}"


def write_registry(tmp_path: Path) -> None:
    (tmp_path / "buttons.csv").write_text(
        "id,secret,site_name,site_kind,address,district,latitude,longitude,control_rooms\n"
        + "".join(f"{b},{secret_for(b).decode()},Site {n},market,Road {n},Saddar,34.0{n},71.5{n},main\n"
                  for n, b in enumerate(BUTTONS, start=1)))


def wait_listening(relays: list, tmp_path: Path) -> None:
    for process, _, consoles in relays:
        host, port = consoles.rsplit(":", 1)
        wait_until(lambda: listening_on(host, int(port)) or process.poll() is not None, 30, "a relay to listen")
        assert process.poll() is None, "a relay exited at start; see relay-*.log in " + str(tmp_path)


def stop_all(children: list, relays: list) -> None:
    for child in children:
        child.kill()
    for process, _, _ in relays:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    for process, _, _ in relays:
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()


def presser(children: list, button: str, prefix: str, relays_known: str) -> Child:
    child = Child(f"presser {button}", [
        str(HERE / "crash_presser.py"), "--relay", relays_known, "--button", button, "--secret",
        secret_for(button).decode(), "--prefix", prefix, "--interval", "0.02", "--retry", "0.2"])
    children.append(child)
    return child


def read_stream(urls: list[str], namespace: str) -> list:
    async def main():
        reader = JetStreamAlertStore(urls, relay="reader", namespace=namespace)
        await reader.open()
        try:
            return await reader.events_since(0, limit=1_000_000)
        finally:
            await reader.close()

    return trio.run(main)


def test_kill_9_of_a_relay_loses_no_alert_and_the_lost_button_is_reported_offline_once(nats_cluster, tmp_path):
    namespace = fresh_namespace("failover")
    write_registry(tmp_path)
    relays = [start_relay(tmp_path, index, nats_cluster.urls, namespace) for index in (1, 2, 3)]
    children: list[Child] = []
    try:
        wait_listening(relays, tmp_path)
        (relay1, buttons1, _), (_, buttons2, _), (_, _, consoles3) = relays
        console = Child("console", [str(HERE / "crash_console.py"), "--relay", consoles3, "--operator", OPERATOR,
                                    "--token", TOKEN])
        children.append(console)
        wait_until(lambda: console.values("connected"), 20, "the console to sign in")

        both = f"{buttons1},{buttons2}"
        pressers = [presser(children, BUTTONS[0], "a", both), presser(children, BUTTONS[1], "b", both)]
        lone = presser(children, BUTTONS[2], "lone", buttons1)
        wait_until(lambda: all(p.values("acked") for p in [*pressers, lone]), 20, "every presser's first ack")
        time.sleep(1.0)
        before_kill = sum(len(p.values("acked")) for p in pressers)
        relay1.send_signal(signal.SIGKILL)
        lone.kill()
        relay1.wait()
        killed_at = time.monotonic()
        wait_until(lambda: sum(len(p.values("acked")) for p in pressers) > before_kill + 100, 30,
                   "acks from relay 2 after the kill")
        failover = time.monotonic() - killed_at

        def offline_alerts(events):
            return [e for e in events if isinstance(e, Alert) and e.kind == "offline"]

        # The lone button's offline alert, while the others go on pressing through relay 2.
        wait_until(lambda: any(f"kp-lone-3 offline: silent" in line for index in (2, 3)
                               for line in (tmp_path / f"relay-{index}.log").read_text().splitlines()),
                   25, "relay 1's lease to lapse and the lone button to be reported offline")
        time.sleep(1.0)  # the other survivor's window too
        stopped_at = time.time_ns() // 1000
        for child in pressers:
            child.stop(timeout=20)
        summaries = [child.lines[-1] for child in pressers]
        acked = [alert_id for child in [*pressers, lone] for alert_id in child.values("acked")]
        stream = read_stream(nats_cluster.urls, namespace)
        raised = [e for e in stream if isinstance(e, Alert) and e.kind == "panic"]
        wait_until(lambda: len(console.values("alert")) >= len(raised) + len(offline_alerts(stream)), 20,
                   "the console to catch up")
        time.sleep(0.5)
        console.stop(timeout=10)
    except BaseException:
        for index in (1, 2, 3):
            print(f"relay {index} log (tail):\n" + (tmp_path / f"relay-{index}.log").read_text(errors="replace")[-3000:])
        for child in children:
            print(f"{child.name}: last lines {child.lines[-3:]}\nstderr:\n" + "".join(child.stderr[-20:]))
        raise
    finally:
        stop_all(children, relays)

    stored_ids = [a.alert_id for a in raised]
    created = {f"{prefix}-{i}" for prefix, summary in zip("ab", summaries) for i in range(summary["created"])}
    print(f"\n{len(created)} presses on the two failing-over buttons, {len(acked)} acks, failover to relay 2 "
          f"within {failover:.1f} s, {len(stored_ids)} stored")
    assert len(stored_ids) == len(set(stored_ids)), "a press is on the stream twice"
    assert set(acked) <= set(stored_ids), f"acknowledged, not stored: {sorted(set(acked) - set(stored_ids))[:5]}"
    assert created <= set(stored_ids), f"never stored: {sorted(created - set(stored_ids))[:5]}"
    assert all(summary["pending"] == [] for summary in summaries)
    # The console on relay 3: every raise once, at its stream sequence, in order.
    console_alerts = [(line["alert"], line["cursor"]) for line in console.lines if "alert" in line]
    assert [cursor for _, cursor in console_alerts] == sorted(cursor for _, cursor in console_alerts)
    panic_seen = [(a, c) for a, c in console_alerts if a in set(stored_ids)]
    assert panic_seen == [(a.alert_id, a.cursor) for a in raised], "the console's alerts have a gap or a duplicate"
    lost = [a for a in offline_alerts(stream) if a.received_at < stopped_at]
    assert [a.button for a in lost] == [BUTTONS[2]], lost
    assert [a for a, _ in console_alerts].count(lost[0].alert_id) == 1


#: The group the partitioned relay runs as: the nftables rule drops what its sockets send.
PARTITIONED_GROUP = 4242


class Partition:
    """An nftables rule that drops every packet a process of ``group`` sends: TCP to it and from it hangs.

    Loopback only: the rule matches sockets by owner group, so it cuts one
    relay off from the NATS cluster and from its buttons, and nothing else.
    """

    def __init__(self, group: int) -> None:
        self.table = f"pinkrelay_partition_{os.getpid()}"
        self.group = group

    def _nft(self, *commands: str) -> None:
        subprocess.run([NFT, "-f", "-"], input="\n".join(commands) + "\n", text=True, check=True,
                       capture_output=True)

    def cut(self) -> None:
        self._nft(f"add table inet {self.table}",
                  f"add chain inet {self.table} out {{ type filter hook output priority 0; }}",
                  f"add rule inet {self.table} out meta skgid {self.group} drop")

    def heal(self) -> None:
        subprocess.run([NFT, "delete", "table", "inet", self.table], capture_output=True)


def nft_usable() -> str:
    """Why the partition test cannot run here, or '' if it can."""
    if NFT is None:
        return "no nft (Debian's nftables; scripts/install-system-deps.sh installs it)"
    probe = Partition(PARTITIONED_GROUP)
    try:
        probe.cut()
    except subprocess.CalledProcessError as error:
        return f"nft cannot add a rule here ({error.stderr.strip()}); it needs root"
    finally:
        probe.heal()
    return ""


def test_a_partitioned_relay_acknowledges_nothing_unstored_and_its_buttons_fail_over(nats_cluster, tmp_path):
    """Relay 1's sockets go silent (nftables); its button moves to relay 2; every ack is on the stream."""
    reason = nft_usable()
    if reason:
        pytest.skip(reason)
    namespace = fresh_namespace("partition")
    write_registry(tmp_path)
    # The lease outlasts the button's way to relay 2 (its supervision window, then a handshake that
    # times out on relay 1): its offline alert would be right, but it never leaves for that long.
    relays = [start_relay(tmp_path, 1, nats_cluster.urls, namespace, host="127.0.0.5", group=PARTITIONED_GROUP,
                          lease=5.0),
              start_relay(tmp_path, 2, nats_cluster.urls, namespace, host="127.0.0.6", lease=5.0)]
    children: list[Child] = []
    partition = Partition(PARTITIONED_GROUP)
    try:
        wait_listening(relays, tmp_path)
        (_, buttons1, _), (_, buttons2, _) = relays
        button = presser(children, BUTTONS[0], "p", f"{buttons1},{buttons2}")
        wait_until(lambda: len(button.values("acked")) > 20, 20, "acks through relay 1")
        partition.cut()
        cut_at = len(button.values("acked"))
        wait_until(lambda: len(button.values("acked")) > cut_at + 50, 25, "acks through relay 2 after the cut")
        button.stop(timeout=20)
        summary = button.lines[-1]
        acked = button.values("acked")
    except BaseException:
        for index in (1, 2):
            print(f"relay {index} log (tail):\n" + (tmp_path / f"relay-{index}.log").read_text(errors="replace")[-3000:])
        for child in children:
            print(f"{child.name}: last lines {child.lines[-3:]}\nstderr:\n" + "".join(child.stderr[-20:]))
        raise
    finally:
        partition.heal()
        stop_all(children, relays)
    stream = read_stream(nats_cluster.urls, namespace)
    stored = [e.alert_id for e in stream if isinstance(e, Alert) and e.kind == "panic"]
    created = {f"p-{i}" for i in range(summary["created"])}
    print(f"\n{len(created)} presses, {len(acked)} acks, {len(set(acked) - set(stored))} acked but not stored")
    assert len(stored) == len(set(stored))
    assert set(acked) <= set(stored), f"acknowledged, not stored: {sorted(set(acked) - set(stored))[:5]}"
    assert created == set(stored) and summary["pending"] == []
    assert not [e for e in stream if isinstance(e, Alert) and e.kind == "offline"], "the button never went away"
