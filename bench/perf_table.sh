#!/usr/bin/env bash
# bench/perf_table.sh: the summary rows of a bench/compare.sh run (its
# "<output>.tsv" file: section, metric, peer, nidag, goal, status) as the
# markdown tables of README.md's performance section, one per section.
#
#   bench/compare.sh --only w5,demo      # prints "summary rows in /tmp/nd-compare.X.tsv"
#   bench/perf_table.sh /tmp/nd-compare.X.tsv
set -euo pipefail
TSV="${1:?usage: perf_table.sh COMPARE_OUTPUT.tsv}"
awk -F '\t' '
  function title(s) {
    if (s == "runtime") return "Runtime (W0-W3), peers OpenMP and oneTBB"
    if (s == "W4") return "Cache (W4), peer joblib.Memory"
    if (s == "W5") return "Models (W5), peer scikit-learn"
    if (s == "W6") return "Diffusion tensor fits (W6), peer DIPY 1.6"
    if (s == "W7") return "Neuro (W7), peer nibabel + numpy"
    if (s == "demo") return "The main job (nidag demo)"
    return s
  }
  $1 != sec {
    if (sec != "") print ""
    sec = $1
    printf "**%s**\n\n| measure | peer | nidag | goal | |\n|---|---|---|---|---|\n", title(sec)
  }
  {
    for (i = 2; i <= 6; i++) gsub(/\|/, "\\|", $i) # a "|" inside a cell ends it in markdown
    printf "| %s | %s | %s | %s | %s |\n", $2, $3, $4, $5, $6
  }
' "$TSV"
