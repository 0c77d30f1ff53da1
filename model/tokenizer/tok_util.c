/* Containers, hashing, UTF-8 and the byte-level alphabet used by the rest of the tokenizer. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tok_int.h"

int tok__fail(char *err, size_t errlen, int code, const char *fmt, ...)
{
    if (err && errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return code;
}

int tok_ids_reserve(tok_ids *a, size_t extra)
{
    if (a->cap - a->n >= extra) return TOK_OK;
    size_t cap = a->cap ? a->cap : 256;
    while (cap - a->n < extra)
        cap *= 2;
    uint32_t *v = realloc(a->v, cap * sizeof *v);
    if (!v) return TOK_ENOMEM;
    a->v = v;
    a->cap = cap;
    return TOK_OK;
}

void tok_ids_free(tok_ids *a)
{
    free(a->v);
    a->v = NULL;
    a->n = a->cap = 0;
}

int tok_bytes_append(tok_bytes *b, const void *data, size_t len)
{
    if (b->cap - b->n < len + 1) { /* +1 keeps room for a terminating NUL */
        size_t cap = b->cap ? b->cap : 256;
        while (cap - b->n < len + 1)
            cap *= 2;
        char *v = realloc(b->v, cap);
        if (!v) return TOK_ENOMEM;
        b->v = v;
        b->cap = cap;
    }
    if (len) memcpy(b->v + b->n, data, len);
    b->n += len;
    b->v[b->n] = 0;
    return TOK_OK;
}

void tok_bytes_free(tok_bytes *b)
{
    free(b->v);
    b->v = NULL;
    b->n = b->cap = 0;
}

/* FNV-1a, 64 bit: simple, and good enough for token strings (keys are short). */
uint64_t tok__hash(const void *data, size_t len)
{
    const unsigned char *p = data;
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < len; i++)
        h = (h ^ p[i]) * 1099511628211ull;
    return h;
}

int tok__strmap_init(tok__strmap *m, uint32_t cap)
{
    uint32_t slots = 16;
    while (slots < 2 * (uint64_t)cap + 2)
        slots *= 2; /* load factor <= 1/2 */
    m->slot = calloc(slots, sizeof *m->slot);
    m->keys = malloc((cap + 1) * sizeof *m->keys);
    m->ids = malloc((cap + 1) * sizeof *m->ids);
    m->mask = slots - 1;
    m->n = 0;
    m->cap = cap;
    if (!m->slot || !m->keys || !m->ids) {
        tok__strmap_free(m);
        return TOK_ENOMEM;
    }
    return TOK_OK;
}

void tok__strmap_free(tok__strmap *m)
{
    free(m->slot);
    free(m->keys);
    free(m->ids);
    memset(m, 0, sizeof *m);
}

uint32_t tok__strmap_put(tok__strmap *m, const char *pool, tok__span key, uint32_t id)
{
    if (m->n >= m->cap) return UINT32_MAX - 1;
    for (uint64_t i = tok__hash(pool + key.off, key.len) & m->mask;; i = (i + 1) & m->mask) {
        uint32_t s = m->slot[i];
        if (s == 0) {
            m->keys[m->n] = key;
            m->ids[m->n] = id;
            m->slot[i] = ++m->n;
            return TOK__NO_ID;
        }
        tok__span k = m->keys[s - 1];
        if (k.len == key.len && memcmp(pool + k.off, pool + key.off, key.len) == 0) return m->ids[s - 1];
    }
}

uint32_t tok__strmap_get(const tok__strmap *m, const char *pool, const char *str, size_t len)
{
    if (!m->slot) return TOK__NO_ID;
    for (uint64_t i = tok__hash(str, len) & m->mask;; i = (i + 1) & m->mask) {
        uint32_t s = m->slot[i];
        if (s == 0) return TOK__NO_ID;
        tok__span k = m->keys[s - 1];
        if (k.len == len && memcmp(pool + k.off, str, len) == 0) return m->ids[s - 1];
    }
}

int tok__pairmap_init(tok__pairmap *m, size_t n)
{
    uint64_t slots = 16;
    while (slots < 2 * (uint64_t)n + 2)
        slots *= 2;
    m->key = calloc(slots, sizeof *m->key);
    m->rank = malloc(slots * sizeof *m->rank);
    m->merged = malloc(slots * sizeof *m->merged);
    m->mask = slots - 1;
    if (!m->key || !m->rank || !m->merged) {
        tok__pairmap_free(m);
        return TOK_ENOMEM;
    }
    return TOK_OK;
}

void tok__pairmap_free(tok__pairmap *m)
{
    free(m->key);
    free(m->rank);
    free(m->merged);
    memset(m, 0, sizeof *m);
}

/* A pair listed twice keeps its later rank, as HF's map construction (collect into a HashMap)
 * does. */
void tok__pairmap_put(tok__pairmap *m, uint32_t a, uint32_t b, uint32_t rank, uint32_t merged)
{
    uint64_t k = ((uint64_t)a << 32 | b) + 1;
    uint64_t h = (k * 0x9E3779B97F4A7C15ull) >> 20;
    for (uint64_t i = h & m->mask;; i = (i + 1) & m->mask) {
        if (m->key[i] == 0 || m->key[i] == k) {
            m->key[i] = k;
            m->rank[i] = rank;
            m->merged[i] = merged;
            return;
        }
    }
}

/* GPT-2 bytes_to_unicode: printable Latin-1 bytes (! to ~, ¡ to ¬, ® to ÿ) stand for themselves;
 * the other 68 bytes, in increasing order, become U+0100, U+0101, … */
static bool byte_is_printable(unsigned b)
{
    return (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
}

uint32_t tok__byte_to_cp(uint8_t b)
{
    if (byte_is_printable(b)) return b;
    uint32_t n = 0;
    for (unsigned i = 0; i < b; i++)
        n += !byte_is_printable(i);
    return 256 + n;
}

int tok__cp_to_byte(uint32_t cp)
{
    if (cp < 256) return byte_is_printable(cp) ? (int)cp : -1;
    if (cp >= 256 + 68) return -1;
    uint32_t n = 0;
    for (unsigned i = 0; i < 256; i++)
        if (!byte_is_printable(i) && n++ == cp - 256) return (int)i;
    return -1;
}

size_t tok__utf8_decode(const unsigned char *s, size_t len, uint32_t *cp)
{
    if (s[0] < 0x80 || len < 2) {
        *cp = s[0];
        return 1;
    }
    if (s[0] < 0xE0) {
        *cp = (uint32_t)(s[0] & 0x1F) << 6 | (s[1] & 0x3F);
        return 2;
    }
    if (s[0] < 0xF0 || len < 4) {
        *cp = (uint32_t)(s[0] & 0x0F) << 12 | (uint32_t)(s[1] & 0x3F) << 6 | (s[2] & 0x3F);
        return 3;
    }
    *cp = (uint32_t)(s[0] & 0x07) << 18 | (uint32_t)(s[1] & 0x3F) << 12 | (uint32_t)(s[2] & 0x3F) << 6 |
          (s[3] & 0x3F);
    return 4;
}

size_t tok__utf8_encode(uint32_t cp, char out[4])
{
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (char)(0xC0 | cp >> 6);
        out[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (char)(0xE0 | cp >> 12);
        out[1] = (char)(0x80 | (cp >> 6 & 0x3F));
        out[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (char)(0xF0 | cp >> 18);
    out[1] = (char)(0x80 | (cp >> 12 & 0x3F));
    out[2] = (char)(0x80 | (cp >> 6 & 0x3F));
    out[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

/* Length of the valid UTF-8 sequence at s (1..4), or 0 when s starts an invalid one; *bad is set
 * to the length of the maximal invalid subpart (the bytes that one U+FFFD replaces). Follows
 * Unicode's table 3-7 of well-formed byte sequences. */
static size_t utf8_seq(const unsigned char *s, size_t len, size_t *bad)
{
    unsigned c = s[0];
    *bad = 1;
    if (c < 0x80) return 1;
    unsigned lo = 0x80, hi = 0xBF;
    size_t need;
    if (c >= 0xC2 && c <= 0xDF)
        need = 1;
    else if (c >= 0xE0 && c <= 0xEF) {
        need = 2;
        if (c == 0xE0) lo = 0xA0;
        if (c == 0xED) hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
        need = 3;
        if (c == 0xF0) lo = 0x90;
        if (c == 0xF4) hi = 0x8F;
    } else
        return 0;
    for (size_t i = 1; i <= need; i++) {
        if (i >= len) return 0;
        unsigned b = s[i];
        if (b < lo || b > hi) return 0;
        lo = 0x80;
        hi = 0xBF;
        *bad = i + 1;
    }
    return need + 1;
}

size_t tok_utf8_valid_prefix(const char *in, size_t len)
{
    const unsigned char *s = (const unsigned char *)in;
    size_t i = 0, bad;
    while (i < len) {
        /* ASCII runs dominate real text: skip them 8 bytes at a time. */
        while (i + 8 <= len) {
            uint64_t w;
            memcpy(&w, s + i, 8);
            if (w & 0x8080808080808080ull) break;
            i += 8;
        }
        if (i >= len) break;
        size_t n = utf8_seq(s + i, len - i, &bad);
        if (!n) return i;
        i += n;
    }
    return len;
}

long tok_utf8_repair(const char *in, size_t len, tok_bytes *out)
{
    long replaced = 0;
    size_t i = 0;
    while (i < len) {
        size_t ok = tok_utf8_valid_prefix(in + i, len - i);
        if (tok_bytes_append(out, in + i, ok)) return TOK_ENOMEM;
        i += ok;
        if (i >= len) break;
        size_t bad;
        utf8_seq((const unsigned char *)in + i, len - i, &bad);
        if (tok_bytes_append(out, "\xEF\xBF\xBD", 3)) return TOK_ENOMEM;
        replaced++;
        i += bad;
    }
    return replaced;
}
