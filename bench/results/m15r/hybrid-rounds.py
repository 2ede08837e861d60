"""m15r: the hybrid case's slow round. Per stored run: each case round's TTFT P95 and mean step (all
its steps), and the hybrid probe's rounds' mean steps; the spread of a round's mean step about its
entry's median, case and probe. Usage: python3 hybrid-rounds.py RUN [RUN ...]."""
import json
import statistics
import sys

RES = "bench/results"


def mean_step(r):
    n = sum(s["count"] for s in r)
    return sum(s["sumUs"] for s in r) / n / 1000


slow_is_slowest = 0
for run in sys.argv[1:]:
    rep = json.load(open(f"{RES}/validate-simulator-{run}.json"))
    steps = json.load(open(f"{RES}/validate-steps-{run}.json"))
    case = next(c for c in rep["cases"] if c["mode"] == "hybrid")
    rows = {e["case"]: e for e in steps["probes"] + steps["cases"]}
    cr = [mean_step(r) for r in rows[case["case"]]["rounds"]]
    pr = [mean_step(r) for r in rows["probe: hybrid, 2 req/s"]["rounds"]]
    p95 = [r["ttftP95Ms"] for r in case["measuredRounds"]]
    i = p95.index(max(p95))
    slow_is_slowest += cr[i] == max(cr)
    rel = lambda xs: [round(100 * (x / statistics.median(xs) - 1), 1) for x in xs]
    print(
        f"{run}: TTFT P95 {case['measured']['ttftP95Ms']:.1f} measured / {case['predicted']['ttftP95Ms']:.1f} predicted;"
        f" rounds P95 {[round(x, 1) for x in p95]}, mean step ms {[round(x, 2) for x in cr]} ({rel(cr)} % off their median);"
        f" probe rounds' mean step {[round(x, 2) for x in pr]} ({rel(pr)} %)"
    )
print(f"slowest-TTFT round is also the slowest-stepping round in {slow_is_slowest} of {len(sys.argv) - 1} runs")
