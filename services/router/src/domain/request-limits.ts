/**
 * Bounds on every field of a generation request, checked before the router does any work for it
 * (no tokenizing, no Redis, no worker): each breach is an InvalidArgumentError naming the field.
 * Checks cost O(fields), plus one byte count of the prompt, so an oversize request is refused
 * without holding the event loop. The worker still checks what only it knows (the vocabulary, the
 * sequence length, the sampling values).
 */
import { InvalidArgumentError } from "@loramesh/errors";
import type { GenerationRequest, Prompt, Sampling } from "./types";

export const REQUEST_LIMITS = Object.freeze({
  /** request_id: printable ASCII, no spaces. */
  maxRequestIdLength: 128,
  /** Adapter names are 1-128 characters (the provisioner's rule). */
  maxAdapterNameLength: 128,
  /** UTF-8 bytes of a text prompt, or of all chat messages together. */
  maxPromptBytes: 1024 * 1024,
  /** Token ids of a pre-tokenized prompt. */
  maxPromptTokens: 256 * 1024,
  maxChatMessages: 1024,
  maxTokens: 256 * 1024,
  maxStopStrings: 16,
  /** UTF-8 bytes of one stop string. */
  maxStopStringBytes: 256,
  maxStopTokenIds: 256,
  /** Largest temperature; NaN and negative values are refused too. */
  maxTemperature: 1000,
  maxTopK: 1 << 20,
  /** ListAdapters page_token (an offset the provisioner hands out). */
  maxPageTokenLength: 32,
  /** RegisterAdapter source: a local directory or a remote URI. */
  maxSourceLength: 4096,
});

const REQUEST_ID = /^[\x21-\x7e]+$/;

function fail(message: string): never {
  throw new InvalidArgumentError(message);
}

function checkPrompt(prompt: Prompt | undefined): void {
  if (prompt === undefined) return; // the encoder names a missing prompt
  const L = REQUEST_LIMITS;
  if (prompt.kind === "tokens") {
    if (prompt.ids.length > L.maxPromptTokens)
      fail(`prompt.token_ids has ${prompt.ids.length} ids, above the limit of ${L.maxPromptTokens}`);
    return;
  }
  let bytes: number;
  if (prompt.kind === "text") bytes = Buffer.byteLength(prompt.text, "utf8");
  else {
    if (prompt.messages.length > L.maxChatMessages)
      fail(`messages has ${prompt.messages.length} entries, above the limit of ${L.maxChatMessages}`);
    bytes = prompt.messages.reduce((n, m) => n + Buffer.byteLength(m.content, "utf8") + m.role.length, 0);
  }
  if (bytes > L.maxPromptBytes) fail(`prompt is ${bytes} bytes, above the limit of ${L.maxPromptBytes}`);
}

function checkSampling(s: Sampling): void {
  const L = REQUEST_LIMITS;
  if (!Number.isInteger(s.maxTokens) || s.maxTokens < 0 || s.maxTokens > L.maxTokens)
    fail(`sampling.max_tokens must be an integer from 0 to ${L.maxTokens}, got ${s.maxTokens}`);
  if (!(s.temperature >= 0 && s.temperature <= L.maxTemperature))
    fail(`sampling.temperature must be a number from 0 to ${L.maxTemperature}, got ${s.temperature}`);
  if (!(s.topP >= 0 && s.topP <= 1)) fail(`sampling.top_p must be a number from 0 to 1, got ${s.topP}`);
  if (!Number.isInteger(s.topK) || s.topK < 0 || s.topK > L.maxTopK)
    fail(`sampling.top_k must be an integer from 0 to ${L.maxTopK}, got ${s.topK}`);
  if (s.seed !== undefined && !(Number.isSafeInteger(s.seed) && s.seed >= 0))
    fail(`sampling.seed must be an integer from 0 to 2^53-1`);
  if (s.stop.length > L.maxStopStrings)
    fail(`sampling.stop has ${s.stop.length} strings, above the limit of ${L.maxStopStrings}`);
  const long = s.stop.findIndex((x) => Buffer.byteLength(x, "utf8") > L.maxStopStringBytes);
  if (long >= 0) fail(`sampling.stop[${long}] is longer than ${L.maxStopStringBytes} bytes`);
  if (s.stopTokenIds.length > L.maxStopTokenIds)
    fail(`sampling.stop_token_ids has ${s.stopTokenIds.length} ids, above the limit of ${L.maxStopTokenIds}`);
  if (!Number.isInteger(s.minTokens) || s.minTokens < 0 || s.minTokens > L.maxTokens)
    fail(`sampling.min_tokens must be an integer from 0 to ${L.maxTokens}, got ${s.minTokens}`);
}

/** Throws InvalidArgumentError for the first field of `request` outside its limit. */
export function checkRequestLimits(request: GenerationRequest): void {
  const L = REQUEST_LIMITS;
  const id = request.requestId;
  if (id.length > L.maxRequestIdLength || !REQUEST_ID.test(id))
    fail(`request_id must be 1 to ${L.maxRequestIdLength} printable ASCII characters without spaces`);
  if (request.adapter.length > L.maxAdapterNameLength)
    fail(`adapter name is longer than ${L.maxAdapterNameLength} characters`);
  checkPrompt(request.prompt);
  checkSampling(request.sampling);
  const resumed = request.resumeTokenIds?.length ?? 0;
  const budget = request.sampling.maxTokens > 0 ? request.sampling.maxTokens : L.maxTokens;
  if (resumed > budget)
    fail(`resume_token_ids has ${resumed} ids, more than the ${budget} tokens sampling.max_tokens allows`);
}

/**
 * Bounds on the adapter-management calls (register, get, list, delete, watch): the name, the page
 * token and the source, before the router asks the provisioner. The value is never echoed back.
 */
export function checkAdapterCallLimits(fields: { name?: string; pageToken?: string; source?: string }): void {
  const L = REQUEST_LIMITS;
  if (fields.name !== undefined && fields.name.length > L.maxAdapterNameLength)
    fail(`adapter name is longer than ${L.maxAdapterNameLength} characters`);
  if (fields.pageToken !== undefined && fields.pageToken.length > L.maxPageTokenLength)
    fail(`page_token is longer than ${L.maxPageTokenLength} characters`);
  if (fields.source !== undefined && fields.source.length > L.maxSourceLength)
    fail(`source is longer than ${L.maxSourceLength} characters`);
}
