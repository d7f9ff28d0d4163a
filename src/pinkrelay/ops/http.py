"""The operations endpoint: ``/metrics`` for Prometheus, ``/healthz`` and ``/readyz`` for probes.

Served by Hypercorn on the relay's own event loop, on ``metrics_listen``
(default 127.0.0.1:9480), apart from the control room so that a firewall can
open it to the monitoring network only. It carries no personal data (no
alert contents, no names of operators), only counts, so it has no sign-in.

* ``/healthz``: 200 while the event loop answers (it serves this page);
* ``/readyz``: 200 once both listeners are bound and a write to the journal
  commits, 503 with the reasons otherwise (readiness.py).
"""

from __future__ import annotations

import json
import logging
from typing import Any

import trio

from ..config import Address
from ..web.asgi import answer_lifespan
from .metrics import RelayMetrics

log = logging.getLogger("pinkrelay.metrics")

CONTENT_TYPE = b"text/plain; version=0.0.4; charset=utf-8"


class OpsApp:
    """The ASGI application of the operations endpoint."""

    def __init__(self, relay: Any, metrics: RelayMetrics) -> None:
        self.relay = relay
        self.metrics = metrics
        self.url = ""

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await answer_lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        if scope["method"] not in ("GET", "HEAD"):
            await _respond(send, 405, b"only GET and HEAD\n", headers=[(b"allow", b"GET, HEAD")])
            return
        path = scope["path"]
        if path == "/metrics":
            await _respond(send, 200, self.metrics.exposition(), content_type=CONTENT_TYPE)
        elif path == "/healthz":
            await _respond(send, 200, b"ok\n")
        elif path == "/readyz":
            problems = await self.metrics.readiness.check()
            body = json.dumps({"ready": not problems, "problems": problems}).encode() + b"\n"
            await _respond(send, 503 if problems else 200, body, content_type=b"application/json")
        else:
            await _respond(send, 404, b"not found: try /metrics, /healthz or /readyz\n")


async def _respond(send: Any, status: int, body: bytes, *, content_type: bytes = b"text/plain; charset=utf-8",
                   headers: list[tuple[bytes, bytes]] | None = None) -> None:
    await send({
        "type": "http.response.start",
        "status": status,
        "headers": [(b"content-type", content_type), (b"content-length", str(len(body)).encode()),
                    (b"cache-control", b"no-store"), *(headers or [])],
    })
    await send({"type": "http.response.body", "body": body})


async def serve_metrics(relay: Any, address: Address | str | None = None, *,
                        task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
    """Count the relay's metrics and serve them until cancelled; reports the ``OpsApp`` (its ``url``).

    Start it with ``nursery.start`` once the relay is serving. ``address``
    defaults to ``relay.config.metrics_listen``; port 0 picks a free one.
    """
    from hypercorn.trio import serve

    from ..web import check_can_listen, hypercorn_config

    if address is None:
        address = relay.config.metrics_listen
    elif isinstance(address, str):
        address = Address.parse(address, what="metrics listen address")
    config = hypercorn_config(address)
    check_can_listen(config, address, what="metrics", flag="--metrics-listen")
    metrics = RelayMetrics(relay)
    app = OpsApp(relay, metrics)
    async with trio.open_nursery() as nursery:
        await nursery.start(metrics.run)
        await nursery.start(metrics.readiness.run)
        binds = await nursery.start(serve, app, config)
        app.url = binds[0] if binds else f"http://{address}"
        task_status.started(app)
