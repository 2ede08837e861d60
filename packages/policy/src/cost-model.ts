/**
 * The cost of an iteration and of a LoRA site, in microseconds, as linear models calibrated on the
 * machine at hand (`loramesh calibrate`):
 *   base step   = baseFixedUs + baseUsPerToken · tokens
 *   LoRA site   = loraFixedUs + loraUsPerTokenRank · Σ(tokens × rank) + loraUsPerAdapter · distinct adapters
 *   transport   = transportFixedUs + transportUsPerKiB · KiB moved   (per remote round trip)
 * "Effective rank" is the true rank for loramesh's kernels; padded kernels pay the batch's maximum.
 */
import type { StepPeriodFit } from "./step-fit";

export interface Calibration {
  /** Where and when the parameters were measured. */
  machine: string;
  measuredAt: string;
  /** Model the base numbers refer to. */
  model: string;
  baseFixedUs: number;
  baseUsPerToken: number;
  loraFixedUs: number;
  loraUsPerTokenRank: number;
  loraUsPerAdapter: number;
  /** LoRA sites per step (4 per layer). */
  sitesPerStep: number;
  transport: Record<"grpc" | "shm", { fixedUs: number; usPerKiB: number }>;
  /** Hidden size, for activation bytes per token per site. */
  hiddenSize: number;
  /** Seconds to load one MiB of adapter from storage (cold start). */
  loadSecondsPerMiB: number;
  /** The measured points behind the fits; the base step is interpolated between them when present. */
  samples?: { base?: Array<[number, number]> };
  /**
   * The serving stack around the kernels, from a probe of the real mesh at low load: per engine
   * step (local LoRA, and with LoRA-server round trips) and per request (client → router → worker
   * → client).
   */
  stepOverheadUs?: number;
  remoteStepOverheadUs?: number;
  /**
   * Per step of a hybrid worker: its LoRA backend is not native, so every LoRA site (local ones
   * too) is handed to the JS thread by a callback and back, where it waits with the gRPC streams.
   */
  hybridStepOverheadUs?: number;
  /**
   * The per-request overhead is not one number: it is a chain of hops between processes (client →
   * router → provisioner → Redis → router → worker, and the first token back), each waiting for
   * its process to get a core, so it has a long right tail. It is log-normal with this median and
   * P95; disaggregated requests (which also cross the LoRA server) have their own pair.
   */
  requestOverheadUs?: number;
  requestOverheadP95Us?: number;
  remoteRequestOverheadUs?: number;
  remoteRequestOverheadP95Us?: number;
  /**
   * The hops' cost per unit of the machine's idle fraction (1 − its executors' busy fraction, the
   * one the step's idle term prices), added to every hop drawn from the log-normal above, which is
   * the hops' at idle fraction `requestOverheadIdleRef`. The idle fraction is clamped to
   * `requestOverheadIdleRange`, the span the probes fitted it over (absent: no busy term). Why: a
   * hop wakes the process it hands the request to, and on this VM waking a halted vCPU costs
   * 40–90 µs; the busier the machine, the more of those processes are awake (docs/evaluation.md §5,
   * m15i).
   */
  requestOverheadPerIdleUs?: number;
  requestOverheadIdleRef?: number;
  requestOverheadIdleRange?: readonly [number, number];
  /**
   * Time constant (s) of the hops' wake-up (since m15o): with it, the busy term reads each request's
   * own wake fraction, 1 − exp(−gap / τ) for the gap since its executors last stepped (0 while one
   * steps), in place of the machine's smoothed idle fraction, over [0, 1] with reference 0. Why:
   * per request, the first token's delay grows with the idle gap before it (m15o's runs: ~10 ms at
   * the median after gaps under 0.1 s, 14–18 ms after 0.4–1.6 s, at 2 and 12 req/s alike), so a
   * 12 req/s run's requests after a long gap pay the idle cost that the smoothed fraction spread
   * over all of them (docs/evaluation.md §5, m15o). Absent: the smoothed fraction (m15i).
   */
  requestOverheadWakeTauS?: number;
  /**
   * A hybrid request that reaches its worker while a step is in flight enters the engine's queue
   * this many periods of that step later (absent: at once, to wait out the step there). A hybrid
   * worker runs its LoRA sites as callbacks on its JS thread, the thread that also takes the
   * requests' messages, so a message to a stepping worker waits behind the step's callbacks: in
   * the runs of 08:01 (hybrid, 8 req/s) requests sent while another was decoding took 20.0–20.7 ms
   * to their first token at the median against 12.8–14.0 sent to an idle mesh, where the
   * simulator gave 15.2 and 14.0 (docs/evaluation.md §5, m15j). Fitted on the hybrid probe.
   */
  hybridBusyHopSteps?: number;
  /**
   * Per sequence that emits a token in a step: the token's two gRPC hops (worker → router →
   * client) on the serving machine's cores. A decode batch of n sequences streams n tokens, so a
   * step's cost grows with the sequences in it, not only with its tokens.
   */
  tokenStreamUs?: number;
  /**
   * The engine's whole step period by batch shape, fitted on the worker's own step timings during
   * probes of the real mesh (`fitStepPeriods`). When present it prices a step in place of the
   * kernel points and the per-step, per-sequence and hybrid overheads above.
   */
  stepPeriods?: StepPeriodFit;
  /**
   * One measured round's machine state, relative to the fit (since m15s, `round-states.ts`): every
   * step period times `roundStepScale`, every hop's log-normal draw times `roundHopScale` and its
   * σ times `roundHopTailScale` (absent: 1, the fit's one state). A case is then simulated once per
   * state its mode's probe rounds measured, and their requests pooled as the measured rounds' are.
   */
  roundStepScale?: number;
  roundHopScale?: number;
  roundHopTailScale?: number;
  /**
   * Per request, from its last token leaving the worker to the end of its stream at the client
   * (the final message and the stream's close, through the router). The client's TPOT counts
   * it, spread over the request's tokens, so it weighs most on short outputs.
   */
  streamEndUs?: number;
}

/**
 * The built-in calibration: measured with `loramesh calibrate` on the 2-core development VM (CPU
 * kernels, tiny-llama); the same numbers are in bench/calibrations/cpu-2core-vm.json.
 */
export const DEFAULT_CALIBRATION: Calibration = {
  machine: "vm, 2 cores, CPU kernels, AVX2 (built-in: bench/calibrations/cpu-2core-vm.json)",
  measuredAt: "2026-11-22",
  model: "tiny-llama",
  baseFixedUs: 2659.6,
  baseUsPerToken: 47.999,
  loraFixedUs: 81.3,
  loraUsPerTokenRank: 0.007075,
  loraUsPerAdapter: 2,
  sitesPerStep: 12,
  transport: {
    grpc: { fixedUs: 705.9, usPerKiB: 1.729 },
    shm: { fixedUs: 475.3, usPerKiB: 0.059 },
  },
  hiddenSize: 64,
  loadSecondsPerMiB: 0.00166,
};

export interface BatchShape {
  /** Tokens in the step (prefill chunks and decodes). */
  tokens: number;
  /** Per distinct adapter: tokens using it and its rank. */
  adapters: ReadonlyArray<{ tokens: number; rank: number }>;
}

export type RankMode = "true" | "padded";

export class CostModel {
  constructor(readonly calibration: Calibration) {}

  /** Microseconds of the base model for one step. */
  baseStepUs(tokens: number): number {
    const c = this.calibration;
    if (tokens === 0) return 0;
    const points = c.samples?.base;
    if (points && points.length >= 2) return interpolate(points, tokens);
    return c.baseFixedUs + c.baseUsPerToken * tokens;
  }

  /** Σ tokens × effective rank of a batch. */
  tokenRank(batch: BatchShape, mode: RankMode): number {
    if (mode === "true") return batch.adapters.reduce((s, a) => s + a.tokens * a.rank, 0);
    const max = Math.max(0, ...batch.adapters.map((a) => a.rank));
    return batch.adapters.reduce((s, a) => s + a.tokens, 0) * max;
  }

  /** Microseconds of all LoRA sites of one step, computed locally. */
  loraStepUs(batch: BatchShape, mode: RankMode = "true"): number {
    const c = this.calibration;
    if (batch.adapters.length === 0) return 0;
    const perSite =
      c.loraFixedUs + c.loraUsPerTokenRank * this.tokenRank(batch, mode) + c.loraUsPerAdapter * batch.adapters.length;
    return perSite * c.sitesPerStep;
  }

  /** Microseconds of the round trips of one step to a LoRA server (activations both ways). */
  transportStepUs(tokens: number, transport: "grpc" | "shm"): number {
    const c = this.calibration;
    const kib = (tokens * c.hiddenSize * 4 * 2) / 1024;
    const t = c.transport[transport];
    return c.sitesPerStep * (t.fixedUs + t.usPerKiB * kib);
  }

  /** A whole step: base + LoRA (+ the remote round trips, which overlap the base partly). */
  stepUs(batch: BatchShape, options: { mode?: RankMode; remote?: "grpc" | "shm" } = {}): number {
    const base = this.baseStepUs(batch.tokens);
    const lora = this.loraStepUs(batch, options.mode ?? "true");
    if (!options.remote || batch.adapters.length === 0) return base + lora;
    // The worker overlaps its base projection with the round trip; the slower of the two counts.
    const remote = lora + this.transportStepUs(batch.tokens, options.remote);
    return Math.max(base, remote) + 0.25 * Math.min(base, remote);
  }

  /** Seconds to load an adapter of `bytes` from storage. */
  loadSeconds(bytes: number): number {
    return (bytes / (1024 * 1024)) * this.calibration.loadSecondsPerMiB;
  }
}

/**
 * Piecewise-linear through measured (x, y) points, extended by the last segment's slope: a CPU's
 * step time is not one straight line from 1 to 256 tokens (caches, thread start-up).
 */
export function interpolate(points: ReadonlyArray<readonly [number, number]>, x: number): number {
  const p = [...points].sort((a, b) => a[0] - b[0]);
  let i = 1;
  while (i < p.length - 1 && x > (p[i] as readonly [number, number])[0]) i++;
  const [x0, y0] = p[i - 1] as readonly [number, number];
  const [x1, y1] = p[i] as readonly [number, number];
  const y = x1 === x0 ? y1 : y0 + ((y1 - y0) * (x - x0)) / (x1 - x0);
  return Math.max(0, x < x0 ? y0 : y);
}

/** Least-squares fit of y = a + b·x. */
export function fitLine(points: ReadonlyArray<readonly [number, number]>): { intercept: number; slope: number } {
  const n = points.length;
  const mx = points.reduce((s, p) => s + p[0], 0) / n;
  const my = points.reduce((s, p) => s + p[1], 0) / n;
  let sxy = 0,
    sxx = 0;
  for (const [x, y] of points) {
    sxy += (x - mx) * (y - my);
    sxx += (x - mx) * (x - mx);
  }
  const slope = sxx === 0 ? 0 : sxy / sxx;
  return { intercept: Math.max(0, my - slope * mx), slope: Math.max(0, slope) };
}
