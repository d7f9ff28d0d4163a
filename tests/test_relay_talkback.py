"""Talk-back through a real relay to a real ButtonClient: who may talk, what the button hears, the audit.

A real relay on loopback, a ButtonClient whose talk-back player decodes into
a WAV file, Opus packets made by PyAV from a sine tone and handed to the
relay's talk-back desk as the web control room does. The WAV file's
dominant frequency must be the tone's.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import av
import httpx
import numpy as np
import pytest
import trio
from trio.testing import trio_test

import pinkrelay
from pinkrelay.media import encode_clip
from pinkrelay.ops import serve_metrics
from pinkrelay.relay.evidence import EvidenceStore, verify
from pinkrelay.relay.evidence.manifest import load_public_key
from pinkrelay.media.talkback import SpeakerSink, SpeakerUnavailable, TalkBackPlayer, WavSink

from relay_helpers import button_client, running_relay, secret_for, stream_clip, wait_until, wall_us
from talkback_helpers import audit, dominant_hz, opus_tone

TONE_HZ = 660.0
BUTTON = "kp-test-001"








async def talk_of(relay, operator: str, role: str = "operator", room: str = "main", button: str = BUTTON):
    return await relay.talkback.open(operator=operator, role=role, room=room, button=button, via="test")


@trio_test
async def test_the_holder_talks_and_the_button_plays_the_tone_others_are_refused(tmp_path):
    wav_path = tmp_path / "heard.wav"
    player = TalkBackPlayer([WavSink(wav_path)])
    packets = opus_tone(1.0, TONE_HZ)
    async with running_relay(tmp_path, 4) as relay, trio.open_nursery() as nursery:
        button = button_client(relay, BUTTON, talkback=player)
        await nursery.start(button.run)
        mute = button_client(relay, "kp-test-002")  # firmware without a speaker
        await nursery.start(mute.run)
        receipt = await button.press(timeout=5)

        # Nobody holds the alert yet: an operator may not talk.
        with pytest.raises(pinkrelay.TalkBackRefused, match="not acknowledged; acknowledge it"):
            await talk_of(relay, "asma")
        await relay.act_on_alert(alert_id=receipt.alert_id, state="acknowledged", operator="asma",
                                 role="operator", console="test")
        with pytest.raises(pinkrelay.TalkBackRefused, match="held by asma .acknowledged it.; only asma"):
            await talk_of(relay, "bilal")
        with pytest.raises(pinkrelay.TalkBackRefused, match="answered by room main, not by room 'north'"):
            await talk_of(relay, "nadia", room="north")
        with pytest.raises(pinkrelay.TalkBackRefused, match="has no open alert"):
            await talk_of(relay, "asma", button="kp-test-003")
        with pytest.raises(pinkrelay.TalkBackRefused, match="no button 'kp-nowhere'"):
            await talk_of(relay, "asma", button="kp-nowhere")
        with pytest.raises(pinkrelay.TalkBackRefused, match="kp-test-002 cannot play talk-back"):
            await talk_of(relay, "chief", role="supervisor", button="kp-test-002")
        with pytest.raises(pinkrelay.TalkBackRefused, match="kp-test-004 is not connected"):
            await talk_of(relay, "chief", role="supervisor", button="kp-test-004")

        talk = await talk_of(relay, "asma")
        assert talk.alert_id == receipt.alert_id
        with pytest.raises(pinkrelay.TalkBackRefused, match="asma is talking to button kp-test-001 now"):
            await talk_of(relay, "chief", role="supervisor")
        captured = wall_us()
        for n, packet in enumerate(packets):
            assert relay.talkback.send(talk, packet, captured + n * 20_000)
        await relay.talkback.close(talk)
        await wait_until(lambda: player.sessions == 1 and player.talk_id == "", what="the end of the talk")
        assert player.packets == len(packets) and player.undecodable == 0

        # A supervisor may talk without holding the alert; the next session is a new one.
        supervisor_talk = await talk_of(relay, "chief", role="supervisor", room="north")
        for packet in opus_tone(0.2, 440.0)[:5]:
            relay.talkback.send(supervisor_talk, packet, wall_us())
        await relay.talkback.close(supervisor_talk, "released")
        await wait_until(lambda: player.sessions == 2 and player.talk_id == "", what="the second talk")
        assert button.connected.is_set() and mute.connected.is_set()
        ops = await nursery.start(serve_metrics, relay, "127.0.0.1:0")
        async with httpx.AsyncClient() as http:
            scrape = (await http.get(ops.url + "/metrics", timeout=5)).text
        assert 'pinkrelay_talkback_total{event="talks"} 2.0' in scrape
        assert 'pinkrelay_talkback_total{event="refused"} 8.0' in scrape
        assert f'pinkrelay_talkback_total{{event="packets"}} {len(packets) + 5}.0' in scrape
        assert "pinkrelay_talkback_open 0.0" in scrape
        nursery.cancel_scope.cancel()
    player.close()

    hz, samples = dominant_hz(wav_path)
    assert samples >= 0.9 * 48000
    assert abs(hz - TONE_HZ) < 5, f"the button heard {hz:.1f} Hz, the operator said {TONE_HZ} Hz"
    assert [(o, s) for o, s, _ in audit(tmp_path, "talk-start")] == [("asma", BUTTON), ("chief", BUTTON)]
    stops = audit(tmp_path, "talk-stop")
    assert [(o, s) for o, s, _ in stops] == [("asma", BUTTON), ("chief", BUTTON)]
    assert "released; " in stops[0][2] and f"{len(packets)} packets" in stops[0][2]
    refused = audit(tmp_path, "talk-refused")
    assert [o for o, _, _ in refused] == ["asma", "bilal", "nadia", "asma", "asma", "chief", "chief", "chief"]
    assert "held by asma" in refused[1][2]


@trio_test
async def test_bad_and_flooding_talkback_is_refused_or_dropped_and_a_lost_button_ends_the_talk(tmp_path):
    player = TalkBackPlayer([WavSink(tmp_path / "flood.wav")])
    packet = opus_tone(0.1, TONE_HZ)[0]
    async with running_relay(tmp_path, 2) as relay, trio.open_nursery() as nursery:
        button = button_client(relay, BUTTON, talkback=player, reconnect=False)
        await nursery.start(button.run)
        talk = await talk_of(relay, "chief", role="supervisor")
        with pytest.raises(ValueError, match="1 to 8000 bytes of Opus, not 9000"):
            relay.talkback.send(talk, b"\x00" * 9000, 0)
        with pytest.raises(ValueError, match="not 0"):
            relay.talkback.send(talk, b"", 0)
        sent = sum(relay.talkback.send(talk, packet, 0) for _ in range(500))
        assert 50 <= sent < 200 and talk.dropped == 500 - sent, "a flood is cut to the packet rate"
        await wait_until(lambda: player.packets == sent, what="the packets that were let through")
        assert button.connected.is_set(), "a flood costs the voice, never the button's link"
        button.close("button switched off")
        await wait_until(lambda: relay.sessions_by_button.get(BUTTON) is None, what="the button to leave")
        assert not relay.talkback.send(talk, packet, 0)
        assert talk.ended == "the button's session ended"
        await relay.talkback.close(talk)
        nursery.cancel_scope.cancel()
    player.close()
    [(operator, subject, detail)] = audit(tmp_path, "talk-stop")
    assert (operator, subject) == ("chief", BUTTON)
    assert detail.startswith("the button's session ended;") and f"{500 - sent} dropped" in detail


def test_a_speaker_without_any_audio_output_says_what_to_do(monkeypatch, tmp_path):
    """A machine with neither sounddevice nor aplay (this one, often) gets told what to install."""
    monkeypatch.setitem(sys.modules, "sounddevice", None)  # import fails as if not installed
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(SpeakerUnavailable, match="pip install sounddevice.*apt-get install alsa-utils.*--talkback-wav"):
        SpeakerSink()


def cli_button(relay, tmp_path: Path, *extra: str) -> list[str]:
    secret = tmp_path / "button.secret"
    secret.write_bytes(secret_for(BUTTON) + b"\n")
    return [sys.executable, "-m", "pinkrelay", "button", "--relay", str(relay.buttons_address), "--id", BUTTON,
            "--secret-file", str(secret), "--video", "160x120@10", "--json", *extra]


@pytest.mark.core_independent  # the CLI and the evidence files; the relay path runs in both cores above
@trio_test
async def test_pinkrelay_button_plays_talkback_into_its_wav_file(tmp_path):
    wav_path = tmp_path / "cli-heard.wav"
    packets = opus_tone(1.0, 523.0)
    output = bytearray()

    async def read_all(stream) -> None:
        while chunk := await stream.receive_some(1 << 16):
            output.extend(chunk)

    async with running_relay(tmp_path, 2) as relay, trio.open_nursery() as nursery:
        command = cli_button(relay, tmp_path, "--talkback-wav", str(wav_path), "--duration", "4")
        process = await trio.lowlevel.open_process(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                                   stdin=subprocess.DEVNULL)
        nursery.start_soon(read_all, process.stdout)
        await wait_until(lambda: BUTTON in relay.sessions_by_button, timeout=15, what="the CLI button")
        talk = await talk_of(relay, "chief", role="supervisor")
        for n, packet in enumerate(packets):
            relay.talkback.send(talk, packet, wall_us())
            if n % 10 == 9:
                await trio.sleep(0.2)  # 10 packets per 200 ms: the rate they are spoken at
        await relay.talkback.close(talk)
        with trio.fail_after(20):
            returncode = await process.wait()
        errors = await process.stderr.receive_some(1 << 16)
        assert returncode == 0, errors.decode()
    output = output.decode()
    events = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    [start] = [e for e in events if e["event"] == "talk"]
    assert (start["operator"], start["alert_id"], start["talk_id"]) == ("chief", "", talk.talk_id)
    assert [e["event"] for e in events].count("talk-end") == 1
    assert events[-1]["event"] == "summary" and events[-1]["talks"] == 1
    hz, samples = dominant_hz(wav_path)
    assert abs(hz - 523.0) < 5 and samples >= 0.9 * 48000


def test_pinkrelay_button_speaker_without_audio_output_fails_clearly(tmp_path):
    if importlib.util.find_spec("sounddevice") is not None:
        pytest.skip("sounddevice is installed here: a speaker may exist")
    command = [sys.executable, "-m", "pinkrelay", "button", "--relay", "127.0.0.1:9", "--id", BUTTON,
               "--secret-file", str(tmp_path / "none"), "--speaker"]
    (tmp_path / "none").write_text("x\n")
    result = subprocess.run(command, capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL,
                            env={**os.environ, "PATH": str(tmp_path)})
    assert result.returncode != 0
    assert "cannot play talk-back on a speaker" in result.stderr and "--talkback-wav FILE" in result.stderr


@pytest.mark.core_independent  # the CLI and the evidence files; the relay path runs in both cores above
@trio_test
async def test_talkback_about_a_recorded_alert_is_kept_in_its_evidence_chained_and_signed(tmp_path):
    """The operator's words go into the incident's evidence as talk-001.ogg, verified like every segment."""
    clip = encode_clip(2, width=320, height=240, fps=15, bitrate=300_000, label="evidence", gop_seconds=1.0)
    player = TalkBackPlayer([WavSink(tmp_path / "heard.wav")])
    settings = dict(pre_roll=2.0, post_roll=0.5, evidence_segment=1.0)
    async with running_relay(tmp_path, 2, **settings) as relay, trio.open_nursery() as nursery:
        button = button_client(relay, BUTTON, [clip.video.to_dict(), clip.audio.to_dict()], talkback=player)
        await nursery.start(button.run)
        nursery.start_soon(lambda: stream_clip(button, clip, seconds=60.0))
        await trio.sleep(2.5)
        receipt = await button.press(timeout=5)
        await relay.act_on_alert(alert_id=receipt.alert_id, state="acknowledged", operator="asma",
                                 role="operator", console="test")
        talk = await talk_of(relay, "asma")
        for packet in opus_tone(1.0, TONE_HZ):
            relay.talkback.send(talk, packet, wall_us())
        await relay.talkback.close(talk)
        await relay.act_on_alert(alert_id=receipt.alert_id, state="resolved", operator="asma", role="operator",
                                 console="test", outcome="genuine", category="harassment")
        directory = relay.config.evidence_root / receipt.alert_id

        def complete() -> bool:
            try:
                return json.loads((directory / "manifest.json").read_text())["state"] == "complete"
            except (FileNotFoundError, ValueError):
                return False

        await wait_until(complete, timeout=10, what="the recording to complete")
        nursery.cancel_scope.cancel()
    manifest = json.loads((directory / "manifest.json").read_text())
    [said] = manifest["talkback"]
    assert (said["operator"], said["alert_id"], said["talk_id"], said["packets"]) == (
        "asma", receipt.alert_id, talk.talk_id, 50)
    [piece] = [p for p in manifest["pieces"] if p["kind"] == "talkback"]
    assert piece["file"] == said["file"] == "talk-001.ogg"
    key = load_public_key(tmp_path / "evidence_key.pub.pem")
    verdict = verify(directory, key)
    assert verdict.ok, verdict.problems
    with av.open(str(directory / "talk-001.ogg")) as ogg:
        samples = np.concatenate([frame.to_ndarray().reshape(-1) for frame in ogg.decode(audio=0)])
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    assert abs(np.argmax(spectrum) * 48000 / len(samples) - TONE_HZ) < 5
    # The MP4 of the incident is still the video and the button's own audio, playable.
    movie = EvidenceStore(tmp_path / "evidence", tmp_path).playable(receipt.alert_id)
    with av.open(str(movie)) as mp4:
        assert sorted(s.type for s in mp4.streams) == ["audio", "video"]
    damaged = bytearray((directory / "talk-001.ogg").read_bytes())
    damaged[len(damaged) // 2] ^= 0x01
    (directory / "talk-001.ogg").write_bytes(bytes(damaged))
    problems = verify(directory, key).problems
    assert any("talk-001.ogg" in problem and "altered" in problem for problem in problems), problems


@pytest.mark.compiled_only
@trio_test
async def test_talkback_reaches_a_button_whose_media_a_data_thread_reads(tmp_path):
    """With the compiled data plane (data_threads) reading the button, the relay still writes its talk-back."""
    player = TalkBackPlayer([WavSink(tmp_path / "heard.wav")])
    async with running_relay(tmp_path, 2, data_threads=1) as relay, trio.open_nursery() as nursery:
        button = button_client(relay, BUTTON, talkback=player)
        await nursery.start(button.run)
        talk = await talk_of(relay, "chief", role="supervisor")
        for packet in opus_tone(1.0, TONE_HZ):
            relay.talkback.send(talk, packet, wall_us())
        await relay.talkback.close(talk)
        await wait_until(lambda: player.sessions == 1 and player.talk_id == "", what="the talk at the button")
        nursery.cancel_scope.cancel()
    player.close()
    hz, samples = dominant_hz(tmp_path / "heard.wav")
    assert abs(hz - TONE_HZ) < 5 and samples >= 0.9 * 48000


@trio_test
async def test_two_operators_pressing_at_once_get_one_talk_and_one_refusal(tmp_path):
    player = TalkBackPlayer([WavSink(tmp_path / "race.wav")])
    async with running_relay(tmp_path, 2) as relay, trio.open_nursery() as nursery:
        button = button_client(relay, BUTTON, talkback=player)
        await nursery.start(button.run)
        outcomes: list = []

        async def press(operator: str) -> None:
            try:
                outcomes.append(await talk_of(relay, operator, role="supervisor"))
            except pinkrelay.TalkBackRefused as refusal:
                outcomes.append(refusal)

        async with trio.open_nursery() as both:
            both.start_soon(press, "chief")
            both.start_soon(press, "deputy")
        talks = [o for o in outcomes if not isinstance(o, Exception)]
        refusals = [o for o in outcomes if isinstance(o, Exception)]
        assert len(talks) == 1 and len(refusals) == 1, outcomes
        assert f"{talks[0].operator} is talking to button {BUTTON} now" in str(refusals[0])
        assert relay.talkback.talks == {BUTTON: talks[0]}
        await relay.talkback.close(talks[0])
        assert relay.talkback.talks == {}
        nursery.cancel_scope.cancel()
    player.close()


def test_a_speaker_without_sounddevice_plays_through_aplay_as_raw_48k_mono(monkeypatch, tmp_path):
    """ALSA's aplay gets 16-bit little-endian 48 kHz mono on its stdin (a stand-in aplay records it)."""
    recorded, arguments = tmp_path / "played.raw", tmp_path / "argv"
    aplay = tmp_path / "aplay"
    aplay.write_text(f'#!/bin/sh\necho "$@" > {arguments}\ncat > {recorded}\n')
    aplay.chmod(0o755)
    monkeypatch.setitem(sys.modules, "sounddevice", None)
    monkeypatch.setenv("PATH", f"{tmp_path}:/usr/bin:/bin")
    speaker = SpeakerSink()
    assert speaker.backend == "aplay"
    player = TalkBackPlayer([speaker])
    for seq, packet in enumerate(opus_tone(0.5, TONE_HZ)):
        player.receive(pinkrelay.TalkBack(talk_id="t", seq=seq, packet=packet))
    player.close()
    assert arguments.read_text().split() == ["-q", "-t", "raw", "-f", "S16_LE", "-r", "48000", "-c", "1",
                                             "--buffer-time=60000"]
    samples = np.frombuffer(recorded.read_bytes(), "<i2").astype(np.float64)
    assert len(samples) == player.packets * 960
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    assert abs(np.argmax(spectrum) * 48000 / len(samples) - TONE_HZ) < 5


def test_a_packet_that_is_not_opus_costs_its_20_ms_not_the_talk(tmp_path):
    wav = tmp_path / "mixed.wav"
    player = TalkBackPlayer([WavSink(wav)])
    good = opus_tone(0.2, TONE_HZ)
    lies = [b"\xff" * 50, b"\x03", b"\x0b\xff\xff"]  # bad frame counts and lengths in the TOC
    for seq, packet in enumerate(good[:5] + lies + good[5:]):
        player.receive(pinkrelay.TalkBack(talk_id="t", seq=seq, packet=packet))
    player.receive(pinkrelay.TalkBack(talk_id="t", seq=99, end=True))
    player.close()
    assert (player.undecodable, player.packets, player.sessions) == (3, len(good), 1)
    assert dominant_hz(wav)[1] == len(good) * 960
