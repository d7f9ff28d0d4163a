"""Load generator processes for ``benchmarks/load.py``: simulated buttons and stripped consoles.

Not meant to be run by hand. ``load.py`` starts::

    python benchmarks/load_clients.py buttons    # B buttons in one trio process
    python benchmarks/load_clients.py consoles   # C consoles in one trio process

and talks to each over stdin/stdout, one JSON object per line:

1. load.py writes the settings (relay address, identities, clip file, ...);
2. the generator connects and handshakes every client, then prints
   ``{"ready": ...}`` (for buttons: the relay-assigned track ids);
3. load.py writes the schedule: absolute wall-clock times (µs since the epoch)
   for ``media_start``, ``alerts_start``, ``stop`` and the measurement
   ``phases`` (``[name, start_us, end_us]``);
4. the generator runs it, keeps reading for ``tail`` seconds after ``stop``,
   prints one result line and exits.

Whatever happens, a generator exits by itself: on end of stdin (load.py went
away), or ``hard_timeout`` seconds after the schedule's stop time.

Buttons use the sans-IO ``ButtonConnection`` directly over trio sockets and
replay one pre-encoded clip (no PyAV at run time); every media message gets a
fresh capture timestamp (wall clock, µs) stamped just before it is sent.
Consoles do the handshake with ``ConsoleConnection`` and then only read: each
received buffer goes through the compiled ``FrameDecoder``; per media frame
they do a few integer operations (count, sequence check, latency sample on
video END frames). Control frames are rare and decoded with ``decode_body``.
"""

from __future__ import annotations

import json
import math
import os
import pickle
import select
import sys
import time
from typing import Any

import trio

from pinkrelay._core import COMPILED, FrameType
from pinkrelay.errors import PinkRelayError
from pinkrelay.protocol import (
    Alert,
    AlertAck,
    ButtonConnection,
    Challenge,
    ConsoleConnection,
    Error,
    Goodbye,
    Heartbeat,
    StreamDescription,
    Subscribe,
    TrackDescription,
    Welcome,
    decode_body,
)

HEARTBEAT_EVERY = 5.0
RECV_BYTES = 256 * 1024
CONNECT_CONCURRENCY = 32

_MEDIA = int(FrameType.MEDIA)
_ALERT = int(FrameType.ALERT)
_SUBSCRIBED = int(FrameType.SUBSCRIBED)
_DESCRIPTION = int(FrameType.STREAM_DESCRIPTION)
_GOODBYE = int(FrameType.GOODBYE)
_ERROR = int(FrameType.ERROR)
_END = 0x02
_VIDEO_LANE = 3


def wall_us() -> int:
    return time.time_ns() // 1000


def emit(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, separators=(",", ":")) + "\n")
    sys.stdout.flush()


def percentiles(values: list[int] | list[float]) -> dict[str, Any]:
    """Nearest-rank p50/p90/p99/p99.9 and max of ``values``."""
    if not values:
        return {"n": 0}
    ordered = sorted(values)
    n = len(ordered)

    def rank(fraction: float) -> Any:
        index = max(1, math.ceil(fraction * n - 1e-9))
        return ordered[min(index, n) - 1]

    return {
        "n": n,
        "p50": rank(0.50),
        "p90": rank(0.90),
        "p99": rank(0.99),
        "p999": rank(0.999),
        "max": ordered[-1],
    }


async def read_line() -> str:
    return await trio.to_thread.run_sync(sys.stdin.readline, abandon_on_cancel=True)


async def handshake(stream: trio.SocketStream, conn: Any, timeout: float = 20.0) -> list[Any]:
    """Complete the handshake; returns the events decoded after ``welcome``."""
    with trio.fail_after(timeout):
        await stream.send_all(conn.hello(trio.current_time()))
        while True:
            data = await stream.receive_some(65536)
            if not data:
                raise RuntimeError("relay closed the connection during the handshake")
            conn.receive_data(data, trio.current_time())
            for event in conn.events():
                if isinstance(event, Challenge):
                    await stream.send_all(conn.authenticate(trio.current_time()))
                elif isinstance(event, Welcome):
                    return list(conn.events())
                elif isinstance(event, (Error, Goodbye)):
                    raise RuntimeError(f"relay refused {conn.identity}: {event}")  # noqa: TRY004


def to_trio(wall_us_value: int, offset: float) -> float:
    """A wall-clock µs time on trio's clock (``offset`` = trio - wall, in s)."""
    return wall_us_value / 1e6 + offset


# -- buttons ---------------------------------------------------------------------------


def load_clip(path: str, target_bitrate: int, pad: bool) -> dict[str, Any]:
    """The cached clip; with ``pad``, video packets grow to the target bit rate.

    x264 undershoots its target on a synthetic test pattern by a factor of 2
    or more. The relay does not look inside payloads, but message sizes set
    the per-byte cost, so each video packet is padded in proportion with an
    H.264 filler-data NAL unit (type 12), which every decoder skips: the
    stream stays valid and keyframes stay proportionally larger.
    """
    with open(path, "rb") as handle:
        clip = pickle.load(handle)
    video = [p for p in clip["packets"] if p[0]]
    seconds = clip["duration_us"] / 1e6
    actual = sum(len(p[1]) for p in video) * 8 / seconds
    clip["encoded_video_bitrate"] = round(actual)
    factor = target_bitrate / actual if pad and actual < target_bitrate else 1.0
    if factor > 1.0:
        packets = []
        for is_video, data, pts, key in clip["packets"]:
            if is_video:
                extra = round(len(data) * (factor - 1.0))
                if extra >= 6:
                    data = data + b"\x00\x00\x00\x01\x0c" + b"\xff" * (extra - 6) + b"\x80"
            packets.append((is_video, data, pts, key))
        clip["packets"] = packets
    clip["video_bitrate"] = round(sum(len(p[1]) for p in clip["packets"] if p[0]) * 8 / seconds)
    clip["audio_bitrate"] = round(sum(len(p[1]) for p in clip["packets"] if not p[0]) * 8 / seconds)
    clip["messages_per_second"] = len(clip["packets"]) / seconds
    clip["padded"] = factor > 1.0
    return clip


class Button:
    def __init__(self, index: int, button_id: str, secret: str) -> None:
        self.index = index
        self.button_id = button_id
        self.conn = ButtonConnection(button_id, secret.encode())
        self.stream: trio.SocketStream | None = None
        self.lock = trio.StrictFIFOLock()
        self.video_track = 0
        self.audio_track = 0
        self.video_seq = 0
        self.audio_seq = 0
        #: phase -> [video messages, audio messages, wire bytes]
        self.sent: dict[str, list[int]] = {}
        self.closed: str | None = None

    async def send(self, data: bytes) -> None:
        async with self.lock:
            await self.stream.send_all(data)


async def run_buttons(settings: dict[str, Any]) -> None:
    host, port = settings["relay"]
    clip = load_clip(settings["clip"], settings["bitrate"], settings["pad"])
    video_info, audio_info = clip["video"], clip["audio"]
    buttons = [Button(i, b, s) for i, (b, s) in enumerate(settings["buttons"])]
    limiter = trio.CapacityLimiter(CONNECT_CONCURRENCY)

    async def connect(button: Button) -> None:
        async with limiter:
            button.stream = await trio.open_tcp_stream(host, port)
            await handshake(button.stream, button.conn)
            ids = button.conn.track_ids
            button.video_track, button.audio_track = ids[0], ids[1]
            description = StreamDescription(
                tracks=(
                    TrackDescription(
                        track_id=button.video_track,
                        kind="video",
                        codec="h264",
                        width=video_info["width"],
                        height=video_info["height"],
                        fps=float(video_info["fps"]),
                        bitrate=int(clip["video_bitrate"]),
                        extradata=video_info["extradata"],
                    ),
                    TrackDescription(
                        track_id=button.audio_track,
                        kind="audio",
                        codec=audio_info["codec"],
                        sample_rate=audio_info["sample_rate"],
                        channels=audio_info["channels"],
                        bitrate=audio_info["bitrate"],
                        extradata=audio_info["extradata"],
                    ),
                )
            )
            await button.stream.send_all(button.conn.send(description, trio.current_time()))

    stop_reasons: list[str] = []
    acks: list[tuple[str, int, bool]] = []
    pressed: dict[str, int] = {}
    lags: list[float] = []

    async def reader(button: Button) -> None:
        stream = button.stream
        conn = button.conn
        while True:
            try:
                data = await stream.receive_some(65536)
            except (trio.BrokenResourceError, trio.ClosedResourceError) as error:
                button.closed = f"connection lost: {error}"
                return
            now = wall_us()
            if not data:
                button.closed = button.closed or "relay closed the connection"
                return
            conn.receive_data(data, trio.current_time())
            try:
                for event in conn.events():
                    if isinstance(event, AlertAck):
                        acks.append((event.alert_id, now, event.duplicate))
                    elif isinstance(event, (Goodbye, Error)):
                        button.closed = f"relay said {event}"
            except PinkRelayError as error:
                button.closed = f"protocol error: {error}"
                return

    async def heartbeats() -> None:
        while True:
            await trio.sleep(HEARTBEAT_EVERY)
            for button in buttons:
                if button.closed is None:
                    frame = button.conn.send(Heartbeat(sent_at=wall_us()), trio.current_time())
                    await button.send(frame)

    async def media(
        button: Button, start: float, stop: float, phases: list[tuple[str, int, int]]
    ) -> None:
        packets = clip["packets"]
        duration = clip["duration_us"] / 1e6
        send_media = button.conn.send_media
        stream = button.stream
        lock = button.lock
        sent = button.sent
        loop = 0
        while True:
            base = start + loop * duration
            for is_video, data, pts, keyframe in packets:
                due = base + pts / 1e6
                if due >= stop:
                    return
                if trio.current_time() < due:
                    await trio.sleep_until(due)
                async with lock:
                    ts = wall_us()
                    if is_video:
                        track, seq = button.video_track, button.video_seq
                        button.video_seq += 1
                    else:
                        track, seq = button.audio_track, button.audio_seq
                        button.audio_seq += 1
                    frames = send_media(track, seq, ts, data, keyframe)
                    wire = frames[0] if len(frames) == 1 else b"".join(frames)
                    await stream.send_all(wire)
                for name, w0, w1 in phases:
                    if w0 <= ts < w1:
                        tally = sent.get(name)
                        if tally is None:
                            tally = sent[name] = [0, 0, 0]
                        tally[0 if is_video else 1] += 1
                        tally[2] += len(wire)
                        lags.append(trio.current_time() - due)
            loop += 1

    async def press(button: Button, alert_id: str) -> None:
        async with button.lock:
            at = wall_us()
            frame = button.conn.send(Alert(alert_id=alert_id, pressed_at=at), trio.current_time())
            pressed[alert_id] = at
            await button.stream.send_all(frame)

    async def alerts(
        start: float, stop: float, rate: float, designated: list[Button], tag: str, nursery: Any
    ) -> None:
        k = 0
        while True:
            due = start + k / rate
            if due >= stop:
                return
            await trio.sleep_until(due)
            button = designated[k % len(designated)]
            if button.closed is None:
                nursery.start_soon(press, button, f"{tag}-{k}")
            k += 1

    with trio.CancelScope() as everything:
        async with trio.open_nursery() as nursery:
            pipe = _Pipe()
            nursery.start_soon(pipe.run)
            with trio.fail_after(settings.get("connect_timeout", 60)):
                async with trio.open_nursery() as connecting:
                    for button in buttons:
                        connecting.start_soon(connect, button)
            for button in buttons:
                nursery.start_soon(reader, button)
            nursery.start_soon(heartbeats)
            emit(
                {
                    "ready": True,
                    "tracks": {b.button_id: [b.video_track, b.audio_track] for b in buttons},
                    "clip": {
                        k: clip[k]
                        for k in (
                            "video_bitrate",
                            "audio_bitrate",
                            "encoded_video_bitrate",
                            "messages_per_second",
                            "padded",
                            "duration_us",
                        )
                    },
                }
            )
            with trio.fail_after(settings.get("schedule_timeout", 300)):
                schedule = await pipe.next_message()
            offset = trio.current_time() - time.time()
            phases = [(name, int(w0), int(w1)) for name, w0, w1 in schedule["phases"]]
            stop = to_trio(schedule["stop"], offset)
            hard_deadline = stop + settings["tail"] + settings["hard_timeout"]
            everything.deadline = hard_deadline
            stagger = settings["stagger"]
            media_start = schedule.get("media_start")
            if media_start is not None:
                start = to_trio(media_start, offset)
                for button in buttons:
                    begin = start + stagger * button.index / max(1, len(buttons))
                    nursery.start_soon(media, button, begin, stop, phases)
            rate = settings["alert_rate"]
            designated = buttons[: max(1, min(settings["alert_buttons"], len(buttons)))]
            if rate > 0 and schedule.get("alerts_start") is not None:
                nursery.start_soon(
                    alerts,
                    to_trio(schedule["alerts_start"], offset),
                    stop,
                    rate,
                    designated,
                    settings["tag"],
                    nursery,
                )
            await trio.sleep_until(stop + settings["tail"])
            nursery.cancel_scope.cancel()
    if everything.cancelled_caught:
        stop_reasons.append("hard timeout")

    # -- report -----------------------------------------------------------------
    phases_out: dict[str, Any] = {}
    ack_at = {}
    duplicate_acks = 0
    for alert_id, at, duplicate in acks:
        if alert_id in ack_at or duplicate:
            duplicate_acks += 1
            continue
        ack_at[alert_id] = at
    for name, w0, w1 in phases:
        ids = {a: t for a, t in pressed.items() if w0 <= t < w1}
        latencies = [ack_at[a] - t for a, t in ids.items() if a in ack_at]
        phases_out[name] = {
            "alerts": ids,
            "ack_latency_us": percentiles(latencies),
            "acks_missing": sum(1 for a in ids if a not in ack_at),
        }
    lag_ms = [round(x * 1000, 3) for x in lags]
    emit(
        {
            "role": "buttons",
            "compiled_core": COMPILED,
            "buttons": {
                b.button_id: {
                    "tracks": [b.video_track, b.audio_track],
                    "sent": b.sent,
                    "closed": b.closed,
                }
                for b in buttons
            },
            "phases": phases_out,
            "duplicate_acks": duplicate_acks,
            "pacing_lag_ms": percentiles(lag_ms),
            "stopped": stop_reasons,
        }
    )


# -- consoles --------------------------------------------------------------------------


class Console:
    def __init__(self, operator: str, token: str, watch: list[str]) -> None:
        self.operator = operator
        self.conn = ConsoleConnection(operator, token.encode())
        self.watch = watch
        self.stream: trio.SocketStream | None = None
        self.subscribed: set[str] = set()
        self.tracks: dict[int, str] = {}
        #: track -> END frames (whole messages) with a timestamp inside the media window
        self.count: dict[int, int] = {}
        self.last_seq: dict[int, int] = {}
        self.gaps = 0
        self.gap_events = 0
        self.backwards = 0
        self.bytes_in_phase: dict[str, int] = {}
        self.bytes_total = 0
        self.frames_total = 0
        #: alert_id -> (pressed_at, latency µs) of the first copy received
        self.alerts: dict[str, tuple[int, int]] = {}
        self.duplicate_alerts = 0
        self.closed: str | None = None
        self.all_subscribed = trio.Event()
        self.decode: Any = None

    def control(self, frame: Any, now: int) -> None:
        kind = frame.type
        if kind == _ALERT:
            alert = decode_body(kind, frame.payload)
            if alert.alert_id in self.alerts:
                self.duplicate_alerts += 1
            else:
                self.alerts[alert.alert_id] = (alert.pressed_at, now - alert.pressed_at)
        elif kind == _SUBSCRIBED or kind == _DESCRIPTION:
            event = decode_body(kind, frame.payload)
            self.on_event(event)
        elif kind == _GOODBYE or kind == _ERROR:
            self.closed = f"relay said {decode_body(kind, frame.payload)}"

    def on_event(self, event: Any) -> None:
        """An event the handshake's connection already decoded, or a decoded control frame."""
        button = getattr(event, "button", "")
        if type(event).__name__ in ("Subscribed", "StreamDescription") and button:
            for track in event.tracks:
                self.tracks[track.track_id] = button
            if type(event).__name__ == "Subscribed":
                self.subscribed.add(button)
                if self.subscribed >= set(self.watch):
                    self.all_subscribed.set()
        elif isinstance(event, Alert) and event.alert_id not in self.alerts:
            self.alerts[event.alert_id] = (event.pressed_at, wall_us() - event.pressed_at)


class Windows:
    """Measurement windows, shared by every console's reader (set when the schedule comes)."""

    def __init__(self) -> None:
        self.media = (0, 0)
        self.phases: list[tuple[str, int, int]] = []


def received(console: Console, data: bytes, now: int, windows: Windows, append: Any) -> None:
    """The hot path: one decode per received buffer, a few int ops per media frame."""
    size = len(data)
    console.bytes_total += size
    for name, w0, w1 in windows.phases:
        if w0 <= now < w1:
            console.bytes_in_phase[name] = console.bytes_in_phase.get(name, 0) + size
    m0, m1 = windows.media
    try:
        frames = console.decode(data)
    except PinkRelayError as error:
        console.closed = f"protocol error: {error}"
        return
    console.frames_total += len(frames)
    count = console.count
    last_seq = console.last_seq
    for frame in frames:
        if frame.type == _MEDIA:
            if frame.flags & _END:
                track = frame.track
                seq = frame.seq
                previous = last_seq.get(track)
                last_seq[track] = seq
                ts = frame.timestamp
                if m0 <= ts < m1:
                    count[track] = count.get(track, 0) + 1
                    if previous is not None and seq != ((previous + 1) & 0xFFFFFFFF):
                        missing = (seq - previous - 1) & 0xFFFFFFFF
                        if missing < 1 << 31:
                            console.gaps += missing
                            console.gap_events += 1
                        else:
                            console.backwards += 1
                    if frame.lane == _VIDEO_LANE:
                        append(now - ts)
        else:
            console.control(frame, now)


class Readers:
    """Every console's socket read by one task: trio waits on one inner epoll.

    A trio task per socket would cost an epoll_ctl and a task switch per
    received buffer; here trio waits until the inner (level-triggered) epoll
    has any ready socket, then each ready socket is read with one plain
    non-blocking ``os.read``. The generator's per-message cost stays small, so
    it can keep up with a relay that delivers much more than it could alone.
    """

    def __init__(self, windows: Windows, latencies: list[int]) -> None:
        self.poller = select.epoll()
        self.by_fd: dict[int, Console] = {}
        self.windows = windows
        self.append = latencies.append

    def add(self, console: Console) -> None:
        console.decode = (
            console.conn._decoder.decode
        )  # keeps any partial frame left by the handshake
        fd = console.stream.socket.fileno()
        self.by_fd[fd] = console
        self.poller.register(fd, select.EPOLLIN)

    def _drop(self, fd: int) -> None:
        self.by_fd.pop(fd, None)
        try:
            self.poller.unregister(fd)
        except OSError:
            pass

    async def run(self) -> None:
        poll = self.poller.poll
        by_fd = self.by_fd
        windows = self.windows
        append = self.append
        read = os.read
        while True:
            await trio.lowlevel.wait_readable(self.poller.fileno())
            for fd, _mask in poll(0):
                console = by_fd.get(fd)
                if console is None:
                    continue
                try:
                    data = read(fd, RECV_BYTES)
                except BlockingIOError:
                    continue
                except OSError as error:
                    console.closed = f"connection lost: {error}"
                    self._drop(fd)
                    continue
                if not data:
                    console.closed = console.closed or "relay closed the connection"
                    self._drop(fd)
                    continue
                received(console, data, time.time_ns() // 1000, windows, append)
                if console.closed and console.closed.startswith("protocol error"):
                    self._drop(fd)


async def run_consoles(settings: dict[str, Any]) -> None:
    host, port = settings["relay"]
    consoles = [Console(op, token, watch) for op, token, watch in settings["consoles"]]
    windows = Windows()
    latencies: list[int] = []
    limiter = trio.CapacityLimiter(CONNECT_CONCURRENCY)
    stop_reasons: list[str] = []
    readers = Readers(windows, latencies)

    async def connect(console: Console, nursery: Any) -> None:
        async with limiter:
            console.stream = await trio.open_tcp_stream(host, port)
            for event in await handshake(console.stream, console.conn):
                console.on_event(event)
            readers.add(console)
            if console.watch:
                frames = [
                    console.conn.send(Subscribe(button=b), trio.current_time())
                    for b in console.watch
                ]
                await console.stream.send_all(b"".join(frames))
            else:
                console.all_subscribed.set()

    async def heartbeats() -> None:
        # One non-blocking write per console, all in one turn: awaiting send_all per
        # console let the busy reader run between sends, so a round over ~1,000
        # consoles took longer than the relay's supervision window, which then
        # (rightly) dropped consoles that had stopped proving they were alive.
        while True:
            await trio.sleep(HEARTBEAT_EVERY)
            for console in consoles:
                if console.closed is None:
                    frame = console.conn.send(Heartbeat(sent_at=wall_us()), trio.current_time())
                    try:
                        os.write(console.stream.socket.fileno(), frame)
                    except BlockingIOError:
                        pass  # the socket is full: the next round tries again
                    except OSError:
                        pass  # the reader reports the closed connection

    with trio.CancelScope() as everything:
        async with trio.open_nursery() as nursery:
            pipe = _Pipe()
            nursery.start_soon(pipe.run)
            nursery.start_soon(readers.run)
            with trio.fail_after(settings.get("connect_timeout", 60)):
                async with trio.open_nursery() as connecting:
                    for console in consoles:
                        connecting.start_soon(connect, console, nursery)
                for console in consoles:
                    await console.all_subscribed.wait()
            nursery.start_soon(heartbeats)
            emit({"ready": True, "consoles": len(consoles)})
            with trio.fail_after(settings.get("schedule_timeout", 300)):
                schedule = await pipe.next_message()
            offset = trio.current_time() - time.time()
            windows.phases = [(name, int(w0), int(w1)) for name, w0, w1 in schedule["phases"]]
            media_phase = [p for p in windows.phases if p[0] == schedule.get("media_phase")]
            if media_phase:
                windows.media = (media_phase[0][1], media_phase[0][2])
            stop = to_trio(schedule["stop"], offset)
            everything.deadline = stop + settings["tail"] + settings["hard_timeout"]
            await trio.sleep_until(stop + settings["tail"])
            nursery.cancel_scope.cancel()
    if everything.cancelled_caught:
        stop_reasons.append("hard timeout")

    # -- report -----------------------------------------------------------------
    phases_out: dict[str, Any] = {}
    for name, w0, w1 in windows.phases:
        received: dict[str, int] = {}
        lat: list[int] = []
        first: dict[str, int] = {}
        last: dict[str, int] = {}
        for console in consoles:
            for alert_id, (pressed_at, latency) in console.alerts.items():
                if w0 <= pressed_at < w1:
                    received[alert_id] = received.get(alert_id, 0) + 1
                    lat.append(latency)
                    first[alert_id] = min(first.get(alert_id, latency), latency)
                    last[alert_id] = max(last.get(alert_id, latency), latency)
        phases_out[name] = {
            "alert_latency_us": percentiles(lat),
            # per alert: the first console's latency, and last minus first (the broadcast's spread,
            # relay loop and this generator's read loop together)
            "alert_first_latency_us": percentiles(list(first.values())),
            "alert_spread_us": percentiles([last[a] - first[a] for a in first]),
            "alerts_received": received,
            "bytes": sum(c.bytes_in_phase.get(name, 0) for c in consoles),
        }
    raw = {}
    if settings.get("raw"):
        raw = {"alerts_raw": {c.operator: c.alerts for c in consoles}}
    emit(
        {
            **raw,
            "role": "consoles",
            "compiled_core": COMPILED,
            "consoles": [
                {
                    "operator": c.operator,
                    "watch": c.watch,
                    "tracks": {str(t): b for t, b in c.tracks.items()},
                    "count": {str(t): n for t, n in c.count.items()},
                    "bytes": c.bytes_in_phase,
                    "bytes_total": c.bytes_total,
                    "frames_total": c.frames_total,
                    "gaps": c.gaps,
                    "gap_events": c.gap_events,
                    "backwards": c.backwards,
                    "duplicate_alerts": c.duplicate_alerts,
                    "closed": c.closed,
                }
                for c in consoles
            ],
            "media_latency_us": percentiles(latencies),
            "phases": phases_out,
            "stopped": stop_reasons,
        }
    )


class _Pipe:
    """stdin: the schedule line, then end of file when load.py goes away."""

    def __init__(self) -> None:
        self._send, self._receive = trio.open_memory_channel[Any](4)

    async def run(self) -> None:
        while True:
            line = await read_line()
            if not line:
                # load.py is gone (exited or killed): end this process at once.
                sys.stderr.write(
                    "load_clients: stdin closed, the orchestrator went away; exiting\n"
                )
                sys.stderr.flush()
                os._exit(3)
            if line.strip():
                await self._send.send(json.loads(line))

    async def next_message(self) -> Any:
        return await self._receive.receive()


def main() -> int:
    if len(sys.argv) != 2 or sys.argv[1] not in ("buttons", "consoles"):
        print(__doc__, file=sys.stderr)
        return 2
    line = sys.stdin.readline()
    if not line:
        return 2
    settings = json.loads(line)
    runner = run_buttons if sys.argv[1] == "buttons" else run_consoles
    trio.run(runner, settings)
    return 0


if __name__ == "__main__":
    sys.exit(main())
