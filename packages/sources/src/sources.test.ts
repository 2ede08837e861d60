import { existsSync, readdirSync, readFileSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { createServer } from "node:net";
import { writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  AdapterError,
  FailedPreconditionError,
  InvalidArgumentError,
  NotFoundError,
  PermissionDeniedError,
  ResourceExhaustedError,
  UnauthenticatedError,
  UnavailableError,
} from "@loramesh/errors";
import { adapterContentHash } from "@loramesh/formats";
import {
  GOLDEN_DIR,
  startAdapterFileServer,
  startTestS3Server,
  type AdapterFileServer,
  type TestS3Server,
} from "@loramesh/testing";
import { expect } from "chai";
import { AdapterCache, fetchAdapter, parseAdapterSource, PEFT_CONFIG, PEFT_WEIGHTS } from "./index";

const adapterDir = (name: string): string => join(GOLDEN_DIR, "adapters", "tiny-llama", name);
const peftFiles = (name: string): Map<string, Buffer> =>
  new Map([PEFT_CONFIG, PEFT_WEIGHTS].map((f) => [f, readFileSync(join(adapterDir(name), f))]));
const hashOf = (name: string): Promise<string> =>
  adapterContentHash({
    configPath: join(adapterDir(name), PEFT_CONFIG),
    weightsPath: join(adapterDir(name), PEFT_WEIGHTS),
  });

async function rejection(p: Promise<unknown>): Promise<Error> {
  try {
    await p;
  } catch (err) {
    return err as Error;
  }
  throw new Error("expected a rejection");
}

/** A port nothing listens on (bound, then released). */
async function closedPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  const { port } = server.address() as { port: number };
  await new Promise<void>((r) => server.close(() => r()));
  return port;
}

describe("adapter sources", () => {
  describe("source strings", () => {
    it("parses hub, S3, HTTP and local sources", () => {
      expect(parseAdapterSource("hf://acme/sql-lora")).to.deep.equal({
        kind: "hf",
        org: "acme",
        name: "sql-lora",
        revision: "main",
        subdir: "",
      });
      expect(parseAdapterSource("hf://acme/sql-lora@v2/adapters/r8")).to.deep.include({
        revision: "v2",
        subdir: "adapters/r8",
      });
      expect(parseAdapterSource("s3://my-bucket/team/sql/")).to.deep.equal({
        kind: "s3",
        bucket: "my-bucket",
        prefix: "team/sql",
      });
      expect(parseAdapterSource("https://example.com/a/b")).to.deep.equal({
        kind: "http",
        url: "https://example.com/a/b/",
      });
      expect(parseAdapterSource("/srv/adapters/sql")).to.deep.equal({ kind: "local", path: "/srv/adapters/sql" });
    });

    it("refuses malformed sources, unknown schemes and climbing paths", () => {
      for (const bad of ["hf://acme", "hf://acme/x/../../y", "s3://B", "ftp://host/x", "https://u:p@host/x", ""])
        expect(() => parseAdapterSource(bad), bad).to.throw(InvalidArgumentError);
    });
  });

  describe("fetching into the cache", () => {
    let server: AdapterFileServer;
    let root: string;
    let cache: AdapterCache;
    const env = (): NodeJS.ProcessEnv => ({ HF_ENDPOINT: server.url });

    beforeEach(async () => {
      server = await startAdapterFileServer();
      root = await mkdtemp(join(tmpdir(), "lm-cache-"));
      cache = new AdapterCache({ root, limitBytes: 64 << 20 });
      server.hub.set("acme/sql", new Map([["main", peftFiles("sql-r8")]]));
    });
    afterEach(async () => {
      await server.close();
      await rm(root, { recursive: true, force: true });
    });

    const nothingLeft = (): void => {
      expect(cache.entries()).to.deep.equal([]);
      expect(readdirSync(join(root, "tmp"))).to.deep.equal([]);
    };

    it("fetches a hub adapter once, content-addressed by the weights' hash", async () => {
      const fetched = await fetchAdapter("hf://acme/sql", { cache, env: env() });
      expect(fetched.contentHash).to.equal(await hashOf("sql-r8"));
      expect(fetched.fromCache).to.equal(false);
      expect(fetched.dir).to.equal(join(root, "objects", fetched.contentHash));
      expect(readFileSync(join(fetched.dir, PEFT_WEIGHTS))).to.deep.equal(peftFiles("sql-r8").get(PEFT_WEIGHTS));
      const hits = server.hits.get("/acme/sql/resolve/main/adapter_model.safetensors");
      const again = await fetchAdapter("hf://acme/sql", { cache, env: env(), expectedHash: fetched.contentHash });
      expect(again).to.deep.include({ fromCache: true, dir: fetched.dir });
      expect(server.hits.get("/acme/sql/resolve/main/adapter_model.safetensors")).to.equal(hits);
    });

    it("reads a revision's subdirectory", async () => {
      const files = new Map([...peftFiles("math-r4-mlp")].map(([k, v]) => [`loras/math/${k}`, v]));
      files.set("README.md", Buffer.from("hi"));
      server.hub.set("acme/multi", new Map([["v1", files]]));
      const fetched = await fetchAdapter("hf://acme/multi@v1/loras/math", { cache, env: env() });
      expect(fetched.contentHash).to.equal(await hashOf("math-r4-mlp"));
    });

    it("sends HF_TOKEN as a Bearer token; a wrong one is PermissionDenied", async () => {
      const guarded = await startAdapterFileServer({ token: "secret" });
      try {
        guarded.hub.set("acme/sql", new Map([["main", peftFiles("sql-r8")]]));
        const err = await rejection(
          fetchAdapter("hf://acme/sql", { cache, env: { HF_ENDPOINT: guarded.url, HF_TOKEN: "wrong" } }),
        );
        expect(err).to.be.instanceOf(PermissionDeniedError);
        expect(err.message).to.match(/refused the credentials \(HTTP 403\)/);
        nothingLeft();
        const ok = await fetchAdapter("hf://acme/sql", {
          cache,
          env: { HF_ENDPOINT: guarded.url, HF_TOKEN: "secret" },
        });
        expect(ok.contentHash).to.equal(await hashOf("sql-r8"));
      } finally {
        await guarded.close();
      }
    });

    it("a gated repository: no token is Unauthenticated, another user's PermissionDenied, the login file's token works", async () => {
      server.gated.set("acme/sql", "hf_granted");
      const tokenFile = join(root, "hf-token");
      const withFile: NodeJS.ProcessEnv = { HF_ENDPOINT: server.url, HF_TOKEN_PATH: tokenFile };
      const missing = await rejection(fetchAdapter("hf://acme/sql", { cache, env: withFile }));
      expect(missing).to.be.instanceOf(UnauthenticatedError);
      expect(missing.message).to.match(/wants credentials \(HTTP 401\)/);
      writeFileSync(tokenFile, "hf_someone_else\n");
      expect(await rejection(fetchAdapter("hf://acme/sql", { cache, env: withFile }))).to.be.instanceOf(
        PermissionDeniedError,
      );
      nothingLeft();
      writeFileSync(tokenFile, "hf_granted\n");
      expect((await fetchAdapter("hf://acme/sql", { cache, env: withFile })).contentHash).to.equal(
        await hashOf("sql-r8"),
      );
      // HF_TOKEN wins over the file, as in huggingface_hub.
      const err = await rejection(fetchAdapter("hf://acme/sql", { cache, env: { ...withFile, HF_TOKEN: "hf_x" } }));
      expect(err).to.be.instanceOf(PermissionDeniedError);
    });

    it("a missing repository is NotFound and leaves nothing behind", async () => {
      const err = await rejection(fetchAdapter("hf://acme/nope", { cache, env: env() }));
      expect(err).to.be.instanceOf(NotFoundError);
      nothingLeft();
    });

    it("an unreachable source is Unavailable", async () => {
      const port = await closedPort();
      const err = await rejection(
        fetchAdapter("hf://acme/sql", { cache, env: { HF_ENDPOINT: `http://127.0.0.1:${port}` } }),
      );
      expect(err).to.be.instanceOf(UnavailableError);
      expect(err.message).to.match(/unreachable/);
      nothingLeft();
    });

    it("a truncated download is Unavailable and never becomes visible", async () => {
      server.truncate.add("acme/sql/main/adapter_model.safetensors");
      const err = await rejection(fetchAdapter("hf://acme/sql", { cache, env: env() }));
      expect(err).to.be.instanceOf(UnavailableError);
      expect(err.message).to.match(/truncated|broke off/);
      nothingLeft();
    });

    it("a source without PEFT files is an AdapterError naming what it has", async () => {
      server.hub.set("acme/empty", new Map([["main", new Map([["README.md", Buffer.from("x")]])]]));
      const err = await rejection(fetchAdapter("hf://acme/empty", { cache, env: env() }));
      expect(err).to.be.instanceOf(AdapterError);
      expect(err.message).to.match(/lists no PEFT adapter.*README\.md/);
      nothingLeft();
    });

    it("an adapter over the cache's size limit is ResourceExhausted", async () => {
      const small = new AdapterCache({ root, limitBytes: 4096 });
      const err = await rejection(fetchAdapter("hf://acme/sql", { cache: small, env: env() }));
      expect(err).to.be.instanceOf(ResourceExhaustedError);
      nothingLeft();
    });

    it("a source that changed since registration is refused, never mixed with the old version", async () => {
      const old = await hashOf("math-r4-mlp");
      const err = await rejection(fetchAdapter("hf://acme/sql", { cache, env: env(), expectedHash: old }));
      expect(err).to.be.instanceOf(FailedPreconditionError);
      expect(err.message).to.match(/changed since registration/);
      nothingLeft();
    });

    it("hashes while writing when the files come in order, and from disk when they do not: the same hash", async () => {
      const files = peftFiles("sql-r8");
      const want = await hashOf("sql-r8");
      const inOrder = await cache.ingest(async (sink) => {
        for (const f of [PEFT_CONFIG, PEFT_WEIGHTS]) await sink.file(f, [files.get(f) as Buffer]);
      });
      expect(inOrder.contentHash).to.equal(want);
      cache.remove(want);
      const reversed = await cache.ingest(async (sink) => {
        for (const f of [PEFT_WEIGHTS, PEFT_CONFIG]) await sink.file(f, [files.get(f) as Buffer]);
      });
      expect(reversed.contentHash).to.equal(want);
      cache.remove(want);
      // Interleaved writers (both open at once) also fall back to the files.
      const interleaved = await cache.ingest(async (sink) => {
        const w = await sink.begin(PEFT_WEIGHTS);
        const c = await sink.begin(PEFT_CONFIG);
        const weights = files.get(PEFT_WEIGHTS) as Buffer;
        await w.write(weights.subarray(0, 100));
        await c.write(files.get(PEFT_CONFIG) as Buffer);
        await w.write(weights.subarray(100));
        await c.end();
        await w.end();
      });
      expect(interleaved.contentHash).to.equal(want);
    });

    it("refuses file names and hashes that would leave the cache directory", async () => {
      const err = await rejection(
        cache.ingest(async (sink) => {
          await sink.file("../escape.json", (async function* () {})());
        }),
      );
      expect(err).to.be.instanceOf(InvalidArgumentError);
      expect(err.message).to.match(/escapes the cache directory/);
      expect(() => cache.lookup("../../etc")).to.throw(InvalidArgumentError);
      expect(existsSync(join(root, "escape.json"))).to.equal(false);
      nothingLeft();
    });

    it("evicts the least recently used version to stay under its limit", async () => {
      for (const [repo, name] of [
        ["acme/a", "sql-r8"],
        ["acme/b", "math-r4-mlp"],
        ["acme/c", "pattern-r8"],
      ] as const)
        server.hub.set(repo, new Map([["main", peftFiles(name)]]));
      const sizeOf = (n: string): number => [...peftFiles(n).values()].reduce((s, b) => s + b.length, 0);
      const lru = new AdapterCache({ root, limitBytes: sizeOf("sql-r8") + sizeOf("pattern-r8") + 1024 });
      const a = await fetchAdapter("hf://acme/a", { cache: lru, env: env() });
      const b = await fetchAdapter("hf://acme/b", { cache: lru, env: env() });
      expect(lru.lookup(a.contentHash)).to.equal(a.dir); // a is now more recent than b
      const c = await fetchAdapter("hf://acme/c", { cache: lru, env: env() });
      expect(
        lru
          .entries()
          .map((e) => e.contentHash)
          .sort(),
      ).to.deep.equal([a.contentHash, c.contentHash].sort());
      expect(lru.lookup(b.contentHash)).to.equal(undefined);
      expect(lru.bytesUsed).to.be.at.most(lru.limitBytes);
    });

    it("two processes' caches on one directory fetch the same version concurrently into one entry", async () => {
      const other = new AdapterCache({ root, limitBytes: 64 << 20 });
      const [x, y] = await Promise.all([
        fetchAdapter("hf://acme/sql", { cache, env: env() }),
        fetchAdapter("hf://acme/sql", { cache: other, env: env() }),
      ]);
      expect(x.dir).to.equal(y.dir);
      expect(cache.entries()).to.have.length(1);
      expect(readdirSync(join(root, "tmp"))).to.deep.equal([]);
    });

    it("a cache directory that cannot be created fails the fetch, not the process's start", async () => {
      const blocked = new AdapterCache({ root: join(adapterDir("sql-r8"), PEFT_CONFIG, "cache"), limitBytes: 1 << 20 });
      const err = await rejection(fetchAdapter("hf://acme/sql", { cache: blocked, env: env() }));
      expect(err).to.be.instanceOf(UnavailableError);
      expect(err.message).to.match(/is not writable/);
    });

    it("reads an HTTP directory listing", async () => {
      server.dirs.set("sql", peftFiles("sql-r8"));
      const fetched = await fetchAdapter(`${server.url}/files/sql`, { cache });
      expect(fetched.contentHash).to.equal(await hashOf("sql-r8"));
      const missing = await rejection(fetchAdapter(`${server.url}/files/none/`, { cache }));
      expect(missing).to.be.instanceOf(NotFoundError);
    });
  });

  describe("S3", () => {
    let s3: TestS3Server;
    let root: string;
    let cache: AdapterCache;
    const env = (key = s3.accessKeyId): NodeJS.ProcessEnv => ({
      AWS_ENDPOINT_URL: s3.endpoint,
      AWS_REGION: "us-east-1",
      AWS_ACCESS_KEY_ID: key,
      AWS_SECRET_ACCESS_KEY: s3.secretAccessKey,
    });

    before(async () => {
      s3 = await startTestS3Server();
      const objects = new Map<string, Buffer>();
      for (const [f, b] of peftFiles("sql-r8")) objects.set(`team/sql/${f}`, b);
      objects.set("team/sql/nested/other.bin", Buffer.from("x"));
      s3.buckets.set("adapters", objects);
    });
    after(() => s3.close());
    beforeEach(async () => {
      root = await mkdtemp(join(tmpdir(), "lm-cache-"));
      cache = new AdapterCache({ root, limitBytes: 64 << 20 });
    });
    afterEach(() => rm(root, { recursive: true, force: true }));

    it("fetches a prefix through the AWS SDK (path-style, Signature V4 checked by the server)", async () => {
      // A key with characters SigV4 encodes, and a region other than the default: both are signed.
      s3.buckets
        .get("adapters")
        ?.set("team/odd name+(1)/adapter_config.json", peftFiles("sql-r8").get(PEFT_CONFIG) as Buffer);
      s3.buckets
        .get("adapters")
        ?.set("team/odd name+(1)/adapter_model.safetensors", peftFiles("sql-r8").get(PEFT_WEIGHTS) as Buffer);
      const odd = await fetchAdapter("s3://adapters/team/odd name+(1)", {
        cache,
        env: { ...env(), AWS_REGION: "eu-west-3" },
      });
      expect(odd.contentHash).to.equal(await hashOf("sql-r8"));
      cache.remove(odd.contentHash);
      const fetched = await fetchAdapter("s3://adapters/team/sql", { cache, env: env() });
      expect(fetched.contentHash).to.equal(await hashOf("sql-r8"));
      expect(s3.gets.get("adapters/team/sql/adapter_model.safetensors")).to.equal(1);
    });

    it("wrong credentials are PermissionDenied, a missing bucket NotFound, an empty prefix an AdapterError", async () => {
      expect(
        await rejection(fetchAdapter("s3://adapters/team/sql", { cache, env: env("AKIAWRONG") })),
      ).to.be.instanceOf(PermissionDeniedError);
      const wrongSecret = await rejection(
        fetchAdapter("s3://adapters/team/sql", { cache, env: { ...env(), AWS_SECRET_ACCESS_KEY: "not-the-secret" } }),
      );
      expect(wrongSecret).to.be.instanceOf(PermissionDeniedError);
      expect(wrongSecret.message).to.match(/SignatureDoesNotMatch/);
      expect(await rejection(fetchAdapter("s3://nobucket/x", { cache, env: env() }))).to.be.instanceOf(NotFoundError);
      expect(await rejection(fetchAdapter("s3://adapters/team/none", { cache, env: env() }))).to.be.instanceOf(
        AdapterError,
      );
      expect(cache.entries()).to.deep.equal([]);
    });
  });
});
