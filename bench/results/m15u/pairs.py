#!/usr/bin/env python3
"""m15u: per run, a case's lone decode step against its probes' (same mode), busy fractions, and
what linear and log interpolation between the coupled probes would give at the case's busy."""
import json, math, os, sys, statistics as S
RANK = int(os.environ["RANK"]) if os.environ.get("RANK") else None
def lone(rows):
    n = s = 0
    for r in rows:
        if r["sequences"] == 1 and r["prefillTokens"] == 0 and r.get("finished", 0) == 0 and (RANK is None or r.get("rankSum") == RANK):
            n += r['count']; s += r['sumUs']
    return (s / n / 1000, n) if n else (float('nan'), 0)
print("run        c2(b)        c12(b)       c4case(b)    lin   log  | d2     d4p    d4case | h2    h8case")
for run in sys.argv[1:]:
    st = json.load(open(f'validate-steps-{run}.json'))
    rep = json.load(open(f'validate-simulator-{run}.json'))
    busy = {e['case']: (e.get('steps') or {}).get('busyFractionByRound') for e in rep['probes'] + rep['cases']}
    agg = {}
    for e in st['probes'] + st['cases']:
        vals = [lone(r) for r in e['rounds']]
        n = sum(v[1] for v in vals)
        ms = sum(v[0] * v[1] for v in vals if v[1]) / n if n else float('nan')
        b = busy.get(e['case']) or [float('nan')]
        agg[e['case']] = (ms, S.mean(b))
    g = lambda k: agg.get(k, (float('nan'), float('nan')))
    c2, c12, c4 = g('probe: coupled, 2 req/s'), g('probe: coupled, 12 req/s'), g('coupled, rank-aware, 4 req/s')
    lin = c2[0] + (c12[0] - c2[0]) * (c4[1] - c2[1]) / (c12[1] - c2[1])
    lg = c2[0] + (c12[0] - c2[0]) * (math.log(c4[1] / c2[1])) / math.log(c12[1] / c2[1])
    d2, d4p, d4 = g('probe: disaggregated, 2 req/s'), g('probe: disaggregated, 4 req/s'), g('disaggregated, rank-aware, 4 req/s')
    h2, h8 = g('probe: hybrid, 2 req/s'), g('hybrid, rank-aware+rebalancing, 8 req/s')
    print(f"{run:10s} {c2[0]:.3f}({c2[1]:.3f}) {c12[0]:.3f}({c12[1]:.3f}) {c4[0]:.3f}({c4[1]:.3f}) {lin:.3f} {lg:.3f} | {d2[0]:.3f} {d4p[0]:.3f} {d4[0]:.3f} | {h2[0]:.2f} {h8[0]:.2f}")
