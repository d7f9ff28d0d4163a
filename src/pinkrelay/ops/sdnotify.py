"""systemd's notify protocol, without a dependency: one datagram per state to ``$NOTIFY_SOCKET``.

With ``Type=notify`` systemd starts the units that need the relay only after
``READY=1`` (both listeners bound, journal open), and with ``WatchdogSec=``
restarts a relay whose event loop stops answering: ``WATCHDOG=1`` is sent
from that loop every half of ``$WATCHDOG_USEC``, so a loop that hangs stops
sending. Outside systemd (no ``NOTIFY_SOCKET``) every call does nothing.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping
from typing import Any

import trio

log = logging.getLogger("pinkrelay.relay")


class SystemdNotifier:
    """Sends ``READY=1``, ``WATCHDOG=1``, ``STATUS=...`` and ``STOPPING=1`` to systemd."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        address = env.get("NOTIFY_SOCKET", "")
        # An abstract socket is written '@name' and means a leading NUL byte.
        self.address = "\0" + address[1:] if address.startswith("@") else address
        watchdog = env.get("WATCHDOG_USEC", "")
        pid = env.get("WATCHDOG_PID", "")
        mine = not pid or pid == str(os.getpid())
        self.watchdog_interval = int(watchdog) / 2e6 if watchdog.isdigit() and int(watchdog) > 0 and mine else None
        self._sock: socket.socket | None = None

    @property
    def enabled(self) -> bool:
        return bool(self.address)

    def notify(self, *states: str) -> None:
        """Send ``KEY=value`` lines in one datagram; a failure is logged, never raised."""
        if not self.address:
            return
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._sock.sendto("\n".join(states).encode(), self.address)
        except OSError as error:
            log.warning("cannot notify systemd at %s: %s", self.address.replace("\0", "@"),
                        error.strerror or error)

    async def keep_alive(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Send ``WATCHDOG=1`` at half the watchdog interval, from the relay's event loop, until cancelled."""
        task_status.started()
        if self.watchdog_interval is None or not self.address:
            return
        while True:
            self.notify("WATCHDOG=1")
            await trio.sleep(self.watchdog_interval)

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
