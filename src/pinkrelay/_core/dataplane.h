/* The compiled data plane: media read, checked and fanned out on C threads, without the GIL.
 *
 * Python (trio) keeps the handshake, authentication and every control message.
 * Once a session is READY its socket is handed over:
 *   - a button's socket becomes a *publisher*: a data thread reads it, checks
 *     each frame header, reassembles media messages per track, checks H.264
 *     keyframes, applies the bitrate limit, keeps the GOP cache and queues each
 *     message (its wire bytes, one refcounted block) to every subscriber;
 *   - a console's socket becomes a *subscriber* for writing: its four lanes
 *     (alert, control, audio, video) live here, Python's control and alert
 *     frames go into the same queue, so an alert is written ahead of every
 *     queued media byte, and one writev per subscriber per turn carries
 *     everything queued for it.
 * A control frame read from a publisher goes to Python at once, through an
 * event queue and an eventfd, and the publisher pauses until Python calls
 * dp_resume: nothing that follows an alert or a stream description is
 * processed before Python has acted on it. Anything the data plane does not
 * accept as well-formed media (a bad header, a lying length, a broken
 * message) is handed back to Python with every byte it needs, and Python's
 * sans-IO connection reports the error exactly as it does without the data
 * plane (docs/protocol.md §2.4).
 */
#ifndef PINKRELAY_DATAPLANE_H
#define PINKRELAY_DATAPLANE_H

#include <stddef.h>
#include <stdint.h>

typedef struct dp_plane dp_plane;
typedef struct dp_conn dp_conn;

typedef struct {
    uint32_t max_frame_bytes;
    uint32_t max_message_bytes;
    uint32_t max_chunks_per_message;
    double bits_per_second;   /* 0: no limit */
    double burst_seconds;
    double close_after;
    double overrun_quiet;
} dp_publisher_limits;

typedef struct {
    uint64_t max_video_bytes;
    uint64_t max_audio_bytes;
    uint64_t max_control_bytes;
    double stall_timeout;
} dp_subscriber_limits;

enum {
    DP_EV_CONTROL = 1,   /* a publisher's control frame(s); it is paused until dp_resume */
    DP_EV_HANDBACK = 2,  /* a publisher's bytes Python must parse; the data plane no longer reads it */
    DP_EV_CLOSED = 3,    /* a publisher's peer closed (text: why) */
    DP_EV_OVERRATE = 4,  /* a publisher stayed above its bitrate limit for close_after seconds */
    DP_EV_FAILED = 5,    /* a subscriber failed: write error, stall, control queue overflow (text: why) */
    DP_EV_MEDIA = 6,     /* a tapped publisher's message: lane, keyframe, track (4 bytes), then its wire bytes */
};

typedef struct {
    int kind;
    uint64_t conn_id;
    char *data;      /* malloc'd, owned by the receiver (free with dp_free_event) */
    size_t size;
} dp_event;

typedef struct {
    uint64_t messages_in, bytes_in, frames_in, dropped_over_rate;
    uint64_t bytes_sent, writes, dropped_video, dropped_audio, queued_bytes;
    uint64_t lane_bytes[4];
    uint32_t preroll_messages;
    uint64_t preroll_bytes;
    uint32_t gop_frames;
    uint64_t gop_bytes;
    double seconds_since_frame;
    int failed, paused, dead, subscribers;
} dp_conn_stats;

typedef struct {
    uint64_t messages, deliveries, writes, turns, bytes_sent, handbacks, control_events;
} dp_plane_stats;

/* audio_hold: seconds a subscriber's audio may wait to leave with the next video frame (0: at once). */
dp_plane *dp_create(int threads, uint64_t gop_cache_bytes, double audio_hold, char *error, size_t error_size);
/* Stops the threads (idempotent); handles stay valid until dp_destroy, after the last is released. */
void dp_stop(dp_plane *plane);
void dp_destroy(dp_plane *plane);
int dp_event_fd(dp_plane *plane);
/* Pops up to max events; returns how many. Clears the eventfd when the queue is empty. */
int dp_take_events(dp_plane *plane, dp_event *out, int max);
void dp_free_event(dp_event *event);
void dp_plane_stats_get(dp_plane *plane, dp_plane_stats *out);

/* A publisher starts paused: the data plane reads it from its first dp_resume on. */
/* Pre-roll: every publisher keeps its last `seconds` of media, whole GOPs, within a budget they share. */
void dp_set_preroll(dp_plane *plane, double seconds, uint64_t budget_bytes);
uint64_t dp_preroll_bytes(dp_plane *plane);

typedef struct {
    size_t offset, size;
    uint32_t track;
    uint8_t lane, keyframe;
} dp_kept_message;

/* Copies up to `max` kept messages, oldest first, into one malloc'd block (*data; free it). */
int dp_preroll(dp_conn *pub, dp_kept_message *out, int max, uint8_t **data);
/* While on, every message of `pub` is also posted to Python as DP_EV_MEDIA (a recording runs). */
void dp_set_tap(dp_conn *pub, int on);

/* fd -1: a publisher with no socket, fed only by dp_inject (media pulled from another relay). */
dp_conn *dp_add_publisher(dp_plane *plane, int fd, const dp_publisher_limits *limits, uint64_t *id);
dp_conn *dp_add_subscriber(dp_plane *plane, int fd, const dp_subscriber_limits *limits, uint64_t *id);
/* The lane media on `track` uses (2 audio, 3 video; 0 forgets it); resets the GOP cache. */
void dp_describe(dp_conn *pub, int track, int lane);
void dp_resume(dp_conn *pub);
/* Fan out a message Python reassembled itself (a publisher handed back to Python). */
void dp_inject(dp_conn *pub, const uint8_t *wire, size_t size, int lane, int track, int keyframe);
/* Adds `sub` to `pub`'s subscribers and queues the GOP cache; media to `sub` waits for dp_release.
 * Returns the number of cached frames queued (0: each video track starts at its next keyframe). */
int dp_subscribe(dp_conn *pub, dp_conn *sub, uint64_t max_catchup_bytes);
void dp_unsubscribe(dp_conn *pub, dp_conn *sub);
void dp_release(dp_conn *sub);
/* Queues one control or alert frame and writes at once if the socket takes it. -1: overflow. */
int dp_send(dp_conn *sub, int lane, const uint8_t *data, size_t size);
/* Video tracks of `sub` restart at their next keyframe (a stream was described anew). */
void dp_wait_for_keyframe(dp_conn *sub, int track);
/* Stops every read and write of the socket before Python closes it (it is safe to close after). */
void dp_remove(dp_conn *conn);
/* Drops Python's reference (the struct is freed once no thread holds it). */
void dp_release_handle(dp_conn *conn);
void dp_conn_stats_get(dp_conn *conn, dp_conn_stats *out);
/* The reason a subscriber failed ("" if it did not); valid while the handle lives. */
const char *dp_failure(dp_conn *conn);

#endif
