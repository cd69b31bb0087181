/* SPDX-License-Identifier: MIT */
/*
 * tokenbudget-proxy end to end: the real tokenbudgetd (the integration
 * harness), the test upstream tests/proxy/upstream.js (node) and the proxy in
 * front of it, driven by curl(1) and raw HTTP. Each test checks what reaches
 * the daemon (admin Status: the tokens used and reserved in a scope) against
 * what the upstream says it produced (its /__requests record), and what the
 * upstream was sent (the clamped field, include_usage):
 * - a whole reply's usage lands exactly, charged to the agent named by a
 *   header and to the curl process (onBehalfOf), nothing left reserved;
 * - a stream's usage lands exactly, the injected include_usage is seen
 *   upstream and its extra chunk stripped for the client; Ollama NDJSON and
 *   Anthropic SSE streams too;
 * - the max output is clamped to the grant's suggestedMaxTokens;
 * - a refusal is 429 with Retry-After and an OpenAI error body naming the
 *   scope and limit, and nothing reaches the upstream;
 * - an upstream that ignores the clamp is cut at the hard limit with
 *   finish_reason "length" and [DONE], and the usage is charged;
 * - a client that leaves mid-stream: the upstream is closed, the allocation
 *   released with what was counted;
 * - upstream down: 502, the allocation released; daemon down: 503, or
 *   forwarded with --fail open; malformed JSON 400 (forwarded with
 *   --forward-malformed); a body over limits.max_body_bytes 413.
 * Skips (77) when node is missing.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"
#include "tb-check.h"

#define ELEMENTSOF(x) (sizeof(x) / sizeof((x)[0]))

typedef struct Proc {
        pid_t pid;
        int port;
        char log[300];
} Proc;

static int free_port(void) {
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        socklen_t len = sizeof(a);
        int fd = socket(AF_INET, SOCK_STREAM, 0), port;

        ck_assert_int_ge(fd, 0);
        ck_assert_int_eq(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
        ck_assert_int_eq(getsockname(fd, (struct sockaddr *)&a, &len), 0);
        port = ntohs(a.sin_port);
        close(fd);
        return port;
}

static pid_t spawn(char *const argv[], const char *log, int stdout_pipe[2]) {
        pid_t parent = getpid(), pid = fork();

        ck_assert_int_ge(pid, 0);
        if (pid == 0) {
                int fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0644);
                prctl(PR_SET_PDEATHSIG, SIGKILL);
                if (getppid() != parent)
                        _exit(127);
                if (fd >= 0) {
                        dup2(fd, STDERR_FILENO);
                        dup2(stdout_pipe ? stdout_pipe[1] : fd, STDOUT_FILENO);
                }
                if (stdout_pipe)
                        close(stdout_pipe[0]);
                /* Under AddressSanitizer, freed memory waits in a quarantine (256 MB) that would count
                 * as the proxy's memory in test_slow_client: keep it small. Ignored elsewhere. */
                char asan[512];
                const char *old = getenv("ASAN_OPTIONS");
                snprintf(asan, sizeof(asan), "%s%squarantine_size_mb=1:thread_local_quarantine_size_kb=64",
                         old ? old : "", old && *old ? ":" : "");
                setenv("ASAN_OPTIONS", asan, 1);
                execvp(argv[0], argv);
                _exit(127);
        }
        return pid;
}

static bool have_node(void) {
        const char *node = getenv("NODE");
        return node && *node && access(node, X_OK) == 0;
}

/* upstream.js on 127.0.0.1:0, flavor NULL for openai; its port from "listening on HOST:PORT". */
static void upstream_start_at(Proc *p, const char *flavor, const char *listen) {
        char script[512], line[256] = "";
        int pfd[2];
        size_t n = 0;

        snprintf(script, sizeof(script), "%s/tests/proxy/upstream.js", harness_env("SRCDIR"));
        snprintf(p->log, sizeof(p->log), "%s/upstream-%d.log", harness_dir(), free_port());
        char *argv[] = {(char *)harness_env("NODE"), script,         "--listen", (char *)listen,
                        flavor ? "--flavor" : NULL,  (char *)flavor, NULL};
        ck_assert_int_eq(pipe2(pfd, O_CLOEXEC), 0);
        p->pid = spawn(argv, p->log, pfd);
        close(pfd[1]);
        for (uint64_t deadline = harness_now_usec() + 10000000;
             harness_now_usec() < deadline && n < sizeof(line) - 1;) {
                struct pollfd pl = {.fd = pfd[0], .events = POLLIN};
                if (poll(&pl, 1, 100) <= 0)
                        continue;
                ssize_t k = read(pfd[0], line + n, 1);
                if (k <= 0)
                        break;
                if (line[n++] == '\n')
                        break;
        }
        close(pfd[0]);
        line[n] = '\0';
        char *colon = strrchr(line, ':');
        ck_assert_msg(strstr(line, "listening on") && (colon || listen[0] == '/'),
                      "upstream.js did not start: '%s'", line);
        p->port = colon ? atoi(colon + 1) : 0;
}

static void upstream_start(Proc *p, const char *flavor) {
        upstream_start_at(p, flavor, "127.0.0.1:0");
}

static void wait_unix(const char *path, const char *log) {
        struct sockaddr_un a = {.sun_family = AF_UNIX};

        ck_assert_uint_lt(strlen(path), sizeof(a.sun_path));
        memcpy(a.sun_path, path, strlen(path) + 1);
        for (int i = 0; i < 500; i++) {
                int fd = socket(AF_UNIX, SOCK_STREAM, 0);
                if (connect(fd, (struct sockaddr *)&a, sizeof(a)) == 0) {
                        close(fd);
                        return;
                }
                close(fd);
                harness_sleep_msec(10);
        }
        char *text = harness_read_file(log, NULL);
        ck_abort_msg("nothing listens on %s: %s", path, text ? text : "");
}

static void wait_listening(int port, const char *log) {
        for (int i = 0; i < 500; i++) {
                struct sockaddr_in a = {.sin_family = AF_INET,
                                        .sin_port = htons((uint16_t)port),
                                        .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
                int fd = socket(AF_INET, SOCK_STREAM, 0);
                if (connect(fd, (struct sockaddr *)&a, sizeof(a)) == 0) {
                        close(fd);
                        return;
                }
                close(fd);
                harness_sleep_msec(10);
        }
        char *text = harness_read_file(log, NULL);
        ck_abort_msg("the proxy does not listen on %d: %s", port, text ? text : "");
}

/* tokenbudget-proxy --listen 127.0.0.1:PORT --upstream URL --socket D [extra...]. */
static void proxy_start(Proc *p, const char *upstream, const char *socket, const char *const *extra) {
        char listen[64], *argv[32];
        size_t n = 0;

        p->port = free_port();
        snprintf(listen, sizeof(listen), "127.0.0.1:%d", p->port);
        snprintf(p->log, sizeof(p->log), "%s/proxy-%d.log", harness_dir(), p->port);
        argv[n++] = (char *)harness_env("TOKENBUDGET_PROXY");
        argv[n++] = "--listen";
        argv[n++] = listen;
        argv[n++] = "--upstream";
        argv[n++] = (char *)upstream;
        argv[n++] = "--socket";
        argv[n++] = (char *)socket;
        argv[n++] = "--verbose";
        for (; extra && *extra && n < ELEMENTSOF(argv) - 1; extra++)
                argv[n++] = (char *)*extra;
        argv[n] = NULL;
        p->pid = spawn(argv, p->log, NULL);
        wait_listening(p->port, p->log);
}

/* SIGTERM; the proxy must exit 0 (the upstream is node: killed). */
static void proc_stop(Proc *p, bool expect_clean) {
        int status = 0;

        kill(p->pid, SIGTERM);
        for (int i = 0; i < 500 && waitpid(p->pid, &status, WNOHANG) == 0; i++)
                harness_sleep_msec(10);
        if (waitpid(p->pid, &status, WNOHANG) == 0) {
                kill(p->pid, SIGKILL);
                waitpid(p->pid, &status, 0);
                ck_abort_msg("pid %d did not stop on SIGTERM", (int)p->pid);
        }
        if (expect_clean) {
                char *text = harness_read_file(p->log, NULL);
                ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0, "the proxy exited with %d: %s",
                              status, text ? text : "");
                free(text);
        }
}

typedef struct Reply {
        int status;
        char *headers, *body;
} Reply;

static void reply_done(Reply *r) {
        free(r->headers);
        free(r->body);
}

/* curl -sS -D headers -o body -w %{http_code} [--unix-socket PATH] [-H ...] [-d body] URL. */
static void http_at(int port, const char *unix_path, const char *method, const char *path, const char *body,
                    const char *const *headers, Reply *ret) {
        char url[256], hfile[300], bfile[300], *argv[48];
        static unsigned counter;
        CommandResult r;
        size_t n = 0;

        snprintf(url, sizeof(url), "http://127.0.0.1:%d%s", port, path);
        snprintf(hfile, sizeof(hfile), "%s/h-%u", harness_dir(), counter);
        snprintf(bfile, sizeof(bfile), "%s/b-%u", harness_dir(), counter++);
        argv[n++] = "/usr/bin/curl";
        argv[n++] = "-sS";
        argv[n++] = "-N";
        argv[n++] = "-X";
        argv[n++] = (char *)method;
        argv[n++] = "-D";
        argv[n++] = hfile;
        argv[n++] = "-o";
        argv[n++] = bfile;
        argv[n++] = "-w";
        argv[n++] = "%{http_code}";
        if (unix_path) {
                argv[n++] = "--unix-socket";
                argv[n++] = (char *)unix_path;
        }
        for (; headers && *headers && n < ELEMENTSOF(argv) - 6; headers++) {
                argv[n++] = "-H";
                argv[n++] = (char *)*headers;
        }
        if (body) {
                argv[n++] = "-H";
                argv[n++] = "Content-Type: application/json";
                argv[n++] = "--data-binary";
                argv[n++] = (char *)body;
        }
        argv[n++] = url;
        argv[n] = NULL;
        harness_run(argv, NULL, 30000, &r);
        ret->status = atoi(r.out ? r.out : "0");
        ret->headers = harness_read_file(hfile, NULL);
        ret->body = harness_read_file(bfile, NULL);
        if (!ret->body)
                ret->body = strdup("");
        if (!ret->headers)
                ret->headers = strdup("");
        command_result_done(&r);
}

static void http(int port, const char *method, const char *path, const char *body,
                 const char *const *headers, Reply *ret) {
        http_at(port, NULL, method, path, body, headers, ret);
}

/* The upstream's record of every request, as an array. */
static json_object *upstream_requests(const Proc *up) {
        Reply r;
        http(up->port, "GET", "/__requests", NULL, NULL, &r);
        ck_assert_int_eq(r.status, 200);
        json_object *a = json_tokener_parse(r.body);
        ck_assert_msg(a && json_object_is_type(a, json_type_array), "/__requests: %s", r.body);
        reply_done(&r);
        return a;
}

static json_object *last_request(json_object *all) {
        size_t n = json_object_array_length(all);
        ck_assert_uint_gt(n, 0);
        return json_object_array_get_idx(all, n - 1);
}

static json_object *path_get(json_object *o, const char *a, const char *b) {
        json_object *v = NULL;
        if (!json_object_object_get_ex(o, a, &v))
                return NULL;
        if (b && !json_object_object_get_ex(v, b, &v))
                return NULL;
        return v;
}

static int64_t scope_field(const TestDaemon *d, const char *name, const char *field) {
        tb_client *c = harness_client(d);
        json_object *status = harness_admin(c, "Status"), *scope = status_scope(status, name), *v = NULL;
        int64_t r = -1;

        if (scope && strcmp(field, "used") == 0)
                r = scope_window_used(scope, "minute", NULL);
        else if (scope)
                r = json_object_object_get_ex(scope, field, &v) ? json_object_get_int64(v) : 0;
        json_object_put(status);
        tb_client_close(c);
        return r;
}

/* The proxy releases after the reply is sent: wait for nothing reserved. */
static void expect_settled(const TestDaemon *d, int64_t used) {
        for (int i = 0; i < 300 && (scope_field(d, "global", "reserved") != 0 ||
                                    (used >= 0 && scope_field(d, "global", "used") != used));
             i++)
                harness_sleep_msec(10);
        ck_assert_int_eq(scope_field(d, "global", "reserved"), 0);
        if (used >= 0)
                ck_assert_int_eq(scope_field(d, "global", "used"), used);
}

static int64_t reply_tokens(json_object *rec) {
        json_object *in = path_get(rec, "reply", "input_tokens"),
                    *out = path_get(rec, "reply", "output_tokens");
        ck_assert_msg(in && out, "no reply counts: %s", json_object_to_json_string(rec));
        return json_object_get_int64(in) + json_object_get_int64(out);
}

typedef struct World {
        TestDaemon *d;
        Proc up, proxy;
} World;

static bool world_start(World *w, const char *daemon_config, const char *flavor,
                        const char *const *proxy_args) {
        char url[64];

        if (!have_node()) {
                tb_check_skip("node not found (NODE=%s): apt-get install nodejs", getenv("NODE") ?: "");
                return false;
        }
        w->d = harness_daemon_start(daemon_config);
        upstream_start(&w->up, flavor);
        snprintf(url, sizeof(url), "http://127.0.0.1:%d", w->up.port);
        proxy_start(&w->proxy, url, w->d->socket_path, proxy_args);
        return true;
}

static void world_stop(World *w) {
        proc_stop(&w->proxy, true);
        proc_stop(&w->up, false);
        harness_daemon_stop(w->d);
}

#define CHAT(extra)                                                                                         \
        "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"hello there friend\"}]" extra "}"

START_TEST(test_whole_reply) {
        static const char *const h[] = {"X-Test-Output-Tokens: 20", "X-TokenBudget-Agent: demo", NULL};
        World w;
        Reply r;
        char scope[64];

        if (!world_start(&w, "", NULL, NULL))
                return;
        http(w.proxy.port, "POST", "/v1/chat/completions", CHAT(",\"max_completion_tokens\":100"), h, &r);
        ck_assert_msg(r.status == 200, "status %d: %s", r.status, r.body);
        ck_assert_ptr_nonnull(strstr(r.body, "\"completion_tokens\":20"));
        json_object *all = upstream_requests(&w.up), *rec = last_request(all);
        int64_t total = reply_tokens(rec);
        ck_assert_int_eq(total, 23); /* 3 prompt words + 20 */
        /* Clamped to min(100, suggestedMaxTokens = 100 + 5 - 5): unchanged. */
        ck_assert_int_eq(json_object_get_int64(path_get(rec, "body", "max_completion_tokens")), 100);
        expect_settled(w.d, total);
        snprintf(scope, sizeof(scope), "agent:%u:demo", (unsigned)getuid());
        ck_assert_int_eq(scope_field(w.d, scope, "used"), total);
        json_object_put(all);
        reply_done(&r);
        world_stop(&w);
}
END_TEST

START_TEST(test_stream_usage) {
        static const char *const h[] = {"X-Test-Output-Tokens: 37", NULL};
        World w;
        Reply r;

        if (!world_start(&w, "", NULL, NULL))
                return;
        http(w.proxy.port, "POST", "/v1/chat/completions", CHAT(",\"stream\":true"), h, &r);
        ck_assert_int_eq(r.status, 200);
        ck_assert_msg(strstr(r.body, "data: [DONE]"), "no [DONE]: %s", r.body);
        ck_assert_msg(!strstr(r.body, "\"choices\":[]"), "the injected usage chunk reached the client: %s",
                      r.body);
        json_object *all = upstream_requests(&w.up), *rec = last_request(all);
        ck_assert_msg(json_object_get_boolean(path_get(rec, "body", "stream_options")
                                                      ? path_get(path_get(rec, "body", "stream_options"),
                                                                 "include_usage", NULL)
                                                      : NULL),
                      "include_usage not injected: %s", json_object_to_json_string(rec));
        /* No max output asked: default_max_output (4096) clamped to suggestedMaxTokens. */
        ck_assert_int_eq(json_object_get_int64(path_get(rec, "body", "max_completion_tokens")), 4096);
        expect_settled(w.d, reply_tokens(rec));
        json_object_put(all);
        reply_done(&r);

        /* A client that asked for usage gets the chunk. */
        http(w.proxy.port, "POST", "/v1/chat/completions",
             CHAT(",\"stream\":true,\"stream_options\":{\"include_usage\":true}"), h, &r);
        ck_assert_int_eq(r.status, 200);
        ck_assert_msg(strstr(r.body, "\"choices\":[]"), "the usage chunk was stripped: %s", r.body);
        reply_done(&r);
        world_stop(&w);
}
END_TEST

START_TEST(test_other_apis) {
        static const char *const h[] = {"X-Test-Output-Tokens: 12", NULL};
        World w;
        Reply r;
        int64_t total = 0;

        if (!world_start(&w, "", NULL, NULL))
                return;
        /* Ollama native, NDJSON streamed by default; clamp in options.num_predict. */
        http(w.proxy.port, "POST", "/api/chat",
             "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"a b c "
             "d\"}],\"options\":{\"num_predict\":50}}",
             h, &r);
        ck_assert_msg(r.status == 200, "ollama: %d %s", r.status, r.body);
        ck_assert_ptr_nonnull(strstr(r.body, "\"done\":true"));
        reply_done(&r);
        json_object *all = upstream_requests(&w.up);
        total += reply_tokens(last_request(all));
        json_object_put(all);
        expect_settled(w.d, total);

        /* Anthropic Messages SSE with cache fields: input = input + both cache fields. */
        static const char *const ha[] = {"X-Test-Output-Tokens: 9", "X-Test-Cache-Read-Tokens: 7",
                                         "X-Test-Cache-Creation-Tokens: 5", NULL};
        http(w.proxy.port, "POST", "/v1/messages",
             "{\"model\":\"claude\",\"max_tokens\":100,\"stream\":true,\"messages\":[{\"role\":\"user\","
             "\"content\":\"x y\"}]}",
             ha, &r);
        ck_assert_msg(r.status == 200, "anthropic: %d %s", r.status, r.body);
        ck_assert_ptr_nonnull(strstr(r.body, "message_stop"));
        reply_done(&r);
        all = upstream_requests(&w.up);
        int64_t t = reply_tokens(last_request(all));
        ck_assert_int_eq(t, 2 + 7 + 5 + 9);
        total += t;
        json_object_put(all);
        expect_settled(w.d, total);

        /* A path that is not budgeted passes through and is not charged. */
        http(w.proxy.port, "GET", "/v1/models", NULL, NULL, &r);
        reply_done(&r);
        expect_settled(w.d, total);
        world_stop(&w);
}
END_TEST

/* max_request_tokens caps the grant: the upstream sees the clamped field. */
START_TEST(test_clamp) {
        World w;
        Reply r;

        if (!world_start(&w, "max_request_tokens = 60;\n", NULL, NULL))
                return;
        http(w.proxy.port, "POST", "/v1/chat/completions", CHAT(",\"max_completion_tokens\":100"), NULL, &r);
        ck_assert_msg(r.status == 200, "status %d: %s", r.status, r.body);
        json_object *all = upstream_requests(&w.up), *rec = last_request(all);
        /* granted 60, promptTokens 5 (the estimate of the prompt text): 55 */
        int64_t clamped = json_object_get_int64(path_get(rec, "body", "max_completion_tokens"));
        ck_assert_msg(clamped > 0 && clamped < 60, "not clamped: %lld", (long long)clamped);
        ck_assert_int_le(json_object_get_int64(path_get(rec, "reply", "output_tokens")), clamped);
        expect_settled(w.d, reply_tokens(rec));
        json_object_put(all);
        reply_done(&r);
        world_stop(&w);
}
END_TEST

START_TEST(test_refused) {
        World w;
        Reply r;

        if (!world_start(&w, "global = { tokens_per_minute = 500; };\n", NULL, NULL))
                return;
        http(w.proxy.port, "POST", "/v1/chat/completions", CHAT(",\"max_completion_tokens\":1000"), NULL,
             &r);
        ck_assert_msg(r.status == 429, "status %d: %s", r.status, r.body);
        ck_assert_msg(strstr(r.body, "\"error\"") && strstr(r.body, "rate_limit_error") &&
                              strstr(r.body, "scope=global") && strstr(r.body, "limit=500"),
                      "the 429 body: %s", r.body);
        json_object *all = upstream_requests(&w.up);
        ck_assert_uint_eq(json_object_array_length(all), 0);
        json_object_put(all);
        reply_done(&r);
        expect_settled(w.d, 0);
        world_stop(&w);
}
END_TEST

/* The Ollama flavor ignores max_completion_tokens (ollama#7125); with --api openai the proxy clamps that
 * field, the upstream goes on, and the proxy cuts the stream at the hard limit. */
START_TEST(test_cut_at_hard_limit) {
        static const char *const args[] = {"--api", "openai", NULL};
        static const char *const h[] = {"X-Test-Output-Tokens: 400", "X-Test-Delay-Ms: 2", NULL};
        World w;
        Reply r;

        if (!world_start(&w, "", "ollama", args))
                return;
        http(w.proxy.port, "POST", "/v1/chat/completions",
             CHAT(",\"stream\":true,\"max_completion_tokens\":10"), h, &r);
        ck_assert_int_eq(r.status, 200);
        ck_assert_msg(strstr(r.body, "\"finish_reason\":\"length\"") && strstr(r.body, "data: [DONE]"),
                      "not ended in OpenAI's terms: %s", r.body);
        reply_done(&r);
        expect_settled(w.d, -1);
        int64_t used = scope_field(w.d, "global", "used");
        /* hard limit: (10 + 5) x 2 = 30; a few deltas past it at most */
        ck_assert_msg(used >= 30 && used < 60, "used %lld", (long long)used);
        json_object *all = upstream_requests(&w.up), *rec = last_request(all);
        ck_assert_int_lt(json_object_get_int64(path_get(rec, "sent", NULL)), 400);
        json_object_put(all);
        world_stop(&w);
}
END_TEST

/* Raw HTTP: read the start of a slow stream, then close. */
START_TEST(test_client_gone) {
        World w;
        char req[1024], buf[4096];

        if (!world_start(&w, "", NULL, NULL))
                return;
        const char *body = CHAT(",\"stream\":true");
        snprintf(req, sizeof(req),
                 "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 "X-Test-Output-Tokens: 300\r\nX-Test-Delay-Ms: 20\r\nContent-Length: %zu\r\n\r\n%s",
                 strlen(body), body);
        struct sockaddr_in a = {.sin_family = AF_INET,
                                .sin_port = htons((uint16_t)w.proxy.port),
                                .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        ck_assert_int_eq(connect(fd, (struct sockaddr *)&a, sizeof(a)), 0);
        ck_assert_int_eq(write(fd, req, strlen(req)), (ssize_t)strlen(req));
        size_t got = 0;
        while (got < 2000) {
                ssize_t k = read(fd, buf, sizeof(buf));
                ck_assert_int_gt(k, 0);
                got += (size_t)k;
        }
        ck_assert_int_gt(scope_field(w.d, "global", "reserved"), 0);
        close(fd);
        expect_settled(w.d, -1);
        ck_assert_int_gt(scope_field(w.d, "global", "used"), 0);
        harness_sleep_msec(100);
        json_object *all = upstream_requests(&w.up), *rec = last_request(all);
        ck_assert_int_lt(json_object_get_int64(path_get(rec, "sent", NULL)), 300);
        json_object_put(all);
        world_stop(&w);
}
END_TEST

START_TEST(test_faults) {
        static const char *const args[] = {"--forward-malformed", NULL};
        World w;
        Reply r;
        Proc p2;
        char url[64];

        if (!world_start(&w, "", NULL, NULL))
                return;
        /* Malformed JSON: 400 in the API's shape, nothing forwarded. */
        http(w.proxy.port, "POST", "/v1/chat/completions", "{\"model\": ", NULL, &r);
        ck_assert_msg(r.status == 400 && strstr(r.body, "\"error\""), "%d %s", r.status, r.body);
        reply_done(&r);
        json_object *all = upstream_requests(&w.up);
        ck_assert_uint_eq(json_object_array_length(all), 0);
        json_object_put(all);

        /* Over max_body_bytes (8 MiB): 413. */
        size_t big = 9 << 20;
        char *huge = malloc(big + 1);
        memset(huge, ' ', big);
        huge[0] = '{';
        huge[big - 1] = '}';
        huge[big] = '\0';
        char path[300];
        snprintf(path, sizeof(path), "%s/huge.json", harness_dir());
        FILE *f = fopen(path, "w");
        fwrite(huge, 1, big, f);
        fclose(f);
        free(huge);
        char at[310];
        snprintf(at, sizeof(at), "@%s", path);
        http(w.proxy.port, "POST", "/v1/chat/completions", at, NULL, &r);
        ck_assert_int_eq(r.status, 413);
        reply_done(&r);

        /* --forward-malformed: forwarded unbudgeted. */
        snprintf(url, sizeof(url), "http://127.0.0.1:%d", w.up.port);
        proxy_start(&p2, url, w.d->socket_path, args);
        http(p2.port, "POST", "/v1/chat/completions", "{\"model\": ", NULL, &r);
        ck_assert_int_eq(r.status, 400); /* the upstream's own answer */
        reply_done(&r);
        all = upstream_requests(&w.up);
        ck_assert_uint_eq(json_object_array_length(all), 1);
        json_object_put(all);
        proc_stop(&p2, true);

        /* Upstream down: 502, the allocation released (nothing reserved, nothing used). */
        snprintf(url, sizeof(url), "http://127.0.0.1:%d", free_port());
        proxy_start(&p2, url, w.d->socket_path, NULL);
        http(p2.port, "POST", "/v1/chat/completions", CHAT(""), NULL, &r);
        ck_assert_msg(r.status == 502 && strstr(r.body, "\"error\""), "%d %s", r.status, r.body);
        reply_done(&r);
        ck_assert_int_eq(scope_field(w.d, "global", "reserved"), 0);
        proc_stop(&p2, true);

        /* Daemon down: 503 (fail closed), forwarded with --fail open. */
        snprintf(url, sizeof(url), "http://127.0.0.1:%d", w.up.port);
        snprintf(path, sizeof(path), "%s/no-daemon.sock", harness_dir());
        proxy_start(&p2, url, path, NULL);
        http(p2.port, "POST", "/v1/chat/completions", CHAT(""), NULL, &r);
        ck_assert_msg(r.status == 503, "%d %s", r.status, r.body);
        reply_done(&r);
        proc_stop(&p2, true);
        static const char *const open_args[] = {"--fail", "open", NULL};
        proxy_start(&p2, url, path, open_args);
        http(p2.port, "POST", "/v1/chat/completions", CHAT(""), NULL, &r);
        ck_assert_msg(r.status == 200, "%d %s", r.status, r.body);
        reply_done(&r);
        proc_stop(&p2, true);
        expect_settled(w.d, 0);
        world_stop(&w);
}
END_TEST

/* A raw keep-alive connection to the proxy with one request sent. */
static int raw_http(int port, const char *method, const char *path, const char *headers, const char *body) {
        struct sockaddr_in a = {.sin_family = AF_INET,
                                .sin_port = htons((uint16_t)port),
                                .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        char req[4096];
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

        ck_assert_int_ge(fd, 0);
        ck_assert_int_eq(connect(fd, (struct sockaddr *)&a, sizeof(a)), 0);
        int n = snprintf(req, sizeof(req),
                         "%s %s HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n%s"
                         "Content-Length: %zu\r\n\r\n%s",
                         method, path, headers ? headers : "", body ? strlen(body) : 0, body ? body : "");
        ck_assert_int_eq(write(fd, req, (size_t)n), n);
        return fd;
}

/* Bytes readable on fd within timeout_ms (appended to buf up to cap): how many were read. */
static size_t read_within(int fd, char *buf, size_t cap, int timeout_ms) {
        size_t got = 0;
        uint64_t deadline = harness_now_usec() + (uint64_t)timeout_ms * 1000;

        while (got < cap && harness_now_usec() < deadline) {
                struct pollfd p = {.fd = fd, .events = POLLIN};
                if (poll(&p, 1, 20) <= 0)
                        continue;
                ssize_t k = read(fd, buf + got, cap - got);
                if (k <= 0)
                        break;
                got += (size_t)k;
        }
        return got;
}

static long proc_rss_kib(pid_t pid) {
        char path[64], *text, *p;
        long kib = -1;

        snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
        text = harness_read_file(path, NULL);
        if (text && (p = strstr(text, "VmRSS:")))
                kib = strtol(p + 6, NULL, 10);
        free(text);
        return kib;
}

/* A client that does not read: the upstream transfer is paused, the proxy holds about
 * CLIENT_HIGH_WATER_BYTES, not the stream; then it reads all, and the usage lands exactly. */
START_TEST(test_slow_client) {
        World w;
        static char buf[1 << 16];

        if (!world_start(&w, "", NULL, NULL))
                return;
        long rss0 = proc_rss_kib(w.proxy.pid);
        int fd = raw_http(w.proxy.port, "POST", "/v1/chat/completions", "X-Test-Output-Tokens: 60000\r\n",
                          CHAT(",\"stream\":true,\"max_completion_tokens\":60000"));
        harness_sleep_msec(1500);
        long rss1 = proc_rss_kib(w.proxy.pid);
        /* 60,000 chunks are about 11 MB of SSE: the proxy must not have taken them in. */
        ck_assert_msg(rss1 - rss0 < 6 * 1024,
                      "the proxy grew from %ld to %ld KiB for a client that does not read", rss0, rss1);
        size_t total = 0, k;
        bool done = false;
        static char tail[64];
        while ((k = read_within(fd, buf, sizeof(buf), 5000)) > 0) {
                total += k;
                size_t t = k < sizeof(tail) - 1 ? k : sizeof(tail) - 1;
                memcpy(tail, buf + k - t, t);
                tail[t] = '\0';
                if (strstr(tail, "0\r\n\r\n")) {
                        done = true;
                        break;
                }
        }
        close(fd);
        ck_assert_msg(done && total > 10 * 1000 * 1000, "read %zu bytes, ended: %d", total, done);
        json_object *all = upstream_requests(&w.up), *rec = last_request(all);
        ck_assert_int_eq(json_object_get_int64(path_get(rec, "reply", "output_tokens")), 60000);
        /* Never less than the upstream's count; more by what the Reports counted from deltas before it
         * arrived (api.c counts a delta as max(1, bytes / 4) tokens: " tok12345" is 2) and the daemon
         * keeps the highest total reported. */
        expect_settled(w.d, -1);
        ck_assert_int_ge(scope_field(w.d, "global", "used"), reply_tokens(rec));
        json_object_put(all);
        world_stop(&w);
}
END_TEST

/* Usage is reported while a slow stream runs: the daemon's minute window grows before the end. */
START_TEST(test_reports_mid_stream) {
        World w;
        static char buf[1 << 16];

        if (!world_start(&w, "", NULL, NULL))
                return;
        int fd = raw_http(w.proxy.port, "POST", "/v1/chat/completions",
                          "X-Test-Output-Tokens: 150\r\nX-Test-Delay-Ms: 20\r\n", CHAT(",\"stream\":true"));
        int64_t used = 0;
        for (int i = 0; i < 200 && used == 0; i++) {
                read_within(fd, buf, sizeof(buf), 10);
                used = scope_field(w.d, "global", "used");
        }
        ck_assert_int_gt(used, 0);
        ck_assert_int_gt(scope_field(w.d, "global", "reserved"), 0); /* still in flight */
        while (read_within(fd, buf, sizeof(buf), 3000) > 0)
                if (memmem(buf, sizeof(buf), "[DONE]", 6))
                        break;
        close(fd);
        json_object *all = upstream_requests(&w.up);
        expect_settled(w.d, reply_tokens(last_request(all)));
        json_object_put(all);
        world_stop(&w);
}
END_TEST

/* A refusal that waiting can help says when: Retry-After in seconds (after 103 tokens used, 465 x 2
 * reserved do not fit in 1000 until they leave the minute window). */
START_TEST(test_retry_after) {
        World w;
        Reply r;

        if (!world_start(&w, "global = { tokens_per_minute = 1000; };\n", NULL, NULL))
                return;
        static const char *const h[] = {"X-Test-Output-Tokens: 100", NULL};
        http(w.proxy.port, "POST", "/v1/chat/completions", CHAT(",\"max_completion_tokens\":100"), h, &r);
        ck_assert_int_eq(r.status, 200);
        reply_done(&r);
        expect_settled(w.d, -1);
        http(w.proxy.port, "POST", "/v1/chat/completions", CHAT(",\"max_completion_tokens\":460"), h, &r);
        ck_assert_msg(r.status == 429, "%d %s", r.status, r.body);
        const char *ra = strcasestr(r.headers, "\r\nRetry-After: ");
        ck_assert_msg(ra && atoi(ra + 15) >= 1 && atoi(ra + 15) <= 62, "Retry-After: %s %s", r.headers,
                      r.body);
        reply_done(&r);
        world_stop(&w);
}
END_TEST

/* limits.max_connections = 1: a second connection is not served while the first is open. */
START_TEST(test_connection_limit) {
        World w;
        char path[300], buf[4096], arg[310];

        snprintf(path, sizeof(path), "%s/limit.conf", harness_dir());
        FILE *f = fopen(path, "w");
        ck_assert_ptr_nonnull(f);
        fputs("limits = { max_connections = 1; };\n", f);
        fclose(f);
        snprintf(arg, sizeof(arg), "%s", path);
        const char *const args[] = {"--config", arg, NULL};
        if (!world_start(&w, "", NULL, args))
                return;
        int a = raw_http(w.proxy.port, "GET", "/v1/models", NULL, NULL);
        ck_assert_uint_gt(read_within(a, buf, sizeof(buf), 2000), 0);
        int b = raw_http(w.proxy.port, "GET", "/v1/models", NULL, NULL);
        ck_assert_uint_eq(read_within(b, buf, sizeof(buf), 500), 0);
        close(a);
        ck_assert_uint_gt(read_within(b, buf, sizeof(buf), 2000), 0);
        close(b);
        world_stop(&w);
}
END_TEST

/* The shipped conf/tokenbudget-proxy.conf holds the built-in defaults; errors name FILE:LINE. */
START_TEST(test_config) {
        char shipped[512], path[300];
        CommandResult a, b, e;

        snprintf(shipped, sizeof(shipped), "%s/conf/tokenbudget-proxy.conf", harness_env("SRCDIR"));
        char *argv_a[] = {(char *)harness_env("TOKENBUDGET_PROXY"), "--check-config", shipped, NULL};
        harness_run(argv_a, NULL, 10000, &a);
        ck_assert_msg(a.status == 0, "%s", a.err);
        snprintf(path, sizeof(path), "%s/min.conf", harness_dir());
        FILE *f = fopen(path, "w");
        fputs("listeners = ( { listen = \"127.0.0.1:11435\"; upstream = \"http://127.0.0.1:11434\"; } );\n",
              f);
        fclose(f);
        char *argv_b[] = {(char *)harness_env("TOKENBUDGET_PROXY"), "--check-config", path, NULL};
        harness_run(argv_b, NULL, 10000, &b);
        ck_assert_int_eq(b.status, 0);
        ck_assert_str_eq(a.out, b.out);
        command_result_done(&a);
        command_result_done(&b);

        static const struct {
                const char *text, *error;
        } bad[] = {
                {"limits = { max_body_bytes = 5; };\n", ":1: limits.max_body_bytes = 5 is out of range"},
                {"\n\nfoo = 1;\n", ":3: unknown setting foo"},
                {"report = { tokens = \"x\"; };\n", ":1: report.tokens must be an integer"},
                {"listeners = ( { listen = \"127.0.0.1:1\"; } );\n",
                 ":1: a listener needs listen and upstream"},
                {"listeners = ( { listen = \"x\"; upstream = \"http://a\"; api = \"grpc\"; } );\n",
                 ":1: api = \"grpc\": expected"},
                {"listeners = ( { listen = \"x\"; upstream = \"http://a\"; fail = \"maybe\"; } );\n",
                 ":1: fail = \"maybe\": expected \"closed\" or \"open\""},
                {"listeners = ( { listen = \"nowhere\"; upstream = \"http://a\"; } );\n",
                 "nowhere: expected 127.0.0.1:PORT"},
                {"listeners = ( { listen = \"127.0.0.1:1\"; upstream = \"ftp://a\"; } );\n",
                 "upstream ftp://a"},
                {"log_level = 3;\n", ":1: log_level must be a string"},
                {"limits = {\n", ":2: syntax error"},
        };
        for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
                f = fopen(path, "w");
                fputs(bad[i].text, f);
                fclose(f);
                harness_run(argv_b, NULL, 10000, &e);
                ck_assert_msg(e.status == 2 && strstr(e.err, bad[i].error), "row %zu: status %d, '%s'", i,
                              e.status, e.err);
                command_result_done(&e);
        }
}
END_TEST

/* A Unix listener (SO_PEERCRED) in front of a unix: upstream: usage lands exactly. */
START_TEST(test_unix_sockets) {
        static const char *const h[] = {"X-Test-Output-Tokens: 11", "Authorization: Bearer tb-unixagent",
                                        NULL};
        char up_path[300], proxy_path[300], listen[310], upstream[310], scope[64];
        Proc up, proxy;
        TestDaemon *d;
        Reply r;

        if (!have_node()) {
                tb_check_skip("node not found: apt-get install nodejs");
                return;
        }
        d = harness_daemon_start("");
        snprintf(up_path, sizeof(up_path), "%s/up.sock", harness_dir());
        snprintf(proxy_path, sizeof(proxy_path), "%s/proxy.sock", harness_dir());
        upstream_start_at(&up, NULL, up_path);
        snprintf(listen, sizeof(listen), "unix:%s", proxy_path);
        snprintf(upstream, sizeof(upstream), "unix:%s", up_path);
        snprintf(proxy.log, sizeof(proxy.log), "%s/proxy-unix.log", harness_dir());
        char *argv[] = {(char *)harness_env("TOKENBUDGET_PROXY"),
                        "--listen",
                        listen,
                        "--upstream",
                        upstream,
                        "--socket",
                        d->socket_path,
                        NULL};
        proxy.pid = spawn(argv, proxy.log, NULL);
        wait_unix(proxy_path, proxy.log);

        http_at(0, proxy_path, "POST", "/v1/chat/completions", CHAT(""), h, &r);
        ck_assert_msg(r.status == 200, "%d %s", r.status, r.body);
        reply_done(&r);
        http_at(0, up_path, "GET", "/__requests", NULL, NULL, &r);
        json_object *all = json_tokener_parse(r.body), *rec = last_request(all);
        reply_done(&r);
        /* The tb- key is the proxy's: not forwarded. */
        ck_assert_ptr_null(path_get(rec, "headers", "authorization"));
        int64_t total = reply_tokens(rec);
        ck_assert_int_eq(total, 3 + 11);
        expect_settled(d, total);
        snprintf(scope, sizeof(scope), "agent:%u:unixagent", (unsigned)getuid());
        ck_assert_int_eq(scope_field(d, scope, "used"), total);
        json_object_put(all);
        proc_stop(&proxy, true);
        ck_assert_int_eq(access(proxy_path, F_OK), -1); /* removed at the end */
        proc_stop(&up, false);
        harness_daemon_stop(d);
}
END_TEST

/* https upstreams verify certificates: a self-signed one is a 502, and the allocation is released. */
START_TEST(test_tls_verified) {
        char key[300], cert[300], accept[64], url[64], log[300];
        CommandResult c;
        Proc tls, proxy;
        TestDaemon *d;
        Reply r;

        if (access("/usr/bin/openssl", X_OK) < 0) {
                tb_check_skip("no /usr/bin/openssl (apt-get install openssl)");
                return;
        }
        snprintf(key, sizeof(key), "%s/key.pem", harness_dir());
        snprintf(cert, sizeof(cert), "%s/cert.pem", harness_dir());
        char *gen[] = {"/usr/bin/openssl",
                       "req",
                       "-x509",
                       "-newkey",
                       "rsa:2048",
                       "-nodes",
                       "-keyout",
                       key,
                       "-out",
                       cert,
                       "-subj",
                       "/CN=127.0.0.1",
                       "-days",
                       "1",
                       NULL};
        harness_run(gen, NULL, 30000, &c);
        ck_assert_msg(c.status == 0, "openssl req: %s", c.err);
        command_result_done(&c);
        tls.port = free_port();
        snprintf(accept, sizeof(accept), "127.0.0.1:%d", tls.port);
        snprintf(log, sizeof(log), "%s/s_server.log", harness_dir());
        char *srv[] = {"/usr/bin/openssl", "s_server", "-accept", accept, "-cert", cert, "-key", key, "-www",
                       "-quiet",           NULL};
        tls.pid = spawn(srv, log, NULL);
        wait_listening(tls.port, log);

        d = harness_daemon_start("");
        snprintf(url, sizeof(url), "https://127.0.0.1:%d", tls.port);
        proxy_start(&proxy, url, d->socket_path, NULL);
        http(proxy.port, "POST", "/v1/chat/completions", CHAT(""), NULL, &r);
        ck_assert_msg(r.status == 502 && strcasestr(r.body, "certificate"), "%d %s", r.status, r.body);
        reply_done(&r);
        expect_settled(d, 0);
        proc_stop(&proxy, true);
        proc_stop(&tls, false);
        harness_daemon_stop(d);
}
END_TEST

/* An upstream without usage is never charged zero: a stream by its counted deltas and the prompt
 * estimate, a whole reply by its size. */
START_TEST(test_no_usage) {
        static const char *const h[] = {"X-Test-Output-Tokens: 37", "X-Test-No-Usage: 1", NULL};
        World w;
        Reply r;

        if (!world_start(&w, "", NULL, NULL))
                return;
        http(w.proxy.port, "POST", "/v1/chat/completions", CHAT(",\"stream\":true"), h, &r);
        ck_assert_int_eq(r.status, 200);
        ck_assert_ptr_nonnull(strstr(r.body, "data: [DONE]"));
        reply_done(&r);
        /* 37 deltas of one token each (" tok37" is 6 bytes) and 5 for "hello there friend" (18 bytes) */
        expect_settled(w.d, 37 + 5);
        http(w.proxy.port, "POST", "/v1/chat/completions", CHAT(""), h, &r);
        ck_assert_int_eq(r.status, 200);
        size_t bytes = strlen(r.body);
        reply_done(&r);
        expect_settled(w.d, 37 + 5 + 5 + (int64_t)(bytes + 3) / 4);
        world_stop(&w);
}
END_TEST

/* X-TokenBudget-Wait: a request that does not fit while another is in flight waits in the daemon's
 * queue and is served when that one is released. */
START_TEST(test_wait) {
        World w;
        char buf[1 << 14];
        Reply r;

        if (!world_start(&w, "global = { max_tokens_in_flight = 300; };\n", NULL, NULL))
                return;
        /* (100 + 5) x 2 = 210 in flight for about two seconds */
        int fd = raw_http(w.proxy.port, "POST", "/v1/chat/completions",
                          "X-Test-Output-Tokens: 100\r\nX-Test-Delay-Ms: 20\r\n",
                          CHAT(",\"stream\":true,\"max_completion_tokens\":100"));
        ck_assert_uint_gt(read_within(fd, buf, sizeof(buf), 300), 0);
        static const char *const now[] = {"X-Test-Output-Tokens: 5", NULL};
        http(w.proxy.port, "POST", "/v1/chat/completions", CHAT(",\"max_completion_tokens\":100"), now, &r);
        ck_assert_msg(r.status == 429 && strstr(r.body, "in-flight"), "without waiting: %d %s", r.status,
                      r.body);
        reply_done(&r);
        static const char *const wait[] = {"X-Test-Output-Tokens: 5", "X-TokenBudget-Wait: 10000", NULL};
        uint64_t t0 = harness_now_usec();
        http(w.proxy.port, "POST", "/v1/chat/completions", CHAT(",\"max_completion_tokens\":100"), wait, &r);
        ck_assert_msg(r.status == 200, "waiting: %d %s", r.status, r.body);
        ck_assert_uint_gt(harness_now_usec() - t0, 200000); /* it waited for the stream's end */
        reply_done(&r);
        while (read_within(fd, buf, sizeof(buf), 1000) > 0)
                ;
        close(fd);
        expect_settled(w.d, -1);
        world_stop(&w);
}
END_TEST

/* allow_model_substitution: a degraded grant's suggestedModel (model_tiers) replaces the model;
 * without it the model stays. */
START_TEST(test_model_substitution) {
        char path[300];
        Reply r;
        World w;

        snprintf(path, sizeof(path), "%s/subst.conf", harness_dir());
        if (!world_start(&w, "max_request_tokens = 60;\nmodel_tiers = [ \"big\", \"small\" ];\n", NULL,
                         NULL))
                return;
        const char *body = "{\"model\":\"big\",\"max_completion_tokens\":100,"
                           "\"messages\":[{\"role\":\"user\",\"content\":\"hello there friend\"}]}";
        http(w.proxy.port, "POST", "/v1/chat/completions", body, NULL, &r);
        ck_assert_int_eq(r.status, 200);
        reply_done(&r);
        json_object *all = upstream_requests(&w.up);
        ck_assert_str_eq(json_object_get_string(path_get(last_request(all), "body", "model")), "big");
        json_object_put(all);

        /* The same daemon and upstream, a proxy from a config file whose listener allows it. */
        Proc p2;
        char url[64], listen[64];
        p2.port = free_port();
        snprintf(url, sizeof(url), "http://127.0.0.1:%d", w.up.port);
        snprintf(listen, sizeof(listen), "127.0.0.1:%d", p2.port);
        FILE *f = fopen(path, "w");
        ck_assert_ptr_nonnull(f);
        fprintf(f,
                "listeners = ( { listen = \"%s\"; upstream = \"%s\"; allow_model_substitution = true; } "
                ");\n",
                listen, url);
        fclose(f);
        snprintf(p2.log, sizeof(p2.log), "%s/proxy-subst.log", harness_dir());
        char *argv[] = {(char *)harness_env("TOKENBUDGET_PROXY"),
                        "--config",
                        path,
                        "--socket",
                        w.d->socket_path,
                        NULL};
        p2.pid = spawn(argv, p2.log, NULL);
        wait_listening(p2.port, p2.log);
        http(p2.port, "POST", "/v1/chat/completions", body, NULL, &r);
        ck_assert_int_eq(r.status, 200);
        reply_done(&r);
        all = upstream_requests(&w.up);
        ck_assert_str_eq(json_object_get_string(path_get(last_request(all), "body", "model")), "small");
        json_object_put(all);
        proc_stop(&p2, true);
        expect_settled(w.d, -1);
        world_stop(&w);
}
END_TEST

/* Who pays, with the proxy running as uid 65534 and curl as root. On a Unix listener (SO_PEERCRED):
 * untrusted, the daemon refuses onBehalfOf and the proxy's own user is charged (said once in its
 * log); listed in trusted_proxies, the client's user. On TCP the proxy finds the client's uid
 * (sock_diag) but cannot see another user's /proc/PID/fd: without a pid it cannot ask onBehalfOf
 * and its own user is charged, which its log says. */
static void who_pays(const char *daemon_config, bool unix_listener, bool client_charged, const char *said) {
        static const char *const h[] = {"X-Test-Output-Tokens: 7", NULL};
        char url[64], listen[320], path[300];
        Proc up, proxy;
        TestDaemon *d;
        Reply r;

        d = harness_daemon_start(daemon_config);
        upstream_start(&up, NULL);
        proxy.port = free_port();
        snprintf(url, sizeof(url), "http://127.0.0.1:%d", up.port);
        snprintf(path, sizeof(path), "%s/nobody", harness_dir());
        if (access(path, F_OK) < 0) { /* where uid 65534 may create its socket */
                ck_assert_int_eq(mkdir(path, 0755), 0);
                ck_assert_int_eq(chown(path, 65534, 65534), 0);
        }
        snprintf(path, sizeof(path), "%s/nobody/p-%d.sock", harness_dir(), proxy.port);
        if (unix_listener)
                snprintf(listen, sizeof(listen), "unix:%s", path);
        else
                snprintf(listen, sizeof(listen), "127.0.0.1:%d", proxy.port);
        snprintf(proxy.log, sizeof(proxy.log), "%s/proxy-%d.log", harness_dir(), proxy.port);
        char *argv[] = {"/usr/bin/setpriv",
                        "--reuid=65534",
                        "--regid=65534",
                        "--clear-groups",
                        (char *)harness_env("TOKENBUDGET_PROXY"),
                        "--listen",
                        listen,
                        "--upstream",
                        url,
                        "--socket",
                        d->socket_path,
                        NULL};
        proxy.pid = spawn(argv, proxy.log, NULL);
        if (unix_listener)
                wait_unix(path, proxy.log);
        else
                wait_listening(proxy.port, proxy.log);
        for (int i = 0; i < 2; i++) {
                http_at(proxy.port, unix_listener ? path : NULL, "POST", "/v1/chat/completions", CHAT(""), h,
                        &r);
                ck_assert_msg(r.status == 200, "%d %s", r.status, r.body);
                reply_done(&r);
        }
        expect_settled(d, 2 * (3 + 7));
        /* A scope never charged is not listed (-1). */
        int64_t proxy_user = scope_field(d, "user:65534", "used"),
                client_user = scope_field(d, "user:0", "used");
        ck_assert_int_eq(proxy_user > 0 ? proxy_user : 0, client_charged ? 0 : 2 * (3 + 7));
        ck_assert_int_eq(client_user > 0 ? client_user : 0, client_charged ? 2 * (3 + 7) : 0);
        proc_stop(&proxy, true);
        char *log = harness_read_file(proxy.log, NULL);
        const char *at = log && said ? strstr(log, said) : NULL;
        ck_assert_msg(said ? at != NULL : !strstr(log, "PermissionDenied"), "the log: %s", log);
        if (said && strcmp(said, "PermissionDenied") == 0)
                ck_assert_msg(!strstr(at + 1, said), "said more than once: %s", log);
        free(log);
        proc_stop(&up, false);
        harness_daemon_stop(d);
}

/* Whether uid can run the proxy from this build: its binary and, through
 * LD_LIBRARY_PATH, libtokenbudget (a build under /root is closed to it). */
static bool runnable_by(uid_t uid) {
        const char *libdir = getenv("LD_LIBRARY_PATH");
        int status = 0;
        pid_t pid = fork();

        ck_assert_int_ge(pid, 0);
        if (pid == 0) {
                char lib[4096];

                if (setgroups(0, NULL) < 0 || setresgid(uid, uid, uid) < 0 || setresuid(uid, uid, uid) < 0)
                        _exit(2);
                snprintf(lib, sizeof(lib), "%s/libtokenbudget.so.1", libdir ? libdir : "");
                _exit(access(harness_env("TOKENBUDGET_PROXY"), X_OK) == 0 &&
                                      (!libdir || !*libdir || strchr(libdir, ':') || access(lib, R_OK) == 0)
                              ? 0
                              : 1);
        }
        ck_assert_int_eq(waitpid(pid, &status, 0), pid);
        return WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

START_TEST(test_who_pays) {
        if (!have_node()) {
                tb_check_skip("node not found: apt-get install nodejs");
                return;
        }
        if (!tb_check_need_root("running the proxy as uid 65534"))
                return;
        if (!runnable_by(65534)) {
                tb_check_skip("uid 65534 cannot run %s or load its libtokenbudget (LD_LIBRARY_PATH %s): a "
                              "directory above the build is closed to it, e.g. /root",
                              harness_env("TOKENBUDGET_PROXY"), getenv("LD_LIBRARY_PATH") ?: "unset");
                return;
        }
        who_pays("", true, false, "PermissionDenied");
        who_pays("trusted_proxies = [ \"65534\" ];\n", true, true, NULL);
        who_pays("trusted_proxies = [ \"65534\" ];\n", false, false, "no process this proxy can see");
}
END_TEST

/* A header section over limits.max_header_bytes is refused by evhttp before any budget. */
START_TEST(test_header_limit) {
        World w;
        Reply r;

        if (!world_start(&w, "", NULL, NULL))
                return;
        size_t n = 70 * 1024;
        char *big = malloc(n + 16);
        ck_assert_ptr_nonnull(big);
        strcpy(big, "X-Big: ");
        memset(big + 7, 'a', n);
        big[7 + n] = '\0';
        const char *const h[] = {big, NULL};
        http(w.proxy.port, "POST", "/v1/chat/completions", CHAT(""), h, &r);
        ck_assert_msg(r.status == 400 || r.status == 431 || r.status == 0, "status %d", r.status);
        reply_done(&r);
        free(big);
        json_object *all = upstream_requests(&w.up);
        ck_assert_uint_eq(json_object_array_length(all), 0);
        json_object_put(all);
        expect_settled(w.d, 0);
        world_stop(&w);
}
END_TEST

/* A client that leaves while its request waits in the daemon's queue: nothing is forwarded, and the
 * allocation granted after it left is released at once (the proxy watches the socket while evhttp
 * does not read it). */
START_TEST(test_gone_while_queued) {
        World w;
        char buf[1 << 14];

        if (!world_start(&w, "global = { max_tokens_in_flight = 300; };\n", NULL, NULL))
                return;
        int holder = raw_http(w.proxy.port, "POST", "/v1/chat/completions",
                              "X-Test-Output-Tokens: 60\r\nX-Test-Delay-Ms: 20\r\n",
                              CHAT(",\"stream\":true,\"max_completion_tokens\":100"));
        ck_assert_uint_gt(read_within(holder, buf, sizeof(buf), 300), 0);
        int waiter = raw_http(w.proxy.port, "POST", "/v1/chat/completions", "X-TokenBudget-Wait: 10000\r\n",
                              CHAT(",\"max_completion_tokens\":100"));
        harness_sleep_msec(200);
        close(waiter);
        while (read_within(holder, buf, sizeof(buf), 1000) > 0)
                ;
        close(holder);
        expect_settled(w.d, -1);
        harness_sleep_msec(200);
        json_object *all = upstream_requests(&w.up);
        ck_assert_uint_eq(json_object_array_length(all), 1); /* only the holder's */
        json_object_put(all);
        ck_assert_int_eq(scope_field(w.d, "global", "reserved"), 0);
        world_stop(&w);
}
END_TEST

/* limits.idle_timeout_sec: a connection that sends nothing is closed. */
START_TEST(test_idle_timeout) {
        char path[300], arg[310], buf[64];
        World w;

        snprintf(path, sizeof(path), "%s/idle.conf", harness_dir());
        FILE *f = fopen(path, "w");
        ck_assert_ptr_nonnull(f);
        fputs("limits = { idle_timeout_sec = 1; };\n", f);
        fclose(f);
        snprintf(arg, sizeof(arg), "%s", path);
        const char *const args[] = {"--config", arg, NULL};
        if (!world_start(&w, "", NULL, args))
                return;
        struct sockaddr_in a = {.sin_family = AF_INET,
                                .sin_port = htons((uint16_t)w.proxy.port),
                                .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        ck_assert_int_eq(connect(fd, (struct sockaddr *)&a, sizeof(a)), 0);
        uint64_t t0 = harness_now_usec();
        struct pollfd p = {.fd = fd, .events = POLLIN};
        ck_assert_int_eq(poll(&p, 1, 5000), 1);
        ck_assert_int_eq(read(fd, buf, sizeof(buf)), 0);
        uint64_t waited = harness_now_usec() - t0;
        ck_assert_msg(waited > 800000 && waited < 4000000, "closed after %llu us",
                      (unsigned long long)waited);
        close(fd);
        world_stop(&w);
}
END_TEST

int main(void) {
        Suite *s = suite_create("proxy");
        TCase *tc = harness_tcase("proxy", 120);

        tcase_add_test(tc, test_whole_reply);
        tcase_add_test(tc, test_stream_usage);
        tcase_add_test(tc, test_other_apis);
        tcase_add_test(tc, test_clamp);
        tcase_add_test(tc, test_refused);
        tcase_add_test(tc, test_cut_at_hard_limit);
        tcase_add_test(tc, test_client_gone);
        tcase_add_test(tc, test_faults);
        tcase_add_test(tc, test_slow_client);
        tcase_add_test(tc, test_reports_mid_stream);
        tcase_add_test(tc, test_retry_after);
        tcase_add_test(tc, test_connection_limit);
        tcase_add_test(tc, test_config);
        tcase_add_test(tc, test_unix_sockets);
        tcase_add_test(tc, test_tls_verified);
        tcase_add_test(tc, test_no_usage);
        tcase_add_test(tc, test_wait);
        tcase_add_test(tc, test_model_substitution);
        tcase_add_test(tc, test_who_pays);
        tcase_add_test(tc, test_header_limit);
        tcase_add_test(tc, test_gone_while_queued);
        tcase_add_test(tc, test_idle_timeout);
        suite_add_tcase(s, tc);
        return harness_main(s);
}
