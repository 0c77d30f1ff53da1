/* The radlads CLI: verbs that talk to radladsd (cmd_jobs.c) and verbs that work on files directly
 * (cmd_text.c: tokenizer tools; cmd_model.c: model tools).  Each verb is int cmd_x(argc, argv) with
 * argv[0] the verb; it returns the process exit status. */
#ifndef RL_CLI_H
#define RL_CLI_H

#include <jansson.h>
#include <stdint.h>
#include <stdio.h>

#include "proto.h"

#define RL_JSON_SCHEMA_VERSION 1

extern const char *cli_socket; /* --socket, or NULL for RADLADS_SOCKET / the default */

/* Connects as a CLI client; prints the error and returns -1 on failure. */
int cli_connect(rl_client *c);
/* Sends req and waits for the reply of the expected kind; prints errors. 0 or -1. */
int cli_call(rl_client *c, const Radlads__Envelope *req, Radlads__Envelope **reply, Radlads__Envelope__MsgCase expect);
/* Prints a JSON document (with schema_version) to stdout and frees it. */
void cli_print_json(json_t *doc);
/* "5s ago", "3m ago", "2h ago", "4d ago"; "-" for 0. */
void cli_relative_time(int64_t ms, char *buf, size_t len);
/* Parses a job id ("17" or "#17"); -1 on error (printed). */
int cli_parse_id(const char *s, int64_t *out);

json_t *cli_summary_json(const Radlads__JobSummary *j);

int cmd_submit(int argc, char **argv);
int cmd_status(int argc, char **argv);
int cmd_show(int argc, char **argv);
int cmd_action(int argc, char **argv); /* cancel, hold, release, restart */
int cmd_events(int argc, char **argv);
int cmd_wait(int argc, char **argv);
int cmd_daemon_status(int argc, char **argv);
int cmd_pools(int argc, char **argv);
int cmd_checkpoints(int argc, char **argv);
int cmd_logs(int argc, char **argv);
int cmd_watch(int argc, char **argv);

#ifdef RL_HAVE_TEXT_TOOLS
int cmd_tokenize(int argc, char **argv);
int cmd_encode(int argc, char **argv);
int cmd_decode(int argc, char **argv);
#endif
#ifdef RL_HAVE_MODEL_TOOLS
int cmd_init_model(int argc, char **argv);
int cmd_score(int argc, char **argv);
int cmd_generate(int argc, char **argv);
int cmd_inspect(int argc, char **argv);
int cmd_plan(int argc, char **argv);
#endif

#endif
