/* SPDX-License-Identifier: MIT */
/*
 * failmalloc: an LD_PRELOAD shim that makes a chosen fraction of a process's
 * allocations fail, for test-oom.c. It interposes malloc, calloc, realloc,
 * reallocarray and the aligned allocators (glibc routes its own strdup,
 * asprintf, fopen... through them too) and forwards to glibc's __libc_*
 * entry points, so it needs no dlsym() and has no bootstrap problem; free()
 * is glibc's own, untouched. It starts disarmed: SIGUSR1 arms it, SIGUSR2
 * disarms it (tokenbudgetd handles only SIGTERM, SIGINT and SIGHUP).
 *
 * While armed, allocation number n (counting only allocations made while
 * armed, over every armed period) fails when a hash of (FAILMALLOC_SEED, n)
 * is 0 modulo FAILMALLOC_ONE_IN: deterministic for a given seed and
 * allocation sequence, yet spread over every call site. realloc(p, 0) and
 * free() never fail. FAILMALLOC_ARMED=1 arms it from the start.
 *
 * Reporting: at each arm and disarm the signal handler writes
 * "armed=A injected=I calls=C\n" (failures injected and allocations seen
 * while armed, both since the start) to the file FAILMALLOC_REPORT names,
 * with open(2)/write(2) only, so a test knows the signal was handled and how
 * many failures it caused. With FAILMALLOC_BACKTRACE=1 a SIGSEGV, SIGBUS or
 * SIGABRT prints a backtrace (addresses, for addr2line) to stderr first.
 *
 * It does not fail allocations of a disarmed process, track pointers, or
 * check for leaks: LeakSanitizer and valgrind do that, and they replace
 * malloc themselves, so this shim cannot be used together with them.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <execinfo.h>
#include <fcntl.h>
#include <malloc.h>
#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* glibc exports its allocator under these names (GLIBC_2.2.5). */
extern void *__libc_malloc(size_t size);
extern void *__libc_calloc(size_t n, size_t size);
extern void *__libc_realloc(void *ptr, size_t size);
extern void *__libc_memalign(size_t alignment, size_t size);

#define EXPORT __attribute__((visibility("default")))

static volatile sig_atomic_t armed;
static uint64_t seed;
static uint64_t one_in; /* 0: never fail */
static uint64_t n_calls, n_injected;
static char report_path[4096];

/* splitmix64 (Vigna): a good 64-bit mix, so consecutive n give unrelated values. */
static uint64_t mix(uint64_t x) {
        x += UINT64_C(0x9e3779b97f4a7c15);
        x = (x ^ (x >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
        x = (x ^ (x >> 27)) * UINT64_C(0x94d049bb133111eb);
        return x ^ (x >> 31);
}

/* Whether this allocation is to fail; counts it when armed. */
static bool should_fail(void) {
        uint64_t n;

        if (!armed || one_in == 0)
                return false;
        n = __atomic_fetch_add(&n_calls, 1, __ATOMIC_RELAXED);
        if (mix(seed ^ mix(n)) % one_in != 0)
                return false;
        __atomic_fetch_add(&n_injected, 1, __ATOMIC_RELAXED);
        return true;
}

EXPORT void *malloc(size_t size) {
        if (should_fail()) {
                errno = ENOMEM;
                return NULL;
        }
        return __libc_malloc(size);
}

EXPORT void *calloc(size_t n, size_t size) {
        if (should_fail()) {
                errno = ENOMEM;
                return NULL;
        }
        return __libc_calloc(n, size);
}

EXPORT void *realloc(void *ptr, size_t size) {
        /* realloc(p, 0) frees p: that must keep working. A failed realloc
         * leaves ptr allocated and untouched, as glibc's does. */
        if ((size > 0 || !ptr) && should_fail()) {
                errno = ENOMEM;
                return NULL;
        }
        return __libc_realloc(ptr, size);
}

EXPORT void *reallocarray(void *ptr, size_t n, size_t size) {
        size_t total;

        if (__builtin_mul_overflow(n, size, &total)) {
                errno = ENOMEM;
                return NULL;
        }
        return realloc(ptr, total);
}

static bool alignment_valid(size_t alignment) {
        return alignment != 0 && (alignment & (alignment - 1)) == 0;
}

EXPORT void *memalign(size_t alignment, size_t size) {
        if (should_fail()) {
                errno = ENOMEM;
                return NULL;
        }
        return __libc_memalign(alignment, size);
}

EXPORT void *aligned_alloc(size_t alignment, size_t size) {
        if (!alignment_valid(alignment)) {
                errno = EINVAL;
                return NULL;
        }
        return memalign(alignment, size);
}

EXPORT int posix_memalign(void **ret, size_t alignment, size_t size) {
        void *p;

        if (!alignment_valid(alignment) || alignment % sizeof(void *) != 0)
                return EINVAL;
        if (should_fail())
                return ENOMEM;
        p = __libc_memalign(alignment, size);
        if (!p)
                return ENOMEM;
        *ret = p;
        return 0;
}

EXPORT void *valloc(size_t size) {
        return memalign((size_t)sysconf(_SC_PAGESIZE), size);
}

EXPORT void *pvalloc(size_t size) {
        size_t page = (size_t)sysconf(_SC_PAGESIZE);

        return memalign(page, (size + page - 1) & ~(page - 1));
}

/* ---- signals: async-signal-safe only ---- */

static char *format_u64(char *end, uint64_t v) {
        do {
                *--end = (char)('0' + v % 10);
                v /= 10;
        } while (v);
        return end;
}

static char *append(char *q, const char *s) {
        while (*s)
                *q++ = *s++;
        return q;
}

static char *append_u64(char *q, uint64_t v) {
        char digits[20], *d = format_u64(digits + sizeof(digits), v);

        while (d < digits + sizeof(digits))
                *q++ = *d++;
        return q;
}

static void write_report(void) {
        char line[128], *q = line, tmp[sizeof(report_path) + 8];
        int fd, saved_errno = errno;

        if (!report_path[0])
                return;
        q = append(q, "armed=");
        q = append_u64(q, (uint64_t)armed);
        q = append(q, " injected=");
        q = append_u64(q, __atomic_load_n(&n_injected, __ATOMIC_RELAXED));
        q = append(q, " calls=");
        q = append_u64(q, __atomic_load_n(&n_calls, __ATOMIC_RELAXED));
        q = append(q, "\n");
        /* Written to a temporary name and renamed, so a reader never sees half a line. */
        *append(append(tmp, report_path), ".tmp") = 0;
        fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        if (fd >= 0) {
                (void)!write(fd, line, (size_t)(q - line));
                close(fd);
                (void)rename(tmp, report_path);
        }
        errno = saved_errno;
}

static void arm_cb(int sig) {
        armed = sig == SIGUSR1;
        write_report();
}

static void crash_cb(int sig) {
        static const char head[] = "failmalloc: fatal signal in pid ",
                          tail[] = "; backtrace (addr2line -f -e BINARY OFFSET):\n";
        char digits[16], *d = digits + sizeof(digits);
        void *frames[64];
        unsigned pid = (unsigned)getpid();
        int n;

        armed = 0;
        /* The pid tells the daemon from a child of it (the configuration
         * parser of a reload), whose crash the daemon survives by design. */
        do {
                *--d = (char)('0' + pid % 10);
                pid /= 10;
        } while (pid);
        (void)!write(STDERR_FILENO, head, sizeof(head) - 1);
        (void)!write(STDERR_FILENO, d, (size_t)(digits + sizeof(digits) - d));
        (void)!write(STDERR_FILENO, tail, sizeof(tail) - 1);
        n = backtrace(frames, 64);
        backtrace_symbols_fd(frames, n, STDERR_FILENO);
        /* SA_RESETHAND restored the default action: die of the same signal. */
        raise(sig);
}

static uint64_t env_u64(const char *name, uint64_t fallback) {
        const char *v = getenv(name);
        char *end;
        unsigned long long x;

        if (!v || !*v)
                return fallback;
        errno = 0;
        x = strtoull(v, &end, 0);
        return errno || *end ? fallback : (uint64_t)x;
}

__attribute__((constructor)) static void failmalloc_init(void) {
        struct sigaction sa = {.sa_handler = arm_cb, .sa_flags = SA_RESTART};
        const char *path = getenv("FAILMALLOC_REPORT");
        const char *bt = getenv("FAILMALLOC_BACKTRACE");

        seed = env_u64("FAILMALLOC_SEED", 1);
        one_in = env_u64("FAILMALLOC_ONE_IN", 0);
        if (path && strlen(path) < sizeof(report_path) - 1)
                strcpy(report_path, path);
        sigemptyset(&sa.sa_mask);
        sigaddset(&sa.sa_mask, SIGUSR1);
        sigaddset(&sa.sa_mask, SIGUSR2);
        (void)sigaction(SIGUSR1, &sa, NULL);
        (void)sigaction(SIGUSR2, &sa, NULL);
        if (bt && strcmp(bt, "1") == 0) {
                struct sigaction crash = {.sa_handler = crash_cb, .sa_flags = SA_RESETHAND | SA_NODEFER};
                void *warm[1];

                /* The first backtrace() loads libgcc_s (it allocates): not in a handler. */
                (void)backtrace(warm, 1);
                sigemptyset(&crash.sa_mask);
                (void)sigaction(SIGSEGV, &crash, NULL);
                (void)sigaction(SIGBUS, &crash, NULL);
                (void)sigaction(SIGABRT, &crash, NULL);
        }
        if (env_u64("FAILMALLOC_ARMED", 0) == 1)
                armed = 1;
}
