/* SPDX-License-Identifier: MIT */
/*
 * Tests for daemon/core/scopes.c: the scope chain of a caller (its order,
 * every entry's kind and owner, agent names scoped within the uid, the
 * cached agent part, a reload rebuilding chains, one budget charged once,
 * more than LEDGER_SCOPES_MAX scopes refused naming the one that did not
 * fit), the table's bounds (max_tracked_scopes, the per-uid share, admins
 * exempt from the share, lingering entries with usage or an allocation kept,
 * idle ones swept, by scope_table_sweep() and when full at most once per
 * second, referenced ones never), each kind's default limits and runtime
 * changes (kinds, exact names, names not yet tracked, "rule:NAME" covering
 * its keys, refusals, dropped by a new configuration), entries whose names
 * share a hash, and a seeded random run of chains, reservations and
 * settlements checking the table's counts and the ledger's invariants after
 * every step. Configs are built by hand; time moves by parameter.
 */
#include <check.h>
#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cgroup.h"
#include "config.h"
#include "ledger.h"
#include "rules.h"
#include "scopes.h"
#include "siphash.h"
#include "splitmix64.h"
#include "tb-check.h"

#define N_ROWS(t) (sizeof(t) / sizeof((t)[0]))
#define S(x)      ((char *)(x))
#define SEC       UINT64_C(1000000)
#define DAY       (86400 * SEC)
/* Aligned to every bucket (1 s, 60 s, 900 s): a commit at T0 leaves the
 * day window at T0 + 97 x 900 s. */
#define T0       (900 * 200 * SEC)
#define DAY_GONE (97 * 900 * SEC)

/* ---- principals ---- */

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

static const CgroupUnits units_user_manager = {
        .unit = "user@1000.service",
        .slices = {"user.slice", "user-1000.slice"},
        .n_slices = 2,
        .has_owner = true,
        .owner_uid = 1000,
};

static const CgroupUnits units_batch = {
        .unit = "nightly-backup.service",
        .slices = {"batch.slice", "batch-nightly.slice"},
        .n_slices = 2,
};

static const CgroupUnits units_session = {
        .unit = "session-2.scope",
        .slices = {"user.slice", "user-1001.slice"},
        .n_slices = 2,
};

static const CgroupUnits units_none = {};

static const CgroupUnits units_slice_only = {
        .slices = {"system.slice"},
        .n_slices = 1,
};

/* Every slice CgroupUnits keeps, both sides. */
static const CgroupUnits units_deepest = {
        .unit = "user@1003.service",
        .user_unit = "deep.service",
        .slices = {"a.slice", "a-b.slice", "a-b-c.slice", "a-b-c-d.slice", "a-b-c-d-e.slice",
                   "a-b-c-d-e-f.slice"},
        .n_slices = 6,
        .user_slices = {"u.slice", "u-b.slice", "u-b-c.slice", "u-b-c-d.slice", "u-b-c-d-e.slice",
                        "u-b-c-d-e-f.slice"},
        .n_user_slices = 6,
        .has_owner = true,
        .owner_uid = 1003,
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
/* alice again, in a plain slice and with another command. */
static const Principal alice_shell = {
        .uid = 1000,
        .gid = 1000,
        .pid = 4300,
        .comm = "bash",
        .exe = "bash",
        .units = &units_slice_only,
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
static const Principal stray2 = {
        .uid = 1004,
        .gid = 1004,
        .pid = 78,
        .comm = "stray",
        .exe = "stray",
        .units = &units_slice_only,
};
static const Principal deep = {
        .uid = 1003,
        .gid = 1003,
        .pid = 999,
        .comm = "deep",
        .exe = "deep",
        .units = &units_deepest,
};

/* ---- the fixture ---- */

/* Limits that tell the kinds apart. */
static const LedgerLimits limits_user = {{1111111, 0, 0}, 0, 0};
static const LedgerLimits limits_unit = {{1000000, 10000000, 0}, 600000, 256};
static const LedgerLimits limits_agent = {{500000, 5000000, 0}, 400000, 64};
static const LedgerLimits limits_global = {{2000000, 20000000, 100000000}, 1000000, 0};
static const LedgerLimits limits_process = {{500000, 5000000, 0}, 400000, 0};

typedef struct Fixture {
        Config c;
        Ledger *ledger;
        ScopeTable *t;
        /* Process scopes are the caller's (ProcessTable): one per pid here. */
        LedgerScope *process[16];
        pid_t process_pid[16];
        size_t n_process;
} Fixture;

static void config_fill(Config *c, RuleConfig *rules, size_t n) {
        ck_assert_int_eq(config_init_defaults(c), 0);
        c->rules = rules;
        c->n_rules = n;
        c->global = limits_global;
        c->process = limits_process;
        c->user = limits_user;
        c->unit = limits_unit;
        c->agent = limits_agent;
        c->max_tracked_scopes = 16384;
        c->max_tracked_scopes_per_uid = 1024;
}

static void config_release(Config *c) {
        c->rules = NULL;
        c->n_rules = 0;
        config_done(c);
}

static void fixture_init(Fixture *f, RuleConfig *rules, size_t n) {
        static const LedgerParams params = {.warn_permille = 1500, .hard_permille = 2000};

        *f = (Fixture){};
        config_fill(&f->c, rules, n);
        f->ledger = ledger_new(&params);
        ck_assert_ptr_nonnull(f->ledger);
        f->t = scope_table_new(f->ledger, &f->c);
        ck_assert_ptr_nonnull(f->t);
}

static void fixture_done(Fixture *f) {
        f->t = scope_table_free(f->t);
        ck_assert_ptr_null(f->t);
        ledger_free(f->ledger);
        config_release(&f->c);
}

static LedgerScope *process_scope(Fixture *f, pid_t pid) {
        char name[32];

        for (size_t i = 0; i < f->n_process; i++)
                if (f->process_pid[i] == pid)
                        return f->process[i];
        ck_assert_uint_lt(f->n_process, N_ROWS(f->process));
        snprintf(name, sizeof(name), "process:%d", (int)pid);
        f->process[f->n_process] = ledger_scope_new(f->ledger, name, &f->c.process);
        ck_assert_ptr_nonnull(f->process[f->n_process]);
        f->process_pid[f->n_process] = pid;
        return f->process[f->n_process++];
}

static ScopeChain *chain_new(Fixture *f, const Principal *p, bool admin) {
        ScopeChain *c = scope_chain_new(f->t, p, process_scope(f, p->pid), admin);

        ck_assert_ptr_nonnull(c);
        return c;
}

typedef struct Resolved {
        int r;
        LedgerScope *const *scopes;
        size_t n;
        const RuleEffective *effective;
        ScopeFailure failure;
        char names[4096]; /* the names, ' ' between them */
} Resolved;

static int resolve(Fixture *f, ScopeChain *c, const char *agent, uint64_t now, Resolved *ret) {
        size_t len = 0;

        memset(ret, 0, sizeof(*ret));
        ret->r = scope_chain_resolve(f->t, c, agent, now, &ret->scopes, &ret->n, &ret->effective,
                                     &ret->failure);
        if (ret->r < 0)
                return ret->r;
        for (size_t i = 0; i < ret->n; i++)
                len += (size_t)snprintf(ret->names + len, sizeof(ret->names) - len, "%s%s", i ? " " : "",
                                        ledger_scope_name(ret->scopes[i]));
        return 0;
}

static void resolve_ok(Fixture *f, ScopeChain *c, const char *agent, uint64_t now, Resolved *ret) {
        int r = resolve(f, c, agent, now, ret);

        ck_assert_msg(r == 0, "resolve agent '%s': %d (%s)", agent ?: "(none)", r, ret->failure.scope);
}

static ScopeEntry *entry_named(Fixture *f, const char *name) {
        for (ScopeEntry *e = scope_table_next(f->t, NULL); e; e = scope_table_next(f->t, e))
                if (strcmp(ledger_scope_name(scope_entry_scope(e)), name) == 0)
                        return e;
        return NULL;
}

static LedgerScope *scope_named(Fixture *f, const char *name) {
        ScopeEntry *e = entry_named(f, name);
        return e ? scope_entry_scope(e) : NULL;
}

/* Whether the chain holds exactly these names, in whatever order (the
 * order itself is test_chain_order's). */
static bool same_names(const Resolved *res, const char *expect) {
        size_t n = 0;
        char word[600];

        for (const char *p = expect; *p;) {
                size_t len = strcspn(p, " ");
                bool found = false;

                snprintf(word, sizeof(word), "%.*s", (int)len, p);
                for (size_t i = 0; i < res->n; i++)
                        found = found || strcmp(ledger_scope_name(res->scopes[i]), word) == 0;
                if (!found)
                        return false;
                n++;
                p += len;
                p += strspn(p, " ");
        }
        return n == res->n;
}

#define assert_names(res, expect)                                                                           \
        ck_assert_msg(same_names(res, expect), "chain '%s', expected the names '%s'", (res)->names, expect)

static bool holds(const Resolved *res, const LedgerScope *s) {
        for (size_t i = 0; i < res->n; i++)
                if (res->scopes[i] == s)
                        return true;
        return false;
}

/* Tokens committed in every scope of the chain (reserved and settled at now). */
static void spend(Fixture *f, const Resolved *res, uint64_t tokens, uint64_t now) {
        LedgerAllocation *a;
        LedgerRefusal refusal;

        ck_assert_int_eq(ledger_reserve(f->ledger, res->scopes, res->n, tokens, now, &a, &refusal), 0);
        ck_assert_int_eq(ledger_settle(f->ledger, a, tokens, 0, now, NULL, NULL), 0);
}

static bool limits_eq(const LedgerLimits *a, const LedgerLimits *b) {
        return memcmp(a, b, sizeof(*a)) == 0;
}

/* ---- kinds ---- */

START_TEST(test_kind_strings) {
        static const char *const names[] = {"global", "user", "slice", "unit", "process", "agent", "rule"};

        for (ScopeKind k = 0; k < _SCOPE_KIND_MAX; k++) {
                ck_assert_str_eq(scope_kind_to_string(k), names[k]);
                ck_assert_int_eq(scope_kind_from_string(names[k]), (int)k);
        }
        ck_assert_ptr_null(scope_kind_to_string(_SCOPE_KIND_MAX));
        ck_assert_ptr_null(scope_kind_to_string((ScopeKind)-1));
        ck_assert_int_eq(scope_kind_from_string("users"), -EINVAL);
        ck_assert_int_eq(scope_kind_from_string(""), -EINVAL);
        ck_assert_int_eq(scope_kind_from_string("User"), -EINVAL);
        ck_assert_int_eq(scope_kind_from_string("user:1000"), -EINVAL);
}
END_TEST

/* ---- chain order ---- */

/* Rules shared by the order rows: r_all charges a budget per user, r_py one
 * per process of python3, r_unit one per unit, r_bot one per agent whose
 * name starts with "bot". */
static RuleConfig order_rules[] = {
        {.name = S("all"), .per = RULE_PER_USER},
        {.name = S("py"), .per = RULE_PER_PROCESS, .match = {.command = S("python3*")}},
        {.name = S("units"), .per = RULE_PER_UNIT},
        {.name = S("shared"), .per = RULE_PER_RULE, .match = {.slice = S("user.slice")}},
};

typedef struct OrderRow {
        const char *name;
        const Principal *p;
        const char *agent;
        const char *expect;
} OrderRow;

/* clang-format off */
static const OrderRow order_rows[] = {
        {"a user unit: system slices, unit, user slices, user unit, process, rules", &alice, NULL,
         "global user:1000 slice:user.slice slice:user-1000.slice unit:user@1000.service "
         "slice:1000:app.slice slice:1000:app-term.slice unit:1000:app.service process:4242 "
         "rule:all:1000 rule:py:4242 rule:units:1000:app.service rule:shared"},
        {"the user manager itself", &alice_manager, NULL,
         "global user:1000 slice:user.slice slice:user-1000.slice unit:user@1000.service process:900 "
         "rule:all:1000 rule:units:user@1000.service rule:shared"},
        {"a system service", &backup, NULL,
         "global user:0 slice:batch.slice slice:batch-nightly.slice unit:nightly-backup.service process:555 "
         "rule:all:0 rule:units:nightly-backup.service"},
        {"a session scope", &bob, NULL,
         "global user:1001 slice:user.slice slice:user-1001.slice unit:session-2.scope process:31337 "
         "rule:all:1001 rule:units:session-2.scope rule:shared"},
        {"no unit, no slice: per-unit rules do not apply", &root_nowhere, NULL,
         "global user:0 process:1 rule:all:0"},
        {"only a slice", &stray, NULL, "global user:1002 slice:system.slice process:77 rule:all:1002"},
        {"the agent comes right after the process", &root_nowhere, "bot-1",
         "global user:0 process:1 agent:0:bot-1 rule:all:0"},
        {"...before every rule", &alice, "bot",
         "global user:1000 slice:user.slice slice:user-1000.slice unit:user@1000.service "
         "slice:1000:app.slice slice:1000:app-term.slice unit:1000:app.service process:4242 agent:1000:bot "
         "rule:all:1000 rule:py:4242 rule:units:1000:app.service rule:shared"},
        {"six slices on both sides", &deep, NULL,
         "global user:1003 slice:a.slice slice:a-b.slice slice:a-b-c.slice slice:a-b-c-d.slice "
         "slice:a-b-c-d-e.slice slice:a-b-c-d-e-f.slice unit:user@1003.service slice:1003:u.slice "
         "slice:1003:u-b.slice slice:1003:u-b-c.slice slice:1003:u-b-c-d.slice slice:1003:u-b-c-d-e.slice "
         "slice:1003:u-b-c-d-e-f.slice unit:1003:deep.service process:999 rule:all:1003 "
         "rule:units:1003:deep.service"},
};
/* clang-format on */

/* Who each name belongs to. */
typedef struct OwnerRow {
        const char *scope;
        ScopeKind kind;
        int64_t owner;
} OwnerRow;

/* clang-format off */
static const OwnerRow owner_rows[] = {
        {"global", SCOPE_GLOBAL, -1},
        {"user:1000", SCOPE_USER, 1000},
        {"user:0", SCOPE_USER, 0},
        {"slice:user.slice", SCOPE_SLICE, -1},
        {"slice:user-1000.slice", SCOPE_SLICE, 1000},
        {"slice:user-1001.slice", SCOPE_SLICE, 1001},
        {"slice:batch.slice", SCOPE_SLICE, -1},
        {"slice:system.slice", SCOPE_SLICE, -1},
        {"unit:user@1000.service", SCOPE_UNIT, 1000},
        {"unit:nightly-backup.service", SCOPE_UNIT, -1},
        {"unit:session-2.scope", SCOPE_UNIT, -1},
        {"slice:1000:app.slice", SCOPE_SLICE, 1000},
        {"unit:1000:app.service", SCOPE_UNIT, 1000},
        {"slice:1003:u-b-c-d-e-f.slice", SCOPE_SLICE, 1003},
        {"rule:all:1000", SCOPE_RULE, 1000},
        {"rule:all:0", SCOPE_RULE, 0},
        {"rule:py:4242", SCOPE_RULE, 1000},
        {"rule:units:1000:app.service", SCOPE_RULE, 1000},
        {"rule:units:user@1000.service", SCOPE_RULE, 1000},
        {"rule:units:nightly-backup.service", SCOPE_RULE, -1},
        {"rule:shared", SCOPE_RULE, -1},
        {"agent:0:bot-1", SCOPE_AGENT, 0},
        {"agent:1000:bot", SCOPE_AGENT, 1000},
};
/* clang-format on */

START_TEST(test_chain_order) {
        Fixture f;
        ScopeChain *chains[N_ROWS(order_rows)];
        Resolved res;

        fixture_init(&f, order_rules, N_ROWS(order_rules));
        for (size_t i = 0; i < N_ROWS(order_rows); i++) {
                const OrderRow *row = &order_rows[i];

                chains[i] = chain_new(&f, row->p, false);
                resolve_ok(&f, chains[i], row->agent, T0, &res);
                ck_assert_msg(strcmp(res.names, row->expect) == 0, "row '%s':\n got      %s\n expected %s",
                              row->name, res.names, row->expect);
                ck_assert_ptr_eq(res.scopes[0], scope_table_global(f.t));
                for (size_t k = 0; k < res.n; k++)
                        for (size_t j = 0; j < k; j++)
                                ck_assert_msg(res.scopes[j] != res.scopes[k], "row '%s': scope %zu twice",
                                              row->name, k);
        }
        for (size_t i = 0; i < N_ROWS(owner_rows); i++) {
                const OwnerRow *row = &owner_rows[i];
                ScopeEntry *e = entry_named(&f, row->scope);

                ck_assert_msg(e != NULL, "'%s' not tracked", row->scope);
                ck_assert_msg(scope_entry_kind(e) == row->kind, "'%s': kind %s", row->scope,
                              scope_kind_to_string(scope_entry_kind(e)));
                ck_assert_msg(scope_entry_owner(e) == row->owner, "'%s': owner %" PRId64, row->scope,
                              scope_entry_owner(e));
                ck_assert_ptr_eq(scope_table_entry_of(scope_entry_scope(e)), e);
        }
        /* The process scopes are the caller's, not the table's. */
        ck_assert_ptr_null(entry_named(&f, "process:4242"));
        ck_assert_ptr_null(scope_table_entry_of(process_scope(&f, 4242)));
        ck_assert_ptr_eq(scope_table_next(f.t, NULL), scope_table_entry_of(scope_table_global(f.t)));
        for (size_t i = 0; i < N_ROWS(order_rows); i++)
                scope_chain_free(f.t, chains[i], T0);
        scope_chain_free(f.t, NULL, T0);
        fixture_done(&f);
}
END_TEST

/* Switching agent names moves the agent scope in and out right after the
 * process, the fixed rules staying in place behind it and the name's rules
 * at the end; references stay balanced through it all. */
typedef struct SwitchStep {
        const char *agent;
        const char *expect;
} SwitchStep;

/* clang-format off */
static const SwitchStep switch_steps[] = {
        {NULL, "global user:1002 slice:system.slice process:77 rule:f1 rule:f2:1002"},
        {"bot", "global user:1002 slice:system.slice process:77 agent:1002:bot rule:f1 rule:f2:1002 rule:a1:1002:bot"},
        {"box", "global user:1002 slice:system.slice process:77 agent:1002:box rule:f1 rule:f2:1002 rule:a2"},
        {"botx", "global user:1002 slice:system.slice process:77 agent:1002:botx rule:f1 rule:f2:1002 "
                 "rule:a1:1002:botx rule:a2"},
        {NULL, "global user:1002 slice:system.slice process:77 rule:f1 rule:f2:1002"},
        {"q", "global user:1002 slice:system.slice process:77 agent:1002:q rule:f1 rule:f2:1002"},
        {"bot", "global user:1002 slice:system.slice process:77 agent:1002:bot rule:f1 rule:f2:1002 rule:a1:1002:bot"},
        {"bot", "global user:1002 slice:system.slice process:77 agent:1002:bot rule:f1 rule:f2:1002 rule:a1:1002:bot"},
};
/* clang-format on */

START_TEST(test_chain_agent_switching) {
        RuleConfig rules[] = {
                {.name = S("f1"), .per = RULE_PER_RULE},
                {.name = S("a1"), .per = RULE_PER_AGENT, .match = {.agent = S("bot*")}},
                {.name = S("f2"), .per = RULE_PER_USER},
                {.name = S("a2"), .per = RULE_PER_RULE, .match = {.agent = S("*x")}},
        };
        Fixture f;
        ScopeChain *c;
        Resolved res;

        fixture_init(&f, rules, N_ROWS(rules));
        c = chain_new(&f, &stray, false);
        for (int round = 0; round < 2; round++) {
                for (size_t i = 0; i < N_ROWS(switch_steps); i++) {
                        const SwitchStep *st = &switch_steps[i];

                        resolve_ok(&f, c, st->agent, T0, &res);
                        ck_assert_msg(strcmp(res.names, st->expect) == 0,
                                      "round %d, step %zu (%s):\n got      %s\n expected %s", round, i,
                                      st->agent ?: "none", res.names, st->expect);
                }
                /* The second round after a reload: every chain rebuilds. */
                ck_assert_int_eq(scope_table_set_config(f.t, &f.c), 0);
        }
        /* Everything but what the chain holds now is idle and lingering. */
        scope_table_sweep(f.t, T0);
        ck_assert_uint_eq(scope_table_size(f.t), 6);
        scope_chain_free(f.t, c, T0);
        scope_table_sweep(f.t, T0);
        ck_assert_uint_eq(scope_table_size(f.t), 0);
        ck_assert_uint_eq(scope_table_uid_count(f.t, 1002), 0);
        fixture_done(&f);
}
END_TEST

/* ---- agents ---- */

START_TEST(test_agent_scoped_within_uid) {
        RuleConfig rules[] = {
                {.name = S("bots"), .per = RULE_PER_AGENT},
                {.name = S("b"), .per = RULE_PER_RULE, .match = {.agent = S("b*")}},
        };
        Fixture f;
        ScopeChain *a, *b;
        Resolved ra, rb;
        LedgerScope *agent_a, *agent_b;

        fixture_init(&f, rules, N_ROWS(rules));
        a = chain_new(&f, &alice_shell, false);
        b = chain_new(&f, &stray, false);
        resolve_ok(&f, a, "bot", T0, &ra);
        resolve_ok(&f, b, "bot", T0, &rb);
        agent_a = scope_named(&f, "agent:1000:bot");
        agent_b = scope_named(&f, "agent:1002:bot");
        ck_assert_ptr_nonnull(agent_a);
        ck_assert_ptr_nonnull(agent_b);
        ck_assert_ptr_ne(agent_a, agent_b);
        assert_names(
                &ra,
                "global user:1000 slice:system.slice process:4300 agent:1000:bot rule:bots:1000:bot rule:b");
        assert_names(
                &rb,
                "global user:1002 slice:system.slice process:77 agent:1002:bot rule:bots:1002:bot rule:b");
        ck_assert(holds(&ra, agent_a) && !holds(&ra, agent_b));
        ck_assert(holds(&rb, agent_b) && !holds(&rb, agent_a));
        /* A shared rule budget is one scope for both. */
        ck_assert(holds(&ra, scope_named(&f, "rule:b")) && holds(&rb, scope_named(&f, "rule:b")));
        ck_assert(holds(&ra, scope_named(&f, "slice:system.slice")) &&
                  holds(&rb, scope_named(&f, "slice:system.slice")));
        ck_assert_int_eq(scope_entry_owner(entry_named(&f, "rule:bots:1002:bot")), 1002);
        ck_assert_int_eq(scope_entry_owner(entry_named(&f, "agent:1002:bot")), 1002);
        ck_assert_int_eq(scope_entry_kind(entry_named(&f, "agent:1002:bot")), SCOPE_AGENT);
        ck_assert_int_eq(scope_entry_owner(entry_named(&f, "rule:b")), -1);

        /* No agent: no agent scope, no per-agent rule, no agent-glob rule. */
        resolve_ok(&f, a, NULL, T0, &ra);
        assert_names(&ra, "global user:1000 slice:system.slice process:4300");
        /* A name the glob does not take: only the per-agent rule. */
        resolve_ok(&f, a, "cat", T0, &ra);
        assert_names(&ra,
                     "global user:1000 slice:system.slice process:4300 agent:1000:cat rule:bots:1000:cat");
        scope_chain_free(f.t, a, T0);
        scope_chain_free(f.t, b, T0);
        fixture_done(&f);
}
END_TEST

START_TEST(test_agent_cache) {
        RuleConfig rules[] = {
                {.name = S("bots"),
                 .per = RULE_PER_AGENT,
                 .match = {.agent = S("bot*")},
                 .set = RULE_SET_MAX_REQUEST_TOKENS,
                 .max_request_tokens = 123},
                {.name = S("all"),
                 .per = RULE_PER_USER,
                 .set = RULE_SET_MAX_REQUEST_TOKENS,
                 .max_request_tokens = 456},
        };
        LedgerScope *first[LEDGER_SCOPES_MAX];
        Fixture f;
        ScopeChain *c;
        Resolved res;
        size_t n_first, size;

        fixture_init(&f, rules, N_ROWS(rules));
        c = chain_new(&f, &stray, false);
        resolve_ok(&f, c, "bot-1", T0, &res);
        ck_assert_uint_eq(res.effective->max_request_tokens, 123);
        n_first = res.n;
        memcpy(first, res.scopes, n_first * sizeof(first[0]));
        size = scope_table_size(f.t);
        /* user:1002 slice:system.slice rule:all:1002 agent:1002:bot-1 rule:bots:1002:bot-1 */
        ck_assert_uint_eq(size, 5);
        ck_assert_uint_eq(scope_table_uid_count(f.t, 1002), 5);

        /* The same name: the same scopes, nothing new. */
        for (int i = 0; i < 3; i++) {
                resolve_ok(&f, c, "bot-1", T0 + SEC * i, &res);
                ck_assert_uint_eq(res.n, n_first);
                ck_assert(memcmp(res.scopes, first, n_first * sizeof(first[0])) == 0);
                ck_assert_uint_eq(scope_table_size(f.t), size);
        }
        /* Another name: the agent part changes, the base stays. */
        resolve_ok(&f, c, "bot-2", T0, &res);
        ck_assert_uint_eq(res.n, n_first);
        for (size_t i = 0; i < n_first; i++) {
                const char *name = ledger_scope_name(first[i]);
                bool agent_part = strncmp(name, "agent:", 6) == 0 || strncmp(name, "rule:bots:", 10) == 0;
                ck_assert_msg(holds(&res, first[i]) == !agent_part, "%s", name);
        }
        assert_names(&res, "global user:1002 slice:system.slice process:77 rule:all:1002 agent:1002:bot-2 "
                           "rule:bots:1002:bot-2");
        ck_assert_uint_eq(scope_table_size(f.t), size + 2);
        /* A name no agent rule takes: the less specific rule's setting. */
        resolve_ok(&f, c, "cat", T0, &res);
        ck_assert_uint_eq(res.effective->max_request_tokens, 456);
        ck_assert_uint_eq(res.n, n_first - 1);
        /* Back to the first name: its entries lingered and are found again. */
        resolve_ok(&f, c, "bot-1", T0, &res);
        ck_assert(memcmp(res.scopes, first, n_first * sizeof(first[0])) == 0);
        ck_assert_uint_eq(scope_table_size(f.t), size + 3);
        ck_assert_uint_eq(res.effective->max_request_tokens, 123);
        /* None. */
        resolve_ok(&f, c, NULL, T0, &res);
        ck_assert_uint_eq(res.n, 5);
        ck_assert_uint_eq(res.effective->max_request_tokens, 456);
        resolve_ok(&f, c, NULL, T0, &res);
        ck_assert_uint_eq(res.n, 5);
        /* The empty name is a name. */
        resolve_ok(&f, c, "", T0, &res);
        assert_names(&res, "global user:1002 slice:system.slice process:77 rule:all:1002 agent:1002:");
        scope_chain_free(f.t, c, T0);
        fixture_done(&f);
}
END_TEST

/* ---- reload ---- */

START_TEST(test_reload_rebuilds) {
        RuleConfig rules1[] = {
                {.name = S("old"), .per = RULE_PER_USER, .limits = {{100, 0, 0}, 0, 0}},
                {.name = S("kept"), .per = RULE_PER_RULE, .limits = {{200, 0, 0}, 0, 0}},
        };
        RuleConfig rules2[] = {
                {.name = S("kept"), .per = RULE_PER_RULE, .limits = {{300, 0, 0}, 0, 0}},
                {.name = S("new"), .per = RULE_PER_AGENT, .set = RULE_SET_HARD, .hard_permille = 3000},
        };
        Config c2;
        Fixture f;
        ScopeChain *c;
        Resolved res;
        LedgerScope *old;

        fixture_init(&f, rules1, N_ROWS(rules1));
        c = chain_new(&f, &stray, false);
        resolve_ok(&f, c, "x", T0, &res);
        assert_names(&res,
                     "global user:1002 slice:system.slice process:77 rule:old:1002 rule:kept agent:1002:x");
        ck_assert_uint_eq(res.effective->hard_permille, 2000);
        spend(&f, &res, 10, T0);
        old = scope_named(&f, "rule:old:1002");

        config_fill(&c2, rules2, N_ROWS(rules2));
        c2.user = (LedgerLimits){{0, 12, 0}, 0, 7};
        ck_assert_int_eq(scope_table_set_config(f.t, &c2), 0);
        /* Limits change at once, for entries of every kind... */
        ck_assert(limits_eq(ledger_scope_get_limits(scope_named(&f, "user:1002")), &c2.user));
        ck_assert_uint_eq(ledger_scope_get_limits(scope_named(&f, "rule:kept"))->window_tokens[0], 300);
        /* ...but a rule that is gone keeps its budget's. */
        ck_assert_uint_eq(ledger_scope_get_limits(old)->window_tokens[0], 100);
        ck_assert_ptr_eq(scope_table_rules(f.t), scope_table_rules(f.t));
        ck_assert_uint_eq(rule_set_size(scope_table_rules(f.t)), 2);

        /* The chain rebuilds at its next use, with the new rules. */
        resolve_ok(&f, c, "x", T0 + SEC, &res);
        assert_names(
                &res,
                "global user:1002 slice:system.slice process:77 rule:kept agent:1002:x rule:new:1002:x");
        ck_assert_uint_eq(res.effective->hard_permille, 3000);
        /* The old rule's budget lingers with its usage... */
        ck_assert_ptr_eq(scope_named(&f, "rule:old:1002"), old);
        scope_table_sweep(f.t, T0 + SEC);
        ck_assert_ptr_eq(scope_named(&f, "rule:old:1002"), old);
        ck_assert_uint_eq(ledger_scope_window_used(old, LEDGER_WINDOW_DAY, T0 + SEC), 10);
        /* ...until it is idle. */
        scope_table_sweep(f.t, T0 + DAY_GONE);
        ck_assert_ptr_null(scope_named(&f, "rule:old:1002"));

        /* And back: the same config object again works too. */
        ck_assert_int_eq(scope_table_set_config(f.t, &f.c), 0);
        resolve_ok(&f, c, "x", T0 + DAY_GONE, &res);
        assert_names(&res,
                     "global user:1002 slice:system.slice process:77 rule:old:1002 rule:kept agent:1002:x");
        ck_assert(limits_eq(ledger_scope_get_limits(scope_named(&f, "user:1002")), &limits_user));
        scope_chain_free(f.t, c, T0);
        fixture_done(&f);
        config_release(&c2);
}
END_TEST

/* ---- one budget once ---- */

START_TEST(test_same_budget_charged_once) {
        /* Two rules of one name (the parser refuses that; the table must not
         * charge one budget twice all the same). */
        RuleConfig rules[] = {
                {.name = S("dup"), .per = RULE_PER_USER},
                {.name = S("dup"), .per = RULE_PER_USER, .match = {.command = S("stray")}},
                {.name = S("dup2"), .per = RULE_PER_RULE},
                {.name = S("dup2"), .per = RULE_PER_RULE, .match = {.agent = S("*")}},
                {.name = S("agentdup"), .per = RULE_PER_AGENT},
                {.name = S("agentdup"), .per = RULE_PER_AGENT, .match = {.agent = S("b*")}},
        };
        Fixture f;
        ScopeChain *c;
        Resolved res;
        LedgerAllocation *a;
        LedgerRefusal refusal;

        fixture_init(&f, rules, N_ROWS(rules));
        c = chain_new(&f, &stray, false);
        resolve_ok(&f, c, "bot", T0, &res);
        assert_names(&res,
                     "global user:1002 slice:system.slice process:77 rule:dup:1002 rule:dup2 agent:1002:bot "
                     "rule:agentdup:1002:bot");
        /* The ledger takes the list as it is (it asserts on a scope twice). */
        ck_assert_int_eq(ledger_reserve(f.ledger, res.scopes, res.n, 10, T0, &a, &refusal), 0);
        ck_assert_uint_eq(ledger_scope_reserved(scope_named(&f, "rule:dup2")), 20);
        ck_assert_int_eq(ledger_settle(f.ledger, a, 0, 0, T0, NULL, NULL), 0);
        /* References stay balanced: after the chain goes, everything is idle and swept. */
        scope_chain_free(f.t, c, T0);
        scope_table_sweep(f.t, T0);
        ck_assert_uint_eq(scope_table_size(f.t), 0);
        ck_assert_uint_eq(scope_table_uid_count(f.t, 1002), 0);
        fixture_done(&f);
}
END_TEST

/* ---- too many scopes ---- */

static void numbered_rules(RuleConfig *rules, char (*names)[24], size_t n, const char *prefix, RulePer per,
                           const char *agent) {
        for (size_t i = 0; i < n; i++) {
                snprintf(names[i], sizeof(names[i]), "%s%02zu", prefix, i);
                rules[i] = (RuleConfig){.name = names[i], .per = per, .match = {.agent = S(agent)}};
        }
}

START_TEST(test_too_many_scopes) {
        /* alice's base is 9 scopes (global .. process): 23 rules fill 32. */
        RuleConfig rules[40];
        char names[40][24];
        Fixture f;
        ScopeChain *c;
        Resolved res;

        numbered_rules(rules, names, 23, "r", RULE_PER_RULE, NULL);
        fixture_init(&f, rules, 23);
        c = chain_new(&f, &alice, false);
        resolve_ok(&f, c, NULL, T0, &res);
        ck_assert_uint_eq(res.n, LEDGER_SCOPES_MAX);
        ck_assert_str_eq(ledger_scope_name(res.scopes[31]), "rule:r22");
        /* An agent is one more. */
        ck_assert_int_eq(resolve(&f, c, "bot", T0, &res), -E2BIG);
        ck_assert_uint_eq(res.failure.limit, LEDGER_SCOPES_MAX);
        /* The 33rd in chain order: the agent where it comes now, the last
         * rule if the agent comes right after the process. */
        ck_assert_msg(strcmp(res.failure.scope, "agent:1000:bot") == 0 ||
                              strcmp(res.failure.scope, "rule:r22") == 0,
                      "failure names %s", res.failure.scope);
        /* The chain still serves requests without one. */
        resolve_ok(&f, c, NULL, T0, &res);
        ck_assert_uint_eq(res.n, LEDGER_SCOPES_MAX);
        scope_chain_free(f.t, c, T0);
        fixture_done(&f);

        /* 24 rules: the 24th does not fit the base; the refusal names it
         * and nothing stays referenced. */
        numbered_rules(rules, names, 30, "r", RULE_PER_RULE, NULL);
        fixture_init(&f, rules, 30);
        c = chain_new(&f, &alice, false);
        ck_assert_int_eq(resolve(&f, c, NULL, T0, &res), -E2BIG);
        ck_assert_uint_eq(res.failure.limit, LEDGER_SCOPES_MAX);
        ck_assert_str_eq(res.failure.scope, "rule:r23");
        ck_assert_ptr_null(entry_named(&f, "rule:r23"));
        scope_table_sweep(f.t, T0);
        ck_assert_uint_eq(scope_table_size(f.t), 0);
        scope_chain_free(f.t, c, T0);
        fixture_done(&f);

        /* In the agent part: 21 fixed rules, the agent and its first rule
         * make 32, the second does not fit. */
        numbered_rules(rules, names, 21, "r", RULE_PER_RULE, NULL);
        numbered_rules(rules + 21, names + 21, 3, "a", RULE_PER_AGENT, "b*");
        fixture_init(&f, rules, 24);
        c = chain_new(&f, &alice, false);
        ck_assert_int_eq(resolve(&f, c, "bot", T0, &res), -E2BIG);
        ck_assert_str_eq(res.failure.scope, "rule:a01:1000:bot");
        /* A name the agent rules do not take fits. */
        resolve_ok(&f, c, "cat", T0, &res);
        ck_assert_uint_eq(res.n, 31);
        ck_assert_str_eq(ledger_scope_name(res.scopes[9]), "agent:1000:cat");
        /* And without one, the base is as it was. */
        resolve_ok(&f, c, NULL, T0, &res);
        ck_assert_uint_eq(res.n, 30);
        ck_assert_str_eq(ledger_scope_name(res.scopes[8]), "process:4242");
        ck_assert_str_eq(ledger_scope_name(res.scopes[9]), "rule:r00");
        ck_assert_str_eq(ledger_scope_name(res.scopes[29]), "rule:r20");
        scope_chain_free(f.t, c, T0);
        fixture_done(&f);
}
END_TEST

/* The failure names the scope in full: agent names are up to 255 bytes
 * (agent.c, LABEL_MAX_BYTES). */
START_TEST(test_failure_names_long_scope) {
        char agent[256], expect[300];
        Fixture f;
        ScopeChain *c;
        Resolved res;

        memset(agent, 'a', 255);
        agent[255] = 0;
        snprintf(expect, sizeof(expect), "agent:1002:%s", agent);
        fixture_init(&f, NULL, 0);
        f.c.max_tracked_scopes = 2;
        c = chain_new(&f, &stray, false);
        ck_assert_int_eq(resolve(&f, c, agent, T0, &res), -EUSERS);
        ck_assert_msg(strcmp(res.failure.scope, expect) == 0, "failure names '%s' (%zu bytes)",
                      res.failure.scope, strlen(res.failure.scope));
        scope_chain_free(f.t, c, T0);
        fixture_done(&f);
}
END_TEST

/* ---- bounds ---- */

START_TEST(test_total_bound) {
        Fixture f;
        ScopeChain *a, *b, *adm;
        Resolved res;

        fixture_init(&f, NULL, 0);
        f.c.max_tracked_scopes = 4;
        a = chain_new(&f, &stray, false);  /* user:1002 slice:system.slice */
        b = chain_new(&f, &stray2, false); /* user:1004 */
        resolve_ok(&f, a, "a0", T0, &res);
        resolve_ok(&f, b, NULL, T0, &res);
        ck_assert_uint_eq(scope_table_size(f.t), 4);

        /* Full of referenced entries: nothing to sweep. */
        ck_assert_int_eq(resolve(&f, b, "b0", T0, &res), -EUSERS);
        ck_assert_uint_eq(res.failure.limit, 4);
        ck_assert_str_eq(res.failure.scope, "agent:1004:b0");
        /* Admins are exempt from the share only: the table bound holds. */
        adm = chain_new(&f, &root_nowhere, true);
        ck_assert_int_eq(resolve(&f, adm, NULL, T0, &res), -EUSERS);
        ck_assert_str_eq(res.failure.scope, "user:0");
        scope_table_sweep(f.t, T0 + 365 * DAY);
        ck_assert_uint_eq(scope_table_size(f.t), 4);

        /* a's old agent entry lingers idle when it switches names: the full
         * table sweeps it (at most once a second). */
        resolve_ok(&f, a, "a1", T0 + 365 * DAY + 10 * SEC, &res);
        ck_assert_ptr_null(entry_named(&f, "agent:1002:a0"));
        ck_assert_uint_eq(scope_table_size(f.t), 4);
        ck_assert_int_eq(resolve(&f, a, "a2", T0 + 365 * DAY + 10 * SEC + SEC / 2, &res), -EUSERS);
        ck_assert_str_eq(res.failure.scope, "agent:1002:a2");
        ck_assert_ptr_nonnull(entry_named(&f, "agent:1002:a1"));
        ck_assert_int_eq(resolve(&f, a, "a2", T0 + 365 * DAY + 11 * SEC - 1, &res), -EUSERS);
        resolve_ok(&f, a, "a2", T0 + 365 * DAY + 11 * SEC, &res);
        ck_assert_ptr_null(entry_named(&f, "agent:1002:a1"));
        ck_assert_uint_eq(scope_table_size(f.t), 4);
        scope_chain_free(f.t, a, T0);
        scope_chain_free(f.t, b, T0);
        scope_chain_free(f.t, adm, T0);
        fixture_done(&f);
}
END_TEST

START_TEST(test_per_uid_share) {
        Fixture f;
        ScopeChain *a, *b, *adm, *again;
        Resolved res;
        char agent[16];

        fixture_init(&f, NULL, 0);
        f.c.max_tracked_scopes = 100;
        f.c.max_tracked_scopes_per_uid = 5;
        a = chain_new(&f, &stray, false);
        /* user:1002 slice:system.slice and three agents, each with usage. */
        for (int i = 0; i < 3; i++) {
                snprintf(agent, sizeof(agent), "a%d", i);
                resolve_ok(&f, a, agent, T0, &res);
                spend(&f, &res, 10, T0);
        }
        ck_assert_uint_eq(scope_table_uid_count(f.t, 1002), 5);
        ck_assert_int_eq(resolve(&f, a, "a3", T0, &res), -ETOOMANYREFS);
        ck_assert_uint_eq(res.failure.limit, 5);
        ck_assert_str_eq(res.failure.scope, "agent:1002:a3");
        ck_assert_uint_eq(scope_table_uid_count(f.t, 1002), 5);
        /* Names it already has still resolve: no new entry. */
        resolve_ok(&f, a, "a1", T0, &res);
        /* Another uid has its own share; slice:system.slice is shared and not
         * charged again. */
        b = chain_new(&f, &stray2, false);
        resolve_ok(&f, b, "a3", T0, &res);
        ck_assert_uint_eq(scope_table_uid_count(f.t, 1004), 2);
        /* An admin of the same uid is exempt, and its entries are in no share. */
        adm = chain_new(&f, &stray, true);
        resolve_ok(&f, adm, "a3", T0, &res);
        resolve_ok(&f, adm, "a4", T0, &res);
        ck_assert_uint_eq(scope_table_uid_count(f.t, 1002), 5);
        ck_assert_uint_eq(scope_table_size(f.t), 5 + 2 + 2);
        /* The admin's entry is then found by the non-admin: no new entry. */
        resolve_ok(&f, a, "a4", T0, &res);
        ck_assert_uint_eq(scope_table_uid_count(f.t, 1002), 5);

        /* A day later the usage is gone: the share makes room by sweeping. */
        again = chain_new(&f, &stray, false);
        ck_assert_int_eq(resolve(&f, a, "a5", T0 + SEC / 2, &res), -ETOOMANYREFS);
        resolve_ok(&f, a, "a5", T0 + DAY_GONE, &res);
        ck_assert_ptr_null(entry_named(&f, "agent:1002:a0"));
        ck_assert_ptr_null(entry_named(&f, "agent:1002:a2"));
        resolve_ok(&f, again, "a6", T0 + DAY_GONE, &res);
        ck_assert_uint_le(scope_table_uid_count(f.t, 1002), 5);
        scope_chain_free(f.t, a, T0);
        scope_chain_free(f.t, b, T0);
        scope_chain_free(f.t, adm, T0);
        scope_chain_free(f.t, again, T0);
        scope_table_sweep(f.t, T0 + 2 * DAY_GONE);
        ck_assert_uint_eq(scope_table_size(f.t), 0);
        ck_assert_uint_eq(scope_table_uid_count(f.t, 1002), 0);
        ck_assert_uint_eq(scope_table_uid_count(f.t, 1004), 0);
        fixture_done(&f);
}
END_TEST

START_TEST(test_lingering) {
        Fixture f;
        ScopeChain *c;
        Resolved res;
        LedgerScope *agent;
        LedgerAllocation *alloc;
        LedgerRefusal refusal;

        fixture_init(&f, NULL, 0);
        c = chain_new(&f, &stray, false);
        resolve_ok(&f, c, "a", T0, &res);
        spend(&f, &res, 10, T0);
        agent = scope_named(&f, "agent:1002:a");
        scope_chain_free(f.t, c, T0);
        ck_assert_uint_eq(scope_table_size(f.t), 3);

        /* With usage: kept while any window holds it. */
        scope_table_sweep(f.t, T0 + 3600 * SEC);
        scope_table_sweep(f.t, T0 + DAY_GONE - 1);
        ck_assert_uint_eq(scope_table_size(f.t), 3);
        /* Reconnecting finds the same budget. */
        c = chain_new(&f, &stray, false);
        resolve_ok(&f, c, "a", T0 + DAY_GONE - 1, &res);
        ck_assert(holds(&res, agent));
        ck_assert_ptr_eq(scope_named(&f, "agent:1002:a"), agent);
        ck_assert_uint_eq(ledger_scope_window_used(agent, LEDGER_WINDOW_DAY, T0 + DAY_GONE - 1), 10);
        /* Referenced: never swept, even idle. */
        scope_table_sweep(f.t, T0 + 400 * DAY);
        ck_assert_uint_eq(scope_table_size(f.t), 3);

        /* An allocation keeps entries after the chain goes. */
        ck_assert_int_eq(ledger_reserve(f.ledger, res.scopes, res.n, 5, T0 + 400 * DAY, &alloc, &refusal),
                         0);
        scope_chain_free(f.t, c, T0 + 400 * DAY);
        scope_table_sweep(f.t, T0 + 401 * DAY);
        ck_assert_uint_eq(scope_table_size(f.t), 3);
        ck_assert_ptr_eq(scope_named(&f, "agent:1002:a"), agent);
        ck_assert_int_eq(ledger_settle(f.ledger, alloc, 0, 0, T0 + 401 * DAY, NULL, NULL), 0);
        scope_table_sweep(f.t, T0 + 401 * DAY);
        ck_assert_uint_eq(scope_table_size(f.t), 0);
        ck_assert_uint_eq(scope_table_uid_count(f.t, 1002), 0);
        fixture_done(&f);
}
END_TEST

/* ---- limits ---- */

START_TEST(test_default_limits) {
        RuleConfig rules[] = {
                {.name = S("r"), .per = RULE_PER_USER, .limits = {{1, 2, 3}, 4, 5}},
        };
        static const LedgerLimits none = {};
        Fixture f;
        ScopeChain *c;
        Resolved res;

        fixture_init(&f, rules, N_ROWS(rules));
        c = chain_new(&f, &alice, false);
        resolve_ok(&f, c, "bot", T0, &res);
        ck_assert(limits_eq(ledger_scope_get_limits(scope_table_global(f.t)), &limits_global));
        ck_assert(limits_eq(ledger_scope_get_limits(scope_named(&f, "user:1000")), &limits_user));
        ck_assert(limits_eq(ledger_scope_get_limits(scope_named(&f, "slice:user.slice")), &none));
        ck_assert(limits_eq(ledger_scope_get_limits(scope_named(&f, "slice:1000:app.slice")), &none));
        ck_assert(
                limits_eq(ledger_scope_get_limits(scope_named(&f, "unit:user@1000.service")), &limits_unit));
        ck_assert(
                limits_eq(ledger_scope_get_limits(scope_named(&f, "unit:1000:app.service")), &limits_unit));
        ck_assert(limits_eq(ledger_scope_get_limits(scope_named(&f, "agent:1000:bot")), &limits_agent));
        ck_assert(limits_eq(ledger_scope_get_limits(scope_named(&f, "rule:r:1000")), &rules[0].limits));
        ck_assert(limits_eq(ledger_scope_get_limits(process_scope(&f, 4242)), &limits_process));
        scope_chain_free(f.t, c, T0);
        fixture_done(&f);
}
END_TEST

static RuleConfig limit_rules[] = {
        {.name = S("nightly"), .per = RULE_PER_USER, .limits = {{0, 1000, 0}, 0, 0}},
        {.name = S("shared"), .per = RULE_PER_RULE},
        {.name = S("night"), .per = RULE_PER_AGENT, .match = {.agent = S("zzz")}},
};

#define M_MIN   SCOPE_LIMIT_MINUTE
#define M_HOUR  SCOPE_LIMIT_HOUR
#define M_DAY   SCOPE_LIMIT_DAY
#define M_FLY   SCOPE_LIMIT_IN_FLIGHT
#define M_ALLOC SCOPE_LIMIT_ALLOCATIONS

typedef struct LimitRow {
        const char *name;
        const char *target;
        unsigned mask;
        int expect_ret;
        /* Scopes that must have the change (checked by their minute limit
         * being 7 when M_MIN is in mask, etc.): ' '-separated. */
        const char *changed;
} LimitRow;

/* Values of every change: 7 minute, 8 hour, 9 day, 10 in flight, 11 allocations. */
static const LedgerLimits change_values = {{7, 8, 9}, 10, 11};

/* clang-format off */
static const LimitRow limit_rows[] = {
        {"a kind: every user", "user", M_MIN, 3, "user:1000 user:1001 user:1002"},
        {"a kind: two fields", "user", M_HOUR | M_FLY, 3, "user:1000 user:1001 user:1002"},
        {"one user", "user:1000", M_MIN | M_HOUR | M_DAY | M_FLY | M_ALLOC, 1, "user:1000"},
        {"global", "global", M_FLY, 1, "global"},
        {"every agent", "agent", M_ALLOC, 1, "agent:1000:bot"},
        {"every unit, system and user", "unit", M_DAY, 3,
         "unit:user@1000.service unit:1000:app.service unit:session-2.scope"},
        {"every slice", "slice", M_MIN, 6,
         "slice:user.slice slice:user-1000.slice slice:1000:app.slice slice:1000:app-term.slice slice:user-1001.slice slice:system.slice"},
        {"one slice", "slice:1000:app.slice", M_MIN, 1, "slice:1000:app.slice"},
        {"one unit", "unit:session-2.scope", M_MIN, 1, "unit:session-2.scope"},
        {"a rule: every key", "rule:nightly", M_MIN, 3, "rule:nightly:1000 rule:nightly:1001 rule:nightly:1002"},
        {"a rule: one key", "rule:nightly:1001", M_MIN, 1, "rule:nightly:1001"},
        {"a shared rule", "rule:shared", M_HOUR, 1, "rule:shared"},
        {"a rule whose name is a prefix of another's", "rule:night", M_MIN, 0, ""},
        {"a name not tracked yet", "user:4242", M_MIN, 0, ""},
        {"an agent not tracked yet", "agent:1000:later", M_MIN, 0, ""},
        {"a key not tracked yet", "rule:nightly:4242", M_MIN, 0, ""},
        {"an empty change", "user", 0, 3, ""},
        {"unknown rule", "rule:nope", M_MIN, -ENOENT, ""},
        {"unknown rule with a key", "rule:nope:1000", M_MIN, -ENOENT, ""},
        {"rule as a kind", "rule", M_MIN, -EINVAL, ""},
        {"process as a kind", "process", M_MIN, -EINVAL, ""},
        {"a process", "process:4242", M_MIN, -EINVAL, ""},
        {"empty", "", M_MIN, -EINVAL, ""},
        {"a prefix without a name", "user:", M_MIN, -EINVAL, ""},
        {"rule: without a name", "rule:", M_MIN, -EINVAL, ""},
        {"unknown kind", "users", M_MIN, -EINVAL, ""},
        {"unknown prefix", "group:10", M_MIN, -EINVAL, ""},
        {"case matters", "User", M_MIN, -EINVAL, ""},
        {"global with a name", "global:1", M_MIN, -EINVAL, ""},
};
/* clang-format on */

static bool word_in(const char *words, const char *word) {
        size_t n = strlen(word);

        for (const char *p = words; (p = strstr(p, word)); p += n)
                if ((p == words || p[-1] == ' ') && (p[n] == ' ' || p[n] == 0))
                        return true;
        return false;
}

/* Alice (with agent "bot"), bob and stray, each holding a chain. */
static void limits_world(Fixture *f, ScopeChain **chains) {
        Resolved res;

        fixture_init(f, limit_rules, N_ROWS(limit_rules));
        chains[0] = chain_new(f, &alice, false);
        chains[1] = chain_new(f, &bob, false);
        chains[2] = chain_new(f, &stray, false);
        resolve_ok(f, chains[0], "bot", T0, &res);
        resolve_ok(f, chains[1], NULL, T0, &res);
        resolve_ok(f, chains[2], NULL, T0, &res);
}

static void limits_world_done(Fixture *f, ScopeChain **chains) {
        for (size_t i = 0; i < 3; i++)
                scope_chain_free(f->t, chains[i], T0);
        fixture_done(f);
}

/* The limits an entry has before any change. */
static LedgerLimits default_of(Fixture *f, ScopeEntry *e) {
        const char *name = ledger_scope_name(scope_entry_scope(e));

        switch (scope_entry_kind(e)) {
        case SCOPE_GLOBAL:
                return f->c.global;
        case SCOPE_USER:
                return f->c.user;
        case SCOPE_UNIT:
                return f->c.unit;
        case SCOPE_AGENT:
                return f->c.agent;
        case SCOPE_RULE:
                for (size_t i = 0; i < f->c.n_rules; i++) {
                        size_t n = strlen(f->c.rules[i].name);
                        if (strncmp(name + 5, f->c.rules[i].name, n) == 0 &&
                            (name[5 + n] == 0 || name[5 + n] == ':'))
                                return f->c.rules[i].limits;
                }
                ck_abort_msg("no rule for %s", name);
                break;
        default:
                break;
        }
        return (LedgerLimits){};
}

START_TEST(test_set_limits) {
        for (size_t i = 0; i < N_ROWS(limit_rows); i++) {
                const LimitRow *row = &limit_rows[i];
                ScopeLimitsChange change = {row->mask, change_values};
                ScopeChain *chains[3];
                Fixture f;
                int r;

                limits_world(&f, chains);
                r = scope_table_set_limits(f.t, row->target, &change);
                ck_assert_msg(r == row->expect_ret, "row '%s': returned %d", row->name, r);
                for (ScopeEntry *e = scope_table_next(f.t, NULL); e; e = scope_table_next(f.t, e)) {
                        const char *name = ledger_scope_name(scope_entry_scope(e));
                        LedgerLimits expect = default_of(&f, e);

                        if (word_in(row->changed, name))
                                scope_limits_apply(&expect, &change);
                        ck_assert_msg(limits_eq(ledger_scope_get_limits(scope_entry_scope(e)), &expect),
                                      "row '%s': limits of %s", row->name, name);
                }
                limits_world_done(&f, chains);
        }
}
END_TEST

START_TEST(test_set_limits_rule_name_checked) {
        ScopeLimitsChange change = {M_MIN, change_values};
        ScopeChain *chains[3];
        Fixture f;
        char target[600];
        int r;

        limits_world(&f, chains);

        /* Too long for a scope name: refused before anything else. */
        memset(target, 'x', sizeof(target) - 1);
        target[sizeof(target) - 1] = 0;
        memcpy(target, "user:", 5);
        ck_assert_int_eq(scope_table_set_limits(f.t, target, &change), -EINVAL);
        /* No rule has an empty name, nor one of 100 bytes (at most 64). */
        r = scope_table_set_limits(f.t, "rule::1000", &change);
        ck_assert_msg(r == -ENOENT || r == -EINVAL, "rule::1000: %d", r);
        memcpy(target, "rule:", 5);
        target[105] = 0;
        r = scope_table_set_limits(f.t, target, &change);
        ck_assert_msg(r == -ENOENT || r == -EINVAL, "rule: and 100 bytes: %d", r);
        target[5 + 64] = 0;
        r = scope_table_set_limits(f.t, target, &change);
        ck_assert_msg(r == -ENOENT, "rule: and 64 bytes: %d", r);
        limits_world_done(&f, chains);
}
END_TEST

START_TEST(test_scope_limits_apply) {
        LedgerLimits l = {{1, 2, 3}, 4, 5};
        ScopeLimitsChange none = {0, {{9, 9, 9}, 9, 9}};
        ScopeLimitsChange hour_alloc = {M_HOUR | M_ALLOC, {{9, 90, 9}, 9, 50}};

        scope_limits_apply(&l, &none);
        ck_assert(limits_eq(&l, &(LedgerLimits){{1, 2, 3}, 4, 5}));
        scope_limits_apply(&l, &hour_alloc);
        ck_assert(limits_eq(&l, &(LedgerLimits){{1, 90, 3}, 4, 50}));
        /* A change to 0 lifts the limit. */
        scope_limits_apply(&l, &(ScopeLimitsChange){M_MIN | M_FLY, {}});
        ck_assert(limits_eq(&l, &(LedgerLimits){{0, 90, 3}, 0, 50}));
}
END_TEST

/* Changes add up, the narrower target wins whatever the order, names not
 * yet tracked get theirs when created, and a new configuration drops them all. */
START_TEST(test_set_limits_layers) {
        ScopeChain *chains[3], *later;
        Fixture f;
        Resolved res;

        limits_world(&f, chains);
        ck_assert_int_eq(scope_table_set_limits(f.t, "user:1000", &(ScopeLimitsChange){M_MIN, {{50}}}), 1);
        ck_assert_int_eq(scope_table_set_limits(f.t, "user", &(ScopeLimitsChange){M_MIN, {{5}}}), 3);
        ck_assert_int_eq(scope_table_set_limits(f.t, "user", &(ScopeLimitsChange){M_HOUR, {{0, 6}}}), 3);
        ck_assert_uint_eq(ledger_scope_get_limits(scope_named(&f, "user:1000"))->window_tokens[0], 50);
        ck_assert_uint_eq(ledger_scope_get_limits(scope_named(&f, "user:1000"))->window_tokens[1], 6);
        ck_assert_uint_eq(ledger_scope_get_limits(scope_named(&f, "user:1001"))->window_tokens[0], 5);
        ck_assert_uint_eq(ledger_scope_get_limits(scope_named(&f, "user:1001"))->window_tokens[1], 6);
        /* The same target again: the later value wins, other fields stay. */
        ck_assert_int_eq(scope_table_set_limits(f.t, "user", &(ScopeLimitsChange){M_MIN, {{4}}}), 3);
        ck_assert_uint_eq(ledger_scope_get_limits(scope_named(&f, "user:1001"))->window_tokens[0], 4);
        ck_assert_uint_eq(ledger_scope_get_limits(scope_named(&f, "user:1001"))->window_tokens[1], 6);

        /* Rules: the rule-wide change under the per-key one. */
        ck_assert_int_eq(
                scope_table_set_limits(f.t, "rule:nightly:1000", &(ScopeLimitsChange){M_MIN, {{70}}}), 1);
        ck_assert_int_eq(scope_table_set_limits(f.t, "rule:nightly",
                                                &(ScopeLimitsChange){M_MIN | M_DAY, {{7, 0, 9}}}),
                         3);
        ck_assert_uint_eq(ledger_scope_get_limits(scope_named(&f, "rule:nightly:1000"))->window_tokens[0],
                          70);
        ck_assert_uint_eq(ledger_scope_get_limits(scope_named(&f, "rule:nightly:1000"))->window_tokens[2],
                          9);
        ck_assert_uint_eq(ledger_scope_get_limits(scope_named(&f, "rule:nightly:1000"))->window_tokens[1],
                          1000);
        ck_assert_uint_eq(ledger_scope_get_limits(scope_named(&f, "rule:nightly:1001"))->window_tokens[0],
                          7);

        /* Names not yet tracked. */
        ck_assert_int_eq(
                scope_table_set_limits(f.t, "agent", &(ScopeLimitsChange){M_ALLOC, {.max_allocations = 3}}),
                1);
        ck_assert_int_eq(scope_table_set_limits(f.t, "agent:1000:later",
                                                &(ScopeLimitsChange){M_FLY, {.in_flight_tokens = 33}}),
                         0);
        ck_assert_int_eq(scope_table_set_limits(f.t, "user:1004", &(ScopeLimitsChange){M_DAY, {{0, 0, 44}}}),
                         0);
        ck_assert_int_eq(
                scope_table_set_limits(f.t, "rule:nightly:1004", &(ScopeLimitsChange){M_HOUR, {{0, 55}}}),
                0);
        resolve_ok(&f, chains[0], "later", T0, &res);
        ck_assert_uint_eq(ledger_scope_get_limits(scope_named(&f, "agent:1000:later"))->in_flight_tokens,
                          33);
        ck_assert_uint_eq(ledger_scope_get_limits(scope_named(&f, "agent:1000:later"))->max_allocations, 3);
        ck_assert_uint_eq(ledger_scope_get_limits(scope_named(&f, "agent:1000:bot"))->max_allocations, 3);
        ck_assert_uint_eq(ledger_scope_get_limits(scope_named(&f, "agent:1000:bot"))->in_flight_tokens,
                          limits_agent.in_flight_tokens);
        later = chain_new(&f, &stray2, false);
        resolve_ok(&f, later, NULL, T0, &res);
        ck_assert_uint_eq(ledger_scope_get_limits(scope_named(&f, "user:1004"))->window_tokens[2], 44);
        ck_assert_uint_eq(ledger_scope_get_limits(scope_named(&f, "user:1004"))->window_tokens[0], 4);
        ck_assert_uint_eq(ledger_scope_get_limits(scope_named(&f, "rule:nightly:1004"))->window_tokens[1],
                          55);
        ck_assert_uint_eq(ledger_scope_get_limits(scope_named(&f, "rule:nightly:1004"))->window_tokens[0],
                          7);

        /* A new configuration (the same one here) drops every change. */
        ck_assert_int_eq(scope_table_set_config(f.t, &f.c), 0);
        for (ScopeEntry *e = scope_table_next(f.t, NULL); e; e = scope_table_next(f.t, e)) {
                LedgerLimits expect = default_of(&f, e);
                ck_assert_msg(limits_eq(ledger_scope_get_limits(scope_entry_scope(e)), &expect),
                              "after set_config: limits of %s", ledger_scope_name(scope_entry_scope(e)));
        }
        scope_chain_free(f.t, later, T0);
        /* Also for names created after it. */
        scope_table_sweep(f.t, T0);
        ck_assert_ptr_null(entry_named(&f, "user:1004"));
        later = chain_new(&f, &stray2, false);
        resolve_ok(&f, later, NULL, T0, &res);
        ck_assert(limits_eq(ledger_scope_get_limits(scope_named(&f, "user:1004")), &limits_user));
        scope_chain_free(f.t, later, T0);
        limits_world_done(&f, chains);
}
END_TEST

/* ---- entries whose names share a hash ---- */

/* K of name_hash() (scopes.c) and its inverse mod 2^64. */
#define HASH_K UINT64_C(0x9e3779b97f4a7c15)

static uint64_t inverse_mod_2_64(uint64_t k) {
        uint64_t x = k; /* right to 3 bits for odd k; each step doubles them */

        for (int i = 0; i < 6; i++)
                x *= 2 - k * x;
        return x;
}

START_TEST(test_hash_collision) {
        /* "pp" charges per process of python3: the discriminator (start time
         * + 1) is chosen so that "rule:pp:4242" hashes like "agent:1000:x". */
        RuleConfig rules[] = {
                {.name = S("pp"), .per = RULE_PER_PROCESS, .match = {.command = S("python3")}}};
        static const uint8_t zero[16];
        SipHashKey key = siphash_key(zero);
        const char *a_name = "agent:1000:x", *b_name = "rule:pp:4242";
        uint64_t ha = siphash24(&key, a_name, strlen(a_name)), hb = siphash24(&key, b_name, strlen(b_name));
        uint64_t d = (ha ^ hb) * inverse_mod_2_64(HASH_K);
        Principal p = alice;
        Fixture f;
        ScopeChain *c1, *c2, *c3;
        Resolved res;
        LedgerScope *a, *b;
        size_t size;

        ck_assert_uint_eq(inverse_mod_2_64(HASH_K) * HASH_K, 1);
        ck_assert_uint_eq(hb ^ (d * HASH_K), ha);
        p.start_time = d - 1;
        fixture_init(&f, rules, N_ROWS(rules));
        scope_table_set_hash_key(f.t, zero);

        /* b first (base), then a after it in the same hash's chain. */
        c1 = chain_new(&f, &p, false);
        resolve_ok(&f, c1, "x", T0, &res);
        a = scope_named(&f, a_name);
        b = scope_named(&f, b_name);
        ck_assert_ptr_nonnull(a);
        ck_assert_ptr_nonnull(b);
        ck_assert_ptr_ne(a, b);
        size = scope_table_size(f.t);

        /* Freeing the second of the chain leaves the first found. */
        resolve_ok(&f, c1, "y", T0, &res);
        scope_table_sweep(f.t, T0);
        ck_assert_ptr_null(scope_named(&f, a_name));
        c2 = chain_new(&f, &p, false);
        resolve_ok(&f, c2, NULL, T0, &res);
        ck_assert_ptr_eq(scope_named(&f, b_name), b);
        ck_assert_uint_eq(scope_table_size(f.t), size);
        resolve_ok(&f, c1, "x", T0, &res);
        a = scope_named(&f, a_name);
        ck_assert_uint_eq(scope_table_size(f.t), size + 1);

        /* Freeing the first leaves the second found. alice_shell (uid 1000,
         * not python3) holds a but not b. */
        c3 = chain_new(&f, &alice_shell, false);
        resolve_ok(&f, c3, "x", T0, &res);
        ck_assert_ptr_eq(res.scopes[4], a);
        scope_chain_free(f.t, c1, T0);
        scope_chain_free(f.t, c2, T0);
        scope_table_sweep(f.t, T0);
        ck_assert_ptr_null(scope_named(&f, b_name));
        ck_assert_ptr_eq(scope_named(&f, a_name), a);
        c1 = chain_new(&f, &alice_shell, false);
        size = scope_table_size(f.t);
        resolve_ok(&f, c1, "x", T0, &res);
        ck_assert_ptr_eq(res.scopes[4], a);
        ck_assert_uint_eq(scope_table_size(f.t), size);
        /* And b comes back as a new entry beside a. */
        c2 = chain_new(&f, &p, false);
        resolve_ok(&f, c2, "x", T0, &res);
        ck_assert_ptr_eq(scope_named(&f, a_name), a);
        ck_assert_ptr_nonnull(scope_named(&f, b_name));
        ck_assert_ptr_ne(scope_named(&f, b_name), scope_named(&f, a_name));
        scope_chain_free(f.t, c1, T0);
        scope_chain_free(f.t, c2, T0);
        scope_chain_free(f.t, c3, T0);
        fixture_done(&f);
}
END_TEST

/* A per-process rule budget is told apart by the process's start time. */
START_TEST(test_per_process_rule_start_time) {
        RuleConfig rules[] = {{.name = S("pp"), .per = RULE_PER_PROCESS}};
        Principal p1 = stray, p2 = stray;
        Fixture f;
        ScopeChain *c1, *c2;
        Resolved r1, r2;

        p2.start_time = p1.start_time + 1;
        fixture_init(&f, rules, N_ROWS(rules));
        c1 = chain_new(&f, &p1, false);
        c2 = chain_new(&f, &p2, false);
        resolve_ok(&f, c1, NULL, T0, &r1);
        resolve_ok(&f, c2, NULL, T0, &r2);
        ck_assert_str_eq(ledger_scope_name(r1.scopes[4]), "rule:pp:77");
        ck_assert_str_eq(ledger_scope_name(r2.scopes[4]), "rule:pp:77");
        ck_assert_ptr_ne(r1.scopes[4], r2.scopes[4]);
        ck_assert_ptr_eq(r1.scopes[1], r2.scopes[1]);
        /* A change by name reaches both. */
        ck_assert_int_eq(scope_table_set_limits(f.t, "rule:pp:77", &(ScopeLimitsChange){M_MIN, {{3}}}), 2);
        scope_chain_free(f.t, c1, T0);
        scope_chain_free(f.t, c2, T0);
        fixture_done(&f);
}
END_TEST

/* ---- a seeded random run ---- */

enum {
        R_PRINCIPALS = 8,
        R_CHAINS = 12,
        R_ALLOCS = 64,
        R_SHADOW = 256,
        R_STEPS = 4000,
        R_MAX_TRACKED = 80,
        R_MAX_PER_UID = 24,
};

typedef struct RAlloc {
        LedgerAllocation *a;
        LedgerScope *scopes[LEDGER_SCOPES_MAX];
        size_t n;
        uint64_t used, hard;
} RAlloc;

typedef struct RChain {
        ScopeChain *c;
        const Principal *p;
        bool admin;
        /* The entries of its last successful resolve: held while it lives. */
        LedgerScope *held[LEDGER_SCOPES_MAX];
        size_t n_held;
} RChain;

/* What the test knows of each scope of the ledger. */
typedef struct RShadow {
        LedgerScope *s;
        char name[512];
        uint64_t committed;
        bool has_commit;
        uint64_t last_commit;
        bool seen; /* in this step's walk */
} RShadow;

typedef struct RWorld {
        Fixture f;
        Config other;
        bool using_other;
        uint64_t rng, now;
        const Principal *principals[R_PRINCIPALS];
        RChain chains[R_CHAINS];
        size_t n_chains;
        RAlloc allocs[R_ALLOCS];
        size_t n_allocs;
        RShadow shadow[R_SHADOW];
        size_t n_shadow;
        size_t step;
} RWorld;

static RuleConfig random_rules_a[] = {
        {.name = S("all"), .per = RULE_PER_USER, .limits = {{0, 0, 0}, 60000, 0}},
        {.name = S("bots"),
         .per = RULE_PER_AGENT,
         .match = {.agent = S("bot-*")},
         .limits = {{0, 0, 0}, 0, 2},
         .set = RULE_SET_HARD | RULE_SET_WARN,
         .hard_permille = 3000,
         .warn_permille = 2000},
        {.name = S("py"),
         .per = RULE_PER_PROCESS,
         .match = {.command = S("python3*")},
         .set = RULE_SET_HARD | RULE_SET_WARN,
         .hard_permille = 1200,
         .warn_permille = 1100},
        {.name = S("units"), .per = RULE_PER_UNIT, .limits = {{100000, 0, 0}, 0, 0}},
};
static RuleConfig random_rules_b[] = {
        {.name = S("all"), .per = RULE_PER_USER, .limits = {{0, 0, 0}, 60000, 0}},
        {.name = S("bots"),
         .per = RULE_PER_AGENT,
         .match = {.agent = S("bot-*")},
         .limits = {{0, 0, 0}, 0, 2}},
        {.name = S("slices"),
         .per = RULE_PER_RULE,
         .match = {.slice = S("user.slice")},
         .limits = {{0, 300000, 0}, 0, 0}},
};

static uint64_t rnd(RWorld *w, uint64_t n) {
        return splitmix64(&w->rng) % n;
}

static RShadow *shadow_of(RWorld *w, LedgerScope *s) {
        for (size_t i = 0; i < w->n_shadow; i++)
                if (w->shadow[i].s == s)
                        return &w->shadow[i];
        return NULL;
}

static void shadow_add(RWorld *w, LedgerScope *s) {
        RShadow *sh;

        ck_assert_msg(w->n_shadow < R_SHADOW, "step %zu: shadow full", w->step);
        sh = &w->shadow[w->n_shadow++];
        *sh = (RShadow){.s = s};
        snprintf(sh->name, sizeof(sh->name), "%s", ledger_scope_name(s));
}

/* When a commit at t has left every window. */
static uint64_t gone_at(uint64_t t) {
        return (t / (900 * SEC) + 97) * 900 * SEC;
}

static uint64_t live_reserved(RWorld *w, LedgerScope *s, size_t *ret_n) {
        uint64_t sum = 0;

        *ret_n = 0;
        for (size_t i = 0; i < w->n_allocs; i++)
                for (size_t k = 0; k < w->allocs[i].n; k++)
                        if (w->allocs[i].scopes[k] == s) {
                                sum += w->allocs[i].hard - w->allocs[i].used;
                                (*ret_n)++;
                        }
        return sum;
}

static void check_scope(RWorld *w, LedgerScope *s, const RShadow *sh) {
        const LedgerLimits *lim = ledger_scope_get_limits(s);
        size_t n;
        uint64_t reserved = live_reserved(w, s, &n);

        ck_assert_msg(ledger_scope_reserved(s) == reserved,
                      "step %zu: %s reserved %" PRIu64 ", expected %" PRIu64, w->step, ledger_scope_name(s),
                      ledger_scope_reserved(s), reserved);
        ck_assert_msg(ledger_scope_n_allocations(s) == n, "step %zu: %s allocations", w->step,
                      ledger_scope_name(s));
        if (sh)
                ck_assert_msg(ledger_scope_committed_total(s) == sh->committed,
                              "step %zu: %s committed %" PRIu64 ", expected %" PRIu64, w->step,
                              ledger_scope_name(s), ledger_scope_committed_total(s), sh->committed);
        for (LedgerWindow win = 0; win < _LEDGER_WINDOW_MAX; win++)
                if (lim->window_tokens[win])
                        ck_assert_msg(ledger_scope_window_used(s, win, w->now) + reserved <=
                                              lim->window_tokens[win],
                                      "step %zu: %s over its %s limit", w->step, ledger_scope_name(s),
                                      ledger_window_to_string(win));
        if (lim->in_flight_tokens)
                ck_assert_msg(reserved <= lim->in_flight_tokens, "step %zu: %s over its in-flight cap",
                              w->step, ledger_scope_name(s));
        if (lim->max_allocations)
                ck_assert_msg(n <= lim->max_allocations, "step %zu: %s over its allocations", w->step,
                              ledger_scope_name(s));
}

/* Who may have created a shared entry (owner -1): the uids whose chains in
 * this run can name it. 0 is root, an admin here: its entries count in no
 * share. */
typedef struct SharedRow {
        const char *scope;
        int64_t creators[2];
} SharedRow;

static const SharedRow shared_rows[] = {
        {"slice:user.slice", {1000, 1001}},
        {"slice:system.slice", {1000, 1002}},
        {"rule:slices", {1000, 1001}},
        {"unit:session-2.scope", {1001, 1001}},
        {"rule:units:session-2.scope", {1001, 1001}},
        {"slice:batch.slice", {0, 0}},
        {"slice:batch-nightly.slice", {0, 0}},
        {"unit:nightly-backup.service", {0, 0}},
        {"rule:units:nightly-backup.service", {0, 0}},
        {"slice:a.slice", {1003, 1003}},
        {"slice:a-b.slice", {1003, 1003}},
        {"slice:a-b-c.slice", {1003, 1003}},
        {"slice:a-b-c-d.slice", {1003, 1003}},
        {"slice:a-b-c-d-e.slice", {1003, 1003}},
        {"slice:a-b-c-d-e-f.slice", {1003, 1003}},
};

/*
 * scope_table_uid_count() against what the entries allow: entries owned by a
 * uid were created by it (in this run only its chains name them), shared
 * ones by one of the uids that can name them; root's count in no share. So
 * the counts add up to the entries not created by root, each uid's lies
 * between what it must have created and what it may have, and none passes
 * the share.
 */
static void check_uid_counts(RWorld *w) {
        static const uid_t uids[] = {1000, 1001, 1002, 1003};
        size_t lo[N_ROWS(uids)] = {0}, hi[N_ROWS(uids)] = {0}, by_root = 0, total = 0;
        ScopeTable *t = w->f.t;

        for (ScopeEntry *e = scope_table_next(t, NULL); e; e = scope_table_next(t, e)) {
                const char *name = ledger_scope_name(scope_entry_scope(e));
                int64_t owner = scope_entry_owner(e);
                const SharedRow *row = NULL;

                if (scope_entry_kind(e) == SCOPE_GLOBAL)
                        continue;
                if (owner >= 0) {
                        for (size_t u = 0; u < N_ROWS(uids); u++)
                                if (uids[u] == owner)
                                        lo[u]++, hi[u]++;
                        by_root += owner == 0;
                        continue;
                }
                for (size_t i = 0; i < N_ROWS(shared_rows); i++)
                        if (strcmp(shared_rows[i].scope, name) == 0)
                                row = &shared_rows[i];
                ck_assert_msg(row != NULL, "step %zu: shared %s not in shared_rows", w->step, name);
                if (row->creators[0] == 0) {
                        by_root++;
                        continue;
                }
                for (size_t u = 0; u < N_ROWS(uids); u++) {
                        bool may = row->creators[0] == uids[u] || row->creators[1] == uids[u];
                        bool must = row->creators[0] == uids[u] && row->creators[1] == uids[u];
                        hi[u] += may;
                        lo[u] += must;
                }
        }
        ck_assert_msg(scope_table_uid_count(t, 0) == 0, "step %zu: root counted", w->step);
        for (size_t u = 0; u < N_ROWS(uids); u++) {
                size_t n = scope_table_uid_count(t, uids[u]);

                ck_assert_msg(n >= lo[u] && n <= hi[u], "step %zu: uid %u counts %zu, expected %zu..%zu",
                              w->step, (unsigned)uids[u], n, lo[u], hi[u]);
                ck_assert_msg(n <= R_MAX_PER_UID, "step %zu: uid %u past its share", w->step,
                              (unsigned)uids[u]);
                total += n;
        }
        ck_assert_msg(total + by_root == scope_table_size(t),
                      "step %zu: %zu counted + %zu by root != %zu entries", w->step, total, by_root,
                      scope_table_size(t));
}

/* Entries that appear only do so in a resolve. */
static void check_world(RWorld *w, const RChain *resolver) {
        ScopeTable *t = w->f.t;
        size_t n_walk = 0;

        for (size_t i = 0; i < w->n_shadow; i++)
                w->shadow[i].seen = false;
        for (ScopeEntry *e = scope_table_next(t, NULL); e; e = scope_table_next(t, e)) {
                LedgerScope *s = scope_entry_scope(e);
                RShadow *sh = shadow_of(w, s);

                ck_assert_ptr_eq(scope_table_entry_of(s), e);
                n_walk++;
                if (sh && strcmp(sh->name, ledger_scope_name(s)) != 0) {
                        /* Freed and its memory reused by another entry: only if it was idle (a
                         * scope with allocations is never freed, so its memory is not reused). */
                        ck_assert_msg(!sh->has_commit || w->now >= gone_at(sh->last_commit),
                                      "step %zu: %s lost usage", w->step, sh->name);
                        *sh = w->shadow[--w->n_shadow];
                        sh = NULL;
                }
                if (sh && ledger_scope_committed_total(s) != sh->committed &&
                    ledger_scope_committed_total(s) == 0) {
                        /* Dropped and created again at the same address: only if it was idle. */
                        size_t n;
                        ck_assert_msg(!sh->has_commit || w->now >= gone_at(sh->last_commit),
                                      "step %zu: %s lost usage", w->step, sh->name);
                        ck_assert_msg(live_reserved(w, s, &n) == 0 && n == 0,
                                      "step %zu: %s lost allocations", w->step, sh->name);
                        *sh = w->shadow[--w->n_shadow];
                        sh = NULL;
                }
                if (!sh) {
                        if (e == scope_table_next(t, NULL)) {
                                shadow_add(w, s);
                        } else {
                                ck_assert_msg(resolver != NULL, "step %zu: %s appeared without a resolve",
                                              w->step, ledger_scope_name(s));
                                ck_assert_msg(ledger_scope_committed_total(s) == 0,
                                              "step %zu: new %s has usage", w->step, ledger_scope_name(s));
                                shadow_add(w, s);
                        }
                        sh = &w->shadow[w->n_shadow - 1];
                }
                sh->seen = true;
                check_scope(w, s, sh);
        }
        ck_assert_uint_eq(n_walk, scope_table_size(t) + 1);
        ck_assert_msg(scope_table_size(t) <= R_MAX_TRACKED, "step %zu: %zu entries", w->step,
                      scope_table_size(t));

        /* Entries gone: only idle ones, none held by a chain. */
        for (size_t i = 0; i < w->n_shadow;) {
                RShadow *sh = &w->shadow[i];
                size_t n;

                if (sh->seen) {
                        i++;
                        continue;
                }
                ck_assert_msg(!sh->has_commit || w->now >= gone_at(sh->last_commit),
                              "step %zu: %s dropped with usage", w->step, sh->name);
                ck_assert_msg(live_reserved(w, sh->s, &n) == 0 && n == 0,
                              "step %zu: %s dropped with allocations", w->step, sh->name);
                for (size_t c = 0; c < w->n_chains; c++)
                        for (size_t k = 0; k < w->chains[c].n_held; k++)
                                ck_assert_msg(w->chains[c].held[k] != sh->s,
                                              "step %zu: %s dropped while held", w->step, sh->name);
                *sh = w->shadow[--w->n_shadow];
        }

        check_uid_counts(w);

        /* Process scopes and the ledger as a whole. */
        for (size_t i = 0; i < w->f.n_process; i++)
                check_scope(w, w->f.process[i], NULL);
        ck_assert_uint_eq(ledger_n_allocations(w->f.ledger), w->n_allocs);
        for (size_t c = 0; c < w->n_chains; c++)
                for (size_t k = 0; k < w->chains[c].n_held; k++) {
                        LedgerScope *s = w->chains[c].held[k];
                        ck_assert_msg(s == scope_table_global(t) || scope_table_entry_of(s) == NULL ||
                                              shadow_of(w, s) != NULL,
                                      "step %zu: a held scope is not tracked", w->step);
                }
}

static void commit(RWorld *w, RAlloc *a, uint64_t delta) {
        for (size_t k = 0; k < a->n; k++) {
                RShadow *sh = shadow_of(w, a->scopes[k]);
                if (!sh)
                        continue; /* a process scope */
                sh->committed += delta;
                if (delta) {
                        sh->has_commit = true;
                        sh->last_commit = w->now;
                }
        }
}

static void step_resolve(RWorld *w) {
        static const char *const agents[] = {NULL, "bot-1", "bot-2", "x", "y"};
        RChain *rc;
        Resolved res;
        const char *agent;
        char fresh[16];
        int r;

        if (w->n_chains == 0)
                return;
        rc = &w->chains[rnd(w, w->n_chains)];
        if (rnd(w, 10) == 0) {
                snprintf(fresh, sizeof(fresh), "n%" PRIu64, rnd(w, 1000));
                agent = fresh;
        } else
                agent = agents[rnd(w, N_ROWS(agents))];
        r = resolve(&w->f, rc->c, agent, w->now, &res);
        if (r < 0) {
                ck_assert_msg(r == -EUSERS || r == -ETOOMANYREFS, "step %zu: resolve %d", w->step, r);
                ck_assert_uint_eq(res.failure.limit, r == -EUSERS ? R_MAX_TRACKED : R_MAX_PER_UID);
                ck_assert_msg(res.failure.scope[0] != 0, "step %zu: failure names no scope", w->step);
                ck_assert_msg(!rc->admin || r == -EUSERS, "step %zu: an admin refused its share", w->step);
                rc->n_held = 0;
                check_world(w, rc);
                return;
        }
        ck_assert_ptr_eq(res.scopes[0], scope_table_global(w->f.t));
        ck_assert_uint_le(res.n, LEDGER_SCOPES_MAX);
        rc->n_held = res.n;
        memcpy(rc->held, res.scopes, res.n * sizeof(res.scopes[0]));
        check_world(w, rc);

        if (w->n_allocs < R_ALLOCS && rnd(w, 4) != 0) {
                LedgerParams params = {res.effective->warn_permille, res.effective->hard_permille};
                uint64_t granted = 1 + rnd(w, 20000);
                LedgerAllocation *a;
                LedgerRefusal refusal;

                ck_assert(params.warn_permille >= 1000 && params.warn_permille <= params.hard_permille &&
                          params.hard_permille <= 5000);
                r = ledger_reserve_params(w->f.ledger, res.scopes, res.n, granted, &params, w->now, &a,
                                          &refusal);
                if (r == 0) {
                        RAlloc *ra = &w->allocs[w->n_allocs++];
                        *ra = (RAlloc){.a = a, .n = res.n, .hard = ledger_allocation_hard_limit(a)};
                        memcpy(ra->scopes, res.scopes, res.n * sizeof(res.scopes[0]));
                        ck_assert_uint_eq(ra->hard, (granted * params.hard_permille + 999) / 1000);
                } else
                        ck_assert_msg(r == -EDQUOT, "step %zu: reserve %d", w->step, r);
        }
}

static void step_use(RWorld *w, bool settle) {
        RAlloc *a;
        size_t i;
        uint64_t used;

        if (w->n_allocs == 0)
                return;
        i = rnd(w, w->n_allocs);
        a = &w->allocs[i];
        used = a->used + rnd(w, a->hard - a->used + 1);
        if (settle) {
                ck_assert_int_eq(ledger_settle(w->f.ledger, a->a, used, 0, w->now, NULL, NULL), 0);
                commit(w, a, used - a->used);
                w->allocs[i] = w->allocs[--w->n_allocs];
        } else {
                ck_assert_int_eq(ledger_report(w->f.ledger, a->a, used, 0, w->now, NULL), 0);
                commit(w, a, used - a->used);
                a->used = used;
        }
}

static void random_step(RWorld *w) {
        uint64_t op = rnd(w, 100);

        if (op < 10) {
                if (w->n_chains < R_CHAINS) {
                        const Principal *p = w->principals[rnd(w, R_PRINCIPALS)];
                        RChain *rc = &w->chains[w->n_chains++];
                        /* Root is an admin (the daemon's rule). */
                        *rc = (RChain){.p = p, .admin = p->uid == 0};
                        rc->c = chain_new(&w->f, p, rc->admin);
                }
        } else if (op < 18) {
                if (w->n_chains > 0) {
                        size_t i = rnd(w, w->n_chains);
                        scope_chain_free(w->f.t, w->chains[i].c, w->now);
                        w->chains[i] = w->chains[--w->n_chains];
                }
        } else if (op < 50) {
                step_resolve(w);
                return;
        } else if (op < 65)
                step_use(w, false);
        else if (op < 85)
                step_use(w, true);
        else if (op < 93)
                w->now += rnd(w, 20) == 0 ? rnd(w, 2 * DAY) : rnd(w, 5 * SEC);
        else if (op < 97)
                scope_table_sweep(w->f.t, w->now);
        else {
                w->using_other = !w->using_other;
                ck_assert_int_eq(scope_table_set_config(w->f.t, w->using_other ? &w->other : &w->f.c), 0);
        }
        check_world(w, NULL);
}

START_TEST(test_random) {
        static RWorld w; /* large */
        static const Principal *const principals[R_PRINCIPALS] = {
                &alice, &alice_manager, &alice_shell, &backup, &bob, &root_nowhere, &stray, &deep,
        };

        memset(&w, 0, sizeof(w));
        w.rng = UINT64_C(0x5eed0009);
        w.now = T0;
        memcpy(w.principals, principals, sizeof(principals));
        fixture_init(&w.f, random_rules_a, N_ROWS(random_rules_a));
        w.f.c.max_tracked_scopes = R_MAX_TRACKED;
        w.f.c.max_tracked_scopes_per_uid = R_MAX_PER_UID;
        w.f.c.user = (LedgerLimits){{200000, 0, 0}, 100000, 6};
        w.f.c.agent = (LedgerLimits){{0, 0, 0}, 50000, 4};
        config_fill(&w.other, random_rules_b, N_ROWS(random_rules_b));
        w.other.max_tracked_scopes = R_MAX_TRACKED;
        w.other.max_tracked_scopes_per_uid = R_MAX_PER_UID;
        w.other.user = w.f.c.user;
        w.other.agent = w.f.c.agent;
        /* The table took the first limits at creation. */
        ck_assert_int_eq(scope_table_set_config(w.f.t, &w.f.c), 0);
        check_world(&w, NULL);

        for (w.step = 1; w.step <= R_STEPS; w.step++)
                random_step(&w);

        while (w.n_allocs > 0) {
                RAlloc *a = &w.allocs[--w.n_allocs];
                ck_assert_int_eq(ledger_settle(w.f.ledger, a->a, a->used, 0, w.now, NULL, NULL), 0);
        }
        while (w.n_chains > 0)
                scope_chain_free(w.f.t, w.chains[--w.n_chains].c, w.now);
        scope_table_sweep(w.f.t, w.now + 2 * DAY);
        ck_assert_uint_eq(scope_table_size(w.f.t), 0);
        for (size_t p = 0; p < R_PRINCIPALS; p++)
                ck_assert_uint_eq(scope_table_uid_count(w.f.t, principals[p]->uid), 0);
        fixture_done(&w.f);
        config_release(&w.other);
}
END_TEST

/* Unit names may contain ':': root's system unit "1000:app.service" is
 * named like uid 1000's user unit "app.service" (unit:1000:app.service), and
 * a per-unit rule keys both "1000:app.service". They must stay two budgets,
 * each with its own owner. */
START_TEST(test_system_unit_named_like_user_unit) {
        static const CgroupUnits units_colon = {.unit = "1000:app.service"};
        static const Principal colon = {
                .uid = 0, .gid = 0, .pid = 5150, .comm = "svc", .exe = "svc", .units = &units_colon};
        RuleConfig rules[] = {{.name = S("units"), .per = RULE_PER_UNIT}};
        Fixture f;
        ScopeChain *a, *b;
        Resolved ra, rb;
        LedgerScope *ua = NULL, *ub = NULL, *rua = NULL, *rub = NULL;

        fixture_init(&f, rules, N_ROWS(rules));
        a = chain_new(&f, &alice, false);
        b = chain_new(&f, &colon, true);
        resolve_ok(&f, a, NULL, T0, &ra);
        resolve_ok(&f, b, NULL, T0, &rb);
        for (size_t i = 0; i < ra.n; i++) {
                if (strcmp(ledger_scope_name(ra.scopes[i]), "unit:1000:app.service") == 0)
                        ua = ra.scopes[i];
                if (strcmp(ledger_scope_name(ra.scopes[i]), "rule:units:1000:app.service") == 0)
                        rua = ra.scopes[i];
        }
        for (size_t i = 0; i < rb.n; i++) {
                if (strcmp(ledger_scope_name(rb.scopes[i]), "unit:1000:app.service") == 0)
                        ub = rb.scopes[i];
                if (strcmp(ledger_scope_name(rb.scopes[i]), "rule:units:1000:app.service") == 0)
                        rub = rb.scopes[i];
        }
        ck_assert_msg(ua && ub && rua && rub, "chains: %s / %s", ra.names, rb.names);
        ck_assert_ptr_ne(ua, ub);
        ck_assert_ptr_ne(rua, rub);
        ck_assert_int_eq(scope_entry_owner(scope_table_entry_of(ua)), 1000);
        ck_assert_int_eq(scope_entry_owner(scope_table_entry_of(ub)), -1);
        ck_assert_int_eq(scope_entry_owner(scope_table_entry_of(rua)), 1000);
        ck_assert_int_eq(scope_entry_owner(scope_table_entry_of(rub)), -1);
        scope_chain_free(f.t, a, T0);
        scope_chain_free(f.t, b, T0);
        fixture_done(&f);
}
END_TEST

static Suite *scopes_suite(void) {
        Suite *s = suite_create("scopes");
        TCase *tc = tcase_create("core");

        tcase_set_timeout(tc, 60);
        tcase_add_test(tc, test_kind_strings);
        tcase_add_test(tc, test_chain_order);
        tcase_add_test(tc, test_chain_agent_switching);
        tcase_add_test(tc, test_failure_names_long_scope);
        tcase_add_test(tc, test_system_unit_named_like_user_unit);
        tcase_add_test(tc, test_agent_scoped_within_uid);
        tcase_add_test(tc, test_agent_cache);
        tcase_add_test(tc, test_reload_rebuilds);
        tcase_add_test(tc, test_same_budget_charged_once);
        tcase_add_test(tc, test_too_many_scopes);
        tcase_add_test(tc, test_total_bound);
        tcase_add_test(tc, test_per_uid_share);
        tcase_add_test(tc, test_lingering);
        tcase_add_test(tc, test_default_limits);
        tcase_add_test(tc, test_set_limits);
        tcase_add_test(tc, test_set_limits_rule_name_checked);
        tcase_add_test(tc, test_scope_limits_apply);
        tcase_add_test(tc, test_set_limits_layers);
        tcase_add_test(tc, test_hash_collision);
        tcase_add_test(tc, test_per_process_rule_start_time);
        tcase_add_test(tc, test_random);
        suite_add_tcase(s, tc);
        return s;
}

int main(void) {
        return tb_check_main(scopes_suite());
}
