#!/usr/bin/env bash
# m15t replays: each stored run under this branch's model (no stall probe in a stored run: the model
# before), then its stand-in (stand-in-stall.py: the hybrid case's own rounds as the stall probe;
# optimistic). Lines: RUN VARIANT max_error_pct and every case's signed errors (TTFT / TPOT, %).
set -euo pipefail
DIR=${DIR:-/tmp/m15t-standin}
python3 bench/results/m15t/stand-in-stall.py "$DIR" "$@"
line() {
  python3 -c "
import json,sys
d=json.load(sys.stdin)
e=lambda c,k,m: 100*(c['predicted'][k]-c['measured'][k])/c['measured'][k]
st=d['calibration']['overheadsFromProbes'].get('rebalanceStall')
print(json.dumps({'run':'$1','variant':'$2','max_error_pct':d['max_error_pct'],
  'cases':[[c['case'],round(e(c,'ttftP95Ms',0),1),round(e(c,'tpotMeanMs',0),1)] for c in d['cases']],
  'stall':st and {k:st[k] for k in ('seconds','endS','roundEndsS','measuredExcessMs','simulatedExcessMs','noStallExcessMs')}}))"
}
for r in "$@"; do
  node bench/dist/validate-simulator.js --json --replay "bench/results/validate-simulator-$r.json" \
    --replay-steps "bench/results/validate-steps-$r.json" 2>/dev/null | line "$r" main
  node bench/dist/validate-simulator.js --json --replay "$DIR/validate-simulator-$r-sstandin.json" \
    --replay-steps "$DIR/validate-steps-$r-sstandin.json" --stall-probe-rate 8 --stall-probe-seconds 40 \
    2>/dev/null | line "$r" stand-in
done
