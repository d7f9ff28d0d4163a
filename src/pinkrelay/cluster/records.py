"""What the alert bus stores: subjects, message ids and the msgpack body of each record. Sans-IO.

One JetStream stream per namespace holds every record of the control room:

- ``NS.alert.TOKEN``: an alert raised, then each of its lifecycle steps and
  escalations, on one subject per alert. A relay publishes a step with
  ``Nats-Expected-Last-Subject-Sequence`` set to the alert's last record it
  has seen, so two relays acting on one alert at once cannot both win (the
  loser's step is stale, as in the SQLite journal). A raise expects sequence
  0: an alert id is stored once for the stream's life, and ``Nats-Msg-Id``
  answers a retry within the duplicate window without even that check.
- ``NS.button.TOKEN``: a button going online or offline.
- ``NS.audit.TOKEN``: an entry of the audit trail, by operator.

Ids become subject tokens (and KV keys) unchanged when they are letters,
digits, ``-`` and ``_`` (a UUID, a registry's button ids); anything else is
written as ``=`` and the hex of its UTF-8, so no id can add a subject level
or a wildcard, and every token is a valid KV key.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import msgpack

from ..alerts.lifecycle import Step
from ..protocol import Alert, AlertUpdate, ButtonState, Site

_PLAIN_TOKEN = re.compile(r"[A-Za-z0-9_-]{1,64}")
#: JetStream's error codes for a failed Nats-Expected-Last-Subject-Sequence check
#: (with the sequence in the text, and the constant form newer servers send).
WRONG_LAST_SEQUENCE = frozenset({10071, 10164})


def token(identifier: str) -> str:
    """A subject token (and KV key) for an alert or button id."""
    if _PLAIN_TOKEN.fullmatch(identifier):
        return identifier
    return "=" + identifier.encode().hex()


@dataclass(frozen=True, slots=True)
class Subjects:
    """The names one namespace uses on the NATS cluster."""

    namespace: str

    @property
    def stream(self) -> str:
        return self.namespace.upper().replace("-", "_") + "_ALERTS"

    @property
    def all(self) -> str:
        return f"{self.namespace}.>"

    def alert(self, alert_id: str) -> str:
        return f"{self.namespace}.alert.{token(alert_id)}"

    def button(self, button_id: str) -> str:
        return f"{self.namespace}.button.{token(button_id)}"

    def audit(self, operator: str) -> str:
        return f"{self.namespace}.audit.{token(operator or '-')}"

    @property
    def buttons_bucket(self) -> str:
        return f"{self.namespace}_buttons".replace("-", "_")

    @property
    def relays_bucket(self) -> str:
        return f"{self.namespace}_relays".replace("-", "_")

    @property
    def counters_bucket(self) -> str:
        return f"{self.namespace}_counters".replace("-", "_")


def _site_dict(site: Site | None) -> dict[str, Any] | None:
    if site is None:
        return None
    return {"name": site.name, "kind": site.kind, "address": site.address, "district": site.district,
            "latitude": site.latitude, "longitude": site.longitude}


def raised(alert: Alert, relay: str, *, test_note: str = "") -> bytes:
    """The raise of ``alert``; with ``test_note``, a press in test mode, stored closed (kind ``test``)."""
    return msgpack.packb({
        "k": "test" if test_note else "raised", "relay": relay, "note": test_note, "alert_id": alert.alert_id, "pressed_at": alert.pressed_at,
        "kind": alert.kind, "attempt": alert.attempt, "button": alert.button, "site": _site_dict(alert.site),
        "state": alert.state, "level": alert.level, "received_at": alert.received_at,
        "duplicate_of": alert.duplicate_of,
    })


def step(step: Step, level: int, kind: str, relay: str) -> bytes:
    return msgpack.packb({
        "k": "step", "relay": relay, "kind": kind, "alert_id": step.alert_id, "state": step.state,
        "level": level, "operator": step.operator, "console": step.console, "unit": step.unit,
        "note": step.note, "at": step.at, "outcome": step.outcome, "category": step.category,
    })


def button(state: ButtonState, relay: str) -> bytes:
    return msgpack.packb({"k": "button", "relay": relay, "button": state.button, "state": state.state,
                          "at": state.at})


def audit(at: int, operator: str, action: str, subject: str, detail: str, relay: str) -> bytes:
    return msgpack.packb({"k": "audit", "relay": relay, "at": at, "operator": operator, "action": action,
                          "subject": subject, "detail": detail})


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """Who did what, on the stream as in the journal's audit table (not told to consoles)."""

    at: int
    operator: str
    action: str
    subject: str
    detail: str
    relay: str


class BadRecord(ValueError):
    """A message on the stream that is not a record of this version; it is skipped, with a log line."""


def decode(seq: int, body: bytes) -> tuple[str, Alert | AlertUpdate | ButtonState | AuditEntry, str]:
    """(kind, event, note) of the record at stream sequence ``seq``; the event's cursor is ``seq``.

    A ``test`` record gives the Alert as stored and its note; the view turns
    them into the step consoles are told of (a test pages nobody).
    """
    try:
        record = msgpack.unpackb(body)
        kind = record["k"]
        if kind in ("raised", "test"):
            site = record["site"]
            return kind, Alert(
                alert_id=record["alert_id"], pressed_at=record["pressed_at"], kind=record["kind"],
                attempt=record["attempt"], button=record["button"], site=Site(**site) if site else None,
                state=record["state"], level=record["level"], cursor=seq, received_at=record["received_at"],
                duplicate_of=record["duplicate_of"]), record["note"]
        if kind == "step":
            return kind, AlertUpdate(
                alert_id=record["alert_id"], state=record["state"], operator=record["operator"],
                note=record["note"], unit=record["unit"], at=record["at"], level=record["level"], cursor=seq,
                outcome=record["outcome"], category=record["category"]), ""
        if kind == "button":
            return kind, ButtonState(button=record["button"], state=record["state"], at=record["at"]), ""
        if kind == "audit":
            return kind, AuditEntry(at=record["at"], operator=record["operator"], action=record["action"],
                                    subject=record["subject"], detail=record["detail"], relay=record["relay"]), ""
    except (ValueError, TypeError, KeyError, msgpack.UnpackException) as error:
        raise BadRecord(f"stream sequence {seq}: not a pinkrelay record ({error})") from None
    raise BadRecord(f"stream sequence {seq}: unknown record kind {kind!r}")
