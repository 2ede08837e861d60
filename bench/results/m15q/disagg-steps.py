"""Why the disaggregated 4 req/s case's TPOT is over-predicted (m15q): per-step figures of the
disaggregated probe (2 req/s) against the case (4 req/s), next to the coupled ones, from the stored
runs' steps files and reports. Usage: python3 disagg-steps.py RUN [RUN ...] (RUN as in
bench/results/validate-simulator-RUN.json)."""
import json
import math
import sys

RES = "bench/results"


def lone(rounds):
    """Mean lone decode step (1 sequence, no prompt tokens, none ending) per round, ms, and steps."""
    out = []
    for r in rounds:
        n = sum(s["count"] for s in r if s["sequences"] == 1 and s["prefillTokens"] == 0 and not s.get("finished"))
        t = sum(s["sumUs"] for s in r if s["sequences"] == 1 and s["prefillTokens"] == 0 and not s.get("finished"))
        out.append((t / n / 1000 if n else None, n))
    return out


def pooled(xs):
    n = sum(c for _, c in xs)
    return sum(v * c for v, c in xs if v is not None) / n


for run in sys.argv[1:]:
    rep = json.load(open(f"{RES}/validate-simulator-{run}.json"))
    steps = json.load(open(f"{RES}/validate-steps-{run}.json"))
    fit = rep["calibration"]["overheadsFromProbes"]["stepPeriods"]
    entries = {e["case"]: e for e in rep["probes"] + rep["cases"]}
    rows = {e["case"]: e for e in steps["probes"] + steps["cases"]}
    print(f"== {run}: max_error_pct {rep['max_error_pct']:.2f}, case length {rep['cases'][0].get('durationS')} s")
    for mode, probe, case in [
        ("coupled", "probe: coupled, 2 req/s", "coupled, rank-aware, 4 req/s"),
        ("coupled", "probe: coupled, 12 req/s", "coupled, round-robin, 12 req/s"),
        ("disaggregated", "probe: disaggregated, 2 req/s", "disaggregated, rank-aware, 4 req/s"),
    ]:
        k = fit["slopes"][mode]
        slope = k.get("perIdleUs", 0) / 1000
        lo, hi = k.get("idleRange", [-1, 2])
        res = {}
        for name in (probe, case):
            busy = [b for b in entries[name]["steps"]["busyFractionByRound"]]
            ls = lone(rows[name]["rounds"])
            res[name] = (sum(busy) / len(busy), pooled(ls), [round(v, 3) for v, _ in ls], [round(b, 3) for b in busy])
        (bp, lp, lpr, bpr), (bc, lc, lcr, bcr) = res[probe], res[case]
        clamp = lambda i: min(hi, max(lo, i))
        priced = slope * (clamp(1 - bp) - clamp(1 - bc))
        m = entries[case]
        print(
            f"  {mode:13s} probe busy {bp:.3f} lone {lp:.3f} {lpr} | case busy {bc:.3f} lone {lc:.3f} {lcr}"
            f" | drop measured {lp - lc:.3f} ms ({100 * (lp - lc) / lp:.0f} %), idle slope {slope:.2f} ms/unit prices {priced:.3f}"
            f" | per ln(busy) {(lp - lc) / math.log(bc / bp):.3f} ms"
            + (
                f" | case TPOT {m['measured']['tpotMeanMs']:.3f} / {m['predicted']['tpotMeanMs']:.3f},"
                f" mean step {m['steps']['meanStepMs']:.3f} / fitted {m['steps']['fittedMeanStepMs']:.3f}"
                if "predicted" in m
                else ""
            )
        )
