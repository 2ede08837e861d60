#!/bin/bash
# One real-mesh run per (mode rate seed) with per-process CPU sampling and per-request timings.
cd /work/wt-m15o
for spec in "$@"; do
  set -- $(echo $spec | tr ':' ' ')
  mode=$1; rate=$2; seed=$3; dur=$4
  tag=$mode-$rate-$seed
  echo "$(date -u +%T) $tag" >&2
  node packages/cli/dist/bin.js bench load --local --mode $mode --workers 1 --lora-servers 1 --placement-policy rank-aware --rate $rate --duration $dur --seed $seed --json --per-request > ./run-$tag.json &
  pid=$!
  python3 ./sample.py $pid ./cpu-$tag.json &
  wait $pid; wait
done
