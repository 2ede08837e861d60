"""m15r: the coupled mode's lone decode step (1 sequence, no prompt, none ending) against the round's
busy fraction, per round of the probes (2, 12 req/s) and the 4 req/s case, in the stored runs; a line
through the probes' rounds in busy (the model's idle term) and in ln(busy), each asked for the case.
Usage: python3 lone-vs-busy.py RUN [RUN ...]."""
import json
import math
import sys

RES = "bench/results"


def lone(r):
    sel = [s for s in r if s["sequences"] == 1 and s["prefillTokens"] == 0 and not s.get("finished")]
    n = sum(s["count"] for s in sel)
    return (sum(s["sumUs"] for s in sel) / n / 1000 if n else None), n


def line(xs, ys, ws):
    sw = sum(ws)
    mx = sum(w * x for x, w in zip(xs, ws)) / sw
    my = sum(w * y for y, w in zip(ys, ws)) / sw
    b = sum(w * (x - mx) * (y - my) for x, y, w in zip(xs, ys, ws)) / sum(w * (x - mx) ** 2 for x, w in zip(xs, ws))
    return lambda x: my + b * (x - mx)


tot = {"lin": [], "log": []}
for run in sys.argv[1:]:
    rep = json.load(open(f"{RES}/validate-simulator-{run}.json"))
    steps = json.load(open(f"{RES}/validate-steps-{run}.json"))
    ent = {e["case"]: e for e in rep["probes"] + rep["cases"]}
    rows = {e["case"]: e for e in steps["probes"] + steps["cases"]}
    pts = {}
    for name in ("probe: coupled, 2 req/s", "probe: coupled, 12 req/s", "coupled, rank-aware, 4 req/s", "coupled, round-robin, 12 req/s"):
        busy = ent[name]["steps"]["busyFractionByRound"]
        pts[name] = [(b, *lone(r)) for b, r in zip(busy, rows[name]["rounds"])]
    pr = [p for k in ("probe: coupled, 2 req/s", "probe: coupled, 12 req/s") for p in pts[k] if p[1] is not None]
    lin = line([p[0] for p in pr], [p[1] for p in pr], [p[2] for p in pr])
    lg = line([math.log(p[0]) for p in pr], [p[1] for p in pr], [p[2] for p in pr])
    c = [p for p in pts["coupled, rank-aware, 4 req/s"] if p[1] is not None]
    cb = sum(p[0] for p in c) / len(c)
    cm = sum(p[1] * p[2] for p in c) / sum(p[2] for p in c)
    f = lambda ps: " ".join(f"({b:.3f},{v:.3f})" for b, v, _ in ps)
    print(f"== {run}")
    for k, v in pts.items():
        print(f"  {k:32s} {f(v)}")
    e1, e2 = 100 * (lin(cb) - cm) / cm, 100 * (lg(math.log(cb)) - cm) / cm
    tot["lin"].append(abs(e1)); tot["log"].append(abs(e2))
    print(f"  4 req/s case lone {cm:.3f} at busy {cb:.3f}: line in busy {lin(cb):.3f} ({e1:+.1f} %), in ln(busy) {lg(math.log(cb)):.3f} ({e2:+.1f} %)")
print(f"mean |error| of the 4 req/s lone step: busy {sum(tot['lin'])/len(tot['lin']):.1f} %, ln(busy) {sum(tot['log'])/len(tot['log']):.1f} %")

# Within one rate, a slower round reads busier: the rounds' deviations from their entry's mean,
# pooled over the runs and the four coupled entries, against the probes' across-rate slope.
dx, dy = [], []
for run in sys.argv[1:]:
    rep = json.load(open(f"{RES}/validate-simulator-{run}.json"))
    steps = json.load(open(f"{RES}/validate-steps-{run}.json"))
    ent = {e["case"]: e for e in rep["probes"] + rep["cases"]}
    rows = {e["case"]: e for e in steps["probes"] + steps["cases"]}
    for name in ("probe: coupled, 2 req/s", "probe: coupled, 12 req/s", "coupled, rank-aware, 4 req/s", "coupled, round-robin, 12 req/s"):
        pts = [(b, lone(r)[0]) for b, r in zip(ent[name]["steps"]["busyFractionByRound"], rows[name]["rounds"])]
        mb = sum(p[0] for p in pts) / len(pts)
        ml = sum(p[1] for p in pts) / len(pts)
        dx += [p[0] - mb for p in pts]
        dy += [p[1] - ml for p in pts]
slope = sum(x * y for x, y in zip(dx, dy)) / sum(x * x for x in dx)
r = sum(x * y for x, y in zip(dx, dy)) / math.sqrt(sum(x * x for x in dx) * sum(y * y for y in dy))
print(f"within a rate's rounds ({len(dx)} rounds): lone step {slope:+.2f} ms per unit of busy fraction, r = {r:.2f}"
      " (across the rates the step falls as busy grows)")
