/* SPDX-License-Identifier: MIT */
/*
 * The manager owns the pieces and wires them: the configuration, the budget
 * (ledger, scopes, allocations), the journal, sd_notify, the peers and the
 * listener. It turns a new connection into a Client of the budget, a closed
 * one into settlement, runs the sweep (expired allocations, idle
 * connections; a timer only while clients are connected), reloads on SIGHUP
 * (a bad file is rejected and the old configuration kept) and shuts down on
 * SIGTERM/SIGINT, settling what is open.
 */
#pragma once

#include <stdbool.h>

#include "config.h"

struct event_base;

typedef struct Manager Manager;

/* Takes *config. config_path NULL: built-in defaults; config_optional:
 * config_path is the default file, read when it exists (also when it appears
 * after start: on reload). fd_limit: RLIMIT_NOFILE, that max_connections
 * must fit in on reload too. state_dir: where the durable ledger lives
 * ("": memory only); its database is opened and restored here. Returns 0,
 * -EBADE when the database cannot be used (the reason, naming the file and
 * what to do, was logged), or -errno. */
int manager_new(struct event_base *base, Config *config, const char *config_path, bool config_optional,
                unsigned fd_limit, const char *state_dir, Manager **ret);
Manager *manager_free(Manager *m);
/* Listens (socket activation, else socket_path: NULL for the configured one)
 * and serves until stopped. Returns 0 or -errno. */
int manager_run(Manager *m, const char *socket_path);
