/* SPDX-License-Identifier: MIT */
/*
 * proxy/peer.c against real sockets: the kernel's NETLINK_SOCK_DIAG answer
 * for a loopback TCP connection names this process's uid and the client
 * socket's inode (the one fstat() sees), /proc finds this process by that
 * inode, peer_identify() on the accepted side gives our uid and pid over
 * IPv4 and IPv6 and SO_PEERCRED on a Unix socket; a closed 4-tuple is
 * unknown (-ENOENT), and a fixture /proc without the inode is -ESRCH.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "peer.h"
#include "tb-check.h"

typedef struct Pair {
        int listener, client, server;
} Pair;

/* A connected loopback TCP pair of family (AF_INET or AF_INET6); false when the family is missing. */
static bool tcp_pair(int family, Pair *p) {
        struct sockaddr_storage ss = {.ss_family = (sa_family_t)family};
        socklen_t len = family == AF_INET ? sizeof(struct sockaddr_in) : sizeof(struct sockaddr_in6);

        if (family == AF_INET)
                ((struct sockaddr_in *)&ss)->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        else
                ((struct sockaddr_in6 *)&ss)->sin6_addr = in6addr_loopback;
        p->listener = socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (p->listener < 0 || bind(p->listener, (struct sockaddr *)&ss, len) < 0) {
                if (p->listener >= 0)
                        close(p->listener);
                return false;
        }
        ck_assert_int_eq(listen(p->listener, 4), 0);
        ck_assert_int_eq(getsockname(p->listener, (struct sockaddr *)&ss, &len), 0);
        p->client = socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);
        ck_assert_int_ge(p->client, 0);
        ck_assert_int_eq(connect(p->client, (struct sockaddr *)&ss, len), 0);
        p->server = accept4(p->listener, NULL, NULL, SOCK_CLOEXEC);
        ck_assert_int_ge(p->server, 0);
        return true;
}

static void pair_close(Pair *p) {
        close(p->client);
        close(p->server);
        close(p->listener);
}

static void check_diag(int family) {
        struct sockaddr_storage local, remote;
        socklen_t len = sizeof(local);
        struct stat st;
        uint64_t inode = 0;
        uid_t uid = (uid_t)-1;
        pid_t pid = 0;
        Pair p;

        if (!tcp_pair(family, &p)) {
                tb_check_skip("no loopback for family %d here", family);
                return;
        }
        ck_assert_int_eq(getsockname(p.client, (struct sockaddr *)&local, &len), 0);
        len = sizeof(remote);
        ck_assert_int_eq(getpeername(p.client, (struct sockaddr *)&remote, &len), 0);
        ck_assert_int_eq(fstat(p.client, &st), 0);

        int r = peer_sock_diag(&local, &remote, &uid, &inode);
        ck_assert_msg(r == 0, "peer_sock_diag: %s", strerror(-r));
        ck_assert_uint_eq(uid, getuid());
        ck_assert_uint_eq(inode, (uint64_t)st.st_ino);

        ck_assert_int_eq(peer_pid_of_inode("/proc", inode, &pid), 0);
        ck_assert_int_eq(pid, getpid());

        uid = (uid_t)-1;
        pid = 0;
        ck_assert_int_eq(peer_identify(p.server, &uid, &pid), 0);
        ck_assert_uint_eq(uid, getuid());
        ck_assert_int_eq(pid, getpid());

        /* The accepted socket's own tuple, read from our side, is a different socket (the server's): its
         * inode is not the client's. */
        ck_assert_int_eq(peer_sock_diag(&remote, &local, &uid, &inode), 0);
        ck_assert_uint_ne(inode, (uint64_t)st.st_ino);
        pair_close(&p);

        /* Gone: the kernel knows no such socket (a TIME_WAIT entry has inode 0 and no owner). */
        r = peer_sock_diag(&local, &remote, &uid, &inode);
        ck_assert_msg(r == -ENOENT || (r == 0 && inode == 0), "a closed tuple: %d inode %llu", r,
                      (unsigned long long)inode);
}

START_TEST(test_diag_ipv4) {
        check_diag(AF_INET);
}
END_TEST

START_TEST(test_diag_ipv6) {
        check_diag(AF_INET6);
}
END_TEST

START_TEST(test_unix_peercred) {
        int sv[2];
        uid_t uid = (uid_t)-1;
        pid_t pid = 0;

        ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
        ck_assert_int_eq(peer_identify(sv[0], &uid, &pid), 0);
        ck_assert_uint_eq(uid, getuid());
        ck_assert_int_eq(pid, getpid());
        close(sv[0]);
        close(sv[1]);
}
END_TEST

START_TEST(test_pid_fixture) {
        char dir[] = "/tmp/test-peer-XXXXXX", path[256];
        pid_t pid = 0;

        ck_assert_ptr_nonnull(mkdtemp(dir));
        snprintf(path, sizeof(path), "%s/42", dir);
        ck_assert_int_eq(mkdir(path, 0755), 0);
        snprintf(path, sizeof(path), "%s/42/fd", dir);
        ck_assert_int_eq(mkdir(path, 0755), 0);
        snprintf(path, sizeof(path), "%s/42/fd/3", dir);
        ck_assert_int_eq(symlink("socket:[12345]", path), 0);
        snprintf(path, sizeof(path), "%s/self", dir);
        ck_assert_int_eq(mkdir(path, 0755), 0);

        ck_assert_int_eq(peer_pid_of_inode(dir, 12345, &pid), 0);
        ck_assert_int_eq(pid, 42);
        ck_assert_int_eq(peer_pid_of_inode(dir, 1234, &pid), -ESRCH);
        ck_assert_int_eq(peer_pid_of_inode("/nonexistent-proc", 1, &pid), -ENOENT);

        snprintf(path, sizeof(path), "rm -rf %s", dir);
        ck_assert_int_eq(system(path), 0);
}
END_TEST

int main(void) {
        Suite *s = suite_create("peer");
        TCase *tc = tcase_create("peer");

        tcase_add_test(tc, test_diag_ipv4);
        tcase_add_test(tc, test_diag_ipv6);
        tcase_add_test(tc, test_unix_peercred);
        tcase_add_test(tc, test_pid_fixture);
        suite_add_tcase(s, tc);
        return tb_check_main(s);
}
