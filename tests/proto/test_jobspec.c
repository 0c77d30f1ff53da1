/* Job spec: recipe defaults, count suffixes, every error names its field, canonical JSON is a fixed point. */
#include "jobspec.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static int failures;
#define CHECK(cond, ...)                                                                                   \
    do {                                                                                                   \
        if (!(cond)) {                                                                                     \
            failures++;                                                                                    \
            printf("FAIL %s:%d: ", __FILE__, __LINE__);                                                    \
            printf(__VA_ARGS__);                                                                           \
            printf("\n");                                                                                  \
        }                                                                                                  \
    } while (0)

static char dir[256];

static int parse(const char *text, rl_job_spec *s, char *err, int flags)
{
    return rl_jobspec_parse(s, text, strlen(text), dir, flags, err, 1024);
}

#define BASE "teacher: teacher\ndata: {train: [train.tok]}\noutput: out\n"

static void expect_error(const char *text, const char *needle)
{
    rl_job_spec s;
    char err[1024] = "";
    int rc = parse(text, &s, err, RL_SPEC_CHECK_PATHS);
    CHECK(rc < 0, "accepted: %s", text);
    if (rc == 0) rl_jobspec_free(&s);
    CHECK(strstr(err, needle) != NULL, "error \"%s\" lacks \"%s\"", err, needle);
    printf("  error ok: %s\n", err);
}

static void defaults_are_the_recipe(void)
{
    rl_job_spec s;
    char err[1024];
    CHECK(parse(BASE, &s, err, RL_SPEC_CHECK_PATHS) == 0, "minimal spec refused: %s", err);
    CHECK(s.n_stages == 5, "default plan has %zu stages", s.n_stages);
    CHECK(s.stages[0].kind == RL_STAGE_TRANSFER && s.stages[4].kind == RL_STAGE_EXPORT, "plan order");
    const rl_stage_spec *a = &s.stages[1], *d = &s.stages[2], *e = &s.stages[3];
    CHECK(a->kind == RL_STAGE_ALIGN && a->tokens == 100000000 && a->seq_len == 512 && a->batch == 32 &&
              a->lr_init == 1e-3 && a->lr_final == 1e-5 && a->schedule == RL_SCHED_COS && a->warmup == 50,
          "align defaults");
    CHECK(d->tokens == 500000000 && d->seq_len == 512 && d->batch == 96 && d->lr_init == 1e-5 &&
              d->kl_weight == 1.0 && d->ce_weight == 0.0,
          "distill defaults (KL only, no CE blend)");
    CHECK(e->tokens == 100000000 && e->seq_len == 16384 && e->lr_init == 1e-5 && e->ce_weight == 1.0 && e->kl_weight == 0,
          "extend defaults (pure CE)");
    CHECK(s.arch == RL_ARCH_RWKV7 && s.variant == 'b' && s.ranks == 1 && s.max_restarts == 3, "job defaults");
    CHECK(!strcmp(s.name, "out"), "name defaults to the output folder, got %s", s.name);
    char expect[600];
    snprintf(expect, sizeof expect, "%s/teacher", dir);
    CHECK(!strcmp(s.teacher, expect), "teacher resolved to %s", s.teacher);
    /* Canonical JSON parses back to the same canonical JSON. */
    char *j1 = rl_jobspec_to_json(&s);
    rl_job_spec t;
    CHECK(rl_jobspec_parse(&t, j1, strlen(j1), NULL, RL_SPEC_CHECK_PATHS, err, sizeof err) == 0, "canonical refused: %s", err);
    char *j2 = rl_jobspec_to_json(&t);
    CHECK(!strcmp(j1, j2), "canonical JSON is not a fixed point:\n%s\n%s", j1, j2);
    free(j1), free(j2);
    rl_jobspec_free(&t);
    rl_jobspec_free(&s);
}

static void overrides_and_suffixes(void)
{
    rl_job_spec s;
    char err[1024];
    const char *text = BASE "student: {arch: rad-rwkv6}\nresources: {ranks: 2}\n"
                            "stages:\n  - transfer\n  - {stage: align, tokens: 1.5B, lr: '2e-3:1e-4', batch: 16, micro_batch: 2, seq_len: 256}\n"
                            "  - {stage: distill, tokens: 2K, seq_len: 64, batch: 4, micro_batch: 2, lr: 1e-5, lr2: '1e-4:1e-5', lr_wait: 0.833, lr_endpoint: 0.875}\n";
    CHECK(parse(text, &s, err, RL_SPEC_CHECK_PATHS) == 0, "refused: %s", err);
    if (failures) return;
    CHECK(s.arch == RL_ARCH_RWKV6 && s.variant == 0, "rwkv6 has no variant");
    CHECK(s.stages[1].tokens == 1500000000LL, "1.5B = %lld", (long long)s.stages[1].tokens);
    CHECK(s.stages[1].lr_init == 2e-3 && s.stages[1].lr_final == 1e-4, "lr init:final");
    CHECK(s.stages[1].lr2_init == 2e-3, "lr2 follows lr unless given");
    CHECK(s.stages[2].tokens == 2000 && s.stages[2].lr2_init == 1e-4 && s.stages[2].lr2_final == 1e-5, "step 2a lr2");
    rl_jobspec_free(&s);
    /* zero: 1 (ZeRO-1) reaches the stage JSON a worker receives, and the canonical form keeps it. */
    text = BASE "resources: {ranks: 2}\nstages: [transfer, {stage: distill, zero: 1, recompute: 1, mlp_rows: 1024, precision: bf16, profile: 1, batch: 4, "
                "micro_batch: 2, tokens: 2K, seq_len: 64}]\n";
    CHECK(parse(text, &s, err, RL_SPEC_CHECK_PATHS) == 0, "zero: 1 refused: %s", err);
    if (failures) return;
    CHECK(s.stages[1].zero == 1 && s.stages[0].zero == 0, "zero: 1 on the distill stage only");
    CHECK(s.stages[1].recompute == 1 && s.stages[0].recompute == 0, "recompute: 1 on the distill stage only");
    char *sj = rl_jobspec_stage_json(&s, 1), *j1 = rl_jobspec_to_json(&s);
    CHECK(sj && strstr(sj, "\"zero\":1"), "stage JSON lacks zero: %s", sj ? sj : "(null)");
    CHECK(sj && strstr(sj, "\"recompute\":1"), "stage JSON lacks recompute: %s", sj ? sj : "(null)");
    CHECK(s.stages[1].mlp_rows == 1024 && sj && strstr(sj, "\"mlp_rows\":1024"), "stage JSON lacks mlp_rows: %s",
          sj ? sj : "(null)");
    CHECK(sj && strstr(sj, "\"precision\":\"bf16\""), "stage JSON lacks precision: %s", sj ? sj : "(null)");
    CHECK(s.stages[1].bf16 == 1 && s.stages[0].bf16 == 0, "precision: bf16 on the distill stage only");
    CHECK(s.stages[1].profile == 1 && s.stages[0].profile == 0, "profile: 1 on the distill stage only");
    CHECK(sj && strstr(sj, "\"profile\":1"), "stage JSON lacks profile: %s", sj ? sj : "(null)");
    rl_job_spec t;
    CHECK(rl_jobspec_parse(&t, j1, strlen(j1), NULL, RL_SPEC_CHECK_PATHS, err, sizeof err) == 0, "canonical refused: %s", err);
    char *j2 = rl_jobspec_to_json(&t);
    CHECK(!strcmp(j1, j2) && t.stages[1].zero == 1 && t.stages[1].mlp_rows == 1024, "zero: canonical JSON is not a fixed point:\n%s\n%s", j1, j2);
    free(sj), free(j1), free(j2);
    rl_jobspec_free(&t);
    rl_jobspec_free(&s);
    int64_t n;
    CHECK(rl_parse_count("100M", &n, err, sizeof err) == 0 && n == 100000000, "100M");
    CHECK(rl_parse_count("2048", &n, err, sizeof err) == 0 && n == 2048, "2048");
    CHECK(rl_parse_count("0", &n, err, sizeof err) < 0 && strstr(err, "positive"), "0 accepted");
    CHECK(rl_parse_count("-5M", &n, err, sizeof err) < 0, "-5M accepted");
    CHECK(rl_parse_count("12Q", &n, err, sizeof err) < 0 && strstr(err, "suffix"), "12Q accepted");
    CHECK(rl_parse_count("1.00001K", &n, err, sizeof err) < 0, "fractional token count accepted");
    char buf[32];
    rl_format_count(1500000000, buf, sizeof buf);
    CHECK(!strcmp(buf, "1.5B"), "format 1.5B -> %s", buf);
}

static void errors_name_the_field(void)
{
    expect_error(BASE "stages:\n  - transfer\n  - {stage: align, seq_len: 500}\n",
                 "stages[1].seq_len: must be a positive multiple of 16, got 500");
    expect_error(BASE "bogus: 1\n", "bogus: unknown field");
    expect_error(BASE "student: {arch: rad-rwkv7, colour: red}\n", "student.colour: unknown field");
    expect_error(BASE "stages: [{stage: align, tokens: -5}]\n", "stages[0].tokens: must be positive");
    expect_error(BASE "stages: [{stage: align, tokens: 0}]\n", "stages[0].tokens: must be positive");
    expect_error(BASE "stages: [{stage: align, batch: 0}]\n", "stages[0].batch: must be positive");
    expect_error(BASE "stages: [{stage: align, batch: 30, micro_batch: 4}]\n", "stages[0].batch: 30 is not a multiple of micro_batch 4");
    expect_error(BASE "resources: {ranks: 3}\nstages: [{stage: align, batch: 32, micro_batch: 4}]\n", "micro_batch × ranks");
    expect_error(BASE "stages: [align, transfer]\n", "stages[1]: transfer cannot come after align");
    expect_error(BASE "stages: [{stage: warp}]\n", "stages[0].stage: \"warp\" is not a stage");
    expect_error(BASE "stages: [{stage: transfer, tokens: 5M}]\n", "does not apply to a transfer stage");
    expect_error(BASE "stages: [{stage: distill, loss: mse}]\n", "stages[0].loss: only an align stage");
    expect_error(BASE "stages: [transfer, {stage: align, zero: 2}]\n", "stages[1].zero: must be 0 (every rank keeps "
                 "the whole optimizer state) or 1 (ZeRO-1: the AdamW state sharded over the ranks), got \"2\"");
    expect_error(BASE "stages: [transfer, {stage: distill, zero: -1}]\n", "stages[1].zero: must be 0");
    expect_error(BASE "stages: [transfer, {stage: extend, recompute: yes}]\n", "stages[1].recompute: must be 0 "
                 "(every layer's activations kept for the backward) or 1");
    expect_error(BASE "stages: [transfer, {stage: distill, precision: fp16}]\n", "stages[1].precision: ");
    expect_error(BASE "stages: [transfer, {stage: extend, mlp_rows: -5}]\n", "stages[1].mlp_rows: ");
    expect_error(BASE "stages: [{stage: pretrain, precision: bf16-weights}, transfer]\n",
                 "stages[0].precision: bf16-weights trains a RADLADS student");
    { /* precision: bf16-weights reaches the stage JSON and survives the canonical form */
        rl_job_spec w, w2;
        char err[1024] = "";
        memset(&w2, 0, sizeof w2);
        const char *tw = BASE "stages: [transfer, {stage: distill, precision: bf16-weights}]\n";
        CHECK(parse(tw, &w, err, RL_SPEC_CHECK_PATHS) == 0, "precision: bf16-weights refused: %s", err);
        if (failures) return;
        char *sw = rl_jobspec_stage_json(&w, 1), *cw = rl_jobspec_to_json(&w);
        CHECK(w.stages[1].bf16 == 2 && sw && strstr(sw, "\"precision\":\"bf16-weights\""),
              "bf16-weights: stage JSON %s", sw ? sw : "(null)");
        CHECK(cw && rl_jobspec_parse(&w2, cw, strlen(cw), NULL, RL_SPEC_CHECK_PATHS, err, sizeof err) == 0 &&
                  w2.stages[1].bf16 == 2, "bf16-weights: canonical form refused or changed: %s", err);
        if (cw && w2.stages)
            rl_jobspec_free(&w2);
        free(sw), free(cw);
        rl_jobspec_free(&w);
    }
    expect_error(BASE "stages: [transfer, {stage: align, profile: on}]\n", "stages[1].profile: must be 0 or 1");
    expect_error(BASE "stages: [{stage: transfer, recompute: 1}]\n", "field \"recompute\" does not apply to a "
                 "transfer stage");
    expect_error(BASE "stages: [{stage: transfer, zero: 1}]\n", "field \"zero\" does not apply to a transfer stage");
    expect_error(BASE "stages: [{stage: align, schedule: cosine}]\n", "stages[0].schedule: \"cosine\" is not one of: cos, linear, flat");
    expect_error(BASE "student: {arch: mamba}\n", "student.arch: \"mamba\" is not one of: rad-rwkv7, rad-rwkv6");
    expect_error(BASE "student: {arch: rad-rwkv6, variant: a}\n", "student.variant: only rad-rwkv7 has variants");
    expect_error(BASE "resources: {device: tpu}\n", "resources.device");
    expect_error("data: {train: [train.tok]}\noutput: out\n", "teacher: missing");
    expect_error("teacher: teacher\noutput: out\n", "data.train: missing");
    expect_error("teacher: nowhere\ndata: {train: [train.tok]}\noutput: out\n", "teacher: \"nowhere\" does not exist");
    expect_error("teacher: teacher\ndata: {train: [missing.tok]}\noutput: out\n", "data.train[0]: \"missing.tok\" does not exist");
    expect_error("teacher: train.tok\ndata: {train: [train.tok]}\noutput: out\n", "is not a folder");
    expect_error("teacher: empty\ndata: {train: [train.tok]}\noutput: out\n", "has no config.json");
    expect_error("teacher: teacher\ndata: {train: [train.tok]}\noutput: nodir/deeper/out\n", "output: \"nodir/deeper/out\": parent folder");
    expect_error("teacher: https://hf.co/Qwen\ndata: {train: [train.tok]}\noutput: out\n", "URLs are not supported yet");
    expect_error("teacher: [unclosed\n", "invalid YAML");
    expect_error("- a\n- b\n", "expected a mapping, got a list");
    expect_error(BASE "priority: 5000\n", "priority: must be between -1000 and 1000");
    /* Found by fuzz_jobspec: "1e-41" slipped through the string form but not the {init, final} form. */
    expect_error(BASE "stages: [{stage: align, lr2: '1e-41:1e-5'}]\n", "between 1e-12 and 10");
    expect_error(BASE "name: 'has space'\n", "name: use letters");
    expect_error(BASE "x: &a 1\ny: *a\n", "YAML aliases");
    /* Found by fuzz_jobspec: libfyaml spins forever on a directive followed by malformed UTF-8. */
    expect_error("%\xe8", "byte 1 (0xe8) is not valid UTF-8");
    expect_error("[[z\x01\x02,z]", "byte 3 (0x01) is a control character");
    expect_error(BASE "name: \"\xc0\xaf\"\n", "not valid UTF-8");
    /* Found by fuzz_jobspec: libfyaml crashes reporting malformed directive lines (seed crash-libfyaml-directive). */
    expect_error("name: s ut\n%autuume: s\n%a\t\t\t{\"teacher\": x}\n", "line 2 starts with '%'");
    expect_error("%YAML 1.2\n---\n" BASE, "line 1 starts with '%'");
    expect_error("\xef\xbb\xbf%YAML 1.2\n---\n" BASE, "line 1 starts with '%'"); /* behind a byte order mark */
    expect_error(BASE "name: x\r%TAG ! tag:x,2000:\n", "line 5 starts with '%'");
    /* a '%' inside a line, or in a quoted value at the start of one, is fine */
    rl_job_spec spec;
    char err[1024] = "";
    if (parse("teacher: te%acher\ndata: {train: [train.tok]}\noutput:\n \"%out\"\n", &spec, err, 0) == 0) {
        CHECK(strstr(spec.output, "/%out") && strstr(spec.teacher, "/te%acher"), "paths %s %s", spec.output,
              spec.teacher);
        rl_jobspec_free(&spec);
    } else {
        CHECK(0, "a spec with '%%' inside its values was refused: %s", err);
    }
}

int main(void)
{
    snprintf(dir, sizeof dir, "/tmp/rl-jobspec-%d", (int)getpid());
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "mkdir -p %s/teacher %s/empty && echo '{}' > %s/teacher/config.json && echo x > %s/train.tok",
             dir, dir, dir, dir);
    if (system(cmd) != 0) return 1;
    defaults_are_the_recipe();
    overrides_and_suffixes();
    errors_name_the_field();
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd) != 0) return 1;
    printf("%s\n", failures ? "FAILED" : "ok");
    return failures ? 1 : 0;
}
