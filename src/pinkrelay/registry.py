"""The button registry: which buttons a deployment owns, their secrets and their sites.

A registry is a CSV file (one row per button, header row required) or a TOML
file (``[[button]]`` tables) with the same fields:

    id, secret | secret_file, site_name, site_kind, address, district,
    latitude, longitude, control_rooms, alarm_account, alarm_zone, disabled,
    plan_steps, plan_contacts, plan_notes | plan_file

The plan fields (alerts/plans.py) give the action plan shown beside the
button's alerts; a ``plan_file`` shared by the buttons of a site is the
site's plan.

A row with ``disabled`` true is checked like any other but left out of the
loaded registry: the relay refuses that button (and, on a reload, ends its
session) while the row keeps its secret and site for when it is enabled again.

Every problem is reported with the file, line and field (for TOML, the line
of the ``[[button]]`` header and the table's number), and all of them at
once, so an operator can fix a file in one pass. A duplicate id is reported
even when its row has other problems too: fixing those first must not
reveal a second problem the operator could have been told about at once.
"""

from __future__ import annotations

import csv
import re
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .alerts import plans
from .alerts.routing import ROOM_NAME
from .errors import RegistryError
from .protocol.events import MAX_ID_LENGTH, Site

FIELDS = (
    "id",
    "secret",
    "secret_file",
    "site_name",
    "site_kind",
    "address",
    "district",
    "latitude",
    "longitude",
    "control_rooms",
    "alarm_account",
    "alarm_zone",
    "disabled",
    *plans.FIELDS,
)
REQUIRED = ("id", "site_name", "latitude", "longitude")
SITE_KINDS = (
    "market",
    "shopping_centre",
    "campus",
    "school",
    "hospital",
    "transport",
    "park",
    "office",
    "other",
)
_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_TOML_BUTTON_HEADER = re.compile(r"^\s*\[\[\s*(button|\"button\"|'button')\s*\]\]")
#: Where the CSV reader puts values beyond the header's columns (an unquoted comma, usually).
_EXTRA_VALUES = "\0extra values"
MIN_SECRET_BYTES = 16


@dataclass(frozen=True, slots=True, kw_only=True)
class Button:
    """One registered button."""

    button_id: str
    secret: bytes = field(repr=False)
    site: Site
    control_rooms: tuple[str, ...] = ("main",)
    #: The alarm receiving centre's account (3-16 hex digits) and zone (1-999) for this
    #: button, used by SIA DC-09 sinks; empty / 0: the sink's own account, zone 1.
    alarm_account: str = ""
    alarm_zone: int = 0
    #: The row is marked ``disabled``: kept in the file, refused by the relay.
    disabled: bool = False
    #: The action plan from the registry (alerts/plans.py) and the key its edits are stored under.
    plan: plans.Plan | None = None
    plan_key: str = ""


class Registry(Mapping[str, Button]):
    """Buttons by id (enabled ones only). Immutable; load a new one to change it."""

    def __init__(
        self, buttons: list[Button] | tuple[Button, ...] = (), source: str = "", disabled: frozenset[str] = frozenset()
    ) -> None:
        self._buttons = {button.button_id: button for button in buttons}
        self.source = source
        #: Ids of rows marked ``disabled``: in the file, not in the registry.
        self.disabled = disabled

    def __getitem__(self, button_id: str) -> Button:
        return self._buttons[button_id]

    def __iter__(self) -> Iterator[str]:
        return iter(self._buttons)

    def __len__(self) -> int:
        return len(self._buttons)

    def secret(self, button_id: str) -> bytes | None:
        button = self._buttons.get(button_id)
        return button.secret if button else None


def _rows_from_csv(path: Path) -> list[tuple[str, dict[str, Any]]]:
    with open(path, newline="", encoding="utf-8") as handle:
        numbered = [(n, line) for n, line in enumerate(handle, start=1) if not line.lstrip().startswith("#")]
    lines = [line for _, line in numbered]
    reader = csv.DictReader(lines)
    if reader.fieldnames is None:
        raise RegistryError(f"{path}: empty registry (expected a header row: {', '.join(FIELDS)})")
    unknown = [name for name in reader.fieldnames if name not in FIELDS]
    if unknown:
        raise RegistryError(
            f"{path}: unknown column(s) {', '.join(unknown)}; known columns: {', '.join(FIELDS)}"
        )
    rows = []
    consumed = reader.line_num
    for row in reader:
        first, consumed = consumed, reader.line_num
        while first < consumed - 1 and not lines[first].strip():
            first += 1
        number = numbered[first][0]
        extra = row.pop(None, None)  # values past the header (DictReader restkey)
        values: dict[str, Any] = {k: v for k, v in row.items() if v not in (None, "")}
        if extra:
            values[_EXTRA_VALUES] = extra
        rows.append((f"{path}:{number}", values))
    return rows


def _rows_from_toml(path: Path) -> list[tuple[str, dict[str, Any]]]:
    text = path.read_text(encoding="utf-8")
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise RegistryError(f"{path}: not valid TOML: {error}") from None
    tables = data.get("button", [])
    if not isinstance(tables, list) or not all(isinstance(table, dict) for table in tables):
        raise RegistryError(f"{path}: expected [[button]] tables, one per button")
    # tomllib keeps no positions; the headers, in order, are the tables' lines
    # (unless the file uses an inline array, which then goes without lines).
    headers = [n for n, line in enumerate(text.splitlines(), start=1) if _TOML_BUTTON_HEADER.match(line)]
    rows = []
    lines_known = len(headers) == len(tables)
    for number, table in enumerate(tables, start=1):
        line = f":{headers[number - 1]}" if lines_known else ""
        where = f"{path}{line} [[button]] #{number}"
        unknown = [name for name in table if name not in FIELDS]
        if unknown:
            raise RegistryError(
                f"{where}: unknown field(s) {', '.join(unknown)}; known fields: {', '.join(FIELDS)}"
            )
        rows.append((where, dict(table)))
    return rows


def _parse_row(where: str, row: dict[str, Any], base: Path, problems: list[str]) -> Button | None:
    before = len(problems)
    if _EXTRA_VALUES in row:
        problems.append(
            f"{where}: {len(row[_EXTRA_VALUES])} value(s) more than the header has columns; "
            "put a value that contains a comma in double quotes"
        )
    for name in REQUIRED:
        if name not in row:
            problems.append(f"{where}: field {name} is missing")
    button_id = str(row.get("id", ""))
    if button_id and (len(button_id) > MAX_ID_LENGTH or not _ID_PATTERN.fullmatch(button_id)):
        problems.append(
            f"{where}: field id {button_id!r} must be letters, digits, '.', '_' or '-' "
            f"(at most {MAX_ID_LENGTH} characters)"
        )
    secret = _secret(where, row, base, problems)
    coordinates = []
    for name, limit in (("latitude", 90.0), ("longitude", 180.0)):
        if name not in row:
            continue
        try:
            if isinstance(row[name], bool):  # TOML true/false: float() would take it as 1.0/0.0
                raise TypeError(name)
            value = float(row[name])
        except (TypeError, ValueError):
            problems.append(f"{where}: field {name} {row[name]!r} is not a number")
            continue
        if not -limit <= value <= limit:
            problems.append(f"{where}: field {name} {value} outside -{limit:g}..{limit:g}")
            continue
        coordinates.append(value)
    kind = str(row.get("site_kind", "other"))
    if kind not in SITE_KINDS:
        problems.append(f"{where}: field site_kind {kind!r} is not one of {', '.join(SITE_KINDS)}")
    rooms = row.get("control_rooms", "main")
    if isinstance(rooms, str):
        rooms = [room.strip() for room in rooms.replace(";", ",").split(",") if room.strip()]
    if not isinstance(rooms, (list, tuple)) or not all(
        isinstance(room, str) and ROOM_NAME.fullmatch(room) for room in rooms
    ):
        problems.append(f"{where}: field control_rooms {row.get('control_rooms')!r}: list room names "
                        "(1-64 lower-case letters, digits, '.', '_' or '-') separated by ';', e.g. main;vwps")
        return None
    alarm_account = str(row.get("alarm_account", "")).upper()
    if alarm_account and not re.fullmatch(r"[0-9A-F]{3,16}", alarm_account):
        problems.append(f"{where}: field alarm_account {alarm_account!r} must be 3-16 hex digits (0-9, A-F)")
    alarm_zone = str(row.get("alarm_zone", "0") or "0")
    if not alarm_zone.isdigit() or not 0 <= int(alarm_zone) <= 999:
        problems.append(f"{where}: field alarm_zone {alarm_zone!r} must be a whole number 1-999")
        alarm_zone = "0"
    disabled = _flag(row.get("disabled", ""))
    if disabled is None:
        problems.append(f"{where}: field disabled {row.get('disabled')!r} must be true or false (or empty)")
    plan_key, plan = "", None
    try:
        plan_key, plan = plans.plan_from_row(button_id, row, base)
    except plans.PlanError as error:
        problems.append(f"{where}: {error}")
    if len(problems) > before or secret is None or len(coordinates) != 2:
        return None
    try:
        site = Site(
            name=str(row["site_name"]),
            kind=kind,
            address=str(row.get("address", "")),
            district=str(row.get("district", "")),
            latitude=coordinates[0],
            longitude=coordinates[1],
        )
    except ValueError as error:
        problems.append(f"{where}: {error}")
        return None
    return Button(button_id=button_id, secret=secret, site=site, control_rooms=tuple(rooms) or ("main",),
                  alarm_account=alarm_account, alarm_zone=int(alarm_zone), disabled=bool(disabled),
                  plan=plan, plan_key=plan_key)


def _flag(value: Any) -> bool | None:
    """A yes/no field: TOML booleans, or true/false, yes/no, 1/0 (any case) or empty in CSV; None if neither."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("", "false", "no", "0"):
        return False
    if text in ("true", "yes", "1"):
        return True
    return None


def _secret(where: str, row: dict[str, Any], base: Path, problems: list[str]) -> bytes | None:
    if "secret" in row and "secret_file" in row:
        problems.append(f"{where}: give secret or secret_file, not both")
        return None
    if "secret_file" in row:
        path = base / str(row["secret_file"])
        try:
            secret = path.read_text(encoding="utf-8").strip().encode()
        except OSError as error:
            problems.append(f"{where}: field secret_file {path}: {error.strerror or error}")
            return None
    elif "secret" in row:
        secret = str(row["secret"]).encode()
    else:
        problems.append(f"{where}: field secret is missing (or give secret_file)")
        return None
    if len(secret) < MIN_SECRET_BYTES:
        problems.append(f"{where}: secret is {len(secret)} bytes; use at least {MIN_SECRET_BYTES}")
        return None
    return secret


def load_registry(path: Path | str) -> Registry:
    """Load and check a registry; RegistryError lists every problem found."""
    path = Path(path)
    try:
        rows = _rows_from_toml(path) if path.suffix == ".toml" else _rows_from_csv(path)
    except FileNotFoundError:
        raise RegistryError(f"registry file {path} does not exist") from None
    except PermissionError:
        raise RegistryError(f"registry file {path} is not readable (permission denied)") from None
    except IsADirectoryError:
        raise RegistryError(f"registry file {path} is a directory") from None
    except UnicodeDecodeError:
        raise RegistryError(f"registry file {path} is not UTF-8 text") from None
    problems: list[str] = []
    buttons: list[Button] = []
    first_seen: dict[str, str] = {}
    for where, row in rows:
        button = _parse_row(where, row, path.parent, problems)
        button_id = str(row.get("id", ""))
        if button_id in first_seen:
            problems.append(f"{where}: field id {button_id!r} duplicates {first_seen[button_id]}")
            continue
        if button_id:
            first_seen[button_id] = where
        if button is not None:
            buttons.append(button)
    if problems:
        raise RegistryError(f"registry {path} has {len(problems)} problem(s):\n" + "\n".join(problems))
    return Registry(
        [button for button in buttons if not button.disabled],
        source=str(path),
        disabled=frozenset(button.button_id for button in buttons if button.disabled),
    )
