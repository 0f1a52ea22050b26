#!/usr/bin/python3
"""rbdvault batch benchmark: many small images, as a nightly run sees them.

    deploy/benchmark_batch.py [--runs 3] [--images 200] [--data-mib 1] [--parallel 1,2,4]

Builds nothing: run deploy/build.sh first. Each run starts its own micro-ceph cluster, creates the
images (64 MiB thin, --data-mib of random data each), then measures, all on that cluster:

  ceph script   a sequential shell-style loop per image: rbd snap create + rbd export-diff to a file
                (the baseline an operator would otherwise script)
  run -P N      rbdvault run --config (first backups into a fresh store) with images-in-parallel N
  incremental   after 4 KiB written to every image: rbdvault run --force with the largest N

Prints a Markdown table of medians (docs/benchmarks.md). Not part of CI's pass/fail.
"""

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import tempfile
import time

import rados
import rbd

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RBDVAULT = os.path.join(ROOT, "build", "rbdvault")
MICRO = os.path.join(ROOT, "deploy", "micro-ceph.sh")


def timed(cmd):
    t0 = time.monotonic()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.monotonic() - t0


def config(path, conf, store, parallel):
    with open(path, "w") as f:
        f.write("[ceph]\nconf = %s\n[store]\npath = %s\n[limits]\nimages-in-parallel = %d\n"
                "[job.all]\npool = rbd\ninclude = b-*\n" % (conf, store, parallel))
    return path


def purge_snaps(io, names):
    for n in names:
        with rbd.Image(io, n) as img:
            for s in list(img.list_snaps()):
                img.remove_snap(s["name"])


def one_run(args, work, i, parallel):
    cdir = os.path.join(work, "cluster-%d" % i)
    env = dict(os.environ, MICRO_CEPH_OSD_BYTES=str((args.images * args.data_mib * 4 + 1024) << 20))
    conf = subprocess.run([MICRO, "start", cdir], check=True, capture_output=True, text=True, env=env).stdout.strip()
    r = rados.Rados(conffile=conf)
    r.connect()
    io = r.open_ioctx("rbd")
    res = {}
    try:
        names = ["b-%04d" % k for k in range(args.images)]
        for n in names:
            rbd.RBD().create(io, n, 64 << 20, old_format=False)
            with rbd.Image(io, n) as img:
                img.write(os.urandom(args.data_mib << 20), 0)
        # Baseline: what a hand-written nightly script does, one image after the other.
        out = os.path.join(work, "diff")
        t0 = time.monotonic()
        for n in names:
            subprocess.run(["rbd", "-c", conf, "--no-progress", "snap", "create", "rbd/%s@base" % n], check=True)
            subprocess.run(["rbd", "-c", conf, "--no-progress", "export-diff", "rbd/%s@base" % n, out], check=True)
            os.unlink(out)
        res["ceph"] = time.monotonic() - t0
        purge_snaps(io, names)
        for p in parallel:
            store = os.path.join(work, "store-%d-%d" % (i, p))
            subprocess.run([RBDVAULT, "init", "--store", store, "-q"], check=True)
            res["run-%d" % p] = timed([RBDVAULT, "run", "-q", "--config",
                                       config(os.path.join(work, "c.conf"), conf, store, p)])
            if p != parallel[-1]:
                purge_snaps(io, names)
                shutil.rmtree(store)
        for n in names:
            with rbd.Image(io, n) as img:
                img.write(os.urandom(4096), 32 << 20)
        res["incremental"] = timed([RBDVAULT, "run", "-q", "--force", "--config", os.path.join(work, "c.conf")])
    finally:
        io.close()
        r.shutdown()
        subprocess.run([MICRO, "stop", cdir, "--purge"], check=False, capture_output=True)
    return res


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--images", type=int, default=200)
    ap.add_argument("--data-mib", type=int, default=1)
    ap.add_argument("--parallel", default="1,2,4")
    args = ap.parse_args()
    if not os.access(RBDVAULT, os.X_OK):
        raise SystemExit("build first: deploy/build.sh")
    parallel = [int(x) for x in args.parallel.split(",")]
    work = tempfile.mkdtemp(prefix="rbdvault-bench-batch.")
    try:
        runs = [one_run(args, work, i, parallel) for i in range(args.runs)]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    print("%d images of 64 MiB with %d MiB data each; medians of %d runs; %s, %d cores, %s\n" %
          (args.images, args.data_mib, args.runs, cpu, os.cpu_count(), platform.platform()))
    print("| case | seconds | per image | vs ceph script |\n|---|---|---|---|")
    for k in ["ceph"] + ["run-%d" % p for p in parallel] + ["incremental"]:
        label = {"ceph": "ceph script (snap create + export-diff, sequential)",
                 "incremental": "rbdvault run --force, 4 KiB changed per image, -P %d" % parallel[-1]}.get(
                     k, "rbdvault run, first backups, images-in-parallel %s" % k[4:])
        print("| %s | %.2f | %.0f ms | %.2fx |" % (label, med[k], 1000 * med[k] / args.images, med[k] / med["ceph"]))


if __name__ == "__main__":
    main()
