#!/usr/bin/env bash
# Installs dependencies, builds, and runs every test: unit tests, then integration tests against a
# throwaway single-node Ceph cluster that CTest starts and stops (fixture "ceph").
#   deploy/run-tests.sh                 everything
#   deploy/run-tests.sh -L unit         only unit tests (any ctest arguments pass through)
set -euo pipefail
cd "$(dirname "$0")/.."
deploy/install-deps.sh
deploy/build.sh
cd build
exec ctest --output-on-failure -j "${JOBS:-2}" "$@"
