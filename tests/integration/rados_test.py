#!/usr/bin/python3
"""A store in RADOS (issue 13) against a second micro-ceph cluster, the backup cluster.

Run one scenario: rados_test.py NAME. Environment as cli_test.py, plus RBDVAULT_STORE_CONF, the
ceph.conf of the backup cluster (deploy/micro-ceph.sh; its OSD's pid file is DIR/run/osd.0.pid).
Two "hosts" are two index directories of one store.
"""

import os
import re
import random
import signal
import subprocess
import sys
import time

import cli_test
from cli_test import (EXIT_EXISTS, EXIT_LOCKED, EXIT_NOT_FOUND, EXIT_UNREACHABLE, EXIT_USAGE, FEATURES_FASTDIFF,
                      RBDVAULT, STORE_CONF, TMP, check, log, new_store, rados_objects, rbd_export_sha,
                      restore_file_sha, run, run_json, snap_name, start_held, wait_for)


def host(store, name):
    """The options of `store` as seen from host NAME: its own index directory."""
    return ["--store", store, "--store-conf", STORE_CONF, "--index-dir", os.path.join(TMP, "host-" + name)]


def fresh_host_dirs(*names):
    for n in names:
        subprocess.run(["rm", "-rf", os.path.join(TMP, "host-" + n)], check=True)


def uncommitted(store):
    """Objects of the store's namespace that a killed or failed writer left (no rbdvault.size)."""
    r, io = cli_test.backup_ioctx(store)
    try:
        out = []
        for o in io.list_objects():
            try:
                io.get_xattr(o.key, "rbdvault.size")
            except Exception:  # noqa: BLE001 - python3-rados raises NoData/ObjectNotFound
                out.append(o.key)
        return sorted(out)
    finally:
        io.close()
        r.shutdown()


def json_once_not_locked(args, what, timeout, interval):
    """Runs rbdvault ARGS --format json until it is no longer refused for a lease (exit 4), waiting
    `what`; returns the JSON of the run that went through. Any other exit code fails."""
    got = {}

    def runs():
        p = subprocess.run([RBDVAULT] + cli_test.with_conf(list(args) + ["--format", "json"]),
                           capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL)
        check(p.returncode in (0, EXIT_LOCKED), "%s: exit %d: %s" % (args[0], p.returncode, p.stderr))
        if p.returncode == 0:
            got["json"] = cli_test.json.loads(p.stdout)
        return p.returncode == 0

    wait_for(runs, what, timeout=timeout, interval=interval)
    return got["json"]


def scenario_rados_two_hosts(c):
    """Two hosts (own index directories) take turns writing one store; each sees the other's
    revisions, incrementals cross hosts, and restores match rbd export."""
    store = new_store("two_hosts", kind="rados")
    fresh_host_dirs("th-a", "th-b")
    c.create("rbd", "th-img", 32 << 20, FEATURES_FASTDIFF)
    history = {}
    for i, who in enumerate(["th-a", "th-b", "th-a", "th-b"]):
        with c.image("rbd", "th-img") as img:
            img.write(os.urandom(1 << 20), (i * 5) << 20)
        r = run_json("backup", *host(store, who), "rbd/th-img")
        check(r["kind"] == ("full" if i == 0 else "delta"), "backup %d on host %s: %s" % (i, who, r))
        check(r["bytes_read"] <= 5 << 20, "host %s read more than the change: %s" % (who, r))
        history[r["revision"]] = rbd_export_sha("rbd/th-img@" + snap_name(store, r["revision"]))
        for other in ("th-a", "th-b"):
            ids = [x["id"] for x in run_json("ls", *host(store, other))]
            check(ids == sorted(history), "host %s after %s's backup %d sees %s" % (other, who, i, ids))
    for rev, exp in history.items():
        for who in ("th-a", "th-b"):
            out, _ = run("restore", *host(store, who), "rbd/th-img@%d" % rev, "--to-file",
                         os.path.join(TMP, "th-%s-%d" % (who, rev)), "-q")
            check(cli_test.file_sha(os.path.join(TMP, "th-%s-%d" % (who, rev))) == exp,
                  "host %s restores revision %d differently" % (who, rev))
            os.unlink(os.path.join(TMP, "th-%s-%d" % (who, rev)))
    check(run_json("scrub", *host(store, "th-b"), "--deep")["clean"], "scrub after turns")
    # Log lines name the store as the operator does, not the host's index directory.
    _, err = run("scrub", *host(store, "th-b"))
    check("scrub %s: " % store in err, "scrub's log line does not name %s: %r" % (store, err))
    # An index directory deleted outright is rebuilt from the pool.
    fresh_host_dirs("th-a")
    check([x["id"] for x in run_json("ls", *host(store, "th-a"))] == sorted(history), "rebuilt index")
    c.remove("rbd", "th-img")


def refresh_counts(store, who):
    """(packs read, packs unchanged) of host WHO's index refresh before an `ls` (None: no refresh)."""
    _, err = run("ls", *host(store, who))
    m = re.search(r"packs \((\d+) read, (\d+) unchanged since the last build\)", err)
    return (int(m.group(1)), int(m.group(2))) if m else None


def scenario_rados_refresh(c):
    """A host's index refresh reads only the packs it has not read before (store/rebuild.cc with
    reuse, docs/format.md 16.5): the others are the same RADOS objects (their versions say so). A
    pack rewritten under its name, even with the same bytes, is read again; a damaged one is read and
    reported again by every refresh. Every revision restores as rbd export on both hosts."""
    store = new_store("refresh", kind="rados")
    fresh_host_dirs("rf-a", "rf-b")  # own names: scenarios run in parallel
    c.create("rbd", "rf-img", 64 << 20, FEATURES_FASTDIFF)
    history = {}

    def backup_on_a(offset):
        with c.image("rbd", "rf-img") as img:
            img.write(os.urandom(2 << 20), offset)
        r = run_json("backup", *host(store, "rf-a"), "rbd/rf-img")
        history[r["revision"]] = rbd_export_sha("rbd/rf-img@" + snap_name(store, r["revision"]))

    backup_on_a(0)
    backup_on_a(8 << 20)
    check(refresh_counts(store, "rf-b") == (2, 0), "b's first refresh reads both packs")
    check(refresh_counts(store, "rf-b") is None, "nothing changed: no refresh")
    backup_on_a(16 << 20)
    counts = refresh_counts(store, "rf-b")
    check(counts == (1, 2), "after one more backup on a, b reads only its pack: %s" % (counts,))
    packs = sorted(k for k in rados_objects(store, "data/"))
    # Rewritten under its name with the very same bytes: a new object as far as b can know.
    r, io = cli_test.backup_ioctx(store)
    try:
        data = io.read(packs[0], 1 << 30)
        io.write_full(packs[0], data)
        # What a writer does when it changes the pool (even: settled), so that b refreshes.
        epoch = int(io.get_xattr("rbdvault.store", "rbdvault.epoch"))
        io.set_xattr("rbdvault.store", "rbdvault.epoch", str(epoch + 2).encode())
    finally:
        io.close()
        r.shutdown()
    counts = refresh_counts(store, "rf-b")
    check(counts == (1, 2), "a pack rewritten under its name is read again: %s" % (counts,))
    for rev, exp in history.items():
        for who in ("rf-a", "rf-b"):
            path = os.path.join(TMP, "rf-%s-%d" % (who, rev))
            run("restore", *host(store, who), "rbd/rf-img@%d" % rev, "--to-file", path, "-q")
            check(cli_test.file_sha(path) == exp, "host %s restores revision %d differently" % (who, rev))
            os.unlink(path)
    # forget and gc on a (packs rewritten and removed): b's refresh still gives every byte.
    first = min(history)
    run("forget", *host(store, "rf-a"), "rbd/rf-img@%d" % first)
    del history[first]
    run("gc", *host(store, "rf-a"))
    check(refresh_counts(store, "rf-b") is not None, "b refreshes after a's gc")
    for rev, exp in history.items():
        path = os.path.join(TMP, "rf-b-%d" % rev)
        run("restore", *host(store, "rf-b"), "rbd/rf-img@%d" % rev, "--to-file", path, "-q")
        check(cli_test.file_sha(path) == exp, "after gc on a, b restores revision %d differently" % rev)
        os.unlink(path)
    check(run_json("scrub", *host(store, "rf-b"), "--deep")["clean"], "scrub on b after the refreshes")
    c.remove("rbd", "rf-img")


def scenario_rados_lease(c):
    """A live writer's lease is never broken: another host is refused naming it, readers work. A
    writer that stops renewing (frozen past its lease) loses it: the other host takes over, and the
    frozen one, continued, fails at its next commit point and commits nothing."""
    store = new_store("lease", kind="rados")
    fresh_host_dirs("ls-a", "ls-b")
    c.create("rbd", "ls-img", 16 << 20, FEATURES_FASTDIFF)
    with c.image("rbd", "ls-img") as img:
        img.write(os.urandom(6 << 20), 0)
    r1 = run_json("backup", *host(store, "ls-a"), "rbd/ls-img")
    with c.image("rbd", "ls-img") as img:
        img.write(os.urandom(6 << 20), 8 << 20)
    held = start_held("revision.begun", "backup", *host(store, "ls-a"), "rbd/ls-img")
    try:
        _, err = run("backup", *host(store, "ls-b"), "rbd/ls-img", rc=EXIT_LOCKED)
        last = err.strip().splitlines()[-1]  # before it, the info lines of bringing b's index up to date
        check(last.startswith("rbdvault: error: ") and "locked by another writer" in last and
              "pid %d" % held.pid in last and "rbdvault backup rbd/ls-img" in last,
              "refusal must name the holder: %r" % err)
        check([x["id"] for x in run_json("ls", *host(store, "ls-b"))] == [r1["revision"]], "reader on host b")
        # The held writer is frozen (SIGSTOP): it renews nothing; its lease runs out and b takes over.
        taken = json_once_not_locked(["backup", *host(store, "ls-b"), "rbd/ls-img"],
                                     "the frozen writer's lease to expire", timeout=180, interval=2)
        log("host b took over: revision %d" % taken["revision"])
    finally:
        held.send_signal(signal.SIGCONT)
    out, err = held.communicate(timeout=300)
    check(held.returncode == EXIT_LOCKED and "lease" in err, "the frozen writer: exit %d: %s" % (held.returncode, err))
    ids = [x["id"] for x in run_json("ls", *host(store, "ls-b"))]
    check(ids == [r1["revision"], taken["revision"]], "only b's revision was added: %s" % ids)
    check([x["id"] for x in run_json("ls", *host(store, "ls-a"))] == ids, "host a sees the same")
    exp = rbd_export_sha("rbd/ls-img@" + snap_name(store, taken["revision"]))
    restore = os.path.join(TMP, "lease-restore")
    run("restore", *host(store, "ls-a"), "rbd/ls-img", "--to-file", restore, "-q")
    check(cli_test.file_sha(restore) == exp, "restore after takeover")
    os.unlink(restore)
    check(run_json("scrub", *host(store, "ls-a"), "--deep")["clean"], "scrub after takeover")
    c.remove("rbd", "ls-img")


def scenario_rados_osd_stop(c):
    """The backup cluster's OSD stopped during a backup: a clear error, exit 6, no partial revision;
    the OSD back, the retry succeeds and restores match."""
    store = new_store("osd_stop", kind="rados")
    fresh_host_dirs("os-a")
    osd_pid_file = os.path.join(os.path.dirname(STORE_CONF), "run", "osd.0.pid")
    with open(osd_pid_file) as f:
        osd = int(f.read().strip())
    c.create("rbd", "os-img", 32 << 20, FEATURES_FASTDIFF)
    with c.image("rbd", "os-img") as img:
        img.write(os.urandom(4 << 20), 0)
    r1 = run_json("backup", *host(store, "os-a"), "rbd/os-img")
    with c.image("rbd", "os-img") as img:
        img.write(os.urandom(12 << 20), 8 << 20)
    before = sorted(rados_objects(store))
    held = start_held("revision.begun", "backup", *host(store, "os-a"), "rbd/os-img", "--op-timeout", "5")
    os.kill(osd, signal.SIGSTOP)
    try:
        held.send_signal(signal.SIGCONT)
        out, err = held.communicate(timeout=600)
    finally:
        os.kill(osd, signal.SIGCONT)
    lines = err.strip().splitlines()
    check(held.returncode == EXIT_UNREACHABLE and "backup cluster" in lines[-1],
          "backup with the OSD stopped: exit %d: %s" % (held.returncode, err))
    log("with the OSD stopped: %s" % lines[-1])
    check([x["id"] for x in run_json("ls", *host(store, "os-a"))] == [r1["revision"]], "a partial revision is visible")
    check(run_json("scrub", *host(store, "os-a"))["clean"], "scrub after the failure")
    r2 = run_json("backup", *host(store, "os-a"), "rbd/os-img")
    check(r2["revision"] > r1["revision"], "retry: %s" % r2)
    check(uncommitted(store) == [], "the retry left unfinished objects: %s" % uncommitted(store))
    check(set(before) <= set(rados_objects(store)), "committed objects went missing")
    exp = rbd_export_sha("rbd/os-img@" + snap_name(store, r2["revision"]))
    check(restore_file_sha(store, "rbd/os-img@%d" % r2["revision"]) == exp, "restore after retry (another host)")
    c.remove("rbd", "os-img")


def scenario_rados_bad_input(c):
    """Bad RADOS store locations: one error line each and the documented exit code; init twice is
    refused; a dead backup cluster is "unreachable"."""
    store = new_store("bad_input", kind="rados")
    idx = ["--store-conf", STORE_CONF, "--index-dir", os.path.join(TMP, "bad-input.index")]
    for spec, rc, text in (("rados:", EXIT_USAGE, "bad store"), ("rados:rbd/a/b", EXIT_USAGE, "bad store"),
                           ("rados:nopool", EXIT_NOT_FOUND, "pool nopool does not exist"),
                           ("rados:rbd/no-store-here", EXIT_USAGE, "is not an rbdvault store")):
        _, err = run("ls", "--store", spec, *idx, rc=rc)
        check(text in err and len(err.strip().splitlines()) == 1, "%s: %r" % (spec, err))
    _, err = run("init", "--store", store, "--store-conf", STORE_CONF, "--index-dir", os.path.join(TMP, "other.index"),
                 rc=EXIT_EXISTS)
    check("a store already exists in " + store in err, "init twice: %r" % err)
    # A format 1 marker put into a pool by hand: every command, upgrade too, says what to do instead.
    old = new_store("format1", kind="rados")
    r, io = cli_test.backup_ioctx(old)
    try:
        text = io.read("rbdvault.store", 4096)
        check(text.startswith(b"rbdvault-store 3\n"), "marker text: %r" % text)
        io.write_full("rbdvault.store", text.replace(b"rbdvault-store 3", b"rbdvault-store 1", 1))
    finally:
        io.close()
        r.shutdown()
    for cmd in ("ls", "upgrade", "scrub"):
        _, err = run(cmd, "--store", old, "--index-dir", os.path.join(TMP, "format1-other.index"), "--store-conf",
                     STORE_CONF, rc=EXIT_USAGE)
        lines = err.strip().splitlines()
        check(len(lines) == 1 and "format 1 store, which RADOS does not take" in lines[0] and "copy" in lines[0],
              "%s of a format 1 pool: %r" % (cmd, err))
    _, err = run("ls", "--store", os.path.join(TMP, "dir"), "--index-dir", "/tmp/x", rc=EXIT_USAGE)
    check("--index-dir is only for a rados:POOL store" in err, "--index-dir with a directory: %r" % err)
    dead = os.path.join(TMP, "dead.conf")
    with open(dead, "w") as f:
        f.write("[global]\nmon host = 127.0.0.1:1\n")
    _, err = run("backup", "--store", store, "--store-conf", dead, "--index-dir", os.path.join(TMP, "dead.index"),
                 "--op-timeout", "3", "rbd/whatever", rc=EXIT_UNREACHABLE)
    check("backup cluster" in err.strip().splitlines()[-1], "dead backup cluster: %r" % err)


def scenario_rados_batch(c):
    """The batch config names a RADOS store ([store] path = rados:..., conf, index-dir): `run`
    backs up into it, and the command line on another host sees the revisions."""
    store = new_store("batch", kind="rados")
    fresh_host_dirs("batch", "bt-b")
    for n in ("rbatch-0", "rbatch-1"):
        c.create("rbd", n, 8 << 20, FEATURES_FASTDIFF)
        with c.image("rbd", n) as img:
            img.write(os.urandom(1 << 20), 0)
    conf = os.path.join(TMP, "rados-batch.conf")
    with open(conf, "w") as f:
        f.write("[ceph]\nconf = %s\n\n[store]\npath = %s\nconf = %s\nindex-dir = %s\n\n"
                "[defaults]\nschedule = every 24h\n\n[job.rbatch]\npool = rbd\ninclude = rbatch-*\n"
                % (cli_test.CONF, store, STORE_CONF, os.path.join(TMP, "host-batch")))
    out, _ = run("run", "--config", conf, "--format", "json")
    report = cli_test.json.loads(out)
    check(len(report["images"]) == 2, "run report: %s" % report)
    revs = run_json("ls", *host(store, "bt-b"))
    check(sorted(r["image"] for r in revs) == ["rbd/rbatch-0", "rbd/rbatch-1"], "host b after run: %s" % revs)
    for r in revs:
        name = r["image"].split("/")[1]
        exp = rbd_export_sha("rbd/%s@%s" % (name, snap_name(store, r["id"])))
        check(restore_file_sha(store, "%s@%d" % (r["image"], r["id"])) == exp, "restore of %s" % r["image"])
    bad = os.path.join(TMP, "rados-batch-bad.conf")
    with open(bad, "w") as f:
        f.write("[store]\npath = %s\nindex-dir = /tmp/x\n\n[job.rbatch]\npool = rbd\n" % os.path.join(TMP, "dir"))
    _, err = run("run", "--config", bad, rc=EXIT_USAGE)
    check("only for path = rados:POOL" in err, "index-dir with a directory store: %r" % err)
    for n in ("rbatch-0", "rbatch-1"):
        c.remove("rbd", n)


def scenario_rados_copy(c):
    """rbdvault copy between a directory store and a RADOS store, both ways: killed after a commit
    and resumed; every copied revision restores as `rbd export` of its snapshot; a second copy
    copies nothing; a batch [copy] step into the RADOS store."""
    import random
    rng = random.Random(int(os.environ.get("RBDVAULT_SEED", random.randrange(1 << 31))))
    local = new_store("copy-local", kind="dir")
    offsite = new_store("copy-offsite", kind="rados")
    back = new_store("copy-back", kind="dir")
    history = cli_test.make_history(c, local, "rcp-img", 4, rng)
    to_rados = ["copy", "--from", local, "--to", offsite, "--store-conf", STORE_CONF,
                "--to-index-dir", cli_test.index_dir(offsite)]
    cli_test.run_killed_at("revision.committed:2", *to_rados)
    check(len(run_json("ls", "--store", offsite)) == 2, "a kill after 2 commits must leave 2 revisions")
    out = run_json(*to_rados)
    check(out["revisions_copied"] == 2, "the resumed copy: %s" % out)
    check(run_json(*to_rados)["revisions_copied"] == 0, "a second copy copied something")
    remote = run_json("ls", "--store", offsite)
    check(len(remote) == 4, "offsite: %s" % remote)
    exports = [history[k] for k in sorted(history)]
    for r, exp in zip(remote, exports):
        check(restore_file_sha(offsite, "rbd/rcp-img@%d" % r["id"]) == exp, "offsite revision %d" % r["id"])
    # And back: RADOS -> a directory, restoring the same bytes.
    run_json("copy", "--from", offsite, "--to", back, "--store-conf", STORE_CONF,
             "--from-index-dir", cli_test.index_dir(offsite))
    for r, exp in zip(run_json("ls", "--store", back), exports):
        check(restore_file_sha(back, "rbd/rcp-img@%d" % r["id"]) == exp, "copied back revision %d" % r["id"])
    _, err = run("copy", "--from", local, "--to", back, "--to-index-dir", "/tmp/x", rc=EXIT_USAGE)
    check("only for a rados:POOL store" in err, "--to-index-dir for a directory: %r" % err)
    # The batch step: [copy] to = rados:... with the target cluster's own conf (the [copy] keys).
    conf = os.path.join(TMP, "rados-copy.conf")
    batch_offsite = new_store("copy-batch", kind="rados")
    with open(conf, "w") as f:
        f.write("[ceph]\nconf = %s\n\n[store]\npath = %s\n\n[defaults]\nschedule = every 24h\n\n"
                "[job.rc]\npool = rbd\ninclude = rcp-*\n\n[copy]\nto = %s\nconf = %s\nindex-dir = %s\n"
                % (cli_test.CONF, local, batch_offsite, STORE_CONF, cli_test.index_dir(batch_offsite)))
    out, _ = run("run", "--config", conf, "--force", "--format", "json")
    report = cli_test.json.loads(out)
    check(report["copy"]["result"] == "ok" and report["copy"]["revisions_copied"] == 5, "batch copy: %s" % report.get("copy"))
    latest = run_json("ls", "--store", local)[-1]
    got = run_json("ls", "--store", batch_offsite)
    check(len(got) == 5, "batch offsite: %s" % got)
    exp = rbd_export_sha("rbd/rcp-img@%s" % snap_name(local, latest["id"]))
    check(restore_file_sha(batch_offsite, "rbd/rcp-img@%d" % got[-1]["id"]) == exp, "batch copy's newest revision")
    c.remove("rbd", "rcp-img")


def scenario_rados_serving_host(c):
    """A host serving the store (a long reader holds its index) while another host backs up: the
    serving host keeps answering from what it opened; its other commands cannot bring the index up
    to date under the server and are refused (exit 4, one line naming the server's pid) rather than
    shown a view without the newest revision; once the server ends they see it, byte for byte."""
    import serve_test  # noqa: PLC0415 - its Served helper, only for this scenario
    store = new_store("serving_host", kind="rados")
    fresh_host_dirs("sa", "sb")
    c.create("rbd", "sh-img", 8 << 20, FEATURES_FASTDIFF)
    with c.image("rbd", "sh-img") as img:
        img.write(os.urandom(1 << 20), 0)
    r1 = run_json("backup", *host(store, "sa"), "rbd/sh-img")["revision"]
    s = serve_test.Served(store, "127.0.0.1:0", *host(store, "sb")[2:])
    try:
        with c.image("rbd", "sh-img") as img:
            img.write(os.urandom(1 << 20), 4 << 20)
        r2 = run_json("backup", *host(store, "sa"), "rbd/sh-img")["revision"]
        _, err = run("ls", *host(store, "sb"), rc=cli_test.EXIT_LOCKED)
        errors = [l for l in err.splitlines() if l.startswith("rbdvault: error:")]
        check(len(errors) == 1 and "another host wrote" in errors[0] and "pid %d" % s.p.pid in errors[0],
              "ls on the serving host: %r" % err)
        st, _, _ = s.request("HEAD", "/v1/raw/rbd/sh-img/%d" % r1)
        check(st == 200, "the server must keep answering: %d" % st)
        s.stop()
    finally:
        s.abandon()
    check([r["id"] for r in run_json("ls", *host(store, "sb"))] == [r1, r2], "host sb after the server ended")
    exp = rbd_export_sha("rbd/sh-img@" + snap_name(store, r2))
    path = os.path.join(TMP, "sh-%d.raw" % r2)
    run("restore", *host(store, "sb"), "rbd/sh-img@%d" % r2, "--to-file", path, "-q")
    check(cli_test.file_sha(path) == exp, "host sb restores revision %d differently from rbd export" % r2)
    os.unlink(path)
    c.remove("rbd", "sh-img")
def start_paused(step, *args, env_extra=None):
    """Starts rbdvault ARGS holding only the thread that passes STEP (RBDVAULT_PAUSE_AT: its lease
    renewer goes on); returns the Popen and the pause file once it waits there. Removing the file
    lets it go on."""
    pause = os.path.join(TMP, "pause-%d-%d" % (os.getpid(), random.randrange(1 << 30)))
    env = dict(os.environ, RBDVAULT_PAUSE_AT=step, RBDVAULT_PAUSE_FILE=pause, **(env_extra or {}))
    p = subprocess.Popen([RBDVAULT] + cli_test.with_conf(args), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, env=env, stdin=subprocess.DEVNULL)
    wait_for(lambda: p.poll() is not None or os.path.exists(pause), "rbdvault to pause at " + step)
    if p.poll() is not None:
        raise cli_test.Failure("rbdvault exited %s before reaching %s: %s" % (p.returncode, step, p.stderr.read()))
    return p, pause


def writer_lockers(store):
    """Cookies of the holders of the pool's writer lease, read with the rados CLI."""
    pool, _, ns = store[len("rados:"):].partition("/")
    out = subprocess.run(["rados", "-c", STORE_CONF, "-p", pool, "--namespace", ns, "lock", "info",
                          "rbdvault.store", "rbdvault.writer"], capture_output=True, text=True, timeout=120)
    if out.returncode != 0:
        return []
    return [l["cookie"] for l in cli_test.json.loads(out.stdout).get("lockers", [])]


def readers_lockers(store):
    """Cookies of the holders of the pool's reader lease (lock rbdvault.readers on the marker),
    read with the rados CLI: independent of rbdvault."""
    pool, _, ns = store[len("rados:"):].partition("/")
    out = subprocess.run(["rados", "-c", STORE_CONF, "-p", pool, "--namespace", ns, "lock", "info",
                          "rbdvault.store", "rbdvault.readers"], capture_output=True, text=True, timeout=120)
    if out.returncode != 0:
        return []
    info = cli_test.json.loads(out.stdout)
    return [l["cookie"] for l in info.get("lockers", [])]


def backup_with_sha(store, name, who):
    """Backs up rbd/NAME on host a; returns (revision, sha of rbd export of its snapshot): the
    snapshot goes with the next backup."""
    rev = run_json("backup", *host(store, who), "rbd/" + name)["revision"]
    return rev, rbd_export_sha("rbd/%s@%s" % (name, snap_name(store, rev)))


def gc_readers_history(c, store, name, who):
    """Three revisions of a 64 MiB image; r1's first 4 MiB are overwritten by r2, so once r1 is
    forgotten its pack holds dead and live chunks (gc rewrites it). The live ones sit at the end of
    the image: a restore paused after its first write reads them after the pause."""
    c.create("rbd", name, 64 << 20, FEATURES_FASTDIFF)
    revs = []
    with c.image("rbd", name) as img:
        img.write(os.urandom(8 << 20), 0)
        img.write(os.urandom(16 << 20), 48 << 20)
    revs.append(backup_with_sha(store, name, who))
    with c.image("rbd", name) as img:
        img.write(os.urandom(4 << 20), 0)
    revs.append(backup_with_sha(store, name, who))
    with c.image("rbd", name) as img:
        img.write(os.urandom(1 << 20), 20 << 20)
    revs.append(backup_with_sha(store, name, who))
    return revs


def gc_once_the_lease_expires(store, host_name, what):
    """Runs gc on host_name until a reader's lease it is refused for (exit 4) expires; returns the
    JSON of the gc that ran."""
    return json_once_not_locked(["gc", *host(store, host_name), "--max-unused", "0"], what, timeout=300, interval=1)


def scenario_rados_gc_readers(c):
    """gc on host a while a restore on host b reads: refused at once (exit 4) naming the reader,
    nothing deleted; the reader finishes and matches rbd export; then gc runs. A reader killed
    outright: gc is refused until its lease expires, then runs."""
    store = new_store("gc_readers", kind="rados")
    fresh_host_dirs("gr-a", "gr-b")
    (r1, _), (r2, exp2), (r3, _) = gc_readers_history(c, store, "gr-img", "gr-a")
    run("forget", *host(store, "gr-a"), "rbd/gr-img@%d" % r1, "-q")
    out = os.path.join(TMP, "gr-restore")
    for leftover in (out, os.path.join(TMP, "gr-after")):  # of an earlier run that failed
        if os.path.exists(leftover):
            os.unlink(leftover)
    reader, pause = start_paused("restore.write", "restore", *host(store, "gr-b"), "rbd/gr-img@%d" % r2,
                                 "--to-file", out, "-q")
    try:
        holders = readers_lockers(store)
        check(any("pid %d " % reader.pid in h and "restore" in h for h in holders),
              "the paused restore holds the reader lease: %s" % holders)
        before = rados_objects(store)
        _, err = run("gc", *host(store, "gr-a"), "--max-unused", "0", rc=EXIT_LOCKED)
        last = err.strip().splitlines()[-1]
        check(last.startswith("rbdvault: error: ") and "being read" in last and "pid %d " % reader.pid in last and
              "rbdvault restore " in last and "rbd/gr-img@%d" % r2 in last and "host " in last, "gc's refusal must name the reader: %r" % err)
        check(rados_objects(store) == before, "the refused gc changed the pool")
    finally:
        os.unlink(pause)
    _, err = reader.communicate(timeout=600)
    check(reader.returncode == 0, "the reader after the refused gc: exit %d: %s" % (reader.returncode, err))
    check(cli_test.file_sha(out) == exp2, "restore read alongside gc differs from rbd export")
    os.unlink(out)
    check(readers_lockers(store) == [], "the reader lease outlived its reader: %s" % readers_lockers(store))
    before = rados_objects(store, "data/")
    g = run_json("gc", *host(store, "gr-a"), "--max-unused", "0")
    check(g["packs_deleted"] + g["packs_rewritten"] > 0 and rados_objects(store, "data/") != before,
          "gc after the reader did nothing: %s" % g)
    got = os.path.join(TMP, "gr-after")
    run("restore", *host(store, "gr-b"), "rbd/gr-img@%d" % r2, "--to-file", got, "-q")
    check(cli_test.file_sha(got) == exp2, "host b's restore after gc differs from rbd export")
    os.unlink(got)

    # A reader killed outright renews nothing; its lease (RBDVAULT_RADOS_LEASE_SECONDS, long enough
    # that the first gc surely comes before it ends) expires and gc goes on.
    with c.image("rbd", "gr-img") as img:
        img.write(os.urandom(1 << 20), 20 << 20)  # what r3 alone held: its pack goes with r3
    r4, exp4 = backup_with_sha(store, "gr-img", "gr-a")
    run("forget", *host(store, "gr-a"), "rbd/gr-img@%d" % r3, "-q")
    reader, pause = start_paused("restore.write", "restore", *host(store, "gr-b"), "rbd/gr-img@%d" % r4, "--to-file",
                                 out, "-q", env_extra={"RBDVAULT_RADOS_LEASE_SECONDS": "60"})
    dead = reader.pid
    reader.kill()
    reader.communicate(timeout=60)
    os.unlink(pause)
    check(reader.returncode == -signal.SIGKILL, "the reader was not killed: %s" % reader.returncode)
    check(any("pid %d " % dead in h for h in readers_lockers(store)), "the dead reader's lease is gone already")
    before = rados_objects(store)
    _, err = run("gc", *host(store, "gr-a"), "--max-unused", "0", rc=EXIT_LOCKED)
    check("pid %d " % dead in err.strip().splitlines()[-1], "gc's refusal must name the dead reader: %r" % err)
    check(rados_objects(store) == before, "the refused gc changed the pool")
    gc = gc_once_the_lease_expires(store, "gr-a", "the killed reader's lease to expire")
    check(gc["packs_deleted"] + gc["packs_rewritten"] > 0, "gc after expiry: %s" % gc)
    run("restore", *host(store, "gr-b"), "rbd/gr-img@%d" % r4, "--to-file", out, "-q")
    check(cli_test.file_sha(out) == exp4, "restore after the last gc differs from rbd export")
    os.unlink(out)
    check(run_json("scrub", *host(store, "gr-b"), "--deep")["clean"], "scrub after gc")
    c.remove("rbd", "gr-img")


def scenario_rados_reader_lease_lost(c):
    """A reader frozen past its lease loses it: gc on another host then runs; the reader, continued,
    stops at its next pack read with a clear error (exit 4), not with data gc removed reported as
    missing or damaged, and publishes nothing."""
    store = new_store("reader_lost", kind="rados")
    fresh_host_dirs("rl-a", "rl-b")
    (r1, _), (r2, exp2), _ = gc_readers_history(c, store, "rl-img", "rl-a")
    run("forget", *host(store, "rl-a"), "rbd/rl-img@%d" % r1, "-q")
    out = os.path.join(TMP, "rl-restore")
    if os.path.exists(out):  # of an earlier run that failed
        os.unlink(out)
    # Short, so gc need not wait long (it was 6 s). Renewed every 4 s and refused 2 s before its end,
    # so only a stall of the machine of 6 s or more could take it from the reader before its stop
    # point (the check below would then fail, never pass wrongly).
    short = {"RBDVAULT_RADOS_LEASE_SECONDS": "12"}
    env = dict(os.environ, RBDVAULT_STOP_AT="restore.write", **short)
    reader = subprocess.Popen([RBDVAULT] + cli_test.with_conf(["restore", *host(store, "rl-b"), "rbd/rl-img@%d" % r2,
                                                               "--to-file", out, "-q"]),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                              stdin=subprocess.DEVNULL)
    try:
        wait_for(lambda: reader.poll() is not None or cli_test.process_stopped(reader.pid), "the reader to stop")
        check(reader.poll() is None, "the reader exited before its stop point")
        gc = gc_once_the_lease_expires(store, "rl-a", "the frozen reader's lease to expire")
        check(gc["packs_deleted"] + gc["packs_rewritten"] > 0, "gc did nothing: %s" % gc)
    finally:
        reader.send_signal(signal.SIGCONT)
    _, err = reader.communicate(timeout=300)
    last = err.strip().splitlines()[-1] if err.strip() else ""
    check(reader.returncode == EXIT_LOCKED and last.startswith("rbdvault: error: ") and "reader lease" in last,
          "the frozen reader: exit %d: %r" % (reader.returncode, err))
    check(not os.path.exists(out), "the reader that lost its lease published a restore")
    check(restore_file_sha(store, "rbd/rl-img@%d" % r2) == exp2, "restore after gc")
    c.remove("rbd", "rl-img")


def scenario_rados_rebuild_vs_forget(c):
    """Host b brings its index up to date while host a forgets a revision: the manifests b listed
    are replaced under it (the successor's new generation, the old ones removed). Not damage: b
    rebuilds again and sees the store as it is, restores match rbd export."""
    store = new_store("rebuild_forget", kind="rados")
    fresh_host_dirs("rvf-a", "rvf-b")
    (r1, _), (r2, exp2), (r3, exp3) = gc_readers_history(c, store, "rvf-img", "rvf-a")
    held = start_held("rebuild.manifests_listed", "ls", *host(store, "rvf-b"), "--format", "json")
    try:
        run("forget", *host(store, "rvf-a"), "rbd/rvf-img@%d" % r1, "-q")
    finally:
        held.send_signal(signal.SIGCONT)
    # The rebuild starts over (a new listing, the same stop point passed again): let it go on.
    restarts = 0
    while True:
        wait_for(lambda: held.poll() is not None or cli_test.process_stopped(held.pid), "ls on host b to end")
        if held.poll() is not None:
            break
        restarts += 1
        check(restarts <= 3, "host b's rebuild keeps starting over")
        held.send_signal(signal.SIGCONT)
    out, err = held.communicate(timeout=600)
    check(restarts >= 1 and "rebuilding again" in err, "host b did not rebuild again: %s" % err)
    check(held.returncode == 0, "ls on host b while a forgot: exit %d: %s" % (held.returncode, err))
    check([x["id"] for x in cli_test.json.loads(out)] == [r2, r3], "host b's view after the race: %s" % out)
    for rev, exp in ((r2, exp2), (r3, exp3)):
        got = os.path.join(TMP, "rf-%d" % rev)
        run("restore", *host(store, "rvf-b"), "rbd/rvf-img@%d" % rev, "--to-file", got, "-q")
        check(cli_test.file_sha(got) == exp, "host b restores revision %d differently" % rev)
        os.unlink(got)
    c.remove("rbd", "rvf-img")


def scenario_rados_refresh_writer_dies(c):
    """Host b brings its index up to date while host a writes: a commits after b listed the pool
    and dies before b ends, so at b's end the epoch is unchanged and no writer holds the lease. b
    must not take its index for the pool's: its next command sees a's revision (before, it never
    did, and b's next writer removed that revision's pack as uncommitted)."""
    store = new_store("refresh_dies", kind="rados")
    fresh_host_dirs("rd-a", "rd-b", "rd-c")
    c.create("rbd", "rd-img", 16 << 20, FEATURES_FASTDIFF)
    with c.image("rbd", "rd-img") as img:
        img.write(os.urandom(4 << 20), 0)
    r1 = run_json("backup", *host(store, "rd-a"), "rbd/rd-img")["revision"]
    with c.image("rbd", "rd-img") as img:
        img.write(os.urandom(4 << 20), 8 << 20)
    # 12 s: renewed every 4 s, a's lease survives a renewal 6 s late while b starts on a loaded host.
    lease = {"RBDVAULT_RADOS_LEASE_SECONDS": "12", "RBDVAULT_CRASH_AT": "revision.committed"}
    writer, pause = start_paused("revision.begun", "backup", *host(store, "rd-a"), "rbd/rd-img", env_extra=lease)
    try:
        reader = start_held("rebuild.manifests_listed", "ls", *host(store, "rd-b"), "--format", "json")
    finally:
        os.unlink(pause)
    writer.communicate(timeout=600)
    check(writer.returncode == -signal.SIGKILL, "host a was not killed after its commit: %s" % writer.returncode)
    # a's lease (12 s) runs out while b is still held: waited for on the cluster, not for a time.
    wait_for(lambda: not writer_lockers(store), "host a's writer lease to expire")
    reader.send_signal(signal.SIGCONT)
    out, err = reader.communicate(timeout=600)
    check(reader.returncode == 0, "ls on host b: exit %d: %s" % (reader.returncode, err))
    check([x["id"] for x in cli_test.json.loads(out)] == [r1], "host b's held listing: %s" % out)
    revs = [x["id"] for x in run_json("ls", *host(store, "rd-b"))]
    check(len(revs) == 2 and revs[0] == r1, "host b does not see the revision host a committed: %s" % revs)
    r2 = revs[1]
    # b's writer after that must keep a's revision: a restore from a fresh host c matches rbd export.
    c.create("rbd", "rd-other", 4 << 20, FEATURES_FASTDIFF)
    run("backup", *host(store, "rd-b"), "rbd/rd-other", "-q")
    got = os.path.join(TMP, "rd-%d.raw" % r2)
    run("restore", *host(store, "rd-c"), "rbd/rd-img@%d" % r2, "--to-file", got, "-q")
    check(cli_test.file_sha(got) == rbd_export_sha("rbd/rd-img@" + snap_name(store, r2)),
          "revision %d restores wrongly after host b wrote" % r2)
    os.unlink(got)
    c.remove("rbd", "rd-img")
    c.remove("rbd", "rd-other")


def scenario_rados_writer_fenced(c):
    """Host a passed its lease check before committing its revision's manifest and then stalled
    (frozen) past its lease; host b took over and ran gc, which removed a's pack (no manifest names
    it). a's commit, sent when it goes on, must not land: it would be a revision without its data.
    b fences a off (blocklists its client) when it finds a's epoch unfinished; a then fails with
    exit 4, and the store holds no revision of a, scrubbed clean; a backup after it restores right."""
    store = new_store("writer_fenced", kind="rados")
    fresh_host_dirs("wf-a", "wf-b", "wf-c")
    c.create("rbd", "wf-img", 16 << 20, FEATURES_FASTDIFF)
    with c.image("rbd", "wf-img") as img:
        img.write(os.urandom(4 << 20), 0)
    env = dict(os.environ, RBDVAULT_STOP_AT="rados.commit_checked.manifests", RBDVAULT_RADOS_LEASE_SECONDS="6")
    writer = subprocess.Popen([RBDVAULT] + cli_test.with_conf(["backup", *host(store, "wf-a"), "rbd/wf-img", "-q"]),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                              stdin=subprocess.DEVNULL)
    try:
        wait_for(lambda: writer.poll() is not None or cli_test.process_stopped(writer.pid),
                 "host a to stop before its manifest's commit")
        check(writer.poll() is None, "host a exited before its manifest's commit: %s" % writer.returncode)
        wait_for(lambda: not writer_lockers(store), "host a's writer lease to lapse")
        # A reader on host b brings its index up to date first: it fences a off before it lists.
        p = subprocess.run([RBDVAULT] + cli_test.with_conf(["ls", *host(store, "wf-b"), "--format", "json"]),
                           capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL)
        check(p.returncode == 0 and "fenced off" in p.stderr,
              "ls on host b did not fence host a off: exit %d: %r" % (p.returncode, p.stderr))
        p = subprocess.run([RBDVAULT] + cli_test.with_conf(["gc", *host(store, "wf-b"), "--format", "json"]),
                           capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL)
        check(p.returncode == 0, "host b's gc: exit %d: %s" % (p.returncode, p.stderr))
    finally:
        writer.send_signal(signal.SIGCONT)
    _, err = writer.communicate(timeout=300)
    last = err.strip().splitlines()[-1] if err.strip() else ""
    check(writer.returncode == EXIT_LOCKED and last.startswith("rbdvault: error: ") and "fenced off" in last,
          "host a, continued after it was fenced off: exit %d: %r" % (writer.returncode, err))
    check(run_json("ls", *host(store, "wf-c")) == [], "host a's revision landed after it was fenced off")
    check(run_json("scrub", *host(store, "wf-c"), "--deep")["clean"], "scrub after host a went on")
    check(not uncommitted(store), "unfinished objects left: %s" % uncommitted(store))
    r = run_json("backup", *host(store, "wf-c"), "rbd/wf-img")["revision"]
    check(restore_file_sha(store, "rbd/wf-img@%d" % r) == rbd_export_sha("rbd/wf-img@" + snap_name(store, r)),
          "a backup after the fence restores wrongly")
    c.remove("rbd", "wf-img")

def pool_epoch(store):
    """The store's epoch (xattr rbdvault.epoch of its marker), read with python3-rados."""
    r, io = cli_test.backup_ioctx(store)
    try:
        return int(io.get_xattr("rbdvault.store", "rbdvault.epoch").decode())
    finally:
        io.close()
        r.shutdown()


def scenario_rados_index_dir_reused(c):
    """An index directory that holds store a's index is pointed at store b (same pool epoch, no
    removals), and that first refresh is killed after it recorded b's marker. The next command on
    b must bring the index up to date again, never take a's index for b's: before, what the
    directory recorded of a's pool (epoch, removals) matched b's, and b's commands would have shown
    (and restored) a's revisions."""
    a, b = new_store("reused_a", kind="rados"), new_store("reused_b", kind="rados")
    fresh_host_dirs("ir", "ir-b")
    for name in ("ir-a-img", "ir-b-img"):
        c.create("rbd", name, 8 << 20, FEATURES_FASTDIFF)
        with c.image("rbd", name) as img:
            img.write(os.urandom(2 << 20), 0)
    run("backup", *host(a, "ir"), "rbd/ir-a-img", "-q")
    rb = run_json("backup", *host(b, "ir-b"), "rbd/ir-b-img")["revision"]
    check(pool_epoch(a) == pool_epoch(b), "the two stores' epochs differ: %d, %d" % (pool_epoch(a), pool_epoch(b)))
    env = dict(os.environ, RBDVAULT_CRASH_AT="rebuild.manifests_listed")
    p = subprocess.run([RBDVAULT] + cli_test.with_conf(["ls", *host(b, "ir"), "--format", "json"]), env=env,
                       capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL)
    check(p.returncode == -signal.SIGKILL, "the refresh was not killed: exit %s: %s" % (p.returncode, p.stderr))
    want = run_json("ls", *host(b, "ir-b"))
    got = run_json("ls", *host(b, "ir"))
    check(got == want, "store b through the reused index directory: %s, expected %s" % (got, want))
    out = os.path.join(TMP, "ir-restore")
    if os.path.exists(out):
        os.unlink(out)
    run("restore", *host(b, "ir"), "rbd/ir-b-img@%d" % rb, "--to-file", out, "-q")
    check(cli_test.file_sha(out) == rbd_export_sha("rbd/ir-b-img@" + snap_name(b, rb)),
          "store b's revision restores wrongly through the reused index directory")
    os.unlink(out)
    c.remove("rbd", "ir-a-img")
    c.remove("rbd", "ir-b-img")


def pool_marker(store):
    """The text of the store's marker object in its pool."""
    r, io = cli_test.backup_ioctx(store)
    try:
        return io.read("rbdvault.store", 65536).decode()
    finally:
        io.close()
        r.shutdown()


def make_format_2(store, *hosts):
    """Rewrites the store's pool marker, and the copies in the hosts' index directories, as a
    format 2 store (one made by an rbdvault before patch chunks) has them."""
    text = pool_marker(store).replace("rbdvault-store 3\n", "rbdvault-store 2\n", 1)
    check(text.startswith("rbdvault-store 2\n"), "unexpected marker: %r" % text)
    r, io = cli_test.backup_ioctx(store)
    try:
        io.write_full("rbdvault.store", text.encode())  # the same length: rbdvault.size still holds
    finally:
        io.close()
        r.shutdown()
    for h in hosts:
        with open(os.path.join(TMP, "host-" + h, "rbdvault.store"), "w") as f:
            f.write(text)


def scenario_rados_format_2_moves(c):
    """A format 2 store in a pool (from before patch chunks) is moved to format 3 by `upgrade` and
    by its first writer, pool marker first (a writer killed right after it leaves its host's copy
    at 2, which the next command brings level), and stores patches from then on; another host whose
    index copy still says 2 follows the pool without reading again the packs it read before, and
    every revision restores as rbd export."""
    store = new_store("fmt2", kind="rados")
    fresh_host_dirs("f2-a", "f2-b")
    c.create("rbd", "f2-img", 8 << 20, FEATURES_FASTDIFF)
    with c.image("rbd", "f2-img") as img:
        img.write(os.urandom(4 << 20), 0)
    run("ls", *host(store, "f2-a"))
    make_format_2(store, "f2-a")
    j = run_json("upgrade", *host(store, "f2-a"))
    check(j["upgraded"] is True and pool_marker(store).startswith("rbdvault-store 3\n"),
          "upgrade of a format 2 pool: %s, marker %r" % (j, pool_marker(store)))
    revs = [run_json("backup", *host(store, "f2-a"), "rbd/f2-img")["revision"]]
    oracle = {revs[0]: rbd_export_sha("rbd/f2-img@" + snap_name(store, revs[0]))}  # gone with the next backup
    run("ls", *host(store, "f2-b"))  # host b has read revision 1's packs
    make_format_2(store, "f2-a", "f2-b")
    with c.image("rbd", "f2-img") as img:
        for off in range(0, 4 << 20, 256 << 10):
            img.write(os.urandom(4096), off + 8192)  # a page of many blocks: patches in format 3
    # Killed between the pool's marker and host a's copy: the next command follows the pool.
    rc, _ = cli_test.run_crashing("store.pool_marker_moved", "backup", *host(store, "f2-a"), "rbd/f2-img")
    check(rc == -signal.SIGKILL, "the planned kill did not land: %s" % rc)
    check(pool_marker(store).startswith("rbdvault-store 3\n"), "the killed writer did not move the pool marker")
    j = run_json("backup", *host(store, "f2-a"), "rbd/f2-img")
    check(pool_marker(store).startswith("rbdvault-store 3\n"), "the first writer left the pool marker at %r" %
          pool_marker(store))
    with open(os.path.join(TMP, "host-f2-a", "rbdvault.store")) as f:
        check(f.read() == pool_marker(store), "host a's copy of the marker differs from the pool's")
    check(j["patch_chunks"] > 0, "no patch chunks after the move to format 3: %s" % j)
    revs.append(j["revision"])
    oracle[revs[1]] = rbd_export_sha("rbd/f2-img@" + snap_name(store, revs[1]))
    # Host b's copy still says 2: the same store, so it keeps what it read and follows the pool.
    counts = refresh_counts(store, "f2-b")
    check(counts is not None and counts[1] > 0, "host b read every pack again after the move: %s" % (counts,))
    with open(os.path.join(TMP, "host-f2-b", "rbdvault.store")) as f:
        check(f.read() == pool_marker(store), "host b's copy of the marker did not follow the pool")
    check([x["id"] for x in run_json("ls", *host(store, "f2-b"))] == revs, "host b's revisions")
    for rev in revs:
        out = os.path.join(TMP, "f2-restore")
        if os.path.exists(out):
            os.unlink(out)
        run("restore", *host(store, "f2-b"), "rbd/f2-img@%d" % rev, "--to-file", out, "-q")
        check(cli_test.file_sha(out) == oracle[rev], "revision %d restores differently from rbd export" % rev)
        os.unlink(out)
    check(run_json("scrub", *host(store, "f2-b"), "--deep")["clean"], "scrub after the move")
    c.remove("rbd", "f2-img")


SCENARIOS = {
    "rados_format_2_moves": scenario_rados_format_2_moves,
    "rados_serving_host": scenario_rados_serving_host,
    "rados_two_hosts": scenario_rados_two_hosts,
    "rados_refresh": scenario_rados_refresh,
    "rados_lease": scenario_rados_lease,
    "rados_osd_stop": scenario_rados_osd_stop,
    "rados_bad_input": scenario_rados_bad_input,
    "rados_batch": scenario_rados_batch,
    "rados_copy": scenario_rados_copy,
    "rados_gc_readers": scenario_rados_gc_readers,
    "rados_reader_lease_lost": scenario_rados_reader_lease_lost,
    "rados_rebuild_vs_forget": scenario_rados_rebuild_vs_forget,
    "rados_refresh_writer_dies": scenario_rados_refresh_writer_dies,
    "rados_writer_fenced": scenario_rados_writer_fenced,
    "rados_index_dir_reused": scenario_rados_index_dir_reused,
}


if __name__ == "__main__":
    sys.exit(cli_test.main(SCENARIOS, "rados_test.py"))
