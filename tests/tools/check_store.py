#!/usr/bin/python3
"""check_store.py: an independent consistency checker for rbdvault stores.

Written from docs/format.md alone; it never runs rbdvault and shares none of its code. It reads
the RocksDB index with `ldb` (Debian package rocksdb-tools) from a private copy of `index/`,
so the store itself is never written, and reads the pack files directly.

Usage: check_store.py [--before-recovery] [--shallow] [--in-place] [--ldb PATH] [-q] STORE

Checks (format.md section in brackets):
  * marker [3]; every key has its exact length and every value its exact layout [5];
  * counters are above every id in use [5, 7.2];
  * N/I records agree both ways; R records name an existing image with the same pool/name,
    the store's block size, a V key, and a parent equal to the image's previous revision [5.1,
    5.2, 11]; no R record is flagged forgetting and no W mark remains (strict) [5.2, 5.5, 7.3];
  * B entries belong to committed revisions of their image (strict) or to the pending revision
    of a W mark (--before-recovery) [1 inv. 4];
  * every C record's refs equals the number of B entries naming its hash, plus the patch C records
    naming it as their base [4.2]; every B hash has a
    C record [5.3, 11];
  * every C record points into a pack with a P record and an existing file; the chunk header
    there matches (magic, zero bytes, flags, lengths, hash); raw_len is the block size; the
    payload decodes to raw_len bytes whose SHA-256 is the hash [4, 6];
  * every P record's file exists, has the pack header (magic, id, reserved 0) and P.bytes as
    its size; a sequential scan finds P.chunks chunk headers ending exactly at the file end, and
    every C record's offset is one of them [4, 5.4];
  * no pack file without a P record, no *.tmp, no unexpected file in data/ (strict) [2, 7.3];
  * each existing revision's digest recomputed from the block map equals the stored one [8];
  * manifests [16]: each object in manifests/ has a valid name, header, lengths, entries and
    SHA-256 trailer; every existing revision has exactly one manifest (strict), whose record is
    byte for byte its R value (forgetting flag clear) and whose entries are exactly its B entries;
    no manifest names a revision that does not exist (strict).

Strict mode (the default, also spelled --after-recovery) describes a store as any writer leaves
it after it has opened the store (recovery ran) and finished. --before-recovery accepts what a
killed writer may leave for the next writer to clean up: W marks and their uncommitted entries,
revisions flagged forgetting, *.tmp files and pack files with no P record.

Output: one line per problem, then a summary line. Exit 0 clean, 1 problems, 2 usage error or
unreadable store.
"""

import argparse
import fcntl
import hashlib
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile

try:
    import zstandard
except ImportError:  # fall back to the zstd command line tool
    zstandard = None

CHUNK_HDR = 48
PACK_HDR = 16
MOD = 1 << 256
PACK_NAME = re.compile(r"^([0-9a-f]{8})\.pack$")
KNOWN_COUNTERS = ("next_revision", "next_image", "next_pack")


class Unreadable(Exception):
    pass


MANIFEST_NAME = re.compile(r"^([0-9a-f]{16})\.([0-9a-f]{8})$")
MANIFEST_HEADER = b"RVMANI01\x01" + b"\0" * 7


def entry_bytes(block, value):
    """What the checker hashes per entry, to compare a manifest with the block map."""
    return struct.pack(">Q", block) + (b"H" + value if value else b"Z")


def parse_manifest(data):
    """Decodes a manifest object [16.1]: (record bytes, generation, absorbed, entries digest, n)."""
    if len(data) < 16 + 20 + 32:
        raise ValueError("%d bytes is too short" % len(data))
    if hashlib.sha256(data[:-32]).digest() != data[-32:]:
        raise ValueError("SHA-256 trailer does not match")
    if data[:16] != MANIFEST_HEADER:
        raise ValueError("bad header %r" % data[:16])
    tail_len, count, entry_len = struct.unpack_from("<IQQ", data, len(data) - 52)
    body = len(data) - 52 - 16
    if tail_len > body or entry_len != body - tail_len:
        raise ValueError("section lengths disagree with the size")
    tail = data[16 + entry_len:16 + entry_len + tail_len]
    if len(tail) < 4:
        raise ValueError("tail too short")
    (rec_len,) = struct.unpack_from("<I", tail, 0)
    if 4 + rec_len + 8 > len(tail):
        raise ValueError("record length past the tail")
    rec = tail[4:4 + rec_len]
    gen, n = struct.unpack_from("<II", tail, 4 + rec_len)
    if len(tail) != 4 + rec_len + 8 + 8 * n:
        raise ValueError("absorbed list disagrees with the tail length")
    absorbed = list(struct.unpack_from("<%dQ" % n, tail, 4 + rec_len + 8))
    h = hashlib.sha256()
    pos, end, block, seen = 16, 16 + entry_len, -1, 0
    while pos < end:
        v, shift = 0, 0
        while True:
            if pos >= end or shift > 63:
                raise ValueError("entry %d truncated" % seen)
            c = data[pos]
            pos += 1
            v |= (c & 0x7F) << shift
            shift += 7
            if not c & 0x80:
                break
        block = block + 1 + (v >> 1)
        value = b""
        if v & 1:
            if pos + 32 > end:
                raise ValueError("entry %d hash truncated" % seen)
            value = data[pos:pos + 32]
            pos += 32
        h.update(entry_bytes(block, value))
        seen += 1
    if seen != count:
        raise ValueError("%d entries, footer says %d" % (seen, count))
    return rec, gen, absorbed, h.hexdigest(), seen


class Checker:
    def __init__(self, store, strict, deep, in_place, ldb, quiet):
        self.store = store
        self.strict = strict
        self.deep = deep
        self.in_place = in_place
        self.ldb = ldb
        self.quiet = quiet
        self.problems = 0
        self.bs = None
        self.counters = {}
        self.names = {}       # (pool, name) -> image key, from N
        self.images = {}      # image key -> (pool, name), from I
        self.revs = {}        # revision id -> dict, from R
        self.vkeys = set()    # (image, rev)
        self.chunks = {}      # hash -> (pack, offset, stored_len, raw_len, flags, refs)
        self.packs = {}       # pack id -> (bytes, chunks)
        self.pending = {}     # revision id -> image, from W
        self.refcount = {}    # hash -> number of B entries naming it
        self.rev_raw = {}     # revision id -> R value bytes
        self.rev_entries = {}  # revision id -> sha256 over its B entries in block order
        self.stats = dict(keys=0, entries=0, chunks_read=0)

    # ---- output --------------------------------------------------------------------------------

    def problem(self, msg):
        self.problems += 1
        if not self.quiet or self.problems <= 50:
            print("problem: " + msg, flush=True)

    # ---- marker and lock -----------------------------------------------------------------------

    def read_marker(self):
        path = os.path.join(self.store, "rbdvault.store")
        try:
            with open(path, "rb") as f:
                text = f.read().decode("ascii", "replace")
        except OSError as e:
            raise Unreadable("no store marker: %s" % e)
        lines = text.split("\n")
        first = lines[0].split()
        if len(first) < 2 or first[0] != "rbdvault-store":
            raise Unreadable("marker does not start with 'rbdvault-store'")
        if first[1] not in ("2", "3"):  # 3 adds patch chunks [4.2]; 2 is 3 without them
            raise Unreadable("unsupported format version %r (format 1 stores have no manifests: "
                             "upgrade them)" % first[1])
        kv = {}
        for line in lines[1:]:
            t = line.split(None, 1)
            if t:
                kv[t[0]] = t[1].strip() if len(t) > 1 else ""
        sid = kv.get("store_id")
        if sid is None or not re.fullmatch(r"[0-9a-f]{16}", sid):
            self.problem("marker: store_id %r is not 16 lowercase hex digits" % sid)
        bs = kv.get("block_size", "")
        if not bs.isdigit():
            raise Unreadable("marker: block_size %r missing or not decimal" % bs)
        self.bs = int(bs)
        if self.bs < 65536 or self.bs > 4194304 or self.bs & (self.bs - 1):
            self.problem("marker: block_size %d is not a power of two in [65536, 4194304]" % self.bs)
        if self.strict and os.path.exists(os.path.join(self.store, "rbdvault.store.tmp")):
            self.problem("rbdvault.store.tmp left over")

    def lock_readers(self):
        """Holds readers.lock shared, if it exists (creating it would write to the store) [9]."""
        path = os.path.join(self.store, "readers.lock")
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            return None
        try:
            fcntl.lockf(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise Unreadable("readers.lock is held exclusively (gc is running)")
        return fd

    # ---- ldb -----------------------------------------------------------------------------------

    def scan(self, db, lo=None, hi=None):
        """Yields (key, value) as bytes, in key order, streaming from `ldb scan --hex`."""
        cmd = [self.ldb, "--db=" + db, "--hex", "scan"]
        if lo is not None:
            cmd.append("--from=0x" + lo.hex().upper())
        if hi is not None:
            cmd.append("--to=0x" + hi.hex().upper())
        p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             stdin=subprocess.DEVNULL, bufsize=1 << 16)
        for line in p.stdout:
            line = line.rstrip("\n")
            k, sep, v = line.partition(" : ")
            if not sep or not k.startswith("0x") or not v.startswith("0x"):
                p.kill()
                p.wait()
                raise Unreadable("unexpected ldb output line: %r" % line[:200])
            yield bytes.fromhex(k[2:]), bytes.fromhex(v[2:])
        err = p.stderr.read()
        if p.wait() != 0:
            raise Unreadable("ldb scan failed (exit %d): %s" % (p.returncode, err.strip()))

    # ---- record decoding [5] -------------------------------------------------------------------

    @staticmethod
    def take_str(v, pos):
        if pos + 4 > len(v):
            raise ValueError("string length past end")
        (n,) = struct.unpack_from("<I", v, pos)
        pos += 4
        if pos + n > len(v):
            raise ValueError("string past end")
        return v[pos:pos + n], pos + n

    def decode_image(self, v):
        if len(v) < 9 or v[0] != 1:
            raise ValueError("bad version or too short")
        (key,) = struct.unpack_from("<Q", v, 1)
        pool, pos = self.take_str(v, 9)
        name, pos = self.take_str(v, pos)
        if pos != len(v):
            raise ValueError("%d trailing bytes" % (len(v) - pos))
        return key, pool, name

    def decode_revision(self, v):
        if len(v) < 17 or v[0] != 1:
            raise ValueError("bad version or too short")
        rid, image = struct.unpack_from("<QQ", v, 1)
        pos = 17
        strs = []
        for _ in range(4):
            s, pos = self.take_str(v, pos)
            strs.append(s)
        T = pos
        if len(v) - T < 111:
            raise ValueError("%d bytes after snap_name, want 111" % (len(v) - T))
        group = None
        if v[T + 110] & 16:  # group fields follow the flags (format.md 5.2)
            name, gpos = self.take_str(v, T + 111)
            if gpos + 16 != len(v):
                raise ValueError("group fields: %d bytes after the group name, want 16" % (len(v) - gpos))
            run, gap = struct.unpack_from("<QQ", v, gpos)
            if not 1 <= len(name) <= 255 or run == 0 or gap > 3600 * 1000000:
                raise ValueError("group fields out of range")
            group = (name, run, gap)
        elif len(v) - T != 111:
            raise ValueError("%d bytes after snap_name, want 111" % (len(v) - T))
        snap_id, created, size, parent = struct.unpack_from("<QqQQ", v, T)
        kind = v[T + 32]
        (block_size,) = struct.unpack_from("<I", v, T + 33)
        digest = v[T + 78:T + 110]
        flags = v[T + 110]
        return dict(id=rid, image=image, pool=strs[0], name=strs[1], size=size, parent=parent,
                    kind=kind, block_size=block_size, digest=digest, flags=flags, group=group)

    # ---- pass 1: every key but B ---------------------------------------------------------------

    def pass_records(self, db):
        for k, v in self.scan(db, lo=b"C"):
            self.stats["keys"] += 1
            t = k[:1]
            try:
                if t == b"C":
                    self.rec_chunk(k, v)
                elif t == b"I":
                    self.rec_image(k, v)
                elif t == b"N":
                    self.rec_name(k, v)
                elif t == b"P":
                    self.rec_pack(k, v)
                elif t == b"R":
                    self.rec_revision(k, v)
                elif t == b"V":
                    self.rec_v(k, v)
                elif t == b"W":
                    self.rec_pending(k, v)
                elif t == b"X":
                    self.rec_counter(k, v)
                else:
                    self.problem("key %s has an unknown type" % k.hex())
            except ValueError as e:
                self.problem("key %s: undecodable value (%s): %s" % (k.hex(), e, v.hex()[:80]))

    def rec_counter(self, k, v):
        name = k[1:].decode("ascii", "replace")
        if name not in KNOWN_COUNTERS:
            self.problem("unknown counter key %s" % k.hex())
        if len(v) != 8:
            raise ValueError("counter value is %d bytes" % len(v))
        self.counters[name] = struct.unpack("<Q", v)[0]

    def rec_name(self, k, v):
        pool, sep, name = k[1:].partition(b"\0")
        if not sep:
            self.problem("N key %s has no 0x00 separator" % k.hex())
            return
        if len(v) != 8:
            raise ValueError("N value is %d bytes" % len(v))
        self.names[(pool, name)] = struct.unpack("<Q", v)[0]

    def rec_image(self, k, v):
        if len(k) != 9:
            self.problem("I key %s is %d bytes, want 9" % (k.hex(), len(k)))
            return
        (ik,) = struct.unpack(">Q", k[1:])
        key, pool, name = self.decode_image(v)
        if key != ik:
            self.problem("image %d: record says key %d" % (ik, key))
        self.images[ik] = (pool, name)

    def rec_revision(self, k, v):
        if len(k) != 9:
            self.problem("R key %s is %d bytes, want 9" % (k.hex(), len(k)))
            return
        (rid,) = struct.unpack(">Q", k[1:])
        r = self.decode_revision(v)
        if r["id"] != rid:
            self.problem("revision %d: record says id %d" % (rid, r["id"]))
        if rid == 0:
            self.problem("revision id 0 is reserved for 'none'")
        self.revs[rid] = r
        self.rev_raw[rid] = bytes(v)

    def rec_v(self, k, v):
        if len(k) != 17:
            self.problem("V key %s is %d bytes, want 17" % (k.hex(), len(k)))
            return
        if v:
            self.problem("V key %s has a %d-byte value, want empty" % (k.hex(), len(v)))
        self.vkeys.add(struct.unpack(">QQ", k[1:]))

    def rec_chunk(self, k, v):
        if len(k) != 33:
            self.problem("C key %s is %d bytes, want 33" % (k.hex(), len(k)))
            return
        # 30 bytes, 62 for a patch (flags 2, 3): its base hash follows [5.3]
        if len(v) < 30 or v[0] != 1 or len(v) != (62 if v[21] & 2 else 30):
            raise ValueError("C value is %d bytes / version %d, want 30 (62 for a patch) / 1" %
                             (len(v), v[0] if v else -1))
        pack, offset, stored, raw, flags, refs = struct.unpack("<IQIIBQ", v[1:30])
        self.chunks[k[1:]] = (pack, offset, stored, raw, flags, refs, v[30:62] if flags & 2 else None)

    def rec_pack(self, k, v):
        if len(k) != 5:
            self.problem("P key %s is %d bytes, want 5" % (k.hex(), len(k)))
            return
        if len(v) != 17 or v[0] != 1:
            raise ValueError("P value is %d bytes / version %d, want 17 / 1" % (len(v), v[0] if v else -1))
        (pid,) = struct.unpack(">I", k[1:])
        self.packs[pid] = struct.unpack("<QQ", v[1:])

    def rec_pending(self, k, v):
        if len(k) not in (1, 9):
            self.problem("W key %s is %d bytes, want 9 (or 1, first release)" % (k.hex(), len(k)))
            return
        if len(v) != 17 or v[0] != 1:
            raise ValueError("W value is %d bytes / version %d, want 17 / 1" % (len(v), v[0] if v else -1))
        rev, image = struct.unpack("<QQ", v[1:])
        if len(k) == 9 and struct.unpack(">Q", k[1:])[0] != rev:
            self.problem("W key %s names revision %d in its value" % (k.hex(), rev))
        if self.strict:
            self.problem("pending mark W for revision %d of image %d remains (no recovery ran)" % (rev, image))
        self.pending[rev] = image

    # ---- cross-record checks -------------------------------------------------------------------

    def check_records(self):
        for (pool, name), ik in self.names.items():
            if ik not in self.images:
                self.problem("N record %r/%r names image %d with no I record" % (pool, name, ik))
            elif self.images[ik] != (pool, name):
                self.problem("N record %r/%r names image %d, whose I record is %r/%r" %
                             ((pool, name, ik) + self.images[ik]))
        for ik, pn in self.images.items():
            if ik == 0:
                self.problem("image key 0 is reserved for 'none'")
            if self.names.get(pn) != ik:
                self.problem("image %d (%r/%r) has no N record naming it" % ((ik,) + pn))

        by_image = {}
        for rid in sorted(self.revs):
            r = self.revs[rid]
            ik = r["image"]
            by_image.setdefault(ik, []).append(rid)
            if ik not in self.images:
                self.problem("revision %d names image %d with no I record" % (rid, ik))
            elif self.images[ik] != (r["pool"], r["name"]):
                self.problem("revision %d: pool/name %r/%r differ from image %d's I record %r/%r" %
                             ((rid, r["pool"], r["name"], ik) + self.images[ik]))
            if r["block_size"] != self.bs:
                self.problem("revision %d: block_size %d, store's is %d" % (rid, r["block_size"], self.bs))
            if r["kind"] not in (0, 1):
                self.problem("revision %d: kind %d is neither 0 nor 1" % (rid, r["kind"]))
            if (ik, rid) not in self.vkeys:
                self.problem("revision %d has no V key for image %d" % (rid, ik))
            if r["flags"] & 2 and self.strict:
                self.problem("revision %d is flagged forgetting (forget unfinished, no recovery ran)" % rid)
        for ik, rid in sorted(self.vkeys):
            if rid not in self.revs or self.revs[rid]["image"] != ik:
                self.problem("V key for image %d revision %d has no matching R record" % (ik, rid))
        # Parent pointers: the image's previous revision, 0 for the first [5.2, 7.4, 11]. A
        # revision being forgotten keeps its place in the chain until forget's last batch.
        self.by_image = by_image
        for ik, rids in by_image.items():
            prev = 0
            for rid in rids:
                if self.revs[rid]["parent"] != prev:
                    self.problem("revision %d of image %d: parent %d, previous revision is %d" %
                                 (rid, ik, self.revs[rid]["parent"], prev))
                prev = rid
        for rev, ik in self.pending.items():
            if ik not in self.images:
                self.problem("pending revision %d names image %d with no I record" % (rev, ik))
            if rev in self.revs:
                self.problem("pending revision %d also has an R record" % rev)
            newer = [x for x in by_image.get(ik, []) if x > rev]
            if newer:
                self.problem("pending revision %d is older than committed revision %d of image %d" %
                             (rev, newer[-1], ik))
        # Counters hold the next id to assign [5, 7.2].
        for name in KNOWN_COUNTERS:
            if name not in self.counters:
                self.problem("counter %s is missing" % name)
        ids = [("next_revision", max(list(self.revs) + list(self.pending) + [0])),
               ("next_image", max(list(self.images) + list(self.names.values()) + [0])),
               ("next_pack", max(list(self.packs) + [0]))]
        for name, top in ids:
            if name in self.counters and self.counters[name] <= top:
                self.problem("counter %s = %d, but id %d is in use" % (name, self.counters[name], top))

    # ---- pass 2: the block map, streamed -------------------------------------------------------

    def pass_block_map(self, db):
        """Counts references and recomputes every existing revision's digest [8], one block at a
        time: the entries of one image are sorted by block, then by revision [5]."""
        self.digests = {}
        cur_image = None
        cur_block = None
        entries = []  # (rev, value) of the current block, ascending rev
        stray = {}    # (image, rev) -> entries naming no committed revision of the image
        for k, v in self.scan(db, lo=b"B", hi=b"C"):
            self.stats["keys"] += 1
            self.stats["entries"] += 1
            if len(k) != 25:
                self.problem("B key %s is %d bytes, want 25" % (k.hex(), len(k)))
                continue
            ik, block, rev = struct.unpack(">QQQ", k[1:])
            if len(v) not in (0, 32):
                self.problem("B entry image %d block %d rev %d: value is %d bytes, want 0 or 32" %
                             (ik, block, rev, len(v)))
                continue
            if len(v) == 32:
                self.refcount[v] = self.refcount.get(v, 0) + 1
            self.rev_entries.setdefault(rev, hashlib.sha256()).update(entry_bytes(block, v))
            r = self.revs.get(rev)
            if r is not None:
                if r["image"] != ik:
                    self.problem("B entry image %d block %d names revision %d of image %d" %
                                 (ik, block, rev, r["image"]))
            elif self.pending.get(rev) == ik and not self.strict:
                pass  # uncommitted entry of a pending revision, for recovery to remove
            else:
                stray[(ik, rev)] = stray.get((ik, rev), 0) + 1
            if (ik, block) != (cur_image, cur_block):
                if cur_image is not None:
                    self.digest_block(cur_image, cur_block, entries)
                cur_image, cur_block, entries = ik, block, []
            entries.append((rev, v))
        if cur_image is not None:
            self.digest_block(cur_image, cur_block, entries)
        for (ik, rev), n in sorted(stray.items()):
            self.problem("%d B entries of image %d name revision %d, which is not a committed revision "
                         "of that image%s" % (n, ik, rev, " (pending)" if rev in self.pending else ""))

    def existing(self, ik):
        """The existing revisions of an image: R record, forgetting flag clear [1, 6]."""
        cache = self.__dict__.setdefault("_existing", {})
        if ik not in cache:
            cache[ik] = [(rid, -(-self.revs[rid]["size"] // self.bs))
                         for rid in self.by_image.get(ik, []) if not self.revs[rid]["flags"] & 2]
        return cache[ik]

    def digest_block(self, ik, block, entries):
        i = 0
        win = None
        for rid, n in self.existing(ik):
            while i < len(entries) and entries[i][0] <= rid:
                win = entries[i][1]
                i += 1
            if block < n and win:
                t = hashlib.sha256(struct.pack("<Q", block) + win).digest()
                self.digests[rid] = (self.digests.get(rid, 0) + int.from_bytes(t, "little")) % MOD

    def check_digests(self):
        for ik in self.by_image:
            for rid, _ in self.existing(ik):
                r = self.revs[rid]
                size_term = int.from_bytes(hashlib.sha256(b"size" + struct.pack("<Q", r["size"])).digest(),
                                           "little")
                d = (self.digests.get(rid, 0) + size_term) % MOD
                if d.to_bytes(32, "little") != r["digest"]:
                    self.problem("revision %d of image %d: digest recomputed from the block map %s "
                                 "differs from the recorded %s" %
                                 (rid, ik, d.to_bytes(32, "little").hex(), r["digest"].hex()))

    # ---- chunks and packs [4] ------------------------------------------------------------------

    def check_refs(self):
        # A patch's C record holds one reference on its base [4.2].
        patches_on = {}
        for h, c in self.chunks.items():
            if c[6] is not None:
                patches_on[c[6]] = patches_on.get(c[6], 0) + 1
        for h, (_, _, _, _, _, refs, _) in self.chunks.items():
            n = self.refcount.get(h, 0)
            if refs != n + patches_on.get(h, 0):
                self.problem("chunk %s: refs %d, but %d block map entries name it (and %d patch records)" %
                             (h.hex(), refs, n, patches_on.get(h, 0)))
        for h, n in self.refcount.items():
            if h not in self.chunks:
                self.problem("chunk %s is named by %d block map entries but has no C record" % (h.hex(), n))

    def decode(self, flags, payload, raw_len):
        if flags == 0:
            return payload
        if flags & 2:
            raise ValueError("a patch is not decoded alone")
        if zstandard is not None:
            d = zstandard.ZstdDecompressor().decompressobj()
            try:
                out = d.decompress(payload)
            except zstandard.ZstdError as e:
                raise ValueError("zstd: %s" % e)
            if not d.eof:
                raise ValueError("zstd frame is incomplete")
            if d.unused_data:
                raise ValueError("%d bytes after the zstd frame" % len(d.unused_data))
            return out
        p = subprocess.run(["zstd", "-d", "-q", "-c"], input=payload, capture_output=True)
        if p.returncode != 0:
            raise ValueError("zstd: %s" % p.stderr.decode(errors="replace").strip())
        return p.stdout

    def check_packs(self):
        data = os.path.join(self.store, "data")
        try:
            files = os.listdir(data)
        except OSError as e:
            raise Unreadable("cannot list data/: %s" % e)
        on_disk = {}
        for f in sorted(files):
            m = PACK_NAME.match(f)
            if m:
                on_disk[int(m.group(1), 16)] = f
            elif f.endswith(".tmp"):
                if self.strict:
                    self.problem("data/%s: a .tmp file is left over" % f)
            else:
                self.problem("data/%s: unexpected file" % f)
        for pid in sorted(on_disk):
            if pid not in self.packs and self.strict:
                self.problem("data/%s: orphan pack file with no P record" % on_disk[pid])

        by_pack = {}
        for h, c in self.chunks.items():
            by_pack.setdefault(c[0], []).append((c[1], h, c))
        for pid in sorted(set(self.packs) | set(by_pack)):
            name = "%08x.pack" % pid
            path = os.path.join(data, name)
            if pid not in self.packs:
                self.problem("%d C record(s) point into pack %s, which has no P record" %
                             (len(by_pack[pid]), name))
            try:
                f = open(path, "rb")
            except OSError as e:
                self.problem("pack %s: cannot open: %s%s" %
                             (name, e.strerror, "" if pid in self.packs else " (and no P record)"))
                continue
            with f:
                self.check_pack(pid, name, f, sorted(by_pack.get(pid, [])))

    def check_pack(self, pid, name, f, chunks):
        size = os.fstat(f.fileno()).st_size
        rec = self.packs.get(pid)
        if rec is not None and rec[0] != size:
            self.problem("pack %s: file is %d bytes, P record says %d" % (name, size, rec[0]))
        hdr = f.read(PACK_HDR)
        if len(hdr) < PACK_HDR:
            self.problem("pack %s: file is shorter than its 16-byte header" % name)
        else:
            if hdr[:8] != b"RVPACK01":
                self.problem("pack %s: bad pack magic %r" % (name, hdr[:8]))
            fid, reserved = struct.unpack_from("<II", hdr, 8)
            if fid != pid:
                self.problem("pack %s: header says pack id %d" % (name, fid))
            if reserved != 0:
                self.problem("pack %s: reserved header field is %d, want 0" % (name, reserved))
        referenced = {c[1] for c in chunks}
        # Sequential scan [4]: chunk headers back to back from offset 16 to the end of the file.
        # A damaged header that no C record points at (a copy replaced by repair, 7.7) ends the
        # scan without a problem; the chunk count is then not comparable.
        starts = set()
        pos = PACK_HDR
        complete = True
        while pos < size:
            f.seek(pos)
            h = f.read(CHUNK_HDR)
            if len(h) < CHUNK_HDR or h[:4] != b"RVCK":
                if pos in referenced or len(h) < CHUNK_HDR:
                    self.problem("pack %s: sequential scan finds no chunk header at offset %d "
                                 "(%s)" % (name, pos, "truncated" if len(h) < CHUNK_HDR else "bad magic"))
                complete = False
                break
            (stored,) = struct.unpack_from("<I", h, 12)
            starts.add(pos)
            pos += CHUNK_HDR + stored
        if complete and pos > size:
            self.problem("pack %s: last chunk at %d runs %d bytes past the end of the file" %
                         (name, max(starts), pos - size))
            complete = False
        if complete and rec is not None and len(starts) != rec[1]:
            self.problem("pack %s: %d chunks found, P record says %d" % (name, len(starts), rec[1]))
        for offset, hsh, (_, _, stored, raw, flags, _, base) in chunks:
            self.check_chunk(name, f, size, hsh, offset, stored, raw, flags, starts, complete, base)

    def full_content(self, hsh):
        """A full chunk's verified content, read by its C record (a patch's base [4.2])."""
        c = self.chunks.get(hsh)
        if c is None:
            raise ValueError("base %s has no C record" % hsh.hex()[:16])
        pack, offset, stored, raw, flags, _, _ = c
        if flags not in (0, 1):
            raise ValueError("base %s is itself a patch (flags %d)" % (hsh.hex()[:16], flags))
        with open(os.path.join(self.store, "data", "%08x.pack" % pack), "rb") as f:
            f.seek(offset + CHUNK_HDR)
            content = self.decode(flags, f.read(stored), raw)
        if len(content) != raw or hashlib.sha256(content).digest() != hsh:
            raise ValueError("base %s does not match its SHA-256" % hsh.hex()[:16])
        return content

    def apply_patch(self, flags, payload, raw, base, base_content):
        """The content a patch payload [4.2] gives over base_content."""
        pages = raw // 4096
        bmlen = (pages + 7) // 8
        if raw % 4096 or len(payload) < 32 + bmlen:
            raise ValueError("patch shorter than base and bitmap")
        if payload[:32] != base:
            raise ValueError("patch payload names base %s, C record %s" % (payload[:32].hex()[:16], base.hex()[:16]))
        bitmap = payload[32:32 + bmlen]
        marked = [p for p in range(bmlen * 8) if bitmap[p // 8] >> (p % 8) & 1]
        if not marked or marked[-1] >= pages:
            raise ValueError("patch bitmap marks no page or a page beyond the block")
        body = self.decode(flags & 1, payload[32 + bmlen:], len(marked) * 4096)
        if len(body) != len(marked) * 4096:
            raise ValueError("patch pages are %d bytes for %d pages" % (len(body), len(marked)))
        out = bytearray(base_content)
        for i, p in enumerate(marked):
            out[p * 4096:(p + 1) * 4096] = body[i * 4096:(i + 1) * 4096]
        return bytes(out)

    def check_chunk(self, name, f, size, hsh, offset, stored, raw, flags, starts, complete, base=None):
        where = "chunk %s (%s at %d)" % (hsh.hex()[:16], name, offset)
        if raw != self.bs:
            self.problem("%s: C record raw_len %d is not the block size %d" % (where, raw, self.bs))
        if flags & 2:
            b = self.chunks.get(base)
            if b is None or b[4] not in (0, 1):
                self.problem("%s: patch base %s is %s" % (where, base.hex()[:16],
                                                           "missing" if b is None else "itself a patch"))
        if flags not in (0, 1, 2, 3):
            self.problem("%s: C record flags %d" % (where, flags))
        if flags == 0 and stored != raw:
            self.problem("%s: raw chunk with stored_len %d != raw_len %d" % (where, stored, raw))
        if offset + CHUNK_HDR + stored > size:
            self.problem("%s: extends past the end of the %d-byte pack file" % (where, size))
            return
        if complete and offset not in starts:
            self.problem("%s: offset is not a chunk boundary of the pack" % where)
        f.seek(offset)
        h = f.read(CHUNK_HDR)
        if h[:4] != b"RVCK":
            self.problem("%s: bad chunk header magic %r" % (where, h[:4]))
            return
        hflags = h[4]
        hraw, hstored = struct.unpack_from("<II", h, 8)
        if h[5:8] != b"\0\0\0":
            self.problem("%s: header bytes 5-7 are not zero" % where)
        if (hflags, hraw, hstored) != (flags, raw, stored):
            self.problem("%s: header flags/raw_len/stored_len %d/%d/%d, C record %d/%d/%d" %
                         (where, hflags, hraw, hstored, flags, raw, stored))
            return
        if h[16:48] != hsh:
            self.problem("%s: header names hash %s" % (where, h[16:48].hex()))
            return
        if not self.deep:
            return
        payload = f.read(stored)
        self.stats["chunks_read"] += 1
        try:
            if flags & 2:
                content = self.apply_patch(flags, payload, raw, base, self.full_content(base))
            else:
                content = self.decode(flags, payload, raw)
        except (ValueError, OSError) as e:
            self.problem("%s: payload does not decode: %s" % (where, e))
            return
        if len(content) != raw:
            self.problem("%s: payload decodes to %d bytes, raw_len is %d" % (where, len(content), raw))
        elif hashlib.sha256(content).digest() != hsh:
            self.problem("%s: content does not match its SHA-256" % where)

    # ---- manifests [16] -----------------------------------------------------------------------

    def check_manifests(self):
        mdir = os.path.join(self.store, "manifests")
        files = sorted(os.listdir(mdir)) if os.path.isdir(mdir) else []
        live = {}  # revision -> [(generation, record, absorbed, entries digest)]
        for f in files:
            if f.endswith(".tmp"):
                if self.strict:
                    self.problem("manifests/%s: a .tmp file is left over" % f)
                continue
            m = MANIFEST_NAME.match(f)
            if not m:
                self.problem("manifests/%s: unexpected file" % f)
                continue
            rid, gen = int(m.group(1), 16), int(m.group(2), 16)
            with open(os.path.join(mdir, f), "rb") as fh:
                data = fh.read()
            try:
                rec, rgen, absorbed, digest, _ = parse_manifest(data)
                r = self.decode_revision(rec)
            except ValueError as e:
                self.problem("manifests/%s: %s" % (f, e))
                continue
            if r["id"] != rid or rgen != gen:
                self.problem("manifests/%s: names revision %d generation %d" % (f, r["id"], rgen))
            if r["flags"] & 2:
                self.problem("manifests/%s: record flagged forgetting" % f)
            live.setdefault(rid, []).append((gen, rec, absorbed, digest))
        existing = {rid for rid, r in self.revs.items() if not r["flags"] & 2}
        for rid in sorted(existing):
            gens = live.get(rid, [])
            if not gens:
                self.problem("revision %d has no manifest" % rid)
                continue
            if len(gens) > 1 and self.strict:
                self.problem("revision %d has %d manifest generations" % (rid, len(gens)))
            gen, rec, _, digest = max(gens)
            if rec != self.rev_raw[rid]:
                self.problem("revision %d: its manifest's record differs from its R value" % rid)
            want = self.rev_entries.get(rid, hashlib.sha256()).hexdigest()
            if digest != want:
                self.problem("revision %d: its manifest's entries differ from its block map entries" % rid)
        for rid in sorted(set(live) - existing):
            if self.strict or (rid not in self.pending and rid not in self.revs):
                absorbed = any(rid in a for g in live.values() for (_, _, a, _) in g)
                if self.strict or not absorbed:
                    self.problem("manifest of revision %d, which does not exist" % rid)

    # ---- driver --------------------------------------------------------------------------------

    def run(self):
        if not os.path.isdir(self.store):
            raise Unreadable("%s is not a directory" % self.store)
        self.read_marker()
        lock = self.lock_readers()
        tmp = None
        try:
            index = os.path.join(self.store, "index")
            if not os.path.isfile(os.path.join(index, "CURRENT")):
                raise Unreadable("index/ has no RocksDB database")
            if self.in_place:
                db = index
            else:
                tmp = tempfile.mkdtemp(prefix="check_store-")
                db = os.path.join(tmp, "index")
                shutil.copytree(index, db, ignore=shutil.ignore_patterns("LOCK", "LOG*"))
            self.pass_records(db)
            self.check_records()
            self.pass_block_map(db)
            self.check_refs()
            self.check_digests()
            self.check_packs()
            self.check_manifests()
        finally:
            if tmp:
                shutil.rmtree(tmp, ignore_errors=True)
            if lock is not None:
                os.close(lock)
        nrev = len(self.revs)
        print("%s: %d problem(s); %d keys, %d revisions, %d images, %d chunks (%d payloads read), "
              "%d packs, %d block map entries, %s mode" %
              (self.store, self.problems, self.stats["keys"], nrev, len(self.images), len(self.chunks),
               self.stats["chunks_read"], len(self.packs), self.stats["entries"],
               "strict" if self.strict else "before-recovery"), flush=True)
        return 1 if self.problems else 0


def main(argv):
    ap = argparse.ArgumentParser(description="Independent rbdvault store checker (docs/format.md).")
    ap.add_argument("store")
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--after-recovery", dest="strict", action="store_true", default=True,
                      help="strict: the store as a writer leaves it after opening it (default)")
    mode.add_argument("--before-recovery", dest="strict", action="store_false",
                      help="accept what a killed writer leaves for recovery (W marks, their "
                           "entries, forgetting flags, .tmp files, packs without P record)")
    ap.add_argument("--shallow", action="store_true", help="do not read and hash chunk payloads")
    ap.add_argument("--in-place", action="store_true",
                    help="run ldb on STORE/index itself (read-only) instead of a private copy")
    ap.add_argument("--ldb", default=shutil.which("ldb") or "/usr/bin/ldb")
    ap.add_argument("-q", "--quiet", action="store_true", help="print at most 50 problems")
    try:
        a = ap.parse_args(argv)
    except SystemExit as e:
        return 2 if e.code else 0
    c = Checker(a.store, a.strict, not a.shallow, a.in_place, a.ldb, a.quiet)
    try:
        return c.run()
    except Unreadable as e:
        print("%s: unreadable: %s" % (a.store, e), flush=True)
        return 2
    except OSError as e:
        print("%s: unreadable: %s" % (a.store, e), flush=True)
        return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
