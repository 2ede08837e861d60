#!/usr/bin/env python3
"""Each probe's (and case's) TTFT against its request's idle gap, from a run's steps file (m15p).

Since m15p the steps file keeps each request's arrival (`requestArrivalsS`) next to its TTFT. The gap
is the time since the previous request's arrival (the client's inter-arrival; the first request of
each round is left out). Per probe, pooled over its rounds: least squares of
TTFT = a + A * (1 - exp(-gap / tau)) for tau = 0.5 s (m15o's measured time constant), and the TTFT
median binned by gap. Usage: wake-by-mode.py STEPS.json
"""
import json, math, sys

TAU = 0.5
BINS = [(0, 0.1), (0.1, 0.2), (0.2, 0.4), (0.4, 0.8), (0.8, 1.6), (1.6, 99)]
steps = json.load(open(sys.argv[1]))
for kind in ("probes", "cases"):
    for e in steps[kind]:
        arr = e.get("requestArrivalsS")
        if not arr:
            continue
        pts = []
        for ts, ys in zip(arr, e["requestTtftsMs"]):
            order = sorted(range(len(ts)), key=lambda i: ts[i])
            for j in range(1, len(order)):
                a, b = order[j - 1], order[j]
                if ts[a] is None or ts[b] is None:
                    continue
                pts.append((ts[b] - ts[a], ys[b]))
        if len(pts) < 10:
            continue
        xs = [1 - math.exp(-g / TAU) for g, _ in pts]
        ys = [y for _, y in pts]
        n = len(xs); mx = sum(xs) / n; my = sum(ys) / n
        sxx = sum((x - mx) ** 2 for x in xs)
        A = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx if sxx > 0 else float("nan")
        a = my - A * mx
        bins = []
        for lo, hi in BINS:
            v = sorted(y for g, y in pts if lo <= g < hi)
            bins.append(f"{lo}-{hi}s: {v[len(v)//2]:.1f} ({len(v)})" if v else f"{lo}-{hi}s: -")
        print(json.dumps({"entry": e["case"], "requests": n, "interceptMs": round(a, 2),
                          "wakeSlopeMs": round(A, 2), "meanWakeFraction": round(mx, 3),
                          "medianByGap": bins}))
