// Issue 14, part A, against a real cluster (processes, Redis, gRPC): internal services closed to
// strangers, request limits, tenant-scoped request ids, adapter roots, secrets kept out of
// /metrics, and a seeded fuzz of registrations and requests through the router and provisioner.
import { expect } from "chai";
import { cpSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { credentials, makeGenericClientConstructor, Metadata, status, type ServiceError } from "@grpc/grpc-js";
import { clusterClientOptions } from "@loramesh/core";
import type { LocalCluster } from "@loramesh/cli";
import { unary } from "@loramesh/mesh";
import {
  BaseWorkerServiceClient,
  GenerateRequest,
  LoraServerServiceClient,
  ProvisionerServiceClient,
  type GenerateResponse,
} from "@loramesh/proto";
import { LoraMeshClient, LoraMeshClientError, type GenerateInput } from "@loramesh/sdk";
import {
  adapterRuleBroken,
  FuzzRng,
  mutateAdapterConfig,
  mutateSafetensors,
  readAdapterConfig,
} from "@loramesh/testing";
import { adapterDir, modelDir, startCluster } from "./mesh-helpers";

const KEY_A = "key-alpha-0123456789abcdef";
const KEY_B = "key-beta-0123456789abcdef";
const SQL = adapterDir("tiny-llama", "sql-r8");
const GREEDY = { temperature: 0, topP: 1, topK: 0, stop: [], stopTokenIds: [], ignoreEos: true };

/** The gRPC code a call ended with (OK when it resolved). */
async function codeOf(call: Promise<unknown>): Promise<status> {
  try {
    await call;
    return status.OK;
  } catch (err) {
    if (err instanceof LoraMeshClientError) return err.code;
    if (typeof (err as ServiceError).code === "number") return (err as ServiceError).code;
    throw err;
  }
}

/** Codes no input may ever produce: they say the server failed, not the request. */
const SERVER_FAULTS = new Set([
  status.INTERNAL,
  status.UNKNOWN,
  status.UNAVAILABLE,
  status.DATA_LOSS,
  status.DEADLINE_EXCEEDED,
]);

describe("security and input limits (issue 14 A; real processes, Redis, gRPC)", function () {
  this.timeout(600_000);
  let cluster: LocalCluster;
  let alpha: LoraMeshClient;
  let beta: LoraMeshClient;
  let root: string;
  let crashed: string | undefined;
  let startPids: string[] = [];

  before(async () => {
    root = mkdtempSync(join(tmpdir(), "loramesh-sec-"));
    cpSync(SQL, join(root, "sql-r8"), { recursive: true });
    cluster = await startCluster({
      modelDir: modelDir("tiny-llama"),
      workers: 1,
      loraServers: 1,
      extraArgs: {
        router: ["--api-keys", `${KEY_A}=alpha,${KEY_B}=beta`],
        provisioner: ["--adapter-roots", root, "--max-adapter-mib", "1"],
      },
    });
    // `up` restarts a service that dies, so a crash shows as a restart or as a changed pid.
    cluster.onRestart((restart) => (crashed = `${restart.service} exited and was restarted`));
    startPids = cluster.processes.map((p) => `${p.service}:${p.pid}`);
    alpha = new LoraMeshClient({ address: cluster.routerAddress, apiKey: KEY_A });
    beta = new LoraMeshClient({ address: cluster.routerAddress, apiKey: KEY_B });
    await alpha.registerAdapter("sql-r8", join(root, "sql-r8"));
    for await (const _ of alpha.watchAdapterLoad("sql-r8")) void _;
  });

  after(async () => {
    alpha?.close();
    beta?.close();
    await cluster?.stop();
    rmSync(root, { recursive: true, force: true });
  });

  const address = (service: string): string => cluster.processes.find((p) => p.service === service)?.address as string;

  it("internal services refuse anonymous calls (UNAUTHENTICATED) and serve mesh members", async () => {
    const token = cluster.clusterToken;
    const provisioner = (t?: string) =>
      new ProvisionerServiceClient(address("provisioner"), credentials.createInsecure(), clusterClientOptions(t ?? ""));
    const worker = (t?: string) =>
      new BaseWorkerServiceClient(address("base-worker"), credentials.createInsecure(), clusterClientOptions(t ?? ""));
    const lora = (t?: string) =>
      new LoraServerServiceClient(address("lora-server"), credentials.createInsecure(), clusterClientOptions(t ?? ""));
    const calls = {
      provisioner: (c: ProvisionerServiceClient) =>
        unary(c.listAdapters.bind(c), c, { tenant: "alpha", pageSize: 0, pageToken: "" }),
      worker: (c: BaseWorkerServiceClient) => unary(c.getStats.bind(c), c, {}),
      lora: (c: LoraServerServiceClient) => unary(c.getStats.bind(c), c, {}),
    };
    const clients = [
      ["provisioner", provisioner, calls.provisioner],
      ["worker", worker, calls.worker],
      ["lora", lora, calls.lora],
    ] as const;
    for (const [name, make, call] of clients) {
      for (const [who, t] of [
        ["anonymous", undefined],
        ["a wrong token", "x".repeat(64)],
      ] as const) {
        const c = make(t) as never;
        const err = (await (call as (c: never) => Promise<unknown>)(c).catch((e: unknown) => e)) as {
          message?: string;
        };
        expect(err, `${name}, ${who}`).to.be.instanceOf(Error);
        expect(err.message, `${name}, ${who}`).to.match(/cluster token/);
        expect(err.constructor.name, `${name}, ${who}`).to.equal("UnauthenticatedError");
        (c as { close(): void }).close();
      }
      const member = make(token) as never;
      await (call as (c: never) => Promise<unknown>)(member);
      (member as { close(): void }).close();
    }
    // The mesh itself works: a request through the only public door.
    const done = await alpha.complete({
      prompt: { $case: "text", value: "SELECT" },
      adapter: "sql-r8",
      sampling: { maxTokens: 8, ...GREEDY },
    });
    expect(done.tokenIds).to.have.length(8);
  });

  it("keeps API keys and the cluster token out of every /metrics page", async () => {
    for (const p of cluster.processes) {
      const text = await (await fetch(`http://${p.metricsAddress}/metrics`)).text();
      expect(text, p.service).to.contain("loramesh_");
      for (const secret of [KEY_A, KEY_B, cluster.clusterToken]) expect(text, p.service).to.not.contain(secret);
    }
  });

  it("scopes request ids by tenant: another tenant's equal request_id neither cancels nor collides", async () => {
    const id = "shared-request-id";
    const long = alpha.complete({
      requestId: id,
      prompt: { $case: "text", value: "def forward(self" },
      sampling: { maxTokens: 300, ...GREEDY },
    });
    // Beta uses the same id, then cancels its own request once it has produced a token.
    const aborter = new AbortController();
    let seen = 0;
    const betaRun = (async () => {
      for await (const delta of beta.generate(
        { requestId: id, prompt: { $case: "text", value: "def" }, sampling: { maxTokens: 300, ...GREEDY } },
        { signal: aborter.signal },
      )) {
        seen += delta.tokenIds.length;
        if (seen > 0) aborter.abort();
      }
    })().catch((e: unknown) => e);
    await betaRun;
    expect(seen).to.be.greaterThan(0);
    const result = await long;
    expect(result.requestId).to.equal(id);
    expect(result.tokenIds, "alpha's request ran to its end").to.have.length(300);
  });

  it("refuses oversize and malformed request fields with INVALID_ARGUMENT naming the field", async () => {
    const base: GenerateInput = { prompt: { $case: "text", value: "hi" }, sampling: { maxTokens: 2, ...GREEDY } };
    const cases: Array<[string, GenerateInput, RegExp]> = [
      ["1 MiB request_id", { ...base, requestId: "r".repeat(1 << 20) }, /request_id must be/],
      ["8 MB prompt", { ...base, prompt: { $case: "text", value: "x".repeat(8_000_000) } }, /prompt is 8000000 bytes/],
      ["max_tokens 2^31", { ...base, sampling: { ...GREEDY, maxTokens: 2 ** 31 } }, /sampling.max_tokens/],
      [
        "100 stop strings",
        { ...base, sampling: { ...GREEDY, maxTokens: 2, stop: Array<string>(100).fill("x") } },
        /sampling.stop has 100/,
      ],
      [
        "a 1 KiB stop string",
        { ...base, sampling: { ...GREEDY, maxTokens: 2, stop: ["s".repeat(1024)] } },
        /sampling.stop\[0\]/,
      ],
      ["seed 2^60", { ...base, sampling: { ...GREEDY, maxTokens: 2, seed: 2 ** 60 } }, /does not decode/],
      ["NaN temperature", { ...base, sampling: { ...GREEDY, maxTokens: 2, temperature: Number.NaN } }, /temperature/],
      ["negative top_p", { ...base, sampling: { ...GREEDY, maxTokens: 2, topP: -1 } }, /top_p/],
      [
        "token id outside the vocabulary",
        { ...base, prompt: { $case: "tokenIds", value: { ids: [1, 99_999_999] } } },
        /outside the vocabulary/,
      ],
      [
        "stop token id outside the vocabulary",
        { ...base, sampling: { ...GREEDY, maxTokens: 2, stopTokenIds: [99_999_999] } },
        /stop_token_ids\[0\]/,
      ],
    ];
    for (const [name, input, pattern] of cases) {
      const err = (await alpha.complete(input).catch((e: unknown) => e)) as LoraMeshClientError;
      expect(err, name).to.be.instanceOf(LoraMeshClientError);
      expect(err.code, `${name}: ${err.details}`).to.equal(status.INVALID_ARGUMENT);
      expect(err.details, name).to.match(pattern);
      expect(err.details.length, `${name}: the message does not echo the input`).to.be.below(400);
    }
    // The adapter-management calls have bounds too (name, page token, source), never echoed back.
    const huge = "a".repeat(1 << 20);
    const adapterCalls: Array<[string, Promise<unknown>, RegExp]> = [
      ["GetAdapter, 1 MiB name", alpha.getAdapter(huge), /adapter name is longer than 128/],
      ["DeleteAdapter, 1 MiB name", alpha.deleteAdapter(huge), /adapter name is longer than 128/],
      ["ListAdapters, 1 MiB page_token", alpha.listAdapters(0, huge), /page_token is longer than 32/],
      ["RegisterAdapter, 1 MiB local_dir", alpha.registerAdapter("ok-name", `/${huge}`), /source is longer than 4096/],
    ];
    for (const [name, call, pattern] of adapterCalls) {
      const err = (await call.catch((e: unknown) => e)) as LoraMeshClientError;
      expect(err, name).to.be.instanceOf(LoraMeshClientError);
      expect(err.code, `${name}: ${err.details}`).to.equal(status.INVALID_ARGUMENT);
      expect(err.details, name).to.match(pattern);
      expect(err.details.length, `${name}: the message does not echo the input`).to.be.below(400);
    }
  });

  it("refuses bad adapters with INVALID_ARGUMENT naming the field or file, and keeps nothing of them", async () => {
    const base = readAdapterConfig(SQL);
    const make = (name: string, edit: (dir: string) => void): string => {
      const dir = join(root, name);
      cpSync(SQL, dir, { recursive: true });
      edit(dir);
      return dir;
    };
    const config = (cfg: Record<string, unknown>) => (dir: string) =>
      writeFileSync(join(dir, "adapter_config.json"), JSON.stringify(cfg));
    const weights = readFileSync(join(SQL, "adapter_model.safetensors"));
    const withWeight = (value: number) => (dir: string) => {
      const bytes = Buffer.from(weights);
      bytes.writeFloatLE(value, 8 + Number(weights.readBigUInt64LE(0)));
      writeFileSync(join(dir, "adapter_model.safetensors"), bytes);
    };
    mkdirSync(join(root, "outside-link-target"), { recursive: true });
    symlinkSync(SQL, join(root, "escape")); // inside the root, pointing outside it
    const cases: Array<[string, string, RegExp]> = [
      ["nan", make("bad-nan", withWeight(Number.NaN)), /element 0 is NaN/],
      ["inf", make("bad-inf", withWeight(Number.POSITIVE_INFINITY)), /element 0 is Infinity/],
      ["huge", make("bad-huge", withWeight(1e18)), /element 0 is 999999984306749400/],
      ["alpha-neg", make("bad-alpha-neg", config({ ...base, lora_alpha: -16 })), /^lora_alpha must be/],
      ["alpha-str", make("bad-alpha-str", config({ ...base, lora_alpha: "16" })), /^lora_alpha must be/],
      ["alpha-1e308", make("bad-alpha-big", config({ ...base, lora_alpha: 1e308 })), /^lora_alpha must be/],
      ["r-1e308", make("bad-r-big", config({ ...base, r: 1e308 })), /^r must be/],
      [
        "regex-bomb",
        make("bad-bomb", config({ ...base, target_modules: "mod(.|.)*X" })),
        /target_modules .* matches no module/,
      ],
      ["regex-invalid", make("bad-regex", config({ ...base, target_modules: "(" })), /^target_modules: invalid regex/],
      [
        "too-big",
        make("bad-big", (d) => writeFileSync(join(d, "adapter_model.safetensors"), Buffer.alloc(2 << 20))),
        /above the 1048576-byte limit/,
      ],
      ["escape", join(root, "escape"), /not a directory under the adapter roots/],
      ["etc", "/etc", /not a directory under the adapter roots/],
      ["golden-outside-roots", SQL, /not a directory under the adapter roots/],
    ];
    for (const [name, dir, pattern] of cases) {
      const err = (await alpha.registerAdapter(name, dir).catch((e: unknown) => e)) as LoraMeshClientError;
      expect(err, name).to.be.instanceOf(LoraMeshClientError);
      expect(err.code, `${name}: ${err.details}`).to.equal(status.INVALID_ARGUMENT);
      expect(err.details, name).to.match(pattern);
    }
    const listed = (await alpha.listAdapters()).adapters.map((a) => a.name);
    expect(listed).to.deep.equal(["sql-r8"]);
  });

  it("fuzz: mutated registrations and requests through the real router and provisioner", async () => {
    const rng = new FuzzRng(1414);
    const base = readAdapterConfig(SQL);
    const weights = readFileSync(join(SQL, "adapter_model.safetensors"));
    const registrations = { tried: 0, accepted: 0, rejected: {} as Record<string, number> };
    const accepted: string[] = [];
    const refused: string[] = [];
    const count = (tally: Record<string, number>, code: status) =>
      (tally[status[code]] = (tally[status[code]] ?? 0) + 1);
    // Per input family, for the closing note: tried, accepted, accepted although a documented rule
    // says no (judged by @loramesh/testing's adapter-oracle.ts, not the validator), and refused with a wrong code.
    const families = new Map<string, { tried: number; accepted: number; acceptedBad: number; wrongCode: number }>();
    const tallyOf = (family: string) => {
      const t = families.get(family) ?? { tried: 0, accepted: 0, acceptedBad: 0, wrongCode: 0 };
      families.set(family, t);
      return t;
    };
    const problems: string[] = [];

    // Registrations: a mutated config or a mutated weights file each, 4 at a time.
    const jobs = Array.from({ length: 120 }, (_, i) => {
      const dir = join(root, `fz-${i}`);
      cpSync(SQL, dir, { recursive: true });
      if (i % 2 === 0) writeFileSync(join(dir, "adapter_config.json"), mutateAdapterConfig(rng, base));
      else writeFileSync(join(dir, "adapter_model.safetensors"), mutateSafetensors(rng, weights));
      return {
        name: `fz-${i}`,
        dir,
        family: i % 2 === 0 ? "registration: mutated config" : "registration: mutated safetensors",
      };
    });
    for (let i = 0; i < jobs.length; i += 4) {
      await Promise.all(
        jobs.slice(i, i + 4).map(async ({ name, dir, family }) => {
          const tally = tallyOf(family);
          registrations.tried++;
          tally.tried++;
          const code = await codeOf(alpha.registerAdapter(name, dir, { deadlineMs: 120_000 }));
          if (code !== status.OK && code !== status.INVALID_ARGUMENT) {
            tally.wrongCode++;
            problems.push(`${name}: ${status[code]}`);
          }
          if (code === status.OK) {
            registrations.accepted++;
            tally.accepted++;
            accepted.push(name);
            const broken = adapterRuleBroken(dir);
            if (broken !== undefined) {
              tally.acceptedBad++;
              problems.push(`${name} accepted although ${broken}`);
            }
          } else {
            count(registrations.rejected, code);
            refused.push(name);
          }
        }),
      );
    }
    // Nothing half-registered: the list is exactly sql-r8 plus the accepted ones, each readable.
    const listed = (await alpha.listAdapters()).adapters.map((a) => a.name).sort();
    const expected = ["sql-r8", ...accepted].sort();
    const refusedCodes = await Promise.all(refused.map((name) => codeOf(alpha.getAdapter(name))));
    const halfRegistered =
      listed.filter((n) => !expected.includes(n)).length +
      expected.filter((n) => !listed.includes(n)).length +
      refusedCodes.filter((c) => c !== status.NOT_FOUND).length;
    console.log(`      fuzz-summary ${JSON.stringify({ family: "registrations", halfRegistered })}`);
    expect(listed).to.deep.equal(expected);
    refused.forEach((name, i) => expect(refusedCodes[i], name).to.equal(status.NOT_FOUND));

    // Requests: structured mutations through the SDK, and raw mutated bytes of a valid request.
    const requests = { tried: 0, ok: 0, rejected: {} as Record<string, number> };
    const nasty = [Number.NaN, -1, 0, 1, 2 ** 31, 2 ** 53 + 2, 1e308, 0.5];
    const structured = (): GenerateInput => {
      const s = { maxTokens: 3, ...GREEDY } as Record<string, unknown>;
      const input: Record<string, unknown> = { prompt: { $case: "text", value: "SELECT id" }, sampling: s };
      for (let k = 0; k < 1 + rng.int(2); k++) {
        const field = rng.pick([
          "maxTokens",
          "temperature",
          "topP",
          "topK",
          "seed",
          "minTokens",
          "logprobs",
          "stop",
          "stopTokenIds",
          "prompt",
          "adapter",
          "requestId",
        ]);
        if (field === "prompt")
          input["prompt"] = rng.pick([
            { $case: "tokenIds", value: { ids: [rng.int(2 ** 31)] } },
            { $case: "tokenIds", value: { ids: [] } },
            { $case: "text", value: "" },
            { $case: "text", value: "\u0000\uffff".repeat(rng.int(64)) },
            undefined,
          ]);
        else if (field === "adapter") input["adapter"] = rng.pick(["sql-r8", "nope", "../x", "a".repeat(300), ""]);
        else if (field === "requestId")
          input["requestId"] = rng.pick(["", "id with spaces", "é", "r".repeat(200), `ok-${rng.int(1e9)}`]);
        else if (field === "stop") s["stop"] = rng.pick([[""], ["x".repeat(300)], Array(40).fill("a"), ["\n"]]);
        else if (field === "stopTokenIds") s["stopTokenIds"] = rng.pick([[2 ** 31], [1], Array(400).fill(1)]);
        else s[field] = rng.pick(nasty);
      }
      return input;
    };
    for (let i = 0; i < 180; i += 6) {
      await Promise.all(
        Array.from({ length: 6 }, async () => {
          const tally = tallyOf("request: structured");
          requests.tried++;
          tally.tried++;
          const input = structured();
          try {
            GenerateRequest.encode(GenerateRequest.fromPartial(input));
          } catch {
            // protobufjs itself refuses the value (a float32 of 1e308): it never leaves the client.
            count(requests.rejected, status.INVALID_ARGUMENT);
            return;
          }
          const code = await codeOf(alpha.complete(input, { deadlineMs: 120_000 }));
          if (SERVER_FAULTS.has(code)) {
            tally.wrongCode++;
            problems.push(`${status[code]} for ${JSON.stringify(input).slice(0, 300)}`);
          }
          if (code === status.OK) tally.accepted++;
          if (code === status.OK) requests.ok++;
          else count(requests.rejected, code);
        }),
      );
    }
    const Raw = makeGenericClientConstructor(
      {
        complete: {
          path: "/loramesh.v1.InferenceService/Complete",
          requestStream: false,
          responseStream: false,
          requestSerialize: (b: Buffer) => b,
          requestDeserialize: (b: Buffer) => b,
          responseSerialize: (b: Buffer) => b,
          responseDeserialize: (b: Buffer) => b,
        },
      },
      "Raw",
    );
    const raw = new Raw(cluster.routerAddress, credentials.createInsecure()) as unknown as {
      complete(req: Buffer, md: Metadata, opts: object, cb: (e: ServiceError | null) => void): void;
      close(): void;
    };
    const valid = Buffer.from(
      GenerateRequest.encode(
        GenerateRequest.fromPartial({
          prompt: { $case: "text", value: "SELECT id FROM" },
          adapter: "sql-r8",
          sampling: { maxTokens: 3, ...GREEDY, seed: 7 },
        }),
      ).finish(),
    );
    for (let i = 0; i < 180; i += 6) {
      await Promise.all(
        Array.from({ length: 6 }, async () => {
          const bytes = Buffer.from(valid);
          for (let f = 0; f < 1 + rng.int(4); f++) bytes[rng.int(bytes.length)] = rng.int(256);
          const mutated = rng.next() < 0.2 ? bytes.subarray(0, rng.int(bytes.length)) : bytes;
          const md = new Metadata();
          md.set("authorization", `Bearer ${KEY_A}`);
          const tally = tallyOf("request: raw mutated bytes");
          requests.tried++;
          tally.tried++;
          const code = await new Promise<status>((resolve) =>
            raw.complete(mutated, md, { deadline: Date.now() + 120_000 }, (e) => resolve(e ? e.code : status.OK)),
          );
          if (SERVER_FAULTS.has(code)) {
            tally.wrongCode++;
            problems.push(`${status[code]} for ${mutated.toString("hex")}`);
          }
          if (code === status.OK) tally.accepted++;
          if (code === status.OK) requests.ok++;
          else count(requests.rejected, code);
        }),
      );
    }
    raw.close();
    console.log(`      fuzz (processes): registrations ${JSON.stringify(registrations)}`);
    console.log(`      fuzz (processes): requests ${JSON.stringify(requests)}`);
    for (const [family, t] of families) {
      // Only registrations have a judge of "bad" (@loramesh/testing's adapter-oracle.ts); a request's outcome is its code.
      const { acceptedBad, ...rest } = t;
      const line = family.startsWith("registration") ? { family, ...rest, acceptedBad } : { family, ...rest };
      console.log(`      fuzz-summary ${JSON.stringify(line)}`);
    }
    expect(problems.slice(0, 5), "accepted bad inputs or wrong codes").to.deep.equal([]);

    // No process died, and the cluster still serves.
    expect(crashed, crashed).to.equal(undefined);
    expect(cluster.processes.map((p) => `${p.service}:${p.pid}`)).to.deep.equal(startPids);
    const after: GenerateResponse[] = [];
    for await (const d of alpha.generate({
      prompt: { $case: "text", value: "SELECT" },
      adapter: "sql-r8",
      sampling: { maxTokens: 4, ...GREEDY },
    }))
      after.push(d);
    expect(after.flatMap((d) => d.tokenIds)).to.have.length(4);
    expect(registrations.tried).to.equal(120);
    expect(requests.tried).to.equal(360);
  });
});
