"""docs/protocol.md's test vectors and example frames, byte for byte against the code.

A device maker implements the protocol from the document alone, and checks
their implementation against its hex dumps (§4.3, §5.18) and the HMAC and
SCRAM test vectors (§6.2.1, §6.2.2). Those values are read out of the
document here, not copied, so neither the code nor the document can drift
without this module failing: every example frame is rebuilt with
pinkrelay's own connection objects in the order the document describes
(sequence numbers included) and compared with the dump.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from pathlib import Path

import pytest

from pinkrelay._core import HEADER_SIZE, Lane, encode_media
from pinkrelay.alerts.lifecycle import LifecycleError, transition
from pinkrelay.errors import AuthenticationFailed
from pinkrelay.protocol import (
    Alert,
    AlertAck,
    AlertUpdate,
    ButtonConnection,
    ConsoleConnection,
    Error,
    RelayConnection,
    StreamDescription,
    Subscribed,
    TalkBack,
    TrackDescription,
)
from pinkrelay.protocol import auth

DOC = Path(__file__).resolve().parents[1] / "docs" / "protocol.md"
TEXT = DOC.read_text(encoding="utf-8")

# The inputs the document states in prose (§5.18, §6.2.1, §6.2.2).
NONCE = bytes(range(32))
COUNTER = 1_764_374_400_000_000
BUTTON_ID, BUTTON_SECRET = "mkt-017", b"secret-017"
OPERATOR, OPERATOR_SECRET = "asma.khan", b"Xq3v-7Lh2pQ9wZt4Rk8m"
SALT = bytes(range(0xA0, 0xB0))
KDF = "scrypt:16384:8:1"
ALERT_ID = "019acce8-d0d2-7c3a-9f1e-2b4d6c8a0e11"
PRESSED_AT = 1_764_374_401_234_567
MEDIA_TIMESTAMP = 1_764_374_401_250_000

#: ``OOOO  HH HH … HH  ASCII``: offset, 16 hex bytes in a 47-column field, two spaces, ASCII.
_DUMP_LINE = re.compile(r"^([0-9a-f]{4})  ((?:[0-9a-f]{2} ){0,15}[0-9a-f]{2}) *  (.*)$")
_HEX_COLUMNS = slice(6, 53)
_ASCII_START = 55


def _code_blocks() -> list[tuple[int, str]]:
    """(offset in the document, content) of every fenced code block."""
    return [(m.start(), m.group(1)) for m in re.finditer(r"```[a-z]*\n(.*?)```", TEXT, re.S)]


def _parse_dump(block: str) -> bytes:
    """The bytes of a hex dump; its offsets and ASCII column must agree with them."""
    data = bytearray()
    for line in block.rstrip("\n").splitlines():
        match = _DUMP_LINE.match(line)
        assert match, f"not a hex dump line in docs/protocol.md: {line!r}"
        # Fixed columns, as in `hexdump -C`: the ASCII column may start with a space.
        offset = match.group(1)
        chunk = bytes.fromhex(line[_HEX_COLUMNS])
        ascii_column = line[_ASCII_START:]
        assert line[53:_ASCII_START] == "  ", f"hex field not 47 columns wide: {line!r}"
        assert int(offset, 16) == len(data), f"offset {offset} should be {len(data):04x}: {line!r}"
        printable = "".join(chr(b) if 0x20 <= b < 0x7F else "." for b in chunk)
        # The document keeps no trailing spaces, so a line ending in 0x20 loses it there.
        assert ascii_column == printable.rstrip(" "), f"ASCII column {ascii_column!r} != {printable!r}"
        data += chunk
    return bytes(data)


def _is_dump(block: str) -> bool:
    return bool(block.strip()) and all(_DUMP_LINE.match(line) for line in block.strip("\n").splitlines())


def dump_after(marker: str) -> bytes:
    """The first hex dump after ``marker``; a stated ``(N bytes`` in it must be the dump's size."""
    at = TEXT.find(marker)
    assert at >= 0, f"docs/protocol.md no longer contains {marker!r}"
    for start, block in _code_blocks():
        if start > at and _is_dump(block):
            data = _parse_dump(block)
            stated = re.search(r"\((\d+) bytes", marker)
            if stated:
                assert len(data) == int(stated.group(1)), f"{marker!r}: the dump has {len(data)} bytes"
            return data
    raise AssertionError(f"no hex dump after {marker!r}")


def hex_after(marker: str) -> bytes:
    """The backticked hex string right after ``marker`` (e.g. ``Proof: `27…```)."""
    match = re.search(re.escape(marker) + r"\s*`([0-9a-f]+)`", TEXT)
    assert match, f"docs/protocol.md: no `hex` after {marker!r}"
    return bytes.fromhex(match.group(1))


def section(title: str) -> str:
    """The text of one section, from its heading to the next heading of any level."""
    match = re.search(r"^#+ " + re.escape(title) + r".*?(?=^#+ )", TEXT, re.S | re.M)
    assert match, f"docs/protocol.md has no section {title!r}"
    return match.group(0)


# -- the markers of §5.18, in document order -------------------------------------------

BUTTON_HELLO = "`hello` (108 bytes"
BUTTON_CHALLENGE = "`challenge` to a button (91 bytes"
BUTTON_AUTH = "`auth` (65 bytes"
WELCOME = "`welcome` (144 bytes"
ALERT_FULL = "`alert` as pinkrelay writes it (181 bytes"
ALERT_MINIMAL = "(92 bytes; decodes to the same alert)"
ALERT_ACK = "`alert_ack` (83 bytes"
MEDIA = "`media` (27 bytes)"
AUTH_ERROR = "`error` sent by the relay after a wrong proof (72 bytes)"
CONSOLE_HELLO = "`hello` from the console (120 bytes"
SCRAM_CHALLENGE = "`challenge` asking for the SCRAM form (123 bytes)"
SCRAM_AUTH = "`auth` with the SCRAM test vector of §6.2 (65 bytes)"
SUBSCRIBED = "`subscribed` (173 bytes"
ALERT_UPDATE = "`alert_update` reporting an escalation (190 bytes"
REFUSAL = "A refused lifecycle request (192 bytes"
TALKBACK_HELLO = "`hello` offering talk-back (118 bytes"
TALKBACK_FIRST = "`talkback`, the first message of a talk (175 bytes"
TALKBACK_NEXT = "The next message (109 bytes"
HMAC_CONTEXT = "Context (73 bytes)"
SCRAM_CONTEXT = "Context (76 bytes)"
MARKERS = [
    BUTTON_HELLO, BUTTON_CHALLENGE, BUTTON_AUTH, WELCOME, ALERT_FULL, ALERT_MINIMAL, ALERT_ACK,
    MEDIA, AUTH_ERROR, CONSOLE_HELLO, SCRAM_CHALLENGE, SCRAM_AUTH, SUBSCRIBED, ALERT_UPDATE,
    REFUSAL, TALKBACK_HELLO, TALKBACK_FIRST, TALKBACK_NEXT, HMAC_CONTEXT, SCRAM_CONTEXT,
]


def test_every_hex_dump_in_the_document_is_checked_here():
    """A dump added to docs/protocol.md without a test here fails this test."""
    dumps = sorted(start for start, block in _code_blocks() if _is_dump(block))
    checked = set()
    for marker in MARKERS:
        at = TEXT.find(marker)
        checked.add(next(start for start in dumps if start > at))
    assert len(checked) == len(MARKERS), "two markers point at the same dump"
    assert checked == set(dumps), "a hex dump in docs/protocol.md has no test in this module"


# -- §6.2: proofs ---------------------------------------------------------------------


def test_hmac_test_vector_of_6_2_1():
    text = section("6.2.1 HMAC form")
    assert "`secret-017`" in text and "identity `mkt-017`" in text and "1 764 374 400 000 000" in text
    assert "(`00 06 44 b0 6d 5c e0 00`)" in text
    assert COUNTER.to_bytes(8, "big").hex(" ") == "00 06 44 b0 6d 5c e0 00"
    context = auth.proof_context(NONCE, "button", BUTTON_ID, COUNTER)
    assert context == dump_after(HMAC_CONTEXT)
    proof = auth.compute_proof(BUTTON_SECRET, NONCE, "button", BUTTON_ID, COUNTER)
    assert proof == hex_after("Proof:")
    assert proof == hmac.new(BUTTON_SECRET, context, hashlib.sha256).digest()
    auth.verify_proof(BUTTON_SECRET, NONCE, "button", BUTTON_ID, COUNTER, proof, last_counter=0)
    with pytest.raises(AuthenticationFailed):
        auth.verify_proof(b"secret-018", NONCE, "button", BUTTON_ID, COUNTER, proof, last_counter=0)


def _vector_table() -> dict[str, bytes]:
    text = section("6.2.2 SCRAM form")
    rows = re.findall(r"^\| `(\w+)` \| `([0-9a-f]{64})` \|$", text, re.M)
    return {name: bytes.fromhex(value) for name, value in rows}


def test_scram_test_vector_of_6_2_2():
    text = section("6.2.2 SCRAM form")
    assert "`Xq3v-7Lh2pQ9wZt4Rk8m`" in text and "`scrypt:16384:8:1`" in text
    assert "salt `a0 a1 a2 … af`" in text and "identity `asma.khan`" in text
    table = _vector_table()
    assert set(table) == {"salted", "client_key", "stored_key", "signature", "proof"}

    context = auth.proof_context(NONCE, "console", OPERATOR, COUNTER)
    assert context == dump_after(SCRAM_CONTEXT)
    n, r, p = auth.parse_kdf(KDF)
    # Step 2 as the document states it, independently of pinkrelay's code.
    salted = hashlib.scrypt(OPERATOR_SECRET, salt=SALT, n=n, r=r, p=p, dklen=32)
    assert salted == table["salted"]
    client_key, stored_key = auth.scram_keys(OPERATOR_SECRET, SALT, n, r, p)
    assert client_key == table["client_key"]
    assert client_key == hmac.new(salted, b"pinkrelay client key", hashlib.sha256).digest()
    assert stored_key == table["stored_key"] == hashlib.sha256(client_key).digest()
    signature = hmac.new(stored_key, context, hashlib.sha256).digest()
    assert signature == table["signature"]
    proof = auth.scram_proof(client_key, stored_key, context)
    assert proof == table["proof"] == bytes(a ^ b for a, b in zip(client_key, signature, strict=True))
    assert auth.scram_verify(stored_key, context, proof)
    assert not auth.scram_verify(stored_key, context, bytes(32))


# -- §5.18: a button session ------------------------------------------------------------


def _deliver(conn, data: bytes) -> list:
    conn.receive_data(data, 0.0)
    return list(conn.events())


def test_button_session_frames_of_5_18():
    """hello, challenge, auth, welcome, alert, alert_ack, media: sequence numbers included."""
    button = ButtonConnection(BUTTON_ID, BUTTON_SECRET, counter=COUNTER, software="pb-fw 2.3")
    relay = RelayConnection(role="button")

    hello = button.hello(0.0)
    assert hello == dump_after(BUTTON_HELLO)
    _deliver(relay, hello)
    challenge = relay.challenge(0.0, nonce=NONCE, relay="relay-1")
    assert challenge == dump_after(BUTTON_CHALLENGE)
    _deliver(button, challenge)
    proof = button.authenticate(0.0)
    assert proof == dump_after(BUTTON_AUTH)
    assert hex_after("Proof:") in proof  # the HMAC test vector of §6.2.1
    _deliver(relay, proof)
    relay.verify(BUTTON_SECRET)
    welcome = relay.welcome(session="s-0001", track_ids=(1, 2), chunk_size=16384, now=0.0)
    assert welcome == dump_after(WELCOME)
    _deliver(button, welcome)

    alert = Alert(alert_id=ALERT_ID, pressed_at=PRESSED_AT)
    alert_frame = button.send(alert, 0.0)
    assert alert_frame == dump_after(ALERT_FULL)
    assert _deliver(relay, alert_frame) == [alert]
    # The minimal form a device may send decodes to the same alert.
    assert _deliver(relay, dump_after(ALERT_MINIMAL)) == [alert]

    ack = relay.send(AlertAck(alert_id=ALERT_ID), 0.0)
    assert ack == dump_after(ALERT_ACK)
    assert _deliver(button, ack) == [AlertAck(alert_id=ALERT_ID)]

    opus = TrackDescription(track_id=2, kind="audio", codec="opus", sample_rate=48000, channels=1)
    _deliver(relay, button.send(StreamDescription(tracks=(opus,)), 0.0))
    assert "(`0x000644B06D6FF2D0`)" in TEXT and MEDIA_TIMESTAMP == 0x000644B06D6FF2D0
    [media] = button.send_media(2, 7, MEDIA_TIMESTAMP, b"\xfc\xff\xfe", keyframe=True)
    assert media == dump_after(MEDIA)
    [event] = _deliver(relay, media)
    assert (event.track_id, event.seq, event.timestamp, event.keyframe, event.data) == (
        2, 7, MEDIA_TIMESTAMP, True, b"\xfc\xff\xfe"
    )


def test_error_after_a_wrong_proof_of_5_18():
    button = ButtonConnection(BUTTON_ID, b"not-the-secret", counter=COUNTER, software="pb-fw 2.3")
    relay = RelayConnection(role="button")
    _deliver(relay, button.hello(0.0))
    _deliver(button, relay.challenge(0.0, nonce=NONCE, relay="relay-1"))
    _deliver(relay, button.authenticate(0.0))
    with pytest.raises(AuthenticationFailed) as caught:
        relay.verify(BUTTON_SECRET)
    frame = relay.error_frame(caught.value)
    assert frame == dump_after(AUTH_ERROR)
    assert _deliver(button, frame) == [Error(code="auth", message="authentication failed", fatal=True)]


# -- §5.18: a console session -----------------------------------------------------------


def test_console_session_frames_of_5_18():
    """hello with a cursor, SCRAM challenge and proof, subscribed, alert_update, a refusal."""
    console = ConsoleConnection(OPERATOR, OPERATOR_SECRET, counter=COUNTER, software="control-room 1.0")
    console.resume_cursor = 1042
    relay = RelayConnection(role="console")

    hello = console.hello(0.0)
    assert hello == dump_after(CONSOLE_HELLO)
    _deliver(relay, hello)
    challenge = relay.challenge(0.0, nonce=NONCE, relay="relay-1", salt=SALT, kdf=KDF)
    assert challenge == dump_after(SCRAM_CHALLENGE)
    _deliver(console, challenge)
    proof = console.authenticate(0.0)
    assert proof == dump_after(SCRAM_AUTH)
    assert _vector_table()["proof"] in proof
    _deliver(relay, proof)
    _, stored_key = auth.scram_keys(OPERATOR_SECRET, SALT, *auth.parse_kdf(KDF))
    relay.verify(b"", stored_key=stored_key)
    _deliver(console, relay.welcome(session="s-0002", now=0.0))

    video = TrackDescription(track_id=1, kind="video", codec="h264", width=640, height=360, fps=30.0)
    subscribed = Subscribed(button=BUTTON_ID, tracks=(video,), catchup_frames=12)
    frame = relay.send(subscribed, 0.0)
    assert frame == dump_after(SUBSCRIBED)
    assert _deliver(console, frame) == [subscribed]

    escalation = AlertUpdate(
        alert_id=ALERT_ID,
        state="raised",
        operator="relay",
        note="escalated to level 1: not acknowledged within 15 s",
        at=0x000644B06E54AD80,
        level=1,
        cursor=57,
    )
    frame = relay.send(escalation, 0.0)
    assert frame == dump_after(ALERT_UPDATE)
    assert _deliver(console, frame) == [escalation]

    # The refusal's message is the one the lifecycle really gives.
    with pytest.raises(LifecycleError) as caught:
        transition(ALERT_ID, "raised", "dispatched", operator=OPERATOR, at=0, unit="QRF-3")
    refusal = Error(code=caught.value.code, message=str(caught.value), fatal=False)
    frame = relay.send(refusal, 0.0)
    assert frame == dump_after(REFUSAL)
    assert _deliver(console, frame) == [refusal]
    assert not console.closed and not relay.closed, "a non-fatal error ends nothing"


# -- §4.3: chunk headers ----------------------------------------------------------------


def test_chunking_example_of_4_3():
    text = section("4.3 Chunking")
    rows = re.findall(r"^\| (\d) \| `((?:[0-9a-f]{2} ){23}[0-9a-f]{2})` \| [^|]+ \| (\d+) \|$", text, re.M)
    assert [int(number) for number, _, _ in rows] == [1, 2, 3], "the example table changed shape"
    assert "1 764 374 401 250 000 µs" in text and "`chunk_size` 256" in text
    payload = bytes(range(256)) * 2 + bytes(88)
    frames = encode_media(1, Lane.VIDEO, 42, MEDIA_TIMESTAMP, payload, True, 256)
    assert [bytes(frame[:HEADER_SIZE]) for frame in frames] == [bytes.fromhex(h) for _, h, _ in rows]
    assert [len(frame) - HEADER_SIZE for frame in frames] == [int(size) for _, _, size in rows]


# -- §5.19: talk-back ---------------------------------------------------------------------

TALK_ID = "019acce9-3a1c-7e2b-8d40-5f6a7b8c9d0e"


def test_talkback_frames_of_5_19():
    """A button that offers talk-back, then the relay's first two talk-back messages to it."""
    button = ButtonConnection(BUTTON_ID, BUTTON_SECRET, counter=COUNTER, software="pb-fw 2.3", talkback=True)
    relay = RelayConnection(role="button")
    hello = button.hello(0.0)
    assert hello == dump_after(TALKBACK_HELLO)
    [received] = _deliver(relay, hello)
    assert received.talkback is True
    _deliver(button, relay.challenge(0.0, nonce=NONCE, relay="relay-1"))
    _deliver(relay, button.authenticate(0.0))
    relay.verify(BUTTON_SECRET)
    _deliver(button, relay.welcome(session="s-0001", track_ids=(1, 2), chunk_size=16384, now=0.0))
    relay.send(AlertAck(alert_id=ALERT_ID), 0.0)
    first = TalkBack(talk_id=TALK_ID, seq=0, captured_at=MEDIA_TIMESTAMP, packet=b"\xfc\xff\xfe",
                     operator=OPERATOR, alert_id=ALERT_ID)
    frame = relay.send(first, 0.0)
    assert frame == dump_after(TALKBACK_FIRST)
    assert _deliver(button, frame) == [first]
    following = TalkBack(talk_id=TALK_ID, seq=1, captured_at=MEDIA_TIMESTAMP + 20_000, packet=b"\xfc\xff\xfe")
    frame = relay.send(following, 0.0)
    assert frame == dump_after(TALKBACK_NEXT)
    assert _deliver(button, frame) == [following]
