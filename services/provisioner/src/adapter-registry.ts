/**
 * Registered adapters per tenant in Redis. Registration is one Lua call that creates the record and
 * the tenant's name entry together or not at all, so a refused or racing registration leaves
 * nothing half-written.
 */
import { AlreadyExistsError, NotFoundError } from "@loramesh/errors";
import { REDIS_KEYS as KEYS } from "@loramesh/mesh";
import type { Redis } from "ioredis";

export interface AdapterRecord {
  id: string;
  tenant: string;
  name: string;
  rank: number;
  alpha: number;
  targetModules: string[];
  sizeBytes: number;
  contentHash: string;
  /** The local source, or for a remote one the registering host's cache entry. */
  dir: string;
  /** The remote source URI (hf://, s3://, http(s)://); absent for a local directory. */
  source?: string;
  createdUnixMs: number;
}

const CREATE = `
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('HSET', KEYS[2], 'record', ARGV[3])
redis.call('SADD', KEYS[3], ARGV[2])
return 1
`;

interface RegistryCommands {
  createAdapter(
    tenantKey: string,
    recordKey: string,
    allKey: string,
    name: string,
    id: string,
    record: string,
  ): Promise<number>;
}

export class AdapterRegistry {
  private readonly commands: RegistryCommands;

  constructor(private readonly redis: Redis) {
    redis.defineCommand("createAdapter", { numberOfKeys: 3, lua: CREATE });
    this.commands = redis as unknown as RegistryCommands;
  }

  async create(record: AdapterRecord): Promise<void> {
    const created = await this.commands.createAdapter(
      KEYS.tenantAdapters(record.tenant),
      KEYS.adapter(record.id),
      KEYS.adapters,
      record.name,
      record.id,
      JSON.stringify(record),
    );
    if (created !== 1) throw new AlreadyExistsError(`an adapter named ${JSON.stringify(record.name)} already exists`);
  }

  /** The tenant's adapter of that name; NOT_FOUND when there is none (another tenant's included). */
  async get(tenant: string, name: string): Promise<AdapterRecord> {
    const id = await this.redis.hget(KEYS.tenantAdapters(tenant), name);
    const record = id ? await this.byId(id) : undefined;
    // The name is echoed at most 128 characters long: a caller's megabyte stays out of the reply.
    if (!record) throw new NotFoundError(`adapter ${JSON.stringify(name.slice(0, 128))} not found`);
    return record;
  }

  async byId(id: string): Promise<AdapterRecord | undefined> {
    const raw = await this.redis.hget(KEYS.adapter(id), "record");
    return raw ? (JSON.parse(raw) as AdapterRecord) : undefined;
  }

  /** The records of many adapters in one round trip (ids without a record are left out). */
  async byIds(ids: readonly string[]): Promise<AdapterRecord[]> {
    if (ids.length === 0) return [];
    const pipeline = this.redis.pipeline();
    for (const id of ids) pipeline.hget(KEYS.adapter(id), "record");
    const out: AdapterRecord[] = [];
    for (const [err, raw] of (await pipeline.exec()) ?? []) {
      if (err) throw err;
      if (typeof raw === "string") out.push(JSON.parse(raw) as AdapterRecord);
    }
    return out;
  }

  /** Every registered adapter, by id. */
  async all(): Promise<AdapterRecord[]> {
    return this.byIds(await this.allIds());
  }

  async list(tenant: string): Promise<AdapterRecord[]> {
    const entries = await this.redis.hgetall(KEYS.tenantAdapters(tenant));
    const records = await this.byIds(Object.values(entries));
    return records.sort((a, b) => a.name.localeCompare(b.name));
  }

  async allIds(): Promise<string[]> {
    return (await this.redis.smembers(KEYS.adapters)).sort();
  }

  async remove(record: AdapterRecord): Promise<void> {
    await this.redis
      .multi()
      .hdel(KEYS.tenantAdapters(record.tenant), record.name)
      .srem(KEYS.adapters, record.id)
      .del(KEYS.adapter(record.id), KEYS.targets(record.id), KEYS.adapterJobs(record.id))
      .exec();
  }
}
