/* poolsim: plays rank 0 of a worker pool over the real protocol, so the daemon's pool handling can be
 * tested before (and independently of) the real trainer: registers, takes assignments, reports
 * progress, writes a real checkpoint file (sha256 from sha256sum), and ends each stage as --mode says:
 *   ok | fail | fail-once (fail the first assignment, then ok) | disconnect (exit mid-stage) |
 *   hang (stop progressing, keep heartbeating).  A Control STOP ends the stage as stopped.
 * It also accepts the command line radladsd's local launcher gives radlads-worker (`pool --connect
 * unix:PATH --token-file F --launch-id N --device D [--name P]`, mode etc. from POOLSIM_MODE,
 * POOLSIM_STEPS, POOLSIM_STEP_MS), so launching under real mpirun can be tested: rank 0 plays the pool,
 * other ranks just wait to be killed.  Under srun the rank comes from SLURM_PROCID instead. */
#include "proto.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static rl_client c;
static int heartbeat_ms = 1000;
/* --reconnect: a lost daemon is retried (every 100 ms) and the pool registers again with its pool id and
 * the attempt it is running, as a real worker does, so the daemon can re-attach it. */
static int reconnect_mode;
static int64_t pool_id;
static const char *g_socket, *g_name, *g_device;
static char g_token[128];
static int g_ranks;
static int64_t g_launch_id;
static void register_pool(void);
static int64_t last_hb;
static int stop_requested, drain_requested;

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int64_t attempt_id;

static void reconnect(void)
{
    rl_client_close(&c);
    char err[512];
    for (;;) {
        usleep(100000);
        if (rl_client_connect(&c, g_socket, RADLADS__ROLE__ROLE_POOL, g_token, err, sizeof err) == 0) break;
    }
    printf("poolsim: reconnected; re-registering pool %lld with attempt %lld\n", (long long)pool_id, (long long)attempt_id);
    fflush(stdout);
    register_pool();
}

static void send_env(Radlads__Envelope *env)
{
    char err[512];
    while (rl_client_send(&c, env, err, sizeof err) < 0) {
        if (!reconnect_mode) {
            fprintf(stderr, "poolsim: %s\n", err);
            exit(4);
        }
        reconnect();
    }
}

static void heartbeat(void)
{
    if (mono_ms() - last_hb < heartbeat_ms) return;
    last_hb = mono_ms();
    Radlads__Heartbeat hb = RADLADS__HEARTBEAT__INIT;
    hb.attempt_id = attempt_id;
    Radlads__Envelope env = RADLADS__ENVELOPE__INIT;
    env.msg_case = RADLADS__ENVELOPE__MSG_HEARTBEAT;
    env.heartbeat = &hb;
    send_env(&env);
}

/* Waits up to ms for a message, heartbeating meanwhile.  Returns it or NULL. */
static Radlads__Envelope *poll_msg(int ms)
{
    int64_t end = mono_ms() + ms;
    char err[512];
    for (;;) {
        heartbeat();
        int64_t left = end - mono_ms();
        if (left < 0) left = 0;
        int slice = left < 100 ? (int)left : 100;
        Radlads__Envelope *e;
        int rc = rl_client_recv(&c, &e, slice, err, sizeof err);
        if (rc == 0) {
            if (e->msg_case == RADLADS__ENVELOPE__MSG_CONTROL) {
                printf("poolsim: control %d\n", e->control->kind);
                fflush(stdout);
                if (e->control->kind == RADLADS__CONTROL_KIND__CONTROL_STOP) stop_requested = 1;
                if (e->control->kind == RADLADS__CONTROL_KIND__CONTROL_DRAIN) drain_requested = 1;
                radlads__envelope__free_unpacked(e, NULL);
                continue;
            }
            return e;
        }
        if (rc != -RL_E_TIMEOUT) {
            printf("poolsim: connection ended: %s\n", err);
            fflush(stdout);
            if (!reconnect_mode) exit(0);
            reconnect();
            continue;
        }
        if (left == 0) return NULL;
    }
}

static void finish(int ok, const char *reason, const char *out)
{
    Radlads__StageFinished f = RADLADS__STAGE_FINISHED__INIT;
    f.attempt_id = attempt_id;
    f.ok = ok;
    f.reason = (char *)reason;
    f.output_dir = (char *)out;
    Radlads__Envelope env = RADLADS__ENVELOPE__INIT;
    env.msg_case = RADLADS__ENVELOPE__MSG_STAGE_FINISHED;
    env.stage_finished = &f;
    send_env(&env);
}

static void checkpoint(const char *dir, int64_t step)
{
    char path[4200], cmd[4400], sum[128] = "";
    snprintf(cmd, sizeof cmd, "mkdir -p '%s'", dir);
    if (system(cmd) != 0) return;
    snprintf(path, sizeof path, "%s/ckpt-a%lld-s%lld", dir, (long long)attempt_id, (long long)step);
    FILE *f = fopen(path, "w");
    if (!f) return;
    fprintf(f, "attempt %lld step %lld\n", (long long)attempt_id, (long long)step);
    fclose(f);
    snprintf(cmd, sizeof cmd, "sha256sum '%s'", path);
    FILE *p = popen(cmd, "r");
    if (p) {
        if (fscanf(p, "%64s", sum) != 1) sum[0] = 0;
        pclose(p);
    }
    Radlads__CheckpointSaved m = RADLADS__CHECKPOINT_SAVED__INIT;
    m.attempt_id = attempt_id;
    m.step = step;
    m.tokens = step * 1000;
    m.path = path;
    m.sha256 = sum;
    Radlads__Envelope env = RADLADS__ENVELOPE__INIT;
    env.msg_case = RADLADS__ENVELOPE__MSG_CHECKPOINT_SAVED;
    env.checkpoint_saved = &m;
    send_env(&env);
    char text[4400];
    snprintf(text, sizeof text, "checkpoint saved at step %lld: %s", (long long)step, path);
    Radlads__LogLine line = RADLADS__LOG_LINE__INIT;
    line.attempt_id = attempt_id;
    line.rank = 0;
    line.level = "info";
    line.text = text;
    Radlads__Envelope le = RADLADS__ENVELOPE__INIT;
    le.msg_case = RADLADS__ENVELOPE__MSG_LOG;
    le.log = &line;
    send_env(&le);
}

static void register_pool(void)
{
    char err[1024];
    Radlads__RegisterPool reg = RADLADS__REGISTER_POOL__INIT;
    int32_t pids[1] = {(int32_t)getpid()};
    reg.name = (char *)g_name;
    reg.ranks = g_ranks;
    reg.device = (char *)g_device;
    reg.host = "localhost";
    reg.rank_pids = pids;
    reg.n_rank_pids = 1;
    reg.launch_id = g_launch_id;
    reg.pool_id = pool_id;
    reg.attempt_id = attempt_id;
    Radlads__Envelope env = RADLADS__ENVELOPE__INIT, *reply;
    env.msg_case = RADLADS__ENVELOPE__MSG_REGISTER_POOL;
    env.register_pool = &reg;
    if (rl_client_call(&c, &env, &reply, RADLADS__ENVELOPE__MSG_POOL_REGISTERED, err, sizeof err) < 0) {
        fprintf(stderr, "poolsim: %s\n", err);
        exit(3);
    }
    heartbeat_ms = reply->pool_registered->heartbeat_ms > 0 ? reply->pool_registered->heartbeat_ms : 1000;
    pool_id = reply->pool_registered->pool_id;
    printf("poolsim: registered pool %lld\n", (long long)pool_id);
    fflush(stdout);
    radlads__envelope__free_unpacked(reply, NULL);
}

int main(int argc, char **argv)
{
    const char *socket_path = NULL, *token_file = NULL, *mode = "ok", *name = "", *device = "cpu";
    int ranks = 1, steps = 4, step_ms = 20, max_assignments = 1000000;
    int64_t launch_id = 0;
    if (getenv("POOLSIM_MODE")) mode = getenv("POOLSIM_MODE");
    if (getenv("POOLSIM_STEPS")) steps = atoi(getenv("POOLSIM_STEPS"));
    if (getenv("POOLSIM_STEP_MS")) step_ms = atoi(getenv("POOLSIM_STEP_MS"));
    const char *world = getenv("OMPI_COMM_WORLD_SIZE"), *rank = getenv("OMPI_COMM_WORLD_RANK");
    if (!world && getenv("SLURM_STEP_ID")) { /* started by srun (the Slurm launcher) */
        world = getenv("SLURM_NTASKS");
        rank = getenv("SLURM_PROCID");
    }
    if (world) ranks = atoi(world);
    if (rank && atoi(rank) != 0) {
        printf("poolsim: rank %s of %s waiting\n", rank, world);
        fflush(stdout);
        for (;;) pause(); /* a non-zero rank: the launcher's SIGTERM ends it */
    }
    for (int i = 1; i < argc; i++) {
        if (i == 1 && !strcmp(argv[i], "pool")) continue;
        if (!strcmp(argv[i], "--connect") && i + 1 < argc) {
            socket_path = argv[++i];
            if (!strncmp(socket_path, "unix:", 5)) socket_path += 5;
        } else if (!strcmp(argv[i], "--launch-id") && i + 1 < argc) launch_id = atoll(argv[++i]);
        else if (!strcmp(argv[i], "--socket") && i + 1 < argc) socket_path = argv[++i];
        else if (!strcmp(argv[i], "--reconnect")) reconnect_mode = 1;
        else if (!strcmp(argv[i], "--token-file") && i + 1 < argc) token_file = argv[++i];
        else if (!strcmp(argv[i], "--mode") && i + 1 < argc) mode = argv[++i];
        else if (!strcmp(argv[i], "--name") && i + 1 < argc) name = argv[++i];
        else if (!strcmp(argv[i], "--device") && i + 1 < argc) device = argv[++i];
        else if (!strcmp(argv[i], "--ranks") && i + 1 < argc) ranks = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--steps") && i + 1 < argc) steps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--step-ms") && i + 1 < argc) step_ms = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--max-assignments") && i + 1 < argc) max_assignments = atoi(argv[++i]);
        else {
            fprintf(stderr, "poolsim: unknown argument %s\n", argv[i]);
            return 2;
        }
    }
    char token[128] = "";
    FILE *tf = token_file ? fopen(token_file, "r") : NULL;
    if (tf) {
        if (!fgets(token, sizeof token, tf)) token[0] = 0;
        fclose(tf);
    }
    char err[1024];
    if (rl_client_connect(&c, socket_path, RADLADS__ROLE__ROLE_POOL, token, err, sizeof err) < 0) {
        fprintf(stderr, "poolsim: %s\n", err);
        return 3;
    }
    g_socket = socket_path, g_name = name, g_device = device, g_ranks = ranks, g_launch_id = launch_id;
    snprintf(g_token, sizeof g_token, "%s", token);
    register_pool();
    int assignments = 0;
    while (assignments < max_assignments) {
        Radlads__Envelope *e = poll_msg(1000);
        if (!e) continue;
        if (e->msg_case != RADLADS__ENVELOPE__MSG_ASSIGNMENT) {
            radlads__envelope__free_unpacked(e, NULL);
            continue;
        }
        Radlads__StageAssignment *a = e->assignment;
        attempt_id = a->attempt_id;
        stop_requested = drain_requested = 0;
        assignments++;
        printf("poolsim: assignment job=%lld stage=%d(%s) attempt=%lld resume_from=%s\n", (long long)a->job_id,
               a->stage_idx, a->stage, (long long)a->attempt_id, a->resume_from);
        fflush(stdout);
        char out[4096];
        snprintf(out, sizeof out, "%s", a->output_dir);
        radlads__envelope__free_unpacked(e, NULL);
        int hang = 0, stopped = 0;
        for (int s = 1; s <= steps && !stopped; s++) {
            Radlads__Envelope *m = poll_msg(step_ms);
            if (m) radlads__envelope__free_unpacked(m, NULL);
            if (stop_requested) {
                stopped = 1;
                break;
            }
            if (drain_requested) {
                checkpoint(out, s); /* drain: checkpoint now, then stop */
                stopped = 2;
                break;
            }
            if (hang) {
                s--;
                continue;
            }
            Radlads__Progress p = RADLADS__PROGRESS__INIT;
            p.attempt_id = attempt_id;
            p.step = s;
            p.tokens = s * 1000;
            p.loss = 10.0 / s;
            p.lr = 1e-3;
            p.tokens_per_s = 1000.0 / (step_ms / 1000.0 + 1e-9);
            /* memory: (1 + step % 3) MiB held, and a peak of 3 MiB from the third step on */
            p.mem_live_bytes = (1 + s % 3) << 20;
            p.mem_peak_bytes = (s >= 2 ? 3 : 1 + s % 3) << 20;
            Radlads__Envelope pe = RADLADS__ENVELOPE__INIT;
            pe.msg_case = RADLADS__ENVELOPE__MSG_PROGRESS;
            pe.progress = &p;
            send_env(&pe);
            if (s == (steps + 1) / 2) {
                checkpoint(out, s);
                if (!strcmp(mode, "disconnect")) {
                    printf("poolsim: disconnecting mid-stage\n");
                    fflush(stdout);
                    _exit(3);
                }
                if (!strcmp(mode, "hang")) hang = 1;
            }
        }
        if (stopped == 2) finish(0, "drained", out);
        else if (stopped) finish(0, "stopped by the daemon", out);
        else if (!strcmp(mode, "fail") || (!strcmp(mode, "fail-once") && assignments == 1))
            finish(0, "simulated failure", out);
        else finish(1, "", out);
    }
    rl_client_close(&c);
    return 0;
}
