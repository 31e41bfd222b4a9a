#!/usr/bin/env bash
# nidag project driver (README.md, "Quick start").
#
#   ./run.sh demo    install missing packages, build Release into build/, run `nidag demo`
#   ./run.sh test    install missing packages, build into build/, run the whole ctest suite
#   ./run.sh asan    build build-asan/ with ASan+UBSan and run every test
#   ./run.sh tsan    build build-tsan/ with TSan and run the concurrent suites (ctest -L tsan)
#   ./run.sh bench   build into build/ and run `nidag-bench runtime`, `cache`, `models` and `dti`
#
# Extra arguments after `demo` are passed to `nidag demo` (e.g. --threads 1).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$ROOT"

JOBS="$(nproc 2>/dev/null || echo 2)"

step() { printf '\n==== %s ====\n' "$*"; }

usage() {
  sed -n '2,10p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
}

setup() {
  step "setup: checking Debian packages (scripts/setup.sh)"
  "$ROOT/scripts/setup.sh"
}

# build <dir> [extra cmake args...]
build() {
  local dir="$1"
  shift
  step "configure $dir ($*)"
  cmake -S . -B "$dir" -DCMAKE_BUILD_TYPE=Release "$@"
  step "build $dir (-j$JOBS)"
  cmake --build "$dir" -j"$JOBS"
}

# TSan maps its shadow memory at fixed addresses. Kernels with more than 28 bits
# of mmap randomisation can place libraries there, and the test then dies with
# "FATAL: ThreadSanitizer: unexpected memory mapping". Running without ASLR
# (setarch -R) avoids it; it costs nothing, so TSan runs always use it when
# setarch is available and allows it.
tsan_wrapper() {
  local arch
  arch="$(uname -m)"
  if command -v setarch >/dev/null 2>&1 && setarch "$arch" -R true 2>/dev/null; then
    echo "setarch $arch -R"
    return
  fi
  local bits
  bits="$(cat /proc/sys/vm/mmap_rnd_bits 2>/dev/null || echo 0)"
  if ((bits > 28)); then
    echo "run.sh: warning: vm.mmap_rnd_bits=$bits and setarch -R is unavailable;" \
      "TSan may fail with 'unexpected memory mapping'" \
      "(try: sysctl vm.mmap_rnd_bits=28)" >&2
  fi
}

# The CLI binary (tools/CMakeLists.txt puts it at the top of the build dir).
nidag_bin() {
  if [[ -x "$1/nidag" && -f "$1/nidag" ]]; then
    echo "$1/nidag"
    return
  fi
  echo "run.sh: no nidag binary in $1/" >&2
  return 1
}

cmd="${1:-}"
if (($# > 0)); then shift; fi

case "$cmd" in
  demo)
    setup
    build build
    bin="$(nidag_bin build)"
    step "run: $bin demo${*:+ $*}"
    "$bin" demo "$@"
    ;;
  test)
    setup
    build build
    step "test: ctest --test-dir build"
    ctest --test-dir build --output-on-failure -j2
    ;;
  asan)
    setup
    build build-asan -DNIDAG_SANITIZE=address -DNIDAG_BENCH=OFF
    step "test under ASan+UBSan: ctest --test-dir build-asan"
    ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1:strict_string_checks=1}" \
      UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}" \
      ctest --test-dir build-asan --output-on-failure -j2
    ;;
  tsan)
    setup
    build build-tsan -DNIDAG_SANITIZE=thread -DNIDAG_BENCH=OFF
    read -r -a wrap <<<"$(tsan_wrapper)"
    step "test under TSan: ${wrap[*]:+${wrap[*]} }ctest --test-dir build-tsan -L tsan"
    TSAN_OPTIONS="${TSAN_OPTIONS:-halt_on_error=1:second_deadlock_stack=1}" \
      "${wrap[@]}" ctest --test-dir build-tsan -L tsan --output-on-failure -j2
    ;;
  bench)
    setup
    build build
    step "bench: build/bench/nidag-bench runtime"
    build/bench/nidag-bench runtime
    step "bench: build/bench/nidag-bench cache"
    build/bench/nidag-bench cache
    step "bench: build/bench/nidag-bench models"
    build/bench/nidag-bench models
    step "bench: build/bench/nidag-bench dti (sweep plots in build/bench/)"
    build/bench/nidag-bench dti --sweep-tsv build/bench/w6_sweep.tsv
    scripts/plot_dti_sweep.sh build/bench/w6_sweep.tsv build/bench
    ;;
  help | -h | --help)
    usage
    ;;
  *)
    usage >&2
    if [[ -n "$cmd" ]]; then echo "run.sh: unknown command '$cmd'" >&2; fi
    exit 2
    ;;
esac
