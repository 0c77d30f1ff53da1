/* comm.c — the ranks of a pool: MPI start-up, the gradient all-reduce hook (and ZeRO-1's reduce-scatter,
 * all-gather and checkpoint gather), and the few collectives the pool's control flow needs.
 *
 * Open MPI's blocking collectives spin while they wait.  That is right inside a training step (the wait
 * is short and the peer is working), but wrong where ranks wait for rank 0 for seconds or hours: for the
 * daemon's next assignment, or while rank 0 alone writes a model.  Those waits use the non-blocking
 * form and sleep between tests (50 µs, doubling to 5 ms), so an idle pool costs no CPU. */
#include <mpi.h>
#include <dlfcn.h>
#include <limits.h>
#include <link.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "worker.h"

static MPI_Comm g_meet = MPI_COMM_NULL; /* rl_comm_meet's: a duplicate of MPI_COMM_WORLD */
static int g_failed_seen; /* the last rl_comm_meet: some rank had failed (this one too, unless it met nobody) */

static int mpi_fail(int code, const char *what, char *err, size_t errlen)
{
    char msg[MPI_MAX_ERROR_STRING] = "";
    int len = 0;
    MPI_Error_string(code, msg, &len);
    snprintf(err, errlen, "%s: %s", what, msg);
    return -1;
}

int rl_comm_launched(void)
{
    static const char *const vars[] = {"OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_RANK", "SLURM_STEP_ID"};
    for (size_t i = 0; i < sizeof vars / sizeof vars[0]; i++)
        if (getenv(vars[i]))
            return 1;
    return 0;
}

static int host_cores(void)
{
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0 && CPU_COUNT(&set) > 0)
        return CPU_COUNT(&set);
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
}

/* Threads per rank: the host's cores split between the ranks on it (OMP_NUM_THREADS wins when set). */
static int threads_for(int local_size)
{
    if (getenv("OMP_NUM_THREADS"))
        return 0; /* the backend reads it */
    int t = host_cores() / (local_size > 0 ? local_size : 1);
    return t > 0 ? t : 1;
}

void rl_comm_single(rl_comm *c)
{
    memset(c, 0, sizeof *c);
    c->world = c->local_size = 1;
    c->threads = 0; /* backend default: every core */
}

/* Sanitizer builds: Open MPI unloads its plugins (mca_*.so) in MPI_Finalize, and LeakSanitizer, checking
 * at exit, now and then tripped over their stale dynamic-TLS records ("Tracer caught signal 11", about one
 * run in three here with clang 14).  Pinned (RTLD_NODELETE) they stay mapped until the process ends.  Their
 * process-lifetime allocations are suppressed by library name (main.c).  Other builds leave them alone. */
#if defined(__SANITIZE_ADDRESS__)
#define RL_SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define RL_SANITIZED 1
#endif
#endif

#ifdef RL_SANITIZED
static int pin_plugin(struct dl_phdr_info *info, size_t size, void *data)
{
    (void)size, (void)data;
    const char *slash = info->dlpi_name ? strrchr(info->dlpi_name, '/') : NULL;
    if (slash && strstr(slash, "mca_"))
        dlopen(info->dlpi_name, RTLD_LAZY | RTLD_NOLOAD | RTLD_NODELETE);
    return 0;
}
#endif

static void pin_mpi_plugins(void)
{
#ifdef RL_SANITIZED
    dl_iterate_phdr(pin_plugin, NULL);
#endif
}

int rl_comm_init(rl_comm *c, int *argc, char ***argv, char *err, size_t errlen)
{
    memset(c, 0, sizeof *c);
    int provided = 0, r = MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided);
    if (r != MPI_SUCCESS)
        return mpi_fail(r, "MPI_Init_thread", err, errlen);
    c->mpi = 1;
    if (provided < MPI_THREAD_FUNNELED) {
        snprintf(err, errlen, "this MPI library does not allow threads (MPI_THREAD_FUNNELED); the daemon link needs "
                 "one");
        return -1;
    }
    MPI_Comm_rank(MPI_COMM_WORLD, &c->rank);
    MPI_Comm_size(MPI_COMM_WORLD, &c->world);
    MPI_Comm local;
    r = MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, c->rank, MPI_INFO_NULL, &local);
    if (r != MPI_SUCCESS)
        return mpi_fail(r, "MPI_Comm_split_type", err, errlen);
    MPI_Comm_rank(local, &c->local_rank);
    MPI_Comm_size(local, &c->local_size);
    MPI_Comm_free(&local);
    r = MPI_Comm_dup(MPI_COMM_WORLD, &g_meet);
    if (r != MPI_SUCCESS)
        return mpi_fail(r, "MPI_Comm_dup", err, errlen);
    c->threads = threads_for(c->local_size);
    pin_mpi_plugins();
    return 0;
}

void rl_comm_finalize(rl_comm *c)
{
    rl_nccl_finalize(g_failed_seen); /* a CUDA pool's communicator, before MPI goes */
    pin_mpi_plugins(); /* and those loaded since MPI_Init */
    if (c->mpi && g_meet != MPI_COMM_NULL)
        MPI_Comm_free(&g_meet);
    if (c->mpi)
        MPI_Finalize();
    c->mpi = 0;
}

void rl_comm_abort(rl_comm *c, int code)
{
    if (c->mpi)
        MPI_Abort(MPI_COMM_WORLD, code);
}

int rl_comm_allreduce_sum(void *ctx, float *buf, size_t n, char *err, size_t errlen)
{
    (void)ctx;
    while (n > 0) {
        int part = n > (size_t)INT_MAX ? INT_MAX : (int)n;
        int r = MPI_Allreduce(MPI_IN_PLACE, buf, part, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
        if (r != MPI_SUCCESS) {
            mpi_fail(r, "MPI_Allreduce", err, errlen);
            return RL_EINVAL;
        }
        buf += part, n -= (size_t)part;
    }
    return 0;
}

/* Non-blocking all-reduces in flight (the gradient buckets of one step), by request id. */
#define MAX_INFLIGHT 4096
static MPI_Request inflight[MAX_INFLIGHT];
static int n_inflight_ids; /* ids handed out since the last time every request was waited for */
static int n_open;

int rl_comm_allreduce_start(void *ctx, float *buf, size_t n, int *req, char *err, size_t errlen)
{
    (void)ctx;
    if (n > (size_t)INT_MAX) {
        snprintf(err, errlen, "an all-reduce of %zu floats is larger than MPI allows in one call: use smaller "
                 "--bucket-floats (at most %d)", n, INT_MAX);
        return RL_EINVAL;
    }
    if (!n_open)
        n_inflight_ids = 0;
    if (n_inflight_ids == MAX_INFLIGHT) {
        snprintf(err, errlen, "more than %d gradient buckets in flight: use larger --bucket-floats", MAX_INFLIGHT);
        return RL_EINVAL;
    }
    /* give the ones already started a chance to progress (Open MPI progresses inside MPI calls) */
    for (int k = 0; k < n_inflight_ids; k++)
        if (inflight[k] != MPI_REQUEST_NULL) {
            int done = 0;
            MPI_Test(&inflight[k], &done, MPI_STATUS_IGNORE);
        }
    const int k = n_inflight_ids;
    int r = MPI_Iallreduce(MPI_IN_PLACE, buf, (int)n, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD, &inflight[k]);
    if (r != MPI_SUCCESS) { /* (no id: nothing to wait for) */
        mpi_fail(r, "MPI_Iallreduce", err, errlen);
        return RL_EINVAL;
    }
    *req = k;
    n_inflight_ids++, n_open++;
    return 0;
}

int rl_comm_allreduce_wait(void *ctx, int req, char *err, size_t errlen)
{
    (void)ctx;
    if (req < 0 || req >= n_inflight_ids) {
        snprintf(err, errlen, "all-reduce request %d was not started", req);
        return RL_EINVAL;
    }
    int r = MPI_Wait(&inflight[req], MPI_STATUS_IGNORE); /* (a request MPI_Test completed is MPI_REQUEST_NULL) */
    n_open--;
    if (r != MPI_SUCCESS) {
        mpi_fail(r, "MPI_Wait (all-reduce)", err, errlen);
        return RL_EINVAL;
    }
    return 0;
}

/* Per-rank counts and offsets as MPI's ints: every rank's piece and their sum must fit one. */
static int mpi_counts(const size_t *counts, int **c, int **displs, char *err, size_t errlen)
{
    int world = 1;
    MPI_Comm_size(MPI_COMM_WORLD, &world);
    *c = malloc(sizeof **c * (size_t)world), *displs = malloc(sizeof **displs * (size_t)world);
    if (!*c || !*displs) {
        free(*c), free(*displs);
        snprintf(err, errlen, "out of memory");
        return RL_ENOMEM;
    }
    size_t at = 0;
    for (int r = 0; r < world; r++) {
        (*c)[r] = (int)counts[r], (*displs)[r] = (int)at;
        at += counts[r];
        if (counts[r] > (size_t)INT_MAX || at > (size_t)INT_MAX) {
            free(*c), free(*displs);
            snprintf(err, errlen, "a collective of %zu floats is larger than MPI allows in one call: use smaller "
                     "--bucket-floats (at most %d)", at, INT_MAX);
            return RL_EINVAL;
        }
    }
    return 0;
}

int rl_comm_reduce_scatter_sum(void *ctx, const float *buf, float *recv, const size_t *counts, char *err,
                               size_t errlen)
{
    (void)ctx;
    int *c, *displs, rc = mpi_counts(counts, &c, &displs, err, errlen);
    if (rc)
        return rc;
    int r = MPI_Reduce_scatter(buf, recv, c, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
    free(c), free(displs);
    return r == MPI_SUCCESS ? 0 : (mpi_fail(r, "MPI_Reduce_scatter", err, errlen), RL_EINVAL);
}

int rl_comm_allgather(void *ctx, float *buf, const size_t *counts, char *err, size_t errlen)
{
    (void)ctx;
    int *c, *displs, rc = mpi_counts(counts, &c, &displs, err, errlen);
    if (rc)
        return rc;
    int r = MPI_Allgatherv(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, buf, c, displs, MPI_FLOAT, MPI_COMM_WORLD);
    free(c), free(displs);
    return r == MPI_SUCCESS ? 0 : (mpi_fail(r, "MPI_Allgatherv", err, errlen), RL_EINVAL);
}

int rl_comm_gather_floats(void *ctx, const float *send, float *recv, const size_t *counts, char *err, size_t errlen)
{
    (void)ctx;
    int rank = 0, *c, *displs, rc = mpi_counts(counts, &c, &displs, err, errlen);
    if (rc)
        return rc;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    int r = MPI_Gatherv(send, c[rank], MPI_FLOAT, recv, c, displs, MPI_FLOAT, 0, MPI_COMM_WORLD);
    free(c), free(displs);
    return r == MPI_SUCCESS ? 0 : (mpi_fail(r, "MPI_Gatherv", err, errlen), RL_EINVAL);
}

static int wait_sleeping(MPI_Request *req, const char *what, char *err, size_t errlen)
{
    long sleep_ns = 50000;
    for (;;) {
        int done = 0, r = MPI_Test(req, &done, MPI_STATUS_IGNORE);
        if (r != MPI_SUCCESS)
            return mpi_fail(r, what, err, errlen);
        if (done)
            return 0;
        struct timespec ts = {0, sleep_ns};
        nanosleep(&ts, NULL);
        if (sleep_ns < 5000000)
            sleep_ns *= 2;
    }
}

int rl_comm_meet(const rl_comm *c, int failed, char *err, size_t errlen)
{
    if (c->world <= 1 || g_meet == MPI_COMM_NULL)
        return 0;
    if (failed) /* (peers waiting on NCCL for this rank's part of a collective stop now, not at their deadline) */
        rl_nccl_stage_failed();
    const char *env = getenv("RADLADS_FAIL_WAIT_S");
    const double limit = env && atof(env) > 0 ? atof(env) : 300.0;
    MPI_Request req;
    static int mine;
    mine = failed != 0;
    /* (a barrier that also tells whether any rank failed: rl_comm_finalize then aborts NCCL instead of flushing it) */
    int r = MPI_Iallreduce(&mine, &g_failed_seen, 1, MPI_INT, MPI_MAX, g_meet, &req);
    if (r != MPI_SUCCESS)
        return mpi_fail(r, "MPI_Iallreduce (the ranks' meeting)", err, errlen);
    if (!failed)
        return wait_sleeping(&req, "MPI_Iallreduce (the ranks' meeting)", err, errlen);
    struct timespec t0, t;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (;;) {
        int done = 0;
        r = MPI_Test(&req, &done, MPI_STATUS_IGNORE);
        if (r != MPI_SUCCESS)
            return mpi_fail(r, "MPI_Test", err, errlen);
        if (done)
            return 0;
        clock_gettime(CLOCK_MONOTONIC, &t);
        if ((double)(t.tv_sec - t0.tv_sec) + 1e-9 * (double)(t.tv_nsec - t0.tv_nsec) > limit) {
            snprintf(err, errlen, "the other ranks did not stop within %g s of this rank's failure (they wait in a "
                     "collective it left; RADLADS_FAIL_WAIT_S sets the wait)", limit);
            return -1;
        }
        struct timespec ts = {0, 20000000};
        nanosleep(&ts, NULL);
    }
}

int rl_comm_bcast(const rl_comm *c, void *buf, size_t n, char *err, size_t errlen)
{
    if (c->world <= 1)
        return 0;
    if (n > (size_t)INT_MAX) {
        snprintf(err, errlen, "broadcast of %zu bytes is larger than MPI allows in one call", n);
        return -1;
    }
    MPI_Request req;
    int r = MPI_Ibcast(buf, (int)n, MPI_BYTE, 0, MPI_COMM_WORLD, &req);
    if (r != MPI_SUCCESS)
        return mpi_fail(r, "MPI_Ibcast", err, errlen);
    return wait_sleeping(&req, "MPI_Ibcast", err, errlen);
}

int rl_comm_gather(const rl_comm *c, const void *send, size_t n, void *recv, char *err, size_t errlen)
{
    if (c->world <= 1) {
        memcpy(recv, send, n);
        return 0;
    }
    if (n > (size_t)INT_MAX) {
        snprintf(err, errlen, "gather of %zu bytes per rank is larger than MPI allows in one call", n);
        return -1;
    }
    MPI_Request req;
    int r = MPI_Igather(send, (int)n, MPI_BYTE, recv, (int)n, MPI_BYTE, 0, MPI_COMM_WORLD, &req);
    if (r != MPI_SUCCESS)
        return mpi_fail(r, "MPI_Igather", err, errlen);
    return wait_sleeping(&req, "MPI_Igather", err, errlen);
}
