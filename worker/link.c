/* link.c — rank 0's connection to radladsd, on its own thread with its own libuv loop.
 *
 *   training thread                         link thread (uv loop)
 *   rl_link_send ──▶ queue (mutex) ──uv_async──▶ flush: uv_write, one frame per request
 *   rl_link_next_assignment ◀── cond ◀──────── StageAssignment read from the socket
 *   rl_link_take_control    ◀── bits ◀──────── Control{attempt_id} for the running attempt
 *                                             heartbeat timer: Heartbeat{attempt, step} every heartbeat_ms
 *
 * Reporting never blocks a step: the training thread only takes the mutex for a queue append.  The queue
 * is bounded (queue_max frames): when full, the oldest progress, log or heartbeat frame is dropped; the
 * frames that carry state (CheckpointSaved, StageFinished) are never dropped, and one whose write failed
 * is sent again after the next registration.  Progress, log, checkpoint and stage-end frames carry a
 * sequence number; the last SENT_KEEP written are kept, and when a reconnect's PoolRegistered says which seq
 * the daemon took last, the ones after it (swallowed with the old connection: in its socket buffers or a
 * proxy's) are sent again first; the daemon ignores a seq it already has.
 *
 * Connection states: CONNECTING → (Hello + RegisterPool written at once) → REGISTERED on PoolRegistered.
 * A lost connection goes to DISCONNECTED and is retried after a backoff (200 ms doubling to 5 s); the
 * RegisterPool of a reconnect carries the pool id and the running attempt so the daemon can re-attach.
 * An Error during the handshake that retrying cannot fix (wrong token, protocol version, bad request) is
 * FATAL: the link stops retrying and says why. */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <uv.h>

#include "worker.h"

enum { L_CONNECTING, L_REGISTERED, L_DISCONNECTED, L_FATAL };

#define BACKOFF_MIN_MS 200
#define BACKOFF_MAX_MS 5000
#define SENT_KEEP 1024 /* numbered frames kept after writing, to send again after a reconnect */
#define REGISTER_ANSWER_MS 15000 /* a connection whose RegisterPool gets no answer is dropped and retried */

typedef struct frame {
    struct frame *next;
    uint8_t *buf;
    size_t len;
    int droppable; /* progress, log lines, heartbeats: superseded by later ones */
    int64_t finishes;  /* a StageFinished: the attempt it ends */
    int64_t seq;       /* progress, log, checkpoint, stage end: their sequence number (0 = none) */
} frame;

typedef struct {
    uv_write_t req;
    frame *f;
} write_req;

struct rl_link {
    /* options (owned copies) */
    char *connect, *token, *name, *device, *host;
    int ranks, n_pids, register_timeout_ms;
    int32_t *pids;
    int64_t launch_id;
    size_t queue_max;

    /* loop thread only */
    uv_thread_t thread;
    uv_loop_t loop;
    uv_async_t wake;
    uv_timer_t hb_timer, retry_timer, flush_timer, answer_timer;
    union {
        uv_handle_t handle;
        uv_stream_t stream;
        uv_pipe_t pipe;
        uv_tcp_t tcp;
    } sock;
    int sock_state; /* 0 none, 1 open, 2 closing */
    uv_connect_t conn_req;
    uv_getaddrinfo_t gai_req;
    int gai_pending;
    rl_frame_reader reader;
    int backoff_ms, writes_pending, shutting_down;
    frame *sent_head, *sent_tail; /* the last SENT_KEEP numbered frames written, oldest first */
    size_t sent_len;
    int64_t last_warn_ms;
    char slab[65536];

    /* shared, under mu */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    frame *q_head, *q_tail, *retry_head, *retry_tail, *a_head, *a_tail;
    size_t q_len;
    uint64_t dropped;
    int state, stopping, stop_flush_ms, heartbeat_ms, ctl_bits, ever_registered;
    int64_t pool_id, attempt_id, step, lost_at_ms, failed_at_ms, seq;
    /* The attempt a re-registration names: the running one, or one that ended while the daemon was away
     * (its StageFinished still queued), so that the daemon re-attaches it and takes the result. */
    int64_t unreported;
    char fatal[1024], last_error[512];
};

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void frame_free(frame *f)
{
    if (f) {
        free(f->buf);
        free(f);
    }
}

static void list_free(frame *f)
{
    while (f) {
        frame *n = f->next;
        frame_free(f);
        f = n;
    }
}

static frame *frame_encode(const Radlads__Envelope *env)
{
    frame *f = calloc(1, sizeof *f);
    if (!f || rl_frame_encode(env, &f->buf, &f->len) < 0) {
        free(f);
        return NULL;
    }
    f->droppable = env->msg_case == RADLADS__ENVELOPE__MSG_PROGRESS || env->msg_case == RADLADS__ENVELOPE__MSG_LOG ||
                   env->msg_case == RADLADS__ENVELOPE__MSG_HEARTBEAT;
    if (env->msg_case == RADLADS__ENVELOPE__MSG_STAGE_FINISHED)
        f->finishes = env->stage_finished->attempt_id;
    return f;
}

static void append(frame **head, frame **tail, frame *f)
{
    f->next = NULL;
    if (*tail)
        (*tail)->next = f;
    else
        *head = f;
    *tail = f;
}

/* ---- loop thread: writing ---- */

static void lost(rl_link *l, const char *why);

/* Keeps a written progress/log frame (loop thread only) so a reconnect can send it again. */
static void keep_sent(rl_link *l, frame *f)
{
    append(&l->sent_head, &l->sent_tail, f);
    if (++l->sent_len > SENT_KEEP) {
        frame *old = l->sent_head;
        l->sent_head = old->next;
        frame_free(old);
        l->sent_len--;
    }
}

/* After a (re)registration: the kept frames the daemon does not have (seq > last_seq) go to the front of
 * `*head`; the rest are freed.  last_seq 0 = the daemon knows nothing of us (a new pool): none go again. */
static size_t resend_after(rl_link *l, int64_t last_seq, frame **head, frame **tail)
{
    frame *keep_h = NULL, *keep_t = NULL;
    size_t n = 0;
    for (frame *f = l->sent_head, *next; f; f = next) {
        next = f->next;
        if (last_seq > 0 && f->seq > last_seq) {
            append(&keep_h, &keep_t, f);
            n++;
        } else {
            frame_free(f);
        }
    }
    l->sent_head = l->sent_tail = NULL;
    l->sent_len = 0;
    if (keep_h) {
        keep_t->next = *head;
        if (!*tail)
            *tail = keep_t;
        *head = keep_h;
    }
    return n;
}

static void on_write(uv_write_t *req, int status)
{
    write_req *w = (write_req *)req;
    rl_link *l = req->data;
    l->writes_pending--;
    if (status < 0 && !w->f->droppable) {
        pthread_mutex_lock(&l->mu);
        append(&l->retry_head, &l->retry_tail, w->f); /* sent again after the next registration */
        pthread_mutex_unlock(&l->mu);
    } else {
        if (status >= 0 && w->f->finishes) {
            pthread_mutex_lock(&l->mu);
            if (l->unreported == w->f->finishes)
                l->unreported = 0;
            pthread_mutex_unlock(&l->mu);
        }
        if (w->f->seq)
            keep_sent(l, w->f); /* written is not received: kept until a reconnect says */
        else
            frame_free(w->f);
    }
    free(w);
    if (status < 0 && status != UV_ECANCELED) {
        char why[160];
        snprintf(why, sizeof why, "writing to radladsd: %s", uv_strerror(status));
        lost(l, why);
    }
    if (l->shutting_down && l->writes_pending == 0)
        uv_stop(&l->loop); /* the flush is done; the thread closes everything */
}

/* Writes f now (the socket is open).  Takes ownership of f. */
static void write_frame(rl_link *l, frame *f)
{
    write_req *w = calloc(1, sizeof *w);
    if (!w) {
        frame_free(f);
        return;
    }
    w->f = f;
    w->req.data = l;
    uv_buf_t b = uv_buf_init((char *)f->buf, (unsigned)f->len);
    int rc = uv_write(&w->req, &l->sock.stream, &b, 1, on_write);
    if (rc < 0) {
        if (!f->droppable) {
            pthread_mutex_lock(&l->mu);
            append(&l->retry_head, &l->retry_tail, f);
            pthread_mutex_unlock(&l->mu);
        } else if (f->seq) {
            keep_sent(l, f);
        } else {
            frame_free(f);
        }
        free(w);
        char why[160];
        snprintf(why, sizeof why, "writing to radladsd: %s", uv_strerror(rc));
        lost(l, why);
        return;
    }
    l->writes_pending++;
}

static void write_env(rl_link *l, const Radlads__Envelope *env)
{
    frame *f = frame_encode(env);
    if (f)
        write_frame(l, f);
}

/* Sends everything queued (registered only). */
static void flush(rl_link *l)
{
    for (;;) {
        pthread_mutex_lock(&l->mu);
        frame *f = l->state == L_REGISTERED ? l->q_head : NULL;
        if (f) {
            l->q_head = f->next;
            if (!l->q_head)
                l->q_tail = NULL;
            l->q_len--;
        }
        pthread_mutex_unlock(&l->mu);
        if (!f || l->sock_state != 1) {
            if (f) { /* the socket went away under us: put it back */
                pthread_mutex_lock(&l->mu);
                f->next = l->q_head;
                l->q_head = f;
                if (!l->q_tail)
                    l->q_tail = f;
                l->q_len++;
                pthread_mutex_unlock(&l->mu);
            }
            return;
        }
        write_frame(l, f);
    }
}

/* ---- loop thread: connecting ---- */

static void start_connect(rl_link *l);

static void on_retry(uv_timer_t *t)
{
    rl_link *l = t->data;
    if (l->sock_state == 0 && !l->shutting_down)
        start_connect(l);
    else if (!l->shutting_down)
        uv_timer_start(&l->retry_timer, on_retry, 50, 0); /* the old socket is still closing */
}

static void on_sock_closed(uv_handle_t *h)
{
    rl_link *l = h->data;
    l->sock_state = 0;
}

static void close_sock(rl_link *l)
{
    if (l->sock_state == 1) {
        l->sock_state = 2;
        uv_close(&l->sock.handle, on_sock_closed);
    }
}

static void lost(rl_link *l, const char *why)
{
    if (l->sock_state != 1 && l->state != L_CONNECTING)
        return; /* already handled */
    close_sock(l);
    uv_timer_stop(&l->hb_timer);
    uv_timer_stop(&l->answer_timer);
    pthread_mutex_lock(&l->mu);
    int was_registered = l->state == L_REGISTERED;
    if (l->state != L_FATAL) {
        l->state = L_DISCONNECTED;
        if (!l->lost_at_ms)
            l->lost_at_ms = mono_ms();
        l->failed_at_ms = mono_ms(); /* the loss itself, then every connection attempt that fails */
        snprintf(l->last_error, sizeof l->last_error, "%s", why);
    }
    int fatal = l->state == L_FATAL;
    pthread_mutex_unlock(&l->mu);
    pthread_cond_broadcast(&l->cv);
    if (fatal || l->shutting_down)
        return;
    int64_t now = mono_ms();
    if (was_registered || now - l->last_warn_ms > 30000) {
        fprintf(stderr, "radlads-worker: %s %s: %s; retrying (every %d ms at most %d ms apart) while training "
                "goes on\n", was_registered ? "lost the connection to radladsd at" : "cannot reach radladsd at",
                l->connect, why, BACKOFF_MIN_MS, BACKOFF_MAX_MS);
        l->last_warn_ms = now;
    }
    uv_timer_start(&l->retry_timer, on_retry, (uint64_t)l->backoff_ms, 0);
    l->backoff_ms = l->backoff_ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : l->backoff_ms * 2;
}

static void set_fatal(rl_link *l, const char *fmt, const char *detail)
{
    pthread_mutex_lock(&l->mu);
    l->state = L_FATAL;
    snprintf(l->fatal, sizeof l->fatal, fmt, detail);
    pthread_mutex_unlock(&l->mu);
    pthread_cond_broadcast(&l->cv);
    close_sock(l);
    uv_timer_stop(&l->hb_timer);
    uv_timer_stop(&l->retry_timer);
    uv_timer_stop(&l->answer_timer);
}

static void on_heartbeat(uv_timer_t *t)
{
    rl_link *l = t->data;
    Radlads__Heartbeat hb = RADLADS__HEARTBEAT__INIT;
    pthread_mutex_lock(&l->mu);
    int ok = l->state == L_REGISTERED;
    hb.attempt_id = l->attempt_id;
    hb.step = l->step;
    pthread_mutex_unlock(&l->mu);
    if (!ok || l->sock_state != 1)
        return;
    Radlads__Envelope env = RADLADS__ENVELOPE__INIT;
    env.msg_case = RADLADS__ENVELOPE__MSG_HEARTBEAT;
    env.heartbeat = &hb;
    write_env(l, &env);
}

static void handle(rl_link *l, Radlads__Envelope *e)
{
    switch (e->msg_case) {
    case RADLADS__ENVELOPE__MSG_HELLO_REPLY: break;
    case RADLADS__ENVELOPE__MSG_ERROR: {
        const char *msg = e->error->message && *e->error->message ? e->error->message : "(no message)";
        pthread_mutex_lock(&l->mu);
        int handshake = l->state != L_REGISTERED;
        pthread_mutex_unlock(&l->mu);
        int code = e->error->code;
        if (handshake && (code == RL_E_PERMISSION || code == RL_E_VERSION || code == RL_E_BAD_REQUEST)) {
            char detail[700];
            snprintf(detail, sizeof detail, "%s%s", msg, code == RL_E_PERMISSION ?
                     "; give this pool the daemon's token file with --token-file (it is STATE_DIR/token)" : "");
            set_fatal(l, "radladsd refused the pool: %s", detail);
        } else {
            fprintf(stderr, "radlads-worker: radladsd says: %s\n", msg);
        }
        break;
    }
    case RADLADS__ENVELOPE__MSG_POOL_REGISTERED: {
        pthread_mutex_lock(&l->mu);
        int again = l->ever_registered;
        int64_t down = l->lost_at_ms ? mono_ms() - l->lost_at_ms : 0;
        uint64_t dropped = l->dropped;
        l->pool_id = e->pool_registered->pool_id;
        l->heartbeat_ms = e->pool_registered->heartbeat_ms > 0 ? e->pool_registered->heartbeat_ms : 5000;
        l->state = L_REGISTERED;
        l->ever_registered = 1;
        l->lost_at_ms = 0;
        l->dropped = 0;
        if (l->retry_head) { /* frames whose write failed go first, in their order */
            l->retry_tail->next = l->q_head;
            if (!l->q_tail)
                l->q_tail = l->retry_tail;
            l->q_head = l->retry_head;
            l->retry_head = l->retry_tail = NULL;
        }
        /* ...after the numbered ones the old connection may have swallowed */
        size_t resent = resend_after(l, e->pool_registered->last_seq, &l->q_head, &l->q_tail);
        size_t n = 0;
        for (frame *f = l->q_head; f; f = f->next)
            n++;
        l->q_len = n;
        int hb = l->heartbeat_ms;
        pthread_mutex_unlock(&l->mu);
        pthread_cond_broadcast(&l->cv);
        l->backoff_ms = BACKOFF_MIN_MS;
        uv_timer_stop(&l->answer_timer);
        if (again)
            fprintf(stderr, "radlads-worker: registered again with radladsd as pool %lld after %.1f s without it"
                    "%s; %zu reports sent again\n", (long long)e->pool_registered->pool_id,
                    (double)down / 1000.0, dropped ? " (some progress and log lines were dropped meanwhile)" : "",
                    resent);
        uv_timer_start(&l->hb_timer, on_heartbeat, (uint64_t)hb, (uint64_t)hb);
        flush(l);
        break;
    }
    case RADLADS__ENVELOPE__MSG_ASSIGNMENT: {
        frame *f = calloc(1, sizeof *f);
        size_t n = radlads__stage_assignment__get_packed_size(e->assignment);
        uint8_t *buf = f ? malloc(n ? n : 1) : NULL;
        if (!buf) {
            free(f);
            fprintf(stderr, "radlads-worker: out of memory taking an assignment\n");
            break;
        }
        radlads__stage_assignment__pack(e->assignment, buf);
        f->buf = buf, f->len = n;
        pthread_mutex_lock(&l->mu);
        append(&l->a_head, &l->a_tail, f);
        l->attempt_id = e->assignment->attempt_id; /* controls for it may follow at once */
        l->unreported = l->attempt_id;
        l->step = 0;
        l->ctl_bits = 0;
        pthread_mutex_unlock(&l->mu);
        pthread_cond_broadcast(&l->cv);
        break;
    }
    case RADLADS__ENVELOPE__MSG_CONTROL: {
        int bit = e->control->kind == RADLADS__CONTROL_KIND__CONTROL_STOP ? RL_TRAIN_CTL_STOP :
                  e->control->kind == RADLADS__CONTROL_KIND__CONTROL_DRAIN ? RL_TRAIN_CTL_DRAIN :
                  e->control->kind == RADLADS__CONTROL_KIND__CONTROL_CHECKPOINT_NOW ? RL_TRAIN_CTL_CHECKPOINT : 0;
        pthread_mutex_lock(&l->mu);
        int mine = l->attempt_id && (!e->control->attempt_id || e->control->attempt_id == l->attempt_id);
        if (mine)
            l->ctl_bits |= bit;
        pthread_mutex_unlock(&l->mu);
        if (!mine)
            fprintf(stderr, "radlads-worker: ignoring a control request for attempt %lld (not running here)\n",
                    (long long)e->control->attempt_id);
        break;
    }
    default:
        fprintf(stderr, "radlads-worker: ignoring message %d from radladsd (not for a pool)\n", (int)e->msg_case);
    }
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    rl_link *l = h->data;
    (void)suggested;
    *buf = uv_buf_init(l->slab, sizeof l->slab);
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
    rl_link *l = s->data;
    if (n < 0) {
        lost(l, n == UV_EOF ? "radladsd closed the connection" : uv_strerror((int)n));
        return;
    }
    if (rl_frame_reader_feed(&l->reader, buf->base, (size_t)n) < 0) {
        lost(l, "out of memory reading from radladsd");
        return;
    }
    for (;;) {
        Radlads__Envelope *e = NULL;
        char ferr[256];
        int r = rl_frame_reader_next(&l->reader, &e, ferr, sizeof ferr);
        if (r < 0) {
            char why[300];
            snprintf(why, sizeof why, "bad frame from radladsd: %s", ferr);
            lost(l, why);
            return;
        }
        if (r == 0)
            return;
        handle(l, e);
        radlads__envelope__free_unpacked(e, NULL);
        if (l->sock_state != 1)
            return;
    }
}

static void on_no_answer(uv_timer_t *t)
{
    lost(t->data, "radladsd accepted the connection but did not answer RegisterPool");
}

static void on_connect(uv_connect_t *req, int status)
{
    rl_link *l = req->data;
    if (status < 0) {
        lost(l, uv_strerror(status));
        return;
    }
    if (l->shutting_down || l->sock_state != 1)
        return;
    rl_frame_reader_free(&l->reader);
    rl_frame_reader_init(&l->reader, 0);
    uv_read_start(&l->sock.stream, on_alloc, on_read);
    Radlads__Hello h = RADLADS__HELLO__INIT;
    h.protocol_version = RL_PROTOCOL_VERSION;
    h.role = RADLADS__ROLE__ROLE_POOL;
    h.token = l->token;
    h.client = "radlads-worker";
    Radlads__Envelope env = RADLADS__ENVELOPE__INIT;
    env.msg_case = RADLADS__ENVELOPE__MSG_HELLO;
    env.hello = &h;
    write_env(l, &env);
    Radlads__RegisterPool reg = RADLADS__REGISTER_POOL__INIT;
    reg.name = l->name;
    reg.ranks = l->ranks;
    reg.device = l->device;
    reg.host = l->host;
    reg.rank_pids = l->pids;
    reg.n_rank_pids = (size_t)l->n_pids;
    reg.launch_id = l->launch_id;
    pthread_mutex_lock(&l->mu);
    reg.pool_id = l->ever_registered ? l->pool_id : 0;
    reg.attempt_id = !l->ever_registered ? 0 : l->attempt_id ? l->attempt_id : l->unreported;
    pthread_mutex_unlock(&l->mu);
    Radlads__Envelope renv = RADLADS__ENVELOPE__INIT;
    renv.msg_case = RADLADS__ENVELOPE__MSG_REGISTER_POOL;
    renv.register_pool = &reg;
    write_env(l, &renv);
    uv_timer_start(&l->answer_timer, on_no_answer, REGISTER_ANSWER_MS, 0);
}

static void on_resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
    rl_link *l = req->data;
    l->gai_pending = 0;
    if (status < 0 || l->shutting_down) {
        if (res)
            uv_freeaddrinfo(res);
        if (status == UV_ECANCELED || l->shutting_down)
            return;
        char why[200];
        snprintf(why, sizeof why, "cannot resolve the daemon's host: %s", uv_strerror(status));
        lost(l, why);
        return;
    }
    uv_tcp_init(&l->loop, &l->sock.tcp);
    l->sock.handle.data = l;
    l->sock_state = 1;
    l->conn_req.data = l;
    int rc = uv_tcp_connect(&l->conn_req, &l->sock.tcp, res->ai_addr, on_connect);
    uv_freeaddrinfo(res);
    if (rc < 0)
        lost(l, uv_strerror(rc));
}

/* "unix:PATH", "/PATH" or "tcp:HOST:PORT" ("tcp:[::1]:PORT" for IPv6). */
static int parse_connect(const char *s, int *is_tcp, char *host, size_t hostlen, char *port, size_t portlen)
{
    if (!strncmp(s, "unix:", 5) || s[0] == '/') {
        *is_tcp = 0;
        snprintf(host, hostlen, "%s", s[0] == '/' ? s : s + 5);
        return host[0] ? 0 : -1;
    }
    if (strncmp(s, "tcp:", 4))
        return -1;
    *is_tcp = 1;
    const char *h = s + 4, *colon;
    if (*h == '[') {
        const char *close = strchr(h, ']');
        if (!close || close[1] != ':')
            return -1;
        snprintf(host, hostlen, "%.*s", (int)(close - h - 1), h + 1);
        colon = close + 1;
    } else {
        colon = strrchr(h, ':');
        if (!colon)
            return -1;
        snprintf(host, hostlen, "%.*s", (int)(colon - h), h);
    }
    snprintf(port, portlen, "%s", colon + 1);
    return host[0] && port[0] ? 0 : -1;
}

static void start_connect(rl_link *l)
{
    char host[4096], port[32] = "";
    int is_tcp = 0;
    parse_connect(l->connect, &is_tcp, host, sizeof host, port, sizeof port); /* checked in rl_link_start */
    pthread_mutex_lock(&l->mu);
    if (l->state != L_FATAL)
        l->state = L_CONNECTING;
    pthread_mutex_unlock(&l->mu);
    if (is_tcp) {
        struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
        l->gai_req.data = l;
        int rc = uv_getaddrinfo(&l->loop, &l->gai_req, on_resolved, host, port, &hints);
        if (rc < 0)
            lost(l, uv_strerror(rc));
        else
            l->gai_pending = 1;
        return;
    }
    uv_pipe_init(&l->loop, &l->sock.pipe, 0);
    l->sock.handle.data = l;
    l->sock_state = 1;
    l->conn_req.data = l;
    uv_pipe_connect(&l->conn_req, &l->sock.pipe, host, on_connect);
}

/* ---- loop thread: wake-ups and shutdown ---- */

static void on_flush_timeout(uv_timer_t *t)
{
    rl_link *l = t->data;
    uv_stop(&l->loop);
}

static void on_wake(uv_async_t *a)
{
    rl_link *l = a->data;
    pthread_mutex_lock(&l->mu);
    int stopping = l->stopping, flush_ms = l->stop_flush_ms;
    pthread_mutex_unlock(&l->mu);
    flush(l);
    if (stopping && !l->shutting_down) {
        l->shutting_down = 1;
        uv_timer_stop(&l->retry_timer);
        uv_timer_stop(&l->hb_timer);
        uv_timer_stop(&l->answer_timer);
        if (l->writes_pending == 0)
            uv_stop(&l->loop);
        else
            uv_timer_start(&l->flush_timer, on_flush_timeout, (uint64_t)(flush_ms > 0 ? flush_ms : 1), 0);
    }
}

static void close_walk(uv_handle_t *h, void *arg)
{
    (void)arg;
    if (!uv_is_closing(h))
        uv_close(h, NULL);
}

static void link_thread(void *arg)
{
    rl_link *l = arg;
    start_connect(l);
    uv_run(&l->loop, UV_RUN_DEFAULT);
    /* stopped: close every handle (the socket's pending writes are cancelled and freed) */
    if (l->gai_pending)
        uv_cancel((uv_req_t *)&l->gai_req);
    uv_walk(&l->loop, close_walk, NULL);
    uv_run(&l->loop, UV_RUN_DEFAULT);
}

/* ---- training thread ---- */

static char *dup_or_empty(const char *s)
{
    return strdup(s ? s : "");
}

static void link_free(rl_link *l)
{
    free(l->connect), free(l->token), free(l->name), free(l->device), free(l->host), free(l->pids);
    list_free(l->q_head), list_free(l->retry_head), list_free(l->a_head), list_free(l->sent_head);
    rl_frame_reader_free(&l->reader);
    pthread_mutex_destroy(&l->mu);
    pthread_cond_destroy(&l->cv);
    free(l);
}

int rl_link_start(rl_link **out, const rl_link_opts *o, char *err, size_t errlen)
{
    *out = NULL;
    char host[4096], port[32];
    int is_tcp;
    if (!o->connect || parse_connect(o->connect, &is_tcp, host, sizeof host, port, sizeof port) < 0) {
        snprintf(err, errlen, "--connect \"%s\": expected unix:PATH or tcp:HOST:PORT", o->connect ? o->connect : "");
        return -1;
    }
    rl_link *l = calloc(1, sizeof *l);
    if (!l) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    l->connect = dup_or_empty(o->connect), l->token = dup_or_empty(o->token), l->name = dup_or_empty(o->name);
    l->device = dup_or_empty(o->device && *o->device ? o->device : "cpu"), l->host = dup_or_empty(o->host);
    l->ranks = o->ranks, l->launch_id = o->launch_id, l->n_pids = o->n_rank_pids;
    l->pids = calloc((size_t)o->n_rank_pids + 1, sizeof *l->pids);
    if (l->pids && o->n_rank_pids)
        memcpy(l->pids, o->rank_pids, sizeof *l->pids * (size_t)o->n_rank_pids);
    l->queue_max = o->queue_max ? o->queue_max : 4096;
    l->register_timeout_ms = o->register_timeout_ms > 0 ? o->register_timeout_ms : 60000;
    l->backoff_ms = BACKOFF_MIN_MS;
    rl_frame_reader_init(&l->reader, 0);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&l->cv, &ca);
    pthread_condattr_destroy(&ca);
    pthread_mutex_init(&l->mu, NULL);
    if (!l->connect || !l->token || !l->name || !l->device || !l->host || !l->pids || uv_loop_init(&l->loop) < 0) {
        snprintf(err, errlen, "out of memory starting the daemon link");
        link_free(l);
        return -1;
    }
    uv_async_init(&l->loop, &l->wake, on_wake);
    l->wake.data = l;
    uv_timer_init(&l->loop, &l->hb_timer);
    uv_timer_init(&l->loop, &l->retry_timer);
    uv_timer_init(&l->loop, &l->flush_timer);
    uv_timer_init(&l->loop, &l->answer_timer);
    l->hb_timer.data = l->retry_timer.data = l->flush_timer.data = l->answer_timer.data = l;
    if (uv_thread_create(&l->thread, link_thread, l) < 0) {
        snprintf(err, errlen, "cannot start the daemon link thread");
        uv_walk(&l->loop, close_walk, NULL);
        uv_run(&l->loop, UV_RUN_DEFAULT);
        uv_loop_close(&l->loop);
        link_free(l);
        return -1;
    }
    /* Wait for the first registration (or a refusal, or the timeout). */
    struct timespec until;
    clock_gettime(CLOCK_MONOTONIC, &until);
    until.tv_sec += l->register_timeout_ms / 1000;
    until.tv_nsec += (long)(l->register_timeout_ms % 1000) * 1000000L;
    if (until.tv_nsec >= 1000000000L)
        until.tv_sec++, until.tv_nsec -= 1000000000L;
    pthread_mutex_lock(&l->mu);
    int rc = 0;
    while (l->state != L_REGISTERED && l->state != L_FATAL && rc != ETIMEDOUT)
        rc = pthread_cond_timedwait(&l->cv, &l->mu, &until);
    int state = l->state;
    if (state == L_FATAL)
        snprintf(err, errlen, "%s", l->fatal);
    else if (state != L_REGISTERED)
        snprintf(err, errlen, "could not register with radladsd at %s within %d s: %s", l->connect,
                 l->register_timeout_ms / 1000, l->last_error[0] ? l->last_error : "no answer");
    pthread_mutex_unlock(&l->mu);
    if (state != L_REGISTERED) {
        rl_link_stop(l, 0);
        return -1;
    }
    *out = l;
    return 0;
}

void rl_link_stop(rl_link *l, int flush_ms)
{
    if (!l)
        return;
    pthread_mutex_lock(&l->mu);
    l->stopping = 1;
    l->stop_flush_ms = flush_ms;
    pthread_mutex_unlock(&l->mu);
    uv_async_send(&l->wake);
    uv_thread_join(&l->thread);
    uv_loop_close(&l->loop);
    link_free(l);
}

int64_t rl_link_pool_id(rl_link *l)
{
    pthread_mutex_lock(&l->mu);
    int64_t id = l->pool_id;
    pthread_mutex_unlock(&l->mu);
    return id;
}

void rl_link_send(rl_link *l, const Radlads__Envelope *env)
{
    /* progress and log lines are numbered in queue order: number and append under one lock */
    Radlads__Envelope copy = *env;
    Radlads__Progress pr;
    Radlads__LogLine lg;
    Radlads__CheckpointSaved cs;
    Radlads__StageFinished sf;
    int numbered = env->msg_case == RADLADS__ENVELOPE__MSG_PROGRESS || env->msg_case == RADLADS__ENVELOPE__MSG_LOG ||
                   env->msg_case == RADLADS__ENVELOPE__MSG_CHECKPOINT_SAVED ||
                   env->msg_case == RADLADS__ENVELOPE__MSG_STAGE_FINISHED;
    pthread_mutex_lock(&l->mu);
    int64_t seq = numbered ? ++l->seq : 0;
    if (env->msg_case == RADLADS__ENVELOPE__MSG_PROGRESS) {
        pr = *env->progress;
        pr.seq = seq;
        copy.progress = &pr;
    } else if (env->msg_case == RADLADS__ENVELOPE__MSG_LOG) {
        lg = *env->log;
        lg.seq = seq;
        copy.log = &lg;
    } else if (env->msg_case == RADLADS__ENVELOPE__MSG_CHECKPOINT_SAVED) {
        cs = *env->checkpoint_saved;
        cs.seq = seq;
        copy.checkpoint_saved = &cs;
    } else if (env->msg_case == RADLADS__ENVELOPE__MSG_STAGE_FINISHED) {
        sf = *env->stage_finished;
        sf.seq = seq;
        copy.stage_finished = &sf;
    }
    frame *f = frame_encode(&copy);
    if (!f) {
        pthread_mutex_unlock(&l->mu);
        return;
    }
    f->seq = seq;
    if (l->q_len >= l->queue_max) { /* full: drop the oldest droppable frame */
        frame *prev = NULL;
        for (frame *x = l->q_head; x; prev = x, x = x->next)
            if (x->droppable) {
                if (prev)
                    prev->next = x->next;
                else
                    l->q_head = x->next;
                if (l->q_tail == x)
                    l->q_tail = prev;
                frame_free(x);
                l->q_len--;
                l->dropped++;
                break;
            }
    }
    if (l->q_len >= l->queue_max && f->droppable) {
        frame_free(f);
        l->dropped++;
    } else {
        append(&l->q_head, &l->q_tail, f);
        l->q_len++;
    }
    pthread_mutex_unlock(&l->mu);
    uv_async_send(&l->wake);
}

int rl_link_next_assignment(rl_link *l, uint8_t **buf, size_t *len, int timeout_ms)
{
    struct timespec until;
    clock_gettime(CLOCK_MONOTONIC, &until);
    until.tv_sec += timeout_ms / 1000;
    until.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
    if (until.tv_nsec >= 1000000000L)
        until.tv_sec++, until.tv_nsec -= 1000000000L;
    pthread_mutex_lock(&l->mu);
    int rc = 0;
    while (!l->a_head && l->state != L_FATAL && rc != ETIMEDOUT)
        rc = pthread_cond_timedwait(&l->cv, &l->mu, &until);
    frame *f = l->a_head;
    if (f) {
        l->a_head = f->next;
        if (!l->a_head)
            l->a_tail = NULL;
    }
    pthread_mutex_unlock(&l->mu);
    if (!f)
        return 0;
    *buf = f->buf, *len = f->len;
    free(f);
    return 1;
}

void rl_link_end_attempt(rl_link *l)
{
    pthread_mutex_lock(&l->mu);
    l->attempt_id = 0;
    l->step = 0;
    l->ctl_bits = 0;
    pthread_mutex_unlock(&l->mu);
}

void rl_link_set_step(rl_link *l, int64_t step)
{
    pthread_mutex_lock(&l->mu);
    l->step = step;
    pthread_mutex_unlock(&l->mu);
}

int rl_link_take_control(rl_link *l)
{
    pthread_mutex_lock(&l->mu);
    int bits = l->ctl_bits;
    l->ctl_bits = 0;
    pthread_mutex_unlock(&l->mu);
    return bits;
}

int64_t rl_link_disconnected_ms(rl_link *l, char *err, size_t errlen)
{
    pthread_mutex_lock(&l->mu);
    int64_t r = l->state == L_FATAL ? -1 : !l->lost_at_ms ? 0 : 1 + l->failed_at_ms - l->lost_at_ms;
    if (r < 0)
        snprintf(err, errlen, "%s", l->fatal);
    else if (r > 0)
        snprintf(err, errlen, "%s", l->last_error);
    pthread_mutex_unlock(&l->mu);
    return r;
}
