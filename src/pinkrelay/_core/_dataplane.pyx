"""Python's handles on the compiled data plane (dataplane.h says what it does and why).

``DataPlane`` owns the threads; ``Publisher`` and ``Subscriber`` are a
button's and a console's sockets once they are handed over. Every method
here runs in trio's thread and returns at once: the only waits are the
data plane's short locks.
"""

from libc.stdint cimport uint8_t, uint32_t, uint64_t
from libc.stdlib cimport free, malloc
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE, PyBytes_FromStringAndSize

cdef extern from "dataplane.h" nogil:
    ctypedef struct dp_plane:
        pass
    ctypedef struct dp_conn:
        pass
    ctypedef struct dp_publisher_limits:
        unsigned int max_frame_bytes
        unsigned int max_message_bytes
        unsigned int max_chunks_per_message
        double bits_per_second
        double burst_seconds
        double close_after
        double overrun_quiet
    ctypedef struct dp_subscriber_limits:
        uint64_t max_video_bytes
        uint64_t max_audio_bytes
        uint64_t max_control_bytes
        double stall_timeout
    ctypedef struct dp_event:
        int kind
        uint64_t conn_id
        char *data
        size_t size
    ctypedef struct dp_conn_stats:
        uint64_t messages_in, bytes_in, frames_in, dropped_over_rate
        uint64_t bytes_sent, writes, dropped_video, dropped_audio, queued_bytes
        uint64_t lane_bytes[4]
        unsigned int preroll_messages
        uint64_t preroll_bytes
        unsigned int gop_frames
        uint64_t gop_bytes
        double seconds_since_frame
        int failed, paused, dead, subscribers
    ctypedef struct dp_plane_stats:
        uint64_t messages, deliveries, writes, turns, bytes_sent, handbacks, control_events
    ctypedef struct dp_kept_message:
        size_t offset, size
        uint32_t track
        uint8_t lane, keyframe
    enum:
        DP_EV_MEDIA
        DP_EV_CONTROL
        DP_EV_HANDBACK
        DP_EV_CLOSED
        DP_EV_OVERRATE
        DP_EV_FAILED

    dp_plane *dp_create(int threads, uint64_t gop_cache_bytes, double audio_hold, char *error, size_t error_size)
    void dp_stop(dp_plane *plane)
    void dp_destroy(dp_plane *plane)
    int dp_event_fd(dp_plane *plane)
    int dp_take_events(dp_plane *plane, dp_event *out, int max)
    void dp_free_event(dp_event *event)
    void dp_plane_stats_get(dp_plane *plane, dp_plane_stats *out)
    dp_conn *dp_add_publisher(dp_plane *plane, int fd, const dp_publisher_limits *limits, uint64_t *id)
    dp_conn *dp_add_subscriber(dp_plane *plane, int fd, const dp_subscriber_limits *limits, uint64_t *id)
    void dp_describe(dp_conn *pub, int track, int lane)
    void dp_resume(dp_conn *pub)
    void dp_inject(dp_conn *pub, const uint8_t *wire, size_t size, int lane, int track, int keyframe)
    int dp_subscribe(dp_conn *pub, dp_conn *sub, uint64_t max_catchup_bytes)
    void dp_unsubscribe(dp_conn *pub, dp_conn *sub)
    void dp_release(dp_conn *sub)
    int dp_send(dp_conn *sub, int lane, const uint8_t *data, size_t size)
    void dp_wait_for_keyframe(dp_conn *sub, int track)
    void dp_remove(dp_conn *conn)
    void dp_release_handle(dp_conn *conn)
    void dp_conn_stats_get(dp_conn *conn, dp_conn_stats *out)
    const char *dp_failure(dp_conn *conn)
    void dp_set_preroll(dp_plane *plane, double seconds, uint64_t budget_bytes)
    uint64_t dp_preroll_bytes(dp_plane *plane)
    int dp_preroll(dp_conn *pub, dp_kept_message *out, int max, uint8_t **data)
    void dp_set_tap(dp_conn *pub, int on)

#: What ``DataPlane.events()`` yields first in each tuple.
CONTROL = DP_EV_CONTROL
HANDBACK = DP_EV_HANDBACK
CLOSED = DP_EV_CLOSED
OVERRATE = DP_EV_OVERRATE
FAILED = DP_EV_FAILED
MEDIA = DP_EV_MEDIA

DEF EVENT_BATCH = 256


cdef class DataPlane:
    """The data threads. Wait for ``fileno()`` to be readable, then read ``events()``."""

    cdef dp_plane *_plane
    cdef readonly int threads
    cdef bint _stopped

    def __cinit__(self, int threads, uint64_t gop_cache_bytes, double audio_hold=0.0):
        cdef char error[200]
        error[0] = 0
        self._plane = dp_create(threads, gop_cache_bytes, audio_hold, error, sizeof(error))
        if self._plane == NULL:
            raise OSError(f"the data plane did not start: {error.decode()}")
        self.threads = threads

    def __dealloc__(self):
        if self._plane != NULL:
            dp_destroy(self._plane)
            self._plane = NULL

    def fileno(self):
        return dp_event_fd(self._plane)

    def stop(self):
        """Stop the threads; sockets still handed over are neither read nor written any more."""
        if not self._stopped:
            self._stopped = True
            with nogil:
                dp_stop(self._plane)

    def events(self):
        """[(kind, conn id, bytes)] in the order they happened (kind: CONTROL, HANDBACK, ...)."""
        cdef dp_event batch[EVENT_BATCH]
        cdef int n, i
        out = []
        while True:
            n = dp_take_events(self._plane, batch, EVENT_BATCH)
            for i in range(n):
                data = PyBytes_FromStringAndSize(batch[i].data, batch[i].size) if batch[i].size else b""
                out.append((batch[i].kind, batch[i].conn_id, data))
                dp_free_event(&batch[i])
            if n < EVENT_BATCH:
                return out

    def publisher(self, int fd, *, max_frame_bytes, max_message_bytes, max_chunks_per_message,
                  double bits_per_second=0.0, double burst_seconds=2.0, double close_after=10.0,
                  double overrun_quiet=1.0):
        cdef dp_publisher_limits limits
        limits.max_frame_bytes = max_frame_bytes
        limits.max_message_bytes = max_message_bytes
        limits.max_chunks_per_message = max_chunks_per_message
        limits.bits_per_second = bits_per_second
        limits.burst_seconds = burst_seconds
        limits.close_after = close_after
        limits.overrun_quiet = overrun_quiet
        cdef Publisher handle = Publisher.__new__(Publisher)
        handle.plane = self
        handle._conn = dp_add_publisher(self._plane, fd, &limits, &handle.id)
        if handle._conn == NULL:
            raise MemoryError("the data plane could not take a button")
        return handle

    def subscriber(self, int fd, *, max_video_bytes, max_audio_bytes, max_control_bytes, double stall_timeout):
        cdef dp_subscriber_limits limits
        limits.max_video_bytes = max_video_bytes
        limits.max_audio_bytes = max_audio_bytes
        limits.max_control_bytes = max_control_bytes
        limits.stall_timeout = stall_timeout
        cdef Subscriber handle = Subscriber.__new__(Subscriber)
        handle.plane = self
        handle._conn = dp_add_subscriber(self._plane, fd, &limits, &handle.id)
        if handle._conn == NULL:
            raise MemoryError("the data plane could not take a console")
        return handle

    def set_preroll(self, double seconds, uint64_t budget_bytes):
        """Every publisher keeps its last ``seconds`` of media (whole GOPs), all within ``budget_bytes``."""
        dp_set_preroll(self._plane, seconds, budget_bytes)

    @property
    def preroll_bytes(self):
        return dp_preroll_bytes(self._plane)

    def stats(self):
        cdef dp_plane_stats s
        dp_plane_stats_get(self._plane, &s)
        return {"messages": s.messages, "deliveries": s.deliveries, "writes": s.writes, "turns": s.turns,
                "bytes_sent": s.bytes_sent, "handbacks": s.handbacks, "control_events": s.control_events}


cdef class _Handle:
    cdef dp_conn *_conn
    cdef readonly uint64_t id
    cdef readonly DataPlane plane

    def __dealloc__(self):
        if self._conn != NULL:
            dp_release_handle(self._conn)
            self._conn = NULL

    def remove(self):
        """No thread reads or writes the socket after this returns: it may be closed."""
        if self._conn != NULL:
            with nogil:
                dp_remove(self._conn)

    def stats(self):
        cdef dp_conn_stats s
        dp_conn_stats_get(self._conn, &s)
        return s


cdef class Publisher(_Handle):
    """A button's socket, read by a data thread."""

    def describe(self, int track, int lane):
        dp_describe(self._conn, track, lane)

    def resume(self):
        """Python has acted on the control frames it was given: read on."""
        dp_resume(self._conn)

    def inject(self, bytes wire, int lane, int track, bint keyframe):
        dp_inject(self._conn, <const uint8_t *>PyBytes_AS_STRING(wire), PyBytes_GET_SIZE(wire), lane, track,
                  keyframe)

    def preroll(self):
        """[(lane, track, keyframe, wire bytes)] kept for pre-roll, oldest first (copies)."""
        cdef dp_conn_stats s
        dp_conn_stats_get(self._conn, &s)
        cdef int room = s.preroll_messages + 64
        cdef dp_kept_message *kept = <dp_kept_message *>malloc(sizeof(dp_kept_message) * room)
        cdef uint8_t *data = NULL
        cdef int n, i
        if kept == NULL:
            raise MemoryError()
        try:
            n = dp_preroll(self._conn, kept, room, &data)
            out = []
            for i in range(n):
                out.append((kept[i].lane, kept[i].track, bool(kept[i].keyframe),
                            PyBytes_FromStringAndSize(<char *>data + kept[i].offset, kept[i].size)))
            return out
        finally:
            free(kept)
            free(data)

    def tap(self, bint on):
        """While on, every message is also an event (MEDIA) for Python: a recording runs."""
        dp_set_tap(self._conn, on)

    def subscribe(self, Subscriber subscriber, uint64_t max_catchup_bytes):
        """Add a watcher (its media is held until ``subscriber.release()``); returns the cached frames queued."""
        return dp_subscribe(self._conn, subscriber._conn, max_catchup_bytes)

    def unsubscribe(self, Subscriber subscriber):
        dp_unsubscribe(self._conn, subscriber._conn)


cdef class Subscriber(_Handle):
    """A console's socket for writing: its lanes are in the data plane."""

    def send(self, int lane, bytes frame):
        """Queue a control or alert frame and write it now if the socket takes it; False: queue full."""
        return dp_send(self._conn, lane, <const uint8_t *>PyBytes_AS_STRING(frame), PyBytes_GET_SIZE(frame)) == 0

    def release(self):
        dp_release(self._conn)

    def wait_for_keyframe(self, int track):
        dp_wait_for_keyframe(self._conn, track)

    @property
    def failure(self):
        reason = dp_failure(self._conn)
        return reason.decode() if reason[0] else None
