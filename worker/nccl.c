/* nccl.c — the gradient collectives of a CUDA pool: NCCL between the ranks' GPUs, one GPU per rank (the
 * rank's local index on its host), the communicator made once per process from a unique id that rank 0
 * creates and broadcasts over MPI.
 *
 * The trainer's hooks receive device buffers (gradient buckets, ZeRO-1 shards, parameters) and host
 * buffers (a few scalars per step, checkpoint gathers of moments already downloaded).  Each hook looks at
 * the pointer: device memory goes through NCCL on the backend's own stream — so a collective is ordered
 * after the ops that produced the buffer — and the hook waits for it before returning (the trainer reads
 * the result next: the norm, the update); host memory goes through MPI as on CPU pools.
 *
 * ZeRO-1's pieces differ in size by rank (contiguous float-balanced shards), which NCCL's ReduceScatter and
 * AllGather do not allow: the reduce-scatter is one ncclReduce per owner and the all-gather one
 * ncclBroadcast per owner, each set fused into one NCCL group.
 *
 * The gradient buckets overlap the backward (rl_nccl_allreduce_start/wait): each goes on a second stream
 * after an event recorded on the backend's stream, and its completion is an event the backend's stream
 * waits for, so the backward does not wait for the network; the host waits only after the step's last bucket,
 * polling with the deadline below.
 *
 * The communicator is non-blocking and every wait of the host on NCCL polls with a deadline
 * (RADLADS_NCCL_TIMEOUT_S): a rank that never joins, or a collective a stuck peer never matches, aborts the
 * communicator with the reason instead of hanging the pool. A rank whose NCCL fails also tells the others at once
 * over MPI (alarm.c), and their polling waits end on that: its peers stop in milliseconds, not at the deadline
 * (NCCL itself may never tell them: a rank that aborted its communicator just stops answering). */
#include "worker.h"

#include <stdio.h>
#include <stdlib.h>

static const rl_comm *g_comm;

static int visible_gpus(void);

int rl_worker_gpu(const rl_comm *c, char *err, size_t errlen)
{
    const char *fake = getenv("RADLADS_TEST_VISIBLE_GPUS");
    const int n = fake ? atoi(fake) : visible_gpus();
    if (n <= 0 || n >= c->local_size)
        return c->local_rank;
    if (n == 1)
        return 0;
    snprintf(err, errlen, "%d ranks run on this host but it shows %d GPUs (one per rank is needed): start at most %d "
             "ranks per host (mpirun --map-by ppr:%d:node), or make more GPUs visible (CUDA_VISIBLE_DEVICES)",
             c->local_size, n, n, n);
    return -1;
}

static int ready(void *ctx, rl_backend *be, char *err, size_t errlen)
{
    (void)ctx;
    return g_comm && g_comm->world > 1 ? rl_nccl_attach(g_comm, be, err, errlen) : 0;
}

#ifdef RL_HAVE_CUDA
#include <cuda_runtime.h>
#include <mpi.h>
#include <nccl.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "alarm.h"
#include "validate.h"

static int visible_gpus(void)
{
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess) {
        cudaGetLastError();
        return 0;
    }
    return n;
}

static struct {
    ncclComm_t comm;
    cudaStream_t stream;
    int on, rank, world;
    int gen;                  /* communicators made so far: the alarm's generation (every rank counts alike) */
    int peer_rank;            /* a peer that said its NCCL failed in this generation, or −1 */
    char peer_why[512];
} N = {.peer_rank = -1};

static int nccl_error(ncclResult_t r, const char *what, char *err, size_t errlen)
{
    const char *detail = ncclGetLastError(N.on ? N.comm : NULL);
    snprintf(err, errlen, "%s: %s%s%s", what, ncclGetErrorString(r), detail && *detail ? ": " : "",
             detail ? detail : "");
    return RL_EINVAL;
}

/* Ends the communicator after a failure: ncclCommAbort, not ncclCommDestroy, which would first wait for collectives
 * that peers will never match. */
static void abort_comm(void)
{
    if (N.on)
        ncclCommAbort(N.comm);
    N.on = 0;
}

/* This rank's own failure (err says what): the peers are told (alarm.c), then the communicator is aborted. */
static void fail_comm(const char *err)
{
    if (N.on)
        rl_alarm_raise(N.gen, err);
    abort_comm();
}

/* Whether a peer said its NCCL failed on this communicator: a wait for a collective it will never match ends. */
static int peer_down(void)
{
    if (N.peer_rank < 0 && N.on)
        N.peer_rank = rl_alarm_heard(N.gen, N.peer_why, sizeof N.peer_why);
    return N.peer_rank >= 0;
}

static int peer_fail(const char *what, char *err, size_t errlen)
{
    snprintf(err, errlen, "%s on rank %d of %d: rank %d stopped first (%s): communicator aborted", what, N.rank,
             N.world, N.peer_rank, N.peer_why);
    abort_comm();
    return RL_EINVAL;
}

/* How long the host waits for NCCL: communicator set-up, a collective's enqueueing and completion. */
static double nccl_limit(void)
{
    const char *env = getenv("RADLADS_NCCL_TIMEOUT_S");
    return env && atof(env) > 0 ? atof(env) : 900.0;
}

static double seconds_since(const struct timespec *t0)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)(t.tv_sec - t0->tv_sec) + 1e-9 * (double)(t.tv_nsec - t0->tv_nsec);
}

/* a short sleep between polls: 2 µs, doubling to 1 ms */
static void nap(long *ns)
{
    struct timespec d = {0, *ns};
    nanosleep(&d, NULL);
    if (*ns < 1000000)
        *ns *= 2;
}

static int too_late(const char *what, double limit, char *err, size_t errlen)
{
    snprintf(err, errlen, "%s on rank %d of %d: not done after %g s (a peer is stuck or gone; "
             "RADLADS_NCCL_TIMEOUT_S sets the wait): communicator aborted", what, N.rank, N.world, limit);
    fail_comm(err);
    return RL_EINVAL;
}

/* The communicator is non-blocking (so that its set-up can have a deadline): any call may return ncclInProgress
 * and go on in the background until ncclCommGetAsyncError says ncclSuccess or an error. Waits for that, up to
 * RADLADS_NCCL_TIMEOUT_S; *late says the wait ran out (1) or ended because a peer said it failed (2). */
static ncclResult_t settle(ncclComm_t comm, ncclResult_t r, int *late)
{
    *late = 0;
    if (r != ncclInProgress)
        return r;
    const double limit = nccl_limit();
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    long ns = 2000;
    for (;;) {
        ncclResult_t q = ncclCommGetAsyncError(comm, &r);
        if (q != ncclSuccess)
            return q;
        if (r != ncclInProgress)
            return r;
        const int peer = peer_down();
        if (peer || seconds_since(&t0) > limit) {
            *late = peer ? 2 : 1;
            return ncclInProgress;
        }
        nap(&ns);
    }
}

/* An NCCL call's result once it is through: a system, network or internal error leaves the communicator unusable
 * (aborted); a call still in progress at the deadline too. */
static int check(ncclResult_t r, const char *what, char *err, size_t errlen)
{
    int late;
    const int polled = r == ncclInProgress;
    r = settle(N.comm, r, &late);
    if (late)
        return late == 2 ? peer_fail(what, err, errlen) : too_late(what, nccl_limit(), err, errlen);
    if (r != ncclSuccess) {
        nccl_error(r, what, err, errlen);
        /* only an argument refused on the spot had no effect; an error that came while polling is the
         * communicator's own state (sticky: every later call would fail) */
        if (polled || r != ncclInvalidArgument)
            fail_comm(err);
        return RL_EINVAL;
    }
    return 0;
}

/* Waits until stream s has run everything queued on it, polling rather than blocking in cudaStreamSynchronize: an
 * asynchronous NCCL error (a peer gone, a network failure) or no completion within RADLADS_NCCL_TIMEOUT_S seconds
 * (default 900: a peer stuck elsewhere) aborts the communicator and fails with what happened, instead of waiting
 * for ever. */
static int wait_stream(cudaStream_t s, const char *what, char *err, size_t errlen)
{
    const double limit = nccl_limit();
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    long ns = 2000;
    for (;;) {
        cudaError_t e = cudaStreamQuery(s);
        if (e == cudaSuccess)
            return 0;
        if (e != cudaErrorNotReady) { /* (a kernel of this rank failed: it cannot go on with its peers) */
            snprintf(err, errlen, "%s: %s", what, cudaGetErrorString(e));
            fail_comm(err);
            return RL_EINVAL;
        }
        ncclResult_t async = ncclSuccess;
        if (N.on && ncclCommGetAsyncError(N.comm, &async) == ncclSuccess && async != ncclSuccess &&
            async != ncclInProgress) {
            nccl_error(async, what, err, errlen);
            fail_comm(err);
            return RL_EINVAL;
        }
        if (peer_down())
            return peer_fail(what, err, errlen);
        if (seconds_since(&t0) > limit)
            return too_late(what, limit, err, errlen);
        nap(&ns);
    }
}

/* Waits for the collective just queued on the backend's stream (the trainer uses its result next). */
static int finish(ncclResult_t r, const char *what, char *err, size_t errlen)
{
    int rc = check(r, what, err, errlen);
    return rc ? rc : wait_stream(N.stream, what, err, errlen);
}

/* finish() for a group: r the first failed call inside it (or ncclSuccess), g ncclGroupEnd's result. A call that
 * failed inside the group left the ones before it to go out: the peers would wait for the rest, so the
 * communicator is aborted (once ncclGroupEnd is through). */
static int finish_group(ncclResult_t r, ncclResult_t g, const char *what, char *err, size_t errlen)
{
    if (r == ncclSuccess)
        return finish(g, what, err, errlen);
    int late;
    settle(N.comm, g, &late);
    nccl_error(r, what, err, errlen);
    fail_comm(err);
    return RL_EINVAL;
}

/* Where a hook's buffer lives: 1 device memory (NCCL), 0 host memory (MPI), −1 device memory when the communicator
 * is gone (an earlier error aborted it): that call fails — device memory never goes to MPI, and a collective the
 * peers would not match must not be issued there either. */
static int on_device(const void *p, char *err, size_t errlen)
{
    struct cudaPointerAttributes a;
    if (!p)
        return 0;
    const cudaError_t e = cudaPointerGetAttributes(&a, p);
    if (e == cudaErrorInvalidValue) { /* (CUDA before 11: a pointer CUDA does not know, i.e. ordinary host memory) */
        cudaGetLastError();
        return 0;
    }
    if (e != cudaSuccess) { /* a sticky error from an earlier launch: where p lives is unknown, and this rank cannot
                             * go on issuing collectives its peers match */
        snprintf(err, errlen, "cudaPointerGetAttributes: %s (an earlier kernel failed): NCCL communicator aborted",
                 cudaGetErrorString(e));
        fail_comm(err);
        return -1;
    }
    if (a.type != cudaMemoryTypeDevice && a.type != cudaMemoryTypeManaged)
        return 0;
    if (N.on)
        return 1;
    snprintf(err, errlen, "the NCCL communicator was aborted after an earlier error (the first error of this rank says "
             "why): no further collective on GPU buffers this stage");
    return -1;
}

/* Joining the communicator: every rank's ncclCommInitRankConfig has started (non-blocking) or failed at once. The
 * ranks tell each other which, on a communicator of their own, while each polls its own set-up: a rank whose call
 * failed at once then stops the others now (they abort theirs), not at the deadline; a rank that never gets there
 * (stuck before, or gone) costs the others RADLADS_NCCL_TIMEOUT_S. A request a rank stopped waiting for (the
 * deadline, its own set-up failing) is completed at the next set-up, before a new one, in the same order on every
 * rank. err already holds this rank's own failure where !started. */
static MPI_Comm g_join = MPI_COMM_NULL;
static MPI_Request g_join_req = MPI_REQUEST_NULL;

static int join_wait(int started, ncclResult_t r, char *err, size_t errlen)
{
    static int mine, all;
    mine = started;
    if (MPI_Iallreduce(&mine, &all, 1, MPI_INT, MPI_MIN, g_join, &g_join_req) != MPI_SUCCESS) {
        if (started)
            snprintf(err, errlen, "MPI_Iallreduce (whether every rank started NCCL) failed"), fail_comm(err);
        return RL_EINVAL;
    }
    const double limit = nccl_limit();
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    long ns = 2000;
    const char *what = "ncclCommInitRankConfig (joining the ranks' communicator)";
    int told = 0; /* the ranks' answer is here */
    for (;;) {
        if (!told && MPI_Test(&g_join_req, &told, MPI_STATUS_IGNORE) != MPI_SUCCESS)
            told = 1, all = 0;
        if (told && !all) {
            if (started) {
                abort_comm();
                snprintf(err, errlen, "%s: another rank's ncclCommInitRankConfig failed at once (its log has the "
                         "reason): communicator aborted", what);
            }
            return RL_EINVAL;
        }
        if (!started) { /* this rank's failure is said (err); the others are told as soon as they get here */
            if (told || seconds_since(&t0) > limit)
                return RL_EINVAL;
        } else if (r == ncclInProgress) {
            ncclResult_t q = ncclCommGetAsyncError(N.comm, &r);
            if (q != ncclSuccess)
                r = q;
            if (r != ncclInProgress && r != ncclSuccess) {
                nccl_error(r, what, err, errlen);
                fail_comm(err);
                return RL_EINVAL;
            }
            if (peer_down())
                return peer_fail(what, err, errlen);
        }
        if (started && r == ncclSuccess && told)
            return 0;
        if (seconds_since(&t0) > limit)
            return too_late(what, limit, err, errlen);
        nap(&ns);
    }
}

int rl_nccl_attach(const rl_comm *c, rl_backend *be, char *err, size_t errlen)
{
    if (!rl_backend_stream(be)) {
        snprintf(err, errlen, "NCCL needs the CUDA backend");
        return RL_EINVAL;
    }
    N.stream = (cudaStream_t)rl_backend_stream(be); /* a new backend per stage: follow its stream */
    cudaError_t e = cudaSetDevice(rl_backend_device(be));
    /* every rank, every stage: whether each has its device and a communicator (a rank that aborted its own after
     * an error has none; then every rank makes a new one together) */
    int mine[3] = {e == cudaSuccess, N.on, -N.on}, all[3];
    MPI_Allreduce(mine, all, 3, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
    if (all[0] && all[1])
        return 0;
    if (all[0] && -all[2] == 1)
        abort_comm();
    N.gen++, N.peer_rank = -1; /* a new communicator (every rank here): earlier failure messages are about the old */
    ncclUniqueId id;
    memset(&id, 0, sizeof id);
    ncclResult_t r = all[0] && c->rank == 0 ? ncclGetUniqueId(&id) : ncclSuccess;
    int ok = all[0] && r == ncclSuccess, all_ok = 0;
    /* every rank learns whether every one has its device and rank 0 an id before any of them waits in
     * ncclCommInitRank (which would wait for a missing rank for ever) */
    MPI_Allreduce(&ok, &all_ok, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
    if (e != cudaSuccess) {
        snprintf(err, errlen, "cudaSetDevice(%d): %s", rl_backend_device(be), cudaGetErrorString(e));
        return RL_EINVAL;
    }
    if (r != ncclSuccess)
        return nccl_error(r, "ncclGetUniqueId", err, errlen);
    if (!all_ok) {
        snprintf(err, errlen, "another rank could not set its GPU up for NCCL (its log has the reason)");
        return RL_EINVAL;
    }
    MPI_Bcast(&id, (int)sizeof id, MPI_BYTE, 0, MPI_COMM_WORLD);
    if (g_join == MPI_COMM_NULL) { /* (every rank here, the first time: collectives) */
        MPI_Comm_dup(MPI_COMM_WORLD, &g_join);
        if (rl_alarm_open(MPI_COMM_WORLD))
            fprintf(stderr, "radlads-worker rank %d: MPI_Comm_dup for NCCL failure messages failed: a peer's NCCL "
                    "failure costs this rank RADLADS_NCCL_TIMEOUT_S\n", c->rank);
    }
    if (g_join_req != MPI_REQUEST_NULL) /* the last set-up's answer, which this rank stopped waiting for */
        MPI_Wait(&g_join_req, MPI_STATUS_IGNORE);
    /* non-blocking, so that a rank that never joins (stuck, or its host gone) costs the others the deadline,
     * not for ever */
    const int delay = rl__fault_join_delay(c->rank);
    if (delay > 0) {
        fprintf(stderr, "RADLADS_TEST_POISON: rank %d joins NCCL %d s late\n", c->rank, delay);
        sleep((unsigned)delay);
    }
    static int warned;
    const char *blocking = getenv("NCCL_COMM_BLOCKING"); /* NCCL lets it override the config below */
    if (blocking && atoi(blocking) == 1 && !warned++)
        fprintf(stderr, "radlads-worker rank %d: NCCL_COMM_BLOCKING=1 is set, so NCCL calls block: RADLADS_NCCL_TIMEOUT_S "
                "cannot bound the wait for a rank that never joins or a collective a stuck peer never matches (unset "
                "it to keep that deadline)\n", c->rank);
    ncclConfig_t cfg = NCCL_CONFIG_INITIALIZER;
    cfg.blocking = 0;
    N.rank = c->rank, N.world = c->world;
    if (rl__fault_nccl_init_fails(c->rank)) {
        fprintf(stderr, "RADLADS_TEST_POISON: rank %d's ncclCommInitRankConfig fails at once\n", c->rank);
        r = ncclInvalidUsage;
    } else {
        r = ncclCommInitRankConfig(&N.comm, c->world, id, c->rank, &cfg);
    }
    const int started = r == ncclSuccess || r == ncclInProgress;
    if (started)
        N.on = 1; /* from here on a failure aborts it */
    else
        nccl_error(r, "ncclCommInitRankConfig", err, errlen);
    return join_wait(started, r, err, errlen);
}

void rl_nccl_stage_failed(void)
{
    fail_comm("its stage failed; its own log says why");
}

/* Overlapped all-reduces: a second stream for the collectives, two events per request (the backend's
 * stream has produced the bucket; the collective is done). Request ids restart once all are waited for. */
#define MAX_OVERLAP 4096
static struct {
    cudaStream_t stream;
    cudaEvent_t produced[MAX_OVERLAP], done[MAX_OVERLAP];
    int n_events, n_ids, n_open;
} O;

void rl_nccl_finalize(int peer_failed)
{
    ncclResult_t async = ncclSuccess;
    if (N.on && (peer_failed || ncclCommGetAsyncError(N.comm, &async) != ncclSuccess ||
                 (async != ncclSuccess && async != ncclInProgress)))
        abort_comm(); /* an error, here or on a peer (whose communicator may be gone): finalizing would wait for what
                       * a failed peer never matches, up to RADLADS_NCCL_TIMEOUT_S */
    char e[512];
    if (O.stream && wait_stream(O.stream, "the overlapped all-reduces at the end", e, sizeof e))
        fprintf(stderr, "radlads-worker: %s\n", e);
    if (O.stream)
        cudaStreamDestroy(O.stream);
    for (int k = 0; k < O.n_events; k++)
        cudaEventDestroy(O.produced[k]), cudaEventDestroy(O.done[k]);
    memset(&O, 0, sizeof O);
    if (g_join_req != MPI_REQUEST_NULL) /* a set-up's answer this rank stopped waiting for: every rank that gets
                                         * here met the others after that set-up, so each has posted its part */
        MPI_Wait(&g_join_req, MPI_STATUS_IGNORE);
    if (g_join != MPI_COMM_NULL)
        MPI_Comm_free(&g_join);
    rl_alarm_close();
    if (N.on) { /* a non-blocking communicator is finalized (its last operations flushed) before it is destroyed */
        int late;
        if (settle(N.comm, ncclCommFinalize(N.comm), &late) == ncclSuccess)
            ncclCommDestroy(N.comm);
        else
            ncclCommAbort(N.comm);
    }
    N.on = 0;
}

static int cuda_fail(cudaError_t e, const char *what, char *err, size_t errlen)
{
    snprintf(err, errlen, "%s: %s", what, cudaGetErrorString(e));
    return RL_EINVAL;
}

/* A CUDA call failed where this rank was to issue a collective its peers issue now: it cannot, so the
 * communicator goes (the peers are told) and every later collective of the stage fails here at once. */
static int fail_cuda(cudaError_t e, const char *what, char *err, size_t errlen)
{
    const int rc = cuda_fail(e, what, err, errlen);
    fail_comm(err);
    return rc;
}

/* RADLADS_TEST_POISON=nccl:CALL:RANK (validate.h): this rank's CALL-th device all-reduce fails as a lost peer
 * connection would, before it is issued; 1 then, with err set and the communicator gone. */
static int injected_failure(char *err, size_t errlen)
{
    static int64_t calls;
    if (!rl__fault_nccl_fails(++calls, N.rank))
        return 0;
    snprintf(err, errlen, "RADLADS_TEST_POISON: rank %d's all-reduce %lld fails as a network error would", N.rank,
             (long long)calls);
    fprintf(stderr, "radlads-worker rank %d: %s\n", N.rank, err);
    fail_comm(err);
    return 1;
}

/* Host buffers go through MPI's non-blocking all-reduce: their ids are MAX_OVERLAP + MPI's id. */
int rl_nccl_allreduce_start(void *ctx, float *buf, size_t n, int *req, char *err, size_t errlen)
{
    const int dev = on_device(buf, err, errlen);
    if (dev < 0)
        return RL_EINVAL;
    if (!dev) {
        int rc = rl_comm_allreduce_start(ctx, buf, n, req, err, errlen);
        if (!rc)
            *req += MAX_OVERLAP; /* (a failed start leaves *req alone: nothing to wait for) */
        return rc;
    }
    if (injected_failure(err, errlen))
        return RL_EINVAL;
    cudaError_t e = cudaSuccess;
    if (!O.stream && (e = cudaStreamCreateWithFlags(&O.stream, cudaStreamNonBlocking)) != cudaSuccess)
        return fail_cuda(e, "cudaStreamCreate (the all-reduce stream)", err, errlen); /* (as below) */
    if (!O.n_open)
        O.n_ids = 0;
    if (O.n_ids == MAX_OVERLAP) {
        snprintf(err, errlen, "more than %d gradient buckets in flight: use larger --bucket-floats", MAX_OVERLAP);
        return RL_EINVAL;
    }
    const int k = O.n_ids;
    if (k == O.n_events) {
        if ((e = cudaEventCreateWithFlags(&O.produced[k], cudaEventDisableTiming)) != cudaSuccess ||
            (e = cudaEventCreateWithFlags(&O.done[k], cudaEventDisableTiming)) != cudaSuccess)
            return fail_cuda(e, "cudaEventCreate", err, errlen); /* (as below) */
        O.n_events++;
    }
    if ((e = cudaEventRecord(O.produced[k], N.stream)) != cudaSuccess ||
        (e = cudaStreamWaitEvent(O.stream, O.produced[k], 0)) != cudaSuccess) {
        /* this rank cannot issue the collective its peers issue now: without a communicator every later bucket
         * fails here at once, and the peers' waits end (their deadline at the latest) instead of pairing this
         * rank's next bucket with this one */
        return fail_cuda(e, "ordering the all-reduce after the backward", err, errlen);
    }
    int rc = check(ncclAllReduce(buf, buf, n, ncclFloat, ncclSum, N.comm, O.stream), "ncclAllReduce (overlapped)",
                   err, errlen);
    if (rc)
        return rc;
    *req = k; /* (issued: finish waits for it whatever follows) */
    O.n_ids++, O.n_open++;
    if ((e = cudaEventRecord(O.done[k], O.stream)) != cudaSuccess)
        return fail_cuda(e, "cudaEventRecord", err, errlen);
    return 0;
}

/* The backend's stream waits for the collective; the host does not. */
int rl_nccl_allreduce_wait(void *ctx, int req, char *err, size_t errlen)
{
    if (req >= MAX_OVERLAP)
        return rl_comm_allreduce_wait(ctx, req - MAX_OVERLAP, err, errlen);
    if (req < 0 || req >= O.n_ids) {
        snprintf(err, errlen, "all-reduce request %d was not started", req);
        return RL_EINVAL;
    }
    O.n_open--;
    cudaError_t e = cudaStreamWaitEvent(N.stream, O.done[req], 0);
    if (e != cudaSuccess)
        return cuda_fail(e, "cudaStreamWaitEvent (all-reduce done)", err, errlen);
    /* the last one: the host waits for the collectives' stream (with the deadline), since the next thing that
     * blocks it (a loss read back, a checkpoint) would otherwise wait for ever on a stuck peer */
    return O.n_open || !N.on ? 0 : wait_stream(O.stream, "ncclAllReduce (overlapped, the step's last)", err, errlen);
}

int rl_nccl_allreduce_sum(void *ctx, float *buf, size_t n, char *err, size_t errlen)
{
    const int dev = on_device(buf, err, errlen);
    if (dev < 0)
        return RL_EINVAL;
    if (!dev)
        return rl_comm_allreduce_sum(ctx, buf, n, err, errlen);
    if (injected_failure(err, errlen))
        return RL_EINVAL;
    return finish(ncclAllReduce(buf, buf, n, ncclFloat, ncclSum, N.comm, N.stream), "ncclAllReduce", err, errlen);
}

int rl_nccl_reduce_scatter_sum(void *ctx, const float *buf, float *recv, const size_t *counts, char *err,
                               size_t errlen)
{
    const int dev = on_device(buf, err, errlen);
    if (dev < 0)
        return RL_EINVAL;
    if (!dev)
        return rl_comm_reduce_scatter_sum(ctx, buf, recv, counts, err, errlen);
    ncclResult_t r = ncclGroupStart();
    size_t at = 0;
    for (int owner = 0; owner < N.world && r == ncclSuccess; owner++) {
        /* recvbuff is only written on the owner; the others pass theirs, never touched */
        r = ncclReduce(buf + at, recv, counts[owner], ncclFloat, ncclSum, owner, N.comm, N.stream);
        at += counts[owner];
    }
    ncclResult_t g = ncclGroupEnd();
    return finish_group(r, g, "ncclReduce (ZeRO-1 reduce-scatter)", err, errlen);
}

int rl_nccl_allgather(void *ctx, float *buf, const size_t *counts, char *err, size_t errlen)
{
    const int dev = on_device(buf, err, errlen);
    if (dev < 0)
        return RL_EINVAL;
    if (!dev)
        return rl_comm_allgather(ctx, buf, counts, err, errlen);
    ncclResult_t r = ncclGroupStart();
    size_t at = 0;
    for (int owner = 0; owner < N.world && r == ncclSuccess; owner++) {
        r = ncclBroadcast(buf + at, buf + at, counts[owner], ncclFloat, owner, N.comm, N.stream);
        at += counts[owner];
    }
    ncclResult_t g = ncclGroupEnd();
    return finish_group(r, g, "ncclBroadcast (ZeRO-1 all-gather)", err, errlen);
}

int rl_nccl_gather(void *ctx, const float *send, float *recv, const size_t *counts, char *err, size_t errlen)
{
    const int dev = on_device(send, err, errlen);
    if (dev < 0)
        return RL_EINVAL;
    if (!dev)
        return rl_comm_gather_floats(ctx, send, recv, counts, err, errlen);
    ncclResult_t r = ncclGroupStart();
    if (N.rank != 0) {
        r = ncclSend(send, counts[N.rank], ncclFloat, 0, N.comm, N.stream);
    } else {
        size_t at = counts[0];
        if (counts[0] && cudaMemcpyAsync(recv, send, counts[0] * sizeof(float), cudaMemcpyDefault, N.stream) != cudaSuccess)
            r = ncclUnhandledCudaError;
        for (int src = 1; src < N.world && r == ncclSuccess; src++) {
            r = ncclRecv(recv + at, counts[src], ncclFloat, src, N.comm, N.stream);
            at += counts[src];
        }
    }
    ncclResult_t g = ncclGroupEnd();
    return finish_group(r, g, "ncclSend/ncclRecv (gather to rank 0)", err, errlen);
}

void rl_worker_use_nccl(rl_train_hooks *hooks, const rl_comm *c)
{
    g_comm = c;
    hooks->backend_ready = ready;
    hooks->allreduce_sum = rl_nccl_allreduce_sum;
    hooks->allreduce_start = rl_nccl_allreduce_start;
    hooks->allreduce_wait = rl_nccl_allreduce_wait;
    hooks->reduce_scatter_sum = rl_nccl_reduce_scatter_sum;
    hooks->allgather = rl_nccl_allgather;
    hooks->gather = rl_nccl_gather;
}

#else /* a build without CUDA: the CUDA backend refuses first, with its reason */

static int visible_gpus(void) { return 0; }

int rl_nccl_attach(const rl_comm *c, rl_backend *be, char *err, size_t errlen)
{
    (void)c, (void)be;
    snprintf(err, errlen, "this radlads-worker was built without CUDA (no nvcc when it was configured)");
    return RL_ENOTSUP;
}

void rl_nccl_finalize(int peer_failed) { (void)peer_failed; }

void rl_nccl_stage_failed(void) {}

void rl_worker_use_nccl(rl_train_hooks *hooks, const rl_comm *c)
{
    g_comm = c;
    hooks->backend_ready = ready;
}

#endif
