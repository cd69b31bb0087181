/* SPDX-License-Identifier: MIT */
/*
 * Parsers for the text the kernel gives about a process, for the shell to
 * feed with what it read. Pure: bytes in, values out. The peer chooses its
 * own comm (prctl(PR_SET_NAME)), so everything here treats the text as
 * hostile: spaces, parentheses and control characters in comm, truncated
 * files, garbage.
 */
#pragma once

#include <stddef.h>
#include <stdint.h>

#define PROCFS_COMM_MAX 16 /* TASK_COMM_LEN, including the NUL */

/*
 * Parses the contents of /proc/PID/stat ("PID (COMM) STATE PPID ..."; COMM
 * may itself contain ") ", so it ends at the last ')'). Fills ret_comm (at
 * most 15 bytes, control characters replaced by '?') and the start time,
 * field 22, in clock ticks since boot. Returns 0 or -EINVAL.
 */
int procfs_parse_stat(const char *text, size_t len, char ret_comm[PROCFS_COMM_MAX],
                      uint64_t *ret_start_time);

/*
 * Parses the contents of /proc/PID/cgroup ("ID:CONTROLLERS:PATH" lines) for
 * the path systemd's units live in: the unified hierarchy's "0::PATH", else
 * the legacy "N:name=systemd:PATH". libsystemd 252 (cg_pid_get_path())
 * chooses by what is mounted, not by the text: the "0::" line when cgroup2
 * is on /sys/fs/cgroup (unified) or /sys/fs/cgroup/unified (hybrid), the
 * name=systemd line otherwise (legacy). The text alone cannot tell a hybrid
 * host from a legacy one on which something mounted cgroup2 elsewhere (the
 * kernel then prints "0::/" for every process), so: the "0::" line wins
 * unless it is just "/" and a name=systemd line exists. That is libsystemd's
 * answer wherever the two hierarchies agree, as systemd keeps them on a
 * hybrid host (a process in the root of one is in the root of the other),
 * and the right one on that legacy host. Like libsystemd, an empty path is
 * "/" and a " (deleted)" suffix is removed; the path is everything after the
 * second ':' of its line, so it may hold ':' itself. Lines come in any
 * order; lines that are not "ID:CONTROLLERS:/PATH", or hold a NUL byte, are
 * skipped. Returns 0 with a malloc'ed absolute path, -EINVAL when neither
 * line is there, or -ENOMEM.
 */
int procfs_parse_cgroup(const char *text, size_t size, char **ret_path);

/*
 * Parses the contents of /proc/PID/status for the process's real uid and gid
 * (the first number of "Uid:" and "Gid:", as SO_PEERCRED reports them) and its
 * supplementary groups ("Groups:", space separated, possibly none): a
 * malloc'ed array in *ret_groups (NULL when *ret_n is 0), at most
 * PROCFS_GROUPS_MAX (the kernel's NGROUPS_MAX). Returns 0, -EINVAL when a line
 * is missing or malformed, or -ENOMEM.
 */
#define PROCFS_GROUPS_MAX 65536
int procfs_parse_status(const char *text, size_t len, uint32_t *ret_uid, uint32_t *ret_gid,
                        uint32_t **ret_groups, size_t *ret_n);
