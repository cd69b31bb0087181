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
#include "procfs.h"

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
                        r = procfs_parse_stat(text, (size_t)n, id->comm, &id->start_time);
        }
        if (r < 0) {
                strcpy(id->comm, "?");
                id->start_time = 0;
        }
        return r;
}

bool identity_is_admin(const Identity *id) {
        static uid_t euid = (uid_t)-1;

        if (euid == (uid_t)-1)
                euid = geteuid();
        return id->uid == 0 || id->uid == euid;
}
