"""Webhook sink end to end: the real relay, a real button and console, a real HTTP receiver."""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

import pytest
import trio
from trio.testing import trio_test

from pinkrelay.config import load_config
from pinkrelay.errors import ConfigError
from pinkrelay.integrations.settings import WebhookConfig
from pinkrelay.ops import RelayMetrics

from relay_helpers import button_client, button_ids, running_relay, wait_until
from webhook_peer import WebhookPeer, press_acknowledge_resolve

SECRET = b"webhook-secret-for-tests-0123456789"


def webhook(name: str, url: str, **changes: object) -> WebhookConfig:
    settings = {"retry_min": 0.05, "retry_max": 0.2, "timeout": 2.0, **changes}
    return WebhookConfig(name=name, kind="webhook", url=url, secret=SECRET, **settings)


@trio_test
async def test_three_500s_then_200_each_step_stored_once_in_order_with_valid_signatures(tmp_path):
    with WebhookPeer(SECRET, script=[500, 500, 500]) as peer:
        async with running_relay(tmp_path, sinks=(webhook("control-room", peer.url),)) as relay, \
                trio.open_nursery() as nursery:
            receipt = await press_acknowledge_resolve(relay, nursery, peer)
            await trio.sleep(0.3)  # a duplicate would arrive within the backoff
            status = relay.integrations.statuses()[0]
            nursery.cancel_scope.cancel()
    assert peer.bad_signatures == 0
    assert [r["status"] for r in peer.requests][:3] == [500, 500, 500]
    assert len(peer.requests) == 6, peer.requests  # 3 failures, then each of the 3 steps once
    assert peer.states() == ["raised", "acknowledged", "resolved"]
    keys = peer.stored_order
    assert all(key.startswith(receipt.alert_id + ":") for key in keys)
    assert len(set(keys)) == 3 and [r["key"] for r in peer.requests[:4]] == [keys[0]] * 4
    raised = peer.stored[keys[0]]
    assert raised["alert"]["button"] == button_ids(1)[0]
    assert raised["alert"]["site"]["name"] == "Qissa Khwani Bazaar #1"
    assert raised["step"]["kind"] == "raised" and raised["idempotency_key"] == keys[0]
    assert peer.stored[keys[1]]["step"]["operator"] == "desk-1"
    assert status["delivered"] == 3 and status["failed"] == 3 and status["pending"] == 0
    assert "HTTP 500" in status["last_error"]


@trio_test
async def test_retry_after_is_honoured(tmp_path):
    with WebhookPeer(SECRET, script=[503], headers={"Retry-After": "1"}) as peer:
        async with running_relay(tmp_path, sinks=(webhook("hook", peer.url),)) as relay, \
                trio.open_nursery() as nursery:
            button = button_client(relay, button_ids(1)[0])
            await nursery.start(button.run)
            await button.press(timeout=5)
            await wait_until(lambda: len(peer.stored) == 1, timeout=10)
            nursery.cancel_scope.cancel()
    first, second = peer.requests[0], peer.requests[1]
    assert first["status"] == 503 and second["status"] == 200
    assert second["at"] - first["at"] >= 0.95  # retry_min is 0.05 s: only Retry-After explains the wait


@trio_test
async def test_a_hanging_webhook_fails_clearly_and_slows_neither_alerts_nor_the_other_sink(tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger="pinkrelay.integrations")
    with WebhookPeer(SECRET, hang=True) as hanging, WebhookPeer(SECRET) as healthy:
        sinks = (webhook("hanging", hanging.url, timeout=0.5), webhook("healthy", healthy.url))
        async with running_relay(tmp_path, sinks=sinks) as relay, trio.open_nursery() as nursery:
            button = button_client(relay, button_ids(1)[0])
            await nursery.start(button.run)
            started = trio.current_time()
            for _ in range(3):
                await button.press(timeout=5)
            pressing = trio.current_time() - started
            await wait_until(lambda: len(healthy.stored) == 3, timeout=10)
            await wait_until(lambda: relay.integrations.status["hanging"].failed >= 2, timeout=10)
            hanging_status = relay.integrations.status["hanging"]
            metrics = list(relay.integrations.collect())
            exposition = RelayMetrics(relay).exposition().decode()
            nursery.cancel_scope.cancel()
    assert pressing < 1.0
    assert hanging_status.delivered == 0 and hanging_status.pending == 3
    assert "did not answer within 0.5 s" in hanging_status.last_error
    assert any("sink hanging: delivery of" in r.getMessage() and "did not answer" in r.getMessage()
               for r in caplog.records)
    failed = {s.labels["sink"]: s.value for s in metrics[0].samples if s.labels["outcome"] == "failed"}
    assert failed["hanging"] >= 2 and failed["healthy"] == 0
    assert 'pinkrelay_sink_deliveries_total{kind="webhook",outcome="delivered",sink="healthy"} 3.0' in exposition
    assert 'pinkrelay_sink_pending{kind="webhook",sink="hanging"} 3.0' in exposition


@trio_test
async def test_steps_stored_while_the_receiver_is_down_arrive_after_a_restart(tmp_path):
    with WebhookPeer(SECRET) as peer:
        port = peer.server.server_address[1]
    down_url = f"http://127.0.0.1:{port}/hook"  # nothing listens there now
    async with running_relay(tmp_path, sinks=(webhook("hook", down_url),)) as relay, \
            trio.open_nursery() as nursery:
        button = button_client(relay, button_ids(1)[0])
        await nursery.start(button.run)
        receipt = await button.press(timeout=5)
        await wait_until(lambda: relay.integrations.status["hook"].failed >= 1, timeout=10)
        nursery.cancel_scope.cancel()
    with WebhookPeer(SECRET) as peer:
        async with running_relay(tmp_path, sinks=(webhook("hook", peer.url),)):
            await wait_until(lambda: len(peer.stored) == 1, timeout=10)
    assert peer.stored_order[0].startswith(receipt.alert_id + ":")
    assert peer.states() == ["raised"]


def test_sinks_from_a_config_file_and_clear_errors(tmp_path: Path):
    secret = tmp_path / "hook.secret"
    secret.write_bytes(SECRET + b"\n")
    config = tmp_path / "relay.toml"
    config.write_text(
        f'[[sinks]]\nname = "cad"\nkind = "webhook"\nurl = "https://cad.example/hook"\n'
        f'secret_file = "{secret}"\nretry_max = 30\n'
    )
    (sink,) = load_config(config, environ={}).sinks
    assert isinstance(sink, WebhookConfig) and sink.secret == SECRET and sink.retry_max == 30.0
    config.write_text(f'[[sinks]]\nname = "cad"\nkind = "webhook"\nurl = "https://x/"\nsecret_file = "{secret}"\n'
                      "retries = 3\n")
    with pytest.raises(ConfigError, match="sink 1: unknown key.*retries"):
        load_config(config, environ={})
    config.write_text('[[sinks]]\nname = "cad"\nkind = "webhook"\nurl = "https://x/"\nsecret_file = "/nonexistent"\n')
    with pytest.raises(ConfigError, match="secret_file /nonexistent cannot be read"):
        load_config(config, environ={})
    config.write_text('[[sinks]]\nname = "cad"\nkind = "pager"\n')
    with pytest.raises(ConfigError, match="kind 'pager' is not one of webhook, cap, dc09"):
        load_config(config, environ={})
    with pytest.raises(ConfigError, match="sinks are set as"):
        load_config(None, environ={"PINKRELAY_SINKS": "x"})


@trio_test
async def test_an_outbox_that_cannot_be_read_pauses_the_sink_not_the_relay(tmp_path, caplog):
    caplog.set_level(logging.ERROR, logger="pinkrelay.integrations")
    with WebhookPeer(SECRET) as peer:
        async with running_relay(tmp_path, sinks=(webhook("hook", peer.url),)) as relay, \
                trio.open_nursery() as nursery:
            relay.integrations._poll_interval = 0.2
            with sqlite3.connect(tmp_path / "journal.sqlite3") as conn:  # storage trouble only the outbox sees
                conn.execute("ALTER TABLE outbox RENAME TO outbox_moved")
            await wait_until(lambda: relay.integrations.status["hook"].failing, timeout=10)
            with sqlite3.connect(tmp_path / "journal.sqlite3") as conn:
                conn.execute("ALTER TABLE outbox_moved RENAME TO outbox")
            button = button_client(relay, button_ids(1)[0])
            await nursery.start(button.run)
            await button.press(timeout=5)  # the relay kept running throughout
            await wait_until(lambda: len(peer.stored) == 1, timeout=10)
            nursery.cancel_scope.cancel()
    assert any("the outbox cannot be read or updated" in r.getMessage() and "no such table" in r.getMessage()
               for r in caplog.records)
