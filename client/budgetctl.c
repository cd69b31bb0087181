/* SPDX-License-Identifier: MIT */
/*
 * budgetctl: the admin command line of tokenbudgetd. A table of verbs, each
 * with the arguments it takes, the options that apply to it and a function
 * that makes one call on the admin interface (io.tokenbudget.admin) through
 * libtokenbudget and prints the reply as a table (budgetctl-format.h formats
 * the values), or as pretty JSON with --json. It validates the shape of every
 * reply it prints from and never trusts the daemon's strings on a terminal
 * (control characters are replaced). When no daemon answers it says where it
 * looked (the library's own address search, tb_client_addresses()) and how to
 * start one there (the systemd unit when one is installed, else by hand). It
 * does not change the daemon's state and keeps no state of its own.
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
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <json-c/json.h>

#ifndef TB_VERSION
#include "tb-config.h"
#include "varlink-names.h"
#endif
#include "budgetctl-format.h"
#include "macro.h"
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

typedef struct Options {
        const char *socket; /* NULL: the library's default search */
        bool all;           /* status --all: every tracked scope, idle ones too */
        bool json;
        bool legend;
        uint64_t timeout_usec; /* TB_USEC_INFINITY for --timeout 0 */
        double timeout_sec;    /* as given, for messages */
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
                        const char *span;
                        uint64_t span_usec, v;
                        bool present;

                        snprintf(ctx, sizeof(ctx), "scopes[%zu].windows", i);
                        if (get_object_at(windows, j, ctx, &w) < 0)
                                return -EBADMSG;
                        snprintf(ctx, sizeof(ctx), "scopes[%zu].windows[%zu].", i, j);
                        if (get_string(w, ctx, "span", false, &span) < 0 ||
                            get_uint(w, ctx, "spanUsec", &span_usec, NULL) < 0 ||
                            get_uint(w, ctx, "used", &v, NULL) < 0 ||
                            get_uint(w, ctx, "limit", &v, &present) < 0)
                                return -EBADMSG;
                        r = spans_add(spans, span, span_usec);
                        if (r < 0)
                                return r;
                }
        }
        return 0;
}

static int status_header(json_object *reply, const Options *o) {
        uint64_t uptime_usec, connections, allocations, reserved;
        const char *version;
        char a[FORMAT_DURATION_MAX], b[FORMAT_TOKENS_MAX];

        if (get_string(reply, "", "version", false, &version) < 0 ||
            get_uint(reply, "", "uptimeUsec", &uptime_usec, NULL) < 0 ||
            get_uint(reply, "", "connections", &connections, NULL) < 0 ||
            get_uint(reply, "", "allocations", &allocations, NULL) < 0 ||
            get_uint(reply, "", "reserved", &reserved, NULL) < 0)
                return -EBADMSG;
        if (!o->legend)
                return 0;
        printf("tokenbudgetd %s, up %s\n", version, format_duration(a, uptime_usec));
        printf("Connections: %" PRIu64 "  Allocations in flight: %" PRIu64 "  Reserved: %s tokens\n\n",
               connections, allocations, format_tokens(b, reserved));
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

static int status_row(Table *t, json_object *scope, size_t i, const Spans *spans) {
        uint64_t reserved, in_flight_limit = 0, allocations, committed;
        json_object *windows = json_object_object_get(scope, "windows");
        const char *name;
        bool has_limit;
        char ctx[32], cell[FORMAT_RATIO_MAX];
        int r;

        snprintf(ctx, sizeof(ctx), "scopes[%zu].", i);
        if (get_string(scope, ctx, "name", false, &name) < 0 ||
            get_uint(scope, ctx, "reserved", &reserved, NULL) < 0 ||
            get_uint(scope, ctx, "committed", &committed, NULL) < 0 ||
            get_uint(scope, ctx, "allocations", &allocations, NULL) < 0 ||
            get_uint(scope, ctx, "inFlightLimit", &in_flight_limit, &has_limit) < 0)
                return -EBADMSG;
        r = table_add(t, name);
        for (size_t s = 0; r >= 0 && s < spans->n; s++) {
                status_window_cell(windows, spans->items[s].name, cell);
                r = table_add(t, cell);
        }
        if (r >= 0)
                r = table_add(t, format_ratio(cell, reserved, has_limit, in_flight_limit));
        if (r >= 0) {
                snprintf(cell, sizeof(cell), "%" PRIu64, allocations);
                r = table_add(t, cell);
        }
        return r;
}

static int status_print(json_object *reply, const Options *o) {
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
        t->n_columns = spans.n + 3;
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
        for (size_t i = 0; r >= 0 && i < json_object_array_length(scopes); i++)
                r = status_row(t, json_object_array_get_idx(scopes, i), i, &spans);
        if (r >= 0)
                table_print(t, o->legend);
        table_free(t);
        if (r >= 0 && o->legend && !o->all && hidden > 0)
                printf("(%" PRIu64 " idle scope%s not shown; budgetctl status --all lists them)\n", hidden,
                       hidden == 1 ? "" : "s");
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

static int list_print(json_object *reply, const Options *o) {
        static const char *const headers[] = {"ID",      "PID",  "UID",   "COMMAND", "AGENT",
                                              "GRANTED", "USED", "STATE", "AGE"};
        static const bool right[] = {false, true, true, false, false, true, true, false, true};
        json_object *allocations;
        size_t n;
        Table *t;
        int r = 0;

        if (get_array(reply, "", "allocations", &allocations) < 0)
                return -EBADMSG;
        n = json_object_array_length(allocations);
        for (size_t i = 0; i < n; i++) {
                json_object *a;

                if (get_object_at(allocations, i, "allocations", &a) < 0)
                        return -EBADMSG;
        }
        if (n == 0) {
                if (o->legend)
                        puts("No open allocations.");
                return 0;
        }

        t = calloc(1, sizeof(*t));
        if (!t)
                return -ENOMEM;
        t->n_columns = sizeof(headers) / sizeof(headers[0]);
        t->right = right;
        for (size_t c = 0; r >= 0 && c < t->n_columns; c++)
                r = table_add(t, headers[c]);
        for (size_t i = 0; r >= 0 && i < n; i++)
                r = list_row(t, json_object_array_get_idx(allocations, i), i);
        if (r >= 0)
                table_print(t, o->legend);
        table_free(t);
        return r;
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

/* Whether the daemon answered InvalidParameter naming parameter. */
static bool invalid_parameter_is(const tb_client *c, const char *parameter) {
        const char *name = tb_client_error_name(c), *value = tb_client_error_parameter(c, "parameter");

        return name && strcmp(name, VL_ERROR_SERVICE_INVALID_PARAMETER) == 0 && value &&
               strcmp(value, parameter) == 0;
}

static int call_failed(const Options *o, tb_client *c, int r) {
        switch (r) {
        case -EINVAL:
                /* A daemon from before Status took "all" refuses it; its plain Status lists every scope. */
                if (o->all && invalid_parameter_is(c, "all"))
                        fprintf(stderr,
                                "budgetctl: this tokenbudgetd is too old for --all (it refused the "
                                "parameter 'all'); its plain 'budgetctl status' lists every scope\n");
                else
                        fprintf(stderr, "budgetctl: %s\n", tb_client_error(c));
                break;
        case -EACCES:
                fprintf(stderr, "budgetctl: permission denied: the admin interface needs root or the "
                                "daemon's user\n");
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
static int admin_call(const Options *o, const char *method, const char *parameters, json_object **ret) {
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
                exit_code = call_failed(o, c, r);
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

/*
 * Calls method with parameters (a JSON object or NULL) and prints the reply:
 * as pretty JSON with --json, else with print. Returns an exit code.
 */
static int admin_show(const Options *o, const char *method, const char *parameters,
                      int (*print)(json_object *reply, const Options *o)) {
        json_object *reply = NULL;
        int exit_code, r;

        exit_code = admin_call(o, method, parameters, &reply);
        if (exit_code != EXIT_OK)
                return exit_code;
        if (o->json) {
                puts(json_object_to_json_string_ext(reply, JSON_C_TO_STRING_PRETTY |
                                                                   JSON_C_TO_STRING_SPACED |
                                                                   JSON_C_TO_STRING_NOSLASHESCAPE));
                r = 0;
        } else
                r = print(reply, o);
        json_object_put(reply);
        if (r == -ENOMEM)
                fprintf(stderr, "budgetctl: out of memory\n");
        if (fflush(stdout) != 0 || ferror(stdout)) {
                fprintf(stderr, "budgetctl: cannot write the output: %s\n", strerror(errno));
                return EXIT_FAILED;
        }
        return r < 0 ? EXIT_FAILED : EXIT_OK;
}

/* ---- verbs ---- */

/*
 * A verb's function gets argv[0] = the verb and its arguments argv[1..argc),
 * their number already checked against the verb's row, and returns an exit
 * code.
 */
typedef int (*VerbFunction)(int argc, char **argv, const Options *o);

static int verb_status(int argc, char **argv, const Options *o) {
        /* Only with --all: a daemon that predates the parameter still answers a plain Status. */
        return admin_show(o, VL_METHOD_ADMIN_STATUS, o->all ? "{\"all\":true}" : NULL, status_print);
}

static int verb_list(int argc, char **argv, const Options *o) {
        return admin_show(o, VL_METHOD_ADMIN_LIST, NULL, list_print);
}

static int verb_help(int argc, char **argv, const Options *o);

/* The options that apply to some verbs only; any other verb refuses them as a usage error. */
typedef enum VerbFlags {
        VERB_ALL = 1 << 0, /* --all */
} VerbFlags;

/* max_args: no maximum. */
#define VERB_ANY UINT_MAX
/* The longest verb name; a longer word is no slip of one (no suggestion). */
#define VERB_NAME_MAX 16

typedef struct Verb {
        const char *name;
        unsigned min_args, max_args; /* arguments after the verb */
        VerbFlags flags;
        VerbFunction function;
        /* The arguments for help and errors, required ones first, optional ones in brackets:
         * "ID [TOKENS]"; "" for none. An error names a missing one with "a"/"an" before it. */
        const char *args;
        const char *help;
} Verb;

/* A new verb is one row here and one function above. */
static const Verb verbs[] = {
        {"status", 0, 0, VERB_ALL, verb_status, "",
         "Show the daemon and the budgets in use (--all: every budget)"},
        {"list", 0, 0, 0, verb_list, "", "List the open allocations, oldest first"},
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

/* "budgetctl: 'approve' needs an ID (usage: budgetctl approve ID [TOKENS])": the first one missing. */
static void verb_missing_arg(const Verb *v, unsigned n_args) {
        const char *w = v->args;
        size_t n;

        for (unsigned i = 0; i < n_args; i++) {
                w += strcspn(w, " ");
                w += strspn(w, " ");
        }
        n = strcspn(w, " ");
        /* Placeholders are read as words: "an ID", "a SCOPE", "a KEY". */
        fprintf(stderr, "budgetctl: '%s' needs %s %.*s (usage: budgetctl %s %s)\n", v->name,
                n > 0 && strchr("AEIO", w[0]) ? "an" : "a", (int)n, w, v->name, v->args);
}

/* The options given that v does not take, as a usage error; 0 when all apply. */
static int verb_check_flags(const Verb *v, const Options *o) {
        const char *sep = "";

        if (!o->all || (v->flags & VERB_ALL))
                return 0;
        fputs("budgetctl: --all applies only to ", stderr);
        for (size_t i = 0; i < ELEMENTSOF(verbs); i++)
                if (verbs[i].flags & VERB_ALL) {
                        fprintf(stderr, "%s'%s'", sep, verbs[i].name);
                        sep = " and ";
                }
        fputc('\n', stderr);
        return -EINVAL;
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
        if (verb_check_flags(v, o) < 0)
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
               "Query tokenbudgetd, the LLM token budget daemon.\n\n"
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
               "      --no-legend        Print only the rows: no summary, headers or notes\n"
               "  -h, --help             Show this help\n"
               "      --version          Show the version\n\n"
               "Options may come before or after the command.\n\n"
               "Exit status:\n"
               "  0  success\n"
               "  1  the daemon answered with an error, or another failure\n"
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
};

/* Returns -1 to go on with a command, else an exit code. */
static int parse_options(int argc, char **argv, Options *o) {
        static const struct option options[] = {
                {"socket", required_argument, NULL, 's'},        {"json", no_argument, NULL, 'j'},
                {"timeout", required_argument, NULL, 't'},       {"all", no_argument, NULL, 'a'},
                {"no-legend", no_argument, NULL, ARG_NO_LEGEND}, {"help", no_argument, NULL, 'h'},
                {"version", no_argument, NULL, ARG_VERSION},     {},
        };
        int ch;

        while ((ch = getopt_long(argc, argv, "s:jt:ah", options, NULL)) >= 0) {
                switch (ch) {
                case 's':
                        o->socket = optarg;
                        break;
                case 'j':
                        o->json = true;
                        break;
                case 'a':
                        o->all = true;
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
                        fprintf(stderr, "Try 'budgetctl --help'.\n");
                        return EXIT_USAGE;
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
        if (v)
                return verb_dispatch(v, argc - optind, argv + optind, &o);
        closest = verb_closest(argv[optind]);
        if (closest)
                fprintf(stderr,
                        "budgetctl: unknown command '%s'; did you mean '%s'? (try 'budgetctl --help')\n",
                        argv[optind], closest->name);
        else
                fprintf(stderr, "budgetctl: unknown command '%s' (try 'budgetctl --help')\n", argv[optind]);
        return EXIT_USAGE;
}
