import json, math, sys, glob, collections, os
def q(a,p):
    a=sorted(a); 
    return a[min(len(a)-1,max(0,int(math.ceil(p/100*len(a)))-1))] if a else float('nan')
for f in sorted(glob.glob(os.path.join(os.path.dirname(os.path.abspath(__file__)),'run-*.json'))):
    tag=f.split('run-')[1][:-5]
    try: R=json.load(open(f))
    except Exception as e: print(tag,'unreadable',e); continue
    reqs=R['requests']; n=len(reqs)
    t=[r['ttftMs'] for r in reqs]; rt=[r.get('routerTtftMs',float('nan')) for r in reqs]; wq=[r.get('workerQueueMs',float('nan')) for r in reqs]
    outside=[a-b for a,b in zip(t,rt)]; inside=[b-c for b,c in zip(rt,wq)]
    print(f"{tag}: n={n} ttft p50/80/95 {q(t,50):.1f}/{q(t,80):.1f}/{q(t,95):.1f} | client-router {q(outside,50):.1f}/{q(outside,80):.1f}/{q(outside,95):.1f} | router-not-queue {q(inside,50):.1f}/{q(inside,80):.1f}/{q(inside,95):.1f} | workerQueue {q(wq,50):.2f}/{q(wq,80):.2f}/{q(wq,95):.2f}")
    # slow requests: which segment
    slow=sorted(reqs,key=lambda r:-r['ttftMs'])[:max(1,n//20)]
    print('   slowest 5%%: mean ttft %.1f client-router %.1f router-minus-queue %.1f queue %.2f' % (
        sum(r['ttftMs'] for r in slow)/len(slow), sum(r['ttftMs']-r.get('routerTtftMs',0) for r in slow)/len(slow),
        sum(r.get('routerTtftMs',0)-r.get('workerQueueMs',0) for r in slow)/len(slow), sum(r.get('workerQueueMs',0) for r in slow)/len(slow)))
    try: S=json.load(open(f.replace('run-','cpu-')))
    except Exception as e: print('  no cpu samples',e); continue
    # steady window: from first sample where worker exists +? use samples between 20% and 95% of span
    t0=S[0][0]; t1=S[-1][0]
    # find traffic window: the load's duration; take the last 85% of samples before the end minus shutdown
    dur=R['durationS']
    # the client process = root's ... we measure total ticks per cmd over the last `dur` seconds before the last sample
    nmax=max(len(x[1]) for x in S)
    full=[x for x in S if len(x[1])>=nmax-1]
    end=full[-1]
    # pick start sample nearest to end time - dur - 0.5
    st=min(S,key=lambda s:abs(s[0]-(end[0]-dur-0.3)))
    print('   window %.1f s (samples %d)'%(end[0]-st[0],len(S)))
    tot=0
    for pid,(cmd,ticks) in end[1].items():
        b=st[1].get(pid,(cmd,None))[1]
        if b is None: continue
        d=ticks-b; tot+=d
        if d>0: print('     %6.1f ms/req  %5.3f cores  %s'%(d*10/n, d/100/(end[0]-st[0]), cmd[:110]))
    print('     total %.1f ms/req %.3f cores'%(tot*10/n, tot/100/(end[0]-st[0])))
