"""``pinkrelay registry check FILE`` and ``pinkrelay registry reload``.

``check`` validates a button registry before the relay loads it: it prints
``OK: N buttons (...)`` with the count per site kind, or every problem with
its file, line and field, and exits 1 when there are problems.

``reload`` makes the running relay read its registry again: it sends SIGHUP
to the process in ``DATA_DIR/relay.pid`` and prints the outcome the relay
writes to ``DATA_DIR/registry-reload.json`` (exit 1 if the relay refused the
file and kept the old registry, 2 if no relay runs there).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import time
from collections import Counter
from pathlib import Path
from typing import Any

from ..config import load_config
from ..errors import RegistryError
from ..registry import SITE_KINDS, load_registry
from ..relay.registry_reload import STATUS_FILE
from .common import add_location_options, data_dir_of
from .serve import PID_FILE, read_pid

#: Seconds ``registry reload`` waits for the relay's answer by default.
RELOAD_TIMEOUT = 10.0


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser("registry", help="check a button registry file, or reload the running relay's")
    actions = parser.add_subparsers(dest="action", metavar="ACTION")
    actions.required = True
    check = actions.add_parser(
        "check",
        help="validate a registry (CSV or TOML) and report every problem",
        description="Validate a button registry. Exit status 0: valid; 1: problems (all listed).",
    )
    check.add_argument(
        "file", metavar="FILE", nargs="?",
        help="registry file (.csv, or .toml with [[button]] tables; default: the relay's, from its "
             "settings or DATA_DIR/registry.csv)",
    )
    check.set_defaults(handler=run)
    reload = actions.add_parser(
        "reload",
        help="make the running relay read its registry again (SIGHUP), keeping every stream",
        description="Ask the relay that runs on DATA_DIR to reload its registry file and print the outcome. "
                    "Exit status 0: applied; 1: refused (the relay kept the old registry); 2: no relay runs there.",
    )
    reload.add_argument("--timeout", type=float, default=RELOAD_TIMEOUT, metavar="SECONDS",
                        help=f"how long to wait for the relay's answer (default {RELOAD_TIMEOUT:g})")
    reload.set_defaults(handler=run_reload)
    add_location_options(parser, (check, reload))


def run_reload(args: argparse.Namespace) -> int:
    data_dir = data_dir_of(args)
    pid = read_pid(data_dir / PID_FILE)
    if pid is None or not _is_running(pid):
        print(f"FAILED: no relay runs on {data_dir} (no live process in {data_dir / PID_FILE}); "
              "start it with 'pinkrelay serve' or give --data-dir")
        return 2
    status = data_dir / STATUS_FILE
    sent_at = time.time_ns() // 1000
    os.kill(pid, signal.SIGHUP)
    deadline = time.monotonic() + args.timeout
    while time.monotonic() < deadline:
        outcome = _read_status(status)
        if outcome is not None and outcome.get("at", 0) >= sent_at:
            print(("OK: " if outcome.get("ok") else "FAILED: ") + str(outcome.get("message", "")))
            return 0 if outcome.get("ok") else 1
        time.sleep(0.05)
    print(f"FAILED: relay {pid} did not report a reload within {args.timeout:g} s; see its log")
    return 1


def _is_running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _read_status(path: Path) -> dict[str, Any] | None:
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def run(args: argparse.Namespace) -> int:
    if args.file is None:
        settings = load_config(args.config, overrides={"data_dir": args.data_dir})
        args.file = settings.registry or settings.data_dir / "registry.csv"
    try:
        registry = load_registry(args.file)
    except RegistryError as error:
        print(f"FAILED: {error}")
        return 1
    if not registry:
        print(f"FAILED: {args.file} lists no buttons")
        return 1
    kinds = Counter(button.site.kind for button in registry.values())
    order = sorted(kinds, key=lambda kind: (-kinds[kind], SITE_KINDS.index(kind)))
    summary = ", ".join(f"{kinds[kind]} {kind}" for kind in order)
    disabled = f"; {len(registry.disabled)} disabled" if registry.disabled else ""
    print(f"OK: {len(registry)} buttons ({summary}){disabled}")
    return 0
