#!/usr/bin/env bash
# Builds the Debian package rbdvault_VERSION_ARCH.deb from the tree's CMake build (build/, made
# by deploy/build.sh if absent) with debhelper, then checks it with lintian (errors fail).
#   deploy/package.sh [OUTDIR]       default OUTDIR: build/deb; prints the .deb's path last
# RBDVAULT_BUILD=DIR packages another build directory. Needs dpkg-dev, debhelper, help2man,
# lintian (deploy/install-deps.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
SRC=$PWD
BUILD=$(realpath "${RBDVAULT_BUILD:-$SRC/build}")
OUT=$(realpath -m "${1:-$BUILD/deb}")
[ -f "$BUILD/CMakeCache.txt" ] || deploy/build.sh
cmake --build "$BUILD" -j "${JOBS:-2}" --target rbdvault man_pages >/dev/null

VERSION=$("$BUILD/rbdvault" --version | awk 'NR == 1 { print $2 }')
[[ $VERSION =~ ^[0-9][0-9.]*$ ]] || { echo "package: no version from $BUILD/rbdvault --version" >&2; exit 1; }
STAGE=$(mktemp -d /tmp/rbdvault-package.XXXXXX)
trap 'rm -rf "$STAGE"' EXIT
TREE=$STAGE/rbdvault-$VERSION
mkdir -p "$TREE"
cp -r deploy/debian "$TREE/debian"
COMMIT=$(git -C "$SRC" rev-parse --short HEAD 2>/dev/null || echo unknown)
MAINT=$(sed -n 's/^Maintainer: //p' deploy/debian/control)
# The commit's date, not now: the same tree gives the same package (SOURCE_DATE_EPOCH follows it).
DATE=$(git -C "$SRC" log -1 --format=%cD 2>/dev/null || date -R)
cat >"$TREE/debian/changelog" <<CHANGELOG
rbdvault ($VERSION) unstable; urgency=medium

  * Built from the rbdvault tree at commit $COMMIT.

 -- $MAINT  $DATE
CHANGELOG

(cd "$TREE" && RBDVAULT_BUILD=$BUILD dpkg-buildpackage -b -us -uc >"$STAGE/build.log" 2>&1) || {
  cat "$STAGE/build.log" >&2
  echo "package: dpkg-buildpackage failed" >&2
  exit 1
}
DEB=$(ls "$STAGE"/rbdvault_"$VERSION"_*.deb)
mkdir -p "$OUT"
cp "$DEB" "$OUT/"
DEB=$OUT/$(basename "$DEB")
if command -v lintian >/dev/null; then
  # Errors fail; warnings are listed (docs/operations.md says which remain and why).
  lintian --fail-on error "$DEB" >&2
else
  echo "package: lintian not installed, package not checked" >&2
fi
echo "$DEB"
