/* radlads-worker: runs the conversion stages. main is a small dispatcher:
 *   radlads-worker run --stage transfer ...   weight transfer (teacher -> initial student)
 * The trainer and worker-pools issues add stages and the daemon connection here. */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "student.h"

static void usage(FILE *f)
{
    fprintf(f, "usage: radlads-worker run --stage transfer --teacher DIR --arch rad-rwkv7|rad-rwkv6\n"
               "         [--variant a|b] [--attention-layers N] [--seed N] --out DIR\n"
               "transfer: copies the teacher's weights into a RADLADS student and initialises the new time-mix\n"
               "tensors by their METHOD.md formulas (seeded); writes DIR/config.json and DIR/model.safetensors.\n"
               "--variant (RAD-RWKV7 only): b = state balancing (default), a = k_k/k_a + GroupNorm.\n"
               "--attention-layers N keeps the last N layers as softmax attention (hybrid; default 0).\n");
}

static int parse_int(const char *opt, const char *s, long lo, long hi, long *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || *end || end == s || v < lo || v > hi) {
        fprintf(stderr, "radlads-worker: %s expects an integer in [%ld, %ld], got \"%s\"\n", opt, lo, hi, s);
        return -1;
    }
    *out = v;
    return 0;
}

static int stage_transfer(const char *teacher, const char *arch_s, const char *variant_s, long attn, long seed,
                          const char *out)
{
    rl_student_arch arch;
    if (rl_student_arch_from_name(arch_s, &arch)) {
        fprintf(stderr, "radlads-worker: --arch \"%s\" is not rad-rwkv7 or rad-rwkv6\n", arch_s);
        return 2;
    }
    if (variant_s && (strlen(variant_s) != 1 || (variant_s[0] != 'a' && variant_s[0] != 'b'))) {
        fprintf(stderr, "radlads-worker: --variant \"%s\" is not known; use a (k_k/k_a + GroupNorm) or b (state "
                        "balancing)\n", variant_s);
        return 2;
    }
    if (variant_s && arch != RL_STUDENT_RWKV7) {
        fprintf(stderr, "radlads-worker: --variant applies to rad-rwkv7 only\n");
        return 2;
    }
    char err[1024];
    rl_backend *be;
    rl_backend_options bo = {.kind = RL_BACKEND_CPU};
    if (rl_backend_create(&be, &bo, err, sizeof err)) {
        fprintf(stderr, "radlads-worker: %s\n", err);
        return 1;
    }
    rl_student *s = NULL;
    int rc = rl_student_transfer(&s, be, teacher, arch, variant_s ? variant_s[0] : 'b', (int)attn, (uint64_t)seed,
                                 err, sizeof err);
    if (!rc)
        rc = rl_student_save(s, out, err, sizeof err);
    if (!rc)
        printf("wrote %s: %s%s%s, %d time-mix layers, %d attention layers\n", out, rl_student_arch_name(arch),
               arch == RL_STUDENT_RWKV7 ? " variant " : "", arch == RL_STUDENT_RWKV7 ? (s->variant == 'a' ? "a" : "b")
                                                                                     : "",
               s->base->cfg.layers - s->attention_layers, s->attention_layers);
    else
        fprintf(stderr, "radlads-worker transfer: %s\n", err);
    rl_student_destroy(s);
    rl_backend_destroy(be);
    return rc ? 1 : 0;
}

static int cmd_run(int argc, char **argv)
{
    enum { O_STAGE = 1000, O_TEACHER, O_ARCH, O_VARIANT, O_ATTN, O_SEED, O_OUT, O_HELP };
    static const struct option opts[] = {
        {"stage", 1, 0, O_STAGE}, {"teacher", 1, 0, O_TEACHER}, {"arch", 1, 0, O_ARCH},
        {"variant", 1, 0, O_VARIANT}, {"attention-layers", 1, 0, O_ATTN}, {"seed", 1, 0, O_SEED},
        {"out", 1, 0, O_OUT}, {"help", 0, 0, O_HELP}, {0, 0, 0, 0}};
    const char *stage = NULL, *teacher = NULL, *arch = NULL, *variant = NULL, *out = NULL;
    long attn = 0, seed = 0;
    int o;
    optind = 1;
    while ((o = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (o) {
        case O_STAGE: stage = optarg; break;
        case O_TEACHER: teacher = optarg; break;
        case O_ARCH: arch = optarg; break;
        case O_VARIANT: variant = optarg; break;
        case O_OUT: out = optarg; break;
        case O_ATTN:
            if (parse_int("--attention-layers", optarg, 0, 100000, &attn))
                return 2;
            break;
        case O_SEED:
            if (parse_int("--seed", optarg, 0, 0x7fffffffL, &seed))
                return 2;
            break;
        case O_HELP: usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (!stage || optind < argc) {
        usage(stderr);
        return 2;
    }
    if (strcmp(stage, "transfer") == 0) {
        if (!teacher || !arch || !out) {
            fprintf(stderr, "radlads-worker: --stage transfer needs --teacher, --arch and --out\n");
            return 2;
        }
        return stage_transfer(teacher, arch, variant, attn, seed, out);
    }
    fprintf(stderr, "radlads-worker: stage \"%s\" is not known (available: transfer)\n", stage);
    return 2;
}

int main(int argc, char **argv)
{
    if (argc >= 2 && strcmp(argv[1], "run") == 0)
        return cmd_run(argc - 1, argv + 1);
    if (argc >= 2 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "help") == 0)) {
        usage(stdout);
        return 0;
    }
    usage(stderr);
    return 2;
}
