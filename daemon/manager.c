/* SPDX-License-Identifier: MIT */
/* The manager (see manager.h). Time is read once per event and passed down. */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include <event2/event.h>

#include "budget.h"
#include "config-file.h"
#include "dispatch.h"
#include "journal.h"
#include "listener.h"
#include "log.h"
#include "macro.h"
#include "manager.h"
#include "method.h"
#include "notify.h"
#include "peer.h"
#include "power-monitor.h"
#include "ratelimit.h"
#include "store.h"
#include "terminate.h"
#include "tb-config.h"
#include "time-util.h"

/* The sweep runs at a quarter of the shortest timeout, so a timeout is
 * enforced at most 25% late, but never more often than 10 times a second nor
 * less often than every 30 s. It runs only while clients are connected: an
 * idle daemon has no timer at all. */
#define SWEEP_MIN_USEC UINT64_C(100000)
/* The queue's timer is set this much late (a jiffy at HZ=250). */
#define WAKE_SLACK_USEC UINT64_C(4000)
#define SWEEP_MAX_USEC  (30 * USEC_PER_SEC)

struct Manager {
        struct event_base *base;
        Config config;
        char *config_path;    /* NULL: built-in defaults */
        bool config_optional; /* config_path is the default file: missing means built-in defaults */
        unsigned fd_limit;
        uint64_t start_usec;
        Journal *journal;
        Notify *notify;
        Budget *budget;
        PeerSet *peers;
        Listener *listener;
        DispatchContext context;
        struct event *sweep_event;
        struct event *wake_event; /* the queue's one timer: the next waiter or held request due */
        Terminator *terminator;
        PowerMonitor *power; /* NULL: power.enabled = false */
        struct event *signal_events[3];
        RateLimit log_refused;
        bool stopping;     /* SIGTERM came: what is still open is settled as shutdown */
        char *status_note; /* why the last reload was rejected; prefixed to STATUS= */
        /* The durable ledger (issue 12): NULL when memory only. */
        char *state_dir; /* "" for memory only */
        Store *store;
        struct event *store_event; /* commits what calls did not, retries, flushes refusals, prunes */
        bool durability_degraded;  /* the last commit failed */
        uint64_t degraded_since;   /* monotonic */
        uint64_t last_prune_usec;  /* monotonic; 0: not yet */
        uint64_t last_apply_usec;  /* monotonic: the commit log last applied by the timer */
        bool prune_more;           /* the last prune step was full: more is due */
};

static void store_schedule(Manager *m);
static int id_key_from_kernel(uint8_t key[static 16]);

/* ---- limits of the pieces, from the configuration ---- */

static JournalSettings journal_settings(const Config *c) {
        return (JournalSettings){
                .log_granted = c->journal_log_granted,
                .rate_limit_interval_usec = c->journal_rate_limit_interval_usec,
                .rate_limit_burst = c->journal_rate_limit_burst,
        };
}

static PeerSetLimits peer_limits(const Config *c) {
        return (PeerSetLimits){
                .max_message_bytes = c->max_message_bytes,
                .max_output_bytes = c->max_output_bytes,
                .max_output_bytes_per_uid = c->max_output_bytes_per_uid,
                .idle_timeout_usec = c->idle_timeout_usec,
                .log_interval_usec = c->journal_rate_limit_interval_usec,
                .log_burst = (unsigned)c->journal_rate_limit_burst,
        };
}

static ListenerLimits listener_limits(const Config *c) {
        return (ListenerLimits){
                .max_connections = c->max_connections,
                .admin_connections = c->admin_connections,
                .max_connections_per_uid = c->max_connections_per_uid,
                .log_interval_usec = c->journal_rate_limit_interval_usec,
                .log_burst = (unsigned)c->journal_rate_limit_burst,
                .has_admin_gid = c->has_admin_gid,
                .admin_gid = c->admin_gid,
        };
}

/* ---- the sweep ---- */

static uint64_t sweep_interval_usec(const Config *c) {
        uint64_t t = c->allocation_idle_timeout_usec;

        if (c->idle_timeout_usec > 0 && c->idle_timeout_usec < t)
                t = c->idle_timeout_usec;
        if (PEER_CLOSING_GRACE_USEC < t)
                t = PEER_CLOSING_GRACE_USEC;
        t /= 4;
        return t < SWEEP_MIN_USEC ? SWEEP_MIN_USEC : t > SWEEP_MAX_USEC ? SWEEP_MAX_USEC : t;
}

static void sweep_schedule(Manager *m) {
        uint64_t usec = sweep_interval_usec(&m->config);
        struct timeval tv = {.tv_sec = (time_t)(usec / USEC_PER_SEC),
                             .tv_usec = (suseconds_t)(usec % USEC_PER_SEC)};

        if (peer_set_size(m->peers) > 0 && !m->stopping && !evtimer_pending(m->sweep_event, NULL))
                evtimer_add(m->sweep_event, &tv);
}

static void sweep_cb(evutil_socket_t fd, short what, void *userdata) {
        Manager *m = userdata;
        uint64_t now = now_usec();

        budget_sweep(m->budget, now);
        peer_set_sweep(m->peers, now);
        sweep_schedule(m);
        store_schedule(m);
}

/* ---- connections ---- */

static void connection_cb(void *userdata, int fd, const Identity *id, gid_t *groups, size_t n_groups,
                          uint64_t now) {
        Manager *m = userdata;
        Client *client;
        int r;

        r = budget_client_new(m->budget, id, groups, n_groups, now, &client);
        if (r < 0) {
                log_limited(&m->log_refused, now, LOG_LEVEL_WARNING,
                            "refusing connection of pid %d uid %u: %s", (int)id->pid, (unsigned)id->uid,
                            r == -EUSERS         ? "limits.max_tracked_processes reached: every tracked "
                                                   "process is alive and holds usage"
                            : r == -ETOOMANYREFS ? "limits.max_tracked_processes_per_uid reached: every "
                                                   "process of this uid is alive and holds usage"
                                                 : strerror(-r));
                close(fd);
                return;
        }
        r = peer_set_add(m->peers, fd, id, client, now);
        if (r < 0) {
                budget_client_free(m->budget, client, SETTLE_ABANDONED, now);
                return;
        }
        sweep_schedule(m);
        log_debug("connection from pid %d (%s) uid %u", (int)id->pid, id->comm, (unsigned)id->uid);
}

static int handle_call_cb(void *userdata, Call *call, const VarlinkCall *message, uint64_t now) {
        Manager *m = userdata;
        return dispatch_call(&m->context, call, message, now);
}

static int handle_flat_call_cb(void *userdata, Call *call, const VarlinkFlatCall *message, uint64_t now) {
        Manager *m = userdata;
        return dispatch_flat_call(&m->context, call, message, now);
}

static void disconnected_cb(void *userdata, void *session, uint64_t now) {
        Manager *m = userdata;
        budget_client_free(m->budget, session, m->stopping ? SETTLE_SHUTDOWN : SETTLE_ABANDONED, now);
        store_schedule(m);
}

static bool may_close_idle_cb(void *userdata, void *session) {
        return !budget_client_busy(session);
}

/* ---- the queue's timer and the hard-limit action ---- */

static void wake_cb(evutil_socket_t fd, short what, void *userdata) {
        Manager *m = userdata;
        budget_wake(m->budget, now_usec());
        store_schedule(m);
}

/* The budget's next due time changed: one timer for every waiter. */
static void budget_wake_cb(void *userdata, uint64_t when) {
        Manager *m = userdata;
        uint64_t now = now_usec(), usec;
        struct timeval tv;

        event_del(m->wake_event);
        if (when == UINT64_MAX)
                return;
        /* libevent's clock can be the coarse one, a tick behind ours: a
         * timer set to the microsecond could fire before it is due. */
        usec = (when > now ? when - now : 0) + WAKE_SLACK_USEC;
        tv = (struct timeval){.tv_sec = (time_t)(usec / USEC_PER_SEC),
                              .tv_usec = (suseconds_t)(usec % USEC_PER_SEC)};
        evtimer_add(m->wake_event, &tv);
}

static void terminate_done_cb(void *userdata, pid_t pid, TerminateOutcome outcome, int error,
                              uint64_t elapsed_usec) {
        Manager *m = userdata;
        Event e = {.pid = pid,
                   .decision = terminate_outcome_to_string(outcome),
                   .reason = error ? strerror(-error) : NULL};

        journal_emit(m->journal, EVENT_TERMINATED, &e, now_usec(),
                     outcome == TERMINATE_EXITED
                             ? "Process %d stopped at its hard limit: it exited after SIGTERM (%" PRIu64
                               " ms)"
                     : outcome == TERMINATE_KILLED
                             ? "Process %d stopped at its hard limit: killed with SIGKILL after the grace "
                               "period (%" PRIu64 " ms)"
                             : "Process %d could not be stopped at its hard limit (%" PRIu64 " ms)",
                     (int)pid, elapsed_usec / 1000);
}

static void budget_terminate_cb(void *userdata, pid_t pid, uint64_t start_time, uid_t uid,
                                uint64_t grace_usec) {
        Manager *m = userdata;
        int r = terminator_start(m->terminator, pid, start_time, uid, grace_usec);

        if (r < 0 && r != -EALREADY) {
                Event e = {.pid = pid,
                           .uid = uid,
                           .has_uid = true,
                           .decision = "failed",
                           .reason = strerror(-r)};
                journal_emit(
                        m->journal, EVENT_TERMINATED, &e, now_usec(),
                        "Process %d reached its hard limit under on_hard_limit = \"terminate\" but was not "
                        "signalled: %s",
                        (int)pid,
                        r == -ESRCH ? "it is gone"
                        : r == -EPERM
                                ? "the daemon may not signal it (pid 1, itself, another uid, or refused)"
                                : strerror(-r));
        } else if (r == 0) {
                Event e = {.pid = pid, .uid = uid, .has_uid = true, .decision = "sigterm"};
                journal_emit(m->journal, EVENT_TERMINATED, &e, now_usec(),
                             "Process %d reached its hard limit: sent SIGTERM, SIGKILL after %" PRIu64
                             " ms if it "
                             "is still running",
                             (int)pid, grace_usec / 1000);
        }
}

/* ---- the durable ledger ---- */

/* Retry a failed commit this often while nothing else commits. */
#define STORE_RETRY_USEC USEC_PER_SEC
#define STORE_APPLY_USEC USEC_PER_SEC
/* Old history and usage go in steps of this many rows (about 0.2 ms per 128
 * here), one step per turn, a round every PRUNE_INTERVAL_USEC. */
#define PRUNE_STEP_ROWS     256
#define PRUNE_INTERVAL_USEC (600 * USEC_PER_SEC)
/* Usage rows are kept for the day window, one hour bucket and a minute. */
#define USAGE_KEEP_SEC (86400 + 3600 + 60)

/* Durability degrades on a failed commit or apply (said in the journal,
 * STATUS= and Status) and comes back with the first that succeeds. */
static void store_result(Manager *m, int r) {
        uint64_t now = now_usec();

        if (r < 0 && !m->durability_degraded) {
                Event e = {.reason = store_error_message(m->store)};

                m->durability_degraded = true;
                m->degraded_since = now;
                journal_emit(m->journal, EVENT_DURABILITY_LOST, &e, now,
                             "Durability degraded: %s; enforcing from memory, retrying every second",
                             store_error_message(m->store) ?: strerror(-r));
                notify_status_changed(m->notify);
        } else if (r >= 0 && m->durability_degraded) {
                char reason[64];
                Event e = {.reason = reason};

                m->durability_degraded = false;
                snprintf(reason, sizeof(reason), "degraded for %" PRIu64 " s",
                         (now - m->degraded_since) / USEC_PER_SEC);
                journal_emit(m->journal, EVENT_DURABILITY_BACK, &e, now,
                             "Durability restored: the durable ledger %s is written again (%s)",
                             store_path(m->store), reason);
                notify_status_changed(m->notify);
        }
}

/* Commits what is staged (store.h: one commit log row). A failure keeps it
 * and degrades durability until a commit works. */
static void store_commit_now(Manager *m, bool all_refusals) {
        if (!m->store)
                return;
        budget_store_flush(m->budget, realtime_usec(), all_refusals);
        if (!store_pending(m->store))
                return;
        store_result(m, store_commit(m->store));
}

/* Applies the commit log to the tables: a second after the last time,
 * while anything is staged (a busy daemon's commits apply it every few
 * thousand operations themselves), and at stop. */
static void store_apply_now(Manager *m, uint64_t now) {
        m->last_apply_usec = now;
        if (m->store && store_staged(m->store) > 0)
                store_result(m, store_apply(m->store));
}

/* One bounded step of pruning: history past history.retention_days, usage
 * past the longest window. */
static void store_prune(Manager *m, uint64_t now) {
        uint64_t real = realtime_usec(), keep = m->config.history_retention_days * 86400 * USEC_PER_SEC;
        int r;

        r = store_prune_step(m->store, real > keep ? real - keep : 0,
                             real / USEC_PER_SEC > USAGE_KEEP_SEC ? real / USEC_PER_SEC - USAGE_KEEP_SEC : 0,
                             PRUNE_STEP_ROWS);
        m->prune_more = r == PRUNE_STEP_ROWS;
        if (!m->prune_more)
                m->last_prune_usec = now;
        if (r < 0)
                log_warning("durable ledger: pruning old rows failed: %s", strerror(-r));
}

static bool prune_due(const Manager *m, uint64_t now) {
        return !m->durability_degraded &&
               (m->prune_more || m->last_prune_usec == 0 || now - m->last_prune_usec >= PRUNE_INTERVAL_USEC);
}

static void store_event_cb(evutil_socket_t fd, short what, void *userdata) {
        Manager *m = userdata;
        uint64_t now = now_usec();

        store_commit_now(m, false);
        if (store_staged(m->store) > 0 &&
            (m->durability_degraded || now - m->last_apply_usec >= STORE_APPLY_USEC))
                store_apply_now(m, now);
        if (prune_due(m, now))
                store_prune(m, now);
        store_schedule(m);
}

/* What the store still needs, and when: what was staged outside a call
 * (a disconnect, the sweep, a timer) at once, refusals of this second after
 * it, a failed commit in a second, pruning when due after activity. An idle
 * daemon with nothing to write has no timer. */
static void store_schedule(Manager *m) {
        uint64_t now = now_usec(), delay = UINT64_MAX;
        struct timeval tv;

        if (!m->store || m->stopping)
                return;
        if (m->durability_degraded)
                delay = STORE_RETRY_USEC;
        else if (store_pending(m->store) || prune_due(m, now))
                delay = 0;
        else {
                if (budget_store_waiting(m->budget))
                        delay = USEC_PER_SEC - realtime_usec() % USEC_PER_SEC + 10 * USEC_PER_MSEC;
                if (store_staged(m->store) > 0) {
                        uint64_t due = m->last_apply_usec + STORE_APPLY_USEC;
                        uint64_t d = due > now ? due - now : 0;

                        delay = d < delay ? d : delay;
                }
        }
        if (delay == UINT64_MAX || evtimer_pending(m->store_event, NULL))
                return;
        tv = (struct timeval){.tv_sec = (time_t)(delay / USEC_PER_SEC),
                              .tv_usec = (suseconds_t)(delay % USEC_PER_SEC)};
        evtimer_add(m->store_event, &tv);
}

/* The commit point: the iteration's calls staged their writes (budget.c);
 * while any are staged, replies wait for the end of the iteration, where
 * commit_cb writes them all in one transaction before any reply leaves.
 * Memory only: nothing is ever pending, replies leave at once. */
static bool commit_pending_cb(void *userdata) {
        Manager *m = userdata;
        return m->store && store_pending(m->store);
}

static void commit_cb(void *userdata) {
        Manager *m = userdata;

        store_commit_now(m, false);
        store_schedule(m);
}

/* Opens the database in state_dir (created when missing, its parent must
 * exist) and puts what it holds back: the id key and generation, window
 * usage, allocations left open. -EBADE when it cannot be used (logged,
 * with what to do). */
static int store_start(Manager *m, uint8_t key[static 16], uint32_t *ret_floor) {
        _cleanup_free_ char *path = NULL, *reason = NULL;
        uint64_t generation;
        int r;

        *ret_floor = 0;
        if (mkdir(m->state_dir, 0700) < 0 && errno != EEXIST) {
                log_error("cannot create the state directory %s: %m; create it (its parent must exist), or "
                          "start with --state-dir '' to run in memory only",
                          m->state_dir);
                return -EBADE;
        }
        if (asprintf(&path, "%s/tokenbudget.db", m->state_dir) < 0)
                return -ENOMEM;
        r = store_open(path,
                       m->config.durability_sync == DURABILITY_FULL ? STORE_SYNC_FULL : STORE_SYNC_NORMAL, 0,
                       &m->store, &reason);
        if (r < 0) {
                log_error("%s", reason ?: strerror(-r));
                return r == -ENOMEM ? r : -EBADE;
        }
        store_ledger_key(m->store, key);
        /* A run starts its generations past every earlier run's, so no id
         * repeats; near the end of the 32 bits, a new key instead. */
        if (store_meta_get_u64(m->store, "generation", &generation) >= 0) {
                if (generation < (UINT64_C(1) << 31))
                        *ret_floor = (uint32_t)generation + 1;
                else {
                        log_notice("durable ledger: allocation id generations exhausted; new ids use a "
                                   "fresh key");
                        r = id_key_from_kernel(key);
                        if (r < 0)
                                return r;
                }
        }
        return 0;
}

static int store_restore(Manager *m) {
        BudgetRestoreStats st;
        int r;

        r = budget_restore(m->budget, now_usec(), realtime_usec(), &st);
        if (r < 0) {
                log_error("cannot read %s: %s; move it away to start from zero, or restore it from a backup",
                          store_path(m->store), strerror(-r));
                return r == -ENOMEM ? r : -EBADE;
        }
        log_info("durable ledger %s (sync %s): restored %" PRIu64 " usage row(s) into %" PRIu64
                 " scope(s), %" PRIu64 " tokens in the global day window; %" PRIu64
                 " allocation(s) left open by the last run settled as abandoned; %" PRIu64
                 " runaway breaker(s) open or half-open again; %" PRIu64 " learned class estimate(s)",
                 store_path(m->store), durability_sync_to_string(m->config.durability_sync), st.rows,
                 st.scopes, st.global_tokens, st.abandoned, st.breakers, st.estimator_classes);
        if (st.rows_bad || st.scopes_bad)
                log_warning("durable ledger %s: %" PRIu64 " usage row(s) out of range and %" PRIu64
                            " scope(s) not restorable were skipped",
                            store_path(m->store), st.rows_bad, st.scopes_bad);
        r = budget_restore_limits(m->budget);
        if (r < 0) {
                log_error("cannot read the persistent limits of %s: %s", store_path(m->store), strerror(-r));
                return r == -ENOMEM ? r : -EBADE;
        }
        if (r > 0)
                log_info("durable ledger: %d persistent limit(s) applied", r);
        store_commit_now(m, true);
        return 0;
}

/* ---- status ---- */

static char *status_text_cb(void *userdata) {
        Manager *m = userdata;
        unsigned u = budget_global_utilisation_permille(m->budget, now_usec());
        bool degraded = ledger_scope_get_degraded(budget_global(m->budget));
        size_t waiters = budget_n_waiters(m->budget), held = budget_n_held(m->budget);
        char queue[64] = "", power[64] = "";
        BudgetPower p;
        char *text;

        if (waiters || held)
                snprintf(queue, sizeof(queue), ", %zu waiting, %zu held", waiters, held);
        /* A state other than on AC, cool and unpressured is news. */
        budget_power(m->budget, &p);
        if (p.state != POWER_AC)
                snprintf(power, sizeof(power), "power: %s; ", power_state_to_string(p.state));
        if (asprintf(
                    &text,
                    "%s%s%s%s%s%s%sServing: %zu allocation(s) in flight%s, %s%u%% of the global pool used%s",
                    m->status_note ?: "", m->status_note ? "; " : "",
                    m->durability_degraded ? "DURABILITY DEGRADED: " : "",
                    m->durability_degraded ? store_error_message(m->store) ?: "" : "",
                    m->durability_degraded ? "; " : "",
                    m->config.enforce ? "" : "DRY RUN (enforce = false); ", power,
                    ledger_n_allocations(budget_ledger(m->budget)), queue, degraded ? "DEGRADED (" : "",
                    u / 10, degraded ? ")" : "") < 0)
                return NULL;
        return text;
}

/* Temperatures and pressure are polled while allocations are open or
 * requests wait, or a threshold is near; not at all while idle and cool. */
static void power_polling_update(Manager *m, uint64_t now) {
        BudgetPower p;

        if (!m->power)
                return;
        budget_power(m->budget, &p);
        power_monitor_set_polling(
                m->power, budget_busy(m->budget) || power_near(&m->config.power, p.readings, p.conditions),
                now);
}

static void budget_changed_cb(void *userdata) {
        Manager *m = userdata;
        notify_status_changed(m->notify);
        power_polling_update(m, now_usec());
}

/* ---- power ---- */

static void power_changed_cb(void *userdata, const PowerReadings *r) {
        Manager *m = userdata;
        uint64_t now = now_usec();

        (void)budget_set_power(m->budget, r, now);
        power_polling_update(m, now);
}

static void power_refresh_cb(void *userdata, uint64_t now) {
        Manager *m = userdata;

        if (m->power)
                power_monitor_refresh(m->power, now);
}

static PowerMonitorSettings power_settings(const Config *c) {
        return (PowerMonitorSettings){
                .sensor = c->power.sensor,
                .pressure_file = c->power.pressure_file,
                .poll_usec = c->power.poll_usec,
                .battery_poll_usec = c->power.battery_poll_usec,
        };
}

/* (Re)starts the monitor for the configuration's power group: on start, and
 * on a reload that changed what it reads or how often. Without one the state
 * is "ac" with nothing known. */
static int power_start(Manager *m, uint64_t now) {
        PowerMonitorSettings ps = power_settings(&m->config);
        PowerReadings none;
        int r;

        m->power = power_monitor_free(m->power);
        if (m->config.power.enabled) {
                r = power_monitor_new(m->base, &ps, power_changed_cb, m, &m->power);
                if (r < 0) {
                        log_error("power monitor: %s; running without power awareness", strerror(-r));
                        m->power = NULL;
                } else
                        log_info("power: %zu supply(ies), %zu temperature sensor(s), memory pressure %s%s%s",
                                 power_monitor_n_supplies(m->power), power_monitor_n_sensors(m->power),
                                 power_monitor_readings(m->power)->pressure_cp != POWER_UNKNOWN ? "from "
                                                                                                : "unknown",
                                 power_monitor_readings(m->power)->pressure_cp != POWER_UNKNOWN
                                         ? m->config.power.pressure_file
                                         : "",
                                 power_monitor_has_uevents(m->power) ? ""
                                                                     : "; no uevents (safety poll only)");
        }
        if (m->power)
                (void)budget_set_power(m->budget, power_monitor_readings(m->power), now);
        else {
                power_readings_init(&none);
                (void)budget_set_power(m->budget, &none, now);
        }
        power_polling_update(m, now);
        return 0;
}

static bool power_settings_equal(const PowerConfig *a, const PowerConfig *b) {
        return a->enabled == b->enabled && strcmp(a->sensor, b->sensor) == 0 &&
               strcmp(a->pressure_file, b->pressure_file) == 0 && a->poll_usec == b->poll_usec &&
               a->battery_poll_usec == b->battery_poll_usec;
}

/* ---- reload and shutdown ---- */

/* The parts that take the configuration as it is (the budget took it already). */
static void manager_apply_config(Manager *m) {
        JournalSettings js = journal_settings(&m->config);
        PeerSetLimits pl = peer_limits(&m->config);
        ListenerLimits ll = listener_limits(&m->config);

        peer_set_set_limits(m->peers, &pl);
        if (m->listener)
                listener_set_limits(m->listener, &ll);
        log_set_level(m->config.log_level);
        journal_set_settings(m->journal, &js);
        ratelimit_configure(&m->log_refused, m->config.journal_rate_limit_interval_usec,
                            m->config.journal_rate_limit_burst);
        /* The timeouts may have changed: the next sweep comes at the new interval. */
        event_del(m->sweep_event);
        sweep_schedule(m);
}

/* Errors come one per line; the journal gets them all in the reason field,
 * STATUS= and the MESSAGE the first (STATUS= is one line). */
static void reload_rejected(Manager *m, const char *errors, uint64_t now) {
        Event e = {.reason = errors ? errors : "unreadable"};
        _cleanup_free_ char *first = errors ? strndup(errors, strcspn(errors, "\n")) : NULL;

        free(m->status_note);
        if (asprintf(&m->status_note, "Configuration %s rejected, keeping the old one: %s", m->config_path,
                     first ?: "") < 0)
                m->status_note = NULL;
        journal_emit(m->journal, EVENT_CONFIG_REJECTED, &e, now,
                     "Configuration %s rejected, keeping the old one: %s", m->config_path, first ?: "");
}

static void log_warnings(const char *warnings) {
        for (const char *p = warnings; p && *p;) {
                size_t n = strcspn(p, "\n");
                log_warning("%.*s", (int)n, p);
                p += n + (p[n] == '\n');
        }
}

/* Reads the file (in a child) and applies it. Returns 0, or -errno with the
 * reasons in *ret_errors; the old configuration then stays. */
static int manager_reload_file(Manager *m, char **ret_errors) {
        _cleanup_free_ char *warnings = NULL;
        Config c, old;
        int r;

        *ret_errors = NULL;
        if (!m->config_path) {
                log_info("reload requested; running on built-in defaults, nothing to re-read");
                return 0;
        }
        /* The default file is optional: created after start it is read now;
         * removed, the built-in defaults apply, as they would at a start. */
        if (m->config_optional && access(m->config_path, F_OK) < 0 && errno == ENOENT) {
                r = config_init_defaults(&c);
                if (r >= 0)
                        log_info("reload requested; %s does not exist, using the built-in defaults",
                                 m->config_path);
        } else
                r = config_load_file_isolated(m->config_path, &c, ret_errors, &warnings);
        if (r >= 0) {
                r = config_check_fd_limit(&c, m->fd_limit, m->config_path, ret_errors);
                if (r < 0)
                        config_done(&c);
        }
        if (r < 0)
                return r;
        log_warnings(warnings);
        /* The budget's rules point into m->config: swap, and swap back when
         * the budget cannot take the new one. */
        old = m->config;
        m->config = c;
        r = budget_set_config(m->budget, &m->config);
        if (r < 0) {
                m->config = old;
                config_done(&c);
                if (asprintf(ret_errors, "%s: cannot apply: %s\n", m->config_path, strerror(-r)) < 0)
                        *ret_errors = NULL;
                return r;
        }
        /* Runtime limits went with the old configuration; persistent ones stay. */
        r = budget_restore_limits(m->budget);
        if (r < 0)
                log_error("durable ledger: the persistent limits could not be applied again: %s",
                          strerror(-r));
        if ((m->config.state_directory == NULL) != (old.state_directory == NULL) ||
            (old.state_directory && strcmp(m->config.state_directory, old.state_directory) != 0))
                log_warning("state_directory changed in %s; it takes effect at restart (until then: %s)",
                            m->config_path, m->state_dir[0] ? m->state_dir : "memory only");
        /* The socket we listen on stays. */
        if (strcmp(m->config.socket_path, old.socket_path) != 0)
                log_warning("socket changed in %s; the new path takes effect at restart", m->config_path);
        {
                bool restart = !power_settings_equal(&m->config.power, &old.power);

                config_done(&old);
                manager_apply_config(m);
                /* New thresholds apply to the readings (or new sensors are read). */
                if (restart)
                        (void)power_start(m, now_usec());
                else if (m->power)
                        (void)budget_set_power(m->budget, power_monitor_readings(m->power), now_usec());
                else {
                        PowerReadings none;

                        power_readings_init(&none);
                        (void)budget_set_power(m->budget, &none, now_usec());
                }
        }
        /* Limits may have risen: the waiters try again. */
        budget_retry_all(m->budget, now_usec());
        return 0;
}

/* SIGHUP and the admin Reload. */
static int manager_reload(Manager *m, char **ret_errors) {
        uint64_t now = now_usec();
        int r;

        notify_reloading(m->notify, now);
        r = manager_reload_file(m, ret_errors);
        if (r < 0)
                reload_rejected(m, *ret_errors, now);
        else {
                m->status_note = mfree(m->status_note);
                if (m->config_path)
                        journal_emit(m->journal, EVENT_CONFIG_RELOADED, &(Event){}, now,
                                     "Configuration %s reloaded", m->config_path);
        }
        notify_ready(m->notify);
        return r;
}

static int reload_cb(void *userdata, char **ret_errors) {
        return manager_reload(userdata, ret_errors);
}

static void manager_shutdown(Manager *m) {
        uint64_t now = now_usec();
        size_t n = ledger_n_allocations(budget_ledger(m->budget));
        BudgetStats st = budget_stats(m->budget);
        Event e = {.has_used = true, .used = ledger_scope_committed_total(budget_global(m->budget))};

        m->stopping = true;
        notify_stopping(m->notify);
        if (m->listener)
                listener_stop(m->listener);
        event_del(m->sweep_event);
        event_del(m->wake_event);
        journal_emit(m->journal, EVENT_STOPPING, &e, now,
                     "tokenbudgetd stopping after %" PRIu64 " s: settling %zu open allocation(s); %" PRIu64
                     " granted, %" PRIu64 " refused, %" PRIu64 " abandoned, %" PRIu64 " tokens used",
                     (now - m->start_usec) / USEC_PER_SEC, n, st.n_granted, st.n_refused, st.n_abandoned,
                     e.used);
        /* Held requests are answered (and their answers sent) before the
         * connections close: nobody can approve them after a restart. */
        budget_refuse_held(m->budget, now);
        peer_set_turn_now(m->peers);
        peer_set_close_all(m->peers, "daemon stopping");
        event_base_loopexit(m->base, NULL);
}

static void signal_cb(evutil_socket_t sig, short what, void *userdata) {
        Manager *m = userdata;

        if (sig == SIGHUP) {
                _cleanup_free_ char *errors = NULL;
                (void)manager_reload(m, &errors);
        } else
                manager_shutdown(m);
}

/* ---- setup ---- */

/* Allocation ids must be unguessable (a peer that could guess another's id
 * could probe it) and differ across restarts: the ledger permutes a counter
 * with a key from the kernel's random source, new at every start. */
static int id_key_from_kernel(uint8_t key[static 16]) {
        ssize_t n = getrandom(key, 16, 0);

        if (n != 16)
                return log_error("cannot read a random key for allocation ids: %s",
                                 n < 0 ? strerror(errno) : "short read"),
                       n < 0 ? -errno : -EIO;
        return 0;
}

int manager_new(struct event_base *base, Config *config, const char *config_path, bool config_optional,
                unsigned fd_limit, const char *state_dir, Manager **ret) {
        static const int signals[] = {SIGTERM, SIGINT, SIGHUP};
        static const PeerSetOps peer_ops = {
                .handle_call = handle_call_cb,
                .handle_flat_call = handle_flat_call_cb,
                .disconnected = disconnected_cb,
                .may_close_idle = may_close_idle_cb,
                .commit_pending = commit_pending_cb,
                .commit = commit_cb,
        };
        Manager *m = calloc(1, sizeof(*m));
        uint32_t generation_floor = 0;
        uint8_t key[16];
        int r;

        if (!m)
                return -ENOMEM;
        m->base = base;
        m->config = *config; /* takes ownership */
        *config = (Config){};
        m->config_optional = config_optional;
        m->fd_limit = fd_limit;
        m->start_usec = now_usec();
        if (config_path && !(m->config_path = strdup(config_path)))
                goto oom;
        if (!(m->state_dir = strdup(state_dir ?: "")))
                goto oom;
        log_set_level(m->config.log_level);
        if (m->state_dir[0])
                r = store_start(m, key, &generation_floor);
        else {
                log_notice("running in memory only (--state-dir '' or state_directory = \"\"): a restart "
                           "starts every budget from zero and keeps no history");
                r = id_key_from_kernel(key);
        }
        if (r < 0) {
                manager_free(m);
                return r;
        }
        JournalSettings js = journal_settings(&m->config);
        PeerSetLimits pl = peer_limits(&m->config);
        ListenerLimits ll = listener_limits(&m->config);
        m->journal = journal_new(base, &js);
        m->notify = notify_new(base, status_text_cb, m);
        if (!m->journal || !m->notify)
                goto oom;
        r = budget_new(&m->config, m->journal, key, budget_changed_cb, m, &m->budget);
        if (r < 0)
                goto oom;
        budget_set_id_generation(m->budget, generation_floor);
        budget_set_store(m->budget, m->store);
        /* This run's floor is recorded before its first id leaves (with the
         * restore's commit): the next run starts past it even when no slot
         * was ever reused. */
        if (m->store && store_meta_put_u64(m->store, "generation", generation_floor) < 0)
                goto oom;
        m->store_event = evtimer_new(base, store_event_cb, m);
        if (!m->store_event)
                goto oom;
        if (m->store) {
                r = store_restore(m);
                if (r < 0) {
                        manager_free(m);
                        return r;
                }
        }
        m->peers = peer_set_new(base, &pl, &peer_ops, m);
        if (!m->peers)
                goto oom;
        m->listener = listener_new(base, m->peers, &ll, connection_cb, m);
        m->sweep_event = evtimer_new(base, sweep_cb, m);
        m->wake_event = evtimer_new(base, wake_cb, m);
        m->terminator = terminator_new(base, terminate_done_cb, m);
        if (!m->listener || !m->sweep_event || !m->wake_event || !m->terminator)
                goto oom;
        budget_set_hooks(m->budget, budget_wake_cb, budget_terminate_cb, m);
        budget_set_refresh_hook(m->budget, power_refresh_cb, m);
        (void)power_start(m, now_usec());
        m->context = (DispatchContext){
                .budget = m->budget,
                .store = m->store,
                .config = &m->config,
                .peers = m->peers,
                .start_usec = m->start_usec,
                .reload = reload_cb,
                .userdata = m,
        };
        ratelimit_configure(&m->log_refused, m->config.journal_rate_limit_interval_usec,
                            m->config.journal_rate_limit_burst);
        for (size_t i = 0; i < ELEMENTSOF(signals); i++) {
                m->signal_events[i] = evsignal_new(base, signals[i], signal_cb, m);
                if (!m->signal_events[i] || event_add(m->signal_events[i], NULL) < 0)
                        goto oom;
        }
        *ret = m;
        return 0;
oom:
        manager_free(m);
        return -ENOMEM;
}

Manager *manager_free(Manager *m) {
        if (!m)
                return NULL;
        /* Peers first: closing them settles their clients in the budget. */
        m->peers = peer_set_free(m->peers);
        m->listener = listener_free(m->listener);
        /* What that settled, and every refusal still folded, is written
         * before the store closes. */
        if (m->budget && m->store) {
                m->stopping = true;
                store_commit_now(m, true);
                if (store_pending(m->store))
                        log_error("durable ledger %s: the last writes could not be committed at exit: %s",
                                  store_path(m->store), store_error_message(m->store) ?: "unknown error");
                else if (store_apply(m->store) < 0)
                        log_warning("durable ledger %s: the commit log could not be applied at exit (the "
                                    "next start replays it): %s",
                                    store_path(m->store), store_error_message(m->store) ?: "unknown error");
        }
        if (m->store_event)
                event_free(m->store_event);
        m->store = store_free(m->store);
        free(m->state_dir);
        m->budget = budget_free(m->budget);
        m->power = power_monitor_free(m->power);
        for (size_t i = 0; i < ELEMENTSOF(m->signal_events); i++)
                if (m->signal_events[i])
                        event_free(m->signal_events[i]);
        if (m->sweep_event)
                event_free(m->sweep_event);
        if (m->wake_event)
                event_free(m->wake_event);
        m->terminator = terminator_free(m->terminator);
        m->notify = notify_free(m->notify);
        m->journal = journal_free(m->journal);
        free(m->status_note);
        config_done(&m->config);
        free(m->config_path);
        free(m);
        return NULL;
}

/* What the configuration came from, for messages. */
static const char *config_source(const Manager *m) {
        if (!m->config_path || (m->config_optional && access(m->config_path, F_OK) < 0))
                return "built-in defaults";
        return m->config_path;
}

static void emit_started(Manager *m) {
        const LedgerLimits *g = &m->config.global;

        journal_emit(m->journal, EVENT_STARTED, &(Event){}, now_usec(),
                     "tokenbudgetd " TB_VERSION " started on %s with %s; global limits per minute %" PRIu64
                     ", hour %" PRIu64 ", day %" PRIu64 ", in flight %" PRIu64 " (0: none)",
                     listener_socket_path(m->listener), config_source(m),
                     g->window_tokens[LEDGER_WINDOW_MINUTE], g->window_tokens[LEDGER_WINDOW_HOUR],
                     g->window_tokens[LEDGER_WINDOW_DAY], g->in_flight_tokens);
}

int manager_run(Manager *m, const char *socket_path) {
        int r;

        /* --socket overrides the file's socket without changing the
         * configuration, so a reload compares file with file. */
        r = listener_start(m->listener, socket_path ?: m->config.socket_path);
        if (r < 0)
                return r;
        emit_started(m);
        notify_ready(m->notify);
        if (event_base_dispatch(m->base) < 0)
                return -EIO;
        return 0;
}
