"""pinkrelay's hot path: frame codec, reassembly, send queues and fan-out.

The compiled core (``_cpinkrelay``, Cython) is loaded unless the environment
sets ``PINKRELAY_PUREPYTHON=1`` (``0`` or empty means compiled) or the
extension was not built; the pure-Python
``reference`` module defines the same names with the same behaviour.
``COMPILED`` says which one is in use.
"""

from __future__ import annotations

import os

from .wire import (
    DROPPED,
    HEADER_SIZE,
    LANE_WEIGHTS,
    MAGIC,
    OVERFLOW,
    QUEUED,
    VERSION,
    Flag,
    FrameType,
    Lane,
    Limits,
    QueueDefaults,
)

#: True when PINKRELAY_PUREPYTHON asked for the pure-Python reference core.
PURE_PYTHON_REQUESTED = os.environ.get("PINKRELAY_PUREPYTHON", "").strip().lower() not in ("", "0", "false", "no")

if PURE_PYTHON_REQUESTED:
    from .reference import (
        COMPILED,
        Fanout,
        Frame,
        FrameDecoder,
        Message,
        Reassembler,
        SendQueue,
        deliver,
        encode_frame,
        encode_media,
        flush,
        recv_some,
    )
else:
    try:
        from ._cpinkrelay import (  # type: ignore[no-redef]
            COMPILED,
            Fanout,
            Frame,
            FrameDecoder,
            Message,
            Reassembler,
            SendQueue,
            deliver,
            encode_frame,
            encode_media,
            flush,
            recv_some,
        )
    except ImportError:
        from .reference import (
            COMPILED,
            Fanout,
            Frame,
            FrameDecoder,
            Message,
            Reassembler,
            SendQueue,
            deliver,
            encode_frame,
            encode_media,
            flush,
            recv_some,
        )

__all__ = [
    "COMPILED",
    "DROPPED",
    "HEADER_SIZE",
    "LANE_WEIGHTS",
    "MAGIC",
    "OVERFLOW",
    "QUEUED",
    "VERSION",
    "Fanout",
    "Flag",
    "Frame",
    "FrameDecoder",
    "FrameType",
    "Lane",
    "Limits",
    "Message",
    "QueueDefaults",
    "Reassembler",
    "SendQueue",
    "deliver",
    "encode_frame",
    "encode_media",
    "flush",
    "recv_some",
]
