"""Action plans: what to do for a site and whom to call, shown beside its alert the moment it arrives.

A plan is steps to follow, contacts (the nearest police station, campus
security, the women's police station) and notes. It comes from the button
registry: the columns ``plan_steps``, ``plan_contacts`` and ``plan_notes`` of a
button's row (a plan for that button), or ``plan_file``, a TOML file that the
buttons of one site share (a plan for the site)::

    steps = ["Call campus security", "Send the nearest unit", "Call her contact"]
    notes = "Gate 2 is locked after 22:00; use gate 1."
    [[contacts]]
    name = "Campus security"
    phone = "+92 91 921 6701"

Supervisors edit plans in the web room. An edit is stored in the journal
(table ``plan_edits``, keyed by the plan's key: ``file:PATH`` for a shared
file, ``button:ID`` for a row's own plan) and written to the ``audit`` table
in the same transaction, so it survives a restart and a registry reload: the
edited plan is shown instead of the registry's until a supervisor reverts it.

No I/O but reading a plan file and the SQL handed to the journal's writer.
"""

from __future__ import annotations

import json
import sqlite3
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import PinkRelayError

#: Registry fields that carry a plan (registry.py adds them to its FIELDS).
FIELDS = ("plan_steps", "plan_contacts", "plan_notes", "plan_file")
MAX_STEPS = 20
MAX_CONTACTS = 20
MAX_STEP_CHARS = 300
MAX_NAME_CHARS = 100
MAX_PHONE_CHARS = 40
MAX_NOTES_CHARS = 2000

SCHEMA = """
CREATE TABLE IF NOT EXISTS plan_edits (
    plan_key TEXT PRIMARY KEY,
    plan TEXT NOT NULL,
    edited_by TEXT NOT NULL,
    edited_at INTEGER NOT NULL
);
"""


class PlanError(PinkRelayError, ValueError):
    """A plan breaks its format or limits; the message names the field and the limit."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Contact:
    name: str
    phone: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class Plan:
    """One action plan, checked against the limits above when made."""

    steps: tuple[str, ...] = ()
    contacts: tuple[Contact, ...] = ()
    notes: str = ""

    def __post_init__(self) -> None:
        if len(self.steps) > MAX_STEPS:
            raise PlanError(f"a plan has at most {MAX_STEPS} steps, not {len(self.steps)}")
        for number, step in enumerate(self.steps, start=1):
            _check_text(f"step {number}", step, MAX_STEP_CHARS, required=True)
        if len(self.contacts) > MAX_CONTACTS:
            raise PlanError(f"a plan has at most {MAX_CONTACTS} contacts, not {len(self.contacts)}")
        for number, contact in enumerate(self.contacts, start=1):
            _check_text(f"contact {number} name", contact.name, MAX_NAME_CHARS, required=True)
            _check_text(f"contact {number} phone", contact.phone, MAX_PHONE_CHARS)
        _check_text("notes", self.notes, MAX_NOTES_CHARS, lines=True)

    def to_json(self) -> dict[str, Any]:
        return {"steps": list(self.steps), "contacts": [{"name": c.name, "phone": c.phone} for c in self.contacts],
                "notes": self.notes}

    @classmethod
    def from_json(cls, value: Any) -> Plan:
        """A plan from JSON (a web edit, a stored edit); PlanError says which part is wrong."""
        if not isinstance(value, dict):
            raise PlanError("a plan is an object with steps, contacts and notes")
        unknown = sorted(set(value) - {"steps", "contacts", "notes"})
        if unknown:
            raise PlanError(f"unknown plan field(s) {', '.join(unknown)}; a plan has steps, contacts and notes")
        steps = value.get("steps", [])
        contacts = value.get("contacts", [])
        notes = value.get("notes", "")
        if not isinstance(steps, list) or not all(isinstance(step, str) for step in steps):
            raise PlanError("steps must be a list of strings")
        if not isinstance(notes, str):
            raise PlanError("notes must be a string")
        if not isinstance(contacts, list):
            raise PlanError("contacts must be a list of {name, phone}")
        return cls(steps=tuple(s.strip() for s in steps if s.strip()),
                   contacts=tuple(_contact(c, n) for n, c in enumerate(contacts, start=1)), notes=notes.strip())

    def is_empty(self) -> bool:
        return not (self.steps or self.contacts or self.notes)


def _check_text(what: str, text: str, limit: int, *, required: bool = False, lines: bool = False) -> None:
    if not isinstance(text, str):
        raise PlanError(f"{what} must be text")
    if required and not text.strip():
        raise PlanError(f"{what} is empty")
    if len(text) > limit:
        raise PlanError(f"{what} is {len(text)} characters; at most {limit}")
    allowed = "\n\t" if lines else ""
    if any((ord(ch) < 32 and ch not in allowed) or ord(ch) == 127 for ch in text):
        raise PlanError(f"{what} contains control characters" + ("" if lines else " (it is one line)"))


def _contact(value: Any, number: int) -> Contact:
    """``{name, phone}`` or the text ``Name: phone``."""
    if isinstance(value, str):
        name, colon, phone = value.rpartition(":")
        if not colon:
            name, phone = value, ""
        return Contact(name=name.strip(), phone=phone.strip())
    if isinstance(value, dict) and set(value) <= {"name", "phone"} and isinstance(value.get("name"), str) \
            and isinstance(value.get("phone", ""), str):
        return Contact(name=value["name"].strip(), phone=value.get("phone", "").strip())
    raise PlanError(f"contact {number} must be {{name, phone}} or the text 'Name: phone'")


def _split(value: Any) -> list[Any]:
    """A CSV cell's items, separated by ';' (a TOML row may give a list)."""
    if isinstance(value, list):
        return value
    return [part.strip() for part in str(value).split(";") if part.strip()]


def plan_from_row(button_id: str, row: dict[str, Any], base: Path) -> tuple[str, Plan | None]:
    """(plan key, plan) of a registry row; ("", None) without one. PlanError names the field."""
    inline = [name for name in ("plan_steps", "plan_contacts", "plan_notes") if name in row]
    if "plan_file" in row:
        if inline:
            raise PlanError(f"give plan_file or {', '.join(inline)}, not both")
        name = str(row["plan_file"])
        return f"file:{name}", read_plan_file(base / name)
    if not inline:
        return "", None
    try:
        plan = Plan(steps=tuple(str(step) for step in _split(row.get("plan_steps", ""))),
                    contacts=tuple(_contact(c, n) for n, c in enumerate(_split(row.get("plan_contacts", "")), 1)),
                    notes=str(row.get("plan_notes", "")).strip())
    except PlanError as error:
        raise PlanError(f"field plan_*: {error}") from None
    return f"button:{button_id}", plan


def read_plan_file(path: Path) -> Plan:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise PlanError(f"field plan_file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as error:
        raise PlanError(f"field plan_file {path}: {getattr(error, 'strerror', None) or error}") from None
    except tomllib.TOMLDecodeError as error:
        raise PlanError(f"field plan_file {path}: not valid TOML: {error}") from None
    try:
        return Plan.from_json(data)
    except PlanError as error:
        raise PlanError(f"field plan_file {path}: {error}") from None


# -- supervisors' edits, in the journal -------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Edit:
    plan: Plan
    edited_by: str
    edited_at: int


def read_edits(conn: sqlite3.Connection) -> dict[str, Edit]:
    """Every stored edit by plan key; none in a journal no relay with plans has opened yet."""
    if conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'plan_edits'").fetchone() is None:
        return {}
    return {key: Edit(Plan.from_json(json.loads(text)), by, at)
            for key, text, by, at in conn.execute("SELECT plan_key, plan, edited_by, edited_at FROM plan_edits")}


def shown(key: str, registry_plan: Plan | None, edit: Edit | None) -> dict[str, Any] | None:
    """The plan an operator sees beside an alert, as JSON: the edit if there is one, else the registry's."""
    if edit is None and registry_plan is None:
        return None
    plan = edit.plan if edit is not None else registry_plan
    assert plan is not None
    return {"key": key, **plan.to_json(), "source": "edited" if edit is not None else "registry",
            "edited_by": edit.edited_by if edit else "", "edited_at": edit.edited_at if edit else 0}


class PlanBook:
    """The supervisors' edits in memory (read from the journal at start), and the door to change them."""

    def __init__(self) -> None:
        self.edits: dict[str, Edit] = {}

    async def load(self, journal: Any) -> None:
        def work(conn: sqlite3.Connection) -> dict[str, Edit]:
            conn.execute(SCHEMA)  # one statement: executescript would commit the writer's batch
            return read_edits(conn)

        self.edits = await journal.execute(work)

    def plan_for(self, button: Any) -> dict[str, Any] | None:
        """The plan shown with an alert of ``button`` (a registry Button, or None)."""
        if button is None or not button.plan_key:
            return None
        return shown(button.plan_key, button.plan, self.edits.get(button.plan_key))

    async def edit(self, journal: Any, key: str, plan: Plan | None, operator: str, at: int,
                   where: str = "") -> None:
        """Store a supervisor's edit (``plan`` None: back to the registry's) and its audit row, in one commit."""
        detail = json.dumps({"plan": plan.to_json() if plan else None, "from": where}, ensure_ascii=False)

        def work(conn: sqlite3.Connection) -> None:
            if plan is None:
                conn.execute("DELETE FROM plan_edits WHERE plan_key = ?", (key,))
            else:
                conn.execute("INSERT INTO plan_edits (plan_key, plan, edited_by, edited_at) VALUES (?, ?, ?, ?) "
                             "ON CONFLICT (plan_key) DO UPDATE SET plan = excluded.plan, "
                             "edited_by = excluded.edited_by, edited_at = excluded.edited_at",
                             (key, json.dumps(plan.to_json(), ensure_ascii=False), operator, at))
            conn.execute("INSERT INTO audit (at, operator, action, subject, detail) VALUES (?, ?, ?, ?, ?)",
                         (at, operator, "plan-edit" if plan else "plan-revert", key, detail))

        await journal.execute(work)
        if plan is None:
            self.edits.pop(key, None)
        else:
            self.edits[key] = Edit(plan, operator, at)



class LocalPlans:
    """Plans as a terminal on the relay's machine reads them: its registry file and the journal's edits.

    For ``pinkrelay console``: the registry is read once, the edits each time
    (read-only, a few rows), so a supervisor's edit shows on the next alert.
    """

    def __init__(self, registry: Any, journal: Path) -> None:
        self.registry = registry
        self.journal = journal

    def _read(self, work: Any) -> Any:
        from urllib.parse import quote

        if not self.journal.is_file():
            return None
        conn = sqlite3.connect(f"file:{quote(str(self.journal.resolve()))}?mode=ro", uri=True)
        try:
            conn.execute("PRAGMA busy_timeout = 2000")
            return work(conn)
        except sqlite3.Error:
            return None
        finally:
            conn.close()

    def plan_for(self, button_id: str) -> dict[str, Any] | None:
        button = self.registry.get(button_id)
        if button is None or not button.plan_key:
            return None
        edits = self._read(read_edits) or {}
        return shown(button.plan_key, button.plan, edits.get(button.plan_key))

    def false_alarms(self, site: str, now_us: int) -> int | None:
        from .false_alarms import count_for_site

        return self._read(lambda conn: count_for_site(conn, site, now_us))
