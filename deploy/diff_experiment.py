#!/usr/bin/python3
"""Randomised experiment: when does librbd's diff (diff_iterate2) report too little?

    CEPH_CONF=DIR/ceph.conf deploy/diff_experiment.py [--seed S] [--trials N] [--pool rbd]
                                                     [--json OUT] [--size0] [--keep]
    CEPH_CONF=... deploy/diff_experiment.py --seed S --trials 1 -v     # replay one trial verbosely

Needs a throwaway cluster (deploy/micro-ceph.sh) and python3-rbd/python3-rados. Trial i uses seed S+i,
so every trial is replayable on its own with --seed S+i --trials 1. Each trial runs in its own
subprocess (librbd may assert and abort); a crash is recorded as such.

A trial: create an image (sometimes a clone of a parent snapshot), write, snapshot A, run a random
sequence of operations (writes, partial/whole-object discards, write_zeroes, shrinks, grows,
intermediate user snapshots at various sizes, some removed again, some put in the trash by a clone,
flatten, object-map/fast-diff disable+enable (invalid object map), rebuild), snapshot B, more ops on
the head. Ground truth: bytes of A (zero-padded / truncated to B's size) that differ from B.
Modes checked (each with include_parent=True; for clones also with include_parent=False):
  m1 whole_object=True           m2 whole_object=False
  m3 whole_object=True to pick objects, then whole_object=False on each picked object's range
  m4 from_snapshot=None (allocated extents of B) against the non-zero bytes of B
A differing byte is covered if an exists=True extent covers it, or an exists=False extent covers it and
B reads zero there. A byte under an exists=False extent (and no exists=True one) where B is non-zero is a
"false hole" (a restore would zero live data).
--size0 runs the "image is 0 bytes at B" cases, each in a subprocess, and prints what happened.
"""

import argparse
import collections
import hashlib
import json
import os
import random
import subprocess
import sys
import time

import rados
import rbd

F_LAYERING = rbd.RBD_FEATURE_LAYERING
F_EXCL = rbd.RBD_FEATURE_EXCLUSIVE_LOCK
F_OM = rbd.RBD_FEATURE_OBJECT_MAP
F_FD = rbd.RBD_FEATURE_FAST_DIFF
F_DF = rbd.RBD_FEATURE_DEEP_FLATTEN
FLAG_OM_INVALID = getattr(rbd, "RBD_FLAG_OBJECT_MAP_INVALID", 1)
FLAG_FD_INVALID = getattr(rbd, "RBD_FLAG_FAST_DIFF_INVALID", 2)
SECTOR = 512
CHUNK = 4096
MAX_SIZE = 32 << 20


def connect(pool):
    conf = os.environ.get("CEPH_CONF")
    if not conf:
        sys.exit("set CEPH_CONF to the throwaway cluster's ceph.conf")
    c = rados.Rados(conffile=conf)
    c.conf_set("rbd_default_clone_format", "2")
    c.connect(timeout=20)
    return c, c.open_ioctx(pool)


# ---------------------------------------------------------------- interval helpers
def merge(iv):
    iv = sorted((a, b) for a, b in iv if b > a)
    out = []
    for a, b in iv:
        if out and a <= out[-1][1]:
            if b > out[-1][1]:
                out[-1][1] = b
        else:
            out.append([a, b])
    return [(a, b) for a, b in out]


def subtract(iv, cover):
    """iv minus cover; both merged and sorted."""
    out = []
    j = 0
    for a, b in iv:
        cur = a
        while j < len(cover) and cover[j][1] <= cur:
            j += 1
        k = j
        while k < len(cover) and cover[k][0] < b:
            ca, cb = cover[k]
            if ca > cur:
                out.append((cur, min(ca, b)))
            cur = max(cur, cb)
            if cur >= b:
                break
            k += 1
        if cur < b:
            out.append((cur, b))
    return out


def intersect(iv, cover):
    return subtract(iv, subtract(iv, cover))


# ---------------------------------------------------------------- ground truth
def read_all(img, size):
    out = bytearray()
    off = 0
    while off < size:
        n = min(4 << 20, size - off)
        d = img.read(off, n)
        if len(d) != n:
            d = d + bytes(n - len(d))
        out += d
        off += n
    return bytes(out)


def diff_ranges(a, b):
    """Merged [start, end) ranges (CHUNK granularity, clipped) where a != b (same length)."""
    iv = []
    n = len(b)
    for off in range(0, n, CHUNK):
        e = min(off + CHUNK, n)
        if a[off:e] != b[off:e]:
            iv.append((off, e))
    return merge(iv)


def nonzero_ranges(b):
    z = bytes(CHUNK)
    iv = []
    n = len(b)
    for off in range(0, n, CHUNK):
        e = min(off + CHUNK, n)
        if b[off:e] != z[: e - off]:
            iv.append((off, e))
    return merge(iv)


def count_diff_bytes(a, b, s, e, need_b_nonzero=False):
    """Bytes in [s,e) where a != b (and, if need_b_nonzero, b != 0)."""
    n = 0
    for off in range(s, e, SECTOR):
        q = min(off + SECTOR, e)
        x, y = a[off:q], b[off:q]
        if x == y:
            continue
        if need_b_nonzero and y.count(0) == len(y):
            continue
        for i in range(len(x)):
            if x[i] != y[i] and (not need_b_nonzero or y[i] != 0):
                n += 1
    return n


def check(a, b, dranges, extents, size_b):
    """Returns dict(missed_bytes, false_hole_bytes, reported_bytes, miss_ranges)."""
    t = merge((o, min(o + l, size_b)) for o, l, e in extents if e)
    f = merge((o, min(o + l, size_b)) for o, l, e in extents if not e)
    f_only = subtract(f, t)
    unc = subtract(dranges, t)
    missed = 0
    miss_ranges = []
    for s, e in unc:
        # parts covered by an exists=False extent are fine where b is zero
        for hs, he in intersect([(s, e)], f_only):
            m = count_diff_bytes(a, b, hs, he, need_b_nonzero=True)
            if m:
                missed += m
                miss_ranges.append((hs, he, "hole-but-nonzero"))
        for us, ue in subtract([(s, e)], f_only):
            m = count_diff_bytes(a, b, us, ue)
            if m:
                missed += m
                miss_ranges.append((us, ue, "unreported"))
    fh = 0
    for s, e in f_only:
        seg = b[s:e]
        fh += len(seg) - seg.count(0)
    rep = sum(e - s for s, e in t)
    digest = hashlib.sha1(repr(sorted(extents)).encode()).hexdigest()[:12]
    return {"ext": digest, "missed": missed, "false_hole": fh, "reported": rep, "miss_ranges": merge_tagged(miss_ranges)}


def merge_tagged(r):
    return [[s, e, t] for s, e, t in sorted(r)][:8]


def run_diff(img, frm, size, whole, include_parent=True, offset=0):
    ext = []

    def cb(o, l, e):
        ext.append((o, l, bool(e)))
        return 0

    if size - offset > 0:
        img.diff_iterate(offset, size - offset, frm, cb, include_parent=include_parent, whole_object=whole)
    return ext


def two_step(img, frm, size, objsize, include_parent=True):
    picked = run_diff(img, frm, size, True, include_parent)
    objs = sorted({o // objsize for o, l, e in picked} | {(o + l - 1) // objsize for o, l, e in picked if l})
    ext = []
    for ob in objs:
        s = ob * objsize
        e = min(s + objsize, size)
        if e <= s:
            continue

        def cb(o, l, x):
            ext.append((o, l, bool(x)))
            return 0

        img.diff_iterate(s, e - s, frm, cb, include_parent=include_parent, whole_object=False)
    return ext


# ---------------------------------------------------------------- one trial
class Trial:
    def __init__(self, seed, pool, verbose=False):
        self.seed = seed
        self.rng = random.Random(seed)
        self.pool = pool
        self.v = verbose
        self.log = []
        self.cond = collections.OrderedDict()
        self.prefix = "dx%d" % seed
        self.extra_images = []  # (name) clones of our snapshots, removed first

    def say(self, *a):
        s = " ".join(str(x) for x in a)
        self.log.append(s)
        if self.v:
            print(s, file=sys.stderr)

    def data(self, n):
        r = self.rng.random()
        if r < 0.1:
            return bytes(n)
        if r < 0.2:  # mixed zero / non-zero sectors
            out = bytearray(n)
            for off in range(0, n, SECTOR):
                if self.rng.random() < 0.5:
                    out[off:off + SECTOR] = self.rng.randbytes(min(SECTOR, n - off))
            return bytes(out)
        return self.rng.randbytes(n)

    def rand_range(self, size):
        objsize = self.objsize
        r = self.rng.random()
        if r < 0.3:  # whole objects
            o = self.rng.randrange(0, max(1, (size + objsize - 1) // objsize))
            n = self.rng.choice([1, 1, 2])
            s, e = o * objsize, min((o + n) * objsize, size)
        elif r < 0.85:
            s = self.rng.randrange(0, max(1, size // CHUNK)) * CHUNK
            ln = self.rng.choice([CHUNK, 16 * CHUNK, 64 << 10, 256 << 10, objsize // 2, objsize, objsize + CHUNK * 3])
            e = min(s + ln, size)
        else:  # unaligned
            s = self.rng.randrange(0, max(1, size - 1))
            e = min(size, s + self.rng.randrange(1, objsize + 1))
        return s, max(s, e)

    def run(self, ioctx):
        rng = self.rng
        R = rbd.RBD()
        self.io = ioctx
        order = rng.choice([20, 20, 21, 22])
        self.objsize = objsize = 1 << order
        nobj = rng.randint(3, max(3, min(12, (24 << 20) // objsize)))
        size = nobj * objsize
        if rng.random() < 0.3:
            size -= rng.randrange(0, objsize // SECTOR) * SECTOR
        if rng.random() < 0.1:
            size -= rng.randrange(1, SECTOR)
        self.max_size = min(MAX_SIZE, size * 2)
        fd_mode = rng.choices(["om+fd", "om", "none"], [0.7, 0.1, 0.2])[0]
        feats = F_LAYERING | F_EXCL
        if fd_mode in ("om+fd", "om"):
            feats |= F_OM
        if fd_mode == "om+fd":
            feats |= F_FD
        deep = rng.random() < 0.5
        if deep:
            feats |= F_DF
        clone = rng.random() < 0.3
        self.cond["order"] = order
        self.cond["features_initial"] = fd_mode
        self.cond["deep_flatten"] = deep
        self.cond["clone"] = clone
        name = self.prefix
        self.name = name
        self.parent = None
        if clone:
            pname = self.prefix + "p"
            self.parent = pname
            psize = rng.choice([size, size, size // 2 + SECTOR * 3, min(self.max_size, size * 3 // 2)])
            porder = min(order, rng.choice([order, order, 20, 21]))  # a clone cannot use smaller objects than its parent
            R.create(ioctx, pname, psize, order=porder, old_format=False,
                     features=F_LAYERING | F_EXCL | F_OM | F_FD | F_DF)
            with rbd.Image(ioctx, pname) as p:
                for _ in range(rng.randint(2, 8)):
                    s, e = self.rand_range(psize)
                    if e > s:
                        p.write(self.data(e - s), s)
                p.create_snap("ps")
                if rng.random() < 0.5:
                    p.protect_snap("ps")
                if rng.random() < 0.3:  # parent head keeps changing; must not matter
                    s, e = self.rand_range(psize)
                    if e > s:
                        p.write(self.data(e - s), s)
            R.clone(ioctx, pname, "ps", ioctx, name, features=feats, order=order)
            img = rbd.Image(ioctx, name)
            if img.size() != size:
                img.resize(size)
            self.say("clone of", pname, "psize", psize, "porder", porder, "child size", size, "order", order)
        else:
            R.create(ioctx, name, size, order=order, old_format=False, features=feats)
            img = rbd.Image(ioctx, name)
            self.say("image size", size, "order", order)
        self.img = img
        self.say("features", fd_mode, "deep-flatten", deep)
        self.snaps = {}  # name -> size at creation (user snaps)
        self.snapnum = 0
        self.size_hist = [size]

        # ---- before A
        for _ in range(rng.randint(1, 8 if not clone else 4)):
            self.op_write(img)
        if rng.random() < 0.3:
            self.op_snap(img)
        if rng.random() < 0.15:
            self.op_resize(img, shrink=True)
            self.op_resize(img, shrink=False)
        if rng.random() < 0.1:
            self.op_toggle(img)
        img.create_snap("A")
        size_a = img.size()
        self.say("snap A size", size_a)
        self.between = True
        self.size_hist = [size_a]
        self.inter = []  # snaps created between A and B: [name, size, removed, trashed]
        ops = []
        nops = rng.randint(2, 10)
        for _ in range(nops):
            op = rng.choices(
                ["write", "discard", "wzero", "shrink", "grow", "snap", "rmsnap", "clone_snap", "toggle",
                 "rebuild", "flatten", "fd_toggle"],
                [5, 3, 2, 2.5, 2.5, 3, 1.5, 1, 0.6, 0.4, 0.5 if clone else 0, 0.5])[0]
            ops.append(op)
            getattr(self, "op_" + {"write": "write", "discard": "discard", "wzero": "wzero",
                                   "shrink": "shrink", "grow": "grow", "snap": "snap", "rmsnap": "rmsnap",
                                   "clone_snap": "clone_snap", "toggle": "toggle", "rebuild": "rebuild",
                                   "flatten": "flatten", "fd_toggle": "fd_toggle"}[op])(img)
        # make sure the interesting pattern appears often: shrink, snapshot, grow
        if rng.random() < 0.25:
            self.op_shrink(img)
            self.op_snap(img)
            self.op_grow(img)
            ops += ["shrink", "snap", "grow"]
        img.create_snap("B")
        size_b = img.size()
        self.say("snap B size", size_b)
        self.between = False
        # ---- after B (head changes; must not matter)
        for _ in range(rng.randint(0, 3)):
            op = rng.choice(["write", "discard", "shrink", "grow", "rmsnap"])
            getattr(self, "op_" + op)(img)
        if rng.random() < 0.15:
            self.op_toggle(img)
        img.close()

        # ---- conditions
        c = self.cond
        c["ops"] = ",".join(ops)
        for k in ["write", "discard", "wzero", "shrink", "grow", "snap", "rmsnap", "clone_snap", "toggle",
                  "rebuild", "flatten", "fd_toggle"]:
            c["op_" + k] = k in ops
        c["size_a"] = size_a
        c["size_b"] = size_b
        c["b_smaller"] = size_b < size_a
        c["b_larger"] = size_b > size_a
        minsz = min(self.size_hist)
        c["min_size_between"] = minsz
        c["shrunk_below_both"] = minsz < min(size_a, size_b)
        ex_small = [s for s in self.inter if s[1] < min(size_a, size_b) and not s[2]]
        c["snap_small_between_kept"] = bool(ex_small)
        c["snap_small_between_trash"] = any(s[3] for s in ex_small)
        c["snap_small_between_removed"] = any(s[1] < min(size_a, size_b) and s[2] for s in self.inter)
        c["snap_between_kept"] = any(not s[2] for s in self.inter)
        c["snap_between_trash"] = any(s[3] for s in self.inter)
        c["snap_size0_between"] = any(s[1] == 0 for s in self.inter)

        # ---- read back and diff from a fresh read-only handle at B
        res = {}
        with rbd.Image(ioctx, name, snapshot="A", read_only=True) as ia:
            a = read_all(ia, size_a)
            c["flags_a"] = ia.flags()
            try:
                c["overlap_a"] = ia.overlap()
            except Exception:
                c["overlap_a"] = None
        with rbd.Image(ioctx, name, snapshot="B", read_only=True) as ib:
            b = read_all(ib, size_b)
            c["flags_b"] = ib.flags()
            c["features_b"] = ib.features()
            c["fast_diff_at_diff"] = bool(ib.features() & F_FD)
            ib.set_snap("B")
            # every snapshot (any namespace, incl. trash) from A to B, as diff_iterate sees them
            sl = sorted((s["id"], s["size"], s.get("namespace", 0)) for s in ib.list_snaps())
            ida = ib.snap_get_id("A")
            idb = ib.snap_get_id("B")
            chain = [x for x in sl if ida <= x[0] <= idb]
            c["chain"] = chain
            nob = lambda sz: (sz + objsize - 1) // objsize
            lim = min(nob(size_a), nob(size_b))
            c["om_rule"] = any(nob(x[1]) < lim for x in chain[1:-1])
            c["om_rule_bytes"] = any(x[1] < min(size_a, size_b) for x in chain[1:-1])
            # the same but only for pairs where the next snapshot grows again (the precise form)
            c["om_rule_pair"] = any(nob(chain[k][1]) < min(nob(size_a), nob(chain[k + 1][1]), nob(size_b))
                                    for k in range(1, len(chain) - 1))
            c["om_rule_fast"] = c["om_rule"] and c["fast_diff_at_diff"]
            c["chain_has_trash"] = any(x[2] == rbd.RBD_SNAP_NAMESPACE_TYPE_TRASH for x in chain)
            try:
                c["overlap_b"] = ib.overlap()
            except Exception:
                c["overlap_b"] = None
            # the object-map path is used only if every snapshot from A to B has a valid fast-diff map
            fl = []
            for x in chain:
                ib.set_snap_by_id(x[0])
                fl.append(ib.flags())
            ib.set_snap("B")
            c["chain_flags"] = fl
            c["any_fd_invalid"] = any(f & FLAG_FD_INVALID for f in fl)
            c["fast_path"] = c["fast_diff_at_diff"] and not c["any_fd_invalid"]
            c["om_rule_fastpath"] = c["om_rule"] and c["fast_path"]
            try:
                c["parent_at_b"] = ib.parent_info() is not None
            except rbd.ImageNotFound:
                c["parent_at_b"] = False
            aa = a[:size_b] + bytes(max(0, size_b - size_a))
            dr = diff_ranges(aa, b)
            c["changed_bytes_4k"] = sum(e - s for s, e in dr)
            nz = nonzero_ranges(b)
            zero = bytes(size_b)
            ips = [True, False] if clone else [True]
            for ip in ips:
                sfx = "" if ip else "_noparent"
                res["m1" + sfx] = check(aa, b, dr, run_diff(ib, "A", size_b, True, ip), size_b)
                res["m2" + sfx] = check(aa, b, dr, run_diff(ib, "A", size_b, False, ip), size_b)
                res["m3" + sfx] = check(aa, b, dr, two_step(ib, "A", size_b, objsize, ip), size_b)
                res["m4" + sfx] = check(zero, b, nz, run_diff(ib, None, size_b, False, ip), size_b)
                res["m4w" + sfx] = check(zero, b, nz, run_diff(ib, None, size_b, True, ip), size_b)
        return res

    # ------------------------------------------------------------ operations
    def op_write(self, img):
        s, e = self.rand_range(img.size())
        if e > s:
            img.write(self.data(e - s), s)
            self.say("write", s, e - s)

    def op_discard(self, img):
        s, e = self.rand_range(img.size())
        if e > s:
            img.discard(s, e - s)
            self.say("discard", s, e - s)

    def op_wzero(self, img):
        s, e = self.rand_range(img.size())
        if e > s:
            img.write_zeroes(s, e - s)
            self.say("write_zeroes", s, e - s)

    def op_resize(self, img, shrink):
        cur = img.size()
        rng = self.rng
        if shrink:
            if cur <= SECTOR:
                return
            if getattr(self, "between", False) and rng.random() < 0.04:
                new = 0
            elif rng.random() < 0.5:
                new = rng.randrange(0, max(1, cur // self.objsize)) * self.objsize
                if new == 0:
                    new = SECTOR * rng.randint(1, 8)
            else:
                new = rng.randrange(1, cur // SECTOR) * SECTOR if cur // SECTOR > 1 else 0
        else:
            if cur >= self.max_size:
                return
            r = rng.random()
            if r < 0.3 and self.size_hist:
                new = max(self.size_hist)  # back to an earlier size
                if new <= cur:
                    new = min(self.max_size, cur + self.objsize)
            elif r < 0.6 and cur // self.objsize + 1 <= self.max_size // self.objsize:
                new = rng.randrange(cur // self.objsize + 1, self.max_size // self.objsize + 1) * self.objsize
            else:
                new = rng.randrange(cur // SECTOR + 1, self.max_size // SECTOR + 1) * SECTOR
        if new == cur:
            return
        img.resize(new, allow_shrink=True)
        self.size_hist.append(new)
        self.say("resize", cur, "->", new)

    def op_shrink(self, img):
        self.op_resize(img, True)

    def op_grow(self, img):
        self.op_resize(img, False)

    def op_snap(self, img):
        self.snapnum += 1
        n = "u%d" % self.snapnum
        img.create_snap(n)
        self.snaps[n] = img.size()
        if getattr(self, "between", False):
            self.inter.append([n, img.size(), False, False])
        self.say("snap", n, "size", img.size())

    def op_rmsnap(self, img):
        live = [n for n in self.snaps if n not in getattr(self, "removed", set())]
        if not live:
            return
        n = self.rng.choice(live)
        try:
            if img.is_protected_snap(n):
                return
        except Exception:
            pass
        img.remove_snap(n)
        self.removed = getattr(self, "removed", set()) | {n}
        trashed = n in getattr(self, "cloned", set())
        for s in getattr(self, "inter", []):
            if s[0] == n:
                s[2] = not trashed
                s[3] = trashed
        self.say("remove snap", n, "(to trash)" if trashed else "")

    def op_clone_snap(self, img):
        """Snapshot, clone it (so removing the snapshot moves it to the trash), then remove it."""
        self.op_snap(img)
        n = "u%d" % self.snapnum
        cn = "%sc%d" % (self.prefix, self.snapnum)
        rbd.RBD().clone(self.io, self.name, n, self.io, cn, features=F_LAYERING | F_EXCL)
        self.extra_images.append(cn)
        self.cloned = getattr(self, "cloned", set()) | {n}
        self.say("cloned", n, "as", cn)
        if self.rng.random() < 0.7:
            self.op_rmsnap_named(img, n)

    def op_rmsnap_named(self, img, n):
        img.remove_snap(n)
        self.removed = getattr(self, "removed", set()) | {n}
        for s in getattr(self, "inter", []):
            if s[0] == n:
                s[3] = True
        self.say("remove snap", n, "(to trash)")

    def op_toggle(self, img):
        r = self.rng.random()
        f = img.features()
        if f & F_OM:
            img.update_features(F_OM | F_FD if f & F_FD else F_OM, False)
            self.say("disable object-map")
            if r < 0.8:
                img.update_features(F_OM | F_FD, True)
                self.say("enable object-map+fast-diff (invalid)")
                if self.rng.random() < 0.4:
                    img.rebuild_object_map()
                    self.say("rebuild head object map")
        else:
            img.update_features(F_OM | F_FD, True)
            self.say("enable object-map+fast-diff (invalid)")
            if self.rng.random() < 0.4:
                img.rebuild_object_map()
                self.say("rebuild head object map")

    def op_fd_toggle(self, img):
        f = img.features()
        if f & F_FD:
            img.update_features(F_FD, False)
            img.update_features(F_FD, True)
            self.say("fast-diff off+on (invalid)")

    def op_rebuild(self, img):
        if img.features() & F_OM:
            img.rebuild_object_map()
            self.say("rebuild head object map")

    def op_flatten(self, img):
        try:
            if img.parent_info():
                img.flatten()
                self.say("flatten")
        except rbd.ImageNotFound:
            pass

    # ------------------------------------------------------------ cleanup
    def cleanup(self, ioctx):
        R = rbd.RBD()
        names = set(R.list(ioctx))
        mine = [n for n in names if n.startswith(self.prefix) and (n == self.prefix or n[len(self.prefix)] in "cp")]
        # children of our image first, then the image, then its parent
        order = sorted(mine, key=lambda n: (0 if n[len(self.prefix):].startswith("c") else
                                            1 if n == self.prefix else 2))
        for n in order:
            try:
                with rbd.Image(ioctx, n) as im:
                    for s in list(im.list_snaps()):
                        if s.get("namespace", 0) != 0:
                            continue
                        try:
                            if im.is_protected_snap(s["name"]):
                                im.unprotect_snap(s["name"])
                        except Exception:
                            pass
                        try:
                            im.remove_snap(s["name"])
                        except Exception:
                            pass
                for _ in range(5):
                    try:
                        R.remove(ioctx, n)
                        break
                    except (rbd.ImageBusy, rbd.ImageHasSnapshots):
                        time.sleep(0.5)
            except Exception as e:  # noqa
                print("cleanup %s: %r" % (n, e), file=sys.stderr)


def worker(seed, pool, verbose, keep):
    c, io = connect(pool)
    t = Trial(seed, pool, verbose)
    out = {"seed": seed}
    try:
        out["res"] = t.run(io)
    except Exception as e:
        out["error"] = repr(e)
        try:
            t.img.close()
        except Exception:
            pass
    out["cond"] = t.cond
    out["log"] = t.log
    if not keep:
        t.cleanup(io)
    io.close()
    c.shutdown()
    print(json.dumps(out))


# ---------------------------------------------------------------- size 0 cases
SIZE0_CASES = {
    "shrink0_fastdiff": dict(feats=F_LAYERING | F_EXCL | F_OM | F_FD, grow_back=False),
    "shrink0_om_only": dict(feats=F_LAYERING | F_EXCL | F_OM, grow_back=False),
    "shrink0_nofeatures": dict(feats=F_LAYERING | F_EXCL, grow_back=False),
    "created0_fastdiff": dict(feats=F_LAYERING | F_EXCL | F_OM | F_FD, grow_back=False, created0=True),
    "shrink0_snap_grow_fastdiff": dict(feats=F_LAYERING | F_EXCL | F_OM | F_FD, grow_back=True),
    "shrink0_snap_grow_nofd": dict(feats=F_LAYERING | F_EXCL, grow_back=True),
}


def size0_case(case, mode, length_kind, pool):
    spec = SIZE0_CASES[case]
    c, io = connect(pool)
    name = "dx0_%s_%d" % (case, os.getpid())
    R = rbd.RBD()
    size = 0 if spec.get("created0") else 4 << 20
    R.create(io, name, size, order=20, old_format=False, features=spec["feats"])
    out = {}
    try:
        with rbd.Image(io, name) as im:
            if size:
                im.write(b"\x5a" * (2 << 20), 512 << 10)
            im.create_snap("A")
            if spec["grow_back"]:
                im.resize(0)
                im.create_snap("mid")
                im.resize(4 << 20)
                im.create_snap("B")
            else:
                im.resize(0) if size else im.resize(4 << 20)
                im.create_snap("B")
            if spec.get("created0"):
                # A is the 0-byte one here; B has the data
                im.write(b"\x5a" * (1 << 20), 0)
                im.remove_snap("B")
                im.create_snap("B")
        with rbd.Image(io, name, snapshot="B", read_only=True) as ib:
            sb = ib.size()
            out["size_b"] = sb
            out["flags_b"] = ib.flags()
            frm, whole = {"m1": ("A", True), "m2": ("A", False), "m4": (None, False), "m4w": (None, True)}[mode]
            length = sb if length_kind == "size" else 4 << 20
            sys.stdout.write("running %s len=%d\n" % (mode, length))
            sys.stdout.flush()
            try:
                ext = []
                ib.diff_iterate(0, length, frm, lambda o, l, e: ext.append((o, l, e)) or 0, whole_object=whole)
                out[mode] = ext
            except Exception as e:
                out[mode] = repr(e)
    finally:
        try:
            with rbd.Image(io, name) as im:
                for s in list(im.list_snaps()):
                    im.remove_snap(s["name"])
            R.remove(io, name)
        except Exception as e:
            out["cleanup"] = repr(e)
    print("RESULT " + json.dumps(out))


def run_size0(pool):
    for case in SIZE0_CASES:
        for mode in ["m1", "m2", "m4", "m4w"]:
            for lk in ["size", "4M"]:
                p = subprocess.run([sys.executable, os.path.abspath(__file__), "--size0-case", case, "--size0-mode",
                                    mode, "--size0-len", lk, "--pool", pool], capture_output=True, text=True,
                                   timeout=120)
                res = [l for l in p.stdout.splitlines() if l.startswith("RESULT ")]
                asrt = [l.strip() for l in p.stderr.splitlines() if "FAILED ceph_assert" in l or "assert" in l.lower()]
                print("size0 %-26s %-3s len=%-4s rc=%d %s" % (
                    case, mode, lk, p.returncode, res[0][7:] if res else "CRASH: %s" % (asrt[0][-200:] if asrt else
                                                                                        p.stderr.strip()[-200:])))
                if not res:
                    cleanup_size0(pool, case)


def cleanup_size0(pool, case):
    c, io = connect(pool)
    for n in rbd.RBD().list(io):
        if n.startswith("dx0_%s_" % case):
            try:
                with rbd.Image(io, n) as im:
                    for s in list(im.list_snaps()):
                        im.remove_snap(s["name"])
                rbd.RBD().remove(io, n)
            except Exception as e:
                print("  cleanup:", repr(e))
    io.close()
    c.shutdown()


# ---------------------------------------------------------------- driver
BOOL_CONDS = ["om_rule", "om_rule_fast", "om_rule_fastpath", "om_rule_pair", "om_rule_bytes", "chain_has_trash", "clone", "deep_flatten", "fast_path", "any_fd_invalid", "fast_diff_at_diff", "op_shrink", "op_grow",
              "shrunk_below_both", "snap_small_between_kept", "snap_small_between_trash",
              "snap_small_between_removed", "snap_between_kept", "snap_between_trash", "snap_size0_between",
              "b_smaller", "b_larger", "op_discard", "op_wzero", "op_toggle", "op_fd_toggle", "op_flatten",
              "op_clone_snap", "op_rmsnap", "parent_at_b"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--trials", type=int, default=50)
    ap.add_argument("--pool", default="rbd")
    ap.add_argument("--json", default=None, help="write all trial results here")
    ap.add_argument("--size0", action="store_true", help="run the 0-byte-at-B cases")
    ap.add_argument("--size0-case", default=None)
    ap.add_argument("--size0-mode", default="m1")
    ap.add_argument("--size0-len", default="size")
    ap.add_argument("--worker", type=int, default=None)
    ap.add_argument("--keep", action="store_true", help="keep the images (debugging)")
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args()
    if args.worker is not None:
        return worker(args.worker, args.pool, args.verbose, args.keep)
    if args.size0_case:
        return size0_case(args.size0_case, args.size0_mode, args.size0_len, args.pool)
    if args.size0:
        run_size0(args.pool)
        if args.trials == 0:
            return
    results = []
    t0 = time.time()
    for i in range(args.trials):
        seed = args.seed + i
        cmd = [sys.executable, os.path.abspath(__file__), "--worker", str(seed), "--pool", args.pool]
        if args.verbose:
            cmd.append("-v")
        if args.keep:
            cmd.append("--keep")
        try:
            p = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
            lines = [l for l in p.stdout.splitlines() if l.startswith("{")]
            if lines:
                r = json.loads(lines[-1])
            else:
                r = {"seed": seed, "crash": p.returncode, "stderr": p.stderr[-800:], "res": {}, "cond": {}}
        except subprocess.TimeoutExpired:
            r = {"seed": seed, "crash": "timeout", "res": {}, "cond": {}}
        if args.verbose:
            sys.stderr.write(p.stderr if 'p' in locals() else "")
        results.append(r)
        bad = sorted(k for k, v in r.get("res", {}).items() if v["missed"] or v["false_hole"])
        status = ("CRASH %s" % r["crash"]) if "crash" in r else ("ERROR %s" % r["error"]) if "error" in r else \
            ("MISS " + ",".join(bad)) if bad else "ok"
        print("seed %d: %s  [%s]" % (seed, status, r.get("cond", {}).get("ops", "")), flush=True)
        if args.verbose and bad:
            print(json.dumps({k: r["res"][k] for k in bad}, indent=1))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f)
    summarize(results, time.time() - t0)


def summarize(results, secs):
    ok = [r for r in results if "res" in r and r["res"] and "error" not in r]
    print("\n%d trials (%d completed, %d crashed/errored) in %.0f s" % (len(results), len(ok),
                                                                       len(results) - len(ok), secs))
    for r in results:
        if r not in ok:
            print("  seed %d: %s" % (r["seed"], r.get("crash") or r.get("error")))
    modes = sorted({m for r in ok for m in r["res"]})
    for m in modes:
        rs = [r for r in ok if m in r["res"]]
        miss = [r for r in rs if r["res"][m]["missed"]]
        fh = [r for r in rs if r["res"][m]["false_hole"]]
        print("\nmode %-12s trials %4d  missed %3d  false-hole %3d" % (m, len(rs), len(miss), len(fh)))
        if miss:
            print("   miss seeds:", " ".join(str(r["seed"]) for r in miss[:40]))
        if fh:
            print("   false-hole seeds:", " ".join(str(r["seed"]) for r in fh[:40]))
        if miss or fh:
            badset = set(r["seed"] for r in miss + fh)
            for cnd in BOOL_CONDS:
                t = [r for r in rs if r["cond"].get(cnd)]
                f = [r for r in rs if not r["cond"].get(cnd)]
                bt = sum(1 for r in t if r["seed"] in badset)
                bf = sum(1 for r in f if r["seed"] in badset)
                print("   %-28s true: %3d/%-4d false: %3d/%-4d" % (cnd, bt, len(t), bf, len(f)))


if __name__ == "__main__":
    main()
