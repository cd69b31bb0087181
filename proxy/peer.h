/* SPDX-License-Identifier: MIT */
/*
 * Who is on the other end of a client connection, so that the daemon charges
 * the real agent (onBehalfOf {pid, uid}): SO_PEERCRED on a Unix socket; for
 * TCP over loopback, NETLINK_SOCK_DIAG (an inet_diag_req_v2 for the client
 * socket's 4-tuple, the client's side seen from ours) answers the client
 * socket's uid and inode, and the pid is the process holding socket:[INODE]
 * under /proc/PID/fd. Connections from other hosts have no local process.
 */
#pragma once

#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>

/* The uid and inode of the TCP socket whose local address is src and remote address dst (both
 * AF_INET or both AF_INET6): 0, -ENOENT when the kernel knows none, or a negative errno. */
int peer_sock_diag(const struct sockaddr_storage *src, const struct sockaddr_storage *dst, uid_t *ret_uid,
                   uint64_t *ret_inode);
/* The first process under proc_root ("/proc") with a descriptor on socket:[inode]: 0, -ESRCH when
 * none (another pid namespace, or it is gone). */
int peer_pid_of_inode(const char *proc_root, uint64_t inode, pid_t *ret_pid);
/* Both steps for a connection we accepted (fd): 0 with uid and pid (pid 0 when unknown);
 * -EADDRNOTAVAIL when the client is not on this host (not loopback); a negative errno. */
int peer_identify(int fd, uid_t *ret_uid, pid_t *ret_pid);
