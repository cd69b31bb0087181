#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""tokenbudget-proxy's units and socket activation (issue 14, item 1):
- `systemd-analyze verify` (system and --user) prints nothing on stderr for
  the proxy's service and socket as built; `systemd-analyze security
  --offline=yes` scores the system service at 2.0 or lower; the settings
  that make it what the units promise are there (127.0.0.1:11435 named
  "proxy", the address families with AF_NETLINK for sock_diag, the static
  user the daemon's trusted_proxies names, shipped as a sysusers.d snippet)
  and the options that would break it are not;
- the service's own ExecStart= line, run by systemd-socket-activate (which
  passes LISTEN_FDS, LISTEN_PID and LISTEN_FDNAMES as systemd does and
  execs it on the first connection), with no config file: the proxy serves
  the passed socket with --upstream alone, and a request through it reaches
  the test upstream (tests/proxy/upstream.js) clamped to the grant and is
  charged in the real daemon to the process that sent it (this test's:
  the proxy runs as root, so the daemon takes its onBehalfOf);
- the same line with the config file present: three passed sockets, one
  taken by its FileDescriptorName= (listen "systemd:proxy"), a TCP and a
  Unix one by their address, each serving its own upstream; the passed Unix
  socket's file is systemd's and stays when the proxy stops;
- the same line as another user (65534, which the daemon trusts) with the
  unit's AmbientCapabilities= and a /proc mounted as its ProtectProc= and
  ProcSubset= make it: a loopback request from this process (root) is
  charged to this process; with no capabilities the proxy cannot see it and
  it is charged to the proxy, as the unit's comments say (root, setpriv and
  unshare needed, else that part is skipped with a note);
- a passed socket that is not a listening stream socket is refused: the
  proxy exits non-zero and says why."""

import http.client
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tbtest import Daemon, check, env, need_program, run_test, skip, tmpdir, wait_until, write  # noqa: E402

MAX_EXPOSURE = 2.0
CONFIG_IN_UNIT = "/etc/tokenbudget/tokenbudget-proxy.conf"

_procs = []


def parse_unit(path):
    """{(section, key): [values]}; repeated keys keep every value (as test-units.py)."""
    settings, section = {}, None
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line or line[0] in "#;":
                continue
            if line.startswith("["):
                section = line.strip("[]")
                continue
            key, _, value = line.partition("=")
            settings.setdefault((section, key.strip()), []).append(value.strip())
    return settings


def man_env(work, pages):
    """A MANPATH holding just our pages (Documentation= must name real ones), and a private home and
    runtime dir: --user verify must not see the caller's own user units."""
    man = os.path.join(work, "man")
    for page in pages:
        section = os.path.join(man, "man" + page[-1])
        os.makedirs(section, exist_ok=True)
        shutil.copy(os.path.join(env("SRCDIR"), "man", page), section)
    home = {name: os.path.join(work, name.lower()) for name in ("HOME", "XDG_RUNTIME_DIR", "XDG_CONFIG_HOME",
                                                                 "XDG_DATA_HOME")}
    for path in home.values():
        os.makedirs(path, mode=0o700)
    return dict(os.environ, MANPATH=man, **home)


def verify(analyze, units, user, environ):
    args = [analyze] + (["--user"] if user else []) + ["verify"]
    if not shutil.which("man"):
        print("note: man is not installed; Documentation= is not checked (--man=no)")
        args.append("--man=no")
    r = subprocess.run(args + units, env=environ, capture_output=True, text=True)
    who = "user" if user else "system"
    check(r.returncode == 0 and not r.stderr.strip(),
          f"systemd-analyze{' --user' if user else ''} verify of the proxy's {who} units "
          f"(exit {r.returncode}):\n{r.stderr}{r.stdout}")


def proxy_binary():
    return os.path.join(env("BUILDDIR"), "proxy", "tokenbudget-proxy")


def prepare(workdir, unitdir):
    """Copies the units with ExecStart= running the proxy meson built."""
    os.makedirs(workdir)
    out = []
    for name in ("tokenbudget-proxy.service", "tokenbudget-proxy.socket"):
        with open(os.path.join(unitdir, name)) as f:
            text = f.read()
        text, n = re.subn(r"\S*/tokenbudget-proxy(?= )", proxy_binary(), text)
        check(n == 2 or name.endswith(".socket"), f"{name}: ExecStart= runs tokenbudget-proxy {n} times, expected 2")
        out.append(write(os.path.join(workdir, name), text))
    return out


def check_settings(unitdir):
    service = parse_unit(os.path.join(unitdir, "tokenbudget-proxy.service"))
    sock = parse_unit(os.path.join(unitdir, "tokenbudget-proxy.socket"))
    for key, value in {("Socket", "ListenStream"): "127.0.0.1:11435",
                       ("Socket", "FileDescriptorName"): "proxy"}.items():
        check(sock.get(key) == [value], f"tokenbudget-proxy.socket: {key[1]} is {sock.get(key)}, expected {value}")
    for key, value in {("Unit", "Requires"): "tokenbudget-proxy.socket",
                       ("Service", "User"): "tokenbudget-proxy",
                       ("Service", "NoNewPrivileges"): "yes",
                       ("Service", "ProtectSystem"): "strict",
                       ("Service", "CapabilityBoundingSet"): "CAP_SYS_PTRACE CAP_DAC_READ_SEARCH",
                       ("Service", "AmbientCapabilities"): "CAP_SYS_PTRACE CAP_DAC_READ_SEARCH",
                       ("Service", "ProtectProc"): "invisible",
                       ("Service", "ProcSubset"): "pid",
                       ("Service", "Environment"): "TOKENBUDGET_PROXY_UPSTREAM=http://127.0.0.1:11434"}.items():
        check(service.get(key) == [value],
              f"tokenbudget-proxy.service: {key[1]} is {service.get(key)}, expected {value}")
    families = set(" ".join(service.get(("Service", "RestrictAddressFamilies"), [])).split())
    check(families == {"AF_UNIX", "AF_INET", "AF_INET6", "AF_NETLINK"},
          f"tokenbudget-proxy.service: RestrictAddressFamilies= {sorted(families)}")
    for key, value in {("Service", "PrivateNetwork"): "yes", ("Service", "PrivateUsers"): "yes"}.items():
        for unit in ("tokenbudget-proxy.service", "user/tokenbudget-proxy.service"):
            check(value not in parse_unit(os.path.join(unitdir, unit)).get(key, []),
                  f"{unit}: {key[1]}={value} breaks the proxy")
    user_sock = parse_unit(os.path.join(unitdir, "user", "tokenbudget-proxy.socket"))
    check(user_sock.get(("Socket", "FileDescriptorName")) == ["proxy"],
          f"user/tokenbudget-proxy.socket: FileDescriptorName {user_sock.get(('Socket', 'FileDescriptorName'))}")
    with open(os.path.join(env("SRCDIR"), "systemd", "tokenbudget-proxy.sysusers")) as f:
        check(re.search(r"^u tokenbudget-proxy ", f.read(), re.M),
              "tokenbudget-proxy.sysusers does not create the user tokenbudget-proxy")
    with open(os.path.join(env("BUILDDIR"), "meson-info", "intro-installed.json")) as f:
        installed = list(json.load(f).values())
    for tail in ("/system/tokenbudget-proxy.service", "/system/tokenbudget-proxy.socket",
                 "/user/tokenbudget-proxy.service", "/user/tokenbudget-proxy.socket",
                 "/sysusers.d/tokenbudget-proxy.conf"):
        check(any(p.endswith(tail) for p in installed), f"meson does not install *{tail}")


def security(analyze, service):
    r = subprocess.run([analyze, "security", "--offline=yes", f"--threshold={int(MAX_EXPOSURE * 10)}", service],
                       capture_output=True, text=True)
    m = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", r.stdout)
    check(m, f"no exposure level in systemd-analyze security output:\n{r.stdout}{r.stderr}")
    score = float(m.group(1))
    print(f"systemd-analyze security: tokenbudget-proxy.service exposure {score}")
    check(score <= MAX_EXPOSURE and r.returncode == 0,
          f"exposure level {score} (exit {r.returncode}), must be <= {MAX_EXPOSURE}:\n{r.stdout}")


def exec_start(service_path, config_path):
    """The service's ExecStart= as argv, "$$" unescaped as systemd does and the config file path moved
    into the test's directory (the one in the unit is the machine's)."""
    line = parse_unit(service_path)[("Service", "ExecStart")][0]
    check(CONFIG_IN_UNIT in line, f"ExecStart= does not look for {CONFIG_IN_UNIT}: {line}")
    return shlex.split(line.replace("$$", "$").replace(CONFIG_IN_UNIT, config_path))


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def start_upstream(work, name):
    node = shutil.which("node") or shutil.which("nodejs")
    if not node:
        skip("node is not installed (Debian package nodejs): the test upstream is tests/proxy/upstream.js")
    out = open(os.path.join(work, name + ".out"), "w+")
    proc = subprocess.Popen([node, os.path.join(env("SRCDIR"), "tests", "proxy", "upstream.js"),
                             "--listen", "127.0.0.1:0"], stdout=out, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL)
    _procs.append(proc)

    def address():
        out.seek(0)
        m = re.search(r"listening on (\S+)", out.read())
        check(proc.poll() is None, f"upstream.js exited with {proc.returncode}")
        return m and m.group(1)

    return "http://" + wait_until(address, 10, "upstream.js to listen")


def activate(work, name, listen, argv, extra_env, extra=()):
    """systemd-socket-activate -l ADDR... --fdname=... -E ... ARGV."""
    activator = need_program("systemd-socket-activate")
    cmd = [activator]
    for addr in listen:
        cmd += ["-l", addr]
    cmd += list(extra)
    for k, v in extra_env.items():
        cmd += ["-E", f"{k}={v}"]
    cmd += argv
    err_path = os.path.join(work, name + ".stderr")
    e = {k: v for k, v in os.environ.items() if not k.startswith("LISTEN_")}
    with open(err_path, "wb") as err:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err, env=e)
    _procs.append(proc)
    for addr in listen:
        if addr.startswith("/"):
            wait_until(lambda: os.path.exists(addr), 5, f"systemd-socket-activate to listen on {addr}")
            continue
        host, port = addr.rsplit(":", 1)
        wait_until(lambda: listening(host, int(port)), 5, f"systemd-socket-activate to listen on {addr}")
    return proc, err_path


def listening(host, port):
    with open("/proc/net/tcp") as f:
        want = f"{socket.inet_aton(host)[::-1].hex().upper()}:{port:04X}"
        return any(line.split()[1] == want and line.split()[3] == "0A" for line in f.readlines()[1:])


def read(path):
    with open(path, errors="replace") as f:
        return f.read()


class UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path, timeout):
        super().__init__("localhost", timeout=timeout)
        self.path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.path)


def chat(port, max_tokens, output_tokens, err_path):
    """A chat request to 127.0.0.1:port, or to the Unix socket port when it is a path."""
    if isinstance(port, str):
        c = UnixHTTPConnection(port, 10)
    else:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    body = json.dumps({"model": "m", "messages": [{"role": "user", "content": "one two three"}],
                       "max_completion_tokens": max_tokens})
    try:
        c.request("POST", "/v1/chat/completions", body,
                  {"Content-Type": "application/json", "X-Test-Output-Tokens": str(output_tokens),
                   "X-Test-Input-Tokens": "10"})
        r = c.getresponse()
        data = r.read()
    except OSError as e:
        raise AssertionError(f"POST through the activated proxy on :{port}: {e}; its stderr:\n{read(err_path)}")
    finally:
        c.close()
    check(r.status == 200, f"POST through the activated proxy on :{port}: {r.status} {data[:300]!r}")
    return json.loads(data)


def upstream_requests(upstream):
    host, port = upstream[len("http://"):].rsplit(":", 1)
    c = http.client.HTTPConnection(host, int(port), timeout=5)
    c.request("GET", "/__requests")
    reqs = json.loads(c.getresponse().read())
    c.close()
    return reqs


def minute_used(daemon_sock, scope):
    r = subprocess.run([env("BUDGETCTL"), "-s", daemon_sock, "status", "--json", "--all"], capture_output=True,
                       text=True, timeout=10)
    check(r.returncode == 0, f"budgetctl status: {r.returncode} {r.stderr}")
    for s in json.loads(r.stdout)["scopes"]:
        if s["name"] == scope:
            return next(w["used"] for w in s["windows"] if w["span"] == "minute")
    return None


def stop(proc, who):
    proc.send_signal(signal.SIGTERM)
    try:
        status = proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise AssertionError(f"{who}: no exit within 10 s of SIGTERM")
    check(status == 0, f"{who}: exit status {status} after SIGTERM, expected 0")


def without_config(work, argv, daemon):
    """No config file: the unit's --upstream from Environment=, the one socket passed."""
    upstream = start_upstream(work, "upstream-a")
    port = free_port()
    proc, err_path = activate(work, "no-config", [f"127.0.0.1:{port}"], argv,
                              {"TOKENBUDGET_PROXY_UPSTREAM": upstream, "TOKENBUDGET_SOCKET": daemon.socket_path},
                              ["--fdname=proxy"])
    time.sleep(0.3)
    check(os.path.realpath(f"/proc/{proc.pid}/exe") != os.path.realpath(proxy_binary()),
          "tokenbudget-proxy ran before the first connection")
    reply = chat(port, 30, 12, err_path)
    check(reply["usage"]["completion_tokens"] == 12, f"the reply's usage: {reply['usage']}")
    check(os.path.realpath(f"/proc/{proc.pid}/exe") == os.path.realpath(proxy_binary()),
          "the process answering is not tokenbudget-proxy (the unit's sh did not exec it)")
    reqs = [r for r in upstream_requests(upstream) if r["path"] == "/v1/chat/completions"]
    check(len(reqs) == 1, f"the upstream saw {len(reqs)} chat requests, expected 1")
    check(reqs[0]["body"].get("max_completion_tokens") == 30,
          f"forwarded max_completion_tokens: {reqs[0]['body'].get('max_completion_tokens')}")
    # Charged where the client is: this process (the proxy is root, so its onBehalfOf is taken).
    scope = f"process:{os.getpid()}"
    used = wait_until(lambda: minute_used(daemon.socket_path, scope), 5, f"{scope} in the daemon's status")
    check(used == 22, f"{scope} used {used} tokens this minute, expected 10 + 12 = 22")
    err = read(err_path)
    check(f"listening on 127.0.0.1:{port} (passed by systemd) for {upstream}" in err,
          f"the proxy's log does not say it serves the passed socket:\n{err}")
    stop(proc, "activated proxy without config")


def with_config(work, argv, config_path, daemon):
    """The config file present: one socket taken by name, the others by their address (TCP and Unix)."""
    up_named, up_addr = start_upstream(work, "upstream-b"), start_upstream(work, "upstream-c")
    up_unix = start_upstream(work, "upstream-e")
    named_port, addr_port = free_port(), free_port()
    unix_path = os.path.join(work, "proxy.sock")
    write(config_path, f"""
daemon_socket = "{daemon.socket_path}";
listeners = (
        {{ listen = "systemd:proxy"; upstream = "{up_named}"; }},
        {{ listen = "127.0.0.1:{addr_port}"; upstream = "{up_addr}"; }},
        {{ listen = "unix:{unix_path}"; upstream = "{up_unix}"; }}
);
""")
    proc, err_path = activate(work, "config", [f"127.0.0.1:{addr_port}", f"127.0.0.1:{named_port}", unix_path],
                              argv, {"TOKENBUDGET_PROXY_UPSTREAM": "http://127.0.0.1:9"},
                              ["--fdname=other:proxy:unix"])
    chat(named_port, 20, 5, err_path)
    chat(addr_port, 20, 6, err_path)
    chat(unix_path, 20, 7, err_path)
    for upstream, n in ((up_named, 5), (up_addr, 6), (up_unix, 7)):
        sent = [r["sent"] for r in upstream_requests(upstream) if r["path"] == "/v1/chat/completions"]
        check(sent == [n], f"{upstream} answered {sent}, expected [{n}] (a socket served the wrong upstream)")
    err = read(err_path)
    check("matches no listener" not in err, f"a passed socket was left unserved:\n{err}")
    stop(proc, "activated proxy with config")
    # systemd owns a passed Unix socket: the proxy leaves its file (a socket it bound, it removes).
    check(os.path.exists(unix_path), f"the proxy removed {unix_path}, the socket systemd passed")
    os.unlink(config_path)  # the next cases run the unit's --upstream branch again


def as_other_user(work, argv, service_path):
    """The unit's capabilities and /proc view, as uid 65534 (trusted by a daemon of its own)."""
    # "  skipped ..." lines are listed by scripts/test.sh as not checked in a test that passed.
    if os.geteuid() != 0 or not shutil.which("setpriv") or not shutil.which("unshare"):
        print("  skipped the unit's capabilities as uid 65534: needs root, setpriv and unshare (util-linux)")
        return
    # A build under /root is closed to 65534: the proxy (or its libtokenbudget) would not even start.
    r = subprocess.run(["setpriv", "--reuid", "65534", "--regid", "65534", "--clear-groups", proxy_binary(),
                        "--version"], capture_output=True, text=True)
    if r.returncode != 0:
        print(f"  skipped the unit's capabilities as uid 65534: it cannot run {proxy_binary()} (a directory "
              f"above the build is closed to it, e.g. /root): {r.stderr.strip()}")
        return
    unit = parse_unit(service_path)
    caps = unit[("Service", "AmbientCapabilities")][0].split()
    proc_opts = f"hidepid={unit[('Service', 'ProtectProc')][0]},subset={unit[('Service', 'ProcSubset')][0]}"
    # Where 65534 can reach the daemon's socket and read the config.
    shared = os.path.join(work, "shared")
    os.makedirs(shared)
    os.chmod(work, 0o755)
    os.chmod(shared, 0o755)
    conf = write(os.path.join(shared, "tokenbudgetd.conf"), 'trusted_proxies = [ "65534" ];\n')
    daemon = Daemon(shared, "trusting", config=conf).wait_serving()
    upstream = start_upstream(work, "upstream-d")
    scope = f"process:{os.getpid()}"
    for name, with_caps in (("caps", True), ("no-caps", False)):
        capset = ",".join("+" + c[len("CAP_"):].lower() for c in caps) if with_caps else "-all"
        port = free_port()
        inner = (f"mount -t proc -o {proc_opts} proc /proc && exec setpriv --reuid 65534 --regid 65534 "
                 f"--clear-groups --inh-caps {capset} --ambient-caps {capset} --no-new-privs "
                 + shlex.join([need_program("systemd-socket-activate"), "-l", f"127.0.0.1:{port}",
                               "--fdname=proxy", "-E", f"TOKENBUDGET_PROXY_UPSTREAM={upstream}",
                               "-E", f"TOKENBUDGET_SOCKET={daemon.socket_path}"] + argv))
        err_path = os.path.join(work, f"{name}.stderr")
        with open(err_path, "wb") as err:
            proc = subprocess.Popen(["unshare", "-m", "--propagation", "private", "sh", "-c", inner],
                                    stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err)
        _procs.append(proc)
        wait_until(lambda: listening("127.0.0.1", port) or proc.poll() is not None, 5, "the activator to listen")
        check(proc.poll() is None, f"{name}: the activator exited with {proc.returncode}:\n{read(err_path)}")
        before = minute_used(daemon.socket_path, scope) or 0
        chat(port, 20, 4, err_path)
        err = read(err_path)
        used = (minute_used(daemon.socket_path, scope) or 0) - before
        if with_caps:
            check(used == 14, f"with {caps} as uid 65534, {scope} was charged {used}, expected 10 + 4:\n{err}")
        else:
            check(used == 0 and "has no process this proxy can see" in err,
                  f"without capabilities as uid 65534, {scope} was charged {used}, expected 0 and the proxy "
                  f"charged, saying why:\n{err}")
        stop(proc, f"proxy as 65534 ({name})")
    daemon.stop()


def wrong_type(work, argv):
    path = os.path.join(work, "dgram.sock")
    activator = need_program("systemd-socket-activate")
    err_path = os.path.join(work, "dgram.stderr")
    with open(err_path, "wb") as err:
        proc = subprocess.Popen([activator, "-l", path, "--datagram", "--fdname=proxy",
                                 "-E", "TOKENBUDGET_PROXY_UPSTREAM=http://127.0.0.1:9"] + argv,
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err)
    _procs.append(proc)
    wait_until(lambda: os.path.exists(path), 5, "systemd-socket-activate to bind the datagram socket")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.sendto(b"wake up", path)
    s.close()
    try:
        status = proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise AssertionError("the proxy serves a passed datagram socket (still running after 10 s)")
    check(status != 0, "the proxy exited 0 when passed a datagram socket")
    check("not a listening TCP or Unix stream socket" in read(err_path),
          f"the error does not say what was wrong:\n{read(err_path)}")


def main():
    analyze = need_program("systemd-analyze")
    builddir = env("BUILDDIR")
    unitdir = os.path.join(builddir, "systemd")
    work = tmpdir("tb-proxy-units-")
    environ = man_env(work, ("tokenbudget-proxy.1", "tokenbudgetd.8"))

    check_settings(unitdir)
    system = prepare(os.path.join(work, "system"), unitdir)
    user = prepare(os.path.join(work, "user"), os.path.join(unitdir, "user"))
    verify(analyze, system, False, environ)
    verify(analyze, user, True, environ)
    security(analyze, system[0])

    need_program("systemd-socket-activate")
    config_path = os.path.join(work, "tokenbudget-proxy.conf")
    argv = exec_start(system[0], config_path)
    daemon = Daemon(work).wait_serving()
    without_config(work, argv, daemon)
    with_config(work, argv, config_path, daemon)
    as_other_user(work, argv, system[0])
    wrong_type(work, argv)
    daemon.stop()


try:
    run_test(main)
finally:
    for p in _procs:
        if p.poll() is None:
            p.kill()
