/* SPDX-License-Identifier: MIT */
/*
 * Tests for daemon/core/rules.c, row by row: which rules match a principal
 * (globs with * ? [..] on units, slices, comm and exe; users by uid, groups
 * by primary and supplementary gid; unresolved names never match; every
 * predicate must hold; an empty match matches all; per = "unit" out of a
 * unit never matches; rules with match.agent or per = "agent" are
 * candidates, the rest fixed), the budget name and owner each per value
 * gives (and -ENOBUFS at exactly one byte short), specificity (agent >
 * command > unit > slice > user > group, then the number of predicates,
 * then file order) and the settings it picks, each falling through to a
 * less specific rule that sets it and then to the top level, with priority
 * clamped to max_priority and warn to hard; the escalation ladder's
 * settings (on_escalate, on_hard_limit, terminate_grace_sec, enforce) and
 * the rule the cap comes from (cap_rule) the same way; rules as the parser
 * leaves them; and seeded random rules against a model of all of it. Configs are
 * mostly built by hand: the rules array belongs to the test and is detached
 * before config_done().
 */
#include <check.h>
#include <errno.h>
#include <fnmatch.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cgroup.h"
#include "config.h"
#include "rules.h"
#include "splitmix64.h"
#include "tb-check.h"

#define N_ROWS(t) (sizeof(t) / sizeof((t)[0]))
#define S(x)      ((char *)(x))

/* ---- principals ---- */

/* alice's terminal app inside her user manager. */
static const CgroupUnits units_user_app = {
        .unit = "user@1000.service",
        .user_unit = "app.service",
        .slices = {"user.slice", "user-1000.slice"},
        .n_slices = 2,
        .user_slices = {"app.slice", "app-term.slice"},
        .n_user_slices = 2,
        .has_owner = true,
        .owner_uid = 1000,
};

/* The user manager itself: a unit, no user unit. */
static const CgroupUnits units_user_manager = {
        .unit = "user@1000.service",
        .slices = {"user.slice", "user-1000.slice"},
        .n_slices = 2,
        .has_owner = true,
        .owner_uid = 1000,
};

/* A system service in a nested slice. */
static const CgroupUnits units_batch = {
        .unit = "nightly-backup.service",
        .slices = {"batch.slice", "batch-nightly.slice"},
        .n_slices = 2,
};

/* A login session scope. */
static const CgroupUnits units_session = {
        .unit = "session-2.scope",
        .slices = {"user.slice", "user-1001.slice"},
        .n_slices = 2,
};

/* The root cgroup: no unit, no slice. */
static const CgroupUnits units_none = {};

/* Only slices, no unit ("/system.slice/stray"). */
static const CgroupUnits units_slice_only = {
        .slices = {"system.slice"},
        .n_slices = 1,
};

static const gid_t alice_groups[] = {10, 27};

static const Principal alice = {
        .uid = 1000,
        .gid = 1000,
        .groups = alice_groups,
        .n_groups = 2,
        .pid = 4242,
        .start_time = 77,
        .comm = "python3",
        .exe = "python3.11",
        .units = &units_user_app,
};

static const Principal alice_manager = {
        .uid = 1000,
        .gid = 1000,
        .pid = 900,
        .comm = "systemd",
        .exe = "systemd",
        .units = &units_user_manager,
};

static const Principal backup = {
        .uid = 0,
        .gid = 0,
        .pid = 555,
        .comm = "restic",
        .exe = "restic",
        .units = &units_batch,
};

static const Principal bob = {
        .uid = 1001,
        .gid = 1001,
        .pid = 31337,
        .comm = "bash",
        .exe = NULL,
        .units = &units_session,
};

/* uid 0, gid 0, in no unit: the zero ids an unresolved name leaves behind. */
static const Principal root_nowhere = {
        .uid = 0,
        .gid = 0,
        .pid = 1,
        .comm = "init",
        .exe = "systemd",
        .units = &units_none,
};

static const Principal stray = {
        .uid = 1002,
        .gid = 1002,
        .pid = 77,
        .comm = "stray",
        .exe = "stray",
        .units = &units_slice_only,
};

/* ---- configs ---- */

static void config_with_rules(Config *c, RuleConfig *rules, size_t n) {
        ck_assert_int_eq(config_init_defaults(c), 0);
        c->rules = rules;
        c->n_rules = n;
}

/* The rules are the test's: config_done() must not see them. */
static void config_release(Config *c) {
        c->rules = NULL;
        c->n_rules = 0;
        config_done(c);
}

static bool list_has(const RuleList *l, uint32_t i) {
        for (size_t k = 0; k < l->n; k++)
                if (l->items[k] == i)
                        return true;
        return false;
}

/* ---- matching ---- */

enum { NONE, FIXED, CANDIDATE };

typedef struct MatchRow {
        const char *name;
        RuleMatch match;
        RulePer per;
        const Principal *p;
        int expect; /* NONE, FIXED, CANDIDATE */
        /* For candidates: whether these agent names match. */
        const char *agent_yes, *agent_no;
} MatchRow;

#define UID(n) .user = S(#n), .has_uid = true, .uid = n
#define GID(n) .group = S(#n), .has_gid = true, .gid = n

/* clang-format off */
static const MatchRow match_rows[] = {
        {"empty match, principal in a user unit", {}, RULE_PER_RULE, &alice, FIXED},
        {"empty match, principal in no unit", {}, RULE_PER_RULE, &root_nowhere, FIXED},
        {"empty match, exe unknown", {}, RULE_PER_RULE, &bob, FIXED},

        /* users */
        {"user by uid", {UID(1000)}, RULE_PER_RULE, &alice, FIXED},
        {"user by uid, other uid", {UID(1000)}, RULE_PER_RULE, &bob, NONE},
        {"user uid 0 resolved", {UID(0)}, RULE_PER_RULE, &backup, FIXED},
        {"unresolved user never matches (uid left 0)", {.user = S("ghost")}, RULE_PER_RULE, &root_nowhere, NONE},
        {"unresolved user never matches (uid left stale)", {.user = S("ghost"), .uid = 1000}, RULE_PER_RULE, &alice, NONE},

        /* groups */
        {"group by primary gid", {GID(1000)}, RULE_PER_RULE, &alice, FIXED},
        {"group by first supplementary gid", {GID(10)}, RULE_PER_RULE, &alice, FIXED},
        {"group by last supplementary gid", {GID(27)}, RULE_PER_RULE, &alice, FIXED},
        {"group not held", {GID(999)}, RULE_PER_RULE, &alice, NONE},
        {"group: a uid equal to the gid is no membership", {GID(1001)}, RULE_PER_RULE, &alice, NONE},
        {"unresolved group never matches (gid left 0)", {.group = S("nogroup-here")}, RULE_PER_RULE, &root_nowhere, NONE},

        /* units */
        {"unit: the user unit", {.unit = S("app.service")}, RULE_PER_RULE, &alice, FIXED},
        {"unit: the system unit of a user unit's process", {.unit = S("user@*.service")}, RULE_PER_RULE, &alice, FIXED},
        {"unit: * over a system unit", {.unit = S("nightly-*.service")}, RULE_PER_RULE, &backup, FIXED},
        {"unit: ? is one character", {.unit = S("session-?.scope")}, RULE_PER_RULE, &bob, FIXED},
        {"unit: ? is not two", {.unit = S("session-?.scope")}, RULE_PER_RULE, &alice, NONE},
        {"unit: bracket set", {.unit = S("[abn]ightly-backup.service")}, RULE_PER_RULE, &backup, FIXED},
        {"unit: bracket range", {.unit = S("session-[0-3].scope")}, RULE_PER_RULE, &bob, FIXED},
        {"unit: negated bracket", {.unit = S("session-[!2].scope")}, RULE_PER_RULE, &bob, NONE},
        {"unit: a glob is anchored", {.unit = S("nightly")}, RULE_PER_RULE, &backup, NONE},
        {"unit: no unit at all", {.unit = S("*")}, RULE_PER_RULE, &root_nowhere, NONE},
        {"unit: a slice is not a unit", {.unit = S("system.slice")}, RULE_PER_RULE, &stray, NONE},
        {"unit: the user manager itself", {.unit = S("user@1000.service")}, RULE_PER_RULE, &alice_manager, FIXED},

        /* slices */
        {"slice: outermost system slice", {.slice = S("user.slice")}, RULE_PER_RULE, &alice, FIXED},
        {"slice: inner system slice", {.slice = S("user-1000.slice")}, RULE_PER_RULE, &alice, FIXED},
        {"slice: user slice", {.slice = S("app.slice")}, RULE_PER_RULE, &alice, FIXED},
        {"slice: inner user slice", {.slice = S("app-t?rm.slice")}, RULE_PER_RULE, &alice, FIXED},
        {"slice: glob over the second slice", {.slice = S("batch-*")}, RULE_PER_RULE, &backup, FIXED},
        {"slice: slice of another user", {.slice = S("user-1000.slice")}, RULE_PER_RULE, &bob, NONE},
        {"slice: the root slice is left out", {.slice = S("-.slice")}, RULE_PER_RULE, &alice, NONE},
        {"slice: no slice at all", {.slice = S("*")}, RULE_PER_RULE, &root_nowhere, NONE},
        {"slice: without a unit", {.slice = S("system.slice")}, RULE_PER_RULE, &stray, FIXED},
        {"slice: a unit is not a slice", {.slice = S("app.service")}, RULE_PER_RULE, &alice, NONE},

        /* commands */
        {"command: comm", {.command = S("python3")}, RULE_PER_RULE, &alice, FIXED},
        {"command: exe basename", {.command = S("python3.1?")}, RULE_PER_RULE, &alice, FIXED},
        {"command: * over either", {.command = S("py*")}, RULE_PER_RULE, &alice, FIXED},
        {"command: bracket", {.command = S("[pq]ython3")}, RULE_PER_RULE, &alice, FIXED},
        {"command: neither", {.command = S("perl*")}, RULE_PER_RULE, &alice, NONE},
        {"command: comm with exe NULL", {.command = S("ba?h")}, RULE_PER_RULE, &bob, FIXED},
        {"command: exe NULL matches nothing", {.command = S("*.11")}, RULE_PER_RULE, &bob, NONE},
        {"command: anchored", {.command = S("python")}, RULE_PER_RULE, &alice, NONE},

        /* all must hold */
        {"all predicates hold",
         {UID(1000), GID(10), .unit = S("app.service"), .slice = S("app.slice"), .command = S("python3*")},
         RULE_PER_RULE, &alice, FIXED},
        {"all but user", {UID(1001), GID(10), .unit = S("app.service"), .slice = S("app.slice"), .command = S("python3*")},
         RULE_PER_RULE, &alice, NONE},
        {"all but group", {UID(1000), GID(11), .unit = S("app.service"), .slice = S("app.slice"), .command = S("python3*")},
         RULE_PER_RULE, &alice, NONE},
        {"all but unit", {UID(1000), GID(10), .unit = S("x.service"), .slice = S("app.slice"), .command = S("python3*")},
         RULE_PER_RULE, &alice, NONE},
        {"all but slice", {UID(1000), GID(10), .unit = S("app.service"), .slice = S("x.slice"), .command = S("python3*")},
         RULE_PER_RULE, &alice, NONE},
        {"all but command", {UID(1000), GID(10), .unit = S("app.service"), .slice = S("app.slice"), .command = S("perl")},
         RULE_PER_RULE, &alice, NONE},

        /* per */
        {"per unit, in a user unit", {}, RULE_PER_UNIT, &alice, FIXED},
        {"per unit, in a system unit", {}, RULE_PER_UNIT, &backup, FIXED},
        {"per unit, in no unit", {}, RULE_PER_UNIT, &root_nowhere, NONE},
        {"per unit, in a slice only", {}, RULE_PER_UNIT, &stray, NONE},
        {"per user", {}, RULE_PER_USER, &root_nowhere, FIXED},
        {"per process", {}, RULE_PER_PROCESS, &bob, FIXED},

        /* agents */
        {"agent glob: a candidate", {.agent = S("nightly-*")}, RULE_PER_RULE, &alice, CANDIDATE, "nightly-1", "daily-1"},
        {"agent glob with ? and []", {.agent = S("bot-[0-9]?")}, RULE_PER_RULE, &alice, CANDIDATE, "bot-1x", "bot-x1"},
        {"agent glob anchored", {.agent = S("bot")}, RULE_PER_RULE, &alice, CANDIDATE, "bot", "robot"},
        {"agent glob and a failing user", {UID(1001), .agent = S("*")}, RULE_PER_RULE, &alice, NONE},
        {"agent glob and a holding user", {UID(1000), .agent = S("*")}, RULE_PER_USER, &alice, CANDIDATE, "x", NULL},
        {"per agent without match.agent: any name", {}, RULE_PER_AGENT, &bob, CANDIDATE, "anything", NULL},
        {"per agent with match.agent", {.agent = S("a*")}, RULE_PER_AGENT, &bob, CANDIDATE, "ab", "ba"},
        {"per unit and an agent glob out of a unit", {.agent = S("*")}, RULE_PER_UNIT, &root_nowhere, NONE},
        {"empty agent name", {.agent = S("*")}, RULE_PER_RULE, &alice, CANDIDATE, "", NULL},
};
/* clang-format on */

START_TEST(test_match) {
        for (size_t i = 0; i < N_ROWS(match_rows); i++) {
                const MatchRow *row = &match_rows[i];
                RuleConfig rule = {.name = S("r"), .match = row->match, .per = row->per};
                RuleList fixed = {}, candidates = {};
                Config c;
                RuleSet *rs;
                int got;

                config_with_rules(&c, &rule, 1);
                rs = rule_set_new(&c);
                ck_assert_ptr_nonnull(rs);
                ck_assert_int_eq(rule_set_match_principal(rs, row->p, &fixed, &candidates), 0);
                ck_assert_msg(fixed.n + candidates.n <= 1, "row '%s': in both lists", row->name);
                got = fixed.n ? FIXED : candidates.n ? CANDIDATE : NONE;
                ck_assert_msg(got == row->expect, "row '%s': got %d, expected %d", row->name, got,
                              row->expect);
                ck_assert_msg(rule_needs_agent(rs, 0) == (row->match.agent || row->per == RULE_PER_AGENT),
                              "row '%s': needs agent", row->name);
                if (got == CANDIDATE) {
                        ck_assert_msg(!rule_matches_agent(rs, 0, NULL), "row '%s': matches no agent",
                                      row->name);
                        if (row->agent_yes)
                                ck_assert_msg(rule_matches_agent(rs, 0, row->agent_yes),
                                              "row '%s': '%s' does not match", row->name, row->agent_yes);
                        if (row->agent_no)
                                ck_assert_msg(!rule_matches_agent(rs, 0, row->agent_no),
                                              "row '%s': '%s' matches", row->name, row->agent_no);
                }
                rule_list_done(&fixed);
                rule_list_done(&candidates);
                ck_assert_ptr_null(fixed.items);
                rule_set_free(rs);
                config_release(&c);
        }
}
END_TEST

/* Several rules at once: each list holds its rules in file order. */
START_TEST(test_match_lists_in_file_order) {
        RuleConfig rules[] = {
                {.name = S("a0"), .match = {.agent = S("x*")}},
                {.name = S("f1"), .match = {UID(1000)}},
                {.name = S("n2"), .match = {UID(1001)}},
                {.name = S("a3"), .per = RULE_PER_AGENT},
                {.name = S("f4")},
                {.name = S("n5"), .per = RULE_PER_UNIT, .match = {.command = S("nope")}},
                {.name = S("f6"), .per = RULE_PER_UNIT},
                {.name = S("a7"), .match = {GID(27), .agent = S("*")}},
        };
        static const uint32_t fixed_expect[] = {1, 4, 6}, cand_expect[] = {0, 3, 7};
        RuleList fixed, candidates;
        Config c;
        RuleSet *rs;

        config_with_rules(&c, rules, N_ROWS(rules));
        rs = rule_set_new(&c);
        ck_assert_ptr_nonnull(rs);
        ck_assert_uint_eq(rule_set_size(rs), N_ROWS(rules));
        ck_assert_int_eq(rule_set_find(rs, "a7"), 7);
        ck_assert_int_eq(rule_set_find(rs, "f1"), 1);
        ck_assert_int_eq(rule_set_find(rs, "nope"), -1);
        ck_assert_int_eq(rule_set_find(rs, "a"), -1);
        ck_assert_ptr_eq(rule_set_rule(rs, 3), &rules[3]);

        ck_assert_int_eq(rule_set_match_principal(rs, &alice, &fixed, &candidates), 0);
        ck_assert_uint_eq(fixed.n, N_ROWS(fixed_expect));
        ck_assert_uint_eq(candidates.n, N_ROWS(cand_expect));
        for (size_t i = 0; i < fixed.n; i++)
                ck_assert_msg(fixed.items[i] == fixed_expect[i], "fixed[%zu] = %u", i, fixed.items[i]);
        for (size_t i = 0; i < candidates.n; i++)
                ck_assert_msg(candidates.items[i] == cand_expect[i], "candidates[%zu] = %u", i,
                              candidates.items[i]);
        rule_list_done(&fixed);
        rule_list_done(&candidates);

        /* bob: n2 is his, no unit rules fail (he is in a session scope), no gid 27. */
        ck_assert_int_eq(rule_set_match_principal(rs, &bob, &fixed, &candidates), 0);
        ck_assert(list_has(&fixed, 2) && list_has(&fixed, 4) && list_has(&fixed, 6) && fixed.n == 3);
        ck_assert(list_has(&candidates, 0) && list_has(&candidates, 3) && candidates.n == 2);
        rule_list_done(&fixed);
        rule_list_done(&candidates);
        rule_set_free(rs);
        config_release(&c);
}
END_TEST

START_TEST(test_no_rules) {
        RuleList fixed = {.n = 99}, candidates = {.n = 99};
        RuleEffective eff;
        Config c;
        RuleSet *rs;

        config_with_rules(&c, NULL, 0);
        rs = rule_set_new(&c);
        ck_assert_ptr_nonnull(rs);
        ck_assert_uint_eq(rule_set_size(rs), 0);
        ck_assert_int_eq(rule_set_find(rs, "x"), -1);
        ck_assert_int_eq(rule_set_match_principal(rs, &alice, &fixed, &candidates), 0);
        ck_assert_uint_eq(fixed.n, 0);
        ck_assert_uint_eq(candidates.n, 0);
        rule_set_effective(rs, &fixed, &candidates, &eff);
        ck_assert_uint_eq(eff.max_request_tokens, c.max_request_tokens);
        rule_set_effective(rs, NULL, NULL, &eff);
        ck_assert_uint_eq(eff.hard_permille, c.hard_permille);
        ck_assert_ptr_null(rule_set_free(rs));
        ck_assert_ptr_null(rule_set_free(NULL));
        config_release(&c);
}
END_TEST

/* ---- budget names ---- */

typedef struct NameRow {
        const char *name;
        const char *rule_name;
        RulePer per;
        const Principal *p;
        const char *agent;
        int expect_ret; /* 0: the name below; else the error */
        const char *scope;
        int64_t owner;
} NameRow;

/* clang-format off */
static const NameRow name_rows[] = {
        {"per rule", "nightly", RULE_PER_RULE, &alice, NULL, 0, "rule:nightly", -1},
        {"per rule ignores the agent", "nightly", RULE_PER_RULE, &alice, "bot", 0, "rule:nightly", -1},
        {"per user", "nightly", RULE_PER_USER, &alice, NULL, 0, "rule:nightly:1000", 1000},
        {"per user, root", "r", RULE_PER_USER, &backup, NULL, 0, "rule:r:0", 0},
        {"per user, the largest uid", "r", RULE_PER_USER,
         &(Principal){.uid = 4294967294u, .comm = "x", .units = &units_none}, NULL, 0, "rule:r:4294967294", 4294967294},
        {"per unit, a user unit within its uid", "r", RULE_PER_UNIT, &alice, NULL, 0, "rule:r:1000:app.service", 1000},
        {"per unit, a system unit is shared", "r", RULE_PER_UNIT, &backup, NULL, 0, "rule:r:nightly-backup.service", -1},
        {"per unit, the user manager belongs to its user", "r", RULE_PER_UNIT, &alice_manager, NULL, 0,
         "rule:r:user@1000.service", 1000},
        {"per unit, a session scope", "r", RULE_PER_UNIT, &bob, NULL, 0, "rule:r:session-2.scope", -1},
        {"per unit, in no unit", "r", RULE_PER_UNIT, &root_nowhere, NULL, -ENOENT},
        {"per unit, in a slice only", "r", RULE_PER_UNIT, &stray, NULL, -ENOENT},
        {"per process", "r", RULE_PER_PROCESS, &alice, NULL, 0, "rule:r:4242", 1000},
        {"per process, pid 1", "r", RULE_PER_PROCESS, &root_nowhere, NULL, 0, "rule:r:1", 0},
        {"per agent", "r", RULE_PER_AGENT, &alice, "bot-1", 0, "rule:r:1000:bot-1", 1000},
        {"per agent, a name with colons", "r", RULE_PER_AGENT, &bob, "a:b", 0, "rule:r:1001:a:b", 1001},
        {"per agent, the empty name", "r", RULE_PER_AGENT, &bob, "", 0, "rule:r:1001:", 1001},
        {"per agent, no name", "r", RULE_PER_AGENT, &alice, NULL, -ENOENT},
};
/* clang-format on */

START_TEST(test_scope_name) {
        for (size_t i = 0; i < N_ROWS(name_rows); i++) {
                const NameRow *row = &name_rows[i];
                RuleConfig rule = {.name = S(row->rule_name), .per = row->per};
                char buf[600];
                int64_t owner = 12345;
                Config c;
                RuleSet *rs;
                int r;

                config_with_rules(&c, &rule, 1);
                rs = rule_set_new(&c);
                ck_assert_ptr_nonnull(rs);
                r = rule_scope_name(rs, 0, row->p, row->agent, buf, sizeof(buf), &owner);
                if (row->expect_ret < 0) {
                        ck_assert_msg(r == row->expect_ret, "row '%s': returned %d", row->name, r);
                        ck_assert_msg(owner == 12345, "row '%s': owner set on failure", row->name);
                } else {
                        size_t len = strlen(row->scope);

                        ck_assert_msg(r == (int)len, "row '%s': returned %d", row->name, r);
                        ck_assert_msg(strcmp(buf, row->scope) == 0, "row '%s': '%s'", row->name, buf);
                        ck_assert_msg(owner == row->owner, "row '%s': owner %" PRId64, row->name, owner);

                        /* Exactly fits (with its NUL), and one byte short. */
                        owner = 12345;
                        r = rule_scope_name(rs, 0, row->p, row->agent, buf, len + 1, &owner);
                        ck_assert_msg(r == (int)len && strcmp(buf, row->scope) == 0,
                                      "row '%s': in len + 1 bytes: %d", row->name, r);
                        owner = 12345;
                        r = rule_scope_name(rs, 0, row->p, row->agent, buf, len, &owner);
                        ck_assert_msg(r == -ENOBUFS, "row '%s': in len bytes: %d", row->name, r);
                        ck_assert_msg(owner == 12345, "row '%s': owner set on -ENOBUFS", row->name);
                        r = rule_scope_name(rs, 0, row->p, row->agent, buf, 1, &owner);
                        ck_assert_msg(r == -ENOBUFS, "row '%s': in 1 byte: %d", row->name, r);
                }
                rule_set_free(rs);
                config_release(&c);
        }
}
END_TEST

/* The longest names a valid config and a valid Request can make still fit
 * the scope table's 512-byte names. */
START_TEST(test_scope_name_longest) {
        char rule_name[65], agent[256], unit[256], buf[512];
        RuleConfig rules[2];
        CgroupUnits units = {.has_owner = true, .owner_uid = 4294967294u};
        Principal p = {.uid = 4294967294u, .pid = 2147483647, .comm = "x", .units = &units};
        int64_t owner;
        Config c;
        RuleSet *rs;

        memset(rule_name, 'n', 64);
        rule_name[64] = 0;
        memset(agent, 'a', 255);
        agent[255] = 0;
        memset(unit, 'u', 247);
        strcpy(unit + 247, ".service");
        units.unit = "user@4294967294.service";
        units.user_unit = unit;
        rules[0] = (RuleConfig){.name = rule_name, .per = RULE_PER_AGENT};
        rules[1] = (RuleConfig){.name = rule_name, .per = RULE_PER_UNIT};
        config_with_rules(&c, rules, 2);
        rs = rule_set_new(&c);
        ck_assert_ptr_nonnull(rs);
        ck_assert_int_eq(rule_scope_name(rs, 0, &p, agent, buf, sizeof(buf), &owner),
                         5 + 64 + 1 + 10 + 1 + 255);
        ck_assert_int_eq(rule_scope_name(rs, 1, &p, NULL, buf, sizeof(buf), &owner),
                         5 + 64 + 1 + 10 + 1 + 255);
        ck_assert_int_eq(owner, 4294967294);
        rule_set_free(rs);
        config_release(&c);
}
END_TEST

/* ---- specificity ---- */

/* Rules listed least specific first; the expected rank of each. */
typedef struct RankRow {
        const char *name;
        RuleMatch match[6];
        size_t n;
        uint32_t rank[6];
} RankRow;

/* clang-format off */
static const RankRow rank_rows[] = {
        {"one predicate each, reversed file order",
         {{GID(1)}, {UID(1)}, {.slice = S("s")}, {.unit = S("u")}, {.command = S("c")}, {.agent = S("a")}}, 6,
         {5, 4, 3, 2, 1, 0}},
        {"empty match is least specific", {{}, {GID(1)}}, 2, {1, 0}},
        {"two empty matches: file order", {{}, {}}, 2, {0, 1}},
        {"more predicates at the same top", {{UID(1)}, {UID(1), GID(1)}}, 2, {1, 0}},
        {"the top predicate beats the count",
         {{.unit = S("u"), .slice = S("s"), UID(1), GID(1)}, {.command = S("c")}}, 2, {1, 0}},
        {"agent beats command and everything else",
         {{.command = S("c"), .unit = S("u"), .slice = S("s"), UID(1), GID(1)}, {.agent = S("a")}}, 2, {1, 0}},
        {"ties: file order", {{UID(1), .slice = S("s")}, {UID(2), .slice = S("t")}, {UID(3), .slice = S("u")}}, 3,
         {0, 1, 2}},
        {"same top, count, then file order",
         {{.unit = S("u")}, {.unit = S("u"), GID(1)}, {.unit = S("u")}, {.unit = S("u"), UID(1)}}, 4,
         {2, 0, 3, 1}},
        {"user beats group", {{GID(1), .agent = NULL}, {UID(1)}}, 2, {1, 0}},
        {"slice beats user and group", {{UID(1), GID(1)}, {.slice = S("s")}}, 2, {1, 0}},
};
/* clang-format on */

START_TEST(test_rank) {
        for (size_t i = 0; i < N_ROWS(rank_rows); i++) {
                const RankRow *row = &rank_rows[i];
                RuleConfig rules[6];
                char names[6][24];
                Config c;
                RuleSet *rs;

                for (size_t k = 0; k < row->n; k++) {
                        snprintf(names[k], sizeof(names[k]), "r%zu", k);
                        rules[k] = (RuleConfig){.name = names[k], .match = row->match[k]};
                }
                config_with_rules(&c, rules, row->n);
                rs = rule_set_new(&c);
                ck_assert_ptr_nonnull(rs);
                for (size_t k = 0; k < row->n; k++)
                        ck_assert_msg(rule_set_rank(rs, k) == row->rank[k], "row '%s': rule %zu has rank %u",
                                      row->name, k, rule_set_rank(rs, k));
                rule_set_free(rs);
                config_release(&c);
        }
}
END_TEST

/* Each row: up to 4 rules (file order), which of them are in list a and in
 * list b, and the settings that must come out. The top level is the
 * defaults: max_request_tokens 200000, warn 1.5, hard 2.0. */
typedef struct EffRow {
        const char *name;
        RuleConfig rules[4];
        size_t n;
        uint32_t in_a, in_b; /* bit masks of rule indices */
        RuleEffective expect;
} EffRow;

/* The issue-9 settings, the index of the rule the cap comes from, and the
 * ladder's settings at their top-level defaults. */
#define EFF(mrt, pri, max_pri, warn, hard, escalate, cap)                                                   \
        { mrt, pri, max_pri, warn, hard, escalate, ESCALATE_REFUSE, HARD_LIMIT_NONE, 10000000, true, cap }
#define TOP        EFF(200000, PRIORITY_NORMAL, PRIORITY_INTERACTIVE, 1500, 2000, 2500, -1)
#define SET_MRT(v) .set = RULE_SET_MAX_REQUEST_TOKENS, .max_request_tokens = (v)

/* clang-format off */
static const EffRow eff_rows[] = {
        {"no rule matches", {{.name = S("a"), SET_MRT(5)}}, 1, 0, 0, TOP},
        {"a rule that sets nothing", {{.name = S("a")}}, 1, 1, 0, TOP},
        {"one rule sets one thing", {{.name = S("a"), SET_MRT(5)}}, 1, 1, 0,
         EFF(5, PRIORITY_NORMAL, PRIORITY_INTERACTIVE, 1500, 2000, 2500, 0)},
        {"the more specific rule wins", {{.name = S("user"), .match = {UID(1)}, SET_MRT(5)},
                                         {.name = S("cmd"), .match = {.command = S("c")}, SET_MRT(7)}}, 2, 3, 0,
         EFF(7, PRIORITY_NORMAL, PRIORITY_INTERACTIVE, 1500, 2000, 2500, 1)},
        {"...also listed first", {{.name = S("cmd"), .match = {.command = S("c")}, SET_MRT(7)},
                                  {.name = S("user"), .match = {UID(1)}, SET_MRT(5)}}, 2, 3, 0,
         EFF(7, PRIORITY_NORMAL, PRIORITY_INTERACTIVE, 1500, 2000, 2500, 0)},
        {"a setting falls through to a less specific rule",
         {{.name = S("grp"), .match = {GID(1)}, .set = RULE_SET_PRIORITY | RULE_SET_HARD,
           .priority = PRIORITY_BACKGROUND, .hard_permille = 3000},
          {.name = S("agent"), .match = {.agent = S("a")}, SET_MRT(9)}}, 2, 1, 2,
         EFF(9, PRIORITY_BACKGROUND, PRIORITY_INTERACTIVE, 1500, 3000, 2500, 1)},
        {"the most specific across both lists",
         {{.name = S("agent"), .match = {.agent = S("a")}, SET_MRT(1)},
          {.name = S("unit"), .match = {.unit = S("u")}, SET_MRT(2)},
          {.name = S("agent2"), .match = {.agent = S("a"), UID(1)}, SET_MRT(3)}}, 3, 2, 5,
         EFF(3, PRIORITY_NORMAL, PRIORITY_INTERACTIVE, 1500, 2000, 2500, 2)},
        {"a rule not matched is ignored however specific",
         {{.name = S("agent"), .match = {.agent = S("a")}, SET_MRT(1)},
          {.name = S("any"), SET_MRT(2)}}, 2, 2, 0,
         EFF(2, PRIORITY_NORMAL, PRIORITY_INTERACTIVE, 1500, 2000, 2500, 1)},
        {"ties go to the rule listed first",
         {{.name = S("x"), .match = {UID(1)}, SET_MRT(11)}, {.name = S("y"), .match = {UID(1)}, SET_MRT(12)}}, 2, 3, 0,
         EFF(11, PRIORITY_NORMAL, PRIORITY_INTERACTIVE, 1500, 2000, 2500, 0)},
        {"every setting from its own rule",
         {{.name = S("g"), .match = {GID(1)}, .set = RULE_SET_ESCALATE, .escalate_permille = 4000},
          {.name = S("u"), .match = {UID(1)}, .set = RULE_SET_WARN, .warn_permille = 1100},
          {.name = S("s"), .match = {.slice = S("s")}, .set = RULE_SET_MAX_PRIORITY | RULE_SET_PRIORITY,
           .max_priority = PRIORITY_NORMAL, .priority = PRIORITY_BACKGROUND},
          {.name = S("c"), .match = {.command = S("c")}, .set = RULE_SET_HARD | RULE_SET_WARN,
           .hard_permille = 1200, .warn_permille = 1000}}, 4, 15, 0,
         EFF(200000, PRIORITY_BACKGROUND, PRIORITY_NORMAL, 1000, 1200, 4000, -1)},
        /* Settings from different rules: priority clamped to the ceiling. */
        {"priority above the ceiling is lowered to it",
         {{.name = S("ceil"), .match = {UID(1)}, .set = RULE_SET_MAX_PRIORITY, .max_priority = PRIORITY_NORMAL},
          {.name = S("pri"), .match = {.command = S("c")}, .set = RULE_SET_PRIORITY, .priority = PRIORITY_INTERACTIVE}},
         2, 3, 0, EFF(200000, PRIORITY_NORMAL, PRIORITY_NORMAL, 1500, 2000, 2500, -1)},
        {"a background ceiling lowers the default priority",
         {{.name = S("ceil"), .set = RULE_SET_MAX_PRIORITY, .max_priority = PRIORITY_BACKGROUND}}, 1, 1, 0,
         EFF(200000, PRIORITY_BACKGROUND, PRIORITY_BACKGROUND, 1500, 2000, 2500, -1)},
        {"priority below the ceiling stays",
         {{.name = S("r"), .set = RULE_SET_MAX_PRIORITY | RULE_SET_PRIORITY, .max_priority = PRIORITY_NORMAL,
           .priority = PRIORITY_BACKGROUND}}, 1, 1, 0,
         EFF(200000, PRIORITY_BACKGROUND, PRIORITY_NORMAL, 1500, 2000, 2500, -1)},
        {"interactive allowed by default",
         {{.name = S("r"), .set = RULE_SET_PRIORITY, .priority = PRIORITY_INTERACTIVE}}, 1, 1, 0,
         EFF(200000, PRIORITY_INTERACTIVE, PRIORITY_INTERACTIVE, 1500, 2000, 2500, -1)},
        /* ...and warn to hard. */
        {"a rule's hard below the top-level warn",
         {{.name = S("r"), .set = RULE_SET_HARD, .hard_permille = 1200}}, 1, 1, 0,
         EFF(200000, PRIORITY_NORMAL, PRIORITY_INTERACTIVE, 1200, 1200, 2500, -1)},
        {"a rule's warn above a less specific rule's hard",
         {{.name = S("h"), .set = RULE_SET_HARD, .hard_permille = 1300},
          {.name = S("w"), .match = {UID(1)}, .set = RULE_SET_WARN, .warn_permille = 1800}}, 2, 3, 0,
         EFF(200000, PRIORITY_NORMAL, PRIORITY_INTERACTIVE, 1300, 1300, 2500, -1)},
        {"max_request_tokens 0 from a rule is kept",
         {{.name = S("z"), SET_MRT(0)}}, 1, 1, 0,
         EFF(0, PRIORITY_NORMAL, PRIORITY_INTERACTIVE, 1500, 2000, 2500, 0)},
        /* The escalation ladder's settings (issue 10), by the same specificity. */
        {"the ladder's settings, each from its own rule",
         {{.name = S("g"), .match = {GID(1)}, .set = RULE_SET_ON_ESCALATE, .on_escalate = ESCALATE_HOLD},
          {.name = S("u"), .match = {UID(1)}, .set = RULE_SET_ON_HARD_LIMIT, .on_hard_limit = HARD_LIMIT_TERMINATE},
          {.name = S("s"), .match = {.slice = S("s")}, .set = RULE_SET_TERMINATE_GRACE, .terminate_grace_usec = 30000000},
          {.name = S("c"), .match = {.command = S("c")}, .set = RULE_SET_ENFORCE, .enforce = false}}, 4, 15, 0,
         {200000, PRIORITY_NORMAL, PRIORITY_INTERACTIVE, 1500, 2000, 2500, ESCALATE_HOLD, HARD_LIMIT_TERMINATE,
          30000000, false, -1}},
        {"a more specific rule giving the default's value wins",
         {{.name = S("any"), .set = RULE_SET_ON_ESCALATE | RULE_SET_ENFORCE, .on_escalate = ESCALATE_HOLD,
           .enforce = false},
          {.name = S("agent"), .match = {.agent = S("a")}, .set = RULE_SET_ON_ESCALATE | RULE_SET_ENFORCE,
           .on_escalate = ESCALATE_REFUSE, .enforce = true}}, 2, 1, 2, TOP},
        {"...and when it does not match, the less specific one's applies",
         {{.name = S("any"), .set = RULE_SET_ON_ESCALATE | RULE_SET_ENFORCE, .on_escalate = ESCALATE_HOLD,
           .enforce = false},
          {.name = S("agent"), .match = {.agent = S("a")}, .set = RULE_SET_ON_ESCALATE | RULE_SET_ENFORCE,
           .on_escalate = ESCALATE_REFUSE, .enforce = true}}, 2, 1, 0,
         {200000, PRIORITY_NORMAL, PRIORITY_INTERACTIVE, 1500, 2000, 2500, ESCALATE_HOLD, HARD_LIMIT_NONE,
          10000000, false, -1}},
        {"the grace falls through from a rule that sets no action",
         {{.name = S("user"), .match = {UID(1)}, .set = RULE_SET_ON_HARD_LIMIT | RULE_SET_TERMINATE_GRACE,
           .on_hard_limit = HARD_LIMIT_TERMINATE, .terminate_grace_usec = 60000000},
          {.name = S("cmd"), .match = {.command = S("c")}, .set = RULE_SET_TERMINATE_GRACE,
           .terminate_grace_usec = 5000000}}, 2, 3, 0,
         {200000, PRIORITY_NORMAL, PRIORITY_INTERACTIVE, 1500, 2000, 2500, ESCALATE_REFUSE, HARD_LIMIT_TERMINATE,
          5000000, true, -1}},
        {"cap_rule is the rule of the cap, not of the other settings",
         {{.name = S("agent"), .match = {.agent = S("a")}, .set = RULE_SET_ENFORCE | RULE_SET_ESCALATE,
           .enforce = false, .escalate_permille = 3000},
          {.name = S("user"), .match = {UID(1)}, SET_MRT(50)},
          {.name = S("any"), SET_MRT(60)}}, 3, 1, 6,
         {50, PRIORITY_NORMAL, PRIORITY_INTERACTIVE, 1500, 2000, 3000, ESCALATE_REFUSE, HARD_LIMIT_NONE,
          10000000, false, 1}},
        /* Learned estimates (issue 13), each from its own rule. */
        {"the estimate settings, each from its own rule",
         {{.name = S("u"), .match = {UID(1)}, .set = RULE_SET_ESTIMATE_SOURCE | RULE_SET_ESTIMATE_FLOOR,
           .estimate_source = ESTIMATE_MAX, .estimate_floor_permille = 0},
          {.name = S("c"), .match = {.command = S("c")}, .set = RULE_SET_ESTIMATE_SOURCE | RULE_SET_ESTIMATE_MIN_SAMPLES,
           .estimate_source = ESTIMATE_LEARNED, .estimate_min_samples = 5}}, 2, 3, 0,
         {200000, PRIORITY_NORMAL, PRIORITY_INTERACTIVE, 1500, 2000, 2500, ESCALATE_REFUSE, HARD_LIMIT_NONE,
          10000000, true, -1, ESTIMATE_LEARNED, 5, 0}},
        {"...and from the top level when no rule sets them",
         {{.name = S("u"), .match = {UID(1)}, SET_MRT(9)}}, 1, 1, 0,
         {9, PRIORITY_NORMAL, PRIORITY_INTERACTIVE, 1500, 2000, 2500, ESCALATE_REFUSE, HARD_LIMIT_NONE,
          10000000, true, 0, ESTIMATE_CLIENT, 20, 500}},
        {"cap_rule of a rule listed late", {{.name = S("a")}, {.name = S("b")}, {.name = S("c"), SET_MRT(70)}},
         3, 0, 7, EFF(70, PRIORITY_NORMAL, PRIORITY_INTERACTIVE, 1500, 2000, 2500, 2)},
};
/* clang-format on */

static void list_from_mask(RuleList *l, uint32_t *items, uint32_t mask) {
        l->items = items;
        l->n = 0;
        for (uint32_t i = 0; i < 32; i++)
                if (mask & (1u << i))
                        items[l->n++] = i;
}

START_TEST(test_effective) {
        for (size_t i = 0; i < N_ROWS(eff_rows); i++) {
                const EffRow *row = &eff_rows[i];
                RuleConfig rules[4];
                uint32_t items_a[4], items_b[4];

                _Static_assert(sizeof(rules) == sizeof(row->rules), "rows hold 4 rules");
                RuleList a, b;
                RuleEffective eff;
                Config c;
                RuleSet *rs;

                memcpy(rules, row->rules, sizeof(rules));
                config_with_rules(&c, rules, row->n);
                rs = rule_set_new(&c);
                ck_assert_ptr_nonnull(rs);
                list_from_mask(&a, items_a, row->in_a);
                list_from_mask(&b, items_b, row->in_b);
                memset(&eff, 0xa5, sizeof(eff));
                rule_set_effective(rs, &a, &b, &eff);
                ck_assert_msg(eff.max_request_tokens == row->expect.max_request_tokens,
                              "row '%s': max_request_tokens %" PRIu64, row->name, eff.max_request_tokens);
                ck_assert_msg(eff.priority == row->expect.priority, "row '%s': priority %d", row->name,
                              eff.priority);
                ck_assert_msg(eff.max_priority == row->expect.max_priority, "row '%s': max_priority %d",
                              row->name, eff.max_priority);
                ck_assert_msg(eff.warn_permille == row->expect.warn_permille, "row '%s': warn %u", row->name,
                              eff.warn_permille);
                ck_assert_msg(eff.hard_permille == row->expect.hard_permille, "row '%s': hard %u", row->name,
                              eff.hard_permille);
                ck_assert_msg(eff.escalate_permille == row->expect.escalate_permille,
                              "row '%s': escalate %u", row->name, eff.escalate_permille);
                ck_assert_msg(eff.on_escalate == row->expect.on_escalate, "row '%s': on_escalate %d",
                              row->name, (int)eff.on_escalate);
                ck_assert_msg(eff.on_hard_limit == row->expect.on_hard_limit, "row '%s': on_hard_limit %d",
                              row->name, (int)eff.on_hard_limit);
                ck_assert_msg(eff.terminate_grace_usec == row->expect.terminate_grace_usec,
                              "row '%s': terminate_grace_usec %" PRIu64, row->name,
                              eff.terminate_grace_usec);
                ck_assert_msg(eff.enforce == row->expect.enforce, "row '%s': enforce %d", row->name,
                              (int)eff.enforce);
                ck_assert_msg(eff.cap_rule == row->expect.cap_rule, "row '%s': cap_rule %d", row->name,
                              (int)eff.cap_rule);
                /* Rows that give the estimate settings (min_samples is never 0 in effect). */
                if (row->expect.estimate_min_samples > 0)
                        ck_assert_msg(
                                eff.estimate_source == row->expect.estimate_source &&
                                        eff.estimate_min_samples == row->expect.estimate_min_samples &&
                                        eff.estimate_floor_permille == row->expect.estimate_floor_permille,
                                "row '%s': estimate %d %" PRIu64 " %u", row->name, (int)eff.estimate_source,
                                eff.estimate_min_samples, eff.estimate_floor_permille);

                /* The same rules split the other way round give the same. */
                memset(&eff, 0x5a, sizeof(eff));
                rule_set_effective(rs, &b, &a, &eff);
                ck_assert_msg(eff.max_request_tokens == row->expect.max_request_tokens &&
                                      eff.priority == row->expect.priority &&
                                      eff.hard_permille == row->expect.hard_permille &&
                                      eff.on_escalate == row->expect.on_escalate &&
                                      eff.on_hard_limit == row->expect.on_hard_limit &&
                                      eff.terminate_grace_usec == row->expect.terminate_grace_usec &&
                                      eff.enforce == row->expect.enforce &&
                                      eff.cap_rule == row->expect.cap_rule,
                              "row '%s': lists swapped", row->name);
                rule_set_free(rs);
                config_release(&c);
        }
}
END_TEST

/* The top level's own settings reach the result. */
START_TEST(test_effective_top_level) {
        RuleConfig rule = {.name = S("r")};
        uint32_t item = 0;
        RuleList l = {&item, 1};
        RuleEffective eff;
        Config c;
        RuleSet *rs;

        config_with_rules(&c, &rule, 1);
        c.max_request_tokens = 777;
        c.warn_permille = 1100;
        c.hard_permille = 1300;
        c.escalate_permille = 4000;
        c.on_escalate = ESCALATE_HOLD;
        c.on_hard_limit = HARD_LIMIT_TERMINATE;
        c.terminate_grace_usec = 7000000;
        c.enforce = false;
        rs = rule_set_new(&c);
        ck_assert_ptr_nonnull(rs);
        for (int with_rule = 1; with_rule >= 0; with_rule--) {
                memset(&eff, 0xa5, sizeof(eff));
                rule_set_effective(rs, with_rule ? &l : NULL, NULL, &eff);
                ck_assert_uint_eq(eff.max_request_tokens, 777);
                ck_assert_uint_eq(eff.warn_permille, 1100);
                ck_assert_uint_eq(eff.hard_permille, 1300);
                ck_assert_uint_eq(eff.escalate_permille, 4000);
                ck_assert_int_eq(eff.on_escalate, ESCALATE_HOLD);
                ck_assert_int_eq(eff.on_hard_limit, HARD_LIMIT_TERMINATE);
                ck_assert_uint_eq(eff.terminate_grace_usec, 7000000);
                ck_assert(!eff.enforce);
                ck_assert_int_eq(eff.cap_rule, -1);
        }
        rule_set_free(rs);
        config_release(&c);
}
END_TEST

/* ---- through the parser ---- */

/* The names the test's "system" knows. */
static int lookup_cb(bool group, const char *name, uint32_t *ret_id, void *userdata) {
        static const struct {
                bool group;
                const char *name;
                uint32_t id;
        } known[] = {{false, "alice", 1000}, {false, "bob", 1001}, {true, "wheel", 10}, {true, "staff", 50}};

        for (size_t i = 0; i < N_ROWS(known); i++)
                if (known[i].group == group && strcmp(known[i].name, name) == 0) {
                        *ret_id = known[i].id;
                        return 0;
                }
        return -ENOENT;
}

/* Rules as config_parse() and config_resolve_names() leave them: names
 * resolved or not, numbers as ids, multipliers as permille, priorities. */
START_TEST(test_parsed_rules) {
        static const char text[] =
                "rules = (\n"
                "  { name = \"alice-py\"; match = { user = \"alice\"; command = \"python3*\"; }; per = "
                "\"process\";\n"
                "    warn_multiplier = 1.05; hard_multiplier = 1.25; priority = \"background\"; },\n"
                "  { name = \"wheel\"; match = { group = \"wheel\"; }; per = \"user\"; max_request_tokens = "
                "1234;\n"
                "    max_priority = \"normal\"; },\n"
                "  { name = \"ghost\"; match = { user = \"ghost\"; }; },\n"
                "  { name = \"nogroup\"; match = { group = \"nosuchgroup\"; }; },\n"
                "  { name = \"uid\"; match = { user = 1000; }; per = \"unit\"; },\n"
                "  { name = \"gid\"; match = { group = 27; }; },\n"
                "  { name = \"bots\"; match = { agent = \"bot-[0-9]\"; }; per = \"agent\";\n"
                "    warn_multiplier = 1.1; hard_multiplier = 1.2; escalate_multiplier = 3.0; },\n"
                "  { name = \"bob\"; match = { user = \"bob\"; }; on_escalate = \"hold\"; enforce = false;\n"
                "    on_hard_limit = \"terminate\"; terminate_grace_sec = 45; }\n"
                ");\n"
                "escalate_multiplier = 2.0;\nterminate_grace_sec = 20;\n";
        RuleList fixed, candidates, agent_rules = {};
        uint32_t agent_items[8];
        char *errors = NULL, *warnings = NULL, buf[128];
        RuleEffective eff;
        int64_t owner;
        Config c;
        RuleSet *rs;
        int r;

        r = config_parse(text, "test.conf", &c, &errors);
        ck_assert_msg(r == 0, "config_parse: %d: %s", r, errors ?: "");
        ck_assert_int_eq(config_resolve_names(&c, "test.conf", lookup_cb, NULL, &warnings), 0);
        ck_assert_ptr_nonnull(warnings);
        ck_assert_ptr_nonnull(strstr(warnings, "ghost"));
        ck_assert_ptr_nonnull(strstr(warnings, "nosuchgroup"));
        free(warnings);
        ck_assert_uint_eq(c.n_rules, 8);
        rs = rule_set_new(&c);
        ck_assert_ptr_nonnull(rs);

        ck_assert_int_eq(rule_set_match_principal(rs, &alice, &fixed, &candidates), 0);
        /* alice-py, wheel, uid (she is in a unit), gid 27; not ghost, nogroup or bob. */
        ck_assert_uint_eq(fixed.n, 4);
        ck_assert(list_has(&fixed, 0) && list_has(&fixed, 1) && list_has(&fixed, 4) && list_has(&fixed, 5));
        ck_assert_uint_eq(candidates.n, 1);
        ck_assert(list_has(&candidates, 6));
        ck_assert(rule_matches_agent(rs, 6, "bot-7"));
        ck_assert(!rule_matches_agent(rs, 6, "bot-77"));

        ck_assert_int_eq(rule_scope_name(rs, 0, &alice, NULL, buf, sizeof(buf), &owner), 18);
        ck_assert_str_eq(buf, "rule:alice-py:4242");
        ck_assert_int_gt(rule_scope_name(rs, 4, &alice, NULL, buf, sizeof(buf), &owner), 0);
        ck_assert_str_eq(buf, "rule:uid:1000:app.service");

        /* Without an agent: alice-py (command) sets hard and priority, wheel
         * (group) max_request_tokens and the ceiling, which lowers nothing. */
        rule_set_effective(rs, &fixed, NULL, &eff);
        ck_assert_uint_eq(eff.hard_permille, 1250);
        ck_assert_uint_eq(eff.warn_permille, 1050);
        ck_assert_int_eq(eff.priority, PRIORITY_BACKGROUND);
        ck_assert_int_eq(eff.max_priority, PRIORITY_NORMAL);
        ck_assert_uint_eq(eff.max_request_tokens, 1234);
        ck_assert_int_eq(eff.cap_rule, 1);
        /* The top level's ladder settings: no rule of hers sets one. */
        ck_assert_uint_eq(eff.escalate_permille, 2000);
        ck_assert_int_eq(eff.on_escalate, ESCALATE_REFUSE);
        ck_assert_int_eq(eff.on_hard_limit, HARD_LIMIT_NONE);
        ck_assert_uint_eq(eff.terminate_grace_usec, 20000000);
        ck_assert(eff.enforce);
        /* With bot-7: bots (agent) is the most specific for the multipliers. */
        agent_rules.items = agent_items;
        agent_items[agent_rules.n++] = 6;
        rule_set_effective(rs, &fixed, &agent_rules, &eff);
        ck_assert_uint_eq(eff.hard_permille, 1200);
        ck_assert_uint_eq(eff.warn_permille, 1100);
        ck_assert_uint_eq(eff.escalate_permille, 3000);
        ck_assert_int_eq(eff.priority, PRIORITY_BACKGROUND);
        rule_list_done(&fixed);
        rule_list_done(&candidates);

        /* bob: only his rule (and the agent one as a candidate). */
        ck_assert_int_eq(rule_set_match_principal(rs, &bob, &fixed, &candidates), 0);
        ck_assert_uint_eq(fixed.n, 1);
        ck_assert(list_has(&fixed, 7));
        ck_assert_uint_eq(candidates.n, 1);
        rule_set_effective(rs, &fixed, NULL, &eff);
        ck_assert_int_eq(eff.on_escalate, ESCALATE_HOLD);
        ck_assert_int_eq(eff.on_hard_limit, HARD_LIMIT_TERMINATE);
        ck_assert_uint_eq(eff.terminate_grace_usec, 45000000);
        ck_assert(!eff.enforce);
        ck_assert_uint_eq(eff.escalate_permille, 2000);
        ck_assert_uint_eq(eff.max_request_tokens, 200000);
        ck_assert_int_eq(eff.cap_rule, -1);
        rule_list_done(&fixed);
        rule_list_done(&candidates);
        rule_set_free(rs);
        config_done(&c);
}
END_TEST

/* ---- against a model, seeded ---- */

static const Principal *const model_principals[] = {&alice, &alice_manager, &backup,
                                                    &bob,   &root_nowhere,  &stray};

/* Predicate pools: some match some principals, some none. */
static const char *const pool_unit[] = {
        "app.service", "user@*.service", "nightly-*", "session-?.scope", "*", "x"};
static const char *const pool_slice[] = {"user.slice",   "app.slice", "batch-*",
                                         "system.slice", "*",         "y.slice"};
static const char *const pool_command[] = {"python3", "python3.1?", "ba[sz]h", "restic", "*", "init", "z"};
static const char *const pool_agent[] = {"bot-*", "*", "nightly-?", "[ab]*"};
static const char *const agents[] = {NULL, "bot-1", "nightly-7", "alpha", "zeta"};

static uint32_t pick(uint64_t *rng, uint32_t n) {
        return (uint32_t)(splitmix64(rng) % n);
}

static bool model_principal_matches(const RuleConfig *r, const Principal *p) {
        const RuleMatch *m = &r->match;
        const CgroupUnits *u = p->units;
        bool any = false;

        if (m->user && !(m->has_uid && m->uid == p->uid))
                return false;
        if (m->group) {
                bool in = m->has_gid && p->gid == m->gid;
                for (size_t i = 0; m->has_gid && i < p->n_groups; i++)
                        in = in || p->groups[i] == m->gid;
                if (!in)
                        return false;
        }
        if (m->unit && !((u->unit && fnmatch(m->unit, u->unit, 0) == 0) ||
                         (u->user_unit && fnmatch(m->unit, u->user_unit, 0) == 0)))
                return false;
        for (size_t i = 0; m->slice && i < u->n_slices; i++)
                any = any || fnmatch(m->slice, u->slices[i], 0) == 0;
        for (size_t i = 0; m->slice && i < u->n_user_slices; i++)
                any = any || fnmatch(m->slice, u->user_slices[i], 0) == 0;
        if (m->slice && !any)
                return false;
        if (m->command && fnmatch(m->command, p->comm, 0) != 0 &&
            !(p->exe && fnmatch(m->command, p->exe, 0) == 0))
                return false;
        return r->per != RULE_PER_UNIT || u->unit;
}

/* (most specific predicate, number of predicates): larger is more specific. */
static void model_key(const RuleConfig *r, int *ret_top, int *ret_count) {
        const RuleMatch *m = &r->match;
        const void *preds[] = {m->group, m->user, m->slice, m->unit, m->command, m->agent}; /* least first */

        *ret_top = 0;
        *ret_count = 0;
        for (int i = 0; i < 6; i++)
                if (preds[i]) {
                        *ret_top = i + 1;
                        (*ret_count)++;
                }
}

/* Whether rule a is more specific than rule b (indices into rules). */
static bool model_more_specific(const RuleConfig *rules, size_t a, size_t b) {
        int ta, ca, tb, cb;

        model_key(&rules[a], &ta, &ca);
        model_key(&rules[b], &tb, &cb);
        if (ta != tb)
                return ta > tb;
        if (ca != cb)
                return ca > cb;
        return a < b;
}

/* RULE_SET_MAX_REQUEST_TOKENS .. RULE_SET_ENFORCE */
#define MODEL_BITS 10
_Static_assert(RULE_SET_ENFORCE == 1u << (MODEL_BITS - 1), "every RULE_SET_ bit is modelled");

static void random_rule(uint64_t *rng, RuleConfig *r, char *name) {
        RuleMatch *m = &r->match;

        *r = (RuleConfig){.name = name, .per = (RulePer)pick(rng, _RULE_PER_MAX)};
        if (pick(rng, 4) == 0) {
                static const uint32_t uids[] = {0, 1000, 1001};
                m->user = S("someone");
                m->has_uid = pick(rng, 5) != 0;
                m->uid = uids[pick(rng, 3)];
        }
        if (pick(rng, 4) == 0) {
                static const uint32_t gids[] = {0, 10, 27, 1000, 1001};
                m->group = S("somegroup");
                m->has_gid = pick(rng, 5) != 0;
                m->gid = gids[pick(rng, 5)];
        }
        if (pick(rng, 4) == 0)
                m->unit = S(pool_unit[pick(rng, N_ROWS(pool_unit))]);
        if (pick(rng, 4) == 0)
                m->slice = S(pool_slice[pick(rng, N_ROWS(pool_slice))]);
        if (pick(rng, 4) == 0)
                m->command = S(pool_command[pick(rng, N_ROWS(pool_command))]);
        if (pick(rng, 4) == 0)
                m->agent = S(pool_agent[pick(rng, N_ROWS(pool_agent))]);
        for (uint32_t bit = 0; bit < MODEL_BITS; bit++)
                if (pick(rng, 3) == 0)
                        r->set |= 1u << bit;
        r->max_request_tokens = pick(rng, 100000);
        r->priority = (Priority)pick(rng, _PRIORITY_MAX);
        r->max_priority = (Priority)pick(rng, r->priority + 1); /* priority is not above max_priority */
        r->hard_permille = 1000 + pick(rng, 4001);
        r->warn_permille = 1000 + pick(rng, r->hard_permille - 999);
        r->escalate_permille = 1000 + pick(rng, 9001);
        r->on_escalate = (EscalateAction)pick(rng, _ESCALATE_ACTION_MAX);
        r->on_hard_limit = (HardLimitAction)pick(rng, _HARD_LIMIT_ACTION_MAX);
        r->terminate_grace_usec = (1 + pick(rng, 3600)) * UINT64_C(1000000);
        r->enforce = pick(rng, 2);
}

START_TEST(test_against_model) {
        enum { ROUNDS = 3000, RULES_MAX = 10 };
        uint64_t rng = UINT64_C(0x9e3779b97f4a7c15);

        for (size_t round = 0; round < ROUNDS; round++) {
                RuleConfig rules[RULES_MAX];
                char names[RULES_MAX][16];
                size_t n = 1 + pick(&rng, RULES_MAX);
                const Principal *p = model_principals[pick(&rng, N_ROWS(model_principals))];
                const char *agent = agents[pick(&rng, N_ROWS(agents))];
                RuleList fixed, candidates, matched = {};
                uint32_t matched_items[RULES_MAX];
                size_t n_fixed = 0, n_cand = 0;
                RuleEffective eff, want;
                Config c;
                RuleSet *rs;

                for (size_t i = 0; i < n; i++) {
                        snprintf(names[i], sizeof(names[i]), "r%u", (unsigned)i);
                        random_rule(&rng, &rules[i], names[i]);
                }
                config_with_rules(&c, rules, n);
                c.warn_permille = 1000 + pick(&rng, 1001);
                c.hard_permille = c.warn_permille + pick(&rng, 1001);
                rs = rule_set_new(&c);
                ck_assert_ptr_nonnull(rs);
                ck_assert_int_eq(rule_set_match_principal(rs, p, &fixed, &candidates), 0);

                /* Lists: every rule whose predicates hold, by whether it needs an agent, in file order. */
                matched.items = matched_items;
                for (size_t i = 0; i < n; i++) {
                        bool needs = rules[i].match.agent || rules[i].per == RULE_PER_AGENT;
                        bool holds = model_principal_matches(&rules[i], p);

                        if (holds && !needs) {
                                ck_assert_msg(n_fixed < fixed.n && fixed.items[n_fixed] == i,
                                              "round %zu: rule %zu not fixed", round, i);
                                n_fixed++;
                        }
                        if (holds && needs) {
                                ck_assert_msg(n_cand < candidates.n && candidates.items[n_cand] == i,
                                              "round %zu: rule %zu not a candidate", round, i);
                                n_cand++;
                                ck_assert_msg(
                                        rule_matches_agent(rs, i, agent) ==
                                                (agent && (!rules[i].match.agent ||
                                                           fnmatch(rules[i].match.agent, agent, 0) == 0)),
                                        "round %zu: rule %zu and agent %s", round, i, agent ?: "none");
                                if (rule_matches_agent(rs, i, agent))
                                        matched_items[matched.n++] = (uint32_t)i;
                        }
                }
                ck_assert_msg(n_fixed == fixed.n && n_cand == candidates.n, "round %zu: extra rules", round);

                /* Ranks: a total order, consistent with the model's. */
                for (size_t a = 0; a < n; a++)
                        for (size_t b = 0; b < n; b++)
                                if (a != b)
                                        ck_assert_msg((rule_set_rank(rs, a) < rule_set_rank(rs, b)) ==
                                                              model_more_specific(rules, a, b),
                                                      "round %zu: ranks of %zu and %zu", round, a, b);

                /* Settings: from the most specific matching rule that sets each. */
                c.escalate_permille = 1000 + pick(&rng, 9001);
                c.on_escalate = (EscalateAction)pick(&rng, _ESCALATE_ACTION_MAX);
                c.on_hard_limit = (HardLimitAction)pick(&rng, _HARD_LIMIT_ACTION_MAX);
                c.terminate_grace_usec = (1 + pick(&rng, 3600)) * UINT64_C(1000000);
                c.enforce = pick(&rng, 2);
                want = (RuleEffective){
                        .max_request_tokens = c.max_request_tokens,
                        .priority = PRIORITY_NORMAL,
                        .max_priority = PRIORITY_INTERACTIVE,
                        .warn_permille = c.warn_permille,
                        .hard_permille = c.hard_permille,
                        .escalate_permille = c.escalate_permille,
                        .on_escalate = c.on_escalate,
                        .on_hard_limit = c.on_hard_limit,
                        .terminate_grace_usec = c.terminate_grace_usec,
                        .enforce = c.enforce,
                        .cap_rule = -1,
                };
                for (uint32_t bit = 0; bit < MODEL_BITS; bit++) {
                        ssize_t best = -1;

                        for (size_t k = 0; k < fixed.n + matched.n; k++) {
                                size_t i = k < fixed.n ? fixed.items[k] : matched.items[k - fixed.n];
                                if ((rules[i].set & (1u << bit)) &&
                                    (best < 0 || model_more_specific(rules, i, (size_t)best)))
                                        best = (ssize_t)i;
                        }
                        if (best < 0)
                                continue;
                        switch (1u << bit) {
                        case RULE_SET_MAX_REQUEST_TOKENS:
                                want.max_request_tokens = rules[best].max_request_tokens;
                                want.cap_rule = (int32_t)best;
                                break;
                        case RULE_SET_PRIORITY:
                                want.priority = rules[best].priority;
                                break;
                        case RULE_SET_MAX_PRIORITY:
                                want.max_priority = rules[best].max_priority;
                                break;
                        case RULE_SET_WARN:
                                want.warn_permille = rules[best].warn_permille;
                                break;
                        case RULE_SET_HARD:
                                want.hard_permille = rules[best].hard_permille;
                                break;
                        case RULE_SET_ESCALATE:
                                want.escalate_permille = rules[best].escalate_permille;
                                break;
                        case RULE_SET_ON_ESCALATE:
                                want.on_escalate = rules[best].on_escalate;
                                break;
                        case RULE_SET_ON_HARD_LIMIT:
                                want.on_hard_limit = rules[best].on_hard_limit;
                                break;
                        case RULE_SET_TERMINATE_GRACE:
                                want.terminate_grace_usec = rules[best].terminate_grace_usec;
                                break;
                        case RULE_SET_ENFORCE:
                                want.enforce = rules[best].enforce;
                                break;
                        }
                }
                if (want.priority < want.max_priority)
                        want.priority = want.max_priority;
                if (want.warn_permille > want.hard_permille)
                        want.warn_permille = want.hard_permille;
                rule_set_effective(rs, &fixed, &matched, &eff);
                ck_assert_msg(
                        eff.max_request_tokens == want.max_request_tokens && eff.priority == want.priority &&
                                eff.max_priority == want.max_priority &&
                                eff.warn_permille == want.warn_permille &&
                                eff.hard_permille == want.hard_permille &&
                                eff.escalate_permille == want.escalate_permille,
                        "round %zu: effective %" PRIu64 " %d %d %u %u %u, model %" PRIu64 " %d %d %u %u %u",
                        round, eff.max_request_tokens, eff.priority, eff.max_priority, eff.warn_permille,
                        eff.hard_permille, eff.escalate_permille, want.max_request_tokens, want.priority,
                        want.max_priority, want.warn_permille, want.hard_permille, want.escalate_permille);
                ck_assert_msg(
                        eff.on_escalate == want.on_escalate && eff.on_hard_limit == want.on_hard_limit &&
                                eff.terminate_grace_usec == want.terminate_grace_usec &&
                                eff.enforce == want.enforce && eff.cap_rule == want.cap_rule,
                        "round %zu: ladder %d %d %" PRIu64 " %d cap %d, model %d %d %" PRIu64 " %d cap %d",
                        round, (int)eff.on_escalate, (int)eff.on_hard_limit, eff.terminate_grace_usec,
                        (int)eff.enforce, (int)eff.cap_rule, (int)want.on_escalate, (int)want.on_hard_limit,
                        want.terminate_grace_usec, (int)want.enforce, (int)want.cap_rule);
                /* What the ledger will be given is valid. */
                ck_assert(eff.warn_permille >= 1000 && eff.warn_permille <= eff.hard_permille &&
                          eff.hard_permille <= 5000);
                ck_assert(eff.priority >= eff.max_priority);

                rule_list_done(&fixed);
                rule_list_done(&candidates);
                rule_set_free(rs);
                config_release(&c);
        }
}
END_TEST

static Suite *rules_suite(void) {
        Suite *s = suite_create("rules");
        TCase *tc = tcase_create("core");

        tcase_add_test(tc, test_match);
        tcase_add_test(tc, test_match_lists_in_file_order);
        tcase_add_test(tc, test_no_rules);
        tcase_add_test(tc, test_scope_name);
        tcase_add_test(tc, test_scope_name_longest);
        tcase_add_test(tc, test_rank);
        tcase_add_test(tc, test_effective);
        tcase_add_test(tc, test_effective_top_level);
        tcase_add_test(tc, test_parsed_rules);
        tcase_add_test(tc, test_against_model);
        suite_add_tcase(s, tc);
        return s;
}

int main(void) {
        return tb_check_main(rules_suite());
}
