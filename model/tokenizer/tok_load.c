/* Loading tokenizer.json: every field we depend on is checked, and anything we cannot reproduce
 * exactly is refused with a message that names the field, instead of tokenizing differently. */
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tok_int.h"

#define FAIL(...) tok__fail(err, errlen, TOK_EINVAL, __VA_ARGS__)

static int pool_add(char **pool, size_t *len, size_t *cap, const char *s, size_t n, tok__span *out)
{
    if (*len + n > UINT32_MAX) return TOK_ENOMEM; /* spans are 32-bit */
    if (*cap - *len < n) {
        size_t c = *cap ? *cap : 1 << 16;
        while (c - *len < n)
            c *= 2;
        char *v = realloc(*pool, c);
        if (!v) return TOK_ENOMEM;
        *pool = v;
        *cap = c;
    }
    memcpy(*pool + *len, s, n);
    out->off = (uint32_t)*len;
    out->len = (uint32_t)n;
    *len += n;
    return TOK_OK;
}

static const char *type_of(json_t *o)
{
    json_t *ty = json_object_get(o, "type");
    return json_is_string(ty) ? json_string_value(ty) : NULL;
}

/* A JSON integer id in [0, TOK__MAX_ID]. */
static bool get_id(json_t *v, uint32_t *id)
{
    if (!json_is_integer(v)) return false;
    json_int_t x = json_integer_value(v);
    if (x < 0 || x > TOK__MAX_ID) return false;
    *id = (uint32_t)x;
    return true;
}

static bool get_bool(json_t *o, const char *key, bool dflt)
{
    json_t *v = json_object_get(o, key);
    return json_is_boolean(v) ? json_is_true(v) : dflt;
}

static int load_normalizer(tok_tokenizer *t, json_t *n, const char *name, char *err, size_t errlen)
{
    if (!n || json_is_null(n)) return TOK_OK;
    const char *ty = type_of(n);
    if (ty && strcmp(ty, "NFC") == 0) {
        if (!tok__have_nfc())
            return FAIL("%s: normalizer NFC needs libutf8proc, which this build lacks; install "
                        "libutf8proc-dev and rebuild",
                        name);
        t->nfc = true;
        return TOK_OK;
    }
    if (ty && strcmp(ty, "Sequence") == 0) {
        json_t *list = json_object_get(n, "normalizers");
        if (!json_is_array(list)) return FAIL("%s: normalizer Sequence has no \"normalizers\" list", name);
        size_t i;
        json_t *el;
        json_array_foreach(list, i, el)
        {
            int rc = load_normalizer(t, el, name, err, errlen);
            if (rc) return rc;
        }
        return TOK_OK;
    }
    return FAIL("%s: normalizer type \"%s\" is not supported; supported: NFC, a Sequence of NFC, "
                "or null",
                name, ty ? ty : "(missing)");
}

static int add_step(tok_tokenizer *t, tok__step st, const char *name, char *err, size_t errlen)
{
    if (t->n_steps == TOK__MAX_STEPS) {
        if (st.re) pcre2_code_free(st.re);
        return FAIL("%s: pre_tokenizer has more than %d steps", name, TOK__MAX_STEPS);
    }
    t->steps[t->n_steps++] = st;
    return TOK_OK;
}

/* The split patterns of Qwen2/2.5/3 and of Llama 3, for tok__safe_cut. */
static const char *const known_patterns[2] = {
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| "
    "?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+",
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| "
    "?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+",
};

static int load_pretok(tok_tokenizer *t, json_t *p, const char *name, char *err, size_t errlen)
{
    const char *ty = type_of(p);
    if (!ty)
        return FAIL("%s: pre_tokenizer is missing or has no type; byte-level BPE needs a ByteLevel "
                    "pre-tokenizer",
                    name);
    if (strcmp(ty, "Sequence") == 0) {
        json_t *list = json_object_get(p, "pretokenizers");
        if (!json_is_array(list))
            return FAIL("%s: pre_tokenizer Sequence has no \"pretokenizers\" list", name);
        size_t i;
        json_t *el;
        json_array_foreach(list, i, el)
        {
            int rc = load_pretok(t, el, name, err, errlen);
            if (rc) return rc;
        }
        return TOK_OK;
    }
    tok__step st = {0};
    if (strcmp(ty, "ByteLevel") == 0) {
        st.kind = TOK__STEP_BYTELEVEL;
        st.add_prefix_space = get_bool(p, "add_prefix_space", true);
        if (get_bool(p, "use_regex", true)) {
            st.re = tok__regex_compile(tok__gpt2_pattern, strlen(tok__gpt2_pattern), false, err, errlen);
            if (!st.re) return TOK_EINVAL;
        }
        return add_step(t, st, name, err, errlen);
    }
    if (strcmp(ty, "Split") == 0) {
        st.kind = TOK__STEP_SPLIT;
        json_t *pat = json_object_get(p, "pattern");
        json_t *rx = json_object_get(pat, "Regex"), *lit = json_object_get(pat, "String");
        if (!json_is_string(rx) && !json_is_string(lit))
            return FAIL("%s: pre_tokenizer Split has no pattern.Regex or pattern.String", name);
        const char *beh = json_string_value(json_object_get(p, "behavior"));
        if (!beh || (strcmp(beh, "Isolated") != 0 && strcmp(beh, "Removed") != 0))
            return FAIL("%s: pre_tokenizer Split behavior \"%s\" is not supported; supported: "
                        "Isolated, Removed",
                        name, beh ? beh : "(missing)");
        st.removed = strcmp(beh, "Removed") == 0;
        /* invert only swaps which parts are matches; with Isolated every part is kept alone anyway. */
        if (st.removed && get_bool(p, "invert", false))
            return FAIL("%s: pre_tokenizer Split with behavior Removed and invert=true is not supported",
                        name);
        json_t *s = json_is_string(rx) ? rx : lit;
        for (int k = 0; k < 2 && s == rx; k++)
            if (strcmp(json_string_value(s), known_patterns[k]) == 0) st.known = true;
        st.re = tok__regex_compile(json_string_value(s), json_string_length(s), s == lit, err, errlen);
        if (!st.re) return TOK_EINVAL;
        return add_step(t, st, name, err, errlen);
    }
    return FAIL("%s: pre_tokenizer type \"%s\" is not supported; supported: Split, ByteLevel and a "
                "Sequence of them",
                name, ty);
}

static int check_decoder(json_t *d, const char *name, char *err, size_t errlen)
{
    const char *ty = type_of(d);
    if (ty && strcmp(ty, "ByteLevel") == 0) return TOK_OK;
    if (ty && strcmp(ty, "Sequence") == 0) {
        json_t *list = json_object_get(d, "decoders");
        size_t i;
        json_t *el;
        if (!json_is_array(list) || json_array_size(list) == 0)
            return FAIL("%s: decoder Sequence has no \"decoders\" list", name);
        json_array_foreach(list, i, el)
        {
            int rc = check_decoder(el, name, err, errlen);
            if (rc) return rc;
        }
        return TOK_OK;
    }
    return FAIL("%s: decoder type \"%s\" is not supported; byte-level BPE needs the ByteLevel "
                "decoder",
                name, ty ? ty : "(missing)");
}

/* Decoded bytes of one token string, as HF's ByteLevel decoder does it: when every character is
 * in the byte-level alphabet, the bytes it stands for; otherwise the string's own UTF-8. */
static int decode_piece(tok_tokenizer *t, const char *s, size_t len, tok__span *out)
{
    char tmp[256];
    char *buf = len <= sizeof tmp ? tmp : malloc(len);
    if (!buf) return TOK_ENOMEM;
    size_t n = 0;
    bool all = true;
    for (size_t i = 0; i < len;) {
        uint32_t cp;
        i += tok__utf8_decode((const unsigned char *)s + i, len - i, &cp);
        int b = tok__cp_to_byte(cp);
        if (b < 0) {
            all = false;
            break;
        }
        buf[n++] = (char)b;
    }
    int rc = all ? pool_add(&t->dec, &t->dec_len, &t->dec_cap, buf, n, out)
                 : pool_add(&t->dec, &t->dec_len, &t->dec_cap, s, len, out);
    if (buf != tmp) free(buf);
    return rc;
}

/* Adds a token to a byte trie; the first token with a given content keeps it (HF's trie lists
 * special tokens first, then the others, each in file order). */
static int trie_insert(tok__trie_node **nodes, uint32_t *n, const char *s, size_t len, int32_t token)
{
    if (*n == 0) {
        *nodes = calloc(1, sizeof **nodes);
        if (!*nodes) return TOK_ENOMEM;
        (*nodes)[0].token = -1;
        *n = 1;
    }
    uint32_t cur = 0;
    for (size_t i = 0; i < len; i++) {
        uint8_t c = (uint8_t)s[i];
        uint32_t ch = (*nodes)[cur].first_child;
        while (ch && (*nodes)[ch].byte != c)
            ch = (*nodes)[ch].next_sibling;
        if (!ch) {
            tok__trie_node *v = realloc(*nodes, (*n + 1) * sizeof *v);
            if (!v) return TOK_ENOMEM;
            *nodes = v;
            ch = (*n)++;
            v[ch] = (tok__trie_node){
                .first_child = 0, .next_sibling = v[cur].first_child, .token = -1, .byte = c};
            v[cur].first_child = ch;
        }
        cur = ch;
    }
    if ((*nodes)[cur].token < 0) (*nodes)[cur].token = token;
    return TOK_OK;
}

static int load_added(tok_tokenizer *t, json_t *list, const char *name, char *err, size_t errlen)
{
    size_t n = json_is_array(list) ? json_array_size(list) : 0;
    if (list && !json_is_null(list) && !json_is_array(list))
        return FAIL("%s: added_tokens is not a list", name);
    t->added = calloc(n ? n : 1, sizeof *t->added);
    if (!t->added) return TOK_ENOMEM;
    for (size_t i = 0; i < n; i++) {
        json_t *o = json_array_get(list, i), *c = json_object_get(o, "content");
        tok__added *a = &t->added[t->n_added];
        if (!json_is_object(o) || !get_id(json_object_get(o, "id"), &a->id))
            return FAIL("%s: added_tokens[%zu] has no valid \"id\" (an integer 0..%u)", name, i, TOK__MAX_ID);
        if (!json_is_string(c) || json_string_length(c) == 0)
            return FAIL("%s: added_tokens[%zu] has no non-empty \"content\"", name, i);
        a->special = get_bool(o, "special", false);
        a->normalized = get_bool(o, "normalized", !a->special);
        a->single_word = get_bool(o, "single_word", false);
        a->lstrip = get_bool(o, "lstrip", false);
        a->rstrip = get_bool(o, "rstrip", false);
        if (pool_add(&t->pool, &t->pool_len, &t->pool_cap, json_string_value(c), json_string_length(c),
                     &a->content))
            return TOK_ENOMEM;
        t->n_added++;
    }
    return TOK_OK;
}

/* The tries hold special tokens first, then the others; normalized ones are matched after NFC. */
static int build_tries(tok_tokenizer *t)
{
    tok_state tmp = {.t = t};
    int rc = TOK_OK;
    for (int pass = 0; pass < 2 && !rc; pass++) {
        for (uint32_t i = 0; i < t->n_added && !rc; i++) {
            tok__added *a = &t->added[i];
            if (a->special != (pass == 0)) continue;
            const char *s = t->pool + a->content.off;
            size_t len = a->content.len;
            if (a->normalized && t->nfc) {
                tmp.norm.n = 0;
                rc = tok__nfc(&tmp, s, len, &tmp.norm);
                s = tmp.norm.v;
                len = tmp.norm.n;
            }
            int n = a->normalized;
            if (!rc) rc = trie_insert(&t->trie[n][1], &t->trie_n[n][1], s, len, (int32_t)i);
            if (!rc && !a->special) rc = trie_insert(&t->trie[n][0], &t->trie_n[n][0], s, len, (int32_t)i);
        }
    }
    tok_bytes_free(&tmp.norm);
    free(tmp.u32);
    return rc;
}

static int load_model(tok_tokenizer *t, json_t *model, uint32_t max_added, const char *name, char *err,
                      size_t errlen)
{
    const char *ty = type_of(model);
    json_t *vocab = json_object_get(model, "vocab"), *merges = json_object_get(model, "merges");
    if (ty && strcmp(ty, "BPE") != 0)
        return FAIL("%s: model.type is \"%s\"; only BPE is supported", name, ty);
    if (!json_is_object(vocab)) return FAIL("%s: model.vocab is missing or not an object", name);
    if (!json_is_array(merges)) return FAIL("%s: model.merges is missing or not a list", name);
    json_t *v = json_object_get(model, "dropout");
    if (v && !json_is_null(v) && !(json_is_number(v) && json_number_value(v) == 0.0))
        return FAIL("%s: model.dropout is set, which makes encoding random; set it to null", name);
    if (get_bool(model, "byte_fallback", false))
        return FAIL("%s: model.byte_fallback=true (SentencePiece-style BPE) is not supported; only "
                    "byte-level BPE is",
                    name);
    const char *affix[] = {"continuing_subword_prefix", "end_of_word_suffix"};
    for (int i = 0; i < 2; i++) {
        v = json_object_get(model, affix[i]);
        if (json_is_string(v) && json_string_length(v) > 0)
            return FAIL("%s: model.%s=\"%s\" is not supported; byte-level BPE leaves it empty", name,
                        affix[i], json_string_value(v));
    }
    t->ignore_merges = get_bool(model, "ignore_merges", false);
    t->fuse_unk = get_bool(model, "fuse_unk", false);

    /* Ids first, to size the per-id tables. */
    uint32_t max_id = max_added, n_vocab = (uint32_t)json_object_size(vocab);
    const char *key;
    json_t *val;
    json_object_foreach(vocab, key, val)
    {
        uint32_t id = 0;
        if (!get_id(val, &id))
            return FAIL("%s: model.vocab[\"%.80s\"] is not an integer id in 0..%u", name, key, TOK__MAX_ID);
        if (id > max_id) max_id = id;
    }
    t->vocab_size = max_id + 1;
    t->vocab_str = malloc(t->vocab_size * sizeof *t->vocab_str);
    t->dec_span = malloc(t->vocab_size * sizeof *t->dec_span);
    t->special = calloc(t->vocab_size, 1);
    if (!t->vocab_str || !t->dec_span || !t->special || tok__strmap_init(&t->vocab, n_vocab))
        return TOK_ENOMEM;
    for (uint32_t i = 0; i < t->vocab_size; i++)
        t->vocab_str[i].len = t->dec_span[i].len = UINT32_MAX;

    void *it = json_object_iter(vocab);
    for (; it; it = json_object_iter_next(vocab, it)) {
        key = json_object_iter_key(it);
        size_t klen = json_object_iter_key_len(it);
        uint32_t id = 0;
        get_id(json_object_iter_value(it), &id);
        if (t->vocab_str[id].len != UINT32_MAX)
            return FAIL("%s: model.vocab gives id %u to both \"%.*s\" and \"%.80s\"", name, id,
                        (int)(t->vocab_str[id].len > 80 ? 80 : t->vocab_str[id].len),
                        t->pool + t->vocab_str[id].off, key);
        tok__span sp;
        if (pool_add(&t->pool, &t->pool_len, &t->pool_cap, key, klen, &sp)) return TOK_ENOMEM;
        t->vocab_str[id] = sp;
        if (tok__strmap_put(&t->vocab, t->pool, sp, id) == UINT32_MAX - 1) return TOK_ENOMEM;
    }

    for (int b = 0; b < 256; b++) {
        char u[4];
        size_t n = tok__utf8_encode(tok__byte_to_cp((uint8_t)b), u);
        t->byte_id[b] = tok__strmap_get(&t->vocab, t->pool, u, n);
    }
    t->unk_id = TOK__NO_ID;
    v = json_object_get(model, "unk_token");
    if (json_is_string(v)) {
        t->unk_id = tok__strmap_get(&t->vocab, t->pool, json_string_value(v), json_string_length(v));
        if (t->unk_id == TOK__NO_ID)
            return FAIL("%s: model.unk_token \"%.80s\" is not in model.vocab", name, json_string_value(v));
    }

    size_t n_merges = json_array_size(merges);
    if (n_merges > UINT32_MAX / 2) return FAIL("%s: model.merges has too many entries", name);
    if (tok__pairmap_init(&t->merges, n_merges)) return TOK_ENOMEM;
    tok_bytes cat = {0};
    int rc = TOK_OK;
    for (size_t i = 0; i < n_merges && !rc; i++) {
        json_t *m = json_array_get(merges, i);
        const char *a, *b;
        size_t la, lb;
        if (json_is_string(m)) { /* "a b": older files */
            a = json_string_value(m);
            const char *sp = memchr(a, ' ', json_string_length(m));
            if (!sp || memchr(sp + 1, ' ', json_string_length(m) - (size_t)(sp + 1 - a))) {
                rc = FAIL("%s: model.merges[%zu] = \"%.80s\" is not two tokens separated by one space", name,
                          i, a);
                break;
            }
            la = (size_t)(sp - a);
            b = sp + 1;
            lb = json_string_length(m) - la - 1;
        } else if (json_is_array(m) && json_array_size(m) == 2 && json_is_string(json_array_get(m, 0)) &&
                   json_is_string(json_array_get(m, 1))) {
            a = json_string_value(json_array_get(m, 0));
            la = json_string_length(json_array_get(m, 0));
            b = json_string_value(json_array_get(m, 1));
            lb = json_string_length(json_array_get(m, 1));
        } else {
            rc = FAIL("%s: model.merges[%zu] is neither \"a b\" nor [\"a\", \"b\"]", name, i);
            break;
        }
        uint32_t ia = tok__strmap_get(&t->vocab, t->pool, a, la);
        uint32_t ib = tok__strmap_get(&t->vocab, t->pool, b, lb);
        if (ia == TOK__NO_ID || ib == TOK__NO_ID) {
            rc = FAIL("%s: model.merges[%zu]: token \"%.*s\" is not in model.vocab", name, i,
                      (int)(ia == TOK__NO_ID ? la : lb), ia == TOK__NO_ID ? a : b);
            break;
        }
        cat.n = 0;
        if (tok_bytes_append(&cat, a, la) || tok_bytes_append(&cat, b, lb)) {
            rc = TOK_ENOMEM;
            break;
        }
        uint32_t im = tok__strmap_get(&t->vocab, t->pool, cat.v, cat.n);
        if (im == TOK__NO_ID) {
            rc = FAIL("%s: model.merges[%zu]: the merged token \"%.*s\" is not in model.vocab", name, i,
                      (int)cat.n, cat.v);
            break;
        }
        tok__pairmap_put(&t->merges, ia, ib, (uint32_t)i, im);
    }
    tok_bytes_free(&cat);
    return rc;
}

/* HF does not take added-token ids from the file: on load it gives each one, in file order, the
 * id of the same string in the model vocab (or of an earlier added token), else the next id after
 * the vocab and the added tokens so far. A file whose ids disagree would tokenize differently
 * under HF than it says, so it is refused. */
static int check_added_ids(tok_tokenizer *t, uint32_t n_vocab, const char *name, char *err, size_t errlen)
{
    int64_t max = -1;
    for (uint32_t i = 0; i < t->n_added; i++) {
        tok__added *a = &t->added[i];
        const char *c = t->pool + a->content.off;
        int64_t want = -1;
        for (uint32_t j = 0; j < i && want < 0; j++)
            if (t->added[j].content.len == a->content.len &&
                memcmp(t->pool + t->added[j].content.off, c, a->content.len) == 0)
                want = t->added[j].id;
        if (want < 0) {
            uint32_t v = tok__strmap_get(&t->vocab, t->pool, c, a->content.len);
            if (v != TOK__NO_ID) want = v;
        }
        if (want < 0) want = (max >= 0 && (max >= (int64_t)n_vocab || n_vocab == 0)) ? max + 1 : n_vocab;
        if (want != a->id)
            return FAIL("%s: added_tokens[%u] \"%.*s\" has id %u, but HuggingFace tokenizers gives it "
                        "id %lld (added tokens take the vocab's id for the same string, else the next "
                        "free id in file order); fix the id",
                        name, i, (int)(a->content.len > 80 ? 80 : a->content.len), c, a->id, (long long)want);
        if (want > max) max = want;
    }
    return TOK_OK;
}

static int load_eos(tok_tokenizer *t, const char *config, size_t config_len, const char *name, char *err,
                    size_t errlen)
{
    t->eos_id = -1;
    if (config) {
        json_error_t je;
        /* model_max_length is often 1e30 written as an integer, too big for json_int_t. */
        json_t *c = json_loadb(config, config_len, JSON_DECODE_INT_AS_REAL, &je);
        if (!c)
            return FAIL("tokenizer_config.json beside %s: not valid JSON (line %d: %s)", name, je.line,
                        je.text);
        json_t *e = json_object_get(c, "eos_token");
        if (json_is_object(e)) e = json_object_get(e, "content");
        if (json_is_string(e)) {
            t->eos_id = tok_token_id(t, json_string_value(e), json_string_length(e));
            if (t->eos_id < 0) {
                int rc = FAIL("tokenizer_config.json beside %s: eos_token \"%.80s\" is not a token of "
                              "tokenizer.json",
                              name, json_string_value(e));
                json_decref(c);
                return rc;
            }
        }
        json_decref(c);
    }
    const char *known[] = {"<|endoftext|>", "<|end_of_text|>", "</s>"};
    for (int i = 0; i < 3 && t->eos_id < 0; i++)
        t->eos_id = tok_token_id(t, known[i], strlen(known[i]));
    return TOK_OK;
}

int tok_load_json(const char *json, size_t len, const char *config, size_t config_len, const char *name,
                  tok_tokenizer **out, char *err, size_t errlen)
{
    *out = NULL;
    json_error_t je;
    json_t *root = json_loadb(json, len, JSON_ALLOW_NUL, &je);
    if (!root) return FAIL("%s: not valid JSON (line %d, column %d: %s)", name, je.line, je.column, je.text);
    tok_tokenizer *t = calloc(1, sizeof *t);
    int rc = t ? TOK_OK : TOK_ENOMEM;
    json_t *model = json_object_get(root, "model");
    if (!rc && !json_is_object(root)) rc = FAIL("%s: the top level is not a JSON object", name);
    if (!rc && !json_is_object(model))
        rc = FAIL("%s: no \"model\" object; is this a HuggingFace tokenizer.json?", name);
    if (!rc) rc = load_normalizer(t, json_object_get(root, "normalizer"), name, err, errlen);
    if (!rc) rc = load_added(t, json_object_get(root, "added_tokens"), name, err, errlen);
    uint32_t max_added = 0;
    for (uint32_t i = 0; !rc && i < t->n_added; i++)
        if (t->added[i].id > max_added) max_added = t->added[i].id;
    if (!rc) rc = load_model(t, model, max_added, name, err, errlen);
    if (!rc)
        rc = check_added_ids(t, (uint32_t)json_object_size(model ? json_object_get(model, "vocab") : NULL),
                             name, err, errlen);
    if (!rc) rc = load_pretok(t, json_object_get(root, "pre_tokenizer"), name, err, errlen);
    if (!rc && (t->n_steps == 0 || t->steps[t->n_steps - 1].kind != TOK__STEP_BYTELEVEL))
        rc = FAIL("%s: the pre_tokenizer must end with a ByteLevel step (byte-level BPE)", name);
    if (!rc) rc = check_decoder(json_object_get(root, "decoder"), name, err, errlen);
    /* Per-id pieces: an added token's content wins over the model's string for the same id. */
    for (uint32_t i = 0; !rc && i < t->n_added; i++) {
        tok__added *a = &t->added[i];
        t->special[a->id] = a->special;
        rc = decode_piece(t, t->pool + a->content.off, a->content.len, &t->dec_span[a->id]);
    }
    for (uint32_t id = 0; !rc && id < t->vocab_size; id++)
        if (t->dec_span[id].len == UINT32_MAX && t->vocab_str[id].len != UINT32_MAX)
            rc = decode_piece(t, t->pool + t->vocab_str[id].off, t->vocab_str[id].len, &t->dec_span[id]);
    if (!rc) rc = build_tries(t);
    if (!rc) rc = load_eos(t, config, config_len, name, err, errlen);
    if (!rc) t->fingerprint = tok__hash(json, len);
    if (!rc) tok__set_cut_rule(t);
    json_decref(root);
    if (rc) {
        if (rc == TOK_ENOMEM) tok__fail(err, errlen, rc, "%s: out of memory loading it", name);
        tok_free(t);
        return rc;
    }
    *out = t;
    return TOK_OK;
}

static int read_file(const char *path, char **data, size_t *len, char *err, size_t errlen)
{
    FILE *f = fopen(path, "rb");
    if (!f) return tok__fail(err, errlen, TOK_EIO, "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode)) {
        fclose(f);
        return tok__fail(err, errlen, TOK_EIO, "%s: not a regular file", path);
    }
    *data = malloc((size_t)st.st_size + 1);
    if (!*data) {
        fclose(f);
        return tok__fail(err, errlen, TOK_ENOMEM, "%s: out of memory reading it", path);
    }
    *len = fread(*data, 1, (size_t)st.st_size, f);
    int bad = ferror(f) || *len != (size_t)st.st_size;
    fclose(f);
    if (bad) {
        free(*data);
        return tok__fail(err, errlen, TOK_EIO, "%s: read error", path);
    }
    return TOK_OK;
}

int tok_load(const char *path, tok_tokenizer **out, char *err, size_t errlen)
{
    *out = NULL;
    struct stat st;
    if (stat(path, &st) != 0)
        return tok__fail(err, errlen, TOK_EIO,
                         "%s: %s; pass a tokenizer.json file or the model folder holding one", path,
                         strerror(errno));
    size_t plen = strlen(path);
    char *json_path = malloc(plen + 32), *cfg_path = malloc(plen + 32);
    if (!json_path || !cfg_path) {
        free(json_path);
        free(cfg_path);
        return TOK_ENOMEM;
    }
    if (S_ISDIR(st.st_mode)) {
        snprintf(json_path, plen + 32, "%s/tokenizer.json", path);
        snprintf(cfg_path, plen + 32, "%s/tokenizer_config.json", path);
    } else {
        snprintf(json_path, plen + 32, "%s", path);
        const char *slash = strrchr(path, '/');
        int dlen = slash ? (int)(slash - path) : 1;
        snprintf(cfg_path, plen + 32, "%.*s/tokenizer_config.json", dlen, slash ? path : ".");
    }
    char *json = NULL, *cfg = NULL;
    size_t json_len = 0, cfg_len = 0;
    int rc = read_file(json_path, &json, &json_len, err, errlen);
    if (!rc && access(cfg_path, F_OK) == 0) rc = read_file(cfg_path, &cfg, &cfg_len, err, errlen);
    if (!rc) rc = tok_load_json(json, json_len, cfg, cfg_len, json_path, out, err, errlen);
    free(json);
    free(cfg);
    free(json_path);
    free(cfg_path);
    return rc;
}

void tok_free(tok_tokenizer *t)
{
    if (!t) return;
    free(t->pool);
    free(t->dec);
    free(t->vocab_str);
    free(t->dec_span);
    free(t->special);
    tok__strmap_free(&t->vocab);
    tok__pairmap_free(&t->merges);
    free(t->added);
    for (int i = 0; i < 4; i++)
        free(t->trie[i / 2][i % 2]);
    for (int i = 0; i < t->n_steps; i++)
        pcre2_code_free(t->steps[i].re);
    free(t);
}

uint32_t tok_vocab_size(const tok_tokenizer *t)
{
    return t->vocab_size;
}
int64_t tok_eos_id(const tok_tokenizer *t)
{
    return t->eos_id;
}
uint64_t tok_fingerprint(const tok_tokenizer *t)
{
    return t->fingerprint;
}

int tok_is_special(const tok_tokenizer *t, uint32_t id)
{
    return id < t->vocab_size && t->special[id];
}

int64_t tok_token_id(const tok_tokenizer *t, const char *content, size_t len)
{
    for (uint32_t i = 0; i < t->n_added; i++)
        if (t->added[i].content.len == len && memcmp(t->pool + t->added[i].content.off, content, len) == 0)
            return t->added[i].id;
    uint32_t id = tok__strmap_get(&t->vocab, t->pool, content, len);
    return id == TOK__NO_ID ? -1 : (int64_t)id;
}

int tok_id_bytes(const tok_tokenizer *t, uint32_t id, const char **bytes, size_t *len)
{
    if (id >= t->vocab_size || t->dec_span[id].len == UINT32_MAX) return TOK_EINVAL;
    *bytes = t->dec + t->dec_span[id].off;
    *len = t->dec_span[id].len;
    return TOK_OK;
}
