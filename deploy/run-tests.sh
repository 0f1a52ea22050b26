#!/usr/bin/env bash
# Installs dependencies, builds, and runs every test: unit tests, then integration tests against a
# throwaway single-node Ceph cluster that CTest starts and stops (fixture "ceph").
#   deploy/run-tests.sh                 everything
#   deploy/run-tests.sh -L unit         only unit tests (any ctest arguments pass through)
#   deploy/run-tests.sh -LE package     all but the Debian package test (package_deb: builds the
#                                       .deb, installs it in a fresh Debian root; needs the archive)
# With no arguments it then runs deploy/sanitize-tests.sh: the unit tests under ASan+UBSan and TSan,
# and each decoder fuzzer for 20 s. Measured cold (no ccache) on a shared, loaded 2-core machine:
# ASan+UBSan 11.5 min, fuzz 4.5 min, TSan 10.3 min (about half that on 2 idle cores); ccache helps.
set -euo pipefail
cd "$(dirname "$0")/.."
deploy/install-deps.sh
deploy/build.sh
if [ $# -gt 0 ]; then
  cd build
  exec ctest --output-on-failure -j "${JOBS:-2}" "$@"
fi
(cd build && ctest --output-on-failure -j "${JOBS:-2}")
exec deploy/sanitize-tests.sh
