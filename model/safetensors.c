/* safetensors.c — validating reader for safetensors files and sharded folders. */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "safetensors.h"

typedef struct {
    char *path;
    uint8_t *map;
    size_t len;
} st_map;

struct rl_safetensors {
    st_map *files;
    int n_files;
    rl_st_tensor *tensors; /* sorted by name */
    int n_tensors;
};

static const struct {
    const char *name;
    size_t size;
} st_dtypes[] = {
    [RL_ST_BOOL] = {"BOOL", 1}, [RL_ST_U8] = {"U8", 1},     [RL_ST_I8] = {"I8", 1},
    [RL_ST_U16] = {"U16", 2},   [RL_ST_I16] = {"I16", 2},   [RL_ST_F16] = {"F16", 2},
    [RL_ST_BF16] = {"BF16", 2}, [RL_ST_U32] = {"U32", 4},   [RL_ST_I32] = {"I32", 4},
    [RL_ST_F32] = {"F32", 4},   [RL_ST_U64] = {"U64", 8},   [RL_ST_I64] = {"I64", 8},
    [RL_ST_F64] = {"F64", 8},
};
#define N_DTYPES ((int)(sizeof st_dtypes / sizeof st_dtypes[0]))

const char *rl_st_dtype_name(rl_st_dtype dt) { return (int)dt < N_DTYPES ? st_dtypes[dt].name : "?"; }
size_t rl_st_dtype_size(rl_st_dtype dt) { return (int)dt < N_DTYPES ? st_dtypes[dt].size : 0; }

static int by_name(const void *a, const void *b)
{
    return strcmp(((const rl_st_tensor *)a)->name, ((const rl_st_tensor *)b)->name);
}

static int by_begin(const void *a, const void *b)
{
    const rl_st_tensor *x = *(const rl_st_tensor *const *)a, *y = *(const rl_st_tensor *const *)b;
    if (x->begin != y->begin)
        return x->begin < y->begin ? -1 : 1;
    return x->end < y->end ? -1 : x->end > y->end;
}

void rl_st_free_tensors(rl_st_tensor *t, int n)
{
    if (!t)
        return;
    for (int i = 0; i < n; i++)
        free(t[i].name);
    free(t);
}

/* One header entry: {"dtype": .., "shape": [..], "data_offsets": [b, e]}. */
static int parse_entry(const char *what, const char *name, json_t *v, rl_st_tensor *t, char *err, size_t errlen)
{
    if (!json_is_object(v)) {
        snprintf(err, errlen, "%s: header entry \"%s\" is not an object", what, name);
        return RL_EINVAL;
    }
    json_t *dt = json_object_get(v, "dtype"), *shape = json_object_get(v, "shape");
    json_t *offs = json_object_get(v, "data_offsets");
    if (!json_is_string(dt) || !json_is_array(shape) || !json_is_array(offs)) {
        snprintf(err, errlen, "%s: tensor \"%s\" needs string \"dtype\", array \"shape\" and array \"data_offsets\"",
                 what, name);
        return RL_EINVAL;
    }
    int d;
    for (d = 0; d < N_DTYPES; d++)
        if (strcmp(json_string_value(dt), st_dtypes[d].name) == 0)
            break;
    if (d == N_DTYPES) {
        snprintf(err, errlen, "%s: tensor \"%s\" has unknown dtype \"%.32s\"", what, name, json_string_value(dt));
        return RL_EINVAL;
    }
    t->dtype = (rl_st_dtype)d;
    size_t ndim = json_array_size(shape);
    if (ndim > RL_ST_MAX_DIMS) {
        snprintf(err, errlen, "%s: tensor \"%s\" has %zu dimensions (at most %d supported)", what, name, ndim,
                 RL_ST_MAX_DIMS);
        return RL_EINVAL;
    }
    t->ndim = (int)ndim;
    uint64_t nbytes = st_dtypes[d].size;
    for (size_t i = 0; i < ndim; i++) {
        json_t *s = json_array_get(shape, i);
        if (!json_is_integer(s) || json_integer_value(s) < 0) {
            snprintf(err, errlen, "%s: tensor \"%s\" shape[%zu] is not a non-negative integer", what, name, i);
            return RL_EINVAL;
        }
        t->shape[i] = json_integer_value(s);
        if (__builtin_mul_overflow(nbytes, (uint64_t)t->shape[i], &nbytes)) {
            snprintf(err, errlen, "%s: tensor \"%s\" shape overflows 64-bit byte counts", what, name);
            return RL_EINVAL;
        }
    }
    json_t *b = json_array_get(offs, 0), *e = json_array_get(offs, 1);
    if (json_array_size(offs) != 2 || !json_is_integer(b) || !json_is_integer(e) || json_integer_value(b) < 0 ||
        json_integer_value(e) < json_integer_value(b)) {
        snprintf(err, errlen, "%s: tensor \"%s\" data_offsets must be [begin, end] with 0 <= begin <= end", what,
                 name);
        return RL_EINVAL;
    }
    t->begin = (uint64_t)json_integer_value(b);
    t->end = (uint64_t)json_integer_value(e);
    if (t->end - t->begin != nbytes) {
        snprintf(err, errlen, "%s: tensor \"%s\" is %s with %llu bytes of data but its shape needs %llu", what, name,
                 st_dtypes[d].name, (unsigned long long)(t->end - t->begin), (unsigned long long)nbytes);
        return RL_EINVAL;
    }
    return 0;
}

/* Offsets, sorted by begin, must tile the data section exactly: no gap, no overlap,
 * nothing past its end. */
static int check_layout(const char *what, rl_st_tensor *t, int n, uint64_t data_len, char *err, size_t errlen)
{
    rl_st_tensor **order = malloc(sizeof *order * (size_t)(n ? n : 1));
    if (!order) {
        snprintf(err, errlen, "%s: out of memory", what);
        return RL_ENOMEM;
    }
    for (int i = 0; i < n; i++)
        order[i] = &t[i];
    qsort(order, (size_t)n, sizeof *order, by_begin);
    uint64_t pos = 0;
    int rc = 0;
    for (int i = 0; i < n && !rc; i++) {
        if (order[i]->end > data_len) {
            snprintf(err, errlen, "%s: tensor \"%s\" data_offsets [%llu, %llu] run past the data section (%llu bytes; "
                     "the file is truncated or the header is wrong)", what, order[i]->name,
                     (unsigned long long)order[i]->begin, (unsigned long long)order[i]->end,
                     (unsigned long long)data_len);
            rc = RL_EINVAL;
        } else if (order[i]->begin < pos) {
            snprintf(err, errlen, "%s: tensor \"%s\" data_offsets [%llu, %llu] overlap the previous tensor \"%s\"",
                     what, order[i]->name, (unsigned long long)order[i]->begin, (unsigned long long)order[i]->end,
                     order[i - 1]->name);
            rc = RL_EINVAL;
        } else if (order[i]->begin > pos) {
            snprintf(err, errlen, "%s: %llu unaccounted bytes before tensor \"%s\" (offsets must be contiguous)", what,
                     (unsigned long long)(order[i]->begin - pos), order[i]->name);
            rc = RL_EINVAL;
        }
        pos = order[i]->end;
    }
    if (!rc && pos != data_len) {
        snprintf(err, errlen, "%s: data section is %llu bytes but the tensors cover %llu", what,
                 (unsigned long long)data_len, (unsigned long long)pos);
        rc = RL_EINVAL;
    }
    free(order);
    return rc;
}

int rl_st_parse(const uint8_t *buf, size_t len, const char *what, rl_st_tensor **tensors, int *n_tensors,
                char *err, size_t errlen)
{
    *tensors = NULL;
    *n_tensors = 0;
    if (len < 8) {
        snprintf(err, errlen, "%s: %zu bytes is too short for a safetensors file (truncated?)", what, len);
        return RL_EINVAL;
    }
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--)
        hlen = hlen << 8 | buf[i];
    if (hlen > RL_ST_MAX_HEADER) {
        snprintf(err, errlen, "%s: header length %llu exceeds the %u byte limit (not a safetensors file?)", what,
                 (unsigned long long)hlen, RL_ST_MAX_HEADER);
        return RL_EINVAL;
    }
    if (hlen > len - 8) {
        snprintf(err, errlen, "%s: header length %llu but only %zu bytes follow (truncated file)", what,
                 (unsigned long long)hlen, len - 8);
        return RL_EINVAL;
    }
    if (hlen < 2 || buf[8] != '{') {
        snprintf(err, errlen, "%s: header does not start with '{' (not a safetensors file)", what);
        return RL_EINVAL;
    }
    json_error_t jerr;
    json_t *root = json_loadb((const char *)buf + 8, (size_t)hlen, JSON_REJECT_DUPLICATES, &jerr);
    if (!root) {
        snprintf(err, errlen, "%s: header is not valid JSON: %s (line %d, column %d)", what, jerr.text, jerr.line,
                 jerr.column);
        return RL_EINVAL;
    }
    int rc = 0, n = 0;
    rl_st_tensor *t = NULL;
    if (!json_is_object(root)) {
        snprintf(err, errlen, "%s: header is not a JSON object", what);
        rc = RL_EINVAL;
        goto out;
    }
    t = calloc(json_object_size(root) + 1, sizeof *t);
    if (!t) {
        snprintf(err, errlen, "%s: out of memory for %zu header entries", what, json_object_size(root));
        rc = RL_ENOMEM;
        goto out;
    }
    const char *key;
    json_t *val;
    json_object_foreach(root, key, val)
    {
        if (strcmp(key, "__metadata__") == 0) {
            const char *mk;
            json_t *mv;
            if (!json_is_object(val)) {
                snprintf(err, errlen, "%s: __metadata__ must be an object of strings", what);
                rc = RL_EINVAL;
                goto out;
            }
            json_object_foreach(val, mk, mv) if (!json_is_string(mv))
            {
                snprintf(err, errlen, "%s: __metadata__ value for \"%.64s\" is not a string", what, mk);
                rc = RL_EINVAL;
                goto out;
            }
            continue;
        }
        rc = parse_entry(what, key, val, &t[n], err, errlen);
        if (rc)
            goto out;
        t[n].name = strdup(key);
        if (!t[n].name) {
            rc = RL_ENOMEM;
            snprintf(err, errlen, "%s: out of memory", what);
            goto out;
        }
        n++;
    }
    rc = check_layout(what, t, n, (uint64_t)(len - 8 - hlen), err, errlen);
    if (rc)
        goto out;
    const uint8_t *data = buf + 8 + hlen;
    for (int i = 0; i < n; i++)
        t[i].data = data + t[i].begin;
    qsort(t, (size_t)n, sizeof *t, by_name);
out:
    json_decref(root);
    if (rc) {
        rl_st_free_tensors(t, n);
        return rc;
    }
    *tensors = t;
    *n_tensors = n;
    return 0;
}

/* ---- files ---- */

static int map_file(st_map *m, const char *path, char *err, size_t errlen)
{
    memset(m, 0, sizeof *m);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        snprintf(err, errlen, "%s: cannot open: %s", path, strerror(errno));
        return -errno;
    }
    struct stat sb;
    if (fstat(fd, &sb) < 0 || !S_ISREG(sb.st_mode)) {
        snprintf(err, errlen, "%s: not a regular file", path);
        close(fd);
        return RL_EINVAL;
    }
    m->len = (size_t)sb.st_size;
    if (m->len > 0) {
        m->map = mmap(NULL, m->len, PROT_READ, MAP_PRIVATE, fd, 0);
        if (m->map == MAP_FAILED) {
            m->map = NULL;
            snprintf(err, errlen, "%s: mmap failed: %s", path, strerror(errno));
            close(fd);
            return RL_ENOMEM;
        }
    }
    close(fd);
    m->path = strdup(path);
    return 0;
}

void rl_st_close(rl_safetensors *st)
{
    if (!st)
        return;
    for (int i = 0; i < st->n_files; i++) {
        if (st->files[i].map)
            munmap(st->files[i].map, st->files[i].len);
        free(st->files[i].path);
    }
    free(st->files);
    rl_st_free_tensors(st->tensors, st->n_tensors);
    free(st);
}

/* Adds one file's tensors to st (tensors re-sorted by the caller). */
static int add_file(rl_safetensors *st, const char *path, char *err, size_t errlen)
{
    st_map *files = realloc(st->files, sizeof *files * (size_t)(st->n_files + 1));
    if (!files) {
        snprintf(err, errlen, "%s: out of memory", path);
        return RL_ENOMEM;
    }
    st->files = files;
    int rc = map_file(&files[st->n_files], path, err, errlen);
    if (rc)
        return rc;
    st_map *m = &files[st->n_files++];
    rl_st_tensor *t;
    int n;
    rc = rl_st_parse(m->map, m->len, path, &t, &n, err, errlen);
    if (rc)
        return rc;
    rl_st_tensor *all = realloc(st->tensors, sizeof *all * (size_t)(st->n_tensors + n + 1));
    if (!all) {
        rl_st_free_tensors(t, n);
        snprintf(err, errlen, "%s: out of memory", path);
        return RL_ENOMEM;
    }
    for (int i = 0; i < n; i++) {
        t[i].file = st->n_files - 1;
        all[st->n_tensors + i] = t[i];
    }
    free(t); /* names moved into all */
    st->tensors = all;
    st->n_tensors += n;
    return 0;
}

static int sort_and_check_unique(rl_safetensors *st, char *err, size_t errlen)
{
    qsort(st->tensors, (size_t)st->n_tensors, sizeof *st->tensors, by_name);
    for (int i = 1; i < st->n_tensors; i++)
        if (strcmp(st->tensors[i].name, st->tensors[i - 1].name) == 0) {
            snprintf(err, errlen, "tensor \"%s\" appears in both %s and %s", st->tensors[i].name,
                     st->files[st->tensors[i - 1].file].path, st->files[st->tensors[i].file].path);
            return RL_EINVAL;
        }
    return 0;
}

int rl_st_open_file(rl_safetensors **out, const char *path, char *err, size_t errlen)
{
    *out = NULL;
    rl_safetensors *st = calloc(1, sizeof *st);
    if (!st) {
        snprintf(err, errlen, "out of memory");
        return RL_ENOMEM;
    }
    int rc = add_file(st, path, err, errlen);
    if (rc) {
        rl_st_close(st);
        return rc;
    }
    *out = st;
    return 0;
}

/* model.safetensors.index.json: {"weight_map": {"tensor": "shard file", ...}}.
 * Every shard named is opened once; every mapped tensor must be in its shard. */
static int open_index(rl_safetensors *st, const char *dir, const char *index_path, char *err, size_t errlen)
{
    json_error_t jerr;
    json_t *root = json_load_file(index_path, JSON_REJECT_DUPLICATES, &jerr);
    if (!root) {
        snprintf(err, errlen, "%s: not valid JSON: %s (line %d)", index_path, jerr.text, jerr.line);
        return RL_EINVAL;
    }
    int rc = 0;
    json_t *wm = json_object_get(root, "weight_map");
    if (!json_is_object(wm) || json_object_size(wm) == 0) {
        snprintf(err, errlen, "%s: needs a non-empty \"weight_map\" object", index_path);
        rc = RL_EINVAL;
        goto out;
    }
    json_t *opened = json_object();
    const char *name;
    json_t *file;
    json_object_foreach(wm, name, file)
    {
        const char *f = json_string_value(file);
        if (!f || !*f || strchr(f, '/') || strcmp(f, "..") == 0) {
            snprintf(err, errlen, "%s: weight_map[\"%s\"] must be a file name inside the folder", index_path, name);
            rc = RL_EINVAL;
            break;
        }
        if (json_object_get(opened, f))
            continue;
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", dir, f);
        rc = add_file(st, path, err, errlen);
        if (rc)
            break;
        json_object_set_new(opened, f, json_true());
    }
    json_decref(opened);
    if (!rc)
        rc = sort_and_check_unique(st, err, errlen);
    if (!rc)
        json_object_foreach(wm, name, file)
        {
            const rl_st_tensor *t = rl_st_find(st, name);
            const char *f = json_string_value(file);
            const char *slash = t ? strrchr(st->files[t->file].path, '/') : NULL;
            if (!t || strcmp(slash ? slash + 1 : st->files[t->file].path, f) != 0) {
                snprintf(err, errlen, "%s: weight_map says \"%s\" is in %s, but that shard does not hold it",
                         index_path, name, f);
                rc = RL_EINVAL;
                break;
            }
        }
out:
    json_decref(root);
    return rc;
}

int rl_st_open_dir(rl_safetensors **out, const char *dir, char *err, size_t errlen)
{
    *out = NULL;
    char path[4096];
    snprintf(path, sizeof path, "%s/model.safetensors.index.json", dir);
    if (access(path, F_OK) != 0) {
        snprintf(path, sizeof path, "%s/model.safetensors", dir);
        if (access(path, F_OK) != 0) {
            snprintf(err, errlen, "%s: no model.safetensors or model.safetensors.index.json in this folder", dir);
            return RL_EINVAL;
        }
        return rl_st_open_file(out, path, err, errlen);
    }
    rl_safetensors *st = calloc(1, sizeof *st);
    if (!st) {
        snprintf(err, errlen, "out of memory");
        return RL_ENOMEM;
    }
    int rc = open_index(st, dir, path, err, errlen);
    if (rc) {
        rl_st_close(st);
        return rc;
    }
    *out = st;
    return 0;
}

int rl_st_count(const rl_safetensors *st) { return st->n_tensors; }
const rl_st_tensor *rl_st_at(const rl_safetensors *st, int i) { return &st->tensors[i]; }

const rl_st_tensor *rl_st_find(const rl_safetensors *st, const char *name)
{
    rl_st_tensor key = {.name = (char *)name};
    return bsearch(&key, st->tensors, (size_t)st->n_tensors, sizeof key, by_name);
}

static void shape_str(char *buf, size_t len, int ndim, const int64_t *shape)
{
    size_t pos = (size_t)snprintf(buf, len, "[");
    for (int i = 0; i < ndim && pos < len; i++)
        pos += (size_t)snprintf(buf + pos, len - pos, "%s%lld", i ? ", " : "", (long long)shape[i]);
    if (pos < len)
        snprintf(buf + pos, len - pos, "]");
}

int rl_st_read_f32(const rl_safetensors *st, const char *name, float *dst, int ndim, const int64_t *shape,
                   char *err, size_t errlen)
{
    const rl_st_tensor *t = rl_st_find(st, name);
    if (!t) {
        snprintf(err, errlen, "tensor \"%s\" is missing from the checkpoint (%s%s)", name, st->files[0].path,
                 st->n_files > 1 ? " and other shards" : "");
        return RL_EINVAL;
    }
    int same = t->ndim == ndim;
    for (int i = 0; same && i < ndim; i++)
        same = t->shape[i] == shape[i];
    if (!same) {
        char have[128], want[128];
        shape_str(have, sizeof have, t->ndim, t->shape);
        shape_str(want, sizeof want, ndim, shape);
        snprintf(err, errlen, "tensor \"%s\" in %s has shape %s but config.json implies %s", name,
                 st->files[t->file].path, have, want);
        return RL_EINVAL;
    }
    size_t n = (size_t)((t->end - t->begin) / rl_st_dtype_size(t->dtype));
    const uint8_t *p = t->data;
    switch (t->dtype) {
    case RL_ST_F32:
        memcpy(dst, p, n * 4);
        return 0;
    case RL_ST_BF16:
    case RL_ST_F16:
        for (size_t i = 0; i < n; i++) {
            uint16_t h = (uint16_t)(p[2 * i] | p[2 * i + 1] << 8);
            dst[i] = t->dtype == RL_ST_BF16 ? rl_bf16_to_f32(h) : rl_f16_to_f32(h);
        }
        return 0;
    default:
        snprintf(err, errlen, "tensor \"%s\" in %s has dtype %s; model weights must be F32, BF16 or F16", name,
                 st->files[t->file].path, rl_st_dtype_name(t->dtype));
        return RL_EINVAL;
    }
}
