/* SPDX-License-Identifier: MIT */
/*
 * The budget (see budget.h). An Allocation is the ledger's allocation plus
 * what the daemon keeps beside the numbers: its owner and what the agent
 * declared; the ledger's userdata points at it. Each client keeps its
 * allocations in a list, so a disconnect settles them without a search.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <pwd.h>
#include <unistd.h>

#include "allocation-id.h"
#include "budget.h"
#include "estimator-state.h"
#include "hashmap.h"
#include "log.h"
#include "macro.h"
#include "siphash.h"
#include "time-util.h"
#include "waitq.h"

struct Client {
        Identity identity;
        ProcessEntry *process;
        Allocation *allocations;
        unsigned n_allocations;
        gid_t *groups;
        char *exe;
        CgroupUnits units;
        Principal principal; /* points into the above */
        ScopeChain *chain;
        Ticket *tickets; /* its deferred requests */
        unsigned n_tickets;
        char *user_name; /* for history rows: looked up at the first one */
        bool user_looked_up;
        /* onBehalfOf (issue 14): a trusted proxy's connection holds a
         * delegate Client per process it asked for, charged as that process;
         * a delegate's delegator is the proxy's. Idle delegates are kept for
         * reuse, at most DELEGATES_IDLE_MAX of them. */
        Client *delegator;
        LIST_FIELDS(Client, delegates);
        Client *delegates;
        unsigned n_delegates;
        Hashmap *delegate_by_pid; /* pid -> the newest delegate of that pid; made at the first */
};

/* Idle delegates a proxy's connection keeps for the next Request of the same
 * process (a new one reads four /proc files); past it the oldest idle go. */
#define DELEGATES_IDLE_MAX 64

struct Allocation {
        Client *owner;
        LedgerAllocation *ledger;
        LIST_FIELDS(Allocation, allocations); /* the owner's list */
        Priority priority;
        int requested_priority;        /* when the rule's ceiling lowered it, else -1 */
        uint64_t estimate;             /* what the agent asked for, before clamping */
        uint64_t last_report_usec;     /* grant or last Report, for the expiry sweep */
        uint64_t granted_realtime;     /* realtime µs of the grant (the durable ledger's) */
        uint64_t terminate_grace_usec; /* on_hard_limit = "terminate": the grace period */
        HardLimitAction on_hard_limit;
        bool dry_run;     /* granted under enforce = false: nothing is enforced on it */
        bool breached;    /* its usage reached the hard limit */
        bool terminating; /* its process is being stopped */
        uint8_t probes;   /* ENTITY_* bits: the half-open breakers it is the probe of */
        const char *agent, *task_class, *model; /* into strings[], NULL when not given */
        char *store_keys; /* the durable ledger's key of each scope, NUL after each; made at first use */
        uint64_t prompt_tokens; /* as the Request gave it (0: not given), for the estimator */
        char strings[];
};

/* What a deferred request keeps: a copy of the request, its place in the
 * queue (waiter) or in the held list, and who to answer. */
struct Ticket {
        Budget *budget;
        Client *owner;
        LIST_FIELDS(Ticket, tickets); /* the owner's */
        LIST_FIELDS(Ticket, held);    /* the budget's held list, while held */
        LIST_FIELDS(Ticket, queued);  /* the budget's queued list, while queued */
        Waiter *waiter;               /* while queued */
        bool held_now;
        BudgetRequest req;   /* estimate with the default applied; strings into strings[] */
        bool estimate_given; /* the Request gave its estimate (a learned reservation's floor) */
        Priority priority;   /* as granted: the rule's default or ceiling applied */
        uint64_t since, deadline;
        uint64_t id; /* held: what Pending shows and Approve/Deny take */
        bool approved;
        uint64_t approved_tokens;
        uint64_t cap;
        char cap_scope[512];
        TicketDoneFunc done;
        void *userdata;
        char strings[];
};

/* A refusal waiting to be staged as a history row: same process, same
 * realtime second, one row with a count. */
#define PENDING_REFUSALS_MAX 64
typedef struct PendingRefusal {
        uint64_t second;
        pid_t pid;
        uint32_t uid;
        uint64_t count;
        uint64_t estimate;
        int32_t priority;
        char comm[IDENTITY_COMM_MAX];
        char *user, *unit, *agent, *task_class, *model; /* malloc'ed */
} PendingRefusal;

/* The entities a runaway breaker can be kept for. */
enum {
        ENTITY_PROCESS,
        ENTITY_AGENT,
        ENTITY_CLASS,
        _ENTITY_MAX,
};

struct Budget {
        const Config *config;
        Journal *journal;
        BudgetChangedFunc changed;
        void *userdata;
        BudgetWakeFunc wake;
        BudgetTerminateFunc terminate;
        void *hooks_userdata;
        uint64_t wake_armed; /* what wake() was last told; UINT64_MAX: nothing */
        WaitQueue *queue;
        EstimatorTable *estimator; /* per (uid, class): what released allocations used */
        uint64_t estimator_saved;  /* monotonic µs the last save began (0: none yet) */
        bool estimator_save_more;  /* it left dirty classes: the next sweep goes on */
        Ticket *held;
        size_t n_held;
        Ticket *queued;
        uint64_t next_ticket_id;
        BreakerTable *breakers;
        Ledger *ledger;
        ScopeTable *scopes;
        ProcessTable *processes;
        ProcessTableLimits process_limits; /* the config's, with runtime changes */
        BudgetStats stats;
        BudgetRefreshFunc refresh;
        void *refresh_userdata;
        /* The power state (issue 11): the last readings, the conditions they
         * put the machine in, since when, and each priority's factor. */
        PowerReadings power_readings;
        unsigned power_conditions;
        uint64_t power_since;
        unsigned power_factor[_PRIORITY_MAX];
        /* The durable ledger (issue 12): what the calls change is staged
         * here and committed by the manager at the commit point. NULL: memory
         * only. Refusals are folded per process per second before they are
         * staged (a flood of refused requests is one row per second). */
        Store *store;
        uint64_t store_stage_failures; /* staging refused (store full of uncommitted writes, or OOM) */
        uint32_t stored_generation;    /* the ledger's generation high-water mark last staged */
        PendingRefusal pending_refusals[PENDING_REFUSALS_MAX];
        size_t n_pending_refusals;
};

/* ---- setup ---- */

static void power_factors_update(Budget *b);

/* Whether a lingering process still runs: the same pid with the same start time. */
static bool process_alive(pid_t pid, uint64_t start_time, void *userdata) {
        Identity id = {.pid = pid};

        return identity_read_proc("/proc", &id) >= 0 && id.start_time == start_time;
}

static ProcessTableLimits process_limits(const Config *c) {
        return (ProcessTableLimits){
                .max_tracked = c->max_tracked_processes,
                .max_tracked_per_uid = c->max_tracked_processes_per_uid,
                .scope = c->process,
        };
}

static BreakerSettings breaker_settings(const Config *c) {
        return (BreakerSettings){
                .breaches = (uint32_t)c->runaway_breaches,
                .window_usec = c->runaway_window_usec,
                .cooldown_usec = c->cooldown_usec,
                .max_cooldown_usec = c->max_cooldown_usec,
        };
}

static LedgerParams ledger_params(const Config *c) {
        return (LedgerParams){
                .warn_permille = c->warn_permille,
                .hard_permille = c->hard_permille,
        };
}

/* The estimator group of the configuration; the validator's ranges keep it valid. */
static EstimatorSettings estimator_settings(const Config *config) {
        EstimatorSettings s = ESTIMATOR_SETTINGS_DEFAULT;

        s.half_life_samples = (uint32_t)config->estimator_half_life_samples;
        s.tail_half_life_samples = (uint32_t)config->estimator_tail_half_life_samples;
        s.clip_factor = config->estimator_clip_permille / 1000.0;
        s.ratio_quantile_permille = config->estimator_spread_permille;
        return s;
}

int budget_new(const Config *config, Journal *journal, const uint8_t id_key[16], BudgetChangedFunc changed,
               void *userdata, Budget **ret) {
        LedgerParams params = ledger_params(config);
        Budget *b = calloc(1, sizeof(*b));

        if (!b)
                return -ENOMEM;
        b->config = config;
        b->journal = journal;
        b->changed = changed;
        b->userdata = userdata;
        b->process_limits = process_limits(config);
        b->wake_armed = UINT64_MAX;
        b->next_ticket_id = 1;
        power_readings_init(&b->power_readings);
        for (unsigned p = 0; p < _PRIORITY_MAX; p++)
                b->power_factor[p] = power_factor(&config->power, 0, (Priority)p);
        b->queue = waitq_new();
        {
                BreakerSettings bs = breaker_settings(config);
                b->breakers = breaker_table_new(&bs, config->max_tracked_scopes);
        }
        {
                EstimatorSettings es = estimator_settings(config);
                b->estimator = estimator_table_new(&es, config->max_tracked_scopes);
        }
        /* One user naming classes must not stop everyone else's from being
         * learned: the share of scopes a uid may create applies to classes too. */
        if (b->estimator)
                estimator_table_set_max_per_uid(b->estimator, config->max_tracked_scopes_per_uid);
        b->ledger = ledger_new(&params);
        if (b->ledger) {
                SipHashKey k = siphash_key(id_key);
                uint64_t derived[2] = {siphash24(&k, "scopes", 6), siphash24(&k, "SCOPES", 6)};

                ledger_set_id_key(b->ledger, id_key);
                uint64_t derived_breakers[2] = {siphash24(&k, "breakers", 8), siphash24(&k, "BREAKERS", 8)};

                b->scopes = scope_table_new(b->ledger, config);
                if (b->scopes)
                        scope_table_set_hash_key(b->scopes, (const uint8_t *)derived);
                if (b->breakers)
                        breaker_table_set_hash_key(b->breakers, (const uint8_t *)derived_breakers);
                if (b->estimator) {
                        uint64_t derived_estimator[2] = {siphash24(&k, "estimator", 9),
                                                         siphash24(&k, "ESTIMATOR", 9)};
                        estimator_table_set_hash_key(b->estimator, (const uint8_t *)derived_estimator);
                }
                b->processes = process_table_new(b->ledger, &b->process_limits, process_alive, NULL);
        }
        if (!b->ledger || !b->scopes || !b->processes || !b->queue || !b->breakers || !b->estimator) {
                budget_free(b);
                return -ENOMEM;
        }
        *ret = b;
        return 0;
}

static void pending_refusal_done(PendingRefusal *p) {
        free(p->user);
        free(p->unit);
        free(p->agent);
        free(p->task_class);
        free(p->model);
        *p = (PendingRefusal){};
}

Budget *budget_free(Budget *b) {
        if (!b)
                return NULL;
        waitq_free(b->queue);
        breaker_table_free(b->breakers);
        estimator_table_free(b->estimator);
        for (size_t i = 0; i < b->n_pending_refusals; i++)
                pending_refusal_done(&b->pending_refusals[i]);
        process_table_free(b->processes);
        scope_table_free(b->scopes);
        ledger_free(b->ledger);
        free(b);
        return NULL;
}

int budget_set_config(Budget *b, const Config *config) {
        LedgerParams params = ledger_params(config);
        int r;

        r = scope_table_set_config(b->scopes, config);
        if (r < 0)
                return r;
        b->config = config;
        ledger_set_params(b->ledger, &params);
        b->process_limits = process_limits(config);
        process_table_set_limits(b->processes, &b->process_limits);
        {
                BreakerSettings bs = breaker_settings(config);
                breaker_table_set_settings(b->breakers, &bs, config->max_tracked_scopes);
        }
        {
                EstimatorSettings es = estimator_settings(config);
                (void)estimator_table_set_settings(b->estimator, &es, config->max_tracked_scopes);
                estimator_table_set_max_per_uid(b->estimator, config->max_tracked_scopes_per_uid);
        }
        /* New factors apply at once; new thresholds with the next
         * budget_set_power() (the manager calls it after a reload). */
        power_factors_update(b);
        return 0;
}

void budget_set_hooks(Budget *b, BudgetWakeFunc wake, BudgetTerminateFunc terminate, void *userdata) {
        b->wake = wake;
        b->terminate = terminate;
        b->hooks_userdata = userdata;
}

static void power_factors_update(Budget *b) {
        for (unsigned p = 0; p < _PRIORITY_MAX; p++)
                b->power_factor[p] = power_factor(&b->config->power, b->power_conditions, (Priority)p);
}

void budget_set_refresh_hook(Budget *b, BudgetRefreshFunc refresh, void *userdata) {
        b->refresh = refresh;
        b->refresh_userdata = userdata;
}

static void budget_changed(Budget *b) {
        if (b->changed)
                b->changed(b->userdata);
}

/* ---- journal events ---- */

void allocation_format_id(const Allocation *a, char buf[static 17]) {
        allocation_id_format(ledger_allocation_id(a->ledger), buf);
}

static void emit_allocation(Budget *b, EventKind kind, const Allocation *a, uint64_t now,
                            const char *decision, const char *reason, const char *fmt, ...) _printf_(7, 8);
static void emit_allocation(Budget *b, EventKind kind, const Allocation *a, uint64_t now,
                            const char *decision, const char *reason, const char *fmt, ...) {
        const Identity *id = &a->owner->identity;
        char sid[17], message[512];
        va_list ap;
        Event e = {
                .allocation = sid,
                .pid = id->pid,
                .uid = id->uid,
                .has_uid = true,
                .comm = id->comm,
                .agent = a->agent,
                .task_class = a->task_class,
                .granted = ledger_allocation_granted(a->ledger),
                .has_granted = true,
                .used = ledger_allocation_used(a->ledger),
                .has_used = true,
                .estimate = a->estimate,
                .has_estimate = true,
                .decision = decision,
                .reason = reason,
                .dry_run = a->dry_run,
        };

        allocation_format_id(a, sid);
        va_start(ap, fmt);
        vsnprintf(message, sizeof(message), fmt, ap);
        va_end(ap);
        journal_emit(b->journal, kind, &e, now, "%s", message);
}

/* An event when usage crosses the warning or the hard limit (once each:
 * later reports in the same state say nothing new). */
static void emit_crossing(Budget *b, const Allocation *a, LedgerState before, LedgerState after,
                          uint64_t now) {
        const LedgerAllocation *la = a->ledger;
        const Identity *id = &a->owner->identity;
        char sid[17];

        if (after <= before)
                return;
        allocation_format_id(a, sid);
        if (after == LEDGER_STATE_EXCEEDED)
                emit_allocation(b, EVENT_EXCEEDED, a, now, NULL, NULL,
                                "Allocation %s of %s (pid %d) exceeded its hard limit: %" PRIu64
                                " tokens used, hard limit %" PRIu64 " (granted %" PRIu64 ")",
                                sid, id->comm, (int)id->pid, ledger_allocation_used(la),
                                ledger_allocation_hard_limit(la), ledger_allocation_granted(la));
        else
                emit_allocation(b, EVENT_WARNING, a, now, NULL, NULL,
                                "Allocation %s of %s (pid %d) passed its warning threshold: %" PRIu64
                                " tokens used, warning at %" PRIu64 " (granted %" PRIu64 ")",
                                sid, id->comm, (int)id->pid, ledger_allocation_used(la),
                                ledger_allocation_warn_at(la), ledger_allocation_granted(la));
}

/* ---- clients ---- */

int budget_client_new(Budget *b, const Identity *identity, gid_t *groups, size_t n_groups, uint64_t now,
                      Client **ret) {
        Client *c = calloc(1, sizeof(*c));
        int r;

        if (!c) {
                free(groups);
                return -ENOMEM;
        }
        c->identity = *identity;
        c->groups = groups;
        /* A process gone already, or one whose cgroup or executable the
         * daemon may not read, is in no unit and known by its comm only. */
        if (identity_read_units(identity->pid, &c->units) < 0)
                c->units = (CgroupUnits){};
        if (identity_read_exe("/proc", identity->pid, &c->exe) < 0)
                c->exe = NULL;
        /* Both went by pid: if the peer exited and its pid was reused in
         * between, they describe another process. */
        if (c->units.unit || c->exe) {
                Identity again = {.pid = identity->pid};

                if (identity_read_proc("/proc", &again) < 0 || again.start_time != identity->start_time) {
                        cgroup_units_done(&c->units);
                        c->units = (CgroupUnits){};
                        c->exe = mfree(c->exe);
                }
        }
        c->principal = (Principal){
                .uid = identity->uid,
                .gid = identity->gid,
                .groups = c->groups,
                .n_groups = n_groups,
                .pid = identity->pid,
                .start_time = identity->start_time,
                .comm = c->identity.comm,
                .exe = c->exe,
                .units = &c->units,
        };
        r = process_table_connect(b->processes, identity->pid, identity->start_time, identity->uid,
                                  identity_is_admin(identity), now, &c->process);
        if (r < 0) {
                cgroup_units_done(&c->units);
                free(c->exe);
                free(c->groups);
                free(c);
                return r;
        }
        *ret = c;
        return 0;
}

bool budget_client_is_admin(const Client *c) {
        return identity_is_admin(&c->identity);
}

bool budget_client_has_allocations(const Client *c) {
        if (c->n_allocations > 0)
                return true;
        for (const Client *d = c->delegates; d; d = d->delegates_next)
                if (d->n_allocations > 0)
                        return true;
        return false;
}

static bool client_busy_self(const Client *c) {
        return c->n_allocations > 0 || c->n_tickets > 0;
}

bool budget_client_busy(const Client *c) {
        if (client_busy_self(c))
                return true;
        for (const Client *d = c->delegates; d; d = d->delegates_next)
                if (client_busy_self(d))
                        return true;
        return false;
}

bool budget_client_may_delegate(const Budget *b, const Client *c) {
        const Config *config = b->config;

        if (c->delegator)
                return false;
        if (c->identity.uid == 0)
                return true;
        for (size_t i = 0; i < config->n_trusted_proxies && i < CONFIG_TRUSTED_PROXIES_MAX; i++)
                if (config->trusted_proxy_known[i] && config->trusted_proxy_uid[i] == c->identity.uid)
                        return true;
        return false;
}

/* The oldest idle delegates of proxy go while more than DELEGATES_IDLE_MAX are idle. */
static void delegates_trim(Budget *b, Client *proxy, uint64_t now) {
        unsigned idle = 0;
        Client *last = NULL;

        for (Client *d = proxy->delegates; d; d = d->delegates_next) {
                idle += !client_busy_self(d);
                last = d;
        }
        for (Client *d = last, *prev; d && idle > DELEGATES_IDLE_MAX; d = prev) {
                prev = d->delegates_prev;
                if (client_busy_self(d))
                        continue;
                budget_client_free(b, d, SETTLE_ABANDONED, now);
                idle--;
        }
}

int budget_client_delegate(Budget *b, Client *proxy, pid_t pid, uid_t uid, uint64_t now, Client **ret) {
        Identity id;
        gid_t *groups;
        size_t n_groups;
        Client *d;
        int r;

        if (pid <= 0 || proxy->delegator)
                return -EINVAL;
        if (!proxy->delegate_by_pid) {
                proxy->delegate_by_pid = hashmap_new();
                if (!proxy->delegate_by_pid)
                        return -ENOMEM;
        }
        /* The process asked for before: the same one while its start time is
         * (one read of /proc/PID/stat); its identity is what it was then, as a
         * connection's is what it was at connect(). */
        d = hashmap_get(proxy->delegate_by_pid, (uint64_t)pid);
        if (d) {
                Identity again = {.pid = pid};

                if (identity_read_proc("/proc", &again) < 0)
                        return -ESRCH;
                if (again.start_time == d->identity.start_time) {
                        if (d->identity.uid != uid)
                                return -EPERM;
                        /* Most recently used first: the trim takes the oldest. */
                        if (d != proxy->delegates) {
                                LIST_REMOVE(delegates, proxy->delegates, d);
                                LIST_PREPEND(delegates, proxy->delegates, d);
                        }
                        *ret = d;
                        return 0;
                }
                /* The pid was reused: the old delegate stays (its allocations are
                 * still the proxy's) and a new one takes the entry. */
                hashmap_remove(proxy->delegate_by_pid, (uint64_t)pid);
        }
        r = identity_read_other("/proc", pid, &id, &groups, &n_groups);
        if (r < 0)
                return r;
        if (id.uid != uid) {
                free(groups);
                return -EPERM;
        }
        if (proxy->n_delegates >= b->config->max_tracked_processes) {
                delegates_trim(b, proxy, now);
                if (proxy->n_delegates >= b->config->max_tracked_processes) {
                        free(groups);
                        return -EUSERS;
                }
        }
        r = budget_client_new(b, &id, groups, n_groups, now, &d);
        if (r < 0)
                return r;
        r = hashmap_put(proxy->delegate_by_pid, (uint64_t)pid, d);
        if (r < 0) {
                budget_client_free(b, d, SETTLE_ABANDONED, now);
                return r;
        }
        d->delegator = proxy;
        LIST_PREPEND(delegates, proxy->delegates, d);
        proxy->n_delegates++;
        delegates_trim(b, proxy, now);
        *ret = d;
        return 0;
}

/* ---- the durable ledger (issue 12) ---- */

/* How a scope's usage is kept in the store: what it takes to find or make
 * the same scope again at restart ("KIND|OWNER|DISCRIMINATOR|NAME"; a
 * process scope is "process|UID|START_TIME|process:PID"). 0, or -ENOENT for
 * a scope that is neither the table's nor the allocation's process's. */
static char *key_put(char *p, const char *end, const char *str) {
        size_t n = strlen(str);

        if (!p || (size_t)(end - p) <= n)
                return NULL;
        return mempcpy(p, str, n);
}

static char *key_put_u64(char *p, const char *end, uint64_t v, bool negative) {
        char digits[24], *d = digits + sizeof(digits);

        *--d = 0;
        do
                *--d = (char)('0' + v % 10);
        while ((v /= 10) > 0);
        if (negative)
                *--d = '-';
        return key_put(p, end, d);
}

/* Formatted by hand: this runs at every allocation's first charge. */
static int scope_store_key(const Allocation *a, const LedgerScope *s, char *buf, size_t size) {
        const ScopeEntry *e = scope_table_entry_of(s);
        const char *end = buf + size;
        char *p = buf;

        if (e) {
                int64_t owner = scope_entry_owner(e);

                p = key_put(p, end, scope_kind_to_string(scope_entry_kind(e)));
                p = key_put(p, end, "|");
                p = key_put_u64(p, end, owner < 0 ? -(uint64_t)owner : (uint64_t)owner, owner < 0);
                p = key_put(p, end, "|");
                p = key_put_u64(p, end, scope_entry_discriminator(e), false);
        } else if (s == process_entry_scope(a->owner->process)) {
                p = key_put(p, end, "process|");
                p = key_put_u64(p, end, (uint32_t)process_entry_uid(a->owner->process), false);
                p = key_put(p, end, "|");
                p = key_put_u64(p, end, process_entry_start_time(a->owner->process), false);
        } else
                return -ENOENT;
        p = key_put(p, end, "|");
        p = key_put(p, end, ledger_scope_name(s));
        if (!p)
                return -ENAMETOOLONG;
        *p = 0;
        return 0;
}

#define SCOPE_STORE_KEY_MAX 640

static void store_failed(Budget *b, int r) {
        if (r >= 0)
                return;
        /* Never silent: the first of a run is logged, Status counts them all (lost). */
        if (b->store_stage_failures++ == 0)
                log_error("durable ledger: a write could not be staged: %s; it is lost to the database "
                          "(budgetctl status counts these)",
                          strerror(-r));
}

/* The store keys of the allocation's scopes, each followed by a NUL (an
 * empty one for a scope that has none), made once: a Report and the Release
 * charge the same scopes. NULL when out of memory. */
static const char *allocation_store_keys(Allocation *a) {
        LedgerScope *const *scopes;
        char buf[LEDGER_SCOPES_MAX * SCOPE_STORE_KEY_MAX];
        size_t n, len = 0;

        if (a->store_keys)
                return a->store_keys;
        n = ledger_allocation_scopes(a->ledger, &scopes);
        for (size_t i = 0; i < n; i++) {
                if (scope_store_key(a, scopes[i], buf + len, SCOPE_STORE_KEY_MAX) < 0)
                        buf[len] = 0;
                len += strlen(buf + len) + 1;
        }
        a->store_keys = malloc(len ?: 1);
        if (a->store_keys)
                memcpy(a->store_keys, buf, len ?: 1);
        return a->store_keys;
}

/* Tokens the allocation committed now, in every scope it is charged to. */
static void store_usage(Budget *b, Allocation *a, uint64_t tokens, uint64_t realtime) {
        LedgerScope *const *scopes;
        const char *key;
        size_t n;

        if (!b->store || tokens == 0)
                return;
        key = allocation_store_keys(a);
        if (!key) {
                store_failed(b, -ENOMEM);
                return;
        }
        n = ledger_allocation_scopes(a->ledger, &scopes);
        for (size_t i = 0; i < n; key += strlen(key) + 1, i++)
                if (*key)
                        store_failed(b, store_add_usage(b->store, key, realtime / USEC_PER_SEC, tokens));
}

static const char *client_unit(const Client *c) {
        return c->units.user_unit ?: c->units.unit;
}

/* The user name of a history row: looked up once per connection. */
static const char *client_user(Client *c) {
        if (!c->user_looked_up) {
                struct passwd pw, *result = NULL;
                char buf[1024];

                c->user_looked_up = true;
                if (getpwuid_r(c->identity.uid, &pw, buf, sizeof(buf), &result) == 0 && result)
                        c->user_name = strdup(result->pw_name);
        }
        return c->user_name;
}

static size_t allocation_scope_names(const Allocation *a, const char *names[static LEDGER_SCOPES_MAX]) {
        LedgerScope *const *scopes;
        size_t n = ledger_allocation_scopes(a->ledger, &scopes);

        for (size_t i = 0; i < n; i++)
                names[i] = ledger_scope_name(scopes[i]);
        return n;
}

/* The allocation as it is now (granted, or its last acknowledged usage). */
static void store_allocation(Budget *b, const Allocation *a) {
        const LedgerAllocation *la = a->ledger;
        const char *names[LEDGER_SCOPES_MAX];
        StoreAllocation sa;

        if (!b->store)
                return;
        sa = (StoreAllocation){
                .id = ledger_allocation_id(la),
                .granted_usec = a->granted_realtime,
                .granted = ledger_allocation_granted(la),
                .reservation = ledger_allocation_hard_limit(la),
                .estimate = a->estimate,
                .input = ledger_allocation_input_tokens(la),
                .output = ledger_allocation_output_tokens(la),
                .priority = (int32_t)a->priority,
                .pid = a->owner->identity.pid,
                .uid = a->owner->identity.uid,
                .comm = a->owner->identity.comm,
                .agent = a->agent,
                .class_name = a->task_class,
                .model = a->model,
                .unit = client_unit(a->owner),
                .scopes = names,
                .n_scopes = allocation_scope_names(a, names),
        };
        store_failed(b, store_put_allocation(b->store, &sa));
        if (ledger_generation_high(b->ledger) != b->stored_generation) {
                b->stored_generation = ledger_generation_high(b->ledger);
                store_failed(b, store_meta_put_u64(b->store, "generation", b->stored_generation));
        }
}

/* The allocation was settled: its row goes, a history row comes. */
static void store_settled(Budget *b, Allocation *a, StoreOutcome outcome, uint64_t input, uint64_t output,
                          uint64_t realtime) {
        const LedgerAllocation *la = a->ledger;
        const char *names[LEDGER_SCOPES_MAX];
        StoreHistoryRow h;

        if (!b->store)
                return;
        h = (StoreHistoryRow){
                .realtime_usec = realtime,
                .uid = a->owner->identity.uid,
                .user = client_user(a->owner),
                .unit = client_unit(a->owner),
                .comm = a->owner->identity.comm,
                .agent = a->agent,
                .class_name = a->task_class,
                .model = a->model,
                .priority = (int32_t)a->priority,
                .estimate = a->estimate,
                .granted = ledger_allocation_granted(la),
                .input = input,
                .output = output,
                .outcome = outcome,
                .count = 1,
                .scopes = names,
                .n_scopes = allocation_scope_names(a, names),
        };
        store_failed(b, store_drop_allocation(b->store, ledger_allocation_id(la)));
        store_failed(b, store_add_history(b->store, &h));
}

static int strdup_or_null(const char *s, char **ret) {
        *ret = NULL;
        if (!s)
                return 0;
        *ret = strdup(s);
        return *ret ? 0 : -ENOMEM;
}

static void pending_refusal_stage(Budget *b, PendingRefusal *p) {
        StoreHistoryRow h = {
                .realtime_usec = p->second * USEC_PER_SEC,
                .uid = p->uid,
                .user = p->user,
                .unit = p->unit,
                .comm = p->comm,
                .agent = p->agent,
                .class_name = p->task_class,
                .model = p->model,
                .priority = p->priority,
                .estimate = p->estimate,
                .outcome = STORE_OUTCOME_REFUSED,
                .count = p->count,
        };

        store_failed(b, store_add_history(b->store, &h));
        pending_refusal_done(p);
}

/* The estimator's classes that learned since they were last saved, staged
 * for the next commit: every ESTIMATOR_SAVE_USEC from the sweep, at most
 * ESTIMATOR_SAVE_STEP classes a time (about 4 KB each: some 256 KB per
 * commit, the rest at the next sweeps), and all of them at the last commit. What was learned is not
 * acknowledged usage, so a crash may lose the last minute of it, and no commit per Release is spent on it.
 * Returns whether dirty classes were left for later. */
#define ESTIMATOR_SAVE_USEC (60 * USEC_PER_SEC)
#define ESTIMATOR_SAVE_STEP 64

static bool estimator_save(Budget *b, uint64_t now, uint64_t realtime, size_t max) {
        size_t n = 0;

        for (EstimatorClass *c = estimator_table_next(b->estimator, NULL); c;
             c = estimator_table_next(b->estimator, c)) {
                EstimatorClassState st;
                _cleanup_free_ char *text = NULL;
                uint64_t age;

                if (!estimator_class_dirty(c))
                        continue;
                if (n == max)
                        return true;
                estimator_class_state(c, &st);
                text = estimator_state_to_json(&st);
                if (!text) {
                        store_failed(b, -ENOMEM);
                        continue;
                }
                age = now > st.last_seen_usec ? now - st.last_seen_usec : 0;
                if (store_put_estimator(b->store, estimator_class_uid(c), estimator_class_name(c),
                                        realtime > age ? realtime - age : 0, text) < 0) {
                        store_failed(b, -ENOBUFS); /* stays dirty: tried again next time */
                        continue;
                }
                estimator_class_mark_saved(c);
                n++;
        }
        return false;
}

void budget_store_flush(Budget *b, uint64_t realtime, bool all) {
        size_t kept = 0;

        if (all && b->store)
                (void)estimator_save(b, now_usec(), realtime, SIZE_MAX);

        for (size_t i = 0; i < b->n_pending_refusals; i++) {
                PendingRefusal *p = &b->pending_refusals[i];

                if (all || p->second != realtime / USEC_PER_SEC)
                        pending_refusal_stage(b, p);
                else
                        b->pending_refusals[kept++] = *p;
        }
        b->n_pending_refusals = kept;
}

bool budget_store_waiting(const Budget *b) {
        return b->n_pending_refusals > 0;
}

/* A refused request: counted into its process's row of this second. */
static void store_refused(Budget *b, Client *c, const BudgetRequest *req, uint64_t estimate) {
        uint64_t realtime = realtime_usec(), second = realtime / USEC_PER_SEC;
        PendingRefusal *p = NULL;

        if (!b->store)
                return;
        for (size_t i = 0; i < b->n_pending_refusals; i++)
                if (b->pending_refusals[i].pid == c->identity.pid &&
                    b->pending_refusals[i].uid == c->identity.uid &&
                    b->pending_refusals[i].second == second) {
                        b->pending_refusals[i].count++;
                        return;
                }
        if (b->n_pending_refusals == PENDING_REFUSALS_MAX)
                budget_store_flush(b, realtime, true);
        p = &b->pending_refusals[b->n_pending_refusals];
        *p = (PendingRefusal){
                .second = second,
                .pid = c->identity.pid,
                .uid = c->identity.uid,
                .count = 1,
                .estimate = estimate,
                .priority = req->priority,
        };
        snprintf(p->comm, sizeof(p->comm), "%s", c->identity.comm);
        if (strdup_or_null(client_user(c), &p->user) < 0 || strdup_or_null(client_unit(c), &p->unit) < 0 ||
            strdup_or_null(req->agent, &p->agent) < 0 ||
            strdup_or_null(req->task_class, &p->task_class) < 0 ||
            strdup_or_null(req->model, &p->model) < 0) {
                pending_refusal_done(p);
                b->store_stage_failures++;
                return;
        }
        b->n_pending_refusals++;
}

void budget_set_id_generation(Budget *b, uint32_t floor) {
        ledger_set_generation_floor(b->ledger, floor);
        b->stored_generation = floor;
}

void budget_set_store(Budget *b, Store *store) {
        b->store = store;
}

uint64_t budget_store_failures(const Budget *b) {
        return b->store_stage_failures;
}

/* Restore: the usage rows of the store put back into the windows. */
typedef struct StaleBreaker {
        char *name;
        uint64_t disc;
} StaleBreaker;

typedef struct RestoreContext {
        Budget *b;
        uint64_t now, realtime;
        BudgetRestoreStats *stats;
        char last_key[SCOPE_STORE_KEY_MAX];
        LedgerScope *last_scope; /* of last_key; NULL: skipped */
        StaleBreaker *stale;     /* breaker rows to delete once the load is done */
        size_t n_stale;
        ProcessEntry *held; /* last_scope's process: referenced until its rows are in (or it would go) */
} RestoreContext;

/* The process entry restore_scope() referenced is let go: with its usage
 * back it lingers like any process that used tokens (with none it goes). */
static void restore_release_held(RestoreContext *rc) {
        if (rc->held)
                process_table_disconnect(rc->b->processes, rc->held, rc->now);
        rc->held = NULL;
}

static void restore_context_done(RestoreContext *rc) {
        for (size_t i = 0; i < rc->n_stale; i++)
                free(rc->stale[i].name);
        free(rc->stale);
        rc->stale = NULL;
        rc->n_stale = 0;
}

/* An open or half-open breaker of the last run, as it would be now: its
 * cool-down's end moved from realtime to the monotonic clock (in the past
 * when it ended while the daemon was down: then it is half-open at the next
 * request). One that ended more than a window ago would have been dropped:
 * its row goes. */
static int restore_breaker_cb(void *userdata, const StoreBreaker *sb) {
        RestoreContext *rc = userdata;
        Budget *b = rc->b;
        uint64_t until = sb->until_usec, open_until;
        BreakerState state;
        StaleBreaker *n;
        int r;

        if (strcmp(sb->state, "open") == 0)
                state = BREAKER_OPEN;
        else if (strcmp(sb->state, "half-open") == 0)
                state = BREAKER_HALF_OPEN;
        else
                state = BREAKER_CLOSED;
        if (state == BREAKER_CLOSED || until + b->config->runaway_window_usec < rc->realtime) {
                n = reallocarray(rc->stale, rc->n_stale + 1, sizeof(*rc->stale));
                if (!n)
                        return -ENOMEM;
                rc->stale = n;
                n[rc->n_stale] = (StaleBreaker){.name = strdup(sb->name), .disc = sb->disc};
                if (n[rc->n_stale].name)
                        rc->n_stale++;
                return 0;
        }
        if (until >= rc->realtime)
                open_until = rc->now + (until - rc->realtime);
        else
                open_until = rc->now > rc->realtime - until ? rc->now - (rc->realtime - until) : 0;
        r = breaker_restore(b->breakers, sb->name, sb->disc, sb->owner, state, sb->breaches,
                            sb->cooldown_usec, open_until, rc->now);
        if (r < 0) {
                log_warning("durable ledger: the runaway breaker of %s (%s) could not be restored: %s",
                            sb->name, sb->state, strerror(-r));
                return 0;
        }
        rc->stats->breakers++;
        return 0;
}

/* The scope a store key names, found or made again. */
static int restore_scope(RestoreContext *rc, const char *key, LedgerScope **ret) {
        char kind_name[16];
        const char *p = key, *bar;
        long long owner;
        unsigned long long disc;
        char *end;
        int kind;

        bar = strchr(p, '|');
        if (!bar || (size_t)(bar - p) >= sizeof(kind_name))
                return -EBADMSG;
        memcpy(kind_name, p, (size_t)(bar - p));
        kind_name[bar - p] = 0;
        kind = scope_kind_from_string(kind_name);
        if (kind < 0)
                return -EBADMSG;
        p = bar + 1;
        errno = 0;
        owner = strtoll(p, &end, 10);
        if (errno || end == p || *end != '|' || owner < -1 || owner > (long long)UINT32_MAX)
                return -EBADMSG;
        p = end + 1;
        disc = strtoull(p, &end, 10);
        if (errno || end == p || *end != '|' || end[1] == 0)
                return -EBADMSG;
        p = end + 1;
        if (kind == SCOPE_GLOBAL) {
                if (strcmp(p, "global") != 0)
                        return -EBADMSG;
                *ret = scope_table_global(rc->b->scopes);
                return 0;
        }
        if (kind == SCOPE_PROCESS) {
                ProcessEntry *e;
                unsigned long pid;
                int r;

                if (strncmp(p, "process:", 8) != 0)
                        return -EBADMSG;
                pid = strtoul(p + 8, &end, 10);
                if (*end || pid == 0 || pid > INT32_MAX || owner < 0)
                        return -EBADMSG;
                /* Only a process that still runs can spend from it again. */
                if (!process_alive((pid_t)pid, disc, NULL))
                        return -ESRCH;
                r = process_table_connect(rc->b->processes, (pid_t)pid, disc, (uid_t)owner, true, rc->now,
                                          &e);
                if (r < 0)
                        return r;
                /* Referenced until its rows are added (restore_release_held()):
                 * released now, an entry with no usage yet would be freed. */
                rc->held = e;
                *ret = process_entry_scope(e);
                return 0;
        }
        return scope_table_restore(rc->b->scopes, (ScopeKind)kind, p, disc, owner, rc->now, ret);
}

static int restore_usage_cb(void *userdata, const char *key, uint64_t second, uint64_t tokens) {
        RestoreContext *rc = userdata;
        uint64_t at = second * USEC_PER_SEC, age = rc->realtime > at ? rc->realtime - at : 0;
        int r;

        if (strcmp(key, rc->last_key) != 0) {
                restore_release_held(rc);
                snprintf(rc->last_key, sizeof(rc->last_key), "%s", key);
                r = restore_scope(rc, key, &rc->last_scope);
                if (r == -ENOMEM)
                        return r;
                if (r < 0) {
                        rc->last_scope = NULL;
                        if (r == -ESRCH)
                                rc->stats->scopes_gone++;
                        else
                                rc->stats->scopes_bad++;
                        if (r != -ESRCH && rc->stats->scopes_bad <= 3)
                                log_warning("durable ledger: cannot restore the usage of '%s': %s", key,
                                            r == -EBADMSG ? "not a scope this daemon keeps" : strerror(-r));
                } else
                        rc->stats->scopes++;
        }
        if (!rc->last_scope)
                return 0;
        if (ledger_scope_restore(rc->last_scope, age, tokens, rc->now) < 0) {
                rc->stats->rows_bad++;
                return 0;
        }
        rc->stats->rows++;
        if (rc->last_scope == scope_table_global(rc->b->scopes))
                rc->stats->global_tokens += tokens;
        return 0;
}

/* An allocation open when the previous run ended without settling it (a
 * crash, a kill): settled now at its last acknowledged usage, which the
 * usage rows hold already; a history row and a journal event say so. */
static int restore_allocation_cb(void *userdata, const StoreAllocation *sa) {
        RestoreContext *rc = userdata;
        Budget *b = rc->b;
        char sid[17];
        StoreHistoryRow h = {
                .realtime_usec = rc->realtime,
                .uid = sa->uid,
                .unit = sa->unit,
                .comm = sa->comm,
                .agent = sa->agent,
                .class_name = sa->class_name,
                .model = sa->model,
                .priority = sa->priority,
                .estimate = sa->estimate,
                .granted = sa->granted,
                .input = sa->input,
                .output = sa->output,
                .outcome = STORE_OUTCOME_ABANDONED,
                .count = 1,
                .scopes = sa->scopes,
                .n_scopes = sa->n_scopes,
        };
        Event e = {
                .pid = (pid_t)sa->pid,
                .uid = sa->uid,
                .has_uid = true,
                .comm = sa->comm,
                .agent = sa->agent,
                .task_class = sa->class_name,
                .estimate = sa->estimate,
                .has_estimate = true,
                .has_used = true,
                .used = sa->input + sa->output,
                .reason =
                        "the daemon stopped without settling it (a crash or a kill); settled at restart at "
                        "its last acknowledged usage",
        };
        int r;

        snprintf(sid, sizeof(sid), "%016" PRIx64, sa->id);
        e.allocation = sid;
        r = store_add_history(b->store, &h);
        if (r >= 0)
                r = store_drop_allocation(b->store, sa->id);
        if (r < 0)
                return r;
        journal_emit(b->journal, EVENT_ABANDONED, &e, rc->now,
                     "Allocation %s of %s (pid %" PRId64
                     ") was open when the daemon stopped without settling "
                     "it; settled at restart at %" PRIu64 " tokens used",
                     sid, sa->comm ?: "?", sa->pid, sa->input + sa->output);
        rc->stats->abandoned++;
        return 0;
}

/* What a class had learned by the last save; its last sample's time moved
 * from realtime to the monotonic clock (for the retention sweep). */
static int restore_estimator_cb(void *userdata, uint32_t uid, const char *class_name, uint64_t seen_usec,
                                const char *state) {
        RestoreContext *rc = userdata;
        EstimatorClassState st;
        uint64_t age = rc->realtime > seen_usec ? rc->realtime - seen_usec : 0;
        int r;

        r = estimator_state_from_json(state, &st);
        if (r >= 0) {
                st.last_seen_usec = rc->now > age ? rc->now - age : 0;
                r = estimator_restore(rc->b->estimator, uid, class_name, &st);
        }
        if (r == -ENOMEM)
                return r;
        if (r < 0) {
                if (rc->stats->estimator_bad++ == 0)
                        log_warning("durable ledger: what the estimator learned of class '%s' (uid %" PRIu32
                                    ") is not readable (%s): it starts afresh",
                                    class_name, uid, strerror(-r));
                return 0;
        }
        rc->stats->estimator_classes++;
        return 0;
}

int budget_restore(Budget *b, uint64_t now, uint64_t realtime, BudgetRestoreStats *ret) {
        RestoreContext rc = {.b = b, .now = now, .realtime = realtime, .stats = ret};
        uint64_t retention = b->config->history_retention_days * 86400 * USEC_PER_SEC;
        uint64_t span = ledger_window_span_usec(LEDGER_WINDOW_DAY) / USEC_PER_SEC;
        int r;

        *ret = (BudgetRestoreStats){};
        if (!b->store)
                return 0;
        /* The day window and one bucket of slack: older usage counts nowhere. */
        r = store_load_usage(
                b->store, realtime / USEC_PER_SEC > span + 3600 ? realtime / USEC_PER_SEC - span - 3600 : 0,
                restore_usage_cb, &rc);
        restore_release_held(&rc);
        if (r < 0)
                return r;
        r = store_load_allocations(b->store, restore_allocation_cb, &rc);
        if (r < 0)
                return r;
        r = store_load_breakers(b->store, restore_breaker_cb, &rc);
        if (r < 0)
                return r;
        r = store_load_estimators(b->store, realtime > retention ? realtime - retention : 0,
                                  restore_estimator_cb, &rc);
        if (r < 0)
                return r;
        for (size_t i = 0; i < rc.n_stale; i++)
                (void)store_delete_breaker(b->store, rc.stale[i].name, rc.stale[i].disc);
        restore_context_done(&rc);
        budget_changed(b);
        return 0;
}

/* Persistent limits: one store row per field. */
static const struct {
        unsigned bit;
        const char *name;
} limit_fields[] = {
        {SCOPE_LIMIT_MINUTE, "minute"},
        {SCOPE_LIMIT_HOUR, "hour"},
        {SCOPE_LIMIT_DAY, "day"},
        {SCOPE_LIMIT_IN_FLIGHT, "in_flight"},
        {SCOPE_LIMIT_ALLOCATIONS, "allocations"},
};

static uint64_t *limit_value(LedgerLimits *l, unsigned bit) {
        switch (bit) {
        case SCOPE_LIMIT_MINUTE:
                return &l->window_tokens[LEDGER_WINDOW_MINUTE];
        case SCOPE_LIMIT_HOUR:
                return &l->window_tokens[LEDGER_WINDOW_HOUR];
        case SCOPE_LIMIT_DAY:
                return &l->window_tokens[LEDGER_WINDOW_DAY];
        case SCOPE_LIMIT_IN_FLIGHT:
                return &l->in_flight_tokens;
        default:
                return &l->max_allocations;
        }
}

int budget_persist_limits(Budget *b, const char *target, const ScopeLimitsChange *change,
                          const char **ret_why) {
        ScopeLimitsChange c = *change;
        int r = 0;

        if (!b->store) {
                *ret_why = "the daemon runs in memory only (state_directory = \"\" or --state-dir ''): "
                           "nothing is kept across a restart; the change applies until the next reload";
                return -EOPNOTSUPP;
        }
        /* A pid names another process after a restart (or sooner): kept by
         * pid alone, the limit would land on whichever process gets it. */
        if (strncmp(target, "process:", 8) == 0 && change->mask != 0) {
                *ret_why = "a process's limits are not kept: after a restart its pid may name another "
                           "process; set them on its agent, unit or user, or on the process kind (process)";
                return -EOPNOTSUPP;
        }
        if (change->mask == 0)
                r = store_delete_limit(b->store, target, NULL);
        for (size_t i = 0; i < ELEMENTSOF(limit_fields) && r >= 0; i++)
                if (change->mask & limit_fields[i].bit)
                        r = store_put_limit(b->store, target, limit_fields[i].name,
                                            (int64_t)*limit_value(&c.values, limit_fields[i].bit));
        if (r < 0)
                *ret_why = store_error_message(b->store);
        return r;
}

static int restore_limit_cb(void *userdata, const char *scope, const char *field, int64_t value) {
        Budget *b = userdata;
        ScopeLimitsChange c = {};
        int r;

        for (size_t i = 0; i < ELEMENTSOF(limit_fields); i++)
                if (strcmp(field, limit_fields[i].name) == 0)
                        c.mask = limit_fields[i].bit;
        if (!c.mask || value < 0 || (uint64_t)value >= LEDGER_TOKENS_MAX) {
                log_warning(
                        "durable ledger: ignoring the persistent limit %s of %s: not a limit this daemon "
                        "knows (%" PRId64 ")",
                        field, scope, value);
                return 0;
        }
        *limit_value(&c.values, c.mask) = (uint64_t)value;
        r = budget_set_limits(b, scope, &c);
        if (r == -ENOMEM)
                return r;
        if (r < 0)
                log_warning("durable ledger: the persistent limit %s = %" PRId64
                            " of %s does not apply now: %s",
                            field, value, scope,
                            r == -ENOENT ? "no such rule or process (it stays in the ledger for when it "
                                           "exists again; budgetctl set --persistent SCOPE forgets it)"
                                         : "not a scope name");
        return 0;
}

int budget_restore_limits(Budget *b) {
        return b->store ? store_load_limits(b->store, restore_limit_cb, b) : 0;
}

/* Unlinks and frees one allocation after the ledger settled it. */
static void allocation_unlink(Budget *b, Allocation *a, uint64_t now) {
        Client *c = a->owner;

        LIST_REMOVE(allocations, c->allocations, a);
        c->n_allocations--;
        process_table_allocation_removed(b->processes, c->process, now);
        free(a->store_keys);
        free(a);
}

static void scope_kick(Budget *b, LedgerScope *s, uint64_t now);
static void ticket_free(Budget *b, Ticket *t);
static void breakers_probe_done(Budget *b, const Allocation *a, uint64_t now);
static bool pool_update(Budget *b, LedgerScope *s, uint64_t now);
static void wake_update(Budget *b);

/* The estimator's class of a request (issue 13): the declared class, else
 * the agent name, else the command, each with its kind in front so that a
 * class and an agent of the same name stay apart; within the uid (the
 * table's key). NULL when the name is too long to learn from. */
static const char *estimator_class(const Client *c, const char *task_class, const char *agent,
                                   char buf[static ESTIMATOR_NAME_MAX + 1]) {
        int n = task_class ? snprintf(buf, ESTIMATOR_NAME_MAX + 1, "class:%s", task_class)
                : agent    ? snprintf(buf, ESTIMATOR_NAME_MAX + 1, "agent:%s", agent)
                           : snprintf(buf, ESTIMATOR_NAME_MAX + 1, "command:%s", c->identity.comm);

        return n > 0 && (unsigned)n <= ESTIMATOR_NAME_MAX ? buf : NULL;
}

/* A released allocation teaches the estimator what its class uses (one
 * abandoned, expired or stopped at its hard limit says less than that). */
static void estimator_learn(Budget *b, const Allocation *a, uint64_t input, uint64_t output, uint64_t now) {
        char buf[ESTIMATOR_NAME_MAX + 1];
        const char *cls = estimator_class(a->owner, a->task_class, a->agent, buf);

        if (cls)
                (void)estimator_observe(b->estimator, (uint32_t)a->owner->identity.uid, cls,
                                        a->prompt_tokens, input, output, now);
}

/* Settles in the ledger, then lets the waiters of every scope the
 * reservation came back to go first (each scope's head, while it fits). */
static int allocation_settle(Budget *b, Allocation *a, uint64_t input, uint64_t output, StoreOutcome outcome,
                             uint64_t now, uint64_t *ret_used, uint64_t *ret_refunded) {
        LedgerScope *scopes[LEDGER_SCOPES_MAX], *const *p;
        size_t n = ledger_allocation_scopes(a->ledger, &p);
        uint64_t before = ledger_allocation_used(a->ledger), realtime = b->store ? realtime_usec() : 0;
        int r;

        if (input >= LEDGER_TOKENS_MAX || output >= LEDGER_TOKENS_MAX)
                return -ERANGE;
        if (a->terminating)
                outcome = STORE_OUTCOME_TERMINATED;
        memcpy(scopes, p, n * sizeof(*scopes));
        /* Staged before the ledger frees the allocation; the totals only grow. */
        if (input + output > before)
                store_usage(b, a, input + output - before, realtime);
        store_settled(b, a, outcome, input, output, realtime);
        r = ledger_settle(b->ledger, a->ledger, input, output, now, ret_used, ret_refunded);
        if (r < 0)
                return r;
        breakers_probe_done(b, a, now);
        allocation_unlink(b, a, now);
        for (size_t i = 0; i < n; i++)
                if (ledger_scope_get_degraded(scopes[i]))
                        (void)pool_update(b, scopes[i], now);
        if (waitq_size(b->queue) > 0) {
                for (size_t i = 0; i < n; i++)
                        scope_kick(b, scopes[i], now);
                wake_update(b);
        }
        budget_changed(b);
        return 0;
}

/* Settles an allocation its owner did not release, at the usage it reported
 * (the unreported rest is unknown, and the reservation is what a crashed or
 * stuck agent must not keep), with the journal event that says why. */
static void allocation_settle_unreleased(Budget *b, Allocation *a, SettleCause cause, uint64_t now) {
        static const struct {
                EventKind kind;
                StoreOutcome outcome;
                const char *reason, *what;
        } causes[] = {
                [SETTLE_ABANDONED] = {EVENT_ABANDONED, STORE_OUTCOME_ABANDONED,
                                      "its connection closed before it released the allocation",
                                      "abandoned: its connection closed"},
                [SETTLE_SHUTDOWN] = {EVENT_SHUTDOWN, STORE_OUTCOME_SHUTDOWN, "the daemon is stopping",
                                     "settled at shutdown"},
                [SETTLE_EXPIRED] = {EVENT_EXPIRED, STORE_OUTCOME_EXPIRED,
                                    "no report for limits.allocation_idle_timeout_sec",
                                    "expired: no report for limits.allocation_idle_timeout_sec"},
        };
        const Identity *id = &a->owner->identity;
        LedgerAllocation *la = a->ledger;
        char sid[17];

        allocation_format_id(a, sid);
        emit_allocation(b, causes[cause].kind, a, now, NULL, causes[cause].reason,
                        "Allocation %s of %s (pid %d) %s; settled at %" PRIu64 " tokens used, %" PRIu64
                        " refunded",
                        sid, id->comm, (int)id->pid, causes[cause].what, ledger_allocation_used(la),
                        ledger_allocation_reserved(la));
        (void)allocation_settle(b, a, ledger_allocation_input_tokens(la),
                                ledger_allocation_output_tokens(la), causes[cause].outcome, now, NULL, NULL);
        if (cause == SETTLE_EXPIRED)
                b->stats.n_expired++;
        else if (cause == SETTLE_ABANDONED)
                b->stats.n_abandoned++;
}

void budget_client_free(Budget *b, Client *c, SettleCause cause, uint64_t now) {
        if (!c)
                return;
        while (c->delegates)
                budget_client_free(b, c->delegates, cause, now);
        hashmap_free(c->delegate_by_pid);
        if (c->delegator) {
                Hashmap *by_pid = c->delegator->delegate_by_pid;

                if (hashmap_get(by_pid, (uint64_t)c->identity.pid) == c)
                        hashmap_remove(by_pid, (uint64_t)c->identity.pid);
                LIST_REMOVE(delegates, c->delegator->delegates, c);
                c->delegator->n_delegates--;
        }
        /* Its deferred calls were cancelled first (call.h); none is left to answer. */
        while (c->tickets)
                ticket_free(b, c->tickets);
        wake_update(b);
        while (c->allocations)
                allocation_settle_unreleased(b, c->allocations, cause, now);
        scope_chain_free(b->scopes, c->chain, now);
        process_table_disconnect(b->processes, c->process, now);
        cgroup_units_done(&c->units);
        free(c->exe);
        free(c->groups);
        free(c->user_name);
        free(c);
}

/* ---- allocations ---- */

static Allocation *allocation_new(const BudgetRequest *req) {
        const char *labels[3] = {req->task_class, req->agent, req->model};
        size_t lengths[3], total = 0;
        Allocation *a;
        char *q;

        for (size_t i = 0; i < 3; i++) {
                lengths[i] = labels[i] ? strlen(labels[i]) + 1 : 0;
                total += lengths[i];
        }
        a = calloc(1, sizeof(*a) + total);
        if (!a)
                return NULL;
        a->prompt_tokens = req->prompt_tokens;
        q = a->strings;
        const char **targets[3] = {&a->task_class, &a->agent, &a->model};
        for (size_t i = 0; i < 3; i++) {
                if (!lengths[i])
                        continue;
                memcpy(q, labels[i], lengths[i]);
                *targets[i] = q;
                q += lengths[i];
        }
        return a;
}

/* ---- the ladder ---- */

static const char *const refusal_error_names[] = {
        [REFUSAL_BUDGET] = "BudgetExhausted",     [REFUSAL_ALLOCATIONS] = "TooManyAllocations",
        [REFUSAL_SCOPES] = "TooManyScopes",       [REFUSAL_ESCALATED] = "Escalated",
        [REFUSAL_QUEUE_TIMEOUT] = "QueueTimeout", [REFUSAL_QUEUE_FULL] = "QueueFull",
        [REFUSAL_CIRCUIT_OPEN] = "CircuitOpen",   [REFUSAL_POWER_PAUSED] = "PowerPaused",
};

/* The budget a refusal names: the ledger's scope for budget refusals, else
 * the one the refusal carries. */
static const char *refusal_scope_name(const BudgetRefusal *refusal) {
        return refusal->kind == REFUSAL_BUDGET && refusal->ledger.scope
                       ? ledger_scope_name(refusal->ledger.scope)
                       : refusal->scope;
}

/* The refusal in words an admin can act on (the journal's REASON). */
static void refusal_format(const BudgetRefusal *refusal, uint64_t reservation, char *buf, size_t size) {
        const LedgerRefusal *lr = &refusal->ledger;
        const char *scope = refusal_scope_name(refusal);

        switch (refusal->kind) {
        case REFUSAL_SCOPES:
                snprintf(buf, size, "no budget can be kept for %s: limit of %" PRIu64 " reached", scope,
                         refusal->limit);
                return;
        case REFUSAL_ALLOCATIONS:
                snprintf(buf, size, "allocations in flight of %s: limit of %" PRIu64 " reached", scope,
                         refusal->limit);
                return;
        case REFUSAL_ESCALATED:
                snprintf(buf, size,
                         "%" PRIu64 " tokens is more than escalate_multiplier x max_request_tokens (%" PRIu64
                         ") of %s (%s)",
                         refusal->requested, refusal->limit, scope, refusal->escalation);
                return;
        case REFUSAL_QUEUE_FULL:
                snprintf(buf, size, "no more waiters are kept (%s: limit of %" PRIu64 ")", scope,
                         refusal->limit);
                return;
        case REFUSAL_CIRCUIT_OPEN:
                snprintf(buf, size,
                         "the runaway breaker of %s is open (%" PRIu64
                         " hard-limit breaches); retry in %" PRIu64 " ms",
                         scope, refusal->breaches, refusal->retry_after_usec / 1000);
                return;
        case REFUSAL_QUEUE_TIMEOUT:
                snprintf(buf, size,
                         "waited %" PRIu64 " ms for %s: %" PRIu64 " used + %" PRIu64 " reserved of %" PRIu64,
                         refusal->waited_usec / 1000, scope, lr->used_tokens, lr->reserved_tokens,
                         lr->limit_tokens);
                return;
        case REFUSAL_POWER_PAUSED:
                snprintf(buf, size,
                         "the power state %s pauses requests of this priority (power.policy); ask with "
                         "waitUsec to wait for it to change",
                         scope);
                return;
        case REFUSAL_BUDGET:
                break;
        }
        if (refusal->reason == REFUSE_POOL_DEGRADED)
                snprintf(buf, size,
                         "%s is in degraded mode (%" PRIu64 " used + %" PRIu64 " reserved of %" PRIu64
                         "): background requests wait or are refused",
                         scope, lr->used_tokens, lr->reserved_tokens, lr->limit_tokens);
        else if (refusal->reason == REFUSE_QUEUED_AHEAD)
                snprintf(buf, size, "requests of the same or a higher priority are waiting for %s", scope);
        else if (lr->window >= 0)
                snprintf(buf, size,
                         "%s window of %s: %" PRIu64 " used + %" PRIu64 " reserved + %" PRIu64
                         " requested > %" PRIu64,
                         ledger_window_to_string((LedgerWindow)lr->window), scope, lr->used_tokens,
                         lr->reserved_tokens, reservation, lr->limit_tokens);
        else
                snprintf(buf, size,
                         "tokens in flight of %s: %" PRIu64 " reserved + %" PRIu64 " requested > %" PRIu64,
                         scope, lr->reserved_tokens, reservation, lr->limit_tokens);
}

static void store_refused(Budget *b, Client *c, const BudgetRequest *req, uint64_t estimate);

static void emit_refused(Budget *b, Client *c, const BudgetRequest *req, uint64_t estimate, uint64_t granted,
                         uint32_t hard_permille, const BudgetRefusal *refusal, bool dry_run, uint64_t now) {
        uint64_t reservation = (granted * hard_permille + 999) / 1000;
        const char *scope = refusal_scope_name(refusal);
        char reason[1024];
        Event e = {
                .pid = c->identity.pid,
                .uid = c->identity.uid,
                .has_uid = true,
                .comm = c->identity.comm,
                .agent = req->agent,
                .task_class = req->task_class,
                .estimate = estimate,
                .has_estimate = true,
                .scope = scope,
                .decision = "refused",
                .reason = reason,
                .dry_run = dry_run,
        };

        refusal_format(refusal, reservation, reason, sizeof(reason));
        if (!dry_run)
                store_refused(b, c, req, estimate);
        journal_emit(b->journal, refusal->kind == REFUSAL_ESCALATED ? EVENT_ESCALATED : EVENT_REFUSED, &e,
                     now, "%s %" PRIu64 " tokens to %s (pid %d): %s",
                     dry_run ? "Would refuse (dry run)" : "Refused", estimate, c->identity.comm,
                     (int)c->identity.pid, reason);
}

/* The tightest limited window of a scope (or its in-flight cap), as a
 * refusal names it: for the rungs that refuse a scope with room (degraded
 * mode, waiters ahead), so the reply still says how full it is and when
 * usage leaves it. */
static void scope_snapshot(LedgerScope *s, uint64_t now, LedgerRefusal *ret) {
        const LedgerLimits *limits = ledger_scope_get_limits(s);
        uint64_t reserved = ledger_scope_reserved(s);
        unsigned best = 0;

        *ret = (LedgerRefusal){.scope = s,
                               .window = LEDGER_REFUSAL_IN_FLIGHT,
                               .reserved_tokens = reserved,
                               .limit_tokens = limits->in_flight_tokens};
        if (limits->in_flight_tokens)
                best = (unsigned)(reserved * 1000 / limits->in_flight_tokens);
        for (LedgerWindow w = 0; w < _LEDGER_WINDOW_MAX; w++) {
                uint64_t used, limit = limits->window_tokens[w];
                unsigned u;

                if (limit == 0)
                        continue;
                used = ledger_scope_window_used(s, w, now);
                u = (unsigned)((used + reserved) >= limit ? 1000 + 1 : (used + reserved) * 1000 / limit);
                if (u < best && ret->limit_tokens)
                        continue;
                best = u;
                *ret = (LedgerRefusal){
                        .scope = s,
                        .window = (int)w,
                        .limit_tokens = limit,
                        .used_tokens = used,
                        .reserved_tokens = reserved,
                        .retry_after_usec = ledger_scope_window_frees_in(s, w, now),
                };
        }
}

/* ---- the pool breaker ---- */

/* Degraded mode with hysteresis: entered at breaker.pool_threshold, left
 * below breaker.pool_release. Evaluated whenever a reservation or a
 * settlement changes the scope and when a request or Status looks at a
 * scope in degraded mode, so it also leaves when its usage ages out. Returns
 * true when it left degraded mode (waiters may go on). */
static bool pool_update(Budget *b, LedgerScope *s, uint64_t now) {
        bool degraded = ledger_scope_get_degraded(s);
        uint32_t u = ledger_scope_utilisation_permille(s, now);
        char reason[256];
        Event e = {.scope = ledger_scope_name(s), .reason = reason};

        if (!degraded && u >= b->config->pool_threshold_permille) {
                ledger_scope_set_degraded(s, true);
                b->stats.n_pool_degraded_entered++;
                snprintf(reason, sizeof(reason), "utilisation %u.%u%% reached breaker.pool_threshold %u%%",
                         u / 10, u % 10, b->config->pool_threshold_permille / 10);
                journal_emit(b->journal, EVENT_DEGRADED, &e, now,
                             "%s entered degraded mode: %s; background requests wait or are refused, normal "
                             "ones are shrunk",
                             ledger_scope_name(s), reason);
                return false;
        }
        if (degraded && u < b->config->pool_release_permille) {
                ledger_scope_set_degraded(s, false);
                snprintf(reason, sizeof(reason), "utilisation %u.%u%% fell below breaker.pool_release %u%%",
                         u / 10, u % 10, b->config->pool_release_permille / 10);
                journal_emit(b->journal, EVENT_RECOVERED, &e, now, "%s left degraded mode: %s",
                             ledger_scope_name(s), reason);
                return true;
        }
        return false;
}

void budget_scope_refresh(Budget *b, LedgerScope *s, uint64_t now) {
        /* Waiters for it are retried when their timer runs. */
        if (ledger_scope_get_degraded(s))
                (void)pool_update(b, s, now);
}

/* ---- runaway breakers ---- */

/* The breaker names of an allocation's (or a request's) entities: the
 * process (told apart from a later one with the same pid by its start
 * time), the declared agent and the declared class, within the uid. */
typedef struct EntityNames {
        char name[_ENTITY_MAX][300];
        uint64_t disc[_ENTITY_MAX];
        bool present[_ENTITY_MAX];
} EntityNames;

static void entity_names(const Client *c, const char *agent, const char *task_class, EntityNames *ret) {
        snprintf(ret->name[ENTITY_PROCESS], sizeof(ret->name[0]), "process:%d", (int)c->identity.pid);
        ret->disc[ENTITY_PROCESS] = c->identity.start_time;
        ret->present[ENTITY_PROCESS] = true;
        ret->present[ENTITY_AGENT] = agent != NULL;
        if (agent)
                snprintf(ret->name[ENTITY_AGENT], sizeof(ret->name[0]), "agent:%u:%s",
                         (unsigned)c->identity.uid, agent);
        ret->disc[ENTITY_AGENT] = 0;
        ret->present[ENTITY_CLASS] = task_class != NULL;
        if (task_class)
                snprintf(ret->name[ENTITY_CLASS], sizeof(ret->name[0]), "class:%u:%s",
                         (unsigned)c->identity.uid, task_class);
        ret->disc[ENTITY_CLASS] = 0;
}

static void emit_breaker(Budget *b, EventKind kind, const Client *c, const char *name, const char *what,
                         uint64_t now) {
        Event e = {.scope = name, .reason = what, .uid = c->identity.uid, .has_uid = true};

        journal_emit(b->journal, kind, &e, now, "Runaway breaker of %s %s", name, what);
}

/* The durable ledger keeps open and half-open breakers (written at once,
 * outside the commit point: a breaker changes rarely), and forgets closed
 * ones. */
static void store_breaker(Budget *b, const char *name, uint64_t disc, uint64_t now) {
        Breaker *br;
        int r;

        if (!b->store)
                return;
        br = breaker_find(b->breakers, name, disc);
        if (!br || breaker_state(br) == BREAKER_CLOSED)
                r = store_delete_breaker(b->store, name, disc);
        else
                r = store_put_breaker(b->store,
                                      &(StoreBreaker){
                                              .name = name,
                                              .disc = disc,
                                              .state = breaker_state_to_string(breaker_state(br)),
                                              .breaches = breaker_breaches(br, now),
                                              .cooldown_usec = breaker_cooldown(br),
                                              .until_usec = realtime_usec() + breaker_retry_after(br, now),
                                              .owner = breaker_owner(br),
                                      });
        store_failed(b, r);
}

/* The gate of the caller's breakers: the most closed one wins (an open
 * one refuses; a half-open one lets this request through as its probe).
 * *ret_probes gets the entities whose probe it would be. */
static BreakerGate breakers_gate(Budget *b, const Client *c, const EntityNames *names, uint64_t now,
                                 uint8_t *ret_probes, BudgetRefusal *ret_refusal) {
        BreakerGate gate = GATE_CLOSED;

        *ret_probes = 0;
        for (unsigned i = 0; i < _ENTITY_MAX; i++) {
                uint64_t retry = 0;
                bool changed = false;
                Breaker *br;
                BreakerGate g;

                if (!names->present[i])
                        continue;
                br = breaker_find(b->breakers, names->name[i], names->disc[i]);
                if (!br)
                        continue;
                g = breaker_gate(br, now, &retry, &changed);
                if (changed)
                        emit_breaker(b, EVENT_BREAKER_HALF_OPEN, c, names->name[i],
                                     "is half-open: its cool-down ended, one request may go through", now);
                if (g == GATE_OPEN) {
                        if (gate != GATE_OPEN) {
                                *ret_refusal = (BudgetRefusal){.kind = REFUSAL_CIRCUIT_OPEN,
                                                               .retry_after_usec = retry,
                                                               .breaches = breaker_breaches(br, now)};
                                snprintf(ret_refusal->scope, sizeof(ret_refusal->scope), "%s",
                                         names->name[i]);
                        }
                        gate = GATE_OPEN;
                } else if (g == GATE_PROBE) {
                        *ret_probes |= 1u << i;
                        if (gate == GATE_CLOSED)
                                gate = GATE_PROBE;
                }
        }
        return gate;
}

/* A breach of the hard limit counts against each of the allocation's
 * entities. */
static void breakers_breach(Budget *b, Allocation *a, uint64_t now) {
        Client *c = a->owner;
        EntityNames names;

        if (b->config->runaway_breaches == 0)
                return;
        entity_names(c, a->agent, a->task_class, &names);
        for (unsigned i = 0; i < _ENTITY_MAX; i++) {
                BreakerState state;
                bool changed = false;
                char what[160];

                if (!names.present[i])
                        continue;
                if (breaker_breach(b->breakers, names.name[i], names.disc[i], (int64_t)c->identity.uid,
                                   a->probes & (1u << i), now, &state, &changed) < 0 ||
                    !changed)
                        continue;
                b->stats.n_breakers_opened++;
                snprintf(what, sizeof(what),
                         "opened: %u hard-limit breaches within breaker.runaway_window_sec; requests are "
                         "refused "
                         "for %" PRIu64 " s",
                         breaker_breaches(breaker_find(b->breakers, names.name[i], names.disc[i]), now),
                         breaker_cooldown(breaker_find(b->breakers, names.name[i], names.disc[i])) /
                                 USEC_PER_SEC);
                emit_breaker(b, EVENT_BREAKER_OPENED, c, names.name[i], what, now);
                store_breaker(b, names.name[i], names.disc[i], now);
        }
}

/* The probe of a half-open breaker settled: within its hard limit it
 * closes the breaker (a breach already reopened it). */
static void breakers_probe_done(Budget *b, const Allocation *a, uint64_t now) {
        EntityNames names;

        if (!a->probes)
                return;
        entity_names(a->owner, a->agent, a->task_class, &names);
        for (unsigned i = 0; i < _ENTITY_MAX; i++) {
                if (!(a->probes & (1u << i)))
                        continue;
                if (breaker_probe_done(b->breakers, names.name[i], names.disc[i], a->breached, now))
                        emit_breaker(b, EVENT_BREAKER_CLOSED, a->owner, names.name[i],
                                     "closed: its probe request stayed within its hard limit", now);
                store_breaker(b, names.name[i], names.disc[i], now); /* closed, or reopened */
        }
}

/* ---- deciding ---- */

typedef struct RoomContext {
        Ledger *ledger;
        LedgerScope *const *scopes;
        size_t n;
        const LedgerParams *params;
        uint64_t now;
        LedgerRefusal refusal; /* of the last want that did not fit */
} RoomContext;

static uint64_t room_cb(uint64_t want, void *userdata) {
        RoomContext *rc = userdata;
        LedgerRefusal r = {};
        uint64_t room = ledger_room(rc->ledger, rc->scopes, rc->n, rc->params, want, rc->now, &r);

        if (room < want)
                rc->refusal = r;
        return room;
}

static const char *suggested_model(const Config *config, const char *model) {
        if (!model)
                return NULL;
        for (size_t i = 0; i + 1 < config->n_model_tiers; i++)
                if (strcmp(config->model_tiers[i], model) == 0)
                        return config->model_tiers[i + 1];
        return NULL;
}

static Allocation *allocation_link_new(Budget *b, Client *c, const BudgetRequest *req, LedgerAllocation *la,
                                       uint64_t estimate, Priority priority, const RuleEffective *eff,
                                       uint64_t now) {
        Allocation *a = allocation_new(req);

        if (!a)
                return NULL;
        a->owner = c;
        a->ledger = la;
        a->estimate = estimate;
        a->priority = priority;
        a->requested_priority =
                req->priority >= 0 && (Priority)req->priority != priority ? req->priority : -1;
        a->last_report_usec = now;
        a->on_hard_limit = eff->on_hard_limit;
        a->terminate_grace_usec = eff->terminate_grace_usec;
        ledger_allocation_set_userdata(la, a);
        LIST_PREPEND(allocations, c->allocations, a);
        c->n_allocations++;
        process_entry_allocation_added(c->process);
        b->stats.n_granted++;
        if (b->store) {
                a->granted_realtime = realtime_usec();
                store_allocation(b, a);
        }
        return a;
}

/* Degraded mode can only have been entered in the scopes a reservation
 * was just added to. */
static void pool_update_scopes(Budget *b, LedgerScope *const *scopes, size_t n, uint64_t now) {
        for (size_t i = 0; i < n; i++)
                (void)pool_update(b, scopes[i], now);
}

static const char *decision_word(const Decision *d, const BudgetRefusal *rf, uint64_t estimate) {
        switch (d->kind) {
        case DECISION_GRANT:
                return d->granted < estimate ? "degraded" : "granted";
        case DECISION_WAIT:
                return "queued";
        case DECISION_HOLD:
                return "held";
        default:
                return refusal_error_names[rf->kind];
        }
}

/* The scope a waiter waits for: the one whose room it lacks, the degraded
 * one, or the one with waiters ahead; and when to try it again if nothing
 * else happens (from the window buckets: when enough usage leaves it). */
static LedgerScope *wait_scope(Budget *b, const Decision *d, RoomContext *rc, Priority priority,
                               uint64_t *ret_retry_at) {
        *ret_retry_at = UINT64_MAX;
        /* Paused: woken when the power state changes (budget_set_power()). */
        if (d->refusal == REFUSE_POWER_PAUSED)
                return rc->scopes[0];
        if (d->refusal == REFUSE_POOL_DEGRADED) {
                for (size_t i = 0; i < rc->n; i++)
                        if (ledger_scope_get_degraded(rc->scopes[i])) {
                                LedgerRefusal snap;
                                scope_snapshot(rc->scopes[i], rc->now, &snap);
                                if (snap.retry_after_usec)
                                        *ret_retry_at = rc->now + snap.retry_after_usec;
                                return rc->scopes[i];
                        }
        }
        if (d->refusal == REFUSE_QUEUED_AHEAD) {
                for (size_t i = 0; i < rc->n; i++)
                        if (waitq_has_ahead(rc->scopes[i], priority))
                                return rc->scopes[i];
        }
        /* What must fit is the least it may get: when will that fit? */
        rc->refusal = (LedgerRefusal){};
        if (ledger_room(rc->ledger, rc->scopes, rc->n, rc->params, d->min_tokens, rc->now, &rc->refusal) >=
                    d->min_tokens ||
            !rc->refusal.scope)
                return rc->scopes[0];
        if (rc->refusal.retry_after_usec)
                *ret_retry_at = rc->now + rc->refusal.retry_after_usec;
        return (LedgerScope *)rc->refusal.scope;
}

static Ticket *ticket_new(Budget *b, Client *c, const BudgetRequest *req, uint64_t estimate, uint64_t now) {
        const char *labels[3] = {req->task_class, req->agent, req->model};
        size_t lengths[3], total = 0;
        Ticket *t;
        char *q;

        for (size_t i = 0; i < 3; i++) {
                lengths[i] = labels[i] ? strlen(labels[i]) + 1 : 0;
                total += lengths[i];
        }
        t = calloc(1, sizeof(*t) + total);
        if (!t)
                return NULL;
        t->budget = b;
        t->owner = c;
        t->req = *req;
        t->req.estimate = estimate;
        t->since = now;
        q = t->strings;
        const char **targets[3] = {&t->req.task_class, &t->req.agent, &t->req.model};
        for (size_t i = 0; i < 3; i++) {
                *targets[i] = NULL;
                if (!lengths[i])
                        continue;
                memcpy(q, labels[i], lengths[i]);
                *targets[i] = q;
                q += lengths[i];
        }
        LIST_PREPEND(tickets, c->tickets, t);
        c->n_tickets++;
        return t;
}

static void ticket_free(Budget *b, Ticket *t) {
        Client *c = t->owner;

        if (t->waiter) {
                waitq_remove(b->queue, t->waiter);
                LIST_REMOVE(queued, b->queued, t);
        }
        if (t->held_now) {
                LIST_REMOVE(held, b->held, t);
                b->n_held--;
        }
        LIST_REMOVE(tickets, c->tickets, t);
        c->n_tickets--;
        free(t);
}

/* Whether another waiter may be kept for uid. */
static bool queue_has_room(Budget *b, const Client *c, BudgetRefusal *ret_refusal) {
        size_t total = waitq_size(b->queue) + b->n_held;

        if (total >= b->config->queue_max_waiters) {
                *ret_refusal =
                        (BudgetRefusal){.kind = REFUSAL_QUEUE_FULL, .limit = b->config->queue_max_waiters};
                snprintf(ret_refusal->scope, sizeof(ret_refusal->scope), "queue");
                return false;
        }
        /* Admins are held to the total only, as for tracked scopes. Held
         * requests count as the uid's waiters too (a short list, bounded by
         * the total). */
        if (!identity_is_admin(&c->identity)) {
                size_t n = waitq_uid_count(b->queue, c->identity.uid);

                for (const Ticket *t = b->held; t; t = t->held_next)
                        n += t->owner->identity.uid == c->identity.uid;
                if (n < b->config->queue_max_waiters_per_uid)
                        return true;
                *ret_refusal = (BudgetRefusal){.kind = REFUSAL_QUEUE_FULL,
                                               .limit = b->config->queue_max_waiters_per_uid};
                snprintf(ret_refusal->scope, sizeof(ret_refusal->scope), "queue:%u",
                         (unsigned)c->identity.uid);
                return false;
        }
        return true;
}

/* The condition that pauses priority p: the most severe active one whose factor is pause. */
static PowerState power_paused_by(const Budget *b, Priority p) {
        for (int st = _POWER_STATE_MAX - 1; st > POWER_AC; st--)
                if ((b->power_conditions & (1u << st)) &&
                    b->config->power.factor[st][p] == POWER_FACTOR_PAUSE)
                        return (PowerState)st;
        return power_state(b->power_conditions); /* paused in every state (policy.ac) */
}

/*
 * One pass of the ladder for a new request (t NULL), a queued one retried,
 * or one an admin approved. Returns 0 (granted: *ret, *ret_grant), -EDQUOT
 * (*ret_refusal), -EINPROGRESS (queued or held: the new ticket in
 * *ret_ticket, or t kept with its waiter moved to the scope it now waits
 * for), -ENOMEM.
 */
/* What a Request reserves and its hard multiplier (issue 13, points 2 and 3):
 * with estimate_source "learned" or "max" and a class that has
 * estimate_min_samples, the learned prediction (prompt + predicted output,
 * or the learned total), never below estimate_floor x the Request's own
 * estimate when it gave one; "learned" takes it, "max" takes it when it is
 * the larger. Reserving the learned value, the hard limit is the class's:
 * the input part plus ratio_q (the spread_quantile of actual / predicted
 * output) x the predicted output, as a multiple of the reservation, between
 * warn_multiplier and 2.5 (a class whose spread is not known yet keeps the
 * configured one). Returns whether the learned value is reserved. */
#define ADAPTIVE_HARD_MAX_PERMILLE 2500u
static bool learned_estimate(const RuleEffective *eff, const EstimatorPrediction *pred, uint64_t client,
                             bool client_given, uint64_t *estimate, uint32_t *hard_permille) {
        uint64_t learned = pred->predicted_total, floor = 0;
        double limit, m;

        if (eff->estimate_source == ESTIMATE_CLIENT || pred->samples < eff->estimate_min_samples)
                return false;
        if (client_given)
                floor = (client * eff->estimate_floor_permille + 999) / 1000;
        if (learned < floor)
                learned = floor;
        if (learned == 0)
                learned = 1;
        if (eff->estimate_source == ESTIMATE_MAX && learned <= client)
                return false;
        *estimate = learned;
        if (pred->ratio_q > 0.0) {
                limit = (double)(pred->predicted_total - pred->predicted_output) +
                        pred->ratio_q * (double)pred->predicted_output;
                m = ceil(1000.0 * limit / (double)learned);
                m = fmin(m, ADAPTIVE_HARD_MAX_PERMILLE);
                /* At least warn_multiplier (which may itself be above 2.5). */
                *hard_permille = m > eff->warn_permille ? (uint32_t)m : eff->warn_permille;
        }
        return true;
}

static int evaluate(Budget *b, Client *c, const BudgetRequest *req, Ticket *t, uint64_t now,
                    Allocation **ret, BudgetGrant *ret_grant, BudgetRefusal *ret_refusal,
                    Ticket **ret_ticket) {
        uint64_t client_estimate = req->estimate ?: b->config->default_estimate;
        uint64_t estimate = client_estimate;
        bool estimate_given = t ? t->estimate_given : req->estimate != 0, learned = false;
        char class_buf[ESTIMATOR_NAME_MAX + 1];
        const char *cls;
        EstimatorPrediction pred;
        bool has_pred;
        uint32_t hard_permille;
        const RuleEffective *eff;
        LedgerScope *const *scopes;
        LedgerParams params;
        LedgerAllocation *la;
        ScopeFailure failure;
        Priority priority;
        EntityNames names;
        Decision d;
        Allocation *a;
        uint8_t probes = 0;
        unsigned power;
        bool dry_run, retry = t && t->waiter;
        size_t n;
        int r;

        *ret_grant = (BudgetGrant){};
        /* Built at the first Request: a connection that only looks costs nothing. */
        if (!c->chain) {
                c->chain = scope_chain_new(b->scopes, &c->principal, process_entry_scope(c->process),
                                           identity_is_admin(&c->identity));
                if (!c->chain)
                        return -ENOMEM;
        }
        r = scope_chain_resolve(b->scopes, c->chain, req->agent, now, &scopes, &n, &eff, &failure);
        if (r == -EUSERS || r == -ETOOMANYREFS || r == -E2BIG) {
                *ret_refusal = (BudgetRefusal){.kind = REFUSAL_SCOPES, .limit = failure.limit};
                snprintf(ret_refusal->scope, sizeof(ret_refusal->scope), "%s", failure.scope);
                b->stats.n_refused++;
                emit_refused(b, c, req, estimate, 0, 0, ret_refusal, false, now);
                return -EDQUOT;
        }
        if (r < 0)
                return r;
        if (process_entry_n_allocations(c->process) >= b->config->max_allocations_per_process) {
                *ret_refusal = (BudgetRefusal){.kind = REFUSAL_ALLOCATIONS,
                                               .limit = b->config->max_allocations_per_process};
                snprintf(ret_refusal->scope, sizeof(ret_refusal->scope), "%s",
                         ledger_scope_name(process_entry_scope(c->process)));
                b->stats.n_refused++;
                emit_refused(b, c, req, estimate, 0, 0, ret_refusal, false, now);
                return -EDQUOT;
        }
        dry_run = !eff->enforce;
        /* A priority above the rule's ceiling gets the ceiling (a greater
         * value is a lower priority). */
        priority = req->priority >= 0 ? (Priority)req->priority : eff->priority;
        if (priority < eff->max_priority)
                priority = eff->max_priority;
        power = b->power_factor[priority];
        cls = estimator_class(c, req->task_class, req->agent, class_buf);
        has_pred = cls && estimator_predict(b->estimator, (uint32_t)c->identity.uid, cls, req->prompt_tokens,
                                            &pred);
        hard_permille = eff->hard_permille;
        if (has_pred)
                learned = learned_estimate(eff, &pred, client_estimate, estimate_given, &estimate,
                                           &hard_permille);
        params = (LedgerParams){.warn_permille = eff->warn_permille,
                                .hard_permille = hard_permille,
                                .limit_permille = power};
        ret_grant->power_state = power_state(b->power_conditions);
        ret_grant->power_factor = power;

        DecideInput in = {
                .estimate = estimate,
                .min_tokens = req->min_tokens,
                .wait_usec = req->wait_usec,
                .priority = priority,
                .max_request_tokens = eff->max_request_tokens,
                .escalate_permille = eff->escalate_permille,
                .on_escalate = eff->on_escalate,
                .approved = t && t->approved,
                .approved_tokens = t && t->approved ? t->approved_tokens : 0,
                .retry = retry,
                .power_paused = power == POWER_FACTOR_PAUSE,
                .power_permille = power,
        };
        if (breaker_table_size(b->breakers) > 0) {
                entity_names(c, req->agent, req->task_class, &names);
                in.gate = breakers_gate(b, c, &names, now, &probes, ret_refusal);
        }
        for (size_t i = 0; i < n; i++)
                if (ledger_scope_get_degraded(scopes[i]) && !pool_update(b, scopes[i], now)) {
                        in.pool_degraded = true;
                        break;
                }
        if (!retry && waitq_size(b->queue) > 0)
                for (size_t i = 0; i < n && !in.queued_ahead; i++)
                        in.queued_ahead = waitq_has_ahead(scopes[i], priority);

        RoomContext rc = {.ledger = b->ledger, .scopes = scopes, .n = n, .params = &params, .now = now};
        decide(&in, room_cb, &rc, &d);

        /* The refusal, when it is one, in full (also for a dry run, which reports it). */
        if (d.kind == DECISION_REFUSE || d.kind == DECISION_HOLD) {
                if (d.refusal == REFUSE_CIRCUIT_OPEN)
                        ; /* filled by breakers_gate() */
                else if (d.refusal == REFUSE_POWER_PAUSED && d.kind == DECISION_REFUSE) {
                        *ret_refusal = (BudgetRefusal){.kind = REFUSAL_POWER_PAUSED, .reason = d.refusal};
                        snprintf(ret_refusal->scope, sizeof(ret_refusal->scope), "%s",
                                 power_state_to_string(power_paused_by(b, priority)));
                } else if (d.refusal == REFUSE_ESCALATED || d.kind == DECISION_HOLD) {
                        *ret_refusal = (BudgetRefusal){.kind = REFUSAL_ESCALATED,
                                                       .requested = estimate,
                                                       .limit = eff->max_request_tokens,
                                                       .escalation = "policy"};
                        if (eff->cap_rule >= 0)
                                snprintf(ret_refusal->scope, sizeof(ret_refusal->scope), "rule:%s",
                                         rule_set_rule(scope_table_rules(b->scopes), (size_t)eff->cap_rule)
                                                 ->name);
                        else
                                snprintf(ret_refusal->scope, sizeof(ret_refusal->scope), "global");
                } else {
                        LedgerRefusal lr = rc.refusal;
                        if (d.refusal == REFUSE_POOL_DEGRADED || d.refusal == REFUSE_QUEUED_AHEAD) {
                                for (size_t i = 0; i < n; i++)
                                        if (d.refusal == REFUSE_POOL_DEGRADED
                                                    ? ledger_scope_get_degraded(scopes[i])
                                                    : waitq_has_ahead(scopes[i], priority)) {
                                                scope_snapshot(scopes[i], now, &lr);
                                                break;
                                        }
                        }
                        *ret_refusal =
                                (BudgetRefusal){.kind = REFUSAL_BUDGET, .reason = d.refusal, .ledger = lr};
                        if (lr.window == LEDGER_REFUSAL_ALLOCATIONS && d.refusal == REFUSE_BUDGET) {
                                ret_refusal->kind = REFUSAL_ALLOCATIONS;
                                ret_refusal->limit = lr.limit_tokens;
                        }
                        if (lr.scope)
                                snprintf(ret_refusal->scope, sizeof(ret_refusal->scope), "%s",
                                         ledger_scope_name(lr.scope));
                }
        }

        if (dry_run) {
                /* Decided as enforcing would, reported, and granted in full. */
                ret_grant->dry_run = true;
                ret_grant->would_be = decision_word(&d, ret_refusal, estimate);
                ret_grant->would_be_reason =
                        d.kind == DECISION_GRANT ? decision_reason_to_string(d.reason)
                        : d.kind == DECISION_REFUSE && ret_refusal->kind == REFUSAL_ESCALATED
                                ? "policy"
                                : refusal_reason_to_string(d.refusal);
                if (d.kind != DECISION_GRANT || d.granted < estimate) {
                        b->stats.n_dry_run_overrides++;
                        if (d.kind == DECISION_REFUSE)
                                emit_refused(b, c, req, estimate, d.target, params.hard_permille,
                                             ret_refusal, true, now);
                }
                if (estimate >= LEDGER_TOKENS_MAX)
                        estimate = LEDGER_TOKENS_MAX - 1;
                r = ledger_reserve_unchecked(b->ledger, scopes, n, estimate, &params, now, &la);
                if (r < 0)
                        return r;
                a = allocation_link_new(b, c, req, la, estimate, priority, eff, now);
                if (!a) {
                        (void)ledger_settle(b->ledger, la, 0, 0, now, NULL, NULL);
                        return -ENOMEM;
                }
                a->dry_run = true;
                a->probes = probes;
                for (unsigned i = 0; i < _ENTITY_MAX; i++)
                        if (probes & (1u << i))
                                breaker_probe_started(
                                        breaker_find(b->breakers, names.name[i], names.disc[i]));
                goto granted;
        }

        switch (d.kind) {
        case DECISION_GRANT:
        default:
                break;
        case DECISION_REFUSE:
                b->stats.n_refused++;
                if (ret_refusal->kind == REFUSAL_ESCALATED)
                        b->stats.n_escalated++;
                if (ret_refusal->kind == REFUSAL_POWER_PAUSED)
                        b->stats.n_power_paused++;
                emit_refused(b, c, req, estimate, d.target, params.hard_permille, ret_refusal, false, now);
                return -EDQUOT;
        case DECISION_HOLD:
                if (!queue_has_room(b, c, ret_refusal)) {
                        b->stats.n_refused++;
                        return -EDQUOT;
                }
                t = ticket_new(b, c, req, client_estimate, now);
                if (!t)
                        return -ENOMEM;
                t->estimate_given = estimate_given;
                t->priority = priority;
                t->id = b->next_ticket_id++;
                t->deadline = now + b->config->escalation_timeout_usec;
                t->cap = eff->max_request_tokens;
                snprintf(t->cap_scope, sizeof(t->cap_scope), "%s", ret_refusal->scope);
                LIST_APPEND(held, b->held, t);
                t->held_now = true;
                b->n_held++;
                b->stats.n_held++;
                {
                        char reason[1024];
                        Event e = {.pid = c->identity.pid,
                                   .uid = c->identity.uid,
                                   .has_uid = true,
                                   .comm = c->identity.comm,
                                   .agent = req->agent,
                                   .task_class = req->task_class,
                                   .estimate = estimate,
                                   .has_estimate = true,
                                   .scope = t->cap_scope,
                                   .decision = "held",
                                   .reason = reason};
                        snprintf(reason, sizeof(reason),
                                 "%" PRIu64 " tokens is more than %u.%03u x max_request_tokens %" PRIu64
                                 " of %s; held as request %" PRIu64 " for an admin (budgetctl approve/deny)",
                                 estimate, eff->escalate_permille / 1000, eff->escalate_permille % 1000,
                                 eff->max_request_tokens, t->cap_scope, t->id);
                        journal_emit(b->journal, EVENT_ESCALATED, &e, now,
                                     "Held a request of %s (pid %d): %s", c->identity.comm,
                                     (int)c->identity.pid, reason);
                }
                *ret_ticket = t;
                return -EINPROGRESS;
        case DECISION_WAIT: {
                uint64_t retry_at;
                LedgerScope *s = wait_scope(b, &d, &rc, priority, &retry_at);

                if (retry) {
                        if (waiter_scope(t->waiter) == s)
                                waitq_set_retry(b->queue, t->waiter, retry_at);
                        else if (waitq_move(b->queue, t->waiter, s, retry_at) < 0)
                                return -ENOMEM;
                        return -EINPROGRESS;
                }
                if (!queue_has_room(b, c, ret_refusal)) {
                        b->stats.n_refused++;
                        emit_refused(b, c, req, estimate, d.target, params.hard_permille, ret_refusal, false,
                                     now);
                        return -EDQUOT;
                }
                if (!t) {
                        t = ticket_new(b, c, req, client_estimate, now);
                        if (!t)
                                return -ENOMEM;
                        t->estimate_given = estimate_given;
                }
                t->priority = priority;
                t->deadline = now + (req->wait_usec < b->config->queue_max_wait_usec
                                             ? req->wait_usec
                                             : b->config->queue_max_wait_usec);
                if (waitq_add(b->queue, s, priority, c->identity.uid, t->deadline, retry_at, t, &t->waiter) <
                    0) {
                        ticket_free(b, t);
                        return -ENOMEM;
                }
                LIST_PREPEND(queued, b->queued, t);
                b->stats.n_queued++;
                if (d.refusal == REFUSE_POWER_PAUSED)
                        b->stats.n_power_paused++;
                *ret_ticket = t;
                return -EINPROGRESS;
        }
        }

        /* decide() granted only what ledger_room() said fits every scope:
         * checking every limit again would be a second pass for nothing. */
        r = ledger_reserve_unchecked(b->ledger, scopes, n, d.granted, &params, now, &la);
        if (r < 0)
                return r;
        a = allocation_link_new(b, c, req, la, estimate, priority, eff, now);
        if (!a) {
                (void)ledger_settle(b->ledger, la, 0, 0, now, NULL, NULL);
                return -ENOMEM;
        }
        a->probes = probes;
        for (unsigned i = 0; i < _ENTITY_MAX; i++)
                if (probes & (1u << i))
                        breaker_probe_started(breaker_find(b->breakers, names.name[i], names.disc[i]));
        ret_grant->reason = d.reason;
        if (d.granted < estimate)
                b->stats.n_degraded++;
        pool_update_scopes(b, scopes, n, now);

granted:
        budget_changed(b);
        {
                uint64_t granted = ledger_allocation_granted(a->ledger);

                ret_grant->suggested_max_tokens =
                        req->prompt_tokens < granted ? granted - req->prompt_tokens : 1;
                ret_grant->learned = learned;
                ret_grant->hard_permille = hard_permille;
                if (has_pred) {
                        ret_grant->has_prediction = true;
                        ret_grant->predicted = pred.predicted_total;
                        ret_grant->predicted_output = pred.predicted_output;
                        ret_grant->samples = pred.samples;
                }
                if (granted < estimate || ret_grant->dry_run)
                        ret_grant->suggested_model =
                                granted < estimate || (ret_grant->would_be &&
                                                       strcmp(ret_grant->would_be, "degraded") == 0)
                                        ? suggested_model(b->config, req->model)
                                        : NULL;
                /* Granted events are the hot path: not even formatted unless asked for. */
                if (b->config->journal_log_granted) {
                        char id[17];
                        allocation_format_id(a, id);
                        emit_allocation(
                                b, EVENT_GRANTED, a, now, granted < estimate ? "degraded" : "granted",
                                decision_reason_to_string(ret_grant->reason),
                                "Granted %" PRIu64 " of %" PRIu64 " tokens to %s (pid %d) as allocation %s",
                                granted, estimate, c->identity.comm, (int)c->identity.pid, id);
                }
        }
        *ret = a;
        return 0;
}

/* ---- deferred answers ---- */

static void wake_update(Budget *b) {
        uint64_t when = waitq_next_wake(b->queue);

        for (Ticket *t = b->held; t; t = t->held_next)
                if (t->deadline < when)
                        when = t->deadline;
        if (when != b->wake_armed && b->wake) {
                b->wake_armed = when;
                b->wake(b->hooks_userdata, when);
        }
}

/* Answers a ticket and frees it. */
static void ticket_complete(Budget *b, Ticket *t, int r, Allocation *a, BudgetGrant *grant,
                            const BudgetRefusal *refusal, uint64_t now) {
        TicketDoneFunc done = t->done;
        void *userdata = t->userdata;

        if (grant) {
                grant->deferred = true;
                grant->waited_usec = now - t->since;
        }
        ticket_free(b, t);
        if (done)
                done(userdata, r, a, grant, refusal);
}

void ticket_set_done(Ticket *t, TicketDoneFunc done, void *userdata) {
        t->done = done;
        t->userdata = userdata;
        wake_update(t->budget);
}

void ticket_cancel(Ticket *t) {
        Budget *b = t->budget;

        ticket_free(b, t);
        wake_update(b);
}

/* Tries a queued ticket again; returns whether it left scope s (answered,
 * or moved to wait for another scope). */
static bool ticket_retry(Budget *b, Ticket *t, const LedgerScope *s, uint64_t now) {
        BudgetGrant grant;
        BudgetRefusal refusal;
        Allocation *a = NULL;
        int r;

        r = evaluate(b, t->owner, &t->req, t, now, &a, &grant, &refusal, NULL);
        if (r == -EINPROGRESS)
                return waiter_scope(t->waiter) != s;
        ticket_complete(b, t, r, a, r == 0 ? &grant : NULL, r == -EDQUOT ? &refusal : NULL, now);
        return true;
}

/* Something freed room in scope s (a release, a refund, a limit raised, the
 * end of degraded mode): its head waiters go first, as long as they fit. */
static void scope_kick(Budget *b, LedgerScope *s, uint64_t now) {
        Waiter *w;

        while ((w = waitq_head(s)))
                if (!ticket_retry(b, waiter_userdata(w), s, now))
                        break;
}

static void queue_timeout(Budget *b, Ticket *t, uint64_t now) {
        LedgerScope *s = waiter_scope(t->waiter);
        BudgetRefusal refusal = {.kind = REFUSAL_QUEUE_TIMEOUT, .waited_usec = now - t->since};

        scope_snapshot(s, now, &refusal.ledger);
        snprintf(refusal.scope, sizeof(refusal.scope), "%s", ledger_scope_name(s));
        b->stats.n_queue_timeouts++;
        b->stats.n_refused++;
        emit_refused(b, t->owner, &t->req, t->req.estimate, t->req.estimate, 1000, &refusal, false, now);
        ticket_complete(b, t, -EDQUOT, NULL, NULL, &refusal, now);
}

static void held_decided(Budget *b, Ticket *t, const char *decision, uint64_t now) {
        char reason[1024];
        Event e = {.pid = t->owner->identity.pid,
                   .uid = t->owner->identity.uid,
                   .has_uid = true,
                   .comm = t->owner->identity.comm,
                   .agent = t->req.agent,
                   .task_class = t->req.task_class,
                   .estimate = t->req.estimate,
                   .has_estimate = true,
                   .scope = t->cap_scope,
                   .decision = decision,
                   .reason = reason};

        snprintf(reason, sizeof(reason), "held request %" PRIu64 " %s after %" PRIu64 " ms", t->id,
                 strcmp(decision, "timeout") == 0 ? "timed out (escalation.timeout_sec)"
                 : strcmp(decision, "shutdown") == 0
                         ? "refused: the daemon is stopping (held requests are not kept across a restart)"
                         : decision,
                 (now - t->since) / 1000);
        journal_emit(b->journal, EVENT_ESCALATED, &e, now, "%s (%s, pid %d)", reason,
                     t->owner->identity.comm, (int)t->owner->identity.pid);
}

void budget_deny(Budget *b, Ticket *t, uint64_t now) {
        BudgetRefusal refusal = {.kind = REFUSAL_ESCALATED,
                                 .requested = t->req.estimate,
                                 .limit = t->cap,
                                 .escalation = now >= t->deadline ? "timeout" : "denied"};

        snprintf(refusal.scope, sizeof(refusal.scope), "%s", t->cap_scope);
        held_decided(b, t, refusal.escalation, now);
        b->stats.n_refused++;
        b->stats.n_escalated++;
        ticket_complete(b, t, -EDQUOT, NULL, NULL, &refusal, now);
        wake_update(b);
}

void budget_refuse_held(Budget *b, uint64_t now) {
        while (b->held) {
                Ticket *t = b->held;
                BudgetRefusal refusal = {.kind = REFUSAL_ESCALATED,
                                         .requested = t->req.estimate,
                                         .limit = t->cap,
                                         .escalation = "shutdown"};

                snprintf(refusal.scope, sizeof(refusal.scope), "%s", t->cap_scope);
                held_decided(b, t, "shutdown", now);
                b->stats.n_refused++;
                b->stats.n_escalated++;
                ticket_complete(b, t, -EDQUOT, NULL, NULL, &refusal, now);
        }
        wake_update(b);
}

void budget_approve(Budget *b, Ticket *t, uint64_t tokens, uint64_t now) {
        BudgetGrant grant;
        BudgetRefusal refusal;
        Allocation *a = NULL;
        Ticket *queued = NULL;
        int r;

        held_decided(b, t, "approved", now);
        LIST_REMOVE(held, b->held, t);
        t->held_now = false;
        b->n_held--;
        t->approved = true;
        t->approved_tokens = tokens == 0 || tokens > t->req.estimate ? t->req.estimate : tokens;
        r = evaluate(b, t->owner, &t->req, t, now, &a, &grant, &refusal, &queued);
        if (r != -EINPROGRESS)
                ticket_complete(b, t, r, a, r == 0 ? &grant : NULL, r == -EDQUOT ? &refusal : NULL, now);
        wake_update(b);
}

void budget_wake(Budget *b, uint64_t now) {
        Waiter *w;
        Ticket *next;

        /* The timer fired: nothing is armed now, whatever comes next. */
        b->wake_armed = UINT64_MAX - 1;

        while ((w = waitq_due(b->queue, now))) {
                Ticket *t = waiter_userdata(w);

                if (waiter_deadline(w) <= now)
                        queue_timeout(b, t, now);
                else
                        (void)ticket_retry(b, t, waiter_scope(w), now);
        }
        for (Ticket *t = b->held; t; t = next) {
                next = t->held_next;
                if (t->deadline <= now)
                        budget_deny(b, t, now);
        }
        wake_update(b);
}

/* Limits changed (SetLimits, a reload): every waiter is tried again. */
void budget_retry_all(Budget *b, uint64_t now) {
        for (Ticket *t = b->queued; t; t = t->queued_next)
                waitq_set_retry(b->queue, t->waiter, now);
        budget_wake(b, now);
}

int budget_request(Budget *b, Client *c, const BudgetRequest *req, uint64_t now, Allocation **ret,
                   BudgetGrant *ret_grant, BudgetRefusal *ret_refusal, Ticket **ret_ticket) {
        /* Readings not taken while idle are taken now (the hook reads them
         * only when older than power.poll_sec, and calls budget_set_power()). */
        if (b->refresh)
                b->refresh(b->refresh_userdata, now);
        return evaluate(b, c, req, NULL, now, ret, ret_grant, ret_refusal, ret_ticket);
}

Ticket *budget_next_held(const Budget *b, const Ticket *t) {
        return t ? t->held_next : b->held;
}

Ticket *budget_find_held(const Budget *b, const char *id) {
        uint64_t v;
        char *end;

        if (!id || *id < '0' || *id > '9')
                return NULL;
        errno = 0;
        v = strtoull(id, &end, 10);
        if (errno || *end)
                return NULL;
        for (Ticket *t = b->held; t; t = t->held_next)
                if (t->id == v)
                        return t;
        return NULL;
}

uint64_t ticket_id(const Ticket *t) {
        return t->id;
}

const Identity *ticket_identity(const Ticket *t) {
        return &t->owner->identity;
}

const BudgetRequest *ticket_request(const Ticket *t) {
        return &t->req;
}

Priority ticket_priority(const Ticket *t) {
        return t->priority;
}

uint64_t ticket_since(const Ticket *t) {
        return t->since;
}

uint64_t ticket_deadline(const Ticket *t) {
        return t->deadline;
}

uint64_t ticket_cap(const Ticket *t) {
        return t->cap;
}

const char *ticket_scope(const Ticket *t) {
        return t->cap_scope;
}

size_t budget_n_waiters(const Budget *b) {
        return waitq_size(b->queue);
}

size_t budget_n_held(const Budget *b) {
        return b->n_held;
}

const BreakerTable *budget_breakers(const Budget *b) {
        return b->breakers;
}

const EstimatorTable *budget_estimator(const Budget *b) {
        return b->estimator;
}

size_t budget_scope_waiters(const LedgerScope *s) {
        return waitq_scope_count(s);
}

bool budget_enforcing(const Budget *b) {
        return b->config->enforce;
}

/* ---- power ---- */

/* "on battery, 43.2%, 61.5 °C (x86_pkg_temp), memory pressure 0.0%": the readings, in words. */
static void power_readings_format(const PowerReadings *r, char *buf, size_t size) {
        char n[24];
        size_t len;

        len = (size_t)snprintf(buf, size, "%s", r->on_ac ? "on AC" : "on battery");
        if (r->battery_permille != POWER_UNKNOWN && len < size)
                len += (size_t)snprintf(buf + len, size - len, ", battery %s%%",
                                        power_format_fixed(n, r->battery_permille, 1));
        if (r->temperature_mc != POWER_UNKNOWN && len < size)
                len += (size_t)snprintf(buf + len, size - len, ", %s °C (%s)",
                                        power_format_fixed(n, r->temperature_mc / 100, 1), r->sensor);
        if (r->pressure_cp != POWER_UNKNOWN && len < size)
                (void)snprintf(buf + len, size - len, ", memory pressure %s%%",
                               power_format_fixed(n, r->pressure_cp, 2));
}

/* "background paused, normal x0.5" (empty when every factor is 1.0). */
static void power_factors_format(const unsigned factor[_PRIORITY_MAX], char *buf, size_t size) {
        size_t len = 0;

        buf[0] = '\0';
        for (int p = _PRIORITY_MAX - 1; p >= 0 && len < size; p--) {
                char n[24];

                if (factor[p] >= POWER_FACTOR_ONE)
                        continue;
                if (factor[p] == POWER_FACTOR_PAUSE)
                        len += (size_t)snprintf(buf + len, size - len, "%s%s paused", len ? ", " : "",
                                                priority_to_string((Priority)p));
                else
                        len += (size_t)snprintf(buf + len, size - len, "%s%s x%s", len ? ", " : "",
                                                priority_to_string((Priority)p),
                                                power_format_fixed(n, factor[p], 3));
        }
}

bool budget_set_power(Budget *b, const PowerReadings *r, uint64_t now) {
        unsigned before = b->power_conditions, after;
        PowerState was = power_state(before), is;

        b->power_readings = *r;
        after = power_conditions(&b->config->power, r, before);
        if (after == before) {
                power_factors_update(b); /* a reload may have changed them */
                return false;
        }
        b->power_conditions = after;
        power_factors_update(b);
        is = power_state(after);
        if (is != was)
                b->power_since = now;
        b->stats.n_power_changes++;
        {
                char readings[256], factors[128], reason[512];
                Event e = {.power = r,
                           .power_state = power_state_to_string(is),
                           .power_previous = power_state_to_string(was),
                           .reason = reason};

                power_readings_format(r, readings, sizeof(readings));
                power_factors_format(b->power_factor, factors, sizeof(factors));
                snprintf(reason, sizeof(reason), "%s; %s", readings,
                         *factors ? factors : "nothing scaled or paused");
                journal_emit(b->journal, EVENT_POWER_CHANGED, &e, now, "Power state %s (was %s): %s",
                             power_state_to_string(is), power_state_to_string(was), reason);
        }
        budget_changed(b);
        /* A priority may go on, or get more: every waiter is tried again. */
        budget_retry_all(b, now);
        return true;
}

void budget_power(const Budget *b, BudgetPower *ret) {
        *ret = (BudgetPower){
                .state = power_state(b->power_conditions),
                .conditions = b->power_conditions,
                .readings = &b->power_readings,
                .since_usec = b->power_since,
        };
}

unsigned budget_power_factor(const Budget *b, Priority p) {
        return b->power_factor[p];
}

bool budget_busy(const Budget *b) {
        return ledger_scope_n_allocations(scope_table_global(b->scopes)) > 0 || waitq_size(b->queue) > 0 ||
               b->n_held > 0;
}

Allocation *budget_client_find(Budget *b, const Client *c, const char *id) {
        LedgerAllocation *la;
        Allocation *a;
        uint64_t v;

        if (allocation_id_parse(id, &v) < 0)
                return NULL;
        la = ledger_find(b->ledger, v);
        a = la ? ledger_allocation_get_userdata(la) : NULL;
        /* A proxy's connection reports for the processes it asked for. */
        return a && (a->owner == c || a->owner->delegator == c) ? a : NULL;
}

/* A total lower than the last one reported is an error naming the field. */
static const char *decreased_field(const LedgerAllocation *la, uint64_t input, uint64_t output) {
        if (input < ledger_allocation_input_tokens(la))
                return "inputTokens";
        if (output < ledger_allocation_output_tokens(la))
                return "outputTokens";
        return NULL;
}

static void breakers_breach(Budget *b, Allocation *a, uint64_t now);

/* The first report at or past the hard limit: a breach for the runaway
 * breakers, and the rule's on_hard_limit. */
static void allocation_breached(Budget *b, Allocation *a, uint64_t now) {
        const Identity *id = &a->owner->identity;
        char sid[17];

        a->breached = true;
        breakers_breach(b, a, now);
        if (a->on_hard_limit != HARD_LIMIT_TERMINATE)
                return;
        allocation_format_id(a, sid);
        if (a->dry_run) {
                emit_allocation(b, EVENT_TERMINATED, a, now, "would-terminate",
                                "on_hard_limit = \"terminate\"",
                                "Would stop %s (pid %d) for allocation %s at its hard limit (dry run)",
                                id->comm, (int)id->pid, sid);
                return;
        }
        if (!b->terminate)
                return;
        a->terminating = true;
        b->stats.n_terminated++;
        b->terminate(b->hooks_userdata, id->pid, id->start_time, id->uid, a->terminate_grace_usec);
}

bool allocation_terminating(const Allocation *a) {
        return a->terminating;
}

int budget_report(Budget *b, Allocation *a, uint64_t input_tokens, uint64_t output_tokens, uint64_t now,
                  LedgerState *ret_state, const char **ret_bad) {
        LedgerState before = ledger_allocation_state(a->ledger);
        uint64_t used = ledger_allocation_used(a->ledger);

        *ret_bad = decreased_field(a->ledger, input_tokens, output_tokens);
        if (*ret_bad)
                return -ERANGE;
        if (ledger_report(b->ledger, a->ledger, input_tokens, output_tokens, now, ret_state) < 0) {
                *ret_bad = "inputTokens";
                return -ERANGE;
        }
        a->last_report_usec = now;
        if (b->store && ledger_allocation_used(a->ledger) != used) {
                store_usage(b, a, ledger_allocation_used(a->ledger) - used, realtime_usec());
                store_failed(b, store_put_allocation_usage(b->store, ledger_allocation_id(a->ledger),
                                                           ledger_allocation_input_tokens(a->ledger),
                                                           ledger_allocation_output_tokens(a->ledger)));
        }
        emit_crossing(b, a, before, *ret_state, now);
        if (*ret_state == LEDGER_STATE_EXCEEDED && !a->breached)
                allocation_breached(b, a, now);
        return 0;
}

int budget_release(Budget *b, Allocation *a, const uint64_t *input_tokens, const uint64_t *output_tokens,
                   uint64_t now, uint64_t *ret_used, uint64_t *ret_refunded, const char **ret_bad) {
        uint64_t input = input_tokens ? *input_tokens : ledger_allocation_input_tokens(a->ledger);
        uint64_t output = output_tokens ? *output_tokens : ledger_allocation_output_tokens(a->ledger);
        LedgerState state;
        int r;

        /* Final totals can cross a threshold too: say so before the allocation is gone. */
        r = budget_report(b, a, input, output, now, &state, ret_bad);
        if (r < 0)
                return r;
        if (!a->terminating)
                estimator_learn(b, a, input, output, now);
        r = allocation_settle(b, a, input, output, STORE_OUTCOME_RELEASED, now, ret_used, ret_refunded);
        if (r < 0)
                *ret_bad = "inputTokens";
        return r;
}

/* Allocations with no report for limits.allocation_idle_timeout_sec are
 * settled at what they reported: a stuck agent must not hold its
 * reservation, and so other agents' budget, forever. */
void budget_expire(Budget *b, uint64_t now) {
        LedgerAllocation *next;

        for (LedgerAllocation *la = ledger_next(b->ledger, NULL); la; la = next) {
                Allocation *a = ledger_allocation_get_userdata(la);

                next = ledger_next(b->ledger, la);
                if (now - a->last_report_usec >= b->config->allocation_idle_timeout_usec)
                        allocation_settle_unreleased(b, a, SETTLE_EXPIRED, now);
        }
}

/* ---- what the admin interface and STATUS= show ---- */

static unsigned permille(uint64_t part, uint64_t whole) {
        if (whole == 0)
                return 0;
        return part >= whole ? 1000 : (unsigned)(part * 1000 / whole);
}

unsigned budget_global_utilisation_permille(const Budget *b, uint64_t now) {
        LedgerScope *global = scope_table_global(b->scopes);
        const LedgerLimits *limits = ledger_scope_get_limits(global);
        uint64_t reserved = ledger_scope_reserved(global);
        unsigned worst = permille(reserved, limits->in_flight_tokens);

        for (LedgerWindow w = 0; w < _LEDGER_WINDOW_MAX; w++) {
                unsigned u;
                if (limits->window_tokens[w] == 0)
                        continue;
                u = permille(ledger_scope_window_used(global, w, now) + reserved, limits->window_tokens[w]);
                if (u > worst)
                        worst = u;
        }
        return worst;
}

BudgetStats budget_stats(const Budget *b) {
        return b->stats;
}

Ledger *budget_ledger(const Budget *b) {
        return b->ledger;
}

LedgerScope *budget_global(const Budget *b) {
        return scope_table_global(b->scopes);
}

const ScopeTable *budget_scopes(const Budget *b) {
        return b->scopes;
}

/* "process:PID": the live entry of that pid (several entries of one pid, the
 * newest, as the table lists newest first). */
static ProcessEntry *process_find(const Budget *b, const char *target) {
        const char *p = target + strlen("process:");
        unsigned long pid;
        char *end;

        if (*p < '0' || *p > '9')
                return NULL;
        errno = 0;
        pid = strtoul(p, &end, 10);
        if (errno || *end || pid == 0 || pid > INT32_MAX)
                return NULL;
        for (ProcessEntry *e = process_table_next(b->processes, NULL); e;
             e = process_table_next(b->processes, e))
                if (process_entry_pid(e) == (pid_t)pid)
                        return e;
        return NULL;
}

int budget_set_limits(Budget *b, const char *target, const ScopeLimitsChange *change) {
        if (strcmp(target, "process") == 0) {
                /* process_table_set_limits() gives every process scope the
                 * new defaults at once. */
                scope_limits_apply(&b->process_limits.scope, change);
                process_table_set_limits(b->processes, &b->process_limits);
                return (int)process_table_size(b->processes);
        }
        if (strncmp(target, "process:", 8) == 0) {
                ProcessEntry *e = process_find(b, target);
                LedgerLimits limits;

                if (!e)
                        return strspn(target + 8, "0123456789") == strlen(target + 8) && target[8] ? -ENOENT
                                                                                                   : -EINVAL;
                limits = *ledger_scope_get_limits(process_entry_scope(e));
                scope_limits_apply(&limits, change);
                ledger_scope_set_limits(process_entry_scope(e), &limits);
                return 1;
        }
        return scope_table_set_limits(b->scopes, target, change);
}

void budget_sweep(Budget *b, uint64_t now) {
        if (b->store && (b->estimator_save_more || now - b->estimator_saved >= ESTIMATOR_SAVE_USEC)) {
                if (!b->estimator_save_more)
                        b->estimator_saved = now;
                b->estimator_save_more = estimator_save(b, now, realtime_usec(), ESTIMATOR_SAVE_STEP);
        }
        breaker_table_sweep(b->breakers, now);
        /* A class unseen for the history's retention is forgotten. */
        estimator_table_sweep(b->estimator, now, b->config->history_retention_days * 86400 * USEC_PER_SEC);
        budget_expire(b, now);
        scope_table_sweep(b->scopes, now);
}

const ProcessTable *budget_processes(const Budget *b) {
        return b->processes;
}

Allocation *budget_next_allocation(const Budget *b, const Allocation *a) {
        LedgerAllocation *la = ledger_next(b->ledger, a ? a->ledger : NULL);
        return la ? ledger_allocation_get_userdata(la) : NULL;
}

const LedgerAllocation *allocation_ledger(const Allocation *a) {
        return a->ledger;
}

const Identity *allocation_identity(const Allocation *a) {
        return &a->owner->identity;
}

uint64_t allocation_estimate(const Allocation *a) {
        return a->estimate;
}

Priority allocation_priority(const Allocation *a) {
        return a->priority;
}

int allocation_requested_priority(const Allocation *a) {
        return a->requested_priority;
}

const char *allocation_agent(const Allocation *a) {
        return a->agent;
}

const char *allocation_task_class(const Allocation *a) {
        return a->task_class;
}

const char *allocation_model(const Allocation *a) {
        return a->model;
}
