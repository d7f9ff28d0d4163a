"""Client libraries: what buttons and control-room consoles embed."""

from __future__ import annotations

from .button import ButtonClient, PressReceipt
from .console import ConsoleClient, Disconnected, Reconnected
from .link import Link, LinkClosed

__all__ = [
    "ButtonClient",
    "ConsoleClient",
    "Disconnected",
    "Link",
    "LinkClosed",
    "PressReceipt",
    "Reconnected",
]
