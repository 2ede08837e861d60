#!/usr/bin/env python3
"""m15u: where the coupled 4 req/s case's steps sit between the coupled 2 and 12 req/s probes'.
Same-shape steps (matched.py's ratio), as a share of the 2→12 drop in log period: measured, and what
a regressor in 1 − busy, ln(1 / busy) and 1 / busy puts there from the runs' mean busy fractions."""
import json, math, sys, statistics as S
sys.path.insert(0, __file__.rsplit('/', 1)[0])
from importlib import import_module
m = import_module('matched')
for run in sys.argv[1:]:
    st = json.load(open(f'validate-steps-{run}.json')); rep = json.load(open(f'validate-simulator-{run}.json'))
    ent = {e['case']: e for e in st['probes'] + st['cases']}
    busy = {e['case']: S.mean((e.get('steps') or {}).get('busyFractionByRound') or [float('nan')]) for e in rep['probes'] + rep['cases']}
    c2, c12, c4 = 'probe: coupled, 2 req/s', 'probe: coupled, 12 req/s', 'coupled, rank-aware, 4 req/s'
    a = 1 + m.ratio(m.shapes(ent[c4]['rounds']), m.shapes(ent[c2]['rounds'])) / 100
    b = 1 + m.ratio(m.shapes(ent[c4]['rounds']), m.shapes(ent[c12]['rounds'])) / 100
    meas = math.log(a) / math.log(a / b)
    u2, u4, u12 = busy[c2], busy[c4], busy[c12]
    lin = (u4 - u2) / (u12 - u2); lg = math.log(u4 / u2) / math.log(u12 / u2); inv = (1 / u2 - 1 / u4) / (1 / u2 - 1 / u12)
    print(f"{run:10s} busy {u2:.3f} {u4:.3f} {u12:.3f}  measured {meas:.2f}  linear {lin:.2f}  log {lg:.2f}  inverse {inv:.2f}")
