/**
 * Types of the shared-memory rings' binding (native/addon/shm_binding.cpp). The LoRA server owns a
 * ring server (a native thread that batches and computes every attached worker's sites); a worker
 * holds a site backend per same-host LoRA server, connected by the segment name the server gave it.
 */
import type { LoraWeights } from "./lora";

declare const ringServerBrand: unique symbol;
/** Opaque handle of a LoRA server's ring server. */
export type RingServerHandle = { readonly [ringServerBrand]: true };
/**
 * A worker's shared-memory site backend is a `SiteBackendHandle` (step.ts): in native code a
 * `Napi::External<std::shared_ptr<lm::SiteBackend>>`, which the native step accepts as is.
 */
export type { SiteBackendHandle } from "./step";

export interface RingServerOptions {
  numLayers: number;
  /** 0 for a dense model. */
  numExperts: number;
  /** Input and output width of each site, in qkv, o, gate_up, down order. */
  hIn: readonly number[];
  nOut: readonly number[];
  /** Bytes of each worker's segment (split into its slots). */
  segmentBytes: number;
  /** Longest a posted site waits for other workers' posts of the same site. */
  windowUs: number;
  /** A worker that posted this recently counts as active (its next post is waited for). */
  activeUs: number;
  /** A worker that leaves a delta unread this long is detached. */
  siteTimeoutMs: number;
  /** A segment no worker mapped within this time is removed. */
  attachTimeoutMs: number;
}

/** One packed site of the adapter pool, as the ring thread computes with it. */
export interface RingSiteTable {
  layer: number;
  /** 0 qkv, 1 o, 2 gate_up, 3 down. */
  site: number;
  moe: boolean;
  weights: LoraWeights;
}

export interface RingServerStats {
  nativeCalls: number;
  workItems: number;
  rows: number;
  attached: number;
  detached: number;
  /** Workers detached since the last call, each as "id: reason". */
  detachedWorkers: string[];
  /** Rows computed per adapter id since the server started (the ring's share of the per-adapter metrics). */
  adapterRows: Record<string, number>;
  /**
   * New posts by what the ring thread was doing when each arrived: `expectSpin` (spinning for it:
   * the expected post), `timedNap` (asleep until its self-wake), `late` (asleep after a spin that
   * ended before the post), `contended` (asleep: spins locked out after a descheduled one),
   * `noExpectation` (asleep inside a step, no expected window), `idle` (no worker in a step),
   * `busy` (scanning or computing). Every kind but `expectSpin` and `busy` pays a futex wake-up.
   */
  postsFound: Record<string, number>;
  /** Spins that found themselves descheduled (each locks the expected post out for 100 ms). */
  preemptedSpins: number;
}

export interface RingSite {
  layer: number;
  site: number;
  adapterIds: readonly string[];
  rowAdapter: Int32Array;
  rowExpert?: Int32Array;
  x: Float32Array;
  rows: number;
  hIn: number;
  nOut: number;
  timeoutMs: number;
}
