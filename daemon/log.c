/* The daemon log: one line per record, UTC timestamp, level, message. */
#include "daemon.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

static FILE *log_fp;
static int log_stderr = 1;

int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void log_open(const char *path, int also_stderr)
{
    log_stderr = also_stderr;
    if (path) {
        log_fp = fopen(path, "ae");
        if (log_fp) setvbuf(log_fp, NULL, _IOLBF, 0);
        else fprintf(stderr, "radladsd: cannot open log %s: %m; logging to stderr\n", path);
    }
}

void log_close(void)
{
    if (log_fp) fclose(log_fp);
    log_fp = NULL;
}

void log_msg(const char *level, const char *fmt, ...)
{
    char msg[2048], stamp[32];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    int64_t ms = now_ms();
    time_t t = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%S", &tm);
    if (log_fp) fprintf(log_fp, "%s.%03dZ %-5s %s\n", stamp, (int)(ms % 1000), level, msg);
    if (log_stderr || !log_fp) fprintf(stderr, "%s.%03dZ %-5s %s\n", stamp, (int)(ms % 1000), level, msg);
}
