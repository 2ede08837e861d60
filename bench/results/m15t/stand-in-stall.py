#!/usr/bin/env python3
"""A stand-in for the rebalance stall probe in a stored run (m15t, analysis only; optimistic).

Copies bench/results/validate-{simulator,steps}-RUN.json to OUT/…-RUN-sstandin.json with the hybrid
case's own rounds added as the stall probe ("probe: hybrid, rank-aware+rebalancing, 6 req/s"), so that
a replay with `--stall-probe-rate 8 --stall-probe-seconds 40` fits the stall on the case's requests
(seed 1, as the case). The case then feeds its own prediction: a bound on what a stall probe can
give, never a result. Usage: stand-in-stall.py OUT RUN…
"""
import json, os, sys

NAME = "probe: hybrid, rank-aware+rebalancing, 6 req/s"
out = sys.argv[1]
os.makedirs(out, exist_ok=True)
for run in sys.argv[2:]:
    rep = json.load(open(f"bench/results/validate-simulator-{run}.json"))
    st = json.load(open(f"bench/results/validate-steps-{run}.json"))
    case = next(c for c in rep["cases"] if c["mode"] == "hybrid")
    scase = next(c for c in st["cases"] if c["mode"] == "hybrid")
    n = len(scase["rounds"])
    rounds = case.get("measuredRounds") or [{}] * n
    rep["probes"].append({
        "case": NAME, "seed": 1, "seeds": [1] * n, "stallOnly": True,
        "measured": {
            "ttftMs": {"p50": case["measured"]["ttftP95Ms"], "p95": case["measured"]["ttftP95Ms"]},
            "tpotMs": {"mean": case["measured"]["tpotMeanMs"]},
            "throughputTokensPerSecond": case["measured"]["throughputTokensPerSecond"],
            "completed": case["measured"]["completed"], "errors": 0,
            "rounds": [{"busyCores": r.get("busyCores")} for r in rounds],
        },
        "steps": {"busyFractionByRound": case["steps"].get("busyFractionByRound")},
    })
    st["probes"].append({
        "case": NAME, "mode": "hybrid", "stallOnly": True, "seeds": [1] * n,
        "rounds": scase["rounds"], "firstSteps": scase.get("firstSteps"),
        "requestTtftsMs": scase["requestTtftsMs"], "requestArrivalsS": scase["requestArrivalsS"],
    })
    json.dump(rep, open(f"{out}/validate-simulator-{run}-sstandin.json", "w"))
    json.dump(st, open(f"{out}/validate-steps-{run}-sstandin.json", "w"))
