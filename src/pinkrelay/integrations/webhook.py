"""The webhook sink: each alert step as a signed POST of JSON (the body is in docs/operations.md) or CAP XML.

Signature: ``X-Pinkrelay-Signature: sha256=<hex>``, the HMAC-SHA256 with the
sink's secret of ``<X-Pinkrelay-Timestamp>.<body>``; the timestamp (Unix
seconds) is signed too, so a receiver can refuse replays of old requests.
``Idempotency-Key`` is the alert id and the step's journal cursor: a retry
carries the same key, so the receiver stores each step once.

Any 2xx confirms the delivery; anything else, a timeout or a refused
connection fails it, and the dispatcher retries (not sooner than the
``Retry-After`` of a 429 or 503). httpx does the HTTP and TLS.
"""

from __future__ import annotations

import email.utils
import hashlib
import hmac
import json
import time
from datetime import datetime, timezone
from typing import Any

import httpx

from ..errors import DeliveryFailed
from .cap import CONTENT_TYPE as CAP_CONTENT_TYPE
from .cap import cap_xml
from .outbox import Delivery
from .settings import WebhookConfig

SIGNATURE_HEADER = "X-Pinkrelay-Signature"
TIMESTAMP_HEADER = "X-Pinkrelay-Timestamp"
BODY_VERSION = 1


def _iso(at_us: int) -> str:
    return datetime.fromtimestamp(at_us / 1e6, timezone.utc).isoformat(timespec="milliseconds").replace(
        "+00:00", "Z")


def delivery_json(delivery: Delivery, relay_name: str) -> dict[str, Any]:
    """The documented webhook body of one step."""
    site = delivery.site
    return {
        "version": BODY_VERSION,
        "relay": relay_name,
        "idempotency_key": delivery.idempotency_key,
        "step": {
            "cursor": delivery.cursor,
            "kind": delivery.step,
            "state": delivery.state,
            "level": delivery.level,
            "operator": delivery.operator,
            "console": delivery.console,
            "unit": delivery.unit,
            "note": delivery.note,
            "at": _iso(delivery.at),
        },
        "alert": {
            "alert_id": delivery.alert_id,
            "button": delivery.button,
            "kind": delivery.alert_kind,
            "pressed_at": _iso(delivery.pressed_at),
            "received_at": _iso(delivery.received_at),
            "attempt": delivery.attempt,
            "duplicate_of": delivery.duplicate_of,
            "site": None if site is None else {
                "name": site.name, "kind": site.kind, "address": site.address, "district": site.district,
                "latitude": site.latitude, "longitude": site.longitude,
            },
        },
    }


def sign(secret: bytes, timestamp: str, body: bytes) -> str:
    """The signature header's value for ``body`` sent at ``timestamp``."""
    return "sha256=" + hmac.new(secret, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


def retry_after_seconds(value: str | None, now: float) -> float | None:
    """``Retry-After`` as seconds from ``now``: delta-seconds or an HTTP date; None if absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - now)


class WebhookSink:
    """POSTs each delivery to one URL."""

    def __init__(self, config: WebhookConfig, *, relay_name: str) -> None:
        self.config = config
        self.relay_name = relay_name
        self.attempt_limit = config.timeout
        self._client = httpx.AsyncClient(timeout=config.timeout, follow_redirects=False)

    async def run(self) -> None:
        """Nothing runs between deliveries."""

    def body(self, delivery: Delivery) -> tuple[bytes, str]:
        """The request body and its content type: CAP 1.2 XML for a cap sink, else the JSON body."""
        if self.config.kind == "cap":
            return cap_xml(delivery, relay_name=self.relay_name), CAP_CONTENT_TYPE
        return json.dumps(delivery_json(delivery, self.relay_name), separators=(",", ":")).encode(), \
            "application/json"

    async def deliver(self, delivery: Delivery) -> None:
        body, content_type = self.body(delivery)
        timestamp = str(int(time.time()))
        headers = {
            "Content-Type": content_type,
            "Idempotency-Key": delivery.idempotency_key,
            TIMESTAMP_HEADER: timestamp,
            SIGNATURE_HEADER: sign(self.config.secret, timestamp, body),
            "User-Agent": "pinkrelay",
        }
        try:
            response = await self._client.post(self.config.url, content=body, headers=headers)
        except httpx.TimeoutException:
            raise DeliveryFailed(
                f"{self.config.url} did not answer within {self.config.timeout:g} s; check the receiver"
            ) from None
        except httpx.HTTPError as error:
            raise DeliveryFailed(f"{self.config.url}: {type(error).__name__}: {error}") from None
        if 200 <= response.status_code < 300:
            return
        raise DeliveryFailed(
            f"{self.config.url} answered HTTP {response.status_code} {response.reason_phrase}; "
            "only a 2xx confirms a delivery",
            retry_after=retry_after_seconds(response.headers.get("Retry-After"), time.time()),
        )

    async def aclose(self) -> None:
        await self._client.aclose()
