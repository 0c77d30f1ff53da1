/* The HTTP server on the daemon's loop: a TCP listener (127.0.0.1 by default), keep-alive connections,
 * pipelined requests answered in order, and the limits that keep one client from hurting the others:
 * a connection cap, a deadline for every request and idle connection (swept once a second), a cap on
 * unread response bytes, and size limits in the parser.  Nothing here blocks: a client that stalls
 * mid-request only holds its own small buffers until its deadline. */
#include "daemon.h"

#include <arpa/inet.h>
#include "http.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define HTTP_DEFAULT_LISTEN "127.0.0.1:8425"
#define HTTP_LINGER_MS 2000                 /* after answering "close": drain input this long, then close */
#define HTTP_PAUSE_READ_BYTES (1u << 20)    /* stop reading pipelined requests while this much is unsent */
#define HTTP_MAX_UNSENT_BYTES (64u << 20)   /* a client that reads nothing is dropped beyond this */
#define HTTP_MAX_UNSENT_STREAM (8u << 20)   /* ...and an event stream sooner */

typedef struct http_server {
    rl_daemon *d;
    uv_tcp_t listener;
    uv_timer_t sweep;        /* deadlines */
    uv_timer_t heartbeat;    /* SSE comments */
    http_conn *conns;
    int n_conns;
    int handles_open;        /* the struct is freed when the last of its handles has closed */
    char *addr_file;         /* DIR/http.addr: where we listen, for scripts and tests */
    int loopback;            /* bound to a loopback address: Host must name loopback too */
} http_server;

struct http_conn {
    uv_tcp_t tcp;
    uv_shutdown_t shutdown_req;
    http_server *srv;
    http_conn *next;
    http_parser hp;
    uint64_t deadline_ms;    /* loop time; 0 = none (event streams) */
    uint64_t req_start_ns;
    int status;              /* of the last response */
    int writes_pending;
    int closing, close_after_write, shutting_down, read_paused;
    int head;                /* the request being answered is a HEAD */
    int stream;              /* an SSE stream: no more requests, no deadline */
    int64_t stream_last_id, stream_job;
};

typedef struct http_write_req {
    uv_write_t req;
    uv_buf_t buf;
} http_write_req;

static void server_handle_closed(uv_handle_t *h)
{
    http_server *srv = h->data;
    if (--srv->handles_open == 0) {
        free(srv->addr_file);
        free(srv);
    }
}

static void conn_closed(uv_handle_t *h)
{
    http_conn *hc = h->data;
    http_parser_free(&hc->hp);
    free(hc);
}

void http_conn_close(http_conn *hc, const char *reason)
{
    if (hc->closing) return;
    hc->closing = 1;
    http_server *srv = hc->srv;
    if (reason && *reason) log_info("http: connection closed: %s", reason);
    for (http_conn **p = &srv->conns; *p; p = &(*p)->next)
        if (*p == hc) {
            *p = hc->next;
            break;
        }
    srv->n_conns--;
    uv_close((uv_handle_t *)&hc->tcp, conn_closed);
}

static void on_shutdown(uv_shutdown_t *req, int status)
{
    http_conn *hc = req->handle->data;
    (void)status;
    if (hc->closing) return;
    /* Our FIN is out; keep reading (and discarding) briefly so that unread request bytes in the kernel do
     * not turn the close into a reset that would destroy the response in flight. */
    hc->deadline_ms = uv_now(hc->srv->d->loop) + HTTP_LINGER_MS;
}

static void finish_close(http_conn *hc)
{
    if (hc->shutting_down || hc->closing) return;
    hc->shutting_down = 1;
    if (uv_shutdown(&hc->shutdown_req, (uv_stream_t *)&hc->tcp, on_shutdown) < 0) http_conn_close(hc, NULL);
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf);
static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    static char slab[65536]; /* one loop thread: each read is consumed before the next alloc */
    (void)h;
    (void)suggested;
    *buf = uv_buf_init(slab, sizeof slab);
}

static void on_write(uv_write_t *req, int status)
{
    http_write_req *w = (http_write_req *)req;
    http_conn *hc = req->handle->data;
    free(w->buf.base);
    free(w);
    hc->writes_pending--;
    if (hc->closing) return;
    if (status < 0) {
        http_conn_close(hc, NULL);
        return;
    }
    if (hc->close_after_write && hc->writes_pending == 0) {
        finish_close(hc);
    } else if (hc->read_paused && uv_stream_get_write_queue_size((uv_stream_t *)&hc->tcp) < HTTP_PAUSE_READ_BYTES / 4) {
        hc->read_paused = 0;
        uv_read_start((uv_stream_t *)&hc->tcp, on_alloc, on_read);
    }
}

int http_write(http_conn *hc, const void *data, size_t len)
{
    if (hc->closing) return -1;
    size_t unsent = uv_stream_get_write_queue_size((uv_stream_t *)&hc->tcp);
    if (unsent + len > (hc->stream ? HTTP_MAX_UNSENT_STREAM : HTTP_MAX_UNSENT_BYTES)) {
        http_conn_close(hc, "client is not reading its responses");
        return -1;
    }
    http_write_req *w = malloc(sizeof *w);
    char *copy = malloc(len ? len : 1);
    if (!w || !copy) {
        free(w), free(copy);
        http_conn_close(hc, "out of memory");
        return -1;
    }
    memcpy(copy, data, len);
    w->buf = uv_buf_init(copy, (unsigned)len);
    int rc = uv_write(&w->req, (uv_stream_t *)&hc->tcp, &w->buf, 1, on_write);
    if (rc < 0) {
        free(copy), free(w);
        http_conn_close(hc, uv_strerror(rc));
        return -1;
    }
    hc->writes_pending++;
    return 0;
}

void http_respond(http_conn *hc, int status, const char *content_type, const char *extra_headers, const void *body,
                  size_t len)
{
    char head[1024];
    int n = snprintf(head, sizeof head,
                     "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\nCache-Control: no-store\r\n"
                     "X-Content-Type-Options: nosniff\r\n%s%s\r\n",
                     status, http_status_text(status), content_type, len, extra_headers ? extra_headers : "",
                     hc->close_after_write ? "Connection: close\r\n" : "");
    if (n < 0 || (size_t)n >= sizeof head) n = 0;
    size_t body_len = hc->head ? 0 : len;
    char *msg = malloc((size_t)n + body_len);
    hc->status = status;
    if (!msg) {
        http_conn_close(hc, "out of memory");
        return;
    }
    memcpy(msg, head, (size_t)n);
    if (body_len) memcpy(msg + n, body, body_len);
    http_write(hc, msg, (size_t)n + body_len);
    free(msg);
}

void http_respond_text(http_conn *hc, int status, const char *fmt, ...)
{
    char body[1024];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(body, sizeof body, fmt, ap);
    va_end(ap);
    if (n < 0) n = 0;
    if ((size_t)n >= sizeof body) n = sizeof body - 1;
    http_respond(hc, status, "text/plain; charset=utf-8", "", body, (size_t)n);
}

void http_conn_set_stream(http_conn *hc, int64_t last_id, int64_t job_id)
{
    hc->stream = 1;
    hc->close_after_write = 0; /* an HTTP/1.0 client's stream still lasts until it goes away */
    hc->deadline_ms = 0;
    hc->stream_last_id = last_id;
    hc->stream_job = job_id;
}

int http_conn_is_head(const http_conn *hc)
{
    return hc->head;
}

http_conn *http_streams_first(rl_daemon *d)
{
    if (!d->http) return NULL;
    http_conn *hc = d->http->conns;
    while (hc && !hc->stream) hc = hc->next;
    return hc;
}

http_conn *http_streams_next(http_conn *hc)
{
    hc = hc->next;
    while (hc && !hc->stream) hc = hc->next;
    return hc;
}

int64_t *http_stream_last_id(http_conn *hc)
{
    return &hc->stream_last_id;
}

int64_t http_stream_job(const http_conn *hc)
{
    return hc->stream_job;
}

/* On a loopback listener only loopback names are accepted in Host (with any port); no Host (HTTP/1.0
 * tools) is accepted.  A listener on another address was exposed on purpose and any Host goes. */
static int host_allowed(const http_server *srv, const char *host)
{
    if (!srv || !srv->loopback || !host[0]) return 1;
    char name[256];
    snprintf(name, sizeof name, "%s", host);
    if (name[0] == '[') {
        char *close = strchr(name, ']');
        if (!close) return 0;
        *close = 0;
        return !strcmp(name + 1, "::1");
    }
    char *colon = strchr(name, ':');
    if (colon) *colon = 0;
    struct in_addr a;
    if (inet_pton(AF_INET, name, &a) == 1) return (ntohl(a.s_addr) >> 24) == 127;
    return !strcasecmp(name, "localhost");
}

static void record(rl_daemon *d, int route, int status, uint64_t start_ns)
{
    int cls = status / 100;
    if (cls < 1 || cls > 5) cls = 5;
    d->stats.http_requests[route][cls]++;
    rl_histogram_observe(&d->stats.http_duration[route], (double)(uv_hrtime() - start_ns) / 1e9);
}

/* Answers a refused request and closes: after a parse error the byte stream cannot be trusted. */
static void refuse(http_conn *hc, int status, const char *reason)
{
    rl_daemon *d = hc->srv->d;
    hc->close_after_write = 1;
    hc->head = 0;
    http_respond_text(hc, status, "%s\n", reason);
    record(d, ROUTE_OTHER, status, hc->req_start_ns);
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
    http_conn *hc = s->data;
    http_server *srv = hc->srv;
    rl_daemon *d = srv->d;
    if (n < 0) {
        if (hc->hp.in_message && !hc->close_after_write)
            log_info("http: client closed in the middle of a request");
        http_conn_close(hc, n == UV_EOF ? NULL : uv_strerror((int)n));
        return;
    }
    if (n == 0 || hc->closing || hc->stream || hc->close_after_write) return; /* nothing more is parsed */
    size_t off = 0;
    while (off < (size_t)n && !hc->closing && !hc->stream && !hc->close_after_write) {
        if (!hc->hp.in_message) {
            /* A request starts: it must be complete before the deadline (slow clients are cut off). */
            hc->req_start_ns = uv_hrtime();
            hc->deadline_ms = uv_now(d->loop) + (uint64_t)d->http_timeout_ms;
        }
        size_t used;
        int rc = http_parser_feed(&hc->hp, buf->base + off, (size_t)n - off, &used);
        off += used;
        if (rc == HTTP_NEED_MORE) break;
        if (rc == HTTP_BAD_REQUEST) {
            log_info("http: refused a request: %d %s", hc->hp.error_status, hc->hp.error_reason);
            refuse(hc, hc->hp.error_status, hc->hp.error_reason);
            break;
        }
        const http_request *req = &hc->hp.req;
        hc->head = req->method == HTTP_HEAD;
        if (!req->keep_alive) hc->close_after_write = 1;
        hc->status = 0;
        int route;
        if (!host_allowed(d->http, req->host)) {
            /* DNS rebinding: a web page on evil.example whose name now resolves to 127.0.0.1 must not read
             * the API through the user's browser.  Browsers always send the name they resolved. */
            log_info("http: refused Host \"%.100s\" on a loopback listener", req->host);
            http_respond_text(hc, 421, "Host header does not name this machine's loopback address; open the dashboard "
                                       "as http://127.0.0.1:PORT/ or http://localhost:PORT/\n");
            route = 0;
        } else {
            route = api_handle(d, hc, req);
        }
        if (hc->closing) return;
        record(d, route, hc->status ? hc->status : 200, hc->req_start_ns);
        http_parser_next(&hc->hp);
        if (!hc->stream) hc->deadline_ms = uv_now(d->loop) + (uint64_t)d->http_timeout_ms; /* idle keep-alive */
    }
    if (!hc->closing && !hc->read_paused &&
        uv_stream_get_write_queue_size((uv_stream_t *)&hc->tcp) > HTTP_PAUSE_READ_BYTES) {
        /* A pipelining client that does not read: stop taking requests until it catches up. */
        hc->read_paused = 1;
        uv_read_stop((uv_stream_t *)&hc->tcp);
    }
}

static void on_connection(uv_stream_t *server, int status)
{
    http_server *srv = server->data;
    rl_daemon *d = srv->d;
    if (status < 0) {
        log_warn("http: accept: %s", uv_strerror(status));
        return;
    }
    http_conn *hc = calloc(1, sizeof *hc);
    if (!hc) return;
    hc->srv = srv;
    uv_tcp_init(d->loop, &hc->tcp);
    hc->tcp.data = hc;
    if (uv_accept(server, (uv_stream_t *)&hc->tcp) < 0) {
        uv_close((uv_handle_t *)&hc->tcp, conn_closed);
        return;
    }
    uv_tcp_nodelay(&hc->tcp, 1);
    http_parser_init(&hc->hp);
    hc->next = srv->conns;
    srv->conns = hc;
    srv->n_conns++;
    d->stats.http_connections_total++;
    hc->deadline_ms = uv_now(d->loop) + (uint64_t)d->http_timeout_ms;
    hc->req_start_ns = uv_hrtime();
    if (srv->n_conns > d->http_max_conns) {
        d->stats.http_rejected_total++;
        refuse(hc, 503, "too many connections; try again later");
        return; /* no read: the 503 goes out and the connection closes */
    }
    uv_read_start((uv_stream_t *)&hc->tcp, on_alloc, on_read);
}

static void on_sweep(uv_timer_t *t)
{
    http_server *srv = t->data;
    uint64_t now = uv_now(srv->d->loop);
    for (http_conn *hc = srv->conns, *next; hc; hc = next) {
        next = hc->next;
        if (!hc->deadline_ms || now < hc->deadline_ms) continue;
        if (hc->hp.in_message && !hc->close_after_write) {
            log_info("http: request not completed within %d s; closing", srv->d->http_timeout_ms / 1000);
            refuse(hc, 408, "request not completed in time");
            hc->deadline_ms = now + HTTP_LINGER_MS; /* the 408 too must be read in time */
        } else {
            http_conn_close(hc, NULL);
        }
    }
}

static void on_heartbeat(uv_timer_t *t)
{
    http_server *srv = t->data;
    sse_heartbeat(srv->d);
}

/* "ADDR:PORT", "[V6ADDR]:PORT" or ":PORT" (loopback). */
static int parse_listen(const char *spec, struct sockaddr_storage *ss, char *err, size_t errlen)
{
    char host[128];
    const char *colon = strrchr(spec, ':');
    if (!colon) return rl_errf(err, errlen, "--http %s: expected ADDR:PORT (e.g. 127.0.0.1:8425) or off", spec);
    size_t hl = (size_t)(colon - spec);
    if (hl >= sizeof host) return rl_errf(err, errlen, "--http %s: address too long", spec);
    memcpy(host, spec, hl);
    host[hl] = 0;
    char *end;
    long port = strtol(colon + 1, &end, 10);
    if (end == colon + 1 || *end || port < 0 || port > 65535)
        return rl_errf(err, errlen, "--http %s: port must be 0..65535", spec);
    if (!host[0]) snprintf(host, sizeof host, "127.0.0.1");
    if (host[0] == '[') {
        size_t l = strlen(host);
        if (l < 3 || host[l - 1] != ']') return rl_errf(err, errlen, "--http %s: unbalanced [ ]", spec);
        host[l - 1] = 0;
        if (uv_ip6_addr(host + 1, (int)port, (struct sockaddr_in6 *)ss) < 0)
            return rl_errf(err, errlen, "--http %s: \"%s\" is not an IPv6 address", spec, host + 1);
        return 0;
    }
    if (uv_ip4_addr(host, (int)port, (struct sockaddr_in *)ss) < 0)
        return rl_errf(err, errlen, "--http %s: \"%s\" is not an IPv4 address (use [v6] for IPv6)", spec, host);
    return 0;
}

static void write_addr_file(http_server *srv)
{
    struct sockaddr_storage ss;
    int len = sizeof ss;
    char ip[64] = "?";
    int port = 0;
    if (uv_tcp_getsockname(&srv->listener, (struct sockaddr *)&ss, &len) == 0) {
        if (ss.ss_family == AF_INET6) {
            uv_ip6_name((struct sockaddr_in6 *)&ss, ip + 1, sizeof ip - 3);
            ip[0] = '[';
            strcat(ip, "]");
            port = ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
        } else {
            uv_ip4_name((struct sockaddr_in *)&ss, ip, sizeof ip);
            port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
        }
    }
    log_info("http: dashboard on http://%s:%d/", ip, port);
    if (!srv->addr_file) return; /* (out of memory at the start: no file, the log line above says where) */
    char line[128], err[512];
    int used = snprintf(line, sizeof line, "%s:%d\n", ip, port);
    if (state_file_write(srv->addr_file, line, (size_t)used, 0644, err, sizeof err) < 0) log_warn("http: %s", err);
}

int http_start(rl_daemon *d, char *err, size_t errlen)
{
    const char *spec = d->http_listen ? d->http_listen : HTTP_DEFAULT_LISTEN;
    char addr_file[PATH_MAX];
    snprintf(addr_file, sizeof addr_file, "%s/http.addr", d->state_dir);
    unlink(addr_file); /* a killed daemon's address: written again below once we listen */
    if (!strcmp(spec, "off")) return 0;
    struct sockaddr_storage ss;
    if (parse_listen(spec, &ss, err, errlen) < 0) return -1;
    http_server *srv = calloc(1, sizeof *srv);
    if (!srv) return rl_errf(err, errlen, "out of memory");
    srv->d = d;
    srv->addr_file = strdup(addr_file);
    uv_tcp_init(d->loop, &srv->listener);
    srv->listener.data = srv;
    srv->handles_open = 1;
    int rc = uv_tcp_bind(&srv->listener, (struct sockaddr *)&ss, 0);
    if (rc == 0) rc = uv_listen((uv_stream_t *)&srv->listener, 128, on_connection);
    if (rc < 0) {
        uv_close((uv_handle_t *)&srv->listener, server_handle_closed);
        if (!d->http_listen) {
            /* The default port is a convenience: a second daemon on this machine still runs, without HTTP. */
            log_warn("http: cannot listen on %s (%s); dashboard off (choose one with --http ADDR:PORT)", spec,
                     uv_strerror(rc));
            return 0;
        }
        return rl_errf(err, errlen, "--http %s: cannot listen: %s", spec, uv_strerror(rc));
    }
    uv_timer_init(d->loop, &srv->sweep);
    uv_timer_init(d->loop, &srv->heartbeat);
    srv->sweep.data = srv->heartbeat.data = srv;
    srv->handles_open += 2;
    uv_timer_start(&srv->sweep, on_sweep, 250, 250);
    uv_timer_start(&srv->heartbeat, on_heartbeat, (uint64_t)d->sse_heartbeat_ms, (uint64_t)d->sse_heartbeat_ms);
    d->http = srv;
    srv->loopback = ss.ss_family == AF_INET6
                        ? IN6_IS_ADDR_LOOPBACK(&((struct sockaddr_in6 *)&ss)->sin6_addr)
                        : (ntohl(((struct sockaddr_in *)&ss)->sin_addr.s_addr) >> 24) == 127;
    write_addr_file(srv);
    return 0;
}

void http_stop(rl_daemon *d)
{
    http_server *srv = d->http;
    if (!srv) return;
    d->http = NULL;
    while (srv->conns) http_conn_close(srv->conns, NULL);
    if (srv->addr_file) unlink(srv->addr_file);
    uv_timer_stop(&srv->sweep);
    uv_timer_stop(&srv->heartbeat);
    uv_close((uv_handle_t *)&srv->sweep, server_handle_closed);
    uv_close((uv_handle_t *)&srv->heartbeat, server_handle_closed);
    uv_close((uv_handle_t *)&srv->listener, server_handle_closed);
}

int http_connections(rl_daemon *d)
{
    return d->http ? d->http->n_conns : 0;
}
