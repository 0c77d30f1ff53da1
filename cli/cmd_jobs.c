/* Verbs that talk to radladsd. */
#include "cli.h"
#include "jobspec.h"

#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static Radlads__Envelope env_of(Radlads__Envelope__MsgCase kind, void *msg)
{
    Radlads__Envelope env = RADLADS__ENVELOPE__INIT;
    env.msg_case = kind;
    env.submit = msg; /* every case shares the oneof's storage */
    return env;
}

static char *read_file(const char *path, size_t *len)
{
    FILE *f = !strcmp(path, "-") ? stdin : fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "radlads: cannot read %s: %s\n", path, strerror(errno));
        return NULL;
    }
    size_t cap = 4096, n = 0;
    char *buf = malloc(cap);
    while (buf) {
        size_t r = fread(buf + n, 1, cap - n - 1, f);
        n += r;
        if (r == 0) break;
        if (n + 1 == cap) {
            if (cap > (4u << 20)) {
                fprintf(stderr, "radlads: %s is larger than 4 MiB; that is not a job spec\n", path);
                free(buf);
                buf = NULL;
                break;
            }
            char *nb = realloc(buf, cap * 2);
            if (!nb) {
                free(buf);
                buf = NULL;
                break;
            }
            buf = nb;
            cap *= 2;
        }
    }
    if (f != stdin) fclose(f);
    if (buf) {
        buf[n] = 0;
        *len = n;
    }
    return buf;
}

/* Command-line paths are relative to the working directory. */
static json_t *abs_path(const char *p)
{
    if (p[0] == '/') return json_string(p);
    char cwd[PATH_MAX], buf[PATH_MAX * 2];
    if (!getcwd(cwd, sizeof cwd)) return json_string(p);
    snprintf(buf, sizeof buf, "%s/%s", cwd, p);
    return json_string(buf);
}

static json_t *obj_at(json_t *root, const char *key)
{
    json_t *o = json_object_get(root, key);
    if (!json_is_object(o)) {
        o = json_object();
        json_object_set_new(root, key, o);
    }
    return o;
}

static void append_paths(json_t *arr, const char *list)
{
    char *dup = strdup(list), *save = NULL;
    for (char *tok = strtok_r(dup, ",", &save); tok; tok = strtok_r(NULL, ",", &save))
        if (*tok) json_array_append_new(arr, abs_path(tok));
    free(dup);
}

static json_t *scalar_json(const char *v)
{
    char *end;
    long long n = strtoll(v, &end, 10);
    if (*v && !*end) return json_integer(n);
    return json_string(v);
}

static void submit_usage(FILE *f)
{
    fprintf(f, "usage: radlads submit [job.yaml|-] [options]\n"
               "  --name NAME                 job name (default: the output folder's name)\n"
               "  --teacher DIR               HuggingFace model folder (config.json + *.safetensors)\n"
               "  --arch rad-rwkv7|rad-rwkv6  student architecture (default rad-rwkv7)\n"
               "  --variant a|b               rad-rwkv7 variant (default b)\n"
               "  --keep-attention-layers N   keep the last N layers as softmax attention\n"
               "  --data FILE[,FILE...]       training token files (repeatable)\n"
               "  --valid FILE[,FILE...]      validation token files\n"
               "  --output DIR                where the converted model goes\n"
               "  --stages S[,S...]           stage plan with recipe defaults (default transfer,align,distill,extend,export)\n"
               "  --ranks N --device cpu|cuda --pool NAME   resources\n"
               "  --max-restarts N            attempts a stage may be retried (default 3)\n"
               "  --priority N                higher runs first (-1000..1000)\n"
               "  --hold                      queue it HELD (release it later)\n"
               "  --print-id                  print only the job id\n"
               "Flags override the file's fields.  Token counts accept suffixes: 100M, 1.5B.\n");
}

int cmd_submit(int argc, char **argv)
{
    enum { O_NAME = 256, O_TEACHER, O_ARCH, O_VARIANT, O_KEEP, O_DATA, O_VALID, O_OUTPUT, O_STAGES, O_RANKS,
           O_DEVICE, O_POOL, O_MAXR, O_PRIO, O_HOLD, O_PRINTID };
    static const struct option opts[] = {
        {"name", required_argument, 0, O_NAME},       {"teacher", required_argument, 0, O_TEACHER},
        {"arch", required_argument, 0, O_ARCH},       {"variant", required_argument, 0, O_VARIANT},
        {"keep-attention-layers", required_argument, 0, O_KEEP},
        {"data", required_argument, 0, O_DATA},       {"valid", required_argument, 0, O_VALID},
        {"output", required_argument, 0, O_OUTPUT},   {"stages", required_argument, 0, O_STAGES},
        {"ranks", required_argument, 0, O_RANKS},     {"device", required_argument, 0, O_DEVICE},
        {"pool", required_argument, 0, O_POOL},       {"max-restarts", required_argument, 0, O_MAXR},
        {"priority", required_argument, 0, O_PRIO},   {"hold", no_argument, 0, O_HOLD},
        {"print-id", no_argument, 0, O_PRINTID},      {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0}};
    json_t *over = json_object();
    json_t *train = NULL, *valid = NULL;
    int hold = 0, print_id = 0, has_prio = 0;
    long prio = 0;
    optind = 1;
    int c;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case O_NAME: json_object_set_new(over, "name", json_string(optarg)); break;
        case O_TEACHER: json_object_set_new(over, "teacher", abs_path(optarg)); break;
        case O_ARCH: json_object_set_new(obj_at(over, "student"), "arch", json_string(optarg)); break;
        case O_VARIANT: json_object_set_new(obj_at(over, "student"), "variant", json_string(optarg)); break;
        case O_KEEP: json_object_set_new(obj_at(over, "student"), "keep_attention_layers", scalar_json(optarg)); break;
        case O_DATA:
            if (!train) train = json_array();
            append_paths(train, optarg);
            break;
        case O_VALID:
            if (!valid) valid = json_array();
            append_paths(valid, optarg);
            break;
        case O_OUTPUT: json_object_set_new(over, "output", abs_path(optarg)); break;
        case O_STAGES: {
            json_t *arr = json_array();
            char *dup = strdup(optarg), *save = NULL;
            for (char *t = strtok_r(dup, ",", &save); t; t = strtok_r(NULL, ",", &save)) json_array_append_new(arr, json_string(t));
            free(dup);
            json_object_set_new(over, "stages", arr);
            break;
        }
        case O_RANKS: json_object_set_new(obj_at(over, "resources"), "ranks", scalar_json(optarg)); break;
        case O_DEVICE: json_object_set_new(obj_at(over, "resources"), "device", json_string(optarg)); break;
        case O_POOL: json_object_set_new(obj_at(over, "resources"), "pool", json_string(optarg)); break;
        case O_MAXR: json_object_set_new(over, "max_restarts", scalar_json(optarg)); break;
        case O_PRIO: {
            char *end;
            prio = strtol(optarg, &end, 10);
            if (end == optarg || *end || prio < -1000 || prio > 1000) {
                fprintf(stderr, "radlads: --priority: expected an integer between -1000 and 1000, got \"%s\"\n", optarg);
                json_decref(over);
                return 2;
            }
            has_prio = 1;
            break;
        }
        case O_HOLD: hold = 1; break;
        case O_PRINTID: print_id = 1; break;
        case 'h': submit_usage(stdout); json_decref(over); return 0;
        default: submit_usage(stderr); json_decref(over); return 2;
        }
    }
    if (train) json_object_set_new(obj_at(over, "data"), "train", train);
    if (valid) json_object_set_new(obj_at(over, "data"), "valid", valid);
    if (argc - optind > 1) {
        fprintf(stderr, "radlads: submit takes one job file, got %d\n", argc - optind);
        json_decref(over);
        return 2;
    }

    /* Start from the file (its relative paths are relative to the file), then apply the flags. */
    json_t *doc = json_object();
    char base_dir[PATH_MAX];
    if (!getcwd(base_dir, sizeof base_dir)) snprintf(base_dir, sizeof base_dir, ".");
    char err[2048];
    if (optind < argc) {
        const char *file = argv[optind];
        size_t len;
        char *text = read_file(file, &len);
        if (!text) {
            json_decref(over), json_decref(doc);
            return 1;
        }
        char *js = rl_yaml_to_json(text, len, err, sizeof err);
        free(text);
        if (!js) {
            fprintf(stderr, "radlads: %s: %s\n", file, err);
            json_decref(over), json_decref(doc);
            return 1;
        }
        json_error_t jerr;
        json_decref(doc);
        doc = json_loads(js, 0, &jerr);
        free(js);
        if (!json_is_object(doc)) {
            fprintf(stderr, "radlads: %s: the job spec must be a mapping of fields\n", file);
            json_decref(over), json_decref(doc);
            return 1;
        }
        if (strcmp(file, "-")) {
            char real[PATH_MAX];
            if (realpath(file, real)) {
                char *slash = strrchr(real, '/');
                if (slash) *slash = 0;
                snprintf(base_dir, sizeof base_dir, "%s", *real ? real : "/");
            }
        }
    }
    const char *key;
    json_t *val;
    json_object_foreach(over, key, val)
    {
        json_t *cur = json_object_get(doc, key);
        if (json_is_object(val) && json_is_object(cur)) json_object_update(cur, val);
        else json_object_set(doc, key, val);
    }
    json_decref(over);
    char *text = json_dumps(doc, JSON_COMPACT);
    json_decref(doc);

    rl_job_spec spec;
    if (rl_jobspec_parse(&spec, text, strlen(text), base_dir, RL_SPEC_CHECK_PATHS, err, sizeof err) < 0) {
        fprintf(stderr, "radlads: invalid job spec: %s\n", err);
        free(text);
        return 1;
    }
    free(text);
    char *canonical = rl_jobspec_to_json(&spec);
    rl_jobspec_free(&spec);

    rl_client cl;
    if (cli_connect(&cl) < 0) {
        free(canonical);
        return 1;
    }
    Radlads__SubmitRequest req = RADLADS__SUBMIT_REQUEST__INIT;
    req.spec_json = canonical;
    req.hold = hold;
    req.has_priority = has_prio;
    req.priority = (int32_t)prio;
    Radlads__Envelope env = env_of(RADLADS__ENVELOPE__MSG_SUBMIT, &req), *reply;
    int rc = cli_call(&cl, &env, &reply, RADLADS__ENVELOPE__MSG_SUBMIT_REPLY);
    free(canonical);
    rl_client_close(&cl);
    if (rc < 0) return 1;
    if (print_id) printf("%lld\n", (long long)reply->submit_reply->job_id);
    else printf("submitted job %lld%s\n", (long long)reply->submit_reply->job_id, hold ? " (held)" : "");
    radlads__envelope__free_unpacked(reply, NULL);
    return 0;
}

json_t *cli_summary_json(const Radlads__JobSummary *j)
{
    json_t *o = json_object();
    json_object_set_new(o, "id", json_integer(j->id));
    json_object_set_new(o, "name", json_string(j->name));
    json_object_set_new(o, "state", json_string(j->state));
    json_object_set_new(o, "owner", json_string(j->owner));
    json_object_set_new(o, "owner_uid", json_integer(j->owner_uid));
    json_object_set_new(o, "priority", json_integer(j->priority));
    json_object_set_new(o, "submitted_at_ms", json_integer(j->submitted_at_ms));
    json_object_set_new(o, "updated_at_ms", json_integer(j->updated_at_ms));
    json_object_set_new(o, "current_stage", json_string(j->current_stage));
    json_object_set_new(o, "stages_done", json_integer(j->stages_done));
    json_object_set_new(o, "stages_total", json_integer(j->stages_total));
    json_object_set_new(o, "progress", json_real(j->progress));
    json_object_set_new(o, "restarts", json_integer(j->restarts));
    json_object_set_new(o, "tokens_per_s", json_real(j->tokens_per_s));
    json_object_set_new(o, "failure_reason", *j->failure_reason ? json_string(j->failure_reason) : json_null());
    return o;
}

/* Streaming JSON for large listings: building a jansson tree for 10,000 jobs costs more than the whole
 * round trip to the daemon.  Same fields and order as cli_summary_json(). */
static void put_json_string(FILE *f, const char *s)
{
    fputc('"', f);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        switch (*p) {
        case '"': fputs("\\\"", f); break;
        case '\\': fputs("\\\\", f); break;
        case '\n': fputs("\\n", f); break;
        case '\r': fputs("\\r", f); break;
        case '\t': fputs("\\t", f); break;
        default:
            if (*p < 0x20) fprintf(f, "\\u%04x", *p);
            else fputc(*p, f);
        }
    }
    fputc('"', f);
}

static void put_summary_json(FILE *f, const Radlads__JobSummary *j)
{
    fprintf(f, "    {\n      \"id\": %lld,\n      \"name\": ", (long long)j->id);
    put_json_string(f, j->name);
    fputs(",\n      \"state\": ", f);
    put_json_string(f, j->state);
    fputs(",\n      \"owner\": ", f);
    put_json_string(f, j->owner);
    fprintf(f, ",\n      \"owner_uid\": %u,\n      \"priority\": %d,\n      \"submitted_at_ms\": %lld,\n"
               "      \"updated_at_ms\": %lld,\n      \"current_stage\": ",
            j->owner_uid, j->priority, (long long)j->submitted_at_ms, (long long)j->updated_at_ms);
    put_json_string(f, j->current_stage);
    fprintf(f, ",\n      \"stages_done\": %d,\n      \"stages_total\": %d,\n      \"progress\": %.10g,\n"
               "      \"restarts\": %d,\n      \"tokens_per_s\": %.10g,\n      \"failure_reason\": ",
            j->stages_done, j->stages_total, j->progress, j->restarts, j->tokens_per_s);
    if (*j->failure_reason) put_json_string(f, j->failure_reason);
    else fputs("null", f);
    fputs("\n    }", f);
}

static int has_flag(int argc, char **argv, const char *flag)
{
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], flag)) return 1;
    return 0;
}

int cmd_status(int argc, char **argv)
{
    static const struct option opts[] = {{"state", required_argument, 0, 's'}, {"mine", no_argument, 0, 'm'},
                                         {"limit", required_argument, 0, 'l'}, {"json", no_argument, 0, 'j'},
                                         {"help", no_argument, 0, 'h'},        {0, 0, 0, 0}};
    Radlads__StatusRequest req = RADLADS__STATUS_REQUEST__INIT;
    char *states[16];
    char *state_buf = NULL;
    int json = 0, c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 's': {
            static const char *const known[] = {"QUEUED", "HELD", "RUNNING", "RECOVERING", "COMPLETED",
                                                "FAILED", "CANCELLING", "CANCELLED", "INTERRUPTED"};
            free(state_buf);
            state_buf = strdup(optarg);
            req.n_states = 0;
            char *save = NULL;
            for (char *t = strtok_r(state_buf, ",", &save); t && req.n_states < 16; t = strtok_r(NULL, ",", &save)) {
                for (char *p = t; *p; p++) *p = (char)toupper((unsigned char)*p);
                int ok = 0;
                for (size_t k = 0; k < sizeof known / sizeof known[0]; k++) ok |= !strcmp(t, known[k]);
                if (!ok) {
                    fprintf(stderr, "radlads: --state: unknown state \"%s\" (QUEUED HELD RUNNING RECOVERING COMPLETED "
                                    "FAILED CANCELLING CANCELLED INTERRUPTED)\n", t);
                    free(state_buf);
                    return 2;
                }
                states[req.n_states++] = t;
            }
            req.states = states;
            break;
        }
        case 'm': req.mine = 1; break;
        case 'l': req.limit = atoi(optarg); break;
        case 'j': json = 1; break;
        case 'h': printf("usage: radlads status [--state S,...] [--mine] [--limit N] [--json]\n"); free(state_buf); return 0;
        default: free(state_buf); return 2;
        }
    }
    rl_client cl;
    if (cli_connect(&cl) < 0) {
        free(state_buf);
        return 1;
    }
    Radlads__Envelope env = env_of(RADLADS__ENVELOPE__MSG_STATUS, &req), *reply;
    int rc = cli_call(&cl, &env, &reply, RADLADS__ENVELOPE__MSG_STATUS_REPLY);
    rl_client_close(&cl);
    free(state_buf);
    if (rc < 0) return 1;
    Radlads__StatusReply *r = reply->status_reply;
    if (json) {
        static char buf[1 << 16];
        setvbuf(stdout, buf, _IOFBF, sizeof buf);
        fputs("{\n  \"jobs\": [", stdout);
        for (size_t i = 0; i < r->n_jobs; i++) {
            fputs(i ? ",\n" : "\n", stdout);
            put_summary_json(stdout, r->jobs[i]);
        }
        printf("%s],\n  \"schema_version\": %d\n}\n", r->n_jobs ? "\n  " : "", RL_JSON_SCHEMA_VERSION);
    } else if (r->n_jobs == 0) {
        printf("no jobs\n");
    } else {
        printf("%-6s %-20s %-10s %-11s %-10s %-8s %-9s %s\n", "ID", "NAME", "OWNER", "STATE", "STAGE", "PROGRESS",
               "STAGES", "SUBMITTED");
        for (size_t i = 0; i < r->n_jobs; i++) {
            Radlads__JobSummary *j = r->jobs[i];
            char when[32], stages[16], prog[16];
            cli_relative_time(j->submitted_at_ms, when, sizeof when);
            snprintf(stages, sizeof stages, "%d/%d", j->stages_done, j->stages_total);
            snprintf(prog, sizeof prog, "%5.1f%%", 100.0 * j->progress);
            printf("%-6lld %-20.20s %-10.10s %-11s %-10s %-8s %-9s %s\n", (long long)j->id, j->name, j->owner,
                   j->state, *j->current_stage ? j->current_stage : "-", prog, stages, when);
        }
    }
    radlads__envelope__free_unpacked(reply, NULL);
    return 0;
}

static void ms_to_iso(int64_t ms, char *buf, size_t len)
{
    if (ms <= 0) {
        snprintf(buf, len, "-");
        return;
    }
    time_t t = (time_t)(ms / 1000);
    struct tm tm;
    localtime_r(&t, &tm);
    strftime(buf, len, "%Y-%m-%d %H:%M:%S", &tm);
}

int cmd_show(int argc, char **argv)
{
    int json = has_flag(argc, argv, "--json");
    int64_t id = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--json")) continue;
        if (id) {
            fprintf(stderr, "radlads: show takes one job id\n");
            return 2;
        }
        if (cli_parse_id(argv[i], &id) < 0) return 2;
    }
    if (!id) {
        fprintf(stderr, "usage: radlads show ID [--json]\n");
        return 2;
    }
    rl_client cl;
    if (cli_connect(&cl) < 0) return 1;
    Radlads__ShowRequest req = RADLADS__SHOW_REQUEST__INIT;
    req.job_id = id;
    Radlads__Envelope env = env_of(RADLADS__ENVELOPE__MSG_SHOW, &req), *reply;
    int rc = cli_call(&cl, &env, &reply, RADLADS__ENVELOPE__MSG_SHOW_REPLY);
    rl_client_close(&cl);
    if (rc < 0) return 1;
    Radlads__ShowReply *r = reply->show_reply;
    if (json) {
        json_t *doc = cli_summary_json(r->job);
        json_error_t jerr;
        json_t *spec = json_loads(r->spec_json, 0, &jerr);
        json_object_set_new(doc, "spec", spec ? spec : json_null());
        json_object_set_new(doc, "output_dir", json_string(r->output_dir));
        json_object_set_new(doc, "result_path", *r->result_path ? json_string(r->result_path) : json_null());
        json_object_set_new(doc, "restart_of", r->restart_of ? json_integer(r->restart_of) : json_null());
        json_t *stages = json_array();
        for (size_t i = 0; i < r->n_stages; i++) {
            Radlads__StageInfo *s = r->stages[i];
            json_t *o = json_object();
            json_object_set_new(o, "idx", json_integer(s->idx));
            json_object_set_new(o, "kind", json_string(s->kind));
            json_object_set_new(o, "state", json_string(s->state));
            json_object_set_new(o, "tokens_total", json_integer(s->tokens_total));
            json_object_set_new(o, "tokens_done", json_integer(s->tokens_done));
            json_object_set_new(o, "step", json_integer(s->step));
            json_object_set_new(o, "last_loss", json_real(s->last_loss));
            json_object_set_new(o, "attempts", json_integer(s->attempts));
            json_object_set_new(o, "started_at_ms", json_integer(s->started_at_ms));
            json_object_set_new(o, "finished_at_ms", json_integer(s->finished_at_ms));
            json_object_set_new(o, "output_dir", json_string(s->output_dir));
            json_object_set_new(o, "mem_peak_bytes", s->mem_peak_bytes ? json_integer(s->mem_peak_bytes) : json_null());
            json_array_append_new(stages, o);
        }
        json_object_set_new(doc, "stages", stages);
        json_t *atts = json_array();
        for (size_t i = 0; i < r->n_attempts; i++) {
            Radlads__AttemptInfo *a = r->attempts[i];
            json_t *o = json_object();
            json_object_set_new(o, "id", json_integer(a->id));
            json_object_set_new(o, "stage_idx", json_integer(a->stage_idx));
            json_object_set_new(o, "number", json_integer(a->number));
            json_object_set_new(o, "state", json_string(a->state));
            json_object_set_new(o, "pool_id", json_integer(a->pool_id));
            json_object_set_new(o, "started_at_ms", json_integer(a->started_at_ms));
            json_object_set_new(o, "finished_at_ms", json_integer(a->finished_at_ms));
            json_object_set_new(o, "failure_reason", *a->failure_reason ? json_string(a->failure_reason) : json_null());
            json_object_set_new(o, "resumed_from_checkpoint", a->resumed_from_checkpoint ? json_integer(a->resumed_from_checkpoint) : json_null());
            json_array_append_new(atts, o);
        }
        json_object_set_new(doc, "attempts", atts);
        json_t *cks = json_array();
        for (size_t i = 0; i < r->n_checkpoints; i++) {
            Radlads__CheckpointInfo *k = r->checkpoints[i];
            json_t *o = json_object();
            json_object_set_new(o, "id", json_integer(k->id));
            json_object_set_new(o, "stage_idx", json_integer(k->stage_idx));
            json_object_set_new(o, "step", json_integer(k->step));
            json_object_set_new(o, "tokens", json_integer(k->tokens));
            json_object_set_new(o, "path", json_string(k->path));
            json_object_set_new(o, "sha256", json_string(k->sha256));
            json_object_set_new(o, "created_at_ms", json_integer(k->created_at_ms));
            json_array_append_new(cks, o);
        }
        json_object_set_new(doc, "checkpoints", cks);
        cli_print_json(doc);
    } else {
        Radlads__JobSummary *j = r->job;
        char t1[64], t2[64];
        cli_relative_time(j->submitted_at_ms, t1, sizeof t1);
        printf("job %lld  %s\n", (long long)j->id, j->name);
        printf("  state      %s%s%s\n", j->state, *j->failure_reason ? ": " : "", j->failure_reason);
        printf("  owner      %s (uid %u)   priority %d   restarts %d\n", j->owner, j->owner_uid, j->priority, j->restarts);
        printf("  submitted  %s\n", t1);
        printf("  progress   %.1f%%  (%d of %d stages)\n", 100 * j->progress, j->stages_done, j->stages_total);
        printf("  output     %s\n", r->output_dir);
        if (*r->result_path) printf("  result     %s\n", r->result_path);
        if (r->restart_of) printf("  restart of job %lld\n", (long long)r->restart_of);
        printf("\n  %-3s %-9s %-9s %10s %10s %8s %9s %8s %s\n", "#", "STAGE", "STATE", "TOKENS", "DONE", "STEP", "LOSS",
               "ATTEMPTS", "MEM PEAK");
        for (size_t i = 0; i < r->n_stages; i++) {
            Radlads__StageInfo *s = r->stages[i];
            char tot[32], done[32], loss[32];
            rl_format_count(s->tokens_total, tot, sizeof tot);
            rl_format_count(s->tokens_done, done, sizeof done);
            if (!s->tokens_total) snprintf(tot, sizeof tot, "-");
            if (!s->tokens_done) snprintf(done, sizeof done, "-");
            if (s->step) snprintf(loss, sizeof loss, "%.4f", s->last_loss);
            else snprintf(loss, sizeof loss, "-");
            char mem[32] = "-";
            if (s->mem_peak_bytes)
                rl_format_bytes(s->mem_peak_bytes, mem, sizeof mem);
            printf("  %-3d %-9s %-9s %10s %10s %8lld %9s %8d %s\n", s->idx, s->kind, s->state, tot, done,
                   (long long)s->step, loss, s->attempts, mem);
        }
        if (r->n_attempts) {
            printf("\n  attempts:\n");
            for (size_t i = 0; i < r->n_attempts; i++) {
                Radlads__AttemptInfo *a = r->attempts[i];
                ms_to_iso(a->started_at_ms, t1, sizeof t1);
                ms_to_iso(a->finished_at_ms, t2, sizeof t2);
                printf("  %-6lld stage %d #%d %-9s pool %-4lld %s .. %s%s%s\n", (long long)a->id, a->stage_idx, a->number,
                       a->state, (long long)a->pool_id, t1, t2, *a->failure_reason ? "  " : "", a->failure_reason);
            }
        }
        if (r->n_checkpoints) {
            printf("\n  checkpoints:\n");
            for (size_t i = 0; i < r->n_checkpoints; i++) {
                Radlads__CheckpointInfo *k = r->checkpoints[i];
                printf("  stage %d step %-8lld %s  sha256 %.12s\n", k->stage_idx, (long long)k->step, k->path, k->sha256);
            }
        }
    }
    radlads__envelope__free_unpacked(reply, NULL);
    return 0;
}

int cmd_action(int argc, char **argv)
{
    Radlads__JobAction action;
    if (!strcmp(argv[0], "cancel")) action = RADLADS__JOB_ACTION__ACTION_CANCEL;
    else if (!strcmp(argv[0], "hold")) action = RADLADS__JOB_ACTION__ACTION_HOLD;
    else if (!strcmp(argv[0], "release")) action = RADLADS__JOB_ACTION__ACTION_RELEASE;
    else if (!strcmp(argv[0], "drain")) action = RADLADS__JOB_ACTION__ACTION_DRAIN;
    else action = RADLADS__JOB_ACTION__ACTION_RESTART;
    int json = has_flag(argc, argv, "--json");
    int64_t *ids = calloc((size_t)argc, sizeof *ids);
    size_t n = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--json")) continue;
        if (cli_parse_id(argv[i], &ids[n]) < 0) {
            free(ids);
            return 2;
        }
        n++;
    }
    if (!n || (action == RADLADS__JOB_ACTION__ACTION_RESTART && n != 1)) {
        fprintf(stderr, "usage: radlads %s ID%s\n", argv[0], action == RADLADS__JOB_ACTION__ACTION_RESTART ? "" : "...");
        free(ids);
        return 2;
    }
    rl_client cl;
    if (cli_connect(&cl) < 0) {
        free(ids);
        return 1;
    }
    Radlads__ActionRequest req = RADLADS__ACTION_REQUEST__INIT;
    req.action = action;
    req.n_job_ids = n;
    req.job_ids = ids;
    Radlads__Envelope env = env_of(RADLADS__ENVELOPE__MSG_ACTION, &req), *reply;
    int rc = cli_call(&cl, &env, &reply, RADLADS__ENVELOPE__MSG_ACTION_REPLY);
    rl_client_close(&cl);
    free(ids);
    if (rc < 0) return 1;
    int failed = 0;
    json_t *arr = json ? json_array() : NULL;
    for (size_t i = 0; i < reply->action_reply->n_results; i++) {
        Radlads__ActionResult *r = reply->action_reply->results[i];
        if (!r->ok) failed = 1;
        if (json) {
            json_t *o = json_object();
            json_object_set_new(o, "id", json_integer(r->job_id));
            json_object_set_new(o, "ok", json_boolean(r->ok));
            json_object_set_new(o, "state", json_string(r->state));
            json_object_set_new(o, "message", json_string(r->message));
            if (r->new_job_id) json_object_set_new(o, "new_job_id", json_integer(r->new_job_id));
            json_array_append_new(arr, o);
        } else if (!r->ok) {
            fprintf(stderr, "radlads: %s %lld: %s\n", argv[0], (long long)r->job_id, r->message);
        } else if (*r->message) {
            printf("%s\n", r->message);
        } else {
            printf("job %lld: %s\n", (long long)r->job_id, r->state);
        }
    }
    if (json) {
        json_t *doc = json_object();
        json_object_set_new(doc, "action", json_string(argv[0]));
        json_object_set_new(doc, "results", arr);
        cli_print_json(doc);
    }
    radlads__envelope__free_unpacked(reply, NULL);
    return failed ? 1 : 0;
}

static volatile sig_atomic_t interrupted;
static void on_sigint(int s)
{
    (void)s;
    interrupted = 1;
}

int cmd_events(int argc, char **argv)
{
    static const struct option opts[] = {{"follow", no_argument, 0, 'f'}, {"after", required_argument, 0, 'a'},
                                         {"json", no_argument, 0, 'j'},   {"help", no_argument, 0, 'h'},
                                         {0, 0, 0, 0}};
    Radlads__EventsRequest req = RADLADS__EVENTS_REQUEST__INIT;
    int json = 0, c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "fh", opts, NULL)) != -1) {
        switch (c) {
        case 'f': req.follow = 1; break;
        case 'a': req.after_id = atoll(optarg); break;
        case 'j': json = 1; break;
        case 'h': printf("usage: radlads events ID [--follow] [--after EVENT_ID] [--json]\n"); return 0;
        default: return 2;
        }
    }
    if (optind != argc - 1) {
        fprintf(stderr, "usage: radlads events ID [--follow] [--after EVENT_ID] [--json]\n");
        return 2;
    }
    if (cli_parse_id(argv[optind], &req.job_id) < 0) return 2;
    rl_client cl;
    if (cli_connect(&cl) < 0) return 1;
    Radlads__Envelope env = env_of(RADLADS__ENVELOPE__MSG_EVENTS, &req);
    char err[1024];
    if (rl_client_send(&cl, &env, err, sizeof err) < 0) {
        fprintf(stderr, "radlads: %s\n", err);
        rl_client_close(&cl);
        return 1;
    }
    signal(SIGINT, on_sigint);
    json_t *arr = json ? json_array() : NULL;
    int rc = 0;
    while (!interrupted) {
        Radlads__Envelope *e;
        int r = rl_client_recv(&cl, &e, 500, err, sizeof err);
        if (r == -RL_E_TIMEOUT) continue;
        if (r < 0) {
            fprintf(stderr, "radlads: %s\n", err);
            rc = 1;
            break;
        }
        if (e->msg_case == RADLADS__ENVELOPE__MSG_ERROR) {
            fprintf(stderr, "radlads: %s\n", e->error->message);
            radlads__envelope__free_unpacked(e, NULL);
            rc = 1;
            break;
        }
        if (e->msg_case != RADLADS__ENVELOPE__MSG_EVENT_BATCH) {
            radlads__envelope__free_unpacked(e, NULL);
            continue;
        }
        Radlads__EventBatch *b = e->event_batch;
        for (size_t i = 0; i < b->n_events; i++) {
            Radlads__Event *ev = b->events[i];
            if (json) {
                json_t *o = json_object();
                json_object_set_new(o, "id", json_integer(ev->id));
                json_object_set_new(o, "job_id", json_integer(ev->job_id));
                json_object_set_new(o, "time_ms", json_integer(ev->time_ms));
                json_object_set_new(o, "kind", json_string(ev->kind));
                json_object_set_new(o, "stage_idx", ev->stage_idx >= 0 ? json_integer(ev->stage_idx) : json_null());
                json_object_set_new(o, "from", *ev->from_state ? json_string(ev->from_state) : json_null());
                json_object_set_new(o, "to", *ev->to_state ? json_string(ev->to_state) : json_null());
                json_object_set_new(o, "reason", *ev->reason ? json_string(ev->reason) : json_null());
                json_array_append_new(arr, o);
            } else {
                char t[64], stage[16] = "";
                ms_to_iso(ev->time_ms, t, sizeof t);
                if (ev->stage_idx >= 0) snprintf(stage, sizeof stage, "[%d]", ev->stage_idx);
                printf("%-7lld %s  %-10s %-4s %s -> %s%s%s\n", (long long)ev->id, t, ev->kind, stage,
                       *ev->from_state ? ev->from_state : "(new)", ev->to_state, *ev->reason ? "  " : "", ev->reason);
                fflush(stdout);
            }
        }
        int end = b->end;
        radlads__envelope__free_unpacked(e, NULL);
        if (end) break;
    }
    rl_client_close(&cl);
    if (json) {
        json_t *doc = json_object();
        json_object_set_new(doc, "events", arr);
        cli_print_json(doc);
    }
    return rc;
}

int cmd_wait(int argc, char **argv)
{
    static const struct option opts[] = {{"timeout", required_argument, 0, 't'}, {"json", no_argument, 0, 'j'},
                                         {"help", no_argument, 0, 'h'},          {0, 0, 0, 0}};
    Radlads__WaitRequest req = RADLADS__WAIT_REQUEST__INIT;
    int json = 0, c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 't': {
            char *end;
            double s = strtod(optarg, &end);
            if (end == optarg || *end || s <= 0) {
                fprintf(stderr, "radlads: --timeout: expected seconds > 0, got \"%s\"\n", optarg);
                return 2;
            }
            req.timeout_ms = (int64_t)(s * 1000);
            break;
        }
        case 'j': json = 1; break;
        case 'h': printf("usage: radlads wait ID... [--timeout S]  (exit 0: all completed, 1: a failure, 2: timeout)\n"); return 0;
        default: return 2;
        }
    }
    size_t n = (size_t)(argc - optind);
    if (!n) {
        fprintf(stderr, "usage: radlads wait ID... [--timeout S]\n");
        return 2;
    }
    int64_t *ids = calloc(n, sizeof *ids);
    for (size_t i = 0; i < n; i++)
        if (cli_parse_id(argv[optind + (int)i], &ids[i]) < 0) {
            free(ids);
            return 2;
        }
    req.job_ids = ids;
    req.n_job_ids = n;
    rl_client cl;
    if (cli_connect(&cl) < 0) {
        free(ids);
        return 1;
    }
    Radlads__Envelope env = env_of(RADLADS__ENVELOPE__MSG_WAIT, &req), *reply;
    int rc = cli_call(&cl, &env, &reply, RADLADS__ENVELOPE__MSG_WAIT_REPLY);
    rl_client_close(&cl);
    free(ids);
    if (rc < 0) return 1;
    Radlads__WaitReply *r = reply->wait_reply;
    int status = r->timed_out ? 2 : 0;
    json_t *arr = json_array();
    for (size_t i = 0; i < r->n_jobs; i++) {
        Radlads__JobSummary *j = r->jobs[i];
        if (!r->timed_out && strcmp(j->state, "COMPLETED")) status = 1;
        if (json) json_array_append_new(arr, cli_summary_json(j));
        else printf("job %lld: %s%s%s\n", (long long)j->id, j->state, *j->failure_reason ? ": " : "", j->failure_reason);
    }
    if (json) {
        json_t *doc = json_object();
        json_object_set_new(doc, "timed_out", json_boolean(r->timed_out));
        json_object_set_new(doc, "jobs", arr);
        cli_print_json(doc);
    } else {
        json_decref(arr);
        if (r->timed_out) fprintf(stderr, "radlads: timed out waiting\n");
    }
    radlads__envelope__free_unpacked(reply, NULL);
    return status;
}

int cmd_daemon_status(int argc, char **argv)
{
    int json = has_flag(argc, argv, "--json");
    rl_client cl;
    if (cli_connect(&cl) < 0) return 1;
    Radlads__DaemonStatusRequest req = RADLADS__DAEMON_STATUS_REQUEST__INIT;
    Radlads__Envelope env = env_of(RADLADS__ENVELOPE__MSG_DAEMON_STATUS, &req), *reply;
    int rc = cli_call(&cl, &env, &reply, RADLADS__ENVELOPE__MSG_DAEMON_STATUS_REPLY);
    rl_client_close(&cl);
    if (rc < 0) return 1;
    Radlads__DaemonStatusReply *r = reply->daemon_status_reply;
    if (json) {
        json_t *doc = json_object(), *by = json_object();
        json_object_set_new(doc, "version", json_string(r->version));
        json_object_set_new(doc, "pid", json_integer(r->pid));
        json_object_set_new(doc, "started_at_ms", json_integer(r->started_at_ms));
        json_object_set_new(doc, "db_path", json_string(r->db_path));
        json_object_set_new(doc, "db_schema_version", json_integer(r->schema_version));
        json_object_set_new(doc, "socket_path", json_string(r->socket_path));
        json_object_set_new(doc, "pools", json_integer(r->pools));
        json_object_set_new(doc, "connections", json_integer(r->connections));
        json_object_set_new(doc, "max_running", json_integer(r->max_running));
        for (size_t i = 0; i < r->n_jobs_by_state; i++)
            json_object_set_new(by, r->jobs_by_state[i]->key, json_integer(r->jobs_by_state[i]->value));
        json_object_set_new(doc, "jobs_by_state", by);
        cli_print_json(doc);
    } else {
        char up[32];
        cli_relative_time(r->started_at_ms, up, sizeof up);
        printf("radladsd %s  pid %d  started %s\n", r->version, r->pid, up);
        printf("  database   %s (schema %d)\n", r->db_path, r->schema_version);
        printf("  socket     %s\n", r->socket_path);
        printf("  pools      %d   connections %d   max running %s\n", r->pools, r->connections,
               r->max_running ? "" : "unlimited");
        printf("  jobs      ");
        if (!r->n_jobs_by_state) printf(" none");
        for (size_t i = 0; i < r->n_jobs_by_state; i++)
            printf(" %s %lld", r->jobs_by_state[i]->key, (long long)r->jobs_by_state[i]->value);
        printf("\n");
    }
    radlads__envelope__free_unpacked(reply, NULL);
    return 0;
}
