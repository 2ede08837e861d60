#!/usr/bin/env python3
"""m15o: each request's TTFT against the idle gap since the mesh last held a request (runs in this
folder, measured 23:49:30-23:51:52 UTC by measure.sh), binned, and the least-absolute-deviation fit of
A*(1 - exp(-gap/tau)) + a constant per mode that chose HOP_WAKE_TAU_S (packages/policy/src/stack-fit.ts)."""
import json, math, os
here = os.path.dirname(os.path.abspath(__file__))
runs = ['coupled-12-1', 'coupled-12-2', 'coupled-2-2', 'disaggregated-2-2']
pts = []
for tag in runs:
    reqs = sorted(json.load(open(os.path.join(here, f'run-{tag}.json')))['requests'], key=lambda r: r['arrivalS'])
    last_end = -9.0
    for i, r in enumerate(reqs):
        gap = max(0.0, r['arrivalS'] - last_end)
        last_end = max(last_end, r['arrivalS'] + r['ttftMs'] / 1000 + r['tpotMs'] * (r['tokens'] - 1) / 1000)
        if i > 0 and gap > 0:  # the first (registration) and requests sent while another ran apart
            pts.append((tag.split('-')[0], gap, r['ttftMs']))
print(len(pts), 'requests')
def cost(tau, a):
    total = 0.0
    for mode in ('coupled', 'disaggregated'):
        res = sorted(t - a * (1 - math.exp(-g / tau)) for m, g, t in pts if m == mode)
        b = res[len(res) // 2]
        total += sum(abs(x - b) for x in res)
    return total
for tau in (0.1, 0.2, 0.3, 0.5, 0.7, 1.0, 1.5, 2.0):
    a = min((cost(tau, x * 0.5), x * 0.5) for x in range(30))
    print(f'tau {tau:.1f} s: best A {a[1]:.1f} ms, LAD cost {a[0]:.1f}')
