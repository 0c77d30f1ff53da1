/* assign.c — what a StageAssignment means for this worker.
 *
 * The daemon sends the stage's canonical options (stage_json, proto/jobspec.c rl_jobspec_stage_json), the
 * whole canonical job spec (spec_json), the previous stage's output folder (input_dir), this stage's
 * output folder (output_dir = OUTPUT/NN-kind) and, for a retried attempt, the checkpoint to resume from.
 *
 *   stage     model that trains / is written                      teacher
 *   pretrain  spec.teacher (a random `radlads init-model` folder)  —
 *   transfer  writes the student from the teacher                  T
 *   align     input_dir                                            T
 *   distill   input_dir                                            T
 *   extend    input_dir                                            —
 *   export    input_dir → output_dir (+ T's tokenizer files)       T
 *
 * T is the softmax teacher: spec.teacher, or — when the job has a pretrain stage before this one — the
 * output of the latest such stage, OUTPUT/NN-pretrain (the daemon's stage folder naming), so a job can
 * pretrain its own teacher and then convert it.  A pretrain stage after another pretrain stage continues
 * from that one's output.
 *
 * Training stages run on every rank (data parallel); transfer and export are cheap and run on rank 0 only.
 * Resume: with resume_from set, the trainer continues from the newest checkpoint under
 * output_dir/checkpoints that verifies (at least as new as resume_from: a checkpoint written after the
 * daemon's last record is just as valid, and resuming is bit-exact either way).  Without it the attempt
 * starts fresh, and checkpoints an earlier attempt left there without the daemon knowing are removed. */
#include <errno.h>
#include <ftw.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "jobspec.h"
#include "student.h"
#include "worker.h"

#define MAX_DATA_FILES 256

static int fail(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int fail(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    return RL_EINVAL;
}

static void say(const rl_stage_ctx *ctx, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void say(const rl_stage_ctx *ctx, const char *fmt, ...)
{
    char line[4096];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    printf("%s\n", line);
    fflush(stdout);
    if (ctx->hooks && ctx->hooks->log)
        ctx->hooks->log(ctx->hooks->ctx, "info", line);
}

/* ---- reading the canonical JSON ---- */

static const char *str_field(json_t *o, const char *key)
{
    json_t *v = json_object_get(o, key);
    return json_is_string(v) ? json_string_value(v) : NULL;
}

static int num_field(json_t *o, const char *key, double *out)
{
    json_t *v = json_object_get(o, key);
    if (!json_is_number(v))
        return -1;
    *out = json_number_value(v);
    return 0;
}

/* An optional 0/1 field of a stage object: 0 when absent, -1 when it is anything but 0 or 1. */
static int opt_switch(json_t *st, const char *key, int *out)
{
    double v = 0;
    if (json_object_get(st, key) && (num_field(st, key, &v) < 0 || (v != 0 && v != 1)))
        return -1;
    *out = (int)v;
    return 0;
}

/* Every option a training stage needs; the daemon's canonical stage JSON has all of them. */
static int stage_options(json_t *st, rl_train_opts *to, char *err, size_t errlen)
{
    static const char *const ints[] = {"tokens", "seq_len", "batch", "micro_batch", "warmup", "checkpoint_every",
                                       "keep_checkpoints", "seed"};
    double v[8];
    for (int i = 0; i < 8; i++)
        if (num_field(st, ints[i], &v[i]) < 0 || v[i] < 0)
            return fail(err, errlen, "stage_json: \"%s\" is missing or not a non-negative number", ints[i]);
    to->tokens = (int64_t)v[0], to->seq_len = (int)v[1], to->batch = (int)v[2], to->micro_batch = (int)v[3];
    to->lr.warmup_steps = (int64_t)v[4], to->checkpoint_every = (int64_t)v[5], to->keep_checkpoints = (int)v[6];
    to->seed = (uint64_t)v[7];
    json_t *lr = json_object_get(st, "lr"), *lr2 = json_object_get(st, "lr2");
    if (num_field(lr, "init", &to->lr.lr_init) < 0 || num_field(lr, "final", &to->lr.lr_final) < 0)
        return fail(err, errlen, "stage_json: \"lr\" must be {\"init\": N, \"final\": N}");
    if (lr2 && (num_field(lr2, "init", &to->lr.lr2_init) < 0 || num_field(lr2, "final", &to->lr.lr2_final) < 0))
        return fail(err, errlen, "stage_json: \"lr2\" must be {\"init\": N, \"final\": N}");
    static const char *const reals[] = {"lr_wait", "lr_endpoint", "clip", "kl_weight", "ce_weight"};
    double *dst[] = {&to->lr.lr_wait, &to->lr.lr_endpoint, &to->clip, &to->kl_weight, &to->ce_weight};
    for (int i = 0; i < 5; i++)
        if (num_field(st, reals[i], dst[i]) < 0)
            return fail(err, errlen, "stage_json: \"%s\" is missing or not a number", reals[i]);
    const char *sched = str_field(st, "schedule");
    if (!sched || (strcmp(sched, "cos") && strcmp(sched, "linear") && strcmp(sched, "flat")))
        return fail(err, errlen, "stage_json: \"schedule\" must be cos, linear or flat");
    to->lr.kind = !strcmp(sched, "cos") ? RL_LR_COS : !strcmp(sched, "linear") ? RL_LR_LINEAR : RL_LR_FLAT;
    /* optional switches: stage JSON from before them has none */
    if (opt_switch(st, "zero", &to->zero) < 0)
        return fail(err, errlen, "stage_json: \"zero\" must be 0 or 1 (1 = ZeRO-1: optimizer state sharded over the "
                    "ranks)");
    if (opt_switch(st, "recompute", &to->recompute) < 0)
        return fail(err, errlen, "stage_json: \"recompute\" must be 0 or 1 (1 = keep only layer inputs and "
                    "recompute each layer's forward in the backward)");
    double mr = 0;
    if (json_object_get(st, "mlp_rows") && (num_field(st, "mlp_rows", &mr) < 0 || mr < 0 || mr > (1 << 24) ||
                                            mr != (double)(int)mr))
        return fail(err, errlen, "stage_json: \"mlp_rows\" must be an integer from 0 (the default, 4096) to 16777216");
    to->mlp_rows = (int)mr;
    if (opt_switch(st, "profile", &to->profile) < 0)
        return fail(err, errlen, "stage_json: \"profile\" must be 0 or 1");
    const char *precision = str_field(st, "precision");
    if (json_object_get(st, "precision") && (!precision || rl_precision_from_name(precision) < 0))
        return fail(err, errlen, "stage_json: \"precision\" must be \"fp32\", \"bf16\" or \"bf16-weights\"");
    to->bf16 = precision ? rl_precision_from_name(precision) : 0;
    const char *loss = str_field(st, "loss"), *train = str_field(st, "train");
    to->loss_mse = loss && !strcmp(loss, "mse");
    to->train_decay_shift = train && !strcmp(train, "decay_shift");
    return 0;
}

/* T for stage idx: the output of the latest pretrain stage before it, else spec.teacher. *pretrain_idx is
 * that stage's index or -1. */
static const char *teacher_for(json_t *spec, int idx, char *buf, size_t len, int *pretrain_idx)
{
    json_t *stages = json_object_get(spec, "stages");
    *pretrain_idx = -1;
    for (int j = idx - 1; j >= 0 && json_is_array(stages); j--) {
        json_t *s = json_array_get(stages, (size_t)j);
        const char *kind = json_is_string(s) ? json_string_value(s) : str_field(s, "stage");
        if (kind && !strcmp(kind, "pretrain")) {
            *pretrain_idx = j;
            break;
        }
    }
    const char *output = str_field(spec, "output");
    if (*pretrain_idx < 0 || !output)
        return str_field(spec, "teacher");
    snprintf(buf, len, "%s/%02d-pretrain", output, *pretrain_idx);
    return buf;
}

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb, (void)flag, (void)ftw;
    return remove(path) < 0 && errno != ENOENT ? -1 : 0;
}

/* mkdir -p: stage folders live under the job's output folder, which may not exist yet. */
static int make_dirs(const char *dir, char *err, size_t errlen)
{
    char p[4096];
    snprintf(p, sizeof p, "%s", dir);
    for (char *c = p + 1;; c++) {
        if (*c != '/' && *c)
            continue;
        char keep = *c;
        *c = 0;
        if (mkdir(p, 0755) < 0 && errno != EEXIST)
            return fail(err, errlen, "%s: cannot create folder: %s", p, strerror(errno));
        *c = keep;
        if (!keep)
            return 0;
    }
}

/* ---- the stages ---- */

static int run_transfer(json_t *spec, json_t *st, const char *teacher, const char *out, const rl_stage_ctx *ctx,
                        char *err, size_t errlen)
{
    json_t *stu = json_object_get(spec, "student");
    const char *arch_s = str_field(stu, "arch"), *variant = str_field(stu, "variant");
    double attn = 0, seed = 0;
    num_field(stu, "keep_attention_layers", &attn);
    num_field(st, "seed", &seed);
    rl_student_arch arch;
    if (!arch_s || rl_student_arch_from_name(arch_s, &arch))
        return fail(err, errlen, "spec_json: student.arch \"%s\" is not rad-rwkv7 or rad-rwkv6", arch_s ? arch_s : "");
    rl_backend *be;
    rl_backend_options bo = {.kind = RL_BACKEND_CPU};
    if (rl_backend_create(&be, &bo, err, errlen))
        return RL_EINVAL;
    rl_student *s = NULL;
    int rc = rl_student_transfer(&s, be, teacher, arch, variant && *variant ? variant[0] : 'b', (int)attn,
                                 (uint64_t)seed, err, errlen);
    if (!rc)
        rc = rl_student_save(s, out, err, errlen);
    if (!rc)
        say(ctx, "transfer: wrote %s from %s: %s, %d time-mix layers, %d attention layers", out, teacher, arch_s,
            s->base->cfg.layers - s->attention_layers, s->attention_layers);
    rl_student_destroy(s);
    rl_backend_destroy(be);
    return rc;
}

static int run_training(const Radlads__StageAssignment *a, json_t *spec, json_t *st, const char *teacher,
                        int pretrain_idx, const rl_stage_ctx *ctx, char *err, size_t errlen)
{
    rl_train_opts to;
    rl_train_opts_defaults(&to);
    if (rl_train_stage_from_name(a->stage, &to.stage))
        return fail(err, errlen, "stage \"%s\" is not known to this worker", a->stage);
    int rc = stage_options(st, &to, err, errlen);
    if (rc)
        return rc;
    json_t *train = json_object_get(json_object_get(spec, "data"), "train");
    const char *files[MAX_DATA_FILES];
    size_t n = json_array_size(train);
    if (n == 0 || n > MAX_DATA_FILES)
        return fail(err, errlen, "spec_json: data.train must list 1 to %d token files, has %zu", MAX_DATA_FILES, n);
    for (size_t i = 0; i < n; i++)
        if (!(files[i] = json_string_value(json_array_get(train, i))))
            return fail(err, errlen, "spec_json: data.train[%zu] is not a string", i);
    to.data = files, to.n_data = (int)n;
    to.out = a->output_dir;
    if (to.stage == RL_TRAIN_PRETRAIN) {
        to.student = pretrain_idx >= 0 ? teacher : str_field(spec, "teacher");
    } else {
        if (!a->input_dir || !*a->input_dir)
            return fail(err, errlen, "stage %d (%s) has no previous stage to train: put transfer before it",
                        a->stage_idx, a->stage);
        to.student = a->input_dir;
        if (to.stage != RL_TRAIN_EXTEND)
            to.teacher = teacher;
    }
    to.rank = ctx->comm->rank, to.world = ctx->comm->world, to.threads = ctx->comm->threads;
    to.cuda = ctx->cuda, to.gpu = ctx->comm->local_rank;
    if (to.cuda) {
        char gerr[512];
        to.gpu = rl_worker_gpu(ctx->comm, gerr, sizeof gerr);
        if (to.gpu < 0) /* the backend refuses GPU -1 on every rank of this host: all ranks stop together */
            fprintf(stderr, "radlads-worker (rank %d of %d): %s\n", ctx->comm->rank, ctx->comm->world, gerr);
    }
    to.bucket_floats = ctx->bucket_floats;
    to.resume = a->resume_from && *a->resume_from;
    return rl_train_run(&to, ctx->hooks, err, errlen);
}

static int run_kind(const Radlads__StageAssignment *a, json_t *spec, json_t *st, const char *teacher,
                    int pretrain_idx, const rl_stage_ctx *ctx, char *err, size_t errlen)
{
    const char *kind = a->stage ? a->stage : "";
    if (!teacher && strcmp(kind, "extend"))
        return fail(err, errlen, "spec_json has no teacher");
    if (!strcmp(kind, "transfer"))
        return ctx->comm->rank ? 0 : run_transfer(spec, st, teacher, a->output_dir, ctx, err, errlen);
    if (strcmp(kind, "export"))
        return run_training(a, spec, st, teacher, pretrain_idx, ctx, err, errlen);
    if (!a->input_dir || !*a->input_dir)
        return fail(err, errlen, "export has no previous stage to export");
    if (ctx->comm->rank)
        return 0;
    int rc = rl_export_model(a->input_dir, a->output_dir, teacher, err, errlen);
    if (!rc)
        say(ctx, "export: wrote %s from %s (tokenizer files from %s)", a->output_dir, a->input_dir, teacher);
    return rc;
}

/* What rank 0 alone does before a stage: its folder, and for a fresh training attempt the removal of
 * checkpoints an earlier attempt left there without the daemon knowing. */
static int prepare_on_rank0(const Radlads__StageAssignment *a, const rl_stage_ctx *ctx, char *err, size_t errlen)
{
    int rc = make_dirs(a->output_dir, err, errlen);
    char ckdir[4200];
    snprintf(ckdir, sizeof ckdir, "%s/checkpoints", a->output_dir);
    struct stat sb;
    rl_train_stage kind;
    if (rc || rl_train_stage_from_name(a->stage, &kind) != 0)
        return rc;
    if (a->resume_from && *a->resume_from) {
        say(ctx, "%s: attempt %lld resumes from the newest valid checkpoint in %s (the daemon's latest record is "
            "%s)", a->stage, (long long)a->attempt_id, ckdir, a->resume_from);
    } else if (stat(ckdir, &sb) == 0) {
        if (nftw(ckdir, rm_entry, 16, FTW_DEPTH | FTW_PHYS) < 0)
            return fail(err, errlen, "%s: cannot remove the checkpoints of an earlier attempt: %s", ckdir,
                        strerror(errno));
        say(ctx, "%s: fresh start: removed checkpoints an earlier attempt left in %s", a->stage, ckdir);
    }
    return 0;
}

int rl_assignment_run(const Radlads__StageAssignment *a, const rl_stage_ctx *ctx, char *err, size_t errlen)
{
    err[0] = 0;
    json_error_t je;
    json_t *spec = json_loads(a->spec_json ? a->spec_json : "", 0, &je);
    if (!spec)
        return fail(err, errlen, "spec_json of attempt %lld is not JSON: %s", (long long)a->attempt_id, je.text);
    json_t *st = json_loads(a->stage_json ? a->stage_json : "", 0, &je);
    if (!st) {
        json_decref(spec);
        return fail(err, errlen, "stage_json of attempt %lld is not JSON: %s", (long long)a->attempt_id, je.text);
    }
    char tbuf[4200];
    int pretrain_idx;
    const char *teacher = teacher_for(spec, a->stage_idx, tbuf, sizeof tbuf, &pretrain_idx);
    int rc = 0;
    if (!a->output_dir || !*a->output_dir) {
        rc = fail(err, errlen, "the assignment has no output_dir");
    } else {
        /* Every rank learns whether rank 0's preparation worked before any of them starts the stage. */
        int32_t prep = ctx->comm->rank == 0 ? prepare_on_rank0(a, ctx, err, errlen) : 0;
        char berr[256];
        if (rl_comm_bcast(ctx->comm, &prep, sizeof prep, berr, sizeof berr) < 0)
            rc = fail(err, errlen, "%s", berr);
        else if (prep && ctx->comm->rank != 0)
            rc = fail(err, errlen, "rank 0 could not prepare %s (its log has the reason)", a->output_dir);
        else
            rc = prep;
    }
    if (!rc)
        rc = run_kind(a, spec, st, teacher, pretrain_idx, ctx, err, errlen);
    json_decref(st);
    json_decref(spec);
    return rc;
}
