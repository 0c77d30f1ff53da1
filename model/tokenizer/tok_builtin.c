/* tok_builtin.c — the byte-level vocabulary ("bytes"): id b is byte b (0..255), and one special token,
 * <|endoftext|> = 256, the end of every document.  Vocabulary size 257.
 *
 * It is an ordinary tokenizer.json — a BPE model with the GPT-2 byte-to-character map as its vocabulary
 * and no merges — so encoding, decoding, token files and `radlads tokenize` need no special path, and
 * the same JSON can be written into a model folder as that model's tokenizer.  Without merges every
 * byte of the pre-tokenized text stays a token, so the ids are the UTF-8 bytes of the text. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tokenizer.h"

#define BYTES_EOS 256

/* GPT-2's bytes_to_unicode: printable Latin-1 bytes map to themselves, the other 68 to U+0100 onward. */
static unsigned byte_char(unsigned b)
{
    if ((b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF)) return b;
    unsigned n = 0;
    for (unsigned c = 0; c < b; c++)
        if (!((c >= '!' && c <= '~') || (c >= 0xA1 && c <= 0xAC) || (c >= 0xAE && c <= 0xFF))) n++;
    return 256 + n;
}

static void utf8_put(unsigned cp, char out[4])
{
    memset(out, 0, 4);
    if (cp < 0x80) {
        out[0] = (char)cp;
    } else { /* every byte_char is < U+0800: two bytes */
        out[0] = (char)(0xC0 | (cp >> 6));
        out[1] = (char)(0x80 | (cp & 0x3F));
    }
}

char *tok_builtin_json(const char *name, char **config_json)
{
    *config_json = NULL;
    if (strcmp(name, TOK_BUILTIN_BYTES) != 0) return NULL;
    json_t *vocab = json_object();
    for (unsigned b = 0; b < 256 && vocab; b++) {
        char key[4];
        utf8_put(byte_char(b), key);
        json_object_set_new(vocab, key, json_integer(b));
    }
    json_t *level = json_pack("{s:s, s:b, s:b, s:b}", "type", "ByteLevel", "add_prefix_space", 0, "trim_offsets", 1,
                              "use_regex", 1);
    json_t *doc = json_pack(
        "{s:s, s:[{s:i, s:s, s:b, s:b, s:b, s:b, s:b}], s:n, s:O, s:n, s:o, "
        "s:{s:s, s:n, s:n, s:n, s:n, s:b, s:b, s:b, s:o, s:[]}}",
        "version", "1.0", "added_tokens", "id", BYTES_EOS, "content", "<|endoftext|>", "single_word", 0, "lstrip", 0,
        "rstrip", 0, "normalized", 0, "special", 1, "normalizer", "pre_tokenizer", level, "post_processor", "decoder",
        level, "model", "type", "BPE", "dropout", "unk_token", "continuing_subword_prefix", "end_of_word_suffix",
        "fuse_unk", 0, "byte_fallback", 0, "ignore_merges", 0, "vocab", vocab, "merges");
    json_t *cfg = json_pack("{s:s, s:s, s:i}", "tokenizer_class", "PreTrainedTokenizerFast", "eos_token",
                            "<|endoftext|>", "model_max_length", 1 << 20);
    char *text = doc ? json_dumps(doc, JSON_INDENT(1) | JSON_PRESERVE_ORDER) : NULL;
    *config_json = cfg ? json_dumps(cfg, JSON_INDENT(2) | JSON_PRESERVE_ORDER) : NULL;
    json_decref(doc), json_decref(cfg);
    if (!doc) json_decref(vocab), json_decref(level);
    if (!text || !*config_json) {
        free(text), free(*config_json);
        *config_json = NULL;
        return NULL;
    }
    return text;
}

int tok_load_builtin(const char *name, tok_tokenizer **out, char *err, size_t errlen)
{
    char *cfg = NULL, *json = tok_builtin_json(name, &cfg);
    if (!json) {
        if (err && errlen)
            snprintf(err, errlen, "\"%s\" is not a built-in tokenizer (the built-in one is \"%s\": 256 bytes + "
                     "<|endoftext|>)", name, TOK_BUILTIN_BYTES);
        return strcmp(name, TOK_BUILTIN_BYTES) ? TOK_EINVAL : TOK_ENOMEM;
    }
    int rc = tok_load_json(json, strlen(json), cfg, strlen(cfg), name, out, err, errlen);
    free(json), free(cfg);
    return rc;
}
