#!/usr/bin/env bash
# Installs every Debian 12 package rbdvault needs to build, test, package and run.
# (Packaging and its tests: dpkg-dev, debhelper, lintian, help2man, mmdebstrap; promtool
# comes with prometheus.)
# Idempotent: packages already present are skipped by apt-get; safe under CI=true (no prompts).
set -euo pipefail

PACKAGES=(
  build-essential cmake pkg-config ccache
  librbd-dev librados-dev libradospp-dev
  librocksdb-dev libspdlog-dev libfmt-dev
  libboost-program-options-dev nlohmann-json3-dev
  libgtest-dev libgmock-dev
  libzstd-dev libssl-dev
  clang-14 libclang-rt-14-dev
  ceph-mon ceph-osd ceph-common python3-rbd python3-rados
  tzdata
  rocksdb-tools python3-zstandard
  dpkg-dev debhelper lintian help2man man-db mmdebstrap bash-completion prometheus
  libfuse3-dev fuse3 libblkid-dev                   # mount, fsck (issue 14)
  libcpp-httplib-dev chromium                       # serve; its status page tested headless (issue 14)
  e2fsprogs xfsprogs dosfstools fdisk               # fsck's checkers; the mount/fsck tests' disks
)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all packages present"
  exit 0
fi
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
echo "install-deps: installing ${missing[*]}"
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "install-deps: done"
