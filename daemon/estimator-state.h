/* SPDX-License-Identifier: MIT */
/*
 * An estimator class's learned state as text for the durable ledger (see
 * estimator-state.c): every field by name, versioned.
 */
#pragma once

#include "estimator.h"

/* The state as JSON (malloc'ed), or NULL when out of memory. last_seen_usec
 * is not in it (the ledger keeps it apart, in realtime). */
char *estimator_state_to_json(const EstimatorClassState *s);
/* Parses what estimator_state_to_json() wrote, now or in the previous
 * version (its missing fields 0): 0, or -EBADMSG (not that shape or
 * another version; last_seen_usec is left 0). */
int estimator_state_from_json(const char *text, EstimatorClassState *ret);
