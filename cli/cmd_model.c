/* cmd_model.c — model tools that work on files directly:
 *   radlads init-model  writes a random model as a HuggingFace folder
 *   radlads score       cross-entropy / perplexity of a token sequence, optional logits dump
 *   radlads inspect     summary of a model or checkpoint folder, checkpoints verified */
#include <dirent.h>
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cli.h"
#include "model.h"
#include "student.h"
#include "train.h"

static int parse_int(const char *opt, const char *s, long lo, long hi, int *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || *end || end == s || v < lo || v > hi) {
        fprintf(stderr, "radlads: %s expects an integer in [%ld, %ld], got \"%s\"\n", opt, lo, hi, s);
        return -1;
    }
    *out = (int)v;
    return 0;
}

static int parse_double(const char *opt, const char *s, double *out)
{
    char *end;
    errno = 0;
    *out = strtod(s, &end);
    if (errno || *end || end == s || !isfinite(*out)) {
        fprintf(stderr, "radlads: %s expects a number, got \"%s\"\n", opt, s);
        return -1;
    }
    return 0;
}

static void init_usage(FILE *f)
{
    fprintf(f,
            "usage: radlads init-model --arch qwen2|qwen3|llama|mistral --hidden D --layers L --heads H\n"
            "         --kv-heads G --vocab V --out DIR [--head-dim N] [--intermediate F] [--seed S]\n"
            "         [--rope-theta T] [--rope-llama3 FACTOR,LOW,HIGH,ORIG_MAX_POS] [--rms-eps E]\n"
            "         [--tie | --untie] [--attention-bias] [--init-std S] [--randomize-all]\n"
            "         [--dtype f32|bf16|f16] [--shard-bytes N]\n"
            "Writes DIR/config.json and DIR/model.safetensors (or shards + index) with random weights.\n"
            "--randomize-all also randomizes biases and norm weights (for tests).\n");
}

int cmd_init_model(int argc, char **argv)
{
    enum { O_ARCH = 1000, O_HIDDEN, O_LAYERS, O_HEADS, O_KV, O_VOCAB, O_OUT, O_HEADDIM, O_FFN, O_SEED, O_THETA,
           O_LLAMA3, O_EPS, O_TIE, O_UNTIE, O_BIAS, O_STD, O_RANDALL, O_DTYPE, O_SHARD, O_HELP };
    static const struct option opts[] = {
        {"arch", 1, 0, O_ARCH},        {"hidden", 1, 0, O_HIDDEN},        {"layers", 1, 0, O_LAYERS},
        {"heads", 1, 0, O_HEADS},      {"kv-heads", 1, 0, O_KV},          {"vocab", 1, 0, O_VOCAB},
        {"out", 1, 0, O_OUT},          {"head-dim", 1, 0, O_HEADDIM},     {"intermediate", 1, 0, O_FFN},
        {"seed", 1, 0, O_SEED},        {"rope-theta", 1, 0, O_THETA},     {"rope-llama3", 1, 0, O_LLAMA3},
        {"rms-eps", 1, 0, O_EPS},      {"tie", 0, 0, O_TIE},              {"untie", 0, 0, O_UNTIE},
        {"attention-bias", 0, 0, O_BIAS}, {"init-std", 1, 0, O_STD},      {"randomize-all", 0, 0, O_RANDALL},
        {"dtype", 1, 0, O_DTYPE},      {"shard-bytes", 1, 0, O_SHARD},    {"help", 0, 0, O_HELP},
        {0, 0, 0, 0}};
    rl_model_config c = {.rope_theta = 0, .rms_norm_eps = 1e-6, .bos_token_id = -1, .eos_token_id = -1,
                         .max_position_embeddings = 32768, .initializer_range = 0.02f};
    const char *arch = NULL, *out = NULL;
    int seed = 0, randomize_all = 0, tie = -1, bias = 0, shard = 0;
    rl_dtype dtype = RL_DTYPE_F32;
    double d;
    optind = 1;
    int o;
    while ((o = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        int bad = 0;
        switch (o) {
        case O_ARCH: arch = optarg; break;
        case O_OUT: out = optarg; break;
        case O_HIDDEN: bad = parse_int("--hidden", optarg, 1, 1 << 20, &c.hidden); break;
        case O_LAYERS: bad = parse_int("--layers", optarg, 1, 4096, &c.layers); break;
        case O_HEADS: bad = parse_int("--heads", optarg, 1, 4096, &c.heads); break;
        case O_KV: bad = parse_int("--kv-heads", optarg, 1, 4096, &c.kv_heads); break;
        case O_VOCAB: bad = parse_int("--vocab", optarg, 1, 1 << 24, &c.vocab); break;
        case O_HEADDIM: bad = parse_int("--head-dim", optarg, 2, 65536, &c.head_dim); break;
        case O_FFN: bad = parse_int("--intermediate", optarg, 1, 1 << 22, &c.intermediate); break;
        case O_SEED: bad = parse_int("--seed", optarg, 0, 0x7fffffff, &seed); break;
        case O_SHARD: bad = parse_int("--shard-bytes", optarg, 1, 0x7fffffff, &shard); break;
        case O_THETA: bad = parse_double("--rope-theta", optarg, &c.rope_theta); break;
        case O_EPS: bad = parse_double("--rms-eps", optarg, &c.rms_norm_eps); break;
        case O_STD: bad = parse_double("--init-std", optarg, &d), c.initializer_range = (float)d; break;
        case O_TIE: tie = 1; break;
        case O_UNTIE: tie = 0; break;
        case O_BIAS: bias = 1; break;
        case O_RANDALL: randomize_all = 1; break;
        case O_LLAMA3:
            c.rope_type = RL_ROPE_LLAMA3;
            if (sscanf(optarg, "%lf,%lf,%lf,%d", &c.rope_factor, &c.rope_low_freq_factor, &c.rope_high_freq_factor,
                       &c.rope_original_max_pos) != 4) {
                fprintf(stderr, "radlads: --rope-llama3 expects FACTOR,LOW,HIGH,ORIG_MAX_POS, e.g. 8,1,4,8192\n");
                bad = 1;
            }
            break;
        case O_DTYPE:
            if (strcmp(optarg, "f32") == 0)
                dtype = RL_DTYPE_F32;
            else if (strcmp(optarg, "bf16") == 0)
                dtype = RL_DTYPE_BF16;
            else if (strcmp(optarg, "f16") == 0)
                dtype = RL_DTYPE_F16;
            else {
                fprintf(stderr, "radlads: --dtype must be f32, bf16 or f16\n");
                bad = 1;
            }
            break;
        case O_HELP: init_usage(stdout); return 0;
        default: init_usage(stderr); return 2;
        }
        if (bad)
            return 2;
    }
    if (optind < argc) {
        fprintf(stderr, "radlads init-model: unexpected argument \"%s\"\n", argv[optind]);
        return 2;
    }
    if (!arch || !out || !c.hidden || !c.layers || !c.heads || !c.vocab) {
        fprintf(stderr, "radlads init-model: --arch, --hidden, --layers, --heads, --vocab and --out are required\n");
        init_usage(stderr);
        return 2;
    }
    if (rl_model_arch_from_name(arch, &c.arch)) {
        fprintf(stderr, "radlads init-model: --arch \"%s\" is not one of qwen2, qwen3, llama, mistral\n", arch);
        return 2;
    }
    if (!c.kv_heads)
        c.kv_heads = c.heads;
    if (!c.head_dim)
        c.head_dim = c.hidden / c.heads;
    if (!c.intermediate) /* the usual SwiGLU width: 8/3·D rounded up to 32 */
        c.intermediate = (c.hidden * 8 / 3 + 31) / 32 * 32;
    if (c.rope_theta == 0)
        c.rope_theta = c.arch == RL_MODEL_LLAMA || c.arch == RL_MODEL_MISTRAL ? 500000.0 : 1000000.0;
    c.tie_word_embeddings = tie >= 0 ? tie : 0;
    c.qkv_bias = c.arch == RL_MODEL_QWEN2 ? 1 : bias;
    c.o_bias = c.arch == RL_MODEL_QWEN2 ? 0 : bias;
    c.qk_norm = c.arch == RL_MODEL_QWEN3;
    if (c.arch == RL_MODEL_QWEN2 && c.head_dim != c.hidden / c.heads) {
        fprintf(stderr, "radlads init-model: Qwen2 has head_dim = hidden/heads = %d; drop --head-dim\n",
                c.hidden / c.heads);
        return 2;
    }
    if (bias && c.arch == RL_MODEL_QWEN2)
        fprintf(stderr, "radlads init-model: note: Qwen2 always has q/k/v bias and no o_proj bias\n");
    char err[1024];
    rl_backend *be;
    rl_backend_options bo = {.kind = RL_BACKEND_CPU, .num_threads = 1};
    if (rl_backend_create(&be, &bo, err, sizeof err)) {
        fprintf(stderr, "radlads init-model: %s\n", err);
        return 1;
    }
    rl_model *m;
    int rc = rl_model_create(&m, be, &c, 0, err, sizeof err);
    if (!rc) {
        rl_model_init_random(m, (uint64_t)seed, randomize_all);
        rc = rl_model_save(m, out, dtype, (size_t)shard, err, sizeof err);
        if (!rc)
            printf("wrote %s: %s, %lld parameters, %s\n", out, rl_model_arch_name(c.arch), (long long)rl_model_num_params(m),
                   rl_dtype_name(dtype));
        rl_model_destroy(m);
    }
    rl_backend_destroy(be);
    if (rc) {
        fprintf(stderr, "radlads init-model: %s\n", err);
        return 1;
    }
    return 0;
}

/* ---- score ---- */

/* Reads ids from a radlads token file (magic RLTOKENS, see model/tokenizer/tokenizer.h)
 * or from text: integers separated by whitespace or commas. */
static int read_ids(const char *path, int32_t **ids, int *n, char *err, size_t errlen)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        snprintf(err, errlen, "%s: cannot open: %s", path, strerror(errno));
        return -1;
    }
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *buf = malloc((size_t)len + 1);
    if (!buf || fread(buf, 1, (size_t)len, f) != (size_t)len) {
        snprintf(err, errlen, "%s: cannot read", path);
        fclose(f);
        free(buf);
        return -1;
    }
    fclose(f);
    buf[len] = 0;
    int rc = 0, cap = 1024;
    *n = 0;
    *ids = malloc(sizeof **ids * (size_t)cap);
    if (len >= 64 && memcmp(buf, "RLTOKENS", 8) == 0) {
        uint32_t width = buf[12] | buf[13] << 8 | (uint32_t)buf[14] << 16 | (uint32_t)buf[15] << 24;
        uint64_t count = 0;
        for (int i = 7; i >= 0; i--)
            count = count << 8 | buf[16 + i];
        if ((width != 2 && width != 4) || count > (uint64_t)(len - 64) / width || count > 0x7fffffff) {
            snprintf(err, errlen, "%s: token file header is inconsistent with its size", path);
            rc = -1;
        } else {
            *ids = realloc(*ids, sizeof **ids * (count + 1));
            for (uint64_t i = 0; i < count; i++) {
                const unsigned char *p = buf + 64 + i * width;
                (*ids)[i] = width == 2 ? (int32_t)(p[0] | p[1] << 8)
                                       : (int32_t)(p[0] | p[1] << 8 | p[2] << 16 | (uint32_t)p[3] << 24);
            }
            *n = (int)count;
        }
    } else {
        char *s = (char *)buf;
        while (*s && !rc) {
            while (*s == ' ' || *s == ',' || *s == '\n' || *s == '\t' || *s == '\r')
                s++;
            if (!*s)
                break;
            char *end;
            long v = strtol(s, &end, 10);
            if (end == s || v < 0 || v > 0x7fffffff) {
                snprintf(err, errlen, "%s: expected token ids (integers separated by spaces or commas) near \"%.16s\"",
                         path, s);
                rc = -1;
                break;
            }
            if (*n == cap)
                *ids = realloc(*ids, sizeof **ids * (size_t)(cap *= 2));
            (*ids)[(*n)++] = (int32_t)v;
            s = end;
        }
    }
    free(buf);
    return rc;
}

static int parse_id_list(const char *s, int32_t **ids, int *n)
{
    int cap = 16;
    *n = 0;
    *ids = malloc(sizeof **ids * (size_t)cap);
    while (*s) {
        char *end;
        errno = 0;
        long v = strtol(s, &end, 10);
        if (end == s || errno || v < 0 || v > 0x7fffffff || (*end && *end != ',')) {
            fprintf(stderr, "radlads score: --ids expects comma-separated non-negative integers, e.g. 1,2,3\n");
            return -1;
        }
        if (*n == cap)
            *ids = realloc(*ids, sizeof **ids * (size_t)(cap *= 2));
        (*ids)[(*n)++] = (int32_t)v;
        s = *end ? end + 1 : end;
    }
    return 0;
}

typedef struct {
    rl_backend *be;
    rl_st_writer *w;
    float *host;
    int vocab;
} dump_ctx;

static int dump_chunk(void *p, int row0, int rows, const float *logits, char *err, size_t errlen)
{
    (void)row0;
    dump_ctx *d = p;
    size_t n = (size_t)rows * d->vocab;
    int rc = rl_download(d->be, d->host, logits, n * sizeof(float));
    return rc ? rc : rl_st_writer_append(d->w, d->host, n, err, errlen);
}

static void score_usage(FILE *f)
{
    fprintf(f, "usage: radlads score --model DIR (--tokens FILE | --ids 1,2,3,...) [--dump-logits OUT.safetensors]\n"
               "         [--window W [--max-windows N]] [--json] [--threads N] [--chunk-rows R]\n"
               "Prints the mean next-token cross-entropy of the sequence (T-1 predictions) and its perplexity.\n"
               "--window W: the sequence is cut into consecutive windows of W tokens (a last partial one is\n"
               "  dropped), each scored on its own (W-1 predictions); the mean is over all predictions. This is\n"
               "  how the trainer's validation loss is computed with W = its seq_len.\n"
               "--dump-logits writes the fp32 logits [T, vocab] as the tensor \"logits\" (not with --window).\n");
}

/* Forward of B rows of W tokens; loss = mean CE over the targets that are not −1. */
static int score_rows(rl_model *m, rl_student *stu, const int32_t *ids, const int32_t *targets, double *loss,
                      char *err, size_t errlen)
{
    int rc = stu ? rl_student_forward(stu, ids, err, errlen) : rl_model_forward(m, ids, err, errlen);
    return rc ? rc : rl_model_loss(m, targets, 0, loss, err, errlen);
}

/* --window: consecutive windows of W tokens, SCORE_BATCH per forward; a last short batch repeats window
 * 0 with every target −1, so each window counts W−1 predictions and the mean is over all of them. */
#define SCORE_BATCH 16
static int score_windows(rl_model *m, rl_student *stu, const int32_t *all, int n_win, int W, double *loss,
                         char *err, size_t errlen)
{
    const int B = n_win < SCORE_BATCH ? n_win : SCORE_BATCH;
    int32_t *ids = malloc(sizeof *ids * (size_t)B * W * 2);
    if (!ids) {
        snprintf(err, errlen, "out of memory");
        return RL_ENOMEM;
    }
    int32_t *targets = ids + (size_t)B * W;
    double sum = 0;
    int rc = 0;
    for (int w0 = 0; w0 < n_win && !rc; w0 += B) {
        const int n = n_win - w0 < B ? n_win - w0 : B;
        for (int b = 0; b < B; b++) {
            const int32_t *src = all + (size_t)(b < n ? w0 + b : 0) * W;
            memcpy(ids + (size_t)b * W, src, sizeof *ids * (size_t)W);
            for (int i = 0; i < W; i++)
                targets[(size_t)b * W + i] = b < n && i + 1 < W ? src[i + 1] : -1;
        }
        double l = 0;
        rc = score_rows(m, stu, ids, targets, &l, err, errlen);
        sum += l * n;
    }
    *loss = sum / n_win;
    free(ids);
    return rc;
}

int cmd_score(int argc, char **argv)
{
    enum { O_MODEL = 1000, O_TOKENS, O_IDS, O_DUMP, O_JSON, O_THREADS, O_CHUNK, O_WINDOW, O_MAXWIN, O_HELP };
    static const struct option opts[] = {{"model", 1, 0, O_MODEL},   {"tokens", 1, 0, O_TOKENS},
                                         {"ids", 1, 0, O_IDS},       {"dump-logits", 1, 0, O_DUMP},
                                         {"json", 0, 0, O_JSON},     {"threads", 1, 0, O_THREADS},
                                         {"chunk-rows", 1, 0, O_CHUNK}, {"window", 1, 0, O_WINDOW},
                                         {"max-windows", 1, 0, O_MAXWIN}, {"help", 0, 0, O_HELP},
                                         {0, 0, 0, 0}};
    const char *model_dir = NULL, *tokens = NULL, *ids_arg = NULL, *dump = NULL;
    int json = 0, threads = 0, chunk = 64, window = 0, max_windows = 0, o;
    optind = 1;
    while ((o = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (o) {
        case O_MODEL: model_dir = optarg; break;
        case O_TOKENS: tokens = optarg; break;
        case O_IDS: ids_arg = optarg; break;
        case O_DUMP: dump = optarg; break;
        case O_JSON: json = 1; break;
        case O_THREADS:
            if (parse_int("--threads", optarg, 1, 1024, &threads))
                return 2;
            break;
        case O_CHUNK:
            if (parse_int("--chunk-rows", optarg, 1, 1 << 20, &chunk))
                return 2;
            break;
        case O_WINDOW:
            if (parse_int("--window", optarg, 2, 1 << 24, &window))
                return 2;
            break;
        case O_MAXWIN:
            if (parse_int("--max-windows", optarg, 1, 1 << 30, &max_windows))
                return 2;
            break;
        case O_HELP: score_usage(stdout); return 0;
        default: score_usage(stderr); return 2;
        }
    }
    if (window && dump) {
        fprintf(stderr, "radlads score: --dump-logits and --window do not go together\n");
        return 2;
    }
    if (!model_dir || (!tokens == !ids_arg) || optind < argc) {
        fprintf(stderr, "radlads score: give --model and exactly one of --tokens or --ids\n");
        score_usage(stderr);
        return 2;
    }
    char err[1024];
    int32_t *ids = NULL;
    int T = 0;
    if (tokens ? read_ids(tokens, &ids, &T, err, sizeof err) : parse_id_list(ids_arg, &ids, &T)) {
        if (tokens)
            fprintf(stderr, "radlads score: %s\n", err);
        free(ids);
        return 2;
    }
    if (T < 2) {
        fprintf(stderr, "radlads score: need at least 2 tokens to score a next-token prediction (got %d)\n", T);
        free(ids);
        return 2;
    }
    int n_win = window ? T / window : 0;
    if (window && max_windows && n_win > max_windows)
        n_win = max_windows;
    if (window && n_win < 1) {
        fprintf(stderr, "radlads score: %d tokens hold no window of %d\n", T, window);
        free(ids);
        return 2;
    }
    /* rows × width of one forward */
    const int rows = window ? (n_win < SCORE_BATCH ? n_win : SCORE_BATCH) : 1, width = window ? window : T;
    rl_backend *be = NULL;
    rl_model *m = NULL;
    rl_backend_options bo = {.kind = RL_BACKEND_CPU, .num_threads = threads};
    rl_student *stu = NULL; /* a RADLADS student folder: its base model holds the head */
    int rc = rl_backend_create(&be, &bo, err, sizeof err);
    if (!rc && rl_student_is_student_dir(model_dir)) {
        rc = rl_student_load(&stu, be, model_dir, err, sizeof err);
        if (!rc)
            m = stu->base, rc = rl_student_prepare(stu, rows, width, chunk, err, sizeof err);
    } else {
        if (!rc)
            rc = rl_model_load(&m, be, model_dir, 0, err, sizeof err);
        if (!rc)
            rc = rl_model_prepare(m, rows, width, 0, chunk, err, sizeof err);
    }
    double loss = 0;
    int32_t *targets = malloc(sizeof *targets * (size_t)T);
    if (!rc && window) {
        rc = score_windows(m, stu, ids, n_win, window, &loss, err, sizeof err);
    } else if (!rc) {
        for (int t = 0; t < T; t++)
            targets[t] = t + 1 < T ? ids[t + 1] : -1;
        rc = score_rows(m, stu, ids, targets, &loss, err, sizeof err);
    }
    if (!rc && dump) {
        int64_t shape[2] = {T, m->cfg.vocab};
        rl_st_entry e = {.name = "logits", .dtype = RL_DTYPE_F32, .ndim = 2, .shape = {shape[0], shape[1]}};
        dump_ctx d = {.be = be, .vocab = m->cfg.vocab, .host = malloc(sizeof(float) * (size_t)m->chunk_rows *
                                                                      (size_t)m->cfg.vocab)};
        rc = rl_st_writer_open(&d.w, dump, &e, 1, NULL, 0, err, sizeof err);
        if (!rc) {
            rc = rl_model_logits(m, dump_chunk, &d, err, sizeof err);
            rc = rc ? (rl_st_writer_abort(d.w), rc) : rl_st_writer_finish(d.w, err, sizeof err);
        }
        free(d.host);
    }
    if (!rc) {
        const int scored = window ? n_win * window : T, predicted = window ? n_win * (window - 1) : T - 1;
        if (json) {
            json_t *doc = json_pack("{s:s, s:i, s:i, s:f, s:f}", "model", model_dir, "tokens", scored, "predicted",
                                    predicted, "mean_cross_entropy", loss, "perplexity", exp(loss));
            if (dump)
                json_object_set_new(doc, "logits", json_string(dump));
            if (window) {
                json_object_set_new(doc, "window", json_integer(window));
                json_object_set_new(doc, "windows", json_integer(n_win));
            }
            cli_print_json(doc);
        } else {
            printf("tokens %d  predicted %d  mean cross-entropy %.6f nats  perplexity %.4f", scored, predicted, loss,
                   exp(loss));
            if (window)
                printf("  (%d windows of %d)", n_win, window);
            putchar('\n');
        }
    } else {
        fprintf(stderr, "radlads score: %s\n", err);
    }
    free(targets);
    free(ids);
    if (stu)
        rl_student_destroy(stu);
    else
        rl_model_destroy(m);
    rl_backend_destroy(be);
    return rc ? 1 : 0;
}

/* ---- inspect ---- */

static void inspect_usage(FILE *f)
{
    fprintf(f, "usage: radlads inspect DIR [--json]\n"
               "Summarises a model folder (teacher, RADLADS student, exported) or a checkpoint folder\n"
               "(DIR/checkpoints/step-N): architecture, dimensions, parameter count, dtype, tensor count; for a\n"
               "checkpoint also its manifest (stage, step, tokens) with every file's size and SHA-256 verified.\n"
               "A training output folder also lists its checkpoints (each verified) and its last metrics.\n"
               "Exit 1 when a checkpoint does not verify or the folder holds no model.\n");
}

static json_t *load_json_file(const char *dir, const char *name)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    return json_load_file(path, 0, NULL);
}

/* The config.json fields a reader wants first, HF names kept. */
static json_t *inspect_config(const json_t *cfg)
{
    static const char *const keys[] = {"model_type", "teacher_model_type", "variant", "hidden_size",
                                       "num_hidden_layers", "num_attention_heads", "num_key_value_heads", "head_dim",
                                       "intermediate_size", "vocab_size", "num_attention_layers", "use_rope",
                                       "decay_low_rank_dim", "a_low_rank_dim", "v_low_rank_dim", "gate_low_rank_dim",
                                       "tokenshift_low_rank_dim", "tie_word_embeddings", "rope_theta",
                                       "max_position_embeddings"};
    json_t *o = json_object();
    json_t *arch = json_array_get(json_object_get(cfg, "architectures"), 0);
    if (arch)
        json_object_set(o, "architecture", arch);
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
        json_t *v = json_object_get(cfg, keys[i]);
        if (v)
            json_object_set(o, keys[i], v);
    }
    return o;
}

/* Tensors, parameters and dtypes of the weights in dir (model.safetensors or its shards), or NULL. */
static json_t *inspect_weights(const char *dir, const char *file, char *err, size_t errlen)
{
    rl_safetensors *st;
    int rc;
    if (file) {
        char path[4200];
        snprintf(path, sizeof path, "%s/%s", dir, file);
        rc = rl_st_open_file(&st, path, err, errlen);
    } else {
        rc = rl_st_open_dir(&st, dir, err, errlen);
    }
    if (rc)
        return NULL;
    json_t *dtypes = json_object();
    long long params = 0;
    for (int i = 0; i < rl_st_count(st); i++) {
        const rl_st_tensor *t = rl_st_at(st, i);
        long long n = 1;
        for (int d = 0; d < t->ndim; d++)
            n *= t->shape[d];
        params += n;
        const char *dn = rl_st_dtype_name(t->dtype);
        json_object_set_new(dtypes, dn, json_integer(json_integer_value(json_object_get(dtypes, dn)) + 1));
    }
    json_t *o = json_pack("{s:i, s:I, s:o}", "tensors", rl_st_count(st), "parameters", (json_int_t)params, "dtypes",
                          dtypes);
    rl_st_close(st);
    return o;
}

/* The manifest, verified: every file's size and SHA-256 recomputed (rl_ckpt_verify). */
static json_t *inspect_checkpoint(const char *dir, int *ok)
{
    char err[1024] = "";
    rl_ckpt_info info;
    *ok = rl_ckpt_verify(dir, &info, err, sizeof err) == 0;
    json_t *m = load_json_file(dir, "manifest.json");
    json_t *o = json_object();
    static const char *const keys[] = {"stage", "step", "tokens", "sample", "created_at_ms"};
    for (size_t i = 0; m && i < sizeof keys / sizeof keys[0]; i++)
        if (json_object_get(m, keys[i]))
            json_object_set(o, keys[i], json_object_get(m, keys[i]));
    if (*ok)
        json_object_set_new(o, "manifest_sha256", json_string(info.sha256));
    json_object_set_new(o, "verified", json_boolean(*ok));
    if (!*ok)
        json_object_set_new(o, "error", json_string(err));
    json_t *files = json_object_get(m, "files"), *list = json_array();
    const char *name;
    json_t *f;
    json_object_foreach(files, name, f)
    {
        json_array_append_new(list, json_pack("{s:s, s:O, s:O, s:b}", "name", name, "bytes",
                                              json_object_get(f, "bytes"), "sha256", json_object_get(f, "sha256"),
                                              "verified", *ok));
    }
    json_object_set_new(o, "files", list);
    json_decref(m);
    return o;
}

/* DIR/checkpoints/step-N, each verified. */
static json_t *inspect_checkpoint_list(const char *dir, int *all_ok)
{
    char cdir[4200];
    snprintf(cdir, sizeof cdir, "%s/checkpoints", dir);
    struct dirent **names = NULL;
    int n = scandir(cdir, &names, NULL, alphasort);
    if (n < 0)
        return NULL;
    json_t *list = json_array();
    for (int i = 0; i < n; i++) {
        if (!strncmp(names[i]->d_name, "step-", 5)) {
            char p[4500], err[512];
            rl_ckpt_info info;
            snprintf(p, sizeof p, "%s/%s", cdir, names[i]->d_name);
            int ok = rl_ckpt_verify(p, &info, err, sizeof err) == 0;
            *all_ok &= ok;
            json_t *c = json_pack("{s:s, s:b}", "name", names[i]->d_name, "verified", ok);
            if (ok)
                json_object_update_new(c, json_pack("{s:s, s:I, s:I}", "stage", info.stage, "step",
                                                    (json_int_t)info.step, "tokens", (json_int_t)info.tokens));
            else
                json_object_set_new(c, "error", json_string(err));
            json_array_append_new(list, c);
        }
        free(names[i]);
    }
    free(names);
    return list;
}

/* The last training line and the last validation line of DIR/metrics.jsonl. */
static json_t *inspect_metrics(const char *dir)
{
    char path[4200], line[8192];
    snprintf(path, sizeof path, "%s/metrics.jsonl", dir);
    FILE *f = fopen(path, "r");
    if (!f)
        return NULL;
    json_t *last = NULL, *valid = NULL;
    long lines = 0;
    while (fgets(line, sizeof line, f)) {
        json_t *j = json_loads(line, JSON_DISABLE_EOF_CHECK, NULL);
        if (!j)
            continue;
        lines++;
        json_t **slot = json_object_get(j, "valid_loss") ? &valid : &last;
        json_decref(*slot);
        *slot = j;
    }
    fclose(f);
    json_t *o = json_pack("{s:i}", "lines", (json_int_t)lines);
    static const char *const keys[] = {"stage", "step", "tokens", "loss", "lr", "grad_norm", "tokens_per_s"};
    for (size_t i = 0; last && i < sizeof keys / sizeof keys[0]; i++)
        if (json_object_get(last, keys[i]))
            json_object_set(o, keys[i], json_object_get(last, keys[i]));
    if (valid) {
        json_object_set(o, "valid_loss", json_object_get(valid, "valid_loss"));
        json_object_set(o, "valid_step", json_object_get(valid, "step"));
    }
    json_decref(last), json_decref(valid);
    return o;
}

static void print_inspect(const json_t *doc)
{
    const json_t *ck = json_object_get(doc, "checkpoint"), *cfg = json_object_get(doc, "config"),
                 *w = json_object_get(doc, "weights"), *met = json_object_get(doc, "metrics");
    printf("%s: %s\n", json_string_value(json_object_get(doc, "path")), json_string_value(json_object_get(doc, "kind")));
    if (ck) {
        printf("  checkpoint: stage %s, step %lld, tokens %lld, %s\n",
               json_string_value(json_object_get(ck, "stage")) ? json_string_value(json_object_get(ck, "stage")) : "?",
               (long long)json_integer_value(json_object_get(ck, "step")),
               (long long)json_integer_value(json_object_get(ck, "tokens")),
               json_is_true(json_object_get(ck, "verified")) ? "every file verified (size and SHA-256)" : "NOT VERIFIED");
        if (json_object_get(ck, "error"))
            printf("    error: %s\n", json_string_value(json_object_get(ck, "error")));
        size_t i;
        json_t *f;
        json_array_foreach(json_object_get(ck, "files"), i, f)
        {
            printf("    %-26s %12lld bytes  sha256 %s\n", json_string_value(json_object_get(f, "name")),
                   (long long)json_integer_value(json_object_get(f, "bytes")),
                   json_string_value(json_object_get(f, "sha256")));
        }
    }
    if (cfg) {
        printf("  architecture: %s (%s)", json_string_value(json_object_get(cfg, "architecture")),
               json_string_value(json_object_get(cfg, "model_type")));
        if (json_object_get(cfg, "variant"))
            printf(" variant %s", json_string_value(json_object_get(cfg, "variant")));
        if (json_object_get(cfg, "teacher_model_type"))
            printf(", from a %s teacher", json_string_value(json_object_get(cfg, "teacher_model_type")));
        printf("\n  dimensions: hidden %lld, layers %lld, heads %lld/%lld, head_dim %lld, ffn %lld, vocab %lld\n",
               (long long)json_integer_value(json_object_get(cfg, "hidden_size")),
               (long long)json_integer_value(json_object_get(cfg, "num_hidden_layers")),
               (long long)json_integer_value(json_object_get(cfg, "num_attention_heads")),
               (long long)json_integer_value(json_object_get(cfg, "num_key_value_heads")),
               (long long)json_integer_value(json_object_get(cfg, "head_dim")),
               (long long)json_integer_value(json_object_get(cfg, "intermediate_size")),
               (long long)json_integer_value(json_object_get(cfg, "vocab_size")));
    }
    if (w) {
        printf("  weights: %lld parameters in %lld tensors, dtype", (long long)json_integer_value(json_object_get(w, "parameters")),
               (long long)json_integer_value(json_object_get(w, "tensors")));
        const char *k;
        json_t *v;
        json_object_foreach((json_t *)json_object_get(w, "dtypes"), k, v)
        {
            printf(" %s×%lld", k, (long long)json_integer_value(v));
        }
        putchar('\n');
    }
    if (json_object_get(doc, "weights_error"))
        printf("  weights: %s\n", json_string_value(json_object_get(doc, "weights_error")));
    if (json_object_get(doc, "optimizer"))
        printf("  optimizer state: %lld tensors (AdamW moments)\n",
               (long long)json_integer_value(json_object_get(json_object_get(doc, "optimizer"), "tensors")));
    size_t i;
    json_t *x;
    if (json_array_size(json_object_get(doc, "tokenizer"))) {
        printf("  tokenizer files:");
        json_array_foreach(json_object_get(doc, "tokenizer"), i, x) printf(" %s", json_string_value(x));
        putchar('\n');
    }
    json_array_foreach(json_object_get(doc, "checkpoints"), i, x)
    {
        if (json_is_true(json_object_get(x, "verified")))
            printf("  checkpoint %s: %s step %lld, tokens %lld, verified\n", json_string_value(json_object_get(x, "name")),
                   json_string_value(json_object_get(x, "stage")), (long long)json_integer_value(json_object_get(x, "step")),
                   (long long)json_integer_value(json_object_get(x, "tokens")));
        else
            printf("  checkpoint %s: DAMAGED: %s\n", json_string_value(json_object_get(x, "name")),
                   json_string_value(json_object_get(x, "error")));
    }
    if (met && json_object_get(met, "step"))
        printf("  metrics: %s step %lld, tokens %lld, loss %.6f%s", json_string_value(json_object_get(met, "stage")),
               (long long)json_integer_value(json_object_get(met, "step")),
               (long long)json_integer_value(json_object_get(met, "tokens")),
               json_real_value(json_object_get(met, "loss")), json_object_get(met, "valid_loss") ? "" : "\n");
    if (met && json_object_get(met, "valid_loss"))
        printf(", valid-loss %.6f (step %lld)\n", json_number_value(json_object_get(met, "valid_loss")),
               (long long)json_integer_value(json_object_get(met, "valid_step")));
}

int cmd_inspect(int argc, char **argv)
{
    static const struct option opts[] = {{"json", 0, 0, 'j'}, {"help", 0, 0, 'h'}, {0, 0, 0, 0}};
    int json = 0, o;
    optind = 1;
    while ((o = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        if (o == 'j')
            json = 1;
        else {
            inspect_usage(o == 'h' ? stdout : stderr);
            return o == 'h' ? 0 : 2;
        }
    }
    if (optind != argc - 1) {
        inspect_usage(stderr);
        return 2;
    }
    const char *dir = argv[optind];
    struct stat sb;
    if (stat(dir, &sb) != 0 || !S_ISDIR(sb.st_mode)) {
        fprintf(stderr, "radlads inspect: %s is not a folder\n", dir);
        return 1;
    }
    int ok = 1, ck_ok = 1;
    json_t *doc = json_pack("{s:s}", "path", dir), *cfg = load_json_file(dir, "config.json");
    json_t *manifest = load_json_file(dir, "manifest.json");
    const int student = cfg && rl_student_is_student_dir(dir);
    const char *kind = manifest ? "checkpoint" : student ? "RADLADS student" : cfg ? "softmax-attention model" : "folder";
    json_object_set_new(doc, "kind", json_string(kind));
    if (manifest) {
        json_object_set_new(doc, "checkpoint", inspect_checkpoint(dir, &ck_ok));
        ok &= ck_ok;
    }
    if (cfg)
        json_object_set_new(doc, "config", inspect_config(cfg));
    char err[1024] = "";
    json_t *w = cfg ? inspect_weights(dir, NULL, err, sizeof err) : NULL;
    if (w)
        json_object_set_new(doc, "weights", w);
    else if (cfg)
        json_object_set_new(doc, "weights_error", json_string(err)), ok = 0;
    char opt[4200];
    snprintf(opt, sizeof opt, "%s/optimizer.safetensors", dir);
    json_t *ow = stat(opt, &sb) == 0 ? inspect_weights(dir, "optimizer.safetensors", err, sizeof err) : NULL;
    if (ow)
        json_object_set_new(doc, "optimizer", ow);
    static const char *const tok_files[] = {"tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt",
                                            "tokenizer.model", "special_tokens_map.json"};
    json_t *toks = json_array();
    for (size_t i = 0; i < sizeof tok_files / sizeof tok_files[0]; i++) {
        snprintf(opt, sizeof opt, "%s/%s", dir, tok_files[i]);
        if (stat(opt, &sb) == 0)
            json_array_append_new(toks, json_string(tok_files[i]));
    }
    json_object_set_new(doc, "tokenizer", toks);
    int all_ck = 1;
    json_t *cks = inspect_checkpoint_list(dir, &all_ck);
    if (cks)
        json_object_set_new(doc, "checkpoints", cks);
    json_t *met = inspect_metrics(dir);
    if (met)
        json_object_set_new(doc, "metrics", met);
    if (!cfg && !manifest && !cks) {
        fprintf(stderr, "radlads inspect: %s holds no config.json, manifest.json or checkpoints/: not a model or "
                        "checkpoint folder\n", dir);
        ok = 0;
    }
    if (json)
        cli_print_json(doc);
    else {
        print_inspect(doc);
        json_decref(doc);
    }
    json_decref(cfg), json_decref(manifest);
    return ok ? 0 : 1;
}
