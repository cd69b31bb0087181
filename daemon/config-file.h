/* SPDX-License-Identifier: MIT */
/*
 * The configuration file: read (bounded), parsed by the pure core
 * (config_parse_buffer()), its user and group names resolved through NSS
 * (getpwnam_r/getgrnam_r), and checked against what the process may open.
 */
#pragma once

#include "config.h"

/* File descriptors kept out of max_connections: stdio, the listening socket,
 * the event loop's own, the journal and notify sockets, and the few opened
 * for a moment (the config file on reload, /proc/PID/stat at accept, a
 * connection accepted only to be refused). So the watchdog, the journal, a
 * reload and an admin still work however many clients connect. */
#define DAEMON_RESERVED_FDS 64u

/*
 * Reads and parses a configuration file, then resolves its names
 * (config_resolve_names()). Errors as config_parse_buffer() gives them, one
 * "FILE:LINE: message" per line, in *ret_errors (NULL when none); names that
 * are not known are no error but a "FILE:LINE: warning: ..." line each in
 * *ret_warnings (NULL when none; ret_warnings may be NULL). Returns 0 and
 * fills *ret, or -errno (-EINVAL: the file is invalid).
 */
int config_load_file(const char *path, Config *ret, char **ret_errors, char **ret_warnings);
/* 0 when c->max_connections fits fd_limit with DAEMON_RESERVED_FDS to spare;
 * else -EMFILE and a "PATH: ..." line in *ret_error (path NULL: the
 * built-in defaults). */
int config_check_fd_limit(const Config *c, unsigned fd_limit, const char *path, char **ret_error);

/*
 * config_load_file() in a child process, for reloads: the parsers
 * (libconfig's flex scanner exits the process when malloc fails, and
 * libconfig 1.5 writes through unchecked allocations) and NSS (whose modules
 * may hang on a network or crash) run where their failure cannot take the
 * daemon and its ledger down. The child sends the packed Config
 * (config_pack()), the errors and the warnings over a pipe and exits; a child
 * that crashes, exits otherwise or sends what does not unpack is an error
 * naming how it ended. Returns like config_load_file(); -ENOMEM or -errno
 * when the child cannot be started.
 */
int config_load_file_isolated(const char *path, Config *ret, char **ret_errors, char **ret_warnings);
