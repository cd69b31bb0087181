#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Socket activation (issue 4, item 1) through systemd-socket-activate, which
passes LISTEN_FDS, LISTEN_PID and LISTEN_FDNAMES exactly as systemd does and
execs the daemon in its own process on the first connection:
- the first connection starts the daemon, which serves the passed socket
  (GetInfo, a Request and its Release work) and creates no socket of its own;
- of two passed sockets it serves the one named "varlink" and not the other;
- a passed socket that is not a listening AF_UNIX stream socket (a datagram
  socket here) is refused: the daemon exits non-zero and says why."""

import os
import signal
import socket
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tbtest import (Varlink, check, check_stderr_prefixes, env, need_program, run_test, tmpdir,  # noqa: E402
                    wait_until)

_activators = []


def activate(work, name, listen, extra=()):
    """systemd-socket-activate -l PATH... --fdname=... tokenbudgetd --socket UNUSED"""
    activator = need_program("systemd-socket-activate")
    unused = os.path.join(work, name + "-own.sock")
    cmd = [activator]
    for path in listen:
        cmd += ["-l", path]
    cmd += list(extra) + [env("TOKENBUDGETD"), "--socket", unused, "--state-dir", os.path.join(work, name + ".state")]
    err_path = os.path.join(work, name + ".stderr")
    with open(err_path, "wb") as err:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err)
    _activators.append(proc)
    for path in listen:
        wait_until(lambda: os.path.exists(path), 5, f"systemd-socket-activate to listen on {path}")
    return proc, unused, err_path


def exe_of(pid):
    try:
        return os.path.realpath(f"/proc/{pid}/exe")
    except OSError:
        return None


def read(path):
    with open(path, errors="replace") as f:
        return f.read()


def stop(proc, who):
    proc.send_signal(signal.SIGTERM)
    try:
        status = proc.wait(5)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise AssertionError(f"{who}: no exit within 5 s of SIGTERM")
    check(status == 0, f"{who}: exit status {status} after SIGTERM, expected 0")


def on_demand(work):
    path = os.path.join(work, "activated.sock")
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(os.path.join(work, "sd-notify.dgram"))
    notify.settimeout(5)
    proc, unused, err_path = activate(work, "on-demand", [path],
                                      ["--fdname=varlink", "-E", f"NOTIFY_SOCKET={notify.getsockname()}"])
    daemon = os.path.realpath(env("TOKENBUDGETD"))
    time.sleep(0.3)
    check(exe_of(proc.pid) != daemon, "tokenbudgetd ran before the first connection")

    c = Varlink(path, 10.0)
    info = c.call("org.varlink.service.GetInfo")
    check(info.get("product") == "tokenbudgetd", f"GetInfo through the activated socket: {info}")
    check(exe_of(proc.pid) == daemon, "the process answering is not tokenbudgetd")
    try:
        check(b"READY=1" in notify.recv(4096).split(b"\n"), "the first notification is not READY=1")
    except socket.timeout:
        raise AssertionError("no READY=1 from the activated daemon within 5 s")
    grant = c.call("io.tokenbudget.agent.Request", estimate=500, agent="activation-test")
    check(grant.get("decision") == "granted" and grant.get("granted") == 500, f"Request: {grant}")
    released = c.call("io.tokenbudget.agent.Release", allocation=grant["allocation"], inputTokens=100,
                      outputTokens=50)
    check(released.get("used") == 150, f"Release: {released}")
    c.close()
    check(not os.path.exists(unused), f"an activated daemon created its own socket {unused}")
    stop(proc, "activated daemon")
    # systemd-socket-activate writes its own lines before the exec.
    daemon_lines = read(err_path).split("\nExecing ", 1)[-1].split("\n", 1)[-1]
    check_stderr_prefixes(daemon_lines, "activated daemon")


def by_name(work):
    other = os.path.join(work, "other.sock")
    named = os.path.join(work, "named.sock")
    proc, _, err_path = activate(work, "by-name", [other, named], ["--fdname=other:varlink"])
    c = Varlink(named, 10.0)
    info = c.call("org.varlink.service.GetInfo")
    check(info.get("product") == "tokenbudgetd", f"GetInfo on the socket named varlink: {info}")
    c.close()
    # The socket named "other" is passed but never served: a call on it gets no answer.
    c = Varlink(other, 1.0)
    try:
        reply = c.call_raw("org.varlink.service.GetInfo")
        raise AssertionError(f"the socket named 'other' was served: {reply}")
    except socket.timeout:
        pass
    finally:
        c.close()
    stop(proc, "daemon with two passed sockets")


def wrong_type(work):
    path = os.path.join(work, "dgram.sock")
    proc, _, err_path = activate(work, "dgram", [path], ["--datagram", "--fdname=varlink"])
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.sendto(b"wake up", path)
    s.close()
    try:
        status = proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise AssertionError("the daemon serves a passed datagram socket (still running after 10 s)")
    check(status != 0, "the daemon exited 0 when passed a datagram socket")
    check("varlink" in read(err_path), f"the error does not say what was expected:\n{read(err_path)}")


def main():
    work = tmpdir()
    on_demand(work)
    by_name(work)
    wrong_type(work)


try:
    run_test(main)
finally:
    for p in _activators:
        if p.poll() is None:
            p.kill()
