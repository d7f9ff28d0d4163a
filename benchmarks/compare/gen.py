#!/usr/bin/env python3
"""Load processes of ``make bench-compare`` (see ``common.py`` for how they are driven).

    python benchmarks/compare/gen.py ROLE SETTINGS.json

Fan-out (section 1):
  rtmp-subs          N RTMP players (``rtmp_play.py``) in one process; count bytes
  pr-subs            N stripped pinkrelay consoles in one process; count bytes
  pr-probe           one pinkrelay console that decodes frames: relay-added latency
  pr-publish         B pinkrelay buttons replaying the FLV clip's packets in real time
Alerts (section 2):
  pr-alert-buttons   K buttons pressing alerts on a schedule (pressed_at stamped at send)
  pr-alert-consoles  C consoles watching every media button; time each alert
  mqtt-bulk          a minimal MQTT publisher: the same packets, QoS 0, topic bulk/<b>
  mqtt-alert-pubs    K paho-mqtt clients publishing alerts, QoS 1
  mqtt-consoles      C paho-mqtt clients on ``alerts`` (QoS 1) and ``bulk/#`` (QoS 0)

Subscribers read with one level-triggered epoll for all their sockets and
``recv_into`` one preallocated buffer; bulk ones wait ``period`` seconds
between passes so each read takes several messages. Nothing per message is
done in Python except where a latency is measured (probe, alert consoles).
"""

from __future__ import annotations

import os
import select
import socket
import sys
import time
from typing import Any, Callable

from common import Control, Pacer, emit, load_settings, percentiles, raise_nofile, read_clip, wall_us

HEARTBEAT_EVERY = 5.0


# -- the subscriber loop -----------------------------------------------------------------


class Loop:
    """All sockets of one process on one epoll; bytes counted in total and inside the window."""

    def __init__(self, control: Control, period: float = 0.0, bufsize: int = 256 * 1024) -> None:
        self.control = control
        self.period = period
        self.ep = select.epoll()
        self.ep.register(control.fd, select.EPOLLIN)
        self.buf = bytearray(bufsize)
        self.view = memoryview(self.buf)
        #: fd -> [recv_into, total bytes, window bytes, on_data or None, key]
        self.conns: dict[int, list[Any]] = {}
        self.closed: dict[str, str] = {}
        self.window = (float("inf"), float("inf"))
        self.reads = 0
        self.passes = 0

    def add(self, sock: socket.socket, key: str, on_data: Callable[[memoryview, int], None] | None = None) -> None:
        sock.setblocking(False)
        fd = sock.fileno()
        self.conns[fd] = [sock.recv_into, 0, 0, on_data, key, sock]
        self.ep.register(fd, select.EPOLLIN)

    def set_window(self, window_us: list[int]) -> None:
        self.window = (window_us[0] / 1e6, window_us[1] / 1e6)

    def pump(self, timeout: float) -> float:
        events = self.ep.poll(timeout)
        now = time.time()
        w0, w1 = self.window
        inside = w0 <= now < w1
        buf, view, conns = self.buf, self.view, self.conns
        control_fd = self.control.fd
        self.passes += 1
        for fd, _mask in events:
            if fd == control_fd:
                self.control.read()
                continue
            entry = conns.get(fd)
            if entry is None:
                continue
            try:
                n = entry[0](buf)
            except BlockingIOError:
                continue
            except OSError as error:
                self._close(fd, f"connection lost: {error}")
                continue
            if not n:
                self._close(fd, "closed by the server")
                continue
            self.reads += 1
            entry[1] += n
            if inside:
                entry[2] += n
            if entry[3] is not None:
                entry[3](view[:n], n)
        return now

    def _close(self, fd: int, why: str) -> None:
        entry = self.conns.pop(fd)
        self.closed[entry[4]] = why
        try:
            self.ep.unregister(fd)
        except OSError:
            pass

    def run_until(self, stop_s: float, tick: Callable[[float], None] | None = None) -> None:
        period = self.period
        while True:
            started = time.monotonic()
            now = self.pump(min(0.05, max(0.0, stop_s - time.time())))
            if tick is not None:
                tick(now)
            if now >= stop_s:
                return
            if period:
                left = period - (time.monotonic() - started)
                if left > 0:
                    time.sleep(left)

    def totals(self) -> dict[str, Any]:
        return {entry[4]: [entry[1], entry[2]] for entry in self.conns.values()}


def finish_subscribers(loop: Loop, extra: dict[str, Any] | None = None) -> None:
    counts = loop.totals()
    window = [c[1] for c in counts.values()]
    emit(
        {
            "role": sys.argv[1],
            "connections": len(counts),
            "closed": loop.closed,
            "total_bytes": [c[0] for c in counts.values()],
            "window_bytes": window,
            "window_bytes_total": sum(window),
            "reads": loop.reads,
            "passes": loop.passes,
            "cpu_s": sum(os.times()[:2]),
            **(extra or {}),
        }
    )


# -- RTMP subscribers ----------------------------------------------------------------------


def rtmp_subs(settings: dict[str, Any]) -> None:
    from rtmp_play import connect_play

    control = Control()
    loop = Loop(control, period=settings["period"])
    host, port = settings["server"]
    for i in range(settings["n"]):
        sock = connect_play(host, port, settings["app"], settings["stream"])
        loop.add(sock, f"s{i}")
        if i % 16 == 15:
            loop.pump(0)
    emit({"ready": True, "connections": len(loop.conns)})
    control.wait_for("window", 120, loop.pump)
    loop.set_window(control.schedule["window"])
    loop.run_until(control.schedule["stop"] / 1e6)
    finish_subscribers(loop)


# -- pinkrelay clients ----------------------------------------------------------------------


def pr_handshake(sock: socket.socket, conn: Any, timeout: float = 20.0) -> list[Any]:
    from pinkrelay.protocol import Challenge, Error, Goodbye, Welcome

    sock.settimeout(timeout)
    sock.sendall(conn.hello(time.monotonic()))
    while True:
        data = sock.recv(65536)
        if not data:
            raise ConnectionError(f"relay closed the connection during {conn.identity}'s handshake")
        conn.receive_data(data, time.monotonic())
        for event in conn.events():
            if isinstance(event, Challenge):
                sock.sendall(conn.authenticate(time.monotonic()))
            elif isinstance(event, Welcome):
                return list(conn.events())
            elif isinstance(event, (Error, Goodbye)):
                raise ConnectionError(f"relay refused {conn.identity}: {event}")


def pr_console(relay: list[Any], operator: str, token: str, watch: list[str]) -> tuple[socket.socket, Any]:
    from pinkrelay.protocol import ConsoleConnection, Subscribe

    sock = socket.create_connection(tuple(relay), timeout=20)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    conn = ConsoleConnection(operator, token.encode())
    pr_handshake(sock, conn)
    sock.sendall(b"".join(conn.send(Subscribe(button=b), time.monotonic()) for b in watch))
    return sock, conn


class Heartbeats:
    """A heartbeat on every connection every few seconds (the relay supervises silence)."""

    def __init__(self, pairs: list[tuple[socket.socket, Any]]) -> None:
        self.pairs = pairs
        self.next = time.time() + HEARTBEAT_EVERY

    def __call__(self, now: float) -> None:
        if now < self.next:
            return
        from pinkrelay.protocol import Heartbeat

        self.next = now + HEARTBEAT_EVERY
        for sock, conn in self.pairs:
            try:
                sock.send(conn.send(Heartbeat(sent_at=wall_us()), time.monotonic()))
            except OSError:
                pass


def pr_subs(settings: dict[str, Any]) -> None:
    control = Control()
    loop = Loop(control, period=settings["period"])
    pairs = []
    for i, (operator, token) in enumerate(settings["consoles"]):
        sock, conn = pr_console(settings["relay"], operator, token, [settings["button"]])
        loop.add(sock, operator)
        pairs.append((sock, conn))
        if i % 16 == 15:
            loop.pump(0)
    emit({"ready": True, "connections": len(loop.conns)})
    beats = Heartbeats(pairs)
    control.wait_for("window", 120, loop.pump)
    loop.set_window(control.schedule["window"])
    loop.run_until(control.schedule["stop"] / 1e6, beats)
    finish_subscribers(loop)


def pr_probe(settings: dict[str, Any]) -> None:
    """One console that decodes every frame: latency = receive time - the button's stamp."""
    from pinkrelay._core import FrameType

    media_type = int(FrameType.MEDIA)
    control = Control()
    loop = Loop(control)
    operator, token = settings["console"]
    sock, conn = pr_console(settings["relay"], operator, token, [settings["button"]])
    decode = conn._decoder.decode  # keeps what the handshake left undecoded
    samples: dict[int, list[int]] = {2: [], 3: []}  # lane -> µs

    def on_data(view: memoryview, n: int) -> None:
        now = time.time_ns() // 1000
        w0, w1 = loop.window
        keep = w0 * 1e6 <= now < w1 * 1e6
        for frame in decode(bytes(view)):
            if frame.type == media_type and frame.flags & 0x02 and keep:
                samples[frame.lane].append(now - frame.timestamp)

    loop.add(sock, operator, on_data)
    emit({"ready": True})
    beats = Heartbeats([(sock, conn)])
    control.wait_for("window", 120, loop.pump)
    loop.set_window(control.schedule["window"])
    loop.run_until(control.schedule["stop"] / 1e6, beats)
    both = samples[2] + samples[3]
    finish_subscribers(
        loop,
        {
            "latency_us": percentiles(both),
            "video_latency_us": percentiles(samples[3]),
            "audio_latency_us": percentiles(samples[2]),
        },
    )


def pr_button(relay: list[Any], button_id: str, secret: str) -> tuple[socket.socket, Any]:
    from pinkrelay.protocol import ButtonConnection

    sock = socket.create_connection(tuple(relay), timeout=20)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    conn = ButtonConnection(button_id, secret.encode())
    pr_handshake(sock, conn)
    sock.settimeout(None)
    return sock, conn


def publish(settings: dict[str, Any], senders: list[Callable[[bool, bytes, bool], int]],
            socks: list[socket.socket], control: Control, on_readable: Callable[[socket.socket], None],
            *, annexb: bool = False) -> None:
    """Pace the clip over every sender from ``media_start``; count bytes sent in ``window``."""
    clip = read_clip(settings["clip"], settings.get("pad", 1.0), annexb=annexb)
    emit({"ready": True, "clip_bits_per_s": clip["bits_per_s"], "messages_per_s": clip["messages_per_s"]})

    def service(timeout: float) -> None:
        readable, _, _ = select.select([control.fd, *socks], [], [], timeout)
        for sock in readable:
            if sock == control.fd:
                control.read()
            else:
                on_readable(sock)

    control.wait_for("media_start", 300, service)
    pacer = Pacer(clip, len(senders), control.schedule["media_start"] / 1e6, settings.get("stagger", 0.0))
    window_bytes = window_msgs = total_bytes = 0
    lags: list[float] = []
    window = control.schedule.get("window")
    stop_s = control.schedule.get("stop", 2**62) / 1e6
    while True:
        due = pacer.peek_due()
        now = time.time()
        if "window" in control.schedule:
            window = control.schedule["window"]
            stop_s = control.schedule["stop"] / 1e6
        if now >= stop_s:
            break
        if due > now:
            service(min(due - now, stop_s - now, 0.05))
            continue
        due, b, is_video, data, key = pacer.pop()
        sent = senders[b](is_video, data, key)
        total_bytes += sent
        if window and window[0] <= now * 1e6 < window[1]:
            window_bytes += sent
            window_msgs += 1
            lags.append((time.time() - due) * 1000)
    emit(
        {
            "role": sys.argv[1],
            "window_bytes": window_bytes,
            "window_messages": window_msgs,
            "total_bytes": total_bytes,
            "pacing_lag_ms": percentiles(lags),
            "clip_bits_per_s": clip["bits_per_s"],
            "cpu_s": sum(os.times()[:2]),
        }
    )


def pr_publish(settings: dict[str, Any]) -> None:
    from pinkrelay.protocol import Heartbeat, StreamDescription, TrackDescription

    control = Control()
    clip = read_clip(settings["clip"], settings.get("pad", 1.0))
    video, audio = clip["video"], clip["audio"]
    buttons = []
    for button_id, secret in settings["buttons"]:
        sock, conn = pr_button(settings["relay"], button_id, secret)
        vt, at = conn.track_ids[0], conn.track_ids[1]
        description = StreamDescription(
            tracks=(
                TrackDescription(track_id=vt, kind="video", codec="h264", width=video["width"],
                                 height=video["height"], fps=video["fps"],
                                 bitrate=int(clip["bits_per_s"]), extradata=video["extradata"]),
                TrackDescription(track_id=at, kind="audio", codec="aac", sample_rate=audio["sample_rate"],
                                 channels=audio["channels"], bitrate=audio["bitrate"],
                                 extradata=audio["extradata"]),
            )
        )
        sock.sendall(conn.send(description, time.monotonic()))
        buttons.append({"sock": sock, "conn": conn, "tracks": (vt, at), "seq": [0, 0], "beat": time.time()})

    def sender(button: dict[str, Any]) -> Callable[[bool, bytes, bool], int]:
        send_media, sock, seq = button["conn"].send_media, button["sock"], button["seq"]
        vt, at = button["tracks"]
        conn = button["conn"]

        def send(is_video: bool, data: bytes, key: bool) -> int:
            i = 0 if is_video else 1
            frames = send_media(vt if is_video else at, seq[i], wall_us(), data, key)
            seq[i] += 1
            wire = frames[0] if len(frames) == 1 else b"".join(frames)
            now = time.time()
            if now - button["beat"] > HEARTBEAT_EVERY:
                button["beat"] = now
                wire += conn.send(Heartbeat(sent_at=wall_us()), time.monotonic())
            sock.sendall(wire)
            return len(wire)

        return send

    def drain(sock: socket.socket) -> None:
        sock.setblocking(False)
        try:
            sock.recv(65536)
        except (BlockingIOError, OSError):
            pass
        sock.setblocking(True)

    publish(settings, [sender(b) for b in buttons], [b["sock"] for b in buttons], control, drain, annexb=True)


# -- alerts through pinkrelay ------------------------------------------------------------------


def alert_schedule(control: Control) -> list[tuple[float, str]]:
    """(due s, alert id) for every alert of every phase, in time order."""
    out = []
    for name, start_us, count, rate in control.schedule["alerts"]:
        for k in range(count):
            out.append((start_us / 1e6 + k / rate, f"{name}-{k:05d}"))
    out.sort()
    return out


def pr_alert_buttons(settings: dict[str, Any]) -> None:
    from pinkrelay.protocol import Alert, AlertAck, Heartbeat

    control = Control()
    buttons = [pr_button(settings["relay"], b, s) for b, s in settings["buttons"]]
    by_fd = {sock.fileno(): (sock, conn) for sock, conn in buttons}
    for sock, _ in buttons:
        sock.setblocking(False)
    pressed: dict[str, int] = {}
    acked: dict[str, int] = {}
    duplicate_acks = 0
    emit({"ready": True})

    def service(timeout: float) -> None:
        nonlocal duplicate_acks
        readable, _, _ = select.select([control.fd, *by_fd], [], [], timeout)
        for fd in readable:
            if fd == control.fd:
                control.read()
                continue
            sock, conn = by_fd[fd]
            try:
                data = sock.recv(65536)
            except BlockingIOError:
                continue
            now = wall_us()
            conn.receive_data(data, time.monotonic())
            for event in conn.events():
                if isinstance(event, AlertAck):
                    if event.alert_id in acked or event.duplicate:
                        duplicate_acks += 1
                    else:
                        acked[event.alert_id] = now

    control.wait_for("alerts", 300, service)
    plan = alert_schedule(control)
    stop_s = control.schedule["stop"] / 1e6
    beat = time.time()
    k = 0
    while True:
        now = time.time()
        if now >= stop_s:
            break
        if k < len(plan) and plan[k][0] <= now:
            sock, conn = buttons[k % len(buttons)]
            alert_id = plan[k][1]
            at = wall_us()
            frame = conn.send(Alert(alert_id=alert_id, pressed_at=at), time.monotonic())
            pressed[alert_id] = at
            sock.setblocking(True)
            sock.sendall(frame)
            sock.setblocking(False)
            k += 1
            continue
        if now - beat > HEARTBEAT_EVERY:
            beat = now
            for sock, conn in buttons:
                sock.setblocking(True)
                sock.sendall(conn.send(Heartbeat(sent_at=wall_us()), time.monotonic()))
                sock.setblocking(False)
        nxt = plan[k][0] if k < len(plan) else stop_s
        service(max(0.0, min(nxt, stop_s) - now))
    ack_lat = [acked[a] - t for a, t in pressed.items() if a in acked]
    emit(
        {
            "role": "pr-alert-buttons",
            "pressed": pressed,
            "ack_latency_us": percentiles(ack_lat),
            "acks_missing": sum(1 for a in pressed if a not in acked),
            "duplicate_acks": duplicate_acks,
            "cpu_s": sum(os.times()[:2]),
        }
    )


def alert_consoles_result(received: list[dict[str, int]], duplicates: int, loop: Loop | None,
                          extra: dict[str, Any]) -> None:
    emit(
        {
            "role": sys.argv[1],
            # per console: alert id -> receive time (µs, wall clock)
            "received": received,
            "duplicates": duplicates,
            "cpu_s": sum(os.times()[:2]),
            **({"window_bytes": [c[1] for c in loop.totals().values()], "closed": loop.closed} if loop else {}),
            **extra,
        }
    )


def pr_alert_consoles(settings: dict[str, Any]) -> None:
    from pinkrelay._core import FrameType
    from pinkrelay.protocol import decode_body

    alert_type = int(FrameType.ALERT)
    control = Control()
    loop = Loop(control)
    received: list[dict[str, int]] = []
    duplicates = [0]
    pairs = []
    for operator, token in settings["consoles"]:
        sock, conn = pr_console(settings["relay"], operator, token, settings["watch"])
        decode = conn._decoder.decode
        mine: dict[str, int] = {}
        received.append(mine)

        def on_data(view: memoryview, n: int, decode: Any = decode, mine: dict[str, int] = mine) -> None:
            now = time.time_ns() // 1000
            for frame in decode(bytes(view)):
                if frame.type == alert_type:
                    alert = decode_body(alert_type, frame.payload)
                    if alert.alert_id in mine:
                        duplicates[0] += 1
                    else:
                        mine[alert.alert_id] = now

        loop.add(sock, operator, on_data)
        pairs.append((sock, conn))
    emit({"ready": True})
    beats = Heartbeats(pairs)
    control.wait_for("stop", 300, loop.pump)
    if "window" in control.schedule:
        loop.set_window(control.schedule["window"])
    loop.run_until(control.schedule["stop"] / 1e6, beats)
    alert_consoles_result(received, duplicates[0], loop, {})


# -- MQTT ----------------------------------------------------------------------------------------


def mqtt_remaining_length(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def mqtt_raw_connect(server: list[Any], client_id: str) -> socket.socket:
    """A bare MQTT 3.1.1 CONNECT (clean session, keep-alive off); waits for CONNACK."""
    sock = socket.create_connection(tuple(server), timeout=10)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    ident = client_id.encode()
    variable = b"\x00\x04MQTT\x04\x02\x00\x00"
    payload = len(ident).to_bytes(2, "big") + ident
    body = variable + payload
    sock.sendall(b"\x10" + mqtt_remaining_length(len(body)) + body)
    connack = sock.recv(4)
    if len(connack) < 4 or connack[0] != 0x20 or connack[3] != 0:
        raise ConnectionError(f"MQTT CONNACK refused: {connack!r}")
    sock.settimeout(None)
    return sock


def mqtt_bulk(settings: dict[str, Any]) -> None:
    """The bulk load for mosquitto: the same padded packets and pacing as pr-publish, QoS 0."""
    control = Control()
    sock = mqtt_raw_connect(settings["server"], "bulk-publisher")
    topics = [f"bulk/{b}".encode() for b in range(settings["streams"])]

    def sender(b: int) -> Callable[[bool, bytes, bool], int]:
        topic = len(topics[b]).to_bytes(2, "big") + topics[b]

        def send(is_video: bool, data: bytes, key: bool) -> int:
            body_len = len(topic) + len(data)
            wire = b"\x30" + mqtt_remaining_length(body_len) + topic
            sock.sendall(wire + data if len(data) < 2048 else wire)
            if len(data) >= 2048:
                sock.sendall(data)
            return len(wire) + len(data)

        return send

    def drain(s: socket.socket) -> None:
        s.setblocking(False)
        try:
            s.recv(65536)
        except (BlockingIOError, OSError):
            pass
        s.setblocking(True)

    publish(settings, [sender(b) for b in range(settings["streams"])], [sock], control, drain)


def paho_client(client_id: str) -> Any:
    import paho.mqtt.client as mqtt

    return mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv311,
                       clean_session=True)


def paho_service(clients: list[Any], control: Control, timeout: float) -> None:
    """One select over every paho client's socket (paho's external-loop API)."""
    socks = {c.socket(): c for c in clients if c.socket() is not None}
    writers = [s for s, c in socks.items() if c.want_write()]
    readable, writable, _ = select.select([control.fd, *socks], writers, [], timeout)
    for s in readable:
        if s == control.fd:
            control.read()
        else:
            socks[s].loop_read(100)
    for s in writable:
        socks[s].loop_write()
    for c in clients:
        if c.want_write():
            c.loop_write()


def paho_connect(clients: list[Any], server: list[Any]) -> None:
    for c in clients:
        c.connect(server[0], server[1], keepalive=60)
    deadline = time.monotonic() + 15
    while not all(c.is_connected() for c in clients):
        if time.monotonic() > deadline:
            raise ConnectionError("paho clients did not connect within 15 s")
        for c in clients:
            c.loop(0.01)


def mqtt_alert_pubs(settings: dict[str, Any]) -> None:
    control = Control()
    clients = [paho_client(f"button-{i}") for i in range(settings["buttons"])]
    pressed: dict[str, int] = {}
    acked: dict[str, int] = {}
    mids: dict[tuple[int, int], str] = {}

    for i, c in enumerate(clients):
        def on_publish(client: Any, userdata: Any, mid: int, reason: Any, properties: Any, i: int = i) -> None:
            alert_id = mids.pop((i, mid), None)
            if alert_id is not None:
                acked[alert_id] = wall_us()

        c.on_publish = on_publish
    paho_connect(clients, settings["server"])
    emit({"ready": True})
    control.wait_for("alerts", 300, lambda t: paho_service(clients, control, t))
    plan = alert_schedule(control)
    stop_s = control.schedule["stop"] / 1e6
    k = 0
    while True:
        now = time.time()
        if now >= stop_s:
            break
        if k < len(plan) and plan[k][0] <= now:
            i = k % len(clients)
            alert_id = plan[k][1]
            at = wall_us()
            info = clients[i].publish("alerts", f"{alert_id},{at}".encode(), qos=1)
            pressed[alert_id] = at
            mids[(i, info.mid)] = alert_id
            k += 1
            continue
        nxt = plan[k][0] if k < len(plan) else stop_s
        paho_service(clients, control, max(0.0, min(nxt, stop_s) - now))
        for c in clients:
            c.loop_misc()
    ack_lat = [acked[a] - t for a, t in pressed.items() if a in acked]
    emit(
        {
            "role": "mqtt-alert-pubs",
            "pressed": pressed,
            "ack_latency_us": percentiles(ack_lat),
            "acks_missing": sum(1 for a in pressed if a not in acked),
            "duplicate_acks": 0,
            "cpu_s": sum(os.times()[:2]),
        }
    )


def mqtt_consoles(settings: dict[str, Any]) -> None:
    control = Control()
    clients = [paho_client(f"console-{i}") for i in range(settings["consoles"])]
    received: list[dict[str, int]] = [{} for _ in clients]
    bulk_bytes = [0] * len(clients)
    window_bytes = [0] * len(clients)
    duplicates = [0]
    window = [float("inf"), float("inf")]
    for i, c in enumerate(clients):
        def on_message(client: Any, userdata: Any, msg: Any, i: int = i) -> None:
            now = time.time_ns() // 1000
            if msg.topic == "alerts":
                alert_id = msg.payload.split(b",", 1)[0].decode()
                if alert_id in received[i]:
                    duplicates[0] += 1
                else:
                    received[i][alert_id] = now
            else:
                n = len(msg.payload)
                bulk_bytes[i] += n
                if window[0] <= now < window[1]:
                    window_bytes[i] += n

        c.on_message = on_message
    paho_connect(clients, settings["server"])
    for c in clients:
        c.subscribe([("alerts", 1), ("bulk/#", 0)])
    end = time.monotonic() + 2
    while time.monotonic() < end:  # SUBACKs
        paho_service(clients, control, 0.05)
    emit({"ready": True})
    control.wait_for("stop", 300, lambda t: paho_service(clients, control, t))
    if "window" in control.schedule:
        window[:] = [x for x in control.schedule["window"]]
    stop_s = control.schedule["stop"] / 1e6
    misc = time.time()
    while time.time() < stop_s:
        paho_service(clients, control, 0.05)
        if time.time() - misc > 1:
            misc = time.time()
            for c in clients:
                c.loop_misc()
    alert_consoles_result(received, duplicates[0], None, {"window_bytes": window_bytes,
                                                          "closed": {f"console-{i}": "disconnected" for i, c in enumerate(clients) if not c.is_connected()}})


def mqtt_header(buf: bytearray) -> tuple[int, int] | None:
    """(fixed header length, remaining length) of the packet at the start of ``buf``, if complete."""
    length = shift = 0
    for i in range(1, min(5, len(buf))):
        byte = buf[i]
        length |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return i + 1, length
    return None


class LeanMqttConsole:
    """A minimal MQTT 3.1.1 subscriber: parses just enough to time alerts and PUBACK them.

    Bulk payloads are skipped without being copied: once a bulk PUBLISH's
    header is read, the rest of it is only counted down.
    """

    def __init__(self, sock: socket.socket, received: dict[str, int], duplicates: list[int]) -> None:
        self.sock = sock
        self.pending = bytearray()
        self.skip = 0
        self.received = received
        self.duplicates = duplicates

    def on_data(self, view: memoryview, n: int) -> None:
        now = time.time_ns() // 1000
        if self.skip:
            if n <= self.skip:
                self.skip -= n
                return
            view = view[self.skip:]
            self.skip = 0
        pending = self.pending
        pending += view
        acks = []
        while len(pending) >= 2:
            header = mqtt_header(pending)
            if header is None:
                break
            i, length = header
            total = i + length
            kind = pending[0] >> 4
            if kind == 3 and len(pending) >= i + 2:
                topic_len = int.from_bytes(pending[i:i + 2], "big")
                if len(pending) < i + 2 + topic_len:
                    break
                topic = bytes(pending[i + 2:i + 2 + topic_len])
                if topic != b"alerts":
                    if len(pending) < total:  # a bulk message: count the rest down, unread
                        self.skip = total - len(pending)
                        pending.clear()
                        break
                    del pending[:total]
                    continue
            if len(pending) < total:
                break
            if kind == 3:
                qos = (pending[0] >> 1) & 3
                at = i + 2 + topic_len
                if qos:
                    acks.append(b"\x40\x02" + bytes(pending[at:at + 2]))
                    at += 2
                alert_id = bytes(pending[at:total]).split(b",", 1)[0].decode()
                if alert_id in self.received:
                    self.duplicates[0] += 1
                else:
                    self.received[alert_id] = now
            del pending[:total]
        if acks:
            self.sock.setblocking(True)
            self.sock.sendall(b"".join(acks))
            self.sock.setblocking(False)


def mqtt_lean_consoles(settings: dict[str, Any]) -> None:
    control = Control()
    loop = Loop(control)
    received: list[dict[str, int]] = []
    duplicates = [0]
    for i in range(settings["consoles"]):
        sock = mqtt_raw_connect(settings["server"], f"console-{i}")
        body = b"\x00\x01" + b"".join(len(t).to_bytes(2, "big") + t + bytes([q])
                                       for t, q in ((b"alerts", 1), (b"bulk/#", 0)))
        sock.sendall(b"\x82" + mqtt_remaining_length(len(body)) + body)
        suback = sock.recv(16)
        if not suback or suback[0] != 0x90:
            raise ConnectionError(f"no SUBACK: {suback!r}")
        mine: dict[str, int] = {}
        received.append(mine)
        loop.add(sock, f"console-{i}", LeanMqttConsole(sock, mine, duplicates).on_data)
    emit({"ready": True})
    control.wait_for("stop", 300, loop.pump)
    if "window" in control.schedule:
        loop.set_window(control.schedule["window"])
    loop.run_until(control.schedule["stop"] / 1e6)
    alert_consoles_result(received, duplicates[0], loop, {})


ROLES = {
    "mqtt-lean-consoles": mqtt_lean_consoles,
    "rtmp-subs": rtmp_subs,
    "pr-subs": pr_subs,
    "pr-probe": pr_probe,
    "pr-publish": pr_publish,
    "pr-alert-buttons": pr_alert_buttons,
    "pr-alert-consoles": pr_alert_consoles,
    "mqtt-bulk": mqtt_bulk,
    "mqtt-alert-pubs": mqtt_alert_pubs,
    "mqtt-consoles": mqtt_consoles,
}


def main() -> int:
    if len(sys.argv) != 3 or sys.argv[1] not in ROLES:
        print(__doc__, file=sys.stderr)
        return 2
    raise_nofile()
    ROLES[sys.argv[1]](load_settings())
    return 0


if __name__ == "__main__":
    sys.exit(main())
