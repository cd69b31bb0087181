#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""The pure core's boundary (STYLE.md, habit 1), as a unit test.

Nothing under daemon/core/ may include event2/, systemd/ or sqlite3.h, read
the clock, log, or do I/O: the core takes values (time as a uint64_t
now_usec parameter, file contents as bytes) and returns values, and the shell
in daemon/ does the rest.

  check-core-boundary.py source --core-dir DIR [--log-header daemon/log.h]
      scans every .c and .h under DIR (comments and string literals left
      out) for forbidden includes and calls; each finding is printed as
      FILE:LINE: what was found, and what to do instead.
  check-core-boundary.py link --library libtbcore.a --nm NM
      reads the undefined symbols of the built core library (nm -u), which
      also shows calls hidden behind macros and inline functions; a finding
      names the object and the symbol.

Formatting into memory is allowed: snprintf/vsnprintf, and fprintf/fputs/
fputc/fwrite on an open_memstream() (what config_format() does); so is
libconfig's parsing from a buffer (config_read_string). Exit status: 0 clean,
1 a finding (or the checker's own self-test failed), 77 skipped (nm missing),
2 usage.
"""
import argparse
import os
import re
import subprocess
import sys

SKIP = 77

HOW_TIME = 'take time as a uint64_t now_usec parameter; the shell reads the clock'
HOW_LOG = 'return a value or an error (char **ret_reason); the shell logs it'
HOW_IO = 'take the bytes or values as parameters; the shell does the I/O'
HOW_DEP = 'the core links neither the event loop, libsystemd nor SQLite; move this to the shell (daemon/)'

# Includes, by the name inside <> or "".
INCLUDES = [
    (r'event2/.*|event\.h|evdns\.h|evhttp\.h|evutil\.h', 'includes libevent', HOW_DEP),
    (r'systemd/.*', 'includes libsystemd', HOW_DEP),
    (r'sqlite3\.h', 'includes SQLite', HOW_DEP),
    (r'time-util\.h', 'includes the clock helper', HOW_TIME),
    (r'log\.h|syslog\.h', 'includes a logging API', HOW_LOG),
    # Not sys/un.h: config.c needs sizeof(sun_path) to validate the socket
    # path's length, a value, not I/O.
    (r'sys/socket\.h|netinet/.*|arpa/.*|sys/epoll\.h|poll\.h|sys/select\.h|sys/inotify\.h',
     'includes a socket or polling API', HOW_IO),
    (r'fcntl\.h|dirent\.h|sys/stat\.h|sys/random\.h|sys/ioctl\.h|sys/mman\.h|sys/wait\.h|sys/time\.h',
     'includes a file, process or clock API', HOW_IO),
]

CLOCK_CALLS = ['clock_gettime', 'clock_getres', 'clock', 'time', 'gettimeofday', 'timespec_get', 'ftime',
               'times', 'now_usec', 'sleep', 'usleep', 'nanosleep', 'clock_nanosleep', 'alarm']
LOG_CALLS = ['printf', 'vprintf', 'puts', 'putchar', 'perror', 'dprintf', 'vdprintf', 'syslog', 'vsyslog',
             'openlog', 'err', 'errx', 'verr', 'verrx', 'warn', 'warnx', 'vwarn', 'vwarnx', 'error', 'psignal',
             'psiginfo']
IO_CALLS = [
    # files
    'open', 'openat', 'openat2', 'open64', 'openat64', 'creat', 'fopen', 'fopen64', 'freopen', 'fdopen',
    'read', 'write', 'pread', 'pwrite', 'pread64', 'pwrite64', 'readv', 'writev', 'preadv', 'pwritev',
    'lseek', 'lseek64', 'close', 'close_range', 'fsync', 'fdatasync', 'sync', 'syncfs', 'ioctl', 'fcntl',
    'dup', 'dup2', 'dup3', 'pipe', 'pipe2', 'sendfile', 'splice', 'copy_file_range', 'mkfifo', 'mknod',
    'stat', 'fstat', 'lstat', 'fstatat', 'statx', 'stat64', 'fstat64', 'lstat64', 'statfs', 'fstatfs',
    'access', 'faccessat', 'euidaccess', 'eaccess', 'unlink', 'unlinkat', 'remove', 'rename', 'renameat',
    'renameat2', 'mkdir', 'mkdirat', 'rmdir', 'chdir', 'fchdir', 'getcwd', 'readlink', 'readlinkat',
    'realpath', 'chmod', 'fchmod', 'fchmodat', 'chown', 'fchown', 'lchown', 'fchownat', 'truncate',
    'ftruncate', 'link', 'linkat', 'symlink', 'symlinkat', 'mkstemp', 'mkostemp', 'mkdtemp', 'tmpfile',
    'opendir', 'fdopendir', 'readdir', 'readdir64', 'closedir', 'scandir', 'nftw', 'ftw', 'glob',
    'inotify_init', 'inotify_init1', 'inotify_add_watch',
    # sockets and polling
    'socket', 'socketpair', 'connect', 'bind', 'listen', 'accept', 'accept4', 'send', 'sendto', 'sendmsg',
    'sendmmsg', 'recv', 'recvfrom', 'recvmsg', 'recvmmsg', 'shutdown', 'getsockopt', 'setsockopt',
    'getpeername', 'getsockname', 'poll', 'ppoll', 'select', 'pselect', 'epoll_create', 'epoll_create1',
    'epoll_ctl', 'epoll_wait', 'epoll_pwait', 'eventfd', 'signalfd', 'timerfd_create', 'timerfd_settime',
    # randomness, environment, processes
    'getrandom', 'getentropy', 'arc4random', 'arc4random_buf', 'arc4random_uniform', 'getenv',
    'secure_getenv', 'setenv', 'putenv', 'unsetenv', 'system', 'popen', 'pclose', 'fork', 'vfork',
    'execv', 'execve', 'execvp', 'execl', 'execlp', 'execle', 'fexecve', 'posix_spawn', 'posix_spawnp',
    'kill', 'raise', 'signal', 'sigaction', 'waitpid', 'waitid', 'wait', 'pidfd_open', 'pidfd_send_signal',
    'prctl', 'setuid', 'setgid', 'getuid', 'geteuid', 'getpid', 'getppid',
]
# Calls by prefix: other libraries' APIs that are I/O or logging by nature.
PREFIX_CALLS = [
    (r'sd_journal_\w+', 'logs to the journal', HOW_LOG),
    (r'sd_\w+', 'calls libsystemd', HOW_DEP),
    (r'(event|evbuffer|bufferevent|evutil|evconnlistener|evsignal|evtimer)_\w+', 'calls libevent', HOW_DEP),
    (r'sqlite3_\w+', 'calls SQLite', HOW_DEP),
]


def kind_of(name):
    if name in CLOCK_CALLS:
        return 'reads the clock or sleeps', HOW_TIME
    if name in LOG_CALLS:
        return 'logs', HOW_LOG
    return 'does I/O', HOW_IO


def log_names(log_header):
    """The shell's logging API, from daemon/log.h (functions and macros)."""
    names = {'log_msg', 'log_limited', 'log_error', 'log_warning', 'log_notice', 'log_info', 'log_debug'}
    if log_header and os.path.exists(log_header):
        with open(log_header, encoding='utf-8') as f:
            names |= set(re.findall(r'\b(log_[a-z_]+)\s*\(', f.read()))
    return names


def strip_c(text):
    """Blanks comments and the contents of string and character literals,
    keeping every newline (so line numbers stay) and the quotes. Returns the
    code, and the text with only comments blanked (for #include lines)."""
    code, nocomment = [], []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith('/*', i):
            j = text.find('*/', i + 2)
            j = n if j < 0 else j + 2
            blank = re.sub(r'[^\n]', ' ', text[i:j])
            code.append(blank)
            nocomment.append(blank)
            i = j
        elif text.startswith('//', i):
            j = text.find('\n', i)
            j = n if j < 0 else j
            code.append(' ' * (j - i))
            nocomment.append(' ' * (j - i))
            i = j
        elif c in '"\'':
            j = i + 1
            while j < n and text[j] != c and text[j] != '\n':
                j += 2 if text[j] == '\\' else 1
            j = min(j + 1, n)
            code.append(c + re.sub(r'[^\n]', ' ', text[i + 1:j - 1]) + (c if j - 1 > i else ''))
            nocomment.append(text[i:j])
            i = j
        else:
            code.append(c)
            nocomment.append(c)
            i += 1
    return ''.join(code), ''.join(nocomment)


def scan_text(path, text, logs):
    """Findings in one file: (path, line, what, how)."""
    findings = []
    code, nocomment = strip_c(text)
    calls = sorted(set(CLOCK_CALLS + LOG_CALLS + IO_CALLS), key=len, reverse=True)
    # Not a member (.read( or ->read() nor part of a longer name (fclose, start_time).
    call_re = re.compile(r'(?<![\w.>])(?<!->)(' + '|'.join(calls) + r')\s*\(')
    log_re = re.compile(r'(?<![\w.>])(' + '|'.join(sorted(logs, key=len, reverse=True)) + r')\s*\(')
    prefix_res = [(re.compile(r'(?<![\w.>])(' + p + r')\s*\('), what, how) for p, what, how in PREFIX_CALLS]
    stream_re = re.compile(r'(?<![\w.>])(stdout|stderr|stdin)\b')
    include_re = re.compile(r'^\s*#\s*include\s*[<"]([^>"]+)[>"]')
    for lineno, (line, raw) in enumerate(zip(code.split('\n'), nocomment.split('\n')), 1):
        m = include_re.match(raw)
        if m:
            name = m.group(1)
            for pattern, what, how in INCLUDES:
                if re.fullmatch(pattern, name):
                    findings.append((path, lineno, f'{what}: #include {name}', how))
            continue
        for m in call_re.finditer(line):
            what, how = kind_of(m.group(1))
            findings.append((path, lineno, f'{what}: {m.group(1)}()', how))
        for m in log_re.finditer(line):
            findings.append((path, lineno, f"logs: {m.group(1)}() (the shell's daemon/log.h)", HOW_LOG))
        for regex, what, how in prefix_res:
            for m in regex.finditer(line):
                findings.append((path, lineno, f'{what}: {m.group(1)}()', how))
        for m in stream_re.finditer(line):
            findings.append((path, lineno, f'writes to or reads a standard stream: {m.group(1)}', HOW_LOG))
    return findings


def self_test(logs):
    """The scanner finds what it must and nothing else: a checker that
    quietly stopped matching would pass every core."""
    bad = {
        '#include <event2/event.h>': 'includes libevent',
        '#include <systemd/sd-journal.h>': 'includes libsystemd',
        '#include "sqlite3.h"': 'includes SQLite',
        '#include "time-util.h"': 'clock helper',
        'x = now_usec();': 'clock',
        'clock_gettime(CLOCK_MONOTONIC, &ts);': 'clock',
        't = time (NULL);': 'clock',
        'gettimeofday(&tv, NULL);': 'clock',
        'log_info("x");': 'logs',
        'fprintf(stderr, "x");': 'standard stream',
        'printf("x");': 'logs',
        'fd = open(path, O_RDONLY);': 'I/O',
        'f = fopen(path, "r");': 'I/O',
        'n = read(fd, buf, 1);': 'I/O',
        'pwrite(fd, b, 1, 0);': 'I/O',
        'connect(fd, &sa, len);': 'I/O',
        'd = opendir(p);': 'I/O',
        'stat(p, &st);': 'I/O',
        'getrandom(b, 16, 0);': 'I/O',
        'sd_journal_send("X=1", NULL);': 'journal',
        'event_base_loop(b, 0);': 'libevent',
    }
    good = [
        'int f(uint64_t now_usec, uint64_t start_time);',
        'g(now_usec, x);',
        '/* time(NULL) would be wrong here: clock_gettime() too */',
        's = "open(read(write(";',
        'f = open_memstream(&buf, &size); fprintf(f, "%d", 1); fclose(f);',
        'vsnprintf(buf, sizeof(buf), fmt, ap);',
        'ops->read(x); ops.write(y);',
        'log_level_to_string(l);',
        'config_read_string(&lc, text);',
        '#include <sys/un.h>',
        'ledger_reserve(l, s, n, 1, now_usec, &a, &r);',
        'x = procfs_parse_stat(text, len, comm, &start_time);',
    ]
    failed = []
    for snippet, expect in bad.items():
        found = scan_text('self-test', snippet + '\n', logs)
        if not any(expect.lower() in (f[2] + ' ' + f[3]).lower() for f in found):
            failed.append(f'not found in {snippet!r} (expected "{expect}"): {found}')
    for snippet in good:
        found = scan_text('self-test', snippet + '\n', logs)
        if found:
            failed.append(f'false finding in {snippet!r}: {found}')
    return failed


def check_source(args):
    logs = log_names(args.log_header)
    problems = self_test(logs)
    if problems:
        print('check-core-boundary: the scanner itself is broken:')
        for p in problems:
            print('  ' + p)
        return 1
    files = []
    for root, _, names in os.walk(args.core_dir):
        files += [os.path.join(root, n) for n in names if n.endswith(('.c', '.h'))]
    if not files:
        print(f'check-core-boundary: no .c or .h files under {args.core_dir}')
        return 1
    top = os.path.dirname(os.path.dirname(os.path.abspath(args.core_dir)))
    findings = []
    for path in sorted(files):
        with open(path, encoding='utf-8', errors='replace') as f:
            findings += scan_text(os.path.relpath(path, top), f.read(), logs)
    for path, line, what, how in findings:
        print(f'{path}:{line}: {what} ({how})')
    if findings:
        print(f'check-core-boundary: {len(findings)} finding(s) in the pure core; see STYLE.md, habit 1')
        return 1
    print(f'check-core-boundary: {len(files)} files under daemon/core/: no forbidden include, clock read, '
          'log or I/O')
    return 0


# Symbols the core library must not reference (nm -u), beyond the call names
# above: fortified and 64-bit variants, the standard streams, our shell's
# logging API, other libraries by prefix.
LINK_EXTRA = {
    '__open_2', '__open64_2', '__openat_2', '__openat64_2', '__read_chk', '__pread_chk', '__pread64_chk',
    '__recv_chk', '__recvfrom_chk', '__readlink_chk', '__readlinkat_chk', '__getcwd_chk', '__printf_chk',
    '__vprintf_chk', '__dprintf_chk', '__vdprintf_chk', '__syslog_chk', '__vsyslog_chk', '__xstat',
    '__fxstat', '__lxstat', '__xstat64', '__fxstat64', '__lxstat64', '__fxstatat', '__fxstatat64',
    'stdin', 'stdout', 'stderr', '__clock_gettime', '__gettimeofday', 'clock_gettime64', '__clock_gettime64',
}
LINK_PREFIXES = re.compile(r'^(sd_|event_|evbuffer_|bufferevent_|evutil_|evconnlistener_|sqlite3_|epoll_|'
                           r'inotify_|pidfd_|clock_)')


def link_kind(sym, logs):
    if sym in logs:
        return "logs (the shell's daemon/log.h)", HOW_LOG
    if sym in ('stdin', 'stdout', 'stderr'):
        return 'uses a standard stream', HOW_LOG
    if sym.startswith(('sd_', 'event_', 'evbuffer_', 'bufferevent_', 'evutil_', 'evconnlistener_', 'sqlite3_')):
        return 'links another library', HOW_DEP
    base = re.sub(r'^__|_chk$|_2$|64$|64_2$', '', sym)
    if sym.startswith('clock_') or base in CLOCK_CALLS or 'time' in sym:
        return 'reads the clock or sleeps', HOW_TIME
    if base in LOG_CALLS or 'printf' in sym or 'syslog' in sym:
        return 'logs', HOW_LOG
    return 'does I/O', HOW_IO


def check_link(args):
    if not args.nm:
        print('check-core-boundary: skipped: nm not found (binutils), so the link check cannot run')
        return SKIP
    try:
        out = subprocess.run([args.nm, '-A', '-u', args.library], check=True, capture_output=True,
                             text=True).stdout
        defined = subprocess.run([args.nm, '--defined-only', '-j', args.library], check=True,
                                 capture_output=True, text=True).stdout.split()
    except (OSError, subprocess.CalledProcessError) as e:
        print(f'check-core-boundary: {args.nm} on {args.library} failed: {e}')
        return 1
    logs = log_names(args.log_header)
    forbidden = set(CLOCK_CALLS + LOG_CALLS + IO_CALLS) | LINK_EXTRA | logs
    forbidden.discard('now_usec')  # a parameter name in the core, never a symbol; the source scan has it
    findings, objects = [], set()
    for line in out.splitlines():
        # "libtbcore.a:ledger.c.o:                 U memcpy"
        m = re.match(r'^(.*?):([^:]+\.o):\s+U\s+(\S+)$', line)
        if not m:
            continue
        # meson's thin archives name members by path: libtbcore.a.p/ledger.c.o
        obj, sym = os.path.basename(m.group(2)), m.group(3).split('@')[0]
        objects.add(obj)
        if sym in defined:
            continue  # defined by another core file
        if sym in forbidden or LINK_PREFIXES.match(sym):
            what, how = link_kind(sym, logs)
            src = os.path.join('daemon', 'core', obj[:-2]) if obj.endswith('.c.o') else obj
            findings.append(f'{src}: {os.path.basename(args.library)}({obj}) references {sym}: {what}, maybe '
                            f'through a macro or an inline function ({how})')
    for f in findings:
        print(f)
    if findings:
        print(f'check-core-boundary: {len(findings)} forbidden symbol(s) in {args.library}; '
              'see STYLE.md, habit 1')
        return 1
    if not objects:
        print(f'check-core-boundary: nm found no objects with undefined symbols in {args.library}')
        return 1
    print(f'check-core-boundary: {len(objects)} objects in {os.path.basename(args.library)}: no clock, '
          'logging or I/O symbol')
    return 0


def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('mode', choices=['source', 'link'])
    p.add_argument('--core-dir')
    p.add_argument('--library')
    p.add_argument('--nm', default='')
    p.add_argument('--log-header')
    args = p.parse_args()
    if args.mode == 'source' and not args.core_dir:
        p.error('source needs --core-dir')
    if args.mode == 'link' and not args.library:
        p.error('link needs --library')
    return check_source(args) if args.mode == 'source' else check_link(args)


if __name__ == '__main__':
    sys.exit(main())
