import { createLogger, type Logger } from "@loramesh/core";

export interface CapturedLogger extends Logger {
  /** Parsed log records, oldest first. */
  readonly records: Array<Record<string, unknown>>;
}

/** A logger that keeps its records in memory instead of writing them (for assertions). */
export function captureLogger(): CapturedLogger {
  const records: Array<Record<string, unknown>> = [];
  const logger = createLogger({
    level: "debug",
    write: (line) => records.push(JSON.parse(line) as Record<string, unknown>),
  });
  return Object.assign(logger, { records });
}
