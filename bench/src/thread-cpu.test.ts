// The per-thread CPU profile of bench:mesh --threads, on this process: the event loop's busy work
// shows up as its run time, a child process's threads are named, and the grouping keeps both.
// Only that CPU time was counted (never how much: the machine may be busy).
import { expect } from "chai";
import { spawn } from "node:child_process";
import { once } from "node:events";
import { threadCpuDiff, threadSnapshot } from "./thread-cpu";

describe("bench thread CPU profile (/proc schedstat)", function () {
  this.timeout(60_000);

  it("counts the run time of the threads that ran, per process and thread name", async function () {
    if (process.platform !== "linux") this.skip();
    // A child that spins on its event loop for 200 ms when told to, then waits to be told to exit.
    const child = spawn(
      process.execPath,
      [
        "-e",
        "console.log('ready'); process.stdin.once('data', () => { const t = Date.now(); while (Date.now() - t < 200); console.log('spun') })",
      ],
      { stdio: ["pipe", "pipe", "inherit"] },
    );
    try {
      await once(child.stdout, "data");
      const pids = [
        { name: "self", pid: process.pid },
        { name: "child", pid: child.pid as number },
      ];
      const before = threadSnapshot(pids);
      child.stdin.write("go\n");
      // Busy work on this event loop too.
      const t = Date.now();
      while (Date.now() - t < 100);
      await once(child.stdout, "data");
      const after = threadSnapshot(pids);
      const rows = threadCpuDiff(before, after, 10);
      const main = (p: string) => rows.find((r) => r.process === p && r.thread === "main");
      expect(main("self"), "this process's event loop").to.not.equal(undefined);
      expect(main("child"), "the child's event loop").to.not.equal(undefined);
      expect(main("self")?.run_ms).to.be.greaterThan(0);
      expect(main("child")?.run_ms).to.be.greaterThan(0);
      expect(main("child")?.run_us_per_step).to.be.greaterThan(0);
      // Busiest first.
      for (let i = 1; i < rows.length; i++)
        expect((rows[i - 1] as { run_ms: number }).run_ms).to.be.at.least((rows[i] as { run_ms: number }).run_ms);
    } finally {
      child.kill();
    }
  });

  it("skips a process that is gone", () => {
    expect(threadSnapshot([{ name: "gone", pid: 2 ** 22 + 1 }]).size).to.equal(0);
  });
});
