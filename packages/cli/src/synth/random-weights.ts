/**
 * Deterministic random weights: each tensor's values depend only on the seed and its name, so every
 * format written from a shape (safetensors f32/bf16/f16, GGUF F32/F16) holds the same numbers.
 * Values are rounded to bf16 first, so bf16 and f32 checkpoints are exactly the same model.
 */
import { createHash } from "node:crypto";

function seedOf(seed: number, name: string): number {
  const digest = createHash("sha256").update(`${seed}:${name}`).digest();
  return digest.readUInt32LE(0) || 1;
}

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

/** Uniform values in [-range, range) (or `fill` everywhere), bf16-exact, from a xorshift32 stream. */
export function tensorValues(seed: number, name: string, count: number, range: number, fill?: number): Float32Array {
  const out = new Float32Array(count);
  if (fill !== undefined) return out.fill(fill);
  const bits = new Uint32Array(out.buffer);
  let x = seedOf(seed, name);
  const scale = (2 * range) / 4294967296;
  for (let i = 0; i < count; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    f32[0] = x * scale - range;
    const b = u32[0] as number;
    // Round to nearest even at bf16 precision (finite values only here).
    bits[i] = ((b + 0x7fff + ((b >>> 16) & 1)) & 0xffff0000) >>> 0;
  }
  return out;
}

/** The upper 16 bits of each f32 (exact for bf16-exact values). */
export function toBf16Bits(values: Float32Array): Uint16Array {
  const u = new Uint32Array(values.buffer, values.byteOffset, values.length);
  const out = new Uint16Array(values.length);
  for (let i = 0; i < out.length; i++) out[i] = (u[i] as number) >>> 16;
  return out;
}

/** IEEE half precision, round to nearest even (subnormals kept, overflow to infinity). */
export function toF16Bits(values: Float32Array): Uint16Array {
  const u = new Uint32Array(values.buffer, values.byteOffset, values.length);
  const out = new Uint16Array(values.length);
  for (let i = 0; i < out.length; i++) {
    const x = u[i] as number;
    const sign = (x >>> 16) & 0x8000;
    const exp = (x >>> 23) & 0xff;
    let mant = x & 0x7fffff;
    if (exp === 0xff) {
      out[i] = sign | 0x7c00 | (mant ? 0x200 : 0);
      continue;
    }
    let e = exp - 127 + 15;
    if (e >= 0x1f) {
      out[i] = sign | 0x7c00;
      continue;
    }
    if (e <= 0) {
      if (e < -10) {
        out[i] = sign;
        continue;
      }
      mant |= 0x800000;
      const shift = 14 - e;
      let h = mant >>> shift;
      const rem = mant & ((1 << shift) - 1),
        half = 1 << (shift - 1);
      if (rem > half || (rem === half && h & 1)) h++;
      out[i] = sign | h;
      continue;
    }
    let h = (e << 10) | (mant >>> 13);
    const rem = mant & 0x1fff;
    if (rem > 0x1000 || (rem === 0x1000 && h & 1)) h++;
    e = h; // carry into the exponent is the right result (up to infinity)
    out[i] = sign | e;
  }
  return out;
}
