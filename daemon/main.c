/* radladsd: the radlads coordinator.  See daemon.h for the map of this folder. */
#include "daemon.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

rl_daemon *g_daemon;

static void usage(FILE *f)
{
    fprintf(f,
            "usage: radladsd [options]\n"
            "  --state-dir DIR        database, socket, token and log live here (default: %s)\n"
            "  --socket PATH          CLI and pool socket (default DIR/radladsd.sock)\n"
            "  --db PATH              SQLite database (default DIR/radlads.db)\n"
            "  --log PATH             log file (default DIR/radladsd.log)\n"
            "  --group NAME           make the socket 0660 for this group (default 0600: owner only)\n"
            "  --max-running N        at most N jobs running at once (default 0 = no limit)\n"
            "  --on-interrupted P     what to do with jobs interrupted by a daemon restart:\n"
            "                         requeue (default), hold or fail\n"
            "  --heartbeat-timeout S  a pool silent this long is lost (default 30)\n"
            "  --hang-timeout S       an attempt with no step progress this long fails (default 1800; 0 = off)\n"
            "  --reattach-grace S     after a restart, wait this long for pools still running an attempt to\n"
            "                         re-attach before declaring it lost (default 30; 0 = never wait)\n"
            "  --reconnect-grace S    a busy pool whose connection drops keeps its attempt this long while it\n"
            "                         reconnects (default 15; 0 = lose the attempt at once); a launched pool\n"
            "                         whose processes exit is lost at once\n"
            "  --http ADDR:PORT       dashboard, JSON API, SSE and /metrics (default 127.0.0.1:8425; off = none)\n"
            "  --http-timeout S       seconds a client gets to send a request, and an idle connection lives (default 30)\n"
            "  --http-max-connections N  HTTP connections at once (default 256)\n"
            "  --sse-heartbeat S      seconds between comment lines on idle event streams (default 15)\n"
            "  --worker-listen tcp:HOST:PORT  also accept pools over TCP (other hosts; the token file\n"
            "                         authenticates them; the address is written to DIR/worker.addr)\n"
            "  --launcher local|slurm|none  how pools start when jobs need them: local = mpirun on this\n"
            "                         host (default), slurm = sbatch (ranks start with srun), none = by hand\n"
            "  --worker PATH          the radlads-worker the launcher runs (default: next to radladsd; with\n"
            "                         slurm it must be at the same path on the compute nodes)\n"
            "  --slurm-args \"ARGS\"    extra sbatch options for launched pools, e.g. \"--partition gpu --time 1-0\"\n"
            "  --foreground           stay attached; log to stderr as well\n"
            "  --version, --help\n",
            rl_default_state_dir());
}

static int mkdir_p(const char *path, mode_t mode)
{
    char buf[PATH_MAX];
    snprintf(buf, sizeof buf, "%s", path);
    for (char *p = buf + 1; *p; p++) {
        if (*p != '/') continue;
        *p = 0;
        if (mkdir(buf, mode) < 0 && errno != EEXIST) return -1;
        *p = '/';
    }
    return mkdir(buf, mode) < 0 && errno != EEXIST ? -1 : 0;
}

static char *join(const char *dir, const char *name)
{
    size_t n = strlen(dir) + strlen(name) + 2;
    char *s = malloc(n);
    if (s) snprintf(s, n, "%s/%s", dir, name);
    return s;
}

/* The token authenticates pools (and, later, HTTP writes).  0600, created once, kept across restarts. */
static int load_token(rl_daemon *d, char *err, size_t errlen)
{
    int fd = open(d->token_path, O_RDONLY | O_CLOEXEC);
    if (fd >= 0) {
        ssize_t n = read(fd, d->token, 64);
        close(fd);
        if (n == 64) {
            d->token[64] = 0;
            return 0;
        }
        log_warn("token file %s is damaged; writing a new one", d->token_path);
    }
    unsigned char raw[32];
    if (getrandom(raw, sizeof raw, 0) != (ssize_t)sizeof raw)
        return rl_errf(err, errlen, "getrandom: %s", strerror(errno));
    for (int i = 0; i < 32; i++) snprintf(d->token + 2 * i, 3, "%02x", raw[i]);
    return state_file_write(d->token_path, d->token, 64, 0600, err, errlen);
}

/* One daemon per database: an exclusive flock on DB.lock, held for the life of the process. */
static int take_lock(const char *db_path, char *err, size_t errlen)
{
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s.lock", db_path);
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0) return rl_errf(err, errlen, "cannot open lock file %s: %s", path, strerror(errno));
    if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
        char pid[32] = "";
        ssize_t n = pread(fd, pid, sizeof pid - 1, 0);
        if (n > 0) pid[n] = 0;
        pid[strcspn(pid, "\n")] = 0;
        close(fd);
        return rl_errf(err, errlen,
                       "another radladsd (pid %s) is already using %s; stop it first (kill %s) or use another "
                       "--state-dir/--db",
                       *pid ? pid : "?", db_path, *pid ? pid : "PID");
    }
    char pid[32];
    int n = snprintf(pid, sizeof pid, "%d\n", (int)getpid());
    if (ftruncate(fd, 0) < 0 || pwrite(fd, pid, (size_t)n, 0) != n) log_warn("cannot write pid to %s", path);
    return fd; /* kept open: the lock lives as long as the process */
}

static void on_flush_check(uv_check_t *h)
{
    jobs_flush_submits(h->data);
}

static void on_tick(uv_timer_t *t)
{
    pools_tick(t->data);
    launcher_tick(t->data);
    reattach_tick(t->data);
}

static void shutdown_daemon(rl_daemon *d, const char *why)
{
    if (d->stopping) return;
    log_info("shutting down (%s)", why);
    jobs_flush_submits(d); /* whatever was received is committed before we go */
    d->stopping = 1;
    server_close_all(d);
    uv_check_stop(&d->flush_check);
    uv_close((uv_handle_t *)&d->flush_check, NULL);
    http_stop(d);
    launcher_close(d);
    uv_timer_stop(&d->tick);
    uv_close((uv_handle_t *)&d->tick, NULL);
    uv_close((uv_handle_t *)&d->sigterm, NULL);
    uv_close((uv_handle_t *)&d->sigint, NULL);
}

static void on_signal(uv_signal_t *s, int signum)
{
    shutdown_daemon(s->data, signum == SIGTERM ? "SIGTERM" : "SIGINT");
}

static int parse_seconds(const char *opt, const char *v, int *out_ms)
{
    char *end;
    long s = strtol(v, &end, 10);
    if (end == v || *end || s < 0 || s > 86400 * 30) {
        fprintf(stderr, "radladsd: %s: expected seconds (0..2592000), got \"%s\"\n", opt, v);
        return -1;
    }
    *out_ms = (int)s * 1000;
    return 0;
}

int main(int argc, char **argv)
{
    static rl_daemon daemon;
    rl_daemon *d = &daemon;
    g_daemon = d;
    d->heartbeat_ms = 5000;
    d->heartbeat_timeout_ms = 30000;
    d->hang_timeout_ms = 1800000;
    d->cancel_timeout_ms = 30000;
    d->reattach_grace_ms = 30000;
    d->reconnect_grace_ms = 15000;
    const char *state_dir = NULL, *socket_path = NULL, *db_path = NULL, *log_path = NULL;
    int foreground = 0;
    const char *launcher_kind = "local", *worker_path = NULL, *slurm_args = NULL;
    d->http_timeout_ms = 30000;
    d->http_max_conns = 256;
    d->sse_heartbeat_ms = 15000;
    enum { O_STATE = 256, O_SOCKET, O_DB, O_LOG, O_GROUP, O_MAXRUN, O_INTERRUPTED, O_HB, O_HANG, O_FG, O_VERSION,
           O_HTTP, O_HTTP_TIMEOUT, O_HTTP_MAX, O_SSE_HB, O_LAUNCHER, O_WORKER, O_REATTACH, O_WORKER_LISTEN, O_SLURM_ARGS, O_RECONNECT };
    static const struct option opts[] = {
        {"state-dir", required_argument, 0, O_STATE},       {"socket", required_argument, 0, O_SOCKET},
        {"db", required_argument, 0, O_DB},                 {"log", required_argument, 0, O_LOG},
        {"group", required_argument, 0, O_GROUP},           {"max-running", required_argument, 0, O_MAXRUN},
        {"on-interrupted", required_argument, 0, O_INTERRUPTED},
        {"heartbeat-timeout", required_argument, 0, O_HB},  {"hang-timeout", required_argument, 0, O_HANG},
        {"foreground", no_argument, 0, O_FG},               {"version", no_argument, 0, O_VERSION},
        {"http", required_argument, 0, O_HTTP},             {"http-timeout", required_argument, 0, O_HTTP_TIMEOUT},
        {"http-max-connections", required_argument, 0, O_HTTP_MAX},
        {"sse-heartbeat", required_argument, 0, O_SSE_HB},
        {"launcher", required_argument, 0, O_LAUNCHER},     {"worker", required_argument, 0, O_WORKER},
        {"reattach-grace", required_argument, 0, O_REATTACH},
        {"reconnect-grace", required_argument, 0, O_RECONNECT},
        {"worker-listen", required_argument, 0, O_WORKER_LISTEN}, {"slurm-args", required_argument, 0, O_SLURM_ARGS},
        {"help", no_argument, 0, 'h'},                      {0, 0, 0, 0}};
    int c;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case O_STATE: state_dir = optarg; break;
        case O_SOCKET: socket_path = optarg; break;
        case O_DB: db_path = optarg; break;
        case O_LOG: log_path = optarg; break;
        case O_GROUP: d->group = optarg; break;
        case O_MAXRUN: {
            char *end;
            long v = strtol(optarg, &end, 10);
            if (end == optarg || *end || v < 0 || v > 1000000) {
                fprintf(stderr, "radladsd: --max-running: expected a count >= 0, got \"%s\"\n", optarg);
                return 2;
            }
            d->max_running = (int)v;
            break;
        }
        case O_INTERRUPTED:
            if (!strcmp(optarg, "requeue")) d->on_interrupted = 0;
            else if (!strcmp(optarg, "hold")) d->on_interrupted = 1;
            else if (!strcmp(optarg, "fail")) d->on_interrupted = 2;
            else {
                fprintf(stderr, "radladsd: --on-interrupted: expected requeue, hold or fail, got \"%s\"\n", optarg);
                return 2;
            }
            break;
        case O_HB:
            if (parse_seconds("--heartbeat-timeout", optarg, &d->heartbeat_timeout_ms) < 0) return 2;
            if (d->heartbeat_timeout_ms < 2000) {
                fprintf(stderr, "radladsd: --heartbeat-timeout must be at least 2 seconds\n");
                return 2;
            }
            if (d->heartbeat_ms * 3 > d->heartbeat_timeout_ms) d->heartbeat_ms = d->heartbeat_timeout_ms / 3;
            break;
        case O_HANG:
            if (parse_seconds("--hang-timeout", optarg, &d->hang_timeout_ms) < 0) return 2;
            break;
        case O_FG: foreground = 1; break;
        case O_HTTP: d->http_listen = optarg; break;
        case O_HTTP_TIMEOUT:
            if (parse_seconds("--http-timeout", optarg, &d->http_timeout_ms) < 0) return 2;
            if (d->http_timeout_ms < 1000) {
                fprintf(stderr, "radladsd: --http-timeout must be at least 1 second\n");
                return 2;
            }
            break;
        case O_LAUNCHER: launcher_kind = optarg; break;
        case O_WORKER_LISTEN: d->worker_listen = optarg; break;
        case O_REATTACH:
            if (parse_seconds("--reattach-grace", optarg, &d->reattach_grace_ms) < 0) return 2;
            break;
        case O_RECONNECT:
            if (parse_seconds("--reconnect-grace", optarg, &d->reconnect_grace_ms) < 0) return 2;
            break;
        case O_WORKER: worker_path = optarg; break;
        case O_SLURM_ARGS: slurm_args = optarg; break;
        case O_SSE_HB:
            if (parse_seconds("--sse-heartbeat", optarg, &d->sse_heartbeat_ms) < 0) return 2;
            if (d->sse_heartbeat_ms < 1000) {
                fprintf(stderr, "radladsd: --sse-heartbeat must be at least 1 second\n");
                return 2;
            }
            break;
        case O_HTTP_MAX: {
            char *end;
            long v = strtol(optarg, &end, 10);
            if (end == optarg || *end || v < 1 || v > 100000) {
                fprintf(stderr, "radladsd: --http-max-connections: expected 1..100000, got \"%s\"\n", optarg);
                return 2;
            }
            d->http_max_conns = (int)v;
            break;
        }
        case O_VERSION: printf("radladsd %s (protocol %u, schema %d)\n", RL_VERSION, RL_PROTOCOL_VERSION, store_latest_schema()); return 0;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "radladsd: unexpected argument \"%s\"\n", argv[optind]);
        usage(stderr);
        return 2;
    }
    if (!state_dir) state_dir = rl_default_state_dir();
    if (mkdir_p(state_dir, 0700) < 0) {
        fprintf(stderr, "radladsd: cannot create state dir %s: %s\n", state_dir, strerror(errno));
        return 1;
    }
    char real[PATH_MAX];
    d->state_dir = strdup(realpath(state_dir, real) ? real : state_dir);
    d->socket_path = socket_path ? strdup(socket_path) : join(d->state_dir, "radladsd.sock");
    d->db_path = db_path ? strdup(db_path) : join(d->state_dir, "radlads.db");
    d->log_path = log_path ? strdup(log_path) : join(d->state_dir, "radladsd.log");
    d->token_path = join(d->state_dir, "token");

    /* Daemonize first (libuv must not cross a fork); the parent waits for the child's verdict so that
     * start-up errors still reach the terminal and the exit status. */
    int ready[2] = {-1, -1};
    if (!foreground) {
        if (pipe2(ready, O_CLOEXEC) < 0) {
            perror("radladsd: pipe");
            return 1;
        }
        pid_t pid = fork();
        if (pid < 0) {
            perror("radladsd: fork");
            return 1;
        }
        if (pid > 0) {
            close(ready[1]);
            char msg[1024];
            ssize_t n = read(ready[0], msg, sizeof msg - 1);
            if (n > 0 && msg[0] == '+') {
                msg[n] = 0;
                printf("radladsd: started (pid %d); socket %s\n", (int)pid, msg + 1);
                return 0;
            }
            if (n > 0) {
                msg[n] = 0;
                fprintf(stderr, "radladsd: %s\n", msg + 1);
            } else {
                fprintf(stderr, "radladsd: failed to start (see %s)\n", d->log_path);
            }
            return 1;
        }
        close(ready[0]);
        setsid();
        int null = open("/dev/null", O_RDWR);
        if (null >= 0) {
            dup2(null, 0), dup2(null, 1), dup2(null, 2);
            if (null > 2) close(null);
        }
    }
    log_open(d->log_path, foreground);
    signal(SIGPIPE, SIG_IGN);

    char err[1024];
    int lock_fd = take_lock(d->db_path, err, sizeof err);
    int rc = lock_fd < 0 ? -1 : 0;
    if (rc == 0) rc = store_open(&d->db, d->db_path, err, sizeof err);
    if (rc == 0) rc = load_token(d, err, sizeof err);
    d->loop = uv_default_loop();
    d->submits_tail = &d->submits;
    d->started_at_ms = now_ms();
    /* SIGTERM/SIGINT are caught from here on (handled once the loop runs): a stop sent while we start up
     * still shuts down cleanly instead of killing us half-initialised. */
    uv_signal_init(d->loop, &d->sigterm);
    uv_signal_init(d->loop, &d->sigint);
    d->sigterm.data = d->sigint.data = d;
    uv_signal_start(&d->sigterm, on_signal, SIGTERM);
    uv_signal_start(&d->sigint, on_signal, SIGINT);
    if (rc == 0 && jobs_reconcile_at_start(d) < 0) rc = rl_errf(err, sizeof err, "start-up reconciliation failed (see log)");
    if (rc == 0) rc = server_listen_workers(d, err, sizeof err);
    if (rc == 0) rc = http_start(d, err, sizeof err);
    if (rc == 0) rc = launcher_init(d, launcher_kind, worker_path, slurm_args, err, sizeof err);
    /* The Unix socket last: whoever can connect to it (the CLI, scripts waiting for us) finds every other
     * listener up and DIR/worker.addr written. */
    int own_socket = rc == 0;
    if (rc == 0) rc = server_listen(d, err, sizeof err);
    if (rc < 0) {
        if (own_socket) unlink(d->socket_path); /* ours: we hold the lock */
        log_error("%s", err);
        if (ready[1] >= 0) {
            char msg[1100];
            int n = snprintf(msg, sizeof msg, "-%s", err);
            if (write(ready[1], msg, (size_t)n) < 0) {}
        } else if (!foreground) {
            fprintf(stderr, "radladsd: %s\n", err);
        }
        store_close(d->db);
        return 1;
    }
    uv_check_init(d->loop, &d->flush_check);
    d->flush_check.data = d;
    uv_check_start(&d->flush_check, on_flush_check);
    uv_timer_init(d->loop, &d->tick);
    d->tick.data = d;
    uv_timer_start(&d->tick, on_tick, 1000, 1000);
    log_info("radladsd %s started: pid %d, db %s (schema %d), socket %s%s%s", RL_VERSION, (int)getpid(), d->db_path,
             store_schema_version(d->db), d->socket_path, d->group ? ", group " : "", d->group ? d->group : "");
    if (ready[1] >= 0) {
        char msg[PATH_MAX + 2];
        int n = snprintf(msg, sizeof msg, "+%s", d->socket_path);
        if (write(ready[1], msg, (size_t)n) < 0) {}
        close(ready[1]);
    }
    uv_run(d->loop, UV_RUN_DEFAULT);
    uv_loop_close(d->loop);
    reattach_free();
    store_close(d->db);
    log_info("stopped");
    log_close();
    close(lock_fd);
    free(d->state_dir), free(d->socket_path), free(d->db_path), free(d->log_path), free(d->token_path);
    return 0;
}
