// The ring's two SCHED_FIFO threads on one core (branch m13l): a worker posting sites back to back
// and the LoRA server's ring thread, both at fifo:1, in a child process pinned to one CPU (as when
// another real-time thread holds the other core or the hypervisor took that vCPU). Same-priority
// FIFO threads never preempt each other, so unless a spinner yields, each one's spin holds the
// core the other needs: the worker's wait gives up and sleeps on every site and the ring thread
// finds the posts asleep. Asserted on events (the worker's sleeps, the ring thread's posts_found
// counters), not on time; LM_RING_YIELD_US=0 (no yields) shows the assertion can fail.
import { spawnSync } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { expect } from "chai";

interface Report {
  sites: number;
  workerSleeps: number;
  postsFound: Record<string, number>;
}

const CHILD = `
const { native, nativeStep } = require(${JSON.stringify(join(__dirname, "index.js"))});
(async () => {
  const server = native.shmServerStart({
    numLayers: 2, numExperts: 0, hIn: [8, 8, 8, 8], nOut: [8, 8, 8, 8], segmentBytes: 1 << 20,
    windowUs: 0, activeUs: 1000, siteTimeoutMs: 5000, attachTimeoutMs: 5000,
  });
  const ring = native.shmConnect(native.shmServerAttach(server, "w").name);
  const spec = (iterations) => ({ adapters: [], layer: 1, site: 0, rows: 4, inFeatures: 8, outFeatures: 8,
    x: new Float32Array(32).fill(1), rowAdapter: Int32Array.of(-1, -1, -1, -1), iterations, timeoutMs: 5000, phases: true });
  // Warm: the ring thread starts and raises itself, and learns the loop's gap.
  await nativeStep.siteRoundTrips(ring, spec(50));
  const before = native.shmServerStats(server).postsFound;
  const all = await nativeStep.siteRoundTrips(ring, spec(Number(process.env.SITES)));
  const after = native.shmServerStats(server).postsFound;
  const postsFound = {};
  for (const k of Object.keys(after)) postsFound[k] = after[k] - (before[k] || 0);
  let workerSleeps = 0;
  for (let i = 5; i < all.length; i += 6) workerSleeps += all[i];
  console.log(JSON.stringify({ sites: all.length / 6, workerSleeps, postsFound }));
  native.shmClose(ring);
  native.shmServerStop(server);
})().catch((err) => { console.error(err); process.exit(1); });
`;

function run(env: Record<string, string>): Report {
  const r = spawnSync("taskset", ["-c", "0", process.execPath, "-e", CHILD], {
    encoding: "utf8",
    timeout: 120_000,
    env: { ...process.env, LORAMESH_DATAPLANE_PRIORITY: "fifo:1", SITES: "300", ...env },
  });
  expect(r.status, `child exited: ${r.stderr}`).to.equal(0);
  return JSON.parse(r.stdout.trim().split("\n").pop() as string) as Report;
}

/** SCHED_FIFO needs CAP_SYS_NICE (root: the usual dev and CI case); pinning needs taskset. */
function canRun(): boolean {
  const status = existsSync("/proc/self/status") ? readFileSync("/proc/self/status", "utf8") : "";
  const eff = /CapEff:\s*([0-9a-f]+)/.exec(status)?.[1];
  const nice = eff !== undefined && (BigInt(`0x${eff}`) & (1n << 23n)) !== 0n;
  return nice && spawnSync("taskset", ["-c", "0", "true"]).status === 0;
}

/** Posts that found the ring thread awake (spinning for them, or busy). */
const awake = (r: Report) => (r.postsFound["expectSpin"] ?? 0) + (r.postsFound["busy"] ?? 0);

describe("ring threads sharing one core (SCHED_FIFO, pinned to one CPU)", function () {
  this.timeout(300_000);

  it("a back-to-back poster is served without sleeping: the spinners yield the core to each other", function () {
    if (!canRun()) this.skip();
    const r = run({});
    expect(r.sites).to.equal(300);
    // Before the yields every site here slept (below); a handful may still sleep (a timer tick).
    expect(r.workerSleeps, JSON.stringify(r)).to.be.at.most(30);
    expect(awake(r), JSON.stringify(r)).to.be.at.least(270);
  });

  it("without the yields (LM_RING_YIELD_US=0) each spin holds the core its peer needs", function () {
    if (!canRun()) this.skip();
    const r = run({ LM_RING_YIELD_US: "0" });
    expect(r.sites).to.equal(300);
    expect(r.workerSleeps, JSON.stringify(r)).to.be.at.least(150);
    expect(awake(r), JSON.stringify(r)).to.be.at.most(150);
  });
});
