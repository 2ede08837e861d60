/**
 * One forward pass over a batch that mixes prefill chunks and decode tokens of many sequences, each
 * with its own adapter (or none). KV entries are written into the paged cache and attention reads
 * each sequence's own blocks; LoRA goes through the LoRA backend at every site.
 */
import { f32, i32, native, type Tensor } from "@loramesh/native";
import { FailedPreconditionError } from "@loramesh/errors";
import type { KvCache } from "./kv-cache";
import type { LoraBackend } from "./lora-backend";
import type { LoraSite } from "@loramesh/formats";
import type { Model, MoeMlp } from "./model";

type F32 = Tensor<"f32">;

type SiteRunner = (
  layer: number,
  site: LoraSite,
  x: F32,
  y: F32,
  base: () => Promise<void>,
  rows?: Int32Array,
  rowExpert?: Int32Array,
) => Promise<void>;

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

/** Logits per sequence ([rows × vocab], rows as requested), in input order. */
export async function forward(
  model: Model,
  cache: KvCache,
  lora: LoraBackend | undefined,
  seqs: readonly ForwardSequence[],
): Promise<Float32Array[]> {
  const c = model.config;
  const H = c.hiddenSize,
    hd = c.headDim,
    nh = c.numHeads,
    nkv = c.numKvHeads;
  const qDim = model.qDim,
    kvDim = model.kvDim;
  const T = seqs.reduce((s, q) => s + q.tokens.length, 0);

  // Token-level bookkeeping.
  const ids = new Int32Array(T),
    positions = new Int32Array(T),
    tokenSeq = new Int32Array(T),
    slots = new Int32Array(T);
  const adapters: string[] = [];
  const rowAdapter = new Int32Array(T);
  const maxBlocks = Math.max(1, ...seqs.map((s) => s.blockTable.length));
  const tables = new Int32Array(seqs.length * maxBlocks);
  let t = 0;
  let maxPosition = 0;
  seqs.forEach((s, si) => {
    tables.set(s.blockTable, si * maxBlocks);
    let adapterIndex = -1;
    if (s.adapterId !== undefined) {
      if (!lora) throw new FailedPreconditionError("a sequence uses an adapter but the engine has no LoRA backend");
      adapterIndex = adapters.indexOf(s.adapterId);
      if (adapterIndex < 0) adapterIndex = adapters.push(s.adapterId) - 1;
    }
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
  const useLora = lora !== undefined && adapters.length > 0;
  /**
   * One LoRA site: the backend computes the delta (possibly on a remote LoRA server) while the
   * base projection runs, then the delta is added. Adding a separately computed delta gives the
   * same bits as adding it in place.
   */
  const site: SiteRunner = async (layer, name, x, y, base, rows = rowAdapter, rowExpert) => {
    if (!useLora) return base();
    const delta = f32(y.shape);
    await Promise.all([
      base(),
      lora.apply({ layer, site: name, x, y: delta, adapters, rowAdapter: rows, ...(rowExpert ? { rowExpert } : {}) }),
    ]);
    await native.add(y, delta);
  };

  let invFreq = model.invFreq,
    attentionScaling = model.attentionScaling;
  if (c.rope.type === "dynamic") ({ invFreq, attentionScaling } = native.ropeInvFreq(c.rope, maxPosition + 1));
  const invFreqT = f32([invFreq.length], invFreq);
  const idsT = i32([T], ids),
    posT = i32([T], positions),
    seqT = i32([T], tokenSeq),
    slotsT = i32([T], slots);
  const tablesT = i32([seqs.length, maxBlocks], tables);

  const h = f32([T, H]);
  await native.embedding(model.embed, idsT, h);
  const x = f32([T, H]);
  const qkv = f32([T, qDim + 2 * kvDim]);
  const q = f32([T, nh, hd]),
    k = f32([T, nkv, hd]),
    v = f32([T, nkv, hd]);
  const attn = f32([T, qDim]);
  const o = f32([T, H]);
  const scale = 1 / Math.sqrt(hd);

  for (let l = 0; l < c.numLayers; l++) {
    const layer = model.layers[l] as Model["layers"][number];
    await native.rmsnorm(h, layer.inputNorm, c.rmsNormEps, x);
    await site(l, "qkv", x, qkv, () => native.matmul(x, layer.qkv, layer.qkvBias, qkv));
    splitQkv(qkv.data, q.data, k.data, v.data, T, qDim, kvDim);
    await native.rope(q, posT, invFreqT, c.rope.rotaryDim, attentionScaling);
    await native.rope(k, posT, invFreqT, c.rope.rotaryDim, attentionScaling);
    const kvLayer = cache.layers[l] as KvCache["layers"][number];
    await native.kvCacheWrite(k, v, kvLayer.k, kvLayer.v, slotsT);
    await native.attention(q, kvLayer.k, kvLayer.v, tablesT, seqT, posT, scale, c.slidingWindow[l] ?? 0, attn);
    await site(l, "o", attn, o, () => native.matmul(attn, layer.o, null, o));
    await native.add(h, o);

    await native.rmsnorm(h, layer.postNorm, c.rmsNormEps, x);
    if (layer.mlp.kind === "dense") {
      const I = c.intermediateSize;
      const gu = f32([T, 2 * I]);
      const mlp = layer.mlp;
      await site(l, "gate_up", x, gu, () => native.matmul(x, mlp.gateUp, null, gu));
      const act = f32([T, I]);
      await native.siluMul(gu, act);
      await site(l, "down", act, o, () => native.matmul(act, mlp.down, null, o));
      await native.add(h, o);
    } else {
      await moe(model, layer.mlp, l, x, h, rowAdapter, site);
    }
  }

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
  const out: Float32Array[] = [];
  if (rows.length === 0) return seqs.map(() => new Float32Array(0));
  const picked = f32([rows.length, H]);
  rows.forEach((r, i) => picked.data.set(h.data.subarray(r * H, (r + 1) * H), i * H));
  await native.rmsnorm(picked, model.finalNorm, c.rmsNormEps, picked);
  const logits = f32([rows.length, c.vocabSize]);
  await native.matmul(picked, model.lmHead, null, logits);
  let row = 0;
  for (const want of perSeq) {
    out.push(logits.data.slice(row * c.vocabSize, (row + want) * c.vocabSize));
    row += want;
  }
  return out;
}

function splitQkv(
  qkv: Float32Array,
  q: Float32Array,
  k: Float32Array,
  v: Float32Array,
  T: number,
  qDim: number,
  kvDim: number,
): void {
  const width = qDim + 2 * kvDim;
  for (let t = 0; t < T; t++) {
    const row = t * width;
    q.set(qkv.subarray(row, row + qDim), t * qDim);
    k.set(qkv.subarray(row + qDim, row + qDim + kvDim), t * kvDim);
    v.set(qkv.subarray(row + qDim + kvDim, row + width), t * kvDim);
  }
}

/**
 * Mixtral's sparse MoE block: route, run each expert on its rows (grouped by expert), LoRA keyed by
 * (adapter, expert), then sum weight·output per token in expert order (as Hugging Face does) and
 * add to the residual.
 */
async function moe(
  model: Model,
  mlp: MoeMlp,
  layer: number,
  x: F32,
  h: F32,
  rowAdapterOfToken: Int32Array,
  site: SiteRunner,
): Promise<void> {
  const c = model.config;
  const H = c.hiddenSize,
    I = c.intermediateSize,
    E = c.numExperts,
    K = c.expertsPerToken;
  const T = x.shape[0] as number;
  const routerLogits = f32([T, E]);
  await native.matmul(x, mlp.router, null, routerLogits);
  const experts = i32([T, K]),
    weights = f32([T, K]);
  await native.moeRoute(routerLogits, K, true, experts, weights);

  // Rows grouped by expert, tokens ascending within an expert.
  const rowToken: number[] = [],
    rowExpert: number[] = [],
    rowWeight: number[] = [];
  const counts = new Array<number>(E).fill(0);
  for (let e = 0; e < E; e++) {
    for (let t = 0; t < T; t++) {
      for (let j = 0; j < K; j++) {
        if (experts.data[t * K + j] === e) {
          rowToken.push(t);
          rowExpert.push(e);
          rowWeight.push(weights.data[t * K + j] as number);
          counts[e]!++;
        }
      }
    }
  }
  const R = rowToken.length;
  const xr = f32([R, H]);
  rowToken.forEach((t, r) => xr.data.set(x.data.subarray(t * H, (t + 1) * H), r * H));
  const gu = f32([R, 2 * I]);
  const act = f32([R, I]);
  const down = f32([R, H]);
  let offset = 0;
  const ranges: Array<[number, number]> = [];
  for (let e = 0; e < E; e++) {
    const n = counts[e] as number;
    ranges.push([offset, n]);
    offset += n;
  }
  // The base projections of all experts, each on its contiguous block of rows.
  const perExpert = async (
    input: F32,
    output: F32,
    width: number,
    outWidth: number,
    pick: (e: number) => F32,
  ): Promise<void> => {
    for (let e = 0; e < E; e++) {
      const [start, n] = ranges[e] as [number, number];
      if (n === 0) continue;
      await native.matmul(
        f32([n, width], input.data.subarray(start * width, (start + n) * width)),
        pick(e),
        null,
        f32([n, outWidth], output.data.subarray(start * outWidth, (start + n) * outWidth)),
      );
    }
  };
  const expert = (e: number) => mlp.experts[e] as MoeMlp["experts"][number];
  const rowAdapter = Int32Array.from(rowToken, (t) => rowAdapterOfToken[t] as number);
  const expertOfRow = Int32Array.from(rowExpert);
  await site(
    layer,
    "gate_up",
    xr,
    gu,
    () => perExpert(xr, gu, H, 2 * I, (e) => expert(e).gateUp),
    rowAdapter,
    expertOfRow,
  );
  await native.siluMul(gu, act);
  await site(
    layer,
    "down",
    act,
    down,
    () => perExpert(act, down, I, H, (e) => expert(e).down),
    rowAdapter,
    expertOfRow,
  );
  const combined = new Float32Array(T * H);
  for (let r = 0; r < R; r++) {
    const t = rowToken[r] as number,
      w = Math.fround(rowWeight[r] as number);
    for (let i = 0; i < H; i++)
      combined[t * H + i] = Math.fround(
        (combined[t * H + i] as number) + Math.fround((down.data[r * H + i] as number) * w),
      );
  }
  await native.add(h, f32([T, H], combined));
}
