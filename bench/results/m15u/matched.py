#!/usr/bin/env python3
"""m15u: same-shape steps (sequences, prefill tokens, endings, rank sum) of each case against a probe
of its mode, per run: the count-weighted mean log ratio (case / probe) as a percentage."""
import json, math, sys
def shapes(rounds):
    g = {}
    for rows in rounds:
        for r in rows:
            k = (r['sequences'], r['prefillTokens'], r.get('finished', 0), r.get('rankSum', 0))
            c, s = g.get(k, (0, 0.0)); g[k] = (c + r['count'], s + r['sumUs'])
    return g
def ratio(a, b):
    n = x = 0
    for k, (c, s) in a.items():
        if k in b and c >= 5 and b[k][0] >= 5:
            w = min(c, b[k][0]); n += w; x += w * math.log((s / c) / (b[k][1] / b[k][0]))
    return 100 * (math.exp(x / n) - 1) if n else float('nan')
PAIRS = [("coupled, rank-aware, 4 req/s", "probe: coupled, 2 req/s"), ("coupled, rank-aware, 4 req/s", "probe: coupled, 12 req/s"),
         ("coupled, round-robin, 12 req/s", "probe: coupled, 12 req/s"), ("disaggregated, rank-aware, 4 req/s", "probe: disaggregated, 4 req/s"),
         ("disaggregated, rank-aware, 4 req/s", "probe: disaggregated, 2 req/s"), ("hybrid, rank-aware+rebalancing, 8 req/s", "probe: hybrid, rank-aware+rebalancing, 6 req/s")]
if __name__ == "__main__": print("run       " + " ".join(f"{a.split(',')[0][:4]}{a.split(',')[2].strip().split()[0]}/{b.split(',')[0][7:11]}{b.split(',')[-1].strip().split()[0]:>3s}" for a, b in PAIRS))
if __name__ == "__main__":
  for run in sys.argv[1:]:
      st = json.load(open(f'validate-steps-{run}.json'))
      ent = {e['case']: e for e in st['probes'] + st['cases']}
      cells = []
      for a, b in PAIRS:
          cells.append(f"{ratio(shapes(ent[a]['rounds']), shapes(ent[b]['rounds'])):+8.1f}  " if a in ent and b in ent else "     n/a  ")
      print(f"{run:10s}" + " ".join(cells))
