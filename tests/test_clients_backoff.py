"""Reconnect backoff: against a port where nothing listens, the wait doubles and stops at the cap.

Both clients log one warning per failed attempt with the delay they chose
(the operator's view of a relay that is down); the times of those warnings
are the attempts. Each wait is the delay with jitter, between half of it and
all of it, so a fleet of buttons does not reconnect in lock-step.
"""

from __future__ import annotations

import logging
import socket
import time

import pytest
import trio
from trio.testing import trio_test

import pinkrelay

INITIAL, CAP = 0.04, 0.32
#: Scheduling slack on a loaded 2-core machine.
SLACK = 0.15


class Attempts(logging.Handler):
    """Records (monotonic time, chosen delay) of each 'retrying in' warning."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.seen: list[tuple[float, float, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        assert isinstance(record.args, tuple)
        self.seen.append((time.monotonic(), float(record.args[2]), str(record.args[1])))


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _check(seen: list[tuple[float, float, str]], address: str) -> None:
    delays = [delay for _, delay, _ in seen]
    assert len(delays) >= 7, delays
    assert delays[:5] == pytest.approx([INITIAL, 2 * INITIAL, 4 * INITIAL, CAP, CAP])
    assert all(delay == pytest.approx(CAP) for delay in delays[3:])
    for (at, delay, _), (next_at, _, _) in zip(seen, seen[1:], strict=False):
        assert delay / 2 - 0.005 <= next_at - at <= delay + SLACK, (delay, next_at - at)
    assert all(f"relay not reachable at {address}" in error for _, _, error in seen)


@trio_test
async def test_reconnect_backoff_doubles_and_is_capped():
    address = f"127.0.0.1:{_closed_port()}"
    handlers = {"pinkrelay.button": Attempts(), "pinkrelay.console": Attempts()}
    saved = {}
    for name, handler in handlers.items():
        logger = logging.getLogger(name)
        saved[name] = logger.level
        logger.setLevel(logging.WARNING)
        logger.addHandler(handler)
    try:
        button = pinkrelay.ButtonClient(address, "kp-test-001", b"secret", backoff_initial=INITIAL, backoff_max=CAP)
        console = pinkrelay.ConsoleClient(address, "desk-1", b"token", backoff_initial=INITIAL, backoff_max=CAP)
        with trio.move_on_after(2.5):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(button.run)
                nursery.start_soon(console.run)
    finally:
        for name, handler in handlers.items():
            logging.getLogger(name).removeHandler(handler)
            logging.getLogger(name).setLevel(saved[name])
    assert not button.connected.is_set() and not console.connected.is_set()
    assert f"relay not reachable at {address}" in button.last_error
    _check(handlers["pinkrelay.button"].seen, address)
    _check(handlers["pinkrelay.console"].seen, address)
