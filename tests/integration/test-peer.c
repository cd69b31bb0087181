/* SPDX-License-Identifier: MIT */
/*
 * The daemon's peers and calls (daemon/peer.c, daemon/call.c) on a real
 * libevent loop over real socketpairs, with a method table of the test's
 * own: "org.example.test.Now" answers at once, "org.example.test.Later" is deferred and answered
 * when the test says. Shows that replies stay in order behind a deferred
 * call (the next message is not dispatched), that a pending call whose peer
 * disconnects is cancelled exactly once and its late answer dropped, that a
 * deferred oneway call holds nothing up, and that no reply reaches its
 * socket before the iteration's commit hook ran.
 */
#define _GNU_SOURCE
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/event.h>
#include <json-c/json.h>

#include "call.h"
#include "peer.h"
#include "tb-check.h"

#define MAX_LATER 8

typedef struct Fixture {
        struct event_base *base;
        PeerSet *set;
        int client_fd;
        unsigned n_now, n_later, n_commits, n_cancelled, n_disconnected;
        int bytes_at_commit;    /* FIONREAD on the client at the last commit, -1 before */
        bool nothing_to_commit; /* commit_pending says no: replies leave at once */
        bool with_cancel;       /* Later defers with cancel_cb, as a queue would */
        Call *later[MAX_LATER];
        int64_t later_n[MAX_LATER];
        size_t n_pending;
} Fixture;

static void cancel_cb(Call *call, void *userdata);

static int handle(Fixture *f, Call *call, const char *method, int64_t n) {
        if (strcmp(method, "org.example.test.Now") == 0) {
                f->n_now++;
                return call_reply_fields(call, (const ReplyField[]){{"n", NULL, (uint64_t)n}}, 1);
        }
        if (strcmp(method, "org.example.test.Later") == 0) {
                f->n_later++;
                ck_assert_uint_lt(f->n_pending, MAX_LATER);
                f->later_n[f->n_pending] = n;
                f->later[f->n_pending] = call_defer(call, f->with_cancel ? cancel_cb : NULL, f);
                ck_assert_ptr_nonnull(f->later[f->n_pending]);
                f->n_pending++;
                return 0;
        }
        return call_error(call, "org.example.test.Unknown", NULL);
}

static void cancel_cb(Call *call, void *userdata) {
        Fixture *f = userdata;
        f->n_cancelled++;
}

static int handle_call_cb(void *userdata, Call *call, const VarlinkCall *m, uint64_t now) {
        json_object *n = NULL;

        json_object_object_get_ex(m->parameters, "n", &n);
        return handle(userdata, call, m->method, n ? json_object_get_int64(n) : 0);
}

static int handle_flat_call_cb(void *userdata, Call *call, const VarlinkFlatCall *m, uint64_t now) {
        int64_t n = 0;

        for (size_t i = 0; i < m->n_params; i++)
                if (strcmp(m->params[i].name, "n") == 0)
                        n = m->params[i].i;
        return handle(userdata, call, m->method, n);
}

static void disconnected_cb(void *userdata, void *session, uint64_t now) {
        Fixture *f = userdata;
        f->n_disconnected++;
}

static bool may_close_idle_cb(void *userdata, void *session) {
        return true;
}

/* As the durable store will: the iteration's calls left writes to commit. */
static bool commit_pending_cb(void *userdata) {
        Fixture *f = userdata;
        return !f->nothing_to_commit;
}

static void commit_cb(void *userdata) {
        Fixture *f = userdata;

        f->n_commits++;
        ck_assert_int_eq(ioctl(f->client_fd, FIONREAD, &f->bytes_at_commit), 0);
}

static const PeerSetOps ops = {
        .handle_call = handle_call_cb,
        .handle_flat_call = handle_flat_call_cb,
        .disconnected = disconnected_cb,
        .may_close_idle = may_close_idle_cb,
        .commit_pending = commit_pending_cb,
        .commit = commit_cb,
};

static void fixture_init(Fixture *f) {
        PeerSetLimits limits = {
                .max_message_bytes = 65536,
                .max_output_bytes = 1 << 20,
                .max_output_bytes_per_uid = 1 << 22,
                .log_interval_usec = 1000000,
                .log_burst = 10,
        };
        Identity id = {.pid = getpid(), .uid = getuid(), .gid = getgid(), .comm = "test-peer"};
        int fds[2];

        *f = (Fixture){.bytes_at_commit = -1};
        f->base = event_base_new();
        ck_assert_ptr_nonnull(f->base);
        f->set = peer_set_new(f->base, &limits, &ops, f);
        ck_assert_ptr_nonnull(f->set);
        ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds), 0);
        ck_assert_int_eq(fcntl(fds[0], F_SETFL, O_NONBLOCK), 0);
        f->client_fd = fds[1];
        ck_assert_int_eq(peer_set_add(f->set, fds[0], &id, NULL, 0), 0);
}

static void fixture_done(Fixture *f) {
        for (size_t i = 0; i < f->n_pending; i++)
                call_unref(f->later[i]);
        f->set = peer_set_free(f->set);
        if (f->client_fd >= 0)
                close(f->client_fd);
        event_base_free(f->base);
}

/* One turn of the loop, without waiting: what the sockets hold is handled. */
static void turn(Fixture *f) {
        ck_assert_int_ge(event_base_loop(f->base, EVLOOP_ONCE | EVLOOP_NONBLOCK), 0);
}

static void send_calls(Fixture *f, const char *const *calls, size_t n) {
        for (size_t i = 0; i < n; i++)
                ck_assert_int_eq(send(f->client_fd, calls[i], strlen(calls[i]) + 1, 0),
                                 (ssize_t)strlen(calls[i]) + 1);
}

static int client_pending_bytes(Fixture *f) {
        int n = -1;

        ck_assert_int_eq(ioctl(f->client_fd, FIONREAD, &n), 0);
        return n;
}

/* Reads every reply there is and returns them as "n,n,n" (or "E" for errors). */
static void read_replies(Fixture *f, char *out, size_t out_size) {
        char buf[4096];
        ssize_t len = recv(f->client_fd, buf, sizeof(buf) - 1, MSG_DONTWAIT);
        size_t pos = 0;

        out[0] = 0;
        if (len <= 0)
                return;
        for (ssize_t i = 0; i < len;) {
                const char *msg = buf + i;
                json_object *o = json_tokener_parse(msg), *params = NULL, *n = NULL;

                ck_assert_msg(o, "reply is not JSON: %s", msg);
                if (json_object_object_get_ex(o, "parameters", &params) &&
                    json_object_object_get_ex(params, "n", &n))
                        pos += (size_t)snprintf(out + pos, out_size - pos, "%s%" PRId64, pos ? "," : "",
                                                json_object_get_int64(n));
                else
                        pos += (size_t)snprintf(out + pos, out_size - pos, "%sE", pos ? "," : "");
                json_object_put(o);
                i += (ssize_t)strlen(msg) + 1;
        }
}

START_TEST(test_commit_before_write) {
        static const char *const calls[] = {
                "{\"method\":\"org.example.test.Now\",\"parameters\":{\"n\":1}}",
                "{\"method\":\"org.example.test.Now\",\"parameters\":{\"n\":2}}",
                "{\"method\":\"org.example.test.Now\",\"parameters\":{\"n\":3}}",
        };
        char replies[256];
        Fixture f;

        fixture_init(&f);
        send_calls(&f, calls, 3);
        turn(&f);
        ck_assert_uint_eq(f.n_now, 3);
        ck_assert_uint_eq(f.n_commits, 1);
        ck_assert_int_eq(f.bytes_at_commit, 0); /* nothing had been written when the hook ran */
        read_replies(&f, replies, sizeof(replies));
        ck_assert_str_eq(replies, "1,2,3");

        /* A turn with nothing to answer commits nothing. */
        turn(&f);
        ck_assert_uint_eq(f.n_commits, 1);
        fixture_done(&f);
}
END_TEST

/* With nothing to commit, replies are not held: they are on the socket
 * while the loop is still serving (no commit hook needed at all). */
START_TEST(test_nothing_to_commit_writes_at_once) {
        static const char *const calls[] = {
                "{\"method\":\"org.example.test.Now\",\"parameters\":{\"n\":1}}",
                "{\"method\":\"org.example.test.Now\",\"parameters\":{\"n\":2}}",
        };
        char replies[256];
        Fixture f;

        fixture_init(&f);
        f.nothing_to_commit = true;
        send_calls(&f, calls, 2);
        turn(&f);
        ck_assert_uint_eq(f.n_now, 2);
        ck_assert_uint_eq(f.n_commits, 0);
        read_replies(&f, replies, sizeof(replies));
        ck_assert_str_eq(replies, "1,2");
        fixture_done(&f);
}
END_TEST

START_TEST(test_deferred_keeps_order) {
        static const char *const calls[] = {
                "{\"method\":\"org.example.test.Later\",\"parameters\":{\"n\":1}}",
                "{\"method\":\"org.example.test.Now\",\"parameters\":{\"n\":2}}",
                "{\"method\":\"org.example.test.Now\",\"parameters\":{\"n\":3}}",
        };
        char replies[256];
        Fixture f;

        fixture_init(&f);
        send_calls(&f, calls, 3);
        turn(&f);
        ck_assert_uint_eq(f.n_later, 1);
        ck_assert_uint_eq(f.n_now, 0); /* not dispatched behind the deferred call */
        ck_assert_uint_eq(f.n_commits, 0);
        ck_assert_int_eq(client_pending_bytes(&f), 0);
        turn(&f);
        ck_assert_uint_eq(f.n_now, 0);

        /* Answered later (as a timer or a release would), outside any callback of the peer. */
        ck_assert_int_eq(call_reply_fields(f.later[0], (const ReplyField[]){{"n", NULL, 1}}, 1), 0);
        ck_assert_uint_eq(f.n_now, 0); /* the rest waits for the end of the iteration */
        ck_assert_int_eq(client_pending_bytes(&f), 0);
        turn(&f);
        ck_assert_uint_eq(f.n_now, 2);
        ck_assert_uint_eq(f.n_commits, 1);
        ck_assert_int_eq(f.bytes_at_commit, 0);
        read_replies(&f, replies, sizeof(replies));
        ck_assert_str_eq(replies, "1,2,3");

        /* A second answer to the same call writes nothing. */
        ck_assert_int_eq(call_reply_fields(f.later[0], (const ReplyField[]){{"n", NULL, 9}}, 1), 0);
        turn(&f);
        ck_assert_int_eq(client_pending_bytes(&f), 0);
        fixture_done(&f);
}
END_TEST

/* A deferral with a cancel callback; the peer closes first. */
START_TEST(test_cancel_exactly_once) {
        static const char *const calls[] = {
                "{\"method\":\"org.example.test.Later\",\"parameters\":{\"n\":1}}"};
        Fixture f;

        fixture_init(&f);
        f.with_cancel = true;
        send_calls(&f, calls, 1);
        turn(&f);
        ck_assert_uint_eq(f.n_pending, 1);
        ck_assert_uint_eq(f.n_cancelled, 0);

        close(f.client_fd);
        f.client_fd = -1;
        turn(&f);
        ck_assert_uint_eq(f.n_cancelled, 1);
        ck_assert_uint_eq(f.n_disconnected, 1);
        /* The late answer is dropped, and nothing runs twice. */
        ck_assert_int_eq(call_reply_fields(f.later[0], (const ReplyField[]){{"n", NULL, 1}}, 1), 0);
        turn(&f);
        f.set = peer_set_free(f.set);
        ck_assert_uint_eq(f.n_cancelled, 1);
        ck_assert_uint_eq(f.n_disconnected, 1);
        fixture_done(&f);
}
END_TEST

/* The daemon stopping with a call pending cancels it once too. */
START_TEST(test_free_cancels_pending) {
        static const char *const calls[] = {
                "{\"method\":\"org.example.test.Later\",\"parameters\":{\"n\":1}}"};
        Fixture f;

        fixture_init(&f);
        f.with_cancel = true;
        send_calls(&f, calls, 1);
        turn(&f);
        f.set = peer_set_free(f.set);
        ck_assert_uint_eq(f.n_cancelled, 1);
        ck_assert_uint_eq(f.n_disconnected, 1);
        fixture_done(&f);
}
END_TEST

START_TEST(test_oneway_deferred_holds_nothing) {
        static const char *const calls[] = {
                "{\"method\":\"org.example.test.Later\",\"parameters\":{\"n\":1},\"oneway\":true}",
                "{\"method\":\"org.example.test.Now\",\"parameters\":{\"n\":2}}",
        };
        char replies[256];
        Fixture f;

        fixture_init(&f);
        send_calls(&f, calls, 2);
        turn(&f);
        ck_assert_uint_eq(f.n_later, 1);
        ck_assert_uint_eq(f.n_now, 1); /* not held up: a oneway call has no reply to keep in order */
        read_replies(&f, replies, sizeof(replies));
        ck_assert_str_eq(replies, "2");
        /* Its later answer writes nothing. */
        ck_assert_int_eq(call_reply_fields(f.later[0], (const ReplyField[]){{"n", NULL, 1}}, 1), 0);
        turn(&f);
        ck_assert_int_eq(client_pending_bytes(&f), 0);
        fixture_done(&f);
}
END_TEST

static Suite *peer_suite(void) {
        Suite *s = suite_create("peer");
        TCase *tc = tcase_create("calls");

        tcase_add_test(tc, test_commit_before_write);
        tcase_add_test(tc, test_nothing_to_commit_writes_at_once);
        tcase_add_test(tc, test_deferred_keeps_order);
        tcase_add_test(tc, test_cancel_exactly_once);
        tcase_add_test(tc, test_free_cancels_pending);
        tcase_add_test(tc, test_oneway_deferred_holds_nothing);
        suite_add_tcase(s, tc);
        return s;
}

int main(void) {
        return tb_check_main(peer_suite());
}
