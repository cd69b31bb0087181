/* SPDX-License-Identifier: MIT */
/*
 * Method dispatch: a table from fully-qualified method names to handlers for
 * org.varlink.service, io.tokenbudget.agent and io.tokenbudget.admin. Each
 * entry names its parameter table, so every call's parameters are validated
 * (unknown, missing, mistyped, negative, out of range) before its handler
 * runs. Handlers turn calls into ledger operations and replies.
 */
#pragma once

#include <stdint.h>

#include "server.h"

/* Handles one call from p. Returns 0 (a reply or error was queued, or none
 * for oneway) or a negative errno after which the peer must be dropped. */
int dispatch_call(Server *s, Peer *p, const VarlinkCall *call, uint64_t now);
/* The same for a call the allocation-free flat parser took
 * (varlink_call_parse_flat()); identical replies for identical bytes. */
int dispatch_flat_call(Server *s, Peer *p, const VarlinkFlatCall *call, uint64_t now);
