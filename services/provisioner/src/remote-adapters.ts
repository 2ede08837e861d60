/**
 * Registration from a remote source: fetch the adapter into this host's content-addressed cache
 * (where executors on the host find it by hash), then validate it against the base model from the
 * cached files. A refused adapter is removed from the cache again, unless it was there before.
 */
import { adapterContentHash, inspectAdapter, type ModelConfig } from "@loramesh/formats";
import { fetchAdapter, type AdapterCache } from "@loramesh/sources";

export class RemoteAdapters {
  constructor(
    private readonly cache: AdapterCache,
    private readonly model: ModelConfig,
  ) {}

  async fetch(uri: string): Promise<{
    adapter: ReturnType<typeof inspectAdapter> & { contentHash: string };
    dir: string;
    discard: () => void;
  }> {
    const fetched = await fetchAdapter(uri, { cache: this.cache });
    const discard = (): void => {
      if (!fetched.fromCache) this.cache.remove(fetched.contentHash);
    };
    try {
      const inspected = inspectAdapter(fetched.dir, this.model);
      const contentHash = await adapterContentHash(inspected);
      return { adapter: { ...inspected, contentHash }, dir: fetched.dir, discard };
    } catch (err) {
      discard();
      throw err;
    }
  }
}
