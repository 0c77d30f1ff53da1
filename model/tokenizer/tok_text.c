/* Text machinery below the BPE: the pre-tokenizer regex (Oniguruma dialect → PCRE2) and NFC. */
#include <stdlib.h>
#include <string.h>

#ifdef TOK_HAVE_UTF8PROC
#include <utf8proc.h>
#endif

#include "tok_int.h"

/* ByteLevel's own split (use_regex=true), as in GPT-2's encoder.py. */
const char tok__gpt2_pattern[] =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

/* Unicode White_Space, which is what Oniguruma's \s means for UTF-8 text. PCRE2's \s (with UCP)
 * also takes U+180E and so splits differently around it; spelling the class out removes that. */
static const char ws_items[] =
    "\\t\\n\\x0B\\f\\r \\x{85}\\x{A0}\\x{1680}\\x{2000}-\\x{200A}\\x{2028}\\x{2029}\\x{202F}"
    "\\x{205F}\\x{3000}";

typedef struct {
    char *v;
    size_t n, cap;
    bool oom;
} sbuf;

static void put(sbuf *b, const char *s, size_t len)
{
    if (b->oom) return;
    if (b->cap - b->n < len + 1) {
        size_t cap = b->cap ? b->cap * 2 : 256;
        while (cap - b->n < len + 1)
            cap *= 2;
        char *v = realloc(b->v, cap);
        if (!v) {
            b->oom = true;
            return;
        }
        b->v = v;
        b->cap = cap;
    }
    memcpy(b->v + b->n, s, len);
    b->n += len;
    b->v[b->n] = 0;
}
static void puts_(sbuf *b, const char *s)
{
    put(b, s, strlen(s));
}

static bool is_alpha(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}
static char other_case(char c)
{
    return (char)(c ^ 0x20);
}

/* Rewrites the parts of an Oniguruma (Ruby syntax) pattern whose meaning differs in PCRE2:
 *  - \s and \S become explicit White_Space classes (see ws_items);
 *  - (?i:…) and (?i) spell ASCII letters as [xX]: PCRE2's Unicode caseless matching would also
 *    let 's' match U+017F (long s), which HF's Oniguruma does not, so "'ſ" would wrongly become
 *    a contraction;
 *  - \uHHHH becomes \x{HHHH}.
 * Everything else is passed through; both dialects agree on \p{..}, classes, groups, lookaround. */
static char *translate(const char *p, size_t len)
{
    sbuf b = {0};
    bool caseless_stack[64] = {false};
    int depth = 0;
    bool in_class = false;
    for (size_t i = 0; i < len; i++) {
        bool caseless = caseless_stack[depth];
        char c = p[i];
        if (c == '\\' && i + 1 < len) {
            char e = p[i + 1];
            if (e == 's') {
                if (in_class)
                    puts_(&b, ws_items);
                else {
                    puts_(&b, "[");
                    puts_(&b, ws_items);
                    puts_(&b, "]");
                }
                i++;
            } else if (e == 'S' && !in_class) {
                puts_(&b, "[^");
                puts_(&b, ws_items);
                puts_(&b, "]");
                i++;
            } else if (e == 'u' && i + 5 < len) {
                puts_(&b, "\\x{");
                put(&b, p + i + 2, 4);
                puts_(&b, "}");
                i += 5;
            } else if ((e == 'p' || e == 'P' || e == 'x') && i + 2 < len && p[i + 2] == '{') {
                const char *close = memchr(p + i, '}', len - i);
                size_t end = close ? (size_t)(close - p) : len - 1;
                put(&b, p + i, end - i + 1);
                i = end;
            } else {
                put(&b, p + i, 2);
                i++;
            }
            continue;
        }
        if (in_class) {
            if (c == ']') in_class = false;
            if (caseless && is_alpha(c)) {
                if (i + 2 < len && p[i + 1] == '-' && is_alpha(p[i + 2])) {
                    char r[8] = {c, '-', p[i + 2], other_case(c), '-', other_case(p[i + 2]), 0};
                    puts_(&b, r);
                    i += 2;
                } else {
                    char r[3] = {c, other_case(c), 0};
                    puts_(&b, r);
                }
                continue;
            }
            put(&b, &c, 1);
            continue;
        }
        if (c == '[') {
            in_class = true;
            put(&b, &c, 1);
            if (i + 1 < len && p[i + 1] == '^') put(&b, p + ++i, 1);
            if (i + 1 < len && p[i + 1] == ']') put(&b, p + ++i, 1); /* a leading ] is literal */
            continue;
        }
        if (c == '(') {
            bool group_caseless = caseless;
            if (i + 3 < len && memcmp(p + i, "(?i:", 4) == 0) {
                puts_(&b, "(?:");
                i += 3;
                group_caseless = true;
            } else if (i + 3 < len && memcmp(p + i, "(?i)", 4) == 0) {
                caseless_stack[depth] = true;
                i += 3;
                continue;
            } else {
                put(&b, &c, 1);
            }
            if (depth < 63) caseless_stack[++depth] = group_caseless;
            continue;
        }
        if (c == ')') {
            if (depth > 0) depth--;
            put(&b, &c, 1);
            continue;
        }
        if (caseless && is_alpha(c)) {
            char r[5] = {'[', c, other_case(c), ']', 0};
            puts_(&b, r);
            continue;
        }
        put(&b, &c, 1);
    }
    if (!b.v) put(&b, "", 0);
    if (b.oom) {
        free(b.v);
        return NULL;
    }
    return b.v;
}

pcre2_code *tok__regex_compile(const char *pattern, size_t len, bool literal, char *err, size_t errlen)
{
    char *pcre_pattern = literal ? NULL : translate(pattern, len);
    if (!literal && !pcre_pattern) {
        tok__fail(err, errlen, TOK_ENOMEM, "out of memory translating the pre-tokenizer regex");
        return NULL;
    }
    int code;
    PCRE2_SIZE off;
    /* Ruby syntax (what HF's Oniguruma uses) makes ^ and $ line anchors, hence MULTILINE. */
    uint32_t opts = PCRE2_UTF | PCRE2_UCP | PCRE2_MULTILINE | (literal ? PCRE2_LITERAL : 0);
    pcre2_code *re = pcre2_compile((PCRE2_SPTR)(literal ? pattern : pcre_pattern),
                                   literal ? len : strlen(pcre_pattern), opts, &code, &off, NULL);
    free(pcre_pattern);
    if (!re) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(code, msg, sizeof msg);
        tok__fail(err, errlen, TOK_EINVAL,
                  "pre-tokenizer regex \"%.*s\" does not compile (PCRE2: %s at offset %zu); only "
                  "patterns in the common Oniguruma/PCRE2 subset are supported",
                  (int)(len > 200 ? 200 : len), pattern, (char *)msg, (size_t)off);
        return NULL;
    }
    /* JIT makes splitting several times faster; without it (no JIT on this CPU) matching still
     * works through the interpreter. */
    (void)pcre2_jit_compile(re, PCRE2_JIT_COMPLETE);
    return re;
}

bool tok__have_nfc(void)
{
#ifdef TOK_HAVE_UTF8PROC
    return true;
#else
    return false;
#endif
}

#ifdef TOK_HAVE_UTF8PROC
/* NFC of one run through utf8proc (decompose, reorder, compose), into caller-owned scratch. */
static int nfc_run(tok_state *s, const char *in, size_t len, tok_bytes *out)
{
    const utf8proc_option_t opt = UTF8PROC_STABLE | UTF8PROC_COMPOSE;
    for (;;) {
        utf8proc_ssize_t n = utf8proc_decompose((const utf8proc_uint8_t *)in, (utf8proc_ssize_t)len, s->u32,
                                                (utf8proc_ssize_t)s->u32_cap, opt);
        if (n < 0) return TOK_EINVAL;
        if ((size_t)n > s->u32_cap) {
            size_t cap = (size_t)n + 64;
            int32_t *v = realloc(s->u32, cap * sizeof *v);
            if (!v) return TOK_ENOMEM;
            s->u32 = v;
            s->u32_cap = cap;
            continue;
        }
        n = utf8proc_normalize_utf32(s->u32, n, opt);
        if (n < 0) return TOK_EINVAL;
        /* reencode writes UTF-8 over the code point buffer (at most 4 bytes per code point). */
        n = utf8proc_reencode(s->u32, n, opt);
        if (n < 0) return TOK_EINVAL;
        return tok_bytes_append(out, s->u32, (size_t)n);
    }
}
#endif

/* NFC only changes text around non-ASCII characters, and an ASCII character is a starter that
 * never composes with what precedes it, so the text is cut before ASCII characters: ASCII runs are
 * copied, and each non-ASCII run is normalized together with the one character before it (which
 * may compose with a following mark). */
int tok__nfc(tok_state *s, const char *in, size_t len, tok_bytes *out)
{
#ifdef TOK_HAVE_UTF8PROC
    size_t i = 0;
    while (i < len) {
        size_t j = i;
        while (j < len && !(in[j] & 0x80))
            j++;
        if (j == len) return tok_bytes_append(out, in + i, len - i);
        size_t start = j > i ? j - 1 : j;
        int rc = tok_bytes_append(out, in + i, start - i);
        if (rc) return rc;
        size_t end = j;
        while (end < len && (in[end] & 0x80))
            end++;
        rc = nfc_run(s, in + start, end - start, out);
        if (rc) return rc;
        i = end;
    }
    return TOK_OK;
#else
    (void)s;
    (void)in;
    (void)len;
    (void)out;
    return TOK_EINVAL;
#endif
}
