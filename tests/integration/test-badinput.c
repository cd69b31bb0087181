/* SPDX-License-Identifier: MIT */
/*
 * Integration tests of what tokenbudgetd does with bad and unusual input on
 * raw Unix sockets: every protocol violation closes that connection with no
 * reply; bad calls get the standard Varlink errors naming the parameter;
 * oneway, more, pipelining, byte-by-byte writes, vendor headers and the three
 * spellings of "no parameters" behave as Varlink says. Throughout each test a
 * well-behaved client (the "bystander") keeps running full cycles through
 * libtokenbudget: it must never fail and must make progress.
 */
#define _GNU_SOURCE
#include "harness.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Unlimited budgets: the bystander and the tests must never be refused for money. */
static const char badinput_config[] = "default_estimate = 4000;\n"
                                      "global: { tokens_per_minute = 0; tokens_per_hour = 0; tokens_per_day "
                                      "= 0; max_tokens_in_flight = 0; };\n"
                                      "process: { tokens_per_minute = 0; tokens_per_hour = 0; "
                                      "tokens_per_day = 0; max_tokens_in_flight = 0; };\n";

#define MAX_MESSAGE_BYTES 65536 /* the built-in default of limits.max_message_bytes */

/* ---- the bystander ------------------------------------------------------------ */

typedef struct Bystander {
        const char *socket_path;
        pthread_t thread;
        atomic_bool stop;
        atomic_ulong cycles;
        char failure[512];
} Bystander;

static void *bystander_thread(void *arg) {
        Bystander *b = arg;
        tb_client *c = NULL;
        char *error = NULL;
        int r = tb_client_open(b->socket_path, &c, &error);

        if (r < 0) {
                snprintf(b->failure, sizeof(b->failure), "tb_client_open: %d %s", r, error ? error : "");
                free(error);
                return NULL;
        }
        tb_client_set_timeout_usec(c, 5 * 1000000);
        while (!atomic_load(&b->stop)) {
                const char *call = "";

                r = harness_cycle(c, 10, &call);
                if (r < 0) {
                        snprintf(b->failure, sizeof(b->failure), "cycle %lu: %s: %d %s",
                                 atomic_load(&b->cycles), call, r, tb_client_error(c));
                        break;
                }
                atomic_fetch_add(&b->cycles, 1);
                harness_sleep_msec(1);
        }
        tb_client_close(c);
        return NULL;
}

/* Starts the bystander and waits for its first cycle. */
static void bystander_start(Bystander *b, const TestDaemon *d) {
        uint64_t deadline = harness_now_usec() + 5000000;

        *b = (Bystander){.socket_path = d->socket_path};
        ck_assert_int_eq(pthread_create(&b->thread, NULL, bystander_thread, b), 0);
        while (atomic_load(&b->cycles) == 0 && !b->failure[0] && harness_now_usec() < deadline)
                harness_sleep_msec(1);
        ck_assert_msg(atomic_load(&b->cycles) > 0, "bystander made no cycle within 5 s: %s", b->failure);
}

/* Stops it; it must not have failed and must have progressed since start_cycles. */
static void bystander_stop(Bystander *b, unsigned long start_cycles) {
        atomic_store(&b->stop, true);
        pthread_join(b->thread, NULL);
        ck_assert_msg(!b->failure[0], "the well-behaved client failed during the test: %s", b->failure);
        ck_assert_msg(
                atomic_load(&b->cycles) > start_cycles,
                "the well-behaved client made no progress during the test (%lu cycles before and after)",
                start_cycles);
}

typedef struct Fixture {
        TestDaemon *daemon;
        Bystander bystander;
        unsigned long start_cycles;
} Fixture;

static void fixture_start(Fixture *f) {
        f->daemon = harness_daemon_start(badinput_config);
        bystander_start(&f->bystander, f->daemon);
        f->start_cycles = atomic_load(&f->bystander.cycles);
}

static void fixture_stop(Fixture *f) {
        /* Let the bystander run across the end of what the test did. */
        uint64_t deadline = harness_now_usec() + 2000000;

        while (atomic_load(&f->bystander.cycles) <= f->start_cycles + 2 && harness_now_usec() < deadline)
                harness_sleep_msec(1);
        bystander_stop(&f->bystander, f->start_cycles);
        harness_daemon_stop(f->daemon);
}

static RawConn *open_raw(const TestDaemon *d) {
        RawConn *r = raw_open(d->socket_path);

        ck_assert_msg(r, "connect(%s): %s", d->socket_path, strerror(errno));
        return r;
}

/* ---- protocol violations: EOF, no reply ------------------------------------------ */

#define GETINFO "\"method\":\"org.varlink.service.GetInfo\""

static const struct violation_row {
        const char *name;
        const char *data;
        size_t len;
} violation_rows[] = {
#define ROW(name, literal)                                                                                  \
        { name, literal, sizeof(literal) - 1 }
        ROW("invalid JSON: unterminated object", "{" GETINFO),
        ROW("invalid JSON: garbage", "hello daemon"),
        ROW("invalid JSON: single quotes", "{'method':'org.varlink.service.GetInfo'}"),
        ROW("invalid JSON: trailing comma", "{" GETINFO ",}"),
        ROW("invalid JSON: empty message", ""),
        ROW("non-object: array", "[{" GETINFO "}]"),
        ROW("non-object: string", "\"org.varlink.service.GetInfo\""),
        ROW("non-object: number", "42"),
        ROW("non-object: null", "null"),
        ROW("missing method", "{\"parameters\":{}}"),
        ROW("non-string method: number", "{\"method\":42}"),
        ROW("non-string method: null", "{\"method\":null}"),
        ROW("non-string method: object", "{\"method\":{\"name\":\"org.varlink.service.GetInfo\"}}"),
        ROW("unknown unprefixed key", "{" GETINFO ",\"bogus\":true}"),
        ROW("non-boolean oneway", "{" GETINFO ",\"oneway\":1}"),
        ROW("non-boolean more", "{" GETINFO ",\"more\":\"true\"}"),
        ROW("non-boolean upgrade", "{" GETINFO ",\"upgrade\":0}"),
        ROW("two flags: oneway and more", "{" GETINFO ",\"oneway\":true,\"more\":true}"),
        ROW("two flags: more and upgrade", "{" GETINFO ",\"more\":true,\"upgrade\":true}"),
        ROW("invalid UTF-8: 0xff in a parameter",
            "{\"method\":\"io.tokenbudget.agent.Request\",\"parameters\":{\"class\":\"a\xff\"}}"),
        ROW("invalid UTF-8: overlong encoding",
            "{\"method\":\"io.tokenbudget.agent.Request\",\"parameters\":"
            "{\"agent\":\"\xc0\xaf\"}}"),
        ROW("invalid UTF-8: encoded surrogate",
            "{\"method\":\"io.tokenbudget.agent.Request\",\"parameters\":"
            "{\"model\":\"\xed\xa0\x80\"}}"),
        ROW("invalid UTF-8: truncated sequence in a vendor key", "{" GETINFO ",\"org.example.x\":\"\xc3\"}"),
        ROW("trailing data after the object", "{" GETINFO "}x"),
        ROW("two objects in one message", "{" GETINFO "}{" GETINFO "}"),
#undef ROW
};

static void assert_closed_silently(RawConn *r, const char *name) {
        char *data = NULL;
        int k = raw_expect_eof(r, HARNESS_REPLY_TIMEOUT_MSEC, &data);

        ck_assert_msg(k != -EBADMSG, "%s: daemon replied instead of closing: %s", name, data);
        ck_assert_msg(k == 0, "%s: connection not closed within %d ms: %s", name, HARNESS_REPLY_TIMEOUT_MSEC,
                      strerror(-k));
}

START_TEST(test_protocol_violations) {
        Fixture f;
        char deep[4096];
        size_t n = 0;

        fixture_start(&f);
        for (size_t i = 0; i < sizeof(violation_rows) / sizeof(violation_rows[0]); i++) {
                RawConn *r = open_raw(f.daemon);
                int k = raw_send(r, violation_rows[i].data, violation_rows[i].len);

                if (k == 0)
                        k = raw_send(r, "", 1);
                ck_assert_msg(k == 0 || k == -EPIPE || k == -ECONNRESET, "%s: write: %s",
                              violation_rows[i].name, strerror(-k));
                assert_closed_silently(r, violation_rows[i].name);
                raw_close(r);
        }

        /* Nesting far deeper than any parser limit. */
        n += (size_t)snprintf(deep, sizeof(deep), "{" GETINFO ",\"org.example.deep\":");
        for (size_t i = 0; i < 1000; i++)
                deep[n++] = '[';
        for (size_t i = 0; i < 1000; i++)
                deep[n++] = ']';
        deep[n++] = '}';
        {
                RawConn *r = open_raw(f.daemon);
                int k = raw_send(r, deep, n);

                ck_assert_msg(k == 0 && raw_send(r, "", 1) == 0, "deep nesting: write failed");
                assert_closed_silently(r, "invalid JSON: nesting 1000 deep");
                raw_close(r);
        }

        /* Oversized: one byte over max_message_bytes, with and without its NUL. */
        for (int with_nul = 0; with_nul <= 1; with_nul++) {
                char *m = harness_padded_getinfo(MAX_MESSAGE_BYTES + 1);
                RawConn *r = open_raw(f.daemon);
                int k = raw_send(r, m, MAX_MESSAGE_BYTES + 1 + (size_t)with_nul);

                ck_assert_msg(k == 0 || k == -EPIPE || k == -ECONNRESET, "oversized: write: %s",
                              strerror(-k));
                assert_closed_silently(r, with_nul ? "oversized message with NUL"
                                                   : "oversized message, no NUL yet");
                raw_close(r);
                free(m);
        }
        fixture_stop(&f);
}
END_TEST

/* ---- standard errors ---------------------------------------------------------------- */

#define IP "org.varlink.service.InvalidParameter"

static const struct error_row {
        const char *method;
        const char *params; /* @ID@: an allocation of this connection; @LONG@: 256 bytes; @MAX@: 255 bytes */
        const char *flags;  /* extra top-level members, e.g. ,"upgrade":true */
        const char *error;  /* NULL: success */
        const char *key;    /* in the reply parameters */
        const char *value;
} error_rows[] = {
        {"org.example.nothing.Foo", "{}", "", "org.varlink.service.InterfaceNotFound", "interface",
         "org.example.nothing"},
        {"io.tokenbudget.agent.Fly", "{}", "", "org.varlink.service.MethodNotFound", "method",
         "io.tokenbudget.agent.Fly"},
        {"io.tokenbudget.admin.Reboot", "{}", "", "org.varlink.service.MethodNotFound", "method",
         "io.tokenbudget.admin.Reboot"},
        {"org.varlink.service.Nope", "{}", "", "org.varlink.service.MethodNotFound", "method",
         "org.varlink.service.Nope"},
        {"org.varlink.service.GetInfo", "{}", ",\"upgrade\":true", IP, "parameter", "upgrade"},
        {"org.varlink.service.GetInfo", "{\"verbose\":true}", "", IP, "parameter", "verbose"},
        {"org.varlink.service.GetInterfaceDescription", "{}", "", IP, "parameter", "interface"},
        {"org.varlink.service.GetInterfaceDescription", "{\"interface\":5}", "", IP, "parameter",
         "interface"},
        {"io.tokenbudget.admin.Status", "{\"verbose\":true}", "", IP, "parameter", "verbose"},
        /* Request */
        {"io.tokenbudget.agent.Request", "{\"estimate\":10,\"bogus\":1}", "", IP, "parameter", "bogus"},
        {"io.tokenbudget.agent.Request", "{\"estimate\":\"10\"}", "", IP, "parameter", "estimate"},
        {"io.tokenbudget.agent.Request", "{\"estimate\":-1}", "", IP, "parameter", "estimate"},
        {"io.tokenbudget.agent.Request", "{\"estimate\":0}", "", IP, "parameter", "estimate"},
        {"io.tokenbudget.agent.Request", "{\"estimate\":1000000000000}", "", IP, "parameter", "estimate"},
        {"io.tokenbudget.agent.Request", "{\"estimate\":18446744073709551615}", "", IP, "parameter",
         "estimate"},
        {"io.tokenbudget.agent.Request", "{\"estimate\":1.5}", "", IP, "parameter", "estimate"},
        {"io.tokenbudget.agent.Request", "{\"estimate\":true}", "", IP, "parameter", "estimate"},
        {"io.tokenbudget.agent.Request", "{\"class\":5}", "", IP, "parameter", "class"},
        {"io.tokenbudget.agent.Request", "{\"class\":\"@LONG@\"}", "", IP, "parameter", "class"},
        {"io.tokenbudget.agent.Request", "{\"agent\":\"@LONG@\"}", "", IP, "parameter", "agent"},
        {"io.tokenbudget.agent.Request", "{\"model\":\"@LONG@\"}", "", IP, "parameter", "model"},
        {"io.tokenbudget.agent.Request", "{\"model\":[]}", "", IP, "parameter", "model"},
        {"io.tokenbudget.agent.Request", "{\"priority\":\"urgent\"}", "", IP, "parameter", "priority"},
        {"io.tokenbudget.agent.Request", "{\"priority\":1}", "", IP, "parameter", "priority"},
        {"io.tokenbudget.agent.Request", "{\"class\":\"@MAX@\",\"agent\":\"@MAX@\",\"model\":\"@MAX@\"}", "",
         NULL, "decision", "granted"},
        /* Above max_request_tokens (200000) the grant is clamped; above 2.5 x it, escalated. */
        {"io.tokenbudget.agent.Request", "{\"estimate\":500000,\"priority\":\"background\"}", "", NULL,
         "reason", "request-cap"},
        {"io.tokenbudget.agent.Request", "{\"estimate\":999999999999,\"priority\":\"background\"}", "",
         "io.tokenbudget.agent.Escalated", "reason", "policy"},
        {"io.tokenbudget.agent.Request", "{\"minTokens\":0}", "", IP, "parameter", "minTokens"},
        {"io.tokenbudget.agent.Request", "{\"estimate\":10,\"minTokens\":11}", "", IP, "parameter",
         "minTokens"},
        {"io.tokenbudget.agent.Request", "{\"minTokens\":-1}", "", IP, "parameter", "minTokens"},
        {"io.tokenbudget.agent.Request", "{\"waitUsec\":86400000001}", "", IP, "parameter", "waitUsec"},
        {"io.tokenbudget.agent.Request", "{\"waitUsec\":\"1s\"}", "", IP, "parameter", "waitUsec"},
        {"io.tokenbudget.agent.Request", "{\"promptTokens\":1000000000000}", "", IP, "parameter",
         "promptTokens"},
        {"io.tokenbudget.agent.Request", "{\"estimate\":100,\"promptTokens\":40}", "", NULL,
         "suggestedMaxTokens", "60"},
        /* Report */
        {"io.tokenbudget.agent.Report", "{\"inputTokens\":1,\"outputTokens\":1}", "", IP, "parameter",
         "allocation"},
        {"io.tokenbudget.agent.Report", "{\"allocation\":5,\"inputTokens\":1,\"outputTokens\":1}", "", IP,
         "parameter", "allocation"},
        {"io.tokenbudget.agent.Report", "{\"allocation\":\"@ID@\",\"outputTokens\":1}", "", IP, "parameter",
         "inputTokens"},
        {"io.tokenbudget.agent.Report", "{\"allocation\":\"@ID@\",\"inputTokens\":1}", "", IP, "parameter",
         "outputTokens"},
        {"io.tokenbudget.agent.Report", "{\"allocation\":\"@ID@\",\"inputTokens\":-1,\"outputTokens\":1}",
         "", IP, "parameter", "inputTokens"},
        {"io.tokenbudget.agent.Report", "{\"allocation\":\"@ID@\",\"inputTokens\":1,\"outputTokens\":\"5\"}",
         "", IP, "parameter", "outputTokens"},
        {"io.tokenbudget.agent.Report",
         "{\"allocation\":\"@ID@\",\"inputTokens\":1000000000000,\"outputTokens\":1}", "", IP, "parameter",
         "inputTokens"},
        {"io.tokenbudget.agent.Report", "{\"allocation\":\"@ID@\",\"inputTokens\":1,\"outputTokens\":1.0}",
         "", IP, "parameter", "outputTokens"},
        {"io.tokenbudget.agent.Report",
         "{\"allocation\":\"@ID@\",\"inputTokens\":1,\"outputTokens\":1,\"x\":0}", "", IP, "parameter", "x"},
        {"io.tokenbudget.agent.Report",
         "{\"allocation\":\"no-such-allocation\",\"inputTokens\":1,\"outputTokens\":1}", "",
         "io.tokenbudget.agent.UnknownAllocation", "allocation", "no-such-allocation"},
        {"io.tokenbudget.agent.Report", "{\"allocation\":\"@ID@\",\"inputTokens\":3,\"outputTokens\":4}", "",
         NULL, "state", "ok"},
        /* Release */
        {"io.tokenbudget.agent.Release", "{}", "", IP, "parameter", "allocation"},
        {"io.tokenbudget.agent.Release", "{\"allocation\":\"@ID@\",\"inputTokens\":-5}", "", IP, "parameter",
         "inputTokens"},
        {"io.tokenbudget.agent.Release", "{\"allocation\":\"@ID@\",\"outputTokens\":\"x\"}", "", IP,
         "parameter", "outputTokens"},
        {"io.tokenbudget.agent.Release", "{\"allocation\":\"@ID@\",\"outputTokens\":1000000000000}", "", IP,
         "parameter", "outputTokens"},
        {"io.tokenbudget.agent.Release", "{\"allocation\":\"@ID@\",\"force\":true}", "", IP, "parameter",
         "force"},
        {"io.tokenbudget.agent.Release", "{\"allocation\":\"no-such-allocation\"}", "",
         "io.tokenbudget.agent.UnknownAllocation", "allocation", "no-such-allocation"},
};

/* Replaces every occurrence of each placeholder; returns a malloc'ed string. */
static char *substitute(const char *text, const char *const pairs[][2], size_t n_pairs) {
        char *out = strdup(text);

        ck_assert_ptr_nonnull(out);
        for (size_t i = 0; i < n_pairs; i++) {
                char *at;

                while ((at = strstr(out, pairs[i][0]))) {
                        char *next;

                        ck_assert(asprintf(&next, "%.*s%s%s", (int)(at - out), out, pairs[i][1],
                                           at + strlen(pairs[i][0])) >= 0);
                        free(out);
                        out = next;
                }
        }
        return out;
}

static void check_error_row(RawConn *r, size_t i, const char *const pairs[][2]) {
        const struct error_row *row = &error_rows[i];
        char *params = substitute(row->params, pairs, 3), *msg, what[64];
        json_object *reply, *v;
        const char *error;

        ck_assert(asprintf(&msg, "{\"method\":\"%s\",\"parameters\":%s%s}", row->method, params,
                           row->flags) >= 0);
        snprintf(what, sizeof(what), "error row %zu (%s)", i, row->method);
        reply = raw_call(r, msg, what);
        error = reply_error(reply);
        ck_assert_msg(row->error ? error && strcmp(error, row->error) == 0 : !error,
                      "%s: sent %s, got %s, expected error %s", what, msg, json_object_to_json_string(reply),
                      row->error ? row->error : "(none)");
        ck_assert_msg(json_object_object_get_ex(reply_parameters(reply), row->key, &v) &&
                              strcmp(json_object_get_string(v), row->value) == 0,
                      "%s: sent %s, got %s, expected %s=%s", what, msg, json_object_to_json_string(reply),
                      row->key, row->value);
        json_object_put(reply);
        free(msg);
        free(params);
}

START_TEST(test_standard_errors) {
        char long_text[257], max_text[256];
        json_object *reply, *allocs;
        const char *id;
        RawConn *r;
        Fixture f;

        fixture_start(&f);
        memset(long_text, 'l', 256);
        long_text[256] = 0;
        memset(max_text, 'm', 255);
        max_text[255] = 0;
        r = open_raw(f.daemon);
        reply = raw_call(r,
                         "{\"method\":\"io.tokenbudget.agent.Request\",\"parameters\":{\"estimate\":100}}",
                         "initial Request");
        ck_assert_msg(!reply_error(reply), "initial Request failed: %s", json_object_to_json_string(reply));
        id = json_str(reply_parameters(reply), "allocation", "initial Request");
        {
                const char *const pairs[][2] = {{"@ID@", id}, {"@LONG@", long_text}, {"@MAX@", max_text}};

                for (size_t i = 0; i < sizeof(error_rows) / sizeof(error_rows[0]); i++)
                        check_error_row(r, i, pairs);
        }
        json_object_put(reply);

        /*
         * Still the same connection: errors never close it. No failed Request
         * or Release changed anything: exactly the 4 granted Requests (100,
         * default 4000, clamped 200000, 100 with a prompt) are open.
         */
        reply = raw_call(r, "{\"method\":\"io.tokenbudget.admin.Status\"}", "Status after the error rows");
        ck_assert_msg(!reply_error(reply), "Status failed: %s", json_object_to_json_string(reply));
        json_object_put(reply);
        reply = raw_call(r, "{\"method\":\"io.tokenbudget.admin.List\"}", "List after the error rows");
        ck_assert_msg(json_object_object_get_ex(reply_parameters(reply), "allocations", &allocs), "List: %s",
                      json_object_to_json_string(reply));
        {
                size_t ours = 0;

                for (size_t i = 0; i < json_object_array_length(allocs); i++) {
                        json_object *a = json_object_array_get_idx(allocs, i);
                        int64_t g = json_int(a, "granted", "allocation");

                        /* The bystander's allocations are granted 10; ours 100, 4000, 200000 and 100. */
                        ours += g != 10;
                }
                ck_assert_msg(
                        ours == 4,
                        "expected exactly the 4 granted Requests of this connection open, found %zu: %s",
                        ours, json_object_to_json_string(reply));
        }
        json_object_put(reply);
        raw_close(r);
        fixture_stop(&f);
}
END_TEST

/* ---- oneway, more, pipelining, fragments, equivalences --------------------------- */

/* Receives one reply and checks it is a GetInfo reply. */
static void expect_getinfo_reply(RawConn *r, const char *what) {
        char *msg = NULL;
        json_object *reply;
        int k = raw_recv(r, HARNESS_REPLY_TIMEOUT_MSEC, &msg);

        ck_assert_msg(k == 1, "%s: no reply (%s)", what, k == 0 ? "EOF" : strerror(-k));
        reply = json_tokener_parse(msg);
        ck_assert_msg(reply && !reply_error(reply) &&
                              strcmp(json_str(reply_parameters(reply), "vendor", what), "tokenbudget") == 0,
                      "%s: expected the GetInfo reply, got %s", what, msg);
        json_object_put(reply);
        free(msg);
}

static bool list_has_granted(RawConn *r, int64_t granted) {
        json_object *reply = raw_call(r, "{\"method\":\"io.tokenbudget.admin.List\"}", "List"), *allocs;
        bool found = false;

        ck_assert_msg(json_object_object_get_ex(reply_parameters(reply), "allocations", &allocs), "List: %s",
                      json_object_to_json_string(reply));
        for (size_t i = 0; i < json_object_array_length(allocs); i++)
                found |= json_int(json_object_array_get_idx(allocs, i), "granted", "allocation") == granted;
        json_object_put(reply);
        return found;
}

START_TEST(test_oneway) {
        static const char *const oneways[] = {
                "{\"method\":\"io.tokenbudget.agent.Request\",\"parameters\":{\"estimate\":7777},\"oneway\":"
                "true}",
                "{\"method\":\"io.tokenbudget.agent.Fly\",\"oneway\":true}",
                "{\"method\":\"io.tokenbudget.agent.Request\",\"parameters\":{\"estimate\":-3},\"oneway\":"
                "true}",
                "{\"method\":\"io.tokenbudget.agent.Release\",\"parameters\":{\"allocation\":\"nope\"},"
                "\"oneway\":true}",
        };
        RawConn *r;
        Fixture f;

        fixture_start(&f);
        r = open_raw(f.daemon);
        for (size_t i = 0; i < sizeof(oneways) / sizeof(oneways[0]); i++) {
                char what[64];

                snprintf(what, sizeof(what), "oneway row %zu then GetInfo", i);
                ck_assert_int_eq(raw_send_msg(r, oneways[i]), 0);
                ck_assert_int_eq(raw_send_msg(r, "{" GETINFO "}"), 0);
                expect_getinfo_reply(r, what);
        }
        /* The oneway Request was carried out, just not answered. */
        ck_assert_msg(list_has_granted(r, 7777), "the oneway Request (estimate 7777) opened no allocation");
        raw_close(r);
        fixture_stop(&f);
}
END_TEST

START_TEST(test_pipelining) {
        char batch[4096];
        size_t n = 0;
        RawConn *r;
        Fixture f;

        fixture_start(&f);
        r = open_raw(f.daemon);
        for (int i = 0; i < 10; i++) {
                if (i % 2 == 0)
                        n += (size_t)snprintf(batch + n, sizeof(batch) - n,
                                              "{\"method\":\"io.tokenbudget.agent.Request\",\"parameters\":{"
                                              "\"estimate\":%d}}",
                                              100 + i);
                else
                        n += (size_t)snprintf(batch + n, sizeof(batch) - n,
                                              "{\"method\":\"io.tokenbudget.agent.Nope%d\"}", i);
                batch[n++] = 0;
        }
        ck_assert_int_eq(raw_send(r, batch, n), 0);
        for (int i = 0; i < 10; i++) {
                char *msg = NULL, want[64];
                json_object *reply, *v;
                int k = raw_recv(r, HARNESS_REPLY_TIMEOUT_MSEC, &msg);

                ck_assert_msg(k == 1, "pipelined reply %d missing (%s)", i, k == 0 ? "EOF" : strerror(-k));
                reply = json_tokener_parse(msg);
                ck_assert_msg(reply, "pipelined reply %d is not JSON: %s", i, msg);
                if (i % 2 == 0)
                        ck_assert_msg(!reply_error(reply) && json_int(reply_parameters(reply), "granted",
                                                                      "reply") == 100 + i,
                                      "pipelined reply %d: expected the grant of estimate %d, got %s", i,
                                      100 + i, msg);
                else {
                        snprintf(want, sizeof(want), "io.tokenbudget.agent.Nope%d", i);
                        ck_assert_msg(
                                reply_error(reply) &&
                                        json_object_object_get_ex(reply_parameters(reply), "method", &v) &&
                                        strcmp(json_object_get_string(v), want) == 0,
                                "pipelined reply %d: expected MethodNotFound for %s, got %s", i, want, msg);
                }
                json_object_put(reply);
                free(msg);
        }
        raw_close(r);
        fixture_stop(&f);
}
END_TEST

START_TEST(test_byte_at_a_time) {
        static const char call[] = "{\"method\":\"org.varlink.service.GetInfo\",\"parameters\":{}}";
        RawConn *r;
        Fixture f;

        fixture_start(&f);
        r = open_raw(f.daemon);
        for (size_t i = 0; i < sizeof(call); i++) { /* including the NUL */
                ck_assert_int_eq(raw_send(r, call + i, 1), 0);
                harness_sleep_msec(1);
        }
        expect_getinfo_reply(r, "GetInfo written one byte at a time");
        /* A message split across writes, and the next one in the same write as its tail. */
        ck_assert_int_eq(raw_send(r, call, 10), 0);
        harness_sleep_msec(20);
        ck_assert_int_eq(raw_send(r, call + 10, sizeof(call) - 10), 0);
        ck_assert_int_eq(raw_send(r, call, sizeof(call)), 0);
        expect_getinfo_reply(r, "first of two split GetInfo calls");
        expect_getinfo_reply(r, "second of two split GetInfo calls");
        raw_close(r);
        fixture_stop(&f);
}
END_TEST

static const char *const param_spellings[] = {"", ",\"parameters\":null", ",\"parameters\":{}"};

START_TEST(test_equivalent_forms) {
        json_object *reply;
        RawConn *r;
        Fixture f;
        char *msg;

        fixture_start(&f);
        r = open_raw(f.daemon);
        for (size_t i = 0; i < 3; i++) {
                ck_assert(asprintf(&msg, "{" GETINFO "%s}", param_spellings[i]) >= 0);
                reply = raw_call(r, msg, msg);
                ck_assert_msg(!reply_error(reply) &&
                                      strcmp(json_str(reply_parameters(reply), "product", msg),
                                             "tokenbudgetd") == 0,
                              "%s: %s", msg, json_object_to_json_string(reply));
                json_object_put(reply);
                free(msg);
                ck_assert(asprintf(&msg, "{\"method\":\"io.tokenbudget.agent.Request\"%s}",
                                   param_spellings[i]) >= 0);
                reply = raw_call(r, msg, msg);
                ck_assert_msg(!reply_error(reply) &&
                                      json_int(reply_parameters(reply), "granted", msg) == 4000,
                              "%s: expected a grant of default_estimate 4000, got %s", msg,
                              json_object_to_json_string(reply));
                json_object_put(reply);
                free(msg);
                ck_assert(asprintf(&msg, "{\"method\":\"io.tokenbudget.admin.Status\"%s}",
                                   param_spellings[i]) >= 0);
                reply = raw_call(r, msg, msg);
                ck_assert_msg(!reply_error(reply), "%s: %s", msg, json_object_to_json_string(reply));
                json_object_put(reply);
                free(msg);
        }

        reply = raw_call(
                r, "{" GETINFO ",\"org.example.trace\":{\"id\":1,\"nested\":[1,2]},\"org.example.x\":null}",
                "vendor headers");
        ck_assert_msg(!reply_error(reply), "vendor headers not ignored: %s",
                      json_object_to_json_string(reply));
        json_object_put(reply);

        raw_close(r);
        fixture_stop(&f);
}
END_TEST

START_TEST(test_more) {
        json_object *reply;
        RawConn *r;
        Fixture f;
        char *msg;

        fixture_start(&f);
        r = open_raw(f.daemon);
        /* "more" on a non-streaming method: exactly one, final reply. */
        reply = raw_call(r, "{" GETINFO ",\"more\":true}", "GetInfo with more");
        ck_assert_msg(!reply_error(reply), "more: %s", json_object_to_json_string(reply));
        {
                json_object *cont;

                ck_assert_msg(!json_object_object_get_ex(reply, "continues", &cont) ||
                                      !json_object_get_boolean(cont),
                              "reply to more says it continues: %s", json_object_to_json_string(reply));
        }
        json_object_put(reply);
        reply = raw_call(r,
                         "{\"method\":\"io.tokenbudget.agent.Request\",\"parameters\":{\"estimate\":4321},"
                         "\"more\":true}",
                         "Request with more");
        ck_assert_msg(!reply_error(reply) && json_int(reply_parameters(reply), "granted", "more") == 4321,
                      "Request with more: %s", json_object_to_json_string(reply));
        json_object_put(reply);
        ck_assert_int_eq(
                raw_send_msg(r, "{\"method\":\"org.varlink.service.GetInterfaceDescription\",\"parameters\":"
                                "{\"interface\":\"io.tokenbudget.admin\"}}"),
                0);
        ck_assert_int_eq(raw_recv(r, HARNESS_REPLY_TIMEOUT_MSEC, &msg), 1);
        ck_assert_msg(strstr(msg, "\"description\""),
                      "after more: the next reply is not the next call's: %s", msg);
        free(msg);
        raw_close(r);
        fixture_stop(&f);
}
END_TEST

static Suite *badinput_suite(void) {
        Suite *s = suite_create("integration-badinput");
        TCase *tc = harness_tcase("bad_input", 60);

        tcase_add_test(tc, test_protocol_violations);
        tcase_add_test(tc, test_standard_errors);
        tcase_add_test(tc, test_oneway);
        tcase_add_test(tc, test_pipelining);
        tcase_add_test(tc, test_byte_at_a_time);
        tcase_add_test(tc, test_equivalent_forms);
        tcase_add_test(tc, test_more);
        suite_add_tcase(s, tc);
        return s;
}

int main(void) {
        return harness_main(badinput_suite());
}
