/* SPDX-License-Identifier: MIT */
/*
 * floor: the physical limit of the benchmark. A minimal epoll server on a
 * Unix stream socket that answers each NUL-terminated message with a canned
 * reply of exactly the size tokenbudgetd sends for that method (sizes given
 * with --sizes, measured by `loadgen --capture`), so loadgen drives it with
 * the same bytes and the same number of round trips as the daemon. Per
 * message it costs what any server must: epoll_wait, one read, one write.
 *
 * What it does not do: parse JSON, keep any state, or look at a message
 * beyond finding its NUL and the one letter that tells Request, Report and
 * Release apart (loadgen always puts "method" first).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#define IN_MAX_BYTES    16384
#define OUT_MAX_BYTES   65536
#define EPOLL_BATCH     512
#define REPLY_MAX_BYTES 1024

typedef struct Conn {
        int fd;
        size_t in_len;
        size_t out_len, out_off;
        bool want_out; /* EPOLLOUT is armed: a short write is pending */
        char in[IN_MAX_BYTES];
        char out[OUT_MAX_BYTES];
} Conn;

/* The letter after this prefix tells the call: reQuest, rePort, reLease. */
static const char method_prefix[] = "{\"method\":\"io.tokenbudget.agent.Re";

static char replies[3][REPLY_MAX_BYTES];
static size_t reply_bytes[3];
static int epoll_fd = -1;

/* A valid Varlink reply of exactly size bytes (with its NUL), padded by a
 * string parameter, carrying what loadgen reads (the allocation id). */
static int make_reply(unsigned kind, size_t size) {
        static const char *const heads[3] = {
                "{\"parameters\":{\"allocation\":\"0000000000000001\",\"pad\":\"",
                "{\"parameters\":{\"state\":\"ok\",\"pad\":\"",
                "{\"parameters\":{\"used\":0,\"pad\":\"",
        };
        static const char tail[] = "\"}}";
        size_t head = strlen(heads[kind]);

        if (size > REPLY_MAX_BYTES || size < head + strlen(tail) + 1)
                return -EINVAL;
        memcpy(replies[kind], heads[kind], head);
        memset(replies[kind] + head, 'x', size - head - strlen(tail) - 1);
        memcpy(replies[kind] + size - strlen(tail) - 1, tail, strlen(tail) + 1);
        reply_bytes[kind] = size;
        return 0;
}

static int reply_kind(const char *msg, size_t len) {
        size_t at = sizeof(method_prefix) - 1;

        if (len <= at)
                return -EBADMSG;
        switch (msg[at]) {
        case 'q':
                return 0;
        case 'p':
                return 1;
        case 'l':
                return 2;
        default:
                return -EBADMSG;
        }
}

static void conn_close(Conn *c) {
        close(c->fd); /* also removes it from the epoll set */
        free(c);
}

static int conn_flush(Conn *c) {
        struct epoll_event ev = {.data.ptr = c};

        while (c->out_off < c->out_len) {
                ssize_t n = write(c->fd, c->out + c->out_off, c->out_len - c->out_off);
                if (n < 0) {
                        if (errno != EAGAIN)
                                return -errno;
                        if (c->want_out)
                                return 0;
                        c->want_out = true;
                        ev.events = EPOLLIN | EPOLLOUT;
                        return epoll_ctl(epoll_fd, EPOLL_CTL_MOD, c->fd, &ev) < 0 ? -errno : 0;
                }
                c->out_off += (size_t)n;
        }
        c->out_len = c->out_off = 0;
        if (c->want_out) {
                c->want_out = false;
                ev.events = EPOLLIN;
                return epoll_ctl(epoll_fd, EPOLL_CTL_MOD, c->fd, &ev) < 0 ? -errno : 0;
        }
        return 0;
}

/* Queues one reply per complete message read so far. */
static int conn_answer(Conn *c) {
        size_t off = 0;

        for (char *nul; off < c->in_len && (nul = memchr(c->in + off, 0, c->in_len - off));) {
                size_t len = (size_t)(nul - (c->in + off)) + 1;
                int kind = reply_kind(c->in + off, len);

                if (kind < 0 || c->out_len + reply_bytes[kind] > OUT_MAX_BYTES)
                        return -EBADMSG;
                memcpy(c->out + c->out_len, replies[kind], reply_bytes[kind]);
                c->out_len += reply_bytes[kind];
                off += len;
        }
        memmove(c->in, c->in + off, c->in_len - off);
        c->in_len -= off;
        return 0;
}

static int conn_on_event(Conn *c, uint32_t events) {
        if (events & (EPOLLIN | EPOLLHUP | EPOLLERR)) {
                ssize_t n = read(c->fd, c->in + c->in_len, sizeof(c->in) - c->in_len);
                int r;

                if (n == 0)
                        return -ECONNRESET;
                if (n < 0)
                        return errno == EAGAIN ? 0 : -errno;
                c->in_len += (size_t)n;
                if (c->in_len == sizeof(c->in))
                        return -EMSGSIZE;
                r = conn_answer(c);
                if (r < 0)
                        return r;
        }
        /* A pending reply is written now; EPOLLOUT only retries a short write. */
        return conn_flush(c);
}

static void accept_all(int listen_fd) {
        for (;;) {
                int fd = accept4(listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
                struct epoll_event ev = {.events = EPOLLIN};
                Conn *c;

                if (fd < 0)
                        return;
                c = malloc(sizeof(*c));
                if (!c) {
                        close(fd);
                        continue;
                }
                c->fd = fd;
                c->in_len = c->out_len = c->out_off = 0;
                c->want_out = false;
                ev.data.ptr = c;
                if (epoll_ctl(epoll_fd, EPOLL_CTL_ADD, fd, &ev) < 0)
                        conn_close(c);
        }
}

static int listen_unix(const char *path, int *ret_fd) {
        struct sockaddr_un sa = {.sun_family = AF_UNIX};
        int fd;

        if (strlen(path) >= sizeof(sa.sun_path))
                return -ENAMETOOLONG;
        strcpy(sa.sun_path, path);
        (void)unlink(path);
        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd < 0)
                return -errno;
        if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(fd, SOMAXCONN) < 0) {
                int r = -errno;
                close(fd);
                return r;
        }
        *ret_fd = fd;
        return 0;
}

static int parse_sizes(const char *s) {
        size_t v[3];

        if (sscanf(s, "%zu,%zu,%zu", &v[0], &v[1], &v[2]) != 3)
                return -EINVAL;
        for (unsigned i = 0; i < 3; i++)
                if (make_reply(i, v[i]) < 0)
                        return -EINVAL;
        return 0;
}

int main(int argc, char **argv) {
        struct epoll_event events[EPOLL_BATCH], lev = {.events = EPOLLIN};
        struct rlimit rl = {.rlim_cur = 20000, .rlim_max = 20000};
        int listen_fd = -1, r;

        if (argc != 5 || strcmp(argv[1], "--socket") != 0 || strcmp(argv[3], "--sizes") != 0 ||
            parse_sizes(argv[4]) < 0) {
                fprintf(stderr, "usage: floor --socket PATH --sizes REQUEST,REPORT,RELEASE\n"
                                "  (reply sizes in bytes with the NUL, from `loadgen --capture`)\n");
                return 2;
        }
        (void)setrlimit(RLIMIT_NOFILE, &rl);
        signal(SIGPIPE, SIG_IGN);
        r = listen_unix(argv[2], &listen_fd);
        epoll_fd = epoll_create1(EPOLL_CLOEXEC);
        if (r < 0 || epoll_fd < 0) {
                fprintf(stderr, "floor: cannot listen on %s: %s\n", argv[2], strerror(r < 0 ? -r : errno));
                return 1;
        }
        lev.data.ptr = NULL; /* NULL marks the listening socket */
        if (epoll_ctl(epoll_fd, EPOLL_CTL_ADD, listen_fd, &lev) < 0)
                return 1;
        for (;;) {
                int n = epoll_wait(epoll_fd, events, EPOLL_BATCH, -1);

                if (n < 0 && errno != EINTR)
                        return 1;
                for (int i = 0; i < n; i++) {
                        Conn *c = events[i].data.ptr;

                        if (!c)
                                accept_all(listen_fd);
                        else if (conn_on_event(c, events[i].events) < 0)
                                conn_close(c);
                }
        }
}
