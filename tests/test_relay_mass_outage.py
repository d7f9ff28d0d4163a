"""An alarm flood: 2,000 buttons of two districts drop at once, the consoles get one alert per district.

A real relay on loopback with short supervision (2 s heartbeats, 4 s
window); 2,000 real button connections handshake from this process, say one
heartbeat together and are closed together. Every console must get one
``mass_outage`` alert per district within the supervision time, no
per-button ``offline`` alert, one escalation per district, and the press of
a button of a third district that stays online arrives as usual. The
grouping rules themselves are tested sans-IO.
"""

from __future__ import annotations

import pytest
import io

import trio
from trio.testing import trio_test

import pinkrelay
from pinkrelay.protocol import Alert, AlertUpdate, Heartbeat, Site
from pinkrelay.cli.common import Output
from pinkrelay.cli.console import ConsoleView
from pinkrelay.relay.outage import OutageGroups
from pinkrelay.web.app import ControlRoom

from relay_helpers import (
    button_client,
    collect_events,
    console_client,
    raw_button,
    raw_session,
    relay_config,
    TOKEN,
    secret_for,
    wait_until,
    wall_us,
)

pytestmark = pytest.mark.core_independent  # grouping alerts; the core mode only moves the bytes

DISTRICTS = ("Peshawar", "Mardan")
PER_DISTRICT = 1000


def test_a_group_opens_past_the_threshold_and_its_members_leave_it_when_back():
    groups = OutageGroups(threshold=3, window=10.0)
    assert [groups.offline(f"b{i}", "d", float(i)) for i in range(3)] == [False, False, False]
    assert groups.offline("b3", "d", 3.0) is True
    outage = groups.open_outage("d", "alert-1", "b3", 3.0)
    assert groups.offline("b4", "d", 4.0) is outage and list(outage.offline) == ["b3", "b4"]
    assert groups.offline("x", "other", 4.0) is False  # another group counts on its own
    assert groups.offline("y", "late", 100.0, silent_too=3) is True  # already silent: grouped at once
    groups.back_online("b3")
    assert "1 of 5 buttons offline; 1 back online: b4" in outage.summary(5)
    assert OutageGroups(threshold=0, window=10.0).offline("b", "d", 0.0) is False


def _registry() -> pinkrelay.Registry:
    buttons = [pinkrelay.Button(button_id="kp-survivor", secret=secret_for("kp-survivor"),
                                site=Site(name="Civil Secretariat", district="Swat"))]
    for district in DISTRICTS:
        for index in range(PER_DISTRICT):
            button_id = f"kp-{district.lower()}-{index:04d}"
            buttons.append(pinkrelay.Button(button_id=button_id, secret=secret_for(button_id),
                                            site=Site(name=f"{district} campus {index // 10}", district=district)))
    return pinkrelay.Registry(buttons)


@trio_test
async def test_two_thousand_buttons_offline_at_once_raise_one_alert_per_district(tmp_path):
    config = relay_config(tmp_path, heartbeat_interval=2.0, supervision_window=4.0, escalation_levels=(3.0,),
                          mass_outage_buttons=20, mass_outage_window=30.0, handshake_rate_per_address=0,
                          max_unauthenticated_per_address=4096)
    registry = _registry()
    doomed = [b for b in registry if b != "kp-survivor"]
    async with pinkrelay.open_relay(config, registry=registry) as relay, trio.open_nursery() as nursery:
        console = console_client(relay)
        await nursery.start(console.run)
        seen: list = []
        nursery.start_soon(collect_events, console, seen)
        # What an operator at 'pinkrelay console' reads, from a second console.
        terminal = io.StringIO()
        view = ConsoleView(console_client(relay, "desk-2", TOKEN + "-2"), Output(False, terminal))
        await nursery.start(view.client.run)
        nursery.start_soon(view.run)
        survivor = button_client(relay, "kp-survivor")
        await nursery.start(survivor.run)

        links: list = []
        alive = trio.CancelScope()

        async def heartbeats() -> None:
            # The relay's supervision is short (4 s) and 2,000 handshakes take longer: keep the early ones alive.
            with alive:
                while True:
                    for conn, stream in list(links):
                        await stream.send_all(conn.send(Heartbeat(sent_at=wall_us()), trio.current_time()))
                    await trio.sleep(0.5)

        nursery.start_soon(heartbeats)

        async def connect(chunk: list[str]) -> None:
            for button_id in chunk:
                conn = raw_button(button_id)
                links.append((conn, await raw_session(relay.buttons_address, conn)))

        with trio.fail_after(60):
            async with trio.open_nursery() as connecting:
                for start in range(0, len(doomed), 100):
                    connecting.start_soon(connect, doomed[start:start + 100])
        await wait_until(lambda: relay.stats()["buttons_online"] == len(doomed) + 1, timeout=10,
                         what="every button online")
        # One heartbeat from all, then the uplink goes: every connection closes at once.
        alive.cancel()
        for conn, stream in links:
            await stream.send_all(conn.send(Heartbeat(sent_at=wall_us()), trio.current_time()))
        for _, stream in links:
            await stream.aclose()
        killed_at = trio.current_time()

        def outages() -> list[Alert]:
            return [e for e in seen if isinstance(e, Alert) and e.kind == "mass_outage"]

        await wait_until(lambda: len(outages()) == len(DISTRICTS), timeout=4.0 + 5.0,
                         what="one mass outage alert per district")
        assert trio.current_time() - killed_at < 4.0 + 5.0
        assert sorted(a.site.district for a in outages()) == sorted(DISTRICTS)
        receipt = await survivor.press(timeout=5)  # a press during the outage arrives as usual
        await wait_until(lambda: any(isinstance(e, Alert) and e.alert_id == receipt.alert_id for e in seen),
                         what="the survivor's press at the console")
        press = next(e for e in seen if isinstance(e, Alert) and e.alert_id == receipt.alert_id)
        assert press.kind == "panic" and press.state == "raised"
        ids = {a.alert_id for a in outages()}

        def summaries() -> list[str]:
            return [e.note for e in seen if isinstance(e, AlertUpdate) and e.alert_id in ids and e.note]

        await wait_until(lambda: sum(f"{PER_DISTRICT} of {PER_DISTRICT} buttons offline" in n
                                     for n in summaries()) >= len(DISTRICTS), timeout=30,
                         what="each district's alert listing all its buttons")
        await wait_until(lambda: sum(isinstance(e, AlertUpdate) and e.level == 1 and e.alert_id in ids
                                     for e in seen) >= 2,
                         timeout=10, what="the escalations")
        await trio.sleep(1.0)  # any stray per-button alert or escalation would arrive meanwhile
        offline = [e for e in seen if isinstance(e, Alert) and e.kind == "offline"]
        assert offline == [], f"{len(offline)} per-button offline alerts reached the console"
        escalations = [e for e in seen if isinstance(e, AlertUpdate) and e.level and e.alert_id != press.alert_id]
        assert sorted(e.alert_id for e in escalations) == sorted(ids)  # once per group
        await wait_until(lambda: relay.stats()["offline_grouped"] == len(doomed), what="every member grouped")
        lines = terminal.getvalue().splitlines()
        assert sum(line.startswith("ALERT  MASS OUTAGE in district ") for line in lines) == len(DISTRICTS)
        assert any(line.startswith(f"OUTAGE mass outage in district Mardan: {PER_DISTRICT} of {PER_DISTRICT}")
                   for line in lines)
        assert not any("button went silent" in line for line in lines)
        assert sum(line.startswith("OFFLINE") for line in lines) < 100, "one line per button offline"
        board = ControlRoom(relay)._alert_json(outages()[0])  # what a web board that loads now shows
        assert f"{PER_DISTRICT} of {PER_DISTRICT} buttons offline" in board["outage"]
        stored = await relay.journal.recent_alerts(0)
        quiet = [a for a in stored if a.kind == "offline"]
        assert len(quiet) <= len(doomed) and all(a.state == "duplicate" and a.duplicate_of in ids for a in quiet)
        nursery.cancel_scope.cancel()
