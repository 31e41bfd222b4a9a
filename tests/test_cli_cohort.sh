#!/usr/bin/env bash
# End-to-end test of `nidag cohort` (ctest: cli_cohort): a tiny cohort, a
# second run that writes nothing, usage errors (exit 2) and a failed run
# (exit 1).
#
#   test_cli_cohort.sh NIDAG [TEMPLATES_DIR]
#
# Needs the MRIcron atlases (default /usr/share/mricron/templates); exits 77
# (skipped) when they are not installed.
set -euo pipefail
CLI_LIB="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/cli_lib.sh" # before any cd

NIDAG=$(realpath "${1:?usage: test_cli_cohort.sh NIDAG [TEMPLATES_DIR]}")
A=${2:-/usr/share/mricron/templates}
for f in AICHAmc.nii.gz aal.nii.gz HarvardOxford-cort-maxprob-thr0-1mm.nii.gz \
  JHU-WhiteMatter-labels-1mm.nii.gz; do
  if [ ! -r "$A/$f" ]; then
    echo "SKIP: $A/$f not found (install mricron's templates)"
    exit 77
  fi
done
T=$(mktemp -d /tmp/nd-test-cli-cohort.XXXXXX)
trap 'rm -rf "$T"' EXIT
cd "$T"

# shellcheck source=cli_lib.sh
source "$CLI_LIB"

# ---------------------------------------------------------------- usage (2)
expect 0 "$NIDAG" help
has_out "cohort [DIR]"
expect 0 "$NIDAG" cohort --help
has_out "--participants N"
expect 2 "$NIDAG" cohort --participants 0
has_err "--participants needs a whole number"
expect 2 "$NIDAG" cohort --seed x
expect 2 "$NIDAG" cohort --threads
has_err "needs a value"
expect 2 "$NIDAG" cohort a b
expect 2 "$NIDAG" cohort --bogus

# ---------------------------------------------------------------- a tiny cohort
expect 0 "$NIDAG" cohort c --participants 3 --threads 2 --templates "$A"
has_out "cohort c: 3 participants, seed 1: wrote 6 files, 0 already up to date"
for f in dataset_description.json participants.json participants.tsv .nidag-cohort.tsv \
  sub-0001/anat/sub-0001_map.nii.gz sub-0003/anat/sub-0003_map.nii.gz; do
  [ -s "c/$f" ] || fail "c/$f is missing"
done
[ "$(head -n 1 c/participants.tsv)" = "$(printf 'participant_id\tfamily_id\tscore_a\tscore_b\tnoise\tgroup\tnoise_bin')" ] ||
  fail "participants.tsv header"
[ "$(wc -l <c/participants.tsv)" = 4 ] || fail "participants.tsv rows"
ls c/*.tmp.* c/*/anat/*.tmp.* >/dev/null 2>&1 && fail "a temporary file was left"
# Again: nothing written. One thread, same bytes in another directory.
expect 0 "$NIDAG" cohort c --participants 3 --templates "$A"
has_out "wrote 0 files, 6 already up to date"
expect 0 "$NIDAG" cohort d --participants=3 --threads=1 --seed=1 --templates="$A"
diff -r c d >/dev/null || fail "1 and 2 threads differ"
# The map parcellates.
expect 0 "$NIDAG" parcellate c/sub-0002/anat/sub-0002_map.nii.gz "$A/AICHAmc.nii.gz" --no-cache
awk -F'\t' 'END { if (NR != 2 || NF != 192) exit 1 }' "$T/out" || fail "parcellating a map"

# ---------------------------------------------------------------- failure (1)
expect 1 "$NIDAG" cohort e --participants 2 --templates "$T/none"
has_err "$T/none/AICHAmc.nii.gz"

echo "cli_cohort: ok"
