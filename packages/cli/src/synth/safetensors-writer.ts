/**
 * Streams tensors into a safetensors file without holding the whole checkpoint: the header is
 * written first from the shapes, then each tensor's bytes as they are produced. The header is padded
 * with spaces so the data section starts on a 64-byte boundary (readers may map tensors in place).
 */
import { closeSync, openSync, writeSync } from "node:fs";

export type StDtype = "F32" | "BF16" | "F16";

export interface StTensorSpec {
  name: string;
  shape: number[];
  dtype: StDtype;
}

const BYTES: Record<StDtype, number> = { F32: 4, BF16: 2, F16: 2 };

export class SafetensorsWriter {
  private readonly fd: number;
  private next = 0;

  constructor(
    path: string,
    private readonly specs: readonly StTensorSpec[],
    metadata: Record<string, string> = { format: "pt" },
  ) {
    const header: Record<string, unknown> = { __metadata__: metadata };
    let offset = 0;
    for (const s of specs) {
      const bytes = s.shape.reduce((a, b) => a * b, 1) * BYTES[s.dtype];
      header[s.name] = { dtype: s.dtype, shape: s.shape, data_offsets: [offset, offset + bytes] };
      offset += bytes;
    }
    let json = JSON.stringify(header);
    json += " ".repeat((64 - ((8 + Buffer.byteLength(json)) % 64)) % 64);
    const length = Buffer.alloc(8);
    length.writeBigUInt64LE(BigInt(Buffer.byteLength(json)));
    this.fd = openSync(path, "w");
    writeSync(this.fd, length);
    writeSync(this.fd, Buffer.from(json));
  }

  /** Writes the next tensor (in spec order); `data` must be its raw little-endian bytes. */
  write(name: string, data: ArrayBufferView): void {
    const spec = this.specs[this.next++];
    if (!spec || spec.name !== name) throw new Error(`safetensors writer: expected ${spec?.name}, got ${name}`);
    writeAll(this.fd, data);
  }

  close(): void {
    if (this.next !== this.specs.length)
      throw new Error(`safetensors writer: ${this.specs.length - this.next} tensors missing`);
    closeSync(this.fd);
  }
}

export function writeAll(fd: number, data: ArrayBufferView, position?: number): void {
  const bytes = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  let done = 0;
  while (done < bytes.length) {
    done += writeSync(
      fd,
      bytes,
      done,
      Math.min(bytes.length - done, 1 << 30),
      position === undefined ? null : position + done,
    );
  }
}
