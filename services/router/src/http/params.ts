/**
 * OpenAI request bodies → domain sampling. Every parameter that would change results is either
 * mapped or refused with a 400 naming it; unknown parameters are refused the same way, so nothing is
 * silently ignored.
 */
import { DEFAULT_SAMPLING, type Sampling } from "../domain/types";
import { badParam } from "./openai-errors";

export type Body = Record<string, unknown>;

/** Parameters accepted with no effect on results. */
const NO_EFFECT = new Set(["user", "store", "metadata", "service_tier", "stream", "stream_options"]);
/** Parameters accepted only at their neutral value (OpenAI's or vLLM's default). */
const NEUTRAL: Record<string, (v: unknown) => boolean> = {
  presence_penalty: (v) => v === 0,
  frequency_penalty: (v) => v === 0,
  repetition_penalty: (v) => v === 1,
  min_p: (v) => v === 0,
  logit_bias: (v) => typeof v === "object" && v !== null && Object.keys(v).length === 0,
  echo: (v) => v === false,
  best_of: (v) => v === 1,
  suffix: (v) => v === "",
  parallel_tool_calls: () => true,
  tools: (v) => Array.isArray(v) && v.length === 0,
  response_format: (v) => typeof v === "object" && v !== null && (v as Body)["type"] === "text",
  include_stop_str_in_output: (v) => v === false,
  skip_special_tokens: (v) => v === true,
};
const SAMPLING_KEYS = [
  "max_tokens",
  "max_completion_tokens",
  "temperature",
  "top_p",
  "top_k",
  "seed",
  "stop",
  "stop_token_ids",
  "min_tokens",
  "ignore_eos",
  "n",
  "logprobs",
  "top_logprobs",
];

/** Refuses any parameter that is neither known nor neutral; `own` are the endpoint's own fields. */
export function refuseUnsupported(body: Body, own: readonly string[]): void {
  for (const [key, value] of Object.entries(body)) {
    if (value === null || value === undefined || own.includes(key) || SAMPLING_KEYS.includes(key)) continue;
    if (NO_EFFECT.has(key)) continue;
    const neutral = NEUTRAL[key];
    if (neutral?.(value)) continue;
    throw badParam(
      key,
      `${key} ${neutral ? "is not supported with this value" : "is not a supported parameter"}`,
      "unsupported_parameter",
    );
  }
}

const present = (body: Body, key: string): boolean => body[key] !== undefined && body[key] !== null;

export function num(body: Body, key: string, min: number, max = Infinity, integer = false): number | undefined {
  if (!present(body, key)) return undefined;
  const v = body[key];
  if (typeof v !== "number" || !Number.isFinite(v) || (integer && !Number.isInteger(v)) || v < min || v > max)
    throw badParam(
      key,
      `${key} must be ${integer ? "an integer" : "a number"} in [${min}, ${max}], got ${JSON.stringify(v)}`,
    );
  return v;
}

export function bool(body: Body, key: string): boolean | undefined {
  if (!present(body, key)) return undefined;
  if (typeof body[key] !== "boolean") throw badParam(key, `${key} must be a boolean`);
  return body[key];
}

export function str(body: Body, key: string): string | undefined {
  if (!present(body, key)) return undefined;
  if (typeof body[key] !== "string") throw badParam(key, `${key} must be a string`);
  return body[key];
}

function stopStrings(body: Body): string[] {
  const v = body["stop"];
  if (!present(body, "stop")) return [];
  const list = typeof v === "string" ? [v] : v;
  if (!Array.isArray(list) || list.some((s) => typeof s !== "string" || s === ""))
    throw badParam("stop", "stop must be a non-empty string or a list of them");
  return list as string[];
}

function tokenIds(body: Body, key: string): number[] {
  const v = body[key];
  if (!present(body, key)) return [];
  if (!Array.isArray(v) || v.some((id) => !Number.isInteger(id) || (id as number) < 0))
    throw badParam(key, `${key} must be a list of token ids`);
  return v as number[];
}

/** Most alternatives per token: the legacy completions API's 5, chat's 20 (as OpenAI and vLLM). */
const MAX_COMPLETION_LOGPROBS = 5;
const MAX_CHAT_LOGPROBS = 20;

/**
 * How many alternatives each token's log-probability lists; undefined when none were asked.
 * Completions: `logprobs: N`; chat: `logprobs: true` with `top_logprobs: N`.
 */
export function logprobsOf(body: Body, chat: boolean): number | undefined {
  if (!chat) {
    if (present(body, "top_logprobs")) throw badParam("top_logprobs", "top_logprobs is a chat parameter; use logprobs");
    return num(body, "logprobs", 0, MAX_COMPLETION_LOGPROBS, true);
  }
  const top = num(body, "top_logprobs", 0, MAX_CHAT_LOGPROBS, true);
  if (!(bool(body, "logprobs") ?? false)) {
    if (top !== undefined) throw badParam("top_logprobs", "top_logprobs requires logprobs: true");
    return undefined;
  }
  return top ?? 0;
}

/** The domain sampling of a request body (chat bodies may use max_completion_tokens). */
export function samplingOf(body: Body, chat = false): Sampling {
  const logprobs = logprobsOf(body, chat);
  const maxTokens = num(body, "max_completion_tokens", 1, 2 ** 31, true) ?? num(body, "max_tokens", 1, 2 ** 31, true);
  const seed = num(body, "seed", -(2 ** 63), 2 ** 64, true);
  return {
    ...DEFAULT_SAMPLING,
    maxTokens: maxTokens ?? 0,
    temperature: num(body, "temperature", 0, 2) ?? 1,
    topP: num(body, "top_p", Number.MIN_VALUE, 1) ?? 1,
    // vLLM's "no top-k" is -1; ours is 0.
    topK: Math.max(0, num(body, "top_k", -1, 2 ** 31, true) ?? 0),
    ...(seed !== undefined ? { seed: seed >>> 0 } : {}),
    stop: stopStrings(body),
    stopTokenIds: tokenIds(body, "stop_token_ids"),
    ignoreEos: bool(body, "ignore_eos") ?? false,
    minTokens: num(body, "min_tokens", 0, 2 ** 31, true) ?? 0,
    ...(logprobs !== undefined ? { logprobs } : {}),
  };
}

/** How many choices per prompt (`n`). */
export const choicesOf = (body: Body): number => num(body, "n", 1, 16, true) ?? 1;

/** Whether the final chunk of a stream carries usage (`stream_options.include_usage`). */
export function includeUsage(body: Body): boolean {
  const o = body["stream_options"];
  if (o === undefined || o === null) return false;
  if (typeof o !== "object") throw badParam("stream_options", "stream_options must be an object");
  const v = (o as Body)["include_usage"];
  if (v !== undefined && typeof v !== "boolean")
    throw badParam("stream_options.include_usage", "include_usage must be a boolean");
  return v === true;
}
