/* SPDX-License-Identifier: MIT */
/*
 * queue: the cost of one hand-off through a full queue of tokenbudgetd.
 *
 *   queue --socket PATH --waiters N [--handoffs H] [--tokens C]
 *
 * The daemon's global max_tokens_in_flight must be C (100 by default) and
 * every other limit out of reach. One connection holds all C tokens; N more
 * each Request C tokens with a long waitUsec, so N requests wait. Then, H
 * times: the holder of the grant releases it, the daemon grants the head
 * waiter (its deferred reply arrives), and that connection queues again
 * behind the others, so the queue stays N long. Prints
 *   waiters=N handoffs=H usec_per_handoff=X
 * where X is the wall time per hand-off (release sent to the next grant
 * read), measured with epoll on the client side so the client's own cost
 * does not grow with N. Exit status 1 when the daemon answers an error.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <getopt.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

typedef struct Conn {
        int fd;
        char buf[4096];
        size_t len;
} Conn;

static uint64_t now_usec(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static void die(const char *what) {
        fprintf(stderr, "queue: %s: %s\n", what, strerror(errno));
        exit(1);
}

static int conn_open(const char *path) {
        struct sockaddr_un sa = {.sun_family = AF_UNIX};
        int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

        if (fd < 0)
                die("socket");
        snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
        if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0)
                die("connect");
        return fd;
}

static void send_msg(Conn *c, const char *msg) {
        size_t n = strlen(msg) + 1;
        if (write(c->fd, msg, n) != (ssize_t)n)
                die("write");
}

/* Reads one NUL-terminated reply (blocking) into out. */
static void recv_msg(Conn *c, char *out, size_t size) {
        for (;;) {
                char *nul = memchr(c->buf, 0, c->len);
                ssize_t n;

                if (nul) {
                        size_t len = (size_t)(nul - c->buf) + 1;
                        snprintf(out, size, "%s", c->buf);
                        memmove(c->buf, c->buf + len, c->len - len);
                        c->len -= len;
                        return;
                }
                n = read(c->fd, c->buf + c->len, sizeof(c->buf) - c->len);
                if (n <= 0) {
                        errno = n == 0 ? ECONNRESET : errno;
                        die("read");
                }
                c->len += (size_t)n;
        }
}

/* The allocation id of a grant, or exits on an error reply. */
static void grant_id(const char *reply, char id[static 17]) {
        const char *p = strstr(reply, "\"allocation\":\"");

        if (strstr(reply, "\"error\"") || !p) {
                fprintf(stderr, "queue: the daemon answered: %s\n", reply);
                exit(1);
        }
        memcpy(id, p + 14, 16);
        id[16] = 0;
}

static void request(Conn *c, uint64_t tokens, bool wait) {
        char msg[256];
        snprintf(msg, sizeof(msg),
                 "{\"method\":\"io.tokenbudget.agent.Request\",\"parameters\":{\"estimate\":%llu%s}}",
                 (unsigned long long)tokens, wait ? ",\"waitUsec\":3600000000" : "");
        send_msg(c, msg);
}

static void release(Conn *c, const char *id) {
        char msg[256], reply[4096];
        snprintf(msg, sizeof(msg),
                 "{\"method\":\"io.tokenbudget.agent.Release\",\"parameters\":{\"allocation\":\"%s\"}}", id);
        send_msg(c, msg);
        recv_msg(c, reply, sizeof(reply));
        if (strstr(reply, "\"error\"")) {
                fprintf(stderr, "queue: Release answered: %s\n", reply);
                exit(1);
        }
}

int main(int argc, char **argv) {
        static const struct option options[] = {
                {"socket", required_argument, NULL, 's'},
                {"waiters", required_argument, NULL, 'w'},
                {"handoffs", required_argument, NULL, 'h'},
                {"tokens", required_argument, NULL, 't'},
                {},
        };
        const char *path = NULL;
        long waiters = 0, handoffs = 2000, tokens = 100;
        char reply[4096], id[17];
        Conn holder, *w;
        int ep, opt;
        uint64_t t0, t1;

        while ((opt = getopt_long(argc, argv, "", options, NULL)) >= 0)
                switch (opt) {
                case 's':
                        path = optarg;
                        break;
                case 'w':
                        waiters = strtol(optarg, NULL, 10);
                        break;
                case 'h':
                        handoffs = strtol(optarg, NULL, 10);
                        break;
                case 't':
                        tokens = strtol(optarg, NULL, 10);
                        break;
                default:
                        return 2;
                }
        if (!path || waiters < 1 || handoffs < 1 || tokens < 1) {
                fprintf(stderr, "usage: queue --socket PATH --waiters N [--handoffs H] [--tokens C]\n");
                return 2;
        }
        w = calloc((size_t)waiters, sizeof(*w));
        ep = epoll_create1(EPOLL_CLOEXEC);
        if (!w || ep < 0)
                die("setup");
        holder = (Conn){.fd = conn_open(path)};
        request(&holder, (uint64_t)tokens, false);
        recv_msg(&holder, reply, sizeof(reply));
        grant_id(reply, id);
        for (long i = 0; i < waiters; i++) {
                struct epoll_event ev = {.events = EPOLLIN, .data.u64 = (uint64_t)i};
                w[i].fd = conn_open(path);
                if (epoll_ctl(ep, EPOLL_CTL_ADD, w[i].fd, &ev) < 0)
                        die("epoll_ctl");
                request(&w[i], (uint64_t)tokens, true);
        }
        /* Every waiter is queued once GetInfo answers behind them on the holder:
         * the daemon handles them in order of arrival only per connection, so
         * give it a moment instead. */
        usleep(200000);

        t0 = now_usec();
        release(&holder, id);
        for (long k = 0; k < handoffs; k++) {
                struct epoll_event ev;
                Conn *c;
                int n = epoll_wait(ep, &ev, 1, 10000);

                if (n <= 0) {
                        fprintf(stderr, "queue: no grant within 10 s after %ld hand-offs\n", k);
                        return 1;
                }
                c = &w[ev.data.u64];
                recv_msg(c, reply, sizeof(reply));
                grant_id(reply, id);
                /* Queue again behind the others, then hand the tokens on. */
                release(c, id);
                request(c, (uint64_t)tokens, true);
        }
        t1 = now_usec();
        printf("waiters=%ld handoffs=%ld usec_per_handoff=%.2f\n", waiters, handoffs,
               (double)(t1 - t0) / (double)handoffs);
        return 0;
}
