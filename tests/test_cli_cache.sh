#!/usr/bin/env bash
# End-to-end test of `nidag cache <command>` (ctest: cli_cache).
#
#   test_cli_cache.sh NIDAG CLI_CACHE_FIXTURE
#
# The fixture fills a cache through the real graph (two runs of
# input -> load -> fit, alpha 1 then 2, input changed); this script then runs
# every cache command, text and --json, and checks exit codes and output.
# JSON is parsed with python3 (or jq) when one is installed.
set -euo pipefail
CLI_LIB="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/cli_lib.sh" # before any cd

NIDAG=$(realpath "${1:?usage: test_cli_cache.sh NIDAG FIXTURE}")
FIXTURE=$(realpath "${2:?usage: test_cli_cache.sh NIDAG FIXTURE}")
T=$(mktemp -d /tmp/nd-test-cli-cache.XXXXXX)
trap 'rm -rf "$T"' EXIT
unset NIDAG_CACHE
cd "$T"

# shellcheck source=cli_lib.sh
source "$CLI_LIB"
json_ok() {
  if command -v python3 >/dev/null; then
    python3 -c 'import json, sys; json.load(open(sys.argv[1]))' "$T/out" || fail "stdout is not JSON"
  elif command -v jq >/dev/null; then
    jq -e . "$T/out" >/dev/null || fail "stdout is not JSON"
  fi
  [ "$(wc -l <"$T/out")" = 1 ] || fail "JSON is not one line"
}

# ---------------------------------------------------------------- help
expect 0 "$NIDAG" help
for w in "cache <command>" "stats" "verify [--repair]" "gc [--max-size SIZE]" "compact" \
  "clear --yes" "why KEY-or-label" "--cache DIR" "--json"; do has_out "$w"; done
expect 0 "$NIDAG" cache help
has_out "why KEY-or-label"

# ---------------------------------------------------------------- usage errors (2)
expect 2 "$NIDAG" cache
expect 2 "$NIDAG" cache bogus
has_err "unknown cache command 'bogus'"
expect 2 "$NIDAG" cache stats --bogus
expect 2 "$NIDAG" cache stats --repair
expect 2 "$NIDAG" cache why
expect 2 "$NIDAG" cache stats extra
expect 2 "$NIDAG" cache gc --max-size
expect 2 "$NIDAG" cache gc --max-size abc
expect 2 "$NIDAG" cache gc --max-size 0
expect 2 "$NIDAG" cache gc --max-size 12Q
expect 2 "$NIDAG" cache clear --cache "$T/c"
has_err "--yes"
expect 2 "$NIDAG" --cache "$T/c" version

# ---------------------------------------------------------------- the demo
# Cold, then answered from the cache with the same checksum, then without one
# (a small cohort in $T/cohort, two atlases, one target).
DEMO=(demo --participants 20 --atlases aal,jhu --targets score_a --quiet)
expect 0 "$NIDAG" "${DEMO[@]}" --cache "$T/demo"
has_out "cache hits 0,"
grep '^checksum ' "$T/out" >"$T/sum1"
expect 0 "$NIDAG" --cache "$T/demo" "${DEMO[@]}" --threads 1
has_out "run: computed 0,"
grep '^checksum ' "$T/out" | cmp -s - "$T/sum1" || fail "cached demo checksum differs"
expect 0 "$NIDAG" "${DEMO[@]}" --no-cache
has_out "cache none (--no-cache)"
grep '^checksum ' "$T/out" | cmp -s - "$T/sum1" || fail "uncached demo checksum differs"
expect 0 "$NIDAG" cache why "features aal" --cache "$T/demo"
has_out "features aal"

# ---------------------------------------------------------------- no cache yet
for cmd in stats verify compact "why fit"; do
  # shellcheck disable=SC2086 # cmd is two words for why
  expect 1 "$NIDAG" cache $cmd --cache "$T/none"
  has_err "no cache at $T/none"
  [ ! -e "$T/none" ] || fail "'$cmd' created $T/none"
done
expect 1 "$NIDAG" cache stats          # default ./.nidag, cwd is $T
has_err "no cache at ./.nidag"
[ ! -e "$T/.nidag" ] || fail "stats created ./.nidag"
expect 0 "$NIDAG" cache gc --cache "$T/none"
has_out "nothing to collect"
expect 0 "$NIDAG" cache clear --yes --cache "$T/none" --json
json_ok
has_out '"exists":false'
[ ! -e "$T/none" ] || fail "gc/clear created $T/none"
mkdir "$T/empty"
expect 1 "$NIDAG" cache stats --cache "$T/empty"
has_err "no cache at $T/empty"
touch "$T/file"
expect 1 "$NIDAG" cache stats --cache "$T/file"

# ---------------------------------------------------------------- a real cache
"$FIXTURE" "$T/c" >"$T/keys" || fail "fixture failed"
FIT1=$(awk '$1 == "fit1" {print $2}' "$T/keys")
FIT2=$(awk '$1 == "fit2" {print $2}' "$T/keys")
[ ${#FIT1} = 32 ] && [ ${#FIT2} = 32 ] || fail "fixture printed no keys"

expect 0 "$NIDAG" cache stats --cache "$T/c"
has_out "entries"
has_out "recipes"
has_out "$T/c"
expect 0 "$NIDAG" cache stats --cache "$T/c" --json
json_ok
has_out '"entries":'
has_out '"recipes":'
expect 0 "$NIDAG" --cache "$T/c" cache stats --json # global option before the command
has_out '"entries":'
expect 0 env NIDAG_CACHE="$T/c" "$NIDAG" cache stats # the environment
has_out "$T/c"

# ---------------------------------------------------------------- why
expect 0 "$NIDAG" cache why fit --cache "$T/c"
has_out "$FIT2"
has_out "nearest (same label)"
has_out "param alpha: 1 → 2"
has_out "input 0 changed:"
has_out "(source) content changed:"
has_out "cached"
expect 0 "$NIDAG" cache why "$FIT1" --cache "$T/c"
has_out "param alpha: 2 → 1"
expect 0 "$NIDAG" cache why --json --cache "$T/c" fit
json_ok
has_out '"found":true'
has_out "\"key\":\"$FIT2\""
has_out '"name":"alpha","change":"changed","old":"1","new":"2"'
has_out '"why":{'
expect 1 "$NIDAG" cache why 00000000000000000000000000000000 --cache "$T/c"
has_out "unknown to the cache"
has_err "not known to the cache at $T/c"
expect 1 "$NIDAG" cache why "no such label" --cache "$T/c" --json
json_ok
has_out '"found":false'

# ---------------------------------------------------------------- verify
expect 0 "$NIDAG" cache verify --cache "$T/c"
has_out "0 bad"
expect 0 "$NIDAG" cache verify --cache "$T/c" --json
json_ok
has_out '"bad":0'
BLOB=$(find "$T/c/blobs" -type f -name '*.blob' | head -n 1)
[ -n "$BLOB" ] || fail "the fixture left no blob file"
SIZE=$(stat -c %s "$BLOB")
printf 'CORRUPTCORRUPT' | dd of="$BLOB" bs=1 seek=$((SIZE / 2)) conv=notrunc status=none
expect 1 "$NIDAG" cache verify --cache "$T/c"
has_out "bad "
has_out "nidag cache verify --repair"
expect 1 "$NIDAG" cache verify --cache "$T/c" --json
json_ok
has_out '"bad":1'
has_out '"code":"ND_'
expect 0 "$NIDAG" cache verify --repair --cache "$T/c"
has_out "1 bad, deleted"
expect 0 "$NIDAG" cache verify --cache "$T/c"
has_out "0 bad"
# the recipe outlives the value: why says it is no longer cached somewhere
expect 0 "$NIDAG" cache why load --cache "$T/c"

# ---------------------------------------------------------------- gc, compact
for size in 500M 2G 1048576 1.5GiB 64k; do
  expect 0 "$NIDAG" cache gc --max-size "$size" --cache "$T/c"
  has_out "evicted"
done
expect 0 "$NIDAG" cache gc --cache "$T/c" --json
json_ok
has_out '"evicted":'
expect 0 "$NIDAG" cache gc --max-size=1K --cache "$T/c" --json
json_ok
expect 0 "$NIDAG" cache compact --cache "$T/c"
has_out "compacted $T/c"
expect 0 "$NIDAG" cache compact --cache "$T/c" --json
json_ok
has_out '"disk_bytes_after":'

# ---------------------------------------------------------------- clear
expect 0 "$NIDAG" cache clear --yes --cache "$T/c"
has_out "cleared $T/c"
expect 0 "$NIDAG" cache stats --cache "$T/c" --json
has_out '"entries":0'
has_out '"recipes":0'
expect 1 "$NIDAG" cache why fit --cache "$T/c"

echo "test_cli_cache: all passed"
