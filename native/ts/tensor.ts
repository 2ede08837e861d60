/** CPU tensors as the native core sees them: a dtype, a row-major shape and a typed array. */

export type DType = "f32" | "bf16" | "i32" | "i64";

interface ArrayOf {
  f32: Float32Array;
  bf16: Uint16Array;
  i32: Int32Array;
  i64: BigInt64Array;
}

/** A dense row-major tensor in host memory. bf16 elements are raw 16-bit patterns. */
export interface Tensor<D extends DType = DType> {
  readonly dtype: D;
  readonly shape: readonly number[];
  readonly data: ArrayOf[D];
  /** Where the data lives; host memory for every tensor the binding creates. */
  readonly device?: "cpu";
}

export function numel(shape: readonly number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

/** An f32 tensor over `data` (zeros when absent). */
export function f32(shape: readonly number[], data?: Float32Array | readonly number[]): Tensor<"f32"> {
  const array = data instanceof Float32Array ? data : data ? Float32Array.from(data) : new Float32Array(numel(shape));
  return { dtype: "f32", shape, data: array, device: "cpu" };
}

/** A bf16 tensor over raw bit patterns. */
export function bf16(shape: readonly number[], data?: Uint16Array): Tensor<"bf16"> {
  return { dtype: "bf16", shape, data: data ?? new Uint16Array(numel(shape)), device: "cpu" };
}

export function i32(shape: readonly number[], data?: Int32Array | readonly number[]): Tensor<"i32"> {
  const array = data instanceof Int32Array ? data : data ? Int32Array.from(data) : new Int32Array(numel(shape));
  return { dtype: "i32", shape, data: array, device: "cpu" };
}

export function i64(shape: readonly number[], data?: BigInt64Array | readonly number[]): Tensor<"i64"> {
  const array =
    data instanceof BigInt64Array
      ? data
      : data
        ? BigInt64Array.from(data, (v) => BigInt(v))
        : new BigInt64Array(numel(shape));
  return { dtype: "i64", shape, data: array, device: "cpu" };
}

const f32buf = new Float32Array(1);
const u32buf = new Uint32Array(f32buf.buffer);

/** Float32Array → bf16 bit patterns, rounded to nearest even. */
export function toBf16(values: Float32Array): Uint16Array {
  const out = new Uint16Array(values.length);
  for (let i = 0; i < values.length; i++) {
    f32buf[0] = values[i] as number;
    const bits = u32buf[0] as number;
    out[i] =
      (bits & 0x7fffffff) > 0x7f800000
        ? ((bits >>> 16) | 0x40) & 0xffff
        : ((bits + 0x7fff + ((bits >>> 16) & 1)) >>> 16) & 0xffff;
  }
  return out;
}

/** bf16 bit patterns → Float32Array (exact). */
export function fromBf16(bits: Uint16Array): Float32Array {
  const out = new Float32Array(bits.length);
  const view = new Uint32Array(out.buffer);
  for (let i = 0; i < bits.length; i++) view[i] = (bits[i] as number) << 16;
  return out;
}
