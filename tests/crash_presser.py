"""A button that presses fast, for the crash test (tests/test_crash_relay.py). Not a test itself.

    python tests/crash_presser.py --relay HOST:PORT --button ID --secret TEXT --prefix P

Presses every ``--interval`` seconds with alert ids ``P-0``, ``P-1``... (each
retried every ``--retry`` seconds until acknowledged, across reconnects) and
prints one JSON line per acknowledged id, flushed at once:

    {"acked": "P-17", "duplicate": false, "attempts": 2}

When a line ``stop`` arrives on stdin (or stdin closes) it stops pressing,
waits up to ``--settle`` seconds for the pending presses to be acknowledged,
then prints ``{"created": N, "pending": [...ids never acknowledged...]}``
and exits 0.
"""

from __future__ import annotations

import argparse
import json
import sys

import trio

from pinkrelay import ButtonClient
from pinkrelay.errors import ConnectionRefused


def say(**fields: object) -> None:
    sys.stdout.write(json.dumps(fields) + "\n")
    sys.stdout.flush()


async def main(args: argparse.Namespace) -> None:
    client = ButtonClient(
        args.relay,
        args.button,
        args.secret.encode(),
        retry_interval=args.retry,
        backoff_initial=0.05,
        backoff_max=0.3,
        connect_timeout=2.0,
    )
    waiting: dict[str, object] = {}
    created = 0

    async def keep_running() -> None:
        # The client itself must ride out a relay killed at any moment, the
        # handshake included: a refusal here ends the process and fails the test.
        try:
            await client.run()
        except ConnectionRefused as error:
            say(refused=str(error))
            raise

    async def wait_for_ack(alert_id: str, pending: object) -> None:
        await pending.done.wait()  # type: ignore[attr-defined]
        receipt = pending.receipt  # type: ignore[attr-defined]
        waiting.pop(alert_id, None)
        say(acked=alert_id, duplicate=receipt.duplicate, attempts=receipt.attempts)

    async def press(stop: trio.Event) -> None:
        nonlocal created
        next_at = trio.current_time()
        while not stop.is_set():
            alert_id = f"{args.prefix}-{created}"
            pending = client.start_press(alert_id=alert_id)
            created += 1
            waiting[alert_id] = pending
            nursery.start_soon(wait_for_ack, alert_id, pending)
            next_at += args.interval
            with trio.move_on_at(next_at):
                await stop.wait()

    async def read_stdin(stop: trio.Event) -> None:
        stdin = trio.lowlevel.FdStream(sys.stdin.fileno())
        buffer = b""
        while b"stop" not in buffer:
            data = await stdin.receive_some(1024)
            if not data:
                break
            buffer += data
        stop.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(keep_running)
        stop = trio.Event()
        nursery.start_soon(read_stdin, stop)
        await press(stop)
        with trio.move_on_after(args.settle):
            while waiting:
                await trio.sleep(0.02)
        say(created=created, pending=sorted(waiting))
        nursery.cancel_scope.cancel()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--relay", required=True)
    parser.add_argument("--button", required=True)
    parser.add_argument("--secret", required=True)
    parser.add_argument("--prefix", required=True)
    parser.add_argument("--interval", type=float, default=0.02)
    parser.add_argument("--retry", type=float, default=0.2)
    parser.add_argument("--settle", type=float, default=15.0)
    trio.run(main, parser.parse_args())
