/** Where a host's processes share their adapter cache unless told otherwise. */
import { homedir } from "node:os";
import { join } from "node:path";

/** LORAMESH_ADAPTER_CACHE, else $XDG_CACHE_HOME/loramesh/adapters, else ~/.cache/loramesh/adapters. */
export function defaultCacheDir(env: NodeJS.ProcessEnv = process.env): string {
  if (env["LORAMESH_ADAPTER_CACHE"]) return env["LORAMESH_ADAPTER_CACHE"];
  return join(env["XDG_CACHE_HOME"] || join(homedir(), ".cache"), "loramesh", "adapters");
}
