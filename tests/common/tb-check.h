/* SPDX-License-Identifier: MIT */
/*
 * The one Check runner of every test binary (unit, property, integration):
 * runs a suite and says what it did. A test that cannot check what it is for
 * here (not root, no heap statistics) calls tb_check_skip() and returns; one
 * that checked something but had to leave a part out calls
 * tb_check_skip_part(). Check itself has no "skipped": the runner counts
 * both across Check's forked tests, prints "SKIP test: reason" for each and
 * a last line "NAME: N run: P passed, F failed, S skipped", and exits 77
 * (meson's SKIP) when no test of the run could check anything, 1 when one
 * failed, 0 otherwise. Check's environment variables select what runs
 * (CK_RUN_CASE, CK_INCLUDE_TAGS=root for the root-only cases, tagged with
 * tb_check_tag_root(); CK_FORK=no for a debugger; CK_VERBOSITY=verbose).
 * It does not decide whether a skip is right: the test does.
 */
#pragma once

#include <check.h>
#include <stdbool.h>

/* Runs s, reports, and returns the exit status (0, 1 or 77) for main(). */
int tb_check_main(Suite *s);

/* The current test checked nothing it is for: counted as skipped. Return
 * after it. */
void tb_check_skip(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* The current test left a part out: it still counts as passed if the rest
 * passes, and the part is listed in the summary. */
void tb_check_skip_part(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Whether the test runs as root; if not, records tb_check_skip("what: needs
 * root ..."): `if (!tb_check_need_root("what")) return;`. */
bool tb_check_need_root(const char *what);

/* Like tb_check_need_root(), for a part: tb_check_skip_part() when not root. */
bool tb_check_need_root_part(const char *what);

/* Tags tc "root": every test in it needs root (CK_INCLUDE_TAGS=root runs only
 * those, CK_EXCLUDE_TAGS=root all others). */
void tb_check_tag_root(TCase *tc);
