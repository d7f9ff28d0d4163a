"""Talk-back from the web control room in a real Chromium with a fake microphone, to a real button.

Chromium captures a generated sine tone as its microphone
(``--use-file-for-fake-audio-capture``); the page encodes it with WebCodecs
(Opus) and sends it over its WebSocket; the relay passes it to a real
ButtonClient whose player decodes it with PyAV into a WAV file. The WAV
file's dominant frequency (numpy FFT) must be the tone's. The operator who
acknowledged the alert talks, by holding "Hold to talk" and by holding T; an
operator of another room is refused, on the page and in the audit log.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from pinkrelay.media.talkback import TalkBackPlayer, WavSink
from pinkrelay.operators import OperatorStore

from relay_helpers import button_client
from talkback_helpers import audit, dominant_hz, write_tone
from test_web_browser import CHROMIUM, CHROMIUM_ARGS, OPERATOR, OPERATOR_SECRET, RoomThread, sign_in, wait_until

from playwright import sync_api  # noqa: E402 - pip install -e '.[test]' installs it; never skipped

pytestmark = pytest.mark.core_independent

TONE_HZ = 440.0
BUTTON = "kp-test-001"
OTHER_ROOM, OTHER_SECRET = "nadia", "nadia-secret-for-tests-2"








@pytest.fixture(scope="module")
def tone(tmp_path_factory) -> Path:
    return write_tone(tmp_path_factory.mktemp("microphone") / "tone.wav", TONE_HZ)


@pytest.fixture(scope="module")
def browser(tone):
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: run scripts/install-system-deps.sh as root (installs chromium)")
    args = [*CHROMIUM_ARGS, "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
            f"--use-file-for-fake-audio-capture={tone}"]
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=args, headless=True)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def room(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("talkback-room")
    store = OperatorStore.in_data_dir(data_dir)
    store.add(OPERATOR, "operator", secret=OPERATOR_SECRET)
    store.add(OTHER_ROOM, "operator", secret=OTHER_SECRET, room="north")
    room = RoomThread(data_dir).start()
    yield room
    room.stop()


def listening_button(room: RoomThread, button_id: str, wav: Path) -> TalkBackPlayer:
    """A real ButtonClient on the room's relay whose talk-back goes to ``wav``."""
    player = TalkBackPlayer([WavSink(wav)])

    async def connect() -> None:
        client = button_client(room.relay, button_id, talkback=player)
        await room._nursery.start(client.run)
        room.buttons[button_id] = client

    room.call(connect)
    return player


def open_page(browser, room: RoomThread, name: str = OPERATOR, secret: str = OPERATOR_SECRET):
    context = browser.new_context(viewport={"width": 1600, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(10_000)
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    sign_in(page, room.room.url, name, secret)
    return context, page, errors


def test_the_operator_who_took_the_alert_talks_and_the_button_hears_the_tone(browser, room, tmp_path):
    wav = tmp_path / "heard.wav"
    player = listening_button(room, BUTTON, wav)
    context, page, errors = open_page(browser, room)
    try:
        alert_id = room.press(BUTTON)
        card = page.locator(f'li.alert[data-alert-id="{alert_id}"]')
        card.wait_for()
        talk = card.locator('button[data-action="talk"]')
        # Not yet taken: the relay refuses, and the card says why.
        talk.hover()
        page.mouse.down()
        page.mouse.up()
        error = card.locator(".error")
        error.wait_for()
        assert "not acknowledged; acknowledge it (A)" in (error.text_content() or "")
        card.locator('button[data-action="acknowledged"]').click()
        page.wait_for_selector(f'li.alert[data-alert-id="{alert_id}"][data-state="acknowledged"]')

        talk = card.locator('button[data-action="talk"]')
        talk.hover()
        page.mouse.down()
        wait_until(page, "() => document.body.dataset.talk === 'open'")
        assert "talking" in (card.get_attribute("class") or "")
        wait_until(page, "() => Number(document.body.dataset.talkPackets) >= 75", timeout=10)  # 1.5 s of voice
        page.mouse.up()
        wait_until(page, "() => document.body.dataset.talk === 'idle'")
        room_wait(room, lambda: player.sessions == 1 and player.talk_id == "")
        assert player.packets >= 70 and player.undecodable == 0
        assert "talking" not in (card.get_attribute("class") or "")

        # Holding T talks too: about the alert just taken.
        page.keyboard.down("t")
        wait_until(page, "() => document.body.dataset.talk === 'open'")
        wait_until(page, "() => Number(document.body.dataset.talkPackets) >= 110", timeout=10)
        page.keyboard.up("t")
        wait_until(page, "() => document.body.dataset.talk === 'idle'")
        room_wait(room, lambda: player.sessions == 2 and player.talk_id == "")
        latency = sorted(player.latency_ms())
        assert latency and 0 < latency[len(latency) // 2] < 1000, latency[:5]
        print(f"\ntalk-back: {player.packets} packets heard, median mouth-to-speaker "
              f"{latency[len(latency) // 2]:.0f} ms")
    finally:
        context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"
    room.call_sync(player.close)
    hz, samples = dominant_hz(wav)
    assert samples >= 2.0 * 48000, f"the button played only {samples / 48000:.2f} s"
    assert abs(hz - TONE_HZ) < 5, f"the button heard {hz:.1f} Hz; the microphone said {TONE_HZ} Hz"
    starts = audit(room.data_dir, "talk-start")
    assert [(o, s) for o, s, _ in starts] == [(OPERATOR, BUTTON), (OPERATOR, BUTTON)]
    assert alert_id in starts[0][2] and "web 127.0.0.1:" in starts[0][2]
    assert [(o, s) for o, s, _ in audit(room.data_dir, "talk-stop")] == [(OPERATOR, BUTTON), (OPERATOR, BUTTON)]
    assert audit(room.data_dir, "talk-refused")[0][0] == OPERATOR


def test_an_operator_from_another_room_is_refused(browser, room, tmp_path):
    player = listening_button(room, "kp-test-002", tmp_path / "never.wav")
    alert_id = room.press("kp-test-002")
    room.call(lambda: room.relay.act_on_alert(alert_id=alert_id, state="acknowledged", operator=OPERATOR,
                                              role="operator", console="test"))
    context, page, errors = open_page(browser, room, OTHER_ROOM, OTHER_SECRET)
    try:
        assert page.locator(f'li.alert[data-alert-id="{alert_id}"]').count() == 0, "room north does not see it"
        page.evaluate("""(button) => {
            window.refusal = null;
            window.pinkrelay.talk.press(button, {talking() {}, refused(text) { window.refusal = text; }});
        }""", "kp-test-002")
        refusal = wait_until(page, "() => window.refusal")
        assert "answered by room main, not by room 'north'" in refusal
        page.evaluate("() => window.pinkrelay.talk.release()")
        assert page.evaluate("() => document.body.dataset.talk") == "idle"
    finally:
        context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"
    assert player.sessions == 0 and player.packets == 0
    refused = [row for row in audit(room.data_dir, "talk-refused") if row[0] == OTHER_ROOM]
    assert [(o, s) for o, s, _ in refused] == [(OTHER_ROOM, "kp-test-002")]
    assert "not by room 'north'" in refused[0][2]


def room_wait(room: RoomThread, predicate, timeout: float = 5.0) -> None:
    import time

    deadline = time.monotonic() + timeout
    while not room.call_sync(predicate):
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for the button")
        time.sleep(0.05)


def test_malformed_and_stray_talkback_from_a_page_is_answered_and_the_board_goes_on(browser, room):
    context, page, errors = open_page(browser, room)
    warnings: list[str] = []
    page.on("console", lambda message: warnings.append(message.text) if "control room:" in message.text else None)
    try:
        page.evaluate("""() => {
            const socket = window.pinkrelay.socket;
            for (let i = 0; i < 50; i++) socket.send(new Uint8Array([1, 2, 3]));    // too short
            const stray = new Uint8Array(40); stray[0] = 1; stray[1] = 8;          // well formed, no talk open
            for (let i = 0; i < 20; i++) socket.send(stray);
        }""")
        page.wait_for_timeout(500)
        assert len(warnings) == 1, warnings  # one complaint a second, however many bad messages
        assert "12-byte header and 1 to 8000 bytes of Opus; got 3 bytes" in warnings[0]
        page.wait_for_timeout(700)
        page.evaluate("""() => {
            const socket = window.pinkrelay.socket;
            const video = new Uint8Array(40); video[0] = 1; video[1] = 1;          // a media flag, not talk-back
            socket.send(video);
            socket.send(new Uint8Array(12 + 9000));                                // oversize
        }""")
        page.wait_for_timeout(500)
        assert len(warnings) == 2 and "talk-back only (version 1, flags 8); got version 1, flags 1" in warnings[1]
        assert page.locator("#link.up").count() == 1, "the board's link stays up"
        page.evaluate("() => window.pinkrelay.socket.send(JSON.stringify({type: 'ping'}))")
    finally:
        context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


def test_a_lost_link_mid_talk_ends_it_on_both_sides(browser, room, tmp_path):
    player = listening_button(room, "kp-test-003", tmp_path / "cut.wav")
    context, page, errors = open_page(browser, room)
    try:
        alert_id = room.press("kp-test-003")
        card = page.locator(f'li.alert[data-alert-id="{alert_id}"]')
        card.locator('button[data-action="acknowledged"]').click()
        page.wait_for_selector(f'li.alert[data-alert-id="{alert_id}"][data-state="acknowledged"]')
        card.locator('button[data-action="talk"]').hover()
        page.mouse.down()
        wait_until(page, "() => document.body.dataset.talk === 'open'")
        room_wait(room, lambda: player.packets >= 10)
        page.evaluate("() => window.pinkrelay.socket.close()")
        wait_until(page, "() => document.body.dataset.talk === 'idle'")
        assert "link to the relay was lost" in (card.locator(".error").text_content() or "")
        page.mouse.up()
        page.wait_for_selector("#link.up")  # the page reconnects by itself
    finally:
        context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"
    stops = [row for row in audit(room.data_dir, "talk-stop") if row[1] == "kp-test-003"]
    assert len(stops) == 1 and stops[0][2].startswith("the operator's page closed;"), stops
    room_wait(room, lambda: player.sessions == 1 and player.talk_id == "")  # the button was told the talk ended
