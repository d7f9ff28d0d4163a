"""JetStreamAlertStore: the relay's alert store on a replicated JetStream stream (a cluster of relays).

It answers the relay the way the SQLite journal does (alerts/store.py names
the calls) with the stream as the durable record:

- ``record(alert)`` publishes the raise and returns once JetStream's PubAck
  says the record is stored on a majority of the stream's replicas (each
  nats-server runs with ``sync_interval: always``: stored means on disk).
  The relay acknowledges the press to the button only then. The message id
  is the alert id, so a button's retry through any relay is a duplicate,
  and the raise expects an empty subject, so it is stored once even after
  JetStream's duplicate window.
- ``apply(step)`` publishes a lifecycle step or escalation expecting the
  alert's last record this relay has seen: when another relay changed the
  alert meanwhile, the step is stale (``StaleStep``), as in the journal.
- Every relay reads the whole stream, in order, into an ``AlertView`` and
  tells its consoles of each record with the stream sequence as its cursor
  (``on_event``). So every console of the cluster sees the same events in
  the same order with the same cursors, and resumes on any relay.

A publish that gets no PubAck (no quorum, no NATS server reachable) raises
JournalError: the relay does not acknowledge, the button keeps retrying,
and nothing is acknowledged that is not stored.
"""

from __future__ import annotations

import heapq
import logging
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import trio

from ..alerts.journal import JournalError, Recorded, StaleStep
from ..alerts.lifecycle import AlertState, Step
from ..protocol import Alert, AlertUpdate, ButtonState
from . import records
from .bridge import NatsThread
from .records import Subjects
from .view import AlertView

log = logging.getLogger("pinkrelay.cluster")

#: Seconds to wait for a PubAck before the relay treats the record as not stored.
PUBLISH_TIMEOUT = 5.0
#: JetStream remembers message ids this long: a retry within it is answered from the id alone.
DUPLICATE_WINDOW = 600.0
#: Seconds a relay starting waits for JetStream to answer for the stream (a leader election takes a few).
OPEN_TIMEOUT = 20.0
#: Compare-and-set attempts on a KV key that other relays change at the same moment.
CAS_ATTEMPTS = 50
#: Seconds a relay waits for its own record to come back on the stream before it answers anyway.
READ_YOUR_WRITE = 2.0


def _describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}" if str(error) else type(error).__name__


class JetStreamAlertStore:
    """The alert store of a relay in a cluster. ``await open()`` before use, ``await close()`` after."""

    durable = True
    #: Consoles hear of stored events from the stream (``on_event``), not from the relay before the commit.
    announces = True

    def __init__(
        self,
        urls: Sequence[str],
        *,
        relay: str,
        namespace: str = "pinkrelay",
        replicas: int = 3,
        publish_timeout: float = PUBLISH_TIMEOUT,
        nats: NatsThread | None = None,
    ) -> None:
        self.urls = tuple(urls)
        self.relay = relay
        self.subjects = Subjects(namespace)
        self.replicas = replicas
        self.publish_timeout = publish_timeout
        self.nats = nats or NatsThread()
        self.view = AlertView()
        #: Called in the trio thread for each new record, in stream order (the relay's broadcast).
        self.on_event: Callable[[Alert | AlertUpdate | ButtonState], None] | None = None
        #: Called after each stored record with its publish time in seconds and 1 (as the journal's).
        self.on_commit: Callable[[float, int], None] | None = None
        self.connection: Any = None
        self.jetstream: Any = None
        self._subscription: Any = None
        self._waiting: list[tuple[int, int, trio.Event]] = []
        self._waiters = 0
        self.commits = 0
        self.bad_records = 0
        #: Times the relay's own record had not come back on the stream within READ_YOUR_WRITE.
        self.behind = 0
        self._closing = False
        self._counters: dict[tuple[str, str], int] = {}
        self._counter_bucket: Any = None

    @property
    def where(self) -> str:
        return f"alert stream {self.subjects.stream} on {', '.join(self.urls)}"

    # -- connection ----------------------------------------------------------------

    async def open(self) -> None:
        """Connect, make sure the stream exists, and read it to its end before the relay serves."""
        await self.nats.start()
        try:
            self.connection = await self.nats.call(self._connect)
            self.jetstream = self.connection.jetstream(timeout=self.publish_timeout)
            last = await self._soon(self._ensure_stream)
            self._subscription = await self._soon(self._follow)
            await self._soon(self._follow_counters)
        except Exception as error:
            await self.close()
            if isinstance(error, JournalError):
                raise
            raise JournalError(f"{self.where}: cannot open it ({_describe(error)}); check that the NATS "
                               "cluster runs and cluster_nats_urls names its servers") from None
        with trio.move_on_after(60):
            await self._caught_up(last)
        if self.view.last_seq < last:
            raise JournalError(f"{self.where}: read {self.view.last_seq} of {last} records in 60 s; "
                               "the NATS cluster is too slow to start a relay on")

    async def _connect(self) -> Any:
        import nats

        async def error(err: Exception) -> None:
            log.warning("NATS connection of relay %s: %s", self.relay, _describe(err))

        async def disconnected() -> None:
            if self._closing:
                return
            log.warning("relay %s lost its NATS server; reconnecting to another of %s", self.relay,
                        ", ".join(self.urls))

        async def reconnected() -> None:
            log.info("relay %s reconnected to NATS at %s", self.relay, self.connection.connected_url.netloc)

        return await nats.connect(
            servers=list(self.urls), name=f"pinkrelay {self.relay}", connect_timeout=2,
            reconnect_time_wait=0.25, max_reconnect_attempts=-1, allow_reconnect=True,
            error_cb=error, disconnected_cb=disconnected, reconnected_cb=reconnected,
        )

    async def _soon(self, step: Any) -> Any:
        """``step()`` on the NATS loop, again until it works: a leader election (a node just died) takes seconds."""
        deadline = trio.current_time() + OPEN_TIMEOUT
        while True:
            try:
                return await self.nats.call(step)
            except Exception as error:
                if trio.current_time() > deadline:
                    raise
                log.info("%s: not ready yet (%s); trying again", self.where, _describe(error))
                await trio.sleep(0.25)

    async def _ensure_stream(self) -> int:
        from nats.js.api import StorageType, StreamConfig
        from nats.js.errors import NotFoundError

        config = StreamConfig(
            name=self.subjects.stream, subjects=[self.subjects.all], storage=StorageType.FILE,
            num_replicas=self.replicas, duplicate_window=DUPLICATE_WINDOW,
            description="pinkrelay: alerts, lifecycle steps, escalations and button states",
        )
        try:
            info = await self.jetstream.stream_info(self.subjects.stream)
        except NotFoundError:
            info = await self.jetstream.add_stream(config)
        return int(info.state.last_seq)

    async def _follow(self) -> Any:
        from nats.js.api import DeliverPolicy

        async def arrived(message: Any) -> None:
            self.nats.to_trio(self._arrived, message.metadata.sequence.stream, message.data)

        return await self.jetstream.subscribe(
            self.subjects.all, stream=self.subjects.stream, cb=arrived, ordered_consumer=True,
            deliver_policy=DeliverPolicy.ALL, idle_heartbeat=1.0,
        )

    async def close(self) -> None:
        self._closing = True
        connection, self.connection = self.connection, None
        if connection is not None and self.nats.loop is not None:
            with trio.move_on_after(2):
                try:
                    await self.nats.call(connection.close)
                except Exception as error:  # closing is best effort: the process may be going anyway
                    log.debug("closing NATS: %s", _describe(error))
        await self.nats.stop()

    # -- the stream, in order --------------------------------------------------------

    def _arrived(self, seq: int, body: bytes) -> None:
        """A record from the stream (trio thread, stream order)."""
        if seq <= self.view.last_seq:
            return  # the ordered consumer was recreated and delivers from where we were
        try:
            kind, event, note = records.decode(seq, body)
        except records.BadRecord as error:
            self.bad_records += 1
            self.view.last_seq = seq
            log.error("%s: %s; skipped", self.where, error)
        else:
            told = self.view.apply(seq, kind, event, note)
            if told is not None and self.on_event is not None:
                self.on_event(told)
        while self._waiting and self._waiting[0][0] <= self.view.last_seq:
            heapq.heappop(self._waiting)[2].set()

    async def _caught_up(self, seq: int, timeout: float = float("inf")) -> None:
        """Wait until the view has applied the record at ``seq`` (at most ``timeout``; then say so)."""
        if self.view.last_seq >= seq:
            return
        event = trio.Event()
        self._waiters += 1
        heapq.heappush(self._waiting, (seq, self._waiters, event))
        with trio.move_on_after(timeout):
            await event.wait()
        if self.view.last_seq < seq:
            self.behind += 1
            log.warning("%s: relay %s has read to record %d, not yet %d, after %g s; its consoles hear of "
                        "newer records late (NATS slow or reconnecting)", self.where, self.relay,
                        self.view.last_seq, seq, timeout)

    async def _publish(self, subject: str, body: bytes, headers: dict[str, str]) -> Any:
        """Publish and return the PubAck; JournalError when it is not stored (or StaleStep's cause)."""
        from nats.js.errors import APIError

        if self.connection is None:
            raise JournalError(f"{self.where} is not open")
        started = trio.current_time()
        try:
            ack = await self.nats.call(self.jetstream.publish, subject, body, timeout=self.publish_timeout,
                                       headers=headers)
        except APIError as error:
            if error.err_code in records.WRONG_LAST_SEQUENCE:
                raise _WrongLast(str(error)) from None
            raise JournalError(f"{self.where}: JetStream refused the record ({_describe(error)}); "
                               "not stored") from None
        except Exception as error:
            raise JournalError(f"{self.where}: no PubAck within {self.publish_timeout:g} s "
                               f"({_describe(error)}); not stored, check the NATS cluster") from None
        self.commits += 1
        if self.on_commit is not None:
            self.on_commit(trio.current_time() - started, 1)
        return ack

    # -- what the relay asks --------------------------------------------------------

    @property
    def next_cursor(self) -> int:
        return self.view.last_seq + 1

    def take_cursor(self) -> int:
        """0: the stream sequence is the cursor, known only once stored."""
        return 0

    async def record(self, alert: Alert, *, merge_window_us: int = 0, test_note: str = "") -> Recorded:
        """Store a press once (by alert id, across relays); a retry returns it with ``duplicate`` set."""
        known = self.view.alerts.get(alert.alert_id)
        if known is not None:
            return Recorded(known, True)
        headers = {"Nats-Msg-Id": f"raised:{alert.alert_id}", "Nats-Expected-Last-Subject-Sequence": "0"}
        subject = self.subjects.alert(alert.alert_id)
        try:
            ack = await self._publish(subject, records.raised(alert, self.relay, test_note=test_note), headers)
        except _WrongLast:
            return await self._stored(alert, await self._last_of(subject))
        await self._caught_up(ack.seq, READ_YOUR_WRITE)
        if ack.duplicate:
            return await self._stored(alert, ack.seq)
        return Recorded(self.view.alerts.get(alert.alert_id) or replace(alert, cursor=ack.seq), False)

    async def record_test(self, alert: Alert, *, note: str, sinks: tuple[str, ...] = ()) -> Recorded:
        """Store a press of a button in test mode, closed at once (as SqliteJournal.record_test)."""
        closed = replace(alert, state=AlertState.FALSE_ALARM.value, level=0, duplicate_of="")
        return await self.record(closed, test_note=note)

    async def _stored(self, alert: Alert, seq: int = 0) -> Recorded:
        """The alert was stored before (by this relay or another): as the stream has it."""
        if seq:
            await self._caught_up(seq, READ_YOUR_WRITE)
        stored = self.view.alerts.get(alert.alert_id)
        return Recorded(stored or replace(alert, cursor=seq), True)

    async def apply(self, step: Step, *, level: int | None = None, cursor: int = 0) -> AlertUpdate:
        """Record a lifecycle step, checked against the alert's current state across the cluster."""
        alert = self.view.alerts.get(step.alert_id)
        if alert is None:
            raise StaleStep(f"no alert {step.alert_id} on the {self.where}")
        if alert.state != step.previous:
            raise StaleStep(f"alert {step.alert_id} changed to {alert.state} meanwhile; refresh and try again")
        if level is not None and level <= alert.level:
            # Every relay escalates every alert; the stream has this level from another already.
            raise StaleStep(f"alert {step.alert_id} is at escalation level {alert.level} already")
        new_level = alert.level if level is None else level
        kind = "note" if step.state == step.previous and step.note and level is None else (
            "escalated" if level is not None else "transition")
        headers = {"Nats-Expected-Last-Subject-Sequence": str(self.view.last_record[step.alert_id])}
        try:
            ack = await self._publish(self.subjects.alert(step.alert_id),
                                      records.step(step, new_level, kind, self.relay), headers)
        except _WrongLast:
            # Read what won before answering, so the caller's next look sees it.
            await self._caught_up(await self._last_of(self.subjects.alert(step.alert_id)), READ_YOUR_WRITE)
            raise StaleStep(f"alert {step.alert_id} was changed on another relay meanwhile; "
                            "refresh and try again") from None
        await self._caught_up(ack.seq, READ_YOUR_WRITE)
        return AlertUpdate(alert_id=step.alert_id, state=step.state, operator=step.operator, note=step.note,
                           unit=step.unit, at=step.at, level=new_level, cursor=ack.seq, outcome=step.outcome,
                           category=step.category)

    async def _last_of(self, subject: str) -> int:
        """The stream sequence of the last record on ``subject`` (0 if it cannot be read now)."""
        try:
            message = await self.nats.call(self.jetstream.get_last_msg, self.subjects.stream, subject)
        except Exception as error:
            log.warning("%s: last record of %s not read (%s)", self.where, subject, _describe(error))
            return 0
        return int(message.seq)

    async def button_state(self, state: ButtonState, *, msg_id: str = "") -> None:
        """Record a button going online or offline, for every relay's consoles (once per ``msg_id``)."""
        headers = {"Nats-Msg-Id": msg_id} if msg_id else {}
        await self._publish(self.subjects.button(state.button), records.button(state, self.relay), headers)

    async def get(self, alert_id: str) -> Alert | None:
        return self.view.alerts.get(alert_id)

    async def open_alerts(self) -> list[Alert]:
        return self.view.open_alerts()

    async def recent_alerts(self, since_us: int, limit: int = 200_000) -> list[Alert]:
        return self.view.recent_alerts(since_us)[-limit:]

    async def events_since(self, cursor: int, limit: int = 10000) -> list[Alert | AlertUpdate]:
        return self.view.events_after(cursor, limit)

    async def snapshot(self, resume_from: int = 0) -> tuple[int, list[Alert], list[Alert | AlertUpdate]]:
        """(last sequence, open alerts, events after ``resume_from``), all from one moment of the view."""
        missed = self.view.events_after(resume_from) if resume_from else []
        return self.view.last_seq, self.view.open_alerts(), missed

    async def last_cursor(self) -> int:
        return self.view.last_seq

    async def probe(self) -> None:
        """Raise JournalError unless JetStream answers for the stream now (readiness)."""
        if self.connection is None:
            raise JournalError(f"{self.where} is not open")
        try:
            with trio.fail_after(self.publish_timeout):
                await self.nats.call(self.jetstream.stream_info, self.subjects.stream)
        except Exception as error:
            raise JournalError(f"{self.where}: JetStream does not answer ({_describe(error)})") from None

    # -- handshake counters: a KV bucket every relay follows -------------------------

    def counter_of(self, role: str, identity: str) -> int:
        """The last handshake counter any relay of the cluster accepted for this role and identity."""
        return self._counters.get((role, identity), 0)

    async def load_counters(self) -> dict[tuple[str, str], int]:
        """Nothing for the relay's own restore: in a cluster, ``counter_of`` answers at each sign-in."""
        return {}

    async def save_counter(self, role: str, identity: str, counter: int) -> None:
        """Raise the shared counter to ``counter`` (never lower it), so no relay accepts an older hello.

        The welcome does not wait for it: a sign-in must not stall while the
        counters bucket elects a leader (a NATS node just died). The hello is
        also bound to this relay's fresh nonce, so the moment before the other
        relays know the counter opens no replay.
        """
        self._counters[(role, identity)] = max(counter, self._counters.get((role, identity), 0))
        if self._counter_bucket is not None:
            self.nats.spawn(self._raise_counter, f"{role}.{records.token(identity)}", role, identity, counter)

    async def _raise_counter(self, key: str, role: str, identity: str, counter: int) -> None:
        import asyncio

        import msgpack
        from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError

        value = msgpack.packb({"role": role, "identity": identity, "counter": counter})
        for _ in range(CAS_ATTEMPTS):
            try:
                entry = await self._counter_bucket.get(key)
            except KeyNotFoundError:
                entry = None
            try:
                if entry is None:
                    await self._counter_bucket.create(key, value)
                elif msgpack.unpackb(entry.value)["counter"] < counter:
                    await self._counter_bucket.update(key, value, last=entry.revision)
                return
            except (KeyWrongLastSequenceError, KeyNotFoundError):
                # Another relay moved it meanwhile (a create that lost the race may
                # not even read the winner's value yet): compare again.
                await asyncio.sleep(0.01)
        raise JournalError(f"{self.where}: handshake counter {key} kept changing; not raised to {counter}")

    async def _follow_counters(self) -> None:
        """Make the counters bucket, read it, and follow it (a task on the NATS thread)."""
        import asyncio

        import msgpack
        from nats.js.errors import BucketNotFoundError

        try:
            self._counter_bucket = await self.jetstream.key_value(self.subjects.counters_bucket)
        except BucketNotFoundError:
            self._counter_bucket = await self.jetstream.create_key_value(
                bucket=self.subjects.counters_bucket, history=1, replicas=self.replicas)
        watcher = await self._counter_bucket.watchall()
        synced = asyncio.Event()

        async def follow() -> None:
            async for entry in watcher:
                if entry is None:
                    synced.set()
                elif entry.value:
                    record = msgpack.unpackb(entry.value)
                    self.nats.to_trio(self._counter_seen, record["role"], record["identity"], record["counter"])

        asyncio.get_running_loop().create_task(follow())
        await asyncio.wait_for(synced.wait(), OPEN_TIMEOUT)

    def _counter_seen(self, role: str, identity: str, counter: int) -> None:
        key = (role, identity)
        self._counters[key] = max(counter, self._counters.get(key, 0))

    async def audit(self, at: int, operator: str, action: str, subject: str, detail: str = "") -> None:
        """Store an audit entry on the stream (raises JournalError when it is not stored, as the journal)."""
        await self._publish(self.subjects.audit(operator),
                            records.audit(at, operator, action, subject, detail, self.relay), {})

    async def execute(self, work: Any) -> Any:
        raise JournalError(f"{self.where}: SQL work needs the SQLite journal, which a cluster relay does not use")


class _WrongLast(Exception):
    """JetStream refused a record whose expected last subject sequence did not match."""
