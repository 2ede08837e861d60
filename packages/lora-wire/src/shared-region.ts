/**
 * The same-host shared-memory region of one worker↔LoRA-server stream: a file in /dev/shm mapped
 * by both processes, the first half for activations and the second for deltas. Today the worker
 * creates it and sends its path in the `open` message; the server maps that path. Offsets and
 * lengths read from the wire are checked here, so neither side ever views memory outside the region.
 */
import { randomBytes } from "node:crypto";
import { unlinkSync } from "node:fs";
import { InvalidArgumentError } from "@loramesh/errors";
import { native } from "@loramesh/native";

/** Default size of a region: 16 MiB of activations and 16 MiB of deltas. */
export const DEFAULT_SHARED_REGION_BYTES = 32 * 1024 * 1024;

export class SharedRegion {
  private constructor(
    /** File path both processes map; it travels in `LoraStreamOpen.shared_memory_name`. */
    readonly path: string,
    private readonly bytes: Uint8Array,
    /** The creator unlinks the file when the stream ends. */
    private readonly owner: boolean,
  ) {}

  /** Whether this platform has /dev/shm mappings. */
  static supported(): boolean {
    return process.platform === "linux";
  }

  /** Worker side: creates and maps a fresh region named after the worker. */
  static create(workerId: string, byteLength = DEFAULT_SHARED_REGION_BYTES): SharedRegion {
    const path = `/dev/shm/loramesh-${workerId}-${randomBytes(4).toString("hex")}`;
    return new SharedRegion(path, new Uint8Array(native.mapSharedMemory(path, byteLength, true)), true);
  }

  /** Server side: maps a region a worker on this host created. */
  static attach(path: string, byteLength: number): SharedRegion {
    return new SharedRegion(path, new Uint8Array(native.mapSharedMemory(path, byteLength, false)), false);
  }

  get byteLength(): number {
    return this.bytes.byteLength;
  }

  /** Offset of the delta half. */
  get resultOffset(): number {
    return Math.floor(this.bytes.byteLength / 2 / 4) * 4;
  }

  /** Whether activations of `inBytes` and deltas of `outBytes` fit their halves. */
  fits(inBytes: number, outBytes: number): boolean {
    return inBytes <= this.resultOffset && outBytes <= this.bytes.byteLength - this.resultOffset;
  }

  /** Copies f32 elements into the region at `offset`. */
  write(offset: number, data: Float32Array): void {
    this.view(offset, data.length).set(data);
  }

  /** Copies `count` f32 elements out of the region (the peer may overwrite them next). */
  read(offset: number, count: number): Float32Array {
    return this.view(offset, count).slice();
  }

  /** Unlinks the file if this side created it; the mapping lives until it is collected. */
  release(): void {
    if (!this.owner) return;
    try {
      unlinkSync(this.path);
    } catch {
      // already gone
    }
  }

  private view(offset: number, count: number): Float32Array {
    if (!Number.isSafeInteger(offset) || offset < 0 || offset % 4 !== 0 || offset + count * 4 > this.bytes.byteLength)
      throw new InvalidArgumentError(
        `shared-memory slice at ${offset} of ${count} f32 is outside the ${this.bytes.byteLength}-byte region`,
      );
    return new Float32Array(this.bytes.buffer, this.bytes.byteOffset + offset, count);
  }
}
