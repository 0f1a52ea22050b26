#!/usr/bin/python3
"""rbdvault benchmark, side by side with Ceph's own tools on a throwaway local cluster.

    deploy/benchmark.py [--runs 3] [--size-gib 4] [--work DIR]

Builds nothing: run deploy/build.sh first. Starts its own micro-ceph clusters (memstore, a fresh one
per run), so the figures measure rbdvault against rbd on the same cluster in the same run. Prints a Markdown report
(the table in docs/benchmarks.md comes from here). Not part of CI's pass/fail.

Cases (medians of --runs runs):
  full         rbdvault backup (first, fresh store)        vs  rbd export SNAP FILE
  incremental  rbdvault backup after 1% scattered 4 KiB    vs  rbd export-diff --from-snap
  restore      rbdvault restore --to POOL/NEW              vs  rbd import FILE POOL/NEW
  restore chain  restores of the first and the newest revision of a full + 10 deltas, to a new
               image (vs rbd import of the same bytes) and to a file on tmpfs (GB/s, CPU seconds)
  thin RSS     peak RSS of a backup of a 1 TiB thin image with 1 GiB written
  space        stored bytes and index bytes vs data bytes
  steady       (--steady-runs, default 5; image --steady-size-gib, default 2, half random data)
               the nightly incremental: 1% rewritten as scattered 4 KiB writes to objects that
               existed at the base snapshot, rbdvault backup vs rbd export-diff --from-snap + sync,
               with the bytes each read from Ceph next to Ceph's exact diff; and the CPU seconds
               (user+sys, wait4) per GiB of data of the full backup before it, with its split
               (hash, compress, index) from the backup's JSON
  rados        (--rados-runs, default --runs; image --rados-size-gib, default --size-gib) the full
               backup into a RADOS store (a second pool, "backup", of the same fresh cluster) vs into
               a local store, of the same image in the same run (which goes first alternates), and a
               restore to a file on tmpfs from each; every restored file must equal `rbd export` of
               the backup's snapshot (SHA-256), else the benchmark fails
"""

import argparse
import hashlib
import json
import os
import platform
import random
import shutil
import statistics
import subprocess
import tempfile
import time

import rados
import rbd

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RBDVAULT = os.environ.get("RBDVAULT_BENCH_BINARY", os.path.join(ROOT, "build", "rbdvault"))  # another build to compare
MICRO = os.path.join(ROOT, "deploy", "micro-ceph.sh")


def sh(*cmd, env=None):
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, env=env)


def timed(*cmd):
    """Runs cmd; returns (seconds, peak RSS in KiB of that process)."""
    t0 = time.monotonic()
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(p.pid, 0)
    secs = time.monotonic() - t0
    err = p.stderr.read().decode()
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit("failed: %s\n%s" % (" ".join(cmd), err))
    return secs, usage.ru_maxrss


def median(xs):
    return statistics.median(xs)


def fmt_s(x):
    return "%.2f s" % x


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--size-gib", type=int, default=4)
    ap.add_argument("--work", default=None, help="scratch directory (default: a new one in /tmp)")
    ap.add_argument("--steady-runs", type=int, default=5)
    ap.add_argument("--steady-size-gib", type=int, default=2)
    ap.add_argument("--restore-runs", type=int, default=5, help="runs of the restore rows (a fresh cluster each)")
    ap.add_argument("--rados-runs", type=int, default=None, help="runs of the RADOS store rows (default: --runs)")
    ap.add_argument("--rados-size-gib", type=float, default=None, help="image of the RADOS rows (default: --size-gib)")
    ap.add_argument("--only", choices=["all", "steady", "restore", "rados"], default="all",
                    help="steady/restore/rados: only the steady-state incremental, the restore-of-a-chain "
                         "or the RADOS store rows")
    args = ap.parse_args()
    if not os.access(RBDVAULT, os.X_OK):
        raise SystemExit("build first: deploy/build.sh")

    work = args.work or tempfile.mkdtemp(prefix="rbdvault-bench.")
    os.makedirs(work, exist_ok=True)
    try:
        report = run(args, work) if args.only == "all" else ""
        if args.only in ("all", "steady"):
            report += "\n\n" + steady_state(args, work)
        if args.only in ("all", "restore"):
            report += "\n\n" + "\n".join(run_restore_rows(args, work))
        if args.only in ("all", "rados"):
            report += "\n\n" + "\n".join(run_rados_rows(args, work))
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)
    print(report)


class Cluster:
    """A fresh micro-ceph cluster: memstore keeps everything in RAM and frees snapshot data lazily,
    so every run gets its own and nothing one run left behind can slow (or fill) the next."""

    def __init__(self, work, name, osd_bytes):
        self.dir = os.path.join(work, name)
        env = dict(os.environ, MICRO_CEPH_OSD_BYTES=str(osd_bytes))
        self.conf = subprocess.run([MICRO, "start", self.dir], check=True, capture_output=True, text=True,
                                   env=env).stdout.strip()
        self.rados = rados.Rados(conffile=self.conf)
        self.rados.connect()
        self.io = self.rados.open_ioctx("rbd")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def rv(self, *a):
        """An rbdvault command against this cluster."""
        return [RBDVAULT] + list(a) + ["-c", self.conf, "-q"]

    def rbdc(self, *a):
        """An rbd command against this cluster."""
        return ["rbd", "-c", self.conf, "--no-progress"] + list(a)

    def settle(self, quiet_share=0.05, most_seconds=120):
        """Waits until the OSD is idle (under quiet_share of a core for 2 s; at most most_seconds):
        after a run of backups it still trims the snapshots they removed, which would be counted
        against whatever is measured next."""
        with open(os.path.join(self.dir, "run", "osd.0.pid")) as f:
            pid = int(f.read().strip())
        tick = os.sysconf("SC_CLK_TCK")

        def cpu():
            with open("/proc/%d/stat" % pid) as f:
                fields = f.read().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / tick  # utime + stime

        deadline = time.monotonic() + most_seconds
        while time.monotonic() < deadline:
            before = cpu()
            time.sleep(2)
            if cpu() - before < 2 * quiet_share:
                return

    def close(self):
        self.io.close()
        self.rados.shutdown()
        subprocess.run([MICRO, "stop", self.dir, "--purge"], check=False)


def run(args, work):
    R = rbd.RBD()
    size = args.size_gib << 30
    data_bytes = size // 2
    res = {k: [] for k in ("full_rv", "full_ceph", "inc_rv", "inc_ceph", "restore_rv", "restore_ceph")}
    space = {}
    export_file = os.path.join(work, "bench.export")
    for i in range(args.runs):
        with Cluster(work, "cluster-%d" % i, 4 * size + (2 << 30)) as c:
            io = c.io
            rv, rbdc = c.rv, c.rbdc
            # The image: the first half random data, the second half never written.
            R.create(io, "bench", size, old_format=False)
            with rbd.Image(io, "bench") as img:
                for off in range(0, data_bytes, 4 << 20):
                    img.write(os.urandom(4 << 20), off)
            store = os.path.join(work, "store-%d" % i)
            sh(RBDVAULT, "init", "--store", store, "-q")
            # full: rbd export of a snapshot to a file vs the first backup into an empty store
            sh(*rbdc("snap", "create", "bench@ceph-full"))
            res["full_ceph"].append(timed(*rbdc("export", "bench@ceph-full", export_file))[0])
            res["full_rv"].append(timed(*rv("backup", "--store", store, "rbd/bench"))[0])
            if i == 0:
                du = json.loads(subprocess.run([RBDVAULT, "du", "--store", store, "--format", "json"], check=True,
                                               capture_output=True, text=True).stdout)
                space = {"data": data_bytes, "packs": du["pack_bytes"], "index": du["index_bytes"]}
            sh(*rbdc("snap", "rm", "bench@ceph-full"))
            # restore to a new image vs rbd import of the exported file
            res["restore_ceph"].append(timed(*rbdc("import", export_file, "rbd/bench-import"))[0])
            R.remove(io, "bench-import")
            os.unlink(export_file)
            res["restore_rv"].append(timed(*rv("restore", "--store", store, "rbd/bench", "--to", "rbd/bench-restored"))[0])
            R.remove(io, "bench-restored")
            # incremental: 1% of the image in scattered 4 KiB writes, the same change both ways
            rng = random.Random(i)
            with rbd.Image(io, "bench") as img:
                base = [s["name"] for s in img.list_snaps() if s["name"].startswith("rbdvault-")][0]
                for _ in range(size // 100 // 4096):
                    img.write(os.urandom(4096), rng.randrange(size // 4096) * 4096)
            sh(*rbdc("snap", "create", "bench@ceph-inc"))
            diff_file = os.path.join(work, "bench.diff")
            res["inc_ceph"].append(timed(*rbdc("export-diff", "--from-snap", base, "bench@ceph-inc", diff_file))[0])
            os.unlink(diff_file)
            res["inc_rv"].append(timed(*rv("backup", "--store", store, "rbd/bench"))[0])
            shutil.rmtree(store)

    # Peak RSS: a 1 TiB thin image with 1 GiB written in 4 MiB pieces at random places.
    with Cluster(work, "cluster-thin", 4 << 30) as c:
        rv = c.rv
        R.create(c.io, "thin", 1 << 40, old_format=False)
        rng = random.Random(7)
        with rbd.Image(c.io, "thin") as img:
            for _ in range(256):
                img.write(os.urandom(4 << 20), rng.randrange((1 << 40) // (4 << 20)) * (4 << 20))
        store = os.path.join(work, "store-thin")
        sh(RBDVAULT, "init", "--store", store, "-q")
        thin_secs, thin_rss = timed(*rv("backup", "--store", store, "rbd/thin"))
        raw = os.path.join(work, "thin.raw")
        _, thin_restore_rss = timed(*rv("restore", "--store", store, "rbd/thin", "--to-file", raw))
        os.unlink(raw)
        shutil.rmtree(store)

    def row(name, rv_key, ceph_key, ceph_name):
        a, b = median(res[rv_key]), median(res[ceph_key])
        return "| %s | %s | %s | %s | %.2fx | %s |" % (name, fmt_s(a), ceph_name, fmt_s(b), a / b, "met" if a <= b else "not met")

    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(l.split(":", 1)[1].strip() for l in f if l.startswith("model name"))
    except Exception:
        pass
    mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / (1 << 30)
    commit = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    ceph_ver = subprocess.run(["ceph", "--version"], capture_output=True, text=True).stdout.split("(")[0].strip()
    lines = [
        "Machine: %s, %d cores, %.0f GiB RAM, %s, %s; rbdvault %s; %d runs, medians; image %d GiB (half random data, half unallocated); memstore OSD."
        % (cpu, os.cpu_count(), mem_gib, platform.platform(), ceph_ver, commit, args.runs, args.size_gib),
        "",
        "| case | rbdvault | Ceph tool | Ceph | ratio | target (<= 1.0x) |",
        "|---|---|---|---|---|---|",
        row("full backup", "full_rv", "full_ceph", "`rbd export`"),
        row("incremental (1% scattered 4 KiB writes)", "inc_rv", "inc_ceph", "`rbd export-diff --from-snap`"),
        row("restore to a new image", "restore_rv", "restore_ceph", "`rbd import`"),
        "",
        "| measure | value | target |",
        "|---|---|---|",
        "| peak RSS, backup of a 1 TiB thin image with 1 GiB written | %.1f MiB (%.1f s) | < 256 MiB: %s |"
        % (thin_rss / 1024, thin_secs, "met" if thin_rss < 256 * 1024 else "not met"),
        "| peak RSS, restore of that image to a file | %.1f MiB | |" % (thin_restore_rss / 1024),
        "| stored bytes (pack files) / data bytes | %.3f (%d / %d) | |" % (space["packs"] / space["data"], space["packs"], space["data"]),
        "| index bytes / stored bytes | %.3f%% (%d bytes) | <= 1%%: %s |"
        % (100.0 * space["index"] / space["packs"], space["index"], "met" if space["index"] <= space["packs"] / 100 else "not met"),
        "",
        "Raw runs (s): " + ", ".join("%s=%s" % (k, [round(x, 2) for x in v]) for k, v in res.items()),
    ]
    return "\n".join(lines)


def timed_json(*cmd):
    """Runs an rbdvault command with --format json; returns (seconds, CPU seconds user+sys, JSON)."""
    t0 = time.monotonic()
    p = subprocess.Popen(list(cmd) + ["--format", "json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out = p.stdout.read()
    _, status, usage = os.wait4(p.pid, 0)
    secs = time.monotonic() - t0
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit("failed: %s\n%s" % (" ".join(cmd), p.stderr.read().decode()))
    return secs, usage.ru_utime + usage.ru_stime, json.loads(out)


def timed_then_sync(*cmd):
    """Seconds of cmd followed by sync(1): a file written is a backup only once it is on disk."""
    t0 = time.monotonic()
    sh(*cmd)
    sh("sync")
    return time.monotonic() - t0


def exact_diff_bytes(io, name, from_snap):
    """What Ceph's exact diff (whole_object=False) reports changed from from_snap to the head."""
    total = [0]
    with rbd.Image(io, name) as img:
        img.diff_iterate(0, img.size(), from_snap, lambda o, n, e: total.__setitem__(0, total[0] + n),
                         whole_object=False)
    return total[0]


def steady_state(args, work):
    """The nightly incremental (issue 15): every object the change touches existed at the base
    snapshot, so Ceph's exact diff is the 4 KiB writes themselves, not whole new objects."""
    R = rbd.RBD()
    size = args.steady_size_gib << 30
    data_bytes = size // 2
    res = {k: [] for k in ("rv", "ceph", "ceph_job", "rv_cpu", "ceph_cpu", "rv_ceph_bytes", "rv_store_bytes",
                           "rv_stored", "rv_patches", "ceph_bytes", "exact",
                           "inc_hash", "inc_patch", "inc_compress", "inc_index",
                           "full_cpu", "full_hash", "full_compress", "full_index", "full_secs")}
    for i in range(args.steady_runs):
        with Cluster(work, "steady-%d" % i, 4 * size + (2 << 30)) as c:
            io = c.io
            rv, rbdc = c.rv, c.rbdc
            R.create(io, "steady", size, old_format=False)
            with rbd.Image(io, "steady") as img:
                for off in range(0, data_bytes, 4 << 20):
                    img.write(os.urandom(4 << 20), off)
            store = os.path.join(work, "steady-store-%d" % i)
            sh(RBDVAULT, "init", "--store", store, "-q")
            secs, cpu, j = timed_json(*rv("backup", "--store", store, "rbd/steady"))
            gib = data_bytes / (1 << 30)
            res["full_secs"].append(secs)
            res["full_cpu"].append(cpu / gib)
            for k in ("hash", "compress", "index"):
                res["full_" + k].append(j["cpu_seconds"][k] / gib)
            with rbd.Image(io, "steady") as img:
                base = next(x["name"] for x in img.list_snaps() if x["name"].startswith("rbdvault-"))
            # 1% of the image as scattered 4 KiB writes into the data half: objects that existed.
            rng = random.Random(1000 + i)
            with rbd.Image(io, "steady") as img:
                for _ in range(size // 100 // 4096):
                    img.write(os.urandom(4096), rng.randrange(data_bytes // 4096) * 4096)
            res["exact"].append(exact_diff_bytes(io, "steady", base))
            # The same night done by hand with Ceph's tools: snapshot, export-diff, sync. The snapshot is
            # timed apart, as the export-diff row (the target) leaves it out; rbdvault's time has its own.
            t0 = time.monotonic()
            sh(*rbdc("snap", "create", "steady@ceph-inc"))
            snap_secs = time.monotonic() - t0
            diff_file = os.path.join(work, "steady.diff")
            # Ceph first: the backup removes the base snapshot once it is done with it (memstore keeps
            # everything in RAM, so there is no cache for the first to warm).
            t0 = time.monotonic()
            _, ceph_cpu = timed_cpu(*rbdc("export-diff", "--from-snap", base, "steady@ceph-inc", diff_file))
            sh("sync")
            res["ceph"].append(time.monotonic() - t0)
            res["ceph_job"].append(res["ceph"][-1] + snap_secs)
            res["ceph_cpu"].append(ceph_cpu)
            sh(*rbdc("snap", "rm", "steady@ceph-inc"))
            secs, rv_cpu, j = timed_json(*rv("backup", "--store", store, "rbd/steady"))
            res["rv_cpu"].append(rv_cpu)
            for k in ("hash", "patch", "compress", "index"):
                res["inc_" + k].append(j["cpu_seconds"].get(k, 0))
            res["ceph_bytes"].append(os.path.getsize(diff_file))
            os.unlink(diff_file)
            res["rv"].append(secs)
            res["rv_ceph_bytes"].append(j["bytes_read_ceph"])
            res["rv_store_bytes"].append(j["bytes_read_store"])
            res["rv_stored"].append(j["bytes_stored"])
            res["rv_patches"].append(j.get("patch_chunks", 0))  # 0: a binary from before patch chunks
            shutil.rmtree(store)
    m = {k: median(v) for k, v in res.items()}
    mib = lambda b: "%.1f MiB" % (b / (1 << 20))
    lines = [
        "Steady-state incremental: image %d GiB, %d GiB random data, then 1%% of the image rewritten as "
        "scattered 4 KiB writes to objects that existed at the base snapshot; %d runs, medians."
        % (args.steady_size_gib, args.steady_size_gib // 2, args.steady_runs),
        "",
        "| case | rbdvault | Ceph tool | Ceph | ratio | target (<= 1.0x) |",
        "|---|---|---|---|---|---|",
        "| steady-state incremental | %s | `rbd export-diff --from-snap` + `sync` | %s | %.2fx | %s |"
        % (fmt_s(m["rv"]), fmt_s(m["ceph"]), m["rv"] / m["ceph"], "met" if m["rv"] <= m["ceph"] else "not met"),
        "| the same night by hand | | `rbd snap create` + `rbd export-diff` + `sync` | %s | %.2fx | |"
        % (fmt_s(m["ceph_job"]), m["rv"] / m["ceph_job"]),
        "| CPU seconds (user+sys) of the process | %.2f s | `rbd export-diff` | %.2f s | %.2fx | |"
        % (m["rv_cpu"], m["ceph_cpu"], m["rv_cpu"] / m["ceph_cpu"]),
        "",
        "| measure | value | target |",
        "|---|---|---|",
        "| Ceph's exact diff | %s | |" % mib(m["exact"]),
        "| bytes read from Ceph by rbdvault | %s (%.2fx the exact diff) | <= 1.1x: %s |"
        % (mib(m["rv_ceph_bytes"]), m["rv_ceph_bytes"] / m["exact"],
           "met" if m["rv_ceph_bytes"] <= 1.1 * m["exact"] else "not met"),
        "| bytes read from the store (parent chunks) | %s | |" % mib(m["rv_store_bytes"]),
        "| `rbd export-diff` file | %s | |" % mib(m["ceph_bytes"]),
        "| bytes stored by the incremental (packs) | %s (%.2fx the exact diff), %d patch chunks | |"
        % (mib(m["rv_stored"]), m["rv_stored"] / m["exact"], m["rv_patches"]),
        "| ... the incremental's threads: SHA-256 / parent chunks read and checked / zstd / index | "
        "%.2f / %.2f / %.2f / %.2f s | |" % (m["inc_hash"], m["inc_patch"], m["inc_compress"], m["inc_index"]),
        "| full backup before it: CPU (user+sys) per GiB of data | %.2f s/GiB (%.2f s wall) | |"
        % (m["full_cpu"], m["full_secs"]),
        "| ... of which SHA-256 / zstd / index (thread CPU time) | %.2f / %.2f / %.2f s/GiB | |"
        % (m["full_hash"], m["full_compress"], m["full_index"]),
        "",
        "Raw runs: " + ", ".join("%s=%s" % (k, [round(x, 2) for x in v]) for k, v in res.items()),
    ]
    return "\n".join(lines)


# ---- restore rows (issue 15, point 2) ----------------------------------------------------------

RESTORE_CHAIN_DELTAS = 10


def timed_cpu(*cmd):
    """Runs cmd; returns (seconds, CPU seconds of that process). On a shared machine CPU seconds
    show what a restore costs when the wall clock mostly shows who else was running."""
    t0 = time.monotonic()
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(p.pid, 0)
    secs = time.monotonic() - t0
    err = p.stderr.read().decode()
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit("failed: %s\n%s" % (" ".join(cmd), err))
    return secs, usage.ru_utime + usage.ru_stime


def build_restore_chain(c, work, size):
    """An image of `size` bytes in cluster c, its first half random data, backed up once in full and then
    RESTORE_CHAIN_DELTAS times after 1% of it was rewritten in scattered 4 KiB writes inside the data
    half, so every revision holds the same amount of data at the same blocks. Returns (store, ids).
    Each delta's writes fall in 32 random objects of the data half: memstore keeps a snapshot's
    clone of every object written after it until it trims, and writes spread over every object
    would fill the OSD with clones by the fifth delta."""
    R = rbd.RBD()
    io, rv = c.io, c.rv
    data_bytes = size // 2
    R.create(io, "chain", size, old_format=False)
    store = os.path.join(work, "store-chain")
    sh(RBDVAULT, "init", "--store", store, "-q")
    rng = random.Random(15)
    with rbd.Image(io, "chain") as img:
        for off in range(0, data_bytes, 4 << 20):
            img.write(os.urandom(4 << 20), off)
    sh(*rv("backup", "--store", store, "rbd/chain"))
    for _ in range(RESTORE_CHAIN_DELTAS):
        objects = rng.sample(range(data_bytes >> 22), min(32, data_bytes >> 22))
        with rbd.Image(io, "chain") as img:
            pending = []
            for _ in range(size // 100 // 4096):  # 64 writes in flight: one at a time takes minutes
                pending.append(img.aio_write(os.urandom(4096), (rng.choice(objects) << 22) + rng.randrange(1024) * 4096,
                                             None))
                if len(pending) == 64:
                    [p.wait_for_complete_and_cb() for p in pending]
                    pending = []
            [p.wait_for_complete_and_cb() for p in pending]
        sh(*rv("backup", "--store", store, "rbd/chain"))
    revs = json.loads(subprocess.run([RBDVAULT, "ls", "--store", store, "rbd/chain", "--format", "json"], check=True,
                                     capture_output=True, text=True).stdout)
    return store, [r["id"] for r in revs]


def run_restore_rows(args, work):
    """Restores of the first and the newest revision of a chain of RESTORE_CHAIN_DELTAS deltas, to a
    new image (vs `rbd import` of the same bytes) and to a file on tmpfs. Returns report lines.
    A fresh cluster and chain per run: a memstore OSD keeps the memory of every image written into
    it, and on one cluster for all runs it grew until the store's pack files no longer stayed in
    the page cache, which made each later run's file restore slower than the one before."""
    size = args.size_gib << 30
    runs = args.restore_runs
    R = rbd.RBD()
    data = size // 2
    res = {k: [] for k in ("import", "first_image", "newest_image", "first_file", "newest_file", "first_file_cpu",
                           "newest_file_cpu")}
    shm = tempfile.mkdtemp(prefix="rbdvault-bench.", dir="/dev/shm")
    try:
        for i in range(runs):
            with Cluster(work, "cluster-restore-%d" % i, 4 * size + (2 << 30)) as c:
                io = c.io
                rv, rbdc = c.rv, c.rbdc
                store, ids = build_restore_chain(c, work, size)
                first, newest = ids[0], ids[-1]
                export_file = os.path.join(work, "chain.export")
                with rbd.Image(io, "chain") as img:
                    snap = [s["name"] for s in img.list_snaps() if s["name"].startswith("rbdvault-")][-1]
                sh(*rbdc("export", "chain@" + snap, export_file))
                # Untimed: the first 2 GiB written into a fresh memstore OSD cost it page faults that
                # later writes (into memory it freed) do not; measured first, `rbd import` took 9-10 s
                # against 1.6-2.6 s for the same import later on the same cluster.
                sh(*rbdc("import", export_file, "rbd/chain-warmup"))
                R.remove(io, "chain-warmup")
                c.settle()
                raw = os.path.join(shm, "restored.raw")
                # The file restores first, then the ones into the cluster, each as it would run alone.
                for key, rev in (("first", first), ("newest", newest)):
                    secs, cpu = timed_cpu(*rv("restore", "--store", store, "rbd/chain@%d" % rev, "--to-file", raw))
                    res[key + "_file"].append(secs)
                    res[key + "_file_cpu"].append(cpu)
                    os.unlink(raw)
                res["import"].append(timed(*rbdc("import", export_file, "rbd/chain-import"))[0])
                R.remove(io, "chain-import")
                for key, rev in (("first", first), ("newest", newest)):
                    res[key + "_image"].append(timed(*rv("restore", "--store", store, "rbd/chain@%d" % rev,
                                                          "--to", "rbd/chain-restored"))[0])
                    R.remove(io, "chain-restored")
                os.unlink(export_file)
                shutil.rmtree(store)
    finally:
        shutil.rmtree(shm, ignore_errors=True)
    m = {k: median(v) for k, v in res.items()}
    imp = m["import"]
    gbs = lambda secs: data / secs / 1e9
    met = lambda ok: "met" if ok else "not met"
    return [
        "Restore: image %d GiB (half random data), a full backup then %d deltas of 1%% scattered 4 KiB writes "
        "inside the data; first = the full (revision %d), newest = revision %d; medians of %d runs."
        % (args.size_gib, RESTORE_CHAIN_DELTAS, first, newest, runs),
        "",
        "| case | rbdvault | `rbd import` | ratio | target |",
        "|---|---|---|---|---|",
        "| restore of the first revision to a new image | %s | %s | %.2fx | <= 1.0x: %s |"
        % (fmt_s(m["first_image"]), fmt_s(imp), m["first_image"] / imp, met(m["first_image"] <= imp)),
        "| restore of the newest revision (%d deltas) to a new image | %s | %s | %.2fx | <= 1.0x: %s |"
        % (RESTORE_CHAIN_DELTAS, fmt_s(m["newest_image"]), fmt_s(imp), m["newest_image"] / imp,
           met(m["newest_image"] <= imp)),
        "",
        "| measure | value | target |",
        "|---|---|---|",
        "| newest / first revision, restore to a new image | %.2fx | <= 1.1x: %s |"
        % (m["newest_image"] / m["first_image"], met(m["newest_image"] <= 1.1 * m["first_image"])),
        "| newest / first revision, restore to a file on tmpfs | %.2fx | <= 1.1x: %s |"
        % (m["newest_file"] / m["first_file"], met(m["newest_file"] <= 1.1 * m["first_file"])),
        "| restore of the first revision to a file on tmpfs | %s, %.2f GB/s of data | >= 1.5 GB/s: %s |"
        % (fmt_s(m["first_file"]), gbs(m["first_file"]), met(gbs(m["first_file"]) >= 1.5)),
        "| restore of the newest revision to a file on tmpfs | %s, %.2f GB/s of data | >= 1.5 GB/s: %s |"
        % (fmt_s(m["newest_file"]), gbs(m["newest_file"]), met(gbs(m["newest_file"]) >= 1.5)),
        "| CPU seconds of a restore to a file (first / newest revision) | %.2f s / %.2f s, %.2f GB of data per CPU "
        "second | |" % (m["first_file_cpu"], m["newest_file_cpu"], data / m["first_file_cpu"] / 1e9),
        "| load average at the end (1 / 5 / 15 min) | %.1f / %.1f / %.1f | |" % os.getloadavg(),
        "",
        "Raw restore runs (s): " + ", ".join("%s=%s" % (k, [round(x, 2) for x in v]) for k, v in res.items()),
    ]


# ---- a store in RADOS (issue 13, point 5) -------------------------------------------------------

RADOS_STORE_POOL = "backup"


def sha256_of_cmd(*cmd):
    """SHA-256 of what cmd writes to stdout (streamed: nothing lands on disk)."""
    h = hashlib.sha256()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    for piece in iter(lambda: p.stdout.read(4 << 20), b""):
        h.update(piece)
    err = p.stderr.read().decode()
    if p.wait() != 0:
        raise SystemExit("failed: %s\n%s" % (" ".join(cmd), err))
    return h.hexdigest()


def sha256_of_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for piece in iter(lambda: f.read(4 << 20), b""):
            h.update(piece)
    return h.hexdigest()


def run_rados_rows(args, work):
    """Full backup of one image into a local store and into a RADOS store (a second pool of the same
    cluster), then a restore to a file on tmpfs from each; a fresh cluster per run. Each restored
    file is compared with `rbd export` of the snapshot its backup took: a fast wrong result fails."""
    R = rbd.RBD()
    size = int((args.rados_size_gib if args.rados_size_gib is not None else args.size_gib) * (1 << 30)) & ~((4 << 20) - 1)
    data_bytes = size // 2
    runs = args.rados_runs if args.rados_runs is not None else args.runs
    res = {k: [] for k in ("full_local", "full_rados", "restore_local", "restore_rados", "restore_local_cpu",
                           "restore_rados_cpu")}
    shm = tempfile.mkdtemp(prefix="rbdvault-bench.", dir="/dev/shm")
    try:
        for i in range(runs):
            # The image, the RADOS store's copy, and a restore's RBD reads: all in this OSD's RAM.
            with Cluster(work, "rados-%d" % i, 4 * size + (2 << 30)) as c:
                conf, io = c.conf, c.io
                rv, rbdc = c.rv, c.rbdc
                subprocess.run(["ceph", "-c", conf, "osd", "pool", "create", RADOS_STORE_POOL, "8", "8"], check=True,
                               capture_output=True)
                R.create(io, "bench", size, old_format=False)
                with rbd.Image(io, "bench") as img:
                    for off in range(0, data_bytes, 4 << 20):
                        img.write(os.urandom(4 << 20), off)
                local = os.path.join(work, "rados-local-store-%d" % i)
                remote = "rados:%s/run%d" % (RADOS_STORE_POOL, i)
                index_dir = os.path.join(work, "rados-index-%d" % i)
                stores = {"local": [local], "rados": [remote, "--index-dir", index_dir, "--store-conf", conf]}
                for where in stores.values():
                    sh(RBDVAULT, "init", "--store", *where, "-q")
                # Which store goes first alternates, so a slow moment of the shared machine (or a
                # warm cache) does not always favour the same one.
                order = ["local", "rados"] if i % 2 == 0 else ["rados", "local"]
                for k in order:
                    res["full_" + k].append(timed(*rv("backup", "--store", *stores[k], "rbd/bench"))[0])
                raw = os.path.join(shm, "restored.raw")
                for k in order:
                    secs, cpu = timed_cpu(*rv("restore", "--store", *stores[k], "rbd/bench", "--to-file", raw))
                    res["restore_" + k].append(secs)
                    res["restore_%s_cpu" % k].append(cpu)
                    # The oracle: rbd export of the snapshot this store's backup took.
                    revs = json.loads(subprocess.run([RBDVAULT, "ls", "--store", *stores[k], "rbd/bench", "--format", "json"],
                                                     check=True, capture_output=True, text=True).stdout)
                    snap = revs[-1]["snapshot"]
                    want = sha256_of_cmd(*rbdc("export", "bench@" + snap, "-"))
                    got = sha256_of_file(raw)
                    os.unlink(raw)
                    if got != want:
                        raise SystemExit("run %d: the restore from the %s store differs from rbd export of %s "
                                         "(%s != %s)" % (i, k, snap, got, want))
                shutil.rmtree(local)
                shutil.rmtree(index_dir)
    finally:
        shutil.rmtree(shm, ignore_errors=True)
    m = {k: median(v) for k, v in res.items()}
    ratio_b = m["full_rados"] / m["full_local"]
    ratio_r = m["restore_rados"] / m["restore_local"]
    # Both stores were measured in each run on the same cluster: the median of the runs' own ratios
    # is less exposed to a run that the shared machine slowed as a whole.
    per_run = lambda a, b: median([x / y for x, y in zip(res[a], res[b])])
    return [
        "RADOS store: image %.2f GiB (half random data, half unallocated), one micro-ceph cluster (memstore) per run "
        "holding the image (pool rbd) and the RADOS store (pool %s); the local store on %s; restores to a file on "
        "tmpfs, each checked against `rbd export` of its backup's snapshot (SHA-256); %d runs, medians."
        % (size / (1 << 30), RADOS_STORE_POOL, work, runs),
        "",
        "| case | RADOS store | local store | ratio of medians (median of per-run ratios) | target |",
        "|---|---|---|---|---|",
        "| full backup | %s | %s | %.2fx (per run: %.2fx) | <= 1.2x: %s |"
        % (fmt_s(m["full_rados"]), fmt_s(m["full_local"]), ratio_b, per_run("full_rados", "full_local"),
           "met" if ratio_b <= 1.2 else "not met"),
        "| restore to a file on tmpfs | %s | %s | %.2fx (per run: %.2fx) | |"
        % (fmt_s(m["restore_rados"]), fmt_s(m["restore_local"]), ratio_r, per_run("restore_rados", "restore_local")),
        "| CPU seconds of that restore | %.2f s | %.2f s | | |" % (m["restore_rados_cpu"], m["restore_local_cpu"]),
        "| load average at the end (1 / 5 / 15 min) | %.1f / %.1f / %.1f | | | |" % os.getloadavg(),
        "",
        "Raw RADOS runs (s): " + ", ".join("%s=%s" % (k, [round(x, 2) for x in v]) for k, v in res.items()),
    ]


if __name__ == "__main__":
    main()
