#!/usr/bin/python3
"""Opening revisions in place (issue 14): `rbdvault mount` and `rbdvault fsck` against the test
cluster, with real partitioned disks (GPT, ext4 + xfs) built from files without root mounts.

Run one scenario: mount_test.py NAME (environment as cli_test.py). Needs /dev/fuse, fusermount3,
sfdisk, mkfs.ext4 (-d), mkfs.xfs, e2fsck, xfs_repair, and root for `mount -o ro,loop`.
"""

import os
import signal
import subprocess
import sys

import cli_test
from cli_test import (CONF, EXIT_NOT_FOUND, EXIT_USAGE, RBDVAULT, TMP, check, log, new_store, run, run_json,
                      wait_for)

SECTOR = 512
P1_START, P1_SECTORS = 2048, 65536        # 32 MiB ext4
P2_START, P2_SECTORS = 67584, 192512      # 94 MiB xfs
DISK = 128 << 20
CHUNK = 64 << 10


def sh(*cmd, env=None):
    p = subprocess.run(cmd, capture_output=True, text=True, env=env)
    check(p.returncode == 0, "%s: exit %d: %s%s" % (" ".join(cmd), p.returncode, p.stdout, p.stderr))
    return p.stdout


def ext4_image(work, tag, text):
    """A 32 MiB ext4 file system holding hello.txt = text and a fixed 300 KB blob (mkfs.ext4 -d)."""
    src = os.path.join(work, "src-" + tag)
    os.makedirs(src, exist_ok=True)
    with open(os.path.join(src, "hello.txt"), "w") as f:
        f.write(text)
    with open(os.path.join(src, "blob.bin"), "wb") as f:
        f.write(bytes((i * 7919) % 251 for i in range(300000)))
    path = os.path.join(work, "p1-%s.img" % tag)
    if os.path.exists(path):
        os.unlink(path)
    sh("mkfs.ext4", "-q", "-d", src, "-L", "root", path, str(P1_SECTORS * SECTOR // 1024))
    with open(path, "rb") as f:
        return f.read()


def xfs_image(work):
    path = os.path.join(work, "p2.img")
    with open(path, "wb") as f:
        f.truncate(P2_SECTORS * SECTOR)
    # mkfs.xfs refuses file systems under 300 MB unless it believes it runs under fstests.
    sh("mkfs.xfs", "-q", "-f", "-L", "data", path, env=dict(os.environ, TEST_DIR="1", TEST_DEV="1", QA_CHECK_FS="1"))
    with open(path, "rb") as f:
        return f.read()


def make_disk(work, p1):
    """The bytes of a GPT disk with p1 (ext4) and an xfs partition 2."""
    path = os.path.join(work, "disk.img")
    with open(path, "wb") as f:
        f.truncate(DISK)
    sh("sh", "-c", "printf 'label: gpt\\nstart=%d, size=%d, type=L\\nstart=%d, size=%d, type=L\\n' | sfdisk -q %s" %
       (P1_START, P1_SECTORS, P2_START, P2_SECTORS, path))
    with open(path, "rb") as f:
        disk = bytearray(f.read())
    disk[P1_START * SECTOR:P1_START * SECTOR + len(p1)] = p1
    p2 = xfs_image(work)
    disk[P2_START * SECTOR:P2_START * SECTOR + len(p2)] = p2
    return disk


def write_changes(c, name, old, new):
    """Writes the 64 KiB chunks of `new` that differ from `old` (None: every non-zero one) to rbd/NAME."""
    with c.image("rbd", name) as img:
        for off in range(0, len(new), CHUNK):
            chunk = bytes(new[off:off + CHUNK])
            if (old is None and chunk.count(0) != len(chunk)) or (old is not None and chunk != old[off:off + CHUNK]):
                img.write(chunk, off)


def setup_disk(c, store, name, work):
    """rbd/NAME with the v1 disk, backed up; returns (v1 bytes, revision id)."""
    os.makedirs(work, exist_ok=True)
    v1 = make_disk(work, ext4_image(work, "v1", "version one\n"))
    c.create("rbd", name, DISK, cli_test.FEATURES_FASTDIFF)
    write_changes(c, name, None, v1)
    return v1, run_json("backup", "--store", store, "rbd/" + name)["revision"]


def sha(data):
    import hashlib
    return hashlib.sha256(data).hexdigest()


def file_bytes(path):
    with open(path, "rb") as f:
        return f.read()


class Mounted:
    """`rbdvault mount` running in the foreground, as a child process."""

    def __init__(self, store, mp, *extra):
        os.makedirs(mp, exist_ok=True)
        self.mp = mp
        self.p = subprocess.Popen([RBDVAULT] + cli_test.with_conf(["mount", "--store", store, mp, *extra]),
                                  stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)
        wait_for(lambda: self.p.poll() is not None or os.path.ismount(mp), "the mount on " + mp)
        if self.p.poll() is not None:
            check(False, "mount exited %s: %s" % (self.p.returncode, self.p.stderr.read()))

    def abandon(self):
        """After a failure: never leave a mount (or its process) behind."""
        if self.p.poll() is None:
            self.p.kill()
            self.p.wait()
        subprocess.run(["fusermount3", "-u", "-z", self.mp], capture_output=True)

    def end(self, how):
        if how == "fusermount":
            sh("fusermount3", "-u", self.mp)
        else:
            self.p.send_signal(how)
        rc = self.p.wait(timeout=60)
        check(rc == 0, "mount ended by %s exited %d: %s" % (how, rc, self.p.stderr.read()))
        check(not os.path.ismount(self.mp), "%s still mounted after %s" % (self.mp, how))


def data_segments(path):
    """(offset, length) of the data SEEK_DATA/SEEK_HOLE report, walking the whole file."""
    segs = []
    fd = os.open(path, os.O_RDONLY)
    try:
        size, off = os.fstat(fd).st_size, 0
        while off < size:
            try:
                start = os.lseek(fd, off, os.SEEK_DATA)
            except OSError as e:
                check(e.errno == 6, "SEEK_DATA: %s" % e)  # ENXIO: no data after off
                break
            end = os.lseek(fd, start, os.SEEK_HOLE)
            check(end > start, "SEEK_HOLE from data offset %d returned %d" % (start, end))
            segs.append((start, end - start))
            off = end
    finally:
        os.close(fd)
    return segs


def check_sparse(path, expected):
    """The data segments cover every non-zero block, holes are only zeros, and there is a hole."""
    segs = data_segments(path)
    covered = sum(n for _, n in segs)
    check(0 < covered < len(expected), "data segments cover %d of %d bytes: no hole reported" % (covered, len(expected)))
    rebuilt = bytearray(len(expected))
    with open(path, "rb") as f:
        for off, n in segs:
            check(off % CHUNK == 0, "data segment at %d is not block-aligned" % off)
            f.seek(off)
            rebuilt[off:off + n] = f.read(n)
    check(sha(rebuilt) == sha(expected), "the file rebuilt from its data segments differs: a hole hides data")
    return segs


def scenario_mount_file_back(c):
    store = new_store("mount-store")
    work, mp = os.path.join(TMP, "mount-work"), os.path.join(TMP, "mount-mp")
    v1, r1 = setup_disk(c, store, "mount-img", work)
    v2 = bytearray(v1)
    p1 = ext4_image(work, "v2", "version two, a different text\n")
    v2[P1_START * SECTOR:P1_START * SECTOR + len(p1)] = p1
    write_changes(c, "mount-img", v1, v2)
    r2 = run_json("backup", "--store", store, "rbd/mount-img")["revision"]
    m = Mounted(store, mp)
    try:
        check_mounted(c, store, m, work, (v1, r1), (v2, r2))
    except BaseException:
        m.abandon()
        raise
    # SIGTERM and SIGINT end it cleanly too; the image filter shows only that image.
    for sig in (signal.SIGTERM, signal.SIGINT):
        m = Mounted(store, mp, "rbd/mount-img")
        try:
            check(os.listdir(mp) == ["rbd"] and os.listdir(os.path.join(mp, "rbd")) == ["mount-img"], "filtered mount")
        except BaseException:
            m.abandon()
            raise
        m.end(sig)
    run("mount", "--store", store, os.path.join(TMP, "no-such-dir"), rc=EXIT_NOT_FOUND)
    run("mount", "--store", store, mp, "rbd/not-backed-up", rc=EXIT_NOT_FOUND)
    run("mount", "--store", work, mp, rc=EXIT_USAGE)
    run("mount", "--store", store, mp, "--cache-size", "lots", rc=EXIT_USAGE)
    run("mount", "--store", store, rc=EXIT_USAGE)
    c.remove("rbd", "mount-img")


def check_mounted(c, store, m, work, rev1, rev2):
    (v1, r1), (v2, r2) = rev1, rev2
    mp, loop_mp = m.mp, os.path.join(TMP, "mount-loop")
    img = os.path.join(mp, "rbd", "mount-img")
    names = sorted(os.listdir(img))
    check(names == sorted([str(r1), "%d.parts" % r1, str(r2), "%d.parts" % r2, "latest"]), "listing: %s" % names)
    check(os.readlink(os.path.join(img, "latest")) == str(r2), "latest -> %s" % os.readlink(os.path.join(img, "latest")))
    check(sorted(os.listdir(os.path.join(img, "%d.parts" % r1))) == ["1", "2"], "partitions of r1")
    for rev, want in ((r1, v1), (r2, v2)):
        check(sha(file_bytes(os.path.join(img, str(rev)))) == sha(want), "revision %d reads differently" % rev)
    # The oracle outside rbdvault: the newest revision's snapshot still exists; rbd export of it.
    exported = cli_test.rbd_export_sha("rbd/mount-img@" + cli_test.snap_name(store, r2))
    check((sha(file_bytes(os.path.join(img, str(r2)))), os.path.getsize(os.path.join(img, str(r2)))) == exported,
          "revision %d through the mount differs from rbd export of its snapshot" % r2)
    check(os.path.getsize(os.path.join(img, "%d.parts/1" % r1)) == P1_SECTORS * SECTOR, "size of partition 1")
    # The "done when": a file copied out of the OLD revision's ext4 partition with mount + cp.
    os.makedirs(loop_mp, exist_ok=True)
    sh("mount", "-o", "ro,loop", os.path.join(img, "%d.parts/1" % r1), loop_mp)
    try:
        out = os.path.join(work, "hello-copy.txt")
        sh("cp", os.path.join(loop_mp, "hello.txt"), out)
        check(file_bytes(out) == b"version one\n", "hello.txt of r1: %r" % file_bytes(out))
        check(file_bytes(os.path.join(loop_mp, "blob.bin")) == file_bytes(os.path.join(work, "src-v1", "blob.bin")),
              "blob.bin of r1")
    finally:
        sh("umount", loop_mp)
    segs = check_sparse(os.path.join(img, str(r1)), v1)
    log("r1: %d data segments, %d of %d bytes" % (len(segs), sum(n for _, n in segs), len(v1)))
    # A revision committed while mounted appears (the directory is reread after its TTL).
    with c.image("rbd", "mount-img") as i:
        i.write(b"third", P2_START * SECTOR + (40 << 20))
    r3 = run_json("backup", "--store", store, "rbd/mount-img")["revision"]
    wait_for(lambda: str(r3) in os.listdir(img), "revision %d in the mount" % r3, timeout=60)
    wait_for(lambda: os.readlink(os.path.join(img, "latest")) == str(r3), "latest -> %d" % r3, timeout=60)
    v3 = bytearray(v2)
    v3[P2_START * SECTOR + (40 << 20):P2_START * SECTOR + (40 << 20) + 5] = b"third"
    check(sha(file_bytes(os.path.join(img, str(r3)))) == sha(v3), "revision %d reads differently" % r3)
    m.end("fusermount")


def fsck_json(store, spec, rc):
    import json
    out, _ = run("fsck", "--store", store, spec, "--format", "json", rc=rc)
    return json.loads(out)


def scenario_fsck(c):
    store = new_store("fsck-store")
    work = os.path.join(TMP, "fsck-work")
    v1, r1 = setup_disk(c, store, "fsck-img", work)
    j = fsck_json(store, "rbd/fsck-img@%d" % r1, 0)
    got = [(f["where"], f["type"], f["state"]) for f in j["filesystems"]]
    check(got == [("part 1", "ext4", "OK"), ("part 2", "xfs", "OK")], "clean fsck: %s" % j)
    out, _ = run("fsck", "--store", store, "rbd/fsck-img")
    check(len(out.splitlines()) == 2 and all(l.startswith("OK ") for l in out.splitlines()), "plain: %r" % out)
    # Damage the ext4 superblock (all before its magic at 0x38, which stays) in a later revision.
    sb = P1_START * SECTOR + 1024
    with c.image("rbd", "fsck-img") as i:
        i.write(b"\xff" * 0x38, sb)
    r2 = run_json("backup", "--store", store, "rbd/fsck-img")["revision"]
    j = fsck_json(store, "rbd/fsck-img@%d" % r2, 2)
    got = [(f["where"], f["type"], f["state"]) for f in j["filesystems"]]
    check(got == [("part 1", "ext4", "CRITICAL"), ("part 2", "xfs", "OK")] and j["state"] == "CRITICAL",
          "damaged superblock: %s" % j)
    out, _ = run("fsck", "--store", store, "rbd/fsck-img", rc=2)
    check(out.startswith("CRITICAL rbd/fsck-img@%d part 1" % r2), "plain: %r" % out)
    fsck_json(store, "rbd/fsck-img@%d" % r1, 0)  # the old revision is still clean
    # A file system on the whole disk, no partition table.
    plain = ext4_image(work, "plain", "no table\n")
    c.create("rbd", "fsck-plain", len(plain), cli_test.FEATURES_FASTDIFF)
    write_changes(c, "fsck-plain", None, plain)
    run_json("backup", "--store", store, "rbd/fsck-plain")
    j = fsck_json(store, "rbd/fsck-plain", 0)
    check([(f["where"], f["type"]) for f in j["filesystems"]] == [("disk", "ext4")], "whole-disk ext4: %s" % j)
    ops = [o for o in run_json("log", "--store", store) if o["op"] == "fsck"]
    check([o["result"] for o in ops] == ["ok", "ok", "failed", "failed", "ok", "ok"], "fsck in the log: %s" % ops)
    # Its own errors are UNKNOWN (3) on stdout, like check.
    out, _ = run("fsck", "--store", store, "rbd/fsck-img@999", rc=3)
    check(out.startswith("RBDVAULT UNKNOWN"), "unknown revision: %r" % out)
    c.remove("rbd", "fsck-img")
    c.remove("rbd", "fsck-plain")


def scenario_fsck_batch(c):
    """`fsck = yes` in the batch config: the new revision's file systems are checked after the backup;
    a damaged one is reported (run, log, status, check, metrics) without failing the backup."""
    import json
    store = new_store("fsckb-store")
    work = os.path.join(TMP, "fsckb-work")
    v1, r1 = setup_disk(c, store, "fsckb-img", work)
    c.create("rbd", "fsckb-other", 4 << 20, cli_test.FEATURES_FASTDIFF)  # no fsck asked: none runs
    conf, prom = os.path.join(TMP, "fsckb.conf"), os.path.join(TMP, "fsckb-store.prom")
    with open(conf, "w") as f:
        f.write("[ceph]\nconf = %s\n\n[store]\n%smetrics-file = %s\n\n"
                "[defaults]\nschedule = every 24h\nretries = 0\n\n[job.disks]\npool = rbd\n"
                "include = fsckb-*\n\n[image.rbd/fsckb-img]\nfsck = yes\n" % (CONF, cli_test.store_conf_lines(store), prom))

    def batch(rc):
        out, _ = run("run", "--config", conf, "--force", "--format", "json", rc=rc)
        return {i["image"]: i for i in json.loads(out)["images"]}

    rep = batch(0)
    img, other = rep["rbd/fsckb-img"], rep["rbd/fsckb-other"]
    check(img["result"] == "ok" and img["fsck"] and img["fsck"]["state"] == "OK", "clean: %s" % img)
    check(other["result"] == "ok" and other["fsck"] is None, "fsck ran where not asked: %s" % other)
    ok_rev = img["revision"]
    out, _ = run("check", "--store", store, "--max-age", "1d")
    check(out.startswith("RBDVAULT OK"), "check after a clean fsck: %r" % out)
    # Damage the ext4 superblock in the image; the next run's revision fails its fsck.
    with c.image("rbd", "fsckb-img") as i:
        i.write(b"\xff" * 0x38, P1_START * SECTOR + 1024)
    img = batch(0)["rbd/fsckb-img"]  # the backup stands: a faithful copy of a damaged disk
    check(img["result"] == "ok" and img["revision"] > ok_rev, "backup of the damaged disk: %s" % img)
    check(img["fsck"]["state"] == "CRITICAL" and "part 1 ext4 CRITICAL" in img["fsck"]["summary"],
          "damaged superblock not reported: %s" % img)
    bad_rev = img["revision"]
    ops = [o for o in run_json("log", "--store", store) if o["op"] == "fsck"]
    check([(o["image"], o["result"]) for o in ops] ==
          [("rbd/fsckb-img@%d" % ok_rev, "ok"), ("rbd/fsckb-img@%d" % bad_rev, "failed")], "fsck log: %s" % ops)
    st = {s["image"]: s for s in run_json("status", "--store", store)}
    check(st["rbd/fsckb-img"]["fsck"]["state"] == "CRITICAL" and st["rbd/fsckb-other"]["fsck"] is None,
          "status: %s" % st)
    out, _ = run("check", "--store", store, "--max-age", "1d", rc=2)
    check(out.startswith("RBDVAULT CRITICAL") and "fsck" in out, "check after a failed fsck: %r" % out)
    with open(prom) as f:
        prom = f.read()
    check('rbdvault_fsck_state{image="rbd/fsckb-img"} 2' in prom and "fsckb-other\"} " not in
          "".join(l for l in prom.splitlines() if l.startswith("rbdvault_fsck_state")), "metrics: %s" % prom)
    # Repaired disk (v1's bytes back): the next revision is clean and check is OK again.
    write_changes(c, "fsckb-img", None, v1)
    img = batch(0)["rbd/fsckb-img"]
    check(img["fsck"]["state"] == "OK", "after the repair: %s" % img)
    out, _ = run("check", "--store", store, "--max-age", "1d")
    check(out.startswith("RBDVAULT OK"), "check after the repair: %r" % out)
    c.remove("rbd", "fsckb-img")
    c.remove("rbd", "fsckb-other")


SCENARIOS = {
    "mount_file_back": scenario_mount_file_back,
    "fsck_checkers": scenario_fsck,
    "fsck_batch": scenario_fsck_batch,
}

if __name__ == "__main__":
    sys.exit(cli_test.main(SCENARIOS, prog="mount_test.py"))
