"""Operator accounts: stored as hashes, SCRAM sign-in, disabling takes effect at once."""

from __future__ import annotations

import json
import subprocess
import sys

import trio
from trio.testing import trio_test

import pinkrelay
from pinkrelay.operators import OperatorStore
from pinkrelay.protocol import Alert, AlertUpdate, Error

from relay_helpers import button_client, button_ids, make_registry


def _config(tmp_path):
    return pinkrelay.RelayConfig(
        buttons_listen=pinkrelay.Address("127.0.0.1", 0),
        consoles_listen=pinkrelay.Address("127.0.0.1", 0),
        data_dir=tmp_path,
        escalation_levels=(60.0,),
    )


def test_the_store_keeps_no_secret(tmp_path):
    store = OperatorStore.in_data_dir(tmp_path)
    secret = store.add("sana.k", "supervisor")
    text = store.path.read_text()
    assert secret not in text
    entry = json.loads(text)["operators"]["sana.k"]
    assert entry["role"] == "supervisor" and entry["disabled"] is False
    assert entry["n"] >= 2**14 and len(bytes.fromhex(entry["stored_key"])) == 32
    assert oct(store.path.stat().st_mode & 0o777) == "0o600"


def test_first_start_creates_a_supervisor_whose_secret_only_the_local_console_file_holds(tmp_path):
    relay = pinkrelay.Relay(_config(tmp_path), registry=make_registry(1))
    secret = (tmp_path / "console-token").read_text().strip()
    assert relay.operators.get("duty-officer").role == "supervisor"
    assert secret not in (tmp_path / "operators.json").read_text()
    assert oct((tmp_path / "console-token").stat().st_mode & 0o777) == "0o600"


@trio_test
async def test_accounts_sign_in_roles_are_enforced_and_disabling_is_immediate(tmp_path):
    store = OperatorStore.in_data_dir(tmp_path)
    operator_secret = store.add("ayesha", "operator")
    supervisor_secret = store.add("farah", "supervisor")
    async with pinkrelay.open_relay(_config(tmp_path), registry=make_registry(2)) as relay:
        async with trio.open_nursery() as nursery:
            # Wrong secret, unknown name: refused with the same public reason.
            for name, secret in (("ayesha", "not-her-secret"), ("nobody", "whatever")):
                stranger = pinkrelay.ConsoleClient(relay.consoles_address, name, secret.encode(), reconnect=False)
                try:
                    await stranger.run()
                except pinkrelay.ConnectionRefused as refused:
                    assert refused.code == "auth" and "authentication failed" in str(refused)
                else:
                    raise AssertionError(f"{name} was let in")

            operator = pinkrelay.ConsoleClient(relay.consoles_address, "ayesha", operator_secret.encode())
            supervisor = pinkrelay.ConsoleClient(relay.consoles_address, "farah", supervisor_secret.encode())
            await nursery.start(operator.run)
            await nursery.start(supervisor.run)
            button = button_client(relay, button_ids(1)[0])
            await nursery.start(button.run)
            receipt = await button.press(timeout=5)

            async def next_of(console, kind):
                with trio.fail_after(5):
                    async for event in console.events():
                        if isinstance(event, kind):
                            return event

            await next_of(operator, Alert)
            operator.update_alert(receipt.alert_id, "false_alarm")
            refusal = await next_of(operator, Error)
            assert "needs a supervisor" in refusal.message and not refusal.fatal
            await next_of(supervisor, Alert)
            supervisor.update_alert(receipt.alert_id, "false_alarm")
            update = await next_of(supervisor, AlertUpdate)
            assert (update.state, update.operator) == ("false_alarm", "farah")

            started = trio.current_time()
            store.set_disabled("ayesha")
            with trio.fail_after(5):
                async for event in operator.events():
                    if isinstance(event, pinkrelay.Disconnected):
                        break
            assert trio.current_time() - started < 3
            assert "disabled" in event.reason
            nursery.cancel_scope.cancel()


def test_operators_command_adds_lists_and_disables(tmp_path):
    def run(*args):
        return subprocess.run([sys.executable, "-m", "pinkrelay", "operators", "--data-dir", str(tmp_path), *args],
                              capture_output=True, text=True, timeout=60)

    added = run("add", "rabia", "--role", "supervisor")
    assert added.returncode == 0 and "secret (shown once" in added.stdout
    secret = added.stdout.strip().rsplit(" ", 1)[-1]
    assert secret not in (tmp_path / "operators.json").read_text()
    again = run("add", "rabia")
    assert again.returncode == 2 and "already exists" in again.stderr
    assert run("disable", "rabia").returncode == 0
    listing = run("list", "--json")
    assert json.loads(listing.stdout.splitlines()[0])["disabled"] is True
    bad = run("add", "Bad Name!")
    assert bad.returncode == 2 and "operator name" in bad.stderr
