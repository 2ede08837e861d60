"""Tabulates replays.sh's lines: max_error_pct per run and variant, then signed per-case errors (-v)."""
import json
import sys

rows = [json.loads(l) for l in open(sys.argv[1])]
runs, vs, t = [], [], {}
for r in rows:
    runs += [r["run"]] if r["run"] not in runs else []
    vs += [r["variant"]] if r["variant"] not in vs else []
    t[(r["run"], r["variant"])] = r
print("| run | " + " | ".join(vs) + " |")
print("|---" * (len(vs) + 1) + "|")
for run in runs:
    cell = lambda v: f"{t[(run, v)]['max_error_pct']:.2f}" if (run, v) in t else "—"
    print(f"| {run} | " + " | ".join(cell(v) for v in vs) + " |")
for v in vs:
    m = [t[(run, v)]["max_error_pct"] for run in runs if (run, v) in t]
    print(f"{v} ({len(m)} runs): mean {sum(m) / len(m):.2f}, max {max(m):.2f}, runs over 20: {sum(x > 20 for x in m)}")
if "-v" in sys.argv:
    cases = list(rows[0]["signed_ttft_tpot_thr"].keys())
    print("signed errors %, TTFT P95 / mean TPOT, cases: " + "; ".join(cases))
    for r in rows:
        print(f"{r['run']:10s} {r['variant']:22s} {r['max_error_pct']:6.2f} | " + " | ".join(f"{a:+6.1f} {b:+6.1f}" for a, b, _ in r["signed_ttft_tpot_thr"].values()))
    # mean |error| per case and metric, per variant
    for v in vs:
        rs = [t[(run, v)] for run in runs if (run, v) in t]
        out = []
        for c in cases:
            a = sum(abs(r["signed_ttft_tpot_thr"][c][0]) for r in rs) / len(rs)
            b = sum(abs(r["signed_ttft_tpot_thr"][c][1]) for r in rs) / len(rs)
            out.append(f"{a:5.1f} {b:5.1f}")
        print(f"mean |err| {v:22s} | " + " | ".join(out))
