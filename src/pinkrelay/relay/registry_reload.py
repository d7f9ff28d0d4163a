"""Reloading the button registry while the relay runs (SIGHUP, ``pinkrelay registry reload``).

A reload reads the registry file again and checks all of it before anything
changes: an invalid or empty file leaves the loaded registry in place, and
the refusal is logged (every problem, with file and line) and audited. A
valid one replaces the registry at once. Buttons removed from it or marked
``disabled`` lose their session with a fatal ``auth`` error saying so;
added buttons and changed sites are told to the consoles as a
``button_state``; every other session (streams included) is left alone. A
changed secret takes effect at the button's next handshake.

The outcome is also written to ``DATA_DIR/registry-reload.json`` so that
``pinkrelay registry reload``, which only sends SIGHUP, can say what happened.
This module owns those decisions; ``Relay.reload_registry`` only calls it.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..alerts.journal import JournalError
from ..errors import AuthenticationFailed, RegistryError
from ..logs import event as log_event
from ..registry import Registry, load_registry
from .sessions import wall_us

if TYPE_CHECKING:
    from .server import Relay

log = logging.getLogger("pinkrelay.relay")

#: Where the relay writes the outcome of its last reload, in its data directory.
STATUS_FILE = "registry-reload.json"


@dataclass(frozen=True, slots=True)
class RegistryChange:
    """What a reload changed, by button id."""

    added: tuple[str, ...]
    removed: tuple[str, ...]
    disabled: tuple[str, ...]
    changed: tuple[str, ...]
    total: int

    def summary(self) -> str:
        return (f"{self.total} buttons: {len(self.added)} added, {len(self.removed)} removed, "
                f"{len(self.disabled)} disabled, {len(self.changed)} changed")


def diff(old: Registry, new: Registry) -> RegistryChange:
    """Compare two registries: ``disabled`` are buttons gone from ``new`` because marked so."""
    gone = [button_id for button_id in old if button_id not in new]
    return RegistryChange(
        added=tuple(button_id for button_id in new if button_id not in old),
        removed=tuple(button_id for button_id in gone if button_id not in new.disabled),
        disabled=tuple(button_id for button_id in gone if button_id in new.disabled),
        changed=tuple(button_id for button_id in new if button_id in old and new[button_id] != old[button_id]),
        total=len(new),
    )


def registry_path(relay: Relay) -> Path | None:
    """The file the relay's registry comes from, as at start (``--registry`` or ``DATA_DIR/registry.csv``)."""
    if relay.config.registry is not None:
        return Path(relay.config.registry)
    default = relay.config.data_dir / "registry.csv"
    return default if default.exists() else None


async def reload_registry(relay: Relay, *, requested_by: str) -> RegistryChange | None:
    """Reload the registry file into ``relay``; None (and the old registry kept) if it is invalid."""
    path = registry_path(relay)
    try:
        if path is None:
            raise RegistryError(f"no registry file to reload (give --registry FILE or create "
                                f"{relay.config.data_dir / 'registry.csv'})")
        new = load_registry(path)
        if not new and relay.registry:
            raise RegistryError(f"registry {path} lists no enabled button; refusing to disconnect all "
                                f"{len(relay.registry)}")
    except RegistryError as error:
        reason = f"registry reload refused: {error}; keeping the {len(relay.registry)} buttons loaded before"
        log_event(log, logging.ERROR, reason, action="registry-reload", decision="refused",
                  requested_by=requested_by)
        await _audit(relay, requested_by, "registry-reload-refused", str(path or ""), str(error))
        _write_status(relay, ok=False, message=reason)
        return None
    change = diff(relay.registry, new)
    relay.registry = new
    for button_id in change.removed + change.disabled:
        _end_button(relay, button_id, "disabled in" if button_id in change.disabled else "removed from")
    online = relay.supervisor.online
    for button_id in change.added + change.changed:
        relay._button_state(button_id, "online" if button_id in online else "offline")
    message = f"registry reloaded from {path}: {change.summary()}"
    log_event(log, logging.WARNING if change.removed or change.disabled else logging.INFO,
              message + "".join(f"; {name}: {', '.join(ids)}" for name, ids in
                                (("added", change.added), ("removed", change.removed),
                                 ("disabled", change.disabled), ("changed", change.changed)) if ids),
              action="registry-reload", decision="applied", requested_by=requested_by)
    await _audit(relay, requested_by, "registry-reload", str(path), change.summary())
    _write_status(relay, ok=True, message=message)
    return change


def _end_button(relay: Relay, button_id: str, how: str) -> None:
    """A button no longer registered: forget its presence and end its session with a clear error."""
    relay.supervisor.forget(button_id)
    session = relay.sessions_by_button.get(button_id)
    if session is None:
        return
    reason = f"button {button_id} was {how} the registry"
    error = AuthenticationFailed(f"{reason}; session ended", public_reason=f"{reason}; ask the operator to re-register it")
    # Not counted as an authentication failure: the relay ends the session, nobody failed to sign in.
    log_event(log, logging.WARNING, f"ending the session of button {button_id} ({session.peer}): {reason}",
              decision="disconnect", button=button_id, peer=session.peer, reason="registry-reload")
    session.refuse(error)


async def _audit(relay: Relay, requested_by: str, action: str, subject: str, detail: str) -> None:
    try:
        await relay.journal.audit(wall_us(), requested_by, action, subject, detail)
    except JournalError as error:
        log.error("audit entry not stored (%s %s): %s", action, subject, error)


def _write_status(relay: Relay, *, ok: bool, message: str) -> None:
    """Leave the outcome where ``pinkrelay registry reload`` looks (written whole, then renamed)."""
    path = relay.config.data_dir / STATUS_FILE
    temporary = path.with_suffix(".tmp")
    try:
        temporary.write_text(json.dumps({"at": wall_us(), "ok": ok, "message": message}) + "\n")
        os.replace(temporary, path)
    except OSError as error:
        log.error("reload outcome not written to %s: %s", path, error)
