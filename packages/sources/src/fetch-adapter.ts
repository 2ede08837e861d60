/**
 * Fetches a remote adapter into the host's content-addressed cache: list the source, pick the PEFT
 * files, stream them into a pending entry, hash, rename into place. A version already cached (by
 * the expected hash) is not fetched again.
 */
import { AdapterError, InvalidArgumentError } from "@loramesh/errors";
import { PEFT_CONFIG, PEFT_WEIGHTS, type AdapterCache, type CachedAdapter } from "./adapter-cache";
import { HttpDirectorySource } from "./http-source";
import { HubSource } from "./hub-source";
import type { RemoteFile, RemoteSource } from "./remote-source";
import { S3Source } from "./s3-source";
import { parseAdapterSource, type AdapterSourceSpec } from "./source-uri";

export interface FetchOptions {
  cache: AdapterCache;
  /** The content hash registration recorded; a different one at the source is refused. */
  expectedHash?: string;
  signal?: AbortSignal;
  /** Where HF_* and AWS_* come from (default process.env). */
  env?: NodeJS.ProcessEnv;
}

export interface FetchedAdapter extends CachedAdapter {
  /** True when the version was already in the cache (nothing new was added). */
  fromCache: boolean;
}

/** The RemoteSource for a parsed remote spec. */
export function openRemoteSource(spec: AdapterSourceSpec, env: NodeJS.ProcessEnv = process.env): RemoteSource {
  switch (spec.kind) {
    case "hf":
      return new HubSource(spec, env);
    case "s3":
      return new S3Source(spec.bucket, spec.prefix, env);
    case "http":
      return new HttpDirectorySource(spec.url);
    case "local":
      throw new InvalidArgumentError("a local path is not a remote source");
  }
}

/** Fetches `source` (hf://, s3://, http(s)://) into the cache and returns the cached version. */
export async function fetchAdapter(source: string, options: FetchOptions): Promise<FetchedAdapter> {
  const { cache, expectedHash, signal } = options;
  if (expectedHash !== undefined) {
    const dir = cache.lookup(expectedHash);
    if (dir !== undefined) return { dir, contentHash: expectedHash, sizeBytes: 0, existed: true, fromCache: true };
  }
  const remote = openRemoteSource(parseAdapterSource(source), options.env);
  try {
    const files = pickPeftFiles(remote.description, await remote.list(signal));
    const cached = await cache.ingest(async (sink) => {
      for (const file of files) {
        const body = await remote.open(file, signal);
        await sink.file(file.name, body.chunks, body.size ?? file.size);
      }
    }, expectedHash);
    return { ...cached, fromCache: cached.existed };
  } finally {
    if (remote instanceof S3Source) remote.close();
  }
}

/** The two PEFT files of a listing; a listing without them says what it has instead. */
export function pickPeftFiles(description: string, files: readonly RemoteFile[]): RemoteFile[] {
  const byName = new Map(files.map((f) => [f.name, f]));
  const config = byName.get(PEFT_CONFIG);
  const weights = byName.get(PEFT_WEIGHTS);
  if (config && weights) return [config, weights];
  if (config && byName.has("adapter_model.bin"))
    throw new AdapterError(`${description}: adapter_model.bin is a pickle file and is refused; use safetensors`);
  const seen =
    files.length === 0
      ? "nothing"
      : files
          .slice(0, 8)
          .map((f) => f.name)
          .join(", ");
  throw new AdapterError(`${description} lists no PEFT adapter (${PEFT_CONFIG} and ${PEFT_WEIGHTS}); it has ${seen}`);
}
