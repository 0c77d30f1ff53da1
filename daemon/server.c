/* Sockets and connections: the Unix socket for the CLI and for pools, framing, the Hello handshake,
 * dispatch, and the fan-out of new events to followers.  A bad frame closes only its own connection. */
#include "daemon.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#define MAX_CLI_FRAME (4u << 20)      /* requests are small; a 4 GiB length is refused at once */
#define MAX_WRITE_QUEUE (256u << 20)  /* a client that stops reading is dropped, not buffered forever */

typedef struct write_req {
    uv_write_t req;
    uv_buf_t buf;
} write_req;

static void on_write(uv_write_t *req, int status)
{
    write_req *w = (write_req *)req;
    (void)status; /* a failed write shows up as a read error / EOF on the same connection */
    free(w->buf.base);
    free(w);
}

void conn_send(conn *c, const Radlads__Envelope *env)
{
    if (!c || c->closing) return;
    uint8_t *buf;
    size_t len;
    if (rl_frame_encode(env, &buf, &len) < 0) {
        conn_close(c, "out of memory encoding a reply");
        return;
    }
    if (uv_stream_get_write_queue_size(&c->h.stream) > MAX_WRITE_QUEUE) {
        free(buf);
        conn_close(c, "client is not reading its replies (write queue over 256 MiB)");
        return;
    }
    write_req *w = malloc(sizeof *w);
    if (!w) {
        free(buf);
        conn_close(c, "out of memory");
        return;
    }
    w->buf = uv_buf_init((char *)buf, (unsigned)len);
    int rc = uv_write(&w->req, &c->h.stream, &w->buf, 1, on_write);
    if (rc < 0) {
        free(buf);
        free(w);
        conn_close(c, uv_strerror(rc));
    }
}

void conn_send_error(conn *c, int code, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    Radlads__Envelope env = RADLADS__ENVELOPE__INIT;
    Radlads__Error e = RADLADS__ERROR__INIT;
    e.code = code;
    e.message = msg;
    env.msg_case = RADLADS__ENVELOPE__MSG_ERROR;
    env.error = &e;
    conn_send(c, &env);
}

static void on_close(uv_handle_t *h)
{
    conn *c = h->data;
    rl_frame_reader_free(&c->reader);
    free(c);
}

void conn_close(conn *c, const char *reason)
{
    if (c->closing) return;
    c->closing = 1;
    rl_daemon *d = g_daemon;
    if (reason && *reason) log_info("conn uid=%u pid=%d: closed: %s", (unsigned)c->uid, (int)c->pid, reason);
    for (conn **p = &d->conns; *p; p = &(*p)->next)
        if (*p == c) {
            *p = c->next;
            break;
        }
    d->n_conns--;
    if (c->pool) pools_conn_lost(d, c);
    jobs_drop_conn(d, c);
    uv_close(&c->h.handle, on_close);
}

static int token_equal(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    unsigned diff = (unsigned)(la ^ lb);
    for (size_t i = 0; i < la && i < lb; i++) diff |= (unsigned char)(a[i] ^ b[i]);
    return diff == 0 && la > 0;
}

static void handle_hello(rl_daemon *d, conn *c, Radlads__Hello *h)
{
    if (h->protocol_version != RL_PROTOCOL_VERSION) {
        conn_send_error(c, RL_E_VERSION,
                        "protocol version %u is not supported by radladsd %s (speaks %u): use a matching radlads",
                        h->protocol_version, RL_VERSION, RL_PROTOCOL_VERSION);
        conn_close(c, "wrong protocol version");
        return;
    }
    if (h->role != RADLADS__ROLE__ROLE_CLI && h->role != RADLADS__ROLE__ROLE_POOL) {
        conn_send_error(c, RL_E_BAD_REQUEST, "unknown role %d", h->role);
        conn_close(c, "unknown role");
        return;
    }
    if (h->role == RADLADS__ROLE__ROLE_POOL && !token_equal(h->token ? h->token : "", d->token)) {
        conn_send_error(c, RL_E_PERMISSION, "pool token rejected (see %s)", d->token_path);
        conn_close(c, "bad pool token");
        return;
    }
    c->role = h->role;
    c->hello_done = 1;
    Radlads__Envelope env = RADLADS__ENVELOPE__INIT;
    Radlads__HelloReply r = RADLADS__HELLO_REPLY__INIT;
    r.protocol_version = RL_PROTOCOL_VERSION;
    r.daemon_version = RL_VERSION;
    r.uid = c->uid;
    r.admin = c->uid == 0;
    env.msg_case = RADLADS__ENVELOPE__MSG_HELLO_REPLY;
    env.hello_reply = &r;
    conn_send(c, &env);
}

static void dispatch_cli(rl_daemon *d, conn *c, Radlads__Envelope *env);

static void dispatch(rl_daemon *d, conn *c, Radlads__Envelope *env)
{
    if (!c->hello_done) {
        if (env->msg_case != RADLADS__ENVELOPE__MSG_HELLO) {
            conn_send_error(c, RL_E_BAD_REQUEST, "the first message must be Hello");
            conn_close(c, "no Hello");
            return;
        }
        handle_hello(d, c, env->hello);
        return;
    }
    int role = c->role == RADLADS__ROLE__ROLE_POOL;
    uint64_t start = uv_hrtime();
    if (role) {
        pools_handle(d, c, env);
    } else if (c->over_tcp) { /* no SO_PEERCRED over TCP: the CLI must use the Unix socket */
        conn_send_error(c, RL_E_PERMISSION, "CLI requests are only served on the Unix socket");
        conn_close(c, "CLI request over TCP");
        return;
    } else {
        dispatch_cli(d, c, env);
    }
    /* Counted after the handler: `c` may be closed, but the daemon outlives it. */
    d->stats.socket_requests[role]++;
    rl_histogram_observe(&d->stats.socket_duration[role], (double)(uv_hrtime() - start) / 1e9);
}

static void dispatch_cli(rl_daemon *d, conn *c, Radlads__Envelope *env)
{
    switch (env->msg_case) {
    case RADLADS__ENVELOPE__MSG_SUBMIT: jobs_handle_submit(d, c, env->submit); break;
    case RADLADS__ENVELOPE__MSG_STATUS: jobs_handle_status(d, c, env->status); break;
    case RADLADS__ENVELOPE__MSG_SHOW: jobs_handle_show(d, c, env->show); break;
    case RADLADS__ENVELOPE__MSG_ACTION: jobs_handle_action(d, c, env->action); break;
    case RADLADS__ENVELOPE__MSG_EVENTS: jobs_handle_events(d, c, env->events); break;
    case RADLADS__ENVELOPE__MSG_WAIT: jobs_handle_wait(d, c, env->wait); break;
    case RADLADS__ENVELOPE__MSG_DAEMON_STATUS: jobs_handle_daemon_status(d, c); break;
    case RADLADS__ENVELOPE__MSG_POOLS: pools_handle_list(d, c); break;
    case RADLADS__ENVELOPE__MSG_LOGS: jobs_handle_logs(d, c, env->logs); break;
    default:
        conn_send_error(c, RL_E_BAD_REQUEST, "message %d is not a CLI request", env->msg_case);
        conn_close(c, "unexpected message");
    }
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    static char slab[65536]; /* one loop thread: reads are consumed before the next alloc */
    (void)h;
    (void)suggested;
    *buf = uv_buf_init(slab, sizeof slab);
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
    conn *c = s->data;
    rl_daemon *d = g_daemon;
    if (n < 0) {
        size_t pending = rl_frame_reader_pending(&c->reader);
        char why[128];
        if (n == UV_EOF && pending)
            snprintf(why, sizeof why, "truncated frame: peer closed with %zu bytes of an unfinished frame", pending);
        else
            snprintf(why, sizeof why, "%s", n == UV_EOF ? "" : uv_strerror((int)n));
        conn_close(c, why);
        return;
    }
    if (n == 0 || c->closing) return;
    if (rl_frame_reader_feed(&c->reader, buf->base, (size_t)n) < 0) {
        conn_close(c, "out of memory buffering a frame");
        return;
    }
    for (;;) {
        Radlads__Envelope *env = NULL;
        char err[256];
        int r = rl_frame_reader_next(&c->reader, &env, err, sizeof err);
        if (r == 0) break;
        if (r < 0) {
            conn_send_error(c, RL_E_BAD_REQUEST, "%s", err);
            conn_close(c, err);
            return;
        }
        dispatch(d, c, env);
        radlads__envelope__free_unpacked(env, NULL);
        if (c->closing) return;
    }
}

static void on_connection(uv_stream_t *server, int status)
{
    rl_daemon *d = g_daemon;
    if (status < 0) {
        log_warn("accept: %s", uv_strerror(status));
        return;
    }
    conn *c = calloc(1, sizeof *c);
    if (!c) return;
    uv_pipe_init(d->loop, &c->h.pipe, 0);
    c->h.pipe.data = c;
    if (uv_accept(server, &c->h.stream) < 0) {
        uv_close(&c->h.handle, on_close);
        return;
    }
    rl_frame_reader_init(&c->reader, MAX_CLI_FRAME);
    /* Identity from the kernel, not from anything the client says. */
    uv_os_fd_t fd;
    struct ucred cred;
    socklen_t len = sizeof cred;
    if (uv_fileno(&c->h.handle, &fd) < 0 || getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0) {
        log_warn("SO_PEERCRED failed: %s; refusing the connection", strerror(errno));
        uv_close(&c->h.handle, on_close);
        return;
    }
    c->uid = cred.uid;
    c->gid = cred.gid;
    c->pid = cred.pid;
    c->next = d->conns;
    d->conns = c;
    d->n_conns++;
    uv_read_start(&c->h.stream, on_alloc, on_read);
}

/* Pools on other hosts connect over TCP; they have no kernel-vouched identity, so only ROLE_POOL with the
 * daemon's token is accepted there (handle_hello checks the token, dispatch refuses CLI requests). */
static void on_tcp_connection(uv_stream_t *server, int status)
{
    rl_daemon *d = g_daemon;
    if (status < 0) {
        log_warn("accept (tcp): %s", uv_strerror(status));
        return;
    }
    conn *c = calloc(1, sizeof *c);
    if (!c) return;
    uv_tcp_init(d->loop, &c->h.tcp);
    c->h.tcp.data = c;
    c->over_tcp = 1;
    if (uv_accept(server, &c->h.stream) < 0) {
        uv_close(&c->h.handle, on_close);
        return;
    }
    uv_tcp_nodelay(&c->h.tcp, 1);
    uv_tcp_keepalive(&c->h.tcp, 1, 30);
    rl_frame_reader_init(&c->reader, MAX_CLI_FRAME);
    c->uid = (uid_t)-1;
    c->gid = (gid_t)-1;
    c->next = d->conns;
    d->conns = c;
    d->n_conns++;
    uv_read_start(&c->h.stream, on_alloc, on_read);
}

/* addr_file: DIR/worker.addr, written once we listen */
static int listen_tcp(rl_daemon *d, const char *addr_file, char *err, size_t errlen)
{
    const char *spec = d->worker_listen;
    if (strncmp(spec, "tcp:", 4)) return rl_errf(err, errlen, "--worker-listen %s: expected tcp:HOST:PORT", spec);
    char host[256];
    snprintf(host, sizeof host, "%s", spec + 4);
    char *colon = strrchr(host, ':');
    char *end;
    long port = colon ? strtol(colon + 1, &end, 10) : -1;
    if (!colon || *end || port < 0 || port > 65535)
        return rl_errf(err, errlen, "--worker-listen %s: expected tcp:HOST:PORT", spec);
    *colon = 0;
    struct sockaddr_storage ss;
    int rc = host[0] == '[' ? (host[strlen(host) - 1] = 0, uv_ip6_addr(host + 1, (int)port, (struct sockaddr_in6 *)&ss))
                            : uv_ip4_addr(host, (int)port, (struct sockaddr_in *)&ss);
    if (rc < 0) return rl_errf(err, errlen, "--worker-listen %s: not an IP address: %s", spec, uv_strerror(rc));
    uv_tcp_init(d->loop, &d->tcp_listener);
    rc = uv_tcp_bind(&d->tcp_listener, (struct sockaddr *)&ss, 0);
    if (rc == 0) rc = uv_listen((uv_stream_t *)&d->tcp_listener, 128, on_tcp_connection);
    if (rc < 0) {
        uv_close((uv_handle_t *)&d->tcp_listener, NULL);
        return rl_errf(err, errlen, "--worker-listen %s: %s", spec, uv_strerror(rc));
    }
    struct sockaddr_storage got;
    int len = sizeof got;
    char ip[64] = "?";
    if (uv_tcp_getsockname(&d->tcp_listener, (struct sockaddr *)&got, &len) == 0) {
        int p = 0;
        if (got.ss_family == AF_INET6) {
            uv_ip6_name((struct sockaddr_in6 *)&got, ip, sizeof ip);
            p = ntohs(((struct sockaddr_in6 *)&got)->sin6_port);
        } else {
            uv_ip4_name((struct sockaddr_in *)&got, ip, sizeof ip);
            p = ntohs(((struct sockaddr_in *)&got)->sin_port);
        }
        if (!strcmp(ip, "0.0.0.0") || !strcmp(ip, "::")) { /* any address: tell pools our host name */
            char hn[64];
            if (gethostname(hn, sizeof hn) == 0) {
                hn[sizeof hn - 1] = 0;
                memcpy(ip, hn, sizeof hn);
            }
        }
        snprintf(d->worker_addr, sizeof d->worker_addr, "tcp:%s:%d", ip, p);
        char line[400];
        snprintf(line, sizeof line, "%s\n", d->worker_addr);
        if (state_file_write(addr_file, line, strlen(line), 0644, err, errlen) < 0) return -1;
        log_info("pools may connect over TCP at tcp:%s:%d (token in %s)", ip, p, d->token_path);
    }
    return 0;
}

int state_file_write(const char *path, const void *data, size_t n, mode_t mode, char *err, size_t errlen)
{
    char tmp[PATH_MAX];
    if (snprintf(tmp, sizeof tmp, "%s.tmp", path) >= (int)sizeof tmp)
        return rl_errf(err, errlen, "cannot write %s: path too long", path);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
    if (fd < 0) return rl_errf(err, errlen, "cannot write %s: %s", tmp, strerror(errno));
    errno = 0; /* a short write sets none */
    int ok = write(fd, data, n) == (ssize_t)n && fsync(fd) == 0;
    int saved = errno;
    close(fd);
    if (!ok || rename(tmp, path) < 0) {
        if (ok) saved = errno;
        unlink(tmp);
        return rl_errf(err, errlen, "cannot write %s: %s", path, saved ? strerror(saved) : "short write");
    }
    return 0;
}

int server_listen_workers(rl_daemon *d, char *err, size_t errlen)
{
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/worker.addr", d->state_dir);
    unlink(path); /* a previous daemon's address; rewritten below if pools may connect over TCP */
    return d->worker_listen ? listen_tcp(d, path, err, errlen) : 0;
}

int server_listen(rl_daemon *d, char *err, size_t errlen)
{
    /* We hold the database lock, so a socket file left here belongs to a dead daemon. */
    unlink(d->socket_path);
    int rc = uv_pipe_init(d->loop, &d->listener, 0);
    if (rc < 0) return rl_errf(err, errlen, "uv_pipe_init: %s", uv_strerror(rc));
    gid_t gid = (gid_t)-1;
    if (d->group) {
        struct group *g = getgrnam(d->group);
        if (!g) return rl_errf(err, errlen, "--group %s: no such group", d->group);
        gid = g->gr_gid;
    }
    /* Create the socket with its final mode: no window where it is wider than asked. */
    mode_t old = umask(d->group ? 0117 : 0177);
    rc = uv_pipe_bind(&d->listener, d->socket_path);
    umask(old);
    if (rc < 0) return rl_errf(err, errlen, "cannot bind %s: %s", d->socket_path, uv_strerror(rc));
    if (d->group && (chown(d->socket_path, (uid_t)-1, gid) < 0 || chmod(d->socket_path, 0660) < 0))
        return rl_errf(err, errlen, "cannot give %s to group %s: %s", d->socket_path, d->group, strerror(errno));
    rc = uv_listen((uv_stream_t *)&d->listener, 512, on_connection);
    if (rc < 0) return rl_errf(err, errlen, "listen on %s: %s", d->socket_path, uv_strerror(rc));
    return 0;
}

void server_close_all(rl_daemon *d)
{
    while (d->conns) conn_close(d->conns, "daemon shutting down");
    if (!uv_is_closing((uv_handle_t *)&d->listener)) uv_close((uv_handle_t *)&d->listener, NULL);
    if (d->worker_listen && !uv_is_closing((uv_handle_t *)&d->tcp_listener)) uv_close((uv_handle_t *)&d->tcp_listener, NULL);
    unlink(d->socket_path);
}

static const char events_sql[] = "SELECT id, job_id, time, kind, from_state, to_state, reason, stage_idx "
                                 "FROM events WHERE id > ?1 AND (?2 = 0 OR job_id = ?2) ORDER BY id LIMIT 2000";

int server_send_events(rl_daemon *d, conn *c, int64_t after, int follow)
{
    int ended = 0;
    for (;;) {
        sqlite3_stmt *st = store_stmt(d->db, events_sql);
        if (!st) return 0;
        sqlite3_bind_int64(st, 1, after);
        sqlite3_bind_int64(st, 2, c->follow_job);
        Radlads__Event *evs = calloc(2000, sizeof *evs);
        Radlads__Event **ptrs = calloc(2000, sizeof *ptrs);
        char **strs = calloc(2000 * 4, sizeof *strs);
        size_t n = 0;
        while (evs && ptrs && strs && sqlite3_step(st) == SQLITE_ROW) {
            Radlads__Event *e = &evs[n];
            radlads__event__init(e);
            e->id = sqlite3_column_int64(st, 0);
            e->job_id = sqlite3_column_int64(st, 1);
            e->time_ms = sqlite3_column_int64(st, 2);
            for (int k = 0; k < 4; k++) {
                const unsigned char *t = sqlite3_column_text(st, 3 + k);
                strs[n * 4 + k] = strdup(t ? (const char *)t : "");
            }
            e->kind = strs[n * 4];
            e->from_state = strs[n * 4 + 1];
            e->to_state = strs[n * 4 + 2];
            e->reason = strs[n * 4 + 3];
            e->stage_idx = sqlite3_column_type(st, 7) == SQLITE_NULL ? -1 : sqlite3_column_int(st, 7);
            if (c->follow_job && !strcmp(e->kind, "job") && job_state_terminal(e->to_state)) ended = 1;
            after = e->id;
            ptrs[n] = e;
            n++;
        }
        sqlite3_reset(st);
        Radlads__Envelope env = RADLADS__ENVELOPE__INIT;
        Radlads__EventBatch b = RADLADS__EVENT_BATCH__INIT;
        b.n_events = n;
        b.events = ptrs;
        b.end = (n < 2000) && (!follow || ended);
        env.msg_case = RADLADS__ENVELOPE__MSG_EVENT_BATCH;
        env.event_batch = &b;
        if (n > 0 || b.end || !follow) conn_send(c, &env);
        for (size_t i = 0; strs && i < n * 4; i++) free(strs[i]);
        free(strs);
        free(ptrs);
        free(evs);
        c->follow_after = after;
        if (n < 2000) break;
    }
    return ended;
}

void server_after_commit(rl_daemon *d)
{
    for (conn *c = d->conns, *next; c; c = next) {
        next = c->next;
        if (!c->follow || c->closing) continue;
        if (server_send_events(d, c, c->follow_after, 1)) c->follow = 0;
    }
    sse_fanout(d);
    jobs_check_waiters(d);
}
