/* test_plan.c — the memory planner (model/plan.h) on the Qwen2.5-7B config fixture: parameter counts
 * worked out by hand from METHOD.md's shapes, ZeRO-1 sharding, the dtype policies, recompute, the
 * verdict's suggested option, and refused options. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "plan.h"

static int failures;

#define CHECK(cond, ...)                                                                                     \
    do {                                                                                                     \
        int ok_ = (cond);                                                                                    \
        printf("  %-84s %s\n", #cond, ok_ ? "ok" : "FAIL");                                                  \
        if (!ok_) {                                                                                          \
            printf("    ");                                                                                  \
            printf(__VA_ARGS__);                                                                             \
            printf("\n");                                                                                    \
            failures++;                                                                                      \
        }                                                                                                    \
    } while (0)

static rl_plan plan(const rl_model_config *c, rl_plan_opts o)
{
    rl_plan p;
    char err[512] = "";
    int rc = rl_plan_compute(&p, c, &o, err, sizeof err);
    if (rc) {
        printf("  rl_plan_compute failed: %s\n", err);
        failures++;
        memset(&p, 0, sizeof p);
    }
    return p;
}

int main(void)
{
    const char *src = getenv("RADLADS_SRC");
    char path[4096], err[512];
    snprintf(path, sizeof path, "%s/tests/fixtures/qwen2.5-7b/config.json", src ? src : ".");
    rl_model_config c;
    if (rl_config_load(&c, path, err, sizeof err)) {
        printf("%s\n", err);
        return 1;
    }
    const int64_t D = 3584, L = 28, V = 152064, F = 18944, KD = 512;
    /* Qwen2.5-7B: embed + lm_head, per layer q/k/v with bias, o, two norms, SwiGLU; final norm */
    const int64_t teacher = 2 * V * D + L * (2 * D * D + D + 2 * (KD * D + KD) + 2 * D + 3 * F * D) + D;
    /* RAD-RWKV7 b, ranks decay = ICLR 96, value 64, gate 416: w0 a0 v0 r_k [D], LoRA pairs D×r + r×D */
    const int64_t tmix_b = 4 * D + 2 * D * (96 + 96 + 64 + 416);
    const int64_t attn = 2 * D * D + D + 2 * (KD * D + KD);

    printf("parameter counts\n");
    rl_plan_opts o;
    rl_plan_opts_defaults(&o, RL_PLAN_ALIGN);
    o.ranks = 8, o.budget = (uint64_t)80 << 30;
    rl_plan a = plan(&c, o);
    CHECK(a.teacher_params == 7615616512LL && teacher == 7615616512LL, "%lld", (long long)a.teacher_params);
    CHECK(a.student_params == teacher + L * tmix_b, "%lld", (long long)a.student_params);
    CHECK(a.trainable_params == L * (attn + tmix_b), "%lld vs %lld", (long long)a.trainable_params,
          (long long)(L * (attn + tmix_b)));
    CHECK(a.teacher_resident_params == teacher - V * D, "align leaves out lm_head");
    CHECK(a.o.recompute == RL_RECOMPUTE_OFF && a.fits, "align at micro-batch 4 fits 80G without recompute");

    rl_plan_opts_defaults(&o, RL_PLAN_EXTEND);
    o.ranks = 8, o.train_decay_shift = 1;
    rl_plan x = plan(&c, o);
    CHECK(x.trainable_params == L * (D + 2 * D * 96), "3a: w0 w1 w2, got %lld", (long long)x.trainable_params);
    CHECK(x.teacher_resident_params == 0 && x.bytes[RL_ROLE_TEACHER] == 0, "extend has no teacher");

    printf("ZeRO-1 and dtype policies\n");
    rl_plan_opts_defaults(&o, RL_PLAN_DISTILL);
    o.ranks = 8;
    rl_plan d8 = plan(&c, o);
    const uint64_t n = (uint64_t)d8.trainable_params;
    CHECK(d8.bytes[RL_ROLE_ADAM_M] == (n + 7) / 8 * 4 && d8.bytes[RL_ROLE_ADAM_V] == d8.bytes[RL_ROLE_ADAM_M] &&
              d8.bytes[RL_ROLE_MASTER] == d8.bytes[RL_ROLE_ADAM_M], "sharded by 8");
    CHECK(d8.bytes[RL_ROLE_WEIGHTS] == 2 * (uint64_t)d8.student_params && d8.bytes[RL_ROLE_GRADS] == 2 * n,
          "bf16 weights and grads");
    CHECK(d8.bytes[RL_ROLE_LOGITS] == 2 * 512 * (uint64_t)V * 4, "two fp32 chunks of 512 rows (student, teacher)");
    o.zero = 0;
    rl_plan d8z0 = plan(&c, o);
    CHECK(d8z0.bytes[RL_ROLE_ADAM_M] == n * 4, "no sharding without ZeRO-1");
    o.zero = 1, o.dtypes = RL_PLAN_FP32, o.recompute = RL_RECOMPUTE_ON;
    rl_plan f = plan(&c, o);
    CHECK(f.bytes[RL_ROLE_MASTER] == 0 && f.bytes[RL_ROLE_WEIGHTS] == 4 * (uint64_t)f.student_params,
          "fp32: no master copy");
    uint64_t sum = 0;
    for (int r = 0; r < RL_ROLE_N; r++)
        sum += d8.bytes[r];
    CHECK(sum == d8.total, "total is the sum of the roles");

    printf("recompute\n");
    rl_plan_opts_defaults(&o, RL_PLAN_EXTEND);
    o.ranks = 8, o.recompute = RL_RECOMPUTE_OFF;
    rl_plan off = plan(&c, o);
    o.recompute = RL_RECOMPUTE_ON;
    rl_plan on = plan(&c, o);
    /* B·H·ceil(T/16)·N² fp32 = 2·28·1024·128²·4 per layer, and every token's sa, B·T·H·N fp32 = 2·16384·28·128·4 */
    CHECK(on.bytes[RL_ROLE_WKV_CKPT] == 2ull * 28 * 1024 * 128 * 128 * 4 + 2ull * 16384 * 28 * 128 * 4 &&
              off.bytes[RL_ROLE_WKV_CKPT] == 28 * on.bytes[RL_ROLE_WKV_CKPT], "one layer's checkpoints vs 28");
    CHECK(on.bytes[RL_ROLE_ACTS] * 5 < off.bytes[RL_ROLE_ACTS], "%.1f vs %.1f GiB",
          on.bytes[RL_ROLE_ACTS] / 1073741824.0, off.bytes[RL_ROLE_ACTS] / 1073741824.0);
    o.recompute = RL_RECOMPUTE_AUTO, o.budget = (uint64_t)80 << 30;
    rl_plan au = plan(&c, o);
    CHECK(au.o.recompute == RL_RECOMPUTE_ON && au.fits && au.total == on.total, "auto turns recompute on at 16k");

    printf("verdicts\n");
    char v[640];
    rl_plan_opts_defaults(&o, RL_PLAN_DISTILL);
    o.budget = (uint64_t)80 << 30;
    rl_plan d1 = plan(&c, o);
    CHECK(!d1.fits && rl_plan_verdict(&c, &d1, v, sizeof v, err, sizeof err) == 0 &&
              strstr(v, "does not fit by") && strstr(v, "fits with --ranks "), "%s", v);
    o.ranks = 8, o.zero = 0;
    rl_plan dz = plan(&c, o);
    CHECK(rl_plan_verdict(&c, &dz, v, sizeof v, err, sizeof err) == 0 && strstr(v, "fits with --zero 1"), "%s", v);
    o.zero = 1, o.micro_batch = 128, o.recompute = RL_RECOMPUTE_ON;
    rl_plan dm = plan(&c, o);
    CHECK(!dm.fits && rl_plan_verdict(&c, &dm, v, sizeof v, err, sizeof err) == 0 &&
              strstr(v, "fits with --micro-batch "), "%s", v);
    o.micro_batch = 12, o.budget = (uint64_t)20 << 30;
    rl_plan small = plan(&c, o);
    CHECK(rl_plan_verdict(&c, &small, v, sizeof v, err, sizeof err) == 0 && strstr(v, "no option makes it fit"),
          "%s", v);

    printf("refused options\n");
    rl_plan p;
    rl_plan_opts_defaults(&o, RL_PLAN_ALIGN);
    o.attention_layers = 28;
    CHECK(rl_plan_compute(&p, &c, &o, err, sizeof err) == RL_EINVAL && strstr(err, "attention layers 28"), "%s", err);
    rl_plan_opts_defaults(&o, RL_PLAN_ALIGN);
    o.micro_batch = 0;
    CHECK(rl_plan_compute(&p, &c, &o, err, sizeof err) == RL_EINVAL && strstr(err, "micro_batch=0"), "%s", err);
    rl_plan_opts_defaults(&o, RL_PLAN_ALIGN);
    o.variant = 'c';
    CHECK(rl_plan_compute(&p, &c, &o, err, sizeof err) == RL_EINVAL && strstr(err, "variant"), "%s", err);

    printf("%s\n", failures ? "FAIL" : "all passed");
    return failures ? 1 : 0;
}
