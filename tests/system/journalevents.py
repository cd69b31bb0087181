# SPDX-License-Identifier: MIT
"""Triggers every journal event kind through the real daemon and reads the
entries back from the real (private) systemd-journald with journalctl. Used
by test-journal.py (fields) and test-catalog.py (journalctl -x text); both
run under with-journald.sh.

Daemon A (journal.log_granted = true, 10000 tokens in flight per process):
started; granted for a Request; warning and exceeded from Reports past warnAt
(1.5x) and hardLimit (2x); abandoned when a second connection closes with its
allocation open; refused for a Request that does not fit in flight; config
reloaded / rejected on SIGHUP with a good / broken file; stopping on SIGTERM.
Daemon C (allocation_idle_timeout_sec = 1): expired for an allocation with
no report for a second; settled at shutdown (not abandoned) for one still
open at SIGTERM.
Daemon B (defaults but burst 3 per 1 s, 100 tokens in flight per process):
no granted event (off by default); 10 refusals give 3 refused events and
one "7 similar events suppressed" summary, after which refusals are logged
again."""

import json
import os
import signal
import subprocess
import time

from tbtest import Daemon, VarlinkError, check, check_stderr_prefixes, env, message_ids, wait_until, write


def journal_entries(message_id, pid):
    subprocess.run(["journalctl", "--sync"], check=True, capture_output=True)
    out = subprocess.run(["journalctl", "-o", "json", "--no-pager", f"MESSAGE_ID={message_id}",
                          f"_PID={pid}"], capture_output=True, text=True)
    return [json.loads(line) for line in out.stdout.splitlines() if line.strip()]


def wait_entries(message_id, pid, count, what, timeout_sec=5):
    """Waits until at least count entries exist; returns them all."""
    found = []

    def enough():
        found[:] = journal_entries(message_id, pid)
        return len(found) >= count

    try:
        wait_until(enough, timeout_sec, what)
    except AssertionError:
        raise AssertionError(f"{len(found)} '{what}' journal entries (MESSAGE_ID={message_id}, _PID={pid}) "
                             f"within {timeout_sec} s, expected {count}")
    return found


class Events:
    """What drive() produced: kind -> (entry, daemon pid)."""

    def __init__(self):
        self.entries = {}
        self.expected = {}  # kind -> {field: value or callable(value) -> bool}

    def add(self, kind, entry, pid, expected):
        self.entries[kind] = (entry, pid)
        self.expected[kind] = expected


def _me():
    with open("/proc/self/comm") as f:
        comm = f.read().strip()
    return {"TOKENBUDGET_PID": str(os.getpid()), "TOKENBUDGET_UID": str(os.getuid()), "TOKENBUDGET_COMM": comm}


def _one(ids, kind, pid, what, expected, events):
    entries = wait_entries(ids[kind], pid, 1, what)
    check(len(entries) == 1, f"{len(entries)} '{what}' entries, expected 1: {entries}")
    events.add(kind, entries[0], pid, expected)
    return entries[0]


def drive_daemon_a(work, ids, events):
    cfg = os.path.join(work, "a.conf")
    good = "journal: { log_granted = true; };\nprocess: { max_tokens_in_flight = 10000; };\n"
    write(cfg, good)
    d = Daemon(work, "a", config=cfg).wait_serving()
    me = _me()
    _one(ids, "STARTED", d.pid, "started", {"PRIORITY": "6", "MESSAGE": lambda m: d.socket_path in m}, events)

    c = d.connect()
    g = c.call("io.tokenbudget.agent.Request", estimate=1000, agent="journal-test", **{"class": "summarize"})
    alloc = {**me, "TOKENBUDGET_ALLOCATION": g["allocation"], "TOKENBUDGET_AGENT": "journal-test",
             "TOKENBUDGET_CLASS": "summarize", "TOKENBUDGET_ESTIMATE": "1000", "TOKENBUDGET_GRANTED": "1000"}
    _one(ids, "GRANTED", d.pid, "granted", {**alloc, "PRIORITY": "7", "TOKENBUDGET_DECISION": "granted"}, events)

    r = c.call("io.tokenbudget.agent.Report", allocation=g["allocation"], inputTokens=1000, outputTokens=500)
    check(r.get("state") == "warning", f"fixture: Report of 1500 of 1000 granted: {r}")
    _one(ids, "WARNING", d.pid, "warning", {**alloc, "PRIORITY": "4", "TOKENBUDGET_USED": "1500"}, events)
    r = c.call("io.tokenbudget.agent.Report", allocation=g["allocation"], inputTokens=1200, outputTokens=800)
    check(r.get("state") == "exceeded", f"fixture: Report of 2000 of 1000 granted: {r}")
    _one(ids, "EXCEEDED", d.pid, "exceeded", {**alloc, "PRIORITY": "3", "TOKENBUDGET_USED": "2000"}, events)

    c2 = d.connect()
    g2 = c2.call("io.tokenbudget.agent.Request", estimate=300, agent="abandoner")
    c2.call("io.tokenbudget.agent.Report", allocation=g2["allocation"], inputTokens=200, outputTokens=100)
    c2.close()
    _one(ids, "ABANDONED", d.pid, "abandoned",
         {**me, "PRIORITY": "4", "TOKENBUDGET_ALLOCATION": g2["allocation"], "TOKENBUDGET_AGENT": "abandoner",
          "TOKENBUDGET_GRANTED": "300", "TOKENBUDGET_USED": "300",
          "TOKENBUDGET_REASON": lambda v: bool(v.strip())}, events)
    check(len(journal_entries(ids["GRANTED"], d.pid)) == 2, "expected one granted entry per grant (2)")

    # 2000 reserved + 16000 asked > 10000 tokens in flight for this process.
    try:
        c.call("io.tokenbudget.agent.Request", estimate=8000, agent="journal-test")
        raise AssertionError("fixture: a Request of 8000 should be refused")
    except VarlinkError as e:
        check(e.parameters.get("scope") == f"process:{os.getpid()}", f"fixture: refusal {e}")
    _one(ids, "REFUSED", d.pid, "refused",
         {**me, "PRIORITY": "5", "TOKENBUDGET_ESTIMATE": "8000", "TOKENBUDGET_AGENT": "journal-test",
          "TOKENBUDGET_SCOPE": f"process:{os.getpid()}", "TOKENBUDGET_DECISION": "refused",
          "TOKENBUDGET_REASON": lambda v: f"process:{os.getpid()}" in v}, events)

    write(cfg, good + "default_estimate = 3000;\n")
    d.signal(signal.SIGHUP)
    _one(ids, "CONFIG_RELOADED", d.pid, "config reloaded", {"PRIORITY": "6", "MESSAGE": lambda m: cfg in m}, events)
    write(cfg, good + "hard_multiplier = 7.5;\n")
    d.signal(signal.SIGHUP)
    _one(ids, "CONFIG_REJECTED", d.pid, "config rejected",
         {"PRIORITY": "3", "MESSAGE": lambda m: cfg in m,
          "TOKENBUDGET_REASON": lambda v: f"{cfg}:3: hard_multiplier" in v}, events)
    # Still serving with the old configuration after the rejection.
    check(c.call("org.varlink.service.GetInfo").get("product") == "tokenbudgetd", "no answer after a rejected reload")

    status = d.stop()
    check(status == 0, f"daemon A: exit status {status} after SIGTERM")
    _one(ids, "STOPPING", d.pid, "stopping",
         {"PRIORITY": "6", "TOKENBUDGET_USED": lambda v: v.isdigit() and int(v) >= 2300}, events)
    c.close()
    check_stderr_prefixes(d.stderr(), "daemon A")


def drive_daemon_b(work, ids, events):
    cfg = write(os.path.join(work, "b.conf"), "journal: { rate_limit_burst = 3; rate_limit_interval_sec = 1; };\n"
                "process: { max_tokens_in_flight = 100; };\n")
    d = Daemon(work, "b", config=cfg).wait_serving()
    c = d.connect()
    g = c.call("io.tokenbudget.agent.Request", estimate=10)
    c.call("io.tokenbudget.agent.Release", allocation=g["allocation"])

    refusals = 0
    for _ in range(10):
        try:
            c.call("io.tokenbudget.agent.Request", estimate=1000)
        except VarlinkError:
            refusals += 1
    check(refusals == 10, f"fixture: {refusals} of 10 Requests refused")
    summary = _one(ids, "SUPPRESSED", d.pid, "suppressed",
                   {"PRIORITY": "4", "MESSAGE": lambda m: "7 similar events suppressed" in m,
                    "TOKENBUDGET_SUPPRESSED": "7", "TOKENBUDGET_SUPPRESSED_KIND": "refused"}, events)
    refused = journal_entries(ids["REFUSED"], d.pid)
    check(len(refused) == 3, f"{len(refused)} refused entries with a burst of 3, expected 3")
    check(summary["__REALTIME_TIMESTAMP"] > refused[-1]["__REALTIME_TIMESTAMP"],
          "the suppression summary came before the refusals it summarises")
    check(not journal_entries(ids["GRANTED"], d.pid), "a granted entry without journal.log_granted")

    # The interval is over: refusals are logged again.
    time.sleep(1.2)
    try:
        c.call("io.tokenbudget.agent.Request", estimate=1000)
    except VarlinkError:
        pass
    wait_entries(ids["REFUSED"], d.pid, 4, "refused after the rate limit interval")
    c.close()
    check(d.stop() == 0, "daemon B: exit status after SIGTERM")
    check_stderr_prefixes(d.stderr(), "daemon B")


def drive_daemon_c(work, ids, events):
    cfg = write(os.path.join(work, "c.conf"), "limits: { allocation_idle_timeout_sec = 1; };\n")
    d = Daemon(work, "c", config=cfg).wait_serving()
    me = _me()
    c = d.connect()
    g = c.call("io.tokenbudget.agent.Request", estimate=500, agent="sleeper")
    c.call("io.tokenbudget.agent.Report", allocation=g["allocation"], inputTokens=40, outputTokens=2)
    _one(ids, "EXPIRED", d.pid, "expired",
         {**me, "PRIORITY": "4", "TOKENBUDGET_ALLOCATION": g["allocation"], "TOKENBUDGET_AGENT": "sleeper",
          "TOKENBUDGET_GRANTED": "500", "TOKENBUDGET_USED": "42",
          "TOKENBUDGET_REASON": lambda v: "allocation_idle_timeout_sec" in v}, events)
    try:
        c.call("io.tokenbudget.agent.Report", allocation=g["allocation"], inputTokens=50, outputTokens=2)
        raise AssertionError("a Report of an expired allocation was accepted")
    except VarlinkError as e:
        check(e.error == "io.tokenbudget.agent.UnknownAllocation", f"Report after expiry: {e}")

    g2 = c.call("io.tokenbudget.agent.Request", estimate=700, agent="stayer")
    c.call("io.tokenbudget.agent.Report", allocation=g2["allocation"], inputTokens=7, outputTokens=0)
    check(d.stop() == 0, "daemon C: exit status after SIGTERM")
    _one(ids, "SHUTDOWN", d.pid, "settled at shutdown",
         {**me, "PRIORITY": "6", "TOKENBUDGET_ALLOCATION": g2["allocation"], "TOKENBUDGET_AGENT": "stayer",
          "TOKENBUDGET_GRANTED": "700", "TOKENBUDGET_USED": "7",
          "TOKENBUDGET_REASON": lambda v: "stopping" in v}, events)
    check(not journal_entries(ids["ABANDONED"], d.pid), "an allocation settled at shutdown was logged as abandoned")
    c.close()
    check_stderr_prefixes(d.stderr(), "daemon C")


def drive(work):
    ids = message_ids(env("SRCDIR"))
    events = Events()
    drive_daemon_a(work, ids, events)
    drive_daemon_b(work, ids, events)
    drive_daemon_c(work, ids, events)
    return ids, events
