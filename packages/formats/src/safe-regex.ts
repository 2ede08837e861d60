/**
 * Regexes that come from adapter configs (target_modules, rank_pattern, alpha_pattern,
 * layers_pattern), run by RE2 (re2-wasm): matching is linear in the input, so no pattern can stall
 * the event loop, and patterns are bounded in length. A pattern RE2 refuses (invalid, or a
 * backtracking-only feature such as look-around or back-references) is an AdapterError naming the
 * field.
 */
import { AdapterError } from "@loramesh/errors";
import { RE2 } from "re2-wasm";

/** Longest regex accepted from an adapter config, in characters. */
export const MAX_CONFIG_REGEX_LENGTH = 1024;

/** A compiled config regex: `test` runs in time linear in the name. */
export interface SafeRegex {
  test(text: string): boolean;
}

/** Compiles `source` (already anchored by the caller as needed) for `field`; throws AdapterError. */
export function compileConfigRegex(field: string, source: string, pattern: string = source): SafeRegex {
  if (pattern.length > MAX_CONFIG_REGEX_LENGTH) {
    throw new AdapterError(
      `${field}: the regex is ${pattern.length} characters, above the ${MAX_CONFIG_REGEX_LENGTH}-character limit`,
    );
  }
  try {
    const re = new RE2(source, "u");
    return { test: (text) => re.test(text) };
  } catch (err) {
    // RE2's message names the problem (e.g. "missing )"), and only the pattern, which the caller sent.
    const reason = (err as Error).message.replace(/^Invalid regular expression: \/.*\/u: /s, "");
    throw new AdapterError(`${field}: invalid regex ${JSON.stringify(pattern.slice(0, 80))}: ${reason}`, {
      cause: err,
    });
  }
}
