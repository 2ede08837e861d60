#!/bin/bash
# m15s: replay stored runs under variants of the round states; one JSON line each (signed errors).
# Usage (repo root): VARIANTS="off:80 steps+hops:80" bash bench/results/m15s/replays.sh RUN... > out.jsonl
# A variant is KIND:QUANTILE[:EXTRA…] (--round-states KIND --round-state-quantile QUANTILE EXTRA, commas → spaces).
DIR=${DIR:-bench/results}  # where the stored runs are (a stand-in: its OUTDIR)
VARIANTS=${VARIANTS:-"off:80 steps:80 hops:80 steps+hops:80 tail:95 steps+tail:95"}
for run in "$@"; do
  for v in $VARIANTS; do
    IFS=: read -r kind q extra <<<"$v"
    out=$(node bench/dist/validate-simulator.js --json --replay $DIR/validate-simulator-$run.json \
      --replay-steps $DIR/validate-steps-$run.json --round-states $kind --round-state-quantile $q ${extra//,/ } 2>/dev/null)
    echo "$out" | python3 -c "
import json,sys
d=json.load(sys.stdin)
s=lambda p,m: round(100*(p-m)/m,2)
e={c['case']:[s(c['predicted']['ttftP95Ms'],c['measured']['ttftP95Ms']),s(c['predicted']['tpotMeanMs'],c['measured']['tpotMeanMs']),round(c['errorPct']['throughput'],2)] for c in d['cases']}
print(json.dumps({'run':'$run','variant':'$v','max_error_pct':round(d['max_error_pct'],2),'signed_ttft_tpot_thr':e}))"
  done
done
