/* SPDX-License-Identifier: MIT */
/*
 * The wait queue: Requests that asked to wait (waitUsec > 0) and did not fit.
 *
 * Each waiter waits in the list of ONE ledger scope, the one that binds it
 * (kept in the scope's queue slot, ledger_scope_get_queue(), allocated with
 * its first waiter and freed with its last), and in one binary min-heap of
 * the whole queue keyed by its wake time, min(deadline, retry_at), so the
 * daemon arms a single timer at waitq_next_wake(). A scope's list is one FIFO
 * per priority: a waiter goes behind every waiter of the same or a higher
 * priority (a serial taken at add orders a priority), the head is the first
 * of the highest non-empty priority. Costs: add, remove and retry changes are
 * O(log n) heap steps plus O(1) list work; waitq_move() is O(log n) plus the
 * waiters of the same priority in the new list that are younger than the
 * moved one (it scans from the tail: the waiters moved are usually the head,
 * the oldest, so it is often the whole list of that priority — bounded by
 * queue.max_waiters). waitq_work() counts those steps (heap comparisons and
 * list scan steps) so tests and the benchmark can check the bound without a
 * clock.
 *
 * The queue does not decide anything (decide.c does) and does not bound
 * itself: the caller checks queue.max_waiters with waitq_size() and
 * waitq_uid_count() before adding. A ledger scope must not be freed while
 * its list holds a waiter (waitq_scope_count() > 0). Pure: no clock, no I/O.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "config.h"
#include "ledger.h"

typedef struct WaitQueue WaitQueue;
typedef struct Waiter Waiter;

WaitQueue *waitq_new(void);
/* Frees the queue and every waiter left (their userdata is the caller's), and
 * clears the queue slot of every scope that had a list. NULL-safe. */
WaitQueue *waitq_free(WaitQueue *q);

/* Adds a waiter in scope's list, behind every waiter of the same or a higher
 * priority (FIFO within a priority: each waiter gets a serial at add).
 * retry_at: when it is worth trying again if nothing else happens
 * (UINT64_MAX: only when something changes). Returns 0 or -ENOMEM (nothing
 * added). */
int waitq_add(WaitQueue *q, LedgerScope *scope, Priority priority, uid_t uid, uint64_t deadline,
              uint64_t retry_at, void *userdata, Waiter **ret);
/* Removes w from its list and the heap and frees it (not its userdata). */
void waitq_remove(WaitQueue *q, Waiter *w);
/* Moves w to another scope's list (the same scope: only retry_at changes),
 * keeping its place in the order (its serial), and sets its retry time.
 * Returns 0 or -ENOMEM (w unchanged, still in its old list). */
int waitq_move(WaitQueue *q, Waiter *w, LedgerScope *scope, uint64_t retry_at);
void waitq_set_retry(WaitQueue *q, Waiter *w, uint64_t retry_at);

/* The first waiter of the scope's list (highest priority, oldest), or NULL. */
Waiter *waitq_head(const LedgerScope *scope);
/* Whether the scope's list holds a waiter of priority p or higher (a value <= p). O(1). */
bool waitq_has_ahead(const LedgerScope *scope, Priority p);
size_t waitq_scope_count(const LedgerScope *scope);
/* Iterates the scope's list in order (priority, then serial): NULL starts. */
Waiter *waitq_next_in_scope(const LedgerScope *scope, const Waiter *w);

/* The earliest wake time of all waiters, UINT64_MAX when none. O(1). */
uint64_t waitq_next_wake(const WaitQueue *q);
/* A waiter whose wake time is <= now (the earliest; of equal wake times the
 * oldest), or NULL. O(1); the caller then removes it, moves it or sets a new
 * retry time, else it stays due. */
Waiter *waitq_due(const WaitQueue *q, uint64_t now);
size_t waitq_size(const WaitQueue *q);
size_t waitq_uid_count(const WaitQueue *q, uid_t uid); /* O(1) expected (hashmap) */
/* Heap comparisons and list scan steps done so far: a cost counter for
 * tests and benchmarks (O(log n) per operation), not a time. */
uint64_t waitq_work(const WaitQueue *q);

void *waiter_userdata(const Waiter *w);
LedgerScope *waiter_scope(const Waiter *w);
uint64_t waiter_deadline(const Waiter *w);
uint64_t waiter_retry_at(const Waiter *w);
uint64_t waiter_wake(const Waiter *w); /* min(deadline, retry_at) */
Priority waiter_priority(const Waiter *w);
uid_t waiter_uid(const Waiter *w);
uint64_t waiter_serial(const Waiter *w); /* 1, 2, ... in order of waitq_add() */
