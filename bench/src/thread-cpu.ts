/**
 * Per-thread CPU of a set of processes, from /proc (Linux only): for each thread its name, run and
 * run-queue wait time (schedstat) and voluntary / involuntary context switches. Two snapshots around
 * a timed section give who ran during it and how long each waited for a core: the mesh bench uses
 * it to name what competes with the two ring threads during a disaggregated decode step.
 */
import { readdirSync, readFileSync } from "node:fs";
import { round } from "./mesh-bench-common";

interface ThreadSample {
  process: string;
  name: string;
  runNs: number;
  waitNs: number;
  voluntary: number;
  involuntary: number;
  migrations: number;
}

/** tid → sample, for every thread of every named process that is still running. */
export type ThreadSnapshot = Map<string, ThreadSample>;

/** Moves between CPUs so far (`se.nr_migrations`; 0 where the kernel has no sched debug file). */
function migrationsOf(dir: string): number {
  try {
    return Number(/^se\.nr_migrations\s*:\s*(\d+)/m.exec(readFileSync(`${dir}/sched`, "utf8"))?.[1] ?? 0);
  } catch {
    return 0;
  }
}

/** One process's threads now; a process or thread that exits while being read is skipped. */
export function threadSnapshot(processes: ReadonlyArray<{ name: string; pid: number }>): ThreadSnapshot {
  const out: ThreadSnapshot = new Map();
  for (const { name: process, pid } of processes) {
    let tids: string[];
    try {
      tids = readdirSync(`/proc/${pid}/task`);
    } catch {
      continue;
    }
    for (const tid of tids) {
      try {
        const dir = `/proc/${pid}/task/${tid}`;
        const [run, wait] = readFileSync(`${dir}/schedstat`, "utf8").trim().split(/\s+/).map(Number);
        const status = readFileSync(`${dir}/status`, "utf8");
        const field = (key: string) => Number(new RegExp(`^${key}:\\s*(\\d+)`, "m").exec(status)?.[1] ?? 0);
        out.set(`${pid}/${tid}`, {
          process,
          // Node names most of its threads "node": its event loop is the one whose tid is the pid.
          name: tid === String(pid) ? "main" : readFileSync(`${dir}/comm`, "utf8").trim(),
          runNs: run ?? 0,
          waitNs: wait ?? 0,
          voluntary: field("voluntary_ctxt_switches"),
          involuntary: field("nonvoluntary_ctxt_switches"),
          migrations: migrationsOf(dir),
        });
      } catch {
        // the thread exited between the listing and the read
      }
    }
  }
  return out;
}

/** A thread group's CPU during the section, per engine step (µs) and in total (ms). */
export interface ThreadCpu {
  process: string;
  thread: string;
  threads: number;
  run_ms: number;
  run_us_per_step: number;
  wait_us_per_step: number;
  voluntary_per_step: number;
  involuntary_per_step: number;
  migrations_per_step: number;
}

/**
 * The difference between two snapshots, grouped by process and thread name (pool threads share a
 * name), busiest first; groups under 1 % of the busiest are left out. Threads born during the
 * section count from zero.
 */
export function threadCpuDiff(before: ThreadSnapshot, after: ThreadSnapshot, steps: number): ThreadCpu[] {
  const groups = new Map<
    string,
    ThreadCpu & { runNs: number; waitNs: number; vol: number; invol: number; migr: number }
  >();
  for (const [tid, a] of after) {
    const b = before.get(tid);
    const key = `${a.process}\u0000${a.name}`;
    const g = groups.get(key) ?? {
      process: a.process,
      thread: a.name,
      threads: 0,
      run_ms: 0,
      run_us_per_step: 0,
      wait_us_per_step: 0,
      voluntary_per_step: 0,
      involuntary_per_step: 0,
      migrations_per_step: 0,
      runNs: 0,
      waitNs: 0,
      vol: 0,
      invol: 0,
      migr: 0,
    };
    g.threads++;
    g.runNs += a.runNs - (b?.runNs ?? 0);
    g.waitNs += a.waitNs - (b?.waitNs ?? 0);
    g.vol += a.voluntary - (b?.voluntary ?? 0);
    g.invol += a.involuntary - (b?.involuntary ?? 0);
    g.migr += a.migrations - (b?.migrations ?? 0);
    groups.set(key, g);
  }
  const per = Math.max(1, steps);
  const rows = [...groups.values()].map(({ runNs, waitNs, vol, invol, migr, ...g }) => ({
    ...g,
    run_ms: round(runNs / 1e6),
    run_us_per_step: round(runNs / 1e3 / per),
    wait_us_per_step: round(waitNs / 1e3 / per),
    voluntary_per_step: round(vol / per),
    involuntary_per_step: round(invol / per),
    migrations_per_step: round(migr / per),
  }));
  rows.sort((x, y) => y.run_ms - x.run_ms);
  const top = rows[0]?.run_ms ?? 0;
  return rows.filter((r) => r.run_ms >= top / 100);
}
