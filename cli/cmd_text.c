/* Tokenizer verbs: `radlads tokenize` (corpus -> token files), `radlads encode` (text -> ids as a
 * JSON array) and `radlads decode` (ids -> text). They work on files only, never on the daemon. */
#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "tokenizer.h"

static const char tokenize_usage[] =
    "usage: radlads tokenize --tokenizer DIR|FILE|bytes --in FILE... --out PREFIX\n"
    "                        [--format radlads|binidx] [--threads N] [--input-format auto|text|jsonl]\n"
    "                        [--text-field NAME] [--eos TOKEN|none] [--special] [--no-progress]\n"
    "                        [--write-tokenizer DIR]\n"
    "  --tokenizer bytes: the built-in byte vocabulary (id = byte, <|endoftext|> = 256, 257 ids).\n"
    "  --write-tokenizer DIR: also write the tokenizer's tokenizer.json (+ tokenizer_config.json)\n"
    "  into DIR, e.g. the folder of a model made with `radlads init-model --vocab 257`.\n"
    "  Inputs: plain text (each file is one document) or JSON lines (one document per line, its\n"
    "  text in --text-field, default \"text\"; chosen by a .json/.jsonl name unless --input-format),\n"
    "  either possibly zstd-compressed. Every document is followed by the EOS token (tokenizer_config\n"
    "  eos_token, else <|endoftext|> / <|end_of_text|> / </s>; --eos overrides). Output: PREFIX.tok\n"
    "  (radlads) or PREFIX.bin + PREFIX.idx (binidx), identical for every --threads value.\n"
    "  --special: special-token text in documents becomes the special token (default: plain text).\n";
static const char encode_usage[] =
    "usage: radlads encode --tokenizer DIR|FILE|bytes [--text S] [--special]\n"
    "  Prints the ids of S (or of standard input) as a JSON array. Without --special, special\n"
    "  tokens written in the text are encoded as plain text; with it they become their ids, as\n"
    "  HuggingFace tokenizers' encode(text, add_special_tokens=False) does.\n";
static const char decode_usage[] =
    "usage: radlads decode --tokenizer DIR|FILE|bytes [--ids 1,2,3] [--skip-special]\n"
    "  Prints the text of the ids (or of a JSON array on standard input), exactly, with no newline\n"
    "  added; bytes that are not valid UTF-8 print as U+FFFD, as HuggingFace's decode does.\n";

static tok_tokenizer *load(const char *verb, const char *path)
{
    if (!path) {
        fprintf(stderr, "radlads %s: --tokenizer is required (a tokenizer.json or the model folder)\n", verb);
        return NULL;
    }
    char err[1024];
    tok_tokenizer *t;
    int rc = strcmp(path, TOK_BUILTIN_BYTES) == 0 ? tok_load_builtin(path, &t, err, sizeof err)
                                                  : tok_load(path, &t, err, sizeof err);
    if (rc) {
        fprintf(stderr, "radlads %s: %s\n", verb, err);
        return NULL;
    }
    return t;
}

static int read_stdin(tok_bytes *b)
{
    char buf[65536];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, stdin)) > 0)
        if (tok_bytes_append(b, buf, n)) return -1;
    return ferror(stdin) ? -1 : 0;
}

int cmd_encode(int argc, char **argv)
{
    static const struct option opts[] = {{"tokenizer", required_argument, 0, 't'},
                                         {"text", required_argument, 0, 'x'},
                                         {"special", no_argument, 0, 's'},
                                         {"help", no_argument, 0, 'h'},
                                         {0, 0, 0, 0}};
    const char *tok_path = NULL, *text = NULL;
    unsigned flags = 0;
    int o;
    optind = 0;
    while ((o = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        if (o == 't')
            tok_path = optarg;
        else if (o == 'x')
            text = optarg;
        else if (o == 's')
            flags |= TOK_ENCODE_SPECIAL;
        else {
            fputs(encode_usage, o == 'h' ? stdout : stderr);
            return o == 'h' ? 0 : 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "radlads encode: unexpected argument \"%s\"; pass text with --text or on stdin\n",
                argv[optind]);
        return 2;
    }
    tok_tokenizer *t = load("encode", tok_path);
    if (!t) return 1;
    tok_bytes in = {0};
    size_t len = text ? strlen(text) : 0;
    if (!text) {
        if (read_stdin(&in)) {
            fprintf(stderr, "radlads encode: cannot read standard input: %s\n", strerror(errno));
            tok_free(t);
            return 1;
        }
        text = in.v ? in.v : "";
        len = in.n;
    }
    tok_state *s = tok_state_new(t);
    tok_ids ids = {0};
    char err[512];
    int rc = s ? tok_encode(s, text, len, flags, &ids, err, sizeof err) : TOK_ENOMEM;
    if (rc) {
        fprintf(stderr, "radlads encode: %s\n", s ? err : "out of memory");
    } else {
        putchar('[');
        for (size_t i = 0; i < ids.n; i++)
            printf(i ? ",%u" : "%u", ids.v[i]);
        puts("]");
    }
    tok_ids_free(&ids);
    tok_state_free(s);
    tok_bytes_free(&in);
    tok_free(t);
    return rc ? 1 : 0;
}

/* "1,2,3", "1 2 3" or "[1, 2, 3]". */
static int parse_ids(const char *s, tok_ids *ids)
{
    const char *p = s;
    while (*p) {
        while (*p == ' ' || *p == ',' || *p == '[' || *p == ']' || *p == '\n' || *p == '\t')
            p++;
        if (!*p) break;
        char *end;
        errno = 0;
        unsigned long long v = strtoull(p, &end, 10);
        if (end == p || errno || v > UINT32_MAX || *p == '-') return -1;
        if (tok_ids_reserve(ids, 1)) return -1;
        ids->v[ids->n++] = (uint32_t)v;
        p = end;
    }
    return 0;
}

static int ids_from_json(const char *text, size_t len, tok_ids *ids, char *err, size_t errlen)
{
    json_error_t je;
    json_t *a = json_loadb(text, len, 0, &je);
    if (!json_is_array(a)) {
        snprintf(err, errlen, "standard input is not a JSON array of ids (%s)", a ? "not an array" : je.text);
        json_decref(a);
        return -1;
    }
    size_t i;
    json_t *v;
    json_array_foreach(a, i, v)
    {
        if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) > UINT32_MAX ||
            tok_ids_reserve(ids, 1)) {
            snprintf(err, errlen, "element %zu of the JSON array is not an id (a non-negative integer)", i);
            json_decref(a);
            return -1;
        }
        ids->v[ids->n++] = (uint32_t)json_integer_value(v);
    }
    json_decref(a);
    return 0;
}

int cmd_decode(int argc, char **argv)
{
    static const struct option opts[] = {{"tokenizer", required_argument, 0, 't'},
                                         {"ids", required_argument, 0, 'i'},
                                         {"skip-special", no_argument, 0, 's'},
                                         {"help", no_argument, 0, 'h'},
                                         {0, 0, 0, 0}};
    const char *tok_path = NULL, *ids_arg = NULL;
    unsigned flags = 0;
    int o;
    optind = 0;
    while ((o = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        if (o == 't')
            tok_path = optarg;
        else if (o == 'i')
            ids_arg = optarg;
        else if (o == 's')
            flags |= TOK_DECODE_SKIP_SPECIAL;
        else {
            fputs(decode_usage, o == 'h' ? stdout : stderr);
            return o == 'h' ? 0 : 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "radlads decode: unexpected argument \"%s\"; pass ids with --ids or on stdin\n",
                argv[optind]);
        return 2;
    }
    tok_ids ids = {0};
    char err[512];
    if (ids_arg && parse_ids(ids_arg, &ids)) {
        fprintf(stderr, "radlads decode: --ids \"%s\" is not a comma-separated list of ids\n", ids_arg);
        tok_ids_free(&ids);
        return 2;
    }
    if (!ids_arg) {
        tok_bytes in = {0};
        int bad = read_stdin(&in) ? (snprintf(err, sizeof err, "cannot read standard input"), -1)
                                  : ids_from_json(in.v ? in.v : "", in.n, &ids, err, sizeof err);
        tok_bytes_free(&in);
        if (bad) {
            fprintf(stderr, "radlads decode: %s\n", err);
            tok_ids_free(&ids);
            return 2;
        }
    }
    tok_tokenizer *t = load("decode", tok_path);
    if (!t) {
        tok_ids_free(&ids);
        return 1;
    }
    tok_bytes raw = {0}, text = {0};
    int rc = tok_decode(t, ids.v, ids.n, flags, &raw, err, sizeof err);
    if (!rc && tok_utf8_repair(raw.v ? raw.v : "", raw.n, &text) < 0) rc = TOK_ENOMEM;
    if (rc)
        fprintf(stderr, "radlads decode: %s\n", rc == TOK_ENOMEM ? "out of memory" : err);
    else if (text.n)
        fwrite(text.v, 1, text.n, stdout);
    tok_bytes_free(&raw);
    tok_bytes_free(&text);
    tok_ids_free(&ids);
    tok_free(t);
    return rc ? 1 : 0;
}

static int write_file(const char *path, const char *text, size_t len)
{
    FILE *f = fopen(path, "wb");
    int ok = f && fwrite(text, 1, len, f) == len;
    if (f && fclose(f) != 0) ok = 0;
    if (!ok) fprintf(stderr, "radlads tokenize: %s: cannot write: %s\n", path, strerror(errno));
    return ok ? 0 : 1;
}

static int copy_into(const char *src, const char *dst)
{
    FILE *f = fopen(src, "rb");
    if (!f) return 0; /* an optional file that is not there */
    tok_bytes b = {0};
    char buf[65536];
    size_t n;
    int rc = 0;
    while (!rc && (n = fread(buf, 1, sizeof buf, f)) > 0)
        rc = tok_bytes_append(&b, buf, n) ? 1 : 0;
    fclose(f);
    if (!rc) rc = write_file(dst, b.v ? b.v : "", b.n);
    tok_bytes_free(&b);
    return rc;
}

/* --write-tokenizer DIR: the tokenizer (a built-in's JSON, or the files it was loaded from) into DIR. */
static int write_tokenizer(const char *tok_path, const char *dir)
{
    char a[4096], b[4096];
    snprintf(a, sizeof a, "%s/tokenizer.json", dir);
    snprintf(b, sizeof b, "%s/tokenizer_config.json", dir);
    if (strcmp(tok_path, TOK_BUILTIN_BYTES) == 0) {
        char *cfg, *json = tok_builtin_json(tok_path, &cfg);
        int rc = json ? write_file(a, json, strlen(json)) : 1;
        if (!rc) rc = write_file(b, cfg, strlen(cfg));
        free(json), free(cfg);
        return rc;
    }
    char src[4096];
    FILE *f = fopen(tok_path, "rb"); /* a file, or a folder (fopen of a folder fails on read, not here) */
    int is_file = f && fread(src, 1, 1, f) == 1;
    if (f) fclose(f);
    if (is_file) return copy_into(tok_path, a);
    snprintf(src, sizeof src, "%s/tokenizer.json", tok_path);
    int rc = copy_into(src, a);
    snprintf(src, sizeof src, "%s/tokenizer_config.json", tok_path);
    return rc ? rc : copy_into(src, b);
}

int cmd_tokenize(int argc, char **argv)
{
    static const struct option opts[] = {{"tokenizer", required_argument, 0, 't'},
                                         {"in", required_argument, 0, 'i'},
                                         {"out", required_argument, 0, 'o'},
                                         {"format", required_argument, 0, 'f'},
                                         {"threads", required_argument, 0, 'j'},
                                         {"input-format", required_argument, 0, 'k'},
                                         {"text-field", required_argument, 0, 'x'},
                                         {"eos", required_argument, 0, 'e'},
                                         {"special", no_argument, 0, 's'},
                                         {"no-progress", no_argument, 0, 'n'},
                                         {"write-tokenizer", required_argument, 0, 'w'},
                                         {"help", no_argument, 0, 'h'},
                                         {0, 0, 0, 0}};
    const char *tok_path = NULL, *eos = NULL, *write_dir = NULL;
    tok_corpus_opts co = {.format = TOK_FORMAT_RADLADS, .text_field = "text"};
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    co.threads = ncpu > 0 ? (int)ncpu : 1;
    co.progress = isatty(2);
    const char **inputs = calloc((size_t)argc + 1, sizeof *inputs);
    size_t n_inputs = 0;
    int o, rc = 0;
    optind = 0;
    while (inputs && (o = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        char *end;
        switch (o) {
        case 't':
            tok_path = optarg;
            break;
        case 'i':
            inputs[n_inputs++] = optarg;
            break;
        case 'o':
            co.out_prefix = optarg;
            break;
        case 'x':
            co.text_field = optarg;
            break;
        case 'e':
            eos = optarg;
            break;
        case 's':
            co.encode_flags |= TOK_ENCODE_SPECIAL;
            break;
        case 'n':
            co.progress = 0;
            break;
        case 'w':
            write_dir = optarg;
            break;
        case 'f':
            if (strcmp(optarg, "radlads") == 0)
                co.format = TOK_FORMAT_RADLADS;
            else if (strcmp(optarg, "binidx") == 0)
                co.format = TOK_FORMAT_BINIDX;
            else {
                fprintf(stderr, "radlads tokenize: --format %s: use radlads or binidx\n", optarg);
                rc = 2;
            }
            break;
        case 'k':
            if (strcmp(optarg, "auto") == 0)
                co.input_kind = TOK_INPUT_AUTO;
            else if (strcmp(optarg, "text") == 0)
                co.input_kind = TOK_INPUT_TEXT;
            else if (strcmp(optarg, "jsonl") == 0)
                co.input_kind = TOK_INPUT_JSONL;
            else {
                fprintf(stderr, "radlads tokenize: --input-format %s: use auto, text or jsonl\n", optarg);
                rc = 2;
            }
            break;
        case 'j':
            co.threads = (int)strtol(optarg, &end, 10);
            if (*end || co.threads < 1 || co.threads > 256) {
                fprintf(stderr, "radlads tokenize: --threads %s: use a number from 1 to 256\n", optarg);
                rc = 2;
            }
            break;
        default:
            fputs(tokenize_usage, o == 'h' ? stdout : stderr);
            free(inputs);
            return o == 'h' ? 0 : 2;
        }
    }
    if (!inputs) return 1;
    /* `--in a b c`: the names after the first are left over by getopt. */
    while (optind < argc)
        inputs[n_inputs++] = argv[optind++];
    if (!rc && (n_inputs == 0 || !co.out_prefix)) {
        fprintf(stderr, "radlads tokenize: %s is required\n%s", n_inputs ? "--out PREFIX" : "--in FILE",
                tokenize_usage);
        rc = 2;
    }
    tok_tokenizer *t = rc ? NULL : load("tokenize", tok_path);
    if (!rc && !t) rc = 1;
    if (!rc) {
        co.eos_id = tok_eos_id(t);
        if (eos && strcmp(eos, "none") == 0)
            co.eos_id = -1;
        else if (eos && (co.eos_id = tok_token_id(t, eos, strlen(eos))) < 0) {
            fprintf(stderr, "radlads tokenize: --eos \"%s\" is not a token of this tokenizer\n", eos);
            rc = 2;
        }
    }
    if (!rc && write_dir) rc = write_tokenizer(tok_path, write_dir);
    if (!rc) {
        co.inputs = inputs;
        co.n_inputs = n_inputs;
        tok_corpus_stats st;
        char err[1024];
        if (tok_corpus_run(t, &co, &st, err, sizeof err)) {
            fprintf(stderr, "radlads tokenize: %s\n", err);
            rc = 1;
        } else {
            const char *b = NULL;
            size_t bl = 0;
            if (co.eos_id >= 0) tok_id_bytes(t, (uint32_t)co.eos_id, &b, &bl);
            printf("tokenize: %llu documents, %llu tokens, %.2f MB of text in %.2f s (%.2f MB/s, %d "
                   "threads) -> %s%s (eos %.*s%s)\n",
                   (unsigned long long)st.docs, (unsigned long long)st.tokens, (double)st.bytes / 1e6,
                   st.seconds, st.seconds > 0 ? (double)st.bytes / 1e6 / st.seconds : 0.0, co.threads,
                   co.out_prefix, co.format == TOK_FORMAT_BINIDX ? ".bin/.idx" : ".tok", (int)bl,
                   b ? b : "none", "");
            if (st.replaced_utf8)
                fprintf(stderr,
                        "radlads tokenize: warning: %llu invalid UTF-8 sequences were replaced by "
                        "U+FFFD\n",
                        (unsigned long long)st.replaced_utf8);
        }
    }
    tok_free(t);
    free(inputs);
    return rc;
}
