/**
 * One forward pass over a batch that mixes prefill chunks and decode tokens of many sequences, each
 * with its own adapter (or none). The whole pass runs in native code in one call (the native step,
 * `native/src/step.cpp`): this file only lays out the step's per-token arrays, hands over the LoRA
 * site backend and slices the logits. KV entries are written into the paged cache and attention
 * reads each sequence's own blocks.
 */
import { AsyncResource } from "node:async_hooks";
import {
  f32,
  native,
  nativeStep,
  type SiteBackendHandle,
  type SiteRequest,
  type StepBatch,
  type StepModelHandle,
  type StepRingTiming,
} from "@loramesh/native";
import { FailedPreconditionError, UnavailableError } from "@loramesh/errors";
import type { KvCache } from "./kv-cache";
import type { LoraBackend } from "./lora-backend";
import type { LoraSite } from "@loramesh/formats";
import type { Model } from "./model";

export interface ForwardSequence {
  /** Tokens fed this step. */
  tokens: readonly number[];
  /** Position of tokens[0]. */
  startPosition: number;
  /** The sequence's KV blocks, already large enough for startPosition + tokens.length. */
  blockTable: readonly number[];
  adapterId: string | undefined;
  /** Which logits to return: none, the last fed token's, or every fed token's. */
  logits: "none" | "last" | "all";
}

export interface ForwardOptions {
  /** How long the step waits for one LoRA site before failing with UnavailableError (0: no limit). */
  siteTimeoutMs?: number;
  /** Filled in: the time spent waiting for the native step (the engine's step series). */
  timing?: ForwardTiming;
}

/** Default bound on one LoRA site: a backend that never answers fails the step instead of hanging it. */
export const DEFAULT_SITE_TIMEOUT_MS = 120_000;

/** Site ids of the native step (lm::SiteId). */
const SITES: readonly LoraSite[] = ["qkv", "o", "gate_up", "down"];

/** Logits per sequence ([rows × vocab], rows as requested), in input order. */
export async function forward(
  model: Model,
  cache: KvCache,
  lora: LoraBackend | undefined,
  seqs: readonly ForwardSequence[],
  options: ForwardOptions = {},
): Promise<Float32Array[]> {
  // The step's distinct adapters, then its LoRA site backends before the rest of the layout: a
  // same-host LoRA server's ring thread starts waking now (announce), while the step is laid out.
  const adapters: string[] = [];
  for (const s of seqs) {
    if (s.adapterId === undefined) continue;
    if (!lora) throw new FailedPreconditionError("a sequence uses an adapter but the engine has no LoRA backend");
    if (!adapters.includes(s.adapterId)) adapters.push(s.adapterId);
  }
  const sites = lora !== undefined && adapters.length > 0 ? stepSites(lora, adapters) : undefined;
  try {
    return await laidOut(model, cache, seqs, adapters, sites, options);
  } finally {
    sites?.callback?.release();
  }
}

async function laidOut(
  model: Model,
  cache: KvCache,
  seqs: readonly ForwardSequence[],
  adapters: readonly string[],
  sites: StepSites | undefined,
  options: ForwardOptions,
): Promise<Float32Array[]> {
  const c = model.config;
  const T = seqs.reduce((s, q) => s + q.tokens.length, 0);

  // Token-level bookkeeping.
  const ids = new Int32Array(T),
    positions = new Int32Array(T),
    tokenSeq = new Int32Array(T),
    slots = new Int32Array(T);
  const rowAdapter = new Int32Array(T);
  const maxBlocks = Math.max(1, ...seqs.map((s) => s.blockTable.length));
  const tables = new Int32Array(seqs.length * maxBlocks);
  let t = 0;
  let maxPosition = 0;
  seqs.forEach((s, si) => {
    tables.set(s.blockTable, si * maxBlocks);
    const adapterIndex = s.adapterId === undefined ? -1 : adapters.indexOf(s.adapterId);
    s.tokens.forEach((id, j) => {
      ids[t] = id;
      positions[t] = s.startPosition + j;
      tokenSeq[t] = si;
      slots[t] = cache.slot(s.blockTable, s.startPosition + j);
      rowAdapter[t] = adapterIndex;
      maxPosition = Math.max(maxPosition, s.startPosition + j);
      t++;
    });
  });

  // Logits only for the rows asked for.
  const rows: number[] = [];
  const perSeq: number[] = [];
  let base = 0;
  for (const s of seqs) {
    const n = s.tokens.length;
    const want = s.logits === "all" ? n : s.logits === "last" && n > 0 ? 1 : 0;
    for (let j = n - want; j < n; j++) rows.push(base + j);
    perSeq.push(want);
    base += n;
  }
  const logits = new Float32Array(rows.length * c.vocabSize);

  const rope = c.rope.type === "dynamic" ? native.ropeInvFreq(c.rope, maxPosition + 1) : undefined;
  const batch: StepBatch = {
    tokens: T,
    seqs: seqs.length,
    maxBlocks,
    ids,
    positions,
    tokenSeq,
    slots,
    blockTables: tables,
    rowAdapter,
    adapters,
    logitRows: Int32Array.from(rows),
    logits,
    ...(rope ? { invFreq: rope.invFreq, attentionScaling: rope.attentionScaling } : {}),
    siteTimeoutMs: options.siteTimeoutMs ?? DEFAULT_SITE_TIMEOUT_MS,
  };
  await runStep(stepModel(model, cache), batch, sites, options.timing);

  const out: Float32Array[] = [];
  let row = 0;
  for (const want of perSeq) {
    out.push(logits.slice(row * c.vocabSize, (row + want) * c.vocabSize));
    row += want;
  }
  return out;
}

/**
 * Runs the step with the LoRA backend's native sites when it has them. A step whose step backend
 * (the rings) failed at a site runs once more through `apply`, which fails over to a replica or the
 * stream: the rerun writes the same KV positions again, so a partial first run leaves nothing.
 *
 * Nothing here is built per step: the callback backend (sites through `apply`) is kept per LoRA
 * backend and the step backend belongs to the LoRA backend, which keeps it while its routes hold
 * (building both every step cost the disaggregated worker ~40 µs of its event loop, issue 13).
 */
async function runStep(
  handle: StepModelHandle,
  batch: StepBatch,
  sites: StepSites | undefined,
  timing: ForwardTiming | undefined,
): Promise<void> {
  const run = async (backend: SiteBackendHandle | null): Promise<StepRingTiming> => {
    const started = timing ? performance.now() : 0;
    try {
      return await nativeStep.run(handle, batch, backend);
    } finally {
      if (timing) timing.nativeUs += (performance.now() - started) * 1000;
    }
  };
  if (!sites) return void (await run(null));
  const { lora, persistent, callback, routed } = sites;
  if (persistent || !callback) return void (await run(persistent ?? null));
  try {
    try {
      const t = await run(routed ?? callback.handle);
      if (t.ringSites > 0) lora.stepRingTiming?.(t);
    } catch (err) {
      // A JavaScript LoRA backend's own error (typed, e.g. UnavailableError from a LoRA server) wins.
      if (!routed || callback.error !== undefined || !(err instanceof UnavailableError)) throw callback.error ?? err;
      lora.stepSiteFailed?.(routed, err);
      // A new step for the callback backend: a late site of the failed run is not this one's.
      callback.rearm();
      await run(callback.handle);
    }
  } catch (err) {
    throw callback.error ?? err;
  }
}

/** One step's LoRA site backends: the LoRA backend's persistent one, or its step backend over the callback. */
interface StepSites {
  lora: LoraBackend;
  persistent?: SiteBackendHandle;
  callback?: StepCallback;
  routed?: SiteBackendHandle;
}

function stepSites(lora: LoraBackend, adapters: readonly string[]): StepSites {
  const persistent = lora.nativeSiteBackend?.();
  if (persistent) return { lora, persistent };
  const callback = stepCallback(lora, adapters);
  try {
    const routed = lora.stepSiteBackend?.(adapters, () => callback.handle);
    if (!routed) return { lora, callback };
    nativeStep.announceStep(routed);
    return { lora, callback, routed };
  } catch (err) {
    callback.release();
    throw err;
  }
}

/** What `forward` spent waiting for the native step (the rest of its time is JavaScript). */
export interface ForwardTiming {
  nativeUs: number;
}

/**
 * One step's use of a callback site backend (sites through the LoRA backend's `apply` on the JS
 * thread): the backend kept for this LoRA backend, armed with a new step number, or, while another
 * step is using that one, a backend of this step's own.
 */
interface StepCallback {
  handle: SiteBackendHandle;
  /** The first error a site of this step threw (a JavaScript backend's own typed error). */
  readonly error: unknown;
  rearm(): void;
  release(): void;
}

/** The step a kept callback backend serves now: sites of any other step are refused. */
interface StepContext {
  step: number;
  lora: LoraBackend;
  adapters: readonly string[];
  scope: AsyncResource;
  error: unknown;
}

interface KeptCallback {
  handle: SiteBackendHandle;
  current: StepContext | undefined;
  steps: number;
}

/**
 * Per LoRA backend. The backend's function reaches its record through a WeakRef (and the LoRA
 * backend only through the current step's context), so the record and the native backend go with
 * the LoRA backend.
 */
const keptCallbacks = new WeakMap<LoraBackend, KeptCallback>();

function keptCallback(lora: LoraBackend): KeptCallback {
  const known = keptCallbacks.get(lora);
  if (known) return known;
  const kept: KeptCallback = { handle: undefined as unknown as SiteBackendHandle, current: undefined, steps: 0 };
  const ref = new WeakRef(kept);
  kept.handle = nativeStep.callbackSiteBackend((req) => {
    const ctx = ref.deref()?.current;
    if (!ctx || ctx.step !== req.step)
      return Promise.reject(new UnavailableError("a LoRA site of a step that already ended"));
    return ctx.scope.runInAsyncScope(() => siteThroughApply(ctx, req));
  });
  keptCallbacks.set(lora, kept);
  return kept;
}

/**
 * Measurement only (`LM_STEP_BACKENDS_PER_STEP=1`): a callback backend of its own for every step, so
 * the mesh's routed backend is built anew every step too, as before they were kept (issue 13, m13k).
 */
const PER_STEP = process.env["LM_STEP_BACKENDS_PER_STEP"] === "1";

function stepCallback(lora: LoraBackend, adapters: readonly string[]): StepCallback {
  const kept = keptCallback(lora);
  if (kept.current !== undefined || PER_STEP) return ownCallback(lora, adapters);
  const arm = (): StepContext => {
    const ctx: StepContext = {
      step: ++kept.steps,
      lora,
      adapters,
      scope: new AsyncResource("loramesh.step.site"),
      error: undefined,
    };
    kept.current = ctx;
    nativeStep.armCallbackSiteBackend(kept.handle, ctx.step);
    return ctx;
  };
  let ctx = arm();
  const errors: unknown[] = [];
  return {
    handle: kept.handle,
    get error() {
      return errors[0] ?? ctx.error;
    },
    rearm() {
      if (ctx.error !== undefined) errors.push(ctx.error);
      ctx = arm();
    },
    release() {
      if (kept.current === ctx) kept.current = undefined;
    },
  };
}

/** A callback backend of one step (another step is using the kept one), released after it. */
function ownCallback(lora: LoraBackend, adapters: readonly string[]): StepCallback {
  const ctx: StepContext = {
    step: 0,
    lora,
    adapters,
    scope: new AsyncResource("loramesh.step.site"),
    error: undefined,
  };
  const handle = nativeStep.callbackSiteBackend((req) => ctx.scope.runInAsyncScope(() => siteThroughApply(ctx, req)));
  return {
    handle,
    get error() {
      return ctx.error;
    },
    rearm() {},
    release() {
      nativeStep.disposeSiteBackend(handle);
    },
  };
}

/**
 * A LoRA backend written in TypeScript (the remote gRPC one, hybrid) behind the native step: each
 * site comes back to the JS thread, runs in the step's async context (so trace spans nest under
 * the step), and its delta goes back to the step thread.
 */
async function siteThroughApply(ctx: StepContext, req: SiteRequest): Promise<Float32Array> {
  const y = f32([req.rows, req.outFeatures]);
  try {
    await ctx.lora.apply({
      layer: req.layer,
      site: SITES[req.site] as LoraSite,
      x: f32([req.rows, req.inFeatures], req.x),
      y,
      adapters: ctx.adapters,
      rowAdapter: req.rowAdapter,
      ...(req.rowExpert ? { rowExpert: req.rowExpert } : {}),
    });
  } catch (err) {
    ctx.error ??= err;
    throw err;
  }
  return y.data;
}

const handles = new WeakMap<KvCache, { model: Model; handle: StepModelHandle }>();

/** The native model handle of (model, cache): pointers to the weights and the KV cache, built once. */
function stepModel(model: Model, cache: KvCache): StepModelHandle {
  const known = handles.get(cache);
  if (known?.model === model) return known.handle;
  const c = model.config;
  const handle = nativeStep.createModel({
    hidden: c.hiddenSize,
    heads: c.numHeads,
    kvHeads: c.numKvHeads,
    headDim: c.headDim,
    intermediate: c.intermediateSize,
    vocab: c.vocabSize,
    experts: c.numExperts,
    topK: c.numExperts > 0 ? c.expertsPerToken : 0,
    eps: c.rmsNormEps,
    rotaryDim: c.rope.rotaryDim,
    invFreq: model.invFreq,
    attentionScaling: model.attentionScaling,
    embed: model.embed,
    finalNorm: model.finalNorm,
    lmHead: model.lmHead,
    layers: model.layers.map((layer, l) => {
      const kv = cache.layers[l] as KvCache["layers"][number];
      return {
        inputNorm: layer.inputNorm,
        postNorm: layer.postNorm,
        qkv: layer.qkv,
        qkvBias: layer.qkvBias,
        o: layer.o,
        ...(layer.mlp.kind === "dense"
          ? { gateUp: layer.mlp.gateUp, down: layer.mlp.down }
          : { router: layer.mlp.router, experts: layer.mlp.experts }),
        slidingWindow: c.slidingWindow[l] ?? 0,
        cache: { k: kv.k, v: kv.v, blocks: cache.numBlocks, blockSize: cache.blockSize },
      };
    }),
  });
  handles.set(cache, { model, handle });
  return handle;
}
