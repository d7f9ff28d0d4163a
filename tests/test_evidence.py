"""Evidence at the relay, with real parts: a real relay, a button streaming real H.264 and Opus, ffprobe.

Short settings keep it in seconds: pre_roll 3 s, post_roll 1 s, segments of
1 s, a clip with one keyframe a second (the GOP). The button presses once
it has streamed for longer than the pre-roll; the alert is resolved a few
seconds later. The recording must start about pre_roll before the press,
last until resolve + post_roll, verify, and fail verification naming the
segment when a byte is flipped or a segment removed.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import sqlite3
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import trio

from pinkrelay import Address, ButtonClient
from pinkrelay.cli import main
from pinkrelay.media import encode_clip
from pinkrelay.protocol import Error, Media
from pinkrelay.relay.evidence import EvidenceStore
from pinkrelay.relay.evidence.manifest import load_public_key, verify

from relay_helpers import (
    button_client,
    button_ids,
    console_client,
    next_of,
    running_relay,
    small_tmpfs,
    secret_for,
    stream_clip,
    wait_until,
)

PRE_ROLL = 3.0
POST_ROLL = 1.0
GOP = 1.0
SETTINGS = dict(pre_roll=PRE_ROLL, post_roll=POST_ROLL, evidence_segment=1.0)


@pytest.fixture(scope="module")
def clip():
    return encode_clip(2, width=320, height=240, fps=15, bitrate=300_000, label="evidence", gop_seconds=GOP)


def tracks_of(clip):
    return [clip.video.to_dict(), clip.audio.to_dict()]


def ffprobe(path: Path) -> dict:
    result = subprocess.run(
        ["ffprobe", "-v", "error", "-show_entries", "format=duration:stream=codec_type,codec_name",
         "-of", "json", str(path)], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


async def record_one_incident(data_dir: Path, clip, *, press_after: float, resolve_after: float, **changes):
    """Stream, press, resolve; returns (relay stats, alert id, press wall µs, resolve wall µs)."""
    async with running_relay(data_dir, **SETTINGS, **changes) as relay:
        button = button_client(relay, button_ids(1)[0], tracks_of(clip))
        async with trio.open_nursery() as nursery:
            nursery.start_soon(button.run)
            nursery.start_soon(lambda: stream_clip(button, clip, seconds=60.0))
            await trio.sleep(press_after)
            receipt = await button.press(timeout=5)
            press_us = time.time_ns() // 1000
            alert_id = receipt.alert_id
            await trio.sleep(resolve_after)
            await relay.act_on_alert(alert_id=alert_id, state="acknowledged", operator="desk-1",
                                     role="operator", console="test")
            await relay.act_on_alert(alert_id=alert_id, state="resolved", operator="desk-1", role="operator",
                                     console="test", outcome="genuine", category="harassment")
            resolve_us = time.time_ns() // 1000
            directory = relay.config.evidence_root / alert_id

            def complete() -> bool:
                try:
                    return json.loads((directory / "manifest.json").read_text())["state"] == "complete"
                except (FileNotFoundError, ValueError):
                    return False

            await wait_until(complete, timeout=POST_ROLL + 5, what="the recording to complete")
            stats = relay.stats()
            nursery.cancel_scope.cancel()
    return stats, alert_id, press_us, resolve_us


@pytest.fixture(scope="module")
def incident(tmp_path_factory, clip):
    data_dir = tmp_path_factory.mktemp("evidence")
    stats, alert_id, press_us, resolve_us = trio.run(
        lambda: record_one_incident(data_dir, clip, press_after=PRE_ROLL + 1.5, resolve_after=2.5))
    return data_dir, stats, alert_id, press_us, resolve_us


def test_the_recording_starts_a_pre_roll_before_the_press_and_ends_post_roll_after_resolve(incident):
    data_dir, stats, alert_id, press_us, resolve_us = incident
    store = EvidenceStore(data_dir / "evidence", data_dir)
    manifest = store.manifest(alert_id).data
    assert manifest["state"] == "complete" and manifest["gaps"] == []
    # The first frame (origin_us, the button's capture clock) is at most one GOP after press - pre_roll.
    pressed_at = manifest["press_us"]
    assert pressed_at - manifest["origin_us"] >= (PRE_ROLL - GOP) * 1e6
    assert pressed_at - manifest["origin_us"] <= (PRE_ROLL + GOP) * 1e6 + 0.3e6
    probe = ffprobe(store.playable(alert_id))
    assert sorted(s["codec_name"] for s in probe["streams"]) == ["h264", "opus"]
    duration = float(probe["format"]["duration"])
    expected = (resolve_us - manifest["origin_us"]) / 1e6 + POST_ROLL
    assert abs(duration - expected) <= GOP + 0.3, (duration, expected)
    assert stats["evidence_recordings_finished"] == 1 and stats["evidence_recordings_failed"] == 0
    assert stats["preroll_rings"] == 1 and stats["preroll_bytes"] > 0


def test_verify_passes_then_names_a_flipped_byte_and_a_removed_segment(incident, tmp_path):
    data_dir, _, alert_id, _, _ = incident
    source = data_dir / "evidence" / alert_id
    key = load_public_key(data_dir / "evidence_key.pub.pem")
    verdict = verify(source, key)
    assert verdict.ok, verdict.problems
    assert verdict.signed and verdict.segments >= 4
    segments = [p for p in json.loads((source / "manifest.json").read_text())["pieces"] if p["kind"] == "media"]
    assert all(a["end_us"] == b["start_us"] for a, b in zip(segments, segments[1:])), "segments leave media out"

    flipped = shutil.copytree(source, tmp_path / "flipped")
    victim = sorted(flipped.glob("seg-*.m4s"))[2]
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0x01
    victim.write_bytes(bytes(data))
    problems = verify(flipped, key).problems
    assert len(problems) == 1 and victim.name in problems[0] and "altered" in problems[0], problems

    removed = shutil.copytree(source, tmp_path / "removed")
    victim = sorted(removed.glob("seg-*.m4s"))[3]
    victim.unlink()
    problems = verify(removed, key).problems
    assert len(problems) == 1 and victim.name in problems[0] and "gap from" in problems[0], problems

    reordered = shutil.copytree(source, tmp_path / "reordered")
    first, second = sorted(reordered.glob("seg-*.m4s"))[1:3]
    a, b = first.read_bytes(), second.read_bytes()
    first.write_bytes(b)
    second.write_bytes(a)
    problems = verify(reordered, key).problems
    assert len(problems) == 2 and all("reordered" in p for p in problems), problems

    forged = shutil.copytree(source, tmp_path / "forged")
    manifest = json.loads((forged / "manifest.json").read_text())
    manifest["button"] = "someone-else"
    (forged / "manifest.json").write_text(json.dumps(manifest))
    problems = verify(forged, key).problems
    assert problems and "edited or forged" in problems[0], problems


def test_cli_verifies_exports_holds_and_audits_each(incident, tmp_path, capsys):
    data_dir, _, alert_id, _, _ = incident
    location = ["--data-dir", str(data_dir)]
    assert main(["evidence", "verify", alert_id, *location]) == 0
    assert "OK:" in capsys.readouterr().out
    assert main(["evidence", "list", *location]) == 0
    assert alert_id in capsys.readouterr().out
    out = tmp_path / "export"
    assert main(["evidence", "export", alert_id, "--to", str(out), "--operator", "inv-1", *location]) == 0
    names = {path.name for path in out.iterdir()}
    assert {f"{alert_id}.mp4", "manifest.json", "manifest.sig", "evidence_key.pub.pem", "SHA256SUMS",
            "README.txt", "segments"} <= names
    assert sorted(s["codec_name"] for s in ffprobe(out / f"{alert_id}.mp4")["streams"]) == ["h264", "opus"]
    # The README's standard tools: sha256sum over the pieces, openssl over the signature.
    sums = subprocess.run(["sha256sum", "-c", "SHA256SUMS"], cwd=out, capture_output=True, text=True, timeout=30)
    assert sums.returncode == 0, sums.stdout + sums.stderr
    signature = subprocess.run(["openssl", "pkeyutl", "-verify", "-pubin", "-inkey", "evidence_key.pub.pem",
                                "-rawin", "-in", "manifest.json", "-sigfile", "manifest.sig"],
                               cwd=out, capture_output=True, text=True, timeout=30)
    assert signature.returncode == 0 and "Verified" in signature.stdout, signature.stdout + signature.stderr
    assert main(["evidence", "verify", str(out), *location]) == 0  # the export verifies on its own too
    assert "OK:" in capsys.readouterr().out
    assert main(["evidence", "hold", alert_id, "--reason", "case 2026/77", "--operator", "sup-1", *location]) == 0
    store = EvidenceStore(data_dir / "evidence", data_dir)
    assert store.hold(alert_id)["reason"] == "case 2026/77"
    # Retention never deletes a held recording, even past its days.
    assert store.sweep(retention_days=1, high_water=1.0, now_us=time.time_ns() // 1000 + 2 * 86400 * 10**6) == []
    assert main(["evidence", "release", alert_id, "--operator", "sup-1", *location]) == 0
    assert main(["evidence", "release", alert_id, *location]) == 2
    assert "not on hold" in capsys.readouterr().err
    assert main(["evidence", "verify", "no-such-alert", *location]) == 1
    with sqlite3.connect(data_dir / "journal.sqlite3") as conn:
        actions = [row for row in conn.execute("SELECT operator, action, subject FROM audit")]
    assert ("inv-1", "evidence-export", alert_id) in actions
    assert ("sup-1", "evidence-hold", alert_id) in actions and ("sup-1", "evidence-release", alert_id) in actions


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _serve(tmp_path: Path, data_dir: Path, buttons: int, consoles: int, **settings: object) -> subprocess.Popen:
    registry = tmp_path / "buttons.csv"
    if not registry.exists():
        button = button_ids(1)[0]
        registry.write_text("id,secret,site_name,site_kind,address,district,latitude,longitude,control_rooms\n"
                            f"{button},{secret_for(button).decode()},Evidence site,market,Saddar Road,"
                            "Cantonment,34.0,71.5,main\n")
    env = dict(os.environ, **{f"PINKRELAY_{name.upper()}": str(value) for name, value in settings.items()})
    with open(tmp_path / "relay.log", "ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "pinkrelay", "serve", "--no-web", "--no-metrics", "--registry", str(registry),
             "--data-dir", str(data_dir), "--buttons-listen", f"127.0.0.1:{buttons}",
             "--consoles-listen", f"127.0.0.1:{consoles}"], stdout=log, stderr=subprocess.STDOUT, env=env)


async def _listening(port: int, process: subprocess.Popen, log: Path) -> None:
    with trio.fail_after(20):
        while True:
            assert process.poll() is None, "the relay exited:\n" + log.read_text()[-3000:]
            try:
                (await trio.open_tcp_stream("127.0.0.1", port)).socket.close()
                return
            except OSError:
                await trio.sleep(0.05)


def _manifest(directory: Path) -> dict:
    try:
        return json.loads((directory / "manifest.json").read_text())
    except (FileNotFoundError, ValueError):
        return {}


def test_kill_9_mid_incident_then_restart_resumes_the_same_recording_and_states_the_gap(tmp_path, clip):
    data_dir = tmp_path / "var"
    buttons, consoles = _free_port(), _free_port()
    settings = dict(SETTINGS, max_incident=12.0)

    async def main() -> None:
        relay = _serve(tmp_path, data_dir, buttons, consoles, **settings)
        try:
            await _listening(buttons, relay, tmp_path / "relay.log")
            address = Address("127.0.0.1", buttons)
            button = ButtonClient(address, button_ids(1)[0], secret_for(button_ids(1)[0]), tracks=tracks_of(clip),
                                  backoff_initial=0.05, backoff_max=0.3)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(button.run)
                nursery.start_soon(lambda: stream_clip(button, clip, seconds=60.0))
                await trio.sleep(PRE_ROLL + 0.5)
                receipt = await button.press(timeout=5)
                directory = data_dir / "evidence" / receipt.alert_id
                await wait_until(lambda: len(_manifest(directory).get("pieces", [])) >= 3, timeout=6,
                                 what="two segments before the kill")
                relay.send_signal(signal.SIGKILL)
                relay.wait()
                killed = time.monotonic()
                await trio.sleep(1.0)
                relay = _serve(tmp_path, data_dir, buttons, consoles, **settings)
                await wait_until(lambda: _manifest(directory).get("state") == "complete", timeout=20,
                                 what="the resumed recording to complete at max_incident")
                down_at_most = time.monotonic() - killed
                nursery.cancel_scope.cancel()
        finally:
            relay.kill()
            relay.wait()
        manifest = _manifest(directory)
        assert len(manifest["parts"]) == 2 and manifest["parts"][1]["reason"] == "relay restart"
        assert len(manifest["gaps"]) == 1 and "relay restarted" in manifest["gaps"][0]["reason"]
        gap = manifest["gaps"][0]
        # The gap is the time the relay was away (with the last unfinished segment), never longer than the wait.
        assert 1.0e6 < gap["to_us"] - gap["from_us"] < down_at_most * 1e6, gap
        store = EvidenceStore(data_dir / "evidence", data_dir)
        verdict = store.verify(receipt.alert_id)
        assert verdict.ok, verdict.problems
        assert len(verdict.gaps) == 1 and "relay restarted" in verdict.gaps[0]
        probe = ffprobe(store.playable(receipt.alert_id))
        assert sorted(s["codec_name"] for s in probe["streams"]) == ["h264", "opus"]
        # The playable file spans both parts and the gap between them.
        assert float(probe["format"]["duration"]) * 1e6 >= gap["to_us"]

    trio.run(main)


@pytest.fixture
def small_disk(tmp_path):
    with small_tmpfs(tmp_path, "evidence-disk", "4m") as mount:
        yield mount


def test_a_full_evidence_disk_stops_the_recording_loudly_and_nothing_else(tmp_path, small_disk, clip, caplog):
    """The evidence disk fills mid-recording: log line, metric, console notice; alerts and live video go on."""

    async def main() -> None:
        async with running_relay(tmp_path / "var", **SETTINGS, evidence_dir=small_disk) as relay:
            first, second = button_ids(2)
            pressed = button_client(relay, first, tracks_of(clip))
            other = button_client(relay, second, tracks_of(clip))
            console = console_client(relay)
            async with trio.open_nursery() as nursery:
                await nursery.start(console.run)
                console.subscribe(first)
                for button in (pressed, other):
                    nursery.start_soon(button.run)
                    nursery.start_soon(lambda b=button: stream_clip(b, clip, seconds=60.0))
                await trio.sleep(1.5)
                receipt = await pressed.press(timeout=5)
                directory = small_disk / receipt.alert_id
                await wait_until(lambda: len(_manifest(directory).get("pieces", [])) >= 2, timeout=5,
                                 what="a first segment")
                with open(small_disk / "filler", "wb") as filler:  # the disk fills up
                    with contextlib.suppress(OSError):
                        while True:
                            filler.write(b"\0" * 65536)
                            filler.flush()
                notice = await next_of(console, Error, timeout=6, where=lambda e: e.code == "evidence")
                assert receipt.alert_id in notice.message and not notice.fatal
                assert "RECORDING STOPPED" in notice.message
                # Live video goes on to the console after the stop ...
                media = 0
                with trio.move_on_after(1.5):
                    async for event in console.events():
                        media += isinstance(event, Media)
                assert media > 20
                # ... and alerts are stored and acknowledged as ever.
                second_receipt = await other.press(timeout=5)
                assert not second_receipt.duplicate
                stats = relay.stats()
                assert stats["evidence_recordings_failed"] >= 1
                assert await relay.journal.get(second_receipt.alert_id) is not None
                assert await relay.journal.get(receipt.alert_id) is not None
                nursery.cancel_scope.cancel()
        # What was written before the disk filled is intact and verifies (the final manifest could not be
        # written to the full disk: the next start finds it unfinished and says so).
        verdict = EvidenceStore(small_disk, tmp_path / "var").verify(receipt.alert_id)
        assert verdict.ok and verdict.segments >= 1, verdict.problems
        lines = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
        assert any("RECORDING STOPPED" in line and receipt.alert_id in line for line in lines), lines

    trio.run(main)
