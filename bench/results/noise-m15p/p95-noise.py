#!/usr/bin/env python3
"""How noisy is a validation case's pooled TTFT P95? (issue 15, m15p)

For each case of the stored runs given, from the steps file's per-round request TTFTs:
- the pooled P95 (the report's estimator: sorted[floor(0.95 n)]);
- a bootstrap over its requests (resample the pooled requests, 4000 draws): the 2.5-97.5 % range
  of the P95, as a percentage of the pooled P95 (half-width);
- a two-level bootstrap (resample the rounds, then each chosen round's requests): adds the
  round-to-round variation the first one cannot see;
- the rounds' own P95s and their spread (max-min over the median).
Deterministic (seeded). Usage: p95-noise.py RUN [RUN ...] [--rounds-scale K]
(--rounds-scale K: the two-level bootstrap with K times as many rounds drawn, i.e. what a run of
3K rounds of the same length would give, assuming rounds like these; --length-scale L: each drawn
round L times as many requests, i.e. rounds L times as long.)
"""
import json, random, sys

def p95(v):
    s = sorted(v)
    return s[min(len(s) - 1, int(0.95 * len(s)))]

def q(v, p):
    s = sorted(v)
    return s[min(len(s) - 1, int(p * len(s)))]

args = [a for a in sys.argv[1:] if not a.startswith("--")]
def opt(name):
    if name not in sys.argv:
        return 1
    v = sys.argv[sys.argv.index(name) + 1]
    args.remove(v)
    return int(v)
scale = opt("--rounds-scale")
length = opt("--length-scale")
rng = random.Random(15)
B = 4000
for run in args:
    steps = json.load(open(f"bench/results/validate-steps-{run}.json"))
    rep = json.load(open(f"bench/results/validate-simulator-{run}.json"))
    pred = {c["case"]: c["predicted"]["ttftP95Ms"] for c in rep["cases"]}
    for c in steps["cases"]:
        rounds = c["requestTtftsMs"]
        pooled = [x for r in rounds for x in r]
        p = p95(pooled)
        flat = [p95([rng.choice(pooled) for _ in pooled]) for _ in range(B)]
        two = []
        k = len(rounds) * scale
        for _ in range(B):
            v = []
            for _ in range(k):
                r = rng.choice(rounds)
                v.extend(rng.choice(r) for _ in range(len(r) * length))
            two.append(p95(v))
        rp = [p95(r) for r in rounds]
        med = sorted(rp)[len(rp) // 2]
        out = {
            "run": run, "case": c["case"], "requests": len(pooled), "pooledP95Ms": round(p, 2),
            "roundP95sMs": [round(x, 2) for x in rp],
            "roundSpreadPct": round(100 * (max(rp) - min(rp)) / med, 1),
            "bootRequestsCi95Pct": [round(100 * (q(flat, 0.025) / p - 1), 1), round(100 * (q(flat, 0.975) / p - 1), 1)],
            "bootRoundsCi95Pct": [round(100 * (q(two, 0.025) / p - 1), 1), round(100 * (q(two, 0.975) / p - 1), 1)],
            "bootRoundsSdPct": round(100 * (sum((x - sum(two) / B) ** 2 for x in two) / B) ** 0.5 / p, 1),
            "roundsDrawn": k, "lengthScale": length,
            "predictedMs": round(pred.get(c["case"], float("nan")), 2),
        }
        print(json.dumps(out))
