/* SPDX-License-Identifier: MIT */
#define _GNU_SOURCE
/*
 * Finding the process behind a client connection (see peer.h): one
 * NETLINK_SOCK_DIAG round trip for a loopback TCP peer, then a walk of
 * /proc/PID/fd for its socket inode; SO_PEERCRED for a Unix socket.
 */
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <linux/inet_diag.h>
#include <linux/netlink.h>
#include <linux/sock_diag.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "macro.h"
#include "peer.h"

static void fill_sockid(struct inet_diag_sockid *id, const struct sockaddr_storage *src,
                        const struct sockaddr_storage *dst) {
        if (src->ss_family == AF_INET) {
                const struct sockaddr_in *s = (const void *)src, *d = (const void *)dst;
                id->idiag_sport = s->sin_port;
                id->idiag_dport = d->sin_port;
                memcpy(id->idiag_src, &s->sin_addr, 4);
                memcpy(id->idiag_dst, &d->sin_addr, 4);
        } else {
                const struct sockaddr_in6 *s = (const void *)src, *d = (const void *)dst;
                id->idiag_sport = s->sin6_port;
                id->idiag_dport = d->sin6_port;
                memcpy(id->idiag_src, &s->sin6_addr, 16);
                memcpy(id->idiag_dst, &d->sin6_addr, 16);
        }
        id->idiag_cookie[0] = INET_DIAG_NOCOOKIE;
        id->idiag_cookie[1] = INET_DIAG_NOCOOKIE;
}

int peer_sock_diag(const struct sockaddr_storage *src, const struct sockaddr_storage *dst, uid_t *ret_uid,
                   uint64_t *ret_inode) {
        struct {
                struct nlmsghdr nlh;
                struct inet_diag_req_v2 req;
        } msg = {
                .nlh = {.nlmsg_len = sizeof(msg),
                        .nlmsg_type = SOCK_DIAG_BY_FAMILY,
                        .nlmsg_flags = NLM_F_REQUEST},
                .req = {.sdiag_family = (uint8_t)src->ss_family,
                        .sdiag_protocol = IPPROTO_TCP,
                        .idiag_states = ~0U},
        };
        struct sockaddr_nl nl = {.nl_family = AF_NETLINK};
        struct timeval tv = {.tv_sec = 1};
        union {
                struct nlmsghdr h;
                char buf[8192];
        } reply;
        _cleanup_close_ int fd = -1;
        ssize_t n;

        if (src->ss_family != dst->ss_family || (src->ss_family != AF_INET && src->ss_family != AF_INET6))
                return -EAFNOSUPPORT;
        fill_sockid(&msg.req.id, src, dst);
        fd = socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC, NETLINK_SOCK_DIAG);
        if (fd < 0)
                return -errno;
        (void)setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
        if (sendto(fd, &msg, sizeof(msg), 0, (struct sockaddr *)&nl, sizeof(nl)) < 0)
                return -errno;
        n = recv(fd, &reply, sizeof(reply), 0);
        if (n < 0)
                return -errno;
        for (struct nlmsghdr *h = &reply.h; NLMSG_OK(h, (size_t)n); h = NLMSG_NEXT(h, n)) {
                if (h->nlmsg_type == NLMSG_ERROR) {
                        const struct nlmsgerr *e = NLMSG_DATA(h);
                        return e->error < 0 ? e->error : -ENOENT;
                }
                if (h->nlmsg_type == NLMSG_DONE)
                        break;
                if (h->nlmsg_type != SOCK_DIAG_BY_FAMILY ||
                    h->nlmsg_len < NLMSG_LENGTH(sizeof(struct inet_diag_msg)))
                        continue;
                const struct inet_diag_msg *d = NLMSG_DATA(h);
                *ret_uid = d->idiag_uid;
                *ret_inode = d->idiag_inode;
                return 0;
        }
        return -ENOENT;
}

int peer_pid_of_inode(const char *proc_root, uint64_t inode, pid_t *ret_pid) {
        char want[64], path[512], link[64];
        DIR *proc = opendir(proc_root);
        struct dirent *de;

        if (!proc)
                return -errno;
        snprintf(want, sizeof(want), "socket:[%" PRIu64 "]", inode);
        while ((de = readdir(proc))) {
                char *end;
                long pid = strtol(de->d_name, &end, 10);
                if (*end || pid <= 0)
                        continue;
                snprintf(path, sizeof(path), "%s/%ld/fd", proc_root, pid);
                DIR *fds = opendir(path);
                if (!fds)
                        continue;
                struct dirent *fe;
                while ((fe = readdir(fds))) {
                        if (fe->d_name[0] == '.')
                                continue;
                        snprintf(path, sizeof(path), "%s/%ld/fd/%s", proc_root, pid, fe->d_name);
                        ssize_t k = readlink(path, link, sizeof(link) - 1);
                        if (k <= 0)
                                continue;
                        link[k] = '\0';
                        if (strcmp(link, want) == 0) {
                                closedir(fds);
                                closedir(proc);
                                *ret_pid = (pid_t)pid;
                                return 0;
                        }
                }
                closedir(fds);
        }
        closedir(proc);
        return -ESRCH;
}

static bool is_loopback(const struct sockaddr_storage *ss) {
        if (ss->ss_family == AF_INET)
                return (ntohl(((const struct sockaddr_in *)ss)->sin_addr.s_addr) >> 24) == 127;
        if (ss->ss_family == AF_INET6) {
                const struct in6_addr *a = &((const struct sockaddr_in6 *)ss)->sin6_addr;
                if (IN6_IS_ADDR_LOOPBACK(a))
                        return true;
                return IN6_IS_ADDR_V4MAPPED(a) && a->s6_addr[12] == 127;
        }
        return false;
}

int peer_identify(int fd, uid_t *ret_uid, pid_t *ret_pid) {
        struct sockaddr_storage ours, theirs;
        socklen_t len = sizeof(ours);
        uint64_t inode;
        uid_t uid;
        pid_t pid = 0;
        int r;

        if (getsockname(fd, (struct sockaddr *)&ours, &len) < 0)
                return -errno;
        if (ours.ss_family == AF_UNIX) {
                struct ucred cred;
                socklen_t cl = sizeof(cred);
                if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &cl) < 0)
                        return -errno;
                *ret_uid = cred.uid;
                *ret_pid = cred.pid;
                return 0;
        }
        len = sizeof(theirs);
        if (getpeername(fd, (struct sockaddr *)&theirs, &len) < 0)
                return -errno;
        if (!is_loopback(&theirs))
                return -EADDRNOTAVAIL;
        /* The client's socket: its local address is our peer, its remote address is us. */
        r = peer_sock_diag(&theirs, &ours, &uid, &inode);
        if (r < 0)
                return r;
        if (peer_pid_of_inode("/proc", inode, &pid) < 0)
                pid = 0;
        *ret_uid = uid;
        *ret_pid = pid;
        return 0;
}
