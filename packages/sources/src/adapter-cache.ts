/**
 * A content-addressed adapter cache shared by the processes of a host: `objects/<sha256>/` holds
 * one adapter version's PEFT files, named by the same content hash registration records
 * (`adapterContentHash`). Downloads are written under `tmp/` and renamed into place in one step, so
 * no process ever sees a partial adapter, and two processes fetching the same version race
 * harmlessly (the second rename finds the first's result). No locks: eviction renames a victim out
 * of `objects/` before deleting it. Recency is the directory's mtime, refreshed on every hit.
 */
import { createHash, randomBytes, type Hash } from "node:crypto";
import { existsSync, mkdirSync, readdirSync, renameSync, rmSync, statSync, utimesSync } from "node:fs";
import { mkdir, mkdtemp, open, rename, rm, type FileHandle } from "node:fs/promises";
import { join, resolve, sep } from "node:path";
import {
  FailedPreconditionError,
  InvalidArgumentError,
  isLoraMeshError,
  ResourceExhaustedError,
  UnavailableError,
} from "@loramesh/errors";
import { adapterContentHash } from "@loramesh/formats";

export const PEFT_CONFIG = "adapter_config.json";
export const PEFT_WEIGHTS = "adapter_model.safetensors";

const HASH = /^[0-9a-f]{64}$/;
/** Temporary directories older than this are a crashed process's leftovers. */
const STALE_TMP_MS = 3600_000;

export interface CachedAdapter {
  dir: string;
  contentHash: string;
  sizeBytes: number;
  /** True when the version was already cached (another fetch put it there first). */
  existed: boolean;
}

/** One file being written into a pending cache entry. */
export interface CacheFileWriter {
  /** Appends `bytes`; the writer may hold them until a later call, so the caller must not reuse them. */
  write(bytes: Uint8Array): Promise<void>;
  /** Closes the file; a size that differs from the announced one is a truncated download. */
  end(): Promise<number>;
}

/** What a fetcher writes a new entry through (see AdapterCache.ingest). */
export interface IngestSink {
  begin(name: string, announcedSize?: number): Promise<CacheFileWriter>;
  /** Writes a whole file from a byte stream. */
  file(name: string, chunks: AsyncIterable<Uint8Array> | Iterable<Uint8Array>, announcedSize?: number): Promise<number>;
}

export interface AdapterCacheOptions {
  root: string;
  /** Most bytes the cache holds; least recently used entries go first. */
  limitBytes: number;
}

export class AdapterCache {
  readonly root: string;
  readonly limitBytes: number;
  private readonly objects: string;
  private readonly tmp: string;

  constructor(options: AdapterCacheOptions) {
    this.root = resolve(options.root);
    this.limitBytes = options.limitBytes;
    this.objects = join(this.root, "objects");
    this.tmp = join(this.root, "tmp");
    try {
      mkdirSync(this.objects, { recursive: true });
      mkdirSync(this.tmp, { recursive: true });
      this.sweepStaleTmp();
    } catch {
      // A process that never fetches must still start; the first fetch reports the directory.
    }
  }

  /** The directory of a cached version, refreshed as recently used; undefined when absent. */
  lookup(contentHash: string): string | undefined {
    const dir = this.entryDir(contentHash);
    if (!existsSync(join(dir, PEFT_WEIGHTS))) return undefined;
    const now = new Date();
    try {
      utimesSync(dir, now, now);
    } catch {
      return undefined; // evicted in between
    }
    return dir;
  }

  /** The entry directory for a hash; anything but a sha-256 hex string would leave the cache. */
  entryDir(contentHash: string): string {
    if (!HASH.test(contentHash))
      throw new InvalidArgumentError(`content hash ${JSON.stringify(contentHash)} is not a sha-256 hex string`);
    return join(this.objects, contentHash);
  }

  /** Cached versions, least recently used first. */
  entries(): Array<{ contentHash: string; sizeBytes: number; usedMs: number }> {
    const out: Array<{ contentHash: string; sizeBytes: number; usedMs: number }> = [];
    if (!existsSync(this.objects)) return out;
    for (const name of readdirSync(this.objects)) {
      if (!HASH.test(name)) continue;
      try {
        const dir = join(this.objects, name);
        const usedMs = statSync(dir).mtimeMs;
        const sizeBytes = readdirSync(dir).reduce((n, f) => n + statSync(join(dir, f)).size, 0);
        out.push({ contentHash: name, sizeBytes, usedMs });
      } catch {
        // evicted while we looked
      }
    }
    return out.sort((a, b) => a.usedMs - b.usedMs);
  }

  get bytesUsed(): number {
    return this.entries().reduce((n, e) => n + e.sizeBytes, 0);
  }

  /** Removes a version (a registration that refused what it downloaded). */
  remove(contentHash: string): void {
    const dir = this.entryDir(contentHash);
    const doomed = join(this.tmp, `evict-${randomBytes(6).toString("hex")}`);
    try {
      renameSync(dir, doomed);
    } catch {
      return;
    }
    rmSync(doomed, { recursive: true, force: true });
  }

  /**
   * Adds one version: `fill` writes its files through the sink into a private directory; then the
   * content hash is computed, checked against `expectedHash` when given, and the directory renamed
   * into place. On any failure nothing stays behind. Older entries are evicted to stay under the
   * limit.
   */
  async ingest(fill: (sink: IngestSink) => Promise<void>, expectedHash?: string): Promise<CachedAdapter> {
    if (expectedHash !== undefined) this.entryDir(expectedHash);
    let work: string;
    try {
      await mkdir(this.objects, { recursive: true });
      await mkdir(this.tmp, { recursive: true });
      work = await mkdtemp(join(this.tmp, `fetch-${process.pid}-`));
    } catch (err) {
      throw new UnavailableError(`the adapter cache ${this.root} is not writable (${(err as Error).message})`, {
        cause: err,
      });
    }
    try {
      const written = { bytes: 0 };
      const streamed = new StreamedHash();
      await fill(this.sink(work, written, streamed));
      for (const f of [PEFT_CONFIG, PEFT_WEIGHTS])
        if (!existsSync(join(work, f))) throw new InvalidArgumentError(`the source has no ${f}`);
      const contentHash =
        streamed.digest() ??
        (await adapterContentHash({ configPath: join(work, PEFT_CONFIG), weightsPath: join(work, PEFT_WEIGHTS) }));
      if (expectedHash !== undefined && contentHash !== expectedHash)
        throw new FailedPreconditionError(
          `the adapter's files changed since registration (content hash ${contentHash.slice(0, 12)}, expected ${expectedHash.slice(0, 12)}); register it again for the new version`,
        );
      const dir = this.entryDir(contentHash);
      let existed = false;
      try {
        await rename(work, dir);
      } catch (err) {
        // Another process of the host put the same version in place first: theirs is identical.
        if (!existsSync(join(dir, PEFT_WEIGHTS))) throw err;
        existed = true;
      }
      this.lookup(contentHash);
      this.evictFor(contentHash);
      return { dir, contentHash, sizeBytes: written.bytes, existed };
    } finally {
      await rm(work, { recursive: true, force: true });
    }
  }

  private sink(work: string, written: { bytes: number }, streamed: StreamedHash): IngestSink {
    const begin = async (name: string, announcedSize?: number): Promise<CacheFileWriter> => {
      const path = this.safeJoin(work, name);
      if (announcedSize !== undefined) this.checkRoom(written.bytes + announcedSize);
      const handle: FileHandle = await open(path, "wx");
      const hash = streamed.begin(name);
      let size = 0;
      // Chunks are gathered and written with one writev per FLUSH_BYTES: sources hand over 16 KiB
      // to 256 KiB at a time, and a syscall (and an await) per chunk is most of a fast fetch's cost.
      let pending: Uint8Array[] = [];
      let pendingBytes = 0;
      const flush = async (): Promise<void> => {
        if (pending.length === 0) return;
        const parts = pending;
        pending = [];
        pendingBytes = 0;
        await writeAll(handle, parts);
      };
      return {
        write: async (bytes) => {
          size += bytes.byteLength;
          written.bytes += bytes.byteLength;
          this.checkRoom(written.bytes);
          if (announcedSize !== undefined && size > announcedSize)
            throw new UnavailableError(`${name}: the source sent more than the ${announcedSize} bytes it announced`);
          hash?.update(bytes);
          pending.push(bytes);
          pendingBytes += bytes.byteLength;
          if (pendingBytes >= FLUSH_BYTES) await flush();
        },
        end: async () => {
          streamed.end(name);
          try {
            await flush();
          } finally {
            await handle.close();
          }
          if (announcedSize !== undefined && size !== announcedSize)
            throw new UnavailableError(`${name}: truncated download (${size} of ${announcedSize} bytes)`);
          return size;
        },
      };
    };
    return {
      begin,
      file: async (name: string, chunks: AsyncIterable<Uint8Array> | Iterable<Uint8Array>, announcedSize?: number) => {
        const writer = await begin(name, announcedSize);
        try {
          for await (const chunk of chunks as AsyncIterable<Uint8Array>) await writer.write(chunk);
        } catch (err) {
          await writer.end().catch(() => undefined);
          if (isLoraMeshError(err)) throw err;
          throw new UnavailableError(`${name}: the download broke off (${(err as Error).message})`, { cause: err });
        }
        return writer.end();
      },
    };
  }

  /** A file name from a source or a peer, joined to `dir`; one that climbs out is refused. */
  private safeJoin(dir: string, name: string): string {
    const path = resolve(dir, name);
    if (name === "" || name.includes("/") || name.includes("\\") || !path.startsWith(dir + sep))
      throw new InvalidArgumentError(`file name ${JSON.stringify(name)} escapes the cache directory`);
    return path;
  }

  private checkRoom(bytes: number): void {
    if (bytes > this.limitBytes)
      throw new ResourceExhaustedError(
        `the adapter needs more than ${bytes - 1} bytes, over the adapter cache's limit of ${this.limitBytes} bytes`,
      );
  }

  /** Evicts least recently used versions (never `keep`) until the cache fits its limit. */
  private evictFor(keep: string): void {
    const entries = this.entries();
    let total = entries.reduce((n, e) => n + e.sizeBytes, 0);
    for (const e of entries) {
      if (total <= this.limitBytes) break;
      if (e.contentHash === keep) continue;
      this.remove(e.contentHash);
      total -= e.sizeBytes;
    }
  }

  private sweepStaleTmp(): void {
    const now = Date.now();
    for (const name of readdirSync(this.tmp)) {
      const path = join(this.tmp, name);
      try {
        if (now - statSync(path).mtimeMs > STALE_TMP_MS) rmSync(path, { recursive: true, force: true });
      } catch {
        // another process swept it
      }
    }
  }
}

/**
 * The content hash (SHA-256 of the config, then the weights) computed while the files are written,
 * so a fetched adapter is not read back just to hash it. Valid only when the files arrive in that
 * order, one after the other (every fetcher writes them so); otherwise the cache hashes the files.
 */
class StreamedHash {
  private readonly hash = createHash("sha256");
  private done = 0; // files of ORDER written completely
  private open: string | undefined;
  private valid = true;
  private static readonly ORDER = [PEFT_CONFIG, PEFT_WEIGHTS];

  /** The hash to feed this file's bytes to; undefined when the order broke (hash from disk). */
  begin(name: string): Hash | undefined {
    if (this.open !== undefined || StreamedHash.ORDER[this.done] !== name) this.valid = false;
    if (!this.valid) return undefined;
    this.open = name;
    return this.hash;
  }

  end(name: string): void {
    if (this.valid && this.open === name) {
      this.open = undefined;
      this.done++;
    }
  }

  digest(): string | undefined {
    return this.valid && this.done === StreamedHash.ORDER.length ? this.hash.digest("hex") : undefined;
  }
}

/** How many bytes a cache file writer gathers before it writes them. */
const FLUSH_BYTES = 4 << 20;

/** Writes every byte of `parts` (writev may write fewer than asked; the rest goes again). */
async function writeAll(handle: FileHandle, parts: Uint8Array[]): Promise<void> {
  let left = parts;
  while (left.length > 0) {
    const { bytesWritten } = await handle.writev(left);
    let skip = bytesWritten;
    const rest: Uint8Array[] = [];
    for (const p of left) {
      if (skip >= p.byteLength) {
        skip -= p.byteLength;
        continue;
      }
      rest.push(skip > 0 ? p.subarray(skip) : p);
      skip = 0;
    }
    left = rest;
  }
}
