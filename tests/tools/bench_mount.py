#!/usr/bin/python3
"""Benchmark of `rbdvault mount` (docs/benchmarks.md): sequential read of a revision through the
mount against `restore --to-file`, and 4 KiB random read latency. Not a test (no asserts on time).

  CEPH_CONF=... RBDVAULT=build/rbdvault bench_mount.py WORKDIR [MIB]
"""
import os
import random
import statistics
import subprocess
import sys
import time

import rados
import rbd

CONF, RV = os.environ["CEPH_CONF"], os.environ["RBDVAULT"]
work, mib = sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 512
os.makedirs(work, exist_ok=True)
store, mp, raw = os.path.join(work, "store"), os.path.join(work, "mp"), os.path.join(work, "restored.raw")
subprocess.run(["rm", "-rf", store, raw], check=True)
cl = rados.Rados(conffile=CONF)
cl.connect()
io = cl.open_ioctx("rbd")
try:
    rbd.RBD().remove(io, "bench-mount")
except rbd.ImageNotFound:
    pass
rbd.RBD().create(io, "bench-mount", mib << 20, old_format=False, features=rbd.RBD_FEATURE_LAYERING)
with rbd.Image(io, "bench-mount") as img:
    for off in range(0, mib << 20, 4 << 20):
        img.write(os.urandom(4 << 20), off)  # incompressible, no duplicate blocks
subprocess.run([RV, "init", "--store", store, "-q"], check=True)
subprocess.run([RV, "backup", "-c", CONF, "--store", store, "rbd/bench-mount", "-q"], check=True)


def timed(cmd):
    t = time.time()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return time.time() - t


size = mib << 20
t_restore = timed([RV, "restore", "--store", store, "rbd/bench-mount", "--to-file", raw, "-q"])
os.unlink(raw)


def mounted(fn, cache="64"):
    os.makedirs(mp, exist_ok=True)
    p = subprocess.Popen([RV, "mount", "--store", store, mp, "--cache-size", cache, "-q"])
    while not os.path.ismount(mp):
        time.sleep(0.05)
    try:
        return fn(os.path.join(mp, "rbd", "bench-mount", "1"))
    finally:
        subprocess.run(["fusermount3", "-u", mp], check=True)
        p.wait()


t_seq = mounted(lambda f: timed(["dd", "if=" + f, "of=/dev/null", "bs=1M"]))


def random_reads(path, n=2000):
    fd = os.open(path, os.O_RDONLY)
    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_RANDOM)
    rng = random.Random(1)
    offs = [rng.randrange(0, size // 4096) * 4096 for _ in range(n)]
    lat = []
    for o in offs:
        t = time.perf_counter()
        os.pread(fd, 4096, o)
        lat.append((time.perf_counter() - t) * 1e3)
    os.close(fd)
    lat.sort()
    return lat[len(lat) // 2], lat[int(len(lat) * 0.99)]


p50, p99 = mounted(random_reads)
print("image %d MiB random data, block size 64 KiB" % mib)
print("restore --to-file: %.2f s = %.0f MiB/s" % (t_restore, mib / t_restore))
print("mount, dd bs=1M:   %.2f s = %.0f MiB/s (%.0f%% of restore)" % (t_seq, mib / t_seq, 100 * t_restore / t_seq))
print("mount, 4 KiB random pread (cold mount, 2000 reads): p50 %.2f ms, p99 %.2f ms" % (p50, p99))
