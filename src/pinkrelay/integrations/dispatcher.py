"""The dispatcher: one trio task per sink drains that sink's outbox rows in journal order.

Order: a sink gets events in cursor order, so an alert's steps arrive in the
order they happened; a delivery that keeps failing holds back the later ones
of that sink only (every other sink goes on). A failed delivery is retried
after ``retry_min * 2**n`` seconds (capped at ``retry_max``), scaled by a
random factor between 0.5 and 1 so that many relays do not retry in step,
and never sooner than the peer's ``Retry-After``.

A sink that is down never slows alerts or media: the rows are written in the
journal's own transaction, and the tasks here only read on their own
connection and talk to their peer; nothing on the alert path waits for them.
"""

from __future__ import annotations

import logging
import random
import sqlite3
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import trio
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from ..alerts.journal import JournalError
from ..errors import DeliveryFailed
from ..logs import event as log_event
from .outbox import Delivery, OutboxStore
from .settings import Dc09Config, SinkConfig, WebhookConfig

log = logging.getLogger("pinkrelay.integrations")

#: Seconds between looks at the outbox when nothing woke the dispatcher (a step stored
#: by another path, a row left by the last run).
POLL_INTERVAL = 2.0
#: Seconds past a sink's ``timeout`` after which the dispatcher gives up on one attempt itself.
GUARD_MARGIN = 1.0
#: Longest wait a peer's Retry-After may impose.
MAX_RETRY_AFTER = 3600.0


class Sink(Protocol):
    """What the dispatcher needs of a sink."""

    config: SinkConfig
    #: Longest one ``deliver`` may take, in seconds (its own timeouts included).
    attempt_limit: float

    async def deliver(self, delivery: Delivery) -> None:
        """Return once the peer confirmed ``delivery``; raise DeliveryFailed otherwise."""

    async def run(self) -> None:
        """Background work the sink needs while the relay runs (a link's supervision)."""

    async def aclose(self) -> None:
        """Release connections."""


def backoff(config: SinkConfig, failures: int, rng: random.Random) -> float:
    """Seconds before retry number ``failures`` (1 for the first), with jitter."""
    ceiling = min(config.retry_max, config.retry_min * 2 ** min(failures - 1, 30))
    return ceiling * rng.uniform(0.5, 1.0)


@dataclass(slots=True)
class SinkStatus:
    """What operators see of one sink (metrics, the web room, logs)."""

    name: str
    kind: str
    delivered: int = 0
    failed: int = 0
    pending: int = 0
    last_error: str = ""
    #: True from a failed attempt until the next confirmed delivery.
    failing: bool = False
    #: Wall-clock seconds of the last confirmed delivery, 0 before the first.
    last_delivered_at: float = 0.0

    def as_json(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "delivered": self.delivered, "failed": self.failed,
                "pending": self.pending, "last_error": self.last_error, "failing": self.failing,
                "last_delivered_at": self.last_delivered_at}


def make_sink(config: SinkConfig, context: Any) -> Sink:
    """The sink object for one ``[[sinks]]`` table."""
    if isinstance(config, WebhookConfig):
        from .webhook import WebhookSink

        return WebhookSink(config, relay_name=context.relay_name)
    if isinstance(config, Dc09Config):
        from .dc09 import Dc09Sink

        return Dc09Sink(config, registry=context.registry)
    raise TypeError(f"no sink for {config!r}")


class Dispatcher:
    """Runs every configured sink; ``await run()`` in the relay's nursery."""

    def __init__(self, journal: Any, sinks: list[Sink], *, rng: random.Random | None = None,
                 poll_interval: float = POLL_INTERVAL) -> None:
        self.store = OutboxStore(journal)
        self.sinks = sinks
        self.status = {sink.config.name: SinkStatus(sink.config.name, sink.config.kind) for sink in sinks}
        self._rng = rng or random.Random()
        self._poll_interval = poll_interval
        self._wakeups = {sink.config.name: trio.Event() for sink in sinks}
        self._token: trio.lowlevel.TrioToken | None = None
        journal.outbound_sinks = tuple(sink.config.name for sink in sinks)
        journal.on_outbound = self.wake

    def wake(self) -> None:
        """New rows were committed: every sink looks at its outbox now."""
        for event in self._wakeups.values():
            event.set()

    async def run(self) -> None:
        try:
            try:
                counts = await self.store.counts()
            except (JournalError, sqlite3.Error) as error:
                log.error("the outbox cannot be read (%s); each sink tries again on its own", error)
                counts = {}
            for name, status in self.status.items():
                status.pending = counts.get(name, 0)
                if status.pending:
                    log.info("sink %s: %d deliveries left from the last run; sending them first",
                             name, status.pending)
            async with trio.open_nursery() as nursery:
                for sink in self.sinks:
                    nursery.start_soon(sink.run)
                    nursery.start_soon(self._drain, sink)
        finally:
            with trio.CancelScope(shield=True):
                for sink in self.sinks:
                    await sink.aclose()
            self.store.close()

    async def _drain(self, sink: Sink) -> None:
        name = sink.config.name
        status = self.status[name]
        while True:
            self._wakeups[name] = trio.Event()
            try:
                batch, status.pending = await self.store.pending(name)
                for delivery in batch:
                    await self._deliver_until_confirmed(sink, delivery, status)
            except (JournalError, sqlite3.Error) as error:
                # The journal's own failures are reported where alerts are stored;
                # here they only pause this sink, never the relay.
                status.failing, status.last_error = True, f"the outbox cannot be read or updated: {error}"
                log.error("sink %s: %s; trying again in %g s", name, status.last_error, self._poll_interval)
                await trio.sleep(self._poll_interval)
                continue
            if not batch:
                with trio.move_on_after(self._poll_interval):
                    await self._wakeups[name].wait()

    async def _deliver_until_confirmed(self, sink: Sink, delivery: Delivery, status: SinkStatus) -> None:
        failures = delivery.attempts
        while True:
            try:
                # The sink's own timeouts come first; this bounds a sink that has none.
                with trio.fail_after(sink.attempt_limit + GUARD_MARGIN):
                    await sink.deliver(delivery)
            except (DeliveryFailed, trio.TooSlowError) as error:
                failures += 1
                reason = (str(error) if isinstance(error, DeliveryFailed)
                          else f"did not answer within {sink.attempt_limit + GUARD_MARGIN:g} s")
                retry_after = error.retry_after if isinstance(error, DeliveryFailed) else None
                wait = backoff(sink.config, failures, self._rng)
                if retry_after is not None:
                    wait = max(wait, min(retry_after, MAX_RETRY_AFTER))
                status.failed += 1
                status.failing = True
                status.last_error = reason
                log_event(log, logging.WARNING,
                          f"sink {sink.config.name}: delivery of {delivery.idempotency_key} failed "
                          f"(attempt {failures}): {reason}; retrying in {wait:.1f} s",
                          sink=sink.config.name, alert=delivery.alert_id, cursor=delivery.cursor,
                          attempt=failures)
                await self.store.failed(delivery, reason)
                status.pending = await self.store.count(sink.config.name)
                await trio.sleep(wait)
                continue
            await self.store.delivered(delivery)
            status.delivered += 1
            status.failing = False
            status.pending = max(0, status.pending - 1)
            status.last_delivered_at = time.time()
            return

    def statuses(self) -> list[dict[str, Any]]:
        """Each sink's figures, with its supervision failures where it has supervision."""
        out = []
        for sink in self.sinks:
            status = self.status[sink.config.name].as_json()
            if hasattr(sink, "supervision_failures"):
                status["supervision_failures"] = sink.supervision_failures
            out.append(status)
        return out

    def collect(self) -> Iterator[Any]:
        """Prometheus families: deliveries by sink and outcome, pending rows by sink."""
        deliveries = CounterMetricFamily(
            "pinkrelay_sink_deliveries", "Deliveries to integration sinks, by sink and outcome",
            labels=["sink", "kind", "outcome"])
        pending = GaugeMetricFamily(
            "pinkrelay_sink_pending", "Alert steps waiting in the outbox for a sink", labels=["sink", "kind"])
        supervision = CounterMetricFamily(
            "pinkrelay_sink_supervision_failures", "Supervision (DC-09 NULL) messages a sink's receiver did not ACK",
            labels=["sink"])
        for sink in self.sinks:
            status = self.status[sink.config.name]
            deliveries.add_metric([status.name, status.kind, "delivered"], status.delivered)
            deliveries.add_metric([status.name, status.kind, "failed"], status.failed)
            pending.add_metric([status.name, status.kind], status.pending)
            if hasattr(sink, "supervision_failures"):
                supervision.add_metric([status.name], sink.supervision_failures)
        yield deliveries
        yield pending
        yield supervision


def dispatcher_for(relay: Any, configs: tuple[SinkConfig, ...],
                   make: Callable[[SinkConfig, Any], Sink] = make_sink) -> Dispatcher:
    """The relay's dispatcher for its ``[[sinks]]``."""
    context = _Context(relay)
    return Dispatcher(relay.journal, [make(config, context) for config in configs])


class _Context:
    """What sinks read from the relay: its name and its current registry."""

    def __init__(self, relay: Any) -> None:
        self._relay = relay

    @property
    def relay_name(self) -> str:
        return str(self._relay.config.relay_name)

    def registry(self) -> Any:
        return self._relay.registry
