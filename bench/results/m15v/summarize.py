#!/usr/bin/env python3
"""m15v: per run, TTFT median / P95 / max, the requests arriving in 29–31 s against the median, the slowest after 25 s."""
import glob, json, sys, statistics
for f in sorted(glob.glob(sys.argv[1] + "/*.json")):
    d = json.load(open(f))
    rs = d["requests"]
    t = sorted(r["ttftMs"] for r in rs)
    med = statistics.median(t)
    p95 = t[min(len(t) - 1, int(round(0.95 * (len(t) - 1))))]
    win = [r for r in rs if 29 <= r["arrivalS"] < 31]
    wmax = max((r["ttftMs"] for r in win), default=float("nan"))
    wmean = statistics.mean(r["ttftMs"] for r in win) if win else float("nan")
    slow = [r for r in rs if r["ttftMs"] > max(60, 2.5 * med)]
    late = max((r for r in rs if r["arrivalS"] >= 25), key=lambda r: r["ttftMs"])
    print(f"{f.split('/')[-1]:32s} n {len(rs):3d} median {med:5.1f} p95 {p95:6.1f} max {t[-1]:6.1f} | 29-31 s: n {len(win):2d} mean {wmean:6.1f} max {wmax:6.1f} ({wmax/med:4.1f}x median) | after 25 s max {late['ttftMs']:6.1f} at {late['arrivalS']:5.2f} s | slow(>max(60,2.5x med)) {len(slow)} at {[round(r['arrivalS'],1) for r in slow]}")
