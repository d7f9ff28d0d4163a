#!/usr/bin/env python3
"""Who pays for a loopback send: the same bytes written two ways to N local sockets.

One sender process (core 0) writes a 9.2 KB "video frame" 30 times a second
to each of N loopback connections; one reader process (core 1) reads them
all every 10 ms, as the fan-out benchmark's subscribers do. Two ways:

* ``chunked``: five ``send()`` calls per frame (4096, 4096, 400, 300, 300
  bytes, like nginx-rtmp's 4096-byte RTMP chunks plus audio) with Nagle on
  (nginx-rtmp sets no TCP_NODELAY);
* ``one-write``: one ``send()`` of the whole frame with TCP_NODELAY, as
  pinkrelay writes each subscriber's queue.

It prints the CPU of each process per delivered Gbit (user + system, from
``os.times``). On loopback the kernel runs a segment's receive path in the
context of whoever transmits it; under Nagle the held chunks are
transmitted when the reader's ACK arrives, in the reader's context, so the
sender looks cheaper than it is. ``bench_compare.py`` runs this in its
"limits" section; by hand::

    python benchmarks/compare/loopback_nagle.py [--n 800] [--seconds 4]
"""

from __future__ import annotations

import argparse
import json
import os
import select
import socket
import sys
import time

FRAME_PARTS = {"chunked": [4096, 4096, 400, 300, 300], "one-write": [9192]}


def reader(port: int, n: int, seconds: float, core: int, report: int) -> None:
    os.sched_setaffinity(0, {core})
    socks = [socket.create_connection(("127.0.0.1", port)) for _ in range(n)]
    ep = select.epoll()
    by_fd = {}
    for sock in socks:
        sock.setblocking(False)
        ep.register(sock.fileno(), select.EPOLLIN)
        by_fd[sock.fileno()] = sock
    buf = bytearray(256 * 1024)
    start = os.read(report, 1)  # the sender says when the window begins
    assert start == b"s"
    before, got = os.times(), 0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        began = time.monotonic()
        for fd, _ in ep.poll(0.05):
            try:
                got += by_fd[fd].recv_into(buf)
            except BlockingIOError:
                pass
        left = 0.01 - (time.monotonic() - began)
        if left > 0:
            time.sleep(left)
    after = os.times()
    cpu = (after.user - before.user) + (after.system - before.system)
    os.write(report, json.dumps({"cpu_s": cpu, "bytes": got}).encode())
    os._exit(0)


def measure(way: str, n: int, seconds: float, rate: float = 30.0) -> dict[str, float]:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(n + 16)
    port = listener.getsockname()[1]
    parent, child = socket.socketpair()
    pid = os.fork()
    if pid == 0:
        parent.close()
        reader(port, n, seconds, 1, child.fileno())
    child.close()
    os.sched_setaffinity(0, {0})
    conns = []
    for _ in range(n):
        conn, _ = listener.accept()
        conn.setblocking(False)
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 0 if way == "chunked" else 1)
        conns.append(conn)
    parts = [os.urandom(size) for size in FRAME_PARTS[way]]
    sends = [conn.send for conn in conns]
    parent.sendall(b"s")
    before, started, sent = os.times(), time.monotonic(), 0
    due = started
    while time.monotonic() - started < seconds:
        for send in sends:
            for part in parts:
                try:
                    sent += send(part)
                except BlockingIOError:
                    pass
        due += 1 / rate
        wait = due - time.monotonic()
        if wait > 0:
            time.sleep(wait)
    after = os.times()
    elapsed = time.monotonic() - started
    result = json.loads(parent.recv(4096))
    os.waitpid(pid, 0)
    for conn in conns:
        conn.close()
    listener.close()
    sender_cpu = (after.user - before.user) + (after.system - before.system)
    gbit = sent * 8 / 1e9
    return {
        "way": way,
        "n": n,
        "gbps": gbit / elapsed,
        "sender_cpu_fraction": sender_cpu / elapsed,
        "reader_cpu_fraction": result["cpu_s"] / elapsed,
        "sender_cpu_s_per_gbit": sender_cpu / gbit,
        "reader_cpu_s_per_gbit": result["cpu_s"] / gbit,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=800, help="connections (default 800)")
    parser.add_argument("--seconds", type=float, default=4.0, help="measured seconds per way (default 4)")
    args = parser.parse_args()
    results = [measure(way, args.n, args.seconds) for way in ("chunked", "one-write")]
    json.dump(results, sys.stdout)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
