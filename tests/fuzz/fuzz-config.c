/* SPDX-License-Identifier: MIT */
/*
 * libFuzzer entry point for the configuration parser: hands the raw input to
 * config_parse_buffer() as the contents of "fuzz.conf", exactly as the daemon
 * hands it a file it read. Besides "no crash, no leak, no undefined
 * behaviour" it checks the parser's promises: on success there is no error
 * text, and config_format() of the result parses again (with config_parse())
 * to an equal configuration that formats to the same text; config_pack() of
 * it unpacks to an equal one, before and after config_resolve_names() (with
 * a lookup that knows some names, not others and fails on the rest), whose
 * warnings are "fuzz.conf:LINE: warning: message" lines; on failure the
 * error text is non-empty and every line is "fuzz.conf:LINE: message" with
 * LINE within the input; an input holding a NUL byte always fails, naming the
 * first one's offset. The raw input is also handed to config_unpack(), which
 * must refuse it (-EPROTO) or give a Config that frees cleanly. It does not
 * exercise file I/O (the parser has none) nor libconfig itself, which is not
 * instrumented.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"

#define FUZZ_FILENAME "fuzz.conf"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
const char *__lsan_default_suppressions(void);

/* libconfig 1.5's lexer leaks the text of a string token that a syntax error
 * follows (`"" ^`, or a string left open: `"z"\xaf`): a few bytes per broken
 * file, in a library we do not fuzz. Only the allocations of its lexer and
 * its string buffer are ignored; anything else leaked, including the
 * settings of a missing config_destroy(), is still reported. */
const char *__lsan_default_suppressions(void) {
        return "leak:libconfig_yylex\nleak:strbuf_append\n";
}

static void fuzz_check(bool ok, const char *what, const char *detail) {
        if (ok)
                return;
        fprintf(stderr, "fuzz-config: %s\n%s\n", what, detail ?: "");
        abort();
}

/* 1 + the number of newlines: the last line a message may name. */
static unsigned long fuzz_lines(const char *text, size_t size) {
        unsigned long n = 1;

        for (size_t i = 0; i < size; i++)
                n += text[i] == '\n';
        return n;
}

/* Every line of text is "fuzz.conf:LINE: message\n", 1 <= LINE <= max_line,
 * message non-empty. */
static void fuzz_check_lines(const char *text, unsigned long max_line) {
        const size_t prefix_len = strlen(FUZZ_FILENAME ":");

        for (const char *p = text; *p;) {
                const char *eol = strchr(p, '\n');
                unsigned long line = 0;
                const char *q;

                fuzz_check(eol, "text does not end with a newline", text);
                fuzz_check(strncmp(p, FUZZ_FILENAME ":", prefix_len) == 0, "a line without the file name",
                           text);
                q = p + prefix_len;
                fuzz_check(*q >= '1' && *q <= '9', "a line without a line number", text);
                for (; *q >= '0' && *q <= '9' && line <= max_line; q++)
                        line = line * 10 + (unsigned long)(*q - '0');
                fuzz_check(line <= max_line, "a line names a line past the end of the input", text);
                fuzz_check(q[0] == ':' && q[1] == ' ' && q + 2 < eol, "a line is not 'LINE: message'", text);
                p = eol + 1;
        }
}

static void fuzz_check_errors(const char *errors, unsigned long max_line) {
        fuzz_check(errors && *errors, "failure without an error text", NULL);
        fuzz_check_lines(errors, max_line);
}

/* A lookup that knows names whose length is a multiple of 3, does not know
 * those one longer, and fails for the rest. */
static int fuzz_lookup(bool group, const char *name, uint32_t *ret_id, void *userdata) {
        size_t n = strlen(name);

        (void)userdata;
        if (n % 3 == 0) {
                *ret_id = (uint32_t)n + group;
                return 0;
        }
        return n % 3 == 1 ? -ENOENT : -EIO;
}

/* What config_pack() makes unpacks to an equal Config, where it was written included. */
static void fuzz_check_pack(const Config *c) {
        Config u;
        char *buf;
        size_t size;

        fuzz_check(config_pack(c, &buf, &size) == 0, "config_pack() failed", NULL);
        fuzz_check(config_unpack(buf, size, &u) == 0, "config_unpack() refused config_pack()'s bytes", NULL);
        fuzz_check(config_equal(c, &u), "config_unpack() gave another config", NULL);
        fuzz_check(u.admin_group_line == c->admin_group_line && u.n_rules == c->n_rules,
                   "config_unpack() lost lines or rules", NULL);
        for (size_t i = 0; i < c->n_rules; i++)
                fuzz_check(u.rules[i].line == c->rules[i].line, "config_unpack() lost a rule's line", NULL);
        config_done(&u);
        free(buf);
}

/* Resolving never fails here; its warnings are well-formed lines. */
static void fuzz_check_resolve(Config *c, unsigned long max_line) {
        char *warnings = NULL;

        fuzz_check(config_resolve_names(c, FUZZ_FILENAME, fuzz_lookup, NULL, &warnings) == 0,
                   "config_resolve_names() failed", NULL);
        if (warnings) {
                fuzz_check(*warnings, "an empty warnings text", NULL);
                fuzz_check_lines(warnings, max_line);
                fuzz_check(strstr(warnings, ": warning: "), "a warning without 'warning:'", warnings);
        }
        free(warnings);
}

/* A configuration that parsed must survive config_format() and back unchanged. */
static void fuzz_check_round_trip(const Config *c) {
        char *text = config_format(c), *again_text, *errors = NULL;
        Config again;
        int r;

        fuzz_check(text, "config_format() failed", NULL);
        r = config_parse(text, FUZZ_FILENAME, &again, &errors);
        fuzz_check(r == 0, "config_format() output does not parse", errors);
        fuzz_check(!errors, "success with an error text", errors);
        fuzz_check(config_equal(c, &again), "config_format() output parses to another config", text);
        again_text = config_format(&again);
        fuzz_check(again_text && strcmp(text, again_text) == 0, "config_format() is not stable", text);
        free(again_text);
        config_done(&again);
        free(text);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        const char *text = (const char *)data, *nul = memchr(data, 0, size);
        char *errors = (char *)"unset";
        Config c;
        int r;

        /* Under ASan an allocation failure aborts, so -ENOMEM cannot happen. */
        r = config_unpack(text, size, &c);
        fuzz_check(r == 0 || r == -EPROTO, "config_unpack() returned neither 0 nor -EPROTO", NULL);
        if (r == 0)
                config_done(&c);

        r = config_parse_buffer(text, size, FUZZ_FILENAME, &c, &errors);
        fuzz_check(r == 0 || r == -EINVAL, "config_parse_buffer() returned neither 0 nor -EINVAL", NULL);
        if (r == 0) {
                fuzz_check(!nul, "an input with a NUL byte parsed", NULL);
                fuzz_check(!errors, "success with an error text", errors);
                fuzz_check_round_trip(&c);
                fuzz_check_pack(&c);
                fuzz_check_resolve(&c, fuzz_lines(text, size));
                fuzz_check_pack(&c);
                config_done(&c);
                return 0;
        }

        fuzz_check_errors(errors, fuzz_lines(text, size));
        if (nul) {
                char expected[64];

                snprintf(expected, sizeof(expected), "NUL byte at offset %zu:", (size_t)(nul - text));
                fuzz_check(strstr(errors, expected), "a NUL byte not reported at its offset", errors);
        }
        free(errors);
        return 0;
}
