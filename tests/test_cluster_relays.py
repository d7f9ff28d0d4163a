"""Three relays as one control room on a real 3-node JetStream cluster, in one process.

A button on relay 1, consoles on relays 2 and 3: every console gets every
alert with the stream sequence as its cursor, an operator on relay 3 acts on
an alert raised on relay 1, and a console that leaves relay 3 resumes on
relay 2 from its cursor with nothing missed and nothing twice. A button
taken over by another relay is fenced; one lost with its relay raises one
offline alert. Consoles on relay 2 play a button on relay 1 through one pull.
"""

from __future__ import annotations

from contextlib import AsyncExitStack

import pytest
import trio

import pinkrelay
from pinkrelay._core import Lane
from pinkrelay.certs import init_deployment
from pinkrelay.tls import client_tls
from pinkrelay.media import Decoder, TrackInfo, encode_clip
from pinkrelay.protocol import Alert, AlertUpdate, Media, StreamDescription, Subscribed
from pinkrelay.relay.data_plane import available as data_plane_available

from nats_helpers import fresh_namespace, nats_cluster, stream_leader  # noqa: F401 (the fixture)
from relay_helpers import (
    OPERATOR,
    TOKEN,
    button_client,
    collect_events,
    handshake,
    make_registry,
    raw_button,
    raw_console,
    relay_config,
    stream_clip,
    wait_until,
)

async def start_relays(stack: AsyncExitStack, tmp_path, cluster, count=3, **changes):
    namespace = fresh_namespace("relays")
    registry = make_registry(8)
    relays = []
    for index in range(1, count + 1):
        host = f"127.0.0.{index + 1}"
        config = relay_config(tmp_path / f"relay-{index}", relay_name=f"relay-{index}",
                              cluster_nats_urls=tuple(cluster.urls), cluster_namespace=namespace, **changes)
        config = config.replace(buttons_listen=pinkrelay.Address(host, 0), consoles_listen=pinkrelay.Address(host, 0))
        relays.append(await stack.enter_async_context(pinkrelay.open_relay(config, registry=registry)))
    return relays


def console_on(relay, cursor=0, operator=OPERATOR, token=TOKEN, **options):
    console = pinkrelay.ConsoleClient(relay.consoles_address, operator, token.encode(), **options)
    console.cursor = cursor
    return console


def alerts_in(events):
    return [e for e in events if isinstance(e, Alert)]


@pytest.mark.core_independent
def test_consoles_on_other_relays_see_every_alert_and_resume_on_any_relay(nats_cluster, tmp_path):
    async def main():
        with trio.fail_after(40):
            await scenario()

    async def scenario():
        async with AsyncExitStack() as stack:
            relay1, relay2, relay3 = await start_relays(stack, tmp_path, nats_cluster)
            nursery = await stack.enter_async_context(trio.open_nursery())
            on3, on2 = console_on(relay3), console_on(relay2, operator="desk-2", token=TOKEN + "-2")
            seen3, seen2 = [], []
            for console, seen in ((on3, seen3), (on2, seen2)):
                await nursery.start(console.run)
                nursery.start_soon(collect_events, console, seen)
            button = button_client(relay1, "kp-test-001", retry_interval=0.3)
            await nursery.start(button.run)

            receipt = await button.press(timeout=10)
            assert not receipt.duplicate
            # The counter relay 1 accepted is the cluster's: an older hello is refused at relay 2.
            await wait_until(lambda: relay2.journal.counter_of("button", "kp-test-001") > 0, 5,
                             "relay 1's accepted counter to reach relay 2")
            stale = raw_button("kp-test-001", counter=relay2.journal.counter_of("button", "kp-test-001"))
            stream = await trio.open_tcp_stream(relay2.buttons_address.host, relay2.buttons_address.port)
            with pytest.raises(AssertionError, match="closed the connection"):
                await handshake(stream, stale)
            await stream.aclose()
            assert relay2.counters["auth_failures"] == 1
            await wait_until(lambda: alerts_in(seen3) and alerts_in(seen2), 5, "both consoles to get the alert")
            alert = alerts_in(seen3)[0]
            assert alert.alert_id == receipt.alert_id and alert.button == "kp-test-001"
            assert alert.site is not None and alert.site.name  # the registry's site, from relay 1
            assert alerts_in(seen2)[0].cursor == alert.cursor > 0  # one cursor: the stream sequence

            # An operator on relay 3 acknowledges the alert raised on relay 1: every console hears it.
            on3.update_alert(alert.alert_id, "acknowledged")
            await wait_until(lambda: any(isinstance(e, AlertUpdate) for e in seen2), 5, "the step on relay 2")
            assert (await relay1.journal.get(alert.alert_id)).state == "acknowledged"

            # The console on relay 3 leaves; two presses meanwhile; it resumes on relay 2 from its cursor.
            cursor = on3.cursor
            on3.close("operator moves to relay 2")
            on3.reconnect = False
            missed = [await button.press(timeout=10) for _ in range(2)]
            resumed = []
            again = console_on(relay2, cursor=cursor)
            await nursery.start(again.run)
            nursery.start_soon(collect_events, again, resumed)
            await wait_until(lambda: len(alerts_in(resumed)) >= 2, 5, "the resumed console's alerts")
            await trio.sleep(0.2)
            got = [a.alert_id for a in alerts_in(resumed)]
            # The two it missed (repeat presses, merged into the first), once each, at their
            # stream cursors; the first, still open, as the open alert every console is given.
            assert sorted(got) == sorted([alert.alert_id, *(r.alert_id for r in missed)]), got
            assert all(a.cursor > cursor for a in alerts_in(resumed) if a.alert_id != alert.alert_id)
            assert again.cursor > cursor
            nursery.cancel_scope.cancel()

    trio.run(main)


@pytest.mark.core_independent
def test_a_button_taken_over_by_another_relay_is_fenced_and_its_offline_alert_is_raised_once(nats_cluster, tmp_path):
    """Takeover fences the old session; a button lost with its relay raises one offline alert in all."""

    async def main():
        with trio.fail_after(40):
            await scenario()

    async def scenario():
        async with AsyncExitStack() as stack:
            relays = await start_relays(stack, tmp_path, nats_cluster, heartbeat_interval=0.2,
                                        supervision_window=1.5, cluster_lease=1.0)
            relay1, relay2, relay3 = relays
            nursery = await stack.enter_async_context(trio.open_nursery())
            seen = []
            console = console_on(relay3)
            await nursery.start(console.run)
            nursery.start_soon(collect_events, console, seen)

            # The button signs in on relay 1, then (its old path half-open) on relay 2.
            first = button_client(relay1, "kp-test-002", reconnect=False)
            nursery.start_soon(first.run)
            await wait_until(lambda: relay1.cluster.directory.holders.get("kp-test-002") is not None
                             and relay2.cluster.directory.holders.get("kp-test-002") is not None, 5,
                             "relay 1's claim to reach relay 2")
            second = button_client(relay2, "kp-test-002", reconnect=False)
            nursery.start_soon(second.run)
            await wait_until(lambda: relay1.cluster.fenced == 1, 5, "relay 1 to fence its session")
            await wait_until(lambda: "kp-test-002" not in relay1.sessions_by_button, 5, "the fenced session to end")
            await wait_until(lambda: relay3.cluster.directory.holders["kp-test-002"].relay == "relay-2", 5,
                             "relay 3 to see the takeover")
            assert relay3.cluster.directory.holders["kp-test-002"].epoch == 2
            assert (await second.press(timeout=10)).alert_id  # served by its new relay

            # The button dies, and so does its relay: the other two supervise it, one offline alert in all.
            second.close("battery gone")
            await relay2.shutdown()
            offline = lambda: [e for e in alerts_in(seen) if e.kind == "offline"]  # noqa: E731
            await wait_until(offline, 10, "the offline alert")
            await trio.sleep(2.0)  # both survivors' windows have passed
            assert len(offline()) == 1, offline()
            stored = [a for a in relay1.journal.view.alerts.values() if a.kind == "offline"]
            assert [a.alert_id for a in stored] == [offline()[0].alert_id]
            assert stored[0].button == "kp-test-002"
            nursery.cancel_scope.cancel()

    trio.run(main)


@pytest.fixture(scope="module")
def clip():
    return encode_clip(3, width=320, height=240, fps=30, bitrate=400_000, label="cluster")


@pytest.mark.parametrize(("tls", "data_threads"), [
    pytest.param(False, 0, id="plaintext"), pytest.param(True, 0, id="tls"),
    pytest.param(False, 2, id="data-plane", marks=pytest.mark.compiled_only)])
def test_a_console_on_another_relay_plays_the_stream_through_one_pull(nats_cluster, tmp_path, clip, tls,
                                                                      data_threads):
    """Consoles on relay 2 watch a button on relay 1: one relay-to-relay pull, real H.264 decoded, fast join.

    With TLS on every listener (one relay certificate for the deployment's hosts), the pull speaks TLS too.
    On the data plane, both relays' data threads carry the media: relay 2 injects what it pulls.
    """
    if data_threads and not data_plane_available():
        pytest.fail("the compiled core and its data plane are not built")
    pki = tmp_path / "pki"
    client = {}
    changes = {"data_threads": data_threads}
    if tls:
        init_deployment(pki, hosts=("127.0.0.2", "127.0.0.3"), devices=("kp-test-003",))
        client = {"tls": client_tls(ca=pki / "ca.pem")}
        changes.update(tls_cert=pki / "relay.pem", tls_key=pki / "relay.key")

    async def main():
        with trio.fail_after(40):
            await scenario()

    async def scenario():
        secret = tmp_path / "cluster.secret"
        secret.write_text("a-cluster-secret-of-at-least-thirty-two-bytes\n")
        async with AsyncExitStack() as stack:
            relay1, relay2 = await start_relays(stack, tmp_path, nats_cluster, count=2, cluster_secret_file=secret,
                                                **changes)
            nursery = await stack.enter_async_context(trio.open_nursery())
            button = button_client(relay1, "kp-test-003", [clip.video.to_dict(), clip.audio.to_dict()], **client)
            await nursery.start(button.run)
            await wait_until(lambda: relay2.cluster.directory.holders.get("kp-test-003") is not None, 5,
                             "relay 2 to know who holds the button")
            nursery.start_soon(lambda: stream_clip(button, clip, seconds=3.0))

            async def watch(operator, token, into, count):
                console = console_on(relay2, operator=operator, token=token, **client)
                await nursery.start(console.run)
                console.subscribe("kp-test-003")
                async for event in console.events():
                    if isinstance(event, Subscribed):
                        into["catchup"] = event.catchup_frames
                    if isinstance(event, (Subscribed, StreamDescription)) and event.tracks:
                        into.setdefault("tracks", event.tracks)
                    elif isinstance(event, Media) and event.lane == Lane.VIDEO:
                        into.setdefault("video", []).append(event)
                        if len(into["video"]) >= count:
                            return

            first, second = {}, {}
            await watch(OPERATOR, TOKEN, first, 30)
            await trio.sleep(0.3)
            joined_at = trio.current_time()
            await watch("desk-2", TOKEN + "-2", second, 5)
            second_join = trio.current_time() - joined_at
            # One pull on relay 1, however many consoles relay 2 has.
            pullers = [s for s in relay1.consoles if s.identity == "relay.relay-2"]
            assert len(pullers) == 1
            assert relay1.hub.watchers["kp-test-003"] == (pullers[0].outbox,)
            if not tls:  # A relay's name with a made-up token is no relay.
                forged = await trio.open_tcp_stream(relay1.consoles_address.host, relay1.consoles_address.port)
                with pytest.raises(AssertionError, match="closed the connection"):
                    await handshake(forged, raw_console("relay.relay-9", "a-guessed-token-" + "0" * 48))
                await forged.aclose()
            if data_threads:
                assert relay2.stats()["data_plane_messages"] >= 30, "relay 2's data plane fanned out the pull"
            nursery.cancel_scope.cancel()
        video = first["video"]
        description = next(t for t in first["tracks"] if t.kind == "video")
        assert video[0].keyframe and all(m.track_id == description.track_id for m in video)
        decoder = Decoder(TrackInfo(kind="video", codec="h264", width=description.width, height=description.height,
                                    fps=description.fps, extradata=description.extradata))
        frames = [frame for message in video for frame in decoder.decode(message.data)]
        assert frames and (frames[0].width, frames[0].height) == (320, 240)
        assert decoder.skipped_packets == 0
        assert second["video"][0].keyframe
        assert second["catchup"] > 0, "the second console's fast join is served from relay 2's cache"
        print(f"\nsecond console on relay 2: first video {second_join * 1000:.0f} ms after subscribing")

    trio.run(main)


@pytest.mark.core_independent
def test_a_short_cluster_secret_stops_the_relay_at_start(nats_cluster, tmp_path):
    secret = tmp_path / "cluster.secret"
    secret.write_text("too-short\n")
    config = relay_config(tmp_path / "relay", cluster_nats_urls=tuple(nats_cluster.urls), cluster_secret_file=secret)
    with pytest.raises(pinkrelay.ConfigError, match="has 9 bytes; use at least 32"):
        pinkrelay.Relay(config, registry=make_registry(2))


@pytest.mark.core_independent
def test_kill_9_of_a_nats_node_under_relays_loses_nothing_and_consoles_keep_following(nats_cluster, tmp_path):
    """Presses through relay 1 while a NATS node dies: all acknowledged, stored once, seen once on relay 2."""

    async def main():
        with trio.fail_after(60):
            await scenario()

    async def scenario():
        async with AsyncExitStack() as stack:
            relay1, relay2 = await start_relays(stack, tmp_path, nats_cluster, count=2, merge_window=0.0,
                                                press_rate_per_button=0.0)
            nursery = await stack.enter_async_context(trio.open_nursery())
            seen = []
            console = console_on(relay2)
            await nursery.start(console.run)
            nursery.start_soon(collect_events, console, seen)
            button = button_client(relay1, "kp-test-004", retry_interval=0.3)
            await nursery.start(button.run)
            receipts = []
            started = trio.current_time()
            leader = nats_cluster.node(await stream_leader(relay1.journal))
            for index in range(60):
                if index == 15:
                    leader.kill()  # the stream's leader: its death costs an election
                receipts.append(await button.press(timeout=20))
                await trio.sleep(0.02)
            took = trio.current_time() - started
            acked = {r.alert_id for r in receipts}
            await wait_until(lambda: acked <= {a.alert_id for a in alerts_in(seen)}, 15,
                             "relay 2's console to see every acknowledged press")
            got = [a.alert_id for a in alerts_in(seen)]
            assert len(got) == len(set(got)), "a console got an alert twice"
            cursors = [a.cursor for a in alerts_in(seen)]
            assert cursors == sorted(cursors)
            stored = [a.alert_id for a in relay2.journal.view.alerts.values() if a.button == "kp-test-004"]
            assert sorted(stored) == sorted(acked)
            latencies = sorted(r.latency_ms for r in receipts)
            print(f"\n60 presses across kill -9 of a NATS node under two relays in {took:.1f} s: ack p50 "
                  f"{latencies[30]:.1f} ms, max {latencies[-1]:.0f} ms")
            # The buttons bucket is still followed after the node's death: a takeover still fences.
            elsewhere = button_client(relay2, "kp-test-004", reconnect=False)
            nursery.start_soon(elsewhere.run)
            await wait_until(lambda: relay1.cluster.fenced == 1, 20, "relay 1 to fence the session taken over")
            nursery.cancel_scope.cancel()

    try:
        trio.run(main)
    finally:
        nats_cluster.restart_stopped()


@pytest.mark.core_independent
def test_a_retried_claim_never_takes_a_button_another_relay_claimed_since(nats_cluster, tmp_path):
    """A relay whose first claim failed retries; if another relay claimed the button meanwhile, it stands back."""
    from pinkrelay.cluster.kv import ClaimedElsewhere

    async def main():
        with trio.fail_after(30):
            async with AsyncExitStack() as stack:
                relay1, relay2 = await start_relays(stack, tmp_path, nats_cluster, count=2)
                nursery = await stack.enter_async_context(trio.open_nursery())
                button = button_client(relay2, "kp-test-005")
                await nursery.start(button.run)
                await wait_until(lambda: relay1.cluster.directory.holders.get("kp-test-005") is not None, 5,
                                 "relay 1 to hear relay 2's claim")
                held = relay1.cluster.directory.holders["kp-test-005"]
                assert held.relay == relay2.cluster.name
                # Relay 1 knew of no holder when its first claim failed: relay 2's claim came after.
                with pytest.raises(ClaimedElsewhere, match=f"relay {relay2.cluster.name} claimed it at epoch"):
                    await relay1.cluster.directory.claim("kp-test-005", unless_after=held.epoch - 1)
                assert relay1.cluster.directory.holders["kp-test-005"] == held, "the bucket kept relay 2's claim"
                assert relay2.sessions_by_button["kp-test-005"].cluster_epoch == held.epoch
                nursery.cancel_scope.cancel()

    trio.run(main)
