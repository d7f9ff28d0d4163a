"""Settings every test's ``pinkrelay serve`` inherits.

Relays started as subprocesses serve metrics on a free port rather than the
default 9480, so two of them (a test and a restart, or two test runs on one
machine) never compete for it; a test that needs a known port says so.
"""

import os

os.environ.setdefault("PINKRELAY_METRICS_LISTEN", "127.0.0.1:0")


def pytest_collection_modifyitems(items):
    """The cluster's tests run last.

    Importing trio_asyncio (which the cluster's NATS client runs on) installs an
    asyncio policy for the whole process: afterwards an asyncio loop made
    outside trio is a SyncTrioEventLoop holding a trio run of its own, and the
    browser driver of the web tests and every later ``trio.run`` fail. A relay
    process runs one or the other, never both; the test process runs both.
    """
    items.sort(key=lambda item: "cluster" in item.nodeid.split("::")[0])
