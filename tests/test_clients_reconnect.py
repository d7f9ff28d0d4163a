"""A relay restart: the button and the console come back by themselves and the stream resumes."""

from __future__ import annotations

import socket

import trio
from trio.testing import trio_test

import pinkrelay
from pinkrelay.media import Decoder, TrackInfo, encode_clip
from pinkrelay.protocol import Media, Subscribed

from relay_helpers import button_client, button_ids, console_client, make_registry, relay_config, stream_clip


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@trio_test
async def test_button_and_console_resume_the_stream_after_the_relay_restarts(tmp_path):
    clip = encode_clip(3, width=320, height=240, fps=30, bitrate=400_000, label="restart")
    config = relay_config(tmp_path).replace(
        buttons_listen=pinkrelay.Address("127.0.0.1", _free_port()),
        consoles_listen=pinkrelay.Address("127.0.0.1", _free_port()),
    )
    registry = make_registry(2)
    button_id = button_ids(1)[0]
    events: list[object] = []
    async with trio.open_nursery() as outer:
        first_relay = pinkrelay.Relay(config, registry=registry)
        relay_scope = trio.CancelScope()

        async def run_first(task_status=trio.TASK_STATUS_IGNORED):
            with relay_scope:
                await first_relay.serve(task_status=task_status)

        await outer.start(run_first)
        button = button_client(first_relay, button_id, [clip.video.to_dict(), clip.audio.to_dict()],
                               backoff_initial=0.1, backoff_max=0.3)
        console = console_client(first_relay, backoff_initial=0.1, backoff_max=0.3)
        await outer.start(button.run)
        await outer.start(console.run)
        console.subscribe(button_id)

        async def collect():
            async for event in console.events():
                events.append(event)

        outer.start_soon(collect)

        async def stream_forever():
            while True:
                await stream_clip(button, clip, seconds=3.0)

        outer.start_soon(stream_forever)
        await trio.sleep(1.0)
        before = sum(isinstance(e, Media) for e in events)
        assert before > 20

        await first_relay.shutdown("restart for the test")
        relay_scope.cancel()
        await trio.sleep(0.3)
        restarted_at = len(events)
        second_relay = pinkrelay.Relay(config, registry=registry)
        await outer.start(second_relay.serve)
        with trio.fail_after(10):
            while True:
                after = [e for e in events[restarted_at:] if isinstance(e, Media) and e.lane == 3]
                if len(after) >= 30:
                    break
                await trio.sleep(0.05)
        outer.cancel_scope.cancel()

    assert any(isinstance(e, pinkrelay.Disconnected) for e in events[restarted_at - 5 :])
    assert any(isinstance(e, pinkrelay.Reconnected) for e in events[restarted_at:])
    assert button.reconnects >= 1
    resubscribed = [e for e in events[restarted_at:] if isinstance(e, Subscribed)]
    assert resubscribed and resubscribed[-1].button == button_id
    video = [e for e in events[restarted_at:] if isinstance(e, Media) and e.lane == 3]
    assert video[0].keyframe, "after the restart the stream must restart on a keyframe"
    track = next(t for t in resubscribed[-1].tracks if t.kind == "video") if resubscribed[-1].tracks else None
    info = TrackInfo(kind="video", codec="h264", width=320, height=240, fps=30.0,
                     extradata=track.extradata if track else b"")
    decoder = Decoder(info)
    frames = sum(len(decoder.decode(message.data)) for message in video)
    assert frames >= len(video) - 2 and decoder.skipped_packets == 0


@trio_test
async def test_clients_given_several_relays_go_on_to_the_next_when_one_does_not_answer(tmp_path):
    """A cluster's clients: the first relay is down, the second answers, even without reconnecting."""
    from relay_helpers import running_relay, secret_for

    dead = f"127.0.0.1:{_free_port()}"
    async with running_relay(tmp_path) as relay, trio.open_nursery() as nursery:
        button = pinkrelay.ButtonClient(f"{dead},{relay.buttons_address}", button_ids(1)[0],
                                        secret_for(button_ids(1)[0]), reconnect=False, backoff_initial=0.05)
        await nursery.start(button.run)
        assert button.relays.current == relay.buttons_address and not (await button.press(timeout=5)).duplicate
        console = pinkrelay.ConsoleClient([pinkrelay.Address.parse(dead), relay.consoles_address],
                                          "desk-1", b"console-token-for-tests-0001", reconnect=False,
                                          backoff_initial=0.05)
        await nursery.start(console.run)
        assert console.relays.current == relay.consoles_address
        nursery.cancel_scope.cancel()
    alone = pinkrelay.ButtonClient(dead, "kp-test-001", b"x" * 16, reconnect=False, backoff_initial=0.05)
    with trio.fail_after(5):
        try:
            await alone.run()
        except OSError as error:
            assert "refused" in str(error).lower() or "reach" in str(error).lower()
        else:
            raise AssertionError("a client whose only relay is down must fail without reconnect")
