"""The incident page in a real headless Chromium: the recording plays and seeks; every look is audited.

A relay with its web room records a real button's press (pre_roll 3 s,
post_roll 1 s). An investigator opens the incident page: the timeline and
the integrity state show, the video plays (currentTime advances, frames are
decoded) and seeks. An operator of another room asks for the same
recording and gets 403, audited; an investigator may not act on an alert.
"""

from __future__ import annotations

import re
import sqlite3
import time
from contextlib import closing

import httpx
import pytest

from pinkrelay.alerts.lifecycle import LifecycleError
from pinkrelay.media import encode_clip
from pinkrelay.operators import OperatorStore

from test_web_browser import ARTEFACTS, CHROMIUM, CHROMIUM_ARGS, RoomThread, sync_api, wait_until

#: The page, its routes and the audit: nothing the core mode changes (test_evidence.py records in both).
pytestmark = pytest.mark.core_independent

INVESTIGATOR, INVESTIGATOR_SECRET = "irfan", "irfan-secret-for-tests-1"
OUTSIDER, OUTSIDER_SECRET = "bilal", "bilal-secret-for-tests-1"


def audit(data_dir, action):
    with sqlite3.connect(data_dir / "journal.sqlite3") as conn:
        return conn.execute("SELECT operator, subject, detail FROM audit WHERE action = ?", (action,)).fetchall()


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("incident")
    store = OperatorStore.in_data_dir(data_dir)
    store.add(INVESTIGATOR, "investigator", secret=INVESTIGATOR_SECRET)
    store.add(OUTSIDER, "operator", secret=OUTSIDER_SECRET, room="north")
    clip = encode_clip(2, width=320, height=240, fps=15, bitrate=300_000, label="INCIDENT", gop_seconds=1.0)
    room = RoomThread(data_dir, registry_size=2, pre_roll=3.0, post_roll=1.0, evidence_segment=1.0).start()
    try:
        button = room.button("kp-test-001", clip)
        time.sleep(4.0)
        alert_id = room.press("kp-test-001")
        time.sleep(3.0)
        act = room.relay.act_on_alert
        room.call(lambda: act(alert_id=alert_id, state="acknowledged", operator="desk-1", role="operator",
                              console="test"))
        room.call(lambda: act(alert_id=alert_id, state="resolved", operator="desk-1", role="operator",
                              console="test", outcome="genuine", category="robbery"))
        manifest = data_dir / "evidence" / alert_id / "manifest.json"
        deadline = time.monotonic() + 8
        while '"state": "complete"' not in (manifest.read_text() if manifest.exists() else ""):
            assert time.monotonic() < deadline, "the recording did not complete"
            time.sleep(0.1)
        assert button is not None
        yield room, alert_id
    finally:
        room.stop()


def test_an_investigator_plays_and_seeks_the_recording_in_chromium_and_each_look_is_audited(recorded):
    room, alert_id = recorded
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.goto(room.room.url + "/signin")
            page.fill("#name", INVESTIGATOR)
            page.fill("#secret", INVESTIGATOR_SECRET)
            page.click("button[type=submit]")
            page.wait_for_url(re.compile(r"/$"))
            page.goto(f"{room.room.url}/incident?alert={alert_id}")
            page.wait_for_selector("#incident-panel:not([hidden])")
            assert "Integrity verified" in page.text_content("#integrity")
            timeline = page.text_content("#timeline")
            assert "acknowledged by desk-1" in timeline and "resolved by desk-1" in timeline
            assert "before the press" in page.text_content("#press-note")
            assert page.get_attribute("#download", "href").endswith(f"/api/evidence/{alert_id}/download")
            page.evaluate("() => { const v = document.querySelector('#recording'); v.muted = true; v.play(); }")
            wait_until(page, "() => document.querySelector('#recording').currentTime > 1.0", timeout=10)
            frames = page.evaluate("() => document.querySelector('#recording').getVideoPlaybackQuality()"
                                   ".totalVideoFrames")
            assert frames > 10
            duration = page.evaluate("() => document.querySelector('#recording').duration")
            assert duration > 6
            # Seek near the end, then watch it play on from there.
            page.evaluate(f"() => {{ document.querySelector('#recording').currentTime = {duration - 2.5}; }}")
            wait_until(page, f"() => document.querySelector('#recording').currentTime > {duration - 2.0}",
                       timeout=10)
            assert page.evaluate("() => document.querySelector('#recording').error") is None
            assert not errors, errors
            ARTEFACTS.mkdir(parents=True, exist_ok=True)
            page.set_viewport_size({"width": 1280, "height": 900})
            page.screenshot(path=str(ARTEFACTS / "incident.png"), full_page=True)  # for people to look at
            # A recording the relay has to stop is loud on the board too.
            page.goto(room.room.url + "/")
            page.wait_for_selector("#link.up")
            desk = room.relay.evidence
            stopped = room.call_sync(lambda: desk.start("rec-stopped-test", "kp-test-001", reason="test"))
            room.call_sync(lambda: desk.writer.fail(stopped, "the evidence disk is full (test)"))
            page.wait_for_selector(".evidence-stopped")
            banner = page.text_content(".evidence-stopped")
            assert "RECORDING STOPPED" in banner and "rec-stopped-test" in banner and "disk is full" in banner
        finally:
            browser.close()
    data_dir = room.data_dir
    views = audit(data_dir, "evidence-view")
    assert views and all(who == INVESTIGATOR and subject == alert_id and "127.0.0.1" in detail
                         for who, subject, detail in views)
    plays = audit(data_dir, "evidence-play") + audit(data_dir, "evidence-seek")
    assert plays and all(who == INVESTIGATOR and subject == alert_id for who, subject, _ in plays)
    assert all("127.0.0.1" in detail for _, _, detail in plays)


def test_an_operator_of_another_room_gets_403_and_the_attempt_is_audited(recorded):
    room, alert_id = recorded
    url = room.room.url
    with httpx.Client(base_url=url, headers={"origin": url}, timeout=10) as http:
        page = http.get("/signin")
        token = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)
        signed = http.post("/signin", data={"name": OUTSIDER, "secret": OUTSIDER_SECRET, "csrf": token})
        assert signed.status_code in (200, 303)
        for path in ("", "/video", "/download"):
            answer = http.get(f"/api/evidence/{alert_id}{path}")
            assert answer.status_code == 403, (path, answer.status_code, answer.text)
        assert "room north" in http.get(f"/api/evidence/{alert_id}").json()["error"]
        assert http.get("/api/evidence").json()["recordings"] == []
        assert http.get("/api/evidence/no-such-alert").status_code == 404
    refused = audit(room.data_dir, "evidence-refused")
    assert len([row for row in refused if row[0] == OUTSIDER and row[1] == alert_id]) >= 4


def test_an_investigator_may_not_act_on_an_alert(recorded):
    room, alert_id = recorded
    act = room.relay.act_on_alert
    with pytest.raises(LifecycleError, match="investigator"):
        room.call(lambda: act(alert_id=alert_id, state="false_alarm", operator=INVESTIGATOR, role="investigator",
                              console="web", outcome="false", category="accidental"))


SUPERVISOR, SUPERVISOR_SECRET = "saima", "saima-secret-for-tests-1"


def signed_in(url: str, name: str, secret: str) -> httpx.Client:
    """A signed-in client (close it: ``with closing(...)``)."""
    http = httpx.Client(base_url=url, headers={"origin": url}, timeout=10)
    page = http.get("/signin")
    token = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)
    assert http.post("/signin", data={"name": name, "secret": secret, "csrf": token}).status_code in (200, 303)
    http.headers["x-csrf-token"] = http.get("/api/session").json()["csrf"]
    return http


def test_a_supervisor_records_a_live_stream_without_an_alert_and_stops_it(recorded):
    room, _ = recorded
    OperatorStore.in_data_dir(room.data_dir).add(SUPERVISOR, "supervisor", secret=SUPERVISOR_SECRET)
    url = room.room.url
    with closing(signed_in(url, OUTSIDER, OUTSIDER_SECRET)) as operator:
        refused = operator.post("/api/evidence/record", json={"button": "kp-test-001"})
        assert refused.status_code == 403 and "needs a supervisor" in refused.json()["error"]
    with closing(signed_in(url, SUPERVISOR, SUPERVISOR_SECRET)) as http:
        assert http.post("/api/evidence/record", content=b"not json").status_code == 400
        assert http.post("/api/evidence/record", json={"button": "kp-nope"}).status_code == 400
        assert http.post("/api/evidence/record", json={"button": "kp-test-002"}).status_code == 409  # not streaming
        started = http.post("/api/evidence/record", json={"button": "kp-test-001"})
        assert started.status_code == 200, started.text
        recording_id = started.json()["recording"]
        assert http.post("/api/evidence/record", json={"button": "kp-test-001"}).status_code == 409
        time.sleep(3.5)
        assert http.post(f"/api/evidence/{recording_id}/stop").status_code == 200
        manifest = room.data_dir / "evidence" / recording_id / "manifest.json"
        deadline = time.monotonic() + 8
        while '"state": "complete"' not in (manifest.read_text() if manifest.exists() else ""):
            assert time.monotonic() < deadline, "the supervisor's recording did not complete"
            time.sleep(0.1)
        detail = http.get(f"/api/evidence/{recording_id}").json()
        assert detail["integrity"]["ok"] and detail["recording"]["seconds"] > 3.0  # pre-roll included
        assert http.get(f"/api/evidence/{recording_id}/video", headers={"range": "bytes=0-99"}).status_code == 206
        assert http.get(f"/api/evidence/{recording_id}/video", headers={"range": "bytes=x-"}).status_code == 416
    with closing(signed_in(url, OUTSIDER, OUTSIDER_SECRET)) as operator:
        assert operator.get(f"/api/evidence/{recording_id}").status_code == 403
    assert [row[0] for row in audit(room.data_dir, "evidence-record")] == [SUPERVISOR]
    assert [row[0] for row in audit(room.data_dir, "evidence-record-stop")] == [SUPERVISOR]
    assert [row[0] for row in audit(room.data_dir, "evidence-record-refused")] == [OUTSIDER]
