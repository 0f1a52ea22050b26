#!/usr/bin/python3
"""Model-based randomised test of incremental backups against the real test cluster.

Several images (fast-diff on and off, 1 MiB and 4 MiB objects, a clone with a parent) go through
random writes, discards, write_zeroes, zeros written as data, scattered sub-block writes, writes,
discards and write_zeroes across 64 KiB block edges (the backup then reads only the changed bytes
and completes each block from the parent revision's chunk), grows, shrinks, and user snapshots
created and removed at different sizes (including the shrink -> foreign snapshot -> grow sequence
that Ceph's object-map diff gets wrong), with a backup after every few operations, in every diff
mode (default, --whole-object, --exact-diff). A byte model of each image is kept alongside.

After every backup: `rbd export` of the backup's snapshot equals the model (the test checks
itself), and the restore equals `rbd export`. At the end every earlier revision still restores to
the bytes it had. Seeded: replay with RBDVAULT_SEED=N; RBDVAULT_ROUNDS=N sets the number of backup
rounds (default 150).

Usage: diff_model_test.py diff_model   (environment as cli_test.py)
"""

import hashlib
import os
import random
import sys

import rbd

import cli_test
from cli_test import (FEATURES_FASTDIFF, FEATURES_NO_FASTDIFF, TMP, backup, check, file_sha, log, new_store,
                      rbd_export_sha, run, snap_name)

MAX_SIZE = 12 << 20
BLOCK = 64 << 10  # the store's block size


class Model:
    """One image and the bytes it should hold."""

    def __init__(self, c, name, features, order, parent=None):
        self.c, self.name, self.features, self.order = c, name, features, order
        self.user_snaps = {}  # name -> size
        self.serial = 0
        if parent:
            pname, psnap, pdata = parent
            c.remove("rbd", name)
            c.rbd.clone(c.ioctx("rbd"), pname, psnap, c.ioctx("rbd"), name, features=features, order=order)
            self.data = bytearray(pdata)
        else:
            size = 0
            c.create("rbd", name, size, features, order)
            self.data = bytearray(size)

    def sha(self):
        return hashlib.sha256(bytes(self.data)).hexdigest(), len(self.data)

    def resize(self, img, new):
        img.resize(new)
        if new < len(self.data):
            del self.data[new:]
        else:
            self.data.extend(bytes(new - len(self.data)))

    def snapshot(self, img):
        self.serial += 1
        name = "user-%d" % self.serial
        img.create_snap(name)
        self.user_snaps[name] = len(self.data)
        return name

    def random_op(self, img, rng):
        size = len(self.data)
        op = rng.choice(["write"] * 4 + ["zeros", "discard", "write_zeroes", "grow", "shrink",
                                         "snap", "unsnap", "shrink-snap-grow"] +
                        ["scatter"] * 3 + ["edge", "sub-discard", "sub-zero"])
        if op == "grow" or size == 0:
            self.resize(img, min(MAX_SIZE, size + rng.randrange(1, 6 << 20)))
            return "grow -> %d" % len(self.data)
        if op == "shrink":
            self.resize(img, rng.randrange(0, size))
            return "shrink -> %d" % len(self.data)
        if op == "shrink-snap-grow":
            # The sequence Ceph's object-map diff misses: a snapshot taken by someone else at the
            # smaller size between two backups, then a grow (larger, or back to the same size).
            small = rng.randrange(0, size)
            self.resize(img, small)
            name = self.snapshot(img)
            self.resize(img, size if rng.random() < 0.5 else min(MAX_SIZE, size + rng.randrange(1, 4 << 20)))
            return "shrink %d, snapshot %s, grow -> %d" % (small, name, len(self.data))
        if op == "snap":
            return "snapshot %s at %d" % (self.snapshot(img), size)
        if op == "unsnap":
            if not self.user_snaps:
                return "no snapshot to remove"
            name = rng.choice(sorted(self.user_snaps))
            img.remove_snap(name)
            del self.user_snaps[name]
            return "removed snapshot %s" % name
        if op == "scatter":
            # Partly changed blocks: the backup reads only these bytes and takes the rest of each
            # block from the parent revision's chunk.
            done = []
            for _ in range(rng.randrange(1, 12)):
                off = rng.randrange(size)
                length = min(rng.choice([1, 512, 4096, rng.randrange(1, 20000)]), size - off)
                data = rng.randbytes(length)
                img.write(data, off)
                self.data[off:off + length] = data
                done.append("%d+%d" % (off, length))
            return "scatter " + " ".join(done)
        if op in ("edge", "sub-discard", "sub-zero"):
            # Across a block edge (64 KiB) or inside one block, a few bytes to a few KiB.
            edge = rng.randrange(0, size // BLOCK + 1) * BLOCK
            off = max(0, min(size - 1, edge - rng.randrange(0, 6000)))
            length = min(rng.randrange(1, 12000), size - off)
            op = {"edge": "write", "sub-discard": "discard", "sub-zero": "write_zeroes"}[op]
        else:
            off = rng.randrange(size)
            length = min(rng.choice([rng.randrange(1, 8192), rng.randrange(1, 3 << 20)]), size - off)
        if op == "write":
            data = rng.randbytes(length)
            img.write(data, off)
            self.data[off:off + length] = data
        elif op == "zeros":
            img.write(bytes(length), off)  # zeros written as data
            self.data[off:off + length] = bytes(length)
        elif op == "discard":
            # A discard may leave partial ranges untouched (rbd_skip_partial_discard): read back
            # what the image now holds there instead of guessing.
            img.discard(off, length)
            self.data[off:off + length] = img.read(off, length)
        else:
            img.write_zeroes(off, length)
            self.data[off:off + length] = bytes(length)
        return "%s %d+%d" % (op, off, length)

    def remove(self):
        remove_image(self.c, self.name)


def remove_image(c, name):
    with c.image("rbd", name) as img:
        for s in list(img.list_snaps()):
            if img.is_protected_snap(s["name"]):
                img.unprotect_snap(s["name"])
    c.remove("rbd", name)


def restore_file(store, spec):
    path = os.path.join(TMP, "dm-%d-%d.raw" % (os.getpid(), random.randrange(1 << 30)))
    run("restore", "--store", store, spec, "--to-file", path, "-q")
    got = file_sha(path)
    os.unlink(path)
    return got


def known_sequence(c, store):
    """The sequence of issue 10, in the default and --whole-object modes: backup; shrink to half;
    someone snapshots; grow (back to the size, or larger); backup. Ceph's object-map diff misses
    the range the shrink zeroed; the backup must notice and diff that range exactly."""
    for mode, grow_to in (([], 8 << 20), (["--whole-object"], 12 << 20)):
        m = Model(c, "dm-known", FEATURES_FASTDIFF, 22)
        with c.image("rbd", "dm-known") as img:
            m.resize(img, 8 << 20)
            data = os.urandom(8 << 20)
            img.write(data, 0)
            m.data[:] = data
        backup(store, "rbd/dm-known", *mode)
        with c.image("rbd", "dm-known") as img:
            m.resize(img, 4 << 20)
            m.snapshot(img)
            m.resize(img, grow_to)
        r = backup(store, "rbd/dm-known", *mode)
        check(r["exact_diff_reason"], "the smaller snapshot between the backups went unnoticed: %s" % r)
        exp = rbd_export_sha("rbd/dm-known@" + snap_name(store, r["revision"]))
        check(exp == m.sha(), "model of dm-known differs from rbd export (test bug)")
        got = restore_file(store, "rbd/dm-known@%d" % r["revision"])
        check(got == exp, "shrink -> foreign snapshot -> grow %s: restore differs from rbd export" % (mode or "default"))
        log("known sequence %s: exact diff because %s; restore equals rbd export" % (mode or "default",
                                                                                    r["exact_diff_reason"]))
        m.remove()


def scenario_diff_model(c):
    seed = int(os.environ.get("RBDVAULT_SEED", random.randrange(1 << 31)))
    rounds = int(os.environ.get("RBDVAULT_ROUNDS", "150"))
    log("diff_model: seed %d, %d rounds (replay with RBDVAULT_SEED=%d RBDVAULT_ROUNDS=%d)" % (seed, rounds, seed, rounds))
    rng = random.Random(seed)
    store = new_store("diff_model")
    known_sequence(c, store)

    for name in ("dm-known", "dm-clone", "dm-parent"):  # leftovers of an interrupted run: the clone first
        if c.exists("rbd", name):
            remove_image(c, name)
    # A parent image with data and a protected snapshot, for the clone.
    parent = Model(c, "dm-parent", FEATURES_FASTDIFF, 22)
    with c.image("rbd", "dm-parent") as img:
        parent.resize(img, 8 << 20)
        for _ in range(4):
            parent.random_op(img, rng)
        img.create_snap("base")
        img.protect_snap("base")
    models = [
        Model(c, "dm-fastdiff", FEATURES_FASTDIFF, 22),
        Model(c, "dm-plain", FEATURES_NO_FASTDIFF, 20),
        Model(c, "dm-fastdiff-small", FEATURES_FASTDIFF, 20),
        Model(c, "dm-clone", FEATURES_FASTDIFF, 22, parent=("dm-parent", "base", parent.data)),
    ]
    history = {}  # revision -> (image, export sha)
    modes = {"default": [], "whole-object": ["--whole-object"], "exact-diff": ["--exact-diff"]}
    counts = {}
    patched = 0  # backups that completed blocks from the parent's chunks
    patch_chunks = 0  # ... and the chunks stored as patches of the parent's (docs/format.md 4.2)
    for rnd in range(rounds):
        m = models[rnd % len(models)]
        with c.image("rbd", m.name) as img:
            ops = [m.random_op(img, rng) for _ in range(rng.randrange(1, 5))]
        mode = rng.choice(["default", "default", "whole-object", "exact-diff"])
        r = backup(store, "rbd/" + m.name, *modes[mode])
        snap = "rbd/%s@%s" % (m.name, snap_name(store, r["revision"]))
        exp = rbd_export_sha(snap)
        check(exp == m.sha(), "round %d: the model of %s differs from rbd export (test bug): %s" % (rnd, m.name, ops))
        got = restore_file(store, "rbd/%s@%d" % (m.name, r["revision"]))
        check(got == exp, "round %d (seed %d): restore of %s revision %d (%s, %s) differs from rbd export after: %s"
              % (rnd, seed, m.name, r["revision"], mode, r["kind"], "; ".join(ops)))
        if rnd >= len(models):
            check(r["kind"] == "delta", "later backups must be incremental: %s" % r)
        if mode == "whole-object" and not r["exact_diff_reason"]:
            check(r["bytes_read_store"] == 0, "round %d: an object-granular diff must not patch blocks: %s" % (rnd, r))
        if r["kind"] == "full":
            check(r["bytes_read_store"] == 0, "round %d: a full read patched blocks: %s" % (rnd, r))
        patched += r["bytes_read_store"] > 0
        patch_chunks += r["patch_chunks"]
        if r["kind"] == "full":
            check(r["patch_chunks"] == 0, "round %d: a full read stored patches: %s" % (rnd, r))
        history[r["revision"]] = (m.name, exp)
        counts[mode] = counts.get(mode, 0) + 1
        log("round %d %s [%s]: %s -> revision %d (%s, read %d from Ceph, %d from the store)" %
            (rnd, m.name, mode, "; ".join(ops), r["revision"], r["kind"], r["bytes_read"], r["bytes_read_store"]))
        if rnd % 25 == 24:  # now and then also through a new RBD image
            cli_test.verify_restores(c, store, "rbd/%s@%d" % (m.name, r["revision"]), exp, tag="dm-r")
    # Every earlier revision still restores as before.
    for rev, (name, exp) in sorted(history.items()):
        check(restore_file(store, "rbd/%s@%d" % (name, rev)) == exp, "revision %d of %s changed" % (rev, name))
    if rounds >= 40:
        check(patched >= rounds // 10, "only %d of %d backups patched blocks: the partial reads went untested" %
              (patched, rounds))
        check(patch_chunks >= rounds // 10, "only %d patch chunks in %d backups: patches went untested" %
              (patch_chunks, rounds))
    # The patches and their bases stay sound after the first half of the revisions is forgotten.
    for rev in sorted(history)[: len(history) // 2]:
        name = history[rev][0]
        if rev != max(r for r, (n, _) in history.items() if n == name):
            run("forget", "--store", store, "rbd/%s@%d" % (name, rev), "-q")
            del history[rev]
    run("gc", "--store", store, "--max-unused", "0", "-q")
    for rev, (name, exp) in sorted(history.items()):
        check(restore_file(store, "rbd/%s@%d" % (name, rev)) == exp, "revision %d of %s changed after gc" % (rev, name))
    rep = cli_test.scrub_json(store, "--deep")
    check(rep["clean"], "scrub --deep after forget and gc: %s" % rep)
    log("diff_model: %d backups (%s, %d patched partly changed blocks, %d patch chunks), every revision restored "
        "twice, again after forgetting half and gc" % (len(history), counts, patched, patch_chunks))
    for m in models:
        m.remove()
    parent.remove()


if __name__ == "__main__":
    sys.exit(cli_test.main({"diff_model": scenario_diff_model}, prog="diff_model_test.py"))
