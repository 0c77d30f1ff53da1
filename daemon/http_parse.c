/* HTTP request parsing: llhttp drives the state machine; we keep only what the routes need (the target,
 * Authorization, Last-Event-ID, a small body) and enforce the size limits while the bytes arrive, so a
 * client can never make us buffer more than HTTP_MAX_HEADER_BYTES + HTTP_MAX_BODY_BYTES. */
#include "http.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static http_parser *parser_of(llhttp_t *p)
{
    return p->data;
}

static int refuse(http_parser *hp, int status, const char *reason)
{
    hp->error_status = status;
    snprintf(hp->error_reason, sizeof hp->error_reason, "%s", reason);
    llhttp_set_error_reason(&hp->llhttp, reason);
    return HPE_USER;
}

/* Every byte of the request line and headers counts against one budget. */
static int count_header_bytes(http_parser *hp, size_t len)
{
    hp->header_bytes += len;
    if (hp->header_bytes > HTTP_MAX_HEADER_BYTES) return refuse(hp, 431, "request header fields too large");
    return 0;
}

static int on_message_begin(llhttp_t *p)
{
    http_parser *hp = parser_of(p);
    http_request *r = &hp->req;
    hp->in_message = 1;
    hp->header_bytes = 0;
    hp->field_len = hp->value_len = 0;
    hp->field_overflow = hp->value_overflow = 0;
    r->url_len = 0;
    r->url[0] = 0;
    r->authorization[0] = 0;
    r->last_event_id[0] = 0;
    r->host[0] = 0;
    r->auth_too_long = 0;
    r->body_len = 0;
    if (r->body) r->body[0] = 0;
    return 0;
}

static int on_url(llhttp_t *p, const char *at, size_t len)
{
    http_parser *hp = parser_of(p);
    http_request *r = &hp->req;
    if (r->url_len + len >= sizeof r->url) return refuse(hp, 414, "request target too long");
    memcpy(r->url + r->url_len, at, len);
    r->url_len += len;
    r->url[r->url_len] = 0;
    return count_header_bytes(hp, len);
}

/* RFC 9110 token characters.  llhttp 8 lets a space or an empty name through; we do not. */
static int is_tchar(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || (c && strchr("!#$%&'*+-.^_`|~", c));
}

static int on_header_field(llhttp_t *p, const char *at, size_t len)
{
    http_parser *hp = parser_of(p);
    for (size_t i = 0; i < len; i++)
        if (!is_tchar((unsigned char)at[i])) return refuse(hp, 400, "malformed header name");
    if (hp->field_len + len >= sizeof hp->field) hp->field_overflow = 1;
    else {
        memcpy(hp->field + hp->field_len, at, len);
        hp->field_len += len;
    }
    return count_header_bytes(hp, len);
}

static int on_header_value(llhttp_t *p, const char *at, size_t len)
{
    http_parser *hp = parser_of(p);
    if (hp->value_len + len >= sizeof hp->value) hp->value_overflow = 1;
    else {
        memcpy(hp->value + hp->value_len, at, len);
        hp->value_len += len;
    }
    return count_header_bytes(hp, len);
}

static int on_header_value_complete(llhttp_t *p)
{
    http_parser *hp = parser_of(p);
    http_request *r = &hp->req;
    hp->field[hp->field_len] = 0;
    hp->value[hp->value_len] = 0;
    if (hp->field_len == 0 && !hp->field_overflow) return refuse(hp, 400, "empty header name");
    if (!hp->field_overflow) {
        if (!strcasecmp(hp->field, "authorization")) {
            snprintf(r->authorization, sizeof r->authorization, "%s", hp->value);
            r->auth_too_long = hp->value_overflow;
        } else if (!strcasecmp(hp->field, "host")) {
            if (hp->value_overflow || hp->value_len >= sizeof r->host) return refuse(hp, 400, "Host header too long");
            memcpy(r->host, hp->value, hp->value_len + 1);
        } else if (!strcasecmp(hp->field, "last-event-id")) {
            if (hp->value_overflow || hp->value_len >= sizeof r->last_event_id)
                return refuse(hp, 400, "Last-Event-ID is not an event id");
            memcpy(r->last_event_id, hp->value, hp->value_len + 1);
        }
    }
    hp->field_len = hp->value_len = 0;
    hp->field_overflow = hp->value_overflow = 0;
    return 0;
}

static int on_headers_complete(llhttp_t *p)
{
    http_parser *hp = parser_of(p);
    /* Refuse a declared oversized body before reading any of it. */
    if ((p->flags & F_CONTENT_LENGTH) && p->content_length > HTTP_MAX_BODY_BYTES)
        return refuse(hp, 413, "request body too large");
    hp->req.method = p->method;
    return 0;
}

static int on_body(llhttp_t *p, const char *at, size_t len)
{
    http_parser *hp = parser_of(p);
    http_request *r = &hp->req;
    if (r->body_len + len > HTTP_MAX_BODY_BYTES) return refuse(hp, 413, "request body too large");
    if (r->body_len + len + 1 > r->body_cap) {
        size_t cap = r->body_cap ? r->body_cap : 256;
        while (cap < r->body_len + len + 1) cap *= 2;
        char *nb = realloc(r->body, cap);
        if (!nb) return refuse(hp, 413, "out of memory for the request body");
        r->body = nb;
        r->body_cap = cap;
    }
    memcpy(r->body + r->body_len, at, len);
    r->body_len += len;
    r->body[r->body_len] = 0;
    return 0;
}

static int on_message_complete(llhttp_t *p)
{
    http_parser *hp = parser_of(p);
    hp->req.keep_alive = llhttp_should_keep_alive(p);
    hp->in_message = 0;
    /* Stop here: the caller answers this request before the parser sees the next (pipelining). */
    return HPE_PAUSED;
}

void http_parser_init(http_parser *hp)
{
    memset(hp, 0, sizeof *hp);
    llhttp_settings_init(&hp->settings);
    hp->settings.on_message_begin = on_message_begin;
    hp->settings.on_url = on_url;
    hp->settings.on_header_field = on_header_field;
    hp->settings.on_header_value = on_header_value;
    hp->settings.on_header_value_complete = on_header_value_complete;
    hp->settings.on_headers_complete = on_headers_complete;
    hp->settings.on_body = on_body;
    hp->settings.on_message_complete = on_message_complete;
    llhttp_init(&hp->llhttp, HTTP_REQUEST, &hp->settings);
    hp->llhttp.data = hp;
}

void http_parser_free(http_parser *hp)
{
    free(hp->req.body);
    hp->req.body = NULL;
    hp->req.body_cap = 0;
}

int http_parser_feed(http_parser *hp, const char *data, size_t len, size_t *consumed)
{
    *consumed = 0;
    if (hp->error_status) return HTTP_BAD_REQUEST;
    if (len == 0) return HTTP_NEED_MORE;
    llhttp_errno_t e = llhttp_execute(&hp->llhttp, data, len);
    if (e == HPE_OK) {
        *consumed = len;
        return HTTP_NEED_MORE;
    }
    if (e == HPE_PAUSED) {
        *consumed = (size_t)(llhttp_get_error_pos(&hp->llhttp) - data);
        return HTTP_REQUEST_READY;
    }
    if (!hp->error_status) {
        hp->error_status = 400;
        snprintf(hp->error_reason, sizeof hp->error_reason, "malformed request: %s (%s)", llhttp_errno_name(e),
                 llhttp_get_error_reason(&hp->llhttp) ? llhttp_get_error_reason(&hp->llhttp) : "?");
    }
    return HTTP_BAD_REQUEST;
}

void http_parser_next(http_parser *hp)
{
    llhttp_resume(&hp->llhttp);
}

static int hexval(int c)
{
    if (c >= '0' && c <= '9') return c - '0';
    c = tolower(c);
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
}

/* Percent-decodes [s, s+n) into out; '+' is a space only in queries.  -1 on a bad escape, a NUL byte or
 * an output that does not fit. */
static int percent_decode(const char *s, size_t n, char *out, size_t outlen, int plus_is_space)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        int c = (unsigned char)s[i];
        if (c == '%') {
            if (i + 2 >= n) return -1;
            int hi = hexval((unsigned char)s[i + 1]), lo = hexval((unsigned char)s[i + 2]);
            if (hi < 0 || lo < 0) return -1;
            c = hi * 16 + lo;
            i += 2;
            if (c == 0) return -1;
        } else if (c == '+' && plus_is_space) {
            c = ' ';
        }
        if (o + 1 >= outlen) return -1;
        out[o++] = (char)c;
    }
    if (outlen == 0) return -1;
    out[o] = 0;
    return 0;
}

int http_split_url(const char *url, char *path, size_t pathlen, const char **query)
{
    /* Only origin-form targets ("/path?query"): absolute-form and "*" are not for us. */
    if (url[0] != '/') return -1;
    const char *q = strchr(url, '?');
    size_t n = q ? (size_t)(q - url) : strlen(url);
    const char *hash = memchr(url, '#', n);
    if (hash) n = (size_t)(hash - url);
    *query = q ? q + 1 : "";
    return percent_decode(url, n, path, pathlen, 0);
}

int http_query_get(const char *query, const char *key, char *out, size_t outlen)
{
    size_t klen = strlen(key);
    const char *p = query;
    while (p && *p) {
        const char *end = strchr(p, '&');
        size_t n = end ? (size_t)(end - p) : strlen(p);
        const char *eq = memchr(p, '=', n);
        size_t name_len = eq ? (size_t)(eq - p) : n;
        if (name_len == klen && !memcmp(p, key, klen)) {
            if (!eq) {
                if (outlen == 0) return -1;
                out[0] = 0;
                return 1;
            }
            return percent_decode(eq + 1, n - name_len - 1, out, outlen, 1) < 0 ? -1 : 1;
        }
        p = end ? end + 1 : NULL;
    }
    return 0;
}

const char *http_status_text(int status)
{
    switch (status) {
    case 200: return "OK";
    case 204: return "No Content";
    case 304: return "Not Modified";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 409: return "Conflict";
    case 413: return "Content Too Large";
    case 414: return "URI Too Long";
    case 421: return "Misdirected Request";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 503: return "Service Unavailable";
    default: return "Unknown";
    }
}
