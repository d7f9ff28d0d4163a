"""Readiness: can the relay take buttons and store alerts right now?

Ready means both listeners are bound, the relay is not shutting down, and a
small write to the journal commits (the journal is probed at most once a
second, through the same thread and batches as alerts, so it fails exactly
when storing an alert would: disk full, read-only, closed). ``/readyz``
answers from it, and the ``pinkrelay_ready`` metric shows the last answer,
refreshed every few seconds, so Prometheus can alert on it without a
separate prober.
"""

from __future__ import annotations

from typing import Any

import trio

from ..errors import PinkRelayError

#: Seconds a journal probe's answer stands.
PROBE_INTERVAL = 1.0
#: Seconds between the background checks behind the ``pinkrelay_ready`` metric.
REFRESH_INTERVAL = 5.0


class Readiness:
    """The relay's readiness, checked on demand and kept fresh in the background."""

    def __init__(self, relay: Any) -> None:
        self.relay = relay
        #: What kept the relay from being ready at the last check (empty: ready; None: not checked yet).
        self.problems: list[str] | None = None
        self._probed_at = float("-inf")
        self._journal_problem: str | None = None

    async def check(self) -> list[str]:
        """What keeps the relay from taking buttons and alerts now (empty: ready)."""
        relay = self.relay
        problems = []
        if relay.stopping:
            problems.append("the relay is shutting down")
        if relay.buttons_address is None or relay.consoles_address is None:
            problems.append("the button and console listeners are not bound yet")
        now = trio.current_time()
        if now - self._probed_at >= PROBE_INTERVAL:
            self._probed_at = now
            probe = getattr(relay.journal, "probe", None)  # an embedder's own journal may have none
            try:
                if probe is not None:
                    await probe()
            except PinkRelayError as error:
                self._journal_problem = f"the journal cannot be written: {error}"
            else:
                self._journal_problem = None
        if self._journal_problem:
            problems.append(self._journal_problem)
        self.problems = problems
        return problems

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Check every ``REFRESH_INTERVAL`` seconds until cancelled."""
        await self.check()
        task_status.started()
        while True:
            await trio.sleep(REFRESH_INTERVAL)
            await self.check()
