"""Which relay holds which button, and which relays are alive: two JetStream KV buckets.

- ``NS_buttons``: button id -> the relay that holds its session and the
  session's epoch. A relay that welcomes a button claims it with a
  compare-and-set on the key's revision, so epochs only grow and two relays
  claiming at once get two epochs. Every relay watches the bucket: a relay
  that sees its button claimed by another at a higher epoch fences its own
  session (goodbye, no more supervision of it there), so a half-open
  session on a dead network path cannot go on speaking for the button.
- ``NS_relays``: one key per relay, its lease, renewed every third of
  ``cluster_lease``; the bucket's TTL drops a lease nobody renews. A
  button whose holder has no lease is an orphan: every surviving relay
  supervises it from then on, and if it reconnects nowhere within the
  supervision window, each raises its offline alert with the same id
  (``offline_alert_id``: the button and the epoch it was lost at), which the
  stream stores once. So the offline alert is raised exactly once, by the
  relay that last held the button or after its lease lapsed by the others.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msgpack
import trio

from ..errors import PinkRelayError
from .records import token

log = logging.getLogger("pinkrelay.cluster")

#: Names offline alert ids: uuid5 of (namespace, button, epoch).
_OFFLINE_IDS = uuid.UUID("6f8e3b52-1d0e-4c55-9a7e-5b1f4a3c2d10")


@dataclass(frozen=True, slots=True)
class Holder:
    relay: str
    epoch: int


class ClaimFailed(PinkRelayError, OSError):
    """The buttons bucket could not be updated (NATS unreachable); the session goes on unclaimed."""


class ClaimedElsewhere(ClaimFailed):
    """Another relay claimed the button after this relay's claim first failed: it is held there now."""


def offline_alert_id(namespace: str, button_id: str, epoch: int) -> str:
    """The id every relay gives the offline alert of ``button_id`` lost at ``epoch``."""
    return str(uuid.uuid5(_OFFLINE_IDS, f"{namespace}\x00{button_id}\x00{epoch}"))


class Directory:
    """The two buckets, read and written through the alert store's NATS connection."""

    def __init__(self, store: Any, *, lease: float) -> None:
        self.store = store
        self.nats = store.nats
        self.subjects = store.subjects
        self.relay = store.relay
        self.lease = lease
        self.holders: dict[str, Holder] = {}
        self.alive: set[str] = set()
        #: Called in trio's thread for every change of a button's holder: (button id, holder).
        self.on_holder: Callable[[str, Holder], None] | None = None
        self._buttons: Any = None
        self._relays: Any = None
        self._keys: dict[str, str] = {}
        self.synced = trio.Event()
        #: This relay's console listener (HOST:PORT), given in its lease for other relays' media pulls.
        self.consoles = ""

    async def open(self) -> None:
        self._buttons = await self.store._soon(lambda: self._bucket(self.subjects.buttons_bucket, ttl=None))
        self._relays = await self.store._soon(lambda: self._bucket(self.subjects.relays_bucket, ttl=self.lease))
        await self.store._soon(self._renew)

    async def _bucket(self, name: str, *, ttl: float | None) -> Any:
        from nats.js.errors import BucketNotFoundError

        js = self.store.jetstream
        try:
            return await js.key_value(name)
        except BucketNotFoundError:
            return await js.create_key_value(bucket=name, history=1, ttl=ttl, replicas=self.store.replicas)

    # -- buttons -------------------------------------------------------------------

    async def claim(self, button_id: str, *, unless_after: int | None = None) -> int:
        """Make this relay the holder of ``button_id``; returns the new epoch.

        ``unless_after``: an epoch; if another relay holds the button at a later one, raise
        ``ClaimedElsewhere`` instead (a retried claim must not take a button that moved on).
        """
        key = token(button_id)
        self._keys[key] = button_id
        try:
            epoch = await self.nats.call(self._claim, key, unless_after)
        except ClaimedElsewhere:
            raise
        except Exception as error:
            raise ClaimFailed(f"button {button_id}: could not claim it in {self.subjects.buttons_bucket} "
                              f"({type(error).__name__}: {error})") from None
        self._seen(button_id, Holder(self.relay, epoch))
        return epoch

    async def _claim(self, key: str, unless_after: int | None = None) -> int:
        from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError

        import asyncio

        from .bus import CAS_ATTEMPTS

        for _ in range(CAS_ATTEMPTS):
            try:
                entry = await self._buttons.get(key)
            except KeyNotFoundError:
                entry = None
            held = msgpack.unpackb(entry.value) if entry is not None and entry.value else None
            if held is not None and unless_after is not None and held["relay"] != self.relay and (
                    held["epoch"] > unless_after):
                raise ClaimedElsewhere(f"button {self._keys[key]}: relay {held['relay']} claimed it at epoch "
                                       f"{held['epoch']} meanwhile")
            epoch = (held["epoch"] if held is not None else 0) + 1
            value = msgpack.packb({"relay": self.relay, "epoch": epoch, "button": self._keys[key]})
            try:
                if entry is None:
                    await self._buttons.create(key, value)
                else:
                    await self._buttons.update(key, value, last=entry.revision)
            except (KeyWrongLastSequenceError, KeyNotFoundError):
                # Another relay claimed it meanwhile (a create that lost the race may not
                # even read the winner's claim yet): take the epoch after theirs.
                await asyncio.sleep(0.01)
                continue
            return epoch
        raise RuntimeError(f"the claim kept changing under {CAS_ATTEMPTS} attempts")

    async def holder_now(self, button_id: str) -> Holder | None:
        """The holder as the bucket has it now (not as this relay last heard); raises if NATS is away."""
        from nats.js.errors import KeyNotFoundError

        async def read() -> Holder | None:
            try:
                entry = await self._buttons.get(token(button_id))
            except KeyNotFoundError:
                return None
            record = msgpack.unpackb(entry.value)
            return Holder(record["relay"], record["epoch"])

        holder = await self.nats.call(read)
        if holder is not None:
            self._seen(button_id, holder)
        return holder

    def _seen(self, button_id: str, holder: Holder) -> None:
        known = self.holders.get(button_id)
        if known is not None and known.epoch >= holder.epoch:
            return
        self.holders[button_id] = holder
        if self.on_holder is not None:
            self.on_holder(button_id, holder)

    async def watch(self) -> None:
        """Follow every change of the buttons bucket until cancelled (the relay runs it)."""
        await self.nats.call(self._watch)

    async def _watch(self) -> None:
        def seen(record: dict[str, Any]) -> None:
            self.nats.to_trio(self._seen, record["button"], Holder(record["relay"], record["epoch"]))

        await follow_bucket(self.store.jetstream, self.subjects.buttons_bucket, seen,
                            lambda: self.nats.to_trio(self.synced.set))

    # -- relays ----------------------------------------------------------------------

    async def renew(self) -> None:
        await self.nats.call(self._renew)

    async def _renew(self) -> None:
        await self._relays.put(token(self.relay), msgpack.packb({"relay": self.relay, "consoles": self.consoles}))

    async def consoles_of(self, relay: str) -> str | None:
        """The console listener another relay gave in its lease (where this relay pulls media from it)."""
        from nats.js.errors import KeyNotFoundError

        try:
            entry = await self.nats.call(self._relays.get, token(relay))
        except KeyNotFoundError:
            return None
        return msgpack.unpackb(entry.value).get("consoles") if entry.value else None

    async def read_leases(self) -> set[str]:
        from nats.js.errors import NoKeysError

        async def keys() -> list[str]:
            try:
                return await self._relays.keys()
            except NoKeysError:
                return []

        names = set(await self.nats.call(keys))
        self.alive = {relay for relay in {h.relay for h in self.holders.values()} | {self.relay}
                      if token(relay) in names}
        return self.alive

    async def leave(self) -> None:
        """A clean shutdown: give up the lease at once, so others supervise this relay's buttons now."""
        try:
            await self.nats.call(self._relays.delete, token(self.relay))
        except Exception as error:
            log.info("lease of %s not given up (%s); it lapses by itself", self.relay, error)


async def follow_bucket(jetstream: Any, bucket: str, on_record: Callable[[dict[str, Any]], None],
                        on_synced: Callable[[], None]) -> None:
    """On the NATS loop: every key's last value, then each change, until cancelled.

    Through an ordered consumer that heartbeats, as the alert feed: nats-py's
    KV watcher has none, so when the node that served its consumer dies it
    goes quiet for good, and a relay would never hear of a takeover again. This one notices the silence and is made again from
    where it was. ``on_synced`` is called once the values present at the
    start have been read.
    """
    import asyncio

    from nats.js.api import DeliverPolicy

    stream = f"KV_{bucket}"
    try:
        last = (await jetstream.stream_info(stream)).state.last_seq
    except Exception as error:
        log.error("bucket %s not followed: %s: %s", bucket, type(error).__name__, error)
        raise
    synced = not last
    if synced:
        on_synced()

    async def arrived(message: Any) -> None:
        nonlocal synced
        if message.data:
            on_record(msgpack.unpackb(message.data))
        if not synced and message.metadata.sequence.stream >= last:
            synced = True
            on_synced()

    try:
        subscription = await jetstream.subscribe(f"$KV.{bucket}.>", stream=stream, cb=arrived, ordered_consumer=True,
                                                 deliver_policy=DeliverPolicy.LAST_PER_SUBJECT, idle_heartbeat=1.0)
    except Exception as error:
        log.error("bucket %s not followed: %s: %s", bucket, type(error).__name__, error)
        raise
    try:
        await asyncio.Event().wait()  # until cancelled with the relay
    finally:
        await subscription.unsubscribe()
