/**
 * The page-cache state each engine's timed load starts from in `bench:cpu-anchor`, set by design
 * rather than left to whichever process ran before (issue 17): until the fifteenth pass loramesh's
 * round-2 load followed llama.cpp's process and found part of its weights evicted, so the median
 * load ratio was decided by the run order.
 *
 * Each engine process of a round is preceded by two steps of its own:
 * - "cold": every engine's files are evicted (posix_fadvise DONTNEED), then a load-only process
 *   loads the model from disk and exits: `load_ms_cold`;
 * - "warm": every engine's files are evicted, then the engine's own are read through once (read(),
 *   so the page cache's folio sizes are the kernel's read-ahead's, not whatever the cold process's
 *   load path left), then the full worker loads (`load_ms`) and runs prefill and decode.
 * Both engines get the same two states in every round, so neither depends on what ran before it.
 */

export type EngineName = "loramesh" | "llamacpp";

/** One engine process and the page-cache state set up just before it. */
export interface LoadStep {
  engine: EngineName;
  /** "cold": a load-only process after evicting all files; "warm": the full worker after re-reading its own. */
  state: "cold" | "warm";
  /** Files dropped from the page cache before the process starts. */
  evict: string[];
  /** Files read into the page cache (after the evictions) before the process starts. */
  warm: string[];
}

/**
 * The processes of one round in the order they run: for each engine in `order`, its cold
 * load-only process, then its warm full worker.
 */
export function roundPlan(
  order: readonly EngineName[],
  files: Readonly<Record<EngineName, readonly string[]>>,
): LoadStep[] {
  const all = order.flatMap((e) => files[e]);
  return order.flatMap((engine): LoadStep[] => [
    { engine, state: "cold", evict: [...all], warm: [] },
    { engine, state: "warm", evict: [...all], warm: [...files[engine]] },
  ]);
}

/** Runs a step's page-cache set-up; returns each file's resident fraction just before the process starts. */
export function applyStep(
  step: LoadStep,
  cache: (path: string, op: "evict" | "warm" | "query") => number,
): Record<string, number> {
  for (const f of step.evict) cache(f, "evict");
  for (const f of step.warm) cache(f, "warm");
  const touched = [...new Set([...step.evict, ...step.warm])];
  return Object.fromEntries(touched.map((f) => [f, Math.round(cache(f, "query") * 1000) / 1000]));
}
