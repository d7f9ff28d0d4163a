"""The web control room: a small ASGI application served on the relay's own trio loop.

No framework: the surface is a dozen routes, and owning them keeps every
security decision in one readable file (which route needs a session, which
needs a CSRF token, what a refusal says). Hypercorn's trio worker serves it,
so HTTP, the WebSocket and the relay share one event loop and the board
reads the relay's events directly (``relay.open_event_stream()``).

Routes (everything but the sign-in page, its stylesheet and the icon needs a
session; the board redirects to /signin, everything else answers 401;
tests/test_web_security.py walks the /api/ routes of this table)::

    GET  /                         the board (alerts, map, live streams)
    GET  /reports                  the reports page (response times, outcomes, offline devices)
    GET  /signin, POST /signin     sign-in form (operator name + secret)
    POST /signout                  end the session
    GET  /static/...               HTML/CSS/ES modules shipped in the package
    GET  /api/session              who is signed in, and the CSRF token
    GET  /api/alerts               open alerts, newest first
    GET  /api/sites                every registered button, its site and state
    POST /api/alerts/{id}/actions  {"state": ..., "unit": ..., "note": ...}
    POST /api/plans                {"key": ..., "plan": {...} or null}: a supervisor edits a plan (web/plans.py)
    POST /api/buttons/{id}/mode    {"mode": "test" or "live", "note": ...}: a supervisor's maintenance mode
    GET  /api/alerts/{id}/cap      the alert's latest step as CAP 1.2 XML (pinkrelay/integrations/cap.py)
    GET  /api/integrations         each sink's deliveries, failures and backlog
    GET  /api/reports              ?from=T&to=T[&room=R]: the report of web/reports.py
    GET  /incident, /api/evidence/...  an alert's timeline and recording (web/incident.py)
    WS   /ws                       board events (JSON) and live media (binary); talk-back from the page
                                   (commands and Opus packets, talk.py)

CSRF: the session cookie is SameSite=Strict (a cross-site request does not
carry it), every POST must come from this origin when the browser says where
it comes from (``Origin``), and POSTs made with a session must carry the
session's CSRF token in ``X-CSRF-Token`` (or a ``csrf`` form field).
"""

from __future__ import annotations

import html
import json
import logging
import math
import re
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from importlib import resources
from typing import Any
from urllib.parse import parse_qs

import trio

from ..alerts.journal import JournalError
from ..alerts.lifecycle import LifecycleError
from ..errors import ConfigError
from ..integrations.cap import CONTENT_TYPE as CAP_CONTENT_TYPE
from ..integrations.cap import alert_cap
from ..logs import event as log_event
from ..protocol import Alert, AlertUpdate, ButtonState, Site
from ..relay.alert_desk import SUPERVISOR_ONLY
from .auth import (
    MAX_NAME_LENGTH,
    MAX_SECRET_LENGTH,
    SessionStore,
    SignInThrottle,
    WebSession,
    check_secret,
    parse_cookies,
    tokens_equal,
)
from .asgi import answer_lifespan
from ..relay.evidence.desk import EvidenceStopped
from . import incident
from .live import LiveBridge, Viewer
from .maintenance import mode_message, set_button_mode
from .talk import WebTalk
from .plans import AlertContext
from .reports import report_for

log = logging.getLogger("pinkrelay.web")

COOKIE = "pinkrelay_session"
#: The sign-in page's login-CSRF token (double-submitted: cookie and form field).
SIGNIN_COOKIE = "pinkrelay_signin"
MAX_STREAMS_PER_SOCKET = 16
SWEEP_INTERVAL = 1.0
#: Static files anyone may fetch: what the sign-in page itself needs.
PUBLIC_STATIC = frozenset({"style.css", "favicon.svg"})
CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
}
SECURITY_HEADERS = [
    (
        b"content-security-policy",
        (
            b"default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
            b"connect-src 'self'; media-src 'self' blob:; object-src 'none'; base-uri 'none'; "
            b"form-action 'self'; frame-ancestors 'none'"
        ),
    ),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    # same-origin, not no-referrer: with no-referrer a browser sends "Origin: null" on POSTs.
    (b"referrer-policy", b"same-origin"),
    (b"cache-control", b"no-store"),
]
ACTIONS_PATH = re.compile(r"^/api/alerts/([^/]{1,64})/actions$")
CAP_PATH = re.compile(r"^/api/alerts/([^/]{1,64})/cap$")
MODE_PATH = re.compile(r"^/api/buttons/([^/]{1,64})/mode$")
_CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f]")


def wall_us() -> int:
    return time.time_ns() // 1000


def dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def site_json(site: Site | None) -> dict[str, Any] | None:
    if site is None:
        return None
    return {
        "name": site.name,
        "kind": site.kind,
        "address": site.address,
        "district": site.district,
        "latitude": site.latitude,
        "longitude": site.longitude,
    }


def alert_json(alert: Alert) -> dict[str, Any]:
    return {
        "alert_id": alert.alert_id,
        "button": alert.button,
        "kind": alert.kind,
        "state": alert.state,
        "level": alert.level,
        "pressed_at": alert.pressed_at,
        "received_at": alert.received_at,
        "attempt": alert.attempt,
        "cursor": alert.cursor,
        "duplicate_of": alert.duplicate_of,
        "site": site_json(alert.site),
    }


def update_json(update: AlertUpdate) -> dict[str, Any]:
    return {
        "alert_id": update.alert_id,
        "state": update.state,
        "operator": update.operator,
        "note": update.note,
        "unit": update.unit,
        "at": update.at,
        "level": update.level,
        "cursor": update.cursor,
        "outcome": update.outcome,
        "category": update.category,
    }


@dataclass(slots=True)
class Request:
    scope: dict[str, Any]
    receive: Callable[[], Awaitable[dict[str, Any]]]
    send: Callable[[dict[str, Any]], Awaitable[None]]
    #: Largest request body read (web_max_body_bytes); larger ones get 413.
    max_body: int = 65536

    @property
    def method(self) -> str:
        return self.scope.get("method", "GET")

    @property
    def path(self) -> str:
        return self.scope["path"]

    def header(self, name: str) -> str | None:
        key = name.encode("latin-1")
        for header, value in self.scope.get("headers", ()):
            if header == key:
                return value.decode("latin-1")
        return None

    @property
    def remote(self) -> str:
        client = self.scope.get("client")
        if not client:
            return "?"
        host, port = client[0], client[1]
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    @property
    def remote_host(self) -> str:
        client = self.scope.get("client")
        return client[0] if client else "?"

    @property
    def cookie(self) -> str | None:
        return parse_cookies(self.header("cookie") or "").get(COOKIE)

    def names_its_origin(self) -> bool:
        """A browser names where a state-changing request came from (Origin, or at least Referer).

        One that names neither is refused: a stripped request cannot prove it came from this page.
        """
        return self.header("origin") is not None or self.header("referer") is not None

    def same_origin(self) -> bool:
        """False when the browser names another origin (or an opaque one), in Origin or else in Referer."""
        host = self.header("host") or ""
        ours = (f"http://{host}", f"https://{host}")
        origin = self.header("origin")
        if origin is not None:
            return origin in ours
        referer = self.header("referer")
        return referer is None or any(referer == o or referer.startswith(o + "/") for o in ours)

    @property
    def secure(self) -> bool:
        return self.scope.get("scheme") in ("https", "wss")

    async def body(self) -> bytes:
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await self.receive()
            if message["type"] == "http.disconnect":
                raise _BodyError("client went away")
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                raise _BodyError(f"request body over {self.max_body} bytes (web_max_body_bytes)")
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)


class _BodyError(Exception):
    pass


class _StartedOnce:
    """A task status that a restarted task may report again (only the first counts)."""

    def __init__(self, status: Any) -> None:
        self._status = status
        self._done = False

    def started(self, value: Any = None) -> None:
        if not self._done:
            self._done = True
            self._status.started(value)


def _static_files() -> dict[str, bytes]:
    root = resources.files(__package__).joinpath("static")
    files = {}
    for entry in root.iterdir():
        if entry.is_file() and not entry.name.startswith("."):
            files[entry.name] = entry.read_bytes()
    return files


class ControlRoom:
    """The ASGI application and the tasks behind it (event pump, live bridge, session sweeper)."""

    def __init__(
        self,
        relay: Any,
        *,
        sessions: SessionStore | None = None,
        throttle: SignInThrottle | None = None,
    ) -> None:
        self.relay = relay
        # "is None", not "or": an empty SessionStore is falsy (it has a length).
        self.sessions = sessions if sessions is not None else SessionStore()
        self.throttle = throttle if throttle is not None else SignInThrottle()
        self.static = _static_files()
        self.viewers: dict[Viewer, WebSession] = {}
        self.bridge = LiveBridge(relay, dumps)
        self.scrypt_limiter = trio.CapacityLimiter(2)
        self._pump_runs = 0
        self.url = ""
        #: Action plans and false-alarm counts shown with each alert.
        self.context = AlertContext(relay, wall_us)
        relay.test_presses.on_change.append(lambda button, change: self._tell_boards(mode_message(button, change)))

    # -- background work ------------------------------------------------------------

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Pump relay events to the browsers, keep the live bridge up, expire sessions.

        A bug in any of these must not stop the relay it shares a loop with:
        each is logged and restarted instead of propagating.
        """
        async with trio.open_nursery() as nursery:
            await nursery.start(self._keep_running, "board events", self._pump_events)
            await nursery.start(self._keep_running, "live video", self.bridge.run)
            await nursery.start(self._keep_running, "session expiry", self._sweep)
            task_status.started()

    @staticmethod
    async def _keep_running(name: str, work: Any, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        status = _StartedOnce(task_status)
        while True:
            try:
                await work(task_status=status)
            except Exception:  # logged with its traceback; the relay keeps going
                log.exception("web control room: %s failed; restarting it in 1 s", name)
            status.started()
            await trio.sleep(1.0)

    async def _pump_events(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        async with self.relay.open_event_stream(name="web control room") as events:
            await self.context.load()
            task_status.started()
            self._pump_runs += 1
            if self._pump_runs > 1:  # restarted after a failure: events were missed, so re-read
                for viewer in list(self.viewers):
                    viewer.send_json_text(dumps({"type": "resync"}))
            async for item in events:
                message = self._event_message(item)
                if message is None:
                    continue
                text = dumps(message)
                audience = self.relay.audience(item)
                for viewer, session in list(self.viewers.items()):
                    if audience is not None:
                        if not self.relay.routing.sees(session.recipient, *audience):
                            continue
                        escalated = (self.relay.escalated_alert(item, session.recipient)
                                     if isinstance(item, AlertUpdate) else None)
                        if escalated is not None:  # this escalation brings the alert to this room
                            viewer.send_json_text(dumps({"type": "alert", "alert": self._alert_json(escalated)}))
                    viewer.send_json_text(text)
                counted = self.context.observe(item)
                if counted is not None:
                    self._tell_boards(counted)

    def _tell_boards(self, message: dict[str, Any]) -> None:
        text = dumps(message)
        for viewer in list(self.viewers):
            viewer.send_json_text(text)

    def _alert_json(self, alert: Alert) -> dict[str, Any]:
        data = self.context.extend(alert_json(alert), alert)
        if alert.kind == "mass_outage":
            data["outage"] = self.relay.outages.summary_of(alert.alert_id) or ""
        return data

    async def _open_alerts_for(self, session: WebSession) -> list[Alert]:
        """The open alerts this operator's room sees, newest first."""
        alerts = [a for a in await self.relay.journal.open_alerts()
                  if self.relay.visible_to(session.recipient, a)]
        alerts.sort(key=lambda a: a.received_at, reverse=True)
        return alerts

    def _event_message(self, item: Any) -> dict[str, Any] | None:
        if isinstance(item, Alert):
            return {"type": "alert", "alert": self._alert_json(item)}
        if isinstance(item, AlertUpdate):
            return {"type": "update", "update": update_json(item)}
        if isinstance(item, ButtonState):
            return {"type": "button", "button": item.button, "state": item.state, "at": item.at}
        if isinstance(item, EvidenceStopped):
            return {"type": "evidence-stopped", "alert_id": item.alert_id, "button": item.button,
                    "message": item.message}
        return None

    async def _sweep(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        while True:
            await trio.sleep(SWEEP_INTERVAL)
            self._reload_operators()
            for session in list(self.sessions):
                operator = self.relay.operators.get(session.operator)
                if operator is None or operator.disabled:
                    self.sessions.end(session, "operator account disabled")
                    await self._audit(session.operator, "sign-out", "web",
                                      f"{session.remote}: account disabled, session ended")
            for session in self.sessions.sweep():
                await self._audit(session.operator, "sign-out", "web",
                                  f"{session.remote}: session expired ({session.end_reason})")

    def _reload_operators(self) -> None:
        store = self.relay.operators
        if store.changed():
            try:
                store.load()
            except ConfigError as error:
                log.error("%s (keeping the accounts read before)", error)

    async def _audit(self, operator: str, action: str, subject: str, detail: str = "") -> None:
        try:
            await self.relay.journal.audit(wall_us(), operator, action, subject, detail)
        except JournalError as error:
            log_event(log, logging.ERROR, f"audit entry not stored ({operator} {action} {subject}): {error}",
                      operator=operator, action=action, subject=subject)

    # -- sessions -----------------------------------------------------------------------

    def session_of(self, request: Request) -> WebSession | None:
        session = self.sessions.get(request.cookie)
        if session is None:
            return None
        self._reload_operators()
        operator = self.relay.operators.get(session.operator)
        if operator is None or operator.disabled:
            return None  # refused at once; the sweep ends and audits it within a second
        session.role = operator.role
        session.room = operator.room
        return session

    # -- ASGI -----------------------------------------------------------------------------

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        kind = scope["type"]
        if kind == "lifespan":
            await answer_lifespan(receive, send)
        elif kind == "http":
            request = Request(scope, receive, send, self.relay.config.web_max_body_bytes)
            if self._headers_too_large(request):
                await self._json(request, 431, {"error": "request headers over "
                                 f"{self.relay.config.web_max_header_bytes} bytes (web_max_header_bytes)"})
                return
            try:
                await self._http(request)
            except _BodyError as error:
                await self._json(request, 413, {"error": str(error)})
        elif kind == "websocket":
            request = Request(scope, receive, send)
            if self._headers_too_large(request):
                await self._reject(request, 431, "request headers over "
                                   f"{self.relay.config.web_max_header_bytes} bytes (web_max_header_bytes)")
                return
            await self._websocket(request)

    def _headers_too_large(self, request: Request) -> bool:
        """Hypercorn caps headers that trickle in; this caps those that arrive in one piece too."""
        size = len(request.scope.get("raw_path", b"")) + len(request.scope.get("query_string", b""))
        for name, value in request.scope.get("headers", ()):
            size += len(name) + len(value) + 4
        return size > self.relay.config.web_max_header_bytes

    async def _respond(
        self,
        request: Request,
        status: int,
        body: bytes,
        content_type: str,
        headers: list[tuple[bytes, bytes]] | None = None,
    ) -> None:
        all_headers = [
            (b"content-type", content_type.encode()),
            (b"content-length", str(len(body)).encode()),
            *SECURITY_HEADERS,
            *(headers or []),
        ]
        await request.send({"type": "http.response.start", "status": status, "headers": all_headers})
        await request.send({"type": "http.response.body", "body": body if request.method != "HEAD" else b""})

    async def _json(self, request: Request, status: int, value: Any,
                    headers: list[tuple[bytes, bytes]] | None = None) -> None:
        await self._respond(request, status, dumps(value).encode(), "application/json", headers)

    async def _redirect(self, request: Request, location: str,
                        headers: list[tuple[bytes, bytes]] | None = None) -> None:
        await self._respond(request, 303, b"", "text/plain",
                            [(b"location", location.encode()), *(headers or [])])

    def _cookie(self, request: Request, value: str, *, clear: bool = False) -> tuple[bytes, bytes]:
        parts = [f"{COOKIE}={value}", "Path=/", "HttpOnly", "SameSite=Strict"]
        if request.secure:
            parts.append("Secure")
        if clear:
            parts.append("Max-Age=0")
        return (b"set-cookie", "; ".join(parts).encode())

    async def _http(self, request: Request) -> None:
        path, method = request.path, request.method
        if path == "/signin":
            if method in ("GET", "HEAD"):
                if self.session_of(request) is not None:
                    return await self._redirect(request, "/")
                return await self._signin_page(request, 200)
            if method == "POST":
                return await self._sign_in(request)
            return await self._method_not_allowed(request, "GET, POST")
        if path.startswith("/static/"):
            name = path[len("/static/"):]
            if name in PUBLIC_STATIC:
                return await self._static(request, name)
        session = self.session_of(request)
        if session is None:
            if path.startswith("/api/"):
                return await self._json(request, 401, {"error": "sign in first"})
            if path in ("/", "/reports", "/incident") or path.startswith("/static/"):
                if method in ("GET", "HEAD") and path in ("/", "/reports", "/incident"):
                    return await self._redirect(request, "/signin")
                return await self._respond(request, 401, b"sign in first\n", "text/plain; charset=utf-8")
            return await self._respond(request, 401, b"sign in first\n", "text/plain; charset=utf-8")
        if method == "POST":
            if not request.same_origin() or not request.names_its_origin():
                return await self._json(request, 403, {"error": "cross-origin request refused"})
            token = request.header("x-csrf-token")
            form: dict[str, list[str]] = {}
            if token is None and path == "/signout":
                form = parse_qs((await request.body()).decode("utf-8", "replace"))
                token = (form.get("csrf") or [""])[0]
            if not token or not tokens_equal(token, session.csrf):
                return await self._json(request, 403, {"error": "missing or wrong CSRF token; reload the page"})
        if path == "/":
            if method not in ("GET", "HEAD"):
                return await self._method_not_allowed(request, "GET")
            return await self._static(request, "index.html")
        if path.startswith("/static/"):
            return await self._static(request, path[len("/static/"):])
        if path == "/reports":
            if method not in ("GET", "HEAD"):
                return await self._method_not_allowed(request, "GET")
            return await self._static(request, "reports.html")
        if path == "/api/reports":
            status, answer = await report_for(self.relay, request.scope.get("query_string", b""), session.role,
                                              session.room)
            return await self._json(request, status, answer)
        if path == "/signout":
            if method != "POST":
                return await self._method_not_allowed(request, "POST")
            return await self._sign_out(request, session)
        if path == "/api/session":
            return await self._json(request, 200, {"operator": session.operator, "role": session.role,
                                                   "csrf": session.csrf})
        if path == "/api/alerts":
            alerts = await self._open_alerts_for(session)
            return await self._json(request, 200, {"alerts": [self._alert_json(a) for a in alerts]})
        if path == "/api/sites":
            return await self._json(request, 200, {"sites": self._sites()})
        if path == "/api/integrations":
            sinks = self.relay.integrations.statuses() if self.relay.integrations is not None else []
            return await self._json(request, 200, {"sinks": sinks})
        if path == "/api/plans":
            if method != "POST":
                return await self._method_not_allowed(request, "POST")
            status, answer = await self.context.edit(await request.body(), session.operator, session.role,
                                                     f"web {request.remote}")
            if status == 200:
                self._tell_boards(answer)
            return await self._json(request, status, answer)
        match = MODE_PATH.match(path)
        if match:
            if method != "POST":
                return await self._method_not_allowed(request, "POST")
            status, answer = await set_button_mode(self.relay, await request.body(), match.group(1),
                                                   session.operator, session.role, f"web {request.remote}",
                                                   self._audit)
            return await self._json(request, status, answer)
        if await incident.route(self, request, session):
            return None
        match = CAP_PATH.match(path)
        if match:
            return await self._cap(request, session, match.group(1))
        match = ACTIONS_PATH.match(path)
        if match:
            if method != "POST":
                return await self._method_not_allowed(request, "POST")
            return await self._act(request, session, match.group(1))
        return await self._json(request, 404, {"error": f"no such page: {path}"}) if path.startswith("/api/") \
            else await self._respond(request, 404, b"not found\n", "text/plain; charset=utf-8")

    async def _cap(self, request: Request, session: WebSession, alert_id: str) -> None:
        alert = await self.relay.journal.get(alert_id)
        if alert is None or not self.relay.visible_to(session.recipient, alert):
            return await self._json(request, 404, {"error": f"no alert {alert_id} that you can see"})
        body = await alert_cap(self.relay.journal, alert_id, relay_name=self.relay.config.relay_name)
        await self._respond(request, 200, body or b"", CAP_CONTENT_TYPE)

    async def _method_not_allowed(self, request: Request, allowed: str) -> None:
        await self._respond(request, 405, b"method not allowed\n", "text/plain; charset=utf-8",
                            [(b"allow", allowed.encode())])

    async def _static(self, request: Request, name: str) -> None:
        body = self.static.get(name)
        if body is None or "/" in name:
            return await self._respond(request, 404, b"not found\n", "text/plain; charset=utf-8")
        suffix = name[name.rfind("."):]
        await self._respond(request, 200, body, CONTENT_TYPES.get(suffix, "application/octet-stream"))

    def _sites(self) -> list[dict[str, Any]]:
        online = self.relay.online_buttons()
        modes = self.relay.test_presses.modes
        return [
            {"button": button_id, "site": site_json(button.site),
             "state": "online" if button_id in online else "offline",
             "mode": "test" if modes.in_test(button_id) else "live"}
            for button_id, button in sorted(self.relay.registry.items())
        ]

    # -- sign-in and sign-out ------------------------------------------------------------

    async def _signin_page(self, request: Request, status: int, message: str = "", name: str = "",
                           headers: list[tuple[bytes, bytes]] | None = None) -> None:
        page = self.static["signin.html"].decode()
        page = page.replace("{{message}}", f'<p class="error" role="alert">{html.escape(message)}</p>'
                            if message else "")
        page = page.replace("{{name}}", html.escape(name, quote=True))
        # Login CSRF: the form carries a token that must match this cookie, so another site
        # cannot sign a workstation in to an account of its choosing.
        token = secrets.token_urlsafe(24)
        page = page.replace("{{csrf}}", token)
        cookie = [f"{SIGNIN_COOKIE}={token}", "Path=/signin", "HttpOnly", "SameSite=Strict"]
        if request.secure:
            cookie.append("Secure")
        await self._respond(request, status, page.encode(), "text/html; charset=utf-8",
                            [*(headers or []), (b"set-cookie", "; ".join(cookie).encode())])

    async def _sign_in(self, request: Request) -> None:
        if not request.same_origin() or not request.names_its_origin():
            return await self._signin_page(request, 403, "Sign-in refused: the form came from another site.")
        form = parse_qs((await request.body()).decode("utf-8", "replace"))
        name = (form.get("name") or [""])[0].strip().lower()
        secret = (form.get("secret") or [""])[0]
        expected = parse_cookies(request.header("cookie") or "").get(SIGNIN_COOKIE, "")
        given = (form.get("csrf") or [""])[0]
        if not expected or not given or not tokens_equal(given, expected):
            return await self._signin_page(request, 403, "Sign-in refused: the sign-in page was out of date. "
                                           "Please enter your name and secret again.", name[:64])
        address = request.remote_host
        wait = self.throttle.retry_after(name, address)
        if wait > 0:
            seconds = math.ceil(wait)
            log_event(log, logging.WARNING, f"web sign-in as {name!r} from {request.remote} throttled "
                      f"for {seconds} s", operator=name, peer=request.remote, decision="throttle")
            await self._audit(name, "sign-in-throttled", "web", f"{request.remote}: wait {seconds} s")
            return await self._signin_page(
                request, 429, f"Too many wrong secrets from this workstation. "
                f"Try again in {seconds} s.", name, [(b"retry-after", str(seconds).encode())])
        if not name or not secret or len(name) > MAX_NAME_LENGTH or len(secret) > MAX_SECRET_LENGTH:
            return await self._signin_page(request, 400, "Enter your operator name and secret.", name[:64])
        self._reload_operators()
        operator = self.relay.operators.get(name)
        if not await check_secret(operator, secret, self.scrypt_limiter):
            self.throttle.failed(name, address)
            await self._audit(name, "sign-in-refused", "web", f"{request.remote}: wrong name or secret")
            log_event(log, logging.WARNING, f"web sign-in as {name!r} from {request.remote} refused: wrong "
                      "name or secret", operator=name, peer=request.remote, decision="refuse")
            return await self._signin_page(request, 401, "Wrong operator name or secret.", name)
        assert operator is not None
        if operator.disabled:
            await self._audit(name, "sign-in-refused", "web", f"{request.remote}: account disabled")
            return await self._signin_page(request, 403, "This operator account is disabled.", name)
        self.throttle.succeeded(name, address)
        previous = self.sessions.get(request.cookie, touch=False)
        if previous is not None:  # a new sign-in in this browser replaces its old session
            self.sessions.end(previous, "signed in again")
        session = self.sessions.create(name, operator.role, request.remote, operator.room)
        await self._audit(name, "sign-in", "web", f"{request.remote} ({operator.role})")
        log_event(log, logging.INFO, f"operator {name} ({operator.role}) signed in to the web control room "
                  f"from {request.remote}", operator=name, peer=request.remote)
        await self._redirect(request, "/", [self._cookie(request, session.token)])

    async def _sign_out(self, request: Request, session: WebSession) -> None:
        self.sessions.end(session, "signed out")
        await self._audit(session.operator, "sign-out", "web", f"{request.remote}: signed out")
        await self._redirect(request, "/signin", [self._cookie(request, "", clear=True)])

    # -- alert actions ---------------------------------------------------------------------

    async def _act(self, request: Request, session: WebSession, alert_id: str) -> None:
        try:
            body = json.loads(await request.body() or b"{}")
        except ValueError:
            return await self._json(request, 400, {"error": "the body must be JSON"})
        if not isinstance(body, dict):
            return await self._json(request, 400, {"error": "the body must be a JSON object"})
        state, unit, note = body.get("state"), body.get("unit", ""), body.get("note", "")
        outcome, category = body.get("outcome", ""), body.get("category", "")
        if not all(isinstance(v, str) for v in (state, unit, note, outcome, category)):
            return await self._json(request, 400, {"error": "state, unit, note, outcome and category must be strings"})
        if len(unit) > 64 or _CONTROL_CHARS.search(unit) or len(note) > 1024 or len(state) > 64:
            return await self._json(request, 400, {"error": "unit: at most 64 characters on one line; "
                                                            "note: at most 1024 characters"})
        if state in SUPERVISOR_ONLY and session.role != "supervisor":
            log_event(log, logging.INFO, f"operator {session.operator} may not mark alert {alert_id} {state}",
                      operator=session.operator, alert_id=alert_id, decision="refuse")
            return await self._json(request, 403, {
                "error": f"only a supervisor may mark an alert {state.replace('_', ' ')}; "
                         f"{session.operator} signed in as {session.role}"})
        try:
            if await self.relay.journal.get(alert_id) is None:
                return await self._json(request, 404, {"error": f"no alert {alert_id}"})
            update = await self.relay.act_on_alert(
                alert_id=alert_id, state=state, operator=session.operator, role=session.role,
                console=f"web {request.remote}", unit=unit.strip(), note=note.strip(), room=session.room,
                outcome=outcome.strip(), category=category.strip(),
            )
        except LifecycleError as error:
            return await self._json(request, 409, {"error": str(error)})
        except JournalError as error:
            return await self._json(request, 503, {"error": str(error)})
        except (ValueError, TypeError) as error:
            return await self._json(request, 400, {"error": str(error)})
        await self._json(request, 200, {"update": update_json(update)})

    # -- WebSocket -------------------------------------------------------------------------

    async def _reject(self, request: Request, status: int, message: str) -> None:
        body = dumps({"error": message}).encode()
        await request.send({"type": "websocket.http.response.start", "status": status,
                            "headers": [(b"content-type", b"application/json"),
                                        (b"content-length", str(len(body)).encode()), *SECURITY_HEADERS]})
        await request.send({"type": "websocket.http.response.body", "body": body})

    async def _websocket(self, request: Request) -> None:
        if request.path != "/ws":
            return await self._reject(request, 404, "no such WebSocket")
        session = self.session_of(request)
        if session is None:
            return await self._reject(request, 401, "sign in first")
        if not request.same_origin():
            return await self._reject(request, 403, "cross-origin WebSocket refused")
        message = await request.receive()
        if message["type"] != "websocket.connect":
            return
        limit = self.relay.config.web_max_websockets_per_session
        if session.sockets >= limit:
            log_event(log, logging.WARNING, f"refused a WebSocket of {session.operator}: the session has "
                      f"{limit} open (web_max_websockets_per_session)", operator=session.operator,
                      decision="refuse", reason="websockets_per_session")
            return await self._reject(request, 429, f"this sign-in already has {limit} live connections "
                                      "(web_max_websockets_per_session); close a tab")
        await request.send({"type": "websocket.accept"})
        viewer = Viewer()
        talk = WebTalk(self.relay, viewer, dumps, trio.current_time)
        session.sockets += 1
        self.viewers[viewer] = session
        watching: set[str] = set()
        try:
            alerts = await self._open_alerts_for(session)
            viewer.control.appendleft(dumps({
                "type": "snapshot", "operator": session.operator, "role": session.role, "csrf": session.csrf,
                "now": wall_us(), "alerts": [self._alert_json(a) for a in alerts], "sites": self._sites(),
            }))
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._ws_writer, request, viewer, nursery.cancel_scope)
                nursery.start_soon(self._ws_end_with_session, session, viewer)
                while True:
                    message = await request.receive()
                    if message["type"] == "websocket.disconnect":
                        break
                    if message["type"] == "websocket.receive" and message.get("text"):
                        await self._ws_command(request, session, viewer, watching, message["text"], talk)
                    elif message["type"] == "websocket.receive" and message.get("bytes"):
                        if not session.ended.is_set():
                            await talk.packet(message["bytes"])
                nursery.cancel_scope.cancel()
        finally:
            with trio.CancelScope(shield=True):
                await talk.stop("the operator's page closed")
            self.viewers.pop(viewer, None)
            self.bridge.drop(viewer)
            session.sockets -= 1
            session.last_seen = self.sessions.clock()

    async def _ws_writer(self, request: Request, viewer: Viewer, scope: trio.CancelScope) -> None:
        while True:
            item = await viewer.next_message()
            try:
                if isinstance(item, tuple):
                    code, reason = item
                    await request.send({"type": "websocket.close", "code": code, "reason": reason})
                    scope.cancel()
                    return
                if isinstance(item, str):
                    await request.send({"type": "websocket.send", "text": item})
                else:
                    await request.send({"type": "websocket.send", "bytes": item})
            except OSError as error:  # ASGI: the peer went away; the reader sees the disconnect
                log.debug("web socket send failed: %s", error)
                scope.cancel()
                return

    @staticmethod
    async def _ws_end_with_session(session: WebSession, viewer: Viewer) -> None:
        await session.ended.wait()
        viewer.close(4401, f"session ended: {session.end_reason}"[:120])

    async def _ws_command(self, request: Request, session: WebSession, viewer: Viewer,
                          watching: set[str], text: str, talk: WebTalk) -> None:
        if session.ended.is_set():
            return
        try:
            command = json.loads(text)
            kind, button = command.get("type"), command.get("button", "")
        except (ValueError, AttributeError):
            viewer.send_json_text(dumps({"type": "error", "message": "commands are JSON objects"}))
            return
        if not isinstance(button, str):
            return
        if kind == "watch":
            if button not in self.relay.registry:
                viewer.send_json_text(dumps({"type": "error", "message": f"no button {button} in the registry"}))
                return
            if button in watching:
                return
            if len(watching) >= MAX_STREAMS_PER_SOCKET:
                viewer.send_json_text(dumps({"type": "error", "message":
                                             f"at most {MAX_STREAMS_PER_SOCKET} streams at once; close one"}))
                return
            watching.add(button)
            await self._audit(session.operator, "watch", button, request.remote)
            log_event(log, logging.INFO, f"operator {session.operator} watching button {button} in the web "
                      f"control room from {request.remote}", operator=session.operator, button=button,
                      peer=request.remote, action="watch")
            self.bridge.watch(button, viewer)
        elif kind == "unwatch":
            watching.discard(button)
            self.bridge.unwatch(button, viewer)
        elif kind == "keyframe":
            if button in watching:
                self.bridge.request_keyframe(button)
        elif kind == "ping":
            viewer.send_json_text(dumps({"type": "pong", "now": wall_us()}))
        elif kind == "talk-start":
            await talk.start(session, button, request.remote)
        elif kind == "talk-stop":
            await talk.stop("released")

