/* SPDX-License-Identifier: MIT */
/*
 * The wait queue (see waitq.h): per-scope lists of per-priority FIFOs,
 * hung in the ledger scope's queue slot, and one binary min-heap of wake
 * times over every waiter, each waiter knowing its index in the heap so that
 * removal and a changed retry time are O(log n). Heap ties on the wake time
 * are broken by the serial, so the order is total and waitq_due() returns the
 * oldest of equal wake times. Waiters per uid are counted in a hashmap of
 * small counters (changed in place: no rehash per add or remove).
 */
#include <assert.h>
#include <errno.h>
#include <stdlib.h>

#include "hashmap.h"
#include "macro.h"
#include "waitq.h"

/* The heap array never shrinks below this many slots. */
#define HEAP_CAPACITY_MIN 16u

typedef struct ScopeList ScopeList;

struct Waiter {
        ScopeList *list;
        Priority priority;
        uid_t uid;
        uint64_t serial;
        uint64_t deadline, retry_at, wake;
        size_t heap_index;
        void *userdata;
        LIST_FIELDS(Waiter, order); /* within its priority's FIFO */
};

/* A scope's waiters. */
struct ScopeList {
        LedgerScope *scope;
        Waiter *head[_PRIORITY_MAX], *tail[_PRIORITY_MAX];
        unsigned nonempty; /* bit p: head[p] != NULL */
        size_t count;
        LIST_FIELDS(ScopeList, lists); /* every list of the queue, for waitq_free() */
};

typedef struct UidCount {
        size_t n;
} UidCount;

struct WaitQueue {
        Waiter **heap;
        size_t n_heap, heap_capacity;
        ScopeList *lists;
        Hashmap *uid_counts; /* uid + 1 -> UidCount */
        uint64_t next_serial;
        uint64_t work;
};

WaitQueue *waitq_new(void) {
        WaitQueue *q = calloc(1, sizeof(*q));

        if (!q)
                return NULL;
        q->uid_counts = hashmap_new();
        q->heap = calloc(HEAP_CAPACITY_MIN, sizeof(Waiter *));
        if (!q->uid_counts || !q->heap)
                return waitq_free(q);
        q->heap_capacity = HEAP_CAPACITY_MIN;
        q->next_serial = 1;
        return q;
}

WaitQueue *waitq_free(WaitQueue *q) {
        if (!q)
                return NULL;
        for (size_t i = 0; i < q->n_heap; i++) {
                if (q->uid_counts)
                        free(hashmap_remove(q->uid_counts, (uint64_t)q->heap[i]->uid + 1));
                free(q->heap[i]);
        }
        while (q->lists) {
                ScopeList *l = q->lists;

                ledger_scope_set_queue(l->scope, NULL);
                LIST_REMOVE(lists, q->lists, l);
                free(l);
        }
        hashmap_free(q->uid_counts);
        free(q->heap);
        free(q);
        return NULL;
}

/* ---- the heap ---- */

static bool wakes_before(WaitQueue *q, const Waiter *a, const Waiter *b) {
        q->work++;
        return a->wake < b->wake || (a->wake == b->wake && a->serial < b->serial);
}

static void heap_place(WaitQueue *q, Waiter *w, size_t i) {
        q->heap[i] = w;
        w->heap_index = i;
}

static void sift_up(WaitQueue *q, size_t i) {
        Waiter *w = q->heap[i];

        while (i > 0) {
                size_t parent = (i - 1) / 2;

                if (!wakes_before(q, w, q->heap[parent]))
                        break;
                heap_place(q, q->heap[parent], i);
                i = parent;
        }
        heap_place(q, w, i);
}

static void sift_down(WaitQueue *q, size_t i) {
        Waiter *w = q->heap[i];

        for (;;) {
                size_t child = 2 * i + 1;

                if (child >= q->n_heap)
                        break;
                if (child + 1 < q->n_heap && wakes_before(q, q->heap[child + 1], q->heap[child]))
                        child++;
                if (!wakes_before(q, q->heap[child], w))
                        break;
                heap_place(q, q->heap[child], i);
                i = child;
        }
        heap_place(q, w, i);
}

/* After w's key changed, or another waiter was put at its index. */
static void heap_fix(WaitQueue *q, size_t i) {
        if (i > 0 && wakes_before(q, q->heap[i], q->heap[(i - 1) / 2]))
                sift_up(q, i);
        else
                sift_down(q, i);
}

static int heap_reserve(WaitQueue *q) {
        Waiter **heap;

        if (q->n_heap < q->heap_capacity)
                return 0;
        if (q->heap_capacity > SIZE_MAX / 2 / sizeof(Waiter *))
                return -ENOMEM;
        heap = realloc(q->heap, 2 * q->heap_capacity * sizeof(Waiter *));
        if (!heap)
                return -ENOMEM;
        q->heap = heap;
        q->heap_capacity *= 2;
        return 0;
}

static void heap_remove(WaitQueue *q, Waiter *w) {
        size_t i = w->heap_index;
        Waiter *last = q->heap[--q->n_heap];

        if (last != w) {
                heap_place(q, last, i);
                heap_fix(q, i);
        }
        /* Shrink at a quarter full, so a burst of waiters does not keep its memory. */
        if (q->heap_capacity > HEAP_CAPACITY_MIN && q->n_heap < q->heap_capacity / 4) {
                Waiter **heap = realloc(q->heap, q->heap_capacity / 2 * sizeof(Waiter *));

                if (heap) {
                        q->heap = heap;
                        q->heap_capacity /= 2;
                }
        }
}

static void set_wake(WaitQueue *q, Waiter *w, uint64_t retry_at) {
        w->retry_at = retry_at;
        w->wake = w->deadline < retry_at ? w->deadline : retry_at;
}

/* ---- the scope lists ---- */

static ScopeList *list_of(const LedgerScope *scope) {
        return ledger_scope_get_queue(scope);
}

static int list_get(WaitQueue *q, LedgerScope *scope, ScopeList **ret) {
        ScopeList *l = list_of(scope);

        if (!l) {
                l = calloc(1, sizeof(*l));
                if (!l)
                        return -ENOMEM;
                l->scope = scope;
                LIST_PREPEND(lists, q->lists, l);
                ledger_scope_set_queue(scope, l);
        }
        *ret = l;
        return 0;
}

static void list_drop_if_empty(WaitQueue *q, ScopeList *l) {
        if (l->count > 0)
                return;
        ledger_scope_set_queue(l->scope, NULL);
        LIST_REMOVE(lists, q->lists, l);
        free(l);
}

/* Inserts w after prev in its priority's FIFO (prev NULL: at the front). */
static void list_insert_after(ScopeList *l, Waiter *prev, Waiter *w) {
        Priority p = w->priority;
        Waiter *next = prev ? prev->order_next : l->head[p];

        w->order_prev = prev;
        w->order_next = next;
        if (prev)
                prev->order_next = w;
        else
                l->head[p] = w;
        if (next)
                next->order_prev = w;
        else
                l->tail[p] = w;
        l->nonempty |= 1u << p;
        l->count++;
        w->list = l;
}

/* Inserts by serial, scanning from the tail: O(1) for a new waiter (the
 * youngest), else one step per younger waiter of the same priority. */
static void list_insert(WaitQueue *q, ScopeList *l, Waiter *w) {
        Waiter *prev = l->tail[w->priority];

        while (prev && prev->serial > w->serial) {
                q->work++;
                prev = prev->order_prev;
        }
        list_insert_after(l, prev, w);
}

static void list_unlink(ScopeList *l, Waiter *w) {
        Priority p = w->priority;

        if (w->order_prev)
                w->order_prev->order_next = w->order_next;
        else
                l->head[p] = w->order_next;
        if (w->order_next)
                w->order_next->order_prev = w->order_prev;
        else
                l->tail[p] = w->order_prev;
        if (!l->head[p])
                l->nonempty &= ~(1u << p);
        l->count--;
        w->order_next = w->order_prev = NULL;
        w->list = NULL;
}

/* ---- per-uid counts ---- */

static int uid_count_inc(WaitQueue *q, uid_t uid) {
        uint64_t key = (uint64_t)uid + 1;
        UidCount *c = hashmap_get(q->uid_counts, key);
        int r;

        if (c) {
                c->n++;
                return 0;
        }
        c = calloc(1, sizeof(*c));
        if (!c)
                return -ENOMEM;
        c->n = 1;
        r = hashmap_put(q->uid_counts, key, c);
        if (r < 0)
                free(c);
        return r;
}

static void uid_count_dec(WaitQueue *q, uid_t uid) {
        uint64_t key = (uint64_t)uid + 1;
        UidCount *c = hashmap_get(q->uid_counts, key);

        assert(c && c->n > 0);
        if (--c->n == 0)
                free(hashmap_remove(q->uid_counts, key));
}

/* ---- the queue ---- */

int waitq_add(WaitQueue *q, LedgerScope *scope, Priority priority, uid_t uid, uint64_t deadline,
              uint64_t retry_at, void *userdata, Waiter **ret) {
        _cleanup_free_ Waiter *w = NULL;
        ScopeList *l;
        int r;

        assert(q && scope);
        assert((unsigned)priority < _PRIORITY_MAX);
        w = calloc(1, sizeof(*w));
        if (!w)
                return -ENOMEM;
        r = heap_reserve(q);
        if (r < 0)
                return r;
        r = uid_count_inc(q, uid);
        if (r < 0)
                return r;
        r = list_get(q, scope, &l);
        if (r < 0) {
                uid_count_dec(q, uid);
                return r;
        }
        w->priority = priority;
        w->uid = uid;
        w->serial = q->next_serial++;
        w->deadline = deadline;
        w->userdata = userdata;
        set_wake(q, w, retry_at);
        list_insert(q, l, w);
        heap_place(q, w, q->n_heap++);
        sift_up(q, w->heap_index);
        if (ret)
                *ret = w;
        TAKE_PTR(w);
        return 0;
}

void waitq_remove(WaitQueue *q, Waiter *w) {
        ScopeList *l;

        if (!w)
                return;
        l = w->list;
        list_unlink(l, w);
        list_drop_if_empty(q, l);
        heap_remove(q, w);
        uid_count_dec(q, w->uid);
        free(w);
}

int waitq_move(WaitQueue *q, Waiter *w, LedgerScope *scope, uint64_t retry_at) {
        ScopeList *from = w->list, *to;
        int r;

        if (from->scope != scope) {
                r = list_get(q, scope, &to);
                if (r < 0)
                        return r;
                list_unlink(from, w);
                list_drop_if_empty(q, from);
                list_insert(q, to, w);
        }
        waitq_set_retry(q, w, retry_at);
        return 0;
}

void waitq_set_retry(WaitQueue *q, Waiter *w, uint64_t retry_at) {
        set_wake(q, w, retry_at);
        heap_fix(q, w->heap_index);
}

/* The highest priority (lowest value) with a waiter, or _PRIORITY_MAX. */
static Priority first_priority(unsigned nonempty, Priority from) {
        for (Priority p = from; p < _PRIORITY_MAX; p++)
                if (nonempty & (1u << p))
                        return p;
        return _PRIORITY_MAX;
}

Waiter *waitq_head(const LedgerScope *scope) {
        ScopeList *l = list_of(scope);
        Priority p;

        if (!l)
                return NULL;
        p = first_priority(l->nonempty, 0);
        return p < _PRIORITY_MAX ? l->head[p] : NULL;
}

bool waitq_has_ahead(const LedgerScope *scope, Priority p) {
        ScopeList *l = list_of(scope);

        assert((unsigned)p < _PRIORITY_MAX);
        return l && (l->nonempty & ((2u << p) - 1)) != 0;
}

size_t waitq_scope_count(const LedgerScope *scope) {
        ScopeList *l = list_of(scope);

        return l ? l->count : 0;
}

Waiter *waitq_next_in_scope(const LedgerScope *scope, const Waiter *w) {
        ScopeList *l = list_of(scope);
        Priority p;

        if (!w)
                return waitq_head(scope);
        assert(w->list == l);
        if (w->order_next)
                return w->order_next;
        p = first_priority(l->nonempty, w->priority + 1);
        return p < _PRIORITY_MAX ? l->head[p] : NULL;
}

uint64_t waitq_next_wake(const WaitQueue *q) {
        return q->n_heap > 0 ? q->heap[0]->wake : UINT64_MAX;
}

Waiter *waitq_due(const WaitQueue *q, uint64_t now) {
        return q->n_heap > 0 && q->heap[0]->wake <= now ? q->heap[0] : NULL;
}

size_t waitq_size(const WaitQueue *q) {
        return q->n_heap;
}

size_t waitq_uid_count(const WaitQueue *q, uid_t uid) {
        UidCount *c = hashmap_get(q->uid_counts, (uint64_t)uid + 1);

        return c ? c->n : 0;
}

uint64_t waitq_work(const WaitQueue *q) {
        return q->work;
}

void *waiter_userdata(const Waiter *w) {
        return w->userdata;
}

LedgerScope *waiter_scope(const Waiter *w) {
        return w->list->scope;
}

uint64_t waiter_deadline(const Waiter *w) {
        return w->deadline;
}

uint64_t waiter_retry_at(const Waiter *w) {
        return w->retry_at;
}

uint64_t waiter_wake(const Waiter *w) {
        return w->wake;
}

Priority waiter_priority(const Waiter *w) {
        return w->priority;
}

uid_t waiter_uid(const Waiter *w) {
        return w->uid;
}

uint64_t waiter_serial(const Waiter *w) {
        return w->serial;
}
