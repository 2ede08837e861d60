/**
 * A Hugging Face checkpoint's weights: `model.safetensors`, or shards listed in
 * `model.safetensors.index.json`. Pickle weights (`*.bin`) are refused: loading them would run
 * arbitrary code.
 */
import { existsSync, readFileSync } from "node:fs";
import { basename, join } from "node:path";
import { SafetensorsError, SafetensorsFile, type TensorEntry } from "@loramesh/formats";

export class Checkpoint {
  private constructor(
    readonly dir: string,
    private readonly files: SafetensorsFile[],
    private readonly index: Map<string, SafetensorsFile>,
  ) {}

  static open(dir: string): Checkpoint {
    const single = join(dir, "model.safetensors");
    const indexPath = join(dir, "model.safetensors.index.json");
    if (existsSync(indexPath)) return Checkpoint.openSharded(dir, indexPath);
    if (existsSync(single)) {
      const file = SafetensorsFile.open(single);
      return new Checkpoint(dir, [file], new Map([...file.entries.keys()].map((k) => [k, file])));
    }
    if (existsSync(join(dir, "pytorch_model.bin")) || existsSync(join(dir, "pytorch_model.bin.index.json"))) {
      throw new SafetensorsError(`${dir} has only pickle weights (pytorch_model.bin); convert them to safetensors`);
    }
    throw new SafetensorsError(`${dir} has no model.safetensors or model.safetensors.index.json`);
  }

  private static openSharded(dir: string, indexPath: string): Checkpoint {
    let weightMap: Record<string, unknown>;
    try {
      const parsed = JSON.parse(readFileSync(indexPath, "utf8")) as { weight_map?: unknown };
      if (typeof parsed.weight_map !== "object" || parsed.weight_map === null) throw new Error("no weight_map object");
      weightMap = parsed.weight_map as Record<string, unknown>;
    } catch (err) {
      throw new SafetensorsError(`${basename(indexPath)} is not a valid shard index: ${(err as Error).message}`, {
        cause: err,
      });
    }
    const files = new Map<string, SafetensorsFile>();
    const index = new Map<string, SafetensorsFile>();
    try {
      for (const [tensor, shard] of Object.entries(weightMap)) {
        if (typeof shard !== "string" || shard !== basename(shard) || !shard.endsWith(".safetensors")) {
          throw new SafetensorsError(
            `shard index maps ${tensor} to ${JSON.stringify(shard)}, not a .safetensors file in ${dir}`,
          );
        }
        let file = files.get(shard);
        if (!file) {
          file = SafetensorsFile.open(join(dir, shard));
          files.set(shard, file);
        }
        if (!file.entries.has(tensor))
          throw new SafetensorsError(`shard ${shard} does not contain ${tensor}, which the index places there`);
        index.set(tensor, file);
      }
    } catch (err) {
      for (const f of files.values()) f.close();
      throw err;
    }
    return new Checkpoint(dir, [...files.values()], index);
  }

  names(): string[] {
    return [...this.index.keys()];
  }

  has(name: string): boolean {
    return this.index.has(name);
  }

  entry(name: string): TensorEntry {
    const file = this.index.get(name);
    if (!file) throw new SafetensorsError(`the checkpoint in ${this.dir} has no tensor ${name}`);
    return file.entry(name);
  }

  /** Reads a tensor as f32 and checks its shape. */
  read(name: string, shape: readonly number[]): Float32Array {
    const entry = this.entry(name);
    if (entry.shape.length !== shape.length || entry.shape.some((d, i) => d !== shape[i])) {
      throw new SafetensorsError(
        `${name} has shape [${entry.shape.join(", ")}], the config implies [${shape.join(", ")}]`,
      );
    }
    return (this.index.get(name) as SafetensorsFile).readF32(name);
  }

  close(): void {
    for (const f of this.files) f.close();
  }
}
