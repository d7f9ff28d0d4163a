"""The alert bus on a real 3-node JetStream cluster: stored once, ordered, stale steps refused, no loss.

Two stores in one process stand for two relays: each has its own NATS
connection, view and sequence of events, as relays on two machines do.
"""

from __future__ import annotations

import time

import pytest
import trio

from pinkrelay.alerts.journal import JournalError, StaleStep
from pinkrelay.alerts.lifecycle import Step, transition
from pinkrelay.cluster.bus import JetStreamAlertStore
from pinkrelay.ids import uuid7
from pinkrelay.protocol import Alert, AlertUpdate

from nats_helpers import fresh_namespace, nats_cluster, stream_leader  # noqa: F401 (the fixture)

pytestmark = pytest.mark.core_independent


def stores(cluster, count=2, **options):
    namespace = fresh_namespace("bus")
    return [JetStreamAlertStore(cluster.urls, relay=f"relay-{index + 1}", namespace=namespace, **options)
            for index in range(count)]


def press(button="kp-test-001", alert_id=None):
    now = time.time_ns() // 1000
    return Alert(alert_id=alert_id or uuid7(), pressed_at=now, received_at=now, button=button)


def test_a_press_is_stored_once_and_every_relay_sees_it_at_the_same_cursor(nats_cluster):
    async def main():
        first, second = stores(nats_cluster)
        seen = {first: [], second: []}
        for store in (first, second):
            store.on_event = seen[store].append
            await store.open()
        try:
            alert = press()
            stored = await first.record(alert)
            assert not stored.duplicate and stored.alert.cursor >= 1
            again = await second.record(alert)  # the button's retry, through the other relay
            assert again.duplicate and again.alert.cursor == stored.alert.cursor
            retry_same_relay = await first.record(alert)
            assert retry_same_relay.duplicate
            with trio.fail_after(5):
                while len(seen[second]) < 1:
                    await trio.sleep(0.01)
            assert [e.cursor for e in seen[first]] == [e.cursor for e in seen[second]] == [stored.alert.cursor]
            await second.audit(17, "supervisor-1", "registry-reload", "buttons.csv", "2 buttons added")
            # Handshake counters: the last accepted on any relay, never lowered by an older hello.
            await first.save_counter("button", "kp-test-001", 1_000)
            await first.save_counter("console", "relay.relay-2", 5)  # not a plain token: hex in the key
            await second.save_counter("button", "kp-test-001", 999)
            with trio.fail_after(5):
                while second.counter_of("button", "kp-test-001") < 1_000:
                    await trio.sleep(0.01)
            assert first.counter_of("button", "kp-test-001") == 1_000
            with trio.fail_after(5):
                while second.counter_of("console", "relay.relay-2") != 5:
                    await trio.sleep(0.01)
            # A relay started later reads the same history, audit trail included (not told to consoles).
            third = JetStreamAlertStore(nats_cluster.urls, relay="relay-3", namespace=first.subjects.namespace)
            await third.open()
            try:
                assert [a.alert_id for a in await third.open_alerts()] == [alert.alert_id]
                assert [(e.operator, e.action, e.relay) for e in third.view.audit] == [
                    ("supervisor-1", "registry-reload", "relay-2")]
                assert third.counter_of("button", "kp-test-001") == 1_000
                last, open_alerts, missed = await third.snapshot(0)
                assert last == stored.alert.cursor + 1 and missed == []  # the audit entry is the last record
            finally:
                await third.close()
        finally:
            for store in (first, second):
                await store.close()

    trio.run(main)


def test_two_relays_acting_on_one_alert_at_once_cannot_both_win(nats_cluster):
    async def main():
        first, second = stores(nats_cluster)
        for store in (first, second):
            await store.open()
        try:
            alert = (await first.record(press())).alert
            with trio.fail_after(5):
                while await second.get(alert.alert_id) is None:
                    await trio.sleep(0.01)
            # Every relay escalates every alert: a level the stream has already is not recorded again.
            escalation = Step(alert_id=alert.alert_id, previous="raised", state="raised", operator="relay",
                              console="", at=1, note="escalated to level 1")
            assert (await first.apply(escalation, level=1)).level == 1
            with trio.fail_after(5):
                while (await second.get(alert.alert_id)).level != 1:
                    await trio.sleep(0.01)
            with pytest.raises(StaleStep, match="at escalation level 1 already"):
                await second.apply(escalation, level=1)
            outcomes = []

            async def acknowledge(store, operator):
                step = transition(alert.alert_id, "raised", "acknowledged", operator=operator, at=1)
                try:
                    outcomes.append(await store.apply(step))
                except StaleStep as error:
                    outcomes.append(error)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(acknowledge, first, "desk-1")
                nursery.start_soon(acknowledge, second, "desk-2")
            won = [o for o in outcomes if isinstance(o, AlertUpdate)]
            lost = [o for o in outcomes if isinstance(o, StaleStep)]
            assert len(won) == 1 and len(lost) == 1, outcomes
            with trio.fail_after(5):  # each relay reads the winner's step from the stream
                while {(await store.get(alert.alert_id)).state for store in (first, second)} != {"acknowledged"}:
                    await trio.sleep(0.01)
            # A step from a state that is no longer true is refused before anything is sent.
            with pytest.raises(StaleStep, match="changed to acknowledged"):
                await second.apply(transition(alert.alert_id, "raised", "acknowledged", operator="x", at=2))
        finally:
            for store in (first, second):
                await store.close()

    trio.run(main)


def test_kill_9_of_a_nats_node_during_presses_loses_no_acknowledged_alert(nats_cluster):
    """Presses go on while one node dies; every acknowledged press is on the stream exactly once."""

    async def main():
        (store,) = stores(nats_cluster, count=1, publish_timeout=2.0)
        await store.open()
        acknowledged: list[str] = []
        latencies: list[float] = []
        failures = 0
        try:
            async def presser(index):
                nonlocal failures
                for _ in range(20):
                    alert = press(button=f"kp-test-{index:03d}")
                    started = trio.current_time()
                    while True:  # what a button does: the same alert id until acknowledged
                        try:
                            await store.record(alert)
                        except JournalError:
                            failures += 1
                            await trio.sleep(0.2)
                            continue
                        break
                    latencies.append(trio.current_time() - started)
                    acknowledged.append(alert.alert_id)
                    await trio.sleep(0.01)

            leader = nats_cluster.node(await stream_leader(store))

            async def killer():
                await trio.sleep(0.1)
                leader.kill()  # the stream's leader: its death costs an election

            with trio.fail_after(40):
                async with trio.open_nursery() as nursery:
                    for index in range(1, 6):
                        nursery.start_soon(presser, index)
                    nursery.start_soon(killer)
        finally:
            await store.close()
        # Read back what the cluster holds, through a fresh connection.
        alive = [node.url for node in nats_cluster.nodes if node.process is not None]
        reader = JetStreamAlertStore(alive, relay="reader", namespace=store.subjects.namespace)
        await reader.open()
        try:
            stored = [a.alert_id for a in await reader.events_since(0) if isinstance(a, Alert)]
        finally:
            await reader.close()
        assert len(acknowledged) == 100
        assert sorted(stored) == sorted(acknowledged) and len(set(stored)) == len(stored)
        latencies.sort()
        p99 = latencies[int(len(latencies) * 0.99) - 1]
        print(f"\n100 presses across kill -9 of a NATS node: p50 {latencies[50] * 1000:.1f} ms, "
              f"p99 {p99 * 1000:.1f} ms, max {latencies[-1] * 1000:.1f} ms, {failures} publishes unacknowledged")

    try:
        trio.run(main)
    finally:
        nats_cluster.restart_stopped()


def test_a_record_that_is_not_ours_on_the_stream_is_skipped_and_said(nats_cluster, caplog):
    """Garbage (or a newer version's record) published on the alert subjects stops nothing."""

    async def main():
        (store,) = stores(nats_cluster, count=1)
        seen = []
        store.on_event = seen.append
        await store.open()
        try:
            js = store.jetstream
            for body in (b"\xc1 not msgpack", b"\x81\xa1k\xa6future", b"\x80"):
                await store.nats.call(js.publish, store.subjects.alert("x"), body)
            alert = (await store.record(press())).alert
            assert [e.alert_id for e in seen] == [alert.alert_id]
            assert store.bad_records == 3 and alert.cursor == 4
        finally:
            await store.close()

    trio.run(main)
    problems = [r.getMessage() for r in caplog.records if "not a pinkrelay record" in r.getMessage()
                or "unknown record kind" in r.getMessage()]
    assert len(problems) == 3 and "skipped" in problems[0] and "stream sequence 1" in problems[0]
