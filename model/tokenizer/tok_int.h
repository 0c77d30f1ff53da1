/* Internal to model/tokenizer: the loaded tokenizer's layout and helpers shared by its files. */
#ifndef RADLADS_TOK_INT_H
#define RADLADS_TOK_INT_H

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <stdarg.h>
#include <stdbool.h>

#include "tokenizer.h"

#define TOK__MAX_ID ((1u << 24) - 1) /* larger ids would make the per-id tables absurd */
#define TOK__NO_ID UINT32_MAX

/* A span of bytes in one of the tokenizer's pools. */
typedef struct {
    uint32_t off, len;
} tok__span;

/* Open-addressing map from a byte string to an id; keys live in a pool owned elsewhere. */
typedef struct {
    uint32_t *slot; /* index+1 into `keys`/`ids`, 0 = empty */
    uint32_t mask;
    tok__span *keys;
    uint32_t *ids;
    uint32_t n, cap;
} tok__strmap;

/* Map from a pair of token ids to (merge rank, merged id). */
typedef struct {
    uint64_t *key; /* (a << 32 | b) + 1; 0 = empty */
    uint32_t *rank, *merged;
    uint64_t mask;
} tok__pairmap;

typedef struct {
    tok__span content; /* in t->pool */
    uint32_t id;
    bool single_word, lstrip, rstrip, normalized, special;
} tok__added;

/* A byte trie over added-token contents for leftmost-longest matching. */
typedef struct {
    uint32_t first_child, next_sibling;
    int32_t token; /* index into t->added, -1 when no token ends here */
    uint8_t byte;
} tok__trie_node;

typedef enum { TOK__STEP_SPLIT = 1, TOK__STEP_BYTELEVEL } tok__step_kind;

typedef struct {
    tok__step_kind kind;
    pcre2_code *re;        /* SPLIT, or BYTELEVEL with use_regex */
    bool removed;          /* SPLIT behavior "Removed": drop the matches */
    bool add_prefix_space; /* BYTELEVEL */
    bool known;            /* the Qwen2 / Llama 3 split pattern, whose boundaries tok__safe_cut knows */
} tok__step;

#define TOK__MAX_STEPS 8

struct tok_tokenizer {
    char *pool; /* token strings (byte-level form) and added-token contents */
    size_t pool_len, pool_cap;
    char *dec; /* decoded bytes per id */
    size_t dec_len, dec_cap;

    uint32_t vocab_size;  /* 1 + largest id */
    tok__span *vocab_str; /* per id: the model vocab's string, len UINT32_MAX when absent */
    tok__span *dec_span;  /* per id: decoded bytes in `dec`, len UINT32_MAX when no token */
    uint8_t *special;     /* per id: 1 when a special added token */
    tok__strmap vocab;    /* model vocab string -> id */
    tok__pairmap merges;
    uint32_t byte_id[256]; /* id of each single byte's token, TOK__NO_ID when missing */
    bool ignore_merges, fuse_unk;
    uint32_t unk_id; /* TOK__NO_ID when none */

    tok__added *added;
    uint32_t n_added;
    /* [normalized][with specials]: tries of the added tokens with normalized=false/true, without or
     * with the special ones (without TOK_ENCODE_SPECIAL, specials are as if absent). */
    tok__trie_node *trie[2][2];
    uint32_t trie_n[2][2];

    bool nfc;
    tok__step steps[TOK__MAX_STEPS];
    int n_steps;

    int64_t eos_id;
    uint64_t fingerprint;
    int cut_rule; /* see tok__safe_cut; 0 = documents cannot be cut */
};

/* Per-thread scratch: nothing here is allocated per token. */
typedef struct {
    uint32_t id, len;
    int32_t prev, next;
} tok__sym;
typedef struct {
    uint32_t rank, pos, merged;
} tok__heap_item;

typedef struct {
    uint32_t *slot_hash; /* 0 = empty */
    uint32_t *slot_key_off, *slot_key_len, *slot_ids_off, *slot_ids_len;
    uint32_t mask, used;
    char *keys;
    uint32_t keys_len, keys_cap;
    uint32_t *ids;
    uint32_t ids_len, ids_cap;
} tok__cache;

struct tok_state {
    const tok_tokenizer *t;
    pcre2_match_data *md;
    pcre2_match_context *mctx;
    pcre2_jit_stack *jit_stack;
    tok_bytes clean, norm, nfc_tmp;
    int32_t *u32;
    size_t u32_cap;
    tok_bytes prefixed[TOK__MAX_STEPS];
    char *bl; /* byte-level form of one word, for ignore_merges lookups */
    size_t bl_cap;
    tok__sym *sym;
    tok__heap_item *heap;
    size_t sym_cap, heap_cap;
    tok__cache cache;
};

/* Formats a message into err (when not NULL) and returns code. */
int tok__fail(char *err, size_t errlen, int code, const char *fmt, ...) __attribute__((format(printf, 4, 5)));

uint64_t tok__hash(const void *data, size_t len);
int tok__strmap_init(tok__strmap *m, uint32_t cap);
void tok__strmap_free(tok__strmap *m);
/* Returns the existing id (and does not insert) when the key is present, else inserts and
 * returns TOK__NO_ID; UINT32_MAX - 1 when out of memory. */
uint32_t tok__strmap_put(tok__strmap *m, const char *pool, tok__span key, uint32_t id);
uint32_t tok__strmap_get(const tok__strmap *m, const char *pool, const char *s, size_t len);
int tok__pairmap_init(tok__pairmap *m, size_t n);
void tok__pairmap_free(tok__pairmap *m);
void tok__pairmap_put(tok__pairmap *m, uint32_t a, uint32_t b, uint32_t rank, uint32_t merged);
/* Returns false when the pair has no merge. */
static inline bool tok__pairmap_get(const tok__pairmap *m, uint32_t a, uint32_t b, uint32_t *rank,
                                    uint32_t *merged)
{
    uint64_t k = ((uint64_t)a << 32 | b) + 1;
    uint64_t h = (k * 0x9E3779B97F4A7C15ull) >> 20;
    for (uint64_t i = h & m->mask;; i = (i + 1) & m->mask) {
        if (m->key[i] == k) {
            *rank = m->rank[i];
            *merged = m->merged[i];
            return true;
        }
        if (m->key[i] == 0) return false;
    }
}

/* GPT-2's reversible map between bytes and printable code points. */
uint32_t tok__byte_to_cp(uint8_t b);
int tok__cp_to_byte(uint32_t cp); /* -1 when cp is not in the alphabet */
/* Decodes one UTF-8 code point at s (valid UTF-8 assumed); returns its length. */
size_t tok__utf8_decode(const unsigned char *s, size_t len, uint32_t *cp);
size_t tok__utf8_encode(uint32_t cp, char out[4]);

/* Translates an Oniguruma pattern from tokenizer.json into PCRE2 and compiles it (JIT when
 * available). */
pcre2_code *tok__regex_compile(const char *pattern, size_t len, bool literal, char *err, size_t errlen);
extern const char tok__gpt2_pattern[];

/* NFC of in[0..len) appended to out (in must be valid UTF-8). */
int tok__nfc(tok_state *s, const char *in, size_t len, tok_bytes *out);
bool tok__have_nfc(void);

/* The last position p in text[0..len) where encoding text[0..p) and text[p..len) separately
 * gives the same ids as encoding it whole, or 0 when none is known. Used to cut long documents
 * for parallel encoding. */
size_t tok__safe_cut(const tok_tokenizer *t, const char *text, size_t len);
void tok__set_cut_rule(tok_tokenizer *t);

/* BPE of one pre-tokenized word (raw bytes); appends ids. */
int tok__bpe_word(tok_state *s, const unsigned char *w, size_t len, tok_ids *out);
void tok__cache_free(tok__cache *c);

#endif
