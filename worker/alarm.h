/* alarm.h — one rank's failure said at once to the others over MPI (alarm.c), for host waits that poll (NCCL's):
 * so that the peers of a rank whose collective failed stop now, not at their deadline. */
#ifndef RADLADS_WORKER_ALARM_H
#define RADLADS_WORKER_ALARM_H

#include <mpi.h>
#include <stddef.h>
#include <stdint.h>

/* A communicator of its own, duplicated from world (a collective, the first time; later calls do nothing).
 * 0, or −1 when MPI refused. */
int rl_alarm_open(MPI_Comm world);
/* Tells every other rank that this one failed in generation gen (the caller's count of its communicators), why
 * in a line. Once per generation (later calls for it, or for an older one, send nothing); never blocks. The
 * number of ranks it was sent to. */
int rl_alarm_raise(int gen, const char *why);
/* The rank that said it failed in generation gen, with its line in why; −1 when none has (yet). Messages of an
 * older generation are dropped; one of a newer generation is kept until the caller gets to it. Never blocks. */
int rl_alarm_heard(int gen, char *why, size_t whylen);
/* Frees it (every rank of world calls it, as MPI_Comm_free wants; it does not wait for the others): what has
 * arrived unread is dropped, sends not yet through are cancelled. */
void rl_alarm_close(void);

#endif
