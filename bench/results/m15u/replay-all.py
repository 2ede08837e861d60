#!/usr/bin/env python3
"""m15u: replay every stored validate-simulator run with one flag set and summarise.

  python3 bench/results/m15u/replay-all.py [--runs SET] [--jobs N] [--label L] [--out FILE] -- [FLAGS…]

Each run: `node bench/dist/validate-simulator.js --json --replay bench/results/validate-simulator-RUN.json
--replay-steps bench/results/validate-steps-RUN.json FLAGS`. Prints one line a run (max_error_pct, the
case and metric that set it, each case's signed TTFT / TPOT errors) and mean / median / max over the
runs and how many are ≤ 20. `--out` appends one JSON line a run (label, flags, run, errors).
Run sets: `40s` (the 40-s runs since m15p), `20s` (the 20-s runs with step files since m15g), `all`.
"""
import json, os, statistics, subprocess, sys
from concurrent.futures import ThreadPoolExecutor

RUNS_40 = ["m15p-0425", "m15p-0455", "main-0545", "m15q-0752", "m15q-0831", "main-0933", "m15r-1138",
           "m15s-1447", "main-1542", "m15t-1747", "main-1836"]
RUNS_20 = ["main-0510", "main-0712", "m15j-0831", "m15j-0858", "main-0945", "m15k-1109", "m15k-1156",
           "main-1224", "m15l-1405", "m15l-1421", "m15l-1453", "main-1538", "m15m-1656", "m15m-1717",
           "main-1757", "main-1839", "m15n-2100", "m15n-2131", "main-2240", "m15o-0014", "m15o-0035", "main-0137"]
SHORT = {"coupled, rank-aware, 4 req/s": "c4", "coupled, round-robin, 12 req/s": "c12",
         "disaggregated, rank-aware, 4 req/s": "d4", "hybrid, rank-aware+rebalancing, 8 req/s": "h8"}
METRICS = [("ttftP95Ms", "ttft"), ("tpotMeanMs", "tpot"), ("throughputRps", "thr")]

argv = sys.argv[1:]
flags = argv[argv.index("--") + 1:] if "--" in argv else []
opts = argv[: argv.index("--")] if "--" in argv else argv
opt = lambda k, d: opts[opts.index(k) + 1] if k in opts else d
runset = opt("--runs", "40s")
runs = {"40s": RUNS_40, "20s": RUNS_20, "all": RUNS_40 + RUNS_20}.get(runset) or runset.split(",")
jobs = int(opt("--jobs", "2"))
label = opt("--label", " ".join(flags) or "default")
out = opt("--out", None)
root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..")


def replay(run):
    cmd = ["node", "bench/dist/validate-simulator.js", "--json", "--replay",
           f"bench/results/validate-simulator-{run}.json", "--replay-steps",
           f"bench/results/validate-steps-{run}.json", *flags]
    p = subprocess.run(cmd, cwd=root, capture_output=True, text=True)
    if p.returncode != 0:
        return run, None, p.stderr.strip().splitlines()[-1:] 
    d = json.loads(p.stdout)
    errs, worst = {}, (0, "")
    for c in d["cases"]:
        for key, short in METRICS:
            m, pr = c["measured"].get(key), c["predicted"].get(key)
            if not m or pr is None:
                continue
            e = 100 * (pr - m) / m
            errs[f"{SHORT.get(c['case'], c['case'])}.{short}"] = round(e, 2)
            if abs(e) > worst[0]:
                worst = (abs(e), f"{SHORT.get(c['case'], c['case'])}.{short}")
    return run, {"max": d["max_error_pct"], "set_by": worst[1], "errors": errs}, None


with ThreadPoolExecutor(jobs) as ex:
    results = list(ex.map(replay, runs))
maxes = []
print(f"# {label}")
for run, r, err in results:
    if r is None:
        print(f"{run:10s}  FAILED {err}")
        continue
    maxes.append(r["max"])
    e = r["errors"]
    cells = " ".join(f"{k}={e[k]:+6.1f}" for k in e if not k.endswith(".thr"))
    print(f"{run:10s} {r['max']:6.2f} {r['set_by']:8s} {cells}")
    if out:
        with open(out, "a") as f:
            f.write(json.dumps({"label": label, "flags": flags, "run": run, **r}) + "\n")
if maxes:
    print(f"mean {statistics.mean(maxes):.2f}  median {statistics.median(maxes):.2f}  max {max(maxes):.2f}  "
          f"≤20: {sum(m <= 20 for m in maxes)}/{len(maxes)}")
