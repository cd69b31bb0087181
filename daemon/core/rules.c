/* SPDX-License-Identifier: MIT */
/* Rule matching, keys and settings (see rules.h). */
#include <assert.h>
#include <errno.h>
#include <fnmatch.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rules.h"

struct RuleSet {
        const Config *config;
        size_t n;
        uint32_t *rank; /* per rule: lower is more specific, unique */
};

/* Predicate weights, most specific first. */
enum {
        PRED_AGENT = 1u << 5,
        PRED_COMMAND = 1u << 4,
        PRED_UNIT = 1u << 3,
        PRED_SLICE = 1u << 2,
        PRED_USER = 1u << 1,
        PRED_GROUP = 1u << 0,
};

static unsigned predicates(const RuleMatch *m) {
        return (m->agent ? PRED_AGENT : 0) | (m->command ? PRED_COMMAND : 0) | (m->unit ? PRED_UNIT : 0) |
               (m->slice ? PRED_SLICE : 0) | (m->user ? PRED_USER : 0) | (m->group ? PRED_GROUP : 0);
}

static unsigned highest_bit(unsigned v) {
        return v ? 1u << (31 - __builtin_clz(v)) : 0;
}

typedef struct RankKey {
        unsigned top, count;
        size_t index;
} RankKey;

/* Most specific first: the highest predicate, then more predicates, then file order. */
static int rank_compare(const void *pa, const void *pb) {
        const RankKey *a = pa, *b = pb;

        if (a->top != b->top)
                return a->top > b->top ? -1 : 1;
        if (a->count != b->count)
                return a->count > b->count ? -1 : 1;
        return a->index < b->index ? -1 : a->index > b->index;
}

RuleSet *rule_set_new(const Config *c) {
        RuleSet *rs = calloc(1, sizeof(*rs));
        RankKey *keys = NULL;

        if (!rs)
                return NULL;
        rs->config = c;
        rs->n = c->n_rules;
        if (rs->n == 0)
                return rs;
        rs->rank = calloc(rs->n, sizeof(*rs->rank));
        keys = calloc(rs->n, sizeof(*keys));
        if (!rs->rank || !keys) {
                free(keys);
                return rule_set_free(rs);
        }
        for (size_t i = 0; i < rs->n; i++) {
                unsigned p = predicates(&c->rules[i].match);
                keys[i] = (RankKey){highest_bit(p), (unsigned)__builtin_popcount(p), i};
        }
        qsort(keys, rs->n, sizeof(*keys), rank_compare);
        for (size_t r = 0; r < rs->n; r++)
                rs->rank[keys[r].index] = (uint32_t)r;
        free(keys);
        return rs;
}

RuleSet *rule_set_free(RuleSet *rs) {
        if (!rs)
                return NULL;
        free(rs->rank);
        free(rs);
        return NULL;
}

size_t rule_set_size(const RuleSet *rs) {
        return rs->n;
}

const RuleConfig *rule_set_rule(const RuleSet *rs, size_t i) {
        assert(i < rs->n);
        return &rs->config->rules[i];
}

ssize_t rule_set_find(const RuleSet *rs, const char *name) {
        for (size_t i = 0; i < rs->n; i++)
                if (strcmp(rs->config->rules[i].name, name) == 0)
                        return (ssize_t)i;
        return -1;
}

uint32_t rule_set_rank(const RuleSet *rs, size_t i) {
        assert(i < rs->n);
        return rs->rank[i];
}

void rule_list_done(RuleList *l) {
        free(l->items);
        *l = (RuleList){};
}

static bool glob_matches(const char *glob, const char *s) {
        return s && fnmatch(glob, s, 0) == 0;
}

static bool in_group(const Principal *p, gid_t gid) {
        if (p->gid == gid)
                return true;
        for (size_t i = 0; i < p->n_groups; i++)
                if (p->groups[i] == gid)
                        return true;
        return false;
}

static bool any_slice_matches(const char *glob, const CgroupUnits *u) {
        for (size_t i = 0; i < u->n_slices; i++)
                if (glob_matches(glob, u->slices[i]))
                        return true;
        for (size_t i = 0; i < u->n_user_slices; i++)
                if (glob_matches(glob, u->user_slices[i]))
                        return true;
        return false;
}

/* Every predicate but match.agent. */
static bool principal_matches(const RuleConfig *r, const Principal *p) {
        const RuleMatch *m = &r->match;

        if (m->user && (!m->has_uid || m->uid != p->uid))
                return false;
        if (m->group && (!m->has_gid || !in_group(p, m->gid)))
                return false;
        if (m->unit && !glob_matches(m->unit, p->units->unit) && !glob_matches(m->unit, p->units->user_unit))
                return false;
        if (m->slice && !any_slice_matches(m->slice, p->units))
                return false;
        if (m->command && !glob_matches(m->command, p->comm) && !glob_matches(m->command, p->exe))
                return false;
        if (r->per == RULE_PER_UNIT && !p->units->unit)
                return false;
        return true;
}

static int list_add(RuleList *l, size_t cap, uint32_t i) {
        if (!l->items) {
                l->items = malloc(cap * sizeof(*l->items));
                if (!l->items)
                        return -ENOMEM;
        }
        l->items[l->n++] = i;
        return 0;
}

int rule_set_match_principal(const RuleSet *rs, const Principal *p, RuleList *ret_fixed,
                             RuleList *ret_candidates) {
        RuleList fixed = {}, candidates = {};

        for (size_t i = 0; i < rs->n; i++) {
                const RuleConfig *r = &rs->config->rules[i];
                int k;

                if (!principal_matches(r, p))
                        continue;
                if (r->match.agent || r->per == RULE_PER_AGENT)
                        k = list_add(&candidates, rs->n, (uint32_t)i);
                else
                        k = list_add(&fixed, rs->n, (uint32_t)i);
                if (k < 0) {
                        rule_list_done(&fixed);
                        rule_list_done(&candidates);
                        return k;
                }
        }
        *ret_fixed = fixed;
        *ret_candidates = candidates;
        return 0;
}

bool rule_needs_agent(const RuleSet *rs, size_t i) {
        const RuleConfig *r = rule_set_rule(rs, i);
        return r->match.agent || r->per == RULE_PER_AGENT;
}

bool rule_matches_agent(const RuleSet *rs, size_t i, const char *agent) {
        const RuleConfig *r = rule_set_rule(rs, i);

        if (!agent)
                return false;
        return !r->match.agent || glob_matches(r->match.agent, agent);
}

/* The unit scope's name without "unit:": the user unit within its uid, else the system unit. */
static int unit_key(const CgroupUnits *u, char *buf, size_t size, int64_t *ret_owner) {
        int n;

        if (u->user_unit && u->has_owner) {
                n = snprintf(buf, size, "%" PRIu32 ":%s", (uint32_t)u->owner_uid, u->user_unit);
                *ret_owner = u->owner_uid;
        } else if (u->unit) {
                n = snprintf(buf, size, "%s", u->unit);
                *ret_owner = u->has_owner ? (int64_t)u->owner_uid : -1;
        } else
                return -ENOENT;
        return n < 0 || (size_t)n >= size ? -ENOBUFS : n;
}

int rule_scope_name(const RuleSet *rs, size_t i, const Principal *p, const char *agent, char *buf,
                    size_t size, int64_t *ret_owner) {
        const RuleConfig *r = rule_set_rule(rs, i);
        char key[512];
        int64_t owner = -1;
        int n;

        switch (r->per) {
        case RULE_PER_RULE:
                n = snprintf(buf, size, "rule:%s", r->name);
                break;
        case RULE_PER_USER:
                owner = p->uid;
                n = snprintf(buf, size, "rule:%s:%" PRIu32, r->name, (uint32_t)p->uid);
                break;
        case RULE_PER_UNIT:
                n = unit_key(p->units, key, sizeof(key), &owner);
                if (n < 0)
                        return n;
                n = snprintf(buf, size, "rule:%s:%s", r->name, key);
                break;
        case RULE_PER_PROCESS:
                owner = p->uid;
                n = snprintf(buf, size, "rule:%s:%d", r->name, (int)p->pid);
                break;
        case RULE_PER_AGENT:
                if (!agent)
                        return -ENOENT;
                owner = p->uid;
                n = snprintf(buf, size, "rule:%s:%" PRIu32 ":%s", r->name, (uint32_t)p->uid, agent);
                break;
        default:
                return -EINVAL;
        }
        if (n < 0 || (size_t)n >= size)
                return -ENOBUFS;
        *ret_owner = owner;
        return n;
}

/* The most specific rule of a and b that sets the bit, or NULL. */
static const RuleConfig *most_specific(const RuleSet *rs, const RuleList *a, const RuleList *b,
                                       uint32_t bit) {
        const RuleList *lists[2] = {a, b};
        const RuleConfig *best = NULL;
        uint32_t best_rank = UINT32_MAX;

        for (size_t l = 0; l < 2; l++)
                for (size_t k = 0; lists[l] && k < lists[l]->n; k++) {
                        uint32_t i = lists[l]->items[k];
                        const RuleConfig *r = &rs->config->rules[i];

                        if ((r->set & bit) && rs->rank[i] < best_rank) {
                                best = r;
                                best_rank = rs->rank[i];
                        }
                }
        return best;
}

void rule_set_effective(const RuleSet *rs, const RuleList *a, const RuleList *b, RuleEffective *ret) {
        const Config *c = rs->config;
        const RuleConfig *r;

        *ret = (RuleEffective){
                .max_request_tokens = c->max_request_tokens,
                .priority = PRIORITY_NORMAL,
                .max_priority = PRIORITY_INTERACTIVE,
                .warn_permille = c->warn_permille,
                .hard_permille = c->hard_permille,
                .escalate_permille = c->escalate_permille,
                .on_escalate = c->on_escalate,
                .on_hard_limit = c->on_hard_limit,
                .terminate_grace_usec = c->terminate_grace_usec,
                .enforce = c->enforce,
                .estimate_source = c->estimate_source,
                .estimate_min_samples = c->estimate_min_samples,
                .estimate_floor_permille = c->estimate_floor_permille,
                .cap_rule = -1,
        };
        if ((!a || a->n == 0) && (!b || b->n == 0))
                return;
        if ((r = most_specific(rs, a, b, RULE_SET_MAX_REQUEST_TOKENS))) {
                ret->max_request_tokens = r->max_request_tokens;
                /* At most CONFIG_RULES_MAX rules: the index fits. */
                ret->cap_rule = (int32_t)(r - c->rules);
        }
        if ((r = most_specific(rs, a, b, RULE_SET_MAX_PRIORITY)))
                ret->max_priority = r->max_priority;
        if ((r = most_specific(rs, a, b, RULE_SET_PRIORITY)))
                ret->priority = r->priority;
        if ((r = most_specific(rs, a, b, RULE_SET_WARN)))
                ret->warn_permille = r->warn_permille;
        if ((r = most_specific(rs, a, b, RULE_SET_HARD)))
                ret->hard_permille = r->hard_permille;
        if ((r = most_specific(rs, a, b, RULE_SET_ESCALATE)))
                ret->escalate_permille = r->escalate_permille;
        if ((r = most_specific(rs, a, b, RULE_SET_ON_ESCALATE)))
                ret->on_escalate = r->on_escalate;
        if ((r = most_specific(rs, a, b, RULE_SET_ON_HARD_LIMIT)))
                ret->on_hard_limit = r->on_hard_limit;
        if ((r = most_specific(rs, a, b, RULE_SET_TERMINATE_GRACE)))
                ret->terminate_grace_usec = r->terminate_grace_usec;
        if ((r = most_specific(rs, a, b, RULE_SET_ENFORCE)))
                ret->enforce = r->enforce;
        if ((r = most_specific(rs, a, b, RULE_SET_ESTIMATE_SOURCE)))
                ret->estimate_source = r->estimate_source;
        if ((r = most_specific(rs, a, b, RULE_SET_ESTIMATE_MIN_SAMPLES)))
                ret->estimate_min_samples = r->estimate_min_samples;
        if ((r = most_specific(rs, a, b, RULE_SET_ESTIMATE_FLOOR)))
                ret->estimate_floor_permille = r->estimate_floor_permille;
        /* Settings from different rules must still make sense together. */
        if (ret->priority < ret->max_priority)
                ret->priority = ret->max_priority;
        if (ret->warn_permille > ret->hard_permille)
                ret->warn_permille = ret->hard_permille;
}
