"""A small real HTTP server for the webhook tests: verifies signatures, answers as scripted."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from relay_helpers import button_client, button_ids, console_client, wait_until


class WebhookPeer:
    """Listens on 127.0.0.1; ``script`` is the status of each request in turn (then 200)."""

    def __init__(self, secret: bytes, script: list[int] | None = None, headers: dict[str, str] | None = None,
                 hang: bool = False) -> None:
        self.secret = secret
        self.script = list(script or [])
        self.extra_headers = headers or {}
        self.hang = hang
        self.requests: list[dict[str, Any]] = []  # every request, with the status it got
        self.stored: dict[str, dict[str, Any]] = {}  # by idempotency key: what a receiver keeps
        self.stored_order: list[str] = []
        self.bad_signatures = 0
        self.lock = threading.Lock()
        peer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if peer.hang:
                    time.sleep(30)
                    return
                stamp = self.headers.get("X-Pinkrelay-Timestamp", "")
                expected = "sha256=" + hmac.new(peer.secret, stamp.encode() + b"." + body,
                                                hashlib.sha256).hexdigest()
                good = hmac.compare_digest(expected, self.headers.get("X-Pinkrelay-Signature", ""))
                key = self.headers.get("Idempotency-Key", "")
                with peer.lock:
                    status = peer.script.pop(0) if peer.script else 200
                    if not good:
                        peer.bad_signatures += 1
                        status = 401
                    content = (json.loads(body) if self.headers.get("Content-Type") == "application/json"
                               else body)
                    peer.requests.append({"key": key, "status": status, "at": time.monotonic(),
                                          "body": content, "content_type": self.headers.get("Content-Type")})
                    if status == 200 and key not in peer.stored:
                        peer.stored[key] = content
                        peer.stored_order.append(key)
                self.send_response(status)
                for name, value in peer.extra_headers.items():
                    if status != 200:
                        self.send_header(name, value)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> WebhookPeer:
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.shutdown()
        self.server.server_close()

    def states(self) -> list[str]:
        with self.lock:
            return [self.stored[key]["step"]["state"] for key in self.stored_order]


async def press_acknowledge_resolve(relay: Any, nursery: Any, peer: WebhookPeer) -> Any:
    """A button presses, a console acknowledges, then resolves; each step waits for ``peer`` to store the last."""
    console = console_client(relay)
    await nursery.start(console.run)
    button = button_client(relay, button_ids(1)[0])
    await nursery.start(button.run)
    receipt = await button.press(timeout=5)
    await wait_until(lambda: len(peer.stored) == 1, timeout=10)
    for count, state in enumerate(("acknowledged", "resolved"), start=2):
        console.update_alert(receipt.alert_id, state, **({"outcome": "test"} if state == "resolved" else {}))
        await wait_until(lambda n=count: len(peer.stored) == n, timeout=10, what=f"step {state} at the receiver")
    return receipt
