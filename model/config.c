/* config.c — HuggingFace config.json for Qwen2, Qwen3, Llama and Mistral causal
 * LMs, and the RoPE frequency tables they imply. */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "model.h"

static const struct {
    const char *arch, *model_type, *short_name;
} arch_names[] = {
    [RL_MODEL_QWEN2] = {"Qwen2ForCausalLM", "qwen2", "qwen2"},
    [RL_MODEL_QWEN3] = {"Qwen3ForCausalLM", "qwen3", "qwen3"},
    [RL_MODEL_LLAMA] = {"LlamaForCausalLM", "llama", "llama"},
    [RL_MODEL_MISTRAL] = {"MistralForCausalLM", "mistral", "mistral"},
};

const char *rl_model_arch_name(rl_model_arch a) { return arch_names[a].short_name; }

int rl_model_arch_from_name(const char *s, rl_model_arch *out)
{
    for (int i = 0; i < 4; i++)
        if (strcmp(s, arch_names[i].arch) == 0 || strcmp(s, arch_names[i].model_type) == 0) {
            *out = (rl_model_arch)i;
            return 0;
        }
    return RL_EINVAL;
}

#define FAIL(...)                                                                                            \
    do {                                                                                                     \
        snprintf(err, errlen, __VA_ARGS__);                                                                  \
        rc = RL_EINVAL;                                                                                      \
        goto out;                                                                                            \
    } while (0)

/* Reads an optional integer field; a present field of the wrong type is an error. */
static int get_int(json_t *o, const char *key, int *dst, int required, const char *what, char *err, size_t errlen)
{
    json_t *v = json_object_get(o, key);
    if (!v || json_is_null(v)) {
        if (required) {
            snprintf(err, errlen, "%s: required field \"%s\" is missing", what, key);
            return RL_EINVAL;
        }
        return 0;
    }
    if (!json_is_integer(v) || json_integer_value(v) < -1 || json_integer_value(v) > 0x7fffffff) {
        snprintf(err, errlen, "%s: \"%s\" must be an integer that fits in 32 bits", what, key);
        return RL_EINVAL;
    }
    *dst = (int)json_integer_value(v);
    return 0;
}

static int get_num(json_t *o, const char *key, double *dst, const char *what, char *err, size_t errlen)
{
    json_t *v = json_object_get(o, key);
    if (!v || json_is_null(v))
        return 0;
    if (!json_is_number(v)) {
        snprintf(err, errlen, "%s: \"%s\" must be a number", what, key);
        return RL_EINVAL;
    }
    *dst = json_number_value(v);
    return 0;
}

/* token id fields may be an int or a list of ints (first one used) */
static int get_token(json_t *o, const char *key, int *dst)
{
    json_t *v = json_object_get(o, key);
    if (json_is_array(v))
        v = json_array_get(v, 0);
    if (json_is_integer(v))
        *dst = (int)json_integer_value(v);
    return 0;
}

static int parse_rope_scaling(rl_model_config *c, json_t *rs, const char *what, char *err, size_t errlen)
{
    int rc = 0;
    if (!rs || json_is_null(rs))
        return 0;
    if (!json_is_object(rs))
        FAIL("%s: \"rope_scaling\" must be an object or null", what);
    json_t *t = json_object_get(rs, "rope_type");
    if (!t)
        t = json_object_get(rs, "type");
    const char *type = json_string_value(t);
    if (!type)
        FAIL("%s: rope_scaling needs a \"rope_type\"", what);
    if (strcmp(type, "default") == 0)
        return 0;
    if (get_num(rs, "factor", &c->rope_factor, what, err, errlen))
        return RL_EINVAL;
    if (!(c->rope_factor > 0))
        FAIL("%s: rope_scaling.factor must be > 0", what);
    if (strcmp(type, "linear") == 0) {
        c->rope_type = RL_ROPE_LINEAR;
    } else if (strcmp(type, "llama3") == 0) {
        c->rope_type = RL_ROPE_LLAMA3;
        c->rope_low_freq_factor = 1, c->rope_high_freq_factor = 4, c->rope_original_max_pos = 8192;
        if (get_num(rs, "low_freq_factor", &c->rope_low_freq_factor, what, err, errlen) ||
            get_num(rs, "high_freq_factor", &c->rope_high_freq_factor, what, err, errlen) ||
            get_int(rs, "original_max_position_embeddings", &c->rope_original_max_pos, 0, what, err, errlen))
            return RL_EINVAL;
        if (!(c->rope_high_freq_factor > c->rope_low_freq_factor) || c->rope_original_max_pos <= 0)
            FAIL("%s: llama3 rope_scaling needs high_freq_factor > low_freq_factor and "
                 "original_max_position_embeddings > 0", what);
    } else {
        FAIL("%s: rope_scaling type \"%s\" is not supported (supported: default, linear, llama3); converting with "
             "it ignored would change the model", what, type);
    }
out:
    return rc;
}

int rl_config_parse(rl_model_config *c, const char *text, size_t len, const char *what, char *err, size_t errlen)
{
    memset(c, 0, sizeof *c);
    int rc = 0;
    json_error_t jerr;
    json_t *o = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!o) {
        snprintf(err, errlen, "%s: not valid JSON: %s (line %d)", what, jerr.text, jerr.line);
        return RL_EINVAL;
    }
    if (!json_is_object(o))
        FAIL("%s: not a JSON object", what);
    json_t *archs = json_object_get(o, "architectures");
    const char *arch = json_string_value(json_array_get(archs, 0));
    const char *mt = json_string_value(json_object_get(o, "model_type"));
    if (!(arch && rl_model_arch_from_name(arch, &c->arch) == 0) && !(mt && rl_model_arch_from_name(mt, &c->arch) == 0))
        FAIL("%s: architecture \"%s\" (model_type \"%s\") is not supported; supported: Qwen2ForCausalLM, "
             "Qwen3ForCausalLM, LlamaForCausalLM, MistralForCausalLM", what, arch ? arch : "?", mt ? mt : "?");
    c->head_dim = 0, c->kv_heads = 0, c->rope_theta = 10000.0, c->rms_norm_eps = 1e-6;
    c->bos_token_id = c->eos_token_id = -1, c->max_position_embeddings = 32768;
    double init_range = 0.02;
    if (get_int(o, "hidden_size", &c->hidden, 1, what, err, errlen) ||
        get_int(o, "num_hidden_layers", &c->layers, 1, what, err, errlen) ||
        get_int(o, "num_attention_heads", &c->heads, 1, what, err, errlen) ||
        get_int(o, "num_key_value_heads", &c->kv_heads, 0, what, err, errlen) ||
        get_int(o, "head_dim", &c->head_dim, 0, what, err, errlen) ||
        get_int(o, "intermediate_size", &c->intermediate, 1, what, err, errlen) ||
        get_int(o, "vocab_size", &c->vocab, 1, what, err, errlen) ||
        get_int(o, "max_position_embeddings", &c->max_position_embeddings, 0, what, err, errlen) ||
        get_num(o, "rope_theta", &c->rope_theta, what, err, errlen) ||
        get_num(o, "rms_norm_eps", &c->rms_norm_eps, what, err, errlen) ||
        get_num(o, "initializer_range", &init_range, what, err, errlen)) {
        rc = RL_EINVAL;
        goto out;
    }
    c->initializer_range = (float)init_range;
    if (c->kv_heads == 0)
        c->kv_heads = c->heads;
    if (c->head_dim == 0 && c->heads > 0)
        c->head_dim = c->hidden / c->heads;
    if (c->arch == RL_MODEL_QWEN2 && c->heads > 0 && c->head_dim != c->hidden / c->heads)
        FAIL("%s: Qwen2 head_dim=%d must equal hidden_size/num_attention_heads=%d", what, c->head_dim,
             c->hidden / c->heads);
    get_token(o, "bos_token_id", &c->bos_token_id);
    get_token(o, "eos_token_id", &c->eos_token_id);
    c->tie_word_embeddings = json_is_true(json_object_get(o, "tie_word_embeddings"));
    int attention_bias = json_is_true(json_object_get(o, "attention_bias"));
    c->qkv_bias = c->arch == RL_MODEL_QWEN2 ? 1 : attention_bias;
    c->o_bias = c->arch == RL_MODEL_QWEN2 ? 0 : attention_bias;
    c->qk_norm = c->arch == RL_MODEL_QWEN3;
    if (json_is_true(json_object_get(o, "mlp_bias")))
        FAIL("%s: mlp_bias=true is not supported", what);
    const char *act = json_string_value(json_object_get(o, "hidden_act"));
    if (act && strcmp(act, "silu") != 0)
        FAIL("%s: hidden_act \"%s\" is not supported (only silu / SwiGLU)", what, act);
    double prf = 1.0, dropout = 0.0;
    if (get_num(o, "partial_rotary_factor", &prf, what, err, errlen) ||
        get_num(o, "attention_dropout", &dropout, what, err, errlen)) {
        rc = RL_EINVAL;
        goto out;
    }
    if (prf != 1.0)
        FAIL("%s: partial_rotary_factor=%g is not supported (RoPE over the whole head only)", what, prf);
    if (dropout != 0.0)
        FAIL("%s: attention_dropout=%g is not supported; set it to 0", what, dropout);
    if (c->arch == RL_MODEL_QWEN2 || c->arch == RL_MODEL_QWEN3) {
        if (json_is_true(json_object_get(o, "use_sliding_window")))
            FAIL("%s: use_sliding_window=true is not supported (full causal attention only)", what);
    } else if (get_int(o, "sliding_window", &c->sliding_window, 0, what, err, errlen)) {
        rc = RL_EINVAL;
        goto out;
    }
    rc = parse_rope_scaling(c, json_object_get(o, "rope_scaling"), what, err, errlen);
    if (!rc)
        rc = rl_config_validate(c, err, errlen);
out:
    json_decref(o);
    return rc;
}

int rl_config_validate(const rl_model_config *c, char *err, size_t errlen)
{
    if (c->hidden <= 0 || c->layers <= 0 || c->heads <= 0 || c->kv_heads <= 0 || c->intermediate <= 0 ||
        c->vocab <= 0 || c->head_dim <= 0) {
        snprintf(err, errlen, "config: hidden=%d layers=%d heads=%d kv_heads=%d head_dim=%d intermediate=%d "
                 "vocab=%d must all be positive", c->hidden, c->layers, c->heads, c->kv_heads, c->head_dim,
                 c->intermediate, c->vocab);
        return RL_EINVAL;
    }
    if (c->heads % c->kv_heads) {
        snprintf(err, errlen, "config: num_key_value_heads=%d does not divide num_attention_heads=%d", c->kv_heads,
                 c->heads);
        return RL_EINVAL;
    }
    if (c->head_dim % 2) {
        snprintf(err, errlen, "config: head_dim=%d must be even for rotate-half RoPE", c->head_dim);
        return RL_EINVAL;
    }
    if (!(c->rope_theta > 0) || !(c->rms_norm_eps > 0)) {
        snprintf(err, errlen, "config: rope_theta=%g and rms_norm_eps=%g must be > 0", c->rope_theta,
                 c->rms_norm_eps);
        return RL_EINVAL;
    }
    return 0;
}

int rl_config_load(rl_model_config *c, const char *path, char *err, size_t errlen)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        snprintf(err, errlen, "%s: cannot open (is this a model folder?)", path);
        return RL_EINVAL;
    }
    char buf[1 << 16];
    size_t n = fread(buf, 1, sizeof buf, f);
    int big = !feof(f);
    fclose(f);
    if (big) {
        snprintf(err, errlen, "%s: larger than 64 KiB; not a model config", path);
        return RL_EINVAL;
    }
    return rl_config_parse(c, buf, n, path, err, errlen);
}

int rl_config_write(const rl_model_config *c, const char *path, char *err, size_t errlen)
{
    json_t *o = json_object();
    json_object_set_new(o, "architectures", json_pack("[s]", arch_names[c->arch].arch));
    json_object_set_new(o, "model_type", json_string(arch_names[c->arch].model_type));
    json_object_set_new(o, "hidden_size", json_integer(c->hidden));
    json_object_set_new(o, "num_hidden_layers", json_integer(c->layers));
    json_object_set_new(o, "num_attention_heads", json_integer(c->heads));
    json_object_set_new(o, "num_key_value_heads", json_integer(c->kv_heads));
    json_object_set_new(o, "head_dim", json_integer(c->head_dim));
    json_object_set_new(o, "intermediate_size", json_integer(c->intermediate));
    json_object_set_new(o, "vocab_size", json_integer(c->vocab));
    json_object_set_new(o, "max_position_embeddings", json_integer(c->max_position_embeddings));
    json_object_set_new(o, "rope_theta", json_real(c->rope_theta));
    json_object_set_new(o, "rms_norm_eps", json_real(c->rms_norm_eps));
    json_object_set_new(o, "initializer_range", json_real((double)(float)c->initializer_range));
    json_object_set_new(o, "tie_word_embeddings", json_boolean(c->tie_word_embeddings));
    json_object_set_new(o, "hidden_act", json_string("silu"));
    if (c->arch != RL_MODEL_QWEN2)
        json_object_set_new(o, "attention_bias", json_boolean(c->qkv_bias));
    if (c->arch == RL_MODEL_QWEN2 || c->arch == RL_MODEL_QWEN3)
        json_object_set_new(o, "use_sliding_window", json_false());
    if (c->arch == RL_MODEL_MISTRAL)
        json_object_set_new(o, "sliding_window", c->sliding_window ? json_integer(c->sliding_window) : json_null());
    if (c->bos_token_id >= 0)
        json_object_set_new(o, "bos_token_id", json_integer(c->bos_token_id));
    if (c->eos_token_id >= 0)
        json_object_set_new(o, "eos_token_id", json_integer(c->eos_token_id));
    if (c->rope_type == RL_ROPE_LLAMA3)
        json_object_set_new(o, "rope_scaling",
                            json_pack("{s:s, s:f, s:f, s:f, s:i}", "rope_type", "llama3", "factor", c->rope_factor,
                                      "low_freq_factor", c->rope_low_freq_factor, "high_freq_factor",
                                      c->rope_high_freq_factor, "original_max_position_embeddings",
                                      c->rope_original_max_pos));
    else if (c->rope_type == RL_ROPE_LINEAR)
        json_object_set_new(o, "rope_scaling", json_pack("{s:s, s:f}", "rope_type", "linear", "factor", c->rope_factor));
    json_object_set_new(o, "torch_dtype", json_string("float32"));
    int rc = json_dump_file(o, path, JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(12));
    json_decref(o);
    if (rc) {
        snprintf(err, errlen, "%s: cannot write", path);
        return RL_EINVAL;
    }
    return 0;
}

/* inv_freq_i = θ^(−2i/N); Llama-3 scaling divides low frequencies (long
 * wavelengths) by factor, keeps high ones, and interpolates in between:
 *   λ = 2π/inv_freq;  λ < L/high: keep;  λ > L/low: inv_freq/factor;
 *   else (1−s)·inv_freq/factor + s·inv_freq,  s = (L/λ − low)/(high − low). */
void rl_rope_tables(const rl_model_config *c, int seq, float *cos_t, float *sin_t)
{
    const int half = c->head_dim / 2;
    for (int i = 0; i < half; i++) {
        double inv = pow(c->rope_theta, -2.0 * i / c->head_dim);
        if (c->rope_type == RL_ROPE_LINEAR) {
            inv /= c->rope_factor;
        } else if (c->rope_type == RL_ROPE_LLAMA3) {
            double L = c->rope_original_max_pos, wavelen = 2 * M_PI / inv;
            double lo = c->rope_low_freq_factor, hi = c->rope_high_freq_factor;
            if (wavelen > L / lo) {
                inv /= c->rope_factor;
            } else if (wavelen >= L / hi) {
                double s = (L / wavelen - lo) / (hi - lo);
                inv = (1 - s) * inv / c->rope_factor + s * inv;
            }
        }
        for (int t = 0; t < seq; t++) {
            cos_t[(size_t)t * half + i] = (float)cos(t * inv);
            sin_t[(size_t)t * half + i] = (float)sin(t * inv);
        }
    }
}
