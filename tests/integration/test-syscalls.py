#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""The hot path's system calls, counted by strace on the real daemon.

A Request/Release cycle, one call at a time, costs the daemon exactly one
epoll_wait, one recvfrom and one sendto per message: the commit point
(replies leave after the iteration's commit hook) adds none. A burst of
pipelined calls costs one recvfrom and one sendto for all of them.

Run twice: memory only (--state-dir ''), where nothing else may happen, and
with the durable ledger, where each commit adds only its writes to the WAL
(pwrite64; reads and fdatasync at checkpoints): no lock calls (fcntl, the
database is held exclusively), no opens, no fsync per commit under
durability.sync = "normal".
Skips (77) without strace or when ptrace is not allowed here.
"""
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time

SKIP = 77


def parse_counts(path):
    counts = {}
    for line in open(path):
        m = re.match(r"\s*[\d.]+\s+[\d.]+\s+\d+\s+(\d+)\s+(?:\d+\s+)?(\w+)\s*$", line)
        if m and m.group(2) != "total":
            counts[m.group(2)] = int(m.group(1))
    return counts


def main():
    daemon = os.environ.get("TOKENBUDGETD")
    strace = shutil.which("strace")
    if not daemon:
        print("TOKENBUDGETD is not set", file=sys.stderr)
        return 1
    if not strace:
        print("SKIP: strace is not installed (scripts/deps.sh installs it)")
        return SKIP
    r = run(daemon, strace, durable=False)
    if r != 0:
        return r
    return run(daemon, strace, durable=True)


def run(daemon, strace, durable):
    work = tempfile.mkdtemp(prefix="tb-syscalls.")
    sock_path = os.path.join(work, "tb.sock")
    config = os.path.join(work, "tb.conf")
    state = os.path.join(work, "state") if durable else ""
    with open(config, "w") as f:
        f.write('socket = "%s";\n' % sock_path)
    daemon_p = subprocess.Popen([daemon, "--config", config, "--state-dir", state], stderr=subprocess.DEVNULL)
    tracer = None
    try:
        for _ in range(200):
            if os.path.exists(sock_path):
                break
            time.sleep(0.02)
        c = socket.socket(socket.AF_UNIX)
        c.connect(sock_path)

        def send(text):
            c.sendall(text.encode())

        def replies(n):
            buf = b""
            while buf.count(b"\0") < n:
                chunk = c.recv(1 << 20)
                if not chunk:
                    raise RuntimeError("daemon closed the connection")
                buf += chunk
            return [json.loads(m) for m in buf.split(b"\0")[:n]]

        def call(method, params):
            send(json.dumps({"method": method, "parameters": params}) + "\0")
            (r,) = replies(1)
            if "error" in r:
                raise RuntimeError("%s: %s" % (method, r))
            return r["parameters"]

        call("org.varlink.service.GetInfo", {})
        out = os.path.join(work, "strace.txt")
        tracer = subprocess.Popen([strace, "-c", "-f", "-p", str(daemon_p.pid), "-o", out],
                                  stderr=subprocess.PIPE, text=True)
        # strace attaches asynchronously; wait until it reports, or give up.
        time.sleep(0.5)
        if tracer.poll() is not None:
            print("SKIP: strace cannot attach here: %s" % tracer.stderr.read().strip())
            return SKIP

        cycles = 500
        for _ in range(cycles):
            a = call("io.tokenbudget.agent.Request", {"estimate": 100})["allocation"]
            call("io.tokenbudget.agent.Release", {"allocation": a, "inputTokens": 10, "outputTokens": 20})
        # One burst of 64 pipelined Requests, then their Releases.
        burst = 64
        send("".join(json.dumps({"method": "io.tokenbudget.agent.Request",
                                 "parameters": {"estimate": 100}}) + "\0" for _ in range(burst)))
        ids = [r["parameters"]["allocation"] for r in replies(burst)]
        send("".join(json.dumps({"method": "io.tokenbudget.agent.Release",
                                 "parameters": {"allocation": a}}) + "\0" for a in ids))
        replies(burst)
        time.sleep(0.3)
        tracer.send_signal(2)
        tracer.wait(timeout=10)
        counts = parse_counts(out)
    finally:
        if tracer and tracer.poll() is None:
            tracer.kill()
        daemon_p.terminate()
        daemon_p.wait(timeout=10)
        shutil.rmtree(work, ignore_errors=True)

    messages = 2 * cycles
    # The bursts arrive in at most a few reads each (socket buffer sizes).
    slack = 8
    print("%s: messages one at a time: %d, bursts: 2 x %d; daemon syscalls: %s" %
          ("durable" if durable else "memory only", messages, burst, counts))
    failed = False
    for name in ("epoll_wait", "recvfrom", "sendto"):
        n = counts.get(name, 0)
        if not messages <= n <= messages + slack:
            print("FAIL: %d %s for %d messages (+ 2 bursts): want one per message" % (n, name, messages))
            failed = True
    others = {k: v for k, v in counts.items() if k not in ("epoll_wait", "recvfrom", "sendto")}
    if durable:
        # A commit per message one at a time, one per burst: its WAL frames
        # (a page per table or index it touched) and nothing else.
        commits = messages + 2
        writes = others.pop("pwrite64", 0)
        if not commits <= writes <= 16 * commits:
            print("FAIL: %d pwrite64 for %d commits: want 1 to 16 per commit" % (writes, commits))
            failed = True
        # Checkpoints (every 1000 WAL pages) read pages and sync; a few per run.
        for name, most in (("pread64", commits // 4), ("fdatasync", commits // 20), ("ftruncate", 8)):
            n = others.pop(name, 0)
            if n > most:
                print("FAIL: %d %s for %d commits: want at most %d" % (n, name, commits, most))
                failed = True
        for name in ("fcntl", "flock", "fsync", "openat"):
            if others.get(name, 0) > (4 if name == "openat" else 0):
                print("FAIL: %d %s on the durable hot path" % (others[name], name))
                failed = True
        # The user name of a connection's first history row (NSS: a socket to
        # nscd, a few reads), once per connection; under the sanitizers, the
        # allocator's mmap calls for SQLite's page cache.
        for name in ("socket", "connect", "read"):
            if others.pop(name, 0) > 8:
                print("FAIL: more than 8 %s on the durable hot path" % name)
                failed = True
        others = {k: v for k, v in others.items()
                  if k not in ("openat", "close", "newfstatat", "lseek", "mmap", "munmap")}
    if sum(others.values()) > slack:
        print("FAIL: other system calls on the hot path: %s" % others)
        failed = True
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
