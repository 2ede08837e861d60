/**
 * The mesh's Redis schema, in one place: every key and channel the provisioner owns is built here,
 * and Lua scripts receive them through KEYS (none spells a key itself). Tests and tools use it too.
 *
 *   lm:executors                  set    live executor ids (pruned when their key expired)
 *   lm:executor:<id>              hash   {info, load, resident, updatedAt}; expires after the TTL
 *   lm:executor-adapters:<id>     set    adapters resident on the executor
 *   lm:adapters                   set    all registered adapter ids
 *   lm:adapter:<id>               hash   the adapter record (tenant, name, rank, ..., state)
 *   lm:tenant-adapters:<tenant>   hash   name → adapter id
 *   lm:placement:<id>             set    executors where the adapter is resident
 *   lm:targets:<id>               set    executors the policy assigned it to (load jobs)
 *   lm:draining:<id>              set    executors being drained of it after a move (no new routing)
 *   lm:moving                     set    adapters with a move under way
 *   lm:adapter-jobs:<id>          hash   executor id → BullMQ job id (load jobs)
 *   lm:job-executors              hash   BullMQ job id → executor id (every adapter job)
 *   lm:traffic:<id>               hash   {requests}: traffic statistics from worker heartbeats
 *   lm:placement:epoch            string epoch, incremented on every placement change (CAS key)
 *   lm:placement (pub/sub)        channel, the new epoch after each change
 */
export const REDIS_KEYS = {
  executors: "lm:executors",
  executor: (id: string): string => `lm:executor:${id}`,
  executorAdapters: (id: string): string => `lm:executor-adapters:${id}`,
  adapters: "lm:adapters",
  adapter: (id: string): string => `lm:adapter:${id}`,
  tenantAdapters: (tenant: string): string => `lm:tenant-adapters:${tenant}`,
  placement: (id: string): string => `lm:placement:${id}`,
  targets: (id: string): string => `lm:targets:${id}`,
  draining: (id: string): string => `lm:draining:${id}`,
  moving: "lm:moving",
  adapterJobs: (id: string): string => `lm:adapter-jobs:${id}`,
  jobExecutors: "lm:job-executors",
  traffic: (id: string): string => `lm:traffic:${id}`,
  epoch: "lm:placement:epoch",
  channel: "lm:placement",
} as const;
