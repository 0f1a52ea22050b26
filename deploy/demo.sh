#!/usr/bin/env bash
# The main job end to end on a throwaway local cluster: install, build, start a cluster, create an
# image with data, back it up, change it, back it up incrementally, restore the latest revision to a
# new image and the first one to a file, and compare both with `rbd export` of the snapshots.
#   deploy/demo.sh                        install, build, run against build/rbdvault
#   RBDVAULT=/usr/bin/rbdvault deploy/demo.sh   run against an installed binary
set -euo pipefail
cd "$(dirname "$0")/.."
# RBDVAULT=PATH runs the demo against that binary (e.g. the installed package's, as
# tests/package/package_test.sh does) without installing or building anything.
if [ -z "${RBDVAULT:-}" ]; then
  deploy/install-deps.sh
  deploy/build.sh
  RBDVAULT=$PWD/build/rbdvault
fi

WORK=$(mktemp -d "${TMPDIR:-/tmp}/rbdvault-demo.XXXXXX")
cleanup() { deploy/micro-ceph.sh stop "$WORK/cluster" --purge || true; rm -rf "$WORK"; }
trap cleanup EXIT
CONF=$(deploy/micro-ceph.sh start "$WORK/cluster")
export CEPH_CONF=$CONF
STORE=$WORK/store
step() { printf '\n== %s\n' "$*"; }

step "create rbd/vm-101 (1 GiB) and write 64 MiB of data"
rbd create --size 1G rbd/vm-101
rbd bench --io-type write --io-size 4M --io-total 64M --io-pattern seq rbd/vm-101 >/dev/null

step "rbdvault init + full backup"
"$RBDVAULT" init --store "$STORE"
"$RBDVAULT" backup --store "$STORE" rbd/vm-101
SID=$(awk '/^store_id/{print substr($2,1,8)}' "$STORE/rbdvault.store")
rbd export --no-progress "rbd/vm-101@rbdvault-$SID-1" "$WORK/rev1.expected"

step "change the image (random 4 KiB writes) + incremental backup"
rbd bench --io-type write --io-size 4K --io-total 8M --io-pattern rand rbd/vm-101 >/dev/null
"$RBDVAULT" backup --store "$STORE" rbd/vm-101 --format json
rbd export --no-progress "rbd/vm-101@rbdvault-$SID-2" "$WORK/rev2.expected"

step "revisions"
"$RBDVAULT" ls --store "$STORE"

step "restore the latest revision to rbd/vm-101-restored, revision 1 to a file"
"$RBDVAULT" restore --store "$STORE" rbd/vm-101 --to rbd/vm-101-restored
"$RBDVAULT" restore --store "$STORE" rbd/vm-101@1 --to-file "$WORK/rev1.raw"

step "verify against rbd export"
rbd export --no-progress rbd/vm-101-restored "$WORK/restored.img"
cmp "$WORK/rev2.expected" "$WORK/restored.img"
cmp "$WORK/rev1.expected" "$WORK/rev1.raw"
echo "OK: restored image and file are byte-identical to rbd export of their snapshots"

step "a batch run over the pool (config file, 3 more images, status, Nagios check)"
for i in 1 2 3; do rbd create --size 64M "rbd/vm-20$i"; done
rbd bench --io-type write --io-size 4M --io-total 16M rbd/vm-201 >/dev/null
cat >"$WORK/rbdvault.conf" <<CONF
[ceph]
conf = $CONF
[store]
path = $STORE
metrics-file = $WORK/rbdvault.prom
[defaults]
schedule = daily 02:00
keep-last = 7
[limits]
images-in-parallel = 2
[job.vms]
pool = rbd
include = vm-*
exclude = *-restored
CONF
"$RBDVAULT" run --config "$WORK/rbdvault.conf" --force
"$RBDVAULT" status --config "$WORK/rbdvault.conf"
"$RBDVAULT" check --config "$WORK/rbdvault.conf" --max-age 26h
