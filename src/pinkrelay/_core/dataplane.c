/* The compiled data plane (dataplane.h says what and why; this file says how).
 *
 * Threads: each data thread has an epoll set and owns the sockets added to
 * it (round robin). It reads its publishers, fans their messages out to
 * subscribers owned by any thread, and at the end of its turn writes each
 * subscriber it queued to once. A subscriber whose socket is full is written
 * again by its owner thread when epoll says it is writable.
 *
 * Locks: a publisher's lock covers its parser, GOP cache and subscriber
 * list; a subscriber's lock covers its queue and its socket's writes. Lock
 * order is publisher then subscriber; nothing takes a publisher's lock while
 * holding a subscriber's.
 *
 * Lifetimes: a connection is freed when its reference count reaches zero.
 * References: Python's handle, the owner thread's registration (dropped
 * between two epoll batches, after dp_remove, so that no event still in a
 * batch can point at freed memory), and each thread's list of subscribers
 * to write at the end of its turn. dp_remove takes the connection's lock and
 * marks it dead; no thread touches its descriptor after that.
 */
#define _GNU_SOURCE
#include "dataplane.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#define HEADER 24
#define TYPE_MEDIA 0x40
#define VERSION_WIDE 2    /* protocol.md §2.5: track ids above 65535 */
#define TAP_HEADER 6      /* DP_EV_MEDIA: lane, keyframe, track (4 bytes), then the wire bytes */
#define FLAG_KEY 0x01
#define FLAG_END 0x02
#define LANES 4
#define LANE_AUDIO 2
#define LANE_VIDEO 3
#define MAX_TRACKS_PER_PUB 64
#define MAX_WAITING 16
#define SCRATCH (256 * 1024)
#define READS_PER_TURN 8
#define IOV 64
#define MAX_EVENTS 256
#define SWEEP_INTERVAL 0.25
/* Queued bytes after which a thread writes its subscribers before reading on: a burst read
 * in one turn must not overflow a fast console's video queue. */
#define FLUSH_BYTES (64 * 1024)

/* -- refcounted message blocks --------------------------------------------------------- */

typedef struct {
    int refs;
    uint32_t size;
    uint8_t data[];
} dp_buf;

static dp_buf *buf_new(size_t size) {
    dp_buf *b = malloc(sizeof(dp_buf) + size);
    if (b) { b->refs = 1; b->size = (uint32_t)size; }
    return b;
}
static inline void buf_ref(dp_buf *b) { __atomic_add_fetch(&b->refs, 1, __ATOMIC_RELAXED); }
static inline void buf_unref(dp_buf *b) {
    if (b && __atomic_sub_fetch(&b->refs, 1, __ATOMIC_ACQ_REL) == 0) free(b);
}

/* -- a subscriber's lane: a ring of (block, offset) ------------------------------------------ */

typedef struct {
    dp_buf *buf;
    uint32_t offset;
} entry;

/* One message kept for pre-roll: evidence of what happened before a press. */
typedef struct {
    dp_buf *buf;
    double at;           /* arrival, monotonic seconds */
    uint32_t track;
    uint8_t lane, keyframe;
} kept;

typedef struct {
    entry *items;
    uint32_t head, count, cap;
    uint64_t bytes;
} lane_ring;

static int ring_push(lane_ring *r, dp_buf *b) {
    if (r->count == r->cap) {
        uint32_t cap = r->cap ? r->cap * 2 : 16;
        entry *items = malloc(sizeof(entry) * cap);
        if (!items) return -1;
        for (uint32_t i = 0; i < r->count; i++) items[i] = r->items[(r->head + i) % r->cap];
        free(r->items);
        r->items = items; r->head = 0; r->cap = cap;
    }
    buf_ref(b);
    r->items[(r->head + r->count) % r->cap] = (entry){b, 0};
    r->count++;
    r->bytes += b->size;
    return 0;
}

static void ring_clear(lane_ring *r) {
    for (uint32_t i = 0; i < r->count; i++) buf_unref(r->items[(r->head + i) % r->cap].buf);
    free(r->items);
    memset(r, 0, sizeof(*r));
}

/* -- connections ------------------------------------------------------------------------------ */

typedef struct {
    uint32_t track;
    uint8_t lane;
    uint8_t keyframe;
    uint32_t seq;
    int64_t timestamp;
    uint32_t chunks;
    uint8_t *data;       /* the message's frames so far, as received */
    size_t size, cap;
} partial;

struct dp_conn {
    int refs;
    int is_pub;
    int fd;
    uint64_t id;
    dp_plane *plane;
    int owner;
    pthread_mutex_t lock;
    int dead;
    /* publisher */
    dp_publisher_limits plimits;
    uint32_t track_ids[MAX_TRACKS_PER_PUB];
    uint8_t track_lanes[MAX_TRACKS_PER_PUB];
    int ntracks;
    partial partials[MAX_TRACKS_PER_PUB];
    uint8_t *carry;                      /* bytes read but not yet parsed */
    size_t carry_size;
    int paused, handed_back;
    dp_conn **subs;
    int nsubs, subs_cap;
    dp_buf **gop;
    int gop_count, gop_cap, gop_valid;
    kept *ring_items;                    /* pre-roll: whole GOPs, oldest first (a ring buffer) */
    uint32_t ring_head, ring_count, ring_cap;
    uint64_t ring_bytes;
    int tap;                             /* every message also goes to Python (a recording runs) */
    uint64_t gop_bytes;
    double rate_tokens, rate_updated, over_since, last_drop;
    int over;
    double last_frame;
    uint64_t messages_in, bytes_in, frames_in, dropped_over_rate;
    /* subscriber */
    dp_subscriber_limits slimits;
    lane_ring ring[LANES];
    uint32_t waiting[MAX_WAITING];       /* video tracks waiting for a keyframe */
    int nwaiting;
    int held;                            /* media waits for dp_release */
    int cut_lane;                        /* lane whose head entry is written in part; -1: none */
    double audio_since;                  /* when audio began waiting in an otherwise empty queue */
    int on_hold_list;
    int counted_out;                     /* no longer among plane->npubs */
    int failed;
    char failure[200];
    double last_progress;
    uint64_t touched_turn;
    int touched_thread;
    uint64_t bytes_sent, writes, dropped_video, dropped_audio;
};

typedef struct {
    dp_plane *plane;
    int index;
    int epfd;
    int wakefd;
    pthread_t thread;
    uint8_t *scratch;
    dp_conn **touched;
    int ntouched, touched_cap;
    size_t touched_bytes;                /* queued to them since the last flush */
    dp_conn **held;                      /* subscribers whose audio waits for video (audio_hold) */
    int nheld, held_cap;
    uint64_t turn;
    pthread_mutex_t lock;                /* covers conns and graveyard */
    dp_conn **conns;
    int nconns, conns_cap;
    dp_conn **resumed;                   /* publishers Python let go on, with a reference */
    int nresumed, resumed_cap;
} worker;

struct dp_plane {
    int nthreads;
    worker *workers;
    int next_worker;
    int stopping;
    uint64_t gop_cache_bytes;
    double audio_hold;
    double pre_roll;                     /* seconds of media kept per publisher; 0: none */
    uint64_t preroll_budget, preroll_bytes;
    int npubs;
    uint64_t next_id;
    int eventfd;
    pthread_mutex_t events_lock;
    dp_event *events;
    int nevents, events_cap, events_head;
    /* counters (relaxed atomics) */
    uint64_t messages, deliveries, writes, turns, bytes_sent, handbacks, control_events;
};

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

#define COUNT(field, n) __atomic_add_fetch(&(field), (n), __ATOMIC_RELAXED)

static void conn_unref(dp_conn *c);

static int grow(void **array, int *cap, int need, size_t item) {
    if (need <= *cap) return 0;
    int cap2 = *cap ? *cap * 2 : 8;
    while (cap2 < need) cap2 *= 2;
    void *p = realloc(*array, item * cap2);
    if (!p) return -1;
    *array = p;
    *cap = cap2;
    return 0;
}

/* -- events to Python -------------------------------------------------------------------- */

static void post_event(dp_plane *plane, int kind, uint64_t id, const void *data, size_t size) {
    char *copy = NULL;
    if (size) {
        copy = malloc(size);
        if (!copy) size = 0; else memcpy(copy, data, size);
    }
    pthread_mutex_lock(&plane->events_lock);
    if (plane->nevents == plane->events_cap) {
        int cap = plane->events_cap ? plane->events_cap * 2 : 64;
        dp_event *ev = malloc(sizeof(dp_event) * cap);
        for (int i = 0; i < plane->nevents; i++)
            ev[i] = plane->events[(plane->events_head + i) % plane->events_cap];
        free(plane->events);
        plane->events = ev; plane->events_head = 0; plane->events_cap = cap;
    }
    plane->events[(plane->events_head + plane->nevents) % plane->events_cap] =
        (dp_event){kind, id, copy, size};
    plane->nevents++;
    pthread_mutex_unlock(&plane->events_lock);
    uint64_t one = 1;
    ssize_t w = write(plane->eventfd, &one, sizeof one);
    (void)w;
}

int dp_take_events(dp_plane *plane, dp_event *out, int max) {
    uint64_t value;
    ssize_t r = read(plane->eventfd, &value, sizeof value);  /* non-blocking: clears it */
    (void)r;
    pthread_mutex_lock(&plane->events_lock);
    int n = 0;
    while (n < max && plane->nevents) {
        out[n++] = plane->events[plane->events_head];
        plane->events_head = (plane->events_head + 1) % plane->events_cap;
        plane->nevents--;
    }
    int left = plane->nevents;
    pthread_mutex_unlock(&plane->events_lock);
    if (left) {
        uint64_t one = 1;
        ssize_t w = write(plane->eventfd, &one, sizeof one);
        (void)w;
    }
    return n;
}

void dp_free_event(dp_event *event) { free(event->data); event->data = NULL; }

/* -- subscribers: queue and write ------------------------------------------------------------ */

static void sub_fail(dp_conn *s, const char *why) {
    if (s->failed) return;
    s->failed = 1;
    snprintf(s->failure, sizeof s->failure, "%s", why);
    for (int i = 0; i < LANES; i++) ring_clear(&s->ring[i]);
    post_event(s->plane, DP_EV_FAILED, s->id, s->failure, strlen(s->failure));
}

static uint64_t sub_queued(dp_conn *s) {
    return s->ring[0].bytes + s->ring[1].bytes + s->ring[2].bytes + s->ring[3].bytes;
}

/* One writev of everything queued, most urgent lane first. Caller holds s->lock.
 * A message written in part is finished first: lanes interleave only between messages,
 * so a frame's bytes are never split by another's. */
static void sub_write(dp_conn *s) {
    if (s->dead || s->failed) return;
    for (int round = 0; round < 16; round++) {
        struct iovec iov[IOV];
        uint8_t lane_of[IOV];
        int n = 0;
        int last_lane = s->held ? 1 : LANES - 1;
        int cut = s->cut_lane;
        if (cut >= 0) {
            entry *e = &s->ring[cut].items[s->ring[cut].head];
            iov[n].iov_base = e->buf->data + e->offset;
            iov[n].iov_len = e->buf->size - e->offset;
            lane_of[n++] = (uint8_t)cut;
        }
        for (int l = 0; l <= last_lane && n < IOV; l++) {
            lane_ring *r = &s->ring[l];
            for (uint32_t i = l == cut ? 1 : 0; i < r->count && n < IOV; i++) {
                entry *e = &r->items[(r->head + i) % r->cap];
                iov[n].iov_base = e->buf->data + e->offset;
                iov[n].iov_len = e->buf->size - e->offset;
                lane_of[n++] = (uint8_t)l;
            }
        }
        if (!n) return;
        struct msghdr msg = {0};
        msg.msg_iov = iov;
        msg.msg_iovlen = n;
        ssize_t sent = sendmsg(s->fd, &msg, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (sent < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) return;
            char why[160];
            snprintf(why, sizeof why, "send failed: %s", strerror(errno));
            sub_fail(s, why);
            return;
        }
        s->writes++;
        COUNT(s->plane->writes, 1);
        COUNT(s->plane->bytes_sent, (uint64_t)sent);
        s->bytes_sent += sent;
        s->last_progress = now_s();
        size_t left = (size_t)sent, offered = 0;
        s->cut_lane = -1;
        for (int i = 0; i < n; i++) {
            offered += iov[i].iov_len;
            if (!left) continue;
            lane_ring *r = &s->ring[lane_of[i]];
            entry *e = &r->items[r->head];
            size_t rest = e->buf->size - e->offset;
            if (left < rest) {
                e->offset += left;
                r->bytes -= left;
                left = 0;
                s->cut_lane = lane_of[i];
                continue;
            }
            left -= rest;
            r->bytes -= rest;
            buf_unref(e->buf);
            r->head = (r->head + 1) % r->cap;
            r->count--;
        }
        /* The kernel took less than offered (its buffer is full: epoll tells the owner when
         * it has room), or all of it: then only more than IOV buffers make another round. */
        if ((size_t)sent == offered && n == IOV) continue;
        return;
    }
}

static int waiting_for(dp_conn *s, uint32_t track) {
    for (int i = 0; i < s->nwaiting; i++) if (s->waiting[i] == track) return i;
    return -1;
}

static void wait_keyframe(dp_conn *s, uint32_t track) {
    if (waiting_for(s, track) < 0 && s->nwaiting < MAX_WAITING) s->waiting[s->nwaiting++] = track;
}

/* Queue a media block for a subscriber. Caller holds s->lock. */
static void sub_push_media(dp_conn *s, dp_buf *b, int lane, uint32_t track, int keyframe, double now) {
    if (s->dead || s->failed) return;
    if (!sub_queued(s)) s->last_progress = now;
    if (lane == LANE_AUDIO && !s->ring[LANE_AUDIO].count) s->audio_since = now;
    lane_ring *r = &s->ring[lane];
    if (lane == LANE_VIDEO) {
        int w = waiting_for(s, track);
        if (w >= 0) {
            if (!keyframe) { s->dropped_video++; return; }
            s->waiting[w] = s->waiting[--s->nwaiting];
        }
        if (r->bytes + b->size > s->slimits.max_video_bytes) {
            /* Behind: drop this frame and everything until the track's next keyframe. */
            s->dropped_video++;
            wait_keyframe(s, track);
            return;
        }
    } else if (r->bytes + b->size > s->slimits.max_audio_bytes) {
        s->dropped_audio++;
        return;
    }
    if (ring_push(r, b) < 0) sub_fail(s, "out of memory queueing media");
}

/* -- publishers: fan-out ------------------------------------------------------------------------ */

/* Remember to write `s` at the end of this turn. Caller holds s->lock. */
static void touch(worker *w, dp_conn *s) {
    if (s->touched_turn == w->turn && s->touched_thread == w->index) return;
    if (grow((void **)&w->touched, &w->touched_cap, w->ntouched + 1, sizeof(dp_conn *)) < 0) return;
    s->touched_turn = w->turn;
    s->touched_thread = w->index;
    __atomic_add_fetch(&s->refs, 1, __ATOMIC_RELAXED);
    w->touched[w->ntouched++] = s;
}

static void gop_reset(dp_conn *p) {
    for (int i = 0; i < p->gop_count; i++) buf_unref(p->gop[i]);
    p->gop_count = 0;
    p->gop_bytes = 0;
    p->gop_valid = 0;
}

/* -- pre-roll ---------------------------------------------------------------------------------- */

static kept *ring_at(dp_conn *p, uint32_t i) { return &p->ring_items[(p->ring_head + i) % p->ring_cap]; }

static void ring_pop(dp_conn *p) {
    kept *k = ring_at(p, 0);
    p->ring_bytes -= k->buf->size;
    __atomic_sub_fetch(&p->plane->preroll_bytes, k->buf->size, __ATOMIC_RELAXED);
    buf_unref(k->buf);
    p->ring_head = (p->ring_head + 1) % p->ring_cap;
    p->ring_count--;
}

/* Drop the oldest GOP (up to the next keyframe). */
static void ring_cut_gop(dp_conn *p) {
    if (!p->ring_count) return;
    ring_pop(p);
    while (p->ring_count && !(ring_at(p, 0)->lane == LANE_VIDEO && ring_at(p, 0)->keyframe)) ring_pop(p);
}

static void ring_clear_all(dp_conn *p) {
    while (p->ring_count) ring_pop(p);
    free(p->ring_items);
    p->ring_items = NULL;
    p->ring_cap = p->ring_head = 0;
}

/* Keep the message: from the first keyframe on, whole GOPs, the newest one that started at or before
 * now - pre_roll being the oldest kept. Over the budget shared by all publishers, a publisher holding
 * more than its share loses its oldest GOP. Caller holds p->lock. */
static void ring_keep(dp_conn *p, dp_buf *b, int lane, uint32_t track, int keyframe, double now) {
    dp_plane *plane = p->plane;
    if (plane->pre_roll <= 0) return;
    int key = lane == LANE_VIDEO && keyframe;
    if (!p->ring_count && !key) return;   /* nothing decodable to attach it to */
    if (p->ring_count == p->ring_cap) {
        uint32_t cap = p->ring_cap ? p->ring_cap * 2 : 64;
        kept *items = malloc(sizeof(kept) * cap);
        if (!items) return;
        for (uint32_t i = 0; i < p->ring_count; i++) items[i] = *ring_at(p, i);
        free(p->ring_items);
        p->ring_items = items; p->ring_head = 0; p->ring_cap = cap;
    }
    buf_ref(b);
    *ring_at(p, p->ring_count) = (kept){b, now, track, (uint8_t)lane, (uint8_t)(keyframe != 0)};
    p->ring_count++;
    p->ring_bytes += b->size;
    uint64_t total = __atomic_add_fetch(&plane->preroll_bytes, b->size, __ATOMIC_RELAXED);
    if (key) {
        /* Is the second GOP old enough to reach back on its own? Then the first can go. */
        double horizon = now - plane->pre_roll;
        for (;;) {
            uint32_t second = 0;
            for (uint32_t i = 1; i < p->ring_count; i++) {
                kept *k = ring_at(p, i);
                if (k->lane == LANE_VIDEO && k->keyframe) { second = i; break; }
            }
            if (!second || ring_at(p, second)->at > horizon) break;
            ring_cut_gop(p);
        }
    }
    int npubs = plane->npubs > 0 ? plane->npubs : 1;
    while (total > plane->preroll_budget && p->ring_bytes > plane->preroll_budget / npubs && p->ring_count > 1) {
        ring_cut_gop(p);
        total = __atomic_load_n(&plane->preroll_bytes, __ATOMIC_RELAXED);
    }
}

/* A recording runs: hand the message to Python too ([lane, keyframe, track(4)] + the wire bytes). */
static void tap_out(dp_conn *p, dp_buf *b, int lane, uint32_t track, int keyframe) {
    uint8_t *copy = malloc(TAP_HEADER + b->size);
    if (!copy) return;
    copy[0] = (uint8_t)lane; copy[1] = (uint8_t)(keyframe != 0);
    copy[2] = (uint8_t)(track >> 24); copy[3] = (uint8_t)(track >> 16);
    copy[4] = (uint8_t)(track >> 8); copy[5] = (uint8_t)track;
    memcpy(copy + TAP_HEADER, b->data, b->size);
    post_event(p->plane, DP_EV_MEDIA, p->id, copy, TAP_HEADER + b->size);
    free(copy);
}

/* A complete message: cache it and queue it to every subscriber. Caller holds p->lock. */
static void fan_out(worker *w, dp_conn *p, dp_buf *b, int lane, uint32_t track, int keyframe, double now) {
    p->messages_in++;
    p->bytes_in += b->size;
    COUNT(p->plane->messages, 1);
    ring_keep(p, b, lane, track, keyframe, now);
    if (p->tap) tap_out(p, b, lane, track, keyframe);
    if (lane == LANE_VIDEO) {
        if (keyframe) {
            gop_reset(p);
            p->gop_valid = 1;
        }
        if (p->gop_valid) {
            if (p->gop_bytes + b->size > p->plane->gop_cache_bytes) {
                gop_reset(p);
            } else if (grow((void **)&p->gop, &p->gop_cap, p->gop_count + 1, sizeof(dp_buf *)) == 0) {
                buf_ref(b);
                p->gop[p->gop_count++] = b;
                p->gop_bytes += b->size;
            }
        }
    }
    for (int i = 0; i < p->nsubs; i++) {
        dp_conn *s = p->subs[i];
        pthread_mutex_lock(&s->lock);
        sub_push_media(s, b, lane, track, keyframe, now);
        if (w) touch(w, s);
        else sub_write(s);
        pthread_mutex_unlock(&s->lock);
    }
    COUNT(p->plane->deliveries, (uint64_t)p->nsubs);
    if (w) w->touched_bytes += (size_t)b->size * (size_t)p->nsubs;
}

/* The token bucket of relay/limits.py's MediaRate: 0 pass, 1 drop, 2 close. */
static int rate_offer(dp_conn *p, size_t size, double now) {
    dp_publisher_limits *l = &p->plimits;
    if (l->bits_per_second <= 0) return 0;
    double rate = l->bits_per_second / 8, burst = rate * l->burst_seconds;
    p->rate_tokens += (now - p->rate_updated) * rate;
    if (p->rate_tokens > burst) p->rate_tokens = burst;
    p->rate_updated = now;
    if (p->rate_tokens >= (double)size) {
        p->rate_tokens -= size;
        if (p->over && now - p->last_drop >= l->overrun_quiet) p->over = 0;
        return 0;
    }
    p->dropped_over_rate++;
    p->last_drop = now;
    if (!p->over) { p->over = 1; p->over_since = now; }
    return now - p->over_since >= l->close_after ? 2 : 1;
}

/* -- publishers: parsing --------------------------------------------------------------------- */

static inline uint32_t rd32(const uint8_t *p) {
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}
static inline uint16_t rd16(const uint8_t *p) { return (uint16_t)((p[0] << 8) | p[1]); }

static int track_index(dp_conn *p, uint32_t track) {
    for (int i = 0; i < p->ntracks; i++) if (p->track_ids[i] == track) return i;
    return -1;
}

/* Whether the owner's epoll reports the publisher's input (off while Python has the word). */
static void pub_interest(dp_conn *p, int on) {
    if (p->fd < 0) return;   /* a publisher without a socket: media is only injected */
    struct epoll_event ev = {.events = on ? EPOLLIN : 0, .data.ptr = p};
    epoll_ctl(p->plane->workers[p->owner].epfd, EPOLL_CTL_MOD, p->fd, &ev);
}

/* Annex B start and a KEYFRAME flag that agrees with the NAL types (protocol/media_rules.py). */
static int h264_ok(const uint8_t *frames, size_t size, int keyframe) {
    /* frames: the message's chunks with their headers; payload of chunk k at header+24 */
    size_t at = 0;
    int first = 1, idr = 0;
    while (at + HEADER <= size) {
        uint32_t len = rd32(frames + at + 20);
        const uint8_t *pl = frames + at + HEADER;
        if (first) {
            int nal;
            if (len >= 4 && pl[0] == 0 && pl[1] == 0 && pl[2] == 1) nal = pl[3] & 0x1F;
            else if (len >= 5 && pl[0] == 0 && pl[1] == 0 && pl[2] == 0 && pl[3] == 1) nal = pl[4] & 0x1F;
            else if (len >= 3 && pl[0] == 0 && pl[1] == 0 && pl[2] == 1) nal = -1;
            else if (len >= 4 && pl[0] == 0 && pl[1] == 0 && pl[2] == 0 && pl[3] == 1) nal = -1;
            else return 0;
            if (!keyframe) return nal != 5 && nal != 7;
            first = 0;
        }
        for (uint32_t i = 0; i + 3 < len; i++) {
            if (pl[i] == 0 && pl[i + 1] == 0 && pl[i + 2] == 1 && (pl[i + 3] & 0x1F) == 5) { idr = 1; break; }
        }
        if (idr) return 1;
        at += HEADER + len;
    }
    return 0;
}

static void over_rate(dp_conn *p) {
    p->handed_back = 1;
    pub_interest(p, 0);
    post_event(p->plane, DP_EV_OVERRATE, p->id, NULL, 0);
}

/* Hand everything from `from` (plus a partial message's frames first) to Python; stop reading. */
static void hand_back(dp_conn *p, const partial *lead, const uint8_t *from, size_t size) {
    size_t total = (lead ? lead->size : 0) + size;
    uint8_t *all = malloc(total ? total : 1);
    if (all) {
        if (lead && lead->size) memcpy(all, lead->data, lead->size);
        if (size) memcpy(all + (lead ? lead->size : 0), from, size);
    }
    p->handed_back = 1;
    pub_interest(p, 0);
    COUNT(p->plane->handbacks, 1);
    post_event(p->plane, DP_EV_HANDBACK, p->id, all, all ? total : 0);
    free(all);
}

/* Parse what is buffered. Returns bytes consumed; sets *stop when the publisher paused or was handed back. */
static size_t parse(worker *w, dp_conn *p, const uint8_t *data, size_t size, double now) {
    size_t at = 0;
    size_t control_start = (size_t)-1;
    int judge = 0;   /* a header Python must judge */
    while (size - at >= HEADER) {
        const uint8_t *h = data + at;
        uint32_t len = rd32(h + 20);
        int type = h[3], flags = h[4], lane = h[5];
        uint32_t track = rd16(h + 6);
        if (h[2] == VERSION_WIDE) {   /* protocol.md §2.5: bits 16-21 of the track ride in the lane byte */
            track |= (uint32_t)(lane >> 2) << 16;
            lane &= 3;
        }
        if (h[0] != 'P' || h[1] != 'R' || (h[2] != 1 && h[2] != VERSION_WIDE) ||
            len > p->plimits.max_frame_bytes) {
            judge = 1;  /* Python's decoder names the error */
            break;
        }
        if (size - at - HEADER < len) break;   /* wait for the rest of the frame */
        size_t frame = HEADER + len;
        if (type != TYPE_MEDIA) {
            /* Control: hand over this frame, and every control frame right after it, then pause. */
            if (control_start == (size_t)-1) control_start = at;
            at += frame;
            continue;
        }
        if (control_start != (size_t)-1) break;  /* media behind control waits for Python */
        int ti = track_index(p, track);
        if ((flags & ~(FLAG_KEY | FLAG_END)) || ti < 0 || p->track_lanes[ti] != lane) {
            hand_back(p, NULL, data + at, size - at);
            return size;
        }
        partial *m = &p->partials[ti];
        uint32_t seq = rd32(h + 8);
        int64_t timestamp = (int64_t)(((uint64_t)rd32(h + 12) << 32) | rd32(h + 16));
        if (m->size && (m->seq != seq || m->timestamp != timestamp || m->keyframe != ((flags & FLAG_KEY) != 0))) {
            hand_back(p, m, data + at, size - at);
            m->size = 0;
            return size;
        }
        if (!m->size) {
            m->seq = seq; m->lane = (uint8_t)lane; m->keyframe = (flags & FLAG_KEY) != 0; m->chunks = 0;
            m->timestamp = timestamp;
        }
        if (m->size - (size_t)HEADER * m->chunks + len > p->plimits.max_message_bytes ||
            m->chunks + 1 > p->plimits.max_chunks_per_message) {
            hand_back(p, m, data + at, size - at);
            m->size = 0;
            return size;
        }
        p->frames_in++;
        p->last_frame = now;
        if ((flags & FLAG_END) && !m->size) {
            /* One-chunk message, the common case: one copy, straight from the read buffer. */
            if (lane == LANE_VIDEO && !h264_ok(h, frame, flags & FLAG_KEY)) {
                hand_back(p, NULL, data + at, size - at);
                return size;
            }
            int verdict = rate_offer(p, frame, now);
            if (verdict == 2) { over_rate(p); return size; }
            if (verdict == 0) {
                dp_buf *b = buf_new(frame);
                if (b) {
                    memcpy(b->data, h, frame);
                    fan_out(w, p, b, lane, track, flags & FLAG_KEY, now);
                    buf_unref(b);
                }
            }
            at += frame;
            continue;
        }
        if (m->size + frame > m->cap) {
            size_t cap = m->cap ? m->cap * 2 : 64 * 1024;
            while (cap < m->size + frame) cap *= 2;
            uint8_t *d = realloc(m->data, cap);
            if (!d) { hand_back(p, m, data + at, size - at); m->size = 0; return size; }
            m->data = d; m->cap = cap;
        }
        memcpy(m->data + m->size, h, frame);
        m->size += frame;
        m->chunks++;
        at += frame;
        if (flags & FLAG_END) {
            if (lane == LANE_VIDEO && !h264_ok(m->data, m->size, m->keyframe)) {
                hand_back(p, m, data + at, size - at);
                m->size = 0;
                return size;
            }
            int verdict = rate_offer(p, m->size, now);
            if (verdict == 2) { over_rate(p); return size; }
            if (verdict == 0) {
                dp_buf *b = buf_new(m->size);
                if (b) {
                    memcpy(b->data, m->data, m->size);
                    fan_out(w, p, b, lane, track, m->keyframe, now);
                    buf_unref(b);
                }
            }
            m->size = 0;
            if (m->cap > 256 * 1024) { free(m->data); m->data = NULL; m->cap = 0; }
        }
    }
    if (control_start != (size_t)-1) {
        p->paused = 1;
        pub_interest(p, 0);
        COUNT(p->plane->control_events, 1);
        post_event(p->plane, DP_EV_CONTROL, p->id, data + control_start, at - control_start);
        return at;
    }
    if (judge) {
        /* A header Python must judge (bad magic, version, a length above the limit). */
        hand_back(p, NULL, data + at, size - at);
        return size;
    }
    return at;
}

static void keep_carry(dp_conn *p, const uint8_t *rest, size_t size) {
    if (!size) { free(p->carry); p->carry = NULL; p->carry_size = 0; return; }
    uint8_t *c = malloc(size);
    if (!c) return;
    memmove(c, rest, size);
    free(p->carry);
    p->carry = c;
    p->carry_size = size;
}

/* Parse what is carried over (after dp_resume). Caller holds p->lock. */
static void parse_carry(worker *w, dp_conn *p) {
    if (!p->carry_size || p->paused || p->handed_back) return;
    uint8_t *data = p->carry;
    size_t size = p->carry_size;
    p->carry = NULL; p->carry_size = 0;
    size_t used = parse(w, p, data, size, now_s());
    if (!p->handed_back) keep_carry(p, data + used, size - used);
    free(data);
}

static void flush_touched(worker *w);

static void pub_gone(dp_conn *p, const char *why) {
    p->handed_back = 1;
    pub_interest(p, 0);
    post_event(p->plane, DP_EV_CLOSED, p->id, why, strlen(why));
}

/* Read a publisher until the socket is empty (or READS_PER_TURN). Caller holds p->lock.
 * With nothing carried over (the usual case) it reads into the thread's scratch buffer;
 * bytes of an unfinished frame are carried to the next read in a buffer of their own. */
static void pub_read(worker *w, dp_conn *p) {
    for (int reads = 0; reads < READS_PER_TURN; reads++) {
        if (p->dead || p->paused || p->handed_back) return;
        uint8_t *buf = w->scratch;
        size_t have = 0, room = SCRATCH;
        if (p->carry_size) {
            have = p->carry_size;
            room = have + SCRATCH / 4;
            uint8_t *grown = realloc(p->carry, room);
            if (!grown) { pub_gone(p, "out of memory reading"); return; }
            p->carry = buf = grown;
        }
        ssize_t got = recv(p->fd, buf + have, room - have, MSG_DONTWAIT);
        if (got < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) return;
            char why[160];
            snprintf(why, sizeof why, "connection lost: %s", strerror(errno));
            pub_gone(p, why);
            return;
        }
        if (got == 0) {
            /* Bytes carried and then EOF: Python hears both, in order. */
            if (have) hand_back(p, NULL, buf, have);
            else pub_gone(p, "peer closed the connection");
            return;
        }
        size_t size = have + (size_t)got;
        if (buf == p->carry) { p->carry = NULL; p->carry_size = 0; }
        size_t used = parse(w, p, buf, size, now_s());
        if (!p->handed_back) keep_carry(p, buf + used, size - used);
        if (buf != w->scratch) free(buf);
        if (w->touched_bytes >= FLUSH_BYTES) flush_touched(w);
    }
    /* Still data: come back next turn (level-triggered epoll). */
}

/* -- threads ------------------------------------------------------------------------------------ */

/* Only audio queued, for less than audio_hold: it waits to leave with the next video frame
 * (one write per video frame instead of one per audio and video frame, as on the trio path). */
static int audio_waits(dp_conn *s, double hold, double now) {
    return hold > 0 && s->ring[LANE_AUDIO].count && !s->ring[0].count && !s->ring[1].count &&
           !s->ring[LANE_VIDEO].count && s->cut_lane < 0 && !s->held && now - s->audio_since < hold;
}

static void flush_touched(worker *w) {
    double hold = w->plane->audio_hold, now = hold > 0 ? now_s() : 0;
    for (int i = 0; i < w->ntouched; i++) {
        dp_conn *s = w->touched[i];
        pthread_mutex_lock(&s->lock);
        if (audio_waits(s, hold, now)) {
            if (s->on_hold_list) {         /* already waiting: its deadline stands */
                pthread_mutex_unlock(&s->lock);
                conn_unref(s);
                continue;
            }
            if (grow((void **)&w->held, &w->held_cap, w->nheld + 1, sizeof(dp_conn *)) == 0) {
                s->on_hold_list = 1;
                w->held[w->nheld++] = s;   /* keeps the touch's reference */
                pthread_mutex_unlock(&s->lock);
                continue;
            }
        }
        sub_write(s);
        pthread_mutex_unlock(&s->lock);
        conn_unref(s);
    }
    w->ntouched = 0;
    w->touched_bytes = 0;
    w->turn++;   /* the next push to any of them touches it again */
}

/* Write the held subscribers whose audio has waited audio_hold; returns the next deadline (or 0). */
static double flush_held(worker *w, double now) {
    double next = 0, hold = w->plane->audio_hold;
    int keep = 0;
    for (int i = 0; i < w->nheld; i++) {
        dp_conn *s = w->held[i];
        pthread_mutex_lock(&s->lock);
        if (audio_waits(s, hold, now)) {
            double due = s->audio_since + hold;
            if (!next || due < next) next = due;
            w->held[keep++] = s;
            pthread_mutex_unlock(&s->lock);
            continue;
        }
        s->on_hold_list = 0;
        sub_write(s);
        pthread_mutex_unlock(&s->lock);
        conn_unref(s);
    }
    w->nheld = keep;
    return next;
}

static void sweep(worker *w, double now) {
    pthread_mutex_lock(&w->lock);
    for (int i = 0; i < w->nconns; i++) {
        dp_conn *c = w->conns[i];
        if (c->is_pub) continue;
        pthread_mutex_lock(&c->lock);
        if (!c->dead && !c->failed && sub_queued(c) && now - c->last_progress > c->slimits.stall_timeout) {
            char why[200];
            snprintf(why, sizeof why, "stopped reading: its socket took nothing for %g s (%llu bytes waiting)",
                     c->slimits.stall_timeout, (unsigned long long)sub_queued(c));
            sub_fail(c, why);
        }
        pthread_mutex_unlock(&c->lock);
    }
    /* The dead: no event of a finished batch points at them any more. */
    int keep = 0;
    for (int i = 0; i < w->nconns; i++) {
        if (w->conns[i]->dead) conn_unref(w->conns[i]);
        else w->conns[keep++] = w->conns[i];
    }
    w->nconns = keep;
    pthread_mutex_unlock(&w->lock);
}

static void *worker_main(void *arg) {
    worker *w = arg;
    struct epoll_event events[MAX_EVENTS];
    double next_sweep = now_s() + SWEEP_INTERVAL, next_held = 0;
    while (!__atomic_load_n(&w->plane->stopping, __ATOMIC_ACQUIRE)) {
        double until = next_sweep;
        if (next_held && next_held < until) until = next_held;
        int timeout = (int)((until - now_s()) * 1000 + 0.999);
        if (timeout < 0) timeout = 0;
        int n = epoll_wait(w->epfd, events, MAX_EVENTS, timeout);
        if (n < 0 && errno != EINTR) break;
        w->turn++;
        COUNT(w->plane->turns, 1);
        for (int i = 0; i < n; i++) {
            dp_conn *c = events[i].data.ptr;
            if (!c) {
                uint64_t v;
                ssize_t r = read(w->wakefd, &v, sizeof v);
                (void)r;
                /* Resumed publishers: parse what they carried, then read on. */
                pthread_mutex_lock(&w->lock);
                dp_conn **list = w->resumed;
                int count = w->nresumed;
                w->resumed = NULL;
                w->nresumed = w->resumed_cap = 0;
                pthread_mutex_unlock(&w->lock);
                for (int k = 0; k < count; k++) {
                    dp_conn *p = list[k];
                    pthread_mutex_lock(&p->lock);
                    if (!p->dead && !p->paused && !p->handed_back) {
                        parse_carry(w, p);
                        if (!p->paused && !p->handed_back) {
                            pub_interest(p, 1);
                            pub_read(w, p);
                        }
                    }
                    pthread_mutex_unlock(&p->lock);
                    conn_unref(p);
                }
                free(list);
                continue;
            }
            pthread_mutex_lock(&c->lock);
            if (!c->dead) {
                if (c->is_pub) pub_read(w, c);
                /* Writable again: write what is queued, except audio on hold for the next video frame
                 * (flush_held writes it when it is due). */
                else if (!(c->on_hold_list && audio_waits(c, w->plane->audio_hold, now_s()))) sub_write(c);
            }
            pthread_mutex_unlock(&c->lock);
        }
        flush_touched(w);
        double now = now_s();
        next_held = w->nheld ? flush_held(w, now) : 0;
        if (now >= next_sweep) {
            sweep(w, now);
            next_sweep = now + SWEEP_INTERVAL;
        }
    }
    return NULL;
}

void dp_set_preroll(dp_plane *plane, double seconds, uint64_t budget_bytes) {
    plane->pre_roll = seconds;
    plane->preroll_budget = budget_bytes;
}

uint64_t dp_preroll_bytes(dp_plane *plane) { return __atomic_load_n(&plane->preroll_bytes, __ATOMIC_RELAXED); }

void dp_set_tap(dp_conn *p, int on) {
    pthread_mutex_lock(&p->lock);
    p->tap = on;
    pthread_mutex_unlock(&p->lock);
}

int dp_preroll(dp_conn *p, dp_kept_message *out, int max, uint8_t **data) {
    pthread_mutex_lock(&p->lock);
    int n = 0;
    size_t total = 0;
    for (uint32_t i = 0; i < p->ring_count && n < max; i++, n++) total += ring_at(p, i)->buf->size;
    uint8_t *all = malloc(total ? total : 1);
    size_t at = 0;
    for (int i = 0; all && i < n; i++) {
        kept *k = ring_at(p, (uint32_t)i);
        memcpy(all + at, k->buf->data, k->buf->size);
        out[i] = (dp_kept_message){at, k->buf->size, k->track, k->lane, k->keyframe};
        at += k->buf->size;
    }
    pthread_mutex_unlock(&p->lock);
    *data = all;
    return all ? n : 0;
}

dp_plane *dp_create(int threads, uint64_t gop_cache_bytes, double audio_hold, char *error, size_t error_size) {
    if (threads < 1) threads = 1;
    dp_plane *plane = calloc(1, sizeof *plane);
    if (!plane) { snprintf(error, error_size, "out of memory"); return NULL; }
    plane->nthreads = threads;
    plane->gop_cache_bytes = gop_cache_bytes;
    plane->audio_hold = audio_hold;
    plane->eventfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    pthread_mutex_init(&plane->events_lock, NULL);
    plane->workers = calloc(threads, sizeof(worker));
    for (int i = 0; i < threads; i++) {
        worker *w = &plane->workers[i];
        w->plane = plane;
        w->index = i;
        w->epfd = epoll_create1(EPOLL_CLOEXEC);
        w->wakefd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
        w->scratch = malloc(SCRATCH);
        pthread_mutex_init(&w->lock, NULL);
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL};
        epoll_ctl(w->epfd, EPOLL_CTL_ADD, w->wakefd, &ev);
        int rc = pthread_create(&w->thread, NULL, worker_main, w);
        if (rc) {
            snprintf(error, error_size, "cannot start data thread %d: %s", i, strerror(rc));
            plane->nthreads = i;
            dp_destroy(plane);
            return NULL;
        }
    }
    return plane;
}

void dp_stop(dp_plane *plane) {
    if (__atomic_exchange_n(&plane->stopping, 1, __ATOMIC_ACQ_REL)) return;
    for (int i = 0; i < plane->nthreads; i++) {
        uint64_t one = 1;
        ssize_t r = write(plane->workers[i].wakefd, &one, sizeof one);
        (void)r;
        pthread_join(plane->workers[i].thread, NULL);
    }
}

void dp_destroy(dp_plane *plane) {
    dp_stop(plane);
    for (int i = 0; i < plane->nthreads; i++) {
        worker *w = &plane->workers[i];
        for (int k = 0; k < w->nconns; k++) {
            w->conns[k]->dead = 1;
            conn_unref(w->conns[k]);
        }
        free(w->conns);
        for (int k = 0; k < w->nresumed; k++) conn_unref(w->resumed[k]);
        free(w->resumed);
        for (int k = 0; k < w->ntouched; k++) conn_unref(w->touched[k]);
        for (int k = 0; k < w->nheld; k++) conn_unref(w->held[k]);
        free(w->held);
        free(w->touched);
        free(w->scratch);
        close(w->epfd);
        close(w->wakefd);
    }
    for (int i = 0; i < plane->nevents; i++)
        free(plane->events[(plane->events_head + i) % plane->events_cap].data);
    free(plane->events);
    free(plane->workers);
    close(plane->eventfd);
    free(plane);
}

int dp_event_fd(dp_plane *plane) { return plane->eventfd; }

void dp_plane_stats_get(dp_plane *plane, dp_plane_stats *o) {
    o->messages = plane->messages; o->deliveries = plane->deliveries; o->writes = plane->writes;
    o->turns = plane->turns; o->bytes_sent = plane->bytes_sent; o->handbacks = plane->handbacks;
    o->control_events = plane->control_events;
}

static dp_conn *add_conn(dp_plane *plane, int fd, int is_pub, uint64_t *id) {
    dp_conn *c = calloc(1, sizeof *c);
    if (!c) return NULL;
    c->refs = 2;               /* Python's handle and the owner's registration */
    c->is_pub = is_pub;
    c->fd = fd;
    c->plane = plane;
    c->id = *id = __atomic_add_fetch(&plane->next_id, 1, __ATOMIC_RELAXED);
    c->last_frame = c->last_progress = c->rate_updated = now_s();
    c->touched_thread = -1;
    c->cut_lane = -1;
    pthread_mutex_init(&c->lock, NULL);
    int owner = __atomic_fetch_add(&plane->next_worker, 1, __ATOMIC_RELAXED) % plane->nthreads;
    c->owner = owner;
    worker *w = &plane->workers[owner];
    pthread_mutex_lock(&w->lock);
    grow((void **)&w->conns, &w->conns_cap, w->nconns + 1, sizeof(dp_conn *));
    w->conns[w->nconns++] = c;
    pthread_mutex_unlock(&w->lock);
    /* A publisher starts paused, its input unwatched: Python may still be reading the socket
     * (the handshake's last bytes); its first dp_resume hands the reading over. */
    c->paused = is_pub;
    struct epoll_event ev = {.events = is_pub ? 0 : (EPOLLOUT | EPOLLET), .data.ptr = c};
    if (fd >= 0 && epoll_ctl(w->epfd, EPOLL_CTL_ADD, fd, &ev) < 0) {
        c->dead = 1;
    }
    return c;
}

dp_conn *dp_add_publisher(dp_plane *plane, int fd, const dp_publisher_limits *limits, uint64_t *id) {
    dp_conn *c = add_conn(plane, fd, 1, id);
    if (c) {
        __atomic_add_fetch(&plane->npubs, 1, __ATOMIC_RELAXED);
        pthread_mutex_lock(&c->lock);
        c->plimits = *limits;
        c->rate_tokens = limits->bits_per_second / 8 * limits->burst_seconds;
        pthread_mutex_unlock(&c->lock);
    }
    return c;
}

dp_conn *dp_add_subscriber(dp_plane *plane, int fd, const dp_subscriber_limits *limits, uint64_t *id) {
    dp_conn *c = add_conn(plane, fd, 0, id);
    if (c) {
        pthread_mutex_lock(&c->lock);
        c->slimits = *limits;
        pthread_mutex_unlock(&c->lock);
    }
    return c;
}

void dp_describe(dp_conn *p, int track, int lane) {
    pthread_mutex_lock(&p->lock);
    int i = track_index(p, (uint32_t)track);
    if (lane == 0) {
        if (i >= 0) {
            free(p->partials[i].data);
            p->ntracks--;
            p->track_ids[i] = p->track_ids[p->ntracks];
            p->track_lanes[i] = p->track_lanes[p->ntracks];
            p->partials[i] = p->partials[p->ntracks];
            memset(&p->partials[p->ntracks], 0, sizeof(partial));
        }
    } else if (i >= 0) {
        p->track_lanes[i] = (uint8_t)lane;
    } else if (p->ntracks < MAX_TRACKS_PER_PUB) {
        p->track_ids[p->ntracks] = (uint32_t)track;
        p->track_lanes[p->ntracks] = (uint8_t)lane;
        memset(&p->partials[p->ntracks], 0, sizeof(partial));
        p->ntracks++;
    }
    gop_reset(p);
    pthread_mutex_unlock(&p->lock);
}

void dp_resume(dp_conn *p) {
    pthread_mutex_lock(&p->lock);
    int was = p->paused;
    p->paused = 0;
    pthread_mutex_unlock(&p->lock);
    if (!was) return;
    worker *w = &p->plane->workers[p->owner];
    pthread_mutex_lock(&w->lock);
    if (grow((void **)&w->resumed, &w->resumed_cap, w->nresumed + 1, sizeof(dp_conn *)) == 0) {
        __atomic_add_fetch(&p->refs, 1, __ATOMIC_RELAXED);
        w->resumed[w->nresumed++] = p;
    }
    pthread_mutex_unlock(&w->lock);
    uint64_t one = 1;
    ssize_t r = write(p->plane->workers[p->owner].wakefd, &one, sizeof one);
    (void)r;
}

void dp_inject(dp_conn *p, const uint8_t *wire, size_t size, int lane, int track, int keyframe) {
    dp_buf *b = buf_new(size);
    if (!b) return;
    memcpy(b->data, wire, size);
    pthread_mutex_lock(&p->lock);
    fan_out(NULL, p, b, lane, (uint32_t)track, keyframe, now_s());
    pthread_mutex_unlock(&p->lock);
    buf_unref(b);
}

int dp_subscribe(dp_conn *p, dp_conn *s, uint64_t max_catchup_bytes) {
    int queued = 0;
    pthread_mutex_lock(&p->lock);
    int present = 0;
    for (int i = 0; i < p->nsubs; i++) present |= p->subs[i] == s;
    pthread_mutex_lock(&s->lock);
    s->held = 1;
    if (!present) {
        if (grow((void **)&p->subs, &p->subs_cap, p->nsubs + 1, sizeof(dp_conn *)) == 0) {
            __atomic_add_fetch(&s->refs, 1, __ATOMIC_RELAXED);
            p->subs[p->nsubs++] = s;
        }
        if (p->gop_valid && p->gop_count && p->gop_bytes <= max_catchup_bytes) {
            for (int i = 0; i < p->gop_count; i++) ring_push(&s->ring[LANE_VIDEO], p->gop[i]);
            queued = p->gop_count;
            COUNT(p->plane->deliveries, (uint64_t)queued);
        }
        for (int t = 0; t < p->ntracks; t++) {
            if (p->track_lanes[t] != LANE_VIDEO) continue;
            int w = waiting_for(s, p->track_ids[t]);
            if (queued) { if (w >= 0) s->waiting[w] = s->waiting[--s->nwaiting]; }
            else wait_keyframe(s, p->track_ids[t]);
        }
    }
    pthread_mutex_unlock(&s->lock);
    pthread_mutex_unlock(&p->lock);
    return queued;
}

void dp_unsubscribe(dp_conn *p, dp_conn *s) {
    pthread_mutex_lock(&p->lock);
    for (int i = 0; i < p->nsubs; i++) {
        if (p->subs[i] == s) {
            p->subs[i] = p->subs[--p->nsubs];
            conn_unref(s);
            break;
        }
    }
    pthread_mutex_unlock(&p->lock);
}

void dp_release(dp_conn *s) {
    pthread_mutex_lock(&s->lock);
    s->held = 0;
    sub_write(s);
    pthread_mutex_unlock(&s->lock);
}

int dp_send(dp_conn *s, int lane, const uint8_t *data, size_t size) {
    int rc = 0;
    pthread_mutex_lock(&s->lock);
    if (!s->dead && !s->failed) {
        lane_ring *r = &s->ring[lane];
        if (r->bytes + size > s->slimits.max_control_bytes) {
            sub_fail(s, "control queue full");
            rc = -1;
        } else {
            dp_buf *b = buf_new(size);
            if (!b) rc = -1;
            else {
                memcpy(b->data, data, size);
                if (ring_push(r, b) < 0) rc = -1;
                buf_unref(b);
                if (sub_queued(s) == size) s->last_progress = now_s();
                sub_write(s);
            }
        }
    }
    pthread_mutex_unlock(&s->lock);
    return rc;
}

void dp_wait_for_keyframe(dp_conn *s, int track) {
    pthread_mutex_lock(&s->lock);
    wait_keyframe(s, (uint32_t)track);
    pthread_mutex_unlock(&s->lock);
}

void dp_remove(dp_conn *c) {
    pthread_mutex_lock(&c->lock);
    if (!c->dead) {
        c->dead = 1;
        if (c->fd >= 0) epoll_ctl(c->plane->workers[c->owner].epfd, EPOLL_CTL_DEL, c->fd, NULL);
        for (int i = 0; i < LANES; i++) ring_clear(&c->ring[i]);
    }
    pthread_mutex_unlock(&c->lock);
    if (c->is_pub) {
        pthread_mutex_lock(&c->lock);
        dp_conn **subs = c->subs;
        int n = c->nsubs;
        c->subs = NULL; c->nsubs = c->subs_cap = 0;
        gop_reset(c);
        ring_clear_all(c);
        if (!c->counted_out) { c->counted_out = 1; __atomic_sub_fetch(&c->plane->npubs, 1, __ATOMIC_RELAXED); }
        pthread_mutex_unlock(&c->lock);
        for (int i = 0; i < n; i++) conn_unref(subs[i]);
        free(subs);
    }
}

void dp_release_handle(dp_conn *c) {
    dp_remove(c);
    conn_unref(c);
}

static void conn_unref(dp_conn *c) {
    if (__atomic_sub_fetch(&c->refs, 1, __ATOMIC_ACQ_REL) != 0) return;
    for (int i = 0; i < LANES; i++) ring_clear(&c->ring[i]);
    for (int i = 0; i < MAX_TRACKS_PER_PUB; i++) free(c->partials[i].data);
    for (int i = 0; i < c->nsubs; i++) conn_unref(c->subs[i]);
    free(c->subs);
    gop_reset(c);
    free(c->gop);
    if (c->is_pub) ring_clear_all(c);
    free(c->carry);
    pthread_mutex_destroy(&c->lock);
    free(c);
}

void dp_conn_stats_get(dp_conn *c, dp_conn_stats *o) {
    pthread_mutex_lock(&c->lock);
    o->messages_in = c->messages_in; o->bytes_in = c->bytes_in; o->frames_in = c->frames_in;
    o->dropped_over_rate = c->dropped_over_rate;
    o->bytes_sent = c->bytes_sent; o->writes = c->writes;
    o->dropped_video = c->dropped_video; o->dropped_audio = c->dropped_audio;
    o->queued_bytes = sub_queued(c);
    for (int i = 0; i < LANES; i++) o->lane_bytes[i] = c->ring[i].bytes;
    o->preroll_messages = c->ring_count;
    o->preroll_bytes = c->ring_bytes;
    o->gop_frames = (uint32_t)c->gop_count; o->gop_bytes = c->gop_bytes;
    o->seconds_since_frame = now_s() - c->last_frame;
    o->failed = c->failed; o->paused = c->paused; o->dead = c->dead; o->subscribers = c->nsubs;
    pthread_mutex_unlock(&c->lock);
}

const char *dp_failure(dp_conn *c) { return c->failed ? c->failure : ""; }
