"""Log lines: JSON for machines keeps its own keys whatever the fields are called."""

from __future__ import annotations

import io
import json
import logging

import pytest

from pinkrelay.logs import event, setup_logging


@pytest.fixture(autouse=True)
def restore_logging():
    """setup_logging() is global; put the 'pinkrelay' logger back for other tests."""
    logger = logging.getLogger("pinkrelay")
    saved = (logger.handlers[:], logger.propagate, logger.level)
    yield
    logger.handlers[:], logger.propagate, logger.level = saved


def test_json_lines_carry_fields_without_hiding_the_severity():
    stream = io.StringIO()
    setup_logging("json", "info", stream=stream)
    logger = logging.getLogger("pinkrelay.relay")
    event(logger, logging.WARNING, "alert a1 escalated to level 2", alert_id="a1", level=2, message="x")
    entry = json.loads(stream.getvalue().splitlines()[-1])
    assert entry["level"] == "warning"
    assert entry["message"] == "alert a1 escalated to level 2"
    assert entry["level_"] == 2 and entry["message_"] == "x" and entry["alert_id"] == "a1"


def test_text_lines_are_one_line_per_event():
    stream = io.StringIO()
    setup_logging("text", "info", stream=stream)
    event(logging.getLogger("pinkrelay.relay"), logging.INFO, "button kp-1 online", button="kp-1")
    lines = stream.getvalue().splitlines()
    assert len(lines) == 1 and lines[0].endswith("INFO    button kp-1 online")
