/**
 * Configuration from command-line flags and environment variables, validated up front. Each option
 * is declared once (flag, environment variable, parser, default, description); `loadConfig` returns
 * a typed object or throws a `ConfigError` that lists every problem, and `formatOptionsHelp` prints
 * the same declarations as help text. Precedence: flag, then environment, then default.
 */
import { ConfigError } from "@loramesh/errors";

/** Declaration of one option producing a value of type T. */
export interface OptionSpec<T> {
  /** Flag name without dashes: `port` is given as `--port 50051` or `--port=50051`. */
  readonly flag: string;
  /** Environment variable that sets it when the flag is absent. */
  readonly env?: string;
  readonly description: string;
  /** Used when neither flag nor environment set it; absent means the option is required. */
  readonly default?: T;
  /** Turns the raw text into a value, or returns a problem description. */
  readonly parse: (raw: string) => { value: T } | { problem: string };
  /** Placeholder shown in help, e.g. `N` or `HOST:PORT`; booleans take no value. */
  readonly valueName?: string;
}

export type OptionSpecs = Record<string, OptionSpec<unknown>>;
export type ConfigOf<S extends OptionSpecs> = { [K in keyof S]: S[K] extends OptionSpec<infer T> ? T : never };

type Base<T> = Omit<OptionSpec<T>, "parse" | "valueName">;

/** `secret`: the value may hold a password or key, so a problem never quotes it. */
export function stringOption(
  spec: Base<string> & { pattern?: RegExp; patternHint?: string; secret?: boolean },
): OptionSpec<string> {
  const { pattern, patternHint, secret, ...rest } = spec;
  return {
    ...rest,
    valueName: "TEXT",
    parse: (raw) =>
      pattern && !pattern.test(raw)
        ? {
            problem: `expected ${patternHint ?? pattern.toString()}, got ${secret ? "a value that is not (not shown: it may hold a secret)" : JSON.stringify(raw)}`,
          }
        : { value: raw },
  };
}

export function intOption(spec: Base<number> & { min?: number; max?: number }): OptionSpec<number> {
  return {
    ...spec,
    valueName: "N",
    parse: (raw) => {
      if (!/^-?\d+$/.test(raw.trim())) return { problem: `expected an integer, got ${JSON.stringify(raw)}` };
      const value = Number(raw);
      if (!Number.isSafeInteger(value)) return { problem: `integer out of range: ${raw}` };
      if (spec.min !== undefined && value < spec.min) return { problem: `must be at least ${spec.min}, got ${value}` };
      if (spec.max !== undefined && value > spec.max) return { problem: `must be at most ${spec.max}, got ${value}` };
      return { value };
    },
  };
}

export function numberOption(spec: Base<number> & { min?: number; max?: number }): OptionSpec<number> {
  return {
    ...spec,
    valueName: "X",
    parse: (raw) => {
      const value = Number(raw);
      if (raw.trim() === "" || !Number.isFinite(value))
        return { problem: `expected a number, got ${JSON.stringify(raw)}` };
      if (spec.min !== undefined && value < spec.min) return { problem: `must be at least ${spec.min}, got ${value}` };
      if (spec.max !== undefined && value > spec.max) return { problem: `must be at most ${spec.max}, got ${value}` };
      return { value };
    },
  };
}

export function booleanOption(spec: Base<boolean>): OptionSpec<boolean> {
  return {
    default: false,
    ...spec,
    parse: (raw) => {
      const v = raw.trim().toLowerCase();
      if (["1", "true", "yes", "on", ""].includes(v)) return { value: true };
      if (["0", "false", "no", "off"].includes(v)) return { value: false };
      return { problem: `expected true or false, got ${JSON.stringify(raw)}` };
    },
  };
}

export function enumOption<const V extends string>(spec: Base<V> & { values: readonly V[] }): OptionSpec<V> {
  return {
    ...spec,
    valueName: spec.values.join("|"),
    parse: (raw) =>
      (spec.values as readonly string[]).includes(raw)
        ? { value: raw as V }
        : { problem: `expected one of ${spec.values.join(", ")}, got ${JSON.stringify(raw)}` },
  };
}

/** `host:port`, `[v6]:port` or `unix:/path`; port 0 asks the OS for a free port. */
export function addressOption(spec: Base<string>): OptionSpec<string> {
  return {
    ...spec,
    valueName: "HOST:PORT",
    parse: (raw) => {
      if (raw.startsWith("unix:") && raw.length > 5) return { value: raw };
      const match = /^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+):(\d{1,5})$/.exec(raw);
      const port = match ? Number(match[2]) : -1;
      if (!match || port > 65535) return { problem: `expected HOST:PORT, got ${JSON.stringify(raw)}` };
      return { value: raw };
    },
  };
}

/** Result of parsing: the typed configuration and the positional arguments left over. */
export interface LoadedConfig<S extends OptionSpecs> {
  config: ConfigOf<S>;
  positionals: string[];
}

/**
 * Parses `argv` (without the node and script entries) and `env` against the declarations. Unknown
 * flags, missing required values and unparsable values are all reported together.
 */
export function loadConfig<S extends OptionSpecs>(
  specs: S,
  argv: readonly string[],
  env: NodeJS.ProcessEnv = process.env,
): LoadedConfig<S> {
  const byFlag = new Map<string, [string, OptionSpec<unknown>]>();
  for (const [key, spec] of Object.entries(specs)) byFlag.set(spec.flag, [key, spec]);

  const problems: string[] = [];
  const rawFromFlags = new Map<string, string>();
  const positionals: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i] as string;
    if (arg === "--") {
      positionals.push(...argv.slice(i + 1));
      break;
    }
    if (!arg.startsWith("--") || arg === "--") {
      positionals.push(arg);
      continue;
    }
    const eq = arg.indexOf("=");
    const name = arg.slice(2, eq >= 0 ? eq : undefined);
    const entry = byFlag.get(name);
    if (!entry) {
      problems.push(`unknown flag --${name}`);
      continue;
    }
    const [key, spec] = entry;
    const isBoolean = spec.valueName === undefined;
    if (eq >= 0) rawFromFlags.set(key, arg.slice(eq + 1));
    else if (isBoolean) rawFromFlags.set(key, "true");
    else if (i + 1 < argv.length) rawFromFlags.set(key, argv[++i] as string);
    else problems.push(`--${name} needs a value (${spec.valueName})`);
  }

  const config: Record<string, unknown> = {};
  for (const [key, spec] of Object.entries(specs)) {
    const fromFlag = rawFromFlags.get(key);
    const fromEnv = spec.env !== undefined ? env[spec.env] : undefined;
    const raw = fromFlag ?? (fromEnv !== undefined && fromEnv !== "" ? fromEnv : undefined);
    const source = fromFlag !== undefined ? `--${spec.flag}` : `$${spec.env ?? ""}`;
    if (raw === undefined) {
      if (spec.default === undefined)
        problems.push(`missing --${spec.flag}${spec.env ? ` (or $${spec.env})` : ""}: ${spec.description}`);
      else config[key] = spec.default;
      continue;
    }
    const parsed = spec.parse(raw);
    if ("problem" in parsed) problems.push(`${source}: ${parsed.problem}`);
    else config[key] = parsed.value;
  }
  if (problems.length > 0) throw new ConfigError(problems);
  return { config: config as ConfigOf<S>, positionals };
}

/** Help text for the declarations: one line per option with its environment variable and default. */
export function formatOptionsHelp(specs: OptionSpecs): string {
  const rows = Object.values(specs).map((spec) => {
    const left = `--${spec.flag}${spec.valueName ? ` ${spec.valueName}` : ""}`;
    const extras = [
      spec.env ? `env ${spec.env}` : undefined,
      spec.default !== undefined && spec.valueName !== undefined
        ? `default ${JSON.stringify(spec.default)}`
        : undefined,
    ].filter((x): x is string => x !== undefined);
    return [left, `${spec.description}${extras.length ? ` (${extras.join("; ")})` : ""}`] as const;
  });
  const width = Math.max(0, ...rows.map(([left]) => left.length));
  return rows.map(([left, right]) => `  ${left.padEnd(width)}  ${right}`).join("\n");
}
