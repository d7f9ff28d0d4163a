"""SIA DC-09 messages, sans-IO: build an event or NULL message, read the receiver's answer.

A message on the wire (ANSI/SIA DC-09):
``<LF><crc><0LLL>"<id>"<seq>R<receiver>L<line>#<account>[<data>]_HH:MM:SS,MM-DD-YYYY<CR>``;
``crc`` is the CRC-16 (polynomial 0xA001, as ARC) of everything from the first
quote to the end of the timestamp, ``0LLL`` its length in hex. Encrypted, the
id is ``"*SIA-DCS"`` / ``"*ADM-CID"`` and what follows ``[`` is the hex of
AES-CBC (zero IV) over ``<pad>|<data>]<timestamp>``, padded at the front to a
whole number of 16-byte blocks. The receiver answers ``"ACK"``, ``"NAK"``
(wrong timestamp or unreadable message: send again with a new timestamp) or
``"DUH"`` (understood, but not the content: do not send again).

Nothing here touches a socket or a clock: the time comes in as an argument.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from datetime import datetime

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from ..errors import PinkRelayError

#: What may pad an encrypted message: printable, and none of ``|``, ``[`` or ``]``, which delimit its parts.
_PAD_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_RESPONSE = re.compile(
    rb'^(?P<crc>[0-9A-Fa-f]{4})(?P<length>[0-9A-Fa-f]{4})(?P<body>"(?P<star>\*)?(?P<kind>ACK|NAK|DUH|RSP)"'
    rb'(?P<seq>\d{4}).*)$', re.S)


class Dc09Error(PinkRelayError, ValueError):
    """The receiver's answer is not a DC-09 response; the message says what came."""


def crc16(data: bytes) -> int:
    """CRC-16/ARC, as DC-09 requires."""
    crc = 0
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return crc


def timestamp(now: datetime) -> str:
    """The DC-09 timestamp of ``now`` (UTC)."""
    return now.strftime("_%H:%M:%S,%m-%d-%Y")


def _frame(body: str) -> bytes:
    raw = body.encode("ascii")
    if len(raw) > 0xFFF:
        raise ValueError(f"DC-09 message of {len(raw)} bytes exceeds the 4095 the length field holds")
    return b"\n" + f"{crc16(raw):04X}0{len(raw):03X}".encode() + raw + b"\r"


def _encrypt(key: bytes, plain: str) -> str:
    pad_length = 16 - (len(plain) + 1) % 16
    pad = "".join(secrets.choice(_PAD_ALPHABET) for _ in range(pad_length % 16))
    text = (pad + "|" + plain).encode("ascii")
    encryptor = Cipher(algorithms.AES(key), modes.CBC(bytes(16))).encryptor()
    return (encryptor.update(text) + encryptor.finalize()).hex().upper()


def decrypt(key: bytes, hex_text: str) -> str:
    """The plain text of an encrypted part (the inverse of what ``message`` sends)."""
    decryptor = Cipher(algorithms.AES(key), modes.CBC(bytes(16))).decryptor()
    return (decryptor.update(bytes.fromhex(hex_text)) + decryptor.finalize()).decode("ascii", "replace")


@dataclass(frozen=True, slots=True, kw_only=True)
class Link:
    """Who sends to whom: the receiver and line numbers and how the content is written."""

    receiver: str
    line: str
    key: bytes = b""


def message(link: Link, token: str, sequence: int, account: str, data: str, now: datetime) -> bytes:
    """One DC-09 message: ``token`` is SIA-DCS, ADM-CID or NULL; ``data`` goes between ``[`` and ``]``."""
    if not 1 <= sequence <= 9999:
        raise ValueError(f"sequence {sequence} outside 1..9999")
    header = f"{sequence:04d}R{link.receiver}L{link.line}#{account}["
    stamp = timestamp(now)
    if link.key and token != "NULL":
        body = f'"*{token}"{header}{_encrypt(link.key, data + "]" + stamp)}'
    elif link.key:
        body = f'"*NULL"{header}{_encrypt(link.key, "]" + stamp)}'
    else:
        body = f'"{token}"{header}{data}]{stamp}'
    return _frame(body)


@dataclass(frozen=True, slots=True)
class Response:
    """The receiver's answer: ACK, NAK, DUH (or RSP) and the sequence number it names."""

    kind: str
    sequence: int


def parse_response(frame: bytes) -> Response:
    """One answer (without its LF and CR); raises Dc09Error naming what was wrong."""
    match = _RESPONSE.match(frame)
    if match is None:
        raise Dc09Error(f"not a DC-09 response (ACK/NAK/DUH): {frame[:80]!r}")
    body = match["body"]
    if int(match["crc"], 16) != crc16(body):
        raise Dc09Error(f"response CRC {match['crc'].decode()} does not match its content "
                        f"({crc16(body):04X}): {frame[:80]!r}")
    return Response(match["kind"].decode(), int(match["seq"]))


class ResponseReader:
    """Splits the bytes from the receiver into answers (each ``<LF>…<CR>``)."""

    MAX_FRAME = 1024

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        self._buffer += data
        frames = []
        while (end := self._buffer.find(b"\r")) >= 0:
            frames.append(bytes(self._buffer[:end]).lstrip(b"\n"))
            del self._buffer[: end + 1]
        if len(self._buffer) > self.MAX_FRAME:
            junk = bytes(self._buffer[:80])
            self._buffer.clear()
            raise Dc09Error(f"more than {self.MAX_FRAME} bytes without a CR from the receiver: {junk!r}")
        return frames


#: SIA-DCS event codes and Contact ID (qualifier, event) per alert kind and step; None: not sent.
SIA_CODES = {
    ("panic", "raised"): "PA", ("panic", "duplicate"): "PA", ("panic", "restore"): "PH",
    ("panic", "progress"): "MI",
    ("offline", "raised"): "PT", ("offline", "duplicate"): "PT", ("offline", "restore"): "PJ",
    ("offline", "progress"): "MI",
}
CID_CODES = {
    ("panic", "raised"): ("1", "120"), ("panic", "duplicate"): ("1", "120"), ("panic", "restore"): ("3", "120"),
    ("offline", "raised"): ("1", "375"), ("offline", "duplicate"): ("1", "375"),
    ("offline", "restore"): ("3", "375"),
}
RESTORE_STATES = frozenset({"resolved", "false_alarm"})


def step_class(step: str, state: str) -> str:
    """raised, duplicate, restore (resolved or false alarm) or progress (any other step)."""
    if step in ("raised", "duplicate"):
        return step
    return "restore" if state in RESTORE_STATES else "progress"


def event_data(content: str, account: str, alert_kind: str, step: str, state: str, zone: int) -> str | None:
    """What goes between ``[`` and ``]`` for one step, or None when ``content`` has no code for it."""
    kind = "offline" if alert_kind == "offline" else "panic"
    which = step_class(step, state)
    if content == "SIA-DCS":
        code = SIA_CODES.get((kind, which))
        return None if code is None else f"#{account}|Nri{zone}/{code}"
    cid = CID_CODES.get((kind, which))
    return None if cid is None else f"#{account}|{cid[0]}{cid[1]} 01 {zone:03d}"
