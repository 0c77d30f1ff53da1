/* BPE merging of one pre-tokenized word, with a per-thread cache of whole words.
 *
 * Algorithm (as HF's `Word::merge_all`): the word starts as one symbol per byte; every adjacent
 * pair that has a merge goes into a min-heap ordered by (merge rank, position). Popping the top
 * merges the pair if it is still current (its left symbol is alive and the pair still merges into
 * the same id), then pushes the new pairs with the left and right neighbours. O(n log n) per word;
 * symbols form a linked list inside one array, so nothing is allocated per token. */
#include <stdlib.h>
#include <string.h>

#include "tok_int.h"

#define CACHE_SLOTS (1u << 16)
#define CACHE_KEY_BYTES (1u << 22)
#define CACHE_IDS (1u << 20)
#define CACHE_MAX_WORD 256 /* longer words (long digit or space runs) are rare: not cached */

static bool heap_less(tok__heap_item a, tok__heap_item b)
{
    return a.rank != b.rank ? a.rank < b.rank : a.pos < b.pos;
}

static void heap_push(tok__heap_item *h, size_t *n, tok__heap_item x)
{
    size_t i = (*n)++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!heap_less(x, h[p])) break;
        h[i] = h[p];
        i = p;
    }
    h[i] = x;
}

static tok__heap_item heap_pop(tok__heap_item *h, size_t *n)
{
    tok__heap_item top = h[0], x = h[--*n];
    size_t i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= *n) break;
        if (c + 1 < *n && heap_less(h[c + 1], h[c])) c++;
        if (!heap_less(h[c], x)) break;
        h[i] = h[c];
        i = c;
    }
    h[i] = x;
    return top;
}

static int grow(void **p, size_t *cap, size_t need, size_t elem)
{
    if (need <= *cap) return TOK_OK;
    size_t c = *cap ? *cap : 64;
    while (c < need)
        c *= 2;
    void *v = realloc(*p, c * elem);
    if (!v) return TOK_ENOMEM;
    *p = v;
    *cap = c;
    return TOK_OK;
}

void tok__cache_free(tok__cache *c)
{
    free(c->slot_hash);
    free(c->slot_key_off);
    free(c->slot_key_len);
    free(c->slot_ids_off);
    free(c->slot_ids_len);
    free(c->keys);
    free(c->ids);
    memset(c, 0, sizeof *c);
}

static bool cache_init(tok__cache *c)
{
    c->slot_hash = calloc(CACHE_SLOTS, sizeof(uint32_t));
    c->slot_key_off = malloc(CACHE_SLOTS * sizeof(uint32_t));
    c->slot_key_len = malloc(CACHE_SLOTS * sizeof(uint32_t));
    c->slot_ids_off = malloc(CACHE_SLOTS * sizeof(uint32_t));
    c->slot_ids_len = malloc(CACHE_SLOTS * sizeof(uint32_t));
    c->keys = malloc(CACHE_KEY_BYTES);
    c->ids = malloc(CACHE_IDS * sizeof(uint32_t));
    c->mask = CACHE_SLOTS - 1;
    c->keys_cap = CACHE_KEY_BYTES;
    c->ids_cap = CACHE_IDS;
    if (!c->slot_hash || !c->slot_key_off || !c->slot_key_len || !c->slot_ids_off || !c->slot_ids_len ||
        !c->keys || !c->ids) {
        tok__cache_free(c);
        return false;
    }
    return true;
}

/* Returns the slot holding word w, or the empty slot where it would go. */
static uint32_t cache_find(const tok__cache *c, const unsigned char *w, size_t len, uint32_t h)
{
    for (uint32_t i = h & c->mask;; i = (i + 1) & c->mask) {
        if (c->slot_hash[i] == 0) return i;
        if (c->slot_hash[i] == h && c->slot_key_len[i] == len &&
            memcmp(c->keys + c->slot_key_off[i], w, len) == 0)
            return i;
    }
}

static void cache_put(tok__cache *c, uint32_t slot, const unsigned char *w, size_t len, uint32_t h,
                      const uint32_t *ids, size_t n)
{
    /* A full cache is emptied rather than evicted piecemeal: cheap, and hit rates on real text
     * recover within a few thousand words. */
    if (c->used * 2 >= CACHE_SLOTS || c->keys_cap - c->keys_len < len || c->ids_cap - c->ids_len < n) {
        memset(c->slot_hash, 0, CACHE_SLOTS * sizeof(uint32_t));
        c->used = c->keys_len = c->ids_len = 0;
        slot = cache_find(c, w, len, h);
    }
    memcpy(c->keys + c->keys_len, w, len);
    memcpy(c->ids + c->ids_len, ids, n * sizeof *ids);
    c->slot_hash[slot] = h;
    c->slot_key_off[slot] = c->keys_len;
    c->slot_key_len[slot] = (uint32_t)len;
    c->slot_ids_off[slot] = c->ids_len;
    c->slot_ids_len[slot] = (uint32_t)n;
    c->keys_len += (uint32_t)len;
    c->ids_len += (uint32_t)n;
    c->used++;
}

/* Builds the initial symbols: one per byte; a byte without a token becomes unk (fused with a
 * preceding unk when fuse_unk) or, with no unk token, is dropped, as HF does. */
static size_t init_symbols(tok_state *s, const unsigned char *w, size_t len)
{
    const tok_tokenizer *t = s->t;
    size_t n = 0;
    for (size_t i = 0; i < len; i++) {
        uint32_t id = t->byte_id[w[i]];
        if (id == TOK__NO_ID) {
            if (t->unk_id == TOK__NO_ID) continue;
            if (t->fuse_unk && n > 0 && s->sym[n - 1].id == t->unk_id) {
                s->sym[n - 1].len++;
                continue;
            }
            id = t->unk_id;
        }
        s->sym[n] = (tok__sym){.id = id, .len = 1, .prev = (int32_t)n - 1, .next = (int32_t)n + 1};
        n++;
    }
    if (n) s->sym[n - 1].next = -1;
    return n;
}

static void merge_all(tok_state *s, size_t n)
{
    const tok__pairmap *m = &s->t->merges;
    tok__sym *sym = s->sym;
    size_t hn = 0;
    uint32_t rank, merged;
    for (size_t i = 0; i + 1 < n; i++)
        if (tok__pairmap_get(m, sym[i].id, sym[i + 1].id, &rank, &merged))
            heap_push(s->heap, &hn, (tok__heap_item){rank, (uint32_t)i, merged});
    while (hn) {
        tok__heap_item top = heap_pop(s->heap, &hn);
        tok__sym *a = &sym[top.pos];
        if (a->len == 0 || a->next < 0) continue;
        tok__sym *b = &sym[a->next];
        /* Stale entries are recognised the way HF does it: the pair must still merge into the same
         * id (comparing the merged id, not the pair, matters when two pairs make one token). */
        if (!tok__pairmap_get(m, a->id, b->id, &rank, &merged) || merged != top.merged) continue;
        a->id = top.merged;
        a->len += b->len;
        b->len = 0;
        a->next = b->next;
        if (a->next >= 0) sym[a->next].prev = (int32_t)top.pos;
        if (a->prev >= 0 && tok__pairmap_get(m, sym[a->prev].id, a->id, &rank, &merged))
            heap_push(s->heap, &hn, (tok__heap_item){rank, (uint32_t)a->prev, merged});
        if (a->next >= 0 && tok__pairmap_get(m, a->id, sym[a->next].id, &rank, &merged))
            heap_push(s->heap, &hn, (tok__heap_item){rank, top.pos, merged});
    }
}

int tok__bpe_word(tok_state *s, const unsigned char *w, size_t len, tok_ids *out)
{
    const tok_tokenizer *t = s->t;
    if (len == 0) return TOK_OK;
    if (len == 1 && t->byte_id[w[0]] != TOK__NO_ID) {
        if (tok_ids_reserve(out, 1)) return TOK_ENOMEM;
        out->v[out->n++] = t->byte_id[w[0]];
        return TOK_OK;
    }
    if (t->ignore_merges) { /* a word that is a token is taken whole, without merging */
        if (grow((void **)&s->bl, &s->bl_cap, 2 * len, 1)) return TOK_ENOMEM;
        size_t n = 0;
        for (size_t i = 0; i < len; i++)
            n += tok__utf8_encode(tok__byte_to_cp(w[i]), s->bl + n);
        uint32_t id = tok__strmap_get(&t->vocab, t->pool, s->bl, n);
        if (id != TOK__NO_ID) {
            if (tok_ids_reserve(out, 1)) return TOK_ENOMEM;
            out->v[out->n++] = id;
            return TOK_OK;
        }
    }
    tok__cache *c = &s->cache;
    uint32_t h = 0, slot = 0;
    bool cacheable = len <= CACHE_MAX_WORD && (c->slot_hash || cache_init(c));
    if (cacheable) {
        h = (uint32_t)tok__hash(w, len) | 1;
        slot = cache_find(c, w, len, h);
        if (c->slot_hash[slot]) {
            uint32_t n = c->slot_ids_len[slot];
            if (tok_ids_reserve(out, n)) return TOK_ENOMEM;
            memcpy(out->v + out->n, c->ids + c->slot_ids_off[slot], n * sizeof(uint32_t));
            out->n += n;
            return TOK_OK;
        }
    }
    /* The heap receives n-1 initial pairs and at most two per merge (n-1 merges): < 3n. */
    if (grow((void **)&s->sym, &s->sym_cap, len, sizeof *s->sym) ||
        grow((void **)&s->heap, &s->heap_cap, 3 * len + 2, sizeof *s->heap))
        return TOK_ENOMEM;
    size_t n = init_symbols(s, w, len);
    if (n == 0) return TOK_OK;
    merge_all(s, n);
    if (tok_ids_reserve(out, n)) return TOK_ENOMEM;
    size_t first = out->n;
    for (int32_t i = 0; i >= 0; i = s->sym[i].next)
        out->v[out->n++] = s->sym[i].id;
    if (cacheable) cache_put(c, slot, w, len, h, out->v + first, out->n - first);
    return TOK_OK;
}
