"""A relay as a member of a cluster: claiming its buttons, fencing taken-over sessions, orphans' supervision.

The relay calls ``welcomed`` when a button signs in and asks ``moved_away``
and ``offline_alert_id`` when a button's supervision window expires; the
rest runs in ``run``: the watch of the buttons bucket, the lease renewal
and, every third of a lease, the adoption of orphans (buttons whose holder
has no lease) into this relay's supervisor. See kv.py for why this raises
each offline alert exactly once.
"""

from __future__ import annotations

import logging
import random
from pathlib import Path
from typing import Any

import trio

from ..logs import event as log_event
from ..errors import ConfigError
from .kv import ClaimedElsewhere, ClaimFailed, Directory, Holder, offline_alert_id
from .media import RemoteStreams

#: A failed claim of a button is tried again after this long, doubling up to the maximum (seconds).
CLAIM_RETRY_MIN, CLAIM_RETRY_MAX = 0.2, 5.0

log = logging.getLogger("pinkrelay.cluster")


class Membership:
    def __init__(self, relay: Any, *, lease: float) -> None:
        self.relay = relay
        self.directory = Directory(relay.journal, lease=lease)
        self.directory.on_holder = self._holder_changed
        self.name = relay.journal.relay
        #: Buttons this relay supervises for a dead holder: button id -> the epoch they were lost at.
        self.adopted: dict[str, int] = {}
        self.fenced = 0
        self.media = RemoteStreams(relay, self, _read_secret(relay.config.cluster_secret_file))

    async def open(self) -> None:
        relay = self.relay
        self.directory.consoles = str(relay.consoles_address or "")
        before = relay.hub.unwatched

        def unwatched(button_id: str) -> None:
            before(button_id)
            self.media.unwatched(button_id)

        relay.hub.unwatched = unwatched
        await self.directory.open()

    async def run(self) -> None:
        """Watch the buttons bucket, renew the lease and adopt orphans, until cancelled."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self.directory.watch)
            with trio.move_on_after(10):
                await self.directory.synced.wait()
            while True:
                try:
                    await self.directory.renew()
                    alive = await self.directory.read_leases()
                except Exception as error:  # NATS away: the lease lapses, others adopt; try again
                    log.warning("cluster lease of relay %s not renewed: %s", self.name, error)
                else:
                    self._adopt_orphans(alive)
                await trio.sleep(self.directory.lease / 3)

    async def leave(self) -> None:
        await self.directory.leave()

    # -- buttons --------------------------------------------------------------------

    def welcomed(self, session: Any) -> None:
        """A button signed in here: claim it (in the background; the session is served meanwhile)."""
        session.cluster_epoch = 0
        self.adopted.pop(session.identity, None)
        if self.relay._nursery is not None:
            self.relay._nursery.start_soon(self._claim, session)

    async def _claim(self, session: Any) -> None:
        """Claim the button, retrying with backoff while its session lasts (NATS away, a stream mid-election)."""
        failures, delay, known = 0, CLAIM_RETRY_MIN, None
        while True:
            try:
                session.cluster_epoch = await self.directory.claim(session.identity, unless_after=known)
                break
            except ClaimedElsewhere as error:
                log.warning("%s; not claiming it back", error)
                return
            except ClaimFailed as error:
                if self.relay.sessions_by_button.get(session.identity) is not session:
                    return  # the session ended: its successor claims for itself
                failures += 1
                if failures == 1:
                    holder = self.directory.holders.get(session.identity)
                    known = holder.epoch if holder is not None else 0  # a later claim is another relay's
                    log.error("%s; other relays do not know this relay holds it until a claim succeeds: "
                              "retrying", error)
            await trio.sleep(delay * random.uniform(0.5, 1.0))
            delay = min(delay * 2, CLAIM_RETRY_MAX)
        after = f" after {failures} failed attempts" if failures else ""
        log_event(log, logging.WARNING if failures else logging.INFO,
                  f"button {session.identity} held by relay {self.name}, epoch {session.cluster_epoch}{after}",
                  button=session.identity, epoch=session.cluster_epoch)

    def _holder_changed(self, button_id: str, holder: Holder) -> None:
        self.media.holder_changed(button_id)
        if holder.relay == self.name:
            return
        self.adopted.pop(button_id, None)
        session = self.relay.sessions_by_button.get(button_id)
        if session is not None and getattr(session, "cluster_epoch", 0) < holder.epoch:
            self.fenced += 1
            log_event(log, logging.WARNING, f"button {button_id} taken over by relay {holder.relay} (epoch "
                      f"{holder.epoch}): closing its session here", button=button_id, relay=holder.relay,
                      epoch=holder.epoch, decision="disconnect", reason="taken-over")
            session.say_goodbye(f"taken over by relay {holder.relay}")
        # Its new holder supervises it now.
        self.relay.supervisor.forget(button_id)

    def moved_away(self, button_id: str) -> bool:
        """True when another relay holds the button now: its silence here is no offline alert."""
        holder = self.directory.holders.get(button_id)
        return holder is not None and holder.relay != self.name and button_id not in self.adopted

    async def may_report_offline(self, button_id: str) -> bool:
        """Ask the bucket itself whether this relay may still speak for the button's silence.

        A relay cut off from the cluster cannot hear that its button was
        claimed elsewhere; its offline alert, stored once it is back, would
        be false. So before each attempt it reads the holder: another relay
        at a higher epoch than this one knows means the button moved. When
        NATS cannot be read, the store cannot take the alert either, and the
        attempt is made (and retried) as usual.
        """
        known = self.adopted.get(button_id)
        if known is None:
            holder = self.directory.holders.get(button_id)
            known = holder.epoch if holder is not None else 0
        try:
            with trio.fail_after(self.directory.lease):
                now = await self.directory.holder_now(button_id)
        except Exception:
            return True
        return now is None or now.relay == self.name or now.epoch <= known

    def offline_alert_id(self, button_id: str) -> str:
        epoch = self.adopted.get(button_id)
        if epoch is None:
            holder = self.directory.holders.get(button_id)
            epoch = holder.epoch if holder is not None else 0
        return offline_alert_id(self.directory.subjects.namespace, button_id, epoch)

    def state_id(self, state: Any) -> str:
        """The message id of a button state: relays that all see one button go offline store it once."""
        if state.state == "offline":
            return "offline:" + self.offline_alert_id(state.button)
        holder = self.directory.holders.get(state.button)
        return f"online:{state.button}:{holder.epoch if holder else 0}:{state.at // 1_000_000}"

    def _adopt_orphans(self, alive: set[str]) -> None:
        now = trio.current_time()
        for button_id, holder in list(self.directory.holders.items()):
            if button_id in self.adopted or button_id not in self.relay.registry:
                continue
            mine_but_gone = holder.relay == self.name and button_id not in self.relay.sessions_by_button
            if holder.relay in alive and not mine_but_gone:
                continue
            if button_id in self.relay.sessions_by_button or button_id in self.relay._offline_alerts:
                continue
            self.adopted[button_id] = holder.epoch
            if holder.relay != self.name:
                log_event(log, logging.INFO, f"button {button_id}: its relay {holder.relay} has no lease; "
                          f"supervising it here", button=button_id, relay=holder.relay, epoch=holder.epoch)
            if not self.relay.supervisor.is_online(button_id):
                self.relay.supervisor.seen(button_id, now)
                self.relay._supervision_wakeup.set()


#: A cluster secret shorter than this is refused: it is every relay's credential at every other.
MIN_SECRET_BYTES = 32


def _read_secret(path: Path | None) -> bytes | None:
    if path is None:
        return None
    try:
        secret = Path(path).read_bytes().strip()
    except OSError as error:
        raise ConfigError(f"cluster_secret_file {path}: {error.strerror or error}") from None
    if len(secret) < MIN_SECRET_BYTES:
        raise ConfigError(f"cluster_secret_file {path} has {len(secret)} bytes; use at least {MIN_SECRET_BYTES} "
                          "(e.g. head -c 48 /dev/urandom | base64 > FILE), the same file on every relay")
    return secret
