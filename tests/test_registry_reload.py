"""Registry reload without a restart: ``pinkrelay registry reload`` and SIGHUP on a real ``pinkrelay serve``.

A real relay process on free loopback ports, a button streaming real H.264
and Opus to a subscribed console, and raw button sessions. A valid new
registry ends the sessions of removed and disabled buttons with a clear
``auth`` error, admits an added one, and leaves the stream and the other
sessions alone; an invalid one is refused and the old registry stays.
Both are logged and audited.
"""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import trio

import pinkrelay
from pinkrelay.media import encode_clip
from pinkrelay.protocol import ButtonState, Error, Goodbye, Media

from relay_helpers import button_ids, handshake, raw_button, read_events, secret_for, stream_honouring_keyframes
from test_relay_serve_process import OPERATOR, serve  # noqa: F401  (the fixture)

HEADER = "id,secret,site_name,site_kind,latitude,longitude,disabled\n"
STREAMING, REMOVED, DISABLED, KEPT, ADDED = button_ids(5)


def registry_csv(path: Path, rows: dict[str, bool]) -> None:
    """Write a registry of ``{button_id: disabled}``."""
    lines = [f"{b},{secret_for(b).decode()},Site of {b},market,34.0,71.5,{'true' if off else ''}\n"
             for b, off in rows.items()]
    path.write_text(HEADER + "".join(lines))


def reload_command(data_dir: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pinkrelay", "registry", "reload", "--data-dir", str(data_dir)],
                          capture_output=True, text=True, timeout=30)


async def connect(address: pinkrelay.Address, button_id: str) -> tuple[trio.SocketStream, object]:
    conn = raw_button(button_id)
    stream = await trio.open_tcp_stream(address.host, address.port)
    with trio.fail_after(5):
        await handshake(stream, conn)
    return stream, conn


async def refused(address: pinkrelay.Address, button_id: str) -> list:
    """Try a handshake that the relay should refuse; the events it answered with."""
    conn = raw_button(button_id)
    stream = await trio.open_tcp_stream(address.host, address.port)
    await stream.send_all(conn.hello(trio.current_time()))
    events = await read_events(stream, conn, until=lambda e: any(isinstance(x, Error) for x in e), timeout=3)
    if not any(isinstance(x, Error) for x in events):
        # Answer the challenge: the refusal comes after the proof.
        await stream.send_all(conn.authenticate(trio.current_time()))
        events += await read_events(stream, conn, until=lambda e: any(isinstance(x, Error) for x in e), timeout=3)
    await stream.aclose()
    return events


@pytest.mark.slow
def test_reload_ends_removed_and_disabled_buttons_only_and_refuses_an_invalid_file(serve, tmp_path):
    registry = tmp_path / "registry.csv"
    registry_csv(registry, {STREAMING: False, REMOVED: False, DISABLED: False, KEPT: False})
    relay = serve("--registry", str(registry), "--no-web", "--no-metrics")
    data_dir = relay.data_dir
    clip = encode_clip(1, width=160, height=120, fps=15, bitrate=150_000, label="reload")
    media_times: list[float] = []
    console_events: list = []

    async def scenario() -> dict:
        results: dict = {}
        async with trio.open_nursery() as nursery:
            console = pinkrelay.ConsoleClient(relay.consoles, OPERATOR, relay.console_token)
            await nursery.start(console.run)
            console.subscribe(STREAMING)

            async def watch() -> None:
                async for event in console.events():
                    console_events.append(event)
                    if isinstance(event, Media):
                        media_times.append(trio.current_time())

            nursery.start_soon(watch)
            button = pinkrelay.ButtonClient(relay.buttons, STREAMING, secret_for(STREAMING),
                                            tracks=[clip.video.to_dict(), clip.audio.to_dict()])
            await nursery.start(button.run)
            nursery.start_soon(stream_honouring_keyframes, button, clip)
            sessions = {b: await connect(relay.buttons, b) for b in (REMOVED, DISABLED, KEPT)}
            with trio.fail_after(10):
                while len(media_times) < 20:
                    await trio.sleep(0.05)

            # A valid registry: one removed, one disabled, one added.
            registry_csv(registry, {STREAMING: False, DISABLED: True, KEPT: False, ADDED: False})
            reloaded_at = trio.current_time()
            results["applied"] = await trio.to_thread.run_sync(reload_command, data_dir)
            for b in (REMOVED, DISABLED, KEPT):
                stream, conn = sessions[b]
                results[b] = await read_events(
                    stream, conn, until=lambda e: any(isinstance(x, (Error, Goodbye)) for x in e), timeout=1.0)
            added_stream, _ = await connect(relay.buttons, ADDED)
            results["removed_again"] = await refused(relay.buttons, REMOVED)
            await trio.sleep(1.0)
            results["media_after"] = [t for t in media_times if t > reloaded_at]
            results["gap"] = max(b - a for a, b in zip(media_times, media_times[1:]) if b > reloaded_at)

            # An invalid registry: refused, the one loaded before stays.
            registry.write_text(HEADER + f"{ADDED},short,Site,market,95.0,71.5,\n")
            results["refused"] = await trio.to_thread.run_sync(reload_command, data_dir)
            results["added_still"] = await connect(relay.buttons, ADDED)
            results["removed_still"] = await refused(relay.buttons, REMOVED)
            count = len(media_times)
            await trio.sleep(0.5)
            results["media_after_refusal"] = len(media_times) - count

            # SIGHUP itself, as systemd's ExecReload sends it: the removed button is back.
            registry_csv(registry, {STREAMING: False, REMOVED: False, KEPT: False, ADDED: False})
            before = (data_dir / "registry-reload.json").read_text()
            relay.process.send_signal(signal.SIGHUP)
            with trio.fail_after(10):
                while (data_dir / "registry-reload.json").read_text() == before:
                    await trio.sleep(0.05)
            results["back"] = await connect(relay.buttons, REMOVED)
            await added_stream.aclose()
            nursery.cancel_scope.cancel()
        return results

    results = trio.run(scenario)
    code, stderr, _ = relay.stop()

    applied = results["applied"]
    assert applied.returncode == 0, applied.stdout + applied.stderr
    assert "3 buttons: 1 added, 1 removed, 1 disabled, 0 changed" in applied.stdout
    for button_id, how in ((REMOVED, "removed from"), (DISABLED, "disabled in")):
        errors = [e for e in results[button_id] if isinstance(e, Error)]
        assert errors and errors[0].code == "auth" and errors[0].fatal, results[button_id]
        assert f"button {button_id} was {how} the registry" in errors[0].message
    assert not any(isinstance(e, (Error, Goodbye)) for e in results[KEPT]), results[KEPT]
    assert any(isinstance(e, Error) and e.code == "auth" for e in results["removed_again"])
    assert len(results["media_after"]) > 10, "the live stream stopped at the reload"
    assert results["gap"] < 0.5, f"the live stream paused {results['gap']:.2f} s at the reload"
    assert not any(type(e).__name__ == "Disconnected" for e in console_events)
    assert any(isinstance(e, ButtonState) and e.button == ADDED and e.site.name == f"Site of {ADDED}"
               for e in console_events), "the consoles were not told about the added button"

    refusal = results["refused"]
    assert refusal.returncode == 1, refusal.stdout
    assert "registry reload refused" in refusal.stdout and "keeping the 3 buttons loaded before" in refusal.stdout
    assert "latitude" in refusal.stdout and "secret" in refusal.stdout
    assert any(isinstance(e, Error) and e.code == "auth" for e in results["removed_still"])
    assert results["media_after_refusal"] > 3
    assert "registry reload refused" in stderr and "registry reloaded from" in stderr
    assert f"ending the session of button {REMOVED}" in stderr and f"ending the session of button {DISABLED}" in stderr

    with sqlite3.connect(data_dir / "journal.sqlite3") as db:
        audit = db.execute("SELECT operator, action, detail FROM audit WHERE action LIKE 'registry%' ORDER BY at").fetchall()
    assert [row[1] for row in audit] == ["registry-reload", "registry-reload-refused", "registry-reload"], audit
    assert {row[0] for row in audit} == {"SIGHUP"}
    assert audit[0][2] == "3 buttons: 1 added, 1 removed, 1 disabled, 0 changed"
    assert code == 0


def test_reload_without_a_running_relay_says_so(tmp_path):
    result = reload_command(tmp_path)
    assert result.returncode == 2
    assert f"no relay runs on {tmp_path}" in result.stdout


def test_registry_check_counts_disabled_rows_and_rejects_a_bad_flag(tmp_path):
    path = tmp_path / "registry.csv"
    registry_csv(path, {STREAMING: False, DISABLED: True})
    loaded = pinkrelay.load_registry(path)
    assert list(loaded) == [STREAMING] and loaded.disabled == {DISABLED}
    path.write_text(HEADER + f"{STREAMING},{secret_for(STREAMING).decode()},Site,market,34,71,maybe\n")
    with pytest.raises(pinkrelay.RegistryError, match="field disabled 'maybe' must be true or false"):
        pinkrelay.load_registry(path)


def test_the_shipped_unit_reloads_with_one_sighup():
    unit = (Path(__file__).resolve().parents[1] / "examples" / "systemd" / "pinkrelay.service").read_text()
    reloads = [line for line in unit.splitlines() if line.startswith("ExecReload=")]
    assert reloads == ["ExecReload=/bin/kill -HUP $MAINPID"], "systemd runs every ExecReload= line: one SIGHUP"
