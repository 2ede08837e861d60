/**
 * Where the LoRA deltas of a step come from. The forward pass calls `apply` once per LoRA site of
 * each layer with that site's input and output; the backend adds scale·B·(A·x) for each row's
 * adapter into `y`. Implementations: the local backend on the native batched kernels (coupled
 * mode) and, in the mesh, a remote LoRA server. The native step calls `nativeSiteBackend()` when the
 * backend has one, else `apply` through a callback.
 */
import type { SiteBackendHandle, StepRingTiming, Tensor } from "@loramesh/native";
import type { LoraSite } from "@loramesh/formats";
import { UnavailableError } from "@loramesh/errors";

/**
 * A backend cannot serve these adapters now (their LoRA servers are gone and none took over in
 * time). The engine fails only the sequences of these adapters and runs the rest of the step's
 * batch again, so the base model and other adapters never fail because of it.
 */
export class LoraAdaptersUnavailableError extends UnavailableError {
  constructor(
    readonly adapterIds: readonly string[],
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

export interface LoraSiteCall {
  layer: number;
  site: LoraSite;
  /** Input activations [rows, inFeatures]. */
  x: Tensor<"f32">;
  /** Output [rows, Σ slice widths]; the delta is added in place. */
  y: Tensor<"f32">;
  /** Distinct adapter ids of the step; rows refer to them by index. */
  adapters: readonly string[];
  /** For each row, an index into `adapters`, or −1 for none. */
  rowAdapter: Int32Array;
  /** MoE expert sites: each row's expert (rows are routed token–expert pairs). */
  rowExpert?: Int32Array;
}

export interface LoraBackend {
  /** Whether the backend can serve this adapter now (hybrid routing asks this). */
  has(adapterId: string): boolean;
  /**
   * SHA-256 of the adapter's weights as this backend serves them (the prefix cache keys on it);
   * undefined when unknown, and then nothing computed under the adapter is cached.
   */
  contentHash?(adapterId: string): string | undefined;
  apply(call: LoraSiteCall): Promise<void>;
  /**
   * A native site backend the step calls directly from its thread (no JavaScript per site): the
   * local kernels, or a same-host shared-memory backend. Without it the step hands each site back
   * to `apply` on the JS thread (also when it returns undefined: for now every site must go there,
   * as while a local adapter loads layer by layer).
   */
  nativeSiteBackend?(): SiteBackendHandle | undefined;
  /**
   * A native site backend built for one step with these adapters (the step releases it): the mesh's
   * shared-memory rings, called from the step's thread, with `fallback()` (sites through `apply`) for
   * the rest. Undefined: no native path for this step, every site goes through `apply`.
   */
  stepSiteBackend?(adapters: readonly string[], fallback: () => SiteBackendHandle): SiteBackendHandle | undefined;
  /**
   * A step on `stepSiteBackend`'s backend failed at a site (a ring's server died, detached or did not
   * answer): forget what broke. The step then runs again through `apply`, which fails over.
   */
  stepSiteFailed?(backend: SiteBackendHandle, err: unknown): void;
  /**
   * Called after a step on `stepSiteBackend`'s backend that sent sites through a ring, with their
   * summed timing (one call per step, none per site): metrics and the step's span.
   */
  stepRingTiming?(timing: StepRingTiming): void;
}
