#!/usr/bin/python3
"""Consistency groups (issue 16, [group.NAME] in the batch config) against the real test cluster:
two images written in lockstep restore to sequence numbers at most one step apart, and exactly
equal with a freeze hook; one pre and one post hook per group even when a snapshot fails; a
member's failure is the group's; ls, status, the run report and the metrics show the group.

Run one scenario: groups_test.py NAME (environment as for cli_test.py)."""

import json
import os
import shlex
import struct
import subprocess
import sys
import threading
import time

import cli_test
from cli_test import CONF, FEATURES_FASTDIFF, TMP, check, log, new_store, run, run_json, snap_name
from batch_test import base_config, write_config

EXIT_NO_SPACE = 7  # docs/usage.md "Exit codes"
EXIT_HOOK_FAILED = 9


def scratch(name):
    d = os.path.join(TMP, "groups-scratch-" + name)
    os.makedirs(d, exist_ok=True)
    for f in os.listdir(d):
        os.remove(os.path.join(d, f))
    return d


def group_config(store, name, images, hooks=""):
    jobs = ("[job.g]\npool = rbd\ninclude = %s-*\n[group.%s]\nimages = %s\n%s"
            % (name, name, ", ".join("rbd/" + i for i in images), hooks))
    return write_config("groups-" + name, base_config(store, jobs))


def run_report(conf, rc=0):
    out, err = run("run", "--config", conf, "--force", "--format", "json", rc=rc)
    return json.loads(out), err


class LockstepWriter(threading.Thread):
    """Stamps 1, 2, 3, ... into the first 4 KiB of every image in turn (A then B, repeat) as fast
    as librbd takes it. While the file `pause` exists it stops between two steps and says so with
    the file `paused` (a freeze hook's handshake)."""

    def __init__(self, c, names, d):
        super().__init__(daemon=True)
        self.images = [c.image("rbd", n) for n in names]
        self.pause, self.paused = os.path.join(d, "pause"), os.path.join(d, "paused")
        self.seq = 0
        self.pauses = []  # the sequence number stamped last before each pause
        self.done = False
        self.error = None

    def run(self):
        try:
            while not self.done:
                if os.path.exists(self.pause):
                    self.pauses.append(self.seq)
                    open(self.paused, "w").close()
                    while os.path.exists(self.pause) and not self.done:
                        time.sleep(0.001)
                    os.unlink(self.paused)
                n = self.seq + 1
                for img in self.images:
                    img.write(struct.pack("<Q", n) * 512, 0)
                self.seq = n
        except Exception as e:  # reported by stop()
            self.error = e

    def stop(self):
        self.done = True
        self.join(60)
        for img in self.images:
            img.close()
        check(self.error is None, "writer failed: %r" % self.error)


def restored_seq(store, spec):
    path = os.path.join(TMP, "groups-restore.raw")
    run("restore", "--store", store, spec, "--to-file", path, "-q")
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
    os.unlink(path)
    return n


def lockstep_runs(c, store, conf, names, writer, runs):
    """`runs` group runs while the writer goes on; returns [(seq A, seq B, gap_us, [seq at each
    pause during the run])] as restored."""
    out = []
    for _ in range(runs):
        before, pauses = writer.seq, len(writer.pauses)
        cli_test.wait_for(lambda: writer.seq > before + 10, "the writer to make progress")
        r, _ = run_report(conf)
        g = r["groups"][0]
        check(g["result"] == "ok" and g["run"], "group: %s" % g)
        revs = {i["image"]: i for i in r["images"]}
        for n in names:
            check(revs["rbd/" + n]["group_run"] == g["run"], "image %s not in the run: %s" % (n, revs))
        seqs = [restored_seq(store, "rbd/%s@%d" % (n, revs["rbd/" + n]["revision"])) for n in names]
        out.append((seqs[0], seqs[1], g["gap_us"], writer.pauses[pauses:]))
    return out


def scenario_groups_lockstep(c):
    """Two images stamped in lockstep: the revisions of one group run restore to sequence numbers
    at most one step apart (A is stamped first, so B is A or A-1); with a pre hook that pauses the
    writer and a post hook that resumes it they are equal."""
    names = ["gl-a", "gl-b"]
    for n in names:
        c.create("rbd", n, 4 << 20, FEATURES_FASTDIFF)
    store = new_store("groups-lockstep")
    d = scratch("lockstep")
    writer = LockstepWriter(c, names, d)
    writer.start()
    try:
        conf = group_config(store, "gl", names)
        crash = lockstep_runs(c, store, conf, names, writer, 4)
        log("no hook: (A, B, gap us, pauses) = %s" % crash)
        for a, b, _, _ in crash:
            check(a - 1 <= b <= a, "crash-consistent group: A=%d B=%d are more than one step apart" % (a, b))
        pause, paused = shlex.quote(os.path.join(d, "pause")), shlex.quote(os.path.join(d, "paused"))
        hooks = ("pre-snapshot = touch %s; while [ ! -e %s ]; do sleep 0.01; done\npost-snapshot = rm -f %s\n"
                 % (pause, paused, pause))
        conf = group_config(store, "gl", names, hooks)
        frozen = lockstep_runs(c, store, conf, names, writer, 3)
        log("freeze hook: (A, B, gap us, pauses) = %s" % frozen)
        for a, b, _, pauses in frozen:
            # One freeze per group run, and both images hold exactly what was written before it.
            check(len(pauses) == 1, "the writer was paused %d times in one group run" % len(pauses))
            check(a == b == pauses[0], "frozen group: A=%d B=%d, paused after %d" % (a, b, pauses[0]))
        check(len({x[0] for x in crash + frozen}) == len(crash + frozen), "the writer stood still: %s"
              % (crash + frozen))
    finally:
        writer.stop()
    # ls shows which revisions belong together, JSON and plain.
    ls = run_json("ls", "--store", store)
    runs = {}
    for r in ls:
        check(r["group"] and r["group"]["name"] == "gl", "revision without its group: %s" % r)
        runs.setdefault(r["group"]["run"], []).append(r["image"])
    check(len(runs) == 7 and all(sorted(v) == ["rbd/gl-a", "rbd/gl-b"] for v in runs.values()), "runs: %s" % runs)
    out, _ = run("ls", "--store", store)
    check("GROUP" in out.splitlines()[0], "ls header: %s" % out.splitlines()[0])
    last = max(runs)
    check(sum(("gl#%d" % last) in l.split() for l in out.splitlines()) == 2, "plain ls:\n%s" % out)
    st = {s["image"]: s for s in run_json("status", "--store", store)}
    check(st["rbd/gl-a"]["group"]["run"] == last and st["rbd/gl-a"]["consistency"] == "application", "status %s" % st)
    metrics = open(store + ".prom").read()
    check('rbdvault_group_snapshot_gap_seconds{image="rbd/gl-b",group="gl"}' in metrics, "metrics:\n%s" % metrics)
    rc, text = cli_test.run_checker(store)
    check(rc == 0, "the independent checker disagrees with the group records:\n%s" % text)
    for n in names:
        c.remove("rbd", n)


def hook_list(d, which):
    path = os.path.join(d, which)
    return open(path).read().splitlines() if os.path.exists(path) else []


def scenario_groups_hooks(c):
    """One pre and one post hook per group run, with the group's environment; the post hook runs
    once (told 'failed') when one member's snapshot fails, and that member fails the group while
    the other is backed up; a failing pre hook under skip backs up no member."""
    names = ["gh-a", "gh-b"]
    for n in names:
        c.create("rbd", n, 4 << 20, FEATURES_FASTDIFF)
    store = new_store("groups-hooks")
    d = scratch("hooks")
    rec = ("echo \"$RBDVAULT_HOOK $RBDVAULT_GROUP $RBDVAULT_GROUP_RUN $RBDVAULT_SNAPSHOT_RESULT|$RBDVAULT_IMAGES|"
           "$RBDVAULT_SNAPSHOTS\" >> %s" % shlex.quote(os.path.join(d, "calls")))
    conf = group_config(store, "gh", names, "pre-snapshot = %s\npost-snapshot = %s\n" % (rec, rec))
    r, _ = run_report(conf)
    g = r["groups"][0]
    calls = hook_list(d, "calls")
    snaps = " ".join(snap_name(store, i["revision"]) for i in r["images"])
    want_tail = "|rbd/gh-a rbd/gh-b|" + snaps
    check(calls == ["pre gh %d %s" % (g["run"], want_tail), "post gh %d ok%s" % (g["run"], want_tail)],
          "hook calls: %s (run %s)" % (calls, g))
    check(g["consistency"] == "application" and g["images"] == ["rbd/gh-a", "rbd/gh-b"], "group: %s" % g)

    # gh-b's snapshot fails (its snapshot limit is what it has): one pre, one post told 'failed'.
    os.remove(os.path.join(d, "calls"))
    subprocess.run(["rbd", "-c", CONF, "snap", "limit", "set", "--limit", "1", "rbd/gh-b"], check=True)
    b_before = c.snaps("rbd", "gh-b")
    r, err = run_report(conf, rc=EXIT_NO_SPACE)
    calls = hook_list(d, "calls")
    check(len(calls) == 2 and calls[0].startswith("pre gh ") and calls[1].startswith("post gh %d failed|"
          % r["groups"][0]["run"]), "hooks with a failed snapshot: %s" % calls)
    g = r["groups"][0]
    by = {i["image"]: i for i in r["images"]}
    check(g["result"] == "failed" and g["error_class"] == "no-space" and "rbd/gh-b failed" in g["error"]
          and "rbd/gh-a" not in g["error"], "group: %s" % g)
    check(by["rbd/gh-a"]["result"] == "ok" and by["rbd/gh-b"]["result"] == "failed", "images: %s" % by)
    check(c.snaps("rbd", "gh-b") == b_before, "gh-b's snapshots changed: %s -> %s" % (b_before, c.snaps("rbd", "gh-b")))
    # The member whose snapshot failed shows as failed in status and check (it stayed "ok").
    status = {s["image"]: s for s in run_json("status", "--config", conf)}
    check(status["rbd/gh-b"]["last_result"] == "failed" and status["rbd/gh-a"]["last_result"] == "ok",
          "status after gh-b's snapshot failed: %s" % status)
    out, _ = run("check", "--config", conf, rc=2)
    check(out.startswith("RBDVAULT CRITICAL") and "rbd/gh-b" in out, "check after gh-b's snapshot failed: %s" % out)
    subprocess.run(["rbd", "-c", CONF, "snap", "limit", "clear", "rbd/gh-b"], check=True)

    # A failing pre hook (policy skip): no member backed up, post still runs once, no snapshot left.
    os.remove(os.path.join(d, "calls"))
    conf = group_config(store, "gh", names, "pre-snapshot = %s; exit 4\npost-snapshot = %s\n" % (rec, rec))
    revs_before = len(run_json("ls", "--store", store))
    snaps_before = [c.snaps("rbd", n) for n in names]
    r, _ = run_report(conf, rc=EXIT_HOOK_FAILED)
    calls = hook_list(d, "calls")
    check(len(calls) == 2 and calls[1].startswith("post gh %d skipped|" % r["groups"][0]["run"]),
          "hooks after a failed pre hook: %s" % calls)
    check(all(i["result"] == "failed" and i["error_class"] == "hook-failed" for i in r["images"]), "%s" % r)
    check(r["groups"][0]["result"] == "failed", "group: %s" % r["groups"][0])
    check(len(run_json("ls", "--store", store)) == revs_before, "a revision was made")
    check([c.snaps("rbd", n) for n in names] == snaps_before, "snapshots changed")
    for n in names:
        c.remove("rbd", n)


def scenario_groups_failure(c):
    """A member whose backup fails after the group's snapshots were taken (the post hook removes
    its snapshot) fails the group, naming the image, in the JSON and the plain report; the other
    member's revision is committed and no snapshot of the run is left on the failed one."""
    names = ["gf-a", "gf-b"]
    for n in names:
        c.create("rbd", n, 4 << 20, FEATURES_FASTDIFF)
    store = new_store("groups-failure")
    conf = group_config(store, "gf", names)
    first, _ = run_report(conf)
    check(first["groups"][0]["result"] == "ok", "first run: %s" % first["groups"])
    drop = "rbd -c %s snap rm \"rbd/gf-b@${RBDVAULT_SNAPSHOTS#* }\"" % shlex.quote(CONF)
    conf = group_config(store, "gf", names, "post-snapshot = %s\n" % drop)
    r, err = run_report(conf, rc=1)
    g = r["groups"][0]
    by = {i["image"]: i for i in r["images"]}
    check(by["rbd/gf-a"]["result"] == "ok" and by["rbd/gf-b"]["result"] == "failed", "images: %s" % by)
    check(g["result"] == "failed" and g["error"].startswith("rbd/gf-b failed: ") and "gone" in g["error"],
          "group: %s" % g)
    out, _ = run("run", "--config", conf, "--force", rc=1)
    line = next((l for l in out.splitlines() if l.startswith("gf ")), "")
    check("failed" in line.split() and "rbd/gf-b failed" in line, "plain report:\n%s" % out)
    # gf-b keeps only its last committed revision's snapshot; gf-a its newest.
    ls = run_json("ls", "--store", store)
    newest = {n: max(x["id"] for x in ls if x["image"] == "rbd/" + n) for n in names}
    for n in names:
        check(c.snaps("rbd", n) == [snap_name(store, newest[n])], "%s snapshots: %s" % (n, c.snaps("rbd", n)))
    for n in names:
        c.remove("rbd", n)


def scenario_groups_config(c):
    """A bad [group.NAME] stops the run before anything happens, with one line naming the line."""
    rbd_cli = ["rbd", "-c", CONF, "group"]
    subprocess.run(rbd_cli + ["rm", "rbd/gcg"], capture_output=True)  # a failed run's leftover
    c.create("rbd", "gc-a", 4 << 20, FEATURES_FASTDIFF)
    store = new_store("groups-config")
    conf = group_config(store, "gc", ["gc-a", "zz-nope"])  # the job selects gc-* only
    text = open(conf).read().splitlines()
    line = next(i for i, l in enumerate(text) if l.startswith("images")) + 1
    _, err = run("run", "--config", conf, rc=cli_test.EXIT_USAGE)
    msg = err.strip().splitlines()
    check(len(msg) == 1 and "%s:%d: [group.gc] image 'rbd/zz-nope' is selected by no [job.NAME]" % (conf, line)
          in msg[0], "error: %r" % err)
    check(c.snaps("rbd", "gc-a") == [], "a snapshot was taken")
    # A dry run reports the group as it would run, and takes no snapshot.
    conf = group_config(store, "gc", ["gc-a"])
    out, _ = run("run", "--config", conf, "--dry-run", "--format", "json")
    r = json.loads(out)
    check(r["groups"][0]["result"] == "would-back-up" and r["groups"][0]["run"] is None, "dry run: %s" % r)
    check(c.snaps("rbd", "gc-a") == [], "the dry run took a snapshot")
    # A member the job's glob selects but that does not exist fails the group at run time (the
    # other member is still backed up); the exit code is its class, not-found.
    conf = group_config(store, "gc", ["gc-a", "gc-nope"])
    r, _ = run_report(conf, rc=cli_test.EXIT_NOT_FOUND)
    g = r["groups"][0]
    check(g["result"] == "failed" and g["error"] == "rbd/gc-nope is not in its pool" and
          r["images"][0]["result"] == "ok", "run: %s" % r)
    # An existing RBD group (rbd-group = POOL/GROUP): its members, read from Ceph at run time, are
    # backed up as one group run; a group that does not exist fails the run (not-found).
    c.create("rbd", "gc-b", 4 << 20, FEATURES_FASTDIFF)
    subprocess.run(rbd_cli + ["create", "rbd/gcg"], check=True)
    for n in ("gc-a", "gc-b"):
        subprocess.run(rbd_cli + ["image", "add", "rbd/gcg", "rbd/" + n], check=True)
    jobs = "[job.g]\npool = rbd\ninclude = gc-*\n[group.gc]\nrbd-group = rbd/gcg\n"
    conf = write_config("groups-gc", base_config(store, jobs))
    r, _ = run_report(conf)
    check(len(r["groups"]) == 1, "groups: %s" % r["groups"])
    g = r["groups"][0]
    check(g["result"] == "ok" and sorted(g["images"]) == ["rbd/gc-a", "rbd/gc-b"], "rbd-group: %s" % g)
    check(sorted(i["group_run"] for i in r["images"]) == [g["run"]] * 2, "rbd-group images: %s" % r["images"])
    conf = write_config("groups-gc", base_config(store, jobs.replace("rbd/gcg", "rbd/no-such-group")))
    r, _ = run_report(conf, rc=cli_test.EXIT_NOT_FOUND)
    check(r["groups"][0]["result"] == "failed" and "RBD group rbd/no-such-group" in r["groups"][0]["error"],
          "missing rbd group: %s" % r["groups"])
    subprocess.run(rbd_cli + ["rm", "rbd/gcg"], check=True)
    c.remove("rbd", "gc-a")
    c.remove("rbd", "gc-b")


def scenario_groups_cli(c):
    """rbdvault backup --group NAME A B: one pre and one post hook, two revisions sharing the group
    run (ls --format json), one result per image plus the group's; a missing member fails the
    command (not-found, naming it) with no revision and no snapshot left; --group with one image,
    several images without --group are usage errors; --rbd-group takes an RBD group's members."""
    names = ["gcli-a", "gcli-b"]
    for n in names:
        c.create("rbd", n, 4 << 20, FEATURES_FASTDIFF)
    store = new_store("groups-cli")
    d = scratch("cli")
    rec = "echo \"$RBDVAULT_HOOK $RBDVAULT_GROUP $RBDVAULT_GROUP_RUN|$RBDVAULT_IMAGES\" >> %s" % shlex.quote(
        os.path.join(d, "calls"))
    specs = ["rbd/" + n for n in names]
    hooks = ["--pre-snapshot", rec, "--post-snapshot", rec]
    r = run_json("backup", "--store", store, "--group", "gcli", *hooks, *specs)
    check(r["group"] == "gcli" and r["result"] == "ok" and r["consistency"] == "application"
          and isinstance(r["gap_us"], int) and [i["image"] for i in r["images"]] == specs
          and all(i["result"] == "ok" and i["consistency"] == "application" for i in r["images"]), "json: %s" % r)
    run_id = r["run"]
    check(hook_list(d, "calls") == ["pre gcli %d|%s" % (run_id, " ".join(specs)),
                                    "post gcli %d|%s" % (run_id, " ".join(specs))],
          "hook calls: %s" % hook_list(d, "calls"))
    ls = run_json("ls", "--store", store)
    check(sorted(x["image"] for x in ls) == specs and
          all(x["group"]["name"] == "gcli" and x["group"]["run"] == run_id for x in ls), "ls: %s" % ls)
    check(sorted(x["id"] for x in ls) == sorted(i["revision"] for i in r["images"]), "ls ids: %s / %s" % (ls, r))
    for n in names:
        check(len(c.snaps("rbd", n)) == 1, "%s snapshots: %s" % (n, c.snaps("rbd", n)))

    # Plain output: a line per image and the group's.
    out, _ = run("backup", "--store", store, "--group", "gcli", *specs)
    check(out.count("revision ") == 2 and "group gcli: run " in out and out.rstrip().endswith("ok"), out)
    # The group's own operation-log line is not an image of status (it showed as "group gcli", never backed up).
    names = [s["image"] for s in run_json("status", "--store", store)]
    check(sorted(names) == specs, "status lists %s" % names)

    # A missing member: exit 3 naming it, no revision, no snapshot left on the other member.
    revs_before = len(run_json("ls", "--store", store))
    snaps_before = c.snaps("rbd", "gcli-a")
    os.remove(os.path.join(d, "calls"))
    out, err = run("backup", "--store", store, "--group", "gcli", *hooks, "rbd/gcli-a", "rbd/gcli-nope",
                   rc=cli_test.EXIT_NOT_FOUND)
    errors = [l for l in err.splitlines() if l.startswith("rbdvault:")]  # the rest: info lines (hooks)
    check(len(errors) == 1 and "rbd/gcli-nope" in errors[0] and "gcli-a:" not in errors[0], "stderr: %s" % err)
    check(len(run_json("ls", "--store", store)) == revs_before, "a revision was made")
    check(c.snaps("rbd", "gcli-a") == snaps_before, "snapshots: %s -> %s" % (snaps_before, c.snaps("rbd", "gcli-a")))
    check(len(hook_list(d, "calls")) == 2, "hooks: %s" % hook_list(d, "calls"))
    r = json.loads(run("backup", "--store", store, "--group", "gcli", "rbd/gcli-a", "rbd/gcli-nope",
                       "--format", "json", rc=cli_test.EXIT_NOT_FOUND)[0])
    by = {i["image"]: i for i in r["images"]}
    check(r["result"] == "failed" and r["error_class"] == "not-found" and by["rbd/gcli-nope"]["result"] == "failed"
          and by["rbd/gcli-a"]["result"] == "skipped" and "revision" not in by["rbd/gcli-a"], "json: %s" % r)

    # Usage errors: one line, exit 2, nothing done.
    for args in (["--group", "gcli", "rbd/gcli-a"], specs, ["--group", "gcli", "rbd/gcli-a", "rbd/gcli-a"],
                 ["--rbd-group", "rbd/x", "rbd/gcli-a"]):
        out, err = run("backup", "--store", store, *args, rc=cli_test.EXIT_USAGE)
        check(out == "" and len(err.splitlines()) == 1, "%s: %r" % (args, err))
    check(len(run_json("ls", "--store", store)) == revs_before, "a usage error made a revision")

    # An existing RBD group: its members, one group run named after it.
    rbd_cli = ["rbd", "-c", CONF, "group"]
    subprocess.run(rbd_cli + ["create", "rbd/gclig"], check=True)
    for s in specs:
        subprocess.run(rbd_cli + ["image", "add", "rbd/gclig", s], check=True)
    r = run_json("backup", "--store", store, "--rbd-group", "rbd/gclig")
    check(r["group"] == "gclig" and r["result"] == "ok" and sorted(i["image"] for i in r["images"]) == specs, "%s" % r)
    ls = [x for x in run_json("ls", "--store", store) if x["group"]["run"] == r["run"]]
    check(len(ls) == 2 and all(x["group"]["name"] == "gclig" for x in ls), "ls: %s" % ls)
    _, err = run("backup", "--store", store, "--rbd-group", "rbd/no-such-group", rc=cli_test.EXIT_NOT_FOUND)
    check("RBD group rbd/no-such-group" in err and len(err.splitlines()) == 1, err)
    subprocess.run(rbd_cli + ["rm", "rbd/gclig"], check=True)
    for n in names:
        c.remove("rbd", n)


SCENARIOS = {
    "groups_lockstep": scenario_groups_lockstep,
    "groups_hooks": scenario_groups_hooks,
    "groups_failure": scenario_groups_failure,
    "groups_config": scenario_groups_config,
    "groups_cli": scenario_groups_cli,
}

if __name__ == "__main__":
    sys.exit(cli_test.main(SCENARIOS, "groups_test.py"))
