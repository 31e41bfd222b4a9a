#!/usr/bin/env bash
# ctest example_experiment: run examples/example_experiment twice on a small
# synthetic cohort in a scratch folder. The first run must compute the graph
# and print a score per atlas and strategy; the second, against the same
# cache, must compute nothing and print the same scores.
#
#   run_example_experiment.sh EXAMPLE_EXPERIMENT [PARTICIPANTS]
#
# Exits 77 (skipped) when mricron-data's atlases are not installed.
set -euo pipefail

EXE=$(realpath "${1:?usage: run_example_experiment.sh EXAMPLE_EXPERIMENT [PARTICIPANTS]}")
N=${2:-30}
A=/usr/share/mricron/templates # the program's TEMPLATES
for f in AICHAmc.nii.gz aal.nii.gz HarvardOxford-cort-maxprob-thr0-1mm.nii.gz \
  JHU-WhiteMatter-labels-1mm.nii.gz; do
  if [ ! -r "$A/$f" ]; then
    echo "SKIP: $A/$f not found (install mricron-data)"
    exit 77
  fi
done
T=$(mktemp -d /tmp/nd-example-experiment.XXXXXX)
trap 'rm -rf "$T"' EXIT

fail() {
  echo "FAIL: $*" >&2
  exit 1
}
for run in 1 2; do
  echo "--- run $run"
  rc=0
  "$EXE" "$T/cohort" "$N" "$T/cache" >"$T/out$run" || rc=$?
  cat "$T/out$run"
  [ "$rc" = 0 ] || fail "run $run exited $rc"
done

grep -Eq '^run: computed [1-9][0-9]*, cache hits 0,' "$T/out1" || fail "run 1 computed nothing"
for m in aal harvardoxford jhu vote grid stack; do
  grep -Eq "^  (atlas|ens) +$m +-?[0-9]+\.[0-9]+ ± [0-9]+\.[0-9]+$" "$T/out1" ||
    fail "run 1 printed no score for $m"
done
grep -Eq '^run: computed 0, cache hits [1-9][0-9]*,' "$T/out2" || fail "run 2 computed nodes"
diff <(grep -Ev '^(cohort|run):' "$T/out1") <(grep -Ev '^(cohort|run):' "$T/out2") ||
  fail "run 2 printed other scores"
echo "ok: run 2 answered from the cache"
