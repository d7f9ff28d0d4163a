"""A control-room console for the crash test (tests/test_crash_relay.py). Not a test itself.

    python tests/crash_console.py --relay HOST:PORT --operator NAME --token TEXT

Signs in with ConsoleClient, which reconnects after the relay dies and
resumes from the last cursor it saw, and prints one JSON line, flushed, per
Alert it receives: ``{"alert": ID, "cursor": N, "state": S}``; also
``{"connected": true}`` once first signed in and ``{"reconnected": N}``
after each reconnect. A line ``stop`` on stdin (or
stdin closing) ends it with ``{"done": true, "cursor": N}``.
"""

from __future__ import annotations

import argparse
import json
import sys

import trio

from pinkrelay import ConsoleClient, Reconnected
from pinkrelay.errors import ConnectionRefused
from pinkrelay.protocol import Alert


def say(**fields: object) -> None:
    sys.stdout.write(json.dumps(fields) + "\n")
    sys.stdout.flush()


async def main(args: argparse.Namespace) -> None:
    console = ConsoleClient(args.relay, args.operator, args.token.encode(), backoff_initial=0.05,
                            backoff_max=0.3, connect_timeout=2.0, buffer=100_000)

    async def keep_running() -> None:
        # As in crash_presser.py: the client must ride out a relay killed mid-handshake.
        try:
            await console.run()
        except ConnectionRefused as error:
            say(refused=str(error))
            raise

    async def watch() -> None:
        async for event in console.events():
            if isinstance(event, Alert):
                say(alert=event.alert_id, cursor=event.cursor, state=event.state)
            elif isinstance(event, Reconnected):
                say(reconnected=event.attempt)

    async def read_stdin() -> None:
        stdin = trio.lowlevel.FdStream(sys.stdin.fileno())
        buffer = b""
        while b"stop" not in buffer:
            data = await stdin.receive_some(1024)
            if not data:
                break
            buffer += data

    async def signed_in() -> None:
        await console.connected.wait()
        say(connected=True)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(signed_in)
        nursery.start_soon(keep_running)
        nursery.start_soon(watch)
        await read_stdin()
        say(done=True, cursor=console.cursor)
        nursery.cancel_scope.cancel()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--relay", required=True)
    parser.add_argument("--operator", required=True)
    parser.add_argument("--token", required=True)
    trio.run(main, parser.parse_args())
