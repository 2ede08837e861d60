#!/usr/bin/env python3
"""Lone decode steps (1 sequence, 1 token, no prefill, none finishing) per probe and case round,
from a steps file: mean ms and count. Shows whether a run's cases stepped faster than its probes.
Usage: lone-steps.py STEPS.json [STEPS.json ...]"""
import json, sys
for f in sys.argv[1:]:
    s = json.load(open(f))
    for kind in ("probes", "cases"):
        for e in s[kind]:
            out = []
            for r in e["rounds"]:
                v = [x for x in r if x["sequences"] == 1 and x["tokens"] == 1 and x["prefillTokens"] == 0 and x["finished"] == 0]
                n = sum(x["count"] for x in v); t = sum(x["sumUs"] for x in v)
                out.append(f"{t / n / 1000:.3f}({n})" if n else "-")
            print(f.split("/")[-1], e["case"][:40].ljust(40), " ".join(out))
