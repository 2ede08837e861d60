#!/usr/bin/env python3
# m15t (analysis only): each stored hybrid case round, where its slowest request after 25 s puts a stall end (arrival + its TTFT over the round median, as stallEndS) and the mean excess of the requests in the second before it.
import json,sys,glob
import numpy as np
rows=[]
for f in sorted(glob.glob('bench/results/validate-steps-*.json')):
    s=json.load(open(f))
    for p in s.get('cases',[]):
        if p['mode']!='hybrid' or 'requestArrivalsS' not in p: continue
        for t,a in zip(p['requestTtftsMs'],p['requestArrivalsS']):
            if not a or a[0] is None: continue
            t=np.array(t); a=np.array(a,dtype=float); med=np.median(t)
            w=(a>=25)
            j=np.argmax(np.where(w,t-med,-1e9)); end=a[j]+(t[j]-med)/1000
            win=(a>=end-1)&(a<end)
            rows.append((f.split('steps-')[1][:-5], end, t[j], (t[win]-med).mean(), win.sum()))
for r in rows: print("%-10s end %.2f max %.0f excess %.1f n %d"%r)
