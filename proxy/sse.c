/* SPDX-License-Identifier: MIT */
/*
 * SSE and NDJSON framing (see sse.h). The bytes of the event in progress are
 * kept in one buffer from the event's first byte; a scan offset remembers how
 * far terminators were searched, so each byte is looked at once whatever the
 * split. A '\r' that is the last byte seen ends its line at once (SSE allows
 * a bare CR); a '\n' arriving next belongs to that terminator and is skipped
 * as a line end, but stays in the raw bytes: of the event the CR was in, or,
 * when that CR ended the event, as an event of its own without data, so the
 * bytes forwarded are exactly the bytes received.
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "sse.h"

typedef struct SseBuf {
        char *data;
        size_t len, cap;
} SseBuf;

struct SseParser {
        SseFormat format;
        size_t max_line;
        SseBuf raw;        /* raw[base..len): the event in progress */
        size_t base;       /* where the event in progress starts in raw */
        size_t line_start; /* where the line in progress starts in raw */
        size_t scan;       /* raw[..scan) was searched for terminators */
        bool skip_lf;      /* the last line ended in a '\r' that was the last byte seen */
        SseBuf data;       /* SSE: the data lines so far, joined with '\n' */
        bool has_data;
        SseBuf event; /* SSE: the event name, NUL-terminated */
        bool has_event;
};

static int buf_reserve(SseBuf *b, size_t extra) {
        size_t want, cap;
        char *d;

        if (extra > SIZE_MAX - b->len - 1)
                return -ENOMEM;
        want = b->len + extra + 1; /* room for a NUL */
        if (want <= b->cap)
                return 0;
        cap = b->cap ? b->cap : 256;
        while (cap < want)
                cap = cap > SIZE_MAX / 2 ? want : cap * 2;
        d = realloc(b->data, cap);
        if (!d)
                return -ENOMEM;
        b->data = d;
        b->cap = cap;
        return 0;
}

static int buf_append(SseBuf *b, const char *p, size_t n) {
        int r = buf_reserve(b, n);

        if (r < 0)
                return r;
        if (n)
                memcpy(b->data + b->len, p, n);
        b->len += n;
        b->data[b->len] = '\0';
        return 0;
}

SseParser *sse_parser_new(SseFormat format, size_t max_line) {
        SseParser *p = calloc(1, sizeof(*p));

        if (!p)
                return NULL;
        p->format = format;
        p->max_line = max_line;
        return p;
}

SseParser *sse_parser_free(SseParser *p) {
        if (!p)
                return NULL;
        free(p->raw.data);
        free(p->data.data);
        free(p->event.data);
        free(p);
        return NULL;
}

size_t sse_parser_pending(const SseParser *p) {
        return p->raw.len - p->base;
}

static void event_reset(SseParser *p) {
        p->data.len = 0;
        p->has_data = false;
        p->event.len = 0;
        p->has_event = false;
}

static int dispatch_as(SseParser *p, size_t end, bool crlf_tail, sse_event_cb cb, void *userdata) {
        SseEvent ev = {
                .crlf_tail = crlf_tail,
                .raw = p->raw.data + p->base,
                .raw_len = end - p->base,
                .data = p->has_data ? p->data.data : "",
                .data_len = p->has_data ? p->data.len : 0,
                .has_data = p->has_data,
                .event = p->has_event ? p->event.data : NULL,
        };
        int r;

        if (ev.raw_len > p->max_line)
                return -E2BIG;
        r = cb(&ev, userdata);
        p->base = end;
        event_reset(p);
        return r < 0 ? r : 0;
}

static int dispatch(SseParser *p, size_t end, sse_event_cb cb, void *userdata) {
        return dispatch_as(p, end, false, cb, userdata);
}

/* One SSE line (without its terminator) that ends at raw[end). */
static int sse_line(SseParser *p, const char *line, size_t n, size_t end, sse_event_cb cb, void *userdata) {
        const char *colon, *value;
        size_t name_len, value_len;
        int r;

        if (n == 0)
                return dispatch(p, end, cb, userdata);
        if (line[0] == ':')
                return 0; /* a comment: forwarded with its event */
        colon = memchr(line, ':', n);
        name_len = colon ? (size_t)(colon - line) : n;
        value = colon ? colon + 1 : line + n;
        value_len = (size_t)(line + n - value);
        if (value_len > 0 && value[0] == ' ') {
                value++;
                value_len--;
        }
        if (name_len == 4 && memcmp(line, "data", 4) == 0) {
                if (p->has_data && (r = buf_append(&p->data, "\n", 1)) < 0)
                        return r;
                if ((r = buf_append(&p->data, value, value_len)) < 0)
                        return r;
                p->has_data = true;
        } else if (name_len == 5 && memcmp(line, "event", 5) == 0) {
                p->event.len = 0;
                if ((r = buf_append(&p->event, value, value_len)) < 0)
                        return r;
                p->has_event = true;
        }
        /* id and retry mean nothing to us; unknown fields are ignored, as the grammar says */
        return 0;
}

/* One NDJSON line: an event of its own. */
static int ndjson_line(SseParser *p, const char *line, size_t n, size_t end, sse_event_cb cb,
                       void *userdata) {
        bool blank = true;
        int r;

        if (n > 0 && line[n - 1] == '\r')
                n--;
        for (size_t i = 0; i < n && blank; i++)
                blank = strchr(" \t\r", line[i]) != NULL;
        p->data.len = 0;
        if ((r = buf_append(&p->data, line, n)) < 0)
                return r;
        p->has_data = !blank;
        return dispatch(p, end, cb, userdata);
}

static void compact(SseParser *p) {
        size_t keep = p->raw.len - p->base;

        if (p->base == 0)
                return;
        if (keep)
                memmove(p->raw.data, p->raw.data + p->base, keep);
        p->raw.len = keep;
        p->line_start -= p->base;
        p->scan -= p->base;
        p->base = 0;
}

int sse_parser_feed(SseParser *p, const char *data, size_t len, sse_event_cb cb, void *userdata) {
        bool sse = p->format == SSE_FORMAT_SSE;
        int r;

        if (len == 0)
                return 0;
        if ((r = buf_append(&p->raw, data, len)) < 0)
                return r;
        if (p->skip_lf) {
                p->skip_lf = false;
                if (p->raw.data[p->scan] == '\n') {
                        bool own = p->line_start == p->base; /* the CR ended an event */

                        p->line_start = ++p->scan;
                        /* its LF alone, so that it goes out now and not with the next event, if any */
                        if (own && (r = dispatch_as(p, p->scan, true, cb, userdata)) < 0)
                                return r;
                }
        }
        for (size_t i = p->scan; i < p->raw.len;) {
                char c = p->raw.data[i];
                size_t end;

                if (c != '\n' && (c != '\r' || !sse)) {
                        i++;
                        continue;
                }
                end = i + 1;
                if (c == '\r') {
                        if (end < p->raw.len) {
                                if (p->raw.data[end] == '\n')
                                        end++;
                        } else
                                p->skip_lf = true;
                }
                r = sse ? sse_line(p, p->raw.data + p->line_start, i - p->line_start, end, cb, userdata)
                        : ndjson_line(p, p->raw.data + p->line_start, i - p->line_start, end, cb, userdata);
                if (r < 0)
                        return r;
                p->line_start = i = end;
        }
        p->scan = p->raw.len;
        compact(p);
        if (p->raw.len > p->max_line)
                return -E2BIG;
        return 0;
}
