/**
 * A discrete-event simulator of a LoRA-serving cluster. Executors (serving instances) run
 * iteration-level batches: decode tokens first, then prefill chunks within a token budget; a
 * request is admitted only when its KV fits and its adapter is resident (or, with layer-wise
 * loading, its first layer is). Adapters live in LRU caches that compete with the KV cache for
 * memory (a static split or one unified pool); a miss loads host → GPU. In disaggregated and hybrid
 * modes LoRA work is queued at LoRA servers (lanes of GPUs that batch whatever has queued) and the
 * activations cross a link; the remote call overlaps the base matmul or not. Prices come from a
 * cost model (CPU-calibrated or the derived GPU roofline). Events run from a heap, so a run costs
 * O(steps · batch), and equal seeds give equal runs.
 */
import { AdapterCache } from "./adapter-cache";
import type { CostModel, RankMode } from "./cost-model";
import { EventQueue } from "./event-queue";
import type { GpuCostModel, Link, StepShape } from "./gpu-cost-model";
import { rankClass, type Assignment, type PlacementPolicy, type PolicyAdapter } from "./placement";
import { SeededRandom, stratifiedNormals } from "./random";
import { toSimCost, type SimCost } from "./sim-cost";
import { summarize, type FinishedRequest, type SimulationResult, type Slo } from "./sim-stats";
import { makeAdapters, makeRequests, type AdapterSpec, type Request, type WorkloadSpec } from "./workload";

export { percentile, type SimulationResult, type Slo } from "./sim-stats";

export type ServingMode = "coupled" | "disaggregated" | "hybrid";

export interface ClusterSpec {
  executors: number;
  /** Adapter budget per executor (bytes); with `memory`, the adapter share of the pool instead. */
  capacityBytes: number;
  /** Most sequences in one batch. */
  maxBatch: number;
  /** coupled: LoRA on the executors; disaggregated: on LoRA servers; hybrid: hot adapters local. */
  mode: ServingMode;
  loraServers: number;
  kernel: RankMode;
  rankAwareRouting: boolean;
  /** Seconds between re-placements with observed traffic (0: place once). */
  replaceEvery: number;
  /** Tokens per step; longer prompts are prefilled in chunks (default: unlimited). */
  maxBatchTokens?: number;
  /** GPU memory per executor: one pool for KV and adapters (absent: KV unlimited). */
  memory?: { poolBytes: number; kvBytesPerToken: number; adapterShare: number | "unified" };
  /** LoRA servers: adapter memory each, expert-parallel GPUs per lane, pipeline lanes, link. */
  loraServer?: { capacityBytes: number; ep: number; pp: number; link: Link };
  /** The remote LoRA call overlaps the base matmul (default true); activations are pushed. */
  overlap?: boolean;
  push?: boolean;
  /** A request may start once its adapter's first layer is resident. */
  layerwiseLoading?: boolean;
  /** Queue order at an executor: first come or shortest job (prompt + output) first. */
  scheduler?: "fcfs" | "sjf";
  /** Return every finished request's TTFT (`SimulationResult.ttftsMs`), to pool runs' requests. */
  keepTtfts?: boolean;
  /**
   * Windows (s from the workload's start) in which no executor starts a step: the real mesh's
   * stall while its provisioner rebalances (m15t). A step in flight finishes; the next waits.
   */
  pauses?: ReadonlyArray<{ at: number; seconds: number }>;
}

interface Seq {
  req: Request;
  rank: number;
  bytes: number;
  prefilled: number;
  generated: number;
  first: number;
  last: number;
  kvTokens: number;
  /** LoRA-server index, or -1 when the LoRA runs on the executor. */
  server: number;
  admitted: boolean;
  chunk: number;
}

interface Exec {
  idx: number;
  queue: Seq[];
  running: Seq[];
  busy: boolean;
  wakeAt: number;
  cache: AdapterCache;
  kvUsed: number;
  kvCap: number;
  classCount: number[];
  /** The step in flight. */
  start: number;
  localUs: number;
  pending: number;
  remoteDone: number;
  netUs: number;
  loadFloor: number;
  /** The step in flight is priced by the measured step period (round trips included). */
  measured: boolean;
  /** A step has started on this executor (its first pays `firstStepUs`). */
  stepped: boolean;
  /** Busy fraction (moving average over BUSY_TAU_S) as of `busyAt`: a measured period's idle term. */
  busyAvg: number;
  busyAt: number;
}

/**
 * Time constant of the executor's busy-fraction average. The step fit takes each probe run's busy
 * fraction over the run (10–12 s); a few seconds follows a run's load without jumping per step.
 */
const BUSY_TAU_S = 2;

interface Job {
  exec: Exec;
  adapters: Map<string, { tokens: number; rank: number }>;
}

interface Server {
  cache: AdapterCache;
  queue: Job[];
  lanesFree: number;
  busySeconds: number;
}

type SimEvent =
  | { kind: "step" | "wake"; exec: Exec }
  | { kind: "lane"; server: Server; jobs: Job[] }
  | { kind: "enter"; exec: Exec; seq: Seq };

class ClusterSimulation {
  private readonly events = new EventQueue<SimEvent>();
  private readonly cost: SimCost;
  private readonly execs: Exec[];
  private readonly servers: Server[];
  private readonly adapters: AdapterSpec[];
  private readonly byId: Map<string, AdapterSpec>;
  private execPlacement: Assignment = new Map();
  private serverPlacement: Assignment = new Map();
  private readonly finished: FinishedRequest[] = [];
  private coldLoads = 0;
  private tokens = 0;
  private rejected = 0;
  private readonly seen = new Map<string, number>();

  constructor(
    private readonly workload: WorkloadSpec,
    private readonly cluster: ClusterSpec,
    private readonly policy: PlacementPolicy,
    cost: CostModel | GpuCostModel,
  ) {
    this.cost = toSimCost(cost);
    this.adapters = makeAdapters(workload);
    this.byId = new Map(this.adapters.map((a) => [a.id, a]));
    const mem = cluster.memory;
    this.execs = Array.from({ length: cluster.executors }, (_, idx) => {
      const e: Exec = {
        idx,
        queue: [],
        running: [],
        busy: false,
        wakeAt: Infinity,
        cache: new AdapterCache(() => 0),
        kvUsed: 0,
        kvCap: Infinity,
        classCount: [0, 0, 0, 0, 0],
        busyAvg: 0,
        busyAt: 0,
        start: 0,
        localUs: 0,
        pending: 0,
        remoteDone: 0,
        netUs: 0,
        loadFloor: 0,
        measured: false,
        stepped: false,
      };
      if (!mem) e.cache = new AdapterCache(() => (cluster.mode === "disaggregated" ? 0 : cluster.capacityBytes));
      else if (mem.adapterShare === "unified")
        e.cache = new AdapterCache(() => mem.poolBytes - e.kvUsed * mem.kvBytesPerToken);
      else {
        const share = cluster.mode === "disaggregated" ? 0 : mem.adapterShare;
        e.cache = new AdapterCache(() => share * mem.poolBytes);
        e.kvCap = Math.floor(((1 - share) * mem.poolBytes) / mem.kvBytesPerToken);
      }
      return e;
    });
    const serverBytes = cluster.loraServer?.capacityBytes ?? cluster.capacityBytes;
    const lanes = cluster.loraServer?.pp ?? 1;
    this.servers =
      cluster.mode === "coupled"
        ? []
        : Array.from({ length: cluster.loraServers }, () => ({
            cache: new AdapterCache(() => serverBytes),
            queue: [],
            lanesFree: lanes,
            busySeconds: 0,
          }));
  }

  private policyAdapters(share: (a: AdapterSpec) => number): PolicyAdapter[] {
    return this.adapters.map((a) => ({ id: a.id, rank: a.rank, sizeBytes: a.sizeBytes, share: share(a) }));
  }

  /** Places adapters on executors (coupled, hybrid) and servers; `warm` makes them resident at once. */
  private place(observed: PolicyAdapter[], now: number, warm: boolean): void {
    const c = this.cluster;
    if (c.mode !== "disaggregated") {
      const executors = this.execs.map((e) => ({ id: `h${e.idx}`, capacityBytes: Math.max(1, e.cache.capacity()) }));
      this.execPlacement = this.policy.place(observed, executors, this.execPlacement);
    }
    if (c.mode !== "coupled") {
      const bytes = c.loraServer?.capacityBytes ?? c.capacityBytes;
      const servers = this.servers.map((_, i) => ({ id: `h${i}`, capacityBytes: bytes }));
      this.serverPlacement = this.policy.place(observed, servers, this.serverPlacement);
    }
    const fill = (assignment: Assignment, caches: AdapterCache[]): void => {
      for (const [id, holders] of assignment) {
        const a = this.byId.get(id) as AdapterSpec;
        for (const h of holders) {
          const cache = caches[Number(h.slice(1))] as AdapterCache;
          if (warm) cache.put(id, a.sizeBytes);
          else if (!cache.entries.has(id)) cache.load(id, a.sizeBytes, now, this.cost.loadSeconds(a.sizeBytes), 1);
        }
      }
    };
    fill(
      this.execPlacement,
      this.execs.map((e) => e.cache),
    );
    fill(
      this.serverPlacement,
      this.servers.map((s) => s.cache),
    );
  }

  run(slo: Slo): SimulationResult {
    const total = this.adapters.reduce((s, a) => s + a.weight, 0);
    this.place(
      this.policyAdapters((a) => a.weight / total),
      0,
      true,
    );
    const { sent, z } = this.sends();
    // Requests on their way to an executor, by the time they reach it (ties: the order sent).
    const reaching = new EventQueue<Request>();
    let nextReplace = this.cluster.replaceEvery > 0 ? this.cluster.replaceEvery : Infinity;
    let si = 0;
    for (;;) {
      const send = si < sent.length ? (sent[si] as Request).arrival : Infinity;
      const reach = reaching.peekTime();
      if (send === Infinity && reach === Infinity && this.events.size === 0) break;
      // A send only schedules its reach, priced as the machine is at that moment (the events
      // before it have run); a reach goes before an event at the same time, as before m15i.
      if (send <= reach && send <= this.events.peekTime()) {
        const busy = !this.cost.hopsByBusy
          ? undefined
          : this.cost.hopWakeTauS > 0
            ? this.machineActivity(send, this.cost.hopWakeTauS)
            : this.machineBusy(send);
        reaching.push(
          send + this.cost.requestOverheadSeconds(this.cluster.mode, z[si] as number, busy),
          sent[si] as Request,
        );
        si++;
        continue;
      }
      if (reach <= this.events.peekTime()) {
        const { time: arrival, value: req } = reaching.pop() as { time: number; value: Request };
        this.seen.set(req.adapter, (this.seen.get(req.adapter) ?? 0) + 1);
        if (req.arrival >= nextReplace) {
          const n = [...this.seen.values()].reduce((a, b) => a + b, 0);
          this.place(
            this.policyAdapters((a) => (this.seen.get(a.id) ?? 0) / n),
            req.arrival,
            false,
          );
          this.seen.clear();
          nextReplace = req.arrival + this.cluster.replaceEvery;
        }
        this.arrive(req, arrival);
        continue;
      }
      const ev = this.events.pop();
      if (!ev) break;
      if (ev.value.kind === "lane") this.laneDone(ev.value.server, ev.value.jobs, ev.time);
      else if (ev.value.kind === "enter") this.enqueue(ev.value.exec, ev.value.seq, ev.time);
      else if (ev.value.kind === "step") this.stepDone(ev.value.exec, ev.time);
      else if (ev.value.exec.wakeAt === ev.time && !ev.value.exec.busy) {
        ev.value.exec.wakeAt = Infinity;
        this.startStep(ev.value.exec, ev.time);
      }
    }
    const lanes = this.servers.length * (this.cluster.loraServer?.pp ?? 1);
    const result = summarize(this.finished, this.workload, this.policy.name, this.tokens, this.coldLoads, slo);
    const busy = this.servers.reduce((s, x) => s + x.busySeconds, 0);
    return {
      ...result,
      rejected: this.rejected,
      ...(this.cluster.keepTtfts
        ? {
            ttftsMs: this.finished.map((r) => (r.first - r.req.arrival) * 1000),
            arrivalsS: this.finished.map((r) => r.req.arrival),
          }
        : {}),
      ...(lanes > 0 ? { loraServerUtilization: busy / (lanes * Math.max(this.workload.duration, 1e-9)) } : {}),
    };
  }

  /**
   * The requests in the order sent, each with its hops' normal draw. A request reaches its executor
   * after the stack's overhead (TTFT still counts from the send). The draws come from a stream of
   * their own, so the requests themselves are the same with and without them.
   */
  private sends(): { sent: Request[]; z: number[] } {
    const sent = makeRequests(this.workload, this.adapters);
    const rng = new SeededRandom((this.workload.seed * 2654435761 + 97) >>> 0);
    // Stratified: the overheads' percentiles are the fitted distribution's in every run. Free
    // draws left them to the seed's chance: the cases' seed drew its 80 requests' P95 at z = 1.94
    // and the probes' seeds at 1.46–1.78, so every case's hop tail was priced ~20 % above what the
    // probes had fitted (docs/evaluation.md §5, m15h).
    return { sent, z: stratifiedNormals(sent.length, rng) };
  }

  /**
   * The executors' mean busy fraction at `now` (the moving average the step's idle term reads,
   * carried to `now`: decayed over an idle gap, risen toward 1 during a step in flight).
   */
  private machineBusy(now: number): number {
    let sum = 0;
    for (const e of this.execs) {
      if (!e.busy) sum += e.busyAvg * Math.exp(-Math.max(0, now - e.busyAt) / BUSY_TAU_S);
      else {
        const gap = Math.exp(-Math.max(0, e.start - e.busyAt) / BUSY_TAU_S);
        const rise = Math.exp(-Math.max(0, now - e.start) / BUSY_TAU_S);
        sum += e.busyAvg * gap * rise + (1 - rise);
      }
    }
    return this.execs.length > 0 ? sum / this.execs.length : 0;
  }

  /**
   * The executors' activity at `now` as a request's hops see it (m15o): 1 for an executor stepping,
   * else exp(−gap / τ) for the gap since its last step ended (before any step: since the run began),
   * the mean over executors. Unlike `machineBusy` it keeps no history beyond the last step: a
   * request after a long idle gap pays the wake-up however busy the seconds before were.
   */
  private machineActivity(now: number, tauS: number): number {
    let sum = 0;
    for (const e of this.execs) sum += e.busy ? 1 : Math.exp(-Math.max(0, now - e.busyAt) / tauS);
    return this.execs.length > 0 ? sum / this.execs.length : 0;
  }

  /** Routes a request to an executor and queues it there. */
  private arrive(req: Request, now: number): void {
    const a = this.byId.get(req.adapter) as AdapterSpec;
    const c = this.cluster;
    const holders = (this.execPlacement.get(req.adapter) ?? []).map((h) => this.execs[Number(h.slice(1))] as Exec);
    let candidates: Exec[];
    let server = -1;
    // Like the provisioner's moves: a new holder takes traffic once its copy is loaded; until then
    // the old copies (still cached) keep serving.
    const readyAt = (e: Exec): boolean => (e.cache.entries.get(req.adapter)?.readyAt ?? Infinity) <= now;
    const ready = holders.filter(readyAt);
    if (c.mode === "coupled") {
      candidates = ready.length > 0 ? ready : this.execs.filter(readyAt);
      if (candidates.length === 0) candidates = holders.length > 0 ? holders : this.execs;
    } else if (c.mode === "hybrid" && ready.length > 0) {
      candidates = ready;
    } else {
      candidates = this.execs;
      const homes = this.serverPlacement.get(req.adapter) ?? [];
      server =
        homes.length > 0 ? Number((homes[req.id % homes.length] as string).slice(1)) : req.id % this.servers.length;
    }
    const cls = rankClass(a.rank);
    let best = candidates[0] as Exec;
    let bestScore = Infinity;
    for (const e of candidates) {
      const load = e.running.length + e.queue.length;
      const mismatch = c.rankAwareRouting ? load - (e.classCount[cls] as number) : 0;
      const score = load + 0.5 * mismatch;
      if (score < bestScore) {
        best = e;
        bestScore = score;
      }
    }
    const seq: Seq = {
      req,
      rank: a.rank,
      bytes: a.sizeBytes,
      prefilled: 0,
      generated: 0,
      first: 0,
      last: 0,
      kvTokens: req.promptTokens + req.outputTokens,
      server,
      admitted: false,
      chunk: 0,
    };
    best.classCount[cls] = (best.classCount[cls] as number) + 1;
    // A request reaching a stepping worker whose thread the step shares (hybrid) waits behind it.
    const wait = best.busy && best.measured ? (this.cost.busyHopSteps(c.mode) * best.localUs) / 1e6 : 0;
    if (wait > 0) this.events.push(now + wait, { kind: "enter", exec: best, seq });
    else this.enqueue(best, seq, now);
  }

  /** Queues a routed request at its executor and starts a step there if it is idle. */
  private enqueue(best: Exec, seq: Seq, now: number): void {
    if (this.cluster.scheduler === "sjf") {
      const key = (s: Seq): number => s.req.promptTokens + s.req.outputTokens;
      let lo = 0;
      let hi = best.queue.length;
      while (lo < hi) {
        const mid = (lo + hi) >> 1;
        if (key(best.queue[mid] as Seq) <= key(seq)) lo = mid + 1;
        else hi = mid;
      }
      best.queue.splice(lo, 0, seq);
    } else best.queue.push(seq);
    if (!best.busy) this.startStep(best, now);
  }

  /** KV room for `tokens` more; in a unified pool idle adapters are evicted to make it. */
  private kvFits(e: Exec, tokens: number): boolean {
    const mem = this.cluster.memory;
    if (!mem) return true;
    if (mem.adapterShare !== "unified") return e.kvUsed + tokens <= e.kvCap;
    const need = (e.kvUsed + tokens) * mem.kvBytesPerToken;
    if (need > mem.poolBytes) return false;
    return e.cache.shrinkTo(mem.poolBytes - need);
  }

  /** Moves ready requests from the queue into the batch; returns the earliest not-yet-ready time. */
  private admit(e: Exec, now: number): number {
    let nextReady = Infinity;
    const layerwise = this.cluster.layerwiseLoading === true;
    const keep: Seq[] = [];
    let scanned = 0;
    let blocked = false;
    for (const s of e.queue) {
      if (blocked || e.running.length >= this.cluster.maxBatch || scanned++ > 256) {
        keep.push(s);
        continue;
      }
      const cache = s.server >= 0 ? (this.servers[s.server] as Server).cache : e.cache;
      let entry = cache.get(s.req.adapter);
      if (!entry) {
        if (s.bytes > cache.capacity() && e.running.length === 0 && s.server < 0 && !this.cluster.memory) {
          this.rejected++;
          continue;
        }
        entry = cache.load(s.req.adapter, s.bytes, now, this.cost.loadSeconds(s.bytes), this.cost.layers);
        if (entry) this.coldLoads++;
      }
      const ready = entry ? (layerwise ? entry.firstLayerAt : entry.readyAt) : Infinity;
      if (!entry || ready > now) {
        nextReady = Math.min(nextReady, entry ? ready : now + 0.005);
        keep.push(s);
        continue;
      }
      if (!this.kvFits(e, s.kvTokens)) {
        blocked = true;
        keep.push(s);
        continue;
      }
      e.kvUsed += s.kvTokens;
      entry.pins++;
      s.admitted = true;
      if (entry.readyAt > now) e.loadFloor = Math.max(e.loadFloor, entry.readyAt);
      e.running.push(s);
    }
    e.queue = keep;
    return nextReady;
  }

  /** The end of the pause `now` falls in, or `now` when none holds the executors. */
  private pausedUntil(now: number): number {
    for (const p of this.cluster.pauses ?? []) if (now >= p.at && now < p.at + p.seconds) return p.at + p.seconds;
    return now;
  }

  private startStep(e: Exec, now: number): void {
    const resume = this.pausedUntil(now);
    if (resume > now) {
      // Paused: what is queued waits for the pause's end (a wake then, as for an adapter load).
      e.busy = false;
      if (resume < e.wakeAt) {
        e.wakeAt = resume;
        this.events.push(resume, { kind: "wake", exec: e });
      }
      return;
    }
    e.loadFloor = 0;
    const nextReady = this.admit(e, now);
    if (e.running.length === 0) {
      e.busy = false;
      if (nextReady < Infinity && nextReady < e.wakeAt) {
        e.wakeAt = nextReady;
        this.events.push(nextReady, { kind: "wake", exec: e });
      }
      return;
    }
    e.busy = true;
    let budget = this.cluster.maxBatchTokens ?? Infinity;
    let tokens = 0;
    let attended = 0;
    const local = new Map<string, { tokens: number; rank: number }>();
    const remote = new Map<number, Job>();
    const add = (s: Seq, t: number): void => {
      const into =
        s.server < 0
          ? local
          : (remote.get(s.server) ?? remote.set(s.server, { exec: e, adapters: new Map() }).get(s.server)!).adapters;
      const entry = into.get(s.req.adapter);
      if (entry) entry.tokens += t;
      else into.set(s.req.adapter, { tokens: t, rank: s.rank });
    };
    let decodes = 0;
    // Decode tokens first, then prefill chunks within the token budget.
    for (const s of e.running) {
      s.chunk = 0;
      if (s.prefilled < s.req.promptTokens) continue;
      s.chunk = 1;
      decodes++;
      budget -= 1;
      tokens += 1;
      attended += s.req.promptTokens + s.generated;
      add(s, 1);
    }
    for (const s of e.running) {
      if (s.prefilled >= s.req.promptTokens || budget <= 0) continue;
      const c = Math.min(s.req.promptTokens - s.prefilled, budget);
      s.chunk = c;
      budget -= c;
      tokens += c;
      attended += c * s.prefilled + (c * (c + 1)) / 2;
      add(s, c);
    }
    const all = [...local.values(), ...[...remote.values()].flatMap((j) => [...j.adapters.values()])];
    const shape: StepShape = { tokens, attendedTokens: attended, adapters: all };
    const inStep = e.running.filter((s) => s.chunk > 0);
    const shaped = this.cost.stepPeriodUs(this.cluster.mode, {
      sequences: inStep.length,
      prefillTokens: tokens - decodes,
      finished: inStep.filter((s) => this.endsIn(s)).length,
      rankSum: inStep.reduce((sum, s) => sum + s.rank, 0),
      ranks: inStep.map((s) => s.rank),
      busyFraction: e.busyAvg * Math.exp(-(now - e.busyAt) / BUSY_TAU_S),
    });
    // The executor's first step (its first request's prefill) pays the one-off costs it measured.
    const period = shaped === undefined || e.stepped ? shaped : shaped + this.cost.firstStepUs(this.cluster.mode);
    e.stepped = true;
    e.measured = period !== undefined;
    e.start = now;
    if (period !== undefined) this.startMeasuredStep(e, now, period, remote);
    else this.startPricedStep(e, now, shape, local, remote);
  }

  /** The sequence's last token comes out of the step it is in. */
  private endsIn(s: Seq): boolean {
    if (s.prefilled < s.req.promptTokens) return s.prefilled + s.chunk >= s.req.promptTokens && s.req.outputTokens <= 1;
    return s.generated + 1 >= s.req.outputTokens;
  }

  /** A step priced by the engine's measured period, which already holds its remote round trips. */
  private startMeasuredStep(e: Exec, now: number, period: number, remote: Map<number, Job>): void {
    e.localUs = period;
    e.netUs = 0;
    this.dispatch(e, now, remote);
  }

  /** A step priced from its parts: base model, LoRA, streaming, round trips. */
  private startPricedStep(
    e: Exec,
    now: number,
    shape: StepShape,
    local: Map<string, { tokens: number; rank: number }>,
    remote: Map<number, Job>,
  ): void {
    const { tokens, attendedTokens: attended } = shape;
    // Every decode, and every prefill that completes, streams a token to its client.
    const emitting = e.running.filter((s) => s.chunk > 0 && s.prefilled + s.chunk >= s.req.promptTokens).length;
    const hybrid = this.cluster.mode === "hybrid" ? this.cost.hybridStepUs : 0;
    const base = this.cost.baseStepUs(shape) + emitting * this.cost.tokenStreamUs + hybrid;
    const lora = this.cost.loraStepUs(
      { tokens, attendedTokens: attended, adapters: [...local.values()] },
      this.cluster.kernel,
    );
    e.localUs = base + lora;
    if (remote.size > 0) {
      const remoteTokens = [...remote.values()].reduce(
        (s, j) => s + [...j.adapters.values()].reduce((x, a) => x + a.tokens, 0),
        0,
      );
      e.netUs = this.cost.remoteUs(
        remoteTokens,
        this.cluster.loraServer?.link ?? "nvlink",
        this.cluster.push !== false,
      );
    }
    this.dispatch(e, now, remote);
  }

  /** Ends a local step, or queues its LoRA work at the servers (the step ends when all answered). */
  private dispatch(e: Exec, now: number, remote: Map<number, Job>): void {
    if (remote.size === 0) {
      this.events.push(this.stepEnd(e, now + e.localUs / 1e6), { kind: "step", exec: e });
      return;
    }
    e.pending = remote.size;
    e.remoteDone = now;
    for (const [i, job] of remote) {
      const server = this.servers[i] as Server;
      server.queue.push(job);
      this.runLane(server, now);
    }
  }

  /** With layer-wise loading the last layer's LoRA cannot run before the adapter is fully in. */
  private stepEnd(e: Exec, end: number): number {
    if (e.loadFloor <= e.start) return end;
    return Math.max(end, e.loadFloor + (end - e.start) / this.cost.layers);
  }

  private runLane(server: Server, now: number): void {
    if (server.lanesFree === 0 || server.queue.length === 0) return;
    const jobs = server.queue;
    server.queue = [];
    server.lanesFree--;
    // One launch serves the whole batch, but each job brings its own weight reads: jobs from
    // different instances arrive at different layers, so they rarely share an adapter's layer.
    const adapters: Array<{ tokens: number; rank: number }> = [];
    let tokens = 0;
    for (const j of jobs)
      for (const a of j.adapters.values()) {
        tokens += a.tokens;
        adapters.push(a);
      }
    const kernelUs = this.cost.loraStepUs(
      { tokens, attendedTokens: 0, adapters },
      this.cluster.kernel,
      this.cluster.loraServer?.ep ?? 1,
    );
    // A step priced by its measured period already holds the server's work for its rows (the
    // worker timed the step with its round trips), so the lane serves it within that period: the
    // kernel calibration's price bounds it, never lengthens it. Unbounded, a high intercept of
    // `loramesh calibrate`'s LoRA line (12 sites × ~107 µs in the run of 09:45, 24 µs in another)
    // ended every disaggregated step after its own period, and the 4 req/s case's TPOT came out
    // 1.43 ms against 0.96 measured (docs/evaluation.md §5, m15k). Other executors' jobs still
    // queue behind it.
    const measuredUs = jobs.every((j) => j.exec.measured) ? Math.max(...jobs.map((j) => j.exec.localUs)) : Infinity;
    const us = Math.min(kernelUs, measuredUs);
    server.busySeconds += us / 1e6;
    this.events.push(now + us / 1e6, { kind: "lane", server, jobs });
  }

  private laneDone(server: Server, jobs: Job[], now: number): void {
    server.lanesFree++;
    for (const j of jobs) {
      const e = j.exec;
      e.remoteDone = Math.max(e.remoteDone, now);
      if (--e.pending > 0) continue;
      const residual = this.cost.kind === "cpu" && !e.measured ? 0.25 : 0;
      const remote = (e.remoteDone - e.start) * 1e6 + e.netUs;
      // A measured period holds its round trips whether or not they overlap (see `runLane`).
      const us =
        this.cluster.overlap === false && !e.measured
          ? e.localUs + remote
          : Math.max(e.localUs, remote) + residual * Math.min(e.localUs, remote);
      this.events.push(this.stepEnd(e, e.start + us / 1e6), { kind: "step", exec: e });
    }
    this.runLane(server, now);
  }

  private stepDone(e: Exec, now: number): void {
    // The average decays over the idle gap before the step and rises toward 1 over the step.
    const idle = Math.exp(-Math.max(0, e.start - e.busyAt) / BUSY_TAU_S);
    const busy = Math.exp(-Math.max(0, now - e.start) / BUSY_TAU_S);
    e.busyAvg = e.busyAvg * idle * busy + (1 - busy);
    e.busyAt = now;
    const still: Seq[] = [];
    for (const s of e.running) {
      if (s.chunk > 0 && s.prefilled < s.req.promptTokens) {
        s.prefilled += s.chunk;
        if (s.prefilled >= s.req.promptTokens) {
          s.first = now;
          s.generated = 1;
          s.last = now;
          this.tokens++;
        }
      } else if (s.chunk > 0) {
        s.generated++;
        s.last = now;
        this.tokens++;
      }
      if (s.generated >= s.req.outputTokens) this.finish(e, s);
      else still.push(s);
    }
    e.running = still;
    this.startStep(e, now);
  }

  private finish(e: Exec, s: Seq): void {
    e.kvUsed -= s.kvTokens;
    const cls = rankClass(s.rank);
    e.classCount[cls] = (e.classCount[cls] as number) - 1;
    const cache = s.server >= 0 ? (this.servers[s.server] as Server).cache : e.cache;
    const entry = cache.entries.get(s.req.adapter);
    if (entry) entry.pins--;
    // The client sees the stream end after the last token (the final message's hops).
    this.finished.push({ req: s.req, first: s.first, last: s.last + this.cost.streamEndSeconds });
  }
}

export function simulate(
  workload: WorkloadSpec,
  cluster: ClusterSpec,
  policy: PlacementPolicy,
  cost: CostModel | GpuCostModel,
  slo: Slo,
): SimulationResult {
  return new ClusterSimulation(workload, cluster, policy, cost).run(slo);
}

/**
 * The highest request rate at which the SLO still holds (P95 TTFT and mean TPOT within target, as
 * InfiniLoRA defines it), by bisection between `lo` and `hi` requests per second.
 */
export function serviceableRate(
  workload: WorkloadSpec,
  cluster: ClusterSpec,
  policy: () => PlacementPolicy,
  cost: CostModel | GpuCostModel,
  slo: Slo,
  lo = 0.5,
  hi = 200,
  steps = 8,
): number {
  const meets = (rate: number): boolean => {
    const r = simulate({ ...workload, rate }, cluster, policy(), cost, slo);
    return r.ttftMs.p95 <= slo.ttftMs && r.tpotMs.mean <= slo.tpotMs && r.completed > 0;
  };
  if (!meets(lo)) return 0;
  let good = lo,
    bad = hi;
  if (meets(hi)) return hi;
  for (let i = 0; i < steps; i++) {
    const mid = (good + bad) / 2;
    if (meets(mid)) good = mid;
    else bad = mid;
  }
  return good;
}
