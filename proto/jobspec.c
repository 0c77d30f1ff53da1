/* Job spec parsing, defaults and validation.  Input is YAML (JSON is accepted as YAML); output is the
 * canonical JSON that the daemon stores and hands to workers. */
#include "jobspec.h"
#include "proto.h"

#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <jansson.h>
#include <libfyaml.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static const char *const stage_names[RL_STAGE__COUNT] = {"pretrain", "transfer", "align",
                                                         "distill",  "extend",   "export"};

const char *rl_stage_kind_name(rl_stage_kind k)
{
    return (unsigned)k < RL_STAGE__COUNT ? stage_names[k] : "?";
}

const char *rl_arch_name(rl_arch a)
{
    return a == RL_ARCH_RWKV6 ? "rad-rwkv6" : "rad-rwkv7";
}

static const char *const schedule_names[] = {"cos", "linear", "flat"};
static const char *const precision_names[] = {"fp32", "bf16", "bf16-weights"}; /* RL_PRECISION_* (trainer.h) */

int rl_precision_from_name(const char *s)
{
    for (int i = 0; i < 3; i++)
        if (!strcmp(s, precision_names[i]))
            return i;
    return -1;
}

/* The recipe (METHOD.md §4, "Exact hyperparameters"); pretrain and the micro-batches are ours. */
static void stage_defaults(rl_stage_spec *s, rl_stage_kind kind)
{
    memset(s, 0, sizeof *s);
    s->kind = kind;
    s->schedule = RL_SCHED_FLAT;
    s->lr_wait = 0.0;
    s->lr_endpoint = 1.0;
    s->warmup = 50;
    s->checkpoint_every = 200;
    s->keep_checkpoints = 3;
    s->clip = 1.0;
    s->seed = 1;
    switch (kind) {
    case RL_STAGE_PRETRAIN:
        s->tokens = 20000000;
        s->seq_len = 512, s->batch = 32, s->micro_batch = 4;
        s->lr_init = 1e-3, s->lr_final = 1e-4, s->schedule = RL_SCHED_COS;
        s->ce_weight = 1.0;
        break;
    case RL_STAGE_ALIGN: /* step 1: 100M @512, batch 32, 1e-3 -> 1e-5 quarter-cosine */
        s->tokens = 100000000;
        s->seq_len = 512, s->batch = 32, s->micro_batch = 4;
        s->lr_init = 1e-3, s->lr_final = 1e-5, s->schedule = RL_SCHED_COS;
        break;
    case RL_STAGE_DISTILL: /* step 2: 500M @512, batch 96, 1e-5 flat, forward KL only */
        s->tokens = 500000000;
        s->seq_len = 512, s->batch = 96, s->micro_batch = 12;
        s->lr_init = 1e-5, s->lr_final = 1e-5;
        s->lr_wait = 0.833, s->lr_endpoint = 0.875;
        s->kl_weight = 1.0;
        break;
    case RL_STAGE_EXTEND: /* step 3 (paper): 100M @16384, batch 96, 1e-5 flat, cross-entropy */
        s->tokens = 100000000;
        s->seq_len = 16384, s->batch = 96, s->micro_batch = 1;
        s->lr_init = 1e-5, s->lr_final = 1e-5;
        s->ce_weight = 1.0;
        break;
    case RL_STAGE_TRANSFER:
    case RL_STAGE_EXPORT:
    default:
        s->warmup = 0, s->checkpoint_every = 0, s->keep_checkpoints = 0, s->clip = 0;
        break;
    }
    s->lr2_init = s->lr_init;
    s->lr2_final = s->lr_final;
}

static int stage_trains(rl_stage_kind k)
{
    return k == RL_STAGE_PRETRAIN || k == RL_STAGE_ALIGN || k == RL_STAGE_DISTILL || k == RL_STAGE_EXTEND;
}

/* ---- counts ---- */

int rl_parse_count(const char *s, int64_t *out, char *err, size_t errlen)
{
    if (!s || !*s) return rl_errf(err, errlen, "empty count (expected e.g. 2048, 100M or 1.5B)");
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (end == s || errno || !isfinite(v))
        return rl_errf(err, errlen, "\"%s\" is not a count (expected e.g. 2048, 100M or 1.5B)", s);
    double mult = 1;
    if (*end) {
        switch (*end) {
        case 'k': case 'K': mult = 1e3; break;
        case 'm': case 'M': mult = 1e6; break;
        case 'b': case 'B': case 'g': case 'G': mult = 1e9; break;
        case 't': case 'T': mult = 1e12; break;
        default:
            return rl_errf(err, errlen, "\"%s\": unknown suffix '%c' (use K, M, B or T)", s, *end);
        }
        if (end[1]) return rl_errf(err, errlen, "\"%s\": trailing characters after the suffix", s);
    }
    v *= mult;
    if (v <= 0) return rl_errf(err, errlen, "must be positive, got %s", s);
    if (v > 9e18) return rl_errf(err, errlen, "%s is too large", s);
    if (v != floor(v)) return rl_errf(err, errlen, "%s is not a whole number of tokens", s);
    *out = (int64_t)v;
    return 0;
}

void rl_format_count(int64_t n, char *buf, size_t len)
{
    static const struct { double mult; char suffix; } units[] = {{1e12, 'T'}, {1e9, 'B'}, {1e6, 'M'}, {1e3, 'K'}};
    for (size_t i = 0; i < sizeof units / sizeof units[0]; i++) {
        if (n >= units[i].mult && fmod((double)n, units[i].mult / 1000) == 0) {
            snprintf(buf, len, "%g%c", (double)n / units[i].mult, units[i].suffix);
            return;
        }
    }
    snprintf(buf, len, "%lld", (long long)n);
}

void rl_format_bytes(int64_t n, char *buf, size_t len)
{
    static const char *const units[] = {"KiB", "MiB", "GiB", "TiB"};
    if (n < 1024) {
        snprintf(buf, len, "%lld B", (long long)n);
        return;
    }
    double v = (double)n / 1024;
    size_t u = 0;
    while (v >= 1024 && u + 1 < sizeof units / sizeof units[0])
        v /= 1024, u++;
    snprintf(buf, len, v < 10 ? "%.2f %s" : v < 100 ? "%.1f %s" : "%.0f %s", v, units[u]);
}

/* ---- YAML walking ---- */

typedef struct parser {
    char *err;
    size_t errlen;
    const char *base_dir;
    int flags;
} parser;

static int fail(parser *p, const char *path, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int fail(parser *p, const char *path, const char *fmt, ...)
{
    char msg[768];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return rl_errf(p->err, p->errlen, "%s%s%s", path, *path ? ": " : "", msg);
}

/* The parser walks a jansson tree: JSON (what the daemon receives) is loaded directly, YAML is converted
 * by libfyaml first.  Scalars are read as text whatever their JSON type, so `tokens: 100M` and
 * `"tokens": 100000000` mean the same. */
static const char *node_kind(json_t *n)
{
    if (!n || json_is_null(n)) return "null";
    if (json_is_object(n)) return "a mapping";
    if (json_is_array(n)) return "a list";
    if (json_is_boolean(n)) return "a boolean";
    return "a scalar";
}

/* A scalar as a NUL-terminated copy in buf. */
static int scalar(parser *p, json_t *n, const char *path, char *buf, size_t buflen)
{
    if (json_is_integer(n)) {
        snprintf(buf, buflen, "%" JSON_INTEGER_FORMAT, json_integer_value(n));
        return 0;
    }
    if (json_is_real(n)) {
        snprintf(buf, buflen, "%.17g", json_real_value(n));
        return 0;
    }
    if (!json_is_string(n)) return fail(p, path, "expected a value, got %s", node_kind(n));
    size_t len = json_string_length(n);
    const char *s = json_string_value(n);
    if (len >= buflen) return fail(p, path, "value too long (%zu bytes, max %zu)", len, buflen - 1);
    if (memchr(s, 0, len)) return fail(p, path, "value contains a NUL byte");
    memcpy(buf, s, len);
    buf[len] = 0;
    return 0;
}

static int get_int(parser *p, json_t *n, const char *path, int lo, int hi, int *out)
{
    char buf[64], *end;
    if (scalar(p, n, path, buf, sizeof buf) < 0) return -1;
    errno = 0;
    long v = strtol(buf, &end, 10);
    if (end == buf || *end || errno) return fail(p, path, "expected an integer, got \"%s\"", buf);
    if (v < lo || v > hi) {
        if (lo == 1 && v <= 0) return fail(p, path, "must be positive, got %ld", v);
        return fail(p, path, "must be between %d and %d, got %ld", lo, hi, v);
    }
    *out = (int)v;
    return 0;
}

static int get_double(parser *p, json_t *n, const char *path, double lo, double hi, double *out)
{
    char buf[64], *end;
    if (scalar(p, n, path, buf, sizeof buf) < 0) return -1;
    errno = 0;
    double v = strtod(buf, &end);
    if (end == buf || *end || errno || !isfinite(v)) return fail(p, path, "expected a number, got \"%s\"", buf);
    if (v < lo || v > hi) return fail(p, path, "must be between %g and %g, got %s", lo, hi, buf);
    *out = v;
    return 0;
}

static int get_count(parser *p, json_t *n, const char *path, int64_t *out)
{
    char buf[64], msg[256];
    if (scalar(p, n, path, buf, sizeof buf) < 0) return -1;
    if (rl_parse_count(buf, out, msg, sizeof msg) < 0) return fail(p, path, "%s", msg);
    return 0;
}

static int get_choice(parser *p, json_t *n, const char *path, const char *const *names, int count,
                      int *out)
{
    char buf[64];
    if (scalar(p, n, path, buf, sizeof buf) < 0) return -1;
    for (int i = 0; i < count; i++)
        if (!strcmp(buf, names[i])) {
            *out = i;
            return 0;
        }
    char opts[256] = "";
    for (int i = 0; i < count; i++) {
        strncat(opts, names[i], sizeof opts - strlen(opts) - 1);
        if (i + 1 < count) strncat(opts, ", ", sizeof opts - strlen(opts) - 1);
    }
    return fail(p, path, "\"%s\" is not one of: %s", buf, opts);
}

/* A path: resolved against base_dir; with RL_SPEC_CHECK_PATHS it must exist (kind 'd' dir, 'f' file,
 * 'p' parent dir must exist). */
static int get_path(parser *p, json_t *n, const char *path, char kind, char **out)
{
    char buf[PATH_MAX], full[PATH_MAX + 4];
    if (scalar(p, n, path, buf, sizeof buf) < 0) return -1;
    if (!*buf) return fail(p, path, "empty path");
    if (strstr(buf, "://"))
        return fail(p, path, "\"%s\": URLs are not supported yet; download the model and give its folder",
                    buf);
    if (buf[0] == '/') {
        snprintf(full, sizeof full, "%s", buf);
    } else if (!p->base_dir) {
        return fail(p, path, "\"%s\" must be an absolute path here", buf);
    } else {
        int w = snprintf(full, sizeof full, "%s/%s", p->base_dir, buf);
        if (w < 0 || (size_t)w >= sizeof full) return fail(p, path, "path too long");
    }
    if (p->flags & RL_SPEC_CHECK_PATHS) {
        char real[PATH_MAX];
        struct stat st;
        if (kind == 'p') {
            /* The output folder may not exist yet; its parent must. */
            char parent[PATH_MAX + 4];
            snprintf(parent, sizeof parent, "%s", full);
            char *slash = strrchr(parent, '/');
            while (slash && slash != parent && slash[1] == 0) { /* trailing slashes */
                *slash = 0;
                slash = strrchr(parent, '/');
            }
            if (slash == parent) slash[1] = 0;
            else if (slash) *slash = 0;
            if (stat(parent, &st) < 0 || !S_ISDIR(st.st_mode))
                return fail(p, path, "\"%s\": parent folder \"%s\" does not exist", buf, parent);
            if (stat(full, &st) == 0 && !S_ISDIR(st.st_mode))
                return fail(p, path, "\"%s\" exists and is not a folder", buf);
            if (!realpath(parent, real)) return fail(p, path, "\"%s\": %s", buf, strerror(errno));
            const char *base = strrchr(full, '/');
            base = base ? base + 1 : full;
            size_t rl = strlen(real);
            if (rl + 1 + strlen(base) >= sizeof real) return fail(p, path, "path too long");
            if (*base) snprintf(real + rl, sizeof real - rl, "%s%s", rl > 1 ? "/" : "", base);
        } else {
            if (stat(full, &st) < 0)
                return fail(p, path, "\"%s\" does not exist (resolved to %s)", buf, full);
            if (kind == 'd' && !S_ISDIR(st.st_mode)) return fail(p, path, "\"%s\" is not a folder", buf);
            if (kind == 'f' && !S_ISREG(st.st_mode)) return fail(p, path, "\"%s\" is not a regular file", buf);
            if (access(full, R_OK) < 0) return fail(p, path, "\"%s\" is not readable", buf);
            if (!realpath(full, real)) return fail(p, path, "\"%s\": %s", buf, strerror(errno));
        }
        *out = strdup(real);
    } else {
        *out = strdup(full);
    }
    return *out ? 0 : fail(p, path, "out of memory");
}

/* Iterates a mapping, refusing unknown keys: `known` lists the accepted ones. */
typedef int (*field_fn)(parser *p, void *ctx, const char *key, json_t *val, const char *path);

static int walk_mapping(parser *p, json_t *n, const char *path, const char *const *known, field_fn fn,
                        void *ctx)
{
    if (!json_is_object(n)) return fail(p, path, "expected a mapping, got %s", node_kind(n));
    const char *jkey;
    json_t *val;
    json_object_foreach(n, jkey, val)
    {
        char key[64], sub[256];
        if (strlen(jkey) >= sizeof key) return fail(p, path, "field name too long: \"%.40s...\"", jkey);
        snprintf(key, sizeof key, "%s", jkey);
        snprintf(sub, sizeof sub, "%s%s%s", path, *path ? "." : "", key);
        int found = 0;
        for (const char *const *k = known; *k; k++)
            if (!strcmp(*k, key)) found = 1;
        if (!found) {
            char opts[512] = "";
            for (const char *const *k = known; *k; k++) {
                strncat(opts, *k, sizeof opts - strlen(opts) - 1);
                if (k[1]) strncat(opts, ", ", sizeof opts - strlen(opts) - 1);
            }
            return fail(p, sub, "unknown field (known fields%s%s: %s)", *path ? " of " : "", path, opts);
        }
        if (fn(p, ctx, key, val, sub) < 0) return -1;
    }
    return 0;
}

/* "1e-3:1e-5", 1e-5, or {init: 1e-3, final: 1e-5} */
static int get_lr(parser *p, json_t *n, const char *path, double *init, double *final)
{
    if (json_is_object(n)) {
        const char *key;
        json_t *val;
        int have_final = 0;
        json_object_foreach(n, key, val)
        {
            char sub[256];
            snprintf(sub, sizeof sub, "%s.%.40s", path, key);
            if (!strcmp(key, "init")) {
                if (get_double(p, val, sub, 1e-12, 10, init) < 0) return -1;
            } else if (!strcmp(key, "final")) {
                if (get_double(p, val, sub, 0, 10, final) < 0) return -1;
                have_final = 1;
            } else {
                return fail(p, sub, "unknown field (known fields of %s: init, final)", path);
            }
        }
        if (!have_final) *final = *init;
        return 0;
    }
    char buf[128];
    if (scalar(p, n, path, buf, sizeof buf) < 0) return -1;
    char *colon = strchr(buf, ':');
    char *end;
    if (colon) *colon = 0;
    errno = 0;
    double a = strtod(buf, &end);
    if (end == buf || *end || errno || !isfinite(a))
        return fail(p, path, "expected a learning rate like 1e-3 or 1e-3:1e-5 (init:final), got \"%s%s%s\"",
                    buf, colon ? ":" : "", colon ? colon + 1 : "");
    /* The same bounds as the {init, final} form, so the canonical JSON always parses back. */
    if (a < 1e-12 || a > 10) return fail(p, path, "initial learning rate must be between 1e-12 and 10, got %s", buf);
    double b = a;
    if (colon) {
        b = strtod(colon + 1, &end);
        if (end == colon + 1 || *end || !isfinite(b) || b < 0 || b > 10)
            return fail(p, path, "final learning rate \"%s\" must be a number between 0 and 10", colon + 1);
    }
    *init = a;
    *final = b;
    return 0;
}

/* ---- stages ---- */

typedef struct stage_ctx {
    rl_stage_spec *s;
    int have_lr2;
} stage_ctx;

static const char *const stage_fields[] = {
    "stage", "tokens", "seq_len", "batch", "micro_batch", "lr", "lr2", "lr_wait", "lr_endpoint", "schedule",
    "warmup", "checkpoint_every", "keep_checkpoints", "clip", "kl_weight", "ce_weight", "loss", "train",
    "seed", "zero", "recompute", "mlp_rows", "precision", "profile", NULL};

/* A 0/1 switch; `meaning` says what each value does. */
static int get_switch(parser *p, json_t *v, const char *path, const char *meaning, int *out)
{
    char buf[32];
    if (scalar(p, v, path, buf, sizeof buf) < 0) return -1;
    if (strcmp(buf, "0") && strcmp(buf, "1"))
        return fail(p, path, "must be %s, got \"%s\"", meaning, buf);
    *out = buf[0] == '1';
    return 0;
}

static int stage_field(parser *p, void *vctx, const char *key, json_t *v, const char *path)
{
    stage_ctx *ctx = vctx;
    rl_stage_spec *s = ctx->s;
    int tmp;
    if (!strcmp(key, "stage")) return 0; /* read before defaults */
    if (!strcmp(key, "tokens")) return get_count(p, v, path, &s->tokens);
    if (!strcmp(key, "seq_len")) {
        if (get_int(p, v, path, INT_MIN, INT_MAX, &s->seq_len) < 0) return -1;
        if (s->seq_len <= 0 || s->seq_len % 16)
            return fail(p, path, "must be a positive multiple of 16, got %d", s->seq_len);
        if (s->seq_len > 1 << 20) return fail(p, path, "at most 1048576 tokens, got %d", s->seq_len);
        return 0;
    }
    if (!strcmp(key, "batch")) return get_int(p, v, path, 1, 1 << 20, &s->batch);
    if (!strcmp(key, "micro_batch")) return get_int(p, v, path, 1, 1 << 20, &s->micro_batch);
    if (!strcmp(key, "lr")) return get_lr(p, v, path, &s->lr_init, &s->lr_final);
    if (!strcmp(key, "lr2")) {
        ctx->have_lr2 = 1;
        return get_lr(p, v, path, &s->lr2_init, &s->lr2_final);
    }
    if (!strcmp(key, "lr_wait")) return get_double(p, v, path, 0, 1, &s->lr_wait);
    if (!strcmp(key, "lr_endpoint")) return get_double(p, v, path, 0, 1, &s->lr_endpoint);
    if (!strcmp(key, "schedule")) {
        if (get_choice(p, v, path, schedule_names, 3, &tmp) < 0) return -1;
        s->schedule = (rl_schedule)tmp;
        return 0;
    }
    if (!strcmp(key, "warmup")) return get_int(p, v, path, 0, 1 << 30, &s->warmup);
    if (!strcmp(key, "checkpoint_every")) return get_int(p, v, path, 1, 1 << 30, &s->checkpoint_every);
    if (!strcmp(key, "keep_checkpoints")) return get_int(p, v, path, 1, 1000, &s->keep_checkpoints);
    if (!strcmp(key, "clip")) return get_double(p, v, path, 0, 1e6, &s->clip);
    if (!strcmp(key, "kl_weight")) return get_double(p, v, path, 0, 1e3, &s->kl_weight);
    if (!strcmp(key, "ce_weight")) return get_double(p, v, path, 0, 1e3, &s->ce_weight);
    if (!strcmp(key, "loss")) {
        static const char *const losses[] = {"l2", "mse"};
        if (get_choice(p, v, path, losses, 2, &tmp) < 0) return -1;
        s->loss = (rl_align_loss)tmp;
        return 0;
    }
    if (!strcmp(key, "train")) {
        static const char *const sets[] = {"all", "decay_shift"};
        if (get_choice(p, v, path, sets, 2, &tmp) < 0) return -1;
        s->train = (rl_train_set)tmp;
        return 0;
    }
    if (!strcmp(key, "zero"))
        return get_switch(p, v, path, "0 (every rank keeps the whole optimizer state) or 1 (ZeRO-1: the AdamW "
                          "state sharded over the ranks)", &s->zero);
    if (!strcmp(key, "precision")) {
        if (get_choice(p, v, path, precision_names, 3, &tmp) < 0) return -1;
        s->bf16 = tmp;
        return 0;
    }
    if (!strcmp(key, "recompute"))
        return get_switch(p, v, path, "0 (every layer's activations kept for the backward) or 1 (only layer "
                          "inputs kept, each layer's forward run again in the backward: less memory, same result)",
                          &s->recompute);
    if (!strcmp(key, "mlp_rows"))
        return get_int(p, v, path, 0, 1 << 24, &s->mlp_rows);
    if (!strcmp(key, "profile"))
        return get_switch(p, v, path, "0 or 1 (1: every backend op timed, synchronously, from the second step on; "
                          "profile.tsv in the stage's folder and the top ops in the log)", &s->profile);
    if (!strcmp(key, "seed")) {
        int64_t seed;
        char buf[32];
        if (scalar(p, v, path, buf, sizeof buf) < 0) return -1;
        char *end;
        errno = 0;
        seed = strtoll(buf, &end, 10);
        if (end == buf || *end || errno || seed < 0) return fail(p, path, "expected a non-negative integer");
        s->seed = (uint64_t)seed;
        return 0;
    }
    return fail(p, path, "unhandled field");
}

/* Fields that make no sense for a stage kind are errors, not silently ignored. */
static int stage_check(parser *p, const rl_stage_spec *s, json_t *n, const char *path, int ranks)
{
    if (json_is_object(n) && !stage_trains(s->kind)) {
        const char *k;
        json_t *val;
        json_object_foreach(n, k, val)
        {
            if (strcmp(k, "stage") && strcmp(k, "seed"))
                return fail(p, path, "field \"%.40s\" does not apply to a %s stage (it trains nothing)", k,
                            rl_stage_kind_name(s->kind));
        }
    }
    if (!stage_trains(s->kind)) return 0;
    char sub[256];
    if (s->batch % s->micro_batch) {
        snprintf(sub, sizeof sub, "%s.batch", path);
        return fail(p, sub, "%d is not a multiple of micro_batch %d", s->batch, s->micro_batch);
    }
    if (s->batch % (s->micro_batch * ranks)) {
        snprintf(sub, sizeof sub, "%s.batch", path);
        return fail(p, sub, "%d is not a multiple of micro_batch × ranks = %d × %d = %d", s->batch,
                    s->micro_batch, ranks, s->micro_batch * ranks);
    }
    if (s->lr_wait >= s->lr_endpoint) {
        snprintf(sub, sizeof sub, "%s.lr_wait", path);
        return fail(p, sub, "must be below lr_endpoint (%g), got %g", s->lr_endpoint, s->lr_wait);
    }
    if (s->loss != RL_LOSS_L2 && s->kind != RL_STAGE_ALIGN) {
        snprintf(sub, sizeof sub, "%s.loss", path);
        return fail(p, sub, "only an align stage has a loss choice");
    }
    if (s->train != RL_TRAIN_ALL && s->kind != RL_STAGE_EXTEND) {
        snprintf(sub, sizeof sub, "%s.train", path);
        return fail(p, sub, "decay_shift (step 3a) applies only to an extend stage");
    }
    if (s->bf16 == 2 && s->kind == RL_STAGE_PRETRAIN) {
        snprintf(sub, sizeof sub, "%s.precision", path);
        return fail(p, sub, "bf16-weights trains a RADLADS student (align, distill, extend); pretrain a softmax "
                    "teacher with precision bf16 or fp32");
    }
    if ((s->kind == RL_STAGE_DISTILL) && s->kl_weight + s->ce_weight <= 0) {
        snprintf(sub, sizeof sub, "%s.kl_weight", path);
        return fail(p, sub, "kl_weight + ce_weight must be positive");
    }
    if ((s->kind == RL_STAGE_EXTEND || s->kind == RL_STAGE_PRETRAIN) && s->ce_weight <= 0) {
        snprintf(sub, sizeof sub, "%s.ce_weight", path);
        return fail(p, sub, "must be positive for a %s stage (it trains on cross-entropy)",
                    rl_stage_kind_name(s->kind));
    }
    if (s->tokens < (int64_t)s->seq_len * s->batch) {
        snprintf(sub, sizeof sub, "%s.tokens", path);
        return fail(p, sub, "%lld is less than one optimizer step (seq_len × batch = %lld)", (long long)s->tokens,
                    (long long)s->seq_len * s->batch);
    }
    return 0;
}

static int parse_stage(parser *p, json_t *n, const char *path, rl_stage_spec *s)
{
    char kind_buf[32];
    json_t *kind_node = n;
    if (json_is_object(n)) {
        kind_node = json_object_get(n, "stage");
        if (!kind_node) return fail(p, path, "missing field \"stage\" (one of pretrain, transfer, align, distill, extend, export)");
    }
    char kpath[256];
    snprintf(kpath, sizeof kpath, "%s%s", path, json_is_object(n) ? ".stage" : "");
    if (scalar(p, kind_node, kpath, kind_buf, sizeof kind_buf) < 0) return -1;
    int k = -1;
    for (int i = 0; i < RL_STAGE__COUNT; i++)
        if (!strcmp(kind_buf, stage_names[i])) k = i;
    if (k < 0)
        return fail(p, kpath, "\"%s\" is not a stage (one of pretrain, transfer, align, distill, extend, export)",
                    kind_buf);
    stage_defaults(s, (rl_stage_kind)k);
    if (json_is_object(n)) {
        stage_ctx ctx = {.s = s};
        double lr_i = s->lr_init, lr_f = s->lr_final;
        if (walk_mapping(p, n, path, stage_fields, stage_field, &ctx) < 0) return -1;
        /* The second LR group follows the main one unless given (METHOD.md: lr2 defaults to the main LR). */
        if (!ctx.have_lr2 && (lr_i != s->lr_init || lr_f != s->lr_final)) {
            s->lr2_init = s->lr_init;
            s->lr2_final = s->lr_final;
        }
    }
    return 0;
}

/* ---- the job ---- */

typedef struct job_ctx {
    rl_job_spec *spec;
    json_t *stages;
    json_t *variant;
} job_ctx;

static const char *const job_fields[] = {"name",   "teacher",      "student",  "data", "stages", "resources",
                                         "output", "max_restarts", "priority", NULL};
static const char *const student_fields[] = {"arch", "variant", "keep_attention_layers", NULL};
static const char *const data_fields[] = {"train", "valid", NULL};
static const char *const resource_fields[] = {"ranks", "device", "pool", NULL};

static int get_file_list(parser *p, json_t *n, const char *path, char ***out, size_t *count)
{
    if (json_is_string(n)) {
        *out = calloc(1, sizeof(char *));
        if (!*out) return fail(p, path, "out of memory");
        *count = 1;
        return get_path(p, n, path, 'f', &(*out)[0]);
    }
    if (!json_is_array(n)) return fail(p, path, "expected a file or a list of files, got %s", node_kind(n));
    int len = (int)json_array_size(n);
    if (len <= 0) return fail(p, path, "empty list");
    if (len > 100000) return fail(p, path, "too many files (%d)", len);
    *out = calloc((size_t)len, sizeof(char *));
    if (!*out) return fail(p, path, "out of memory");
    *count = (size_t)len;
    for (int i = 0; i < len; i++) {
        char sub[256];
        snprintf(sub, sizeof sub, "%s[%d]", path, i);
        if (get_path(p, json_array_get(n, (size_t)i), sub, 'f', &(*out)[i]) < 0) return -1;
    }
    return 0;
}

static int student_field(parser *p, void *vctx, const char *key, json_t *v, const char *path)
{
    job_ctx *ctx = vctx;
    if (!strcmp(key, "arch")) {
        static const char *const archs[] = {"rad-rwkv7", "rad-rwkv6"};
        int a;
        if (get_choice(p, v, path, archs, 2, &a) < 0) return -1;
        ctx->spec->arch = (rl_arch)a;
        return 0;
    }
    if (!strcmp(key, "variant")) {
        static const char *const variants[] = {"a", "b"};
        int a;
        if (get_choice(p, v, path, variants, 2, &a) < 0) return -1;
        ctx->variant = v;
        ctx->spec->variant = a ? 'b' : 'a';
        return 0;
    }
    return get_int(p, v, path, 0, 1 << 16, &ctx->spec->keep_attention_layers);
}

static int data_field(parser *p, void *vctx, const char *key, json_t *v, const char *path)
{
    rl_job_spec *s = ((job_ctx *)vctx)->spec;
    if (!strcmp(key, "train")) return get_file_list(p, v, path, &s->train_files, &s->n_train);
    return get_file_list(p, v, path, &s->valid_files, &s->n_valid);
}

static int resource_field(parser *p, void *vctx, const char *key, json_t *v, const char *path)
{
    rl_job_spec *s = ((job_ctx *)vctx)->spec;
    if (!strcmp(key, "ranks")) return get_int(p, v, path, 1, 4096, &s->ranks);
    if (!strcmp(key, "device")) {
        static const char *const devices[] = {"cpu", "cuda"};
        int d;
        if (get_choice(p, v, path, devices, 2, &d) < 0) return -1;
        s->device = (rl_device)d;
        return 0;
    }
    char buf[64];
    if (scalar(p, v, path, buf, sizeof buf) < 0) return -1;
    for (const char *c = buf; *c; c++)
        if (!(isalnum((unsigned char)*c) || *c == '-' || *c == '_' || *c == '.'))
            return fail(p, path, "pool names use letters, digits, '-', '_' and '.', got \"%s\"", buf);
    free(s->pool);
    s->pool = strdup(buf);
    return s->pool ? 0 : fail(p, path, "out of memory");
}

static int job_field(parser *p, void *vctx, const char *key, json_t *v, const char *path)
{
    job_ctx *ctx = vctx;
    rl_job_spec *s = ctx->spec;
    if (!strcmp(key, "name")) {
        char buf[80];
        if (scalar(p, v, path, buf, sizeof buf) < 0) return -1;
        size_t n = strlen(buf);
        if (n == 0 || n > 64) return fail(p, path, "must be 1 to 64 characters, got %zu", n);
        for (const char *c = buf; *c; c++)
            if (!(isalnum((unsigned char)*c) || *c == '-' || *c == '_' || *c == '.'))
                return fail(p, path, "use letters, digits, '-', '_' and '.' only, got \"%s\"", buf);
        s->name = strdup(buf);
        return s->name ? 0 : fail(p, path, "out of memory");
    }
    if (!strcmp(key, "teacher")) return get_path(p, v, path, 'd', &s->teacher);
    if (!strcmp(key, "student")) return walk_mapping(p, v, path, student_fields, student_field, ctx);
    if (!strcmp(key, "data")) return walk_mapping(p, v, path, data_fields, data_field, ctx);
    if (!strcmp(key, "stages")) {
        ctx->stages = v; /* parsed after resources: batch checks need the rank count */
        return 0;
    }
    if (!strcmp(key, "resources")) return walk_mapping(p, v, path, resource_fields, resource_field, ctx);
    if (!strcmp(key, "output")) return get_path(p, v, path, 'p', &s->output);
    if (!strcmp(key, "max_restarts")) return get_int(p, v, path, 0, 1000, &s->max_restarts);
    return get_int(p, v, path, -1000, 1000, &s->priority);
}

static const rl_stage_kind default_plan[] = {RL_STAGE_TRANSFER, RL_STAGE_ALIGN, RL_STAGE_DISTILL,
                                             RL_STAGE_EXTEND, RL_STAGE_EXPORT};

static int parse_stages(parser *p, job_ctx *ctx)
{
    rl_job_spec *s = ctx->spec;
    json_t *n = ctx->stages;
    if (!n) {
        s->n_stages = sizeof default_plan / sizeof default_plan[0];
        s->stages = calloc(s->n_stages, sizeof *s->stages);
        if (!s->stages) return fail(p, "stages", "out of memory");
        for (size_t i = 0; i < s->n_stages; i++) {
            char path[64];
            snprintf(path, sizeof path, "stages[%zu] (default %s)", i, rl_stage_kind_name(default_plan[i]));
            stage_defaults(&s->stages[i], default_plan[i]);
            if (stage_check(p, &s->stages[i], NULL, path, s->ranks) < 0) return -1;
        }
        return 0;
    }
    if (!json_is_array(n)) return fail(p, "stages", "expected a list of stages, got %s", node_kind(n));
    if (json_array_size(n) > 64) return fail(p, "stages", "too many stages (%zu, max 64)", json_array_size(n));
    int len = (int)json_array_size(n);
    if (len <= 0) return fail(p, "stages", "empty list (omit the field for the default plan)");
    if (len > 64) return fail(p, "stages", "too many stages (%d, max 64)", len);
    s->stages = calloc((size_t)len, sizeof *s->stages);
    if (!s->stages) return fail(p, "stages", "out of memory");
    s->n_stages = (size_t)len;
    for (int i = 0; i < len; i++) {
        char path[64];
        snprintf(path, sizeof path, "stages[%d]", i);
        json_t *item = json_array_get(n, (size_t)i);
        if (parse_stage(p, item, path, &s->stages[i]) < 0) return -1;
        if (stage_check(p, &s->stages[i], item, path, s->ranks) < 0) return -1;
        /* Stages run in pipeline order, each at most once. */
        if (i > 0 && s->stages[i].kind <= s->stages[i - 1].kind)
            return fail(p, path, "%s cannot come after %s (order: pretrain, transfer, align, distill, extend, export; each once)",
                        rl_stage_kind_name(s->stages[i].kind), rl_stage_kind_name(s->stages[i - 1].kind));
    }
    return 0;
}

static void diag_capture(struct fy_diag *diag, void *user, const char *buf, size_t len)
{
    (void)diag;
    char *dst = user;
    /* "<memory-@0x...>:2:1: error: msg" -> "line 2, column 1: msg" */
    if (!strncmp(buf, "<memory-", 8)) {
        const char *colon = memchr(buf, '>', len);
        int line, col, used = 0;
        if (colon && sscanf(colon + 1, ":%d:%d: %n", &line, &col, &used) == 2 && used > 0) {
            const char *msg = colon + 1 + used;
            if (!strncmp(msg, "error: ", 7)) msg += 7;
            char tmp[512];
            int n = snprintf(tmp, sizeof tmp, "line %d, column %d: %.*s", line, col, (int)(len - (size_t)(msg - buf)), msg);
            if (n > 0) {
                diag_capture(diag, user, tmp, (size_t)n < sizeof tmp ? (size_t)n : sizeof tmp - 1);
                return;
            }
        }
    }
    if (!*dst) { /* keep the first message: it is the cause */
        size_t n = len < 511 ? len : 511;
        memcpy(dst, buf, n);
        dst[n] = 0;
        while (n > 0 && (dst[n - 1] == '\n' || dst[n - 1] == ' ')) dst[--n] = 0;
    }
}

/* Offset of the first byte that is not well-formed UTF-8 or is a control character other than tab/CR/LF,
 * or len. */
static size_t utf8_invalid_at(const unsigned char *s, size_t len)
{
    size_t i = 0;
    while (i < len) {
        unsigned c = s[i];
        size_t n;
        unsigned min;
        if ((c < 0x20 && c != '\t' && c != '\n' && c != '\r') || c == 0x7f) return i; /* not YAML-printable */
        if (c < 0x80) {
            i++;
            continue;
        }
        if ((c & 0xe0) == 0xc0) n = 1, min = 0x80, c &= 0x1f;
        else if ((c & 0xf0) == 0xe0) n = 2, min = 0x800, c &= 0x0f;
        else if ((c & 0xf8) == 0xf0) n = 3, min = 0x10000, c &= 0x07;
        else return i;
        for (size_t k = 1; k <= n; k++) {
            if (i + k >= len || (s[i + k] & 0xc0) != 0x80) return i;
            c = c << 6 | (s[i + k] & 0x3f);
        }
        if (c < min || c > 0x10ffff || (c >= 0xd800 && c <= 0xdfff)) return i;
        i += n + 1;
    }
    return len;
}

/* Loads a YAML document with libfyaml's diagnostics captured into err (never printed). */
static struct fy_document *load_yaml(const char *text, size_t len, char *err, size_t errlen)
{
    if (len > (1u << 20)) {
        rl_errf(err, errlen, "job spec too large (%zu bytes, max 1 MiB)", len);
        return NULL;
    }
    /* YAML allows only printable characters, and libfyaml 0.7.12 spins forever on malformed UTF-8 ("%\xe8")
     * and crashes reporting errors next to control characters (both found by fuzz_jobspec): refuse such
     * bytes before the parser sees them. */
    size_t bad = utf8_invalid_at((const unsigned char *)text, len);
    if (bad < len) {
        unsigned char b = (unsigned char)text[bad];
        rl_errf(err, errlen, "invalid YAML: byte %zu (0x%02x) is %s; job specs are UTF-8 text", bad, b,
                b < 0x20 || b == 0x7f ? "a control character" : "not valid UTF-8");
        return NULL;
    }
    /* A line that starts with '%' is a YAML directive (%YAML, %TAG), which specs never need, and libfyaml 0.7.12
     * crashes reporting some malformed ones (strlen on a bad pointer in fy_diag_error_atom_display; found by
     * fuzz_jobspec): refuse them before the parser sees them. */
    const size_t bom = len >= 3 && !memcmp(text, "\xef\xbb\xbf", 3) ? 3 : 0; /* a UTF-8 byte order mark */
    size_t line = 1;
    for (size_t i = bom; i < len; i++) {
        if (text[i] == '%' && (i == bom || text[i - 1] == '\n' || text[i - 1] == '\r')) {
            rl_errf(err, errlen, "invalid YAML: line %zu starts with '%%' (a YAML directive such as %%YAML or %%TAG); "
                    "job specs take no directives: remove the line, or quote a value that starts with '%%'", line);
            return NULL;
        }
        line += text[i] == '\n' || (text[i] == '\r' && (i + 1 == len || text[i + 1] != '\n')); /* \n, \r\n, \r */
    }
    char diag_msg[512] = "";
    struct fy_diag_cfg dcfg;
    fy_diag_cfg_default(&dcfg);
    dcfg.fp = NULL;
    dcfg.output_fn = diag_capture;
    dcfg.user = diag_msg;
    dcfg.colorize = false;
    dcfg.show_source = false;
    dcfg.show_position = true;
    dcfg.show_type = false;
    dcfg.show_module = false;
    struct fy_diag *diag = fy_diag_create(&dcfg);
    struct fy_parse_cfg cfg = {.flags = FYPCF_QUIET | FYPCF_DISABLE_RECYCLING, .diag = diag};
    struct fy_document *doc = fy_document_build_from_string(&cfg, text, len);
    if (!doc) rl_errf(err, errlen, "invalid YAML: %s", *diag_msg ? diag_msg : "cannot parse the document");
    fy_diag_destroy(diag);
    return doc;
}

/* YAML node tree -> jansson tree.  Scalars become strings (the parser reads every scalar as text), plain
 * null/~/empty become null.  Aliases are refused: expanding them could be exponential ("billion
 * laughs"), and specs never need them.  (libfyaml's own JSON emitter is not used: version 0.7.12 crashes
 * on an empty folded scalar, found by fuzz_jobspec.) */
static json_t *yaml_to_tree(struct fy_node *n, int depth, char *err, size_t errlen)
{
    if (!n) return json_null();
    if (depth > 64) {
        rl_errf(err, errlen, "invalid YAML: nesting deeper than 64 levels");
        return NULL;
    }
    if (fy_node_is_alias(n)) {
        rl_errf(err, errlen, "YAML aliases (*name) are not supported in job specs");
        return NULL;
    }
    void *it = NULL;
    if (fy_node_is_mapping(n)) {
        json_t *o = json_object();
        struct fy_node_pair *pair;
        while (o && (pair = fy_node_mapping_iterate(n, &it))) {
            struct fy_node *k = fy_node_pair_key(pair);
            size_t klen;
            const char *key = k && fy_node_is_scalar(k) && !fy_node_is_alias(k) ? fy_node_get_scalar(k, &klen) : NULL;
            if (!key) {
                rl_errf(err, errlen, "invalid YAML: field names must be plain text");
                json_decref(o);
                return NULL;
            }
            json_t *v = yaml_to_tree(fy_node_pair_value(pair), depth + 1, err, errlen);
            if (!v || json_object_setn_new(o, key, klen, v) < 0) {
                if (v) rl_errf(err, errlen, "invalid YAML: field name is not valid text");
                json_decref(o);
                return NULL;
            }
        }
        return o;
    }
    if (fy_node_is_sequence(n)) {
        json_t *a = json_array();
        struct fy_node *item;
        while (a && (item = fy_node_sequence_iterate(n, &it))) {
            json_t *v = yaml_to_tree(item, depth + 1, err, errlen);
            if (!v) {
                json_decref(a);
                return NULL;
            }
            json_array_append_new(a, v);
        }
        return a;
    }
    size_t len;
    const char *text = fy_node_get_scalar(n, &len);
    if (!text) text = "", len = 0;
    if (fy_node_get_style(n) == FYNS_PLAIN &&
        (len == 0 || (len == 1 && text[0] == '~') || (len == 4 && !memcmp(text, "null", 4))))
        return json_null();
    json_t *str = json_stringn(text, len);
    if (!str) rl_errf(err, errlen, "invalid YAML: a value is not valid text");
    return str;
}

static json_t *yaml_load_tree(const char *text, size_t len, char *err, size_t errlen)
{
    struct fy_document *doc = load_yaml(text, len, err, errlen);
    if (!doc) return NULL;
    json_t *root = yaml_to_tree(fy_document_root(doc), 0, err, errlen);
    fy_document_destroy(doc);
    return root;
}

char *rl_yaml_to_json(const char *text, size_t len, char *err, size_t errlen)
{
    json_t *root = yaml_load_tree(text, len, err, errlen);
    if (!root) return NULL;
    char *out = json_dumps(root, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_ENCODE_ANY);
    json_decref(root);
    if (!out) rl_errf(err, errlen, "out of memory");
    return out;
}

int rl_jobspec_parse(rl_job_spec *spec, const char *text, size_t len, const char *base_dir, int flags,
                     char *err, size_t errlen)
{
    memset(spec, 0, sizeof *spec);
    parser p = {.err = err, .errlen = errlen, .base_dir = base_dir, .flags = flags};
    if (len > (1u << 20)) return rl_errf(err, errlen, "job spec too large (%zu bytes, max 1 MiB)", len);
    /* JSON (the canonical form clients send) goes straight to jansson; anything else is YAML. */
    json_error_t jerr;
    json_t *root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!root && !(root = yaml_load_tree(text, len, err, errlen))) return -1;
    int rc = -1;
    spec->ranks = 1;
    spec->device = RL_DEVICE_CPU;
    spec->max_restarts = 3;
    spec->arch = RL_ARCH_RWKV7;
    job_ctx ctx = {.spec = spec};
    if (json_is_null(root)) {
        rl_errf(err, errlen, "empty job spec (needs at least teacher, data.train and output)");
        goto out;
    }
    if (walk_mapping(&p, root, "", job_fields, job_field, &ctx) < 0) goto out;
    if (!spec->teacher) {
        rl_errf(err, errlen, "teacher: missing (the folder of a HuggingFace model: config.json + *.safetensors)");
        goto out;
    }
    if (!spec->n_train) {
        rl_errf(err, errlen, "data.train: missing (one or more token files)");
        goto out;
    }
    if (!spec->output) {
        rl_errf(err, errlen, "output: missing (the folder the converted model is written to)");
        goto out;
    }
    if (spec->arch == RL_ARCH_RWKV6 && ctx.variant) {
        rl_errf(err, errlen, "student.variant: only rad-rwkv7 has variants (a or b)");
        goto out;
    }
    if (spec->arch == RL_ARCH_RWKV7 && !spec->variant) spec->variant = 'b';
    if (!spec->pool) spec->pool = strdup("");
    if (!spec->name) {
        const char *b = strrchr(spec->output, '/');
        b = b && b[1] ? b + 1 : spec->output;
        char buf[65];
        size_t n = 0;
        for (; *b && n < 64; b++)
            buf[n++] = (isalnum((unsigned char)*b) || *b == '-' || *b == '_' || *b == '.') ? *b : '_';
        buf[n] = 0;
        spec->name = strdup(n ? buf : "job");
    }
    if (!spec->pool || !spec->name) {
        rl_errf(err, errlen, "out of memory");
        goto out;
    }
    if (parse_stages(&p, &ctx) < 0) goto out;
    if (flags & RL_SPEC_CHECK_PATHS) {
        char cfgpath[PATH_MAX + 16];
        struct stat st;
        snprintf(cfgpath, sizeof cfgpath, "%s/config.json", spec->teacher);
        if (stat(cfgpath, &st) < 0 || !S_ISREG(st.st_mode)) {
            rl_errf(err, errlen, "teacher: \"%s\" has no config.json (expected a HuggingFace model folder)",
                    spec->teacher);
            goto out;
        }
    }
    rc = 0;
out:
    json_decref(root);
    if (rc < 0) rl_jobspec_free(spec);
    return rc;
}

void rl_jobspec_free(rl_job_spec *spec)
{
    free(spec->name);
    free(spec->teacher);
    for (size_t i = 0; i < spec->n_train; i++) free(spec->train_files[i]);
    free(spec->train_files);
    for (size_t i = 0; i < spec->n_valid; i++) free(spec->valid_files[i]);
    free(spec->valid_files);
    free(spec->stages);
    free(spec->pool);
    free(spec->output);
    memset(spec, 0, sizeof *spec);
}

/* ---- canonical JSON ---- */

static json_t *stage_to_json(const rl_stage_spec *s)
{
    json_t *o = json_object();
    json_object_set_new(o, "stage", json_string(rl_stage_kind_name(s->kind)));
    json_object_set_new(o, "seed", json_integer((json_int_t)s->seed));
    if (!stage_trains(s->kind)) return o;
    json_object_set_new(o, "tokens", json_integer(s->tokens));
    json_object_set_new(o, "seq_len", json_integer(s->seq_len));
    json_object_set_new(o, "batch", json_integer(s->batch));
    json_object_set_new(o, "micro_batch", json_integer(s->micro_batch));
    json_t *lr = json_object();
    json_object_set_new(lr, "init", json_real(s->lr_init));
    json_object_set_new(lr, "final", json_real(s->lr_final));
    json_object_set_new(o, "lr", lr);
    json_t *lr2 = json_object();
    json_object_set_new(lr2, "init", json_real(s->lr2_init));
    json_object_set_new(lr2, "final", json_real(s->lr2_final));
    json_object_set_new(o, "lr2", lr2);
    json_object_set_new(o, "lr_wait", json_real(s->lr_wait));
    json_object_set_new(o, "lr_endpoint", json_real(s->lr_endpoint));
    json_object_set_new(o, "schedule", json_string(schedule_names[s->schedule]));
    json_object_set_new(o, "warmup", json_integer(s->warmup));
    json_object_set_new(o, "checkpoint_every", json_integer(s->checkpoint_every));
    json_object_set_new(o, "keep_checkpoints", json_integer(s->keep_checkpoints));
    json_object_set_new(o, "clip", json_real(s->clip));
    json_object_set_new(o, "kl_weight", json_real(s->kl_weight));
    json_object_set_new(o, "ce_weight", json_real(s->ce_weight));
    json_object_set_new(o, "zero", json_integer(s->zero));
    json_object_set_new(o, "recompute", json_integer(s->recompute));
    if (s->mlp_rows) /* (optional: specs from before it have none) */
        json_object_set_new(o, "mlp_rows", json_integer(s->mlp_rows));
    json_object_set_new(o, "profile", json_integer(s->profile));
    json_object_set_new(o, "precision", json_string(precision_names[s->bf16 >= 0 && s->bf16 < 3 ? s->bf16 : 0]));
    if (s->kind == RL_STAGE_ALIGN) json_object_set_new(o, "loss", json_string(s->loss == RL_LOSS_MSE ? "mse" : "l2"));
    if (s->kind == RL_STAGE_EXTEND)
        json_object_set_new(o, "train", json_string(s->train == RL_TRAIN_DECAY_SHIFT ? "decay_shift" : "all"));
    return o;
}

static json_t *string_array(char **v, size_t n)
{
    json_t *a = json_array();
    for (size_t i = 0; i < n; i++) json_array_append_new(a, json_string(v[i]));
    return a;
}

static char *dump(json_t *o)
{
    char *out = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(17));
    json_decref(o);
    return out;
}

char *rl_jobspec_to_json(const rl_job_spec *s)
{
    json_t *o = json_object();
    json_object_set_new(o, "name", json_string(s->name));
    json_object_set_new(o, "teacher", json_string(s->teacher));
    json_t *st = json_object();
    json_object_set_new(st, "arch", json_string(rl_arch_name(s->arch)));
    if (s->arch == RL_ARCH_RWKV7) json_object_set_new(st, "variant", json_stringn(&s->variant, 1));
    json_object_set_new(st, "keep_attention_layers", json_integer(s->keep_attention_layers));
    json_object_set_new(o, "student", st);
    json_t *data = json_object();
    json_object_set_new(data, "train", string_array(s->train_files, s->n_train));
    if (s->n_valid) json_object_set_new(data, "valid", string_array(s->valid_files, s->n_valid));
    json_object_set_new(o, "data", data);
    json_t *stages = json_array();
    for (size_t i = 0; i < s->n_stages; i++) json_array_append_new(stages, stage_to_json(&s->stages[i]));
    json_object_set_new(o, "stages", stages);
    json_t *res = json_object();
    json_object_set_new(res, "ranks", json_integer(s->ranks));
    json_object_set_new(res, "device", json_string(s->device == RL_DEVICE_CUDA ? "cuda" : "cpu"));
    json_object_set_new(res, "pool", json_string(s->pool));
    json_object_set_new(o, "resources", res);
    json_object_set_new(o, "output", json_string(s->output));
    json_object_set_new(o, "max_restarts", json_integer(s->max_restarts));
    json_object_set_new(o, "priority", json_integer(s->priority));
    return dump(o);
}

char *rl_jobspec_stage_json(const rl_job_spec *spec, size_t idx)
{
    if (idx >= spec->n_stages) return NULL;
    return dump(stage_to_json(&spec->stages[idx]));
}
