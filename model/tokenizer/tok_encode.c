/* The encode pipeline above BPE (added tokens, normalization, pre-tokenization) and decoding. */
#include <stdlib.h>
#include <string.h>

#ifdef TOK_HAVE_UTF8PROC
#include <utf8proc.h>
#endif

#include "tok_int.h"

tok_state *tok_state_new(const tok_tokenizer *t)
{
    tok_state *s = calloc(1, sizeof *s);
    if (!s) return NULL;
    s->t = t;
    s->md = pcre2_match_data_create(1, NULL);
    s->mctx = pcre2_match_context_create(NULL);
    /* The default 32 KiB JIT stack overflows on long whitespace runs under \s+(?!\S). */
    s->jit_stack = pcre2_jit_stack_create(32 * 1024, 8 * 1024 * 1024, NULL);
    if (!s->md || !s->mctx || !s->jit_stack) {
        tok_state_free(s);
        return NULL;
    }
    pcre2_jit_stack_assign(s->mctx, NULL, s->jit_stack);
    return s;
}

void tok_state_free(tok_state *s)
{
    if (!s) return;
    pcre2_match_data_free(s->md);
    pcre2_match_context_free(s->mctx);
    pcre2_jit_stack_free(s->jit_stack);
    tok_bytes_free(&s->clean);
    tok_bytes_free(&s->norm);
    tok_bytes_free(&s->nfc_tmp);
    for (int i = 0; i < TOK__MAX_STEPS; i++)
        tok_bytes_free(&s->prefixed[i]);
    free(s->u32);
    free(s->bl);
    free(s->sym);
    free(s->heap);
    tok__cache_free(&s->cache);
    free(s);
}

/* ---- pre-tokenization ---------------------------------------------------------------------- */

static int pretokenize(tok_state *s, int step, const char *text, size_t len, tok_ids *out, char *err,
                       size_t errlen);

/* Splits text with re and passes every match and every gap between matches, in order, to the next
 * step (matches are dropped when `drop_matches`). Empty matches advance by one character, as
 * Oniguruma's find_iter does, and empty pieces are skipped, as HF does. */
static int regex_split(tok_state *s, int step, const pcre2_code *re, bool drop_matches, const char *text,
                       size_t len, tok_ids *out, char *err, size_t errlen)
{
    size_t pos = 0, prev = 0;
    int rc;
    while (pos <= len) {
        int m = pcre2_match(re, (PCRE2_SPTR)text, len, pos, PCRE2_NO_UTF_CHECK, s->md, s->mctx);
        if (m == PCRE2_ERROR_NOMATCH) break;
        if (m < 0) {
            PCRE2_UCHAR msg[160];
            pcre2_get_error_message(m, msg, sizeof msg);
            return tok__fail(err, errlen, TOK_EINVAL, "pre-tokenizer regex failed on a %zu-byte piece: %s",
                             len, (char *)msg);
        }
        PCRE2_SIZE *ov = pcre2_get_ovector_pointer(s->md);
        size_t ms = ov[0], me = ov[1];
        if (ms > prev && (rc = pretokenize(s, step + 1, text + prev, ms - prev, out, err, errlen))) return rc;
        if (me > ms && !drop_matches && (rc = pretokenize(s, step + 1, text + ms, me - ms, out, err, errlen)))
            return rc;
        if (me > ms) {
            prev = pos = me;
        } else {
            prev = ms;
            if (ms >= len) break;
            uint32_t cp;
            pos = ms + tok__utf8_decode((const unsigned char *)text + ms, len - ms, &cp);
        }
    }
    if (prev < len) return pretokenize(s, step + 1, text + prev, len - prev, out, err, errlen);
    return TOK_OK;
}

static int pretokenize(tok_state *s, int step, const char *text, size_t len, tok_ids *out, char *err,
                       size_t errlen)
{
    const tok_tokenizer *t = s->t;
    if (len == 0) return TOK_OK;
    if (step == t->n_steps) {
        int rc = tok__bpe_word(s, (const unsigned char *)text, len, out);
        if (rc) return tok__fail(err, errlen, rc, "out of memory while encoding");
        return TOK_OK;
    }
    const tok__step *st = &t->steps[step];
    if (st->kind == TOK__STEP_BYTELEVEL) {
        if (st->add_prefix_space && text[0] != ' ') {
            tok_bytes *p = &s->prefixed[step];
            p->n = 0;
            if (tok_bytes_append(p, " ", 1) || tok_bytes_append(p, text, len))
                return tok__fail(err, errlen, TOK_ENOMEM, "out of memory while encoding");
            text = p->v;
            len = p->n;
        }
        if (!st->re) return pretokenize(s, step + 1, text, len, out, err, errlen);
    }
    return regex_split(s, step, st->re, st->removed, text, len, out, err, errlen);
}

/* ---- added tokens ---------------------------------------------------------------------------- */

static bool is_white_space(uint32_t c)
{
    return (c >= 9 && c <= 13) || c == ' ' || c == 0x85 || c == 0xA0 || c == 0x1680 ||
           (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F ||
           c == 0x3000;
}

/* \w of Rust's regex crate (HF's single_word test): alphabetic, marks, decimal digits, connector
 * punctuation, joiners. Without utf8proc only ASCII is classified. */
static bool is_word_char(uint32_t c)
{
    if (c < 0x80)
        return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
    if (c == 0x200C || c == 0x200D) return true;
#ifdef TOK_HAVE_UTF8PROC
    utf8proc_category_t k = utf8proc_category((utf8proc_int32_t)c);
    return (k >= UTF8PROC_CATEGORY_LU && k <= UTF8PROC_CATEGORY_ND) || k == UTF8PROC_CATEGORY_NL ||
           k == UTF8PROC_CATEGORY_PC;
#else
    return false;
#endif
}

static uint32_t char_before(const char *text, size_t pos)
{
    size_t i = pos - 1;
    while (i > 0 && ((unsigned char)text[i] & 0xC0) == 0x80)
        i--;
    uint32_t cp;
    tok__utf8_decode((const unsigned char *)text + i, pos - i, &cp);
    return cp;
}

/* Longest added token starting at text[i], or -1. */
static int32_t trie_longest(const tok__trie_node *nodes, const char *text, size_t len, size_t i, size_t *end)
{
    int32_t best = -1;
    uint32_t cur = 0;
    for (size_t j = i; j < len; j++) {
        uint32_t ch = nodes[cur].first_child;
        while (ch && nodes[ch].byte != (uint8_t)text[j])
            ch = nodes[ch].next_sibling;
        if (!ch) break;
        cur = ch;
        if (nodes[cur].token >= 0) {
            best = nodes[cur].token;
            *end = j + 1;
        }
    }
    return best;
}

static int encode_gap(tok_state *s, bool normalized, const char *text, size_t len, unsigned flags,
                      tok_ids *out, char *err, size_t errlen);

/* Cuts added tokens out of text the way HF's AddedVocabulary::find_matches does: leftmost-longest
 * non-overlapping matches; a single_word token inside a word is skipped but still consumed by the
 * search; lstrip/rstrip pull the neighbouring White_Space into the token. The pieces between
 * tokens go on to `encode_gap`. */
static int split_added(tok_state *s, const tok__trie_node *trie, bool normalized, const char *text,
                       size_t len, unsigned flags, tok_ids *out, char *err, size_t errlen)
{
    const tok_tokenizer *t = s->t;
    size_t start_offset = 0, pos = 0;
    int rc;
    if (trie) {
        uint8_t first[256] = {0};
        for (uint32_t ch = trie[0].first_child; ch; ch = trie[ch].next_sibling)
            first[trie[ch].byte] = 1;
        while (pos < len) {
            size_t ms = pos, me = 0;
            int32_t tk = -1;
            for (; ms < len; ms++)
                if (first[(uint8_t)text[ms]] && (tk = trie_longest(trie, text, len, ms, &me)) >= 0) break;
            if (tk < 0) break;
            pos = me;
            const tok__added *a = &t->added[tk];
            if (a->single_word) {
                uint32_t cp;
                bool word_before = ms > 0 && is_word_char(char_before(text, ms));
                bool word_after =
                    me < len &&
                    (tok__utf8_decode((const unsigned char *)text + me, len - me, &cp), is_word_char(cp));
                if (word_before || word_after) continue;
            }
            size_t st = ms, en = me;
            if (a->lstrip) {
                while (st > start_offset && is_white_space(char_before(text, st))) {
                    size_t i = st - 1;
                    while (i > 0 && ((unsigned char)text[i] & 0xC0) == 0x80)
                        i--;
                    st = i;
                }
            }
            if (a->rstrip) {
                uint32_t cp;
                size_t n;
                while (en < len && (n = tok__utf8_decode((const unsigned char *)text + en, len - en, &cp),
                                    is_white_space(cp)))
                    en += n;
            }
            if (st < start_offset) continue; /* overlaps what an rstrip already took */
            if (st > start_offset && (rc = encode_gap(s, normalized, text + start_offset, st - start_offset,
                                                      flags, out, err, errlen)))
                return rc;
            if (tok_ids_reserve(out, 1))
                return tok__fail(err, errlen, TOK_ENOMEM, "out of memory while encoding");
            out->v[out->n++] = a->id;
            start_offset = en;
        }
    }
    if (start_offset < len)
        return encode_gap(s, normalized, text + start_offset, len - start_offset, flags, out, err, errlen);
    return TOK_OK;
}

/* A piece without raw added tokens: normalize it, cut out the normalized added tokens, then
 * pre-tokenize. `normalized` says the first two were done already. */
static int encode_gap(tok_state *s, bool normalized, const char *text, size_t len, unsigned flags,
                      tok_ids *out, char *err, size_t errlen)
{
    const tok_tokenizer *t = s->t;
    if (normalized) return pretokenize(s, 0, text, len, out, err, errlen);
    if (t->nfc) {
        s->norm.n = 0;
        int rc = tok__nfc(s, text, len, &s->norm);
        if (rc) return tok__fail(err, errlen, rc, "NFC normalization failed (%d)", rc);
        text = s->norm.v;
        len = s->norm.n;
    }
    return split_added(s, t->trie[1][(flags & TOK_ENCODE_SPECIAL) != 0], true, text, len, flags, out, err,
                       errlen);
}

int tok_encode(tok_state *s, const char *text, size_t len, unsigned flags, tok_ids *out, char *err,
               size_t errlen)
{
    if (tok_utf8_valid_prefix(text, len) != len) {
        s->clean.n = 0;
        if (tok_utf8_repair(text, len, &s->clean) < 0)
            return tok__fail(err, errlen, TOK_ENOMEM, "out of memory while encoding");
        text = s->clean.v;
        len = s->clean.n;
    }
    return split_added(s, s->t->trie[0][(flags & TOK_ENCODE_SPECIAL) != 0], false, text, len, flags, out, err,
                       errlen);
}

int tok_decode(const tok_tokenizer *t, const uint32_t *ids, size_t n, unsigned flags, tok_bytes *out,
               char *err, size_t errlen)
{
    for (size_t i = 0; i < n; i++) {
        const char *b;
        size_t len;
        if (tok_id_bytes(t, ids[i], &b, &len))
            return tok__fail(err, errlen, TOK_EINVAL,
                             "id %u (position %zu) is not a token of this tokenizer (ids are 0..%u)", ids[i],
                             i, t->vocab_size - 1);
        if ((flags & TOK_DECODE_SKIP_SPECIAL) && t->special[ids[i]]) continue;
        if (tok_bytes_append(out, b, len))
            return tok__fail(err, errlen, TOK_ENOMEM, "out of memory while decoding");
    }
    return TOK_OK;
}
