/* SPDX-License-Identifier: MIT */
/*
 * Who is on the other end of a connection: pid, uid and gid from the kernel
 * (SO_PEERCRED, never from a message), plus the command name and start time
 * of the process from /proc (the start time tells a reused pid from the
 * process that had it before). proc_root is a parameter so tests can point it
 * at a fixture directory.
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "procfs.h"

#define IDENTITY_COMM_MAX PROCFS_COMM_MAX

typedef struct Identity {
        pid_t pid;
        uid_t uid;
        gid_t gid;
        uint64_t start_time; /* clock ticks since boot, field 22 of /proc/PID/stat; 0 when unknown */
        char comm[IDENTITY_COMM_MAX];
} Identity;

/* Reads the peer's credentials from a connected AF_UNIX socket. Returns 0 or -errno. */
int identity_from_socket(int fd, Identity *ret);
/* Fills comm and start_time from PROC_ROOT/PID/stat; on failure (the process
 * is gone) sets comm to "?" and start_time to 0 and returns -errno. */
int identity_read_proc(const char *proc_root, Identity *id);
/* Root and the daemon's own user: the admin interface's callers, who get
 * the limits.admin_connections slots and are exempt from per-uid process
 * limits. */
bool identity_is_admin(const Identity *id);
