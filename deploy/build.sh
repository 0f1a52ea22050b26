#!/usr/bin/env bash
# Configures and builds rbdvault into ./build (RelWithDebInfo, 2 jobs, ccache when present).
set -euo pipefail
cd "$(dirname "$0")/.."
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j "${JOBS:-2}"
