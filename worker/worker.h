/* worker.h — radlads-worker beyond the trainer: MPI between the ranks (comm.c), the daemon connection
 * of rank 0 (link.c), what a StageAssignment means (assign.c) and the pool's main loop (pool.c).
 * Internal to the worker program; trainer.h is the training API. */
#ifndef RL_WORKER_H
#define RL_WORKER_H

#include <stddef.h>
#include <stdint.h>

#include "proto.h"
#include "kernels.h"
#include "trainer.h"

/* ---- comm.c: the ranks ------------------------------------------------------------------------
 * One process per rank under mpirun (or srun).  Only the main thread calls MPI (MPI_THREAD_FUNNELED);
 * the daemon link's thread never does. */
typedef struct {
    int rank, world;
    int local_rank, local_size; /* among the ranks on this host */
    int threads;                /* compute threads per rank: this host's cores shared by its ranks */
    int mpi;                    /* MPI is initialised (and must be finalised) */
} rl_comm;

/* True when this process was started by an MPI launcher (mpirun, srun). */
int rl_comm_launched(void);
/* Initialises MPI and fills c.  0 or -1 with err. */
int rl_comm_init(rl_comm *c, int *argc, char ***argv, char *err, size_t errlen);
/* One process, no MPI (radlads-worker run without mpirun). */
void rl_comm_single(rl_comm *c);
void rl_comm_finalize(rl_comm *c);
/* Ends every rank of the job at once (a rank that cannot go on). */
void rl_comm_abort(rl_comm *c, int code);

/* rl_train_hooks.allreduce_sum: MPI_Allreduce(MPI_IN_PLACE, MPI_SUM) on MPI_COMM_WORLD; ctx is the rl_comm. */
int rl_comm_allreduce_sum(void *ctx, float *buf, size_t n, char *err, size_t errlen);
/* MPI_Iallreduce in place / MPI_Wait: rl_train_hooks.allreduce_start and allreduce_wait */
int rl_comm_allreduce_start(void *ctx, float *buf, size_t n, int *req, char *err, size_t errlen);
int rl_comm_allreduce_wait(void *ctx, int req, char *err, size_t errlen);
/* ZeRO-1's hooks (trainer.h) on MPI_COMM_WORLD: MPI_Reduce_scatter, MPI_Allgatherv in place, MPI_Gatherv
 * to rank 0; counts per rank as the hooks define them; ctx unused. */
int rl_comm_reduce_scatter_sum(void *ctx, const float *buf, float *recv, const size_t *counts, char *err,
                               size_t errlen);
int rl_comm_allgather(void *ctx, float *buf, const size_t *counts, char *err, size_t errlen);
int rl_comm_gather_floats(void *ctx, const float *send, float *recv, const size_t *counts, char *err, size_t errlen);

/* ---- nccl.c: a CUDA pool's collectives ----
 * rl_nccl_attach: on every rank at once, after the stage's CUDA backend exists: makes the NCCL
 * communicator the first time (id from rank 0 over MPI) and queues later collectives on the backend's
 * stream.  The hooks take device buffers through NCCL and host buffers through the rl_comm_* MPI hooks. */
int rl_nccl_attach(const rl_comm *c, rl_backend *be, char *err, size_t errlen);
/* The communicator at the process's end: flushed and destroyed, or aborted where peer_failed (the last
 * rl_comm_meet saw a rank fail: its communicator may be gone) or an error is pending. */
void rl_nccl_finalize(int peer_failed);
/* This rank's stage failed (rl_comm_meet calls it): the peers of a CUDA pool, which may be waiting on NCCL for this
 * rank's part of a collective, are told at once (alarm.c) and its communicator is aborted (a stage the daemon
 * stopped counts too: the next stage makes a new communicator, a few seconds); nothing in a CPU pool. */
void rl_nccl_stage_failed(void);
/* The GPU a rank of a CUDA stage takes: its index among the ranks on its host when the host shows at least as many
 * GPUs as it runs ranks; GPU 0 when each rank is shown one (a launcher that binds a GPU per task, as srun
 * --gpus-per-task=1; ranks that would share one GPU are refused by NCCL); otherwise -1 with err saying what to
 * change. Without a CUDA device (or a CUDA build) the local index: the backend then says why it cannot start.
 * RADLADS_TEST_VISIBLE_GPUS stands in for the device count (tests). */
int rl_worker_gpu(const rl_comm *c, char *err, size_t errlen);
/* Points the trainer hooks' collectives at NCCL (device buffers; host ones still go through MPI) and binds
 * NCCL to each stage's backend (hooks->backend_ready) for the ranks of `c`. */
void rl_worker_use_nccl(rl_train_hooks *hooks, const rl_comm *c);
int rl_nccl_allreduce_sum(void *ctx, float *buf, size_t n, char *err, size_t errlen);
int rl_nccl_allreduce_start(void *ctx, float *buf, size_t n, int *req, char *err, size_t errlen);
int rl_nccl_allreduce_wait(void *ctx, int req, char *err, size_t errlen);
int rl_nccl_reduce_scatter_sum(void *ctx, const float *buf, float *recv, const size_t *counts, char *err,
                               size_t errlen);
int rl_nccl_allgather(void *ctx, float *buf, const size_t *counts, char *err, size_t errlen);
int rl_nccl_gather(void *ctx, const float *send, float *recv, const size_t *counts, char *err, size_t errlen);

/* Collectives for the pool's control flow.  They sleep between polls instead of spinning, so that ranks
 * waiting for rank 0 (for the daemon's next assignment, or while it writes a model) leave the cores
 * free.  0 or -1 with err. */
int rl_comm_bcast(const rl_comm *c, void *buf, size_t n, char *err, size_t errlen);               /* from rank 0 */
int rl_comm_gather(const rl_comm *c, const void *send, size_t n, void *recv, char *err, size_t errlen); /* to rank 0 */
/* Every rank at the end of a stage, on a communicator of its own (so that it never matches a collective that a rank
 * is still waiting in): a rank that failed (`failed`) waits at most RADLADS_FAIL_WAIT_S seconds (default 300: rank 0
 * may be writing a model) for the others, the rest without limit. 0 when all arrived; -1 with err when this failed rank waited in vain — the
 * others are stuck in a collective it left between two agreements, and only MPI_Abort ends them. */
int rl_comm_meet(const rl_comm *c, int failed, char *err, size_t errlen);

/* ---- link.c: rank 0's connection to radladsd --------------------------------------------------
 * A thread with its own libuv loop.  The training thread only queues messages (never blocks on the
 * socket) and polls for assignments and control requests.  The link registers the pool, sends
 * heartbeats every heartbeat_ms, and when the connection is lost it reconnects with backoff and
 * registers again with the pool id and the running attempt, so the daemon can re-attach; messages
 * queued meanwhile are kept (bounded: progress and log lines are dropped first). */
typedef struct rl_link rl_link;

typedef struct {
    const char *connect; /* unix:PATH | tcp:HOST:PORT */
    const char *token;
    const char *name, *device, *host;
    int ranks;
    const int32_t *rank_pids;
    int n_rank_pids;
    int64_t launch_id;
    int register_timeout_ms; /* give up when the first registration has not succeeded by then */
    size_t queue_max;        /* queued frames while disconnected (0 = 4096) */
} rl_link_opts;

/* Starts the thread and waits for the first registration.  0, or -1 with err saying why (the daemon
 * refused the token or the protocol version, or could not be reached in time). */
int rl_link_start(rl_link **out, const rl_link_opts *o, char *err, size_t errlen);
/* Flushes what is queued (up to flush_ms), closes the connection and joins the thread. */
void rl_link_stop(rl_link *l, int flush_ms);

int64_t rl_link_pool_id(rl_link *l);
/* Queues an envelope (encoded now; the caller keeps ownership of env). Never blocks. */
void rl_link_send(rl_link *l, const Radlads__Envelope *env);
/* The next StageAssignment, packed (protobuf bytes, malloc'd: the pool broadcasts them to every rank):
 * 1 with *buf and *len set, or 0 after timeout_ms (or once the link is fatal).  Its attempt is the running
 * one from the moment it arrived (heartbeats, re-registration and Control requests refer to it). */
int rl_link_next_assignment(rl_link *l, uint8_t **buf, size_t *len, int timeout_ms);
/* The attempt ended (StageFinished queued): no attempt runs now. */
void rl_link_end_attempt(rl_link *l);
/* The step heartbeats report. */
void rl_link_set_step(rl_link *l, int64_t step);
/* Pending Control requests of the running attempt as RL_TRAIN_CTL_* bits; they are consumed. */
int rl_link_take_control(rl_link *l);
/* 0 while registered; once the connection is lost, 1 + the milliseconds from the loss to the latest
 * connection attempt that failed, so a caller that gives up past a limit has tried at that limit, not merely
 * waited for it (a daemon back before the next retry is found by it); -1 once the link gave up for good
 * (fatal: the daemon refused us), with the reason in err. */
int64_t rl_link_disconnected_ms(rl_link *l, char *err, size_t errlen);

/* ---- assign.c: running one StageAssignment on every rank --------------------------------------- */
typedef struct {
    const rl_comm *comm;
    const rl_train_hooks *hooks; /* progress/checkpoint/control/log on rank 0; allreduce on every rank */
    size_t bucket_floats;        /* 0 = default */
    int cuda;                    /* train on the CUDA backend, GPU = the rank's local index; NCCL between ranks */
} rl_stage_ctx;

/* Maps the assignment (stage_json, spec_json, input/output dirs, resume_from) to a stage run and runs
 * it on this rank.  transfer and export run on rank 0 only.  0 or a negative error with err. */
int rl_assignment_run(const Radlads__StageAssignment *a, const rl_stage_ctx *ctx, char *err, size_t errlen);

/* ---- pool.c ---- */
/* radlads-worker pool --connect ... (argv[0] is "pool"); returns the process exit code. */
int rl_pool_main(int argc, char **argv);

#endif
