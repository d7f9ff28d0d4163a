"""``pinkrelay demo``: the whole system in one process, for a first look (``make run``).

It starts a relay on the default ports (127.0.0.1:7400 for buttons, 7401
for consoles; free ports if those are taken) with the example Peshawar
registry, connects a few simulated Pink Buttons (a market, a university, a
shopping centre, ...) that stream a replayed test clip, presses the market's
button after about three seconds, and runs a control-room console that
shows the alert, starts watching that button's live stream and prints what
arrives once a second. Then everything stops and a summary is printed.

Its data (journal, accounts) is kept in ``var/demo`` (``--data-dir``), so
``pinkrelay alerts list --data-dir var/demo`` shows the demo's alerts after it
ends; the web sign-in secret of the demo supervisor is kept there too
(``demo-web-secret``, mode 0600) and printed on every run.

The registry is ``examples/peshawar-buttons.csv`` from the source checkout
(found next to the installed package in an editable install, which is what
``make run`` uses, or under the current directory).
"""

from __future__ import annotations

import argparse
import os
import secrets
import statistics
from pathlib import Path
from typing import Any

import trio

from ..clients import ConsoleClient
from ..config import Address, RelayConfig
from ..errors import ConfigError
from ..logs import setup_logging
from ..protocol import Alert
from ..registry import Button, Registry, load_registry
from ..relay import AuthRefused, ClientConnected, ClientDisconnected, Relay
from ..web import serve_web
from .common import (
    CommandError,
    Output,
    VideoSpec,
    positive_float,
    positive_int,
    run_trio,
    say_goodbye,
    utc_clock,
    wait_for_stop,
)
from .console import ConsoleView
from .simulate import CLIP_SECONDS, Fleet, make_clip

REGISTRY_NAME = "peshawar-buttons.csv"
DEMO_VIDEO = VideoSpec(640, 360, 25.0)
DEMO_BITRATE = 600_000
PRESS_AT = 3.0
PRESS_EVERY = 40.0
WEB_OPERATOR = "demo"
#: Where the demo keeps its data, so that its alerts can be read after it ends.
DEMO_DATA_DIR = Path("var/demo")
#: The demo supervisor's web secret, kept in the demo's data directory (a demo account only).
WEB_SECRET_FILE = "demo-web-secret"
OPERATOR = "duty-officer"
#: Site kinds in the order the demo picks its buttons.
KIND_ORDER = (
    "market",
    "campus",
    "shopping_centre",
    "transport",
    "hospital",
    "school",
    "park",
    "office",
    "other",
)


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="relay + simulated buttons + console, for a first look",
        description="Run a relay, a few simulated Pink Buttons and a console in one process: one "
        "button is pressed, the console shows the alert and watches the live stream.",
    )
    parser.add_argument(
        "--duration",
        type=positive_float,
        default=20.0,
        metavar="S",
        help="how long to run (default 20)",
    )
    parser.add_argument(
        "--buttons", type=positive_int, default=4, metavar="N", help="simulated buttons (default 4)"
    )
    parser.add_argument(
        "--data-dir", metavar="DIR", default=str(DEMO_DATA_DIR),
        help=f"the relay's data directory, kept after the demo (default {DEMO_DATA_DIR})"
    )
    parser.add_argument(
        "--press-every",
        type=positive_float,
        default=PRESS_EVERY,
        metavar="S",
        help=f"after the first press, another button presses every S seconds (default {PRESS_EVERY:g})",
    )
    parser.add_argument(
        "--no-web", action="store_true", help="do not open the browser control room"
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    setup_logging("text", "error")
    registry_path = find_example_registry()
    return run_trio(_main, args, registry_path, Path(args.data_dir))


def find_example_registry() -> Path:
    candidates = [
        Path(__file__).resolve().parents[3] / "examples" / REGISTRY_NAME,
        Path.cwd() / "examples" / REGISTRY_NAME,
    ]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise CommandError(
        f"cannot find examples/{REGISTRY_NAME}; run the demo from the pinkrelay source checkout "
        f"(looked in {', '.join(str(c.parent) for c in candidates)})"
    )


def pick_buttons(registry: Registry, count: int) -> list[Button]:
    """One button of each kind (market first, then a university, a shopping centre...), then the rest."""
    if count > len(registry):
        raise CommandError(f"--buttons {count}: the example registry has {len(registry)} buttons")
    chosen: list[Button] = []
    for kind in KIND_ORDER:
        match = next(
            (b for b in registry.values() if b.site.kind == kind and b not in chosen), None
        )
        if match is not None:
            chosen.append(match)
    chosen = chosen[:count]
    chosen += [b for b in registry.values() if b not in chosen][: count - len(chosen)]
    return chosen


async def _start_relay(
    nursery: trio.Nursery, config: RelayConfig, registry: Registry, say: Output
) -> Relay:
    try:
        return await nursery.start(Relay(config, registry=registry).serve)
    except ConfigError as error:
        if "cannot listen" not in str(error):
            raise
        say.say("ports 7400/7401 are taken (is another relay running?); using free ports instead")
        fallback = config.replace(
            buttons_listen=Address("127.0.0.1", 0), consoles_listen=Address("127.0.0.1", 0)
        )
        return await nursery.start(Relay(fallback, registry=registry).serve)


async def _main(args: argparse.Namespace, registry_path: Path, data_dir: Path) -> int:
    relay_out = Output(False, prefix="[relay]   ")
    buttons_out = Output(False, prefix="[buttons] ")
    console_out = Output(False, prefix="[console] ")
    intro = Output(False)
    registry = load_registry(registry_path)
    chosen = pick_buttons(registry, args.buttons)
    token = secrets.token_urlsafe(24)
    config = RelayConfig(
        data_dir=data_dir,
        registry=registry_path,
        console_tokens={OPERATOR: token},
        log_level="error",
    )
    started = trio.current_time()
    press_at = min(PRESS_AT, args.duration * 0.4)
    intro.say(
        f"pinkrelay demo: a relay, {len(chosen)} simulated Pink Buttons and a control-room console, "
        f"for {args.duration:g} s. Ctrl-C stops it early."
    )
    async with trio.open_nursery() as nursery:
        relay = await _start_relay(nursery, config, registry, relay_out)
        relay_out.say(
            f"listening: buttons on {relay.buttons_address}, consoles on {relay.consoles_address}; "
            f"{len(registry)} buttons registered from {registry_path.name}"
        )
        nursery.start_soon(_relay_events, relay, relay_out)
        sign_in = await _open_control_room(nursery, relay) if not args.no_web else []

        console = ConsoleClient(relay.consoles_address, OPERATOR, token.encode())
        view: ConsoleView

        def watch_on_alert(alert: Alert) -> None:
            if alert.kind == "panic" and alert.button not in view.streams:
                console_out.say(f"operator opens the live stream of {alert.button}")
                view.watch(alert.button)

        view = ConsoleView(console, console_out, on_alert=watch_on_alert)
        await nursery.start(console.run)
        console_out.say(f"signed in as {OPERATOR}")
        nursery.start_soon(view.run)

        buttons_out.say(
            f"encoding one {CLIP_SECONDS:g} s test clip ({DEMO_VIDEO}, H.264 + Opus) that every "
            "simulated button replays"
        )
        clip = await trio.to_thread.run_sync(
            make_clip, DEMO_VIDEO, DEMO_BITRATE, "PINK BUTTON DEMO"
        )
        assert relay.buttons_address is not None
        fleet = Fleet(relay.buttons_address, chosen, clip, buttons_out, stagger=0.0)
        for button in chosen:
            site = button.site
            buttons_out.say(
                f"{button.button_id}: {site.name} ({site.kind.replace('_', ' ')}, {site.district})"
            )
        await nursery.start(fleet.run)
        if sign_in:
            intro.box(sign_in)  # last of the start-up lines, so it does not scroll away at once

        pressed = chosen[0]
        press_result: dict[str, float] = {}

        async def press_later() -> None:
            await trio.sleep_until(started + press_at)
            press_result["ack_ms"] = await fleet.press(fleet.by_id[pressed.button_id])

        nursery.start_soon(press_later)

        async def press_now_and_then() -> None:
            """Other sites press from time to time, so the board has work to show."""
            others = chosen[1:] or chosen
            for turn in range(1, 1_000_000):
                await trio.sleep_until(started + press_at + turn * args.press_every)
                await fleet.press(fleet.by_id[others[(turn - 1) % len(others)].button_id])

        nursery.start_soon(press_now_and_then)
        remaining = args.duration - (trio.current_time() - started)
        reason = await wait_for_stop(max(remaining, 0.1))
        stats = relay.stats()
        await fleet.stop("demo finished")
        console.reconnect = False
        await say_goodbye([console.link], "demo finished")
        await relay.shutdown("demo finished")
        nursery.cancel_scope.cancel()
    _summary(
        intro, reason, pressed, view, fleet, press_result, stats, trio.current_time() - started, data_dir
    )
    return 0


async def _open_control_room(nursery: trio.Nursery, relay: Relay) -> list[str]:
    """Serve the browser control room; the lines that say where and how to sign in (a demo supervisor)."""
    try:
        room = await nursery.start(serve_web, relay)
    except ConfigError as error:
        if "7480" not in str(error) and "listen" not in str(error):
            raise
        room = await nursery.start(serve_web, relay, Address("127.0.0.1", 0))
    secret_file = relay.config.data_dir / WEB_SECRET_FILE
    if relay.operators.get(WEB_OPERATOR) is None:
        secret = relay.operators.add(WEB_OPERATOR, "supervisor")
        fd = os.open(secret_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secret + "\n")
    else:
        try:
            secret = secret_file.read_text().strip()
        except OSError:
            secret = f"(not kept in {secret_file}: 'pinkrelay operators add' makes another account)"
    return [f"control room: {room.url}", f"sign in as {WEB_OPERATOR!r} with secret {secret}"]


async def _relay_events(relay: Relay, out: Output) -> None:
    async for event in relay.events():
        if isinstance(event, Alert) and event.kind == "panic":
            out.say(
                f"alert {event.alert_id} from {event.button} stored and pushed to "
                f"{len(relay.consoles)} console(s); acknowledging to the button"
            )
        elif isinstance(event, ClientConnected) and event.role == "console":
            out.say(f"{event.role} {event.identity} signed in from {event.peer}")
        elif isinstance(event, ClientDisconnected) and not relay.stopping:
            out.say(f"{event.role} {event.identity} left: {event.reason}")
        elif isinstance(event, AuthRefused):
            out.say(f"refused {event.role} {event.identity}: {event.reason}")


def _summary(
    out: Output,
    reason: str,
    pressed: Button,
    view: ConsoleView,
    fleet: Fleet,
    press_result: dict[str, float],
    stats: dict[str, Any],
    elapsed: float,
    data_dir: Path,
) -> None:
    out.say("")
    out.say(f"demo finished ({reason}) after {elapsed:.1f} s")
    alerts = [
        a for a in view.alerts.values() if a.button == pressed.button_id and a.kind == "panic"
    ]
    if alerts:
        alert = alerts[0]
        latency = view.alert_latencies.get(alert.alert_id, 0.0)
        ack = press_result.get("ack_ms")
        acked = f"; acknowledged to the button after {ack:.1f} ms" if ack is not None else ""
        out.say(
            f"  alert: {pressed.button_id} ({pressed.site.name}) pressed at {utc_clock(alert.pressed_at)}, "
            f"on the console {latency:.1f} ms later{acked}"
        )
    else:
        out.say(
            f"  alert: no alert from {pressed.button_id} reached the console (the demo ended first?)"
        )
    stream = view.streams.get(pressed.button_id)
    if stream is not None:
        latency = f"{statistics.median(stream.latencies):.1f} ms" if stream.latencies else "n/a"
        out.say(
            f"  live stream of {pressed.button_id}: {stream.frames_decoded} video frames decoded "
            f"({stream.catchup_decoded} catch-up), median capture-to-console latency {latency}, "
            f"{stream.dropped} lost"
        )
    totals = fleet.totals()
    out.say(
        f"  buttons: {totals['buttons_connected']}/{totals['buttons']} connected, "
        f"{totals['media_sent']} media packets sent; relay fanned out {stats.get('messages_fanned_out', 0)} "
        f"messages to consoles"
    )
    out.say(
        f"  the demo's data is kept in {data_dir}: 'pinkrelay alerts list --data-dir {data_dir}' shows its alerts"
    )
    out.say(
        "next: 'pinkrelay serve', 'pinkrelay simulate' and 'pinkrelay console' run these parts separately"
    )
