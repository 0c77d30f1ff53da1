/* pool.c — `radlads-worker pool`: one MPI job that radladsd schedules stages onto.
 *
 *   every rank          MPI_Init; pids and host names gathered to rank 0
 *   rank 0              connects (link.c), Hello{ROLE_POOL, token}, RegisterPool{ranks, pids, host, launch id}
 *   loop:  rank 0       waits for a StageAssignment; broadcasts it (protobuf bytes) to every rank
 *          every rank   runs the stage (assign.c): training stages data parallel, the others on rank 0
 *          every rank   gathers (rc, error text) to rank 0, which sends StageFinished{ok | reason}
 *
 * While a stage trains, rank 0's hooks turn the trainer's reports into messages (Progress at most every
 * --progress-ms and on the last step, CheckpointSaved with the manifest's SHA-256, LogLine for each
 * printed line) and hand the daemon's Control requests to the trainer, which agrees on them across ranks.
 * The pool ends when the daemon refuses it, when it has been without the daemon for --reconnect-timeout
 * while idle, or by a signal (the launcher's SIGTERM to mpirun's process group). */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "worker.h"

enum { CMD_RUN = 1, CMD_EXIT = 2 };

typedef struct {
    int32_t cmd;
    uint32_t len;
} pool_cmd;

typedef struct {
    int32_t rc;
    char msg[1020];
} rank_result;

typedef struct {
    rl_comm *comm;
    rl_link *link; /* rank 0 */
    int64_t attempt_id, last_sent_ms;
    int progress_ms;
    double last_loss;
    int cuda; /* --device cuda: CUDA backend, NCCL between ranks */
} pool_ctx;

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void send_log(pool_ctx *p, const char *level, const char *text)
{
    if (!p->link)
        return;
    Radlads__LogLine m = RADLADS__LOG_LINE__INIT;
    m.attempt_id = p->attempt_id;
    m.rank = p->comm->rank;
    m.level = (char *)level;
    m.text = (char *)text;
    Radlads__Envelope env = RADLADS__ENVELOPE__INIT;
    env.msg_case = RADLADS__ENVELOPE__MSG_LOG;
    env.log = &m;
    rl_link_send(p->link, &env);
}

/* ---- trainer hooks (rank 0 reports; every rank reduces) ---- */

static void hook_progress(void *ctx, const rl_train_progress *pr)
{
    pool_ctx *p = ctx;
    p->last_loss = pr->loss;
    if (!p->link)
        return;
    rl_link_set_step(p->link, pr->step);
    int64_t now = mono_ms();
    if (pr->step != pr->total_steps && p->last_sent_ms && now - p->last_sent_ms < p->progress_ms)
        return;
    p->last_sent_ms = now;
    Radlads__Progress m = RADLADS__PROGRESS__INIT;
    m.attempt_id = p->attempt_id;
    m.step = pr->step;
    m.tokens = pr->tokens;
    m.loss = pr->loss;
    m.lr = pr->lr;
    m.tokens_per_s = pr->tokens_per_s;
    m.grad_norm = pr->grad_norm;
    m.mem_live_bytes = pr->mem_live_bytes;
    m.mem_peak_bytes = pr->mem_peak_bytes;
    m.time_ms = wall_ms();
    Radlads__Envelope env = RADLADS__ENVELOPE__INIT;
    env.msg_case = RADLADS__ENVELOPE__MSG_PROGRESS;
    env.progress = &m;
    rl_link_send(p->link, &env);
}

static void hook_checkpoint(void *ctx, const rl_ckpt_info *info, const char *path)
{
    pool_ctx *p = ctx;
    if (!p->link)
        return;
    Radlads__CheckpointSaved m = RADLADS__CHECKPOINT_SAVED__INIT;
    m.attempt_id = p->attempt_id;
    m.step = info->step;
    m.tokens = info->tokens;
    m.path = (char *)path;
    m.sha256 = (char *)info->sha256;
    Radlads__Envelope env = RADLADS__ENVELOPE__INIT;
    env.msg_case = RADLADS__ENVELOPE__MSG_CHECKPOINT_SAVED;
    env.checkpoint_saved = &m;
    rl_link_send(p->link, &env);
    char line[4400];
    snprintf(line, sizeof line, "%s: checkpoint at step %lld (%lld tokens): %s", info->stage, (long long)info->step,
             (long long)info->tokens, path);
    printf("%s\n", line);
    fflush(stdout);
    send_log(p, "info", line);
}

static int hook_control(void *ctx)
{
    pool_ctx *p = ctx;
    return p->link ? rl_link_take_control(p->link) : 0;
}

static void hook_log(void *ctx, const char *level, const char *text)
{
    send_log(ctx, level, text);
}

/* ---- start-up ---- */

static void pool_usage(FILE *f)
{
    fprintf(f, "usage: radlads-worker pool --connect unix:PATH|tcp:HOST:PORT --token-file FILE [--launch-id N]\n"
               "         [--device cpu|cuda] [--name NAME] [--progress-ms 200] [--reconnect-timeout 600]\n"
               "         [--register-timeout 60] [--bucket-floats N]\n"
               "Run under mpirun (one process per rank): rank 0 registers the pool with radladsd and every rank\n"
               "trains the stages the daemon assigns, data parallel.  --token-file is the daemon's STATE_DIR/token.\n"
               "--register-timeout: give up when the first registration has not succeeded in this many seconds.\n"
               "--reconnect-timeout: an idle pool that cannot reach the daemon this long (seconds) exits.\n");
}

static int read_token(const char *path, char *tok, size_t len, char *err, size_t errlen)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        snprintf(err, errlen, "--token-file %s: %s (it is the daemon's STATE_DIR/token)", path, strerror(errno));
        return -1;
    }
    if (!fgets(tok, (int)len, f))
        tok[0] = 0;
    fclose(f);
    tok[strcspn(tok, "\r\n")] = 0;
    if (!tok[0]) {
        snprintf(err, errlen, "--token-file %s is empty", path);
        return -1;
    }
    return 0;
}

/* Host names of all ranks: one name, or the distinct names joined by commas. */
static void join_hosts(const char *all, int world, char *out, size_t len)
{
    out[0] = 0;
    for (int r = 0; r < world; r++) {
        const char *h = all + (size_t)r * 64;
        int seen = 0;
        for (int q = 0; q < r && !seen; q++)
            seen = !strcmp(h, all + (size_t)q * 64);
        if (seen)
            continue;
        size_t n = strlen(out);
        snprintf(out + n, len - n, "%s%s", n ? "," : "", h);
    }
}

/* ---- one assignment ---- */

/* Rank 0: the attempt's end to the daemon. */
static void stage_finished(pool_ctx *p, const Radlads__StageAssignment *a, int ok, const char *reason)
{
    Radlads__StageFinished f = RADLADS__STAGE_FINISHED__INIT;
    f.attempt_id = a->attempt_id;
    f.ok = ok;
    f.reason = (char *)reason;
    f.output_dir = a->output_dir;
    f.final_loss = p->last_loss;
    Radlads__Envelope env = RADLADS__ENVELOPE__INIT;
    env.msg_case = RADLADS__ENVELOPE__MSG_STAGE_FINISHED;
    env.stage_finished = &f;
    rl_link_send(p->link, &env);
    rl_link_end_attempt(p->link);
}

static void run_assignment(pool_ctx *p, const uint8_t *buf, size_t len, size_t bucket_floats)
{
    Radlads__StageAssignment *a = radlads__stage_assignment__unpack(NULL, len, buf);
    rank_result mine = {0}, *all = NULL;
    rl_train_hooks hooks = {.ctx = p, .allreduce_sum = rl_comm_allreduce_sum,
                            .allreduce_start = rl_comm_allreduce_start, .allreduce_wait = rl_comm_allreduce_wait, .progress = hook_progress,
                            .checkpoint = hook_checkpoint, .control = hook_control, .log = hook_log,
                            .reduce_scatter_sum = rl_comm_reduce_scatter_sum, .allgather = rl_comm_allgather,
                            .gather = rl_comm_gather_floats};
    if (p->cuda)
        rl_worker_use_nccl(&hooks, p->comm);
    rl_stage_ctx sctx = {.comm = p->comm, .hooks = &hooks, .bucket_floats = bucket_floats, .cuda = p->cuda};
    p->last_loss = 0, p->last_sent_ms = 0;
    if (!a) {
        mine.rc = RL_EINVAL;
        snprintf(mine.msg, sizeof mine.msg, "undecodable StageAssignment from radladsd (%zu bytes)", len);
    } else {
        p->attempt_id = a->attempt_id;
        if (p->comm->rank == 0) {
            char line[4400];
            snprintf(line, sizeof line, "attempt %lld: job %lld stage %d (%s) on %d rank(s)%s%s -> %s",
                     (long long)a->attempt_id, (long long)a->job_id, a->stage_idx, a->stage, p->comm->world,
                     *a->resume_from ? ", resuming from " : "", a->resume_from, a->output_dir);
            printf("%s\n", line);
            fflush(stdout);
            send_log(p, "info", line);
        }
        mine.rc = rl_assignment_run(a, &sctx, mine.msg, sizeof mine.msg);
        if (mine.rc && p->comm->rank != 0)
            fprintf(stderr, "radlads-worker rank %d: %s\n", p->comm->rank, mine.msg);
    }
    char gerr[256];
    if (rl_comm_meet(p->comm, mine.rc != 0, gerr, sizeof gerr) < 0) {
        fprintf(stderr, "radlads-worker rank %d: %s: ending the pool (MPI_Abort)\n", p->comm->rank, gerr);
        if (p->comm->rank == 0 && a) { /* the daemon learns why before the pool goes */
            char reason[1400];
            snprintf(reason, sizeof reason, "%s; the other ranks did not stop with rank 0: the pool ended", mine.msg);
            stage_finished(p, a, 0, reason);
            rl_link_stop(p->link, 5000);
        }
        rl_comm_abort(p->comm, 5);
    }
    if (p->comm->rank == 0)
        all = calloc((size_t)p->comm->world, sizeof *all);
    if (rl_comm_gather(p->comm, &mine, sizeof mine, all, gerr, sizeof gerr) < 0) {
        fprintf(stderr, "radlads-worker rank %d: %s\n", p->comm->rank, gerr);
        rl_comm_abort(p->comm, 5); /* the ranks no longer agree on where they are */
    }
    if (p->comm->rank == 0 && a) {
        /* Rank 0's reason first; else the first rank that failed. */
        int bad = -1;
        for (int r = 0; r < p->comm->world && bad < 0; r++)
            if (all && all[r].rc)
                bad = r;
        if (mine.rc)
            bad = 0;
        char reason[1100] = "";
        if (bad == 0)
            snprintf(reason, sizeof reason, "%s", mine.msg);
        else if (bad > 0)
            snprintf(reason, sizeof reason, "rank %d: %s", bad, all[bad].msg);
        if (bad >= 0) {
            fprintf(stderr, "radlads-worker: attempt %lld (%s) failed: %s\n", (long long)a->attempt_id, a->stage,
                    reason);
            send_log(p, "error", reason);
        }
        stage_finished(p, a, bad < 0, reason);
    }
    p->attempt_id = 0;
    free(all);
    if (a)
        radlads__stage_assignment__free_unpacked(a, NULL);
}

int rl_pool_main(int argc, char **argv)
{
    enum { O_CONNECT = 1000, O_TOKEN, O_LAUNCH, O_DEVICE, O_NAME, O_PROGRESS, O_RECONNECT, O_BUCKET, O_REGISTER,
           O_HELP };
    static const struct option opts[] = {
        {"connect", 1, 0, O_CONNECT}, {"token-file", 1, 0, O_TOKEN}, {"launch-id", 1, 0, O_LAUNCH},
        {"device", 1, 0, O_DEVICE}, {"name", 1, 0, O_NAME}, {"progress-ms", 1, 0, O_PROGRESS},
        {"reconnect-timeout", 1, 0, O_RECONNECT}, {"bucket-floats", 1, 0, O_BUCKET},
        {"register-timeout", 1, 0, O_REGISTER}, {"help", 0, 0, O_HELP}, {0, 0, 0, 0}};
    const char *connect = NULL, *token_file = NULL, *device = "cpu", *name = "";
    long long launch_id = 0, progress_ms = 200, reconnect_s = 600, bucket = 0, register_s = 60;
    int o;
    optind = 1;
    while ((o = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        char *end = NULL;
        long long *num = o == O_LAUNCH ? &launch_id : o == O_PROGRESS ? &progress_ms : o == O_RECONNECT ?
                         &reconnect_s : o == O_BUCKET ? &bucket : o == O_REGISTER ? &register_s : NULL;
        switch (o) {
        case O_CONNECT: connect = optarg; break;
        case O_TOKEN: token_file = optarg; break;
        case O_DEVICE: device = optarg; break;
        case O_NAME: name = optarg; break;
        case O_LAUNCH: case O_PROGRESS: case O_RECONNECT: case O_BUCKET: case O_REGISTER:
            errno = 0;
            *num = strtoll(optarg, &end, 10);
            if (errno || !end || *end || *num < 0) {
                fprintf(stderr, "radlads-worker pool: --%s expects a non-negative integer, got \"%s\"\n",
                        opts[o - O_CONNECT].name, optarg);
                return 2;
            }
            break;
        case O_HELP: pool_usage(stdout); return 0;
        default: pool_usage(stderr); return 2;
        }
    }
    if (!connect || !token_file || optind < argc) {
        fprintf(stderr, "radlads-worker pool: --connect and --token-file are required\n");
        pool_usage(stderr);
        return 2;
    }
    if (strcmp(device, "cpu") && strcmp(device, "cuda")) {
        fprintf(stderr, "radlads-worker pool: --device: expected cpu or cuda, got \"%s\"\n", device);
        return 2;
    }
#ifndef RL_HAVE_CUDA
    if (!strcmp(device, "cuda")) {
        fprintf(stderr, "radlads-worker pool: --device cuda: this radlads-worker was built without CUDA (nvcc was not "
                "found when it was configured); rebuild on a machine with the CUDA toolkit, or run a CPU pool\n");
        return 2;
    }
#endif
    /* A daemon that closes the socket must be an EPIPE for the link to handle, not the end of rank 0. */
    signal(SIGPIPE, SIG_IGN);
    char err[1100] = "";
    rl_comm comm;
    if (rl_comm_init(&comm, &argc, &argv, err, sizeof err) < 0) {
        fprintf(stderr, "radlads-worker pool: %s\n", err);
        rl_comm_finalize(&comm);
        return 1;
    }
    /* Rank 0 registers every rank's pid (the launcher signals them) and host. */
    int32_t pid = (int32_t)getpid();
    char host[64] = "";
    gethostname(host, sizeof host - 1);
    int32_t *pids = calloc((size_t)comm.world, sizeof *pids);
    char *hosts = calloc((size_t)comm.world, 64);
    int rc = pids && hosts ? 0 : -1;
    if (!rc)
        rc = rl_comm_gather(&comm, &pid, sizeof pid, pids, err, sizeof err);
    if (!rc)
        rc = rl_comm_gather(&comm, host, sizeof host, hosts, err, sizeof err);
    pool_ctx p = {.comm = &comm, .progress_ms = (int)progress_ms, .cuda = !strcmp(device, "cuda")};
    int32_t status = rc ? 1 : 0;
    if (comm.rank == 0 && !rc) {
        char token[256], hostlist[512];
        join_hosts(hosts, comm.world, hostlist, sizeof hostlist);
        rl_link_opts lo = {.connect = connect, .name = name, .device = device, .host = hostlist,
                           .ranks = comm.world, .rank_pids = pids, .n_rank_pids = comm.world,
                           .launch_id = launch_id,
                           .register_timeout_ms = register_s > 0 && register_s < 86400 ? (int)register_s * 1000 : 60000};
        if (read_token(token_file, token, sizeof token, err, sizeof err) < 0 ||
            (lo.token = token, rl_link_start(&p.link, &lo, err, sizeof err) < 0))
            status = 3;
        else
            printf("radlads-worker pool: registered with radladsd at %s as pool %lld: %d rank(s) on %s, %d compute "
                   "thread(s) per rank\n", connect, (long long)rl_link_pool_id(p.link), comm.world, hostlist,
                   comm.threads ? comm.threads : 1);
        fflush(stdout);
    }
    char berr[256];
    if (rl_comm_bcast(&comm, &status, sizeof status, berr, sizeof berr) < 0)
        status = 1;
    if (status) {
        if (comm.rank == 0)
            fprintf(stderr, "radlads-worker pool: %s\n", err[0] ? err : berr);
        free(pids), free(hosts);
        rl_comm_finalize(&comm);
        return (int)status;
    }
    int exit_code = 0;
    for (;;) {
        pool_cmd cmd = {0};
        uint8_t *buf = NULL;
        size_t len = 0;
        if (comm.rank == 0) {
            while (!cmd.cmd) {
                if (rl_link_next_assignment(p.link, &buf, &len, 1000)) {
                    cmd.cmd = CMD_RUN, cmd.len = (uint32_t)len;
                    break;
                }
                char why[1100] = "";
                int64_t down = rl_link_disconnected_ms(p.link, why, sizeof why);
                if (down < 0 || down > reconnect_s * 1000) {
                    if (down < 0)
                        fprintf(stderr, "radlads-worker pool: %s\n", why);
                    else
                        fprintf(stderr, "radlads-worker pool: no daemon for %lld s while idle (%s); exiting\n",
                                (long long)(down / 1000), why);
                    cmd.cmd = CMD_EXIT;
                    exit_code = 4;
                }
            }
        }
        if (rl_comm_bcast(&comm, &cmd, sizeof cmd, berr, sizeof berr) < 0) {
            fprintf(stderr, "radlads-worker rank %d: %s\n", comm.rank, berr);
            exit_code = 5;
            break;
        }
        if (cmd.cmd != CMD_RUN)
            break;
        if (comm.rank != 0)
            buf = malloc(cmd.len ? cmd.len : 1);
        if (!buf || rl_comm_bcast(&comm, buf, cmd.len, berr, sizeof berr) < 0) {
            fprintf(stderr, "radlads-worker rank %d: %s\n", comm.rank, buf ? berr : "out of memory");
            rl_comm_abort(&comm, 5);
        }
        run_assignment(&p, buf, cmd.len, (size_t)bucket);
        free(buf);
    }
    if (p.link)
        rl_link_stop(p.link, 5000);
    free(pids), free(hosts);
    rl_comm_finalize(&comm);
    return exit_code;
}
