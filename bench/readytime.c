/* SPDX-License-Identifier: MIT */
/*
 * readytime: starts a service the way systemd's Type=notify does and times
 * it from exec to READY=1. It binds a Unix datagram socket, passes it as
 * NOTIFY_SOCKET, forks and execs the command (stdout and stderr to --log),
 * and waits for a datagram with a READY=1 line. With --runs N it does this N
 * times, stopping each instance but the last with SIGTERM. It prints
 * `ready_usec=MEDIAN ready_usec_all=A,B,... pid=PID` and closes stdout; then
 * it stops the last instance too (--stop), or stays its parent until it
 * exits (the bench stops it by pid) and exits with its status, so no
 * orphan is left behind.
 *
 * What it does not do: supervise the service after READY, or read any other
 * notify message.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define RUNS_MAX 32
/* A daemon that is not ready in 10 s is broken, not slow. */
#define READY_TIMEOUT_MSEC 10000

static uint64_t now_usec(void) {
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static int notify_socket(const char *path) {
        struct sockaddr_un sa = {.sun_family = AF_UNIX};
        int fd;

        if (strlen(path) >= sizeof(sa.sun_path))
                return -ENAMETOOLONG;
        strcpy(sa.sun_path, path);
        (void)unlink(path);
        fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        if (fd < 0)
                return -errno;
        if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
                int r = -errno;
                close(fd);
                return r;
        }
        return fd;
}

static bool has_ready(const char *msg) {
        for (const char *p = msg; p; p = strchr(p, '\n')) {
                if (*p == '\n')
                        p++;
                if (strncmp(p, "READY=1", 7) == 0 && (p[7] == '\n' || p[7] == 0))
                        return true;
        }
        return false;
}

static pid_t spawn(char **argv, const char *notify_path, const char *log_path) {
        pid_t pid = fork();

        if (pid != 0)
                return pid;
        if (log_path) {
                int fd = open(log_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
                if (fd < 0 || dup2(fd, STDOUT_FILENO) < 0 || dup2(fd, STDERR_FILENO) < 0)
                        _exit(127);
        }
        setenv("NOTIFY_SOCKET", notify_path, 1);
        execv(argv[0], argv);
        fprintf(stderr, "readytime: cannot exec %s: %s\n", argv[0], strerror(errno));
        _exit(127);
}

/* Waits for READY=1 from pid; fails if the child exits first. */
static int wait_ready(int fd, pid_t pid) {
        uint64_t deadline = now_usec() + READY_TIMEOUT_MSEC * 1000u;

        while (now_usec() < deadline) {
                struct pollfd p = {.fd = fd, .events = POLLIN};
                char buf[4096];
                ssize_t n;

                if (waitpid(pid, NULL, WNOHANG) == pid)
                        return -ECHILD;
                if (poll(&p, 1, 50) <= 0)
                        continue;
                n = recv(fd, buf, sizeof(buf) - 1, 0);
                if (n < 0)
                        return -errno;
                buf[n] = 0;
                if (has_ready(buf))
                        return 0;
        }
        return -ETIMEDOUT;
}

static int cmp_u64(const void *a, const void *b) {
        uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

        return x < y ? -1 : x > y;
}

static int stop(pid_t pid) {
        int status;

        if (kill(pid, SIGTERM) < 0 || waitpid(pid, &status, 0) != pid)
                return -errno;
        return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : -EPROTO;
}

/* The last instance runs until someone stops it; its status is ours. */
static int wait_exit(pid_t pid) {
        int status;

        while (waitpid(pid, &status, 0) < 0)
                if (errno != EINTR)
                        return 1;
        if (WIFEXITED(status))
                return WEXITSTATUS(status);
        return WIFSIGNALED(status) ? 128 + WTERMSIG(status) : 1;
}

int main(int argc, char **argv) {
        const char *log_path = NULL;
        char notify_path[108];
        uint64_t ready[RUNS_MAX], sorted[RUNS_MAX];
        unsigned runs = 1;
        bool stop_last = false;
        pid_t pid = 0;
        int i = 1, fd;

        for (; i < argc && strcmp(argv[i], "--") != 0; i++)
                if (strcmp(argv[i], "--runs") == 0 && i + 1 < argc)
                        runs = (unsigned)strtoul(argv[++i], NULL, 10);
                else if (strcmp(argv[i], "--log") == 0 && i + 1 < argc)
                        log_path = argv[++i];
                else if (strcmp(argv[i], "--stop") == 0)
                        stop_last = true;
                else
                        break;
        if (i + 1 >= argc || strcmp(argv[i], "--") != 0 || runs < 1 || runs > RUNS_MAX) {
                fprintf(stderr,
                        "usage: readytime [--runs N] [--log FILE] [--stop] -- /path/to/daemon ARGS...\n");
                return 2;
        }
        snprintf(notify_path, sizeof(notify_path), "/tmp/readytime.%d.notify", (int)getpid());
        fd = notify_socket(notify_path);
        if (fd < 0) {
                fprintf(stderr, "readytime: %s: %s\n", notify_path, strerror(-fd));
                return 1;
        }
        for (unsigned run = 0; run < runs; run++) {
                uint64_t t0 = now_usec();
                int r;

                pid = spawn(argv + i + 1, notify_path, log_path);
                if (pid < 0)
                        return 1;
                r = wait_ready(fd, pid);
                ready[run] = now_usec() - t0;
                if (r < 0) {
                        fprintf(stderr, "readytime: %s did not become ready: %s\n", argv[i + 1],
                                strerror(-r));
                        kill(pid, SIGKILL);
                        unlink(notify_path);
                        return 1;
                }
                if ((run + 1 < runs || stop_last) && stop(pid) < 0) {
                        fprintf(stderr, "readytime: %s did not stop cleanly on SIGTERM\n", argv[i + 1]);
                        unlink(notify_path);
                        return 1;
                }
        }
        unlink(notify_path);
        memcpy(sorted, ready, runs * sizeof(uint64_t));
        qsort(sorted, runs, sizeof(uint64_t), cmp_u64);
        printf("ready_usec=%llu ready_usec_all=", (unsigned long long)sorted[runs / 2]);
        for (unsigned run = 0; run < runs; run++)
                printf("%s%llu", run ? "," : "", (unsigned long long)ready[run]);
        printf(" pid=%d\n", stop_last ? 0 : (int)pid);
        if (fclose(stdout) != 0 || stop_last)
                return stop_last ? 0 : 1;
        return wait_exit(pid);
}
