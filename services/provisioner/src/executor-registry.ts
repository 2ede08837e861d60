/**
 * Executors (base workers and LoRA servers) in Redis. Each executor is one hash whose key expires
 * `ttlMs` after its last heartbeat, so a dead executor disappears without anyone cleaning up; the
 * set of ids is pruned lazily when it is read.
 * Keys come from REDIS_KEYS (executor, executors, epoch).
 */
import { InvalidArgumentError } from "@loramesh/errors";
import { ExecutorInfo, ExecutorKind, ExecutorLoad } from "@loramesh/proto";
import { REDIS_KEYS } from "@loramesh/mesh";
import type { Redis } from "ioredis";

const EXECUTORS_KEY = REDIS_KEYS.executors;
const PLACEMENT_EPOCH_KEY = REDIS_KEYS.epoch;
const executorKey = REDIS_KEYS.executor;

const REFRESH = `if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'load', ARGV[1], 'resident', ARGV[2], 'updatedAt', ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return 1`;

const EXECUTOR_ID = /^[A-Za-z0-9._:-]{1,128}$/;

export interface LiveExecutor {
  info: ExecutorInfo;
  load: ExecutorLoad | undefined;
  residentAdapterIds: string[];
  updatedAtMs: number;
}

export class ExecutorRegistry {
  constructor(
    private readonly redis: Redis,
    readonly ttlMs: number,
  ) {}

  /** Records or refreshes an executor; true when it is new (the placement epoch was bumped). */
  async register(info: ExecutorInfo): Promise<boolean> {
    if (!EXECUTOR_ID.test(info.executorId)) {
      throw new InvalidArgumentError(
        `executor_id must be 1-128 characters of [A-Za-z0-9._:-], got ${JSON.stringify(info.executorId)}`,
      );
    }
    if (info.kind === ExecutorKind.EXECUTOR_KIND_UNSPECIFIED)
      throw new InvalidArgumentError("executor kind is required");
    if (info.address === "") throw new InvalidArgumentError("executor address is required");
    const key = executorKey(info.executorId);
    const results = await this.redis
      .multi()
      .exists(key)
      .hset(key, { info: JSON.stringify(ExecutorInfo.toJSON(info)), updatedAt: Date.now() })
      .pexpire(key, this.ttlMs)
      .sadd(EXECUTORS_KEY, info.executorId)
      .exec();
    const existed = results?.[0]?.[1];
    if (existed === 0) await this.redis.incr(PLACEMENT_EPOCH_KEY);
    return existed === 0;
  }

  /** Refreshes an executor's TTL and load. Returns false when the executor is unknown or expired. */
  async heartbeat(executorId: string, load: ExecutorLoad | undefined, residentAdapterIds: string[]): Promise<boolean> {
    const key = executorKey(executorId);
    // Only refresh a key that still exists; otherwise the executor must register again.
    const refreshed = (await this.redis.eval(
      REFRESH,
      1,
      key,
      JSON.stringify(load ? ExecutorLoad.toJSON(load) : {}),
      JSON.stringify(residentAdapterIds),
      String(Date.now()),
      String(this.ttlMs),
    )) as number;
    return refreshed === 1;
  }

  /** Executors whose registration has not expired; expired ids are removed and reported to `onDead`. */
  async live(onDead?: (ids: string[]) => Promise<void>): Promise<LiveExecutor[]> {
    const ids = (await this.redis.smembers(EXECUTORS_KEY)).sort();
    const live: LiveExecutor[] = [];
    const dead: string[] = [];
    const pipeline = this.redis.pipeline();
    for (const id of ids) pipeline.hgetall(executorKey(id));
    const replies = ids.length > 0 ? ((await pipeline.exec()) ?? []) : [];
    for (const [i, id] of ids.entries()) {
      const [err, reply] = replies[i] ?? [new Error("no reply"), undefined];
      if (err) throw err;
      const fields = reply as Record<string, string>;
      if (fields["info"] === undefined) {
        dead.push(id);
        continue;
      }
      live.push({
        info: ExecutorInfo.fromJSON(JSON.parse(fields["info"])),
        load: fields["load"] !== undefined ? ExecutorLoad.fromJSON(JSON.parse(fields["load"])) : undefined,
        residentAdapterIds: fields["resident"] !== undefined ? (JSON.parse(fields["resident"]) as string[]) : [],
        updatedAtMs: Number(fields["updatedAt"] ?? 0),
      });
    }
    if (dead.length > 0) {
      await this.redis.srem(EXECUTORS_KEY, ...dead);
      await this.redis.incr(PLACEMENT_EPOCH_KEY);
      await onDead?.(dead);
    }
    return live;
  }

  async epoch(): Promise<number> {
    return Number((await this.redis.get(PLACEMENT_EPOCH_KEY)) ?? 0);
  }
}
