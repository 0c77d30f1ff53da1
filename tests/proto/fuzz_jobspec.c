/* libFuzzer: arbitrary text as a job spec; a valid one must round-trip through its canonical JSON. */
#include "jobspec.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    rl_job_spec spec;
    char err[1024];
    if (rl_jobspec_parse(&spec, (const char *)data, size, "/base", 0, err, sizeof err) < 0) return 0;
    char *json = rl_jobspec_to_json(&spec);
    rl_job_spec again;
    if (json && rl_jobspec_parse(&again, json, strlen(json), NULL, 0, err, sizeof err) == 0) {
        char *json2 = rl_jobspec_to_json(&again);
        if (!json2 || strcmp(json, json2)) abort(); /* canonical form must be a fixed point */
        free(json2);
        rl_jobspec_free(&again);
    } else {
        abort(); /* a spec we accepted must accept its own canonical form */
    }
    free(json);
    rl_jobspec_free(&spec);
    return 0;
}
