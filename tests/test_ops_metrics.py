"""Metrics and health checks of the real relay, scraped over HTTP as Prometheus would.

Real relay on 127.0.0.1, a real button streaming PyAV H.264 + Opus to a real
console, a real press acknowledged and dispatched by an operator; the
figures read from /metrics must match what happened.
"""

from __future__ import annotations

import re

import httpx
import pytest
import trio
from trio.testing import trio_test

from pinkrelay.errors import ConfigError
from pinkrelay.media import encode_clip
from pinkrelay.ops import serve_metrics
from pinkrelay.protocol import AlertUpdate, Media, Subscribed

from relay_helpers import (
    button_client,
    button_ids,
    collect_events,
    console_client,
    running_relay,
    stream_clip,
    wait_until,
)


@pytest.fixture(scope="module")
def clip():
    return encode_clip(1, width=320, height=240, fps=30, bitrate=300_000, label="metrics")


def sample(text: str, name: str, **labels: str) -> float:
    """The value of one series in Prometheus' text format (fails if it is not there)."""
    wanted = ",".join(f'{key}="{value}"' for key, value in labels.items())
    pattern = "^" + re.escape(name) + (r"\{" + re.escape(wanted) + r"\}" if labels else "") + r" (\S+)$"
    match = re.search(pattern, text, re.MULTILINE)
    assert match, f"no series {name}{{{wanted}}} in the scrape"
    return float(match.group(1))


async def scrape(url: str, path: str = "/metrics") -> httpx.Response:
    async with httpx.AsyncClient() as client:
        return await client.get(url + path, timeout=5)


@trio_test
async def test_metrics_follow_a_press_media_and_operator_steps(tmp_path, clip):
    button_id = button_ids(1)[0]
    async with running_relay(tmp_path, escalation_levels=(0.3, 60.0)) as relay, trio.open_nursery() as nursery:
        ops = await nursery.start(serve_metrics, relay, "127.0.0.1:0")
        before = (await scrape(ops.url)).text
        assert sample(before, "pinkrelay_buttons_connected") == 0
        assert "pinkrelay_alerts_total{" not in before  # no alert yet: no labelled series

        console = console_client(relay)
        await nursery.start(console.run)
        seen: list = []
        nursery.start_soon(collect_events, console, seen)
        button = button_client(relay, button_id, [clip.video.to_dict(), clip.audio.to_dict()])
        await nursery.start(button.run)
        console.subscribe(button_id)
        # Subscribed before the first message, so that every message sent is delivered live.
        await wait_until(lambda: any(isinstance(e, Subscribed) for e in seen), what="the subscription")
        sent = await stream_clip(button, clip, seconds=1.0)
        await wait_until(lambda: sum(isinstance(e, Media) for e in seen) >= sent // 2, what="media at the console")

        receipt = await button.press(timeout=5)
        # Nobody answers for 0.3 s: level 1.
        await wait_until(lambda: any(isinstance(e, AlertUpdate) and e.level == 1 for e in seen), timeout=5,
                         what="the escalation")
        escalated = (await scrape(ops.url)).text
        assert sample(escalated, "pinkrelay_unacknowledged_escalated_alerts") == 1
        assert sample(escalated, "pinkrelay_oldest_unacknowledged_alert_seconds") >= 0.3
        assert sample(escalated, "pinkrelay_open_alerts", state="raised") == 1
        assert sample(escalated, "pinkrelay_escalations_total", level="1") == 1

        console.update_alert(receipt.alert_id, "acknowledged")
        await wait_until(lambda: any(isinstance(e, AlertUpdate) and e.state == "acknowledged" for e in seen))
        console.update_alert(receipt.alert_id, "dispatched", unit="Mobile-7")
        await wait_until(lambda: any(isinstance(e, AlertUpdate) and e.state == "dispatched" for e in seen))
        await trio.sleep(0.05)  # the metrics task reads the same events
        text = (await scrape(ops.url)).text

        assert sample(text, "pinkrelay_buttons_connected") == 1
        assert sample(text, "pinkrelay_consoles_connected") == 1
        assert sample(text, "pinkrelay_buttons_online") == 1
        assert sample(text, "pinkrelay_media_streams") == 1
        assert sample(text, "pinkrelay_alerts_total", kind="panic", recorded_as="raised") == 1
        assert sample(text, "pinkrelay_open_alerts", state="dispatched") == 1
        assert sample(text, "pinkrelay_open_alerts", state="raised") == 0
        assert sample(text, "pinkrelay_unacknowledged_escalated_alerts") == 0
        ack = sample(text, "pinkrelay_alert_response_seconds_count", step="acknowledged")
        assert ack == 1
        # Acknowledged after the escalation at 0.3 s.
        assert sample(text, "pinkrelay_alert_response_seconds_sum", step="acknowledged") >= 0.3
        assert sample(text, "pinkrelay_alert_response_seconds_count", step="dispatched") == 1
        # What crossed the relay: every media message the button sent, wire bytes at least the payloads.
        assert sample(text, "pinkrelay_media_messages_received_total") == sent
        payload = sum(len(p.data) for p in clip.packets[:sent])
        assert sample(text, "pinkrelay_media_bytes_received_total") >= payload
        assert sample(text, "pinkrelay_media_deliveries_total") >= sent
        assert sample(text, "pinkrelay_bytes_sent_total") >= payload
        assert sample(text, "pinkrelay_journal_commit_seconds_count") >= 3  # the alert and two steps
        assert sample(text, "pinkrelay_journal_requests_total") >= 3
        assert sample(text, "pinkrelay_refusals_total", reason="authentication") == 0
        assert 'pinkrelay_info{core="' in text
        if relay.data_plane is not None:  # the compiled threads carried the media, and say so
            assert sample(text, "pinkrelay_data_plane_messages_total") == sent
            assert sample(text, "pinkrelay_data_plane_writes_total") >= 1
        else:
            assert "pinkrelay_data_plane_messages_total" not in text
        nursery.cancel_scope.cancel()


@trio_test
async def test_counters_keep_what_ended_sessions_moved(tmp_path, clip):
    button_id = button_ids(1)[0]
    async with running_relay(tmp_path) as relay, trio.open_nursery() as nursery:
        ops = await nursery.start(serve_metrics, relay, "127.0.0.1:0")
        async with trio.open_nursery() as session:
            button = button_client(relay, button_id, [clip.video.to_dict(), clip.audio.to_dict()])
            await session.start(button.run)
            sent = await stream_clip(button, clip, seconds=0.5)
            await wait_until(lambda: sample_sync(relay, "media_messages_in") == sent, what="media at the relay")
            session.cancel_scope.cancel()
        await wait_until(lambda: not relay.sessions_by_button, what="the button to leave")
        text = (await scrape(ops.url)).text
        assert sample(text, "pinkrelay_buttons_connected") == 0
        assert sample(text, "pinkrelay_media_messages_received_total") == sent
        nursery.cancel_scope.cancel()


def sample_sync(relay, key: str) -> int:
    return relay.traffic()[key]


@trio_test
async def test_health_and_readiness(tmp_path):
    async with running_relay(tmp_path) as relay, trio.open_nursery() as nursery:
        ops = await nursery.start(serve_metrics, relay, "127.0.0.1:0")
        health = await scrape(ops.url, "/healthz")
        assert health.status_code == 200 and health.text == "ok\n"
        ready = await scrape(ops.url, "/readyz")
        assert ready.status_code == 200 and ready.json() == {"ready": True, "problems": []}
        assert sample((await scrape(ops.url)).text, "pinkrelay_ready") == 1
        missing = await scrape(ops.url, "/nothing")
        assert missing.status_code == 404 and "/metrics" in missing.text
        async with httpx.AsyncClient() as client:
            refused = await client.post(ops.url + "/metrics")
        assert refused.status_code == 405

        # The journal stops taking writes: not ready, and the reason says why.
        await relay.journal.close()
        await trio.sleep(1.05)  # past the probe's one-second memory
        broken = await scrape(ops.url, "/readyz")
        assert broken.status_code == 503
        problems = broken.json()["problems"]
        assert len(problems) == 1 and problems[0].startswith("the journal cannot be written")
        assert sample((await scrape(ops.url)).text, "pinkrelay_ready") == 0
        assert (await scrape(ops.url, "/healthz")).status_code == 200
        await relay.journal.open()

        relay.stopping = True  # what shutdown() sets first
        stopping = await scrape(ops.url, "/readyz")
        assert stopping.status_code == 503 and "the relay is shutting down" in stopping.json()["problems"]
        relay.stopping = False
        nursery.cancel_scope.cancel()


@trio_test
async def test_a_busy_metrics_port_is_one_clear_error(tmp_path):
    async with running_relay(tmp_path) as relay, trio.open_nursery() as nursery:
        ops = await nursery.start(serve_metrics, relay, "127.0.0.1:0")
        taken = ops.url.rsplit(":", 1)[1]
        with pytest.raises(ConfigError, match=r"cannot listen for metrics on 127\.0\.0\.1:" + taken
                           + r".*--metrics-listen"):
            await nursery.start(serve_metrics, relay, f"127.0.0.1:{taken}")
        nursery.cancel_scope.cancel()


def test_environment_names_the_metrics_address():
    from pinkrelay.config import load_config

    config = load_config(environ={"PINKRELAY_METRICS_LISTEN": "127.0.0.1:9999"})
    assert str(config.metrics_listen) == "127.0.0.1:9999"
    with pytest.raises(ConfigError, match="metrics_listen"):
        load_config(environ={"PINKRELAY_METRICS_LISTEN": "nine"})
