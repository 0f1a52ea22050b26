#!/usr/bin/python3
"""Serving revisions over HTTP (issue 14): `rbdvault serve` against real backups of the test
cluster. Raw bytes are compared with `rbd export` of the backed-up snapshot (the oracle), ranges
with slices of it; the status page is loaded in headless Chromium and its content asserted.

Run one scenario: serve_test.py NAME (environment as cli_test.py). Needs chromium.
"""

import hashlib
import http.client
import json
import os
import random
import re
import signal
import subprocess
import sys

import cli_test
from cli_test import (CONF, EXIT_NOT_FOUND, EXIT_USAGE, RBDVAULT, TMP, check, log, new_store, run, run_json,
                      snap_name, wait_for)

SIZE = 12 << 20
TOKEN = "s3cret-token-0123456789abcdef"


class Served:
    """`rbdvault serve` in the foreground as a child; the URL it prints tells the port."""

    def __init__(self, store, listen="127.0.0.1:0", *extra):
        self.p = subprocess.Popen([RBDVAULT] + cli_test.with_conf(["serve", "--store", store, "--listen", listen, *extra]),
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)
        line = self.p.stdout.readline()
        if not line:
            self.p.wait()
            check(False, "serve exited %s before listening: %s" % (self.p.returncode, self.p.stderr.read()))
        m = re.match(r"http://(.+):(\d+)/$", line.strip())
        check(m is not None, "serve printed %r, not its URL" % line)
        self.port = int(m.group(2))

    def request(self, method, path, headers=None, host="127.0.0.1"):
        """(status, headers as a dict with lower-case names, body bytes)."""
        conn = http.client.HTTPConnection(host, self.port, timeout=120)
        conn.request(method, path, headers=headers or {})
        r = conn.getresponse()
        try:
            body = r.read()
        except (http.client.IncompleteRead, ConnectionError):
            body = None  # the server cut the body short: how it refuses bytes that failed their check
        conn.close()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, body

    def get_json(self, path, status=200, headers=None):
        st, _, body = self.request("GET", path, headers)
        check(st == status, "GET %s: %d, wanted %d: %r" % (path, st, status, body[:300]))
        return json.loads(body)

    def stop(self, sig=signal.SIGTERM):
        self.p.send_signal(sig)
        rc = self.p.wait(timeout=60)
        check(rc == 0, "serve after %s: exit %s: %s" % (signal.Signals(sig).name, rc, self.p.stderr.read()))

    def abandon(self):
        if self.p.poll() is None:
            self.p.kill()
            self.p.wait()


def export(spec):
    """The bytes of `rbd export SPEC` (the images here are a few MiB)."""
    p = cli_test.rbd_client(["export", "--no-progress", spec, "-"], capture_output=True)
    check(p.returncode == 0, "rbd export %s: exit %d: %s" % (spec, p.returncode, p.stderr.decode()[-2000:]))
    return p.stdout


def fill(c, name, rng, count):
    """`count` random 64 KiB..1 MiB writes at random places of rbd/NAME (the rest stays holes)."""
    with c.image("rbd", name) as img:
        for _ in range(count):
            n = rng.randrange(64 << 10, 1 << 20)
            off = rng.randrange(0, SIZE - n)
            img.write(rng.randbytes(n), off)


def check_raw(s, store, spec, rev, work):
    """HEAD, the whole body and ranges of /v1/raw/.../REV against `rbd export` of its snapshot."""
    pool, name = spec.split("/")
    want = export("%s@%s" % (spec, snap_name(store, rev)))
    path = "/v1/raw/%s/%s/%d" % (pool, name, rev)
    st, h, body = s.request("HEAD", path)
    check(st == 200 and body == b"", "HEAD %s: %d %r" % (path, st, body[:100]))
    check(int(h["content-length"]) == len(want), "HEAD length %s, export %d" % (h["content-length"], len(want)))
    check(h.get("accept-ranges") == "bytes", "HEAD without Accept-Ranges: %s" % h)
    st, h, body = s.request("GET", path)
    check(body is not None, "GET %s: the server cut the body (a stored chunk failed its check)" % path)
    check(st == 200 and hashlib.sha256(body).digest() == hashlib.sha256(want).digest(),
          "GET %s: %d, %d bytes, differs from rbd export (%d bytes)" % (path, st, len(body), len(want)))
    n = len(want)
    for a, b in [(0, 0), (0, 65535), (n // 2 - 3000, n // 2 + 70000), (n - 4096, n - 1), (n - 1, n + 100)]:
        st, h, body = s.request("GET", path, {"Range": "bytes=%d-%d" % (a, b)})
        last = min(b, n - 1)
        check(st == 206, "range %d-%d: status %d" % (a, b, st))
        check(h.get("content-range") == "bytes %d-%d/%d" % (a, last, n), "range %d-%d: %s" % (a, b, h))
        check(body == want[a:last + 1], "range %d-%d: bytes differ from rbd export" % (a, b))
    st, h, body = s.request("GET", path, {"Range": "bytes=-5000"})
    check(st == 206 and body == want[-5000:], "suffix range: %d, %d bytes" % (st, len(body)))
    st, h, body = s.request("HEAD", path, {"Range": "bytes=100-199"})
    check(st == 206 and h["content-length"] == "100" and body == b"", "HEAD with a range: %d %s" % (st, h))
    for bad in ["bytes=%d-" % n, "bytes=%d-%d" % (n + 10, n + 20)]:
        st, h, body = s.request("GET", path, {"Range": bad})
        check(st == 416 and h.get("content-range") == "bytes */%d" % n, "%s: %d %s" % (bad, st, h))
    st, _, body = s.request("GET", path, {"Range": "bytes=0-1,10-11"})
    check(st == 416, "two ranges: %d (documented: 416)" % st)
    return want


def chromium_dom(url):
    p = subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom", url],
                       capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
    check(p.returncode == 0, "chromium: exit %d: %s" % (p.returncode, p.stderr[-2000:]))
    return p.stdout


def page_rows(dom):
    """{image: (revisions, result, size text)} from the status table as the browser built it."""
    rows = {}
    for tr in re.findall(r'<tr class="image">(.*?)</tr>', dom, re.S):
        cells = [re.sub(r"<[^>]*>", "", td) for td in re.findall(r"<td[^>]*>(.*?)</td>", tr, re.S)]
        rows[cells[0]] = (int(cells[4]), cells[3], cells[5])
    return rows


def scenario_serve_http(c):
    store = new_store("serve")
    work = os.path.join(TMP, "serve-work")
    os.makedirs(work, exist_ok=True)
    rng = random.Random(14)
    for name in ("serve-a", "serve-b"):
        c.create("rbd", name, SIZE, cli_test.FEATURES_FASTDIFF)
        fill(c, name, rng, 6)
    a1 = run_json("backup", "--store", store, "rbd/serve-a")["revision"]
    b1 = run_json("backup", "--store", store, "rbd/serve-b")["revision"]
    s = Served(store)
    try:
        images = s.get_json("/v1/images")
        got = {(i["pool"], i["image"]): (i["revisions"], i["latest"]["id"], i["latest"]["size"]) for i in images}
        check(got == {("rbd", "serve-a"): (1, a1, SIZE), ("rbd", "serve-b"): (1, b1, SIZE)}, "/v1/images: %s" % images)
        j = s.get_json("/v1/images/rbd/serve-a")
        check([r["id"] for r in j["revisions"]] == [a1] and j["revisions"][0]["kind"] == "full", "image: %s" % j)
        check_raw(s, store, "rbd/serve-a", a1, work)
        check_raw(s, store, "rbd/serve-b", b1, work)
        # Unknown things: 404 with the CLI's error class.
        for path in ["/v1/raw/rbd/nosuch/1", "/v1/raw/rbd/serve-a/%d" % (a1 + 1000), "/v1/images/rbd/nosuch"]:
            j = s.get_json(path, status=404)
            check(j["error"]["class"] == "not-found" and j["error"]["exit_code"] == EXIT_NOT_FOUND, "%s: %s" % (path, j))
        st, _, _ = s.request("GET", "/v1/nothing-here")
        check(st == 404, "unknown endpoint: %d" % st)
        st, _, _ = s.request("POST", "/v1/images")
        check(st in (404, 405), "POST on a read-only server: %d" % st)
        # A new backup appears without a restart, as a new revision of the same image.
        fill(c, "serve-a", rng, 3)
        a2 = run_json("backup", "--store", store, "rbd/serve-a")["revision"]
        # The server reopens the store at most once a second (its TTL): wait for that event.
        wait_for(lambda: len(s.get_json("/v1/images/rbd/serve-a")["revisions"]) == 2, "revision %d listed" % a2,
                 timeout=30)
        j = s.get_json("/v1/images/rbd/serve-a")
        check([r["id"] for r in j["revisions"]] == [a1, a2], "after a new backup: %s" % j)
        v2 = check_raw(s, store, "rbd/serve-a", a2, work)
        st, _, body = s.request("GET", "/v1/raw/rbd/serve-a/%d" % a1)
        check(st == 200 and body != v2, "revision %d must still be the old bytes" % a1)
        # librbd's own HTTP client reads the raw endpoint: an import-only live migration whose source
        # is the URL (what instant restore does) reads back exactly the revision.
        c.remove("rbd", "serve-mig")
        spec = json.dumps({"type": "raw", "stream": {"type": "http",
                                                     "url": "http://127.0.0.1:%d/v1/raw/rbd/serve-a/%d" % (s.port, a2)}})
        subprocess.run(["rbd", "-c", CONF, "migration", "prepare", "--import-only", "--source-spec", spec,
                        "rbd/serve-mig"], check=True, capture_output=True)
        try:
            got = export("rbd/serve-mig")
            check(got == v2, "migration through the server: %d bytes, differ from rbd export" % len(got))
        finally:
            subprocess.run(["rbd", "-c", CONF, "migration", "abort", "--no-progress", "rbd/serve-mig"],
                           capture_output=True)
        # The status page, rendered by a real browser.
        dom = chromium_dom("http://127.0.0.1:%d/" % s.port)
        rows = page_rows(dom)
        check(set(rows) == {"rbd/serve-a", "rbd/serve-b"}, "status page images: %s" % rows)
        check(rows["rbd/serve-a"][0] == 2 and rows["rbd/serve-b"][0] == 1, "revision counts: %s" % rows)
        check(rows["rbd/serve-a"][1] == "ok" and rows["rbd/serve-a"][2] == "12.0 MiB", "result/size: %s" % rows)
        check("<title>rbdvault status</title>" in dom, "no title in %r" % dom[:300])
        s.stop(signal.SIGTERM)
        s = Served(store)
        st, _, _ = s.request("HEAD", "/v1/raw/rbd/serve-b/%d" % b1)
        check(st == 200, "after a restart: %d" % st)
        s.stop(signal.SIGINT)
        # Every read is verified: a flipped bit in a stored chunk cuts the body, never serves it.
        cli_test.corrupt_first_chunk(store)
        s = Served(store)  # a fresh server: nothing cached from before the damage
        st, h, body = s.request("GET", "/v1/raw/rbd/serve-a/%d" % a1)
        check(body is None or (st == 200 and len(body) < SIZE) or st >= 500,
              "damaged chunk: status %d and %s bytes sent" % (st, None if body is None else len(body)))
        st, _, _ = s.request("HEAD", "/v1/raw/rbd/serve-b/%d" % b1)
        check(st == 200, "the server must keep serving after a damaged read: %d" % st)
        s.stop()
    finally:
        s.abandon()
    for name in ("serve-a", "serve-b"):
        c.remove("rbd", name)


def refused(*args, rc):
    """serve ARGS must exit at once with `rc`: one that starts serving instead is killed after 60 s
    and fails the test (subprocess.run kills the child on its timeout)."""
    try:
        return run("serve", *args, rc=rc, timeout=60)
    except subprocess.TimeoutExpired:
        check(False, "serve %s started instead of exiting %d" % (" ".join(args), rc))


def scenario_serve_token(c):
    store = new_store("serve-token")
    c.create("rbd", "serve-t", 1 << 20, cli_test.FEATURES_FASTDIFF)
    with c.image("rbd", "serve-t") as img:
        img.write(b"x" * 4096, 8192)
    rev = run_json("backup", "--store", store, "rbd/serve-t")["revision"]
    token = os.path.join(TMP, "serve-token.txt")
    with open(token, "w") as f:
        f.write(TOKEN + "\n")
    os.chmod(token, 0o644)
    # Off loopback without a token, or with a token file others can read: refused, one line, exit 2.
    for extra in ([], ["--token-file", token]):
        _, err = refused("--store", store, "--listen", "0.0.0.0:0", *extra, rc=EXIT_USAGE)
        check(len(err.strip().splitlines()) == 1, "one error line, got %r" % err)
        want = "accessible by group or others" if extra else "needs --token-file"
        check(want in err, "refusal should say %r: %r" % (want, err))
    # A token file others may read is refused on loopback too (the token leaks either way).
    _, err = refused("--store", store, "--listen", "127.0.0.1:0", "--token-file", token, rc=EXIT_USAGE)
    check("accessible by group or others" in err, "open token file on loopback: %r" % err)
    refused("--store", store, "--listen", "127.0.0.1", rc=EXIT_USAGE)
    refused("--store", store, "--listen", "127.0.0.1:70000", rc=EXIT_USAGE)
    refused("--store", store, "--listen", "::1:80", rc=EXIT_USAGE)
    refused("--store", store, rc=EXIT_USAGE)
    refused("--store", store, "--listen", "127.0.0.1:0", "--token-file", token + ".missing", rc=EXIT_NOT_FOUND)
    refused("--store", os.path.join(TMP, "no-store-here"), "--listen", "127.0.0.1:0", rc=EXIT_USAGE)
    os.chmod(token, 0o600)
    s = Served(store, "0.0.0.0:0", "--token-file", token)
    try:
        # Every interface: try loopback and, when the host has one, another address of it.
        hosts = ["127.0.0.1"]
        ip = subprocess.run(["hostname", "-I"], capture_output=True, text=True).stdout.split()
        hosts += [a for a in ip if ":" not in a][:1]
        for host in hosts:
            for headers in ({}, {"Authorization": "Bearer wrong-token-0123456789"}, {"Authorization": TOKEN},
                            {"Authorization": "Basic " + TOKEN}):
                for method, path in [("GET", "/v1/images"), ("HEAD", "/v1/raw/rbd/serve-t/%d" % rev), ("GET", "/")]:
                    st, h, _ = s.request(method, path, headers, host=host)
                    check(st == 401, "%s %s %s via %s: %d, wanted 401" % (method, path, headers, host, st))
            good = {"Authorization": "Bearer " + TOKEN}
            st, _, body = s.request("GET", "/v1/images", good, host=host)
            check(st == 200 and json.loads(body)[0]["image"] == "serve-t", "with the token via %s: %d %r" % (host, st, body))
            st, _, body = s.request("GET", "/v1/raw/rbd/serve-t/%d" % rev, dict(good, Range="bytes=8190-8193"), host=host)
            check(st == 206 and body == b"\0\0xx", "range with the token: %d %r" % (st, body))
        log("token checked via %s" % hosts)
        s.stop()
    finally:
        s.abandon()
    c.remove("rbd", "serve-t")


SCENARIOS = {
    "serve_http": scenario_serve_http,
    "serve_token": scenario_serve_token,
}

if __name__ == "__main__":
    sys.exit(cli_test.main(SCENARIOS, prog="serve_test.py"))
