/**
 * The files of an adapter directory, checked before a byte of them is parsed: the directory is a
 * real directory (inside the configured roots, symlinks resolved), `adapter_config.json` and
 * `adapter_model.safetensors` are regular files (not symlinks, directories or devices) within size
 * limits. Errors name the file and never quote its contents.
 */
import { lstatSync, realpathSync, statSync, type Stats } from "node:fs";
import { isAbsolute, join, relative, sep } from "node:path";
import { AdapterError } from "@loramesh/errors";

/** The documented bounds on what an adapter may declare or hold. */
export interface AdapterLimits {
  /** Largest r (and rank_pattern value). */
  maxRank: number;
  /** Largest lora_alpha (and alpha_pattern value); alpha must also be > 0. */
  maxAlpha: number;
  /** Largest |x| of any weight in A or B; NaN and ±Inf are always refused. */
  maxAbsWeight: number;
  /** Most entries in target_modules, rank_pattern, alpha_pattern, layers_to_transform. */
  maxListEntries: number;
  /** Largest adapter_config.json, bytes. */
  maxConfigBytes: number;
  /** Largest adapter_model.safetensors, bytes. */
  maxWeightsBytes: number;
}

export const ADAPTER_LIMITS: Readonly<AdapterLimits> = Object.freeze({
  maxRank: 4096,
  maxAlpha: 1e6,
  maxAbsWeight: 1e4,
  maxListEntries: 1024,
  maxConfigBytes: 1024 * 1024,
  maxWeightsBytes: 8 * 1024 * 1024 * 1024,
});

/** The two files of an adapter directory, checked. */
export interface AdapterFiles {
  configPath: string;
  weightsPath: string;
  configBytes: number;
  weightsBytes: number;
}

function kindOf(st: Stats): string {
  if (st.isDirectory()) return "a directory";
  if (st.isSymbolicLink()) return "a symbolic link";
  if (st.isCharacterDevice() || st.isBlockDevice()) return "a device";
  if (st.isFIFO()) return "a named pipe";
  if (st.isSocket()) return "a socket";
  return "not a regular file";
}

// lstat without following links; undefined when absent.
function lstatOrUndefined(path: string): Stats | undefined {
  try {
    return lstatSync(path);
  } catch {
    return undefined;
  }
}

function regularFile(dir: string, name: string, maxBytes: number): { path: string; bytes: number } | undefined {
  const path = join(dir, name);
  const st = lstatOrUndefined(path);
  if (st === undefined) return undefined;
  if (!st.isFile()) throw new AdapterError(`${name} must be a regular file, but it is ${kindOf(st)}`);
  if (st.size > maxBytes) throw new AdapterError(`${name} is ${st.size} bytes, above the ${maxBytes}-byte limit`);
  return { path, bytes: st.size };
}

/** Checks the directory and its two files; throws AdapterError naming the file. */
export function adapterFiles(dir: string, limits: Partial<AdapterLimits> = {}): AdapterFiles {
  const { maxConfigBytes, maxWeightsBytes } = { ...ADAPTER_LIMITS, ...limits };
  let st: Stats;
  try {
    st = statSync(dir);
  } catch {
    throw new AdapterError(`${dir} does not exist or cannot be read on this host`);
  }
  if (!st.isDirectory()) throw new AdapterError(`${dir} must be a directory, but it is ${kindOf(st)}`);
  const config = regularFile(dir, "adapter_config.json", maxConfigBytes);
  if (config === undefined) throw new AdapterError(`${dir} has no adapter_config.json`);
  const weights = regularFile(dir, "adapter_model.safetensors", maxWeightsBytes);
  if (weights === undefined) {
    if (lstatOrUndefined(join(dir, "adapter_model.bin")) !== undefined) {
      throw new AdapterError(
        `${dir}: adapter_model.bin is a pickle file and is refused; save the adapter with safetensors`,
      );
    }
    throw new AdapterError(`${dir} has no adapter_model.safetensors`);
  }
  return { configPath: config.path, weightsPath: weights.path, configBytes: config.bytes, weightsBytes: weights.bytes };
}

/**
 * The real path of `dir` when it lies inside one of `roots` (after resolving every symlink of
 * both); throws AdapterError otherwise. A missing directory gets the same message as one outside
 * the roots, so callers learn nothing about the server's files. No roots: any absolute directory.
 */
export function resolveAdapterDir(dir: string, roots: readonly string[]): string {
  if (!isAbsolute(dir)) throw new AdapterError(`source.local_dir must be an absolute path, got ${JSON.stringify(dir)}`);
  if (roots.length === 0) return dir;
  const refused = new AdapterError(
    `source.local_dir ${JSON.stringify(dir.slice(0, 200))} is not a directory under the adapter roots`,
  );
  let real: string;
  try {
    real = realpathSync(dir);
  } catch {
    throw refused;
  }
  for (const root of roots) {
    let realRoot: string;
    try {
      realRoot = realpathSync(root);
    } catch {
      continue;
    }
    const rel = relative(realRoot, real);
    if (rel === "" || (!rel.startsWith(`..${sep}`) && rel !== ".." && !isAbsolute(rel))) return real;
  }
  throw refused;
}
