/**
 * Placement state with atomic updates. Residency reported by executors is reconciled by one Lua
 * script per heartbeat; policy decisions (target sets) are compare-and-set on the placement epoch,
 * so two provisioners deciding at once cannot lose each other's update: the loser sees a new epoch
 * and decides again. Every key a script touches arrives through KEYS (built by REDIS_KEYS).
 */
import { UnavailableError } from "@loramesh/errors";
import { REDIS_KEYS } from "@loramesh/mesh";
import type { Redis } from "ioredis";

// KEYS = reverse set, all-adapters set, epoch, then per adapter i: placement, draining.
// ARGV = executor, channel, then per adapter i: 'r' (reported resident) or '-' and its id.
// Returns -1 when the reverse set holds an adapter the caller did not pass (it changed since the
// caller read it): the caller reads again and retries.
const RECONCILE_RESIDENCY = `
local reverse, executor = KEYS[1], ARGV[1]
local index, resident = {}, {}
for i = 3, #ARGV do
  local a = string.sub(ARGV[i], 2)
  index[a] = 4 + 2 * (i - 3)
  if string.sub(ARGV[i], 1, 1) == 'r' then resident[a] = true end
end
local current = redis.call('SMEMBERS', reverse)
for _, a in ipairs(current) do if index[a] == nil then return -1 end end
local changed = 0
for _, a in ipairs(current) do
  if not resident[a] then
    redis.call('SREM', reverse, a)
    redis.call('SREM', KEYS[index[a]], executor)
    redis.call('SREM', KEYS[index[a] + 1], executor)
    changed = 1
  end
end
for a, _ in pairs(resident) do
  if redis.call('SISMEMBER', KEYS[2], a) == 1 and redis.call('SISMEMBER', reverse, a) == 0 then
    redis.call('SADD', reverse, a)
    redis.call('SADD', KEYS[index[a]], executor)
    changed = 1
  end
end
if changed == 1 then
  redis.call('PUBLISH', ARGV[2], redis.call('INCR', KEYS[3]))
end
return changed
`;

// KEYS = epoch, moving, then target sets; ARGV = expected epoch, channel, then changes
// "<op><key index>:<value>": '+'/'-' add or remove an executor in KEYS[index], 'm' marks the
// adapter <value> as moving.
const CAS_TARGETS = `
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
if current ~= tonumber(ARGV[1]) then return -1 end
for i = 3, #ARGV do
  local op = string.sub(ARGV[i], 1, 1)
  local sep = string.find(ARGV[i], ':', 2, true)
  local key = KEYS[tonumber(string.sub(ARGV[i], 2, sep - 1))]
  local value = string.sub(ARGV[i], sep + 1)
  if op == '+' then redis.call('SADD', key, value)
  elseif op == '-' then redis.call('SREM', key, value)
  else redis.call('SADD', KEYS[2], value) end
end
local epoch = redis.call('INCR', KEYS[1])
redis.call('PUBLISH', ARGV[2], epoch)
return epoch
`;

// The switch of a move: the source leaves the targets and starts draining (routing stops sending
// it work from this epoch on); the move is over.
// KEYS = targets, draining, moving, epoch; ARGV = adapter, source, channel.
const SWITCH_ROUTING = `
redis.call('SREM', KEYS[1], ARGV[2])
redis.call('SADD', KEYS[2], ARGV[2])
redis.call('SREM', KEYS[3], ARGV[1])
local epoch = redis.call('INCR', KEYS[4])
redis.call('PUBLISH', ARGV[3], epoch)
return epoch
`;

// A move that failed (its load failed for good): the target leaves, the source stays.
// KEYS = targets, moving, epoch; ARGV = adapter, target, channel.
const ABORT_MOVE = `
redis.call('SREM', KEYS[1], ARGV[2])
redis.call('SREM', KEYS[2], ARGV[1])
local epoch = redis.call('INCR', KEYS[3])
redis.call('PUBLISH', ARGV[3], epoch)
return epoch
`;

// KEYS = reverse set, epoch, then per adapter i: placement, draining; ARGV = executor, channel,
// then the adapter ids. -1 when the reverse set holds an adapter not passed (read again, retry).
const DROP_EXECUTOR = `
local index = {}
for i = 3, #ARGV do index[ARGV[i]] = 3 + 2 * (i - 3) end
local current = redis.call('SMEMBERS', KEYS[1])
for _, a in ipairs(current) do if index[a] == nil then return -1 end end
for _, a in ipairs(current) do
  redis.call('SREM', KEYS[index[a]], ARGV[1])
  redis.call('SREM', KEYS[index[a] + 1], ARGV[1])
end
redis.call('DEL', KEYS[1])
local epoch = redis.call('INCR', KEYS[2])
redis.call('PUBLISH', ARGV[2], epoch)
return epoch
`;

/** Every script takes numkeys, keys..., args... (key counts vary per call). */
type Script = (numberOfKeys: number, ...keysThenArgs: string[]) => Promise<number>;

interface PlacementCommands {
  reconcileResidency: Script;
  casTargets: Script;
  switchRouting: Script;
  abortMove: Script;
  dropExecutor: Script;
}

export interface TargetChange {
  adapterId: string;
  add: readonly string[];
  remove: readonly string[];
  /** Marks the adapter as moving (its move's jobs are scheduled right after). */
  startsMove?: boolean;
}

/** Where one adapter is: resident holders and the ones being drained (both sorted). */
export interface Residency {
  holders: string[];
  draining: string[];
}

/** Scripts that depend on a set read just before retry this often when the set keeps changing. */
const SCRIPT_RETRIES = 16;

const call = (keys: string[], args: string[]): [number, ...string[]] => [keys.length, ...keys, ...args];

export class PlacementStore {
  private readonly commands: PlacementCommands;

  constructor(private readonly redis: Redis) {
    for (const [name, lua] of Object.entries({
      reconcileResidency: RECONCILE_RESIDENCY,
      casTargets: CAS_TARGETS,
      switchRouting: SWITCH_ROUTING,
      abortMove: ABORT_MOVE,
      dropExecutor: DROP_EXECUTOR,
    }))
      redis.defineCommand(name, { lua });
    this.commands = redis as unknown as PlacementCommands;
  }

  async epoch(): Promise<number> {
    return Number((await this.redis.get(REDIS_KEYS.epoch)) ?? 0);
  }

  /** Makes the executor's placement equal what it reports resident. True when anything changed. */
  async reconcileResidency(executorId: string, resident: readonly string[]): Promise<boolean> {
    const reverse = REDIS_KEYS.executorAdapters(executorId);
    const reported = new Set(resident);
    for (let attempt = 0; attempt < SCRIPT_RETRIES; attempt++) {
      const ids = [...new Set([...(await this.redis.smembers(reverse)), ...reported])];
      const keys = [reverse, REDIS_KEYS.adapters, REDIS_KEYS.epoch, ...ids.flatMap(adapterSets)];
      const args = [executorId, REDIS_KEYS.channel, ...ids.map((a) => (reported.has(a) ? `r${a}` : `-${a}`))];
      const result = await this.commands.reconcileResidency(...call(keys, args));
      if (result >= 0) return result === 1;
    }
    throw new UnavailableError(`residency of ${executorId} kept changing; the next heartbeat retries`);
  }

  /** Removes a dead executor from every placement. */
  async dropExecutor(executorId: string): Promise<void> {
    const reverse = REDIS_KEYS.executorAdapters(executorId);
    for (let attempt = 0; attempt < SCRIPT_RETRIES; attempt++) {
      const ids = await this.redis.smembers(reverse);
      const keys = [reverse, REDIS_KEYS.epoch, ...ids.flatMap(adapterSets)];
      if ((await this.commands.dropExecutor(...call(keys, [executorId, REDIS_KEYS.channel, ...ids]))) >= 0) return;
    }
    throw new UnavailableError(`placement of ${executorId} kept changing while it was dropped`);
  }

  async holders(adapterId: string): Promise<string[]> {
    return (await this.redis.smembers(REDIS_KEYS.placement(adapterId))).sort();
  }

  async targets(adapterId: string): Promise<string[]> {
    return (await this.redis.smembers(REDIS_KEYS.targets(adapterId))).sort();
  }

  /** Target sets of many adapters in one round trip. */
  async targetsOf(adapterIds: readonly string[]): Promise<Map<string, string[]>> {
    const sets = await this.readSets(adapterIds.map((id) => REDIS_KEYS.targets(id)));
    return new Map(adapterIds.map((id, i) => [id, sets[i] as string[]]));
  }

  /** Holders and draining executors of many adapters in one round trip. */
  async residencyOf(adapterIds: readonly string[]): Promise<Map<string, Residency>> {
    const sets = await this.readSets(adapterIds.flatMap(adapterSets));
    return new Map(
      adapterIds.map((id, i) => [id, { holders: sets[2 * i] as string[], draining: sets[2 * i + 1] as string[] }]),
    );
  }

  async moving(): Promise<Set<string>> {
    return new Set(await this.redis.smembers(REDIS_KEYS.moving));
  }

  /**
   * Applies target changes for any number of adapters in one step, if the epoch is still
   * `expectedEpoch`. Returns the new epoch, or undefined when another update won (re-read and
   * decide again): two provisioners deciding at once never lose each other's update.
   */
  async compareAndSetTargets(expectedEpoch: number, changes: readonly TargetChange[]): Promise<number | undefined> {
    const keys: string[] = [REDIS_KEYS.epoch, REDIS_KEYS.moving];
    const index = new Map<string, number>();
    const args: string[] = [String(expectedEpoch), REDIS_KEYS.channel];
    for (const c of changes) {
      let i = index.get(c.adapterId);
      if (i === undefined) {
        keys.push(REDIS_KEYS.targets(c.adapterId));
        i = keys.length;
        index.set(c.adapterId, i);
      }
      for (const a of c.add) args.push(`+${i}:${a}`);
      for (const r of c.remove) args.push(`-${i}:${r}`);
      if (c.startsMove) args.push(`m${i}:${c.adapterId}`);
    }
    const result = await this.commands.casTargets(...call(keys, args));
    return result < 0 ? undefined : result;
  }

  /** The routing switch of a move (see SWITCH_ROUTING). Returns the new epoch. */
  async switchRouting(adapterId: string, source: string): Promise<number> {
    const keys = [REDIS_KEYS.targets(adapterId), REDIS_KEYS.draining(adapterId), REDIS_KEYS.moving, REDIS_KEYS.epoch];
    return this.commands.switchRouting(...call(keys, [adapterId, source, REDIS_KEYS.channel]));
  }

  async abortMove(adapterId: string, target: string): Promise<number> {
    const keys = [REDIS_KEYS.targets(adapterId), REDIS_KEYS.moving, REDIS_KEYS.epoch];
    return this.commands.abortMove(...call(keys, [adapterId, target, REDIS_KEYS.channel]));
  }

  /** Bumps the epoch and tells subscribers (registry changes that alter the snapshot). */
  async publish(): Promise<void> {
    const epoch = await this.redis.incr(REDIS_KEYS.epoch);
    await this.redis.publish(REDIS_KEYS.channel, String(epoch));
  }

  /** SMEMBERS of each key, sorted, in one pipeline. */
  private async readSets(keys: readonly string[]): Promise<string[][]> {
    if (keys.length === 0) return [];
    const pipeline = this.redis.pipeline();
    for (const key of keys) pipeline.smembers(key);
    return ((await pipeline.exec()) ?? []).map(([err, members]) => {
      if (err) throw err;
      return (members as string[]).sort();
    });
  }
}

/** The placement and draining sets of an adapter, in the order the scripts expect them. */
function adapterSets(adapterId: string): string[] {
  return [REDIS_KEYS.placement(adapterId), REDIS_KEYS.draining(adapterId)];
}
