"""Who sees an alert: the rooms that answer its button, then the escalation groups, level by level."""

from __future__ import annotations

import pytest
import trio
from trio.testing import trio_test

import pinkrelay
from pinkrelay.alerts.routing import Recipient, Routing, check_groups
from pinkrelay.errors import ConfigError
from pinkrelay.operators import OperatorStore
from pinkrelay.protocol import Alert, AlertUpdate, Error, Site

from relay_helpers import button_client, collect_events, relay_config, secret_for, wait_until

OPERATOR_MAIN = Recipient("operator", "main")
OPERATOR_VWPS = Recipient("operator", "vwps")
SUPERVISOR_NORTH = Recipient("supervisor", "north")
OPERATOR_EAST = Recipient("operator", "east")


def test_rooms_then_groups_level_by_level():
    routing = Routing(("supervisors", "room:vwps"))
    seen = {
        who: [routing.sees(who, ("main",), level) for level in range(4)]
        for who in (OPERATOR_MAIN, SUPERVISOR_NORTH, OPERATOR_VWPS, OPERATOR_EAST)
    }
    assert seen == {
        OPERATOR_MAIN: [True, True, True, True],
        SUPERVISOR_NORTH: [False, True, True, True],
        OPERATOR_VWPS: [False, False, True, True],
        OPERATOR_EAST: [False, False, False, False],  # levels beyond the list add nobody
    }
    assert routing.newly_sees(SUPERVISOR_NORTH, ("main",), 1)
    assert not routing.newly_sees(SUPERVISOR_NORTH, ("main",), 2)
    assert not routing.newly_sees(OPERATOR_MAIN, ("main",), 1)
    assert Routing(("all",)).sees(OPERATOR_EAST, ("main",), 1)
    assert Routing(()).sees(OPERATOR_VWPS, ("main", "vwps"), 0)


def test_escalation_groups_are_checked():
    assert check_groups(["supervisors", "all", "room:vwps-peshawar"]) == ("supervisors", "all", "room:vwps-peshawar")
    for bad in ("boss", "room:", "room:Big Room", "ROOM:x"):
        with pytest.raises(ConfigError, match="escalation group"):
            check_groups([bad])
    with pytest.raises(ConfigError, match="escalation_groups"):
        pinkrelay.RelayConfig(escalation_groups="supervisors")


def _registry() -> pinkrelay.Registry:
    def button(button_id: str, rooms: tuple[str, ...]) -> pinkrelay.Button:
        return pinkrelay.Button(button_id=button_id, secret=secret_for(button_id), control_rooms=rooms,
                                site=Site(name=f"site of {button_id}", kind="market", latitude=34.0, longitude=71.5))

    return pinkrelay.Registry([button("kp-main-001", ("main",)), button("kp-south-001", ("south",))])


@trio_test
async def test_an_alert_reaches_its_room_then_supervisors_then_a_second_room(tmp_path):
    store = OperatorStore.in_data_dir(tmp_path)
    secrets = {
        "ops-main": store.add("ops-main", "operator", room="main"),
        "sup-north": store.add("sup-north", "supervisor", room="north"),
        "ops-vwps": store.add("ops-vwps", "operator", room="vwps"),
        "ops-east": store.add("ops-east", "operator", room="east"),
    }
    config = relay_config(tmp_path, escalation_levels=(0.5, 1.0), escalation_groups=("supervisors", "room:vwps"))
    async with pinkrelay.open_relay(config, registry=_registry()) as relay, trio.open_nursery() as nursery:
        consoles, seen = {}, {}
        for name in ("ops-main", "sup-north", "ops-vwps", "ops-east"):
            consoles[name] = pinkrelay.ConsoleClient(relay.consoles_address, name, secrets[name].encode())
            seen[name] = []
            await nursery.start(consoles[name].run)
            nursery.start_soon(collect_events, consoles[name], seen[name])
        button = button_client(relay, "kp-main-001")
        await nursery.start(button.run)
        receipt = await button.press(timeout=5)

        def mine(name: str) -> list:
            return [(type(e).__name__, e.level) for e in seen[name]
                    if isinstance(e, (Alert, AlertUpdate)) and e.alert_id == receipt.alert_id]

        await wait_until(lambda: mine("ops-main"))
        assert mine("ops-main") == [("Alert", 0)]
        await trio.sleep(0.2)
        assert mine("sup-north") == mine("ops-vwps") == []
        # Level 1 brings it to every supervisor: the alert itself, then the escalation step.
        await wait_until(lambda: len(mine("sup-north")) == 2)
        assert mine("sup-north") == [("Alert", 1), ("AlertUpdate", 1)]
        assert mine("ops-vwps") == []
        # Level 2 to the second room; the supervisor and the alert's own room get the step only.
        await wait_until(lambda: len(mine("ops-vwps")) == 2)
        assert mine("ops-vwps") == [("Alert", 2), ("AlertUpdate", 2)]
        assert mine("ops-main") == [("Alert", 0), ("AlertUpdate", 1), ("AlertUpdate", 2)]
        assert mine("sup-north") == [("Alert", 1), ("AlertUpdate", 1), ("AlertUpdate", 2)]
        assert mine("ops-east") == []

        # The second room may act on it now; a room that never saw it may not.
        consoles["ops-east"].update_alert(receipt.alert_id, "acknowledged")
        await wait_until(lambda: any(isinstance(e, Error) for e in seen["ops-east"]))
        refusal = next(e for e in seen["ops-east"] if isinstance(e, Error))
        assert "not by room 'east'" in refusal.message and not refusal.fatal
        consoles["ops-vwps"].update_alert(receipt.alert_id, "acknowledged")
        await wait_until(lambda: ("AlertUpdate", 2) in mine("ops-main")[3:])
        acknowledged = [e for e in seen["ops-main"] if isinstance(e, AlertUpdate) and e.state == "acknowledged"]
        assert acknowledged[0].operator == "ops-vwps"

        # A console that signs in later gets the open alert only if its room sees it.
        late = {}
        for name in ("ops-vwps", "ops-east"):
            client = pinkrelay.ConsoleClient(relay.consoles_address, name, secrets[name].encode())
            late[name] = []
            await nursery.start(client.run)
            nursery.start_soon(collect_events, client, late[name])
        await wait_until(lambda: any(isinstance(e, Alert) for e in late["ops-vwps"]))
        await trio.sleep(0.2)
        assert not any(isinstance(e, Alert) for e in late["ops-east"])
        nursery.cancel_scope.cancel()


@trio_test
async def test_a_button_only_another_room_answers_is_not_shown_and_cannot_be_worked(tmp_path):
    store = OperatorStore.in_data_dir(tmp_path)
    secret = store.add("ops-main", "operator", room="main")
    config = relay_config(tmp_path, escalation_levels=(60.0,))
    async with pinkrelay.open_relay(config, registry=_registry()) as relay, trio.open_nursery() as nursery:
        console = pinkrelay.ConsoleClient(relay.consoles_address, "ops-main", secret.encode())
        seen: list = []
        await nursery.start(console.run)
        nursery.start_soon(collect_events, console, seen)
        south = button_client(relay, "kp-south-001")
        await nursery.start(south.run)
        receipt = await south.press(timeout=5)  # stored and acknowledged to the button all the same
        assert (await relay.journal.get(receipt.alert_id)).button == "kp-south-001"
        await trio.sleep(0.3)
        assert not [e for e in seen if isinstance(e, Alert)]
        console.update_alert(receipt.alert_id, "acknowledged")
        await wait_until(lambda: any(isinstance(e, Error) for e in seen))
        assert "answered by south" in next(e for e in seen if isinstance(e, Error)).message
        nursery.cancel_scope.cancel()
