"""Relay: the trio server that holds buttons and consoles, puts alerts first and fans out media.

Embed it in a trio program::

    async with trio.open_nursery() as nursery:
        relay = await nursery.start(Relay(config).serve)
        async for event in relay.events():
            ...

or use ``open_relay(config)``, an async context manager that does the same
and shuts the relay down on exit. ``pinkrelay serve`` is a thin wrapper.

``Relay`` is composed of desks, one module each, that share its state:

- ``admission_desk``: who may connect (limits, TLS, registry, accounts,
  authentication) and the welcome that makes a session READY;
- ``alert_desk``: the journal, the alert index, the broadcast to consoles,
  lifecycle steps and escalation;
- ``supervision_desk``: which buttons are alive, and offline alerts;
- ``media_desk``: track ids, the hub's streams and subscriptions;
- ``event_streams``: events for a service that embeds the relay.

Sessions (``sessions.py``) move bytes; an alert followed from a button's
socket to a console passes the session, the alert desk and the consoles'
sessions once each. This module creates the state and runs the tasks.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import secrets
from collections import OrderedDict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any

import trio

from ..alerts.escalation import Escalator
from ..alerts.index import AlertIndex
from ..alerts.journal import SqliteJournal
from ..alerts.lifecycle import AlertState
from ..alerts.routing import Routing
from ..config import Address, RelayConfig
from ..errors import ConfigError
from ..integrations.dispatcher import dispatcher_for
from ..logs import event as log_event
from ..operators import OperatorStore
from ..protocol import (
    Alert,
    Goodbye,
)
from ..registry import Registry
from .admission_desk import AdmissionDesk, read_console_tokens
from .alert_desk import INDEX_HISTORY_US, AlertDesk
from . import data_plane
from .data_plane import DataPlaneLink
from .flood import PressGuard
from .event_streams import EventStreams, _EventStream
from .evidence import EvidenceDesk
from .evidence.talkback import TalkBackEvidence
from .hub import Hub
from .limits import Admission
from .media_desk import TRAFFIC_KEYS, MediaDesk
from .outage_desk import OutageDesk
from .sequencer import CursorSequencer
from .test_presses import TestPresses
from .sessions import ButtonSession, ConsoleSession, Session, wall_us
from .supervision import Supervisor
from .supervision_desk import SupervisionDesk
from .talkback import TalkBackDesk
from .timers import SessionTimers
from .tracks import TrackSpace

log = logging.getLogger("pinkrelay.relay")


class Relay(AdmissionDesk, AlertDesk, SupervisionDesk, MediaDesk, EventStreams):
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
        self.journal = journal if journal is not None else _alert_store(self.config)
        if self.journal.announces:
            self.journal.on_event = self._stored_event
        #: In a cluster: which relay holds which button, fencing and orphans' supervision (cluster/membership.py).
        self.cluster = _membership(self)
        #: Delivers every stored alert and step to the configured sinks (pinkrelay/integrations).
        self.integrations = dispatcher_for(self, self.config.sinks) if self.config.sinks else None
        #: Buttons in test mode for maintenance: their presses page nobody (relay/test_presses.py).
        self.test_presses = TestPresses(self)
        self.escalator = Escalator(self.config.escalation_levels)
        self.routing = Routing(self.config.escalation_groups)
        self.hub = Hub(gop_cache_bytes=self.config.gop_cache_bytes, audio_hold=self.config.audio_hold)
        #: The compiled data plane (relay/data_plane.py), with data_threads > 0 and the compiled core.
        self.data_plane = self._start_data_plane()
        self.supervisor = Supervisor(self.config.supervision_window)
        #: Operators' voices to buttons: who may talk, and the audit of every talk (talkback.py).
        self.talkback = TalkBackDesk(self)
        #: Pre-roll and incident recordings (relay/evidence/): a reader of the hub's streams.
        self.evidence = EvidenceDesk(self)
        self.hub.listeners.append(self.evidence)
        self.talkback.evidence_hook = TalkBackEvidence(self.evidence)
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
        #: Many buttons of one district offline together: one mass-outage alert (relay/outage_desk.py).
        self.outages = OutageDesk(self)
        #: Every session's heartbeat, silence and handshake deadlines, in one task (relay/timers.py).
        self.timers = SessionTimers()
        self.press_guard = PressGuard(self.config.press_rate_per_button, self.config.press_burst_per_button)
        self.tracks = TrackSpace(self.config.max_tracks, is_watched=self.hub.is_watched)
        self.hub.unwatched = self.tracks.unwatched
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
        #: In a cluster: trio time each raised alert was received at, for escalating alerts of other relays.
        self._raised_at: dict[str, float] = {}
        #: Escalations that could not be recorded, by alert: how often they were tried (for the backoff).
        self._escalation_retries: dict[str, int] = {}
        self.stopping = False

    # -- running -----------------------------------------------------------------

    def _start_data_plane(self) -> DataPlaneLink | None:
        threads = self.config.data_threads
        if not threads:
            return None
        if not data_plane.available():
            # PINKRELAY_PUREPYTHON asks for the trio path; a core that is not built is worth a warning.
            from .._core import PURE_PYTHON_REQUESTED

            log.log(logging.DEBUG if PURE_PYTHON_REQUESTED else logging.WARNING,
                    "data_threads = %d, but the compiled core is not in use (PINKRELAY_PUREPYTHON, or not "
                    "built): media takes the trio path", threads)
            return None
        return DataPlaneLink(self.config)

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
            if self.cluster is not None:
                await self.cluster.open()
            await self._restore()
            await self._serve(button_listeners, console_listeners, task_status)
        finally:
            with trio.CancelScope(shield=True):
                if self.cluster is not None:
                    with trio.move_on_after(2):
                        await self.cluster.leave()
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
            if self.data_plane is not None:
                nursery.start_soon(self.data_plane.run)
            await nursery.start(self.evidence.run)
            nursery.start_soon(self._supervise)
            nursery.start_soon(self._escalate)
            nursery.start_soon(self.outages.run)
            nursery.start_soon(self.timers.run)
            if self.cluster is not None:
                nursery.start_soon(self.cluster.run)
            nursery.start_soon(self._watch_operators)
            nursery.start_soon(self.test_presses.watch)
            nursery.start_soon(self._report_drops)
            nursery.start_soon(self._report_unstored)
            nursery.start_soon(self._unblock_sequencer)
            if self.integrations is not None:
                nursery.start_soon(self.integrations.run)
            async with trio.open_nursery() as connections:
                with trio.CancelScope() as listening:
                    self._listener_scope = listening
                    connections.start_soon(
                        _serve, partial(self._run_session, ButtonSession), button_listeners, connections
                    )
                    connections.start_soon(
                        _serve, partial(self._run_session, ConsoleSession), console_listeners, connections
                    )
                    log_event(
                        log,
                        logging.INFO,
                        f"relay listening: buttons on {self.buttons_address}, consoles on "
                        f"{self.consoles_address}; {len(self.registry)} buttons registered"
                        + (f"; {self.config.data_threads} data threads" if self.data_plane is not None else ""),
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

    def stats(self) -> dict[str, Any]:
        return {
            **self.counters,
            "buttons_connected": len(self.sessions_by_button),
            "consoles_connected": len(self.consoles),
            "buttons_online": len(self.supervisor.online),
            **self.hub.stats(),
            **self.evidence.stats(),
            **(self.data_plane.stats() if self.data_plane is not None else {}),
            **self.tracks.stats(),
            **self.press_guard.stats(),
            **self.outages.stats(),
        }


async def _serve(handler: Any, listeners: list[trio.SocketListener], nursery: trio.Nursery) -> None:
    await trio.serve_listeners(handler, listeners, handler_nursery=nursery)


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


def _alert_store(config: RelayConfig) -> Any:
    """The SQLite journal, or with ``cluster_nats_urls`` the cluster's JetStream stream (alerts/store.py)."""
    if not config.cluster_nats_urls:
        return SqliteJournal(config.data_dir / "journal.sqlite3")
    try:
        import nats  # noqa: F401
    except ImportError:
        raise ConfigError("cluster_nats_urls needs the NATS client: pip install 'pinkrelay[cluster]'") from None
    from ..cluster.bus import JetStreamAlertStore

    return JetStreamAlertStore(config.cluster_nats_urls, relay=config.relay_name,
                               namespace=config.cluster_namespace, replicas=config.cluster_replicas)


def _membership(relay: Relay) -> Any:
    if not relay.config.cluster_nats_urls or not relay.journal.announces:
        return None
    from ..cluster.membership import Membership

    return Membership(relay, lease=relay.config.cluster_lease)


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
