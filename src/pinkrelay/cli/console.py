"""``pinkrelay console``: a terminal console for the police control room.

It signs in as an operator (the token comes from a file or the environment,
never from a flag), shows alerts as they arrive with the site and how long
after the press they arrived, shows buttons going online and offline, and
for each watched button prints once a second what actually arrives: decoded
frames per second, kb/s, end-to-end latency (arrival wall clock minus the
capture timestamp the button stamped) and frames lost (sequence gaps).
``--record DIR`` keeps every watched stream as Matroska, copied as received.
On a terminal (or with ``--keys``) typed keys act on alerts: console_keys.py.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import trio

from ..alerts.plans import LocalPlans
from ..clients import ConsoleClient, Disconnected, Reconnected
from ..errors import ConnectionRefused, RegistryError
from ..logs import setup_logging
from ..protocol import (
    Alert,
    AlertUpdate,
    ButtonState,
    Error,
    Media,
    Site,
    StreamDescription,
    Subscribed,
    TrackDescription,
    Unsubscribe,
)
from ..registry import load_registry
from .console_keys import ConsoleKeys, read_keys
from .common import (
    client_tls_of,
    DEFAULT_CONSOLES_PORT,
    CommandError,
    Output,
    add_relay_option,
    add_secret_dir_option,
    positive_float,
    read_text_file,
    relay_addresses,
    rounded,
    run_trio,
    say_goodbye,
    utc_clock,
    wait_for_stop,
    wall_us,
)

DEFAULT_OPERATOR = "duty-officer"
TOKEN_ENV = "PINKRELAY_CONSOLE_TOKEN"
#: Where ``pinkrelay serve`` puts an operator's secret on first start: DATA_DIR/<operator>.secret.
SECRET_FILE = "{operator}.secret"
#: The same file's name before it was renamed (it holds an account's secret, not a console token).
LEGACY_SECRET_FILE = "console-token"
DEFAULT_DATA_DIR = Path("var")
#: ButtonState events this soon after signing in are the relay's snapshot of every button.
SNAPSHOT_SECONDS = 0.3
#: Button state lines a second before the rest of that second's changes are summarised in one line
#: (a mass outage takes hundreds of buttons offline at once; the alert says so in one line).
STATE_LINES_PER_SECOND = 3
#: Live frames whose latency the summary's median is taken over (the most recent).
LATENCY_SAMPLES = 100_000
#: A stream watched for less than this is reported with the next second's numbers.
MIN_WINDOW = 0.5


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "console",
        allow_abbrev=False,
        help="a terminal console for the control room",
        description="Sign in to the relay as an operator, show alerts and button states, and watch "
        f"live streams. The operator's secret is read from --token-file, else ${TOKEN_ENV}, else "
        f"{DEFAULT_DATA_DIR}/OPERATOR.secret ({DEFAULT_DATA_DIR}/duty-officer.secret is written by "
        "'pinkrelay serve' on first start).",
    )
    add_relay_option(parser, DEFAULT_CONSOLES_PORT, "console")
    parser.add_argument(
        "--operator",
        default=DEFAULT_OPERATOR,
        metavar="NAME",
        help=f"operator name (default {DEFAULT_OPERATOR})",
    )
    parser.add_argument(
        "--token-file", metavar="FILE", help="file with the operator's secret or console token"
    )
    add_secret_dir_option(parser)
    parser.add_argument("--registry", metavar="FILE",
                        help="the relay's registry, for the action plan printed with each alert "
                        f"(default DATA_DIR/registry.csv; DATA_DIR's journal gives supervisors' edits)")
    parser.add_argument(
        "--watch",
        nargs="+",
        action="extend",
        default=[],
        metavar="BUTTON_ID",
        help="buttons to watch live",
    )
    parser.add_argument(
        "--record", metavar="DIR", help="record watched streams to DIR/<button>-<UTC>.mkv"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object per line")
    parser.add_argument("--duration", type=positive_float, metavar="S", help="stop after S seconds")
    parser.add_argument("--keys", action="store_true",
                        help="read the action keys (a, d, r, f: see 'h') from standard input even when it is "
                             "not a terminal, e.g. from a script (on a terminal they are always on)")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    setup_logging("text", "error")
    return run_trio(_main, args, Output(args.json))


def read_token(token_file: str | None, operator: str, environ: Any = os.environ,
               data_dir: str | Path | None = None) -> bytes:
    """The operator's secret or token: ``--token-file``, else the environment, else ``var/OPERATOR.secret``.

    A file holds either the secret alone (``DATA_DIR/duty-officer.secret``,
    or ``console-token`` in data directories made before that name) or
    ``OPERATOR TOKEN`` lines (a ``console_tokens_file``).
    """
    if token_file is None and environ.get(TOKEN_ENV):
        return environ[TOKEN_ENV].strip().encode()
    if token_file is None:
        where = Path(data_dir) if data_dir else DEFAULT_DATA_DIR
        candidates = [where / SECRET_FILE.format(operator=operator), where / LEGACY_SECRET_FILE]
        found = next((path for path in candidates if path.exists()), None)
        if found is None:
            raise CommandError(
                f"no secret for operator {operator!r}: pass --token-file FILE or set {TOKEN_ENV} ('pinkrelay "
                f"serve' writes DATA_DIR/duty-officer.secret on first start; looked for {candidates[0]})"
            )
        token_file = str(found)
    text = read_text_file(token_file, "console token file")
    lines = [
        line.split()
        for line in text.splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    if len(lines) == 1 and len(lines[0]) == 1:
        return lines[0][0].encode()
    for parts in lines:
        if len(parts) == 2 and parts[0] == operator:
            return parts[1].encode()
    raise CommandError(
        f"console token file {token_file} has no token for operator {operator!r} "
        "(expected the token alone, or 'OPERATOR TOKEN' lines)"
    )


async def _main(args: argparse.Namespace, out: Output) -> int:
    relays = relay_addresses(args.relay)
    token = read_token(args.token_file, args.operator, data_dir=args.data_dir)
    record_dir = _record_dir(args.record)
    client = ConsoleClient(relays, args.operator, token, reconnect=False, tls=client_tls_of(args))
    view = ConsoleView(client, out, record_dir=record_dir, plans=_local_plans(args, out))
    async with trio.open_nursery() as nursery:
        try:
            await nursery.start(client.run)
        except ConnectionRefused as error:
            raise ConnectionRefused(
                f"{error}; check --operator and that the token matches the relay's console tokens",
                code=error.code,
            ) from None
        client.reconnect = True
        out.say(f"signed in to the relay at {client.relays.current} as {args.operator}")
        for button in args.watch:
            view.watch(button)
        nursery.start_soon(view.run)
        if not args.json and (args.keys or sys.stdin.isatty()):
            nursery.start_soon(read_keys, ConsoleKeys(view.alerts, client.update_alert, out))
        reason = await wait_for_stop(args.duration)
        client.reconnect = False
        await say_goodbye([client.link], "console closed")
        nursery.cancel_scope.cancel()
    view.close()
    view.summary(reason)
    return 0


def _local_plans(args: argparse.Namespace, out: Output) -> LocalPlans | None:
    """The action plans of the relay's registry, when this machine has it (the relay's own, usually)."""
    data_dir = Path(args.data_dir) if args.data_dir else DEFAULT_DATA_DIR
    path = Path(args.registry) if args.registry else data_dir / "registry.csv"
    try:
        registry = load_registry(path)
    except RegistryError as error:
        if args.registry:
            raise
        out.say(f"(no action plans with alerts: {str(error).splitlines()[0]}; give --registry FILE)")
        return None
    return LocalPlans(registry, data_dir / "journal.sqlite3")


def _record_dir(path: str | None) -> Path | None:
    if path is None:
        return None
    directory = Path(path)
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise CommandError(
            f"--record {path}: cannot create the directory ({error.strerror or error})"
        ) from None
    if not os.access(directory, os.W_OK):
        raise CommandError(f"--record {path}: directory is not writable")
    return directory


def opus_duration_us(packet: bytes) -> int:
    """Duration of one Opus packet from its TOC byte (RFC 6716 §3.1)."""
    if not packet:
        return 20_000
    toc = packet[0]
    config, code = toc >> 3, toc & 3
    if config < 12:
        frame = (10_000, 20_000, 40_000, 60_000)[config % 4]
    elif config < 16:
        frame = (10_000, 20_000)[config % 2]
    else:
        frame = (2_500, 5_000, 10_000, 20_000)[config % 4]
    if code == 0:
        count = 1
    elif code in (1, 2):
        count = 2
    else:
        count = packet[1] & 0x3F if len(packet) > 1 else 1
    return frame * max(count, 1)


def _signature(tracks: Iterable[TrackDescription]) -> tuple[Any, ...]:
    return tuple(
        sorted(
            (t.track_id, t.kind, t.codec, t.width, t.height, t.sample_rate, t.channels)
            for t in tracks
        )
    )


@dataclass(eq=False)
class StreamView:
    """One watched button's stream: decoder, recorder and the current second's numbers."""

    button: str
    tracks: dict[int, TrackDescription] = field(default_factory=dict)
    signature: tuple[Any, ...] = ()
    decoder: Any = None
    catchup_left: int = 0
    last_seq: dict[int, int] = field(default_factory=dict)
    recorder: Any = None
    record_index: dict[int, int] = field(default_factory=dict)
    record_paths: list[Path] = field(default_factory=list)
    record_error: str = ""
    window_frames: int = 0
    window_bytes: int = 0
    window_dropped: int = 0
    window_latency: list[float] = field(default_factory=list)
    window_started: float = 0.0
    frames_decoded: int = 0
    frames_presented: int = 0
    #: Size of the last decoded picture, and the capture times of the first and last live frame.
    frame_size: tuple[int, int] | None = None
    first_live_us: int | None = None
    last_live_us: int | None = None
    catchup_decoded: int = 0
    media_received: int = 0
    dropped: int = 0
    decode_errors: int = 0
    latencies: deque[float] = field(default_factory=lambda: deque(maxlen=LATENCY_SAMPLES))

    @property
    def streaming(self) -> bool:
        return bool(self.tracks)

    def take_window(self, now: float) -> dict[str, Any]:
        seconds = max(now - self.window_started, 1e-6)
        stats = {
            "fps": round(self.window_frames / seconds, 1),
            "kbps": round(self.window_bytes * 8 / 1000 / seconds, 1),
            "latency_ms": rounded(statistics.median(self.window_latency), 1)
            if self.window_latency
            else None,
            "dropped": self.window_dropped,
        }
        self.window_frames = self.window_bytes = self.window_dropped = 0
        self.window_latency = []
        self.window_started = now
        return stats


class ConsoleView:
    """Turns a ConsoleClient's events into lines (or JSON) and per-stream statistics."""

    def __init__(
        self,
        client: ConsoleClient,
        out: Output,
        *,
        record_dir: Path | None = None,
        on_alert: Callable[[Alert], None] | None = None,
        plans: LocalPlans | None = None,
    ) -> None:
        self.client = client
        self.plans = plans
        self.out = out
        self.record_dir = record_dir
        self.on_alert = on_alert
        self.sites: dict[str, Site] = {}
        self.states: dict[str, str] = {}
        self.alerts: dict[str, Alert] = {}
        self.alert_latencies: dict[str, float] = {}
        self.streams: dict[str, StreamView] = {}
        self.snapshot_until = trio.current_time() + SNAPSHOT_SECONDS
        self.snapshot: dict[str, str] = {}
        #: Button state changes this second: how many were printed, and those held for the summary line.
        self.state_lines: dict[str, int] = {}
        self.held_states: dict[str, list[str]] = {}

    # -- running -----------------------------------------------------------------

    def watch(self, button: str) -> None:
        if button not in self.streams:
            self.streams[button] = StreamView(button=button, window_started=trio.current_time())
            self.client.subscribe(button)
            self.out.say(f"watching {self._name(button)}")

    async def run(self) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._stats_every_second)
            nursery.start_soon(self._snapshot_timer)
            nursery.start_soon(self._state_summaries)
            async for event in self.client.events():
                self.handle(event)

    def handle(self, event: Any) -> None:
        if isinstance(event, Media):
            self._media(event)
        elif isinstance(event, Alert):
            self._alert(event)
        elif isinstance(event, ButtonState):
            self._button_state(event)
        elif isinstance(event, Subscribed):
            self._described(event.button, event.tracks, event.catchup_frames, subscribed=True)
        elif isinstance(event, StreamDescription):
            self._described(event.button, event.tracks, 0, subscribed=False)
        elif isinstance(event, AlertUpdate):
            self._alert_update(event)
        elif isinstance(event, Unsubscribe):
            self.out.event("unsubscribed", button=event.button, reason=event.reason)
            self.out.say(f"STREAM {self._name(event.button)}: the relay ended it ({event.reason})")
        elif isinstance(event, Error):
            self.out.event("relay_error", code=event.code, message=event.message)
            self.out.say(f"relay: {event.message} ({event.code})")
        elif isinstance(event, Disconnected):
            self.out.event("disconnected", reason=event.reason)
            self.out.say(f"disconnected from the relay: {event.reason}; reconnecting")
        elif isinstance(event, Reconnected):
            self.snapshot_until = trio.current_time() + SNAPSHOT_SECONDS
            self.out.event("reconnected", attempt=event.attempt)
            self.out.say("reconnected to the relay; watching again")

    def _name(self, button: str) -> str:
        site = self.sites.get(button)
        return f"{button} ({site.name})" if site and site.name else button

    # -- alerts and button states ----------------------------------------------------

    def _alert(self, alert: Alert) -> None:
        known = self.alerts.get(alert.alert_id)
        self.alerts[alert.alert_id] = alert
        if known is not None and known.state == alert.state:
            return
        if alert.site is not None:
            self.sites.setdefault(alert.button, alert.site)
        latency = (wall_us() - alert.pressed_at) / 1000
        self.alert_latencies.setdefault(alert.alert_id, latency)
        site = alert.site
        self.out.event(
            "alert",
            alert_id=alert.alert_id,
            button=alert.button,
            site=site.name if site else "",
            state=alert.state,
            latency_ms=round(latency, 3),
        )
        self._report_snapshot()
        if trio.current_time() >= self.snapshot_until:
            age = f"arrived {latency:.1f} ms after the press"
        elif latency < 120_000:
            age = f"open since {latency / 1000:.0f} s ago"
        else:
            age = f"open since {latency / 60_000:.0f} min ago"
        what = {"offline": "button went silent", "mass_outage": "MASS OUTAGE"}.get(alert.kind, alert.kind.upper())
        repeat = f" (repeat press of alert {alert.duplicate_of})" if alert.duplicate_of else ""
        level = f", escalation level {alert.level}" if alert.level else ""
        place = site.name if site else "unknown site"
        self.out.say(
            f"ALERT  {what} " + (f"at {alert.button}: {place}" if alert.button else f"in {place}") + " - "
            f"{alert.state}{repeat}{level}, {utc_clock(alert.pressed_at)}, {age}"
            + ("; one alert for all its silent buttons, their count follows" if alert.kind == "mass_outage" else "")
        )
        if site is not None and trio.current_time() >= self.snapshot_until:
            where = ", ".join(
                part for part in (site.kind.replace("_", " "), site.address, site.district) if part
            )
            self.out.say(
                f"       {where}; map {site.latitude:.4f},{site.longitude:.4f}; alert id {alert.alert_id}"
            )
        if self.plans is not None and alert.state == "raised" and trio.current_time() >= self.snapshot_until:
            self._plan_lines(alert)
        if self.on_alert is not None:
            self.on_alert(alert)

    def _plan_lines(self, alert: Alert) -> None:
        """The action plan and the site's false alarms under a new alert (alerts/plans.py)."""
        assert self.plans is not None
        if alert.site is not None:
            count = self.plans.false_alarms(alert.site.name, wall_us())
            if count is not None:
                self.out.say(f"       RECORD {count} false alarm{'' if count == 1 else 's'} from this site in "
                             "12 months")
        plan = self.plans.plan_for(alert.button)
        if plan is None:
            return
        self.out.event("plan", alert_id=alert.alert_id, plan=plan)
        for number, step in enumerate(plan["steps"], start=1):
            self.out.say(f"       {'PLAN  ' if number == 1 else '      '} {number}. {step}")
        for contact in plan["contacts"]:
            self.out.say(f"       CALL   {contact['name']}" + (f": {contact['phone']}" if contact["phone"] else ""))
        for line in plan["notes"].splitlines():
            self.out.say(f"       NOTE   {line}")

    def _alert_update(self, update: AlertUpdate) -> None:
        known = self.alerts.get(update.alert_id)
        if known is not None and update.state != "note":
            self.alerts[update.alert_id] = replace(known, state=update.state, level=update.level or known.level)
        self.out.event(
            "alert_update", alert_id=update.alert_id, state=update.state, operator=update.operator
        )
        by = f" by {update.operator}" if update.operator else ""
        unit = f", unit {update.unit}" if update.unit else ""
        level = f", escalation level {update.level}" if update.level else ""
        note = f": {update.note}" if update.note else ""
        if known is not None and known.kind == "mass_outage" and update.operator == "relay" \
                and update.note.startswith("mass outage") and not update.level:
            self.out.say(f"OUTAGE {update.note} (alert {update.alert_id})")
            return
        self.out.say(f"UPDATE alert {update.alert_id}: {update.state}{by}{unit}{level}{note}")

    def _button_state(self, event: ButtonState) -> None:
        if event.site is not None:
            self.sites[event.button] = event.site
        previous = self.states.get(event.button)
        self.states[event.button] = event.state
        self.out.event("button_state", button=event.button, state=event.state)
        if previous == event.state:
            return
        if previous is None and trio.current_time() < self.snapshot_until:
            self.snapshot[event.button] = event.state
            return
        self._report_snapshot()
        printed = self.state_lines.get(event.state, 0)
        if printed >= STATE_LINES_PER_SECOND:
            self.held_states.setdefault(event.state, []).append(event.button)
            return
        self.state_lines[event.state] = printed + 1
        self.out.say(f"{event.state.upper():7} {self._name(event.button)}")

    async def _state_summaries(self) -> None:
        """Once a second: one line for the button state changes held back in that second."""
        while True:
            await trio.sleep(1.0)
            held, self.held_states = self.held_states, {}
            self.state_lines = {}
            for state, buttons in held.items():
                shown = ", ".join(buttons[:8]) + (f" and {len(buttons) - 8} more" if len(buttons) > 8 else "")
                self.out.say(f"{state.upper():7} {len(buttons)} more buttons: {shown}")

    async def _snapshot_timer(self) -> None:
        await trio.sleep_until(self.snapshot_until)
        self._report_snapshot()

    def _report_snapshot(self) -> None:
        """One line for the relay's sign-in burst of button states, instead of one per button."""
        if not self.snapshot:
            return
        online = sorted(button for button, state in self.snapshot.items() if state == "online")
        shown = ", ".join(online[:8]) + (f" and {len(online) - 8} more" if len(online) > 8 else "")
        self.out.say(
            f"{len(self.snapshot)} buttons registered: {len(online)} online"
            + (f" ({shown})" if online else "")
            + f", {len(self.snapshot) - len(online)} offline"
        )
        self.snapshot = {}

    # -- streams -----------------------------------------------------------------

    def _described(
        self, button: str, tracks: tuple[TrackDescription, ...], catchup: int, *, subscribed: bool
    ) -> None:
        view = self.streams.get(button)
        if view is None:
            return
        view.catchup_left = catchup if subscribed else view.catchup_left
        if not tracks:
            if view.tracks:
                self.out.say(f"STREAM {self._name(button)}: stopped (button disconnected)")
            elif subscribed:
                self.out.say(f"STREAM {self._name(button)}: not streaming yet; waiting for it")
            view.tracks = {}
            return
        signature = _signature(tracks)
        view.tracks = {track.track_id: track for track in tracks}
        if signature == view.signature:
            return
        view.signature = signature
        view.last_seq = {}
        self._close_recorder(view)
        video = next((t for t in tracks if t.kind == "video"), None)
        view.decoder = self._decoder(video) if video is not None else None
        parts = [
            f"{t.codec} {t.width}x{t.height}@{t.fps:g}"
            if t.kind == "video"
            else f"{t.codec} {t.sample_rate} Hz"
            for t in tracks
        ]
        self.out.say(f"STREAM {self._name(button)}: {', '.join(parts)}")

    def _decoder(self, track: TrackDescription) -> Any:
        from ..media import Decoder, MediaError

        try:
            return Decoder(_track_info(track), threads=1)
        except MediaError as error:
            self.out.say(f"cannot decode {track.codec}: {error}")
            return None

    def _media(self, media: Media) -> None:
        view = self.streams.get(media.button)
        if view is None:
            return
        track = view.tracks.get(media.track_id)
        if track is None:
            return
        arrival = wall_us()
        data = media.data
        view.media_received += 1
        if not (track.kind == "video" and view.catchup_left):
            view.window_bytes += len(data)
        last = view.last_seq.get(media.track_id)
        if last is not None and media.seq > last + 1:
            view.dropped += media.seq - last - 1
            view.window_dropped += media.seq - last - 1
        if last is None or media.seq > last:
            view.last_seq[media.track_id] = media.seq
        if track.kind == "video":
            self._video(view, media, data, arrival)
        if self.record_dir is not None and not view.record_error:
            self._record(view, track, media, data)

    def _video(self, view: StreamView, media: Media, data: bytes, arrival: int) -> None:
        from ..media import MediaError

        live = view.catchup_left == 0
        if not live:
            view.catchup_left -= 1
        frames: list[Any] = []
        if view.decoder is not None:
            try:
                frames = view.decoder.decode(data, pts_us=media.timestamp)
            except MediaError:
                view.decode_errors += 1
                video = next(t for t in view.tracks.values() if t.kind == "video")
                view.decoder = self._decoder(video)
                self.client.request_keyframe(view.button)
        view.frames_decoded += len(frames)
        if frames:
            view.frame_size = (frames[-1].width, frames[-1].height)
        if not live:
            view.catchup_decoded += len(frames)
            return
        if frames:
            if view.first_live_us is None:
                view.first_live_us = media.timestamp
            view.last_live_us = media.timestamp
        view.frames_presented += len(frames)
        view.window_frames += len(frames)
        latency = (arrival - media.timestamp) / 1000
        view.window_latency.append(latency)
        view.latencies.append(latency)

    def _record(self, view: StreamView, track: TrackDescription, media: Media, data: bytes) -> None:
        from ..media import EncodedPacket, MediaError, Recorder

        assert self.record_dir is not None
        try:
            if view.recorder is None:
                ordered = sorted(
                    view.tracks.values(), key=lambda t: (t.kind != "video", t.track_id)
                )
                stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
                path = self.record_dir / f"{view.button}-{stamp}.mkv"
                number = 1
                while path.exists():
                    number += 1
                    path = self.record_dir / f"{view.button}-{stamp}-{number}.mkv"
                view.recorder = Recorder(path, [_track_info(t) for t in ordered])
                view.record_index = {t.track_id: i for i, t in enumerate(ordered)}
                view.record_paths.append(path)
                self.out.event("recording", button=view.button, path=str(path))
                self.out.say(f"RECORD {self._name(view.button)} -> {path}")
            if track.kind == "video":
                duration = round(1_000_000 / (track.fps or 30.0))
            elif track.codec == "opus":
                duration = opus_duration_us(data)
            else:
                duration = round(1024 * 1_000_000 / (track.sample_rate or 48000))
            packet = EncodedPacket(
                kind=track.kind,
                data=data,
                pts_us=media.timestamp,
                duration_us=duration,
                keyframe=media.keyframe,
            )
            view.recorder.write(view.record_index[media.track_id], packet)
        except (MediaError, OSError, ValueError) as error:
            view.record_error = str(error)
            self.out.event("error", button=view.button, reason=f"recording stopped: {error}")
            self.out.say(f"RECORD {view.button}: recording stopped: {error}")

    def _close_recorder(self, view: StreamView) -> None:
        from ..media import MediaError

        if view.recorder is None:
            return
        recorder, view.recorder = view.recorder, None
        try:
            recorder.close()
        except MediaError as error:
            view.record_error = str(error)
            self.out.say(f"RECORD {view.button}: cannot finish {recorder.path}: {error}")

    async def _stats_every_second(self) -> None:
        next_report = trio.current_time() + 1.0
        while True:
            await trio.sleep_until(next_report)
            next_report += 1.0
            now = trio.current_time()
            for view in self.streams.values():
                if now - view.window_started < MIN_WINDOW:
                    continue
                if not view.streaming and not view.window_bytes:
                    view.take_window(now)
                    continue
                stats = view.take_window(now)
                self.out.event("stream_stats", button=view.button, **stats)
                latency = "n/a" if stats["latency_ms"] is None else f"{stats['latency_ms']:.1f} ms"
                self.out.say(
                    f"STREAM {view.button}: {stats['fps']:5.1f} fps {stats['kbps']:7.1f} kb/s  "
                    f"latency {latency}  dropped {stats['dropped']}  (decoded {view.frames_decoded})"
                )

    # -- the end -----------------------------------------------------------------

    def close(self) -> None:
        for view in self.streams.values():
            self._close_recorder(view)

    def summary(self, reason: str) -> None:
        streams = {}
        for view in self.streams.values():
            latency = statistics.median(view.latencies) if view.latencies else None
            size = view.frame_size
            span = (
                (view.last_live_us - view.first_live_us) / 1e6
                if view.first_live_us is not None and view.last_live_us is not None
                else 0.0
            )
            streams[view.button] = {
                "frames_decoded": view.frames_decoded,
                "frames_presented": view.frames_presented,
                "video_size": f"{size[0]}x{size[1]}" if size else None,
                "live_seconds": round(span, 3),
                "dropped": view.dropped,
                "decode_errors": view.decode_errors,
                "latency_ms": rounded(latency, 1),
                "recordings": [str(path) for path in view.record_paths],
            }
        self.out.event("summary", alerts=len(self.alerts), streams=streams)
        self.out.say(f"console stopped ({reason}): {len(self.alerts)} alert(s) seen")
        for button, stats in streams.items():
            latency = "n/a" if stats["latency_ms"] is None else f"{stats['latency_ms']:.1f} ms"
            size = f" ({stats['video_size']})" if stats["video_size"] else ""
            self.out.say(
                f"  {self._name(button)}: {stats['frames_decoded']} frames decoded{size}, "
                f"{stats['live_seconds']:.1f} s live, {stats['dropped']} dropped, "
                f"{stats['decode_errors']} decode errors, median latency {latency}"
            )
            for path in stats["recordings"]:
                self.out.say(f"  recorded {path}")


def _track_info(track: TrackDescription) -> Any:
    from ..media import TrackInfo

    return TrackInfo(
        kind=track.kind,
        codec=track.codec,
        width=track.width,
        height=track.height,
        fps=track.fps,
        sample_rate=track.sample_rate,
        channels=track.channels,
        bitrate=track.bitrate,
        extradata=track.extradata,
    )
