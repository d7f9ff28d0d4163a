"""pinkrelay: the relay between panic buttons and the police control room."""

from __future__ import annotations

__version__ = "0.1.0"
