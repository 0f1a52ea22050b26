#!/usr/bin/env python3
"""Memory of gc, du, scrub and the rollback of a killed backup does not grow with the store (issue 11).

Builds two synthetic stores (tests/tools/synth_store.cc), SMALL and 5 x SMALL chunks, runs each
command on both and compares the peak RSS (wait4's ru_maxrss): the growth must stay under
GROWTH_MIB (GROWTH_MIB_ROLLBACK for the rollback). A map entry per chunk (what these commands kept before) costs 80 to 400 bytes, i.e. 8
to 40 MiB more on the larger store. RBDVAULT_SORT_BUDGET makes the external sorts spill at this
small size, as they do on a large store with the default budget.

usage: memory_test.py SYNTH_STORE RBDVAULT [SMALL]
"""
import os
import shutil
import subprocess
import sys
import tempfile

GROWTH_MIB = 6
# A rollback's writes also fill RocksDB's memtable (bounded by RocksDB at 2 x 32 MiB, the same at
# any store size), which at this small size still grows with the store: the bound is looser.
GROWTH_MIB_ROLLBACK = 16


def peak_rss_mib(argv, env):
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    err = proc.stderr.read().decode()
    proc.stderr.close()
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        sys.exit("FAIL: %s exited %d: %s" % (" ".join(argv), proc.returncode, err))
    return usage.ru_maxrss / 1024.0


def main():
    synth, rbdvault = sys.argv[1], sys.argv[2]
    small = int(sys.argv[3]) if len(sys.argv) > 3 else 25000
    env = dict(os.environ, RBDVAULT_SORT_BUDGET=str(256 << 10))
    tmp = tempfile.mkdtemp(prefix="rbdvault-memory-")
    env["TMPDIR"] = tmp
    try:
        rss = {}
        for n in (small, 5 * small):
            store = os.path.join(tmp, "s%d" % n)
            subprocess.run([synth, "create", store, str(n), "--images", "2"], check=True, env=env,
                           stderr=subprocess.DEVNULL)
            killed = store + "-killed"
            shutil.copytree(store, killed)
            subprocess.run([synth, "kill-backup", killed], check=True, env=env)
            garbage = store + "-garbage"
            shutil.copytree(store, garbage)
            subprocess.run([synth, "garbage", garbage], check=True, env=env)
            cases = {
                "scrub": [rbdvault, "scrub", "--store", store],
                "du": [rbdvault, "du", "--store", store],
                "gc": [rbdvault, "gc", "--store", garbage, "--max-unused", "0"],
                # Opening for writing rolls the killed backup back; protect itself costs nothing.
                "rollback": [rbdvault, "protect", "--store", killed, "synth/img-0@1"],
            }
            for name, argv in cases.items():
                rss[(name, n)] = peak_rss_mib(argv, env)
            out = subprocess.run([rbdvault, "scrub", "--store", garbage], env=env, capture_output=True, text=True)
            if out.returncode != 0:
                sys.exit("FAIL: scrub after gc: %s%s" % (out.stdout, out.stderr))
            out = subprocess.run([rbdvault, "scrub", "--store", killed], env=env, capture_output=True, text=True)
            if out.returncode != 0:
                sys.exit("FAIL: scrub after rollback: %s%s" % (out.stdout, out.stderr))
        failed = []
        for name in ("scrub", "du", "gc", "rollback"):
            a, b = rss[(name, small)], rss[(name, 5 * small)]
            print("%-8s %7d chunks: %6.1f MiB   %7d chunks: %6.1f MiB   growth %+.1f MiB" %
                  (name, small, a, 5 * small, b, b - a))
            if b - a > (GROWTH_MIB_ROLLBACK if name == "rollback" else GROWTH_MIB):
                failed.append(name)
        if failed:
            sys.exit("FAIL: peak RSS grows with the store for %s" % ", ".join(failed))
        print("ok")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
