/**
 * Tensors on the wire: dtype + shape + raw little-endian bytes (proto `loramesh.v1.Tensor`).
 * Decoded protobuf `bytes` are views into a larger receive buffer and often start at an offset that
 * is not a multiple of the element size; typed-array views need alignment, so such data is copied.
 */
import { DType, type Tensor } from "@loramesh/proto";
import { InvalidArgumentError } from "@loramesh/errors";

/** A decoded tensor: a typed array over its elements (bf16/f16 as raw 16-bit patterns). */
export type TensorData =
  | { dtype: DType.DTYPE_F32; shape: number[]; data: Float32Array }
  | { dtype: DType.DTYPE_BF16; shape: number[]; data: Uint16Array }
  | { dtype: DType.DTYPE_F16; shape: number[]; data: Uint16Array }
  | { dtype: DType.DTYPE_I32; shape: number[]; data: Int32Array };

const ELEMENT_BYTES: Partial<Record<DType, number>> = {
  [DType.DTYPE_F32]: 4,
  [DType.DTYPE_BF16]: 2,
  [DType.DTYPE_F16]: 2,
  [DType.DTYPE_I32]: 4,
};

/** Largest tensor accepted from the wire (elements); guards against shapes that overflow. */
export const MAX_TENSOR_ELEMENTS = 2 ** 31 - 1;

/** Bytes per element of a dtype; throws for DTYPE_UNSPECIFIED or an unknown value. */
export function elementBytes(dtype: DType): number {
  const size = ELEMENT_BYTES[dtype];
  if (size === undefined) throw new InvalidArgumentError(`unsupported tensor dtype ${String(dtype)}`);
  return size;
}

/** Number of elements a shape describes, validated. */
export function elementCount(shape: readonly number[]): number {
  let count = 1;
  for (const dim of shape) {
    if (!Number.isInteger(dim) || dim < 0) throw new InvalidArgumentError(`invalid tensor dimension ${dim}`);
    count *= dim;
    if (count > MAX_TENSOR_ELEMENTS) throw new InvalidArgumentError(`tensor shape [${shape.join(", ")}] is too large`);
  }
  return count;
}

const LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

/** Encodes a typed array as a protobuf Tensor. The bytes are copied only on big-endian hosts. */
export function encodeTensor(tensor: TensorData): Tensor {
  const count = elementCount(tensor.shape);
  if (count !== tensor.data.length) {
    throw new InvalidArgumentError(
      `tensor shape [${tensor.shape.join(", ")}] holds ${count} elements, data has ${tensor.data.length}`,
    );
  }
  const view = new Uint8Array(tensor.data.buffer, tensor.data.byteOffset, tensor.data.byteLength);
  const data = LITTLE_ENDIAN
    ? Buffer.from(view.buffer, view.byteOffset, view.byteLength)
    : swapBytes(view, elementBytes(tensor.dtype));
  return { dtype: tensor.dtype, shape: [...tensor.shape], data };
}

/**
 * Decodes and validates a protobuf Tensor: known dtype, sane shape, byte length equal to
 * elements × element size. Misaligned data is copied before it is viewed as elements.
 */
export function decodeTensor(tensor: Tensor): TensorData {
  const size = elementBytes(tensor.dtype);
  const count = elementCount(tensor.shape);
  const bytes = tensor.data;
  if (bytes.byteLength !== count * size) {
    throw new InvalidArgumentError(
      `tensor of shape [${tensor.shape.join(", ")}] and ${DType[tensor.dtype]} needs ${count * size} bytes, got ${bytes.byteLength}`,
    );
  }
  let source: Uint8Array = bytes;
  if (!LITTLE_ENDIAN) source = swapBytes(bytes, size);
  else if (bytes.byteOffset % size !== 0) source = Uint8Array.prototype.slice.call(bytes);
  const shape = [...tensor.shape];
  switch (tensor.dtype) {
    case DType.DTYPE_F32:
      return { dtype: tensor.dtype, shape, data: new Float32Array(source.buffer, source.byteOffset, count) };
    case DType.DTYPE_I32:
      return { dtype: tensor.dtype, shape, data: new Int32Array(source.buffer, source.byteOffset, count) };
    case DType.DTYPE_BF16:
    case DType.DTYPE_F16:
      return { dtype: tensor.dtype, shape, data: new Uint16Array(source.buffer, source.byteOffset, count) };
    default:
      throw new InvalidArgumentError(`unsupported tensor dtype ${String(tensor.dtype)}`);
  }
}

function swapBytes(bytes: Uint8Array, size: number): Buffer {
  const out = Buffer.alloc(bytes.byteLength);
  for (let i = 0; i < bytes.byteLength; i += size) {
    for (let j = 0; j < size; j++) out[i + j] = bytes[i + size - 1 - j] as number;
  }
  return out;
}

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

/** bf16 bit pattern of a float, rounded to nearest even (NaN stays NaN). */
export function floatToBf16(value: number): number {
  f32[0] = value;
  const bits = u32[0] as number;
  if ((bits & 0x7fffffff) > 0x7f800000) return ((bits >>> 16) | 0x40) & 0xffff;
  return ((bits + 0x7fff + ((bits >>> 16) & 1)) >>> 16) & 0xffff;
}

/** The float a bf16 bit pattern encodes (exact). */
export function bf16ToFloat(bits: number): number {
  u32[0] = (bits & 0xffff) << 16;
  return f32[0] as number;
}
