/**
 * Base-model weights as the native kernels take them, in the checkpoint's own precision: BF16 held
 * as bf16 and F32 as f32, both used in place from the mapped file (no read, no conversion, no copy);
 * F16 is widened to f32 (the core has no f16 kernels). Tensors the model stacks (q/k/v, gate/up)
 * are one view when the checkpoint stores them back to back, else one copy in their dtype.
 */
import { bf16, f32, type Tensor } from "@loramesh/native";
import type { Checkpoint } from "./checkpoint";
import type { TensorEntry } from "@loramesh/formats";

export type Weight = Tensor<"f32"> | Tensor<"bf16">;

const count = (shape: readonly number[]) => shape.reduce((a, b) => a * b, 1);

export class WeightLoader {
  constructor(private readonly ckpt: Checkpoint) {}

  /** One tensor of `shape`. */
  one(name: string, shape: readonly number[]): Weight {
    return this.stacked([[name, shape]], shape);
  }

  /** Tensors concatenated along rows into `shape`. */
  stacked(parts: ReadonlyArray<readonly [string, readonly number[]]>, shape: readonly number[]): Weight {
    const names = parts.map((p) => p[0]);
    const shapes = parts.map((p) => p[1]);
    const dtypes = new Set(names.map((n) => this.ckpt.entry(n).dtype));
    const dtype = dtypes.size === 1 ? [...dtypes][0] : "mixed";
    if (dtype === "BF16" || dtype === "F32") {
      const elem = dtype === "BF16" ? 2 : 4;
      const mapped = this.ckpt.mapped(names, shapes);
      if (mapped && mapped.offset % elem === 0) {
        const n = count(shape);
        return dtype === "BF16"
          ? bf16(shape, new Uint16Array(mapped.buffer, mapped.offset, n))
          : f32(shape, new Float32Array(mapped.buffer, mapped.offset, n));
      }
      if (dtype === "BF16") return bf16(shape, this.copyBf16(names, shapes, count(shape)));
    }
    return f32(shape, this.stackF32(names, shapes, count(shape)));
  }

  /** A tensor as f32 whatever its dtype (biases: the kernels take them as f32). */
  f32(parts: ReadonlyArray<readonly [string, readonly number[]]>, shape: readonly number[]): Tensor<"f32"> {
    return f32(
      shape,
      this.stackF32(
        parts.map((p) => p[0]),
        parts.map((p) => p[1]),
        count(shape),
      ),
    );
  }

  /** bf16 tensors not adjacent (or misaligned) in the file: copied once, still as bf16. */
  private copyBf16(names: string[], shapes: ReadonlyArray<readonly number[]>, n: number): Uint16Array {
    const out = new Uint16Array(n);
    let at = 0;
    names.forEach((name, i) => {
      const m = this.ckpt.mapped([name], [shapes[i] as readonly number[]]);
      const e = m?.entries[0] as TensorEntry;
      const bytes = new Uint8Array((m as { buffer: ArrayBuffer }).buffer, m?.offset, e.end - e.begin);
      new Uint8Array(out.buffer, at * 2, bytes.length).set(bytes);
      at += bytes.length / 2;
    });
    return out;
  }

  private stackF32(names: string[], shapes: ReadonlyArray<readonly number[]>, n: number): Float32Array {
    if (names.length === 1) return this.ckpt.read(names[0] as string, shapes[0] as readonly number[]);
    const out = new Float32Array(n);
    let at = 0;
    names.forEach((name, i) => {
      const part = this.ckpt.read(name, shapes[i] as readonly number[]);
      out.set(part, at);
      at += part.length;
    });
    return out;
  }
}
