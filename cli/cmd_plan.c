/* cmd_plan.c — radlads plan: device memory per rank of steps 1–3 for a teacher and a student architecture,
 * from the teacher's config.json alone (model/plan.h), as a table or JSON, with a verdict per stage. */
#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "plan.h"

static void plan_usage(FILE *f)
{
    fprintf(f,
            "usage: radlads plan --teacher DIR --arch rwkv7|rwkv6 --gpu-mem SIZE [--variant a|b] [--ranks N]\n"
            "         [--seq-len L] [--extend-seq-len L] [--micro-batch B] [--stage align|distill|extend|all]\n"
            "         [--zero 0|1] [--recompute auto|on|off] [--train all|decay_shift] [--attention-layers N]\n"
            "         [--chunk-rows N] [--mlp-rows N] [--dtype bf16|fp32|autocast|bf16-weights] [--json]\n"
            "Prints the device memory per rank of each training stage (student weights, grads, fp32 master\n"
            "weights, AdamW moments, teacher weights, activations, wkv checkpoints, logits chunks, workspace)\n"
            "from the parameter tables the arenas use; only DIR/config.json is read.\n"
            "  --gpu-mem SIZE     memory per rank: bytes, or a number with K, M, G or T (binary: 80G = 80 GiB)\n"
            "  --ranks N          data-parallel ranks (default 1)\n"
            "  --seq-len L        sequence length of steps 1 and 2 (default 512), and of step 3 when it is the\n"
            "                     only stage shown\n"
            "  --extend-seq-len L step 3's sequence length with --stage all (default 16384, METHOD.md)\n"
            "  --micro-batch B    sequences per forward on a rank (default: the recipe's 4 / 12 / 2)\n"
            "  --zero 0|1         ZeRO-1: shard master weights and AdamW moments over the ranks (default 1)\n"
            "  --recompute MODE   keep only layer inputs and recompute each layer in the backward; auto (default)\n"
            "                     turns it on for a stage that does not fit without it\n"
            "  --train decay_shift  step 3a: only decay and token-shift tensors train in extend\n"
            "  --mlp-rows N       the MLP's rows per pass with recompute, for the teacher, and in the backward\n"
            "                     (the stage option mlp_rows; default 4096)\n"
            "  --dtype D          bf16: bf16 weights, grads and activations with fp32 master/moments (the CUDA\n"
            "                     target layout, default); fp32: everything fp32 (CPU); autocast: what the\n"
            "                     trainer keeps with precision: bf16 (fp32 weights and grads plus bf16 GEMM\n"
            "                     copies); bf16-weights: what it keeps with precision: bf16-weights (trainable\n"
            "                     matrices and their grads bf16, fp32 master weights, fp32 activations)\n");
}

static int parse_int_opt(const char *opt, const char *s, long lo, long hi, int *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || *end || end == s || v < lo || v > hi) {
        fprintf(stderr, "radlads plan: %s expects an integer in [%ld, %ld], got '%s'\n", opt, lo, hi, s);
        return -1;
    }
    *out = (int)v;
    return 0;
}

/* "80G", "79.5GiB", "512M", "1T", "85899345920": K/M/G/T are powers of 1024. */
static int parse_size(const char *s, uint64_t *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || !isfinite(v) || v <= 0)
        return -1;
    static const char units[] = "KMGT";
    double mult = 1;
    if (*end) {
        const char *u = strchr(units, toupper((unsigned char)*end));
        if (!u || !*u)
            return -1;
        mult = ldexp(1.0, 10 * (int)(u - units + 1));
        end++;
        if (!strcmp(end, "i") || !strcmp(end, "iB") || !strcmp(end, "B"))
            end += strlen(end);
        if (*end)
            return -1;
    }
    if (v * mult >= 1.8e19 || v * mult < 1)
        return -1;
    *out = (uint64_t)(v * mult);
    return 0;
}

static double gib(uint64_t b)
{
    return (double)b / (double)((uint64_t)1 << 30);
}

static const char *step_name(rl_plan_stage s)
{
    static const char *const n[] = {"step 1 align", "step 2 distill", "step 3 extend"};
    return n[s];
}

static void print_table(const rl_model_config *c, const char *teacher, const rl_plan *p, const char verdicts[][640],
                        int n, uint64_t budget)
{
    const rl_plan_opts *o0 = &p[0].o;
    printf("teacher %s: %s, hidden %d, %d layers, %d/%d heads x %d, intermediate %d, vocab %d, %lld parameters\n",
           teacher, rl_model_arch_name(c->arch), c->hidden, c->layers, c->heads, c->kv_heads, c->head_dim,
           c->intermediate, c->vocab, (long long)p[0].teacher_params);
    char variant[16] = "";
    if (o0->arch == RL_STUDENT_RWKV7)
        snprintf(variant, sizeof variant, " variant %c", o0->variant);
    printf("student %s%s%s: %lld parameters\n", rl_student_arch_name(o0->arch), variant,
           o0->attention_layers ? " (hybrid)" : "", (long long)p[0].student_params);
    printf("%d rank%s x %.2f GiB, ZeRO-%d, %s\n\n", o0->ranks, o0->ranks > 1 ? "s" : "", gib(budget), o0->zero,
           rl_plan_dtypes_what(o0->dtypes));
    const int w0 = 30, w = 17;
    printf("%-*s", w0, "GiB per rank");
    for (int i = 0; i < n; i++)
        printf("%*s", w, step_name(p[i].o.stage));
    printf("\n%-*s", w0, "seq len x micro-batch");
    for (int i = 0; i < n; i++) {
        char cell[32];
        snprintf(cell, sizeof cell, "%d x %d", p[i].o.seq_len, p[i].o.micro_batch);
        printf("%*s", w, cell);
    }
    printf("\n%-*s", w0, "recompute");
    for (int i = 0; i < n; i++)
        printf("%*s", w, p[i].o.recompute == RL_RECOMPUTE_ON ? "on" : "off");
    printf("\n%-*s", w0, "trainable parameters");
    for (int i = 0; i < n; i++)
        printf("%*lld", w, (long long)p[i].trainable_params);
    printf("\n");
    for (int r = 0; r < RL_ROLE_N; r++) {
        printf("%-*s", w0, rl_plan_role_label((rl_plan_role)r, o0->dtypes));
        for (int i = 0; i < n; i++)
            printf("%*.2f", w, gib(p[i].bytes[r]));
        printf("\n");
    }
    printf("%-*s", w0, "total");
    for (int i = 0; i < n; i++)
        printf("%*.2f", w, gib(p[i].total));
    printf("\n%-*s", w0, "budget");
    for (int i = 0; i < n; i++)
        printf("%*.2f", w, gib(budget));
    printf("\n\n");
    for (int i = 0; i < n; i++)
        printf("%s: %s\n", step_name(p[i].o.stage), verdicts[i]);
    if (o0->dtypes == RL_PLAN_FP32) {
        printf("\nworkspace: %s\n", rl_plan_workspace_note(o0->dtypes, o0->ranks));
        return;
    }
    printf("\nworkspace: %s:\n", rl_plan_workspace_note(o0->dtypes, o0->ranks));
    for (int i = 0; i < n; i++)
        printf("  %s: %.0f MiB, %s\n", step_name(p[i].o.stage), (double)p[i].kernel_scratch / (1 << 20),
               p[i].kernel_scratch_by);
}

static json_t *plan_json(const rl_model_config *c, const char *teacher, const rl_plan *p, const char verdicts[][640],
                         int n, uint64_t budget)
{
    const rl_plan_opts *o0 = &p[0].o;
    json_t *doc = json_object();
    json_object_set_new(doc, "teacher",
                        json_pack("{s:s, s:s, s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:I}", "dir", teacher, "arch",
                                  rl_model_arch_name(c->arch), "hidden", c->hidden, "layers", c->layers, "heads",
                                  c->heads, "kv_heads", c->kv_heads, "head_dim", c->head_dim, "intermediate",
                                  c->intermediate, "vocab", c->vocab, "params", (json_int_t)p[0].teacher_params));
    json_t *st = json_pack("{s:s, s:i, s:I}", "arch", rl_student_arch_name(o0->arch), "attention_layers",
                           o0->attention_layers, "params", (json_int_t)p[0].student_params);
    if (o0->arch == RL_STUDENT_RWKV7) {
        char v[2] = {(char)o0->variant, 0};
        json_object_set_new(st, "variant", json_string(v));
    }
    json_object_set_new(doc, "student", st);
    json_object_set_new(doc, "ranks", json_integer(o0->ranks));
    json_object_set_new(doc, "zero", json_integer(o0->zero));
    json_object_set_new(doc, "dtypes", json_string(rl_plan_dtypes_name(o0->dtypes)));
    json_object_set_new(doc, "budget_bytes", json_integer((json_int_t)budget));
    json_object_set_new(doc, "workspace", json_string(rl_plan_workspace_note(o0->dtypes, o0->ranks)));
    json_t *stages = json_array();
    for (int i = 0; i < n; i++) {
        json_t *roles = json_object();
        for (int r = 0; r < RL_ROLE_N; r++)
            json_object_set_new(roles, rl_plan_role_key((rl_plan_role)r), json_integer((json_int_t)p[i].bytes[r]));
        json_t *s = json_pack("{s:s, s:i, s:i, s:i, s:b, s:b, s:I, s:I, s:o, s:I, s:b, s:s}", "stage",
                              rl_plan_stage_name(p[i].o.stage), "step", (int)p[i].o.stage + 1, "seq_len",
                              p[i].o.seq_len, "micro_batch", p[i].o.micro_batch, "recompute",
                              p[i].o.recompute == RL_RECOMPUTE_ON, "train_decay_shift", p[i].o.train_decay_shift,
                              "trainable_params", (json_int_t)p[i].trainable_params, "teacher_resident_params",
                              (json_int_t)p[i].teacher_resident_params, "bytes", roles, "total_bytes",
                              (json_int_t)p[i].total, "fits", p[i].fits, "verdict", verdicts[i]);
        json_object_set_new(s, "kernel_scratch_bytes", json_integer((json_int_t)p[i].kernel_scratch));
        json_object_set_new(s, "kernel_scratch_by", json_string(p[i].kernel_scratch_by));
        json_object_set_new(s, "short_by_bytes",
                            json_integer(p[i].fits ? 0 : (json_int_t)(p[i].total - budget)));
        json_array_append_new(stages, s);
    }
    json_object_set_new(doc, "stages", stages);
    return doc;
}

int cmd_plan(int argc, char **argv)
{
    enum { O_TEACHER = 1000, O_ARCH, O_VARIANT, O_RANKS, O_MEM, O_SEQ, O_XSEQ, O_MICRO, O_STAGE, O_ZERO, O_RECOMP,
           O_TRAIN, O_ATTN, O_CHUNK, O_MLPROWS, O_DTYPE, O_JSON, O_HELP };
    static const struct option opts[] = {
        {"teacher", 1, 0, O_TEACHER}, {"arch", 1, 0, O_ARCH},         {"variant", 1, 0, O_VARIANT},
        {"ranks", 1, 0, O_RANKS},     {"gpu-mem", 1, 0, O_MEM},       {"seq-len", 1, 0, O_SEQ},
        {"extend-seq-len", 1, 0, O_XSEQ}, {"micro-batch", 1, 0, O_MICRO}, {"stage", 1, 0, O_STAGE},
        {"zero", 1, 0, O_ZERO},       {"recompute", 1, 0, O_RECOMP},  {"train", 1, 0, O_TRAIN},
        {"attention-layers", 1, 0, O_ATTN}, {"chunk-rows", 1, 0, O_CHUNK}, {"mlp-rows", 1, 0, O_MLPROWS}, {"dtype", 1, 0, O_DTYPE},
        {"json", 0, 0, O_JSON},       {"help", 0, 0, O_HELP},         {0, 0, 0, 0}};
    const char *teacher = NULL, *arch = NULL, *stage = "all";
    int variant = 'b', ranks = 1, seq = 512, xseq = 16384, micro = 0, zero = 1, attn = 0, chunk = 512, mlp_rows = 0, json = 0;
    int decay_shift = 0, have_mem = 0;
    rl_plan_recompute recompute = RL_RECOMPUTE_AUTO;
    rl_plan_dtypes dtypes = RL_PLAN_BF16;
    uint64_t budget = 0;
    optind = 1;
    int o;
    while ((o = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        int bad = 0;
        switch (o) {
        case O_TEACHER: teacher = optarg; break;
        case O_ARCH: arch = optarg; break;
        case O_STAGE: stage = optarg; break;
        case O_VARIANT:
            if (strcmp(optarg, "a") && strcmp(optarg, "b")) {
                fprintf(stderr, "radlads plan: --variant expects a or b, got '%s'\n", optarg);
                bad = 1;
            }
            variant = optarg[0];
            break;
        case O_RANKS: bad = parse_int_opt("--ranks", optarg, 1, 65536, &ranks); break;
        case O_SEQ: bad = parse_int_opt("--seq-len", optarg, 1, 1 << 24, &seq); break;
        case O_XSEQ: bad = parse_int_opt("--extend-seq-len", optarg, 1, 1 << 24, &xseq); break;
        case O_MICRO: bad = parse_int_opt("--micro-batch", optarg, 1, 1 << 16, &micro); break;
        case O_ZERO: bad = parse_int_opt("--zero", optarg, 0, 1, &zero); break;
        case O_ATTN: bad = parse_int_opt("--attention-layers", optarg, 0, 1 << 16, &attn); break;
        case O_CHUNK: bad = parse_int_opt("--chunk-rows", optarg, 1, 1 << 24, &chunk); break;
        case O_MLPROWS: bad = parse_int_opt("--mlp-rows", optarg, 1, 1 << 24, &mlp_rows); break;
        case O_MEM:
            have_mem = 1;
            if (parse_size(optarg, &budget)) {
                fprintf(stderr, "radlads plan: --gpu-mem: expected a size like 80G, got '%s'\n", optarg);
                bad = 1;
            }
            break;
        case O_RECOMP:
            if (!strcmp(optarg, "auto"))
                recompute = RL_RECOMPUTE_AUTO;
            else if (!strcmp(optarg, "on"))
                recompute = RL_RECOMPUTE_ON;
            else if (!strcmp(optarg, "off"))
                recompute = RL_RECOMPUTE_OFF;
            else {
                fprintf(stderr, "radlads plan: --recompute expects auto, on or off, got '%s'\n", optarg);
                bad = 1;
            }
            break;
        case O_TRAIN:
            if (!strcmp(optarg, "all") || !strcmp(optarg, "decay_shift"))
                decay_shift = optarg[0] == 'd';
            else {
                fprintf(stderr, "radlads plan: --train expects all or decay_shift, got '%s'\n", optarg);
                bad = 1;
            }
            break;
        case O_DTYPE:
            if (rl_plan_dtypes_from_name(optarg) >= 0)
                dtypes = (rl_plan_dtypes)rl_plan_dtypes_from_name(optarg);
            else {
                fprintf(stderr, "radlads plan: --dtype expects bf16, fp32, autocast or bf16-weights, got '%s'\n",
                        optarg);
                bad = 1;
            }
            break;
        case O_JSON: json = 1; break;
        case O_HELP: plan_usage(stdout); return 0;
        default: plan_usage(stderr); return 2;
        }
        if (bad)
            return 2;
    }
    if (optind < argc) {
        fprintf(stderr, "radlads plan: unexpected argument '%s'\n", argv[optind]);
        return 2;
    }
    if (!teacher || !arch || !have_mem) {
        fprintf(stderr, "radlads plan: --teacher, --arch and --gpu-mem are required\n");
        plan_usage(stderr);
        return 2;
    }
    rl_student_arch sarch;
    if (!strcmp(arch, "rwkv7") || !strcmp(arch, "rad-rwkv7"))
        sarch = RL_STUDENT_RWKV7;
    else if (!strcmp(arch, "rwkv6") || !strcmp(arch, "rad-rwkv6"))
        sarch = RL_STUDENT_RWKV6;
    else {
        fprintf(stderr, "radlads plan: --arch '%s' is not a student architecture; use rwkv7 or rwkv6 (rad-rwkv7, "
                "rad-rwkv6)\n", arch);
        return 2;
    }
    rl_plan_stage stages[3];
    int n = 0;
    if (!strcmp(stage, "all")) {
        stages[n++] = RL_PLAN_ALIGN, stages[n++] = RL_PLAN_DISTILL, stages[n++] = RL_PLAN_EXTEND;
    } else {
        for (int s = RL_PLAN_ALIGN; s <= RL_PLAN_EXTEND; s++)
            if (!strcmp(stage, rl_plan_stage_name((rl_plan_stage)s)))
                stages[n++] = (rl_plan_stage)s;
        if (!n) {
            fprintf(stderr, "radlads plan: --stage expects align, distill, extend or all, got '%s'\n", stage);
            return 2;
        }
    }
    char path[4200], err[1024];
    snprintf(path, sizeof path, "%s/config.json", teacher);
    if (access(path, R_OK) != 0) {
        fprintf(stderr, "radlads plan: --teacher %s: no readable config.json there (%s); the planner reads only "
                "the teacher's config.json\n", teacher, strerror(errno));
        return 1;
    }
    rl_model_config cfg;
    if (rl_config_load(&cfg, path, err, sizeof err)) {
        fprintf(stderr, "radlads plan: %s\n", err);
        return 1;
    }
    rl_plan plans[3];
    char verdicts[3][640];
    for (int i = 0; i < n; i++) {
        rl_plan_opts po;
        rl_plan_opts_defaults(&po, stages[i]);
        po.arch = sarch, po.variant = variant, po.attention_layers = attn;
        po.ranks = ranks, po.zero = zero, po.chunk_rows = chunk, po.mlp_rows = mlp_rows, po.dtypes = dtypes, po.recompute = recompute;
        po.budget = budget;
        po.train_decay_shift = stages[i] == RL_PLAN_EXTEND && decay_shift;
        if (micro)
            po.micro_batch = micro;
        po.seq_len = stages[i] == RL_PLAN_EXTEND && n > 1 ? xseq : seq;
        if (rl_plan_compute(&plans[i], &cfg, &po, err, sizeof err) ||
            rl_plan_verdict(&cfg, &plans[i], verdicts[i], sizeof verdicts[i], err, sizeof err)) {
            fprintf(stderr, "radlads plan: %s\n", err);
            return 1;
        }
    }
    if (json)
        cli_print_json(plan_json(&cfg, teacher, plans, (const char (*)[640])verdicts, n, budget));
    else
        print_table(&cfg, teacher, plans, (const char (*)[640])verdicts, n, budget);
    return 0;
}
