#!/usr/bin/env python3
"""The command line's shape, without a cluster (issue 11, point 7): every command has a --help that
exits 0 with one Usage: line; every command refuses an option that belongs only to another command
with exit 2 and one line naming the option; --version prints the version.

Usage: RBDVAULT=build/rbdvault cli_options_test.py
"""

import os
import re
import subprocess
import sys
import tempfile

RBDVAULT = os.environ["RBDVAULT"]
EXIT_USAGE = 2


class Failure(Exception):
    pass


def check(cond, msg):
    if not cond:
        raise Failure(msg)


def rbdvault(*args):
    return subprocess.run([RBDVAULT] + list(args), capture_output=True, text=True, timeout=60,
                          stdin=subprocess.DEVNULL)


def commands():
    """The command names `rbdvault --help` lists."""
    p = rbdvault("--help")
    check(p.returncode == 0, "--help: exit %d" % p.returncode)
    body = p.stdout.split("Commands:\n", 1)[1].split("\n\n", 1)[0]
    names = [line.split()[0] for line in body.splitlines() if line.strip()]
    check(len(names) >= 19, "too few commands listed: %s" % names)
    return names


def options(command):
    """The long options `rbdvault COMMAND --help` lists (and checks that help's shape)."""
    p = rbdvault(command, "--help")
    check(p.returncode == 0, "%s --help: exit %d: %s" % (command, p.returncode, p.stderr))
    usage = [l for l in p.stdout.splitlines() if l.startswith("Usage:")]
    check(len(usage) == 1 and usage[0].startswith("Usage: rbdvault %s" % command),
          "%s --help: want one Usage: line, got %r" % (command, usage))
    return set(re.findall(r"^\s+(?:-\w \[ )?--([\w-]+)", p.stdout, re.M))


def main():
    names = commands()
    own = {c: options(c) for c in names}
    for c in ("backup", "restore", "verify", "repair", "images"):
        check({"conf", "id", "keyring"} <= own[c], "%s lacks the Ceph options: %s" % (c, own[c]))
    for c in ("init", "ls", "forget", "expire", "protect", "unprotect", "gc", "du", "scrub", "log", "status", "check",
              "rebuild-index", "upgrade", "mount", "fsck", "copy", "serve"):
        check(not ({"conf", "id", "keyring"} & own[c]), "%s takes Ceph options but never talks to Ceph" % c)
    check("deep" not in own["backup"], "backup lists --deep")
    refused = 0
    for c in names:
        foreign = sorted(set().union(*(own[o] for o in names if o != c)) - own[c])
        check(foreign, "%s: no foreign option to try" % c)
        for opt in foreign:
            p = rbdvault(c, "--" + opt)
            nagios = c in ("check", "fsck")
            lines = (p.stdout if nagios else p.stderr).strip().splitlines()
            # check and fsck are Nagios plugins: their own usage errors are UNKNOWN (3) on stdout.
            want = 3 if nagios else EXIT_USAGE
            check(p.returncode == want and len(lines) == 1 and "'--%s'" % opt in lines[0],
                  "%s --%s: exit %d, wanted %d with one line naming the option: %r" %
                  (c, opt, p.returncode, want, p.stdout + p.stderr))
            refused += 1
    p = rbdvault("backup", "--deep", "--store", "/nonexistent", "rbd/x")
    check(p.returncode == EXIT_USAGE and p.stderr.strip() ==
          "rbdvault: backup: unrecognised option '--deep' (see rbdvault backup --help)", "backup --deep: %r" % p.stderr)
    p = rbdvault("--version")
    check(p.returncode == 0 and re.fullmatch(r"rbdvault \d+\.\d+\.\d+\nCeph client libraries: librbd \S+, librados \S+\n", p.stdout), "--version: %r" % p.stdout)
    for args, want in ((["frobnicate"], "unknown command 'frobnicate'"), (["--store", "x", "ls"], "command first")):
        p = rbdvault(*args)
        check(p.returncode == EXIT_USAGE and want in p.stderr and len(p.stderr.strip().splitlines()) == 1,
              "%s: %d %r" % (args, p.returncode, p.stderr))
    p = rbdvault()
    check(p.returncode == EXIT_USAGE and "Usage: rbdvault COMMAND" in p.stderr, "no command: %d" % p.returncode)
    # A log file that cannot be opened is one error line (exit 1), not an internal error (exit 70).
    with tempfile.TemporaryDirectory() as tmp:
        conf = os.path.join(tmp, "rbdvault.conf")
        with open(conf, "w") as f:
            f.write("[store]\npath = %s\nlog-file = %s\n[job.j]\npool = rbd\n" % (tmp, tmp))  # a directory
        for cmd in ("run", "agent"):
            p = rbdvault(cmd, "--config", conf, "--dry-run") if cmd == "run" else rbdvault(cmd, "--config", conf)
            check(p.returncode == 1 and len(p.stderr.strip().splitlines()) == 1 and
                  "cannot open the log file" in p.stderr, "%s with a bad log-file: %d %r" % (cmd, p.returncode, p.stderr))
    print("PASS cli_options: %d commands, %d foreign options refused" % (len(names), refused))


if __name__ == "__main__":
    try:
        main()
    except Failure as e:
        print("FAIL cli_options: %s" % e, file=sys.stderr)
        sys.exit(1)
