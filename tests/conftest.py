"""Settings every test's ``pinkrelay serve`` inherits.

Relays started as subprocesses serve metrics on a free port rather than the
default 9480, so two of them (a test and a restart, or two test runs on one
machine) never compete for it; a test that needs a known port says so.
"""

import os

os.environ.setdefault("PINKRELAY_METRICS_LISTEN", "127.0.0.1:0")

