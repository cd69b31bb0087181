/* SPDX-License-Identifier: MIT */
/*
 * libFuzzer entry point for tokenbudget-proxy's pure API layer (proxy/api.c,
 * proxy/sse.c): what an upstream streams and what a client sends. The first
 * byte picks what the rest is, the second how it is fed:
 *
 * 0-5: a stream of endpoint 1-6 (OpenAI chat, completions, Responses, Ollama
 *   chat, generate, Anthropic messages) fed to api_stream_feed() twice, whole
 *   and in pieces of 1-64 bytes (the second byte; its low bit is
 *   strip_usage). Oracles: the same return, the same bytes forwarded, the
 *   same usage and end whatever the split; the bytes forwarded are a prefix
 *   of the input except for stripped usage chunks (never more than came in);
 *   a stream that ended adds nothing when cut; one that did not, cut, is a
 *   whole stream of that API: forwarded plus cut, fed to a new stream,
 *   parses cleanly and ends.
 * 6: a request body for endpoint 1-6 (second byte; bit 3 the Ollama flavor)
 *   to api_request_parse(); one it accepts is rewritten with a grant from the
 *   third byte, and the rewritten body must parse again with the clamp as its
 *   max output, the same stream flag, and the model given.
 * 7: a whole response body to api_response_usage() for each endpoint, and
 *   the input as a path to api_endpoint() for each kind.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void fuzz_check(bool ok, const char *what, const uint8_t *data, size_t size) {
        if (ok)
                return;
        fprintf(stderr, "fuzz-proxy-stream: %s (input %zu bytes: \"%.*s\")\n", what, size,
                (int)(size < 200 ? size : 200), (const char *)data);
        abort();
}

static int feed(ApiStream *s, const char *p, size_t n, size_t step, ApiBuffer *out) {
        int r = 0;

        for (size_t at = 0; at < n && r == 0; at += step)
                r = api_stream_feed(s, p + at, n - at < step ? n - at : step, out);
        return r;
}

static bool usage_equal(const ApiUsage *a, const ApiUsage *b) {
        return a->input == b->input && a->output == b->output && a->final == b->final &&
               a->length_stop == b->length_stop;
}

static void fuzz_stream(ApiEndpoint ep, bool strip, size_t step, const uint8_t *data, size_t size,
                        const char *text, size_t len) {
        ApiStream *whole = api_stream_new(ep, strip), *split = api_stream_new(ep, strip), *again;
        ApiBuffer a = {}, b = {}, cut = {}, c = {};
        ApiUsage ua, ub;
        int ra, rb, rc;

        fuzz_check(whole && split, "api_stream_new", data, size);
        ra = feed(whole, text, len, len ? len : 1, &a);
        rb = feed(split, text, len, step, &b);
        fuzz_check(ra == rb, "whole and split feeds return differently", data, size);
        fuzz_check(ra == 0 || ra == -EBADMSG || ra == -E2BIG, "unexpected error", data, size);
        fuzz_check(a.len == b.len && (a.len == 0 || memcmp(a.data, b.data, a.len) == 0),
                   "whole and split feeds forward different bytes", data, size);
        fuzz_check(a.len <= len, "more forwarded than came in", data, size);
        fuzz_check(strip || a.len == 0 || memcmp(a.data, text, a.len) == 0,
                   "forwarded bytes are not the input's", data, size);
        api_stream_usage(whole, &ua);
        api_stream_usage(split, &ub);
        fuzz_check(usage_equal(&ua, &ub), "whole and split feeds count differently", data, size);
        fuzz_check(api_stream_done(whole) == api_stream_done(split), "whole and split end differently", data,
                   size);

        if (ra == 0) {
                bool done = api_stream_done(whole);

                fuzz_check(api_stream_cut(whole, &cut) == 0, "api_stream_cut", data, size);
                fuzz_check(done == (cut.len == 0), "a cut after the end adds bytes, or one before adds none",
                           data, size);
                if (!done) {
                        /* what the client got is a whole stream of this API */
                        fuzz_check(api_buffer_append(&a, cut.data, cut.len) == 0, "append", data, size);
                        again = api_stream_new(ep, false);
                        rc = api_stream_feed(again, a.data, a.len, &c);
                        fuzz_check(rc == 0, "the cut stream does not parse", data, size);
                        fuzz_check(api_stream_done(again), "the cut stream does not end", data, size);
                        fuzz_check(c.len == a.len, "the cut stream is not forwarded whole", data, size);
                        api_stream_free(again);
                }
        }
        api_stream_free(whole);
        api_stream_free(split);
        api_buffer_done(&a);
        api_buffer_done(&b);
        api_buffer_done(&cut);
        api_buffer_done(&c);
}

static void fuzz_request(ApiEndpoint ep, bool flavor, uint64_t grant, const uint8_t *data, size_t size,
                         const char *text, size_t len) {
        ApiRequest r, r2;
        const char *error = NULL;
        char *body = NULL;
        size_t body_len = 0;
        uint64_t v;
        int k = api_request_parse(ep, flavor, text, len, &r, &error);

        fuzz_check(k == 0 || (k == -EBADMSG && error && strchr(error, ':')), "parse: no reason", data, size);
        if (k < 0)
                return;
        fuzz_check(r.body && r.prompt_estimate >= 1, "parse: no body or estimate", data, size);
        /* the clamp per choice: the grant shared out (at least 1 unless it is 0), or the client's smaller */
        v = grant / r.choices ? grant / r.choices : grant ? 1 : 0;
        if (r.has_max_output && r.max_output / r.choices < v)
                v = r.max_output / r.choices;
        fuzz_check(api_request_rewrite(ep, flavor, &r, grant, grant & 1 ? "fuzz-model" : NULL, &body,
                                       &body_len) == 0,
                   "rewrite", data, size);
        k = api_request_parse(ep, flavor, body, body_len, &r2, &error);
        fuzz_check(k == 0, "the rewritten body does not parse", data, size);
        fuzz_check(r.choices >= 1 && r2.choices == r.choices, "choices changed", data, size);
        fuzz_check(r2.has_max_output && r2.max_output == v * r.choices,
                   "the rewritten body's max output is not the clamp", data, size);
        fuzz_check(r2.stream == r.stream, "the rewrite changed stream", data, size);
        fuzz_check(!(grant & 1) || (r2.model && strcmp(r2.model, "fuzz-model") == 0),
                   "the model not replaced", data, size);
        fuzz_check(!r.stream || !(ep == API_EP_OPENAI_CHAT || ep == API_EP_OPENAI_COMPLETIONS) ||
                           r2.client_wants_usage,
                   "include_usage not injected", data, size);
        api_request_done(&r);
        api_request_done(&r2);
        free(body);
}

static void fuzz_response(const uint8_t *data, size_t size, const char *text, size_t len) {
        char path[512];
        size_t n = len < sizeof(path) - 1 ? len : sizeof(path) - 1;

        for (ApiEndpoint ep = 0; ep < _API_EP_MAX; ep++) {
                ApiUsage u;
                int k = api_response_usage(ep, text, len, &u);

                fuzz_check(k == 0 || k == -ENODATA || k == -EBADMSG, "api_response_usage", data, size);
                fuzz_check(k == 0 || (u.input == 0 && u.output == 0), "usage left after an error", data,
                           size);
        }
        memcpy(path, text, n);
        path[n] = '\0';
        for (ApiKind kind = 0; kind < _API_KIND_MAX; kind++) {
                bool flavor;
                ApiEndpoint ep = api_endpoint(kind, "POST", path, &flavor);

                fuzz_check(ep < _API_EP_MAX, "api_endpoint", data, size);
                fuzz_check(!flavor || kind == API_KIND_OLLAMA, "flavor without kind ollama", data, size);
                fuzz_check(api_endpoint(kind, "GET", path, NULL) == API_EP_NONE, "GET budgeted", data, size);
        }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        const char *text;
        size_t len;
        char *error_body;

        if (size < 3)
                return 0;
        text = (const char *)data + 3;
        len = size - 3;
        switch (data[0] % 8) {
        case 6:
                fuzz_request((ApiEndpoint)(1 + data[1] % 6), data[1] & 8, data[2] * 37u, data, size, text,
                             len);
                break;
        case 7:
                fuzz_response(data, size, text, len);
                break;
        default:
                fuzz_stream((ApiEndpoint)(1 + data[0] % 8), data[1] & 1, 1 + (data[1] >> 1) % 64, data, size,
                            text, len);
                break;
        }
        /* an error body with the input as its message is JSON of that API */
        if (data[2] == 0xFF && memchr(text, '\0', len) == NULL) {
                char *m = strndup(text, len);

                error_body = api_error_body((ApiEndpoint)(data[1] % _API_EP_MAX), 429, NULL, m);
                fuzz_check(error_body != NULL, "api_error_body", data, size);
                free(error_body);
                free(m);
        }
        return 0;
}
