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
    redis.call('SREM', 'lm:draining:' .. a, executor)
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

// KEYS = target sets; ARGV = expected epoch, then changes "<op><key index>:<value>": '+'/'-' add or
// remove an executor in KEYS[index], 'm' marks the adapter <value> as moving.
const CAS_TARGETS = `
local current = tonumber(redis.call('GET', 'lm:placement:epoch') or '0')
if current ~= tonumber(ARGV[1]) then return -1 end
for i = 2, #ARGV do
  local op = string.sub(ARGV[i], 1, 1)
  local sep = string.find(ARGV[i], ':', 2, true)
  local key = KEYS[tonumber(string.sub(ARGV[i], 2, sep - 1))]
  local value = string.sub(ARGV[i], sep + 1)
  if op == '+' then redis.call('SADD', key, value)
  elseif op == '-' then redis.call('SREM', key, value)
  else redis.call('SADD', 'lm:moving', value) end
end
local epoch = redis.call('INCR', 'lm:placement:epoch')
redis.call('PUBLISH', 'lm:placement', epoch)
return epoch
`;

// The switch of a move: the source leaves the targets and starts draining (routing stops sending
// it work from this epoch on); the move is over. KEYS = targets, draining; ARGV = adapter, source.
const SWITCH_ROUTING = `
redis.call('SREM', KEYS[1], ARGV[2])
redis.call('SADD', KEYS[2], ARGV[2])
redis.call('SREM', 'lm:moving', ARGV[1])
local epoch = redis.call('INCR', 'lm:placement:epoch')
redis.call('PUBLISH', 'lm:placement', epoch)
return epoch
`;

// A move that failed (its load failed for good): the target leaves, the source stays.
// KEYS = targets; ARGV = adapter, target.
const ABORT_MOVE = `
redis.call('SREM', KEYS[1], ARGV[2])
redis.call('SREM', 'lm:moving', ARGV[1])
local epoch = redis.call('INCR', 'lm:placement:epoch')
redis.call('PUBLISH', 'lm:placement', epoch)
return epoch
`;

const DROP_EXECUTOR = `
local executor = ARGV[1]
for _, a in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  redis.call('SREM', 'lm:placement:' .. a, executor)
  redis.call('SREM', 'lm:draining:' .. a, executor)
end
redis.call('DEL', KEYS[1])
local epoch = redis.call('INCR', 'lm:placement:epoch')
redis.call('PUBLISH', 'lm:placement', epoch)
return epoch
`;

interface PlacementCommands {
  reconcileResidency(reverseKey: string, executor: string, ...resident: string[]): Promise<number>;
  /** numkeys, keys..., args... (the key count varies per call). */
  casTargets(numberOfKeys: number, ...keysThenArgs: string[]): Promise<number>;
  switchRouting(targetsKey: string, drainingKey: string, adapterId: string, source: string): Promise<number>;
  abortMove(targetsKey: string, adapterId: string, target: string): Promise<number>;
  dropExecutor(reverseKey: string, executor: string): Promise<number>;
}

export interface TargetChange {
  adapterId: string;
  add: readonly string[];
  remove: readonly string[];
  /** Marks the adapter as moving (its move's jobs are scheduled right after). */
  startsMove?: boolean;
}

export class PlacementStore {
  private readonly commands: PlacementCommands;

  constructor(private readonly redis: Redis) {
    redis.defineCommand("reconcileResidency", { numberOfKeys: 1, lua: RECONCILE_RESIDENCY });
    redis.defineCommand("casTargets", { lua: CAS_TARGETS });
    redis.defineCommand("switchRouting", { numberOfKeys: 2, lua: SWITCH_ROUTING });
    redis.defineCommand("abortMove", { numberOfKeys: 1, lua: ABORT_MOVE });
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

  /** Executors being drained of the adapter (they still hold it; routing avoids them). */
  async draining(adapterId: string): Promise<string[]> {
    return (await this.redis.smembers(KEYS.draining(adapterId))).sort();
  }

  async moving(): Promise<Set<string>> {
    return new Set(await this.redis.smembers(KEYS.moving));
  }

  /**
   * Applies target changes for any number of adapters in one step, if the epoch is still
   * `expectedEpoch`. Returns the new epoch, or undefined when another update won (re-read and
   * decide again): two provisioners deciding at once never lose each other's update.
   */
  async compareAndSetTargets(expectedEpoch: number, changes: readonly TargetChange[]): Promise<number | undefined> {
    const keys: string[] = [];
    const index = new Map<string, number>();
    const args: string[] = [];
    for (const c of changes) {
      let i = index.get(c.adapterId);
      if (i === undefined) {
        keys.push(KEYS.targets(c.adapterId));
        i = keys.length;
        index.set(c.adapterId, i);
      }
      for (const a of c.add) args.push(`+${i}:${a}`);
      for (const r of c.remove) args.push(`-${i}:${r}`);
      if (c.startsMove) args.push(`m${i}:${c.adapterId}`);
    }
    const result = await this.commands.casTargets(keys.length, ...keys, String(expectedEpoch), ...args);
    return result < 0 ? undefined : result;
  }

  /** The routing switch of a move (see SWITCH_ROUTING). Returns the new epoch. */
  async switchRouting(adapterId: string, source: string): Promise<number> {
    return this.commands.switchRouting(KEYS.targets(adapterId), KEYS.draining(adapterId), adapterId, source);
  }

  async abortMove(adapterId: string, target: string): Promise<number> {
    return this.commands.abortMove(KEYS.targets(adapterId), adapterId, target);
  }

  /** Bumps the epoch and tells subscribers (registry changes that alter the snapshot). */
  async publish(): Promise<void> {
    const epoch = await this.redis.incr(KEYS.epoch);
    await this.redis.publish(KEYS.channel, String(epoch));
  }
}
