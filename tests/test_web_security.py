"""The web control room's doors, without a browser: sessions, sign-in throttling, roles, CSRF, audit.

Everything runs against the real relay and the real Hypercorn server on
127.0.0.1 (free ports): HTTP through httpx, the WebSocket through wsproto on
a trio socket.
"""

from __future__ import annotations

import re
import shutil
import sqlite3
import ssl
import struct
import subprocess
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
import trio
from trio.testing import trio_test
from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Ping,
    RejectConnection,
    Request,
    TextMessage,
)

import pinkrelay
import pinkrelay.web
from pinkrelay.media import encode_clip
from pinkrelay.operators import OperatorStore
from pinkrelay.protocol import Site
from pinkrelay.web import ControlRoom, SessionStore, SignInThrottle, serve_web
from pinkrelay.web import app as web_app
from pinkrelay.web.live import FLAG_AUDIO, FLAG_CATCHUP, FLAG_KEYFRAME, HEADER

from relay_helpers import (
    button_client,
    make_registry,
    post_sign_in,
    relay_config,
    running_relay,
    secret_for,
    stream_clip,
)

OPERATOR, OPERATOR_SECRET = "asma", "asma-secret-for-tests-1"
SUPERVISOR, SUPERVISOR_SECRET = "saima", "saima-secret-for-tests-2"
WEB_STATIC = Path(pinkrelay.web.__file__).parent / "static"
#: What the sign-in page needs before anyone has signed in; nothing else may be public.
SIGN_IN_PAGE_NEEDS = {"style.css", "favicon.svg"}


@asynccontextmanager
async def web_room(
    data_dir: Path, *, sessions: SessionStore | None = None, registry: pinkrelay.Registry | None = None
) -> AsyncIterator[tuple[Any, Any]]:
    """A real relay (6 test buttons, or ``registry``) and its control room; ``sessions`` sets its clock."""
    store = OperatorStore.in_data_dir(data_dir)
    store.add(OPERATOR, "operator", secret=OPERATOR_SECRET)
    store.add(SUPERVISOR, "supervisor", secret=SUPERVISOR_SECRET)
    relay_cm = (pinkrelay.open_relay(relay_config(data_dir), registry=registry) if registry is not None
                else running_relay(data_dir, 6))
    async with relay_cm as relay, trio.open_nursery() as nursery:
        control_room = ControlRoom(relay, sessions=sessions) if sessions is not None else None
        room = await nursery.start(partial(serve_web, relay, pinkrelay.Address("127.0.0.1", 0), room=control_room))
        try:
            yield relay, room
        finally:
            nursery.cancel_scope.cancel()


def client(room: Any, source: str | None = None) -> httpx.AsyncClient:
    """A client that sends Origin as a browser does (from the loopback address ``source``, if given)."""
    transport = httpx.AsyncHTTPTransport(local_address=source) if source else None
    return httpx.AsyncClient(base_url=room.url, timeout=10.0, headers={"origin": room.url.rstrip("/")},
                             transport=transport)


async def sign_in(http: httpx.AsyncClient, name: str = OPERATOR, secret: str = OPERATOR_SECRET) -> str:
    """Sign in; returns the CSRF token (the cookie stays in the client)."""
    response = await post_sign_in(http, name, secret)
    assert response.status_code == 303, response.text
    session = await http.get("/api/session")
    assert session.status_code == 200
    return session.json()["csrf"]


def audit_rows(data_dir: Path, action: str | None = None) -> list[tuple[str, str, str, str]]:
    with sqlite3.connect(data_dir / "journal.sqlite3") as conn:
        rows = conn.execute("SELECT operator, action, subject, detail FROM audit ORDER BY at").fetchall()
    return [row for row in rows if action is None or row[1] == action]


class WebSocket:
    """A minimal WebSocket client over a trio socket (wsproto)."""

    def __init__(self, stream: trio.SocketStream, ws: WSConnection) -> None:
        self.stream, self.ws = stream, ws
        self.pending: list[Any] = []
        self._text: list[str] = []
        self._bytes: list[bytes] = []

    @classmethod
    async def open(cls, url: str, cookie: str | None, origin: str | None = None) -> tuple[int, WebSocket]:
        parts = urlsplit(url)
        stream = await trio.open_tcp_stream(parts.hostname, parts.port)
        ws = WSConnection(ConnectionType.CLIENT)
        headers = []
        if cookie:
            headers.append((b"cookie", f"pinkrelay_session={cookie}".encode()))
        if origin:
            headers.append((b"origin", origin.encode()))
        await stream.send_all(ws.send(Request(host=parts.netloc, target="/ws", extra_headers=headers)))
        socket = cls(stream, ws)
        while True:
            for event in await socket._events():
                if isinstance(event, AcceptConnection):
                    return 101, socket
                if isinstance(event, RejectConnection):
                    return event.status_code, socket

    async def _events(self) -> list[Any]:
        data = await self.stream.receive_some(65536)
        self.ws.receive_data(data or None)
        return list(self.ws.events())

    async def next(self, timeout: float = 5.0) -> Any:
        """The next whole message (str or bytes), or a CloseConnection."""
        with trio.fail_after(timeout):
            while True:
                while self.pending:
                    event = self.pending.pop(0)
                    if isinstance(event, TextMessage):
                        self._text.append(event.data)
                        if event.message_finished:
                            text, self._text = "".join(self._text), []
                            return text
                    elif isinstance(event, BytesMessage):
                        self._bytes.append(bytes(event.data))
                        if event.message_finished:
                            data, self._bytes = b"".join(self._bytes), []
                            return data
                    elif isinstance(event, Ping):
                        await self.stream.send_all(self.ws.send(event.response()))
                    elif isinstance(event, CloseConnection):
                        return event
                self.pending.extend(await self._events())

    async def send_json(self, text: str) -> None:
        await self.stream.send_all(self.ws.send(TextMessage(data=text)))

    async def aclose(self) -> None:
        await self.stream.aclose()


def cookie_of(http: httpx.AsyncClient) -> str:
    return http.cookies["pinkrelay_session"]


def documented_api_paths(alert_id: str) -> list[str]:
    """Every /api/ route in the route table of pinkrelay/web/app.py's docstring, {id} filled in."""
    paths = re.findall(r"^ {4}(?:GET|POST) +(/api/\S+)", web_app.__doc__ or "", re.MULTILINE)
    assert len(paths) >= 4, f"the route table in pinkrelay/web/app.py's docstring lost its API routes: {paths}"
    return [path.replace("{id}", alert_id) for path in paths]


@trio_test
async def test_without_a_session_every_page_api_and_websocket_is_refused(tmp_path):
    async with web_room(tmp_path) as (relay, room), client(room) as http, trio.open_nursery() as nursery:
        button = button_client(relay, "kp-test-001")
        await nursery.start(button.run)
        alert_id = (await button.press()).alert_id  # a real alert: "refused" must not be "no such alert"
        response = await http.get("/")
        assert response.status_code == 303 and response.headers["location"] == "/signin"
        assert (await http.head("/")).status_code == 303
        assert (await http.post("/")).status_code == 401
        static = sorted(path.name for path in WEB_STATIC.iterdir() if path.is_file())
        assert {"index.html", "app.js", "board.js", "live.js", "map.js"} <= set(static), static
        public = set()
        for name in static:
            response = await http.get(f"/static/{name}")
            if response.status_code == 200:
                public.add(name)
                continue
            assert (response.status_code, response.text) == (401, "sign in first\n"), name
        assert public == SIGN_IN_PAGE_NEEDS, "only what the sign-in page itself needs is public"
        api = [*documented_api_paths(alert_id), "/api/nothing"]
        for token in (None, "a-made-up-session-token"):
            if token is not None:
                http.cookies.set("pinkrelay_session", token)
            for path in api:
                for method in ("GET", "POST"):
                    body = {"json": {"state": "acknowledged"}} if method == "POST" else {}
                    response = await http.request(method, path, **body)
                    assert response.status_code == 401, (token, method, path)
                    assert response.json() == {"error": "sign in first"}
            status, socket = await WebSocket.open(room.url, token)
            assert status == 401, token
            await socket.aclose()
        assert (await relay.journal.get(alert_id)).state == "raised", "no refused action reached the alert"
        http.cookies.clear()
        assert (await http.post("/signout")).status_code == 401
        for path in ("/ws", "/nothing", "/static/", "/static/no-such-file.js"):
            assert (await http.get(path)).status_code == 401, path
        assert (await http.get("/signin")).status_code == 200
        nursery.cancel_scope.cancel()


async def wait_for_audit(data_dir: Path, action: str, detail: str, timeout: float = 3.0) -> None:
    with trio.fail_after(timeout):
        while not any(detail in row[3] for row in audit_rows(data_dir, action)):
            await trio.sleep(0.05)


@trio_test
async def test_an_expired_session_is_refused_everywhere_and_its_open_board_closed(tmp_path):
    """Idle expiry and the end of a shift, end to end, on the control room's own session clock."""
    now = [50_000.0]
    sessions = SessionStore(clock=lambda: now[0])  # the defaults: 8 h lifetime, 30 min idle
    async with web_room(tmp_path, sessions=sessions) as (_relay, room), client(room) as board, \
            client(room) as idle:
        await sign_in(board)
        await sign_in(idle)
        status, socket = await WebSocket.open(room.url, cookie_of(board))
        assert status == 101 and '"type":"snapshot"' in await socket.next()
        now[0] += 31 * 60
        # 31 minutes without a request and without an open board: the idle session is over...
        assert (await idle.get("/api/alerts")).status_code == 401
        response = await idle.get("/")
        assert response.status_code == 303 and response.headers["location"] == "/signin"
        status, refused = await WebSocket.open(room.url, cookie_of(idle))
        assert status == 401
        await refused.aclose()
        await wait_for_audit(tmp_path, "sign-out", "session expired (idle for 30 min)")
        # ...while an open board counts as use.
        assert (await board.get("/api/alerts")).status_code == 200
        now[0] += 8 * 3600
        closed = await socket.next(timeout=3.0)  # the sweep runs every second
        assert isinstance(closed, CloseConnection), closed
        assert closed.code == 4401 and closed.reason == "session ended: session older than 8 h"
        await socket.aclose()
        assert (await board.get("/api/alerts")).status_code == 401
        assert (await board.get("/")).headers["location"] == "/signin"
        await wait_for_audit(tmp_path, "sign-out", "session expired (session older than 8 h)")
        assert len(sessions) == 0


@trio_test
async def test_an_operator_of_another_room_neither_sees_nor_acts_on_a_main_alert(tmp_path):
    """Routing (alerts/routing.py): the board and the actions follow the room of the signed-in account."""
    east_button = pinkrelay.Button(button_id="kp-east-001", secret=secret_for("kp-east-001"),
                                   site=Site(name="Hayatabad Phase 3", kind="market", latitude=33.99,
                                             longitude=71.45),
                                   control_rooms=("east",))
    registry = pinkrelay.Registry([*make_registry(6).values(), east_button])
    OperatorStore.in_data_dir(tmp_path).add("dina", "operator", secret="dina-secret-for-tests-3", room="east")
    async with web_room(tmp_path, registry=registry) as (relay, room), client(room) as east, \
            client(room) as main, trio.open_nursery() as nursery:
        east_csrf = await sign_in(east, "dina", "dina-secret-for-tests-3")
        await sign_in(main)
        status, socket = await WebSocket.open(room.url, cookie_of(east))
        assert status == 101 and '"type":"snapshot"' in await socket.next()
        main_button = button_client(relay, "kp-test-001")
        east_press = button_client(relay, "kp-east-001")
        await nursery.start(main_button.run)
        await nursery.start(east_press.run)
        main_alert = (await main_button.press()).alert_id
        east_alert = (await east_press.press()).alert_id
        # Board events arrive in order: once the east alert is here, the main one was held back.
        seen: list[str] = []
        while not any(east_alert in message for message in seen):
            message = await socket.next(timeout=3.0)
            if isinstance(message, str):
                seen.append(message)
        assert not any(main_alert in message for message in seen), seen
        assert [a["alert_id"] for a in (await east.get("/api/alerts")).json()["alerts"]] == [east_alert]
        assert [a["alert_id"] for a in (await main.get("/api/alerts")).json()["alerts"]] == [main_alert]

        def act(alert_id: str) -> Any:
            return east.post(f"/api/alerts/{alert_id}/actions", json={"state": "acknowledged"},
                             headers={"x-csrf-token": east_csrf})

        refused = await act(main_alert)
        assert refused.status_code == 409
        assert "not by room 'east'" in refused.json()["error"]
        assert (await relay.journal.get(main_alert)).state == "raised"
        assert (await act(east_alert)).status_code == 200
        assert (await relay.journal.get(east_alert)).state == "acknowledged"
        await socket.aclose()
        nursery.cancel_scope.cancel()


@trio_test
async def test_sign_in_gives_a_strict_http_only_cookie_and_sign_out_ends_it(tmp_path):
    async with web_room(tmp_path) as (_relay, room), client(room) as http:
        response = await post_sign_in(http, OPERATOR, OPERATOR_SECRET)
        assert response.status_code == 303 and response.headers["location"] == "/"
        cookie = response.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/" in cookie
        assert "content-security-policy" in response.headers
        page = await http.get("/")
        assert page.status_code == 200 and "Open alerts" in page.text
        assert page.headers["cache-control"] == "no-store"
        session = (await http.get("/api/session")).json()
        assert session["operator"] == OPERATOR and session["role"] == "operator"
        sites = (await http.get("/api/sites")).json()["sites"]
        assert len(sites) == 6 and sites[0]["site"]["latitude"] == pytest.approx(34.0086)
        old_cookie = cookie_of(http)
        # Sign-out needs the CSRF token too.
        assert (await http.post("/signout")).status_code == 403
        response = await http.post("/signout", headers={"x-csrf-token": session["csrf"]})
        assert response.status_code == 303 and response.headers["location"] == "/signin"
        http.cookies.set("pinkrelay_session", old_cookie)
        assert (await http.get("/api/session")).status_code == 401
        actions = [(row[0], row[1]) for row in audit_rows(tmp_path) if row[2] == "web"]
        assert actions == [(OPERATOR, "sign-in"), (OPERATOR, "sign-out")]


@trio_test
async def test_wrong_secrets_are_throttled_per_address_and_name_never_locking_out_the_operator(tmp_path):
    async with web_room(tmp_path) as (_relay, room), client(room) as http, client(room, "127.0.0.2") as desk:
        for attempt in range(3):
            response = await post_sign_in(http, OPERATOR, f"guess-{attempt}")
            assert response.status_code == 401, attempt
            assert "Wrong operator name or secret" in response.text
        # The fourth try from this address is refused before the secret is even checked, even the right one.
        response = await post_sign_in(http, OPERATOR, OPERATOR_SECRET)
        assert response.status_code == 429
        assert int(response.headers["retry-after"]) == 2  # base delay; it doubles with every further failure
        assert "Try again in" in response.text
        assert "pinkrelay_session" not in response.headers.get("set-cookie", "")
        # Whoever guessed cannot lock the operator out: her own workstation signs in at once.
        await sign_in(desk, OPERATOR, OPERATOR_SECRET)
        # Another account from the guessing address still works until the address's limit...
        await sign_in(http, SUPERVISOR, SUPERVISOR_SECRET)
        http.cookies.clear()  # signed out again: the sign-in page is shown, not the board
        for attempt in range(7):
            response = await post_sign_in(http, f"nobody-{attempt}", "x")
            assert response.status_code == 401
        # ...ten wrong secrets from one address, whatever the names.
        response = await post_sign_in(http, "someone-else", "x")
        assert response.status_code == 429
        refused = audit_rows(tmp_path, "sign-in-refused")
        assert len(refused) == 10 and refused[0][0] == OPERATOR
        throttled = audit_rows(tmp_path, "sign-in-throttled")
        assert [row[0] for row in throttled] == [OPERATOR, "someone-else"]
        assert all("127.0.0.1" in row[3] and "wait" in row[3] for row in throttled)


@trio_test
async def test_sign_in_needs_its_page_token_and_posts_need_an_origin(tmp_path):
    async with web_room(tmp_path) as (_relay, room), client(room) as http:
        # Login CSRF: a post without the page's token (another site's form) signs nobody in.
        forged = await http.post("/signin", data={"name": OPERATOR, "secret": OPERATOR_SECRET})
        assert forged.status_code == 403 and "out of date" in forged.text
        stale = await http.post("/signin", data={"name": OPERATOR, "secret": OPERATOR_SECRET, "csrf": "made-up"})
        assert stale.status_code == 403
        csrf = await sign_in(http)
        url = "/api/alerts/00000000-0000-7000-8000-000000000000/actions"
        async with httpx.AsyncClient(base_url=room.url, cookies=http.cookies) as bare:
            stripped = await bare.post(url, json={"state": "acknowledged"}, headers={"x-csrf-token": csrf})
            assert stripped.status_code == 403  # neither Origin nor Referer
            referred = await bare.post(url, json={"state": "acknowledged"},
                                       headers={"x-csrf-token": csrf, "referer": room.url.rstrip("/") + "/"})
            assert referred.status_code == 404  # a Referer of this page passes: no such alert
            elsewhere = await bare.post(url, json={"state": "acknowledged"},
                                        headers={"x-csrf-token": csrf, "referer": "http://evil.example/page"})
            assert elsewhere.status_code == 403


@trio_test
async def test_an_operator_cannot_act_as_a_supervisor(tmp_path):
    async with web_room(tmp_path) as (relay, room), client(room) as operator, client(room) as supervisor:
        operator_csrf = await sign_in(operator)
        supervisor_csrf = await sign_in(supervisor, SUPERVISOR, SUPERVISOR_SECRET)
        async with trio.open_nursery() as nursery:
            button = button_client(relay, "kp-test-001")
            await nursery.start(button.run)
            receipt = await button.press()
            alert_id = receipt.alert_id
            alerts = (await operator.get("/api/alerts")).json()["alerts"]
            assert [a["alert_id"] for a in alerts] == [alert_id]

            def act(http: httpx.AsyncClient, csrf: str, state: str, **extra: Any) -> Any:
                return http.post(f"/api/alerts/{alert_id}/actions", json={"state": state, **extra},
                                 headers={"x-csrf-token": csrf})

            response = await act(operator, operator_csrf, "false_alarm")
            assert response.status_code == 403
            assert response.json()["error"] == (
                "only a supervisor may mark an alert false alarm; asma signed in as operator")
            assert (await relay.journal.get(alert_id)).state == "raised"
            response = await act(operator, operator_csrf, "acknowledged")
            assert response.status_code == 200 and response.json()["update"]["operator"] == OPERATOR
            response = await act(operator, operator_csrf, "dispatched")
            assert response.status_code == 409 and "unit" in response.json()["error"]
            response = await act(operator, operator_csrf, "on_scene")
            assert response.status_code == 409 and "cannot go from acknowledged to on_scene" in response.json()["error"]
            response = await act(operator, operator_csrf, "note", note="caller says two men near the gate")
            assert response.status_code == 200
            response = await act(supervisor, supervisor_csrf, "false_alarm", note="cleaning staff pressed it")
            assert response.status_code == 409 and response.json()["error"] == (
                f"closing alert {alert_id} as false_alarm needs an outcome: one of false, test")
            response = await act(supervisor, supervisor_csrf, "false_alarm", outcome="false", category="bored")
            assert response.status_code == 409 and "one of malicious, accidental, device_fault" in response.json()["error"]
            response = await act(supervisor, supervisor_csrf, "false_alarm", outcome=7)
            assert response.status_code == 400 and "outcome and category must be strings" in response.json()["error"]
            response = await act(supervisor, supervisor_csrf, "false_alarm", note="cleaning staff pressed it",
                                 outcome="false", category="accidental")
            assert response.status_code == 200
            assert (response.json()["update"]["outcome"], response.json()["update"]["category"]) == (
                "false", "accidental")
            assert (await relay.journal.get(alert_id)).state == "false_alarm"
            missing = await operator.post("/api/alerts/no-such-alert/actions", json={"state": "acknowledged"},
                                          headers={"x-csrf-token": operator_csrf})
            assert missing.status_code == 404
            events = await relay.journal.events_since(0)
            assert [(e.state, e.operator) for e in events[1:]] == [
                ("acknowledged", OPERATOR), ("acknowledged", OPERATOR), ("false_alarm", SUPERVISOR)]
            nursery.cancel_scope.cancel()


@trio_test
async def test_posts_need_the_csrf_token_and_this_origin(tmp_path):
    async with web_room(tmp_path) as (_relay, room), client(room) as http:
        csrf = await sign_in(http)
        url = "/api/alerts/x/actions"
        no_token = await http.post(url, json={"state": "acknowledged"})
        assert no_token.status_code == 403 and "CSRF" in no_token.json()["error"]
        wrong = await http.post(url, json={"state": "acknowledged"}, headers={"x-csrf-token": csrf + "x"})
        assert wrong.status_code == 403
        foreign = await http.post(url, json={"state": "acknowledged"},
                                  headers={"x-csrf-token": csrf, "origin": "http://evil.example"})
        assert foreign.status_code == 403 and "cross-origin" in foreign.json()["error"]
        ours = await http.post(url, json={"state": "acknowledged"},
                               headers={"x-csrf-token": csrf, "origin": room.url})
        assert ours.status_code == 404  # through every check; there is just no such alert
        signin = await http.post("/signin", data={"name": OPERATOR, "secret": OPERATOR_SECRET},
                                 headers={"origin": "http://evil.example"})
        assert signin.status_code == 403
        status, socket = await WebSocket.open(room.url, cookie_of(http), origin="http://evil.example")
        assert status == 403
        await socket.aclose()


@trio_test
async def test_a_disabled_operator_is_signed_out_everywhere_within_seconds(tmp_path):
    async with web_room(tmp_path) as (_relay, room), client(room) as http:
        await sign_in(http)
        status, socket = await WebSocket.open(room.url, cookie_of(http), origin=room.url)
        assert status == 101
        snapshot = await socket.next()
        assert '"type":"snapshot"' in snapshot and '"operator":"asma"' in snapshot
        OperatorStore.in_data_dir(tmp_path).set_disabled(OPERATOR)
        closed = await socket.next(timeout=4.0)
        assert isinstance(closed, CloseConnection) and closed.code == 4401
        assert "disabled" in closed.reason
        await socket.aclose()
        assert (await http.get("/api/alerts")).status_code == 401
        assert (await http.get("/")).status_code == 303
        response = await post_sign_in(http, OPERATOR, OPERATOR_SECRET)
        assert response.status_code == 403 and "disabled" in response.text
        assert any("account disabled" in row[3] for row in audit_rows(tmp_path, "sign-out"))


@pytest.fixture(scope="module")
def clip():
    return encode_clip(2, width=320, height=240, fps=25, bitrate=300_000, label="ws")


@trio_test
async def test_watching_forwards_media_with_the_header_and_is_audited(tmp_path, clip):
    async with web_room(tmp_path) as (relay, room), client(room) as http, trio.open_nursery() as nursery:
        await sign_in(http)
        button = button_client(relay, "kp-test-002", [clip.video.to_dict(), clip.audio.to_dict()])
        await nursery.start(button.run)
        nursery.start_soon(lambda: stream_clip(button, clip, seconds=6.0))
        await trio.sleep(0.5)  # the relay caches a GOP, so the browser gets catch-up frames
        status, socket = await WebSocket.open(room.url, cookie_of(http))
        assert status == 101
        assert '"type":"snapshot"' in await socket.next()
        await socket.send_json('{"type":"watch","button":"kp-test-002"}')
        stream = None
        video = audio = catchup = 0
        first_video_flags = None
        while video < 40 or audio < 10:
            message = await socket.next()
            if isinstance(message, str):
                if '"type":"stream"' in message:
                    stream = message
                continue
            assert stream is not None, "the stream's tracks come before its first packet"
            version, flags, _track, timestamp = HEADER.unpack_from(message)
            assert version == 2 and len(message) > HEADER.size
            assert abs(timestamp / 1e6 - time.time()) < 30, "capture time in µs since the epoch"
            if flags & FLAG_AUDIO:
                audio += 1
            else:
                if first_video_flags is None:
                    first_video_flags = flags
                video += 1
                catchup += bool(flags & FLAG_CATCHUP)
        assert first_video_flags & FLAG_KEYFRAME, "a browser's video starts on a keyframe"
        assert catchup >= 1, "cached frames are flagged catch-up (decode, don't draw)"
        assert '"codec":"h264"' in stream and '"codec":"opus"' in stream
        watched = audit_rows(tmp_path, "watch")
        assert watched == [(OPERATOR, "watch", "kp-test-002", watched[0][3])]
        assert watched[0][3].startswith("127.0.0.1:")
        await socket.aclose()
        nursery.cancel_scope.cancel()


def test_sessions_expire_after_idle_time_and_after_a_shift():
    now = [1000.0]
    store = SessionStore(lifetime=8 * 3600, idle=30 * 60, clock=lambda: now[0])
    session = store.create(OPERATOR, "operator", "127.0.0.1:5000")
    now[0] += 29 * 60
    assert store.get(session.token) is session
    now[0] += 29 * 60  # 29 min after the last request: still alive
    assert store.get(session.token) is session
    now[0] += 31 * 60
    assert store.get(session.token) is None and session.ended.is_set()
    assert "idle" in session.end_reason
    assert store.sweep() == [session], "an expiry found by a request is reported by the next sweep (audit)"
    assert store.sweep() == []

    busy = store.create(OPERATOR, "operator", "127.0.0.1:5001")
    busy.sockets = 1  # an open board counts as use...
    now[0] += 7 * 3600
    assert store.sweep() == [] and store.get(busy.token) is busy
    now[0] += 3600  # ...but not past one shift
    assert store.sweep() == [busy] and "8 h" in busy.end_reason
    assert store.get(busy.token) is None


def test_throttle_backs_off_exponentially_per_address_and_name():
    now = [0.0]
    throttle = SignInThrottle(free_failures=3, base_delay=2, max_delay=300, per_address=100, clock=lambda: now[0])
    for _ in range(3):
        assert throttle.retry_after("asma", "10.0.0.1") == 0
        throttle.failed("asma", "10.0.0.1")
    waits = []
    for _ in range(9):
        waits.append(throttle.retry_after("asma", "10.0.0.1"))
        now[0] += waits[-1]
        throttle.failed("asma", "10.0.0.1")
    assert waits == [2, 4, 8, 16, 32, 64, 128, 256, 300]
    # Another address, or another name from this address, is untouched.
    assert throttle.retry_after("asma", "10.0.0.2") == 0
    assert throttle.retry_after("saima", "10.0.0.1") == 0
    throttle.succeeded("asma", "10.0.0.1")
    assert throttle.retry_after("asma", "10.0.0.1") == 0


def test_media_header_layout():
    packet = struct.pack(">BBIQ", 2, FLAG_KEYFRAME, 70_000, 1_700_000_000_000_000) + b"\x00\x00\x00\x01\x67"
    assert HEADER.size == 14  # a 32-bit track id: protocol v2's ids exceed 16 bits
    assert HEADER.unpack_from(packet) == (2, FLAG_KEYFRAME, 70_000, 1_700_000_000_000_000)


@trio_test
async def test_a_failing_web_task_is_logged_and_restarted_while_the_relay_keeps_going(tmp_path, caplog):
    async with web_room(tmp_path) as (relay, room), client(room) as http, trio.open_nursery() as nursery:
        await sign_in(http)
        status, socket = await WebSocket.open(room.url, cookie_of(http))
        assert status == 101 and '"type":"snapshot"' in await socket.next()
        real = room._event_message
        calls = []

        def broken_once(item: Any) -> Any:
            calls.append(item)
            if len(calls) == 1:
                raise RuntimeError("a bug in the board's event pump")
            return real(item)

        room._event_message = broken_once
        button = button_client(relay, "kp-test-003")
        await nursery.start(button.run)  # its "online" state meets the bug
        await trio.sleep(1.5)  # the pump is restarted after a second
        assert await socket.next() == '{"type":"resync"}', "pages re-read the board after the gap"
        receipt = await button.press()
        while True:
            message = await socket.next()
            if '"type":"alert"' in message:
                assert receipt.alert_id in message
                break
        assert "board events failed; restarting it" in caplog.text
        await socket.aclose()
        nursery.cancel_scope.cancel()


@pytest.fixture
def certificate(tmp_path):
    """A self-signed certificate for 127.0.0.1 (PEM files)."""
    if shutil.which("openssl") is None:
        pytest.fail("the openssl command makes the test certificate: run scripts/install-system-deps.sh as root")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )
    return cert, key


@trio_test
async def test_https_with_a_certificate_gives_a_secure_cookie(tmp_path, certificate):
    """Other workstations need HTTPS: browsers decode video only in a secure context."""
    cert, key = certificate
    store = OperatorStore.in_data_dir(tmp_path)
    store.add(OPERATOR, "operator", secret=OPERATOR_SECRET)
    async with running_relay(tmp_path, 6) as relay, trio.open_nursery() as nursery:
        room = await nursery.start(partial(serve_web, relay, pinkrelay.Address("127.0.0.1", 0),
                                           certfile=str(cert), keyfile=str(key)))
        assert room.url.startswith("https://127.0.0.1:")
        trust = ssl.create_default_context(cafile=str(cert))
        async with httpx.AsyncClient(base_url=room.url, verify=trust,
                                     headers={"origin": room.url.rstrip("/")}) as http:
            response = await post_sign_in(http, OPERATOR, OPERATOR_SECRET)
            assert response.status_code == 303
            assert "Secure" in response.headers["set-cookie"].split("; ")
            assert (await http.get("/api/session")).json()["operator"] == OPERATOR
        nursery.cancel_scope.cancel()
    with pytest.raises(pinkrelay.ConfigError, match="needs both a certificate and its key"):
        from pinkrelay.web import hypercorn_config

        hypercorn_config(pinkrelay.Address("127.0.0.1", 0), str(cert), None)


@trio_test
async def test_web_limits_websockets_per_session_header_and_body_size(tmp_path):
    limit = pinkrelay.RelayConfig().web_max_websockets_per_session
    async with web_room(tmp_path) as (relay, room), client(room) as http:
        csrf = await sign_in(http)
        cookie = cookie_of(http)
        sockets = []
        for _ in range(limit):
            status, socket = await WebSocket.open(room.url, cookie)
            assert status == 101
            sockets.append(socket)
        status, extra = await WebSocket.open(room.url, cookie)
        assert status == 429
        await extra.aclose()
        await sockets.pop().aclose()  # one tab closed: room for another
        await trio.sleep(0.1)
        status, again = await WebSocket.open(room.url, cookie)
        assert status == 101
        sockets.append(again)
        for socket in sockets:
            await socket.aclose()

        # Headers past web_max_header_bytes: refused before the application sees them.
        big = "x" * (relay.config.web_max_header_bytes + 1024)
        refused = await http.get("/api/session", headers={"x-padding": big})
        assert refused.status_code == 431 and "web_max_header_bytes" in refused.json()["error"]
        # A body past web_max_body_bytes: 413 naming the setting.
        alert_path = "/api/alerts/00000000-0000-7000-8000-000000000000/actions"
        body = {"state": "acknowledged", "note": "y" * (relay.config.web_max_body_bytes + 1)}
        too_big = await http.post(alert_path, json=body, headers={"x-csrf-token": csrf, "origin": room.url.rstrip("/")})
        assert too_big.status_code == 413 and "web_max_body_bytes" in too_big.json()["error"]
        # The room still answers.
        assert (await http.get("/api/session")).status_code == 200
