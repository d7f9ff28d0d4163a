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


def test_repeat_limiter_passes_a_burst_per_kind_and_peer_then_says_what_it_held_back():
    import io

    from pinkrelay.logs import RepeatLimiter, TextFormatter

    now = [0.0]
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(TextFormatter())
    limiter = RepeatLimiter(handler, burst=3, interval=10.0, clock=lambda: now[0])
    handler.addFilter(limiter)
    logger = logging.getLogger("pinkrelay.test-repeat")
    logger.handlers[:] = [handler]
    logger.propagate = False
    logger.setLevel(logging.INFO)
    for port in range(50):  # one address, many ports: one kind
        event(logger, logging.WARNING, f"protocol error from 127.0.0.5:{port}: bad magic {port}",
              peer=f"127.0.0.5:{port}")
    event(logger, logging.WARNING, "protocol error from 127.0.0.6:1: bad magic 1", peer="127.0.0.6:1")
    for n in range(10):  # a press from another button is never held back by that flood
        event(logger, logging.WARNING, f"ALERT panic from button kp-{n}", button=f"kp-{n}")
    lines = out.getvalue().splitlines()
    assert sum("127.0.0.5" in line for line in lines) == 3
    assert sum("127.0.0.6" in line for line in lines) == 1
    assert sum("ALERT panic" in line for line in lines) == 10
    assert limiter.suppressed_total == 47
    now[0] = 10.5  # the interval is over: the next line of any kind brings the summary first
    event(logger, logging.INFO, "something else")
    lines = out.getvalue().splitlines()
    assert "suppressed 47 similar lines in 10 s, like: protocol error from 127.0.0.5:0" in lines[-2]
    assert lines[-1].endswith("something else")
