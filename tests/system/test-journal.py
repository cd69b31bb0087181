#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Structured journal events (issue 4, items 4 and 6), run under
with-journald.sh: every event kind is triggered through the real daemon (see
journalevents.py) and read back with `journalctl -o json MESSAGE_ID=...`
from a real systemd-journald, then checked field by field: MESSAGE_ID,
PRIORITY, a MESSAGE, and the TOKENBUDGET_* fields of what it is about.
Rate limiting: a burst of 3 per second gives 3 refused entries and one
"7 similar events suppressed" summary; granted entries only with
journal.log_granted."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from journalevents import drive  # noqa: E402
from tbtest import check, need_program, run_test, tmpdir  # noqa: E402


def check_entry(kind, entry, pid, message_id, expected):
    who = f"{kind} entry (MESSAGE_ID={message_id})"
    check(entry.get("MESSAGE_ID") == message_id, f"{who}: MESSAGE_ID {entry.get('MESSAGE_ID')}")
    check(entry.get("_PID") == str(pid), f"{who}: _PID {entry.get('_PID')}, expected the daemon {pid}")
    check(isinstance(entry.get("MESSAGE"), str) and entry["MESSAGE"].strip(), f"{who}: no MESSAGE")
    for field, want in expected.items():
        got = entry.get(field)
        if callable(want):
            check(isinstance(got, str) and want(got), f"{who}: {field}={got!r} is not as expected")
        else:
            check(got == want, f"{who}: {field}={got!r}, expected {want!r}")
    print(f"{kind}: {entry['MESSAGE']}")


def main():
    need_program("journalctl")
    ids, events = drive(tmpdir())
    for kind, message_id in ids.items():
        check(kind in events.entries, f"no {kind} event was checked")
        entry, pid = events.entries[kind]
        check_entry(kind, entry, pid, message_id, events.expected[kind])


run_test(main)
