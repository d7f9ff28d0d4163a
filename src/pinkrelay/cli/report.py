"""``pinkrelay report --from T --to T [--room ROOM] [--format csv|json|html]``: response times and outcomes.

Per site, room, operator and shift: press → acknowledged, → dispatched and
→ resolved (p50, p90, histograms), escalations, outcomes, and the devices
with the most offline time (alerts/reports.py says exactly what counts).
The journal is read read-only, also while the relay runs; rooms come from
the relay's registry (``registry`` of ``--config``, else
``DATA_DIR/registry.csv``). ``T`` is ISO 8601 or UNIX seconds, as for
``pinkrelay alerts``; shifts are in local time.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

from ..alerts import reports
from ..alerts.routing import DEFAULT_ROOM, ROOM_NAME
from ..config import load_config
from ..errors import PinkRelayError, RegistryError
from ..registry import load_registry
from .alerts import _write_file, iso_utc, journal_path, parse_time, read_journal
from .common import add_location_options


class ReportError(PinkRelayError):
    """A problem the user can fix: printed on one line, exit status 2."""


def _shifts(text: str) -> tuple[int, ...]:
    try:
        hours = tuple(sorted({int(part) for part in text.split(",") if part.strip()}))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give the hours shifts start at, e.g. 6,14,22") from None
    if not hours or not all(0 <= hour <= 23 for hour in hours):
        raise argparse.ArgumentTypeError(f"{text!r}: shift start hours are 0-23, e.g. 6,14,22")
    return hours


def _room(text: str) -> str:
    if not ROOM_NAME.fullmatch(text):
        raise argparse.ArgumentTypeError(f"{text!r} is not a room name (lower-case letters, digits, '.', '_', '-')")
    return text


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "report", help="response times, escalations, outcomes and offline devices per site, room, operator, shift",
        description="Report on the alerts received from --from to --to (read-only; safe while the relay runs).")
    parser.add_argument("--from", dest="since", type=parse_time, required=True, metavar="T",
                        help="alerts received at or after T")
    parser.add_argument("--to", dest="until", type=parse_time, required=True, metavar="T",
                        help="and before T")
    parser.add_argument("--room", type=_room, help="only the alerts of buttons this control room answers")
    parser.add_argument("--format", choices=("csv", "json", "html"), default="csv", help="default csv")
    parser.add_argument("--shifts", type=_shifts, default=reports.DEFAULT_SHIFTS, metavar="H,H,...",
                        help="local hours the shifts start at (default 6,14,22)")
    parser.add_argument("--output", "-o", metavar="FILE", help="write here (default: standard output)")
    add_location_options(parser, ())
    parser.set_defaults(handler=run)


def rooms_from_registry(args: argparse.Namespace, data_dir: Any) -> tuple[Any, str]:
    """(button id -> its rooms, a warning when the registry cannot be read)."""
    try:
        settings = load_config(args.config, overrides={"data_dir": data_dir})
        registry = load_registry(settings.registry or settings.data_dir / "registry.csv")
    except RegistryError as error:
        return (lambda button: (DEFAULT_ROOM,)), str(error).splitlines()[0]

    def rooms_of(button: str) -> tuple[str, ...]:
        entry = registry.get(button)
        return entry.control_rooms if entry is not None else (DEFAULT_ROOM,)

    return rooms_of, ""


def run(args: argparse.Namespace) -> int:
    if args.until <= args.since:
        raise ReportError(f"--to ({iso_utc(args.until)}) must be after --from ({iso_utc(args.since)})")
    path = journal_path(args)
    rooms_of, warning = rooms_from_registry(args, path.parent)
    if warning:
        if args.room is not None:
            raise ReportError(f"--room needs the registry to know which buttons a room answers: {warning}")
        print(f"(every alert counted in room {DEFAULT_ROOM}: {warning})", file=sys.stderr)
    tz = datetime.now().astimezone().tzinfo
    assert tz is not None
    with read_journal(path) as conn:
        report = reports.compute(conn, since_us=args.since, until_us=args.until, rooms_of=rooms_of,
                                 room=args.room, tz=tz, shifts=args.shifts)
    report["from"], report["to"] = iso_utc(args.since), iso_utc(args.until)
    title = (f"pinkrelay report {report['from']} to {report['to']}"
             + (f", room {args.room}" if args.room else ""))
    if args.format == "json":
        text = json.dumps(report, ensure_ascii=False, indent=2) + "\n"
    elif args.format == "html":
        text = reports.as_html(report, title)
    else:
        text = reports.as_csv(report)
    if args.output in (None, "-"):
        sys.stdout.write(text)
        return 0
    _write_file(Path(args.output), text)
    print(f"wrote the report of {report['overall']['alerts']} alerts to {args.output}", file=sys.stderr)
    return 0
