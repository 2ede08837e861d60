/**
 * The router's domain vocabulary. The gRPC and HTTP layers map their wire types to and from these;
 * nothing here knows a protobuf message.
 */

/** How tokens are chosen; zero values mean the worker's defaults (greedy, its token budget). */
export interface Sampling {
  maxTokens: number;
  temperature: number;
  topP: number;
  topK: number;
  seed?: number;
  stop: string[];
  stopTokenIds: number[];
  ignoreEos: boolean;
  /** Tokens generated before end-of-sequence, stop ids or stop strings may end the sequence. */
  minTokens: number;
  /** Log-probabilities: undefined computes none; N gives each token's and its N most likely alternatives. */
  logprobs?: number;
}

export const DEFAULT_SAMPLING: Sampling = {
  maxTokens: 0,
  temperature: 0,
  topP: 0,
  topK: 0,
  stop: [],
  stopTokenIds: [],
  ignoreEos: false,
  minTokens: 0,
};

export interface ChatMessage {
  role: string;
  content: string;
}

/** A prompt: text (optionally as one user chat turn), token ids, or a chat conversation. */
export type Prompt =
  | { kind: "text"; text: string; chatTemplate?: boolean }
  | { kind: "tokens"; ids: number[] }
  | { kind: "chat"; messages: ChatMessage[] };

export type SloClass = "unspecified" | "interactive" | "standard" | "batch";

export interface GenerationRequest {
  requestId: string;
  /** Adapter name within the tenant; empty for the base model. */
  adapter: string;
  prompt: Prompt | undefined;
  sampling: Sampling;
  sloClass: SloClass;
  /** Tokens an earlier call already streamed to the client: generation continues after them. */
  resumeTokenIds?: number[];
}

export type FinishReason = "eos" | "stop" | "length" | "cancelled" | "error";

export interface Usage {
  promptTokens: number;
  completionTokens: number;
}

export interface Timings {
  queueMs: number;
  timeToFirstTokenMs: number;
  timePerOutputTokenMs: number;
  totalMs: number;
}

/** Tokens and text produced since the previous delta. */
export interface TokenDelta {
  tokenIds: number[];
  text: string;
  /** One per token id when the request asked for logprobs. */
  logprobs?: TokenLogprob[];
}

/** A candidate token and its log-probability (log-softmax of the raw logits). */
export interface TopLogprob {
  tokenId: number;
  logprob: number;
}

/** A generated token's log-probability and the most likely tokens at its position (most likely first). */
export interface TokenLogprob extends TopLogprob {
  top: TopLogprob[];
}

export interface GenerationResult {
  requestId: string;
  finishReason: FinishReason;
  usage: Usage;
  timings: Timings;
}

/** How a caller follows and ends one generation. */
export interface GenerationControl {
  /** Aborting it cancels the sequence on its worker (its KV blocks are freed). */
  signal?: AbortSignal;
  /** Absolute deadline passed on to the worker. */
  deadline?: Date | number;
  onDelta?: (delta: TokenDelta) => void;
}

export type AdapterState = "unspecified" | "registered" | "loading" | "ready" | "failed";

/** A registered adapter as its tenant sees it. */
export interface AdapterRecord {
  name: string;
  tenant: string;
  rank: number;
  alpha: number;
  targetModules: string[];
  sizeBytes: number;
  contentHash: string;
  /** Directory the adapter was registered from; undefined when none was recorded. */
  localDir: string | undefined;
  /** Remote source (hf://, s3://, http(s)://) it was registered from; undefined for a directory. */
  uri: string | undefined;
  state: AdapterState;
  error: string;
  createdUnixMs: number;
  adapterId: string;
}

export interface AdapterPage {
  adapters: AdapterRecord[];
  nextPageToken: string;
}

export type JobState = "unspecified" | "waiting" | "active" | "delayed" | "completed" | "failed";

/** Progress of one adapter load, unload or migrate job. */
export interface LoadJob {
  jobId: string;
  kind: string;
  adapterId: string;
  executorId: string;
  state: JobState;
  progress: number;
  attempts: number;
  error: string;
  permanentFailure: boolean;
}

/** Where a registration's files come from: a directory on the provisioner's host, or a remote source. */
export type AdapterSourceRef = { localDir: string } | { uri: string };

/** A source string as users write it: a URI with a scheme is remote, anything else a directory. */
export function adapterSourceRef(source: string): AdapterSourceRef {
  return /^[a-z][a-z0-9+.-]*:\/\//i.test(source) ? { uri: source } : { localDir: source };
}
