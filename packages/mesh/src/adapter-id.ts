/**
 * The mesh's internal adapter id: tenant, name and a prefix of the content hash. A re-registered
 * adapter with new weights gets a new id, so no executor can serve a stale version under it.
 */
export function internalAdapterId(tenant: string, name: string, contentHash: string): string {
  return `${tenant}.${name}.${contentHash.slice(0, 12)}`;
}

/** Valid adapter (and tenant) names: what users type and what appears in ids and job ids. */
export const NAME_PATTERN = /^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$/;
