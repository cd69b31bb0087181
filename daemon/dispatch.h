/* SPDX-License-Identifier: MIT */
/*
 * Method dispatch: finds the method of a call in the tables of
 * org.varlink.service, io.tokenbudget.agent and io.tokenbudget.admin,
 * validates its parameters against the method's table (unknown, missing,
 * mistyped, negative, out of range) and who may call it, and only then runs
 * its handler. The signatures fit PeerSetOps; userdata is a DispatchContext.
 */
#pragma once

#include <stdint.h>

#include "call.h"
#include "varlink.h"

int dispatch_call(void *context, Call *call, const VarlinkCall *message, uint64_t now);
/* The same for a call the allocation-free flat parser took
 * (varlink_call_parse_flat()); identical replies for identical bytes. */
int dispatch_flat_call(void *context, Call *call, const VarlinkFlatCall *message, uint64_t now);
