"""The relay's media tests again, on the trio path: ``data_threads = 0`` with the compiled core.

By default a relay runs one compiled data thread per core, and so does every
other test relay here. ``data_threads = 0`` moves media back to trio and the
compiled framing (the pure-Python core's run covers it without the compiled
core): the same real relay, real clients and real H.264 and Opus, and the same
assertions, so both paths are held to one standard: an alert overtakes
queued media and reaches every console while buttons stream; a paused or
slow console loses video back to keyframes and slows nobody; a late joiner
decodes from its first frame; bad peers are refused with the same errors
while everyone else continues; a button over its bitrate is throttled, then
closed; a protocol-v2 button streams on track ids above 65535; evidence is
recorded from the hub's pre-roll ring.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
from relay_helpers import relay_config

from pinkrelay.relay.data_plane import available

import test_evidence as evidence
import test_relay_alerts as alerts
import test_relay_bad_input as bad_input
import test_relay_limits as limits
import test_relay_slow_consumer as slow_consumer
import test_relay_streams as streams
import test_relay_tracks as tracks

pytestmark = pytest.mark.compiled_only


@pytest.fixture(autouse=True)
def trio_path(monkeypatch):
    assert available(), "the compiled core and its data plane are not built"
    monkeypatch.setenv("PINKRELAY_DATA_THREADS", "0")
    assert relay_config(Path("unused")).data_threads == 0


def _clip_of(module):
    """The module's own clip fixture, made once here (each module encodes the clip its test needs)."""
    return pytest.fixture(scope="module")(lambda: module.clip.__wrapped__())


alerts_clip = _clip_of(alerts)
streams_clip = _clip_of(streams)
slow_clip = _clip_of(slow_consumer)
heavy_clip = pytest.fixture(scope="module")(lambda: limits.heavy_clip.__wrapped__())
light_clip = pytest.fixture(scope="module")(lambda: limits.light_clip.__wrapped__())
captured = bad_input.captured
evidence_clip = _clip_of(evidence)


def test_alert_overtakes_media_already_queued_for_a_console(tmp_path, alerts_clip):
    alerts.test_alert_overtakes_media_already_queued_for_a_console(tmp_path, alerts_clip)


def test_alert_reaches_every_console_while_20_buttons_stream(tmp_path, alerts_clip):
    alerts.test_alert_reaches_every_console_while_20_buttons_stream(tmp_path, alerts_clip)


def test_paused_console_neither_slows_others_nor_grows_without_bound(tmp_path, streams_clip):
    streams.test_paused_console_neither_slows_others_nor_grows_without_bound(tmp_path, streams_clip)


def test_console_joining_mid_gop_decodes_from_its_first_frame(tmp_path, streams_clip):
    streams.test_console_joining_mid_gop_decodes_from_its_first_frame(tmp_path, streams_clip)


def test_slow_console_loses_video_back_to_keyframes_keeps_audio_and_slows_nobody(tmp_path, slow_clip):
    slow_consumer.test_slow_console_loses_video_back_to_keyframes_keeps_audio_and_slows_nobody(tmp_path, slow_clip)


def test_bad_peers_are_refused_and_everyone_else_continues(tmp_path, captured):
    bad_input.test_bad_peers_are_refused_and_everyone_else_continues(tmp_path, captured)


def test_oversize_media_frame_drops_only_that_button(tmp_path):
    bad_input.test_oversize_media_frame_drops_only_that_button(tmp_path)


def test_a_button_over_its_bitrate_is_throttled_then_closed_and_others_keep_flowing(tmp_path, heavy_clip, light_clip):
    limits.test_a_button_over_its_bitrate_is_throttled_then_closed_and_others_keep_flowing(
        tmp_path, heavy_clip, light_clip)


def test_evidence_from_the_hubs_pre_roll_and_tap(tmp_path, evidence_clip):
    """The hub keeps the pre-roll in its own ring and hands a recorded button's messages to the writer."""
    stats, alert_id, press_us, resolve_us = trio.run(lambda: evidence.record_one_incident(
        tmp_path, evidence_clip, press_after=evidence.PRE_ROLL + 1.5, resolve_after=2.5))
    assert "data_plane_messages" not in stats, "the data plane carried the media"
    evidence.test_the_recording_starts_a_pre_roll_before_the_press_and_ends_post_roll_after_resolve(
        (tmp_path, stats, alert_id, press_us, resolve_us))


def test_past_the_16_bit_space_a_v2_button_streams_on_wide_ids_to_a_v2_console(tmp_path):
    tracks.test_past_the_16_bit_space_a_v2_button_streams_on_wide_ids_to_a_v2_console(tmp_path)
