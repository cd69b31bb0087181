/* SPDX-License-Identifier: MIT */
/*
 * The few helpers every file wants: _cleanup_ attributes that free on scope
 * exit, TAKE_PTR to move ownership out of them, ELEMENTSOF, and a doubly
 * linked list in the style of systemd's list.h. Nothing here allocates.
 */
#pragma once

#include <stdlib.h>
#include <unistd.h>

#define _cleanup_(f)   __attribute__((cleanup(f)))
#define _unused_       __attribute__((unused))
#define _printf_(a, b) __attribute__((format(printf, a, b)))
#define _noreturn_     __attribute__((noreturn))

#define ELEMENTSOF(x) (sizeof(x) / sizeof((x)[0]))

#define TAKE_PTR(p)                                                                                         \
        ({                                                                                                  \
                __typeof__(p) _p_ = (p);                                                                    \
                (p) = NULL;                                                                                 \
                _p_;                                                                                        \
        })

/* Moves a struct out, leaving it zeroed. */
#define TAKE_STRUCT(s)                                                                                      \
        ({                                                                                                  \
                __typeof__(s) _s_ = (s);                                                                    \
                (s) = (__typeof__(s)){};                                                                    \
                _s_;                                                                                        \
        })

#define TAKE_FD(fd)                                                                                         \
        ({                                                                                                  \
                int _fd_ = (fd);                                                                            \
                (fd) = -1;                                                                                  \
                _fd_;                                                                                       \
        })

/* free() that returns NULL, for p = mfree(p). */
static inline void *mfree(void *p) {
        free(p);
        return NULL;
}

static inline void freep(void *p) {
        free(*(void **)p);
}

static inline void closep(int *fd) {
        if (*fd >= 0)
                close(*fd);
}

#define _cleanup_free_  _cleanup_(freep)
#define _cleanup_close_ _cleanup_(closep)

/* Intrusive doubly linked lists: LIST_FIELDS(Type, name) in the struct, a
 * Type *name head somewhere. */
#define LIST_FIELDS(t, name) t *name##_next, *name##_prev

#define LIST_PREPEND(name, head, item)                                                                      \
        do {                                                                                                \
                __typeof__(*(head)) **_head = &(head), *_item = (item);                                     \
                if ((_item->name##_next = *_head))                                                          \
                        _item->name##_next->name##_prev = _item;                                            \
                _item->name##_prev = NULL;                                                                  \
                *_head = _item;                                                                             \
        } while (0)

/* O(length): for short lists that must keep their order. */
#define LIST_APPEND(name, head, item)                                                                       \
        do {                                                                                                \
                __typeof__(*(head)) **_head = &(head), *_item = (item), *_tail = *_head;                    \
                _item->name##_next = NULL;                                                                  \
                if (!_tail) {                                                                               \
                        _item->name##_prev = NULL;                                                          \
                        *_head = _item;                                                                     \
                        break;                                                                              \
                }                                                                                           \
                while (_tail->name##_next)                                                                  \
                        _tail = _tail->name##_next;                                                         \
                _tail->name##_next = _item;                                                                 \
                _item->name##_prev = _tail;                                                                 \
        } while (0)

#define LIST_REMOVE(name, head, item)                                                                       \
        do {                                                                                                \
                __typeof__(*(head)) **_head = &(head), *_item = (item);                                     \
                if (_item->name##_next)                                                                     \
                        _item->name##_next->name##_prev = _item->name##_prev;                               \
                if (_item->name##_prev)                                                                     \
                        _item->name##_prev->name##_next = _item->name##_next;                               \
                else                                                                                        \
                        *_head = _item->name##_next;                                                        \
                _item->name##_next = _item->name##_prev = NULL;                                             \
        } while (0)
