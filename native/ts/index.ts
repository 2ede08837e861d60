/**
 * @loramesh/native: the compute core's typed API. Heavy ops run off the JS thread and resolve when
 * their outputs are written; a bad shape, dtype, slot or device rejects with a typed error
 * (NativeShapeError, ...). Outputs are written in place into the tensors passed as `out`.
 */
import { readFileSync } from "node:fs";
import { join } from "node:path";
import type { RopeConfig } from "@loramesh/formats";
import { FailedPreconditionError } from "@loramesh/errors";
import { toNativeError } from "./errors";
import type { LoraWeights } from "./lora";
import { stepApi } from "./step";
import type {
  RingServerHandle,
  RingServerOptions,
  RingServerStats,
  RingSite,
  RingSiteTable,
  SiteBackendHandle,
} from "./shm";
import type { Tensor } from "./tensor";
import type {
  UcxAttachment,
  UcxInfo,
  UcxRegionOffer,
  UcxRegionServerHandle,
  UcxRegionStats,
  UcxServerHandle,
  UcxServerOptions,
  UcxServerStats,
} from "./ucx";
import { settleUcxMemoryHooks } from "./ucx-memory-hooks";

export {
  NativeArgumentError,
  NativeCudaError,
  NativeDeviceError,
  NativeDTypeError,
  NativeMemoryError,
  NativeNotFoundError,
  NativeShapeError,
  NativeSlotError,
  NativeUnavailableError,
  toNativeError,
} from "./errors";
export { type LoraSliceWeights, type LoraWeights, MAX_LORA_RANK, packLoraWeights } from "./lora";
export {
  type LocalSiteWeights,
  type RoutedSiteStats,
  type SiteBackendHandle,
  type SiteRequest,
  type SiteRoundTripSpec,
  type SiteRouteSpec,
  type StepBatch,
  type StepLayerSpec,
  type StepModelHandle,
  type StepModelSpec,
  type StepRingTiming,
  toStepError,
} from "./step";
export type { RingServerHandle, RingServerOptions, RingServerStats, RingSite, RingSiteTable } from "./shm";
export type {
  UcxAttachment,
  UcxInfo,
  UcxRegionOffer,
  UcxRegionServerHandle,
  UcxRegionStats,
  UcxServerHandle,
  UcxServerOptions,
  UcxServerStats,
} from "./ucx";
export { bf16, type DType, f32, fromBf16, i32, i64, numel, type Tensor, toBf16 } from "./tensor";

/** The data-plane thread priority in force (LORAMESH_DATAPLANE_PRIORITY) and how it went. */
export interface DataplanePriority {
  /** "off", "nice:N" (SCHED_OTHER at nice -N) or "fifo:P" (SCHED_FIFO priority P). */
  setting: string;
  /** Threads raised so far in this process (a step thread counts once per step). */
  raised: number;
  /** Raises refused (no CAP_SYS_NICE): those threads ran at normal priority. */
  refused: number;
  /** The last refusal's reason ("" when none). */
  error: string;
}

/** What native.fileCache does to a file's page-cache state. */
export type FileCacheOp = "evict" | "warm" | "query";

interface Addon {
  version: string;
  cudaBuilt: boolean;
  cudaDeviceCount(): number;
  getNumThreads(): number;
  setNumThreads(n: number): void;
  simdEnabled(): boolean;
  setSimd(on: boolean): void;
  dataplanePriority(): DataplanePriority;
  forceDataplanePriorityRefusal(on: boolean): void;
  ropeInvFreq(config: RopeConfig, seqLen: number): { invFreq: Float32Array; attentionScaling: number };
  mapFile(path: string, begin: number, length: number): { buffer: ArrayBuffer; offset: number };
  readBandwidthGbs(bytes: number, passes: number): number;
  fileCache(path: string, op: FileCacheOp): number;
  readBandwidthPasses(bytes: number, passes: number, threads: number): number[];
  [op: string]: unknown;
}

export const ADDON_PATH = join(__dirname, "..", "build", "Release", "loramesh_native.node");

function loadAddon(): Addon {
  // A UCX build loads libucs with the addon, and libucs installs its own SIGSEGV/SIGBUS handlers
  // (backtrace printing) when it loads, over Node's; keep Node's unless a deployer asks otherwise.
  process.env["UCX_HANDLE_ERRORS"] ??= "none";
  // UCX's memory hooks (libucm) off unless a deployer sets them, and off anyway when the program
  // break has no room for their install-time self-test, which would unmap the heap's top page
  // (the rare start-up SIGSEGV; ucx-memory-hooks.ts, docs/rdma.md).
  const warning = settleUcxMemoryHooks(process.env, () => readFileSync("/proc/self/maps", "utf8"));
  if (warning !== undefined) process.emitWarning(warning, "LoraMeshWarning");
  try {
    // eslint-disable-next-line @typescript-eslint/no-require-imports -- a .node addon loads only through require
    return require(ADDON_PATH) as Addon;
  } catch (err) {
    throw new FailedPreconditionError(
      `the native addon is not built (${ADDON_PATH}); run ./scripts/setup.sh or pnpm --filter @loramesh/native build:addon`,
      { cause: err },
    );
  }
}

const addon = loadAddon();

function call(op: string, ...args: unknown[]): Promise<void> {
  const fn = addon[op] as (...a: unknown[]) => Promise<void>;
  return fn(...args).catch((err: unknown) => {
    throw toNativeError(err);
  });
}

function sync<T>(fn: () => T): T {
  try {
    return fn();
  } catch (err) {
    throw toNativeError(err);
  }
}

type F32 = Tensor<"f32">;
type Weight = Tensor<"f32"> | Tensor<"bf16">;
type I32 = Tensor<"i32">;

export const native = {
  version: addon.version,
  /** Whether the addon was compiled with CUDA kernels. */
  cudaBuilt: addon.cudaBuilt,
  /** Visible CUDA devices (0 on machines without a GPU). */
  cudaDeviceCount: (): number => addon.cudaDeviceCount(),
  /** Threads used by CPU ops; results are identical for any count. */
  getNumThreads: (): number => addon.getNumThreads(),
  setNumThreads: (n: number): void => sync(() => addon.setNumThreads(n)),
  /** Whether the AVX2/FMA path is used; false forces the scalar path (same bits, slower). */
  simdEnabled: (): boolean => addon.simdEnabled(),
  /** The data-plane thread priority setting and counts of raised / refused threads. */
  dataplanePriority: (): DataplanePriority => addon.dataplanePriority(),
  /** Testing hook: every later raise fails as if refused (no privilege), to exercise the fallback. */
  forceDataplanePriorityRefusal: (on: boolean): void => addon.forceDataplanePriorityRefusal(on),
  setSimd: (on: boolean): void => sync(() => addon.setSimd(on)),

  /**
   * Maps bytes [begin, begin+length) of a file copy-on-write (checkpoint weights used in place; pages
   * load on first touch); they sit at `offset` in `buffer`. Released when the buffer is collected.
   */
  mapFile: (path: string, begin: number, length: number): { buffer: ArrayBuffer; offset: number } =>
    sync(() => addon.mapFile(path, begin, length)),
  /**
   * Puts a file's pages in a known page-cache state (benchmarks' timed loads; no root needed):
   * "evict" drops its cached pages (those mapped by a live process stay), "warm" reads it through
   * once, "query" changes nothing. Returns the fraction of its pages then resident (-1: unknown).
   */
  fileCache: (path: string, op: FileCacheOp): number => sync(() => addon.fileCache(path, op)),
  /** Best read bandwidth (GB/s) of `passes` passes over a `bytes` buffer on the CPU pool. */
  readBandwidthGbs: (bytes: number, passes: number): number => sync(() => addon.readBandwidthGbs(bytes, passes)),
  /**
   * Each pass's read bandwidth (GB/s): `threads` threads of their own, started together, each
   * streaming its contiguous share of a fresh `bytes` buffer once (bench:cpu-anchor's floor).
   */
  readBandwidthPasses: (bytes: number, passes: number, threads: number): number[] =>
    sync(() => addon.readBandwidthPasses(bytes, passes, threads)),
  /** out[t] = table[ids[t]]. */
  embedding: (table: Weight, ids: I32, out: F32) => call("embedding", table, ids, out),
  /** Hugging Face RMSNorm; out may be x. */
  rmsnorm: (x: F32, weight: Weight, eps: number, out: F32) => call("rmsnorm", x, weight, eps, out),
  /** Rotary embedding in place on x [T, heads, headDim]. */
  rope: (x: F32, positions: I32, invFreq: F32, rotaryDim: number, attentionScaling: number) =>
    call("rope", x, positions, invFreq, rotaryDim, attentionScaling),
  /** Rotary frequencies and attention scaling as Hugging Face computes them for this config. */
  ropeInvFreq: (config: RopeConfig, seqLen = 0) => sync(() => addon.ropeInvFreq(config, seqLen)),
  /** out = x·Wᵀ (+ bias). */
  matmul: (x: F32, weight: Weight, bias: F32 | null, out: F32) => call("matmul", x, weight, bias, out),
  /** Writes k, v [T, kvHeads, headDim] into the paged caches at slotMapping[t] (−1 skips). */
  kvCacheWrite: (k: F32, v: F32, kCache: Weight, vCache: Weight, slotMapping: I32) =>
    call("kvCacheWrite", k, v, kCache, vCache, slotMapping),
  /** Causal GQA over the paged cache for a mixed prefill/decode batch (window 0 = unlimited). */
  attention: (
    q: F32,
    kCache: Weight,
    vCache: Weight,
    blockTables: I32,
    tokenSeq: I32,
    tokenPos: I32,
    scale: number,
    slidingWindow: number,
    out: F32,
  ) => call("attention", q, kCache, vCache, blockTables, tokenSeq, tokenPos, scale, slidingWindow, out),
  /** out = silu(gate) · up for gateUp [T, 2I]. */
  siluMul: (gateUp: F32, out: F32) => call("siluMul", gateUp, out),
  /** Softmax, top-k, optional renormalisation (Mixtral). */
  moeRoute: (logits: F32, topK: number, renormalize: boolean, experts: I32, weights: F32) =>
    call("moeRoute", logits, topK, renormalize, experts, weights),
  /** a += b. */
  add: (a: F32, b: F32) => call("add", a, b),
  /** Row-wise argmax (ties: lower index). */
  argmax: (logits: F32, out: I32) => call("argmax", logits, out),
  /** Row-wise top-k, sorted descending (ties: lower index). */
  topk: (logits: F32, k: number, indices: I32, values: F32) => call("topk", logits, k, indices, values),
  /** y[t] += scale·B·(A·x[t]) for each token's key (tokenSlot −1: none), every slice of the site. */
  loraApply: (weights: LoraWeights, x: Weight, tokenSlot: I32, y: F32) => call("loraApply", weights, x, tokenSlot, y),
  /** MoE variant over routed token–expert rows, with the routing weight applied. */
  loraApplyMoe: (
    weights: LoraWeights,
    nExperts: number,
    x: Weight,
    rowToken: I32 | null,
    rowSlot: I32,
    rowExpert: I32,
    rowWeight: F32 | null,
    y: F32,
  ) => call("loraApplyMoe", weights, nExperts, x, rowToken, rowSlot, rowExpert, rowWeight, y),

  // ---- shared-memory rings (LoRA server ↔ same-host workers) ----

  /** Starts a LoRA server's ring thread; it also removes ring segments left by dead processes. */
  shmServerStart: (options: RingServerOptions): RingServerHandle =>
    sync(() => (addon["shmServerStart"] as (o: RingServerOptions) => RingServerHandle)(options)),
  /** Creates a segment for a worker: the name (under /dev/shm) is generated here, never taken from a caller. */
  shmServerAttach: (server: RingServerHandle, workerId: string): { name: string; bytes: number } =>
    sync(() =>
      (addon["shmServerAttach"] as (s: unknown, w: string) => { name: string; bytes: number })(server, workerId),
    ),
  /** Replaces what the ring thread computes with: the pool's adapter ids by slot and the packed sites. */
  shmServerSetTables: (server: RingServerHandle, slots: readonly string[], sites: readonly RingSiteTable[]): void =>
    sync(() =>
      (addon["shmServerSetTables"] as (s: unknown, slots: readonly string[], sites: unknown[]) => void)(
        server,
        slots,
        siteTables(sites),
      ),
    ),
  shmServerStats: (server: RingServerHandle): RingServerStats =>
    sync(() => (addon["shmServerStats"] as (s: unknown) => RingServerStats)(server)),
  /** Detaches every worker (their waits fail with NativeUnavailableError) and removes the segments. */
  shmServerStop: (server: RingServerHandle): void =>
    sync(() => (addon["shmServerStop"] as (s: unknown) => void)(server)),
  /** Worker: maps the segment a LoRA server named and unlinks the name (both sides have it mapped). */
  shmConnect: (name: string): SiteBackendHandle =>
    sync(() => (addon["shmConnect"] as (n: string) => SiteBackendHandle)(name)),
  /** Whether a site of this size fits one ring slot. */
  shmFits: (backend: SiteBackendHandle, rows: number, hIn: number, nOut: number): boolean =>
    (addon["shmFits"] as (b: unknown, r: number, h: number, n: number) => boolean)(backend, rows, hIn, nOut),
  /** Runs one site through the ring (post and wait on a libuv thread); resolves with the delta [rows, nOut]. */
  shmSite: (backend: SiteBackendHandle, site: RingSite): Promise<Float32Array> =>
    (addon["shmSite"] as (b: unknown, s: RingSite) => Promise<Float32Array>)(backend, site).catch((err: unknown) => {
      throw toNativeError(err);
    }),
  /** Whether the ring is usable; one whose server died or detached this worker is closed and unmapped. */
  shmCheck: (backend: SiteBackendHandle): boolean =>
    sync(() => (addon["shmCheck"] as (b: unknown) => boolean)(backend)),
  /** Tells the server this worker leaves; later sites fail with NativeUnavailableError. */
  shmClose: (backend: SiteBackendHandle): void => sync(() => (addon["shmClose"] as (b: unknown) => void)(backend)),
  /** Removes ring segments whose creating process is dead; returns how many. */
  shmReap: (): number => (addon["shmReap"] as () => number)(),

  // ---- UCX (LoRA server ↔ workers on other hosts) ----

  /** Whether this addon links UCX; an addon built before the UCX transport reports it absent. */
  ucxInfo: (): UcxInfo =>
    typeof addon["ucxInfo"] === "function" ? (addon["ucxInfo"] as () => UcxInfo)() : { available: false, version: "" },
  /** Starts a LoRA server's UCX thread with a listener on options.bindHost (NativeUnavailableError without UCX). */
  ucxServerStart: (options: UcxServerOptions): UcxServerHandle =>
    sync(() => (addon["ucxServerStart"] as (o: UcxServerOptions) => UcxServerHandle)(options)),
  /** The listener's address and a fresh session key for one worker. */
  ucxServerAttach: (server: UcxServerHandle, workerId: string): UcxAttachment =>
    sync(() => (addon["ucxServerAttach"] as (s: unknown, w: string) => UcxAttachment)(server, workerId)),
  /** Replaces what the UCX thread computes with (the same tables as the rings). */
  ucxServerSetTables: (server: UcxServerHandle, slots: readonly string[], sites: readonly RingSiteTable[]): void =>
    sync(() =>
      (addon["ucxServerSetTables"] as (s: unknown, slots: readonly string[], sites: unknown[]) => void)(
        server,
        slots,
        siteTables(sites),
      ),
    ),
  ucxServerStats: (server: UcxServerHandle): UcxServerStats =>
    sync(() => (addon["ucxServerStats"] as (s: unknown) => UcxServerStats)(server)),
  /** Closes every endpoint (the workers' sites fail with NativeUnavailableError) and joins the thread. */
  ucxServerStop: (server: UcxServerHandle): void =>
    sync(() => (addon["ucxServerStop"] as (s: unknown) => void)(server)),
  /** Worker: connects and checks the key with one round trip; resolves with the step's site backend. */
  ucxConnect: (host: string, port: number, key: string, timeoutMs: number): Promise<SiteBackendHandle> =>
    (addon["ucxConnect"] as (h: string, p: number, k: string, t: number) => Promise<SiteBackendHandle>)(
      host,
      port,
      key,
      timeoutMs,
    ).catch((err: unknown) => {
      throw toNativeError(err);
    }),
  /** Whether the connection is usable (a failed or closed one is not). */
  ucxCheck: (backend: SiteBackendHandle): boolean =>
    sync(() => (addon["ucxCheck"] as (b: unknown) => boolean)(backend)),
  /** Later sites fail with NativeUnavailableError; the connection goes with the handle. */
  ucxClose: (backend: SiteBackendHandle): void => sync(() => (addon["ucxClose"] as (b: unknown) => void)(backend)),

  // ---- UCX RMA (peer adapter fetch) ----

  /** Holder: a UCX RMA listener on bindHost (port from the OS) and the thread that serves gets. */
  ucxRegionServerStart: (bindHost: string): { host: string; port: number; handle: UcxRegionServerHandle } =>
    sync(() =>
      (addon["ucxRegionServerStart"] as (h: string) => { host: string; port: number; handle: UcxRegionServerHandle })(
        bindHost,
      ),
    ),
  /** Copies bytes into a new registered region; its address and packed rkey go to the fetcher. */
  ucxRegionAdd: (server: UcxRegionServerHandle, bytes: Uint8Array): UcxRegionOffer =>
    sync(() => (addon["ucxRegionAdd"] as (s: unknown, b: Uint8Array) => UcxRegionOffer)(server, bytes)),
  ucxRegionRemove: (server: UcxRegionServerHandle, id: number): void =>
    sync(() => (addon["ucxRegionRemove"] as (s: unknown, id: number) => void)(server, id)),
  /** Accepts RMA connections from this IPv4 address for ttlMs. */
  ucxRegionAllow: (server: UcxRegionServerHandle, ipv4: string, ttlMs: number): void =>
    sync(() => (addon["ucxRegionAllow"] as (s: unknown, ip: string, t: number) => void)(server, ipv4, ttlMs)),
  ucxRegionStats: (server: UcxRegionServerHandle): UcxRegionStats =>
    sync(() => (addon["ucxRegionStats"] as (s: unknown) => UcxRegionStats)(server)),
  ucxRegionServerStop: (server: UcxRegionServerHandle): void =>
    sync(() => (addon["ucxRegionServerStop"] as (s: unknown) => void)(server)),
  /** Fetcher: connects, reads `length` bytes at `address` with one RMA get, disconnects. */
  ucxRegionGet: (
    host: string,
    port: number,
    address: number,
    rkey: Uint8Array,
    length: number,
    timeoutMs: number,
  ): Promise<Buffer> =>
    (addon["ucxRegionGet"] as (h: string, p: number, a: number, r: Buffer, l: number, t: number) => Promise<Buffer>)(
      host,
      port,
      address,
      Buffer.from(rkey.buffer, rkey.byteOffset, rkey.byteLength),
      length,
      timeoutMs,
    ).catch((err: unknown) => {
      throw toNativeError(err);
    }),
};

/** The packed sites as the ring and UCX bindings read them. */
function siteTables(sites: readonly RingSiteTable[]): unknown[] {
  return sites.map(({ layer, site, moe, weights: w }) => ({
    layer,
    site,
    moe,
    dtype: w.aPool.dtype,
    aPool: w.aPool.data,
    bPool: w.bPool.data,
    nKeys: w.nKeys,
    maxRank: w.maxRank,
    sliceWidths: w.sliceWidths,
    rank: w.rank.data,
    scale: w.scale.data,
    aOffset: w.aOffset.data,
    bOffset: w.bOffset.data,
  }));
}

/** The native step (one call per forward pass) and its LoRA site backends. */
export const nativeStep = stepApi(addon);
