/* trainer.c — the training loop shared by every stage: models and data in, optimizer steps with gradient
 * accumulation, clipping and the LR schedule, checkpoints and resume, progress and metrics out.
 *
 * One optimizer step of global batch B (sequences of T tokens) on `world` ranks:
 *   each rank runs A = (B/world)/micro_batch micro-batches; sample j of micro-batch a on rank r is the
 *   sampler's global index  g = step·B + r·(B/world) + a·micro_batch + j;
 *   gradients accumulate over micro-batches (each the gradient of its own mean loss) and are summed over
 *   ranks, so the step's gradient is Σ/(A·world): that factor and the clip factor min(1, clip/‖g‖) are
 *   folded into AdamW's grad_scale. ‖g‖ is the global L2 norm over the trainable tensors.
 * With zero = 1 on several ranks the sum is a reduce-scatter and each rank updates its shard (zero.c).
 * Resume needs only the step: data position g = step·B, tokens = step·B·T, and the schedule are functions
 * of it; weights and AdamW moments come from the checkpoint in fp32, so a resumed CPU run is bit-exact. */
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "trainer_int.h"
#include "validate.h"

static const char *const stage_names[] = {"align", "distill", "extend", "pretrain"};

const char *rl_train_stage_name(rl_train_stage s) { return (unsigned)s < 4 ? stage_names[s] : "?"; }

int rl_train_stage_from_name(const char *s, rl_train_stage *out)
{
    for (int i = 0; i < 4; i++)
        if (strcmp(s, stage_names[i]) == 0) {
            *out = (rl_train_stage)i;
            return 0;
        }
    return RL_EINVAL;
}

void rl_train_opts_defaults(rl_train_opts *o)
{
    memset(o, 0, sizeof *o);
    o->tokens = 100000000;
    o->seq_len = 512, o->batch = 32;
    o->lr = (rl_lr_schedule){.kind = RL_LR_COS, .lr_init = 1e-3, .lr_final = 1e-5, .lr2_init = -1, .lr2_final = -1,
                             .lr_wait = 0, .lr_endpoint = 1, .warmup_steps = 50};
    o->beta1 = 0.9, o->beta2 = 0.95, o->eps = 1e-8, o->weight_decay = 0, o->clip = 1.0;
    o->kl_weight = 1.0, o->ce_weight = 0.0;
    o->keep_checkpoints = 2, o->log_every = 10, o->chunk_rows = 512;
    o->world = 1, o->overlap = 1;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int fail(char *err, size_t errlen, int rc, const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static int fail(char *err, size_t errlen, int rc, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    return rc;
}

/* A line for the user: stdout (or stderr for warnings), and the log hook (the daemon's job log). */
static void say(const rl_train_hooks *hooks, const char *level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void say(const rl_train_hooks *hooks, const char *level, const char *fmt, ...)
{
    char line[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    FILE *f = strcmp(level, "info") ? stderr : stdout;
    fprintf(f, "%s\n", line);
    fflush(f);
    if (hooks && hooks->log)
        hooks->log(hooks->ctx, level, line);
}

static int mkdirs(const char *dir, char *err, size_t errlen)
{
    char p[4096];
    snprintf(p, sizeof p, "%s", dir);
    for (char *c = p + 1;; c++) {
        if (*c == '/' || *c == 0) {
            char keep = *c;
            *c = 0;
            if (mkdir(p, 0755) != 0 && errno != EEXIST)
                return fail(err, errlen, RL_EINVAL, "%s: cannot create folder: %s", p, strerror(errno));
            *c = keep;
            if (!keep)
                break;
        }
    }
    return 0;
}

/* ---- which tensors train ---- */

/* The rule is rl_tensor_trains (student.h), shared with the memory planner (model/plan.h). */
static rl_param_set train_set(const rl_train_opts *o)
{
    if (o->stage == RL_TRAIN_ALIGN)
        return RL_TRAINS_TIME_MIX;
    return o->stage == RL_TRAIN_EXTEND && o->train_decay_shift ? RL_TRAINS_DECAY_SHIFT : RL_TRAINS_ALL;
}

int rl__trainable(const rl__trainer *t, const char *name)
{
    const int mix_layers = t->s ? t->m->cfg.layers - t->s->attention_layers : t->m->cfg.layers;
    return rl_tensor_trains(name, train_set(t->o), mix_layers);
}

/* The master weights of the bf16 tensors (precision bf16-weights) from the fp32 values in the model folder dir
 * (the student the stage started from, or the checkpoint it resumes: saved from the masters, so exact). Each
 * rank reads the tensors it owns a part of and keeps that part. */
static int init_masters(rl__trainer *t, const char *dir, char *err, size_t errlen)
{
    rl_safetensors *st = NULL;
    int rc = 0;
    for (int i = 0; i < t->n_t && !rc; i++) {
        const rl__tensor *x = &t->t[i];
        size_t first, n = rl__owned(t, x, &first);
        if (!x->bf16 || !n)
            continue;
        if (!st && (rc = rl_st_open_dir(&st, dir, err, errlen)) != 0)
            break;
        float *h = malloc(sizeof(float) * x->count);
        rc = h ? rl_st_read_f32(st, x->name, h, x->entry->ndim, x->entry->shape, err, errlen)
               : fail(err, errlen, RL_ENOMEM, "out of memory reading %s", x->name);
        if (!rc && rl_upload(t->be, t->opt_w + x->moment_offset + first - t->zero.begin, h + first, n * sizeof *h))
            rc = rl_backend_status(t->be, err, errlen);
        free(h);
    }
    rl_st_close(st);
    return rc;
}

static int build_tensors(rl__trainer *t, const char *model_dir, char *err, size_t errlen)
{
    /* the fp32 tensors of the model, its bf16 matrices (precision bf16-weights), the student's time-mix tensors */
    const rl_model *m = t->m;
    const rl_arena *pa[3] = {&m->params, &m->frozen, t->s ? t->s->tparams : NULL};
    const rl_arena *ga[3] = {&m->grads, &m->grads16, t->s ? &t->tgrads : NULL};
    int cap = pa[0]->n + pa[1]->n + (pa[2] ? pa[2]->n : 0);
    t->t = calloc((size_t)cap + 1, sizeof *t->t);
    if (!t->t)
        return fail(err, errlen, RL_ENOMEM, "out of memory");
    size_t off = 0, n_bf16 = 0;
    for (int k = 0; k < 3; k++)
        for (int i = 0; pa[k] && i < pa[k]->n; i++) {
            const rl_arena_entry *e = &pa[k]->entries[i];
            if (!rl__trainable(t, e->name))
                continue;
            rl__tensor *x = &t->t[t->n_t++];
            const int gi = rl_arena_find(ga[k], e->name), bf = k == 1;
            if (gi < 0 || (bf && !m->g16))
                return fail(err, errlen, RL_EINVAL, "%s trains but has no gradient buffer", e->name);
            float *grad = bf ? rl_bf16_as_f32ptr(m->g16, ga[k]->entries[gi].offset) : rl_arena_ptr(ga[k], gi);
            float *param = bf ? rl_bf16_as_f32ptr(m->frozen16, e->offset) : pa[k]->base + e->offset;
            *x = (rl__tensor){.name = e->name, .param = param, .grad = grad, .entry = e, .count = e->count,
                              .moment_offset = off, .group = strstr(e->name, ".self_attn.") != NULL, .bf16 = bf};
            off += e->count;
            n_bf16 += bf;
        }
    snprintf(t->src_dir, sizeof t->src_dir, "%s", model_dir);
    if (t->n_t == 0)
        return fail(err, errlen, RL_EINVAL, "%s: no tensor of this model trains in this stage (train=%s)",
                    rl_train_stage_name(t->o->stage), t->o->train_decay_shift ? "decay_shift" : "all");
    int rc = rl__zero_shard(t, off, err, errlen);
    if (rc)
        return rc;
    const size_t n = t->opt_n = t->zero.end - t->zero.begin;
    const char *prev = rl_backend_mem_tag(t->be, "optimizer state");
    t->opt_m = rl_malloc(t->be, sizeof(float) * (n ? n : 1));
    t->opt_v = rl_malloc(t->be, sizeof(float) * (n ? n : 1));
    if (n_bf16) { /* indexed as the moments: the fp32 tensors' places stay unused (they are their own master) */
        rl_backend_mem_tag(t->be, "master weights");
        t->opt_w = rl_malloc(t->be, sizeof(float) * (n ? n : 1));
    }
    rl_backend_mem_tag(t->be, prev);
    if (!t->opt_m || !t->opt_v || (n_bf16 && !t->opt_w)) {
        rl_backend_clear_error(t->be);
        return fail(err, errlen, RL_ENOMEM, "out of memory for the AdamW moments%s (%zu floats)",
                    n_bf16 ? " and master weights" : "", n);
    }
    if (rl_zero(t->be, t->opt_m, sizeof(float) * n) | rl_zero(t->be, t->opt_v, sizeof(float) * n))
        return rl_backend_status(t->be, err, errlen);
    return n_bf16 ? init_masters(t, model_dir, err, errlen) : 0;
}

/* ---- checkpoints ---- */

/* precision bf16-weights: the model's bf16 matrices are saved in fp32 (m->save_fetch): those that train from their
 * masters, tensor by tensor in t[] order, which is the order the saves fetch them (the bf16 table's); the frozen
 * ones from the folder the stage's weights came from (t->src_dir: the student, or the last checkpoint, which
 * saved them the same way), so a saved model never holds a rounded weight. Sharded (ZeRO-1), each master is
 * gathered to rank 0 (rl__zero_gather_tensor), so every rank takes part in the same gathers: rank 0 through the
 * save, the others (and a rank 0 whose save failed half-way) through masters_drain. */
typedef struct {
    rl__trainer *t;
    const rl_train_hooks *hooks;
    int next;           /* t[] index from which the next bf16 tensor is looked for */
    float *send;        /* host scratch of the largest owned piece (sharded) */
    rl_safetensors *src; /* t->src_dir, opened at the first frozen matrix */
} masters_fetch;

static int next_bf16(const rl__trainer *t, int from)
{
    while (from < t->n_t && !t->t[from].bf16)
        from++;
    return from;
}

static int fetch_master(void *ctx, const char *name, float *host, size_t n, char *err, size_t errlen)
{
    masters_fetch *f = ctx;
    rl__trainer *t = f->t;
    if (!rl__trainable(t, name)) { /* a frozen matrix: its fp32 values as the stage found them */
        const int k = rl_arena_find(&t->m->frozen, name);
        if (k < 0)
            return fail(err, errlen, RL_EINVAL, "saving %s: not one of the model's bf16 matrices", name);
        const rl_arena_entry *e = &t->m->frozen.entries[k];
        char e2[512] = "";
        if ((!f->src && rl_st_open_dir(&f->src, t->src_dir, e2, sizeof e2)) ||
            rl_st_read_f32(f->src, name, host, e->ndim, e->shape, e2, sizeof e2))
            return fail(err, errlen, RL_EINVAL, "saving %s: precision bf16-weights keeps it in bf16 only and writes "
                        "its fp32 values from %s, the folder this stage loaded it from, which cannot be read now "
                        "(%s); restore that folder, or run the stage with precision bf16", name, t->src_dir, e2);
        /* that folder must still hold what the stage loaded: the bf16 rounding of its values is on the device */
        uint16_t *dev = malloc(sizeof *dev * (e->count ? e->count : 1));
        int rc = dev ? rl_download(t->be, dev, t->m->frozen16 + e->offset, sizeof *dev * e->count) : RL_ENOMEM;
        size_t bad = 0;
        for (size_t j = 0; !rc && j < e->count; j++)
            bad += rl_f32_to_bf16(host[j]) != dev[j];
        free(dev);
        if (rc)
            return rc == RL_ENOMEM ? fail(err, errlen, rc, "out of memory saving %s", name)
                                   : rl_backend_status(t->be, err, errlen);
        if (bad)
            return fail(err, errlen, RL_EINVAL, "saving %s: %s no longer holds the values this stage loaded (%zu of %zu "
                        "differ): it was overwritten during the stage; rerun the stage from it", name, t->src_dir, bad,
                        e->count);
        return 0;
    }
    const int i = next_bf16(t, f->next);
    if (i >= t->n_t || strcmp(t->t[i].name, name) || t->t[i].count != n)
        return fail(err, errlen, RL_EINVAL, "saving %s: its master weights are not the next ones (%s)", name,
                    i < t->n_t ? t->t[i].name : "none left");
    f->next = i + 1;
    if (t->zero.on)
        return rl__zero_gather_tensor(t, f->hooks, t->opt_w, &t->t[i], f->send, host, err, errlen);
    if (rl_download(t->be, host, t->opt_w + t->t[i].moment_offset, n * sizeof *host))
        return rl_backend_status(t->be, err, errlen);
    return 0;
}

/* The gathers of the bf16 tensors from f->next on, results dropped (sharded only): all of them whatever failed
 * (a failed download still takes part in its gather: rl__zero_gather_tensor), so the ranks stay in step. */
static int masters_drain(masters_fetch *f, float *host, char *err, size_t errlen)
{
    int rc = 0;
    for (int i = next_bf16(f->t, f->next); f->t->zero.on && i < f->t->n_t; i = next_bf16(f->t, i + 1)) {
        char e2[512] = "";
        int r2 = rl__zero_gather_tensor(f->t, f->hooks, f->t->opt_w, &f->t->t[i], f->send, host,
                                        rc ? e2 : err, rc ? sizeof e2 : errlen);
        rc = rc ? rc : r2;
    }
    f->next = f->t->n_t;
    return rc;
}

/* Rank 0 writes the model to dir (NULL: it takes part in the gathers only). With bf16 masters sharded, every
 * rank calls it; otherwise rank 0 alone. A failed save still completes the gathers and keeps its first error. */
static int save_model(rl__trainer *t, const rl_train_hooks *hooks, const char *dir, char *err, size_t errlen)
{
    size_t maxown = 1, maxc = 1;
    for (int i = 0; i < t->n_t; i++) {
        size_t first, own = rl__owned(t, &t->t[i], &first);
        maxown = own > maxown ? own : maxown;
        maxc = t->t[i].count > maxc ? t->t[i].count : maxc;
    }
    const int sharded = t->opt_w && t->zero.on;
    masters_fetch f = {.t = t, .hooks = hooks, .send = sharded ? malloc(sizeof(float) * maxown) : NULL};
    float *host = sharded && t->o->rank == 0 ? malloc(sizeof(float) * maxc) : NULL; /* (where the gathers land) */
    if (sharded) { /* a rank without its buffers cannot take part: all of them learn it before the gathers */
        float nomem = !f.send || (t->o->rank == 0 && !host) ? 1.0f : 0.0f;
        int rc = hooks->allreduce_sum(hooks->ctx, &nomem, 1, err, errlen);
        if (!rc && nomem > 0)
            rc = fail(err, errlen, RL_ENOMEM, "out of memory gathering the master weights (%zu floats)", maxc);
        if (rc)
            return free(f.send), free(host), rc;
    }
    if (t->m->frozen.n)
        t->m->save_fetch = fetch_master, t->m->save_fetch_ctx = &f;
    int rc = 0;
    if (dir)
        rc = t->s ? rl_student_save(t->s, dir, err, errlen) : rl_model_save(t->m, dir, RL_DTYPE_F32, 0, err, errlen);
    t->m->save_fetch = NULL, t->m->save_fetch_ctx = NULL;
    rl_st_close(f.src);
    if (t->opt_w) {
        char e2[512] = "";
        int r2 = masters_drain(&f, host, rc ? e2 : err, rc ? sizeof e2 : errlen);
        rc = rc ? rc : r2;
    }
    free(f.send), free(host);
    return rc;
}

/* optimizer.safetensors: exp_avg.NAME and exp_avg_sq.NAME of every trainable tensor, whole.  Unsharded,
 * rank 0 alone calls it.  Sharded (ZeRO-1), every rank calls it and runs the same gathers, and rank 0
 * writes what it gathers; path is NULL on the other ranks, and on rank 0 when the checkpoint already
 * failed (it still takes part in the gathers, writes nothing, and the caller keeps its first error). */
static int save_optimizer(rl__trainer *t, const rl_train_hooks *hooks, const char *path, char *err, size_t errlen)
{
    const int sharded = t->zero.on, root = t->o->rank == 0 || !sharded;
    size_t maxc = 1, maxown = 1;
    for (int i = 0; i < t->n_t; i++) {
        size_t first, own = rl__owned(t, &t->t[i], &first);
        maxc = t->t[i].count > maxc ? t->t[i].count : maxc;
        maxown = own > maxown ? own : maxown;
    }
    float *h = root ? malloc(sizeof(float) * maxc) : NULL, *send = sharded ? malloc(sizeof(float) * maxown) : NULL;
    int crc = 0, wrc = 0; /* a collective failed (every rank stops); the file could not be written (rank 0) */
    float nomem = (root && !h) || (sharded && !send) ? 1.0f : 0.0f;
    if (sharded) /* a rank without its buffers cannot take part: all of them learn it before the gathers */
        crc = hooks->allreduce_sum(hooks->ctx, &nomem, 1, err, errlen);
    if (!crc && nomem > 0)
        crc = fail(err, errlen, RL_ENOMEM, "out of memory gathering the optimizer state (%zu floats)", maxc);
    rl_st_writer *w = NULL;
    if (!crc && path) {
        rl_st_entry *ents = calloc((size_t)t->n_t * 2, sizeof *ents);
        char (*names)[112] = calloc((size_t)t->n_t * 2, sizeof *names);
        wrc = ents && names ? 0 : fail(err, errlen, RL_ENOMEM, "out of memory");
        for (int k = 0; k < 2 && !wrc; k++)
            for (int i = 0; i < t->n_t; i++) {
                const rl__tensor *x = &t->t[i];
                int j = k * t->n_t + i;
                snprintf(names[j], sizeof names[j], "%s.%s", k ? "exp_avg_sq" : "exp_avg", x->name);
                ents[j] = (rl_st_entry){.name = names[j], .dtype = RL_DTYPE_F32, .ndim = x->entry->ndim};
                memcpy(ents[j].shape, x->entry->shape, sizeof x->entry->shape);
            }
        if (!wrc)
            wrc = rl_st_writer_open(&w, path, ents, t->n_t * 2, NULL, 0, err, errlen);
        free(ents), free(names);
    }
    /* sharded: every gather runs on every rank whatever failed before (the first error is kept), so that the
     * ranks stay in step */
    const int gathers = sharded && !crc;
    for (int k = 0; k < 2 && (gathers || (!crc && !wrc)); k++)
        for (int i = 0; i < t->n_t && (gathers || (!crc && !wrc)); i++) {
            const rl__tensor *x = &t->t[i];
            const float *mom = k ? t->opt_v : t->opt_m;
            char e2[512] = "";
            if (sharded) {
                int r2 = rl__zero_gather_tensor(t, hooks, mom, x, send, h, crc ? e2 : err, crc ? sizeof e2 : errlen);
                crc = crc ? crc : r2;
            } else
                wrc = rl_download(t->be, h, mom + x->moment_offset, x->count * sizeof(float));
            if (!crc && !wrc && w)
                wrc = rl_st_writer_append(w, h, x->count, err, errlen);
        }
    if (w && (crc || wrc))
        rl_st_writer_abort(w);
    else if (w)
        wrc = rl_st_writer_finish(w, err, errlen);
    free(h), free(send);
    return crc ? crc : wrc;
}

/* Every rank reads the whole tensors and keeps the moments of its shard. */
static int load_optimizer(rl__trainer *t, const char *path, char *err, size_t errlen)
{
    rl_safetensors *st;
    int rc = rl_st_open_file(&st, path, err, errlen);
    if (rc)
        return rc;
    for (int k = 0; k < 2 && !rc; k++)
        for (int i = 0; i < t->n_t && !rc; i++) {
            const rl__tensor *x = &t->t[i];
            char name[112];
            snprintf(name, sizeof name, "%s.%s", k ? "exp_avg_sq" : "exp_avg", x->name);
            size_t first, n = rl__owned(t, x, &first);
            if (!n)
                continue;
            float *h = malloc(sizeof(float) * x->count);
            rc = h ? rl_st_read_f32(st, name, h, x->entry->ndim, x->entry->shape, err, errlen) : RL_ENOMEM;
            if (!rc)
                rc = rl_upload(t->be, (k ? t->opt_v : t->opt_m) + x->moment_offset + first - t->zero.begin,
                               h + first, n * sizeof(float));
            free(h);
        }
    rl_st_close(st);
    return rc;
}

/* The options a resumed run must share with the run that wrote the checkpoint. */
static json_t *run_identity(const rl_train_opts *o, int64_t total_tokens)
{
    return json_pack("{s:s, s:I, s:I, s:I, s:I, s:f, s:f, s:f, s:f, s:i, s:f, s:f, s:I}", "stage",
                     rl_train_stage_name(o->stage), "total_tokens", (json_int_t)total_tokens, "batch",
                     (json_int_t)o->batch, "seq_len", (json_int_t)o->seq_len, "micro_batch",
                     (json_int_t)o->micro_batch, "lr_init", o->lr.lr_init, "lr_final", o->lr.lr_final, "lr2_init",
                     o->lr.lr2_init, "lr2_final", o->lr.lr2_final, "schedule", (int)o->lr.kind, "lr_wait",
                     o->lr.lr_wait, "lr_endpoint", o->lr.lr_endpoint, "warmup", (json_int_t)o->lr.warmup_steps);
}

/* Rank 0 writes the checkpoint; sharded (ZeRO-1), the other ranks call it too, to send their moments. */
static int write_checkpoint(rl__trainer *t, const char *ckdir, int64_t step, int64_t tokens, int64_t total_tokens,
                            double lr, double lr2, const rl_train_hooks *hooks, char *err, size_t errlen)
{
    char tmp[4096] = "", path[4096], f[4200];
    const int root = t->o->rank == 0;
    const int begun = !root || rl_ckpt_begin(ckdir, step, tmp, sizeof tmp, err, errlen) == 0;
    int rc = begun ? 0 : RL_EINVAL;
    if ((root && !rc) || t->zero.on) { /* (sharded: every rank takes part in the master weights' gathers) */
        char e2[512] = "";
        int r2 = save_model(t, hooks, root && !rc ? tmp : NULL, rc ? e2 : err, rc ? sizeof e2 : errlen);
        rc = rc ? rc : r2;
    }
    if (begun || t->zero.on) { /* a rank 0 that failed still takes part in the gathers, with its first error */
        char e2[512] = "";
        snprintf(f, sizeof f, "%s/optimizer.safetensors", tmp);
        int r2 = save_optimizer(t, hooks, root && !rc ? f : NULL, rc ? e2 : err, rc ? sizeof e2 : errlen);
        rc = rc ? rc : r2;
    }
    if (!root || !begun)
        return rc;
    if (!rc) {
        json_t *j = json_pack("{s:o, s:f, s:f}", "run", run_identity(t->o, total_tokens), "lr", lr, "lr2", lr2);
        snprintf(f, sizeof f, "%s/train_state.json", tmp);
        if (!j || json_dump_file(j, f, JSON_INDENT(2) | JSON_REAL_PRECISION(17)) != 0)
            rc = fail(err, errlen, RL_EINVAL, "%s: cannot write", f);
        json_decref(j);
    }
    rl_ckpt_info info = {.step = step, .tokens = tokens, .sample = (uint64_t)step * (uint64_t)t->o->batch,
                         .rng = t->o->seed};
    snprintf(info.stage, sizeof info.stage, "%s", rl_train_stage_name(t->o->stage));
    rl_ckpt_info written;
    if (!rc && rl_ckpt_commit(tmp, &info, path, sizeof path, &written, err, errlen) != 0)
        rc = RL_EINVAL;
    if (!rc) /* bf16-weights: the frozen matrices' fp32 values now also here, in a folder the GC keeps longest */
        snprintf(t->src_dir, sizeof t->src_dir, "%s", path);
    if (rc) {
        char e2[512];
        snprintf(e2, sizeof e2, "%s", err);
        return fail(err, errlen, rc, "checkpoint at step %lld: %s (earlier checkpoints are intact)", (long long)step,
                    e2);
    }
    if (rl_ckpt_gc(ckdir, t->o->keep_checkpoints > 0 ? t->o->keep_checkpoints : 1, err, errlen) < 0)
        return RL_EINVAL;
    if (hooks && hooks->checkpoint)
        hooks->checkpoint(hooks->ctx, &written, path);
    return 0;
}

static int check_identity(const rl_train_opts *o, int64_t total_tokens, const char *ckpt, char *err, size_t errlen)
{
    char f[4200];
    snprintf(f, sizeof f, "%s/train_state.json", ckpt);
    json_t *j = json_load_file(f, 0, NULL);
    json_t *want = run_identity(o, total_tokens);
    int same = j && want && json_equal(json_object_get(j, "run"), want);
    int rc = 0;
    if (!same) {
        char *have = j ? json_dumps(json_object_get(j, "run"), JSON_COMPACT) : NULL;
        char *now = want ? json_dumps(want, JSON_COMPACT) : NULL;
        rc = fail(err, errlen, RL_EINVAL, "%s was written by a run with other options (%s); this run has %s. Resume "
                  "with the same options, or write to a new --out", ckpt, have ? have : "unreadable",
                  now ? now : "?");
        free(have), free(now);
    }
    json_decref(j), json_decref(want);
    return rc;
}

/* ---- the loop ---- */

static int find_nonfinite(rl__trainer *t, char *name, size_t len)
{
    char err[256] = "";
    double *sq = rl__grad_sq(t, 0, err, sizeof err);
    for (int i = 0; sq && i < t->n_t; i++)
        if (!isfinite(sq[i])) {
            snprintf(name, len, "%s", t->t[i].name);
            free(sq);
            return 1;
        }
    snprintf(name, len, "%s", sq ? "(none found)" : err);
    free(sq);
    return 0;
}

static int read_batch(rl__trainer *t, const rl_sampler *smp, uint64_t g0, int32_t *buf, char *err, size_t errlen)
{
    const int T = t->o->seq_len, V = t->m->cfg.vocab;
    for (int j = 0; j < t->micro; j++) {
        int32_t *row = buf + (size_t)j * (T + 1);
        if (rl_sampler_read(smp, g0 + (uint64_t)j, row, err, errlen) != 0)
            return RL_EINVAL;
        for (int i = 0; i <= T; i++)
            if (row[i] < 0 || row[i] >= V)
                return fail(err, errlen, RL_EINVAL, "token id %d in sample %llu is outside the model's vocabulary "
                            "of %d: the data was tokenized for another vocabulary", row[i],
                            (unsigned long long)(g0 + (uint64_t)j), V);
    }
    return 0;
}

static void trace_tokens(FILE *f, const int32_t *all, int n_rows, int T)
{
    fputs(", \"samples\": [", f);
    for (int j = 0; j < n_rows; j++) {
        fputs(j ? ", [" : "[", f);
        for (int i = 0; i <= T; i++)
            fprintf(f, i ? ",%d" : "%d", all[(size_t)j * (T + 1) + i]);
        fputc(']', f);
    }
    fputc(']', f);
}

static int copy_file(const char *src, const char *dst)
{
    FILE *in = fopen(src, "rb");
    if (!in)
        return 1; /* absent: nothing to copy */
    FILE *out = fopen(dst, "wb");
    int rc = out ? 0 : -1;
    char buf[65536];
    size_t n;
    while (!rc && (n = fread(buf, 1, sizeof buf, in)) > 0)
        rc = fwrite(buf, 1, n, out) == n ? 0 : -1;
    if (out && fclose(out) != 0)
        rc = -1;
    fclose(in);
    return rc;
}

/* Tokenizer files travel with the model from stage to stage (the first source holding each wins). */
static int copy_tokenizer_files(const char *out, const char *const *from, int n_from, char *err, size_t errlen)
{
    static const char *const names[] = {"tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt",
                                        "special_tokens_map.json", "added_tokens.json", "tokenizer.model",
                                        "generation_config.json"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        for (int k = 0; k < n_from; k++) {
            if (!from[k] || !strcmp(from[k], out))
                continue;
            char s[4096], d[4096];
            snprintf(s, sizeof s, "%s/%s", from[k], names[i]);
            snprintf(d, sizeof d, "%s/%s", out, names[i]);
            int rc = copy_file(s, d);
            if (rc < 0)
                return fail(err, errlen, RL_EINVAL, "copying %s to %s: %s", s, d, strerror(errno));
            if (rc == 0)
                break;
        }
    return 0;
}

static int load_models(rl__trainer *t, const char *model_dir, char *err, size_t errlen)
{
    const rl_train_opts *o = t->o;
    int rc;
    rl_backend_mem_tag(t->be, "student weights");
    if (o->stage == RL_TRAIN_PRETRAIN) {
        if (rl_student_is_student_dir(model_dir))
            return fail(err, errlen, RL_EINVAL, "%s is a RADLADS student; pretrain trains softmax-attention models "
                        "(make one with `radlads init-model`)", model_dir);
        rc = rl_model_load(&t->m, t->be, model_dir, 0, err, errlen);
    } else {
        if (!rl_student_is_student_dir(model_dir))
            return fail(err, errlen, RL_EINVAL, "%s is not a RADLADS student folder; make one from the teacher with "
                        "`radlads-worker run --stage transfer`", model_dir);
        rc = rl_student_load_ex(&t->s, t->be, model_dir, o->bf16 == RL_PRECISION_BF16_WEIGHTS, err, errlen);
        if (!rc)
            t->m = t->s->base;
    }
    if (rc || (o->stage != RL_TRAIN_ALIGN && o->stage != RL_TRAIN_DISTILL))
        return rc;
    rl_backend_mem_tag(t->be, "teacher weights"); /* (bf16: its matrices in bf16 only, never in fp32) */
    rc = rl_model_load_ex(&t->teacher, t->be, o->teacher, 0, o->bf16 != 0, err, errlen);
    rl_backend_mem_tag(t->be, NULL);
    if (rc)
        return rc;
    const rl_model_config *a = &t->teacher->cfg, *b = &t->m->cfg;
    if (a->hidden != b->hidden || a->layers != b->layers || a->vocab != b->vocab || a->heads != b->heads ||
        a->kv_heads != b->kv_heads)
        return fail(err, errlen, RL_EINVAL, "teacher %s (hidden %d, layers %d, heads %d/%d, vocab %d) does not match "
                    "the student (hidden %d, layers %d, heads %d/%d, vocab %d): use the teacher it was transferred "
                    "from", o->teacher, a->hidden, a->layers, a->heads, a->kv_heads, a->vocab, b->hidden, b->layers,
                    b->heads, b->kv_heads, b->vocab);
    return 0;
}

/* The model's grads_ready during the last micro-batch: start the buckets whose gradients are final. */
static int grads_ready(void *ctx, int event)
{
    rl__trainer *t = ctx;
    if (event >= 2 && t->fail_backward) {
        snprintf(t->ov_err, sizeof t->ov_err, "RADLADS_TEST_POISON: the backward of step %lld fails at its gradient "
                 "event %d on rank %d", (long long)t->step, event, t->o->rank);
        return RL_EINVAL;
    }
    char e2[256]; /* (the first error of the step is the one kept) */
    const int first = !t->ov_err[0];
    return rl__buckets_event(t, t->hooks, event, first ? t->ov_err : e2, first ? sizeof t->ov_err : sizeof e2);
}

static int cmp_stat_seconds(const void *a, const void *b)
{
    const double x = ((const rl_op_stat *)a)->seconds, y = ((const rl_op_stat *)b)->seconds;
    return x < y ? 1 : x > y ? -1 : 0;
}

/* The tensors after t[i] whose owned parts continue t[i]'s in the parameters, the gradients and the moments (and
 * so the master weights), with the same learning rate group and dtype: AdamW is element-wise with the same
 * hyperparameters for all of them, so one update over the run is the same arithmetic as one per tensor, in one
 * launch (a student whose tensors all train: a run per layer and group — its attention projections take lr2 — and
 * one of the time-mix arena's; 2·layers + 2 launches instead of one per tensor). *n (t[i]'s owned
 * count, from `first`) grows by theirs; returns how many were joined. */
static int adamw_run(const rl__trainer *t, int i, size_t first, size_t *n)
{
    const rl__tensor *x = &t->t[i];
    size_t len = *n;
    int j = i + 1, to_end = len && first + len == x->count; /* the run so far reaches its last tensor's end */
    for (; to_end && j < t->n_t; j++) {
        const rl__tensor *y = &t->t[j];
        size_t f2, n2 = rl__owned(t, y, &f2);
        if (!n2 || f2 != 0 || y->group != x->group || y->bf16 != x->bf16 ||
            y->param != rl__at(x->param, x->bf16, first + len) || y->grad != rl__at(x->grad, x->bf16, first + len) ||
            y->moment_offset != x->moment_offset + first + len)
            break;
        len += n2, to_end = n2 == y->count;
    }
    *n = len;
    return j - i - 1;
}

/* --profile: DIR/profile.tsv (one line per op, matmuls per shape, by time), the top ops in the log. */
static void write_profile(rl__trainer *t, const rl_train_opts *o, const rl_train_hooks *hooks, int64_t steps)
{
    rl_op_stat st[256];
    const int n = rl_backend_op_stats(t->be, st, 256);
    rl_backend_profile(t->be, 0);
    if (n <= 0 || steps <= 0) {
        say(hooks, "info", "%s: profile: nothing to report (the first step is not profiled; this run had %lld more)",
            rl_train_stage_name(o->stage), (long long)(steps > 0 ? steps : 0));
        return;
    }
    qsort(st, (size_t)n, sizeof st[0], cmp_stat_seconds);
    double total = 0, gemm = 0;
    for (int i = 0; i < n; i++)
        total += st[i].seconds, gemm += st[i].flops > 0 ? st[i].seconds : 0;
    char path[4096];
    snprintf(path, sizeof path, "%s/profile.tsv", o->out);
    FILE *f = fopen(path, "w");
    if (f) {
        fprintf(f, "# %lld profiled steps (each op timed with a device sync before and after it)\n"
                "op\tM\tN\tK\ttrans_a\ttrans_b\tbatch\tcalls\tseconds\tms_per_step\tshare\tTFLOP_per_s\n",
                (long long)steps);
        for (int i = 0; i < n; i++)
            fprintf(f, "%s\t%d\t%d\t%d\t%d\t%d\t%d\t%ld\t%.9g\t%.4f\t%.6f\t%.6g\n", st[i].op, st[i].M, st[i].N,
                    st[i].K, st[i].trans_a, st[i].trans_b, st[i].batch, st[i].calls, st[i].seconds,
                    1e3 * st[i].seconds / (double)steps, st[i].seconds / total,
                    st[i].seconds > 0 ? st[i].flops / st[i].seconds / 1e12 : 0.0);
        fclose(f);
    }
    char top[1024];
    size_t len = 0;
    for (int i = 0; i < n && i < 8 && len < sizeof top; i++) {
        char shape[64] = "";
        if (st[i].flops > 0)
            snprintf(shape, sizeof shape, " %dx%dx%d", st[i].M, st[i].N, st[i].K);
        len += (size_t)snprintf(top + len, sizeof top - len, "%s%s%s %.1f%%", i ? ", " : "", st[i].op, shape,
                                100 * st[i].seconds / total);
    }
    say(hooks, "info", "%s: profile of %lld steps: %.1f ms of ops per step, matmuls %.1f%%; top: %s (all in %s)",
        rl_train_stage_name(o->stage), (long long)steps, 1e3 * total / (double)steps, 100 * gemm / total, top,
        f ? path : "(profile.tsv could not be written)");
}

/* "student weights 1.2 MiB, gradients 1.2 MiB, …": the backend's memory by role, held now or peak. */
static void mem_roles(const rl_backend *be, int peak, char *buf, size_t len)
{
    rl_mem_role r[16];
    const int n = rl_backend_mem_roles(be, r, 16);
    size_t used = 0;
    buf[0] = 0;
    for (int i = 0; i < n && used < len; i++) {
        const size_t b = peak ? r[i].peak : r[i].live;
        if (b)
            used += (size_t)snprintf(buf + used, len - used, "%s%s %.2f MiB", used ? ", " : "", r[i].tag,
                                     (double)b / 1048576.0);
    }
}

/* {"student weights": 123, …}: the backend's memory by role in bytes, peak or held now, as a JSON object. */
static void json_roles(FILE *f, const rl_backend *be, int peak)
{
    rl_mem_role r[16];
    const int n = rl_backend_mem_roles(be, r, 16);
    fputc('{', f);
    for (int i = 0; i < n; i++)
        fprintf(f, "%s\"%s\": %zu", i ? ", " : "", r[i].tag, peak ? r[i].peak : r[i].live);
    fputc('}', f);
}

/* Mixed precision: every GEMM with bf16 operands and fp32 accumulation (rl_backend_set_autocast); the
 * models' weights (fp32, what AdamW updates: the master copy) are registered so that their bf16 copies are
 * made once per optimizer step; the frozen teacher was loaded with its matrices in bf16 only (load_models). */
static int use_bf16(rl__trainer *t, char *err, size_t errlen)
{
    int rc = rl_backend_set_autocast(t->be, RL_DTYPE_BF16);
    const rl_arena *w[] = {&t->m->params, t->s ? t->s->tparams : NULL, t->teacher ? &t->teacher->params : NULL};
    for (size_t i = 0; i < sizeof w / sizeof w[0] && !rc; i++)
        if (w[i] && w[i]->total)
            rc = rl_backend_weights(t->be, w[i]->base, w[i]->total);
    return rc ? rl_backend_status(t->be, err, errlen) : 0;
}

static int check_opts(const rl_train_opts *o, char *err, size_t errlen)
{
    const int world = o->world > 0 ? o->world : 1;
    if (!o->student || !o->out || o->n_data < 1)
        return fail(err, errlen, RL_EINVAL, "--stage %s needs --student, --data and --out", rl_train_stage_name(o->stage));
    if ((o->stage == RL_TRAIN_ALIGN || o->stage == RL_TRAIN_DISTILL) && !o->teacher)
        return fail(err, errlen, RL_EINVAL, "--stage %s needs --teacher (the softmax model the student came from)",
                    rl_train_stage_name(o->stage));
    if (o->tokens <= 0 || o->seq_len <= 0 || o->batch <= 0)
        return fail(err, errlen, RL_EINVAL, "tokens, seq_len and batch must be positive");
    if (o->batch % world)
        return fail(err, errlen, RL_EINVAL, "batch %d is not a multiple of the %d ranks", o->batch, world);
    const int local = o->batch / world, micro = o->micro_batch > 0 ? o->micro_batch : local;
    if (local % micro)
        return fail(err, errlen, RL_EINVAL, "micro_batch %d does not divide the per-rank batch %d (batch %d over %d "
                    "ranks)", micro, local, o->batch, world);
    if (o->lr.lr_wait < 0 || o->lr.lr_endpoint > 1 || o->lr.lr_wait >= o->lr.lr_endpoint)
        return fail(err, errlen, RL_EINVAL, "lr_wait %g and lr_endpoint %g must satisfy 0 ≤ wait < endpoint ≤ 1",
                    o->lr.lr_wait, o->lr.lr_endpoint);
    if (o->bf16 == RL_PRECISION_BF16_WEIGHTS && o->stage == RL_TRAIN_PRETRAIN)
        return fail(err, errlen, RL_EINVAL, "precision bf16-weights trains a RADLADS student (align, distill, "
                    "extend); pretrain a softmax teacher with precision bf16 or fp32");
    const int distill = o->stage == RL_TRAIN_DISTILL; /* the only stage the weights mean anything to */
    if (distill && (o->kl_weight < 0 || o->ce_weight < 0 || o->kl_weight + o->ce_weight <= 0))
        return fail(err, errlen, RL_EINVAL, "kl_weight %g and ce_weight %g must be ≥ 0 and not both 0", o->kl_weight,
                    o->ce_weight);
    return 0;
}

static void destroy(rl__trainer *t)
{
    rl__stage_release(t);
    rl__buckets_free(t);
    rl__zero_free(t);
    if (t->be) {
        rl_free(t->be, t->opt_m);
        rl_free(t->be, t->opt_v);
        rl_free(t->be, t->opt_w);
    }
    free(t->t);
    if (t->s)
        rl_student_destroy(t->s);
    else
        rl_model_destroy(t->m);
    rl_model_destroy(t->teacher);
    rl_backend_destroy(t->be);
}

/* The per-step agreement between ranks: one all-reduce of a few scalars.  A rank that failed this step
 * still takes part (with its flag set) so that no rank waits forever in the gradient all-reduce. */
enum { AGREE_LOSS, AGREE_FAILED, AGREE_CKPT, AGREE_DRAIN, AGREE_STOP, AGREE_N };

static int agree(const rl_train_opts *o, const rl_train_hooks *hooks, float *v, int n, char *err, size_t errlen)
{
    if (o->world <= 1)
        return 0;
    char e2[512] = "";
    int rc = hooks->allreduce_sum(hooks->ctx, v, (size_t)n, e2, sizeof e2);
    if (rc)
        return fail(err, errlen, rc, "all-reduce between the %d ranks failed: %s", o->world, e2);
    return 0;
}

/* After work only rank 0 does (a checkpoint, a validation): every rank learns whether it worked, so that
 * none goes on to the next step's all-reduce alone. */
static int agree_rank0(const rl_train_opts *o, const rl_train_hooks *hooks, int rc, const char *what, char *err,
                       size_t errlen)
{
    float failed = rc ? 1.0f : 0.0f;
    int r2 = agree(o, hooks, &failed, 1, err, errlen);
    if (r2)
        return r2;
    if (!rc && failed > 0)
        return fail(err, errlen, RL_EINVAL, "rank 0 could not %s (its log has the reason)", what);
    return rc;
}

/* Every rank learns whether every other one got through a set-up phase (rc: this rank's result); one that did not
 * is named by count in the others' error, so none waits alone in the next collective. */
static int agree_ready(const rl_train_opts *o, const rl_train_hooks *hooks, int rc, const char *what, char *err,
                       size_t errlen)
{
    if (o->world <= 1)
        return rc;
    float v[AGREE_N] = {0};
    v[AGREE_FAILED] = rc ? 1.0f : 0.0f;
    char e2[512];
    int r2 = agree(o, hooks, v, AGREE_N, e2, sizeof e2);
    if (r2 && !rc)
        rc = r2, snprintf(err, errlen, "%s", e2);
    else if (!rc && v[AGREE_FAILED] > 0)
        rc = fail(err, errlen, RL_EINVAL, "%.0f other rank(s) could not %s (their log has the reason)",
                  (double)v[AGREE_FAILED], what);
    return rc;
}

int rl_train_run(const rl_train_opts *opts, const rl_train_hooks *hooks, char *err, size_t errlen)
{
    err[0] = 0;
    int rc = check_opts(opts, err, errlen);
    if (rc)
        return rc;
    rl_train_opts o = *opts;
    if (o.world < 1)
        o.world = 1;
    if (o.world > 1 && (!hooks || !hooks->allreduce_sum))
        return fail(err, errlen, RL_EINVAL, "%d ranks need an all-reduce (hooks.allreduce_sum)", o.world);
    if (o.world > 1 && o.zero && (!hooks->reduce_scatter_sum || !hooks->allgather || !hooks->gather))
        return fail(err, errlen, RL_EINVAL, "zero=1 on %d ranks needs hooks.reduce_scatter_sum, allgather and gather",
                    o.world);
    if (o.lr.lr2_init < 0)
        o.lr.lr2_init = o.lr.lr_init;
    if (o.lr.lr2_final < 0)
        o.lr.lr2_final = o.lr.lr2_init == o.lr.lr_init ? o.lr.lr_final : o.lr.lr2_init;
    const int local = o.batch / o.world;
    if (o.micro_batch <= 0)
        o.micro_batch = local;
    const int A = local / o.micro_batch, T = o.seq_len;
    const int64_t per_step = (int64_t)o.batch * T, total_steps = (o.tokens + per_step - 1) / per_step;
    const int64_t total_tokens = total_steps * per_step;
    o.lr.total_tokens = total_tokens;
    o.lr.warmup_tokens = o.lr.warmup_steps * per_step;
    if (o.lr.warmup_tokens >= total_tokens)
        o.lr.warmup_tokens = 0; /* a run shorter than its warmup: progress counts from the start */

    rl__trainer t = {.o = &o, .micro = o.micro_batch};
    rl_backend_options bo = {.kind = o.cuda ? RL_BACKEND_CUDA : RL_BACKEND_CPU, .num_threads = o.threads,
                             .device = o.gpu};
    if (rl_backend_create(&t.be, &bo, err, errlen))
        rc = RL_EINVAL, t.be = NULL;
    else if (rl__fault_start_fails(o.rank))
        rc = fail(err, errlen, RL_EINVAL, "RADLADS_TEST_POISON: rank %d fails as its backend is made", o.rank);
    /* A rank without a backend (a missing GPU) must not leave the others waiting for it in their first collective
     * (NCCL's set-up in backend_ready, or the agreement before the first step): every rank learns first. */
    rc = agree_ready(&o, hooks, rc, "make their backend", err, errlen);
    if (rc) {
        if (t.be)
            rl_backend_destroy(t.be);
        return rc;
    }
    /* a failure here (NCCL's communicator) reaches the agreement before the first step like any other set-up
     * failure */
    if (hooks && hooks->backend_ready && hooks->backend_ready(hooks->ctx, t.be, err, errlen))
        rc = RL_EINVAL;
    rl_sampler *smp = NULL;
    rl__valid *valid = NULL; /* held-out windows (validate.c) */
    FILE *metrics = NULL;
    int32_t *batch_buf = NULL;
    char ckdir[4096], ckpt[4096] = "", path[4200];
    snprintf(ckdir, sizeof ckdir, "%s/checkpoints", o.out);
    rl_ckpt_info info = {0};
    if (!rc)
        rc = mkdirs(o.out, err, errlen);
    if (!rc && o.resume) {
        char skipped[1024] = "";
        int r = rl_ckpt_latest(ckdir, ckpt, sizeof ckpt, &info, skipped, sizeof skipped, err, errlen);
        if (r < 0)
            rc = RL_EINVAL;
        else if (r == 1)
            ckpt[0] = 0;
        if (skipped[0] && o.rank == 0)
            say(hooks, "warn", "radlads-worker: skipped damaged checkpoints: %s", skipped);
        if (!rc && ckpt[0] && strcmp(info.stage, rl_train_stage_name(o.stage)) != 0)
            rc = fail(err, errlen, RL_EINVAL, "%s is a %s checkpoint, not %s", ckpt, info.stage,
                      rl_train_stage_name(o.stage));
        if (!rc && ckpt[0])
            rc = check_identity(&o, total_tokens, ckpt, err, errlen);
    }
    if (!rc)
        rc = load_models(&t, ckpt[0] ? ckpt : o.student, err, errlen);
    if (!rc && o.bf16)
        rc = use_bf16(&t, err, errlen);
    if (!rc)
        rc = rl__stage_prepare(&t, err, errlen);
    if (!rc)
        rc = build_tensors(&t, ckpt[0] ? ckpt : o.student, err, errlen);
    rl_backend_mem_tag(t.be, "communication");
    if (!rc && o.world > 1)
        rc = rl__buckets_plan(&t, o.bucket_floats, err, errlen);
    if (!rc && o.world > 1)
        rc = rl__zero_plan(&t, err, errlen);
    /* the all-reduce overlaps the last micro-batch's backward (not with ZeRO-1's reduce-scatter) */
    /* (not with bf16 gradients either: each bf16 bucket in flight would need its own fp32 staging, as much as
     * all the bf16 gradients in fp32; they go through the one staging bucket after the backward) */
    const int has_bf16 = t.opt_w != NULL; /* (the masters exist exactly when a tensor trains in bf16) */
    const int overlap = o.world > 1 && !t.zero.on && o.overlap && hooks && hooks->allreduce_start &&
                        hooks->allreduce_wait && !has_bf16;
    t.hooks = hooks;
    if (!rc && overlap)
        rc = rl__buckets_overlap_plan(&t, err, errlen);
    rl_backend_mem_tag(t.be, NULL);
    if (!rc && ckpt[0]) {
        snprintf(path, sizeof path, "%s/optimizer.safetensors", ckpt);
        rc = load_optimizer(&t, path, err, errlen);
    }
    if (!rc && rl_sampler_open(&smp, o.data, o.n_data, T, err, errlen) != 0)
        rc = RL_EINVAL;
    if (!rc)
        rc = rl__valid_open(&t, smp, &valid, err, errlen);
    if (!rc) {
        batch_buf = malloc(sizeof(int32_t) * (size_t)local * (T + 1));
        if (!batch_buf)
            rc = fail(err, errlen, RL_ENOMEM, "out of memory for a batch of %d × %d tokens", local, T + 1);
    }
    if (!rc && o.rank == 0) { /* one writer: the ranks share the output folder */
        snprintf(path, sizeof path, "%s/metrics.jsonl", o.out);
        metrics = fopen(path, ckpt[0] ? "a" : "w");
        if (!metrics)
            rc = fail(err, errlen, RL_EINVAL, "%s: cannot open for writing (%s)", path, strerror(errno));
    }
    int64_t step = ckpt[0] ? info.step : 0;
    size_t opt_bytes = 0; /* the largest rank's AdamW moments: what each rank needs */
    for (int r = 0; !rc && r < (t.zero.on ? o.world : 1); r++) {
        size_t n = t.zero.on ? t.zero.bounds[r + 1] - t.zero.bounds[r] : t.opt_n;
        opt_bytes = 2 * sizeof(float) * n > opt_bytes ? 2 * sizeof(float) * n : opt_bytes;
    }
    if (!rc && o.rank == 0) {
        int64_t n_train = 0;
        for (int i = 0; i < t.n_t; i++)
            n_train += (int64_t)t.t[i].count;
        char ranks[192] = "";
        if (o.world > 1)
            snprintf(ranks, sizeof ranks, "; %d ranks × %d sequences, gradients summed in %d %s buckets of ≤ %zu "
                     "floats (%d packed)", o.world, local, t.buckets.n_buckets,
                     t.zero.on ? "reduce-scatter" : "all-reduce", t.buckets.bucket_floats, t.buckets.n_packed);
        say(hooks, "info", "%s: %s%lld steps × %d sequences × %d tokens = %lld tokens; %d micro-batches of %d; %lld "
            "trainable parameters in %d tensors%s", rl_train_stage_name(o.stage), ckpt[0] ? "resuming; " : "",
            (long long)total_steps, o.batch, T, (long long)total_tokens, A, o.micro_batch, (long long)n_train, t.n_t,
            ranks);
        if (o.world > 1 && !t.zero.on && o.overlap && has_bf16)
            say(hooks, "info", "%s: bf16 gradients are summed after the backward (not overlapped with it: each bucket "
                "in flight would need fp32 staging of its own)", rl_train_stage_name(o.stage));
        if (t.zero.on)
            say(hooks, "info", "%s: optimizer state (AdamW m and v, fp32): %zu bytes per rank (ZeRO-1: each rank "
                "keeps its shard of ≤ %zu of the %lld trainable floats; %lld bytes unsharded)",
                rl_train_stage_name(o.stage), opt_bytes, opt_bytes / 8, (long long)n_train,
                (long long)n_train * 8);
        else
            say(hooks, "info", "%s: optimizer state (AdamW m and v, fp32): %zu bytes per rank (%s)",
                rl_train_stage_name(o.stage), opt_bytes, o.world > 1 ? "every rank keeps all of it; zero=1 shards it"
                : o.zero ? "one rank: zero=1 has nothing to shard" : "one rank");
        char roles[1024];
        size_t live = 0;
        rl_backend_memory(t.be, &live, NULL);
        mem_roles(t.be, 0, roles, sizeof roles);
        say(hooks, "info", "%s: %.1f MiB held on the %s backend after setup (%s): %s", rl_train_stage_name(o.stage),
            (double)live / 1048576.0, rl_backend_name(t.be),
            o.recompute ? "recompute: layer inputs kept, each layer's forward rerun in the backward"
                        : "every layer's activations kept; recompute=1 keeps only layer inputs", roles);
        if (ckpt[0])
            say(hooks, "info", "%s: resumed from %s at step %lld", rl_train_stage_name(o.stage), ckpt,
                (long long)step);
    }
    /* Every rank must know that every other one is ready before the first all-reduce: a rank that failed
     * to load leaves the others with an error instead of a hang. */
    rc = agree_ready(&o, hooks, rc, "start the stage", err, errlen);
    const double t0 = now_s();
    const int64_t step0 = step;
    double lr = 0, lr2 = 0;
    while (!rc && step < total_steps) {
        const int64_t tokens = step * per_step;
        if (rl__fault_quits(step, o.rank)) {
            rc = fail(err, errlen, RL_EINVAL, "RADLADS_TEST_POISON: rank %d quits at step %lld", o.rank,
                      (long long)step);
            break;
        }
        /* --profile: rank 0 writes it, so only rank 0 pays for the syncs; the first step warms up (allocations,
         * cuBLASLt plans) */
        if (o.profile && o.rank == 0 && step == step0 + 1)
            rl_backend_profile(t.be, 1);
        rc = rl_zero(t.be, t.m->grads.base, t.m->grads.total * sizeof(float));
        if (t.m->g16)
            rc |= rl_zero(t.be, t.m->g16, t.m->grads16.total * sizeof(uint16_t));
        if (t.tgrads.base)
            rc |= rl_zero(t.be, t.tgrads.base, t.tgrads.total * sizeof(float));
        double loss = 0;
        /* (a step that poisons a gradient for the tests reduces after the poisoning, as without overlap) */
        const int overlap_now = overlap && !rl__fault_poisons_grad(step);
        t.step = step, t.fail_backward = rl__fault_backward_fails(step, o.rank);
        t.fail_pack = rl__fault_pack_fails(step, o.rank);
        rl__buckets_begin(&t);
        for (int a = 0; a < A && !rc; a++) {
            const uint64_t g0 = (uint64_t)step * o.batch + (uint64_t)o.rank * local + (uint64_t)a * o.micro_batch;
            int32_t *buf = batch_buf + (size_t)a * o.micro_batch * (T + 1);
            double l = 0;
            rc = read_batch(&t, smp, g0, buf, err, errlen);
            if (!rc && overlap_now && a == A - 1) /* the last micro-batch: gradients become final */
                t.m->grads_ready = grads_ready, t.m->grads_ready_ctx = &t, t.ov_err[0] = 0;
            if (!rc)
                rc = rl__stage_micro_step(&t, buf, &l, err, errlen);
            if (rc && t.ov_err[0])
                snprintf(err, errlen, "%s", t.ov_err);
            t.m->grads_ready = NULL;
            loss += l / A;
        }
        if (overlap_now) { /* every rank, whatever happened above: the same collectives in the same order */
            char e2[256] = "";
            int r2 = rl__buckets_finish(&t, hooks, e2, sizeof e2);
            if (r2 && !rc)
                rc = r2, snprintf(err, errlen, "%s", e2);
            if (step == step0 && o.rank == 0 && !rc)
                say(hooks, "info", "%s: %d of %d gradient buckets started their all-reduce during the backward "
                    "(overlapped), the rest after it", rl_train_stage_name(o.stage), t.buckets.early,
                    t.buckets.n_buckets);
        }
        rl__fault_poison_grad(&t, step);
        loss = rl__fault_poison_loss(step, loss);
        int ctl = hooks && hooks->control ? hooks->control(hooks->ctx) : 0;
        if (o.world > 1) {
            float v[AGREE_N] = {(float)loss, rc ? 1.0f : 0.0f, (ctl & RL_TRAIN_CTL_CHECKPOINT) ? 1.0f : 0.0f,
                                (ctl & RL_TRAIN_CTL_DRAIN) ? 1.0f : 0.0f, (ctl & RL_TRAIN_CTL_STOP) ? 1.0f : 0.0f};
            char e2[512];
            int r2 = agree(&o, hooks, v, AGREE_N, e2, sizeof e2);
            if (r2 && !rc)
                rc = r2, snprintf(err, errlen, "%s", e2);
            if (rc)
                break;
            if (v[AGREE_FAILED] > 0) {
                rc = fail(err, errlen, RL_EINVAL, "step %lld: %.0f other rank(s) failed (their log has the reason; "
                          "the last checkpoint is intact)", (long long)step, (double)v[AGREE_FAILED]);
                break;
            }
            ctl = (v[AGREE_CKPT] > 0 ? RL_TRAIN_CTL_CHECKPOINT : 0) | (v[AGREE_DRAIN] > 0 ? RL_TRAIN_CTL_DRAIN : 0) |
                  (v[AGREE_STOP] > 0 ? RL_TRAIN_CTL_STOP : 0);
            loss = (double)v[AGREE_LOSS] / o.world;
        }
        if (rc)
            break;
        if (ctl & RL_TRAIN_CTL_STOP) {
            rc = fail(err, errlen, RL_TRAIN_ESTOPPED, "stopped by the daemon at step %lld of %lld (the last "
                      "checkpoint is intact)", (long long)step, (long long)total_steps);
            break;
        }
        if (t.zero.on)
            rc = rl__zero_reduce_scatter(&t, hooks, err, errlen);
        else if (o.world > 1 && !overlap_now)
            rc = rl__buckets_allreduce(&t, hooks, err, errlen);
        if (rc)
            break;
        if (!isfinite(loss)) {
            rc = fail(err, errlen, RL_ERANGE, "step %lld: the loss is %g; stopping (the last checkpoint is intact; "
                      "lower the learning rate or check the data)", (long long)step, loss);
            break;
        }
        const double n_acc = (double)A * o.world;
        double ss = 0;
        if (t.zero.on && (rc = rl__zero_norm_sq(&t, hooks, &ss, err, errlen)) != 0)
            break;
        if (!t.zero.on) { /* every tensor's Σg² with one wait for the device, added in tensor order */
            double *sq = rl__grad_sq(&t, 0, err, errlen);
            if (!sq) {
                rc = RL_EINVAL;
                break;
            }
            for (int i = 0; i < t.n_t; i++)
                ss += sq[i];
            free(sq);
        }
        const double norm = sqrt(ss) / n_acc;
        if (!isfinite(norm)) { /* the same on every rank: all of them stop here */
            char name[128];
            int bad = -1;
            if (!t.zero.on)
                find_nonfinite(&t, name, sizeof name);
            else if ((rc = rl__zero_first_nonfinite(&t, hooks, &bad, err, errlen)) != 0)
                break;
            else
                snprintf(name, sizeof name, "%s", bad >= 0 ? t.t[bad].name : "(none found)");
            rc = fail(err, errlen, RL_ERANGE, "step %lld: the gradient of %s is not finite; stopping (the last "
                      "checkpoint is intact; lower the learning rate)", (long long)step, name);
            break;
        }
        const double clip = o.clip > 0 && norm > o.clip ? o.clip / norm : 1.0;
        const float gscale = (float)(clip / n_acc);
        rl_lr_at(&o.lr, step, tokens, &lr, &lr2);
        for (int i = 0; i < t.n_t;) { /* the owned part of each tensor (all of it unsharded), a run at a time */
            const rl__tensor *x = &t.t[i];
            rl_adamw_params hp = {.lr = (float)(x->group ? lr2 : lr), .beta1 = (float)o.beta1,
                                  .beta2 = (float)o.beta2, .eps = (float)o.eps, .weight_decay = (float)o.weight_decay,
                                  .step = step + 1};
            size_t first, n = rl__owned(&t, x, &first);
            const size_t mom = x->moment_offset + first - t.zero.begin;
            i += 1 + adamw_run(&t, i, first, &n);
            if (n && x->bf16) /* the master is updated; the bf16 weights become its rounding */
                rl_adamw_update_bf16(t.be, rl__at(x->param, 1, first), t.opt_w + mom, rl__at(x->grad, 1, first),
                                     t.opt_m + mom, t.opt_v + mom, n, &hp, gscale);
            else if (n)
                rl_adamw_update(t.be, x->param + first, x->grad + first, t.opt_m + mom, t.opt_v + mom, n, &hp, gscale);
        }
        if (rl_backend_status(t.be, err, errlen)) {
            rc = RL_EINVAL;
            break;
        }
        if (t.zero.on && (rc = rl__zero_allgather(&t, hooks, err, errlen)) != 0)
            break;
        rl_backend_weights_changed(t.be, t.m->params.base); /* bf16: the GEMM copies are made again */
        if (t.s)
            rl_backend_weights_changed(t.be, t.s->tparams->base);
        step++;
        const double el = now_s() - t0, tps = (double)(step - step0) * per_step / (el > 0 ? el : 1e-9);
        rl_train_progress p = {.stage = rl_train_stage_name(o.stage), .step = step, .total_steps = total_steps,
                               .tokens = step * per_step, .total_tokens = total_tokens, .loss = loss, .lr = lr,
                               .lr2 = lr2, .grad_norm = norm, .tokens_per_s = tps,
                               .eta_s = (double)(total_steps - step) * per_step / (tps > 0 ? tps : 1)};
        size_t live = 0, peak = 0;
        rl_backend_memory(t.be, &live, &peak);
        p.mem_live_bytes = (int64_t)live, p.mem_peak_bytes = (int64_t)peak;
        if (o.rank == 0) {
            fprintf(metrics, "{\"stage\": \"%s\", \"step\": %lld, \"tokens\": %lld, \"loss\": %.9g, \"lr\": %.9g, "
                    "\"lr2\": %.9g, \"grad_norm\": %.9g, \"tokens_per_s\": %.6g, \"elapsed_s\": %.6g, "
                    "\"optimizer_bytes_per_rank\": %zu, \"backend_peak_bytes\": %zu, \"backend_peak_by_role\": ",
                    p.stage, (long long)step, (long long)p.tokens, loss, lr, lr2, norm, tps, el, opt_bytes, peak);
            json_roles(metrics, t.be, 1);
            fputs(", \"backend_live_by_role\": ", metrics);
            json_roles(metrics, t.be, 0);
            if (o.trace_samples)
                trace_tokens(metrics, batch_buf, local, T);
            fputs("}\n", metrics);
            fflush(metrics);
            if (o.log_every > 0 && (step % o.log_every == 0 || step == total_steps || step == step0 + 1))
                say(hooks, "info", "%s step %lld/%lld tokens %lld loss %.6f lr %.3e lr2 %.3e grad-norm %.4f tok/s %.0f "
                    "eta %.0fs", p.stage, (long long)step, (long long)total_steps, (long long)p.tokens, loss, lr, lr2,
                    norm, tps, p.eta_s);
            if (hooks && hooks->progress)
                hooks->progress(hooks->ctx, &p);
        }
        /* A checkpoint at the last step would duplicate the final model: the stage simply finishes. */
        const int asked = (ctl & (RL_TRAIN_CTL_CHECKPOINT | RL_TRAIN_CTL_DRAIN)) != 0;
        if (step < total_steps && ((o.checkpoint_every > 0 && step % o.checkpoint_every == 0) || asked)) {
            if (o.rank == 0 || t.zero.on) {
                rc = write_checkpoint(&t, ckdir, step, step * per_step, total_tokens, lr, lr2, hooks, err, errlen);
                if (!rc && asked && o.rank == 0)
                    say(hooks, "info", "%s: checkpoint at step %lld written on request%s", p.stage, (long long)step,
                        (ctl & RL_TRAIN_CTL_DRAIN) ? "; draining" : "");
            }
            rc = agree_rank0(&o, hooks, rc, "write a checkpoint", err, errlen);
            if (!rc && (ctl & RL_TRAIN_CTL_DRAIN))
                rc = fail(err, errlen, RL_TRAIN_ESTOPPED, "drained by the daemon: stopped after the checkpoint at "
                          "step %lld of %lld", (long long)step, (long long)total_steps);
        }
        if (!rc && rl__valid_due(valid, step, total_steps)) { /* the same steps on every rank */
            char vline[256];
            rl_backend_profile_pause(t.be, 1); /* --profile: training steps only */
            if (o.rank == 0)
                rc = rl__valid_report(&t, valid, step, step * per_step, metrics, vline, sizeof vline, err, errlen);
            rl_backend_profile_pause(t.be, 0);
            if (!rc && o.rank == 0)
                say(hooks, "info", "%s", vline);
            rc = agree_rank0(&o, hooks, rc, "validate", err, errlen);
        }
        if (!rc && o.stop_after > 0 && step >= o.stop_after)
            break;
    }
    if (!rc && step >= total_steps && o.rank != 0 && t.opt_w && t.zero.on) /* its part of the masters' gathers */
        rc = save_model(&t, hooks, NULL, err, errlen);
    if (!rc && step >= total_steps && o.rank == 0) {
        rc = save_model(&t, hooks, o.out, err, errlen);
        const char *from[2] = {o.teacher, o.student};
        if (!rc)
            rc = copy_tokenizer_files(o.out, from, 2, err, errlen);
        if (!rc) {
            const double el = now_s() - t0;
            size_t peak = 0;
            char roles[1024];
            rl_backend_memory(t.be, NULL, &peak);
            mem_roles(t.be, 1, roles, sizeof roles);
            if (o.profile)
                write_profile(&t, &o, hooks, step - step0 - 1);
            say(hooks, "info", "%s: done, %lld steps, %lld tokens in %.1f s (%.0f tokens/s), backend memory peak "
                "%.1f MiB (peak by role: %s); model in %s", rl_train_stage_name(o.stage), (long long)step,
                (long long)total_tokens, el, (double)(step - step0) * per_step / (el > 0 ? el : 1e-9),
                (double)peak / 1048576.0, roles, o.out);
        }
    }
    if (metrics)
        fclose(metrics);
    free(batch_buf);
    rl__valid_close(valid);
    rl_sampler_close(smp);
    destroy(&t);
    return rc;
}

int rl_export_model(const char *src, const char *out, const char *tokenizer_from, char *err, size_t errlen)
{
    rl_backend *be;
    rl_backend_options bo = {.kind = RL_BACKEND_CPU};
    if (rl_backend_create(&be, &bo, err, errlen))
        return RL_EINVAL;
    int rc = mkdirs(out, err, errlen);
    if (!rc && rl_student_is_student_dir(src)) {
        rl_student *s = NULL;
        rc = rl_student_load(&s, be, src, err, errlen);
        if (!rc)
            rc = rl_student_save(s, out, err, errlen);
        rl_student_destroy(s);
    } else if (!rc) {
        rl_model *m = NULL;
        rc = rl_model_load(&m, be, src, 0, err, errlen);
        if (!rc)
            rc = rl_model_save(m, out, RL_DTYPE_F32, 0, err, errlen);
        rl_model_destroy(m);
    }
    const char *from[2] = {tokenizer_from, src};
    if (!rc)
        rc = copy_tokenizer_files(out, from, 2, err, errlen);
    rl_backend_destroy(be);
    return rc;
}
