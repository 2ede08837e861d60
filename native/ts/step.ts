/**
 * The native step's typed API (issue 13): a model handle built once from the weights and the KV
 * cache, LoRA site backends (the local kernels, or a JavaScript callback), and `run`, which does a
 * whole forward pass in one call off the JS thread.
 */
import { NotFoundError, UnavailableError } from "@loramesh/errors";
import { toNativeError } from "./errors";
import type { LoraWeights } from "./lora";
import type { Tensor } from "./tensor";

type Weight = Tensor<"f32"> | Tensor<"bf16">;

/** Opaque handles owned by the addon (Napi::External). */
export interface StepModelHandle {
  readonly __stepModel: unique symbol;
}
/** A `Napi::External<std::shared_ptr<lm::SiteBackend>>`: any native LoRA site backend. */
export interface SiteBackendHandle {
  readonly __siteBackend: unique symbol;
}

export interface StepLayerSpec {
  inputNorm: Weight;
  postNorm: Weight;
  qkv: Weight;
  qkvBias: Tensor<"f32"> | null;
  o: Weight;
  gateUp?: Weight;
  down?: Weight;
  router?: Weight;
  experts?: ReadonlyArray<{ gateUp: Weight; down: Weight }>;
  slidingWindow: number;
  cache: { k: Weight; v: Weight; blocks: number; blockSize: number };
}

export interface StepModelSpec {
  hidden: number;
  heads: number;
  kvHeads: number;
  headDim: number;
  intermediate: number;
  vocab: number;
  experts: number;
  topK: number;
  eps: number;
  rotaryDim: number;
  invFreq: Float32Array;
  attentionScaling: number;
  embed: Weight;
  finalNorm: Weight;
  lmHead: Weight;
  layers: readonly StepLayerSpec[];
}

/** One step's arrays (token-level, in batch order). */
export interface StepBatch {
  tokens: number;
  seqs: number;
  maxBlocks: number;
  ids: Int32Array;
  positions: Int32Array;
  tokenSeq: Int32Array;
  slots: Int32Array;
  blockTables: Int32Array;
  /** Index into `adapters`, or −1. */
  rowAdapter: Int32Array;
  adapters: readonly string[];
  /** Batch rows whose logits are written, in order, into `logits` [rows × vocab]. */
  logitRows: Int32Array;
  logits: Float32Array;
  /** Per-step rotary frequencies (dynamic NTK); absent: the model's. */
  invFreq?: Float32Array;
  attentionScaling?: number;
  /** How long the step waits for one LoRA site (0: as long as the backend takes). */
  siteTimeoutMs: number;
}

/** A LoRA site handed to JavaScript by a callback site backend. */
export interface SiteRequest {
  /** The step that posted it, as `armCallbackSiteBackend` named it (0 when never armed). */
  step: number;
  layer: number;
  /** 0 qkv, 1 o, 2 gate_up, 3 down. */
  site: number;
  x: Float32Array;
  rows: number;
  inFeatures: number;
  outFeatures: number;
  rowAdapter: Int32Array;
  rowExpert: Int32Array | null;
}

/** One route of a routed site backend: these adapters' rows go to `backend`. */
export interface SiteRouteSpec {
  adapters: readonly string[];
  backend: SiteBackendHandle;
  /** Bound on one site's wait on this backend (0: the step's). */
  timeoutMs: number;
  /** A shared-memory ring: sites too big for a slot, and adapters its table leaves out, go to the fallback. */
  ring: boolean;
  /** A UCX connection (issue 19): adapters its table leaves out go to the fallback. */
  ucx?: boolean;
}

/** Where routed sites went, process-wide (ring parts served from the step's thread, fallback parts). */
export interface RoutedSiteStats {
  ringSites: number;
  ringRows: number;
  /** UCX parts served from the step's thread, and their rows with an adapter. */
  ucxSites: number;
  ucxRows: number;
  fallbackSites: number;
  /** Ring parts re-sent to the fallback: the ring's table left the adapter out. */
  notFound: number;
  /** Ring parts sent to the fallback: larger than a ring slot. */
  tooBig: number;
}

/**
 * Where one step's shared-memory ring sites spent their time, summed over the step's ring sites
 * (µs; from the timestamps both sides write into the ring's slot). All zero without ring sites.
 */
export interface StepRingTiming {
  ringSites: number;
  /** Ring waits that ended in a futex sleep (the bounded spin was not enough). */
  ringSleeps: number;
  /** Post → the worker saw the response. */
  ringWaitUs: number;
  /** Post → the LoRA server's ring thread saw it (doorbell, server wake-up). */
  ringQueueUs: number;
  /** Seen → its kernel started (batching window across workers, checks). */
  ringBatchUs: number;
  /** The server's kernel and the delta copy. */
  ringComputeUs: number;
  /** Response written → the worker saw it (worker wake-up). */
  ringWakeUs: number;
}

/** One site timed `iterations` times, post → wait on a native thread (benchmarks). */
export interface SiteRoundTripSpec {
  adapters: readonly string[];
  layer: number;
  site: number;
  rows: number;
  inFeatures: number;
  outFeatures: number;
  x: Float32Array;
  rowAdapter: Int32Array;
  iterations: number;
  timeoutMs: number;
  /** Six numbers per site instead of one: µs, the ring's queue / batch / compute / wake µs, 1 if the worker slept. */
  phases?: boolean;
}

/** Packed weights of one (layer, site) for the local backend; `moe` when keys are slot×experts + e. */
export type LocalSiteWeights = LoraWeights & { moe: boolean };

interface StepAddon {
  createStepModel(spec: StepModelSpec): StepModelHandle;
  localSiteBackend(spec: {
    slots: readonly string[];
    experts: number;
    sites: ReadonlyArray<LocalSiteWeights | null>;
  }): SiteBackendHandle;
  callbackSiteBackend(fn: (req: SiteRequest) => Promise<Float32Array>): SiteBackendHandle;
  disposeSiteBackend(backend: SiteBackendHandle): void;
  armCallbackSiteBackend(backend: SiteBackendHandle, step: number): boolean;
  announceStep(backend: SiteBackendHandle): void;
  routedSiteBackend(routes: readonly SiteRouteSpec[], fallback: SiteBackendHandle | null): SiteBackendHandle;
  routedSiteStats(): RoutedSiteStats;
  siteRoundTrips(backend: SiteBackendHandle, spec: SiteRoundTripSpec): Promise<Float64Array>;
  step(model: StepModelHandle, batch: StepBatch, backend: SiteBackendHandle | null): Promise<StepRingTiming>;
}

/**
 * A failed step as a typed error: an adapter the backend does not hold is NotFoundError; a LoRA
 * site that failed or did not answer is UnavailableError (the mesh's retry path handles both);
 * anything else is the native op's typed error.
 */
export function toStepError(err: unknown): unknown {
  if (!(err instanceof Error)) return err;
  const { code, phase } = err as Error & { code?: string; phase?: string };
  if (phase === "begin_step" && code === "LM_ERR_SLOT") return new NotFoundError(err.message, { cause: err });
  if (phase === "site") return new UnavailableError(err.message, { cause: err });
  return toNativeError(err);
}

export function stepApi(addon: unknown) {
  const a = addon as StepAddon;
  const sync = <T>(fn: () => T): T => {
    try {
      return fn();
    } catch (err) {
      throw toNativeError(err);
    }
  };
  return {
    /** Builds the model handle; it keeps the weights and the KV cache alive. */
    createModel: (spec: StepModelSpec): StepModelHandle => sync(() => a.createStepModel(spec)),
    /** Coupled mode: the batched kernels over the given resident adapters (pools are copied). */
    localSiteBackend: (
      slots: readonly string[],
      experts: number,
      sites: ReadonlyArray<LocalSiteWeights | null>,
    ): SiteBackendHandle => sync(() => a.localSiteBackend({ slots, experts, sites })),
    /** Each site goes to `fn` on the JS thread; the step waits for its promise (the delta). */
    callbackSiteBackend: (fn: (req: SiteRequest) => Promise<Float32Array>): SiteBackendHandle =>
      sync(() => a.callbackSiteBackend(fn)),
    /** Releases a backend now (a running step keeps its own reference). */
    disposeSiteBackend: (backend: SiteBackendHandle): void => a.disposeSiteBackend(backend),
    /**
     * Names the step a callback backend kept across steps runs next: its requests carry it as
     * `step`, so a late site of an earlier step is told apart. False: not a callback backend.
     */
    armCallbackSiteBackend: (backend: SiteBackendHandle, step: number): boolean =>
      sync(() => a.armCallbackSiteBackend(backend, step)),
    /**
     * A step on this backend is about to be queued: a same-host LoRA server's ring thread starts
     * waking now, while the step is handed to its thread (no-op for other backends).
     */
    announceStep: (backend: SiteBackendHandle): void => a.announceStep(backend),
    /**
     * Per adapter, the backend serving its rows, called from the step's thread (rings: no
     * JavaScript per site); adapters no route names go to `fallback`.
     */
    routedSiteBackend: (routes: readonly SiteRouteSpec[], fallback: SiteBackendHandle | null): SiteBackendHandle =>
      sync(() => a.routedSiteBackend(routes, fallback)),
    /** Process-wide counts of where routed sites went. */
    routedStats: (): RoutedSiteStats => a.routedSiteStats(),
    /** µs per post → wait of one site, timed on a native thread as the step does it. */
    siteRoundTrips: (backend: SiteBackendHandle, spec: SiteRoundTripSpec): Promise<Float64Array> =>
      a.siteRoundTrips(backend, spec).catch((err: unknown) => {
        throw toStepError(err);
      }),
    /** Runs the step; logits land in `batch.logits`. Resolves with its ring sites' timing. */
    run: (model: StepModelHandle, batch: StepBatch, backend: SiteBackendHandle | null): Promise<StepRingTiming> =>
      a.step(model, batch, backend).catch((err: unknown) => {
        throw toStepError(err);
      }),
  };
}
