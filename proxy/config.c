/* SPDX-License-Identifier: MIT */
#define _GNU_SOURCE
/*
 * Defaults, the libconfig file and the diagnostics of tokenbudget-proxy.
 * Every setting is checked for its type and range; unknown settings are
 * errors; each error names the file and line, as the daemon's do. See
 * config.h and conf/tokenbudget-proxy.conf.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libconfig.h>

#include "config.h"

static int log_level = 6;

void proxy_log_set_level(int level) {
        log_level = level;
}

void proxy_log(int level, const char *fmt, ...) {
        char line[2048];
        va_list ap;

        if (level > log_level)
                return;
        va_start(ap, fmt);
        vsnprintf(line, sizeof(line), fmt, ap);
        va_end(ap);
        /* One write per line, so lines of concurrent writers do not mix. */
        fprintf(stderr, "<%d>tokenbudget-proxy: %s\n", level, line);
}

void proxy_config_init(ProxyConfig *c) {
        *c = (ProxyConfig){
                .max_body_bytes = 8 * 1024 * 1024,
                .max_header_bytes = 64 * 1024,
                .max_response_bytes = 16 * 1024 * 1024,
                .idle_timeout_sec = 60,
                .max_connections = 256,
                .connect_timeout_msec = 10000,
                .default_max_output = 4096,
                .report_tokens = 256,
                .report_interval_msec = 500,
                .daemon_idle_connections = 8,
                .log_level = 6,
        };
}

void proxy_config_done(ProxyConfig *c) {
        for (size_t i = 0; i < c->n_listeners; i++) {
                free(c->listeners[i].listen);
                free(c->listeners[i].upstream);
        }
        free(c->listeners);
        free(c->daemon_socket);
        proxy_config_init(c);
}

int proxy_config_add_listener(ProxyConfig *c, const char *listen, const char *upstream, ApiKind api,
                              ListenerConfig **ret) {
        ListenerConfig *l;

        if (c->n_listeners >= PROXY_LISTENERS_MAX)
                return -E2BIG;
        l = realloc(c->listeners, (c->n_listeners + 1) * sizeof(*l));
        if (!l)
                return -ENOMEM;
        c->listeners = l;
        l = &c->listeners[c->n_listeners];
        *l = (ListenerConfig){.api = api, .fail = PROXY_FAIL_CLOSED};
        l->listen = strdup(listen);
        l->upstream = strdup(upstream);
        if (!l->listen || !l->upstream) {
                free(l->listen);
                free(l->upstream);
                return -ENOMEM;
        }
        c->n_listeners++;
        if (ret)
                *ret = l;
        return 0;
}

typedef struct Setting {
        const char *name;
        size_t offset;
        uint64_t min, max;
} Setting;

static const Setting top_ints[] = {
        {"default_max_output", offsetof(ProxyConfig, default_max_output), 1, UINT64_C(1000000000000)},
        {"daemon_idle_connections", offsetof(ProxyConfig, daemon_idle_connections), 0, 1024},
};
static const Setting limit_ints[] = {
        {"max_body_bytes", offsetof(ProxyConfig, max_body_bytes), 1024, UINT64_C(1) << 32},
        {"max_header_bytes", offsetof(ProxyConfig, max_header_bytes), 1024, 1024 * 1024},
        {"max_response_bytes", offsetof(ProxyConfig, max_response_bytes), 1024, UINT64_C(1) << 32},
        {"idle_timeout_sec", offsetof(ProxyConfig, idle_timeout_sec), 1, 86400},
        {"max_connections", offsetof(ProxyConfig, max_connections), 1, 65536},
        {"connect_timeout_msec", offsetof(ProxyConfig, connect_timeout_msec), 1, 600000},
};
static const Setting report_ints[] = {
        {"tokens", offsetof(ProxyConfig, report_tokens), 1, UINT64_C(1000000000)},
        {"interval_msec", offsetof(ProxyConfig, report_interval_msec), 1, 3600000},
};

static int fail_at(const char *path, const config_setting_t *s, char **ret_error, const char *fmt, ...)
        _printf_(4, 5);
static int fail_at(const char *path, const config_setting_t *s, char **ret_error, const char *fmt, ...) {
        char what[512];
        va_list ap;

        va_start(ap, fmt);
        vsnprintf(what, sizeof(what), fmt, ap);
        va_end(ap);
        if (asprintf(ret_error, "%s:%u: %s", path, s ? config_setting_source_line(s) : 0, what) < 0)
                *ret_error = NULL;
        return -EINVAL;
}

static const Setting *find_setting(const Setting *table, size_t n, const char *name) {
        for (size_t i = 0; i < n; i++)
                if (strcmp(table[i].name, name) == 0)
                        return &table[i];
        return NULL;
}

static int read_int(ProxyConfig *c, const char *path, const char *group, const Setting *row,
                    const config_setting_t *s, char **ret_error) {
        int type = config_setting_type(s);
        long long v;

        if (type != CONFIG_TYPE_INT && type != CONFIG_TYPE_INT64)
                return fail_at(path, s, ret_error, "%s%s%s must be an integer", group, *group ? "." : "",
                               row->name);
        v = config_setting_get_int64(s);
        if (v < 0 || (uint64_t)v < row->min || (uint64_t)v > row->max)
                return fail_at(path, s, ret_error,
                               "%s%s%s = %lld is out of range (%" PRIu64 "..%" PRIu64 ")", group,
                               *group ? "." : "", row->name, v, row->min, row->max);
        *(uint64_t *)((char *)c + row->offset) = (uint64_t)v;
        return 0;
}

static int read_group(ProxyConfig *c, const char *path, const config_setting_t *g, const Setting *table,
                      size_t n, char **ret_error) {
        if (!config_setting_is_group(g))
                return fail_at(path, g, ret_error, "%s must be a group { ... }", config_setting_name(g));
        for (int i = 0; i < config_setting_length(g); i++) {
                const config_setting_t *s = config_setting_get_elem(g, (unsigned)i);
                const Setting *row = find_setting(table, n, config_setting_name(s));
                if (!row)
                        return fail_at(path, s, ret_error, "unknown setting %s.%s", config_setting_name(g),
                                       config_setting_name(s));
                int r = read_int(c, path, config_setting_name(g), row, s, ret_error);
                if (r < 0)
                        return r;
        }
        return 0;
}

static int read_string(const char *path, const config_setting_t *s, const char *what, const char **ret,
                       char **ret_error) {
        if (config_setting_type(s) != CONFIG_TYPE_STRING)
                return fail_at(path, s, ret_error, "%s must be a string", what);
        *ret = config_setting_get_string(s);
        return 0;
}

static int read_bool(const char *path, const config_setting_t *s, const char *what, bool *ret,
                     char **ret_error) {
        if (config_setting_type(s) != CONFIG_TYPE_BOOL)
                return fail_at(path, s, ret_error, "%s must be true or false", what);
        *ret = config_setting_get_bool(s);
        return 0;
}

static int read_listener(ProxyConfig *c, const char *path, const config_setting_t *g, char **ret_error) {
        const char *listen = NULL, *upstream = NULL, *api = "auto", *fail = "closed";
        bool forward_malformed = false, allow_model_substitution = false;
        ListenerConfig *l;
        int r, kind;

        if (!config_setting_is_group(g))
                return fail_at(path, g, ret_error,
                               "each entry of listeners must be a group { listen; upstream; ... }");
        for (int i = 0; i < config_setting_length(g); i++) {
                const config_setting_t *s = config_setting_get_elem(g, (unsigned)i);
                const char *name = config_setting_name(s);

                if (strcmp(name, "listen") == 0)
                        r = read_string(path, s, "listen", &listen, ret_error);
                else if (strcmp(name, "upstream") == 0)
                        r = read_string(path, s, "upstream", &upstream, ret_error);
                else if (strcmp(name, "api") == 0)
                        r = read_string(path, s, "api", &api, ret_error);
                else if (strcmp(name, "fail") == 0)
                        r = read_string(path, s, "fail", &fail, ret_error);
                else if (strcmp(name, "forward_malformed") == 0)
                        r = read_bool(path, s, name, &forward_malformed, ret_error);
                else if (strcmp(name, "allow_model_substitution") == 0)
                        r = read_bool(path, s, name, &allow_model_substitution, ret_error);
                else
                        r = fail_at(path, s, ret_error, "unknown listener setting %s", name);
                if (r < 0)
                        return r;
        }
        if (!listen || !upstream)
                return fail_at(path, g, ret_error, "a listener needs listen and upstream");
        kind = api_kind_from_string(api);
        if (kind < 0)
                return fail_at(path, config_setting_get_member(g, "api"), ret_error,
                               "api = \"%s\": expected \"auto\", \"openai\", \"ollama\" or \"anthropic\"",
                               api);
        if (strcmp(fail, "closed") != 0 && strcmp(fail, "open") != 0)
                return fail_at(path, config_setting_get_member(g, "fail"), ret_error,
                               "fail = \"%s\": expected \"closed\" or \"open\"", fail);
        r = proxy_config_add_listener(c, listen, upstream, kind, &l);
        if (r == -E2BIG)
                return fail_at(path, g, ret_error, "more than %d listeners", PROXY_LISTENERS_MAX);
        if (r < 0)
                return r;
        l->fail = strcmp(fail, "open") == 0 ? PROXY_FAIL_OPEN : PROXY_FAIL_CLOSED;
        l->forward_malformed = forward_malformed;
        l->allow_model_substitution = allow_model_substitution;
        return 0;
}

static int read_log_level(ProxyConfig *c, const char *path, const config_setting_t *s, char **ret_error) {
        static const char *const names[] = {"err", "warning", "notice", "info", "debug"};
        const char *v = NULL;
        int r = read_string(path, s, "log_level", &v, ret_error);

        if (r < 0)
                return r;
        for (size_t i = 0; i < ELEMENTSOF(names); i++)
                if (strcmp(v, names[i]) == 0) {
                        c->log_level = 3 + (int)i;
                        return 0;
                }
        return fail_at(path, s, ret_error,
                       "log_level = \"%s\": expected err, warning, notice, info or debug", v);
}

static int read_top(ProxyConfig *c, const char *path, const config_setting_t *s, char **ret_error) {
        const char *name = config_setting_name(s), *v = NULL;
        const Setting *row;
        int r;

        if (strcmp(name, "listeners") == 0) {
                if (!config_setting_is_list(s) && !config_setting_is_array(s))
                        return fail_at(path, s, ret_error, "listeners must be a list ( { ... }, ... )");
                for (int i = 0; i < config_setting_length(s); i++) {
                        r = read_listener(c, path, config_setting_get_elem(s, (unsigned)i), ret_error);
                        if (r < 0)
                                return r;
                }
                return 0;
        }
        if (strcmp(name, "limits") == 0)
                return read_group(c, path, s, limit_ints, ELEMENTSOF(limit_ints), ret_error);
        if (strcmp(name, "report") == 0)
                return read_group(c, path, s, report_ints, ELEMENTSOF(report_ints), ret_error);
        if (strcmp(name, "log_level") == 0)
                return read_log_level(c, path, s, ret_error);
        if (strcmp(name, "daemon_socket") == 0) {
                r = read_string(path, s, name, &v, ret_error);
                if (r < 0)
                        return r;
                free(c->daemon_socket);
                c->daemon_socket = *v ? strdup(v) : NULL;
                return *v && !c->daemon_socket ? -ENOMEM : 0;
        }
        row = find_setting(top_ints, ELEMENTSOF(top_ints), name);
        if (!row)
                return fail_at(path, s, ret_error, "unknown setting %s", name);
        return read_int(c, path, "", row, s, ret_error);
}

int proxy_config_load(ProxyConfig *c, const char *path, char **ret_error) {
        config_t cf;
        int r = 0;

        config_init(&cf);
        if (!config_read_file(&cf, path)) {
                if (config_error_type(&cf) == CONFIG_ERR_FILE_IO)
                        r = asprintf(ret_error, "%s: cannot read the file: %m", path) < 0 ? -ENOMEM : -errno;
                else
                        r = asprintf(ret_error, "%s:%d: %s",
                                     config_error_file(&cf) ? config_error_file(&cf) : path,
                                     config_error_line(&cf), config_error_text(&cf)) < 0
                                    ? -ENOMEM
                                    : -EINVAL;
                config_destroy(&cf);
                return r < 0 ? r : -EINVAL;
        }
        config_setting_t *root = config_root_setting(&cf);
        for (int i = 0; i < config_setting_length(root) && r >= 0; i++)
                r = read_top(c, path, config_setting_get_elem(root, (unsigned)i), ret_error);
        config_destroy(&cf);
        return r;
}

void proxy_config_print(const ProxyConfig *c, FILE *f) {
        static const char *const levels[] = {"err", "warning", "notice", "info", "debug"};

        fprintf(f, "daemon_socket = \"%s\";\n", c->daemon_socket ? c->daemon_socket : "");
        fprintf(f, "log_level = \"%s\";\n",
                c->log_level >= 3 && c->log_level <= 7 ? levels[c->log_level - 3] : "info");
        for (size_t i = 0; i < ELEMENTSOF(top_ints); i++)
                fprintf(f, "%s = %" PRIu64 ";\n", top_ints[i].name,
                        *(const uint64_t *)((const char *)c + top_ints[i].offset));
        fprintf(f, "limits = {\n");
        for (size_t i = 0; i < ELEMENTSOF(limit_ints); i++)
                fprintf(f, "        %s = %" PRIu64 ";\n", limit_ints[i].name,
                        *(const uint64_t *)((const char *)c + limit_ints[i].offset));
        fprintf(f, "};\nreport = {\n");
        for (size_t i = 0; i < ELEMENTSOF(report_ints); i++)
                fprintf(f, "        %s = %" PRIu64 ";\n", report_ints[i].name,
                        *(const uint64_t *)((const char *)c + report_ints[i].offset));
        fprintf(f, "};\nlisteners = (\n");
        for (size_t i = 0; i < c->n_listeners; i++) {
                const ListenerConfig *l = &c->listeners[i];
                fprintf(f,
                        "        { listen = \"%s\"; upstream = \"%s\"; api = \"%s\"; fail = \"%s\"; "
                        "forward_malformed = %s; allow_model_substitution = %s; }%s\n",
                        l->listen, l->upstream, api_kind_to_string(l->api),
                        l->fail == PROXY_FAIL_OPEN ? "open" : "closed",
                        l->forward_malformed ? "true" : "false",
                        l->allow_model_substitution ? "true" : "false", i + 1 < c->n_listeners ? "," : "");
        }
        fprintf(f, ");\n");
}
