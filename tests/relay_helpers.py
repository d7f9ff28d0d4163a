"""Shared pieces for tests that run the real relay on 127.0.0.1 with free ports."""

from __future__ import annotations

import re
import os
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import trio

import pinkrelay
from pinkrelay.protocol import (
    ButtonConnection,
    Challenge,
    ConsoleConnection,
    Site,
    Welcome,
)

OPERATOR = "desk-1"
TOKEN = "console-token-for-tests-0001"
SITES = [
    ("Qissa Khwani Bazaar", "market", 34.0086, 71.5683),
    ("University of Peshawar", "campus", 34.0006, 71.4862),
    ("Deans Trade Centre", "shopping_centre", 34.0012, 71.5387),
]


def secret_for(button_id: str) -> bytes:
    return f"secret-of-{button_id}-0123456789".encode()


def button_ids(count: int) -> list[str]:
    return [f"kp-test-{index:03d}" for index in range(1, count + 1)]


def make_registry(count: int = 24) -> pinkrelay.Registry:
    buttons = []
    for index, button_id in enumerate(button_ids(count)):
        name, kind, lat, lon = SITES[index % len(SITES)]
        buttons.append(
            pinkrelay.Button(
                button_id=button_id,
                secret=secret_for(button_id),
                site=Site(name=f"{name} #{index + 1}", kind=kind, latitude=lat, longitude=lon),
            )
        )
    return pinkrelay.Registry(buttons)


def relay_config(data_dir: Path, **changes: Any) -> pinkrelay.RelayConfig:
    """Settings for a test relay; ``PINKRELAY_DATA_THREADS`` (as for ``pinkrelay serve``) sets its data threads.

    Unset: the relay's default, one data thread per core; 0: media takes the trio path.
    """
    if os.environ.get("PINKRELAY_DATA_THREADS"):
        changes.setdefault("data_threads", int(os.environ["PINKRELAY_DATA_THREADS"]))
    return pinkrelay.RelayConfig(
        buttons_listen=pinkrelay.Address("127.0.0.1", 0),
        consoles_listen=pinkrelay.Address("127.0.0.1", 0),
        data_dir=data_dir,
        console_tokens={OPERATOR: TOKEN, "desk-2": TOKEN + "-2", "desk-3": TOKEN + "-3"},
        **changes,
    )


def wall_us() -> int:
    return time.time_ns() // 1000


@asynccontextmanager
async def running_relay(data_dir: Path, registry_size: int = 24, **changes: Any) -> AsyncIterator[pinkrelay.Relay]:
    async with pinkrelay.open_relay(relay_config(data_dir, **changes), registry=make_registry(registry_size)) as relay:
        yield relay


async def raw_session(address: pinkrelay.Address, conn: Any) -> trio.SocketStream:
    """Open a socket and complete the handshake with a sans-IO client connection."""
    stream = await trio.open_tcp_stream(address.host, address.port)
    return await handshake(stream, conn)


async def handshake(stream: trio.SocketStream, conn: Any) -> trio.SocketStream:
    """Complete the handshake on an open stream with a sans-IO client connection."""
    await stream.send_all(conn.hello(trio.current_time()))
    while True:
        data = await stream.receive_some(65536)
        assert data, "relay closed the connection during the handshake"
        conn.receive_data(data, trio.current_time())
        for event in conn.events():
            if isinstance(event, Challenge):
                await stream.send_all(conn.authenticate(trio.current_time()))
            elif isinstance(event, Welcome):
                return stream


def raw_button(button_id: str, secret: bytes | None = None, **kwargs: Any) -> ButtonConnection:
    return ButtonConnection(button_id, secret if secret is not None else secret_for(button_id), **kwargs)


def raw_console(operator: str = OPERATOR, token: str = TOKEN) -> ConsoleConnection:
    return ConsoleConnection(operator, token.encode())


async def read_events(stream: trio.SocketStream, conn: Any, *, until: Any, timeout: float) -> list[Any]:
    """Read and collect events until ``until(events)`` is true or the timeout passes."""
    events: list[Any] = []
    with trio.move_on_after(timeout):
        while not until(events):
            data = await stream.receive_some(65536)
            conn.receive_data(data, trio.current_time())
            events.extend(conn.events())
            if not data:
                break
    return events


def console_client(relay: pinkrelay.Relay, operator: str = OPERATOR, token: str = TOKEN, **kwargs: Any) -> pinkrelay.ConsoleClient:
    return pinkrelay.ConsoleClient(relay.consoles_address, operator, token.encode(), **kwargs)


def button_client(relay: pinkrelay.Relay, button_id: str, tracks: Any = (), **kwargs: Any) -> pinkrelay.ButtonClient:
    return pinkrelay.ButtonClient(relay.buttons_address, button_id, secret_for(button_id), tracks=tracks, **kwargs)


async def stream_clip(button: pinkrelay.ButtonClient, clip: Any, *, seconds: float, speed: float = 1.0) -> int:
    """Replay ``clip`` through ``button`` in real time; returns packets sent."""
    start_wall = wall_us()
    start = trio.current_time()
    sent = 0
    for packet in clip.replay(0):
        if packet.pts_us / 1e6 > seconds:
            return sent
        await trio.sleep_until(start + packet.pts_us / 1e6 / speed)
        if button.send_media(packet.kind, packet.data, start_wall + packet.pts_us, packet.keyframe):
            sent += 1
    return sent


async def next_of(console: pinkrelay.ConsoleClient, kind: type, timeout: float = 5.0, where: Any = None) -> Any:
    with trio.fail_after(timeout):
        async for event in console.events():
            if isinstance(event, kind) and (where is None or where(event)):
                return event
    raise AssertionError(f"console events ended before a {kind.__name__}")


async def stream_honouring_keyframes(button: pinkrelay.ButtonClient, clip: Any) -> None:
    """A device with a pre-encoded source: start again at a keyframe whenever the client asks for one.

    It replays ``clip`` in real time, forever, with capture timestamps that
    keep increasing; a video delta frame due while ``needs_keyframe`` is true
    is not offered: the clip starts again at its first frame (a keyframe).
    """
    start = trio.current_time()
    base_us = wall_us()
    last_pts = -1
    packets = clip.replay(0)
    while True:
        packet = next(packets)
        await trio.sleep_until(start + packet.pts_us / 1e6)
        if packet.kind == "video" and not packet.keyframe and button.needs_keyframe:
            packets = clip.replay(max(round((trio.current_time() - start) * 1e6), last_pts + 1))
            continue
        button.send_media(packet.kind, packet.data, base_us + packet.pts_us, packet.keyframe)
        last_pts = packet.pts_us


async def collect_events(console: pinkrelay.ConsoleClient, into: list[Any]) -> None:
    """Append every event ``console`` yields to ``into`` (run it in a nursery)."""
    async for event in console.events():
        into.append(event)


async def wait_until(predicate: Any, timeout: float = 5.0, what: str = "the condition") -> None:
    """Poll ``predicate`` until it is true; fail naming ``what`` after ``timeout`` seconds."""
    with trio.move_on_after(timeout):
        while not predicate():
            await trio.sleep(0.01)
        return
    raise AssertionError(f"waited {timeout:g} s for {what}")


async def post_sign_in(http: Any, name: str, secret: str) -> Any:
    """What the web room's sign-in form does: load the page (its login-CSRF token), post name, secret and token.

    ``http`` is an httpx.AsyncClient on the room that sends ``Origin`` as a browser does.
    """
    page = await http.get("/signin")
    token = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert token, "the sign-in page carries no CSRF token"
    return await http.post("/signin", data={"name": name, "secret": secret, "csrf": token.group(1)})


@contextmanager
def small_tmpfs(parent: Path, name: str, size: str) -> Iterator[Path]:
    """A tmpfs of ``size`` (e.g. "2m") mounted at parent/name for a full-disk test; needs root."""
    mount = parent / name
    mount.mkdir()
    assert os.geteuid() == 0, f"this test mounts a {size} tmpfs: run it as root (CI and make test do)"
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)
