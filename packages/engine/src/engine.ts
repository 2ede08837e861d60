/**
 * The inference engine: iteration-level (continuous) batching over a paged KV cache. Each step takes
 * every running sequence's next token (decode) plus prompt chunks of sequences still in prefill, up
 * to a token budget, runs one forward pass, samples, and streams tokens to each sequence's
 * listener. Sequences join and leave between steps; a finished or cancelled sequence frees its KV
 * blocks at once. When the cache runs out, the newest running sequence is preempted (its blocks
 * freed, its tokens recomputed later). With the prefix cache on, a sequence starts from the cached
 * full blocks of its prompt computed under the same weights (see prefix-cache.ts).
 */
import { randomUUID } from "node:crypto";
import {
  AlreadyExistsError,
  InvalidArgumentError,
  NotFoundError,
  ResourceExhaustedError,
  describeError,
} from "@loramesh/errors";
import { type Logger } from "@loramesh/core";
import { forward, type ForwardSequence } from "./forward";
import { KvCache } from "./kv-cache";
import { BASE_PREFIX_KEY, extendBlockHashes, PrefixCache, type PrefixCacheStats } from "./prefix-cache";
import { LoraAdaptersUnavailableError, type LoraBackend } from "./lora-backend";
import { Model } from "./model";
import { Sampler, samplingOptions, tokenLogprob, type SamplingOptions, type TokenLogprob } from "./sampling";
import { Tokenizer, type IncrementalDecoder } from "@loramesh/formats";

export type FinishReason = "eos" | "stop" | "length" | "cancelled";

export interface EngineOptions {
  /** KV-cache blocks (each holds blockSize positions of every layer). Default: 256 MiB of cache. */
  kvBlocks?: number;
  /** Positions per KV block. */
  blockSize?: number;
  /** Most tokens fed in one step (prefill chunks are cut to fit). */
  maxBatchTokens?: number;
  /** Most sequences decoding at once. */
  maxRunning?: number;
  /** LoRA backend; none means base model only. */
  lora?: LoraBackend;
  /**
   * Reuse KV blocks of prompt prefixes computed earlier under the same weights (default on). An
   * adapter whose content hash the backend cannot tell is never cached.
   */
  prefixCache?: boolean;
  /**
   * Wraps every forward pass (tracing and metrics hook): gets the ids of the batch's sequences and
   * the number of tokens fed, and must call `run`.
   */
  stepHook?: <T>(sequenceIds: readonly string[], tokens: number, run: () => Promise<T>) => Promise<T>;
  /**
   * Told after every step that ran a batch: its shape and the loop's period for it (the forward
   * pass, sampling, the tokens' callbacks and the I/O let in before the next step), which is what
   * a decoding sequence waits between two tokens.
   */
  stepObserver?: (step: StepTiming) => void;
  logger?: Logger;
}

/** One engine step as the loop ran it. */
export interface StepTiming {
  /** Sequences in the batch. */
  sequences: number;
  /** Tokens fed: one per decoding sequence plus the prefill chunks. */
  tokens: number;
  /** Prompt tokens among them (prefill chunks). */
  prefillTokens: number;
  /** Sequences that ended in the step (their final message and release ride on its period). */
  finished: number;
  /** Each batch sequence's adapter (undefined: the base model), in batch order. */
  adapters: ReadonlyArray<string | undefined>;
  /** Microseconds from the step's start to the next step's earliest start. */
  periodUs: number;
  /**
   * Microseconds of the forward pass alone (laying out the step, the native step with its LoRA
   * sites, the logits back), without sampling, the tokens' callbacks and the loop's turn.
   */
  forwardUs: number;
  /**
   * Of `forwardUs`, the wait for the native step (its promise included); the rest is the forward
   * pass's JavaScript: laying out the step, its LoRA site backends, the logits back.
   */
  nativeUs: number;
  /** When the step started (ms since the epoch, `performance.timeOrigin` based). */
  startedAtMs: number;
}

export interface SequenceRequest {
  id?: string;
  promptIds: readonly number[];
  adapterId?: string;
  sampling?: Partial<SamplingOptions>;
}

export interface SequenceUpdate {
  /** Tokens generated since the previous update. */
  tokenIds: number[];
  /** Text that became complete with them. */
  text: string;
  /** One per token id when the sequence asked for logprobs. */
  logprobs?: TokenLogprob[];
}

export interface SequenceResult {
  id: string;
  tokenIds: number[];
  text: string;
  finishReason: FinishReason;
  promptTokens: number;
  /** Prompt tokens whose KV came from the prefix cache at admission. */
  cachedPromptTokens: number;
  timings: { queueMs: number; timeToFirstTokenMs: number; timePerOutputTokenMs: number; totalMs: number };
}

export interface SequenceHandle {
  readonly id: string;
  readonly result: Promise<SequenceResult>;
  /** Ends the sequence and frees its cache; the result resolves with finishReason "cancelled". */
  cancel(): void;
}

export interface EngineStats {
  running: number;
  waiting: number;
  kvBlocksUsed: number;
  kvBlocksTotal: number;
  steps: number;
  generatedTokens: number;
  finished: number;
  cancelled: number;
  /** Sequences pushed back to the queue to free KV blocks (recomputed later). */
  preempted: number;
  /** Idle blocks kept by the prefix cache (not counted in kvBlocksUsed). */
  kvBlocksCached: number;
  /** Undefined when the prefix cache is off. */
  prefixCache: PrefixCacheStats | undefined;
}

type Mode = "generate" | "score";

class Sequence {
  readonly tokens: number[];
  readonly generated: number[] = [];
  readonly blockTable: number[] = [];
  /** Tokens whose KV entries are in the cache. */
  computed = 0;
  /** Prefix-cache key (base or the adapter's content hash); undefined: never cached. */
  prefixKey: string | undefined;
  /** Hash chain of the full blocks of `tokens` computed so far. */
  readonly blockHashes: string[] = [];
  /** Leading blocks of the table already indexed in the prefix cache. */
  indexedBlocks = 0;
  /** Prompt tokens found cached at first admission; undefined before it. */
  cachedTokens: number | undefined;
  state: "waiting" | "running" | "done" = "waiting";
  cancelled = false;
  readonly arrival = performance.now();
  firstTokenAt: number | undefined;
  startedAt: number | undefined;
  readonly scoreRows: Float32Array[] = [];
  text = "";
  settle!: (r: SequenceResult) => void;
  fail!: (e: unknown) => void;

  constructor(
    readonly id: string,
    readonly promptLength: number,
    prompt: readonly number[],
    readonly adapterId: string | undefined,
    readonly mode: Mode,
    readonly sampler: Sampler,
    readonly decoder: IncrementalDecoder | undefined,
    readonly onUpdate: ((u: SequenceUpdate) => void) | undefined,
  ) {
    this.tokens = [...prompt];
  }
}

export class Engine {
  readonly cache: KvCache;
  private readonly waiting: Sequence[] = [];
  private readonly running: Sequence[] = [];
  private readonly byId = new Map<string, Sequence>();
  private looping = false;
  private readonly maxBatchTokens: number;
  private readonly maxRunning: number;
  private counters = { steps: 0, generatedTokens: 0, finished: 0, cancelled: 0, preempted: 0 };

  constructor(
    readonly model: Model,
    readonly tokenizer: Tokenizer | undefined,
    private readonly options: EngineOptions = {},
  ) {
    const c = model.config;
    const blockSize = options.blockSize ?? 16;
    const bytesPerBlock = blockSize * c.numLayers * 2 * c.numKvHeads * c.headDim * 4;
    const blocks = options.kvBlocks ?? Math.max(16, Math.floor((256 * 1024 * 1024) / bytesPerBlock));
    const prefix = options.prefixCache === false ? undefined : new PrefixCache();
    this.cache = new KvCache(c.numLayers, blocks, blockSize, c.numKvHeads, c.headDim, prefix);
    this.maxBatchTokens = options.maxBatchTokens ?? 512;
    this.maxRunning = options.maxRunning ?? 64;
  }

  /** Loads a Hugging Face model directory (config, safetensors weights, tokenizer). */
  static load(dir: string, options: EngineOptions = {}): Engine {
    const model = Model.load(dir);
    return new Engine(model, Tokenizer.load(dir, model.config.eosTokenIds), options);
  }

  get lora(): LoraBackend | undefined {
    return this.options.lora;
  }

  /** Longest prompt + generation a sequence may have. */
  get maxSequenceLength(): number {
    return Math.min(this.model.config.maxPositionEmbeddings, this.cache.numBlocks * this.cache.blockSize);
  }

  /** Queues a generation; tokens stream to `onUpdate`, the handle's result resolves at the end. */
  submit(request: SequenceRequest, onUpdate?: (u: SequenceUpdate) => void): SequenceHandle {
    const sampling = samplingOptions(request.sampling);
    this.validatePrompt(request, sampling.maxTokens);
    const seq = new Sequence(
      request.id ?? randomUUID(),
      request.promptIds.length,
      request.promptIds,
      request.adapterId,
      "generate",
      new Sampler(sampling),
      this.tokenizer?.incremental(),
      onUpdate,
    );
    return this.enqueue(seq);
  }

  /** Teacher-forced logits: one row of next-token logits per position of `ids`. */
  async score(ids: readonly number[], adapterId?: string): Promise<Float32Array[]> {
    this.validatePrompt({ promptIds: ids, ...(adapterId !== undefined ? { adapterId } : {}) }, 0);
    const seq = new Sequence(
      randomUUID(),
      ids.length,
      ids,
      adapterId,
      "score",
      new Sampler(samplingOptions({ seed: 0 })),
      undefined,
      undefined,
    );
    await this.enqueue(seq).result;
    const V = this.model.config.vocabSize;
    const all = concat(seq.scoreRows);
    return Array.from({ length: ids.length }, (_, i) => all.slice(i * V, (i + 1) * V));
  }

  cancel(id: string): boolean {
    const seq = this.byId.get(id);
    return seq !== undefined && this.cancelSequence(seq);
  }

  // Cancels this very sequence (a handle never reaches another sequence that reuses its id).
  private cancelSequence(seq: Sequence): boolean {
    if (seq.state === "done") return false;
    seq.cancelled = true;
    if (seq.state === "waiting") this.finish(seq, "cancelled");
    return true;
  }

  stats(): EngineStats {
    return {
      running: this.running.length,
      waiting: this.waiting.length,
      kvBlocksUsed: this.cache.usedBlocks,
      kvBlocksTotal: this.cache.numBlocks,
      ...this.counters,
      kvBlocksCached: this.cache.cachedBlocks,
      prefixCache: this.cache.prefix?.stats(),
    };
  }

  private validatePrompt(request: SequenceRequest, maxTokens: number): void {
    const ids = request.promptIds;
    if (ids.length === 0) throw new InvalidArgumentError("the prompt is empty");
    const vocab = this.model.config.vocabSize;
    const bad = ids.findIndex((id) => !Number.isInteger(id) || id < 0 || id >= vocab);
    if (bad >= 0)
      throw new InvalidArgumentError(
        `token id ${ids[bad]} at position ${bad} is outside the vocabulary (0..${vocab - 1})`,
      );
    const stops = request.sampling?.stopTokenIds ?? [];
    const badStop = stops.findIndex((id) => !Number.isInteger(id) || id < 0 || id >= vocab);
    if (badStop >= 0)
      throw new InvalidArgumentError(
        `stop_token_ids[${badStop}] = ${stops[badStop]} is outside the vocabulary (0..${vocab - 1})`,
      );
    if (ids.length + maxTokens > this.maxSequenceLength) {
      throw new InvalidArgumentError(
        `prompt of ${ids.length} tokens plus max_tokens ${maxTokens} exceeds the maximum sequence length ${this.maxSequenceLength}`,
      );
    }
    if (request.adapterId !== undefined && !this.options.lora?.has(request.adapterId)) {
      throw new NotFoundError(`adapter ${request.adapterId} is not loaded`);
    }
  }

  private enqueue(seq: Sequence): SequenceHandle {
    const result = new Promise<SequenceResult>((resolve, reject) => {
      seq.settle = resolve;
      seq.fail = reject;
    });
    const live = this.byId.get(seq.id);
    if (live !== undefined && live.state !== "done")
      throw new AlreadyExistsError(`a sequence with id ${JSON.stringify(seq.id.slice(0, 200))} is already running`);
    seq.prefixKey = this.prefixKey(seq.adapterId);
    this.byId.set(seq.id, seq);
    this.waiting.push(seq);
    this.kick();
    return { id: seq.id, result, cancel: () => void this.cancelSequence(seq) };
  }

  private kick(): void {
    if (this.looping) return;
    this.looping = true;
    void this.loop();
  }

  private async loop(): Promise<void> {
    try {
      while (this.waiting.length > 0 || this.running.length > 0) {
        const start = performance.now();
        const shape = await this.step();
        // Let I/O (new requests, cancellations) in between steps.
        await new Promise((r) => setImmediate(r));
        if (shape)
          this.options.stepObserver?.({
            ...shape,
            periodUs: (performance.now() - start) * 1000,
            startedAtMs: performance.timeOrigin + start,
          });
      }
    } finally {
      this.looping = false;
    }
  }

  /** Runs one step; returns the shape of the batch it ran, if any. */
  private async step(): Promise<Omit<StepTiming, "periodUs" | "startedAtMs"> | undefined> {
    // Drop cancelled sequences before building the batch.
    for (const seq of [...this.running]) if (seq.cancelled) this.finish(seq, "cancelled");
    while (this.waiting.length > 0 && this.running.length < this.maxRunning) {
      const seq = this.waiting[0] as Sequence;
      this.attachCachedPrefix(seq);
      if (!this.cache.ensure(seq.blockTable, Math.min(seq.tokens.length, seq.computed + this.maxBatchTokens))) {
        this.cache.release(seq.blockTable);
        seq.computed = 0;
        seq.indexedBlocks = 0;
        break;
      }
      this.waiting.shift();
      seq.state = "running";
      seq.startedAt ??= performance.now();
      this.running.push(seq);
    }
    if (this.running.length === 0) {
      const stuck = this.waiting.shift();
      if (stuck) this.fail(stuck, new ResourceExhaustedError("the KV cache is too small for this sequence"));
      return undefined;
    }

    // Decode tokens first, then prefill chunks, within the token budget.
    let budget = this.maxBatchTokens;
    const batch: Array<{ seq: Sequence; input: ForwardSequence }> = [];
    const ordered = [...this.running].sort(
      (a, b) => Number(a.tokens.length - a.computed > 1) - Number(b.tokens.length - b.computed > 1),
    );
    for (const seq of ordered) {
      if (seq.state !== "running" || budget === 0) continue;
      const pending = seq.tokens.length - seq.computed;
      const n = Math.min(pending, budget);
      if (
        !this.reserve(
          seq,
          seq.computed + n,
          batch.map((b) => b.seq),
        )
      )
        continue;
      const completes = seq.computed + n === seq.tokens.length;
      batch.push({
        seq,
        input: {
          tokens: seq.tokens.slice(seq.computed, seq.computed + n),
          startPosition: seq.computed,
          blockTable: seq.blockTable,
          adapterId: seq.adapterId,
          logits: seq.mode === "score" ? "all" : completes ? "last" : "none",
        },
      });
      budget -= n;
    }
    if (batch.length === 0) return undefined;
    // A decode feeds the one token it sampled last (counted before this step samples another).
    const decodes = batch.filter((b) => b.input.tokens.length === 1 && b.seq.generated.length > 0).length;

    let logits: Float32Array[];
    const forwardStart = performance.now();
    const timing = { nativeUs: 0 };
    try {
      const inputs = batch.map((b) => b.input);
      const run = () => forward(this.model, this.cache, this.options.lora, inputs, { timing });
      const hook = this.options.stepHook;
      const tokens = inputs.reduce((n, x) => n + x.tokens.length, 0);
      logits = hook
        ? await hook(
            batch.map((b) => b.seq.id),
            tokens,
            run,
          )
        : await run();
    } catch (err) {
      // Adapters the LoRA backend cannot serve fail only their own sequences; the others did not
      // advance (their KV positions are written again) and run in the next step.
      const lost = err instanceof LoraAdaptersUnavailableError ? err.adapterIds : [];
      const failing = batch.filter(({ seq }) => seq.adapterId !== undefined && lost.includes(seq.adapterId));
      this.options.logger?.error("forward pass failed", { error: describeError(err), sequences: failing.length });
      for (const { seq } of failing.length > 0 ? failing : batch) this.fail(seq, err);
      return undefined;
    }
    const forwardUs = (performance.now() - forwardStart) * 1000;
    this.counters.steps++;
    batch.forEach(({ seq, input }, i) => {
      if (seq.state !== "running") return;
      seq.computed += input.tokens.length;
      this.indexFullBlocks(seq);
      const rows = logits[i] as Float32Array;
      if (seq.mode === "score") {
        seq.scoreRows.push(rows);
        if (seq.computed === seq.tokens.length) this.finish(seq, "length");
        return;
      }
      if (seq.cancelled) return this.finish(seq, "cancelled");
      if (seq.computed === seq.tokens.length) this.advance(seq, rows);
    });
    const tokens = batch.reduce((n, b) => n + b.input.tokens.length, 0);
    const finished = batch.filter((b) => b.seq.state === "done").length;
    return {
      sequences: batch.length,
      tokens,
      prefillTokens: tokens - decodes,
      finished,
      adapters: batch.map((b) => b.seq.adapterId),
      forwardUs,
      nativeUs: timing.nativeUs,
    };
  }

  /**
   * Makes room for `tokens` positions, preempting the newest sequence that is not already in this
   * step's batch. False when the sequence must sit this step out (or failed: it can never fit).
   */
  private reserve(seq: Sequence, tokens: number, inBatch: readonly Sequence[]): boolean {
    while (!this.cache.ensure(seq.blockTable, tokens)) {
      const victim = [...this.running]
        .reverse()
        .find((s) => s !== seq && s.state === "running" && !inBatch.includes(s));
      if (victim) {
        this.preempt(victim);
        continue;
      }
      if (inBatch.length === 0) {
        this.fail(
          seq,
          new ResourceExhaustedError(`the KV cache cannot hold ${tokens} positions for sequence ${seq.id}`),
        );
      }
      return false;
    }
    return true;
  }

  /** The adapter's (or the base's) prefix-cache key, fixed at submission. */
  private prefixKey(adapterId: string | undefined): string | undefined {
    if (!this.cache.prefix) return undefined;
    if (adapterId === undefined) return BASE_PREFIX_KEY;
    const hash = this.options.lora?.contentHash?.(adapterId);
    return hash ? `adapter:${hash}` : undefined;
  }

  /**
   * Starts a sequence that holds no blocks from the longest cached run of its full blocks. The last
   * token is always computed (its logits are needed); scoring needs every position's, so it never
   * starts from the cache.
   */
  private attachCachedPrefix(seq: Sequence): void {
    const prefix = this.cache.prefix;
    if (!prefix || seq.prefixKey === undefined || seq.blockTable.length > 0) return;
    const bs = this.cache.blockSize;
    const reusable = seq.mode === "score" ? 0 : Math.floor((seq.tokens.length - 1) / bs);
    extendBlockHashes(seq.blockHashes, seq.prefixKey, seq.tokens, bs, reusable);
    const blocks = prefix.match(seq.blockHashes.slice(0, reusable));
    this.cache.share(seq.blockTable, blocks);
    seq.computed = blocks.length * bs;
    seq.indexedBlocks = blocks.length;
    if (seq.cachedTokens === undefined) {
      seq.cachedTokens = seq.computed;
      prefix.record(seq.adapterId ?? BASE_PREFIX_KEY, seq.promptLength, seq.computed);
    }
  }

  /** Indexes the sequence's blocks that became full with KV entries. */
  private indexFullBlocks(seq: Sequence): void {
    const prefix = this.cache.prefix;
    if (!prefix || seq.prefixKey === undefined) return;
    const bs = this.cache.blockSize;
    const full = Math.floor(seq.computed / bs);
    if (full <= seq.indexedBlocks) return;
    extendBlockHashes(seq.blockHashes, seq.prefixKey, seq.tokens, bs, full);
    for (let i = seq.indexedBlocks; i < full; i++)
      prefix.register(seq.blockTable[i] as number, seq.blockHashes[i] as string);
    seq.indexedBlocks = full;
  }

  private preempt(seq: Sequence): void {
    this.cache.release(seq.blockTable);
    seq.computed = 0;
    seq.indexedBlocks = 0;
    seq.state = "waiting";
    this.running.splice(this.running.indexOf(seq), 1);
    this.waiting.unshift(seq);
    this.counters.preempted++;
    this.options.logger?.debug("preempted a sequence for KV space", { id: seq.id });
  }

  private advance(seq: Sequence, logits: Float32Array): void {
    const opts = seq.sampler.options;
    const early = seq.generated.length < opts.minTokens;
    // Before min_tokens, tokens that would end the sequence cannot be chosen.
    if (early)
      for (const id of [...opts.stopTokenIds, ...this.eosIds()]) if (id < logits.length) logits[id] = -Infinity;
    const token = seq.sampler.sample(logits);
    // Only computed when asked: a pass over the vocabulary per token.
    const logprobs = opts.logprobs !== undefined ? { logprobs: [tokenLogprob(logits, token, opts.logprobs)] } : {};
    seq.firstTokenAt ??= performance.now();
    if (!early && opts.stopTokenIds.includes(token)) return this.finish(seq, "stop");
    if (!early && !opts.ignoreEos && this.isEos(token)) return this.finish(seq, "eos");
    seq.generated.push(token);
    seq.tokens.push(token);
    this.counters.generatedTokens++;
    seq.decoder?.push([token]);
    const full = seq.decoder?.fullText ?? "";
    const stopAt = early ? -1 : firstStop(full, opts.stop);
    if (stopAt >= 0) {
      // The stop string and anything after it are not part of the output.
      const delta = full.slice(seq.text.length, stopAt);
      seq.text = full.slice(0, stopAt);
      seq.onUpdate?.({ tokenIds: [token], text: delta, ...logprobs });
      return this.finish(seq, "stop");
    }
    // Hold back a split UTF-8 character and any suffix that may be the start of a stop string.
    let safeEnd = full.endsWith("\uFFFD") ? full.length - 1 : full.length;
    safeEnd -= stopPrefixLength(full.slice(0, safeEnd), opts.stop);
    const delta = full.slice(seq.text.length, Math.max(safeEnd, seq.text.length));
    seq.text += delta;
    seq.onUpdate?.({ tokenIds: [token], text: delta, ...logprobs });
    if (seq.generated.length >= opts.maxTokens) this.finish(seq, "length");
  }

  private isEos(token: number): boolean {
    return this.eosIds().includes(token);
  }

  private eosIds(): number[] {
    return this.tokenizer?.eosTokenIds ?? this.model.config.eosTokenIds;
  }

  private finish(seq: Sequence, reason: FinishReason): void {
    if (seq.state === "done") return;
    this.detach(seq);
    if (reason !== "stop" && seq.decoder) {
      const rest = seq.decoder.fullText.slice(seq.text.length);
      if (rest) {
        seq.text += rest;
        seq.onUpdate?.({ tokenIds: [], text: rest });
      }
    }
    if (reason === "cancelled") this.counters.cancelled++;
    this.counters.finished++;
    const now = performance.now();
    const first = seq.firstTokenAt ?? now;
    const n = seq.generated.length;
    seq.settle({
      id: seq.id,
      tokenIds: [...seq.generated],
      text: seq.text,
      finishReason: reason,
      promptTokens: seq.promptLength,
      cachedPromptTokens: seq.cachedTokens ?? 0,
      timings: {
        queueMs: (seq.startedAt ?? now) - seq.arrival,
        timeToFirstTokenMs: first - seq.arrival,
        timePerOutputTokenMs: n > 1 ? (now - first) / (n - 1) : 0,
        totalMs: now - seq.arrival,
      },
    });
  }

  private fail(seq: Sequence, err: unknown): void {
    if (seq.state === "done") return;
    this.detach(seq);
    seq.fail(err instanceof Error ? err : new Error(String(err)));
  }

  private detach(seq: Sequence): void {
    const r = this.running.indexOf(seq);
    if (r >= 0) this.running.splice(r, 1);
    const w = this.waiting.indexOf(seq);
    if (w >= 0) this.waiting.splice(w, 1);
    this.cache.release(seq.blockTable);
    seq.state = "done";
    if (this.byId.get(seq.id) === seq) this.byId.delete(seq.id);
  }
}

function firstStop(text: string, stops: readonly string[]): number {
  let best = -1;
  for (const s of stops) {
    const i = text.indexOf(s);
    if (i >= 0 && (best < 0 || i < best)) best = i;
  }
  return best;
}

/** Length of the longest suffix of `text` that is a proper prefix of some stop string. */
function stopPrefixLength(text: string, stops: readonly string[]): number {
  let longest = 0;
  for (const s of stops) {
    for (let n = Math.min(s.length - 1, text.length); n > longest; n--) {
      if (text.endsWith(s.slice(0, n))) {
        longest = n;
        break;
      }
    }
  }
  return longest;
}

function concat(parts: Float32Array[]): Float32Array {
  const out = new Float32Array(parts.reduce((s, p) => s + p.length, 0));
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}
