"""Evidence parts without a relay: pre-roll rings (whole GOPs, pre_roll seconds, one budget), retention, fMP4 muxing."""

from __future__ import annotations

import gc

from pinkrelay._core import Lane, Message, encode_media
from pinkrelay.relay.evidence.preroll import LOW_WATER, Preroll

FPS = 10


def message(seq: int, *, keyframe: bool = False, audio: bool = False, size: int = 1000) -> Message:
    lane = Lane.AUDIO if audio else Lane.VIDEO
    chunks = tuple(encode_media(1, lane, seq, seq * 1000, b"\0" * size, keyframe, 65536))
    return Message(1, int(lane), seq, seq * 1000, keyframe, chunks, size)


def feed(ring, seconds: float, *, start: float = 0.0, gop: int = FPS) -> float:
    """Video at FPS with a keyframe every ``gop`` frames and one audio message per frame; returns the clock."""
    frames = int(seconds * FPS)
    now = start
    for n in range(frames):
        now = start + n / FPS
        ring.offer(message(n, keyframe=n % gop == 0), now)
        ring.offer(message(n, audio=True, size=100), now)
    return now


def test_a_ring_keeps_the_fewest_whole_gops_that_reach_pre_roll_back_and_shares_the_message_objects():
    preroll = Preroll(pre_roll=3.0, budget_bytes=10**9)
    ring = preroll.open("kp-1")
    now = feed(ring, 10.0)
    held = ring.messages()
    assert held[0].keyframe and held[0].lane == Lane.VIDEO
    assert 3.0 <= ring.span(now) < 4.0  # three seconds back, at most one GOP more
    assert ring.gop_count == 4
    assert preroll.nbytes == ring.nbytes == sum(m.wire_size for m in held)
    probe = message(999, keyframe=True)
    ring.offer(probe, now + 0.1)
    # The same wire bytes, not a copy; held as a tuple the cycle collector does not track.
    assert ring.messages()[-1].chunks[0] is probe.chunks[0]
    gc.collect()  # the first pass untracks the chunks' tuples, the second the entries around them
    gc.collect()
    assert not any(gc.is_tracked(entry) for gop in ring._gops for entry in gop)


def test_audio_before_the_first_keyframe_is_not_kept():
    preroll = Preroll(pre_roll=3.0, budget_bytes=10**9)
    ring = preroll.open("kp-1")
    ring.offer(message(1, audio=True), 0.0)
    ring.offer(message(2), 0.0)
    assert ring.messages() == [] and preroll.nbytes == 0


def test_over_the_budget_the_longest_ring_loses_whole_gops_first():
    gop_bytes = FPS * (message(0).wire_size + message(0, audio=True, size=100).wire_size)
    preroll = Preroll(pre_roll=20.0, budget_bytes=int(gop_bytes * 12.5))
    long_ring, short_ring = preroll.open("kp-long"), preroll.open("kp-short")
    feed(long_ring, 10.0)
    now = feed(short_ring, 3.0, start=7.0)
    assert preroll.gops_cut_for_budget > 0
    assert preroll.nbytes <= preroll.budget_bytes
    # The long ring paid: it still starts at a keyframe, the short one kept all three seconds.
    assert short_ring.gop_count == 3
    assert long_ring.messages()[0].keyframe
    assert long_ring.span(now) < 10.0
    stats = preroll.stats(now)
    assert stats["preroll_bytes"] == preroll.nbytes and stats["preroll_gops_cut_for_budget"] > 0
    assert preroll.nbytes <= preroll.budget_bytes and LOW_WATER < 1


def test_closing_a_stream_frees_its_ring():
    preroll = Preroll(pre_roll=3.0, budget_bytes=10**9)
    ring = preroll.open("kp-1")
    feed(ring, 2.0)
    preroll.close("kp-1", ring)
    assert preroll.nbytes == 0 and preroll.rings == {}


def test_retention_and_the_disk_high_water_delete_the_oldest_unheld_finished_recordings(tmp_path):
    from pinkrelay.relay.evidence.manifest import Manifest
    from pinkrelay.relay.evidence.store import EvidenceStore

    store = EvidenceStore(tmp_path / "evidence", tmp_path)
    day = 86400 * 10**6
    now = 100 * day
    for alert_id, started, state in (("old", now - 95 * day, "complete"), ("held", now - 200 * day, "complete"),
                                     ("open", now - 300 * day, "recording"), ("recent", now - day, "complete"),
                                     ("newest", now - 1000, "complete")):
        directory = store.directory(alert_id)
        directory.mkdir(parents=True)
        manifest = Manifest.new(alert_id=alert_id, button="kp-1", relay="r", started_at=started, reason="press")
        manifest.data["state"] = state
        manifest.data["ended_at"] = started + 1
        manifest.save(directory, None)
    store.place_hold("held", "sup-1", "case 9")
    deleted = store.sweep(retention_days=90, high_water=1.0, now_us=now)
    assert [d.alert_id for d in deleted] == ["old"] and "evidence_retention_days" in deleted[0].reason
    # A disk above its high-water mark: the oldest finished, unheld ones go, one at a time.
    deleted = store.sweep(retention_days=90, high_water=0.0, now_us=now)
    assert [d.alert_id for d in deleted] == ["recent", "newest"]
    assert all("evidence_disk_high_water" in d.reason for d in deleted)
    assert sorted(path.name for path in store.root.iterdir()) == ["held", "open"]


def test_h264_with_aac_is_muxed_into_fragments_that_join_into_one_playable_mp4(tmp_path):
    import json
    import subprocess

    from pinkrelay.media import encode_clip
    from pinkrelay.media.fragments import FragmentMuxer, join_parts

    clip = encode_clip(2, width=160, height=120, fps=10, bitrate=100_000, audio="aac", gop_seconds=1.0)
    muxer = FragmentMuxer([clip.video, clip.audio])
    fragments = []
    for packet in clip.packets:
        fragments += muxer.write(0 if packet.kind == "video" else 1, packet)
    fragments += muxer.close()
    assert [f.start_us for f in fragments] == [0, 1_000_000]
    path = tmp_path / "aac.mp4"
    join_parts([(muxer.init + b"".join(f.data for f in fragments), 0)], str(path))
    probe = subprocess.run(["ffprobe", "-v", "error", "-show_entries", "stream=codec_name:format=duration", "-of",
                            "json", str(path)], capture_output=True, text=True, timeout=30, check=True)
    data = json.loads(probe.stdout)
    assert sorted(s["codec_name"] for s in data["streams"]) == ["aac", "h264"]
    assert abs(float(data["format"]["duration"]) - 2.0) < 0.2
