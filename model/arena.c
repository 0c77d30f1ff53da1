/* arena.c — one allocation per arena, tensors as offsets from a size table. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model.h"

void rl_arena_init(rl_arena *a, const char *label)
{
    memset(a, 0, sizeof *a);
    a->label = label;
}

int rl_arena_add(rl_arena *a, const char *name, int ndim, const int64_t *shape)
{
    if (a->base || ndim < 1 || ndim > 4 || strlen(name) >= sizeof a->entries[0].name)
        return RL_EINVAL;
    if (a->n == a->cap) {
        int cap = a->cap ? 2 * a->cap : 64;
        rl_arena_entry *e = realloc(a->entries, sizeof *e * (size_t)cap);
        if (!e)
            return RL_ENOMEM;
        a->entries = e;
        a->cap = cap;
    }
    rl_arena_entry *e = &a->entries[a->n];
    memset(e, 0, sizeof *e);
    snprintf(e->name, sizeof e->name, "%s", name);
    e->ndim = ndim;
    e->count = 1;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 0)
            return RL_EINVAL;
        e->shape[i] = shape[i];
        e->count *= (size_t)shape[i];
    }
    e->offset = a->total;
    /* keep every tensor 64-byte aligned */
    a->total += (e->count + 15) & ~(size_t)15;
    return a->n++;
}

int rl_arena_alloc(rl_arena *a, rl_backend *be, char *err, size_t errlen)
{
    size_t bytes = (a->total ? a->total : 16) * sizeof(float);
    a->base = rl_malloc(be, bytes);
    if (!a->base) {
        snprintf(err, errlen, "%s arena: cannot allocate %.1f MiB", a->label, (double)bytes / 1048576.0);
        rl_backend_clear_error(be);
        return RL_ENOMEM;
    }
    rl_zero(be, a->base, bytes);
    return 0;
}

float *rl_arena_ptr(const rl_arena *a, int idx) { return idx < 0 ? NULL : a->base + a->entries[idx].offset; }

int rl_arena_find(const rl_arena *a, const char *name)
{
    for (int i = 0; i < a->n; i++)
        if (strcmp(a->entries[i].name, name) == 0)
            return i;
    return -1;
}

void rl_arena_print(const rl_arena *a, FILE *f)
{
    fprintf(f, "arena %-12s %5d tensors %12zu floats %9.2f MiB\n", a->label, a->n, a->total,
            (double)a->total * 4 / 1048576.0);
}

void rl_arena_free(rl_arena *a, rl_backend *be)
{
    if (a->base)
        rl_free(be, a->base);
    free(a->entries);
    a->entries = NULL;
    a->base = NULL;
    a->n = a->cap = 0;
    a->total = 0;
}
