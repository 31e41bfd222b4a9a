#!/usr/bin/env bash
# End-to-end test of `nidag dti` on DIPY's small_64D (ctest: cli_dti).
#
#   test_cli_dti.sh NIDAG FIXTURE DATA_DIR
#
# FIXTURE is cli_dti_fixture (tests/cli_dti_fixture.c): it writes the masks
# and reads the maps back. DATA_DIR is tests/data/dti: small64.nii.gz (10 x 10
# x 10 x 65, int16), small64.bval, small64.bvec and DIPY's reference maps.
set -euo pipefail
CLI_LIB="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/cli_lib.sh" # before any cd

NIDAG=$(realpath "${1:?usage: test_cli_dti.sh NIDAG FIXTURE DATA_DIR}")
FIX=$(realpath "${2:?usage: test_cli_dti.sh NIDAG FIXTURE DATA_DIR}")
D=$(realpath "${3:?usage: test_cli_dti.sh NIDAG FIXTURE DATA_DIR}")
DWI=$D/small64.nii.gz
BVAL=$D/small64.bval
BVEC=$D/small64.bvec
T=$(mktemp -d /tmp/nd-test-cli-dti.XXXXXX)
trap 'rm -rf "$T"' EXIT
unset NIDAG_CACHE NIDAG_TRACE
cd "$T"

# shellcheck source=cli_lib.sh
source "$CLI_LIB"

NAMES="fa md ad rd evals evecs"
# dti ARGS...: nidag dti on small64, plus ARGS.
dti() { "$NIDAG" dti --dwi "$DWI" --bval "$BVAL" --bvec "$BVEC" "$@"; }
# stamps PREFIX: inode, mtime (ns) and size of each output file.
stamps() { for n in $NAMES; do stat -c '%n %i %y %s' "$1$n.nii.gz"; done; }
# same_maps PREFIX1 PREFIX2: every output file has the same bytes.
same_maps() {
  for n in $NAMES; do
    cmp -s "$1$n.nii.gz" "$2$n.nii.gz" || fail "$1$n.nii.gz differs from $2$n.nii.gz"
  done
}
# no_outputs PREFIX: none of the output files exists.
no_outputs() {
  for n in $NAMES; do [ ! -e "$1$n.nii.gz" ] || fail "$1$n.nii.gz was written"; done
}
# fixture ARGS...: run the fixture, its stdout in $T/fix.
fixture() {
  "$FIX" "$@" >"$T/fix" 2>>"$T/err" || fail "cli_dti_fixture $* failed: $(cat "$T/fix")"
}
fix_is() { [ "$(cat "$T/fix")" = "$1" ] || fail "fixture printed '$(cat "$T/fix")', wanted '$1'"; }

# ---------------------------------------------------------------- help and usage (2)
expect 0 "$NIDAG" help
has_out "dti --dwi F --bval F --bvec F --out PREFIX"
has_out "--schedule static|dynamic|guided"
expect 0 "$NIDAG" dti --help
has_out "PREFIX{fa,md,ad,rd,evals,evecs}.nii.gz"
expect 2 dti
has_err "missing required option --out"
expect 2 "$NIDAG" dti --bval "$BVAL" --bvec "$BVEC" --out r/
has_err "missing required option --dwi"
expect 2 "$NIDAG" dti --dwi "$DWI" --bvec "$BVEC" --out r/
has_err "missing required option --bval"
expect 2 "$NIDAG" dti --dwi "$DWI" --bval "$BVAL" --out r/
has_err "missing required option --bvec"
expect 2 dti --out r/ --method foo
has_err "--method is 'wls' or 'ols', got 'foo'"
expect 2 dti --out r/ --chunks 0
has_err "--chunks needs a whole number"
for bad in -3 1.5 x ''; do expect 2 dti --out r/ --chunks="$bad"; has_err "--chunks"; done
expect 2 dti --out r/ --schedule foo
has_err "--schedule is 'static', 'dynamic' or 'guided', got 'foo'"
expect 2 dti --out r/ --threads 0
has_err "--threads"
expect 2 dti --out r/ --bogus
has_err "unknown option '--bogus'"
expect 2 dti --out r/ stray
has_err "unexpected argument 'stray'"
expect 2 dti --out
has_err "option --out needs a value"
expect 2 dti --out r/ --cache c --no-cache
has_err "contradict"
expect 2 "$NIDAG" --cache c version
{ [ ! -e .nidag ] && [ ! -e c ]; } || fail "a usage error created a cache"

# ---------------------------------------------------------------- cold run
mkdir r
expect 0 dti --out r/s_ --cache "$T/c"
has_out "dti: WLS fit of $DWI: 1000 of 1000 voxels fitted (no mask), 0 failed (NaN)"
has_out "min diffusivity 1.00721e-09"
has_out "dti: computed in"
has_out "nodes computed 2, cache hits 0; cache $T/c)"
ALL="r/s_fa.nii.gz r/s_md.nii.gz r/s_ad.nii.gz r/s_rd.nii.gz r/s_evals.nii.gz r/s_evecs.nii.gz"
has_out "dti: wrote: $ALL"
[ "$(find r -type f | wc -l)" = 6 ] || fail "not 6 files in r/: $(ls r)"
for n in $NAMES; do gzip -t "r/s_$n.nii.gz" || fail "r/s_$n.nii.gz is not gzip"; done
# float32 (NIfTI datatype 16) on the DWI's 10 x 10 x 10 grid
for n in fa md ad rd; do fixture dims "r/s_$n.nii.gz"; fix_is "16 10 10 10"; done
fixture dims r/s_evals.nii.gz
fix_is "16 10 10 10 3"
fixture dims r/s_evecs.nii.gz
fix_is "16 10 10 10 3 3"
fixture stats r/s_md.nii.gz
fix_is "voxels 1000 nonzero 1000 nan 0 outside 0"
# DIPY's WLS maps where they are well defined (float32 rounding only)
fixture compare r/s_fa.nii.gz "$D/small64_wls_fa.npy" "$D/small64_wls_well_defined.npy" 1e-6
fixture compare r/s_md.nii.gz "$D/small64_wls_md.npy" "$D/small64_wls_well_defined.npy" 1e-9
stamps r/s_ >cold.stamps

# ---------------------------------------------------------------- cached rerun
# The --opt=V forms and the global --cache: nothing computed, files untouched.
expect 0 "$NIDAG" --cache "$T/c" dti --dwi="$DWI" --bval="$BVAL" --bvec="$BVEC" --out=r/s_
has_out "1000 of 1000 voxels fitted (no mask), 0 failed (NaN)"
has_out "dti: read from the cache in"
has_out "nodes computed 0, cache hits 1"
has_out "dti: unchanged: $ALL"
stamps r/s_ | cmp -s - cold.stamps || fail "a cached rerun touched the files"
# The key is the files' contents, not their paths: a copy of the DWI is a hit.
cp "$DWI" copy.nii.gz
expect 0 "$NIDAG" dti --dwi copy.nii.gz --bval "$BVAL" --bvec "$BVEC" --out r/s_ --cache c
has_out "nodes computed 0, cache hits 1"
# A changed b-value (still a valid table) is a new key.
awk '{ $2 = $2 + 1; print }' "$BVAL" >changed.bval
mkdir changed
expect 0 "$NIDAG" dti --dwi "$DWI" --bval changed.bval --bvec "$BVEC" --out changed/ --cache c
has_out "nodes computed 2, cache hits 0"
cmp -s changed/fa.nii.gz r/s_fa.nii.gz && fail "a changed b-value gave the same FA"

# ---------------------------------------------------------------- schedule, chunks, threads
# Not in the key: with the cache, a hit; without, recomputed to the same bytes.
expect 0 dti --out r/s_ --cache c --schedule static --chunks 7 --threads 1
has_out "nodes computed 0, cache hits 1"
mkdir r2
expect 0 dti --out r2/ --no-cache --schedule static --chunks 7 --threads 1
has_out "dti: computed in"
has_out "cache none"
same_maps r/s_ r2/
expect 0 dti --out r2/ --no-cache --schedule guided --chunks 1000 --threads 2
has_out "dti: unchanged: r2/fa.nii.gz"
expect 0 dti --out r2/ --no-cache --schedule dynamic --chunks 1
has_out "dti: unchanged: r2/fa.nii.gz"
[ ! -e .nidag ] || fail "--no-cache created ./.nidag"
# An existing directory as PREFIX (no trailing slash): the files go inside.
expect 0 dti --out r2 --cache c
has_out "unchanged: r2/fa.nii.gz"
# A directory whose name contains ".nii" (the temporary files go next to the outputs).
mkdir d.nii
expect 0 dti --out d.nii --cache c
has_out "wrote: d.nii/fa.nii.gz"
same_maps r/s_ d.nii/
left=$(find r r2 d.nii -name '*tmp*')
[ -z "$left" ] || fail "temporary files left: $left"

# ---------------------------------------------------------------- OLS
mkdir ols
expect 0 dti --out ols/ --method ols --cache c
has_out "dti: OLS fit of $DWI: 1000 of 1000 voxels fitted"
has_out "nodes computed 2, cache hits 0"
for n in fa md evals; do
  cmp -s "ols/$n.nii.gz" "r/s_$n.nii.gz" && fail "OLS $n equals WLS $n"
done
fixture compare ols/fa.nii.gz "$D/small64_ols_fa.npy" "$D/small64_ols_well_defined.npy" 1e-6
expect 0 dti --out ols/ --method=ols --cache c
has_out "nodes computed 0, cache hits 1"

# ---------------------------------------------------------------- the default cache
expect 0 dti --out r/s_
has_out "nodes computed 2, cache hits 0"
[ -d .nidag ] || fail "no ./.nidag"
has_out "dti: unchanged: r/s_fa.nii.gz" # computed again, the same bytes
expect 0 dti --out r/s_
has_out "nodes computed 0, cache hits 1"

# ---------------------------------------------------------------- masks
fixture mask "$DWI" half.nii.gz half
expect 0 dti --mask half.nii.gz --out m_ --cache c
has_out "500 of 1000 voxels fitted (mask half.nii.gz), 0 failed (NaN)"
has_out "nodes computed 3, cache hits 0"
for n in fa md ad rd; do
  fixture stats "m_$n.nii.gz" half.nii.gz
  [ "$n" = fa ] || fix_is "voxels 1000 nonzero 500 nan 0 outside 0"
  grep -q "outside 0$" "$T/fix" || fail "m_$n.nii.gz is non-zero outside the mask"
done
expect 0 dti --mask=half.nii.gz --out m_ --cache c
has_out "nodes computed 0, cache hits 1"
# Masks on other grids: refused, naming the mask and the problem.
fixture mask "$DWI" shifted.nii.gz shifted
expect 1 dti --mask shifted.nii.gz --out bad_ --cache c
has_err "shifted.nii.gz"
has_err "the mask's affine differs from the DWI's"
fixture mask "$DWI" small.nii.gz small
expect 1 dti --mask small.nii.gz --out bad_ --cache c
has_err "small.nii.gz"
has_err "the mask is not on the DWI's grid: its shape is 10 x 10 x 9"
expect 1 dti --mask "$DWI" --out bad_ --cache c
has_err "the mask must be a 3D image"

# ---------------------------------------------------------------- bad inputs (1)
# a bval file one value short
awk '{ $NF = ""; print }' "$BVAL" >short.bval
expect 1 "$NIDAG" dti --dwi "$DWI" --bval short.bval --bvec "$BVEC" --out bad_ --cache c
has_err "short.bval has 64 b-values but $BVEC has 65 b-vectors"
# a diffusion-weighted volume whose b-vector is not a unit vector
awk 'NR == 1 { $3 = $3 * 2 } { print }' "$BVEC" >nonunit.bvec
expect 1 "$NIDAG" dti --dwi "$DWI" --bval "$BVAL" --bvec nonunit.bvec --out bad_ --cache c
has_err "nonunit.bvec: volume 2"
has_err "must be unit vectors"
# no b0 volume (every b-value 1000, volume 0 given a unit vector)
awk '{ for (i = 1; i <= NF; i++) if ($i + 0 < 1000) $i = 1000; print }' "$BVAL" >nob0.bval
awk 'NR == 1 { $1 = 1 } NR > 1 { $1 = 0 } { print }' "$BVEC" >nob0.bvec
expect 1 "$NIDAG" dti --dwi "$DWI" --bval nob0.bval --bvec nob0.bvec --out bad_ --cache c
has_err "nob0.bval"
has_err "no b0 volume"
# a bval file with a token that is not a number; a missing bvec file
printf '0 1000 abc\n' >bad.bval
expect 1 "$NIDAG" dti --dwi "$DWI" --bval bad.bval --bvec "$BVEC" --out bad_ --cache c
has_err "bad.bval: line 1: 'abc' is not a number"
expect 1 "$NIDAG" dti --dwi "$DWI" --bval "$BVAL" --bvec nothere.bvec --out bad_ --cache c
has_err "nothere.bvec"
# DWIs: missing, truncated, text, 3D
expect 1 dti --dwi missing.nii.gz --out bad_ --cache c
has_err "missing.nii.gz"
has_err "No such file"
gzip -dc "$DWI" >full.nii
head -c 2000 full.nii >trunc.nii
expect 1 dti --dwi trunc.nii --out bad_ --cache c
has_err "trunc.nii: truncated"
printf 'not a nifti file at all, just text padding it out to a few hundred bytes %0300d\n' 0 \
  >text.nii
expect 1 dti --dwi text.nii --out bad_ --cache c
has_err "text.nii: not a NIfTI file"
expect 1 dti --dwi r/s_fa.nii.gz --out bad_ --cache c
has_err "r/s_fa.nii.gz"
has_err "must be 4D"
no_outputs bad_
# An output directory that does not exist: refused before any work.
expect 1 dti --out nodir/sub-01_ --cache c
has_err "the directory 'nodir' does not exist"
expect 1 dti --out r/s_fa.nii.gz/x_ --cache c
has_err "the directory 'r/s_fa.nii.gz' is not a directory"
[ ! -e nodir ] || fail "nodir was created"

# ---------------------------------------------------------------- after the failures
# The good results and the cached fit are still there.
expect 0 dti --out r/s_ --cache c
has_out "nodes computed 0, cache hits 1"
stamps r/s_ | cmp -s - cold.stamps || fail "the good outputs changed"

echo "cli_dti: ok"
