/* alarm.c — one rank's failure said to the others at once, for the waits that poll (alarm.h).
 *
 * NCCL's calls and its communicator's set-up are polled by the host with a deadline (nccl.c): a rank whose
 * collective or set-up fails aborts its communicator and leaves, while a peer waiting for that collective may
 * hear nothing from NCCL until the deadline (RADLADS_NCCL_TIMEOUT_S, 900 s by default: 15 minutes of every GPU of
 * the pool). So the failing rank also sends one small message to every other rank on a communicator of its own,
 * and the polling loops look for it between polls.
 *
 * A message names a generation (which communicator it is about: nccl.c counts the set-ups, and every rank counts
 * them at the same collective point), the rank, and what failed. One of an older generation is a failure the
 * receiver already dealt with (it made a new communicator since) and is dropped; one of a newer generation cannot
 * arrive before the receiver's own set-up of it, except from a rank ahead of it, and is kept for that set-up. */
#include "alarm.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ALARM_TAG 7001
#define MAX_SENT 64

typedef struct {
    int32_t gen, rank;
    char why[504];
} alarm_msg;

static struct {
    MPI_Comm comm;
    int rank, world, raised_gen;
    alarm_msg *sent[MAX_SENT]; /* the send buffers, each until its sends are complete */
    MPI_Request *reqs[MAX_SENT];
    int n_sent;
    alarm_msg pending; /* a message of a later generation than the receiver's, kept for it */
    int has_pending;
} A = {.comm = MPI_COMM_NULL, .raised_gen = -1};

int rl_alarm_open(MPI_Comm world)
{
    if (A.comm != MPI_COMM_NULL)
        return 0;
    if (MPI_Comm_dup(world, &A.comm) != MPI_SUCCESS) {
        A.comm = MPI_COMM_NULL;
        return -1;
    }
    MPI_Comm_rank(A.comm, &A.rank);
    MPI_Comm_size(A.comm, &A.world);
    A.raised_gen = -1;
    return 0;
}

/* Frees the buffers whose sends are through; 1 when none is left. */
static int reap(void)
{
    int k = 0;
    for (int i = 0; i < A.n_sent; i++) {
        int done = 0;
        MPI_Testall(A.world, A.reqs[i], &done, MPI_STATUSES_IGNORE);
        if (done) {
            free(A.sent[i]), free(A.reqs[i]);
        } else {
            A.sent[k] = A.sent[i], A.reqs[k] = A.reqs[i];
            k++;
        }
    }
    A.n_sent = k;
    return k == 0;
}

int rl_alarm_raise(int gen, const char *why)
{
    if (A.comm == MPI_COMM_NULL || gen <= A.raised_gen || A.world < 2)
        return 0; /* not open, said already for this communicator, or nobody to tell */
    reap();
    if (A.n_sent == MAX_SENT)
        return 0;
    alarm_msg *m = calloc(1, sizeof *m);
    MPI_Request *r = malloc((size_t)A.world * sizeof *r);
    if (!m || !r) {
        free(m), free(r);
        return 0;
    }
    A.raised_gen = gen;
    m->gen = gen, m->rank = A.rank;
    snprintf(m->why, sizeof m->why, "%s", why ? why : "");
    int sent = 0;
    for (int to = 0; to < A.world; to++) {
        r[to] = MPI_REQUEST_NULL;
        if (to != A.rank && MPI_Isend(m, (int)sizeof *m, MPI_BYTE, to, ALARM_TAG, A.comm, &r[to]) == MPI_SUCCESS)
            sent++;
    }
    A.sent[A.n_sent] = m, A.reqs[A.n_sent] = r;
    A.n_sent++;
    int done = 0; /* (a push: over a lazily connected transport the sends may not leave before the next MPI call) */
    MPI_Testall(A.world, r, &done, MPI_STATUSES_IGNORE);
    return sent;
}

int rl_alarm_heard(int gen, char *why, size_t whylen)
{
    if (A.comm == MPI_COMM_NULL)
        return -1;
    for (;;) {
        if (A.has_pending && A.pending.gen == gen) {
            A.has_pending = 0;
            snprintf(why, whylen, "%s", A.pending.why);
            return A.pending.rank;
        }
        if (A.has_pending && A.pending.gen < gen)
            A.has_pending = 0;
        if (A.has_pending)
            return -1; /* (a later communicator's: the receiver gets to it first) */
        int flag = 0;
        MPI_Status st;
        if (MPI_Iprobe(MPI_ANY_SOURCE, ALARM_TAG, A.comm, &flag, &st) != MPI_SUCCESS || !flag)
            return -1;
        alarm_msg m;
        memset(&m, 0, sizeof m);
        MPI_Recv(&m, (int)sizeof m, MPI_BYTE, st.MPI_SOURCE, ALARM_TAG, A.comm, MPI_STATUS_IGNORE);
        m.why[sizeof m.why - 1] = 0;
        if (m.gen >= gen)
            A.pending = m, A.has_pending = 1; /* (looked at on the next turn) */
    }
}

void rl_alarm_close(void)
{
    if (A.comm == MPI_COMM_NULL)
        return;
    /* what has arrived is received and dropped; no barrier first (a peer may be stuck elsewhere until its own
     * deadline). A message still on its way may reach a communicator duplicated later (MPI may reuse the context):
     * its generation is then an old one, dropped there. Close comes just before MPI_Finalize in the worker. */
    for (;;) {
        int flag = 0;
        MPI_Status st;
        if (MPI_Iprobe(MPI_ANY_SOURCE, ALARM_TAG, A.comm, &flag, &st) != MPI_SUCCESS || !flag)
            break;
        alarm_msg m;
        MPI_Recv(&m, (int)sizeof m, MPI_BYTE, st.MPI_SOURCE, ALARM_TAG, A.comm, MPI_STATUS_IGNORE);
    }
    if (!reap()) /* sends not through (a peer that never received them): released, not waited for; their buffers
                  * stay allocated (MPI may still read them; at most MAX_SENT small ones, at exit) */
        for (int i = 0; i < A.n_sent; i++) {
            for (int to = 0; to < A.world; to++)
                if (A.reqs[i][to] != MPI_REQUEST_NULL)
                    MPI_Request_free(&A.reqs[i][to]);
            free(A.reqs[i]);
        }
    A.n_sent = 0;
    A.has_pending = 0;
    MPI_Comm_free(&A.comm);
    A.comm = MPI_COMM_NULL;
    A.raised_gen = -1;
}
