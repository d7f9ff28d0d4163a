# Compiler directives live in setup.py (one dict for every extension).
"""The compiled core: the same names and behaviour as ``reference.py``, fast.

Read ``reference.py`` for what each piece does and why; this file says only
how it is made fast:

* headers are parsed and built with C arithmetic on raw pointers;
* a frame's wire bytes are copied once, from the receive buffer into one
  ``bytes`` object, and then shared by every subscriber that forwards it;
* a send queue's lanes are rings of C structs, so queueing a message for a
  subscriber allocates nothing: the entry holds one reference to the
  message's tuple of chunks, shared by every subscriber;
* a send queue writes with one ``sendmsg`` (scatter-gather, MSG_DONTWAIT)
  straight from those ``bytes`` objects, with no Python call per buffer;
* ``deliver`` pushes a message to every subscriber and tries each socket in
  one C loop; only a subscriber whose socket is full goes back to Python.

Errors are detected here and raised through ``checks.py``, so both cores
produce the same exception with the same message.
"""

cimport cython
from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.bytearray cimport PyByteArray_AS_STRING, PyByteArray_GET_SIZE, PyByteArray_Resize
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from libc.errno cimport EAGAIN, EINTR, ENOTSOCK, errno
from libc.stdint cimport int64_t, uint8_t, uint16_t, uint32_t, uint64_t
from libc.string cimport memcpy
from cpython.mem cimport PyMem_Free, PyMem_Malloc
from cpython.object cimport PyObject
from cpython.ref cimport Py_INCREF, Py_XDECREF
from cpython.tuple cimport PyTuple_GET_ITEM

import os
from collections import deque as _deque

from ..errors import FrameError, LimitExceeded, ProtocolError
from . import checks, reference as _reference
from .wire import LANE_WEIGHTS as _PY_LANE_WEIGHTS, Limits, QueueDefaults

COMPILED = True

cdef extern from "<sys/uio.h>":
    struct iovec:
        void *iov_base
        size_t iov_len
    ssize_t writev(int fd, const iovec *iov, int iovcnt) nogil

cdef extern from "<unistd.h>":
    ssize_t read(int fd, void *buf, size_t n) nogil

cdef extern from "<sys/socket.h>":
    struct msghdr:
        void *msg_name
        unsigned int msg_namelen
        iovec *msg_iov
        size_t msg_iovlen
        void *msg_control
        size_t msg_controllen
        int msg_flags
    ssize_t sendmsg(int fd, const msghdr *msg, int flags) nogil
    ssize_t recv(int fd, void *buf, size_t n, int flags) nogil
    int MSG_NOSIGNAL
    int MSG_DONTWAIT

cdef extern from "Python.h":
    # The bytes macros on a borrowed PyObject*, without reference counting.
    char *_bytes_data "PyBytes_AS_STRING" (PyObject *o) nogil
    Py_ssize_t _bytes_size "PyBytes_GET_SIZE" (PyObject *o) nogil

cdef extern from "<string.h>":
    void *memset(void *s, int c, size_t n) nogil

# Wire constants; tests/test_core_constants.py checks them against wire.py.
cdef enum:
    HEADER_SIZE = 24
    VERSION = 1
    VERSION_WIDE = 2
    MAX_TRACK_ID_V2 = 0x3FFFFF
    MAGIC0 = 0x50
    MAGIC1 = 0x52
    FLAG_KEYFRAME = 0x01
    FLAG_END = 0x02
    FLAGS_KNOWN = 0x03
    TYPE_MEDIA = 0x40
    LANE_ALERT = 0
    LANE_CONTROL = 1
    LANE_AUDIO = 2
    LANE_VIDEO = 3
    LANE_COUNT = 4
    MAX_IOV = 64
    WRITE_MAX_BYTES = 262144

cdef int QUEUED_ = 0
cdef int DROPPED_ = 1
cdef int OVERFLOW_ = 2

# Lane of every control frame type, -1 for an unknown type, -2 for MEDIA.
cdef signed char TYPE_LANE_TABLE[256]
memset(TYPE_LANE_TABLE, -1, 256)
for _type, _lane in (
    (0x01, 1), (0x02, 1), (0x03, 1), (0x04, 1), (0x05, 1), (0x06, 1), (0x07, 1),
    (0x10, 0), (0x11, 0), (0x12, 0), (0x13, 0),
    (0x20, 1), (0x21, 1), (0x22, 1), (0x23, 1), (0x24, 1),
    (0x30, 1),
):
    TYPE_LANE_TABLE[_type] = _lane
TYPE_LANE_TABLE[TYPE_MEDIA] = -2

cdef int LANE_WEIGHT[4]
for _i in range(4):
    LANE_WEIGHT[_i] = _PY_LANE_WEIGHTS[_i]

HEADER_LAYOUT = (HEADER_SIZE, VERSION, MAGIC0, MAGIC1, FLAG_KEYFRAME, FLAG_END, TYPE_MEDIA)


cdef inline uint16_t _rd16(const uint8_t *p) noexcept nogil:
    return (<uint16_t>p[0] << 8) | p[1]


cdef inline uint32_t _rd32(const uint8_t *p) noexcept nogil:
    return (<uint32_t>p[0] << 24) | (<uint32_t>p[1] << 16) | (<uint32_t>p[2] << 8) | p[3]


cdef inline int64_t _rd64(const uint8_t *p) noexcept nogil:
    return <int64_t>((<uint64_t>_rd32(p) << 32) | _rd32(p + 4))


cdef inline void _wr_header(
    uint8_t *p, int type, int flags, int lane, int track, uint32_t seq, int64_t timestamp,
    uint32_t length,
) noexcept nogil:
    cdef uint64_t ts = <uint64_t>timestamp
    cdef int i
    p[0] = MAGIC0
    p[1] = MAGIC1
    p[3] = <uint8_t>type
    p[4] = <uint8_t>flags
    if track > 0xFFFF:
        # Version 2: the track's bits 16-21 ride in the six high bits of the lane byte (protocol.md §2.5).
        p[2] = VERSION_WIDE
        p[5] = <uint8_t>(lane | ((track >> 16) << 2))
    else:
        p[2] = VERSION
        p[5] = <uint8_t>lane
    p[6] = <uint8_t>(track >> 8)
    p[7] = <uint8_t>track
    p[8] = <uint8_t>(seq >> 24)
    p[9] = <uint8_t>(seq >> 16)
    p[10] = <uint8_t>(seq >> 8)
    p[11] = <uint8_t>seq
    for i in range(8):
        p[12 + i] = <uint8_t>(ts >> (56 - 8 * i))
    p[20] = <uint8_t>(length >> 24)
    p[21] = <uint8_t>(length >> 16)
    p[22] = <uint8_t>(length >> 8)
    p[23] = <uint8_t>length


cdef inline bint _fields_ok(int type, int flags, int lane, int track) noexcept nogil:
    cdef int expected = TYPE_LANE_TABLE[type & 0xFF]
    if type < 0 or type > 255 or expected == -1:
        return False
    if flags & ~FLAGS_KNOWN:
        return False
    if expected == -2:
        return (lane == LANE_AUDIO or lane == LANE_VIDEO) and track != 0
    return lane == expected and flags == FLAG_END and track == 0


@cython.no_gc          # holds only ints and a bytes object: it can never be part of a cycle
@cython.freelist(256)  # a relay makes and drops one per frame received
cdef class Frame:
    """One decoded frame: header fields plus the frame's wire bytes."""

    cdef readonly int type
    cdef readonly int flags
    cdef readonly int lane
    cdef readonly int track
    cdef readonly uint32_t seq
    cdef readonly int64_t timestamp
    cdef readonly bytes wire

    def __init__(self, int type, int flags, int lane, int track, uint32_t seq, int64_t timestamp, bytes wire):
        self.type = type
        self.flags = flags
        self.lane = lane
        self.track = track
        self.seq = seq
        self.timestamp = timestamp
        self.wire = wire

    @property
    def payload(self):
        return memoryview(self.wire)[HEADER_SIZE:]

    @property
    def keyframe(self):
        return bool(self.flags & FLAG_KEYFRAME)

    @property
    def end(self):
        return bool(self.flags & FLAG_END)

    def as_tuple(self):
        return (self.type, self.flags, self.lane, self.track, self.seq, self.timestamp, self.wire)

    def __repr__(self):
        return (
            f"Frame(type={self.type:#04x}, flags={self.flags:#04x}, lane={self.lane}, "
            f"track={self.track}, seq={self.seq}, timestamp={self.timestamp}, "
            f"length={len(self.wire) - HEADER_SIZE})"
        )


cdef inline Frame _new_frame(const uint8_t *p, Py_ssize_t total):
    cdef Frame frame = Frame.__new__(Frame)
    frame.type = p[3]
    frame.flags = p[4]
    if p[2] == VERSION_WIDE:
        frame.lane = p[5] & 3
        frame.track = ((p[5] >> 2) << 16) | _rd16(p + 6)
    else:
        frame.lane = p[5]
        frame.track = _rd16(p + 6)
    frame.seq = _rd32(p + 8)
    frame.timestamp = _rd64(p + 12)
    frame.wire = PyBytes_FromStringAndSize(<const char *>p, total)
    return frame


cdef bytes _build_frame(
    int type, int flags, int lane, int track, object seq_obj, int64_t timestamp, object payload,
):
    cdef Py_buffer view
    cdef bytes out
    cdef uint32_t seq
    if not _fields_ok(type, flags, lane, track):
        checks.check_fields(type, flags, lane, track)
    if track < 0 or track > MAX_TRACK_ID_V2:
        raise FrameError(f"track {track} out of range 0..{MAX_TRACK_ID_V2}")
    if seq_obj < 0 or seq_obj > 0xFFFFFFFF:
        raise FrameError(f"sequence {seq_obj} out of range 0..4294967295")
    seq = seq_obj
    PyObject_GetBuffer(payload, &view, PyBUF_SIMPLE)
    try:
        if view.len > 0xFFFFFFFF:
            raise LimitExceeded(f"payload of {view.len} bytes cannot be framed (limit 4 GiB)")
        out = PyBytes_FromStringAndSize(NULL, HEADER_SIZE + view.len)
        _wr_header(<uint8_t *>PyBytes_AS_STRING(out), type, flags, lane, track, seq, timestamp, <uint32_t>view.len)
        memcpy(PyBytes_AS_STRING(out) + HEADER_SIZE, view.buf, view.len)
    finally:
        PyBuffer_Release(&view)
    return out


def encode_frame(type, lane, track, seq, timestamp, payload, flags=FLAG_END):
    """Build one frame's wire bytes (header and payload)."""
    cdef int c_type, c_lane, c_track, c_flags
    cdef int64_t c_timestamp
    try:
        c_type = type
        c_lane = lane
        c_track = track
        c_flags = flags
        c_timestamp = timestamp
    except OverflowError:
        # An integer C cannot hold is always refused; let the reference say how.
        return _reference.encode_frame(type, lane, track, seq, timestamp, payload, flags)
    return _build_frame(c_type, c_flags, c_lane, c_track, seq, c_timestamp, payload)


def encode_media(track, lane, seq, timestamp, payload, bint keyframe=False,
                 chunk_size=Limits.CHUNK_SIZE):
    """Split one media message into frames of at most ``chunk_size`` payload bytes."""
    cdef Py_buffer view
    cdef Py_ssize_t offset, size, total
    cdef int flags = FLAG_KEYFRAME if keyframe else 0
    cdef list frames = []
    cdef bytes out
    cdef uint32_t seq32
    cdef int c_track, c_lane
    cdef int64_t c_timestamp
    cdef Py_ssize_t c_chunk_size
    try:
        c_track = track
        c_lane = lane
        c_timestamp = timestamp
        c_chunk_size = chunk_size
    except OverflowError:
        # Out of C's range: the reference refuses it (or, for a huge chunk_size, frames it).
        return _reference.encode_media(track, lane, seq, timestamp, payload, keyframe, chunk_size)
    return _encode_media(c_track, c_lane, seq, c_timestamp, payload, keyframe, c_chunk_size)


cdef list _encode_media(int track, int lane, object seq, int64_t timestamp, object payload,
                        bint keyframe, Py_ssize_t chunk_size):
    cdef Py_buffer view
    cdef Py_ssize_t offset, size, total
    cdef int flags = FLAG_KEYFRAME if keyframe else 0
    cdef list frames = []
    cdef bytes out
    cdef uint32_t seq32
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be at least 1, not {chunk_size}")
    if not _fields_ok(TYPE_MEDIA, flags | FLAG_END, lane, track):
        checks.check_fields(TYPE_MEDIA, flags | FLAG_END, lane, track)
    if track < 0 or track > MAX_TRACK_ID_V2:
        raise FrameError(f"track {track} out of range 0..{MAX_TRACK_ID_V2}")
    if seq < 0 or seq > 0xFFFFFFFF:
        raise FrameError(f"sequence {seq} out of range 0..4294967295")
    seq32 = seq
    PyObject_GetBuffer(payload, &view, PyBUF_SIMPLE)
    try:
        total = view.len
        offset = 0
        while True:
            size = total - offset
            if size > chunk_size:
                size = chunk_size
            if size > 0xFFFFFFFF:
                raise LimitExceeded(f"payload of {size} bytes cannot be framed (limit 4 GiB)")
            out = PyBytes_FromStringAndSize(NULL, HEADER_SIZE + size)
            _wr_header(
                <uint8_t *>PyBytes_AS_STRING(out), TYPE_MEDIA,
                flags | (FLAG_END if offset + size >= total else 0),
                lane, track, seq32, timestamp, <uint32_t>size,
            )
            memcpy(PyBytes_AS_STRING(out) + HEADER_SIZE, <const char *>view.buf + offset, size)
            frames.append(out)
            offset += size
            if offset >= total:
                break
    finally:
        PyBuffer_Release(&view)
    return frames


cdef class FrameDecoder:
    """Turn a byte stream, split anywhere, into validated frames.

    ``decode`` parses frames straight from the caller's bytes. Only a frame cut
    by the end of a read is buffered, and the next read first completes that
    one frame (copying just the bytes it lacks) before parsing in place again,
    so a 64 KiB read is not copied into the buffer just to finish one frame.
    What is observable (frames, errors and when they are raised, ``buffered``)
    is exactly the reference's.
    """

    cdef readonly Py_ssize_t max_frame_bytes
    cdef readonly Py_ssize_t max_control_bytes
    cdef bytearray _buffer
    cdef Py_ssize_t _pos
    cdef object _error
    cdef readonly Py_ssize_t frames_decoded
    cdef readonly Py_ssize_t bytes_received

    def __init__(self, Py_ssize_t max_frame_bytes=Limits.MAX_FRAME_BYTES,
                 Py_ssize_t max_control_bytes=Limits.MAX_CONTROL_BYTES):
        self.max_frame_bytes = max_frame_bytes
        self.max_control_bytes = max_control_bytes
        self._buffer = bytearray()
        self._pos = 0
        self._error = None
        self.frames_decoded = 0
        self.bytes_received = 0

    @property
    def buffered(self):
        return PyByteArray_GET_SIZE(self._buffer) - self._pos

    @property
    def error(self):
        return self._error

    def feed(self, data):
        if self._error is not None:
            raise self._error
        self._compact()
        self._buffer += data
        self.bytes_received += len(data)

    cdef inline void _compact(self):
        if self._pos and self._pos == PyByteArray_GET_SIZE(self._buffer):
            del self._buffer[:]
            self._pos = 0
        elif self._pos > 65536:
            del self._buffer[:self._pos]
            self._pos = 0

    cdef int _append(self, const uint8_t *p, Py_ssize_t n) except -1:
        """Append ``n`` raw bytes to the buffer (one copy, no temporary object)."""
        cdef Py_ssize_t old = PyByteArray_GET_SIZE(self._buffer)
        if n > 0:
            PyByteArray_Resize(self._buffer, old + n)
            memcpy(PyByteArray_AS_STRING(self._buffer) + old, p, n)
        return 0

    cdef inline const uint8_t *_base(self):
        return <const uint8_t *>PyByteArray_AS_STRING(self._buffer)

    def next_frame(self):
        """The next complete frame, or None when more bytes are needed."""
        cdef list out = []
        cdef Py_ssize_t got = 0
        if self._error is not None:
            raise self._error
        cdef Py_ssize_t size = PyByteArray_GET_SIZE(self._buffer)
        try:
            self._parse(self._base() + self._pos, size - self._pos, out, 1, &got)
        except ProtocolError as error:
            self._error = error
            raise
        self._pos += got
        if self._pos == size:
            del self._buffer[:]
            self._pos = 0
        return out[0] if out else None

    def decode(self, data):
        """Feed ``data`` and return every frame it completes (see reference.py)."""
        cdef list out = []
        cdef Py_buffer view
        cdef Py_ssize_t used = 0, got = 0, n
        cdef const uint8_t *p
        if self._error is not None:
            raise self._error
        PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
        try:
            p = <const uint8_t *>view.buf
            n = view.len
            self.bytes_received += n
            try:
                if self._pos < PyByteArray_GET_SIZE(self._buffer):
                    # ``used``: bytes of ``p`` now in the buffer or in returned frames.
                    self._stitch(p, n, out, &used)
                    if self._pos < PyByteArray_GET_SIZE(self._buffer):
                        return out  # every byte went into the frame still incomplete
                elif self._pos:
                    self._clear()
                self._parse(p + used, n - used, out, -1, &got)
            except ProtocolError as error:
                # As the reference: the bytes from the bad frame on stay buffered.
                self._error = error
                self._append(p + used + got, n - used - got)
                if out:
                    return out
                raise
            self._append(p + used + got, n - used - got)
            return out
        finally:
            PyBuffer_Release(&view)

    cdef int _stitch(self, const uint8_t *p, Py_ssize_t n, list out, Py_ssize_t *used) except -1:
        """Finish what the buffer holds using bytes from ``p``; set ``used`` to the bytes taken.

        On return the buffer is empty, or holds one incomplete frame and all of
        ``p`` is used. On a protocol error the buffer's read position is at the
        bad frame and ``used`` says which bytes of ``p`` are already buffered.
        """
        cdef Py_ssize_t got = 0, have, take, total
        used[0] = 0
        # Frames fed earlier but not yet taken with next_frame() come first. A header
        # cut short is checked below, once the bytes it lacks are there.
        try:
            self._parse(self._base() + self._pos, PyByteArray_GET_SIZE(self._buffer) - self._pos,
                        out, -1, &got, False)
        finally:
            self._pos += got
        have = PyByteArray_GET_SIZE(self._buffer) - self._pos
        if have == 0:
            self._clear()
            return 0
        if self._pos:
            del self._buffer[:self._pos]
            self._pos = 0
        # The frame cut by the last read: first its header, checked as it arrives...
        if have < HEADER_SIZE:
            take = min(HEADER_SIZE - have, n)
            self._append(p, take)
            used[0] = take
            have += take
            got = 0
            self._parse(self._base(), have, out, 1, &got)
            if have < HEADER_SIZE:
                return 0
            if got:  # a frame with an empty payload
                self._clear()
                return 0
        # ...then the rest of its payload (the header bounds it by the limits).
        total = HEADER_SIZE + <Py_ssize_t>_rd32(self._base() + 20)
        take = min(total - have, n - used[0])
        self._append(p + used[0], take)
        used[0] += take
        if have + take == total:
            got = 0
            self._parse(self._base(), total, out, 1, &got)
            self._clear()
        return 0

    cdef inline void _clear(self):
        del self._buffer[:]
        self._pos = 0

    cdef int _parse(self, const uint8_t *p, Py_ssize_t n, list out, Py_ssize_t max_frames,
                    Py_ssize_t *used, bint check_partial=True) except -1:
        """Append up to ``max_frames`` frames (all when negative) from ``p``.

        ``used`` counts the bytes of the frames appended, also when a protocol
        error is raised, so the caller knows where the bad frame starts.
        Unless ``check_partial`` is false, the first bytes of a header cut short
        are checked too (the reference checks them with every byte it has, so a
        caller about to add more bytes passes false and checks after).
        """
        cdef Py_ssize_t pos = 0
        cdef Py_ssize_t length, available
        cdef int type, flags, lane, track
        cdef const uint8_t *h
        used[0] = 0
        while max_frames != 0:
            available = n - pos
            h = p + pos
            if available < HEADER_SIZE:
                if check_partial and available > 0 and not (
                    h[0] == MAGIC0
                    and (available < 2 or h[1] == MAGIC1)
                    and (available < 3 or h[2] == VERSION or h[2] == VERSION_WIDE)
                    and (available < 4 or TYPE_LANE_TABLE[h[3]] != -1)
                ):
                    checks.check_prefix(PyBytes_FromStringAndSize(<const char *>h, available))
                return 0
            type = h[3]
            flags = h[4]
            lane = h[5]
            track = _rd16(h + 6)
            length = _rd32(h + 20)
            if h[0] != MAGIC0 or h[1] != MAGIC1:
                checks.bad_magic(PyBytes_FromStringAndSize(<const char *>h, 2))
            if h[2] == VERSION_WIDE:
                track |= (lane >> 2) << 16
                lane &= 3
            elif h[2] != VERSION:
                checks.bad_version(h[2])
            if not _fields_ok(type, flags, lane, track):
                checks.check_fields(type, flags, lane, track)
            if type == TYPE_MEDIA:
                if length > self.max_frame_bytes:
                    checks.frame_too_long(length, self.max_frame_bytes, track)
            elif length > self.max_control_bytes:
                checks.control_too_long(type, length, self.max_control_bytes)
            if available < HEADER_SIZE + length:
                return 0
            out.append(_new_frame(h, HEADER_SIZE + length))
            self.frames_decoded += 1
            pos += HEADER_SIZE + length
            used[0] = pos
            if max_frames > 0:
                max_frames -= 1
        return 0


cdef class Message:
    """One whole media message; ``chunks`` are its wire frames."""

    cdef readonly int track
    cdef readonly int lane
    cdef readonly uint32_t seq
    cdef readonly int64_t timestamp
    cdef readonly bint keyframe
    cdef readonly tuple chunks
    cdef readonly Py_ssize_t size

    def __init__(self, int track, int lane, uint32_t seq, int64_t timestamp, bint keyframe,
                 tuple chunks, Py_ssize_t size):
        self.track = track
        self.lane = lane
        self.seq = seq
        self.timestamp = timestamp
        self.keyframe = keyframe
        self.chunks = chunks
        self.size = size

    def payload(self):
        cdef bytes out, chunk
        cdef Py_ssize_t offset = 0, length
        if len(self.chunks) == 1:
            return (<bytes>self.chunks[0])[HEADER_SIZE:]
        out = PyBytes_FromStringAndSize(NULL, self.size)
        for chunk in self.chunks:
            length = PyBytes_GET_SIZE(chunk) - HEADER_SIZE
            memcpy(PyBytes_AS_STRING(out) + offset, PyBytes_AS_STRING(chunk) + HEADER_SIZE, length)
            offset += length
        return out

    @property
    def wire_size(self):
        return self.size + HEADER_SIZE * len(self.chunks)

    def as_tuple(self):
        return (self.track, self.lane, self.seq, self.timestamp, self.keyframe, self.chunks, self.size)

    def __repr__(self):
        return (
            f"Message(track={self.track}, lane={self.lane}, seq={self.seq}, "
            f"timestamp={self.timestamp}, keyframe={self.keyframe}, "
            f"chunks={len(self.chunks)}, size={self.size})"
        )


cdef class _Partial:
    cdef int lane
    cdef uint32_t seq
    cdef int64_t timestamp
    cdef bint keyframe
    cdef list chunks
    cdef Py_ssize_t size


cdef class Reassembler:
    """Collect media chunks per track until the END chunk completes a message."""

    cdef readonly Py_ssize_t max_message_bytes
    cdef readonly Py_ssize_t max_chunks_per_message
    cdef readonly Py_ssize_t max_partial_tracks
    cdef dict _partial

    def __init__(self, Py_ssize_t max_message_bytes=Limits.MAX_MESSAGE_BYTES,
                 Py_ssize_t max_chunks_per_message=Limits.MAX_CHUNKS_PER_MESSAGE,
                 Py_ssize_t max_partial_tracks=64):
        self.max_message_bytes = max_message_bytes
        self.max_chunks_per_message = max_chunks_per_message
        self.max_partial_tracks = max_partial_tracks
        self._partial = {}

    @property
    def partial_tracks(self):
        return len(self._partial)

    def discard(self, int track):
        self._partial.pop(track, None)

    def add(self, Frame frame):
        """Take one MEDIA frame; return the message it completes, if any."""
        cdef int track = frame.track
        cdef Py_ssize_t size = PyBytes_GET_SIZE(frame.wire) - HEADER_SIZE
        cdef bint keyframe = (frame.flags & FLAG_KEYFRAME) != 0
        cdef _Partial partial
        cdef Message message
        cdef object existing = self._partial.get(track) if self._partial else None
        if existing is None:
            if size > self.max_message_bytes:
                checks.message_too_big(track, frame.seq, size, self.max_message_bytes)
            if frame.flags & FLAG_END:
                message = Message.__new__(Message)
                message.track = track
                message.lane = frame.lane
                message.seq = frame.seq
                message.timestamp = frame.timestamp
                message.keyframe = keyframe
                message.chunks = (frame.wire,)
                message.size = size
                return message
            if len(self._partial) >= self.max_partial_tracks:
                checks.too_many_partial_tracks(self.max_partial_tracks)
            partial = _Partial.__new__(_Partial)
            partial.lane = frame.lane
            partial.seq = frame.seq
            partial.timestamp = frame.timestamp
            partial.keyframe = keyframe
            partial.chunks = [frame.wire]
            partial.size = size
            self._partial[track] = partial
            return None
        partial = <_Partial>existing
        if (frame.seq != partial.seq or frame.timestamp != partial.timestamp
                or frame.lane != partial.lane or keyframe != partial.keyframe):
            checks.message_interrupted(
                track, partial.seq, frame.seq, frame.timestamp, frame.lane, keyframe
            )
        if partial.size + size > self.max_message_bytes:
            checks.message_too_big(track, partial.seq, partial.size + size, self.max_message_bytes)
        if len(partial.chunks) >= self.max_chunks_per_message:
            checks.too_many_chunks(track, partial.seq, self.max_chunks_per_message)
        partial.chunks.append(frame.wire)
        partial.size += size
        if frame.flags & FLAG_END:
            del self._partial[track]
            return Message(track, partial.lane, partial.seq, partial.timestamp, partial.keyframe,
                           tuple(partial.chunks), partial.size)
        return None


# -- send queues: four lanes of C rings ---------------------------------------------------
#
# Each lane is a ring of ``_Entry`` structs (no Python object per queued
# message): the entry owns one reference to the message's tuple of wire
# chunks, which every subscriber of that message shares.

ctypedef struct _Entry:
    PyObject *chunks        # tuple of bytes; owned reference
    Py_ssize_t next         # index of the next chunk to write
    Py_ssize_t nchunks
    Py_ssize_t size
    double queued_at
    int track
    bint keyframe


ctypedef struct _Ring:
    _Entry *items
    Py_ssize_t head         # physical index of the oldest entry
    Py_ssize_t count
    Py_ssize_t capacity     # 0 or a power of two


cdef inline _Entry *_ring_at(_Ring *ring, Py_ssize_t index) noexcept nogil:
    return &ring.items[(ring.head + index) & (ring.capacity - 1)]


cdef int _ring_grow(_Ring *ring) except -1:
    cdef Py_ssize_t capacity = ring.capacity * 2 if ring.capacity else 8
    cdef _Entry *items = <_Entry *>PyMem_Malloc(capacity * sizeof(_Entry))
    cdef Py_ssize_t index
    if items == NULL:
        raise MemoryError()
    for index in range(ring.count):
        items[index] = _ring_at(ring, index)[0]
    PyMem_Free(ring.items)
    ring.items = items
    ring.head = 0
    ring.capacity = capacity
    return 0


cdef inline int _ring_append(_Ring *ring, tuple chunks, Py_ssize_t size, int track, bint keyframe,
                             double now) except -1:
    cdef _Entry *entry
    if ring.count == ring.capacity:
        _ring_grow(ring)
    entry = &ring.items[(ring.head + ring.count) & (ring.capacity - 1)]
    Py_INCREF(chunks)
    entry.chunks = <PyObject *>chunks
    entry.next = 0
    entry.nchunks = len(chunks)
    entry.size = size
    entry.queued_at = now
    entry.track = track
    entry.keyframe = keyframe
    ring.count += 1
    return 0


cdef inline void _ring_pop_front(_Ring *ring) noexcept:
    cdef _Entry *entry = &ring.items[ring.head]
    Py_XDECREF(entry.chunks)
    entry.chunks = NULL
    ring.head = (ring.head + 1) & (ring.capacity - 1)
    ring.count -= 1


cdef void _ring_remove(_Ring *ring, Py_ssize_t index) noexcept:
    """Remove the entry at ``index``; later entries move up one place (rare: queue bounds)."""
    cdef Py_ssize_t i
    Py_XDECREF(_ring_at(ring, index).chunks)
    for i in range(index, ring.count - 1):
        _ring_at(ring, i)[0] = _ring_at(ring, i + 1)[0]
    _ring_at(ring, ring.count - 1).chunks = NULL
    ring.count -= 1


cdef void _ring_free(_Ring *ring) noexcept:
    while ring.count:
        _ring_pop_front(ring)
    PyMem_Free(ring.items)
    ring.items = NULL
    ring.capacity = 0
    ring.head = 0


cdef inline PyObject *_chunk(_Entry *entry, Py_ssize_t index) noexcept:
    """Borrowed reference to chunk ``index`` of ``entry`` (a bytes object)."""
    return PyTuple_GET_ITEM(<object>entry.chunks, index)


cdef inline int _pick_lane(int *credits, bint *has_work) noexcept:
    cdef int lane
    for lane in range(LANE_COUNT):
        if has_work[lane] and credits[lane] > 0:
            credits[lane] -= 1
            return lane
    if not (has_work[0] or has_work[1] or has_work[2] or has_work[3]):
        return -1
    for lane in range(LANE_COUNT):
        credits[lane] = LANE_WEIGHT[lane]
    for lane in range(LANE_COUNT):
        if has_work[lane]:
            credits[lane] -= 1
            return lane
    return -1


cdef class SendQueue:
    """One outbound connection: four lanes, a scheduler, bounds and a writer."""

    cdef public int fd
    cdef public Py_ssize_t max_video_bytes
    cdef public double max_video_age
    cdef public Py_ssize_t max_audio_bytes
    cdef public Py_ssize_t max_control_bytes
    cdef public bint blocked
    cdef public object error
    cdef public bint overflowed
    cdef public Py_ssize_t dropped_video
    cdef public Py_ssize_t dropped_audio
    cdef public Py_ssize_t bytes_sent
    cdef _Ring _rings[4]
    cdef Py_ssize_t _lane_bytes[4]
    cdef int _credits[4]
    cdef int _current_lane
    cdef Py_ssize_t _offset
    cdef set _need_keyframe
    cdef unsigned long _mark         # the Fanout round that last touched this queue

    def __cinit__(self):
        memset(self._rings, 0, sizeof(self._rings))

    def __dealloc__(self):
        cdef int lane
        for lane in range(LANE_COUNT):
            _ring_free(&self._rings[lane])

    def __init__(self, int fd=-1, Py_ssize_t max_video_bytes=QueueDefaults.MAX_VIDEO_BYTES,
                 double max_video_age=QueueDefaults.MAX_VIDEO_AGE,
                 Py_ssize_t max_audio_bytes=QueueDefaults.MAX_AUDIO_BYTES,
                 Py_ssize_t max_control_bytes=QueueDefaults.MAX_CONTROL_BYTES):
        cdef int lane
        self.fd = fd
        self.max_video_bytes = max_video_bytes
        self.max_video_age = max_video_age
        self.max_audio_bytes = max_audio_bytes
        self.max_control_bytes = max_control_bytes
        self.blocked = False
        self.error = None
        self.overflowed = False
        self.dropped_video = 0
        self.dropped_audio = 0
        self.bytes_sent = 0
        for lane in range(LANE_COUNT):
            _ring_free(&self._rings[lane])
            self._lane_bytes[lane] = 0
            self._credits[lane] = LANE_WEIGHT[lane]
        self._current_lane = -1
        self._offset = 0
        self._need_keyframe = set()

    # -- state ---------------------------------------------------------------

    @property
    def pending_bytes(self):
        return self._lane_bytes[0] + self._lane_bytes[1] + self._lane_bytes[2] + self._lane_bytes[3] - self._offset

    @property
    def empty(self):
        return self._is_empty()

    @cython.final
    cdef inline bint _is_empty(self) noexcept:
        return (self._rings[0].count == 0 and self._rings[1].count == 0
                and self._rings[2].count == 0 and self._rings[3].count == 0)

    def lane_bytes(self, int lane):
        _check_lane(lane)
        return self._lane_bytes[lane]

    def oldest_age(self, double now):
        cdef double oldest = 0
        cdef bint found = False
        cdef int lane
        for lane in (LANE_AUDIO, LANE_VIDEO):
            if self._rings[lane].count:
                if not found or _ring_at(&self._rings[lane], 0).queued_at < oldest:
                    oldest = _ring_at(&self._rings[lane], 0).queued_at
                    found = True
        if not found:
            return 0.0
        return max(0.0, now - oldest)

    def audio_waits(self, double now, double hold):
        return self._audio_waits(now, hold)

    @cython.final
    cdef inline bint _audio_waits(self, double now, double hold) noexcept:
        if self._rings[LANE_ALERT].count or self._rings[LANE_CONTROL].count or self._rings[LANE_VIDEO].count:
            return False
        if not self._rings[LANE_AUDIO].count:
            return False
        return _ring_at(&self._rings[LANE_AUDIO], 0).queued_at + hold > now

    def holds_audio_from(self, double queued_at):
        return self._holds_audio_from(queued_at)

    @cython.final
    cdef inline bint _holds_audio_from(self, double queued_at) noexcept:
        return self._rings[LANE_AUDIO].count > 0 and _ring_at(&self._rings[LANE_AUDIO], 0).queued_at <= queued_at

    def waiting_for_keyframe(self, int track):
        return track in self._need_keyframe

    def wait_for_keyframe(self, int track):
        self._need_keyframe.add(track)

    # -- pushing -------------------------------------------------------------

    def push(self, int lane, chunks, int track=0, bint keyframe=False, double now=0.0):
        """Queue one message's wire chunks; returns QUEUED, DROPPED or OVERFLOW."""
        cdef tuple wire
        _check_lane(lane)
        wire = _as_chunks(chunks)
        return self._push(lane, wire, _message_size(wire), track, keyframe, now)

    def push_message(self, Message message, double now=0.0):
        cdef tuple wire
        _check_lane(message.lane)
        wire = _as_chunks(message.chunks)
        return self._push(message.lane, wire, _message_size(wire), message.track, message.keyframe, now)

    @cython.final
    cdef int _push(self, int lane, tuple chunks, Py_ssize_t size, int track, bint keyframe,
                   double now) except -1:
        """Queue ``chunks`` (bytes, checked by ``_message_size``, which gave ``size``)."""
        if lane == LANE_VIDEO:
            return self._push_video(chunks, size, track, keyframe, now)
        if lane == LANE_AUDIO:
            if self._lane_bytes[LANE_AUDIO] + size > self.max_audio_bytes:
                self._make_audio_room(size)
        elif self._lane_bytes[0] + self._lane_bytes[1] + size > self.max_control_bytes:
            self.overflowed = True
            return OVERFLOW_
        _ring_append(&self._rings[lane], chunks, size, track, keyframe, now)
        self._lane_bytes[lane] += size
        return QUEUED_

    @cython.final
    cdef int _push_video(self, tuple chunks, Py_ssize_t size, int track, bint keyframe,
                         double now) except -1:
        cdef _Ring *ring = &self._rings[LANE_VIDEO]
        cdef bint behind
        if self._need_keyframe and not keyframe and track in self._need_keyframe:
            self.dropped_video += 1
            return DROPPED_
        behind = self._lane_bytes[LANE_VIDEO] + size > self.max_video_bytes or (
            ring.count > 0 and now - _ring_at(ring, 0).queued_at > self.max_video_age
        )
        if behind:
            self._drop_unstarted(LANE_VIDEO)
            if not keyframe:
                self._need_keyframe.add(track)
                self.dropped_video += 1
                return DROPPED_
        if keyframe and self._need_keyframe:
            self._need_keyframe.discard(track)
        _ring_append(ring, chunks, size, track, keyframe, now)
        self._lane_bytes[LANE_VIDEO] += size
        return QUEUED_

    @cython.final
    cdef inline bint _started(self, int lane, Py_ssize_t index) noexcept:
        return _ring_at(&self._rings[lane], index).next > 0 or (index == 0 and self._current_lane == lane)

    @cython.final
    cdef int _drop_unstarted(self, int lane) except -1:
        cdef _Ring *ring = &self._rings[lane]
        cdef Py_ssize_t index = 0
        cdef _Entry *entry
        while index < ring.count:
            if self._started(lane, index):
                index += 1
                continue
            entry = _ring_at(ring, index)
            self._lane_bytes[lane] -= entry.size
            if lane == LANE_VIDEO:
                self.dropped_video += 1
                self._need_keyframe.add(entry.track)
            else:
                self.dropped_audio += 1
            _ring_remove(ring, index)
        return 0

    @cython.final
    cdef void _make_audio_room(self, Py_ssize_t size) noexcept:
        cdef _Ring *ring = &self._rings[LANE_AUDIO]
        cdef Py_ssize_t index = 0
        while self._lane_bytes[LANE_AUDIO] + size > self.max_audio_bytes and index < ring.count:
            if self._started(LANE_AUDIO, index):
                index += 1
                continue
            self._lane_bytes[LANE_AUDIO] -= _ring_at(ring, index).size
            self.dropped_audio += 1
            _ring_remove(ring, index)

    # -- sending -------------------------------------------------------------

    @cython.final
    cdef int _walk(self, iovec *iov, int max_buffers, Py_ssize_t max_bytes, list out) except -1:
        """Fill ``iov`` (when not NULL, with room for ``max_buffers``) and ``out``
        (when not None) with the next buffers in scheduled order.

        Changes nothing: this is ``peek``; ``_consume`` commits what was written.
        """
        cdef int credits[4]
        cdef bint has_work[4]
        cdef Py_ssize_t entry_index[4]
        cdef Py_ssize_t chunk_index[4]
        cdef int count = 0, lane
        cdef Py_ssize_t total = 0, length
        cdef _Entry *entry
        cdef PyObject *chunk
        for lane in range(LANE_COUNT):
            credits[lane] = self._credits[lane]
            entry_index[lane] = 0
            has_work[lane] = self._rings[lane].count > 0
            chunk_index[lane] = _ring_at(&self._rings[lane], 0).next if has_work[lane] else 0
        if self._current_lane >= 0:
            lane = self._current_lane
            entry = _ring_at(&self._rings[lane], 0)
            chunk = _chunk(entry, entry.next)
            length = _bytes_size(chunk) - self._offset
            if iov != NULL:
                iov[0].iov_base = _bytes_data(chunk) + self._offset
                iov[0].iov_len = length
            if out is not None:
                out.append(memoryview(<object>chunk)[self._offset:])
            count = 1
            total = length
            self._walk_advance(lane, entry_index, chunk_index, has_work)
        while count < max_buffers and total < max_bytes:
            lane = _pick_lane(credits, has_work)
            if lane < 0:
                break
            entry = _ring_at(&self._rings[lane], entry_index[lane])
            chunk = _chunk(entry, chunk_index[lane])
            length = _bytes_size(chunk)
            if iov != NULL:
                iov[count].iov_base = _bytes_data(chunk)
                iov[count].iov_len = length
            if out is not None:
                out.append(<object>chunk)
            count += 1
            total += length
            self._walk_advance(lane, entry_index, chunk_index, has_work)
        return count

    @cython.final
    cdef inline void _walk_advance(self, int lane, Py_ssize_t *entry_index, Py_ssize_t *chunk_index,
                                   bint *has_work) noexcept:
        cdef _Ring *ring = &self._rings[lane]
        chunk_index[lane] += 1
        if chunk_index[lane] >= _ring_at(ring, entry_index[lane]).nchunks:
            entry_index[lane] += 1
            if entry_index[lane] < ring.count:
                chunk_index[lane] = _ring_at(ring, entry_index[lane]).next
            else:
                chunk_index[lane] = 0
                has_work[lane] = False

    def peek(self, int max_buffers=MAX_IOV, Py_ssize_t max_bytes=WRITE_MAX_BYTES):
        """The next buffers to write, in scheduled order, without removing them."""
        cdef list out = []
        self._walk(NULL, max_buffers, max_bytes, out)
        return out

    def consume(self, Py_ssize_t nbytes):
        """Commit ``nbytes`` written from the front of what ``peek`` showed."""
        self._consume(nbytes)

    @cython.final
    cdef int _consume(self, Py_ssize_t nbytes) except -1:
        cdef int lane
        cdef bint has_work[4]
        cdef _Entry *entry
        cdef _Ring *ring
        cdef Py_ssize_t chunk_length, remaining
        self.bytes_sent += nbytes
        while nbytes > 0:
            lane = self._current_lane
            if lane < 0:
                for lane in range(LANE_COUNT):
                    has_work[lane] = self._rings[lane].count > 0
                lane = _pick_lane(self._credits, has_work)
                if lane < 0:
                    raise ValueError("consume() of more bytes than were queued")
                self._offset = 0
            ring = &self._rings[lane]
            entry = _ring_at(ring, 0)
            chunk_length = _bytes_size(_chunk(entry, entry.next))
            remaining = chunk_length - self._offset
            if nbytes < remaining:
                self._offset += nbytes
                self._current_lane = lane
                return 0
            nbytes -= remaining
            self._current_lane = -1
            self._offset = 0
            self._lane_bytes[lane] -= chunk_length
            entry.next += 1
            if entry.next == entry.nchunks:
                _ring_pop_front(ring)
        return 0

    def write_to(self, int fd=-1):
        """Write as much as the socket takes without blocking; return the bytes written."""
        if fd < 0:
            fd = self.fd
        return self._write(fd)

    @cython.final
    cdef Py_ssize_t _write(self, int fd) except -1:
        cdef iovec iov[MAX_IOV]
        cdef msghdr msg
        cdef int count, err
        cdef Py_ssize_t written = 0, offered, sent, i
        memset(&msg, 0, sizeof(msg))
        while True:
            count = self._walk(iov, MAX_IOV, WRITE_MAX_BYTES, None)
            if count == 0:
                return written
            offered = 0
            for i in range(count):
                offered += iov[i].iov_len
            msg.msg_iov = iov
            msg.msg_iovlen = count
            sent = sendmsg(fd, &msg, MSG_NOSIGNAL | MSG_DONTWAIT)
            if sent < 0 and errno == ENOTSOCK:
                sent = writev(fd, iov, count)
            if sent < 0:
                err = errno
                if err == EAGAIN or err == EINTR:
                    return written
                raise OSError(err, os.strerror(err))
            self._consume(sent)
            written += sent
            if sent < offered:
                return written


cdef inline tuple _as_chunks(chunks):
    """Chunks as a tuple of bytes: the compiled writer points into bytes objects."""
    cdef list converted
    if type(chunks) is tuple:
        for chunk in <tuple>chunks:
            if type(chunk) is not bytes:
                break
        else:
            return <tuple>chunks
    # bytes(memoryview(x)), not bytes(x): bytes(5) would be five zero bytes, not an error.
    converted = [chunk if type(chunk) is bytes else bytes(memoryview(chunk)) for chunk in chunks]
    return tuple(converted)


cdef inline int _check_lane(int lane) except -1:
    if lane < 0 or lane >= LANE_COUNT:
        raise ValueError(f"lane {lane} out of range 0..{LANE_COUNT - 1}")
    return 0


cdef Py_ssize_t _message_size(tuple chunks) except -1:
    """Total bytes of a message's chunks; refuses a message or chunk with none (see reference.py)."""
    cdef Py_ssize_t size = 0, length, index = 0
    cdef bytes chunk
    if len(chunks) == 0:
        raise ValueError("a message needs at least one chunk")
    for chunk in chunks:
        length = PyBytes_GET_SIZE(chunk)
        if length == 0:
            raise ValueError(f"chunk {index} of the message is empty")
        size += length
        index += 1
    return size


# recv_some reads into this and copies out what came: no allocation of max_bytes per call.
cdef char _recv_buffer[65536]


def recv_some(int fd, Py_ssize_t max_bytes):
    """Read what ``fd`` holds now without blocking; ``None`` when nothing waits (see reference.py)."""
    cdef Py_ssize_t got
    cdef int err
    if max_bytes < 1:
        raise ValueError(f"max_bytes {max_bytes} must be at least 1")
    if max_bytes > <Py_ssize_t>sizeof(_recv_buffer):
        max_bytes = sizeof(_recv_buffer)
    got = recv(fd, _recv_buffer, max_bytes, MSG_DONTWAIT)
    if got < 0 and errno == ENOTSOCK:
        got = read(fd, _recv_buffer, max_bytes)
    if got < 0:
        err = errno
        if err == EAGAIN or err == EINTR:
            return None
        raise OSError(err, os.strerror(err))
    return PyBytes_FromStringAndSize(_recv_buffer, got)


def deliver(queues, int lane, chunks, int track=0, bint keyframe=False, double now=0.0, bint write=True):
    """Queue one message for every subscriber and try to send it at once (see reference.py)."""
    cdef list attention = []
    cdef SendQueue queue
    cdef int status
    cdef tuple wire
    cdef Py_ssize_t size
    _check_lane(lane)
    wire = _as_chunks(chunks)
    size = _message_size(wire)
    for queue in queues:
        status = queue._push(lane, wire, size, track, keyframe, now)
        if status == OVERFLOW_:
            attention.append(queue)
            continue
        if write and status == QUEUED_:
            _write_one(queue, attention)
    return attention


def flush(queues):
    """Write what each queue holds, once per queue (see reference.py)."""
    cdef list attention = []
    cdef SendQueue queue
    for queue in queues:
        if not queue._is_empty():
            _write_one(queue, attention)
    return attention


cdef Py_ssize_t _write_one(SendQueue queue, list attention) except -1:
    """Write what ``queue`` holds now; returns the bytes written."""
    cdef Py_ssize_t written
    if queue.blocked or queue.fd < 0:
        return 0
    try:
        written = queue._write(queue.fd)
    except OSError as error:
        queue.error = error
        queue.blocked = True
        attention.append(queue)
        return 0
    if not queue._is_empty():
        queue.blocked = True
        attention.append(queue)
    return written


# Marks which queues a fan-out round has touched (SendQueue._mark), for every Fanout.
cdef unsigned long _round_mark = 0


cdef class Fanout:
    """The relay's fan-out work in rounds and bounded slices (see reference.py).

    Fast because a round pushes and writes every subscriber in C loops, marks
    touched queues with a round number instead of a set, and returns to
    Python only once per slice and for queues that need attention.
    """

    cdef public double audio_hold
    cdef public Py_ssize_t slice_sockets
    cdef public Py_ssize_t slice_bytes
    cdef public Py_ssize_t round_pushes
    cdef readonly Py_ssize_t messages
    cdef readonly Py_ssize_t deliveries
    cdef readonly Py_ssize_t rounds
    cdef readonly Py_ssize_t writes
    cdef object _pending
    cdef object _held
    cdef list _touched
    cdef Py_ssize_t _cursor

    def __init__(self, double audio_hold=0.0, Py_ssize_t slice_sockets=64,
                 Py_ssize_t slice_bytes=1024 * 1024, Py_ssize_t round_pushes=8192):
        if not audio_hold >= 0.0:
            raise ValueError(f"audio_hold {audio_hold!r} must be zero or more seconds")
        if slice_sockets < 1 or slice_bytes < 1 or round_pushes < 1:
            raise ValueError("slice_sockets, slice_bytes and round_pushes must be at least 1")
        self.audio_hold = audio_hold
        self.slice_sockets = slice_sockets
        self.slice_bytes = slice_bytes
        self.round_pushes = round_pushes
        self._pending = _deque()
        self._held = _deque()
        self._touched = []
        self._cursor = 0

    @property
    def pending(self):
        return len(self._pending)

    @property
    def busy(self):
        return bool(self._pending) or self._cursor < len(self._touched)

    @property
    def next_due(self):
        return (<tuple>self._held[0])[0] + self.audio_hold if self._held else float("inf")

    def add(self, subscribers, message):
        self._pending.append((subscribers, message))

    def run(self, double now):
        cdef list attention = []
        cdef list touched
        cdef SendQueue queue
        cdef Py_ssize_t sockets = 0, written = 0
        cdef double hold = self.audio_hold
        if self._cursor >= len(self._touched):
            self._start_round(now, attention)
        touched = self._touched
        while self._cursor < len(touched) and sockets < self.slice_sockets and written < self.slice_bytes:
            queue = <SendQueue>touched[self._cursor]
            self._cursor += 1
            if queue._is_empty() or queue.blocked or queue.fd < 0:
                continue
            if hold > 0.0 and queue._audio_waits(now, hold):
                continue
            written += _write_one(queue, attention)
            sockets += 1
            self.writes += 1
        if self._cursor >= len(touched):
            self._forget_audio_gone()
        return attention

    cdef int _forget_audio_gone(self) except -1:
        cdef object held = self._held
        cdef tuple item
        cdef SendQueue queue
        cdef double queued_at
        while held:
            item = <tuple>held[0]
            queued_at = item[0]
            for queue in item[1]:
                if queue._holds_audio_from(queued_at):
                    return 0
            held.popleft()
        return 0

    cdef int _start_round(self, double now, list attention) except -1:
        global _round_mark
        cdef list touched = []
        cdef SendQueue queue
        cdef tuple item, wire
        cdef object subscribers, held = self._held, pending = self._pending
        cdef Message message
        cdef int lane, status, track
        cdef bint riding, keyframe
        cdef Py_ssize_t pushes = 0, size
        cdef double hold = self.audio_hold
        cdef unsigned long mark
        _round_mark += 1
        mark = _round_mark
        while held and <double>(<tuple>held[0])[0] + hold <= now:
            item = <tuple>held.popleft()
            for queue in item[1]:
                if queue._mark != mark:
                    queue._mark = mark
                    touched.append(queue)
        while pending and pushes < self.round_pushes:
            item = <tuple>pending.popleft()
            subscribers = item[0]
            message = <Message?>item[1]
            lane = message.lane
            _check_lane(lane)
            track = message.track
            keyframe = message.keyframe
            wire = _as_chunks(message.chunks)
            size = _message_size(wire)
            riding = hold > 0.0 and lane == LANE_AUDIO
            for queue in subscribers:
                status = queue._push(lane, wire, size, track, keyframe, now)
                if status == OVERFLOW_:
                    attention.append(queue)
                elif status == QUEUED_ and not riding and queue._mark != mark:
                    queue._mark = mark
                    touched.append(queue)
            if riding and len(subscribers):
                held.append((now, subscribers))
            pushes += len(subscribers)
            self.messages += 1
        self.deliveries += pushes
        if touched:
            self.rounds += 1
        self._touched = touched
        self._cursor = 0
        return 0
