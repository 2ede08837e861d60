#!/usr/bin/env python3
# Samples utime+stime (ticks) of every process in the tree under ROOT pid, every 0.25 s, until ROOT exits.
import os, sys, time, json
root = int(sys.argv[1]); out = sys.argv[2]
def tree():
    kids = {}
    for p in os.listdir('/proc'):
        if not p.isdigit(): continue
        try:
            s = open(f'/proc/{p}/stat').read()
        except Exception: continue
        r = s.rfind(')'); f = s[r+2:].split()
        ppid = int(f[1]); kids.setdefault(ppid, []).append((int(p), s[s.find('(')+1:r], int(f[11]) + int(f[12])))
    res = []; stack = [root]
    while stack:
        x = stack.pop()
        for (pid, name, t) in kids.get(x, []):
            res.append((pid, name, t)); stack.append(pid)
    return res
samples = []
while os.path.exists(f'/proc/{root}'):
    t = time.time()
    ps = tree()
    cmd = {}
    for pid, name, ticks in ps:
        try: c = open(f'/proc/{pid}/cmdline').read().replace('\0', ' ')[:160]
        except Exception: c = name
        cmd[pid] = (c, ticks)
    samples.append((t, {str(k): v for k, v in cmd.items()}))
    time.sleep(0.25)
json.dump(samples, open(out, 'w'))
