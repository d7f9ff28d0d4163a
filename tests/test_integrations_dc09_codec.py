"""DC-09 wire format, sans-IO: CRC, framing, encryption and reading answers (no sockets)."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from pinkrelay.integrations.dc09_codec import (
    Dc09Error, Link, ResponseReader, crc16, decrypt, event_data, message, parse_response,
)

NOW = datetime(2026, 12, 7, 11, 58, 3, tzinfo=timezone.utc)


def test_crc_is_crc16_arc():
    assert crc16(b"123456789") == 0xBB3D


def test_a_plain_message_has_crc_length_sequence_receiver_line_account_data_and_timestamp():
    frame = message(Link(receiver="12", line="3"), "SIA-DCS", 42, "A1B2", "#A1B2|Nri7/PA", NOW)
    body = b'"SIA-DCS"0042R12L3#A1B2[#A1B2|Nri7/PA]_11:58:03,12-07-2026'
    assert frame == b"\n" + f"{crc16(body):04X}0{len(body):03X}".encode() + body + b"\r"


def test_an_encrypted_message_decrypts_to_pad_data_and_timestamp():
    key = b"0123456789ABCDEF"
    frame = message(Link(receiver="12", line="3", key=key), "ADM-CID", 1, "A1B2", "#A1B2|1120 01 007", NOW)
    assert frame.startswith(b"\n") and b'"*ADM-CID"0001R12L3#A1B2[' in frame
    hex_part = frame[frame.index(b"[") + 1:-1].decode()
    assert len(hex_part) % 32 == 0
    plain = decrypt(key, hex_part)
    pad, _, rest = plain.partition("|")
    assert rest == "#A1B2|1120 01 007]_11:58:03,12-07-2026" and not set(pad) & set("|[]")


def test_answers_are_read_across_reads_and_checked():
    ack = b'"ACK"0042R12L3#A1B2[]'
    wire = b"\n" + f"{crc16(ack):04X}0{len(ack):03X}".encode() + ack + b"\r"
    reader = ResponseReader()
    assert reader.feed(wire[:7]) == []
    (frame,) = reader.feed(wire[7:])
    response = parse_response(frame)
    assert (response.kind, response.sequence) == ("ACK", 42)
    with pytest.raises(Dc09Error, match="CRC 0000 does not match"):
        parse_response(b"0000" + frame[4:])
    with pytest.raises(Dc09Error, match="not a DC-09 response"):
        parse_response(b"HELLO")
    with pytest.raises(Dc09Error, match="without a CR"):
        reader.feed(b"x" * 2000)


def test_codes_per_step():
    assert event_data("SIA-DCS", "A1", "panic", "raised", "raised", 7) == "#A1|Nri7/PA"
    assert event_data("SIA-DCS", "A1", "panic", "transition", "acknowledged", 7) == "#A1|Nri7/MI"
    assert event_data("SIA-DCS", "A1", "panic", "transition", "false_alarm", 7) == "#A1|Nri7/PH"
    assert event_data("SIA-DCS", "A1", "offline", "raised", "raised", 7) == "#A1|Nri7/PT"
    assert event_data("ADM-CID", "A1", "offline", "transition", "resolved", 7) == "#A1|3375 01 007"
    assert event_data("ADM-CID", "A1", "panic", "transition", "dispatched", 7) is None
