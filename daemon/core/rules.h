/* SPDX-License-Identifier: MIT */
/*
 * Rules: which configured rules match a caller, which budget key each one
 * charges, and which of their settings apply.
 *
 * A Principal is what the shell learnt about a connection (SO_PEERCRED,
 * SO_PEERGROUPS, /proc, the cgroup); a Request adds the agent name it
 * declares. Matching is split in two so that the per-call cost does not grow
 * with the number of rules: rule_set_match_principal() runs once per
 * connection (and after a reload) and sorts the rules into those that match
 * whatever the agent (no match.agent) and candidates that match if the agent
 * name does; rule_matches_agent() then runs only over the candidates, and the
 * result is cached per agent name by the caller (scopes.c).
 *
 * Specificity (which rule's settings win when several match): the most
 * specific predicate a rule has, agent > command > unit > slice > user >
 * group (a rule with an empty match is the least specific), then the number
 * of predicates, then the rule listed first. Each setting (max_request_tokens,
 * priority, max_priority, the multipliers, on_escalate, on_hard_limit,
 * terminate_grace_sec, enforce and the estimate_* settings) comes from the most specific matching rule
 * that sets it, else from the top-level settings.
 *
 * Pure: globs are fnmatch(3), names and ids were resolved by the caller.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "cgroup.h"
#include "config.h"

typedef struct Principal {
        uid_t uid;
        gid_t gid;
        const gid_t *groups; /* supplementary, n_groups of them */
        size_t n_groups;
        pid_t pid;
        uint64_t start_time;      /* tells a reused pid apart (per-process rule budgets) */
        const char *comm;         /* never NULL */
        const char *exe;          /* basename of /proc/PID/exe; NULL when unknown */
        const CgroupUnits *units; /* never NULL; unit NULL when in no unit */
} Principal;

typedef struct RuleSet RuleSet;

/* Compiled from c->rules; points into c, which must outlive the set. NULL: out of memory. */
RuleSet *rule_set_new(const Config *c);
RuleSet *rule_set_free(RuleSet *rs);
size_t rule_set_size(const RuleSet *rs);
const RuleConfig *rule_set_rule(const RuleSet *rs, size_t i);
/* The index of the rule with this name, or -1. */
ssize_t rule_set_find(const RuleSet *rs, const char *name);

/* Rule indices in file order. */
typedef struct RuleList {
        uint32_t *items;
        size_t n;
} RuleList;

void rule_list_done(RuleList *l);

/*
 * Sorts the rules for p: *ret_fixed gets those whose every predicate holds
 * and that have no match.agent; *ret_candidates those whose predicates other
 * than match.agent hold. Rules that can never match p (per = "unit" out of a
 * unit, unresolved names) are in neither. Returns 0 or -ENOMEM.
 */
int rule_set_match_principal(const RuleSet *rs, const Principal *p, RuleList *ret_fixed,
                             RuleList *ret_candidates);
/* Whether rule i also matches the declared agent name (NULL: none). For a
 * rule with per = "agent" without match.agent this says whether a name was
 * declared at all. */
bool rule_matches_agent(const RuleSet *rs, size_t i, const char *agent);
/* Whether rule i without match.agent needs a declared agent (per = "agent"). */
bool rule_needs_agent(const RuleSet *rs, size_t i);

/*
 * The budget name rule i charges for p and agent: "rule:NAME" or
 * "rule:NAME:KEY" (see config.h, RulePer). *ret_owner is the uid the budget
 * belongs to, or -1 when shared. Returns the length, or -ENOBUFS when it does
 * not fit size bytes; -ENOENT when the rule cannot be keyed for p (per =
 * "unit" out of a unit, per = "agent" without a name).
 */
int rule_scope_name(const RuleSet *rs, size_t i, const Principal *p, const char *agent, char *buf,
                    size_t size, int64_t *ret_owner);

/* The settings that apply to one request. */
typedef struct RuleEffective {
        uint64_t max_request_tokens;
        Priority priority, max_priority;
        uint32_t warn_permille, hard_permille, escalate_permille;
        EscalateAction on_escalate;
        HardLimitAction on_hard_limit;
        uint64_t terminate_grace_usec;
        bool enforce;
        /* The index of the rule max_request_tokens comes from (for the
         * scope an Escalated refusal names), -1: the top-level setting. */
        int32_t cap_rule;
        EstimateSource estimate_source; /* what is reserved (issue 13) */
        uint64_t estimate_min_samples;
        uint32_t estimate_floor_permille;
} RuleEffective;

/* From the matching rules in a and b (either may be empty) and the
 * top-level settings, by specificity. */
void rule_set_effective(const RuleSet *rs, const RuleList *a, const RuleList *b, RuleEffective *ret);

/* Lower is more specific. */
uint32_t rule_set_rank(const RuleSet *rs, size_t i);
