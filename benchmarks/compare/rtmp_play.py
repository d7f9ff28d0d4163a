"""A minimal RTMP play client: enough to make nginx-rtmp send a live stream, nothing more.

``connect_play(host, port, app, stream)`` does, on one blocking socket:

1. the simple (version 3, no digest) handshake: C0+C1 out, S0+S1+S2 in, C2 (= S1) out;
2. then, in one write, pipelined: Set Chunk Size 4096, AMF0 ``connect`` (app,
   tcUrl, ...), ``createStream`` and ``play`` (message stream 1, start -2000 =
   live) - nginx-rtmp handles them in order and always gives the first stream id 1;

and returns the socket. From then on the caller only counts the bytes it
reads (it never parses them): the cheapest subscriber there is, so that a
single process can hold over a thousand of them. It does not answer pings
(the benchmark's nginx config turns them off) or send acknowledgements
(nginx-rtmp does not wait for them from players).

Run as a script it plays one stream for a few seconds and prints the bytes::

    python benchmarks/compare/rtmp_play.py 127.0.0.1 1935 live stream 5
"""

from __future__ import annotations

import os
import socket
import struct
import sys
import time

CHUNK_SIZE = 4096


# -- AMF0 -------------------------------------------------------------------------------


def amf_number(value: float) -> bytes:
    return b"\x00" + struct.pack(">d", value)


def amf_bool(value: bool) -> bytes:
    return b"\x01" + (b"\x01" if value else b"\x00")


def amf_string(value: str) -> bytes:
    data = value.encode()
    return b"\x02" + struct.pack(">H", len(data)) + data


def amf_null() -> bytes:
    return b"\x05"


def amf_object(items: dict) -> bytes:
    out = b"\x03"
    for key, value in items.items():
        name = key.encode()
        out += struct.pack(">H", len(name)) + name
        if isinstance(value, bool):
            out += amf_bool(value)
        elif isinstance(value, (int, float)):
            out += amf_number(float(value))
        else:
            out += amf_string(str(value))
    return out + b"\x00\x00\x09"


# -- chunks -----------------------------------------------------------------------------


def message(csid: int, type_id: int, stream_id: int, payload: bytes, chunk_size: int) -> bytes:
    """One RTMP message as chunks: a type-0 header, then type-3 continuation headers."""
    header = bytes([csid & 0x3F]) + struct.pack(">I", 0)[1:] + struct.pack(">I", len(payload))[1:]
    header += bytes([type_id]) + struct.pack("<I", stream_id)
    out = [header, payload[:chunk_size]]
    for start in range(chunk_size, len(payload), chunk_size):
        out += [bytes([0xC0 | (csid & 0x3F)]), payload[start : start + chunk_size]]
    return b"".join(out)


def play_requests(host: str, port: int, app: str, stream: str) -> bytes:
    """Set Chunk Size + connect + createStream + play (+ buffer length), ready to send."""
    connect = (
        amf_string("connect")
        + amf_number(1)
        + amf_object(
            {
                "app": app,
                "flashVer": "LNX 9,0,124,2",
                "tcUrl": f"rtmp://{host}:{port}/{app}",
                "fpad": False,
                "capabilities": 15,
                "audioCodecs": 3191,
                "videoCodecs": 252,
                "videoFunction": 1,
            }
        )
    )
    create = amf_string("createStream") + amf_number(2) + amf_null()
    play = amf_string("play") + amf_number(0) + amf_null() + amf_string(stream) + amf_number(-2000)
    # user control "set buffer length" (event 3) for stream 1: 3000 ms
    buffer_length = struct.pack(">HII", 3, 1, 3000)
    return b"".join(
        [
            message(2, 1, 0, struct.pack(">I", CHUNK_SIZE), 128),  # Set Chunk Size
            message(3, 20, 0, connect, CHUNK_SIZE),
            message(3, 20, 0, create, CHUNK_SIZE),
            message(2, 4, 0, buffer_length, CHUNK_SIZE),
            message(8, 20, 1, play, CHUNK_SIZE),
        ]
    )


def recv_exactly(sock: socket.socket, n: int) -> bytes:
    parts = []
    while n:
        data = sock.recv(n)
        if not data:
            raise ConnectionError("the server closed the connection during the RTMP handshake")
        parts.append(data)
        n -= len(data)
    return b"".join(parts)


def connect_play(host: str, port: int, app: str, stream: str, timeout: float = 10.0) -> socket.socket:
    """A socket on which nginx-rtmp now sends ``stream`` (see the module doc)."""
    sock = socket.create_connection((host, port), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    c1 = struct.pack(">II", int(time.time()) & 0xFFFFFFFF, 0) + os.urandom(1528)
    sock.sendall(b"\x03" + c1)
    s0s1s2 = recv_exactly(sock, 1 + 1536 + 1536)
    if s0s1s2[0] != 3:
        raise ConnectionError(f"RTMP version {s0s1s2[0]} from the server, expected 3")
    s1 = s0s1s2[1:1537]
    sock.sendall(s1 + play_requests(host, port, app, stream))
    return sock


def main() -> int:
    host, port, app, stream, seconds = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], float(sys.argv[5])
    sock = connect_play(host, port, app, stream)
    total = 0
    deadline = time.monotonic() + seconds
    sock.settimeout(0.5)
    while time.monotonic() < deadline:
        try:
            data = sock.recv(65536)
        except socket.timeout:
            continue
        if not data:
            break
        total += len(data)
    print(f"{total} bytes in {seconds:g} s = {total * 8 / seconds / 1e6:.2f} Mbit/s")
    return 0 if total else 1


if __name__ == "__main__":
    sys.exit(main())
