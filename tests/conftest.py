"""Settings every test's ``pinkrelay serve`` inherits.

Relays started as subprocesses serve metrics on a free port rather than the
default 9480, so two of them (a test and a restart, or two test runs on one
machine) never compete for it; a test that needs a known port says so.
"""

import logging
import os

import pytest

os.environ.setdefault("PINKRELAY_METRICS_LISTEN", "127.0.0.1:0")


@pytest.fixture(autouse=True)
def _pinkrelay_logger_restored():
    """A CLI entry point run in-process (``main([...])``) sets up the 'pinkrelay' logger as a command
    does: its own handler, no propagation. Later tests' ``caplog`` would then see nothing; undo it."""
    logger = logging.getLogger("pinkrelay")
    saved = (logger.handlers[:], logger.level, logger.propagate)
    yield
    logger.handlers[:], logger.propagate = saved[0], saved[2]
    logger.setLevel(saved[1])  # setLevel, not the attribute: it clears the loggers' isEnabledFor caches
