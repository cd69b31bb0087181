/* SPDX-License-Identifier: MIT */
/*
 * Incremental framing of the two streaming formats model servers use:
 * Server-Sent Events (the WHATWG HTML "event stream" grammar: lines end in
 * CRLF, LF or CR; "field: value" lines; a blank line ends an event; lines
 * starting with ':' are comments) and NDJSON (one JSON text per LF-ended
 * line, as Ollama's /api/chat and /api/generate send). Bytes go in in any
 * split; each whole event comes out once, with its raw bytes (to forward
 * unchanged) and, for SSE, its joined data and event name. What the event
 * means is the caller's (api.c). Pure: no I/O, no clock.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>

typedef enum SseFormat {
        SSE_FORMAT_SSE,
        SSE_FORMAT_NDJSON,
} SseFormat;

typedef struct SseEvent {
        const char *raw; /* the event's bytes as they came, terminators included */
        size_t raw_len;
        /* SSE: the data lines joined with '\n'; has_data is false when the event had no data field (a
         * comment, a blank line, an event name alone). NDJSON: the line without its '\n' and a '\r'
         * before it, has_data false when it is blank. data_len bytes, not NUL-terminated. */
        const char *data;
        size_t data_len;
        bool has_data;
        const char *event; /* SSE: the last "event:" value (NUL-terminated), NULL when none */
        /* raw is only the LF of a CR LF split across feeds whose CR ended the previous event: it
         * belongs to that event (forward it, or not, as that one was) */
        bool crlf_tail;
} SseEvent;

/* 0 to go on, negative errno to fail the feed. The pointers in ev are valid during the call only. */
typedef int (*sse_event_cb)(const SseEvent *ev, void *userdata);

typedef struct SseParser SseParser;

/* max_line: the longest line, and the longest event, in bytes (a longer one fails with -E2BIG). */
SseParser *sse_parser_new(SseFormat format, size_t max_line);
SseParser *sse_parser_free(SseParser *p);

/* Frames data[0..len): calls cb for every event it completes, in order. Returns 0, -E2BIG for a line or
 * event over max_line, -ENOMEM, or cb's negative value. After an error the parser is in an unspecified
 * state: free it. */
int sse_parser_feed(SseParser *p, const char *data, size_t len, sse_event_cb cb, void *userdata);

/* Bytes held back: the start of an event not yet complete. */
size_t sse_parser_pending(const SseParser *p);
