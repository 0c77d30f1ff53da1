/* radlads: the user's command. */
#include "cli.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

const char *cli_socket;

static const struct verb {
    const char *name;
    int (*fn)(int, char **);
    const char *help;
} verbs[] = {
    {"submit", cmd_submit, "submit [job.yaml] [--teacher DIR --arch A --data FILE --output DIR ...]  queue a conversion"},
    {"status", cmd_status, "status [--state S,...] [--mine] [--limit N] [--json]                    list jobs"},
    {"show", cmd_show, "show ID [--json]                                                        one job in detail"},
    {"cancel", cmd_action, "cancel ID...                                                            stop and cancel jobs"},
    {"hold", cmd_action, "hold ID...                                                              keep queued jobs from starting"},
    {"release", cmd_action, "release ID...                                                           let held jobs start"},
    {"drain", cmd_action, "drain ID...                                                             checkpoint, stop and hold running jobs"},
    {"restart", cmd_action, "restart ID                                                              run a job again (a finished one as a new job)"},
    {"events", cmd_events, "events ID [--follow] [--after N] [--json]                              a job's history"},
    {"wait", cmd_wait, "wait ID... [--timeout S]                                                wait for jobs to finish (exit 0 ok, 1 failure, 2 timeout)"},
 {"watch", cmd_watch, "watch ID                                                                live per-stage progress (tokens, loss, tokens/s, ETA)"},
    {"logs", cmd_logs, "logs ID [-f] [--stage S] [--rank R] [--tail N] [--json]                worker log lines of a job"},
    {"checkpoints", cmd_checkpoints, "checkpoints ID [--json]                                                 a job's checkpoints (sha256, path)"},
    {"pools", cmd_pools, "pools [--json]                                                          connected worker pools"},
    {"daemon-status", cmd_daemon_status, "daemon-status [--json]                                                  the daemon itself"},
#ifdef RL_HAVE_TEXT_TOOLS
    {"tokenize", cmd_tokenize, "tokenize --tokenizer DIR --in FILES... --out PREFIX                    text -> token files"},
    {"encode", cmd_encode, "encode --tokenizer DIR [--text S]                                      text -> ids (JSON)"},
    {"decode", cmd_decode, "decode --tokenizer DIR [--ids 1,2,3]                                   ids -> text"},
#endif
#ifdef RL_HAVE_MODEL_TOOLS
    {"init-model", cmd_init_model, "init-model --arch qwen2|qwen3|llama ... --out DIR                     write a random model"},
    {"score", cmd_score, "score --model DIR (--tokens FILE | --ids ...)                          cross-entropy / perplexity"},
    {"generate", cmd_generate, "generate --model DIR --prompt TEXT [--max-tokens N --temperature T ...] stream text (teacher or student)"},
    {"plan", cmd_plan, "plan --teacher DIR --arch rwkv7|rwkv6 --gpu-mem 80G [--ranks N --seq-len L ...]     memory per rank of steps 1-3"},
    {"inspect", cmd_inspect, "inspect DIR [--json]                                                    summary of a model or checkpoint folder (verified)"},
#endif
};

static void usage(FILE *f)
{
    fprintf(f, "usage: radlads [--socket PATH] VERB [options]\n\nverbs:\n");
    for (size_t i = 0; i < sizeof verbs / sizeof verbs[0]; i++) fprintf(f, "  %s\n", verbs[i].help);
    fprintf(f, "\nThe daemon's socket: --socket PATH, else $RADLADS_SOCKET, else %s\n", rl_default_socket_path(NULL));
    fprintf(f, "`radlads VERB --help` describes a verb's options.\n");
}

int cli_connect(rl_client *c)
{
    char err[1024];
    if (rl_client_connect(c, rl_default_socket_path(cli_socket), RADLADS__ROLE__ROLE_CLI, NULL, err, sizeof err) < 0) {
        fprintf(stderr, "radlads: %s\n", err);
        return -1;
    }
    return 0;
}

int cli_call(rl_client *c, const Radlads__Envelope *req, Radlads__Envelope **reply, Radlads__Envelope__MsgCase expect)
{
    char err[2048];
    if (rl_client_call(c, req, reply, expect, err, sizeof err) < 0) {
        fprintf(stderr, "radlads: %s\n", err);
        return -1;
    }
    return 0;
}

void cli_print_json(json_t *doc)
{
    json_object_set_new(doc, "schema_version", json_integer(RL_JSON_SCHEMA_VERSION));
    json_dumpf(doc, stdout, JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(10));
    fputc('\n', stdout);
    json_decref(doc);
}

void cli_relative_time(int64_t ms, char *buf, size_t len)
{
    if (ms <= 0) {
        snprintf(buf, len, "-");
        return;
    }
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    int64_t now = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
    int64_t s = (now - ms) / 1000;
    if (s < 0) s = 0;
    if (s < 60) snprintf(buf, len, "%llds ago", (long long)s);
    else if (s < 3600) snprintf(buf, len, "%lldm ago", (long long)(s / 60));
    else if (s < 86400) snprintf(buf, len, "%lldh ago", (long long)(s / 3600));
    else snprintf(buf, len, "%lldd ago", (long long)(s / 86400));
}

int cli_parse_id(const char *s, int64_t *out)
{
    const char *p = s[0] == '#' ? s + 1 : s;
    char *end;
    long long v = strtoll(p, &end, 10);
    if (end == p || *end || v <= 0) {
        fprintf(stderr, "radlads: \"%s\" is not a job id (a positive number, as printed by submit and status)\n", s);
        return -1;
    }
    *out = v;
    return 0;
}

int main(int argc, char **argv)
{
    int i = 1;
    while (i < argc && argv[i][0] == '-') {
        if (!strcmp(argv[i], "--socket") && i + 1 < argc) {
            cli_socket = argv[i + 1];
            i += 2;
        } else if (!strncmp(argv[i], "--socket=", 9)) {
            cli_socket = argv[i] + 9;
            i++;
        } else if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(argv[i], "--version")) {
            printf("radlads %s (protocol %u)\n", "0.1.0", RL_PROTOCOL_VERSION);
            return 0;
        } else {
            fprintf(stderr, "radlads: unknown option %s\n", argv[i]);
            usage(stderr);
            return 2;
        }
    }
    if (i >= argc) {
        usage(stderr);
        return 2;
    }
    for (size_t v = 0; v < sizeof verbs / sizeof verbs[0]; v++)
        if (!strcmp(argv[i], verbs[v].name)) return verbs[v].fn(argc - i, argv + i);
    fprintf(stderr, "radlads: unknown verb \"%s\"\n", argv[i]);
    usage(stderr);
    return 2;
}
