"""Sink settings: the ``[[sinks]]`` tables of the relay's config file, checked once.

Each sink gets every alert and lifecycle step from the journal's outbox
(pinkrelay/integrations/outbox.py). A sink's ``name`` keys its rows in the
outbox, so renaming a sink starts it afresh from the next event. Nothing here
does I/O except reading a secret or key file at load time, so that a missing
file stops the relay at start rather than at the first alert.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ConfigError

SINK_KINDS = ("webhook", "cap", "dc09")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_HEX = re.compile(r"[0-9A-Fa-f]+")
DC09_FORMATS = ("SIA-DCS", "ADM-CID")


@dataclass(frozen=True, slots=True, kw_only=True)
class SinkConfig:
    """What every sink has: a name, its kind and how it retries."""

    name: str
    kind: str
    #: First retry after this many seconds; each further one doubles, up to ``retry_max``.
    retry_min: float = 1.0
    retry_max: float = 60.0
    #: Seconds one delivery may take (connect, send, answer) before it counts as failed.
    timeout: float = 10.0


@dataclass(frozen=True, slots=True, kw_only=True)
class WebhookConfig(SinkConfig):
    """An HTTP(S) endpoint that gets each step as a signed POST: JSON (kind webhook) or CAP 1.2 XML (kind cap)."""

    url: str = ""
    secret: bytes = field(default=b"", repr=False)


@dataclass(frozen=True, slots=True, kw_only=True)
class Dc09Config(SinkConfig):
    """An alarm receiving centre's SIA DC-09 receiver over TCP."""

    host: str = ""
    port: int = 0
    #: SIA-DCS or ADM-CID content.
    format: str = "SIA-DCS"
    #: The receiver number (Rxxx) and line prefix (Lxxx) the centre assigned, hex digits.
    receiver: str = ""
    line: str = "0"
    #: The account used for buttons the registry gives no ``alarm_account``.
    account: str = ""
    #: AES key (16, 24 or 32 bytes) for encrypted messages; empty: not encrypted.
    key: bytes = field(default=b"", repr=False)
    #: Seconds between NULL supervision messages while idle; 0: none.
    supervision: float = 60.0
    #: Seconds to wait for ACK/NAK/DUH before sending the message again.
    ack_timeout: float = 10.0


def _text(table: Mapping[str, Any], key: str, where: str, *, required: bool = True, default: str = "") -> str:
    value = table.get(key, default)
    if not isinstance(value, str) or (required and not value):
        raise ConfigError(f"{where}: {key} must be a non-empty string, not {value!r}")
    return value


def _seconds(table: Mapping[str, Any], key: str, where: str, default: float, *, zero: bool = False) -> float:
    value = table.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"{where}: {key} must be a number of seconds, not {value!r}")
    if value < 0 or (value == 0 and not zero) or value > 86400:
        allowed = "0 to 86400" if zero else "above 0 and at most 86400"
        raise ConfigError(f"{where}: {key} {value!r} must be {allowed} seconds")
    return float(value)


def _read_file(path_text: str, where: str, key: str) -> bytes:
    path = Path(path_text)
    try:
        content = path.read_bytes().strip()
    except OSError as error:
        raise ConfigError(f"{where}: {key} {path} cannot be read ({error.strerror or error})") from None
    if not content:
        raise ConfigError(f"{where}: {key} {path} is empty")
    return content


def _common(table: Mapping[str, Any], where: str) -> dict[str, Any]:
    name = _text(table, "name", where)
    if not _NAME.fullmatch(name):
        raise ConfigError(f"{where}: name {name!r}: 1-64 letters, digits, '.', '_' or '-'")
    retry_min = _seconds(table, "retry_min", where, 1.0)
    retry_max = _seconds(table, "retry_max", where, 60.0)
    if retry_max < retry_min:
        raise ConfigError(f"{where}: retry_max {retry_max} s is below retry_min {retry_min} s")
    return {"name": name, "kind": table["kind"], "retry_min": retry_min, "retry_max": retry_max,
            "timeout": _seconds(table, "timeout", where, 10.0)}


def _webhook(table: Mapping[str, Any], where: str) -> WebhookConfig:
    _only(table, where, {"url", "secret_file"})
    url = _text(table, "url", where)
    if not url.startswith(("http://", "https://")):
        raise ConfigError(f"{where}: url {url!r} must start with http:// or https://")
    secret = _read_file(_text(table, "secret_file", where), where, "secret_file")
    if len(secret) < 16:
        raise ConfigError(f"{where}: the secret in secret_file has {len(secret)} bytes; use at least 16")
    return WebhookConfig(**_common(table, where), url=url, secret=secret)


def _hex_field(table: Mapping[str, Any], key: str, where: str, lengths: range, default: str = "") -> str:
    value = _text(table, key, where, required=not default, default=default)
    if not _HEX.fullmatch(value) or len(value) not in lengths:
        raise ConfigError(
            f"{where}: {key} {value!r} must be {lengths.start}-{lengths.stop - 1} hex digits (0-9, A-F)"
        )
    return value.upper()


def _dc09(table: Mapping[str, Any], where: str) -> Dc09Config:
    _only(table, where, {"address", "format", "receiver", "line", "account", "key_file", "supervision",
                         "ack_timeout"})
    address = _text(table, "address", where)
    host, sep, port_text = address.rpartition(":")
    if not sep or not host or not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise ConfigError(f"{where}: address {address!r} is not HOST:PORT (e.g. 127.0.0.1:9000)")
    content = _text(table, "format", where, default="SIA-DCS")
    if content not in DC09_FORMATS:
        raise ConfigError(f"{where}: format {content!r} is not one of {', '.join(DC09_FORMATS)}")
    key = b""
    if "key_file" in table:
        key = _read_file(_text(table, "key_file", where), where, "key_file")
        if len(key) not in (16, 24, 32):
            raise ConfigError(
                f"{where}: the AES key in key_file has {len(key)} bytes; DC-09 needs 16, 24 or 32 "
                "(the receiver is configured with the same characters)"
            )
    return Dc09Config(
        **_common(table, where), host=host.strip("[]"), port=int(port_text), format=content,
        receiver=_hex_field(table, "receiver", where, range(1, 7)),
        line=_hex_field(table, "line", where, range(1, 7), default="0"),
        account=_hex_field(table, "account", where, range(3, 17)),
        key=key,
        supervision=_seconds(table, "supervision", where, 60.0, zero=True),
        ack_timeout=_seconds(table, "ack_timeout", where, 10.0),
    )


_COMMON_KEYS = {"name", "kind", "retry_min", "retry_max", "timeout"}


def _only(table: Mapping[str, Any], where: str, keys: set[str]) -> None:
    unknown = sorted(set(table) - _COMMON_KEYS - keys)
    if unknown:
        raise ConfigError(
            f"{where}: unknown key(s) {', '.join(unknown)}; a {table['kind']} sink takes "
            f"{', '.join(sorted(_COMMON_KEYS | keys))}"
        )


def parse_sinks(value: Any, source: str) -> tuple[SinkConfig, ...]:
    """The ``[[sinks]]`` tables as sink settings; a ConfigError names the table and the key."""
    if isinstance(value, tuple) and all(isinstance(item, SinkConfig) for item in value):
        return value
    if isinstance(value, str) or not isinstance(value, Sequence):
        raise ConfigError(f"{source}: sinks are set as [[sinks]] tables in the config file, not {value!r}")
    sinks: list[SinkConfig] = []
    for index, table in enumerate(value, 1):
        where = f"{source}: sink {index}"
        if not isinstance(table, Mapping):
            raise ConfigError(f"{where} must be a table ([[sinks]])")
        kind = table.get("kind")
        if kind not in SINK_KINDS:
            raise ConfigError(f"{where}: kind {kind!r} is not one of {', '.join(SINK_KINDS)}")
        sink = _dc09(table, where) if kind == "dc09" else _webhook(table, where)
        if any(other.name == sink.name for other in sinks):
            raise ConfigError(f"{where}: the name {sink.name!r} is used by another sink; names must differ")
        sinks.append(sink)
    return tuple(sinks)
