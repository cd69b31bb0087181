/* SPDX-License-Identifier: MIT */
/*
 * Who is on the other end of a connection: pid, uid and gid from the kernel
 * (SO_PEERCRED, never from a message) and its supplementary groups
 * (SO_PEERGROUPS), whether that makes it an admin, plus the command name and
 * start time of the process from /proc (the start time tells a reused pid
 * from the process that had it before), its executable's name, and its
 * systemd units and slices (from its cgroup, via libsystemd). All of it is
 * read once, at connect time. proc_root is a parameter so tests can point it
 * at a fixture directory.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "cgroup.h"
#include "procfs.h"

#define IDENTITY_COMM_MAX PROCFS_COMM_MAX

typedef struct Identity {
        pid_t pid;
        uid_t uid;
        gid_t gid;
        uint64_t start_time; /* clock ticks since boot, field 22 of /proc/PID/stat; 0 when unknown */
        char comm[IDENTITY_COMM_MAX];
        /* Fixed at connect time: uid 0, the daemon's own euid, or (through
         * identity_set_admin_groups()) a member of the admin group. */
        bool admin;
} Identity;

/* Reads the peer's credentials from a connected AF_UNIX socket; admin is
 * set from the uid alone (0 or the daemon's euid). Returns 0 or -errno. */
int identity_from_socket(int fd, Identity *ret);
/* The peer's supplementary groups as the kernel recorded them at connect()
 * (SO_PEERGROUPS, Linux 4.13): a malloc'ed array the caller frees, NULL
 * when *ret_n is 0 (also on failure). Returns 0 or -errno (-ENOPROTOOPT on
 * older kernels). */
int identity_peer_groups(int fd, gid_t **ret, size_t *ret_n);
/* Makes id an admin when has_admin_gid and admin_gid is its primary gid or
 * one of groups (from identity_peer_groups()). Never clears admin. */
void identity_set_admin_groups(Identity *id, const gid_t *groups, size_t n, bool has_admin_gid,
                               gid_t admin_gid);
/* Fills comm and start_time from PROC_ROOT/PID/stat; on failure (the process
 * is gone) sets comm to "?" and start_time to 0 and returns -errno. */
int identity_read_proc(const char *proc_root, Identity *id);
/* id->admin: root, the daemon's own user and the admin group: the admin
 * interface's callers, who get the limits.admin_connections slots and are
 * exempt from per-uid process limits. */
bool identity_is_admin(const Identity *id);
/* Another process's credentials, for a trusted proxy's onBehalfOf: pid,
 * comm and start time from PROC_ROOT/PID/stat, the real uid and gid and the
 * supplementary groups (malloc'ed, *ret_groups NULL when *ret_n is 0) from
 * PROC_ROOT/PID/status. Never admin. Returns 0, -ESRCH when the process is
 * gone (or the files do not parse), -ENOMEM. */
int identity_read_other(const char *proc_root, pid_t pid, Identity *ret, gid_t **ret_groups, size_t *ret_n);

/*
 * The units and slices of process pid: its cgroup from libsystemd
 * (sd_pid_get_cgroup(), which picks the hierarchy as sd_pid_get_unit()
 * does), shifted below PID 1's root as sd_pid_get_unit() does
 * (cgroup_path_shift()), then cgroup_units_parse(). *ret is always
 * initialized, so a caller may ignore the error and charge no units.
 * Returns 0 (units may be empty: a process in the root cgroup or in none
 * of systemd's units), -ESRCH when the process is gone, -ENODATA or
 * -ENOMEDIUM when there is no cgroup hierarchy libsystemd knows (no
 * "0::" or name=systemd line, nothing on /sys/fs/cgroup), -EINVAL for a
 * path cgroup_units_parse() refuses, -ENOMEM. By pid: the caller compares
 * the start time to know it still is the peer.
 */
int identity_read_units(pid_t pid, CgroupUnits *ret);

/*
 * The name of the executable of process pid: the last component of the
 * PROC_ROOT/PID/exe link, without the " (deleted)" the kernel adds after
 * the file was removed or replaced (an upgrade). The peer cannot choose it
 * as it chooses its comm, but it can name its binary anything. Returns 0
 * with a malloc'ed string, or -errno: -EACCES when the daemon may not look
 * (another user's process without CAP_SYS_PTRACE, or ProtectProc=),
 * -ENOENT when the process is gone or is a kernel thread.
 */
int identity_read_exe(const char *proc_root, pid_t pid, char **ret_basename);
