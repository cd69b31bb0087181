/* SPDX-License-Identifier: MIT */
/*
 * Named scopes and scope chains (see scopes.h). Entries are found by a keyed
 * SipHash of their name (plus, for per-process rule budgets, the process's
 * start time) in the uint64 hashmap, with entries of an equal hash chained:
 * a client picking agent names cannot make lookups slow without the key.
 */
#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hashmap.h"
#include "macro.h"
#include "scopes.h"
#include "siphash.h"

/* A full table looks for idle lingering entries at most this often, so a
 * flood of new names cannot make every request walk the table. */
#define SWEEP_WHEN_FULL_INTERVAL_USEC UINT64_C(1000000)

/* Scope names: "rule:" + 64-byte rule name + ":" + uid + ":" + 255-byte agent fits. */
#define SCOPE_NAME_MAX 512

struct ScopeEntry {
        LedgerScope *scope;
        ScopeKind kind;
        int64_t owner;          /* uid, or -1 when shared */
        uint64_t discriminator; /* the start time of a per-process rule budget's process, else 0 */
        uint64_t hash;
        ScopeEntry *hash_next; /* same hash */
        LIST_FIELDS(ScopeEntry, all);
        LIST_FIELDS(ScopeEntry, lingering);
        bool is_lingering;
        bool counted; /* in creator's per-uid count */
        uid_t creator;
        unsigned refs; /* chains holding it */
};

typedef struct Override {
        char *target;
        ScopeLimitsChange change;
} Override;

struct ScopeTable {
        Ledger *ledger;
        const Config *config;
        RuleSet *rules;
        uint64_t generation;
        SipHashKey key;
        Hashmap *by_hash;    /* hash -> first ScopeEntry with it */
        Hashmap *uid_counts; /* uid + 1 -> count, as a pointer-sized integer */
        ScopeEntry global;
        ScopeEntry *entries; /* all but global, newest first */
        ScopeEntry *lingering_head, *lingering_tail;
        size_t n_entries;
        uint64_t last_full_sweep_usec;
        bool swept_once;
        Override *overrides;
        size_t n_overrides;
};

struct ScopeChain {
        const Principal *principal;
        LedgerScope *process;
        bool admin;
        uint64_t generation; /* of the table when the base was built; 0: not built */
        /* In chain order: global, user, slices, unit, user slices, user unit,
         * process (the first n_core), then the agent scope when a name is
         * declared (agent_inserted), the rules that match whatever the agent
         * (up to n_base, plus the agent scope), and the rules that match the
         * agent name (up to n_scopes). A reference is held on every entry but
         * global and the process (the ScopeEntry is each ledger scope's
         * userdata). */
        LedgerScope **scopes; /* grows by doubling up to LEDGER_SCOPES_MAX */
        uint8_t n_core, n_base, n_scopes, process_index, allocated;
        bool agent_cached, agent_inserted;
        char *agent; /* the cached agent part's name */
        RuleList fixed, candidates, agent_rules;
        RuleEffective effective;
};

static const char *const kind_names[_SCOPE_KIND_MAX] = {
        [SCOPE_GLOBAL] = "global",   [SCOPE_USER] = "user",   [SCOPE_SLICE] = "slice", [SCOPE_UNIT] = "unit",
        [SCOPE_PROCESS] = "process", [SCOPE_AGENT] = "agent", [SCOPE_RULE] = "rule",
};

const char *scope_kind_to_string(ScopeKind k) {
        return (unsigned)k < _SCOPE_KIND_MAX ? kind_names[k] : NULL;
}

int scope_kind_from_string(const char *s) {
        for (ScopeKind k = 0; k < _SCOPE_KIND_MAX; k++)
                if (strcmp(s, kind_names[k]) == 0)
                        return (int)k;
        return -EINVAL;
}

void scope_limits_apply(LedgerLimits *limits, const ScopeLimitsChange *change) {
        for (LedgerWindow w = 0; w < _LEDGER_WINDOW_MAX; w++)
                if (change->mask & (1u << w))
                        limits->window_tokens[w] = change->values.window_tokens[w];
        if (change->mask & SCOPE_LIMIT_IN_FLIGHT)
                limits->in_flight_tokens = change->values.in_flight_tokens;
        if (change->mask & SCOPE_LIMIT_ALLOCATIONS)
                limits->max_allocations = change->values.max_allocations;
}

/* ---- limits of an entry ---- */

static const Override *override_find(const ScopeTable *t, const char *target) {
        for (size_t i = 0; i < t->n_overrides; i++)
                if (strcmp(t->overrides[i].target, target) == 0)
                        return &t->overrides[i];
        return NULL;
}

static void apply_override(const ScopeTable *t, const char *target, LedgerLimits *limits) {
        const Override *o = override_find(t, target);
        if (o)
                scope_limits_apply(limits, &o->change);
}

/* The rule name of "rule:NAME" or "rule:NAME:KEY" into buf; false when it is none. */
static bool rule_name_of(const char *scope, char buf[static 80]) {
        const char *name = scope + strlen("rule:"), *end;
        size_t n;

        if (strncmp(scope, "rule:", 5) != 0)
                return false;
        end = strchr(name, ':');
        n = end ? (size_t)(end - name) : strlen(name);
        if (n == 0 || n >= 80)
                return false;
        memcpy(buf, name, n);
        buf[n] = 0;
        return true;
}

/* Defaults, rule, kind-wide and per-name changes, in that order. *ret_known
 * is false for a rule entry whose rule is gone (its limits then stay). */
static bool entry_limits(const ScopeTable *t, ScopeKind kind, const char *name, LedgerLimits *ret) {
        static const LedgerLimits none = {};
        const Config *c = t->config;
        char rule[80];
        ssize_t i;

        switch (kind) {
        case SCOPE_GLOBAL:
                *ret = c->global;
                break;
        case SCOPE_USER:
                *ret = c->user;
                break;
        case SCOPE_SLICE:
                *ret = none;
                break;
        case SCOPE_UNIT:
                *ret = c->unit;
                break;
        case SCOPE_AGENT:
                *ret = c->agent;
                break;
        case SCOPE_RULE:
                if (!rule_name_of(name, rule) || (i = rule_set_find(t->rules, rule)) < 0)
                        return false;
                *ret = rule_set_rule(t->rules, (size_t)i)->limits;
                /* "rule:NAME" changes every budget of the rule. */
                char target[96];
                snprintf(target, sizeof(target), "rule:%s", rule);
                if (strcmp(target, name) != 0)
                        apply_override(t, target, ret);
                break;
        default:
                *ret = none;
                break;
        }
        if (kind != SCOPE_RULE && kind != SCOPE_GLOBAL)
                apply_override(t, kind_names[kind], ret);
        apply_override(t, name, ret);
        return true;
}

/* ---- the table ---- */

ScopeTable *scope_table_new(Ledger *ledger, const Config *config) {
        ScopeTable *t = calloc(1, sizeof(*t));

        if (!t)
                return NULL;
        t->ledger = ledger;
        t->config = config;
        t->generation = 1;
        t->by_hash = hashmap_new();
        t->uid_counts = hashmap_new();
        t->rules = rule_set_new(config);
        t->global = (ScopeEntry){.kind = SCOPE_GLOBAL, .owner = -1, .refs = 1};
        t->global.scope = ledger_scope_new(ledger, "global", &config->global);
        if (!t->by_hash || !t->uid_counts || !t->rules || !t->global.scope)
                return scope_table_free(t);
        ledger_scope_set_userdata(t->global.scope, &t->global);
        return t;
}

void scope_table_set_hash_key(ScopeTable *t, const uint8_t key[16]) {
        assert(t->n_entries == 0);
        t->key = siphash_key(key);
}

static void entry_free(ScopeTable *t, ScopeEntry *e);

ScopeTable *scope_table_free(ScopeTable *t) {
        if (!t)
                return NULL;
        while (t->entries)
                entry_free(t, t->entries);
        if (t->global.scope)
                (void)ledger_scope_free(t->ledger, t->global.scope);
        hashmap_free(t->by_hash);
        hashmap_free(t->uid_counts);
        rule_set_free(t->rules);
        for (size_t i = 0; i < t->n_overrides; i++)
                free(t->overrides[i].target);
        free(t->overrides);
        free(t);
        return NULL;
}

static void refresh_limits(ScopeTable *t, ScopeEntry *e) {
        LedgerLimits limits;

        if (entry_limits(t, e->kind, ledger_scope_name(e->scope), &limits))
                ledger_scope_set_limits(e->scope, &limits);
}

int scope_table_set_config(ScopeTable *t, const Config *config) {
        RuleSet *rules = rule_set_new(config);

        if (!rules)
                return -ENOMEM;
        rule_set_free(t->rules);
        t->rules = rules;
        t->config = config;
        for (size_t i = 0; i < t->n_overrides; i++)
                free(t->overrides[i].target);
        t->overrides = mfree(t->overrides);
        t->n_overrides = 0;
        t->generation++;
        refresh_limits(t, &t->global);
        for (ScopeEntry *e = t->entries; e; e = e->all_next)
                refresh_limits(t, e);
        return 0;
}

LedgerScope *scope_table_global(const ScopeTable *t) {
        return t->global.scope;
}

const RuleSet *scope_table_rules(const ScopeTable *t) {
        return t->rules;
}

size_t scope_table_size(const ScopeTable *t) {
        return t->n_entries;
}

static uintptr_t uid_count(const ScopeTable *t, uid_t uid) {
        return (uintptr_t)hashmap_get(t->uid_counts, (uint64_t)uid + 1);
}

size_t scope_table_uid_count(const ScopeTable *t, uid_t uid) {
        return uid_count(t, uid);
}

static int uid_count_add(ScopeTable *t, uid_t uid, int delta) {
        uint64_t key = (uint64_t)uid + 1;
        uintptr_t n = uid_count(t, uid);

        hashmap_remove(t->uid_counts, key);
        n = (uintptr_t)((intptr_t)n + delta);
        return n > 0 ? hashmap_put(t->uid_counts, key, (void *)n) : 0;
}

ScopeEntry *scope_table_next(const ScopeTable *t, const ScopeEntry *e) {
        if (!e)
                return (ScopeEntry *)&t->global;
        if (e == &t->global)
                return t->entries;
        return e->all_next;
}

LedgerScope *scope_entry_scope(const ScopeEntry *e) {
        return e->scope;
}

ScopeKind scope_entry_kind(const ScopeEntry *e) {
        return e->kind;
}

int64_t scope_entry_owner(const ScopeEntry *e) {
        return e->owner;
}

ScopeEntry *scope_table_entry_of(const LedgerScope *s) {
        return ledger_scope_get_userdata(s);
}

static uint64_t name_hash(const ScopeTable *t, const char *name, uint64_t discriminator) {
        return siphash24(&t->key, name, strlen(name)) ^ (discriminator * UINT64_C(0x9e3779b97f4a7c15));
}

static ScopeEntry *entry_find(const ScopeTable *t, const char *name, uint64_t discriminator, uint64_t hash) {
        for (ScopeEntry *e = hashmap_get(t->by_hash, hash); e; e = e->hash_next)
                if (e->discriminator == discriminator && strcmp(ledger_scope_name(e->scope), name) == 0)
                        return e;
        return NULL;
}

static void lingering_add(ScopeTable *t, ScopeEntry *e) {
        assert(!e->is_lingering);
        /* Appended: the list runs from the longest unreferenced. */
        e->lingering_prev = t->lingering_tail;
        e->lingering_next = NULL;
        if (t->lingering_tail)
                t->lingering_tail->lingering_next = e;
        else
                t->lingering_head = e;
        t->lingering_tail = e;
        e->is_lingering = true;
}

static void lingering_remove(ScopeTable *t, ScopeEntry *e) {
        if (!e->is_lingering)
                return;
        if (e->lingering_prev)
                e->lingering_prev->lingering_next = e->lingering_next;
        else
                t->lingering_head = e->lingering_next;
        if (e->lingering_next)
                e->lingering_next->lingering_prev = e->lingering_prev;
        else
                t->lingering_tail = e->lingering_prev;
        e->lingering_prev = e->lingering_next = NULL;
        e->is_lingering = false;
}

static void entry_free(ScopeTable *t, ScopeEntry *e) {
        ScopeEntry *first = hashmap_get(t->by_hash, e->hash);

        assert(e != &t->global);
        if (first == e) {
                hashmap_remove(t->by_hash, e->hash);
                if (e->hash_next)
                        (void)hashmap_put(t->by_hash, e->hash, e->hash_next); /* a removed key had room */
        } else
                for (ScopeEntry *p = first; p; p = p->hash_next)
                        if (p->hash_next == e) {
                                p->hash_next = e->hash_next;
                                break;
                        }
        lingering_remove(t, e);
        LIST_REMOVE(all, t->entries, e);
        t->n_entries--;
        if (e->counted)
                (void)uid_count_add(t, e->creator, -1);
        (void)ledger_scope_free(t->ledger, e->scope);
        free(e);
}

void scope_table_sweep(ScopeTable *t, uint64_t now) {
        for (ScopeEntry *e = t->lingering_head, *next; e; e = next) {
                next = e->lingering_next;
                if (ledger_scope_is_idle(e->scope, now))
                        entry_free(t, e);
        }
}

/* When full: drop idle lingering entries, at most once per interval. */
static void sweep_when_full(ScopeTable *t, uint64_t now) {
        if (t->swept_once && now - t->last_full_sweep_usec < SWEEP_WHEN_FULL_INTERVAL_USEC)
                return;
        t->swept_once = true;
        t->last_full_sweep_usec = now;
        scope_table_sweep(t, now);
}

static void entry_ref(ScopeTable *t, ScopeEntry *e) {
        if (e == &t->global)
                return;
        if (e->refs++ == 0)
                lingering_remove(t, e);
}

static void entry_unref(ScopeTable *t, ScopeEntry *e) {
        if (e == &t->global)
                return;
        assert(e->refs > 0);
        if (--e->refs == 0)
                lingering_add(t, e);
}

/* The entry for a name, created on first use, with a reference taken. */
static int entry_acquire(ScopeTable *t, ScopeKind kind, const char *name, uint64_t discriminator,
                         int64_t owner, uid_t creator, bool admin, uint64_t now, ScopeEntry **ret,
                         ScopeFailure *ret_failure) {
        uint64_t hash = name_hash(t, name, discriminator);
        ScopeEntry *e = entry_find(t, name, discriminator, hash), *first;
        LedgerLimits limits;
        int r;

        if (e) {
                entry_ref(t, e);
                *ret = e;
                return 0;
        }
        if (t->n_entries >= t->config->max_tracked_scopes ||
            (!admin && uid_count(t, creator) >= t->config->max_tracked_scopes_per_uid))
                sweep_when_full(t, now);
        if (t->n_entries >= t->config->max_tracked_scopes) {
                ret_failure->limit = t->config->max_tracked_scopes;
                snprintf(ret_failure->scope, sizeof(ret_failure->scope), "%s", name);
                return -EUSERS;
        }
        if (!admin && uid_count(t, creator) >= t->config->max_tracked_scopes_per_uid) {
                ret_failure->limit = t->config->max_tracked_scopes_per_uid;
                snprintf(ret_failure->scope, sizeof(ret_failure->scope), "%s", name);
                return -ETOOMANYREFS;
        }

        if (!entry_limits(t, kind, name, &limits))
                limits = (LedgerLimits){};
        e = calloc(1, sizeof(*e));
        if (!e)
                return -ENOMEM;
        *e = (ScopeEntry){
                .kind = kind,
                .owner = owner,
                .discriminator = discriminator,
                .hash = hash,
                .creator = creator,
                .counted = !admin,
                .refs = 1,
        };
        e->scope = ledger_scope_new(t->ledger, name, &limits);
        if (!e->scope) {
                free(e);
                return -ENOMEM;
        }
        first = hashmap_get(t->by_hash, hash);
        if (first) {
                e->hash_next = first->hash_next;
                first->hash_next = e;
                r = 0;
        } else
                r = hashmap_put(t->by_hash, hash, e);
        if (r >= 0 && e->counted)
                r = uid_count_add(t, creator, +1);
        if (r < 0) {
                if (!first)
                        hashmap_remove(t->by_hash, hash);
                else
                        first->hash_next = e->hash_next;
                (void)ledger_scope_free(t->ledger, e->scope);
                free(e);
                return r;
        }
        ledger_scope_set_userdata(e->scope, e);
        LIST_PREPEND(all, t->entries, e);
        t->n_entries++;
        *ret = e;
        return 0;
}

uint64_t scope_entry_discriminator(const ScopeEntry *e) {
        return e->discriminator;
}

int scope_table_restore(ScopeTable *t, ScopeKind kind, const char *name, uint64_t discriminator,
                        int64_t owner, uint64_t now, LedgerScope **ret) {
        ScopeFailure failure;
        ScopeEntry *e;
        int r;

        if (kind == SCOPE_GLOBAL || kind == SCOPE_PROCESS || (unsigned)kind >= _SCOPE_KIND_MAX)
                return -EINVAL;
        r = entry_acquire(t, kind, name, discriminator, owner, 0, true, now, &e, &failure);
        if (r < 0)
                return r == -ETOOMANYREFS ? -EUSERS : r;
        if (e->kind != kind)
                return entry_unref(t, e), -EINVAL;
        entry_unref(t, e);
        *ret = e->scope;
        return 0;
}

/* ---- runtime limits ---- */

/* Which entries a target covers. */
static bool target_covers(const char *target, const ScopeEntry *e) {
        const char *name = ledger_scope_name(e->scope);
        int kind = scope_kind_from_string(target);
        size_t n;

        if (kind >= 0)
                return kind == (int)e->kind && kind != SCOPE_RULE;
        if (strcmp(target, name) == 0)
                return true;
        /* "rule:NAME" covers "rule:NAME:KEY". */
        n = strlen(target);
        return e->kind == SCOPE_RULE && strncmp(name, target, n) == 0 && name[n] == ':' &&
               strchr(target + strlen("rule:"), ':') == NULL;
}

static bool target_valid(const char *target) {
        static const char *const prefixes[] = {"user:", "slice:", "unit:", "agent:", "rule:"};
        int kind = scope_kind_from_string(target);

        if (kind >= 0)
                return kind != SCOPE_RULE && kind != SCOPE_PROCESS;
        if (strcmp(target, "global") == 0)
                return true;
        for (size_t i = 0; i < ELEMENTSOF(prefixes); i++) {
                const char *rest = target + strlen(prefixes[i]);

                if (strncmp(target, prefixes[i], strlen(prefixes[i])) != 0 || !*rest)
                        continue;
                return strlen(target) < SCOPE_NAME_MAX;
        }
        return false;
}

int scope_table_set_limits(ScopeTable *t, const char *target, const ScopeLimitsChange *change) {
        Override *o;
        char rule[80];
        int n = 0;

        if (!target_valid(target))
                return -EINVAL;
        /* "rule::1000" or a name longer than any rule's names no rule. */
        if (strncmp(target, "rule:", 5) == 0 &&
            (!rule_name_of(target, rule) || rule_set_find(t->rules, rule) < 0))
                return -ENOENT;
        o = (Override *)override_find(t, target);
        if (o) {
                /* Later changes of the same target add to earlier ones. */
                unsigned mask = o->change.mask | change->mask;
                scope_limits_apply(&o->change.values, change);
                o->change.mask = mask;
        } else {
                Override *bigger = realloc(t->overrides, (t->n_overrides + 1) * sizeof(*bigger));
                char *copy = strdup(target);

                if (bigger)
                        t->overrides = bigger;
                if (!bigger || !copy) {
                        free(copy);
                        return -ENOMEM;
                }
                t->overrides[t->n_overrides++] = (Override){copy, *change};
        }
        for (ScopeEntry *e = scope_table_next(t, NULL); e; e = scope_table_next(t, e))
                if (target_covers(target, e)) {
                        refresh_limits(t, e);
                        n++;
                }
        return n;
}

/* ---- chains ---- */

ScopeChain *scope_chain_new(ScopeTable *t, const Principal *principal, LedgerScope *process, bool admin) {
        ScopeChain *c = calloc(1, sizeof(*c));

        if (!c)
                return NULL;
        c->principal = principal;
        c->process = process;
        c->admin = admin;
        return c;
}

static void chain_unref_range(ScopeTable *t, ScopeChain *c, size_t from, size_t to) {
        for (size_t i = from; i < to; i++)
                if (i != 0 && i != c->process_index)
                        entry_unref(t, scope_table_entry_of(c->scopes[i]));
}

static void chain_drop_agent(ScopeTable *t, ScopeChain *c) {
        chain_unref_range(t, c, c->n_base + c->agent_inserted, c->n_scopes);
        if (c->agent_inserted) {
                entry_unref(t, scope_table_entry_of(c->scopes[c->n_core]));
                memmove(c->scopes + c->n_core, c->scopes + c->n_core + 1,
                        (c->n_base - c->n_core) * sizeof(c->scopes[0]));
                c->agent_inserted = false;
        }
        c->n_scopes = c->n_base;
        c->agent = mfree(c->agent);
        c->agent_cached = false;
        rule_list_done(&c->agent_rules);
}

static void chain_drop_base(ScopeTable *t, ScopeChain *c) {
        chain_drop_agent(t, c);
        chain_unref_range(t, c, 0, c->n_base);
        c->n_core = c->n_base = c->n_scopes = 0;
        c->process_index = 0;
        c->generation = 0;
        rule_list_done(&c->fixed);
        rule_list_done(&c->candidates);
}

void scope_chain_free(ScopeTable *t, ScopeChain *c, uint64_t now) {
        if (!c)
                return;
        chain_drop_base(t, c);
        free(c->scopes);
        free(c);
}

static int chain_too_long(const char *name, ScopeFailure *ret_failure) {
        ret_failure->limit = LEDGER_SCOPES_MAX;
        snprintf(ret_failure->scope, sizeof(ret_failure->scope), "%s", name);
        return -E2BIG;
}

/* Room for one more scope: most chains hold a handful, so they start at 8
 * (an idle connection's chain is most of what it costs). */
static int chain_grow(ScopeChain *c, const char *name, ScopeFailure *ret_failure) {
        LedgerScope **bigger;
        size_t n;

        if (c->n_scopes >= LEDGER_SCOPES_MAX)
                return chain_too_long(name, ret_failure);
        if (c->n_scopes < c->allocated)
                return 0;
        n = c->allocated ? 2u * c->allocated : 8u;
        if (n > LEDGER_SCOPES_MAX)
                n = LEDGER_SCOPES_MAX;
        bigger = realloc(c->scopes, n * sizeof(*bigger));
        if (!bigger)
                return -ENOMEM;
        c->scopes = bigger;
        c->allocated = (uint8_t)n;
        return 0;
}

/* Appends an entry: to the base while it is being built (no agent part
 * yet), else to the agent part. */
static int chain_add(ScopeTable *t, ScopeChain *c, ScopeKind kind, const char *name, uint64_t discriminator,
                     int64_t owner, uint64_t now, ScopeFailure *ret_failure) {
        ScopeEntry *e;
        int r;

        r = chain_grow(c, name, ret_failure);
        if (r < 0)
                return r;
        r = entry_acquire(t, kind, name, discriminator, owner, c->principal->uid, c->admin, now, &e,
                          ret_failure);
        if (r < 0)
                return r;
        /* Two rules keyed alike (or a rule named like another scope) charge
         * one budget once. */
        for (size_t i = 0; i < c->n_scopes; i++)
                if (c->scopes[i] == e->scope) {
                        entry_unref(t, e);
                        return 0;
                }
        c->scopes[c->n_scopes++] = e->scope;
        return 0;
}

/* Unit names may contain ':', so a system unit "1000:app.service" is named
 * like uid 1000's user unit "app.service": the entries are told apart (and
 * never share a budget) by a discriminator that only the user manager's
 * scopes carry. */
#define USER_MANAGER_FLAG (UINT64_C(1) << 63)

static uint64_t user_manager_discriminator(const CgroupUnits *u) {
        return u->user_unit && u->has_owner ? USER_MANAGER_FLAG | u->owner_uid : 0;
}

static int chain_add_rule(ScopeTable *t, ScopeChain *c, size_t rule, const char *agent, uint64_t now,
                          ScopeFailure *ret_failure) {
        const RuleConfig *rc = rule_set_rule(t->rules, rule);
        char name[SCOPE_NAME_MAX];
        int64_t owner;
        int r;

        r = rule_scope_name(t->rules, rule, c->principal, agent, name, sizeof(name), &owner);
        if (r == -ENOENT)
                return 0; /* cannot be keyed for this caller: does not apply */
        if (r < 0)
                return r == -ENOBUFS ? -EINVAL : r;
        return chain_add(t, c, SCOPE_RULE, name,
                         rc->per == RULE_PER_PROCESS ? c->principal->start_time + 1
                         : rc->per == RULE_PER_UNIT  ? user_manager_discriminator(c->principal->units)
                                                     : 0,
                         owner, now, ret_failure);
}

/* user-UID.slice belongs to that user; other system slices are shared. */
static int64_t slice_owner(const char *slice) {
        unsigned long uid;
        char *end;

        if (strncmp(slice, "user-", 5) != 0 || slice[5] < '0' || slice[5] > '9')
                return -1;
        uid = strtoul(slice + 5, &end, 10);
        return strcmp(end, ".slice") == 0 && uid < UINT32_MAX ? (int64_t)uid : -1;
}

static int chain_build_base(ScopeTable *t, ScopeChain *c, uint64_t now, ScopeFailure *ret_failure) {
        const Principal *p = c->principal;
        const CgroupUnits *u = p->units;
        int64_t uid = p->uid, unit_owner = u->has_owner ? (int64_t)u->owner_uid : -1;
        char name[SCOPE_NAME_MAX];
        int r;

        r = chain_grow(c, "global", ret_failure);
        if (r < 0)
                return r;
        c->scopes[0] = t->global.scope;
        c->n_scopes = 1;
        snprintf(name, sizeof(name), "user:%" PRIu32, (uint32_t)p->uid);
        r = chain_add(t, c, SCOPE_USER, name, 0, uid, now, ret_failure);
        for (size_t i = 0; r >= 0 && i < u->n_slices; i++) {
                snprintf(name, sizeof(name), "slice:%s", u->slices[i]);
                r = chain_add(t, c, SCOPE_SLICE, name, 0, slice_owner(u->slices[i]), now, ret_failure);
        }
        if (r >= 0 && u->unit) {
                snprintf(name, sizeof(name), "unit:%s", u->unit);
                r = chain_add(t, c, SCOPE_UNIT, name, 0, unit_owner, now, ret_failure);
        }
        for (size_t i = 0; r >= 0 && u->has_owner && i < u->n_user_slices; i++) {
                snprintf(name, sizeof(name), "slice:%" PRIu32 ":%s", (uint32_t)u->owner_uid,
                         u->user_slices[i]);
                r = chain_add(t, c, SCOPE_SLICE, name, USER_MANAGER_FLAG | u->owner_uid, unit_owner, now,
                              ret_failure);
        }
        if (r >= 0 && u->has_owner && u->user_unit) {
                snprintf(name, sizeof(name), "unit:%" PRIu32 ":%s", (uint32_t)u->owner_uid, u->user_unit);
                r = chain_add(t, c, SCOPE_UNIT, name, USER_MANAGER_FLAG | u->owner_uid, unit_owner, now,
                              ret_failure);
        }
        if (r >= 0) {
                r = chain_grow(c, ledger_scope_name(c->process), ret_failure);
                if (r >= 0) {
                        c->process_index = c->n_scopes;
                        c->scopes[c->n_scopes++] = c->process;
                        c->n_core = c->n_scopes;
                }
        }
        if (r >= 0)
                r = rule_set_match_principal(t->rules, p, &c->fixed, &c->candidates);
        for (size_t i = 0; r >= 0 && i < c->fixed.n; i++)
                r = chain_add_rule(t, c, c->fixed.items[i], NULL, now, ret_failure);
        c->n_base = c->n_scopes; /* also on failure: chain_drop_base() unrefs what was taken */
        if (r < 0) {
                chain_drop_base(t, c);
                return r;
        }
        c->generation = t->generation;
        return 0;
}

static bool streq_ptr(const char *a, const char *b) {
        return (!a && !b) || (a && b && strcmp(a, b) == 0);
}

/* The agent scope goes right after the process, before the rules. */
static int chain_insert_agent(ScopeTable *t, ScopeChain *c, const char *name, uint64_t now,
                              ScopeFailure *ret_failure) {
        ScopeEntry *e;
        int r;

        r = chain_grow(c, name, ret_failure);
        if (r < 0)
                return r;
        r = entry_acquire(t, SCOPE_AGENT, name, 0, c->principal->uid, c->principal->uid, c->admin, now, &e,
                          ret_failure);
        if (r < 0)
                return r;
        memmove(c->scopes + c->n_core + 1, c->scopes + c->n_core,
                (c->n_scopes - c->n_core) * sizeof(c->scopes[0]));
        c->scopes[c->n_core] = e->scope;
        c->n_scopes++;
        c->agent_inserted = true;
        return 0;
}

static int chain_build_agent(ScopeTable *t, ScopeChain *c, const char *agent, uint64_t now,
                             ScopeFailure *ret_failure) {
        char name[SCOPE_NAME_MAX];
        int r = 0;

        if (agent) {
                c->agent = strdup(agent);
                if (!c->agent)
                        return -ENOMEM;
                snprintf(name, sizeof(name), "agent:%" PRIu32 ":%s", (uint32_t)c->principal->uid, agent);
                r = chain_insert_agent(t, c, name, now, ret_failure);
                for (size_t i = 0; r >= 0 && i < c->candidates.n; i++) {
                        uint32_t rule = c->candidates.items[i];

                        if (!rule_matches_agent(t->rules, rule, agent))
                                continue;
                        if (!c->agent_rules.items) {
                                c->agent_rules.items = malloc(c->candidates.n * sizeof(uint32_t));
                                if (!c->agent_rules.items) {
                                        r = -ENOMEM;
                                        break;
                                }
                        }
                        c->agent_rules.items[c->agent_rules.n++] = rule;
                        r = chain_add_rule(t, c, rule, agent, now, ret_failure);
                }
        }
        if (r < 0) {
                chain_drop_agent(t, c);
                return r;
        }
        rule_set_effective(t->rules, &c->fixed, &c->agent_rules, &c->effective);
        c->agent_cached = true;
        return 0;
}

int scope_chain_resolve(ScopeTable *t, ScopeChain *c, const char *agent, uint64_t now,
                        LedgerScope *const **ret_scopes, size_t *ret_n, const RuleEffective **ret_effective,
                        ScopeFailure *ret_failure) {
        int r;

        if (c->generation != t->generation) {
                chain_drop_base(t, c);
                r = chain_build_base(t, c, now, ret_failure);
                if (r < 0)
                        return r;
        }
        if (!c->agent_cached || !streq_ptr(agent, c->agent)) {
                chain_drop_agent(t, c);
                r = chain_build_agent(t, c, agent, now, ret_failure);
                if (r < 0)
                        return r;
        }
        *ret_scopes = c->scopes;
        *ret_n = c->n_scopes;
        *ret_effective = &c->effective;
        return 0;
}
