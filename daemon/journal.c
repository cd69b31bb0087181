/* SPDX-License-Identifier: MIT */
/*
 * Structured journal events (journal.h). Each event is one sd_journal_sendv()
 * of MESSAGE_ID, PRIORITY, MESSAGE, SYSLOG_IDENTIFIER and the TOKENBUDGET_*
 * fields the Event sets, formatted into one buffer on the stack: no heap
 * allocation per event. Each kind has its own RateLimit (ratelimit.c); what a
 * limiter refuses is counted, and a summary event ("N similar events
 * suppressed: KIND") is sent when that kind's interval ends, from a libevent
 * timer that is armed only while some kind has suppressed events, or before
 * the next event of that kind if that comes first. The stderr copy is for a
 * daemon run in a terminal; under systemd stderr already goes to the journal
 * and the copy would log everything twice. What this module does not do:
 * decide which events happen (the callers do), or filter by log_level.
 */
#include <assert.h>
#include <errno.h>
#include <event2/event.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

/* sd_journal_sendv() adds no CODE_FILE/CODE_LINE anyway; say so for the macros too. */
#define SD_JOURNAL_SUPPRESS_LOCATION
#include <systemd/sd-journal.h>

#include "journal.h"
#include "power.h"
#include "time-util.h"
#include "utf8.h"
#include "macro.h"
#include "ratelimit.h"

#define SYSLOG_IDENTIFIER "tokenbudgetd"

/* Caps per value, so that every event fits the stack buffer below. Labels
 * (agent, class, allocation) are capped at 255 bytes by the protocol (see
 * dispatch.c) and comm at 15 by the kernel; reasons can carry a list of
 * configuration errors, hence their larger cap. Longer text is cut at a UTF-8
 * character boundary, so journalctl still shows it as text. */
#define LABEL_MAX_BYTES   512
#define REASON_MAX_BYTES  4096
#define MESSAGE_MAX_BYTES 2048

/* MESSAGE_ID, PRIORITY, MESSAGE, SYSLOG_IDENTIFIER, 13 TOKENBUDGET_* fields
 * and 7 of a power event, and the 2 more of a suppression summary. */
#define FIELDS_MAX 26
/* Longer than any "NAME=" we send ("TOKENBUDGET_SUPPRESSED_KIND=" is 28). */
#define FIELD_NAME_MAX_BYTES 32
#define FIELDS_BUFFER_BYTES                                                                                 \
        (FIELDS_MAX * (FIELD_NAME_MAX_BYTES + 1) + MESSAGE_MAX_BYTES + REASON_MAX_BYTES +                   \
         (FIELDS_MAX - 2) * LABEL_MAX_BYTES)

typedef struct KindInfo {
        const char *message_id;
        const char *name; /* TOKENBUDGET_SUPPRESSED_KIND */
        int priority;
} KindInfo;

static const KindInfo kinds[_EVENT_KIND_MAX] = {
        [EVENT_GRANTED] = {TB_MESSAGE_GRANTED, "granted", LOG_DEBUG},
        [EVENT_REFUSED] = {TB_MESSAGE_REFUSED, "refused", LOG_NOTICE},
        [EVENT_WARNING] = {TB_MESSAGE_WARNING, "warning", LOG_WARNING},
        [EVENT_EXCEEDED] = {TB_MESSAGE_EXCEEDED, "exceeded", LOG_ERR},
        [EVENT_ABANDONED] = {TB_MESSAGE_ABANDONED, "abandoned", LOG_WARNING},
        [EVENT_CONFIG_RELOADED] = {TB_MESSAGE_CONFIG_RELOADED, "config-reloaded", LOG_INFO},
        [EVENT_CONFIG_REJECTED] = {TB_MESSAGE_CONFIG_REJECTED, "config-rejected", LOG_ERR},
        [EVENT_STARTED] = {TB_MESSAGE_STARTED, "started", LOG_INFO},
        [EVENT_STOPPING] = {TB_MESSAGE_STOPPING, "stopping", LOG_INFO},
        [EVENT_SUPPRESSED] = {TB_MESSAGE_SUPPRESSED, "suppressed", LOG_WARNING},
        [EVENT_EXPIRED] = {TB_MESSAGE_EXPIRED, "expired", LOG_WARNING},
        [EVENT_SHUTDOWN] = {TB_MESSAGE_SHUTDOWN, "shutdown", LOG_INFO},
        [EVENT_DEGRADED] = {TB_MESSAGE_DEGRADED, "degraded", LOG_WARNING},
        [EVENT_RECOVERED] = {TB_MESSAGE_RECOVERED, "recovered", LOG_INFO},
        [EVENT_BREAKER_OPENED] = {TB_MESSAGE_BREAKER_OPENED, "breaker-opened", LOG_WARNING},
        [EVENT_BREAKER_HALF_OPEN] = {TB_MESSAGE_BREAKER_HALF_OPEN, "breaker-half-open", LOG_INFO},
        [EVENT_BREAKER_CLOSED] = {TB_MESSAGE_BREAKER_CLOSED, "breaker-closed", LOG_INFO},
        [EVENT_ESCALATED] = {TB_MESSAGE_ESCALATED, "escalated", LOG_NOTICE},
        [EVENT_TERMINATED] = {TB_MESSAGE_TERMINATED, "terminated", LOG_WARNING},
        [EVENT_POWER_CHANGED] = {TB_MESSAGE_POWER_CHANGED, "power-changed", LOG_NOTICE},
        [EVENT_DURABILITY_LOST] = {TB_MESSAGE_DURABILITY_LOST, "durability-degraded", LOG_ERR},
        [EVENT_DURABILITY_BACK] = {TB_MESSAGE_DURABILITY_BACK, "durability-restored", LOG_NOTICE},
};

struct Journal {
        JournalSettings settings;
        RateLimit limits[_EVENT_KIND_MAX]; /* EVENT_SUPPRESSED's is never used */
        struct event *timer;               /* NULL without an event base */
        bool timer_armed;
        uint64_t timer_deadline_usec;
        bool copy_to_stderr;
};

const char *event_kind_message_id(EventKind kind) {
        if ((unsigned)kind >= _EVENT_KIND_MAX)
                return NULL;
        return kinds[kind].message_id;
}

/* ---- fields, formatted on the stack ---- */

typedef struct Fields {
        struct iovec iov[FIELDS_MAX];
        size_t n_iov;
        size_t used;
        char buf[FIELDS_BUFFER_BYTES];
} Fields;

/* Not "= {}": zeroing some 15 KiB per event would be wasted work. */
static void fields_init(Fields *f) {
        f->n_iov = 0;
        f->used = 0;
}

/* Starts a field "NAME=" and returns where its value goes, or NULL when the
 * buffer or the iovec array is full (which the sizes above rule out). */
static char *fields_begin(Fields *f, const char *name, size_t value_max_bytes) {
        size_t name_len = strlen(name);

        assert(name_len <= FIELD_NAME_MAX_BYTES);
        if (f->n_iov >= FIELDS_MAX || sizeof(f->buf) - f->used < name_len + value_max_bytes + 1)
                return NULL;
        memcpy(f->buf + f->used, name, name_len);
        return f->buf + f->used + name_len;
}

static void fields_end(Fields *f, const char *value, size_t value_len) {
        char *start = f->buf + f->used;
        size_t len = (size_t)(value - start) + value_len;

        start[len] = '\0';
        f->iov[f->n_iov++] = (struct iovec){.iov_base = start, .iov_len = len};
        f->used += len + 1;
}

static void fields_add_string(Fields *f, const char *name, const char *value, size_t max_bytes) {
        size_t len;
        char *p;

        if (!value)
                return;
        p = fields_begin(f, name, max_bytes);
        if (!p)
                return;
        len = strnlen(value, max_bytes + 1);
        if (len > max_bytes)
                len = utf8_cut(value, max_bytes);
        memcpy(p, value, len);
        fields_end(f, p, len);
}

static void fields_add_u64(Fields *f, const char *name, uint64_t value) {
        char text[24];

        snprintf(text, sizeof(text), "%" PRIu64, value);
        fields_add_string(f, name, text, sizeof(text));
}

/* Adds MESSAGE= and returns the message text (NUL-terminated in the buffer). */
static const char *fields_add_message(Fields *f, const char *fmt, va_list ap) _printf_(2, 0);
static const char *fields_add_message(Fields *f, const char *fmt, va_list ap) {
        char *p = fields_begin(f, "MESSAGE=", MESSAGE_MAX_BYTES);
        int r;
        size_t len;

        if (!p)
                return "";
        r = vsnprintf(p, MESSAGE_MAX_BYTES + 1, fmt, ap);
        len = r < 0 ? 0 : (size_t)r;
        if (len > MESSAGE_MAX_BYTES)
                len = utf8_cut(p, MESSAGE_MAX_BYTES);
        fields_end(f, p, len);
        return p;
}

static const char *fields_add_messagef(Fields *f, const char *fmt, ...) _printf_(2, 3);
static const char *fields_add_messagef(Fields *f, const char *fmt, ...) {
        const char *message;
        va_list ap;

        va_start(ap, fmt);
        message = fields_add_message(f, fmt, ap);
        va_end(ap);
        return message;
}

static void fields_add_kind(Fields *f, EventKind kind) {
        fields_add_string(f, "MESSAGE_ID=", kinds[kind].message_id, 32);
        fields_add_u64(f, "PRIORITY=", (uint64_t)kinds[kind].priority);
        fields_add_string(f, "SYSLOG_IDENTIFIER=", SYSLOG_IDENTIFIER, sizeof(SYSLOG_IDENTIFIER));
}

static void fields_add_event(Fields *f, const Event *e) {
        if (!e)
                return;
        fields_add_string(f, "TOKENBUDGET_ALLOCATION=", e->allocation, LABEL_MAX_BYTES);
        if (e->pid > 0)
                fields_add_u64(f, "TOKENBUDGET_PID=", (uint64_t)e->pid);
        if (e->has_uid)
                fields_add_u64(f, "TOKENBUDGET_UID=", (uint64_t)e->uid);
        fields_add_string(f, "TOKENBUDGET_COMM=", e->comm, LABEL_MAX_BYTES);
        fields_add_string(f, "TOKENBUDGET_AGENT=", e->agent, LABEL_MAX_BYTES);
        fields_add_string(f, "TOKENBUDGET_CLASS=", e->task_class, LABEL_MAX_BYTES);
        if (e->has_estimate)
                fields_add_u64(f, "TOKENBUDGET_ESTIMATE=", e->estimate);
        if (e->has_granted)
                fields_add_u64(f, "TOKENBUDGET_GRANTED=", e->granted);
        if (e->has_used)
                fields_add_u64(f, "TOKENBUDGET_USED=", e->used);
        fields_add_string(f, "TOKENBUDGET_SCOPE=", e->scope, LABEL_MAX_BYTES);
        fields_add_string(f, "TOKENBUDGET_DECISION=", e->decision, LABEL_MAX_BYTES);
        fields_add_string(f, "TOKENBUDGET_REASON=", e->reason, REASON_MAX_BYTES);
        if (e->dry_run)
                fields_add_string(f, "TOKENBUDGET_DRY_RUN=", "1", 1);
        fields_add_string(f, "TOKENBUDGET_POWER_STATE=", e->power_state, LABEL_MAX_BYTES);
        fields_add_string(f, "TOKENBUDGET_POWER_PREVIOUS=", e->power_previous, LABEL_MAX_BYTES);
        if (e->power) {
                const PowerReadings *r = e->power;
                char n[24];

                fields_add_string(f, "TOKENBUDGET_ON_AC=", r->on_ac ? "1" : "0", 1);
                if (r->battery_permille != POWER_UNKNOWN)
                        fields_add_string(f, "TOKENBUDGET_BATTERY_PERCENT=",
                                          power_format_fixed(n, r->battery_permille, 1), sizeof(n));
                if (r->temperature_mc != POWER_UNKNOWN) {
                        fields_add_string(f, "TOKENBUDGET_TEMPERATURE=",
                                          power_format_fixed(n, r->temperature_mc / 100, 1), sizeof(n));
                        fields_add_string(f, "TOKENBUDGET_SENSOR=", r->sensor, LABEL_MAX_BYTES);
                }
                if (r->pressure_cp != POWER_UNKNOWN)
                        fields_add_string(f, "TOKENBUDGET_MEMORY_PRESSURE=",
                                          power_format_fixed(n, r->pressure_cp, 2), sizeof(n));
        }
}

/* ---- sending ---- */

/* "<PRIORITY>MESSAGE\n" in one write(2), so lines never interleave. Control
 * characters (a newline in a client's agent name, say) become '?': one event
 * is one line, and nobody can forge another. */
static void copy_to_stderr(int priority, const char *message) {
        char line[MESSAGE_MAX_BYTES + 8];
        int n = snprintf(line, sizeof(line), "<%d>", priority);
        int saved_errno = errno;

        for (const char *p = message; *p && (size_t)n < sizeof(line) - 1; p++, n++)
                line[n] = ((unsigned char)*p < 0x20 || *p == 0x7f) ? '?' : *p;
        line[n++] = '\n';
        (void)!write(STDERR_FILENO, line, (size_t)n);
        errno = saved_errno;
}

static void send_fields(Journal *j, EventKind kind, Fields *f, const char *message) {
        /* Errors are ignored on purpose: journald being away must not stop the
         * daemon, and there is nowhere better to report it. */
        (void)sd_journal_sendv(f->iov, (int)f->n_iov);
        if (j->copy_to_stderr)
                copy_to_stderr(kinds[kind].priority, message);
}

static void send_event(Journal *j, EventKind kind, const Event *e, const char *fmt, va_list ap)
        _printf_(4, 0);
static void send_event(Journal *j, EventKind kind, const Event *e, const char *fmt, va_list ap) {
        Fields f;
        const char *message;

        fields_init(&f);
        fields_add_kind(&f, kind);
        message = fields_add_message(&f, fmt, ap);
        fields_add_event(&f, e);
        send_fields(j, kind, &f, message);
}

/* Sends "N similar events suppressed: KIND" if kind has suppressed events. */
static bool send_summary(Journal *j, EventKind kind) {
        RateLimit *rl = &j->limits[kind];
        uint64_t n = ratelimit_take_suppressed(rl);
        char reason[128];
        const char *message;
        Fields f;

        if (n == 0)
                return false;
        snprintf(reason, sizeof(reason), "rate limit: more than %" PRIu64 " %s events in %g s", rl->burst,
                 kinds[kind].name, (double)rl->interval_usec / 1e6);
        fields_init(&f);
        fields_add_kind(&f, EVENT_SUPPRESSED);
        message = fields_add_messagef(&f, "%" PRIu64 " similar events suppressed: %s", n, kinds[kind].name);
        fields_add_string(&f, "TOKENBUDGET_REASON=", reason, REASON_MAX_BYTES);
        fields_add_u64(&f, "TOKENBUDGET_SUPPRESSED=", n);
        fields_add_string(&f, "TOKENBUDGET_SUPPRESSED_KIND=", kinds[kind].name, LABEL_MAX_BYTES);
        send_fields(j, EVENT_SUPPRESSED, &f, message);
        return true;
}

static void send_all_summaries(Journal *j) {
        for (EventKind k = 0; k < _EVENT_KIND_MAX; k++)
                (void)send_summary(j, k);
}

/* ---- the summary timer ---- */

/* Arms the timer for the earliest end of an interval that has suppressed
 * events, or disarms it when there is none: an idle daemon never wakes. */
static void timer_update(Journal *j, uint64_t now_usec) {
        uint64_t deadline_usec = RATELIMIT_NEVER_USEC, delay_usec;
        struct timeval tv;

        for (EventKind k = 0; k < _EVENT_KIND_MAX; k++)
                if (j->limits[k].n_suppressed > 0 && ratelimit_end_usec(&j->limits[k]) < deadline_usec)
                        deadline_usec = ratelimit_end_usec(&j->limits[k]);
        if (!j->timer || deadline_usec == RATELIMIT_NEVER_USEC) {
                if (j->timer_armed)
                        evtimer_del(j->timer);
                j->timer_armed = false;
                return;
        }
        if (j->timer_armed && j->timer_deadline_usec == deadline_usec)
                return;
        delay_usec = deadline_usec > now_usec ? deadline_usec - now_usec : 0;
        tv = (struct timeval){.tv_sec = (time_t)(delay_usec / 1000000),
                              .tv_usec = (suseconds_t)(delay_usec % 1000000)};
        j->timer_armed = evtimer_add(j->timer, &tv) == 0;
        j->timer_deadline_usec = deadline_usec;
}

static void timer_cb(evutil_socket_t fd, short what, void *userdata) {
        Journal *j = userdata;
        uint64_t now = now_usec();

        /* A one-shot timer is no longer pending once it fired. It may fire a
         * little early (libevent's coarse clock): then nothing is due yet and
         * timer_update() re-arms for the rest. */
        j->timer_armed = false;
        for (EventKind k = 0; k < _EVENT_KIND_MAX; k++)
                if (j->limits[k].n_suppressed > 0 && ratelimit_interval_over(&j->limits[k], now))
                        (void)send_summary(j, k);
        timer_update(j, now);
}

/* ---- the API ---- */

void journal_emit(Journal *j, EventKind kind, const Event *e, uint64_t now_usec, const char *message_fmt,
                  ...) {
        RateLimit *rl;
        bool summary_sent = false;
        va_list ap;

        assert((unsigned)kind < _EVENT_KIND_MAX);
        assert(message_fmt);

        if (!j)
                return;
        if (kind == EVENT_GRANTED && !j->settings.log_granted)
                return;
        /* Summaries are at most one per kind per interval by construction. */
        if (kind != EVENT_SUPPRESSED) {
                rl = &j->limits[kind];
                if (rl->n_suppressed > 0 && ratelimit_interval_over(rl, now_usec))
                        summary_sent = send_summary(j, kind);
                if (!ratelimit_test(rl, now_usec)) {
                        /* Only the first suppression of an interval can move the deadline. */
                        if (rl->n_suppressed == 1)
                                timer_update(j, now_usec);
                        return;
                }
        }
        va_start(ap, message_fmt);
        send_event(j, kind, e, message_fmt, ap);
        va_end(ap);
        if (summary_sent)
                timer_update(j, now_usec);
}

/* Whether $JOURNAL_STREAM ("DEVICE:INODE", see systemd.exec(5)) names the file
 * stderr is open on: then stderr already goes to the journal. */
static bool stderr_is_journal(const struct stat *st) {
        const char *v = getenv("JOURNAL_STREAM");
        unsigned long long dev, ino;
        char *end;

        if (!v || !*v)
                return false;
        errno = 0;
        dev = strtoull(v, &end, 10);
        if (errno != 0 || end == v || *end != ':')
                return false;
        v = end + 1;
        ino = strtoull(v, &end, 10);
        if (errno != 0 || end == v || *end != '\0')
                return false;
        return (unsigned long long)st->st_dev == dev && (unsigned long long)st->st_ino == ino;
}

static void limits_configure(Journal *j) {
        for (EventKind k = 0; k < _EVENT_KIND_MAX; k++)
                ratelimit_configure(&j->limits[k], j->settings.rate_limit_interval_usec,
                                    j->settings.rate_limit_burst);
}

Journal *journal_new(struct event_base *base, const JournalSettings *settings) {
        Journal *j;
        struct stat st;

        assert(settings);

        j = calloc(1, sizeof(*j));
        if (!j)
                return NULL;
        j->settings = *settings;
        limits_configure(j);
        if (base) {
                j->timer = evtimer_new(base, timer_cb, j);
                if (!j->timer) {
                        free(j);
                        return NULL;
                }
        }
        /* Without a valid stderr, fd 2 may later be some other file: never write to it. */
        j->copy_to_stderr = fstat(STDERR_FILENO, &st) == 0 && !stderr_is_journal(&st);
        return j;
}

Journal *journal_free(Journal *j) {
        if (!j)
                return NULL;
        send_all_summaries(j);
        if (j->timer)
                event_free(j->timer);
        free(j);
        return NULL;
}

void journal_set_settings(Journal *j, const JournalSettings *settings) {
        bool limits_changed;

        assert(j);
        assert(settings);

        limits_changed = settings->rate_limit_interval_usec != j->settings.rate_limit_interval_usec ||
                         settings->rate_limit_burst != j->settings.rate_limit_burst;
        j->settings = *settings;
        if (!limits_changed)
                return;
        /* What the old limits suppressed is reported under them, now; then
         * every kind starts afresh under the new ones. */
        send_all_summaries(j);
        limits_configure(j);
        timer_update(j, now_usec());
}
