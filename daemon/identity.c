/* SPDX-License-Identifier: MIT */
/*
 * Peer identity: SO_PEERCRED for pid/uid/gid, /proc/PID/stat for the command
 * name and the start time. One open+read+close per connection; nothing per
 * message.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "identity.h"
#include "macro.h"

int identity_from_socket(int fd, Identity *ret) {
        struct ucred cred;
        socklen_t len = sizeof(cred);

        if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0)
                return -errno;
        if (len != sizeof(cred) || cred.pid <= 0)
                return -ENODATA;
        *ret = (Identity){.pid = cred.pid, .uid = cred.uid, .gid = cred.gid};
        return 0;
}

int identity_parse_stat(const char *text, size_t len, char ret_comm[IDENTITY_COMM_MAX],
                        uint64_t *ret_start_time) {
        const char *open, *close_paren, *p, *end = text + len;
        size_t n;

        /* "PID (COMM) STATE PPID ..." where COMM may itself contain ") ", so
         * the command ends at the last ')'. */
        open = memchr(text, '(', len);
        if (!open)
                return -EINVAL;
        close_paren = NULL;
        for (p = end; p > open; p--)
                if (p[-1] == ')') {
                        close_paren = p - 1;
                        break;
                }
        if (!close_paren)
                return -EINVAL;
        n = (size_t)(close_paren - open - 1);
        if (n >= IDENTITY_COMM_MAX)
                n = IDENTITY_COMM_MAX - 1;
        memcpy(ret_comm, open + 1, n);
        ret_comm[n] = 0;
        for (size_t i = 0; i < n; i++)
                if ((unsigned char)ret_comm[i] < 0x20 || ret_comm[i] == 0x7f)
                        ret_comm[i] = '?';

        /* Field 3 (state) follows ") "; the start time is field 22. */
        p = close_paren + 1;
        for (int field = 3; field < 22; field++) {
                p = memchr(p + 1, ' ', (size_t)(end - p - 1));
                if (!p || p + 1 >= end)
                        return -EINVAL;
        }
        char buf[24];
        size_t m = 0;
        for (p++; p < end && *p >= '0' && *p <= '9' && m < sizeof(buf) - 1; p++)
                buf[m++] = *p;
        if (m == 0)
                return -EINVAL;
        buf[m] = 0;
        *ret_start_time = strtoull(buf, NULL, 10);
        return 0;
}

int identity_read_proc(const char *proc_root, Identity *id) {
        char path[256], text[1024];
        _cleanup_close_ int fd = -1;
        ssize_t n;
        int r;

        snprintf(path, sizeof(path), "%s/%d/stat", proc_root, (int)id->pid);
        fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
                r = -errno;
        else {
                n = read(fd, text, sizeof(text) - 1);
                if (n < 0)
                        r = -errno;
                else
                        r = identity_parse_stat(text, (size_t)n, id->comm, &id->start_time);
        }
        if (r < 0) {
                strcpy(id->comm, "?");
                id->start_time = 0;
        }
        return r;
}
