/* SPDX-License-Identifier: MIT */
/*
 * Tests for proxy/api.c and proxy/sse.c, the pure API layer of
 * tokenbudget-proxy, on recorded shapes: bodies and streams as OpenAI (and
 * llama.cpp, vLLM), Ollama and Anthropic send them (the documented examples
 * of each API, field for field, with the fields our readers skip left in).
 * Rows: endpoints by kind and path; request parsing (the client's max output
 * per API, the prompt estimate, every malformed body refused with its
 * message); the rewrite (the clamp per API and flavor, include_usage injected
 * keeping the other stream_options, the model); usage of whole responses;
 * each endpoint's stream fed whole, split at every byte boundary and byte by
 * byte (the same bytes out, the same usage); the injected usage chunk
 * stripped and the asked one kept; Anthropic's cumulative message_delta;
 * interrupted streams counted from deltas, cut, and the cut checked event by
 * event for what the API's clients read, then fed again as a stream of its
 * own; SSE line endings and limits; events that are not what the API sends;
 * error bodies per API.
 */
#include <check.h>
#include <errno.h>
#include <inttypes.h>
#include <json-c/json.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api.h"
#include "sse.h"
#include "tb-check.h"

#define ELEMENTSOF(x) (sizeof(x) / sizeof((x)[0]))

/* ---- endpoints ---- */

typedef struct EndpointRow {
        ApiKind kind;
        const char *method, *path;
        ApiEndpoint want;
        bool flavor;
} EndpointRow;

static const EndpointRow endpoint_rows[] = {
        {API_KIND_AUTO, "POST", "/v1/chat/completions", API_EP_OPENAI_CHAT, false},
        {API_KIND_OPENAI, "POST", "/v1/chat/completions", API_EP_OPENAI_CHAT, false},
        {API_KIND_OLLAMA, "POST", "/v1/chat/completions", API_EP_OPENAI_CHAT, true},
        {API_KIND_OLLAMA, "POST", "/v1/completions", API_EP_OPENAI_COMPLETIONS, true},
        {API_KIND_OPENAI, "POST", "/v1/completions", API_EP_OPENAI_COMPLETIONS, false},
        {API_KIND_OPENAI, "POST", "/v1/responses", API_EP_OPENAI_RESPONSES, false},
        {API_KIND_OLLAMA, "POST", "/v1/responses", API_EP_OPENAI_RESPONSES, false},
        {API_KIND_AUTO, "POST", "/api/chat", API_EP_OLLAMA_CHAT, false},
        {API_KIND_OLLAMA, "POST", "/api/generate", API_EP_OLLAMA_GENERATE, false},
        {API_KIND_ANTHROPIC, "POST", "/v1/messages", API_EP_ANTHROPIC_MESSAGES, false},
        {API_KIND_OLLAMA, "POST", "/v1/messages", API_EP_ANTHROPIC_MESSAGES, false},
        /* every kind budgets every known path: no way around the budget by path */
        {API_KIND_ANTHROPIC, "POST", "/api/chat", API_EP_OLLAMA_CHAT, false},
        {API_KIND_OPENAI, "POST", "/v1/messages", API_EP_ANTHROPIC_MESSAGES, false},
        /* what routers make of a path */
        {API_KIND_OPENAI, "POST", "/v1/chat/completions?api-version=2024-10-21", API_EP_OPENAI_CHAT, false},
        {API_KIND_OPENAI, "POST", "/v1//chat/./completions/", API_EP_OPENAI_CHAT, false},
        {API_KIND_OPENAI, "POST", "/v1/chat/%63ompletions", API_EP_OPENAI_CHAT, false},
        {API_KIND_OPENAI, "POST", "/v1/chat%2Fcompletions", API_EP_OPENAI_CHAT, false},
        {API_KIND_OPENAI, "POST", "/v1/models/../chat/completions", API_EP_OPENAI_CHAT, false},
        {API_KIND_OPENAI, "POST", "/../../v1/messages#x", API_EP_ANTHROPIC_MESSAGES, false},
        {API_KIND_OLLAMA, "POST", "/api/chat%00", API_EP_NONE, false},
        /* however long the segments resolved away */
        {API_KIND_OPENAI, "POST",
         "/a-segment-longer-than-any-endpoint-is-still-resolved-away-by-its-dot-dot-"
         "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
         "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx/../v1/chat/"
         "completions",
         API_EP_OPENAI_CHAT, false},
        {API_KIND_OPENAI, "POST", "v1/responses", API_EP_OPENAI_RESPONSES, false},
        {API_KIND_OPENAI, "POST", "/v1/chat/completions/..", API_EP_NONE, false},
        /* not budgeted */
        {API_KIND_OPENAI, "GET", "/v1/chat/completions", API_EP_NONE, false},
        {API_KIND_OPENAI, "post", "/v1/chat/completions", API_EP_NONE, false},
        {API_KIND_OPENAI, "POST", "/v1/models", API_EP_NONE, false},
        {API_KIND_OPENAI, "POST", "/v1/embeddings", API_EP_NONE, false},
        {API_KIND_OLLAMA, "POST", "/api/embed", API_EP_NONE, false},
        {API_KIND_OLLAMA, "POST", "/api/chatty", API_EP_NONE, false},
        {API_KIND_ANTHROPIC, "POST", "/v1/messages/count_tokens", API_EP_NONE, false},
        {API_KIND_OPENAI, "POST", "/completion", API_EP_NONE, false}, /* llama.cpp native */
        {API_KIND_OPENAI, "POST", "", API_EP_NONE, false},
        {API_KIND_OPENAI, "POST",
         "/v1/chat/completionsxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
         "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
         API_EP_NONE, false},
};

START_TEST(test_endpoint) {
        const EndpointRow *row = &endpoint_rows[_i];
        bool flavor = !row->flavor;

        ck_assert_msg(api_endpoint(row->kind, row->method, row->path, &flavor) == row->want,
                      "row %d (%s %s)", _i, row->method, row->path);
        ck_assert_msg(flavor == row->flavor, "row %d (%s): flavor", _i, row->path);
        ck_assert_int_eq(api_endpoint(row->kind, row->method, row->path, NULL), row->want);
}
END_TEST

START_TEST(test_kind_names) {
        for (ApiKind k = 0; k < _API_KIND_MAX; k++)
                ck_assert_int_eq(api_kind_from_string(api_kind_to_string(k)), (int)k);
        ck_assert_int_eq(api_kind_from_string("openai"), API_KIND_OPENAI);
        ck_assert_int_eq(api_kind_from_string("OpenAI"), -EINVAL);
        ck_assert_int_eq(api_kind_from_string(NULL), -EINVAL);
        ck_assert_ptr_null(api_kind_to_string(_API_KIND_MAX));
        for (ApiEndpoint e = 0; e < _API_EP_MAX; e++)
                ck_assert_ptr_nonnull(api_endpoint_to_string(e));
}
END_TEST

/* ---- requests ---- */

typedef struct ParseRow {
        const char *name;
        ApiEndpoint ep;
        bool flavor;
        const char *body;
        const char *error; /* NULL: parses */
        const char *model;
        bool stream, wants_usage, has_max;
        uint64_t max, estimate;
        uint64_t choices; /* 0: 1 */
} ParseRow;

#define CHAT_HELLO                                                                                          \
        "\"messages\":[{\"role\":\"user\",\"content\":\"Hello, how are you?\"}]" /* 19 bytes: 5 tokens */

static const ParseRow parse_rows[] = {
        {"openai chat, nothing set", API_EP_OPENAI_CHAT, false, "{\"model\":\"gpt-4o\"," CHAT_HELLO "}",
         NULL, "gpt-4o", false, false, false, 0, 5},
        {"openai chat max_completion_tokens", API_EP_OPENAI_CHAT, false,
         "{\"model\":\"gpt-4o\"," CHAT_HELLO ",\"max_completion_tokens\":300}", NULL, "gpt-4o", false, false,
         true, 300, 5},
        {"openai chat deprecated max_tokens", API_EP_OPENAI_CHAT, false,
         "{" CHAT_HELLO ",\"max_tokens\":120}", NULL, NULL, false, false, true, 120, 5},
        {"openai chat both: the smaller", API_EP_OPENAI_CHAT, false,
         "{" CHAT_HELLO ",\"max_tokens\":120,\"max_completion_tokens\":80}", NULL, NULL, false, false, true,
         80, 5},
        {"llama.cpp n_predict counts", API_EP_OPENAI_CHAT, false,
         "{" CHAT_HELLO ",\"max_tokens\":120,\"n_predict\":64}", NULL, NULL, false, false, true, 64, 5},
        {"llama.cpp n_predict -1 is no limit", API_EP_OPENAI_CHAT, false,
         "{" CHAT_HELLO ",\"n_predict\":-1}", NULL, NULL, false, false, false, 0, 5},
        {"null is absent", API_EP_OPENAI_CHAT, false,
         "{" CHAT_HELLO ",\"max_tokens\":null,\"stream\":null,\"stream_options\":null,\"model\":null}", NULL,
         NULL, false, false, false, 0, 5},
        {"stream with include_usage", API_EP_OPENAI_CHAT, false,
         "{" CHAT_HELLO ",\"stream\":true,\"stream_options\":{\"include_usage\":true}}", NULL, NULL, true,
         true, false, 0, 5},
        {"stream, include_usage false", API_EP_OPENAI_CHAT, false,
         "{" CHAT_HELLO ",\"stream\":true,\"stream_options\":{\"include_usage\":false}}", NULL, NULL, true,
         false, false, 0, 5},
        {"integral double accepted", API_EP_OPENAI_CHAT, false, "{" CHAT_HELLO ",\"max_tokens\":100.0}",
         NULL, NULL, false, false, true, 100, 5},
        {"zero is a limit", API_EP_ANTHROPIC_MESSAGES, false, "{" CHAT_HELLO ",\"max_tokens\":0}", NULL,
         NULL, false, false, true, 0, 5},
        {"int64 max", API_EP_ANTHROPIC_MESSAGES, false,
         "{" CHAT_HELLO ",\"max_tokens\":9223372036854775807}", NULL, NULL, false, false, true, INT64_MAX,
         5},
        {"ollama /v1: max_tokens", API_EP_OPENAI_CHAT, true, "{" CHAT_HELLO ",\"max_tokens\":50}", NULL,
         NULL, false, false, true, 50, 5},
        {"ollama /v1: the client's max_completion_tokens is its wish too", API_EP_OPENAI_CHAT, true,
         "{" CHAT_HELLO ",\"max_completion_tokens\":40}", NULL, NULL, false, false, true, 40, 5},
        {"ollama /v1 has no n_predict", API_EP_OPENAI_CHAT, true, "{" CHAT_HELLO ",\"n_predict\":\"x\"}",
         NULL, NULL, false, false, false, 0, 5},
        {"completions prompt", API_EP_OPENAI_COMPLETIONS, false,
         "{\"model\":\"gpt-3.5-turbo-instruct\",\"prompt\":\"Say this is a test\",\"max_tokens\":7}", NULL,
         "gpt-3.5-turbo-instruct", false, false, true, 7, 5},
        {"completions token prompt: 4 bytes a token", API_EP_OPENAI_COMPLETIONS, false,
         "{\"prompt\":[1,2,3,4,5,6,7],\"max_tokens\":7}", NULL, NULL, false, false, true, 7, 7},
        {"responses", API_EP_OPENAI_RESPONSES, false,
         "{\"model\":\"gpt-4.1\",\"instructions\":\"Be brief.\",\"input\":\"Tell me a three sentence "
         "bedtime "
         "story about a unicorn.\",\"max_output_tokens\":500}",
         NULL, "gpt-4.1", false, false, true, 500, 16},
        {"responses input items", API_EP_OPENAI_RESPONSES, false,
         "{\"input\":[{\"role\":\"user\",\"content\":[{\"type\":\"input_text\",\"text\":\"what is in this "
         "image?\"},{\"type\":\"input_image\",\"image_url\":\"data:image/"
         "png;base64,AAAAAAAAAAAAAAAAAAAAAAAAAAAA"
         "AAAAAAAAAAAAAAAAAAAA\"}]}]}",
         NULL, NULL, false, false, false, 0, 6},
        {"ollama native streams by default", API_EP_OLLAMA_CHAT, false,
         "{\"model\":\"llama3.2\",\"messages\":[{\"role\":\"user\",\"content\":\"why is the sky blue?\"}]}",
         NULL, "llama3.2", true, false, false, 0, 5},
        {"ollama native num_predict", API_EP_OLLAMA_GENERATE, false,
         "{\"model\":\"llama3.2\",\"prompt\":\"Why is the sky "
         "blue?\",\"stream\":false,\"options\":{\"num_predict\":"
         "128,\"temperature\":0.8}}",
         NULL, "llama3.2", false, false, true, 128, 5},
        {"ollama native num_predict -1 is no limit", API_EP_OLLAMA_GENERATE, false,
         "{\"prompt\":\"Why is the sky blue?\",\"options\":{\"num_predict\":-1}}", NULL, NULL, true, false,
         false, 0, 5},
        {"ollama native images are not text", API_EP_OLLAMA_GENERATE, false,
         "{\"prompt\":\"What is in this picture?\",\"images\":[\"iVBORw0KGgoAAAANSUhEUgAAAG0AAABmCAYAAADBPx+"
         "VAAAACXBIWXMAAAsTAAALEwEAmpwYAAAAAXNSR0IArs4c6QAAAARnQU1BAACxjwv8YQUAAA3VSURBVHgB7Z27r0zdG8fX743i"
         "\"]}",
         NULL, NULL, true, false, false, 0, 6},
        {"anthropic system, blocks and tools", API_EP_ANTHROPIC_MESSAGES, false,
         "{\"model\":\"claude-sonnet-4-20250514\",\"max_tokens\":1024,\"system\":[{\"type\":\"text\","
         "\"text\":"
         "\"You are "
         "terse.\"}],\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"What is "
         "the weather?\"}]},{\"role\":\"assistant\",\"content\":[{\"type\":\"tool_use\",\"id\":\"toolu_01\","
         "\"name\":\"get_weather\",\"input\":{\"city\":\"Paris\"}}]}],\"tools\":[{\"name\":\"get_weather\","
         "\"input_schema\":{\"type\":\"object\"}}]}",
         /* 14 + 20 + 11 + 16 ({"city":"Paris"}) + 57 (the tools' JSON) = 118 bytes */
         NULL, "claude-sonnet-4-20250514", false, false, true, 1024, 30},
        {"an empty prompt is still a token", API_EP_ANTHROPIC_MESSAGES, false, "{\"max_tokens\":5}", NULL,
         NULL, false, false, true, 5, 1},
        {"whitespace around the object", API_EP_OPENAI_CHAT, false, " \r\n\t{\"max_tokens\":3}\n", NULL,
         NULL, false, false, true, 3, 1},
        /* n choices, each up to the max: the request's output is n times it */
        {"openai chat n", API_EP_OPENAI_CHAT, false,
         "{" CHAT_HELLO ",\"n\":3,\"max_completion_tokens\":100}", NULL, NULL, false, false, true, 300, 5,
         3},
        {"openai chat n without a max", API_EP_OPENAI_CHAT, false, "{" CHAT_HELLO ",\"n\":128}", NULL, NULL,
         false, false, false, 0, 5, 128},
        {"completions best_of over n", API_EP_OPENAI_COMPLETIONS, false,
         "{\"prompt\":\"Say this is a test\",\"n\":2,\"best_of\":5,\"max_tokens\":10}", NULL, NULL, false,
         false, true, 50, 5, 5},
        {"ollama /v1 has no n", API_EP_OPENAI_CHAT, true, "{" CHAT_HELLO ",\"n\":3,\"max_tokens\":100}",
         NULL, NULL, false, false, true, 100, 5, 1},
        {"n null", API_EP_OPENAI_CHAT, false, "{\"n\":null,\"max_tokens\":7}", NULL, NULL, false, false,
         true, 7, 1, 1},

        {"not an object", API_EP_OPENAI_CHAT, false, "[1,2]", "body: not a JSON object"},
        {"a string", API_EP_OPENAI_CHAT, false, "\"hi\"", "body: not a JSON object"},
        {"empty body", API_EP_OPENAI_CHAT, false, "", "body: incomplete JSON"},
        {"cut short", API_EP_OPENAI_CHAT, false, "{\"model\":\"gpt", "body: incomplete JSON"},
        {"not JSON", API_EP_OPENAI_CHAT, false, "hello",
         "body: not JSON (NaN, Infinity, a comment, a single "
         "quote or a byte JSON has not)"},
        {"NaN", API_EP_OPENAI_CHAT, false, "{\"temperature\":NaN}",
         "body: not JSON (NaN, Infinity, a comment, a single quote or a byte JSON has not)"},
        {"Infinity", API_EP_OPENAI_CHAT, false, "{\"max_tokens\":Infinity}",
         "body: not JSON (NaN, Infinity, a comment, a single quote or a byte JSON has not)"},
        {"single quotes", API_EP_OPENAI_CHAT, false, "{'max_tokens':5}",
         "body: not JSON (NaN, Infinity, a comment, a single quote or a byte JSON has not)"},
        {"a comment", API_EP_OPENAI_CHAT, false, "{\"max_tokens\":5 /* five */}",
         "body: not JSON (NaN, Infinity, a comment, a single quote or a byte JSON has not)"},
        {"two objects", API_EP_OPENAI_CHAT, false, "{\"a\":1}{\"b\":2}", "body: data after the JSON object"},
        {"trailing comma", API_EP_OPENAI_CHAT, false, "{\"a\":1,}", "body: invalid JSON"},
        {"raw control character in a string", API_EP_OPENAI_CHAT, false, "{\"a\":\"x\ty\"}",
         "body: a control character in a string"},
        {"invalid UTF-8", API_EP_OPENAI_CHAT, false, "{\"a\":\"\xff\"}", "body: invalid UTF-8"},
        /* 70 arrays in an object: deeper than 64 */
        {"too deep", API_EP_OPENAI_CHAT, false,
         "{\"a\":[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["
         "]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]}",
         "body: JSON nested too deeply (64 levels)"},
        {"max_tokens a string", API_EP_OPENAI_CHAT, false, "{\"max_tokens\":\"100\"}",
         "max_tokens: not an integer"},
        {"max_completion_tokens a fraction", API_EP_OPENAI_CHAT, false, "{\"max_completion_tokens\":10.5}",
         "max_completion_tokens: not an integer"},
        {"max_tokens a boolean", API_EP_ANTHROPIC_MESSAGES, false, "{\"max_tokens\":true}",
         "max_tokens: not an integer"},
        {"max_tokens negative", API_EP_ANTHROPIC_MESSAGES, false, "{\"max_tokens\":-1}",
         "max_tokens: must not be negative"},
        {"max_tokens past int64", API_EP_OPENAI_COMPLETIONS, false, "{\"max_tokens\":9223372036854775808}",
         "max_tokens: out of range (integers up to 9223372036854775807)"},
        {"max_tokens past uint64", API_EP_OPENAI_COMPLETIONS, false,
         "{\"max_tokens\":99999999999999999999999999999}",
         "max_tokens: out of range (integers up to 9223372036854775807)"},
        {"max_tokens below int64", API_EP_OPENAI_COMPLETIONS, false,
         "{\"max_tokens\":-99999999999999999999999}",
         "max_tokens: out of range (integers up to 9223372036854775807)"},
        {"max_output_tokens 1e400", API_EP_OPENAI_RESPONSES, false, "{\"max_output_tokens\":1e400}",
         "max_output_tokens: out of range (integers up to 9223372036854775807)"},
        {"max_output_tokens 1e19", API_EP_OPENAI_RESPONSES, false, "{\"max_output_tokens\":1e19}",
         "max_output_tokens: out of range (integers up to 9223372036854775807)"},
        {"n_predict an object", API_EP_OPENAI_COMPLETIONS, false, "{\"n_predict\":{}}",
         "n_predict: not an integer"},
        {"num_predict a string", API_EP_OLLAMA_CHAT, false, "{\"options\":{\"num_predict\":\"64\"}}",
         "options.num_predict: not an integer"},
        {"options not an object", API_EP_OLLAMA_CHAT, false, "{\"options\":[]}", "options: not an object"},
        {"model a number", API_EP_OPENAI_CHAT, false, "{\"model\":4}", "model: not a string"},
        {"n zero", API_EP_OPENAI_CHAT, false, "{\"n\":0}", "n: out of range (1 to 128)"},
        {"n 129", API_EP_OPENAI_CHAT, false, "{\"n\":129}", "n: out of range (1 to 128)"},
        {"n a string", API_EP_OPENAI_COMPLETIONS, false, "{\"n\":\"2\"}", "n: not an integer"},
        {"best_of 21", API_EP_OPENAI_COMPLETIONS, false, "{\"best_of\":21}",
         "best_of: out of range (1 to 20)"},
        {"stream a string", API_EP_OPENAI_CHAT, false, "{\"stream\":\"true\"}", "stream: not a boolean"},
        {"stream_options a number", API_EP_OPENAI_CHAT, false, "{\"stream\":true,\"stream_options\":1}",
         "stream_options: not an object"},
        {"include_usage a string", API_EP_OPENAI_COMPLETIONS, false,
         "{\"stream\":true,\"stream_options\":{\"include_usage\":\"yes\"}}",
         "stream_options.include_usage: not a boolean"},
};

START_TEST(test_request_parse) {
        const ParseRow *row = &parse_rows[_i];
        ApiRequest r;
        const char *error = "unset";
        int k = api_request_parse(row->ep, row->flavor, row->body, strlen(row->body), &r, &error);

        if (row->error) {
                ck_assert_msg(k == -EBADMSG, "%s: %d", row->name, k);
                ck_assert_msg(error && strcmp(error, row->error) == 0, "%s: error '%s'", row->name, error);
                ck_assert_ptr_null(r.body);
                ck_assert_ptr_null(r.model);
                return;
        }
        ck_assert_msg(k == 0, "%s: %d (%s)", row->name, k, error);
        ck_assert_msg(error == NULL, "%s: error set", row->name);
        ck_assert_msg(row->model ? r.model && strcmp(r.model, row->model) == 0 : !r.model, "%s: model %s",
                      row->name, r.model);
        ck_assert_msg(r.stream == row->stream, "%s: stream", row->name);
        ck_assert_msg(r.client_wants_usage == row->wants_usage, "%s: include_usage", row->name);
        ck_assert_msg(r.has_max_output == row->has_max, "%s: has max", row->name);
        ck_assert_msg(r.max_output == row->max, "%s: max %" PRIu64, row->name, r.max_output);
        ck_assert_msg(r.prompt_estimate == row->estimate, "%s: estimate %" PRIu64, row->name,
                      r.prompt_estimate);
        ck_assert_msg(r.choices == (row->choices ? row->choices : 1), "%s: choices %" PRIu64, row->name,
                      r.choices);
        ck_assert_ptr_nonnull(r.body);
        api_request_done(&r);
        ck_assert_ptr_null(r.body);
        api_request_done(&r); /* twice is fine */
}
END_TEST

typedef struct RewriteRow {
        const char *name;
        ApiEndpoint ep;
        bool flavor;
        const char *body;
        uint64_t grant;
        const char *model;
        const char *want; /* compared as JSON, and the key order too */
} RewriteRow;

static const RewriteRow rewrite_rows[] = {
        {"openai chat: none given, max_completion_tokens set", API_EP_OPENAI_CHAT, false,
         "{\"model\":\"gpt-4o\",\"messages\":[]}", 200, NULL,
         "{\"model\":\"gpt-4o\",\"messages\":[],\"max_completion_tokens\":200}"},
        {"openai chat: the client's smaller value stays", API_EP_OPENAI_CHAT, false,
         "{\"max_completion_tokens\":50,\"messages\":[]}", 200, NULL,
         "{\"max_completion_tokens\":50,\"messages\":[]}"},
        {"openai chat: the grant when smaller", API_EP_OPENAI_CHAT, false,
         "{\"max_completion_tokens\":5000,\"messages\":[]}", 200, NULL,
         "{\"max_completion_tokens\":200,\"messages\":[]}"},
        {"openai chat: a lone max_tokens clamped in place, not doubled", API_EP_OPENAI_CHAT, false,
         "{\"max_tokens\":5000}", 200, NULL, "{\"max_tokens\":200}"},
        {"openai chat: both given, both clamped", API_EP_OPENAI_CHAT, false,
         "{\"max_tokens\":5000,\"max_completion_tokens\":100}", 200, NULL,
         "{\"max_tokens\":100,\"max_completion_tokens\":100}"},
        {"openai chat: a null max_tokens is absent", API_EP_OPENAI_CHAT, false, "{\"max_tokens\":null}", 200,
         NULL, "{\"max_tokens\":null,\"max_completion_tokens\":200}"},
        {"llama.cpp: n_predict clamped too (it takes precedence)", API_EP_OPENAI_CHAT, false,
         "{\"n_predict\":-1,\"max_tokens\":9000}", 300, NULL, "{\"n_predict\":300,\"max_tokens\":300}"},
        {"ollama /v1: max_tokens, not max_completion_tokens", API_EP_OPENAI_CHAT, true,
         "{\"max_completion_tokens\":5000}", 200, NULL,
         "{\"max_completion_tokens\":5000,\"max_tokens\":200}"},
        {"ollama /v1: max_tokens clamped", API_EP_OPENAI_CHAT, true, "{\"max_tokens\":5000}", 200, NULL,
         "{\"max_tokens\":200}"},
        {"ollama /v1: the client's max_completion_tokens honoured through max_tokens", API_EP_OPENAI_CHAT,
         true, "{\"max_completion_tokens\":20}", 200, NULL,
         "{\"max_completion_tokens\":20,\"max_tokens\":20}"},
        {"completions: max_tokens", API_EP_OPENAI_COMPLETIONS, false, "{\"prompt\":\"x\",\"max_tokens\":16}",
         8, NULL, "{\"prompt\":\"x\",\"max_tokens\":8}"},
        {"completions on ollama", API_EP_OPENAI_COMPLETIONS, true, "{\"prompt\":\"x\"}", 8, NULL,
         "{\"prompt\":\"x\",\"max_tokens\":8}"},
        {"responses: max_output_tokens", API_EP_OPENAI_RESPONSES, false, "{\"input\":\"x\"}", 64, NULL,
         "{\"input\":\"x\",\"max_output_tokens\":64}"},
        {"responses: no include_usage injected (none exists)", API_EP_OPENAI_RESPONSES, false,
         "{\"input\":\"x\",\"stream\":true,\"max_output_tokens\":10}", 64, NULL,
         "{\"input\":\"x\",\"stream\":true,\"max_output_tokens\":10}"},
        {"anthropic: max_tokens", API_EP_ANTHROPIC_MESSAGES, false,
         "{\"model\":\"claude\",\"max_tokens\":1024,\"stream\":true}", 100, NULL,
         "{\"model\":\"claude\",\"max_tokens\":100,\"stream\":true}"},
        {"anthropic: zero granted", API_EP_ANTHROPIC_MESSAGES, false, "{\"max_tokens\":1024}", 0, NULL,
         "{\"max_tokens\":0}"},
        {"ollama native: options.num_predict added", API_EP_OLLAMA_CHAT, false, "{\"model\":\"llama3.2\"}",
         128, NULL, "{\"model\":\"llama3.2\",\"options\":{\"num_predict\":128}}"},
        {"ollama native: other options kept", API_EP_OLLAMA_GENERATE, false,
         "{\"options\":{\"temperature\":0.8,\"num_predict\":-1,\"seed\":42}}", 128, NULL,
         "{\"options\":{\"temperature\":0.8,\"num_predict\":128,\"seed\":42}}"},
        {"ollama native: a smaller num_predict stays", API_EP_OLLAMA_GENERATE, false,
         "{\"options\":{\"num_predict\":10}}", 128, NULL, "{\"options\":{\"num_predict\":10}}"},
        {"ollama native: null options replaced", API_EP_OLLAMA_GENERATE, false, "{\"options\":null}", 128,
         NULL, "{\"options\":{\"num_predict\":128}}"},
        {"stream: include_usage injected", API_EP_OPENAI_CHAT, false, "{\"stream\":true}", 10, NULL,
         "{\"stream\":true,\"max_completion_tokens\":10,\"stream_options\":{\"include_usage\":true}}"},
        {"stream: other stream_options intact", API_EP_OPENAI_CHAT, false,
         "{\"stream\":true,\"stream_options\":{\"include_obfuscation\":false,\"continuous_usage_stats\":"
         "true}}",
         10, NULL,
         "{\"stream\":true,\"stream_options\":{\"include_obfuscation\":false,\"continuous_usage_stats\":"
         "true,"
         "\"include_usage\":true},\"max_completion_tokens\":10}"},
        {"stream: include_usage false turned true", API_EP_OPENAI_COMPLETIONS, false,
         "{\"stream\":true,\"stream_options\":{\"include_usage\":false}}", 10, NULL,
         "{\"stream\":true,\"stream_options\":{\"include_usage\":true},\"max_tokens\":10}"},
        {"stream: null stream_options replaced", API_EP_OPENAI_CHAT, true,
         "{\"stream\":true,\"stream_options\":null}", 10, NULL,
         "{\"stream\":true,\"stream_options\":{\"include_usage\":true},\"max_tokens\":10}"},
        {"not streaming: no stream_options", API_EP_OPENAI_CHAT, false, "{\"stream\":false}", 10, NULL,
         "{\"stream\":false,\"max_completion_tokens\":10}"},
        {"n: the grant shared out among the choices", API_EP_OPENAI_CHAT, false,
         "{\"n\":4,\"max_completion_tokens\":50}", 100, NULL, "{\"n\":4,\"max_completion_tokens\":25}"},
        {"n: the client's smaller value per choice stays", API_EP_OPENAI_CHAT, false,
         "{\"n\":4,\"max_completion_tokens\":10}", 100, NULL, "{\"n\":4,\"max_completion_tokens\":10}"},
        {"n: a grant below n still lets each choice a token", API_EP_OPENAI_COMPLETIONS, false,
         "{\"n\":2,\"best_of\":3}", 2, NULL, "{\"n\":2,\"best_of\":3,\"max_tokens\":1}"},
        {"n: a grant of 0 is 0", API_EP_OPENAI_CHAT, false, "{\"n\":2}", 0, NULL,
         "{\"n\":2,\"max_completion_tokens\":0}"},
        {"model replaced", API_EP_OPENAI_CHAT, false, "{\"model\":\"gpt-4o\",\"max_completion_tokens\":5}",
         10, "gpt-4o-mini", "{\"model\":\"gpt-4o-mini\",\"max_completion_tokens\":5}"},
        {"model added", API_EP_ANTHROPIC_MESSAGES, false, "{\"max_tokens\":5}", 10, "claude-haiku",
         "{\"max_tokens\":5,\"model\":\"claude-haiku\"}"},
        {"everything else as it came", API_EP_OPENAI_CHAT, false,
         "{\"messages\":[{\"role\":\"user\",\"content\":\"a/b \\u00e9 "
         "\\ud83d\\ude00\"}],\"temperature\":0.7,"
         "\"top_p\":1e-1,\"logit_bias\":{\"50256\":-100}}",
         10, NULL,
         "{\"messages\":[{\"role\":\"user\",\"content\":\"a/b \xc3\xa9 "
         "\xf0\x9f\x98\x80\"}],\"temperature\":0.7,"
         "\"top_p\":1e-1,\"logit_bias\":{\"50256\":-100},\"max_completion_tokens\":10}"},
};

START_TEST(test_request_rewrite) {
        const RewriteRow *row = &rewrite_rows[_i];
        ApiRequest r;
        const char *error = NULL;
        char *body = NULL;
        size_t len = 0;
        json_object *got, *want;

        ck_assert_msg(api_request_parse(row->ep, row->flavor, row->body, strlen(row->body), &r, &error) == 0,
                      "%s: parse (%s)", row->name, error);
        ck_assert_msg(api_request_rewrite(row->ep, row->flavor, &r, row->grant, row->model, &body, &len) ==
                              0,
                      "%s: rewrite", row->name);
        ck_assert_msg(len == strlen(body), "%s: length", row->name);
        got = json_tokener_parse(body);
        want = json_tokener_parse(row->want);
        ck_assert_ptr_nonnull(want);
        ck_assert_msg(got && json_object_equal(got, want), "%s: got %s", row->name, body);
        /* the order of the keys too, as the client sent them: byte for byte when printed alike */
        ck_assert_msg(strcmp(json_object_to_json_string_ext(got, JSON_C_TO_STRING_PLAIN),
                             json_object_to_json_string_ext(want, JSON_C_TO_STRING_PLAIN)) == 0,
                      "%s: order %s", row->name, body);
        /* the forwarded body parses as a request again, with the clamp as its max */
        api_request_done(&r);
        ck_assert_int_eq(api_request_parse(row->ep, row->flavor, body, len, &r, &error), 0);
        json_object_put(got);
        json_object_put(want);
        free(body);
        api_request_done(&r);
}
END_TEST

/* The literal numbers survive: 0.7 is not printed as 0.69999999999999996, 1e-1 stays 1e-1 (checked in
 * the row above through the text); and the rewrite of a body without an ApiRequest body is refused. */
START_TEST(test_request_rewrite_misuse) {
        ApiRequest r = {};
        char *body = (char *)"x";
        size_t len = 1;

        ck_assert_int_eq(api_request_rewrite(API_EP_OPENAI_CHAT, false, &r, 10, NULL, &body, &len), -EINVAL);
        ck_assert_ptr_null(body);
        ck_assert_int_eq(len, 0);
}
END_TEST

/* ---- whole responses ---- */

typedef struct ResponseRow {
        const char *name;
        ApiEndpoint ep;
        const char *body;
        int ret;
        uint64_t input, output;
        bool length_stop;
} ResponseRow;

static const ResponseRow response_rows[] = {
        {"openai chat", API_EP_OPENAI_CHAT,
         "{\"id\":\"chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcT\",\"object\":\"chat.completion\",\"created\":"
         "1741569952,"
         "\"model\":\"gpt-4.1-2025-04-14\",\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\","
         "\"content\":\"Hello! How can I assist you "
         "today?\",\"refusal\":null,\"annotations\":[]},\"logprobs\":null,"
         "\"finish_reason\":\"stop\"}],\"usage\":{\"prompt_tokens\":19,\"completion_tokens\":10,\"total_"
         "tokens\":29,"
         "\"prompt_tokens_details\":{\"cached_tokens\":0,\"audio_tokens\":0},\"completion_tokens_details\":{"
         "\"reasoning_tokens\":0,\"audio_tokens\":0,\"accepted_prediction_tokens\":0,\"rejected_prediction_"
         "tokens\":"
         "0}},\"service_tier\":\"default\"}",
         0, 19, 10, false},
        {"openai chat stopped at length", API_EP_OPENAI_CHAT,
         "{\"id\":\"chatcmpl-1\",\"object\":\"chat.completion\",\"created\":1,\"model\":\"gpt-4o\","
         "\"choices\":[{"
         "\"index\":0,\"message\":{\"role\":\"assistant\",\"content\":\"Once\"},\"finish_reason\":"
         "\"length\"}],"
         "\"usage\":{\"prompt_tokens\":12,\"completion_tokens\":1,\"total_tokens\":13}}",
         0, 12, 1, true},
        {"llama.cpp: usage and timings, usage wins", API_EP_OPENAI_CHAT,
         "{\"choices\":[{\"finish_reason\":\"stop\",\"index\":0,\"message\":{\"role\":\"assistant\","
         "\"content\":"
         "\"Hi\"}}],\"created\":1727869300,\"model\":\"gpt-3.5-turbo\",\"system_fingerprint\":\"b3871\","
         "\"object\":"
         "\"chat.completion\",\"usage\":{\"completion_tokens\":2,\"prompt_tokens\":16,\"total_tokens\":18},"
         "\"id\":"
         "\"chatcmpl-x\",\"timings\":{\"prompt_n\":11,\"prompt_ms\":30.5,\"prompt_per_token_ms\":2.77,"
         "\"prompt_per_second\":360.6,\"predicted_n\":2,\"predicted_ms\":20.1,\"predicted_per_token_ms\":10."
         "05,"
         "\"predicted_per_second\":99.5,\"cache_n\":5}}",
         0, 16, 2, false},
        {"llama.cpp: timings as the fallback", API_EP_OPENAI_CHAT,
         "{\"choices\":[{\"finish_reason\":\"length\",\"index\":0,\"message\":{\"role\":\"assistant\","
         "\"content\":"
         "\"Hi "
         "there\"}}],\"created\":1727869300,\"model\":\"gpt-3.5-turbo\",\"object\":\"chat.completion\","
         "\"id\":"
         "\"chatcmpl-x\",\"timings\":{\"prompt_n\":11,\"prompt_ms\":30.5,\"predicted_n\":8,\"predicted_ms\":"
         "95.1,"
         "\"cache_n\":3}}",
         0, 14, 8, true},
        {"llama.cpp: timings not yet known", API_EP_OPENAI_CHAT,
         "{\"choices\":[],\"timings\":{\"prompt_n\":-1,\"predicted_n\":8,\"cache_n\":3}}", -ENODATA},
        {"completions", API_EP_OPENAI_COMPLETIONS,
         "{\"id\":\"cmpl-uqkvlQyYK7bGYrRHQ0eXlWi7\",\"object\":\"text_completion\",\"created\":1589478378,"
         "\"model\":"
         "\"gpt-3.5-turbo-instruct\",\"system_fingerprint\":\"fp_44709d6fcb\",\"choices\":[{\"text\":"
         "\"\\n\\nThis "
         "is indeed a test\",\"index\":0,\"logprobs\":null,\"finish_reason\":\"length\"}],\"usage\":{"
         "\"prompt_tokens\":5,\"completion_tokens\":7,\"total_tokens\":12}}",
         0, 5, 7, true},
        {"responses", API_EP_OPENAI_RESPONSES,
         "{\"id\":\"resp_67ccd2bed1ec8190b14f964abc0542670bb6a6b452d3795b\",\"object\":\"response\","
         "\"created_at\":"
         "1741476542,\"status\":\"completed\",\"error\":null,\"incomplete_details\":null,\"instructions\":"
         "null,"
         "\"max_output_tokens\":null,\"model\":\"gpt-4.1-2025-04-14\",\"output\":[{\"type\":\"message\","
         "\"id\":"
         "\"msg_67ccd2bf17f0819081ff3bb2cf6508e60bb6a6b452d3795b\",\"status\":\"completed\",\"role\":"
         "\"assistant\","
         "\"content\":[{\"type\":\"output_text\",\"text\":\"In a peaceful grove beneath a silver moon...\","
         "\"annotations\":[]}]}],\"parallel_tool_calls\":true,\"previous_response_id\":null,\"reasoning\":{"
         "\"effort\":null,\"summary\":null},\"store\":true,\"temperature\":1.0,\"text\":{\"format\":{"
         "\"type\":"
         "\"text\"}},\"tool_choice\":\"auto\",\"tools\":[],\"top_p\":1.0,\"truncation\":\"disabled\","
         "\"usage\":{"
         "\"input_tokens\":36,\"input_tokens_details\":{\"cached_tokens\":0},\"output_tokens\":87,"
         "\"output_tokens_details\":{\"reasoning_tokens\":0},\"total_tokens\":123},\"user\":null,"
         "\"metadata\":{}}",
         0, 36, 87, false},
        {"responses incomplete at max_output_tokens", API_EP_OPENAI_RESPONSES,
         "{\"id\":\"resp_1\",\"object\":\"response\",\"status\":\"incomplete\",\"incomplete_details\":{"
         "\"reason\":"
         "\"max_output_tokens\"},\"output\":[],\"usage\":{\"input_tokens\":20,\"output_tokens\":16,"
         "\"total_tokens\":36}}",
         0, 20, 16, true},
        {"responses without usage", API_EP_OPENAI_RESPONSES,
         "{\"id\":\"resp_1\",\"object\":\"response\",\"status\":\"failed\",\"usage\":null}", -ENODATA},
        {"ollama chat", API_EP_OLLAMA_CHAT,
         "{\"model\":\"llama3.2\",\"created_at\":\"2023-12-12T14:13:43.416799Z\",\"message\":{\"role\":"
         "\"assistant\",\"content\":\"Hello! How are you today?\"},\"done_reason\":\"stop\",\"done\":true,"
         "\"total_duration\":5191566416,\"load_duration\":2154458,\"prompt_eval_count\":26,"
         "\"prompt_eval_duration\":383809000,\"eval_count\":298,\"eval_duration\":4799921000}",
         0, 26, 298, false},
        {"ollama generate, cached prompt: prompt_eval_count omitted is 0", API_EP_OLLAMA_GENERATE,
         "{\"model\":\"llama3.2\",\"created_at\":\"2023-08-04T19:22:45.499127Z\",\"response\":\"The sky is "
         "blue "
         "because\",\"done\":true,\"done_reason\":\"length\",\"context\":[1,2,3],\"total_duration\":"
         "10706818083,"
         "\"load_duration\":6338219291,\"eval_count\":290,\"eval_duration\":4223250000}",
         0, 0, 290, true},
        {"ollama, both counts omitted", API_EP_OLLAMA_CHAT,
         "{\"model\":\"m\",\"created_at\":\"2024-01-01T00:00:00Z\",\"message\":{\"role\":\"assistant\","
         "\"content\":\"\"},\"done\":true}",
         0, 0, 0, false},
        {"ollama not done", API_EP_OLLAMA_CHAT, "{\"model\":\"m\",\"done\":false}", -ENODATA},
        {"ollama error", API_EP_OLLAMA_CHAT, "{\"error\":\"model 'x' not found\"}", -ENODATA},
        {"anthropic with cache fields", API_EP_ANTHROPIC_MESSAGES,
         "{\"id\":\"msg_013Zva2CMHLNnXjNJJKqJ2EF\",\"type\":\"message\",\"role\":\"assistant\",\"model\":"
         "\"claude-sonnet-4-20250514\",\"content\":[{\"type\":\"text\",\"text\":\"Hi! My name is "
         "Claude.\"}],"
         "\"stop_reason\":\"end_turn\",\"stop_sequence\":null,\"usage\":{\"input_tokens\":2095,"
         "\"cache_creation_input_tokens\":2051,\"cache_read_input_tokens\":7,\"output_tokens\":503}}",
         0, 4153, 503, false},
        {"anthropic at max_tokens, cache fields null", API_EP_ANTHROPIC_MESSAGES,
         "{\"id\":\"msg_1\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"claude\",\"content\":[],"
         "\"stop_reason\":\"max_tokens\",\"stop_sequence\":null,\"usage\":{\"input_tokens\":10,"
         "\"cache_creation_input_tokens\":null,\"cache_read_input_tokens\":null,\"output_tokens\":64}}",
         0, 10, 64, true},
        {"anthropic error", API_EP_ANTHROPIC_MESSAGES,
         "{\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}",
         -ENODATA},
        {"openai error", API_EP_OPENAI_CHAT,
         "{\"error\":{\"message\":\"bad\",\"type\":\"invalid_request_error\",\"param\":null,\"code\":null}}",
         -ENODATA},
        {"a count as a string", API_EP_OPENAI_CHAT,
         "{\"usage\":{\"prompt_tokens\":\"19\",\"completion_tokens\":1}}", -EBADMSG},
        {"a negative count", API_EP_ANTHROPIC_MESSAGES,
         "{\"usage\":{\"input_tokens\":-1,\"output_tokens\":1}}", -EBADMSG},
        {"usage not an object", API_EP_OPENAI_COMPLETIONS, "{\"usage\":[]}", -EBADMSG},
        {"not JSON", API_EP_OPENAI_CHAT, "<html>502 Bad Gateway</html>", -EBADMSG},
        {"not an object", API_EP_OLLAMA_CHAT, "[]", -EBADMSG},
        {"not budgeted", API_EP_NONE, "{\"usage\":{\"prompt_tokens\":1}}", -ENODATA},
};

START_TEST(test_response_usage) {
        const ResponseRow *row = &response_rows[_i];
        ApiUsage u = {.input = 999};
        int r = api_response_usage(row->ep, row->body, strlen(row->body), &u);

        ck_assert_msg(r == row->ret, "%s: %d", row->name, r);
        if (r < 0) {
                ck_assert_msg(u.input == 0 && u.output == 0 && !u.final, "%s: usage left", row->name);
                return;
        }
        ck_assert_msg(u.input == row->input, "%s: input %" PRIu64, row->name, u.input);
        ck_assert_msg(u.output == row->output, "%s: output %" PRIu64, row->name, u.output);
        ck_assert_msg(u.final, "%s: final", row->name);
        ck_assert_msg(u.length_stop == row->length_stop, "%s: length_stop", row->name);
}
END_TEST

/* ---- streams ---- */

/* A recorded stream as its events; usage_chunk marks OpenAI's include_usage chunk. */
typedef struct Part {
        const char *bytes;
        bool usage_chunk;
} Part;

#define OAI_HEAD                                                                                            \
        "{\"id\":\"chatcmpl-123\",\"object\":\"chat.completion.chunk\",\"created\":1694268190,\"model\":"   \
        "\"gpt-4o-mini\",\"system_fingerprint\":\"fp_44709d6fcb\","

/* OpenAI chat, streamed with include_usage (every chunk "usage":null, then the usage chunk). */
static const Part openai_chat_parts[] = {
        {"data: " OAI_HEAD "\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\","
         "\"refusal\":null},\"logprobs\":null,\"finish_reason\":null}],\"usage\":null}\n\n"},
        {"data: " OAI_HEAD "\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hello\"},\"logprobs\":null,"
         "\"finish_reason\":null}],\"usage\":null}\n\n"},
        {"data: " OAI_HEAD "\"choices\":[{\"index\":0,\"delta\":{\"content\":\"!\"},\"logprobs\":null,"
         "\"finish_reason\":null}],\"usage\":null}\n\n"},
        {"data: " OAI_HEAD
         "\"choices\":[{\"index\":0,\"delta\":{\"content\":\" How can I help?\"},\"logprobs\":"
         "null,\"finish_reason\":null}],\"usage\":null}\n\n"},
        {"data: " OAI_HEAD
         "\"choices\":[{\"index\":0,\"delta\":{},\"logprobs\":null,\"finish_reason\":\"stop\"}],"
         "\"usage\":null}\n\n"},
        {"data: " OAI_HEAD
         "\"choices\":[],\"usage\":{\"prompt_tokens\":19,\"completion_tokens\":6,\"total_tokens\":"
         "25,\"prompt_tokens_details\":{\"cached_tokens\":0,\"audio_tokens\":0},\"completion_tokens_"
         "details\":{"
         "\"reasoning_tokens\":0,\"audio_tokens\":0,\"accepted_prediction_tokens\":0,"
         "\"rejected_prediction_tokens\":0}}}\n\n",
         true},
        {"data: [DONE]\n\n"},
};

/* llama.cpp's server without include_usage: timings on the last chunk. */
static const Part llamacpp_parts[] = {
        {"data: "
         "{\"choices\":[{\"finish_reason\":null,\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":"
         "null}}],\"created\":1727869300,\"id\":\"chatcmpl-Xy\",\"model\":\"qwen2.5\",\"system_"
         "fingerprint\":"
         "\"b4000\",\"object\":\"chat.completion.chunk\"}\n\n"},
        {"data: "
         "{\"choices\":[{\"finish_reason\":null,\"index\":0,\"delta\":{\"content\":\"Hi\"}}],\"created\":"
         "1727869300,\"id\":\"chatcmpl-Xy\",\"model\":\"qwen2.5\",\"system_fingerprint\":\"b4000\","
         "\"object\":"
         "\"chat.completion.chunk\"}\n\n"},
        {"data: "
         "{\"choices\":[{\"finish_reason\":null,\"index\":0,\"delta\":{\"reasoning_content\":\"hmm\"}}],"
         "\"created\":1727869300,\"id\":\"chatcmpl-Xy\",\"model\":\"qwen2.5\",\"object\":\"chat.completion."
         "chunk\"}"
         "\n\n"},
        {"data: "
         "{\"choices\":[{\"finish_reason\":\"length\",\"index\":0,\"delta\":{}}],\"created\":1727869300,"
         "\"id\":\"chatcmpl-Xy\",\"model\":\"qwen2.5\",\"system_fingerprint\":\"b4000\",\"object\":"
         "\"chat.completion.chunk\",\"timings\":{\"cache_n\":5,\"prompt_n\":11,\"prompt_ms\":30.5,"
         "\"prompt_per_token_ms\":2.77,\"prompt_per_second\":360.6,\"predicted_n\":3,\"predicted_ms\":20.1,"
         "\"predicted_per_token_ms\":6.7,\"predicted_per_second\":149.2}}\n\n"},
        {"data: [DONE]\n\n"},
};

#define CMPL_HEAD                                                                                           \
        "{\"id\":\"cmpl-7\",\"object\":\"text_completion\",\"created\":1589478378,\"model\":\"gpt-3.5-"     \
        "turbo-instruct\","

static const Part completions_parts[] = {
        {"data: " CMPL_HEAD
         "\"choices\":[{\"text\":\"\\n\\n\",\"index\":0,\"logprobs\":null,\"finish_reason\":null}"
         "],\"usage\":null}\n\n"},
        {"data: " CMPL_HEAD "\"choices\":[{\"text\":\"This is a test\",\"index\":0,\"logprobs\":null,"
         "\"finish_reason\":\"length\"}],\"usage\":null}\n\n"},
        {"data: " CMPL_HEAD
         "\"choices\":[],\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":7,\"total_tokens\":"
         "12}}\n\n",
         true},
        {"data: [DONE]\n\n"},
};

#define RESP_OBJ(status, usage)                                                                             \
        "{\"id\":\"resp_67c9fdcecf488190bdd9a0409de3a1ec07b8b0ad4e5eb654\",\"object\":\"response\","        \
        "\"created_at\":1741290958,\"status\":\"" status "\",\"error\":null,\"incomplete_details\":null,"   \
        "\"instructions\":\"You are a helpful assistant.\",\"max_output_tokens\":null,\"model\":"           \
        "\"gpt-4.1-2025-04-14\",\"output\":[],\"parallel_tool_calls\":true,\"previous_response_id\":null,"  \
        "\"reasoning\":{\"effort\":null,\"summary\":null},\"store\":true,\"temperature\":1.0,\"text\":{"    \
        "\"format\":{\"type\":\"text\"}},\"tool_choice\":\"auto\",\"tools\":[],\"top_p\":1.0,"              \
        "\"truncation\":"                                                                                   \
        "\"disabled\",\"usage\":" usage ",\"user\":null,\"metadata\":{}}"

static const Part responses_parts[] = {
        {"event: response.created\ndata: "
         "{\"type\":\"response.created\",\"sequence_number\":0,\"response\":" RESP_OBJ("in_progress",
                                                                                       "null") "}\n\n"},
        {"event: response.in_progress\ndata: "
         "{\"type\":\"response.in_progress\",\"sequence_number\":1,\"response\":" RESP_OBJ("in_progress",
                                                                                           "null") "}\n\n"},
        {"event: response.output_item.added\ndata: "
         "{\"type\":\"response.output_item.added\",\"sequence_number\":2,"
         "\"output_index\":0,\"item\":{\"id\":\"msg_67c9fdcf37fc8190ba82116e33fb28c507b8b0ad4e5eb654\","
         "\"type\":"
         "\"message\",\"status\":\"in_progress\",\"role\":\"assistant\",\"content\":[]}}\n\n"},
        {"event: response.content_part.added\ndata: "
         "{\"type\":\"response.content_part.added\",\"sequence_number\":"
         "3,\"item_id\":\"msg_67c9fdcf37fc8190ba82116e33fb28c507b8b0ad4e5eb654\",\"output_index\":0,"
         "\"content_index\":0,\"part\":{\"type\":\"output_text\",\"text\":\"\",\"annotations\":[]}}\n\n"},
        {"event: response.output_text.delta\ndata: "
         "{\"type\":\"response.output_text.delta\",\"sequence_number\":4,"
         "\"item_id\":\"msg_67c9fdcf37fc8190ba82116e33fb28c507b8b0ad4e5eb654\",\"output_index\":0,\"content_"
         "index\":"
         "0,\"delta\":\"Hi\"}\n\n"},
        {"event: response.output_text.delta\ndata: "
         "{\"type\":\"response.output_text.delta\",\"sequence_number\":5,"
         "\"item_id\":\"msg_67c9fdcf37fc8190ba82116e33fb28c507b8b0ad4e5eb654\",\"output_index\":0,\"content_"
         "index\":"
         "0,\"delta\":\" there, friend\"}\n\n"},
        {"event: response.output_text.done\ndata: "
         "{\"type\":\"response.output_text.done\",\"sequence_number\":6,"
         "\"item_id\":\"msg_67c9fdcf37fc8190ba82116e33fb28c507b8b0ad4e5eb654\",\"output_index\":0,\"content_"
         "index\":"
         "0,\"text\":\"Hi there, friend\"}\n\n"},
        {"event: response.completed\ndata: "
         "{\"type\":\"response.completed\",\"sequence_number\":7,\"response\":" RESP_OBJ(
                 "completed", "{\"input_tokens\":37,\"input_tokens_details\":{\"cached_tokens\":0},"
                              "\"output_tokens\":11,\"output_tokens_details\":{\"reasoning_tokens\":0},"
                              "\"total_tokens\":48}") "}\n\n"},
};

/* Ollama /api/chat as docs/api.md shows it (done_reason as newer versions add it). */
static const Part ollama_chat_parts[] = {
        {"{\"model\":\"llama3.2\",\"created_at\":\"2023-08-04T08:52:19.385406455-07:00\",\"message\":{"
         "\"role\":"
         "\"assistant\",\"content\":\"The\",\"images\":null},\"done\":false}\n"},
        {"{\"model\":\"llama3.2\",\"created_at\":\"2023-08-04T08:52:19.405406455-07:00\",\"message\":{"
         "\"role\":"
         "\"assistant\",\"content\":\" sky\"},\"done\":false}\n"},
        {"{\"model\":\"llama3.2\",\"created_at\":\"2023-08-04T08:52:19.425406455-07:00\",\"message\":{"
         "\"role\":"
         "\"assistant\",\"content\":\"\",\"thinking\":\"blue light scatters\"},\"done\":false}\n"},
        {"{\"model\":\"llama3.2\",\"created_at\":\"2023-08-04T19:22:45.499127Z\",\"message\":{\"role\":"
         "\"assistant\",\"content\":\"\"},\"done_reason\":\"stop\",\"done\":true,\"total_duration\":"
         "4883583458,"
         "\"load_duration\":1334875,\"prompt_eval_count\":26,\"prompt_eval_duration\":342546000,\"eval_"
         "count\":282,"
         "\"eval_duration\":4535599000}\n"},
};

/* Ollama /api/generate with a cached prompt: prompt_eval_count omitted (0). */
static const Part ollama_generate_parts[] = {
        {"{\"model\":\"llama3.2\",\"created_at\":\"2023-08-04T08:52:19.385406455-07:00\",\"response\":"
         "\"The\","
         "\"done\":false}\n"},
        {"{\"model\":\"llama3.2\",\"created_at\":\"2023-08-04T08:52:19.395406455-07:00\",\"response\":\" "
         "sky is\","
         "\"done\":false}\n"},
        {"{\"model\":\"llama3.2\",\"created_at\":\"2023-08-04T19:22:45.499127Z\",\"response\":\"\",\"done\":"
         "true,"
         "\"done_reason\":\"length\",\"context\":[1,2,3],\"total_duration\":10706818083,\"load_duration\":"
         "6338219291,\"eval_count\":3,\"eval_duration\":4223250000}\n"},
};

/* Anthropic's documented stream, with cache fields. */
static const Part anthropic_parts[] = {
        {"event: message_start\ndata: {\"type\": \"message_start\", \"message\": {\"id\": "
         "\"msg_1nZdL29xx5MUA1yADyHTEsnR8uuvGzszyY\", \"type\": \"message\", \"role\": \"assistant\", "
         "\"content\": "
         "[], \"model\": \"claude-sonnet-4-20250514\", \"stop_reason\": null, \"stop_sequence\": null, "
         "\"usage\": "
         "{\"input_tokens\": 25, \"cache_creation_input_tokens\": 100, \"cache_read_input_tokens\": 2000, "
         "\"output_tokens\": 1}}}\n\n"},
        {"event: content_block_start\ndata: {\"type\": \"content_block_start\", \"index\": 0, "
         "\"content_block\": "
         "{\"type\": \"text\", \"text\": \"\"}}\n\n"},
        {"event: ping\ndata: {\"type\": \"ping\"}\n\n"},
        {"event: content_block_delta\ndata: {\"type\": \"content_block_delta\", \"index\": 0, \"delta\": "
         "{\"type\": "
         "\"text_delta\", \"text\": \"Hello\"}}\n\n"},
        {"event: content_block_delta\ndata: {\"type\": \"content_block_delta\", \"index\": 0, \"delta\": "
         "{\"type\": "
         "\"text_delta\", \"text\": \"! How can I help you today?\"}}\n\n"},
        {"event: content_block_stop\ndata: {\"type\": \"content_block_stop\", \"index\": 0}\n\n"},
        {"event: message_delta\ndata: {\"type\": \"message_delta\", \"delta\": {\"stop_reason\": "
         "\"end_turn\", "
         "\"stop_sequence\":null}, \"usage\": {\"output_tokens\": 15}}\n\n"},
        {"event: message_stop\ndata: {\"type\": \"message_stop\"}\n\n"},
};

/* Anthropic with server tools: message_delta more than once, each cumulative (output 10, then 42),
 * the second with input fields as the newer API sends them. */
static const Part anthropic_cumulative_parts[] = {
        {"event: message_start\ndata: "
         "{\"type\":\"message_start\",\"message\":{\"id\":\"msg_2\",\"type\":\"message\","
         "\"role\":\"assistant\",\"content\":[],\"model\":\"claude-opus-4-1\",\"stop_reason\":null,"
         "\"stop_sequence\":null,\"usage\":{\"input_tokens\":300,\"cache_creation_input_tokens\":0,"
         "\"cache_read_input_tokens\":50,\"output_tokens\":3}}}\n\n"},
        {"event: content_block_start\ndata: "
         "{\"type\":\"content_block_start\",\"index\":0,\"content_block\":{"
         "\"type\":\"thinking\",\"thinking\":\"\",\"signature\":\"\"}}\n\n"},
        {"event: content_block_delta\ndata: "
         "{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":"
         "\"thinking_delta\",\"thinking\":\"Let me search.\"}}\n\n"},
        {"event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":null,"
         "\"stop_sequence\":null},\"usage\":{\"output_tokens\":10}}\n\n"},
        {"event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n"},
        {"event: content_block_start\ndata: "
         "{\"type\":\"content_block_start\",\"index\":1,\"content_block\":{"
         "\"type\":\"tool_use\",\"id\":\"toolu_01\",\"name\":\"search\",\"input\":{}}}\n\n"},
        {"event: content_block_delta\ndata: "
         "{\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":"
         "\"input_json_delta\",\"partial_json\":\"{\\\"q\\\": \\\"weather\\\"}\"}}\n\n"},
        {"event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":1}\n\n"},
        {"event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"max_tokens\","
         "\"stop_sequence\":null},\"usage\":{\"input_tokens\":310,\"cache_creation_input_tokens\":null,"
         "\"cache_read_input_tokens\":50,\"output_tokens\":42}}\n\n"},
        {"event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n"},
};

typedef struct StreamRow {
        const char *name;
        ApiEndpoint ep;
        const Part *parts;
        size_t n_parts;
        bool strip;
        uint64_t input, output; /* the final usage */
        bool length_stop;
        size_t interrupt_after;                 /* parts the interrupted variant keeps */
        uint64_t counted_input, counted_output; /* its usage, counted */
} StreamRow;

#define PARTS(p) p, ELEMENTSOF(p)

static const StreamRow stream_rows[] = {
        /* counted after 4 parts: "" 0, "Hello" 1, "!" 1, " How can I help?" (16 bytes) 4 */
        {"openai chat, usage asked", API_EP_OPENAI_CHAT, PARTS(openai_chat_parts), false, 19, 6, false, 4, 0,
         6},
        {"openai chat, usage injected and stripped", API_EP_OPENAI_CHAT, PARTS(openai_chat_parts), true, 19,
         6, false, 4, 0, 6},
        {"llama.cpp timings", API_EP_OPENAI_CHAT, PARTS(llamacpp_parts), true, 16, 3, true, 3, 0, 2},
        {"completions, usage asked", API_EP_OPENAI_COMPLETIONS, PARTS(completions_parts), false, 5, 7, true,
         1, 0, 1},
        {"completions, stripped", API_EP_OPENAI_COMPLETIONS, PARTS(completions_parts), true, 5, 7, true, 1,
         0, 1},
        /* "Hi" 1, " there, friend" (14) 3 */
        {"responses", API_EP_OPENAI_RESPONSES, PARTS(responses_parts), false, 37, 11, false, 6, 0, 4},
        {"ollama chat", API_EP_OLLAMA_CHAT, PARTS(ollama_chat_parts), false, 26, 282, false, 3, 0,
         1 + 1 + 4},
        {"ollama generate, zero omitted", API_EP_OLLAMA_GENERATE, PARTS(ollama_generate_parts), false, 0, 3,
         true, 2, 0, 2},
        /* input 25 + 100 + 2000; counted "Hello" 1 + "! How can I help you today?" (27) 6 */
        {"anthropic", API_EP_ANTHROPIC_MESSAGES, PARTS(anthropic_parts), false, 2125, 15, false, 5, 2125, 7},
        {"anthropic cumulative message_delta", API_EP_ANTHROPIC_MESSAGES, PARTS(anthropic_cumulative_parts),
         false, 360, 42, true, 3, 350, 3},
};

static char *join_parts(const StreamRow *row, size_t n, bool skip_usage, size_t *ret_len) {
        size_t len = 0;
        char *s;

        for (size_t i = 0; i < n; i++)
                if (!(skip_usage && row->parts[i].usage_chunk))
                        len += strlen(row->parts[i].bytes);
        s = malloc(len + 1);
        ck_assert_ptr_nonnull(s);
        len = 0;
        for (size_t i = 0; i < n; i++)
                if (!(skip_usage && row->parts[i].usage_chunk)) {
                        strcpy(s + len, row->parts[i].bytes);
                        len += strlen(row->parts[i].bytes);
                }
        *ret_len = len;
        return s;
}

/* Feeds in[0..len) to a new stream in pieces of `step` bytes after a first piece of `first` bytes. */
static ApiStream *feed_split(ApiEndpoint ep, bool strip, const char *in, size_t len, size_t first,
                             size_t step, ApiBuffer *out) {
        ApiStream *s = api_stream_new(ep, strip);
        size_t at = 0;

        ck_assert_ptr_nonnull(s);
        while (at < len) {
                size_t n = at == 0 ? first : step;

                if (n > len - at)
                        n = len - at;
                ck_assert_int_eq(api_stream_feed(s, in + at, n, out), 0);
                at += n;
        }
        return s;
}

static void check_usage(const char *name, const ApiStream *s, uint64_t in, uint64_t out, bool final,
                        bool length_stop) {
        ApiUsage u;

        api_stream_usage(s, &u);
        ck_assert_msg(u.input == in, "%s: input %" PRIu64 ", want %" PRIu64, name, u.input, in);
        ck_assert_msg(u.output == out, "%s: output %" PRIu64 ", want %" PRIu64, name, u.output, out);
        ck_assert_msg(u.final == final, "%s: final %d", name, u.final);
        ck_assert_msg(u.length_stop == length_stop, "%s: length_stop %d", name, u.length_stop);
}

START_TEST(test_stream_whole_and_split) {
        const StreamRow *row = &stream_rows[_i];
        size_t len, want_len;
        char *in = join_parts(row, row->n_parts, false, &len);
        char *want = join_parts(row, row->n_parts, row->strip, &want_len);
        ApiBuffer out = {};
        ApiStream *s;

        /* whole */
        s = feed_split(row->ep, row->strip, in, len, len, len, &out);
        ck_assert_msg(out.len == want_len && memcmp(out.data, want, want_len) == 0,
                      "%s: forwarded bytes differ", row->name);
        ck_assert_msg(api_stream_done(s), "%s: not done", row->name);
        check_usage(row->name, s, row->input, row->output, true, row->length_stop);
        s = api_stream_free(s);

        /* split in two at every byte boundary */
        for (size_t cut = 0; cut <= len; cut++) {
                out.len = 0;
                s = api_stream_new(row->ep, row->strip);
                ck_assert_int_eq(api_stream_feed(s, in, cut, &out), 0);
                ck_assert_int_eq(api_stream_feed(s, in + cut, len - cut, &out), 0);
                ck_assert_msg(out.len == want_len && memcmp(out.data, want, want_len) == 0,
                              "%s: split at %zu", row->name, cut);
                ck_assert(api_stream_done(s));
                check_usage(row->name, s, row->input, row->output, true, row->length_stop);
                s = api_stream_free(s);
        }

        /* byte by byte, and in 7-byte pieces */
        for (size_t step = 1; step <= 7; step += 6) {
                out.len = 0;
                s = feed_split(row->ep, row->strip, in, len, step, step, &out);
                ck_assert_msg(out.len == want_len && memcmp(out.data, want, want_len) == 0, "%s: step %zu",
                              row->name, step);
                check_usage(row->name, s, row->input, row->output, true, row->length_stop);
                s = api_stream_free(s);
        }
        api_buffer_done(&out);
        free(in);
        free(want);
}
END_TEST

/* Whole events only: after each byte, the bytes out are a prefix of the events, ending at one's end. */
START_TEST(test_stream_holds_back_partial_events) {
        const StreamRow *row = &stream_rows[_i];
        size_t len, want_len;
        char *in = join_parts(row, row->n_parts, false, &len);
        char *want = join_parts(row, row->n_parts, row->strip, &want_len);
        ApiBuffer out = {};
        ApiStream *s = api_stream_new(row->ep, row->strip);
        size_t boundaries[32], nb = 0, pos = 0;

        boundaries[nb++] = 0;
        for (size_t i = 0; i < row->n_parts; i++)
                if (!(row->strip && row->parts[i].usage_chunk)) {
                        pos += strlen(row->parts[i].bytes);
                        boundaries[nb++] = pos;
                }
        for (size_t i = 0; i < len; i++) {
                bool at_boundary = false;

                ck_assert_int_eq(api_stream_feed(s, in + i, 1, &out), 0);
                for (size_t b = 0; b < nb; b++)
                        at_boundary = at_boundary || boundaries[b] == out.len;
                ck_assert_msg(at_boundary, "%s: %zu bytes out after %zu in", row->name, out.len, i + 1);
                ck_assert(memcmp(out.data ? out.data : "", want, out.len) == 0);
        }
        ck_assert_int_eq(out.len, want_len);
        api_stream_free(s);
        api_buffer_done(&out);
        free(in);
        free(want);
}
END_TEST

/* ---- the cut, and what the clients read in it ---- */

static bool ep_is_openai(ApiEndpoint ep) {
        return ep == API_EP_OPENAI_CHAT || ep == API_EP_OPENAI_COMPLETIONS;
}

typedef struct Collected {
        char names[16][48];
        json_object *data[16]; /* NULL for [DONE] */
        bool done_marker[16];
        size_t n;
} Collected;

static int collect_cb(const SseEvent *ev, void *userdata) {
        Collected *c = userdata;

        ck_assert_msg(c->n < ELEMENTSOF(c->data), "too many events");
        if (!ev->has_data)
                return 0;
        snprintf(c->names[c->n], sizeof(c->names[0]), "%s", ev->event ? ev->event : "");
        if (ev->data_len == 6 && memcmp(ev->data, "[DONE]", 6) == 0)
                c->done_marker[c->n] = true;
        else {
                char *copy = strndup(ev->data, ev->data_len);

                c->data[c->n] = json_tokener_parse(copy);
                ck_assert_msg(c->data[c->n] != NULL, "not JSON: %s", copy);
                free(copy);
        }
        c->n++;
        return 0;
}

static void collect(ApiEndpoint ep, const char *bytes, size_t len, Collected *c) {
        SseParser *p =
                sse_parser_new(ep == API_EP_OLLAMA_CHAT || ep == API_EP_OLLAMA_GENERATE ? SSE_FORMAT_NDJSON
                                                                                        : SSE_FORMAT_SSE,
                               API_STREAM_MAX_EVENT);

        *c = (Collected){};
        ck_assert_int_eq(sse_parser_feed(p, bytes, len, collect_cb, c), 0);
        ck_assert_msg(sse_parser_pending(p) == 0, "the cut ends mid-event");
        sse_parser_free(p);
}

static void collected_done(Collected *c) {
        for (size_t i = 0; i < c->n; i++)
                json_object_put(c->data[i]);
}

static json_object *path(json_object *o, const char *p1, const char *p2) {
        json_object *v = NULL;

        if (!json_object_object_get_ex(o, p1, &v))
                return NULL;
        if (p2 && !json_object_object_get_ex(v, p2, &v))
                return NULL;
        return v;
}

static const char *path_str(json_object *o, const char *p1, const char *p2) {
        json_object *v = path(o, p1, p2);

        return json_object_is_type(v, json_type_string) ? json_object_get_string(v) : "(not a string)";
}

static int64_t path_int(json_object *o, const char *p1, const char *p2) {
        json_object *v = path(o, p1, p2);

        ck_assert_msg(json_object_is_type(v, json_type_int), "%s.%s: not an integer", p1, p2 ? p2 : "");
        return json_object_get_int64(v);
}

/* What openai-python's ChatCompletionChunk / Completion and openai-node's stream read: id, object,
 * created, model, choices with index and finish_reason "length" (and delta for chat). */
static void check_openai_cut(const StreamRow *row, Collected *c, size_t kept, bool had_finish, uint64_t in,
                             uint64_t out) {
        bool chat = row->ep == API_EP_OPENAI_CHAT;
        size_t i = 0;

        if (!had_finish) {
                json_object *ch = path(c->data[0], "choices", NULL), *c0;

                ck_assert_msg(c->n > i && c->data[i], "%s: no final chunk", row->name);
                /* the stream's own id, created and model, made up when nothing came */
                ck_assert_str_eq(path_str(c->data[0], "id", NULL),
                                 kept == 0 ? (chat ? "chatcmpl-tokenbudget" : "cmpl-tokenbudget")
                                 : row->parts == llamacpp_parts ? "chatcmpl-Xy"
                                 : chat                         ? "chatcmpl-123"
                                                                : "cmpl-7");
                ck_assert_str_eq(path_str(c->data[0], "object", NULL),
                                 chat ? "chat.completion.chunk" : "text_completion");
                if (kept)
                        ck_assert_int_gt(path_int(c->data[0], "created", NULL), 0);
                else
                        ck_assert_int_eq(path_int(c->data[0], "created", NULL), 0);
                ck_assert(json_object_is_type(path(c->data[0], "model", NULL), json_type_string));
                ck_assert(json_object_is_type(ch, json_type_array) && json_object_array_length(ch) == 1);
                c0 = json_object_array_get_idx(ch, 0);
                ck_assert_int_eq(path_int(c0, "index", NULL), 0);
                ck_assert_str_eq(path_str(c0, "finish_reason", NULL), "length");
                if (row->ep == API_EP_OPENAI_CHAT)
                        ck_assert(json_object_is_type(path(c0, "delta", NULL), json_type_object));
                /* the first delta of a choice carries its role (openai-node's accumulator wants it) */
                if (chat && kept == 0)
                        ck_assert_str_eq(path_str(c0, "delta", "role"), "assistant");
                else if (chat)
                        ck_assert_ptr_null(path(path(c0, "delta", NULL), "role", NULL));
                else
                        ck_assert_str_eq(path_str(c0, "text", NULL), "");
                i++;
        }
        if (!row->strip) {
                ck_assert_msg(c->n > i && c->data[i], "%s: no usage chunk", row->name);
                ck_assert_int_eq(json_object_array_length(path(c->data[i], "choices", NULL)), 0);
                ck_assert_int_eq(path_int(c->data[i], "usage", "prompt_tokens"), (int64_t)in);
                ck_assert_int_eq(path_int(c->data[i], "usage", "completion_tokens"), (int64_t)out);
                ck_assert_int_eq(path_int(c->data[i], "usage", "total_tokens"), (int64_t)(in + out));
                i++;
        }
        ck_assert_msg(c->n == i + 1 && c->done_marker[i], "%s: [DONE] missing or not last", row->name);
}

/* What anthropic-sdk-python's accumulate_event() and the TypeScript MessageStream read: the event name
 * equal to data.type, message_delta's delta.stop_reason and usage.output_tokens, message_stop last. */
static void check_anthropic_cut(const StreamRow *row, Collected *c, size_t kept, uint64_t out) {
        const char *want[4];
        size_t n = 0;

        if (kept == 0)
                want[n++] = "message_start";
        if (row->parts == anthropic_parts ? kept >= 2 && kept < 6 : kept >= 2 && kept < 5)
                want[n++] = "content_block_stop";
        want[n++] = "message_delta";
        want[n++] = "message_stop";
        ck_assert_msg(c->n == n, "%s: %zu events, want %zu", row->name, c->n, n);
        for (size_t i = 0; i < n; i++) {
                ck_assert_str_eq(c->names[i], want[i]);
                ck_assert_str_eq(path_str(c->data[i], "type", NULL), want[i]);
                if (strcmp(want[i], "message_start") == 0) {
                        ck_assert_str_eq(path_str(c->data[i], "message", "role"), "assistant");
                        ck_assert(json_object_is_type(path(c->data[i], "message", "content"),
                                                      json_type_array));
                        ck_assert(
                                json_object_is_type(path(c->data[i], "message", "usage"), json_type_object));
                } else if (strcmp(want[i], "content_block_stop") == 0)
                        ck_assert_int_eq(path_int(c->data[i], "index", NULL),
                                         row->parts == anthropic_parts ? 0 : 0);
                else if (strcmp(want[i], "message_delta") == 0) {
                        ck_assert_str_eq(path_str(c->data[i], "delta", "stop_reason"), "max_tokens");
                        ck_assert_int_eq(path_int(c->data[i], "usage", "output_tokens"), (int64_t)out);
                }
        }
}

/* What ollama-js and ollama-python read: one JSON object a line, done true, done_reason, the counts. */
static void check_ollama_cut(const StreamRow *row, const ApiBuffer *b, Collected *c, uint64_t in,
                             uint64_t out) {
        json_object *o;

        ck_assert_msg(c->n == 1, "%s: %zu objects", row->name, c->n);
        ck_assert(b->len > 0 && b->data[b->len - 1] == '\n' && !memchr(b->data, '\n', b->len - 1));
        o = c->data[0];
        ck_assert_str_eq(path_str(o, "model", NULL), "llama3.2");
        ck_assert(strncmp(path_str(o, "created_at", NULL), "2023-08-04T", 11) == 0);
        ck_assert(json_object_get_boolean(path(o, "done", NULL)));
        ck_assert_str_eq(path_str(o, "done_reason", NULL), "length");
        if (row->ep == API_EP_OLLAMA_CHAT) {
                ck_assert_str_eq(path_str(o, "message", "role"), "assistant");
                ck_assert_str_eq(path_str(o, "message", "content"), "");
        } else
                ck_assert_str_eq(path_str(o, "response", NULL), "");
        ck_assert(in ? path_int(o, "prompt_eval_count", NULL) == (int64_t)in
                     : !path(o, "prompt_eval_count", NULL));
        ck_assert(out ? path_int(o, "eval_count", NULL) == (int64_t)out : !path(o, "eval_count", NULL));
}

/* What openai-node's ResponseStream reads: response.incomplete with the response, its status, reason
 * and usage, and a sequence number after the last. */
static void check_responses_cut(const StreamRow *row, Collected *c, size_t kept, uint64_t in, uint64_t out) {
        json_object *o;

        /* nothing came: a response.created first (the accumulators want it before anything else) */
        ck_assert_int_eq(c->n, kept ? 1 : 2);
        if (!kept) {
                ck_assert_str_eq(c->names[0], "response.created");
                ck_assert_str_eq(path_str(c->data[0], "type", NULL), "response.created");
                ck_assert_int_eq(path_int(c->data[0], "sequence_number", NULL), 0);
                ck_assert_str_eq(path_str(c->data[0], "response", "status"), "in_progress");
                ck_assert_str_eq(path_str(c->data[0], "response", "id"), "resp_tokenbudget");
        }
        o = c->data[kept ? 0 : 1];
        ck_assert_str_eq(c->names[kept ? 0 : 1], "response.incomplete");
        ck_assert_str_eq(path_str(o, "type", NULL), "response.incomplete");
        ck_assert_int_eq(path_int(o, "sequence_number", NULL), kept ? (int64_t)kept : 1);
        ck_assert_str_eq(path_str(o, "response", "status"), "incomplete");
        ck_assert_str_eq(path_str(path(o, "response", NULL), "incomplete_details", "reason"),
                         "max_output_tokens");
        ck_assert_str_eq(path_str(o, "response", "object"), "response");
        ck_assert(json_object_is_type(path(o, "response", "output"), json_type_array));
        if (kept)
                ck_assert_str_eq(path_str(o, "response", "id"),
                                 "resp_67c9fdcecf488190bdd9a0409de3a1ec07b8b0ad4e5eb654");
        ck_assert_int_eq(path_int(path(o, "response", NULL), "usage", "input_tokens"), (int64_t)in);
        ck_assert_int_eq(path_int(path(o, "response", NULL), "usage", "output_tokens"), (int64_t)out);
        ck_assert_int_eq(path_int(path(o, "response", NULL), "usage", "total_tokens"), (int64_t)(in + out));
        /* the output the client saw as deltas, in the response, as OpenAI's incomplete responses have it */
        if (kept >= 6) {
                json_object *item = json_object_array_get_idx(path(o, "response", "output"), 0), *part;

                ck_assert_int_eq(json_object_array_length(path(o, "response", "output")), 1);
                ck_assert_str_eq(path_str(item, "type", NULL), "message");
                ck_assert_str_eq(path_str(item, "status", NULL), "incomplete");
                part = json_object_array_get_idx(path(item, "content", NULL), 0);
                ck_assert_str_eq(path_str(part, "type", NULL), "output_text");
                ck_assert_str_eq(path_str(part, "text", NULL), "Hi there, friend");
        } else
                ck_assert_int_eq(json_object_array_length(path(o, "response", "output")), 0);
}

static void check_cut(const StreamRow *row, size_t kept, bool had_finish, uint64_t in, uint64_t out) {
        size_t len;
        char *in_bytes = join_parts(row, kept, false, &len);
        ApiBuffer fwd = {}, cut = {}, again = {};
        ApiStream *s = feed_split(row->ep, row->strip, in_bytes, len, len, len, &fwd), *s2;
        Collected c;

        ck_assert_msg(!api_stream_done(s), "%s: done after %zu parts", row->name, kept);
        check_usage(row->name, s, in, out, false, false);
        ck_assert_int_eq(api_stream_cut(s, &cut), 0);
        ck_assert_msg(cut.len > 0, "%s: empty cut", row->name);
        collect(row->ep, cut.data, cut.len, &c);
        switch (row->ep) {
        case API_EP_OPENAI_CHAT:
        case API_EP_OPENAI_COMPLETIONS:
                check_openai_cut(row, &c, kept, had_finish, in, out);
                break;
        case API_EP_ANTHROPIC_MESSAGES:
                check_anthropic_cut(row, &c, kept, out);
                break;
        case API_EP_OLLAMA_CHAT:
        case API_EP_OLLAMA_GENERATE:
                check_ollama_cut(row, &cut, &c, in, out);
                break;
        case API_EP_OPENAI_RESPONSES:
                check_responses_cut(row, &c, kept, in, out);
                break;
        default:
                ck_abort();
        }
        collected_done(&c);

        /* what the client got, forwarded and cut, is a whole stream of that API: a new stream accepts it,
         * ends, and counts what the cut said */
        ck_assert_int_eq(api_buffer_append(&fwd, cut.data, cut.len), 0);
        s2 = feed_split(row->ep, false, fwd.data, fwd.len, fwd.len, fwd.len, &again);
        ck_assert_msg(api_stream_done(s2), "%s: the cut stream does not end", row->name);
        ck_assert_msg(again.len == fwd.len && memcmp(again.data, fwd.data, fwd.len) == 0, "%s: re-fed",
                      row->name);
        if (!(ep_is_openai(row->ep) && row->strip)) {
                ApiUsage u;

                api_stream_usage(s2, &u);
                ck_assert_msg(u.output == out && u.final, "%s: the cut says %" PRIu64, row->name, u.output);
        }
        api_stream_free(s2);

        /* once cut, nothing more goes out; a second cut adds nothing */
        cut.len = 0;
        ck_assert_int_eq(api_stream_feed(s, "data: x\n\n", 9, &cut), 0);
        ck_assert_int_eq(api_stream_cut(s, &cut), 0);
        ck_assert_int_eq(cut.len, 0);
        api_stream_free(s);
        api_buffer_done(&fwd);
        api_buffer_done(&cut);
        api_buffer_done(&again);
        free(in_bytes);
}

START_TEST(test_stream_interrupted_and_cut) {
        const StreamRow *row = &stream_rows[_i];

        check_cut(row, row->interrupt_after, false, row->counted_input, row->counted_output);
        /* cut before anything came: made up from nothing, still what the clients accept */
        if (row->ep == API_EP_OLLAMA_CHAT || row->ep == API_EP_OLLAMA_GENERATE)
                return; /* check_ollama_cut wants the model the stream named */
        check_cut(row, 0, false, 0, 0);
}
END_TEST

/* The interrupted openai streams of the rows keep their finish chunk out; one that saw it gets no second. */
START_TEST(test_stream_cut_after_finish) {
        const StreamRow *row = &stream_rows[0];

        check_cut(row, 5, true, 0, 6);
}
END_TEST

START_TEST(test_stream_cut_after_done) {
        const StreamRow *row = &stream_rows[_i];
        size_t len;
        char *in = join_parts(row, row->n_parts, false, &len);
        ApiBuffer out = {};
        ApiStream *s = feed_split(row->ep, row->strip, in, len, len, len, &out);

        out.len = 0;
        ck_assert_int_eq(api_stream_cut(s, &out), 0);
        ck_assert_msg(out.len == 0, "%s: cut after the end adds %zu bytes", row->name, out.len);
        api_stream_free(s);
        api_buffer_done(&out);
        free(in);
}
END_TEST

/* ---- framing ---- */

START_TEST(test_sse_line_endings) {
        /* the same two events with CRLF, bare CR and mixed terminators, a comment and an id field */
        static const char *const variants[] = {
                "data: {\"type\":\"ping\"}\r\n\r\n: keep-alive\r\n\r\nid: 7\r\nevent: message_stop\r\ndata: "
                "{\"type\":\"message_stop\"}\r\n\r\n",
                "data: {\"type\":\"ping\"}\r\r: keep-alive\r\rid: 7\revent: message_stop\rdata: "
                "{\"type\":\"message_stop\"}\r\r",
                "data:{\"type\":\"ping\"}\n\r\n: keep-alive\r\n\nid: 7\nevent: message_stop\r\ndata: "
                "{\"type\":\"message_stop\"}\r\r\n",
        };

        for (size_t v = 0; v < ELEMENTSOF(variants); v++) {
                size_t len = strlen(variants[v]);

                for (size_t cut = 0; cut <= len; cut++) {
                        ApiBuffer out = {};
                        ApiStream *s = api_stream_new(API_EP_ANTHROPIC_MESSAGES, false);

                        ck_assert_int_eq(api_stream_feed(s, variants[v], cut, &out), 0);
                        ck_assert_int_eq(api_stream_feed(s, variants[v] + cut, len - cut, &out), 0);
                        ck_assert_msg(api_stream_done(s), "variant %zu split at %zu", v, cut);
                        /* every byte forwarded, a lone '\n' after a split CR included */
                        ck_assert_msg(out.len == len && memcmp(out.data, variants[v], len) == 0,
                                      "variant %zu split at %zu: %zu bytes", v, cut, out.len);
                        api_stream_free(s);
                        api_buffer_done(&out);
                }
        }
}
END_TEST

typedef struct CountCtx {
        size_t events;
        char data[64];
} CountCtx;

static int count_cb(const SseEvent *ev, void *userdata) {
        CountCtx *c = userdata;

        c->events++;
        snprintf(c->data, sizeof(c->data), "%.*s", (int)ev->data_len, ev->data);
        return 0;
}

START_TEST(test_sse_fields) {
        /* multi-line data joins with '\n'; "data" without a colon is an empty line of data; one space
         * after the colon is dropped, a second kept; unknown fields ignored */
        static const char text[] = "data: a\ndata\ndata:  b\nfoo: bar\nretry: 10\n\n";
        CountCtx c = {};
        SseParser *p = sse_parser_new(SSE_FORMAT_SSE, 100);

        ck_assert_int_eq(sse_parser_feed(p, text, strlen(text), count_cb, &c), 0);
        ck_assert_int_eq(c.events, 1);
        ck_assert_str_eq(c.data, "a\n\n b");
        sse_parser_free(p);
        ck_assert_ptr_null(sse_parser_free(NULL));
}
END_TEST

START_TEST(test_stream_limits) {
        size_t big = API_STREAM_MAX_EVENT + 16;
        char *line = malloc(big);
        ApiBuffer out = {};
        ApiStream *s;

        /* an SSE line that never ends */
        memset(line, 'x', big);
        memcpy(line, "data: ", 6);
        s = api_stream_new(API_EP_OPENAI_CHAT, false);
        ck_assert_int_eq(api_stream_feed(s, line, API_STREAM_MAX_EVENT / 2, &out), 0);
        ck_assert_int_eq(
                api_stream_feed(s, line + API_STREAM_MAX_EVENT / 2, big - API_STREAM_MAX_EVENT / 2, &out),
                -E2BIG);
        ck_assert_int_eq(out.len, 0);
        api_stream_free(s);

        /* an SSE event of many short lines */
        s = api_stream_new(API_EP_ANTHROPIC_MESSAGES, false);
        for (size_t i = 0; i + 8 < big; i += 8)
                memcpy(line + i, ": 12345\n", 8);
        ck_assert_int_eq(api_stream_feed(s, line, big, &out), -E2BIG);
        api_stream_free(s);

        /* an NDJSON line */
        memset(line, ' ', big);
        s = api_stream_new(API_EP_OLLAMA_CHAT, false);
        ck_assert_int_eq(api_stream_feed(s, line, big, &out), -E2BIG);
        api_stream_free(s);

        /* just under the limit passes */
        s = api_stream_new(API_EP_OLLAMA_CHAT, false);
        memset(line, ' ', API_STREAM_MAX_EVENT);
        line[0] = '{';
        line[API_STREAM_MAX_EVENT - 2] = '}';
        line[API_STREAM_MAX_EVENT - 1] = '\n';
        ck_assert_int_eq(api_stream_feed(s, line, API_STREAM_MAX_EVENT, &out), 0);
        ck_assert_int_eq(out.len, API_STREAM_MAX_EVENT);
        api_stream_free(s);
        api_buffer_done(&out);
        free(line);
}
END_TEST

typedef struct BadRow {
        const char *name;
        ApiEndpoint ep;
        const char *bytes;
        int ret;
        size_t forwarded; /* bytes out before the failure */
} BadRow;

static const BadRow bad_rows[] = {
        {"openai data not JSON", API_EP_OPENAI_CHAT, "data: hello\n\n", -EBADMSG, 0},
        {"openai data an array", API_EP_OPENAI_CHAT, "data: [1]\n\n", -EBADMSG, 0},
        {"openai empty data", API_EP_OPENAI_CHAT, "data:\n\n", -EBADMSG, 0},
        {"openai choices an object", API_EP_OPENAI_CHAT, "data: {\"choices\":{}}\n\n", -EBADMSG, 0},
        {"openai a choice a string", API_EP_OPENAI_COMPLETIONS, "data: {\"choices\":[\"x\"]}\n\n", -EBADMSG,
         0},
        {"openai usage a string count", API_EP_OPENAI_CHAT,
         "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":\"1\",\"completion_tokens\":2}}\n\n", -EBADMSG,
         0},
        {"openai data after [DONE]", API_EP_OPENAI_CHAT, "data: [DONE]\n\ndata: {\"choices\":[]}\n\n",
         -EBADMSG, 14},
        {"openai an error chunk is forwarded", API_EP_OPENAI_CHAT,
         "data: {\"error\":{\"message\":\"overloaded\",\"type\":\"server_error\"}}\n\n", 0, 64},
        {"anthropic no type", API_EP_ANTHROPIC_MESSAGES, "event: ping\ndata: {}\n\n", -EBADMSG, 0},
        {"anthropic [DONE] is not Anthropic's", API_EP_ANTHROPIC_MESSAGES, "data: [DONE]\n\n", -EBADMSG, 0},
        {"anthropic message_start without a message", API_EP_ANTHROPIC_MESSAGES,
         "event: message_start\ndata: {\"type\":\"message_start\"}\n\n", -EBADMSG, 0},
        {"anthropic message_delta without output_tokens", API_EP_ANTHROPIC_MESSAGES,
         "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{},\"usage\":{}}\n\n", -EBADMSG,
         0},
        {"anthropic negative output", API_EP_ANTHROPIC_MESSAGES,
         "event: message_delta\ndata: "
         "{\"type\":\"message_delta\",\"delta\":{},\"usage\":{\"output_tokens\":-5}}\n\n",
         -EBADMSG, 0},
        {"anthropic unknown event types pass", API_EP_ANTHROPIC_MESSAGES,
         "event: future_event\ndata: {\"type\":\"future_event\"}\n\n", 0, 51},
        {"anthropic error event ends it", API_EP_ANTHROPIC_MESSAGES,
         "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":"
         "\"Overloaded\"}}\n\nevent: ping\ndata: {\"type\":\"ping\"}\n\n",
         -EBADMSG, 96},
        {"responses no type", API_EP_OPENAI_RESPONSES, "data: {\"sequence_number\":1}\n\n", -EBADMSG, 0},
        {"responses completed without response", API_EP_OPENAI_RESPONSES,
         "data: {\"type\":\"response.completed\"}\n\n", -EBADMSG, 0},
        {"ollama not JSON", API_EP_OLLAMA_CHAT, "hello\n", -EBADMSG, 0},
        {"ollama done a string", API_EP_OLLAMA_CHAT, "{\"done\":\"yes\"}\n", -EBADMSG, 0},
        {"ollama a count a string", API_EP_OLLAMA_GENERATE, "{\"done\":true,\"eval_count\":\"3\"}\n",
         -EBADMSG, 0},
        {"ollama after done", API_EP_OLLAMA_GENERATE, "{\"done\":true}\n{\"done\":false}\n", -EBADMSG, 14},
        {"ollama an error object ends it", API_EP_OLLAMA_CHAT, "{\"error\":\"model 'x' not found\"}\n", 0,
         32},
        {"ollama blank lines pass", API_EP_OLLAMA_CHAT, "\n \r\n", 0, 4},
};

START_TEST(test_stream_bad) {
        const BadRow *row = &bad_rows[_i];
        ApiBuffer out = {};
        ApiStream *s = api_stream_new(row->ep, false);
        int r = api_stream_feed(s, row->bytes, strlen(row->bytes), &out);

        ck_assert_msg(r == row->ret, "%s: %d", row->name, r);
        ck_assert_msg(out.len == row->forwarded, "%s: %zu bytes forwarded", row->name, out.len);
        api_stream_free(s);
        api_buffer_done(&out);
}
END_TEST

START_TEST(test_stream_new_refuses_none) {
        ck_assert_ptr_null(api_stream_new(API_EP_NONE, false));
        ck_assert_ptr_null(api_stream_new(_API_EP_MAX, false));
        ck_assert_ptr_null(api_stream_free(NULL));
}
END_TEST

/* vLLM's continuous_usage_stats: cumulative usage on every chunk; the last counts, and no chunk with
 * choices is stripped. */
START_TEST(test_stream_continuous_usage) {
        static const char text[] = "data: "
                                   "{\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"created\":1,"
                                   "\"model\":\"m\",\"choices\":[{"
                                   "\"index\":0,\"delta\":{\"content\":\"a\"}}],\"usage\":{\"prompt_"
                                   "tokens\":9,\"completion_tokens\":1,"
                                   "\"total_tokens\":10}}\n\n"
                                   "data: "
                                   "{\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"created\":1,"
                                   "\"model\":\"m\",\"choices\":[{"
                                   "\"index\":0,\"delta\":{\"content\":\"b\"},\"finish_reason\":\"stop\"}],"
                                   "\"usage\":{\"prompt_tokens\":"
                                   "9,\"completion_tokens\":2,\"total_tokens\":11}}\n\n"
                                   "data: [DONE]\n\n";
        ApiBuffer out = {};
        ApiStream *s = api_stream_new(API_EP_OPENAI_CHAT, true);

        ck_assert_int_eq(api_stream_feed(s, text, strlen(text), &out), 0);
        ck_assert_int_eq(out.len, strlen(text));
        check_usage("continuous", s, 9, 2, true, false);
        api_stream_free(s);
        api_buffer_done(&out);
}
END_TEST

/* Two choices (n = 2): the cut closes both. */
START_TEST(test_stream_cut_two_choices) {
        static const char text[] = "data: "
                                   "{\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"created\":5,"
                                   "\"model\":\"m\",\"choices\":[{"
                                   "\"index\":0,\"delta\":{\"content\":\"a\"}}]}\n\n"
                                   "data: "
                                   "{\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"created\":5,"
                                   "\"model\":\"m\",\"choices\":[{"
                                   "\"index\":1,\"delta\":{\"content\":\"b\"}}]}\n\n";
        ApiBuffer out = {};
        ApiStream *s = api_stream_new(API_EP_OPENAI_CHAT, true);
        Collected c;
        json_object *ch;

        ck_assert_int_eq(api_stream_feed(s, text, strlen(text), &out), 0);
        out.len = 0;
        ck_assert_int_eq(api_stream_cut(s, &out), 0);
        collect(API_EP_OPENAI_CHAT, out.data, out.len, &c);
        ck_assert_int_eq(c.n, 2);
        ch = path(c.data[0], "choices", NULL);
        ck_assert_int_eq(json_object_array_length(ch), 2);
        ck_assert_int_eq(path_int(json_object_array_get_idx(ch, 1), "index", NULL), 1);
        ck_assert_str_eq(path_str(json_object_array_get_idx(ch, 1), "finish_reason", NULL), "length");
        ck_assert(c.done_marker[1]);
        collected_done(&c);
        api_stream_free(s);
        api_buffer_done(&out);
}
END_TEST

/* Responses: a function call cut mid-arguments, after a finished message: both in the cut's output,
 * the message as it was done, the call with the arguments so far and marked incomplete. */
START_TEST(test_responses_cut_output) {
        static const char text[] =
                "event: response.created\ndata: "
                "{\"type\":\"response.created\",\"sequence_number\":0,\"response\":{"
                "\"id\":\"resp_1\",\"object\":\"response\",\"created_at\":1,\"status\":\"in_progress\","
                "\"model\":"
                "\"gpt-4.1\",\"output\":[],\"usage\":null}}\n\n"
                "event: response.output_item.added\ndata: "
                "{\"type\":\"response.output_item.added\",\"sequence_number\":1,"
                "\"output_index\":0,\"item\":{\"id\":\"msg_1\",\"type\":\"message\",\"status\":\"in_"
                "progress\","
                "\"role\":\"assistant\",\"content\":[]}}\n\n"
                "event: response.content_part.added\ndata: {\"type\":\"response.content_part.added\","
                "\"sequence_number\":2,\"item_id\":\"msg_1\",\"output_index\":0,\"content_index\":0,"
                "\"part\":{"
                "\"type\":\"output_text\",\"text\":\"\",\"annotations\":[]}}\n\n"
                "event: response.output_text.delta\ndata: "
                "{\"type\":\"response.output_text.delta\",\"sequence_number\":"
                "3,\"item_id\":\"msg_1\",\"output_index\":0,\"content_index\":0,\"delta\":\"Checking.\"}\n\n"
                "event: response.output_item.done\ndata: "
                "{\"type\":\"response.output_item.done\",\"sequence_number\":4,"
                "\"output_index\":0,\"item\":{\"id\":\"msg_1\",\"type\":\"message\",\"status\":"
                "\"completed\","
                "\"role\":\"assistant\",\"content\":[{\"type\":\"output_text\",\"text\":\"Checking.\","
                "\"annotations\":[]}]}}\n\n"
                "event: response.output_item.added\ndata: "
                "{\"type\":\"response.output_item.added\",\"sequence_number\":5,"
                "\"output_index\":1,\"item\":{\"id\":\"fc_1\",\"type\":\"function_call\",\"status\":"
                "\"in_progress\",\"arguments\":\"\",\"call_id\":\"call_1\",\"name\":\"get_weather\"}}\n\n"
                "event: response.function_call_arguments.delta\ndata: {\"type\":"
                "\"response.function_call_arguments.delta\",\"sequence_number\":6,\"item_id\":\"fc_1\","
                "\"output_index\":1,\"delta\":\"{\\\"city\\\":\"}\n\n"
                "event: response.function_call_arguments.delta\ndata: {\"type\":"
                "\"response.function_call_arguments.delta\",\"sequence_number\":7,\"item_id\":\"fc_1\","
                "\"output_index\":1,\"delta\":\" \\\"Par\"}\n\n";
        ApiBuffer out = {};
        ApiStream *s = api_stream_new(API_EP_OPENAI_RESPONSES, false);
        json_object *resp, *item;
        Collected c;

        ck_assert_int_eq(api_stream_feed(s, text, strlen(text), &out), 0);
        ck_assert_int_eq(out.len, strlen(text));
        out.len = 0;
        ck_assert_int_eq(api_stream_cut(s, &out), 0);
        collect(API_EP_OPENAI_RESPONSES, out.data, out.len, &c);
        ck_assert_int_eq(c.n, 1);
        ck_assert_int_eq(path_int(c.data[0], "sequence_number", NULL), 8);
        resp = path(c.data[0], "response", NULL);
        ck_assert_str_eq(path_str(resp, "id", NULL), "resp_1");
        ck_assert_int_eq(json_object_array_length(path(resp, "output", NULL)), 2);
        item = json_object_array_get_idx(path(resp, "output", NULL), 0);
        ck_assert_str_eq(path_str(item, "status", NULL), "completed");
        ck_assert_str_eq(path_str(json_object_array_get_idx(path(item, "content", NULL), 0), "text", NULL),
                         "Checking.");
        item = json_object_array_get_idx(path(resp, "output", NULL), 1);
        ck_assert_str_eq(path_str(item, "type", NULL), "function_call");
        ck_assert_str_eq(path_str(item, "status", NULL), "incomplete");
        ck_assert_str_eq(path_str(item, "arguments", NULL), "{\"city\": \"Par");
        ck_assert_str_eq(path_str(item, "name", NULL), "get_weather");
        collected_done(&c);
        api_stream_free(s);
        api_buffer_done(&out);
}
END_TEST

/* The prompt estimate the caller sets goes into the cut's counts when the stream gave no input; never
 * into api_stream_usage(), and not over the stream's own input. */
START_TEST(test_stream_cut_input_estimate) {
        static const struct {
                size_t row, kept;
                uint64_t want;
        } cases[] = {
                {0, 4, 19},   /* openai chat: the usage chunk's prompt_tokens */
                {5, 6, 19},   /* responses: usage.input_tokens */
                {6, 3, 19},   /* ollama: prompt_eval_count */
                {8, 0, 19},   /* anthropic before message_start: the made-up one's input_tokens */
                {8, 5, 2125}, /* anthropic after message_start: its own input */
        };

        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                const StreamRow *row = &stream_rows[cases[i].row];
                size_t len;
                char *in = join_parts(row, cases[i].kept, false, &len);
                ApiBuffer out = {}, again = {};
                ApiStream *s = feed_split(row->ep, row->strip, in, len, len, len, &out), *s2;
                ApiUsage u;

                api_stream_set_input_estimate(s, 19);
                api_stream_usage(s, &u);
                ck_assert_uint_eq(u.input, cases[i].kept && row->ep == API_EP_ANTHROPIC_MESSAGES ? 2125 : 0);
                ck_assert_int_eq(api_stream_cut(s, &out), 0);
                /* what the cut said, read back by a stream of the same API */
                s2 = feed_split(row->ep, false, out.data, out.len, out.len, out.len, &again);
                api_stream_usage(s2, &u);
                ck_assert_msg(u.input == cases[i].want, "case %zu: %" PRIu64, i, u.input);
                api_stream_free(s);
                api_stream_free(s2);
                api_buffer_done(&out);
                api_buffer_done(&again);
                free(in);
        }
}
END_TEST

/* ---- error bodies ---- */

typedef struct ErrorRow {
        ApiEndpoint ep;
        int status;
        const char *type, *message;
        const char *want;
} ErrorRow;

static const ErrorRow error_rows[] = {
        {API_EP_OPENAI_CHAT, 429, NULL, "budget exceeded: user alice, 1000 tokens per hour",
         "{\"error\":{\"message\":\"budget exceeded: user alice, 1000 tokens per hour\",\"type\":"
         "\"rate_limit_error\",\"param\":null,\"code\":\"rate_limit_exceeded\"}}"},
        {API_EP_OPENAI_RESPONSES, 400, NULL, "max_tokens: not an integer",
         "{\"error\":{\"message\":\"max_tokens: not an "
         "integer\",\"type\":\"invalid_request_error\",\"param\":null,"
         "\"code\":null}}"},
        {API_EP_OPENAI_COMPLETIONS, 502, NULL, "upstream unreachable",
         "{\"error\":{\"message\":\"upstream "
         "unreachable\",\"type\":\"server_error\",\"param\":null,\"code\":null}}"},
        {API_EP_NONE, 503, "budget_unavailable", "the tokenbudget daemon is down",
         "{\"error\":{\"message\":\"the tokenbudget daemon is "
         "down\",\"type\":\"budget_unavailable\",\"param\":null,"
         "\"code\":null}}"},
        {API_EP_ANTHROPIC_MESSAGES, 429, NULL, "budget \"x\" exceeded",
         "{\"type\":\"error\",\"error\":{\"type\":\"rate_limit_error\",\"message\":\"budget \\\"x\\\" "
         "exceeded\"}}"},
        {API_EP_ANTHROPIC_MESSAGES, 413, NULL, "body over 10 MiB",
         "{\"type\":\"error\",\"error\":{\"type\":\"request_too_large\",\"message\":\"body over 10 MiB\"}}"},
        {API_EP_ANTHROPIC_MESSAGES, 503, NULL, "daemon down",
         "{\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"daemon down\"}}"},
        {API_EP_ANTHROPIC_MESSAGES, 502, NULL, "upstream down",
         "{\"type\":\"error\",\"error\":{\"type\":\"api_error\",\"message\":\"upstream down\"}}"},
        {API_EP_OLLAMA_CHAT, 429, "rate_limit_error", "budget exceeded \xc3\xa9/\n",
         "{\"error\":\"budget exceeded \xc3\xa9/\\n\"}"},
        {API_EP_OLLAMA_GENERATE, 400, NULL, NULL, "{\"error\":\"\"}"},
};

START_TEST(test_error_body) {
        const ErrorRow *row = &error_rows[_i];
        char *body = api_error_body(row->ep, row->status, row->type, row->message);

        ck_assert_ptr_nonnull(body);
        ck_assert_msg(strcmp(body, row->want) == 0, "row %d: %s", _i, body);
        free(body);
}
END_TEST

static Suite *api_suite(void) {
        Suite *s = suite_create("proxy-api");
        TCase *tc = tcase_create("api");

        tcase_set_timeout(tc, 120);
        tcase_add_loop_test(tc, test_endpoint, 0, (int)ELEMENTSOF(endpoint_rows));
        tcase_add_test(tc, test_kind_names);
        tcase_add_loop_test(tc, test_request_parse, 0, (int)ELEMENTSOF(parse_rows));
        tcase_add_loop_test(tc, test_request_rewrite, 0, (int)ELEMENTSOF(rewrite_rows));
        tcase_add_test(tc, test_request_rewrite_misuse);
        tcase_add_loop_test(tc, test_response_usage, 0, (int)ELEMENTSOF(response_rows));
        tcase_add_loop_test(tc, test_stream_whole_and_split, 0, (int)ELEMENTSOF(stream_rows));
        tcase_add_loop_test(tc, test_stream_holds_back_partial_events, 0, (int)ELEMENTSOF(stream_rows));
        tcase_add_loop_test(tc, test_stream_interrupted_and_cut, 0, (int)ELEMENTSOF(stream_rows));
        tcase_add_test(tc, test_stream_cut_after_finish);
        tcase_add_loop_test(tc, test_stream_cut_after_done, 0, (int)ELEMENTSOF(stream_rows));
        tcase_add_test(tc, test_sse_line_endings);
        tcase_add_test(tc, test_sse_fields);
        tcase_add_test(tc, test_stream_limits);
        tcase_add_loop_test(tc, test_stream_bad, 0, (int)ELEMENTSOF(bad_rows));
        tcase_add_test(tc, test_stream_new_refuses_none);
        tcase_add_test(tc, test_stream_continuous_usage);
        tcase_add_test(tc, test_stream_cut_two_choices);
        tcase_add_test(tc, test_responses_cut_output);
        tcase_add_test(tc, test_stream_cut_input_estimate);
        tcase_add_loop_test(tc, test_error_body, 0, (int)ELEMENTSOF(error_rows));
        suite_add_tcase(s, tc);
        return s;
}

int main(void) {
        return tb_check_main(api_suite());
}
