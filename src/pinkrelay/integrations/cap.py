"""CAP 1.2 (OASIS Common Alerting Protocol) XML for one alert step.

The first step of an alert is a CAP ``Alert``; later steps are ``Update``
messages that reference it, a false alarm is a ``Cancel``. The identifier of
each message is ``pinkrelay-<relay>-<alert id>-<cursor>``, so every step has
its own and a retry of one step sends the same. Built with the standard
library's ElementTree (no dependency); tests/data/CAP-v1.2.xsd checks it.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import datetime, timezone
from typing import Any

from .outbox import Delivery, latest_step

NAMESPACE = "urn:oasis:names:tc:emergency:cap:1.2"
CONTENT_TYPE = "application/cap+xml"


def _time(at_us: int) -> str:
    """CAP's dateTime: seconds and a numeric offset, never 'Z' or fractions."""
    return datetime.fromtimestamp(at_us // 1_000_000, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S+00:00")


def _identifier(relay_name: str, alert_id: str, cursor: int) -> str:
    return f"pinkrelay-{relay_name}-{alert_id}-{cursor}"


def _add(parent: ET.Element, name: str, text: str) -> ET.Element:
    element = ET.SubElement(parent, f"{{{NAMESPACE}}}{name}")
    element.text = text
    return element


def _pair(parent: ET.Element, name: str, value_name: str, value: str) -> None:
    element = ET.SubElement(parent, f"{{{NAMESPACE}}}{name}")
    _add(element, "valueName", value_name)
    _add(element, "value", value)


def cap_xml(delivery: Delivery, *, relay_name: str) -> bytes:
    """The CAP 1.2 message of one step."""
    first_cursor = delivery.first_cursor
    offline = delivery.alert_kind == "offline"
    # A press of a button in test mode (relay/test_presses.py): one message, marked Test.
    test = delivery.step == "test"
    first = test or (delivery.step in ("raised", "duplicate") and delivery.cursor == first_cursor)
    closing = delivery.state in ("resolved", "false_alarm")
    sender = f"pinkrelay@{relay_name}"
    ET.register_namespace("", NAMESPACE)
    root = ET.Element(f"{{{NAMESPACE}}}alert")
    _add(root, "identifier", _identifier(relay_name, delivery.alert_id, delivery.cursor))
    _add(root, "sender", sender)
    _add(root, "sent", _time(delivery.at or delivery.received_at))
    _add(root, "status", "Test" if test else "Actual")
    _add(root, "msgType", "Alert" if first else ("Cancel" if delivery.state == "false_alarm" else "Update"))
    _add(root, "scope", "Restricted")
    _add(root, "restriction", "For the control room and the units it dispatches")
    if delivery.note:
        _add(root, "note", delivery.note)
    if not first:
        _add(root, "references", f"{sender},{_identifier(relay_name, delivery.alert_id, first_cursor)},"
                                 f"{_time(delivery.received_at)}")
    _add(root, "incidents", delivery.alert_id)
    info = ET.SubElement(root, f"{{{NAMESPACE}}}info")
    _add(info, "language", "en")
    _add(info, "category", "Safety" if offline else "Security")
    _add(info, "event", "Panic button offline" if offline else "Panic button pressed")
    _add(info, "responseType", "AllClear" if closing else ("Assess" if offline else "Execute"))
    _add(info, "urgency", "Past" if closing else ("Expected" if offline else "Immediate"))
    _add(info, "severity", "Minor" if closing else ("Moderate" if offline else "Severe"))
    _add(info, "certainty", "Observed")
    _pair(info, "eventCode", "pinkrelay-state", delivery.state)
    _add(info, "senderName", f"pinkrelay relay {relay_name}")
    site = delivery.site
    where = site.name if site is not None else f"button {delivery.button}"
    _add(info, "headline", f"{'Button offline' if offline else 'Panic alert'} at {where}: {delivery.state}")
    description = f"Button {delivery.button} ({where}); state {delivery.state}, escalation level {delivery.level}"
    if delivery.operator:
        description += f"; by operator {delivery.operator}"
    if delivery.unit:
        description += f"; unit {delivery.unit}"
    _add(info, "description", description + ".")
    for name, value in (("alert_id", delivery.alert_id), ("button", delivery.button),
                        ("step", delivery.step), ("level", str(delivery.level)), ("unit", delivery.unit),
                        ("duplicate_of", delivery.duplicate_of)):
        if value:
            _pair(info, "parameter", name, value)
    if site is not None:
        area = ET.SubElement(info, f"{{{NAMESPACE}}}area")
        _add(area, "areaDesc", ", ".join(part for part in (site.name, site.address, site.district) if part))
        _add(area, "circle", f"{site.latitude:.6f},{site.longitude:.6f} 0.1")
    return ET.tostring(root, encoding="utf-8", xml_declaration=True)


async def alert_cap(journal: Any, alert_id: str, *, relay_name: str) -> bytes | None:
    """CAP 1.2 XML of an alert's most recent step, read from the journal; None for an unknown alert."""
    step = await latest_step(journal, alert_id)
    return None if step is None else cap_xml(step, relay_name=relay_name)
