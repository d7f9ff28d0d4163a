"""The compiled data plane on its own: real sockets (socket pairs), real threads, no relay.

What it must decide as the trio path does: every subscriber gets a message's
exact wire bytes; a control frame goes to Python and nothing after it is
processed before Python says so; anything it does not accept is handed back
to Python byte for byte; an alert overtakes queued media; a slow subscriber
loses video up to the next keyframe and nobody else notices; a late joiner
gets the GOP cache first.
"""

from __future__ import annotations

import select
import socket
import time

import pytest

from pinkrelay._core import FrameDecoder, Lane, encode_frame, encode_media
from pinkrelay._core.wire import FrameType

dataplane = pytest.importorskip("pinkrelay._core._dataplane", reason="the data plane is compiled code")
pytestmark = pytest.mark.compiled_only

VIDEO, AUDIO = 1, 2
LIMITS = dict(max_frame_bytes=64 * 1024, max_message_bytes=4 * 1024 * 1024, max_chunks_per_message=256)
SUB_LIMITS = dict(max_video_bytes=4 * 1024 * 1024, max_audio_bytes=256 * 1024, max_control_bytes=2 * 1024 * 1024,
                  stall_timeout=10.0)


def idr(size: int = 100) -> bytes:
    return b"\x00\x00\x00\x01\x65" + b"\x11" * size


def p_frame(size: int = 100) -> bytes:
    return b"\x00\x00\x00\x01\x41" + b"\x22" * size


def media(track: int, seq: int, payload: bytes, *, key: bool = False, lane: int = Lane.VIDEO) -> bytes:
    return b"".join(encode_media(track, lane, seq, 1_000 + seq, payload, key, 16 * 1024))


def heartbeat() -> bytes:
    return encode_frame(FrameType.HEARTBEAT, Lane.CONTROL, 0, 7, 0, b"\x81\xa1t\x00")


def read_exactly(sock: socket.socket, size: int, timeout: float = 5.0) -> bytes:
    out = bytearray()
    deadline = time.monotonic() + timeout
    while len(out) < size:
        left = deadline - time.monotonic()
        assert left > 0, f"got {len(out)} of {size} bytes"
        if select.select([sock], [], [], left)[0]:
            chunk = sock.recv(size - len(out))
            assert chunk, "closed"
            out += chunk
    return bytes(out)


def by_lane(wire: bytes) -> dict[int, list[bytes]]:
    """Frames per lane, in order: lanes may interleave (audio overtakes video), a lane never reorders."""
    out: dict[int, list[bytes]] = {}
    for frame in FrameDecoder(max_frame_bytes=1 << 20).decode(wire):
        out.setdefault(frame.lane, []).append(frame.wire)
    return out


def wait_events(plane, count: int = 1, timeout: float = 5.0) -> list:
    got: list = []
    deadline = time.monotonic() + timeout
    while len(got) < count:
        left = deadline - time.monotonic()
        assert left > 0, f"events so far: {got}"
        select.select([plane.fileno()], [], [], left)
        got += plane.events()
    return got


@pytest.fixture
def plane():
    plane = dataplane.DataPlane(2, 1024 * 1024)
    yield plane
    plane.stop()


def tcp_pair(buffer: int):
    """A loopback TCP connection whose kernel buffers hold about ``buffer`` bytes each way."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        far = socket.socket()
        far.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, buffer)
        far.connect(server.getsockname())
        near, _ = server.accept()
    near.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, buffer)
    near.setblocking(False)
    return near, far


def pair():
    a, b = socket.socketpair()
    a.setblocking(False)
    return a, b


def test_every_subscriber_gets_the_exact_wire_bytes_of_each_message(plane) -> None:
    button_far, button = pair()
    pub = plane.publisher(button_far.fileno(), **LIMITS)
    pub.resume()
    pub.describe(VIDEO, Lane.VIDEO)
    pub.describe(AUDIO, Lane.AUDIO)
    consoles = [pair() for _ in range(3)]
    subs = [plane.subscriber(near.fileno(), **SUB_LIMITS) for near, _ in consoles]
    for sub in subs:
        assert pub.subscribe(sub, 1 << 20) == 0
        sub.release()
    # A keyframe bigger than a chunk (several frames), then audio and a P frame.
    wire = media(VIDEO, 0, idr(40_000), key=True) + media(AUDIO, 0, b"opus" * 20, lane=Lane.AUDIO) + media(
        VIDEO, 1, p_frame(3_000))
    button.sendall(wire)
    for _, far in consoles:
        assert by_lane(read_exactly(far, len(wire))) == by_lane(wire)
    assert pub.stats()["messages_in"] == 3
    for s in subs:
        s.remove()
    pub.remove()


def test_version_2_headers_carry_track_ids_above_65535_through_unchanged(plane) -> None:
    """protocol.md §2.5: the track's bits 16-21 ride in the lane byte; subscribers get the same bytes."""
    wide = 70_000
    button_far, button = pair()
    pub = plane.publisher(button_far.fileno(), **LIMITS)
    pub.resume()
    pub.describe(wide, Lane.VIDEO)
    near, far = pair()
    sub = plane.subscriber(near.fileno(), **SUB_LIMITS)
    pub.subscribe(sub, 0)
    sub.release()
    wire = media(wide, 0, idr(40_000), key=True) + media(wide, 1, p_frame())
    assert wire[2:4] + wire[5:8] == bytes([2, 0x40, 0x07, 0x11, 0x70])  # as the example of §2.5
    button.sendall(wire)
    assert read_exactly(far, len(wire)) == wire
    assert pub.stats()["messages_in"] == 2
    narrow_lie = media(wide & 0xFFFF, 2, p_frame())  # the same low 16 bits in a version-1 header
    button.sendall(narrow_lie)
    kind, _, data = wait_events(plane)[0]
    assert (kind, data) == (dataplane.HANDBACK, narrow_lie), "track 4464 was never described"
    sub.remove()
    pub.remove()


def test_a_control_frame_goes_to_python_and_media_behind_it_waits(plane) -> None:
    button_far, button = pair()
    pub = plane.publisher(button_far.fileno(), **LIMITS)
    pub.resume()
    pub.describe(VIDEO, Lane.VIDEO)
    near, far = pair()
    sub = plane.subscriber(near.fileno(), **SUB_LIMITS)
    pub.subscribe(sub, 0)
    sub.release()
    first, after = media(VIDEO, 0, idr(), key=True), media(VIDEO, 1, p_frame())
    button.sendall(first + heartbeat() + heartbeat() + after)
    kind, conn, data = wait_events(plane)[0]
    assert (kind, conn, data) == (dataplane.CONTROL, pub.id, heartbeat() + heartbeat())
    assert read_exactly(far, len(first)) == first
    assert not select.select([far], [], [], 0.2)[0], "media behind the control frame left before resume()"
    pub.resume()
    assert read_exactly(far, len(after)) == after
    sub.remove()
    pub.remove()


@pytest.mark.parametrize(
    "garbage",
    [
        b"XX" + bytes(22),  # bad magic
        b"PR\x03" + bytes(21),  # a version nobody speaks
        encode_frame(FrameType.HEARTBEAT, Lane.CONTROL, 0, 0, 0, b"")[:20] + (10**7).to_bytes(4, "big"),  # lying length
    ],
    ids=["magic", "version", "length"],
)
def test_what_the_data_plane_does_not_accept_goes_back_to_python_byte_for_byte(plane, garbage: bytes) -> None:
    button_far, button = pair()
    pub = plane.publisher(button_far.fileno(), **LIMITS)
    pub.resume()
    pub.describe(VIDEO, Lane.VIDEO)
    good = media(VIDEO, 0, idr(), key=True)
    button.sendall(good + garbage + b"tail")
    kind, conn, data = wait_events(plane)[0]
    assert (kind, conn) == (dataplane.HANDBACK, pub.id)
    assert data == garbage + b"tail"
    assert pub.stats()["messages_in"] == 1
    pub.remove()


def test_media_on_an_undescribed_track_or_not_annex_b_is_handed_back(plane) -> None:
    for bad in (media(9, 0, idr(), key=True),  # track 9 was never described
                media(VIDEO, 0, b"\x00\x00\x02\xb6" + bytes(50), key=True),  # not Annex B
                media(VIDEO, 0, p_frame(), key=True),  # KEYFRAME flag, no IDR
                media(VIDEO, 0, idr()),  # an IDR without the flag
                media(VIDEO, 0, idr(), key=True, lane=Lane.AUDIO)):  # the wrong lane for the track
        button_far, button = pair()
        pub = plane.publisher(button_far.fileno(), **LIMITS)
        pub.resume()
        pub.describe(VIDEO, Lane.VIDEO)
        button.sendall(bad)
        kind, _, data = wait_events(plane)[0]
        assert (kind, data) == (dataplane.HANDBACK, bad)
        assert pub.stats()["messages_in"] == 0
        pub.remove()
        button.close()
        button_far.close()


def test_a_message_broken_mid_way_hands_back_its_first_chunks_too(plane) -> None:
    button_far, button = pair()
    pub = plane.publisher(button_far.fileno(), **LIMITS)
    pub.resume()
    pub.describe(VIDEO, Lane.VIDEO)
    chunks = encode_media(VIDEO, Lane.VIDEO, 5, 1_000, idr(40_000), True, 16 * 1024)
    interloper = media(VIDEO, 6, p_frame())  # another seq before the message ended
    button.sendall(chunks[0] + interloper)
    kind, _, data = wait_events(plane)[0]
    assert (kind, data) == (dataplane.HANDBACK, chunks[0] + interloper)
    pub.remove()


def test_peer_close_is_reported(plane) -> None:
    button_far, button = pair()
    pub = plane.publisher(button_far.fileno(), **LIMITS)
    pub.resume()
    button.close()
    kind, _, data = wait_events(plane)[0]
    assert (kind, data) == (dataplane.CLOSED, b"peer closed the connection")
    pub.remove()


def test_an_alert_overtakes_queued_media_and_a_slow_console_drops_to_the_next_keyframe(plane) -> None:
    button_far, button = pair()
    pub = plane.publisher(button_far.fileno(), **LIMITS)
    pub.resume()
    pub.describe(VIDEO, Lane.VIDEO)
    slow_near, slow = tcp_pair(16 * 1024)  # its socket fills at once
    fast_near, fast = pair()
    small = dict(SUB_LIMITS, max_video_bytes=200_000)
    slow_sub = plane.subscriber(slow_near.fileno(), **small)
    fast_sub = plane.subscriber(fast_near.fileno(), **small)
    for sub in (slow_sub, fast_sub):
        pub.subscribe(sub, 0)
        sub.release()
    total = b""
    seq = 0
    key = media(VIDEO, seq, idr(10_000), key=True)
    button.sendall(key)
    total += key
    received_fast = bytearray()
    # Far more video than the slow console's socket and its queue can hold.
    for _ in range(300):
        seq += 1
        frame = media(VIDEO, seq, p_frame(10_000))
        button.sendall(frame)
        total += frame
        while select.select([fast], [], [], 0)[0]:
            received_fast += fast.recv(1 << 20)
    deadline = time.monotonic() + 5
    while pub.stats()["messages_in"] < seq + 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    # The slow console's socket is full; a new keyframe ends its drop and waits in its queue.
    seq += 1
    key_mid = media(VIDEO, seq, idr(10_000), key=True)
    after_key = media(VIDEO, seq + 1, p_frame(5_000)) + media(VIDEO, seq + 2, p_frame(5_000))
    seq += 2
    button.sendall(key_mid + after_key)
    total += key_mid + after_key
    while slow_sub.stats()["queued_bytes"] <= len(key_mid) or pub.stats()["messages_in"] < seq + 1:
        assert time.monotonic() < deadline + 5, slow_sub.stats()
        time.sleep(0.01)
    alert = encode_frame(FrameType.ALERT, Lane.ALERT, 0, 1, 0, b"\x80")
    assert slow_sub.send(Lane.ALERT, alert)
    received_fast += read_exactly(fast, len(total) - len(received_fast))
    assert bytes(received_fast) == total, "the fast console lost something because of the slow one"
    assert slow_sub.stats()["dropped_video"] > 0
    # The slow console's bytes: what the kernel already held, then the alert before any queued video.
    slow_bytes = bytearray()
    while select.select([slow], [], [], 0.3)[0]:
        chunk = slow.recv(1 << 20)
        if not chunk:
            break
        slow_bytes += chunk
    at = bytes(slow_bytes).find(alert)
    assert at != -1, "the alert never reached the slow console"
    assert len(slow_bytes) - at - len(alert) > 0, "no queued video followed the alert: it overtook nothing"
    # After the drop, the next video it gets starts with a keyframe.
    seq += 1
    key2 = media(VIDEO, seq, idr(500), key=True)
    button.sendall(key2)
    assert read_exactly(slow, len(key2)) == key2
    for h in (slow_sub, fast_sub, pub):
        h.remove()


def test_a_late_joiner_gets_the_gop_cache_then_live_frames(plane) -> None:
    button_far, button = pair()
    pub = plane.publisher(button_far.fileno(), **LIMITS)
    pub.resume()
    pub.describe(VIDEO, Lane.VIDEO)
    gop = media(VIDEO, 0, idr(), key=True) + media(VIDEO, 1, p_frame()) + media(VIDEO, 2, p_frame())
    button.sendall(gop)
    deadline = time.monotonic() + 5
    while pub.stats()["messages_in"] < 3:
        assert time.monotonic() < deadline
        time.sleep(0.005)
    near, far = pair()
    sub = plane.subscriber(near.fileno(), **SUB_LIMITS)
    assert pub.subscribe(sub, 1 << 20) == 3
    subscribed = encode_frame(FrameType.SUBSCRIBED, Lane.CONTROL, 0, 1, 0, b"\x80")
    assert not select.select([far], [], [], 0.1)[0], "cached frames left before release()"
    assert sub.send(Lane.CONTROL, subscribed)
    sub.release()
    live = media(VIDEO, 3, p_frame())
    button.sendall(live)
    assert read_exactly(far, len(subscribed) + len(gop) + len(live)) == subscribed + gop + live
    # Without a valid cache, a joiner waits for the next keyframe.
    near2, far2 = pair()
    sub2 = plane.subscriber(near2.fileno(), **SUB_LIMITS)
    assert pub.subscribe(sub2, 10) == 0  # the GOP is above its 10 bytes
    sub2.release()
    button.sendall(media(VIDEO, 4, p_frame()))
    key = media(VIDEO, 5, idr(), key=True)
    button.sendall(key)
    assert read_exactly(far2, len(key)) == key
    for h in (sub, sub2, pub):
        h.remove()


def test_a_subscriber_whose_peer_vanished_fails_and_others_keep_flowing(plane) -> None:
    button_far, button = pair()
    pub = plane.publisher(button_far.fileno(), **LIMITS)
    pub.resume()
    pub.describe(VIDEO, Lane.VIDEO)
    gone_near, gone = pair()
    ok_near, ok = pair()
    gone_sub = plane.subscriber(gone_near.fileno(), **SUB_LIMITS)
    ok_sub = plane.subscriber(ok_near.fileno(), **SUB_LIMITS)
    for sub in (gone_sub, ok_sub):
        pub.subscribe(sub, 0)
        sub.release()
    gone.close()
    frames = media(VIDEO, 0, idr(), key=True) + media(VIDEO, 1, p_frame())
    button.sendall(frames)
    assert read_exactly(ok, len(frames)) == frames
    events = wait_events(plane)
    assert events[0][0] == dataplane.FAILED and events[0][1] == gone_sub.id
    assert b"send failed" in events[0][2]
    assert gone_sub.failure.startswith("send failed")
    for h in (gone_sub, ok_sub, pub):
        h.remove()


def test_audio_waits_up_to_audio_hold_for_the_next_video_frame_and_leaves_with_it() -> None:
    plane = dataplane.DataPlane(1, 1024 * 1024, 0.2)
    try:
        button_far, button = pair()
        pub = plane.publisher(button_far.fileno(), **LIMITS)
        pub.resume()
        pub.describe(VIDEO, Lane.VIDEO)
        pub.describe(AUDIO, Lane.AUDIO)
        near, far = pair()
        sub = plane.subscriber(near.fileno(), **SUB_LIMITS)
        pub.subscribe(sub, 0)
        sub.release()
        key = media(VIDEO, 0, idr(), key=True)
        button.sendall(key)
        assert read_exactly(far, len(key)) == key
        writes = sub.stats()["writes"]
        # Audio, then video 50 ms later (within the 200 ms hold): one write carries both.
        audio = media(AUDIO, 0, b"opus" * 10, lane=Lane.AUDIO)
        button.sendall(audio)
        time.sleep(0.05)
        assert not select.select([far], [], [], 0)[0], "audio left before audio_hold although video was due"
        frame = media(VIDEO, 1, p_frame())
        button.sendall(frame)
        got = read_exactly(far, len(audio) + len(frame))
        assert by_lane(got) == by_lane(audio + frame)
        assert sub.stats()["writes"] == writes + 1
        # Audio with no video after it still leaves, once audio_hold has passed.
        lone = media(AUDIO, 1, b"opus" * 10, lane=Lane.AUDIO)
        sent = time.monotonic()
        button.sendall(lone)
        assert read_exactly(far, len(lone)) == lone
        assert 0.15 <= time.monotonic() - sent < 2.0
        for h in (sub, pub):
            h.remove()
    finally:
        plane.stop()


def test_the_pre_roll_ring_keeps_whole_gops_reaching_back_pre_roll_within_its_budget() -> None:
    plane = dataplane.DataPlane(1, 1024 * 1024)
    plane.set_preroll(0.3, 1 << 20)
    try:
        button_far, button = pair()
        pub = plane.publisher(button_far.fileno(), **LIMITS)
        pub.resume()
        pub.describe(VIDEO, Lane.VIDEO)
        pub.describe(AUDIO, Lane.AUDIO)

        def send(*messages: bytes) -> None:
            before = pub.stats()["messages_in"]
            button.sendall(b"".join(messages))
            deadline = time.monotonic() + 5
            while pub.stats()["messages_in"] < before + len(messages):
                assert time.monotonic() < deadline
                time.sleep(0.005)

        send(media(AUDIO, 0, b"early", lane=Lane.AUDIO))  # before any keyframe: nothing to attach it to
        assert pub.preroll() == []
        gop1 = [media(VIDEO, 0, idr(), key=True), media(AUDIO, 1, b"a1", lane=Lane.AUDIO), media(VIDEO, 1, p_frame())]
        send(*gop1)
        time.sleep(0.4)
        gop2 = [media(VIDEO, 2, idr(), key=True), media(VIDEO, 3, p_frame())]
        send(*gop2)
        # GOP 2 began now: only GOP 1 reaches back 0.3 s, so both stay.
        assert [wire for *_, wire in pub.preroll()] == gop1 + gop2
        time.sleep(0.4)
        gop3 = [media(VIDEO, 4, idr(), key=True)]
        send(*gop3)
        kept = pub.preroll()
        assert [wire for *_, wire in kept] == gop2 + gop3, "GOP 2 reaches back far enough: GOP 1 goes"
        assert kept[0][:3] == (Lane.VIDEO, VIDEO, True)
        assert plane.preroll_bytes == sum(len(m) for m in gop2 + gop3)
        # Over the shared budget, this publisher (the only one) keeps its newest GOP only.
        plane.set_preroll(10.0, len(gop3[0]) + 10)
        gop4 = [media(VIDEO, 5, idr(), key=True)]
        send(*gop4)
        assert [wire for *_, wire in pub.preroll()] == gop4
        pub.remove()
        assert plane.preroll_bytes == 0
    finally:
        plane.stop()


def test_a_console_that_disconnects_mid_write_fails_alone(plane) -> None:
    """A console's socket closes while a message is half written to it: it fails; the others get everything."""
    button_far, button = pair()
    pub = plane.publisher(button_far.fileno(), **LIMITS)
    pub.resume()
    pub.describe(VIDEO, Lane.VIDEO)
    leaving_near, leaving = tcp_pair(16 * 1024)
    staying_near, staying = pair()
    leaving_sub = plane.subscriber(leaving_near.fileno(), **SUB_LIMITS)
    staying_sub = plane.subscriber(staying_near.fileno(), **SUB_LIMITS)
    for sub in (leaving_sub, staying_sub):
        pub.subscribe(sub, 0)
        sub.release()
    frames = media(VIDEO, 0, idr(200_000), key=True) + b"".join(media(VIDEO, i, p_frame(30_000)) for i in (1, 2, 3))
    button.sendall(frames)
    got = read_exactly(staying, len(frames))
    assert got == frames
    deadline = time.monotonic() + 5
    while leaving_sub.stats()["queued_bytes"] == 0:  # the rest waits for a socket that is full
        assert time.monotonic() < deadline, leaving_sub.stats()
        time.sleep(0.01)
    partial = leaving.recv(5000)  # the console read part of a frame, then went away
    assert 0 < len(partial) < len(frames)
    leaving.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")  # RST
    leaving.close()
    more = media(VIDEO, 4, p_frame(1000))
    button.sendall(more)
    assert read_exactly(staying, len(more)) == more, "the staying console waits for nobody"
    events = wait_events(plane)
    assert (events[0][0], events[0][1]) == (dataplane.FAILED, leaving_sub.id), events
    assert leaving_sub.failure
    for h in (leaving_sub, staying_sub, pub):
        h.remove()


def test_a_button_killed_mid_frame_is_reported_and_its_half_frame_reaches_nobody(plane) -> None:
    button_far, button = pair()
    pub = plane.publisher(button_far.fileno(), **LIMITS)
    pub.resume()
    pub.describe(VIDEO, Lane.VIDEO)
    other_far, other = pair()
    other_pub = plane.publisher(other_far.fileno(), **LIMITS)
    other_pub.resume()
    other_pub.describe(AUDIO, Lane.AUDIO)
    near, far = pair()
    sub = plane.subscriber(near.fileno(), **SUB_LIMITS)
    for p in (pub, other_pub):
        p.subscribe(sub, 0)
    sub.release()
    whole = media(VIDEO, 0, idr(), key=True)
    cut = media(VIDEO, 1, p_frame(5000))
    button.sendall(whole + cut[: len(cut) // 2])
    assert read_exactly(far, len(whole)) == whole
    button.close()  # killed: half a frame in flight
    # Python gets the half frame, then reads the end of the stream itself: it names the truncated frame.
    kind, conn, data = wait_events(plane)[0]
    assert (kind, conn, data) == (dataplane.HANDBACK, pub.id, cut[: len(cut) // 2])
    audio = media(AUDIO, 0, b"\x01" * 50, lane=Lane.AUDIO)
    other.sendall(audio)
    assert read_exactly(far, len(audio)) == audio, "the other button's media flows; no half frame came first"
    assert pub.stats()["messages_in"] == 1
    for h in (sub, pub, other_pub):
        h.remove()


def test_every_subscriber_full_at_once_waits_without_spinning_and_catches_up(plane) -> None:
    """EAGAIN on every subscriber together: the data thread waits for writability, then each gets it all."""
    button_far, button = pair()
    pub = plane.publisher(button_far.fileno(), **LIMITS)
    pub.resume()
    pub.describe(VIDEO, Lane.VIDEO)
    peers = [tcp_pair(16 * 1024) for _ in range(20)]
    subs = [plane.subscriber(near.fileno(), **SUB_LIMITS) for near, _ in peers]
    for sub in subs:
        pub.subscribe(sub, 0)
        sub.release()
    wire = media(VIDEO, 0, idr(60_000), key=True) + b"".join(media(VIDEO, i, p_frame(20_000)) for i in range(1, 6))
    button.sendall(wire)
    deadline = time.monotonic() + 5
    while not all(sub.stats()["queued_bytes"] for sub in subs):  # every socket full, every queue holding
        assert time.monotonic() < deadline
        time.sleep(0.01)
    turns = plane.stats()["turns"]
    time.sleep(0.3)
    idle_turns = plane.stats()["turns"] - turns
    assert idle_turns < 20, f"{idle_turns} turns in 0.3 s with every socket full: the data thread spins"
    for _, far in peers:
        assert read_exactly(far, len(wire)) == wire
    assert all(sub.stats()["dropped_video"] == 0 for sub in subs)
    for h in (*subs, pub):
        h.remove()
