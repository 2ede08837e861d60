#!/usr/bin/env python3
# m15t: requests over max(60 ms, 2.5x their round median) by the second they arrived, per probe and case, over every stored steps file.
import json,sys,glob
import numpy as np
from collections import Counter
H={}
for f in sorted(glob.glob('bench/results/validate-steps-*.json')):
    s=json.load(open(f))
    for p in s.get('cases',[])+s.get('probes',[]):
        if 'requestTtftsMs' not in p or 'requestArrivalsS' not in p: continue
        for t,a in zip(p['requestTtftsMs'],p['requestArrivalsS']):
            t=np.array(t); a=np.array(a)
            if len(t)!=len(a): continue
            thr=max(60, 2.5*np.median(t))
            h=H.setdefault(p['case'],[Counter(),0,0])
            for x in a[t>thr]: h[0][int(x)]+=1
            h[1]+=1; h[2]+=len(t)
for k,(c,n,m) in H.items():
    print(f"{k:45s} rounds {n:3d} reqs {m:6d} slow-by-second:", dict(sorted(c.items())))
