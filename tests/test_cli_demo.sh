#!/usr/bin/env bash
# End-to-end test of `nidag demo` (ctest: cli_demo) on a small cohort:
#   1. cold run: everything computed, every image loaded, outputs written;
#   2. rerun: nothing computed, no image loaded, the same checksum;
#   3. 1 and 2 threads without the cache: the same checksum;
#   4. one more atlas: only that atlas's nodes (and the new pool's combine
#      nodes) are computed; the old atlases' fits are cache hits;
#   5. one participant's file changed in place: only that participant's image
#      is loaded again;
#   6. a corrupt participant file: an error naming the participant; with
#      --skip-bad a warning, and the experiment goes on without it;
#   7. a run killed halfway: the rerun reuses what was finished.
#
#   test_cli_demo.sh NIDAG [TEMPLATES_DIR]
#
# Needs the MRIcron atlases; exits 77 (skipped) when they are not installed.
set -euo pipefail
CLI_LIB="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/cli_lib.sh" # before any cd

NIDAG=$(realpath "${1:?usage: test_cli_demo.sh NIDAG [TEMPLATES_DIR]}")
A=${2:-/usr/share/mricron/templates}
for f in AICHAmc.nii.gz aal.nii.gz HarvardOxford-cort-maxprob-thr0-1mm.nii.gz brodmann.nii.gz \
  JHU-WhiteMatter-labels-1mm.nii.gz; do
  if [ ! -r "$A/$f" ]; then
    echo "SKIP: $A/$f not found (install mricron's templates)"
    exit 77
  fi
done
T=$(mktemp -d /tmp/nd-test-cli-demo.XXXXXX)
trap 'rm -rf "$T"' EXIT
cd "$T"

# shellcheck source=cli_lib.sh
source "$CLI_LIB"
# run_demo CODE ARGS...: nidag demo ARGS on the 60-participant cohort.
run_demo() {
  local want=$1
  shift
  expect "$want" "$NIDAG" demo --templates "$A" --participants 60 --quiet "$@"
}
# field NAME: the number after "NAME " in the run line ("computed 12,").
field() { sed -n "s/^run:.*[ ,]$1 \([0-9][0-9]*\).*/\1/p" "$T/out" | head -n 1; }
checksum() { sed -n 's/^checksum //p' "$T/out"; }

BASE=(--atlases aal,jhu --targets score_a,group)

# 1. cold
run_demo 0 "${BASE[@]}"
has_out "experiment: 60 participants x 2 atlases x 2 targets"
has_out "score_a "
has_out "group "
[ "$(field loaded)" = 60 ] || fail "cold run loaded $(field loaded) images, wanted 60"
cold_computed=$(field computed)
[ "$cold_computed" -gt 100 ] || fail "cold run computed only $cold_computed nodes"
sum=$(checksum)
[ -n "$sum" ] || fail "no checksum"
for f in results/results.csv results/results.json results/strategies.gp; do
  [ -s "$f" ] || fail "$f missing"
done
# 2 targets x (2 atlases + 3 ensembles) x (5 folds + mean + sd) rows + header
[ "$(wc -l <results/results.csv)" = $((2 * 5 * 7 + 1)) ] || fail "results.csv has $(wc -l <results/results.csv) lines"
grep -q '"name": "score_a"' results/results.json || fail "results.json lacks score_a"
if command -v gnuplot >/dev/null; then
  [ -s results/strategies.svg ] || fail "gnuplot is installed but there is no strategies.svg"
fi

# 2. rerun from the cache
run_demo 0 "${BASE[@]}"
[ "$(field computed)" = 0 ] || fail "rerun computed $(field computed) nodes"
[ "$(field loaded)" = 0 ] || fail "rerun loaded $(field loaded) images"
[ "$(checksum)" = "$sum" ] || fail "rerun checksum $(checksum) != $sum"

# usage errors (2), and failures that say what is wrong (1)
run_demo 2 --participants 50000
has_err "--participants needs a whole number from 10 to 10000"
run_demo 2 --targets ,
has_err "--targets needs a comma-separated list"
touch afile
run_demo 1 "${BASE[@]}" --out afile
has_err "cannot create 'afile': Not a directory"
mkdir -p notarget && printf 'participant_id\tfamily_id\nsub-0001\tf1\n' >notarget/participants.tsv
run_demo 1 --cohort notarget --no-generate
has_err "notarget/participants.tsv has no numeric target column"

# 3. threads, without the cache
run_demo 0 "${BASE[@]}" --no-cache --threads 1
[ "$(checksum)" = "$sum" ] || fail "1 thread checksum $(checksum) != $sum"
run_demo 0 "${BASE[@]}" --no-cache --threads 2
[ "$(checksum)" = "$sum" ] || fail "2 threads checksum $(checksum) != $sum"

# 4. one more atlas: its 60 extractions, its resample, its features, its
# fits (2 targets x 5 folds x 4) and the new pool's combine nodes; nothing
# of aal or jhu
run_demo 0 --atlases aal,jhu,brodmann --targets score_a,group
added=$(field computed)
[ "$(field loaded)" = 60 ] || fail "adding an atlas loaded $(field loaded) images, wanted 60 (loads are not cached)"
# 60 image loads + the grid image's load + the atlas's load + its resample
# + 60 extractions + 1 features + 2 x 5 x 4 fits
# + per target (5 folds x 3 ensembles + 1 new score + 3 ensemble scores)
want=$((60 + 1 + 1 + 1 + 60 + 1 + 40 + 2 * (15 + 1 + 3)))
[ "$added" = "$want" ] || fail "adding an atlas computed $added nodes, wanted $want"

# 5. one participant's file changed in place. The demo repairs its own
# cohort (a changed map is regenerated), so this runs on a copy of the data
# with --no-generate, as on a user's own dataset.
mkdir -p own && cp -r cohort/. own/
run_demo 0 "${BASE[@]}" --cohort own --no-generate
[ "$(field computed)" = 0 ] || fail "a copied cohort recomputed $(field computed) nodes"
# new content: the same participant from a cohort of another seed (a copy of
# another participant's file would be that participant's content, whose
# extractions are already cached: content addressing)
"$NIDAG" cohort other --participants 7 --seed 2 --templates "$A" >/dev/null
cp other/sub-0007/anat/sub-0007_map.nii.gz own/sub-0007/anat/sub-0007_map.nii.gz
run_demo 0 "${BASE[@]}" --cohort own --no-generate
[ "$(field loaded)" = 1 ] || fail "a changed participant loaded $(field loaded) images, wanted 1"
# its load, its 2 extractions, 2 features, and every fit downstream of them
[ "$(field computed)" -lt "$cold_computed" ] || fail "a changed participant recomputed everything"

# 6. a corrupt participant file
head -c 1000 own/sub-0002/anat/sub-0002_map.nii.gz >own/sub-0005/anat/sub-0005_map.nii.gz
run_demo 1 "${BASE[@]}" --cohort own --no-generate
has_err "sub-0005"
run_demo 0 "${BASE[@]}" --cohort own --no-generate --skip-bad
has_err "leaving out participant sub-0005"
has_out "experiment: 59 participants"
# a missing participant file: the same, naming the participant
rm own/sub-0009/anat/sub-0009_map.nii.gz
run_demo 1 "${BASE[@]}" --cohort own --no-generate
has_err "sub-0009"
run_demo 0 "${BASE[@]}" --cohort own --no-generate --skip-bad
has_err "leaving out participant sub-0009"
has_out "experiment: 58 participants"

# 7. killed halfway (one thread, every atlas and target, so it is still
# running after a second): what was finished is reused
run_demo 0 --no-cache --threads 1
full=$(field computed)
full_sum=$(checksum)
rm -rf .nidag
NIDAG_THREADS=1 "$NIDAG" demo --templates "$A" --participants 60 --quiet >/dev/null 2>&1 &
pid=$!
# kill it once some results are committed (at most 30 s), whatever the
# machine's speed (ASan builds run this too)
entries() { "$NIDAG" cache stats --json --cache .nidag 2>/dev/null | sed -n 's/.*"entries":\([0-9]*\).*/\1/p'; }
for _ in $(seq 300); do
  n=$(entries || true)
  [ "${n:-0}" -ge 50 ] && break
  kill -0 "$pid" 2>/dev/null || break
  sleep 0.1
done
kill -9 "$pid" 2>/dev/null || true
wait "$pid" 2>/dev/null || true
run_demo 0
hits=$(field hits)
[ "$hits" -gt 0 ] || fail "the run after a kill found no cache hits"
[ "$(field computed)" -lt "$full" ] || fail "the run after a kill recomputed everything"
[ "$(checksum)" = "$full_sum" ] || fail "after a kill the checksum is $(checksum), not $full_sum"

echo "PASS: cold computed $cold_computed, added atlas computed $added, after a kill $hits hits"
