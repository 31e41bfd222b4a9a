#!/usr/bin/env bash
# bench/bench_demo.sh: the goals of the main job (`nidag demo`, issue 6),
# printed as "name value unit" lines like nidag-bench's:
#
#   demo_cold_with_cohort_s   first use: cohort generation + the whole experiment
#   demo_cold_s               the experiment, cohort present, empty cache
#   demo_warm_s               the same again, answered from the cache
#   demo_warm_speedup         demo_cold_s / demo_warm_s
#   demo_warm_images_loaded   images the warm run loaded (must be 0)
#   demo_add_atlas_s          the experiment with the fifth atlas added to a
#                             cache holding the other four
#   demo_add_atlas_share      demo_add_atlas_s / demo_cold_s
#   demo_add_atlas_share_of_first  demo_add_atlas_s / demo_cold_with_cohort_s
#   demo_checksums_equal      1 when cold, warm and 1-thread runs agree bit for bit
#
#   bench/bench_demo.sh [NIDAG] [--participants N] [--threads N]
#
# Everything runs in a fresh temporary directory (removed at the end);
# timings are the median of 3 runs (the cold-with-cohort run is done once).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
NIDAG="${1:-$HERE/../build/nidag}"
shift || true
NIDAG="$(realpath "$NIDAG")"
EXTRA=("$@")
T="$(mktemp -d /tmp/nd-bench-demo.XXXXXX)"
trap 'rm -rf "$T"' EXIT
cd "$T"

run() { # run LOG ARGS...: nidag demo ARGS, output to LOG, prints the wall seconds
  local log=$1 t0 t1
  shift
  t0=$(date +%s.%N)
  "$NIDAG" demo --quiet "${EXTRA[@]}" "$@" >"$log" 2>&1 || {
    echo "# ERROR: nidag demo $* failed:" >&2
    cat "$log" >&2
    exit 1
  }
  t1=$(date +%s.%N)
  awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.3f", b - a}'
}
median3() { printf '%s\n' "$@" | sort -g | sed -n 2p; }
field() { sed -n "s/^run:.*[ ,]$1 \([0-9][0-9]*\).*/\1/p" "$2" | head -n 1; }
checksum() { sed -n 's/^checksum //p' "$1"; }
FOUR=aal,harvardoxford,brodmann,aicha

with_cohort=$(run first.log)
echo "# $(grep '^cohort:' first.log)"
echo "# $(grep '^experiment:' first.log)"
cold=() warm=() add=()
for i in 1 2 3; do
  rm -rf .nidag
  cold+=("$(run cold$i.log)")
  warm+=("$(run warm$i.log)")
  rm -rf .nidag
  run four$i.log --atlases "$FOUR" >/dev/null
  add+=("$(run add$i.log)")
done
run one.log --no-cache --threads 1 >/dev/null
c=$(median3 "${cold[@]}") w=$(median3 "${warm[@]}") a=$(median3 "${add[@]}")
same=1
for f in first.log cold1.log warm1.log warm3.log add1.log one.log; do
  [ "$(checksum "$f")" = "$(checksum cold1.log)" ] || same=0
done
echo "# cold runs ${cold[*]} s; warm ${warm[*]} s; adding an atlas ${add[*]} s"
echo "# cold: $(grep '^run:' cold1.log)"
echo "# warm: $(grep '^run:' warm1.log)"
echo "# add atlas: $(grep '^run:' add1.log)"
echo "demo_cold_with_cohort_s $with_cohort s"
echo "demo_cold_s $c s"
echo "demo_warm_s $w s"
awk -v c="$c" -v w="$w" 'BEGIN{printf "demo_warm_speedup %.1f x\n", c / w}'
awk -v c="$with_cohort" -v w="$w" 'BEGIN{printf "demo_warm_speedup_of_first %.1f x\n", c / w}'
echo "demo_warm_images_loaded $(field loaded warm1.log) images"
echo "demo_add_atlas_s $a s"
awk -v c="$c" -v a="$a" 'BEGIN{printf "demo_add_atlas_share %.3f ratio\n", a / c}'
awk -v c="$with_cohort" -v a="$a" 'BEGIN{printf "demo_add_atlas_share_of_first %.3f ratio\n", a / c}'
echo "demo_checksums_equal $same bool"
[ "$same" = 1 ] && [ "$(field loaded warm1.log)" = 0 ]
