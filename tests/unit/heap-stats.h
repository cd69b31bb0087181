/* SPDX-License-Identifier: MIT */
/*
 * Heap bytes in use, for the unit tests' memory bounds (bytes per open
 * allocation, per hashmap entry): glibc's mallinfo2(), or ASan's allocator
 * statistics under ASan. Under valgrind neither is seen, and the checks that
 * need it are skipped, reported as a part not run (tests/common/tb-check.h).
 */
#pragma once

#include <stdbool.h>
#include <stdlib.h>

#include "tb-check.h"

#if defined(__has_feature)
#if __has_feature(address_sanitizer) && !defined(__SANITIZE_ADDRESS__)
#define __SANITIZE_ADDRESS__ 1
#endif
#endif
#if defined(__SANITIZE_ADDRESS__)
/* From <sanitizer/allocator_interface.h>, which gcc does not install: under
 * ASan, malloc statistics come from its allocator, not glibc's. */
size_t __sanitizer_get_current_allocated_bytes(void);
#else
#include <malloc.h>
#endif

static inline size_t heap_bytes_in_use(void) {
#if defined(__SANITIZE_ADDRESS__)
        return __sanitizer_get_current_allocated_bytes();
#else
        struct mallinfo2 mi = mallinfo2();
        return mi.uordblks + mi.hblkhd;
#endif
}

/* Valgrind's malloc replacement reports no statistics: probe with a block of
 * known size, and skip the memory checks (saying so) when it is not seen. */
static inline bool heap_accounting_works(void) {
        size_t before = heap_bytes_in_use();
        void *p = malloc(1 << 20);
        bool works;

        if (!p)
                return false;
        works = heap_bytes_in_use() >= before + (1 << 20);
        free(p);
        if (!works)
                tb_check_skip_part(
                        "heap statistics unavailable (valgrind?): the memory bounds are not checked");
        return works;
}
