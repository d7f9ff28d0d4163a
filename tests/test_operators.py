"""Operator accounts: stored as hashes, SCRAM sign-in, disabling takes effect at once."""

from __future__ import annotations

import json
import subprocess
import sys

import trio
from trio.testing import trio_test

import pinkrelay
from pinkrelay.cli import main
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
    secret = (tmp_path / "duty-officer.secret").read_text().strip()
    assert relay.operators.get("duty-officer").role == "supervisor"
    assert secret not in (tmp_path / "operators.json").read_text()
    assert oct((tmp_path / "duty-officer.secret").stat().st_mode & 0o777) == "0o600"
    assert not (tmp_path / "console-token").exists()


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
            supervisor.update_alert(receipt.alert_id, "false_alarm", outcome="false", category="accidental")
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


async def _sign_in(relay, name: str, secret: str) -> pinkrelay.ConnectionRefused | None:
    """One sign-in attempt without reconnecting: the refusal, or None if the relay welcomed it."""
    console = pinkrelay.ConsoleClient(relay.consoles_address, name, secret.encode(), reconnect=False)
    outcome: list[pinkrelay.ConnectionRefused | None] = []

    async def attempt() -> None:
        try:
            await console.run()
        except pinkrelay.ConnectionRefused as refused:
            outcome.append(refused)

    async def welcomed() -> None:
        await console.connected.wait()
        outcome.append(None)

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(attempt)
            nursery.start_soon(welcomed)
            while not outcome:
                await trio.sleep(0.01)
            nursery.cancel_scope.cancel()
    return outcome[0]


@trio_test
async def test_a_disabled_account_is_refused_at_sign_in_not_only_disconnected_later(tmp_path, caplog):
    store = OperatorStore.in_data_dir(tmp_path)
    hina_secret = store.add("hina", "operator")
    sadia_secret = store.add("sadia", "supervisor", room="vwps-peshawar")
    store.set_disabled("hina")
    async with pinkrelay.open_relay(_config(tmp_path), registry=make_registry(1)) as relay:
        # Disabled before the relay started: the right secret is not enough.
        refused = await _sign_in(relay, "hina", hina_secret)
        assert refused is not None, "a disabled account was let in"
        assert refused.code == "auth" and "authentication failed" in str(refused)
        assert "operator 'hina' is disabled" in caplog.text, "the log must say why, the client is told less"
        assert not [c for c in relay.consoles if c.identity == "hina"]
        assert relay.counters["auth_failures"] == 1

        assert await _sign_in(relay, "sadia", sadia_secret) is None, "an active account must get in"
        # Disabled while the relay runs: the very next sign-in is refused, without waiting for the
        # relay's periodic look at the operators file.
        store.set_disabled("sadia")
        refused = await _sign_in(relay, "sadia", sadia_secret)
        assert refused is not None and refused.code == "auth", "signed in with an account disabled just before"
        assert "operator 'sadia' is disabled" in caplog.text
        store.set_disabled("sadia", False)
        assert await _sign_in(relay, "sadia", sadia_secret) is None, "enabled again, she gets in again"


def test_operators_list_shows_each_accounts_room(tmp_path, capsys):
    def operators(*args: str) -> str:
        assert main(["operators", "--data-dir", str(tmp_path), *args]) == 0
        return capsys.readouterr().out

    added = operators("add", "rabia", "--role", "supervisor", "--room", "vwps-peshawar")
    assert added.startswith("operator rabia (supervisor, room vwps-peshawar) created in ")
    operators("add", "hina")
    operators("disable", "hina")
    listing = {line.split()[0]: line.split() for line in operators("list").splitlines()}
    assert listing["rabia"][:4] == ["rabia", "supervisor", "vwps-peshawar", "active"]
    assert listing["hina"][:4] == ["hina", "operator", "main", "DISABLED"]
    assert all(columns[4] == "created" and columns[-1] == "UTC" for columns in listing.values())
    as_json = [json.loads(line) for line in operators("list", "--json").splitlines()]
    assert {(o["name"], o["room"], o["disabled"]) for o in as_json} == {
        ("rabia", "vwps-peshawar", False), ("hina", "main", True)}
    assert main(["operators", "--data-dir", str(tmp_path), "add", "sana", "--room", "Women Police"]) == 2
    assert "room 'Women Police': use 1-64 lower-case letters" in capsys.readouterr().err
    assert "sana" not in operators("list")
