/* SPDX-License-Identifier: MIT */
/*
 * The shared Check runner (see tb-check.h). Check forks every test by
 * default, so the skip counts and reasons live in one anonymous shared page
 * mapped before the first fork: a child's tb_check_skip() is seen by the
 * runner after the child is gone. Without CK_FORK the same page is simply
 * the process's own memory.
 */
#define _GNU_SOURCE
#include "tb-check.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

/* Reasons kept for the summary; more are counted but cut short. */
#define TB_CHECK_REASONS_BYTES 16384

typedef struct TbCheckShared {
        unsigned n_skipped, n_parts;
        size_t reasons_len;
        char reasons[TB_CHECK_REASONS_BYTES];
} TbCheckShared;

static TbCheckShared *shared;

__attribute__((format(printf, 2, 0))) static void record(bool part, const char *fmt, va_list ap) {
        const char *test = tcase_name();
        char reason[512];
        int n;

        vsnprintf(reason, sizeof(reason), fmt, ap);
        printf("%s %s: %s\n", part ? "SKIP (part)" : "SKIP", test ? test : "?", reason);
        fflush(stdout);
        if (!shared)
                return; /* called outside tb_check_main(): printed only */
        __atomic_add_fetch(part ? &shared->n_parts : &shared->n_skipped, 1, __ATOMIC_SEQ_CST);
        if (shared->reasons_len >= sizeof(shared->reasons) - 1)
                return;
        n = snprintf(shared->reasons + shared->reasons_len, sizeof(shared->reasons) - shared->reasons_len,
                     "  %s %s: %s\n", part ? "part not run in" : "skipped", test ? test : "?", reason);
        if (n > 0)
                shared->reasons_len += (size_t)n;
        if (shared->reasons_len >= sizeof(shared->reasons))
                shared->reasons_len = sizeof(shared->reasons) - 1;
}

void tb_check_skip(const char *fmt, ...) {
        va_list ap;

        va_start(ap, fmt);
        record(false, fmt, ap);
        va_end(ap);
}

void tb_check_skip_part(const char *fmt, ...) {
        va_list ap;

        va_start(ap, fmt);
        record(true, fmt, ap);
        va_end(ap);
}

bool tb_check_need_root(const char *what) {
        if (geteuid() == 0)
                return true;
        tb_check_skip("%s: needs root (to act as other uids); run the tests as root", what);
        return false;
}

bool tb_check_need_root_part(const char *what) {
        if (geteuid() == 0)
                return true;
        tb_check_skip_part("%s: needs root (to act as other uids); run the tests as root", what);
        return false;
}

void tb_check_tag_root(TCase *tc) {
        tcase_set_tags(tc, "root");
}

int tb_check_main(Suite *s) {
        const char *name = program_invocation_short_name;
        SRunner *sr = srunner_create(s);
        int run, failed, skipped, parts, passed;

        shared = mmap(NULL, sizeof(*shared), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
        if (shared == MAP_FAILED) {
                fprintf(stderr, "%s: mmap of the runner's shared page: %s\n", name, strerror(errno));
                srunner_free(sr);
                return EXIT_FAILURE;
        }
        memset(shared, 0, sizeof(*shared));

        srunner_run_all(sr, CK_ENV); /* CK_VERBOSITY=verbose lists every test */
        run = srunner_ntests_run(sr);
        failed = srunner_ntests_failed(sr);
        srunner_free(sr);
        skipped = (int)__atomic_load_n(&shared->n_skipped, __ATOMIC_SEQ_CST);
        parts = (int)__atomic_load_n(&shared->n_parts, __ATOMIC_SEQ_CST);
        passed = run - failed - skipped;
        if (passed < 0)
                passed = 0; /* a test that skipped and then failed anyway */

        if (skipped + parts > 0)
                printf("%s: what was not checked here:\n%.*s", name, (int)shared->reasons_len,
                       shared->reasons);
        printf("%s: %d run: %d passed, %d failed, %d skipped", name, run, passed, failed, skipped);
        if (parts > 0)
                printf(" (and %d part%s of passed tests not run)", parts, parts == 1 ? "" : "s");
        printf("\n");
        fflush(stdout);
        (void)munmap(shared, sizeof(*shared));
        shared = NULL;

        if (failed > 0)
                return EXIT_FAILURE;
        if (run == 0 || skipped >= run)
                return 77; /* nothing was checked: meson's SKIP */
        return EXIT_SUCCESS;
}
