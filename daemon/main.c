/* SPDX-License-Identifier: MIT */
/*
 * tokenbudgetd's entry point: command line, configuration, event loop. All
 * the work happens in server.c and dispatch.c; this file only wires them.
 * Exit status: 0 success, 1 runtime failure, 2 usage or configuration error.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include <event2/event.h>

#include "config.h"
#include "log.h"
#include "config-file.h"
#include "macro.h"
#include "manager.h"
#include "tb-config.h"

#define DEFAULT_CONFIG_FILE "/etc/tokenbudget/tokenbudgetd.conf"
#define DEFAULT_STATE_DIR   "/var/lib/tokenbudget"

enum { EXIT_RUNTIME = 1, EXIT_USAGE = 2 };

typedef struct Args {
        const char *config_path;
        const char *socket_path;
        const char *check_config_path;
        const char *state_dir; /* NULL: not given */
} Args;

static void help(void) {
        printf("Usage: tokenbudgetd [OPTIONS]\n"
               "\n"
               "The LLM token budget daemon: agents request, report and release token\n"
               "allocations over Varlink (io.tokenbudget.agent); budgetctl(1) shows the state.\n"
               "\n"
               "  -c, --config FILE        read the configuration from FILE\n"
               "                           (default: tokenbudgetd.conf in $CONFIGURATION_DIRECTORY,\n"
               "                           else " DEFAULT_CONFIG_FILE "; while it\n"
               "                           does not exist, the built-in defaults, and SIGHUP\n"
               "                           reads it once it does)\n"
               "  -s, --socket PATH        listen on PATH instead of the configured socket\n"
               "      --state-dir DIR      keep the durable ledger (tokenbudget.db) in DIR instead of\n"
               "                           the configured state_directory (default: $STATE_DIRECTORY,\n"
               "                           else " DEFAULT_STATE_DIR "); '' keeps everything in memory\n"
               "      --check-config FILE  validate FILE, print every error (and warning) as FILE:LINE: "
               "message\n"
               "  -h, --help               show this help\n"
               "      --version            show the version\n"
               "\n"
               "Exit status: 0 success, 1 runtime failure, 2 usage or configuration error.\n"
               "See tokenbudgetd(8).\n");
}

static int parse_args(int argc, char **argv, Args *args) {
        enum { ARG_CHECK_CONFIG = 0x100, ARG_VERSION, ARG_STATE_DIR };
        static const struct option options[] = {
                {"config", required_argument, NULL, 'c'},
                {"socket", required_argument, NULL, 's'},
                {"check-config", required_argument, NULL, ARG_CHECK_CONFIG},
                {"state-dir", required_argument, NULL, ARG_STATE_DIR},
                {"help", no_argument, NULL, 'h'},
                {"version", no_argument, NULL, ARG_VERSION},
                {},
        };
        int c;

        while ((c = getopt_long(argc, argv, "c:s:h", options, NULL)) >= 0) {
                switch (c) {
                case 'c':
                        args->config_path = optarg;
                        break;
                case 's':
                        args->socket_path = optarg;
                        break;
                case ARG_CHECK_CONFIG:
                        args->check_config_path = optarg;
                        break;
                case ARG_STATE_DIR:
                        args->state_dir = optarg;
                        break;
                case 'h':
                        help();
                        exit(EXIT_SUCCESS);
                case ARG_VERSION:
                        printf("tokenbudgetd " TB_VERSION "\n");
                        exit(EXIT_SUCCESS);
                default:
                        fprintf(stderr, "Try 'tokenbudgetd --help'.\n");
                        return -EINVAL;
                }
        }
        if (optind < argc) {
                fprintf(stderr, "tokenbudgetd: unexpected argument '%s'. Try 'tokenbudgetd --help'.\n",
                        argv[optind]);
                return -EINVAL;
        }
        if (args->socket_path && args->socket_path[0] != '/') {
                fprintf(stderr, "tokenbudgetd: --socket needs an absolute path, got '%s'.\n",
                        args->socket_path);
                return -EINVAL;
        }
        if (args->state_dir && args->state_dir[0] && args->state_dir[0] != '/') {
                fprintf(stderr,
                        "tokenbudgetd: --state-dir needs an absolute path (or '' for memory only), got "
                        "'%s'.\n",
                        args->state_dir);
                return -EINVAL;
        }
        return 0;
}

/* Where the durable ledger lives: --state-dir, else the configuration's
 * state_directory, else systemd's StateDirectory= ($STATE_DIRECTORY, the
 * first of a colon-separated list), else DEFAULT_STATE_DIR. "": memory only. */
static const char *state_dir_resolve(const Args *args, const Config *c) {
        static char *env_dir;
        const char *dir = getenv("STATE_DIRECTORY");

        if (args->state_dir)
                return args->state_dir;
        if (c->state_directory)
                return c->state_directory;
        if (dir && dir[0] == '/') {
                free(env_dir);
                env_dir = strndup(dir, strcspn(dir, ":"));
                if (env_dir)
                        return env_dir;
        }
        return DEFAULT_STATE_DIR;
}

static void print_errors(const char *errors, const char *prefix) {
        const char *line = errors ? errors : "";

        while (*line) {
                const char *end = strchrnul(line, '\n');
                fprintf(stderr, "%s%.*s\n", prefix, (int)(end - line), line);
                line = *end ? end + 1 : end;
        }
}

/* Warnings (names that are not known) do not make a file invalid: they go to
 * stderr, and the exit status stays 0. */
static int check_config(const char *path) {
        _cleanup_free_ char *errors = NULL, *warnings = NULL;
        Config c;

        if (config_load_file(path, &c, &errors, &warnings) < 0) {
                print_errors(errors, "");
                return EXIT_USAGE;
        }
        print_errors(warnings, "");
        config_done(&c);
        printf("%s: OK\n", path);
        return EXIT_SUCCESS;
}

static void log_warnings(const char *warnings) {
        for (const char *line = warnings ?: ""; *line;) {
                const char *end = strchrnul(line, '\n');
                log_warning("%.*s", (int)(end - line), line);
                line = *end ? end + 1 : end;
        }
}

/* The default file: in the directory systemd's ConfigurationDirectory= names
 * ($CONFIGURATION_DIRECTORY, /etc/tokenbudget for the unit we ship), else
 * DEFAULT_CONFIG_FILE. Lives as long as the process. */
static const char *default_config_file(void) {
        static char *path;
        const char *dir = getenv("CONFIGURATION_DIRECTORY");

        if (path)
                return path;
        /* systemd passes a colon-separated list when the unit names several. */
        if (!dir || dir[0] != '/')
                return DEFAULT_CONFIG_FILE;
        if (asprintf(&path, "%.*s/tokenbudgetd.conf", (int)strcspn(dir, ":"), dir) < 0)
                return path = NULL;
        return path;
}

/* The configuration to start with: --config FILE must exist; the default file
 * is optional (built-in defaults when it does not exist, read on reload once
 * it does). */
static int load_config(const char *path, Config *ret, const char **ret_used_path, bool *ret_optional) {
        _cleanup_free_ char *errors = NULL, *warnings = NULL;
        int r;

        *ret_optional = !path;
        if (!path) {
                path = default_config_file();
                if (!path)
                        return -ENOMEM;
                *ret_used_path = path;
                if (access(path, F_OK) < 0 && errno == ENOENT)
                        return config_init_defaults(ret);
        }
        *ret_used_path = path;
        r = config_load_file(path, ret, &errors, &warnings);
        if (r < 0) {
                print_errors(errors, "<3>");
                log_error("invalid configuration in %s; not starting", path);
        }
        log_warnings(warnings);
        return r;
}

/* Every connection is a descriptor: take all the kernel allows this process
 * (the soft limit is often 1024, the hard one far higher), and say how many
 * that is. */
static unsigned raise_fd_limit(void) {
        struct rlimit rl;

        if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
                return 1024;
        if (rl.rlim_cur < rl.rlim_max) {
                struct rlimit want = {.rlim_cur = rl.rlim_max, .rlim_max = rl.rlim_max};
                if (setrlimit(RLIMIT_NOFILE, &want) == 0)
                        rl.rlim_cur = rl.rlim_max;
        }
        return rl.rlim_cur > UINT_MAX ? UINT_MAX : (unsigned)rl.rlim_cur;
}

int main(int argc, char **argv) {
        Args args = {};
        const char *config_path = NULL;
        struct event_base *base = NULL;
        _cleanup_free_ char *errors = NULL;
        Manager *manager = NULL;
        bool config_optional;
        unsigned fd_limit;
        Config config;
        int r;

        if (parse_args(argc, argv, &args) < 0)
                return EXIT_USAGE;
        if (args.check_config_path)
                return check_config(args.check_config_path);

        if (load_config(args.config_path, &config, &config_path, &config_optional) < 0)
                return EXIT_USAGE;
        fd_limit = raise_fd_limit();
        if (config_check_fd_limit(&config, fd_limit,
                                  config_optional && access(config_path, F_OK) < 0 ? NULL : config_path,
                                  &errors) < 0) {
                print_errors(errors, "<3>");
                log_error("not starting");
                config_done(&config);
                return EXIT_USAGE;
        }
        /* A peer that disconnects mid-write must not kill the daemon. */
        signal(SIGPIPE, SIG_IGN);

        base = event_base_new();
        if (!base) {
                log_error("cannot create the event loop");
                config_done(&config);
                return EXIT_RUNTIME;
        }
        r = manager_new(base, &config, config_path, config_optional, fd_limit,
                        state_dir_resolve(&args, &config), &manager);
        if (r == -EBADE) {
                /* The store said why (which file, what to do). */
                config_done(&config);
                event_base_free(base);
                return EXIT_RUNTIME;
        }
        if (r < 0) {
                log_error("cannot set up: %s", strerror(-r));
                config_done(&config);
                event_base_free(base);
                return EXIT_RUNTIME;
        }
        r = manager_run(manager, args.socket_path);
        manager_free(manager);
        event_base_free(base);
        return r < 0 ? EXIT_RUNTIME : EXIT_SUCCESS;
}
