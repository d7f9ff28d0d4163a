"""Response-time reports from the journal: per site, room, operator and shift.

Supervisors must show how fast the control room answers and where false
alarms come from. A report covers the alerts *received* in ``[since, until)``
(the relay's clock: a button's own clock may be wrong), leaving out repeat
presses (``duplicate``), ``offline`` alerts and presses of buttons in test
mode (counted apart as ``test_presses``). For each group it gives:

- press → acknowledged, → dispatched, → resolved: the time from receipt to
  the first ``acknowledged`` and ``dispatched`` step and to the closing step
  (``resolved`` or ``false_alarm``), as count, p50, p90 (nearest rank: the
  value at rank ceil(p/100 * n) of the sorted times) and a histogram;
- escalations: alerts that escalated at least once, and escalation steps;
- outcomes: genuine, false (and its categories), test, still open, unknown
  (closed before outcomes existed).

Groups: ``site`` (the site stored with the alert), ``room`` (each control
room that answers its button, from the registry: an alert of a button two
rooms answer counts in both), ``operator`` (who acknowledged it; ``(not
acknowledged)``) and ``shift`` (the local time it was received, shifts
starting at the given hours). ``offline`` lists the devices with the most
offline time in the period: each ``offline`` alert from its receipt to its
closing step (the button came back) or to ``until``, clipped to the period.

Pure computation over an SQLite connection: the command (cli/report.py)
and the web room (web/reports.py) read the journal read-only and call
``compute``.
"""

from __future__ import annotations

import csv
import html
import io
import json
import math
import sqlite3
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, tzinfo
from typing import Any
from urllib.parse import quote

#: Histogram bin edges in seconds (the last bin is open-ended).
BIN_EDGES = (0, 10, 20, 30, 60, 120, 300, 600, 1800, 3600)
DEFAULT_SHIFTS = (6, 14, 22)
OFFLINE_TOP = 10
STAGES = ("acknowledged", "dispatched", "resolved")
GROUPINGS = ("site", "room", "operator", "shift")
FALSE_CATEGORIES = ("malicious", "accidental", "device_fault")
NOT_ACKNOWLEDGED = "(not acknowledged)"


def nearest_rank(values: Sequence[float], percent: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(1, math.ceil(percent / 100 * len(ordered))) - 1]


def histogram(values: Sequence[float]) -> list[dict[str, Any]]:
    bins = [{"from": low, "to": high, "count": 0} for low, high in zip(BIN_EDGES, (*BIN_EDGES[1:], None))]
    for value in values:
        for entry in reversed(bins):
            if value >= entry["from"]:
                entry["count"] += 1
                break
    return bins


def shift_of(received_us: int, tz: tzinfo, starts: Sequence[int]) -> str:
    hour = datetime.fromtimestamp(received_us / 1e6, tz).hour
    ordered = sorted(starts)
    index = max((i for i, start in enumerate(ordered) if start <= hour), default=len(ordered) - 1)
    start, end = ordered[index], ordered[(index + 1) % len(ordered)]
    return f"{start:02d}-{end:02d}"


@dataclass
class _Group:
    alerts: int = 0
    times: dict[str, list[float]] = field(default_factory=lambda: {stage: [] for stage in STAGES})
    escalated_alerts: int = 0
    escalations: int = 0
    outcomes: dict[str, int] = field(default_factory=lambda: dict.fromkeys(
        ("genuine", "false", "test", "open", "unknown"), 0))
    false_categories: dict[str, int] = field(default_factory=lambda: dict.fromkeys(FALSE_CATEGORIES, 0))

    def add(self, alert: _Alert) -> None:
        self.alerts += 1
        for stage in STAGES:
            if stage in alert.times:
                self.times[stage].append(alert.times[stage])
        if alert.escalations:
            self.escalated_alerts += 1
            self.escalations += alert.escalations
        self.outcomes[alert.outcome] += 1
        if alert.outcome == "false" and alert.category in self.false_categories:
            self.false_categories[alert.category] += 1

    def to_json(self, name: str) -> dict[str, Any]:
        stages = {}
        for stage, values in self.times.items():
            stages[stage] = {"count": len(values), "p50_s": nearest_rank(values, 50),
                             "p90_s": nearest_rank(values, 90), "histogram": histogram(values)}
        return {"name": name, "alerts": self.alerts, **stages, "escalated_alerts": self.escalated_alerts,
                "escalations": self.escalations, "outcomes": dict(self.outcomes),
                "false_categories": dict(self.false_categories)}


@dataclass
class _Alert:
    alert_id: str
    button: str
    site: str
    received_at: int
    times: dict[str, float] = field(default_factory=dict)
    operator: str = NOT_ACKNOWLEDGED
    escalations: int = 0
    outcome: str = "open"
    category: str = ""
    test_press: bool = False


def _site_name(text: str) -> str:
    return (json.loads(text).get("name") or "(no site)") if text else "(no site)"


def compute(conn: sqlite3.Connection, *, since_us: int, until_us: int, rooms_of: Callable[[str], Sequence[str]],
            room: str | None = None, tz: tzinfo, shifts: Sequence[int] = DEFAULT_SHIFTS) -> dict[str, Any]:
    """The report of the alerts received in ``[since_us, until_us)`` (see the module's docstring)."""
    present = {row[1] for row in conn.execute("PRAGMA table_info(events)")}
    outcome_columns = "e.outcome, e.category" if "outcome" in present else "'', ''"
    alerts: dict[str, _Alert] = {}
    for alert_id, button, received_at, site in conn.execute(
            "SELECT alert_id, button, received_at, site FROM alerts WHERE received_at >= ? AND received_at < ? "
            "AND state != 'duplicate' AND kind != 'offline' ORDER BY received_at, cursor", (since_us, until_us)):
        if room is None or room in rooms_of(button):
            alerts[alert_id] = _Alert(alert_id, button, _site_name(site), received_at)
    for alert_id, kind, state, level, operator, at, outcome, category in conn.execute(
            f"SELECT e.alert_id, e.kind, e.state, e.level, e.operator, e.at, {outcome_columns} FROM events e "
            "JOIN alerts a ON a.alert_id = e.alert_id WHERE a.received_at >= ? AND a.received_at < ? "
            "AND a.state != 'duplicate' AND a.kind != 'offline' ORDER BY e.cursor", (since_us, until_us)):
        alert = alerts.get(alert_id)
        if alert is None:
            continue
        seconds = (at - alert.received_at) / 1e6
        if kind == "test":
            alert.test_press = True
        elif kind == "escalated":
            alert.escalations += 1
        elif kind == "transition":
            if state == "acknowledged" and "acknowledged" not in alert.times:
                alert.times["acknowledged"] = seconds
                alert.operator = operator or NOT_ACKNOWLEDGED
            elif state == "dispatched" and "dispatched" not in alert.times:
                alert.times["dispatched"] = seconds
            elif state in ("resolved", "false_alarm"):
                alert.times["resolved"] = seconds
                alert.outcome = outcome if outcome in ("genuine", "false", "test") else "unknown"
                alert.category = category
    groups: dict[str, dict[str, _Group]] = {grouping: defaultdict(_Group) for grouping in GROUPINGS}
    overall = _Group()
    test_presses = 0
    for alert in alerts.values():
        if alert.test_press:
            test_presses += 1
            continue
        overall.add(alert)
        groups["site"][alert.site].add(alert)
        for answering in rooms_of(alert.button):
            if room is None or answering == room:
                groups["room"][answering].add(alert)
        groups["operator"][alert.operator].add(alert)
        groups["shift"][shift_of(alert.received_at, tz, shifts)].add(alert)
    return {
        "from_us": since_us, "to_us": until_us, "room": room, "shifts": list(sorted(shifts)),
        "percentiles": "nearest rank", "histogram_edges_s": list(BIN_EDGES),
        "overall": overall.to_json("all"),
        "groups": {grouping: [g.to_json(name) for name, g in sorted(by_name.items())]
                   for grouping, by_name in groups.items()},
        "test_presses": test_presses,
        "offline": offline_devices(conn, since_us, until_us, rooms_of, room),
    }


def offline_devices(conn: sqlite3.Connection, since_us: int, until_us: int,
                    rooms_of: Callable[[str], Sequence[str]], room: str | None) -> list[dict[str, Any]]:
    """The devices with the most offline time in ``[since_us, until_us)``, most first."""
    ends: dict[str, int] = {}
    for alert_id, at in conn.execute(
            "SELECT e.alert_id, MIN(e.at) FROM events e JOIN alerts a ON a.alert_id = e.alert_id "
            "WHERE a.kind = 'offline' AND a.received_at < ? AND e.state IN ('resolved', 'false_alarm') "
            "GROUP BY e.alert_id", (until_us,)):
        ends[alert_id] = at
    seconds: dict[str, float] = defaultdict(float)
    periods: dict[str, int] = defaultdict(int)
    sites: dict[str, str] = {}
    for alert_id, button, received_at, site in conn.execute(
            "SELECT alert_id, button, received_at, site FROM alerts WHERE kind = 'offline' AND received_at < ?",
            (until_us,)):
        if room is not None and room not in rooms_of(button):
            continue
        start, end = max(received_at, since_us), min(ends.get(alert_id, until_us), until_us)
        if end <= start:
            continue
        seconds[button] += (end - start) / 1e6
        periods[button] += 1
        sites[button] = _site_name(site)
    ranked = sorted(seconds, key=lambda button: (-seconds[button], button))[:OFFLINE_TOP]
    return [{"button": b, "site": sites[b], "offline_s": round(seconds[b], 3), "periods": periods[b]}
            for b in ranked]


# -- formats ---------------------------------------------------------------------------------

CSV_FIELDS = (
    "grouping", "group", "alerts",
    *(f"{stage}_{what}" for stage in STAGES for what in ("count", "p50_s", "p90_s")),
    "escalated_alerts", "escalations", "genuine", "false", *(f"false_{c}" for c in FALSE_CATEGORIES),
    "test", "open", "unknown", "offline_s", "offline_periods",
)


def _csv_row(grouping: str, group: dict[str, Any]) -> dict[str, Any]:
    row: dict[str, Any] = {"grouping": grouping, "group": group["name"], "alerts": group["alerts"],
                           "escalated_alerts": group["escalated_alerts"], "escalations": group["escalations"]}
    for stage in STAGES:
        for what in ("count", "p50_s", "p90_s"):
            value = group[stage][what]
            row[f"{stage}_{what}"] = "" if value is None else round(value, 3)
    row.update(group["outcomes"])
    row.update({f"false_{c}": n for c, n in group["false_categories"].items()})
    return row


def as_csv(report: dict[str, Any]) -> str:
    buffer = io.StringIO(newline="")
    writer = csv.DictWriter(buffer, fieldnames=CSV_FIELDS, lineterminator="\r\n", restval="")
    writer.writeheader()
    writer.writerow(_csv_row("overall", report["overall"]))
    for grouping in GROUPINGS:
        for group in report["groups"][grouping]:
            writer.writerow(_csv_row(grouping, group))
    for device in report["offline"]:
        writer.writerow({"grouping": "offline", "group": device["button"], "offline_s": device["offline_s"],
                         "offline_periods": device["periods"]})
    return buffer.getvalue()


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    if seconds < 60:
        return f"{seconds:.1f} s"
    return f"{int(seconds // 60)}:{int(seconds % 60):02d}"


def _svg_histogram(bins: list[dict[str, Any]], label: str) -> str:
    """A histogram as inline SVG: the browser draws it, the HTML stays one self-contained file."""
    width, height, gap = 220, 60, 2
    top = max((b["count"] for b in bins), default=0) or 1
    bar = (width - gap * len(bins)) / len(bins)
    rects = []
    for index, entry in enumerate(bins):
        h = round(entry["count"] / top * (height - 12), 1)
        x = round(index * (bar + gap), 1)
        span = f"{entry['from']}–{entry['to']} s" if entry["to"] is not None else f"{entry['from']}+ s"
        rects.append(f'<rect x="{x}" y="{height - h}" width="{bar:.1f}" height="{h}"><title>{span}: '
                     f'{entry["count"]}</title></rect>')
    return (f'<svg class="hist" width="{width}" height="{height}" role="img" aria-label="{html.escape(label)}">'
            + "".join(rects) + "</svg>")


def as_html(report: dict[str, Any], title: str) -> str:
    """One self-contained page: tables, and a histogram (inline SVG) per stage and group."""
    esc = html.escape
    parts = [f"<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{esc(title)}</title><style>"
             "body{font-family:sans-serif;margin:24px;color:#111}table{border-collapse:collapse;margin:8px 0 24px}"
             "td,th{border:1px solid #ccc;padding:4px 8px;text-align:right;vertical-align:top}"
             "th:first-child,td:first-child{text-align:left}.hist rect{fill:#d6246e}</style></head><body>",
             f"<h1>{esc(title)}</h1>",
             f"<p>{report['overall']['alerts']} alerts; {report['test_presses']} test presses left out. "
             "Percentiles by nearest rank; histogram bins (s): "
             f"{esc(', '.join(map(str, report['histogram_edges_s'])))}+.</p>"]
    for grouping in ("overall", *GROUPINGS):
        groups = [report["overall"]] if grouping == "overall" else report["groups"][grouping]
        parts.append(f"<h2>By {grouping}</h2>" if grouping != "overall" else "<h2>All alerts</h2>")
        parts.append("<table><tr><th>" + esc(grouping) + "</th><th>alerts</th>"
                     + "".join(f"<th>→ {s} p50 / p90 (n)</th>" for s in STAGES)
                     + "<th>escalated (steps)</th><th>genuine</th><th>false</th><th>test</th><th>open</th></tr>")
        for group in groups:
            cells = [f"<td>{esc(group['name'])}</td><td>{group['alerts']}</td>"]
            for stage in STAGES:
                data = group[stage]
                cells.append(f"<td>{_duration(data['p50_s'])} / {_duration(data['p90_s'])} ({data['count']})<br>"
                             + _svg_histogram(data["histogram"], f"{group['name']} press to {stage}") + "</td>")
            outcomes = group["outcomes"]
            cells.append(f"<td>{group['escalated_alerts']} ({group['escalations']})</td><td>{outcomes['genuine']}</td>"
                         f"<td>{outcomes['false']}</td><td>{outcomes['test']}</td><td>{outcomes['open']}</td>")
            parts.append("<tr>" + "".join(cells) + "</tr>")
        parts.append("</table>")
    parts.append("<h2>Devices with the most offline time</h2><table><tr><th>button</th><th>site</th>"
                 "<th>offline</th><th>periods</th></tr>")
    for device in report["offline"]:
        parts.append(f"<tr><td>{esc(device['button'])}</td><td>{esc(device['site'])}</td>"
                     f"<td>{_duration(device['offline_s'])}</td><td>{device['periods']}</td></tr>")
    parts.append("</table></body></html>\n")
    return "".join(parts)


def open_read_only(path: Any) -> sqlite3.Connection:
    """A read-only connection to a journal (WAL lets it read while the relay writes)."""
    conn = sqlite3.connect(f"file:{quote(str(path))}?mode=ro", uri=True)
    conn.execute("PRAGMA busy_timeout = 5000")
    return conn
