#!/usr/bin/python3
"""End-to-end tests of batch runs (rbdvault run / agent / status / check) against the test cluster.

Run one scenario: batch_test.py NAME. Same environment as cli_test.py, whose helpers it uses.
"""

import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time

import rbd

import cli_test
from cli_test import (CONF, FEATURES_FASTDIFF, FEATURES_NO_FASTDIFF, RBDVAULT, TMP, Cluster, Failure, check,
                      log, new_store, rbd_export_sha, run, run_json, snap_name, verify_restores)

SECOND_POOL = "rbd2"


def write_config(name, text):
    path = os.path.join(TMP, name + ".conf")
    with open(path, "w") as f:
        f.write(text)
    return path


def base_config(store, jobs, limits="", defaults="", extra=""):
    return ("[ceph]\nconf = %s\nconnect-timeout = 20\n\n[store]\npath = %s\nmetrics-file = %s.prom\n\n"
            "[defaults]\nschedule = every 24h\nretries = 1\nretry-delay = 1s\n%s\n[limits]\n%s\n%s\n%s"
            % (CONF, store, store, defaults, limits, jobs, extra))


def start(*args, env=None):
    return subprocess.Popen([RBDVAULT] + list(args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            stdin=subprocess.DEVNULL, env=dict(os.environ, **(env or {})))


def finish(p, timeout=600):
    out, err = p.communicate(timeout=timeout)
    return p.returncode, out, err


def peak_overlap(intervals):
    """Most intervals (start, end) open at one instant."""
    events = sorted([(s, 1) for s, e in intervals] + [(e, -1) for s, e in intervals], key=lambda x: (x[0], x[1]))
    cur = peak = 0
    for _, d in events:
        cur += d
        peak = max(peak, cur)
    return peak


def intervals(report):
    return [(i["started_ns"], i["finished_ns"]) for i in report["images"] if i["result"] == "ok"]


def oplog(store):
    """(op, image, result) of every finished operation, from the store's operation log."""
    starts, ends = {}, {}
    if not os.path.exists(os.path.join(store, "oplog")):
        return []
    with open(os.path.join(store, "oplog")) as f:
        for line in f:
            # Read while the agent runs (SIGSTOP, too, lands asynchronously): the last line may be
            # half written, and a writer that found a torn line leaves an empty one. `log` skips
            # both; so does this.
            if not line.endswith("\n") or not line.strip():
                continue
            kind, kv = line.split()[0], dict(p.split("=", 1) for p in line.split()[1:] if "=" in p)
            check("id" in kv and kind in ("start", "end"), "malformed operation log line: %r" % line)
            (starts if kind == "start" else ends)[kv["id"]] = kv
    return [(s["op"], s.get("image", ""), ends.get(i, {}).get("result", "")) for i, s in starts.items()]


def in_progress_backups(c, store, images):
    """The images with a snapshot of `store` (rbdvault-<id8>-<rev>) whose revision is not committed:
    backups in progress, seen from Ceph and `ls` (a reader) only."""
    committed = {r["id"] for r in run_json("ls", "--store", store)}
    prefix = "rbdvault-%s-" % cli_test.store_id(store)[:8]
    out = []
    for pool, name in images:
        for s in c.snaps(pool, name):
            if s.startswith(prefix) and int(s[len(prefix):]) not in committed:
                out.append("%s/%s" % (pool, name))
    return out


def create_many(c, pool, prefix, n, rng):
    for k in range(n):
        name = "%s%03d" % (prefix, k)
        c.create(pool, name, 4 << 20, FEATURES_FASTDIFF if k % 2 else FEATURES_NO_FASTDIFF)
        if k % 3 == 0:
            with c.image(pool, name) as img:
                img.write(rng.randbytes(64 << 10), rng.randrange(0, 60) << 16)


def check_limit_from_outside(c, limit=3, n=12):
    """images-in-parallel judged only from outside, many times: backups are made long (4 MiB each,
    reads throttled) so that the gaps between one image and the next are short, and the run is
    frozen (SIGSTOP) again and again while the backups in progress (snapshot, no revision yet) are
    counted from Ceph and `ls`. A frozen run cannot start or commit anything, so each count is
    exact: never above the limit; and with long backups one more worker would be seen at once."""
    names = ["bp-%02d" % k for k in range(n)]
    for name in names:
        c.create("rbd", name, 4 << 20, FEATURES_FASTDIFF)
        with c.image("rbd", name) as img:
            img.write(os.urandom(4 << 20), 0)
    store = new_store("batch-many-limit")
    conf = write_config("batch-many-limit", base_config(store, "[job.bp]\npool = rbd\ninclude = bp-*\n",
                                                        "images-in-parallel = %d\nread-bandwidth = 4M\n" % limit))
    p = start("run", "--config", conf, "--format", "json")
    seen = []
    while p.poll() is None:
        p.send_signal(signal.SIGSTOP)
        try:
            cli_test.wait_for(lambda: p.poll() is not None or cli_test.process_stopped(p.pid), "the run to freeze")
            seen.append(len(in_progress_backups(c, store, [("rbd", x) for x in names])))
        finally:
            p.send_signal(signal.SIGCONT)
        time.sleep(0.1)  # let it run a while between two looks (not a timing assumption)
    rcode, out, err = finish(p)
    check(rcode == 0 and json.loads(out)["ok"] == n, "throttled run: exit %d\n%s" % (rcode, err[-2000:]))
    log("images-in-parallel %d, backups in progress seen from outside in %d frozen looks: %s"
        % (limit, len(seen), seen))
    check(max(seen) <= limit, "images-in-parallel %d, yet %d backups were in progress at once" % (limit, max(seen)))
    check(max(seen) >= 2, "no two backups were ever seen in progress: the limit was not exercised: %s" % seen)
    for name in names:
        c.remove("rbd", name)


# Every schedule here is `every N`: what is due depends on when the images were last backed up,
# never on the wall clock (a `daily 02:00` schedule made the tests fail when run across 02:00).

# ---- scenarios --------------------------------------------------------------------------------

def scenario_batch_many(c):
    """210 images in two pools, two processes sharing a host-wide limit of 3 concurrent backups."""
    rng = random.Random(int(os.environ.get("RBDVAULT_SEED", random.randrange(1 << 30))))
    t0 = time.time()
    c.remove("rbd", "bm-new")
    create_many(c, "rbd", "bm-", 130, rng)
    create_many(c, SECOND_POOL, "bm-", 80, rng)
    log("created 210 images in %.1fs" % (time.time() - t0))
    slots = os.path.join(TMP, "batch-many-slots")
    shutil.rmtree(slots, ignore_errors=True)
    limits = "images-in-parallel = 3\nhost-slots = 3\nhost-slots-dir = %s\n" % slots
    store_a, store_b = new_store("batch-many-a"), new_store("batch-many-b")
    conf_a = write_config("batch-many-a", base_config(store_a, "[job.vms]\npool = rbd\ninclude = bm-*\n", limits))
    conf_b = write_config("batch-many-b", base_config(store_b, "[job.other]\npool = %s\ninclude = bm-*\n" % SECOND_POOL,
                                                      limits))
    t0 = time.time()
    pa, pb = start("run", "--config", conf_a, "--format", "json"), start("run", "--config", conf_b, "--format", "json")
    (rca, outa, erra), (rcb, outb, errb) = finish(pa), finish(pb)
    log("two runs of 130 + 80 images in %.1fs" % (time.time() - t0))
    check(rca == 0 and rcb == 0, "runs failed: %d %d\n%s\n%s" % (rca, rcb, erra[-2000:], errb[-2000:]))
    ra, rb = json.loads(outa), json.loads(outb)
    check(ra["ok"] == 130 and rb["ok"] == 80, "not all backed up: %d/130, %d/80" % (ra["ok"], rb["ok"]))
    for r in (ra, rb):
        check(r["peak_parallel"] <= 3, "a process ran %d backups at once (limit 3)" % r["peak_parallel"])
    both = peak_overlap(intervals(ra) + intervals(rb))
    log("measured peak concurrency: %d (a: %d, b: %d), limit 3" % (both, peak_overlap(intervals(ra)),
                                                                   peak_overlap(intervals(rb))))
    check(both <= 3, "the two processes together ran %d backups at once; host limit 3" % both)
    check(both >= 2, "no two backups ever overlapped: the limit was never exercised")
    revs = run_json("ls", "--store", store_a)
    check(len(revs) == 130, "store a holds %d revisions, not 130" % len(revs))
    for name in ("bm-000", "bm-003", "bm-127"):
        rev = next(r for r in revs if r["image"] == "rbd/" + name)
        expected = rbd_export_sha("rbd/%s@%s" % (name, snap_name(store_a, rev["id"])))
        verify_restores(c, store_a, "rbd/%s@%d" % (name, rev["id"]), expected, tag="restored-bm")

    # One config over both pools; without a host limit, images-in-parallel alone bounds the process.
    store_c = new_store("batch-many-c")
    conf_c = write_config("batch-many-c", base_config(
        store_c, "[job.vms]\npool = rbd\ninclude = bm-*\n\n[job.other]\npool = %s\ninclude = bm-*\n" % SECOND_POOL,
        "images-in-parallel = 4\n"))
    t0 = time.time()
    # Judged from outside too, not only from the tool's own timestamps: the run is held (SIGSTOP) at
    # its 40th chunk append, and the backups in progress at that instant are counted from Ceph and
    # the store: an image with a snapshot of this store whose revision is not committed.
    p = cli_test.start_held("pack.append:40", "run", "--config", conf_c, "--format", "json", conf=False)
    try:
        in_progress = in_progress_backups(c, store_c, [("rbd", "bm-%03d" % k) for k in range(130)] +
                                          [(SECOND_POOL, "bm-%03d" % k) for k in range(80)])
    finally:
        p.send_signal(signal.SIGCONT)
    rcode, out, err = finish(p)
    check(rcode == 0, "run over two pools: exit %d\n%s" % (rcode, err[-2000:]))
    rc = json.loads(out)
    log("one config, two pools, 210 images in %.1fs; held at the 40th append: %d backups in progress (%s)"
        % (time.time() - t0, len(in_progress), ", ".join(in_progress)))
    check(1 <= len(in_progress) <= 4, "images-in-parallel 4, yet %d backups were in progress at once: %s"
          % (len(in_progress), in_progress))
    check(rc["ok"] == 210 and rc["failed"] == 0, "one config over two pools: %d ok, %d failed" % (rc["ok"], rc["failed"]))
    check(rc["peak_parallel"] <= 4 and peak_overlap(intervals(rc)) <= 4,
          "images-in-parallel 4: peak %d / %d" % (rc["peak_parallel"], peak_overlap(intervals(rc))))
    log("images-in-parallel 4 alone: peak %d" % peak_overlap(intervals(rc)))
    check_limit_from_outside(c)

    # Nothing is due again today; a new image is picked up, a removed one is reported and kept.
    c.create("rbd", "bm-new", 4 << 20, FEATURES_FASTDIFF)
    c.remove("rbd", "bm-001")
    dry = run_json("run", "--config", conf_a, "--dry-run")
    would = [i["image"] for i in dry["images"] if i["result"] == "would-back-up"]
    check(would == ["rbd/bm-new"], "dry run would back up %s" % would)
    check(len(run_json("ls", "--store", store_a)) == 130, "the dry run changed the store")
    again = run_json("run", "--config", conf_a)
    by = {i["image"]: i for i in again["images"]}
    check(by.get("rbd/bm-new", {}).get("result") == "ok", "new image not backed up: %s" % by.get("rbd/bm-new"))
    check(by.get("rbd/bm-001", {}).get("result") == "missing", "removed image not reported: %s" % by.get("rbd/bm-001"))
    check(again["ok"] == 1 and again["not_due"] == 129, "second run: %s" % {k: again[k] for k in ("ok", "not_due")})
    check(any(r["image"] == "rbd/bm-001" for r in run_json("ls", "--store", store_a)),
          "history of the removed image was not kept")
    for k in range(130):
        c.remove("rbd", "bm-%03d" % k)
    for k in range(80):
        c.remove(SECOND_POOL, "bm-%03d" % k)
    c.remove("rbd", "bm-new")


def scenario_batch_failure(c):
    """An image made unreadable mid-run fails alone; status, check and metrics all show it."""
    rng = random.Random(5)
    names = ["bf-%d" % k for k in range(5)] + ["bf-zz-broken"]
    for n in names:
        c.create("rbd", n, 8 << 20, FEATURES_FASTDIFF)
        with c.image("rbd", n) as img:
            img.write(rng.randbytes(1 << 20), 0)
    store = new_store("batch-failure")
    conf = write_config("batch-failure", base_config(
        store, "[job.bf]\npool = rbd\ninclude = bf-*\n", "images-in-parallel = 1\n"))
    with c.image("rbd", "bf-zz-broken") as img:
        header = "rbd_header." + img.id()
    # The run is held right after its first commit (a crash point, not a timing guess); then the
    # last image loses its header, and the run goes on.
    p = cli_test.start_held("revision.committed:1", "run", "--config", conf, "--format", "json", conf=False)
    c.ioctx("rbd").remove_object(header)
    p.send_signal(signal.SIGCONT)
    rc, out, err = finish(p)
    r = json.loads(out)
    by = {i["image"]: i for i in r["images"]}
    # The one failure's class is the run's exit code (docs/usage.md "Exit codes"): a lost header
    # is an image that does not exist.
    check(by["rbd/bf-zz-broken"]["error_class"] == "not-found" and rc == cli_test.EXIT_NOT_FOUND,
          "run with a failed image: exit %d, wanted %d; class %s" % (rc, cli_test.EXIT_NOT_FOUND,
                                                                    by["rbd/bf-zz-broken"]["error_class"]))
    check(all(i["error_class"] is None for i in r["images"] if i["result"] != "failed"), "error_class of the ok ones")
    check(r["ok"] == 5 and r["failed"] == 1, "ok %d failed %d\n%s" % (r["ok"], r["failed"], err[-2000:]))
    check(by["rbd/bf-zz-broken"]["result"] == "failed" and by["rbd/bf-zz-broken"]["error"],
          "broken image: %s" % by["rbd/bf-zz-broken"])
    log("failed image: %s" % by["rbd/bf-zz-broken"]["error"])

    status = {s["image"]: s for s in run_json("status", "--config", conf)}
    check(status["rbd/bf-zz-broken"]["last_result"] == "failed" and status["rbd/bf-zz-broken"]["last_error"],
          "status: %s" % status["rbd/bf-zz-broken"])
    check(all(status["rbd/bf-%d" % k]["last_result"] == "ok" and status["rbd/bf-%d" % k]["revisions"] == 1
              for k in range(5)), "status of the good images: %s" % status)
    out, _ = run("check", "--config", conf, "--max-age", "26h", rc=2)
    check(out.startswith("RBDVAULT CRITICAL") and "rbd/bf-zz-broken failed" in out and "| images=" in out,
          "check output: %s" % out)
    # With --config, an image taken out of the plan (skip = true) no longer alarms.
    conf_skip = write_config("batch-failure-skip", open(conf).read() + "\n[image.rbd/bf-zz-broken]\nskip = true\n")
    out, _ = run("check", "--config", conf_skip, "--max-age", "26h", rc=0)
    check(out.startswith("RBDVAULT OK - 5 images"), "check with the broken image skipped: %s" % out)
    check("rbd/bf-zz-broken" not in [s["image"] for s in run_json("status", "--config", conf_skip)],
          "status --config lists a skipped image")
    with open(store + ".prom") as f:
        metrics = f.read()
    check('rbdvault_last_backup_ok{image="rbd/bf-zz-broken"} 0' in metrics and "rbdvault_images_failed 1" in metrics
          and 'rbdvault_last_backup_ok{image="rbd/bf-0"} 1' in metrics, "metrics:\n" + metrics)
    check(not any(f.endswith(".tmp") or ".tmp." in f for f in os.listdir(os.path.dirname(store))
                  if f.startswith(os.path.basename(store) + ".prom")), "metrics temp file left behind")
    for k in range(5):
        c.remove("rbd", "bf-%d" % k)


def scenario_batch_agent(c):
    """The agent on an accelerated clock: schedule cycles, expiry, SIGHUP reload, SIGTERM mid-backup."""
    rng = random.Random(9)
    for k in range(3):
        c.create("rbd", "ag-%d" % k, 4 << 20, FEATURES_FASTDIFF)
    c.create("rbd", "agx-new", 4 << 20, FEATURES_FASTDIFF)
    store = new_store("batch-agent")
    jobs = "[job.ag]\npool = rbd\ninclude = ag-*\n"
    text = base_config(store, jobs, "images-in-parallel = 2\nread-bandwidth = 8M\n", defaults="keep-last = 2\n",
                       extra="[maintenance]\ngc-schedule = every 2h\nscrub-schedule = every 2h\nscrub-deep = true\n"
                       ).replace("schedule = every 24h", "schedule = every 1h")
    conf = write_config("batch-agent", text)
    # 1 agent hour = 2 real seconds; the agent looks for due work every 10 agent minutes.
    p = start("agent", "--config", conf, "--time-scale", "1800", "--poll", "10m")

    def backups_ok(image):
        return sum(1 for op, img, res in oplog(store) if op == "backup" and img == image and res == "ok")

    def settled(ops, image):
        """The image had 3+ backups and retention ran after its newest one."""
        n, expired_after = 0, False
        for op, img, res in ops:
            if img == image and op == "backup" and res == "ok":
                n, expired_after = n + 1, False
            elif img == image and op == "expire" and res == "ok":
                expired_after = True
        return n >= 3 and expired_after

    deadline = time.time() + 120
    while True:
        if p.poll() is not None:
            raise Failure("agent exited %d: %s" % (p.returncode, p.communicate()[1][-2000:]))
        check(time.time() < deadline, "agent did not complete 3 cycles in 120s")
        # Freeze the agent so that the log and the revisions are looked at in one state.
        p.send_signal(signal.SIGSTOP)
        try:
            ops = oplog(store)
            if all(settled(ops, "rbd/ag-%d" % k) for k in range(3)):
                revs = run_json("ls", "--store", store)
                break
        finally:
            p.send_signal(signal.SIGCONT)
        with c.image("rbd", "ag-0") as img:
            img.write(rng.randbytes(4096), rng.randrange(0, 1000) << 12)
        time.sleep(0.3)
    per = {}
    for r in revs:
        per.setdefault(r["image"], []).append(r["id"])
    log("after %s backups: revisions per image %s" % ([backups_ok("rbd/ag-%d" % k) for k in range(3)],
                                                       {k: len(v) for k, v in per.items()}))
    check(all(len(per.get("rbd/ag-%d" % k, [])) == 2 for k in range(3)),
          "keep-last 2 not applied: %s" % per)
    check(any(op == "expire" and res == "ok" for op, _, res in oplog(store)), "no expire in the operation log")
    ops = oplog(store)
    check(any(op == "gc" and res == "ok" for op, _, res in ops) and any(op == "scrub" and res == "ok" for op, _, res in ops),
          "the agent ran no gc or no scrub: %s" % sorted(set((op, res) for op, _, res in ops)))
    newest = max(per["rbd/ag-0"])
    expected = rbd_export_sha("rbd/ag-0@%s" % snap_name(store, newest))
    verify_restores(c, store, "rbd/ag-0@%d" % newest, expected, tag="restored-ag")

    # SIGHUP: the reloaded config selects one more image.
    with open(conf, "w") as f:
        f.write(text.replace("include = ag-*\n", "include = ag-*\ninclude = agx-*\n"))
    p.send_signal(signal.SIGHUP)
    deadline = time.time() + 60
    while backups_ok("rbd/agx-new") < 1:
        check(p.poll() is None and time.time() < deadline, "reloaded config not applied")
        time.sleep(0.2)

    # SIGTERM while a backup runs: a new 48 MiB image takes about 6 s at 8 MiB/s.
    c.create("rbd", "ag-big", 64 << 20, FEATURES_FASTDIFF)
    with c.image("rbd", "ag-big") as img:
        for off in range(0, 48 << 20, 4 << 20):
            img.write(rng.randbytes(4 << 20), off)
    deadline = time.time() + 60
    while True:
        status = {s["image"]: s for s in run_json("status", "--store", store)}
        if status.get("rbd/ag-big", {}).get("running"):
            break
        check(p.poll() is None and time.time() < deadline, "the big backup never started")
        time.sleep(0.1)
    # ... and has stored data (its unsealed pack exists): the SIGTERM lands amid the backup.
    data = os.path.join(store, "data")
    cli_test.wait_for(lambda: any(f.endswith(".pack.tmp") for f in os.listdir(data)), "the big backup's first chunks")
    t0 = time.time()
    p.send_signal(signal.SIGTERM)
    rc, _, err = finish(p, timeout=60)
    log("agent stopped %.1fs after SIGTERM, exit %d" % (time.time() - t0, rc))
    check(rc == 0, "agent exit %d after SIGTERM\n%s" % (rc, err[-2000:]))
    check("rbd/ag-big" not in [r["image"] for r in run_json("ls", "--store", store)],
          "a revision of the abandoned backup exists")
    check([s for s in c.snaps("rbd", "ag-big") if s.startswith("rbdvault-")] == [],
          "the abandoned backup left snapshots: %s" % c.snaps("rbd", "ag-big"))
    status = {s["image"]: s for s in run_json("status", "--store", store)}
    check(not any(s["running"] for s in status.values()), "status still shows a backup running")
    check("rbd/ag-big" in status, "status does not list the image whose backup was stopped: %s" % sorted(status))
    big = status["rbd/ag-big"]
    check(big["last_result"] == "" and big["revisions"] == 0 and not big["running"],
          "a backup stopped on request must count neither way: %s" % big)
    check(any(op == "backup" and img == "rbd/ag-big" and res == "cancelled" for op, img, res in oplog(store)),
          "the abandoned backup is not logged as cancelled")
    # Nothing was left for recovery to roll back: the next writer finds a clean store.
    _, err = run("backup", "--store", store, "rbd/ag-1")
    check("rolled back" not in err, "the next writer had to roll back: %s" % err)
    scrub = run_json("scrub", "--store", store)
    check(scrub["clean"], "scrub after SIGTERM: %s" % scrub)
    cli_test.independent_check(store)
    for n in ("ag-0", "ag-1", "ag-2", "agx-new", "ag-big"):
        c.remove("rbd", n)


def scenario_batch_retry(c):
    """Transient errors are retried with backoff: the OSD of a private cluster stalls mid-run."""
    mc = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "deploy", "micro-ceph.sh")
    cdir = os.path.join(TMP, "batch-retry-cluster")
    subprocess.run([mc, "stop", cdir, "--purge"], capture_output=True)
    conf = subprocess.run([mc, "start", cdir], capture_output=True, text=True, check=True).stdout.strip()
    try:
        for n in ("rt-0", "rt-1"):
            subprocess.run(["rbd", "-c", conf, "create", "--size", "8M", "rbd/" + n], check=True)
        subprocess.run(["rbd", "-c", conf, "bench", "--io-type", "write", "--io-size", "64K", "--io-total", "1M",
                        "rbd/rt-0"], check=True, capture_output=True)
        store = new_store("batch-retry")
        text = base_config(store, "[job.rt]\npool = rbd\n").replace("conf = %s\n" % CONF, "conf = %s\nop-timeout = 3\n" % conf)
        text = text.replace("retries = 1\nretry-delay = 1s", "retries = 4\nretry-delay = 2s")
        cfg = write_config("batch-retry", text)
        with open(os.path.join(cdir, "run", "osd.0.pid")) as f:
            osd = int(f.read().strip())
        # Two stalls, each lasting until the run has hit a timeout and scheduled a retry: one while
        # the pool is listed, one amid the backups (the run holds itself right after the first
        # backup snapshot, then the OSD stops), so both retry paths run and their results are checked.
        os.kill(osd, signal.SIGSTOP)  # every OSD operation now times out after 3 s
        err_lines = []
        p = None
        try:
            p = start("run", "--config", cfg, "--format", "json", env={"RBDVAULT_STOP_AT": "backup.snapshot_created:1"})
            reader = threading.Thread(target=lambda: err_lines.extend(iter(p.stderr.readline, "")), daemon=True)
            reader.start()

            def retried(what):
                return lambda: any(what in l and "retrying in" in l for l in err_lines) or p.poll() is not None

            cli_test.wait_for(retried("job rt:"), "a retry of the listing while the OSD is stopped")
            os.kill(osd, signal.SIGCONT)
            cli_test.wait_for(lambda: p.poll() is not None or cli_test.process_stopped(p.pid),
                              "the run to hold after its first backup snapshot")
            os.kill(osd, signal.SIGSTOP)
            p.send_signal(signal.SIGCONT)
            cli_test.wait_for(retried("backup rbd/rt-"), "a retry of a backup while the OSD is stopped")
        finally:
            os.kill(osd, signal.SIGCONT)
            if p is not None:
                p.send_signal(signal.SIGCONT)
        out = p.stdout.read()
        rc = p.wait(timeout=600)
        reader.join(timeout=60)
        err = "".join(err_lines)
        check(rc == 0, "run exit %d after the OSD came back\n%s" % (rc, err[-3000:]))
        retries = [l for l in err.splitlines() if "retrying in" in l]
        check(any("job rt:" in l for l in retries) and any("backup rbd/rt-" in l for l in retries),
              "the listing and a backup must both have been retried:\n" + err[-3000:])
        log("retried: " + "; ".join(retries))
        r = json.loads(out)
        check(r["ok"] == 2 and r["failed"] == 0, "after retries: %s" % r)
        left = subprocess.run(["rbd", "-c", conf, "snap", "ls", "rbd/rt-0"], capture_output=True, text=True).stdout
        check(left.count("rbdvault-") == 1, "snapshots after the retried run:\n" + left)
        # The retried backups hold exactly their snapshots' data.
        for i in r["images"]:
            snap = "%s@%s" % (i["image"], snap_name(store, i["revision"]))
            p = subprocess.run(["rbd", "-c", conf, "export", "--no-progress", snap, "-"], capture_output=True, check=True)
            expected = (hashlib.sha256(p.stdout).hexdigest(), len(p.stdout))
            path = os.path.join(TMP, "batch-retry-%s.raw" % i["image"].replace("/", "-"))
            run("restore", "--store", store, "%s@%d" % (i["image"], i["revision"]), "--to-file", path, "-q")
            got = cli_test.file_sha(path)
            os.unlink(path)
            check(got == expected, "%s after retries: restore %s != rbd export %s" % (i["image"], got, expected))
            if i["image"] == "rbd/rt-0":
                check(expected[0] != hashlib.sha256(bytes(expected[1])).hexdigest(), "rt-0 has data to compare")
        cli_test.independent_check(store)  # the failed attempts left nothing behind
    finally:
        subprocess.run([mc, "stop", cdir, "--purge"], capture_output=True)


def scenario_batch_kill(c):
    """SIGKILL during parallel backups: no partial revision; the next run recovers every writer."""
    rng = random.Random(int(os.environ.get("RBDVAULT_SEED", random.randrange(1 << 30))))
    names = ["bk-%02d" % k for k in range(24)]
    for k, n in enumerate(names):
        c.create("rbd", n, 8 << 20, FEATURES_FASTDIFF if k % 2 else FEATURES_NO_FASTDIFF)
        with c.image("rbd", n) as img:
            img.write(rng.randbytes(2 << 20), rng.randrange(0, 6) << 20)
    store = new_store("batch-kill")
    conf = write_config("batch-kill", base_config(store, "[job.bk]\npool = rbd\ninclude = bk-*\n",
                                                  "images-in-parallel = 3\nread-bandwidth = 16M\n"))
    # Planned kills (crash points, store/crash_points.h) land at a known step on any machine:
    # right after the 4th commit; amid the chunk appends of several parallel backups; at the
    # second begin. A kill at a random time follows on top; it may come too late, which is fine.
    kills = 0
    for step in ("revision.committed:4", "pack.append:40", "revision.begun:2"):
        before = len(run_json("ls", "--store", store))
        rc, _, err = finish(start("run", "--config", conf, env={"RBDVAULT_CRASH_AT": step}))
        check(rc == -signal.SIGKILL, "run was not killed at %s: exit %d\n%s" % (step, rc, err[-2000:]))
        kills += 1
        after = len(run_json("ls", "--store", store))
        if step == "revision.committed:4":
            check(after == 4, "killed right after the 4th commit: %d revisions" % after)
        if step == "revision.begun:2":  # the previous run died amid the appends of parallel writers
            check("rolled back unfinished revision" in err, "no writer of the killed run was rolled back:\n" + err)
        check(after >= before, "a killed run lost revisions: %d -> %d" % (before, after))
        cli_test.independent_check(store, "--before-recovery", "--shallow")
    p = start("run", "--config", conf)
    time.sleep(rng.uniform(0.1, 1.0))
    p.kill()
    p.communicate()
    timed = "landed" if p.returncode == -signal.SIGKILL else "came too late"
    committed = len(run_json("ls", "--store", store))
    rc, out, err = finish(start("run", "--config", conf, "--format", "json"))
    check(rc == 0, "run after %d kills: exit %d\n%s" % (kills, rc, err[-3000:]))
    r = json.loads(out)
    check(r["ok"] + r["not_due"] == 24 and r["failed"] == 0, "after kills: %s" % {k: r[k] for k in ("ok", "not_due", "failed")})
    log("%d planned kills, a timed one that %s; %d revisions committed by killed runs; %d writers rolled back; "
        "final run backed up %d" % (kills, timed, committed, err.count("rolled back unfinished revision"), r["ok"]))
    revs = run_json("ls", "--store", store)
    check(sorted(x["image"] for x in revs) == ["rbd/" + n for n in names], "revisions: %s" % [x["image"] for x in revs])
    scrub = run_json("scrub", "--store", store, "--deep")
    check(scrub["clean"], "deep scrub after kills: %s" % scrub)
    cli_test.independent_check(store)
    for n in names:
        snaps = [x for x in c.snaps("rbd", n) if x.startswith("rbdvault-")]
        check(len(snaps) == 1, "%s has snapshots %s" % (n, snaps))
    for rev in rng.sample(revs, 3):
        name = rev["image"].split("/")[1]
        expected = rbd_export_sha("rbd/%s@%s" % (name, snap_name(store, rev["id"])))
        verify_restores(c, store, "rbd/%s@%d" % (name, rev["id"]), expected, tag="restored-bk")
    for n in names:
        c.remove("rbd", n)


def scenario_batch_config_error(c):
    """A typo in the config: an error naming file, line and key; nothing runs."""
    c.create("rbd", "ce-0", 4 << 20, FEATURES_FASTDIFF)
    store = new_store("batch-config-error")
    good = base_config(store, "[job.ce]\npool = rbd\ninclude = ce-*\n", "images-in-parallel = 2\n")
    lines = good.splitlines()
    at = next(i for i, l in enumerate(lines) if l.startswith("images-in-parallel"))
    lines[at] = "images-in-paralel = 2"
    conf = write_config("batch-config-error", "\n".join(lines) + "\n")
    for cmd in ("run", "agent"):
        out, err = run(cmd, "--config", conf, rc=cli_test.EXIT_USAGE, timeout=30)
        msg = err.strip().splitlines()
        check(len(msg) == 1 and "%s:%d: unknown key 'images-in-paralel' in [limits]" % (conf, at + 1) in msg[0],
              "%s: error was %r" % (cmd, err))
    log("config error: " + msg[0])
    lines[at] = "images-in-parallel = many"
    conf = write_config("batch-config-error", "\n".join(lines) + "\n")
    _, err = run("run", "--config", conf, rc=cli_test.EXIT_USAGE)
    check("%s:%d: key 'images-in-parallel' in [limits]: bad value 'many'" % (conf, at + 1) in err, err)
    # Out-of-range numbers are refused the same way (issue 19): a negative keep-* forgot history.
    for key, value, section in (("images-in-parallel", "0", "limits"), ("images-in-parallel", "-1", "limits")):
        lines[at] = "%s = %s" % (key, value)
        conf = write_config("batch-config-error", "\n".join(lines) + "\n")
        _, err = run("run", "--config", conf, rc=cli_test.EXIT_USAGE)
        msg = err.strip().splitlines()
        check(len(msg) == 1 and "%s:%d: key '%s' in [%s]: bad value '%s': expected a whole number from 1 to 256"
              % (conf, at + 1, key, section, value) in msg[0], "%s = %s: %r" % (key, value, err))
    lines[at] = "images-in-parallel = 2"
    for extra in ("keep-last = -1", "gc-max-unused = 150", "full-every = -3", "reads-in-flight = 0"):
        section = "[maintenance]" if extra.startswith("gc-") else "[image.rbd/ce-0]"
        conf = write_config("batch-config-error", "\n".join(lines) + "\n%s\n%s\n" % (section, extra))
        _, err = run("run", "--config", conf, rc=cli_test.EXIT_USAGE)
        msg = err.strip().splitlines()
        check(len(msg) == 1 and ("%s:%d: key '%s'" % (conf, len(lines) + 2, extra.split()[0])) in msg[0]
              and "bad value" in msg[0], "%s: %r" % (extra, err))
    # check is a monitoring plugin: its own errors are UNKNOWN (3), never CRITICAL.
    for args in (["--config", conf], ["--store", store, "--max-age", "soon"], ["--store", store, "--bogus"],
                 ["--store", store, "extra-arg"]):
        out, _ = run("check", *args, rc=3)
        check(out.startswith("RBDVAULT UNKNOWN - "), "check %s: %r" % (args, out))
    check(run_json("ls", "--store", store) == [], "something was backed up")
    check(c.snaps("rbd", "ce-0") == [], "a snapshot was taken")
    check(not os.path.exists(os.path.join(store, "oplog")) or not any(
        op == "backup" for op, _, _ in oplog(store)), "a backup was logged")
    c.remove("rbd", "ce-0")


def scenario_batch_zero_size(c):
    """0-byte images (with and without fast-diff) in a batch next to ordinary ones: every image is
    backed up (a librbd assert on the 0-byte image used to abort the whole process); after the
    empty image grows, the next run backs it up as a delta."""
    rng = random.Random(19)
    names = ["bz-zero-fd", "bz-zero-nofd"] + ["bz-%d" % k for k in range(4)]
    for n in names:
        zero = n.startswith("bz-zero")
        c.create("rbd", n, 0 if zero else 8 << 20, FEATURES_NO_FASTDIFF if n.endswith("nofd") else FEATURES_FASTDIFF)
        if not zero:
            with c.image("rbd", n) as img:
                img.write(rng.randbytes(512 << 10), rng.randrange(0, 15) << 19)
    store = new_store("batch-zero-size")
    conf = write_config("batch-zero-size", base_config(store, "[job.bz]\npool = rbd\ninclude = bz-*\n",
                                                       "images-in-parallel = 3\n", "keep-last = 2\n"))
    rc, out, err = finish(start("run", "--config", conf, "--format", "json"))
    check(rc == 0, "run with 0-byte images: exit %d\n%s" % (rc, err[-2000:]))
    r = json.loads(out)
    by = {i["image"]: i for i in r["images"]}
    check(r["ok"] == len(names) and all(by["rbd/" + n]["result"] == "ok" for n in names),
          "not every image was backed up: %s" % r)
    for n in ("bz-zero-fd", "bz-zero-nofd"):
        check(by["rbd/" + n]["size"] == 0, "%s: %s" % (n, by["rbd/" + n]))
    for n in names:
        rev = by["rbd/" + n]["revision"]
        verify_restores(c, store, "rbd/%s@%d" % (n, rev), rbd_export_sha("rbd/%s@%s" % (n, snap_name(store, rev))),
                        tag="restored-bz")
    # The empty images grow; the next run backs them up as deltas.
    for n in ("bz-zero-fd", "bz-zero-nofd"):
        with c.image("rbd", n) as img:
            img.resize(4 << 20)
            img.write(rng.randbytes(100 << 10), 1 << 20)
    rc, out, err = finish(start("run", "--config", conf, "--format", "json", "--force"))
    check(rc == 0, "second run: exit %d\n%s" % (rc, err[-2000:]))
    by = {i["image"]: i for i in json.loads(out)["images"]}
    for n in ("bz-zero-fd", "bz-zero-nofd"):
        m = by["rbd/" + n]
        check(m["result"] == "ok" and m["kind"] == "delta" and m["size"] == 4 << 20, "%s after growth: %s" % (n, m))
        verify_restores(c, store, "rbd/%s@%d" % (n, m["revision"]),
                        rbd_export_sha("rbd/%s@%s" % (n, snap_name(store, m["revision"]))), tag="restored-bz")
    for n in names:
        c.remove("rbd", n)


def scenario_batch_verify(c):
    """Defence in depth: a wrong incremental (a diff that misses every change, simulated with
    RBDVAULT_FAULT=diff.miss) is caught by the check after the backup: the image fails, status,
    check and the metrics say CRITICAL, and the next run reads the whole image and is right."""
    c.create("rbd", "bv-0", 8 << 20, FEATURES_FASTDIFF)
    c.create("rbd", "bv-1", 8 << 20, FEATURES_FASTDIFF)
    for n in ("bv-0", "bv-1"):
        with c.image("rbd", n) as img:
            img.write(os.urandom(4 << 20), 0)
    store = new_store("batch-verify")
    conf = write_config("batch-verify", base_config(store, "[job.bv]\npool = rbd\ninclude = bv-*\n",
                                                    defaults="verify-sample = 100\n"))
    r = run_json("run", "--config", conf)
    check(r["ok"] == 2, "first run: %s" % r)
    with c.image("rbd", "bv-0") as img:
        img.write(os.urandom(2 << 20), 1 << 20)
    rc, out, err = finish(start("run", "--config", conf, "--force", "--format", "json",
                                env={"RBDVAULT_FAULT": "diff.miss"}))
    check(rc == cli_test.EXIT_DAMAGE, "a run with a wrong incremental must exit %d (damage), got %d\n%s" %
          (cli_test.EXIT_DAMAGE, rc, err[-2000:]))
    by = {i["image"]: i for i in json.loads(out)["images"]}
    check(all(i["error_class"] == "damage" for i in by.values() if i["result"] == "failed"), "classes: %s" % by)
    check(by["rbd/bv-0"]["result"] == "failed" and "differs from its snapshot in 32 of 128 sampled blocks"
          in by["rbd/bv-0"]["error"], "the wrong incremental was not caught: %s" % by["rbd/bv-0"])
    check(by["rbd/bv-1"]["result"] == "ok", "the unchanged image must pass its check: %s" % by["rbd/bv-1"])
    status = {s["image"]: s for s in run_json("status", "--config", conf)}
    check(status["rbd/bv-0"]["verify_failed"] and status["rbd/bv-0"]["last_result"] == "failed",
          "status: %s" % status["rbd/bv-0"])
    check(not status["rbd/bv-1"]["verify_failed"], "status of the good image: %s" % status["rbd/bv-1"])
    flagged = [x["id"] for x in run_json("ls", "--store", store) if x["verify_failed"]]
    check(len(flagged) == 1, "ls must show exactly the wrong revision as verify_failed: %s" % flagged)
    # A restore of the image (no @REV) does not hand out the revision known to be wrong: it names the
    # newest one without the mark. Asked for by number, it is restored, with a warning.
    bad_file = os.path.join(TMP, "bv-flagged.raw")
    out, err = run("restore", "--store", store, "rbd/bv-0", "--to-file", bad_file, rc=cli_test.EXIT_DAMAGE)
    good = [x["id"] for x in run_json("ls", "--store", store, "rbd/bv-0") if not x["verify_failed"]]
    check(("rbd/bv-0@%d, the newest revision without that mark" % max(good)) in err and not os.path.exists(bad_file),
          "restore of an image whose newest revision is flagged: %r" % err)
    out, err = run("restore", "--store", store, "rbd/bv-0@%d" % flagged[0], "--to-file", bad_file)
    check("differs from its snapshot" in err and os.path.exists(bad_file), "restore @flagged: %r" % err)
    os.unlink(bad_file)
    out, _ = run("check", "--config", conf, "--max-age", "26h", rc=2)
    check(out.startswith("RBDVAULT CRITICAL") and "rbd/bv-0" in out, "check: %s" % out)
    with open(store + ".prom") as f:
        metrics = f.read()
    check('rbdvault_verify_failed{image="rbd/bv-0"} 1' in metrics and
          'rbdvault_verify_failed{image="rbd/bv-1"} 0' in metrics, "metrics:\n" + metrics)
    # The next run (the fault gone) reads bv-0 whole and is right again; bv-1 still diffs.
    r = run_json("run", "--config", conf, "--force")
    by = {i["image"]: i for i in r["images"]}
    check(by["rbd/bv-0"]["result"] == "ok" and by["rbd/bv-0"]["kind"] == "full", "after the mismatch: %s" % by)
    check(by["rbd/bv-1"]["kind"] == "delta", "the good image: %s" % by["rbd/bv-1"])
    newest = max(x["id"] for x in run_json("ls", "--store", store, "rbd/bv-0"))
    verify_restores(c, store, "rbd/bv-0@%d" % newest, rbd_export_sha("rbd/bv-0@" + snap_name(store, newest)),
                    tag="restored-bv")
    out, _ = run("check", "--config", conf, "--max-age", "26h", rc=0)
    check(out.startswith("RBDVAULT OK"), "check after the full read: %s" % out)
    cli_test.independent_check(store)  # the flagged revision is a consistent revision, only wrong
    for n in ("bv-0", "bv-1"):
        c.remove("rbd", n)


def scenario_batch_copy(c):
    """A [copy] step after the backups: each run copies what it backed up to a second store, whose
    own retention (keep-last 2) then applies there; every copied revision restores as rbd export
    of its source snapshot; a copy to a missing store fails the run (exit 3) but not the backups."""
    rng = random.Random(23)
    names = ["bc-%d" % k for k in range(3)]
    for n in names:
        c.create("rbd", n, 8 << 20, FEATURES_FASTDIFF)
    src = new_store("batch-copy-src")
    dst = new_store("batch-copy-dst")
    conf = write_config("batch-copy", base_config(src, "[job.bc]\npool = rbd\ninclude = bc-*\n",
                                                  extra="[copy]\nto = %s\nkeep-last = 2\n" % dst))
    history = {n: {} for n in names}
    for round_ in range(3):
        for n in names:
            with c.image("rbd", n) as img:
                img.write(rng.randbytes(256 << 10), rng.randrange(0, 15) << 19)
        rc, out, err = finish(start("run", "--config", conf, "--format", "json", "--force"))
        check(rc == 0, "run %d: exit %d\n%s" % (round_, rc, err[-2000:]))
        r = json.loads(out)
        cp = r["copy"]
        check(cp is not None and cp["result"] == "ok" and cp["revisions_copied"] == len(names),
              "run %d copy step: %s" % (round_, cp))
        check(cp["expired"] == (len(names) if round_ == 2 else 0), "run %d copy retention: %s" % (round_, cp))
        for m in r["images"]:
            n = m["image"].split("/")[1]
            history[n][m["revision"]] = rbd_export_sha("rbd/%s@%s" % (n, snap_name(src, m["revision"])))
    for n in names:
        check(len(run_json("ls", "--store", src, "rbd/" + n)) == 3, "the source keeps its own history")
        check(cli_test.check_copies_restore(src, dst, n, history[n]) == 2, "%s: the target keeps 2 copies" % n)
    ops = [o for o in run_json("log", "--store", dst) if o["op"] == "copy"]
    check(len(ops) == 3 and all(o["result"] == "ok" for o in ops), "copy steps in the target's log: %s" % ops)
    # A copy target that is not a store: the backups succeed, the run reports the copy's class.
    conf2 = write_config("batch-copy-missing", base_config(src, "[job.bc]\npool = rbd\ninclude = bc-*\n",
                                                           extra="[copy]\nto = %s\n" % os.path.join(TMP, "nowhere")))
    rc, out, err = finish(start("run", "--config", conf2, "--format", "json", "--force"))
    r = json.loads(out)
    check(rc == cli_test.EXIT_NOT_FOUND and r["ok"] == len(names) and r["copy"]["result"] == "failed" and
          r["copy"]["error_class"] == "not-found", "copy to a missing store: exit %d, %s" % (rc, r.get("copy")))
    for n in names:
        c.remove("rbd", n)


def scenario_batch_agent_damage(c):
    """The agent's scrub finds damage: logged as failed, but done for its schedule (every 2h), not
    run again at each poll (it was: a deep scrub of the whole store every 10 agent minutes)."""
    c.create("rbd", "agd-0", 4 << 20, FEATURES_FASTDIFF)
    with c.image("rbd", "agd-0") as img:
        img.write(os.urandom(4 << 20), 0)
    store = new_store("batch-agent-damage")
    text = base_config(store, "[job.agd]\npool = rbd\ninclude = agd-*\n",
                       extra="[maintenance]\nscrub-schedule = every 2h\nscrub-deep = true\n")
    conf = write_config("batch-agent-damage", text)
    r = run_json("run", "--config", conf)
    check(r["ok"] == 1, "first run: %s" % r)
    cli_test.corrupt_first_chunk(store)
    # 1 agent hour = 2 real seconds, a poll every 10 agent minutes (1/3 s). Waits for the second
    # scrub: on the agent's clock it starts 2h (4 real seconds) after the first, a slower machine
    # only adds to that; rerun at each poll it came about 1/3 s after.
    p = start("agent", "--config", conf, "--time-scale", "1800", "--poll", "10m")

    def scrub_starts():
        out = []
        with open(os.path.join(store, "oplog")) as f:
            for line in f:
                if line.startswith("start ") and line.endswith("\n") and " op=scrub " in line:
                    out.append(int(line.split(" time=", 1)[1].split()[0]))
        return out

    try:
        cli_test.wait_for(lambda: p.poll() is not None or len(scrub_starts()) >= 2, "the agent's second scrub")
    finally:
        p.send_signal(signal.SIGTERM)
    rc, _, err = finish(p, timeout=60)
    check(rc == 0, "agent exit %d: %s" % (rc, err[-2000:]))
    starts = scrub_starts()
    scrubs = [res for op, _, res in oplog(store) if op == "scrub"]
    log("scrubs: %s, started %s ms apart" % (scrubs, [b - a for a, b in zip(starts, starts[1:])]))
    check(len(starts) >= 2 and starts[1] - starts[0] >= 3000,
          "the scrub that found damage ran again %s ms later, not 2 agent hours (4 s): %s" %
          ([b - a for a, b in zip(starts, starts[1:])], scrubs))
    check(all(res == "failed" for res in scrubs[:2]), "a scrub that found damage is logged as failed: %s" % scrubs)
    check("found damage" in err, "the agent did not say the scrub found damage: %s" % err[-2000:])
    c.remove("rbd", "agd-0")


def scenario_batch_job_owner(c):
    """An image selected by two jobs belongs to the first, also when only the second runs (`run --job`):
    the second job neither backs it up nor applies its retention to it (keep-last 1 forgot the first
    job's daily revisions)."""
    for n in ("jo-db-1", "jo-web-1"):
        c.create("rbd", n, 4 << 20, FEATURES_FASTDIFF)
    store = new_store("batch-job-owner")
    jobs = ("[job.db]\npool = rbd\ninclude = jo-db-*\nkeep-last = 5\n\n"
            "[job.all]\npool = rbd\ninclude = jo-*\nkeep-last = 1\n")
    conf = write_config("batch-job-owner", base_config(store, jobs))
    for k in range(3):
        with c.image("rbd", "jo-db-1") as img:
            img.write(os.urandom(4096), k << 16)
        rc, out, err = finish(start("run", "--config", conf, "--force", "--format", "json"))
        check(rc == 0, "run %d: exit %d: %s" % (k, rc, err[-2000:]))
    by = {i["image"]: i for i in json.loads(out)["images"]}
    check(by["rbd/jo-db-1"]["job"] == "db" and by["rbd/jo-web-1"]["job"] == "all", "owners: %s" % by)
    db_revs = [r["id"] for r in run_json("ls", "--store", store, "rbd/jo-db-1")]
    check(len(db_revs) == 3, "job db keeps 5, has %s" % db_revs)
    rc, out, err = finish(start("run", "--config", conf, "--job", "all", "--force", "--format", "json"))
    check(rc == 0, "run --job all: exit %d: %s" % (rc, err[-2000:]))
    images = [i["image"] for i in json.loads(out)["images"]]
    check("rbd/jo-db-1" not in images and "rbd/jo-web-1" in images, "run --job all planned %s" % images)
    check([r["id"] for r in run_json("ls", "--store", store, "rbd/jo-db-1")] == db_revs,
          "run --job all changed job db's image: %s" % run_json("ls", "--store", store, "rbd/jo-db-1"))
    for n in ("jo-db-1", "jo-web-1"):
        c.remove("rbd", n)


SCENARIOS = {
    "batch_verify": scenario_batch_verify,
    "batch_many": scenario_batch_many,
    "batch_failure": scenario_batch_failure,
    "batch_agent": scenario_batch_agent,
    "batch_config_error": scenario_batch_config_error,
    "batch_retry": scenario_batch_retry,
    "batch_kill": scenario_batch_kill,
    "batch_zero_size": scenario_batch_zero_size,
    "batch_copy": scenario_batch_copy,
    "batch_job_owner": scenario_batch_job_owner,
    "batch_agent_damage": scenario_batch_agent_damage,
}


if __name__ == "__main__":
    sys.exit(cli_test.main(SCENARIOS, "batch_test.py"))
