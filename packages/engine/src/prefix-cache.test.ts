import { expect } from "chai";
import { Tokenizer } from "@loramesh/formats";
import { loadAdapter } from "./adapter";
import { Engine, type EngineOptions, type SequenceResult } from "./engine";
import { LocalLoraBackend } from "./local-lora-backend";
import { Model } from "./model";
import { adapterDir, golden, modelDir, MODELS } from "./test-fixtures";

interface Job {
  adapterId?: string;
  promptIds: number[];
}

function engine(m: string, adapters: readonly string[], options: EngineOptions = {}): Engine {
  const model = Model.load(modelDir(m));
  const lora = new LocalLoraBackend(model.config);
  for (const a of adapters) lora.add(a, loadAdapter(adapterDir(m, a), model.config));
  return new Engine(model, Tokenizer.load(modelDir(m), model.config.eosTokenIds), { lora, ...options });
}

async function run(e: Engine, job: Job): Promise<SequenceResult> {
  return e.submit({ ...job, sampling: { maxTokens: 8, ignoreEos: true, logprobs: 2 } }).result;
}

/** Logprobs of every generated token, to compare outputs beyond the ids. */
function logprobsOf(e: Engine, job: Job): Promise<number[]> {
  const seen: number[] = [];
  const handle = e.submit({ ...job, sampling: { maxTokens: 8, ignoreEos: true, logprobs: 2 } }, (u) => {
    for (const lp of u.logprobs ?? []) seen.push(lp.logprob);
  });
  return handle.result.then(() => seen);
}

for (const m of MODELS) {
  describe(`prefix cache: ${m}`, function () {
    this.timeout(120_000);
    const g = golden(m);
    const [a1, a2] = [...new Set(g.cases.map((c) => c.adapter).filter((a): a is string => a !== null))] as [
      string,
      string,
    ];
    const ids = (i: number): number[] => (g.prompts[i] as { ids: number[] }).ids;
    // A shared "system prompt" (BOS + 36 tokens) and two different user turns.
    const system = [...ids(0), ...ids(2).slice(1)];
    const userA = ids(1).slice(1);
    const userB = ids(3).slice(1);
    // The base and two adapters each see the same prefix, in an order where each one's first
    // request comes after another's has filled the cache with that very prefix.
    const jobs: Job[] = [
      { promptIds: [...system, ...userA] },
      { adapterId: a1, promptIds: [...system, ...userA] },
      { adapterId: a2, promptIds: [...system, ...userB] },
      { promptIds: [...system, ...userB] },
      { adapterId: a1, promptIds: [...system, ...userB] },
      { adapterId: a2, promptIds: [...system, ...userA] },
    ];

    it("serves a prefix only to the key that computed it, with outputs identical to the cache off", async () => {
      const off = engine(m, [a1, a2], { prefixCache: false, blockSize: 4 });
      const on = engine(m, [a1, a2], { blockSize: 4 });
      for (const [i, job] of jobs.entries()) {
        const want = await run(off, job);
        const got = await run(on, job);
        expect(got.tokenIds, `job ${i}`).to.deep.equal(want.tokenIds);
        expect(await logprobsOf(on, job), `job ${i} logprobs`).to.deep.equal(await logprobsOf(off, job));
        expect(want.cachedPromptTokens).to.equal(0);
        // The first request of each key finds nothing, though the same tokens are cached for others.
        const firstOfItsKey = jobs.findIndex((j) => j.adapterId === job.adapterId) === i;
        if (firstOfItsKey) expect(got.cachedPromptTokens, `job ${i}`).to.equal(0);
        else expect(got.cachedPromptTokens, `job ${i}`).to.equal(Math.floor(system.length / 4) * 4);
      }
      const stats = on.stats();
      expect(stats.kvBlocksUsed).to.equal(0);
      expect(stats.kvBlocksCached).to.be.greaterThan(0);
      expect(stats.prefixCache?.byAdapter["base"]?.hitTokens).to.be.greaterThan(0);
      expect(stats.prefixCache?.byAdapter[a1]?.lookups).to.be.at.least(2);
      expect(off.stats().prefixCache).to.equal(undefined);
    });

    it("shares blocks between requests in flight together and gives each its cache-off output", async () => {
      const off = engine(m, [a1, a2], { prefixCache: false, blockSize: 4 });
      const want = await Promise.all(jobs.map((j) => run(off, j)));
      const on = engine(m, [a1, a2], { blockSize: 4, maxBatchTokens: 24 });
      // One request per key fills the cache, then all six arrive at once.
      await Promise.all([run(on, jobs[0] as Job), run(on, jobs[1] as Job), run(on, jobs[2] as Job)]);
      const got = await Promise.all(jobs.map((j) => run(on, j)));
      expect(got.map((r) => r.tokenIds)).to.deep.equal(want.map((r) => r.tokenIds));
      expect(got.every((r) => r.cachedPromptTokens > 0)).to.equal(true);
      expect(on.stats().kvBlocksUsed).to.equal(0);
    });

    it("never serves an old version's prefix to an adapter re-registered with other weights", async () => {
      const model = Model.load(modelDir(m));
      const lora = new LocalLoraBackend(model.config);
      const on = new Engine(model, undefined, { lora, blockSize: 4 });
      const off = new Engine(model, undefined, { lora, blockSize: 4, prefixCache: false });
      const job = { adapterId: "tenant.name", promptIds: [...system, ...userA] };
      lora.add("tenant.name", loadAdapter(adapterDir(m, a1), model.config));
      await run(on, job);
      expect((await run(on, job)).cachedPromptTokens).to.be.greaterThan(0);
      // Same id, new weights: a new content hash, so a new key.
      lora.add("tenant.name", loadAdapter(adapterDir(m, a2), model.config));
      const fresh = await run(on, job);
      expect(fresh.cachedPromptTokens).to.equal(0);
      expect(fresh.tokenIds).to.deep.equal((await run(off, job)).tokenIds);
    });

    it("evicts idle blocks LRU under KV pressure and stays exact", async () => {
      // Room for about two sequences: every new prefix pushes older cached blocks out.
      const off = engine(m, [a1, a2], { prefixCache: false, blockSize: 4 });
      const on = engine(m, [a1, a2], { blockSize: 4, kvBlocks: 24 });
      for (const job of [...jobs, ...jobs])
        expect((await run(on, job)).tokenIds).to.deep.equal((await run(off, job)).tokenIds);
      const stats = on.stats();
      expect(stats.prefixCache?.evictions).to.be.greaterThan(0);
      expect(stats.kvBlocksUsed).to.equal(0);
      expect(stats.kvBlocksCached).to.be.at.most(24);
    });

    it("leaves scoring and adapters of unknown content uncached", async () => {
      const model = Model.load(modelDir(m));
      const local = new LocalLoraBackend(model.config);
      local.add(a1, loadAdapter(adapterDir(m, a1), model.config));
      // A backend that cannot tell the content hash (as a remote one before placement names it).
      const opaque = { has: (id: string) => local.has(id), apply: local.apply.bind(local) };
      const on = new Engine(model, undefined, { lora: opaque, blockSize: 4 });
      const job = { adapterId: a1, promptIds: [...system, ...userA] };
      await run(on, job);
      expect((await run(on, job)).cachedPromptTokens).to.equal(0);
      expect(on.stats().prefixCache?.byAdapter[a1]).to.equal(undefined);
      const scored = await on.score([...system, ...userA]);
      expect(scored.length).to.equal(system.length + userA.length);
      expect((await run(on, { promptIds: [...system, ...userA] })).cachedPromptTokens).to.be.greaterThan(0);
    });
  });
}
