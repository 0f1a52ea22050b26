#!/usr/bin/python3
"""Mutation proof of the tests (issue 18): breaks one feature at a time on purpose and requires the
tests named for it to fail. The mutations are in tests/tools/mutations.py; docs/testing.md explains.

  prove_tests.py --list              check that every anchor exists exactly once, every named test
                                     exists and every issue-18 item is covered (fast; a ctest entry)
  prove_tests.py --run [ID ...]      apply each mutation in turn (all, or the IDs given), build
                                     incrementally, run its tests, restore; print a table

--run works in place on a clean tree (it refuses a dirty one) and always restores every file it
touched with `git checkout --`, also on an error or a signal. It uses the build directory
(--build, default ./build); cluster tests need CEPH_CONF (RBDVAULT_TEST_TMP optional); rados:SCENARIO (rados_test.py) and
rados-KIND:SCENARIO (KIND_test.py on a RADOS store) and radosgtest:FILTER (rados_store_integration_tests)
also RBDVAULT_STORE_CONF, a second cluster.

Results per (mutation, test): PASS the test failed, as it must; FAIL the test still passed (a weak
test); STALE an anchor is missing or not unique (update the mutation); BUILD the mutated tree does
not build (fix the replacement). Exit 0 only if every row is PASS.
"""

import argparse
import datetime
import glob
import importlib.util
import json
import os
import re
import signal
import subprocess
import sys
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))


def load_mutations():
    spec = importlib.util.spec_from_file_location("mutations", os.path.join(ROOT, "tests", "tools", "mutations.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def files_for(pattern):
    return sorted(os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, pattern), recursive=True)
                  if os.path.isfile(p))


def locate(edit):
    """(file, None) when the anchor is in exactly one place, else (None, reason)."""
    pattern, anchor, replacement = edit
    if anchor == replacement:
        return None, "replacement equals the anchor"
    hits = []
    for f in files_for(pattern):
        with open(os.path.join(ROOT, f), encoding="utf-8") as fh:
            n = fh.read().count(anchor)
        hits += [f] * n
    if len(hits) != 1:
        return None, "anchor found %d times in %s: %r" % (len(hits), pattern, anchor[:60])
    return hits[0], None


def script_kind(kind):
    """The scenario script of a test kind: "rados-cli" is cli_test.py run on a RADOS store."""
    return kind[len("rados-"):] if kind.startswith("rados-") else kind


def on_rados(kind):
    """Tests that need the backup cluster (RBDVAULT_STORE_CONF): rados_test.py and rados-KIND."""
    return kind in ("rados", "radosgtest") or kind.startswith("rados-")


def test_exists(test):
    """None if the test named by `test` exists in the tree, else why not."""
    kind, _, name = test.partition(":")
    kind = script_kind(kind)
    if kind in ("cli", "batch", "groups", "hooks", "instant", "serve", "mount", "rados"):
        path = os.path.join(ROOT, "tests", "integration", "%s_test.py" % kind)
        with open(path, encoding="utf-8") as f:
            ok = re.search(r'^\s+"%s": scenario_%s,$' % (re.escape(name), re.escape(name)), f.read(), re.M)
        return None if ok else "no scenario %s in %s" % (name, os.path.relpath(path, ROOT))
    if kind == "cli_options":  # one script, one check, no cluster
        return None if name == "main" else "cli_options has only main"
    if kind in ("gtest", "rbd", "radosgtest", "faults"):
        folder = {"gtest": "unit", "faults": "faults"}.get(kind, "integration")
        sources = glob.glob(os.path.join(ROOT, "tests", folder, "*.cc"))
        text = "".join(open(s, encoding="utf-8").read() for s in sources)
        for one in name.split(":"):
            suite, _, case = one.partition(".")
            if not re.search(r"TEST(_F)?\(\s*%s,\s*%s\)" % (re.escape(suite), re.escape(case)), text):
                return "no test %s" % one
        return None
    return "unknown test kind %r" % kind


def validate(mod):
    """Problems with the mutation list on the current tree (an empty list: all good)."""
    problems, seen, covered = [], set(), set()
    for m in mod.MUTATIONS:
        mid = m.get("id", "?")
        if mid in seen:
            problems.append("%s: duplicate id" % mid)
        seen.add(mid)
        for item in m.get("items", []):
            if item not in mod.ITEMS:
                problems.append("%s: unknown item %s" % (mid, item))
            covered.add(item)
        if not m.get("edits") or not m.get("tests"):
            problems.append("%s: needs edits and tests" % mid)
        for e in m.get("edits", []):
            _, why = locate(e)
            if why:
                problems.append("%s: STALE: %s" % (mid, why))
        for t in m.get("tests", []):
            why = test_exists(t)
            if why:
                problems.append("%s: %s" % (mid, why))
    for item, text in mod.ITEMS.items():
        if item not in covered and item not in mod.NOT_MUTABLE:
            problems.append("item %s has no mutation: %s" % (item, text))
    return problems


# ---- running ---------------------------------------------------------------------------------

def git(*args):
    return subprocess.run(["git", "-C", ROOT] + list(args), capture_output=True, text=True, check=True).stdout


class Interrupted(Exception):
    pass


def on_signal(signum, frame):
    raise Interrupted("signal %d" % signum)


def build(build_dir, targets, log):
    p = subprocess.run(["cmake", "--build", build_dir, "-j", os.environ.get("JOBS", "2"), "--target"] + targets,
                       capture_output=True, text=True)
    log.write(p.stdout[-20000:] + p.stderr[-20000:])
    return p.returncode == 0


def targets_for(tests):
    t = set()
    for test in tests:
        kind = test.partition(":")[0]
        t.add({"gtest": "unit_tests", "faults": "fault_tests", "rbd": "rbd_integration_tests",
               "radosgtest": "rados_store_integration_tests"}.get(kind, "rbdvault"))
    return sorted(t)


def command_for(test, build_dir):
    kind, _, name = test.partition(":")
    if kind == "gtest":
        return [os.path.join(build_dir, "tests", "unit_tests"), "--gtest_filter=" + name]
    if kind == "faults":
        return [os.path.join(build_dir, "tests", "fault_tests"), "--gtest_filter=" + name]
    if kind == "cli_options":
        return ["/usr/bin/python3", os.path.join(ROOT, "tests", "integration", "cli_options_test.py")]
    if kind == "rbd":
        return [os.path.join(build_dir, "tests", "rbd_integration_tests"), "--gtest_filter=" + name]
    if kind == "radosgtest":
        return [os.path.join(build_dir, "tests", "rados_store_integration_tests"), "--gtest_filter=" + name]
    return ["/usr/bin/python3", os.path.join(ROOT, "tests", "integration", "%s_test.py" % script_kind(kind)), name]


def why_failed(output):
    """The first line saying why a test failed (the scenario's FAIL line, gtest's first failure)."""
    lines = output.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("FAIL "):  # a message ending in ':' continues on the next line
            return line[5:] + (" " + lines[i + 1].strip() if line.endswith(":") and i + 1 < len(lines) else "")
        if line.endswith(": Failure"):
            return " ".join(l.strip() for l in lines[i + 1:i + 4] if l.strip() and not l.startswith("["))
    rest = [l for l in lines if l.strip() and not l.startswith(("info:", "debug:", "warning:", "["))]
    return rest[-1].strip() if rest else ""


def run_test(test, build_dir, env_extra, timeout, log):
    """(passed, why it failed)."""
    env = dict(os.environ, RBDVAULT=os.path.join(build_dir, "rbdvault"), **env_extra)
    env.setdefault("RBDVAULT_TEST_TMP", os.path.join(build_dir, "prove-tmp"))
    if test.partition(":")[0] not in ("gtest", "faults", "cli_options") and "CEPH_CONF" not in env:
        raise SystemExit("prove_tests.py: %s needs CEPH_CONF (a test cluster: deploy/micro-ceph.sh start DIR)" % test)
    if on_rados(test.partition(":")[0]):
        if "RBDVAULT_STORE_CONF" not in env:
            raise SystemExit("prove_tests.py: %s needs RBDVAULT_STORE_CONF (a second cluster, the backup one)" % test)
        env["RBDVAULT_TEST_STORE"] = "rados"
    try:
        p = subprocess.run(command_for(test, build_dir), capture_output=True, text=True, errors="replace", env=env, timeout=timeout,
                           stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as e:
        log.write("TIMEOUT after %ds\n%s\n" % (timeout, (e.stderr or b"")[-5000:]))
        return False, "timed out after %ds" % timeout
    log.write("exit %d\n%s\n%s\n" % (p.returncode, p.stdout[-8000:], p.stderr[-8000:]))
    return p.returncode == 0, why_failed(p.stdout + "\n" + p.stderr)


def apply(edits):
    """Applies the edits; returns the files touched, or raises ValueError for a stale anchor."""
    located = []
    for e in edits:
        f, why = locate(e)
        if why:
            raise ValueError(why)
        located.append((f, e[1], e[2]))
    touched = []
    for f, anchor, replacement in located:
        path = os.path.join(ROOT, f)
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
        if f not in touched:
            touched.append(f)
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(text.replace(anchor, replacement, 1))
    return touched


def restore(files):
    if files:
        git("checkout", "--", *files)


def prove(m, build_dir, timeout, log):
    """Rows (test, result, seconds, note) for one mutation; the tree is clean again afterwards."""
    rows, touched = [], []
    t0 = time.time()
    try:
        try:
            touched = apply(m["edits"])
        except ValueError as e:
            return [(t, "STALE", 0.0, str(e)) for t in m["tests"]]
        log.write("\n==== %s: build %s\n" % (m["id"], targets_for(m["tests"])))
        if not build(build_dir, targets_for(m["tests"]), log):
            return [(t, "BUILD", time.time() - t0, "the mutated tree does not build") for t in m["tests"]]
        built = time.time() - t0
        for t in m["tests"]:
            t1 = time.time()
            log.write("\n==== %s: %s\n" % (m["id"], t))
            log.flush()
            passed, why = run_test(t, build_dir, m.get("env", {}), timeout, log)
            rows.append((t, "FAIL" if passed else "PASS", time.time() - t1 + built,
                         "the test still passes: it is weak" if passed else why[:160]))
            built = 0.0
        return rows
    finally:
        restore(touched)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--list", action="store_true", help="validate the mutation list on the current tree")
    ap.add_argument("--run", nargs="*", metavar="ID", help="run all mutations, or the IDs given")
    ap.add_argument("--build", default=os.path.join(ROOT, "build"), help="build directory (default ./build)")
    ap.add_argument("--timeout", type=int, default=900, help="seconds per test run (a timeout counts as failed)")
    ap.add_argument("--log", default=None, help="build and test output (default BUILD/prove-tests.log)")
    ap.add_argument("--json", default=None, help="also append one JSON line per result to this file")
    ap.add_argument("--kinds", default=None, help="run only tests of these kinds (e.g. cli,batch), to use a "
                    "build directory without unit_tests or to share the work between two worktrees")
    args = ap.parse_args()
    mod = load_mutations()

    if args.list or args.run is None:
        problems = validate(mod)
        print("%-34s %-12s %s" % ("mutation", "items", "edits -> tests"))
        for m in mod.MUTATIONS:
            files = ",".join(sorted({locate(e)[0] or ("STALE:" + e[0]) for e in m["edits"]}))
            print("%-34s %-12s %s -> %s" % (m["id"], ",".join(m["items"]), files, " ".join(m["tests"])))
        for p in problems:
            print("problem: " + p)
        print("%d mutations, %d items, %d problem(s)" % (len(mod.MUTATIONS), len(mod.ITEMS), len(problems)))
        return 1 if problems else 0

    by_id = {m["id"]: m for m in mod.MUTATIONS}
    chosen = [by_id[i] for i in dict.fromkeys(args.run) if i in by_id] if args.run else list(mod.MUTATIONS)
    if args.kinds:
        kinds = args.kinds.split(",")
        chosen = [dict(m, tests=[t for t in m["tests"] if t.partition(":")[0] in kinds]) for m in chosen]
        chosen = [m for m in chosen if m["tests"]]
    unknown = set(args.run or []) - {m["id"] for m in mod.MUTATIONS}
    if unknown:
        print("prove_tests.py: unknown mutation(s): %s" % " ".join(sorted(unknown)), file=sys.stderr)
        return 2
    if git("status", "--porcelain", "--untracked-files=no").strip():
        print("prove_tests.py: the tree has uncommitted changes; commit or stash them first (mutations are "
              "applied in place and restored with git checkout)", file=sys.stderr)
        return 2
    for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(s, on_signal)
    commit = git("rev-parse", "--short", "HEAD").strip()
    print("mutation proof of %s, %s" % (commit, datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")),
          flush=True)
    results = []
    with open(args.log or os.path.join(args.build, "prove-tests.log"), "a") as log:
        try:
            for m in chosen:
                for test, result, secs, note in prove(m, args.build, args.timeout, log):
                    row = {"id": m["id"], "items": m["items"], "test": test, "result": result,
                           "seconds": round(secs), "note": note, "commit": commit}
                    results.append(row)
                    print("| %s | %s | %s | %s | %d |%s" % (m["id"], ",".join(m["items"]), test, result, secs,
                                                             " " + note if note else ""), flush=True)
                    if args.json:
                        with open(args.json, "a") as j:
                            j.write(json.dumps(row) + "\n")
        except Interrupted as e:
            print("interrupted (%s); the tree is restored" % e, file=sys.stderr)
            return 130
        finally:
            # Leave the build matching the clean tree.
            targets = sorted({t for m in chosen for t in targets_for(m["tests"])})
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            build(args.build, targets, log)
    bad = [r for r in results if r["result"] != "PASS"]
    print("%d result(s), %d PASS, %d not: %s" % (len(results), len(results) - len(bad), len(bad),
                                               ", ".join("%s/%s %s" % (r["id"], r["test"], r["result"]) for r in bad)))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
