"""What an operations team runs the relay with: Prometheus metrics, health checks, systemd's notify protocol.

Nothing here is on the media or alert path. Metrics are counted where they
happen off that path (lifecycle steps from the relay's event stream, journal
commits from the journal's thread) or read from the relay's own counters when
Prometheus scrapes; ``serve_metrics`` serves them with ``/healthz`` and
``/readyz`` on ``metrics_listen``; ``sdnotify`` tells systemd when the relay is
ready, alive and stopping.
"""

from .http import serve_metrics
from .metrics import RelayMetrics
from .sdnotify import SystemdNotifier

__all__ = ["RelayMetrics", "SystemdNotifier", "serve_metrics"]
