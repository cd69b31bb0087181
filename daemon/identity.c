/* SPDX-License-Identifier: MIT */
/*
 * Peer identity: SO_PEERCRED for pid/uid/gid, SO_PEERGROUPS for the groups,
 * /proc/PID/stat for the command name and the start time, /proc/PID/exe for
 * the executable, libsystemd for the cgroup. A few reads per connection;
 * nothing per message.
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

#include <systemd/sd-login.h>

#include "identity.h"
#include "macro.h"
#include "procfs.h"

/* Root and the daemon's own user. */
static bool uid_is_admin(uid_t uid) {
        static uid_t euid = (uid_t)-1;

        if (euid == (uid_t)-1)
                euid = geteuid();
        return uid == 0 || uid == euid;
}

int identity_from_socket(int fd, Identity *ret) {
        struct ucred cred;
        socklen_t len = sizeof(cred);

        if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0)
                return -errno;
        if (len != sizeof(cred) || cred.pid <= 0)
                return -ENODATA;
        *ret = (Identity){.pid = cred.pid, .uid = cred.uid, .gid = cred.gid};
        ret->admin = uid_is_admin(cred.uid);
        return 0;
}

/* Room for this many groups at first: most users have fewer. */
#define PEER_GROUPS_INITIAL 64

int identity_peer_groups(int fd, gid_t **ret, size_t *ret_n) {
        _cleanup_free_ gid_t *groups = NULL;
        size_t n = PEER_GROUPS_INITIAL;

        *ret = NULL;
        *ret_n = 0;
        /* The kernel says how much room the list needs when it has too
         * little (ERANGE and optlen); the list is fixed at connect() and at
         * most NGROUPS_MAX (65536) long, so this ends. */
        for (;;) {
                socklen_t len = (socklen_t)(n * sizeof(gid_t));
                gid_t *g = realloc(groups, n * sizeof(gid_t));

                if (!g)
                        return -ENOMEM;
                groups = g;
                if (getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, groups, &len) == 0) {
                        n = len / sizeof(gid_t);
                        break;
                }
                if (errno != ERANGE)
                        return -errno;
                if (len / sizeof(gid_t) <= n)
                        return -EIO; /* it asks for no more room than it had */
                n = len / sizeof(gid_t);
        }
        *ret_n = n;
        *ret = n > 0 ? TAKE_PTR(groups) : NULL;
        return 0;
}

void identity_set_admin_groups(Identity *id, const gid_t *groups, size_t n, bool has_admin_gid,
                               gid_t admin_gid) {
        if (!has_admin_gid || id->admin)
                return;
        if (id->gid == admin_gid) {
                id->admin = true;
                return;
        }
        for (size_t i = 0; i < n; i++)
                if (groups[i] == admin_gid) {
                        id->admin = true;
                        return;
                }
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
        return id->admin;
}

int identity_read_units(pid_t pid, CgroupUnits *ret) {
        _cleanup_free_ char *path = NULL, *pid1_path = NULL;
        int r;

        *ret = (CgroupUnits){};
        if (pid <= 0)
                return -EINVAL;
        r = sd_pid_get_cgroup(pid, &path);
        if (r < 0)
                return r == -ENOENT ? -ESRCH : r;
        /* Where PID 1 is cannot be read (ProtectProc=invisible hides it):
         * then, as on a host without systemd, nothing is shifted. */
        if (sd_pid_get_cgroup(1, &pid1_path) < 0)
                pid1_path = mfree(pid1_path);
        return cgroup_units_parse(cgroup_path_shift(path, pid1_path), ret);
}

/* The longest exe link followed: the kernel gives at most PATH_MAX. */
#define EXE_LINK_MAX 65536

int identity_read_exe(const char *proc_root, pid_t pid, char **ret_basename) {
        static const char deleted[] = " (deleted)";
        _cleanup_free_ char *target = NULL;
        char path[256];
        const char *base;
        size_t size = 1024, n;
        char *name;

        if (pid <= 0)
                return -EINVAL;
        snprintf(path, sizeof(path), "%s/%d/exe", proc_root, (int)pid);
        for (;;) {
                char *t = realloc(target, size);
                ssize_t k;

                if (!t)
                        return -ENOMEM;
                target = t;
                k = readlink(path, target, size);
                if (k < 0)
                        return -errno;
                if ((size_t)k < size) {
                        n = (size_t)k;
                        break;
                }
                if (size >= EXE_LINK_MAX)
                        return -ENAMETOOLONG;
                size *= 2;
        }
        target[n] = 0;
        if (n >= sizeof(deleted) - 1 && strcmp(target + n - (sizeof(deleted) - 1), deleted) == 0)
                target[n -= sizeof(deleted) - 1] = 0;
        base = strrchr(target, '/');
        base = base ? base + 1 : target;
        if (!*base)
                return -EINVAL; /* "/" or nothing: no name to match */
        name = strdup(base);
        if (!name)
                return -ENOMEM;
        *ret_basename = name;
        return 0;
}

int identity_read_other(const char *proc_root, pid_t pid, Identity *ret, gid_t **ret_groups, size_t *ret_n) {
        char path[256], text[4096];
        _cleanup_close_ int fd = -1;
        uint32_t uid, gid, *groups;
        Identity id = {.pid = pid};
        ssize_t n;
        size_t n_groups;
        int r;

        _Static_assert(sizeof(gid_t) == sizeof(uint32_t), "groups are read as uint32_t");
        *ret_groups = NULL;
        *ret_n = 0;
        if (pid <= 0 || identity_read_proc(proc_root, &id) < 0)
                return -ESRCH;
        snprintf(path, sizeof(path), "%s/%d/status", proc_root, (int)pid);
        fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
                return -ESRCH;
        /* Groups: comes before the long lines (Cpus_allowed, ...); a process
         * in thousands of groups is cut off here and fails to parse. */
        n = read(fd, text, sizeof(text) - 1);
        if (n <= 0)
                return -ESRCH;
        r = procfs_parse_status(text, (size_t)n, &uid, &gid, &groups, &n_groups);
        if (r == -ENOMEM)
                return r;
        if (r < 0)
                return -ESRCH;
        /* Both went by pid: the same process only if it started when the first read said. */
        {
                Identity again = {.pid = pid};

                if (identity_read_proc(proc_root, &again) < 0 || again.start_time != id.start_time) {
                        free(groups);
                        return -ESRCH;
                }
        }
        id.uid = uid;
        id.gid = gid;
        *ret = id;
        *ret_groups = (gid_t *)groups;
        *ret_n = n_groups;
        return 0;
}
