/**
 * A GGUF (version 3) writer for llama.cpp: metadata key/values, tensor infos, then 32-byte aligned
 * tensor data streamed tensor by tensor. Shapes are given as PyTorch does ([out, in]); GGUF stores
 * dimensions innermost first, so they are written reversed.
 */
import { closeSync, openSync, writeSync } from "node:fs";
import { writeAll } from "./safetensors-writer";

export type GgufValue =
  | { type: "u32"; value: number }
  | { type: "i32"; value: number }
  | { type: "f32"; value: number }
  | { type: "bool"; value: boolean }
  | { type: "string"; value: string }
  | { type: "string[]"; value: readonly string[] }
  | { type: "f32[]"; value: ArrayLike<number> }
  | { type: "i32[]"; value: ArrayLike<number> };

export type GgmlType = "F32" | "F16";
const GGML_TYPE: Record<GgmlType, number> = { F32: 0, F16: 1 };
const ELEMENT_BYTES: Record<GgmlType, number> = { F32: 4, F16: 2 };
const ALIGN = 32;

export interface GgufTensorSpec {
  name: string;
  shape: number[];
  type: GgmlType;
}

class Bytes {
  private chunks: Buffer[] = [];
  u32(v: number): this {
    const b = Buffer.alloc(4);
    b.writeUInt32LE(v);
    this.chunks.push(b);
    return this;
  }
  i32(v: number): this {
    const b = Buffer.alloc(4);
    b.writeInt32LE(v);
    this.chunks.push(b);
    return this;
  }
  u64(v: number): this {
    const b = Buffer.alloc(8);
    b.writeBigUInt64LE(BigInt(v));
    this.chunks.push(b);
    return this;
  }
  f32(v: number): this {
    const b = Buffer.alloc(4);
    b.writeFloatLE(v);
    this.chunks.push(b);
    return this;
  }
  str(s: string): this {
    const b = Buffer.from(s, "utf8");
    this.u64(b.length);
    this.chunks.push(b);
    return this;
  }
  raw(b: Buffer): this {
    this.chunks.push(b);
    return this;
  }
  done(): Buffer {
    return Buffer.concat(this.chunks);
  }
}

function writeValue(out: Bytes, v: GgufValue): void {
  switch (v.type) {
    case "u32":
      out.u32(4).u32(v.value);
      break;
    case "i32":
      out.u32(5).i32(v.value);
      break;
    case "f32":
      out.u32(6).f32(v.value);
      break;
    case "bool":
      out.u32(7).raw(Buffer.from([v.value ? 1 : 0]));
      break;
    case "string":
      out.u32(8).str(v.value);
      break;
    case "string[]":
      out.u32(9).u32(8).u64(v.value.length);
      for (const s of v.value) out.str(s);
      break;
    case "f32[]": {
      out.u32(9).u32(6).u64(v.value.length);
      out.raw(Buffer.from(Float32Array.from(v.value).buffer));
      break;
    }
    case "i32[]":
      out.u32(9).u32(5).u64(v.value.length);
      out.raw(Buffer.from(Int32Array.from(v.value).buffer));
      break;
  }
}

export class GgufWriter {
  private readonly fd: number;
  private readonly offsets: number[] = [];
  private dataStart = 0;
  private next = 0;

  constructor(
    path: string,
    metadata: ReadonlyArray<[string, GgufValue]>,
    private readonly specs: readonly GgufTensorSpec[],
  ) {
    const out = new Bytes();
    out.raw(Buffer.from("GGUF", "ascii")).u32(3).u64(specs.length).u64(metadata.length);
    for (const [key, value] of metadata) {
      out.str(key);
      writeValue(out, value);
    }
    let offset = 0;
    for (const s of specs) {
      out.str(s.name).u32(s.shape.length);
      for (const d of [...s.shape].reverse()) out.u64(d);
      out.u32(GGML_TYPE[s.type]).u64(offset);
      this.offsets.push(offset);
      offset += align(s.shape.reduce((a, b) => a * b, 1) * ELEMENT_BYTES[s.type]);
    }
    const head = out.done();
    this.dataStart = align(head.length);
    this.fd = openSync(path, "w");
    writeSync(this.fd, head);
    writeSync(this.fd, Buffer.alloc(this.dataStart - head.length));
  }

  write(name: string, data: ArrayBufferView): void {
    const i = this.next++;
    const spec = this.specs[i];
    if (!spec || spec.name !== name) throw new Error(`gguf writer: expected ${spec?.name}, got ${name}`);
    writeAll(this.fd, data, this.dataStart + (this.offsets[i] as number));
  }

  close(): void {
    if (this.next !== this.specs.length)
      throw new Error(`gguf writer: ${this.specs.length - this.next} tensors missing`);
    // Pad the last tensor so the file covers every aligned range.
    const last = this.specs.length - 1;
    if (last >= 0) {
      const s = this.specs[last] as GgufTensorSpec;
      const bytes = s.shape.reduce((a, b) => a * b, 1) * ELEMENT_BYTES[s.type];
      const pad = align(bytes) - bytes;
      if (pad > 0) writeAll(this.fd, Buffer.alloc(pad), this.dataStart + (this.offsets[last] as number) + bytes);
    }
    closeSync(this.fd);
  }
}

function align(n: number): number {
  return Math.ceil(n / ALIGN) * ALIGN;
}
