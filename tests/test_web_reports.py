"""The reports page in a real headless Chromium: the figures of a journal this test writes, drawn.

The journal is tests/test_reports.py's (every figure worked out by hand
there); the relay serves it with its registry, and a supervisor opens
/reports, asks for the day, and reads the tables and the histograms.
"""

from __future__ import annotations

import pytest
import trio

from pinkrelay.operators import OperatorStore
from pinkrelay.registry import load_registry

from relay_helpers import secret_for
from test_reports import ROOMS, SITES, write_journal
from test_web_board import browser, playwright  # noqa: F401 - the browser fixtures
from test_web_browser import ARTEFACTS, RoomThread

pytestmark = pytest.mark.core_independent

SUPERVISOR, SECRET = "sana", "sana-secret-for-tests-1"

PAINTED = """(selector) => {
    const canvas = document.querySelector(selector);
    const data = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
    let painted = 0;
    for (let i = 3; i < data.length; i += 4) if (data[i] > 0) painted += 1;
    return painted;
}"""


def test_the_reports_page_shows_the_hand_computed_figures(browser, tmp_path):  # noqa: F811
    trio.run(write_journal, tmp_path / "journal.sqlite3")
    rows = ["id,secret,site_name,latitude,longitude,control_rooms"]
    rows += [f"{b},{secret_for(b).decode()},{SITES[b]},1,2,{';'.join(r)}" for b, r in ROOMS.items()]
    (tmp_path / "registry.csv").write_text("\n".join(rows) + "\n")
    OperatorStore.in_data_dir(tmp_path).add(SUPERVISOR, "supervisor", secret=SECRET)
    room = RoomThread(tmp_path, registry=load_registry(tmp_path / "registry.csv")).start()
    context = browser.new_context(viewport={"width": 1366, "height": 768}, timezone_id="UTC")
    try:
        page = context.new_page()
        page.set_default_timeout(5_000)
        errors: list[str] = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.goto(room.room.url + "/reports")
        assert page.url.endswith("/signin"), "no session: the reports page sends to the sign-in form"
        page.fill("#name", SUPERVISOR)
        page.fill("#secret", SECRET)
        page.click("button[type=submit]")
        page.wait_for_selector("#link.up")
        page.click("#reports-link")
        page.wait_for_url("**/reports")
        page.fill("#from", "2026-11-02T00:00")
        page.fill("#to", "2026-11-03T00:00")
        page.click("button[type=submit]")
        page.wait_for_selector('body[data-loaded="yes"] table[data-grouping="site"] tr[data-group="Market"]')
        overall = page.locator('table[data-grouping="overall"] tr[data-group="all"]')
        # Worked out in tests/test_reports.py: acknowledged 5, 10, 30, 90 s -> p50 10 s, p90 90 s (1:30).
        assert overall.locator("td.n-alerts").inner_text() == "4"
        assert overall.locator("td.acknowledged .figures").inner_text() == "10.0 s / 1:30 (4)"
        assert overall.locator("td.resolved .figures").inner_text() == "5:00 / 10:00 (3)"
        assert overall.locator("td.escalations").inner_text() == "2 (3)"
        assert overall.locator("td.false").inner_text() == "2" and overall.locator("td.open").inner_text() == "1"
        market = page.locator('table[data-grouping="site"] tr[data-group="Market"]')
        assert market.locator("td.acknowledged .figures").inner_text() == "10.0 s / 30.0 s (2)"
        histogram = 'table[data-grouping="overall"] td.acknowledged canvas'
        assert page.locator(histogram).get_attribute("data-counts") == "1,1,0,1,1,0,0,0,0,0"
        assert page.evaluate(PAINTED, histogram) > 100, "the histogram is drawn"
        rooms = page.locator('table[data-grouping="room"] tr[data-group]')
        assert rooms.evaluate_all("rows => rows.map(r => [r.dataset.group, r.querySelector('td.n-alerts').textContent])") \
            == [["main", "3"], ["vwps", "2"]]
        offline = page.locator('table[data-grouping="offline"] tr[data-group]')
        assert offline.evaluate_all("rows => rows.map(r => [r.dataset.group, r.querySelector('td.offline').textContent])") \
            == [["c-1", "60:00"], ["a-1", "30:00"], ["b-1", "30:00"]]
        page.fill("#room", "vwps")
        page.click("button[type=submit]")
        page.wait_for_function("() => document.querySelector('#report-summary').textContent.includes('room vwps')")
        assert overall.locator("td.n-alerts").inner_text() == "2"
        page.fill("#room", "Not A Room")
        page.click("button[type=submit]")
        page.wait_for_selector("#report-error:not([hidden])")
        assert "is not a room name" in page.locator("#report-error").inner_text()
        refused = page.evaluate("""async () => {
            const get = async (query) => { const r = await fetch('/api/reports?' + query);
                                           return [r.status, (await r.json()).error]; };
            return [await get(''), await get('from=yesterday&to=1'), await get('from=2026-11-02T00:00&to=1'),
                    await get('from=2&to=1'), await get('from=0&to=40000000')];
        }""")
        assert [status for status, _ in refused] == [400] * 5
        assert refused[1][1] == "from='yesterday' is not a time: give ISO 8601 with a zone or UNIX seconds"
        assert refused[2][1] == "from='2026-11-02T00:00' has no time zone (e.g. 2026-11-02T00:00:00Z)"
        assert refused[3][1] == refused[4][1] == "to must be after from, and the period at most 366 days"
        ARTEFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(ARTEFACTS / "reports-1366x768.png"), full_page=True)
        assert not errors, errors
    finally:
        context.close()
        room.stop()
