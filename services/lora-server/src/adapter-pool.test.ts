import { expect } from "chai";
import { cpSync, mkdtempSync, rmSync, writeFileSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { FailedPreconditionError, ResourceExhaustedError } from "@loramesh/errors";
import { loadAdapter } from "@loramesh/engine";
import { loadModelConfig } from "@loramesh/formats";
import { captureLogger, GOLDEN_DIR } from "@loramesh/testing";
import { AdapterPool } from "./adapter-pool";

const model = loadModelConfig(join(GOLDEN_DIR, "models", "tiny-llama"));
const dir = (name: string) => join(GOLDEN_DIR, "adapters", "tiny-llama", name);
const size = (name: string) => loadAdapter(dir(name), model).sizeBytes;

describe("LoRA-server adapter pool", () => {
  // sql-r8 21504 B, math-r4-mlp 32256 B, rslora-r32 172032 B
  it("evicts the least recently used unpinned adapter into the host cache and reloads from there", async () => {
    const pool = new AdapterPool({
      model,
      capacityBytes: size("sql-r8") + size("math-r4-mlp") + 1000,
      hostCacheBytes: 10 * 1024 * 1024,
      logger: captureLogger(),
    });
    await pool.load("sql", dir("sql-r8"), "", false);
    await pool.load("math", dir("math-r4-mlp"), "", false);
    pool.touch(["sql"]); // math is now the least recently used
    await pool.load("sql2", dir("sql-r8"), "", false);
    expect(pool.stats().residentIds).to.deep.equal(["sql", "sql2"]);
    expect(pool.stats()).to.include({ evictions: 1, loadsFromStorage: 3, loadsFromHostCache: 0 });
    expect(pool.stats().hostCacheIds).to.deep.equal(["math"]);
    await pool.load("math", dir("math-r4-mlp"), "", false);
    expect(pool.stats()).to.include({ loadsFromStorage: 3, loadsFromHostCache: 1 });
    expect(pool.bytesUsed).to.be.at.most(pool.capacityBytes);
  });

  it("never evicts pinned adapters, and says so when nothing can make room", async () => {
    const pool = new AdapterPool({
      model,
      capacityBytes: size("sql-r8") * 2 + 100,
      hostCacheBytes: 0,
      logger: captureLogger(),
    });
    await pool.load("a", dir("sql-r8"), "", true);
    await pool.load("b", dir("sql-r8"), "", true);
    const err = await pool.load("c", dir("sql-r8"), "", false).catch((e: unknown) => e);
    expect(err).to.be.instanceOf(ResourceExhaustedError);
    expect((err as Error).message).to.match(/pinned/);
    expect(pool.stats().residentIds).to.deep.equal(["a", "b"]);
    const tooBig = await pool.load("big", dir("rslora-r32"), "", false).catch((e: unknown) => e);
    expect(tooBig).to.be.instanceOf(ResourceExhaustedError);
  });

  it("refuses files that changed since registration (content hash)", async () => {
    const scratch = mkdtempSync(join(tmpdir(), "loramesh-pool-"));
    try {
      const copy = join(scratch, "sql");
      cpSync(dir("sql-r8"), copy, { recursive: true });
      const registered = loadAdapter(copy, model).contentHash;
      const cfg = JSON.parse(readFileSync(join(copy, "adapter_config.json"), "utf8")) as Record<string, unknown>;
      writeFileSync(join(copy, "adapter_config.json"), JSON.stringify({ ...cfg, lora_alpha: 99 }));
      const pool = new AdapterPool({ model, capacityBytes: 1 << 20, hostCacheBytes: 0, logger: captureLogger() });
      expect(await pool.load("sql", copy, registered, false).catch((e: unknown) => e)).to.be.instanceOf(
        FailedPreconditionError,
      );
      expect(pool.stats().residentIds).to.deep.equal([]);
    } finally {
      rmSync(scratch, { recursive: true, force: true });
    }
  });
});
