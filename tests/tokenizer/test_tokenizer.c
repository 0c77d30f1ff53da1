/* Unit tests of model/tokenizer that need no outside reference:
 *   test_tokenizer malformed   — broken tokenizer.json files are refused with a message naming the
 *                                field (and loading a valid minimal file works);
 *   test_tokenizer tokfile     — token files round-trip through writer and reader in both formats,
 *                                and truncated or corrupt files are refused;
 *   test_tokenizer utf8        — invalid UTF-8 is replaced per maximal subpart. */
#include <jansson.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tokenizer.h"

static int failures;
#define CHECK(cond, ...)                                                                                     \
    do {                                                                                                     \
        if (!(cond)) {                                                                                       \
            printf("FAIL %s:%d: ", __FILE__, __LINE__);                                                      \
            printf(__VA_ARGS__);                                                                             \
            printf("\n");                                                                                    \
            failures++;                                                                                      \
        }                                                                                                    \
    } while (0)

/* GPT-2's byte -> code point map, written independently of the library's. */
static unsigned byte_cp(unsigned b)
{
    if ((b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255)) return b;
    unsigned n = 0;
    for (unsigned i = 0; i < b; i++)
        n += !((i >= 33 && i <= 126) || (i >= 161 && i <= 172) || (i >= 174 && i <= 255));
    return 256 + n;
}

static json_t *minimal_tokenizer(void)
{
    json_t *vocab = json_object();
    for (unsigned b = 0; b < 256; b++) {
        char u[8] = {0};
        unsigned c = byte_cp(b);
        if (c < 0x80)
            u[0] = (char)c;
        else {
            u[0] = (char)(0xC0 | c >> 6);
            u[1] = (char)(0x80 | (c & 0x3F));
        }
        json_object_set_new(vocab, u, json_integer(b));
    }
    json_object_set_new(vocab, "ab", json_integer(256));
    json_t *model = json_pack("{s:s, s:o, s:[s]}", "type", "BPE", "vocab", vocab, "merges", "a b");
    return json_pack("{s:[{s:i, s:s, s:b, s:b}], s:n, s:{s:s, s:b, s:b}, s:{s:s}, s:o}", "added_tokens", "id",
                     257, "content", "<|endoftext|>", "special", 1, "normalized", 0, "normalizer",
                     "pre_tokenizer", "type", "ByteLevel", "add_prefix_space", 0, "use_regex", 1, "decoder",
                     "type", "ByteLevel", "model", model);
}

/* Loads the minimal tokenizer after `mutate` changed it; expects failure with `want` in the
 * message (or success when want is NULL). */
static void expect(const char *label, void (*mutate)(json_t *), const char *config, const char *want)
{
    json_t *j = minimal_tokenizer();
    if (mutate) mutate(j);
    char *text = json_dumps(j, 0);
    char err[1024] = "";
    tok_tokenizer *t = NULL;
    int rc =
        tok_load_json(text, strlen(text), config, config ? strlen(config) : 0, "t.json", &t, err, sizeof err);
    if (!want)
        CHECK(rc == 0 && t, "%s: expected to load, got: %s", label, err);
    else
        CHECK(rc != 0 && !t && strstr(err, want), "%s: expected an error containing \"%s\", got rc=%d \"%s\"",
              label, want, rc, err);
    if (!want && t) {
        tok_state *s = tok_state_new(t);
        tok_ids ids = {0};
        CHECK(tok_encode(s, "ab<|endoftext|>", 15, TOK_ENCODE_SPECIAL, &ids, err, sizeof err) == 0 &&
                  ids.n == 2 && ids.v[0] == 256 && ids.v[1] == 257,
              "%s: \"ab<|endoftext|>\" should be [256, 257]", label);
        tok_ids_free(&ids);
        tok_state_free(s);
    }
    printf("%-44s %s\n", label, want ? err : "loads");
    tok_free(t);
    free(text);
    json_decref(j);
}

static json_t *model(json_t *j)
{
    return json_object_get(j, "model");
}
static void no_model(json_t *j)
{
    json_object_del(j, "model");
}
static void unigram(json_t *j)
{
    json_object_set_new(model(j), "type", json_string("Unigram"));
}
static void merge_unknown(json_t *j)
{
    json_array_append_new(json_object_get(model(j), "merges"), json_string("zz q"));
}
static void merge_result_missing(json_t *j)
{
    json_array_append_new(json_object_get(model(j), "merges"), json_string("c d"));
}
static void merge_three(json_t *j)
{
    json_array_append_new(json_object_get(model(j), "merges"), json_string("a b c"));
}
static void merge_not_pair(json_t *j)
{
    json_array_append_new(json_object_get(model(j), "merges"), json_integer(3));
}
static void merges_missing(json_t *j)
{
    json_object_del(model(j), "merges");
}
static void vocab_negative(json_t *j)
{
    json_object_set_new(json_object_get(model(j), "vocab"), "zz", json_integer(-4));
}
static void vocab_dup(json_t *j)
{
    json_object_set_new(json_object_get(model(j), "vocab"), "zz", json_integer(5));
}
static void vocab_huge(json_t *j)
{
    json_object_set_new(json_object_get(model(j), "vocab"), "zz", json_integer(4000000000LL));
}
static void lowercase(json_t *j)
{
    json_object_set_new(j, "normalizer", json_pack("{s:s}", "type", "Lowercase"));
}
static void no_pretok(json_t *j)
{
    json_object_del(j, "pre_tokenizer");
}
static void metaspace(json_t *j)
{
    json_object_set_new(j, "pre_tokenizer", json_pack("{s:s}", "type", "Metaspace"));
}
static void split_only(json_t *j)
{
    json_object_set_new(j, "pre_tokenizer",
                        json_pack("{s:s, s:{s:s}, s:s}", "type", "Split", "pattern", "Regex", "\\s+",
                                  "behavior", "Isolated"));
}
static void split_merged(json_t *j)
{
    json_object_set_new(j, "pre_tokenizer",
                        json_pack("{s:s, s:[{s:s, s:{s:s}, s:s}, {s:s, s:b}]}", "type", "Sequence",
                                  "pretokenizers", "type", "Split", "pattern", "Regex", "\\s+", "behavior",
                                  "MergedWithNext", "type", "ByteLevel", "use_regex", 0));
}
static void bad_regex(json_t *j)
{
    json_object_set_new(j, "pre_tokenizer",
                        json_pack("{s:s, s:[{s:s, s:{s:s}, s:s}, {s:s, s:b}]}", "type", "Sequence",
                                  "pretokenizers", "type", "Split", "pattern", "Regex", "([a-z", "behavior",
                                  "Isolated", "type", "ByteLevel", "use_regex", 0));
}
static void no_decoder(json_t *j)
{
    json_object_del(j, "decoder");
}
static void dropout(json_t *j)
{
    json_object_set_new(model(j), "dropout", json_real(0.1));
}
static void byte_fallback(json_t *j)
{
    json_object_set_new(model(j), "byte_fallback", json_true());
}
static void wrong_added_id(json_t *j)
{
    json_object_set_new(json_array_get(json_object_get(j, "added_tokens"), 0), "id", json_integer(300));
}
static void empty_added(json_t *j)
{
    json_object_set_new(json_array_get(json_object_get(j, "added_tokens"), 0), "content", json_string(""));
}
static void unk_missing(json_t *j)
{
    json_object_set_new(model(j), "unk_token", json_string("<unk>"));
}

static void test_malformed(void)
{
    expect("minimal valid file", NULL, NULL, NULL);
    expect("eos from tokenizer_config.json", NULL, "{\"eos_token\": {\"content\": \"<|endoftext|>\"}}", NULL);
    json_t *j = minimal_tokenizer();
    char *text = json_dumps(j, 0);
    char err[512];
    tok_tokenizer *t;
    CHECK(tok_load_json("{\"model\": ", 10, NULL, 0, "t.json", &t, err, sizeof err) != 0 &&
              strstr(err, "not valid JSON"),
          "truncated JSON: %s", err);
    printf("%-44s %s\n", "truncated JSON", err);
    CHECK(tok_load_json(text, strlen(text), "{\"eos_token\": \"</nope>\"}", 24, "t.json", &t, err,
                        sizeof err) != 0 &&
              strstr(err, "eos_token \"</nope>\" is not a token"),
          "bad eos: %s", err);
    printf("%-44s %s\n", "eos_token not a token", err);
    CHECK(tok_load("/nonexistent/tokenizer.json", &t, err, sizeof err) != 0 &&
              strstr(err, "pass a tokenizer.json file"),
          "missing file: %s", err);
    printf("%-44s %s\n", "missing file", err);
    free(text);
    json_decref(j);
    expect("no model", no_model, NULL, "no \"model\" object");
    expect("model.type Unigram", unigram, NULL, "model.type is \"Unigram\"; only BPE is supported");
    expect("merge of an unknown token", merge_unknown, NULL, "token \"zz\" is not in model.vocab");
    expect("merge whose result is missing", merge_result_missing, NULL,
           "the merged token \"cd\" is not in model.vocab");
    expect("merge of three tokens", merge_three, NULL, "is not two tokens separated by one space");
    expect("merge that is a number", merge_not_pair, NULL, "is neither \"a b\" nor");
    expect("merges missing", merges_missing, NULL, "model.merges is missing");
    expect("negative id", vocab_negative, NULL, "is not an integer id");
    expect("huge id", vocab_huge, NULL, "is not an integer id");
    expect("two tokens with one id", vocab_dup, NULL, "gives id 5 to both");
    expect("Lowercase normalizer", lowercase, NULL, "normalizer type \"Lowercase\" is not supported");
    expect("no pre_tokenizer", no_pretok, NULL, "pre_tokenizer is missing");
    expect("Metaspace pre_tokenizer", metaspace, NULL, "pre_tokenizer type \"Metaspace\"");
    expect("Split without ByteLevel", split_only, NULL, "must end with a ByteLevel step");
    expect("Split MergedWithNext", split_merged, NULL, "behavior \"MergedWithNext\" is not supported");
    expect("regex that does not compile", bad_regex, NULL, "does not compile");
    expect("no decoder", no_decoder, NULL, "decoder type \"(missing)\" is not supported");
    expect("dropout", dropout, NULL, "model.dropout is set");
    expect("byte_fallback", byte_fallback, NULL, "byte_fallback=true");
    expect("added token id HF would not give", wrong_added_id, NULL,
           "HuggingFace tokenizers gives it id 257");
    expect("added token without content", empty_added, NULL, "non-empty \"content\"");
    expect("unk_token not in vocab", unk_missing, NULL, "unk_token \"<unk>\" is not in model.vocab");
}

static void write_file(const char *dir, const char *prefix, tok_format fmt, uint32_t vocab,
                       const uint32_t *const *docs, const size_t *lens, size_t n)
{
    char path[512], err[512];
    snprintf(path, sizeof path, "%s/%s", dir, prefix);
    tok_writer *w;
    CHECK(tok_writer_open(path, fmt, vocab, 7, 99, &w, err, sizeof err) == 0, "open: %s", err);
    for (size_t i = 0; i < n; i++)
        CHECK(tok_writer_add_doc(w, docs[i], lens[i], err, sizeof err) == 0, "add: %s", err);
    CHECK(tok_writer_close(w, err, sizeof err) == 0, "close: %s", err);
}

static void check_read(const char *path, const uint32_t *const *docs, const size_t *lens, size_t n)
{
    char err[512];
    tok_file *f;
    if (tok_file_open(path, &f, err, sizeof err)) {
        CHECK(0, "%s: %s", path, err);
        return;
    }
    CHECK(tok_file_format(f) == TOK_FORMAT_BINIDX ? tok_file_eos_id(f) == -1 && tok_file_fingerprint(f) == 0
                                                 : tok_file_eos_id(f) == 7 && tok_file_fingerprint(f) == 99,
          "%s: eos/fingerprint", path);
    CHECK(tok_file_n_docs(f) == n, "%s: %llu docs", path, (unsigned long long)tok_file_n_docs(f));
    for (size_t d = 0; d < n && d < tok_file_n_docs(f); d++) {
        uint64_t b, e;
        uint32_t got[8];
        tok_file_doc(f, d, &b, &e);
        CHECK(e - b == lens[d], "%s doc %zu: %llu tokens, want %zu", path, d, (unsigned long long)(e - b),
              lens[d]);
        if (e - b == lens[d] && lens[d]) {
            CHECK(tok_file_read(f, b, lens[d], got, err, sizeof err) == 0, "read: %s", err);
            CHECK(memcmp(got, docs[d], lens[d] * 4) == 0, "%s doc %zu differs", path, d);
        }
    }
    CHECK(tok_file_read(f, tok_file_n_tokens(f), 1, (uint32_t[1]){0}, err, sizeof err) != 0 &&
              strstr(err, "past the end"),
          "read past end: %s", err);
    tok_file_close(f);
}

static void expect_open_error(const char *path, const char *want)
{
    char err[512] = "";
    tok_file *f = NULL;
    int rc = tok_file_open(path, &f, err, sizeof err);
    CHECK(rc != 0 && !f && strstr(err, want), "%s: want error \"%s\", got \"%s\"", path, want, err);
    printf("%-44s %s\n", want, err);
    tok_file_close(f);
}

static void truncate_to(const char *path, long delta)
{
    FILE *f = fopen(path, "r+b");
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fclose(f);
    CHECK(truncate(path, n + delta) == 0, "truncate %s", path);
}

static void test_tokfile(void)
{
    char dir[] = "/tmp/radlads-tokfile-XXXXXX";
    CHECK(mkdtemp(dir) != NULL, "mkdtemp");
    static const uint32_t d0[] = {1, 2, 3, 7}, d2[] = {65535, 7}, big[] = {70000, 5, 7};
    const uint32_t *docs[] = {d0, NULL, d2}, *docs_big[] = {big, d0};
    size_t lens[] = {4, 0, 2}, lens_big[] = {3, 4};
    char path[600];
    write_file(dir, "small", TOK_FORMAT_RADLADS, 65536, docs, lens, 3);
    write_file(dir, "large", TOK_FORMAT_RADLADS, 151669, docs_big, lens_big, 2);
    write_file(dir, "smallbi", TOK_FORMAT_BINIDX, 65536, docs, lens, 3);
    write_file(dir, "largebi", TOK_FORMAT_BINIDX, 151669, docs_big, lens_big, 2);
    snprintf(path, sizeof path, "%s/small.tok", dir);
    check_read(path, docs, lens, 3);
    snprintf(path, sizeof path, "%s/large", dir);
    check_read(path, docs_big, lens_big, 2);
    snprintf(path, sizeof path, "%s/smallbi", dir);
    check_read(path, docs, lens, 3);
    snprintf(path, sizeof path, "%s/largebi.bin", dir);
    check_read(path, docs_big, lens_big, 2);

    snprintf(path, sizeof path, "%s/small.tok", dir);
    truncate_to(path, -3);
    expect_open_error(path, "truncated or corrupt");
    snprintf(path, sizeof path, "%s/large.tok", dir);
    FILE *f = fopen(path, "r+b");
    fputs("XX", f);
    fclose(f);
    expect_open_error(path, "bad magic");
    snprintf(path, sizeof path, "%s/smallbi.bin", dir);
    truncate_to(path, -2);
    snprintf(path, sizeof path, "%s/smallbi", dir);
    expect_open_error(path, "but the index says");
    snprintf(path, sizeof path, "%s/largebi.idx", dir);
    truncate_to(path, -8);
    snprintf(path, sizeof path, "%s/largebi", dir);
    expect_open_error(path, "does not match its counts");
    snprintf(path, sizeof path, "%s/nothing", dir);
    expect_open_error(path, "no token file here");
    char cmd[700];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    CHECK(system(cmd) == 0, "cleanup");
}

static void repair_case(const char *in, size_t len, const char *want, long want_n)
{
    tok_bytes b = {0};
    long n = tok_utf8_repair(in, len, &b);
    CHECK(n == want_n && b.n == strlen(want) && memcmp(b.v, want, b.n) == 0,
          "repair: %ld replacements, want %ld", n, want_n);
    tok_bytes_free(&b);
}

static void test_utf8(void)
{
    repair_case("abc", 3, "abc", 0);
    repair_case("a\xff"
                "b",
                3,
                "a\xEF\xBF\xBD"
                "b",
                1);
    repair_case("\xe2\x82", 2, "\xEF\xBF\xBD", 1);                             /* truncated 3-byte sequence */
    repair_case("\xed\xa0\x80", 3, "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD", 3); /* surrogate */
    repair_case("\xf0\x9f\x98\x80", 4, "\xf0\x9f\x98\x80", 0);                 /* emoji */
    repair_case("\xc0\xaf", 2, "\xEF\xBF\xBD\xEF\xBF\xBD", 2);                 /* overlong */
    CHECK(tok_utf8_valid_prefix("ab\xe2\x82", 4) == 2, "valid prefix");
}

int main(int argc, char **argv)
{
    const char *what = argc > 1 ? argv[1] : "all";
    bool all = strcmp(what, "all") == 0;
    if (all || strcmp(what, "malformed") == 0) test_malformed();
    if (all || strcmp(what, "tokfile") == 0) test_tokfile();
    if (all || strcmp(what, "utf8") == 0) test_utf8();
    printf("test_tokenizer %s: %d failures\n", what, failures);
    return failures ? 1 : 0;
}
