"""Test mode for maintenance: a press is journalled as a test and pages nobody.

A real relay with two real sinks (a CAP receiver and a webhook receiver,
tests/webhook_peer.py), a real console, real buttons over loopback, and the
web room's API. The mode is set with ``pinkrelay button-mode`` (which waits
for the running relay to apply it) and by a supervisor in the web room; an
operator's attempt is refused. The console, the web board and the webhook
must see nothing of a test press; the CAP receiver gets it with status Test.
"""

from __future__ import annotations

import getpass
import os
import sqlite3
from functools import partial
from pathlib import Path

import httpx
import pytest
import trio
from lxml import etree
from trio.testing import trio_test

import pinkrelay
from pinkrelay.button_modes import ButtonModes
from pinkrelay.cli import main
from pinkrelay.integrations.settings import WebhookConfig
from pinkrelay.operators import OperatorStore
from pinkrelay.protocol import Alert
from pinkrelay.registry import load_registry
from pinkrelay.web import serve_web

from relay_helpers import button_client, console_client, post_sign_in, relay_config, secret_for, wait_until
from webhook_peer import WebhookPeer

pytestmark = pytest.mark.core_independent

SECRET = b"test-mode-sink-secret-0123456789"
NS = {"cap": "urn:oasis:names:tc:emergency:cap:1.2"}
BUTTONS = ("kp-test-001", "kp-test-002", "kp-test-003")


def write_registry(data_dir: Path) -> Path:
    rows = ["id,secret,site_name,latitude,longitude"]
    rows += [f"{b},{secret_for(b).decode()},Site of {b},34.0,71.5" for b in BUTTONS]
    path = data_dir / "registry.csv"
    path.write_text("\n".join(rows) + "\n")
    return path


def journal_rows(data_dir: Path, sql: str, *args: object) -> list[tuple]:
    with sqlite3.connect(data_dir / "journal.sqlite3") as conn:
        return conn.execute(sql, args).fetchall()


def button_mode(*argv: str) -> int:
    return main(["button-mode", *argv])


@trio_test
async def test_a_press_in_test_mode_is_journalled_as_a_test_and_pages_nobody(tmp_path, capsys):
    write_registry(tmp_path)
    store = OperatorStore.in_data_dir(tmp_path)
    store.add("asma", "operator", secret="asma-secret-for-tests-1")
    store.add("sana", "supervisor", secret="sana-secret-for-tests-1")
    with WebhookPeer(SECRET) as cap_peer, WebhookPeer(SECRET) as hook_peer:
        sinks = (WebhookConfig(name="warning", kind="cap", url=cap_peer.url, secret=SECRET, retry_min=0.05),
                 WebhookConfig(name="cad", kind="webhook", url=hook_peer.url, secret=SECRET, retry_min=0.05))
        config = relay_config(tmp_path, sinks=sinks, escalation_levels=(0.3,))
        async with pinkrelay.open_relay(config, registry=load_registry(tmp_path / "registry.csv")) as relay, \
                trio.open_nursery() as nursery:
            (tmp_path / "relay.pid").write_text(f"{os.getpid()}\n")  # as pinkrelay serve does
            room = await nursery.start(partial(serve_web, relay, pinkrelay.Address("127.0.0.1", 0)))
            console = console_client(relay)
            await nursery.start(console.run)
            seen: list[object] = []

            async def collect() -> None:
                async for event in console.events():
                    seen.append(event)

            nursery.start_soon(collect)
            buttons = {}
            for button_id in BUTTONS:
                buttons[button_id] = button_client(relay, button_id)
                await nursery.start(buttons[button_id].run)

            # The command waits until the running relay has applied the mode.
            code = await trio.to_thread.run_sync(button_mode, "test", "kp-test-001", "--data-dir", str(tmp_path),
                                                 "--note", "battery change")
            out = capsys.readouterr().out
            assert code == 0, out
            assert out.startswith("OK: button kp-test-001 is in test mode: its presses page nobody (relay ")
            test_press = await buttons["kp-test-001"].press(timeout=5)
            assert not test_press.duplicate, "acknowledged to the button like any press"
            await wait_until(lambda: len(cap_peer.stored) == 1, timeout=10, what="the CAP receiver's test")
            cap = etree.fromstring(cap_peer.stored[cap_peer.stored_order[0]])
            assert cap.findtext("cap:status", namespaces=NS) == "Test"
            assert cap.findtext("cap:msgType", namespaces=NS) == "Alert"
            assert cap.findtext("cap:incidents", namespaces=NS) == test_press.alert_id
            # A live press after it reaches everyone; by then the test press would have too.
            live = await buttons["kp-test-002"].press(timeout=5)
            await wait_until(lambda: any(isinstance(e, Alert) and e.alert_id == live.alert_id for e in seen),
                             what="the live alert at the console")
            await wait_until(lambda: len(hook_peer.stored) == 1 and len(cap_peer.stored) == 2, timeout=10,
                             what="the live alert at both sinks")
            assert all(test_press.alert_id not in repr(event) for event in seen), "the console heard nothing"
            assert test_press.alert_id not in repr(hook_peer.stored), "the webhook got nothing"
            await trio.sleep(0.5)  # past the escalation level (0.3 s): a test never escalates
            assert all(test_press.alert_id not in repr(event) for event in seen)
            rows = journal_rows(tmp_path, "SELECT kind, state, operator, outcome, note FROM events WHERE alert_id = ?",
                                test_press.alert_id)
            assert rows == [("test", "false_alarm", "relay", "test", f"test press: button in test mode (set by "
                             f"cli:{getpass.getuser()}: battery change); paged nobody")]
            assert journal_rows(tmp_path, "SELECT state, level FROM alerts WHERE alert_id = ?",
                                test_press.alert_id) == [("false_alarm", 0)]
            assert journal_rows(tmp_path, "SELECT operator, subject, detail FROM audit WHERE action = 'button-mode'") \
                == [(f"cli:{getpass.getuser()}", "kp-test-001", "test; pinkrelay button-mode; battery change")]

            # The web room: a supervisor sets kp-test-003 in test mode; an operator may not; the board has none.
            base = {"base_url": room.url, "timeout": 10.0, "headers": {"origin": room.url.rstrip("/")}}
            async with httpx.AsyncClient(**base) as supervisor, httpx.AsyncClient(**base) as operator:
                assert (await post_sign_in(supervisor, "sana", "sana-secret-for-tests-1")).status_code == 303
                assert (await post_sign_in(operator, "asma", "asma-secret-for-tests-1")).status_code == 303
                csrf = {"x-csrf-token": (await supervisor.get("/api/session")).json()["csrf"]}
                answer = await supervisor.post("/api/buttons/kp-test-003/mode", headers=csrf,
                                               json={"mode": "test", "note": "new siren"})
                assert answer.status_code == 200, answer.text
                op_csrf = {"x-csrf-token": (await operator.get("/api/session")).json()["csrf"]}
                refused = await operator.post("/api/buttons/kp-test-003/mode", headers=op_csrf, json={"mode": "live"})
                assert refused.status_code == 403
                assert refused.json()["error"] == "only a supervisor may change a button's mode; asma signed in as operator"
                bad = await supervisor.post("/api/buttons/kp-test-003/mode", headers=csrf, json={"mode": "off"})
                assert bad.status_code == 400 and "mode must be one of live, test" in bad.json()["error"]
                missing = await supervisor.post("/api/buttons/kp-nope/mode", headers=csrf, json={"mode": "test"})
                assert missing.status_code == 404
                web_test = await buttons["kp-test-003"].press(timeout=5)
                sites = {s["button"]: s["mode"] for s in (await operator.get("/api/sites")).json()["sites"]}
                assert sites == {"kp-test-001": "test", "kp-test-002": "live", "kp-test-003": "test"}
                board = [a["alert_id"] for a in (await operator.get("/api/alerts")).json()["alerts"]]
                assert board == [live.alert_id], "test presses are not on the board"
            assert web_test.alert_id not in repr(seen)
            audit = journal_rows(tmp_path, "SELECT operator, action, subject, detail FROM audit WHERE action LIKE "
                                 "'button-mode%' ORDER BY id")
            assert [row[:3] for row in audit[1:]] == [("sana", "button-mode", "kp-test-003"),
                                                      ("asma", "button-mode-refused", "kp-test-003")]
            assert audit[1][3].startswith("test; web 127.0.0.1:") and audit[1][3].endswith("; new siren")

            # Back to live: the next press is an alert again.
            code = await trio.to_thread.run_sync(button_mode, "live", "kp-test-001", "--data-dir", str(tmp_path))
            assert code == 0 and "is in live mode" in capsys.readouterr().out
            again = await buttons["kp-test-001"].press(timeout=5)
            await wait_until(lambda: any(isinstance(e, Alert) and e.alert_id == again.alert_id for e in seen),
                             what="the alert of the button back in live mode")
            nursery.cancel_scope.cancel()


def test_button_mode_refuses_an_unknown_button_and_works_without_a_relay(tmp_path, capsys):
    write_registry(tmp_path)
    assert button_mode("test", "kp-test-009", "--data-dir", str(tmp_path)) == 2
    err = capsys.readouterr().err
    assert "no button 'kp-test-009' in the registry" in err
    assert not (tmp_path / "button-modes.json").exists()
    assert button_mode("test", "kp-test-002", "--data-dir", str(tmp_path), "--note", "pole repainted") == 0
    assert "no relay runs on" in capsys.readouterr().out
    assert button_mode("list", "--data-dir", str(tmp_path)) == 0
    out = capsys.readouterr().out
    assert out.startswith("kp-test-002  test since ") and out.rstrip().endswith(": pole repainted")
    (tmp_path / "button-modes.json").write_text("{not json")
    assert button_mode("list", "--data-dir", str(tmp_path)) == 2
    assert "is damaged" in capsys.readouterr().err


@trio_test
async def test_a_confirmation_file_that_cannot_be_written_delays_the_confirmation_not_the_relay(tmp_path, caplog):
    """A full or read-only disk must not stop the relay through ``button-modes.applied``."""
    write_registry(tmp_path)
    modes = ButtonModes.in_data_dir(tmp_path)
    modes.applied_path().mkdir()  # writing the confirmation now fails with an OSError, as on a full disk
    async with pinkrelay.open_relay(relay_config(tmp_path), registry=load_registry(tmp_path / "registry.csv")) \
            as relay, trio.open_nursery() as nursery:
        console = console_client(relay)
        await nursery.start(console.run)
        button = button_client(relay, "kp-test-001")
        await nursery.start(button.run)
        revision = modes.set("kp-test-001", "test", set_by="cli:tests", set_at=1)
        unconfirmed = f"revision {revision} is applied but cannot be confirmed"
        await wait_until(lambda: unconfirmed in caplog.text, timeout=5, what="the logged failure")
        assert modes.applied_revision() == -1
        # Applied in memory all the same: the press is a test press, journalled and paging nobody.
        press = await button.press(timeout=5)
        await wait_until(lambda: journal_rows(tmp_path, "SELECT kind FROM events WHERE alert_id = ?",
                                              press.alert_id) == [("test",)], what="the test press journalled")
        modes.applied_path().rmdir()  # the disk is freed: the next poll confirms
        await wait_until(lambda: modes.applied_revision() == revision, timeout=5, what="the late confirmation")
        assert caplog.text.count(unconfirmed) == 1, "logged once per revision, not once per poll"
        nursery.cancel_scope.cancel()
