/* Crash-safe checkpoint folders with a verified manifest; see train.h.
 *
 * Commit protocol: files are written into DIR/step-N.tmp by the caller; we hash them, write
 * manifest.json (also via a temporary name), fsync every file and the folder, rename step-N.tmp to
 * step-N and fsync DIR.  Only a folder without the .tmp suffix whose manifest verifies is a checkpoint. */
#include "train.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define MANIFEST "manifest.json"

static int fail(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int fail(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    if (err && errlen) vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    return -1;
}

static int mkdir_p(const char *path)
{
    char buf[PATH_MAX];
    snprintf(buf, sizeof buf, "%s", path);
    for (char *p = buf + 1; *p; p++) {
        if (*p != '/') continue;
        *p = 0;
        if (mkdir(buf, 0755) < 0 && errno != EEXIST) return -1;
        *p = '/';
    }
    return mkdir(buf, 0755) < 0 && errno != EEXIST ? -1 : 0;
}

static int fsync_path(const char *path, int dir)
{
    int fd = open(path, (dir ? O_RDONLY | O_DIRECTORY : O_RDONLY) | O_CLOEXEC);
    if (fd < 0) return -1;
    int rc = fsync(fd);
    close(fd);
    return rc;
}

static int rm_rf(const char *path)
{
    DIR *d = opendir(path);
    if (!d) return unlink(path) == 0 || errno == ENOENT ? 0 : -1;
    struct dirent *e;
    int rc = 0;
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        char sub[PATH_MAX];
        snprintf(sub, sizeof sub, "%s/%s", path, e->d_name);
        if (rm_rf(sub) < 0) rc = -1;
    }
    closedir(d);
    return rmdir(path) == 0 && rc == 0 ? 0 : -1;
}

int rl_ckpt_begin(const char *dir, int64_t step, char *tmp, size_t tmplen, char *err, size_t errlen)
{
    if (step < 0) return fail(err, errlen, "checkpoint step must be >= 0, got %lld", (long long)step);
    if (mkdir_p(dir) < 0) return fail(err, errlen, "cannot create checkpoint folder %s: %s", dir, strerror(errno));
    int n = snprintf(tmp, tmplen, "%s/step-%08lld.tmp", dir, (long long)step);
    if (n < 0 || (size_t)n >= tmplen) return fail(err, errlen, "checkpoint path too long");
    rm_rf(tmp); /* a leftover of a crash before this step's commit */
    if (mkdir(tmp, 0755) < 0) return fail(err, errlen, "cannot create %s: %s", tmp, strerror(errno));
    return 0;
}

static int write_all(int fd, const char *s, size_t n)
{
    while (n) {
        ssize_t w = write(fd, s, n);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return -1;
        s += w, n -= (size_t)w;
    }
    return 0;
}

int rl_ckpt_commit(const char *tmp, const rl_ckpt_info *info, char *out, size_t outlen, rl_ckpt_info *written,
                   char *err, size_t errlen)
{
    size_t tl = strlen(tmp);
    if (tl < 5 || strcmp(tmp + tl - 4, ".tmp")) return fail(err, errlen, "%s is not a checkpoint .tmp folder", tmp);
    DIR *d = opendir(tmp);
    if (!d) return fail(err, errlen, "%s: %s", tmp, strerror(errno));
    json_t *files = json_object();
    struct dirent *e;
    int rc = 0;
    while (rc == 0 && (e = readdir(d))) {
        if (e->d_name[0] == '.' || !strcmp(e->d_name, MANIFEST)) continue;
        char path[PATH_MAX], hex[65];
        uint64_t size;
        snprintf(path, sizeof path, "%s/%s", tmp, e->d_name);
        struct stat st;
        if (stat(path, &st) < 0 || !S_ISREG(st.st_mode)) {
            rc = fail(err, errlen, "%s: only regular files belong in a checkpoint", path);
            break;
        }
        if (fsync_path(path, 0) < 0) rc = fail(err, errlen, "fsync %s: %s", path, strerror(errno));
        else if (rl_sha256_file(path, hex, &size, err, errlen) < 0) rc = -1;
        else {
            json_t *f = json_object();
            json_object_set_new(f, "bytes", json_integer((json_int_t)size));
            json_object_set_new(f, "sha256", json_string(hex));
            json_object_set_new(files, e->d_name, f);
        }
    }
    closedir(d);
    if (rc < 0) {
        json_decref(files);
        return -1;
    }
    rl_ckpt_info meta = *info;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    meta.created_at_ms = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
    char rng[24];
    snprintf(rng, sizeof rng, "%016llx", (unsigned long long)meta.rng);
    json_t *m = json_object();
    json_object_set_new(m, "format", json_string("radlads-checkpoint"));
    json_object_set_new(m, "version", json_integer(1));
    json_object_set_new(m, "stage", json_string(meta.stage));
    json_object_set_new(m, "step", json_integer(meta.step));
    json_object_set_new(m, "tokens", json_integer(meta.tokens));
    json_object_set_new(m, "sample", json_integer((json_int_t)meta.sample));
    json_object_set_new(m, "rng", json_string(rng));
    json_object_set_new(m, "created_at_ms", json_integer(meta.created_at_ms));
    json_object_set_new(m, "files", files);
    char *text = json_dumps(m, JSON_INDENT(2) | JSON_SORT_KEYS);
    json_decref(m);
    if (!text) return fail(err, errlen, "out of memory");
    char mpath[PATH_MAX], mtmp[PATH_MAX];
    snprintf(mpath, sizeof mpath, "%s/" MANIFEST, tmp);
    snprintf(mtmp, sizeof mtmp, "%s/." MANIFEST ".part", tmp);
    int fd = open(mtmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0 || write_all(fd, text, strlen(text)) < 0 || write_all(fd, "\n", 1) < 0 || fsync(fd) < 0) {
        rc = fail(err, errlen, "writing %s: %s", mtmp, strerror(errno));
    }
    if (fd >= 0) close(fd);
    free(text);
    if (rc == 0 && rename(mtmp, mpath) < 0) rc = fail(err, errlen, "rename %s: %s", mtmp, strerror(errno));
    if (rc == 0 && fsync_path(tmp, 1) < 0) rc = fail(err, errlen, "fsync %s: %s", tmp, strerror(errno));
    char final[PATH_MAX];
    snprintf(final, sizeof final, "%.*s", (int)(tl - 4), tmp);
    if (rc == 0) {
        rm_rf(final); /* the same step saved again after a resume */
        if (rename(tmp, final) < 0) rc = fail(err, errlen, "rename %s: %s", tmp, strerror(errno));
    }
    char parent[PATH_MAX];
    snprintf(parent, sizeof parent, "%s", final);
    char *slash = strrchr(parent, '/');
    if (slash) *slash = 0;
    if (rc == 0 && fsync_path(slash ? parent : ".", 1) < 0) rc = fail(err, errlen, "fsync %s: %s", parent, strerror(errno));
    if (rc < 0) return -1;
    if (out) snprintf(out, outlen, "%s", final);
    if (written) {
        *written = meta;
        char fm[PATH_MAX + 32];
        snprintf(fm, sizeof fm, "%s/" MANIFEST, final);
        if (rl_sha256_file(fm, written->sha256, NULL, err, errlen) < 0) return -1;
    }
    return 0;
}

int rl_ckpt_verify(const char *path, rl_ckpt_info *info, char *err, size_t errlen)
{
    char mpath[PATH_MAX];
    snprintf(mpath, sizeof mpath, "%s/" MANIFEST, path);
    json_error_t je;
    json_t *m = json_load_file(mpath, JSON_REJECT_DUPLICATES, &je);
    if (!m) return fail(err, errlen, "%s: unreadable manifest (%s)", path, je.text);
    int rc = -1;
    const char *fmt = json_string_value(json_object_get(m, "format"));
    json_t *files = json_object_get(m, "files");
    if (!fmt || strcmp(fmt, "radlads-checkpoint")) {
        fail(err, errlen, "%s: manifest format is not radlads-checkpoint", path);
        goto out;
    }
    if (json_integer_value(json_object_get(m, "version")) != 1) {
        fail(err, errlen, "%s: manifest version %lld is not supported (this build reads version 1)", path,
             (long long)json_integer_value(json_object_get(m, "version")));
        goto out;
    }
    if (!json_is_object(files) || json_object_size(files) == 0) {
        fail(err, errlen, "%s: manifest lists no files", path);
        goto out;
    }
    const char *name;
    json_t *f;
    json_object_foreach(files, name, f)
    {
        char fpath[PATH_MAX], hex[65];
        uint64_t size;
        if (strchr(name, '/') || name[0] == '.') {
            fail(err, errlen, "%s: manifest names a file outside the checkpoint: %s", path, name);
            goto out;
        }
        snprintf(fpath, sizeof fpath, "%s/%s", path, name);
        if (rl_sha256_file(fpath, hex, &size, err, errlen) < 0) goto out;
        const char *want = json_string_value(json_object_get(f, "sha256"));
        json_int_t bytes = json_integer_value(json_object_get(f, "bytes"));
        if ((uint64_t)bytes != size) {
            fail(err, errlen, "%s: %s has %llu bytes, the manifest says %lld", path, name, (unsigned long long)size,
                 (long long)bytes);
            goto out;
        }
        if (!want || strcmp(want, hex)) {
            fail(err, errlen, "%s: %s does not match its sha256 (damaged or partially written)", path, name);
            goto out;
        }
    }
    if (info) {
        memset(info, 0, sizeof *info);
        snprintf(info->stage, sizeof info->stage, "%s", json_string_value(json_object_get(m, "stage")) ?: "");
        info->step = json_integer_value(json_object_get(m, "step"));
        info->tokens = json_integer_value(json_object_get(m, "tokens"));
        info->sample = (uint64_t)json_integer_value(json_object_get(m, "sample"));
        const char *rng = json_string_value(json_object_get(m, "rng"));
        info->rng = rng ? strtoull(rng, NULL, 16) : 0;
        info->created_at_ms = json_integer_value(json_object_get(m, "created_at_ms"));
        if (rl_sha256_file(mpath, info->sha256, NULL, err, errlen) < 0) goto out;
    }
    rc = 0;
out:
    json_decref(m);
    return rc;
}

/* step-N folders of dir, newest first. */
static int list_steps(const char *dir, int64_t **steps, int *n, char *err, size_t errlen)
{
    *steps = NULL;
    *n = 0;
    DIR *d = opendir(dir);
    if (!d) {
        if (errno == ENOENT) return 0;
        return fail(err, errlen, "%s: %s", dir, strerror(errno));
    }
    int cap = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        long long step;
        char tail;
        if (sscanf(e->d_name, "step-%lld%c", &step, &tail) != 1) continue;
        if (*n == cap) {
            cap = cap ? cap * 2 : 16;
            int64_t *ns = realloc(*steps, (size_t)cap * sizeof **steps);
            if (!ns) {
                closedir(d);
                return fail(err, errlen, "out of memory");
            }
            *steps = ns;
        }
        (*steps)[(*n)++] = step;
    }
    closedir(d);
    for (int i = 1; i < *n; i++) /* insertion sort, descending */
        for (int j = i; j > 0 && (*steps)[j] > (*steps)[j - 1]; j--) {
            int64_t t = (*steps)[j];
            (*steps)[j] = (*steps)[j - 1];
            (*steps)[j - 1] = t;
        }
    return 0;
}

int rl_ckpt_latest(const char *dir, char *path, size_t pathlen, rl_ckpt_info *info, char *skipped, size_t skiplen,
                   char *err, size_t errlen)
{
    int64_t *steps;
    int n;
    if (list_steps(dir, &steps, &n, err, errlen) < 0) return -1;
    if (skipped && skiplen) skipped[0] = 0;
    for (int i = 0; i < n; i++) {
        char p[PATH_MAX], why[512];
        snprintf(p, sizeof p, "%s/step-%08lld", dir, (long long)steps[i]);
        if (rl_ckpt_verify(p, info, why, sizeof why) == 0) {
            snprintf(path, pathlen, "%s", p);
            free(steps);
            return 0;
        }
        if (skipped && skiplen) {
            size_t used = strlen(skipped);
            snprintf(skipped + used, skiplen - used, "%s%s", used ? "; " : "", why);
        }
    }
    free(steps);
    return 1;
}

int rl_ckpt_gc(const char *dir, int keep, char *err, size_t errlen)
{
    if (keep < 1) return fail(err, errlen, "keep must be at least 1, got %d", keep);
    int64_t *steps;
    int n, removed = 0;
    if (list_steps(dir, &steps, &n, err, errlen) < 0) return -1;
    for (int i = keep; i < n; i++) {
        char p[PATH_MAX];
        snprintf(p, sizeof p, "%s/step-%08lld", dir, (long long)steps[i]);
        if (rm_rf(p) == 0) removed++;
    }
    free(steps);
    DIR *d = opendir(dir);
    struct dirent *e;
    while (d && (e = readdir(d))) {
        size_t len = strlen(e->d_name);
        if (!strncmp(e->d_name, "step-", 5) && len > 4 && !strcmp(e->d_name + len - 4, ".tmp")) {
            char p[PATH_MAX];
            snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
            if (rm_rf(p) == 0) removed++;
        }
    }
    if (d) closedir(d);
    return removed;
}
