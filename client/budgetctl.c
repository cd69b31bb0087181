/* SPDX-License-Identifier: MIT */
/*
 * budgetctl: the admin command line of tokenbudgetd. A table of verbs, each
 * with the arguments it takes, the options that apply to it and a function
 * that makes one call on the admin interface (io.tokenbudget.admin) through
 * libtokenbudget and prints the reply as a table or a line (budgetctl-format.h
 * formats the values), or as pretty JSON with --json: status, list and
 * history (History, with the times of --since and --until parsed here, as
 * journalctl does), classes (Classes: what the estimator learned per task
 * class, and its error) and estimate (Estimate: what N tasks of a class will
 * use, with an interval, and cost) read, set (SetLimits) and reload (Reload)
 * steer. It checks every argument before
 * it connects (a user name becomes a uid with getpwnam(); the daemon decides
 * the rest, and who may do what), validates the shape of every reply it
 * prints from and never trusts the daemon's strings on a terminal (control
 * characters are replaced). When no daemon answers it says where it looked
 * (the library's own address search, tb_client_addresses()) and how to start
 * one there (the systemd unit when one is installed, else by hand). It keeps
 * no state of its own.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE 1
#endif
#include <assert.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h> /* isfinite(), a macro: no libm needed */
#include <pwd.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <json-c/json.h>

#ifndef TB_VERSION
#include "tb-config.h"
#include "varlink-names.h"
#endif
#include "budgetctl-format.h"
#include "macro.h"
#include "time-util.h"
#include "tokenbudget.h"
#include "utf8.h"

/* Exit codes, documented in --help and budgetctl(1). */
enum {
        EXIT_OK = 0,
        EXIT_FAILED = 1,      /* the daemon answered with an error, or something else failed */
        EXIT_USAGE = 2,       /* unknown command or option, bad value */
        EXIT_UNREACHABLE = 3, /* could not connect to the daemon */
};

/* Far beyond any sensible wait: a day. */
#define TIMEOUT_MAX_SEC 86400.0

/* The options that apply to some verbs only; any other verb refuses them as a usage error. */
typedef enum OptionFlags {
        OPTION_ALL = 1 << 0,           /* --all */
        OPTION_KIND = 1 << 1,          /* --kind */
        OPTION_USER = 1 << 2,          /* --user */
        OPTION_MIN_TOKENS = 1 << 3,    /* request --min-tokens */
        OPTION_WAIT = 1 << 4,          /* request --wait */
        OPTION_PRIORITY = 1 << 5,      /* request --priority */
        OPTION_AGENT = 1 << 6,         /* request --agent */
        OPTION_CLASS = 1 << 7,         /* request --class */
        OPTION_MODEL = 1 << 8,         /* request --model */
        OPTION_PROMPT_TOKENS = 1 << 9, /* request --prompt-tokens */
        OPTION_USE = 1 << 10,          /* request --use */
        OPTION_HOLD = 1 << 11,         /* request --hold */
        OPTION_SINCE = 1 << 12,        /* history --since */
        OPTION_UNTIL = 1 << 13,        /* history --until */
        OPTION_BY = 1 << 14,           /* history --by */
        OPTION_PERSISTENT = 1 << 15,   /* set --persistent */
        OPTION_TASKS = 1 << 16,        /* estimate --tasks */
        OPTIONS_REQUEST = OPTION_MIN_TOKENS | OPTION_WAIT | OPTION_PRIORITY | OPTION_AGENT | OPTION_CLASS |
                          OPTION_MODEL | OPTION_PROMPT_TOKENS | OPTION_USE | OPTION_HOLD,
} OptionFlags;

typedef struct Options {
        const char *verb;   /* the command's name, for messages */
        const char *socket; /* NULL: the library's default search */
        bool all;           /* status --all: every tracked scope, idle ones too */
        const char *kind;   /* status --kind: NULL for every kind */
        const char *user;   /* status --user, as given (a name or a uid): NULL for every user */
        OptionFlags given;  /* which of the verb-specific options were given */
        bool json;
        bool legend;
        uint64_t timeout_usec;     /* TB_USEC_INFINITY for --timeout 0 */
        double timeout_sec;        /* as given, for messages */
        tb_request_params request; /* request: its options (the estimate is its argument) */
        uint64_t use_tokens;       /* request --use: output tokens reported and released */
        uint64_t hold_usec;        /* request --hold: how long the allocation is held open */
        const char *since;         /* history --since, as given: NULL for the beginning */
        const char *until;         /* history --until, as given: NULL for no end */
        const char *by;            /* history --by: NULL for day */
        bool persistent;           /* set --persistent: kept in the durable ledger */
        uint64_t tasks;            /* estimate --tasks: 0 for the default (1) */
} Options;

/* ---- tables ---- */

typedef struct Table {
        size_t n_columns;
        const bool *right; /* per column: right-aligned (numbers) */
        char **cells;      /* row-major; the first row is the header */
        size_t n_cells;
} Table;

static Table *table_free(Table *t) {
        if (!t)
                return NULL;
        for (size_t i = 0; i < t->n_cells; i++)
                free(t->cells[i]);
        free(t->cells);
        free(t);
        return NULL;
}

/* Adds one cell; the daemon's strings may hold anything, so control characters become '?'. */
static int table_add(Table *t, const char *text) {
        char **cells;
        char *copy;

        copy = strdup(text);
        if (!copy)
                return -ENOMEM;
        format_sanitize(copy);
        cells = realloc(t->cells, (t->n_cells + 1) * sizeof(*cells));
        if (!cells) {
                free(copy);
                return -ENOMEM;
        }
        t->cells = cells;
        t->cells[t->n_cells++] = copy;
        return 0;
}

static void table_print(const Table *t, bool legend) {
        size_t widths[16] = {0};

        if (t->n_columns == 0 || t->n_columns > 16)
                return;
        for (size_t i = legend ? 0 : t->n_columns; i < t->n_cells; i++) {
                size_t w = utf8_width(t->cells[i]);

                if (w > widths[i % t->n_columns])
                        widths[i % t->n_columns] = w;
        }
        for (size_t i = legend ? 0 : t->n_columns; i < t->n_cells; i++) {
                size_t col = i % t->n_columns, pad = widths[col] - utf8_width(t->cells[i]);
                bool last = col + 1 == t->n_columns;

                if (t->right[col])
                        printf("%*s%s", (int)pad, "", t->cells[i]);
                else
                        printf("%s%*s", t->cells[i], last ? 0 : (int)pad, "");
                fputs(last ? "\n" : "  ", stdout);
        }
}

/* ---- reply shape ---- */

static int malformed(const char *what, const char *ctx, const char *key) {
        fprintf(stderr, "budgetctl: malformed reply from tokenbudgetd: %s%s %s\n", ctx, key, what);
        return -EBADMSG;
}

/* A non-negative integer field; with ret_present, absent or null is allowed. */
static int get_uint(json_object *o, const char *ctx, const char *key, uint64_t *ret, bool *ret_present) {
        json_object *v = json_object_object_get(o, key);

        if (ret_present) {
                *ret_present = v != NULL;
                if (!v)
                        return 0;
        }
        if (!json_object_is_type(v, json_type_int) || json_object_get_int64(v) < 0)
                return malformed("is missing or not a non-negative integer", ctx, key);
        *ret = (uint64_t)json_object_get_int64(v);
        return 0;
}

/* A string field; with optional, absent or null reads as "-". */
static int get_string(json_object *o, const char *ctx, const char *key, bool optional, const char **ret) {
        json_object *v = json_object_object_get(o, key);

        if (!v && optional) {
                *ret = "-";
                return 0;
        }
        if (!json_object_is_type(v, json_type_string))
                return malformed("is missing or not a string", ctx, key);
        *ret = json_object_get_string(v);
        return 0;
}

/* A boolean field; with ret_present, absent or null is allowed. */
static int get_bool(json_object *o, const char *ctx, const char *key, bool *ret, bool *ret_present) {
        json_object *v = json_object_object_get(o, key);

        if (ret_present) {
                *ret_present = v != NULL;
                if (!v)
                        return 0;
        }
        if (!json_object_is_type(v, json_type_boolean))
                return malformed("is missing or not a boolean", ctx, key);
        *ret = json_object_get_boolean(v);
        return 0;
}

/* Far beyond any reading or factor: the conversion to an integer cannot overflow. */
#define FIXED_MAX 1e12

/*
 * A number field (a float on the wire; an integer is a number too) as an
 * integer count of 10^-decimals units, rounded to the nearest: the daemon
 * writes readings and factors with that many decimals, so this gives its
 * value back exactly ("61.5" at 1 decimal is 615). With ret_present, absent
 * or null is allowed.
 */
static int get_fixed(json_object *o, const char *ctx, const char *key, unsigned decimals, int64_t *ret,
                     bool *ret_present) {
        json_object *v = json_object_object_get(o, key);
        double d, scale = 1.0;

        if (ret_present) {
                *ret_present = v != NULL;
                if (!v)
                        return 0;
        }
        if (!json_object_is_type(v, json_type_double) && !json_object_is_type(v, json_type_int))
                return malformed("is missing or not a number", ctx, key);
        d = json_object_get_double(v);
        if (!isfinite(d) || d > FIXED_MAX || d < -FIXED_MAX)
                return malformed("is not a number budgetctl can show", ctx, key);
        for (unsigned i = 0; i < decimals; i++)
                scale *= 10.0;
        d *= scale;
        *ret = (int64_t)(d < 0 ? d - 0.5 : d + 0.5);
        return 0;
}

static int get_array(json_object *o, const char *ctx, const char *key, json_object **ret) {
        json_object *v = json_object_object_get(o, key);

        if (!json_object_is_type(v, json_type_array))
                return malformed("is missing or not an array", ctx, key);
        *ret = v;
        return 0;
}

static int get_object_at(json_object *array, size_t i, const char *ctx, json_object **ret) {
        json_object *v = json_object_array_get_idx(array, i);
        char key[32];

        if (!json_object_is_type(v, json_type_object)) {
                snprintf(key, sizeof(key), "[%zu]", i);
                return malformed("is not an object", ctx, key);
        }
        *ret = v;
        return 0;
}

/* ---- status ---- */

typedef struct Span {
        const char *name;
        uint64_t usec;
} Span;

typedef struct Spans {
        Span items[8]; /* the daemon has minute, hour and day */
        size_t n;
} Spans;

static int spans_add(Spans *spans, const char *name, uint64_t usec) {
        size_t i;

        for (i = 0; i < spans->n; i++)
                if (strcmp(spans->items[i].name, name) == 0)
                        return 0;
        if (spans->n == sizeof(spans->items) / sizeof(spans->items[0]))
                return malformed("has more distinct spans than budgetctl can show", "", "windows");
        /* Keep them sorted by length: minute, hour, day. */
        for (i = spans->n; i > 0 && spans->items[i - 1].usec > usec; i--)
                spans->items[i] = spans->items[i - 1];
        spans->items[i] = (Span){name, usec};
        spans->n++;
        return 0;
}

/* Validates one window and adds its span. */
static int status_check_window(json_object *w, const char *ctx, Spans *spans) {
        const char *span;
        uint64_t span_usec, v;
        bool present;

        if (get_string(w, ctx, "span", false, &span) < 0 ||
            get_uint(w, ctx, "spanUsec", &span_usec, NULL) < 0 || get_uint(w, ctx, "used", &v, NULL) < 0 ||
            get_uint(w, ctx, "limit", &v, &present) < 0 || get_uint(w, ctx, "freesInUsec", &v, &present) < 0)
                return -EBADMSG;
        return spans_add(spans, span, span_usec);
}

/* Validates every window of every scope and collects the distinct spans. */
static int status_collect_spans(json_object *scopes, Spans *spans) {
        for (size_t i = 0; i < json_object_array_length(scopes); i++) {
                json_object *scope, *windows, *w;
                char ctx[64];
                int r;

                snprintf(ctx, sizeof(ctx), "scopes[%zu].", i);
                if (get_object_at(scopes, i, "scopes", &scope) < 0 ||
                    get_array(scope, ctx, "windows", &windows) < 0)
                        return -EBADMSG;
                for (size_t j = 0; j < json_object_array_length(windows); j++) {
                        snprintf(ctx, sizeof(ctx), "scopes[%zu].windows", i);
                        if (get_object_at(windows, j, ctx, &w) < 0)
                                return -EBADMSG;
                        snprintf(ctx, sizeof(ctx), "scopes[%zu].windows[%zu].", i, j);
                        r = status_check_window(w, ctx, spans);
                        if (r < 0)
                                return r;
                }
        }
        return 0;
}

/* A string field that may be absent or null: *ret NULL then. */
static int get_optional_string(json_object *o, const char *ctx, const char *key, const char **ret) {
        *ret = NULL;
        return json_object_object_get(o, key) ? get_string(o, ctx, key, false, ret) : 0;
}

/*
 * Reads the durability object (from a daemon with a durable ledger) into *d.
 * Returns 1, 0 when the daemon sent none, or -EBADMSG (printed).
 */
static int status_durability_read(json_object *reply, FormatDurability *d) {
        json_object *du = json_object_object_get(reply, VL_OUT_ADMIN_STATUS_DURABILITY);
        const char *ctx = VL_OUT_ADMIN_STATUS_DURABILITY ".";

        if (!du)
                return 0;
        if (!json_object_is_type(du, json_type_object))
                return malformed("is not an object", "", VL_OUT_ADMIN_STATUS_DURABILITY);
        if (get_optional_string(du, ctx, VL_FIELD_ADMIN_DURABILITY_DATABASE, &d->database) < 0 ||
            get_string(du, ctx, VL_FIELD_ADMIN_DURABILITY_SYNC, false, &d->sync) < 0 ||
            get_bool(du, ctx, VL_FIELD_ADMIN_DURABILITY_DEGRADED, &d->degraded, NULL) < 0 ||
            get_optional_string(du, ctx, VL_FIELD_ADMIN_DURABILITY_ERROR, &d->error) < 0 ||
            get_uint(du, ctx, VL_FIELD_ADMIN_DURABILITY_PENDING, &d->pending, NULL) < 0 ||
            get_uint(du, ctx, VL_FIELD_ADMIN_DURABILITY_LOST, &d->lost, NULL) < 0 ||
            get_uint(du, ctx, VL_FIELD_ADMIN_DURABILITY_COMMITS, &d->commits, NULL) < 0)
                return -EBADMSG;
        return 1;
}

/*
 * The daemon's version and uptime, its connections, allocations and
 * reservations, and where its ledger is kept (a daemon from before the
 * durable ledger sends no durability: no such line).
 */
static int status_header(json_object *reply, const Options *o) {
        uint64_t uptime_usec, connections, allocations, reserved;
        const char *version;
        char a[FORMAT_DURATION_MAX], b[FORMAT_TOKENS_MAX], c[FORMAT_DURABILITY_MAX];
        FormatDurability durability = {};
        int has_durability;

        if (get_string(reply, "", "version", false, &version) < 0 ||
            get_uint(reply, "", "uptimeUsec", &uptime_usec, NULL) < 0 ||
            get_uint(reply, "", "connections", &connections, NULL) < 0 ||
            get_uint(reply, "", "allocations", &allocations, NULL) < 0 ||
            get_uint(reply, "", "reserved", &reserved, NULL) < 0)
                return -EBADMSG;
        has_durability = status_durability_read(reply, &durability);
        if (has_durability < 0)
                return has_durability;
        if (!o->legend)
                return 0;
        printf("tokenbudgetd %s, up %s\n", version, format_duration(a, uptime_usec));
        printf("Connections: %" PRIu64 "  Allocations in flight: %" PRIu64 "  Reserved: %s tokens\n",
               connections, allocations, format_tokens(b, reserved));
        if (has_durability > 0)
                printf("Durability: %s\n", format_durability(c, &durability));
        putchar('\n');
        return 0;
}

/* The cell of one span for one scope: "used/limit", or "-" when the scope has no such window. */
static int status_window_cell(json_object *windows, const char *span, char buf[static FORMAT_RATIO_MAX]) {
        for (size_t j = 0; j < json_object_array_length(windows); j++) {
                json_object *w = json_object_array_get_idx(windows, j);
                uint64_t used, limit = 0;
                bool has_limit;

                if (strcmp(json_object_get_string(json_object_object_get(w, "span")), span) != 0)
                        continue;
                /* Already validated by status_collect_spans(). */
                get_uint(w, "", "used", &used, NULL);
                get_uint(w, "", "limit", &limit, &has_limit);
                format_ratio(buf, used, has_limit, limit);
                return 0;
        }
        strcpy(buf, "-");
        return 0;
}

/*
 * When the scope's tightest window (the limited one with the most of its
 * limit used; the shorter on a tie) has room again: "in 42s", rounded up to
 * the second (it is a wait: better a second late than early). "-" when no
 * limited window holds usage.
 */
static const char *status_frees_cell(json_object *windows, char buf[static FORMAT_DURATION_MAX + 8]) {
        uint64_t best_used = 0, best_limit = 1, best_span = 0, frees_usec = 0;
        bool found = false;

        for (size_t j = 0; j < json_object_array_length(windows); j++) {
                json_object *w = json_object_array_get_idx(windows, j);
                uint64_t used = 0, limit = 0, span = 0, frees = 0;
                bool has_limit, has_frees;
                unsigned __int128 a, b;

                /* Already validated by status_collect_spans(). */
                get_uint(w, "", "used", &used, NULL);
                get_uint(w, "", "spanUsec", &span, NULL);
                get_uint(w, "", "limit", &limit, &has_limit);
                get_uint(w, "", "freesInUsec", &frees, &has_frees);
                if (!has_limit || limit == 0 || used == 0 || !has_frees)
                        continue;
                /* used/limit against best_used/best_limit, without dividing. */
                a = (unsigned __int128)used * best_limit;
                b = (unsigned __int128)best_used * limit;
                if (found && (a < b || (a == b && span >= best_span)))
                        continue;
                best_used = used;
                best_limit = limit;
                best_span = span;
                frees_usec = frees;
                found = true;
        }
        if (!found)
                return strcpy(buf, "-");
        memcpy(buf, "in ", 3);
        format_duration(buf + 3, frees_usec > UINT64_MAX - (USEC_PER_SEC - 1)
                                         ? frees_usec
                                         : frees_usec + USEC_PER_SEC - 1);
        return buf;
}

/*
 * The USE cell: the utilisation the pool breaker watches, "85%", with
 * "DEGRADED " before it while the scope is in degraded mode; "-" from a
 * daemon that does not say (before the ladder).
 */
static int status_use_cell(json_object *scope, const char *ctx, char buf[static FORMAT_PERCENT_MAX + 16]) {
        uint64_t permille = 0;
        bool degraded = false, has_permille, has_degraded;
        char percent[FORMAT_PERCENT_MAX];

        if (get_uint(scope, ctx, "utilisationPermille", &permille, &has_permille) < 0 ||
            get_bool(scope, ctx, "degraded", &degraded, &has_degraded) < 0)
                return -EBADMSG;
        if (!has_permille)
                snprintf(buf, FORMAT_PERCENT_MAX + 16, "%s", degraded ? "DEGRADED" : "-");
        else
                snprintf(buf, FORMAT_PERCENT_MAX + 16, "%s%s", degraded ? "DEGRADED " : "",
                         format_percent(percent, permille));
        return 0;
}

static int status_row(Table *t, json_object *scope, size_t i, const Spans *spans) {
        uint64_t reserved, in_flight_limit = 0, allocations, allocations_limit = 0, committed, v,
                           waiters = 0;
        json_object *windows = json_object_object_get(scope, "windows");
        const char *name, *kind;
        bool has_limit, has_allocations_limit, present, has_waiters;
        char ctx[32], cell[FORMAT_RATIO_MAX], frees[FORMAT_DURATION_MAX + 8], use[FORMAT_PERCENT_MAX + 16];
        int r;

        snprintf(ctx, sizeof(ctx), "scopes[%zu].", i);
        if (get_string(scope, ctx, "name", false, &name) < 0 ||
            get_string(scope, ctx, "kind", true, &kind) < 0 ||
            get_uint(scope, ctx, "uid", &v, &present) < 0 || get_uint(scope, ctx, "pid", &v, &present) < 0 ||
            get_uint(scope, ctx, "reserved", &reserved, NULL) < 0 ||
            get_uint(scope, ctx, "committed", &committed, NULL) < 0 ||
            get_uint(scope, ctx, "allocations", &allocations, NULL) < 0 ||
            get_uint(scope, ctx, "inFlightLimit", &in_flight_limit, &has_limit) < 0 ||
            get_uint(scope, ctx, "allocationsLimit", &allocations_limit, &has_allocations_limit) < 0 ||
            get_uint(scope, ctx, "waiters", &waiters, &has_waiters) < 0 ||
            status_use_cell(scope, ctx, use) < 0)
                return -EBADMSG;
        /* The kind is the name's prefix ("user:1000", "rule:nightly:1000"): no column of its own. */
        r = table_add(t, name);
        for (size_t s = 0; r >= 0 && s < spans->n; s++) {
                status_window_cell(windows, spans->items[s].name, cell);
                r = table_add(t, cell);
        }
        if (r >= 0)
                r = table_add(t, format_ratio(cell, reserved, has_limit, in_flight_limit));
        if (r >= 0) {
                if (has_allocations_limit)
                        snprintf(cell, sizeof(cell), "%" PRIu64 "/%" PRIu64, allocations, allocations_limit);
                else
                        snprintf(cell, sizeof(cell), "%" PRIu64 "/-", allocations);
                r = table_add(t, cell);
        }
        if (r >= 0)
                r = table_add(t, use);
        if (r >= 0) {
                if (has_waiters)
                        snprintf(cell, sizeof(cell), "%" PRIu64, waiters);
                else
                        strcpy(cell, "-");
                r = table_add(t, cell);
        }
        /* FREES stays last: the row ends with when the budget frees up. */
        if (r >= 0)
                r = table_add(t, status_frees_cell(windows, frees));
        return r;
}

/* The note under the table: how many idle scopes were left out, and the command that lists them. */
static void status_note_hidden(uint64_t hidden, const Options *o) {
        printf("(%" PRIu64 " idle scope%s not shown; budgetctl status --all", hidden,
               hidden == 1 ? "" : "s");
        if (o->kind)
                printf(" --kind %s", o->kind);
        if (o->user)
                printf(" --user %s", o->user);
        printf(" lists them)\n");
}

/* One open or half-open breaker: BREAKER STATE RETRY BREACHES COOL-DOWN. */
static int status_breaker_row(Table *t, json_object *b, size_t i) {
        uint64_t retry_usec, breaches, cooldown_usec, v;
        const char *scope, *state;
        char ctx[32], retry[FORMAT_DURATION_MAX + 8], n[24], cooldown[FORMAT_DURATION_MAX];
        bool present;
        int r;

        snprintf(ctx, sizeof(ctx), "breakers[%zu].", i);
        if (get_string(b, ctx, "scope", false, &scope) < 0 ||
            get_string(b, ctx, "state", false, &state) < 0 || get_uint(b, ctx, "uid", &v, &present) < 0 ||
            get_uint(b, ctx, "retryAfterUsec", &retry_usec, NULL) < 0 ||
            get_uint(b, ctx, "breaches", &breaches, NULL) < 0 ||
            get_uint(b, ctx, "cooldownUsec", &cooldown_usec, NULL) < 0)
                return -EBADMSG;
        /* An open one lets a request through in retryAfterUsec (rounded up: it is a wait); a
         * half-open one lets one through now. */
        if (strcmp(state, "open") == 0) {
                memcpy(retry, "in ", 3);
                format_duration(retry + 3, retry_usec > UINT64_MAX - (USEC_PER_SEC - 1)
                                                   ? retry_usec
                                                   : retry_usec + USEC_PER_SEC - 1);
        } else
                strcpy(retry, "-");
        snprintf(n, sizeof(n), "%" PRIu64, breaches);
        r = table_add(t, scope);
        if (r >= 0)
                r = table_add(t, state);
        if (r >= 0)
                r = table_add(t, retry);
        if (r >= 0)
                r = table_add(t, n);
        if (r >= 0)
                r = table_add(t, format_duration(cooldown, cooldown_usec));
        return r;
}

static int status_breakers(json_object *breakers, const Options *o) {
        static const char *const headers[] = {"BREAKER", "STATE", "RETRY", "BREACHES", "COOL-DOWN"};
        static const bool right[] = {false, false, true, true, true};
        size_t n = json_object_array_length(breakers);
        json_object *b;
        Table *t;
        int r = 0;

        for (size_t i = 0; i < n; i++)
                if (get_object_at(breakers, i, "breakers", &b) < 0)
                        return -EBADMSG;
        if (n == 0)
                return 0;
        t = calloc(1, sizeof(*t));
        if (!t)
                return -ENOMEM;
        t->n_columns = ELEMENTSOF(headers);
        t->right = right;
        for (size_t c = 0; r >= 0 && c < t->n_columns; c++)
                r = table_add(t, headers[c]);
        for (size_t i = 0; r >= 0 && i < n; i++)
                r = status_breaker_row(t, json_object_array_get_idx(breakers, i), i);
        if (r >= 0) {
                putchar('\n');
                table_print(t, o->legend);
        }
        table_free(t);
        return r;
}

/* A reading of the power object: UNKNOWN when absent (the daemon does not know it). */
static int status_power_reading(json_object *power, const char *key, unsigned decimals, int64_t *ret) {
        bool present;

        if (get_fixed(power, "power.", key, decimals, ret, &present) < 0)
                return -EBADMSG;
        if (!present)
                *ret = FORMAT_POWER_UNKNOWN;
        return 0;
}

/* The factors of the power object, each required (permille; 0 is paused). */
static int status_power_factors(json_object *power, FormatPower *p) {
        static const char *const keys[_FORMAT_PRIORITY_MAX] = {
                [FORMAT_PRIORITY_INTERACTIVE] = VL_FIELD_ADMIN_POWER_FACTORS_INTERACTIVE,
                [FORMAT_PRIORITY_NORMAL] = VL_FIELD_ADMIN_POWER_FACTORS_NORMAL,
                [FORMAT_PRIORITY_BACKGROUND] = VL_FIELD_ADMIN_POWER_FACTORS_BACKGROUND,
        };
        json_object *factors = json_object_object_get(power, VL_FIELD_ADMIN_POWER_FACTORS);

        if (!json_object_is_type(factors, json_type_object))
                return malformed("is missing or not an object", "power.", VL_FIELD_ADMIN_POWER_FACTORS);
        for (size_t i = 0; i < _FORMAT_PRIORITY_MAX; i++)
                if (get_fixed(factors, "power.factors.", keys[i], 3, &p->factor_permille[i], NULL) < 0)
                        return -EBADMSG;
        return 0;
}

/*
 * Reads the power object (from a daemon with power awareness) into *p;
 * *ret_since_usec is when the state was entered (realtime). Returns 1, 0 when
 * the daemon sent none, or -EBADMSG (printed).
 */
static int status_power_read(json_object *reply, FormatPower *p, uint64_t *ret_since_usec) {
        json_object *power = json_object_object_get(reply, VL_OUT_ADMIN_STATUS_POWER), *sensor;

        if (!power)
                return 0;
        if (!json_object_is_type(power, json_type_object))
                return malformed("is not an object", "", VL_OUT_ADMIN_STATUS_POWER);
        if (get_string(power, "power.", VL_FIELD_ADMIN_POWER_STATE, false, &p->state) < 0 ||
            get_bool(power, "power.", VL_FIELD_ADMIN_POWER_ON_AC, &p->on_ac, NULL) < 0 ||
            status_power_reading(power, VL_FIELD_ADMIN_POWER_BATTERY_PERCENT, 1, &p->battery_permille) < 0 ||
            status_power_reading(power, VL_FIELD_ADMIN_POWER_TEMPERATURE_CELSIUS, 1, &p->temperature_dc) <
                    0 ||
            status_power_reading(power, VL_FIELD_ADMIN_POWER_MEMORY_PRESSURE, 2, &p->pressure_cp) < 0 ||
            get_uint(power, "power.", VL_FIELD_ADMIN_POWER_SINCE, ret_since_usec, NULL) < 0 ||
            status_power_factors(power, p) < 0)
                return -EBADMSG;
        sensor = json_object_object_get(power, VL_FIELD_ADMIN_POWER_SENSOR);
        if (sensor && get_string(power, "power.", VL_FIELD_ADMIN_POWER_SENSOR, false, &p->sensor) < 0)
                return -EBADMSG;
        return 1;
}

/*
 * The power line: the state, the readings that put the machine in it, since
 * when (local time) and what it does to each priority. format_power() cleans
 * the daemon's strings.
 */
static void status_power_print(FormatPower *p, uint64_t since_usec) {
        char buf[FORMAT_POWER_MAX];
        struct tm since, now;
        time_t t = (time_t)(since_usec / USEC_PER_SEC), n = time(NULL);

        if (since_usec > 0 && localtime_r(&t, &since))
                p->since = &since;
        if (localtime_r(&n, &now))
                p->now = &now;
        printf("power: %s\n", format_power(buf, p));
        p->since = p->now = NULL;
}

/*
 * What the ladder adds after the scopes (from a daemon that sends it): the
 * runaway breakers that are not closed, how many requests wait (queued for
 * room, held for an admin), the power state, and whether it only pretends (a
 * dry run). All legend: --no-legend prints the scope rows only.
 */
static int status_ladder(json_object *reply, const Options *o) {
        uint64_t waiters = 0, held = 0, since_usec = 0;
        bool enforce = true, has_waiters, has_held, has_enforce;
        json_object *breakers = json_object_object_get(reply, "breakers");
        FormatPower power = {
                .battery_permille = FORMAT_POWER_UNKNOWN,
                .temperature_dc = FORMAT_POWER_UNKNOWN,
                .pressure_cp = FORMAT_POWER_UNKNOWN,
        };
        int has_power;

        if (get_uint(reply, "", "waiters", &waiters, &has_waiters) < 0 ||
            get_uint(reply, "", "held", &held, &has_held) < 0 ||
            get_bool(reply, "", "enforce", &enforce, &has_enforce) < 0 ||
            (breakers && get_array(reply, "", "breakers", &breakers) < 0))
                return -EBADMSG;
        has_power = status_power_read(reply, &power, &since_usec);
        if (has_power < 0)
                return has_power;
        if (!o->legend)
                return 0;
        if (breakers) {
                int r = status_breakers(breakers, o);

                if (r < 0)
                        return r;
        }
        if (has_waiters || has_held)
                printf("\n%" PRIu64 " request%s queued, %" PRIu64 " held for an admin\n", waiters,
                       waiters == 1 ? "" : "s", held);
        if (has_power > 0) {
                if (!has_waiters && !has_held)
                        putchar('\n');
                status_power_print(&power, since_usec);
        }
        if (has_enforce && !enforce)
                printf("dry run: enforce = false (every request is granted; replies say what enforcing "
                       "would have done)\n");
        return 0;
}

static int status_print(json_object *reply, const Options *o, void *userdata) {
        bool right[16] = {false}, present;
        uint64_t hidden = 0;
        json_object *scopes;
        Spans spans = {};
        Table *t;
        int r;

        /* hiddenScopes: how many idle scopes the daemon left out; older daemons do not send it. */
        if (get_uint(reply, "", "hiddenScopes", &hidden, &present) < 0 || status_header(reply, o) < 0 ||
            get_array(reply, "", "scopes", &scopes) < 0 || status_collect_spans(scopes, &spans) < 0)
                return -EBADMSG;

        t = calloc(1, sizeof(*t));
        if (!t)
                return -ENOMEM;
        t->n_columns = spans.n + 6;
        for (size_t c = 1; c < t->n_columns; c++)
                right[c] = true;
        t->right = right;
        r = table_add(t, "NAME");
        for (size_t s = 0; r >= 0 && s < spans.n; s++) {
                char header[32];

                snprintf(header, sizeof(header), "%s", spans.items[s].name);
                r = table_add(t, format_upper(header));
        }
        if (r >= 0)
                r = table_add(t, "IN-FLIGHT");
        if (r >= 0)
                r = table_add(t, "ALLOCS");
        if (r >= 0)
                r = table_add(t, "USE");
        if (r >= 0)
                r = table_add(t, "WAITING");
        if (r >= 0)
                r = table_add(t, "FREES");
        for (size_t i = 0; r >= 0 && i < json_object_array_length(scopes); i++)
                r = status_row(t, json_object_array_get_idx(scopes, i), i, &spans);
        if (r >= 0)
                table_print(t, o->legend);
        table_free(t);
        if (r >= 0 && o->legend && !o->all && hidden > 0)
                status_note_hidden(hidden, o);
        if (r >= 0)
                r = status_ladder(reply, o);
        return r;
}

/* ---- list ---- */

static int list_row(Table *t, json_object *a, size_t i) {
        uint64_t pid, uid, granted, used, age_usec;
        const char *id, *command, *agent, *state;
        char ctx[32], num[2][24], g[FORMAT_TOKENS_MAX], u[FORMAT_TOKENS_MAX], age[FORMAT_DURATION_MAX];
        int r = 0;

        snprintf(ctx, sizeof(ctx), "allocations[%zu].", i);
        if (get_string(a, ctx, "id", false, &id) < 0 || get_uint(a, ctx, "pid", &pid, NULL) < 0 ||
            get_uint(a, ctx, "uid", &uid, NULL) < 0 || get_string(a, ctx, "command", false, &command) < 0 ||
            get_string(a, ctx, "agent", true, &agent) < 0 ||
            get_uint(a, ctx, "granted", &granted, NULL) < 0 || get_uint(a, ctx, "used", &used, NULL) < 0 ||
            get_string(a, ctx, "state", false, &state) < 0 ||
            get_uint(a, ctx, "ageUsec", &age_usec, NULL) < 0)
                return -EBADMSG;
        snprintf(num[0], sizeof(num[0]), "%" PRIu64, pid);
        snprintf(num[1], sizeof(num[1]), "%" PRIu64, uid);
        const char *cells[] = {
                id,
                num[0],
                num[1],
                command,
                agent,
                format_tokens(g, granted),
                format_tokens(u, used),
                state,
                format_duration(age, age_usec),
        };
        for (size_t c = 0; r >= 0 && c < sizeof(cells) / sizeof(cells[0]); c++)
                r = table_add(t, cells[c]);
        return r;
}

/* A table of the objects in the reply's array key, one row each (row
 * formats one), or the empty line when there are none. */
typedef int (*RowFunc)(Table *t, json_object *o, size_t i);
static int array_table_print(json_object *reply, const Options *o, const char *key,
                             const char *const *headers, const bool *right, size_t n_columns,
                             const char *empty, RowFunc row) {
        json_object *items;
        size_t n;
        Table *t;
        int r = 0;

        if (get_array(reply, "", key, &items) < 0)
                return -EBADMSG;
        n = json_object_array_length(items);
        for (size_t i = 0; i < n; i++) {
                json_object *item;

                if (get_object_at(items, i, key, &item) < 0)
                        return -EBADMSG;
        }
        if (n == 0) {
                if (o->legend)
                        puts(empty);
                return 0;
        }

        t = calloc(1, sizeof(*t));
        if (!t)
                return -ENOMEM;
        t->n_columns = n_columns;
        t->right = right;
        for (size_t c = 0; r >= 0 && c < t->n_columns; c++)
                r = table_add(t, headers[c]);
        for (size_t i = 0; r >= 0 && i < n; i++)
                r = row(t, json_object_array_get_idx(items, i), i);
        if (r >= 0)
                table_print(t, o->legend);
        table_free(t);
        return r;
}

static int list_print(json_object *reply, const Options *o, void *userdata) {
        static const char *const headers[] = {"ID",      "PID",  "UID",   "COMMAND", "AGENT",
                                              "GRANTED", "USED", "STATE", "AGE"};
        static const bool right[] = {false, true, true, false, false, true, true, false, true};

        return array_table_print(reply, o, "allocations", headers, right, ELEMENTSOF(headers),
                                 "No open allocations.", list_row);
}

/* ---- pending ---- */

static int pending_row(Table *t, json_object *p, size_t i) {
        uint64_t pid, uid, requested, cap, held_usec, timeout_usec, timeout_up;
        const char *id, *command, *agent, *priority, *scope, *s;
        char ctx[32], num[2][24], req[FORMAT_TOKENS_MAX], c[FORMAT_TOKENS_MAX], held[FORMAT_DURATION_MAX],
                timeout[FORMAT_DURATION_MAX + 8];
        int r = 0;

        snprintf(ctx, sizeof(ctx), "requests[%zu].", i);
        if (get_string(p, ctx, "id", false, &id) < 0 || get_uint(p, ctx, "pid", &pid, NULL) < 0 ||
            get_uint(p, ctx, "uid", &uid, NULL) < 0 || get_string(p, ctx, "command", false, &command) < 0 ||
            get_string(p, ctx, "agent", true, &agent) < 0 || get_string(p, ctx, "class", true, &s) < 0 ||
            get_string(p, ctx, "model", true, &s) < 0 ||
            get_string(p, ctx, "priority", false, &priority) < 0 ||
            get_string(p, ctx, "scope", false, &scope) < 0 ||
            get_uint(p, ctx, "requested", &requested, NULL) < 0 || get_uint(p, ctx, "cap", &cap, NULL) < 0 ||
            get_uint(p, ctx, "heldUsec", &held_usec, NULL) < 0 ||
            get_uint(p, ctx, "timeoutInUsec", &timeout_usec, NULL) < 0)
                return -EBADMSG;
        snprintf(num[0], sizeof(num[0]), "%" PRIu64, pid);
        snprintf(num[1], sizeof(num[1]), "%" PRIu64, uid);
        /* When it is denied: rounded up, as waits are. */
        timeout_up = timeout_usec > UINT64_MAX - (USEC_PER_SEC - 1) ? timeout_usec
                                                                    : timeout_usec + USEC_PER_SEC - 1;
        memcpy(timeout, "in ", 3);
        format_duration(timeout + 3, timeout_up);
        const char *cells[] = {
                id,
                num[0],
                num[1],
                command,
                agent,
                priority,
                format_tokens(req, requested),
                format_tokens(c, cap),
                scope,
                format_duration(held, held_usec),
                timeout,
        };
        for (size_t k = 0; r >= 0 && k < ELEMENTSOF(cells); k++)
                r = table_add(t, cells[k]);
        return r;
}

static int pending_print(json_object *reply, const Options *o, void *userdata) {
        static const char *const headers[] = {"ID",        "PID", "UID",   "COMMAND", "AGENT",  "PRIORITY",
                                              "REQUESTED", "CAP", "SCOPE", "HELD",    "TIMEOUT"};
        static const bool right[] = {false, true, true, false, false, false, true, true, false, true, true};

        return array_table_print(reply, o, "requests", headers, right, ELEMENTSOF(headers),
                                 "No requests are held.", pending_row);
}

/* ---- when the daemon is not reachable ---- */

#define SOCKET_UNIT "tokenbudgetd.socket"
/* Where run.sh serves as a user without $XDG_RUNTIME_DIR (scripts/run.sh). */
#define RUN_SH_FALLBACK_SOCKET "/tmp/tokenbudget/io.tokenbudget"

/*
 * The addresses budgetctl tried, from the library's one address search
 * (tb_client_addresses()): paths as connect() saw them ("@name" for an
 * abstract socket). Who named the first one budgetctl knows from its inputs.
 */
typedef struct Addresses {
        char **defaults; /* the search without --socket: [$TOKENBUDGET_SOCKET,] system[, user]; or NULL */
        char **named;    /* the search for --socket, or NULL */
        char **paths;    /* the one tried: named or defaults; n of them */
        size_t n;
        const char *origin;      /* of paths[0]: "--socket", "$TOKENBUDGET_SOCKET", or NULL for a default */
        const char *user_socket; /* $XDG_RUNTIME_DIR/tokenbudget/io.tokenbudget, or NULL */
} Addresses;

static void addresses_done(Addresses *a) {
        a->defaults = tb_strv_free(a->defaults);
        a->named = tb_strv_free(a->named);
}

/* The addresses tb_client_open(o->socket) tried, in its order. Returns 0 or -errno. */
static int addresses_tried(const Options *o, Addresses *ret) {
        const char *env = getenv(TB_SOCKET_ENV);
        size_t last_system = SIZE_MAX;
        int n;

        *ret = (Addresses){};
        /* Without --socket, what was tried; with it, where the user-session socket is. */
        n = tb_client_addresses(NULL, &ret->defaults);
        if (n < 0 && !o->socket)
                return n;
        /* In the order of tokenbudget.h: $TOKENBUDGET_SOCKET, the system socket, the user's. */
        for (int i = 0; i < n; i++)
                if (strcmp(ret->defaults[i], TB_SYSTEM_SOCKET) == 0)
                        last_system = (size_t)i;
        if (last_system != SIZE_MAX && last_system + 1 < (size_t)n)
                ret->user_socket = ret->defaults[last_system + 1];
        if (!o->socket) {
                ret->paths = ret->defaults;
                ret->n = (size_t)n;
                ret->origin = env && *env ? "$" TB_SOCKET_ENV : NULL;
                return 0;
        }
        n = tb_client_addresses(o->socket, &ret->named);
        if (n < 0) {
                addresses_done(ret);
                return n;
        }
        ret->paths = ret->named;
        ret->n = (size_t)n;
        ret->origin = "--socket";
        return 0;
}

/* Connecting failed with ENOENT, ENOTDIR or ECONNREFUSED: a socket file there is left over. */
static bool address_is_stale(const char *path) {
        struct stat st;

        return path[0] != '@' && stat(path, &st) == 0 && S_ISSOCK(st.st_mode);
}

/*
 * The index of the address the hint is about: the one the user named; else
 * a stale socket (a daemon ran there); else the one budgetctl is of use
 * with: the admin interface answers only root and the daemon's user, so for
 * anyone but root that is their own session's daemon.
 */
static size_t addresses_target(const Addresses *a) {
        if (a->origin)
                return 0;
        for (size_t i = 0; i < a->n; i++)
                if (address_is_stale(a->paths[i]))
                        return i;
        return a->n == 1 || geteuid() == 0 ? 0 : a->n - 1;
}

/* Whether dir (under $HOME when home_relative) holds the socket unit. */
static bool unit_in_dir(const char *dir, size_t dir_len, bool home_relative) {
        const char *home = home_relative ? getenv("HOME") : "";
        char path[PATH_MAX];

        if (!home || (home_relative && home[0] != '/') || dir_len == 0)
                return false;
        snprintf(path, sizeof(path), "%s%.*s/" SOCKET_UNIT, home, (int)dir_len, dir);
        return access(path, F_OK) == 0;
}

/*
 * Whether systemd (the system or the user manager) would find the socket unit.
 * $SYSTEMD_UNIT_PATH replaces the search path as it does for systemd; an empty
 * last entry (a trailing ':') appends the usual directories.
 */
static bool unit_installed(bool user) {
        static const struct {
                const char *dir;
                bool user, home_relative;
        } dirs[] = {
                {"/etc/systemd/system", false, false},      {"/usr/local/lib/systemd/system", false, false},
                {"/usr/lib/systemd/system", false, false},  {"/lib/systemd/system", false, false},
                {"/.config/systemd/user", true, true},      {"/etc/systemd/user", true, false},
                {"/.local/share/systemd/user", true, true}, {"/usr/local/lib/systemd/user", true, false},
                {"/usr/lib/systemd/user", true, false},
        };
        const char *env = getenv("SYSTEMD_UNIT_PATH");

        if (env && *env) {
                for (const char *p = env;; p++) {
                        size_t n = strcspn(p, ":");

                        if (unit_in_dir(p, n, false))
                                return true;
                        p += n;
                        if (*p == '\0')
                                return false;
                        if (p[1] == '\0')
                                break;
                }
        }
        for (size_t i = 0; i < sizeof(dirs) / sizeof(dirs[0]); i++)
                if (dirs[i].user == user &&
                    unit_in_dir(dirs[i].dir, strlen(dirs[i].dir), dirs[i].home_relative))
                        return true;
        return false;
}

/*
 * The socket scripts/run.sh serves: $TOKENBUDGET_SOCKET as it is (run.sh
 * hands it to tokenbudgetd --socket), else the system socket as root, else
 * the user's.
 */
static const char *run_sh_socket(const Addresses *a) {
        const char *env = getenv(TB_SOCKET_ENV);

        if (env && *env)
                return env;
        if (geteuid() == 0)
                return TB_SYSTEM_SOCKET;
        return a->user_socket ? a->user_socket : RUN_SH_FALLBACK_SOCKET;
}

/* The second line: how to start a daemon at path, as a service if one is installed, else by hand. */
static void print_start_hint(const char *path, const Addresses *all) {
        bool is_system = strcmp(path, TB_SYSTEM_SOCKET) == 0;
        bool is_user = all->user_socket && strcmp(path, all->user_socket) == 0;
        const char *run_sh = run_sh_socket(all);
        char by_hand[300], source_tree[320];

        /* tokenbudgetd listens only on absolute paths: an abstract or relative one is not ours to start. */
        if (path[0] != '/')
                return;
        if (is_user && unit_installed(true)) {
                fputs("budgetctl: start it with 'systemctl --user start " SOCKET_UNIT "'\n", stderr);
                return;
        }
        if (is_system && unit_installed(false)) {
                fputs("budgetctl: start it with 'systemctl start " SOCKET_UNIT "'\n", stderr);
                return;
        }
        /* tokenbudgetd serves the system socket unless told otherwise. */
        snprintf(by_hand, sizeof(by_hand), is_system ? "tokenbudgetd" : "tokenbudgetd --socket %s", path);
        snprintf(source_tree, sizeof(source_tree),
                 strcmp(path, run_sh) == 0 ? "./scripts/run.sh" : TB_SOCKET_ENV "=%s ./scripts/run.sh",
                 path);
        fprintf(stderr, "budgetctl: %sstart it by hand with '%s' (or '%s' in the source tree)\n",
                is_system || is_user ? "tokenbudgetd is not installed as a service; " : "", by_hand,
                source_tree);
}

static void print_address(const Addresses *a, size_t i) {
        fputs(a->paths[i], stderr);
        if (i == 0 && a->origin)
                fprintf(stderr, " (named by %s)", a->origin);
}

/*
 * Nothing answers: the stale socket found, or every address tried; then how
 * to start the daemon. error is the library's description, for when the
 * addresses cannot be listed.
 */
static void print_not_running(const Options *o, int r, const char *error) {
        Addresses a;
        size_t target;

        if (addresses_tried(o, &a) < 0 || a.n == 0) {
                fprintf(stderr, "budgetctl: %s\n", error ? error : strerror(-r));
                addresses_done(&a);
                return;
        }
        target = addresses_target(&a);
        if (address_is_stale(a.paths[target])) {
                fputs("budgetctl: a socket exists at ", stderr);
                print_address(&a, target);
                fputs(" but no daemon answers (it was stopped or crashed)\n", stderr);
        } else {
                fputs("budgetctl: tokenbudgetd is not running at ", stderr);
                for (size_t i = 0; i < a.n; i++) {
                        fputs(i > 0 ? " or " : "", stderr);
                        print_address(&a, i);
                }
                fputc('\n', stderr);
        }
        print_start_hint(a.paths[target], &a);
        addresses_done(&a);
}

static int connect_failed(const Options *o, int r, const char *error) {
        switch (r) {
        case -ENOENT:
        case -ENOTDIR:
        case -ECONNREFUSED:
                print_not_running(o, r, error);
                break;
        case -EACCES:
        case -EPERM:
                fprintf(stderr, "budgetctl: permission denied: %s\n", error ? error : strerror(-r));
                break;
        default:
                fprintf(stderr, "budgetctl: %s\n", error ? error : strerror(-r));
        }
        return EXIT_UNREACHABLE;
}

/* ---- talking to the daemon ---- */

/* Who may call the admin methods that are not Status and List (io.tokenbudget.admin). */
#define ADMINS "admins (root, the daemon's user, members of admin_group)"

static bool error_is(const tb_client *c, const char *name) {
        const char *e = tb_client_error_name(c);

        return e && strcmp(e, name) == 0;
}

/* Whether the daemon answered InvalidParameter naming parameter. */
static bool invalid_parameter_is(const tb_client *c, const char *parameter) {
        const char *value = tb_client_error_parameter(c, "parameter");

        return error_is(c, VL_ERROR_SERVICE_INVALID_PARAMETER) && value && strcmp(value, parameter) == 0;
}

/* A daemon from before a method answers MethodNotFound for it. */
static bool method_missing(const tb_client *c) {
        return error_is(c, VL_ERROR_SERVICE_METHOD_NOT_FOUND);
}

/*
 * A verb's reading of the daemon's errors that it knows better than the
 * generic text: returns 1 when it printed the message, 0 to leave it to
 * call_failed().
 */
typedef int (*ErrorFunction)(const Options *o, tb_client *c, int r, void *userdata);

static int call_failed(const Options *o, tb_client *c, int r, ErrorFunction on_error, void *userdata) {
        if (on_error && on_error(o, c, r, userdata) > 0)
                return EXIT_FAILED;
        switch (r) {
        case -EACCES:
                fprintf(stderr, "budgetctl: permission denied: '%s' is for " ADMINS "\n", o->verb);
                break;
        case -ETIMEDOUT:
                fprintf(stderr,
                        "budgetctl: tokenbudgetd did not answer within %g s (pass --timeout to wait "
                        "longer)\n",
                        o->timeout_sec);
                break;
        case -ECONNRESET:
                fprintf(stderr, "budgetctl: tokenbudgetd closed the connection (see 'journalctl -u "
                                "tokenbudgetd')\n");
                break;
        case -EOPNOTSUPP:
                fprintf(stderr, "budgetctl: %s (is tokenbudgetd older than budgetctl?)\n",
                        tb_client_error(c));
                break;
        default:
                fprintf(stderr, "budgetctl: %s\n", tb_client_error(c));
        }
        return EXIT_FAILED;
}

/*
 * Calls an admin method with parameters (a JSON object or NULL); on success *ret
 * is the reply's parameters. Returns an exit code.
 */
static int admin_call(const Options *o, const char *method, const char *parameters, ErrorFunction on_error,
                      void *userdata, json_object **ret) {
        tb_client *c = NULL;
        char *error = NULL, *text = NULL;
        int r, exit_code = EXIT_OK;

        r = tb_client_open(o->socket, &c, &error);
        if (r < 0) {
                exit_code = connect_failed(o, r, error);
                free(error);
                return exit_code;
        }
        tb_client_set_timeout_usec(c, o->timeout_usec);
        r = tb_call(c, method, parameters, &text);
        if (r < 0)
                exit_code = call_failed(o, c, r, on_error, userdata);
        else {
                *ret = json_tokener_parse(text);
                if (!json_object_is_type(*ret, json_type_object)) {
                        fprintf(stderr, "budgetctl: malformed reply from tokenbudgetd to %s\n", method);
                        json_object_put(*ret);
                        *ret = NULL;
                        exit_code = EXIT_FAILED;
                }
        }
        free(text);
        tb_client_close(c);
        return exit_code;
}

/* ---- showing what the daemon says ---- */

/* Prints a reply as a table or lines; userdata is the verb's. Returns 0 or -errno. */
typedef int (*PrintFunction)(json_object *reply, const Options *o, void *userdata);

/*
 * Calls method with parameters (a JSON object or NULL) and prints the reply:
 * as pretty JSON with --json, else with print. Errors go through on_error
 * (may be NULL) first. Returns an exit code.
 */
static int admin_show(const Options *o, const char *method, const char *parameters, PrintFunction print,
                      ErrorFunction on_error, void *userdata) {
        json_object *reply = NULL;
        int exit_code, r;

        exit_code = admin_call(o, method, parameters, on_error, userdata, &reply);
        if (exit_code != EXIT_OK)
                return exit_code;
        if (o->json) {
                puts(json_object_to_json_string_ext(reply, JSON_C_TO_STRING_PRETTY |
                                                                   JSON_C_TO_STRING_SPACED |
                                                                   JSON_C_TO_STRING_NOSLASHESCAPE));
                r = 0;
        } else
                r = print(reply, o, userdata);
        json_object_put(reply);
        if (r == -ENOMEM)
                fprintf(stderr, "budgetctl: out of memory\n");
        if (fflush(stdout) != 0 || ferror(stdout)) {
                fprintf(stderr, "budgetctl: cannot write the output: %s\n", strerror(errno));
                return EXIT_FAILED;
        }
        return r < 0 ? EXIT_FAILED : EXIT_OK;
}

/* Call parameters as JSON text (malloc'ed into *ret), NULL when params is empty. */
static int params_to_text(json_object *params, char **ret) {
        const char *text;

        *ret = NULL;
        if (json_object_object_length(params) == 0)
                return 0;
        text = json_object_to_json_string_ext(params,
                                              JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE);
        if (!text)
                return -ENOMEM;
        *ret = strdup(text);
        return *ret ? 0 : -ENOMEM;
}

/* Adds key = value to params; value NULL (out of memory) fails. */
static int params_add(json_object *params, const char *key, json_object *value) {
        if (!value)
                return -ENOMEM;
        if (json_object_object_add(params, key, value) < 0) {
                json_object_put(value);
                return -ENOMEM;
        }
        return 0;
}

/* ---- users and scope names ---- */

/* The kinds of scope (io.tokenbudget.admin Scope.kind), for --kind and set. */
static const char *const scope_kinds[] = {"global", "user", "slice", "unit", "process", "agent", "rule"};
#define SCOPE_KINDS "global, user, slice, unit, process, agent, rule"
/* The kinds SetLimits takes alone, meaning their defaults. */
#define DEFAULT_KINDS "user, unit, slice, agent, process"
/* (uid_t)-1 is no uid. */
#define UID_MAX_VALID UINT64_C(4294967294)

static bool scope_kind_valid(const char *kind, size_t n) {
        for (size_t i = 0; i < ELEMENTSOF(scope_kinds); i++)
                if (strlen(scope_kinds[i]) == n && strncmp(kind, scope_kinds[i], n) == 0)
                        return true;
        return false;
}

static bool all_digits(const char *s, size_t n) {
        if (n == 0)
                return false;
        for (size_t i = 0; i < n; i++)
                if (s[i] < '0' || s[i] > '9')
                        return false;
        return true;
}

/* A decimal number of at most max; false when it is not one or too large. */
static bool parse_decimal(const char *s, size_t n, uint64_t max, uint64_t *ret) {
        uint64_t v = 0;

        if (!all_digits(s, n))
                return false;
        for (size_t i = 0; i < n; i++) {
                v = v * 10 + (uint64_t)(s[i] - '0');
                if (v > max)
                        return false;
        }
        *ret = v;
        return true;
}

/*
 * The first n bytes of s, a user name or a uid, as a uid: 0; -ERANGE for a
 * number that is no uid; -ENOENT when no user has that name.
 */
static int resolve_user(const char *s, size_t n, uint64_t *ret_uid) {
        struct passwd *pw;
        char name[256];

        if (all_digits(s, n))
                return parse_decimal(s, n, UID_MAX_VALID, ret_uid) ? 0 : -ERANGE;
        if (n == 0 || n >= sizeof(name))
                return -ENOENT;
        memcpy(name, s, n);
        name[n] = '\0';
        pw = getpwnam(name);
        if (!pw)
                return -ENOENT;
        *ret_uid = pw->pw_uid;
        return 0;
}

/* s with the n bytes at offset at replaced by uid, malloc'ed. */
static char *replace_with_uid(const char *s, size_t at, size_t n, uint64_t uid) {
        char *r;

        if (asprintf(&r, "%.*s%" PRIu64 "%s", (int)at, s, uid, s + at + n) < 0)
                return NULL;
        return r;
}

/*
 * The user part at offset at of scope, up to the next ':' or the end: when
 * required, it must be a uid or a user name, and a name becomes its uid
 * (*ret NULL: leave scope as it is). When not required (a unit or rule key,
 * which may also be a unit name) only a known user name is replaced.
 */
static int scope_resolve_user(const char *scope, size_t at, bool required, char **ret) {
        size_t n = strcspn(scope + at, ":");
        uint64_t uid;
        int r;

        *ret = NULL;
        r = resolve_user(scope + at, n, &uid);
        if (r == -ERANGE && required) {
                fprintf(stderr,
                        "budgetctl: invalid scope '%s': uid %.*s is out of range (0 to %" PRIu64 ")\n",
                        scope, (int)n, scope + at, UID_MAX_VALID);
                return -EINVAL;
        }
        if (r == -ENOENT && required) {
                fprintf(stderr, "budgetctl: invalid scope '%s': no user '%.*s'\n", scope, (int)n,
                        scope + at);
                return -EINVAL;
        }
        if (r < 0 || all_digits(scope + at, n))
                return 0;
        *ret = replace_with_uid(scope, at, n, uid);
        return *ret ? 0 : -ENOMEM;
}

/* The form each kind's scope names take, for errors. */
static const char *scope_form(const char *kind) {
        static const struct {
                const char *kind, *form;
        } forms[] = {
                {"user", "user:USER"},
                {"agent", "agent:USER:NAME"},
                {"process", "process:PID"},
                {"slice", "slice:NAME or slice:USER:NAME"},
                {"unit", "unit:NAME or unit:USER:NAME"},
                {"rule", "rule:NAME or rule:NAME:KEY"},
        };

        for (size_t i = 0; i < ELEMENTSOF(forms); i++)
                if (strcmp(forms[i].kind, kind) == 0)
                        return forms[i].form;
        return "global";
}

/* A scope name without a ':': global or a kind's defaults. */
static int scope_check_bare(const char *scope) {
        if (strcmp(scope, "rule") == 0) {
                fprintf(stderr,
                        "budgetctl: invalid scope 'rule': rules have no defaults; name one (rule:NAME or "
                        "rule:NAME:KEY)\n");
                return -EINVAL;
        }
        if (!scope_kind_valid(scope, strlen(scope))) {
                fprintf(stderr,
                        "budgetctl: invalid scope '%s': expected global, a kind's defaults (" DEFAULT_KINDS
                        ") or KIND:NAME (kinds: " SCOPE_KINDS ")\n",
                        scope);
                return -EINVAL;
        }
        return 0;
}

/*
 * Where the user part of KIND:REST is (*ret_at, SIZE_MAX when it has none),
 * and whether it must be one; -EINVAL when REST is not of the kind's form.
 */
static int scope_user_at(const char *scope, const char *kind, const char *rest, size_t *ret_at,
                         bool *ret_required) {
        size_t at = (size_t)(rest - scope), first = strcspn(rest, ":");
        bool has_second = rest[first] == ':';

        *ret_at = SIZE_MAX;
        *ret_required = false;
        if (strcmp(kind, "user") == 0 && *rest && !has_second) {
                *ret_at = at;
                *ret_required = true;
        } else if (strcmp(kind, "agent") == 0 && first > 0 && has_second && rest[first + 1]) {
                *ret_at = at;
                *ret_required = true;
        } else if (strcmp(kind, "process") == 0 && all_digits(rest, strlen(rest)))
                ; /* the daemon knows which pids exist */
        else if ((strcmp(kind, "slice") == 0 || strcmp(kind, "unit") == 0) && first > 0) {
                /* slice:USER:NAME, unit:USER:NAME; a NAME alone is a system one. */
                if (has_second && rest[first + 1])
                        *ret_at = at;
                else if (has_second)
                        return -EINVAL;
        } else if (strcmp(kind, "rule") == 0 && first > 0) {
                /* rule:NAME:KEY: a KEY of a rule kept per user or agent starts with the uid. */
                if (has_second && rest[first + 1])
                        *ret_at = at + first + 1;
                else if (has_second)
                        return -EINVAL;
        } else
                return -EINVAL;
        return 0;
}

/*
 * SCOPE as set takes it, in the daemon's terms (malloc'ed into *ret): user
 * names resolved where a uid goes (user:alice -> user:1000,
 * agent:alice:coder -> agent:1000:coder, and the user part of
 * unit:USER:NAME, slice:USER:NAME and rule:NAME:KEY when it names a user).
 * Prints what is wrong and returns -EINVAL when it cannot be a scope.
 */
static int scope_resolve(const char *scope, char **ret) {
        size_t kind_len = strcspn(scope, ":"), at;
        char kind[16], *resolved = NULL;
        bool required;
        int r;

        *ret = NULL;
        if (scope[kind_len] == '\0') {
                if (scope_check_bare(scope) < 0)
                        return -EINVAL;
                *ret = strdup(scope);
                return *ret ? 0 : -ENOMEM;
        }
        if (!scope_kind_valid(scope, kind_len)) {
                fprintf(stderr,
                        "budgetctl: invalid scope '%s': unknown kind '%.*s' (kinds: " SCOPE_KINDS ")\n",
                        scope, (int)kind_len, scope);
                return -EINVAL;
        }
        snprintf(kind, sizeof(kind), "%.*s", (int)kind_len, scope);
        if (strcmp(kind, "global") == 0) {
                fprintf(stderr, "budgetctl: invalid scope '%s': global has no names under it\n", scope);
                return -EINVAL;
        }
        if (scope_user_at(scope, kind, scope + kind_len + 1, &at, &required) < 0) {
                fprintf(stderr, "budgetctl: invalid scope '%s': expected %s\n", scope, scope_form(kind));
                return -EINVAL;
        }
        if (at != SIZE_MAX) {
                r = scope_resolve_user(scope, at, required, &resolved);
                if (r < 0)
                        return r;
        }
        *ret = resolved ? resolved : strdup(scope);
        return *ret ? 0 : -ENOMEM;
}

/* ---- status: what it asks for, what the daemon refuses ---- */

/* --user as a uid; -EINVAL (printed) when it is no user. */
static int user_option(const char *user, uint64_t *ret_uid) {
        int r = resolve_user(user, strlen(user), ret_uid);

        if (r == -ERANGE)
                fprintf(stderr, "budgetctl: invalid uid '%s' for --user: uids go from 0 to %" PRIu64 "\n",
                        user, UID_MAX_VALID);
        else if (r < 0)
                fprintf(stderr, "budgetctl: unknown user '%s' (--user takes a user name or a uid)\n", user);
        return r < 0 ? -EINVAL : 0;
}

/* Checks --kind and --user and adds them (and --all) to params. Returns 0, -EINVAL (printed) or -ENOMEM. */
static int status_parameters(const Options *o, json_object *params) {
        uint64_t uid;
        int r = 0;

        if (o->kind && !scope_kind_valid(o->kind, strlen(o->kind))) {
                fprintf(stderr, "budgetctl: unknown kind '%s' (kinds: " SCOPE_KINDS ")\n", o->kind);
                return -EINVAL;
        }
        if (o->user && user_option(o->user, &uid) < 0)
                return -EINVAL;
        /* Only what was given: a daemon that predates a parameter still answers a plain Status. */
        if (o->all)
                r = params_add(params, VL_IN_ADMIN_STATUS_ALL, json_object_new_boolean(true));
        if (r >= 0 && o->kind)
                r = params_add(params, VL_IN_ADMIN_STATUS_KIND, json_object_new_string(o->kind));
        if (r >= 0 && o->user)
                r = params_add(params, VL_IN_ADMIN_STATUS_UID, json_object_new_int64((int64_t)uid));
        return r;
}

static int status_failed(const Options *o, tb_client *c, int r, void *userdata) {
        /* A daemon from before Status took "all" refuses it; its plain Status lists every scope. */
        if (o->all && invalid_parameter_is(c, VL_IN_ADMIN_STATUS_ALL))
                fprintf(stderr, "budgetctl: this tokenbudgetd is too old for --all (it refused the "
                                "parameter 'all'); its plain 'budgetctl status' lists every scope\n");
        else if (o->kind && invalid_parameter_is(c, VL_IN_ADMIN_STATUS_KIND))
                fprintf(stderr, "budgetctl: this tokenbudgetd is too old for --kind (it refused the "
                                "parameter 'kind')\n");
        else if (o->user && invalid_parameter_is(c, VL_IN_ADMIN_STATUS_UID))
                fprintf(stderr, "budgetctl: this tokenbudgetd is too old for --user (it refused the "
                                "parameter 'uid')\n");
        else if (o->user && r == -EACCES)
                fprintf(stderr, "budgetctl: permission denied: other users' scopes are for " ADMINS "\n");
        else
                return 0;
        return 1;
}

/* ---- history ---- */

/* The groups of History (its by), each with the columns that name a group. */
static const struct {
        const char *by;
        const char *header; /* the key's column */
} history_groups[] = {
        {"user", "USER"},   {"unit", "UNIT"}, {"agent", "AGENT"}, {"class", "CLASS"},
        {"model", "MODEL"}, {"hour", "HOUR"}, {"day", "DAY"},
};
#define HISTORY_GROUPS     "user, unit, agent, class, model, hour or day"
#define HISTORY_BY_DEFAULT "day"
#define TIME_EXAMPLES      "e.g. -1h, -2d, today, yesterday, 2026-12-01, 2026-12-01 10:00, @1764547200"

/* What history asks for, checked before it connects. */
typedef struct HistoryRequest {
        const char *by;
        bool has_since, has_until;
        uint64_t since_usec, until_usec; /* realtime */
        int32_t utc_offset_sec;          /* of the since time (or now), modulo a day: 0..86399 */
        bool has_uid;
        uint64_t uid;
} HistoryRequest;

static uint64_t realtime_now_usec(void) {
        struct timespec ts;

        clock_gettime(CLOCK_REALTIME, &ts);
        return (uint64_t)ts.tv_sec * USEC_PER_SEC + (uint64_t)ts.tv_nsec / 1000;
}

static int history_time_option(const char *name, const char *s, uint64_t now, uint64_t *ret) {
        const char *reason = NULL;
        int r = parse_time(s, now, ret, &reason);

        if (r < 0)
                fprintf(stderr, "budgetctl: invalid %s '%s': %s (" TIME_EXAMPLES ")\n", name, s,
                        reason ?: "expected a time");
        return r;
}

/* A local time for messages: "2026-12-01 10:00:05". */
static const char *local_time_text(char buf[static FORMAT_TIME_MAX], uint64_t usec) {
        time_t t = (time_t)(usec / USEC_PER_SEC);
        struct tm tm;

        if (!localtime_r(&t, &tm))
                snprintf(buf, FORMAT_TIME_MAX, "@%" PRIu64, usec / USEC_PER_SEC);
        else
                strftime(buf, FORMAT_TIME_MAX, "%Y-%m-%d %H:%M:%S", &tm);
        return buf;
}

/* Checks --since, --until, --by and --user; -EINVAL (printed) for a bad one. */
static int history_request(const Options *o, HistoryRequest *req) {
        uint64_t now = realtime_now_usec();
        char a[FORMAT_TIME_MAX], b[FORMAT_TIME_MAX];
        struct tm tm;
        time_t t;
        bool known = false;

        *req = (HistoryRequest){.by = o->by ?: HISTORY_BY_DEFAULT};
        for (size_t i = 0; i < ELEMENTSOF(history_groups); i++)
                known = known || strcmp(req->by, history_groups[i].by) == 0;
        if (!known) {
                fprintf(stderr, "budgetctl: invalid --by '%s': expected " HISTORY_GROUPS "\n", req->by);
                return -EINVAL;
        }
        if (o->since) {
                if (history_time_option("--since", o->since, now, &req->since_usec) < 0)
                        return -EINVAL;
                req->has_since = true;
        }
        if (o->until) {
                if (history_time_option("--until", o->until, now, &req->until_usec) < 0)
                        return -EINVAL;
                if (req->until_usec == 0) {
                        fprintf(stderr,
                                "budgetctl: invalid --until '%s': nothing is before the epoch "
                                "(1970-01-01 00:00:00 UTC)\n",
                                o->until);
                        return -EINVAL;
                }
                req->has_until = true;
        }
        if (req->has_since && req->has_until && req->since_usec > req->until_usec) {
                fprintf(stderr, "budgetctl: --since '%s' (%s) is after --until '%s' (%s)\n", o->since,
                        local_time_text(a, req->since_usec), o->until, local_time_text(b, req->until_usec));
                return -EINVAL;
        }
        if (o->user) {
                if (user_option(o->user, &req->uid) < 0)
                        return -EINVAL;
                req->has_uid = true;
        }
        /* Days begin at local midnight as of the since time (the daemon takes one offset). */
        t = (time_t)((req->has_since ? req->since_usec : now) / USEC_PER_SEC);
        if (localtime_r(&t, &tm))
                req->utc_offset_sec = (int32_t)(((tm.tm_gmtoff % 86400) + 86400) % 86400);
        return 0;
}

static int history_parameters(const HistoryRequest *req, char **ret) {
        json_object *params = json_object_new_object();
        int r;

        if (!params)
                return -ENOMEM;
        r = params_add(params, VL_IN_ADMIN_HISTORY_BY, json_object_new_string(req->by));
        if (r >= 0 && req->has_since)
                r = params_add(params, VL_IN_ADMIN_HISTORY_SINCE,
                               json_object_new_int64((int64_t)req->since_usec));
        if (r >= 0 && req->has_until)
                r = params_add(params, VL_IN_ADMIN_HISTORY_UNTIL,
                               json_object_new_int64((int64_t)req->until_usec));
        if (r >= 0 && req->has_uid)
                r = params_add(params, VL_IN_ADMIN_HISTORY_UID, json_object_new_int64((int64_t)req->uid));
        if (r >= 0)
                r = params_add(params, VL_IN_ADMIN_HISTORY_UTC_OFFSET_SEC,
                               json_object_new_int64(req->utc_offset_sec));
        if (r >= 0)
                r = params_to_text(params, ret);
        json_object_put(params);
        return r;
}

/* The sums of the table's rows, for its TOTAL row. */
typedef struct HistoryTotals {
        uint64_t requests, refused, granted, tokens_in, tokens_out;
} HistoryTotals;

static uint64_t add_saturating(uint64_t a, uint64_t b) {
        return a > UINT64_MAX - b ? UINT64_MAX : a + b;
}

/* The cell that names a group: the key, or its hour or day in local time. */
static int history_key_cell(json_object *g, const char *ctx, const HistoryRequest *req,
                            char buf[static FORMAT_TIME_MAX], const char **ret) {
        uint64_t start;
        struct tm tm;
        time_t t;

        if (strcmp(req->by, "hour") != 0 && strcmp(req->by, "day") != 0)
                return get_string(g, ctx, "key", true, ret);
        if (get_uint(g, ctx, "start", &start, NULL) < 0)
                return -EBADMSG;
        if (strcmp(req->by, "hour") == 0) {
                t = (time_t)(start / USEC_PER_SEC);
                if (!localtime_r(&t, &tm))
                        return malformed("is not a time budgetctl can show", ctx, "start");
                *ret = format_minute(buf, &tm);
        } else {
                /* The day the daemon grouped by: its start in the offset sent. */
                t = (time_t)(start / USEC_PER_SEC) + req->utc_offset_sec;
                if (!gmtime_r(&t, &tm))
                        return malformed("is not a time budgetctl can show", ctx, "start");
                *ret = format_day(buf, &tm);
        }
        return 0;
}

static int history_add_numbers(Table *t, const HistoryTotals *n) {
        char cells[5][FORMAT_TOKENS_MAX + 8];
        int r = 0;

        snprintf(cells[0], sizeof(cells[0]), "%" PRIu64, n->requests);
        snprintf(cells[1], sizeof(cells[1]), "%" PRIu64, n->refused);
        format_tokens(cells[2], n->granted);
        format_tokens(cells[3], n->tokens_in);
        format_tokens(cells[4], n->tokens_out);
        for (size_t c = 0; r >= 0 && c < ELEMENTSOF(cells); c++)
                r = table_add(t, cells[c]);
        return r;
}

static int history_row(Table *t, json_object *g, size_t i, const HistoryRequest *req,
                       HistoryTotals *totals) {
        HistoryTotals n;
        char ctx[32], when[FORMAT_TIME_MAX], uid[24];
        const char *key;
        uint64_t v;
        int r;

        snprintf(ctx, sizeof(ctx), "groups[%zu].", i);
        if (history_key_cell(g, ctx, req, when, &key) < 0 ||
            get_uint(g, ctx, "requests", &n.requests, NULL) < 0 ||
            get_uint(g, ctx, "refused", &n.refused, NULL) < 0 ||
            get_uint(g, ctx, "granted", &n.granted, NULL) < 0 ||
            get_uint(g, ctx, "tokensIn", &n.tokens_in, NULL) < 0 ||
            get_uint(g, ctx, "tokensOut", &n.tokens_out, NULL) < 0)
                return -EBADMSG;
        r = table_add(t, key);
        if (r >= 0 && strcmp(req->by, "user") == 0) {
                if (get_uint(g, ctx, "uid", &v, NULL) < 0)
                        return -EBADMSG;
                snprintf(uid, sizeof(uid), "%" PRIu64, v);
                r = table_add(t, uid);
        }
        if (r >= 0)
                r = history_add_numbers(t, &n);
        totals->requests = add_saturating(totals->requests, n.requests);
        totals->refused = add_saturating(totals->refused, n.refused);
        totals->granted = add_saturating(totals->granted, n.granted);
        totals->tokens_in = add_saturating(totals->tokens_in, n.tokens_in);
        totals->tokens_out = add_saturating(totals->tokens_out, n.tokens_out);
        return r;
}

/* The line for no rows: "No history from A until B.", "... since A.", "... before B." or "No history." */
static void history_print_range(const HistoryRequest *req) {
        char a[FORMAT_TIME_MAX], b[FORMAT_TIME_MAX];

        if (req->has_since && req->has_until)
                printf("No history from %s until %s.\n", local_time_text(a, req->since_usec),
                       local_time_text(b, req->until_usec));
        else if (req->has_since)
                printf("No history since %s.\n", local_time_text(a, req->since_usec));
        else if (req->has_until)
                printf("No history before %s.\n", local_time_text(b, req->until_usec));
        else
                printf("No history.\n");
}

static int history_print(json_object *reply, const Options *o, void *userdata) {
        static const bool right_key[] = {false, true, true, true, true, true};
        static const bool right_user[] = {false, true, true, true, true, true, true};
        static const char *const numbers[] = {"REQUESTS", "REFUSED", "GRANTED", "INPUT", "OUTPUT"};
        const HistoryRequest *req = userdata;
        bool by_user = strcmp(req->by, "user") == 0, truncated;
        HistoryTotals totals = {};
        json_object *groups, *g;
        const char *by;
        size_t n;
        Table *t;
        int r = 0;

        if (get_string(reply, "", "by", false, &by) < 0 || get_array(reply, "", "groups", &groups) < 0 ||
            get_bool(reply, "", "truncated", &truncated, NULL) < 0)
                return -EBADMSG;
        if (strcmp(by, req->by) != 0)
                return malformed("is not what was asked for", "", "by");
        n = json_object_array_length(groups);
        for (size_t i = 0; i < n; i++)
                if (get_object_at(groups, i, "groups", &g) < 0)
                        return -EBADMSG;
        if (n == 0) {
                if (o->legend)
                        history_print_range(req);
                return 0;
        }
        t = calloc(1, sizeof(*t));
        if (!t)
                return -ENOMEM;
        t->n_columns = by_user ? 7 : 6;
        t->right = by_user ? right_user : right_key;
        for (size_t i = 0; i < ELEMENTSOF(history_groups); i++)
                if (strcmp(req->by, history_groups[i].by) == 0)
                        r = table_add(t, history_groups[i].header);
        if (r >= 0 && by_user)
                r = table_add(t, "UID");
        for (size_t c = 0; r >= 0 && c < ELEMENTSOF(numbers); c++)
                r = table_add(t, numbers[c]);
        for (size_t i = 0; r >= 0 && i < n; i++)
                r = history_row(t, json_object_array_get_idx(groups, i), i, req, &totals);
        /* A total under more than one row; not with --no-legend (rows only). */
        if (r >= 0 && o->legend && n > 1) {
                r = table_add(t, "TOTAL");
                if (r >= 0 && by_user)
                        r = table_add(t, "");
                if (r >= 0)
                        r = history_add_numbers(t, &totals);
        }
        if (r >= 0)
                table_print(t, o->legend);
        table_free(t);
        if (r >= 0 && truncated)
                fprintf(stderr,
                        "budgetctl: only the first %zu groups are shown (the daemon's limit); narrow "
                        "--since "
                        "and --until for the rest\n",
                        n);
        return r;
}

static int history_failed(const Options *o, tb_client *c, int r, void *userdata) {
        const char *reason = tb_client_error_parameter(c, "reason");

        if (error_is(c, VL_ERROR_ADMIN_HISTORY_UNAVAILABLE))
                fprintf(stderr, "budgetctl: no history to show: %s\n",
                        reason ?: "tokenbudgetd did not say why");
        else if (method_missing(c))
                fprintf(stderr, "budgetctl: this tokenbudgetd is too old for 'history' (it has no "
                                "io.tokenbudget.admin.History)\n");
        else if (o->user && r == -EACCES)
                fprintf(stderr, "budgetctl: permission denied: other users' history is for " ADMINS "\n");
        else
                return 0;
        return 1;
}

/* ---- classes ---- */

/* The block sizes of Classes' blocks that get a column, in this order. */
static const uint64_t classes_block_sizes[] = {10, 100, 1000};

/* A fraction field as an error cell ("5.2%", a bias "+5.2%"), "-" when absent. */
static int classes_error_cell(json_object *o, const char *ctx, const char *key, bool sign,
                              char buf[static FORMAT_ERROR_MAX]) {
        bool present;
        int64_t permille;

        if (get_fixed(o, ctx, key, 3, &permille, &present) < 0)
                return -EBADMSG;
        if (!present)
                snprintf(buf, FORMAT_ERROR_MAX, "-");
        else
                format_error(buf, permille, sign);
        return 0;
}

/* The median error of the blocks of size, "-" before the first such block. */
static int classes_block_cell(json_object *blocks, const char *ctx, uint64_t size,
                              char buf[static FORMAT_ERROR_MAX]) {
        size_t n = json_object_array_length(blocks);
        char bctx[96];

        snprintf(buf, FORMAT_ERROR_MAX, "-");
        for (size_t i = 0; i < n; i++) {
                uint64_t s, count;
                json_object *b;

                snprintf(bctx, sizeof(bctx), "%sblocks", ctx);
                if (get_object_at(blocks, i, bctx, &b) < 0)
                        return -EBADMSG;
                snprintf(bctx, sizeof(bctx), "%sblocks[%zu].", ctx, i);
                if (get_uint(b, bctx, VL_FIELD_ADMIN_CLASS_BLOCKS_SIZE, &s, NULL) < 0 ||
                    get_uint(b, bctx, VL_FIELD_ADMIN_CLASS_BLOCKS_BLOCKS, &count, NULL) < 0)
                        return -EBADMSG;
                if (s == size && count > 0)
                        return classes_error_cell(b, bctx, VL_FIELD_ADMIN_CLASS_BLOCKS_MEDIAN, false, buf);
        }
        return 0;
}

static int classes_row(Table *t, json_object *c, size_t i) {
        char ctx[40], uid_text[24], samples[24], predicted[FORMAT_TOKENS_MAX], wape[FORMAT_ERROR_MAX],
                bias[FORMAT_ERROR_MAX], block[ELEMENTSOF(classes_block_sizes)][FORMAT_ERROR_MAX],
                ratio[FORMAT_FACTOR_MAX], idle[FORMAT_DURATION_MAX];
        uint64_t uid, n_samples, output, idle_usec;
        json_object *blocks;
        const char *name;
        int64_t hundredths;
        bool has_ratio;
        int r = 0;

        snprintf(ctx, sizeof(ctx), "classes[%zu].", i);
        if (get_uint(c, ctx, VL_FIELD_ADMIN_CLASS_UID, &uid, NULL) < 0 ||
            get_string(c, ctx, VL_FIELD_ADMIN_CLASS_CLASS, false, &name) < 0 ||
            get_uint(c, ctx, VL_FIELD_ADMIN_CLASS_SAMPLES, &n_samples, NULL) < 0 ||
            get_uint(c, ctx, VL_FIELD_ADMIN_CLASS_PREDICTED_OUTPUT, &output, NULL) < 0 ||
            classes_error_cell(c, ctx, VL_FIELD_ADMIN_CLASS_WAPE, false, wape) < 0 ||
            classes_error_cell(c, ctx, VL_FIELD_ADMIN_CLASS_BIAS, true, bias) < 0 ||
            get_array(c, ctx, VL_FIELD_ADMIN_CLASS_BLOCKS, &blocks) < 0 ||
            get_fixed(c, ctx, VL_FIELD_ADMIN_CLASS_RATIO_P95, 2, &hundredths, &has_ratio) < 0 ||
            get_uint(c, ctx, VL_FIELD_ADMIN_CLASS_IDLE_USEC, &idle_usec, NULL) < 0)
                return -EBADMSG;
        for (size_t b = 0; b < ELEMENTSOF(classes_block_sizes); b++)
                if (classes_block_cell(blocks, ctx, classes_block_sizes[b], block[b]) < 0)
                        return -EBADMSG;
        if (has_ratio && hundredths < 0)
                return malformed("is negative", ctx, VL_FIELD_ADMIN_CLASS_RATIO_P95);
        if (has_ratio)
                format_factor(ratio, (uint64_t)hundredths * 10);
        else
                snprintf(ratio, sizeof(ratio), "-");
        snprintf(uid_text, sizeof(uid_text), "%" PRIu64, uid);
        snprintf(samples, sizeof(samples), "%" PRIu64, n_samples);
        const char *cells[] = {
                uid_text, name,     samples, format_tokens(predicted, output), wape, bias, block[0],
                block[1], block[2], ratio,   format_duration(idle, idle_usec),
        };
        for (size_t col = 0; r >= 0 && col < ELEMENTSOF(cells); col++)
                r = table_add(t, cells[col]);
        return r;
}

static int classes_print(json_object *reply, const Options *o, void *userdata) {
        static const char *const headers[] = {"UID",       "CLASS",    "SAMPLES", "PREDICTED",
                                              "WAPE",      "BIAS",     "BLOCK10", "BLOCK100",
                                              "BLOCK1000", "P95RATIO", "IDLE"};
        static const bool right[] = {true, false, true, true, true, true, true, true, true, true, true};
        json_object *classes;
        bool truncated;
        int r;

        if (get_array(reply, "", VL_OUT_ADMIN_CLASSES_CLASSES, &classes) < 0 ||
            get_bool(reply, "", VL_OUT_ADMIN_CLASSES_TRUNCATED, &truncated, NULL) < 0)
                return -EBADMSG;
        r = array_table_print(reply, o, VL_OUT_ADMIN_CLASSES_CLASSES, headers, right, ELEMENTSOF(headers),
                              "No classes learned yet.", classes_row);
        if (r >= 0 && truncated)
                fprintf(stderr,
                        "budgetctl: only the first %zu classes are shown (the daemon's limit); "
                        "pass --user for the rest\n",
                        json_object_array_length(classes));
        return r;
}

static int classes_failed(const Options *o, tb_client *c, int r, void *userdata) {
        if (method_missing(c))
                fprintf(stderr, "budgetctl: this tokenbudgetd is too old for 'classes' (it has no "
                                "io.tokenbudget.admin.Classes)\n");
        else if (o->user && r == -EACCES)
                fprintf(stderr, "budgetctl: permission denied: other users' classes are for " ADMINS "\n");
        else
                return 0;
        return 1;
}

/* ---- estimate ---- */

/* The most tasks one estimate asks for (the daemon's limit, io.tokenbudget.admin Estimate). */
#define ESTIMATE_TASKS_MAX UINT64_C(1000000000)
/* The prefixes of the estimator's class names (io.tokenbudget.admin Class.class). */
static const char *const class_prefixes[] = {"class:", "agent:", "command:"};

/* --class as the estimator names it: with one of its prefixes as given, a
 * bare name is a declared class ("review" is "class:review"). */
static char *estimate_class_name(const char *s) {
        char *name;

        for (size_t i = 0; i < ELEMENTSOF(class_prefixes); i++)
                if (strncmp(s, class_prefixes[i], strlen(class_prefixes[i])) == 0)
                        return strdup(s);
        return asprintf(&name, "class:%s", s) < 0 ? NULL : name;
}

/* An object field; with ret_present, absent or null is allowed. */
static int get_object(json_object *o, const char *ctx, const char *key, json_object **ret,
                      bool *ret_present) {
        json_object *v = json_object_object_get(o, key);

        if (ret_present) {
                *ret_present = v != NULL;
                if (!v)
                        return 0;
        }
        if (!json_object_is_type(v, json_type_object))
                return malformed("is missing or not an object", ctx, key);
        *ret = v;
        return 0;
}

/* A money field of cost in millionths (get_fixed() at 6 decimals), never negative. */
static int estimate_money(json_object *cost, const char *key, int64_t *ret, bool *ret_present) {
        if (get_fixed(cost, "cost.", key, 6, ret, ret_present) < 0)
                return -EBADMSG;
        if ((!ret_present || *ret_present) && *ret < 0)
                return malformed("is negative", "cost.", key);
        return 0;
}

static int estimate_read_cost(json_object *reply, FormatEstimate *e) {
        bool low, high;
        json_object *cost;

        if (get_object(reply, "", VL_OUT_ADMIN_ESTIMATE_COST, &cost, &e->has_cost) < 0 ||
            get_optional_string(reply, "", VL_OUT_ADMIN_ESTIMATE_NO_COST, &e->no_cost) < 0)
                return -EBADMSG;
        if (!e->has_cost)
                return 0;
        if (get_string(cost, "cost.", VL_FIELD_ADMIN_ESTIMATE_COST_MODEL, false, &e->model) < 0 ||
            get_string(cost, "cost.", VL_FIELD_ADMIN_ESTIMATE_COST_CURRENCY, false, &e->currency) < 0 ||
            estimate_money(cost, VL_FIELD_ADMIN_ESTIMATE_COST_EXPECTED, &e->cost_micros, NULL) < 0 ||
            estimate_money(cost, VL_FIELD_ADMIN_ESTIMATE_COST_LOW, &e->cost_low_micros, &low) < 0 ||
            estimate_money(cost, VL_FIELD_ADMIN_ESTIMATE_COST_HIGH, &e->cost_high_micros, &high) < 0)
                return -EBADMSG;
        if (low != high)
                return malformed(low ? "is missing (low is there)" : "is there without high", "cost.",
                                 VL_FIELD_ADMIN_ESTIMATE_COST_HIGH);
        e->has_cost_interval = low;
        return 0;
}

static int estimate_read_interval(json_object *reply, FormatEstimate *e) {
        json_object *iv;
        int64_t coverage;

        if (get_object(reply, "", VL_OUT_ADMIN_ESTIMATE_INTERVAL, &iv, &e->has_interval) < 0 ||
            get_optional_string(reply, "", VL_OUT_ADMIN_ESTIMATE_NO_INTERVAL, &e->no_interval) < 0)
                return -EBADMSG;
        if (!e->has_interval)
                return 0;
        if (get_uint(iv, "interval.", VL_FIELD_ADMIN_ESTIMATE_INTERVAL_LOW, &e->low, NULL) < 0 ||
            get_uint(iv, "interval.", VL_FIELD_ADMIN_ESTIMATE_INTERVAL_HIGH, &e->high, NULL) < 0 ||
            get_fixed(iv, "interval.", VL_FIELD_ADMIN_ESTIMATE_INTERVAL_COVERAGE, 3, &coverage, NULL) < 0 ||
            get_uint(iv, "interval.", VL_FIELD_ADMIN_ESTIMATE_INTERVAL_BLOCK_SIZE, &e->block_size, NULL) <
                    0 ||
            get_uint(iv, "interval.", VL_FIELD_ADMIN_ESTIMATE_INTERVAL_BLOCKS, &e->blocks, NULL) < 0 ||
            get_bool(iv, "interval.", VL_FIELD_ADMIN_ESTIMATE_INTERVAL_SCALED, &e->scaled, NULL) < 0)
                return -EBADMSG;
        if (coverage <= 0 || coverage >= 1000)
                return malformed("is not between 0 and 1", "interval.",
                                 VL_FIELD_ADMIN_ESTIMATE_INTERVAL_COVERAGE);
        if (e->low > e->high)
                return malformed("is below interval.high", "interval.",
                                 VL_FIELD_ADMIN_ESTIMATE_INTERVAL_LOW);
        e->coverage_permille = (uint64_t)coverage;
        return 0;
}

static int estimate_print(json_object *reply, const Options *o, void *userdata) {
        FormatEstimate e = {};
        json_object *task;
        bool has_prompt;
        char buf[FORMAT_ESTIMATE_MAX];

        if (get_string(reply, "", VL_OUT_ADMIN_ESTIMATE_CLASS, false, &e.class_name) < 0 ||
            get_uint(reply, "", VL_OUT_ADMIN_ESTIMATE_UID, &e.uid, NULL) < 0 ||
            get_uint(reply, "", VL_OUT_ADMIN_ESTIMATE_TASKS, &e.tasks, NULL) < 0 ||
            get_uint(reply, "", VL_OUT_ADMIN_ESTIMATE_PROMPT_TOKENS, &e.prompt_tokens, &has_prompt) < 0 ||
            get_uint(reply, "", VL_OUT_ADMIN_ESTIMATE_SAMPLES, &e.samples, NULL) < 0 ||
            get_object(reply, "", VL_OUT_ADMIN_ESTIMATE_PER_TASK, &task, NULL) < 0 ||
            get_uint(task, "perTask.", VL_FIELD_ADMIN_ESTIMATE_TASK_PREDICTED, &e.predicted, NULL) < 0 ||
            get_uint(task, "perTask.", VL_FIELD_ADMIN_ESTIMATE_TASK_PREDICTED_OUTPUT, &e.predicted_output,
                     NULL) < 0 ||
            get_uint(reply, "", VL_OUT_ADMIN_ESTIMATE_EXPECTED, &e.expected, NULL) < 0 ||
            get_uint(reply, "", VL_OUT_ADMIN_ESTIMATE_EXPECTED_OUTPUT, &e.expected_output, NULL) < 0 ||
            estimate_read_interval(reply, &e) < 0 || estimate_read_cost(reply, &e) < 0)
                return -EBADMSG;
        if (e.tasks == 0)
                return malformed("is 0", "", VL_OUT_ADMIN_ESTIMATE_TASKS);
        if (!e.has_cost && !e.no_cost && o->request.model)
                return malformed("and noCost are both missing (a model was asked for)", "",
                                 VL_OUT_ADMIN_ESTIMATE_COST);
        fputs(format_estimate(buf, &e), stdout);
        return 0;
}

static int estimate_failed(const Options *o, tb_client *c, int r, void *userdata) {
        const char *cls = userdata, *uid_text = o->user ? o->user : "you";

        if (method_missing(c))
                fprintf(stderr, "budgetctl: this tokenbudgetd is too old for 'estimate' (it has no "
                                "io.tokenbudget.admin.Estimate)\n");
        else if (error_is(c, VL_ERROR_ADMIN_UNKNOWN_CLASS))
                fprintf(stderr,
                        "budgetctl: no class '%s' learned for %s%s (nothing released in it yet, or "
                        "forgotten); 'budgetctl classes' lists the classes\n",
                        cls, o->user ? "user " : "", uid_text);
        else if (o->user && r == -EACCES)
                fprintf(stderr, "budgetctl: permission denied: other users' classes are for " ADMINS "\n");
        else if (invalid_parameter_is(c, VL_IN_ADMIN_ESTIMATE_CLASS))
                fprintf(stderr, "budgetctl: tokenbudgetd refused the class name '%s' (at most 255 bytes)\n",
                        cls);
        else if (invalid_parameter_is(c, VL_IN_ADMIN_ESTIMATE_MODEL))
                fprintf(stderr, "budgetctl: tokenbudgetd refused the model name '%s' (at most 255 bytes)\n",
                        o->request.model);
        else
                return 0;
        return 1;
}

/* Estimate's parameters, as JSON text (malloc'ed into *ret); -EINVAL (printed), -ENOMEM. */
static int estimate_parameters(const Options *o, const char *cls, char **ret) {
        json_object *params = json_object_new_object();
        uint64_t uid;
        int r;

        if (!params)
                return -ENOMEM;
        if (o->user && user_option(o->user, &uid) < 0) {
                json_object_put(params);
                return -EINVAL;
        }
        r = params_add(params, VL_IN_ADMIN_ESTIMATE_CLASS, json_object_new_string(cls));
        if (r >= 0 && o->user)
                r = params_add(params, VL_IN_ADMIN_ESTIMATE_UID, json_object_new_int64((int64_t)uid));
        if (r >= 0 && o->tasks > 0)
                r = params_add(params, VL_IN_ADMIN_ESTIMATE_TASKS, json_object_new_int64((int64_t)o->tasks));
        if (r >= 0 && o->request.prompt_tokens > 0)
                r = params_add(params, VL_IN_ADMIN_ESTIMATE_PROMPT_TOKENS,
                               json_object_new_int64((int64_t)o->request.prompt_tokens));
        if (r >= 0 && o->request.model)
                r = params_add(params, VL_IN_ADMIN_ESTIMATE_MODEL, json_object_new_string(o->request.model));
        if (r >= 0)
                r = params_to_text(params, ret);
        json_object_put(params);
        return r;
}

/* ---- set ---- */

/* The daemon's reason, a line or "FILE:LINE: message" lines, each made safe for the terminal. */
static void print_reason_lines(const char *reason) {
        while (reason && *reason) {
                size_t n = strcspn(reason, "\n");
                char *line = strndup(reason, n);

                if (line && n > 0)
                        fprintf(stderr, "%s\n", format_sanitize(line));
                free(line);
                reason += n;
                reason += *reason == '\n';
        }
}

/* The limits set changes: the configuration file's names, SetLimits' fields. */
static const struct {
        const char *key;
        const char *field;
} limit_keys[] = {
        {"tokens_per_minute", VL_IN_ADMIN_SET_LIMITS_TOKENS_PER_MINUTE},
        {"tokens_per_hour", VL_IN_ADMIN_SET_LIMITS_TOKENS_PER_HOUR},
        {"tokens_per_day", VL_IN_ADMIN_SET_LIMITS_TOKENS_PER_DAY},
        {"max_tokens_in_flight", VL_IN_ADMIN_SET_LIMITS_MAX_TOKENS_IN_FLIGHT},
        {"max_allocations", VL_IN_ADMIN_SET_LIMITS_MAX_ALLOCATIONS},
};
#define LIMIT_KEYS                                                                                          \
        "tokens_per_minute, tokens_per_hour, tokens_per_day, max_tokens_in_flight, max_allocations"
/* The configuration's range for token limits (conf/tokenbudgetd.conf); 0 is no limit. */
#define LIMIT_VALUE_MAX UINT64_C(999999999999)

typedef struct SetLimit {
        size_t key; /* index into limit_keys */
        uint64_t value;
} SetLimit;

typedef struct SetRequest {
        char *scope; /* as the daemon names it */
        SetLimit limits[ELEMENTSOF(limit_keys)];
        size_t n_limits; /* 0 only with persistent: forget the scope's persistent limits */
        bool persistent; /* SetLimits persistent: kept across reloads and restarts */
} SetRequest;

/* One KEY=VALUE argument into req; prints what is wrong (-EINVAL). */
static int set_parse_limit(const char *arg, SetRequest *req) {
        const char *eq = strchr(arg, '=');
        size_t key_len, k;
        uint64_t value;

        if (!eq || eq == arg) {
                fprintf(stderr, "budgetctl: expected KEY=VALUE, got '%s' (keys: " LIMIT_KEYS ")\n", arg);
                return -EINVAL;
        }
        key_len = (size_t)(eq - arg);
        for (k = 0; k < ELEMENTSOF(limit_keys); k++)
                if (strlen(limit_keys[k].key) == key_len && strncmp(arg, limit_keys[k].key, key_len) == 0)
                        break;
        if (k == ELEMENTSOF(limit_keys)) {
                fprintf(stderr, "budgetctl: unknown key '%.*s' (keys: " LIMIT_KEYS ")\n", (int)key_len, arg);
                return -EINVAL;
        }
        for (size_t i = 0; i < req->n_limits; i++)
                if (req->limits[i].key == k) {
                        fprintf(stderr, "budgetctl: %s is given twice\n", limit_keys[k].key);
                        return -EINVAL;
                }
        if (!parse_decimal(eq + 1, strlen(eq + 1), LIMIT_VALUE_MAX, &value)) {
                fprintf(stderr,
                        "budgetctl: invalid value '%s' for %s: expected an integer from 0 to %" PRIu64
                        " (0: no limit)\n",
                        eq + 1, limit_keys[k].key, LIMIT_VALUE_MAX);
                return -EINVAL;
        }
        req->limits[req->n_limits++] = (SetLimit){k, value};
        return 0;
}

/* SetLimits' parameters for req, as JSON text. */
static int set_parameters(const SetRequest *req, char **ret) {
        json_object *params = json_object_new_object();
        int r;

        if (!params)
                return -ENOMEM;
        r = params_add(params, VL_IN_ADMIN_SET_LIMITS_SCOPE, json_object_new_string(req->scope));
        for (size_t i = 0; r >= 0 && i < req->n_limits; i++)
                r = params_add(params, limit_keys[req->limits[i].key].field,
                               json_object_new_int64((int64_t)req->limits[i].value));
        /* Only when asked: a daemon from before persistent limits takes plain set as it did. */
        if (r >= 0 && req->persistent)
                r = params_add(params, VL_IN_ADMIN_SET_LIMITS_PERSISTENT, json_object_new_boolean(true));
        if (r >= 0)
                r = params_to_text(params, ret);
        json_object_put(params);
        return r;
}

/*
 * "user:1000: tokens_per_hour=100000 (1 scope changed)", with "; persistent"
 * before the ')' when it was kept in the durable ledger; "user:1000:
 * persistent limits forgotten (...)" for --persistent with no KEY=VALUE.
 */
static int set_print(json_object *reply, const Options *o, void *userdata) {
        const SetRequest *req = userdata;
        const char *scope, *persistent = req->persistent ? "; persistent" : "";
        uint64_t n;
        char *name;

        if (get_string(reply, "", VL_OUT_ADMIN_SET_LIMITS_SCOPE, false, &scope) < 0 ||
            get_uint(reply, "", VL_OUT_ADMIN_SET_LIMITS_SCOPES, &n, NULL) < 0)
                return -EBADMSG;
        name = strdup(scope);
        if (!name)
                return -ENOMEM;
        printf("%s:", format_sanitize(name));
        for (size_t i = 0; i < req->n_limits; i++)
                printf(" %s=%" PRIu64, limit_keys[req->limits[i].key].key, req->limits[i].value);
        if (req->n_limits == 0)
                printf(" persistent limits forgotten (the limits it has now last until the next reload)\n");
        else if (!strchr(name, ':') && strcmp(name, "global") != 0)
                printf(" (the defaults of %s scopes; %" PRIu64 " tracked scope%s changed%s)\n", name, n,
                       n == 1 ? "" : "s", persistent);
        else if (n == 0)
                printf(" (not tracked yet: it gets these limits when it appears%s)\n", persistent);
        else
                printf(" (%" PRIu64 " scope%s changed%s)\n", n, n == 1 ? "" : "s", persistent);
        free(name);
        return 0;
}

/* The KEY of a SetLimits field named in InvalidParameter, or NULL. */
static const char *limit_key_of_field(const char *field) {
        for (size_t k = 0; field && k < ELEMENTSOF(limit_keys); k++)
                if (strcmp(limit_keys[k].field, field) == 0)
                        return limit_keys[k].key;
        return NULL;
}

static int set_failed(const Options *o, tb_client *c, int r, void *userdata) {
        const SetRequest *req = userdata;
        const char *parameter = tb_client_error_parameter(c, "parameter"),
                   *key = limit_key_of_field(parameter);
        char scope[256];

        if (error_is(c, VL_ERROR_ADMIN_NOT_PERSISTENT)) {
                const char *reason = tb_client_error_parameter(c, VL_FIELD_ADMIN_NOT_PERSISTENT_REASON);

                snprintf(scope, sizeof(scope), "%s", req->scope);
                format_sanitize(scope);
                /* The daemon applied the limits given all the same, until the next reload. */
                if (req->n_limits > 0)
                        fprintf(stderr, "budgetctl: '%s' was changed, but not persistently: ", scope);
                else
                        fprintf(stderr, "budgetctl: cannot forget the persistent limits of '%s': ", scope);
                print_reason_lines(reason && *reason ? reason : "tokenbudgetd did not say why");
        } else if (invalid_parameter_is(c, VL_IN_ADMIN_SET_LIMITS_PERSISTENT))
                fprintf(stderr,
                        "budgetctl: this tokenbudgetd is too old for --persistent (it refused the "
                        "parameter '%s'); nothing was changed\n",
                        VL_IN_ADMIN_SET_LIMITS_PERSISTENT);
        else if (error_is(c, VL_ERROR_ADMIN_UNKNOWN_SCOPE)) {
                snprintf(scope, sizeof(scope), "%s",
                         tb_client_error_parameter(c, VL_FIELD_ADMIN_UNKNOWN_SCOPE_SCOPE) ?: req->scope);
                format_sanitize(scope);
                fprintf(stderr, "budgetctl: unknown scope '%s': %s\n", scope,
                        strncmp(scope, "process:", 8) == 0
                                ? "no such process is tracked (a process scope must exist to be changed)"
                        : strncmp(scope, "rule:", 5) == 0 ? "no rule of that name is configured"
                                                          : "tokenbudgetd does not know it");
        } else if (invalid_parameter_is(c, VL_IN_ADMIN_SET_LIMITS_SCOPE))
                fprintf(stderr,
                        "budgetctl: tokenbudgetd refused the scope '%s' (see SCOPES in budgetctl(1))\n",
                        req->scope);
        else if (r == -EINVAL && error_is(c, VL_ERROR_SERVICE_INVALID_PARAMETER) && key &&
                 strcmp(key, "max_allocations") == 0 && strncmp(req->scope, "process", 7) == 0)
                fprintf(stderr, "budgetctl: process scopes have no max_allocations (their cap is "
                                "limits.max_allocations_per_process in the configuration)\n");
        else if (r == -EINVAL && error_is(c, VL_ERROR_SERVICE_INVALID_PARAMETER) && key)
                fprintf(stderr, "budgetctl: tokenbudgetd refused %s for '%s'\n", key, req->scope);
        else if (method_missing(c))
                fprintf(stderr, "budgetctl: this tokenbudgetd is too old for 'set' (it has no %s)\n",
                        VL_METHOD_ADMIN_SET_LIMITS);
        else
                return 0;
        return 1;
}

/* ---- reload ---- */

static int reload_print(json_object *reply, const Options *o, void *userdata) {
        puts("tokenbudgetd reloaded its configuration");
        return 0;
}

static int reload_failed(const Options *o, tb_client *c, int r, void *userdata) {
        if (error_is(c, VL_ERROR_ADMIN_RELOAD_REJECTED)) {
                fprintf(stderr, "budgetctl: the configuration was not reloaded; tokenbudgetd keeps the one "
                                "it has:\n");
                print_reason_lines(tb_client_error_parameter(c, VL_FIELD_ADMIN_RELOAD_REJECTED_REASON));
        } else if (method_missing(c))
                fprintf(stderr,
                        "budgetctl: this tokenbudgetd is too old for 'reload' (it has no %s); send it "
                        "SIGHUP ('systemctl reload tokenbudgetd')\n",
                        VL_METHOD_ADMIN_RELOAD);
        else
                return 0;
        return 1;
}

/* ---- pending, approve, deny ---- */

/* What approve and deny act on, for their messages. */
typedef struct Decide {
        const char *id;
        uint64_t tokens; /* approve: 0 for its estimate */
} Decide;

static int decide_print(json_object *reply, const Options *o, void *userdata) {
        const Decide *d = userdata;
        char *id = strdup(d->id);

        if (!id)
                return -ENOMEM;
        format_sanitize(id);
        if (strcmp(o->verb, "deny") == 0)
                printf("request %s denied (its caller gets Escalated, reason denied)\n", id);
        else if (d->tokens > 0)
                printf("request %s approved for %" PRIu64 " tokens\n", id, d->tokens);
        else
                printf("request %s approved for its estimate\n", id);
        free(id);
        return 0;
}

static int pending_failed(const Options *o, tb_client *c, int r, void *userdata) {
        const Decide *d = userdata;
        char id[128];

        if (d && error_is(c, VL_ERROR_ADMIN_UNKNOWN_REQUEST)) {
                snprintf(id, sizeof(id), "%s", d->id);
                fprintf(stderr, "budgetctl: no request %s is held\n", format_sanitize(id));
        } else if (d && strcmp(o->verb, "approve") == 0 &&
                   invalid_parameter_is(c, VL_IN_ADMIN_APPROVE_TOKENS))
                fprintf(stderr,
                        "budgetctl: tokenbudgetd refused %" PRIu64
                        " tokens (at most the request's estimate)\n",
                        d->tokens);
        else if (method_missing(c))
                fprintf(stderr, "budgetctl: this tokenbudgetd is too old for '%s' (it holds no requests)\n",
                        o->verb);
        else
                return 0;
        return 1;
}

/* The largest token count the protocol carries (below 10^12). */
#define TOKENS_MAX UINT64_C(999999999999)

/* A token count argument of 1..TOKENS_MAX; prints what is wrong. */
static int parse_tokens(const char *s, const char *what, uint64_t *ret) {
        if (!parse_decimal(s, strlen(s), TOKENS_MAX, ret) || *ret == 0) {
                fprintf(stderr, "budgetctl: invalid %s '%s': expected an integer from 1 to %" PRIu64 "\n",
                        what, s, TOKENS_MAX);
                return -EINVAL;
        }
        return 0;
}

/* Approve's or Deny's parameters: {"id": ID[, "tokens": N]}, as JSON text. */
static int decide_parameters(const Decide *d, char **ret) {
        json_object *params = json_object_new_object();
        int r;

        if (!params)
                return -ENOMEM;
        r = params_add(params, VL_IN_ADMIN_APPROVE_ID, json_object_new_string(d->id));
        if (r >= 0 && d->tokens > 0)
                r = params_add(params, VL_IN_ADMIN_APPROVE_TOKENS,
                               json_object_new_int64((int64_t)d->tokens));
        if (r >= 0)
                r = params_to_text(params, ret);
        json_object_put(params);
        return r;
}

static int verb_decide(const Options *o, const char *method, const Decide *d) {
        char *text = NULL;
        int r, exit_code;

        if (!*d->id) {
                fprintf(stderr, "budgetctl: '%s' needs a non-empty ID (see 'budgetctl pending')\n", o->verb);
                return EXIT_USAGE;
        }
        r = decide_parameters(d, &text);
        if (r < 0) {
                fprintf(stderr, "budgetctl: out of memory\n");
                return EXIT_FAILED;
        }
        exit_code = admin_show(o, method, text, decide_print, pending_failed, (void *)d);
        free(text);
        return exit_code;
}

/* ---- request: an agent's cycle from the shell ---- */

static const char *const priorities[] = {
        [TB_PRIORITY_INTERACTIVE] = "interactive",
        [TB_PRIORITY_NORMAL] = "normal",
        [TB_PRIORITY_BACKGROUND] = "background",
};

/* What request prints when the daemon refused: its explanation, and when to try again. */
static int request_failed(const Options *o, tb_client *c, int r) {
        char wait[FORMAT_DURATION_MAX];

        if (!tb_client_error_name(c) || method_missing(c))
                return call_failed(o, c, r, NULL, NULL);
        fprintf(stderr, "budgetctl: %s\n", tb_client_error(c));
        if (tb_client_retry_after_usec(c) > 0)
                fprintf(stderr,
                        error_is(c, VL_ERROR_AGENT_CIRCUIT_OPEN)
                                ? "budgetctl: the breaker lets one request through in %s\n"
                                : "budgetctl: tokenbudgetd expects room in %s\n",
                        format_wait(wait, tb_client_retry_after_usec(c)));
        else if (error_is(c, VL_ERROR_AGENT_POWER_PAUSED))
                fprintf(stderr,
                        "budgetctl: tokenbudgetd cannot tell when the power state changes; with --wait the "
                        "request waits in the queue and is served when it does\n");
        else if (invalid_parameter_is(c, VL_IN_AGENT_REQUEST_MIN_TOKENS) ||
                 invalid_parameter_is(c, VL_IN_AGENT_REQUEST_WAIT_USEC) ||
                 invalid_parameter_is(c, VL_IN_AGENT_REQUEST_PROMPT_TOKENS))
                fprintf(stderr, "budgetctl: (is tokenbudgetd older than budgetctl? --min-tokens, --wait and "
                                "--prompt-tokens need one with the escalation ladder)\n");
        return EXIT_FAILED;
}

static void request_print_grant(const tb_grant *g, const tb_request_params *p) {
        char wait[FORMAT_DURATION_MAX];
        char *s;

        /* Every string from the daemon is cleaned before it reaches the terminal. */
        s = strdup(g->allocation);
        printf("allocation: %s\n", s ? format_sanitize(s) : "?");
        free(s);
        printf("decision:   %s", g->decision_name[0] ? g->decision_name : "?");
        if (g->reason_name[0])
                printf(" (%s)", g->reason_name);
        putchar('\n');
        if (p->estimate > 0)
                printf("granted:    %" PRIu64 " of %" PRIu64 " tokens\n", g->granted, p->estimate);
        else
                printf("granted:    %" PRIu64 " tokens (of the daemon's default_estimate)\n", g->granted);
        printf("warn/hard:  %" PRIu64 "/%" PRIu64 " tokens\n", g->warn_at, g->hard_limit);
        if (g->priority_name[0]) {
                printf("priority:   %s", g->priority_name);
                if (g->requested_priority_name[0])
                        printf(" (asked for %s: the rule's max_priority)", g->requested_priority_name);
                putchar('\n');
        }
        /* The power state, when it holds this priority back (or the machine is not in "ac"). */
        if (g->power_state_name &&
            (strcmp(g->power_state_name, "ac") != 0 || g->power_factor_permille != 1000)) {
                char factor[FORMAT_FACTOR_MAX];

                s = strdup(g->power_state_name);
                if (g->power_factor_permille == 0)
                        printf("power:      %s (paused)\n", s ? format_sanitize(s) : "?");
                else
                        printf("power:      %s (x%s)\n", s ? format_sanitize(s) : "?",
                               format_factor(factor, g->power_factor_permille));
                free(s);
        }
        if (g->waited_usec > 0)
                printf("waited:     %s\n", format_wait(wait, g->waited_usec));
        if (g->suggested_max_tokens > 0 || g->suggested_model) {
                printf("suggested:  ");
                if (g->suggested_max_tokens > 0)
                        printf("max_tokens %" PRIu64 "%s", g->suggested_max_tokens,
                               g->suggested_model ? ", " : "");
                if (g->suggested_model) {
                        s = strdup(g->suggested_model);
                        printf("model %s", s ? format_sanitize(s) : "?");
                        free(s);
                }
                putchar('\n');
        }
        if (g->would_be_name) {
                s = strdup(g->would_be_name);
                printf("dry run:    would be %s", s ? format_sanitize(s) : "?");
                free(s);
                if (g->would_be_reason_name) {
                        s = strdup(g->would_be_reason_name);
                        printf(" (%s)", s ? format_sanitize(s) : "?");
                        free(s);
                }
                putchar('\n');
        }
}

/* Sleeps usec, through signals that return (a stopped and continued process). */
static void sleep_usec(uint64_t usec) {
        struct timespec ts = {.tv_sec = (time_t)(usec / USEC_PER_SEC),
                              .tv_nsec = (long)(usec % USEC_PER_SEC * 1000)};

        while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
                ;
}

/* After --hold: Report then Release with --use output tokens. Returns an exit code. */
static int request_settle(const Options *o, tb_client *c, const tb_grant *g) {
        tb_report_params report = {.allocation = g->allocation, .output_tokens = o->use_tokens};
        tb_release_params release = {.allocation = g->allocation, .output_tokens = o->use_tokens};
        tb_report_reply rr;
        tb_release_reply rel;
        int r;

        if (o->hold_usec > 0)
                sleep_usec(o->hold_usec);
        r = tb_report(c, &report, &rr);
        if (r < 0)
                return request_failed(o, c, r);
        printf("reported:   %" PRIu64 " tokens used (%s)%s%s\n", rr.used,
               rr.state_name[0] ? rr.state_name : "?", rr.action_name[0] ? ", action " : "", rr.action_name);
        r = tb_release(c, &release, &rel);
        if (r < 0)
                return request_failed(o, c, r);
        printf("released:   %" PRIu64 " tokens used, %" PRIu64 " refunded\n", rel.used, rel.refunded);
        return EXIT_OK;
}

static int verb_request(int argc, char **argv, const Options *o) {
        tb_request_params p = o->request;
        tb_client *c = NULL;
        char *error = NULL;
        tb_grant g;
        int r, exit_code;

        if (argc > 1 && parse_tokens(argv[1], "ESTIMATE", &p.estimate) < 0)
                return EXIT_USAGE;
        if (p.estimate > 0 && p.min_tokens > p.estimate) {
                fprintf(stderr, "budgetctl: --min-tokens %" PRIu64 " is above the estimate %" PRIu64 "\n",
                        p.min_tokens, p.estimate);
                return EXIT_USAGE;
        }
        if (o->json) {
                fprintf(stderr, "budgetctl: --json does not apply to 'request'\n");
                return EXIT_USAGE;
        }
        r = tb_client_open(o->socket, &c, &error);
        if (r < 0) {
                exit_code = connect_failed(o, r, error);
                free(error);
                return exit_code;
        }
        /* The library adds --wait to the call's deadline: the daemon defers the reply that long. */
        tb_client_set_timeout_usec(c, o->timeout_usec);
        r = tb_request(c, &p, &g);
        if (r < 0)
                exit_code = request_failed(o, c, r);
        else {
                request_print_grant(&g, &p);
                exit_code = request_settle(o, c, &g);
        }
        if (fflush(stdout) != 0 || ferror(stdout)) {
                fprintf(stderr, "budgetctl: cannot write the output: %s\n", strerror(errno));
                exit_code = EXIT_FAILED;
        }
        tb_client_close(c);
        return exit_code;
}

/* ---- verbs ---- */

/*
 * A verb's function gets argv[0] = the verb and its arguments argv[1..argc),
 * their number already checked against the verb's row, and returns an exit
 * code.
 */
typedef int (*VerbFunction)(int argc, char **argv, const Options *o);

static int verb_status(int argc, char **argv, const Options *o) {
        json_object *params = json_object_new_object();
        char *text = NULL;
        int r, exit_code;

        if (!params)
                return EXIT_FAILED;
        r = status_parameters(o, params);
        if (r >= 0)
                r = params_to_text(params, &text);
        json_object_put(params);
        if (r == -ENOMEM)
                fprintf(stderr, "budgetctl: out of memory\n");
        if (r < 0)
                return r == -EINVAL ? EXIT_USAGE : EXIT_FAILED;
        exit_code = admin_show(o, VL_METHOD_ADMIN_STATUS, text, status_print, status_failed, NULL);
        free(text);
        return exit_code;
}

static int verb_list(int argc, char **argv, const Options *o) {
        return admin_show(o, VL_METHOD_ADMIN_LIST, NULL, list_print, NULL, NULL);
}

static int verb_set(int argc, char **argv, const Options *o) {
        SetRequest req = {.persistent = o->persistent};
        char *text = NULL;
        int r, exit_code = EXIT_USAGE;

        /* SCOPE alone is --persistent's "forget"; plain set needs a limit to change. */
        if (argc < 3 && !o->persistent) {
                fprintf(stderr,
                        "budgetctl: 'set' needs a KEY=VALUE (usage: budgetctl set SCOPE KEY=VALUE...)\n");
                return EXIT_USAGE;
        }
        /* Every argument is checked before anything is sent. */
        r = scope_resolve(argv[1], &req.scope);
        for (int i = 2; r >= 0 && i < argc; i++)
                r = set_parse_limit(argv[i], &req);
        if (r >= 0)
                r = set_parameters(&req, &text);
        if (r == -ENOMEM) {
                fprintf(stderr, "budgetctl: out of memory\n");
                exit_code = EXIT_FAILED;
        }
        if (r >= 0)
                exit_code = admin_show(o, VL_METHOD_ADMIN_SET_LIMITS, text, set_print, set_failed, &req);
        free(text);
        free(req.scope);
        return exit_code;
}

static int verb_reload(int argc, char **argv, const Options *o) {
        return admin_show(o, VL_METHOD_ADMIN_RELOAD, NULL, reload_print, reload_failed, NULL);
}

static int verb_pending(int argc, char **argv, const Options *o) {
        return admin_show(o, VL_METHOD_ADMIN_PENDING, NULL, pending_print, pending_failed, NULL);
}

static int verb_approve(int argc, char **argv, const Options *o) {
        Decide d = {.id = argv[1]};

        if (argc > 2 && parse_tokens(argv[2], "TOKENS", &d.tokens) < 0)
                return EXIT_USAGE;
        return verb_decide(o, VL_METHOD_ADMIN_APPROVE, &d);
}

static int verb_deny(int argc, char **argv, const Options *o) {
        Decide d = {.id = argv[1]};

        return verb_decide(o, VL_METHOD_ADMIN_DENY, &d);
}

static int verb_history(int argc, char **argv, const Options *o) {
        HistoryRequest req;
        char *text = NULL;
        int r, exit_code;

        /* Every option is checked before anything is sent. */
        if (history_request(o, &req) < 0)
                return EXIT_USAGE;
        r = history_parameters(&req, &text);
        if (r < 0) {
                fprintf(stderr, "budgetctl: out of memory\n");
                return EXIT_FAILED;
        }
        exit_code = admin_show(o, VL_METHOD_ADMIN_HISTORY, text, history_print, history_failed, &req);
        free(text);
        return exit_code;
}

static int verb_classes(int argc, char **argv, const Options *o) {
        json_object *params = json_object_new_object();
        char *text = NULL;
        uint64_t uid;
        int r = 0, exit_code;

        if (!params) {
                fprintf(stderr, "budgetctl: out of memory\n");
                return EXIT_FAILED;
        }
        /* --user is checked before anything is sent. */
        if (o->user && user_option(o->user, &uid) < 0) {
                json_object_put(params);
                return EXIT_USAGE;
        }
        if (o->user)
                r = params_add(params, VL_IN_ADMIN_CLASSES_UID, json_object_new_int64((int64_t)uid));
        if (r >= 0)
                r = params_to_text(params, &text);
        json_object_put(params);
        if (r < 0) {
                fprintf(stderr, "budgetctl: out of memory\n");
                return EXIT_FAILED;
        }
        exit_code = admin_show(o, VL_METHOD_ADMIN_CLASSES, text, classes_print, classes_failed, NULL);
        free(text);
        return exit_code;
}

static int verb_estimate(int argc, char **argv, const Options *o) {
        char *cls, *text = NULL;
        int r, exit_code;

        /* Every option is checked before anything is sent. */
        if (!o->request.task_class) {
                fprintf(stderr, "budgetctl: 'estimate' needs --class CLASS (a class 'budgetctl classes' "
                                "lists)\n");
                return EXIT_USAGE;
        }
        cls = estimate_class_name(o->request.task_class);
        if (!cls) {
                fprintf(stderr, "budgetctl: out of memory\n");
                return EXIT_FAILED;
        }
        r = estimate_parameters(o, cls, &text);
        if (r < 0) {
                if (r == -ENOMEM)
                        fprintf(stderr, "budgetctl: out of memory\n");
                free(cls);
                return r == -EINVAL ? EXIT_USAGE : EXIT_FAILED;
        }
        exit_code = admin_show(o, VL_METHOD_ADMIN_ESTIMATE, text, estimate_print, estimate_failed, cls);
        free(text);
        free(cls);
        return exit_code;
}

static int verb_help(int argc, char **argv, const Options *o);

/* max_args: no maximum. */
#define VERB_ANY UINT_MAX
/* The longest verb name; a longer word is no slip of one (no suggestion). */
#define VERB_NAME_MAX 16

typedef struct Verb {
        const char *name;
        unsigned min_args, max_args; /* arguments after the verb */
        OptionFlags options;         /* the options that apply to it, beyond the common ones */
        VerbFunction function;
        /* The arguments for help and errors, required ones first, optional ones in brackets,
         * "..." after one that repeats: "SCOPE KEY=VALUE..."; "" for none. An error names a
         * missing one with "a"/"an" before it. */
        const char *args;
        const char *help;
} Verb;

/* A new verb is one row here and one function above. */
static const Verb verbs[] = {
        {"status", 0, 0, OPTION_ALL | OPTION_KIND | OPTION_USER, verb_status, "",
         "Show the daemon and the budgets in use (--all, --kind, --user)"},
        {"list", 0, 0, 0, verb_list, "", "List the open allocations, oldest first"},
        {"set", 1, VERB_ANY, OPTION_PERSISTENT, verb_set, "SCOPE KEY=VALUE...",
         "Change a budget's limits until reload, or --persistent (admins)"},
        {"reload", 0, 0, 0, verb_reload, "", "Re-read the configuration file, as SIGHUP does (admins)"},
        {"pending", 0, 0, 0, verb_pending, "", "List the requests held for an admin, oldest first (admins)"},
        {"approve", 1, 2, 0, verb_approve, "ID [TOKENS]",
         "Let a held request go on, for TOKENS or its estimate (admins)"},
        {"deny", 1, 1, 0, verb_deny, "ID", "Refuse a held request (admins)"},
        {"history", 0, 0, OPTION_SINCE | OPTION_UNTIL | OPTION_BY | OPTION_USER, verb_history, "",
         "Show what was spent, per day or --by (--since, --until, --user)"},
        {"classes", 0, 0, OPTION_USER, verb_classes, "",
         "Show what was learned per task class, and its error (--user)"},
        {"estimate", 0, 0, OPTION_CLASS | OPTION_TASKS | OPTION_PROMPT_TOKENS | OPTION_MODEL | OPTION_USER,
         verb_estimate, "", "Predict what N tasks of a class use and cost (--class, --tasks)"},
        {"request", 0, 1, OPTIONS_REQUEST, verb_request, "[ESTIMATE]",
         "Request, hold, report and release an allocation, as an agent would"},
        {"help", 0, 0, 0, verb_help, "", "Show this help"},
};

static const Verb *verb_find(const char *name) {
        for (size_t i = 0; i < ELEMENTSOF(verbs); i++)
                if (strcmp(name, verbs[i].name) == 0)
                        return &verbs[i];
        return NULL;
}

/* Edit distance with transpositions (optimal string alignment): "stauts" is 1 from "status". */
static size_t edit_distance(const char *a, const char *b) {
        size_t na = strlen(a), nb = strlen(b), d[3][VERB_NAME_MAX + 1];

        assert(na <= VERB_NAME_MAX && nb <= VERB_NAME_MAX);
        for (size_t j = 0; j <= nb; j++)
                d[0][j] = j;
        for (size_t i = 1; i <= na; i++) {
                size_t *row = d[i % 3], *prev = d[(i - 1) % 3], *prev2 = d[(i + 1) % 3];

                row[0] = i;
                for (size_t j = 1; j <= nb; j++) {
                        size_t cost = a[i - 1] != b[j - 1], v = prev[j - 1] + cost;

                        if (prev[j] + 1 < v)
                                v = prev[j] + 1;
                        if (row[j - 1] + 1 < v)
                                v = row[j - 1] + 1;
                        if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] &&
                            prev2[j - 2] + 1 < v)
                                v = prev2[j - 2] + 1;
                        row[j] = v;
                }
        }
        return d[na % 3][nb];
}

/* The verb name looks like a slip of: at most 2 edits away, and fewer edits than the verb has letters. */
static const Verb *verb_closest(const char *name) {
        const Verb *best = NULL;
        size_t best_d = 3;

        if (strlen(name) > VERB_NAME_MAX)
                return NULL;
        for (size_t i = 0; i < ELEMENTSOF(verbs); i++) {
                size_t d = edit_distance(name, verbs[i].name);

                if (d < best_d && d < strlen(verbs[i].name)) {
                        best = &verbs[i];
                        best_d = d;
                }
        }
        return best;
}

/* "budgetctl: 'set' needs a SCOPE (usage: budgetctl set SCOPE KEY=VALUE...)": the first one missing. */
static void verb_missing_arg(const Verb *v, unsigned n_args) {
        const char *w = v->args;
        size_t n;

        for (unsigned i = 0; i < n_args; i++) {
                w += strcspn(w, " ");
                w += strspn(w, " ");
        }
        n = strcspn(w, " ");
        /* A repeating one is named once: "a KEY=VALUE". */
        if (n > 3 && strncmp(w + n - 3, "...", 3) == 0)
                n -= 3;
        /* Placeholders are read as words: "an ID", "a SCOPE", "a KEY". */
        fprintf(stderr, "budgetctl: '%s' needs %s %.*s (usage: budgetctl %s %s)\n", v->name,
                n > 0 && strchr("AEIO", w[0]) ? "an" : "a", (int)n, w, v->name, v->args);
}

/* The verb-specific options, for the check that they apply. */
static const struct {
        OptionFlags flag;
        const char *name;
} verb_options[] = {
        {OPTION_ALL, "--all"},     {OPTION_KIND, "--kind"},
        {OPTION_USER, "--user"},   {OPTION_MIN_TOKENS, "--min-tokens"},
        {OPTION_WAIT, "--wait"},   {OPTION_PRIORITY, "--priority"},
        {OPTION_AGENT, "--agent"}, {OPTION_CLASS, "--class"},
        {OPTION_MODEL, "--model"}, {OPTION_PROMPT_TOKENS, "--prompt-tokens"},
        {OPTION_USE, "--use"},     {OPTION_HOLD, "--hold"},
        {OPTION_SINCE, "--since"}, {OPTION_UNTIL, "--until"},
        {OPTION_BY, "--by"},       {OPTION_PERSISTENT, "--persistent"},
        {OPTION_TASKS, "--tasks"},
};

/* An option given that v does not take, as a usage error; 0 when all apply. */
static int verb_check_options(const Verb *v, const Options *o) {
        for (size_t i = 0; i < ELEMENTSOF(verb_options); i++) {
                size_t n = 0, k = 0;

                if (!(o->given & verb_options[i].flag) || (v->options & verb_options[i].flag))
                        continue;
                for (size_t j = 0; j < ELEMENTSOF(verbs); j++)
                        n += (verbs[j].options & verb_options[i].flag) != 0;
                /* 'a', 'b' and 'c' */
                fprintf(stderr, "budgetctl: %s applies only to ", verb_options[i].name);
                for (size_t j = 0; j < ELEMENTSOF(verbs); j++)
                        if (verbs[j].options & verb_options[i].flag) {
                                k++;
                                fprintf(stderr, "%s'%s'",
                                        k == 1   ? ""
                                        : k == n ? " and "
                                                 : ", ",
                                        verbs[j].name);
                        }
                fputc('\n', stderr);
                return -EINVAL;
        }
        return 0;
}

/* Checks the arguments and the options against v's row and runs it. Returns an exit code. */
static int verb_dispatch(const Verb *v, int argc, char **argv, const Options *o) {
        unsigned n_args = (unsigned)argc - 1;

        if (n_args < v->min_args) {
                verb_missing_arg(v, n_args);
                return EXIT_USAGE;
        }
        if (n_args > v->max_args) {
                if (v->max_args == 0)
                        fprintf(stderr, "budgetctl: '%s' takes no arguments\n", v->name);
                else
                        fprintf(stderr, "budgetctl: '%s' takes %s%u argument%s (usage: budgetctl %s %s)\n",
                                v->name, v->min_args == v->max_args ? "" : "at most ", v->max_args,
                                v->max_args == 1 ? "" : "s", v->name, v->args);
                return EXIT_USAGE;
        }
        if (verb_check_options(v, o) < 0)
                return EXIT_USAGE;
        if (o->socket && !*o->socket) {
                fprintf(stderr, "budgetctl: --socket needs a non-empty address\n");
                return EXIT_USAGE;
        }
        return v->function(argc, argv, o);
}

static void help(void) {
        int width = 8;

        for (size_t i = 0; i < ELEMENTSOF(verbs); i++) {
                /* Two spaces at least between the synopsis and the help. */
                int w = (int)(strlen(verbs[i].name) + (*verbs[i].args ? 1 + strlen(verbs[i].args) : 0)) + 1;

                if (w > width)
                        width = w;
        }
        printf("Usage: budgetctl [OPTIONS] COMMAND [ARGS...]\n\n"
               "Query and steer tokenbudgetd, the LLM token budget daemon.\n\n"
               "Commands:\n");
        for (size_t i = 0; i < ELEMENTSOF(verbs); i++) {
                char synopsis[128];

                snprintf(synopsis, sizeof(synopsis), "%s%s%s", verbs[i].name, *verbs[i].args ? " " : "",
                         verbs[i].args);
                printf("  %-*s %s\n", width, synopsis, verbs[i].help);
        }
        printf("\nOptions:\n"
               "  -s, --socket=ADDRESS   Connect to ADDRESS (a socket path, unix:PATH or @abstract)\n"
               "                         instead of $" TB_SOCKET_ENV ", " TB_SYSTEM_SOCKET "\n"
               "                         and $XDG_RUNTIME_DIR/tokenbudget/io.tokenbudget\n"
               "  -j, --json             Print the daemon's reply as JSON, with exact numbers\n"
               "  -t, --timeout=SECONDS  Wait at most SECONDS for the daemon (default 5, 0: forever)\n"
               "  -a, --all              status: list idle scopes too (no usage in any window,\n"
               "                         nothing reserved or allocated)\n"
               "  -k, --kind=KIND        status: only global and the scopes of KIND\n"
               "                         (" SCOPE_KINDS ")\n"
               "  -u, --user=USER        status: only global and the scopes of USER (a name or uid);\n"
               "                         history: only USER's rows; classes: only USER's classes;\n"
               "                         estimate: USER's class (default: your own)\n"
               "      --min-tokens=N     request: the least the task can use (default: the estimate)\n"
               "      --wait=DURATION    request: wait up to DURATION for room (500ms, 2s, 1min, 1h)\n"
               "      --priority=P       request: interactive, normal or background\n"
               "      --agent=NAME       request: the agent asking\n"
               "      --class=NAME       request: the task's class; estimate: the class to predict,\n"
               "                         NAME (a declared class), class:NAME, agent:NAME or\n"
               "                         command:COMM, as budgetctl classes shows it\n"
               "      --model=NAME       request: the model it would call; estimate: the cost at\n"
               "                         its prices (the daemon's price table)\n"
               "      --prompt-tokens=N  request: the prompt's size; estimate: each task's\n"
               "      --tasks=N          estimate: how many tasks (1 to 1000000000, default 1)\n"
               "      --use=N            request: output tokens to report and release (default 0)\n"
               "      --hold=DURATION    request: keep the allocation open this long first (default 0)\n"
               "  -S, --since=TIME       history: from TIME (default: the oldest kept)\n"
               "  -U, --until=TIME       history: up to TIME, not included (default: no end)\n"
               "      --by=GROUP         history: a row per user, unit, agent, class, model,\n"
               "                         hour or day (default: day)\n"
               "      --persistent       set: keep the change across reloads and restarts (written\n"
               "                         to the daemon's database); alone, without KEY=VALUE,\n"
               "                         forget SCOPE's persistent limits\n"
               "      --no-legend        Print only the rows: no summary, headers or notes\n"
               "  -h, --help             Show this help\n"
               "      --version          Show the version\n\n"
               "Options may come before or after the command.\n\n"
               "set: SCOPE is global, a kind's defaults (" DEFAULT_KINDS "), or\n"
               "  user:USER, agent:USER:NAME, slice:NAME, unit:NAME, slice:USER:NAME,\n"
               "  unit:USER:NAME, process:PID, rule:NAME or rule:NAME:KEY (USER a name or uid).\n"
               "  KEY is tokens_per_minute, tokens_per_hour, tokens_per_day,\n"
               "  max_tokens_in_flight or max_allocations; VALUE an integer from 0 to\n"
               "  999999999999 (0: no limit). For example:\n"
               "  budgetctl set user:alice tokens_per_hour=100000 max_tokens_in_flight=20000\n"
               "  Plain set lasts until the next reload (budgetctl reload, SIGHUP), which goes\n"
               "  back to the configuration file. With --persistent the daemon also writes the\n"
               "  change to its durable ledger and applies it again after every reload and\n"
               "  restart; a daemon running memory only (--state-dir '') refuses, and the\n"
               "  change then lasts until the next reload. 'set --persistent SCOPE' forgets\n"
               "  SCOPE's persistent limits from the next reload or restart on.\n\n"
               "history: TIME is as journalctl takes it: now, today, yesterday, tomorrow,\n"
               "  -1h, -30min, -2d, 2h ago, 2026-12-01, 2026-12-01 10:00, 2026-12-01T10:00:00,\n"
               "  10:00 (today) or @EPOCH; local time unless it ends in UTC, Z or +HH:MM.\n"
               "  Hours and days are shown in local time; a day begins at local midnight.\n\n"
               "request: asks as an agent would (its budgets are those of budgetctl's process,\n"
               "  user and unit), prints the decision, then reports and releases. The call waits\n"
               "  --timeout plus --wait; pass --timeout 0 when an admin may have to decide.\n\n"
               "Status, list, history, classes, estimate and request answer everyone (others\n"
               "see global and their own scopes, history and classes); set, reload, pending,\n"
               "approve and deny are for " ADMINS ".\n\n"
               "Exit status:\n"
               "  0  success\n"
               "  1  the daemon answered with an error (permission denied, an unknown scope,\n"
               "     a configuration it rejected, a request refused), or another failure\n"
               "  2  usage error (unknown command or option, wrong arguments, bad value)\n"
               "  3  the daemon is not reachable\n\n"
               "See budgetctl(1).\n");
}

static int verb_help(int argc, char **argv, const Options *o) {
        help();
        return EXIT_OK;
}

static int parse_timeout(const char *s, Options *o) {
        char *end = NULL;
        double v;

        errno = 0;
        v = strtod(s, &end);
        if (errno != 0 || end == s || *end != '\0' || !isfinite(v) || v < 0 || v > TIMEOUT_MAX_SEC) {
                fprintf(stderr, "budgetctl: invalid --timeout '%s': expected seconds between 0 and %g\n", s,
                        TIMEOUT_MAX_SEC);
                return -EINVAL;
        }
        o->timeout_sec = v;
        if (v == 0) {
                o->timeout_usec = TB_USEC_INFINITY; /* the library's 0 is its default */
                return 0;
        }
        /* Round up, so a tiny positive timeout does not become 0 (the default). */
        o->timeout_usec = (uint64_t)(v * 1e6);
        if (o->timeout_usec < v * 1e6)
                o->timeout_usec++;
        return 0;
}

enum {
        ARG_NO_LEGEND = 0x100,
        ARG_VERSION,
        ARG_MIN_TOKENS,
        ARG_WAIT,
        ARG_PRIORITY,
        ARG_AGENT,
        ARG_CLASS,
        ARG_MODEL,
        ARG_PROMPT_TOKENS,
        ARG_USE,
        ARG_HOLD,
        ARG_BY,
        ARG_PERSISTENT,
        ARG_TASKS,
};

/* The longest --wait and --hold: a day (the daemon shortens a wait to its queue.max_wait_sec). */
#define WAIT_MAX_USEC (UINT64_C(86400) * USEC_PER_SEC)

static int parse_duration_option(const char *name, const char *s, uint64_t *ret) {
        int r = parse_duration(s, WAIT_MAX_USEC, ret);

        if (r < 0)
                fprintf(stderr,
                        "budgetctl: invalid %s '%s': %s (e.g. 500ms, 2s, 1min, 1h, or plain seconds)\n",
                        name, s, r == -ERANGE ? "at most a day" : "expected a duration");
        return r;
}

/* --min-tokens, --prompt-tokens (1 up) and --use (0 up): token counts below 10^12. */
static int parse_count_option(const char *name, const char *s, bool zero_ok, uint64_t *ret) {
        if (!parse_decimal(s, strlen(s), TOKENS_MAX, ret) || (*ret == 0 && !zero_ok)) {
                fprintf(stderr, "budgetctl: invalid %s '%s': expected an integer from %d to %" PRIu64 "\n",
                        name, s, zero_ok ? 0 : 1, TOKENS_MAX);
                return -EINVAL;
        }
        return 0;
}

static int parse_priority_option(const char *s, tb_priority *ret) {
        for (size_t i = 1; i < ELEMENTSOF(priorities); i++)
                if (strcmp(s, priorities[i]) == 0) {
                        *ret = (tb_priority)i;
                        return 0;
                }
        fprintf(stderr, "budgetctl: invalid --priority '%s': expected interactive, normal or background\n",
                s);
        return -EINVAL;
}

/* A name option of request (--agent, --class, --model): the daemon checks the rest. */
static int parse_name_option(const char *name, const char *s, const char **ret) {
        if (!*s) {
                fprintf(stderr, "budgetctl: %s needs a non-empty name\n", name);
                return -EINVAL;
        }
        *ret = s;
        return 0;
}

/* The options of request; -EINVAL (printed) for a bad value, 1 when ch is none of them. */
static int parse_request_option(int ch, const char *arg, Options *o) {
        static const struct {
                int ch;
                OptionFlags flag;
        } flags[] = {
                {ARG_MIN_TOKENS, OPTION_MIN_TOKENS},
                {ARG_WAIT, OPTION_WAIT},
                {ARG_PRIORITY, OPTION_PRIORITY},
                {ARG_AGENT, OPTION_AGENT},
                {ARG_CLASS, OPTION_CLASS},
                {ARG_MODEL, OPTION_MODEL},
                {ARG_PROMPT_TOKENS, OPTION_PROMPT_TOKENS},
                {ARG_USE, OPTION_USE},
                {ARG_HOLD, OPTION_HOLD},
        };
        tb_request_params *p = &o->request;

        for (size_t i = 0; i < ELEMENTSOF(flags); i++)
                if (flags[i].ch == ch)
                        o->given |= flags[i].flag;
        switch (ch) {
        case ARG_MIN_TOKENS:
                return parse_count_option("--min-tokens", arg, false, &p->min_tokens);
        case ARG_WAIT:
                return parse_duration_option("--wait", arg, &p->wait_usec);
        case ARG_PRIORITY:
                return parse_priority_option(arg, &p->priority);
        case ARG_AGENT:
                return parse_name_option("--agent", arg, &p->agent);
        case ARG_CLASS:
                return parse_name_option("--class", arg, &p->task_class);
        case ARG_MODEL:
                return parse_name_option("--model", arg, &p->model);
        case ARG_PROMPT_TOKENS:
                return parse_count_option("--prompt-tokens", arg, false, &p->prompt_tokens);
        case ARG_USE:
                return parse_count_option("--use", arg, true, &o->use_tokens);
        case ARG_HOLD:
                return parse_duration_option("--hold", arg, &o->hold_usec);
        default:
                return 1;
        }
}

/* estimate --tasks: 1 to ESTIMATE_TASKS_MAX. */
static int parse_tasks_option(const char *s, uint64_t *ret) {
        if (!parse_decimal(s, strlen(s), ESTIMATE_TASKS_MAX, ret) || *ret == 0) {
                fprintf(stderr,
                        "budgetctl: invalid --tasks '%s': expected an integer from 1 to %" PRIu64 "\n", s,
                        ESTIMATE_TASKS_MAX);
                return -EINVAL;
        }
        return 0;
}

/* Returns -1 to go on with a command, else an exit code. */
static int parse_options(int argc, char **argv, Options *o) {
        int r;

        static const struct option options[] = {
                {"socket", required_argument, NULL, 's'},
                {"json", no_argument, NULL, 'j'},
                {"timeout", required_argument, NULL, 't'},
                {"all", no_argument, NULL, 'a'},
                {"kind", required_argument, NULL, 'k'},
                {"user", required_argument, NULL, 'u'},
                {"no-legend", no_argument, NULL, ARG_NO_LEGEND},
                {"help", no_argument, NULL, 'h'},
                {"version", no_argument, NULL, ARG_VERSION},
                {"min-tokens", required_argument, NULL, ARG_MIN_TOKENS},
                {"wait", required_argument, NULL, ARG_WAIT},
                {"priority", required_argument, NULL, ARG_PRIORITY},
                {"agent", required_argument, NULL, ARG_AGENT},
                {"class", required_argument, NULL, ARG_CLASS},
                {"model", required_argument, NULL, ARG_MODEL},
                {"prompt-tokens", required_argument, NULL, ARG_PROMPT_TOKENS},
                {"use", required_argument, NULL, ARG_USE},
                {"hold", required_argument, NULL, ARG_HOLD},
                {"since", required_argument, NULL, 'S'},
                {"until", required_argument, NULL, 'U'},
                {"by", required_argument, NULL, ARG_BY},
                {"persistent", no_argument, NULL, ARG_PERSISTENT},
                {"tasks", required_argument, NULL, ARG_TASKS},
                {},
        };
        int ch;

        while ((ch = getopt_long(argc, argv, "s:jt:ak:u:S:U:h", options, NULL)) >= 0) {
                switch (ch) {
                case 's':
                        o->socket = optarg;
                        break;
                case 'j':
                        o->json = true;
                        break;
                case 'a':
                        o->all = true;
                        o->given |= OPTION_ALL;
                        break;
                case 'k':
                        o->kind = optarg;
                        o->given |= OPTION_KIND;
                        break;
                case 'u':
                        o->user = optarg;
                        o->given |= OPTION_USER;
                        break;
                case 'S':
                        o->since = optarg;
                        o->given |= OPTION_SINCE;
                        break;
                case 'U':
                        o->until = optarg;
                        o->given |= OPTION_UNTIL;
                        break;
                case ARG_BY:
                        o->by = optarg;
                        o->given |= OPTION_BY;
                        break;
                case ARG_PERSISTENT:
                        o->persistent = true;
                        o->given |= OPTION_PERSISTENT;
                        break;
                case ARG_TASKS:
                        o->given |= OPTION_TASKS;
                        if (parse_tasks_option(optarg, &o->tasks) < 0)
                                return EXIT_USAGE;
                        break;
                case 't':
                        if (parse_timeout(optarg, o) < 0)
                                return EXIT_USAGE;
                        break;
                case ARG_NO_LEGEND:
                        o->legend = false;
                        break;
                case 'h':
                        help();
                        return EXIT_OK;
                case ARG_VERSION:
                        printf("budgetctl %s (libtokenbudget %s)\n", TB_VERSION, tb_version());
                        return EXIT_OK;
                default:
                        r = parse_request_option(ch, optarg, o);
                        if (r < 0)
                                return EXIT_USAGE;
                        if (r > 0) {
                                fprintf(stderr, "Try 'budgetctl --help'.\n");
                                return EXIT_USAGE;
                        }
                }
        }
        return -1;
}

int main(int argc, char **argv) {
        Options o = {.legend = true,
                     .timeout_usec = TB_TIMEOUT_DEFAULT_USEC,
                     .timeout_sec = TB_TIMEOUT_DEFAULT_USEC / 1e6};
        const Verb *v, *closest;
        int r;

        /* getopt_long() permutes argv: options after the verb count too, its arguments end up last. */
        r = parse_options(argc, argv, &o);
        if (r >= 0)
                return r;
        if (optind >= argc) {
                fprintf(stderr, "budgetctl: missing command (try 'budgetctl --help')\n");
                return EXIT_USAGE;
        }
        v = verb_find(argv[optind]);
        if (v) {
                o.verb = v->name;
                return verb_dispatch(v, argc - optind, argv + optind, &o);
        }
        closest = verb_closest(argv[optind]);
        if (closest)
                fprintf(stderr,
                        "budgetctl: unknown command '%s'; did you mean '%s'? (try 'budgetctl --help')\n",
                        argv[optind], closest->name);
        else
                fprintf(stderr, "budgetctl: unknown command '%s' (try 'budgetctl --help')\n", argv[optind]);
        return EXIT_USAGE;
}
