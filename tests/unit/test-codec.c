/* SPDX-License-Identifier: MIT */
/*
 * Unit tests of the Varlink codec (protocol/varlink.c): framing, strict call
 * and reply parsing, formatting round trips, the output buffer, parameter
 * validation and the embedded interface descriptions. Pure: no sockets, no
 * daemon. SRCDIR points at the source tree for the .varlink files.
 */
#include <check.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

#include "flat-differential.h"
#include "tb-check.h"
#include "varlink-names.h"
#include "varlink.h"

#ifndef SRCDIR
#error "SRCDIR must be defined"
#endif

#define ELEMENTSOF(a) (sizeof(a) / sizeof((a)[0]))

/* A byte string with its exact length, so rows can contain NUL bytes. */
#define BYTES(s) (s), (sizeof(s) - 1)

typedef struct ParseRow {
        const char *msg;
        size_t len;
        int error;          /* 0 or the negative errno expected */
        const char *reason; /* substring of the reason, when error != 0 */
} ParseRow;

static void check_call_rows(const ParseRow *rows, size_t n) {
        for (size_t i = 0; i < n; i++) {
                VarlinkCall call;
                const char *reason = "unset";
                int r = varlink_call_parse(rows[i].msg, rows[i].len, &call, &reason);
                char label[32];

                snprintf(label, sizeof(label), "row %zu", i);
                (void)json_differential(label, rows[i].msg, rows[i].len);
                ck_assert_msg(r == rows[i].error, "row %zu (%.*s): got %d (%s), expected %d", i,
                              (int)rows[i].len, rows[i].msg, r, reason ? reason : "-", rows[i].error);
                if (rows[i].error == 0) {
                        ck_assert_msg(reason == NULL, "row %zu: reason set on success", i);
                        ck_assert_msg(call.root && call.method && call.parameters, "row %zu: fields unset",
                                      i);
                        ck_assert_msg(json_object_is_type(call.parameters, json_type_object),
                                      "row %zu: parameters not an object", i);
                } else {
                        ck_assert_msg(reason && strstr(reason, rows[i].reason),
                                      "row %zu: reason '%s', expected '%s'", i, reason ? reason : "(null)",
                                      rows[i].reason);
                        ck_assert_msg(call.root == NULL && call.method == NULL,
                                      "row %zu: output not cleared", i);
                }
                varlink_call_done(&call);
        }
}

static void check_reply_rows(const ParseRow *rows, size_t n) {
        for (size_t i = 0; i < n; i++) {
                VarlinkReply reply;
                const char *reason = "unset";
                int r = varlink_reply_parse(rows[i].msg, rows[i].len, &reply, &reason);
                char label[32];

                snprintf(label, sizeof(label), "reply row %zu", i);
                (void)json_differential(label, rows[i].msg, rows[i].len);
                ck_assert_msg(r == rows[i].error, "row %zu (%.*s): got %d (%s), expected %d", i,
                              (int)rows[i].len, rows[i].msg, r, reason ? reason : "-", rows[i].error);
                if (rows[i].error == 0)
                        ck_assert_msg(reply.parameters &&
                                              json_object_is_type(reply.parameters, json_type_object),
                                      "row %zu: parameters not an object", i);
                else
                        ck_assert_msg(reason && strstr(reason, rows[i].reason),
                                      "row %zu: reason '%s', expected '%s'", i, reason ? reason : "(null)",
                                      rows[i].reason);
                varlink_reply_done(&reply);
        }
}

START_TEST(test_frame_split) {
        static const char msg[] = "{\"method\":\"io.tokenbudget.agent.Request\",\"parameters\":{}}";
        size_t frame_len = 0;

        /* Delivered one byte at a time: no frame until the NUL arrives. */
        for (size_t k = 0; k <= strlen(msg); k++) {
                int r = varlink_frame_next(msg, k, 4096, &frame_len);

                ck_assert_msg(r == 0, "prefix %zu: got %d", k, r);
        }
        ck_assert_int_eq(varlink_frame_next(msg, sizeof(msg), 4096, &frame_len), 1);
        ck_assert_uint_eq(frame_len, strlen(msg));
        ck_assert_int_eq(varlink_frame_next(msg, 0, 4096, &frame_len), 0);
}
END_TEST

START_TEST(test_frame_pipelined) {
        static const char in[] = "{\"method\":\"a.b.First\"}\0"
                                 "{\"method\":\"a.b.Second\",\"oneway\":true}\0"
                                 "{\"method\":\"a.b.Third\",\"more\":true}\0"
                                 "{\"method\":\"a.b.Fou";
        static const char *const expected[] = {"a.b.First", "a.b.Second", "a.b.Third"};
        size_t off = 0, n = 0, frame_len;
        int r;

        while ((r = varlink_frame_next(in + off, sizeof(in) - 1 - off, 1024, &frame_len)) > 0) {
                VarlinkCall call;
                const char *reason;

                ck_assert_msg(n < ELEMENTSOF(expected), "frame %zu: too many frames", n);
                ck_assert_msg(varlink_call_parse(in + off, frame_len, &call, &reason) == 0, "frame %zu: %s",
                              n, reason);
                ck_assert_msg(strcmp(call.method, expected[n]) == 0, "frame %zu: method %s", n, call.method);
                ck_assert_msg(call.oneway == (n == 1) && call.more == (n == 2), "frame %zu: flags", n);
                varlink_call_done(&call);
                off += frame_len + 1;
                n++;
        }
        ck_assert_int_eq(r, 0); /* the partial fourth message waits for more bytes */
        ck_assert_uint_eq(n, ELEMENTSOF(expected));
        ck_assert_str_eq(in + off, "{\"method\":\"a.b.Fou");
}
END_TEST

START_TEST(test_frame_limit) {
        static const struct {
                size_t msg_bytes;  /* bytes before the NUL */
                bool nul;          /* whether the NUL is in the buffer */
                size_t tail_bytes; /* bytes after the NUL */
                int expected;
        } rows[] = {
                {16, true, 0, 1},            /* exactly max: accepted */
                {16, true, 100, 1},          /* followed by more input */
                {17, true, 0, -EMSGSIZE},    /* max + 1 */
                {16, false, 0, 0},           /* max bytes, NUL may still come */
                {17, false, 0, -EMSGSIZE},   /* over max without a NUL */
                {1000, false, 0, -EMSGSIZE}, /* far over */
                {0, true, 0, 1},             /* empty frame (parser rejects it) */
                {15, false, 0, 0},
        };
        const size_t max = 16;

        for (size_t i = 0; i < ELEMENTSOF(rows); i++) {
                size_t len = rows[i].msg_bytes + rows[i].nul + rows[i].tail_bytes, frame_len = 12345;
                char *buf = malloc(len + 1);
                int r;

                ck_assert_ptr_nonnull(buf);
                memset(buf, 'x', len);
                if (rows[i].nul)
                        buf[rows[i].msg_bytes] = '\0';
                r = varlink_frame_next(buf, len, max, &frame_len);
                ck_assert_msg(r == rows[i].expected, "row %zu: got %d, expected %d", i, r, rows[i].expected);
                if (r == 1)
                        ck_assert_msg(frame_len == rows[i].msg_bytes, "row %zu: frame_len %zu", i,
                                      frame_len);
                free(buf);
        }
}
END_TEST

START_TEST(test_call_malformed) {
        static const ParseRow rows[] = {
                {BYTES("{\"method\":\"io.tokenbudget.agent.Request\"}"), 0, NULL},
                {BYTES(""), -EBADMSG, "invalid JSON"},
                {BYTES("{"), -EBADMSG, "invalid JSON"},
                {BYTES("{\"method\":\"a.b.C\""), -EBADMSG, "invalid JSON"},
                {BYTES("{\"method\":'a.b.C'}"), -EBADMSG, "invalid JSON"},
                {BYTES("{'method':\"a.b.C\"}"), -EBADMSG, "invalid JSON"},
                {BYTES("{method:\"a.b.C\"}"), -EBADMSG, "invalid JSON"},
                {BYTES("{\"method\":\"a.b.C\",}"), -EBADMSG, "invalid JSON"},
                {BYTES("{\"method\":\"a.b.C\",\"parameters\":{\"x\":NaN}}"), -EBADMSG, "invalid JSON"},
                {BYTES("{\"method\":\"a.b.C\",\"parameters\":{\"x\":Infinity}}"), -EBADMSG, "invalid JSON"},
                {BYTES("{\"method\":\"a.b.C\",\"parameters\":{\"x\":-Infinity}}"), -EBADMSG, "invalid JSON"},
                {BYTES("{\"method\":\"a.b.C\",\"parameters\":{\"x\":01}}"), -EBADMSG, "invalid JSON"},
                {BYTES("{\"method\":\"a.b.C\",\"parameters\":{\"x\":\"a\tb\"}}"), -EBADMSG,
                 "control character"},
                {BYTES("{\"method\":\"a.b.C\"}/*c*/"), -EBADMSG, "trailing data"},
                {BYTES("{\"method\":\"a.b.C\",\"parameters\":{\"x\":\"\\x41\"}}"), -EBADMSG, "invalid JSON"},
                {BYTES("}"), -EBADMSG, "invalid JSON"},
                /* embedded NUL bytes */
                {BYTES("{\"method\":\"a.b.C\"\0}"), -EBADMSG, "invalid JSON"},
                {BYTES("{\"method\":\"a.b\0.C\"}"), -EBADMSG, "invalid JSON"},
                {BYTES("{\"method\":\"a.b.C\"}\0"), -EBADMSG, "trailing data"},
                /* trailing data */
                {BYTES("{}x"), -EBADMSG, "trailing data after JSON object"},
                {BYTES("{} {}"), -EBADMSG, "trailing data after JSON object"},
                {BYTES("{}{}"), -EBADMSG, "trailing data after JSON object"},
                {BYTES("{\"method\":\"a.b.C\"}\"x\""), -EBADMSG, "trailing data after JSON object"},
                {BYTES("{\"method\":\"a.b.C\"} \n"), 0, NULL}, /* JSON whitespace is part of the text */
                {BYTES(" \t{\"method\":\"a.b.C\"}"), 0, NULL},
                /* not an object */
                {BYTES("[]"), -EBADMSG, "message is not a JSON object"},
                {BYTES("[{\"method\":\"a.b.C\"}]"), -EBADMSG, "message is not a JSON object"},
                {BYTES("\"a.b.C\""), -EBADMSG, "message is not a JSON object"},
                {BYTES("null"), -EBADMSG, "message is not a JSON object"},
                {BYTES("true"), -EBADMSG, "message is not a JSON object"},
                {BYTES("123"), -EBADMSG, "message is not a JSON object"},
                /* method */
                {BYTES("{}"), -EBADMSG, "missing method"},
                {BYTES("{\"parameters\":{}}"), -EBADMSG, "missing method"},
                {BYTES("{\"method\":null}"), -EBADMSG, "method is not a string"},
                {BYTES("{\"method\":1}"), -EBADMSG, "method is not a string"},
                {BYTES("{\"method\":[\"a.b.C\"]}"), -EBADMSG, "method is not a string"},
                {BYTES("{\"method\":\"\"}"), -EBADMSG, "invalid method name"},
                {BYTES("{\"method\":\"Request\"}"), -EBADMSG, "invalid method name"},
                {BYTES("{\"method\":\"agent.Request\"}"), -EBADMSG, "invalid method name"},
                {BYTES("{\"method\":\"io.tokenbudget.agent.request\"}"), -EBADMSG, "invalid method name"},
                {BYTES("{\"method\":\"io.tokenbudget.agent.\"}"), -EBADMSG, "invalid method name"},
                {BYTES("{\"method\":\"io.tokenbudget.agent.Re_quest\"}"), -EBADMSG, "invalid method name"},
                /* UAPI.20 interface names may have upper case (io.TokenBudget.agent
                 * is then another, unknown interface: dispatch answers InterfaceNotFound) */
                {BYTES("{\"method\":\"io.TokenBudget.agent.Request\"}"), 0, NULL},
                {BYTES("{\"method\":\"com.example.DoesNotExist.Foo\"}"), 0, NULL},
                {BYTES("{\"method\":\"A.B.C\"}"), 0, NULL},
                {BYTES("{\"method\":\"Io.x9.9X.Y\"}"), 0, NULL},
                {BYTES("{\"method\":\"io.A--B.C\"}"), 0, NULL},
                {BYTES("{\"method\":\"9io.agent.Request\"}"), -EBADMSG, "invalid method name"},
                {BYTES("{\"method\":\"-io.agent.Request\"}"), -EBADMSG, "invalid method name"},
                {BYTES("{\"method\":\"io.-Agent.Request\"}"), -EBADMSG, "invalid method name"},
                {BYTES("{\"method\":\"io.Agent-.Request\"}"), -EBADMSG, "invalid method name"},
                {BYTES("{\"method\":\"io.Ag_ent.Request\"}"), -EBADMSG, "invalid method name"},
                {BYTES("{\"method\":\"io.Ag ent.Request\"}"), -EBADMSG, "invalid method name"},
                {BYTES("{\"method\":\"io.Ag\xc3\xa9nt.Request\"}"), -EBADMSG, "invalid method name"},
                {BYTES("{\"method\":\"io.Agent..Request\"}"), -EBADMSG, "invalid method name"},
                {BYTES("{\"method\":\"io.Agent.Re-quest\"}"), -EBADMSG, "invalid method name"},
                {BYTES("{\"method\":\"io.Agent.request\"}"), -EBADMSG, "invalid method name"},
                {BYTES("{\"method\":\"io.Agent.9Request\"}"), -EBADMSG, "invalid method name"},
                {BYTES("{\"method\":\"Agent.Request\"}"), -EBADMSG, "invalid method name"},
                {BYTES("{\"method\":\"io.Agent\"}"), -EBADMSG, "invalid method name"},
                {BYTES("{\"method\":\"io..agent.Request\"}"), -EBADMSG, "invalid method name"},
                {BYTES("{\"method\":\".io.agent.Request\"}"), -EBADMSG, "invalid method name"},
                {BYTES("{\"method\":\"io.-agent.Request\"}"), -EBADMSG, "invalid method name"},
                {BYTES("{\"method\":\"io.agent-.Request\"}"), -EBADMSG, "invalid method name"},
                {BYTES("{\"method\":\"1io.agent.Request\"}"), -EBADMSG, "invalid method name"},
                {BYTES("{\"method\":\"io.9agent.Request\"}"), 0, NULL},
                {BYTES("{\"method\":\"io.my--agent.Request\"}"), 0, NULL},
                {BYTES("{\"method\":\"io.agent.Request2\"}"), 0, NULL},
                {BYTES("{\"method\":\"io.agent.Request.\"}"), -EBADMSG, "invalid method name"},
                {BYTES("{\"method\":\"io.agent.Req uest\"}"), -EBADMSG, "invalid method name"},
                {BYTES("{\"method\":\"a.b.C\\u0000x\"}"), -EBADMSG, "invalid method name"},
                {BYTES("{\"method\":\"a.b.\\u00c9t\"}"), -EBADMSG, "invalid method name"},
                /* unknown keys */
                {BYTES("{\"method\":\"a.b.C\",\"foo\":1}"), -EBADMSG, "unknown key"},
                {BYTES("{\"method\":\"a.b.C\",\"Method\":\"a.b.C\"}"), -EBADMSG, "unknown key"},
                {BYTES("{\"method\":\"a.b.C\",\"continues\":true}"), -EBADMSG, "unknown key"},
                {BYTES("{\"method\":\"a.b.C\",\"\":1}"), -EBADMSG, "unknown key"},
                /* flags */
                {BYTES("{\"method\":\"a.b.C\",\"oneway\":1}"), -EBADMSG, "oneway is not a boolean"},
                {BYTES("{\"method\":\"a.b.C\",\"oneway\":\"true\"}"), -EBADMSG, "oneway is not a boolean"},
                {BYTES("{\"method\":\"a.b.C\",\"oneway\":null}"), -EBADMSG, "oneway is not a boolean"},
                {BYTES("{\"method\":\"a.b.C\",\"more\":0}"), -EBADMSG, "more is not a boolean"},
                {BYTES("{\"method\":\"a.b.C\",\"upgrade\":{}}"), -EBADMSG, "upgrade is not a boolean"},
                {BYTES("{\"method\":\"a.b.C\",\"oneway\":true,\"more\":true}"), -EBADMSG,
                 "more than one of oneway, more, upgrade"},
                {BYTES("{\"method\":\"a.b.C\",\"more\":true,\"upgrade\":true}"), -EBADMSG,
                 "more than one of oneway, more, upgrade"},
                {BYTES("{\"method\":\"a.b.C\",\"oneway\":true,\"upgrade\":true}"), -EBADMSG,
                 "more than one of oneway, more, upgrade"},
                {BYTES("{\"method\":\"a.b.C\",\"oneway\":true,\"more\":false,\"upgrade\":false}"), 0, NULL},
                /* parameters */
                {BYTES("{\"method\":\"a.b.C\",\"parameters\":[]}"), -EBADMSG, "parameters is not an object"},
                {BYTES("{\"method\":\"a.b.C\",\"parameters\":\"x\"}"), -EBADMSG,
                 "parameters is not an object"},
                {BYTES("{\"method\":\"a.b.C\",\"parameters\":0}"), -EBADMSG, "parameters is not an object"},
                {BYTES("{\"method\":\"a.b.C\",\"parameters\":false}"), -EBADMSG,
                 "parameters is not an object"},
                /* duplicate keys, at the top and nested */
                {BYTES("{\"method\":\"a.b.C\",\"method\":\"a.b.D\"}"), -EBADMSG, "duplicate key"},
                {BYTES("{\"method\":\"a.b.C\",\"parameters\":{\"x\":1,\"x\":2}}"), -EBADMSG,
                 "duplicate key"},
                {BYTES("{\"method\":\"a.b.C\",\"parameters\":{\"l\":[{\"y\":1,\"y\":1}]}}"), -EBADMSG,
                 "duplicate key"},
                {BYTES("{\"method\":\"a.b.C\",\"parameters\":{\"x\":{\"x\":{\"x\":1}}}}"), 0, NULL},
                /* keys json-c would truncate at \u0000 */
                {BYTES("{\"method\\u0000x\":\"a.b.C\"}"), -EBADMSG, "NUL in object key"},
                {BYTES("{\"method\":\"a.b.C\",\"parameters\":{\"k\\u0000\" :1}}"), -EBADMSG,
                 "NUL in object key"},
                {BYTES("{\"method\":\"a.b.C\",\"parameters\":{\"k\":\"v\\u0000\"}}"), 0, NULL},
                {BYTES("{\"method\":\"a.b.C\",\"parameters\":{\"k\\\\u0000\":1}}"), 0, NULL},
                /* invalid UTF-8, in strings and out of them */
                {BYTES("{\"method\":\"a.b.C\",\"parameters\":{\"x\":\"\xff\"}}"), -EBADMSG, "invalid UTF-8"},
                {BYTES("{\"method\":\"a.b.C\",\"parameters\":{\"x\":\"\xc3\"}}"), -EBADMSG, "invalid UTF-8"},
                {BYTES("{\"method\":\"a.b.C\",\"parameters\":{\"x\":\"\xc0\x80\"}}"), -EBADMSG,
                 "invalid UTF-8"},
                {BYTES("{\"method\":\"a.b.C\",\"parameters\":{\"x\":\"\xe0\x80\xaf\"}}"), -EBADMSG,
                 "invalid UTF-8"},
                {BYTES("{\"method\":\"a.b.C\",\"parameters\":{\"x\":\"\xed\xa0\x80\"}}"), -EBADMSG,
                 "invalid UTF-8"},
                {BYTES("{\"method\":\"a.b.C\",\"parameters\":{\"x\":\"\xf4\x90\x80\x80\"}}"), -EBADMSG,
                 "invalid UTF-8"},
                {BYTES("{\"method\":\"a.b.C\",\"parameters\":{\"\xfe\":1}}"), -EBADMSG, "invalid UTF-8"},
                {BYTES("{\"method\":\"a.b.C\"}\xff"), -EBADMSG, "trailing data"},
                {BYTES("\xff{}"), -EBADMSG, "invalid UTF-8"},
                {BYTES("\xef\xbb\xbf{\"method\":\"a.b.C\"}"), -EBADMSG, "invalid JSON"}, /* BOM */
                {BYTES("{\"method\":\"a.b.C\",\"parameters\":{\"x\":"
                       "\"\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\"}}"),
                 0, NULL},
                {BYTES("{\"method\":\"a.b.C\",\"parameters\":{\"x\":\"\\u00e9\\ud83d\\ude00\"}}"), 0, NULL},
        };

        check_call_rows(rows, ELEMENTSOF(rows));
}
END_TEST

START_TEST(test_call_parameters_equivalent) {
        static const char *const msgs[] = {
                "{\"method\":\"a.b.C\"}",
                "{\"method\":\"a.b.C\",\"parameters\":null}",
                "{\"method\":\"a.b.C\",\"parameters\":{}}",
                "{\"parameters\":null,\"method\":\"a.b.C\"}",
        };

        for (size_t i = 0; i < ELEMENTSOF(msgs); i++) {
                struct json_object *attached = NULL;
                const char *reason;
                VarlinkCall call;

                ck_assert_msg(varlink_call_parse(msgs[i], strlen(msgs[i]), &call, &reason) == 0,
                              "row %zu: %s", i, reason);
                ck_assert_msg(json_object_is_type(call.parameters, json_type_object),
                              "row %zu: not an object", i);
                ck_assert_msg(json_object_object_length(call.parameters) == 0, "row %zu: not empty", i);
                /* owned by root, so it goes away with it */
                ck_assert_msg(json_object_object_get_ex(call.root, "parameters", &attached) &&
                                      attached == call.parameters,
                              "row %zu: parameters not attached to root", i);
                ck_assert_msg(!call.oneway && !call.more && !call.upgrade, "row %zu: flags set", i);
                varlink_call_done(&call);
                ck_assert_msg(call.root == NULL && call.parameters == NULL, "row %zu: done did not clear",
                              i);
        }
        varlink_call_done(NULL);
}
END_TEST

START_TEST(test_call_vendor_headers) {
        static const char msg[] = "{\"org.example\":{},\"method\":\"a.b.C\",\"io.x.trace\":[1,{\"y\":2}],"
                                  "\"parameters\":{\"a\":1},\"com.example.flag\":\"text\",\"a.\":null}";
        const char *reason;
        VarlinkCall call;

        ck_assert_msg(varlink_call_parse(msg, strlen(msg), &call, &reason) == 0, "%s", reason);
        ck_assert_str_eq(call.method, "a.b.C");
        ck_assert_int_eq(json_object_object_length(call.parameters), 1);
        varlink_call_done(&call);
}
END_TEST

START_TEST(test_call_flags) {
        static const struct {
                const char *msg;
                bool oneway, more, upgrade;
        } rows[] = {
                {"{\"method\":\"a.b.C\"}", false, false, false},
                {"{\"method\":\"a.b.C\",\"oneway\":true}", true, false, false},
                {"{\"method\":\"a.b.C\",\"more\":true}", false, true, false},
                {"{\"method\":\"a.b.C\",\"upgrade\":true}", false, false, true},
                {"{\"method\":\"a.b.C\",\"oneway\":false,\"more\":false,\"upgrade\":false}", false, false,
                 false},
                {"{\"method\":\"a.b.C\",\"oneway\":false,\"more\":true}", false, true, false},
        };

        for (size_t i = 0; i < ELEMENTSOF(rows); i++) {
                const char *reason;
                VarlinkCall call;

                ck_assert_msg(varlink_call_parse(rows[i].msg, strlen(rows[i].msg), &call, &reason) == 0,
                              "row %zu: %s", i, reason);
                ck_assert_msg(call.oneway == rows[i].oneway && call.more == rows[i].more &&
                                      call.upgrade == rows[i].upgrade,
                              "row %zu: flags %d %d %d", i, call.oneway, call.more, call.upgrade);
                varlink_call_done(&call);
        }
}
END_TEST

/* {"method":"a.b.C","parameters": nested objects} with total depth levels. */
static char *nested_call(size_t depth) {
        size_t cap = 64 + depth * 8;
        char *s = malloc(cap);
        size_t n;

        ck_assert_ptr_nonnull(s);
        n = (size_t)snprintf(s, cap, "{\"method\":\"a.b.C\",\"parameters\":");
        for (size_t d = 2; d < depth; d++)
                n += (size_t)snprintf(s + n, cap - n, "{\"a\":");
        n += (size_t)snprintf(s + n, cap - n, "{}");
        for (size_t d = 1; d < depth; d++)
                n += (size_t)snprintf(s + n, cap - n, "}");
        return s;
}

START_TEST(test_call_depth) {
        static const struct {
                size_t depth;
                int expected;
        } rows[] = {
                {2, 0},
                {VARLINK_MAX_DEPTH - 1, 0},
                {VARLINK_MAX_DEPTH, 0},
                {VARLINK_MAX_DEPTH + 1, -EBADMSG},
                {1000, -EBADMSG},
        };

        for (size_t i = 0; i < ELEMENTSOF(rows); i++) {
                char *msg = nested_call(rows[i].depth);
                const char *reason = NULL;
                VarlinkCall call;
                int r = varlink_call_parse(msg, strlen(msg), &call, &reason);

                (void)json_differential("depth row", msg, strlen(msg));
                ck_assert_msg(r == rows[i].expected, "row %zu (depth %zu): got %d (%s)", i, rows[i].depth, r,
                              reason ? reason : "-");
                if (r < 0)
                        ck_assert_msg(strstr(reason, "nested too deeply"), "row %zu: reason %s", i, reason);
                varlink_call_done(&call);
                free(msg);
        }
}
END_TEST

START_TEST(test_reply_parse) {
        static const ParseRow rows[] = {
                {BYTES("{}"), 0, NULL},
                {BYTES("{\"parameters\":{\"a\":1}}"), 0, NULL},
                {BYTES("{\"parameters\":null}"), 0, NULL},
                {BYTES("{\"parameters\":{},\"continues\":true}"), 0, NULL},
                {BYTES("{\"parameters\":{},\"continues\":false}"), 0, NULL},
                {BYTES("{\"error\":\"org.varlink.service.InvalidParameter\",\"parameters\":{\"parameter\":"
                       "\"x\"}}"),
                 0, NULL},
                {BYTES("{\"error\":\"io.tokenbudget.agent.BudgetExhausted\"}"), 0, NULL},
                {BYTES("{\"parameters\":{},\"org.example.x\":1}"), 0, NULL},
                {BYTES("{\"error\":1}"), -EBADMSG, "error is not a string"},
                {BYTES("{\"error\":null}"), -EBADMSG, "error is not a string"},
                {BYTES("{\"error\":\"NotQualified\"}"), -EBADMSG, "invalid error name"},
                {BYTES("{\"error\":\"a.b.C\\u0000\"}"), -EBADMSG, "invalid error name"},
                {BYTES("{\"error\":\"a.b.C\",\"continues\":true}"), -EBADMSG, "error reply with continues"},
                {BYTES("{\"continues\":1}"), -EBADMSG, "continues is not a boolean"},
                {BYTES("{\"continues\":\"yes\"}"), -EBADMSG, "continues is not a boolean"},
                {BYTES("{\"parameters\":[1]}"), -EBADMSG, "parameters is not an object"},
                {BYTES("{\"method\":\"a.b.C\"}"), -EBADMSG, "unknown key"},
                {BYTES("{\"more\":true}"), -EBADMSG, "unknown key"},
                {BYTES("{\"parameters\":{}} x"), -EBADMSG, "trailing data"},
                {BYTES("{\"parameters\":{\"s\":\"\xc0\xaf\"}}"), -EBADMSG, "invalid UTF-8"},
                {BYTES("{\"parameters\":{},\"parameters\":{}}"), -EBADMSG, "duplicate key"},
                {BYTES("[]"), -EBADMSG, "message is not a JSON object"},
                {BYTES("{\"parameters\":{\"a\":1}"), -EBADMSG, "invalid JSON"},
        };

        check_reply_rows(rows, ELEMENTSOF(rows));
}
END_TEST

START_TEST(test_reply_fields) {
        static const char msg[] =
                "{\"error\":\"io.tokenbudget.agent.NotOwner\",\"parameters\":{\"allocation\":\"x\"}}";
        const char *reason;
        VarlinkReply reply;

        ck_assert_int_eq(varlink_reply_parse(BYTES("{\"continues\":true}"), &reply, &reason), 0);
        ck_assert(reply.continues);
        ck_assert_ptr_null(reply.error);
        ck_assert_int_eq(json_object_object_length(reply.parameters), 0);
        varlink_reply_done(&reply);

        ck_assert_int_eq(varlink_reply_parse(msg, strlen(msg), &reply, &reason), 0);
        ck_assert_str_eq(reply.error, "io.tokenbudget.agent.NotOwner");
        ck_assert(!reply.continues);
        ck_assert_int_eq(json_object_object_length(reply.parameters), 1);
        varlink_reply_done(&reply);
        varlink_reply_done(NULL);
}
END_TEST

/* Takes the first message out of b (checking its NUL) and drops it. */
static void take_message(VarlinkBuffer *b, char **ret) {
        size_t frame_len;

        ck_assert_int_eq(varlink_frame_next(b->data, b->len, b->len, &frame_len), 1);
        *ret = strndup(b->data, frame_len);
        ck_assert_ptr_nonnull(*ret);
        varlink_buffer_consume(b, frame_len + 1);
}

START_TEST(test_format_exact) {
        struct json_object *p = json_object_new_object();
        VarlinkBuffer b = {};
        char *m;

        json_object_object_add(p, "a", json_object_new_int(1));
        json_object_object_add(p, "path", json_object_new_string("/x/y"));

        ck_assert_int_eq(varlink_format_reply(&b, p, false), 0);
        ck_assert_int_eq(varlink_format_reply(&b, NULL, true), 0);
        ck_assert_int_eq(varlink_format_error(&b, VL_ERROR_SERVICE_PERMISSION_DENIED, NULL), 0);
        ck_assert_int_eq(varlink_format_invalid_parameter(&b, "estimate"), 0);
        ck_assert_int_eq(varlink_format_call(&b, "a.b.C", NULL, true, false), 0);
        ck_assert_int_eq(varlink_format_call(&b, "a.b.C", p, false, true), 0);

        static const char *const expected[] = {
                "{\"parameters\":{\"a\":1,\"path\":\"/x/y\"}}",
                "{\"parameters\":{},\"continues\":true}",
                "{\"error\":\"org.varlink.service.PermissionDenied\",\"parameters\":{}}",
                ("{\"error\":\"org.varlink.service.InvalidParameter\","
                 "\"parameters\":{\"parameter\":\"estimate\"}}"),
                "{\"method\":\"a.b.C\",\"parameters\":{},\"oneway\":true}",
                "{\"method\":\"a.b.C\",\"parameters\":{\"a\":1,\"path\":\"/x/y\"},\"more\":true}",
        };
        for (size_t i = 0; i < ELEMENTSOF(expected); i++) {
                take_message(&b, &m);
                ck_assert_msg(strcmp(m, expected[i]) == 0, "row %zu: got %s", i, m);
                free(m);
        }
        ck_assert_uint_eq(b.len, 0);
        varlink_buffer_clear(&b);
        ck_assert_ptr_null(b.data);
        ck_assert_uint_eq(b.cap, 0);
        varlink_buffer_clear(NULL);
        json_object_put(p);
}
END_TEST

static struct json_object *sample_parameters(void) {
        struct json_object *p = json_object_new_object(), *list = json_object_new_array();

        json_object_object_add(p, "estimate", json_object_new_int64(INT64_MAX));
        json_object_object_add(p, "big", json_object_new_uint64(UINT64_MAX));
        json_object_object_add(p, "neg", json_object_new_int64(-42));
        json_object_object_add(p, "ratio", json_object_new_double(1.5));
        json_object_object_add(p, "text",
                               json_object_new_string("quote\" backslash\\ slash/ nl\n tab\t \x01 é €"));
        json_object_object_add(p, "flag", json_object_new_boolean(1));
        json_object_object_add(p, "none", NULL);
        json_object_array_add(list, json_object_new_string("x"));
        json_object_array_add(list, json_object_new_object());
        json_object_object_add(p, "list", list);
        return p;
}

START_TEST(test_format_round_trip) {
        struct json_object *p = sample_parameters();
        static const char weird[] = "na\"me\\\n\x7f";
        VarlinkBuffer b = {};
        const char *reason;
        VarlinkReply reply;
        VarlinkCall call;
        char *m;

        /* reply */
        ck_assert_int_eq(varlink_format_reply(&b, p, true), 0);
        take_message(&b, &m);
        ck_assert_msg(varlink_reply_parse(m, strlen(m), &reply, &reason) == 0, "%s: %s", m, reason);
        ck_assert(reply.continues);
        ck_assert_ptr_null(reply.error);
        ck_assert_msg(json_object_equal(reply.parameters, p), "reply parameters differ: %s", m);
        varlink_reply_done(&reply);
        free(m);

        /* error */
        ck_assert_int_eq(varlink_format_error(&b, "io.tokenbudget.agent.BudgetExhausted", p), 0);
        take_message(&b, &m);
        ck_assert_msg(varlink_reply_parse(m, strlen(m), &reply, &reason) == 0, "%s: %s", m, reason);
        ck_assert_str_eq(reply.error, "io.tokenbudget.agent.BudgetExhausted");
        ck_assert(json_object_equal(reply.parameters, p));
        varlink_reply_done(&reply);
        free(m);

        /* invalid parameter with a name that needs escaping */
        ck_assert_int_eq(varlink_format_invalid_parameter(&b, weird), 0);
        take_message(&b, &m);
        ck_assert_msg(varlink_reply_parse(m, strlen(m), &reply, &reason) == 0, "%s: %s", m, reason);
        ck_assert_str_eq(reply.error, VL_ERROR_SERVICE_INVALID_PARAMETER);
        {
                struct json_object *name = NULL;

                ck_assert(json_object_object_get_ex(reply.parameters, "parameter", &name));
                ck_assert_str_eq(json_object_get_string(name), weird);
        }
        varlink_reply_done(&reply);
        free(m);

        /* calls, with each flag */
        for (int flags = 0; flags < 3; flags++) {
                ck_assert_int_eq(
                        varlink_format_call(&b, "io.tokenbudget.agent.Report", p, flags == 1, flags == 2),
                        0);
                take_message(&b, &m);
                ck_assert_msg(varlink_call_parse(m, strlen(m), &call, &reason) == 0, "%s: %s", m, reason);
                ck_assert_str_eq(call.method, "io.tokenbudget.agent.Report");
                ck_assert(call.oneway == (flags == 1) && call.more == (flags == 2) && !call.upgrade);
                ck_assert(json_object_equal(call.parameters, p));
                varlink_call_done(&call);
                free(m);
        }

        varlink_buffer_clear(&b);
        json_object_put(p);
}
END_TEST

START_TEST(test_buffer) {
        VarlinkBuffer b = {};
        size_t cap;

        ck_assert_int_eq(varlink_buffer_reserve(&b, 0), 0);
        ck_assert_int_eq(varlink_buffer_reserve(&b, 10), 0);
        ck_assert_uint_ge(b.cap, 10);
        memcpy(b.data, "0123456789", 10);
        b.len = 10;

        /* geometric growth: reserving one byte more than cap at least doubles it */
        cap = b.cap;
        ck_assert_int_eq(varlink_buffer_reserve(&b, cap - b.len + 1), 0);
        ck_assert_uint_ge(b.cap, 2 * cap);
        ck_assert(memcmp(b.data, "0123456789", 10) == 0);

        varlink_buffer_consume(&b, 3);
        ck_assert_uint_eq(b.len, 7);
        ck_assert(memcmp(b.data, "3456789", 7) == 0);
        varlink_buffer_consume(&b, 0);
        ck_assert_uint_eq(b.len, 7);
        varlink_buffer_consume(&b, 7);
        ck_assert_uint_eq(b.len, 0);

        ck_assert_int_eq(varlink_buffer_reserve(&b, SIZE_MAX), -ENOMEM);
        ck_assert_int_eq(varlink_buffer_reserve(&b, (size_t)PTRDIFF_MAX + 1), -ENOMEM);
        b.len = 1;
        ck_assert_int_eq(varlink_buffer_reserve(&b, SIZE_MAX), -ENOMEM);
        varlink_buffer_clear(&b);
        ck_assert_ptr_null(b.data);
        ck_assert_uint_eq(b.len + b.cap, 0);
}
END_TEST

static const VarlinkField request_fields[] = {
        {"estimate", VARLINK_FIELD_INT, true, 1000},    {"class", VARLINK_FIELD_STRING, true, 8},
        {"allocation", VARLINK_FIELD_STRING, false, 0}, {"count", VARLINK_FIELD_INT, false, 0},
        {"flag", VARLINK_FIELD_BOOL, true, 0},
};

START_TEST(test_params_parse) {
        static const struct {
                const char *params;
                const char *bad; /* NULL: valid */
        } rows[] = {
                {"{\"allocation\":\"a1\",\"count\":0}", NULL},
                {"{\"allocation\":\"a1\",\"count\":9223372036854775807,\"estimate\":1000,\"class\":"
                 "\"12345678\","
                 "\"flag\":false}",
                 NULL},
                {"{\"allocation\":\"\",\"count\":1,\"estimate\":null,\"class\":null,\"flag\":null}", NULL},
                /* unknown */
                {"{\"allocation\":\"a1\",\"count\":1,\"extra\":1}", "extra"},
                {"{\"allocation\":\"a1\",\"count\":1,\"Estimate\":1}", "Estimate"},
                /* missing or null required */
                {"{\"count\":1}", "allocation"},
                {"{\"allocation\":\"a1\"}", "count"},
                {"{\"allocation\":\"a1\",\"count\":null}", "count"},
                {"{}", "allocation"},
                /* mistyped */
                {"{\"allocation\":1,\"count\":1}", "allocation"},
                {"{\"allocation\":\"a1\",\"count\":\"1\"}", "count"},
                {"{\"allocation\":\"a1\",\"count\":true}", "count"},
                {"{\"allocation\":\"a1\",\"count\":5.0}", "count"},
                {"{\"allocation\":\"a1\",\"count\":1e3}", "count"},
                {"{\"allocation\":\"a1\",\"count\":1.5}", "count"},
                {"{\"allocation\":\"a1\",\"count\":[1]}", "count"},
                {"{\"allocation\":\"a1\",\"count\":1,\"flag\":1}", "flag"},
                {"{\"allocation\":\"a1\",\"count\":1,\"flag\":\"true\"}", "flag"},
                {"{\"allocation\":{},\"count\":1}", "allocation"},
                /* negative, out of range */
                {"{\"allocation\":\"a1\",\"count\":-1}", "count"},
                {"{\"allocation\":\"a1\",\"count\":-9223372036854775808}", "count"},
                {"{\"allocation\":\"a1\",\"count\":9223372036854775808}", "count"},
                {"{\"allocation\":\"a1\",\"count\":18446744073709551615}", "count"},
                {"{\"allocation\":\"a1\",\"count\":99999999999999999999999}", "count"},
                {"{\"allocation\":\"a1\",\"count\":1,\"estimate\":1001}", "estimate"},
                {"{\"allocation\":\"a1\",\"count\":1,\"estimate\":-0}", NULL},
                /* strings: too long, embedded NUL */
                {"{\"allocation\":\"a1\",\"count\":1,\"class\":\"123456789\"}", "class"},
                {"{\"allocation\":\"a\\u0000b\",\"count\":1}", "allocation"},
                {"{\"allocation\":\"a1\",\"count\":1,\"class\":\"\\u0000\"}", "class"},
        };

        for (size_t i = 0; i < ELEMENTSOF(rows); i++) {
                VarlinkValue values[ELEMENTSOF(request_fields)];
                struct json_object *p = json_tokener_parse(rows[i].params);
                const char *bad = "unset";
                int r;

                ck_assert_msg(p != NULL, "row %zu: test input does not parse", i);
                r = varlink_params_parse(p, request_fields, ELEMENTSOF(request_fields), values, &bad);
                if (rows[i].bad) {
                        ck_assert_msg(r == -EINVAL, "row %zu (%s): got %d", i, rows[i].params, r);
                        ck_assert_msg(bad && strcmp(bad, rows[i].bad) == 0,
                                      "row %zu: bad '%s', expected '%s'", i, bad ? bad : "(null)",
                                      rows[i].bad);
                } else
                        ck_assert_msg(r == 0, "row %zu (%s): got %d, bad %s", i, rows[i].params, r,
                                      bad ? bad : "(null)");
                json_object_put(p);
        }
}
END_TEST

START_TEST(test_params_values) {
        static const char msg[] = "{\"method\":\"a.b.C\",\"parameters\":{\"allocation\":\"a-1\",\"count\":"
                                  "9223372036854775807,\"estimate\":1000,\"flag\":true,\"class\":null}}";
        VarlinkValue values[ELEMENTSOF(request_fields)];
        const char *reason, *bad;
        VarlinkCall call;

        ck_assert_int_eq(varlink_call_parse(msg, strlen(msg), &call, &reason), 0);
        ck_assert_int_eq(varlink_params_parse(call.parameters, request_fields, ELEMENTSOF(request_fields),
                                              values, &bad),
                         0);
        ck_assert(values[0].present && values[0].i == 1000);
        ck_assert(!values[1].present && values[1].s == NULL);
        ck_assert(values[2].present);
        ck_assert_str_eq(values[2].s, "a-1");
        ck_assert(values[3].present && values[3].i == INT64_MAX);
        ck_assert(values[4].present && values[4].b);
        varlink_call_done(&call);

        /* all optional: NULL parameters and no table are fine */
        ck_assert_int_eq(varlink_params_parse(NULL, request_fields, 0, values, &bad), 0);
        ck_assert_int_eq(varlink_params_parse(NULL, request_fields, 2, values, &bad), 0);
        ck_assert(!values[0].present && !values[1].present);
        ck_assert_int_eq(varlink_params_parse(NULL, request_fields, 3, values, &bad), -EINVAL);
        ck_assert_str_eq(bad, "allocation");

        /* embedded NUL built directly, not through the parser */
        {
                struct json_object *p = json_object_new_object();

                json_object_object_add(p, "allocation", json_object_new_string_len("ab\0cd", 5));
                json_object_object_add(p, "count", json_object_new_int(1));
                ck_assert_int_eq(
                        varlink_params_parse(p, request_fields, ELEMENTSOF(request_fields), values, &bad),
                        -EINVAL);
                ck_assert_str_eq(bad, "allocation");
                json_object_put(p);
        }
}
END_TEST

START_TEST(test_method_split) {
        static const struct {
                const char *method;
                int expected;
                size_t interface_len;
        } rows[] = {
                {"io.tokenbudget.agent.Request", 0, 20},
                {"org.varlink.service.GetInfo", 0, 19},
                {"a.b.C", 0, 3},
                {"a.B", -EINVAL, 0}, /* an interface needs two labels */
                {"a-b.c-d.E", 0, 7},
                {"io.tokenbudget.agent", -EINVAL, 0},
                {"Request", -EINVAL, 0},
                {"", -EINVAL, 0},
                {".Request", -EINVAL, 0},
                {"io.agent.", -EINVAL, 0},
                {"io.Agent.Request", 0, 8}, /* UAPI.20: upper case in interface names */
                {"com.example.DoesNotExist.Foo", 0, 24},
                {"A.B", -EINVAL, 0},
                {"A.9.C", 0, 3},
                {"9.a.C", -EINVAL, 0},
                {"a.b-.C", -EINVAL, 0},
                {"a.b.C-", -EINVAL, 0},
                {"io.agent.request", -EINVAL, 0},
        };
        size_t interface_len;

        for (size_t i = 0; i < ELEMENTSOF(rows); i++) {
                int r = varlink_method_split(rows[i].method, &interface_len);

                ck_assert_msg(r == rows[i].expected, "row %zu (%s): got %d", i, rows[i].method, r);
                if (r == 0)
                        ck_assert_msg(interface_len == rows[i].interface_len, "row %zu: interface_len %zu",
                                      i, interface_len);
        }
        ck_assert_int_eq(varlink_method_split(NULL, &interface_len), -EINVAL);
}
END_TEST

static char *read_file(const char *path) {
        FILE *f = fopen(path, "re");
        char *text = NULL;
        size_t size = 0;

        ck_assert_msg(f != NULL, "cannot open %s", path);
        ck_assert(getdelim(&text, &size, '\0', f) >= 0);
        fclose(f);
        return text;
}

START_TEST(test_interface_descriptions) {
        static const char *const files[] = {
                "org.varlink.service",
                "io.tokenbudget.agent",
                "io.tokenbudget.admin",
        };
        size_t n = 0;

        for (size_t i = 0; i < ELEMENTSOF(files); i++) {
                char path[512], *text;
                const char *d = varlink_interface_description(files[i]);
                bool listed = false;

                snprintf(path, sizeof(path), "%s/protocol/%s.varlink", SRCDIR, files[i]);
                text = read_file(path);
                ck_assert_msg(d != NULL, "row %zu: %s not embedded", i, files[i]);
                ck_assert_msg(strcmp(d, text) == 0, "row %zu: %s differs from %s", i, files[i], path);
                for (size_t k = 0; varlink_interfaces[k]; k++)
                        listed = listed || strcmp(varlink_interfaces[k], files[i]) == 0;
                ck_assert_msg(listed, "row %zu: %s not in varlink_interfaces", i, files[i]);
                free(text);
        }
        for (; varlink_interfaces[n]; n++)
                ck_assert_msg(varlink_interface_description(varlink_interfaces[n]) != NULL, "interface %zu",
                              n);
        ck_assert_uint_eq(n, ELEMENTSOF(files));

        ck_assert_ptr_null(varlink_interface_description("org.example.nope"));
        ck_assert_ptr_null(varlink_interface_description("io.tokenbudget"));
        ck_assert_ptr_null(varlink_interface_description(""));
        ck_assert_ptr_null(varlink_interface_description(NULL));
}
END_TEST

/* The flat fast path: varlink_call_parse_flat() and varlink_flat_params_parse()
 * against the strict path, row by row with flat_differential()
 * (tests/common/flat-differential.c); tests/property/property-codec.c runs
 * it over generated calls. */

START_TEST(test_flat_accepted) {
        static const struct {
                const char *msg;
                const char *method;
                size_t n_params;
                bool oneway, more, upgrade;
        } rows[] = {
                {"{\"method\":\"io.tokenbudget.agent.Report\",\"parameters\":{\"allocation\":"
                 "\"0000000100000001\",\"inputTokens\":400,\"outputTokens\":400}}",
                 "io.tokenbudget.agent.Report", 3},
                {"{\"method\":\"a.b.C\"}", "a.b.C", 0},
                {" \t\r\n{ \"method\" : \"a.b.C\" , \"parameters\" : null } \n", "a.b.C", 0},
                {"{\"parameters\":{},\"method\":\"a-b.c0.D9\"}", "a-b.c0.D9", 0},
                {"{\"method\":\"Com.Example.DoesNotExist.Foo\"}", "Com.Example.DoesNotExist.Foo", 0},
                {"{\"method\":\"a.b.C\",\"oneway\":true,\"more\":false,\"upgrade\":false}", "a.b.C", 0,
                 true},
                {"{\"more\":true,\"method\":\"a.b.C\"}", "a.b.C", 0, false, true},
                {"{\"method\":\"a.b.C\",\"upgrade\":true}", "a.b.C", 0, false, false, true},
                {"{\"method\":\"a.b.C\",\"parameters\":{\"a\":0,\"b\":999999999999999999,\"c\":true,"
                 "\"d\":false,\"e\":null,\"f\":\"\",\"g\":\"caf\xc3\xa9 \xf0\x9f\x98\x80\x7f\",\"\":1}}",
                 "a.b.C", 8},
                {"{\"method\":\"a.b.C\",\"parameters\":{\"x.y\":\"a/b'c\",\"\xc3\xa9\":1}}", "a.b.C", 2},
        };

        for (size_t i = 0; i < ELEMENTSOF(rows); i++) {
                size_t len = strlen(rows[i].msg);
                char *msg = strdup(rows[i].msg), label[32];
                VarlinkFlatCall fc;

                snprintf(label, sizeof(label), "row %zu", i);
                ck_assert_msg(flat_differential(label, rows[i].msg, len), "row %zu: not flat", i);
                ck_assert_int_eq(varlink_call_parse_flat(msg, len, &fc), 1);
                ck_assert_msg(strcmp(fc.method, rows[i].method) == 0, "row %zu: method %s", i, fc.method);
                ck_assert_msg(fc.n_params == rows[i].n_params, "row %zu: %zu params", i, fc.n_params);
                ck_assert_msg(fc.oneway == rows[i].oneway && fc.more == rows[i].more &&
                                      fc.upgrade == rows[i].upgrade,
                              "row %zu: flags", i);
                free(msg);
        }
}
END_TEST

START_TEST(test_flat_values) {
        char msg[] = "{\"method\":\"io.tokenbudget.agent.Report\",\"parameters\":{\"allocation\":"
                     "\"0000000100000001\",\"inputTokens\":400,\"outputTokens\":400,\"flag\":true}}";
        VarlinkValue values[ELEMENTSOF(flat_tables_all)];
        const char *bad = "unset";
        VarlinkFlatCall fc;

        ck_assert_int_eq(varlink_call_parse_flat(msg, strlen(msg), &fc), 1);
        ck_assert_str_eq(fc.method, "io.tokenbudget.agent.Report");
        ck_assert_str_eq(fc.params[0].name, "allocation");
        ck_assert(fc.params[0].type == VARLINK_FIELD_STRING && fc.params[0].s_len == 16);
        ck_assert_str_eq(fc.params[0].s, "0000000100000001");
        ck_assert(fc.params[1].type == VARLINK_FIELD_INT && fc.params[1].i == 400);
        ck_assert(fc.params[3].type == VARLINK_FIELD_BOOL && fc.params[3].b);

        ck_assert_int_eq(varlink_flat_params_parse(&fc, flat_tables_all, 6, values, &bad), 0);
        ck_assert_ptr_null(bad);
        ck_assert(values[0].present && strcmp(values[0].s, "0000000100000001") == 0);
        ck_assert(values[1].present && values[1].i == 400);
        ck_assert(values[2].present && values[2].i == 400);
        ck_assert(values[3].present && values[3].b);
        ck_assert(!values[4].present && !values[5].present);
        /* count is required */
        ck_assert_int_eq(varlink_flat_params_parse(&fc, flat_tables_all, 7, values, &bad), -EINVAL);
        ck_assert_str_eq(bad, "count");
        /* flag is not in the table: unknown names come first */
        ck_assert_int_eq(varlink_flat_params_parse(&fc, flat_tables_all, 3, values, &bad), -EINVAL);
        ck_assert_str_eq(bad, "flag");
}
END_TEST

START_TEST(test_flat_refused) {
        static const char *const rows[] = {
                /* valid for the strict path, but not flat */
                "{\"method\":\"a.b.C\",\"org.example\":1}",
                "{\"method\":\"a.b.C\",\"parameters\":{\"a\":-1}}",
                "{\"method\":\"a.b.C\",\"parameters\":{\"a\":-0}}",
                "{\"method\":\"a.b.C\",\"parameters\":{\"a\":1.5}}",
                "{\"method\":\"a.b.C\",\"parameters\":{\"a\":1e3}}",
                "{\"method\":\"a.b.C\",\"parameters\":{\"a\":1000000000000000000}}",
                "{\"method\":\"a.b.C\",\"parameters\":{\"a\":9223372036854775807}}",
                "{\"method\":\"a.b.C\",\"parameters\":{\"a\":\"x\\ny\"}}",
                "{\"method\":\"a.b.C\",\"parameters\":{\"a\":\"\\u0041\"}}",
                "{\"method\":\"a.b\\u002eC\"}",
                "{\"m\\u0065thod\":\"a.b.C\"}",
                "{\"method\":\"a.b.C\",\"parameters\":{\"a\":{}}}",
                "{\"method\":\"a.b.C\",\"parameters\":{\"a\":[]}}",
                "{\"method\":\"a.b.C\",\"parameters\":{\"a\":1,\"b\":2,\"c\":3,\"d\":4,\"e\":5,\"f\":6,"
                "\"g\":7,"
                "\"h\":8,\"i\":9}}",
                /* refused by both */
                "",
                "   ",
                "{}",
                "[]",
                "null",
                "{\"method\":\"a.b.C\"",
                "{\"method\":\"a.b.C\"} x",
                "{\"method\":\"a.b.C\"}{}",
                "{\"method\":\"a.b.C\",}",
                "{,\"method\":\"a.b.C\"}",
                "{\"method\":\"a.b.C\" \"more\":true}",
                "{\"method\"\"a.b.C\"}",
                "{\"method\":\"a.B\"}",
                "{\"method\":\"a.b.c\"}",
                "{\"method\":\"A.b-.C\"}",
                "{\"method\":\"A.b_c.D\"}",
                "{\"method\":\"1A.b.C\"}",
                "{\"method\":null}",
                "{\"method\":1}",
                "{\"method\":\"a.b.C\",\"method\":\"a.b.C\"}",
                "{\"method\":\"a.b.C\",\"bogus\":1}",
                "{\"method\":\"a.b.C\",\"oneway\":true,\"more\":true}",
                "{\"method\":\"a.b.C\",\"oneway\":null}",
                "{\"method\":\"a.b.C\",\"oneway\":1}",
                "{\"method\":\"a.b.C\",\"oneway\":truex}",
                "{\"method\":\"a.b.C\",\"oneway\":tru}",
                "{\"method\":\"a.b.C\",\"parameters\":[]}",
                "{\"method\":\"a.b.C\",\"parameters\":\"x\"}",
                "{\"method\":\"a.b.C\",\"parameters\":{\"a\":1,\"a\":2}}",
                "{\"method\":\"a.b.C\",\"parameters\":{\"a\":01}}",
                "{\"method\":\"a.b.C\",\"parameters\":{\"a\":1a}}",
                "{\"method\":\"a.b.C\",\"parameters\":{\"a\":\"x\ty\"}}",
                "{\"method\":\"a.b.C\",\"parameters\":{\"a\":\"\xc0\x80\"}}",
                "{\"method\":\"a.b.C\",\"parameters\":{\"a\":\"\xed\xa0\x80\"}}",
                "{\"method\":\"a.b.C\",\"parameters\":{\"a\":\"\xf4\x90\x80\x80\"}}",
                "{\"method\":\"a.b.C\",\"parameters\":{\"a\":\"\xe2\x82\"}}",
                "{\"method\":\"a.b.C\",\"parameters\":{\"a\":\"x}}",
                "{\"method\":\"a.b.C\",\"parameters\":{\"a\"}}",
                "{\"method\":\"a.b.C\",\"parameters\":{\"a\":}}",
                "{\"method\":\"a.b.C\",\"parameters\":{\"a\":NaN}}",
                "{\"method\":\"a.b.C\"}\v",
                "\f{\"method\":\"a.b.C\"}",
                "\xef\xbb\xbf{\"method\":\"a.b.C\"}",
        };

        for (size_t i = 0; i < ELEMENTSOF(rows); i++) {
                char label[32];

                snprintf(label, sizeof(label), "row %zu", i);
                ck_assert_msg(!flat_differential(label, rows[i], strlen(rows[i])), "row %zu (%s): flat", i,
                              rows[i]);
        }
        /* embedded NUL bytes */
        ck_assert(!flat_differential("nul in string",
                                     BYTES("{\"method\":\"a.b.C\",\"parameters\":{\"a\":\"x\0\"}}")));
        ck_assert(!flat_differential("nul after", BYTES("{\"method\":\"a.b.C\"}\0")));
}
END_TEST

/* No state survives a message: one that fails right after a high surrogate
 * escape leaves nothing pending for the next (json-c's tokener, reused by
 * the server, kept it; found by fuzz-codec, corpus
 * crash-tokener-surrogate-state). */
START_TEST(test_no_state_between_messages) {
        static const char bad[] = "{\"method\":\"a.b.C\",\"parameters\":{\"x\":\"\\ud83d\\uzzzz\"}}";
        static const char good[] = "{\"method\":\"a.b.C\",\"parameters\":{\"x\":\"\\u0041\"}}";
        const char *reason = NULL;
        json_object *x;
        VarlinkCall call;

        ck_assert_int_lt(varlink_call_parse(bad, strlen(bad), &call, &reason), 0);
        ck_assert_int_eq(varlink_call_parse(good, strlen(good), &call, &reason), 0);
        ck_assert(json_object_object_get_ex(call.parameters, "x", &x));
        ck_assert_str_eq(json_object_get_string(x), "A");
        varlink_call_done(&call);
}
END_TEST

static Suite *codec_suite(void) {
        Suite *s = suite_create("codec");
        TCase *tc = tcase_create("core");

        tcase_add_test(tc, test_frame_split);
        tcase_add_test(tc, test_frame_pipelined);
        tcase_add_test(tc, test_frame_limit);
        tcase_add_test(tc, test_call_malformed);
        tcase_add_test(tc, test_call_parameters_equivalent);
        tcase_add_test(tc, test_call_vendor_headers);
        tcase_add_test(tc, test_call_flags);
        tcase_add_test(tc, test_call_depth);
        tcase_add_test(tc, test_reply_parse);
        tcase_add_test(tc, test_reply_fields);
        tcase_add_test(tc, test_format_exact);
        tcase_add_test(tc, test_format_round_trip);
        tcase_add_test(tc, test_buffer);
        tcase_add_test(tc, test_params_parse);
        tcase_add_test(tc, test_params_values);
        tcase_add_test(tc, test_method_split);
        tcase_add_test(tc, test_interface_descriptions);
        suite_add_tcase(s, tc);

        /* The generated differential run is tests/property/property-codec.c. */
        tc = tcase_create("flat");
        tcase_add_test(tc, test_flat_accepted);
        tcase_add_test(tc, test_flat_values);
        tcase_add_test(tc, test_flat_refused);
        tcase_add_test(tc, test_no_state_between_messages);
        suite_add_tcase(s, tc);
        return s;
}

int main(void) {
        return tb_check_main(codec_suite());
}
