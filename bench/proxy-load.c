/* SPDX-License-Identifier: MIT */
/*
 * proxy-load: the load generator of the proxy section. One thread, epoll over
 * --conns keep-alive HTTP/1.1 connections to 127.0.0.1:--port, each sending
 * one POST /v1/chat/completions at a time (a small non-streaming request, or
 * with --stream one that asks for a stream and its usage) and reading the whole
 * response (Content-Length or chunked) before the next. After --warmup seconds
 * it measures for --duration seconds: per-request latency (send to last byte;
 * every sample kept, sorted at the end), requests/s, the output tokens received
 * (content chunks in the decoded body, counted as they arrive) and the CPU time
 * (utime + stime from /proc/PID/stat; and the scheduler's nanosecond count of
 * all its threads, /proc/PID/task/TID/schedstat) of each --pid over the
 * measured window.
 * Any status other than 200, a closed connection, or a stream that does not
 * end in data: [DONE] is an error: it prints the reason and exits 1.
 * Output, one line: requests= rps= p50_us= p99_us= tokens= cpu0_us= run0_us= ...
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_PIDS   4
#define READ_BYTES 65536

static const char token_pattern[] = "\"content\":\" tok\"";

typedef struct Conn {
        int fd;
        size_t out_off;
        uint64_t t_start;
        char *in; /* the raw response so far */
        size_t in_len, in_cap;
        char *dec; /* the decoded body (chunked) */
        size_t dec_len, dec_cap, scanned;
        bool headers_done, chunked;
        size_t body_start, content_length, cpos; /* cpos: next chunk header in in */
} Conn;

static char request[2048];
static size_t request_len;
static uint64_t *lat;
static size_t lat_n, lat_cap;
static bool measuring;
static uint64_t tokens, requests;

static uint64_t now_ns(void) {
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static _Noreturn void fail(const char *what) {
        fprintf(stderr, "proxy-load: %s\n", what);
        exit(1);
}

/* utime + stime of pid in microseconds. */
static double cpu_us(int pid) {
        char path[64], buf[1024], *p;
        unsigned long ut, st;
        FILE *f;
        size_t n;

        snprintf(path, sizeof(path), "/proc/%d/stat", pid);
        f = fopen(path, "re");
        if (!f)
                fail("cannot read /proc/PID/stat of a --pid");
        n = fread(buf, 1, sizeof(buf) - 1, f);
        fclose(f);
        buf[n] = 0;
        p = strrchr(buf, ')');
        if (!p || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &st) != 2)
                fail("cannot parse /proc/PID/stat");
        return (double)(ut + st) * 1e6 / (double)sysconf(_SC_CLK_TCK);
}

/* The CPU time of all of pid's threads in microseconds, from the scheduler's
 * nanosecond count (/proc/PID/task/TID/schedstat, first field): the same time
 * as utime + stime without its clock-tick (10 ms) granularity. -1 when the
 * kernel has no schedstat. */
static double runtime_us(int pid) {
        char path[96], name[64];
        unsigned long long ns, sum = 0;
        struct dirent *de;
        DIR *d;
        FILE *f;

        snprintf(path, sizeof(path), "/proc/%d/task", pid);
        d = opendir(path);
        if (!d)
                return -1;
        while ((de = readdir(d))) {
                if (de->d_name[0] == '.')
                        continue;
                snprintf(name, sizeof(name), "%.20s", de->d_name);
                snprintf(path, sizeof(path), "/proc/%d/task/%s/schedstat", pid, name);
                f = fopen(path, "re");
                if (!f)
                        continue; /* a thread that ended */
                if (fscanf(f, "%llu", &ns) == 1)
                        sum += ns;
                fclose(f);
        }
        closedir(d);
        return (double)sum / 1000.0;
}

static void grow(char **buf, size_t *cap, size_t need) {
        if (need <= *cap)
                return;
        while (*cap < need)
                *cap = *cap ? *cap * 2 : 4096;
        *buf = realloc(*buf, *cap);
        if (!*buf)
                fail("out of memory");
}

static void send_request(Conn *c) {
        ssize_t n;

        c->in_len = c->dec_len = c->scanned = 0;
        c->headers_done = c->chunked = false;
        c->t_start = now_ns();
        c->out_off = 0;
        while (c->out_off < request_len) {
                n = write(c->fd, request + c->out_off, request_len - c->out_off);
                if (n < 0 && errno == EAGAIN)
                        fail("request did not fit the socket buffer");
                if (n < 0)
                        fail("write failed");
                c->out_off += (size_t)n;
        }
}

/* Counts the content chunks decoded since the last call. */
static void count_tokens(Conn *c) {
        size_t plen = sizeof(token_pattern) - 1;
        char *p;

        while (c->scanned + plen <= c->dec_len) {
                p = memmem(c->dec + c->scanned, c->dec_len - c->scanned, token_pattern, plen);
                if (!p) {
                        c->scanned = c->dec_len - plen + 1;
                        break;
                }
                if (measuring)
                        tokens++;
                c->scanned = (size_t)(p - c->dec) + plen;
        }
}

/* 1: the response is complete; 0: more to read. */
static int parse(Conn *c) {
        char *end, *line, *eol;
        unsigned long size;

        if (!c->headers_done) {
                end = memmem(c->in, c->in_len, "\r\n\r\n", 4);
                if (!end)
                        return 0;
                *end = 0;
                if (strncmp(c->in, "HTTP/1.1 200 ", 13) != 0) {
                        fprintf(stderr, "proxy-load: response: %.200s\n", c->in);
                        fail("status is not 200");
                }
                for (line = strstr(c->in, "\r\n"); line; line = strstr(line + 2, "\r\n")) {
                        if (strncasecmp(line + 2, "content-length:", 15) == 0)
                                c->content_length = strtoul(line + 17, NULL, 10);
                        else if (strncasecmp(line + 2, "transfer-encoding:", 18) == 0 &&
                                 strstr(line, "chunked"))
                                c->chunked = true;
                        else if (strncasecmp(line + 2, "connection:", 11) == 0 && strcasestr(line, "close"))
                                fail("the server closes the connection (no keep-alive)");
                }
                *end = '\r';
                c->headers_done = true;
                c->body_start = c->cpos = (size_t)(end - c->in) + 4;
        }
        if (!c->chunked) {
                if (c->in_len < c->body_start + c->content_length)
                        return 0;
                if (c->in_len > c->body_start + c->content_length)
                        fail("bytes after the response");
                grow(&c->dec, &c->dec_cap, c->content_length);
                memcpy(c->dec, c->in + c->body_start, c->content_length);
                c->dec_len = c->content_length;
                count_tokens(c);
                return 1;
        }
        for (;;) {
                eol = memmem(c->in + c->cpos, c->in_len - c->cpos, "\r\n", 2);
                if (!eol)
                        return 0;
                size = strtoul(c->in + c->cpos, NULL, 16);
                if (size == 0) {
                        if ((size_t)(eol - c->in) + 4 > c->in_len)
                                return 0;
                        if ((size_t)(eol - c->in) + 4 < c->in_len)
                                fail("bytes after the response");
                        return 1;
                }
                if ((size_t)(eol - c->in) + 2 + size + 2 > c->in_len)
                        return 0;
                grow(&c->dec, &c->dec_cap, c->dec_len + size);
                memcpy(c->dec + c->dec_len, eol + 2, size);
                c->dec_len += size;
                c->cpos = (size_t)(eol - c->in) + 2 + size + 2;
                count_tokens(c);
        }
}

static void on_readable(Conn *c, bool stream) {
        uint64_t t;
        ssize_t n;

        for (;;) {
                grow(&c->in, &c->in_cap, c->in_len + READ_BYTES);
                n = read(c->fd, c->in + c->in_len, READ_BYTES);
                if (n < 0 && errno == EAGAIN)
                        return;
                if (n < 0)
                        fail("read failed");
                if (n == 0)
                        fail("the server closed a connection");
                c->in_len += (size_t)n;
                if (parse(c) == 1)
                        break;
        }
        t = now_ns();
        if (stream && (c->dec_len < 14 || memcmp(c->dec + c->dec_len - 14, "data: [DONE]\n\n", 14) != 0))
                fail("a stream did not end in data: [DONE]");
        if (measuring) {
                if (lat_n == lat_cap) {
                        lat_cap = lat_cap ? lat_cap * 2 : 65536;
                        lat = realloc(lat, lat_cap * sizeof(*lat));
                        if (!lat)
                                fail("out of memory");
                }
                lat[lat_n++] = t - c->t_start;
                requests++;
        }
        send_request(c);
}

static int cmp_u64(const void *a, const void *b) {
        uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

        return x < y ? -1 : x > y;
}

static double pct(double p) {
        size_t i;

        if (lat_n == 0)
                return 0;
        i = (size_t)(p * (double)(lat_n - 1) + 0.5);
        return (double)lat[i] / 1000.0;
}

int main(int argc, char **argv) {
        double duration = 3, warmup = 0.5, cpu0[MAX_PIDS], cpu1[MAX_PIDS], run0[MAX_PIDS], run1[MAX_PIDS];
        int pids[MAX_PIDS], npids = 0, port = 0, nconns = 1, i, ep, n, one = 1;
        bool stream = false;
        struct epoll_event ev, evs[256];
        struct sockaddr_in sa = {.sin_family = AF_INET};
        uint64_t t0, t_measure, t_end, t;
        const char *body;
        char bodybuf[512];
        Conn *conns;

        for (i = 1; i < argc; i++) {
                if (strcmp(argv[i], "--port") == 0 && i + 1 < argc)
                        port = atoi(argv[++i]);
                else if (strcmp(argv[i], "--conns") == 0 && i + 1 < argc)
                        nconns = atoi(argv[++i]);
                else if (strcmp(argv[i], "--duration") == 0 && i + 1 < argc)
                        duration = atof(argv[++i]);
                else if (strcmp(argv[i], "--warmup") == 0 && i + 1 < argc)
                        warmup = atof(argv[++i]);
                else if (strcmp(argv[i], "--stream") == 0)
                        stream = true;
                else if (strcmp(argv[i], "--pid") == 0 && i + 1 < argc && npids < MAX_PIDS)
                        pids[npids++] = atoi(argv[++i]);
                else {
                        fprintf(stderr,
                                "usage: %s --port N [--conns N] [--duration S] [--warmup S] [--stream] "
                                "[--pid PID]...\n",
                                argv[0]);
                        return 2;
                }
        }
        if (port <= 0 || nconns <= 0 || nconns > 4096)
                fail("--port and --conns (1-4096) are required");
        signal(SIGPIPE, SIG_IGN);
        body = stream ? "{\"model\":\"bench\",\"max_tokens\":1000,\"stream\":true,"
                        "\"stream_options\":{\"include_usage\":true},"
                        "\"messages\":[{\"role\":\"user\",\"content\":\"Say ok.\"}]}"
                      : "{\"model\":\"bench\",\"max_tokens\":16,"
                        "\"messages\":[{\"role\":\"user\",\"content\":\"Say ok.\"}]}";
        snprintf(bodybuf, sizeof(bodybuf), "%s", body);
        request_len = (size_t)snprintf(request, sizeof(request),
                                       "POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n"
                                       "Content-Type: application/json\r\nAuthorization: Bearer sk-bench\r\n"
                                       "Content-Length: %zu\r\n\r\n%s",
                                       port, strlen(bodybuf), bodybuf);
        sa.sin_port = htons((uint16_t)port);
        sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        ep = epoll_create1(EPOLL_CLOEXEC);
        conns = calloc((size_t)nconns, sizeof(*conns));
        if (ep < 0 || !conns)
                fail("cannot set up");
        for (i = 0; i < nconns; i++) {
                conns[i].fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
                if (conns[i].fd < 0 || connect(conns[i].fd, (struct sockaddr *)&sa, sizeof(sa)) < 0)
                        fail("cannot connect");
                setsockopt(conns[i].fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
                if (fcntl(conns[i].fd, F_SETFL, O_NONBLOCK) < 0)
                        fail("fcntl");
                ev.events = EPOLLIN;
                ev.data.ptr = &conns[i];
                if (epoll_ctl(ep, EPOLL_CTL_ADD, conns[i].fd, &ev) < 0)
                        fail("epoll_ctl");
        }
        t0 = now_ns();
        t_measure = t0 + (uint64_t)(warmup * 1e9);
        t_end = t_measure + (uint64_t)(duration * 1e9);
        for (i = 0; i < nconns; i++)
                send_request(&conns[i]);
        for (;;) {
                t = now_ns();
                if (!measuring && t >= t_measure) {
                        for (i = 0; i < npids; i++) {
                                cpu0[i] = cpu_us(pids[i]);
                                run0[i] = runtime_us(pids[i]);
                        }
                        measuring = true;
                        t_measure = t;
                }
                if (t >= t_end)
                        break;
                n = epoll_wait(ep, evs, 256, 10);
                if (n < 0 && errno != EINTR)
                        fail("epoll_wait");
                for (i = 0; i < n; i++)
                        on_readable(evs[i].data.ptr, stream);
        }
        for (i = 0; i < npids; i++) {
                cpu1[i] = cpu_us(pids[i]);
                run1[i] = runtime_us(pids[i]);
        }
        if (requests == 0)
                fail("no request completed in the measured window");
        qsort(lat, lat_n, sizeof(*lat), cmp_u64);
        printf("requests=%llu rps=%.1f p50_us=%.1f p99_us=%.1f tokens=%llu", (unsigned long long)requests,
               (double)requests / ((double)(t - t_measure) / 1e9), pct(0.50), pct(0.99),
               (unsigned long long)tokens);
        for (i = 0; i < npids; i++) {
                printf(" cpu%d_us=%.0f", i, cpu1[i] - cpu0[i]);
                if (run0[i] >= 0 && run1[i] >= 0)
                        printf(" run%d_us=%.0f", i, run1[i] - run0[i]);
        }
        printf("\n");
        return 0;
}
