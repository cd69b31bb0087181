/* SPDX-License-Identifier: MIT */
/*
 * tokenbudgetd's configuration: the built-in defaults and the parser and
 * validator for the libconfig file format, the rules in it, the resolution of
 * the user and group names it holds (through a lookup the caller passes), and
 * a Config packed into bytes for the reload's parser child. Pure: the caller
 * reads the file and passes its text (libconfig's @include is refused), so
 * tests use strings. Every setting has a built-in default;
 * conf/tokenbudgetd.conf lists them all and tests/unit/test-config.c keeps the
 * two equal.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <sys/types.h>

#include "ledger.h"

typedef enum LogLevel {
        LOG_LEVEL_ERR = 3,
        LOG_LEVEL_WARNING = 4,
        LOG_LEVEL_NOTICE = 5,
        LOG_LEVEL_INFO = 6,
        LOG_LEVEL_DEBUG = 7,
} LogLevel;

/* Priorities, highest first: a Request may ask for its rule's max_priority
 * or anything below it (a greater value). */
typedef enum Priority {
        PRIORITY_INTERACTIVE,
        PRIORITY_NORMAL,
        PRIORITY_BACKGROUND,
        _PRIORITY_MAX,
} Priority;

const char *priority_to_string(Priority p);

/* Power states (issue 11), least severe first: the state shown is the most
 * severe condition active; what applies to a priority is the smallest
 * factor of every active condition (power.h). */
typedef enum PowerState {
        POWER_AC,
        POWER_BATTERY,
        POWER_LOW_BATTERY,
        POWER_MEMORY_PRESSURE,
        POWER_HOT,
        POWER_CRITICAL,
        _POWER_STATE_MAX,
} PowerState;
/* "ac", "battery", "low-battery", "memory-pressure", "hot", "critical"; NULL out of range. */
const char *power_state_to_string(PowerState s);
int power_state_from_string(const char *s); /* a PowerState, or -EINVAL */
/* A power factor of 0 is "pause": requests of that priority wait (or are
 * refused PowerPaused). 1000 is x1.0. */
#define POWER_FACTOR_PAUSE 0u
#define POWER_FACTOR_ONE   1000u

/* The "power" group. Temperatures in millidegrees Celsius, battery charge in
 * permille, memory pressure (PSI "some avg10") in hundredths of a percent.
 * A condition is entered at or past its threshold and left only past its
 * release value (hysteresis): low-battery below low_battery, left above
 * low_battery_release; hot at or above hot, left below hot_release. */
typedef struct PowerConfig {
        bool enabled;        /* "enabled" = true; false: always "ac", nothing read */
        char *sensor;        /* "sensor" = "": the default (hottest CPU package sensor, else acpitz);
                              * else a thermal zone type, an hwmon name, an hwmon label or
                              * "NAME/LABEL" (fnmatch(3) globs); the hottest that matches */
        char *pressure_file; /* "pressure_file" = "/proc/pressure/memory"; "": memory pressure off */
        uint64_t poll_usec;  /* "poll_sec" = 5, 1..3600: temperatures and pressure, while busy or near */
        uint64_t battery_poll_usec; /* "battery_poll_sec" = 30, 1..3600: batteries, while (dis)charging */
        int32_t low_battery_permille, low_battery_release_permille; /* "low_battery_percent" = 20,
                                                                     * "low_battery_release_percent" = 25 */
        int32_t hot_mc, hot_release_mc; /* "hot_celsius" = 85, "hot_release_celsius" = 80 */
        int32_t critical_mc,
                critical_release_mc; /* "critical_celsius" = 95, "critical_release_celsius" = 90 */
        int32_t pressure_cp, pressure_release_cp; /* "memory_pressure_percent" = 20,
                                                   * "memory_pressure_release_percent" = 10 */
        /* "policy" group: policy.STATE.PRIORITY = factor (0.01..1.0) or "pause";
         * STATE with underscores (low_battery, memory_pressure). Unset: 1.0,
         * but for the defaults:
         *   battery:         background 0.5
         *   low_battery:     background pause, normal 0.5
         *   memory_pressure: background pause, normal 0.5
         *   hot:             background pause, normal 0.5
         *   critical:        background pause, normal pause */
        uint16_t factor[_POWER_STATE_MAX][_PRIORITY_MAX]; /* permille; POWER_FACTOR_PAUSE */
} PowerConfig;
int priority_from_string(const char *s); /* a Priority, or -EINVAL */

/* How a rule's limits are kept: one budget shared by everything it matches
 * ("rule:NAME"), or one per matching user, unit, process or agent
 * ("rule:NAME:KEY"). */
typedef enum RulePer {
        RULE_PER_RULE,
        RULE_PER_USER,
        RULE_PER_UNIT,
        RULE_PER_PROCESS,
        RULE_PER_AGENT,
        _RULE_PER_MAX,
} RulePer;

const char *rule_per_to_string(RulePer p);
int rule_per_from_string(const char *s); /* a RulePer, or -EINVAL */

/* What happens to a Request whose estimate is above escalate_multiplier x
 * its max_request_tokens (and that no admin approved): refused at once
 * (Escalated), or held for an admin to approve or deny (budgetctl pending). */
typedef enum EscalateAction {
        ESCALATE_REFUSE,
        ESCALATE_HOLD,
        _ESCALATE_ACTION_MAX,
} EscalateAction;

const char *escalate_action_to_string(EscalateAction a); /* "refuse", "hold" */
int escalate_action_from_string(const char *s);          /* an EscalateAction, or -EINVAL */

/* What happens to a process whose allocation passes its hard limit: nothing
 * but the "exceeded" state (none), or SIGTERM, then SIGKILL after
 * terminate_grace_sec (terminate). */
typedef enum HardLimitAction {
        HARD_LIMIT_NONE,
        HARD_LIMIT_TERMINATE,
        _HARD_LIMIT_ACTION_MAX,
} HardLimitAction;

const char *hard_limit_action_to_string(HardLimitAction a); /* "none", "terminate" */
int hard_limit_action_from_string(const char *s);           /* a HardLimitAction, or -EINVAL */

/* durability.sync (issue 12): how the durable ledger's commits reach the
 * disk. normal: SQLite's WAL with synchronous=NORMAL (survives a daemon
 * crash; a power cut may lose the last commits); full: synchronous=FULL (an
 * fsync per commit: survives a power cut). */
typedef enum DurabilitySync {
        DURABILITY_NORMAL,
        DURABILITY_FULL,
        _DURABILITY_SYNC_MAX,
} DurabilitySync;

const char *durability_sync_to_string(DurabilitySync s); /* "normal", "full" */
int durability_sync_from_string(const char *s);          /* a DurabilitySync, or -EINVAL */

/* What a rule matches; every predicate given must hold. NULL: any. */
typedef struct RuleMatch {
        char *user;    /* "match.user": a user name, or a uid written as an integer (then "UID") */
        char *group;   /* "match.group": a group name, or a gid written as an integer (then "GID") */
        char *unit;    /* "match.unit": fnmatch(3) glob on the systemd unit (system or user unit) */
        char *slice;   /* "match.slice": glob on any slice above the process */
        char *command; /* "match.command": glob on the comm or the exe basename */
        char *agent;   /* "match.agent": glob on the agent name the Request declares */
        /* Filled by config_resolve_names() (or at parse time for numbers):
         * has_uid/has_gid false with user/group set means the name is unknown
         * and the rule can never match. */
        bool has_uid, has_gid;
        uid_t uid;
        gid_t gid;
} RuleMatch;

/* Which optional rule settings the file gave (else they come from a less
 * specific rule, then the top-level settings). */
enum {
        RULE_SET_MAX_REQUEST_TOKENS = 1u << 0,
        RULE_SET_PRIORITY = 1u << 1,
        RULE_SET_MAX_PRIORITY = 1u << 2,
        RULE_SET_WARN = 1u << 3,
        RULE_SET_HARD = 1u << 4,
        RULE_SET_ESCALATE = 1u << 5,
        RULE_SET_ON_ESCALATE = 1u << 6,
        RULE_SET_ON_HARD_LIMIT = 1u << 7,
        RULE_SET_TERMINATE_GRACE = 1u << 8,
        RULE_SET_ENFORCE = 1u << 9,
        RULE_SET_ESTIMATE_SOURCE = 1u << 10,
        RULE_SET_ESTIMATE_MIN_SAMPLES = 1u << 11,
        RULE_SET_ESTIMATE_FLOOR = 1u << 12,
};

/* What a Request reserves (issue 13): the client's estimate, the learned
 * prediction of its class once the class has estimate_min_samples (never
 * below estimate_floor x the client's estimate), or the larger of the two. */
typedef enum EstimateSource {
        ESTIMATE_CLIENT,
        ESTIMATE_LEARNED,
        ESTIMATE_MAX,
        _ESTIMATE_SOURCE_MAX,
} EstimateSource;

const char *estimate_source_to_string(EstimateSource s); /* "client", "learned", "max" */
int estimate_source_from_string(const char *s);          /* an EstimateSource, or -EINVAL */

/* One row of "prices.models": what a model costs per million tokens, in
 * prices.currency. */
typedef struct ConfigPrice {
        char *model;              /* 1..CONFIG_MODEL_NAME_MAX_BYTES, unique */
        double input_per_million; /* "input_per_million", 0..1e6 */
        double output_per_million;
} ConfigPrice;

/* At most this many priced models. */
#define CONFIG_PRICES_MAX 1000

typedef struct RuleConfig {
        char *name;    /* [A-Za-z0-9_.-], 1..64 bytes, unique */
        unsigned line; /* where the rule starts in the file, for messages */
        RuleMatch match;
        RulePer per;         /* "per" = "rule" */
        LedgerLimits limits; /* tokens_per_*, max_tokens_in_flight, max_allocations; 0: no limit */
        uint32_t set;        /* RULE_SET_* */
        uint64_t max_request_tokens;
        Priority priority, max_priority;
        uint32_t warn_permille, hard_permille, escalate_permille;
        EscalateAction on_escalate;
        HardLimitAction on_hard_limit;
        uint64_t terminate_grace_usec; /* "terminate_grace_sec" */
        bool enforce;
        EstimateSource estimate_source;
        uint64_t estimate_min_samples;
        uint32_t estimate_floor_permille;
} RuleConfig;

/* At most this many names in model_tiers, each at most this long. */
#define CONFIG_MODEL_TIERS_MAX      32
#define CONFIG_MODEL_NAME_MAX_BYTES 255

/* At most this many trusted_proxies. */
#define CONFIG_TRUSTED_PROXIES_MAX CONFIG_MODEL_TIERS_MAX

/* At most this many rules in one file. */
#define CONFIG_RULES_MAX 10000

typedef struct Config {
        /* top level */
        char *socket_path;           /* "socket"; default "/run/tokenbudget/io.tokenbudget" */
        uint64_t default_estimate;   /* "default_estimate"; 4000 */
        uint64_t max_request_tokens; /* "max_request_tokens"; 200000; larger estimates are clamped */
        uint32_t warn_permille;      /* "warn_multiplier" = 1.5 */
        uint32_t hard_permille;      /* "hard_multiplier" = 2.0, 1.0..5.0, >= warn */
        LogLevel log_level;          /* "log_level" = "info": err, warning, notice, info, debug */

        /* The escalation ladder (issue 10); each but model_tiers is also a rule setting. */
        uint32_t escalate_permille;    /* "escalate_multiplier" = 2.5, 1.0..10.0 */
        EscalateAction on_escalate;    /* "on_escalate" = "refuse" */
        HardLimitAction on_hard_limit; /* "on_hard_limit" = "none" */
        uint64_t terminate_grace_usec; /* "terminate_grace_sec" = 10, 1..3600 */
        bool enforce;                  /* "enforce" = true; false: dry run, grant everything */
        /* Learned estimates (issue 13); each is also a rule setting. */
        EstimateSource estimate_source;   /* "estimate_source" = "client" */
        uint64_t estimate_min_samples;    /* "estimate_min_samples" = 20, 1..1000000 */
        uint32_t estimate_floor_permille; /* "estimate_floor" = 0.5, 0.0..1.0 */
        /* "model_tiers" = [ ]: model names, best first, for suggestedModel;
         * at most CONFIG_MODEL_TIERS_MAX, each 1..CONFIG_MODEL_NAME_MAX_BYTES
         * of UTF-8 without control characters, no two alike. */
        char **model_tiers;
        size_t n_model_tiers;
        /* "trusted_proxies" = [ ]: users (names, or uids as digits) whose
         * connections may Request onBehalfOf another process (tokenbudget-proxy,
         * issue 14); root always may. At most CONFIG_TRUSTED_PROXIES_MAX, no two
         * alike. trusted_proxy_known[i]: the uid of entry i is known (digits,
         * or config_resolve_names() found the name), then trusted_proxy_uid[i]. */
        char **trusted_proxies;
        size_t n_trusted_proxies;
        bool trusted_proxy_known[CONFIG_TRUSTED_PROXIES_MAX];
        uint32_t trusted_proxy_uid[CONFIG_TRUSTED_PROXIES_MAX];
        unsigned trusted_proxies_line; /* where the file set it, for messages; 0: not set */

        /* "global" and "process" groups: tokens_per_minute, tokens_per_hour,
         * tokens_per_day, max_tokens_in_flight; 0 = no limit */
        LedgerLimits global;
        LedgerLimits process;
        /* "user", "unit" and "agent" groups: the same four plus
         * max_allocations (allocations in flight); "global" has
         * max_allocations too, "process" does not (limits.max_allocations_per_process). */
        LedgerLimits user;
        LedgerLimits unit;
        LedgerLimits agent;

        /* "admin_group": members (primary or supplementary group) may use the
         * admin interface like root; "" (default): nobody but root and the
         * daemon's user. A name or a gid. has_admin_gid as for RuleMatch. */
        char *admin_group;
        bool has_admin_gid;
        gid_t admin_gid;
        unsigned admin_group_line; /* where the file set it, for messages; 0: not set */

        /* "rules": in file order. */
        RuleConfig *rules;
        size_t n_rules;

        /* "limits" group */
        uint64_t max_message_bytes;             /* 65536, 1024..16 MiB */
        uint64_t max_output_bytes;              /* 1 MiB, >= 64 KiB: queued output per peer */
        uint64_t max_connections;               /* 1024, >= 1 */
        uint64_t max_connections_per_uid;       /* 128, >= 1 */
        uint64_t max_allocations_per_process;   /* 64, >= 1 */
        uint64_t max_tracked_processes;         /* 4096, >= 1: process scopes kept, live or idle */
        uint64_t max_tracked_processes_per_uid; /* 1024, >= 1: of those, for one non-admin uid */
        uint64_t max_tracked_scopes;            /* 16384, >= 1: user, unit, slice, agent, rule scopes kept */
        uint64_t max_tracked_scopes_per_uid;    /* 1024, >= 1: of those, created by one non-admin uid */
        uint64_t max_output_bytes_per_uid;      /* 8 MiB, >= max_output_bytes: queued output of one uid */
        uint64_t admin_connections;             /* 8, < max_connections: slots only admins may take */
        uint64_t idle_timeout_usec;             /* "idle_timeout_sec" = 900: a connection holding no
                                                 * allocation that sends nothing is closed; 0: never */
        uint64_t allocation_idle_timeout_usec;  /* "allocation_idle_timeout_sec" = 3600: an allocation
                                                 * with no report for this long is settled as expired */

        /* "journal" group: structured events (journal.h). Rate limiting is per
         * event kind; an interval or burst of 0 turns it off. */
        bool journal_log_granted;                  /* "log_granted" = false: a debug event per grant */
        uint64_t journal_rate_limit_interval_usec; /* "rate_limit_interval_sec" = 10, 0..3600 s */
        uint64_t journal_rate_limit_burst;         /* "rate_limit_burst" = 20 events, 0..1000000 */

        /* "queue" group: Requests that wait (waitUsec) for budget to free up. */
        uint64_t queue_max_waiters;         /* "max_waiters" = 1024, 0..1000000; 0: nobody waits */
        uint64_t queue_max_waiters_per_uid; /* "max_waiters_per_uid" = 128, 0..max_waiters */
        uint64_t queue_max_wait_usec;       /* "max_wait_sec" = 3600, 1..86400: a longer waitUsec is
                                             * shortened to it */

        /* "breaker" group: the pool breaker (degraded mode) and runaway breakers. */
        uint32_t pool_threshold_permille; /* "pool_threshold" = 0.8, 0.01..1.0 */
        uint32_t pool_release_permille;   /* "pool_release" = 0.7, 0.0.., below pool_threshold */
        uint64_t runaway_breaches;        /* "runaway_breaches" = 3, 0..1000; 0: no runaway breaker */
        uint64_t runaway_window_usec;     /* "runaway_window_sec" = 600, 1..86400 */
        uint64_t cooldown_usec;           /* "cooldown_sec" = 300, 1..86400 */
        uint64_t max_cooldown_usec;       /* "max_cooldown_sec" = 3600, cooldown_sec..604800 */

        /* "escalation" group: requests held for an admin (on_escalate = "hold"). */
        uint64_t escalation_timeout_usec; /* "timeout_sec" = 300, 1..86400: then denied */
        /* "power" group (issue 11). */
        PowerConfig power;

        /* The durable ledger (issue 12). "state_directory": where the
         * database lives; NULL (not given): $STATE_DIRECTORY (systemd's
         * StateDirectory=), else /var/lib/tokenbudget; "": memory only. The
         * command line's --state-dir overrides it. A reload does not move it. */
        char *state_directory;
        DurabilitySync durability_sync;  /* "durability.sync" = "normal" */
        uint64_t history_retention_days; /* "history.retention_days" = 90, 1..36500 */

        /* "estimator" group (issue 13): how classes learn (EstimatorSettings). */
        uint64_t estimator_half_life_samples;      /* "half_life_samples" = 50, 1..1000000 */
        uint64_t estimator_tail_half_life_samples; /* "tail_half_life_samples" = 1000, >= half_life */
        uint32_t estimator_clip_permille;          /* "clip_factor" = 4.0, 1.5..100.0 */
        uint32_t estimator_spread_permille;        /* "spread_quantile" = 0.95, 0.5..0.999 */

        /* "prices" group: "currency" = "" and "models" = ( { model = "NAME";
         * input_per_million = X; output_per_million = Y; }, ... ), for
         * budgetctl estimate's cost. */
        char *price_currency;
        ConfigPrice *prices;
        size_t n_prices;
} Config;

/* Fills *c with the built-in defaults. Returns 0 or -ENOMEM. */
int config_init_defaults(Config *c);
void config_done(Config *c);

/*
 * Parses and validates text (the contents of filename, used only in messages).
 * Settings absent from the text keep their built-in defaults. On success
 * returns 0 and fills *ret (free with config_done()). On failure returns
 * -EINVAL (or -ENOMEM) and sets *ret_errors to a malloc'ed string of one line
 * per error, each "FILE:LINE: message" (e.g. "x.conf:7: hard_multiplier must be
 * between 1.0 and 5.0, got 7.5", "x.conf:9: rules[2] ('nightly').match.unit:
 * malformed glob '[abc': unbalanced '['"), sorted by line, covering every error
 * found: syntax errors (libconfig stops at the first), unknown settings, wrong
 * types, values out of range, relations between values, rules without a name
 * or with another's. User and group ids written as numbers are resolved here;
 * names are left to config_resolve_names().
 */
int config_parse(const char *text, const char *filename, Config *ret, char **ret_errors);
/* The same for size bytes that need not end in a NUL (a file as read): a NUL
 * byte anywhere in them is an error naming its line and offset, and nothing is
 * parsed then (libconfig would stop reading at it and silently keep the
 * defaults for the rest). */
int config_parse_buffer(const char *text, size_t size, const char *filename, Config *ret, char **ret_errors);

/* Writes the configuration in the file format, every setting, to a malloc'ed
 * string (what conf/tokenbudgetd.conf holds for the defaults, minus comments);
 * of a rule, the optional settings it gives (RULE_SET_*) and its predicates.
 * Parsing it gives a Config equal to c, resolved names aside. */
char *config_format(const Config *c);

/* Every setting, rules included, and the ids names resolved to; not where
 * they were written (admin_group_line, RuleConfig.line) nor a rule's optional
 * settings it does not give. */
bool config_equal(const Config *a, const Config *b);

/*
 * Names to ids, for match.user, match.group and admin_group given by name:
 * the lookup is the caller's (getpwnam_r/getgrnam_r in the daemon, a table in
 * tests). Returns 0 and the id, -ENOENT when there is no such name, or
 * another -errno.
 */
typedef int (*ConfigLookupFunc)(bool group, const char *name, uint32_t *ret_id, void *userdata);
/*
 * Resolves every name in c not resolved yet. A name that is not known, or
 * whose lookup failed, is no error (the rule can never match, admin_group
 * grants nothing) but a warning: *ret_warnings (may be NULL) is set to a
 * malloc'ed string of one "FILE:LINE: warning: ..." line per such name,
 * sorted by line, or to NULL when there is none (e.g. "x.conf:12: warning:
 * rule 'x': match.user 'bob' is not a known user; the rule can never match").
 * Returns 0, or -ENOMEM (also when the lookup returns it).
 */
int config_resolve_names(Config *c, const char *filename, ConfigLookupFunc lookup, void *userdata,
                         char **ret_warnings);

/*
 * A Config as one self-contained byte string and back, for the reload child
 * (config-file.c): no pointers cross the pipe. Lines and resolved ids travel
 * too. config_pack() returns 0 and a malloc'ed *ret, or -ENOMEM (-E2BIG for a
 * string of 4 GiB). config_unpack() checks every length and every value (what
 * it accepts, the parser could have produced; relations between values aside)
 * and returns -EPROTO for bytes that are not a packed Config, or -ENOMEM.
 */
int config_pack(const Config *c, char **ret, size_t *ret_size);
int config_unpack(const char *buf, size_t size, Config *ret);

const char *log_level_to_string(LogLevel l);
