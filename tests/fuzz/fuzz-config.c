/* SPDX-License-Identifier: MIT */
/*
 * libFuzzer entry point for the configuration parser: hands the raw input to
 * config_parse_buffer() as the contents of "fuzz.conf", exactly as the daemon
 * hands it a file it read. Besides "no crash, no leak, no undefined
 * behaviour" it checks the parser's promises: on success there is no error
 * text, and config_format() of the result parses again (with config_parse())
 * to an equal configuration that formats to the same text; on failure the
 * error text is non-empty and every line is "fuzz.conf:LINE: message" with
 * LINE within the input; an input holding a NUL byte always fails, naming the
 * first one's offset. It does not exercise file I/O (the parser has none) nor
 * libconfig itself, which is not instrumented.
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

/* Every line "fuzz.conf:LINE: message\n", 1 <= LINE <= max_line, message non-empty. */
static void fuzz_check_errors(const char *errors, unsigned long max_line) {
        const size_t prefix_len = strlen(FUZZ_FILENAME ":");
        const char *p = errors;

        fuzz_check(errors && *errors, "failure without an error text", NULL);
        while (*p) {
                const char *eol = strchr(p, '\n');
                unsigned long line = 0;
                const char *q;

                fuzz_check(eol, "error text does not end with a newline", errors);
                fuzz_check(strncmp(p, FUZZ_FILENAME ":", prefix_len) == 0,
                           "error line without the file name", errors);
                q = p + prefix_len;
                fuzz_check(*q >= '1' && *q <= '9', "error line without a line number", errors);
                for (; *q >= '0' && *q <= '9' && line <= max_line; q++)
                        line = line * 10 + (unsigned long)(*q - '0');
                fuzz_check(line <= max_line, "error names a line past the end of the input", errors);
                fuzz_check(q[0] == ':' && q[1] == ' ' && q + 2 < eol, "error line is not 'LINE: message'",
                           errors);
                p = eol + 1;
        }
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
        r = config_parse_buffer(text, size, FUZZ_FILENAME, &c, &errors);
        fuzz_check(r == 0 || r == -EINVAL, "config_parse_buffer() returned neither 0 nor -EINVAL", NULL);
        if (r == 0) {
                fuzz_check(!nul, "an input with a NUL byte parsed", NULL);
                fuzz_check(!errors, "success with an error text", errors);
                fuzz_check_round_trip(&c);
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
