"""The incident page's routes: an alert's timeline, its recording in the browser, and who looked.

    GET /incident?alert=ID             the page (static incident.html; without ?alert, the list)
    GET /api/evidence                  recordings the session may see, newest first
    GET /api/evidence/{id}             the alert, its timeline, the recording's parts, gaps, integrity, hold
    GET /api/evidence/{id}/video       the recording as one MP4, with HTTP ranges (seeking)
    GET /api/evidence/{id}/download    the same as an attachment: supervisors and investigators only
    POST /api/evidence/record          {"button": ID}: a supervisor records a live stream (no alert needed)
    POST /api/evidence/{id}/stop       a supervisor ends a recording started that way

Who may see a recording: supervisors and investigators every one; an
operator only those of alerts their room sees (alerts/routing.py). A refusal
is 403 and is audited (``evidence-refused``), as is every view
(``evidence-view``), every video request (``evidence-play`` from the start,
``evidence-seek`` with the byte range asked for) and every download
(``evidence-download``): who, which alert, from which address.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import trio

from ..ids import uuid7
from ..relay.evidence.desk import MANUAL
from ..relay.evidence.store import EvidenceError

EVIDENCE_PATH = re.compile(r"^/api/evidence/([^/]{1,128})(/video|/download)?$")
STOP_PATH = re.compile(r"^/api/evidence/([^/]{1,128})/stop$")
#: Roles that see every recording, whatever room the alert belongs to.
ALL_RECORDINGS = frozenset({"supervisor", "investigator"})
#: Largest body of one ranged answer; the browser asks again for the rest.
RANGE_CHUNK = 4 * 1024 * 1024
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")
TIMELINE_SQL = ("SELECT cursor, kind, state, level, operator, console, unit, note, at FROM events "
                "WHERE alert_id = ? ORDER BY cursor")


def may_see(relay: Any, session: Any, alert: Any) -> bool:
    return session.role in ALL_RECORDINGS or relay.visible_to(session.recipient, alert)


async def route(room: Any, request: Any, session: Any) -> bool:
    """Answer ``request`` if it is one of this module's; False if it is not."""
    path = request.path
    if path == "/incident":
        await room._static(request, "incident.html")
        return True
    if path == "/api/evidence":
        await _list(room, request, session)
        return True
    if path == "/api/evidence/record" or STOP_PATH.match(path):
        if request.method != "POST":
            await room._method_not_allowed(request, "POST")
            return True
        status, answer = await _record_action(room, request, session)
        await room._json(request, status, answer)
        return True
    match = EVIDENCE_PATH.match(path)
    if not match:
        return False
    if request.method not in ("GET", "HEAD"):
        await room._method_not_allowed(request, "GET")
        return True
    alert_id, what = match.group(1), match.group(2) or ""
    relay = room.relay
    store = relay.evidence.store
    alert = await relay.journal.get(alert_id)
    try:
        manifest = store.manifest(alert_id)
    except EvidenceError:
        manifest = None
    if manifest is None or (alert is None and not manifest.data["reason"].startswith(MANUAL)):
        await room._json(request, 404, {"error": f"no recording of alert {alert_id}"})
        return True
    if alert is None:  # a supervisor's recording of a live stream: no alert, no room to see it by
        alert = _StandIn(alert_id, manifest.data["button"])
    where = request.remote
    if not may_see_recording(relay, session, alert) or (what == "/download" and session.role not in ALL_RECORDINGS):
        await room._audit(session.operator, "evidence-refused", alert_id, f"{where}: {what or 'view'} as "
                          f"{session.role} of room {session.room}")
        reason = ("downloads are for supervisors and investigators" if what == "/download" and
                  may_see_recording(relay, session, alert) else
                  f"the recording of alert {alert_id} belongs to {', '.join(relay._rooms(alert.button))}, "
                  f"not to room {session.room}")
        await room._json(request, 403, {"error": reason})
        return True
    if what == "":
        await room._audit(session.operator, "evidence-view", alert_id, where)
        await room._json(request, 200, await _details(relay, session, alert, manifest))
        return True
    try:
        movie = await trio.to_thread.run_sync(store.playable, alert_id)
    except (EvidenceError, OSError, ValueError) as error:
        await room._json(request, 500, {"error": f"the recording of alert {alert_id} cannot be played: {error}"})
        return True
    await _send_file(room, request, session, alert_id, movie, attachment=what == "/download")
    return True


class _StandIn:
    """What the checks and the details need of an alert, for a recording that has none."""

    def __init__(self, alert_id: str, button: str) -> None:
        self.alert_id, self.button = alert_id, button
        self.kind, self.state, self.level, self.pressed_at, self.received_at = "record action", "", 0, 0, 0
        self.site = None


def may_see_recording(relay: Any, session: Any, alert: Any) -> bool:
    return may_see(relay, session, alert) if not isinstance(alert, _StandIn) else session.role in ALL_RECORDINGS


async def _record_action(room: Any, request: Any, session: Any) -> tuple[int, dict[str, Any]]:
    """A supervisor starts or stops a recording of a live stream; refusals are audited like the rest."""
    relay, where = room.relay, request.remote
    stop = STOP_PATH.match(request.path)
    subject = stop.group(1) if stop else ""
    if not stop:
        try:
            body = json.loads(await request.body() or b"{}")
        except ValueError:
            return 400, {"error": 'the body must be JSON: {"button": "BUTTON_ID"}'}
        subject = body.get("button") if isinstance(body, dict) else None
        if not isinstance(subject, str) or subject not in relay.registry:
            return 400, {"error": f"no button {subject!r} in the registry; send {{\"button\": \"BUTTON_ID\"}}"}
    if session.role != "supervisor":
        await room._audit(session.operator, "evidence-record-refused", subject, f"{where}: role {session.role}")
        return 403, {"error": f"starting or stopping a recording needs a supervisor; {session.operator} is "
                              f"{session.role}"}
    desk = relay.evidence
    if stop:
        recording = desk.recordings.get(subject)
        if recording is None:
            return 404, {"error": f"no recording {subject} under way"}
        desk.stop(recording, f"stopped by {session.operator}")
        await room._audit(session.operator, "evidence-record-stop", subject, where)
        return 200, {"recording": subject, "state": "stopping"}
    current = next(iter(desk.recordings_of(subject)), None)
    if current is not None:
        return 409, {"error": f"button {subject} is already being recorded ({current.alert_id})",
                     "recording": current.alert_id}
    stream = relay.hub.streams.get(subject)
    if stream is None or not stream.tracks:
        return 409, {"error": f"button {subject} is not streaming now; nothing to record"}
    recording_id = f"rec-{uuid7()}"
    desk.start(recording_id, subject, reason=f"{MANUAL} by {session.operator}")
    await room._audit(session.operator, "evidence-record", recording_id, f"{where}: button {subject}")
    return 200, {"recording": recording_id}


async def _list(room: Any, request: Any, session: Any) -> None:
    relay = room.relay
    listed = []
    for manifest in reversed(relay.evidence.store.recordings()):
        alert = relay.alert_index.get(manifest.data["alert_id"]) or await relay.journal.get(manifest.data["alert_id"])
        if alert is None:
            alert = _StandIn(manifest.data["alert_id"], manifest.data["button"])
        if not may_see_recording(relay, session, alert):
            continue
        listed.append(_summary(manifest) | {"site": alert.site.name if alert.site else ""})
    await room._json(request, 200, {"recordings": listed[:500]})


def _summary(manifest: Any) -> dict[str, Any]:
    data = manifest.data
    segments = manifest.segments
    return {
        "alert_id": data["alert_id"], "button": data["button"], "state": data["state"],
        "stop_reason": data["stop_reason"], "started_at": data["started_at"], "ended_at": data.get("ended_at"),
        "seconds": (segments[-1]["end_us"] - segments[0]["start_us"]) / 1e6 if segments else 0.0,
        "segments": len(segments),
    }


async def _details(relay: Any, session: Any, alert: Any, manifest: Any) -> dict[str, Any]:
    store = relay.evidence.store
    alert_id = alert.alert_id
    rows = await relay.journal.execute(lambda conn: conn.execute(TIMELINE_SQL, (alert_id,)).fetchall())
    verdict = await trio.to_thread.run_sync(store.verify, alert_id)
    data = manifest.data
    pre_roll = ((data["press_us"] - data["origin_us"]) / 1e6
                if data.get("press_us") and data.get("origin_us") else None)
    return {
        "alert": {"alert_id": alert_id, "button": alert.button, "kind": alert.kind, "state": alert.state,
                  "level": alert.level, "pressed_at": alert.pressed_at, "received_at": alert.received_at,
                  "site": alert.site.name if alert.site else ""},
        "timeline": [dict(zip(("cursor", "kind", "state", "level", "operator", "console", "unit", "note", "at"),
                              row, strict=True)) for row in rows],
        "recording": _summary(manifest) | {
            "press_offset_seconds": pre_roll,
            "parts": [{"part": p["part"], "reason": p["reason"], "started_at": p["started_at"]}
                      for p in data["parts"]],
            "gaps": data["gaps"],
        },
        "integrity": {"ok": verdict.ok, "signed": verdict.signed, "problems": verdict.problems,
                      "gaps": verdict.gaps},
        "hold": store.hold(alert_id),
        "may_download": session.role in ALL_RECORDINGS,
    }


async def _send_file(room: Any, request: Any, session: Any, alert_id: str, path: Path, *, attachment: bool) -> None:
    size = path.stat().st_size
    start, end, status = 0, size - 1, 200
    asked = request.header("range")
    if asked and not attachment:
        match = _RANGE.match(asked.strip())
        if not match or (not match.group(1) and not match.group(2)):
            await room._respond(request, 416, b"", "text/plain", [(b"content-range", f"bytes */{size}".encode())])
            return
        if match.group(1):
            start = int(match.group(1))
            end = min(int(match.group(2)), size - 1) if match.group(2) else size - 1
        else:
            start = max(0, size - int(match.group(2)))
        if start >= size or start > end:
            await room._respond(request, 416, b"", "text/plain", [(b"content-range", f"bytes */{size}".encode())])
            return
        end = min(end, start + RANGE_CHUNK - 1)
        status = 206
    action = "evidence-download" if attachment else ("evidence-seek" if start > 0 else "evidence-play")
    await room._audit(session.operator, action, alert_id, f"{request.remote}: bytes {start}-{end} of {size}")
    from .app import SECURITY_HEADERS  # app imports this module

    headers = [(b"content-type", b"video/mp4"), (b"content-length", str(end - start + 1).encode()),
               (b"accept-ranges", b"bytes"), *SECURITY_HEADERS]
    if status == 206:
        headers.append((b"content-range", f"bytes {start}-{end}/{size}".encode()))
    if attachment:
        headers.append((b"content-disposition", f'attachment; filename="{alert_id}.mp4"'.encode()))
    await request.send({"type": "http.response.start", "status": status, "headers": headers})
    if request.method == "HEAD":
        await request.send({"type": "http.response.body", "body": b""})
        return
    # In pieces, so a long recording is never read into memory whole.
    position = start
    while True:
        length = min(RANGE_CHUNK, end + 1 - position)
        body = await trio.to_thread.run_sync(_read, path, position, length)
        position += len(body)
        more = position <= end and bool(body)
        await request.send({"type": "http.response.body", "body": body, "more_body": more})
        if not more:
            return


def _read(path: Path, start: int, length: int) -> bytes:
    with open(path, "rb") as handle:
        handle.seek(start)
        return handle.read(length)


