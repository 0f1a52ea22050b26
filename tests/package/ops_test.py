#!/usr/bin/python3
"""What operators touch besides the commands (issue 20), against the test cluster:

  ops_monitoring  a real batch run writes the metrics file; every metric the Grafana dashboard and
                  the alert rules use is in it; promtool checks the file and the rules and runs
                  the rules' unit tests (alerts where `check` says WARNING/CRITICAL)
  ops_journal     with $JOURNAL_STREAM naming stderr, every log line carries its <N> priority;
                  with it naming something else, none does
  ops_version     --version: rbdvault's version and the librbd/librados versions
  ops_completion  bash completion: commands, options, option values, POOL/IMAGE and @REV from a
                  real store, and an image only the cluster has
  ops_man         every generated man page renders; every command of --help has a page and a
                  paragraph in rbdvault(8)

Run one scenario: ops_test.py NAME. Environment as cli_test.py, plus RBDVAULT_MAN_DIR (the build's
man/ directory) for ops_man.
"""

import json
import os
import re
import shutil
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration"))
import cli_test  # noqa: E402
from cli_test import CONF, FEATURES_FASTDIFF, RBDVAULT, TMP, check, log, new_store, run  # noqa: E402

SRC = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
MONITORING = os.path.join(SRC, "deploy", "monitoring")
COMPLETION = os.path.join(SRC, "deploy", "completion", "rbdvault")
METRIC = re.compile(r"\brbdvault_[a-z_]+\b")


def batch_config(name, store, images):
    path = os.path.join(TMP, name + ".conf")
    with open(path, "w") as f:
        f.write("[ceph]\nconf = %s\n[store]\npath = %s\nmetrics-file = %s.prom\n[defaults]\nschedule = every 24h\n"
                "keep-last = 3\n[job.ops]\npool = rbd\n%s" % (CONF, store, store,
                                                              "".join("include = %s\n" % i for i in images)))
    return path


def make_images(c, prefix, n):
    names = ["%s-%d" % (prefix, i) for i in range(n)]
    for i, name in enumerate(names):
        c.create("rbd", name, 8 << 20, FEATURES_FASTDIFF)
        with c.image("rbd", name) as img:
            img.write(bytes([i + 1]) * (1 << 20), 0)
    return names


def written_metrics(text):
    """Metric names with samples in a Prometheus text file."""
    return {m.group(0) for line in text.splitlines() if line and not line.startswith("#")
            for m in [METRIC.match(line)] if m}


def referenced_metrics():
    """{file: metric names} used by the dashboard's queries and the alert rules' expressions."""
    with open(os.path.join(MONITORING, "rbdvault-dashboard.json")) as f:
        dash = json.load(f)
    exprs = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
    exprs += [v["query"]["query"] for v in dash["templating"]["list"] if isinstance(v.get("query"), dict)]
    with open(os.path.join(MONITORING, "rbdvault-alerts.yml")) as f:
        rules = f.read()
    rule_exprs = re.findall(r"^\s+expr: \|?\s*((?:.*\n)(?:\s{10,}.*\n)*)", rules, re.M)
    check(len(rule_exprs) >= 4, "found only %d alert expressions" % len(rule_exprs))
    return {"dashboard": {n for e in exprs for n in METRIC.findall(e)},
            "alert rules": {n for e in rule_exprs for n in METRIC.findall(e)}}


def scenario_ops_monitoring(c):
    store = new_store("ops-mon")
    images = make_images(c, "ops-mon", 2)
    conf = batch_config("ops-mon", store, images)
    run("run", "--config", conf, "--force")
    with open(store + ".prom") as f:
        text = f.read()
    written = written_metrics(text)
    log("the run wrote %d metrics: %s" % (len(written), " ".join(sorted(written))))
    # What the issue asks the dashboard to show must exist in the file in the first place.
    for needed in ["rbdvault_last_success_timestamp_seconds", "rbdvault_last_backup_ok", "rbdvault_images_failed",
                   "rbdvault_last_backup_read_bytes", "rbdvault_last_backup_stored_bytes",
                   "rbdvault_last_backup_duration_seconds", "rbdvault_store_pack_bytes", "rbdvault_verify_failed"]:
        check(needed in written, "the metrics file has no %s:\n%s" % (needed, text))
    read = re.search(r'^rbdvault_last_backup_read_bytes\{image="rbd/%s"\} (\d+)$' % images[0], text, re.M)
    check(read and int(read.group(1)) >= 1 << 20, "bytes read of the first full backup:\n" + text)
    packs = re.search(r"^rbdvault_store_pack_bytes (\d+)$", text, re.M)
    check(packs and int(packs.group(1)) > 0, "store pack bytes after two backups:\n" + text)
    for where, names in referenced_metrics().items():
        check(names, "the %s reference no metric" % where)
        unknown = names - written
        check(not unknown, "the %s use metrics the program does not write: %s" % (where, sorted(unknown)))
        log("%s: %d metrics, all written by the run" % (where, len(names)))
    promtool = shutil.which("promtool")
    if not promtool:
        log("promtool not installed (Debian package prometheus): rules not validated")
        return
    for args, stdin in ((["check", "metrics"], text), (["check", "rules", "rbdvault-alerts.yml"], None),
                        (["test", "rules", "rbdvault-alerts.test.yml"], None)):
        p = subprocess.run([promtool] + args, input=stdin, capture_output=True, text=True, cwd=MONITORING,
                           timeout=120)
        check(p.returncode == 0, "promtool %s: %s%s" % (" ".join(args), p.stdout, p.stderr))
    log("promtool: metrics file, rules and rule tests pass")


def stderr_lines(args, journal):
    """Runs rbdvault with stderr in a file; journal: True names that file in $JOURNAL_STREAM, False
    names another file, None leaves the variable out."""
    path, other = os.path.join(TMP, "ops-journal.err"), os.path.join(TMP, "ops-journal.other")
    open(other, "w").close()
    env = {k: v for k, v in os.environ.items() if k != "JOURNAL_STREAM"}
    with open(path, "w") as err:
        if journal is not None:
            st = os.fstat(err.fileno()) if journal else os.stat(other)
            env["JOURNAL_STREAM"] = "%d:%d" % (st.st_dev, st.st_ino)
        p = subprocess.run([RBDVAULT] + args, stdout=subprocess.DEVNULL, stderr=err, env=env, timeout=600,
                           stdin=subprocess.DEVNULL)
    check(p.returncode == 0, "%s: exit %d" % (args, p.returncode))
    with open(path) as f:
        return [ln for ln in f.read().splitlines() if ln]


def scenario_ops_journal(c):
    store = new_store("ops-journal")
    images = make_images(c, "ops-journal", 1)
    conf = batch_config("ops-journal", store, images)
    lines = stderr_lines(["run", "--config", conf, "--force", "-v"], journal=True)
    check(lines, "the run logged nothing")
    bad = [ln for ln in lines if not re.match(r"<[0-7]>", ln)]
    check(not bad, "lines without a priority prefix under the journal: %s" % bad)
    check(any(re.match(r"<6>(\S+ )?info: run ", ln) for ln in lines), "no <6> info line for the run: %s" % lines)
    check(any(ln.startswith("<7>") for ln in lines), "no <7> debug line with -v: %s" % lines)
    for journal in (False, None):
        lines = stderr_lines(["run", "--config", conf, "--force"], journal=journal)
        check(lines and not any(re.match(r"<\d>", ln) for ln in lines),
              "prefixes although stderr is not the journal (JOURNAL_STREAM %s): %s" %
              ("names another file" if journal is False else "unset", lines))
    log("journal: priorities <6>/<7> on every line only when stderr is the journal stream")


def scenario_ops_version(c):
    p = subprocess.run([RBDVAULT, "--version"], capture_output=True, text=True, timeout=30)
    check(p.returncode == 0, "--version: exit %d" % p.returncode)
    first = p.stdout.splitlines()[0]
    check(re.fullmatch(r"rbdvault \d+\.\d+\.\d+", first), "--version first line: %r" % first)
    for lib in ("librbd", "librados"):
        check(re.search(r"\b%s \d+\.\d+\.\d+" % lib, p.stdout), "--version names no %s version: %r" % (lib, p.stdout))
    log("version: " + p.stdout.replace("\n", " | "))


def complete(line):
    """COMPREPLY of the completion function for `line` (the cursor at its end)."""
    words = line.split(" ")
    script = ('[ -r /usr/share/bash-completion/bash_completion ] && . /usr/share/bash-completion/bash_completion\n'
              '. "$1"\nCOMP_LINE=$2; COMP_POINT=${#COMP_LINE}; shift 2\nCOMP_WORDS=("$@"); COMP_CWORD=$(($# - 1))\n'
              '_rbdvault\nprintf "%s\\n" "${COMPREPLY[@]}"\n')
    words[0] = RBDVAULT
    p = subprocess.run(["bash", "-c", script, "complete", COMPLETION, " ".join(words)] + words,
                       capture_output=True, text=True, timeout=60, env=dict(os.environ, CEPH_CONF=CONF))
    check(p.returncode == 0, "completion of %r failed: %s" % (line, p.stderr))
    return [w for w in p.stdout.splitlines() if w]


def expect_completion(line, wanted, exact=False):
    got = complete(line)
    ok = sorted(got) == sorted(wanted) if exact else set(wanted) <= set(got)
    check(ok, "completing %r gave %s, wanted %s%s" % (line, got, "exactly " if exact else "", wanted))


def scenario_ops_completion(c):
    store = new_store("ops-comp")
    (image,) = make_images(c, "ops-comp", 1)
    run("backup", "--store", store, "rbd/" + image)
    run("backup", "--store", store, "rbd/" + image)
    c.create("rbd", "ops-comp-only-in-cluster", 1 << 20, FEATURES_FASTDIFF)
    expect_completion("rbdvault ba", ["backup"], exact=True)
    expect_completion("rbdvault ", ["init", "backup", "restore", "ls", "check", "run"])
    expect_completion("rbdvault backup --st", ["--store", "--store-conf", "--store-id", "--store-keyring"], exact=True)
    expect_completion("rbdvault ls --format ", ["plain", "json"], exact=True)
    expect_completion("rbdvault restore --store %s rbd/ops-comp-0@" % store,
                      ["rbd/%s@1" % image, "rbd/%s@2" % image], exact=True)
    expect_completion("rbdvault ls --store %s rbd/ops-comp-" % store, ["rbd/" + image])
    expect_completion("rbdvault backup --store %s -c %s rbd/ops-comp-o" % (store, CONF),
                      ["rbd/ops-comp-only-in-cluster"], exact=True)
    c.remove("rbd", "ops-comp-only-in-cluster")
    log("completion: commands, options, --format values, POOL/IMAGE@REV from the store, images from rbd ls")


def help_commands():
    """Command names in `rbdvault --help`: entries of its sections about commands."""
    out = subprocess.run([RBDVAULT, "--help"], capture_output=True, text=True, timeout=30).stdout
    names, in_section = [], False
    for line in out.splitlines():
        if line[:1].strip():
            in_section = "command" in line.lower()
        elif in_section and re.match(r"  [a-z]", line):
            names += re.match(r"  ([a-z][a-z0-9-]*(?: \| [a-z][a-z0-9-]*)*)", line).group(1).split(" | ")
    return names


def render(path):
    p = subprocess.run(["man", "-l", "--warnings", path], capture_output=True, text=True, timeout=60,
                       env=dict(os.environ, MANWIDTH="100", MAN_KEEP_FORMATTING="0"))
    check(p.returncode == 0 and p.stdout.strip(), "man -l %s: exit %d %s" % (path, p.returncode, p.stderr))
    check(not p.stderr.strip(), "man -l %s warns: %s" % (path, p.stderr))
    return re.sub(r".\x08", "", p.stdout)  # overstrike bold and underline, as `col -b` would


def scenario_ops_man(c):
    man_dir = os.environ.get("RBDVAULT_MAN_DIR") or os.path.join(os.path.dirname(RBDVAULT), "man")
    commands = help_commands()
    check(len(commands) >= 10, "found only %s in rbdvault --help" % commands)
    main_page = render(os.path.join(man_dir, "rbdvault.8"))
    section = main_page.split("\nCOMMANDS\n", 1)[1].split("\nSEE ALSO\n", 1)[0] if "\nCOMMANDS\n" in main_page else ""
    for cmd in commands:
        page = os.path.join(man_dir, "rbdvault-%s.8" % cmd)
        check(os.path.exists(page), "no man page for %s (%s)" % (cmd, page))
        text = render(page)
        check("NAME" in text and "rbdvault" in text, "rbdvault-%s.8 has no NAME:\n%s" % (cmd, text))
        check(re.search(r"^       (\S+ \| )*%s\b" % re.escape(cmd), section, re.M),
              "rbdvault(8) has no COMMANDS paragraph for %s:\n%s" % (cmd, section))
    pages = [f for f in os.listdir(man_dir) if f.endswith(".8")]
    for f in pages:
        render(os.path.join(man_dir, f))
    log("man: %d pages render; all %d commands have a page and a paragraph in rbdvault(8)" %
        (len(pages), len(commands)))


SCENARIOS = {
    "ops_monitoring": scenario_ops_monitoring,
    "ops_journal": scenario_ops_journal,
    "ops_version": scenario_ops_version,
    "ops_completion": scenario_ops_completion,
    "ops_man": scenario_ops_man,
}

if __name__ == "__main__":
    sys.exit(cli_test.main(SCENARIOS, "ops_test.py"))
