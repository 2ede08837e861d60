#!/usr/bin/env bash
# m15v: the hybrid rank-aware+rebalancing load (1 worker, 1 LoRA server, 12 adapters) at 6 req/s,
# 31 s, seeds 2/3/4, alternated between main's build (BASE, 4db5569) and this branch's (HEAD).
# Usage: [RATE=6 DURATION=31 SEEDS='2 3 4'] measure.sh OUTDIR TAG; each run holds the exclusive CPU lock.
set -euo pipefail
OUT=$1; TAG=$2
BASE=${BASE:-/work/m15v-base}; HEAD_TREE=${HEAD_TREE:-/work/wt-m15v}
mkdir -p "$OUT"
for seed in ${SEEDS:-2 3 4}; do
  for build in main m15v; do
    tree=$BASE; [ "$build" = m15v ] && tree=$HEAD_TREE
    f="$OUT/$TAG-$build-seed$seed.json"
    echo "$(date -u +%H:%M:%S) $build seed $seed load $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$OUT/$TAG-log.txt"
    (cd "$tree" && flock -x /work/s6/cpu.lock node packages/cli/dist/bin.js bench load --local --mode hybrid \
      --workers 1 --lora-servers 1 --placement-policy rank-aware+rebalancing --rate "${RATE:-6}" --duration "${DURATION:-31}" \
      --seed "$seed" --json --per-request) > "$f" 2>> "$OUT/$TAG-stderr.txt"
  done
done
echo "$(date -u +%H:%M:%S) done load $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$OUT/$TAG-log.txt"
