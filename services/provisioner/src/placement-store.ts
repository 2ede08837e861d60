/**
 * Placement state with atomic updates. Residency reported by executors is reconciled by one Lua
 * script per heartbeat; policy decisions (target sets) are compare-and-set on the placement epoch,
 * so two provisioners deciding at once cannot lose each other's update: the loser sees a new epoch
 * and decides again.
 */
import type { Redis } from "ioredis";
import { KEYS } from "./redis-keys";

const RECONCILE_RESIDENCY = `
local executor = ARGV[1]
local reverse = KEYS[1]
local changed = 0
local resident = {}
for i = 2, #ARGV do resident[ARGV[i]] = true end
for _, a in ipairs(redis.call('SMEMBERS', reverse)) do
  if not resident[a] then
    redis.call('SREM', reverse, a)
    redis.call('SREM', 'lm:placement:' .. a, executor)
    changed = 1
  end
end
for a, _ in pairs(resident) do
  if redis.call('SISMEMBER', 'lm:adapters', a) == 1 and redis.call('SISMEMBER', reverse, a) == 0 then
    redis.call('SADD', reverse, a)
    redis.call('SADD', 'lm:placement:' .. a, executor)
    changed = 1
  end
end
if changed == 1 then
  local epoch = redis.call('INCR', 'lm:placement:epoch')
  redis.call('PUBLISH', 'lm:placement', epoch)
end
return changed
`;

// KEYS[1] = targets set; ARGV = expected epoch, then "+id" / "-id" changes.
const CAS_TARGETS = `
local current = tonumber(redis.call('GET', 'lm:placement:epoch') or '0')
if current ~= tonumber(ARGV[1]) then return -1 end
for i = 2, #ARGV do
  local op = string.sub(ARGV[i], 1, 1)
  local id = string.sub(ARGV[i], 2)
  if op == '+' then redis.call('SADD', KEYS[1], id) else redis.call('SREM', KEYS[1], id) end
end
local epoch = redis.call('INCR', 'lm:placement:epoch')
redis.call('PUBLISH', 'lm:placement', epoch)
return epoch
`;

const DROP_EXECUTOR = `
local executor = ARGV[1]
for _, a in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  redis.call('SREM', 'lm:placement:' .. a, executor)
end
redis.call('DEL', KEYS[1])
local epoch = redis.call('INCR', 'lm:placement:epoch')
redis.call('PUBLISH', 'lm:placement', epoch)
return epoch
`;

interface PlacementCommands {
  reconcileResidency(reverseKey: string, executor: string, ...resident: string[]): Promise<number>;
  casTargets(targetsKey: string, expectedEpoch: string, ...changes: string[]): Promise<number>;
  dropExecutor(reverseKey: string, executor: string): Promise<number>;
}

export class PlacementStore {
  private readonly commands: PlacementCommands;

  constructor(private readonly redis: Redis) {
    redis.defineCommand("reconcileResidency", { numberOfKeys: 1, lua: RECONCILE_RESIDENCY });
    redis.defineCommand("casTargets", { numberOfKeys: 1, lua: CAS_TARGETS });
    redis.defineCommand("dropExecutor", { numberOfKeys: 1, lua: DROP_EXECUTOR });
    this.commands = redis as unknown as PlacementCommands;
  }

  async epoch(): Promise<number> {
    return Number((await this.redis.get(KEYS.epoch)) ?? 0);
  }

  /** Makes the executor's placement equal what it reports resident. True when anything changed. */
  async reconcileResidency(executorId: string, resident: readonly string[]): Promise<boolean> {
    return (await this.commands.reconcileResidency(KEYS.executorAdapters(executorId), executorId, ...resident)) === 1;
  }

  /** Removes a dead executor from every placement. */
  async dropExecutor(executorId: string): Promise<void> {
    await this.commands.dropExecutor(KEYS.executorAdapters(executorId), executorId);
  }

  async holders(adapterId: string): Promise<string[]> {
    return (await this.redis.smembers(KEYS.placement(adapterId))).sort();
  }

  async targets(adapterId: string): Promise<string[]> {
    return (await this.redis.smembers(KEYS.targets(adapterId))).sort();
  }

  /**
   * Changes an adapter's target set if the epoch is still `expectedEpoch`. Returns the new epoch,
   * or undefined when another update won (re-read and decide again).
   */
  async compareAndSetTargets(
    adapterId: string,
    expectedEpoch: number,
    add: readonly string[],
    remove: readonly string[],
  ): Promise<number | undefined> {
    const result = await this.commands.casTargets(
      KEYS.targets(adapterId),
      String(expectedEpoch),
      ...add.map((a) => `+${a}`),
      ...remove.map((r) => `-${r}`),
    );
    return result < 0 ? undefined : result;
  }

  /** Bumps the epoch and tells subscribers (registry changes that alter the snapshot). */
  async publish(): Promise<void> {
    const epoch = await this.redis.incr(KEYS.epoch);
    await this.redis.publish(KEYS.channel, String(epoch));
  }
}
