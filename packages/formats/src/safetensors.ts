/**
 * A safetensors reader that trusts nothing in the file: the header length is bounded and must fit
 * the file, every tensor's dtype, shape and byte range is checked against the file, and ranges may
 * not overlap. Tensors are read one at a time (no whole-file buffer) and converted to f32.
 */
import { closeSync, fstatSync, openSync, readSync } from "node:fs";
import { basename } from "node:path";
import { InvalidArgumentError } from "@loramesh/errors";

/** A safetensors file (or shard index) that is malformed, truncated or lies about its contents. */
export class SafetensorsError extends InvalidArgumentError {}

/** Largest JSON header accepted (the reference implementation's limit). */
export const MAX_HEADER_BYTES = 100 * 1024 * 1024;

const DTYPE_BYTES: Record<string, number> = {
  F64: 8,
  F32: 4,
  F16: 2,
  BF16: 2,
  I64: 8,
  I32: 4,
  I16: 2,
  I8: 1,
  U8: 1,
  BOOL: 1,
};

/** dtypes this reader converts to f32. */
export const LOADABLE_DTYPES = ["F32", "F16", "BF16"] as const;

export interface TensorEntry {
  name: string;
  dtype: string;
  shape: number[];
  /** Byte range within the file (absolute). */
  begin: number;
  end: number;
}

/** One open safetensors file. Call `close()` when done. */
export class SafetensorsFile {
  readonly entries: ReadonlyMap<string, TensorEntry>;
  readonly metadata: Record<string, string>;

  private constructor(
    readonly path: string,
    private fd: number | undefined,
    entries: Map<string, TensorEntry>,
    metadata: Record<string, string>,
  ) {
    this.entries = entries;
    this.metadata = metadata;
  }

  /** Opens and validates a file's header. Throws SafetensorsError for anything malformed. */
  static open(path: string): SafetensorsFile {
    let fd: number;
    try {
      fd = openSync(path, "r");
    } catch (err) {
      throw new SafetensorsError(`cannot open ${path}: ${(err as Error).message}`, { cause: err });
    }
    try {
      const { entries, metadata } = readHeader(fd, path);
      return new SafetensorsFile(path, fd, entries, metadata);
    } catch (err) {
      closeSync(fd);
      throw err;
    }
  }

  /** The tensor as f32 (F16 and BF16 converted exactly). */
  readF32(name: string): Float32Array {
    const entry = this.entry(name);
    const bytes = this.readBytes(entry);
    return toF32(bytes, entry, this.path);
  }

  /** Raw little-endian bytes of a tensor (copied, 8-byte aligned). */
  readBytes(entry: TensorEntry): Uint8Array {
    if (this.fd === undefined) throw new SafetensorsError(`${this.path} is closed`);
    const length = entry.end - entry.begin;
    const out = new Uint8Array(new ArrayBuffer(length));
    let done = 0;
    while (done < length) {
      const n = readSync(this.fd, out, done, length - done, entry.begin + done);
      if (n === 0) throw new SafetensorsError(`${basename(this.path)}: unexpected end of file in tensor ${entry.name}`);
      done += n;
    }
    return out;
  }

  entry(name: string): TensorEntry {
    const entry = this.entries.get(name);
    if (!entry) throw new SafetensorsError(`${basename(this.path)} has no tensor named ${JSON.stringify(name)}`);
    return entry;
  }

  close(): void {
    if (this.fd !== undefined) closeSync(this.fd);
    this.fd = undefined;
  }
}

function readHeader(fd: number, path: string): { entries: Map<string, TensorEntry>; metadata: Record<string, string> } {
  const name = basename(path);
  const size = fstatSync(fd).size;
  if (size < 8) throw new SafetensorsError(`${name} is truncated: ${size} bytes, not even a header length`);
  const lengthBytes = Buffer.alloc(8);
  readSync(fd, lengthBytes, 0, 8, 0);
  const headerLength = lengthBytes.readBigUInt64LE(0);
  if (headerLength > BigInt(MAX_HEADER_BYTES)) {
    throw new SafetensorsError(
      `${name} declares a ${headerLength}-byte header, above the ${MAX_HEADER_BYTES}-byte limit`,
    );
  }
  const headerBytes = Number(headerLength);
  if (8 + headerBytes > size) {
    throw new SafetensorsError(
      `${name} is truncated: its header claims ${headerBytes} bytes but the file has ${size - 8} after the length`,
    );
  }
  const header = Buffer.alloc(headerBytes);
  readSync(fd, header, 0, headerBytes, 8);
  let parsed: unknown;
  try {
    parsed = JSON.parse(header.toString("utf8"));
  } catch (err) {
    // Not the parser's message: it quotes the header.
    throw new SafetensorsError(`${name}: the header is not valid JSON`, { cause: err });
  }
  if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed)) {
    throw new SafetensorsError(`${name}: the header must be a JSON object`);
  }
  const dataStart = 8 + headerBytes;
  const dataLength = size - dataStart;
  const entries = new Map<string, TensorEntry>();
  let metadata: Record<string, string> = {};
  for (const [key, value] of Object.entries(parsed as Record<string, unknown>)) {
    if (key === "__metadata__") {
      if (typeof value !== "object" || value === null)
        throw new SafetensorsError(`${name}: __metadata__ must be an object`);
      metadata = Object.fromEntries(Object.entries(value).map(([k, v]) => [k, String(v)]));
      continue;
    }
    const info = value as { dtype?: unknown; shape?: unknown; data_offsets?: unknown };
    if (typeof info !== "object" || info === null) throw new SafetensorsError(`${name}: entry ${key} is not an object`);
    if (typeof info.dtype !== "string" || !(info.dtype in DTYPE_BYTES)) {
      throw new SafetensorsError(`${name}: tensor ${key} has unknown dtype ${JSON.stringify(info.dtype)}`);
    }
    if (!Array.isArray(info.shape) || !info.shape.every((d) => Number.isSafeInteger(d) && (d as number) >= 0)) {
      throw new SafetensorsError(`${name}: tensor ${key} has an invalid shape ${JSON.stringify(info.shape)}`);
    }
    const offsets = info.data_offsets;
    if (
      !Array.isArray(offsets) ||
      offsets.length !== 2 ||
      !offsets.every((o) => Number.isSafeInteger(o) && (o as number) >= 0) ||
      (offsets[0] as number) > (offsets[1] as number)
    ) {
      throw new SafetensorsError(`${name}: tensor ${key} has invalid data_offsets ${JSON.stringify(offsets)}`);
    }
    const [begin, end] = offsets as [number, number];
    if (end > dataLength) {
      throw new SafetensorsError(
        `${name} is truncated or lies: tensor ${key} ends at byte ${end} of a ${dataLength}-byte data section`,
      );
    }
    const shape = info.shape as number[];
    const expected = shape.reduce((a, b) => a * b, 1) * (DTYPE_BYTES[info.dtype] as number);
    if (end - begin !== expected) {
      throw new SafetensorsError(
        `${name}: tensor ${key} of shape [${shape.join(", ")}] and ${info.dtype} needs ${expected} bytes, its offsets give ${end - begin}`,
      );
    }
    entries.set(key, { name: key, dtype: info.dtype, shape, begin: dataStart + begin, end: dataStart + end });
  }
  const sorted = [...entries.values()].sort((a, b) => a.begin - b.begin);
  for (let i = 1; i < sorted.length; i++) {
    const prev = sorted[i - 1] as TensorEntry;
    const cur = sorted[i] as TensorEntry;
    if (cur.begin < prev.end) throw new SafetensorsError(`${name}: tensors ${prev.name} and ${cur.name} overlap`);
  }
  return { entries, metadata };
}

function toF32(bytes: Uint8Array, entry: TensorEntry, path: string): Float32Array {
  const count = entry.shape.reduce((a, b) => a * b, 1);
  switch (entry.dtype) {
    case "F32":
      return new Float32Array(bytes.buffer, bytes.byteOffset, count);
    case "BF16": {
      const src = new Uint16Array(bytes.buffer, bytes.byteOffset, count);
      const out = new Float32Array(count);
      const bits = new Uint32Array(out.buffer);
      for (let i = 0; i < count; i++) bits[i] = (src[i] as number) << 16;
      return out;
    }
    case "F16": {
      const src = new Uint16Array(bytes.buffer, bytes.byteOffset, count);
      const out = new Float32Array(count);
      for (let i = 0; i < count; i++) out[i] = halfToFloat(src[i] as number);
      return out;
    }
    default:
      throw new SafetensorsError(
        `${basename(path)}: tensor ${entry.name} is ${entry.dtype}; weights must be one of ${LOADABLE_DTYPES.join(", ")}`,
      );
  }
}

function halfToFloat(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const exponent = (h >> 10) & 0x1f;
  const fraction = h & 0x3ff;
  if (exponent === 0) return sign * fraction * 2 ** -24;
  if (exponent === 31) return fraction ? Number.NaN : sign * Number.POSITIVE_INFINITY;
  return sign * (1 + fraction / 1024) * 2 ** (exponent - 15);
}
