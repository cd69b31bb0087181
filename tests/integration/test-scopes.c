/* SPDX-License-Identifier: MIT */
/*
 * Integration tests of scopes and rules on the real daemon: every allocation
 * charged to global, user:UID, its process, agent:UID:NAME and the rules
 * that match, refusals naming the scope that bound (rule:NAME:KEY),
 * priorities capped by a rule, multipliers from the most specific rule,
 * runtime limits (SetLimits), Reload keeping open allocations, who sees and
 * steers what (a second uid through real sockets), and units from real
 * cgroups: a child moved into a cgroup named like a systemd service under
 * the cgroup2 hierarchy (what systemd would have made; transient units
 * themselves need PID 1) is charged to unit: and slice: scopes, and a
 * match.unit rule binds it.
 */
#define _GNU_SOURCE
#include "harness.h"
#include "tb-check.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <sys/wait.h>
#include <unistd.h>

#define OTHER_UID 65534

/* The Status of everything (all: true) over r. */
static json_object *status_all(RawConn *r) {
        return harness_callf(r,
                             "{\"method\":\"io.tokenbudget.admin.Status\",\"parameters\":{\"all\":true}}");
}

static void assert_error(json_object *reply, const char *error, const char *key, const char *value,
                         const char *what) {
        const char *e = reply_error(reply);

        ck_assert_msg(e && strcmp(e, error) == 0, "%s: expected %s, got %s", what, error,
                      json_object_to_json_string(reply));
        if (key)
                ck_assert_msg(strcmp(json_str(reply_parameters(reply), key, what), value) == 0,
                              "%s: expected %s = %s: %s", what, key, value,
                              json_object_to_json_string(reply));
}

static json_object *request(RawConn *r, const char *params) {
        return harness_callf(r, "{\"method\":\"io.tokenbudget.agent.Request\",\"parameters\":{%s}}", params);
}

/* The allocation id of a granted Request reply (static buffer). */
static const char *granted_id(json_object *reply, const char *what) {
        static char id[32];

        ck_assert_msg(!reply_error(reply), "%s: %s", what, json_object_to_json_string(reply));
        snprintf(id, sizeof(id), "%s", json_str(reply_parameters(reply), "allocation", what));
        return id;
}

static void release(RawConn *r, const char *id, int used) {
        json_object *reply = harness_callf(r,
                                           "{\"method\":\"io.tokenbudget.agent.Release\",\"parameters\":{"
                                           "\"allocation\":\"%s\",\"inputTokens\":%d,\"outputTokens\":0}}",
                                           id, used);

        ck_assert_msg(!reply_error(reply), "Release: %s", json_object_to_json_string(reply));
        json_object_put(reply);
}

/* The scope named name in a Status reply, or NULL. */
static json_object *find_scope(json_object *reply, const char *name) {
        return status_scope(reply_parameters(reply), name);
}

static bool status_has(json_object *status, const char *name) {
        return find_scope(status, name) != NULL;
}

START_TEST(test_chain_default) {
        TestDaemon *d = harness_daemon_start("");
        RawConn *r = harness_open_working(d, "chain");
        json_object *reply, *status, *scope;
        char name[64];

        reply = request(r, "\"estimate\":100,\"agent\":\"coder\"");
        (void)granted_id(reply, "Request with an agent");
        ck_assert_str_eq(json_str(reply_parameters(reply), "priority", "Request"), "normal");
        json_object_put(reply);
        status = status_all(r);
        snprintf(name, sizeof(name), "user:%u", (unsigned)getuid());
        scope = find_scope(status, name);
        ck_assert_msg(scope, "no %s in %s", name, json_object_to_json_string(status));
        ck_assert_str_eq(json_str(scope, "kind", name), "user");
        ck_assert_int_eq(json_int(scope, "uid", name), getuid());
        ck_assert_int_eq(json_int(scope, "allocations", name), 1);
        snprintf(name, sizeof(name), "agent:%u:coder", (unsigned)getuid());
        scope = find_scope(status, name);
        ck_assert_msg(scope, "no %s in %s", name, json_object_to_json_string(status));
        ck_assert_str_eq(json_str(scope, "kind", name), "agent");
        ck_assert_int_eq(json_int(scope, "reserved", name), 200);
        snprintf(name, sizeof(name), "process:%d", (int)getpid());
        ck_assert_msg(status_has(status, name), "no %s", name);
        ck_assert_msg(status_has(status, "global"), "no global");
        json_object_put(status);

        /* Kind filter: global and the agents only. */
        status = harness_callf(
                r, "{\"method\":\"io.tokenbudget.admin.Status\",\"parameters\":{\"kind\":\"agent\"}}");
        json_object *scopes = json_object_object_get(reply_parameters(status), "scopes");
        ck_assert_int_eq(json_object_array_length(scopes), 2);
        json_object_put(status);
        reply = harness_callf(
                r, "{\"method\":\"io.tokenbudget.admin.Status\",\"parameters\":{\"kind\":\"galaxy\"}}");
        assert_error(reply, "org.varlink.service.InvalidParameter", "parameter", "kind",
                     "Status kind galaxy");
        json_object_put(reply);
        raw_close(r);
        harness_daemon_stop(d);
}
END_TEST

/* A rule kept per user binds before global; the refusal names rule:NAME:UID. */
START_TEST(test_rule_per_user_refusal) {
        TestDaemon *d = harness_daemon_start(
                "rules = ( { name = \"tight\"; match = { command = \"test-scopes*\"; }; per = \"user\";\n"
                "            tokens_per_minute = 1000; } );\n");
        RawConn *r = harness_open_working(d, "rule");
        json_object *reply;
        char name[64];

        reply = request(r, "\"estimate\":400");
        (void)granted_id(reply, "first Request (800 reserved of 1000)");
        json_object_put(reply);
        reply = request(r, "\"estimate\":400");
        snprintf(name, sizeof(name), "rule:tight:%u", (unsigned)getuid());
        assert_error(reply, "io.tokenbudget.agent.BudgetExhausted", "scope", name, "second Request");
        ck_assert_int_eq(json_int(reply_parameters(reply), "limit", "BudgetExhausted"), 1000);
        ck_assert_int_eq(json_int(reply_parameters(reply), "reserved", "BudgetExhausted"), 800);
        json_object_put(reply);
        raw_close(r);
        harness_daemon_stop(d);
}
END_TEST

/* Agent rules: one budget per agent name within the uid, max_allocations. */
START_TEST(test_rule_per_agent) {
        TestDaemon *d = harness_daemon_start(
                "rules = ( { name = \"nightly\"; match = { agent = \"nightly-*\"; }; per = \"agent\";\n"
                "            max_allocations = 1; } );\n");
        RawConn *r = harness_open_working(d, "agent rule");
        json_object *reply;
        char name[96];

        reply = request(r, "\"estimate\":10,\"agent\":\"nightly-a\"");
        (void)granted_id(reply, "nightly-a");
        json_object_put(reply);
        reply = request(r, "\"estimate\":10,\"agent\":\"nightly-a\"");
        snprintf(name, sizeof(name), "rule:nightly:%u:nightly-a", (unsigned)getuid());
        assert_error(reply, "io.tokenbudget.agent.TooManyAllocations", "scope", name, "second nightly-a");
        ck_assert_int_eq(json_int(reply_parameters(reply), "limit", "TooManyAllocations"), 1);
        json_object_put(reply);
        /* Another name has its own budget; a name the rule does not match has none. */
        reply = request(r, "\"estimate\":10,\"agent\":\"nightly-b\"");
        (void)granted_id(reply, "nightly-b");
        json_object_put(reply);
        reply = request(r, "\"estimate\":10,\"agent\":\"daily\"");
        (void)granted_id(reply, "daily");
        json_object_put(reply);
        reply = request(r, "\"estimate\":10");
        (void)granted_id(reply, "no agent");
        json_object_put(reply);
        reply = request(r, "\"estimate\":10,\"agent\":\"\"");
        assert_error(reply, "org.varlink.service.InvalidParameter", "parameter", "agent",
                     "an empty agent name");
        json_object_put(reply);
        raw_close(r);
        harness_daemon_stop(d);
}
END_TEST

/* Priorities: the rule's default and ceiling; multipliers from the most specific rule. */
START_TEST(test_rule_settings) {
        TestDaemon *d = harness_daemon_start(
                "rules = (\n"
                "  { name = \"batch\"; match = { command = \"test-scopes*\"; }; priority = \"background\";\n"
                "    max_priority = \"normal\"; hard_multiplier = 3.0; warn_multiplier = 2.0; },\n"
                "  { name = \"coder\"; match = { command = \"test-scopes*\"; agent = \"coder\"; };\n"
                "    hard_multiplier = 1.5; warn_multiplier = 1.2; }\n"
                ");\n");
        RawConn *r = harness_open_working(d, "settings");
        json_object *reply, *p;

        reply = request(r, "\"estimate\":1000");
        p = reply_parameters(reply);
        (void)granted_id(reply, "default priority");
        ck_assert_str_eq(json_str(p, "priority", "Request"), "background");
        ck_assert_ptr_null(json_object_object_get(p, "requestedPriority"));
        ck_assert_int_eq(json_int(p, "hardLimit", "Request"), 3000);
        ck_assert_int_eq(json_int(p, "warnAt", "Request"), 2000);
        json_object_put(reply);

        reply = request(r, "\"estimate\":1000,\"priority\":\"interactive\"");
        p = reply_parameters(reply);
        (void)granted_id(reply, "above the ceiling");
        ck_assert_str_eq(json_str(p, "priority", "Request"), "normal");
        ck_assert_str_eq(json_str(p, "requestedPriority", "Request"), "interactive");
        json_object_put(reply);

        /* The agent rule is more specific: its multipliers, the other's priorities. */
        reply = request(r, "\"estimate\":1000,\"agent\":\"coder\"");
        p = reply_parameters(reply);
        (void)granted_id(reply, "coder");
        ck_assert_int_eq(json_int(p, "hardLimit", "Request"), 1500);
        ck_assert_int_eq(json_int(p, "warnAt", "Request"), 1200);
        ck_assert_str_eq(json_str(p, "priority", "Request"), "background");
        json_object_put(reply);
        raw_close(r);
        harness_daemon_stop(d);
}
END_TEST

START_TEST(test_set_limits) {
        TestDaemon *d =
                harness_daemon_start("rules = ( { name = \"r\"; match = { }; per = \"agent\"; } );\n");
        RawConn *r = harness_open_working(d, "set");
        json_object *reply;
        char name[64];

        snprintf(name, sizeof(name), "user:%u", (unsigned)getuid());
        reply = harness_callf(
                r,
                "{\"method\":\"io.tokenbudget.admin.SetLimits\",\"parameters\":{\"scope\":\"%s\","
                "\"tokensPerMinute\":500}}",
                name);
        ck_assert_msg(!reply_error(reply), "SetLimits %s: %s", name, json_object_to_json_string(reply));
        /* Not tracked yet: it takes the limit when it appears. */
        ck_assert_int_eq(json_int(reply_parameters(reply), "scopes", "SetLimits"), 0);
        json_object_put(reply);
        reply = request(r, "\"estimate\":300");
        assert_error(reply, "io.tokenbudget.agent.BudgetExhausted", "scope", name,
                     "Request over the new limit");
        json_object_put(reply);
        reply = request(r, "\"estimate\":200");
        (void)granted_id(reply, "Request within the new limit");
        json_object_put(reply);

        /* The rule's every budget at once. */
        reply = harness_callf(
                r, "{\"method\":\"io.tokenbudget.admin.SetLimits\",\"parameters\":{\"scope\":\"rule:r\","
                   "\"maxAllocations\":1}}");
        ck_assert_msg(!reply_error(reply), "SetLimits rule:r: %s", json_object_to_json_string(reply));
        json_object_put(reply);
        reply = request(r, "\"estimate\":1,\"agent\":\"a\"");
        (void)granted_id(reply, "agent a");
        json_object_put(reply);
        reply = request(r, "\"estimate\":1,\"agent\":\"a\"");
        snprintf(name, sizeof(name), "rule:r:%u:a", (unsigned)getuid());
        assert_error(reply, "io.tokenbudget.agent.TooManyAllocations", "scope", name, "second agent a");
        json_object_put(reply);

        reply = harness_callf(
                r, "{\"method\":\"io.tokenbudget.admin.SetLimits\",\"parameters\":{\"scope\":\"rule:nope\","
                   "\"maxAllocations\":1}}");
        assert_error(reply, "io.tokenbudget.admin.UnknownScope", "scope", "rule:nope", "unknown rule");
        json_object_put(reply);
        reply = harness_callf(
                r, "{\"method\":\"io.tokenbudget.admin.SetLimits\",\"parameters\":{\"scope\":\"process:"
                   "999999999\",\"maxAllocations\":1}}");
        assert_error(reply, "io.tokenbudget.admin.UnknownScope", "scope", "process:999999999",
                     "unknown pid");
        json_object_put(reply);
        reply = harness_callf(
                r, "{\"method\":\"io.tokenbudget.admin.SetLimits\",\"parameters\":{\"scope\":\"galaxy\","
                   "\"maxAllocations\":1}}");
        assert_error(reply, "org.varlink.service.InvalidParameter", "parameter", "scope", "bad scope");
        json_object_put(reply);
        reply = harness_callf(
                r, "{\"method\":\"io.tokenbudget.admin.SetLimits\",\"parameters\":{\"scope\":\"global\","
                   "\"tokensPerHour\":1000000000000}}");
        assert_error(reply, "org.varlink.service.InvalidParameter", "parameter", "tokensPerHour", "10^12");
        json_object_put(reply);
        /* The configuration's range: max_allocations up to 10^12 - 1 too. */
        reply = harness_callf(
                r, "{\"method\":\"io.tokenbudget.admin.SetLimits\",\"parameters\":{\"scope\":\"agent\","
                   "\"maxAllocations\":999999999999}}");
        ck_assert_msg(!reply_error(reply), "SetLimits maxAllocations 10^12-1: %s",
                      json_object_to_json_string(reply));
        json_object_put(reply);
        raw_close(r);
        harness_daemon_stop(d);
}
END_TEST

static void write_file(const char *path, const char *text) {
        FILE *f = fopen(path, "w");

        ck_assert_msg(f, "%s: %s", path, strerror(errno));
        fputs(text, f);
        ck_assert_int_eq(fclose(f), 0);
}

/* Reload: open allocations keep their scopes and settle; new rules bind new
 * requests; limits set at runtime are dropped; a bad file is refused with
 * FILE:LINE and changes nothing. */
START_TEST(test_reload) {
        TestDaemon *d = harness_daemon_start("rules = ( { name = \"old\"; match = { }; } );\n");
        RawConn *r = harness_open_working(d, "reload");
        json_object *reply, *status;
        char id[32], expect[400];

        reply = request(r, "\"estimate\":100");
        snprintf(id, sizeof(id), "%s", granted_id(reply, "before reload"));
        json_object_put(reply);
        reply = harness_callf(
                r, "{\"method\":\"io.tokenbudget.admin.SetLimits\",\"parameters\":{\"scope\":\"global\","
                   "\"tokensPerMinute\":1}}");
        json_object_put(reply);

        write_file(d->config_path,
                   "rules = ( { name = \"new\"; match = { }; max_tokens_in_flight = 100; } );\n");
        reply = harness_callf(r, "{\"method\":\"io.tokenbudget.admin.Reload\"}");
        ck_assert_msg(!reply_error(reply), "Reload: %s", json_object_to_json_string(reply));
        json_object_put(reply);
        status = status_all(r);
        ck_assert_int_eq(json_int(find_scope(status, "rule:old"), "allocations", "rule:old"), 1);
        json_object_put(status);
        /* The runtime global limit is gone; the new rule binds. */
        reply = request(r, "\"estimate\":100");
        assert_error(reply, "io.tokenbudget.agent.BudgetExhausted", "scope", "rule:new", "after reload");
        json_object_put(reply);
        release(r, id, 50);
        status = status_all(r);
        ck_assert_int_eq(json_int(find_scope(status, "rule:old"), "committed", "rule:old"), 50);
        json_object_put(status);

        write_file(d->config_path, "rules = ( { name = \"new\";\n match = { bogus = 1; }; } );\n");
        reply = harness_callf(r, "{\"method\":\"io.tokenbudget.admin.Reload\"}");
        ck_assert_msg(reply_error(reply) &&
                              strcmp(reply_error(reply), "io.tokenbudget.admin.ReloadRejected") == 0,
                      "bad file: %s", json_object_to_json_string(reply));
        snprintf(expect, sizeof(expect), "%s:2:", d->config_path);
        ck_assert_msg(strstr(json_str(reply_parameters(reply), "reason", "ReloadRejected"), expect),
                      "reason without %s: %s", expect, json_object_to_json_string(reply));
        json_object_put(reply);
        reply = request(r, "\"estimate\":100");
        assert_error(reply, "io.tokenbudget.agent.BudgetExhausted", "scope", "rule:new", "old config kept");
        json_object_put(reply);
        raw_close(r);
        harness_daemon_stop(d);
}
END_TEST

/* Runs fn(d, fd) as OTHER_UID over a connection made as that uid. */
static json_object *call_fd(int fd, const char *json) {
        RawConn *r = calloc(1, sizeof(*r));
        json_object *reply;

        r->fd = fd;
        reply = raw_call(r, json, json);
        free(r->buf);
        free(r);
        return reply;
}

/* A second uid: its own scopes, only its own in Status and List, no steering. */
START_TEST(test_other_uid) {
        TestDaemon *d;
        RawConn *root;
        json_object *reply, *status, *scopes;
        int fd = -1;
        char name[64];

        if (!tb_check_need_root("other uid"))
                return;
        d = harness_daemon_start("");
        root = harness_open_working(d, "root");
        reply = request(root, "\"estimate\":10,\"agent\":\"x\"");
        (void)granted_id(reply, "root's Request");
        json_object_put(reply);
        ck_assert_int_eq(harness_connect_as(d->socket_path, OTHER_UID, 1, &fd), 1);
        reply = call_fd(fd, "{\"method\":\"io.tokenbudget.agent.Request\",\"parameters\":{\"estimate\":10,"
                            "\"agent\":\"x\"}}");
        ck_assert_msg(!reply_error(reply), "Request as %d: %s", OTHER_UID,
                      json_object_to_json_string(reply));
        json_object_put(reply);

        status = status_all(root);
        snprintf(name, sizeof(name), "agent:%d:x", OTHER_UID);
        ck_assert_msg(status_has(status, name), "root sees no %s", name);
        ck_assert_msg(status_has(status, "agent:0:x"), "root sees no agent:0:x");
        json_object_put(status);

        status = call_fd(fd, "{\"method\":\"io.tokenbudget.admin.Status\",\"parameters\":{\"all\":true}}");
        ck_assert_msg(!reply_error(status), "Status as %d: %s", OTHER_UID,
                      json_object_to_json_string(status));
        scopes = json_object_object_get(reply_parameters(status), "scopes");
        for (size_t i = 0; i < json_object_array_length(scopes); i++) {
                json_object *s = json_object_array_get_idx(scopes, i);
                const char *n = json_str(s, "name", "scope");
                ck_assert_msg(strcmp(n, "global") == 0 || json_int(s, "uid", n) == OTHER_UID,
                              "uid %d sees %s", OTHER_UID, n);
        }
        ck_assert_msg(status_has(status, name), "uid %d does not see its own %s", OTHER_UID, name);
        snprintf(name, sizeof(name), "user:%d", OTHER_UID);
        ck_assert_msg(status_has(status, name), "uid %d does not see its own %s", OTHER_UID, name);
        json_object_put(status);

        reply = call_fd(fd, "{\"method\":\"io.tokenbudget.admin.List\"}");
        ck_assert_msg(!reply_error(reply), "List: %s", json_object_to_json_string(reply));
        scopes = json_object_object_get(reply_parameters(reply), "allocations");
        ck_assert_int_eq(json_object_array_length(scopes), 1);
        ck_assert_int_eq(json_int(json_object_array_get_idx(scopes, 0), "uid", "allocation"), OTHER_UID);
        json_object_put(reply);

        static const char *const denied[] = {
                "{\"method\":\"io.tokenbudget.admin.Status\",\"parameters\":{\"uid\":0}}",
                "{\"method\":\"io.tokenbudget.admin.SetLimits\",\"parameters\":{\"scope\":\"user:65534\","
                "\"tokensPerMinute\":0}}",
                "{\"method\":\"io.tokenbudget.admin.Reload\"}",
        };
        for (size_t i = 0; i < sizeof(denied) / sizeof(denied[0]); i++) {
                reply = call_fd(fd, denied[i]);
                assert_error(reply, "org.varlink.service.PermissionDenied", NULL, NULL, denied[i]);
                json_object_put(reply);
        }
        close(fd);
        raw_close(root);
        harness_daemon_stop(d);
}
END_TEST

/* A uid declaring agent names without end gets TooManyScopes once it has
 * its share of tracked scopes; other users and root are not affected, and
 * the names it already has keep working. */
START_TEST(test_agent_name_flood) {
        TestDaemon *d;
        RawConn *root;
        json_object *reply;
        int fd = -1, granted = 0;
        char msg[256];

        if (!tb_check_need_root("agent name flood from another uid"))
                return;
        d = harness_daemon_start("limits: { max_tracked_scopes_per_uid = 8; };\n");
        ck_assert_int_eq(harness_connect_as(d->socket_path, OTHER_UID, 1, &fd), 1);
        for (int i = 0; i < 50; i++) {
                snprintf(msg, sizeof(msg),
                         "{\"method\":\"io.tokenbudget.agent.Request\",\"parameters\":{\"estimate\":1,"
                         "\"agent\":\"flood-%d\"}}",
                         i);
                reply = call_fd(fd, msg);
                if (!reply_error(reply))
                        granted++;
                else {
                        assert_error(reply, "io.tokenbudget.agent.TooManyScopes", NULL, NULL, msg);
                        ck_assert_int_eq(json_int(reply_parameters(reply), "limit", "TooManyScopes"), 8);
                }
                json_object_put(reply);
        }
        /* user:65534 and seven agent names fit the share of 8. */
        ck_assert_int_eq(granted, 7);
        reply = call_fd(fd, "{\"method\":\"io.tokenbudget.agent.Request\",\"parameters\":{\"estimate\":1,"
                            "\"agent\":\"flood-0\"}}");
        ck_assert_msg(!reply_error(reply), "a name already tracked: %s", json_object_to_json_string(reply));
        json_object_put(reply);
        root = harness_open_working(d, "root");
        for (int i = 0; i < 20; i++) {
                snprintf(msg, sizeof(msg), "\"estimate\":1,\"agent\":\"root-%d\"", i);
                reply = request(root, msg);
                (void)granted_id(reply, "root's names");
                json_object_put(reply);
        }
        close(fd);
        raw_close(root);
        harness_daemon_stop(d);
}
END_TEST

/* Membership of admin_group makes an admin (the supplementary groups of the
 * peer, SO_PEERGROUPS). */
START_TEST(test_admin_group) {
        TestDaemon *d;
        json_object *reply;
        int status = 0;
        pid_t pid;

        if (!tb_check_need_root("admin_group"))
                return;
        d = harness_daemon_start("admin_group = 4242;\n");
        pid = fork();
        ck_assert_int_ge(pid, 0);
        if (pid == 0) {
                gid_t groups[] = {4242};
                RawConn *r;
                char *msg = NULL;

                if (setgroups(1, groups) < 0 || setgid(OTHER_UID) < 0 || setuid(OTHER_UID) < 0)
                        _exit(2);
                r = raw_open(d->socket_path);
                if (!r ||
                    raw_send_msg(r, "{\"method\":\"io.tokenbudget.admin.SetLimits\",\"parameters\":{"
                                    "\"scope\":\"user\",\"tokensPerMinute\":7}}") < 0 ||
                    raw_recv(r, HARNESS_REPLY_TIMEOUT_MSEC, &msg) != 1)
                        _exit(3);
                _exit(strstr(msg, "error") ? 1 : 0);
        }
        ck_assert_int_eq(waitpid(pid, &status, 0), pid);
        ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0,
                      "a member of admin_group could not call SetLimits (status %d)", status);
        /* Without the group, the same uid is not an admin. */
        int fd = -1;
        ck_assert_int_eq(harness_connect_as(d->socket_path, OTHER_UID, 1, &fd), 1);
        reply = call_fd(fd, "{\"method\":\"io.tokenbudget.admin.Reload\"}");
        assert_error(reply, "org.varlink.service.PermissionDenied", NULL, NULL, "Reload without the group");
        json_object_put(reply);
        close(fd);
        harness_daemon_stop(d);
}
END_TEST

/* A writable cgroup2 hierarchy: /sys/fs/cgroup itself, or the hybrid one. */
static const char *cgroup2_root(void) {
        static const char *const candidates[] = {"/sys/fs/cgroup", "/sys/fs/cgroup/unified"};
        struct statfs sf;

        for (size_t i = 0; i < 2; i++)
                if (statfs(candidates[i], &sf) == 0 && sf.f_type == 0x63677270 /* CGROUP2_SUPER_MAGIC */ &&
                    access(candidates[i], W_OK) == 0)
                        return candidates[i];
        return NULL;
}

/* A child moved into SLICE/UNIT of the cgroup2 hierarchy asks for estimate
 * tokens and reports used; it exits with 0 when granted, 1 when refused
 * naming expect_scope, other values on trouble. */
static int run_in_cgroup(const TestDaemon *d, const char *dir, int estimate, const char *expect_scope) {
        char path[512];
        int status = 0;
        pid_t pid;

        snprintf(path, sizeof(path), "%s/cgroup.procs", dir);
        pid = fork();
        ck_assert_int_ge(pid, 0);
        if (pid == 0) {
                char buf[32], *msg = NULL;
                int fd = open(path, O_WRONLY | O_CLOEXEC);
                RawConn *r;

                snprintf(buf, sizeof(buf), "%d\n", (int)getpid());
                if (fd < 0 || write(fd, buf, strlen(buf)) < 0)
                        _exit(10);
                close(fd);
                r = raw_open(d->socket_path);
                snprintf(path, sizeof(path),
                         "{\"method\":\"io.tokenbudget.agent.Request\",\"parameters\":{\"estimate\":%d}}",
                         estimate);
                if (!r || raw_send_msg(r, path) < 0 || raw_recv(r, HARNESS_REPLY_TIMEOUT_MSEC, &msg) != 1)
                        _exit(11);
                if (strstr(msg, "BudgetExhausted"))
                        _exit(expect_scope && strstr(msg, expect_scope) ? 1 : 12);
                /* Report some usage so the scopes keep it after the exit. */
                char *id = strstr(msg, "\"allocation\":\"");
                if (!id)
                        _exit(13);
                snprintf(path, sizeof(path),
                         "{\"method\":\"io.tokenbudget.agent.Release\",\"parameters\":{\"allocation\":\"%."
                         "16s\","
                         "\"inputTokens\":7,\"outputTokens\":0}}",
                         id + strlen("\"allocation\":\""));
                free(msg);
                if (raw_send_msg(r, path) < 0 || raw_recv(r, HARNESS_REPLY_TIMEOUT_MSEC, &msg) != 1 ||
                    strstr(msg, "error"))
                        _exit(14);
                _exit(0);
        }
        ck_assert_int_eq(waitpid(pid, &status, 0), pid);
        return WIFEXITED(status) ? WEXITSTATUS(status) : 128;
}

START_TEST(test_cgroup_units) {
        char slice[600], unit[700], name[64];
        const char *root;
        TestDaemon *d;
        RawConn *r;
        json_object *status, *scope;
        int k;

        if (!tb_check_need_root("units from real cgroups"))
                return;
        root = cgroup2_root();
        if (!root) {
                tb_check_skip("no writable cgroup2 hierarchy (/sys/fs/cgroup, /sys/fs/cgroup/unified)");
                return;
        }
        snprintf(name, sizeof(name), "tbscopes%d", (int)getpid());
        snprintf(slice, sizeof(slice), "%s/%s.slice", root, name);
        snprintf(unit, sizeof(unit), "%s/%s.service", slice, name);
        ck_assert_msg(mkdir(slice, 0755) == 0 || errno == EEXIST, "%s: %s", slice, strerror(errno));
        ck_assert_msg(mkdir(unit, 0755) == 0 || errno == EEXIST, "%s: %s", unit, strerror(errno));

        char config[512];
        snprintf(config, sizeof(config),
                 "rules = ( { name = \"svc\"; match = { unit = \"tbscopes*.service\"; slice = "
                 "\"tbscopes*\"; };\n"
                 "            per = \"unit\"; tokens_per_minute = 100; } );\n");
        d = harness_daemon_start(config);
        k = run_in_cgroup(d, unit, 20, NULL);
        char expect[128];
        snprintf(expect, sizeof(expect), "rule:svc:%s.service", name);
        int k2 = run_in_cgroup(d, unit, 60, expect);
        r = harness_open_working(d, "status");
        status = status_all(r);
        char uname[128], sname[128];
        snprintf(uname, sizeof(uname), "unit:%s.service", name);
        snprintf(sname, sizeof(sname), "slice:%s.slice", name);
        scope = find_scope(status, uname);
        json_object *sscope = find_scope(status, sname), *rscope = find_scope(status, expect);
        /* The cgroups go before any assertion can fail. */
        rmdir(unit);
        rmdir(slice);
        ck_assert_msg(k == 0, "a process in %s was not granted 20 tokens (child status %d)", unit, k);
        ck_assert_msg(k2 == 1, "a process in %s was not refused by %s (child status %d)", unit, expect, k2);
        ck_assert_msg(scope && sscope && rscope, "Status lacks %s, %s or %s: %s", uname, sname, expect,
                      json_object_to_json_string(status));
        ck_assert_str_eq(json_str(scope, "kind", uname), "unit");
        ck_assert_str_eq(json_str(sscope, "kind", sname), "slice");
        ck_assert_int_eq(json_int(scope, "committed", uname), 7);
        ck_assert_int_eq(json_int(sscope, "committed", sname), 7);
        ck_assert_int_eq(json_int(rscope, "committed", expect), 7);
        json_object_put(status);
        raw_close(r);
        harness_daemon_stop(d);
}
END_TEST

static Suite *scopes_suite(void) {
        Suite *s = suite_create("scopes");
        TCase *tc;

        tc = harness_tcase("chain", 30);
        tcase_add_test(tc, test_chain_default);
        tcase_add_test(tc, test_rule_per_user_refusal);
        tcase_add_test(tc, test_rule_per_agent);
        tcase_add_test(tc, test_rule_settings);
        suite_add_tcase(s, tc);
        tc = harness_tcase("steering", 30);
        tcase_add_test(tc, test_set_limits);
        tcase_add_test(tc, test_reload);
        suite_add_tcase(s, tc);
        tc = harness_tcase("uids", 30);
        tb_check_tag_root(tc);
        tcase_add_test(tc, test_other_uid);
        tcase_add_test(tc, test_admin_group);
        tcase_add_test(tc, test_agent_name_flood);
        tcase_add_test(tc, test_cgroup_units);
        suite_add_tcase(s, tc);
        return s;
}

int main(void) {
        return harness_main(scopes_suite());
}
