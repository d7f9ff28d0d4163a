"""``pinkrelay button``: one real button, streaming a camera, a file or a test pattern.

It connects and authenticates with the button's secret, encodes H.264 video
and Opus audio in real time (paced by the source's own timestamps), stamps
every packet with its capture time, and keeps the connection alive with
heartbeats and reconnects. A press comes from the Enter or space key (when
stdin is a terminal), from SIGUSR1, or from ``--press-after``; the press and
the relay's acknowledgement are printed with the latency.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import sys
import termios
import tty
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import trio

from ..clients import ButtonClient
from ..errors import ConnectionRefused
from ..logs import setup_logging
from ..protocol.events import MAX_ID_LENGTH
from .common import (
    client_tls_of,
    DEFAULT_BUTTONS_PORT,
    CommandError,
    Output,
    VideoSpec,
    add_relay_option,
    bitrate,
    non_negative_float,
    positive_float,
    read_text_file,
    relay_addresses,
    run_trio,
    say_goodbye,
    utc_clock,
    video_spec,
    wait_for_stop,
    wall_us,
)

DEFAULT_VIDEO = VideoSpec(640, 360, 30.0)
AUDIO_BITRATE = 32_000
#: A paced source this far behind its schedule (a slow encoder) skips ahead instead of bursting.
MAX_LAG = 0.5
#: At most one keyframe on request per this many seconds (see simulate.KEYFRAME_INTERVAL).
KEYFRAME_INTERVAL = 0.5
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "button",
        allow_abbrev=False,
        help="run one button (camera, media file or test pattern)",
        description="Run one panic button: stream live video and audio to the relay and raise an "
        "alert on Enter/space (in a terminal), on SIGUSR1, or after --press-after seconds.",
    )
    add_relay_option(parser, DEFAULT_BUTTONS_PORT, "button")
    parser.add_argument(
        "--id", required=True, metavar="ID", help="this button's id in the registry"
    )
    parser.add_argument(
        "--secret-file", required=True, metavar="FILE", help="file holding this button's secret"
    )
    parser.add_argument(
        "--source",
        default="test",
        metavar="test|FILE|/dev/videoN",
        help="'test' pattern and tone (default), a media file (looped), or a V4L2 camera",
    )
    parser.add_argument(
        "--audio-device",
        metavar="ALSA",
        help="microphone for a camera source (e.g. default, hw:1,0)",
    )
    parser.add_argument(
        "--press-after",
        type=non_negative_float,
        metavar="SECONDS",
        help="press once after this delay",
    )
    parser.add_argument(
        "--video",
        type=video_spec,
        metavar="WxH@FPS",
        help=f"capture/encode size and rate (default {DEFAULT_VIDEO}; a file keeps its own unless given)",
    )
    parser.add_argument(
        "--bitrate",
        type=bitrate,
        default=800_000,
        metavar="BPS",
        help="video bit rate (default 800k)",
    )
    parser.add_argument(
        "--speaker",
        action="store_true",
        help="play operators' talk-back on the sound card (sounddevice or ALSA's aplay)",
    )
    parser.add_argument(
        "--talkback-wav",
        metavar="FILE",
        help="also write operators' talk-back to this WAV file (48 kHz mono), e.g. for tests",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object per line")
    parser.add_argument("--duration", type=positive_float, metavar="S", help="stop after S seconds")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    setup_logging("text", "warning")
    out = Output(args.json)
    return run_trio(_main, args, out)


def _check_id(button_id: str) -> None:
    if len(button_id) > MAX_ID_LENGTH or not _ID.match(button_id):
        raise CommandError(
            f"--id {button_id!r} is not a button id (letters, digits, '.', '_', '-'; "
            f"at most {MAX_ID_LENGTH} characters)"
        )


def _open_source(args: argparse.Namespace) -> Any:
    from ..media import open_source

    spec = args.video or DEFAULT_VIDEO
    return open_source(
        args.source,
        width=spec.width,
        height=spec.height,
        fps=spec.fps,
        label=args.id,
        audio_device=args.audio_device,
        loop=True,
    )


async def _main(args: argparse.Namespace, out: Output) -> int:
    _check_id(args.id)
    relays = relay_addresses(args.relay)
    secret = read_text_file(args.secret_file, "secret file").strip().encode()
    source = _open_source(args)
    player = None
    try:
        streamer = Streamer(args, source, out)
        player = _talkback_player(args, streamer)
        client = ButtonClient(
            relays, args.id, secret, tracks=streamer.track_specs(), reconnect=False, tls=client_tls_of(args),
            talkback=player,
        )
        streamer.client = client
        with trio.open_signal_receiver(signal.SIGUSR1) as usr1, _keyboard() as keys:
            async with trio.open_nursery() as nursery:
                try:
                    await nursery.start(client.run)
                except ConnectionRefused as error:
                    raise ConnectionRefused(
                        f"{error}; check that {args.id} is in the relay's registry and that "
                        f"{args.secret_file} holds its secret",
                        code=error.code,
                    ) from None
                client.reconnect = True
                streamer.connected(client.relays.current, keys is not None)
                stop = trio.Event()
                async with trio.open_nursery() as tasks:
                    tasks.start_soon(streamer.stream_video)
                    if streamer.audio_encoder is not None:
                        tasks.start_soon(streamer.stream_audio)
                    tasks.start_soon(streamer.watch_connection)
                    tasks.start_soon(streamer.press_on_signal, usr1)
                    if args.press_after is not None:
                        tasks.start_soon(streamer.press_after, args.press_after)
                    if keys is not None:
                        tasks.start_soon(streamer.press_on_keys, keys, stop)
                    reason = await wait_for_stop(args.duration, stop)
                    tasks.cancel_scope.cancel()
                client.reconnect = False
                await say_goodbye([client.link], "button stopped")
                nursery.cancel_scope.cancel()
        streamer.summary(reason, player)
    finally:
        source.close()
        if player is not None:
            player.close()
    return 0


def _talkback_player(args: argparse.Namespace, streamer: Streamer) -> Any:
    """The talk-back player for --speaker and --talkback-wav; None without either (not offered)."""
    if not args.speaker and not args.talkback_wav:
        return None
    from ..media import MediaError
    from ..media.talkback import SpeakerSink, TalkBackPlayer, WavSink

    sinks: list[Any] = []
    try:
        if args.talkback_wav:
            sinks.append(WavSink(args.talkback_wav))
        if args.speaker:
            sinks.append(SpeakerSink())
    except MediaError as error:
        for sink in sinks:
            sink.close()
        raise CommandError(str(error)) from None
    return TalkBackPlayer(sinks, on_talk=streamer.talk)


@contextmanager
def _keyboard() -> Iterator[int | None]:
    """stdin in cbreak mode (keys arrive one by one, no echo) when it is a terminal, else None.

    The mode is set before connecting, so a key pressed while the button
    connects is kept, and the terminal is put back as it was on the way out.
    """
    fd = sys.stdin.fileno() if sys.stdin is not None and sys.stdin.isatty() else None
    saved = None
    if fd is not None:
        try:
            saved = termios.tcgetattr(fd)
        except termios.error:
            fd = None
    if fd is None or saved is None:
        yield None
        return
    tty.setcbreak(fd, termios.TCSANOW)
    try:
        yield fd
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


class Streamer:
    """Encodes the source in real time and hands packets to the ButtonClient."""

    def __init__(self, args: argparse.Namespace, source: Any, out: Output) -> None:
        from ..media import AudioEncoder, CameraSource, FileSource, MediaError, VideoEncoder

        self.args = args
        self.source = source
        self.out = out
        self.button_id = args.id
        self.client: ButtonClient | None = None
        self.live = isinstance(source, CameraSource)
        width, height, fps = source.width, source.height, source.fps
        if isinstance(source, FileSource) and args.video is not None:
            width, height = args.video.width, args.video.height
        width, height = width - width % 2, height - height % 2
        self.fps = fps or 30.0
        try:
            self.video_encoder = VideoEncoder(width, height, self.fps, args.bitrate, 1.0)
            self.audio_encoder = (
                AudioEncoder("opus", 48000, min(max(source.channels, 1), 2), AUDIO_BITRATE)
                if source.sample_rate
                else None
            )
        except (MediaError, ValueError) as error:
            raise CommandError(f"cannot encode {args.source}: {error}") from None
        self._media_error = MediaError
        self._described = self.video_encoder.track_info
        self._origin: float | None = None
        self._forced_at = float("-inf")
        self._first_position: dict[str, float] = {}
        self.started_at = trio.current_time()
        self.video_sent = 0
        self.video_bytes = 0
        self.video_dropped = 0
        self.video_offline = 0
        self.audio_sent = 0
        self.audio_dropped = 0
        self.presses = 0
        self.talks = 0
        self.acked: list[float] = []
        if isinstance(source, FileSource):
            self.description = f"file {source.path} ({width}x{height} at {self.fps:g} fps, looped)"
        elif self.live:
            self.description = f"camera {args.source} ({width}x{height} at {self.fps:g} fps)"
        else:
            self.description = f"test pattern {width}x{height} at {self.fps:g} fps"

    def track_specs(self) -> list[dict[str, Any]]:
        specs = [self.video_encoder.track_info.to_dict()]
        if self.audio_encoder is not None:
            specs.append(self.audio_encoder.track_info.to_dict())
        return specs

    def connected(self, relay: Any, keys: bool) -> None:
        self.started_at = trio.current_time()
        audio = (
            f" + {self.audio_encoder.track_info.codec} audio"
            if self.audio_encoder
            else " (no audio)"
        )
        self.out.event("connected", button=self.button_id, relay=str(relay))
        self.out.say(f"button {self.button_id}: connected to the relay at {relay}")
        self.out.say(f"streaming {self.description}, H.264 {self.args.bitrate // 1000} kb/s{audio}")
        keys_hint = "Enter or space, or " if keys else ""
        stop_hint = "q or Ctrl-C" if keys else "Ctrl-C"
        self.out.say(
            f"to raise an alert: {keys_hint}kill -USR1 {os.getpid()}; {stop_hint} stops the button"
        )

    # -- pacing ------------------------------------------------------------------

    async def _pace(self, kind: str, frame: Any, count: int) -> None:
        """Sleep until ``frame`` is due, so a file or test source runs in real time."""
        if self.live:
            return
        if frame.pts is not None and frame.time_base is not None:
            position = float(frame.pts * frame.time_base)
        else:
            position = count / self.fps
        first = self._first_position.setdefault(kind, position)
        now = trio.current_time()
        if self._origin is None:
            self._origin = now
        due = self._origin + (position - first)
        if due < now - MAX_LAG:
            self._origin = now - (position - first)
            return
        await trio.sleep_until(due)

    async def _next(self, frames: Any) -> Any:
        try:
            return await trio.to_thread.run_sync(next, frames, None, abandon_on_cancel=True)
        except self._media_error as error:
            raise CommandError(str(error)) from None

    # -- streaming ---------------------------------------------------------------

    async def stream_video(self) -> None:
        client = self.client
        assert client is not None
        frames = self.source.video_frames()
        count = 0
        while True:
            frame = await self._next(frames)
            if frame is None:
                raise CommandError(f"source {self.args.source} stopped delivering video")
            await self._pace("video", frame, count)
            count += 1
            if not client.connected.is_set():
                self.video_offline += 1
                continue
            captured = wall_us()
            now = trio.current_time()
            if client.needs_keyframe and now - self._forced_at >= KEYFRAME_INTERVAL:
                self.video_encoder.force_keyframe()
                self._forced_at = now
            try:
                packets = await trio.to_thread.run_sync(self.video_encoder.encode, frame)
            except self._media_error as error:
                raise CommandError(str(error)) from None
            if self.video_encoder.track_info is not self._described:
                self._described = self.video_encoder.track_info
                client.set_tracks(self.track_specs())
            for packet in packets:
                if client.send_media("video", packet.data, captured, packet.keyframe):
                    self.video_sent += 1
                    self.video_bytes += len(packet.data)
                else:
                    self.video_dropped += 1

    async def stream_audio(self) -> None:
        client = self.client
        encoder = self.audio_encoder
        assert client is not None and encoder is not None
        frames = self.source.audio_frames()
        base_us: int | None = None
        count = 0
        while True:
            frame = await self._next(frames)
            if frame is None:
                return
            await self._pace("audio", frame, count)
            count += 1
            if base_us is None:
                base_us = wall_us()
            try:
                packets = encoder.encode(frame)
            except self._media_error as error:
                raise CommandError(str(error)) from None
            for packet in packets:
                if client.send_media("audio", packet.data, base_us + packet.pts_us, True):
                    self.audio_sent += 1
                else:
                    self.audio_dropped += 1

    async def watch_connection(self) -> None:
        client = self.client
        assert client is not None
        while True:
            link = client.link
            while client.link is link and client.connected.is_set():
                await trio.sleep(0.2)
            reason = (
                (link.closed_reason if link is not None else "")
                or client.last_error
                or "connection lost"
            )
            self.out.event("reconnect", button=self.button_id, reason=reason)
            self.out.say(f"disconnected from the relay: {reason}; reconnecting")
            await client.connected.wait()
            self.out.say("reconnected to the relay")

    # -- presses -----------------------------------------------------------------

    async def press(self, how: str) -> None:
        client = self.client
        assert client is not None
        pending = client.start_press()
        alert = pending.alert
        self.presses += 1
        self.out.event(
            "press", button=self.button_id, alert_id=alert.alert_id, t=alert.pressed_at / 1e6
        )
        offline = (
            "" if client.connected.is_set() else " (offline: sent as soon as the relay is back)"
        )
        self.out.say(
            f"PRESS  ({how}) alert {alert.alert_id} at {utc_clock(alert.pressed_at)}{offline}"
        )
        await pending.done.wait()
        receipt = pending.receipt
        assert receipt is not None
        self.acked.append(receipt.latency_ms)
        self.out.event(
            "acked",
            button=self.button_id,
            alert_id=receipt.alert_id,
            latency_ms=round(receipt.latency_ms, 3),
        )
        note = ", already recorded" if receipt.duplicate else ""
        self.out.say(
            f"ACKED  alert {receipt.alert_id} stored by the relay {receipt.latency_ms:.1f} ms after the "
            f"press (attempt {receipt.attempts}{note})"
        )

    async def press_after(self, delay: float) -> None:
        await trio.sleep(delay)
        await self.press(f"after {delay:g} s")

    async def press_on_signal(self, signals: Any) -> None:
        async with trio.open_nursery() as nursery:
            async for _ in signals:
                nursery.start_soon(self.press, "SIGUSR1")

    async def press_on_keys(self, fd: int, stop: trio.Event) -> None:
        """Enter or space presses; q stops the button."""
        async with trio.open_nursery() as nursery:
            while True:
                await trio.lowlevel.wait_readable(fd)
                data = os.read(fd, 64)
                if not data or b"q" in data.lower():
                    stop.set()
                    return
                for _ in range(sum(data.count(key) for key in (b"\n", b"\r", b" "))):
                    nursery.start_soon(self.press, "key")

    # -- talk-back ---------------------------------------------------------------

    def talk(self, what: str, message: Any) -> None:
        """An operator began or stopped speaking to this button (TalkBackPlayer's on_talk)."""
        if what == "start":
            self.talks += 1
            about = f" about alert {message.alert_id}" if message.alert_id else ""
            self.out.event("talk", button=self.button_id, talk_id=message.talk_id, operator=message.operator,
                           alert_id=message.alert_id)
            self.out.say(f"TALK   {message.operator or 'an operator'} is speaking{about}")
        else:
            self.out.event("talk-end", button=self.button_id, talk_id=message.talk_id)
            self.out.say("TALK   ended")

    # -- summary -----------------------------------------------------------------

    def summary(self, reason: str, player: Any = None) -> None:
        elapsed = trio.current_time() - self.started_at
        kbps = self.video_bytes * 8 / 1000 / elapsed if elapsed > 0 else 0.0
        latency = sorted(self.acked)
        median = latency[len(latency) // 2] if latency else None
        self.out.event(
            "summary",
            button=self.button_id,
            seconds=round(elapsed, 3),
            video_frames=self.video_sent,
            video_kbps=round(kbps, 1),
            audio_packets=self.audio_sent,
            dropped=self.video_dropped + self.audio_dropped,
            presses=self.presses,
            talks=self.talks,
            acks=len(self.acked),
            ack_latency_ms=None if median is None else round(median, 3),
        )
        acks = f", median ack {median:.1f} ms" if median is not None else ""
        if player is not None:
            heard = sorted(player.latency_ms())
            talk_latency = f", median mouth-to-speaker {heard[len(heard) // 2]:.0f} ms" if heard else ""
            acks += f"; {self.talks} talk-back session(s), {player.packets} packets played{talk_latency}"
        self.out.say(
            f"stopped ({reason}) after {elapsed:.1f} s: {self.video_sent} video frames "
            f"({kbps:.0f} kb/s), {self.audio_sent} audio packets, "
            f"{self.video_dropped + self.audio_dropped} dropped, {self.video_offline} frames while offline; "
            f"{self.presses} press(es), {len(self.acked)} acknowledged{acks}"
        )
