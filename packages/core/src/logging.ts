/**
 * Structured logging: one JSON object per line on stderr, so stdout stays free for command output
 * (the CLI prints results and `loramesh ready ...` there).
 */

export type LogLevel = "debug" | "info" | "warn" | "error" | "silent";

const LEVEL_RANK: Record<LogLevel, number> = { debug: 10, info: 20, warn: 30, error: 40, silent: 99 };

export type LogFields = Record<string, unknown>;

export interface Logger {
  debug(message: string, fields?: LogFields): void;
  info(message: string, fields?: LogFields): void;
  warn(message: string, fields?: LogFields): void;
  error(message: string, fields?: LogFields): void;
  /** A logger that adds `fields` to every line. */
  child(fields: LogFields): Logger;
}

export interface LoggerOptions {
  /** Lowest level written; defaults to LOG_LEVEL or "info". */
  level?: LogLevel;
  /** Where lines go; defaults to stderr. */
  write?: (line: string) => void;
  /** Fields on every line (service name, executor id, ...). */
  fields?: LogFields;
}

export function isLogLevel(value: string): value is LogLevel {
  return value in LEVEL_RANK;
}

/** Creates a JSON-lines logger. */
export function createLogger(options: LoggerOptions = {}): Logger {
  const envLevel = process.env["LOG_LEVEL"];
  const level = options.level ?? (envLevel !== undefined && isLogLevel(envLevel) ? envLevel : "info");
  const write = options.write ?? ((line: string) => process.stderr.write(line + "\n"));
  return makeLogger(LEVEL_RANK[level], write, options.fields ?? {});
}

function makeLogger(threshold: number, write: (line: string) => void, base: LogFields): Logger {
  const emit = (level: Exclude<LogLevel, "silent">, message: string, fields?: LogFields): void => {
    if (LEVEL_RANK[level] < threshold) return;
    const record = { time: new Date().toISOString(), level, msg: message, ...base, ...fields };
    write(JSON.stringify(record, jsonSafe));
  };
  return {
    debug: (m, f) => emit("debug", m, f),
    info: (m, f) => emit("info", m, f),
    warn: (m, f) => emit("warn", m, f),
    error: (m, f) => emit("error", m, f),
    child: (fields) => makeLogger(threshold, write, { ...base, ...fields }),
  };
}

// BigInts and Errors do not serialise by default.
function jsonSafe(_key: string, value: unknown): unknown {
  if (typeof value === "bigint") return value.toString();
  if (value instanceof Error) return { name: value.name, message: value.message, stack: value.stack };
  return value;
}
