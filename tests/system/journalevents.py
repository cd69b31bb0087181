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
again.
Daemons D (one small daemon per scenario): degraded / recovered when a grant
of 800 of a global max_tokens_in_flight of 1000 (multipliers 1.0) reaches
breaker.pool_threshold 0.8 and its release frees it; breaker opened,
half-open and closed (runaway_breaches = 1, cooldown_sec = 1) for one Report
past hardLimit, a Request after the cool-down, and that probe released
within its limit; escalated for a Request of 1000 over max_request_tokens =
100; terminated (sigterm, then exited) for a child whose comm is tb-runaway
under a rule with on_hard_limit = "terminate"; and a refused entry with
TOKENBUDGET_DRY_RUN=1 for a Request granted under enforce = false; power
changed at start (a PSI fixture file at 50% memory pressure pauses
background) and back to "ac" when the file says 1%; durability degraded
when the durable ledger's file system (a 2 MiB tmpfs) is filled while a
Request is committed, and restored when the filler goes (the daemon retries
every second)."""

import json
import os
import signal
import subprocess
import sys
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


def _one(ids, kind, pid, what, expected, events, count=1, index=0):
    """Waits for exactly count entries of kind; entry number index is the one
    checked (test-journal.py) and explained (test-catalog.py)."""
    entries = wait_entries(ids[kind], pid, count, what)
    check(len(entries) == count, f"{len(entries)} '{what}' entries, expected {count}: {entries}")
    events.add(kind, entries[index], pid, expected)
    return entries[index]


def _check_fields(what, entry, expected):
    """The check test-journal.py makes, for an entry that is not the one of its kind."""
    for field, want in expected.items():
        got = entry.get(field)
        ok = isinstance(got, str) and want(got) if callable(want) else got == want
        check(ok, f"{what}: {field}={got!r} is not as expected ({entry.get('MESSAGE')!r})")


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
          "TOKENBUDGET_REASON": lambda v: f"process:{os.getpid()}" in v, "TOKENBUDGET_DRY_RUN": None}, events)

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


RUNAWAY = """import json, sys, time
sys.path.insert(0, sys.argv[1])
from tbtest import Varlink
c = Varlink(sys.argv[2])
g = c.call("io.tokenbudget.agent.Request", estimate=10, agent="runaway")
with open("/proc/self/comm") as f:
    print(json.dumps({"comm": f.read().strip(), "allocation": g["allocation"]}), flush=True)
# The SIGTERM may come before this reply does.
r = c.call("io.tokenbudget.agent.Report", allocation=g["allocation"], inputTokens=0, outputTokens=30)
print(json.dumps({"report": r}), flush=True)
time.sleep(60)
"""


def _d_pool(work, ids, events):
    cfg = write(os.path.join(work, "d-pool.conf"), "hard_multiplier = 1.0;\nwarn_multiplier = 1.0;\n"
                "global: { max_tokens_in_flight = 1000; };\n")
    d = Daemon(work, "d-pool", config=cfg).wait_serving()
    c = d.connect()
    g = c.call("io.tokenbudget.agent.Request", estimate=800)
    check(g.get("granted") == 800, f"fixture: a Request of 800 of 1000 in flight: {g}")
    _one(ids, "DEGRADED", d.pid, "degraded",
         {"PRIORITY": "4", "TOKENBUDGET_SCOPE": "global",
          "TOKENBUDGET_REASON": lambda v: "80.0%" in v and "breaker.pool_threshold" in v}, events)
    check(not journal_entries(ids["RECOVERED"], d.pid), "recovered while the grant is still open")
    c.call("io.tokenbudget.agent.Release", allocation=g["allocation"], inputTokens=0, outputTokens=0)
    _one(ids, "RECOVERED", d.pid, "recovered",
         {"PRIORITY": "6", "TOKENBUDGET_SCOPE": "global",
          "TOKENBUDGET_REASON": lambda v: "breaker.pool_release" in v}, events)
    c.close()
    check(d.stop() == 0, "daemon D (pool): exit status after SIGTERM")
    check_stderr_prefixes(d.stderr(), "daemon D (pool)")


def _d_breaker(work, ids, events):
    cfg = write(os.path.join(work, "d-breaker.conf"), "breaker: { runaway_breaches = 1; cooldown_sec = 1; };\n")
    d = Daemon(work, "d-breaker", config=cfg).wait_serving()
    scope = f"process:{os.getpid()}"
    breaker = {"TOKENBUDGET_SCOPE": scope, "TOKENBUDGET_UID": str(os.getuid())}
    c = d.connect()
    g = c.call("io.tokenbudget.agent.Request", estimate=100)
    r = c.call("io.tokenbudget.agent.Report", allocation=g["allocation"], inputTokens=100, outputTokens=200)
    check(r.get("state") == "exceeded", f"fixture: Report of 300 of 100 granted: {r}")
    opened = time.monotonic()
    _one(ids, "BREAKER_OPENED", d.pid, "breaker opened",
         {**breaker, "PRIORITY": "4", "TOKENBUDGET_REASON": lambda v: v.startswith("opened: 1 hard-limit")},
         events)
    c.call("io.tokenbudget.agent.Release", allocation=g["allocation"])
    try:
        c.call("io.tokenbudget.agent.Request", estimate=100)
        raise AssertionError("a Request was granted while the runaway breaker is open")
    except VarlinkError as e:
        check(e.error == "io.tokenbudget.agent.CircuitOpen" and e.parameters.get("scope") == scope,
              f"Request while the breaker is open: {e}")
    check(not journal_entries(ids["BREAKER_HALF_OPEN"], d.pid), "half-open before the cool-down ended")

    time.sleep(max(0.0, opened + 1.2 - time.monotonic()))
    probe = c.call("io.tokenbudget.agent.Request", estimate=100)
    _one(ids, "BREAKER_HALF_OPEN", d.pid, "breaker half-open",
         {**breaker, "PRIORITY": "6", "TOKENBUDGET_REASON": lambda v: v.startswith("is half-open")}, events)
    check(not journal_entries(ids["BREAKER_CLOSED"], d.pid), "closed before the probe was settled")
    c.call("io.tokenbudget.agent.Release", allocation=probe["allocation"], inputTokens=40, outputTokens=10)
    _one(ids, "BREAKER_CLOSED", d.pid, "breaker closed",
         {**breaker, "PRIORITY": "6", "TOKENBUDGET_REASON": lambda v: v.startswith("closed: its probe")}, events)
    g = c.call("io.tokenbudget.agent.Request", estimate=100)
    c.call("io.tokenbudget.agent.Release", allocation=g["allocation"])
    check(len(journal_entries(ids["BREAKER_OPENED"], d.pid)) == 1, "the breaker opened again")
    c.close()
    check(d.stop() == 0, "daemon D (breaker): exit status after SIGTERM")
    check_stderr_prefixes(d.stderr(), "daemon D (breaker)")


def _d_escalated(work, ids, events):
    cfg = write(os.path.join(work, "d-escalate.conf"), "max_request_tokens = 100;\n")
    d = Daemon(work, "d-escalate", config=cfg).wait_serving()
    c = d.connect()
    try:
        c.call("io.tokenbudget.agent.Request", estimate=1000, agent="greedy")
        raise AssertionError("fixture: a Request of 1000 over max_request_tokens = 100 was granted")
    except VarlinkError as e:
        check(e.error == "io.tokenbudget.agent.Escalated" and e.parameters.get("requested") == 1000,
              f"fixture: escalation {e}")
    _one(ids, "ESCALATED", d.pid, "escalated",
         {**_me(), "PRIORITY": "5", "TOKENBUDGET_ESTIMATE": "1000", "TOKENBUDGET_AGENT": "greedy",
          "TOKENBUDGET_SCOPE": "global", "TOKENBUDGET_DECISION": "refused",
          "TOKENBUDGET_REASON": lambda v: "max_request_tokens (100)" in v}, events)
    check(not journal_entries(ids["REFUSED"], d.pid), "an escalated request was also logged as refused")
    c.close()
    check(d.stop() == 0, "daemon D (escalate): exit status after SIGTERM")
    check_stderr_prefixes(d.stderr(), "daemon D (escalate)")


def _d_terminated(work, ids, events):
    cfg = write(os.path.join(work, "d-terminate.conf"),
                'rules = ( { name = "runaways"; match = { command = "tb-runaway"; }; '
                'on_hard_limit = "terminate"; terminate_grace_sec = 1; } );\n')
    d = Daemon(work, "d-terminate", config=cfg).wait_serving()
    runaway = os.path.join(work, "tb-runaway")
    os.symlink(sys.executable, runaway)
    script = write(os.path.join(work, "runaway.py"), RUNAWAY)
    child = subprocess.Popen([runaway, script, os.path.dirname(os.path.abspath(__file__)), d.socket_path],
                             stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True)
    try:
        line = child.stdout.readline()
        check(line, f"the tb-runaway child said nothing (exit status {child.wait(10)})")
        said = json.loads(line)
        check(said["comm"] == "tb-runaway", f"fixture: the child's comm is {said['comm']!r}")
        line = child.stdout.readline()  # "" when the SIGTERM came before the Report's reply
        if line:
            report = json.loads(line)["report"]
            check(report.get("state") == "exceeded" and report.get("action") == "terminate",
                  f"fixture: Report of 30 of 10 under on_hard_limit = \"terminate\": {report}")
        try:
            status = child.wait(10)
        except subprocess.TimeoutExpired:
            raise AssertionError("the tb-runaway child was not stopped within 10 s of its hard limit")
        check(status == -signal.SIGTERM, f"the tb-runaway child ended with {status}, expected SIGTERM")
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        child.stdout.close()
    who = {"TOKENBUDGET_PID": str(child.pid)}
    _one(ids, "TERMINATED", d.pid, "terminated (sigterm, then exited)",
         {**who, "PRIORITY": "4", "TOKENBUDGET_UID": str(os.getuid()), "TOKENBUDGET_DECISION": "sigterm"},
         events, count=2, index=0)
    exited = journal_entries(ids["TERMINATED"], d.pid)[1]
    _check_fields("the second terminated entry", exited,
                  {**who, "PRIORITY": "4", "TOKENBUDGET_DECISION": "exited",
                   "MESSAGE": lambda m: "exited after SIGTERM" in m})
    exceeded = wait_entries(ids["EXCEEDED"], d.pid, 1, "exceeded (tb-runaway)")
    _check_fields("the exceeded entry of tb-runaway", exceeded[0],
                  {**who, "TOKENBUDGET_COMM": "tb-runaway", "TOKENBUDGET_ALLOCATION": said["allocation"]})
    check(d.stop() == 0, "daemon D (terminate): exit status after SIGTERM")
    check_stderr_prefixes(d.stderr(), "daemon D (terminate)")


def _d_dry_run(work, ids, events):
    cfg = write(os.path.join(work, "d-dry.conf"), "enforce = false;\nglobal: { tokens_per_minute = 10; };\n")
    d = Daemon(work, "d-dry", config=cfg).wait_serving()
    c = d.connect()
    g = c.call("io.tokenbudget.agent.Request", estimate=100, agent="dry")
    check(g.get("granted") == 100 and g.get("wouldBe") == "BudgetExhausted",
          f"a Request of 100 over tokens_per_minute = 10 under enforce = false: {g}")
    refused = wait_entries(ids["REFUSED"], d.pid, 1, "refused (dry run)")
    check(len(refused) == 1, f"{len(refused)} dry-run refused entries, expected 1")
    _check_fields("the dry-run refused entry", refused[0],
                  {**_me(), "PRIORITY": "5", "TOKENBUDGET_DRY_RUN": "1", "TOKENBUDGET_ESTIMATE": "100",
                   "TOKENBUDGET_AGENT": "dry", "TOKENBUDGET_SCOPE": "global", "TOKENBUDGET_DECISION": "refused",
                   "MESSAGE": lambda m: "dry run" in m,
                   "TOKENBUDGET_REASON": lambda v: "global" in v})
    c.call("io.tokenbudget.agent.Release", allocation=g["allocation"], inputTokens=0, outputTokens=0)
    c.close()
    check(d.stop() == 0, "daemon D (dry run): exit status after SIGTERM")
    check_stderr_prefixes(d.stderr(), "daemon D (dry run)")


def _d_power(work, ids, events):
    psi = os.path.join(work, "d-power-psi")
    write(psi, "some avg10=50.00 avg60=10.00 avg300=2.00 total=123456\n"
               "full avg10=20.00 avg60=5.00 avg300=1.00 total=65432\n")
    cfg = write(os.path.join(work, "d-power.conf"),
                f'power: {{ pressure_file = "{psi}"; poll_sec = 1; }};\n')
    d = Daemon(work, "d-power", config=cfg).wait_serving()
    changed = {"PRIORITY": "5", "TOKENBUDGET_ON_AC": "1", "TOKENBUDGET_POWER_STATE": "memory-pressure",
               "TOKENBUDGET_POWER_PREVIOUS": "ac", "TOKENBUDGET_MEMORY_PRESSURE": "50.0",
               "TOKENBUDGET_REASON": lambda v: "memory pressure 50.0%" in v and "background paused" in v,
               "MESSAGE": lambda m: m.startswith("Power state memory-pressure (was ac)")}
    _one(ids, "POWER_CHANGED", d.pid, "power changed (memory pressure at start)", changed, events)
    c = d.connect()
    try:
        c.call("io.tokenbudget.agent.Request", estimate=100, priority="background")
        raise AssertionError("a background Request under memory pressure 50% was granted")
    except VarlinkError as e:
        check(e.error == "io.tokenbudget.agent.PowerPaused" and
              e.parameters == {"state": "memory-pressure", "retryAfterUsec": 0},
              f"background under memory pressure: {e}")
    g = c.call("io.tokenbudget.agent.Request", estimate=100, priority="normal")
    check(g.get("powerState") == "memory-pressure" and g.get("powerFactor") == 0.5 and g.get("granted") == 100,
          f"a normal Request under memory pressure: {g}")
    c.call("io.tokenbudget.agent.Release", allocation=g["allocation"], inputTokens=1, outputTokens=1)
    write(psi, "some avg10=1.00 avg60=10.00 avg300=2.00 total=123456\n"
               "full avg10=0.00 avg60=5.00 avg300=1.00 total=65432\n")
    time.sleep(1.2)  # past poll_sec: the next Request reads the file again
    g = c.call("io.tokenbudget.agent.Request", estimate=100, priority="background")
    check(g.get("powerState") == "ac" and g.get("powerFactor") == 1.0, f"background after the pressure: {g}")
    back = wait_entries(ids["POWER_CHANGED"], d.pid, 2, "power changed (back to ac)")
    _check_fields("the second power-changed entry", back[1],
                  {"TOKENBUDGET_POWER_STATE": "ac", "TOKENBUDGET_POWER_PREVIOUS": "memory-pressure",
                   "TOKENBUDGET_MEMORY_PRESSURE": "1.0"})
    c.close()
    check(d.stop() == 0, "daemon D (power): exit status after SIGTERM")
    check_stderr_prefixes(d.stderr(), "daemon D (power)")


def _d_durability(work, ids, events):
    mnt = os.path.join(work, "d-dur-mnt")
    os.makedirs(mnt, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", mnt], check=True)
    try:
        state = os.path.join(mnt, "state")
        os.makedirs(state)
        d = Daemon(work, "d-dur", args=("--state-dir", state)).wait_serving()
        c = d.connect()
        filler = os.path.join(mnt, "filler")
        fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            while os.write(fd, b"\0" * 4096) > 0:
                pass
        except OSError:
            pass
        os.close(fd)
        # Acknowledged from memory: the replies come although the commits fail.
        # (The first commit may still fit in the WAL file's last page.)
        for _ in range(50):
            g = c.call("io.tokenbudget.agent.Request", estimate=100)
            if c.call("io.tokenbudget.admin.Status").get("durability", {}).get("degraded"):
                break
            c.call("io.tokenbudget.agent.Release", allocation=g["allocation"], inputTokens=1, outputTokens=1)
        _one(ids, "DURABILITY_LOST", d.pid, "durability degraded",
             {"PRIORITY": "3", "TOKENBUDGET_REASON": lambda v: state in v and "full" in v,
              "MESSAGE": lambda m: m.startswith("Durability degraded: ")}, events)
        st = c.call("io.tokenbudget.admin.Status")
        check(st.get("durability", {}).get("degraded") is True, f"Status while the disk is full: {st.get('durability')}")
        os.unlink(filler)
        _one(ids, "DURABILITY_BACK", d.pid, "durability restored",
             {"PRIORITY": "5", "TOKENBUDGET_REASON": lambda v: v.startswith("degraded for "),
              "MESSAGE": lambda m: state in m}, events)
        c.call("io.tokenbudget.agent.Release", allocation=g["allocation"], inputTokens=1, outputTokens=1)
        c.close()
        check(d.stop() == 0, "daemon D (durability): exit status after SIGTERM")
        check_stderr_prefixes(d.stderr(), "daemon D (durability)")
    finally:
        subprocess.run(["umount", "-l", mnt])


def drive_daemon_d(work, ids, events):
    _d_durability(work, ids, events)
    _d_pool(work, ids, events)
    _d_breaker(work, ids, events)
    _d_escalated(work, ids, events)
    _d_terminated(work, ids, events)
    _d_dry_run(work, ids, events)
    _d_power(work, ids, events)


def drive(work):
    ids = message_ids(env("SRCDIR"))
    events = Events()
    drive_daemon_a(work, ids, events)
    drive_daemon_b(work, ids, events)
    drive_daemon_c(work, ids, events)
    drive_daemon_d(work, ids, events)
    return ids, events
