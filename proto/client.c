/* Blocking client over a Unix socket: used by the CLI, the tests and the benchmarks. */
#include "proto.h"

#include <errno.h>
#include <poll.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

const char *rl_default_state_dir(void)
{
    static char buf[4096];
    const char *env = getenv("RADLADS_STATE_DIR");
    if (env && *env) return env;
    if (geteuid() == 0) return "/var/lib/radlads";
    const char *home = getenv("HOME");
    if (!home || !*home) {
        struct passwd *pw = getpwuid(geteuid());
        home = pw ? pw->pw_dir : "/tmp";
    }
    snprintf(buf, sizeof buf, "%s/.local/state/radlads", home);
    return buf;
}

const char *rl_default_socket_path(const char *explicit_path)
{
    static char buf[4096];
    if (explicit_path && *explicit_path) return explicit_path;
    const char *env = getenv("RADLADS_SOCKET");
    if (env && *env) return env;
    snprintf(buf, sizeof buf, "%s/radladsd.sock", rl_default_state_dir());
    return buf;
}

int rl_client_send(rl_client *c, const Radlads__Envelope *env, char *err, size_t errlen)
{
    uint8_t *buf;
    size_t len;
    if (rl_frame_encode(env, &buf, &len) < 0) {
        rl_errf(err, errlen, "out of memory encoding a request");
        return -RL_E_INTERNAL;
    }
    size_t off = 0;
    while (off < len) {
        ssize_t w = send(c->fd, buf + off, len - off, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR) continue;
        if (w < 0) {
            free(buf);
            rl_errf(err, errlen, "sending to radladsd: %s", strerror(errno));
            return -RL_E_IO;
        }
        off += (size_t)w;
    }
    free(buf);
    return 0;
}

static long long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int rl_client_recv(rl_client *c, Radlads__Envelope **env, int timeout_ms, char *err, size_t errlen)
{
    long long deadline = timeout_ms >= 0 ? now_ms() + timeout_ms : -1;
    for (;;) {
        char ferr[256];
        int r = rl_frame_reader_next(&c->reader, env, ferr, sizeof ferr);
        if (r == 1) return 0;
        if (r < 0) {
            rl_errf(err, errlen, "bad reply from radladsd: %s", ferr);
            return -RL_E_IO;
        }
        int wait = -1;
        if (deadline >= 0) {
            long long left = deadline - now_ms();
            if (left <= 0) {
                rl_errf(err, errlen, "timed out waiting for radladsd");
                return -RL_E_TIMEOUT;
            }
            wait = (int)left;
        }
        struct pollfd pfd = {.fd = c->fd, .events = POLLIN};
        int pr = poll(&pfd, 1, wait);
        if (pr < 0 && errno == EINTR) continue;
        if (pr < 0) {
            rl_errf(err, errlen, "poll: %s", strerror(errno));
            return -RL_E_IO;
        }
        if (pr == 0) continue; /* deadline check above */
        uint8_t buf[65536];
        ssize_t n = recv(c->fd, buf, sizeof buf, 0);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) {
            rl_errf(err, errlen, "radladsd closed the connection%s%s", n < 0 ? ": " : "",
                    n < 0 ? strerror(errno) : "");
            return -RL_E_IO;
        }
        if (rl_frame_reader_feed(&c->reader, buf, (size_t)n) < 0) {
            rl_errf(err, errlen, "out of memory reading a reply");
            return -RL_E_INTERNAL;
        }
    }
}

int rl_client_call(rl_client *c, const Radlads__Envelope *req, Radlads__Envelope **reply,
                   Radlads__Envelope__MsgCase expect, char *err, size_t errlen)
{
    int r = rl_client_send(c, req, err, errlen);
    if (r < 0) return r;
    Radlads__Envelope *e;
    r = rl_client_recv(c, &e, -1, err, errlen);
    if (r < 0) return r;
    if (e->msg_case == RADLADS__ENVELOPE__MSG_ERROR) {
        int code = e->error->code ? e->error->code : RL_E_INTERNAL;
        rl_errf(err, errlen, "%s", e->error->message ? e->error->message : "error");
        radlads__envelope__free_unpacked(e, NULL);
        return -code;
    }
    if (e->msg_case != expect) {
        rl_errf(err, errlen, "unexpected reply from radladsd (message %d, wanted %d)", e->msg_case, expect);
        radlads__envelope__free_unpacked(e, NULL);
        return -RL_E_IO;
    }
    *reply = e;
    return 0;
}

int rl_client_connect(rl_client *c, const char *socket_path, Radlads__Role role, const char *token,
                      char *err, size_t errlen)
{
    memset(c, 0, sizeof *c);
    c->fd = -1;
    rl_frame_reader_init(&c->reader, 0);
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    if (strlen(socket_path) >= sizeof sa.sun_path) {
        rl_errf(err, errlen, "socket path too long (%zu bytes, max %zu): %s", strlen(socket_path),
                sizeof sa.sun_path - 1, socket_path);
        return -RL_E_IO;
    }
    strcpy(sa.sun_path, socket_path);
    c->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (c->fd < 0) {
        rl_errf(err, errlen, "socket: %s", strerror(errno));
        return -RL_E_IO;
    }
    if (connect(c->fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
        int e = errno;
        if (e == ENOENT || e == ECONNREFUSED)
            rl_errf(err, errlen,
                    "cannot reach radladsd at %s (%s): is the daemon running? Start it with "
                    "`radladsd --state-dir DIR` and point the CLI at DIR/radladsd.sock "
                    "(--socket PATH or RADLADS_SOCKET)",
                    socket_path, strerror(e));
        else if (e == EACCES)
            rl_errf(err, errlen,
                    "permission denied on %s: the daemon's socket is private to its owner "
                    "(start radladsd with --group GROUP to share it)",
                    socket_path);
        else
            rl_errf(err, errlen, "connecting to radladsd at %s: %s", socket_path, strerror(e));
        rl_client_close(c);
        return -RL_E_IO;
    }
    Radlads__Envelope env = RADLADS__ENVELOPE__INIT;
    Radlads__Hello hello = RADLADS__HELLO__INIT;
    hello.protocol_version = RL_PROTOCOL_VERSION;
    hello.role = role;
    hello.token = (char *)(token ? token : "");
    hello.client = "radlads-client";
    env.msg_case = RADLADS__ENVELOPE__MSG_HELLO;
    env.hello = &hello;
    Radlads__Envelope *reply;
    int r = rl_client_call(c, &env, &reply, RADLADS__ENVELOPE__MSG_HELLO_REPLY, err, errlen);
    if (r < 0) {
        rl_client_close(c);
        return r;
    }
    c->uid = reply->hello_reply->uid;
    c->admin = reply->hello_reply->admin;
    radlads__envelope__free_unpacked(reply, NULL);
    return 0;
}

void rl_client_close(rl_client *c)
{
    if (c->fd >= 0) close(c->fd);
    c->fd = -1;
    rl_frame_reader_free(&c->reader);
}
