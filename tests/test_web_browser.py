"""The web control room in a real headless Chromium (Debian's), driven by Playwright.

The relay, its web control room and the simulated buttons run on one trio
loop in a background thread, exactly as ``pinkrelay serve`` runs them; the
test drives the browser from the main thread and reaches into the loop with
``trio.from_thread``. Screenshots of the board and of a live stream, and
the median end-to-end latency the page measured (``live-latency-*.json``),
are saved in var/test-artefacts/web/ (git-ignored, kept after the run, the
path is printed at the end); with PINKRELAY_UPDATE_SCREENSHOT=1 the full page
is also copied to docs/control-room.png (the README's picture).

``scripts/install-system-deps.sh`` (run by ``make test``) installs chromium.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import trio

import pinkrelay
from pinkrelay._core import COMPILED
from pinkrelay.media import encode_clip
from pinkrelay.operators import OperatorStore
from pinkrelay.web import serve_web

from relay_helpers import button_client, relay_config, running_relay, stream_clip

CHROMIUM = os.environ.get("PINKRELAY_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--autoplay-policy=no-user-gesture-required",
]
OPERATOR, OPERATOR_SECRET = "asma", "asma-secret-for-tests-1"
ROOT = Path(__file__).resolve().parent.parent
DOCS_SCREENSHOT = ROOT / "docs" / "control-room.png"
#: Fixed, git-ignored (.gitignore has var/) and outside pytest's tmp dirs, so a run's pictures stay.
ARTEFACTS = ROOT / "var" / "test-artefacts" / "web"
EXAMPLE_REGISTRY = ROOT / "examples" / "peshawar-buttons.csv"

from playwright import sync_api  # noqa: E402 - pip install -e '.[test]' installs it; never skipped


class RoomThread:
    """A relay with its web control room and buttons, on a trio loop in a thread."""

    def __init__(self, data_dir: Path, registry_size: int = 6, registry: Any = None, **config: Any) -> None:
        self.data_dir = data_dir
        self.registry_size = registry_size
        self.registry = registry
        self.config = config
        self.ready = threading.Event()
        self.error: BaseException | None = None
        self.relay: Any = None
        self.room: Any = None
        self.buttons: dict[str, pinkrelay.ButtonClient] = {}
        self._token: Any = None
        self._nursery: trio.Nursery | None = None
        self._stop: trio.Event | None = None
        self._thread = threading.Thread(target=self._run, name="relay", daemon=True)

    def _run(self) -> None:
        try:
            trio.run(self._main)
        except BaseException as error:  # noqa: BLE001 - reported to the test through start()
            self.error = error
            self.ready.set()

    async def _main(self) -> None:
        self._token = trio.lowlevel.current_trio_token()
        self._stop = trio.Event()
        web = pinkrelay.Address("127.0.0.1", 0)
        if self.registry is not None:
            relay_cm = pinkrelay.open_relay(relay_config(self.data_dir, web_listen=web, **self.config),
                                            registry=self.registry)
        else:
            relay_cm = running_relay(self.data_dir, self.registry_size, web_listen=web, **self.config)
        async with relay_cm as relay, trio.open_nursery() as nursery:
            self.relay, self._nursery = relay, nursery
            self.room = await nursery.start(serve_web, relay)
            self.ready.set()
            await self._stop.wait()
            nursery.cancel_scope.cancel()

    def start(self) -> RoomThread:
        self._thread.start()
        if not self.ready.wait(20) or self.error is not None:
            raise RuntimeError(f"relay did not start: {self.error!r}")
        return self

    def stop(self) -> None:
        if self._token is not None and self._stop is not None:
            trio.from_thread.run_sync(self._stop.set, trio_token=self._token)
        self._thread.join(10)

    def call(self, fn: Any, *args: Any) -> Any:
        return trio.from_thread.run(fn, *args, trio_token=self._token)

    def call_sync(self, fn: Any, *args: Any) -> Any:
        return trio.from_thread.run_sync(fn, *args, trio_token=self._token)

    def button(self, button_id: str, clip: Any = None, seconds: float = 120.0) -> pinkrelay.ButtonClient:
        """Connect a button (streaming ``clip`` in real time, if given)."""

        async def connect() -> pinkrelay.ButtonClient:
            tracks = [clip.video.to_dict(), clip.audio.to_dict()] if clip is not None else ()
            button = button_client(self.relay, button_id, tracks)
            assert self._nursery is not None
            await self._nursery.start(button.run)
            if clip is not None:
                self._nursery.start_soon(lambda: stream_clip(button, clip, seconds=seconds))
            return button

        self.buttons[button_id] = self.call(connect)
        return self.buttons[button_id]

    def press(self, button_id: str) -> str:
        """Press and return the alert's id once the relay has stored it (acknowledged it to the button)."""

        async def press_until_stored() -> str:
            pending = self.buttons[button_id].start_press()
            with trio.fail_after(10):
                await pending.done.wait()
            return pending.alert.alert_id

        return self.call(press_until_stored)


def wait_until(page, predicate: str, arg: Any = None, timeout: float = 10.0) -> Any:
    """Poll ``predicate`` (a JS function) until it returns something truthy.

    Playwright's wait_for_function evaluates strings with eval(), which the
    page's Content-Security-Policy forbids; evaluate() goes through the
    DevTools protocol and is not affected.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = page.evaluate(predicate, arg)
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {predicate}")
        time.sleep(0.05)


def sign_in(page, url: str, name: str = OPERATOR, secret: str = OPERATOR_SECRET) -> None:
    """Sign in through the form, as an operator would, and wait for the board's live link."""
    page.goto(url + "/signin")
    page.fill("#name", name)
    page.fill("#secret", secret)
    page.click("button[type=submit]")
    page.wait_for_selector("#link.up")


def audit_rows(data_dir: Path, action: str) -> list[tuple[str, str, str, str]]:
    with sqlite3.connect(data_dir / "journal.sqlite3") as conn:
        return conn.execute(
            "SELECT operator, action, subject, detail FROM audit WHERE action = ? ORDER BY at", (action,)
        ).fetchall()


@pytest.fixture(scope="module")
def clip():
    return encode_clip(2, width=640, height=360, fps=25, bitrate=700_000, label="LIVE")


@pytest.fixture(scope="module")
def room(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("web-room")
    OperatorStore.in_data_dir(data_dir).add(OPERATOR, "operator", secret=OPERATOR_SECRET)
    room = RoomThread(data_dir).start()
    yield room
    room.stop()


@pytest.fixture(scope="module")
def artefacts(request):
    """var/test-artefacts/web/: the screenshots and latency figures of the last run, kept for people."""
    ARTEFACTS.mkdir(parents=True, exist_ok=True)
    yield ARTEFACTS
    saved = ", ".join(sorted(path.name for path in ARTEFACTS.iterdir())) or "nothing"
    line = f"web control room test artefacts in {ARTEFACTS}: {saved}"
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if reporter is None or capture is None:
        print(line)
        return
    with capture.global_and_fixture_disabled():  # what capsys.disabled() does, for a module fixture
        reporter.write("\n")
        reporter.write_line(line)


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: run scripts/install-system-deps.sh as root (installs chromium)")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def page(browser, room):
    context = browser.new_context(viewport={"width": 1600, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(10_000)
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(room.room.url + "/")
    assert page.url.endswith("/signin"), "without a session the board must send us to the sign-in page"
    page.fill("#name", OPERATOR)
    page.fill("#secret", OPERATOR_SECRET)
    page.click("button[type=submit]")
    page.wait_for_selector("#link.up")
    page.errors = errors  # type: ignore[attr-defined]
    yield page
    context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


def test_sign_in_shows_board_and_map(page, room):
    assert page.url == room.room.url + "/"
    assert page.text_content("#operator") == OPERATOR
    assert page.text_content("#role") == "operator"
    wait_until(page, "() => document.querySelectorAll('#map .site').length === 6")
    assert page.locator("#map .site.offline").count() == 6
    assert [row[0] for row in audit_rows(room.data_dir, "sign-in")] == [OPERATOR]


def test_a_press_appears_within_a_second_with_sound_and_highlight(page, room, artefacts):
    room.button("kp-test-001")
    page.wait_for_selector('#map .site.online[data-button="kp-test-001"]', timeout=3000)
    beeps_before = int(page.evaluate("document.body.dataset.beeps || '0'"))
    started = time.monotonic()
    alert_id = room.press("kp-test-001")
    card = page.wait_for_selector(f'li.alert[data-alert-id="{alert_id}"]', timeout=1000)
    elapsed = time.monotonic() - started
    assert elapsed < 1.0, f"the alert took {elapsed:.3f} s to reach the board"
    assert "fresh" in (card.get_attribute("class") or ""), "a new alert is highlighted"
    assert card.get_attribute("data-state") == "raised"
    assert int(page.evaluate("document.body.dataset.beeps")) == beeps_before + 1, "a new alert beeps"
    assert page.locator('#map .site.alerting[data-button="kp-test-001"]').count() == 1
    assert "Qissa Khwani Bazaar #1" in (card.text_content() or "")
    print(f"\npress -> card on the board: {elapsed * 1000:.0f} ms")
    page.screenshot(path=str(artefacts / "board-new-alert.png"))


def test_acknowledge_then_resolve_from_the_board(page, room):
    room.button("kp-test-004")
    alert_id = room.press("kp-test-004")
    card = page.locator(f'li.alert[data-alert-id="{alert_id}"]')
    card.wait_for()
    card.locator('button[data-action="acknowledged"]').click()
    page.wait_for_selector(f'li.alert[data-alert-id="{alert_id}"][data-state="acknowledged"]')
    card.locator('button[data-action="resolved"]').click()
    # Resolving asks how it ended; the form does not go without an outcome.
    outcome = card.locator('select[name="outcome"]')
    outcome.wait_for()
    submit = card.locator('form button[type="submit"]')
    submit.click()
    page.wait_for_timeout(300)
    assert room.call(room.relay.journal.get, alert_id).state == "acknowledged", "no outcome, not sent"
    assert [o.get_attribute("value") for o in outcome.locator("option").all()] == [
        "", "genuine", "false:malicious", "false:accidental", "false:device_fault", "test"]
    outcome.select_option("genuine")
    category = card.locator('input[name="category"]')
    assert category.is_visible() and category.get_attribute("required") is not None
    category.fill("harassment")
    card.locator('form input[name="note"]').fill("suspect left before police came")
    submit.click()
    page.wait_for_selector(f'li.alert[data-alert-id="{alert_id}"][data-state="resolved"]')
    stored = room.call(room.relay.journal.get, alert_id)
    assert stored.state == "resolved"
    closed = [e for e in room.call(room.relay.journal.events_since, 0)
              if isinstance(e, pinkrelay.AlertUpdate) and e.alert_id == alert_id][-1]
    assert (closed.outcome, closed.category, closed.note) == ("genuine", "harassment", "suspect left before police came")
    assert f"resolved (genuine: harassment) by {OPERATOR}" in (card.locator(".alert-history").text_content() or "")
    # The operator may not close it as a false alarm: the server says so on the card.
    other = room.press("kp-test-004")
    other_card = page.locator(f'li.alert[data-alert-id="{other}"]')
    other_card.wait_for()
    other_card.locator('button[data-action="false_alarm"]').click()
    error = other_card.locator(".error")
    error.wait_for()
    assert "only a supervisor" in (error.text_content() or "")
    assert room.call(room.relay.journal.get, other).state == "raised"
    # The operator does what they may instead; the refusal no longer shows.
    other_card.locator('button[data-action="acknowledged"]').click()
    page.wait_for_selector(f'li.alert[data-alert-id="{other}"][data-state="acknowledged"]')
    assert error.is_hidden(), "a refusal is cleared by the next action that succeeds"


def canvas_fingerprint(page, button: str) -> dict[str, int]:
    return page.evaluate(
        """(button) => {
            const canvas = document.querySelector(`.stream[data-button="${button}"] canvas`);
            const data = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
            let hash = 0, lit = 0;
            for (let i = 0; i < data.length; i += 4) {
                hash = (hash * 31 + data[i] + 7 * data[i + 1] + 13 * data[i + 2]) >>> 0;
                if (data[i] + data[i + 1] + data[i + 2] > 120) lit += 1;
            }
            return {hash, lit, pixels: data.length / 4};
        }""",
        button,
    )


def test_live_stream_opens_by_click_and_decodes(page, room, clip, artefacts):
    room.button("kp-test-002", clip)
    page.wait_for_selector('#map .site.online[data-button="kp-test-002"]', timeout=3000)
    page.click('#map .site[data-button="kp-test-002"]')
    tile = page.wait_for_selector('.stream[data-button="kp-test-002"]')
    wait_until(page, "(b) => Number(document.querySelector(`.stream[data-button=\"${b}\"]`).dataset.drawn) > 30",
               "kp-test-002")
    first = canvas_fingerprint(page, "kp-test-002")
    decoded_before = int(tile.get_attribute("data-decoded") or 0)
    page.wait_for_timeout(600)
    second = canvas_fingerprint(page, "kp-test-002")
    decoded_after = int(tile.get_attribute("data-decoded") or 0)
    assert decoded_after > decoded_before, "the decoded-frame counter rises"
    assert first["lit"] > first["pixels"] // 4, "the canvas shows a picture, not black"
    assert first["hash"] != second["hash"], "the picture changes (the pattern's box moves)"
    assert int(tile.get_attribute("data-audio-frames") or 0) > 10, "Opus audio is decoded too"
    latency = float(tile.get_attribute("data-latency-median-ms") or "nan")
    assert 0 < latency < 1000, f"median capture-to-decoded latency {latency} ms"
    print(f"\nlive stream: {decoded_after} frames decoded, median capture->decoded latency {latency:.1f} ms")
    record_latency(artefacts, page, "kp-test-002", latency, decoded_after)
    assert "frames decoded" in page.text_content('.stream[data-button="kp-test-002"] .frames')
    assert "latency" in page.text_content('.stream[data-button="kp-test-002"] .latency')
    watches = audit_rows(room.data_dir, "watch")
    assert any(row[0] == OPERATOR and row[2] == "kp-test-002" and row[3].startswith("127.0.0.1:") for row in watches)
    tile.screenshot(path=str(artefacts / "live-video.png"))


def test_an_alert_opens_its_stream_at_once_and_full_screenshot(page, room, clip, artefacts):
    room.button("kp-test-003", clip)
    page.wait_for_selector('#map .site.online[data-button="kp-test-003"]', timeout=3000)
    alert_id = room.press("kp-test-003")
    page.wait_for_selector(f'li.alert[data-alert-id="{alert_id}"]', timeout=1000)
    page.wait_for_selector('.stream.alerting[data-button="kp-test-003"]', timeout=1000)
    wait_until(page, "(b) => Number(document.querySelector(`.stream[data-button=\"${b}\"]`).dataset.drawn) > 25",
               "kp-test-003")
    assert page.locator(".stream").count() >= 2, "several streams side by side"
    # The presses of buttons without a camera opened tiles too; the operator closes them.
    for button in ("kp-test-001", "kp-test-004"):
        page.click(f'.stream[data-button="{button}"] button.close')
    assert page.locator(".stream canvas:visible").count() == 2
    page.wait_for_timeout(1200)  # let the ages tick and the latency settle for the picture
    # The README's picture shows the room at work, not a refusal left on a card.
    shown_errors = page.locator("li.alert .error:visible").all_inner_texts()
    assert shown_errors == [], f"error text on the board: {shown_errors}"
    shot = artefacts / "control-room.png"
    page.screenshot(path=str(shot), full_page=True)
    if os.environ.get("PINKRELAY_UPDATE_SCREENSHOT") == "1":
        DOCS_SCREENSHOT.parent.mkdir(exist_ok=True)
        shutil.copyfile(shot, DOCS_SCREENSHOT)
    latency = float(page.get_attribute('.stream[data-button="kp-test-003"]', "data-latency-median-ms") or "nan")
    print(f"\nalert -> stream opened; median latency {latency:.1f} ms; screenshots in {artefacts}")


def record_latency(artefacts: Path, page, button: str, median_ms: float, decoded: int) -> Path:
    """Write what the page measured to live-latency-CORE.json (docs/operations.md quotes it)."""
    core = "compiled" if COMPILED else "purepython"
    path = artefacts / f"live-latency-{core}.json"
    figure = {
        "what": "median capture-to-decoded latency of the drawn frames (up to the last 90), as shown "
                "under the picture: button's capture timestamp to WebCodecs VideoDecoder output",
        "median_ms": median_ms,
        "frames_decoded": decoded,
        "button": button,
        "clip": "H.264 640x360 25 fps 700 kbit/s + Opus, replayed in real time by a ButtonClient",
        "path": "ButtonClient -> relay (loopback TCP) -> web live bridge -> WebSocket -> WebCodecs",
        "core": core,
        "browser": f"Chromium {page.context.browser.version} headless",
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "reproduce": ".venv/bin/python -m pytest -q -p no:cacheprovider tests/test_web_browser.py "
                     "-k live_stream_opens_by_click",
    }
    path.write_text(json.dumps(figure, indent=2) + "\n")
    return path


def test_an_unanswered_alert_shows_its_level_then_is_dispatched_on_scene_and_resolved(browser, tmp_path,
                                                                                        artefacts):
    """The whole path through the board's buttons, on a relay that escalates after half a second.

    The dispatch form's unit and note must reach the journal exactly as typed,
    and every step must be recorded under the operator who clicked it.
    """
    OperatorStore.in_data_dir(tmp_path).add(OPERATOR, "operator", secret=OPERATOR_SECRET)
    fast = RoomThread(tmp_path, escalation_levels=(0.5,)).start()
    context = browser.new_context(viewport={"width": 1600, "height": 1000})
    errors: list[str] = []
    try:
        page = context.new_page()
        page.set_default_timeout(5_000)
        page.on("pageerror", lambda error: errors.append(str(error)))
        sign_in(page, fast.room.url)
        fast.button("kp-test-005")
        alert_id = fast.press("kp-test-005")
        card = page.locator(f'li.alert[data-alert-id="{alert_id}"]')
        card.wait_for(timeout=1000)
        level = card.locator(".tag.urgency.escalated")
        level.wait_for(state="visible", timeout=3000)  # escalated 0.5 s after the press
        assert (level.text_content() or "").startswith("LEVEL 1 · ")
        assert fast.call(fast.relay.journal.get, alert_id).level == 1

        def state_is(state: str) -> None:
            page.wait_for_selector(f'li.alert[data-alert-id="{alert_id}"][data-state="{state}"]', timeout=3000)

        card.locator('button[data-action="acknowledged"]').click()
        state_is("acknowledged")
        dispatch = card.locator('button[data-action="dispatched"]')
        form = card.locator("form")
        dispatch.click()
        form.wait_for(state="visible")
        form.locator('button', has_text="Cancel").click()
        assert form.is_hidden(), "Cancel closes the dispatch form"
        dispatch.click()
        form.locator('input[name="unit"]').fill("PES-12 Rescue 1122")
        form.locator('input[name="note"]').fill("two officers, ETA 6 min")
        form.locator('button[type="submit"]').click()
        state_is("dispatched")
        assert form.is_hidden(), "the dispatch form closes once the relay has recorded it"
        history = card.locator(".alert-history").text_content() or ""
        assert f"dispatched by {OPERATOR}, unit PES-12 Rescue 1122: “two officers, ETA 6 min”" in history
        card.locator('button[data-action="on_scene"]').click()
        state_is("on_scene")
        card.locator('button[data-action="resolved"]').click()
        card.locator('select[name="outcome"]').select_option("false:device_fault")
        assert card.locator('input[name="category"]').is_hidden(), "a false alarm's category is in the choice"
        card.locator('form button[type="submit"]').click()
        state_is("resolved")
        assert card.locator(".error:visible").count() == 0
        page.screenshot(path=str(artefacts / "board-dispatched-and-resolved.png"))

        stored = fast.call(fast.relay.journal.get, alert_id)
        assert stored.state == "resolved"
        events = fast.call(fast.relay.journal.events_since, 0)
        steps = [e for e in events if isinstance(e, pinkrelay.AlertUpdate) and e.alert_id == alert_id]
        assert [(s.state, s.operator) for s in steps] == [
            ("raised", "relay"), ("acknowledged", OPERATOR), ("dispatched", OPERATOR),
            ("on_scene", OPERATOR), ("resolved", OPERATOR)]
        assert steps[0].level == 1 and steps[0].note.startswith("escalated to level 1")
        dispatched = steps[2]
        assert (dispatched.unit, dispatched.note) == ("PES-12 Rescue 1122", "two officers, ETA 6 min")
    finally:
        context.close()
        fast.stop()
    assert not errors, f"JavaScript errors on the page: {errors}"


def test_every_site_of_a_city_registry_can_be_clicked_on_the_map(browser, tmp_path):
    """68 example sites around Peshawar, many a few hundred metres apart: none hides another."""
    OperatorStore.in_data_dir(tmp_path).add(OPERATOR, "operator", secret=OPERATOR_SECRET)
    city = RoomThread(tmp_path, registry=pinkrelay.load_registry(EXAMPLE_REGISTRY)).start()
    context = browser.new_context(viewport={"width": 1600, "height": 1000})
    try:
        page = context.new_page()
        sign_in(page, city.room.url)
        wait_until(page, "() => document.querySelectorAll('#map .site').length === 68")
        hidden = page.evaluate(
            """() => [...document.querySelectorAll('#map .site')].filter((site) => {
                const box = site.querySelector('circle.dotc').getBoundingClientRect();
                const hit = document.elementFromPoint(box.x + box.width / 2, box.y + box.height / 2);
                return !hit || hit.closest('.site') !== site;
            }).map((site) => site.dataset.button)"""
        )
        assert hidden == [], f"markers covered by others: {hidden}"
        page.click('#map .site[data-button="kp-pesh-033"]')
        page.wait_for_selector('.stream[data-button="kp-pesh-033"]')
    finally:
        context.close()
        city.stop()
