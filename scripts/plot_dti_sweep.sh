#!/usr/bin/env bash
# scripts/plot_dti_sweep.sh: draw the chunk sweep of `nidag-bench dti` as two
# SVG plots, speedup and efficiency against the number of chunks (log2 axis):
# per schedule a solid line for the primary figure (best of the interleaved
# rounds) and a dashed line of the same colour for the medians, the ideal
# line, the goal lines of issue 7 (efficiency 0.9 and 0.95) and, when the TSV
# has its "# control" line, the control's best-of-the-rounds figure (two raw
# pthreads on the two halves: the machine's ceiling) as a horizontal line.
#
#   build-bench/bench/nidag-bench dti --only sweep --sweep-tsv /tmp/w6_sweep.tsv
#   scripts/plot_dti_sweep.sh /tmp/w6_sweep.tsv [OUTDIR]
#
# Writes OUTDIR/dti_sweep_speedup.svg and OUTDIR/dti_sweep_efficiency.svg
# (OUTDIR defaults to the TSV's directory) and prints their paths. Needs
# gnuplot (gnuplot-nox, installed by scripts/setup.sh).
set -euo pipefail

TSV="${1:?usage: plot_dti_sweep.sh SWEEP.tsv [OUTDIR]}"
OUTDIR="${2:-$(dirname "$TSV")}"
if ! command -v gnuplot >/dev/null; then
  echo "plot_dti_sweep.sh: gnuplot is missing (apt-get install gnuplot-nox)" >&2
  exit 1
fi
[ -r "$TSV" ] || {
  echo "plot_dti_sweep.sh: cannot read $TSV" >&2
  exit 1
}
mkdir -p "$OUTDIR"

threads="$(awk '$1 == "#" && $2 == "threads" { print $3; exit }' "$TSV")"
threads="${threads:-2}"
title="$(sed -n '1{s/^# *//;s/; /\\n/g;p}' "$TSV")"
# the control's best-of-the-rounds speedup and efficiency (empty without the line)
ctl_field() {
  awk -v f="$1" '$1 == "#" && $2 == "control" { for (i = 3; i < NF; i++) if ($i == f) { print $(i + 1); exit } }' "$TSV"
}
ctl_speedup="$(ctl_field speedup)"
ctl_eff="$(ctl_field efficiency)"
ctl_title="two raw pthreads (machine ceiling)"

tmp="$(mktemp -d /tmp/nd-plot-dti.XXXXXX)"
trap 'rm -rf "$tmp"' EXIT
# one data file per schedule: chunks, speedup, speedup_median, efficiency,
# efficiency_median (columns found by their header names)
schedules=()
for s in $(awk -F '\t' '!/^#/ && $1 != "schedule" && NF > 10 { print $1 }' "$TSV" | awk '!seen[$0]++'); do
  awk -F '\t' -v s="$s" '
    $1 == "schedule" { for (i = 1; i <= NF; i++) col[$i] = i; next }
    $1 == s { print $col["chunks"], $col["speedup"], $col["speedup_median"], $col["efficiency"], $col["efficiency_median"] }
  ' "$TSV" >"$tmp/$s.dat"
  schedules+=("$s")
done
if ((${#schedules[@]} == 0)); then
  echo "plot_dti_sweep.sh: no sweep rows in $TSV" >&2
  exit 1
fi

# plot <output> <ylabel> <first column> <extra plot items>
plot() {
  local out=$1 ylabel=$2 col=$3 extra=$4 items="" i=0
  for s in "${schedules[@]}"; do
    i=$((i + 1))
    items+="'$tmp/$s.dat' using 1:$col with linespoints lw 2 pt 7 ps 0.6 lc $i title '$s, best of the rounds', "
    items+="'$tmp/$s.dat' using 1:$((col + 1)) with linespoints dt 2 lw 1 pt 6 ps 0.5 lc $i title '$s, median', "
  done
  gnuplot <<EOF
set terminal svg size 800,500 dynamic enhanced font "sans,12"
set output '$out'
set title "$title" noenhanced font "sans,10"
set logscale x 2
set format x "2^{%L}"
set xrange [0.7:46341]
set yrange [0:*]
set xlabel "number of chunks"
set ylabel "$ylabel"
set key bottom left
set grid
plot $items $extra
EOF
  echo "$out"
}

ctl_speedup_item="" ctl_eff_item=""
if [ -n "$ctl_speedup" ] && [ -n "$ctl_eff" ]; then
  ctl_speedup_item=", $ctl_speedup with lines dt 1 lw 1 lc rgb 'dark-orange' title '$ctl_title'"
  ctl_eff_item=", $ctl_eff with lines dt 1 lw 1 lc rgb 'dark-orange' title '$ctl_title'"
fi
plot "$OUTDIR/dti_sweep_speedup.svg" "speedup over 1 thread, 1 chunk ($threads threads)" 2 \
  "$threads with lines dt 2 lw 1 lc rgb 'black' title 'ideal ($threads)'$ctl_speedup_item"
plot "$OUTDIR/dti_sweep_efficiency.svg" "efficiency (speedup / $threads)" 4 \
  "1 with lines dt 2 lc rgb 'black' title 'ideal', 0.95 with lines dt 3 lc rgb 'dark-green' title 'goal, best chunking (0.95)', 0.9 with lines dt 4 lc rgb 'red' title 'goal, 4..4096 chunks (0.9)'$ctl_eff_item"
