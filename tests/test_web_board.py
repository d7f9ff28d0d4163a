"""The alert board built for stress, in a real headless Chromium against a real relay.

Urgency order and the badge that explains it, the alarm that repeats until
someone acknowledges (counted and measured through the page's audio hooks,
``window.pinkrelay.audio``), the banner of a page the browser keeps silent,
video of the alerts already open at sign-in, the keyboard shortcuts, and the
layout at a 1920x1080 wall screen and a 1366x768 laptop: no visible control or
text overlaps another, every control is a 44 px touch target. Alerts come from
real button presses; escalation levels from a short ``escalation_levels``.
Screenshots land in var/test-artefacts/web/ beside test_web_browser.py's.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from pinkrelay.media import encode_clip
from pinkrelay.operators import OperatorStore

from relay_helpers import console_client
from test_web_browser import ARTEFACTS, CHROMIUM, CHROMIUM_ARGS, OPERATOR, OPERATOR_SECRET, RoomThread, sign_in, \
    wait_until

from playwright import sync_api  # noqa: E402 - pip install -e '.[test]' installs it; never skipped

#: What a browser does by default: silent until the page itself gets a click or a key.
QUIET_ARGS = [arg for arg in CHROMIUM_ARGS if not arg.startswith("--autoplay-policy")] + [
    "--autoplay-policy=document-user-activation-required"]
WALL, LAPTOP = (1920, 1080), (1366, 768)

#: Every visible control and every visible line of text, clipped to what its scrolling
#: panels show; on the SVG map its markers and the site names beside them (the grid's
#: degree labels are background).
#: Returns overlapping pairs, controls under 44x44 px, and what spills out of the window.
LAYOUT_PROBLEMS = """() => {
    const CONTROLS = 'button, input, select, textarea, a[href], [role=button], canvas';
    const shown = (el) => el.checkVisibility({checkOpacity: true, checkVisibilityCSS: true});
    const clip = (rect, el) => {
        let r = {left: rect.left, top: rect.top, right: rect.right, bottom: rect.bottom};
        for (let a = el.parentElement; a; a = a.parentElement) {
            const style = getComputedStyle(a);
            if (style.overflowX === 'visible' && style.overflowY === 'visible') continue;
            const b = a.getBoundingClientRect();
            r = {left: Math.max(r.left, b.left), top: Math.max(r.top, b.top),
                 right: Math.min(r.right, b.right), bottom: Math.min(r.bottom, b.bottom)};
        }
        r = {left: Math.max(r.left, 0), top: Math.max(r.top, 0),
             right: Math.min(r.right, innerWidth), bottom: Math.min(r.bottom, innerHeight)};
        return r.right - r.left > 0.5 && r.bottom - r.top > 0.5 ? r : null;
    };
    const name = (el) => el.tagName.toLowerCase() + (el.id ? '#' + el.id : '')
        + (el.className && typeof el.className === 'string' ? '.' + el.className.trim().split(/\\s+/).join('.') : '');
    const items = [];
    const small = [];
    for (const el of document.querySelectorAll(CONTROLS)) {
        if (el.closest('svg') || !shown(el)) continue;
        const rect = el.getBoundingClientRect();
        const r = clip(rect, el);
        if (!r) continue;
        items.push({r, el, text: null, what: name(el) + ' ' + (el.textContent || el.placeholder || '').trim().slice(0, 30)});
        if (el.tagName !== 'CANVAS' && (rect.width < 44 || rect.height < 44)) {
            small.push(`${name(el)} "${(el.textContent || '').trim()}" ${rect.width.toFixed(0)}x${rect.height.toFixed(0)}`);
        }
    }
    for (const marker of document.querySelectorAll('#map .site circle.dotc')) {
        const r = clip(marker.getBoundingClientRect(), marker);
        if (r) items.push({r, el: marker, text: null, what: `map marker ${marker.parentElement.dataset.button}`});
    }
    const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
    for (let node = walker.nextNode(); node; node = walker.nextNode()) {
        const owner = node.parentElement;
        if (!node.textContent.trim() || owner.closest('title, script, style') || !shown(owner)) continue;
        if (owner.closest('svg') && !owner.matches('.alert-label, .group-label')) continue;
        const range = document.createRange();
        range.selectNodeContents(node);
        for (const rect of range.getClientRects()) {
            const r = clip(rect, owner);
            if (r) items.push({r, el: owner, text: node, what: `text "${node.textContent.trim().slice(0, 40)}" in ${name(owner)}`});
        }
    }
    const overlaps = [];
    for (let i = 0; i < items.length; i += 1) {
        for (let j = i + 1; j < items.length; j += 1) {
            const a = items[i], b = items[j];
            if (a.text && a.text === b.text) continue;  // two lines of one text
            // A control holds its own label (and a form its fields): only strangers may not meet.
            if (!a.text && (a.el.contains(b.el) || b.el.contains(a.el))) continue;
            if (!b.text && (b.el.contains(a.el) || a.el.contains(b.el))) continue;
            const w = Math.min(a.r.right, b.r.right) - Math.max(a.r.left, b.r.left);
            const h = Math.min(a.r.bottom, b.r.bottom) - Math.max(a.r.top, b.r.top);
            if (w > 1 && h > 1) overlaps.push(`${a.what} / ${b.what} (${w.toFixed(0)}x${h.toFixed(0)} px)`);
        }
    }
    const spills = [...document.querySelectorAll('.panel, .topbar, #sound-banner')]
        .filter((el) => shown(el))
        .map((el) => [name(el), el.getBoundingClientRect()])
        .filter(([, r]) => r.left < -0.5 || r.top < -0.5 || r.right > innerWidth + 0.5 || r.bottom > innerHeight + 0.5)
        .map(([n, r]) => `${n} ${r.left.toFixed(0)},${r.top.toFixed(0)}-${r.right.toFixed(0)},${r.bottom.toFixed(0)}`);
    if (document.documentElement.scrollWidth > innerWidth) spills.push(`page ${document.documentElement.scrollWidth} px wide`);
    return {overlaps, small, spills, checked: items.length};
}"""


def assert_layout_clean(page, what: str) -> int:
    problems = page.evaluate(LAYOUT_PROBLEMS)
    assert problems["overlaps"] == [], f"{what}: overlapping elements: {problems['overlaps']}"
    assert problems["small"] == [], f"{what}: controls smaller than a 44x44 px touch target: {problems['small']}"
    assert problems["spills"] == [], f"{what}: outside the window: {problems['spills']}"
    return problems["checked"]


def board_order(page) -> list[str]:
    return page.evaluate("() => [...document.querySelectorAll('#alerts li.alert')].map((li) => li.dataset.alertId)")


def card(page, alert_id: str):
    return page.locator(f'li.alert[data-alert-id="{alert_id}"]')


def wait_level(page, alert_id: str, level: int, timeout: float = 5.0) -> None:
    page.wait_for_selector(f'li.alert[data-alert-id="{alert_id}"][data-level="{level}"]', timeout=timeout * 1000)


def wait_state(page, alert_id: str, state: str) -> None:
    page.wait_for_selector(f'li.alert[data-alert-id="{alert_id}"][data-state="{state}"]', timeout=5000)


def heard_plays(page, since: int = 0) -> list[dict[str, Any]]:
    return page.evaluate("(since) => window.pinkrelay.audio.plays.slice(since).filter((p) => p.heard)", since)


def plays_count(page) -> int:
    return page.evaluate("() => window.pinkrelay.audio.plays.length")


def new_room(tmp_path: Path, **config: Any) -> RoomThread:
    OperatorStore.in_data_dir(tmp_path).add(OPERATOR, "operator", secret=OPERATOR_SECRET)
    return RoomThread(tmp_path, **config).start()


def desk_console(room: RoomThread) -> Any:
    """A colleague's protocol console (pinkrelay console) on the same relay."""

    async def connect() -> Any:
        console = console_client(room.relay)
        await room._nursery.start(console.run)
        return console

    return room.call(connect)


def journal_state(room: RoomThread, alert_id: str) -> Any:
    return room.call(room.relay.journal.get, alert_id)


class Page:
    """A signed-in board in its own browser context; closed (and checked for JS errors) on exit."""

    def __init__(self, browser, room: RoomThread, viewport: tuple[int, int] = WALL) -> None:
        self.context = browser.new_context(viewport={"width": viewport[0], "height": viewport[1]})
        self.page = self.context.new_page()
        self.page.set_default_timeout(5_000)
        self.errors: list[str] = []
        self.page.on("pageerror", lambda error: self.errors.append(str(error)))
        self.room = room

    def __enter__(self):
        return self.page

    def __exit__(self, *exc: Any) -> None:
        self.context.close()
        if exc[0] is None:
            assert not self.errors, f"JavaScript errors on the page: {self.errors}"


@pytest.fixture(scope="module")
def playwright():
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: run scripts/install-system-deps.sh as root (installs chromium)")
    with sync_api.sync_playwright() as playwright:  # one per thread at a time: every browser here shares it
        yield playwright


@pytest.fixture(scope="module")
def browser(playwright):
    browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
    yield browser
    browser.close()


@pytest.fixture(scope="module")
def clip():
    return encode_clip(2, width=640, height=360, fps=25, bitrate=700_000, label="LIVE")


@pytest.fixture(scope="module")
def artefacts():
    ARTEFACTS.mkdir(parents=True, exist_ok=True)
    return ARTEFACTS


@pytest.fixture(scope="module")
def urgent_board(browser, tmp_path_factory, clip):
    """Three alerts at different levels and ages, made through real presses and board buttons.

    Escalation after 1 s (level 1) and 2 s (level 2). ``old`` is acknowledged
    at once (level 0) at a colleague's protocol console, ``mid`` stays unanswered
    to level 2, ``young`` is pressed once ``mid`` is at level 2 and is left to
    reach level 1.
    """
    room = new_room(tmp_path_factory.mktemp("urgent-board"), escalation_levels=(1.0, 2.0))
    holder = Page(browser, room)
    page = holder.page
    try:
        sign_in(page, room.room.url)
        for button in ("kp-test-001", "kp-test-002"):
            room.button(button)
        room.button("kp-test-003", clip)
        console = desk_console(room)
        old = room.press("kp-test-001")
        card(page, old).wait_for()
        room.call_sync(lambda: console.update_alert(old, "acknowledged"))
        wait_state(page, old, "acknowledged")
        assert journal_state(room, old).level == 0, "acknowledged before its first escalation (1 s)"
        mid = room.press("kp-test-002")
        wait_level(page, mid, 2)
        young = room.press("kp-test-003")
        wait_level(page, young, 1)
        yield room, page, {"old": old, "mid": mid, "young": young}
    finally:
        holder.__exit__(None, None, None)
        room.stop()


def test_board_orders_by_urgency_and_says_why(urgent_board, artefacts):
    room, page, ids = urgent_board
    old, mid, young = ids["old"], ids["mid"], ids["young"]
    # Newest first would be young, mid, old; oldest first old, mid, young.
    assert board_order(page) == [mid, young, old], "unanswered first, then the higher level"
    badge = {key: card(page, alert_id).locator(".tag.urgency").text_content() or "" for key, alert_id in ids.items()}
    assert badge["mid"].startswith("LEVEL 2 · 0:0") and badge["mid"].endswith(" unanswered"), badge
    assert badge["young"].startswith("LEVEL 1 · 0:0") and badge["young"].endswith(" unanswered"), badge
    assert badge["old"].startswith("taken · 0:0") and badge["old"].endswith(" open"), badge
    assert "flash" in (card(page, young).get_attribute("class") or ""), "an unanswered alert flashes as it escalates"

    # The one thing that moves without pause is the newest unanswered alert.
    def animations() -> list[tuple[str, str]]:
        return [tuple(a) for a in page.evaluate(
            """() => document.getAnimations().filter((a) => a.playState === 'running').map((a) =>
                [a.animationName, (a.effect.target.closest('li.alert') || {dataset: {}}).dataset.alertId || a.effect.target.id])""")]

    running = set(animations())
    assert ("newest", young) in running
    assert running <= {("newest", young), ("flash", young), ("flash", mid)}, running
    page.screenshot(path=str(artefacts / "board-urgency.png"))

    # Taken on the board: young goes below the unanswered mid, but above old,
    # which waited longer at a lower level.
    card(page, young).locator('button[data-action="acknowledged"]').click()
    wait_state(page, young, "acknowledged")
    assert board_order(page) == [mid, young, old], "among taken alerts the higher level comes first"
    assert (card(page, young).locator(".tag.urgency").text_content() or "").startswith("LEVEL 1 · taken · ")
    assert "newest" in (card(page, mid).get_attribute("class") or ""), "the pulse passes to the one left unanswered"
    assert "newest" not in (card(page, young).get_attribute("class") or "")
    before = card(page, old).locator(".tag.urgency").text_content()
    page.wait_for_timeout(1100)
    assert card(page, old).locator(".tag.urgency").text_content() != before, "the age ticks every second"


@pytest.mark.parametrize("size", [WALL, LAPTOP], ids=["1920x1080", "1366x768"])
def test_board_layout_has_no_overlaps(urgent_board, artefacts, size):
    room, page, ids = urgent_board
    page.set_viewport_size({"width": size[0], "height": size[1]})
    dispatch = card(page, ids["young"]).locator('button[data-action="dispatched"]')
    if card(page, ids["young"]).locator("form").is_hidden():
        dispatch.click()  # an open form on the board is part of the picture
    wait_until(page, "() => document.querySelector('.stream[data-button=\"kp-test-003\"]')?.dataset.drawn > 10")
    page.wait_for_timeout(300)  # the map redraws for the new size
    page.screenshot(path=str(artefacts / f"board-{size[0]}x{size[1]}.png"))
    checked = assert_layout_clean(page, f"{size[0]}x{size[1]}")
    assert checked > 40, f"only {checked} elements checked: is the board there?"


def test_the_alarm_repeats_until_acknowledged_and_an_escalation_insists_more(browser, tmp_path):
    """Counted through window.pinkrelay.audio, and heard: the alarm's analyser sees the tones."""
    room = new_room(tmp_path, escalation_levels=(1.0, 30.0))
    try:
        with Page(browser, room) as page:
            sign_in(page, room.room.url)
            room.button("kp-test-001")
            room.button("kp-test-002")
            start = plays_count(page)
            first = room.press("kp-test-001")
            card(page, first).wait_for()
            peak = wait_until(page, "() => { const p = window.pinkrelay.audio.peak(); return p > 0.05 && p; }",
                              timeout=2)
            assert peak < 0.5, f"alarm peak {peak}: clipped or wrong gain"
            wait_until(page, "(n) => window.pinkrelay.audio.plays.filter((p) => p.heard).length >= n",
                       start + 3, timeout=6)
            plays = heard_plays(page, start)
            assert [p["label"] for p in plays[:3]] == ["new", "escalated", "repeat"], plays
            new, escalated, repeat = plays[:3]
            assert new["level"] == 0 and escalated["level"] == repeat["level"] == 1
            assert escalated["repeats"] > new["repeats"], "an escalated alert plays more tones"
            assert escalated["gain"] > new["gain"] and escalated["step"] < new["step"], "louder and faster"
            assert 0.8 < (escalated["at"] - new["at"]) / 1000 < 2.0, "the escalation rings at once"
            gap = (repeat["at"] - escalated["at"]) / 1000
            assert 1.8 < gap < 3.0, f"level 1 repeats every 2 s, not {gap:.2f} s"

            # Muted: silent although unanswered, for a limited time, and a new alert does not break it...
            page.click("#mute")
            assert page.text_content("#mute").startswith("Alarm muted 2:00"), page.text_content("#mute")
            left = page.evaluate("() => window.pinkrelay.audio.alarm.muteLeft()")
            assert 115 <= left <= 120, f"the mute ends by itself after 2 minutes, not {left} s"
            muted_at = plays_count(page)
            second = room.press("kp-test-002")
            card(page, second).wait_for()
            page.wait_for_timeout(600)
            assert plays_count(page) == muted_at, "nothing plays while muted"
            # ...but its escalation does: nobody has taken it.
            wait_level(page, second, 1)
            wait_until(page, "(n) => window.pinkrelay.audio.plays.length > n", muted_at, timeout=2)
            assert heard_plays(page, muted_at)[0]["label"] == "escalated"
            assert page.text_content("#mute").startswith("Mute alarm"), "the escalation ended the mute"
            history = card(page, second).locator(".alert-history").text_content() or ""
            assert "escalated to level 1: not acknowledged within 1 s" in history and "note by" not in history
            # A mute ends by itself when its time is up (asked here for 1 s, not the 2 min of the button).
            page.evaluate("() => window.pinkrelay.audio.alarm.mute(1)")
            assert page.text_content("#mute").startswith("Alarm muted 0:01")
            resumed_from = plays_count(page)
            wait_until(page, "(n) => window.pinkrelay.audio.plays.slice(n).some((p) => p.label === 'mute ended')",
                       resumed_from, timeout=3)
            assert page.text_content("#mute").startswith("Mute alarm")

            for alert_id in (first, second):
                card(page, alert_id).locator('button[data-action="acknowledged"]').click()
                wait_state(page, alert_id, "acknowledged")
            silent_from = plays_count(page)
            page.wait_for_timeout(2300)  # longer than a level-1 repeat
            assert plays_count(page) == silent_from, "the alarm stops once every alert is acknowledged"
    finally:
        room.stop()


def test_a_silent_page_says_so_until_sound_is_on(playwright, tmp_path):
    """A browser with its default autoplay rule: the board stays silent until the operator clicks."""
    room = new_room(tmp_path)
    try:
        quiet = playwright.chromium.launch(executable_path=CHROMIUM, args=QUIET_ARGS, headless=True)
        try:
            with Page(quiet, room, LAPTOP) as page:
                sign_in(page, room.room.url)
                # Chromium lets the sign-in click count for the board it leads to...
                wait_until(page, "() => document.querySelector('#sound').textContent === 'Sound on'", timeout=2)
                assert page.locator("#sound-banner").is_hidden()
                # ...but a wall screen that reloads (after a power cut, say) has had no click at all.
                page.reload()
                page.wait_for_selector("#link.up")
                banner = page.locator("#sound-banner")
                assert banner.is_visible(), "an unmissable banner while the page is silent"
                assert "click here to enable alarm sound" in (banner.text_content() or "")
                assert page.text_content("#sound") == "Sound off"
                box = banner.bounding_box()
                assert box and box["width"] >= LAPTOP[0] - 1 and box["height"] >= 50, box
                room.button("kp-test-001")
                alert_id = room.press("kp-test-001")
                card(page, alert_id).wait_for()
                plays = page.evaluate("() => window.pinkrelay.audio.plays")
                assert plays and not any(p["heard"] for p in plays), "the alarm tried, and the page is silent"
                page.screenshot(path=str(ARTEFACTS / "board-sound-off-1366x768.png"))
                assert_layout_clean(page, "1366x768 with the sound-off banner")
                before = len(plays)
                banner.click()
                page.wait_for_selector("#sound-banner", state="hidden")
                assert page.text_content("#sound") == "Sound on"
                heard = wait_until(page, "(n) => window.pinkrelay.audio.plays.slice(n).filter((p) => p.heard)",
                                   before, timeout=2)
                assert heard[0]["label"] == "sound on", "the unanswered alert is heard the moment sound is on"
        finally:
            quiet.close()
    finally:
        room.stop()


def test_alerts_open_at_sign_in_open_their_video_most_urgent_first(browser, tmp_path, clip):
    """Seven open alerts, one of them taken at a colleague's console: the six most urgent open tiles.

    On a laptop the board cannot show six unanswered cards at once: a bar under
    it counts those out of view and brings them into view.
    """
    room = new_room(tmp_path, registry_size=8)
    try:
        buttons = [f"kp-test-{n:03d}" for n in range(1, 8)]
        room.button(buttons[0], clip)
        for button in buttons[1:]:
            room.button(button)
        alerts = {}
        for button in buttons:
            alerts[button] = room.press(button)
            deadline = time.monotonic() + 5
            while journal_state(room, alerts[button]) is None:  # stored, so the presses keep their order
                assert time.monotonic() < deadline, f"press of {button} not stored"
                time.sleep(0.02)
        console = desk_console(room)
        room.call_sync(lambda: console.update_alert(alerts["kp-test-002"], "acknowledged"))
        deadline = time.monotonic() + 5
        while journal_state(room, alerts["kp-test-002"]).state != "acknowledged":
            assert time.monotonic() < deadline, "the colleague's acknowledgement was not stored"
            time.sleep(0.02)
        with Page(browser, room, LAPTOP) as page:
            sign_in(page, room.room.url)
            limit = page.evaluate("() => window.pinkrelay.tileLimit")
            assert limit == 6
            wait_until(page, "(n) => document.querySelectorAll('.stream.alerting').length >= n", limit)
            page.wait_for_timeout(300)  # no seventh tile comes later
            tiles = set(page.evaluate("() => [...document.querySelectorAll('.stream')].map((s) => s.dataset.button)"))
            # Newest first would have left out the oldest (kp-test-001, the one with a camera).
            assert tiles == set(buttons) - {"kp-test-002"}, f"tiles opened at sign-in: {sorted(tiles)}"
            assert page.locator(".stream.alerting").count() == limit
            wait_until(page, "() => Number(document.querySelector('.stream[data-button=\"kp-test-001\"]').dataset.drawn) > 5")
            page.screenshot(path=str(ARTEFACTS / "board-seven-alerts-1366x768.png"))
            assert_layout_clean(page, "1366x768 with seven alerts and six tiles")

            more = page.locator("#more-unanswered")
            more.wait_for()
            out_of_view = """() => { const view = document.querySelector('#alerts').getBoundingClientRect();
                return [...document.querySelectorAll('#alerts li.alert.state-raised')].filter((li) => {
                    const box = li.getBoundingClientRect();
                    return box.bottom > view.bottom + 1 || box.top < view.top - 1; }).map((li) => li.dataset.alertId); }"""
            hidden = page.evaluate(out_of_view)
            assert hidden and (more.text_content() or "").startswith(f"{len(hidden)} unanswered out of view")
            more.click()
            wait_until(page, f"() => !({out_of_view})().includes({hidden[0]!r})", timeout=2)

            card(page, alerts["kp-test-002"]).locator('button[data-action="watch"]').click()
            page.wait_for_selector('.stream[data-button="kp-test-002"]')  # more by hand, beyond the limit
    finally:
        room.stop()


def test_keys_act_on_the_right_alert(browser, tmp_path):
    room = new_room(tmp_path)
    try:
        with Page(browser, room) as page:
            sign_in(page, room.room.url)
            ids = []
            for button in ("kp-test-001", "kp-test-002", "kp-test-003"):
                room.button(button)
                ids.append(room.press(button))
                card(page, ids[-1]).wait_for()
            x, y, z = ids
            assert board_order(page) == [x, y, z], "unanswered at one level: oldest first"
            assert "target" in (card(page, x).get_attribute("class") or ""), "without a selection keys act on the top"
            page.keyboard.press("Control+a")  # the browser's select-all, not a shortcut
            page.keyboard.press("Alt+a")
            page.wait_for_timeout(200)
            assert [journal_state(room, a).state for a in ids] == ["raised"] * 3
            page.keyboard.down("a")  # the most urgent unanswered alert: x
            page.keyboard.down("a")  # held down: the auto-repeat must not take the next alert too
            page.keyboard.up("a")
            wait_state(page, x, "acknowledged")
            assert board_order(page) == [y, z, x]
            page.wait_for_timeout(200)
            assert [journal_state(room, a).state for a in (y, z)] == ["raised", "raised"], "one key, one alert"
            assert card(page, x).locator(".error").is_hidden(), "the auto-repeat did not act again (a 409 would show)"
            assert "selected" in (card(page, x).get_attribute("class") or ""), "the alert just taken stays selected"
            page.keyboard.press("d")  # on x, although it moved to the bottom
            unit = card(page, x).locator('input[name="unit"]')
            unit.wait_for()
            assert page.evaluate("() => document.activeElement.name") == "unit"
            page.keyboard.type("PES-7 dar")  # 'd' and 'a' typed into a field are text, not shortcuts
            page.keyboard.press("Enter")
            wait_state(page, x, "dispatched")
            assert f"dispatched by {OPERATOR}, unit PES-7 dar" in (card(page, x).locator(".alert-history").text_content() or "")
            assert [journal_state(room, a).state for a in (y, z)] == ["raised", "raised"]
            card(page, z).locator(".alert-meta").click()  # select z by clicking its card
            page.keyboard.press("a")  # the selected alert, not the more urgent y
            wait_state(page, z, "acknowledged")
            assert journal_state(room, y).state == "raised"
            page.keyboard.press("r")  # asks for the outcome first
            outcome = card(page, z).locator('select[name="outcome"]')
            outcome.wait_for()
            assert page.evaluate("() => document.activeElement.name") == "outcome"
            outcome.select_option("test")
            card(page, z).locator('form button[type="submit"]').click()
            wait_state(page, z, "resolved")
            page.keyboard.press("ArrowUp")
            page.keyboard.press("ArrowUp")
            page.keyboard.press("ArrowUp")  # up to the top: y, unanswered
            assert "selected" in (card(page, y).get_attribute("class") or "")
            page.keyboard.press("r")
            error = card(page, y).locator(".error")
            error.wait_for()
            assert "acknowledge it first (A)" in (error.text_content() or "")
            assert journal_state(room, y).state == "raised", "R does nothing to an unanswered alert"
            page.keyboard.press("Escape")
            assert page.locator("li.alert.selected").count() == 0
    finally:
        room.stop()
