"""The board shows a failing sink in its top bar (real Chromium, real relay, a receiver that is down)."""

from __future__ import annotations

from pinkrelay.integrations.settings import WebhookConfig
from pinkrelay.operators import OperatorStore

from relay_helpers import button_ids
from test_web_browser import OPERATOR, OPERATOR_SECRET, RoomThread, browser, sign_in  # noqa: F401 (fixture)
from webhook_peer import WebhookPeer

SECRET = b"board-sink-secret-for-tests-0123"


def test_the_board_names_a_failing_sink_and_how_many_steps_wait(browser, tmp_path):  # noqa: F811
    OperatorStore.in_data_dir(tmp_path).add(OPERATOR, "operator", secret=OPERATOR_SECRET)
    with WebhookPeer(SECRET) as healthy, WebhookPeer(SECRET, script=[503] * 1000) as refusing:
        sinks = (WebhookConfig(name="cad", kind="webhook", url=healthy.url, secret=SECRET),
                 WebhookConfig(name="warning-system", kind="cap", url=refusing.url, secret=SECRET,
                               retry_min=0.2, retry_max=0.5))
        room = RoomThread(tmp_path, sinks=sinks).start()
        context = browser.new_context(viewport={"width": 1600, "height": 1000})
        try:
            page = context.new_page()
            sign_in(page, room.room.url)
            page.wait_for_selector("#sinks.up")
            assert page.text_content("#sinks") == "Delivery OK to cad, warning-system"
            room.button(button_ids(1)[0])
            room.press(button_ids(1)[0])
            page.wait_for_selector("#sinks.down", timeout=15_000)
            assert page.text_content("#sinks") == "Delivery failing: warning-system (1 waiting)"
            assert "answered HTTP 503" in page.get_attribute("#sinks", "title")
        finally:
            context.close()
            room.stop()
    assert len(healthy.stored) == 1
