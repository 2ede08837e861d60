#!/usr/bin/env python3
"""m15w: does the steps file's rounding move a replay? Replays one stored run N times, each with its
steps file's request TTFTs moved by a uniform draw within their rounding (±0.005 ms) and arrivals
within theirs (±0.05 ms), and prints each replay's max_error_pct, hybrid TTFT prediction and the
hybrid busy-hop term.   python3 jitter-replay.py RUN N [FLAGS…]"""
import json, os, random, subprocess, sys, tempfile
run, n, flags = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..")
steps = json.load(open(f"{root}/bench/results/validate-steps-{run}.json"))
def one(seed):
    rnd = random.Random(seed)
    s = json.loads(json.dumps(steps))
    if seed > 0:
        for e in s["probes"] + s["cases"]:
            e["requestTtftsMs"] = [[t + rnd.uniform(-0.005, 0.005) for t in r] for r in e.get("requestTtftsMs") or []]
            e["requestArrivalsS"] = [[None if a is None else a + rnd.uniform(-5e-5, 5e-5) for a in r] for r in e.get("requestArrivalsS") or []]
    f = tempfile.NamedTemporaryFile("w", suffix=".json", delete=False); json.dump(s, f); f.close()
    p = subprocess.run(["node", "bench/dist/validate-simulator.js", "--json", "--replay",
                        f"bench/results/validate-simulator-{run}.json", "--replay-steps", f.name, *flags],
                       cwd=root, capture_output=True, text=True)
    os.unlink(f.name)
    d = json.loads(p.stdout); o = d["calibration"]["overheadsFromProbes"]
    h = [c for c in d["cases"] if c["case"].startswith("hybrid")][0]
    print(f"{run} jitter-seed {seed}: max {d['max_error_pct']:.2f}  hybrid TTFT P95 predicted {h['predicted']['ttftP95Ms']:.2f}"
          f" (measured {h['measured']['ttftP95Ms']:.2f})  busyHopSteps {o['hybridBusyHopSteps']:.3f}"
          f"  hop P50/P95 {o['requestOverheadUs']:.0f}/{o['requestOverheadP95Us']:.0f} us  slope {o['requestOverheadPerIdleUs']:.0f}", flush=True)
for seed in range(n + 1):
    one(seed)
