// LORAMESH_DATAPLANE_PRIORITY: each case runs in a child process (the setting is read once per
// process) that starts the op pool and a ring server, runs one ring site on a libuv thread, and
// reports every thread's policy and nice from /proc/self/task/*/stat.
import { spawnSync } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { expect } from "chai";

interface ThreadSched {
  name: string;
  nice: number;
  rtprio: number;
  policy: number; // 0 SCHED_OTHER, 1 SCHED_FIFO
}
interface Report {
  priority: { setting: string; raised: number; refused: number; error: string };
  threads: ThreadSched[];
  site: string;
  /** Raises and refusals of one ring site's libuv thread (priority::Scope). */
  scope: { raised: number; refused: number };
}

const CHILD = `
const { native } = require(${JSON.stringify(join(__dirname, "index.js"))});
const { readdirSync, readFileSync } = require("node:fs");
(async () => {
  if (process.env.FORCE_REFUSAL === "1") native.forceDataplanePriorityRefusal(true);
  native.setNumThreads(2);
  const f32 = (shape) => ({ dtype: "f32", shape, data: new Float32Array(shape[0] * shape[1]).fill(1) });
  await native.matmul(f32([64, 128]), f32([128, 128]), null, f32([64, 128]));
  const server = native.shmServerStart({
    numLayers: 1, numExperts: 0, hIn: [8, 8, 8, 8], nOut: [8, 8, 8, 8], segmentBytes: 1 << 20,
    windowUs: 0, activeUs: 1000, siteTimeoutMs: 5000, attachTimeoutMs: 5000,
  });
  const ring = native.shmConnect(native.shmServerAttach(server, "w").name);
  const oneSite = () => native.shmSite(ring, { layer: 0, site: 0, adapterIds: ["absent"], rowAdapter: Int32Array.of(0),
      x: new Float32Array(8), rows: 1, hIn: 8, nOut: 8, timeoutMs: 5000 }).then(() => "ok", (err) => err.constructor.name);
  // The first site also lets the ring thread start (it raises itself); the second is the step scope's alone.
  await oneSite();
  const p1 = native.dataplanePriority();
  const site = await oneSite();
  const p2 = native.dataplanePriority();
  const scope = { raised: p2.raised - p1.raised, refused: p2.refused - p1.refused };
  const threads = readdirSync("/proc/self/task").map((t) => {
    const stat = readFileSync("/proc/self/task/" + t + "/stat", "utf8");
    const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    return { name: stat.slice(stat.indexOf("(") + 1, stat.lastIndexOf(")")), nice: +f[16], rtprio: +f[37], policy: +f[38] };
  });
  console.log(JSON.stringify({ priority: native.dataplanePriority(), threads, site, scope }));
  native.shmClose(ring);
  native.shmServerStop(server);
})().catch((err) => { console.error(err); process.exit(1); });
`;

function run(
  setting: string,
  opts: { prefix?: string[]; forceRefusal?: boolean; env?: Record<string, string> } = {},
): { report: Report; stderr: string } {
  const argv = [...(opts.prefix ?? []), process.execPath, "-e", CHILD];
  const r = spawnSync(argv[0] as string, argv.slice(1), {
    encoding: "utf8",
    timeout: 120_000,
    env: {
      ...process.env,
      ...opts.env,
      LORAMESH_DATAPLANE_PRIORITY: setting,
      FORCE_REFUSAL: opts.forceRefusal ? "1" : "0",
    },
  });
  expect(r.status, `child (${setting}) exited: ${r.stderr}`).to.equal(0);
  return { report: JSON.parse(r.stdout.trim().split("\n").pop() as string) as Report, stderr: r.stderr };
}

const dataplane = (r: Report) => r.threads.filter((t) => t.name === "lm-pool" || t.name === "lm-ring-server");
const others = (r: Report) => r.threads.filter((t) => !t.name.startsWith("lm-"));
const normal = (t: ThreadSched) => t.policy === 0 && t.nice === 0 && t.rtprio === 0;

/** Whether this process may raise priorities (root with CAP_SYS_NICE, the usual dev and CI case). */
function canRaise(): boolean {
  const status = existsSync("/proc/self/status") ? readFileSync("/proc/self/status", "utf8") : "";
  const eff = /CapEff:\s*([0-9a-f]+)/.exec(status)?.[1];
  return eff !== undefined && (BigInt(`0x${eff}`) & (1n << 23n)) !== 0n; // CAP_SYS_NICE
}

describe("data-plane thread priority (LORAMESH_DATAPLANE_PRIORITY)", function () {
  this.timeout(300_000);

  it("off leaves every thread at normal priority", () => {
    const { report } = run("off");
    expect(report.priority).to.include({ setting: "off", raised: 0, refused: 0 });
    expect(report.scope).to.deep.equal({ raised: 0, refused: 0 });
    expect(dataplane(report).map((t) => t.name)).to.include.members(["lm-pool", "lm-ring-server"]);
    for (const t of report.threads) expect(normal(t), JSON.stringify(t)).to.equal(true);
  });

  it("nice raises the pool and ring-server threads, and a step's libuv thread only while it runs", function () {
    if (!canRaise()) this.skip();
    const { report } = run("nice");
    expect(report.priority.setting).to.equal("nice:10");
    expect(report.priority.refused).to.equal(0);
    // The pool worker(s), the ring-server thread, and the libuv thread that waited on each ring site.
    expect(report.priority.raised).to.be.at.least(4);
    expect(report.scope).to.deep.equal({ raised: 1, refused: 0 });
    expect(dataplane(report)).to.have.length.at.least(2);
    for (const t of dataplane(report)) expect(t, t.name).to.include({ policy: 0, nice: -10 });
    // Restored: the libuv thread went back to the pool at normal priority, Node's own were never touched.
    for (const t of others(report)) expect(normal(t), JSON.stringify(t)).to.equal(true);
  });

  it("fifo:P puts the ring-server thread and a decode-sized step's thread in SCHED_FIFO at priority P, never the pool", function () {
    if (!canRaise()) this.skip();
    const { report } = run("fifo:3");
    expect(report.priority).to.include({ setting: "fifo:3", refused: 0 });
    expect(report.scope).to.deep.equal({ raised: 1, refused: 0 });
    const ring = dataplane(report).filter((t) => t.name === "lm-ring-server");
    expect(ring).to.have.length(1);
    for (const t of ring) expect(t, t.name).to.include({ policy: 1, rtprio: 3 });
    // The pool runs prefill-sized jobs too: it never holds SCHED_FIFO for good.
    const pool = dataplane(report).filter((t) => t.name === "lm-pool");
    expect(pool).to.have.length.at.least(1);
    for (const t of pool) expect(normal(t), JSON.stringify(t)).to.equal(true);
    for (const t of others(report)) expect(normal(t), JSON.stringify(t)).to.equal(true);
  });

  it("fifo leaves a step (or site) larger than LORAMESH_DATAPLANE_RT_ROWS unraised", function () {
    if (!canRaise()) this.skip();
    const { report } = run("fifo", { env: { LORAMESH_DATAPLANE_RT_ROWS: "0" } });
    // The one-row site is over the bound: its libuv thread is not raised; the ring thread still is,
    // and is back at SCHED_FIFO after serving (it runs an over-bound batch at normal priority).
    expect(report.scope).to.deep.equal({ raised: 0, refused: 0 });
    for (const t of dataplane(report).filter((x) => x.name === "lm-ring-server"))
      expect(t, t.name).to.include({ policy: 1, rtprio: 1 });
    for (const t of others(report)) expect(normal(t), JSON.stringify(t)).to.equal(true);
  });

  it("a refused raise (no CAP_SYS_NICE) is logged once and the threads run unprivileged", function () {
    // A real unprivileged process where setpriv can drop the capability; the forced hook otherwise.
    const real = canRaise() && existsSync("/usr/bin/setpriv");
    const { report, stderr } = run(
      "nice:5",
      real ? { prefix: ["/usr/bin/setpriv", "--bounding-set=-sys_nice"] } : { forceRefusal: true },
    );
    expect(report.priority.setting).to.equal("nice:5");
    expect(report.priority.raised).to.equal(0);
    expect(report.priority.refused).to.be.at.least(4);
    expect(report.scope).to.deep.equal({ raised: 0, refused: 1 });
    expect(report.priority.error).to.match(/Permission denied|not permitted/);
    expect(stderr.match(/LORAMESH_DATAPLANE_PRIORITY=nice:5 refused/g)).to.have.length(1);
    for (const t of report.threads) expect(normal(t), JSON.stringify(t)).to.equal(true);
    // The ring site itself still ran (same outcome as unraised: the server holds no adapter).
    expect(report.site).to.equal(run("off").report.site);
  });

  it("the forced-refusal hook takes the same fallback path", () => {
    const { report, stderr } = run("fifo", { forceRefusal: true });
    expect(report.priority).to.include({ setting: "fifo:1", raised: 0 });
    // The ring-server thread and each site's libuv thread (the pool never asks for fifo).
    expect(report.priority.refused).to.be.at.least(3);
    expect(report.scope).to.deep.equal({ raised: 0, refused: 1 });
    expect(report.priority.error).to.match(/forced for testing/);
    expect(stderr.match(/refused/g)).to.have.length(1);
    for (const t of report.threads) expect(normal(t), JSON.stringify(t)).to.equal(true);
  });

  it("a setting it cannot parse means off, logged", () => {
    const { report, stderr } = run("fifo:99");
    expect(report.priority).to.include({ setting: "off", raised: 0, refused: 0 });
    expect(stderr).to.match(
      /LORAMESH_DATAPLANE_PRIORITY=fifo:99 is not off, nice\[:1-20\] or fifo\[:1-10\]; using off/,
    );
  });
});
