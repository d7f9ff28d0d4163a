"""The relay as a library: a service embeds it with ``open_relay`` and reads its events.

Real relay on 127.0.0.1 with free ports, real ButtonClient and ConsoleClient
over real sockets. The events an embedding service hears are the ones a
dispatch bridge or a wall display needs: who connected, which buttons are
online, every alert and every step taken on it. A reader that falls behind
must never slow the relay, and must never lose an alert without the relay
saying so.
"""

from __future__ import annotations

import logging

import pytest
import trio
from trio.testing import trio_test, wait_all_tasks_blocked

import pinkrelay
from pinkrelay.protocol import Alert, AlertUpdate, ButtonState

from relay_helpers import (
    OPERATOR,
    button_client,
    button_ids,
    console_client,
    make_registry,
    next_of,
    relay_config,
)


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def lines(self, level: int) -> list[str]:
        return [r.getMessage() for r in self.records if r.levelno == level]


@pytest.fixture
def relay_log():
    """The relay's log records, whatever another test did to the 'pinkrelay' logger."""
    logger = logging.getLogger("pinkrelay.relay")
    handler = Records()
    saved = logger.level
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    yield handler
    logger.removeHandler(handler)
    logger.setLevel(saved)


@trio_test
async def test_an_embedding_service_hears_connections_button_states_alerts_and_steps(tmp_path):
    button_id = button_ids(1)[0]
    heard: list = []
    async with pinkrelay.open_relay(relay_config(tmp_path), registry=make_registry(3)) as relay:
        async with trio.open_nursery() as nursery:

            async def listen():
                async for event in relay.events(name="dispatch-bridge"):
                    heard.append(event)

            nursery.start_soon(listen)
            await wait_all_tasks_blocked()  # the reader is registered before anyone connects

            console = console_client(relay)
            await nursery.start(console.run)
            button = button_client(relay, button_id)
            await nursery.start(button.run)
            receipt = await button.press(timeout=5)
            await next_of(console, Alert, where=lambda a: a.alert_id == receipt.alert_id)
            console.update_alert(receipt.alert_id, "acknowledged")
            with trio.fail_after(5):
                while not any(isinstance(e, AlertUpdate) for e in heard):
                    await trio.sleep(0.01)
            nursery.cancel_scope.cancel()

    def index(predicate) -> int:
        found = [i for i, event in enumerate(heard) if predicate(event)]
        assert len(found) == 1, f"expected one such event, got {len(found)} in {heard}"
        return found[0]

    console_in = index(lambda e: isinstance(e, pinkrelay.ClientConnected) and e.role == "console")
    assert heard[console_in].identity == OPERATOR and heard[console_in].peer.startswith("127.0.0.1:")
    button_in = index(lambda e: isinstance(e, pinkrelay.ClientConnected) and e.role == "button")
    assert heard[button_in].identity == button_id
    online = index(lambda e: isinstance(e, ButtonState) and e.button == button_id and e.state == "online")
    assert heard[online].site is not None and heard[online].site.name
    raised = index(lambda e: isinstance(e, Alert))
    alert = heard[raised]
    assert (alert.alert_id, alert.button, alert.state) == (receipt.alert_id, button_id, "raised")
    assert alert.cursor >= 1 and alert.site is not None and alert.received_at > 0
    stepped = index(lambda e: isinstance(e, AlertUpdate))
    update = heard[stepped]
    assert (update.alert_id, update.state, update.operator) == (receipt.alert_id, "acknowledged", OPERATOR)
    assert update.cursor > alert.cursor
    assert max(console_in, button_in, online) < raised < stepped


@trio_test
async def test_a_full_event_stream_loses_events_loudly_and_never_slows_the_relay(tmp_path, relay_log):
    """The reader that stops reading loses the alert, with a warning and an error naming it.

    The relay does not wait for it: the button's acknowledgement and a
    reader that keeps up are unaffected, the alert is in the journal, and
    the stream gets events again as soon as it reads.
    """
    first, second = button_ids(2)
    async with pinkrelay.open_relay(relay_config(tmp_path), registry=make_registry(3)) as relay:
        async with (
            relay.open_event_stream(buffer=2, name="slow-dashboard") as slow,
            relay.open_event_stream(name="dispatch-bridge") as fast,
            trio.open_nursery() as nursery,
        ):
            button = button_client(relay, first)
            await nursery.start(button.run)  # ButtonState online + ClientConnected: slow is full
            receipt = await button.press(timeout=5)
            assert receipt.latency_ms < 1000
            stored = await relay.journal.get(receipt.alert_id)

            fast_items = [fast.receive_nowait() for _ in range(3)]
            slow_items = [slow.receive_nowait() for _ in range(2)]
            with pytest.raises(trio.WouldBlock):
                slow.receive_nowait()
            assert relay.event_drops == {"slow-dashboard": 1}
            assert relay.counters["dropped_events"] == 1

            other = button_client(relay, second)
            await nursery.start(other.run)  # the slow stream has room again
            with trio.fail_after(5):
                resumed = await slow.receive()
            nursery.cancel_scope.cancel()

    assert stored is not None and stored.button == first
    assert [type(item) for item in fast_items] == [ButtonState, pinkrelay.ClientConnected, Alert]
    assert fast_items[2].alert_id == receipt.alert_id
    assert {type(item) for item in slow_items} == {ButtonState, pinkrelay.ClientConnected}
    assert isinstance(resumed, ButtonState) and resumed.button == second

    warnings = relay_log.lines(logging.WARNING)
    assert any(line.startswith("slow-dashboard has 2 unread events: dropping") for line in warnings), warnings
    errors = relay_log.lines(logging.ERROR)
    assert [line for line in errors if "slow-dashboard" in line] == [
        f"slow-dashboard missed alert {receipt.alert_id} from button {first}: it has 2 unread "
        "events (1 dropped since it fell behind)"
    ]
    assert any(
        line.startswith("slow-dashboard reads events again; it missed 1 events, 1 of them alerts")
        for line in warnings
    ), warnings
    assert not any("dispatch-bridge" in r.getMessage() for r in relay_log.records)


@trio_test
async def test_a_reader_that_closes_its_channel_early_does_not_break_the_relay(tmp_path):
    async with pinkrelay.open_relay(relay_config(tmp_path), registry=make_registry(3)) as relay:
        async with relay.open_event_stream(name="closed-early") as events, trio.open_nursery() as nursery:
            await events.aclose()
            button = button_client(relay, button_ids(1)[0])
            await nursery.start(button.run)
            receipt = await button.press(timeout=5)
            nursery.cancel_scope.cancel()
    assert not receipt.duplicate and receipt.latency_ms < 1000
