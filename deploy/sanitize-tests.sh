#!/usr/bin/env bash
# The unit tests under sanitizers, and the decoder fuzzers for a bounded time (issue 11):
#   build-asan  g++, ASan+UBSan: every unit test
#   build-fuzz  clang++-14, ASan+UBSan+libFuzzer: each fuzz target for FUZZ_SECONDS (default 20) on
#               the seed corpus make_fuzz_seeds writes with the real encoders. (Ceph's headers do not
#               compile with clang in C++20 mode, so the unit tests are built with g++.)
#   build-tsan  g++, TSan: the unit tests that run threads (concurrent writers, the block pipeline,
#               host slots)
# Builds only unit_tests and the fuzzers, never the CLI. Called by deploy/run-tests.sh after the
# main suite; run it alone after deploy/install-deps.sh. Environment: JOBS (default 2),
# FUZZ_SECONDS, SANITIZE_ONLY=asan|fuzz|tsan.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
JOBS=${JOBS:-2}
FUZZ_SECONDS=${FUZZ_SECONDS:-20}
TSAN_FILTER='Pipeline|Concurrent|OneWriterPerImage|SecondWriterIsRefused|HostSlots'

# ASan: leaks are reported (and fail) only at exit; abort so ctest sees the failure.
export ASAN_OPTIONS=${ASAN_OPTIONS:-abort_on_error=1:detect_leaks=1:strict_string_checks=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
# librocksdb and libstdc++ are not built with TSan; tsan.supp names the noise that comes from
# inside them (each entry says why), never a frame of ours.
export TSAN_OPTIONS=${TSAN_OPTIONS:-halt_on_error=1:second_deadlock_stack=1:suppressions=$ROOT/tests/tsan.supp}

# -O1: sanitizer overhead without -O0's slowness; -g1: line tables for the reports, at less compile
# time than full debug info.
configure() {  # DIR COMPILER SANITIZERS FUZZ
  cmake -S . -B "$1" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -g1" \
    -DCMAKE_CXX_COMPILER="$2" -DRBDVAULT_SANITIZE="$3" -DRBDVAULT_FUZZ="$4" >/dev/null
}

step() { printf '\n== sanitize-tests: %s (%ds)\n' "$*" "$SECONDS"; }

run_asan() {
  step "ASan+UBSan build"
  configure build-asan g++ address,undefined OFF
  cmake --build build-asan -j "$JOBS" --target unit_tests || return 1  # set -e is off inside an && chain
  step "ASan+UBSan unit tests"
  (cd build-asan && ctest --output-on-failure -j "$JOBS" -L unit)
}

run_fuzz() {
  step "fuzz build (clang-14, ASan+UBSan)"
  configure build-fuzz clang++-14 address,undefined ON
  cmake --build build-fuzz -j "$JOBS" --target fuzzers || return 1
  step "fuzzers, ${FUZZ_SECONDS}s each"
  local corpus=build-fuzz/corpus
  rm -rf "$corpus"
  build-fuzz/tests/fuzz/make_fuzz_seeds "$corpus" "$ROOT"
  local t
  for t in index_records chunk patch pack_scan oplog batch_config store_marker manifest pack_identities; do
    # New inputs go to a scratch corpus so the seeds stay as the encoders wrote them; a crash
    # leaves its input in build-fuzz/artifacts/ for a unit test to reproduce.
    mkdir -p "$corpus/$t.new" build-fuzz/artifacts
    local log=build-fuzz/artifacts/$t.log
    if ! build-fuzz/tests/fuzz/fuzz_"$t" -max_total_time="$FUZZ_SECONDS" -rss_limit_mb=1024 -malloc_limit_mb=64 \
      -print_final_stats=1 -artifact_prefix=build-fuzz/artifacts/"$t"- \
      "$corpus/$t.new" "$corpus/$t" >"$log" 2>&1; then
      tail -n 60 "$log" >&2
      echo "sanitize-tests: fuzz_$t failed (input saved under build-fuzz/artifacts/)" >&2
      exit 1
    fi
    echo "fuzz_$t: $(grep -E '^stat::number_of_executed_units' "$log" | awk '{print $2}') runs, clean"
  done
}

run_tsan() {
  step "TSan build"
  configure build-tsan g++ thread OFF
  cmake --build build-tsan -j "$JOBS" --target unit_tests || return 1
  step "TSan: concurrency tests"
  (cd build-tsan && ctest --output-on-failure -j "$JOBS" -L unit -R "$TSAN_FILTER")
}

# A stage that fails (a build that does not link, a test that fails) fails the whole run: `set -e`
# does not apply inside && lists and functions called from them.
status=0
case "${SANITIZE_ONLY:-all}" in
  asan) run_asan || status=$? ;;
  fuzz) run_fuzz || status=$? ;;
  tsan) run_tsan || status=$? ;;
  *) { run_asan && run_fuzz && run_tsan; } || status=$? ;;
esac
if [ "$status" -ne 0 ]; then
  echo "sanitize-tests: failed (exit $status)" >&2
  exit "$status"
fi
step "done"
