#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""The message catalog (issue 4, item 5), run under with-journald.sh
--catalog systemd/tokenbudgetd.catalog, which rebuilds a private catalog
database with it: `journalctl --list-catalog` knows every MESSAGE_ID of
daemon/journal.h, and for every event kind, triggered through the real
daemon, `journalctl -x` shows each line of that catalog entry (Subject,
Defined-By, ..., body; @FIELD@ substituted by the entry's fields)."""

import os
import re
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from journalevents import drive  # noqa: E402
from tbtest import check, env, need_program, run_test, tmpdir  # noqa: E402


def catalog_entries(path):
    """{message_id: [lines]} of a .catalog file (the default language only)."""
    entries, current = {}, None
    with open(path) as f:
        for line in f:
            line = line.rstrip("\n")
            m = re.match(r"^-- ([0-9a-f]{32})( \S+)?$", line)
            if m:
                current = entries.setdefault(m.group(1), []) if not m.group(2) else None
            elif current is not None:
                current.append(line)
    return entries


def line_pattern(line):
    """A catalog line as journalctl -x prints it: @FIELD@ becomes its value."""
    parts = re.split(r"@[A-Za-z0-9_]+@", line.strip())
    return re.compile("^" + ".*".join(re.escape(p) for p in parts) + "$")


def check_listed(ids):
    out = subprocess.run(["journalctl", "--list-catalog", "--no-pager"], capture_output=True, text=True).stdout
    listed = {line.split()[0] for line in out.splitlines() if line.strip()}
    for kind, message_id in ids.items():
        check(message_id in listed, f"journalctl --list-catalog does not know {kind} ({message_id})")


def check_explained(kind, message_id, entry, pid, lines):
    # journalctl prints an absent @FIELD@ as its bare name: every field the
    # explanation uses must be in the event.
    for field in sorted(set(re.findall(r"@([A-Za-z0-9_]+)@", "\n".join(lines)))):
        check(field in entry, f"{kind}: the catalog uses @{field}@, which the event does not carry")
    out = subprocess.run(["journalctl", "-x", "--no-pager", "-o", "short", f"MESSAGE_ID={message_id}", f"_PID={pid}"],
                         capture_output=True, text=True, env=dict(os.environ, LANG="C.UTF-8", LC_ALL="C.UTF-8"))
    shown = [re.sub(r"^░░ ?", "", line).strip() for line in out.stdout.splitlines() if line.startswith("░░")]
    check(shown, f"journalctl -x shows no catalog text for {kind} ({message_id}):\n{out.stdout}{out.stderr}")
    for line in lines:
        if not line.strip():
            continue
        pattern = line_pattern(line)
        check(any(pattern.match(s) for s in shown),
              f"{kind}: catalog line {line.strip()!r} is not in journalctl -x:\n" + "\n".join(shown))
    print(f"{kind}: {len(shown)} lines of explanation")


def main():
    need_program("journalctl")
    catalog = os.path.join(env("SRCDIR"), "systemd", "tokenbudgetd.catalog")
    entries = catalog_entries(catalog)
    ids, events = drive(tmpdir())
    check_listed(ids)
    for kind, message_id in ids.items():
        check(message_id in entries, f"{catalog} has no entry for {kind} ({message_id})")
        entry, pid = events.entries[kind]
        check_explained(kind, message_id, entry, pid, entries[message_id])


run_test(main)
