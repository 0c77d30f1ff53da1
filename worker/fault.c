/* fault.c — test-only fault injection (validate.h): a NaN gradient or an infinite loss at a chosen
 * optimizer step, so the tests can prove that the stage stops, names the step and the tensor, and leaves
 * the last checkpoint intact.  Read from RADLADS_TEST_POISON; without it every call is a no-op. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "validate.h"

/* "grad:STEP[:TENSOR]" or "loss:STEP": 1 when spec asks for kind at step; the tensor name to name. */
static int poison_at(const char *kind, int64_t step, char *tensor, size_t len)
{
    const char *spec = getenv("RADLADS_TEST_POISON");
    size_t k = strlen(kind);
    if (!spec || strncmp(spec, kind, k) != 0 || spec[k] != ':')
        return 0;
    char *end;
    long long at = strtoll(spec + k + 1, &end, 10);
    if (end == spec + k + 1 || at != step)
        return 0;
    snprintf(tensor, len, "%s", *end == ':' ? end + 1 : "");
    return 1;
}

int rl__fault_backward_fails(int64_t step, int rank)
{
    char r[32];
    return poison_at("backward", step, r, sizeof r) && atoi(r) == rank;
}

int rl__fault_pack_fails(int64_t step, int rank)
{
    char r[32];
    return poison_at("pack", step, r, sizeof r) && atoi(r) == rank;
}

int rl__fault_quits(int64_t step, int rank)
{
    char r[32];
    return poison_at("quit", step, r, sizeof r) && atoi(r) == rank;
}

int rl__fault_start_fails(int rank)
{
    char unused[8];
    return poison_at("start", rank, unused, sizeof unused);
}

int rl__fault_nccl_init_fails(int rank)
{
    char unused[8];
    return poison_at("ncclinit", rank, unused, sizeof unused);
}

int rl__fault_nccl_fails(int64_t call, int rank)
{
    char r[32];
    return poison_at("nccl", call, r, sizeof r) && atoi(r) == rank;
}

int rl__fault_join_delay(int rank)
{
    char secs[32];
    return poison_at("join", rank, secs, sizeof secs) ? atoi(secs) : 0;
}

int rl__fault_poisons_grad(int64_t step)
{
    char name[160];
    return poison_at("grad", step, name, sizeof name);
}

void rl__fault_poison_grad(rl__trainer *t, int64_t step)
{
    char name[160];
    if (!poison_at("grad", step, name, sizeof name))
        return;
    for (int i = 0; i < t->n_t; i++)
        if (!name[0] || strcmp(t->t[i].name, name) == 0) {
            const float nan = NAN;
            const uint16_t nan16 = rl_f32_to_bf16(NAN);
            rl_upload(t->be, t->t[i].grad, t->t[i].bf16 ? (const void *)&nan16 : (const void *)&nan,
                      t->t[i].bf16 ? sizeof nan16 : sizeof nan);
            return;
        }
    fprintf(stderr, "RADLADS_TEST_POISON: no trainable tensor \"%s\"\n", name);
}

double rl__fault_poison_loss(int64_t step, double loss)
{
    char name[8];
    return poison_at("loss", step, name, sizeof name) ? INFINITY : loss;
}
