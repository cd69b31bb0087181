/* SPDX-License-Identifier: MIT */
/*
 * What tokenbudget-proxy knows about each model API it stands in front of
 * (OpenAI and what speaks it: llama.cpp's server, Ollama's /v1; Ollama's
 * native /api; Anthropic's /v1/messages): which endpoint a request is, what a
 * request body asks for and how to rewrite it (the max output clamped to the
 * grant, include_usage injected), the usage a response or a stream reports
 * (SSE and NDJSON framed incrementally, output deltas counted until the
 * upstream's own count arrives), the bytes that end a stream at a limit in the
 * API's own terms, and each API's error bodies. Pure: json-c only; no I/O, no
 * clock, no event loop. Facts and sources: ../shared/PROXY-NOTES.md.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <json-c/json.h>

typedef enum ApiKind {
        API_KIND_AUTO,
        API_KIND_OPENAI,
        API_KIND_OLLAMA,
        API_KIND_ANTHROPIC,
        _API_KIND_MAX,
} ApiKind;

const char *api_kind_to_string(ApiKind k);
int api_kind_from_string(const char *s); /* the ApiKind, or -EINVAL */

typedef enum ApiEndpoint {
        API_EP_NONE,               /* not budgeted: passed through (and counted in stats) */
        API_EP_OPENAI_CHAT,        /* /v1/chat/completions (also Ollama's and llama.cpp's /v1) */
        API_EP_OPENAI_COMPLETIONS, /* /v1/completions */
        API_EP_OPENAI_RESPONSES,   /* /v1/responses */
        API_EP_OLLAMA_CHAT,        /* /api/chat */
        API_EP_OLLAMA_GENERATE,    /* /api/generate */
        API_EP_ANTHROPIC_MESSAGES, /* /v1/messages */
        _API_EP_MAX,
} ApiEndpoint;

const char *api_endpoint_to_string(ApiEndpoint ep);

/* Which endpoint a request is. Every kind knows every path below (a budgeted path passed through
 * unbudgeted because the listener's kind did not expect it would let a client skip its budget); the
 * kind decides the flavor: OLLAMA's /v1/chat/completions and /v1/completions set *ret_ollama_flavor
 * (Ollama honours max_tokens, not max_completion_tokens: ollama#7125), which AUTO cannot know. Paths:
 * /v1/chat/completions, /v1/completions, /v1/responses, /api/chat, /api/generate, /v1/messages,
 * compared after dropping the query, percent-decoding, and resolving empty, "." and ".." segments
 * (so /v1//chat/./completions/ is budgeted as the upstream's router would route it). A method other
 * than POST: API_EP_NONE. */
ApiEndpoint api_endpoint(ApiKind kind, const char *method, const char *path, bool *ret_ollama_flavor);

typedef struct ApiRequest {
        char *model;             /* malloc'ed, NULL when absent */
        bool stream;             /* the client asked for a stream */
        bool client_wants_usage; /* OpenAI: stream_options.include_usage was true */
        bool has_max_output;
        uint64_t max_output;      /* the client's max-output field, per API, times choices */
        uint64_t prompt_estimate; /* tokens: bytes of the prompt text / 4, rounded up, at least 1 */
        json_object *body;        /* the parsed body, owned */
        uint64_t choices;         /* OpenAI's n (completions: the larger of n and best_of), each as long
                                   * as the max output allows; 1 elsewhere (Ollama's /v1 has no n) */
} ApiRequest;

void api_request_done(ApiRequest *r);

/* 0; -EBADMSG (not a JSON object, or a field of the wrong type: *ret_error says which, static) */
int api_request_parse(ApiEndpoint ep, bool ollama_flavor, const char *body, size_t len, ApiRequest *ret,
                      const char **ret_error);

/* The body to forward: max output clamped to min(client's, max_output) in the API's own field
 * (max_completion_tokens for OpenAI chat, max_output_tokens for Responses, max_tokens for Anthropic,
 * OpenAI completions and Ollama /v1, options.num_predict for Ollama native; with n choices each gets
 * max_output / n, at least 1 unless max_output is 0), include_usage injected
 * for OpenAI-shaped streams (other stream_options kept), model replaced when model != NULL. Malloc'ed.
 * OpenAI chat: a client that sent only the deprecated max_tokens has it clamped in place (OpenAI
 * answers 400 invalid_parameter_combination to both fields at once); llama.cpp's n_predict, which
 * takes precedence there and in completions, is clamped when present. Edits r->body in place.
 * 0 or -ENOMEM. */
int api_request_rewrite(ApiEndpoint ep, bool ollama_flavor, ApiRequest *r, uint64_t max_output,
                        const char *model, char **ret_body, size_t *ret_len);

typedef struct ApiUsage {
        uint64_t input, output; /* input includes Anthropic's cache fields */
        bool final;             /* the upstream's own count (else counted from deltas) */
        bool length_stop;       /* the upstream stopped at its max output */
} ApiUsage;

/* A whole non-streamed response body: 0 with the usage (llama.cpp timings as a fallback), -ENODATA
 * when it has none, -EBADMSG when it is not a JSON object or a count has the wrong type. */
int api_response_usage(ApiEndpoint ep, const char *body, size_t len, ApiUsage *ret);

typedef struct ApiStream ApiStream;

/* strip_usage: the proxy injected include_usage, so the extra usage chunk is not forwarded (OpenAI
 * chat and completions only). NULL for API_EP_NONE or when out of memory. */
ApiStream *api_stream_new(ApiEndpoint ep, bool strip_usage);
ApiStream *api_stream_free(ApiStream *s);

typedef struct ApiBuffer {
        char *data;
        size_t len, cap;
} ApiBuffer; /* api_buffer_done() frees */

void api_buffer_done(ApiBuffer *b);
int api_buffer_append(ApiBuffer *b, const void *p, size_t n); /* 0 or -ENOMEM; data stays NUL-terminated */

/* The longest SSE event or NDJSON line a stream may send. */
#define API_STREAM_MAX_EVENT (1024 * 1024)

/* Feeds upstream bytes (any split); appends to *out what to forward to the client (whole events only,
 * held back until complete) and updates usage (counted output deltas until the upstream's own usage
 * arrives; Anthropic's message_delta output_tokens is cumulative). Returns 0, or -EBADMSG for an
 * event that is not what the API sends (the caller ends the stream); a too-long line (1 MiB) is -E2BIG.
 * After an error the stream is over: free it (usage and cut still answer for what came before). */
int api_stream_feed(ApiStream *s, const char *data, size_t len, ApiBuffer *out);
/* The upstream's own count when it came (usage, else llama.cpp's timings), else output counted from
 * the deltas (one token per delta, or its text's bytes / 4 when more) and input as far as the stream
 * said it (Anthropic's message_start; else 0: the caller has its prompt estimate). */
void api_stream_usage(const ApiStream *s, ApiUsage *ret);
bool api_stream_done(const ApiStream *s); /* the terminal event was seen */
/* The input a cut reports when the stream has said none yet (the request's prompt estimate): in the
 * cut's bytes only, never in api_stream_usage(). 0 by default. */
void api_stream_set_input_estimate(ApiStream *s, uint64_t tokens);

/* The bytes that end the stream cleanly at a limit, in the API's own terms (a chunk with
 * finish_reason "length" then "data: [DONE]"; message_delta stop_reason "max_tokens" + message_stop;
 * {"done": true, "done_reason": "length", counts}; Responses: response.incomplete with reason
 * max_output_tokens), with the usage counted so far; what the client has not seen yet is made up
 * (a message_start, a response.created, a first delta's role, a usage chunk when the client asked
 * for one). Nothing after the terminal event.
 * Feeding after a cut forwards nothing. 0 or -ENOMEM. */
int api_stream_cut(ApiStream *s, ApiBuffer *out);

/* An error response body for status (400, 413, 429, 502, 503) in the API's shape (OpenAI
 * {"error": {"message", "type", "code"}}, Anthropic {"type": "error", "error": {"type", "message"}},
 * Ollama {"error": "..."}); type e.g. "rate_limit_error". Malloc'ed JSON text. */
char *api_error_body(ApiEndpoint ep, int status, const char *type, const char *message);
/* type NULL: the API's own for status (OpenAI invalid_request_error, rate_limit_error with code
 * rate_limit_exceeded, server_error; Anthropic invalid_request_error, request_too_large,
 * rate_limit_error, api_error, overloaded_error).
 * API_EP_NONE answers in OpenAI's shape. NULL only when out of memory. */
