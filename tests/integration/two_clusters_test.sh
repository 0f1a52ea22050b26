#!/usr/bin/env bash
# Two micro-ceph clusters started at once in two directories both work; stopping one leaves the
# other running; each stop touches only its own daemons.
set -euo pipefail
MC="$(dirname "$0")/../../deploy/micro-ceph.sh"
BASE=$(mktemp -d /tmp/rbdvault-two-clusters.XXXXXX)
cleanup() { "$MC" stop "$BASE/a" --purge || true; "$MC" stop "$BASE/b" --purge || true; rm -rf "$BASE"; }
trap cleanup EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

"$MC" start "$BASE/a" >"$BASE/a.conf-path" & pa=$!
"$MC" start "$BASE/b" >"$BASE/b.conf-path" & pb=$!
wait $pa || fail "cluster a did not start"
wait $pb || fail "cluster b did not start"
CA=$(cat "$BASE/a.conf-path"); CB=$(cat "$BASE/b.conf-path")
[ "$CA" = "$BASE/a/ceph.conf" ] && [ "$CB" = "$BASE/b/ceph.conf" ] || fail "start printed '$CA' / '$CB'"
port_a=$(sed -n 's/^mon host = //p' "$CA"); port_b=$(sed -n 's/^mon host = //p' "$CB")
[ "$port_a" != "$port_b" ] || fail "both clusters on $port_a"

rbd -c "$CA" create --size 8M rbd/only-in-a
rbd -c "$CB" create --size 8M rbd2/only-in-b
[ "$(rbd -c "$CA" ls rbd)" = "only-in-a" ] || fail "cluster a sees: $(rbd -c "$CA" ls rbd)"
[ -z "$(rbd -c "$CB" ls rbd)" ] || fail "cluster b sees a's image"
[ "$(rbd -c "$CB" ls rbd2)" = "only-in-b" ] || fail "cluster b lacks its image"

"$MC" stop "$BASE/a"
! "$MC" status "$BASE/a" || fail "cluster a still running after stop"
"$MC" status "$BASE/b" || fail "stopping a stopped b"
[ "$(timeout 30 rbd -c "$CB" ls rbd2)" = "only-in-b" ] || fail "cluster b does not answer after a stopped"
"$MC" stop "$BASE/a"  # idempotent
"$MC" stop "$BASE/b"
! "$MC" status "$BASE/b" || fail "cluster b still running after stop"
echo "PASS two clusters ($port_a, $port_b)"
