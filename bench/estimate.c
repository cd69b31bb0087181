/* SPDX-License-Identifier: MIT */
/*
 * estimate: how well the daemon's learned estimates predict a real trace
 * (issue 13, point 6).
 *
 *   estimate --socket PATH --trace FILE.csv --class NAME --mode buckets|class
 *            [--client-output N] [--label TEXT] [--dump FILE.csv]
 *
 * Replays a request trace (a CSV with a header naming ContextTokens and
 * GeneratedTokens, and TIMESTAMP when there is one: rows are put in its order,
 * ties in file order) through a real tokenbudgetd on one Varlink connection,
 * in lockstep: for each row a Request {estimate: ContextTokens +
 * client-output (default 1000: a client that knows its prompt and allows a
 * fixed output), class: NAME, promptTokens: ContextTokens (mode "buckets";
 * mode "class" gives no promptTokens)}, then a Release with inputTokens =
 * ContextTokens and outputTokens = GeneratedTokens, which teaches the class.
 * So every prediction has learned from every earlier row: in production
 * requests overlap and a prediction misses the ones still running, which
 * this replay does not model.
 *
 * Counting starts at the first reply with a prediction (predictedOutput);
 * from there on every row is counted with the prediction answered for it:
 * - wape: sum |predictedOutput - GeneratedTokens| / sum GeneratedTokens;
 * - bias: (sum predictedOutput - sum GeneratedTokens) / sum GeneratedTokens;
 * - block errors: the counted rows cut into consecutive blocks of 10, 100
 *   and 1000 (a last partial block is dropped); per block |sum pred - sum
 *   act| / sum act of the output tokens, with the predictions as answered at
 *   each request (not frozen at the block's start); median (the mean of the
 *   two middle ones for an even count) and p90 (nearest rank) of all blocks;
 * - reservations: tokens a client reserving 2 x its estimate would have left
 *   unused (sum of max(0, reserved - actual total)) and how many actual
 *   tokens went past it, against reserving `predicted` (prompt + predicted
 *   output in buckets mode, the learned total in class mode) and 2 x that
 *   (the daemon reserves hardLimit, granted x hard_multiplier, 2 by
 *   default); and what the daemon itself reserved: each reply's hardLimit
 *   (granted when a reply has none), which is 2 x the estimate with
 *   estimate_source "client" and the learned reservation with "learned"
 *   (the rows whose reason was "learned" are counted);
 * - interval coverage (issue 13, point 5): at the start of each block of
 *   100 and of 1000 counted rows (after the Request of its first row, before
 *   its Release: what the class has learned from every earlier row), an
 *   io.tokenbudget.admin.Estimate {class: "class:NAME", tasks: the block
 *   size} on a second connection (the caller's own uid: the bench's);
 *   when the block is complete, whether its actual output sum lies within
 *   the reply's [interval.outputLow, interval.outputHigh] (below, within,
 *   above), how many blocks had an interval (noInterval or UnknownClass:
 *   none), and the error |expectedOutput - sum act| / sum act of the
 *   project prediction itself (made at the block's start, not per request).
 *   Any other error reply to Estimate (a daemon without the method) stops
 *   the calls; its error name is printed as coverage_error.
 *
 * --dump writes every counted row (row number in time order, ContextTokens,
 * GeneratedTokens, the estimate sent, predicted, predictedOutput, samples,
 * granted, hardLimit) as CSV, to check the metrics or try others offline.
 *
 * Prints one line of key=value pairs for bench/run.sh. Exit status 1 on any
 * error reply, a bad trace or a reply without a prediction after the first
 * one that had it; 3 when the daemon cannot be measured: no reply had a
 * prediction, or it refused the first Request as InvalidParameter (a daemon
 * before issue 13, which knows no promptTokens or class).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

/* The daemon's replies are a few hundred bytes; a Request with a 255-byte class fits too. */
#define MSG_MAX_BYTES 8192
#define TS_MAX_BYTES  40
#define N_BLOCK_SIZES 3

static const uint64_t block_sizes[N_BLOCK_SIZES] = {10, 100, 1000};

/* The project sizes whose intervals are checked. */
#define N_COVERAGE_SIZES 2
static const uint64_t coverage_sizes[N_COVERAGE_SIZES] = {100, 1000};
#define ADMIN_ERROR_MAX 128

typedef struct Row {
        char ts[TS_MAX_BYTES];
        size_t index; /* in the file: ties keep file order */
        uint64_t context, generated;
} Row;

typedef struct Conn {
        int fd;
        char buf[MSG_MAX_BYTES];
        size_t len; /* bytes in buf, the reply being read first */
} Conn;

typedef struct Blocks {
        double sum_pred, sum_act; /* of the block in progress */
        uint64_t count;
        double *errors;
        size_t n_errors;
} Blocks;

/* The Estimate intervals of one project size. */
typedef struct Coverage {
        /* The block in progress: its interval and expected output, when Estimate gave them. */
        bool has_interval, has_expected;
        uint64_t low, high, expected, count;
        double sum_act;
        /* Completed blocks: all, with an interval, and where the actual fell. */
        uint64_t blocks, with_interval, below, within, above;
        double *errors; /* of expectedOutput, one per completed block that had one */
        size_t n_errors;
} Coverage;

typedef struct Totals {
        uint64_t counted, first_counted_row, missing;
        double abs_err, sum_pred, sum_act;
        Blocks blocks[N_BLOCK_SIZES];
        /* Reservations against the actual total (input + output). */
        double unused_2x, over_2x, unused_pred, over_pred, unused_2pred, over_2pred, sum_act_total;
        uint64_t over_2x_rows, over_pred_rows, over_2pred_rows;
        /* What the daemon reserved (hardLimit). */
        double unused_res, over_res;
        uint64_t over_res_rows, learned_rows;
        uint64_t last_samples;
        Coverage coverage[N_COVERAGE_SIZES];
        double nominal_coverage;           /* the interval's coverage as the daemon said it, 0 before one */
        char admin_error[ADMIN_ERROR_MAX]; /* "" while Estimate answers */
} Totals;

static const char *prog = "estimate";

static void fail(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void fail(const char *fmt, ...) {
        va_list ap;

        fprintf(stderr, "%s: ", prog);
        va_start(ap, fmt);
        vfprintf(stderr, fmt, ap);
        va_end(ap);
        fputc('\n', stderr);
        exit(1);
}

static uint64_t now_usec(void) {
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

/* --- the trace --- */

/* The index of column NAME in a header line, or -1. */
static int column_of(const char *header, const char *name) {
        size_t len = strlen(name);
        int i = 0;

        for (const char *p = header;; i++) {
                const char *end = p + strcspn(p, ",\r\n");
                while (*p == ' ')
                        p++;
                if ((size_t)(end - p) >= len && strncmp(p, name, len) == 0 &&
                    strspn(p + len, " ") == (size_t)(end - p) - len)
                        return i;
                if (*end != ',')
                        return -1;
                p = end + 1;
        }
}

static bool parse_u64(const char *s, size_t len, uint64_t *ret) {
        uint64_t v = 0;
        size_t i = 0;

        while (i < len && s[i] == ' ')
                i++;
        if (i == len)
                return false;
        for (; i < len && s[i] >= '0' && s[i] <= '9'; i++) {
                if (v > (UINT64_C(1000000000000) - 1) / 10)
                        return false;
                v = v * 10 + (uint64_t)(s[i] - '0');
        }
        while (i < len && (s[i] == ' ' || s[i] == '\r'))
                i++;
        *ret = v;
        return i == len;
}

/* One data line into *row: false when a column is missing or not a count. */
static bool parse_row(const char *line, int col_ts, int col_ctx, int col_gen, Row *row) {
        bool have_ctx = false, have_gen = false;
        int i = 0;

        row->ts[0] = '\0';
        for (const char *p = line;; i++) {
                size_t len = strcspn(p, ",\r\n");
                if (i == col_ts) {
                        if (len >= TS_MAX_BYTES)
                                return false;
                        memcpy(row->ts, p, len);
                        row->ts[len] = '\0';
                } else if (i == col_ctx) {
                        have_ctx = parse_u64(p, len, &row->context);
                } else if (i == col_gen) {
                        have_gen = parse_u64(p, len, &row->generated);
                }
                if (p[len] != ',')
                        break;
                p += len + 1;
        }
        return have_ctx && have_gen;
}

static int row_cmp(const void *a, const void *b) {
        const Row *x = a, *y = b;
        int r = strcmp(x->ts, y->ts);

        return r ? r : (x->index > y->index) - (x->index < y->index);
}

/* Reads FILE: the rows, in TIMESTAMP order when it has that column. The
 * timestamps are compared as strings: the Azure traces' fixed-width
 * "YYYY-MM-DD HH:MM:SS.fffffff" sorts in time order that way. */
static Row *trace_read(const char *path, size_t *ret_n) {
        FILE *f = fopen(path, "re");
        char *line = NULL;
        size_t cap = 0, n = 0, alloc = 0, lineno = 1;
        int col_ts, col_ctx, col_gen;
        Row *rows = NULL;

        if (!f)
                fail("%s: %s", path, strerror(errno));
        if (getline(&line, &cap, f) < 0)
                fail("%s: empty", path);
        col_ts = column_of(line, "TIMESTAMP");
        col_ctx = column_of(line, "ContextTokens");
        col_gen = column_of(line, "GeneratedTokens");
        if (col_ctx < 0 || col_gen < 0)
                fail("%s: the header names no ContextTokens or no GeneratedTokens column", path);
        while (getline(&line, &cap, f) >= 0) {
                lineno++;
                if (line[strspn(line, " \r\n")] == '\0')
                        continue;
                if (n == alloc) {
                        alloc = alloc ? alloc * 2 : 4096;
                        rows = realloc(rows, alloc * sizeof(*rows));
                        if (!rows)
                                fail("out of memory");
                }
                if (!parse_row(line, col_ts, col_ctx, col_gen, &rows[n]))
                        fail("%s:%zu: not a row of counts", path, lineno);
                rows[n].index = n;
                n++;
        }
        free(line);
        fclose(f);
        if (n == 0)
                fail("%s: no rows", path);
        if (col_ts >= 0)
                qsort(rows, n, sizeof(*rows), row_cmp);
        *ret_n = n;
        return rows;
}

/* --- Varlink --- */

static int conn_open(const char *path) {
        struct sockaddr_un sa = {.sun_family = AF_UNIX};
        int fd;

        if (strlen(path) >= sizeof(sa.sun_path))
                fail("%s: path too long", path);
        strcpy(sa.sun_path, path);
        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0)
                fail("connect %s: %s", path, strerror(errno));
        return fd;
}

/* Sends one message (NUL-terminated on the wire) and reads its reply into
 * c->buf, NUL-terminated; returns it. */
static const char *conn_call(Conn *c, const char *msg, size_t len) {
        for (size_t off = 0; off <= len;) {
                ssize_t k = write(c->fd, msg + off, len + 1 - off);
                if (k < 0 && errno == EINTR)
                        continue;
                if (k <= 0)
                        fail("write: %s", k < 0 ? strerror(errno) : "short write");
                off += (size_t)k;
        }
        c->len = 0;
        for (;;) {
                ssize_t k;
                if (c->len > 0 && memchr(c->buf, '\0', c->len))
                        return c->buf;
                if (c->len == sizeof(c->buf))
                        fail("reply longer than %zu bytes", sizeof(c->buf));
                k = read(c->fd, c->buf + c->len, sizeof(c->buf) - c->len);
                if (k < 0 && errno == EINTR)
                        continue;
                if (k <= 0)
                        fail("read: %s", k < 0 ? strerror(errno) : "the daemon closed the connection");
                c->len += (size_t)k;
        }
}

/* The unsigned number after "KEY": in a reply; false when absent. Keys are
 * quoted with the colon, so "predicted" does not match "predictedOutput". */
static bool reply_u64(const char *reply, const char *key, uint64_t *ret) {
        char pat[64];
        const char *p;
        char *end;

        snprintf(pat, sizeof(pat), "\"%s\":", key);
        p = strstr(reply, pat);
        if (!p)
                return false;
        p += strlen(pat);
        while (*p == ' ')
                p++;
        if (*p < '0' || *p > '9')
                return false;
        errno = 0;
        *ret = strtoull(p, &end, 10);
        return errno == 0 && end != p;
}

/* The number after "KEY": (a float or an integer); false when absent. */
static bool reply_double(const char *reply, const char *key, double *ret) {
        char pat[64];
        const char *p;
        char *end;

        snprintf(pat, sizeof(pat), "\"%s\":", key);
        p = strstr(reply, pat);
        if (!p)
                return false;
        p += strlen(pat);
        errno = 0;
        *ret = strtod(p, &end);
        return errno == 0 && end != p;
}

static void reply_string(const char *reply, const char *key, char *buf, size_t size) {
        char pat[64];
        const char *p, *end;

        snprintf(pat, sizeof(pat), "\"%s\":\"", key);
        p = strstr(reply, pat);
        if (!p)
                fail("reply without %s: %s", key, reply);
        p += strlen(pat);
        end = strchr(p, '"');
        if (!end || (size_t)(end - p) >= size)
                fail("bad %s in reply: %s", key, reply);
        memcpy(buf, p, (size_t)(end - p));
        buf[end - p] = '\0';
}

/* Exit status when the daemon cannot be measured (see the top). */
#define EXIT_NOT_MEASURED 3

static void check_reply(const char *what, const char *reply, size_t row) {
        if (row == 0 && strstr(reply, "\"error\":\"org.varlink.service.InvalidParameter\"")) {
                fprintf(stderr, "%s: the first %s was refused (a daemon before issue 13?): %s\n", prog, what,
                        reply);
                exit(EXIT_NOT_MEASURED);
        }
        if (strstr(reply, "\"error\""))
                fail("row %zu: %s answered an error: %s", row + 1, what, reply);
}

/* --- metrics --- */

static void blocks_add(Blocks *b, uint64_t size, double pred, double act) {
        b->sum_pred += pred;
        b->sum_act += act;
        if (++b->count < size)
                return;
        /* A block with no output at all has no relative error: skipped. */
        if (b->sum_act > 0)
                b->errors[b->n_errors++] =
                        (b->sum_pred > b->sum_act ? b->sum_pred - b->sum_act : b->sum_act - b->sum_pred) /
                        b->sum_act;
        b->sum_pred = b->sum_act = 0;
        b->count = 0;
}

static int double_cmp(const void *a, const void *b) {
        double x = *(const double *)a, y = *(const double *)b;

        return (x > y) - (x < y);
}

static void blocks_summary(Blocks *b, double *ret_median, double *ret_p90) {
        size_t n = b->n_errors, k;

        if (n == 0) {
                *ret_median = *ret_p90 = 0;
                return;
        }
        qsort(b->errors, n, sizeof(double), double_cmp);
        *ret_median = n % 2 ? b->errors[n / 2] : (b->errors[n / 2 - 1] + b->errors[n / 2]) / 2;
        k = (n * 9 + 9) / 10; /* nearest rank: ceil(0.9 n) */
        *ret_p90 = b->errors[k - 1];
}

/* What one Request's reply said was reserved. */
typedef struct Reserved {
        uint64_t granted, hard_limit;
        bool learned; /* reason "learned" */
} Reserved;

static void totals_add(Totals *t, const Row *r, uint64_t estimate, uint64_t predicted, uint64_t pred_output,
                       const Reserved *res) {
        double act = (double)r->generated, pred = (double)pred_output;
        double total = (double)(r->context + r->generated);
        double res2x = 2.0 * (double)estimate, respred = (double)predicted,
               reserved = (double)res->hard_limit;

        t->counted++;
        t->abs_err += pred > act ? pred - act : act - pred;
        t->sum_pred += pred;
        t->sum_act += act;
        t->sum_act_total += total;
        for (int i = 0; i < N_BLOCK_SIZES; i++)
                blocks_add(&t->blocks[i], block_sizes[i], pred, act);
        if (res2x >= total) {
                t->unused_2x += res2x - total;
        } else {
                t->over_2x += total - res2x;
                t->over_2x_rows++;
        }
        if (respred >= total) {
                t->unused_pred += respred - total;
        } else {
                t->over_pred += total - respred;
                t->over_pred_rows++;
        }
        if (2.0 * respred >= total) {
                t->unused_2pred += 2.0 * respred - total;
        } else {
                t->over_2pred += total - 2.0 * respred;
                t->over_2pred_rows++;
        }
        if (reserved >= total) {
                t->unused_res += reserved - total;
        } else {
                t->over_res += total - reserved;
                t->over_res_rows++;
        }
        t->learned_rows += res->learned;
}

/* --- interval coverage --- */

/* Asks Estimate for a project of `tasks` tasks of the class, as it stands
 * before the block's first Release, into the block in progress of *cov. An
 * UnknownClass leaves the block without an interval; any other error is
 * kept in t->admin_error and ends the calls. */
static void coverage_start(Conn *admin, const char *cls, uint64_t tasks, Coverage *cov, Totals *t) {
        char msg[MSG_MAX_BYTES];
        const char *reply;
        int len;

        len = snprintf(
                msg, sizeof(msg),
                "{\"method\":\"io.tokenbudget.admin.Estimate\",\"parameters\":{\"class\":\"class:%s\","
                "\"tasks\":%" PRIu64 "}}",
                cls, tasks);
        if (len < 0 || (size_t)len >= sizeof(msg))
                fail("estimate call too long");
        reply = conn_call(admin, msg, (size_t)len);
        if (strstr(reply, "\"error\"")) {
                if (!strstr(reply, "\"error\":\"io.tokenbudget.admin.UnknownClass\""))
                        reply_string(reply, "error", t->admin_error, sizeof(t->admin_error));
                return;
        }
        if (!reply_u64(reply, "expectedOutput", &cov->expected))
                fail("Estimate reply without expectedOutput: %s", reply);
        cov->has_expected = true;
        if (!strstr(reply, "\"interval\":"))
                return;
        if (!reply_u64(reply, "outputLow", &cov->low) || !reply_u64(reply, "outputHigh", &cov->high) ||
            !reply_double(reply, "coverage", &t->nominal_coverage))
                fail("Estimate interval without outputLow, outputHigh or coverage: %s", reply);
        cov->has_interval = true;
}

/* Counts one row's actual output into the block in progress; at the block's end, where it fell. */
static void coverage_add(Coverage *cov, uint64_t size, double act) {
        cov->sum_act += act;
        if (++cov->count < size)
                return;
        cov->blocks++;
        if (cov->has_interval) {
                cov->with_interval++;
                if (cov->sum_act < (double)cov->low)
                        cov->below++;
                else if (cov->sum_act > (double)cov->high)
                        cov->above++;
                else
                        cov->within++;
        }
        if (cov->has_expected && cov->sum_act > 0) {
                double d = (double)cov->expected - cov->sum_act;
                cov->errors[cov->n_errors++] = (d > 0 ? d : -d) / cov->sum_act;
        }
        cov->has_interval = cov->has_expected = false;
        cov->count = 0;
        cov->sum_act = 0;
}

static double ratio(double a, double b) {
        return b > 0 ? a / b : 0;
}

/* --- the replay --- */

static void replay(Conn *c, Conn *admin, const Row *rows, size_t n, const char *cls, bool buckets,
                   uint64_t client_output, FILE *dump, Totals *t) {
        char msg[MSG_MAX_BYTES], alloc[128];

        for (size_t i = 0; i < n; i++) {
                const Row *r = &rows[i];
                uint64_t estimate = r->context + client_output, predicted = 0, pred_output = 0;
                Reserved res = {0};
                const char *reply;
                bool has_pred;
                int len;

                len = buckets ? snprintf(msg, sizeof(msg),
                                         "{\"method\":\"io.tokenbudget.agent.Request\",\"parameters\":{"
                                         "\"estimate\":%" PRIu64
                                         ",\"class\":\"%s\",\"promptTokens\":%" PRIu64 "}}",
                                         estimate, cls, r->context)
                              : snprintf(msg, sizeof(msg),
                                         "{\"method\":\"io.tokenbudget.agent.Request\",\"parameters\":{"
                                         "\"estimate\":%" PRIu64 ",\"class\":\"%s\"}}",
                                         estimate, cls);
                if (len < 0 || (size_t)len >= sizeof(msg))
                        fail("request too long");
                reply = conn_call(c, msg, (size_t)len);
                check_reply("Request", reply, i);
                reply_string(reply, "allocation", alloc, sizeof(alloc));
                if (!reply_u64(reply, "granted", &res.granted))
                        fail("row %zu: Request reply without granted: %s", i + 1, reply);
                if (!reply_u64(reply, "hardLimit", &res.hard_limit))
                        res.hard_limit = res.granted;
                res.learned = strstr(reply, "\"reason\":\"learned\"") != NULL;
                has_pred = reply_u64(reply, "predictedOutput", &pred_output);
                if (has_pred) {
                        if (!reply_u64(reply, "predicted", &predicted) ||
                            !reply_u64(reply, "samples", &t->last_samples))
                                fail("row %zu: predictedOutput without predicted or samples: %s", i + 1,
                                     reply);
                        if (t->counted == 0)
                                t->first_counted_row = i + 1;
                        for (int k = 0; k < N_COVERAGE_SIZES; k++) {
                                Coverage *cov = &t->coverage[k];
                                if (cov->count == 0 && !t->admin_error[0])
                                        coverage_start(admin, cls, coverage_sizes[k], cov, t);
                                coverage_add(cov, coverage_sizes[k], (double)r->generated);
                        }
                        totals_add(t, r, estimate, predicted, pred_output, &res);
                        if (dump)
                                fprintf(dump,
                                        "%zu,%" PRIu64 ",%" PRIu64 ",%" PRIu64 ",%" PRIu64 ",%" PRIu64
                                        ",%" PRIu64 ",%" PRIu64 ",%" PRIu64 "\n",
                                        i + 1, r->context, r->generated, estimate, predicted, pred_output,
                                        t->last_samples, res.granted, res.hard_limit);
                } else if (t->counted > 0) {
                        t->missing++;
                }

                len = snprintf(
                        msg, sizeof(msg),
                        "{\"method\":\"io.tokenbudget.agent.Release\",\"parameters\":{\"allocation\":\"%s\","
                        "\"inputTokens\":%" PRIu64 ",\"outputTokens\":%" PRIu64 "}}",
                        alloc, r->context, r->generated);
                if (len < 0 || (size_t)len >= sizeof(msg))
                        fail("release too long");
                reply = conn_call(c, msg, (size_t)len);
                check_reply("Release", reply, i);
        }
}

static void print_result(const char *label, const char *cls, const char *mode, size_t n,
                         uint64_t client_output, Totals *t, double elapsed_s) {
        printf("trace=%s class=%s mode=%s rows=%zu client_output=%" PRIu64 " counted=%" PRIu64
               " first_counted_row=%" PRIu64 " missing=%" PRIu64 " samples_last=%" PRIu64,
               label, cls, mode, n, client_output, t->counted, t->first_counted_row, t->missing,
               t->last_samples);
        printf(" wape=%.4f bias=%.4f sum_pred_output=%.0f sum_act_output=%.0f",
               ratio(t->abs_err, t->sum_act), ratio(t->sum_pred - t->sum_act, t->sum_act), t->sum_pred,
               t->sum_act);
        for (int i = 0; i < N_BLOCK_SIZES; i++) {
                double median, p90;
                blocks_summary(&t->blocks[i], &median, &p90);
                printf(" block%" PRIu64 "_n=%zu block%" PRIu64 "_median=%.4f block%" PRIu64 "_p90=%.4f",
                       block_sizes[i], t->blocks[i].n_errors, block_sizes[i], median, block_sizes[i], p90);
        }
        printf(" sum_act_total=%.0f", t->sum_act_total);
        printf(" unused_2x=%.0f over_2x=%.0f over_2x_rows=%" PRIu64 " unused_pred=%.0f over_pred=%.0f"
               " over_pred_rows=%" PRIu64 " unused_2pred=%.0f over_2pred=%.0f over_2pred_rows=%" PRIu64,
               t->unused_2x, t->over_2x, t->over_2x_rows, t->unused_pred, t->over_pred, t->over_pred_rows,
               t->unused_2pred, t->over_2pred, t->over_2pred_rows);
        printf(" unused_res=%.0f over_res=%.0f over_res_rows=%" PRIu64 " learned_rows=%" PRIu64,
               t->unused_res, t->over_res, t->over_res_rows, t->learned_rows);
        printf(" coverage_error=%s coverage_nominal=%.3f", t->admin_error[0] ? t->admin_error : "none",
               t->nominal_coverage);
        for (int i = 0; i < N_COVERAGE_SIZES; i++) {
                Coverage *cov = &t->coverage[i];
                uint64_t size = coverage_sizes[i];
                Blocks err = {.errors = cov->errors, .n_errors = cov->n_errors};
                double median, p90;

                blocks_summary(&err, &median, &p90);
                printf(" cov%" PRIu64 "_blocks=%" PRIu64 " cov%" PRIu64 "_intervals=%" PRIu64 " cov%" PRIu64
                       "_within=%" PRIu64 " cov%" PRIu64 "_below=%" PRIu64 " cov%" PRIu64 "_above=%" PRIu64,
                       size, cov->blocks, size, cov->with_interval, size, cov->within, size, cov->below,
                       size, cov->above);
                printf(" cov%" PRIu64 "_share=%.4f cov%" PRIu64 "_expected_n=%zu cov%" PRIu64
                       "_expected_median=%.4f cov%" PRIu64 "_expected_p90=%.4f",
                       size, ratio((double)cov->within, (double)cov->with_interval), size, cov->n_errors,
                       size, median, size, p90);
        }
        printf(" elapsed_s=%.2f calls_per_sec=%.0f\n", elapsed_s, ratio(2.0 * (double)n, elapsed_s));
}

static void usage(void) {
        fprintf(stderr,
                "usage: %s --socket PATH --trace FILE.csv --class NAME --mode buckets|class "
                "[--client-output N] [--label TEXT] [--dump FILE.csv]\n",
                prog);
        exit(2);
}

int main(int argc, char **argv) {
        static const struct option opts[] = {
                {"socket", required_argument, NULL, 's'},        {"trace", required_argument, NULL, 't'},
                {"class", required_argument, NULL, 'c'},         {"mode", required_argument, NULL, 'm'},
                {"client-output", required_argument, NULL, 'o'}, {"label", required_argument, NULL, 'l'},
                {"dump", required_argument, NULL, 'd'},          {NULL, 0, NULL, 0},
        };
        const char *sock = NULL, *trace = NULL, *cls = NULL, *mode = NULL, *label = NULL, *dump_path = NULL;
        FILE *dump = NULL;
        uint64_t client_output = 1000, t0;
        Totals t = {0};
        Conn c = {0}, admin = {0};
        size_t n;
        Row *rows;
        int opt;

        while ((opt = getopt_long(argc, argv, "", opts, NULL)) != -1) {
                switch (opt) {
                case 's':
                        sock = optarg;
                        break;
                case 't':
                        trace = optarg;
                        break;
                case 'c':
                        cls = optarg;
                        break;
                case 'm':
                        mode = optarg;
                        break;
                case 'o':
                        if (!parse_u64(optarg, strlen(optarg), &client_output))
                                usage();
                        break;
                case 'l':
                        label = optarg;
                        break;
                case 'd':
                        dump_path = optarg;
                        break;
                default:
                        usage();
                }
        }
        if (!sock || !trace || !cls || !mode || optind != argc ||
            (strcmp(mode, "buckets") != 0 && strcmp(mode, "class") != 0))
                usage();
        /* The class goes into JSON as is: keep it to characters that need no escaping. */
        if (cls[0] == '\0' || strlen(cls) > 200 || cls[strcspn(cls, "\"\\ \t\r\n")] != '\0')
                fail("--class: 1 to 200 characters, no quotes, backslashes or spaces");
        if (!label)
                label = cls;
        if (label[strcspn(label, " \t\r\n")] != '\0')
                fail("--label: no spaces");

        rows = trace_read(trace, &n);
        if (dump_path) {
                dump = fopen(dump_path, "we");
                if (!dump)
                        fail("%s: %s", dump_path, strerror(errno));
                fputs("row,context,generated,estimate,predicted,predicted_output,samples,"
                      "granted,hard_limit\n",
                      dump);
        }
        for (int i = 0; i < N_BLOCK_SIZES; i++) {
                t.blocks[i].errors = calloc(n / block_sizes[i] + 1, sizeof(double));
                if (!t.blocks[i].errors)
                        fail("out of memory");
        }
        for (int i = 0; i < N_COVERAGE_SIZES; i++) {
                t.coverage[i].errors = calloc(n / coverage_sizes[i] + 1, sizeof(double));
                if (!t.coverage[i].errors)
                        fail("out of memory");
        }
        c.fd = conn_open(sock);
        admin.fd = conn_open(sock);
        t0 = now_usec();
        replay(&c, &admin, rows, n, cls, strcmp(mode, "buckets") == 0, client_output, dump, &t);
        if (dump && fclose(dump) != 0)
                fail("%s: %s", dump_path, strerror(errno));
        print_result(label, cls, mode, n, client_output, &t, (double)(now_usec() - t0) / 1e6);
        if (t.counted == 0) {
                fprintf(stderr, "%s: no reply had a prediction (a daemon before issue 13?)\n", prog);
                return EXIT_NOT_MEASURED;
        }
        if (t.missing > 0)
                fail("%" PRIu64 " replies after the first prediction had none", t.missing);
        close(c.fd);
        close(admin.fd);
        for (int i = 0; i < N_BLOCK_SIZES; i++)
                free(t.blocks[i].errors);
        for (int i = 0; i < N_COVERAGE_SIZES; i++)
                free(t.coverage[i].errors);
        free(rows);
        return 0;
}
