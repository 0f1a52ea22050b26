#!/usr/bin/python3
"""Snapshot hooks (issue 16) against the real test cluster: the environment the hooks get, the
order pre -> snapshot -> post, both failure policies for a failing and a hanging pre hook, the post
hook after a snapshot that fails, and the consistency shown by ls, status and the metrics.

Run one scenario: hooks_test.py NAME (environment as for cli_test.py)."""

import json
import os
import shlex
import subprocess
import sys

import cli_test
from cli_test import (CONF, FEATURES_NO_FASTDIFF, TMP, check, log, new_store, run, run_json, snap_name)
from batch_test import base_config, write_config

EXIT_HOOK_FAILED = 9  # docs/usage.md "Exit codes"


def hook_dir(name):
    d = os.path.join(TMP, "hook-scripts-" + name)
    os.makedirs(d, exist_ok=True)
    for f in os.listdir(d):
        os.remove(os.path.join(d, f))
    return d


def recorder(d, which):
    """A hook that writes its RBDVAULT_* environment, its open descriptors and the image's
    snapshots at that moment to d/WHICH.env."""
    out = shlex.quote(os.path.join(d, which + ".env"))
    return ("env | grep ^RBDVAULT_ | sort > {out}; echo FDS=$(ls /proc/$$/fd) >> {out}; "
            "echo SNAPS=$(rbd -c {conf} snap ls --format json \"$RBDVAULT_POOL/$RBDVAULT_IMAGE\") >> {out}"
            .format(out=out, conf=shlex.quote(CONF)))


def read_env(d, which):
    path = os.path.join(d, which + ".env")
    if not os.path.exists(path):
        return None
    env = {}
    with open(path) as f:
        for line in f:
            k, _, v = line.rstrip("\n").partition("=")
            env[k] = v
    return env


def revisions(store, spec):
    return run_json("ls", "--store", store, spec)


def scenario_hooks_env(c):
    """Both hooks get pool, image, snapshot and revision; pre runs before the snapshot exists and
    post after; the revision is application-consistent in ls (JSON and plain) and status."""
    c.create("rbd", "hk-env", 4 << 20, FEATURES_NO_FASTDIFF)
    with c.image("rbd", "hk-env") as img:
        img.write(b"x" * 65536, 0)
    store = new_store("hooks-env")
    d = hook_dir("env")
    # rbdvault itself is started with an extra open descriptor (as a careless parent or a library
    # without O_CLOEXEC would leave one): the hooks must not inherit it either.
    with open(os.path.join(d, "inherited"), "w") as extra:
        p = subprocess.run([cli_test.RBDVAULT, "backup", "--store", store, "rbd/hk-env", "-c", CONF, "--format",
                            "json", "--pre-snapshot", recorder(d, "pre"), "--post-snapshot", recorder(d, "post")],
                           capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL,
                           pass_fds=(extra.fileno(),))
    check(p.returncode == 0, "backup with hooks: exit %d\n%s" % (p.returncode, p.stderr))
    r = json.loads(p.stdout)
    rev = r["revision"]
    snap = snap_name(store, rev)
    pre, post = read_env(d, "pre"), read_env(d, "post")
    want = {"RBDVAULT_POOL": "rbd", "RBDVAULT_IMAGE": "hk-env", "RBDVAULT_SNAPSHOT": snap,
            "RBDVAULT_REVISION": str(rev)}
    for name, env, hook in (("pre", pre, "pre"), ("post", post, "post")):
        check(env is not None, "%s hook did not run" % name)
        for k, v in want.items():
            check(env.get(k) == v, "%s hook: %s=%r, wanted %r" % (name, k, env.get(k), v))
        check(env.get("RBDVAULT_HOOK") == hook, "%s hook: RBDVAULT_HOOK=%r" % (name, env.get("RBDVAULT_HOOK")))
    check("RBDVAULT_SNAPSHOT_RESULT" not in pre, "pre hook got a snapshot result: %s" % pre)
    check(post.get("RBDVAULT_SNAPSHOT_RESULT") == "ok", "post hook: %s" % post)
    check(snap not in pre["SNAPS"], "the snapshot existed before the pre hook ran: %s" % pre["SNAPS"])
    check(snap in post["SNAPS"], "the snapshot did not exist when the post hook ran: %s" % post["SNAPS"])
    check(r["consistency"] == "application", "backup JSON: %s" % r)
    # A hook may leave a daemon behind: it must inherit nothing but stdin/stdout/stderr (no store
    # lock, pack, index file or cluster socket). The one other descriptor is the pipe of the
    # recorder's own $(ls ...).
    for name, env in (("pre", pre), ("post", post)):
        extra = [f for f in env["FDS"].split() if int(f) > 2]
        check(len(extra) <= 1, "%s hook inherited descriptors: %s" % (name, env["FDS"]))
    # Without hooks: crash-consistent.
    r2 = cli_test.backup(store, "rbd/hk-env")
    by = {x["id"]: x for x in revisions(store, "rbd/hk-env")}
    check(by[rev]["consistency"] == "application" and by[r2["revision"]]["consistency"] == "crash",
          "ls JSON consistency: %s" % by)
    out, _ = run("ls", "--store", store, "rbd/hk-env")
    lines = out.splitlines()
    check("CONSISTENCY" in lines[0], "ls header: %s" % lines[0])
    plain = {int(l.split()[0]): l.split() for l in lines[1:]}
    check("application" in plain[rev] and "crash" in plain[r2["revision"]], "plain ls:\n%s" % out)
    st = run_json("status", "--store", store)
    check(st[0]["consistency"] == "crash", "status shows the newest revision's consistency: %s" % st)
    cli_test.backup(store, "rbd/hk-env", "--pre-snapshot", "true")
    st = run_json("status", "--store", store)
    check(st[0]["consistency"] == "application", "status after a hooked backup: %s" % st)
    out, _ = run("status", "--store", store)
    check("application" in out.splitlines()[1], "plain status: %s" % out)
    c.remove("rbd", "hk-env")


def scenario_hooks_policy(c):
    """A failing and a hanging pre hook: under skip no revision, exit 9, the post hook still runs
    (thaw) and no snapshot is left; under crash-consistent a revision marked crash. A hanging hook's
    whole process group is killed at the timeout."""
    c.create("rbd", "hk-pol", 4 << 20, FEATURES_NO_FASTDIFF)
    with c.image("rbd", "hk-pol") as img:
        img.write(b"y" * 65536, 0)
    store = new_store("hooks-policy")
    first = cli_test.backup(store, "rbd/hk-pol")["revision"]
    d = hook_dir("policy")
    pidfile = os.path.join(d, "child.pid")
    failing = "echo freezing; exit 3"
    hanging = "sleep 1000 & echo $! > %s; wait" % shlex.quote(pidfile)
    for kind, pre in (("failing", failing), ("hanging", hanging)):
        for policy in ("skip", "crash-consistent"):
            for f in os.listdir(d):
                os.remove(os.path.join(d, f))
            args = ["backup", "--store", store, "rbd/hk-pol", "--pre-snapshot", pre,
                    "--post-snapshot", recorder(d, "post"), "--hook-timeout", "4s", "--on-hook-failure", policy,
                    "--format", "json"]
            revs_before = [r["id"] for r in revisions(store, "rbd/hk-pol")]
            if policy == "skip":
                out, err = run(*args, rc=EXIT_HOOK_FAILED)
                check("pre-snapshot hook" in err and "backup skipped" in err, "%s/skip stderr: %s" % (kind, err))
                check(("exited with status 3" if kind == "failing" else "timed out after 4s") in err,
                      "%s/skip says why: %s" % (kind, err))
                revs_after = [r["id"] for r in revisions(store, "rbd/hk-pol")]
                check(revs_after == revs_before, "%s/skip made a revision: %s -> %s" % (kind, revs_before, revs_after))
                snaps = c.snaps("rbd", "hk-pol")
                check(snaps == [snap_name(store, revs_before[-1])], "%s/skip left snapshots: %s" % (kind, snaps))
                post = read_env(d, "post")
                check(post is not None and post.get("RBDVAULT_SNAPSHOT_RESULT") == "skipped",
                      "%s/skip: the post hook must still run (thaw): %s" % (kind, post))
            else:
                out, err = run(*args)
                r = json.loads(out)
                check(r["consistency"] == "crash", "%s/crash-consistent: %s" % (kind, r))
                check("crash-consistent snapshot" in err, "%s/crash-consistent warns: %s" % (kind, err))
                ls = {x["id"]: x for x in revisions(store, "rbd/hk-pol")}
                check(ls[r["revision"]]["consistency"] == "crash", "ls: %s" % ls[r["revision"]])
                post = read_env(d, "post")
                check(post is not None and post.get("RBDVAULT_SNAPSHOT_RESULT") == "ok", "post: %s" % post)
            if kind == "hanging":
                pid = int(open(pidfile).read())
                cli_test.wait_for(lambda: not os.path.exists("/proc/%d" % pid) or
                                  ") Z" in open("/proc/%d/stat" % pid).read(),
                                  "the hanging hook's child %d to be killed with its group" % pid)
            log("%s pre hook, %s: ok" % (kind, policy))
    check(first in [r["id"] for r in revisions(store, "rbd/hk-pol")], "first revision kept")
    c.remove("rbd", "hk-pol")


def scenario_hooks_snapshot_fails(c):
    """The snapshot itself fails (the pre hook sets the image's snapshot limit to what it has, so
    Ceph refuses the new one with EDQUOT): the post hook runs anyway and is told 'failed'."""
    c.create("rbd", "hk-fail", 4 << 20, FEATURES_NO_FASTDIFF)
    store = new_store("hooks-fail")
    cli_test.backup(store, "rbd/hk-fail")  # one snapshot now exists
    d = hook_dir("fail")
    limit = "rbd -c %s snap limit set --limit 1 rbd/hk-fail" % shlex.quote(CONF)
    _, err = run("backup", "--store", store, "rbd/hk-fail", "--pre-snapshot", limit,
                 "--post-snapshot", recorder(d, "post"), rc=cli_test.EXIT_NO_SPACE)
    post = read_env(d, "post")
    check(post is not None, "the post hook did not run after the failed snapshot\n%s" % err)
    check(post.get("RBDVAULT_SNAPSHOT_RESULT") == "failed", "post hook told %s" % post)
    check(len(revisions(store, "rbd/hk-fail")) == 1, "a failed snapshot made a revision")
    subprocess_run(["rbd", "-c", CONF, "snap", "limit", "clear", "rbd/hk-fail"])
    c.remove("rbd", "hk-fail")


def subprocess_run(cmd):
    subprocess.run(cmd, check=True, capture_output=True)


def scenario_hooks_batch(c):
    """Hooks from the batch config: per job, overridden per image; the run records consistency,
    the metrics file shows it, and a skipped image fails the run with the hook-failed class."""
    for n in ("hb-a", "hb-b", "hb-c"):
        c.create("rbd", n, 4 << 20, FEATURES_NO_FASTDIFF)
    store = new_store("hooks-batch")
    d = hook_dir("batch")
    jobs = ("[job.hb]\npool = rbd\ninclude = hb-*\npre-snapshot = %s\npost-snapshot = %s\nhook-timeout = 30s\n"
            "[image.rbd/hb-b]\npre-snapshot =\n"
            "[image.rbd/hb-c]\npre-snapshot = exit 5\non-hook-failure = skip\n"
            % ("echo $RBDVAULT_IMAGE >> %s/pre.list" % d, "echo $RBDVAULT_IMAGE >> %s/post.list" % d))
    conf = write_config("hooks-batch", base_config(store, jobs))
    out, err = run("run", "--config", conf, "--format", "json", rc=EXIT_HOOK_FAILED)
    r = {i["image"]: i for i in json.loads(out)["images"]}
    check(r["rbd/hb-a"]["result"] == "ok" and r["rbd/hb-b"]["result"] == "ok", "run: %s" % r)
    check(r["rbd/hb-c"]["result"] == "failed" and r["rbd/hb-c"]["error_class"] == "hook-failed", "hb-c: %s" % r)
    check(r["rbd/hb-a"]["consistency"] == "application" and r["rbd/hb-b"]["consistency"] == "crash" and
          r["rbd/hb-c"]["consistency"] is None, "run JSON consistency: %s" % r)
    pre = sorted(open(os.path.join(d, "pre.list")).read().split())
    post = sorted(open(os.path.join(d, "post.list")).read().split())
    check(pre == ["hb-a"], "pre hooks ran for %s" % pre)  # hb-b: turned off; hb-c: its own hook
    check(post == ["hb-a", "hb-b", "hb-c"], "post hooks ran for %s" % post)
    ls = {x["image"]: x["consistency"] for x in run_json("ls", "--store", store)}
    check(ls == {"rbd/hb-a": "application", "rbd/hb-b": "crash"}, "ls: %s" % ls)
    metrics = open(store + ".prom").read()
    check('rbdvault_application_consistent{image="rbd/hb-a"} 1' in metrics and
          'rbdvault_application_consistent{image="rbd/hb-b"} 0' in metrics, "metrics:\n%s" % metrics)
    for n in ("hb-a", "hb-b", "hb-c"):
        c.remove("rbd", n)


SCENARIOS = {
    "hooks_env": scenario_hooks_env,
    "hooks_policy": scenario_hooks_policy,
    "hooks_snapshot_fails": scenario_hooks_snapshot_fails,
    "hooks_batch": scenario_hooks_batch,
}

if __name__ == "__main__":
    sys.exit(cli_test.main(SCENARIOS, "hooks_test.py"))
