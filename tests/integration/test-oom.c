/* SPDX-License-Identifier: MIT */
/*
 * Out of memory never aborts (issue 8, point 8): the real daemon runs with
 * the failmalloc shim (failmalloc.c) preloaded, which, once armed by
 * SIGUSR1, fails one allocation in N. Several connections then drive every
 * method again and again: GetInfo, GetInterfaceDescription, Request, Report
 * and Release cycles (flat and strict-parser calls), admin Status (over
 * hundreds of process scopes, so it allocates a lot) and List, calls that
 * must get an error, pipelined batches, a burst past
 * max_allocations_per_process, oneway calls, reconnects, new processes
 * connecting, and reloads (SIGHUP). Each call may get its right answer, an
 * error or lose its connection; nothing else is allowed: no malformed reply,
 * no wrong one (numbers are checked, and a call whose answer never changes
 * must get the very text it got unarmed, or another error), no hang, no
 * crash, no exit. After SIGUSR2 disarms the shim, the daemon must still run,
 * reload, answer every method correctly on a fresh connection, and keep its
 * ledger consistent (Status, List and the process scopes agree on
 * allocations, reservations and usage; nothing stays reserved once every
 * connection is closed), with no abort in its log; the shim must have
 * injected failures, so the test cannot pass without testing anything. One
 * Check test per failure rate (1 in 3, 20, 200): an unarmed round (which
 * must be clean) and two armed rounds on one daemon.
 *
 * FAILMALLOC_SEED (default 1) picks the failure pattern and the call mix, so
 * a failing seed can be rerun; TB_OOM_ACTIONS=act_list,act_status (names
 * from the actions table) runs only those, to find what one frequent crash
 * hides. When the daemon dies the shim prints a backtrace into its stderr,
 * which the failure output shows. Skips (77) when the daemon is built with
 * AddressSanitizer (tb_check_skip(), so the run exits 77): ASan replaces
 * malloc itself and refuses a preloaded one.
 */
#define _GNU_SOURCE
#include "harness.h"
#include "tb-check.h"

#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

/* Hundreds of process scopes make Status build a reply of ~100 KiB. */
#define N_SCOPE_PROCESSES 300
#define N_CONNS           6
#define STEPS_PER_ROUND   500
#define ROUNDS            2
#define MAX_HELD          2
#define BURST             30
/* A reply that does not come within this long is a hang, not a slow machine. */
#define RECV_TIMEOUT_MSEC 5000

#define ELEMENTSOF(a) (sizeof(a) / sizeof((a)[0]))

/* A grant reserves twice its size (hard_multiplier), so a Request of 90000
 * is over the process scope's 100000 in flight: BudgetExhausted. A burst of
 * BURST Requests passes max_allocations_per_process: TooManyAllocations. */
#define CONFIG                                                                                              \
        "hard_multiplier = 2.0;\n"                                                                          \
        "warn_multiplier = 1.5;\n"                                                                          \
        "log_level = \"info\";\n"                                                                           \
        "process = { max_tokens_in_flight = 100000; };\n"                                                   \
        "limits = { max_allocations_per_process = 24; };\n"

static const unsigned rates[] = {3, 20, 200};

static const char *const interfaces[] = {"org.varlink.service", "io.tokenbudget.agent",
                                         "io.tokenbudget.admin"};

static uint64_t test_seed(void) {
        const char *v = getenv("FAILMALLOC_SEED");

        return v && *v ? strtoull(v, NULL, 0) : 1;
}

/* ---- the daemon's state ---- */

/* Fails the test when the daemon ends within msec (0: is not running now),
 * saying how it ended. */
static void assert_alive_within(const TestDaemon *d, int msec, const char *what) {
        uint64_t deadline = harness_now_usec() + (uint64_t)msec * 1000u;
        int status = 0;
        pid_t r;

        while ((r = waitpid(d->pid, &status, WNOHANG)) == 0 && harness_now_usec() < deadline)
                harness_sleep_msec(10);
        if (r == d->pid) {
                if (WIFSIGNALED(status))
                        ck_abort_msg("%s: tokenbudgetd was killed by signal %d (%s)%s; its stderr below",
                                     what, WTERMSIG(status), strsignal(WTERMSIG(status)),
                                     WCOREDUMP(status) ? ", core dumped" : "");
                ck_abort_msg("%s: tokenbudgetd exited with status %d; its stderr below", what,
                             WIFEXITED(status) ? WEXITSTATUS(status) : -1);
        }
        ck_assert_msg(r == 0 && kill(d->pid, 0) == 0, "%s: tokenbudgetd (pid %d) is gone", what,
                      (int)d->pid);
}

static void assert_alive(const TestDaemon *d, const char *what) {
        assert_alive_within(d, 0, what);
}

/* ---- the shim ---- */

typedef struct Shim {
        char report[300];
        char env[6][400];
        const char *envp[7];
} Shim;

static void shim_prepare(Shim *sh, unsigned one_in, uint64_t seed) {
        static unsigned counter;

        snprintf(sh->report, sizeof(sh->report), "%s/failmalloc-%d-%u", harness_dir(), (int)getpid(),
                 counter++);
        snprintf(sh->env[0], sizeof(sh->env[0]), "LD_PRELOAD=%s", harness_env("FAILMALLOC_SO"));
        snprintf(sh->env[1], sizeof(sh->env[1]), "FAILMALLOC_ONE_IN=%u", one_in);
        snprintf(sh->env[2], sizeof(sh->env[2]), "FAILMALLOC_SEED=%" PRIu64, seed);
        snprintf(sh->env[3], sizeof(sh->env[3]), "FAILMALLOC_REPORT=%s", sh->report);
        snprintf(sh->env[4], sizeof(sh->env[4]), "FAILMALLOC_BACKTRACE=1");
        for (size_t i = 0; i < 5; i++)
                sh->envp[i] = sh->env[i];
        sh->envp[5] = NULL;
}

/* Sends SIGUSR1 (arm) or SIGUSR2 (disarm) and waits until the shim's handler
 * has written its report; returns the failures injected so far. */
static uint64_t shim_signal(const TestDaemon *d, const Shim *sh, bool arm) {
        uint64_t deadline = harness_now_usec() + 5000000, injected = 0, calls = 0;
        unsigned state = 2;

        (void)unlink(sh->report);
        ck_assert_msg(kill(d->pid, arm ? SIGUSR1 : SIGUSR2) == 0, "kill(%d, %s): %s", (int)d->pid,
                      arm ? "SIGUSR1" : "SIGUSR2", strerror(errno));
        for (;;) {
                char *text = harness_read_file(sh->report, NULL);

                if (text &&
                    sscanf(text, "armed=%u injected=%" SCNu64 " calls=%" SCNu64, &state, &injected,
                           &calls) == 3 &&
                    state == (arm ? 1u : 0u)) {
                        free(text);
                        return injected;
                }
                free(text);
                assert_alive(d, arm ? "arming the shim" : "disarming the shim");
                ck_assert_msg(harness_now_usec() < deadline,
                              "the failmalloc shim did not report %s within 5 s (not preloaded? "
                              "daemon dead?)",
                              arm ? "arming" : "disarming");
                harness_sleep_msec(5);
        }
}

/* What a daemon that hit an assert(), abort() or heap corruption writes. A
 * crash of the reload's configuration parser, a child process of the daemon
 * (failmalloc names its pid), is allowed: the daemon rejects that reload and
 * goes on, which the reload step checks. */
static void assert_log_clean(const TestDaemon *d, const char *what) {
        static const char *const marks[] = {"Assertion",        "aborts with error", "double free",
                                            "corrupted",        "invalid pointer",   "stack smashing",
                                            "AddressSanitizer", "Segmentation"};
        static const char crash[] = "failmalloc: fatal signal in pid ";
        char *log = harness_read_file(d->log_path, NULL);

        ck_assert_msg(log, "%s: cannot read %s", what, d->log_path);
        for (size_t i = 0; i < ELEMENTSOF(marks); i++)
                ck_assert_msg(!strstr(log, marks[i]), "%s: the daemon's log shows '%s':\n%.2000s", what,
                              marks[i], strstr(log, marks[i]));
        for (const char *p = strstr(log, crash); p; p = strstr(p + 1, crash))
                ck_assert_msg(atoi(p + strlen(crash)) != (int)d->pid, "%s: the daemon crashed:\n%.2000s",
                              what, p);
        free(log);
}

/* ---- driving the daemon ---- */

typedef enum Outcome { OUT_OK, OUT_ERROR, OUT_DROPPED, OUT_HUNG, OUT_BAD } Outcome;

#define MAX_ERROR_NAMES 16

typedef struct Tally {
        unsigned calls, ok, errors, dropped, hung, bad, connects, connect_failed, children;
        char bad_example[700];
        struct {
                char name[80];
                unsigned n;
        } error_names[MAX_ERROR_NAMES];
} Tally;

typedef struct Conn {
        RawConn *r;
        struct {
                char id[17];
                int64_t hard_limit;
        } held[MAX_HELD];
        size_t n_held;
} Conn;

typedef struct Driver {
        const TestDaemon *d;
        Conn conns[N_CONNS];
        Tally t;
        uint64_t rng;
} Driver;

static uint64_t rng_next(Driver *x) {
        /* xorshift64* */
        x->rng ^= x->rng >> 12;
        x->rng ^= x->rng << 25;
        x->rng ^= x->rng >> 27;
        return x->rng * UINT64_C(2685821657736338717);
}

/* What an answer must be. A success has parameters.key (no key: the call
 * must fail) and, for ints and strs, exactly these values. A constant call
 * (same answer every time) must get, on success or on the same error, the
 * very text it got in the unarmed round: OOM may turn an answer into an error
 * or a dropped connection, never into a different answer. */
typedef struct Expect {
        const char *key;
        bool constant;
        struct {
                const char *key;
                int64_t value;
        } ints[3];
        struct {
                const char *key;
                const char *value;
        } strs[1];
} Expect;

static const Expect E_INFO = {"interfaces", true};
static const Expect E_DESCRIBE = {"description", true};
static const Expect E_MUST_FAIL = {NULL, true};
static const Expect E_MUST_FAIL_VARIES = {NULL, false};
static const Expect E_REQUEST_100 = {"allocation",
                                     false,
                                     {{"granted", 100}, {"warnAt", 150}, {"hardLimit", 200}},
                                     {{"decision", "granted"}}};
static const Expect E_REQUEST_50 = {"allocation",
                                    false,
                                    {{"granted", 50}, {"warnAt", 75}, {"hardLimit", 100}},
                                    {{"decision", "granted"}}};
static const Expect E_REQUEST_10 = {"allocation",
                                    false,
                                    {{"granted", 10}, {"warnAt", 15}, {"hardLimit", 20}},
                                    {{"decision", "granted"}}};
static const Expect E_REPORT = {"state", false, {{"used", 15}}, {{"state", "ok"}}};
static const Expect E_RELEASE_UNREPORTED = {"used", false, {{"used", 0}, {"refunded", 20}}};
static const Expect E_STATUS = {"scopes", false};
static const Expect E_LIST = {"allocations", false};

/* The unarmed answers to constant calls, recorded while recording is set. */
#define MAX_REFERENCES 32
static struct { char *call, *reply; } references[MAX_REFERENCES];
static bool recording;

static const char *reference_get(const char *call) {
        for (size_t i = 0; i < MAX_REFERENCES && references[i].call; i++)
                if (strcmp(references[i].call, call) == 0)
                        return references[i].reply;
        return NULL;
}

static void reference_add(const char *call, const char *reply) {
        for (size_t i = 0; i < MAX_REFERENCES; i++)
                if (!references[i].call) {
                        references[i].call = strdup(call);
                        references[i].reply = strdup(reply);
                        ck_assert(references[i].call && references[i].reply);
                        return;
                }
        ck_abort_msg("more than %d constant calls", MAX_REFERENCES);
}

/* The error name of a reply text, or "" (a success); malloc'ed. */
static char *error_name_of(const char *reply) {
        json_object *o = json_tokener_parse(reply);
        char *name = strdup(o && reply_error(o) ? reply_error(o) : "");

        json_object_put(o);
        ck_assert_ptr_nonnull(name);
        return name;
}

/* Why a well-formed answer is wrong, or NULL. */
static const char *answer_wrong(const Expect *e, const char *call, const char *msg, json_object *o,
                                bool is_error) {
        json_object *p = reply_parameters(o), *v;

        if (e->constant) {
                const char *ref = reference_get(call);
                char *ref_error, *error;
                bool same_error;

                if (!ref) {
                        if (recording)
                                reference_add(call, msg);
                        return NULL;
                }
                if (strcmp(ref, msg) == 0)
                        return NULL;
                ref_error = error_name_of(ref);
                error = error_name_of(msg);
                same_error = strcmp(ref_error, error) == 0;
                free(ref_error);
                free(error);
                /* Another error than the unarmed one: OOM answered with an error. */
                if (is_error && !same_error)
                        return NULL;
                return "differs from the unarmed answer to the same call";
        }
        if (is_error)
                return NULL;
        if (!e->key)
                return "a call that must fail succeeded";
        if (!json_object_object_get_ex(p, e->key, NULL))
                return "a success without its main member";
        for (size_t i = 0; i < ELEMENTSOF(e->ints) && e->ints[i].key; i++)
                if (!json_object_object_get_ex(p, e->ints[i].key, &v) ||
                    !json_object_is_type(v, json_type_int) || json_object_get_int64(v) != e->ints[i].value)
                        return "a number in the reply is wrong";
        for (size_t i = 0; i < ELEMENTSOF(e->strs) && e->strs[i].key; i++)
                if (!json_object_object_get_ex(p, e->strs[i].key, &v) ||
                    !json_object_is_type(v, json_type_string) ||
                    strcmp(json_object_get_string(v), e->strs[i].value) != 0)
                        return "a string in the reply is wrong";
        return NULL;
}

static void tally_error(Tally *t, const char *name) {
        for (size_t i = 0; i < MAX_ERROR_NAMES; i++) {
                if (t->error_names[i].name[0] == 0)
                        snprintf(t->error_names[i].name, sizeof(t->error_names[i].name), "%s", name);
                if (strcmp(t->error_names[i].name, name) == 0) {
                        t->error_names[i].n++;
                        return;
                }
        }
}

static void tally_bad(Tally *t, const char *why, const char *msg) {
        t->bad++;
        if (!t->bad_example[0])
                snprintf(t->bad_example, sizeof(t->bad_example), "%.150s: %.500s", why, msg);
}

static void conn_drop(Conn *c) {
        c->r = raw_close(c->r);
        c->n_held = 0;
}

static bool conn_ensure(Driver *x, Conn *c) {
        if (c->r)
                return true;
        x->t.connects++;
        c->r = raw_open(x->d->socket_path);
        if (!c->r)
                x->t.connect_failed++;
        return c->r != NULL;
}

static Outcome conn_bad(Driver *x, Conn *c, const char *why, const char *call, char *msg, json_object *o) {
        char text[900];

        snprintf(text, sizeof(text), "%.300s, answered %.500s", call, msg);
        tally_bad(&x->t, why, text);
        json_object_put(o);
        free(msg);
        conn_drop(c);
        return OUT_BAD;
}

/* Receives and judges the answer to call: well-formed (a JSON object with
 * an error name, or with parameters) and right (see Expect). A success is
 * returned in *ret (may be NULL). */
static Outcome conn_recv(Driver *x, Conn *c, const char *call, const Expect *e, json_object **ret) {
        char *msg = NULL;
        json_object *o, *v, *p;
        const char *wrong;
        bool is_error;
        int k;

        if (ret)
                *ret = NULL;
        x->t.calls++;
        k = raw_recv(c->r, RECV_TIMEOUT_MSEC, &msg);
        if (k == -ETIMEDOUT) {
                x->t.hung++;
                conn_drop(c);
                return OUT_HUNG;
        }
        if (k <= 0) {
                x->t.dropped++;
                conn_drop(c);
                return OUT_DROPPED;
        }
        o = json_tokener_parse(msg);
        if (!o || !json_object_is_type(o, json_type_object))
                return conn_bad(x, c, "not a JSON object", call, msg, o);
        is_error = json_object_object_get_ex(o, "error", &v);
        if (is_error && !json_object_is_type(v, json_type_string))
                return conn_bad(x, c, "an error name that is not a string", call, msg, o);
        if (json_object_object_get_ex(o, "parameters", &p) ? !json_object_is_type(p, json_type_object)
                                                           : !is_error)
                return conn_bad(x, c, "no parameters object", call, msg, o);
        wrong = answer_wrong(e, call, msg, o, is_error);
        if (wrong)
                return conn_bad(x, c, wrong, call, msg, o);
        free(msg);
        if (is_error) {
                x->t.errors++;
                tally_error(&x->t, json_object_get_string(v));
                json_object_put(o);
                return OUT_ERROR;
        }
        x->t.ok++;
        if (ret)
                *ret = o;
        else
                json_object_put(o);
        return OUT_OK;
}

static bool conn_send(Driver *x, Conn *c, const char *data, size_t len) {
        if (raw_send(c->r, data, len) == 0)
                return true;
        x->t.calls++;
        x->t.dropped++;
        conn_drop(c);
        return false;
}

/* One call, one reply. */
static Outcome conn_call(Driver *x, Conn *c, const char *json, const Expect *e, json_object **ret) {
        if (ret)
                *ret = NULL;
        if (!conn_send(x, c, json, strlen(json) + 1))
                return OUT_DROPPED;
        return conn_recv(x, c, json, e, ret);
}

/* The allocation id of a Request reply, if it is 16 hex digits. */
static bool reply_id(Driver *x, json_object *reply, char id[static 17]) {
        json_object *p = reply_parameters(reply), *a;
        const char *s;

        if (!json_object_object_get_ex(p, "allocation", &a) || !json_object_is_type(a, json_type_string) ||
            strlen(s = json_object_get_string(a)) != 16 || strspn(s, "0123456789abcdef") != 16) {
                tally_bad(&x->t, "Request reply without a valid allocation id",
                          json_object_to_json_string(reply));
                return false;
        }
        memcpy(id, s, 17);
        return true;
}

static void hold(Driver *x, Conn *c, json_object *reply) {
        char id[17];

        if (reply_id(x, reply, id) && c->n_held < MAX_HELD) {
                memcpy(c->held[c->n_held].id, id, 17);
                c->held[c->n_held++].hard_limit =
                        json_int(reply_parameters(reply), "hardLimit", "Request reply");
        }
}

static void act_release(Driver *x, Conn *c);

static void act_request(Driver *x, Conn *c) {
        json_object *reply;

        if (c->n_held >= MAX_HELD)
                return act_release(x, c);
        if (conn_call(x, c,
                      "{\"method\":\"io.tokenbudget.agent.Request\",\"parameters\":{\"estimate\":100,"
                      "\"agent\":\"oom\"}}",
                      &E_REQUEST_100, &reply) == OUT_OK)
                hold(x, c, reply);
        json_object_put(reply);
}

/* Escapes and a nested object take the strict (json-c) parser, not the flat one. */
static void act_request_strict(Driver *x, Conn *c) {
        json_object *reply;

        if (c->n_held >= MAX_HELD)
                return act_release(x, c);
        if (conn_call(x, c,
                      "{\"method\":\"io.tokenbudget.agent.Request\",\"parameters\":{\"estimate\":100,"
                      "\"agent\":\"o\\u006fm "
                      "\\\"strict\\\"\",\"class\":\"t\\tab\",\"org.example\":{\"x\":[1]}}}",
                      &E_REQUEST_100, &reply) == OUT_OK)
                hold(x, c, reply);
        json_object_put(reply);
}

static void act_report(Driver *x, Conn *c) {
        char call[256];

        if (c->n_held == 0)
                return act_request(x, c);
        snprintf(call, sizeof(call),
                 "{\"method\":\"io.tokenbudget.agent.Report\",\"parameters\":{\"allocation\":\"%s\","
                 "\"inputTokens\":10,\"outputTokens\":5}}",
                 c->held[c->n_held - 1].id);
        (void)conn_call(x, c, call, &E_REPORT, NULL);
}

static void act_release(Driver *x, Conn *c) {
        char call[256];
        Expect release = {"used"};

        if (c->n_held == 0)
                return act_request(x, c);
        /* 20 + 10 used; the rest of the hard limit comes back. */
        release.ints[0].key = "used";
        release.ints[0].value = 30;
        release.ints[1].key = "refunded";
        release.ints[1].value = c->held[c->n_held - 1].hard_limit - 30;
        snprintf(call, sizeof(call),
                 "{\"method\":\"io.tokenbudget.agent.Release\",\"parameters\":{\"allocation\":\"%s\","
                 "\"inputTokens\":20,\"outputTokens\":10}}",
                 c->held[c->n_held - 1].id);
        /* Released, or refused (it stays held and is released again later), or the connection is gone. */
        switch (conn_call(x, c, call, &release, NULL)) {
        case OUT_OK:
                c->n_held--;
                break;
        case OUT_ERROR:
                if (c->r && c->n_held > 0)
                        c->n_held--;
                break;
        default:
                break;
        }
}

static void act_get_info(Driver *x, Conn *c) {
        (void)conn_call(x, c, HARNESS_GETINFO_CALL, &E_INFO, NULL);
}

static void act_describe(Driver *x, Conn *c) {
        char call[200];

        snprintf(call, sizeof(call),
                 "{\"method\":\"org.varlink.service.GetInterfaceDescription\",\"parameters\":{\"interface\":"
                 "\"%s\"}}",
                 interfaces[rng_next(x) % 3]);
        (void)conn_call(x, c, call, &E_DESCRIBE, NULL);
}

static void act_status(Driver *x, Conn *c) {
        (void)conn_call(x, c, "{\"method\":\"io.tokenbudget.admin.Status\",\"parameters\":{\"all\":true}}",
                        &E_STATUS, NULL);
}

static void act_status_short(Driver *x, Conn *c) {
        (void)conn_call(x, c, "{\"method\":\"io.tokenbudget.admin.Status\"}", &E_STATUS, NULL);
}

static void act_list(Driver *x, Conn *c) {
        (void)conn_call(x, c, "{\"method\":\"io.tokenbudget.admin.List\"}", &E_LIST, NULL);
}

/* Calls whose correct answer is an error. */
static void act_errors(Driver *x, Conn *c) {
        static const char *const calls[] = {
                "{\"method\":\"io.tokenbudget.agent.Nope\"}",
                "{\"method\":\"com.example.nothing.Nope\",\"parameters\":{}}",
                "{\"method\":\"io.tokenbudget.agent.Request\",\"parameters\":{\"estimate\":\"x\"}}",
                "{\"method\":\"io.tokenbudget.agent.Request\",\"parameters\":{\"estimate\":1,\"priority\":"
                "\"urgent\"}}",
                "{\"method\":\"io.tokenbudget.agent.Request\",\"parameters\":{\"bogus\":1}}",
                "{\"method\":\"io.tokenbudget.agent.Report\",\"parameters\":{\"allocation\":"
                "\"0123456789abcdef\","
                "\"inputTokens\":1,\"outputTokens\":1}}",
                "{\"method\":\"io.tokenbudget.agent.Release\",\"parameters\":{\"allocation\":\"not an id "
                "\\u00e9\"}}",
                "{\"method\":\"org.varlink.service.GetInterfaceDescription\",\"parameters\":{\"interface\":"
                "\"com.example.nothing\"}}",
                "{\"method\":\"io.tokenbudget.agent.Request\",\"parameters\":{\"estimate\":90000}}",
                "{\"method\":\"org.varlink.service.GetInfo\",\"upgrade\":true}",
        };
        size_t i = rng_next(x) % ELEMENTSOF(calls);

        /* The refusal names how much is reserved, which varies; the others are constant.
         * A grant for the big estimate would be a ledger bug. */
        (void)conn_call(x, c, calls[i], strstr(calls[i], "90000") ? &E_MUST_FAIL_VARIES : &E_MUST_FAIL,
                        NULL);
}

/* Six calls in one write; their replies come in order. */
static void act_batch(Driver *x, Conn *c) {
        static const struct {
                const char *call;
                const Expect *expect;
        } batch[] = {
                {HARNESS_GETINFO_CALL, &E_INFO},
                {"{\"method\":\"io.tokenbudget.agent.Request\",\"parameters\":{\"estimate\":50}}",
                 &E_REQUEST_50},
                {"{\"method\":\"io.tokenbudget.admin.Status\",\"parameters\":{\"all\":true}}", &E_STATUS},
                {"{\"method\":\"io.tokenbudget.agent.Nope\"}", &E_MUST_FAIL},
                {"{\"method\":\"org.varlink.service.GetInterfaceDescription\",\"parameters\":{\"interface\":"
                 "\"io.tokenbudget.admin\"}}",
                 &E_DESCRIBE},
                {"{\"method\":\"io.tokenbudget.admin.List\"}", &E_LIST},
        };
        char buf[2048];
        size_t len = 0;

        if (c->n_held >= MAX_HELD)
                return act_release(x, c);
        for (size_t i = 0; i < ELEMENTSOF(batch); i++)
                len += (size_t)snprintf(buf + len, sizeof(buf) - len, "%s", batch[i].call) + 1;
        if (!conn_send(x, c, buf, len))
                return;
        for (size_t i = 0; i < ELEMENTSOF(batch) && c->r; i++) {
                json_object *reply;

                if (conn_recv(x, c, batch[i].call, batch[i].expect, &reply) == OUT_OK && i == 1)
                        hold(x, c, reply);
                json_object_put(reply);
        }
}

/* More Requests at once than max_allocations_per_process allows, then their Releases. */
static void act_burst(Driver *x, Conn *c) {
        static const char request[] =
                "{\"method\":\"io.tokenbudget.agent.Request\",\"parameters\":{\"estimate\":10}}";
        char ids[BURST][17], buf[BURST * 128];
        size_t n_ids = 0, len = 0;

        for (size_t i = 0; i < BURST; i++) {
                memcpy(buf + len, request, sizeof(request));
                len += sizeof(request);
        }
        if (!conn_send(x, c, buf, len))
                return;
        for (size_t i = 0; i < BURST && c->r; i++) {
                json_object *reply;

                if (conn_recv(x, c, request, &E_REQUEST_10, &reply) == OUT_OK &&
                    reply_id(x, reply, ids[n_ids]))
                        n_ids++;
                json_object_put(reply);
        }
        if (!c->r || n_ids == 0)
                return;
        len = 0;
        for (size_t i = 0; i < n_ids; i++)
                len += (size_t)snprintf(buf + len, sizeof(buf) - len,
                                        "{\"method\":\"io.tokenbudget.agent.Release\",\"parameters\":{"
                                        "\"allocation\":\"%s\"}}",
                                        ids[i]) +
                       1;
        if (!conn_send(x, c, buf, len))
                return;
        for (size_t i = 0; i < n_ids && c->r; i++)
                (void)conn_recv(x, c, "a Release in a burst", &E_RELEASE_UNREPORTED, NULL);
}

/* A oneway call has no reply: the next reply is the GetInfo after it. */
static void act_oneway(Driver *x, Conn *c) {
        static const char calls[] =
                "{\"method\":\"io.tokenbudget.admin.Status\",\"oneway\":true}\0" HARNESS_GETINFO_CALL;

        if (conn_send(x, c, calls, sizeof(calls)))
                (void)conn_recv(x, c, HARNESS_GETINFO_CALL, &E_INFO, NULL);
}

/* Drops the connection (its allocations are settled as abandoned) and makes a new one. */
static void act_reconnect(Driver *x, Conn *c) {
        conn_drop(c);
}

/* A reload (SIGHUP) re-reads the config file: under OOM it may be rejected
 * (the old config stays), never end the daemon. */
static void act_reload(Driver *x, Conn *c) {
        ck_assert_msg(kill(x->d->pid, SIGHUP) == 0, "kill(SIGHUP): %s", strerror(errno));
        /* A GetInfo after it is answered after the reload. */
        act_get_info(x, c);
}

/* A Request and its Release, by a process the daemon has not seen: exit 0
 * when both were answered, 1 when the daemon answered with an error or
 * closed the connection (allowed), 2 on a hang or a malformed reply. */
static int child_cycle(const char *path, int timeout_ms) {
        RawConn *r = raw_open(path);
        char *msg = NULL, id[17] = "", call[256];
        const char *p;
        int k;

        if (!r)
                return 1;
        k = raw_send_msg(r,
                         "{\"method\":\"io.tokenbudget.agent.Request\",\"parameters\":{\"estimate\":10}}");
        if (k == 0)
                k = raw_recv(r, timeout_ms, &msg);
        if (k == -ETIMEDOUT)
                return 2;
        if (k != 1)
                return 1;
        p = strstr(msg, "\"allocation\":\"");
        if (!p)
                return strstr(msg, "\"error\":\"") ? 1 : 2;
        snprintf(id, sizeof(id), "%.16s", p + strlen("\"allocation\":\""));
        free(msg);
        msg = NULL;
        snprintf(call, sizeof(call),
                 "{\"method\":\"io.tokenbudget.agent.Release\",\"parameters\":{\"allocation\":\"%s\","
                 "\"inputTokens\":1,\"outputTokens\":1}}",
                 id);
        k = raw_send_msg(r, call);
        if (k == 0)
                k = raw_recv(r, timeout_ms, &msg);
        if (k == -ETIMEDOUT)
                return 2;
        if (k != 1)
                return 1;
        k = strstr(msg, "\"used\":2") ? 0 : strstr(msg, "\"error\":\"") ? 1 : 2;
        free(msg);
        raw_close(r);
        return k;
}

/* Runs child_cycle() in a new process; returns its exit status. */
static int spawn_cycle(const char *path, int timeout_ms) {
        int status = 0;
        pid_t pid = fork();

        ck_assert_msg(pid >= 0, "fork: %s", strerror(errno));
        if (pid == 0)
                _exit(child_cycle(path, timeout_ms));
        ck_assert_int_eq(waitpid(pid, &status, 0), pid);
        return WIFEXITED(status) ? WEXITSTATUS(status) : 3;
}

static void act_new_process(Driver *x, Conn *c) {
        int k = spawn_cycle(x->d->socket_path, RECV_TIMEOUT_MSEC);

        x->t.children++;
        x->t.calls++;
        if (k == 0)
                x->t.ok++;
        else if (k == 1)
                x->t.dropped++;
        else if (k == 2)
                x->t.hung++;
        else
                tally_bad(&x->t, "a connecting child process died", "");
}

typedef void (*ActionFn)(Driver *x, Conn *c);

#define ACTION(f)                                                                                           \
        { f, #f }

/* Weighted by repetition: the agent cycle and the admin calls most. */
static const struct {
        ActionFn fn;
        const char *name;
} actions[] = {
        ACTION(act_request),  ACTION(act_request),   ACTION(act_request_strict), ACTION(act_report),
        ACTION(act_report),   ACTION(act_release),   ACTION(act_release),        ACTION(act_get_info),
        ACTION(act_describe), ACTION(act_status),    ACTION(act_status),         ACTION(act_status_short),
        ACTION(act_list),     ACTION(act_list),      ACTION(act_errors),         ACTION(act_errors),
        ACTION(act_errors),   ACTION(act_batch),     ACTION(act_batch),          ACTION(act_burst),
        ACTION(act_oneway),   ACTION(act_reconnect), ACTION(act_new_process),    ACTION(act_reload),
};

/* TB_OOM_ACTIONS=act_a,act_b runs only those actions (to find what a crash
 * hides behind a more frequent one); unset, all of them. */
static bool action_enabled(size_t a) {
        const char *only = getenv("TB_OOM_ACTIONS");
        size_t n = strlen(actions[a].name);

        for (const char *q = only; q && *q; q += strcspn(q, ","), q += *q == ',')
                if (strcspn(q, ",") == n && strncmp(q, actions[a].name, n) == 0)
                        return true;
        return !only || !*only;
}

static size_t pick_action(Driver *x) {
        for (;;) {
                size_t a = rng_next(x) % ELEMENTSOF(actions);

                if (action_enabled(a))
                        return a;
        }
}

/* The last few calls that lost their connection, newest first: a crash is
 * among them (the daemon may take a while to die, so not always the last). */
#define LOST_HISTORY 3

static void driver_round(Driver *x, unsigned steps, const char *what) {
        char lost_calls[LOST_HISTORY][100] = {"", "", ""};

        for (unsigned i = 0; i < steps; i++) {
                size_t k = rng_next(x) % N_CONNS, a;
                Conn *c = &x->conns[k];
                unsigned lost = x->t.dropped + x->t.hung;
                char where[512];

                if (!conn_ensure(x, c)) {
                        /* A live daemon accepts: a refused connect means it is dying. */
                        snprintf(where, sizeof(where),
                                 "%s: connect refused at step %u; the last calls that lost their "
                                 "connection: %s; %s; %s",
                                 what, i, lost_calls[0], lost_calls[1], lost_calls[2]);
                        assert_alive_within(x->d, 2000, where);
                        ck_abort_msg("%s, but the daemon still runs", where);
                }
                a = pick_action(x);
                actions[a].fn(x, c);
                if (x->t.dropped + x->t.hung == lost)
                        continue;
                memmove(lost_calls[1], lost_calls[0], sizeof(lost_calls[0]) * (LOST_HISTORY - 1));
                snprintf(lost_calls[0], sizeof(lost_calls[0]), "step %u, %s on connection %zu", i,
                         actions[a].name, k);
                snprintf(where, sizeof(where), "%s, %s", what, lost_calls[0]);
                assert_alive(x->d, where);
                /* A daemon that stopped answering makes every call a hang: stop early. */
                if (x->t.hung > 3)
                        break;
        }
}

static void driver_close_all(Driver *x) {
        for (size_t i = 0; i < N_CONNS; i++)
                conn_drop(&x->conns[i]);
}

static void tally_print(const Tally *t, const char *what) {
        printf("%s: %u calls: %u ok, %u error replies, %u dropped, %u hung, %u bad; %u connects (%u "
               "failed), "
               "%u new processes\n",
               what, t->calls, t->ok, t->errors, t->dropped, t->hung, t->bad, t->connects, t->connect_failed,
               t->children);
        for (size_t i = 0; i < MAX_ERROR_NAMES && t->error_names[i].name[0]; i++)
                printf("  %6u %s\n", t->error_names[i].n, t->error_names[i].name);
        fflush(stdout);
}

/* ---- checks after the shim is disarmed ---- */

static json_object *call_ok(RawConn *r, const char *json, const char *what) {
        json_object *reply = raw_call(r, json, what);

        ck_assert_msg(!reply_error(reply), "%s: error reply %s", what, json_object_to_json_string(reply));
        return reply;
}

static void expect_error(RawConn *r, const char *json, const char *error, const char *key, const char *value,
                         const char *what) {
        json_object *reply = raw_call(r, json, what);
        const char *e = reply_error(reply);

        ck_assert_msg(e && strcmp(e, error) == 0, "%s: expected %s, got %s", what, error,
                      json_object_to_json_string(reply));
        if (key)
                ck_assert_msg(strcmp(json_str(reply_parameters(reply), key, what), value) == 0,
                              "%s: %s is not \"%s\": %s", what, key, value,
                              json_object_to_json_string(reply));
        json_object_put(reply);
}

static void check_methods(RawConn *r, const char *what) {
        char call[256], scope[64], id[17];
        json_object *reply, *p, *list;
        bool found[3] = {false, false, false};

        reply = call_ok(r, HARNESS_GETINFO_CALL, what);
        p = reply_parameters(reply);
        ck_assert_str_eq(json_str(p, "vendor", what), "tokenbudget");
        ck_assert_str_eq(json_str(p, "product", what), "tokenbudgetd");
        ck_assert_msg(json_object_object_get_ex(p, "interfaces", &list) &&
                              json_object_is_type(list, json_type_array),
                      "%s: GetInfo without interfaces: %s", what, json_object_to_json_string(reply));
        for (size_t i = 0; i < json_object_array_length(list); i++)
                for (size_t k = 0; k < 3; k++)
                        if (strcmp(json_object_get_string(json_object_array_get_idx(list, i)),
                                   interfaces[k]) == 0)
                                found[k] = true;
        ck_assert_msg(found[0] && found[1] && found[2], "%s: GetInfo does not list every interface: %s",
                      what, json_object_to_json_string(reply));
        json_object_put(reply);

        for (size_t k = 0; k < 3; k++) {
                char head[64];

                snprintf(call, sizeof(call),
                         "{\"method\":\"org.varlink.service.GetInterfaceDescription\",\"parameters\":{"
                         "\"interface\":"
                         "\"%s\"}}",
                         interfaces[k]);
                snprintf(head, sizeof(head), "interface %s\n", interfaces[k]);
                reply = call_ok(r, call, what);
                ck_assert_msg(strstr(json_str(reply_parameters(reply), "description", what), head),
                              "%s: the description of %s does not declare it", what, interfaces[k]);
                json_object_put(reply);
        }

        /* A whole cycle with exact numbers: hard limit 2 x 100, 30 + 20 used. */
        reply = call_ok(r, "{\"method\":\"io.tokenbudget.agent.Request\",\"parameters\":{\"estimate\":100}}",
                        what);
        p = reply_parameters(reply);
        ck_assert_int_eq(json_int(p, "granted", what), 100);
        ck_assert_int_eq(json_int(p, "hardLimit", what), 200);
        ck_assert_int_eq(json_int(p, "warnAt", what), 150);
        ck_assert_str_eq(json_str(p, "decision", what), "granted");
        snprintf(id, sizeof(id), "%s", json_str(p, "allocation", what));
        json_object_put(reply);
        snprintf(call, sizeof(call),
                 "{\"method\":\"io.tokenbudget.agent.Report\",\"parameters\":{\"allocation\":\"%s\","
                 "\"inputTokens\":30,"
                 "\"outputTokens\":20}}",
                 id);
        reply = call_ok(r, call, what);
        ck_assert_str_eq(json_str(reply_parameters(reply), "state", what), "ok");
        ck_assert_int_eq(json_int(reply_parameters(reply), "used", what), 50);
        json_object_put(reply);
        snprintf(call, sizeof(call),
                 "{\"method\":\"io.tokenbudget.agent.Release\",\"parameters\":{\"allocation\":\"%s\"}}", id);
        reply = call_ok(r, call, what);
        ck_assert_int_eq(json_int(reply_parameters(reply), "used", what), 50);
        ck_assert_int_eq(json_int(reply_parameters(reply), "refunded", what), 150);
        json_object_put(reply);

        expect_error(r, "{\"method\":\"io.tokenbudget.agent.Nope\"}", "org.varlink.service.MethodNotFound",
                     "method", "io.tokenbudget.agent.Nope", what);
        expect_error(r, "{\"method\":\"com.example.nothing.Nope\"}", "org.varlink.service.InterfaceNotFound",
                     "interface", "com.example.nothing", what);
        expect_error(r, "{\"method\":\"io.tokenbudget.agent.Request\",\"parameters\":{\"estimate\":\"x\"}}",
                     "org.varlink.service.InvalidParameter", "parameter", "estimate", what);
        expect_error(r,
                     "{\"method\":\"io.tokenbudget.agent.Report\",\"parameters\":{\"allocation\":"
                     "\"0123456789abcdef\","
                     "\"inputTokens\":1,\"outputTokens\":1}}",
                     "io.tokenbudget.agent.UnknownAllocation", "allocation", "0123456789abcdef", what);
        snprintf(scope, sizeof(scope), "process:%d", (int)getpid());
        expect_error(r, "{\"method\":\"io.tokenbudget.agent.Request\",\"parameters\":{\"estimate\":90000}}",
                     "io.tokenbudget.agent.BudgetExhausted", "scope", scope, what);
        expect_error(
                r,
                "{\"method\":\"org.varlink.service.GetInterfaceDescription\",\"parameters\":{\"interface\":"
                "\"com.example.nothing\"}}",
                "org.varlink.service.InterfaceNotFound", "interface", "com.example.nothing", what);
}

typedef struct Sums {
        int64_t reserved, committed, allocations;
} Sums;

static json_object *admin_call(RawConn *r, const char *json, const char *key, const char *what) {
        json_object *reply = call_ok(r, json, what), *v;

        ck_assert_msg(json_object_object_get_ex(reply_parameters(reply), key, &v) &&
                              json_object_is_type(v, json_type_array),
                      "%s: no array %s in %s", what, key, json_object_to_json_string(reply));
        return reply;
}

/* Status, List and every process scope agree; returns the open allocations. */
static int64_t check_ledger(RawConn *r, size_t min_processes, const char *what) {
        json_object *st =
                admin_call(r, "{\"method\":\"io.tokenbudget.admin.Status\",\"parameters\":{\"all\":true}}",
                           "scopes", what);
        json_object *ls = admin_call(r, "{\"method\":\"io.tokenbudget.admin.List\"}", "allocations", what);
        json_object *sp = reply_parameters(st), *scopes, *allocs, *global;
        Sums procs = {}, list = {};
        size_t n_processes = 0;
        int64_t n;

        json_object_object_get_ex(sp, "scopes", &scopes);
        json_object_object_get_ex(reply_parameters(ls), "allocations", &allocs);
        global = status_scope(sp, "global");
        ck_assert_msg(global, "%s: Status has no global scope", what);
        for (size_t i = 0; i < json_object_array_length(scopes); i++) {
                json_object *s = json_object_array_get_idx(scopes, i);

                if (strcmp(json_str(s, "kind", what), "process") != 0)
                        continue;
                n_processes++;
                procs.reserved += json_int(s, "reserved", what);
                procs.committed += json_int(s, "committed", what);
                procs.allocations += json_int(s, "allocations", what);
        }
        for (size_t i = 0; i < json_object_array_length(allocs); i++) {
                json_object *a = json_object_array_get_idx(allocs, i);

                list.reserved += json_int(a, "reserved", what);
                list.allocations++;
        }
        n = json_int(sp, "allocations", what);
        ck_assert_msg(n == list.allocations && n == json_int(global, "allocations", what) &&
                              n == procs.allocations,
                      "%s: allocations: Status %" PRId64 ", List %" PRId64 ", global scope %" PRId64
                      ", process scopes %" PRId64,
                      what, n, list.allocations, json_int(global, "allocations", what), procs.allocations);
        ck_assert_msg(json_int(sp, "reserved", what) == list.reserved &&
                              json_int(global, "reserved", what) == list.reserved &&
                              procs.reserved == list.reserved,
                      "%s: reserved: Status %" PRId64 ", global scope %" PRId64 ", sum over List %" PRId64
                      ", sum over process scopes %" PRId64,
                      what, json_int(sp, "reserved", what), json_int(global, "reserved", what),
                      list.reserved, procs.reserved);
        ck_assert_msg(json_int(global, "committed", what) == procs.committed,
                      "%s: committed: global scope %" PRId64 ", sum over process scopes %" PRId64, what,
                      json_int(global, "committed", what), procs.committed);
        ck_assert_msg(n_processes >= min_processes,
                      "%s: Status lists %zu process scopes, expected at least %zu", what, n_processes,
                      min_processes);
        json_object_put(st);
        json_object_put(ls);
        return n;
}

/* Once every test connection is closed the daemon settles what they held:
 * nothing stays reserved and only the checking connection is counted. */
static void check_settled(RawConn *r, size_t min_processes, const char *what) {
        uint64_t deadline = harness_now_usec() + 3000000;

        for (;;) {
                json_object *st = call_ok(r, "{\"method\":\"io.tokenbudget.admin.Status\"}", what);
                int64_t allocs = json_int(reply_parameters(st), "allocations", what);
                int64_t reserved = json_int(reply_parameters(st), "reserved", what);
                int64_t conns = json_int(reply_parameters(st), "connections", what);

                json_object_put(st);
                if (allocs == 0 && reserved == 0 && conns == 1)
                        break;
                ck_assert_msg(harness_now_usec() < deadline,
                              "%s: 3 s after every other connection closed: %" PRId64
                              " allocations, %" PRId64 " tokens reserved, %" PRId64
                              " connections (expected 0, 0, 1)",
                              what, allocs, reserved, conns);
                harness_sleep_msec(20);
        }
        ck_assert_int_eq(check_ledger(r, min_processes, what), 0);
}

/* With allocations open on one connection, Status and List agree; then released. */
static void check_open_allocations(const TestDaemon *d, RawConn *admin, size_t min_processes,
                                   const char *what) {
        RawConn *r = harness_open_working(d, what);
        char ids[3][17], call[200];

        for (size_t i = 0; i < 3; i++) {
                json_object *reply = call_ok(
                        r, "{\"method\":\"io.tokenbudget.agent.Request\",\"parameters\":{\"estimate\":40}}",
                        what);
                snprintf(ids[i], sizeof(ids[i]), "%s",
                         json_str(reply_parameters(reply), "allocation", what));
                json_object_put(reply);
        }
        ck_assert_int_eq(check_ledger(admin, min_processes, what), 3);
        for (size_t i = 0; i < 3; i++) {
                snprintf(call, sizeof(call),
                         "{\"method\":\"io.tokenbudget.agent.Release\",\"parameters\":{\"allocation\":\"%"
                         "s\"}}",
                         ids[i]);
                json_object_put(call_ok(r, call, what));
        }
        raw_close(r);
}

/* A reload now works, whatever reloads OOM made fail: a new default_estimate
 * in the file is what a Request without an estimate gets after SIGHUP. */
static void check_reload(const TestDaemon *d, RawConn *r, const char *what) {
        static unsigned generation;
        int64_t estimate = 4000 + ++generation;
        uint64_t deadline = harness_now_usec() + 3000000;
        FILE *f = fopen(d->config_path, "we");

        ck_assert_msg(f, "%s: cannot write %s: %s", what, d->config_path, strerror(errno));
        fprintf(f, "%sdefault_estimate = %" PRId64 ";\n", CONFIG, estimate);
        ck_assert_int_eq(fclose(f), 0);
        ck_assert_msg(kill(d->pid, SIGHUP) == 0, "%s: kill(SIGHUP): %s", what, strerror(errno));
        for (;;) {
                json_object *reply =
                        call_ok(r, "{\"method\":\"io.tokenbudget.agent.Request\",\"parameters\":{}}", what);
                int64_t granted = json_int(reply_parameters(reply), "granted", what);
                char call[200];

                snprintf(call, sizeof(call),
                         "{\"method\":\"io.tokenbudget.agent.Release\",\"parameters\":{\"allocation\":\"%"
                         "s\"}}",
                         json_str(reply_parameters(reply), "allocation", what));
                json_object_put(reply);
                json_object_put(call_ok(r, call, what));
                if (granted == estimate)
                        return;
                ck_assert_msg(harness_now_usec() < deadline,
                              "%s: 3 s after SIGHUP a Request without estimate still gets %" PRId64
                              ", not the new default_estimate %" PRId64,
                              what, granted, estimate);
                harness_sleep_msec(10);
        }
}

static void check_recovered(const TestDaemon *d, size_t min_processes, const char *what) {
        RawConn *r;

        assert_alive(d, what);
        r = harness_open_working(d, what);
        check_settled(r, min_processes, what);
        check_reload(d, r, what);
        check_methods(r, what);
        check_open_allocations(d, r, min_processes, what);
        check_settled(r, min_processes, what);
        raw_close(r);
        assert_alive(d, what);
        assert_log_clean(d, what);
}

/* ---- the test ---- */

/* Why the shim cannot work with this daemon, or NULL. */
static const char *skip_reason(void) {
        static char reason[512];
        const char *san = getenv("TB_SANITIZE"), *daemon = getenv("TOKENBUDGETD");
        char cmd[600], line[512];
        FILE *f;

        if (san && strstr(san, "address"))
                return "the daemon is built with AddressSanitizer (b_sanitize), which replaces malloc "
                       "and refuses a preloaded one";
        if (!daemon)
                return NULL; /* the test fails, naming the variable */
        snprintf(cmd, sizeof(cmd), "ldd '%s' 2>/dev/null", daemon);
        f = popen(cmd, "r");
        if (!f)
                return NULL;
        while (fgets(line, sizeof(line), f))
                if (strstr(line, "libasan") || strstr(line, "libtsan") || strstr(line, "libmsan")) {
                        snprintf(reason, sizeof(reason),
                                 "%s links a sanitizer runtime (%.*s), which replaces malloc", daemon,
                                 (int)strcspn(line + strspn(line, " \t"), " \n"),
                                 line + strspn(line, " \t"));
                        pclose(f);
                        return reason;
                }
        pclose(f);
        return NULL;
}

START_TEST(test_oom) {
        unsigned one_in = rates[_i];
        uint64_t seed = test_seed(), injected = 0;
        const char *why = skip_reason();
        char what[128];
        TestDaemon *d;
        Shim sh;

        if (why) {
                tb_check_skip("%s", why);
                return;
        }
        shim_prepare(&sh, one_in, seed);
        d = harness_daemon_start_with(CONFIG, &(HarnessDaemonOptions){.env = sh.envp});
        printf("failmalloc: 1 in %u, seed %" PRIu64 ", daemon pid %d\n", one_in, seed, (int)d->pid);

        /* Process scopes for Status to list: each child uses 2 tokens, so its scope stays. */
        for (size_t i = 0; i < N_SCOPE_PROCESSES; i++) {
                int k = spawn_cycle(d->socket_path, HARNESS_REPLY_TIMEOUT_MSEC);
                ck_assert_msg(k == 0, "process %zu of %d before arming: child status %d", i,
                              N_SCOPE_PROCESSES, k);
        }
        snprintf(what, sizeof(what), "before arming (1 in %u, seed %" PRIu64 ")", one_in, seed);
        check_recovered(d, N_SCOPE_PROCESSES, what);
        snprintf(what, sizeof(what), "unarmed round (1 in %u, seed %" PRIu64 ")", one_in, seed);

        /* The same mix with the shim disarmed: every call is answered as it should be,
         * so what the armed rounds see comes from the failures alone. */
        {
                Driver x = {.d = d, .rng = seed * 1000003u + one_in * 7919u};

                recording = true;
                driver_round(&x, STEPS_PER_ROUND, what);
                recording = false;
                driver_close_all(&x);
                tally_print(&x.t, what);
                ck_assert_msg(x.t.bad == 0 && x.t.hung == 0 && x.t.dropped == 0 && x.t.connect_failed == 0,
                              "%s: without failures: %u bad, %u hung, %u dropped, %u connects failed; first "
                              "bad: %s",
                              what, x.t.bad, x.t.hung, x.t.dropped, x.t.connect_failed, x.t.bad_example);
                check_recovered(d, N_SCOPE_PROCESSES, what);
        }

        for (unsigned round = 1; round <= ROUNDS; round++) {
                Driver x = {.d = d, .rng = seed * 1000003u + one_in * 7919u + round};
                uint64_t before, after;

                snprintf(what, sizeof(what), "round %u at 1 in %u (seed %" PRIu64 ")", round, one_in, seed);
                before = shim_signal(d, &sh, true);
                driver_round(&x, STEPS_PER_ROUND, what);
                after = shim_signal(d, &sh, false);
                driver_close_all(&x);
                tally_print(&x.t, what);
                printf("  %" PRIu64 " allocation failures injected\n", after - before);
                injected += after - before;
                assert_alive(d, what);
                ck_assert_msg(x.t.bad == 0, "%s: %u malformed or wrong replies; the first: %s", what,
                              x.t.bad, x.t.bad_example);
                ck_assert_msg(x.t.hung == 0, "%s: %u calls got neither a reply nor a close within %d ms",
                              what, x.t.hung, RECV_TIMEOUT_MSEC);
                /* It went on serving: some calls were answered (at 1 in 3 a call
                 * that allocates a dozen times rarely gets through). */
                ck_assert_msg(x.t.ok + x.t.errors > 0 || one_in < 20, "%s: no call was answered at all",
                              what);
                check_recovered(d, N_SCOPE_PROCESSES, what);
        }
        ck_assert_msg(injected > 0, "1 in %u: the shim injected no failure: the test tested nothing",
                      one_in);
        harness_daemon_stop(d);
}
END_TEST

static Suite *oom_suite(void) {
        Suite *s = suite_create("integration-oom");
        TCase *tc = harness_tcase("oom", 240);

        tcase_add_loop_test(tc, test_oom, 0, (int)ELEMENTSOF(rates));
        suite_add_tcase(s, tc);
        return s;
}

int main(void) {
        return harness_main(oom_suite());
}
