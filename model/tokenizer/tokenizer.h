/* tokenizer: HuggingFace `tokenizer.json` byte-level BPE (GPT-2, Llama 3, Qwen2/2.5/3) in C,
 * and the token files that `radlads tokenize` writes and the trainer reads.
 *
 * Encoding follows the HuggingFace `tokenizers` pipeline step by step, so that ids are equal:
 *   1. added tokens with normalized=false are cut out of the raw text (leftmost-longest, honouring
 *      single_word / lstrip / rstrip); without TOK_ENCODE_SPECIAL the special ones are treated
 *      as if the tokenizer did not have them, so their text is encoded as ordinary text;
 *   2. every remaining piece is normalized (NFC or nothing), then added tokens with normalized=true
 *      are cut out of the normalized piece;
 *   3. the pre-tokenizer splits each piece: `Split` steps run a regex through PCRE2 (the Oniguruma
 *      pattern is translated where the two dialects differ), `ByteLevel` maps bytes (and, with
 *      use_regex, splits with the GPT-2 pattern);
 *   4. each word is merged by BPE rank (lowest rank first, leftmost on ties), or looked up whole
 *      when the model sets ignore_merges.
 * Post-processors are not applied: ids equal HF's `encode(text, add_special_tokens=False)`.
 *
 * Text must be UTF-8; invalid sequences are replaced by U+FFFD first (one per maximal invalid
 * subpart, as Rust's from_utf8_lossy and JavaScript's TextDecoder do).
 *
 * Errors are values: functions return 0 or a negative TOK_E* code and write a message saying what
 * is wrong and how to fix it into `err` (when err is not NULL). A tokenizer is immutable after
 * tok_load and may be shared by threads; each thread encodes with its own tok_state. */
#ifndef RADLADS_TOKENIZER_H
#define RADLADS_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

enum {
    TOK_OK = 0,
    TOK_EINVAL = -22, /* bad tokenizer file, bad argument, unknown id */
    TOK_ENOMEM = -12,
    TOK_EIO = -5, /* a file could not be read or written */
};

#define TOK_ENCODE_SPECIAL 1u      /* special added tokens in the text become their ids (HF default) */
#define TOK_DECODE_SKIP_SPECIAL 1u /* drop special tokens from decoded text */

typedef struct tok_tokenizer tok_tokenizer;
typedef struct tok_state tok_state;

/* Growable arrays owned by the caller; zero-initialise, release with tok_ids_free / tok_bytes_free.
 * Encoding appends, so one buffer can be reused (set n = 0) without reallocating. */
typedef struct {
    uint32_t *v;
    size_t n, cap;
} tok_ids;
typedef struct {
    char *v;
    size_t n, cap;
} tok_bytes;

int tok_ids_reserve(tok_ids *a, size_t extra);
void tok_ids_free(tok_ids *a);
int tok_bytes_append(tok_bytes *b, const void *data, size_t len);
void tok_bytes_free(tok_bytes *b);

/* path: a tokenizer.json file, or a folder holding tokenizer.json. tokenizer_config.json beside it
 * (optional) supplies eos_token. */
int tok_load(const char *path, tok_tokenizer **out, char *err, size_t errlen);
/* The same from memory; `name` only labels error messages. config_json may be NULL. */
int tok_load_json(const char *json, size_t len, const char *config_json, size_t config_len, const char *name,
                  tok_tokenizer **out, char *err, size_t errlen);
void tok_free(tok_tokenizer *t);

uint32_t tok_vocab_size(const tok_tokenizer *t); /* 1 + the largest id (model vocab and added) */
int64_t tok_token_id(const tok_tokenizer *t, const char *content, size_t len); /* -1: none */
/* The end-of-document token: tokenizer_config.json's eos_token, else <|endoftext|> or
 * <|end_of_text|> or </s> when present; -1 when there is none. */
int64_t tok_eos_id(const tok_tokenizer *t);
int tok_is_special(const tok_tokenizer *t, uint32_t id);
/* The bytes one id decodes to (not NUL-terminated); TOK_EINVAL for an id with no token. */
int tok_id_bytes(const tok_tokenizer *t, uint32_t id, const char **bytes, size_t *len);
/* FNV-1a 64 of tokenizer.json's bytes: token files record it so a mismatch can be detected. */
uint64_t tok_fingerprint(const tok_tokenizer *t);

tok_state *tok_state_new(const tok_tokenizer *t); /* NULL when out of memory */
void tok_state_free(tok_state *s);

/* Appends the ids of text[0..len) to out. */
int tok_encode(tok_state *s, const char *text, size_t len, unsigned flags, tok_ids *out, char *err,
               size_t errlen);
/* Appends the decoded bytes of ids to out (raw bytes, possibly invalid UTF-8 when a sequence of
 * ids cuts a character; tok_utf8_repair gives the text HF's decode returns). Unknown ids are an
 * error, where HF would drop them silently. */
int tok_decode(const tok_tokenizer *t, const uint32_t *ids, size_t n, unsigned flags, tok_bytes *out,
               char *err, size_t errlen);
/* Appends in[0..len) to out with every maximal invalid UTF-8 subpart replaced by U+FFFD; returns
 * the number of replacements, or TOK_ENOMEM. */
long tok_utf8_repair(const char *in, size_t len, tok_bytes *out);
/* Length of the valid UTF-8 prefix of in[0..len). */
size_t tok_utf8_valid_prefix(const char *in, size_t len);

/* ---- built-in vocabularies --------------------------------------------------------------------
 * "bytes": id b = byte b (0..255) and <|endoftext|> = 256 (the EOS), vocabulary size 257 — for models
 * made here, where no pretrained tokenizer is at hand.  It behaves as the tokenizer.json that
 * tok_builtin_json returns (BPE over GPT-2's byte characters, no merges): text is UTF-8 (invalid
 * sequences become U+FFFD's bytes, as for every tokenizer). */
#define TOK_BUILTIN_BYTES "bytes"
int tok_load_builtin(const char *name, tok_tokenizer **out, char *err, size_t errlen);
/* The tokenizer.json text of a built-in (malloc'd; NULL for an unknown name or out of memory), and its
 * tokenizer_config.json (eos_token) in *config_json. */
char *tok_builtin_json(const char *name, char **config_json);

/* ---- token files ---------------------------------------------------------------------------
 *
 * Two formats hold a tokenized corpus: a sequence of documents, each a sequence of token ids that
 * ends with the EOS token (when the tokenizer has one).
 *
 * radlads format, one file PREFIX.tok, all integers little-endian:
 *   offset size field
 *        0    8 magic "RLTOKENS"
 *        8    4 version, = 1
 *       12    4 dtype: bytes per token id, 2 (uint16) or 4 (uint32); 2 when vocab_size <= 65536
 *       16    8 n_tokens
 *       24    8 n_docs
 *       32    4 vocab_size of the tokenizer
 *       36    4 eos_id, 0xFFFFFFFF when none
 *       40    8 tokenizer fingerprint (tok_fingerprint)
 *       48   16 reserved, zero
 *       64    n_tokens * dtype bytes: the ids
 *        …    (n_docs + 1) * 8 bytes: uint64 token offsets; document i is tokens [off[i], off[i+1]),
 *             off[0] = 0, off[n_docs] = n_tokens, non-decreasing
 *   The file size must equal 64 + n_tokens*dtype + (n_docs+1)*8 exactly; readers check all of it.
 *
 * binidx, Megatron-LM / RWKV-LM "MMIDIDX" indexed dataset, two files:
 *   PREFIX.bin: the ids, concatenated, as the dtype below.
 *   PREFIX.idx: magic "MMIDIDX\0\0" (9 bytes), uint64 version = 1, uint8 dtype code (8 = uint16,
 *     4 = int32; also read: 1 uint8, 2 int8, 3 int16, 5 int64), uint64 n_sequences, uint64 n_doc_idx,
 *     then int32 sizes[n_sequences] (tokens per sequence), int64 pointers[n_sequences] (byte offset
 *     of each sequence in .bin), int64 doc_idx[n_doc_idx] (= 0, 1, …, n_sequences: one sequence
 *     per document). We write uint16 when vocab_size <= 65536 and int32 otherwise. */

typedef enum { TOK_FORMAT_RADLADS = 1, TOK_FORMAT_BINIDX = 2 } tok_format;

typedef struct tok_file tok_file;
/* path: PREFIX.tok, or PREFIX / PREFIX.bin / PREFIX.idx of a binidx pair. Maps the files read-only. */
int tok_file_open(const char *path, tok_file **out, char *err, size_t errlen);
void tok_file_close(tok_file *f);
tok_format tok_file_format(const tok_file *f);
uint64_t tok_file_n_tokens(const tok_file *f);
uint64_t tok_file_n_docs(const tok_file *f);
uint32_t tok_file_vocab_size(const tok_file *f); /* 0 for binidx: it does not record one */
int64_t tok_file_eos_id(const tok_file *f);      /* -1 when none, and for binidx */
uint64_t tok_file_fingerprint(const tok_file *f); /* tok_fingerprint of the writer; 0 for binidx */
/* Document doc spans tokens [*begin, *end). */
int tok_file_doc(const tok_file *f, uint64_t doc, uint64_t *begin, uint64_t *end);
/* Copies tokens [start, start+n) as uint32. */
int tok_file_read(const tok_file *f, uint64_t start, size_t n, uint32_t *out, char *err, size_t errlen);

typedef struct tok_writer tok_writer;
int tok_writer_open(const char *prefix, tok_format format, uint32_t vocab_size, int64_t eos_id,
                    uint64_t fingerprint, tok_writer **out, char *err, size_t errlen);
/* Appends ids to the current document; tok_writer_end_doc closes it (the caller appends EOS). */
int tok_writer_write(tok_writer *w, const uint32_t *ids, size_t n, char *err, size_t errlen);
int tok_writer_end_doc(tok_writer *w, char *err, size_t errlen);
int tok_writer_add_doc(tok_writer *w, const uint32_t *ids, size_t n, char *err, size_t errlen);
/* Finishes the files (header, index), fsyncs and renames them into place; frees w either way. */
int tok_writer_close(tok_writer *w, char *err, size_t errlen);
void tok_writer_abort(tok_writer *w); /* removes the partial files and frees w */

/* ---- corpus tokenization (radlads tokenize) ------------------------------------------------- */

typedef enum { TOK_INPUT_AUTO = 0, TOK_INPUT_TEXT, TOK_INPUT_JSONL } tok_input_kind;

typedef struct {
    const char *const *inputs; /* files: plain text (one document per file) or JSON lines (one per
                                  line, text in `text_field`); either may be zstd-compressed */
    size_t n_inputs;
    tok_input_kind input_kind; /* AUTO: JSON lines when the name contains ".jsonl" or ".json" */
    const char *text_field;    /* default "text" */
    const char *out_prefix;
    tok_format format;
    int threads;           /* >= 1; output is identical for every value */
    unsigned encode_flags; /* TOK_ENCODE_SPECIAL */
    int64_t eos_id;        /* appended after every document; -1: none */
    int progress;          /* draw a progress bar on stderr */
} tok_corpus_opts;

typedef struct {
    uint64_t docs, tokens, bytes, replaced_utf8;
    double seconds;
} tok_corpus_stats;

int tok_corpus_run(const tok_tokenizer *t, const tok_corpus_opts *o, tok_corpus_stats *st, char *err,
                   size_t errlen);

#ifdef __cplusplus
}
#endif
#endif
