/**
 * Structured logging on pino: one JSON object per line on stderr, so stdout stays free for command
 * output (the CLI prints results and `loramesh ready ...` there), or human-readable lines through
 * pino-pretty (LOG_FORMAT=pretty; `loramesh up` picks it on a terminal). Lines written inside an
 * active OpenTelemetry span carry its `trace_id` and `span_id`.
 */
import { isSpanContextValid, trace } from "@opentelemetry/api";
import { destination, pino, stdTimeFunctions, type DestinationStream, type Logger as PinoLogger } from "pino";
import pretty from "pino-pretty";

export type LogLevel = "debug" | "info" | "warn" | "error" | "silent";

/** How lines are rendered: JSON objects, or coloured human-readable text. */
export type LogFormat = "json" | "pretty";

const LEVELS: readonly LogLevel[] = ["debug", "info", "warn", "error", "silent"];

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
  /** Where lines go (one JSON line per call, no newline); defaults to stderr. */
  write?: (line: string) => void;
  /** Rendering on stderr; defaults to LOG_FORMAT or "json". Ignored when `write` is given. */
  format?: LogFormat;
  /** Fields on every line (service name, executor id, ...). */
  fields?: LogFields;
}

export function isLogLevel(value: string): value is LogLevel {
  return (LEVELS as readonly string[]).includes(value);
}

export function isLogFormat(value: string): value is LogFormat {
  return value === "json" || value === "pretty";
}

/** The trace and span ids of the active span, for every line logged inside one. */
export function traceFields(): LogFields {
  const ctx = trace.getActiveSpan()?.spanContext();
  if (ctx === undefined || !isSpanContextValid(ctx)) return {};
  return { trace_id: ctx.traceId, span_id: ctx.spanId };
}

/** Creates a logger. */
export function createLogger(options: LoggerOptions = {}): Logger {
  const envLevel = process.env["LOG_LEVEL"];
  const level = options.level ?? (envLevel !== undefined && isLogLevel(envLevel) ? envLevel : "info");
  const envFormat = process.env["LOG_FORMAT"];
  const format = options.format ?? (envFormat !== undefined && isLogFormat(envFormat) ? envFormat : "json");
  const root = pino(
    {
      level,
      base: undefined,
      timestamp: stdTimeFunctions.isoTime,
      formatters: { level: (label) => ({ level: label }) },
      mixin: traceFields,
    },
    sink(options.write, format),
  );
  return wrap(root, options.fields ?? {});
}

function sink(write: ((line: string) => void) | undefined, format: LogFormat): DestinationStream {
  if (write) return { write: (chunk: string) => write(chunk.endsWith("\n") ? chunk.slice(0, -1) : chunk) };
  // Synchronous: a process that exits right after logging must not lose the line.
  if (format === "pretty") return pretty({ destination: 2, sync: true, translateTime: "SYS:HH:MM:ss.l" });
  return destination({ dest: 2, sync: true });
}

// Base fields travel with each record (not as pino bindings) so `msg` stays ahead of them on the
// line, as it always has been.
function wrap(root: PinoLogger, base: LogFields): Logger {
  const emit =
    (level: Exclude<LogLevel, "silent">) =>
    (message: string, fields?: LogFields): void => {
      if (!root.isLevelEnabled(level)) return;
      root[level](jsonSafe({ msg: message, ...base, ...fields }));
    };
  return {
    debug: emit("debug"),
    info: emit("info"),
    warn: emit("warn"),
    error: emit("error"),
    child: (fields) => wrap(root, { ...base, ...fields }),
  };
}

// BigInts and Errors do not serialise by default.
function jsonSafe(record: LogFields): LogFields {
  const out: LogFields = {};
  for (const [key, value] of Object.entries(record)) {
    if (typeof value === "bigint") out[key] = value.toString();
    else if (value instanceof Error) out[key] = { name: value.name, message: value.message, stack: value.stack };
    else out[key] = value;
  }
  return out;
}
