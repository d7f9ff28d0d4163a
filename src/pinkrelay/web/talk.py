"""Talk-back from the browser: one operator's press-and-hold, from the page's WebSocket to the relay's desk.

The page asks with a JSON command and then streams binary messages, one
Opus packet each, in the same 12-byte framing live media uses towards the
page (``live.py``), with flag 8 (talk-back)::

    offset  size  field
    0       1     version (1)
    1       1     flags: 8 talk-back (nothing else is accepted from a page)
    2       2     0
    4       8     capture time of the packet's first sample, µs since the UNIX epoch (operator's clock)
    12      ...   one raw Opus packet (WebCodecs AudioEncoder output)

Commands (page → relay) and answers (relay → page)::

    {"type": "talk-start", "button": ID}     → {"type": "talk", "state": "open", "button", "talk_id", "alert_id"}
                                               or {"type": "talk", "state": "refused", "button", "message"}
    {"type": "talk-stop"}                    → {"type": "talk", "state": "closed", "button", "talk_id", "reason"}

A talk the relay ends itself (the button went away) is answered "closed" too.

The desk (``relay/talkback.py``) decides who may talk and audits every
talk; this module only holds one socket's talk and checks what the page
sends. A page that sends packets with no talk open, malformed packets or a
flood gets one error message a second, never a closed board.
"""

from __future__ import annotations

import logging
import struct
from typing import Any

from ..errors import TalkBackRefused
from ..protocol.events import MAX_TALKBACK_PACKET
from ..relay.talkback import Talk

#: The page's talk-back packets keep the first live-media framing (version 1, 16-bit track field,
#: unused here): version, flags, track, capture time µs. Live media towards the page moved to
#: version 2 (a 32-bit track id); talk-back carries no track, so its format stays as it was.
HEADER = struct.Struct(">BBHQ")
VERSION = 1

log = logging.getLogger("pinkrelay.web")

#: The flag of live.py's framing that marks talk-back (page → relay); live media uses 1, 2 and 4.
FLAG_TALKBACK = 8
#: Seconds between two complaints to one page about what it sends.
COMPLAINT_INTERVAL = 1.0


class WebTalk:
    """The talk of one WebSocket (at most one at a time)."""

    def __init__(self, relay: Any, viewer: Any, encode: Any, clock: Any) -> None:
        self.relay = relay
        self.viewer = viewer
        self._encode = encode
        self._clock = clock
        self.talk: Talk | None = None
        self.rejected = 0
        self._complained_at = float("-inf")

    def _tell(self, **message: Any) -> None:
        self.viewer.send_json_text(self._encode({"type": "talk", **message}))

    async def start(self, session: Any, button: str, remote: str) -> None:
        if self.talk is not None:
            if self.talk.button == button and self.talk.open:
                self._tell(state="open", button=button, talk_id=self.talk.talk_id, alert_id=self.talk.alert_id)
                return
            await self.stop("the operator started talking to another button")
        try:
            self.talk = await self.relay.talkback.open(
                operator=session.operator, role=session.role, room=session.room, button=button,
                via=f"web {remote}",
            )
        except TalkBackRefused as refusal:
            self._tell(state="refused", button=button, message=str(refusal))
            return
        self._tell(state="open", button=button, talk_id=self.talk.talk_id, alert_id=self.talk.alert_id)

    async def stop(self, reason: str = "released") -> None:
        talk, self.talk = self.talk, None
        if talk is None:
            return
        await self.relay.talkback.close(talk, reason)
        self._tell(state="closed", button=talk.button, talk_id=talk.talk_id, reason=talk.ended)

    async def packet(self, data: bytes) -> None:
        """One binary message from the page."""
        if len(data) <= HEADER.size or len(data) > HEADER.size + MAX_TALKBACK_PACKET:
            self._complain(f"a talk-back message is a {HEADER.size}-byte header and 1 to "
                           f"{MAX_TALKBACK_PACKET} bytes of Opus; got {len(data)} bytes")
            return
        version, flags, _, captured_at = HEADER.unpack_from(data)
        if version != VERSION or flags != FLAG_TALKBACK:
            self._complain(f"binary messages from the page are talk-back only (version {VERSION}, "
                           f"flags {FLAG_TALKBACK}); got version {version}, flags {flags}")
            return
        talk = self.talk
        if talk is None:
            # Packets still in flight after a refusal or a release: nothing to say.
            self.rejected += 1
            return
        if not self.relay.talkback.send(talk, bytes(data[HEADER.size:]), min(captured_at, 2**63 - 1)):
            if talk.ended:
                await self.stop(talk.ended)
            return

    def _complain(self, message: str) -> None:
        self.rejected += 1
        now = self._clock()
        if now - self._complained_at >= COMPLAINT_INTERVAL:
            self._complained_at = now
            self.viewer.send_json_text(self._encode({"type": "error", "message": message}))
