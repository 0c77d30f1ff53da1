/* radlads-worker: runs the conversion stages. main is a small dispatcher:
 *   radlads-worker pool --connect ...         one rank of a pool that radladsd schedules stages onto (pool.c)
 *   radlads-worker run --stage transfer ...   weight transfer (teacher -> initial student)
 *   radlads-worker run --stage align|distill|extend|pretrain ...   training (trainer.h); under mpirun the
 *                                             ranks train data parallel (gradients summed with MPI)
 *   radlads-worker run --stage export ...     HF-style folder with the teacher's tokenizer files */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "jobspec.h"
#include "student.h"
#include "worker.h"

static void usage(FILE *f)
{
    fprintf(f, "usage: radlads-worker pool --connect unix:PATH|tcp:HOST:PORT --token-file FILE [...]\n"
               "pool: one rank of a worker pool under mpirun (radlads-worker pool --help)\n"
               "\n"
               "usage: radlads-worker run --stage transfer --teacher DIR --arch rad-rwkv7|rad-rwkv6\n"
               "         [--variant a|b] [--attention-layers N] [--seed N] --out DIR\n"
               "transfer: copies the teacher's weights into a RADLADS student and initialises the new time-mix\n"
               "tensors by their METHOD.md formulas (seeded); writes DIR/config.json and DIR/model.safetensors.\n"
               "--variant (RAD-RWKV7 only): b = state balancing (default), a = k_k/k_a + GroupNorm.\n"
               "--attention-layers N keeps the last N layers as softmax attention (hybrid; default 0).\n"
               "\n"
               "usage: radlads-worker run --stage align|distill|extend|pretrain --student DIR [--teacher DIR]\n"
               "         --data FILE[,FILE...] --out DIR [stage options] [--resume]\n"
               "align (step 1): teacher-forced per-layer alignment, only time-mix tensors train (needs --teacher).\n"
               "distill (step 2): forward KL against the frozen --teacher; every tensor trains.\n"
               "extend (step 3): cross-entropy, no teacher; --train decay_shift is step 3a.\n"
               "pretrain: cross-entropy of a softmax model (--student = a folder from `radlads init-model`).\n"
               "stage options (job-spec names; defaults = METHOD.md step 1):\n"
               "  --tokens 100M --seq-len 512 --batch 32 --micro-batch B --lr 1e-3[:1e-5] --lr2 I[:F]\n"
               "  --schedule cos|linear|flat --lr-wait 0 --lr-endpoint 1 --warmup 50 --clip 1.0\n"
               "  --weight-decay 0 --checkpoint-every 0 --keep-checkpoints 2 --kl-weight 1 --ce-weight 0\n"
               "  --loss l2|mse --train all|decay_shift --seed 0 --log-every 10 --threads N --chunk-rows 512\n"
               "  --device cpu|cuda (cuda: one GPU per rank by its local index, NCCL between ranks)\n"
               "  --stop-after STEP (return after STEP as if killed; tests)  --trace-samples (token ids in metrics)\n"
               "  --valid FILE[,FILE...] | --valid-fraction F (held out from the end of --data, never trained on)\n"
               "  --valid-windows 256 --valid-every N (default: --checkpoint-every): validation loss\n"
               "  (next-token CE in windows of --seq-len, as `radlads score --window`) at those steps and the end\n"
               "  --bucket-floats N (gradient all-reduce bucket size under mpirun; default 1048576)\n"
               "  --zero 0|1 (1 = ZeRO-1 under mpirun: each rank keeps the AdamW state of its shard only)\n"
               "  --recompute 0|1 (1 = keep only each layer's input and recompute a layer's forward in the\n"
               "  backward: activation memory of one layer instead of all, same gradients, one more forward)\n"
               "  --mlp-rows N (the MLP's rows per pass under --recompute 1, for the teacher, and in its backward;\n"
               "  default 4096: its [rows, intermediate] tensors are what bounds step 3's memory)\n"
               "  --overlap 0|1 (default 1: under mpirun a gradient bucket's all-reduce starts during the\n"
               "  backward as soon as its layers are done; 0 = all of them after the backward)\n"
               "  --precision fp32|bf16|bf16-weights (bf16: GEMMs on bf16-rounded operands with fp32\n"
               "  accumulation, fp32 weights and everything else; on the CPU the same arithmetic, for reference;\n"
               "  bf16-weights: also the student's trainable matrices in bf16 with bf16 gradients and fp32\n"
               "  master weights beside the AdamW moments (sharded by --zero 1): the memory of a 7B distill)\n"
               "  --profile 0|1 (1 = time every backend op from the second step on, synchronously, so slower:\n"
               "  DIR/profile.tsv by op and GEMM shape, the top ops in the log)\n"
               "writes DIR/config.json + DIR/model.safetensors, DIR/checkpoints/step-N/, DIR/metrics.jsonl.\n"
               "Under mpirun every rank trains batch/ranks sequences of each step and the gradients are summed.\n"
               "\n"
               "usage: radlads-worker run --stage export --student DIR --out DIR [--teacher DIR]\n"
               "export: an HF-style folder (config.json, model.safetensors, tokenizer files from --teacher).\n");
}

static int parse_double(const char *opt, const char *s, double lo, double hi, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || *end || end == s || !(v >= lo && v <= hi)) {
        fprintf(stderr, "radlads-worker: %s expects a number in [%g, %g], got \"%s\"\n", opt, lo, hi, s);
        return -1;
    }
    *out = v;
    return 0;
}

/* "1e-3" or "1e-3:1e-5" (init:final; final defaults to init) */
static int parse_lr_pair(const char *opt, const char *s, double *init, double *final)
{
    char buf[128];
    snprintf(buf, sizeof buf, "%s", s);
    char *colon = strchr(buf, ':');
    if (colon)
        *colon = 0;
    if (parse_double(opt, buf, 0, 10, init))
        return -1;
    *final = *init;
    return colon ? parse_double(opt, colon + 1, 0, 10, final) : 0;
}

static int parse_int(const char *opt, const char *s, long lo, long hi, long *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || *end || end == s || v < lo || v > hi) {
        fprintf(stderr, "radlads-worker: %s expects an integer in [%ld, %ld], got \"%s\"\n", opt, lo, hi, s);
        return -1;
    }
    *out = v;
    return 0;
}

static int stage_transfer(const char *teacher, const char *arch_s, const char *variant_s, long attn, long seed,
                          const char *out)
{
    rl_student_arch arch;
    if (rl_student_arch_from_name(arch_s, &arch)) {
        fprintf(stderr, "radlads-worker: --arch \"%s\" is not rad-rwkv7 or rad-rwkv6\n", arch_s);
        return 2;
    }
    if (variant_s && (strlen(variant_s) != 1 || (variant_s[0] != 'a' && variant_s[0] != 'b'))) {
        fprintf(stderr, "radlads-worker: --variant \"%s\" is not known; use a (k_k/k_a + GroupNorm) or b (state "
                        "balancing)\n", variant_s);
        return 2;
    }
    if (variant_s && arch != RL_STUDENT_RWKV7) {
        fprintf(stderr, "radlads-worker: --variant applies to rad-rwkv7 only\n");
        return 2;
    }
    char err[1024];
    rl_backend *be;
    rl_backend_options bo = {.kind = RL_BACKEND_CPU};
    if (rl_backend_create(&be, &bo, err, sizeof err)) {
        fprintf(stderr, "radlads-worker: %s\n", err);
        return 1;
    }
    rl_student *s = NULL;
    int rc = rl_student_transfer(&s, be, teacher, arch, variant_s ? variant_s[0] : 'b', (int)attn, (uint64_t)seed,
                                 err, sizeof err);
    if (!rc)
        rc = rl_student_save(s, out, err, sizeof err);
    if (!rc)
        printf("wrote %s: %s%s%s, %d time-mix layers, %d attention layers\n", out, rl_student_arch_name(arch),
               arch == RL_STUDENT_RWKV7 ? " variant " : "", arch == RL_STUDENT_RWKV7 ? (s->variant == 'a' ? "a" : "b")
                                                                                     : "",
               s->base->cfg.layers - s->attention_layers, s->attention_layers);
    else
        fprintf(stderr, "radlads-worker transfer: %s\n", err);
    rl_student_destroy(s);
    rl_backend_destroy(be);
    return rc ? 1 : 0;
}

static int stage_export(const char *student, const char *teacher, const char *out)
{
    char err[1024];
    if (rl_export_model(student, out, teacher, err, sizeof err)) {
        fprintf(stderr, "radlads-worker export: %s\n", err);
        return 1;
    }
    printf("exported %s to %s\n", student, out);
    return 0;
}

static int split_files(char *list, const char **files, int max)
{
    int n = 0;
    for (char *tok = strtok(list, ","); tok && n < max; tok = strtok(NULL, ","))
        files[n++] = tok;
    return n;
}

/* One stage in this process; under mpirun every rank calls it (transfer and export act on rank 0). */
static int run_stage(const char *stage, const char *teacher, const char *arch, const char *variant, long attn,
                     long seed, const char *out, const char *student, char *data, rl_train_opts *to,
                     rl_comm *comm)
{
    if (strcmp(stage, "transfer") == 0) {
        if (!teacher || !arch || !out) {
            fprintf(stderr, "radlads-worker: --stage transfer needs --teacher, --arch and --out\n");
            return 2;
        }
        return comm->rank ? 0 : stage_transfer(teacher, arch, variant, attn, seed, out);
    }
    if (strcmp(stage, "export") == 0) {
        if (!student || !out) {
            fprintf(stderr, "radlads-worker: --stage export needs --student and --out\n");
            return 2;
        }
        return comm->rank ? 0 : stage_export(student, teacher, out);
    }
    if (rl_train_stage_from_name(stage, &to->stage) != 0) {
        fprintf(stderr, "radlads-worker: stage \"%s\" is not known (available: transfer, align, distill, extend, "
                        "pretrain, export)\n", stage);
        return 2;
    }
    if (to->train_decay_shift && to->stage != RL_TRAIN_EXTEND) {
        fprintf(stderr, "radlads-worker: --train decay_shift applies to --stage extend only (step 3a)\n");
        return 2;
    }
    const char *files[256];
    to->n_data = data ? split_files(data, files, 256) : 0;
    to->data = files, to->teacher = teacher, to->student = student, to->out = out, to->seed = (uint64_t)seed;
    to->rank = comm->rank, to->world = comm->world;
    if (!to->threads)
        to->threads = comm->threads;
    rl_train_hooks hooks = {.ctx = comm, .allreduce_sum = rl_comm_allreduce_sum,
                            .allreduce_start = rl_comm_allreduce_start, .allreduce_wait = rl_comm_allreduce_wait,
                            .reduce_scatter_sum = rl_comm_reduce_scatter_sum, .allgather = rl_comm_allgather,
                            .gather = rl_comm_gather_floats};
    if (to->cuda) {
        char gerr[512];
        to->gpu = rl_worker_gpu(comm, gerr, sizeof gerr);
        if (to->gpu < 0) /* the backend refuses GPU -1 on every rank of this host: all ranks stop together */
            fprintf(stderr, "radlads-worker %s (rank %d of %d): %s\n", stage, comm->rank, comm->world, gerr);
        rl_worker_use_nccl(&hooks, comm);
    }
    char terr[2048];
    if (rl_train_run(to, comm->world > 1 ? &hooks : NULL, terr, sizeof terr) != 0) {
        if (comm->world > 1)
            fprintf(stderr, "radlads-worker %s (rank %d of %d): %s\n", stage, comm->rank, comm->world, terr);
        else
            fprintf(stderr, "radlads-worker %s: %s\n", stage, terr);
        return 1;
    }
    return 0;
}

static int cmd_run(int argc, char **argv)
{
    enum { O_STAGE = 1000, O_TEACHER, O_ARCH, O_VARIANT, O_ATTN, O_SEED, O_OUT, O_HELP, O_STUDENT, O_DATA,
           O_TOKENS, O_SEQ, O_BATCH, O_MICRO, O_LR, O_LR2, O_WAIT, O_END, O_SCHED, O_WARM, O_CLIP, O_WD, O_CKPT,
           O_KEEP, O_KL, O_CE, O_LOSS, O_TRAIN, O_RESUME, O_STOP, O_LOG, O_TRACE, O_THREADS, O_CHUNK, O_VALID, O_VFRAC, O_VWIN, O_VEVERY, O_BUCKET,
           O_ZERO, O_RECOMP, O_MLPROWS, O_PRECISION, O_OVERLAP, O_DEVICE, O_PROFILE };
    static const struct option opts[] = {
        {"stage", 1, 0, O_STAGE}, {"teacher", 1, 0, O_TEACHER}, {"arch", 1, 0, O_ARCH},
        {"variant", 1, 0, O_VARIANT}, {"attention-layers", 1, 0, O_ATTN}, {"seed", 1, 0, O_SEED},
        {"device", 1, 0, O_DEVICE},
        {"out", 1, 0, O_OUT}, {"help", 0, 0, O_HELP}, {"student", 1, 0, O_STUDENT}, {"data", 1, 0, O_DATA},
        {"tokens", 1, 0, O_TOKENS}, {"seq-len", 1, 0, O_SEQ}, {"batch", 1, 0, O_BATCH},
        {"micro-batch", 1, 0, O_MICRO}, {"lr", 1, 0, O_LR}, {"lr2", 1, 0, O_LR2}, {"lr-wait", 1, 0, O_WAIT},
        {"lr-endpoint", 1, 0, O_END}, {"schedule", 1, 0, O_SCHED}, {"warmup", 1, 0, O_WARM},
        {"clip", 1, 0, O_CLIP}, {"weight-decay", 1, 0, O_WD}, {"checkpoint-every", 1, 0, O_CKPT},
        {"keep-checkpoints", 1, 0, O_KEEP}, {"kl-weight", 1, 0, O_KL}, {"ce-weight", 1, 0, O_CE},
        {"loss", 1, 0, O_LOSS}, {"train", 1, 0, O_TRAIN}, {"resume", 0, 0, O_RESUME},
        {"stop-after", 1, 0, O_STOP}, {"log-every", 1, 0, O_LOG}, {"trace-samples", 0, 0, O_TRACE},
        {"threads", 1, 0, O_THREADS}, {"chunk-rows", 1, 0, O_CHUNK}, {"valid", 1, 0, O_VALID},
        {"valid-fraction", 1, 0, O_VFRAC}, {"valid-windows", 1, 0, O_VWIN}, {"valid-every", 1, 0, O_VEVERY}, {"bucket-floats", 1, 0, O_BUCKET},
        {"zero", 1, 0, O_ZERO}, {"recompute", 1, 0, O_RECOMP}, {"mlp-rows", 1, 0, O_MLPROWS},
        {"precision", 1, 0, O_PRECISION}, {"overlap", 1, 0, O_OVERLAP}, {"profile", 1, 0, O_PROFILE},
        {0, 0, 0, 0}};
    const char *stage = NULL, *teacher = NULL, *arch = NULL, *variant = NULL, *out = NULL, *student = NULL;
    char *data = NULL;
    long attn = 0, seed = 0, v = 0;
    rl_train_opts to;
    rl_train_opts_defaults(&to);
    char err[512];
    int o, bad = 0;
    optind = 1;
    while (!bad && (o = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (o) {
        case O_STAGE: stage = optarg; break;
        case O_TEACHER: teacher = optarg; break;
        case O_STUDENT: student = optarg; break;
        case O_DATA: data = optarg; break;
        case O_ARCH: arch = optarg; break;
        case O_VARIANT: variant = optarg; break;
        case O_OUT: out = optarg; break;
        case O_ATTN: bad = parse_int("--attention-layers", optarg, 0, 100000, &attn); break;
        case O_SEED: bad = parse_int("--seed", optarg, 0, 0x7fffffffL, &seed); break;
        case O_TOKENS:
            if (rl_parse_count(optarg, &to.tokens, err, sizeof err) != 0) {
                fprintf(stderr, "radlads-worker: --tokens: %s\n", err);
                bad = 1;
            }
            break;
        case O_SEQ: bad = parse_int("--seq-len", optarg, 1, 1 << 24, &v), to.seq_len = (int)v; break;
        case O_BATCH: bad = parse_int("--batch", optarg, 1, 1 << 20, &v), to.batch = (int)v; break;
        case O_MICRO: bad = parse_int("--micro-batch", optarg, 1, 1 << 20, &v), to.micro_batch = (int)v; break;
        case O_LR: bad = parse_lr_pair("--lr", optarg, &to.lr.lr_init, &to.lr.lr_final); break;
        case O_LR2: bad = parse_lr_pair("--lr2", optarg, &to.lr.lr2_init, &to.lr.lr2_final); break;
        case O_WAIT: bad = parse_double("--lr-wait", optarg, 0, 1, &to.lr.lr_wait); break;
        case O_END: bad = parse_double("--lr-endpoint", optarg, 0, 1, &to.lr.lr_endpoint); break;
        case O_SCHED:
            if (!strcmp(optarg, "cos"))
                to.lr.kind = RL_LR_COS;
            else if (!strcmp(optarg, "linear"))
                to.lr.kind = RL_LR_LINEAR;
            else if (!strcmp(optarg, "flat"))
                to.lr.kind = RL_LR_FLAT;
            else {
                fprintf(stderr, "radlads-worker: --schedule \"%s\" is not cos, linear or flat\n", optarg);
                bad = 1;
            }
            break;
        case O_WARM: bad = parse_int("--warmup", optarg, 0, 1L << 30, &v), to.lr.warmup_steps = v; break;
        case O_CLIP: bad = parse_double("--clip", optarg, 0, 1e9, &to.clip); break;
        case O_WD: bad = parse_double("--weight-decay", optarg, 0, 10, &to.weight_decay); break;
        case O_CKPT: bad = parse_int("--checkpoint-every", optarg, 0, 1L << 40, &v), to.checkpoint_every = v; break;
        case O_KEEP: bad = parse_int("--keep-checkpoints", optarg, 1, 1000000, &v), to.keep_checkpoints = (int)v; break;
        case O_KL: bad = parse_double("--kl-weight", optarg, 0, 1e6, &to.kl_weight); break;
        case O_CE: bad = parse_double("--ce-weight", optarg, 0, 1e6, &to.ce_weight); break;
        case O_LOSS:
            if (!strcmp(optarg, "l2") || !strcmp(optarg, "mse"))
                to.loss_mse = !strcmp(optarg, "mse");
            else {
                fprintf(stderr, "radlads-worker: --loss \"%s\" is not l2 or mse\n", optarg);
                bad = 1;
            }
            break;
        case O_TRAIN:
            if (!strcmp(optarg, "all") || !strcmp(optarg, "decay_shift"))
                to.train_decay_shift = !strcmp(optarg, "decay_shift");
            else {
                fprintf(stderr, "radlads-worker: --train \"%s\" is not all or decay_shift\n", optarg);
                bad = 1;
            }
            break;
        case O_RESUME: to.resume = 1; break;
        case O_STOP: bad = parse_int("--stop-after", optarg, 1, 1L << 40, &v), to.stop_after = v; break;
        case O_LOG: bad = parse_int("--log-every", optarg, 0, 1L << 30, &v), to.log_every = (int)v; break;
        case O_TRACE: to.trace_samples = 1; break;
        case O_THREADS: bad = parse_int("--threads", optarg, 1, 4096, &v), to.threads = (int)v; break;
        case O_CHUNK: bad = parse_int("--chunk-rows", optarg, 1, 1 << 24, &v), to.chunk_rows = (int)v; break;
        case O_VALID: to.valid_list = optarg; break;
        case O_VFRAC: bad = parse_double("--valid-fraction", optarg, 0, 0.99, &to.valid_fraction); break;
        case O_VWIN: bad = parse_int("--valid-windows", optarg, 0, 1L << 30, &v), to.valid_windows = (int)v; break;
        case O_VEVERY: bad = parse_int("--valid-every", optarg, 0, 1L << 40, &v), to.valid_every = v; break;
        case O_BUCKET: bad = parse_int("--bucket-floats", optarg, 1, 1L << 40, &v), to.bucket_floats = (size_t)v; break;
        case O_ZERO: bad = parse_int("--zero", optarg, 0, 1, &v), to.zero = (int)v; break;
        case O_RECOMP: bad = parse_int("--recompute", optarg, 0, 1, &v), to.recompute = (int)v; break;
        case O_MLPROWS: bad = parse_int("--mlp-rows", optarg, 1, 1 << 24, &v), to.mlp_rows = (int)v; break;
        case O_PROFILE: bad = parse_int("--profile", optarg, 0, 1, &v), to.profile = (int)v; break;
        case O_OVERLAP: bad = parse_int("--overlap", optarg, 0, 1, &v), to.overlap = (int)v; break;
        case O_PRECISION:
            if ((to.bf16 = rl_precision_from_name(optarg)) < 0) {
                fprintf(stderr, "radlads-worker: --precision: expected fp32, bf16 or bf16-weights, got \"%s\"\n",
                        optarg);
                return 2;
            }
            break;
        case O_DEVICE:
            if (strcmp(optarg, "cpu") && strcmp(optarg, "cuda")) {
                fprintf(stderr, "radlads-worker: --device: expected cpu or cuda, got \"%s\"\n", optarg);
                return 2;
            }
            to.cuda = !strcmp(optarg, "cuda");
            break;
        case O_HELP: usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (bad)
        return 2;
    if (!stage || optind < argc) {
        usage(stderr);
        return 2;
    }
    rl_comm comm;
    if (!rl_comm_launched()) {
        rl_comm_single(&comm);
    } else if (rl_comm_init(&comm, NULL, NULL, err, sizeof err) < 0) {
        fprintf(stderr, "radlads-worker: %s\n", err);
        rl_comm_finalize(&comm);
        return 1;
    }
    int rc = run_stage(stage, teacher, arch, variant, attn, seed, out, student, data, &to, &comm);
    if (rl_comm_meet(&comm, rc != 0, err, sizeof err) < 0) {
        fprintf(stderr, "radlads-worker %s (rank %d of %d): %s: ending the job (MPI_Abort)\n", stage, comm.rank,
                comm.world, err);
        rl_comm_abort(&comm, rc ? rc : 1);
    }
    rl_comm_finalize(&comm);
    return rc;
}

/* Sanitizer builds only (the runtime calls these; otherwise nothing does).  Open MPI's libraries and
 * plugins keep process-lifetime allocations (ENVIRONMENT.md §6).  Plugins that MPI_Init opens, queries and
 * closes again leave stacks whose first frames are in no module; the slow unwinder walks on into the MPI
 * libraries' frames, which the suppressions name (comm.c keeps the plugins still in use mapped).  Built in,
 * so that every rank is clean however it was started: by a test, by the daemon's launcher, or by hand;
 * ASAN_OPTIONS and LSAN_OPTIONS from the environment still apply on top. */
__attribute__((used)) const char *__asan_default_options(void);
__attribute__((used)) const char *__asan_default_options(void)
{
    return "fast_unwind_on_malloc=0";
}

__attribute__((used)) const char *__lsan_default_suppressions(void);
__attribute__((used)) const char *__lsan_default_suppressions(void)
{
    return "leak:libmpi.so\nleak:libopen-pal.so\nleak:libopen-rte.so\nleak:libhwloc.so\nleak:libpmix.so\n"
           "leak:libevent\nleak:libucs\nleak:libucp\nleak:libfabric\nleak:/openmpi/lib/openmpi3/mca_\n"
           "leak:/pmix/mca_\nleak:/pmix2/lib/pmix/\n";
}

int main(int argc, char **argv)
{
    /* OpenMP threads that spin while OpenBLAS (or the other rank) works cost 13× on 2 cores. */
    setenv("OMP_WAIT_POLICY", "passive", 0);
    if (argc >= 2 && strcmp(argv[1], "run") == 0)
        return cmd_run(argc - 1, argv + 1);
    if (argc >= 2 && strcmp(argv[1], "pool") == 0)
        return rl_pool_main(argc - 1, argv + 1);
    if (argc >= 2 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "help") == 0)) {
        usage(stdout);
        return 0;
    }
    usage(stderr);
    return 2;
}
