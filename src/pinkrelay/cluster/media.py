"""Media across relays: a console on relay B watches a button held by relay A.

B pulls the stream from A over the same v1 protocol a console speaks: it
signs in to A's console listener as ``relay.B`` with its own relay
credential (``relay_token``: an HMAC of the name under the cluster's
``cluster_secret_file``, so each relay's credential is its own and any relay
can check it), subscribes to the button, and republishes every message into
its own hub under its own track ids. So there is one pull per button per
relay however many of B's consoles watch it, B's GOP cache serves their
fast join, and B's queues and drop rules protect each of them as for a local
button. The pull ends when B's last watcher leaves, and moves when the
button moves to another relay.

Media itself never goes through NATS (docs/operations.md §22.1).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from dataclasses import replace
from typing import Any

import trio

from .._core import Message, encode_media
from ..logs import event as log_event
from ..protocol import Media, StreamDescription, Subscribed
from ..protocol.events import TrackDescription
from ..relay.data_plane import describe_tracks, join_watchers

log = logging.getLogger("pinkrelay.cluster")

RELAY_PREFIX = "relay."


def relay_token(secret: bytes, identity: str) -> bytes:
    """The console token of relay ``identity`` (``relay.NAME``) under the cluster's secret."""
    return hmac.new(secret, identity.encode(), hashlib.sha256).hexdigest().encode()


class RemoteStreams:
    """The pulls of one relay: button id -> the task that pulls it from its holder."""

    def __init__(self, relay: Any, membership: Any, secret: bytes | None) -> None:
        self.relay = relay
        self.membership = membership
        self.secret = secret
        self.pulls: dict[str, _Pull] = {}
        self.refused_without_secret: set[str] = set()
        self._tls: Any = None

    @property
    def identity(self) -> str:
        return RELAY_PREFIX + self.membership.name

    def token_of(self, identity: str) -> bytes | None:
        """The token a peer relay signs in with, if ``identity`` names one and this cluster has a secret."""
        if self.secret is None or not identity.startswith(RELAY_PREFIX):
            return None
        return relay_token(self.secret, identity)

    def client_tls(self) -> Any:
        """How this relay's pulls reach the others: plaintext, or TLS when its own listeners speak it.

        Relays of one deployment trust each other as their consoles do: the
        CA of ``tls_client_ca`` when it is set (the deployment's, from
        'pinkrelay certs init'), or else the relay certificate itself, which
        every relay of the deployment then serves (it names all their hosts).
        """
        config = self.relay.config
        if config.tls_cert is None:
            return None
        if self._tls is None:
            from ..tls import client_tls, fingerprint

            if config.tls_client_ca is not None:
                self._tls = client_tls(ca=config.tls_client_ca)
            else:
                from cryptography import x509
                from cryptography.hazmat.primitives import serialization

                own = x509.load_pem_x509_certificate(config.tls_cert.read_bytes())
                self._tls = client_tls(pin=fingerprint(own.public_bytes(serialization.Encoding.DER)))
        return self._tls

    def watch(self, button_id: str) -> None:
        """A console here asked for ``button_id``: pull it if another relay holds it."""
        holder = self.membership.directory.holders.get(button_id)
        if holder is None or holder.relay == self.membership.name or button_id in self.relay.sessions_by_button:
            return
        pull = self.pulls.get(button_id)
        if pull is not None and pull.holder == holder.relay:
            return
        if self.secret is None:
            if button_id not in self.refused_without_secret:
                self.refused_without_secret.add(button_id)
                log.warning("button %s streams on relay %s: set cluster_secret_file on every relay to watch it "
                            "from relay %s", button_id, holder.relay, self.membership.name)
            return
        if pull is not None:
            pull.stop()
        pull = self.pulls[button_id] = _Pull(self, button_id, holder.relay)
        if self.relay._nursery is not None:
            self.relay._nursery.start_soon(pull.run)

    def holder_changed(self, button_id: str) -> None:
        """The button moved: pull from its new relay, or stop if it is here now."""
        pull = self.pulls.get(button_id)
        if pull is None:
            return
        pull.stop()
        if self.relay.hub.watchers.get(button_id):
            self.watch(button_id)

    def unwatched(self, button_id: str) -> None:
        pull = self.pulls.get(button_id)
        if pull is not None:
            pull.stop()

    def request_keyframe(self, button_id: str) -> None:
        pull = self.pulls.get(button_id)
        if pull is not None and pull.console is not None:
            pull.console.request_keyframe(button_id)


class _Pull:
    def __init__(self, owner: RemoteStreams, button_id: str, holder: str) -> None:
        self.owner = owner
        self.button_id = button_id
        self.holder = holder
        self.console: Any = None
        self.stream: Any = None
        self._remote_to_local: dict[int, int] = {}
        self._scope = trio.CancelScope()
        self.messages = 0

    def stop(self) -> None:
        self._scope.cancel()
        if self.owner.pulls.get(self.button_id) is self:
            del self.owner.pulls[self.button_id]

    async def run(self) -> None:
        from ..clients.console import ConsoleClient

        with self._scope:
            address = await self.owner.membership.directory.consoles_of(self.holder)
            if address is None:
                log.warning("button %s: relay %s has no console address in its lease; not pulled",
                            self.button_id, self.holder)
                return
            identity = self.owner.identity
            self.console = ConsoleClient(address, identity, relay_token(self.owner.secret, identity),
                                         buffer=1024, tls=self.owner.client_tls())
            self.console.subscribe(self.button_id)
            log_event(log, logging.INFO, f"pulling button {self.button_id} from relay {self.holder} ({address})",
                      button=self.button_id, relay=self.holder, action="pull")
            try:
                async with trio.open_nursery() as nursery:
                    await nursery.start(self.console.run)
                    async for event in self.console.events():
                        if isinstance(event, Media) and self.stream is not None:
                            self._forward(event)
                        elif isinstance(event, (Subscribed, StreamDescription)) and event.button == self.button_id:
                            self._describe(event.tracks)
            finally:
                self.console.close("pull ended")
                self._close()
        if self.owner.pulls.get(self.button_id) is self:
            del self.owner.pulls[self.button_id]

    def _describe(self, tracks: tuple[TrackDescription, ...]) -> None:
        relay = self.owner.relay
        if not tracks:
            self._close()
            return
        local_ids = relay._track_block(self.button_id)
        self._remote_to_local = {track.track_id: local_ids[index] for index, track in enumerate(tracks)
                                 if index < len(local_ids)}
        local_tracks = tuple(replace(track, track_id=self._remote_to_local[track.track_id])
                             for track in tracks if track.track_id in self._remote_to_local)
        if self.stream is None:
            # On the data plane the pulled stream has a publisher of its own, without a socket: what
            # arrives is injected, and the data threads fan it out and keep its GOP cache.
            publisher = relay.data_plane.relayed_publisher(self) if relay.data_plane is not None else None
            self.stream = relay.hub.open_stream(self.button_id, local_ids, publisher)
            if publisher is not None:
                join_watchers(publisher, relay.hub.watchers.get(self.button_id, ()))
        if self.stream.publisher is not None:
            describe_tracks(self.stream.publisher, local_ids, local_tracks)
        relay.hub.describe(self.stream, local_tracks)
        relay._notify_watchers(self.button_id, StreamDescription(button=self.button_id, tracks=local_tracks))

    def _forward(self, media: Media) -> None:
        track = self._remote_to_local.get(media.track_id)
        if track is None:
            return
        payload = media.message.payload()
        frames = encode_media(track, media.lane, media.seq, media.timestamp, payload, media.keyframe,
                              self.owner.relay.config.chunk_size)
        if self.stream.publisher is not None:
            self.stream.publisher.inject(b"".join(frames), media.lane, track, media.keyframe)
        else:
            self.owner.relay.hub.publish(self.stream, Message(track, media.lane, media.seq, media.timestamp,
                                                              media.keyframe, tuple(frames), len(payload)))
        self.messages += 1

    @property
    def stream_state(self) -> Any:
        """The hub's stream of this pull: the data plane's recording tap looks it up here."""
        return self.stream

    def _close(self) -> None:
        if self.stream is not None:
            relay = self.owner.relay
            relay.hub.close_stream(self.stream)
            if self.stream.publisher is not None:
                relay.data_plane.forget(self.stream.publisher)
            if self.button_id not in relay.hub.streams:  # not replaced by the button's own session here
                relay._notify_watchers(self.button_id, StreamDescription(button=self.button_id, tracks=()))
            self.stream = None
