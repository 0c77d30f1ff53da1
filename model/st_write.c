/* st_write.c — streaming safetensors writer: the header is known up front (the
 * tensors' names, dtypes and shapes), the data is appended in order, so a
 * [seq, vocab] logits tensor can be written one chunk of rows at a time. */
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "safetensors.h"

struct rl_st_writer {
    FILE *f;
    char *path, *tmp;
    uint64_t *sizes;     /* element count per tensor */
    rl_dtype *dtypes;
    int n, cur;          /* tensors, tensor being filled */
    uint64_t cur_done;   /* elements of tensor cur already written */
};

void rl_st_writer_abort(rl_st_writer *w)
{
    if (!w)
        return;
    if (w->f)
        fclose(w->f);
    if (w->tmp)
        unlink(w->tmp);
    free(w->path), free(w->tmp), free(w->sizes), free(w->dtypes);
    free(w);
}

int rl_st_writer_open(rl_st_writer **out, const char *path, const rl_st_entry *e, int n, const char *const *meta,
                      int n_meta, char *err, size_t errlen)
{
    *out = NULL;
    rl_st_writer *w = calloc(1, sizeof *w);
    json_t *root = json_object();
    char *hdr = NULL;
    int rc = RL_ENOMEM;
    if (!w || !root)
        goto fail;
    w->n = n;
    w->sizes = calloc((size_t)n + 1, sizeof *w->sizes);
    w->dtypes = calloc((size_t)n + 1, sizeof *w->dtypes);
    w->path = strdup(path);
    w->tmp = malloc(strlen(path) + 5);
    if (!w->sizes || !w->dtypes || !w->path || !w->tmp)
        goto fail;
    sprintf(w->tmp, "%s.tmp", path);
    uint64_t off = 0;
    for (int i = 0; i < n; i++) {
        if (e[i].dtype != RL_DTYPE_F32 && e[i].dtype != RL_DTYPE_BF16 && e[i].dtype != RL_DTYPE_F16) {
            snprintf(err, errlen, "%s: tensor \"%s\": unsupported dtype", path, e[i].name);
            rc = RL_EINVAL;
            goto fail;
        }
        json_t *shape = json_array();
        uint64_t count = 1;
        for (int d = 0; d < e[i].ndim; d++) {
            json_array_append_new(shape, json_integer(e[i].shape[d]));
            count *= (uint64_t)e[i].shape[d];
        }
        uint64_t bytes = count * rl_dtype_size(e[i].dtype);
        json_t *ent = json_object();
        json_object_set_new(ent, "dtype", json_string(rl_dtype_name(e[i].dtype)));
        json_object_set_new(ent, "shape", shape);
        json_object_set_new(ent, "data_offsets", json_pack("[II]", (json_int_t)off, (json_int_t)(off + bytes)));
        if (json_object_get(root, e[i].name)) {
            snprintf(err, errlen, "%s: tensor name \"%s\" given twice", path, e[i].name);
            json_decref(ent);
            rc = RL_EINVAL;
            goto fail;
        }
        json_object_set_new(root, e[i].name, ent);
        w->sizes[i] = count;
        w->dtypes[i] = e[i].dtype;
        off += bytes;
    }
    if (n_meta > 0) {
        json_t *m = json_object();
        for (int i = 0; i < n_meta; i++)
            json_object_set_new(m, meta[2 * i], json_string(meta[2 * i + 1]));
        json_object_set_new(root, "__metadata__", m);
    }
    hdr = json_dumps(root, JSON_COMPACT | JSON_PRESERVE_ORDER);
    if (!hdr)
        goto fail;
    size_t hlen = strlen(hdr), padded = (hlen + 7) & ~(size_t)7; /* data starts 8-aligned */
    w->f = fopen(w->tmp, "wb");
    if (!w->f) {
        snprintf(err, errlen, "%s: cannot create: %s", w->tmp, strerror(errno));
        rc = -errno;
        goto fail;
    }
    uint8_t len8[8];
    for (int i = 0; i < 8; i++)
        len8[i] = (uint8_t)((uint64_t)padded >> (8 * i));
    if (fwrite(len8, 1, 8, w->f) != 8 || fwrite(hdr, 1, hlen, w->f) != hlen ||
        fwrite("        ", 1, padded - hlen, w->f) != padded - hlen) {
        snprintf(err, errlen, "%s: write failed: %s", w->tmp, strerror(errno));
        rc = RL_EINVAL;
        goto fail;
    }
    free(hdr);
    json_decref(root);
    while (w->cur < w->n && w->sizes[w->cur] == 0)
        w->cur++;
    *out = w;
    return 0;
fail:
    if (rc == RL_ENOMEM)
        snprintf(err, errlen, "%s: out of memory building the header", path);
    free(hdr);
    json_decref(root);
    rl_st_writer_abort(w);
    return rc;
}

int rl_st_writer_append(rl_st_writer *w, const float *src, size_t n, char *err, size_t errlen)
{
    uint16_t buf[4096];
    while (n > 0) {
        if (w->cur >= w->n) {
            snprintf(err, errlen, "%s: %zu values written past the last tensor", w->path, n);
            return RL_EINVAL;
        }
        uint64_t left = w->sizes[w->cur] - w->cur_done;
        size_t take = n < left ? n : (size_t)left;
        size_t done = 0;
        if (w->dtypes[w->cur] == RL_DTYPE_F32) {
            done = fwrite(src, 4, take, w->f) == take ? take : 0;
        } else {
            for (size_t i = 0; i < take; i += 4096) {
                size_t m = take - i < 4096 ? take - i : 4096;
                for (size_t j = 0; j < m; j++)
                    buf[j] = w->dtypes[w->cur] == RL_DTYPE_BF16 ? rl_f32_to_bf16(src[i + j])
                                                                : rl_f32_to_f16(src[i + j]);
                if (fwrite(buf, 2, m, w->f) != m)
                    break;
                done += m;
            }
        }
        if (done != take) {
            snprintf(err, errlen, "%s: write failed: %s (disk full?)", w->tmp, strerror(errno));
            return RL_EINVAL;
        }
        src += take, n -= take;
        w->cur_done += take;
        while (w->cur < w->n && w->cur_done == w->sizes[w->cur]) {
            w->cur++;
            w->cur_done = 0;
        }
    }
    return 0;
}

int rl_st_writer_finish(rl_st_writer *w, char *err, size_t errlen)
{
    int rc = 0;
    if (w->cur < w->n) {
        snprintf(err, errlen, "%s: finished with tensor %d of %d incomplete", w->path, w->cur, w->n);
        rc = RL_EINVAL;
    } else if (fflush(w->f) != 0 || fsync(fileno(w->f)) != 0) {
        snprintf(err, errlen, "%s: flush failed: %s (disk full?)", w->tmp, strerror(errno));
        rc = RL_EINVAL;
    }
    if (fclose(w->f) != 0 && !rc) {
        snprintf(err, errlen, "%s: close failed: %s", w->tmp, strerror(errno));
        rc = RL_EINVAL;
    }
    w->f = NULL;
    if (!rc && rename(w->tmp, w->path) != 0) {
        snprintf(err, errlen, "cannot rename %s to %s: %s", w->tmp, w->path, strerror(errno));
        rc = RL_EINVAL;
    }
    if (!rc) {
        free(w->tmp);
        w->tmp = NULL; /* nothing to unlink */
    }
    rl_st_writer_abort(w);
    return rc;
}
