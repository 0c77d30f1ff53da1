/* cmd_generate.c — radlads generate: text from a teacher (KV cache) or a RADLADS student
 * (recurrent state), streamed as it is produced; --bench measures prompt throughput and
 * per-token latency by context length. The model side is model/generate.h. */
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "generate.h"
#include "tokenizer.h"

static void generate_usage(FILE *f)
{
    fprintf(f,
            "usage: radlads generate --model DIR (--prompt TEXT | --prompt-file F) [--max-tokens N]\n"
            "         [--temperature T] [--top-k K] [--top-p P] [--seed S] [--tokenizer DIR|FILE|bytes]\n"
            "         [--ignore-eos] [--echo] [--quiet] [--threads N] [--prefill-chunk N]\n"
            "       radlads generate --model DIR --bench [--bench-lengths 1k,4k,16k] [--bench-steps N]\n"
            "Continues the prompt with a teacher (softmax attention with a KV cache: the prompt runs in\n"
            "parallel, then each new token attends to the cached keys and values, so a step costs more as the\n"
            "context grows) or a RADLADS student (RAD-RWKV7/6: a fixed-size recurrent state, the same cost and\n"
            "memory at every position). The model folder decides which. Text is written to stdout as it is\n"
            "produced; a summary (tokens, tokens/s, why it stopped) goes to stderr unless --quiet.\n"
            "\n"
            "  --tokenizer     the tokenizer: DIR/tokenizer.json or a tokenizer.json file; `bytes` is the built-in\n"
            "                  byte vocabulary (id = byte, <|endoftext|> = 256). Default: the model folder's\n"
            "                  tokenizer.json, else `bytes` (models made by init-model have none). Ids the\n"
            "                  tokenizer does not know are written as <|id=N|>.\n"
            "  --max-tokens    new tokens to generate (default 128); generation also stops at the EOS token\n"
            "                  (config.json eos_token_id, else the tokenizer's) unless --ignore-eos\n"
            "  --temperature   0 = greedy (always the most likely token); default 1\n"
            "  --top-k         sample among the K most likely tokens (default 0 = all)\n"
            "  --top-p         then among the smallest set of most likely tokens whose probability reaches P,\n"
            "                  0 < P <= 1 (default 1 = all)\n"
            "  --seed          the sampler's seed; the same seed, model and prompt give the same text\n"
            "                  (default: from the clock, printed in the summary)\n"
            "  --echo          write the prompt before the generated text\n"
            "  --prefill-chunk tokens per parallel forward of the prompt (default 512): bounds the activations\n"
            "  --threads       CPU threads (default: OMP_NUM_THREADS or all cores)\n"
            "  --bench         no text: for each context length L, random prompt tokens of length L (prompt\n"
            "                  tokens/s), then --bench-steps single-token steps at that context (median and p90\n"
            "                  latency in ms) and the cache/state size. Lengths accept a k suffix (1k = 1024).\n");
}

static int parse_long(const char *opt, const char *s, long lo, long hi, long *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (*end == 'k' || *end == 'K')
        v *= 1024, end++;
    if (errno || *end || end == s || v < lo || v > hi) {
        fprintf(stderr, "radlads generate: %s expects an integer in [%ld, %ld], got \"%s\"\n", opt, lo, hi, s);
        return -1;
    }
    *out = v;
    return 0;
}

static int parse_real(const char *opt, const char *s, double *out)
{
    char *end;
    errno = 0;
    *out = strtod(s, &end);
    if (errno || *end || end == s || !isfinite(*out)) {
        fprintf(stderr, "radlads generate: %s expects a number, got \"%s\"\n", opt, s);
        return -1;
    }
    return 0;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static char *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    tok_bytes b = {0};
    char buf[65536];
    size_t n;
    int bad = 0;
    while (!bad && (n = fread(buf, 1, sizeof buf, f)) > 0)
        bad = tok_bytes_append(&b, buf, n) != 0;
    bad |= ferror(f) || tok_bytes_append(&b, "", 1) != 0; /* NUL-terminated for error messages */
    fclose(f);
    if (bad) {
        tok_bytes_free(&b);
        return NULL;
    }
    *len = b.n - 1;
    return b.v;
}

/* ---- streaming decode ----
 * Token bytes are collected in `pending`; everything before the last possibly incomplete UTF-8
 * sequence is written (invalid bytes as U+FFFD, as the final decode would). Cutting just before a
 * byte that is not a continuation byte never splits a maximal invalid subpart, so the text written
 * piece by piece equals tok_utf8_repair of all the bytes at once. */
typedef struct {
    const tok_tokenizer *tok;
    tok_bytes pending, repaired;
    FILE *out;
} text_stream;

static size_t stream_safe_cut(const char *p, size_t len)
{
    for (size_t j = 1; j <= 3 && j <= len; j++) {
        const unsigned char b = (unsigned char)p[len - j];
        if ((b & 0xC0) == 0x80)
            continue;
        const size_t need = b >= 0xF0 && b <= 0xF4 ? 4 : b >= 0xE0 && b < 0xF0 ? 3 : b >= 0xC2 && b < 0xE0 ? 2 : 1;
        return need > j ? len - j : len;
    }
    return len;
}

static int stream_flush(text_stream *s, int final)
{
    const size_t cut = final ? s->pending.n : stream_safe_cut(s->pending.v, s->pending.n);
    if (cut == 0)
        return 0;
    s->repaired.n = 0;
    if (tok_utf8_repair(s->pending.v, cut, &s->repaired) < 0)
        return -1;
    if (s->repaired.n && fwrite(s->repaired.v, 1, s->repaired.n, s->out) != s->repaired.n)
        return -1;
    memmove(s->pending.v, s->pending.v + cut, s->pending.n - cut);
    s->pending.n -= cut;
    return fflush(s->out) ? -1 : 0;
}

static int stream_token(text_stream *s, int32_t id)
{
    const char *bytes;
    size_t len;
    char unknown[32];
    if (tok_id_bytes(s->tok, (uint32_t)id, &bytes, &len) != 0) {
        len = (size_t)snprintf(unknown, sizeof unknown, "<|id=%d|>", (int)id);
        bytes = unknown;
    }
    if (tok_bytes_append(&s->pending, bytes, len) != 0)
        return -1;
    return stream_flush(s, 0);
}

/* ---- bench ---- */

static int cmp_double(const void *a, const void *b)
{
    const double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static int run_bench(rl_gen *g, const long *lengths, int n_lengths, int steps, uint64_t seed, int threads)
{
    const rl_model_config *c = rl_gen_config(g);
    char err[1024];
    int32_t *ids = malloc(sizeof *ids * (size_t)rl_gen_max_pos(g));
    float *logits = malloc(sizeof *logits * (size_t)c->vocab);
    double *lat = malloc(sizeof *lat * (size_t)steps);
    if (!ids || !logits || !lat) {
        free(ids), free(logits), free(lat);
        fprintf(stderr, "radlads generate: out of memory\n");
        return 1;
    }
    printf("model: %s %s, %d layers, hidden %d, %d heads (%d kv) × %d, vocab %d; cpu, %d threads\n",
           rl_gen_kind(g), rl_model_arch_name(c->arch), c->layers, c->hidden, c->heads, c->kv_heads, c->head_dim,
           c->vocab, threads);
    printf("%8s %14s %14s %14s %14s\n", "context", "prompt tok/s", "step ms p50", "step ms p90", "state MiB");
    printf("(step: one token at context L..L+%d, logits and greedy choice included; state: KV cache or\n"
           " recurrent state at context L)\n", steps);
    int rc = 0;
    for (int li = 0; li < n_lengths && !rc; li++) {
        const int L = (int)lengths[li];
        uint64_t rng = seed + (uint64_t)li;
        for (int i = 0; i < L + steps; i++) { /* splitmix64 step, reduced to the vocabulary */
            uint64_t z = (rng += 0x9E3779B97F4A7C15ull);
            z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
            z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
            ids[i] = (int32_t)((z ^ (z >> 31)) % (uint64_t)c->vocab);
        }
        rc = rl_gen_reset(g, err, sizeof err);
        const double t0 = now_s();
        if (!rc)
            rc = rl_gen_feed(g, ids, L, logits, 0, err, sizeof err);
        const double prompt_s = now_s() - t0;
        const double state_bytes = rl_gen_state_bytes(g); /* at context L, before the steps */
        const rl_sample_params greedy = {.temperature = 0, .top_k = 0, .top_p = 1};
        for (int s = 0; s < steps && !rc; s++) {
            const double t1 = now_s();
            rc = rl_gen_feed(g, ids + L + s, 1, logits, 0, err, sizeof err);
            (void)rl_gen_sample(g, logits, &greedy, &rng);
            lat[s] = (now_s() - t1) * 1e3;
        }
        if (rc)
            break;
        qsort(lat, (size_t)steps, sizeof *lat, cmp_double);
        printf("%8d %14.0f %14.3f %14.3f %14.3f\n", L, L / prompt_s, lat[steps / 2], lat[(steps * 9) / 10],
               state_bytes / 1048576.0);
        fflush(stdout);
    }
    if (rc)
        fprintf(stderr, "radlads generate: %s\n", err);
    free(ids), free(logits), free(lat);
    return rc ? 1 : 0;
}

/* ---- the verb ---- */

static int file_exists(const char *path)
{
    struct stat sb;
    return stat(path, &sb) == 0 && S_ISREG(sb.st_mode);
}

int cmd_generate(int argc, char **argv)
{
    enum { O_MODEL = 1000, O_PROMPT, O_PROMPT_FILE, O_MAX, O_TEMP, O_TOPK, O_TOPP, O_SEED, O_TOK, O_EOS, O_ECHO,
           O_QUIET, O_THREADS, O_CHUNK, O_BENCH, O_BLEN, O_BSTEPS, O_HELP };
    static const struct option opts[] = {
        {"model", 1, 0, O_MODEL},         {"prompt", 1, 0, O_PROMPT},     {"prompt-file", 1, 0, O_PROMPT_FILE},
        {"max-tokens", 1, 0, O_MAX},      {"temperature", 1, 0, O_TEMP},  {"top-k", 1, 0, O_TOPK},
        {"top-p", 1, 0, O_TOPP},          {"seed", 1, 0, O_SEED},         {"tokenizer", 1, 0, O_TOK},
        {"ignore-eos", 0, 0, O_EOS},      {"echo", 0, 0, O_ECHO},         {"quiet", 0, 0, O_QUIET},
        {"threads", 1, 0, O_THREADS},     {"prefill-chunk", 1, 0, O_CHUNK}, {"bench", 0, 0, O_BENCH},
        {"bench-lengths", 1, 0, O_BLEN},  {"bench-steps", 1, 0, O_BSTEPS}, {"help", 0, 0, O_HELP},
        {0, 0, 0, 0}};
    const char *model_dir = NULL, *prompt = NULL, *prompt_file = NULL, *tok_path = NULL;
    long max_tokens = 128, top_k = 0, threads = 0, chunk = 512, bench_steps = 32, v;
    long lengths[16] = {1024, 4096, 16384};
    int n_lengths = 3, ignore_eos = 0, echo = 0, quiet = 0, bench = 0, have_seed = 0;
    double temperature = 1.0, top_p = 1.0;
    uint64_t seed = 0;
    optind = 1;
    int o;
    while ((o = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        int bad = 0;
        switch (o) {
        case O_MODEL: model_dir = optarg; break;
        case O_PROMPT: prompt = optarg; break;
        case O_PROMPT_FILE: prompt_file = optarg; break;
        case O_TOK: tok_path = optarg; break;
        case O_MAX: bad = parse_long("--max-tokens", optarg, 0, 1 << 24, &max_tokens); break;
        case O_TOPK: bad = parse_long("--top-k", optarg, 0, 1 << 30, &top_k); break;
        case O_THREADS: bad = parse_long("--threads", optarg, 1, 1024, &threads); break;
        case O_CHUNK: bad = parse_long("--prefill-chunk", optarg, 1, 1 << 20, &chunk); break;
        case O_BSTEPS: bad = parse_long("--bench-steps", optarg, 1, 1 << 20, &bench_steps); break;
        case O_SEED: bad = parse_long("--seed", optarg, 0, 0x7fffffffffffffffL, &v), seed = (uint64_t)v;
            have_seed = 1;
            break;
        case O_TEMP:
            bad = parse_real("--temperature", optarg, &temperature);
            if (!bad && temperature < 0) {
                fprintf(stderr, "radlads generate: --temperature must be >= 0 (0 = greedy), got %s\n", optarg);
                bad = 1;
            }
            break;
        case O_TOPP:
            bad = parse_real("--top-p", optarg, &top_p);
            if (!bad && !(top_p > 0 && top_p <= 1)) {
                fprintf(stderr, "radlads generate: --top-p must lie in (0, 1] (1 = no nucleus cut), got %s\n",
                        optarg);
                bad = 1;
            }
            break;
        case O_BLEN: {
            n_lengths = 0;
            char *list = strdup(optarg), *save = NULL;
            for (char *t = strtok_r(list, ",", &save); t && !bad; t = strtok_r(NULL, ",", &save)) {
                if (n_lengths == (int)(sizeof lengths / sizeof lengths[0])) {
                    fprintf(stderr, "radlads generate: --bench-lengths takes at most 16 lengths\n");
                    bad = 1;
                } else {
                    bad = parse_long("--bench-lengths", t, 1, 1 << 24, &lengths[n_lengths++]);
                }
            }
            free(list);
            if (!bad && n_lengths == 0) {
                fprintf(stderr, "radlads generate: --bench-lengths expects lengths like 1k,4k,16k\n");
                bad = 1;
            }
            break;
        }
        case O_EOS: ignore_eos = 1; break;
        case O_ECHO: echo = 1; break;
        case O_QUIET: quiet = 1; break;
        case O_BENCH: bench = 1; break;
        case O_HELP: generate_usage(stdout); return 0;
        default: generate_usage(stderr); return 2;
        }
        if (bad)
            return 2;
    }
    if (optind < argc) {
        fprintf(stderr, "radlads generate: unexpected argument \"%s\"\n", argv[optind]);
        return 2;
    }
    if (!model_dir) {
        fprintf(stderr, "radlads generate: --model DIR is required (a teacher or RADLADS student folder)\n");
        generate_usage(stderr);
        return 2;
    }
    if (!bench && !prompt == !prompt_file) {
        fprintf(stderr, "radlads generate: give exactly one of --prompt TEXT or --prompt-file F\n");
        return 2;
    }
    char config[4200];
    snprintf(config, sizeof config, "%s/config.json", model_dir);
    if (!file_exists(config)) {
        fprintf(stderr, "radlads generate: %s: no such file; --model must be a model folder holding config.json "
                        "and safetensors\n", config);
        return 2;
    }
    if (!have_seed)
        seed = (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32);
    char err[1024];
    rl_backend *be = NULL;
    rl_backend_options bo = {.kind = RL_BACKEND_CPU, .num_threads = (int)threads};
    if (rl_backend_create(&be, &bo, err, sizeof err)) {
        fprintf(stderr, "radlads generate: %s\n", err);
        return 1;
    }
    rl_gen *g = NULL;
    int rc = 0;
    if (bench) {
        long max_len = 0;
        for (int i = 0; i < n_lengths; i++)
            max_len = lengths[i] > max_len ? lengths[i] : max_len;
        rc = rl_gen_open(&g, be, model_dir, (int)(max_len + bench_steps), (int)chunk, err, sizeof err);
        if (rc)
            fprintf(stderr, "radlads generate: %s\n", err);
        else
            rc = run_bench(g, lengths, n_lengths, (int)bench_steps, seed, rl_backend_num_threads(be));
        rl_gen_close(g);
        rl_backend_destroy(be);
        return rc ? 1 : 0;
    }

    /* the tokenizer: --tokenizer, else the model folder's tokenizer.json, else bytes */
    char tok_json[4200];
    snprintf(tok_json, sizeof tok_json, "%s/tokenizer.json", model_dir);
    const char *tok_src = tok_path ? tok_path : file_exists(tok_json) ? model_dir : TOK_BUILTIN_BYTES;
    tok_tokenizer *tok = NULL;
    tok_state *ts = NULL;
    tok_ids prompt_ids = {0};
    char *text = NULL;
    size_t text_len = 0;
    rc = strcmp(tok_src, TOK_BUILTIN_BYTES) == 0 ? tok_load_builtin(tok_src, &tok, err, sizeof err)
                                                 : tok_load(tok_src, &tok, err, sizeof err);
    if (rc)
        fprintf(stderr, "radlads generate: tokenizer %s: %s\n", tok_src, err);
    if (!rc) {
        text = prompt ? strdup(prompt) : read_file(prompt_file, &text_len);
        if (prompt)
            text_len = strlen(prompt);
        if (!text) {
            fprintf(stderr, "radlads generate: %s: cannot read the prompt: %s\n", prompt_file, strerror(errno));
            rc = 2;
        }
    }
    if (!rc && !(ts = tok_state_new(tok)))
        rc = 1, fprintf(stderr, "radlads generate: out of memory\n");
    if (!rc && tok_encode(ts, text, text_len, TOK_ENCODE_SPECIAL, &prompt_ids, err, sizeof err) != 0)
        rc = 1, fprintf(stderr, "radlads generate: encoding the prompt: %s\n", err);
    if (!rc && prompt_ids.n == 0)
        rc = 2, fprintf(stderr, "radlads generate: the prompt encodes to no tokens; give some text\n");
    if (!rc && prompt_ids.n + (size_t)max_tokens > 0x7fffffff)
        rc = 2, fprintf(stderr, "radlads generate: prompt plus --max-tokens is too long\n");
    const int n_prompt = (int)prompt_ids.n;
    if (!rc && rl_gen_open(&g, be, model_dir, n_prompt + (int)max_tokens + 1, (int)chunk, err, sizeof err))
        rc = 1, fprintf(stderr, "radlads generate: %s\n", err);
    const rl_model_config *c = g ? rl_gen_config(g) : NULL;
    int32_t *ids = rc ? NULL : malloc(sizeof *ids * ((size_t)n_prompt + 1));
    float *logits = rc ? NULL : malloc(sizeof *logits * (size_t)c->vocab);
    if (!rc && (!ids || !logits))
        rc = 1, fprintf(stderr, "radlads generate: out of memory\n");
    for (int i = 0; !rc && i < n_prompt; i++) {
        if (prompt_ids.v[i] >= (uint32_t)c->vocab) {
            fprintf(stderr, "radlads generate: the prompt's token %d has id %u, outside the model's vocabulary of "
                            "%d; is %s the model's tokenizer? (--tokenizer)\n", i, prompt_ids.v[i], c->vocab,
                    tok_src);
            rc = 2;
        }
        ids[i] = (int32_t)prompt_ids.v[i];
    }
    const int64_t eos = ignore_eos || rc ? -1 : c->eos_token_id >= 0 ? c->eos_token_id : tok_eos_id(tok);
    text_stream out = {.tok = tok, .out = stdout};
    if (!rc && echo && (fwrite(text, 1, text_len, stdout) != text_len || fflush(stdout)))
        rc = 1;
    int generated = 0;
    const char *stop = "max-tokens";
    double t_prompt = 0, t_gen = 0;
    if (!rc) {
        const double t0 = now_s();
        rc = rl_gen_feed(g, ids, n_prompt, logits, 0, err, sizeof err);
        t_prompt = now_s() - t0;
        const rl_sample_params sp = {.temperature = temperature, .top_k = (int)top_k, .top_p = top_p};
        uint64_t rng = seed;
        const double t1 = now_s();
        while (!rc && generated < max_tokens) {
            const int32_t next = (int32_t)rl_gen_sample(g, logits, &sp, &rng);
            if (next == eos) {
                stop = "eos";
                break;
            }
            generated++;
            if (stream_token(&out, next) != 0) {
                snprintf(err, sizeof err, "writing the text: %s", strerror(errno));
                rc = 1;
            } else if (generated < max_tokens) {
                rc = rl_gen_feed(g, &next, 1, logits, 0, err, sizeof err);
            }
        }
        t_gen = now_s() - t1;
        if (!rc && stream_flush(&out, 1) != 0)
            rc = 1, snprintf(err, sizeof err, "writing the text: %s", strerror(errno));
        if (rc)
            fprintf(stderr, "\nradlads generate: %s\n", err);
        else if (!quiet)
            fprintf(stderr,
                    "\n[%s %s · tokenizer %s · prompt %d tokens in %.3f s (%.0f tok/s) · %d new tokens in %.3f s "
                    "(%.1f tok/s) · stopped: %s · seed %llu]\n",
                    rl_gen_kind(g), rl_model_arch_name(c->arch), tok_src, n_prompt, t_prompt, n_prompt / t_prompt,
                    generated, t_gen, generated / (t_gen > 0 ? t_gen : 1e-9), stop, (unsigned long long)seed);
    }
    tok_bytes_free(&out.pending);
    tok_bytes_free(&out.repaired);
    free(ids), free(logits), free(text);
    tok_ids_free(&prompt_ids);
    tok_state_free(ts);
    tok_free(tok);
    rl_gen_close(g);
    rl_backend_destroy(be);
    return rc == 0 ? 0 : rc == 2 ? 2 : 1;
}
