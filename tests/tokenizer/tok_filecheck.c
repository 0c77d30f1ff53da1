/* tok_filecheck TOKENIZER TOKEN_FILE EOS_ID SPECIAL INPUT...: the token file holds, document by
 * document, exactly tok_encode(document) followed by EOS_ID (-1: none). Inputs are uncompressed:
 * a .jsonl file is one document per non-blank line (field "text"), any other file one document. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tokenizer.h"

static tok_tokenizer *t;
static tok_state *s;
static tok_file *f;
static uint64_t doc;
static long eos;
static unsigned flags;
static int bad;

static void check_doc(const char *text, size_t len, const char *where)
{
    tok_ids want = {0};
    char err[512];
    if (tok_encode(s, text, len, flags, &want, err, sizeof err)) {
        printf("%s: encode failed: %s\n", where, err);
        bad++;
        return;
    }
    if (eos >= 0) {
        tok_ids_reserve(&want, 1);
        want.v[want.n++] = (uint32_t)eos;
    }
    uint64_t b, e;
    if (tok_file_doc(f, doc, &b, &e)) {
        printf("%s: the token file has only %llu documents\n", where, (unsigned long long)doc);
        bad++;
    } else {
        uint32_t *got = malloc((e - b + 1) * sizeof *got);
        if (e - b != want.n || tok_file_read(f, b, e - b, got, err, sizeof err) ||
            (want.n && memcmp(got, want.v, want.n * sizeof *got) != 0)) {
            printf("%s: document %llu differs (%llu tokens in the file, %zu encoded)\n", where,
                   (unsigned long long)doc, (unsigned long long)(e - b), want.n);
            bad++;
        }
        free(got);
    }
    doc++;
    tok_ids_free(&want);
}

int main(int argc, char **argv)
{
    if (argc < 6) {
        fprintf(stderr, "usage: tok_filecheck TOKENIZER TOKEN_FILE EOS_ID SPECIAL INPUT...\n");
        return 2;
    }
    char err[512];
    if (tok_load(argv[1], &t, err, sizeof err) || tok_file_open(argv[2], &f, err, sizeof err)) {
        fprintf(stderr, "tok_filecheck: %s\n", err);
        return 1;
    }
    eos = atol(argv[3]);
    flags = atoi(argv[4]) ? TOK_ENCODE_SPECIAL : 0;
    s = tok_state_new(t);
    for (int i = 5; i < argc; i++) {
        FILE *in = fopen(argv[i], "rb");
        if (!in) {
            printf("%s: cannot open\n", argv[i]);
            return 1;
        }
        tok_bytes all = {0};
        char buf[65536];
        size_t n;
        while ((n = fread(buf, 1, sizeof buf, in)) > 0)
            tok_bytes_append(&all, buf, n);
        fclose(in);
        if (strstr(argv[i], ".jsonl")) {
            char *p = all.v, *end = all.v + all.n;
            while (p && p < end) {
                char *nl = memchr(p, '\n', (size_t)(end - p));
                size_t len = nl ? (size_t)(nl - p) : (size_t)(end - p);
                json_t *j = len ? json_loadb(p, len, JSON_ALLOW_NUL, NULL) : NULL;
                json_t *v = json_object_get(j, "text");
                if (json_is_string(v)) check_doc(json_string_value(v), json_string_length(v), argv[i]);
                json_decref(j);
                p = nl ? nl + 1 : NULL;
            }
        } else {
            check_doc(all.v ? all.v : "", all.n, argv[i]);
        }
        tok_bytes_free(&all);
    }
    if (doc != tok_file_n_docs(f)) {
        printf("the token file has %llu documents, the inputs %llu\n", (unsigned long long)tok_file_n_docs(f),
               (unsigned long long)doc);
        bad++;
    }
    printf("tok_filecheck %s: %llu documents, %llu tokens, %d differences\n", argv[2],
           (unsigned long long)doc, (unsigned long long)tok_file_n_tokens(f), bad);
    tok_file_close(f);
    tok_state_free(s);
    tok_free(t);
    return bad ? 1 : 0;
}
