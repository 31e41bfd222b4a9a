#!/usr/bin/env bash
# ctest example_dti: run examples/example_dti twice on DIPY's small_64D
# (tests/data/dti/small64.*) in a scratch folder. The first run must compute
# the fit; the second, against the same cache, must compute nothing (one hit),
# print the same table, key and summary, and leave the 6 map files untouched.
#
#   run_example_dti.sh EXAMPLE_DTI DATA_DIR
set -euo pipefail

EXE=$(realpath "${1:?usage: run_example_dti.sh EXAMPLE_DTI DATA_DIR}")
D=$(realpath "${2:?usage: run_example_dti.sh EXAMPLE_DTI DATA_DIR}")
T=$(mktemp -d /tmp/nd-example-dti.XXXXXX)
trap 'rm -rf "$T"' EXIT

fail() {
  echo "FAIL: $*" >&2
  exit 1
}
files() { # inode and mtime of each map file
  for f in fa md ad rd evals evecs; do
    [ -s "$T/sub-01_$f.nii.gz" ] || fail "run $1 wrote no $T/sub-01_$f.nii.gz"
    stat -c '%n %i %Y' "$T/sub-01_$f.nii.gz"
  done
}
for run in 1 2; do
  echo "--- run $run"
  rc=0
  "$EXE" "$D/small64.nii.gz" "$D/small64.bval" "$D/small64.bvec" "$T/sub-01_" "$T/cache" \
    >"$T/out$run" || rc=$?
  cat "$T/out$run"
  [ "$rc" = 0 ] || fail "run $run exited $rc"
  files $run >"$T/files$run"
done

grep -Eq '^run: computed [1-9][0-9]*, cache hits 0,' "$T/out1" || fail "run 1 computed nothing"
grep -q 'default chunking: same key' "$T/out1" || fail "the chunking changed the key"
grep -Eq '^summary: [1-9][0-9]* voxels with MD > 0, mean FA [0-9.]+, mean MD ' "$T/out1" ||
  fail "run 1 printed no summary"
grep -Eq '^run: computed 0, cache hits 1,' "$T/out2" || fail "run 2 computed nodes"
diff <(grep -v '^run:' "$T/out1") <(grep -v '^run:' "$T/out2") || fail "run 2 printed other maps"
diff "$T/files1" "$T/files2" || fail "run 2 rewrote map files"
echo "ok: run 2 answered from the cache and left the files alone"
