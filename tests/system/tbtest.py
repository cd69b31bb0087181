# SPDX-License-Identifier: MIT
"""Shared helpers of the system tests: skipping with a reason (exit 77), a
minimal Varlink client over the Unix socket, and a runner for the real
tokenbudgetd on a private socket with its stderr kept in a file. Nothing here
fakes the daemon: every test drives the binary meson built ($TOKENBUDGETD)."""

import atexit
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

SKIP = 77


def skip(reason):
    print(f"SKIP: {reason}", file=sys.stderr)
    sys.exit(SKIP)


def need_root(why):
    if os.geteuid() != 0:
        skip(f"needs root: {why}")


def need_program(name, package="systemd"):
    path = shutil.which(name) or next(
        (p for p in (f"/lib/systemd/{name}", f"/usr/lib/systemd/{name}") if os.access(p, os.X_OK)), None)
    if not path:
        skip(f"{name} is not installed (Debian package {package})")
    return path


def env(name):
    value = os.environ.get(name)
    if not value:
        raise AssertionError(f"${name} is not set: run this test through meson test")
    return value


def check(cond, message):
    if not cond:
        raise AssertionError(message)


def run_test(main):
    """Runs main(); an AssertionError is a failure with its message, and
    every daemon started is killed whatever happens."""
    try:
        main()
    except AssertionError as e:
        print(f"FAIL: {e}", file=sys.stderr)
        sys.exit(1)
    print("OK")
    sys.exit(0)


_tmpdirs = []


def tmpdir(prefix="tb-system-"):
    d = tempfile.mkdtemp(prefix=prefix)
    _tmpdirs.append(d)
    return d


atexit.register(lambda: [shutil.rmtree(d, ignore_errors=True) for d in _tmpdirs])


def wait_until(predicate, timeout_sec, what):
    deadline = time.monotonic() + timeout_sec
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout_sec} s waiting for {what}")


class VarlinkError(Exception):
    def __init__(self, reply):
        super().__init__(f"{reply.get('error')} {reply.get('parameters')}")
        self.error = reply.get("error")
        self.parameters = reply.get("parameters") or {}


class Varlink:
    """One connection; call() sends one method call and reads its reply."""

    def __init__(self, path, timeout_sec=5.0):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout_sec)
        self.sock.connect(path)
        self.buf = b""

    def call_raw(self, method, **params):
        self.sock.sendall(json.dumps({"method": method, "parameters": params}).encode() + b"\0")
        while b"\0" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError(f"connection closed while waiting for the reply to {method}")
            self.buf += chunk
        frame, self.buf = self.buf.split(b"\0", 1)
        return json.loads(frame)

    def call(self, method, **params):
        reply = self.call_raw(method, **params)
        if "error" in reply:
            raise VarlinkError(reply)
        return reply.get("parameters") or {}

    def close(self):
        self.sock.close()


def try_connect(path):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.connect(path)
        return True
    except OSError:
        return False
    finally:
        s.close()


_daemons = []


class Daemon:
    """tokenbudgetd on a private socket. stderr goes to a file so that a
    chatty daemon can never block on a full pipe."""

    def __init__(self, workdir, name="daemon", config=None, socket_path=None, extra_env=None, args=()):
        self.workdir = workdir
        self.socket_path = socket_path or os.path.join(workdir, name + ".sock")
        self.config = config
        self.stderr_path = os.path.join(workdir, name + ".stderr")
        cmd = [env("TOKENBUDGETD"), "--socket", self.socket_path]
        if config:
            cmd += ["--config", config]
        # The durable ledger in the test's directory, never /var/lib/tokenbudget.
        if "--state-dir" not in args:
            self.state_dir = os.path.join(workdir, name + ".state")
            os.makedirs(self.state_dir, exist_ok=True)
            cmd += ["--state-dir", self.state_dir]
        cmd += list(args)
        e = dict(os.environ)
        for key in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "LISTEN_FDS", "LISTEN_PID",
                    "LISTEN_FDNAMES", "JOURNAL_STREAM"):
            e.pop(key, None)
        e.update(extra_env or {})
        with open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err,
                                         env=e)
        self.pid = self.proc.pid
        _daemons.append(self)

    def wait_serving(self, timeout_sec=10):
        def ready():
            if self.proc.poll() is not None:
                raise AssertionError(f"tokenbudgetd exited with {self.proc.returncode} at start:\n{self.stderr()}")
            return try_connect(self.socket_path)

        wait_until(ready, timeout_sec, f"tokenbudgetd to answer on {self.socket_path}")
        return self

    def connect(self, timeout_sec=5.0):
        return Varlink(self.socket_path, timeout_sec)

    def signal(self, sig):
        self.proc.send_signal(sig)

    def stop(self, timeout_sec=5):
        """SIGTERM; returns the exit status, which must come within timeout_sec."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout_sec)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"tokenbudgetd did not exit within {timeout_sec} s of SIGTERM")

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()

    def stderr(self):
        with open(self.stderr_path, errors="replace") as f:
            return f.read()


def _kill_daemons():
    for d in _daemons:
        if d.proc.poll() is None:
            d.proc.kill()
            d.proc.wait()


atexit.register(_kill_daemons)

PRIORITY_PREFIX = re.compile(r"^<[0-7]>")


def check_stderr_prefixes(text, who):
    """Item 7 of the issue: every diagnostic line carries an sd-daemon priority prefix."""
    for n, line in enumerate(text.splitlines(), 1):
        check(PRIORITY_PREFIX.match(line), f"{who}: stderr line {n} has no <N> priority prefix: {line!r}")


def write(path, text):
    with open(path, "w") as f:
        f.write(text)
    return path


def message_ids(srcdir):
    """The MESSAGE_IDs of daemon/journal.h, by their macro suffix (GRANTED, ...)."""
    with open(os.path.join(srcdir, "daemon", "journal.h")) as f:
        ids = dict(re.findall(r'#define TB_MESSAGE_(\w+)\s+"([0-9a-f]{32})"', f.read()))
    check(len(ids) >= 12, f"daemon/journal.h defines {len(ids)} MESSAGE_IDs, expected 12")
    return ids
