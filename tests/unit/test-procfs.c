/* SPDX-License-Identifier: MIT */
/*
 * Tests for daemon/core/procfs.c, procfs_parse_stat(): rows of
 * /proc/PID/stat text, each with the comm and start time it must give or
 * -EINVAL. A process picks its own comm (prctl(PR_SET_NAME)), so most rows
 * are hostile comms: spaces, parentheses and ") " inside, newlines and
 * control characters, 15 and more bytes, none at all. The rest are the
 * kernel's text cut short or malformed, and a real line captured from
 * /proc/self/stat (embedded: unit tests read no files of the system). Each
 * row is parsed from a heap copy of exactly its length, so a sanitizer build
 * sees any read past the end. The fuzz target is tests/fuzz/fuzz-procfs.c.
 *
 * Then procfs_parse_cgroup(): /proc/PID/cgroup text of a cgroup2-only host,
 * of a hybrid host (this machine's, captured), of a legacy host, of a
 * legacy host where something mounted cgroup2 elsewhere, and garbage.
 */
#include <check.h>
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "procfs.h"
#include "tb-check.h"

#define ELEMENTSOF(x) (sizeof(x) / sizeof((x)[0]))

/* Fields 3 (state) to 21 of a real line, and 23 to 52 after the start time. */
#define FIELDS_3_21 "S 1 1234 1234 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0"
#define FIELDS_23_52                                                                                        \
        "9375744 1280 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0 0 0 0 0 0 0 0"
/* A whole line with the given comm and start time (both literal strings). */
#define STAT(comm, start) "1234 (" comm ") " FIELDS_3_21 " " start " " FIELDS_23_52 "\n"

/* Captured from this machine's `cat /proc/self/stat` (Linux 6.x, Debian 12). */
#define REAL_LINE                                                                                           \
        "16972 (cat) R 16937 16937 20280 0 -1 4194304 99 0 0 0 0 0 0 0 20 0 1 0 568131 3133440 413 "        \
        "18446744073709551615 94561518661632 94561518681513 140728975062256 0 0 0 0 0 0 0 0 0 17 0 0 0 0 "  \
        "0 0 94561518697520 94561518699136 94561639718912 140728975063688 140728975063708 "                 \
        "140728975063708 140728975065067 0\n"

/* A byte string with its exact length, so rows can hold NUL bytes. */
#define BYTES(s) (s), (sizeof(s) - 1)

typedef struct Row {
        const char *name;
        const char *text;
        size_t len;
        int ret;          /* 0 or -EINVAL */
        const char *comm; /* when ret == 0 */
        uint64_t start_time;
} Row;

static const Row rows[] = {
        /* comm */
        {"plain", BYTES(STAT("cat", "5000")), 0, "cat", 5000},
        {"real line from /proc/self/stat", BYTES(REAL_LINE), 0, "cat", 568131},
        {"spaces", BYTES(STAT("my agent v2", "7")), 0, "my agent v2", 7},
        {"parentheses", BYTES(STAT("((a)(b))", "7")), 0, "((a)(b))", 7},
        {"only a closing parenthesis", BYTES(STAT(")", "7")), 0, ")", 7},
        {"') ' inside", BYTES(STAT("a) (b", "7")), 0, "a) (b", 7},
        {"a fake stat tail inside", BYTES(STAT("x) S 1 2 3", "7")), 0, "x) S 1 2 3", 7},
        {"a fake start time inside", BYTES(STAT("1 2 3) 99", "7")), 0, "1 2 3) 99", 7},
        {"empty", BYTES(STAT("", "7")), 0, "", 7},
        {"newline", BYTES(STAT("a\nb", "7")), 0, "a?b", 7},
        {"newline and ') ' (a fake second line)", BYTES(STAT("x) S\n1 (y", "7")), 0, "x) S?1 (y", 7},
        {"tab, escape, DEL", BYTES(STAT("\tx\x1b[31m\x7f", "7")), 0, "?x?[31m?", 7},
        {"every control byte is '?'", BYTES(STAT("\x01\x02\x03\x1f", "7")), 0, "????", 7},
        {"NUL byte inside", BYTES(STAT("a\0b", "7")), 0, "a?b", 7},
        {"UTF-8 kept as is", BYTES(STAT("caf\xc3\xa9", "7")), 0, "caf\xc3\xa9", 7},
        {"exactly 15 bytes", BYTES(STAT("abcdefghijklmno", "7")), 0, "abcdefghijklmno", 7},
        {"16 bytes: truncated to 15", BYTES(STAT("abcdefghijklmnop", "7")), 0, "abcdefghijklmno", 7},
        {"64 bytes: truncated to 15",
         BYTES(STAT("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef", "7")), 0,
         "0123456789abcde", 7},
        {"control bytes past 15 do not matter", BYTES(STAT("abcdefghijklmno\n\n", "7")), 0,
         "abcdefghijklmno", 7},

        /* structure */
        {"empty text", BYTES(""), -EINVAL},
        {"no '('", BYTES("1234 cat) " FIELDS_3_21 " 7 " FIELDS_23_52 "\n"), -EINVAL},
        {"no ')'", BYTES("1234 (cat " FIELDS_3_21 " 7 " FIELDS_23_52 "\n"), -EINVAL},
        {"')' before '(' only", BYTES("1234 )cat( " FIELDS_3_21 " 7\n"), -EINVAL},
        {"only '('", BYTES("("), -EINVAL},
        {"only '()'", BYTES("()"), -EINVAL},
        {"cut right after the comm", BYTES("1234 (cat)"), -EINVAL},
        {"cut after the comm's space", BYTES("1234 (cat) "), -EINVAL},
        {"cut after the state", BYTES("1234 (cat) S"), -EINVAL},
        {"cut after field 21", BYTES("1234 (cat) " FIELDS_3_21), -EINVAL},
        {"cut after field 21's space", BYTES("1234 (cat) " FIELDS_3_21 " "), -EINVAL},
        {"cut inside the start time", BYTES("1234 (cat) " FIELDS_3_21 " 50"), -EINVAL},
        {"no space after the comm", BYTES("1234 (cat)S " FIELDS_3_21 " 7 " FIELDS_23_52 "\n"), -EINVAL},
        {"a field missing", BYTES("1234 (cat) S 1 1234 1234 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 7\n"),
         -EINVAL},

        /* the start time, field 22 */
        {"last field, newline after it", BYTES("1234 (cat) " FIELDS_3_21 " 5000\n"), 0, "cat", 5000},
        {"zero", BYTES(STAT("cat", "0")), 0, "cat", 0},
        {"largest uint64_t (20 digits)", BYTES(STAT("cat", "18446744073709551615")), 0, "cat", UINT64_MAX},
        {"uint64_t + 1 (20 digits)", BYTES(STAT("cat", "18446744073709551616")), -EINVAL},
        {"21 digits", BYTES(STAT("cat", "100000000000000000000")), -EINVAL},
        {"30 digits", BYTES(STAT("cat", "123456789012345678901234567890")), -EINVAL},
        {"not a number", BYTES(STAT("cat", "abc")), -EINVAL},
        {"negative", BYTES(STAT("cat", "-1")), -EINVAL},
        {"plus sign", BYTES(STAT("cat", "+1")), -EINVAL},
        {"digits then a letter", BYTES(STAT("cat", "5000x")), -EINVAL},
        {"hexadecimal", BYTES(STAT("cat", "0x10")), -EINVAL},
        {"empty (two spaces)", BYTES("1234 (cat) " FIELDS_3_21 "  " FIELDS_23_52 "\n"), -EINVAL},
        {"tab after it", BYTES("1234 (cat) " FIELDS_3_21 " 5000\t" FIELDS_23_52 "\n"), -EINVAL},
};

/* Parses text from a heap copy of exactly len bytes; comm pre-filled with 'Z'. */
static int parse_exact(const char *text, size_t len, char comm[PROCFS_COMM_MAX], uint64_t *start) {
        char *copy = malloc(len ? len : 1);
        int r;

        ck_assert_ptr_nonnull(copy);
        memcpy(copy, text, len);
        memset(comm, 'Z', PROCFS_COMM_MAX);
        *start = UINT64_C(0xdeadbeef);
        r = procfs_parse_stat(copy, len, comm, start);
        free(copy);
        return r;
}

START_TEST(test_rows) {
        const Row *row = &rows[_i];
        char comm[PROCFS_COMM_MAX];
        uint64_t start;
        int r = parse_exact(row->text, row->len, comm, &start);

        ck_assert_msg(r == row->ret, "row '%s': returned %d, expected %d", row->name, r, row->ret);
        if (r < 0)
                return;
        ck_assert_msg(memchr(comm, 0, PROCFS_COMM_MAX), "row '%s': comm not NUL-terminated", row->name);
        ck_assert_msg(strcmp(comm, row->comm) == 0, "row '%s': comm \"%s\", expected \"%s\"", row->name,
                      comm, row->comm);
        ck_assert_msg(start == row->start_time, "row '%s': start time %" PRIu64 ", expected %" PRIu64,
                      row->name, start, row->start_time);
        for (size_t i = 0; comm[i]; i++)
                ck_assert_msg((unsigned char)comm[i] >= 0x20 && comm[i] != 0x7f,
                              "row '%s': control byte 0x%02x at %zu in comm", row->name,
                              (unsigned char)comm[i], i);
}
END_TEST

/* Every prefix of the real line is invalid until the start time and the
 * separator after it are all there; from then on each parses to the whole
 * value. A read that came back short can never yield a wrong start time. */
START_TEST(test_every_cut) {
        static const char line[] = REAL_LINE;
        const size_t len = sizeof(line) - 1;
        const char *start_field = strstr(line, " 568131 ");
        size_t complete;

        ck_assert_ptr_nonnull(start_field);
        complete = (size_t)(start_field - line) + strlen(" 568131 ");
        for (size_t n = 0; n <= len; n++) {
                char comm[PROCFS_COMM_MAX];
                uint64_t start;
                int r = parse_exact(line, n, comm, &start);

                if (n < complete) {
                        ck_assert_msg(r == -EINVAL,
                                      "cut at %zu of %zu bytes (\"%.*s\"): returned %d, start %" PRIu64, n,
                                      len, (int)n, line, r, start);
                        continue;
                }
                ck_assert_msg(r == 0, "cut at %zu of %zu bytes: returned %d", n, len, r);
                ck_assert_msg(start == 568131 && strcmp(comm, "cat") == 0,
                              "cut at %zu: start %" PRIu64 ", comm %s", n, start, comm);
        }
}
END_TEST

/* ---- /proc/PID/cgroup ---- */

/* Captured from this machine's `cat /proc/self/cgroup` (Debian 12, a
 * hybrid layout: cgroup v1 controllers and name=systemd, cgroup2 on
 * /sys/fs/cgroup/unified). */
#define HYBRID_HERE                                                                                         \
        "9:name=systemd:/\n8:pids:/\n7:blkio:/\n6:freezer:/\n5:devices:/\n"                                 \
        "4:memory:/process_api/9e44ee8d125db46ebbfcd81ab2d8912d\n3:cpuset:/\n2:cpuacct:/\n1:cpu:/\n0::/\n"
/* A hybrid host with systemd as PID 1 keeps both hierarchies in step. */
#define SESSION "/user.slice/user-1000.slice/session-2.scope"
#define HYBRID_SYSTEMD                                                                                      \
        "12:pids:" SESSION "\n5:cpu,cpuacct:" SESSION "\n1:name=systemd:" SESSION "\n0::" SESSION "\n"
#define LEGACY                                                                                              \
        "11:memory:/system.slice/foo.service\n2:cpu,cpuacct:/system.slice/foo.service\n"                    \
        "1:name=systemd:/system.slice/foo.service\n"

typedef struct CgroupRow {
        const char *name;
        const char *text;
        size_t len;
        int ret;
        const char *path;
} CgroupRow;

static const CgroupRow cgroup_rows[] = {
        /* real layouts */
        {"cgroup2 only", BYTES("0::" SESSION "\n"), 0, SESSION},
        {"cgroup2 only, root", BYTES("0::/\n"), 0, "/"},
        {"hybrid, this machine", BYTES(HYBRID_HERE), 0, "/"},
        {"hybrid with systemd", BYTES(HYBRID_SYSTEMD), 0, SESSION},
        {"legacy", BYTES(LEGACY), 0, "/system.slice/foo.service"},
        {"legacy, cgroup2 mounted elsewhere", BYTES("0::/\n" LEGACY), 0, "/system.slice/foo.service"},
        {"hybrid out of step: cgroup2 wins", BYTES("1:name=systemd:/a.service\n0::/b.service\n"), 0,
         "/b.service"},
        {"no newline at the end", BYTES("1:name=systemd:/a.service\n0::/b.service"), 0, "/b.service"},
        {"cgroup2 line first", BYTES("0::/b.service\n1:name=systemd:/a.service\n"), 0, "/b.service"},
        {"name=systemd among controllers", BYTES("3:cpu,name=systemd,memory:/x.service\n"), 0, "/x.service"},
        {"zombie in a removed cgroup", BYTES("0::/system.slice/foo.service (deleted)\n"), 0,
         "/system.slice/foo.service"},
        {"':' inside the path", BYTES("0::/system.slice/a:b.service\n"), 0, "/system.slice/a:b.service"},
        {"outside our cgroup namespace", BYTES("0::/../../x.service\n"), 0, "/../../x.service"},
        {"empty path is the root", BYTES("0::\n"), 0, "/"},
        {"first cgroup2 line wins", BYTES("0::/a.service\n0::/b.service\n"), 0, "/a.service"},
        {"first name=systemd line wins", BYTES("1:name=systemd:/a\n2:name=systemd:/b\n"), 0, "/a"},
        {"garbage lines around", BYTES("hello\n\n::::\n0::/x.service\nworld"), 0, "/x.service"},
        {"hierarchy 0 with controllers (as libsystemd reads it)", BYTES("0:foo:/x.service\n"), 0,
         "/x.service"},

        /* neither line */
        {"empty", BYTES(""), -EINVAL},
        {"newline", BYTES("\n"), -EINVAL},
        {"only v1 controllers", BYTES("11:memory:/x\n2:cpu:/x\n"), -EINVAL},
        {"one colon", BYTES("0:/x.service\n"), -EINVAL},
        {"name=systemdx", BYTES("1:name=systemdx:/x\n"), -EINVAL},
        {"name=systemd in the path only", BYTES("1:cpu:/name=systemd\n"), -EINVAL},
        {"hierarchy 00", BYTES("00::/x\n"), -EINVAL},
        {"relative path", BYTES("0::x.service\n"), -EINVAL},
        {"NUL in the path", BYTES("0::/x\0y\n"), -EINVAL},
        {"NUL skipped, the next line used", BYTES("0::/x\0y\n1:name=systemd:/z\n"), 0, "/z"},
        {"binary", BYTES("\xff\xfe\x00\x01:\x02"), -EINVAL},
};

START_TEST(test_cgroup_rows) {
        const CgroupRow *row = &cgroup_rows[_i];
        char *copy = malloc(row->len ? row->len : 1), *path = NULL;
        int r;

        ck_assert_ptr_nonnull(copy);
        memcpy(copy, row->text, row->len);
        r = procfs_parse_cgroup(copy, row->len, &path);
        free(copy);
        ck_assert_msg(r == row->ret, "row '%s': returned %d, expected %d", row->name, r, row->ret);
        if (r < 0) {
                ck_assert_ptr_null(path);
                return;
        }
        ck_assert_msg(strcmp(path, row->path) == 0, "row '%s': \"%s\", expected \"%s\"", row->name, path,
                      row->path);
        free(path);
}
END_TEST

/* Every prefix of the hybrid text of a systemd host fails or gives an
 * absolute prefix of the real path (a line without its newline is taken as
 * it is: the last line of the kernel's text has one, but the parser cannot
 * tell a cut line from a last one), never bytes from another line; from the
 * first line's end on it always succeeds, and the whole text gives the path. */
START_TEST(test_cgroup_every_cut) {
        static const char text[] = HYBRID_SYSTEMD;
        const size_t len = sizeof(text) - 1;
        const size_t legacy_line_end = (size_t)(strstr(text, "\n0::") - text);

        for (size_t n = 0; n <= len; n++) {
                char *copy = malloc(n ? n : 1), *path = NULL;
                int r;

                ck_assert_ptr_nonnull(copy);
                memcpy(copy, text, n);
                r = procfs_parse_cgroup(copy, n, &path);
                free(copy);
                if (n >= legacy_line_end)
                        ck_assert_msg(r == 0, "cut at %zu: %d", n, r);
                if (r < 0)
                        continue;
                ck_assert_msg(path[0] == '/' && strncmp(path, SESSION, strlen(path)) == 0, "cut at %zu: %s",
                              n, path);
                if (n == len)
                        ck_assert_str_eq(path, SESSION);
                free(path);
        }
}
END_TEST

/* /proc/PID/status: the real uid and gid and the supplementary groups. */
START_TEST(test_status) {
        static const char real[] = "Name:\tbash\nUmask:\t0022\nState:\tS (sleeping)\nTgid:\t4242\n"
                                   "Uid:\t1000\t1001\t1002\t1003\nGid:\t100\t101\t102\t103\nFDSize:\t256\n"
                                   "Groups:\t4 24 27 1000 \nNStgid:\t4242\n";
        static const struct {
                const char *text;
                int r;
                uint32_t uid, gid;
                size_t n;
        } status_rows[] = {
                {real, 0, 1000, 100, 4},
                {"Uid:\t0\t0\t0\t0\nGid:\t0\t0\t0\t0\nGroups:\t\n", 0, 0, 0, 0},
                {"Uid:\t0\nGid:\t0\nGroups:", 0, 0, 0, 0},                  /* no newline at the end */
                {"Gid:\t5\nGroups:\t1\n", -EINVAL, 0, 0, 0},                /* no Uid */
                {"Uid:\t5\nGroups:\t1\n", -EINVAL, 0, 0, 0},                /* no Gid */
                {"Uid:\t5\nGid:\t5\n", -EINVAL, 0, 0, 0},                   /* no Groups */
                {"Uid:\tx\nGid:\t5\nGroups:\n", -EINVAL, 0, 0, 0},          /* not a number */
                {"Uid:\t4294967296\nGid:\t5\nGroups:\n", -EINVAL, 0, 0, 0}, /* past 32 bits */
                {"Uid:\t1\nGid:\t5\nGroups:\t7 x\n", -EINVAL, 0, 0, 0},
                {"XUid:\t1\nUid:\t2\nGid:\t3\nGroups:\t9\n", 0, 2, 3, 1}, /* only at a line's start */
                {"", -EINVAL, 0, 0, 0},
        };

        for (size_t i = 0; i < ELEMENTSOF(status_rows); i++) {
                uint32_t uid = 7, gid = 7, *groups = NULL;
                size_t n = 9;
                int r = procfs_parse_status(status_rows[i].text, strlen(status_rows[i].text), &uid, &gid,
                                            &groups, &n);

                ck_assert_msg(r == status_rows[i].r, "row %zu: %d", i, r);
                if (r < 0) {
                        ck_assert_ptr_null(groups);
                        ck_assert_uint_eq(n, 0);
                        continue;
                }
                ck_assert_msg(uid == status_rows[i].uid && gid == status_rows[i].gid &&
                                      n == status_rows[i].n,
                              "row %zu: %u %u %zu", i, uid, gid, n);
                if (i == 0)
                        ck_assert(groups[0] == 4 && groups[1] == 24 && groups[2] == 27 && groups[3] == 1000);
                free(groups);
        }
}
END_TEST

static Suite *procfs_suite(void) {
        Suite *s = suite_create("procfs");
        TCase *tc = tcase_create("stat");

        tcase_add_loop_test(tc, test_rows, 0, (int)ELEMENTSOF(rows));
        tcase_add_test(tc, test_every_cut);
        suite_add_tcase(s, tc);
        tc = tcase_create("cgroup");
        tcase_add_loop_test(tc, test_cgroup_rows, 0, (int)ELEMENTSOF(cgroup_rows));
        tcase_add_test(tc, test_cgroup_every_cut);
        suite_add_tcase(s, tc);
        tc = tcase_create("status");
        tcase_add_test(tc, test_status);
        suite_add_tcase(s, tc);
        return s;
}

int main(void) {
        return tb_check_main(procfs_suite());
}
