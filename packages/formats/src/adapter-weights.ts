/**
 * The values of an adapter's A and B tensors, checked before registration keeps anything: every
 * weight finite and within ±maxAbsWeight. Read in 1 MiB slices with an await between them, so a
 * large adapter never holds the event loop for long.
 */
import { open } from "node:fs/promises";
import { AdapterError } from "@loramesh/errors";
import { ADAPTER_LIMITS } from "./adapter-files";
import { SafetensorsFile, type TensorEntry } from "./safetensors";

const SLICE_BYTES = 1024 * 1024;

/** A bf16/f16 half to f32 bits for a 16-bit value (f16 via the exponent rebias, bf16 by shifting). */
function halfToNumber(h: number, dtype: string): number {
  if (dtype === "BF16") {
    f32bits[0] = h << 16;
    return f32view[0] as number;
  }
  const sign = h & 0x8000 ? -1 : 1;
  const exponent = (h >> 10) & 0x1f;
  const fraction = h & 0x3ff;
  if (exponent === 0) return sign * fraction * 2 ** -24;
  if (exponent === 31) return fraction ? Number.NaN : sign * Number.POSITIVE_INFINITY;
  return sign * (1 + fraction / 1024) * 2 ** (exponent - 15);
}
const f32bits = new Uint32Array(1);
const f32view = new Float32Array(f32bits.buffer);

/** Index of the first value in `bytes` that is not finite or exceeds `bound`, else -1. */
function firstBad(bytes: Uint8Array, dtype: string, bound: number): { index: number; value: number } | undefined {
  if (dtype === "F32") {
    const values = new Float32Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 4);
    for (let i = 0; i < values.length; i++) {
      const v = values[i] as number;
      // One comparison catches NaN too (NaN fails every comparison).
      if (!(Math.abs(v) <= bound)) return { index: i, value: v };
    }
    return undefined;
  }
  const halves = new Uint16Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 2);
  for (let i = 0; i < halves.length; i++) {
    const v = halfToNumber(halves[i] as number, dtype);
    if (!(Math.abs(v) <= bound)) return { index: i, value: v };
  }
  return undefined;
}

/**
 * Checks every named tensor of `weightsPath`: finite, |x| <= maxAbsWeight. Throws AdapterError
 * naming the tensor and the element (never other contents of the file).
 */
export async function checkAdapterWeights(
  weightsPath: string,
  tensorNames: readonly string[],
  maxAbsWeight: number = ADAPTER_LIMITS.maxAbsWeight,
): Promise<void> {
  const header = SafetensorsFile.open(weightsPath);
  let entries: TensorEntry[];
  try {
    entries = tensorNames.map((n) => header.entry(n));
  } finally {
    header.close();
  }
  const handle = await open(weightsPath, "r");
  try {
    const buffer = new Uint8Array(new ArrayBuffer(SLICE_BYTES));
    for (const entry of entries) {
      const width = entry.dtype === "F32" ? 4 : 2;
      for (let offset = entry.begin; offset < entry.end; offset += SLICE_BYTES) {
        const length = Math.min(SLICE_BYTES, entry.end - offset);
        const { bytesRead } = await handle.read(buffer, 0, length, offset);
        if (bytesRead !== length) throw new AdapterError(`adapter_model.safetensors changed while it was checked`);
        const bad = firstBad(buffer.subarray(0, length), entry.dtype, maxAbsWeight);
        if (bad !== undefined) {
          const element = (offset - entry.begin) / width + bad.index;
          throw new AdapterError(
            `adapter_model.safetensors: ${entry.name} element ${element} is ${bad.value}; weights must be finite with |x| <= ${maxAbsWeight}`,
          );
        }
      }
    }
  } finally {
    await handle.close();
  }
}
