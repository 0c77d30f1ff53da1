/* The local launcher: when a runnable job finds no idle pool that fits, radladsd starts one itself:
 *
 *   mpirun [--allow-run-as-root] --oversubscribe --bind-to none -np RANKS \
 *       radlads-worker pool --connect unix:SOCKET --token-file TOKEN --launch-id ID --device D [--name P]
 *
 * detached in its own session (so the daemon's death does not take it down, and the whole tree can be
 * signalled as one process group), output to STATE/pools/launch-ID.log.  Rank 0 registers with the
 * launch id; from then on it is an ordinary pool.  A launched pool that goes idle with nothing to run is
 * retired: SIGTERM to its process group and to every rank pid it reported, SIGKILL after a grace period.
 * A job whose pool keeps dying before it registers is held after LAUNCH_MAX_FAILURES attempts. */
#include "daemon.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define LAUNCH_MAX_FAILURES 3
#define LAUNCH_REGISTER_TIMEOUT_MS 120000 /* mpirun + MPI_Init + model load on a busy machine */
#define RETIRE_GRACE_MS 5000

typedef struct launch {
    int64_t id, job_id, pool_id;
    int ranks;
    char device[16], pool_name[64];
    uv_process_t proc;
    pid_t pid;
    int running;               /* the process handle is alive */
    int registered;
    int64_t started_ms, retire_ms;
    pid_t rank_pids[64];
    int n_rank_pids;
    struct launch *next;
} launch;

static struct {
    char *worker;
    char log_dir[PATH_MAX];
    int64_t next_id;
    launch *all;
    struct {
        int64_t job_id;
        int count;
    } failures[64];
} L;

static int failures_of(int64_t job_id, int add)
{
    for (int i = 0; i < 64; i++)
        if (L.failures[i].job_id == job_id) return L.failures[i].count += add;
    if (!add) return 0;
    for (int i = 0; i < 64; i++)
        if (!L.failures[i].job_id || i == 63) {
            L.failures[i].job_id = job_id;
            return L.failures[i].count = add;
        }
    return add;
}

static void launch_closed(uv_handle_t *h)
{
    launch *l = h->data;
    for (launch **pp = &L.all; *pp; pp = &(*pp)->next)
        if (*pp == l) {
            *pp = l->next;
            break;
        }
    free(l);
}

/* The launch never registered a pool: hold the job after repeated failures so it does not loop. */
static void launch_failed(rl_daemon *d, launch *l, const char *why)
{
    int n = failures_of(l->job_id, 1);
    log_warn("launcher: launch %lld for job %lld failed: %s (%d of %d; log %s/launch-%lld.log)", (long long)l->id,
             (long long)l->job_id, why, n, LAUNCH_MAX_FAILURES, L.log_dir, (long long)l->id);
    if (n < LAUNCH_MAX_FAILURES || d->stopping) return;
    failures_of(l->job_id, -n); /* a release starts counting again */
    static const char sql[] = "SELECT state FROM jobs WHERE id = ?";
    sqlite3_stmt *st = store_stmt(d->db, sql);
    sqlite3_bind_int64(st, 1, l->job_id);
    char state[32] = "";
    if (sqlite3_step(st) == SQLITE_ROW) snprintf(state, sizeof state, "%s", sqlite3_column_text(st, 0));
    sqlite3_reset(st);
    char reason[PATH_MAX + 200];
    snprintf(reason, sizeof reason, "its worker pool failed to start %d times (%s; see %s/launch-%lld.log); "
             "fix the cause and release the job", LAUNCH_MAX_FAILURES, why, L.log_dir, (long long)l->id);
    const char *to = !strcmp(state, "QUEUED") ? "HELD" : (!strcmp(state, "RECOVERING") || !strcmp(state, "RUNNING")) ? "FAILED" : NULL;
    if (!to || store_begin(d->db) < 0) return;
    if (job_transition(d->db, l->job_id, state, to, reason) < 0 || store_commit(d->db) < 0) store_rollback(d->db);
    server_after_commit(d);
}

static void on_exit_cb(uv_process_t *proc, int64_t status, int signo)
{
    launch *l = proc->data;
    rl_daemon *d = g_daemon;
    l->running = 0;
    log_info("launcher: launch %lld (pid %d) exited with status %lld%s%s", (long long)l->id, (int)l->pid,
             (long long)status, signo ? ", signal " : "", signo ? strsignal(signo) : "");
    if (!l->registered && !l->retire_ms) {
        char why[96];
        snprintf(why, sizeof why, "mpirun exited with status %lld%s%s before the pool registered", (long long)status,
                 signo ? " by signal " : "", signo ? strsignal(signo) : "");
        launch_failed(d, l, why);
    }
    uv_close((uv_handle_t *)proc, launch_closed);
    if (!d->stopping) sched_run(d);
}

static int local_launch(rl_daemon *d, const sched_need *need, void *ctx)
{
    (void)ctx;
    if (d->stopping) return -1;
    int active = 0;
    for (launch *l = L.all; l; l = l->next) {
        if (!l->running) continue;
        if (l->job_id == need->job_id && (!l->registered || l->pool_id)) return 0; /* already on its way */
        active++;
    }
    /* Idle launched pools are retired at once, so each live launch serves a job: respect --max-running. */
    if (d->max_running > 0 && active >= d->max_running) return -1;
    if (failures_of(need->job_id, 0) >= LAUNCH_MAX_FAILURES) return -1;
    launch *l = calloc(1, sizeof *l);
    if (!l) return -1;
    l->id = ++L.next_id;
    l->job_id = need->job_id;
    l->ranks = need->ranks;
    snprintf(l->device, sizeof l->device, "%s", need->device);
    snprintf(l->pool_name, sizeof l->pool_name, "%s", need->pool_name ? need->pool_name : "");

    char np[16], lid[32], connect[PATH_MAX + 8], logpath[PATH_MAX + 64];
    snprintf(np, sizeof np, "%d", l->ranks);
    /* Launch ids must not collide with pools still alive from an earlier daemon: prefix with our start time. */
    snprintf(lid, sizeof lid, "%lld", (long long)(d->started_at_ms % 100000000) * 1000 + l->id);
    l->id = atoll(lid);
    snprintf(connect, sizeof connect, "unix:%s", d->socket_path);
    snprintf(logpath, sizeof logpath, "%s/launch-%lld.log", L.log_dir, (long long)l->id);
    char *args[32];
    int n = 0;
    args[n++] = "mpirun";
    if (geteuid() == 0) args[n++] = "--allow-run-as-root";
    args[n++] = "--oversubscribe";
    args[n++] = "--bind-to";
    args[n++] = "none";
    args[n++] = "-np";
    args[n++] = np;
    args[n++] = L.worker;
    args[n++] = "pool";
    args[n++] = "--connect";
    args[n++] = connect;
    args[n++] = "--token-file";
    args[n++] = d->token_path;
    args[n++] = "--launch-id";
    args[n++] = lid;
    args[n++] = "--device";
    args[n++] = l->device;
    if (l->pool_name[0]) {
        args[n++] = "--name";
        args[n++] = l->pool_name;
    }
    args[n] = NULL;

    int fd = open(logpath, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    if (fd < 0) {
        log_error("launcher: cannot open %s: %s", logpath, strerror(errno));
        free(l);
        return -1;
    }
    uv_stdio_container_t stdio[3] = {{.flags = UV_IGNORE}, {.flags = UV_INHERIT_FD, .data.fd = fd},
                                     {.flags = UV_INHERIT_FD, .data.fd = fd}};
    uv_process_options_t opt = {.exit_cb = on_exit_cb, .file = "mpirun", .args = args,
                                .flags = UV_PROCESS_DETACHED, .stdio_count = 3, .stdio = stdio};
    l->proc.data = l;
    int rc = uv_spawn(d->loop, &l->proc, &opt);
    close(fd);
    if (rc < 0) {
        log_error("launcher: cannot start mpirun: %s", uv_strerror(rc));
        launch_failed(d, l, uv_strerror(rc));
        uv_close((uv_handle_t *)&l->proc, launch_closed); /* a failed spawn still needs its close; frees l */
        return -1;
    }
    l->pid = l->proc.pid;
    l->running = 1;
    l->started_ms = now_ms();
    l->next = L.all;
    L.all = l;
    log_info("launcher: launch %lld for job %lld: mpirun -np %d %s (pid %d, log %s)", (long long)l->id,
             (long long)l->job_id, l->ranks, L.worker, (int)l->pid, logpath);
    return 0;
}

static const sched_launcher local_launcher = {.name = "local", .launch = local_launch};

/* The worker next to our own binary (installed), or ../worker/ (build tree). */
static char *find_worker(void)
{
    char self[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n <= 0) return NULL;
    self[n] = 0;
    char *slash = strrchr(self, '/');
    if (!slash) return NULL;
    *slash = 0;
    const char *tries[] = {"%s/radlads-worker", "%s/../worker/radlads-worker"};
    for (int i = 0; i < 2; i++) {
        char p[PATH_MAX + 64], real[PATH_MAX];
        snprintf(p, sizeof p, tries[i], self);
        if (access(p, X_OK) == 0 && realpath(p, real)) return strdup(real);
    }
    return NULL;
}

int launcher_init(rl_daemon *d, const char *kind, const char *worker, char *err, size_t errlen)
{
    if (!kind || !strcmp(kind, "none")) {
        log_info("launcher: none (pools must be started by hand: radlads-worker pool --connect unix:%s)", d->socket_path);
        return 0;
    }
    if (strcmp(kind, "local")) return rl_errf(err, errlen, "--launcher: expected local or none, got \"%s\"", kind);
    L.worker = worker ? strdup(worker) : find_worker();
    if (!L.worker) {
        log_warn("launcher: radlads-worker not found next to radladsd; no local pools (give --worker PATH)");
        return 0;
    }
    if (access(L.worker, X_OK) < 0) return rl_errf(err, errlen, "--worker %s: not an executable file", L.worker);
    snprintf(L.log_dir, sizeof L.log_dir, "%s/pools", d->state_dir);
    if (mkdir(L.log_dir, 0700) < 0 && errno != EEXIST)
        return rl_errf(err, errlen, "cannot create %s: %s", L.log_dir, strerror(errno));
    sched_set_launcher(&local_launcher);
    log_info("launcher: local (mpirun; worker %s)", L.worker);
    return 0;
}

static launch *find_launch(int64_t id)
{
    for (launch *l = L.all; l; l = l->next)
        if (l->id == id) return l;
    return NULL;
}

void launcher_pool_registered(rl_daemon *d, pool *p, int64_t launch_id, const int32_t *rank_pids, size_t n)
{
    (void)d;
    launch *l = launch_id ? find_launch(launch_id) : NULL;
    if (!l) return;
    l->registered = 1;
    l->pool_id = p->id;
    p->launch_id = launch_id;
    failures_of(l->job_id, -failures_of(l->job_id, 0));
    for (size_t i = 0; i < n && l->n_rank_pids < 64; i++)
        if (rank_pids[i] > 1) l->rank_pids[l->n_rank_pids++] = rank_pids[i];
}

static void signal_tree(launch *l, int sig)
{
    if (l->pid > 1) kill(-l->pid, sig); /* mpirun leads its own session and process group */
    for (int i = 0; i < l->n_rank_pids; i++) kill(l->rank_pids[i], sig);
}

void launcher_retire(rl_daemon *d, int64_t launch_id, const char *why)
{
    (void)d;
    launch *l = launch_id ? find_launch(launch_id) : NULL;
    if (!l || !l->running || l->retire_ms) return;
    log_info("launcher: retiring launch %lld (pid %d): %s", (long long)l->id, (int)l->pid, why);
    l->retire_ms = now_ms();
    signal_tree(l, SIGTERM);
}

void launcher_tick(rl_daemon *d)
{
    int64_t now = now_ms();
    for (launch *l = L.all; l; l = l->next) {
        if (!l->running) continue;
        if (l->retire_ms && now - l->retire_ms > RETIRE_GRACE_MS) {
            signal_tree(l, SIGKILL);
        } else if (!l->registered && !l->retire_ms && now - l->started_ms > LAUNCH_REGISTER_TIMEOUT_MS) {
            launch_failed(d, l, "no pool registered within 120 s");
            launcher_retire(d, l->id, "registration timeout");
            l->registered = 1; /* counted once */
        }
    }
}

void launcher_close(rl_daemon *d)
{
    (void)d;
    /* Launched pools outlive the daemon (they re-attach); only our process handles go. */
    for (launch *l = L.all; l; l = l->next)
        if (l->running && !uv_is_closing((uv_handle_t *)&l->proc)) {
            l->running = 0;
            uv_close((uv_handle_t *)&l->proc, launch_closed);
        }
    free(L.worker);
    L.worker = NULL;
}
