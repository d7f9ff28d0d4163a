"""Session state: everything that decides which frame may come when lives here.

Both ends walk the same handshake, whoever sends each step:

    START --hello--> HELLO --challenge--> CHALLENGE --auth--> AUTH --welcome--> READY

An ``error`` with ``fatal`` set, or a ``goodbye``, ends the session (CLOSED)
from any state. In READY, what may flow depends on the client's role and the
direction; anything else is a StateError.
"""

from __future__ import annotations

import enum

from .._core import FrameType


class State(enum.Enum):
    START = "start"
    HELLO = "hello"
    CHALLENGE = "challenge"
    AUTH = "auth"
    READY = "ready"
    CLOSED = "closed"


#: Handshake steps: (state, frame type) -> next state.
HANDSHAKE: dict[tuple[State, int], State] = {
    (State.START, FrameType.HELLO): State.HELLO,
    (State.HELLO, FrameType.CHALLENGE): State.CHALLENGE,
    (State.CHALLENGE, FrameType.AUTH): State.AUTH,
    (State.AUTH, FrameType.WELCOME): State.READY,
}

#: Frames that end a session from any state.
CLOSING = frozenset({FrameType.GOODBYE})

TO_RELAY = "to_relay"
FROM_RELAY = "from_relay"

#: Frames allowed in READY: (client role, direction) -> frame types.
READY_TRAFFIC: dict[tuple[str, str], frozenset[int]] = {
    ("button", TO_RELAY): frozenset(
        {
            FrameType.HEARTBEAT,
            FrameType.ALERT,
            FrameType.STREAM_DESCRIPTION,
            FrameType.MEDIA,
            FrameType.ERROR,
        }
    ),
    ("button", FROM_RELAY): frozenset(
        {FrameType.HEARTBEAT, FrameType.ALERT_ACK, FrameType.KEYFRAME_REQUEST, FrameType.TALKBACK, FrameType.ERROR}
    ),
    ("console", TO_RELAY): frozenset(
        {
            FrameType.HEARTBEAT,
            FrameType.SUBSCRIBE,
            FrameType.UNSUBSCRIBE,
            FrameType.KEYFRAME_REQUEST,
            FrameType.ALERT_UPDATE,
            FrameType.ERROR,
        }
    ),
    ("console", FROM_RELAY): frozenset(
        {
            FrameType.HEARTBEAT,
            FrameType.ALERT,
            FrameType.ALERT_UPDATE,
            FrameType.BUTTON_STATE,
            FrameType.SUBSCRIBED,
            FrameType.UNSUBSCRIBE,
            FrameType.STREAM_DESCRIPTION,
            FrameType.MEDIA,
            FrameType.ERROR,
        }
    ),
}

#: Frames allowed before READY besides the handshake step itself.
ANY_STATE = frozenset({FrameType.ERROR, FrameType.GOODBYE})
#: Who sends each handshake frame.
HANDSHAKE_DIRECTION: dict[int, str] = {
    FrameType.HELLO: TO_RELAY,
    FrameType.CHALLENGE: FROM_RELAY,
    FrameType.AUTH: TO_RELAY,
    FrameType.WELCOME: FROM_RELAY,
}


def next_state(state: State, role: str, direction: str, frame_type: int) -> State | None:
    """The state after ``frame_type`` flows in ``direction``; None if not allowed."""
    if state is State.CLOSED:
        return None
    if frame_type in ANY_STATE:
        return State.CLOSED if frame_type in CLOSING else state
    step = HANDSHAKE.get((state, frame_type))
    if step is not None:
        return step if HANDSHAKE_DIRECTION[frame_type] == direction else None
    if state is State.READY and frame_type in READY_TRAFFIC[(role, direction)]:
        return state
    return None
