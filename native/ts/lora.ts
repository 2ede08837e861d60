/**
 * Packing adapters for a LoRA site: every (key, slice) at its true rank in two pools behind an
 * offset table, as the native batched-LoRA kernels read them.
 */
import { NativeArgumentError } from "./errors";
import { bf16, f32, i32, i64, toBf16, type Tensor } from "./tensor";

/** One slice (projection) of one key: A is [rank, hIn], B is [width, rank], both row-major. */
export interface LoraSliceWeights {
  rank: number;
  scale: number;
  a: Float32Array;
  b: Float32Array;
}

/** Weights of a site, as the native ops take them. */
export interface LoraWeights {
  aPool: Tensor<"f32"> | Tensor<"bf16">;
  bPool: Tensor<"f32"> | Tensor<"bf16">;
  nKeys: number;
  sliceWidths: readonly number[];
  rank: Tensor<"i32">;
  scale: Tensor<"f32">;
  aOffset: Tensor<"i64">;
  bOffset: Tensor<"i64">;
  maxRank: number;
}

/** Largest rank the kernels accept. */
export const MAX_LORA_RANK = 256;

/**
 * Packs keys (adapter slots, or slot×experts + expert for MoE) into pools. `keys[k][s]` is the
 * weights of key k for slice s, or null when the key does not touch that slice.
 */
export function packLoraWeights(
  keys: ReadonlyArray<ReadonlyArray<LoraSliceWeights | null>>,
  hIn: number,
  sliceWidths: readonly number[],
  dtype: "f32" | "bf16" = "f32",
): LoraWeights {
  const nSlices = sliceWidths.length;
  let aSize = 0;
  let bSize = 0;
  let maxRank = 0;
  for (const [k, slices] of keys.entries()) {
    if (slices.length !== nSlices)
      throw new NativeArgumentError(`key ${k} has ${slices.length} slices, the site has ${nSlices}`);
    for (const [s, w] of slices.entries()) {
      if (!w) continue;
      if (!Number.isInteger(w.rank) || w.rank < 1 || w.rank > MAX_LORA_RANK) {
        throw new NativeArgumentError(`key ${k} slice ${s}: rank ${w.rank} is outside 1..${MAX_LORA_RANK}`);
      }
      if (w.a.length !== w.rank * hIn)
        throw new NativeArgumentError(`key ${k} slice ${s}: A must be [${w.rank}, ${hIn}]`);
      if (w.b.length !== (sliceWidths[s] as number) * w.rank) {
        throw new NativeArgumentError(`key ${k} slice ${s}: B must be [${sliceWidths[s]}, ${w.rank}]`);
      }
      aSize += w.a.length;
      bSize += w.b.length;
      maxRank = Math.max(maxRank, w.rank);
    }
  }
  const aPool = new Float32Array(aSize);
  const bPool = new Float32Array(bSize);
  const entries = keys.length * nSlices;
  const rank = new Int32Array(entries);
  const scale = new Float32Array(entries);
  const aOffset = new BigInt64Array(entries);
  const bOffset = new BigInt64Array(entries);
  let a = 0;
  let b = 0;
  for (const [k, slices] of keys.entries()) {
    for (const [s, w] of slices.entries()) {
      const e = k * nSlices + s;
      aOffset[e] = BigInt(a);
      bOffset[e] = BigInt(b);
      if (!w) continue;
      rank[e] = w.rank;
      scale[e] = w.scale;
      aPool.set(w.a, a);
      bPool.set(w.b, b);
      a += w.a.length;
      b += w.b.length;
    }
  }
  return {
    aPool: dtype === "f32" ? f32([aSize], aPool) : bf16([aSize], toBf16(aPool)),
    bPool: dtype === "f32" ? f32([bSize], bPool) : bf16([bSize], toBf16(bPool)),
    nKeys: keys.length,
    sliceWidths,
    rank: i32([entries], rank),
    scale: f32([entries], scale),
    aOffset: i64([entries], aOffset),
    bOffset: i64([entries], bOffset),
    maxRank,
  };
}
