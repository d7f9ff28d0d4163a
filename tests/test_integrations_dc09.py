"""SIA DC-09 sink end to end: the real relay, a real button and console, pysiaalarm as the alarm centre."""

from __future__ import annotations

import dataclasses
import functools
import json
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import trio
from trio.testing import trio_test

import pinkrelay
from pinkrelay.integrations.settings import Dc09Config
from pinkrelay.protocol import Site

from relay_helpers import OPERATOR, TOKEN, relay_config, secret_for, wait_until

HERE = Path(__file__).parent
KEY = "0123456789ABCDEF"  # AES-128: pysiaalarm uses the 16 characters as the key's bytes
ACCOUNT = "A1B2"
RELAY_ACCOUNT = "FFF"  # the sink's own account: buttons without one, and NULL supervision
#: The issue's outage; the test stays under about 20 s with it.
DOWN_SECONDS = 10.0
BUTTON = "kp-cam-001"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Receiver:
    """pysiaalarm's receiver in its own process (tests/sia_receiver.py); ``events`` are what it parsed."""

    def __init__(self, port: int, key: str | None = None, nak_first: int = 0) -> None:
        self.port, self.key, self.nak_first = port, key, nak_first
        self.events: list[dict] = []
        self.naks: list[str] = []
        self.process: subprocess.Popen | None = None

    async def start(self, nursery: trio.Nursery) -> None:
        args = [sys.executable, str(HERE / "sia_receiver.py"), str(self.port), f"{ACCOUNT},{RELAY_ACCOUNT}"]
        if self.key:
            args.append(self.key)
        if self.nak_first:
            args += ["--nak-first", str(self.nak_first)]
        self.process = subprocess.Popen(args, stdout=subprocess.PIPE, text=True)
        ready = trio.Event()
        nursery.start_soon(trio.to_thread.run_sync, self._read, self.process, ready, trio.lowlevel.current_trio_token())
        with trio.fail_after(10):
            await ready.wait()

    def _read(self, process: subprocess.Popen, ready: trio.Event, token) -> None:
        for line in process.stdout:
            if line.strip() == "listening":
                token.run_sync_soon(ready.set)
                continue
            item = json.loads(line)
            (self.naks.append(item["nak"]) if "nak" in item else self.events.append(item))

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()

    def codes(self) -> list[str]:
        return [event["code"] for event in self.events if event["code"] != "RP"]


def registry() -> pinkrelay.Registry:
    site = Site(name="Hayatabad Camera 1", kind="market", latitude=33.99, longitude=71.43)
    return pinkrelay.Registry([pinkrelay.Button(button_id=BUTTON, secret=secret_for(BUTTON), site=site,
                                                alarm_account=ACCOUNT, alarm_zone=7)])


def dc09(port: int, content: str = "SIA-DCS", key: str | None = None, **changes) -> Dc09Config:
    settings = {"retry_min": 0.05, "retry_max": 0.5, "timeout": 2.0, "ack_timeout": 2.0, "supervision": 0.0,
                **changes}
    return Dc09Config(name="arc", kind="dc09", host="127.0.0.1", port=port, format=content, receiver="12",
                      line="3", account=RELAY_ACCOUNT, key=(key or "").encode(), **settings)


async def _people(relay, nursery):
    console = pinkrelay.ConsoleClient(relay.consoles_address, OPERATOR, TOKEN.encode())
    await nursery.start(console.run)
    button = pinkrelay.ButtonClient(relay.buttons_address, BUTTON, secret_for(BUTTON))
    await nursery.start(button.run)
    return console, button


@pytest.mark.parametrize("content,key,expected", [
    ("SIA-DCS", None, ["PA", "MI", "PH"]),
    ("SIA-DCS", KEY, ["PA", "MI", "PH"]),
    ("ADM-CID", None, ["PA", "PH"]),   # Contact ID has no code for an acknowledgement: not sent
    ("ADM-CID", KEY, ["PA", "PH"]),
])
@trio_test
async def test_press_acknowledgement_and_resolve_reach_pysiaalarm(tmp_path, content, key, expected):
    receiver = Receiver(free_port(), key)
    async with trio.open_nursery() as outer:
        await receiver.start(outer)
        try:
            config = relay_config(tmp_path, sinks=(dc09(receiver.port, content, key),))
            async with pinkrelay.open_relay(config, registry=registry()) as relay, trio.open_nursery() as nursery:
                console, button = await _people(relay, nursery)
                receipt = await button.press(timeout=5)
                await wait_until(lambda: len(receiver.codes()) == 1, timeout=10, what="the press at the receiver")
                console.update_alert(receipt.alert_id, "acknowledged")
                await wait_until(lambda: relay.integrations.status["arc"].pending == 0
                                 and relay.integrations.status["arc"].delivered == 2, timeout=10)
                console.update_alert(receipt.alert_id, "resolved", outcome="test")
                await wait_until(lambda: len(receiver.codes()) == len(expected), timeout=10, what="the resolve")
                nursery.cancel_scope.cancel()
        finally:
            receiver.kill()
    assert receiver.codes() == expected
    assert not any(event["code"] == "RP" for event in receiver.events)  # supervision is off here
    zone = "7" if content == "SIA-DCS" else "007"
    assert all(event["account"] == ACCOUNT and event["ri"] == zone for event in receiver.events)
    assert all(event["encrypted"] == bool(key) and event["type"] == content for event in receiver.events)


@trio_test
async def test_a_nak_makes_the_sink_send_again_and_the_press_arrives_once(tmp_path):
    receiver = Receiver(free_port(), nak_first=1)
    async with trio.open_nursery() as outer:
        await receiver.start(outer)
        try:
            config = relay_config(tmp_path, sinks=(dc09(receiver.port),))
            async with pinkrelay.open_relay(config, registry=registry()) as relay, trio.open_nursery() as nursery:
                _, button = await _people(relay, nursery)
                await button.press(timeout=5)
                await wait_until(lambda: receiver.codes() == ["PA"], timeout=10, what="the press after the NAK")
                await trio.sleep(0.3)
                nursery.cancel_scope.cancel()
        finally:
            receiver.kill()
    assert len(receiver.naks) == 1 and "PA" in receiver.naks[0]
    assert receiver.codes() == ["PA"]
    # sent again with the same sequence number and a new timestamp
    assert re.search(r'"SIA-DCS"(\d{4})', receiver.naks[0])[1] == receiver.events[0]["sequence"]


@pytest.mark.slow
@trio_test
async def test_the_receiver_down_for_a_while_then_everything_arrives_in_order_once(tmp_path):
    port = free_port()
    receiver = Receiver(port)
    async with trio.open_nursery() as outer:
        await receiver.start(outer)
        try:
            config = relay_config(tmp_path, sinks=(dc09(port, supervision=0.5),))
            async with pinkrelay.open_relay(config, registry=registry()) as relay, trio.open_nursery() as nursery:
                console, button = await _people(relay, nursery)
                first = await button.press(timeout=5)
                await wait_until(lambda: receiver.codes() == ["PA"], timeout=10)
                receiver.kill()
                went_down = trio.current_time()
                console.update_alert(first.alert_id, "acknowledged")
                await wait_until(lambda: relay.integrations.status["arc"].pending == 1, timeout=5)
                console.update_alert(first.alert_id, "resolved", outcome="test")
                await wait_until(lambda: relay.integrations.status["arc"].pending == 2, timeout=5)
                started = trio.current_time()
                await button.press(timeout=5)  # the sink being down does not slow a press
                assert trio.current_time() - started < 1.0
                await trio.sleep_until(went_down + DOWN_SECONDS)
                assert relay.integrations.status["arc"].failed >= 3
                back = Receiver(port)
                await back.start(outer)
                await wait_until(lambda: len(back.codes()) == 3, timeout=10, what="the backlog after the outage")
                await trio.sleep(1.0)  # a repeat would come within the backoff
                status = relay.integrations.statuses()[0]
                nursery.cancel_scope.cancel()
        finally:
            receiver.kill()
            back.kill()
    assert back.codes() == ["MI", "PH", "PA"], (back.events, receiver.events)
    assert status["pending"] == 0 and status["supervision_failures"] >= 1
    nulls = [event for event in back.events if event["code"] == "RP"]  # NULL supervision once it is back
    assert nulls and all(event["account"] == RELAY_ACCOUNT and event["type"] == "NULL" for event in nulls)


@trio_test
async def test_a_receiver_that_answers_garbage_fails_clearly_and_nothing_else_is_affected(tmp_path):
    answered = []

    async def garbage(stream: trio.SocketStream) -> None:
        async for data in stream:
            answered.append(data)
            await stream.send_all(b"\nHELLO, THIS IS NOT DC-09\r")

    good_receiver = Receiver(free_port())
    async with trio.open_nursery() as outer:
        listeners = await outer.start(functools.partial(trio.serve_tcp, garbage, 0, host="127.0.0.1"))
        await good_receiver.start(outer)
        try:
            bad = dc09(listeners[0].socket.getsockname()[1])
            good = dataclasses.replace(dc09(good_receiver.port), name="arc-2")
            config = relay_config(tmp_path, sinks=(bad, good))
            async with pinkrelay.open_relay(config, registry=registry()) as relay, trio.open_nursery() as nursery:
                _, button = await _people(relay, nursery)
                started = trio.current_time()
                await button.press(timeout=5)
                assert trio.current_time() - started < 1.0
                await wait_until(lambda: good_receiver.codes() == ["PA"], timeout=10)
                await wait_until(lambda: relay.integrations.status["arc"].failed >= 2, timeout=10)
                status = relay.integrations.status["arc"]
                metrics = list(relay.integrations.collect())
                nursery.cancel_scope.cancel()
        finally:
            good_receiver.kill()
            outer.cancel_scope.cancel()
    assert "not a DC-09 response (ACK/NAK/DUH)" in status.last_error and "HELLO" in status.last_error
    assert status.delivered == 0 and status.pending == 1 and answered
    failed = {s.labels["sink"]: s.value for s in metrics[0].samples if s.labels["outcome"] == "failed"}
    assert failed["arc"] >= 2 and failed["arc-2"] == 0



def test_the_registry_gives_each_button_its_alarm_account_and_zone(tmp_path):
    path = tmp_path / "registry.csv"
    header = "id,secret,site_name,latitude,longitude,alarm_account,alarm_zone\n"
    path.write_text(header + f"{BUTTON},{secret_for(BUTTON).decode()},Camera 1,33.9,71.4,a1b2,7\n")
    button = pinkrelay.load_registry(path)[BUTTON]
    assert (button.alarm_account, button.alarm_zone) == ("A1B2", 7)
    path.write_text(header + f"{BUTTON},{secret_for(BUTTON).decode()},Camera 1,33.9,71.4,XYZ,1000\n")
    with pytest.raises(pinkrelay.RegistryError) as error:
        pinkrelay.load_registry(path)
    assert "alarm_account 'XYZ' must be 3-16 hex digits" in str(error.value)
    assert "alarm_zone '1000' must be a whole number 1-999" in str(error.value)
