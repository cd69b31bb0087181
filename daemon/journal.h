/* SPDX-License-Identifier: MIT */
/*
 * Structured journal events: one sd_journal_send() per event that matters to
 * an admin, each kind with a stable MESSAGE_ID (listed in README.md and
 * explained in systemd/tokenbudgetd.catalog), a PRIORITY, a readable MESSAGE
 * and TOKENBUDGET_* fields. Per-kind rate limiting keeps a client from
 * flooding the journal: past the burst, events of that kind are counted and
 * a "N similar events suppressed" event follows when the interval ends.
 * When stderr is not already connected to the journal ($JOURNAL_STREAM), each
 * event's MESSAGE is also written to stderr with its priority prefix, so a
 * daemon run in a terminal shows them. Shell module (libsystemd, libevent).
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

struct event_base;

/* The MESSAGE_IDs: stable forever, generated once with uuid4. */
#define TB_MESSAGE_GRANTED           "ff0ca7adae7348e08cde76574c73f0ec"
#define TB_MESSAGE_REFUSED           "ceff3c7466fe46e5a8615267fc49572e"
#define TB_MESSAGE_WARNING           "c3188584779f4bf6aed13075894d75bd"
#define TB_MESSAGE_EXCEEDED          "51f53100913f45c6846e6c1e39a1bb0d"
#define TB_MESSAGE_ABANDONED         "d1c7574e46cd4bdcbb94682ebda003a9"
#define TB_MESSAGE_CONFIG_RELOADED   "cb948b36e5314bcfb8e13d6a278039ee"
#define TB_MESSAGE_CONFIG_REJECTED   "d39f597fe17f40c689b1d2371e4d7f25"
#define TB_MESSAGE_STARTED           "326d00ba4c9f42a9a4e0edd973fe2486"
#define TB_MESSAGE_STOPPING          "e55d1b5b48884a43b10c1f92b6d02ea7"
#define TB_MESSAGE_SUPPRESSED        "1f686d1b9263474e9e12148446fedb63"
#define TB_MESSAGE_EXPIRED           "07686839fc6c4b06be24723f27385292"
#define TB_MESSAGE_SHUTDOWN          "bf0fb52768bb4c6ca8660bcec4db9484"
#define TB_MESSAGE_DEGRADED          "97bb919b9f034bd7807a0005b0544e73"
#define TB_MESSAGE_RECOVERED         "8a09b4cceac64c599dd820735d716bab"
#define TB_MESSAGE_BREAKER_OPENED    "2bf4390b2683408a96b8fdf34d159989"
#define TB_MESSAGE_BREAKER_HALF_OPEN "4809375e89e94560a75f001818e101c6"
#define TB_MESSAGE_BREAKER_CLOSED    "fd1d0c365ba6401c9f3ffa9db869dbcc"
#define TB_MESSAGE_ESCALATED         "54bb30494f0c47509b35165d1561bf50"
#define TB_MESSAGE_TERMINATED        "6acd8f4a435b44aeb6c133d20f73b39b"
#define TB_MESSAGE_POWER_CHANGED     "e707efca0a954001b0860e42928445e8"
#define TB_MESSAGE_DURABILITY_LOST   "6e9fb011deb64558b03bb8367c308a32"
#define TB_MESSAGE_DURABILITY_BACK   "193f25fbe66243c982260b14bb19352d"

typedef enum EventKind {
        EVENT_GRANTED,           /* debug; only when journal.log_granted = true */
        EVENT_REFUSED,           /* notice */
        EVENT_WARNING,           /* warning: an allocation's usage reached warnAt */
        EVENT_EXCEEDED,          /* err: an allocation's usage reached hardLimit */
        EVENT_ABANDONED,         /* warning: the peer went away with the allocation open */
        EVENT_CONFIG_RELOADED,   /* info */
        EVENT_CONFIG_REJECTED,   /* err: a reload found a bad file; the old config stays */
        EVENT_STARTED,           /* info */
        EVENT_STOPPING,          /* info, with a summary */
        EVENT_SUPPRESSED,        /* warning: N events of one kind were rate limited */
        EVENT_EXPIRED,           /* warning: an allocation had no report for allocation_idle_timeout_sec */
        EVENT_SHUTDOWN,          /* info: an allocation still open at SIGTERM was settled */
        EVENT_DEGRADED,          /* warning: a scope reached breaker.pool_threshold (degraded mode) */
        EVENT_RECOVERED,         /* info: a scope went back below breaker.pool_release */
        EVENT_BREAKER_OPENED,    /* warning: a runaway breaker tripped open (or reopened) */
        EVENT_BREAKER_HALF_OPEN, /* info: its cool-down ended: one request may go through */
        EVENT_BREAKER_CLOSED,    /* info: the half-open probe stayed within its hard limit */
        EVENT_ESCALATED,         /* notice: an oversized request was refused, held, approved or denied */
        EVENT_TERMINATED,        /* warning: a process at its hard limit was stopped (or could not be) */
        EVENT_POWER_CHANGED,     /* notice: the power conditions changed (battery, heat, memory pressure) */
        EVENT_DURABILITY_LOST,   /* err: the durable ledger cannot be written (full disk, I/O error) */
        EVENT_DURABILITY_BACK,   /* notice: writes to the durable ledger work again */
        _EVENT_KIND_MAX,
} EventKind;

/* What an event is about. Unset strings (NULL) and numbers whose has_* flag
 * is false are not sent. */
typedef struct Event {
        const char *allocation; /* TOKENBUDGET_ALLOCATION */
        pid_t pid;              /* TOKENBUDGET_PID, when > 0 */
        uid_t uid;              /* TOKENBUDGET_UID, when has_uid */
        bool has_uid;
        const char *comm;       /* TOKENBUDGET_COMM */
        const char *agent;      /* TOKENBUDGET_AGENT */
        const char *task_class; /* TOKENBUDGET_CLASS */
        uint64_t estimate;      /* TOKENBUDGET_ESTIMATE, when has_estimate */
        bool has_estimate;
        uint64_t granted; /* TOKENBUDGET_GRANTED, when has_granted */
        bool has_granted;
        uint64_t used; /* TOKENBUDGET_USED, when has_used */
        bool has_used;
        const char *scope;    /* TOKENBUDGET_SCOPE */
        const char *decision; /* TOKENBUDGET_DECISION */
        const char *reason;   /* TOKENBUDGET_REASON: why, in words */
        bool dry_run;         /* TOKENBUDGET_DRY_RUN=1: enforce = false, nothing was enforced */
        /* Power events: TOKENBUDGET_POWER_STATE, TOKENBUDGET_POWER_PREVIOUS and
         * the readings: TOKENBUDGET_ON_AC (1/0), TOKENBUDGET_BATTERY_PERCENT,
         * TOKENBUDGET_TEMPERATURE (°C), TOKENBUDGET_SENSOR and
         * TOKENBUDGET_MEMORY_PRESSURE (percent), each when known. */
        const char *power_state, *power_previous;
        const struct PowerReadings *power;
} Event;

typedef struct JournalSettings {
        bool log_granted;                  /* journal.log_granted, default false */
        uint64_t rate_limit_interval_usec; /* journal.rate_limit_interval_sec, default 10 s */
        uint64_t rate_limit_burst;         /* journal.rate_limit_burst, default 20 per kind per interval */
} JournalSettings;

typedef struct Journal Journal;

/* base: for the timer that emits suppression summaries (armed only while
 * something was suppressed: an idle daemon has no timer). */
Journal *journal_new(struct event_base *base, const JournalSettings *settings);
/* Emits what is still suppressed as summaries, then frees. NULL-safe. */
Journal *journal_free(Journal *j);
void journal_set_settings(Journal *j, const JournalSettings *settings);
/* Sends one event (or counts it when rate limited). message is the MESSAGE
 * text; now_usec is monotonic. Never fails the caller: journal errors are
 * ignored (a daemon must not stop serving because journald is gone). */
void journal_emit(Journal *j, EventKind kind, const Event *e, uint64_t now_usec, const char *message_fmt,
                  ...) __attribute__((format(printf, 5, 6)));
const char *event_kind_message_id(EventKind kind);
