/**
 * UCX's memory hooks and the program break. A UCX build of the addon loads libucs with it, and
 * libucs's constructor installs libucm's memory hooks (hot patches of libc's mmap, munmap, brk,
 * sbrk, ...) unless they are configured off. Installing them self-tests the sbrk hook with
 * sbrk(+page) then sbrk(-page), without checking that the first succeeded (UCX 1.13). When the
 * break cannot grow, because another mapping starts right above [heap] (V8 puts its code range at
 * the first free address after [heap], and in a few Node starts in a thousand that is the break
 * itself), the +page fails, the -page succeeds, and the top page of glibc's heap is unmapped under
 * live allocations: a SIGSEGV at the next touch (docs/mesh.md, "a rare SIGSEGV at start-up").
 * So the hooks are off unless a deployer asks for them, and even then off in a process whose break
 * has no room.
 */

/** The settings that keep libucm from installing hooks; a deployer's own values win. */
export const UCX_HOOKS_OFF: Readonly<Record<string, string>> = {
  UCX_MEM_EVENTS: "no",
  UCX_MEM_MALLOC_HOOKS: "no",
  UCX_MEM_MALLOC_RELOC: "no",
  UCX_MEM_MMAP_HOOK_MODE: "none",
};

/**
 * Room the break needs for libucm's self-test to undo itself: the kernel grows the break by a page
 * only with one more page free below the next mapping; two 64 KiB pages covers every page size.
 */
export const MIN_BREAK_ROOM = 2 * 64 * 1024;

const UCX_FALSE = new Set(["n", "no", "off", "0"]);

/** Whether these settings let libucm install (and self-test) its memory hooks. */
export function ucxHooksEnabled(env: NodeJS.ProcessEnv): boolean {
  const events = (env["UCX_MEM_EVENTS"] ?? "yes").trim().toLowerCase();
  const mode = (env["UCX_MEM_MMAP_HOOK_MODE"] ?? "bistro").trim().toLowerCase();
  return !UCX_FALSE.has(events) && mode !== "none";
}

/**
 * Bytes between the end of [heap] and the next mapping in a /proc/PID/maps text; undefined when
 * there is no [heap] line or nothing above it (the break can grow).
 */
export function breakRoom(maps: string): number | undefined {
  const lines = maps.split("\n").filter((l) => l.trim() !== "");
  const i = lines.findIndex((l) => l.trimEnd().endsWith("[heap]"));
  const next = lines[i + 1];
  if (i < 0 || next === undefined) return undefined;
  const end = BigInt(`0x${(lines[i] as string).split(" ")[0]?.split("-")[1] ?? "0"}`);
  const start = BigInt(`0x${next.split(" ")[0]?.split("-")[0] ?? "0"}`);
  return Number(start - end);
}

/**
 * Sets the hook defaults in `env` (before the addon loads), and turns hooks a deployer enabled off
 * when the break has no room for libucm's self-test. Returns the warning to print in that case.
 */
export function settleUcxMemoryHooks(env: NodeJS.ProcessEnv, readMaps: () => string): string | undefined {
  for (const [name, value] of Object.entries(UCX_HOOKS_OFF)) env[name] ??= value;
  if (!ucxHooksEnabled(env)) return undefined;
  let room: number | undefined;
  try {
    room = breakRoom(readMaps());
  } catch {
    return undefined; // no /proc: not Linux, where libucm does not exist either
  }
  if (room === undefined || room >= MIN_BREAK_ROOM) return undefined;
  for (const [name, value] of Object.entries(UCX_HOOKS_OFF)) env[name] = value;
  return (
    `UCX memory hooks turned off for this process: the program break has ${room} bytes of room below ` +
    `the next mapping, and installing the hooks would unmap the top page of the heap (docs/rdma.md)`
  );
}
