"""Test mode for maintenance, from the web room: ``POST /api/buttons/{id}/mode`` (supervisors only).

The relay's door (relay/test_presses.py) writes, applies and audits the
change; every open board then gets a ``button-mode`` message, so the map and
the supervisors' maintenance list show which buttons page nobody. An
operator's attempt is refused with 403 and audited.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from ..button_modes import MAX_NOTE_CHARS, MODES
from ..errors import ConfigError
from ..logs import event as log_event

log = logging.getLogger("pinkrelay.web")


async def set_button_mode(relay: Any, body: bytes, button_id: str, operator: str, role: str, where: str,
                          audit: Any) -> tuple[int, dict[str, Any]]:
    """(HTTP status, answer) of a request to change a button's mode."""
    try:
        request = json.loads(body or b"{}")
    except ValueError:
        return 400, {"error": 'the body must be JSON: {"mode": "test" or "live", "note": "..."}'}
    if not isinstance(request, dict):
        return 400, {"error": "the body must be a JSON object"}
    mode, note = request.get("mode"), request.get("note", "")
    if mode not in MODES or not isinstance(note, str) or len(note) > MAX_NOTE_CHARS:
        return 400, {"error": f"mode must be one of {', '.join(MODES)}; note: text of at most {MAX_NOTE_CHARS} "
                              "characters"}
    if button_id not in relay.registry:
        return 404, {"error": f"no button {button_id} in the registry"}
    if role != "supervisor":
        log_event(log, logging.INFO, f"operator {operator} may not set button {button_id} to {mode} mode",
                  operator=operator, button=button_id, decision="refuse")
        await audit(operator, "button-mode-refused", button_id, f"{where}: role {role}")
        return 403, {"error": f"only a supervisor may change a button's mode; {operator} signed in as {role}"}
    try:
        await relay.test_presses.set_mode(button_id, mode, set_by=operator, note=note.strip(), where=where)
    except (ConfigError, OSError) as error:
        return 503, {"error": f"the mode was not changed: {error}"}
    return 200, {"button": button_id, "mode": mode}


def mode_message(button_id: str, change: Any) -> dict[str, Any]:
    return {"type": "button-mode", "button": button_id, "mode": change.mode, "set_by": change.set_by,
            "set_at": change.set_at, "note": change.note}
