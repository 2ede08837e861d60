"""A stand-in for the 4 req/s disaggregated probe in a stored run (m15q), for a replay only: the
disaggregated case's own rounds (seed 1) copied as "probe: disaggregated, 4 req/s". OPTIMISTIC: the
real probe runs other requests (seeds 2, 3, 4) in other minutes; this shows what the fit does with
steps at the case's rate, not what a run measures. Usage: python3 stand-in.py RUN OUTDIR."""
import json
import sys

run, out = sys.argv[1], sys.argv[2]
rep = json.load(open(f"bench/results/validate-simulator-{run}.json"))
steps = json.load(open(f"bench/results/validate-steps-{run}.json"))
name = "disaggregated, rank-aware, 4 req/s"
case = next(e for e in rep["cases"] if e["case"] == name)
srow = next(e for e in steps["cases"] if e["case"] == name)
rep["probes"].append(
    {
        "case": "probe: disaggregated, 4 req/s",
        "seeds": [1, 1, 1],
        "stepsOnly": True,
        "measured": {
            "ttftMs": {"p50": case["measured"]["ttftP95Ms"], "p95": case["measured"]["ttftP95Ms"]},
            "tpotMs": {"mean": case["measured"]["tpotMeanMs"]},
            "throughputTokensPerSecond": case["measured"]["throughputTokensPerSecond"],
            "completed": case["measured"]["completed"],
            "errors": 0,
            "rounds": [{"busyCores": r.get("busyCores")} for r in case["measuredRounds"]],
        },
        "steps": {"busyFractionByRound": case["steps"]["busyFractionByRound"]},
    }
)
steps["probes"].append(
    {
        "case": "probe: disaggregated, 4 req/s",
        "mode": "disaggregated",
        "stepsOnly": True,
        "seeds": [1, 1, 1],
        "rounds": srow["rounds"],
        "firstSteps": srow.get("firstSteps"),
    }
)
json.dump(rep, open(f"{out}/validate-simulator-{run}-standin.json", "w"))
json.dump(steps, open(f"{out}/validate-steps-{run}-standin.json", "w"))
