/* SPDX-License-Identifier: MIT */
/*
 * tokenbudgetd's configuration: built-in defaults, and a parser and validator
 * for the libconfig file format that reports every error it finds as
 * "FILE:LINE: message", naming each setting by its full path. One table of
 * settings drives parsing, validation and formatting, so a setting cannot be
 * known to one and missing from another.
 *
 * Pure: the caller reads the file and passes its text; nothing here opens a
 * file, logs or reads the clock. libconfig's @include is refused (the daemon's
 * configuration is one file, and an include would be file I/O behind the
 * caller's back). Before libconfig sees the text, a small lexical pre-pass
 * that mirrors libconfig's lexer refuses @include and rewrites integer
 * literals: libconfig 1.5 stores a decimal literal without an L suffix in a
 * C int and silently wraps it (4294967297 parses as 1), so every integer
 * literal is handed over as a 64-bit one with its exact value, saturated at
 * the 64-bit limits.
 */
#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <libconfig.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>

#include "config.h"

#define ELEMENTSOF(x) (sizeof(x) / sizeof((x)[0]))

#define DEFAULT_SOCKET_PATH "/run/tokenbudget/io.tokenbudget"

/* Token counts must stay below LEDGER_TOKENS_MAX (see ledger.h). */
#define TOKENS_SETTING_MAX (LEDGER_TOKENS_MAX - 1)

/* The hard multiplier is bounded by PRODUCT.md ("configurable 1.0-5.0"). */
#define MULTIPLIER_MIN_PERMILLE 1000u
#define MULTIPLIER_MAX_PERMILLE 5000u

/* A socket path must fit sockaddr_un.sun_path with its terminating NUL. */
#define SOCKET_PATH_SIZE sizeof(((struct sockaddr_un *)NULL)->sun_path)

/* Strings from the file are quoted in messages; keep a line readable. */
#define QUOTE_MAX_BYTES 64

#define USEC_PER_SEC UINT64_C(1000000)

typedef enum SettingKind {
        SETTING_SOCKET,     /* char *, an absolute path that fits sun_path */
        SETTING_UINT,       /* uint64_t in [min, max] */
        SETTING_MULTIPLIER, /* uint32_t permille, from a number in 1.0..5.0 */
        SETTING_LOG_LEVEL,  /* LogLevel, from its name */
        SETTING_BOOL,       /* bool, from true or false */
        SETTING_SECONDS,    /* uint64_t microseconds, from whole seconds in [min, max] */
} SettingKind;

typedef struct Setting {
        const char *group; /* NULL at top level */
        const char *name;
        SettingKind kind;
        size_t offset;     /* of the field in Config */
        uint64_t min, max; /* for SETTING_SECONDS, in seconds */
} Setting;

/* The four budgets of a LedgerLimits, for the "global" and "process" groups. */
#define LIMITS_SETTING(g, name, member)                                                                     \
        { #g, name, SETTING_UINT, offsetof(Config, g.member), 0, TOKENS_SETTING_MAX }
#define LIMITS_SETTINGS(g)                                                                                  \
        LIMITS_SETTING(g, "tokens_per_minute", window_tokens[LEDGER_WINDOW_MINUTE]),                        \
                LIMITS_SETTING(g, "tokens_per_hour", window_tokens[LEDGER_WINDOW_HOUR]),                    \
                LIMITS_SETTING(g, "tokens_per_day", window_tokens[LEDGER_WINDOW_DAY]),                      \
                LIMITS_SETTING(g, "max_tokens_in_flight", in_flight_tokens)

/* Grouped by group, in the order config_format() writes them. */
static const Setting settings[] = {
        {NULL, "socket", SETTING_SOCKET, offsetof(Config, socket_path), 0, 0},
        {NULL, "default_estimate", SETTING_UINT, offsetof(Config, default_estimate), 1, TOKENS_SETTING_MAX},
        {NULL, "max_request_tokens", SETTING_UINT, offsetof(Config, max_request_tokens), 1,
         TOKENS_SETTING_MAX},
        {NULL, "warn_multiplier", SETTING_MULTIPLIER, offsetof(Config, warn_permille), 0, 0},
        {NULL, "hard_multiplier", SETTING_MULTIPLIER, offsetof(Config, hard_permille), 0, 0},
        {NULL, "log_level", SETTING_LOG_LEVEL, offsetof(Config, log_level), 0, 0},
        LIMITS_SETTINGS(global),
        LIMITS_SETTINGS(process),
        /* 1 KiB holds any request we define; 16 MiB bounds what one peer can make us buffer. */
        {"limits", "max_message_bytes", SETTING_UINT, offsetof(Config, max_message_bytes), 1024, 16777216},
        /* 64 KiB holds a few replies; 1 GiB is far past any sane backlog. */
        {"limits", "max_output_bytes", SETTING_UINT, offsetof(Config, max_output_bytes), 65536, 1073741824},
        {"limits", "max_connections", SETTING_UINT, offsetof(Config, max_connections), 1, 1000000},
        {"limits", "max_connections_per_uid", SETTING_UINT, offsetof(Config, max_connections_per_uid), 1,
         1000000},
        {"limits", "max_allocations_per_process", SETTING_UINT,
         offsetof(Config, max_allocations_per_process), 1, 1000000},
        {"limits", "max_tracked_processes", SETTING_UINT, offsetof(Config, max_tracked_processes), 1,
         10000000},
        {"limits", "max_tracked_processes_per_uid", SETTING_UINT,
         offsetof(Config, max_tracked_processes_per_uid), 1, 10000000},
        /* The same bounds as max_output_bytes; the relation check keeps it >= that. */
        {"limits", "max_output_bytes_per_uid", SETTING_UINT, offsetof(Config, max_output_bytes_per_uid),
         65536, 1073741824},
        {"limits", "admin_connections", SETTING_UINT, offsetof(Config, admin_connections), 0, 999999},
        /* A day: past that an idle connection is not an agent thinking. */
        {"limits", "idle_timeout_sec", SETTING_SECONDS, offsetof(Config, idle_timeout_usec), 0, 86400},
        /* A week: no model call runs that long without a report. */
        {"limits", "allocation_idle_timeout_sec", SETTING_SECONDS,
         offsetof(Config, allocation_idle_timeout_usec), 1, 604800},
        {"journal", "log_granted", SETTING_BOOL, offsetof(Config, journal_log_granted), 0, 0},
        /* Past an hour, a summary of suppressed events comes too late to help anyone. */
        {"journal", "rate_limit_interval_sec", SETTING_SECONDS,
         offsetof(Config, journal_rate_limit_interval_usec), 0, 3600},
        /* A million entries at ~35 us of journald CPU each is already 35 s of CPU per interval. */
        {"journal", "rate_limit_burst", SETTING_UINT, offsetof(Config, journal_rate_limit_burst), 0,
         1000000},
};

static const char *const log_level_names[] = {
        [LOG_LEVEL_ERR] = "err",   [LOG_LEVEL_WARNING] = "warning", [LOG_LEVEL_NOTICE] = "notice",
        [LOG_LEVEL_INFO] = "info", [LOG_LEVEL_DEBUG] = "debug",
};

const char *log_level_to_string(LogLevel l) {
        if ((size_t)l >= ELEMENTSOF(log_level_names))
                return NULL;
        return log_level_names[l];
}

int config_init_defaults(Config *c) {
        assert(c);

        *c = (Config){
                .default_estimate = 4000,
                .max_request_tokens = 200000,
                .warn_permille = 1500,
                .hard_permille = 2000,
                .log_level = LOG_LEVEL_INFO,
                .global = {.window_tokens = {2000000, 20000000, 100000000}, .in_flight_tokens = 1000000},
                .process = {.window_tokens = {500000, 5000000, 0}, .in_flight_tokens = 400000},
                .max_message_bytes = 65536,
                .max_output_bytes = 1048576,
                .max_connections = 1024,
                .max_connections_per_uid = 128,
                .max_allocations_per_process = 64,
                .max_tracked_processes = 4096,
                /* A quarter: one user's sleeping processes cannot fill the table for everyone. */
                .max_tracked_processes_per_uid = 1024,
                /* 128 connections of one uid each near max_output_bytes pinned 115 MiB; a uid's
                 * readers together get 8 replies' worth of the per-connection bound. */
                .max_output_bytes_per_uid = 8 * 1048576,
                /* budgetctl and a few admin tools must always get in, however full. */
                .admin_connections = 8,
                /* Well above an agent's think time between tasks (minutes); libtokenbudget
                 * reconnects on its own when an idle handle was closed. */
                .idle_timeout_usec = 900 * USEC_PER_SEC,
                /* Well above a long model call (a local model writing 8k tokens at 5 tokens/s
                 * takes under half an hour) with no report in between. */
                .allocation_idle_timeout_usec = 3600 * USEC_PER_SEC,
                .journal_log_granted = false,
                .journal_rate_limit_interval_usec = 10 * USEC_PER_SEC,
                .journal_rate_limit_burst = 20,
        };
        c->socket_path = strdup(DEFAULT_SOCKET_PATH);
        if (!c->socket_path)
                return -ENOMEM;
        return 0;
}

void config_done(Config *c) {
        if (!c)
                return;
        free(c->socket_path);
        c->socket_path = NULL;
}

static void *field(Config *c, const Setting *s) {
        return (char *)c + s->offset;
}

static const void *field_const(const Config *c, const Setting *s) {
        return (const char *)c + s->offset;
}

/* ---- error collection ---- */

typedef struct ConfigError {
        unsigned line;
        size_t seq; /* keeps errors of one line in the order found */
        char *message;
} ConfigError;

typedef struct Errors {
        const char *filename;
        ConfigError *items;
        size_t n, allocated;
        bool oom;
} Errors;

static void errors_done(Errors *e) {
        for (size_t i = 0; i < e->n; i++)
                free(e->items[i].message);
        free(e->items);
        e->items = NULL;
        e->n = e->allocated = 0;
}

static void errors_add(Errors *e, unsigned line, const char *format, ...)
        __attribute__((format(printf, 3, 4)));
static void errors_add(Errors *e, unsigned line, const char *format, ...) {
        char *message;
        va_list ap;
        int r;

        if (e->n == e->allocated) {
                size_t allocated = e->allocated ? e->allocated * 2 : 8;
                ConfigError *items = reallocarray(e->items, allocated, sizeof(*items));
                if (!items) {
                        e->oom = true;
                        return;
                }
                e->items = items;
                e->allocated = allocated;
        }

        va_start(ap, format);
        r = vsnprintf(NULL, 0, format, ap);
        va_end(ap);
        message = r >= 0 ? malloc((size_t)r + 1) : NULL;
        if (!message) {
                e->oom = true;
                return;
        }
        va_start(ap, format);
        vsnprintf(message, (size_t)r + 1, format, ap);
        va_end(ap);
        e->items[e->n] = (ConfigError){.line = line, .seq = e->n, .message = message};
        e->n++;
}

static int error_compare(const void *a, const void *b) {
        const ConfigError *x = a, *y = b;

        if (x->line != y->line)
                return x->line < y->line ? -1 : 1;
        return x->seq < y->seq ? -1 : x->seq > y->seq;
}

/* Joins the errors, sorted by line, into "FILE:LINE: message\n" lines. */
static char *errors_join(Errors *e) {
        char *buf = NULL;
        size_t size = 0;
        FILE *f;

        qsort(e->items, e->n, sizeof(e->items[0]), error_compare);
        f = open_memstream(&buf, &size);
        if (!f)
                return NULL;
        for (size_t i = 0; i < e->n; i++)
                fprintf(f, "%s:%u: %s\n", e->filename, e->items[i].line, e->items[i].message);
        if (fclose(f) != 0) {
                free(buf);
                return NULL;
        }
        return buf;
}

/* ---- lexical pre-pass ---- */

typedef struct Lexer {
        const char *p;
        unsigned line;
        FILE *out;
        Errors *errors;
} Lexer;

static bool is_name_start(char ch) {
        return (ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || ch == '*';
}

static bool is_name_char(char ch) {
        return is_name_start(ch) || (ch >= '0' && ch <= '9') || ch == '-' || ch == '_';
}

static bool is_digit(char ch) {
        return ch >= '0' && ch <= '9';
}

/* Copies n bytes to the output, counting lines. */
static void lexer_copy(Lexer *l, size_t n) {
        for (size_t i = 0; i < n; i++)
                if (l->p[i] == '\n')
                        l->line++;
        fwrite(l->p, 1, n, l->out);
        l->p += n;
}

static size_t span_until_eol(const char *p) {
        return strcspn(p, "\n");
}

static size_t span_block_comment(const char *p) {
        const char *end = strstr(p + 2, "*/");
        return end ? (size_t)(end + 2 - p) : strlen(p);
}

static size_t span_string(const char *p) {
        size_t i = 1;

        while (p[i] && p[i] != '"')
                i += (p[i] == '\\' && p[i + 1]) ? 2 : 1;
        return p[i] ? i + 1 : i;
}

/* A number-like token: digits, letters, dots, and a sign after an exponent. */
static size_t span_number(const char *p) {
        size_t i = (*p == '-' || *p == '+') ? 1 : 0;
        bool hex = p[i] == '0' && (p[i + 1] == 'x' || p[i + 1] == 'X');

        for (; p[i]; i++) {
                if (is_name_char(p[i]) && p[i] != '-')
                        continue;
                if (p[i] == '.')
                        continue;
                if (!hex && i > 0 && (p[i] == '-' || p[i] == '+') && (p[i - 1] == 'e' || p[i - 1] == 'E'))
                        continue;
                break;
        }
        return i;
}

static int digit_value(char ch, unsigned base) {
        if (ch >= '0' && ch <= '9')
                return ch - '0';
        if (base == 16 && ch >= 'a' && ch <= 'f')
                return ch - 'a' + 10;
        if (base == 16 && ch >= 'A' && ch <= 'F')
                return ch - 'A' + 10;
        return -1;
}

/* Parses libconfig's integer syntax ([-+]?[0-9]+ or 0x[0-9a-fA-F]+, then
 * optionally L or LL), saturating at the 64-bit limits. Returns false for
 * anything else (floats, garbage), which is left to libconfig. */
static bool parse_integer_literal(const char *t, size_t n, long long *ret) {
        size_t i = 0, end = n;
        unsigned base = 10;
        bool negative = false;
        unsigned long long v = 0, limit;

        if (end > 0 && t[end - 1] == 'L')
                end--;
        if (end > 0 && t[end - 1] == 'L')
                end--;
        if (t[0] == '-' || t[0] == '+') {
                negative = t[0] == '-';
                i = 1;
        } else if (end > 2 && t[0] == '0' && (t[1] == 'x' || t[1] == 'X')) {
                base = 16;
                i = 2;
        }
        if (i >= end)
                return false;

        limit = negative ? (unsigned long long)LLONG_MAX + 1 : (unsigned long long)LLONG_MAX;
        for (; i < end; i++) {
                int d = digit_value(t[i], base);
                if (d < 0)
                        return false;
                v = v > (limit - (unsigned)d) / base ? limit : v * base + (unsigned)d;
        }
        if (negative)
                *ret = v > (unsigned long long)LLONG_MAX ? LLONG_MIN : -(long long)v;
        else
                *ret = (long long)v;
        return true;
}

static void lexer_number(Lexer *l) {
        size_t n = span_number(l->p);
        long long v;

        if (!parse_integer_literal(l->p, n, &v)) {
                lexer_copy(l, n); /* a float, or garbage libconfig will report */
                return;
        }
        fprintf(l->out, "%lldL", v);
        l->p += n;
}

static void lexer_directive(Lexer *l) {
        size_t n = span_until_eol(l->p);

        if (strncmp(l->p, "@include", 8) == 0 && !is_name_char(l->p[8])) {
                errors_add(l->errors, l->line,
                           "@include is not supported: the configuration must be a single file");
                /* Blank the directive so libconfig goes on to check the rest. */
                for (size_t i = 0; i < n; i++)
                        fputc(' ', l->out);
                l->p += n;
                return;
        }
        lexer_copy(l, 1); /* libconfig reports the stray '@' */
}

/* Where libconfig's integer and float patterns can start: 5, -5, .5, -.5 */
static bool is_number_start(const char *p) {
        if (*p == '-' || *p == '+')
                p++;
        return is_digit(p[0]) || (p[0] == '.' && is_digit(p[1]));
}

static void lexer_step(Lexer *l) {
        const char *p = l->p;

        if (*p == '#' || (p[0] == '/' && p[1] == '/'))
                lexer_copy(l, span_until_eol(p));
        else if (p[0] == '/' && p[1] == '*')
                lexer_copy(l, span_block_comment(p));
        else if (*p == '"')
                lexer_copy(l, span_string(p));
        else if (*p == '@')
                lexer_directive(l);
        else if (is_name_start(*p)) {
                size_t n = 1;
                while (is_name_char(p[n]))
                        n++;
                lexer_copy(l, n);
        } else if (is_number_start(p))
                lexer_number(l);
        else
                lexer_copy(l, 1);
}

/* Returns the text to hand to libconfig, or NULL on allocation failure. */
static char *prepare_text(const char *text, Errors *errors) {
        char *buf = NULL;
        size_t size = 0;
        Lexer l = {.p = text, .line = 1, .errors = errors};

        l.out = open_memstream(&buf, &size);
        if (!l.out)
                return NULL;
        while (*l.p)
                lexer_step(&l);
        if (fclose(l.out) != 0) {
                free(buf);
                return NULL;
        }
        return buf;
}

/* ---- values ---- */

static const char *type_name(int type) {
        switch (type) {
        case CONFIG_TYPE_GROUP:
                return "a group";
        case CONFIG_TYPE_INT:
        case CONFIG_TYPE_INT64:
                return "an integer";
        case CONFIG_TYPE_FLOAT:
                return "a float";
        case CONFIG_TYPE_STRING:
                return "a string";
        case CONFIG_TYPE_BOOL:
                return "a boolean";
        case CONFIG_TYPE_ARRAY:
                return "an array";
        case CONFIG_TYPE_LIST:
                return "a list";
        default:
                return "an unknown type";
        }
}

/* Copies s for a message: at most QUOTE_MAX_BYTES, unprintable bytes as '?'. */
static void quote(const char *s, char buf[static QUOTE_MAX_BYTES + 4]) {
        size_t i;

        for (i = 0; s[i] && i < QUOTE_MAX_BYTES; i++)
                buf[i] = (s[i] >= 0x20 && s[i] < 0x7f) ? s[i] : '?';
        strcpy(buf + i, s[i] ? "..." : "");
}

typedef struct Context {
        Config *config;
        Errors *errors;
        unsigned lines[ELEMENTSOF(settings)]; /* where each setting was set; 0 if not */
        bool invalid[ELEMENTSOF(settings)];   /* set in the file, but refused */
} Context;

static bool check_type(Context *ctx, const config_setting_t *cs, const char *path, bool number_ok,
                       int type_ok, const char *expected) {
        int type = config_setting_type(cs);

        if (type == type_ok || (number_ok && (type == CONFIG_TYPE_INT || type == CONFIG_TYPE_INT64)))
                return true;
        errors_add(ctx->errors, config_setting_source_line(cs), "%s must be %s, got %s", path, expected,
                   type_name(type));
        return false;
}

/* An integer in [s->min, s->max], for SETTING_UINT and SETTING_SECONDS. */
static int parse_uint(Context *ctx, const Setting *s, const config_setting_t *cs, const char *path,
                      uint64_t *ret) {
        unsigned line = config_setting_source_line(cs);
        long long v;

        if (!check_type(ctx, cs, path, true, CONFIG_TYPE_INT64, "an integer"))
                return -EINVAL;
        v = config_setting_get_int64(cs);
        if (v < 0 || (uint64_t)v < s->min || (uint64_t)v > s->max) {
                /* The pre-pass saturates literals beyond 64 bits at the limits. */
                const char *beyond = v == LLONG_MAX ? " or more" : v == LLONG_MIN ? " or less" : "";
                errors_add(ctx->errors, line, "%s must be between %" PRIu64 " and %" PRIu64 ", got %lld%s",
                           path, s->min, s->max, v, beyond);
                return -EINVAL;
        }
        *ret = (uint64_t)v;
        return 0;
}

static int apply_uint(Context *ctx, const Setting *s, const config_setting_t *cs, const char *path) {
        return parse_uint(ctx, s, cs, path, (uint64_t *)field(ctx->config, s));
}

static int apply_seconds(Context *ctx, const Setting *s, const config_setting_t *cs, const char *path) {
        uint64_t v;
        int r;

        /* The bounds keep v * USEC_PER_SEC far from overflowing. */
        assert(s->max <= UINT64_MAX / USEC_PER_SEC);
        r = parse_uint(ctx, s, cs, path, &v);
        if (r < 0)
                return r;
        *(uint64_t *)field(ctx->config, s) = v * USEC_PER_SEC;
        return 0;
}

static int apply_bool(Context *ctx, const Setting *s, const config_setting_t *cs, const char *path) {
        if (!check_type(ctx, cs, path, false, CONFIG_TYPE_BOOL, "a boolean (true or false)"))
                return -EINVAL;
        *(bool *)field(ctx->config, s) = config_setting_get_bool(cs) != 0;
        return 0;
}

/* The shortest text that reads back as v: "0.99", not "0.98999999999999999". */
static void format_double(double v, char buf[static 32]) {
        for (int precision = 1; precision <= 17; precision++) {
                snprintf(buf, 32, "%.*g", precision, v);
                if (strtod(buf, NULL) == v)
                        return;
        }
}

static int apply_multiplier(Context *ctx, const Setting *s, const config_setting_t *cs, const char *path) {
        double v;

        if (!check_type(ctx, cs, path, true, CONFIG_TYPE_FLOAT, "a number"))
                return -EINVAL;
        v = config_setting_type(cs) == CONFIG_TYPE_FLOAT ? config_setting_get_float(cs)
                                                         : (double)config_setting_get_int64(cs);
        if (!(v >= MULTIPLIER_MIN_PERMILLE / 1000.0 && v <= MULTIPLIER_MAX_PERMILLE / 1000.0)) {
                char text[32];
                format_double(v, text);
                errors_add(ctx->errors, config_setting_source_line(cs),
                           "%s must be between 1.0 and 5.0, got %s", path, text);
                return -EINVAL;
        }
        /* Round to nearest; v is positive here, so no libm needed. */
        *(uint32_t *)field(ctx->config, s) = (uint32_t)(v * 1000.0 + 0.5);
        return 0;
}

static int apply_log_level(Context *ctx, const Setting *s, const config_setting_t *cs, const char *path) {
        const char *v;
        char q[QUOTE_MAX_BYTES + 4];

        if (!check_type(ctx, cs, path, false, CONFIG_TYPE_STRING, "a string"))
                return -EINVAL;
        v = config_setting_get_string(cs);
        if (!v)
                return -ENOMEM; /* libconfig could not copy it */
        for (size_t i = 0; i < ELEMENTSOF(log_level_names); i++)
                if (log_level_names[i] && strcmp(v, log_level_names[i]) == 0) {
                        *(LogLevel *)field(ctx->config, s) = (LogLevel)i;
                        return 0;
                }
        quote(v, q);
        errors_add(ctx->errors, config_setting_source_line(cs),
                   "%s must be one of err, warning, notice, info, debug, got '%s'", path, q);
        return -EINVAL;
}

static int apply_socket(Context *ctx, const Setting *s, const config_setting_t *cs, const char *path) {
        unsigned line = config_setting_source_line(cs);
        const char *v;
        char q[QUOTE_MAX_BYTES + 4], *copy;

        if (!check_type(ctx, cs, path, false, CONFIG_TYPE_STRING, "a string"))
                return -EINVAL;
        v = config_setting_get_string(cs);
        if (!v)
                return -ENOMEM; /* libconfig could not copy it */
        quote(v, q);
        if (v[0] != '/') {
                errors_add(ctx->errors, line, "%s must be an absolute path, got '%s'", path, q);
                return -EINVAL;
        }
        if (strlen(v) >= SOCKET_PATH_SIZE) {
                errors_add(ctx->errors, line, "%s must be shorter than %zu bytes, got %zu bytes: '%s'", path,
                           SOCKET_PATH_SIZE, strlen(v), q);
                return -EINVAL;
        }
        copy = strdup(v);
        if (!copy)
                return -ENOMEM;
        free(*(char **)field(ctx->config, s));
        *(char **)field(ctx->config, s) = copy;
        return 0;
}

static int apply_setting(Context *ctx, size_t index, const config_setting_t *cs) {
        const Setting *s = &settings[index];
        char path[128];
        int r;

        snprintf(path, sizeof(path), "%s%s%s", s->group ?: "", s->group ? "." : "", s->name);
        switch (s->kind) {
        case SETTING_SOCKET:
                r = apply_socket(ctx, s, cs, path);
                break;
        case SETTING_UINT:
                r = apply_uint(ctx, s, cs, path);
                break;
        case SETTING_MULTIPLIER:
                r = apply_multiplier(ctx, s, cs, path);
                break;
        case SETTING_LOG_LEVEL:
                r = apply_log_level(ctx, s, cs, path);
                break;
        case SETTING_BOOL:
                r = apply_bool(ctx, s, cs, path);
                break;
        case SETTING_SECONDS:
                r = apply_seconds(ctx, s, cs, path);
                break;
        default:
                assert(!"unknown setting kind");
                r = -EINVAL;
        }
        if (r >= 0)
                ctx->lines[index] = config_setting_source_line(cs);
        else
                ctx->invalid[index] = true;
        return r;
}

/* ---- the tree walk ---- */

static bool streq_ptr(const char *a, const char *b) {
        return (!a && !b) || (a && b && strcmp(a, b) == 0);
}

static int setting_find(const char *group, const char *name) {
        for (size_t i = 0; i < ELEMENTSOF(settings); i++)
                if (streq_ptr(settings[i].group, group) && strcmp(settings[i].name, name) == 0)
                        return (int)i;
        return -1;
}

static bool is_group_name(const char *name) {
        for (size_t i = 0; i < ELEMENTSOF(settings); i++)
                if (settings[i].group && strcmp(settings[i].group, name) == 0)
                        return true;
        return false;
}

static int walk_group(Context *ctx, const config_setting_t *group, const char *group_name) {
        for (int i = 0; i < config_setting_length(group); i++) {
                const config_setting_t *cs = config_setting_get_elem(group, (unsigned)i);
                const char *name = cs ? config_setting_name(cs) : NULL;
                unsigned line;
                int index;

                /* libconfig 1.5 leaves a setting nameless when copying its name
                 * failed: out of memory, not a configuration error. */
                if (!name)
                        return -ENOMEM;
                line = config_setting_source_line(cs);

                if (!group_name && is_group_name(name)) {
                        if (!check_type(ctx, cs, name, false, CONFIG_TYPE_GROUP, "a group"))
                                continue;
                        if (walk_group(ctx, cs, name) == -ENOMEM)
                                return -ENOMEM;
                        continue;
                }
                index = setting_find(group_name, name);
                if (index < 0) {
                        errors_add(ctx->errors, line, "unknown setting '%s%s%s'", group_name ?: "",
                                   group_name ? "." : "", name);
                        continue;
                }
                if (apply_setting(ctx, (size_t)index, cs) == -ENOMEM)
                        return -ENOMEM;
        }
        return 0;
}

/*
 * Whether a relation between settings a and b can be checked: a value the file
 * got wrong was not stored, and comparing its default with the other value
 * would report a problem the file does not have. *ret_line is the line to
 * blame: a's if the file set it, else b's.
 */
static bool relation_checkable(const Context *ctx, const char *group, const char *a, const char *b,
                               unsigned *ret_line) {
        int ia = setting_find(group, a), ib = setting_find(group, b);

        assert(ia >= 0 && ib >= 0);
        if (ctx->invalid[ia] || ctx->invalid[ib])
                return false;
        *ret_line = ctx->lines[ia] ?: ctx->lines[ib];
        return true;
}

static void check_relations(Context *ctx) {
        const Config *c = ctx->config;
        unsigned line;

        if (relation_checkable(ctx, NULL, "warn_multiplier", "hard_multiplier", &line) &&
            c->warn_permille > c->hard_permille)
                errors_add(ctx->errors, line,
                           "warn_multiplier (%g) must not be greater than hard_multiplier (%g)",
                           c->warn_permille / 1000.0, c->hard_permille / 1000.0);
        /* Equal would let one uid take every slot and lock every other user out. */
        if (relation_checkable(ctx, "limits", "max_connections_per_uid", "max_connections", &line) &&
            c->max_connections_per_uid >= c->max_connections)
                errors_add(ctx->errors, line,
                           "limits.max_connections_per_uid (%" PRIu64
                           ") must be less than limits.max_connections (%" PRIu64 ")",
                           c->max_connections_per_uid, c->max_connections);
        if (relation_checkable(ctx, "limits", "admin_connections", "max_connections", &line) &&
            c->admin_connections >= c->max_connections)
                errors_add(ctx->errors, line,
                           "limits.admin_connections (%" PRIu64
                           ") must be less than limits.max_connections (%" PRIu64 ")",
                           c->admin_connections, c->max_connections);
        if (relation_checkable(ctx, "limits", "max_output_bytes_per_uid", "max_output_bytes", &line) &&
            c->max_output_bytes_per_uid < c->max_output_bytes)
                errors_add(ctx->errors, line,
                           "limits.max_output_bytes_per_uid (%" PRIu64
                           ") must not be less than limits.max_output_bytes (%" PRIu64 ")",
                           c->max_output_bytes_per_uid, c->max_output_bytes);
}

/* Parses the prepared text into ctx->config, adding any errors. */
static int parse_prepared(Context *ctx, const char *prepared) {
        config_t lc;
        int r = 0;

        config_init(&lc);
        if (!config_read_string(&lc, prepared)) {
                errors_add(ctx->errors, (unsigned)config_error_line(&lc), "%s",
                           config_error_text(&lc) ?: "syntax error");
                config_destroy(&lc);
                return 0;
        }
        r = walk_group(ctx, config_root_setting(&lc), NULL);
        config_destroy(&lc);
        if (r < 0)
                return r;
        check_relations(ctx);
        return 0;
}

/* A NUL byte ends the text for libconfig and our lexer alike, so whatever
 * follows it would silently not be read: a file zero-filled by a power loss
 * would become the built-in defaults. Refuse it, naming where it is. */
static void check_no_nul(const char *data, size_t size, Errors *errors) {
        const char *nul = memchr(data, 0, size);
        unsigned line = 1;

        if (!nul)
                return;
        for (const char *p = data; p < nul; p++)
                line += *p == '\n';
        errors_add(errors, line,
                   "NUL byte at offset %zu: not a text file (zero-filled after a crash or power loss?); "
                   "nothing of it was applied",
                   (size_t)(nul - data));
}

int config_parse(const char *text, const char *filename, Config *ret, char **ret_errors) {
        assert(text);
        return config_parse_buffer(text, strlen(text), filename, ret, ret_errors);
}

int config_parse_buffer(const char *text, size_t size, const char *filename, Config *ret,
                        char **ret_errors) {
        Errors errors = {.filename = filename};
        Context ctx = {.errors = &errors};
        Config c;
        char *prepared;
        int r;

        assert(text || size == 0);
        assert(filename);
        assert(ret);

        if (ret_errors)
                *ret_errors = NULL;
        r = config_init_defaults(&c);
        if (r < 0)
                return r;
        ctx.config = &c;

        check_no_nul(text, size, &errors);
        if (errors.n == 0) {
                /* The lexer wants a terminated string; the caller's bytes need not be one. */
                char *copy = strndup(text ?: "", size);

                prepared = copy ? prepare_text(copy, &errors) : NULL;
                r = prepared ? parse_prepared(&ctx, prepared) : -ENOMEM;
                free(prepared);
                free(copy);
        }
        if (r >= 0 && errors.oom)
                r = -ENOMEM;
        if (r >= 0 && errors.n > 0) {
                r = -EINVAL;
                if (ret_errors) {
                        *ret_errors = errors_join(&errors);
                        if (!*ret_errors)
                                r = -ENOMEM;
                }
        }
        errors_done(&errors);
        if (r < 0) {
                config_done(&c);
                return r;
        }
        *ret = c;
        return 0;
}

/* ---- formatting ---- */

static void format_string(FILE *f, const char *s) {
        fputc('"', f);
        for (; *s; s++) {
                unsigned char ch = (unsigned char)*s;
                if (ch == '"' || ch == '\\')
                        fprintf(f, "\\%c", ch);
                else if (ch < 0x20 || ch == 0x7f)
                        fprintf(f, "\\x%02x", ch);
                else
                        fputc(ch, f);
        }
        fputc('"', f);
}

/* 1500 -> "1.5", 2000 -> "2.0", 1234 -> "1.234": exact, and what a person writes. */
static void format_permille(FILE *f, uint32_t permille) {
        unsigned frac = permille % 1000, digits = 3;

        if (frac == 0) {
                fprintf(f, "%u.0", permille / 1000);
                return;
        }
        while (frac % 10 == 0) {
                frac /= 10;
                digits--;
        }
        fprintf(f, "%u.%0*u", permille / 1000, (int)digits, frac);
}

static void format_setting(FILE *f, const Config *c, const Setting *s) {
        const void *p = field_const(c, s);

        fprintf(f, "%s%s = ", s->group ? "        " : "", s->name);
        switch (s->kind) {
        case SETTING_SOCKET:
                format_string(f, *(char *const *)p ?: "");
                break;
        case SETTING_UINT: {
                uint64_t v = *(const uint64_t *)p;
                /* libconfig itself needs the L suffix past 32 bits. */
                fprintf(f, "%" PRIu64 "%s", v, v > INT_MAX ? "L" : "");
                break;
        }
        case SETTING_MULTIPLIER:
                format_permille(f, *(const uint32_t *)p);
                break;
        case SETTING_LOG_LEVEL:
                format_string(f, log_level_to_string(*(const LogLevel *)p) ?: "");
                break;
        case SETTING_BOOL:
                fputs(*(const bool *)p ? "true" : "false", f);
                break;
        case SETTING_SECONDS:
                /* Parsed from whole seconds, so exact. */
                fprintf(f, "%" PRIu64, *(const uint64_t *)p / USEC_PER_SEC);
                break;
        }
        fputs(";\n", f);
}

char *config_format(const Config *c) {
        const char *group = NULL;
        char *buf = NULL;
        size_t size = 0;
        FILE *f;

        assert(c);

        f = open_memstream(&buf, &size);
        if (!f)
                return NULL;
        for (size_t i = 0; i < ELEMENTSOF(settings); i++) {
                const Setting *s = &settings[i];

                if (!streq_ptr(group, s->group)) {
                        if (group)
                                fputs("};\n", f);
                        fprintf(f, "%s = {\n", s->group);
                        group = s->group;
                }
                format_setting(f, c, s);
        }
        if (group)
                fputs("};\n", f);
        if (fclose(f) != 0) {
                free(buf);
                return NULL;
        }
        return buf;
}

static bool ledger_limits_equal(const LedgerLimits *a, const LedgerLimits *b) {
        for (size_t w = 0; w < _LEDGER_WINDOW_MAX; w++)
                if (a->window_tokens[w] != b->window_tokens[w])
                        return false;
        return a->in_flight_tokens == b->in_flight_tokens;
}

bool config_equal(const Config *a, const Config *b) {
        assert(a);
        assert(b);

        return streq_ptr(a->socket_path, b->socket_path) && a->default_estimate == b->default_estimate &&
               a->max_request_tokens == b->max_request_tokens && a->warn_permille == b->warn_permille &&
               a->hard_permille == b->hard_permille && a->log_level == b->log_level &&
               ledger_limits_equal(&a->global, &b->global) &&
               ledger_limits_equal(&a->process, &b->process) &&
               a->max_message_bytes == b->max_message_bytes && a->max_output_bytes == b->max_output_bytes &&
               a->max_connections == b->max_connections &&
               a->max_connections_per_uid == b->max_connections_per_uid &&
               a->max_allocations_per_process == b->max_allocations_per_process &&
               a->max_tracked_processes == b->max_tracked_processes &&
               a->max_tracked_processes_per_uid == b->max_tracked_processes_per_uid &&
               a->max_output_bytes_per_uid == b->max_output_bytes_per_uid &&
               a->admin_connections == b->admin_connections &&
               a->idle_timeout_usec == b->idle_timeout_usec &&
               a->allocation_idle_timeout_usec == b->allocation_idle_timeout_usec &&
               a->journal_log_granted == b->journal_log_granted &&
               a->journal_rate_limit_interval_usec == b->journal_rate_limit_interval_usec &&
               a->journal_rate_limit_burst == b->journal_rate_limit_burst;
}
