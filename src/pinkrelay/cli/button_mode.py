"""``pinkrelay button-mode test|live|list``: put a button in test mode for maintenance, or back to live.

    pinkrelay button-mode test ID [--note TEXT] [--timeout S] [--data-dir DIR] [--config FILE]
    pinkrelay button-mode live ID [--timeout S] [--data-dir DIR] [--config FILE]
    pinkrelay button-mode list [--data-dir DIR] [--config FILE]

A press of a button in test mode is journalled as a test and pages nobody
(relay/test_presses.py). The command writes ``DATA_DIR/button-modes.json``
(button_modes.py); when a relay runs on that data directory it waits until
the relay has applied the change, so that OK means the next press is already
treated the new way. The relay audits the change with the name given here
(``cli:USER``).
"""

from __future__ import annotations

import argparse
import getpass
import time
from typing import Any

from ..button_modes import ButtonModes
from ..config import load_config
from ..errors import PinkRelayError, RegistryError
from ..registry import load_registry
from .common import add_location_options, data_dir_of, positive_float
from .registry import _is_running
from .serve import PID_FILE, read_pid

#: Seconds the command waits for a running relay to apply the change.
APPLY_TIMEOUT = 5.0


class ButtonModeError(PinkRelayError):
    """A problem the user can fix: printed on one line, exit status 2."""


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "button-mode", help="put a button in test mode for maintenance (presses page nobody), or back to live",
        description="Set a button's mode: in test mode its presses are journalled as tests and page nobody.")
    actions = parser.add_subparsers(dest="action", metavar="ACTION")
    actions.required = True
    test = actions.add_parser("test", help="presses of button ID page nobody, until it is set live",
                              description="Put button ID in test mode: its presses are journalled as tests, "
                              "shown to nobody and sent to no integration (CAP sinks get them with status Test).")
    test.add_argument("button", metavar="ID")
    test.add_argument("--note", default="", help="why (shown in the audit and with each test press)")
    live = actions.add_parser("live", help="presses of button ID page the control room again",
                              description="Put button ID back in live mode: its presses are alerts again.")
    live.add_argument("button", metavar="ID")
    for action in (test, live):
        action.add_argument("--timeout", type=positive_float, default=APPLY_TIMEOUT, metavar="SECONDS",
                            help=f"how long to wait for a running relay to apply it (default {APPLY_TIMEOUT:g})")
    listing = actions.add_parser("list", help="the buttons in test mode", description="List the buttons in "
                                 "test mode, who set it and when.")
    add_location_options(parser, (test, live, listing))
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    data_dir = data_dir_of(args)
    modes = ButtonModes.in_data_dir(data_dir)
    if args.action == "list":
        testing = modes.testing
        if not testing:
            print(f"no button in test mode ({modes.path})")
            return 0
        for button_id, change in sorted(testing.items()):
            when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(change.set_at / 1e6))
            print(f"{button_id}  test since {when} by {change.set_by}" + (f": {change.note}" if change.note else ""))
        return 0
    _check_button(args, data_dir, args.button)
    revision = modes.set(args.button, args.action, set_by=f"cli:{getpass.getuser()}", set_at=time.time_ns() // 1000,
                         note=getattr(args, "note", ""))
    effect = "its presses page nobody" if args.action == "test" else "its presses page the control room"
    pid = read_pid(data_dir / PID_FILE)
    if pid is None or not _is_running(pid):
        print(f"OK: button {args.button} is in {args.action} mode: {effect} (no relay runs on {data_dir}; "
              "it applies this when it starts)")
        return 0
    deadline = time.monotonic() + args.timeout
    while time.monotonic() < deadline:
        if modes.applied_revision() >= revision:
            print(f"OK: button {args.button} is in {args.action} mode: {effect} (relay {pid} applied it)")
            return 0
        time.sleep(0.05)
    print(f"FAILED: button {args.button} is set to {args.action} in {modes.path}, but relay {pid} did not apply it "
          f"within {args.timeout:g} s; see its log")
    return 1


def _check_button(args: argparse.Namespace, data_dir: Any, button_id: str) -> None:
    """Refuse an id the relay's registry does not have (a typo would leave the real button live)."""
    settings = load_config(args.config, overrides={"data_dir": data_dir})
    path = settings.registry or settings.data_dir / "registry.csv"
    try:
        registry = load_registry(path)
    except RegistryError as error:
        raise ButtonModeError(f"cannot check button {button_id} against the registry: "
                              f"{str(error).splitlines()[0]}") from None
    if button_id not in registry:
        disabled = " (its row is disabled)" if button_id in registry.disabled else ""
        raise ButtonModeError(f"no button {button_id!r} in the registry {path}{disabled}; "
                              "'pinkrelay registry check' lists the buttons")
