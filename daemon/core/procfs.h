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
