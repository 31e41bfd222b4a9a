#!/usr/bin/env bash
# End-to-end test of `nidag parcellate` on real atlases (ctest: cli_parcellate).
#
#   test_cli_parcellate.sh NIDAG [TEMPLATES_DIR]
#
# Uses the MRIcron atlases (default /usr/share/mricron/templates); exits 77
# (skipped) when they are not installed.
set -euo pipefail
CLI_LIB="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/cli_lib.sh" # before any cd

NIDAG=$(realpath "${1:?usage: test_cli_parcellate.sh NIDAG [TEMPLATES_DIR]}")
A=${2:-/usr/share/mricron/templates}
for f in AICHAmc.nii.gz aal.nii.gz brodmann.nii.gz; do
  if [ ! -r "$A/$f" ]; then
    echo "SKIP: $A/$f not found (install mricron's templates)"
    exit 77
  fi
done
T=$(mktemp -d /tmp/nd-test-cli-parc.XXXXXX)
trap 'rm -rf "$T"' EXIT
unset NIDAG_CACHE
cd "$T"

# shellcheck source=cli_lib.sh
source "$CLI_LIB"
# stdout here is wide TSV: its first 5 lines, 300 columns
show_out() { head -n 5 "$T/out" | cut -c1-300; }
# shape FILE ROWS COLS: a header plus ROWS rows, every line COLS tab-separated fields.
shape() {
  awk -F'\t' -v rows="$2" -v cols="$3" '
    NF != cols { print "line " NR " has " NF " fields, wanted " cols; bad = 1 }
    END { if (NR != rows + 1) { print NR " lines, wanted " rows + 1; bad = 1 } exit bad }' \
    "$1" || fail "$1 is not $2 rows x $3 columns"
}
# Every value of row 1 equals its column's label; labels ascend; prints the count.
row_is_labels() {
  awk -F'\t' '
    NR == 1 { for (i = 1; i <= NF; i++) { h[i] = $i; if (i > 1 && h[i] + 0 <= h[i - 1] + 0) bad = 1 }
              n = NF }
    NR == 2 { for (i = 1; i <= NF; i++) if ($i + 0 != h[i] + 0 || $i !~ /^[0-9]+$/) {
                print "column " i ": " $i " under label " h[i]; bad = 1 } }
    END { exit bad }' "$1" || fail "row values of $1 are not its labels"
}

# ---------------------------------------------------------------- help and usage (2)
expect 0 "$NIDAG" help
grep -qF "parcellate IMAGE ATLAS" "$T/out" || fail "help lacks parcellate"
grep -qF -- "--resample nearest|refuse" "$T/out" || fail "help lacks --resample"
expect 0 "$NIDAG" parcellate --help
expect 2 "$NIDAG" parcellate
expect 2 "$NIDAG" parcellate "$A/aal.nii.gz"
expect 2 "$NIDAG" parcellate "$A/aal.nii.gz" "$A/aal.nii.gz" extra
expect 2 "$NIDAG" parcellate "$A/aal.nii.gz" "$A/aal.nii.gz" --strategy bogus
has_err "unknown --strategy 'bogus'"
expect 2 "$NIDAG" parcellate "$A/aal.nii.gz" "$A/aal.nii.gz" --resample linear
expect 2 "$NIDAG" parcellate "$A/aal.nii.gz" "$A/aal.nii.gz" --threads 0
expect 2 "$NIDAG" parcellate "$A/aal.nii.gz" "$A/aal.nii.gz" --bogus
expect 2 "$NIDAG" parcellate "$A/aal.nii.gz" "$A/aal.nii.gz" -o
expect 2 "$NIDAG" parcellate "$A/aal.nii.gz" "$A/aal.nii.gz" --cache c --no-cache

# ---------------------------------------------------------------- an atlas by itself
# The image is the atlas as float: each region's mean is its label, exactly.
expect 0 "$NIDAG" parcellate "$A/AICHAmc.nii.gz" "$A/AICHAmc.nii.gz" --cache "$T/c"
has_err "parcellate: 1 rows x 192 regions; computed"
has_err "cache hits 0"
shape "$T/out" 1 192
row_is_labels "$T/out"
cp "$T/out" "$T/aicha.tsv"
# Again, from the cache (the global --cache form): same bytes, nothing computed.
expect 0 "$NIDAG" --cache "$T/c" parcellate "$A/AICHAmc.nii.gz" "$A/AICHAmc.nii.gz"
has_err "computed 0, cache hits 2"
cmp -s "$T/out" "$T/aicha.tsv" || fail "cached output differs"
# Other strategies give the label too (std 0); without a cache, one thread.
expect 0 "$NIDAG" parcellate "$A/AICHAmc.nii.gz" "$A/AICHAmc.nii.gz" --strategy median \
  --no-cache --threads 1
cmp -s "$T/out" "$T/aicha.tsv" || fail "median differs from mean"
[ ! -e "$T/.nidag" ] || fail "--no-cache created ./.nidag"
expect 0 "$NIDAG" parcellate "$A/AICHAmc.nii.gz" "$A/AICHAmc.nii.gz" --strategy std --cache "$T/c"
awk -F'\t' 'NR == 2 { for (i = 1; i <= NF; i++) if ($i != "0") exit 1 }' "$T/out" ||
  fail "std of a constant region is not 0"
# The default cache is ./.nidag.
expect 0 "$NIDAG" parcellate "$A/aal.nii.gz" "$A/aal.nii.gz"
[ -d "$T/.nidag" ] || fail "no ./.nidag"
shape "$T/out" 1 116
row_is_labels "$T/out"

# ---------------------------------------------------------------- two atlases
# brodmann and aal share the 1 mm grid: no resampling, brodmann's 41 labels.
expect 0 "$NIDAG" parcellate "$A/aal.nii.gz" "$A/brodmann.nii.gz" --cache "$T/c" \
  --resample refuse
has_err "1 rows x 41 regions"
shape "$T/out" 1 41
# A 1 mm image with the 2 mm AICHA atlas: resampled onto the image grid.
expect 0 "$NIDAG" parcellate "$A/brodmann.nii.gz" "$A/AICHAmc.nii.gz" --cache "$T/c" \
  -o "$T/res.tsv"
has_err "1 rows x 192 regions"
[ ! -s "$T/out" ] || fail "-o also wrote stdout"
shape "$T/res.tsv" 1 192
ls "$T"/res.tsv.tmp.* >/dev/null 2>&1 && fail "-o left a temporary file"
head -n 1 "$T/res.tsv" | cmp -s - <(head -n 1 "$T/aicha.tsv") || fail "AICHA header differs"
# ... and an AICHA image (2 mm) under the 1 mm aal atlas, resampled down.
expect 0 "$NIDAG" parcellate "$A/AICHAmc.nii.gz" "$A/aal.nii.gz" --cache "$T/c"
awk -F'\t' 'NR == 1 { n = NF } END { if (NR != 2 || n < 100) exit 1 }' "$T/out" ||
  fail "aal on the AICHA grid"
# --resample refuse: the grids differ, so the run fails and says so.
expect 1 "$NIDAG" parcellate "$A/brodmann.nii.gz" "$A/AICHAmc.nii.gz" --cache "$T/c" \
  --resample refuse -o "$T/refused.tsv"
has_err "grid"
has_err "AICHAmc.nii.gz"
[ ! -e "$T/refused.tsv" ] || fail "a failed run wrote -o"
# A mask on the image grid: ch2bet is a skull-stripped 1 mm image.
if [ -r "$A/ch2bet.nii.gz" ]; then
  expect 0 "$NIDAG" parcellate "$A/aal.nii.gz" "$A/aal.nii.gz" --mask "$A/ch2bet.nii.gz" \
    --cache "$T/c"
  shape "$T/out" 1 116
fi

# ---------------------------------------------------------------- bad files (1)
expect 1 "$NIDAG" parcellate "$T/missing.nii.gz" "$A/aal.nii.gz" --cache "$T/c"
has_err "missing.nii.gz"
expect 1 "$NIDAG" parcellate "$A/aal.nii.gz" "$T/missing-atlas.nii" --cache "$T/c"
has_err "missing-atlas.nii"
printf 'not a nifti file at all, just text padding it out to a few hundred bytes %0300d\n' 0 \
  >"$T/junk.nii"
expect 1 "$NIDAG" parcellate "$T/junk.nii" "$A/aal.nii.gz" --cache "$T/c"
has_err "junk.nii"
expect 1 "$NIDAG" parcellate "$A/aal.nii.gz" "$A/aal.nii.gz" --cache "$T/c" \
  -o "$T/no/such/dir/out.tsv"
has_err "no/such/dir"

echo "cli_parcellate: ok"
