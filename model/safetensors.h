/* safetensors.h — reading and writing HuggingFace safetensors files.
 *
 * Format: u64 little-endian header length n, n bytes of JSON
 *   {"name": {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]}, ...,
 *    "__metadata__": {"k": "v"}}
 * then the data section; offsets are relative to it. The reader maps the file
 * and refuses anything that does not add up: header over RL_ST_MAX_HEADER,
 * invalid or duplicate-key JSON, unknown dtypes, shapes whose byte size differs
 * from their offsets, offsets out of bounds, overlapping or leaving holes. */
#ifndef RL_SAFETENSORS_H
#define RL_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include "kernels.h"

#define RL_ST_MAX_HEADER (100u << 20) /* the same limit as the reference implementation */
#define RL_ST_MAX_DIMS 8

typedef enum {
    RL_ST_BOOL, RL_ST_U8, RL_ST_I8, RL_ST_U16, RL_ST_I16, RL_ST_F16, RL_ST_BF16,
    RL_ST_U32, RL_ST_I32, RL_ST_F32, RL_ST_U64, RL_ST_I64, RL_ST_F64,
} rl_st_dtype;

typedef struct {
    char *name;
    rl_st_dtype dtype;
    int ndim;
    int64_t shape[RL_ST_MAX_DIMS];
    uint64_t begin, end; /* within the data section */
    const uint8_t *data; /* mapped bytes (NULL for a header parsed without data) */
    int file;            /* shard index */
} rl_st_tensor;

typedef struct rl_safetensors rl_safetensors;

/* Parses and validates a whole file image (header + data) held in memory.
 * On success *tensors (n_tensors entries, sorted by name) point into buf.
 * This is the function the fuzz target drives. */
int rl_st_parse(const uint8_t *buf, size_t len, const char *what, rl_st_tensor **tensors, int *n_tensors,
                char *err, size_t errlen);
void rl_st_free_tensors(rl_st_tensor *tensors, int n);

/* Opens one .safetensors file (mmap). */
int rl_st_open_file(rl_safetensors **out, const char *path, char *err, size_t errlen);
/* Opens a model folder: model.safetensors.index.json (sharded) if present, else
 * model.safetensors. */
int rl_st_open_dir(rl_safetensors **out, const char *dir, char *err, size_t errlen);
void rl_st_close(rl_safetensors *st);

int rl_st_count(const rl_safetensors *st);
const rl_st_tensor *rl_st_at(const rl_safetensors *st, int i);
const rl_st_tensor *rl_st_find(const rl_safetensors *st, const char *name);
const char *rl_st_dtype_name(rl_st_dtype dt);
size_t rl_st_dtype_size(rl_st_dtype dt);

/* Copies tensor `name` into dst as f32 (from F32, BF16 or F16), after checking
 * that it exists and has exactly the expected shape. */
int rl_st_read_f32(const rl_safetensors *st, const char *name, float *dst, int ndim, const int64_t *shape,
                   char *err, size_t errlen);

/* ---- writer: header first, then the data of each tensor in order ---- */

typedef struct {
    const char *name;
    rl_dtype dtype; /* F32, BF16 or F16 on disk; data is always given as f32 */
    int ndim;
    int64_t shape[RL_ST_MAX_DIMS];
} rl_st_entry;

typedef struct rl_st_writer rl_st_writer;

/* Writes to path.tmp, renamed to path by rl_st_writer_finish after fsync.
 * metadata: NULL or n_meta key/value string pairs. */
int rl_st_writer_open(rl_st_writer **out, const char *path, const rl_st_entry *entries, int n,
                      const char *const *metadata, int n_meta, char *err, size_t errlen);
/* Appends n f32 values; they fill the tensors in order, converted to each
 * tensor's dtype. */
int rl_st_writer_append(rl_st_writer *w, const float *src, size_t n, char *err, size_t errlen);
/* Checks every byte was written, fsyncs and renames. Frees w in every case. */
int rl_st_writer_finish(rl_st_writer *w, char *err, size_t errlen);
void rl_st_writer_abort(rl_st_writer *w);

#endif
