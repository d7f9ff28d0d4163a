"""RelayMetrics: the relay's figures in Prometheus' exposition format.

Counted as they happen, off the per-frame path:

* alert lifecycle latencies (press to acknowledged, dispatched, resolved),
  escalations and alerts by kind, from the relay's event stream
  (``Relay.open_event_stream``), which the relay feeds without ever waiting;
* journal commit durations, from the journal's own thread (``on_commit``).

Read from the relay when Prometheus scrapes (``collect``): connections,
buttons online and offline, open alerts by state, media in and out, drops,
send-queue depths and refusals. A scrape walks the sessions once; nothing is
added per media message.

Each relay has its own ``CollectorRegistry``, so several relays in one
process (tests, an embedding service) never mix their series.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import trio
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily
from prometheus_client.registry import Collector

from .. import _core
from ..alerts.lifecycle import OPEN_STATES, AlertState
from ..protocol import Alert, AlertUpdate
from .readiness import Readiness

log = logging.getLogger("pinkrelay.metrics")

#: Seconds from a press to an operator's step: a control room answers within seconds to minutes.
RESPONSE_BUCKETS = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 1800, 3600, 4 * 3600)
#: Seconds one journal batch takes to commit (synchronous=FULL: an fsync or two).
COMMIT_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5)
#: The lifecycle steps whose time from the press is observed.
TIMED_STEPS = (AlertState.ACKNOWLEDGED, AlertState.DISPATCHED, AlertState.RESOLVED, AlertState.FALSE_ALARM)
_OPEN = frozenset(state.value for state in OPEN_STATES)


@dataclass(slots=True)
class _OpenAlert:
    received_at: int
    state: str
    level: int


class RelayMetrics:
    """The metrics of one relay. ``await run()`` in the relay's nursery keeps them current."""

    def __init__(self, relay: Any) -> None:
        self.relay = relay
        self.registry = CollectorRegistry(auto_describe=True)
        self.response = Histogram(
            "pinkrelay_alert_response_seconds",
            "Seconds from a press reaching the relay to an operator's step on its alert",
            ["step"], buckets=RESPONSE_BUCKETS, registry=self.registry,
        )
        self.alerts = Counter(
            "pinkrelay_alerts", "Alerts raised, by kind (panic, offline, ...) and how they were recorded",
            ["kind", "recorded_as"], registry=self.registry,
        )
        self.escalations = Counter(
            "pinkrelay_escalations", "Escalations of unacknowledged alerts, by the level reached",
            ["level"], registry=self.registry,
        )
        self.commit_seconds = Histogram(
            "pinkrelay_journal_commit_seconds", "Seconds one journal batch took to commit (fsync included)",
            buckets=COMMIT_BUCKETS, registry=self.registry,
        )
        self.commit_requests = Counter(
            "pinkrelay_journal_requests", "Journal requests committed (alerts, steps, counters)",
            registry=self.registry,
        )
        self._open: dict[str, _OpenAlert] = {}
        self.readiness = Readiness(relay)
        self.registry.register(_RelayCollector(self))
        if getattr(relay, "integrations", None) is not None:
            self.registry.register(_SinkCollector(relay.integrations))
        relay.journal.on_commit = self._committed

    def exposition(self) -> bytes:
        """The current metrics in Prometheus' text format."""
        return generate_latest(self.registry)

    def _committed(self, seconds: float, requests: int) -> None:  # the journal's thread
        self.commit_seconds.observe(seconds)
        self.commit_requests.inc(requests)

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Follow the relay's events; open alerts come from the journal first, so a restart keeps them."""
        async with self.relay.open_event_stream(name="metrics", buffer=10_000) as events:
            for alert in await self.relay.journal.open_alerts():
                self._open[alert.alert_id] = _OpenAlert(alert.received_at, alert.state, alert.level)
            task_status.started()
            async for item in events:
                self.observe(item)

    def observe(self, item: Any) -> None:
        """Count one relay event (alerts and lifecycle steps; other events are read at scrape)."""
        if isinstance(item, Alert):
            if item.alert_id in self._open:
                return  # an open alert announced again (a retry of a press stored before a restart)
            self.alerts.labels(item.kind, item.state).inc()
            if item.state in _OPEN:
                self._open[item.alert_id] = _OpenAlert(item.received_at, item.state, item.level)
        elif isinstance(item, AlertUpdate):
            alert = self._open.get(item.alert_id)
            if alert is None:
                return
            if item.level > alert.level:
                self.escalations.labels(str(item.level)).inc()
                alert.level = item.level
            if item.state != alert.state and item.state in TIMED_STEPS and item.at and alert.received_at:
                self.response.labels(item.state).observe(max(0.0, (item.at - alert.received_at) / 1e6))
            alert.state = item.state
            if item.state not in _OPEN:
                del self._open[item.alert_id]

    def open_alerts(self) -> dict[str, int]:
        counts = dict.fromkeys(sorted(_OPEN), 0)
        for alert in self._open.values():
            counts[alert.state] = counts.get(alert.state, 0) + 1
        return counts

    def unanswered(self, now_us: int) -> tuple[int, float]:
        """(raised alerts that have escalated, age in seconds of the oldest raised alert)."""
        escalated, oldest = 0, 0.0
        for alert in self._open.values():
            if alert.state == AlertState.RAISED:
                escalated += alert.level > 0
                oldest = max(oldest, (now_us - alert.received_at) / 1e6)
        return escalated, oldest


class _SinkCollector(Collector):
    """Deliveries to the integration sinks, read from the dispatcher at scrape time."""

    def __init__(self, dispatcher: Any) -> None:
        self.dispatcher = dispatcher

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> Iterator[Any]:
        yield from self.dispatcher.collect()


class _RelayCollector(Collector):
    """Figures read from the relay at scrape time."""

    def __init__(self, metrics: RelayMetrics) -> None:
        self.metrics = metrics

    def describe(self) -> list[Any]:
        return []  # read live; nothing to check at registration

    def collect(self) -> Iterator[Any]:
        from ..relay.sessions import wall_us

        relay = self.metrics.relay
        stats = relay.stats()
        traffic = relay.traffic()
        supervisor = relay.supervisor

        info = InfoMetricFamily("pinkrelay", "The relay's name and which core it runs")
        info.add_metric([], {"relay_name": relay.config.relay_name,
                             "core": "compiled" if _core.COMPILED else "python"})
        yield info
        problems = self.metrics.readiness.problems
        if problems is not None:
            yield _gauge("pinkrelay_ready", "1 if the last readiness check (/readyz) passed, else 0",
                         0 if problems else 1)
        yield _gauge("pinkrelay_buttons_registered", "Buttons in the registry", len(relay.registry))
        yield _gauge("pinkrelay_buttons_connected", "Buttons signed in now", stats["buttons_connected"])
        yield _gauge("pinkrelay_consoles_connected", "Consoles signed in now", stats["consoles_connected"])
        yield _gauge("pinkrelay_buttons_online", "Buttons heard from within their supervision window",
                     len(supervisor.online))
        yield _gauge("pinkrelay_buttons_offline", "Supervised buttons silent past their supervision window",
                     len(supervisor.known) - len(supervisor.online))
        states = GaugeMetricFamily("pinkrelay_open_alerts", "Open alerts by state", labels=["state"])
        for state, count in self.metrics.open_alerts().items():
            states.add_metric([state], count)
        yield states
        escalated, oldest = self.metrics.unanswered(wall_us())
        yield _gauge("pinkrelay_unacknowledged_escalated_alerts",
                     "Alerts still unacknowledged after at least one escalation", escalated)
        yield _gauge("pinkrelay_oldest_unacknowledged_alert_seconds",
                     "Age of the oldest alert nobody has acknowledged (0: none)", oldest)
        yield _counter("pinkrelay_connections", "Connections accepted on both listeners", stats["connections"])
        refusals = CounterMetricFamily("pinkrelay_refusals", "Connections refused or closed, by reason",
                                       labels=["reason"])
        refusals.add_metric(["authentication"], stats["auth_failures"])
        refusals.add_metric(["protocol_error"], stats["protocol_errors"])
        for reason, count in relay.admission.refused.items():
            refusals.add_metric([reason], count)
        refusals.add_metric(["over_bitrate"], stats["closed_over_bitrate"])
        refusals.add_metric(["subscription_limit"], stats["subscriptions_refused"])
        yield refusals
        handshakes = CounterMetricFamily("pinkrelay_tls_handshakes", "TLS handshakes on the button and console "
                                         "listeners, by result (ok, plaintext, handshake, timeout)", labels=["result"])
        for result, count in relay.tls_stats.items():
            handshakes.add_metric([result], count)
        yield handshakes
        yield _gauge("pinkrelay_unauthenticated_connections", "Connections that have not signed in yet",
                     relay.admission.unauthenticated_total)
        yield _counter("pinkrelay_media_messages_received", "Media messages received from buttons",
                       traffic["media_messages_in"])
        yield _counter("pinkrelay_media_bytes_received", "Media bytes (wire size) received from buttons",
                       traffic["media_bytes_in"])
        yield _counter("pinkrelay_media_deliveries", "Media messages queued for a subscriber",
                       stats["deliveries"] + stats.get("data_plane_deliveries", 0))
        yield _counter("pinkrelay_bytes_sent", "Bytes written to buttons and consoles", traffic["bytes_out"])
        drops = CounterMetricFamily("pinkrelay_dropped", "What the relay dropped rather than wait, by reason",
                                    labels=["reason"])
        drops.add_metric(["slow_console_video"], traffic["dropped_video"])
        drops.add_metric(["slow_console_audio"], traffic["dropped_audio"])
        drops.add_metric(["event_stream_behind"], stats["dropped_events"])
        drops.add_metric(["over_bitrate"], stats["media_over_bitrate"])
        yield drops
        depths = [session.outbox.pending_bytes for session in relay.sessions]
        yield _gauge("pinkrelay_send_queue_bytes", "Bytes waiting in every peer's send queue", sum(depths))
        yield _gauge("pinkrelay_send_queue_max_bytes", "Bytes waiting in the fullest send queue",
                     max(depths, default=0))
        yield _gauge("pinkrelay_media_streams", "Buttons streaming media now", stats["streams"])
        yield from _evidence_metrics(stats)
        yield from _data_plane_metrics(stats)
        yield from _talkback_metrics(relay.talkback)
        try:
            disk = os.statvfs(relay.config.data_dir)
        except OSError:
            return
        yield _gauge("pinkrelay_data_dir_free_bytes", "Bytes free to unprivileged users on the data directory's "
                     "filesystem", disk.f_bavail * disk.f_frsize)
        yield _gauge("pinkrelay_data_dir_size_bytes", "Size of the data directory's filesystem",
                     disk.f_blocks * disk.f_frsize)


#: The data plane's own counters (relay/data_plane.py), when it runs: what the compiled threads did.
DATA_PLANE_COUNTERS = (
    ("messages", "Media messages the data threads fanned out"),
    ("writes", "sendmsg calls the data threads made to consoles (one per console per turn)"),
    ("turns", "Turns of the data threads' event loops"),
    ("handbacks", "Connections whose input the data threads handed back to Python (bad or unusual input)"),
    ("control_events", "Batches of control frames the data threads passed to the relay's event loop"),
)


def _data_plane_metrics(stats: dict[str, Any]) -> Iterator[Any]:
    if "data_plane_messages" not in stats:
        return
    for key, help_text in DATA_PLANE_COUNTERS:
        yield _counter(f"pinkrelay_data_plane_{key}", help_text, stats[f"data_plane_{key}"])


def _evidence_metrics(stats: dict[str, Any]) -> Iterator[Any]:
    """Pre-roll memory and incident recordings (relay/evidence/)."""
    yield _gauge("pinkrelay_preroll_bytes", "Bytes of media held in every stream's pre-roll ring",
                 stats["preroll_bytes"])
    yield _gauge("pinkrelay_preroll_budget_bytes", "The pre-roll rings' shared budget (preroll_budget_bytes)",
                 stats["preroll_budget_bytes"])
    yield _gauge("pinkrelay_preroll_rings", "Streams with a pre-roll ring", stats["preroll_rings"])
    yield _counter("pinkrelay_preroll_gops_cut_for_budget", "GOPs cut from the longest rings to stay in budget",
                   stats["preroll_gops_cut_for_budget"])
    yield _gauge("pinkrelay_evidence_recording", "Incident recordings under way", stats["evidence_recording"])
    yield _gauge("pinkrelay_evidence_queue_bytes", "Media waiting for the evidence writer",
                 stats["evidence_queue_bytes"])
    recordings = CounterMetricFamily("pinkrelay_evidence_recordings", "Incident recordings by what happened "
                                     "(failed: stopped by a full queue or disk)", labels=["event"])
    for event in ("started", "resumed", "finished", "failed", "deleted"):
        recordings.add_metric([event], stats[f"evidence_recordings_{event}"])
    yield recordings
    yield _counter("pinkrelay_evidence_segments_written", "Evidence segment files written",
                   stats["evidence_segments_written"])
    yield _counter("pinkrelay_evidence_bytes_written", "Evidence bytes written", stats["evidence_bytes_written"])


def _talkback_metrics(desk: Any) -> Iterator[Any]:
    """Operators' talk-back to buttons (relay/talkback.py)."""
    yield _gauge("pinkrelay_talkback_open", "Operators talking to a button now", len(desk.talks))
    events = CounterMetricFamily("pinkrelay_talkback", "Talk-back: talks opened and refused, Opus packets passed "
                                 "to buttons and dropped (flood, slow button)", labels=["event"])
    for event in ("talks", "refused", "packets", "dropped"):
        events.add_metric([event], desk.counters[event])
    yield events


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=value)


def _counter(name: str, documentation: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name, documentation, value=value)
