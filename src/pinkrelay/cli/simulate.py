"""``pinkrelay simulate``: many virtual buttons from a registry, for load tests and demos.

Encoding live video for hundreds of buttons would need hundreds of cores, so
one short clip is encoded once and every virtual button replays its packets
with fresh capture timestamps, paced in real time by a single task that
wakes every ``TICK`` seconds and sends whatever is due for every button.
Each button is a real ButtonClient: its own connection, authentication,
heartbeats, reconnects and alert retries. Presses happen at random times
(a Poisson process at ``--press-rate`` per minute over the whole fleet).
"""

from __future__ import annotations

import argparse
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import trio

from ..clients import ButtonClient
from ..config import Address
from ..errors import ConnectionRefused
from ..logs import setup_logging
from ..registry import Button, load_registry
from ..tls import ClientTls
from .common import (
    client_tls_of,
    DEFAULT_BUTTONS_PORT,
    CommandError,
    Output,
    VideoSpec,
    add_relay_option,
    bitrate,
    connect_failure,
    ms,
    non_negative_float,
    percentile,
    positive_float,
    positive_int,
    relay_address,
    rounded,
    run_trio,
    say_goodbye,
    utc_clock,
    video_spec,
    wait_for_stop,
    wall_us,
)

#: How often the replay task wakes up to send what is due.
TICK = 0.01
#: A packet this late (µs) is not sent; the button restarts its clip at a keyframe instead.
MAX_LATE_US = 500_000
#: At most one keyframe on request per this many seconds: under congestion a dropped
#: keyframe is asked for again at once, and keyframes on every frame would make it worse.
KEYFRAME_INTERVAL = 0.5
CLIP_SECONDS = 4.0
DEFAULT_VIDEO = VideoSpec(320, 240, 15.0)
DEFAULT_BITRATE = 250_000


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "simulate",
        help="run many simulated buttons from a registry",
        description="Connect the first N buttons of a registry to a relay; each streams a replayed "
        "test clip in real time and presses at random (Poisson) times.",
    )
    add_relay_option(parser, DEFAULT_BUTTONS_PORT, "button")
    parser.add_argument(
        "--registry", required=True, metavar="FILE", help="registry with the buttons' secrets"
    )
    parser.add_argument(
        "--buttons", type=positive_int, required=True, metavar="N", help="how many buttons"
    )
    parser.add_argument(
        "--press-rate",
        type=non_negative_float,
        default=0.0,
        metavar="PER_MIN",
        help="presses per minute over all buttons, at random times (default 0: none)",
    )
    parser.add_argument(
        "--first-press-after",
        type=non_negative_float,
        metavar="S",
        help="one press S seconds after start",
    )
    parser.add_argument("--duration", type=positive_float, metavar="S", help="stop after S seconds")
    parser.add_argument(
        "--video",
        type=video_spec,
        default=DEFAULT_VIDEO,
        metavar="WxH@FPS",
        help=f"default {DEFAULT_VIDEO}",
    )
    parser.add_argument(
        "--bitrate",
        type=bitrate,
        default=DEFAULT_BITRATE,
        metavar="BPS",
        help="video bit rate (default 250k)",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object per line")
    parser.add_argument("--seed", type=int, metavar="N", help="seed the random press times")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    setup_logging("text", "error")
    return run_trio(_main, args, Output(args.json))


async def _main(args: argparse.Namespace, out: Output) -> int:
    relay = relay_address(args.relay)
    registry = load_registry(args.registry)
    if args.buttons > len(registry):
        raise CommandError(
            f"--buttons {args.buttons}: registry {args.registry} has only {len(registry)} buttons"
        )
    buttons = [registry[button_id] for button_id in list(registry)[: args.buttons]]
    await probe(relay)
    clip = await trio.to_thread.run_sync(make_clip, args.video, args.bitrate, "pinkrelay simulate")
    rng = random.Random(args.seed)
    fleet = Fleet(relay, buttons, clip, out, rng=rng, tls=client_tls_of(args))
    out.say(
        f"simulating {len(buttons)} buttons against {relay}: {args.video} H.264 "
        f"{args.bitrate // 1000} kb/s + {clip.audio.codec}, {CLIP_SECONDS:g} s clip replayed"
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(fleet.run)
        nursery.start_soon(fleet.random_presses, args.press_rate, args.first_press_after)
        reason = await wait_for_stop(args.duration, fleet.all_refused)
        await fleet.stop()
        nursery.cancel_scope.cancel()
    fleet.summary(reason)
    if fleet.all_refused.is_set():
        raise ConnectionRefused(f"every button was refused by the relay: {fleet.first_refusal}")
    return 0


async def probe(relay: Address) -> None:
    """Fail fast, with one clear line, when nothing listens at the relay address."""
    try:
        with trio.fail_after(5):
            stream = await trio.open_tcp_stream(relay.host, relay.port)
    except trio.TooSlowError:
        raise OSError(f"relay not reachable at {relay} (no answer within 5 s)") from None
    except OSError as error:
        raise OSError(
            f"relay not reachable at {relay} ({connect_failure(error)}); is 'pinkrelay serve' "
            "running there, and is this the button port?"
        ) from None
    await stream.aclose()


def make_clip(video: VideoSpec, video_bitrate: int, label: str) -> Any:
    from ..media import encode_clip

    return encode_clip(
        CLIP_SECONDS,
        video.width,
        video.height,
        video.fps,
        video_bitrate,
        label=label,
        gop_seconds=1.0,
    )


@dataclass(eq=False)
class SimButton:
    """One virtual button: its client and where it is in its replay of the clip."""

    button: Button
    client: ButtonClient
    packets: Iterator[Any] | None = None
    upcoming: Any = None
    base_time: float | None = None
    base_us: int = 0
    last_pts: int = -1
    restarted_at: float = float("-inf")
    link: Any = None
    ever_connected: bool = False
    refused: str = ""
    reported_error: str = ""
    late_skips: int = 0
    acks: list[float] = field(default_factory=list)

    @property
    def button_id(self) -> str:
        return self.button.button_id


class Fleet:
    """Many SimButtons, one replay task, one monitor task."""

    def __init__(
        self,
        relay: Address,
        buttons: Sequence[Button],
        clip: Any,
        out: Output,
        *,
        rng: random.Random | None = None,
        stagger: float | None = None,
        tls: ClientTls | None = None,
    ) -> None:
        self.relay = relay
        self.clip = clip
        self.out = out
        self.rng = rng or random.Random()
        tracks = [clip.video.to_dict(), clip.audio.to_dict()]
        self.buttons = [
            SimButton(
                button=button,
                client=ButtonClient(relay, button.button_id, button.secret, tracks=tracks, tls=tls),
            )
            for button in buttons
        ]
        self.by_id = {sim.button_id: sim for sim in self.buttons}
        self.stagger = min(2.0, 0.005 * len(self.buttons)) if stagger is None else stagger
        self.started_at = 0.0
        self.presses = 0
        self.latencies: list[float] = []
        self.reconnects = 0
        self.all_refused = trio.Event()
        self.first_refusal = ""
        self.all_connected_reported = False
        self.video_bytes = 0
        self.audio_bytes = 0

    # -- running -----------------------------------------------------------------

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        self.started_at = trio.current_time()
        async with trio.open_nursery() as nursery:
            for sim in self.buttons:
                nursery.start_soon(self._run_client, sim, self.rng.uniform(0, self.stagger))
            nursery.start_soon(self._replay)
            nursery.start_soon(self._monitor)
            task_status.started(self)

    async def _run_client(self, sim: SimButton, delay: float) -> None:
        await trio.sleep(delay)
        try:
            await sim.client.run()
        except ConnectionRefused as error:
            sim.refused = str(error)
            self.first_refusal = self.first_refusal or sim.refused
            self.out.event("error", button=sim.button_id, reason=sim.refused)
            self.out.say(f"ERROR  {sim.button_id}: {sim.refused}")
            if all(other.refused for other in self.buttons):
                self.all_refused.set()

    async def stop(self, reason: str = "simulation stopped") -> None:
        for sim in self.buttons:
            sim.client.reconnect = False
        await say_goodbye([sim.client.link for sim in self.buttons], reason)

    def _restart_clip(self, sim: SimButton, now: float) -> None:
        """Start the clip again at its first keyframe, continuing the button's timestamps."""
        if sim.base_time is None:
            sim.base_time = now
            sim.base_us = wall_us()
        offset = max(round((now - sim.base_time) * 1e6), sim.last_pts + 1)
        sim.restarted_at = now
        sim.packets = self.clip.replay(offset)
        sim.upcoming = next(sim.packets)

    async def _replay(self) -> None:
        """Send every button's due packets once per tick (cheap with hundreds of buttons)."""
        deadline = trio.current_time()
        while True:
            deadline += TICK
            now = trio.current_time()
            if deadline < now:
                deadline = now + TICK
            await trio.sleep_until(deadline)
            now = trio.current_time()
            for sim in self.buttons:
                client = sim.client
                if not client.connected.is_set():
                    sim.packets = None
                    continue
                if sim.packets is None:
                    self._restart_clip(sim, now)
                assert sim.base_time is not None
                elapsed = round((now - sim.base_time) * 1e6)
                packet = sim.upcoming
                while packet.pts_us <= elapsed:
                    if packet.kind == "video" and not packet.keyframe:
                        late = elapsed - packet.pts_us > MAX_LATE_US
                        wanted = (
                            client.needs_keyframe and now - sim.restarted_at >= KEYFRAME_INTERVAL
                        )
                        if late or wanted:
                            sim.late_skips += late
                            self._restart_clip(sim, now)
                            packet = sim.upcoming
                            continue
                    if client.send_media(
                        packet.kind, packet.data, sim.base_us + packet.pts_us, packet.keyframe
                    ):
                        if packet.kind == "video":
                            self.video_bytes += len(packet.data)
                        else:
                            self.audio_bytes += len(packet.data)
                    sim.last_pts = packet.pts_us
                    packet = next(sim.packets)  # type: ignore[arg-type]
                sim.upcoming = packet

    async def _monitor(self) -> None:
        """Report connections, drops and connection errors as they happen."""
        while True:
            await trio.sleep(0.25)
            for sim in self.buttons:
                client = sim.client
                if client.connected.is_set():
                    if sim.link is not None and client.link is not sim.link:
                        self._reconnected(sim, sim.link.closed_reason or "connection replaced")
                    sim.link = client.link
                    sim.ever_connected = True
                    sim.reported_error = ""
                elif sim.link is not None:
                    reason = sim.link.closed_reason or client.last_error or "connection lost"
                    self._reconnected(sim, reason)
                    sim.link = None
                    # The drop was just reported; a reconnect that fails is the next error.
                    sim.reported_error = reason
                elif (
                    client.last_error
                    and client.last_error != sim.reported_error
                    and not sim.refused
                ):
                    sim.reported_error = client.last_error
                    self.out.event("error", button=sim.button_id, reason=client.last_error)
                    self.out.say(f"ERROR  {sim.button_id}: {client.last_error}; retrying")
            connected = self.connected_count
            if connected == len(self.buttons) and not self.all_connected_reported:
                self.all_connected_reported = True
                took = trio.current_time() - self.started_at
                self.out.say(f"all {connected} buttons connected and streaming ({took:.1f} s)")

    def _reconnected(self, sim: SimButton, reason: str) -> None:
        self.reconnects += 1
        self.out.event("reconnect", button=sim.button_id, reason=reason)
        self.out.say(f"RECONNECT {sim.button_id}: {reason}")

    @property
    def connected_count(self) -> int:
        return sum(1 for sim in self.buttons if sim.client.connected.is_set())

    # -- presses -----------------------------------------------------------------

    async def random_presses(self, rate_per_minute: float, first_after: float | None) -> None:
        async with trio.open_nursery() as nursery:
            if first_after is not None:
                await trio.sleep(first_after)
                nursery.start_soon(self.press, self._pick())
            if rate_per_minute > 0:
                while True:
                    await trio.sleep(self.rng.expovariate(rate_per_minute / 60.0))
                    nursery.start_soon(self.press, self._pick())

    def _pick(self) -> SimButton:
        online = [sim for sim in self.buttons if sim.client.connected.is_set()]
        return self.rng.choice(
            online or [sim for sim in self.buttons if not sim.refused] or self.buttons
        )

    async def press(self, sim: SimButton) -> float:
        """Press ``sim``; returns the acknowledgement latency in ms once the relay stored it."""
        pending = sim.client.start_press()
        alert = pending.alert
        self.presses += 1
        self.out.event(
            "press", button=sim.button_id, alert_id=alert.alert_id, t=alert.pressed_at / 1e6
        )
        self.out.say(
            f"PRESS  {sim.button_id} ({sim.button.site.name}) alert {alert.alert_id} "
            f"at {utc_clock(alert.pressed_at)}"
        )
        await pending.done.wait()
        receipt = pending.receipt
        assert receipt is not None
        self.latencies.append(receipt.latency_ms)
        sim.acks.append(receipt.latency_ms)
        self.out.event(
            "acked",
            button=sim.button_id,
            alert_id=receipt.alert_id,
            latency_ms=round(receipt.latency_ms, 3),
        )
        self.out.say(
            f"ACKED  {sim.button_id} alert {receipt.alert_id}: stored by the relay in "
            f"{receipt.latency_ms:.1f} ms (attempt {receipt.attempts})"
        )
        return receipt.latency_ms

    # -- summary -----------------------------------------------------------------

    def totals(self) -> dict[str, Any]:
        elapsed = max(trio.current_time() - self.started_at, 1e-9)
        return {
            "seconds": round(elapsed, 3),
            "buttons": len(self.buttons),
            "buttons_connected": sum(1 for sim in self.buttons if sim.ever_connected),
            "buttons_refused": sum(1 for sim in self.buttons if sim.refused),
            "reconnects": self.reconnects,
            "presses": self.presses,
            "acks": len(self.latencies),
            "ack_p50_ms": rounded(percentile(self.latencies, 0.5), 3),
            "ack_p99_ms": rounded(percentile(self.latencies, 0.99), 3),
            "media_sent": sum(sim.client.sent_messages for sim in self.buttons),
            "media_dropped": sum(sim.client.dropped_messages for sim in self.buttons),
            "late_restarts": sum(sim.late_skips for sim in self.buttons),
            "kbps": round((self.video_bytes + self.audio_bytes) * 8 / 1000 / elapsed, 1),
        }

    def summary(self, reason: str) -> None:
        totals = self.totals()
        self.out.event("summary", **totals)
        self.out.say(f"stopped ({reason}) after {totals['seconds']:.1f} s")
        self.out.say(
            f"  buttons connected: {totals['buttons_connected']}/{totals['buttons']}"
            f" ({totals['buttons_refused']} refused, {totals['reconnects']} reconnects)"
        )
        self.out.say(
            f"  presses: {totals['presses']}, acknowledged: {totals['acks']}; ack latency "
            f"p50 {ms(totals['ack_p50_ms'])}, p99 {ms(totals['ack_p99_ms'])}"
        )
        self.out.say(
            f"  media packets sent: {totals['media_sent']}, dropped: {totals['media_dropped']} "
            f"({totals['kbps'] / 1000:.2f} Mb/s in total; {totals['late_restarts']} late restarts)"
        )
