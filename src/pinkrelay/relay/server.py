"""Relay: the trio server that holds buttons and consoles, puts alerts first and fans out media.

Embed it in a trio program::

    async with trio.open_nursery() as nursery:
        relay = await nursery.start(Relay(config).serve)
        async for event in relay.events():
            ...

or use ``open_relay(config)``, an async context manager that does the same
and shuts the relay down on exit. ``pinkrelay serve`` is a thin wrapper.

This module makes the relay-wide decisions: who may connect (registry and
console tokens), which track ids a button uses, what happens to an alert
(journal, consoles, acknowledgement), who watches what (the hub) and which
buttons are alive (the supervisor). Sessions (``sessions.py``) move bytes.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import secrets
from collections import OrderedDict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import trio

from .._core import Lane, deliver, encode_frame
from ..config import Address, RelayConfig
from ..errors import AuthenticationFailed, ConfigError, ProtocolError
from ..logs import event as log_event
from ..protocol import (
    Alert,
    AlertAck,
    AlertUpdate,
    ButtonState,
    Error,
    Goodbye,
    KeyframeRequest,
    StreamDescription,
    Subscribed,
    encode_body,
    frame_lane,
)
from ..protocol.events import Event
from ..protocol.media_rules import checking
from ..operators import SCRYPT_N, SCRYPT_P, SCRYPT_R, OperatorStore
from ..protocol import auth
from ..ids import uuid7
from ..registry import Registry, load_registry
from ..alerts.escalation import Escalator
from ..alerts.index import AlertIndex
from ..alerts.journal import JournalError, SqliteJournal, StaleStep
from ..alerts.lifecycle import AlertState, LifecycleError, Step, transition
from ..alerts.routing import DEFAULT_ROOM, Recipient, Routing
from ..integrations.dispatcher import dispatcher_for
from . import events as relay_events
from . import registry_reload
from ..outbox import Outbox
from . import door
from .. import tls
from .hub import Hub
from .limits import Admission, MediaRate, Refusal, Verdict, backoff_delay
from .sequencer import CursorSequencer
from .sessions import ButtonSession, ConsoleSession, Session, wall_us
from .supervision import Supervisor

log = logging.getLogger("pinkrelay.relay")

DEFAULT_OPERATOR = "duty-officer"
KEYFRAME_REQUEST_INTERVAL = 0.5
#: Seconds before an escalation or offline alert that could not be recorded is tried again.
ESCALATION_RETRY = 1.0
#: Events an embedding service may leave unread before the relay drops its events (publish_event).
EVENT_BUFFER = 1000
#: How many recently broadcast alert ids the relay remembers; a retry of an older one is broadcast again.
ANNOUNCED_MEMORY = 10_000
OPERATOR_POLL_INTERVAL = 1.0
DROP_REPORT_INTERVAL = 5.0
#: How far back the relay remembers alert ids to recognise a button's retries in memory.
INDEX_HISTORY_US = 7 * 24 * 3600 * 1_000_000
#: Lifecycle steps only a supervisor may take: closing an alert as a false alarm.
SUPERVISOR_ONLY = frozenset({"false_alarm"})


class Relay:
    """The relay server. Create it, then run ``serve`` in a nursery (``nursery.start``)."""

    def __init__(
        self,
        config: RelayConfig | None = None,
        *,
        registry: Registry | None = None,
        journal: Any = None,
    ) -> None:
        self.config = config or RelayConfig()
        _prepare_data_dir(self.config.data_dir)
        self.registry = registry if registry is not None else self._load_registry()
        self.console_tokens = self._load_console_tokens()
        self.operators = OperatorStore.in_data_dir(self.config.data_dir)
        self._ensure_an_operator()
        self._decoy_key = self._relay_key()
        #: An in-memory credential for services in this process (the web control
        #: room) that connect as consoles; it never touches the disk.
        self.service_operator = "pinkrelay-service"
        self.console_tokens[self.service_operator] = secrets.token_urlsafe(32).encode()
        self.journal = journal if journal is not None else SqliteJournal(self.config.data_dir / "journal.sqlite3")
        #: Delivers every stored alert and step to the configured sinks (pinkrelay/integrations).
        self.integrations = dispatcher_for(self, self.config.sinks) if self.config.sinks else None
        self.escalator = Escalator(self.config.escalation_levels)
        self.routing = Routing(self.config.escalation_groups)
        self.hub = Hub(gop_cache_bytes=self.config.gop_cache_bytes, audio_hold=self.config.audio_hold)
        self.supervisor = Supervisor(self.config.supervision_window)
        #: TLS contexts by listener role ("button", "console"); none: that listener is plaintext.
        self.tls_contexts = self._tls_contexts()
        self.tls_stats = {"ok": 0, "plaintext": 0, "handshake": 0, "timeout": 0}
        self.admission = Admission(
            per_address=self.config.max_unauthenticated_per_address,
            total=self.config.max_unauthenticated,
            handshake_rate=self.config.handshake_rate_per_address,
            handshake_burst=self.config.handshake_burst_per_address,
        )
        self.sessions_by_button: dict[str, ButtonSession] = {}
        self.consoles: set[ConsoleSession] = set()
        self.sessions: set[Session] = set()
        self.buttons_address: Address | None = None
        self.consoles_address: Address | None = None
        self.counters = {
            "connections": 0,
            "auth_failures": 0,
            "protocol_errors": 0,
            "alerts": 0,
            "duplicate_alerts": 0,
            "dropped_events": 0,
            "media_over_bitrate": 0,
            "closed_over_bitrate": 0,
            "subscriptions_refused": 0,
        }
        #: Traffic of sessions that have ended, so that ``traffic()`` only ever grows.
        self._ended_traffic = dict.fromkeys(TRAFFIC_KEYS, 0)
        self._track_blocks: dict[str, tuple[int, ...]] = {}
        self._next_track = 1
        self._handshake_counters: dict[tuple[str, str], int] = {}
        self._event_streams: list[_EventStream] = []
        self._event_streams_opened = 0
        #: Events dropped per event stream name because its reader fell behind (see publish_event).
        self.event_drops: dict[str, int] = {}
        self._broadcast_seq = 0
        self._keyframe_requested: dict[str, float] = {}
        self._nursery: trio.Nursery | None = None
        self._listener_scope: trio.CancelScope | None = None
        self._supervision_wakeup = trio.Event()
        self._escalation_wakeup = trio.Event()
        self._unstored: dict[str, Alert] = {}
        self._unstored_error = ""
        self._storing: dict[str, trio.Event] = {}
        self.alert_index = AlertIndex(merge_window_us=int(self.config.merge_window * 1e6))
        #: Alerts this run has broadcast as stored, most recent last (see alert_pressed).
        self._announced: OrderedDict[str, None] = OrderedDict()
        self._offline_alerts: dict[str, str] = {}
        #: Escalations that could not be recorded, by alert: how often they were tried (for the backoff).
        self._escalation_retries: dict[str, int] = {}
        self.stopping = False

    # -- configuration -----------------------------------------------------------

    def _load_registry(self) -> Registry:
        path = self.config.registry
        if path is None:
            default = self.config.data_dir / "registry.csv"
            if not default.exists():
                log.warning("no button registry (--registry FILE or %s): no button can connect", default)
                return Registry()
            path = default
        return load_registry(path)

    async def reload_registry(self, requested_by: str = "relay") -> Any:
        """Read the registry file again without a restart (see relay/registry_reload.py)."""
        return await registry_reload.reload_registry(self, requested_by=requested_by)

    def _tls_contexts(self) -> dict[str, Any]:
        """Both listeners speak TLS 1.3 with ``tls_cert``; buttons must show a certificate with ``tls_client_ca``."""
        config = self.config
        if config.tls_cert is None:
            return {}
        return {
            "button": tls.server_context(config.tls_cert, config.tls_key, config.tls_client_ca),
            "console": tls.server_context(config.tls_cert, config.tls_key),
        }

    def reload_certificates(self) -> None:
        """Read the TLS files again (SIGHUP): new handshakes use them, open sessions stay as they are.

        A certificate that does not load leaves the previous one in use, with an error in the log.
        """
        if self.config.tls_cert is None:
            return
        try:
            self.tls_contexts = self._tls_contexts()
        except ConfigError as error:
            log_event(log, logging.ERROR, f"TLS certificates not reloaded, the previous ones stay in use: {error}",
                      decision="refuse", reason="tls-reload")
            return
        log_event(log, logging.INFO, f"TLS certificates reloaded from {self.config.tls_cert}", action="tls-reload")

    def _load_console_tokens(self) -> dict[str, bytes]:
        tokens = {name: token.encode() for name, token in self.config.console_tokens.items()}
        if self.config.console_tokens_file is not None:
            tokens.update(read_console_tokens(self.config.console_tokens_file))
        return tokens

    def _relay_key(self) -> bytes:
        """A random key kept in the data directory (0600), stable across restarts."""
        path = self.config.data_dir / "relay.key"
        try:
            return bytes.fromhex(path.read_text().strip())
        except (OSError, ValueError):
            key = secrets.token_bytes(32)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as handle:
                handle.write(key.hex() + "\n")
            return key

    def _ensure_an_operator(self) -> None:
        """First start with no accounts: create a supervisor for the local console.

        Its secret goes to ``DATA_DIR/duty-officer.secret`` (mode 0600), where
        ``pinkrelay console`` looks by default; only its hash is stored. (Relays
        before this name wrote ``DATA_DIR/console-token``; the console still reads it.)
        """
        if self.operators.load() or self.console_tokens:
            return
        secret = self.operators.add(DEFAULT_OPERATOR, "supervisor")
        path = self.config.data_dir / f"{DEFAULT_OPERATOR}.secret"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secret + "\n")
        log.info("created operator %s (supervisor); its secret is in %s (mode 0600)", DEFAULT_OPERATOR, path)

    # -- running -----------------------------------------------------------------

    async def serve(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Listen on both addresses and run until cancelled or ``shutdown()``."""
        config = self.config
        _refuse_unencrypted_network(config)
        button_listeners = await _listen(config.buttons_listen, "buttons")
        try:
            console_listeners = await _listen(config.consoles_listen, "consoles")
        except ConfigError:
            for listener in button_listeners:
                await listener.aclose()
            raise
        self.buttons_address = _bound(button_listeners)
        self.consoles_address = _bound(console_listeners)
        await self.journal.open()
        self._sequencer = CursorSequencer(self.journal.next_cursor, self.broadcast)
        try:
            await self._restore()
            await self._serve(button_listeners, console_listeners, task_status)
        finally:
            with trio.CancelScope(shield=True):
                await self.journal.close()

    async def _restore(self) -> None:
        """Pick up where the last run stopped: handshake counters and open alerts' escalation."""
        self._handshake_counters.update(await self.journal.load_counters())
        self.alert_index.load(await self.journal.recent_alerts(wall_us() - INDEX_HISTORY_US))
        now, wall = trio.current_time(), wall_us()
        for alert in await self.journal.open_alerts():
            if alert.state == AlertState.RAISED:
                self.escalator.watch(alert.alert_id, now - (wall - alert.received_at) / 1e6, alert.level)
            if alert.kind == "offline" and alert.button:
                self._offline_alerts[alert.button] = alert.alert_id
        # Buttons that connected before a restart are supervised from now on: one
        # that does not come back within the window raises 'offline' as usual.
        for role, button_id in self._handshake_counters:
            if role == "button" and button_id in self.registry and button_id not in self._offline_alerts:
                self.supervisor.seen(button_id, now)
        self._supervision_wakeup.set()

    async def _serve(self, button_listeners: Any, console_listeners: Any, task_status: Any) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            nursery.start_soon(self.hub.run_fanout)
            nursery.start_soon(self._supervise)
            nursery.start_soon(self._escalate)
            nursery.start_soon(self._watch_operators)
            nursery.start_soon(self._report_drops)
            nursery.start_soon(self._report_unstored)
            nursery.start_soon(self._unblock_sequencer)
            if self.integrations is not None:
                nursery.start_soon(self.integrations.run)
            async with trio.open_nursery() as connections:
                with trio.CancelScope() as listening:
                    self._listener_scope = listening
                    connections.start_soon(
                        _serve, self._handle_button, button_listeners, connections
                    )
                    connections.start_soon(
                        _serve, self._handle_console, console_listeners, connections
                    )
                    log_event(
                        log,
                        logging.INFO,
                        f"relay listening: buttons on {self.buttons_address}, consoles on "
                        f"{self.consoles_address}; {len(self.registry)} buttons registered",
                        buttons=str(self.buttons_address),
                        consoles=str(self.consoles_address),
                    )
                    task_status.started(self)
                    await trio.sleep_forever()
            nursery.cancel_scope.cancel()

    async def shutdown(self, reason: str = "relay shutting down", grace: float = 2.0) -> None:
        """Stop accepting, say goodbye to every peer, flush, close the journal, stop."""
        if self.stopping:
            return
        self.stopping = True
        log.info("shutting down: %s", reason)
        if self._listener_scope is not None:
            self._listener_scope.cancel()
        for session in list(self.sessions):
            if session.conn.state.value == "ready":
                session.send(Goodbye(reason=reason))
        with trio.move_on_after(grace):
            while any(not s.outbox.empty and s.outbox.failure is None for s in self.sessions):
                await trio.sleep(0.01)
        for session in list(self.sessions):
            session.close(reason)
        if self._nursery is not None:
            self._nursery.cancel_scope.cancel()

    async def _handle_button(self, stream: trio.SocketStream) -> None:
        await self._run_session(ButtonSession, stream)

    async def _handle_console(self, stream: trio.SocketStream) -> None:
        await self._run_session(ConsoleSession, stream)

    async def _run_session(self, kind: type[Session], stream: trio.SocketStream) -> None:
        peer = _peer(stream)
        if self.stopping:
            await stream.aclose()
            return
        address = peer.rpartition(":")[0] or peer
        refusal = self.admission.admit(address, trio.current_time())
        if refusal is not None:
            await self._turn_away(stream, kind.role, address, refusal)
            return
        context = self.tls_contexts.get(kind.role)
        if context is None:
            await self._start_session(kind, stream, peer, address)
            return
        try:
            secure, certificate = await door.accept_tls(stream, context, self.config.handshake_timeout)
        except door.TlsRefused as refused:
            self.admission.left(address)
            self.tls_stats[refused.kind] += 1
            held = self.admission.logs.due((address, "tls-" + refused.kind), trio.current_time())
            if held is not None:
                log_event(log, logging.WARNING, f"refused a {kind.role} connection from {peer}: {refused.reason}"
                          + (f" ({held} more since the last line)" if held else ""), decision="refuse",
                          role=kind.role, peer=peer, reason="tls-" + refused.kind, suppressed=held)
            return
        self.tls_stats["ok"] += 1
        plain, far = tls.socketpair()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(tls.bridge, secure, far)
            await self._start_session(kind, plain, peer, address, certificate=certificate)

    async def _start_session(self, kind: type[Session], stream: trio.SocketStream, peer: str, address: str,
                             *, certificate: str | None = None) -> None:
        session = kind(self, stream, peer)
        session.admitted_from = address
        session.certificate = certificate
        self.sessions.add(session)
        self.counters["connections"] += 1
        log_event(log, logging.INFO, f"{session.role} connection from {peer}" + (" (TLS)" if certificate is not None
                  else ""), role=session.role, peer=peer, tls=certificate is not None)
        await session.run()

    async def _turn_away(self, stream: trio.SocketStream, role: str, address: str, refusal: Refusal) -> None:
        """Refuse a connection before its handshake: one error frame if the socket takes it, then close."""
        reason = self.admission.describe(refusal, address)
        await door.refuse(stream, Error(code="busy", message=f"connection refused: {reason}", fatal=True))
        held = self.admission.logs.due((address, refusal.value), trio.current_time())
        if held is not None:
            log_event(log, logging.WARNING, f"refused a {role} connection from {address}: {reason}"
                      + (f" ({held} more refused since the last line)" if held else ""),
                      decision="refuse", role=role, peer=address, reason=refusal.value, suppressed=held)

    def _signed_in(self, session: Session) -> None:
        """The session no longer counts against its address's unauthenticated allowance."""
        if session.admitted_from is not None:
            self.admission.signed_in(session.admitted_from)
            session.admitted_from = None

    def session_ended(self, session: Session) -> None:
        self.sessions.discard(session)
        if session.admitted_from is not None:
            self.admission.left(session.admitted_from)
            session.admitted_from = None
        for key, value in _session_traffic(session).items():
            self._ended_traffic[key] += value
        self.hub.unsubscribe_all(session.outbox)
        reason = session.close_reason or "closed"
        if isinstance(session, ConsoleSession):
            self.consoles.discard(session)
        elif isinstance(session, ButtonSession) and self.sessions_by_button.get(session.identity) is session:
            del self.sessions_by_button[session.identity]
            if session.stream_state is not None:
                self.hub.close_stream(session.stream_state)
                self._notify_watchers(session.identity, StreamDescription(button=session.identity, tracks=()))
        if session.conn.authenticated:
            self.publish_event(
                relay_events.ClientDisconnected(
                    role=session.role, identity=session.identity, peer=session.peer, reason=reason
                )
            )
        log_event(
            log,
            logging.INFO,
            f"{session.describe()} disconnected: {reason}",
            role=session.role,
            identity=session.identity,
            peer=session.peer,
            reason=reason,
        )

    # -- events for embedding services ------------------------------------------

    @asynccontextmanager
    async def open_event_stream(
        self, buffer: int = EVENT_BUFFER, *, name: str = ""
    ) -> AsyncIterator[trio.MemoryReceiveChannel[Any]]:
        """A channel of alerts, button states and relay decisions, from now on.

        ``buffer`` events may wait unread; past that the relay drops this
        stream's events rather than wait for it (see ``publish_event``).
        ``name`` says who reads it in the relay's log when that happens.
        """
        send, receive = trio.open_memory_channel[Any](buffer)
        self._event_streams_opened += 1
        stream = _EventStream(name or f"event stream {self._event_streams_opened}", send, buffer)
        self._event_streams.append(stream)
        try:
            async with receive:
                yield receive
        finally:
            if stream in self._event_streams:
                self._event_streams.remove(stream)

    async def events(self, *, name: str = "") -> AsyncIterator[Any]:
        """Iterate relay events (see ``open_event_stream`` for a bounded, closable form)."""
        async with self.open_event_stream(name=name) as channel:
            async for item in channel:
                yield item

    def publish_event(self, item: Any) -> None:
        """Hand ``item`` to every event stream, never waiting for one.

        It is called on the alert path: an alert is published before it is
        committed and acknowledged to its button. Waiting here for a slow
        embedding service would delay every alert to every console and every
        acknowledgement, so a stream whose buffer is full loses the event
        instead, and never silently: the first drop logs a warning naming the
        stream, every dropped alert is logged as an error with its id and
        button, the count is kept in ``event_drops[name]`` (and
        ``counters["dropped_events"]``), and when the stream takes events again
        a warning says how many it missed. Every alert is in the journal
        (``pinkrelay alerts``), so a service that missed some can read them there.
        """
        for stream in list(self._event_streams):
            try:
                stream.channel.send_nowait(item)
            except trio.WouldBlock:
                self._event_dropped(stream, item)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                # Its reader closed the channel before leaving open_event_stream.
                self._event_streams.remove(stream)
            else:
                if stream.missed:
                    self._event_stream_resumed(stream)

    def _event_dropped(self, stream: _EventStream, item: Any) -> None:
        stream.missed += 1
        self.event_drops[stream.name] = self.event_drops.get(stream.name, 0) + 1
        self.counters["dropped_events"] += 1
        if stream.missed == 1:
            log_event(log, logging.WARNING, f"{stream.name} has {stream.buffer} unread events: dropping "
                      "its events until it reads again (every alert stays in the journal)",
                      decision="drop", consumer=stream.name, buffer=stream.buffer)
        if isinstance(item, Alert):
            stream.missed_alerts += 1
            log_event(log, logging.ERROR, f"{stream.name} missed alert {item.alert_id} from button "
                      f"{item.button}: it has {stream.buffer} unread events ({stream.missed} dropped since "
                      "it fell behind)", decision="drop", consumer=stream.name, alert_id=item.alert_id,
                      button=item.button, dropped=stream.missed)

    def _event_stream_resumed(self, stream: _EventStream) -> None:
        log_event(log, logging.WARNING, f"{stream.name} reads events again; it missed {stream.missed} "
                  f"events, {stream.missed_alerts} of them alerts ({self.event_drops[stream.name]} in all)",
                  decision="drop", consumer=stream.name, dropped=stream.missed,
                  dropped_alerts=stream.missed_alerts, dropped_total=self.event_drops[stream.name])
        stream.missed = stream.missed_alerts = 0

    # -- authentication ------------------------------------------------------------

    async def authenticate(self, session: Session, now: float) -> None:
        """Check a client's proof and welcome it, or refuse it."""
        conn = session.conn
        identity = conn.identity
        key = (session.role, identity)
        last = self._handshake_counters.get(key, 0)
        if isinstance(session, ButtonSession):
            secret = self.registry.secret(identity)
            if secret is None:
                raise AuthenticationFailed(f"button {identity!r} is not in the registry")
            if self.config.tls_client_ca is not None and session.certificate != identity:
                raise AuthenticationFailed(
                    f"button {identity!r} presented the TLS certificate of {session.certificate!r}")
            conn.verify(secret, last)
        else:
            operator = self.operators.get(identity)
            if operator is not None:
                if operator.disabled:
                    raise AuthenticationFailed(f"operator {identity!r} is disabled")
                conn.verify(b"", last, stored_key=bytes.fromhex(operator.stored_key))
                session.operator_role = operator.role
                session.recipient = Recipient(role=operator.role, room=operator.room)
            elif identity in self.console_tokens:
                conn.verify(self.console_tokens[identity], last)
            else:
                raise AuthenticationFailed(f"operator {identity!r} has no account")
        self._signed_in(session)
        counter = conn.hello.counter if conn.hello else 0
        self._handshake_counters[key] = counter
        try:
            await self.journal.save_counter(session.role, identity, counter)
        except JournalError as error:
            # Replay protection holds in memory for this run; the client is real.
            log.error("handshake counter of %s %s not stored: %s", session.role, identity, error)
        if isinstance(session, ButtonSession):
            self._welcome_button(session, now)
        else:
            await self._welcome_console(session, now)
        session.rearm_timers()  # heartbeats and supervision start now, not at the handshake deadline
        self.publish_event(relay_events.ClientConnected(role=session.role, identity=identity, peer=session.peer))

    def challenge_for(self, session: Session) -> tuple[bytes, str]:
        """Salt and key derivation a console must use: its account's, or a decoy's.

        A name without an account gets a stable decoy salt, so the challenge
        does not tell an outsider which operator names exist.
        """
        if isinstance(session, ButtonSession):
            return b"", ""
        self._reload_operators()  # an account disabled a moment ago is refused at this sign-in
        operator = self.operators.get(session.identity)
        if operator is not None:
            return bytes.fromhex(operator.salt), operator.kdf
        if session.identity in self.console_tokens:
            return b"", ""
        return auth.decoy_salt(self._decoy_key, session.identity), f"scrypt:{SCRYPT_N}:{SCRYPT_R}:{SCRYPT_P}"

    def _reload_operators(self) -> None:
        """Reread the operators file if it changed; refuse disabled accounts at once, open consoles too."""
        if not self.operators.changed():
            return
        try:
            self.operators.load()
        except ConfigError as error:
            log.error("%s (keeping the accounts read before)", error)
            return
        for console in list(self.consoles):
            operator = self.operators.get(console.identity)
            if console.operator_role and (operator is None or operator.disabled):
                error = AuthenticationFailed(f"operator {console.identity!r} was disabled",
                                             public_reason="operator account disabled")
                self.auth_refused(console, error)
                console.refuse(error)

    async def _watch_operators(self) -> None:
        """Notice account changes within OPERATOR_POLL_INTERVAL even when nobody signs in."""
        while True:
            await trio.sleep(OPERATOR_POLL_INTERVAL)
            self._reload_operators()

    async def _unblock_sequencer(self) -> None:
        while True:
            await trio.sleep(0.25)
            self._sequencer.tick(trio.current_time())

    async def _report_unstored(self) -> None:
        """One line per interval while alerts wait to be stored (shown to consoles, not acknowledged).

        The buttons keep retrying each of them, and each retry that fails is
        logged only a few times per button and interval (logs.RepeatLimiter):
        this line is the count an operator needs.
        """
        while True:
            await trio.sleep(DROP_REPORT_INTERVAL * 2)
            if self._unstored:
                log_event(log, logging.ERROR, f"{len(self._unstored)} alerts waiting to be stored: "
                          f"{self._unstored_error}", decision="no-ack", waiting=len(self._unstored),
                          reason=self._unstored_error)

    async def _report_drops(self) -> None:
        """One log line per slow console and interval: media dropped to keep it live."""
        reported: dict[Session, tuple[int, int]] = {}
        while True:
            await trio.sleep(DROP_REPORT_INTERVAL)
            for session in list(self.consoles):
                outbox = session.outbox
                before = reported.get(session, (0, 0))
                now = (outbox.dropped_video, outbox.dropped_audio)
                if now != before:
                    log_event(log, logging.WARNING,
                              f"console {session.identity} ({session.peer}) is behind: dropped "
                              f"{now[0] - before[0]} video and {now[1] - before[1]} audio messages in the "
                              f"last {DROP_REPORT_INTERVAL:g} s (video restarts at the next keyframe)",
                              decision="drop", operator=session.identity, peer=session.peer,
                              dropped_video=now[0] - before[0], dropped_audio=now[1] - before[1])
                    reported[session] = now
            for session in [s for s in reported if s not in self.consoles]:
                del reported[session]

    def auth_refused(self, session: Session, error: AuthenticationFailed) -> None:
        self.counters["auth_failures"] += 1
        log_event(
            log,
            logging.WARNING,
            f"refused {session.role} {session.identity or '?'} from {session.peer}: {error}",
            decision="refuse",
            role=session.role,
            identity=session.identity,
            peer=session.peer,
            reason=str(error),
        )
        self.publish_event(
            relay_events.AuthRefused(
                role=session.role, identity=session.identity, peer=session.peer, reason=str(error)
            )
        )

    def protocol_violation(self, session: Session, error: ProtocolError) -> None:
        self.counters["protocol_errors"] += 1
        log_event(
            log,
            logging.WARNING,
            f"protocol error from {session.describe()}: {error}",
            decision="disconnect",
            role=session.role,
            identity=session.identity,
            peer=session.peer,
            code=error.code,
            reason=str(error),
        )
        self.publish_event(
            relay_events.ProtocolViolation(
                role=session.role, identity=session.identity, peer=session.peer, reason=str(error)
            )
        )

    def _track_block(self, button_id: str) -> tuple[int, ...]:
        """Relay-wide track ids for a button, the same for the relay's whole life."""
        block = self._track_blocks.get(button_id)
        if block is None:
            size = self.config.max_tracks
            if self._next_track + size - 1 > 0xFFFF:
                raise ProtocolError("the relay has no track ids left; restart it or lower max_tracks", code="capacity")
            block = tuple(range(self._next_track, self._next_track + size))
            self._next_track += size
            self._track_blocks[button_id] = block
        return block

    def _welcome_button(self, session: ButtonSession, now: float) -> None:
        button_id = session.identity
        track_ids = self._track_block(button_id)
        welcome = session.conn.welcome(
            session=secrets.token_hex(8), track_ids=track_ids, chunk_size=self.config.chunk_size, now=now
        )
        session.outbox.send(Lane.CONTROL, [welcome], now)
        previous = self.sessions_by_button.get(button_id)
        if previous is not None and previous is not session:
            previous.say_goodbye("replaced by a newer connection from the same button")
            if previous.stream_state is not None:
                self.hub.close_stream(previous.stream_state)
        self.sessions_by_button[button_id] = session
        stream = session.stream_state = self.hub.open_stream(button_id, track_ids)
        session.conn.media_sink = checking(self._media_sink(session, stream))
        log_event(log, logging.INFO, f"button {button_id} authenticated from {session.peer}",
                  role="button", identity=button_id, peer=session.peer)
        self.button_seen(button_id, now)

    def _media_sink(self, session: ButtonSession, stream: Any) -> Any:
        """Where a button's media messages go: the hub, through its bitrate limit when one is set."""
        publish = self.hub.publish
        if not self.config.max_button_bitrate:
            return lambda message: publish(stream, message)
        rate = MediaRate(self.config.max_button_bitrate, close_after=self.config.media_overrun_close,
                         now=trio.current_time())
        limit = f"max_button_bitrate {self.config.max_button_bitrate} bit/s"

        def sink(message: Any) -> None:
            now = trio.current_time()
            verdict = rate.offer(message.wire_size, now)
            if verdict is Verdict.PASS:
                publish(stream, message)
                return
            self.counters["media_over_bitrate"] += 1
            if verdict is Verdict.CLOSE:
                self.counters["closed_over_bitrate"] += 1
                error = ProtocolError(f"media above {limit} for {self.config.media_overrun_close:g} s "
                                      f"(button {session.identity}); connection closed", code="limit")
                log_event(log, logging.WARNING, f"closing button {session.identity} ({session.peer}): {error}",
                          decision="disconnect", button=session.identity, reason="bitrate")
                session.refuse(error)
                return
            held = self.admission.logs.due((session.identity, "bitrate"), now)
            if held is not None:
                log_event(log, logging.WARNING, f"button {session.identity} sends media above {limit}: "
                          f"dropping what is over ({rate.dropped} messages so far); it is disconnected after "
                          f"{self.config.media_overrun_close:g} s over the limit",
                          decision="drop", button=session.identity, reason="bitrate", dropped=rate.dropped)

        return sink

    async def _welcome_console(self, session: ConsoleSession, now: float) -> None:
        """Welcome, then the state of things, then live: nothing lost, nothing out of order.

        The console joins the broadcast list at once but its broadcasts are
        held while the journal snapshot is read; afterwards only held events
        newer than the snapshot are sent, so an alert committed meanwhile is
        neither lost nor sent twice.
        """
        welcome = session.conn.welcome(session=secrets.token_hex(8), chunk_size=self.config.chunk_size, now=now)
        session.outbox.send(Lane.CONTROL, [welcome], now)
        session.held_broadcasts = []
        self.consoles.add(session)
        log_event(log, logging.INFO, f"console {session.identity} signed in from {session.peer}",
                  role="console", identity=session.identity, peer=session.peer)
        resume_from = session.conn.hello.cursor if session.conn.hello else 0
        try:
            snapshot_cursor, open_alerts, missed = await self.journal.snapshot(resume_from)
        finally:
            held, session.held_broadcasts = session.held_broadcasts, None
        online = self.supervisor.online
        for button_id, button in self.registry.items():
            state = "online" if button_id in online else "offline"
            session.send(ButtonState(button=button_id, state=state, at=wall_us(), site=button.site))
        for event in [*open_alerts, *missed]:
            if self.visible_to(session.recipient, event):
                session.send(event)
        for lane, frame, cursor in held:
            if cursor == 0 or cursor > snapshot_cursor:
                session.send_frame(lane, frame)

    # -- supervision ----------------------------------------------------------------

    def button_seen(self, button_id: str, now: float) -> None:
        if self.supervisor.seen(button_id, now):
            self._button_state(button_id, "online")
            self._supervision_wakeup.set()
            offline_alert = self._offline_alerts.pop(button_id, None)
            if offline_alert is not None and self._nursery is not None:
                self._nursery.start_soon(self._resolve_offline, offline_alert)

    async def _resolve_offline(self, alert_id: str) -> None:
        """The button is back: its offline alert is resolved by the relay itself."""
        alert = await self.journal.get(alert_id)
        if alert is None or alert.state not in (AlertState.RAISED, AlertState.ACKNOWLEDGED):
            return
        target = AlertState.ACKNOWLEDGED if alert.state == AlertState.RAISED else AlertState.RESOLVED
        try:
            for state in ([target, AlertState.RESOLVED] if target == AlertState.ACKNOWLEDGED else [target]):
                current = await self.journal.get(alert_id)
                assert current is not None
                closing = state == AlertState.RESOLVED
                step = transition(alert_id, current.state, state, operator="relay", at=wall_us(),
                                  note="button back online", outcome="false" if closing else "",
                                  category="device_fault" if closing else "")
                await self._apply_step(step)
        except (JournalError, LifecycleError) as error:
            log.error("could not resolve offline alert %s: %s", alert_id, error)

    async def _supervise(self) -> None:
        while True:
            deadline = self.supervisor.next_deadline()
            if deadline is None:
                await self._supervision_wakeup.wait()
                self._supervision_wakeup = trio.Event()
                continue
            with trio.move_on_at(deadline):
                await self._supervision_wakeup.wait()
            self._supervision_wakeup = trio.Event()
            for button_id in self.supervisor.expire(trio.current_time()):
                await self._button_offline(button_id)

    async def _button_offline(self, button_id: str) -> None:
        self._button_state(button_id, "offline")
        session = self.sessions_by_button.get(button_id)
        if session is not None:
            session.say_goodbye(f"nothing received for {self.config.supervision_window:g} s")
        button = self.registry.get(button_id)
        alert = Alert(
            alert_id=uuid7(),
            pressed_at=wall_us(),
            kind="offline",
            button=button_id,
            site=button.site if button else None,
            received_at=wall_us(),
            cursor=self.journal.take_cursor(),
        )
        self.alert_index.remember(alert)
        self._sequencer.release(alert.cursor, alert, trio.current_time())
        self.publish_event(alert)
        self.counters["alerts"] += 1
        log_event(log, logging.WARNING, f"button {button_id} offline: silent for "
                  f"{self.config.supervision_window:g} s", button=button_id, alert_id=alert.alert_id,
                  kind="offline")
        try:
            await self.journal.record(alert)
        except JournalError as error:
            # Consoles have it already; it must not be lost: keep trying in the background.
            log_event(log, logging.ERROR, f"offline alert {alert.alert_id} for {button_id} not stored "
                      f"({error}); retrying from {ESCALATION_RETRY:g} s, backing off to 30 s", button=button_id,
                      alert_id=alert.alert_id, reason=str(error))
            if self._nursery is not None:
                self._nursery.start_soon(self._store_offline_later, button_id, alert)
            return
        self._offline_recorded(button_id, alert)

    def _offline_recorded(self, button_id: str, alert: Alert) -> None:
        """An offline alert is in the journal: escalate it, or resolve it if the button is back."""
        if self.supervisor.is_online(button_id):
            if self._nursery is not None:
                self._nursery.start_soon(self._resolve_offline, alert.alert_id)
            return
        self._offline_alerts[button_id] = alert.alert_id
        self.escalator.watch(alert.alert_id, trio.current_time())
        self._escalation_wakeup.set()

    async def _store_offline_later(self, button_id: str, alert: Alert) -> None:
        attempt = 0
        while True:
            attempt += 1
            await trio.sleep(backoff_delay(attempt, first=ESCALATION_RETRY))
            try:
                await self.journal.record(alert)
            except JournalError:
                continue
            log_event(log, logging.WARNING, f"offline alert {alert.alert_id} for {button_id} stored after "
                      "all", button=button_id, alert_id=alert.alert_id)
            # A console that reconnected meanwhile resumed from the journal, which did not
            # have it yet: tell every console again (consoles key alerts by id).
            self.broadcast(alert)
            self._offline_recorded(button_id, alert)
            return

    def _button_state(self, button_id: str, state: str) -> None:
        button = self.registry.get(button_id)
        event = ButtonState(button=button_id, state=state, at=wall_us(), site=button.site if button else None)
        self.broadcast(event)
        self.publish_event(event)
        log_event(log, logging.INFO, f"button {button_id} {state}", button=button_id, state=state)

    # -- alerts -------------------------------------------------------------------------

    async def alert_pressed(self, session: ButtonSession, alert: Alert) -> None:
        """Tell every console at once, store the alert durably, then acknowledge it to the button.

        Consoles do not wait for the disk: the alert index decides in memory
        what the journal will record (new, or a duplicate of the button's open
        alert) and the journal hands out its cursor before the commit. Only
        the button's acknowledgement waits for the commit, so an alert that
        could not be stored is shown but never acknowledged, and the button's
        retries store it as soon as the journal can.
        """
        known = self.alert_index.get(alert.alert_id)
        if known is not None:
            await self._press_retried(session, alert, known)
            return
        button_id = session.identity
        button = self.registry.get(button_id)
        received = replace(
            alert,
            button=button_id,
            site=button.site if button else None,
            received_at=wall_us(),
        )
        decided = self.alert_index.decide(received, self.journal.take_cursor())
        self.alert_index.remember(decided)
        self.counters["alerts"] += 1
        self._announce(decided)
        if decided.state == AlertState.RAISED:
            self.escalator.watch(decided.alert_id, trio.current_time())
            self._escalation_wakeup.set()
        log_event(
            log,
            logging.WARNING,
            f"ALERT {alert.kind} from button {button_id} ({button.site.name if button else 'unregistered site'}), "
            f"id {alert.alert_id}, attempt {alert.attempt}"
            + (f", repeat press of {decided.duplicate_of}" if decided.duplicate_of else ""),
            button=button_id,
            alert_id=alert.alert_id,
            kind=alert.kind,
            attempt=alert.attempt,
            state=decided.state,
            cursor=decided.cursor,
        )
        await self._store_and_ack(session, decided, duplicate=False)

    async def _press_retried(self, session: ButtonSession, alert: Alert, known: Alert) -> None:
        """A press already seen: store it if it is still waiting for the disk, then acknowledge."""
        pending = self._storing.get(alert.alert_id)
        if pending is not None:
            await pending.wait()
        if alert.alert_id in self._unstored:
            await self._store_and_ack(session, self._unstored[alert.alert_id], duplicate=False)
            return
        self.counters["duplicate_alerts"] += 1
        if alert.alert_id not in self._announced:
            # Stored by an earlier run: make sure this run's consoles have it.
            self._announce(known)
        log_event(log, logging.INFO, f"repeated alert {alert.alert_id} from {session.identity}, attempt "
                  f"{alert.attempt}: already stored", button=session.identity, alert_id=alert.alert_id,
                  attempt=alert.attempt, duplicate=True)
        if session.ready:
            session.send(AlertAck(alert_id=alert.alert_id, duplicate=True))

    async def _store_and_ack(self, session: ButtonSession, decided: Alert, *, duplicate: bool) -> None:
        alert_id = decided.alert_id
        storing = self._storing[alert_id] = trio.Event()
        try:
            recorded = await self.journal.record(decided)
        except JournalError as error:
            # Shown to consoles, not acknowledged: the button keeps retrying.
            self._unstored[alert_id] = decided
            self._unstored_error = str(error)
            log_event(log, logging.ERROR, f"alert {alert_id} from {session.identity} NOT stored, not "
                      f"acknowledged: {error}", button=session.identity, alert_id=alert_id, decision="no-ack")
            return
        finally:
            del self._storing[alert_id]
            storing.set()
        self._unstored.pop(alert_id, None)
        if recorded.duplicate and recorded.alert.cursor != decided.cursor:
            log.warning("alert %s was already in the journal (cursor %d) beyond the relay's memory",
                        alert_id, recorded.alert.cursor)
        if session.ready:
            session.send(AlertAck(alert_id=alert_id, duplicate=duplicate or recorded.duplicate))

    def _announce(self, alert: Alert) -> None:
        """Broadcast an alert (in cursor order) and remember (boundedly) that this run did."""
        self._sequencer.release(alert.cursor, alert, trio.current_time())
        self.publish_event(alert)
        self._announced[alert.alert_id] = None
        if len(self._announced) > ANNOUNCED_MEMORY:
            self._announced.popitem(last=False)

    async def alert_update(self, session: ConsoleSession, update: AlertUpdate) -> None:
        """A console asks for a lifecycle step; a refusal goes back to it as a non-fatal error."""
        try:
            await self.act_on_alert(
                alert_id=update.alert_id,
                state=update.state,
                operator=session.identity,
                role=session.operator_role or "operator",
                console=f"console {session.peer}",
                unit=update.unit,
                note=update.note,
                room=session.recipient.room,
                outcome=update.outcome,
                category=update.category,
            )
        except (LifecycleError, JournalError) as error:
            code = error.code if isinstance(getattr(error, "code", None), str) else "journal"
            session.send(Error(code=code, message=str(error), fatal=False))

    async def act_on_alert(
        self,
        *,
        alert_id: str,
        state: str,
        operator: str,
        role: str,
        console: str,
        unit: str = "",
        note: str = "",
        room: str = DEFAULT_ROOM,
        outcome: str = "",
        category: str = "",
    ) -> AlertUpdate:
        """An operator acts on an alert: check role, room and lifecycle, record it, tell the consoles.

        The one door for every client (protocol consoles, the web control
        room); raises LifecycleError or JournalError naming what was wrong.
        An operator may act on the alerts their room sees (alerts/routing.py).
        """
        try:
            if state in SUPERVISOR_ONLY and role != "supervisor":
                raise LifecycleError(
                    f"marking an alert {state} needs a supervisor; operator {operator!r} is {role}"
                )
            alert = await self.journal.get(alert_id)
            if alert is None:
                raise LifecycleError(f"no alert {alert_id}")
            if not self.visible_to(Recipient(role=role, room=room), alert):
                raise LifecycleError(
                    f"alert {alert_id} is answered by {', '.join(self._rooms(alert.button))}, not by room "
                    f"{room!r}; it reaches room {room!r} only if it is escalated to it"
                )
            step = transition(
                alert_id, alert.state, state, operator=operator, console=console, at=wall_us(), unit=unit, note=note,
                outcome=outcome, category=category,
            )
            recorded = await self._apply_step(step)
        except (LifecycleError, JournalError) as error:
            log_event(log, logging.INFO, f"operator {operator} could not move alert {alert_id} to {state}: "
                      f"{error}", operator=operator, alert_id=alert_id, decision="refuse")
            raise
        log_event(log, logging.INFO, f"alert {alert_id} {alert.state} -> {recorded.state} by {operator} "
                  f"({console})" + (f", unit {unit}" if unit else ""), operator=operator, alert_id=alert_id,
                  state=recorded.state, unit=unit, cursor=recorded.cursor, console=console)
        return recorded

    async def _apply_step(self, step: Step, *, level: int | None = None) -> AlertUpdate:
        """Record a lifecycle step or escalation and tell every console, in cursor order."""
        cursor = self.journal.take_cursor()
        update = None
        try:
            update = await self.journal.apply(step, level=level, cursor=cursor)
        finally:
            self._sequencer.release(cursor, update, trio.current_time())
        self.alert_index.state_changed(update.alert_id, update.state)
        if update.state != AlertState.RAISED:
            self.escalator.stop(update.alert_id)
        self.publish_event(update)
        return update

    async def _escalate(self) -> None:
        """Raise the level of alerts nobody acknowledged in time (see alerts/escalation.py)."""
        while True:
            deadline = self.escalator.next_deadline()
            with trio.move_on_at(deadline if deadline is not None else float("inf")):
                await self._escalation_wakeup.wait()
            self._escalation_wakeup = trio.Event()
            for alert_id, level in self.escalator.expire(trio.current_time()):
                after = self.escalator.levels[level - 1]
                step = Step(alert_id=alert_id, previous=AlertState.RAISED.value, state=AlertState.RAISED.value,
                            operator="relay", console="", at=wall_us(),
                            note=f"escalated to level {level}: not acknowledged within {after:g} s")
                try:
                    await self._apply_step(step, level=level)
                except StaleStep as error:
                    self.escalator.stop(alert_id)
                    self._escalation_retries.pop(alert_id, None)
                    log.info("not escalating %s: %s", alert_id, error)
                    continue
                except JournalError as error:
                    # A storage failure must not silence an alert nobody answered: try again.
                    attempt = self._escalation_retries.get(alert_id, 0) + 1
                    self._escalation_retries[alert_id] = attempt
                    delay = backoff_delay(attempt, first=ESCALATION_RETRY)
                    self.escalator.retry(alert_id, level, trio.current_time() + delay)
                    log_event(log, logging.ERROR, f"alert {alert_id} reached escalation level {level} but it "
                              f"could not be recorded ({error}); retrying in {delay:.1f} s",
                              alert_id=alert_id, level=level, reason=str(error))
                    continue
                self._escalation_retries.pop(alert_id, None)
                log_event(log, logging.WARNING, f"alert {alert_id} escalated to level {level}: not "
                          f"acknowledged within {after:g} s", alert_id=alert_id, level=level)

    def _rooms(self, button_id: str) -> tuple[str, ...]:
        button = self.registry.get(button_id)
        return button.control_rooms if button is not None else (DEFAULT_ROOM,)

    def audience(self, event: Any) -> tuple[tuple[str, ...], int] | None:
        """(rooms that answer it, escalation level) of an alert event; None: every console sees it."""
        if isinstance(event, Alert):
            return self._rooms(event.button), event.level
        if isinstance(event, AlertUpdate):
            alert = self.alert_index.get(event.alert_id)
            if alert is not None:
                return self._rooms(alert.button), event.level
        return None

    def visible_to(self, recipient: Recipient, event: Any) -> bool:
        audience = self.audience(event)
        return audience is None or self.routing.sees(recipient, *audience)

    def escalated_alert(self, update: AlertUpdate, recipient: Recipient) -> Alert | None:
        """The alert itself, for a console that this escalation brings it to (it had not seen it)."""
        if not update.level:
            return None
        alert = self.alert_index.get(update.alert_id)
        if alert is None or not self.routing.newly_sees(recipient, self._rooms(alert.button), update.level):
            return None
        return replace(alert, state=update.state, level=update.level)

    def broadcast(self, event: Event) -> None:
        """Send one event to every signed-in console that sees it (alerts/routing.py); bytes built once.

        A console that an escalation brings an alert to gets the alert itself
        first, then the escalation step.
        """
        self._broadcast_seq = (self._broadcast_seq + 1) & 0xFFFFFFFF
        lane = frame_lane(event.frame_type)
        frame = encode_frame(event.frame_type, lane, 0, self._broadcast_seq, 0, encode_body(event))
        cursor = getattr(event, "cursor", 0)
        audience = self.audience(event)
        targets = []
        for console in self.consoles:
            if audience is not None and not self.routing.sees(console.recipient, *audience):
                continue
            if isinstance(event, AlertUpdate) and event.level:
                alert = self.escalated_alert(event, console.recipient)
                if alert is not None:
                    alert_frame = encode_frame(alert.frame_type, frame_lane(alert.frame_type), 0,
                                               self._broadcast_seq, 0, encode_body(alert))
                    if console.held_broadcasts is not None:
                        console.held_broadcasts.append((frame_lane(alert.frame_type), alert_frame, 0))
                    else:
                        console.send_frame(frame_lane(alert.frame_type), alert_frame)
            if console.held_broadcasts is not None:
                console.held_broadcasts.append((lane, frame, cursor))
            elif console.ready:
                targets.append(console.outbox)
        # One compiled loop queues and writes the frame for every console.
        for outbox in deliver(targets, lane, (frame,), 0, False, trio.current_time()):
            outbox.attention()

    # -- streams --------------------------------------------------------------------------

    def stream_described(self, session: ButtonSession, description: StreamDescription) -> None:
        if session.stream_state is None:
            return
        self.hub.describe(session.stream_state, description.tracks)
        self._notify_watchers(session.identity, StreamDescription(button=session.identity, tracks=description.tracks))
        log_event(log, logging.INFO, f"button {session.identity} described {len(description.tracks)} track(s): "
                  + ", ".join(f"{t.track_id}={t.kind}/{t.codec}" for t in description.tracks),
                  button=session.identity)

    def _notify_watchers(self, button_id: str, description: StreamDescription) -> None:
        for console in self.consoles:
            if console.outbox in self.hub.watchers.get(button_id, ()):
                console.send(description)
                _start_at_keyframe(console.outbox, description.tracks)

    def subscribe(self, session: ConsoleSession, button_id: str, now: float) -> None:
        if button_id not in self.registry:
            session.send(Error(code="unknown-button", message=f"no button {button_id!r} in the registry", fatal=False))
            return
        limit = self.config.max_subscriptions_per_console
        if session.outbox not in self.hub.watchers.get(button_id, ()) and self.hub.watching(session.outbox) >= limit:
            self.counters["subscriptions_refused"] += 1
            session.send(Error(code="subscription-limit", fatal=False, message=(
                f"console {session.identity} already watches {limit} buttons (max_subscriptions_per_console); "
                f"unsubscribe from one before watching {button_id}")))
            return
        stream = self.hub.subscribe(button_id, session.outbox)
        catchup = self.hub.catchup(stream)
        if stream is not None and stream.gop_bytes > session.outbox.max_video_bytes:
            catchup = []  # it would be dropped on arrival; start at the next keyframe instead
        if not catchup and stream is not None:
            _start_at_keyframe(session.outbox, stream.tracks.values())
        tracks = tuple(stream.tracks.values()) if stream is not None else ()
        session.send(Subscribed(button=button_id, tracks=tracks, catchup_frames=len(catchup)))
        self.hub.push_gop(session.outbox, catchup, now)
        if stream is not None and (not catchup or now - stream.gop_started_at > self.config.join_keyframe_age):
            self.request_keyframe(button_id, now, requested_by=session.identity)
        log_event(log, logging.INFO, f"console {session.identity} watching button {button_id} "
                  f"({len(catchup)} cached frames)", operator=session.identity, button=button_id,
                  action="subscribe")

    def request_keyframe(self, button_id: str, now: float, *, requested_by: str = "") -> None:
        session = self.sessions_by_button.get(button_id)
        if session is None or not session.ready:
            return
        if now - self._keyframe_requested.get(button_id, float("-inf")) < KEYFRAME_REQUEST_INTERVAL:
            return
        self._keyframe_requested[button_id] = now
        session.send(KeyframeRequest(button=button_id))

    def stats(self) -> dict[str, Any]:
        return {
            **self.counters,
            "buttons_connected": len(self.sessions_by_button),
            "consoles_connected": len(self.consoles),
            "buttons_online": len(self.supervisor.online),
            **self.hub.stats(),
        }


    def traffic(self) -> dict[str, int]:
        """Media in, bytes out and media dropped for slow consoles, since the relay started.

        Read at a metrics scrape, never on the per-frame path: it walks the sessions.
        """
        totals = dict(self._ended_traffic)
        for session in self.sessions:
            for key, value in _session_traffic(session).items():
                totals[key] += value
        return totals


#: What ``Relay.traffic()`` counts.
TRAFFIC_KEYS = ("media_messages_in", "media_bytes_in", "bytes_out", "dropped_video", "dropped_audio")


def _session_traffic(session: Session) -> dict[str, int]:
    outbox = session.outbox
    stream = getattr(session, "stream_state", None)
    return {
        "media_messages_in": stream.messages_in if stream is not None else 0,
        "media_bytes_in": stream.bytes_in if stream is not None else 0,
        "bytes_out": outbox.bytes_sent,
        "dropped_video": outbox.dropped_video,
        "dropped_audio": outbox.dropped_audio,
    }


class _EventStream:
    """One reader of ``Relay.events()``: its channel and what it missed while behind."""

    __slots__ = ("name", "channel", "buffer", "missed", "missed_alerts")

    def __init__(self, name: str, channel: trio.MemorySendChannel[Any], buffer: int) -> None:
        self.name = name
        self.channel = channel
        self.buffer = buffer
        #: Events dropped since it last took one, and how many of them were alerts.
        self.missed = 0
        self.missed_alerts = 0


async def _serve(handler: Any, listeners: list[trio.SocketListener], nursery: trio.Nursery) -> None:
    await trio.serve_listeners(handler, listeners, handler_nursery=nursery)


def _start_at_keyframe(outbox: Outbox, tracks: Any) -> None:
    """A subscriber gets a stream's video from a keyframe on, never a frame it cannot decode."""
    for track in tracks:
        if track.kind == "video":
            outbox.wait_for_keyframe(track.track_id)


async def _listen(address: Address, what: str) -> list[trio.SocketListener]:
    try:
        return await trio.open_tcp_listeners(address.port, host=address.host)
    except OSError as error:
        raise ConfigError(
            f"cannot listen for {what} on {address}: {error.strerror or error} "
            "(is another relay running? choose another port with --" + what + "-listen)"
        ) from None


def _refuse_unencrypted_network(config: RelayConfig) -> None:
    """Plaintext only on loopback, unless the address is named in allow_plaintext too.

    The live video of a woman in danger must not cross a network readable by
    anyone on the path because a TLS setting was forgotten.
    """
    if config.tls_cert is not None:
        return
    for setting, address in (("buttons_listen", config.buttons_listen), ("consoles_listen", config.consoles_listen)):
        if _is_loopback(address.host) or str(address) in config.allow_plaintext:
            continue
        raise ConfigError(
            f"{setting} {address} is not a loopback address and has no TLS: set tls_cert and tls_key "
            f"('pinkrelay certs init DIR' makes them), or, on a network that is already encrypted (VPN, "
            f"private APN), allow plaintext on it by naming it again: allow_plaintext = [\"{address}\"]"
        )


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _prepare_data_dir(path: Path) -> None:
    """Create the data directory (0700) or say plainly why it cannot be used."""
    if path.exists() and not path.is_dir():
        raise ConfigError(f"data directory {path} is a file, not a directory; pass --data-dir DIR")
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as error:
        raise ConfigError(f"data directory {path}: {error.strerror or error}") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise ConfigError(f"data directory {path} is not writable; fix its permissions or pass --data-dir DIR")


def _bound(listeners: list[trio.SocketListener]) -> Address:
    host, port = listeners[0].socket.getsockname()[:2]
    return Address(host, port)


def _peer(stream: trio.SocketStream) -> str:
    try:
        host, port = stream.socket.getpeername()[:2]
    except OSError:
        return "?"
    return f"{host}:{port}"


def read_console_tokens(path: Path) -> dict[str, bytes]:
    """Read ``operator token`` lines (``#`` comments allowed)."""
    tokens: dict[str, bytes] = {}
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as error:
        raise ConfigError(f"console tokens file {path}: {error.strerror or error}") from None
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split()
        if len(parts) != 2 or len(parts[1]) < 16:
            raise ConfigError(
                f"console tokens file {path}:{number}: expected 'OPERATOR TOKEN' with a token of "
                "at least 16 characters"
            )
        tokens[parts[0]] = parts[1].encode()
    return tokens


@asynccontextmanager
async def open_relay(config: RelayConfig | None = None, **kwargs: Any) -> AsyncIterator[Relay]:
    """Run a relay for the duration of the block; shut it down on exit."""
    relay = Relay(config, **kwargs)
    async with trio.open_nursery() as nursery:
        await nursery.start(relay.serve)
        try:
            yield relay
        finally:
            with trio.CancelScope(shield=True):
                await relay.shutdown()
            nursery.cancel_scope.cancel()


__all__ = ["Relay", "open_relay", "read_console_tokens"]
