import type { Logger } from "./logging";

export interface ShutdownOptions {
  logger: Logger;
  /** Longest time the cleanup may take before the process exits anyway. */
  timeoutMs?: number;
  /** Signals that start the shutdown. */
  signals?: readonly NodeJS.Signals[];
  /** Ends the process; replaceable for tests. */
  exit?: (code: number) => void;
}

/**
 * Runs `cleanup` once on SIGTERM or SIGINT and then exits: 0 when cleanup finished in time, 1 when it
 * failed or timed out. A second signal during cleanup exits at once with 130.
 * Returns a function that removes the signal handlers.
 */
export function installGracefulShutdown(cleanup: () => Promise<void>, options: ShutdownOptions): () => void {
  const { logger } = options;
  const timeoutMs = options.timeoutMs ?? 10_000;
  const signals = options.signals ?? ["SIGTERM", "SIGINT"];
  const exit = options.exit ?? ((code: number) => process.exit(code));
  let shuttingDown = false;

  const onSignal = (signal: NodeJS.Signals): void => {
    if (shuttingDown) {
      logger.warn("second signal during shutdown, exiting now", { signal });
      exit(130);
      return;
    }
    shuttingDown = true;
    logger.info("shutting down", { signal });
    const timer = setTimeout(() => {
      logger.error("shutdown timed out", { timeoutMs });
      exit(1);
    }, timeoutMs);
    timer.unref();
    cleanup().then(
      () => {
        clearTimeout(timer);
        logger.info("stopped");
        exit(0);
      },
      (err: unknown) => {
        clearTimeout(timer);
        logger.error("shutdown failed", { error: err });
        exit(1);
      },
    );
  };
  for (const signal of signals) process.on(signal, onSignal);
  return () => {
    for (const signal of signals) process.off(signal, onSignal);
  };
}
