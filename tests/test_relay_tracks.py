"""Track ids are reused: a block goes back when its button left and no console watches it.

The allocator is sans-IO (relay/tracks.py) and tested with churn directly;
the end-to-end test signs more distinct buttons in and out of a real relay
than its 16-bit track space has blocks for, while a console watches one of
them, whose ids must stay its own.
"""

from __future__ import annotations

import pytest
import trio
from trio.testing import trio_test

from pinkrelay.protocol import Subscribed
from pinkrelay.relay.tracks import TrackSpace, TrackSpaceFull

from relay_helpers import collect_events, console_client, next_of, raw_button, raw_session, running_relay


def test_blocks_come_back_after_churn():
    space = TrackSpace(8, narrow_limit=80)  # ten blocks
    for round_ in range(1000):
        button_id = f"b{round_}"
        ids = space.acquire(button_id)
        assert ids[0] == 1 and len(ids) == 8  # the lowest block is free again every time
        space.disconnected(button_id)
    assert space.held == 0


def test_a_held_block_is_never_handed_out_and_full_space_says_so():
    watched = {"a"}
    space = TrackSpace(8, narrow_limit=24, is_watched=watched.__contains__)  # three blocks
    a = space.acquire("a")
    space.disconnected("a")  # still watched: held
    b = space.acquire("b")
    c = space.acquire("c")
    assert len({a, b, c}) == 3
    with pytest.raises(TrackSpaceFull, match="protocol v1 .* v2"):
        space.acquire("d")
    assert space.acquire("a") == a  # back while watched: the same ids
    space.disconnected("b")
    assert space.acquire("d") == b
    watched.clear()
    space.unwatched("a")
    assert space.block_of("a") == a and space.held == 3  # a is still connected
    space.disconnected("a")
    assert space.acquire("f") == a


def test_wide_buttons_take_narrow_blocks_first_and_narrow_ones_never_get_wide_blocks():
    space = TrackSpace(8, narrow_limit=16, wide_limit=64)
    assert space.acquire("v2-a", wide=True) == tuple(range(1, 9))
    assert space.acquire("v1-b") == tuple(range(9, 17))
    wide = space.acquire("v2-c", wide=True)
    assert wide[0] > 16
    with pytest.raises(TrackSpaceFull):
        space.acquire("v1-d")
    # A button that held a wide block and comes back speaking v1 gets a narrow one or a refusal.
    space.disconnected("v2-a")
    assert space.acquire("v2-c") == tuple(range(1, 9))
    assert space.capacity == 8 and space.narrow_capacity == 2


@trio_test
async def test_more_distinct_buttons_than_blocks_sign_in_one_after_another(tmp_path):
    # max_tracks 64: the 16-bit space has 1023 blocks. 1100 distinct buttons come and go, 50 at a time.
    count, batch = 1100, 50
    async with running_relay(tmp_path, registry_size=count + 1, max_tracks=64, handshake_rate_per_address=0,
                             max_unauthenticated_per_address=batch * 2) as relay:
        watched = "kp-test-001"
        async with trio.open_nursery() as nursery:
            console = console_client(relay)
            await nursery.start(console.run)
            console.subscribe(watched)
            await next_of(console, Subscribed)
            nursery.start_soon(collect_events, console, [])
            first = raw_button(watched)
            stream = await raw_session(relay.buttons_address, first)
            watched_ids = first.track_ids
            assert len(watched_ids) == 64
            await stream.aclose()
            seen: set[tuple[int, ...]] = set()

            async def one(index: int) -> None:
                conn = raw_button(f"kp-test-{index:03d}")
                sock = await raw_session(relay.buttons_address, conn)
                assert tuple(conn.track_ids) != tuple(watched_ids), "a watched button's ids were handed out"
                seen.add(tuple(conn.track_ids))
                await sock.aclose()

            with trio.fail_after(60):
                for start in range(2, count + 2, batch):
                    async with trio.open_nursery() as signing_in:
                        for index in range(start, min(start + batch, count + 2)):
                            signing_in.start_soon(one, index)
                    await trio.testing.wait_all_tasks_blocked(0.01)
            assert len(seen) <= 2 * batch + 1  # the same few blocks, used again and again
            back = raw_button(watched)
            stream = await raw_session(relay.buttons_address, back)
            assert back.track_ids == watched_ids
            await stream.aclose()
            assert relay.stats()["track_blocks_held"] <= batch + 1
            nursery.cancel_scope.cancel()


@trio_test
async def test_past_the_16_bit_space_a_v2_button_streams_on_wide_ids_to_a_v2_console(tmp_path):
    # max_tracks 64: 1023 blocks fit 16 bits. They are all held by v1 buttons; then a v1 button is
    # refused with 'capacity', a v2 button (ButtonClient says protocol 2) gets ids above 65535 and
    # its real H.264/Opus reaches a console in version-2 headers; a v1 console may not watch it.
    from pinkrelay.media import encode_clip
    from pinkrelay.protocol import Error, Media, Subscribe

    from relay_helpers import button_client, raw_console, read_events, stream_clip, wait_until

    narrow = 65535 // 64
    clip = encode_clip(1, width=160, height=120, fps=10, bitrate=100_000, label="wide")
    async with running_relay(tmp_path, registry_size=narrow + 3, max_tracks=64, handshake_rate_per_address=0,
                             max_unauthenticated_per_address=200) as relay:
        held = []

        async def hold(indexes: range) -> None:
            for index in indexes:
                conn = raw_button(f"kp-test-{index:03d}")
                held.append(await raw_session(relay.buttons_address, conn))

        with trio.fail_after(60):
            async with trio.open_nursery() as signing_in:
                for start in range(1, narrow + 1, 100):
                    signing_in.start_soon(hold, range(start, min(start + 100, narrow + 1)))
        v1 = raw_button(f"kp-test-{narrow + 1:03d}")
        stream = await trio.open_tcp_stream(relay.buttons_address.host, relay.buttons_address.port)
        await stream.send_all(v1.hello(trio.current_time()))
        refused = await read_events(stream, v1, until=lambda events: any(isinstance(e, Error) for e in events)
                                    or any(type(e).__name__ == "Challenge" for e in events), timeout=5)
        for event in refused:
            if type(event).__name__ == "Challenge":
                await stream.send_all(v1.authenticate(trio.current_time()))
        refused += await read_events(stream, v1, until=lambda events: any(isinstance(e, Error) for e in events),
                                     timeout=5)
        errors = [e for e in refused if isinstance(e, Error)]
        assert errors and errors[0].code == "capacity" and "protocol v2" in errors[0].message
        await stream.aclose()

        # The block after the last narrow one straddles 65535; a raw v2 button takes it, so the client's is all wide.
        straddling = raw_button(f"kp-test-{narrow + 2:03d}", protocol=2)
        held.append(await raw_session(relay.buttons_address, straddling))
        assert straddling.welcome.protocol == 2 and straddling.track_ids[-1] > 0xFFFF
        wide_id = f"kp-test-{narrow + 3:03d}"
        async with trio.open_nursery() as nursery:
            console = console_client(relay)
            await nursery.start(console.run)
            seen: list = []
            nursery.start_soon(collect_events, console, seen)
            button = button_client(relay, wide_id, [clip.video.to_dict(), clip.audio.to_dict()])
            await nursery.start(button.run)
            console.subscribe(wide_id)
            nursery.start_soon(lambda: stream_clip(button, clip, seconds=1.0))
            media = []

            def wide_media() -> bool:
                media[:] = [e for e in seen if isinstance(e, Media) and e.track_id > 0xFFFF]
                return len(media) >= 5

            await wait_until(wide_media, timeout=15, what="media on track ids above 65535 at the console")
            assert relay.tracks.block_of(wide_id)[0] > 0xFFFF and {e.track_id for e in media} <= set(
                relay.tracks.block_of(wide_id))
            if relay.data_plane is not None:
                assert relay.stats()["data_plane_messages"] >= len(media), "the data plane carried the wide ids"
            # A console that said protocol 1 in its hello is refused, not sent headers it cannot read.
            old = raw_console()
            sock = await raw_session(relay.consoles_address, old)
            await sock.send_all(old.send(Subscribe(button=wide_id), trio.current_time()))
            answer = await read_events(sock, old, until=lambda events: any(isinstance(e, Error) for e in events),
                                       timeout=5)
            assert [e.code for e in answer if isinstance(e, Error)] == ["unsupported"]
            await sock.aclose()
            nursery.cancel_scope.cancel()
        for sock in held:
            await sock.aclose()
