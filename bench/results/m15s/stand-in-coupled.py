"""A stand-in for a coupled probe at 4 req/s in a stored run (m15s, `--coupled-step-probe`; adapted
from m15q's stand-in.py), for a replay only: the coupled 4 req/s case's own rounds (seed 1) copied as "probe: coupled, 4 req/s". OPTIMISTIC: the
real probe runs other requests (seeds 2, 3, 4) in other minutes; this shows what the fit does with
steps at the case's rate, not what a run measures. Usage: python3 stand-in.py RUN OUTDIR."""
import json
import sys

run, out = sys.argv[1], sys.argv[2]
rep = json.load(open(f"bench/results/validate-simulator-{run}.json"))
steps = json.load(open(f"bench/results/validate-steps-{run}.json"))
name = "coupled, rank-aware, 4 req/s"
case = next(e for e in rep["cases"] if e["case"] == name)
srow = next(e for e in steps["cases"] if e["case"] == name)
rep["probes"].append(
    {
        "case": "probe: coupled, 4 req/s",
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
        "case": "probe: coupled, 4 req/s",
        "mode": "coupled",
        "stepsOnly": True,
        "seeds": [1, 1, 1],
        "rounds": srow["rounds"],
        "firstSteps": srow.get("firstSteps"),
    }
)
json.dump(rep, open(f"{out}/validate-simulator-{run}-cstandin.json", "w"))
json.dump(steps, open(f"{out}/validate-steps-{run}-cstandin.json", "w"))
