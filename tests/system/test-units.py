#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""The unit files as built (issue 4, item 3):
- `systemd-analyze verify` (system and --user) prints nothing on stderr for
  the units configured with the real binary path, with our man pages on
  MANPATH so that Documentation= is checked too;
- `systemd-analyze security --offline=yes` scores the system service at 1.5
  or lower (systemd-oomd scores 2.0 on Debian 12);
- the settings the issue names are there, and the options that would break
  the daemon (PrivateNetwork=, PrivateUsers=, ProtectProc=invisible) are not;
- meson installs the units, the user units and the catalog into the
  directories systemd's pkg-config file names (under the build's prefix) and
  the daemon into sbindir, and ExecStart= points at that daemon."""

import json
import os
import re
import shutil
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tbtest import check, env, need_program, run_test, tmpdir  # noqa: E402

MAX_EXPOSURE = 1.5


def parse_unit(path):
    """{(section, key): [values]}; repeated keys keep every value."""
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


def prepare(workdir, unitdir, names):
    """Copies units with ExecStart= pointing at the daemon meson built."""
    os.makedirs(workdir)
    daemon = env("TOKENBUDGETD")
    for name in names:
        with open(os.path.join(unitdir, name)) as f:
            text = f.read()
        text, n = re.subn(r"^ExecStart=\S*/tokenbudgetd\b", f"ExecStart={daemon}", text, flags=re.M)
        check(n == 1 or not name.endswith(".service"), f"{name}: no ExecStart= running tokenbudgetd")
        with open(os.path.join(workdir, name), "w") as f:
            f.write(text)
    return [os.path.join(workdir, n) for n in names]


def man_env(work):
    """A MANPATH holding just our pages, so Documentation= must name real pages."""
    man = os.path.join(work, "man")
    for page in ("tokenbudgetd.8", "budgetctl.1"):
        section = os.path.join(man, "man" + page[-1])
        os.makedirs(section, exist_ok=True)
        shutil.copy(os.path.join(env("SRCDIR"), "man", page), section)
    # A private home and runtime dir: --user verify must not see (or fail
    # to read) the caller's own user units.
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
          f"systemd-analyze{' --user' if user else ''} verify of the {who} units "
          f"(exit {r.returncode}):\n{r.stderr}{r.stdout}")


def security(analyze, service):
    r = subprocess.run([analyze, "security", "--offline=yes", f"--threshold={int(MAX_EXPOSURE * 10)}", service],
                       capture_output=True, text=True)
    m = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", r.stdout)
    check(m, f"no exposure level in systemd-analyze security output:\n{r.stdout}{r.stderr}")
    score = float(m.group(1))
    print(f"systemd-analyze security: exposure {score}")
    check(score <= MAX_EXPOSURE and r.returncode == 0,
          f"exposure level {score} (exit {r.returncode}), must be <= {MAX_EXPOSURE}:\n{r.stdout}")


EXPECTED = {
    "tokenbudgetd.service": {
        ("Service", "Type"): "notify",
        ("Service", "ExecReload"): "/bin/kill -HUP $MAINPID",
        ("Service", "Restart"): "on-failure",
        ("Service", "DynamicUser"): "yes",
        ("Service", "StateDirectory"): "tokenbudget",
        ("Service", "ConfigurationDirectory"): "tokenbudget",
        ("Service", "CapabilityBoundingSet"): "CAP_KILL",
        ("Unit", "Requires"): "tokenbudgetd.socket",
        # limits.max_connections (1024) + the daemon's 64 must fit; a client must not push it into swap.
        ("Service", "LimitNOFILE"): "65536",
        ("Service", "MemoryHigh"): "384M",
        ("Service", "MemoryMax"): "512M",
    },
    "tokenbudgetd.socket": {
        ("Socket", "ListenStream"): "/run/tokenbudget/io.tokenbudget",
        ("Socket", "FileDescriptorName"): "varlink",
        ("Socket", "SocketMode"): "0666",
    },
    "user/tokenbudgetd.service": {
        ("Service", "Type"): "notify",
        ("Service", "ExecReload"): "/bin/kill -HUP $MAINPID",
        ("Service", "Restart"): "on-failure",
    },
    "user/tokenbudgetd.socket": {
        ("Socket", "ListenStream"): "%t/tokenbudget/io.tokenbudget",
        ("Socket", "FileDescriptorName"): "varlink",
    },
}
# These break the daemon (TESTING.md): no uevents; SO_PEERCRED uids become
# 65534; other users' /proc/PID hidden.
FORBIDDEN = {("Service", "PrivateNetwork"): "yes", ("Service", "PrivateUsers"): "yes",
             ("Service", "ProtectProc"): "invisible"}


def check_settings(unitdir):
    for name, expected in EXPECTED.items():
        settings = parse_unit(os.path.join(unitdir, name))
        for key, value in expected.items():
            check(settings.get(key) == [value], f"{name}: {key[0]}.{key[1]} is {settings.get(key)}, expected {value}")
        for key, value in FORBIDDEN.items():
            check(value not in settings.get(key, []), f"{name}: {key[1]}={value} breaks the daemon")
    service = parse_unit(os.path.join(unitdir, "tokenbudgetd.service"))
    check(service.get(("Service", "WatchdogSec")), "tokenbudgetd.service: no WatchdogSec=")
    check(service.get(("Service", "AmbientCapabilities"), ["CAP_KILL"]) == ["CAP_KILL"],
          "tokenbudgetd.service: AmbientCapabilities= other than CAP_KILL")


def pkgconfig_dir(variable, base, prefix):
    """Where systemd's pkg-config file puts variable, under this prefix."""
    pc_prefix = subprocess.run(["pkg-config", "--variable=prefix", "systemd"], capture_output=True,
                               text=True).stdout.strip()
    args = ["pkg-config", f"--variable={variable}", "systemd"]
    if pc_prefix != prefix:
        args.insert(1, f"--define-variable={base}={prefix}")
    return subprocess.run(args, capture_output=True, text=True, check=True).stdout.strip()


def check_install(builddir):
    if subprocess.run(["pkg-config", "--exists", "systemd"]).returncode != 0:
        print("note: systemd.pc is missing; install directories not checked")
        return
    info = os.path.join(builddir, "meson-info")
    with open(os.path.join(info, "intro-installed.json")) as f:
        installed = set(json.load(f).values())
    with open(os.path.join(info, "intro-buildoptions.json")) as f:
        options = {o["name"]: o["value"] for o in json.load(f)}
    prefix = options["prefix"]
    dirs = {
        "system": pkgconfig_dir("systemdsystemunitdir", "root_prefix", prefix),
        "user": pkgconfig_dir("systemduserunitdir", "prefix", prefix),
        "catalog": pkgconfig_dir("catalogdir", "prefix", prefix),
    }
    sbin = os.path.join(prefix, options["sbindir"])
    wanted = [os.path.join(dirs[d], f) for d in ("system", "user") for f in ("tokenbudgetd.service",
                                                                             "tokenbudgetd.socket")]
    wanted += [os.path.join(dirs["catalog"], "tokenbudgetd.catalog"), os.path.join(sbin, "tokenbudgetd")]
    for path in wanted:
        check(path in installed, f"meson does not install {path}; it installs:\n" + "\n".join(sorted(installed)))
        check(path.startswith(prefix.rstrip("/") + "/") or prefix == "/usr",
              f"{path} is outside the prefix {prefix}")
    for unit in ("tokenbudgetd.service", "user/tokenbudgetd.service"):
        exec_start = parse_unit(os.path.join(builddir, "systemd", unit))[("Service", "ExecStart")][0]
        check(exec_start.split()[0] == os.path.join(sbin, "tokenbudgetd"),
              f"{unit}: ExecStart={exec_start} is not the installed daemon in {sbin}")


def main():
    analyze = need_program("systemd-analyze")
    builddir = env("BUILDDIR")
    unitdir = os.path.join(builddir, "systemd")
    work = tmpdir()
    environ = man_env(work)

    check_settings(unitdir)
    units = ["tokenbudgetd.service", "tokenbudgetd.socket"]
    system = prepare(os.path.join(work, "system"), unitdir, units)
    user = prepare(os.path.join(work, "user"), os.path.join(unitdir, "user"), units)
    verify(analyze, system, False, environ)
    verify(analyze, user, True, environ)
    security(analyze, system[0])
    check_install(builddir)


run_test(main)
