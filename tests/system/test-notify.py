#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""The sd_notify protocol (issue 4, item 2), read from a fake NOTIFY_SOCKET
(a Unix datagram socket this test binds) with WATCHDOG_USEC=1000000:
- READY=1 once it serves (the socket answers when READY=1 arrives), then a
  STATUS= line "Serving: N allocation(s) in flight ... P% ...";
- WATCHDOG=1 about every 0.5 s (half of WATCHDOG_USEC), and none at all when
  WATCHDOG_PID names another process;
- STATUS= kept current: 1 allocation and DEGRADED at 90% of the global pool,
  back to 0 and not degraded after the release;
- SIGHUP with a good file: RELOADING=1 + MONOTONIC_USEC= (CLOCK_MONOTONIC,
  now) then READY=1, and the new limits apply;
- SIGHUP with a broken file: RELOADING=1 then READY=1, STATUS= starts with
  "Configuration FILE rejected, keeping the old one: FILE:LINE: ...", the
  daemon keeps serving with the old limits;
- SIGTERM with an allocation open: STOPPING=1, then exit 0 within 5 s;
- STATUS= names a power state other than "ac" (PSI fixture at 50%), and
  not once the pressure is gone."""

import os
import re
import signal
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tbtest import Daemon, VarlinkError, check, check_stderr_prefixes, run_test, tmpdir, write  # noqa: E402

WATCHDOG_USEC = 1000000
STATUS_RE = re.compile(r"Serving: (\d+) allocation(?:s|\(s\))? in flight.*?(\d+)%")


class NotifySocket:
    def __init__(self, path):
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(path)
        self.log = []  # (monotonic seconds, {key: value}) in arrival order

    def receive(self, timeout_sec):
        self.sock.settimeout(max(timeout_sec, 0.001))
        try:
            data = self.sock.recv(65536)
        except socket.timeout:
            return None
        fields = dict(line.split("=", 1) for line in data.decode().splitlines() if "=" in line)
        self.log.append((time.monotonic(), fields))
        return fields

    def expect(self, predicate, timeout_sec, what):
        """Reads until a message satisfies predicate; returns it."""
        deadline = time.monotonic() + timeout_sec
        while time.monotonic() < deadline:
            m = self.receive(deadline - time.monotonic())
            if m is not None and predicate(m):
                return m
        raise AssertionError(f"no {what} within {timeout_sec} s; received: {[m for _, m in self.log[-15:]]}")

    def collect(self, duration_sec):
        start = len(self.log)
        deadline = time.monotonic() + duration_sec
        while time.monotonic() < deadline:
            self.receive(deadline - time.monotonic())
        return self.log[start:]


def config_text(in_flight_tokens, extra=""):
    return f"global: {{ max_tokens_in_flight = {in_flight_tokens}; }};\n{extra}"


def status_numbers(m):
    match = STATUS_RE.search(m.get("STATUS", ""))
    return (int(match.group(1)), int(match.group(2))) if match else None


def start(work, notify, cfg):
    d = Daemon(work, "notify", config=cfg,
               extra_env={"NOTIFY_SOCKET": notify.path, "WATCHDOG_USEC": str(WATCHDOG_USEC)})
    notify.expect(lambda m: m.get("READY") == "1", 10, "READY=1")
    c = d.connect()
    check(c.call("org.varlink.service.GetInfo").get("product") == "tokenbudgetd",
          "the daemon does not answer right after READY=1")
    m = notify.expect(lambda m: "STATUS" in m, 3, "STATUS= after READY=1")
    check(status_numbers(m) == (0, 0), f"STATUS= at start: {m['STATUS']!r}")
    return d, c


def check_watchdog(notify):
    log = notify.collect(2.6)
    times = [t for t, m in log if m.get("WATCHDOG") == "1"]
    check(len(times) >= 4, f"{len(times)} WATCHDOG=1 in 2.6 s with WATCHDOG_USEC=1000000, expected about 5")
    gaps = [b - a for a, b in zip(times, times[1:])]
    check(all(0.3 <= g <= 0.75 for g in gaps), f"WATCHDOG=1 intervals {gaps}, expected about 0.5 s")


def check_status_current(notify, c):
    # 450 granted reserves 900 of 1000 tokens in flight: 90%, degraded.
    grant = c.call("io.tokenbudget.agent.Request", estimate=450)
    m = notify.expect(lambda m: (status_numbers(m) or (0,))[0] == 1, 3, "STATUS= with 1 allocation")
    check("DEGRADED" in m["STATUS"] and status_numbers(m)[1] == 90,
          f"STATUS= at 90% of the global pool: {m['STATUS']!r}")
    c.call("io.tokenbudget.agent.Release", allocation=grant["allocation"], inputTokens=0, outputTokens=0)
    m = notify.expect(lambda m: (status_numbers(m) or (1,))[0] == 0, 3, "STATUS= with 0 allocations")
    check("DEGRADED" not in m["STATUS"], f"STATUS= after the release: {m['STATUS']!r}")


def check_reload(notify, d, c, cfg):
    # The new file allows 2000 in flight: 900 granted (1800 reserved) fits only after the reload.
    try:
        c.call("io.tokenbudget.agent.Request", estimate=900)
        raise AssertionError("fixture: 1800 tokens in flight should not fit before the reload")
    except VarlinkError as e:
        check(e.error == "io.tokenbudget.agent.BudgetExhausted", f"Request before the reload: {e}")
    write(cfg, config_text(2000))
    d.signal(signal.SIGHUP)
    m = notify.expect(lambda m: "RELOADING" in m, 5, "RELOADING=1 after SIGHUP")
    now_usec = time.monotonic_ns() // 1000
    check(m.get("RELOADING") == "1" and "MONOTONIC_USEC" in m, f"reload message: {m}")
    check(abs(int(m["MONOTONIC_USEC"]) - now_usec) < 5000000,
          f"MONOTONIC_USEC={m['MONOTONIC_USEC']} is not CLOCK_MONOTONIC now ({now_usec})")
    notify.expect(lambda m: m.get("READY") == "1", 5, "READY=1 after RELOADING=1")
    grant = c.call("io.tokenbudget.agent.Request", estimate=900)
    c.call("io.tokenbudget.agent.Release", allocation=grant["allocation"], inputTokens=0, outputTokens=0)


def check_rejected_reload(notify, d, c, cfg):
    write(cfg, config_text(2000, "hard_multiplier = 7.5;\n"))
    d.signal(signal.SIGHUP)
    notify.expect(lambda m: m.get("RELOADING") == "1", 5, "RELOADING=1 after SIGHUP with a broken file")
    notify.expect(lambda m: m.get("READY") == "1", 5, "READY=1 after a rejected reload")
    prefix = f"Configuration {cfg} rejected, keeping the old one: {cfg}:2: "
    m = notify.expect(lambda m: "STATUS" in m, 3, "STATUS= after a rejected reload")
    check(m["STATUS"].startswith(prefix) and "hard_multiplier" in m["STATUS"],
          f"STATUS= after a rejected reload: {m['STATUS']!r}, expected it to start with {prefix!r}")
    check(d.proc.poll() is None, "the daemon exited after a rejected reload")
    # Still serving, with the old limits (2000 in flight, hard multiplier 2).
    grant = c.call("io.tokenbudget.agent.Request", estimate=900)
    check(grant.get("hardLimit") == 1800, f"Request after a rejected reload: {grant}")
    return grant


def check_stop(notify, d):
    d.signal(signal.SIGTERM)
    notify.expect(lambda m: m.get("STOPPING") == "1", 5, "STOPPING=1 after SIGTERM")
    status = d.stop()
    check(status == 0, f"exit status {status} after SIGTERM, expected 0")
    check_stderr_prefixes(d.stderr(), "notify daemon")


def check_watchdog_other_pid(work):
    """WATCHDOG_USEC meant for another pid: no watchdog timer at all."""
    notify = NotifySocket(os.path.join(work, "sd-notify-other.dgram"))
    d = Daemon(work, "other-pid", extra_env={"NOTIFY_SOCKET": notify.path, "WATCHDOG_USEC": str(WATCHDOG_USEC),
                                             "WATCHDOG_PID": "1"})
    notify.expect(lambda m: m.get("READY") == "1", 10, "READY=1")
    log = notify.collect(1.5)
    check(not any(m.get("WATCHDOG") for _, m in log), "WATCHDOG=1 sent although WATCHDOG_PID names pid 1")
    check(d.stop() == 0, "daemon with WATCHDOG_PID=1 did not exit 0")


def check_power_status(work):
    """STATUS= names a power state other than "ac" (a PSI fixture file at 50%
    memory pressure), and stops naming it when the pressure goes."""
    psi = write(os.path.join(work, "pressure"), "some avg10=50.00 avg60=1.00 avg300=0.50 total=99\n"
                                                "full avg10=0.00 avg60=0.00 avg300=0.00 total=0\n")
    cfg = write(os.path.join(work, "power.conf"), f'power: {{ pressure_file = "{psi}"; poll_sec = 1; }};\n')
    notify = NotifySocket(os.path.join(work, "sd-notify-power.dgram"))
    d = Daemon(work, "power", config=cfg, extra_env={"NOTIFY_SOCKET": notify.path})
    notify.expect(lambda m: m.get("READY") == "1", 10, "READY=1")
    m = notify.expect(lambda m: "STATUS" in m, 3, "STATUS= under memory pressure")
    check("power: memory-pressure" in m["STATUS"], f"STATUS= under memory pressure: {m['STATUS']!r}")
    with open(psi, "r+") as f:  # in place: the daemon keeps the file open
        f.write("some avg10=00.00")
    time.sleep(1.2)
    c = d.connect()
    grant = c.call("io.tokenbudget.agent.Request", estimate=10)
    check(grant.get("powerState") == "ac", f"Request after the pressure went: {grant}")
    m = notify.expect(lambda m: "STATUS" in m and "power:" not in m["STATUS"], 3, "STATUS= back on AC")
    c.close()
    check(d.stop() == 0, "power daemon did not exit 0")


def main():
    work = tmpdir()
    cfg = write(os.path.join(work, "tokenbudgetd.conf"), config_text(1000))
    notify = NotifySocket(os.path.join(work, "sd-notify.dgram"))
    d, c = start(work, notify, cfg)
    check_watchdog(notify)
    check_status_current(notify, c)
    check_reload(notify, d, c, cfg)
    check_rejected_reload(notify, d, c, cfg)
    check_stop(notify, d)
    check_watchdog_other_pid(work)
    check_power_status(work)


run_test(main)
