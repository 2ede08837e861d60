// m15u: the seeds' request mixes (what bench load draws): outputs, prompts, requests per second.
const p = require("../../../packages/policy/dist/index.js");
for (const [rate, dur] of [[12, 40], [4, 40], [4, 30], [2, 36]])
  for (const seed of [1, 2, 3, 4]) {
    const spec = { ...p.DEFAULT_WORKLOAD, adapters: 12, ranks: [4, 8, 16, 32, 64], zipf: 1.2, rate, duration: dur, promptMedian: 24, outputMedian: 16, lengthSigma: 0.4, seed };
    const rq = p.makeRequests(spec, p.makeAdapters(spec));
    const out = rq.reduce((a, r) => a + r.outputTokens, 0);
    const pr = rq.reduce((a, r) => a + r.promptTokens, 0);
    console.log(`rate ${rate} ${dur}s seed ${seed}: ${rq.length} requests, mean output ${(out / rq.length).toFixed(1)}, mean prompt ${(pr / rq.length).toFixed(1)}, decode tokens/s ${(out / dur).toFixed(1)}`);
  }
