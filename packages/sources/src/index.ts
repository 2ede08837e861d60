/** @loramesh/sources: where adapters come from, and the host's content-addressed adapter cache. */
export {
  AdapterCache,
  PEFT_CONFIG,
  PEFT_WEIGHTS,
  type AdapterCacheOptions,
  type CachedAdapter,
  type CacheFileWriter,
  type IngestSink,
} from "./adapter-cache";
export { defaultCacheDir } from "./cache-dir";
export { fetchAdapter, openRemoteSource, pickPeftFiles, type FetchedAdapter, type FetchOptions } from "./fetch-adapter";
export { HttpDirectorySource } from "./http-source";
export { DEFAULT_HF_ENDPOINT, HubSource, type HubLocation } from "./hub-source";
export type { RemoteBody, RemoteFile, RemoteSource } from "./remote-source";
export { S3Source } from "./s3-source";
export { isRemoteSource, parseAdapterSource, type AdapterSourceSpec } from "./source-uri";
