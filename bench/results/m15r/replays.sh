#!/bin/bash
# m15r: replay stored runs under variants of the step fit's idle term; one JSON line each.
# Usage (repo root): VARIANTS="linear:own: log:own:--lend-linear" bash bench/results/m15r/replays.sh RUN... > out.jsonl
# A variant is SCALE:BUSY:EXTRA (--idle-scale SCALE --round-busy BUSY EXTRA).
VARIANTS=${VARIANTS:-"linear:own: log:own: linear:median: log:median:"}
for run in "$@"; do
  for v in $VARIANTS; do
    IFS=: read -r scale busy extra <<<"$v"
    out=$(node bench/dist/validate-simulator.js --json --replay bench/results/validate-simulator-$run.json \
      --replay-steps bench/results/validate-steps-$run.json --idle-scale $scale --round-busy $busy $extra 2>/dev/null)
    echo "$out" | python3 -c "
import json,sys
d=json.load(sys.stdin)
e={c['case']:[round(c['errorPct']['ttftP95'],2),round(c['errorPct']['tpotMean'],2)] for c in d['cases']}
print(json.dumps({'run':'$run','variant':'$v','max_error_pct':round(d['max_error_pct'],2),'errors_ttft_tpot':e}))"
  done
done
