#!/usr/bin/env bash
# The Debian package end to end in a clean root (issue 20):
#   1. deploy/package.sh builds rbdvault_VERSION_amd64.deb (lintian: no errors);
#   2. a fresh Debian 12 root (mmdebstrap --variant=apt, the tarball cached between runs) gets it
#      with one `apt-get install ./rbdvault_*.deb`, which pulls librbd1, librados2, adduser...;
#   3. the installed binary answers --version (with the Ceph library versions), its man page
#      renders, the rbdvault user, tmpfiles, completion and units are in place;
#   4. deploy/demo.sh runs against the installed binary (chroot; a throwaway cluster on the host);
#   5. `apt-get purge` + `autoremove --purge` returns the root to its file list before the install.
# Needs root, network access to the Debian archive (as apt-get itself), mmdebstrap.
#   RBDVAULT_BUILD=DIR   build directory to package (default build/)
#   RBDVAULT_ROOT_CACHE  where the bootstrap tarball is kept (default /var/cache/rbdvault-test)
set -euo pipefail
cd "$(dirname "$0")/../.."
SRC=$PWD
T0=$SECONDS
say() { printf '\n== package_test [%ds]: %s\n' $((SECONDS - T0)) "$*"; }
fail() { echo "package_test: FAIL: $*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || fail "needs root (chroot, mount)"
command -v mmdebstrap >/dev/null || fail "mmdebstrap is not installed (deploy/install-deps.sh)"

WORK=$(mktemp -d /tmp/rbdvault-pkgtest.XXXXXX)
ROOT=$WORK/root
SHARED=$WORK/shared  # the demo's files: the same path on the host and in the root (bind mount)
cleanup() {
  for m in "$ROOT$SHARED" "$ROOT/proc"; do mountpoint -q "$m" 2>/dev/null && umount -l "$m"; done
  # Never delete through a mount that is still there.
  if mountpoint -q "$ROOT$SHARED" 2>/dev/null || mountpoint -q "$ROOT/proc" 2>/dev/null; then
    echo "package_test: $WORK left in place: a mount under it is still busy" >&2
  else
    rm -rf "$WORK"
  fi
}
trap cleanup EXIT

say "build the package"
DEB=$(deploy/package.sh "$WORK/out" | tail -1)
[ -f "$DEB" ] || fail "deploy/package.sh made no .deb"
[[ $(basename "$DEB") =~ ^rbdvault_[0-9.]+_amd64\.deb$ ]] || fail "unexpected package name $(basename "$DEB")"

say "a clean Debian 12 root"
CACHE=${RBDVAULT_ROOT_CACHE:-/var/cache/rbdvault-test}
TARBALL=$CACHE/bookworm-apt.tar
mkdir -p "$CACHE"
# A week-old tarball is rebuilt, so the root does not drift far from the archive.
if [ ! -s "$TARBALL" ] || [ -n "$(find "$TARBALL" -mtime +7)" ]; then
  mmdebstrap --quiet --variant=apt --format=tar bookworm "$TARBALL.new" \
    "deb http://deb.debian.org/debian bookworm main" \
    "deb http://deb.debian.org/debian bookworm-updates main" \
    "deb http://deb.debian.org/debian-security bookworm-security main"
  mv "$TARBALL.new" "$TARBALL"
fi
mkdir "$ROOT"
tar -C "$ROOT" -xf "$TARBALL"
cp /etc/resolv.conf "$ROOT/etc/resolv.conf"
mount -t proc proc "$ROOT/proc"
# The file list to come back to. Left out: dpkg/apt bookkeeping, caches and logs, the user's lines
# in passwd/group/shadow (kept on purge, Debian's practice), ld.so.cache, and adduser's own lock
# file /run/adduser (any adduser call leaves it; /run is a tmpfs on a real system).
snapshot() {
  (cd "$ROOT" && find . -xdev \( -path ./proc -o -path ./tmp -o -path ./var/cache -o -path ./var/log \
    -o -path ./var/lib/apt -o -path ./var/lib/dpkg \) -prune -o -print) |
    grep -vxE '\./etc/(passwd|group|shadow|gshadow)-?|\./etc/ld\.so\.cache|\./run/adduser' |
    sort
}
chroot "$ROOT" apt-get update -qq
snapshot >"$WORK/before"

say "apt-get install ./$(basename "$DEB")"
cp "$DEB" "$ROOT/tmp/"
chroot "$ROOT" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
  "./tmp/$(basename "$DEB")" >"$WORK/apt.log" 2>&1 || { cat "$WORK/apt.log"; fail "apt-get install"; }
for lib in librbd1 librados2 adduser; do
  chroot "$ROOT" dpkg-query -W -f='${Status}\n' "$lib" | grep -q "install ok installed" ||
    fail "$lib was not pulled in as a dependency"
done

say "the installed files"
VERSION_TEXT=$(chroot "$ROOT" rbdvault --version)
echo "$VERSION_TEXT"
grep -qE '^rbdvault [0-9.]+$' <<<"$(head -1 <<<"$VERSION_TEXT")" || fail "--version first line"
grep -qE 'librados [0-9]+\.[0-9]+\.[0-9]+' <<<"$VERSION_TEXT" || fail "--version names no librados version"
chroot "$ROOT" getent passwd rbdvault | grep -q ':/var/lib/rbdvault:' || fail "no rbdvault system user"
chroot "$ROOT" getent group rbdvault >/dev/null || fail "no rbdvault group"
[ "$(chroot "$ROOT" stat -c %U:%a /var/lib/rbdvault)" = rbdvault:750 ] || fail "/var/lib/rbdvault owner/mode"
[ "$(chroot "$ROOT" stat -c %U /run/lock/rbdvault)" = rbdvault ] || fail "/run/lock/rbdvault owner"
for f in /lib/systemd/system/rbdvault-agent.service /lib/systemd/system/rbdvault-run.timer \
  /usr/lib/tmpfiles.d/rbdvault.conf /usr/share/bash-completion/completions/rbdvault \
  /usr/share/doc/rbdvault/rbdvault.conf.example /usr/share/man/man8/rbdvault.8.gz \
  /usr/share/rbdvault/monitoring/rbdvault-dashboard.json; do
  [ -e "$ROOT$f" ] || fail "$f is not installed"
done
grep -qx 'ExecStart=/usr/bin/rbdvault agent --config /etc/rbdvault/rbdvault.conf' \
  "$ROOT/lib/systemd/system/rbdvault-agent.service" || fail "the agent unit does not run /usr/bin/rbdvault"
man -l "$ROOT/usr/share/man/man8/rbdvault.8.gz" 2>&1 | grep -q '^COMMANDS' || fail "rbdvault(8) does not render"

say "deploy/demo.sh against the installed binary"
mkdir -p "$SHARED" "$ROOT$SHARED"
mount --bind "$SHARED" "$ROOT$SHARED"
cat >"$WORK/rbdvault-in-root" <<WRAPPER
#!/bin/sh
exec chroot "$ROOT" /usr/bin/rbdvault "\$@"
WRAPPER
chmod +x "$WORK/rbdvault-in-root"
TMPDIR=$SHARED RBDVAULT=$WORK/rbdvault-in-root deploy/demo.sh >"$WORK/demo.log" 2>&1 || { cat "$WORK/demo.log"; fail "demo"; }
grep -q '^OK: restored image and file are byte-identical' "$WORK/demo.log" || { cat "$WORK/demo.log"; fail "demo"; }
grep -q '^RBDVAULT OK' "$WORK/demo.log" || { cat "$WORK/demo.log"; fail "demo's check"; }
umount "$ROOT$SHARED"

say "apt-get purge rbdvault; apt-get autoremove --purge"
chroot "$ROOT" env DEBIAN_FRONTEND=noninteractive apt-get purge -y -qq rbdvault >>"$WORK/apt.log" 2>&1 ||
  { cat "$WORK/apt.log"; fail "purge"; }
chroot "$ROOT" env DEBIAN_FRONTEND=noninteractive apt-get autoremove --purge -y -qq >>"$WORK/apt.log" 2>&1 ||
  { cat "$WORK/apt.log"; fail "autoremove"; }
snapshot >"$WORK/after"
if ! diff "$WORK/before" "$WORK/after" >"$WORK/diff"; then
  cat "$WORK/diff"
  fail "the purge left files behind (> above: present after, absent before)"
fi
echo "package_test: OK in $((SECONDS - T0))s ($(basename "$DEB"): installed, ran the demo, purged without a trace)"
