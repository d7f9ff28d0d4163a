"""Integrations: every alert and lifecycle step handed to the systems a control room already runs.

``outbox`` is the durable queue in the journal; ``dispatcher`` drains it,
one task per sink, with retries; ``webhook`` and ``dc09`` are the sinks.
This package imports nothing of the relay, so the journal can use the outbox.
"""

from .settings import Dc09Config, SinkConfig, WebhookConfig, parse_sinks

__all__ = ["Dc09Config", "SinkConfig", "WebhookConfig", "parse_sinks"]
