/* test_safetensors.c — safetensors round trips, malformed files and checkpoints
 * that disagree with config.json give clear errors; config.json refusals. */
#include <glob.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../kernels/check.h"
#include "model.h"

static char tmpdir[256];

/* header text + data_len bytes of data (pattern) */
static void write_raw(const char *path, const char *header, size_t data_len, size_t cut)
{
    FILE *f = fopen(path, "wb");
    uint64_t n = strlen(header);
    fwrite(&n, 8, 1, f);
    fwrite(header, 1, n, f);
    for (size_t i = 0; i + cut < data_len; i++)
        fputc((int)(i * 7 + 1), f);
    fclose(f);
}

static void expect_open_error(const char *what, const char *header, size_t data_len, size_t cut, const char *needle)
{
    char path[512], err[512] = "";
    snprintf(path, sizeof path, "%s/bad.safetensors", tmpdir);
    write_raw(path, header, data_len, cut);
    rl_safetensors *st = NULL;
    int rc = rl_st_open_file(&st, path, err, sizeof err);
    int ok = rc != 0 && st == NULL && strstr(err, needle) != NULL;
    printf("  %-40s -> \"%s\"\n", what, err);
    check_true(what, ok);
    rl_st_close(st);
}

static void test_malformed(void)
{
    printf("malformed safetensors files\n");
    const char *good = "{\"a\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,24]},"
                       "\"b\":{\"dtype\":\"BF16\",\"shape\":[4],\"data_offsets\":[24,32]}}";
    expect_open_error("truncated data section", good, 32, 5, "truncated");
    expect_open_error("bad JSON", "{\"a\":{\"dtype\":\"F32\",", 0, 0, "not valid JSON");
    expect_open_error("not an object", "[1,2]", 0, 0, "does not start with '{'");
    expect_open_error("offsets out of bounds",
                      "{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[8,24]}}", 16, 0, "run past");
    expect_open_error("overlapping offsets",
                      "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                      "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}", 12, 0, "overlap");
    expect_open_error("hole between tensors",
                      "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", 8, 0, "unaccounted");
    expect_open_error("unknown dtype", "{\"a\":{\"dtype\":\"F8_E9\",\"shape\":[1],\"data_offsets\":[0,1]}}", 1, 0,
                      "unknown dtype");
    expect_open_error("shape disagrees with byte count",
                      "{\"a\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}", 8, 0, "shape needs 12");
    expect_open_error("negative shape", "{\"a\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,0]}}", 0, 0,
                      "non-negative");
    expect_open_error("duplicate tensor name",
                      "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
                      "\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", 8, 0, "duplicate");
    expect_open_error("shape overflow", "{\"a\":{\"dtype\":\"F64\",\"shape\":[4294967296,4294967296],"
                      "\"data_offsets\":[0,0]}}", 0, 0, "overflows");
    expect_open_error("metadata not strings", "{\"__metadata__\":{\"k\":1}}", 0, 0, "not a string");

    char path[512], err[512];
    snprintf(path, sizeof path, "%s/huge.safetensors", tmpdir);
    FILE *f = fopen(path, "wb");
    uint64_t n = (uint64_t)RL_ST_MAX_HEADER + 1;
    fwrite(&n, 8, 1, f);
    fputs("{}", f);
    fclose(f);
    rl_safetensors *st = NULL;
    check_true("header length over the limit is refused",
               rl_st_open_file(&st, path, err, sizeof err) != 0 && strstr(err, "exceeds") != NULL);
    printf("    -> \"%s\"\n", err);
}

static void test_roundtrip(void)
{
    printf("writer -> reader round trip (F32, BF16, F16)\n");
    char path[512], err[512];
    snprintf(path, sizeof path, "%s/rt.safetensors", tmpdir);
    rl_st_entry e[3] = {{"x32", RL_DTYPE_F32, 2, {3, 5}}, {"x16", RL_DTYPE_F16, 1, {7}},
                        {"xbf", RL_DTYPE_BF16, 3, {2, 2, 2}}};
    float v[15 + 7 + 8], back[15];
    fill(v, 30, 3);
    rl_st_writer *w;
    const char *meta[] = {"format", "pt"};
    int rc = rl_st_writer_open(&w, path, e, 3, meta, 1, err, sizeof err);
    rc = rc ? rc : rl_st_writer_append(w, v, 10, err, sizeof err); /* appends may split tensors */
    rc = rc ? rc : rl_st_writer_append(w, v + 10, 20, err, sizeof err);
    rc = rc ? rc : rl_st_writer_finish(w, err, sizeof err);
    check_true("writer succeeds", rc == 0);
    rl_safetensors *st = NULL;
    rc = rl_st_open_file(&st, path, err, sizeof err);
    check_true("reader accepts what the writer wrote", rc == 0 && rl_st_count(st) == 3);
    if (rc)
        return;
    int64_t s35[2] = {3, 5}, s7[1] = {7}, s222[3] = {2, 2, 2};
    double ref[15];
    rl_st_read_f32(st, "x32", back, 2, s35, err, sizeof err);
    for (int i = 0; i < 15; i++)
        ref[i] = v[i];
    check_close("F32 exact", back, ref, 15, 0, 0);
    rl_st_read_f32(st, "x16", back, 1, s7, err, sizeof err);
    for (int i = 0; i < 7; i++)
        ref[i] = rl_f16_to_f32(rl_f32_to_f16(v[15 + i]));
    check_close("F16 -> f32 equals the rounded value", back, ref, 7, 0, 0);
    rl_st_read_f32(st, "xbf", back, 3, s222, err, sizeof err);
    for (int i = 0; i < 8; i++)
        ref[i] = rl_bf16_to_f32(rl_f32_to_bf16(v[22 + i]));
    check_close("BF16 -> f32 equals the rounded value", back, ref, 8, 0, 0);
    int64_t wrong[2] = {5, 3};
    rc = rl_st_read_f32(st, "x32", back, 2, wrong, err, sizeof err);
    check_true("a mis-shaped tensor names both shapes", rc != 0 && strstr(err, "[3, 5]") && strstr(err, "[5, 3]"));
    printf("    -> \"%s\"\n", err);
    rc = rl_st_read_f32(st, "nope", back, 1, s7, err, sizeof err);
    check_true("a missing tensor is named", rc != 0 && strstr(err, "\"nope\" is missing"));
    rl_st_close(st);
}

static rl_model_config tiny(void)
{
    rl_model_config c = {.arch = RL_MODEL_QWEN2, .hidden = 16, .layers = 1, .heads = 2, .kv_heads = 1,
                         .head_dim = 8, .intermediate = 24, .vocab = 11, .rope_theta = 1e6, .rms_norm_eps = 1e-6,
                         .qkv_bias = 1, .bos_token_id = -1, .eos_token_id = -1, .initializer_range = 0.02f,
                         .max_position_embeddings = 64};
    return c;
}

static void test_model_vs_config(rl_backend *be)
{
    printf("checkpoints that disagree with config.json\n");
    char dir[512], path[600], err[512];
    snprintf(dir, sizeof dir, "%s/m", tmpdir);
    rl_model_config c = tiny();
    rl_model *m, *m2 = NULL;
    rl_model_create(&m, be, &c, 0, err, sizeof err);
    rl_model_init_random(m, 1, 1);
    check_true("save model", rl_model_save(m, dir, RL_DTYPE_F32, 0, err, sizeof err) == 0);
    check_true("load it back", rl_model_load(&m2, be, dir, 0, err, sizeof err) == 0);
    if (m2) {
        int same = memcmp(m->params.base, m2->params.base, m->params.total * sizeof(float)) == 0;
        check_true("loaded parameters are bit-identical", same);
        rl_model_destroy(m2);
    }
    /* shape mismatch: config says intermediate 32, file has 24 */
    rl_model_config c2 = c;
    c2.intermediate = 32;
    snprintf(path, sizeof path, "%s/config.json", dir);
    rl_config_write(&c2, path, err, sizeof err);
    int rc = rl_model_load(&m2, be, dir, 0, err, sizeof err);
    check_true("shape vs config.json mismatch names the tensor",
               rc != 0 && strstr(err, "mlp.gate_proj.weight") && strstr(err, "config.json implies"));
    printf("    -> \"%s\"\n", err);
    /* extra tensors: as Llama without attention bias, the file's q/k/v biases are unknown */
    rl_model_config c3 = c;
    c3.arch = RL_MODEL_LLAMA, c3.qkv_bias = 0;
    rl_config_write(&c3, path, err, sizeof err);
    rc = rl_model_load(&m2, be, dir, 0, err, sizeof err);
    check_true("tensors the config does not use are refused", rc != 0 && strstr(err, "is not part of"));
    printf("    -> \"%s\"\n", err);
    /* missing tensor: the config wants an lm_head the file lacks after tying */
    rl_model_config c4 = c;
    c4.tie_word_embeddings = 1;
    rl_model *mt;
    rl_model_create(&mt, be, &c4, 0, err, sizeof err);
    rl_model_save(mt, dir, RL_DTYPE_F32, 0, err, sizeof err);
    rl_model_destroy(mt);
    rl_config_write(&c, path, err, sizeof err); /* untied config, tied file */
    rc = rl_model_load(&m2, be, dir, 0, err, sizeof err);
    check_true("a missing tensor is named", rc != 0 && strstr(err, "\"lm_head.weight\" is missing"));
    printf("    -> \"%s\"\n", err);
    /* sharded: save in shards, load equals */
    char sdir[512];
    snprintf(sdir, sizeof sdir, "%s/sharded", tmpdir);
    rc = rl_model_save(m, sdir, RL_DTYPE_F32, 2000, err, sizeof err);
    check_true("sharded save", rc == 0);
    m2 = NULL;
    rc = rl_model_load(&m2, be, sdir, 0, err, sizeof err);
    check_true("sharded load is bit-identical",
               rc == 0 && memcmp(m->params.base, m2->params.base, m->params.total * sizeof(float)) == 0);
    rl_model_destroy(m2);
    snprintf(path, sizeof path, "%s/model-00002-of-*.safetensors", sdir);
    glob_t g;
    check_true("the model was split into several shards", glob(path, 0, NULL, &g) == 0 && g.gl_pathc == 1);
    if (g.gl_pathc == 1) {
        unlink(g.gl_pathv[0]);
        err[0] = 0;
        rc = rl_model_load(&m2, be, sdir, 0, err, sizeof err);
        check_true("a missing shard is named", rc != 0 && strstr(err, "model-00002-of-"));
    }
    globfree(&g);
    printf("    -> \"%s\"\n", err);
    rl_model_destroy(m);
}

static void expect_config_error(const char *what, const char *json, const char *needle)
{
    rl_model_config c;
    char err[512] = "";
    int rc = rl_config_parse(&c, json, strlen(json), "config.json", err, sizeof err);
    printf("  %-40s -> \"%s\"\n", what, err);
    check_true(what, rc != 0 && strstr(err, needle) != NULL);
}

#define BASE "\"hidden_size\":16,\"num_hidden_layers\":1,\"num_attention_heads\":4,\"intermediate_size\":8,\"vocab_size\":9"

static void test_config(void)
{
    printf("config.json\n");
    rl_model_config c;
    char err[512];
    const char *q3 = "{\"architectures\":[\"Qwen3ForCausalLM\"]," BASE ",\"num_key_value_heads\":2,\"head_dim\":6,"
                     "\"rope_theta\":1000000,\"tie_word_embeddings\":true,\"eos_token_id\":[7,8]}";
    int rc = rl_config_parse(&c, q3, strlen(q3), "q3", err, sizeof err);
    check_true("Qwen3 with explicit head_dim, q/k norm, tied, eos list",
               rc == 0 && c.head_dim == 6 && c.qk_norm && c.tie_word_embeddings && c.eos_token_id == 7 &&
                   c.kv_heads == 2 && !c.qkv_bias);
    const char *q2 = "{\"architectures\":[\"Qwen2ForCausalLM\"]," BASE ",\"use_sliding_window\":false,"
                     "\"sliding_window\":4096}";
    rc = rl_config_parse(&c, q2, strlen(q2), "q2", err, sizeof err);
    check_true("Qwen2: qkv bias on, o bias off, unused sliding_window ignored",
               rc == 0 && c.qkv_bias && !c.o_bias && c.sliding_window == 0);
    expect_config_error("unknown architecture", "{\"architectures\":[\"GPT2LMHeadModel\"]," BASE "}",
                        "not supported");
    expect_config_error("kv heads do not divide heads",
                        "{\"architectures\":[\"LlamaForCausalLM\"]," BASE ",\"num_key_value_heads\":3}",
                        "does not divide");
    expect_config_error("Qwen2 sliding window in use",
                        "{\"architectures\":[\"Qwen2ForCausalLM\"]," BASE ",\"use_sliding_window\":true}",
                        "use_sliding_window");
    expect_config_error("unsupported rope type",
                        "{\"architectures\":[\"LlamaForCausalLM\"]," BASE ",\"rope_scaling\":{\"rope_type\":\"yarn\","
                        "\"factor\":4}}", "yarn");
    expect_config_error("non-silu activation",
                        "{\"architectures\":[\"LlamaForCausalLM\"]," BASE ",\"hidden_act\":\"gelu\"}", "gelu");
    expect_config_error("partial rotary",
                        "{\"architectures\":[\"LlamaForCausalLM\"]," BASE ",\"partial_rotary_factor\":0.5}",
                        "partial_rotary_factor");
    expect_config_error("missing field", "{\"architectures\":[\"LlamaForCausalLM\"],\"hidden_size\":16}",
                        "num_hidden_layers");
    expect_config_error("odd head_dim",
                        "{\"architectures\":[\"LlamaForCausalLM\"]," BASE ",\"head_dim\":5}", "even");
}

static void test_sliding_window(rl_backend *be)
{
    printf("sliding window\n");
    rl_model_config c = tiny();
    c.arch = RL_MODEL_MISTRAL, c.qkv_bias = 0, c.sliding_window = 4;
    rl_model *m;
    char err[512];
    rl_model_create(&m, be, &c, 0, err, sizeof err);
    check_true("a sequence within the window is accepted", rl_model_prepare(m, 1, 4, 0, 4, err, sizeof err) == 0);
    int rc = rl_model_prepare(m, 1, 5, 0, 4, err, sizeof err);
    check_true("a sequence longer than sliding_window is refused", rc != 0 && strstr(err, "sliding_window"));
    printf("    -> \"%s\"\n", err);
    rl_model_destroy(m);
}

int main(void)
{
    snprintf(tmpdir, sizeof tmpdir, "/tmp/rl_st_test_XXXXXX");
    if (!mkdtemp(tmpdir)) {
        perror("mkdtemp");
        return 1;
    }
    rl_backend *be;
    char err[256];
    rl_backend_options bo = {.kind = RL_BACKEND_CPU, .num_threads = 1};
    if (rl_backend_create(&be, &bo, err, sizeof err))
        return 1;
    test_malformed();
    test_roundtrip();
    test_model_vs_config(be);
    test_config();
    test_sliding_window(be);
    rl_backend_destroy(be);
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf %s", tmpdir);
    if (system(cmd) != 0)
        printf("warning: could not remove %s\n", tmpdir);
    printf("%s: %d failure(s)\n", check_failures ? "FAIL" : "PASS", check_failures);
    return check_failures ? 1 : 0;
}
