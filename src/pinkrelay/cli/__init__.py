"""The ``pinkrelay`` command: one subcommand per module in this package.

    pinkrelay serve      run the relay daemon
    pinkrelay button     run one button (real or test source)
    pinkrelay camera-bridge  an IP camera (RTSP) as a button, pressed over HTTP or a serial line
    pinkrelay simulate   run many simulated buttons
    pinkrelay console    a terminal console for the control room
    pinkrelay demo       relay + simulated buttons + console, for a first look
    pinkrelay registry   check a button registry file
    pinkrelay operators  manage operator accounts (add, list, disable, enable)
    pinkrelay alerts     read the alert journal (list, show, export)
    pinkrelay alert      act on one alert (ack, dispatch, resolve, false-alarm)
    pinkrelay button-mode  put a button in test mode for maintenance, or back to live
    pinkrelay evidence   incident recordings (list, show, verify, export, hold, release)
    pinkrelay report     response times, escalations, outcomes, offline devices (csv, json, html)

Each subcommand module has ``add_parser(subparsers)`` and ``run(args) -> int``.
Errors that a user can fix (bad config, unreachable relay, refused
credentials) print one line naming the problem and exit non-zero.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from ..errors import PinkRelayError

COMMANDS = (
    "serve", "button", "camera-bridge", "simulate", "console", "demo", "registry", "operators", "alerts",
    "alert", "certs", "button-mode", "evidence", "report",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pinkrelay",
        description="Relay for panic-button emergency alert networks.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    for name in COMMANDS:
        module = importlib.import_module(f"{__name__}.{name.replace('-', '_')}")
        module.add_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        # argparse would print the top-level usage; the subcommand's (or its action's) helps.
        _chosen_parser(parser, args).error(f"unrecognized arguments: {' '.join(unknown)}")
    try:
        return int(args.handler(args) or 0)
    except KeyboardInterrupt:
        return 130
    except (PinkRelayError, OSError) as error:
        print(f"pinkrelay {args.command}: {error}", file=sys.stderr)
        return 2
    except BaseExceptionGroup as group:
        # trio reports a task's error inside a group; a single user-fixable one
        # still deserves one line, not a traceback.
        fixable, rest = group.split((PinkRelayError, OSError))
        if fixable is None or rest is not None:
            raise
        for error in _leaves(fixable):
            print(f"pinkrelay {args.command}: {error}", file=sys.stderr)
        return 2


def _chosen_parser(parser: argparse.ArgumentParser, args: argparse.Namespace) -> argparse.ArgumentParser:
    """The innermost subparser ``args`` went through (``pinkrelay alerts export`` -> export's)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            chosen = action.choices.get(getattr(args, action.dest, None) or "")
            if chosen is not None:
                return _chosen_parser(chosen, args)
    return parser


def _leaves(group: BaseExceptionGroup) -> list[BaseException]:
    out: list[BaseException] = []
    for error in group.exceptions:
        out.extend(_leaves(error) if isinstance(error, BaseExceptionGroup) else [error])
    return out


if __name__ == "__main__":
    sys.exit(main())
