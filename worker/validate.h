/* validate.h — the trainer's held-out data and data checks (validate.c), and test-only fault injection
 * (fault.c).  Private to worker/, like trainer_int.h. */
#ifndef RL_WORKER_VALIDATE_H
#define RL_WORKER_VALIDATE_H

#include <stdio.h>

#include "trainer_int.h"

/* Validation: consecutive windows of seq_len tokens (each scored on its own, seq_len−1 predictions), from
 * the --valid files, or from the last valid_fraction of the training stream, which the sampler then never
 * draws from.  The loss is the model's next-token cross-entropy — for every stage, the student's own (not
 * the stage's training loss) — the number `radlads score --window seq_len` gives on the same tokens. */
typedef struct rl__valid rl__valid;

/* Checks the data against the model (recorded vocabulary sizes), applies the held-out fraction to the
 * training sampler and opens the validation windows.  *out is NULL when no validation is asked for. */
int rl__valid_open(rl__trainer *t, rl_sampler *train, rl__valid **out, char *err, size_t errlen);
/* Whether validation runs after optimizer step `step` (1-based count of steps done). */
int rl__valid_due(const rl__valid *v, int64_t step, int64_t total_steps);
/* Runs the validation and reports it: a metrics line {"stage", "step", "tokens", "valid_loss",
 * "valid_tokens", "valid_windows"}, and the progress line for the user in `line`. */
int rl__valid_report(rl__trainer *t, rl__valid *v, int64_t step, int64_t tokens, FILE *metrics, char *line,
                     size_t linelen, char *err, size_t errlen);
void rl__valid_close(rl__valid *v);

/* Fault injection for tests: RADLADS_TEST_POISON="grad:STEP[:TENSOR]" sets the first element of TENSOR's
 * gradient (default: the first trainable tensor) to NaN after the micro-batches of optimizer step STEP
 * (0-based); "loss:STEP" makes that step's loss +inf.  Unset: nothing happens. */
/* "backward:STEP:RANK": that rank's last backward of step STEP fails half-way (after the second gradient
 * event: some buckets started, the rest not), to prove the other ranks are not left waiting. */
int rl__fault_backward_fails(int64_t step, int rank);
/* "start:RANK": that rank fails as its backend is made (as a rank whose GPU is missing would), to prove the other
 * ranks stop too instead of waiting for it. */
int rl__fault_start_fails(int rank);
/* "pack:STEP:RANK": packing that rank's overlapped gradient buckets fails at that optimizer step (as a failed copy on
 * the device would) */
int rl__fault_pack_fails(int64_t step, int rank);
/* "quit:STEP:RANK": that rank stops with an error as step STEP begins without telling the others (a failure between
 * two agreements), which then wait in the step's collectives: the worker's exit must end them. */
int rl__fault_quits(int64_t step, int rank);
/* "join:RANK:SECONDS": that rank waits SECONDS before it joins the NCCL communicator (a rank stuck at start-up):
 * the others must give up after RADLADS_NCCL_TIMEOUT_S. Returns the seconds, 0 for every other rank. */
int rl__fault_join_delay(int rank);
/* "ncclinit:RANK": that rank's ncclCommInitRankConfig fails at once (as a bad NCCL setting would): the other ranks
 * must stop at once too, not at RADLADS_NCCL_TIMEOUT_S. */
int rl__fault_nccl_init_fails(int rank);
/* "nccl:CALL:RANK": that rank's CALL-th all-reduce of device memory (counted from 1) fails as a network error would
 * (its communicator aborted): the other ranks must stop at once on its message (alarm.c), not at
 * RADLADS_NCCL_TIMEOUT_S. */
int rl__fault_nccl_fails(int64_t call, int rank);
/* 1 when RADLADS_TEST_POISON poisons a gradient at this step (the step reduces after the poisoning). */
int rl__fault_poisons_grad(int64_t step);
void rl__fault_poison_grad(rl__trainer *t, int64_t step);
double rl__fault_poison_loss(int64_t step, double loss);

#endif
