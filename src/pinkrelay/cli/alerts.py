"""``pinkrelay alerts list|show|export``: read the alert journal, also while the relay runs.

    pinkrelay alerts list   [--data-dir DIR] [--open] [--since T] [--limit N] [--json]
    pinkrelay alerts show   ID [--data-dir DIR] [--json]
    pinkrelay alerts export [--since T] --format csv|json [--output FILE] [--data-dir DIR]

``--data-dir`` and ``--config`` go before or after the action alike;
``export`` without ``--since`` exports every alert.

The journal (``DIR/journal.sqlite3``) is opened read-only through SQLite
(``mode=ro``), never through the relay: a running relay keeps writing while
this reads one consistent snapshot. ``T`` is ISO 8601 (``2025-10-09``,
``2025-10-09T14:30``, ``2025-10-09T09:30:00Z``; without a zone it is local
time) or UNIX seconds (``1760000000``). The data directory is ``--data-dir``,
else the one in ``--config FILE`` or ``$PINKRELAY_DATA_DIR``, else ``./var``.

Human output shows local times; ``--json`` and ``export`` give ISO 8601
times in UTC plus the raw microseconds the journal stores.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import sqlite3
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import quote

from ..alerts import plans
from ..alerts.false_alarms import count_for_site
from ..errors import PinkRelayError, RegistryError
from .common import add_location_options, data_dir_of
from .demo import DEMO_DATA_DIR

JOURNAL_NAME = "journal.sqlite3"  # as the relay names it in its data directory
OPEN_STATES = ("raised", "acknowledged", "dispatched", "on_scene")
DEFAULT_LIMIT = 100

ALERT_COLUMNS = (
    "alert_id", "button", "kind", "pressed_at", "received_at", "attempt", "state", "level",
    "duplicate_of", "site", "cursor", "updated_at",
)
EVENT_COLUMNS = ("cursor", "alert_id", "kind", "state", "level", "operator", "console", "unit", "note", "at",
                 "outcome", "category")
#: Event columns a journal from before outcomes (schema 1) lacks; read as "" (alerts/migrations.py).
LATER_EVENT_COLUMNS = ("outcome", "category")
EXPORT_FIELDS = (
    "alert_id", "kind", "state", "level", "button", "site_name", "site_kind", "site_address",
    "site_district", "latitude", "longitude", "pressed_at", "received_at", "attempt", "duplicate_of",
    "acknowledged_at", "acknowledged_by", "dispatched_at", "unit", "on_scene_at", "closed_at", "closed_by",
    "last_change_at", "event_count", "cursor", "outcome", "outcome_category",
)


class AlertsError(PinkRelayError):
    """A problem the user can fix: printed on one line, exit status 2."""


# -- arguments ---------------------------------------------------------------------------


def parse_time(text: str) -> int:
    """``T`` as microseconds since the UNIX epoch: ISO 8601 (naive = local time) or UNIX seconds."""
    value = text.strip()
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        if seconds != seconds or abs(seconds) > 1e12:
            raise argparse.ArgumentTypeError(f"{text!r} is not a time in UNIX seconds")
        return int(round(seconds * 1_000_000))
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a time: give ISO 8601 (2025-10-09, 2025-10-09T14:30, "
            "2025-10-09T09:30:00Z) or UNIX seconds (1760000000)"
        ) from None
    if moment.tzinfo is None:
        moment = moment.astimezone()  # local time, as a person would mean it
    return int(round(moment.timestamp() * 1_000_000))


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "alerts",
        help="list, show and export alerts from the journal",
        description="Read the relay's alert journal (read-only; safe while the relay runs).",
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION")
    actions.required = True

    listing = actions.add_parser("list", help="alerts, oldest first (the most recent --limit)",
                                 description="List alerts received since T (default: all), oldest first.")
    listing.add_argument("--open", action="store_true", help="only alerts still open (not resolved)")
    listing.add_argument("--since", type=parse_time, metavar="T", help="received at or after T")
    listing.add_argument("--limit", type=_count, default=DEFAULT_LIMIT, metavar="N",
                         help=f"show the most recent N (default {DEFAULT_LIMIT}; 0 for all)")
    listing.add_argument("--json", action="store_true", help="one JSON object per line")

    show = actions.add_parser("show", help="one alert: its site and full history",
                              description="Show one alert: site, state and every event (who, when, what).")
    show.add_argument("alert_id", metavar="ID", help="the alert id (a unique prefix is enough)")
    show.add_argument("--json", action="store_true", help="one JSON object")

    export = actions.add_parser("export", help="alerts (since T) as CSV or JSON, for reports",
                                description="Export the alerts received since T (default: all), one row/object each "
                                "with its lifecycle times; JSON includes every event.")
    export.add_argument("--since", type=parse_time, metavar="T", help="received at or after T (default: every alert)")
    export.add_argument("--format", choices=("csv", "json"), required=True)
    export.add_argument("--output", "-o", metavar="FILE", help="write here (default: standard output)")
    add_location_options(parser, (listing, show, export))
    parser.set_defaults(handler=run)


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text} must be 0 or more")
    return value


# -- reading the journal ------------------------------------------------------------------


def journal_path(args: argparse.Namespace) -> Path:
    """The journal of the data directory meant; the demo's (``var/demo``) when nothing says otherwise.

    With no ``--data-dir``, ``--config`` or ``$PINKRELAY_DATA_DIR`` and no
    journal in ``./var``, a newcomer who just ran ``make run`` means the demo's.
    """
    path = data_dir_of(args) / JOURNAL_NAME
    told = args.data_dir or args.config or os.environ.get("PINKRELAY_DATA_DIR")
    demo = DEMO_DATA_DIR / JOURNAL_NAME
    if not told and not path.exists() and demo.exists():
        print(f"(no journal in {path.parent}; reading the demo's, {demo})", file=sys.stderr)
        return demo
    return path


@contextmanager
def read_journal(path: Path) -> Iterator[sqlite3.Connection]:
    """A read-only connection holding one snapshot of the journal for the whole block."""
    if not path.exists():
        hint = "" if path.parent.is_dir() else f" ({path.parent} does not exist either)"
        raise AlertsError(
            f"no alert journal at {path}{hint}; pass the relay's --data-dir (the relay creates the "
            "journal when it first starts)"
        )
    if not path.is_file():
        raise AlertsError(f"{path} is not a file; is --data-dir the relay's data directory?")
    uri = f"file:{quote(str(path.resolve()))}?mode=ro"
    try:
        conn = sqlite3.connect(uri, uri=True, isolation_level=None)
    except sqlite3.Error as error:
        raise AlertsError(f"cannot open the journal {path}: {error}") from None
    try:
        conn.execute("PRAGMA busy_timeout = 5000")
        conn.execute("BEGIN")
        tables = {name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if not {"alerts", "events"} <= tables:
            raise AlertsError(f"{path} is an SQLite file but not a pinkrelay alert journal")
        yield conn
    except sqlite3.DatabaseError as error:
        raise AlertsError(_describe(path, error)) from None
    finally:
        conn.close()


def _describe(path: Path, error: sqlite3.Error) -> str:
    text = str(error)
    if "not a database" in text or "malformed" in text:
        return (f"the journal {path} is corrupt ({text}); keep a copy for investigation, and see "
                "docs/operations.md for recovery")
    if "unable to open" in text or "readonly" in text:
        return f"cannot read the journal {path} ({text}); run as the relay's user"
    return f"journal {path}: {text}"


def _alert(row: Sequence[Any]) -> dict[str, Any]:
    alert = dict(zip(ALERT_COLUMNS, row, strict=True))
    alert["site"] = json.loads(alert["site"]) if alert["site"] else None
    return alert


def event_select(conn: sqlite3.Connection) -> str:
    """The event columns to SELECT; a journal no newer relay has opened yet reads its missing ones as ''."""
    present = {row[1] for row in conn.execute("PRAGMA table_info(events)")}
    return ", ".join(f"'' AS {c}" if c in LATER_EVENT_COLUMNS and c not in present else c for c in EVENT_COLUMNS)


def _event(row: Sequence[Any]) -> dict[str, Any]:
    return dict(zip(EVENT_COLUMNS, row, strict=True))


def select_alerts(conn: sqlite3.Connection, *, since: int | None = None, open_only: bool = False,
                  limit: int = 0) -> list[dict[str, Any]]:
    where, params = [], []
    if since is not None:
        where.append("received_at >= ?")
        params.append(since)
    if open_only:
        where.append(f"state IN ({','.join('?' * len(OPEN_STATES))})")
        params.extend(OPEN_STATES)
    sql = f"SELECT {', '.join(ALERT_COLUMNS)} FROM alerts"
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += " ORDER BY received_at DESC, cursor DESC"
    if limit:
        sql += f" LIMIT {int(limit)}"
    return [_alert(row) for row in reversed(conn.execute(sql, params).fetchall())]


def count_alerts(conn: sqlite3.Connection, *, since: int | None, open_only: bool) -> int:
    where, params = ["1"], []
    if since is not None:
        where.append("received_at >= ?")
        params.append(since)
    if open_only:
        where.append(f"state IN ({','.join('?' * len(OPEN_STATES))})")
        params.extend(OPEN_STATES)
    return conn.execute(f"SELECT COUNT(*) FROM alerts WHERE {' AND '.join(where)}", params).fetchone()[0]


def find_alert(conn: sqlite3.Connection, alert_id: str, path: Path) -> dict[str, Any]:
    columns = ", ".join(ALERT_COLUMNS)
    row = conn.execute(f"SELECT {columns} FROM alerts WHERE alert_id = ?", (alert_id,)).fetchone()
    if row is not None:
        return _alert(row)
    pattern = alert_id.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
    rows = conn.execute(
        f"SELECT {columns} FROM alerts WHERE alert_id LIKE ? ESCAPE '\\' ORDER BY received_at LIMIT 6", (pattern,)
    ).fetchall()
    if len(rows) == 1 and alert_id:
        return _alert(rows[0])
    if rows and alert_id:
        shown = ", ".join(row[0] for row in rows[:5])
        raise AlertsError(f"{alert_id!r} matches several alerts ({shown}{', ...' if len(rows) > 5 else ''}); "
                          "give more of the id")
    raise AlertsError(f"no alert {alert_id!r} in the journal {path} ('pinkrelay alerts list' shows the ids)")


def history(conn: sqlite3.Connection, alert_id: str) -> list[dict[str, Any]]:
    rows = conn.execute(f"SELECT {event_select(conn)} FROM events WHERE alert_id = ? ORDER BY cursor",
                        (alert_id,)).fetchall()
    return [_event(row) for row in rows]


def linked(conn: sqlite3.Connection, alert_id: str) -> list[str]:
    return [r[0] for r in conn.execute(
        "SELECT alert_id FROM alerts WHERE duplicate_of = ? ORDER BY received_at", (alert_id,))]


# -- formatting ---------------------------------------------------------------------------


def iso_utc(us: int) -> str:
    return datetime.fromtimestamp(us / 1e6, tz=timezone.utc).isoformat(timespec="milliseconds").replace(
        "+00:00", "Z")


def local(us: int, *, date: bool = True) -> str:
    moment = datetime.fromtimestamp(us / 1e6).astimezone()
    return moment.strftime("%Y-%m-%d %H:%M:%S" if date else "%H:%M:%S") + f".{moment.microsecond // 1000:03d}"


def zone_label() -> str:
    offset = datetime.now().astimezone().strftime("%z")
    return f"local time, UTC{offset[:3]}:{offset[3:]}"


def who(event: dict[str, Any], alert: dict[str, Any]) -> str:
    if event["operator"]:
        return event["operator"] + (f" ({event['console']})" if event["console"] else "")
    if event["kind"] in ("raised", "duplicate"):
        return f"button {alert['button']}" if alert["kind"] != "offline" else "relay"
    return "relay"


def site_line(site: dict[str, Any] | None) -> str:
    if not site:
        return "(no site: button not in the registry)"
    return f"{site.get('name') or '?'} ({site.get('kind') or '?'})"


def alert_json(alert: dict[str, Any]) -> dict[str, Any]:
    out = dict(alert)
    for key in ("pressed_at", "received_at", "updated_at"):
        out[f"{key}_us"] = alert[key]
        out[key] = iso_utc(alert[key])
    out["open"] = alert["state"] in OPEN_STATES
    return out


def event_json(event: dict[str, Any], alert: dict[str, Any]) -> dict[str, Any]:
    out = dict(event)
    out["at_us"] = event["at"]
    out["at"] = iso_utc(event["at"])
    out["who"] = who(event, alert)
    return out


def summary(alert: dict[str, Any], events: list[dict[str, Any]]) -> dict[str, Any]:
    """One flat row per alert for ``export``: when it reached each stage of its lifecycle, and by whom."""
    site = alert["site"] or {}
    row: dict[str, Any] = {
        "alert_id": alert["alert_id"], "kind": alert["kind"], "state": alert["state"], "level": alert["level"],
        "button": alert["button"], "site_name": site.get("name", ""), "site_kind": site.get("kind", ""),
        "site_address": site.get("address", ""), "site_district": site.get("district", ""),
        "latitude": site.get("latitude", ""), "longitude": site.get("longitude", ""),
        "pressed_at": iso_utc(alert["pressed_at"]), "received_at": iso_utc(alert["received_at"]),
        "attempt": alert["attempt"], "duplicate_of": alert["duplicate_of"],
        "acknowledged_at": "", "acknowledged_by": "", "dispatched_at": "", "unit": "", "on_scene_at": "",
        "closed_at": "", "closed_by": "", "last_change_at": iso_utc(alert["updated_at"]),
        "event_count": len(events), "cursor": alert["cursor"], "outcome": "", "outcome_category": "",
    }
    for event in events:
        if event["kind"] not in ("transition", "test"):  # test: a press in test mode, closed at once (§8.6)
            continue
        state = event["state"]
        if state == "acknowledged" and not row["acknowledged_at"]:
            row["acknowledged_at"], row["acknowledged_by"] = iso_utc(event["at"]), event["operator"]
        elif state == "dispatched" and not row["dispatched_at"]:
            row["dispatched_at"], row["unit"] = iso_utc(event["at"]), event["unit"]
        elif state == "on_scene" and not row["on_scene_at"]:
            row["on_scene_at"] = iso_utc(event["at"])
        elif state in ("resolved", "false_alarm"):
            row["closed_at"], row["closed_by"] = iso_utc(event["at"]), event["operator"]
            row["outcome"], row["outcome_category"] = event["outcome"], event["category"]
    return row


def _table(rows: list[list[str]], out: TextIO) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        out.write("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() + "\n")


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


# -- actions -------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> int:
    path = journal_path(args)
    out = sys.stdout
    if args.action == "list":
        return do_list(args, path, out)
    if args.action == "show":
        return do_show(args, path, out)
    return do_export(args, path)


def do_list(args: argparse.Namespace, path: Path, out: TextIO) -> int:
    with read_journal(path) as conn:
        alerts = select_alerts(conn, since=args.since, open_only=args.open, limit=args.limit)
        total = count_alerts(conn, since=args.since, open_only=args.open)
    if args.json:
        for alert in alerts:
            out.write(json.dumps(alert_json(alert), ensure_ascii=False) + "\n")
        return 0
    what = "open alerts" if args.open else "alerts"
    if not alerts:
        out.write(f"no {what}" + (" since then" if args.since is not None else "") + f" in {path}\n")
        return 0
    rows = [[f"RECEIVED ({zone_label()})", "ID", "BUTTON", "SITE", "KIND", "LEVEL", "STATE"]]
    for alert in alerts:
        state = alert["state"] + (f" of {alert['duplicate_of']}" if alert["duplicate_of"] else "")
        rows.append([local(alert["received_at"]), alert["alert_id"], alert["button"],
                     _clip(site_line(alert["site"]), 40), alert["kind"], str(alert["level"]), state])
    _table(rows, out)
    still_open = sum(alert["state"] in OPEN_STATES for alert in alerts)
    shown = f"{len(alerts)} {what}" if len(alerts) == total else (
        f"the last {len(alerts)} of {total} {what} (--limit 0 for all)")
    out.write(f"{shown}; {still_open} of these open\n")
    return 0


def closing(events: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The step that closed the alert (resolved or false alarm), if any."""
    closed = [e for e in events if e["kind"] in ("transition", "test") and e["state"] in ("resolved", "false_alarm")]
    return closed[-1] if closed else None


def outcome_text(event: dict[str, Any] | None) -> str:
    if event is None:
        return "none yet (the alert is open)"
    if not event["outcome"]:
        return "not recorded (closed before outcomes existed)"
    text = event["outcome"] + (f": {event['category'].replace('_', ' ')}" if event["category"] else "")
    return f"{text}, by {event['operator'] or 'relay'} at {local(event['at'])}" + (
        f": {event['note']}" if event["note"] else "")


def plan_of(args: argparse.Namespace, conn: sqlite3.Connection, button_id: str,
            data_dir: Path) -> tuple[dict[str, Any] | None, str]:
    """(the plan shown with this button's alerts, or None; why there is none), from the journal's relay's registry."""
    from ..config import load_config
    from ..registry import load_registry

    try:
        settings = load_config(args.config, overrides={"data_dir": data_dir})
        registry = load_registry(settings.registry or settings.data_dir / "registry.csv")
    except (RegistryError, PinkRelayError) as error:
        return None, f"registry not readable: {str(error).splitlines()[0]}"
    button = registry.get(button_id)
    if button is None:
        return None, f"button {button_id} is not in the registry {registry.source}"
    if not button.plan_key:
        return None, f"the registry {registry.source} gives button {button_id} no plan"
    edits = plans.read_edits(conn)
    return plans.shown(button.plan_key, button.plan, edits.get(button.plan_key)), ""


def plan_lines(plan: dict[str, Any] | None, missing: str) -> list[str]:
    if plan is None:
        return [f"  plan       none ({missing})"]
    source = (f"edited by {plan['edited_by']} at {local(plan['edited_at'])}" if plan["source"] == "edited"
              else "from the registry")
    lines = [f"  plan       {plan['key']} ({source})"]
    lines += [f"    {number}. {step}" for number, step in enumerate(plan["steps"], start=1)]
    lines += [f"    call {c['name']}" + (f": {c['phone']}" if c["phone"] else "") for c in plan["contacts"]]
    if plan["notes"]:
        lines += [f"    note: {line}" for line in plan["notes"].splitlines()]
    return lines


def do_show(args: argparse.Namespace, path: Path, out: TextIO) -> int:
    with read_journal(path) as conn:
        alert = find_alert(conn, args.alert_id, path)
        events = history(conn, alert["alert_id"])
        repeats = linked(conn, alert["alert_id"])
        site_name = (alert["site"] or {}).get("name", "")
        false_alarms = count_for_site(conn, site_name, time.time_ns() // 1000)
        plan, missing = plan_of(args, conn, alert["button"], path.parent)
    closed = closing(events)
    if args.json:
        body = alert_json(alert)
        body["events"] = [event_json(event, alert) for event in events]
        body["repeats"] = repeats
        body["outcome"] = closed["outcome"] if closed else ""
        body["outcome_category"] = closed["category"] if closed else ""
        body["false_alarms_12m"] = false_alarms
        body["plan"] = plan
        out.write(json.dumps(body, ensure_ascii=False, indent=2) + "\n")
        return 0
    site = alert["site"]
    lines = [
        f"alert {alert['alert_id']}: {alert['kind']}, {alert['state'].upper()}"
        + (f", escalation level {alert['level']}" if alert["level"] else ""),
        f"  button     {alert['button']}",
        f"  site       {site_line(site)}",
    ]
    if site:
        place = ", ".join(part for part in (site.get("address"), site.get("district")) if part)
        lines.append(f"             {place + '; ' if place else ''}{site.get('latitude')}, {site.get('longitude')}")
    lines += [
        f"  pressed    {local(alert['pressed_at'])} (the button's clock); stored from attempt {alert['attempt']}",
        f"  received   {local(alert['received_at'])} ({zone_label()})",
    ]
    if alert["duplicate_of"]:
        lines.append(f"  repeat of  {alert['duplicate_of']} (the same button pressed again while it was open)")
    if repeats:
        lines.append(f"  repeats    {len(repeats)}: {', '.join(repeats)}")
    lines.append(f"  outcome    {outcome_text(closed)}")
    lines.append(f"  record     {false_alarms} false alarm{'' if false_alarms == 1 else 's'} from this site "
                 "in the last 12 months")
    lines += plan_lines(plan, missing)
    out.write("\n".join(lines) + "\n\nhistory\n")
    rows = [["CURSOR", "WHEN", "WHAT", "STATE", "LEVEL", "WHO", "UNIT", "OUTCOME", "NOTE"]]
    for event in events:
        outcome = event["outcome"] + (f":{event['category']}" if event["category"] else "")
        rows.append([str(event["cursor"]), local(event["at"]), event["kind"], event["state"], str(event["level"]),
                     who(event, alert), event["unit"], outcome, event["note"]])
    _table(rows, out)
    return 0


def do_export(args: argparse.Namespace, path: Path) -> int:
    with read_journal(path) as conn:
        alerts = select_alerts(conn, since=args.since)
        events: dict[str, list[dict[str, Any]]] = {alert["alert_id"]: [] for alert in alerts}
        if alerts:
            first_cursor = min(alert["cursor"] for alert in alerts)
            for row in conn.execute(f"SELECT {event_select(conn)} FROM events WHERE cursor >= ? "
                                    "ORDER BY cursor", (first_cursor,)):
                event = _event(row)
                if event["alert_id"] in events:
                    events[event["alert_id"]].append(event)
    buffer = io.StringIO(newline="")
    if args.format == "csv":
        writer = csv.DictWriter(buffer, fieldnames=EXPORT_FIELDS, lineterminator="\r\n")
        writer.writeheader()
        for alert in alerts:
            writer.writerow(summary(alert, events[alert["alert_id"]]))
    else:
        document = {
            "journal": str(path.resolve()),
            "since": iso_utc(args.since) if args.since is not None else None,
            "exported_at": iso_utc(time.time_ns() // 1000),
            "alerts": [
                {**summary(alert, events[alert["alert_id"]]), "site": alert["site"],
                 "events": [event_json(event, alert) for event in events[alert["alert_id"]]]}
                for alert in alerts
            ],
        }
        json.dump(document, buffer, ensure_ascii=False, indent=2)
        buffer.write("\n")
    text = buffer.getvalue()
    if args.output in (None, "-"):
        sys.stdout.write(text)
        return 0
    _write_file(Path(args.output), text)
    since = f" received since {iso_utc(args.since)}" if args.since is not None else ""
    print(f"exported {len(alerts)} alerts{since} to {args.output}", file=sys.stderr)
    return 0


def _write_file(target: Path, text: str) -> None:
    """Write the whole export or nothing: a half-written report is worse than none."""
    if target.is_dir():
        raise AlertsError(f"--output {target} is a directory; give a file name")
    try:
        fd, temp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent if str(target.parent) else ".")
    except OSError as error:
        raise AlertsError(f"cannot write {target}: {error.strerror or error}") from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
            handle.write(text)
        os.replace(temp, target)
    except OSError as error:
        Path(temp).unlink(missing_ok=True)
        raise AlertsError(f"cannot write {target}: {error.strerror or error}") from None
