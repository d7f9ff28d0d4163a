"""Talk-back into the incident's evidence: what an operator said to the button is kept with the video.

The talk-back desk (relay/talkback.py) calls this hook for every talk; a
talk about an alert that is being recorded is collected here as it is
spoken and, when the operator lets go, handed to the evidence writer
thread in one piece: ``talk-NNN.ogg`` (Ogg Opus, the packets as the
operator's browser encoded them), chained and signed in the manifest like
every segment, with who spoke, when, for how long, in ``talkback``. A talk
with no recording (no alert, or recording disabled) is only audited.
"""

from __future__ import annotations

from typing import Any

#: Packets kept of one talk (10 minutes at 20 ms); beyond it, the rest is not recorded and the manifest says so.
MAX_PACKETS = 30_000


class TalkBackEvidence:
    """The talk-back desk's ``evidence_hook`` for an ``EvidenceDesk``."""

    def __init__(self, desk: Any) -> None:
        self.desk = desk
        #: talk_id -> (recording, packets, first capture time)
        self._talks: dict[str, tuple[Any, list[bytes], list[int]]] = {}

    def _recording(self, talk: Any) -> Any:
        recording = self.desk.recordings.get(talk.alert_id) if talk.alert_id else None
        if recording is None or not recording.active:
            # A supervisor's talk without an alert: the button's recording, if one runs.
            recording = next(iter(self.desk.recordings_of(talk.button)), None)
        return recording if recording is not None and recording.active else None

    def talk_started(self, talk: Any) -> None:
        recording = self._recording(talk)
        if recording is not None and self.desk.writer is not None:
            self._talks[talk.talk_id] = (recording, [], [])

    def talk_packet(self, talk: Any, packet: bytes, captured_at: int) -> None:
        held = self._talks.get(talk.talk_id)
        if held is None:
            return
        _, packets, first = held
        if not first:
            first.append(captured_at)
        if len(packets) < MAX_PACKETS:
            packets.append(packet)

    def talk_ended(self, talk: Any) -> None:
        held = self._talks.pop(talk.talk_id, None)
        if held is None:
            return
        recording, packets, first = held
        meta = {
            "talk_id": talk.talk_id, "operator": talk.operator, "role": talk.role, "alert_id": talk.alert_id,
            "via": talk.via, "started_at": talk.started_at, "packets": len(packets),
            "cut": talk.packets > len(packets), "ended": talk.ended,
        }
        self.desk.writer.offer_talkback(recording, meta, packets, first[0] if first else 0)
