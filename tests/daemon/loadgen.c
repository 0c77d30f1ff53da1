/* A submit load generator over the real protocol: N client threads, each with its own connection,
 * submitting a spec M times.  Every acknowledged job id is appended to --ids-out (one line each, written
 * only after the daemon's reply), so a crash test can check that nothing acknowledged was lost.
 * Prints a JSON summary: submits, acknowledged, errors, elapsed, submits/s, p50/p99 latency (ms). */
#include "proto.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static const char *socket_path, *spec_json;
static int per_client = 100, keep_going;
static int ids_fd = -1;
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static double *lat;
static size_t n_lat;
static long acked, errors;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void *client(void *arg)
{
    (void)arg;
    rl_client c;
    int connected = 0;
    char err[1024];
    for (int i = 0; i < per_client;) {
        if (!connected) {
            if (rl_client_connect(&c, socket_path, RADLADS__ROLE__ROLE_CLI, NULL, err, sizeof err) < 0) {
                if (!keep_going) {
                    fprintf(stderr, "loadgen: %s\n", err);
                    __atomic_add_fetch(&errors, 1, __ATOMIC_SEQ_CST);
                    return NULL;
                }
                usleep(20000);
                continue;
            }
            connected = 1;
        }
        Radlads__Envelope env = RADLADS__ENVELOPE__INIT, *reply;
        Radlads__SubmitRequest req = RADLADS__SUBMIT_REQUEST__INIT;
        req.spec_json = (char *)spec_json;
        env.msg_case = RADLADS__ENVELOPE__MSG_SUBMIT;
        env.submit = &req;
        double t0 = now_s();
        int rc = rl_client_call(&c, &env, &reply, RADLADS__ENVELOPE__MSG_SUBMIT_REPLY, err, sizeof err);
        double dt = now_s() - t0;
        if (rc < 0) {
            __atomic_add_fetch(&errors, 1, __ATOMIC_SEQ_CST);
            rl_client_close(&c);
            connected = 0;
            if (!keep_going) {
                fprintf(stderr, "loadgen: %s\n", err);
                return NULL;
            }
            continue; /* not acknowledged: submit again */
        }
        char line[32];
        int n = snprintf(line, sizeof line, "%lld\n", (long long)reply->submit_reply->job_id);
        radlads__envelope__free_unpacked(reply, NULL);
        pthread_mutex_lock(&mu);
        if (ids_fd >= 0 && write(ids_fd, line, (size_t)n) != n) perror("loadgen: ids-out");
        lat[n_lat++] = dt * 1000;
        acked++;
        pthread_mutex_unlock(&mu);
        i++;
    }
    if (connected) rl_client_close(&c);
    return NULL;
}

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
    int clients = 1;
    const char *spec_file = NULL, *ids_out = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--socket") && i + 1 < argc) socket_path = argv[++i];
        else if (!strcmp(argv[i], "--clients") && i + 1 < argc) clients = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--submits") && i + 1 < argc) per_client = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--spec") && i + 1 < argc) spec_file = argv[++i];
        else if (!strcmp(argv[i], "--ids-out") && i + 1 < argc) ids_out = argv[++i];
        else if (!strcmp(argv[i], "--keep-going")) keep_going = 1;
        else {
            fprintf(stderr, "usage: loadgen --socket S --spec FILE.json [--clients N] [--submits M] [--ids-out F] [--keep-going]\n");
            return 2;
        }
    }
    if (!socket_path || !spec_file || clients < 1 || per_client < 1) {
        fprintf(stderr, "loadgen: --socket and --spec are required\n");
        return 2;
    }
    FILE *f = fopen(spec_file, "r");
    if (!f) {
        fprintf(stderr, "loadgen: %s: %s\n", spec_file, strerror(errno));
        return 2;
    }
    static char buf[1 << 16];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    spec_json = buf;
    if (ids_out && (ids_fd = open(ids_out, O_WRONLY | O_CREAT | O_APPEND, 0644)) < 0) {
        perror("loadgen: ids-out");
        return 2;
    }
    lat = calloc((size_t)clients * (size_t)per_client, sizeof *lat);
    pthread_t *th = calloc((size_t)clients, sizeof *th);
    double t0 = now_s();
    for (int i = 0; i < clients; i++) pthread_create(&th[i], NULL, client, NULL);
    for (int i = 0; i < clients; i++) pthread_join(th[i], NULL);
    double elapsed = now_s() - t0;
    qsort(lat, n_lat, sizeof *lat, cmp);
    double p50 = n_lat ? lat[n_lat / 2] : 0, p99 = n_lat ? lat[(size_t)(n_lat * 0.99)] : 0;
    printf("{\"clients\": %d, \"acknowledged\": %ld, \"errors\": %ld, \"elapsed_s\": %.4f, \"submits_per_s\": %.1f, "
           "\"p50_ms\": %.4f, \"p99_ms\": %.4f}\n",
           clients, acked, errors, elapsed, acked / elapsed, p50, p99);
    if (ids_fd >= 0) close(ids_fd);
    free(lat);
    free(th);
    return errors && !keep_going ? 1 : 0;
}
