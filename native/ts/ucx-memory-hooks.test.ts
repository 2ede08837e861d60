import { execFileSync } from "node:child_process";
import { expect } from "chai";
import { native } from "./index";
import { breakRoom, MIN_BREAK_ROOM, settleUcxMemoryHooks, ucxHooksEnabled, UCX_HOOKS_OFF } from "./ucx-memory-hooks";

// /proc/PID/maps around [heap]: the heap, then V8's code range `gap` bytes above its end.
function maps(gap: number): string {
  const end = 0x23d40000;
  const next = (end + gap).toString(16);
  return [
    "0565d000-05689000 rw-p 00000000 00:00 0 ",
    `23b2a000-${end.toString(16)} rw-p 00000000 00:00 0                                  [heap]`,
    `${next}-${(end + gap + 0x2000).toString(16)} rw-p 00000000 00:00 0 `,
    "7fc5116fe000-7fc5116ff000 r--p 00000000 fe:01 1234 /usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2",
  ].join("\n");
}

const DEPLOYER_HOOKS = { UCX_MEM_EVENTS: "yes", UCX_MEM_MMAP_HOOK_MODE: "bistro" };
const unread = (): string => {
  throw new Error("maps read although the hooks are off");
};

/** KiB of libc's code pages this process has written (hot patches leave them private and dirty). */
function libcCodeDirtyKiB(smaps: string): number {
  let kib = 0;
  for (const block of smaps.split(/\n(?=[0-9a-f]+-[0-9a-f]+ )/)) {
    const head = block.split("\n")[0] ?? "";
    if (/ r-xp /.test(head) && /\/libc\.so\.6$/.test(head.trimEnd()))
      kib += Number(/Private_Dirty:\s+(\d+) kB/.exec(block)?.[1] ?? 0);
  }
  return kib;
}

describe("UCX memory hooks and the program break (the rare start-up SIGSEGV)", () => {
  it("measures the room between [heap] and the next mapping", () => {
    expect(breakRoom(maps(0))).to.equal(0);
    expect(breakRoom(maps(4096))).to.equal(4096);
    expect(breakRoom(maps(0x40000000))).to.equal(0x40000000);
    expect(breakRoom("0565d000-05689000 rw-p 00000000 00:00 0 \n")).to.equal(undefined);
  });

  it("reads UCX's own spellings of on and off", () => {
    expect(ucxHooksEnabled({})).to.equal(true); // UCX's defaults: events on, bistro hooks
    expect(ucxHooksEnabled(UCX_HOOKS_OFF)).to.equal(false);
    expect(ucxHooksEnabled({ UCX_MEM_EVENTS: "OFF" })).to.equal(false);
    expect(ucxHooksEnabled({ UCX_MEM_EVENTS: "y", UCX_MEM_MMAP_HOOK_MODE: "none" })).to.equal(false);
    expect(ucxHooksEnabled({ UCX_MEM_EVENTS: "1", UCX_MEM_MMAP_HOOK_MODE: "reloc" })).to.equal(true);
  });

  it("sets the hooks off by default, without looking at the heap", () => {
    const env: NodeJS.ProcessEnv = {};
    expect(settleUcxMemoryHooks(env, unread)).to.equal(undefined);
    expect(env).to.deep.equal(UCX_HOOKS_OFF);
  });

  it("keeps hooks a deployer enabled while the break has room, turns them off (with a warning) when it has none", () => {
    const roomy: NodeJS.ProcessEnv = { ...DEPLOYER_HOOKS };
    expect(settleUcxMemoryHooks(roomy, () => maps(MIN_BREAK_ROOM))).to.equal(undefined);
    expect(roomy).to.include(DEPLOYER_HOOKS);
    for (const gap of [0, 4096, MIN_BREAK_ROOM - 4096]) {
      const tight: NodeJS.ProcessEnv = { ...DEPLOYER_HOOKS };
      expect(settleUcxMemoryHooks(tight, () => maps(gap))).to.match(/turned off .* unmap the top page of the heap/);
      expect(tight).to.deep.equal(UCX_HOOKS_OFF);
    }
  });

  it("counts hot-patched libc code pages in an smaps text", () => {
    const smaps = [
      "7f2608144000-7f260821b000 r-xp 00026000 fe:01 42 /usr/lib/x86_64-linux-gnu/libc.so.6",
      "Private_Dirty:         0 kB",
      "7f260821b000-7f260821c000 r-xp 000fd000 fe:01 42 /usr/lib/x86_64-linux-gnu/libc.so.6",
      "Private_Dirty:         4 kB",
      "7f2608300000-7f2608301000 rw-p 00000000 00:00 0 ",
      "Private_Dirty:         4 kB",
    ].join("\n");
    expect(libcCodeDirtyKiB(smaps)).to.equal(4);
  });

  it("a process that loads the addon leaves libc's code unpatched (no UCX hooks installed)", function () {
    if (process.platform !== "linux" || !native.ucxInfo().available) this.skip();
    // A fresh process with UCX's own defaults in its environment: only the addon's settings apply.
    const env = { ...process.env };
    for (const name of Object.keys(env)) if (name.startsWith("UCX_")) delete env[name];
    const smaps = execFileSync(
      process.execPath,
      [
        "-e",
        `require(${JSON.stringify(require.resolve("./index"))}); process.stdout.write(require("fs").readFileSync("/proc/self/smaps", "utf8"))`,
      ],
      { env, encoding: "utf8", maxBuffer: 64 * 1024 * 1024 },
    );
    expect(smaps).to.match(/libc\.so\.6/);
    expect(libcCodeDirtyKiB(smaps)).to.equal(0);
  });
});
