/**
 * The last answer the provisioner gave for each (tenant, adapter name). Used only while the
 * provisioner cannot answer (restarting, or its Redis is), so that requests for adapters already
 * served keep being routed from the cached placement instead of failing.
 */
import type { AdapterRecord } from "../domain/types";

/** Entries kept; the least recently used go first. */
const MAX_ENTRIES = 10_000;

export class AdapterCache {
  private readonly records = new Map<string, AdapterRecord>();

  remember(tenant: string, name: string, record: AdapterRecord): void {
    const key = cacheKey(tenant, name);
    this.records.delete(key);
    this.records.set(key, record);
    if (this.records.size > MAX_ENTRIES) this.records.delete(this.records.keys().next().value as string);
  }

  recall(tenant: string, name: string): AdapterRecord | undefined {
    return this.records.get(cacheKey(tenant, name));
  }

  forget(tenant: string, name: string): void {
    this.records.delete(cacheKey(tenant, name));
  }
}

function cacheKey(tenant: string, name: string): string {
  return `${tenant}\u0000${name}`;
}
