/**
 * Tenants from API keys. Keys come from configuration (`key=tenant` pairs); with none configured
 * the router runs open and every call belongs to the default tenant (local use).
 */
import type { Metadata } from "@grpc/grpc-js";
import { ConfigError, UnauthenticatedError } from "@loramesh/errors";
import { NAME_PATTERN } from "@loramesh/mesh";

export const DEFAULT_TENANT = "default";

export class Tenants {
  private constructor(private readonly byKey: ReadonlyMap<string, string>) {}

  /** Parses "key1=tenantA,key2=tenantB". */
  static parse(spec: string): Tenants {
    const map = new Map<string, string>();
    const pairs = spec
      .split(",")
      .map((p) => p.trim())
      .filter((p) => p !== "");
    for (const [index, pair] of pairs.entries()) {
      const eq = pair.indexOf("=");
      const key = pair.slice(0, eq),
        tenant = pair.slice(eq + 1);
      if (eq <= 0 || !NAME_PATTERN.test(tenant))
        // The entry holds a key: the message says which entry, never its text.
        throw new ConfigError([`api keys: expected key=tenant pairs; entry ${index + 1} is not one (not shown)`]);
      map.set(key, tenant);
    }
    return new Tenants(map);
  }

  get open(): boolean {
    return this.byKey.size === 0;
  }

  /** The caller's tenant; UNAUTHENTICATED for a missing or unknown key when keys are configured. */
  resolve(metadata: Metadata): string {
    const auth = metadata.get("authorization")[0];
    const header = metadata.get("x-api-key")[0];
    return this.resolveKey(
      bearerKey(typeof auth === "string" ? auth : undefined) ?? (typeof header === "string" ? header : undefined),
    );
  }

  /** The tenant of an API key (from any transport); the default tenant when the router runs open. */
  resolveKey(key: string | undefined): string {
    if (this.open) return DEFAULT_TENANT;
    if (key === undefined) throw new UnauthenticatedError("an API key is required (authorization: Bearer <key>)");
    const tenant = this.byKey.get(key);
    if (tenant === undefined) throw new UnauthenticatedError("unknown API key");
    return tenant;
  }
}

/** The key of an `Authorization: Bearer KEY` header value. */
export function bearerKey(authorization: string | undefined): string | undefined {
  return authorization !== undefined && authorization.startsWith("Bearer ") ? authorization.slice(7) : undefined;
}
