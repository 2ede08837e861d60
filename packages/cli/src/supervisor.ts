/**
 * Supervision of a local cluster's processes: one that exits on its own (a crash, a kill) is
 * started again after a backoff that doubles while it keeps failing, with a log line each time;
 * the rest of the cluster keeps running. Stopping the supervisor ends all restarts.
 */
import type { Logger } from "@loramesh/core";
import { describeError } from "@loramesh/errors";

export interface ProcessExit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

/** One running incarnation of a supervised unit. */
export interface Incarnation {
  pid: number;
  /** Resolves when this incarnation exits on its own. */
  exited: Promise<ProcessExit>;
}

export interface SupervisedUnit {
  service: string;
  /** Starts a new incarnation; resolves once it serves. */
  restart(): Promise<Incarnation>;
}

export interface ServiceRestart {
  service: string;
  /** The new pid. */
  pid: number;
  /** Restarts of this unit so far. */
  restarts: number;
}

export interface BackoffOptions {
  initialMs: number;
  maxMs: number;
  /** An incarnation that ran this long resets the backoff. */
  stableMs: number;
}

export const DEFAULT_RESTART_BACKOFF: BackoffOptions = { initialMs: 250, maxMs: 10_000, stableMs: 30_000 };

export class Supervisor {
  private stopped = false;
  private readonly listeners: Array<(restart: ServiceRestart) => void> = [];
  private readonly timers = new Set<NodeJS.Timeout>();

  constructor(
    private readonly logger: Logger,
    private readonly backoff: BackoffOptions = DEFAULT_RESTART_BACKOFF,
  ) {}

  onRestart(listener: (restart: ServiceRestart) => void): void {
    this.listeners.push(listener);
  }

  /** Watches the unit's current incarnation, and every later one. */
  watch(unit: SupervisedUnit, current: Incarnation): void {
    this.follow(unit, current, { failures: 0, restarts: 0 });
  }

  /** No more restarts (the cluster is stopping). */
  stop(): void {
    this.stopped = true;
    for (const t of this.timers) clearTimeout(t);
    this.timers.clear();
  }

  private follow(unit: SupervisedUnit, current: Incarnation, count: { failures: number; restarts: number }): void {
    const began = performance.now();
    void current.exited.then((exit) => {
      if (this.stopped) return;
      const failures = performance.now() - began >= this.backoff.stableMs ? 0 : count.failures + 1;
      this.schedule(unit, exit, { failures, restarts: count.restarts });
    });
  }

  private schedule(unit: SupervisedUnit, exit: ProcessExit, count: { failures: number; restarts: number }): void {
    const delayMs = Math.min(this.backoff.maxMs, this.backoff.initialMs * 2 ** Math.max(0, count.failures - 1));
    this.logger.warn(`${unit.service} exited unexpectedly; restarting it in ${delayMs} ms`, {
      service: unit.service,
      code: exit.code,
      signal: exit.signal,
      delayMs,
    });
    const timer = setTimeout(() => {
      this.timers.delete(timer);
      if (!this.stopped) void this.restart(unit, count);
    }, delayMs);
    this.timers.add(timer);
  }

  private async restart(unit: SupervisedUnit, count: { failures: number; restarts: number }): Promise<void> {
    try {
      const next = await unit.restart();
      if (this.stopped) return;
      const restarts = count.restarts + 1;
      this.logger.info(`${unit.service} restarted`, { service: unit.service, pid: next.pid, restarts });
      for (const l of this.listeners) l({ service: unit.service, pid: next.pid, restarts });
      this.follow(unit, next, { failures: count.failures, restarts });
    } catch (err) {
      if (this.stopped) return;
      this.logger.error(`${unit.service} failed to restart`, { service: unit.service, error: describeError(err) });
      this.schedule(unit, { code: null, signal: null }, { failures: count.failures + 1, restarts: count.restarts });
    }
  }
}

/** Resolves when the child exits (at once when it already has). */
export function exitOf(child: {
  exitCode: number | null;
  signalCode: NodeJS.Signals | null;
  once(event: "exit", l: (code: number | null, signal: NodeJS.Signals | null) => void): unknown;
}): Promise<ProcessExit> {
  if (child.exitCode !== null || child.signalCode !== null)
    return Promise.resolve({ code: child.exitCode, signal: child.signalCode });
  return new Promise((resolve) => child.once("exit", (code, signal) => resolve({ code, signal })));
}
