/* Verbs for watching work in progress: pools, checkpoints, logs, watch. */
#include "cli.h"
#include "jobspec.h"

#include <getopt.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static Radlads__Envelope *call(rl_client *cl, Radlads__Envelope__MsgCase kind, void *msg, Radlads__Envelope__MsgCase want)
{
    Radlads__Envelope env = RADLADS__ENVELOPE__INIT, *reply;
    env.msg_case = kind;
    env.pools = msg; /* every case shares the oneof's storage */
    return cli_call(cl, &env, &reply, want) < 0 ? NULL : reply;
}

static Radlads__Envelope *show_job(rl_client *cl, int64_t id)
{
    Radlads__ShowRequest req = RADLADS__SHOW_REQUEST__INIT;
    req.job_id = id;
    return call(cl, RADLADS__ENVELOPE__MSG_SHOW, &req, RADLADS__ENVELOPE__MSG_SHOW_REPLY);
}

static int json_flag(int argc, char **argv)
{
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "--json")) return 1;
    return 0;
}

static int one_id(int argc, char **argv, int64_t *id, const char *usage)
{
    *id = 0;
    for (int i = 1; i < argc; i++) {
        if (argv[i][0] == '-') continue;
        if (*id || cli_parse_id(argv[i], id) < 0) {
            fprintf(stderr, "usage: %s\n", usage);
            return -1;
        }
    }
    if (!*id) fprintf(stderr, "usage: %s\n", usage);
    return *id ? 0 : -1;
}

int cmd_pools(int argc, char **argv)
{
    int json = json_flag(argc, argv);
    rl_client cl;
    if (cli_connect(&cl) < 0) return 1;
    Radlads__PoolsRequest req = RADLADS__POOLS_REQUEST__INIT;
    Radlads__Envelope *r = call(&cl, RADLADS__ENVELOPE__MSG_POOLS, &req, RADLADS__ENVELOPE__MSG_POOLS_REPLY);
    rl_client_close(&cl);
    if (!r) return 1;
    Radlads__PoolsReply *pr = r->pools_reply;
    if (json) {
        json_t *doc = json_object(), *arr = json_array();
        for (size_t i = 0; i < pr->n_pools; i++) {
            Radlads__PoolInfo *p = pr->pools[i];
            json_t *o = json_object(), *pids = json_array();
            json_object_set_new(o, "id", json_integer(p->id));
            json_object_set_new(o, "name", json_string(p->name));
            json_object_set_new(o, "ranks", json_integer(p->ranks));
            json_object_set_new(o, "device", json_string(p->device));
            json_object_set_new(o, "host", json_string(p->host));
            json_object_set_new(o, "state", json_string(p->state));
            json_object_set_new(o, "job_id", p->job_id ? json_integer(p->job_id) : json_null());
            json_object_set_new(o, "stage_idx", p->stage_idx >= 0 ? json_integer(p->stage_idx) : json_null());
            json_object_set_new(o, "attempt_id", p->attempt_id ? json_integer(p->attempt_id) : json_null());
            json_object_set_new(o, "last_seen_ms", json_integer(p->last_seen_ms));
            json_object_set_new(o, "launched", json_boolean(p->launch_id != 0));
            for (size_t k = 0; k < p->n_rank_pids; k++) json_array_append_new(pids, json_integer(p->rank_pids[k]));
            json_object_set_new(o, "rank_pids", pids);
            json_array_append_new(arr, o);
        }
        json_object_set_new(doc, "pools", arr);
        cli_print_json(doc);
    } else if (!pr->n_pools) {
        printf("no pools connected\n");
    } else {
        printf("%-5s %-12s %-5s %-6s %-12s %-5s %-10s %s\n", "ID", "NAME", "RANKS", "DEVICE", "HOST", "STATE", "JOB", "SEEN");
        for (size_t i = 0; i < pr->n_pools; i++) {
            Radlads__PoolInfo *p = pr->pools[i];
            char job[32] = "-", seen[32];
            if (p->job_id) snprintf(job, sizeof job, "%lld[%d]", (long long)p->job_id, p->stage_idx);
            cli_relative_time(p->last_seen_ms, seen, sizeof seen);
            printf("%-5lld %-12.12s %-5d %-6s %-12.12s %-5s %-10s %s%s\n", (long long)p->id, *p->name ? p->name : "-",
                   p->ranks, p->device, p->host, p->state, job, seen, p->launch_id ? "  (launched)" : "");
        }
    }
    radlads__envelope__free_unpacked(r, NULL);
    return 0;
}

int cmd_checkpoints(int argc, char **argv)
{
    int64_t id;
    if (one_id(argc, argv, &id, "radlads checkpoints ID [--json]") < 0) return 2;
    rl_client cl;
    if (cli_connect(&cl) < 0) return 1;
    Radlads__Envelope *r = show_job(&cl, id);
    rl_client_close(&cl);
    if (!r) return 1;
    Radlads__ShowReply *s = r->show_reply;
    if (json_flag(argc, argv)) {
        json_t *doc = json_object(), *arr = json_array();
        for (size_t i = 0; i < s->n_checkpoints; i++) {
            Radlads__CheckpointInfo *k = s->checkpoints[i];
            json_t *o = json_object();
            json_object_set_new(o, "id", json_integer(k->id));
            json_object_set_new(o, "stage_idx", json_integer(k->stage_idx));
            json_object_set_new(o, "stage", json_string(k->stage_idx < (int)s->n_stages ? s->stages[k->stage_idx]->kind : ""));
            json_object_set_new(o, "step", json_integer(k->step));
            json_object_set_new(o, "tokens", json_integer(k->tokens));
            json_object_set_new(o, "path", json_string(k->path));
            json_object_set_new(o, "sha256", json_string(k->sha256));
            json_object_set_new(o, "created_at_ms", json_integer(k->created_at_ms));
            json_array_append_new(arr, o);
        }
        json_object_set_new(doc, "job_id", json_integer(id));
        json_object_set_new(doc, "checkpoints", arr);
        cli_print_json(doc);
    } else if (!s->n_checkpoints) {
        printf("job %lld has no checkpoints\n", (long long)id);
    } else {
        printf("%-6s %-9s %8s %10s %-10s %-14s %s\n", "ID", "STAGE", "STEP", "TOKENS", "CREATED", "SHA256", "PATH");
        for (size_t i = 0; i < s->n_checkpoints; i++) {
            Radlads__CheckpointInfo *k = s->checkpoints[i];
            char tok[32], when[32];
            rl_format_count(k->tokens, tok, sizeof tok);
            cli_relative_time(k->created_at_ms, when, sizeof when);
            printf("%-6lld %-9s %8lld %10s %-10s %.12s…  %s\n", (long long)k->id,
                   k->stage_idx < (int)s->n_stages ? s->stages[k->stage_idx]->kind : "?", (long long)k->step, tok, when,
                   k->sha256, k->path);
        }
    }
    radlads__envelope__free_unpacked(r, NULL);
    return 0;
}

static volatile sig_atomic_t stop;
static void on_int(int s)
{
    (void)s;
    stop = 1;
}

/* A stage given as an index or a kind ("align"). */
static int stage_index(rl_client *cl, int64_t id, const char *s, int *out)
{
    char *end;
    long v = strtol(s, &end, 10);
    if (*s && !*end && v >= 0) {
        *out = (int)v;
        return 0;
    }
    Radlads__Envelope *r = show_job(cl, id);
    if (!r) return -1;
    int found = -1;
    for (size_t i = 0; i < r->show_reply->n_stages; i++)
        if (!strcmp(r->show_reply->stages[i]->kind, s)) found = (int)i;
    radlads__envelope__free_unpacked(r, NULL);
    if (found < 0) fprintf(stderr, "radlads: job %lld has no stage \"%s\"\n", (long long)id, s);
    *out = found;
    return found < 0 ? -1 : 0;
}

int cmd_logs(int argc, char **argv)
{
    static const struct option opts[] = {{"follow", no_argument, 0, 'f'}, {"stage", required_argument, 0, 's'},
                                         {"rank", required_argument, 0, 'r'}, {"tail", required_argument, 0, 't'},
                                         {"json", no_argument, 0, 'j'},      {"help", no_argument, 0, 'h'},
                                         {0, 0, 0, 0}};
    const char *usage = "radlads logs ID [-f|--follow] [--stage S] [--rank R] [--tail N] [--json]";
    int follow = 0, json = 0, c;
    const char *stage = NULL;
    long rank = -1, tail = 0;
    optind = 1;
    while ((c = getopt_long(argc, argv, "fh", opts, NULL)) != -1) {
        switch (c) {
        case 'f': follow = 1; break;
        case 's': stage = optarg; break;
        case 'r': rank = atol(optarg); break;
        case 't': tail = atol(optarg); break;
        case 'j': json = 1; break;
        case 'h': printf("usage: %s\n", usage); return 0;
        default: return 2;
        }
    }
    int64_t id;
    if (optind != argc - 1 || cli_parse_id(argv[optind], &id) < 0) {
        fprintf(stderr, "usage: %s\n", usage);
        return 2;
    }
    rl_client cl;
    if (cli_connect(&cl) < 0) return 1;
    int stage_idx = -1;
    if (stage && stage_index(&cl, id, stage, &stage_idx) < 0) {
        rl_client_close(&cl);
        return 1;
    }
    signal(SIGINT, on_int);
    int64_t after = 0;
    json_t *arr = json ? json_array() : NULL;
    int rc = 0;
    for (int first = 1; !stop; first = 0) {
        Radlads__LogsRequest req = RADLADS__LOGS_REQUEST__INIT;
        req.job_id = id;
        req.after_id = after;
        req.stage_idx = stage_idx;
        req.rank = (int32_t)rank;
        req.limit = first ? (int32_t)tail : 0;
        Radlads__Envelope *r = call(&cl, RADLADS__ENVELOPE__MSG_LOGS, &req, RADLADS__ENVELOPE__MSG_LOGS_REPLY);
        if (!r) {
            rc = 1;
            break;
        }
        for (size_t i = 0; i < r->logs_reply->n_lines; i++) {
            Radlads__LogEntry *e = r->logs_reply->lines[i];
            after = e->id;
            if (json) {
                json_t *o = json_object();
                json_object_set_new(o, "id", json_integer(e->id));
                json_object_set_new(o, "time_ms", json_integer(e->time_ms));
                json_object_set_new(o, "stage_idx", json_integer(e->stage_idx));
                json_object_set_new(o, "rank", json_integer(e->rank));
                json_object_set_new(o, "level", json_string(e->level));
                json_object_set_new(o, "text", json_string(e->text));
                json_array_append_new(arr, o);
            } else {
                char t[32];
                time_t s = (time_t)(e->time_ms / 1000);
                struct tm tm;
                localtime_r(&s, &tm);
                strftime(t, sizeof t, "%H:%M:%S", &tm);
                printf("%s [%d] r%d %-5s %s\n", t, e->stage_idx, e->rank, e->level, e->text);
            }
        }
        fflush(stdout);
        radlads__envelope__free_unpacked(r, NULL);
        if (!follow) break;
        /* Following: poll once a second until the job has ended and nothing new came. */
        Radlads__Envelope *s = show_job(&cl, id);
        int ended = s && (!strcmp(s->show_reply->job->state, "COMPLETED") || !strcmp(s->show_reply->job->state, "FAILED") ||
                          !strcmp(s->show_reply->job->state, "CANCELLED"));
        if (s) radlads__envelope__free_unpacked(s, NULL);
        if (ended && !first) break;
        usleep(ended ? 0 : 1000000);
    }
    rl_client_close(&cl);
    if (json) {
        json_t *doc = json_object();
        json_object_set_new(doc, "job_id", json_integer(id));
        json_object_set_new(doc, "lines", arr);
        cli_print_json(doc);
    }
    return rc;
}

static void bar(char *out, size_t len, double frac, int width)
{
    if (frac < 0) frac = 0;
    if (frac > 1) frac = 1;
    int fill = (int)(frac * width + 0.5);
    size_t n = 0;
    for (int i = 0; i < width && n + 4 < len; i++) {
        const char *c = i < fill ? "█" : "·";
        size_t cl = strlen(c);
        memcpy(out + n, c, cl);
        n += cl;
    }
    out[n] = 0;
}

/* watch ID: per-stage progress bars (tokens, loss, tokens/s, ETA), redrawn every second until the job
 * ends; on a terminal it redraws in place, otherwise it prints one frame per change. */
int cmd_watch(int argc, char **argv)
{
    int64_t id;
    if (one_id(argc, argv, &id, "radlads watch ID [--interval S]") < 0) return 2;
    double interval = 1.0;
    for (int i = 1; i + 1 < argc; i++)
        if (!strcmp(argv[i], "--interval")) interval = atof(argv[i + 1]);
    if (interval < 0.1) interval = 0.1;
    rl_client cl;
    if (cli_connect(&cl) < 0) return 1;
    signal(SIGINT, on_int);
    int tty = isatty(1), lines_drawn = 0, status = 0;
    char last_frame[8192] = "";
    while (!stop) {
        Radlads__Envelope *r = show_job(&cl, id);
        if (!r) {
            status = 1;
            break;
        }
        Radlads__ShowReply *s = r->show_reply;
        char frame[8192];
        size_t n = 0;
        n += (size_t)snprintf(frame + n, sizeof frame - n, "job %lld %s  %s%s%s  %.1f%%\n", (long long)id, s->job->name,
                              s->job->state, *s->job->failure_reason ? ": " : "", s->job->failure_reason,
                              100 * s->job->progress);
        for (size_t i = 0; i < s->n_stages && n < sizeof frame - 512; i++) {
            Radlads__StageInfo *st = s->stages[i];
            double frac = !strcmp(st->state, "DONE") ? 1.0 : st->tokens_total ? (double)st->tokens_done / st->tokens_total : 0;
            char b[256], done[32], total[32], loss[32] = "", rate[48] = "", eta[48] = "";
            bar(b, sizeof b, frac, 24);
            rl_format_count(st->tokens_done, done, sizeof done);
            rl_format_count(st->tokens_total, total, sizeof total);
            if (st->step) snprintf(loss, sizeof loss, "loss %.4f", st->last_loss);
            int running = !strcmp(st->state, "RUNNING");
            double tps = running ? s->job->tokens_per_s : 0;
            if (tps > 0) {
                snprintf(rate, sizeof rate, "%.0f tok/s", tps);
                double left = (double)(st->tokens_total - st->tokens_done) / tps;
                if (left > 0) snprintf(eta, sizeof eta, "ETA %dm%02ds", (int)(left / 60), (int)left % 60);
            }
            if (st->mem_peak_bytes) { /* after the ETA: "peak 1.52 GiB" (rank 0's backend memory) */
                char m[32];
                rl_format_bytes(st->mem_peak_bytes, m, sizeof m);
                size_t e = strlen(eta);
                snprintf(eta + e, sizeof eta - e, "%speak %s", e ? "  " : "", m);
            }
            n += (size_t)snprintf(frame + n, sizeof frame - n, "  %d %-9s %-9s %s %5.1f%% %7s/%-7s %-12s %-14s %s\n",
                                  st->idx, st->kind, st->state, b, 100 * frac, st->tokens_total ? done : "-",
                                  st->tokens_total ? total : "-", loss, rate, eta);
        }
        int ended = !strcmp(s->job->state, "COMPLETED") || !strcmp(s->job->state, "FAILED") ||
                    !strcmp(s->job->state, "CANCELLED");
        if (ended && strcmp(s->job->state, "COMPLETED")) status = 1;
        radlads__envelope__free_unpacked(r, NULL);
        if (strcmp(frame, last_frame)) {
            if (tty && lines_drawn) printf("\033[%dA\033[J", lines_drawn);
            fputs(frame, stdout);
            fflush(stdout);
            lines_drawn = 0;
            for (const char *p = frame; *p; p++) lines_drawn += *p == '\n';
            snprintf(last_frame, sizeof last_frame, "%s", frame);
        }
        if (ended) break;
        usleep((useconds_t)(interval * 1e6));
    }
    rl_client_close(&cl);
    return status;
}
