#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Without socket activation the daemon makes its own socket (issue 4, item
1): it creates missing parent directories, binds with mode 0666, refuses to
steal a socket another daemon answers on (exit non-zero, naming the path),
replaces a stale one that nobody answers on, and never deletes a file that
is not a socket. Every stderr line carries an sd-daemon priority prefix
(item 7)."""

import os
import stat
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tbtest import Daemon, check, check_stderr_prefixes, run_test, tmpdir  # noqa: E402


def check_serves(d, who):
    c = d.connect()
    info = c.call("org.varlink.service.GetInfo")
    c.close()
    check(info.get("product") == "tokenbudgetd", f"{who}: GetInfo answered {info}")


def check_socket_file(path, who):
    st = os.stat(path)
    check(stat.S_ISSOCK(st.st_mode), f"{who}: {path} is not a socket")
    check(stat.S_IMODE(st.st_mode) == 0o666, f"{who}: {path} has mode {stat.S_IMODE(st.st_mode):o}, expected 666")


def main():
    work = tmpdir()
    path = os.path.join(work, "run", "tokenbudget", "io.tokenbudget")
    check(not os.path.exists(os.path.dirname(os.path.dirname(path))), "fixture: the parent must not exist")

    first = Daemon(work, "first", socket_path=path).wait_serving()
    check(os.path.isdir(os.path.dirname(path)), "the socket directory was not created")
    check_socket_file(path, "first daemon")
    check_serves(first, "first daemon")

    # A live socket: the second daemon must fail clearly and leave it alone.
    second = Daemon(work, "second", socket_path=path)
    try:
        status = second.proc.wait(5)
    except subprocess.TimeoutExpired:
        raise AssertionError("a second daemon on a live socket is still running after 5 s")
    check(status != 0, "a second daemon on a live socket exited 0")
    check(path in second.stderr(), f"the second daemon's error does not name {path}:\n{second.stderr()}")
    check_serves(first, "first daemon after the second one failed")

    # SIGKILL leaves the socket file behind, with nobody answering: stale.
    first.kill()
    check(os.path.exists(path), "fixture: the socket file should survive SIGKILL")
    third = Daemon(work, "third", socket_path=path).wait_serving()
    check_socket_file(path, "daemon replacing a stale socket")
    check_serves(third, "daemon replacing a stale socket")
    status = third.stop()
    check(status == 0, f"SIGTERM: exit status {status}, expected 0")

    # Not a socket at all: only a socket file can be stale; anything else
    # at the path is an admin's mistake, never deleted.
    regular = os.path.join(work, "not-a-socket")
    with open(regular, "w") as f:
        f.write("precious\n")
    fourth = Daemon(work, "fourth", socket_path=regular)
    try:
        status = fourth.proc.wait(5)
    except subprocess.TimeoutExpired:
        fourth.kill()
        status = None  # still running after 5 s
    intact = stat.S_ISREG(os.stat(regular).st_mode) and open(regular).read() == "precious\n"
    check(status not in (None, 0) and intact,
          f"a regular file at the socket path was replaced (exit status {status}, None: still running):\n"
          f"{fourth.stderr()}")

    for d in (first, second, third, fourth):
        check_stderr_prefixes(d.stderr(), os.path.basename(d.stderr_path))


run_test(main)
