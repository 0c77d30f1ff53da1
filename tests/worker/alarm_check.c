/* alarm_check — worker/alarm.c on real Open MPI ranks (run by test_alarm.py under mpirun -np 3): a rank's
 * failure reaches the others while they poll, with its rank and line; a second raise for the same generation
 * sends nothing; a message about an older generation is dropped, one about a newer one waits for it; closing
 * with a message nobody read neither hangs nor leaks into the next opening. Each rank prints its checks; the
 * exit status is 1 when any check failed on any rank. */
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "alarm.h"

static int rank, failures;

static void check(const char *what, int ok, const char *detail)
{
    printf("rank %d: %-72s %s%s%s\n", rank, what, ok ? "ok" : "FAIL", detail && *detail ? "  " : "",
           detail ? detail : "");
    fflush(stdout);
    failures += !ok;
}

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* Polls as nccl.c's loops do (a short nap between looks), up to limit seconds: who was heard, or −1. */
static int poll_for(int gen, double limit, char *why, size_t whylen, double *took)
{
    const double t0 = now_s();
    struct timespec nap = {0, 200000};
    for (;;) {
        int who = rl_alarm_heard(gen, why, whylen);
        *took = now_s() - t0;
        if (who >= 0 || *took > limit)
            return who;
        nanosleep(&nap, NULL);
    }
}

/* Polls for gen's message up to 10 s: it must come from rank `from` and contain `text`. */
static void expect_from(int gen, int from, const char *text, const char *what)
{
    char why[600], detail[700];
    double took;
    const int who = poll_for(gen, 10.0, why, sizeof why, &took);
    snprintf(detail, sizeof detail, "rank %d after %.1f ms: %s", who, took * 1e3, who >= 0 ? why : "");
    check(what, who == from && strstr(why, text), detail);
}

/* Polls for gen's message for 0.3 s: none may come. */
static void expect_none(int gen, const char *what)
{
    char why[600], detail[64];
    double took;
    const int who = poll_for(gen, 0.3, why, sizeof why, &took);
    snprintf(detail, sizeof detail, "heard %d", who);
    check(what, who == -1, detail);
}

int main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    int world;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &world);
    if (world != 3) {
        if (!rank)
            fprintf(stderr, "alarm_check: run it on 3 ranks (mpirun -np 3), not %d\n", world);
        MPI_Finalize();
        return 2;
    }
    char why[600], detail[64];

    check("opened", rl_alarm_open(MPI_COMM_WORLD) == 0 && rl_alarm_open(MPI_COMM_WORLD) == 0, "");
    check("nothing heard before anyone failed", rl_alarm_heard(1, why, sizeof why) == -1, "");

    /* generation 1: rank 1 fails; the others, polling, hear it */
    MPI_Barrier(MPI_COMM_WORLD);
    if (rank == 1) {
        int n = rl_alarm_raise(1, "ncclAllReduce: unhandled system error: socket closed");
        snprintf(detail, sizeof detail, "sent to %d", n);
        check("raise: sent to both other ranks", n == 2, detail);
        check("a second raise for the same generation sends nothing", rl_alarm_raise(1, "again") == 0, "");
        check("nor one for an older generation", rl_alarm_raise(0, "older") == 0, "");
        expect_none(1, "the failing rank does not hear itself");
    } else {
        expect_from(1, 1, "socket closed", "a polling rank hears rank 1 with its line");
        check("and only once", rl_alarm_heard(1, why, sizeof why) == -1, "");
    }
    MPI_Barrier(MPI_COMM_WORLD);

    /* generation 2: rank 2 says generation 1 failed (late news): dropped by the others, who are at 2 now;
     * then rank 0 fails in generation 2, and that is what they hear */
    if (rank == 2)
        check("rank 2 raises for generation 1 (late)", rl_alarm_raise(1, "late news about generation 1") == 2, "");
    MPI_Barrier(MPI_COMM_WORLD);
    if (rank != 2)
        expect_none(2, "a message about an older generation is dropped");
    MPI_Barrier(MPI_COMM_WORLD);
    if (rank == 0)
        rl_alarm_raise(2, "cudaStreamQuery: an illegal memory access was encountered");
    else
        expect_from(2, 0, "illegal memory access", "generation 2's failure is rank 0's");
    MPI_Barrier(MPI_COMM_WORLD);

    /* generation 4 raised by rank 0 while the others are still at 3: kept until they get to 4 */
    if (rank == 0)
        rl_alarm_raise(4, "ncclCommInitRankConfig: remote process exited");
    MPI_Barrier(MPI_COMM_WORLD);
    if (rank != 0) {
        expect_none(3, "a message about a newer generation is not generation 3's");
        expect_from(4, 0, "remote process exited", "...and is heard at generation 4");
    }
    MPI_Barrier(MPI_COMM_WORLD);

    /* a message nobody reads, then close: no hang; after reopening (a new count of generations, as the worker's
     * would be) a message still on its way, if MPI hands it to the new communicator, is an older generation's */
    if (rank == 1)
        rl_alarm_raise(5, "never read");
    rl_alarm_close();
    check("closed with an unread message", 1, "");
    check("reopened", rl_alarm_open(MPI_COMM_WORLD) == 0, "");
    MPI_Barrier(MPI_COMM_WORLD);
    expect_none(6, "the closed communicator's message is not heard at a later generation");
    MPI_Barrier(MPI_COMM_WORLD);
    check("the reopened communicator carries a raise", rank != 1 || rl_alarm_raise(6, "after reopening") == 2, "");
    if (rank != 1)
        expect_from(6, 1, "after reopening", "...to the others");
    MPI_Barrier(MPI_COMM_WORLD);
    rl_alarm_close();

    int all = 0;
    MPI_Allreduce(&failures, &all, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
    if (!rank)
        printf("%s\n", all ? "FAILED" : "all checks passed on 3 ranks");
    MPI_Finalize();
    return all ? 1 : 0;
}
