#!/usr/bin/env python3
"""m15u: each stored run's lone decode step (1 sequence, no prefill, none ending) per probe/case
round, with the round's busy fraction: which probe's steps are slower than which case's."""
import json, sys
runs = sys.argv[1:]
def lone(rows):
    n = s = 0
    for r in rows:
        if r['sequences'] == 1 and r['prefillTokens'] == 0 and r.get('finished', 0) == 0:
            n += r['count']; s += r['sumUs']
    return s / n / 1000 if n else float('nan')
for run in runs:
    st = json.load(open(f'validate-steps-{run}.json'))
    rep = json.load(open(f'validate-simulator-{run}.json'))
    busy = {}
    for e in rep['probes'] + rep['cases']:
        busy[e['case']] = (e.get('steps') or {}).get('busyFractionByRound')
    print(f'== {run}')
    for e in st['probes'] + st['cases']:
        b = busy.get(e['case']) or []
        cells = ' '.join(f"{lone(r):5.3f}@{(b[i] if i < len(b) else float('nan')):.3f}" for i, r in enumerate(e['rounds']))
        print(f"  {e['case'][:48]:48s} {cells}")
