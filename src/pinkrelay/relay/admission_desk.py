"""Who may connect, and how they are welcomed.

The door (admission limits, TLS), the registry of buttons, console tokens
and operator accounts, the challenge and the check of a client's proof,
and the welcome that makes a session READY: a button gets its track ids
and a stream in the hub, a console the state of things and then live events.

A part of ``Relay`` (server.py), which is composed of these desks; they
share its state, set up in ``Relay.__init__``.
"""

from __future__ import annotations

import logging
import os
import secrets
from pathlib import Path
from typing import Any

import trio

from .. import tls
from .._core import Lane
from ..alerts.journal import JournalError
from ..alerts.routing import Recipient
from ..errors import AuthenticationFailed, ConfigError, ProtocolError
from ..logs import event as log_event
from ..operators import SCRYPT_N, SCRYPT_P, SCRYPT_R
from ..protocol import (
    ButtonState,
    Error,
    StreamDescription,
    auth,
)
from ..registry import Registry, load_registry
from . import door, registry_reload
from . import events as relay_events
from .data_plane import join_watchers
from .limits import Refusal
from .media_desk import _session_traffic
from .sessions import ButtonSession, ConsoleSession, Session, wall_us

log = logging.getLogger("pinkrelay.relay")

DEFAULT_OPERATOR = "duty-officer"

OPERATOR_POLL_INTERVAL = 1.0


class AdmissionDesk:
    """Who may connect, and how they are welcomed."""

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
            self.tracks.disconnected(session.identity)
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

    async def authenticate(self, session: Session, now: float) -> None:
        """Check a client's proof and welcome it, or refuse it."""
        conn = session.conn
        identity = conn.identity
        key = (session.role, identity)
        last = self._handshake_counters.get(key, 0)
        shared = getattr(self.journal, "counter_of", None)
        if shared is not None:
            last = max(last, shared(session.role, identity))  # a cluster: the last any relay accepted
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
            elif self._console_token(identity) is not None:
                conn.verify(self._console_token(identity), last)
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

    def _console_token(self, identity: str) -> bytes | None:
        """A console token: from console_tokens, or another relay's of this cluster (cluster/media.py)."""
        token = self.console_tokens.get(identity)
        if token is None and self.cluster is not None:
            token = self.cluster.media.token_of(identity)
        return token

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
        if self._console_token(session.identity) is not None:
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

    def _welcome_button(self, session: ButtonSession, now: float) -> None:
        button_id = session.identity
        protocol = min(session.conn.hello.protocol, 2) if session.conn.hello else 1
        track_ids = self._track_block(button_id, wide=protocol >= 2)
        welcome = session.conn.welcome(
            session=secrets.token_hex(8), track_ids=track_ids, chunk_size=self.config.chunk_size,
            protocol=protocol, now=now,
        )
        session.outbox.send(Lane.CONTROL, [welcome], now)
        previous = self.sessions_by_button.get(button_id)
        if previous is not None and previous is not session:
            previous.say_goodbye("replaced by a newer connection from the same button")
            if previous.stream_state is not None:
                self.hub.close_stream(previous.stream_state)
        self.sessions_by_button[button_id] = session
        if self.data_plane is not None:
            # A data thread reads the button once Python's reader reaches a frame boundary
            # (ButtonSession.hand_over_reading); until then, and if it ever hands the socket
            # back, what Python reassembles is fanned out by the data plane too.
            session.publisher = self.data_plane.publisher(session)
        stream = session.stream_state = self.hub.open_stream(button_id, track_ids, session.publisher)
        if stream.publisher is not None:
            join_watchers(stream.publisher, self.hub.watchers.get(button_id, ()))
        # conn.media_sink is set when the button first describes its tracks (media_desk.py): media
        # before that is discarded anyway (protocol.md §2.3 F2), and most buttons sit idle for days.
        log_event(log, logging.INFO, f"button {button_id} authenticated from {session.peer}",
                  role="button", identity=button_id, peer=session.peer)
        if self.cluster is not None:
            self.cluster.welcomed(session)
        self.button_seen(button_id, now)

    async def _welcome_console(self, session: ConsoleSession, now: float) -> None:
        """Welcome, then the state of things, then live: nothing lost, nothing out of order.

        The console joins the broadcast list at once but its broadcasts are
        held while the journal snapshot is read; afterwards only held events
        newer than the snapshot are sent, so an alert committed meanwhile is
        neither lost nor sent twice.
        """
        protocol = min(session.conn.hello.protocol, 2) if session.conn.hello else 1
        welcome = session.conn.welcome(session=secrets.token_hex(8), chunk_size=self.config.chunk_size,
                                       protocol=protocol, now=now)
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
        online = self.online_buttons()
        for button_id, button in self.registry.items():
            state = "online" if button_id in online else "offline"
            session.send(ButtonState(button=button_id, state=state, at=wall_us(), site=button.site))
        for event in [*open_alerts, *missed]:
            if self.visible_to(session.recipient, event):
                session.send(event)
        for lane, frame, cursor in held:
            if cursor == 0 or cursor > snapshot_cursor:
                session.send_frame(lane, frame)


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
