/* SPDX-License-Identifier: MIT */
/*
 * What a method handler is and what it gets: the call (answer now or
 * later, call.h), its parameters validated against the method's table, and
 * the daemon's pieces it may use. Each interface's handlers (service.c,
 * agent.c, admin.c) export their rows; dispatch.c looks calls up in them.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "budget.h"
#include "call.h"
#include "peer.h"
#include "varlink.h"

/* Re-reads the configuration (admin Reload): 0, or -errno with the reasons,
 * one "FILE:LINE: message" per line, in *ret_errors (malloc'ed). */
typedef int (*ReloadFunc)(void *userdata, char **ret_errors);

typedef struct DispatchContext {
        Budget *budget;
        Store *store;         /* the durable ledger; NULL when memory only */
        const Config *config; /* the configuration in force (the same object across reloads) */
        const PeerSet *peers;
        uint64_t start_usec; /* when the daemon started, for uptime */
        ReloadFunc reload;
        void *userdata;
} DispatchContext;

/* Returns 0 (answered, deferred, or oneway) or -ENOMEM (the peer is dropped). */
typedef int (*MethodHandler)(const DispatchContext *ctx, Call *call, const VarlinkValue *values,
                             uint64_t now);

typedef struct Method {
        const char *name; /* fully qualified */
        MethodHandler handler;
        const VarlinkField *fields;
        size_t n_fields;
        bool admin; /* admins only (identity_is_admin()) */
} Method;

/* A table of more than METHOD_FIELDS_MAX fields does not compile (the
 * dispatcher's values array has that many). */
#define METHOD(n, h, f, adm)                                                                                \
        { n, h, f, ELEMENTSOF(f) + 0 * sizeof(char[ELEMENTSOF(f) <= METHOD_FIELDS_MAX ? 1 : -1]), adm }
#define METHOD0(n, h, adm)                                                                                  \
        { n, h, NULL, 0, adm }

/* Every method takes at most this many parameters. */
#define METHOD_FIELDS_MAX 16

extern const Method service_methods[];
extern const size_t service_n_methods;
extern const Method agent_methods[];
extern const size_t agent_n_methods;
extern const Method admin_methods[];
extern const size_t admin_n_methods;
/* io.tokenbudget.admin.History (admin-history.c). */
extern const Method history_methods[];
extern const size_t history_n_methods;
/* io.tokenbudget.admin.Classes (admin-classes.c). */
extern const Method classes_methods[];
extern const size_t classes_n_methods;
/* io.tokenbudget.admin.Estimate (admin-estimate.c). */
extern const Method estimate_methods[];
extern const size_t estimate_n_methods;
