// The router's OpenAI-compatible HTTP API, driven by the official `openai` client against a real
// cluster (processes, Redis, gRPC between them).
import { clusterClientOptions } from "@loramesh/core";
import { expect } from "chai";
import OpenAI, { APIError } from "openai";
import { credentials } from "@grpc/grpc-js";
import type { LocalCluster } from "@loramesh/cli";
import { Tokenizer } from "@loramesh/formats";
import { unary } from "@loramesh/mesh";
import { BaseWorkerServiceClient, type BaseWorkerStats, type BaseWorkerStatsRequest } from "@loramesh/proto";
import { adapterDir, adapterNames, golden, modelDir, startCluster } from "./mesh-helpers";

const MODEL = "tiny-llama";
const PROMPT = "The quick brown fox";

/** vLLM's extra sampling fields, sent in the body as the openai client passes unknown fields. */
type Extra = Record<string, unknown>;
const completion = (c: OpenAI, body: Extra): Promise<OpenAI.Completion> =>
  c.completions.create(body as unknown as OpenAI.CompletionCreateParamsNonStreaming);
const completionStream = (c: OpenAI, body: Extra, signal?: AbortSignal): Promise<AsyncIterable<OpenAI.Completion>> =>
  c.completions.create(
    { ...body, stream: true } as unknown as OpenAI.CompletionCreateParamsStreaming,
    signal ? { signal } : {},
  );

async function statusOf(p: Promise<unknown>): Promise<APIError> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err, "the call fails").to.be.instanceOf(APIError);
  return err as APIError;
}

async function workerStats(address: string, token: string): Promise<BaseWorkerStats> {
  const client = new BaseWorkerServiceClient(address, credentials.createInsecure(), clusterClientOptions(token));
  try {
    return await unary<BaseWorkerStatsRequest, BaseWorkerStats>(client.getStats.bind(client), client, {});
  } finally {
    client.close();
  }
}

describe("OpenAI-compatible HTTP API (official openai client, real cluster)", function () {
  this.timeout(180_000);
  const g = golden(MODEL);
  const tokenizer = Tokenizer.load(modelDir(MODEL));
  let cluster: LocalCluster;
  let alpha: OpenAI;
  let beta: OpenAI;
  let baseURL: string;

  before(async () => {
    cluster = await startCluster({
      modelDir: modelDir(MODEL),
      workers: 1,
      extraArgs: { router: ["--api-keys", "key-a=alpha,key-b=beta"] },
    });
    baseURL = `http://${cluster.httpAddress}/v1`;
    alpha = new OpenAI({ baseURL, apiKey: "key-a", maxRetries: 0 });
    beta = new OpenAI({ baseURL, apiKey: "key-b", maxRetries: 0 });
    // vLLM's load endpoint registers each golden adapter for alpha and answers once it is servable.
    for (const name of adapterNames(g)) {
      const res = await fetch(`${baseURL}/load_lora_adapter`, {
        method: "POST",
        headers: { authorization: "Bearer key-a", "content-type": "application/json" },
        body: JSON.stringify({ lora_name: name, lora_path: adapterDir(MODEL, name) }),
      });
      expect(res.status, await res.clone().text()).to.equal(200);
      expect(await res.text()).to.equal(`Success: LoRA adapter '${name}' added successfully.`);
    }
  });
  after(async () => {
    await cluster?.stop();
  });

  it("gives the golden greedy tokens for token-id prompts, for the base model and every golden adapter", async () => {
    const results = await Promise.all(
      g.cases.map((c) =>
        completion(alpha, {
          model: c.adapter ?? MODEL,
          prompt: (g.prompts[c.prompt] as { ids: number[] }).ids,
          max_tokens: g.steps,
          temperature: 0,
          ignore_eos: true,
        }),
      ),
    );
    results.forEach((r, i) => {
      const c = g.cases[i] as (typeof g.cases)[number];
      expect(r.object).to.equal("text_completion");
      expect(r.choices[0]?.text, `${c.adapter ?? "base"} prompt ${c.prompt}`).to.equal(tokenizer.decode(c.output_ids));
      expect(r.choices[0]?.finish_reason).to.equal("length");
      expect(r.usage?.completion_tokens).to.equal(g.steps);
      expect(r.usage?.prompt_tokens).to.equal((g.prompts[c.prompt] as { ids: number[] }).ids.length);
    });
  });

  it("streams completions as server-sent events whose text equals the non-streamed text at temperature 0", async () => {
    const body = { model: "sql-r8", prompt: PROMPT, max_tokens: 20, temperature: 0, ignore_eos: true };
    const whole = await completion(alpha, body);
    let streamed = "";
    let finish: string | null = null;
    let usage: OpenAI.CompletionUsage | undefined;
    for await (const chunk of await completionStream(alpha, { ...body, stream_options: { include_usage: true } })) {
      for (const choice of chunk.choices) {
        streamed += choice.text;
        finish = choice.finish_reason ?? finish;
      }
      if (chunk.usage) usage = chunk.usage;
    }
    expect(streamed).to.equal(whole.choices[0]?.text);
    expect(streamed.length).to.be.greaterThan(0);
    expect(finish).to.equal("length");
    expect(usage).to.deep.equal(whole.usage);
    expect(usage?.completion_tokens).to.equal(20);
  });

  it("answers a list of prompts with n choices each, and counts each prompt once in usage", async () => {
    const ids = (g.prompts[0] as { ids: number[] }).ids;
    const r = await completion(alpha, {
      model: MODEL,
      prompt: [ids, ids.slice(0, 3)],
      n: 2,
      max_tokens: 5,
      temperature: 0,
      ignore_eos: true,
    });
    expect(r.choices.map((c) => c.index).sort()).to.deep.equal([0, 1, 2, 3]);
    expect(r.choices.find((c) => c.index === 0)?.text).to.equal(r.choices.find((c) => c.index === 1)?.text);
    expect(r.usage?.prompt_tokens).to.equal(ids.length + 3);
    expect(r.usage?.completion_tokens).to.equal(20);
  });

  it("serves chat completions through the chat template, streamed and not, with equal text at temperature 0", async () => {
    const body = {
      model: "chat-r16-all",
      messages: [{ role: "user" as const, content: "hello there" }],
      max_completion_tokens: 16,
      temperature: 0,
      ignore_eos: true,
    } as unknown as OpenAI.ChatCompletionCreateParamsNonStreaming;
    const whole = await alpha.chat.completions.create(body);
    expect(whole.object).to.equal("chat.completion");
    expect(whole.choices[0]?.message.role).to.equal("assistant");
    const expectedIds = tokenizer.encode(tokenizer.applyChatTemplate([{ role: "user", content: "hello there" }]));
    expect(whole.usage?.prompt_tokens).to.equal(expectedIds.length);
    let streamed = "";
    let role: string | undefined;
    let usage: OpenAI.CompletionUsage | undefined;
    const stream = await alpha.chat.completions.create({
      ...body,
      stream: true,
      stream_options: { include_usage: true },
    });
    for await (const chunk of stream) {
      expect(chunk.object).to.equal("chat.completion.chunk");
      for (const choice of chunk.choices) {
        role ??= choice.delta.role;
        streamed += choice.delta.content ?? "";
      }
      if (chunk.usage) usage = chunk.usage;
    }
    expect(role).to.equal("assistant");
    expect(streamed).to.equal(whole.choices[0]?.message.content);
    expect(usage).to.deep.equal(whole.usage);
  });

  it("returns completion logprobs: the greedy token's is the top one, values <= 0, sorted, as many as asked", async () => {
    const body = { model: MODEL, prompt: PROMPT, max_tokens: 6, temperature: 0, ignore_eos: true, logprobs: 3 };
    const whole = await completion(alpha, body);
    const lp = whole.choices[0]?.logprobs;
    expect(lp?.tokens).to.have.length(6);
    expect(lp?.tokens?.join("")).to.equal(whole.choices[0]?.text);
    lp?.token_logprobs?.forEach((logprob, i) => {
      const top = Object.values(lp.top_logprobs?.[i] ?? {});
      expect(top).to.have.length(3);
      expect(top).to.deep.equal([...top].sort((a, b) => b - a));
      expect(logprob).to.be.at.most(0);
      expect(logprob).to.equal(Math.max(...top));
      expect(lp.text_offset?.[i]).to.equal(lp.tokens?.slice(0, i).join("").length);
    });
    const streamed: number[] = [];
    for await (const chunk of await completionStream(alpha, body))
      for (const c of chunk.choices) streamed.push(...(c.logprobs?.token_logprobs ?? []));
    expect(streamed).to.deep.equal(lp?.token_logprobs);
    const plain = await completion(alpha, { model: MODEL, prompt: PROMPT, max_tokens: 2 });
    expect(plain.choices[0]?.logprobs).to.equal(null);
  });

  it("returns chat logprobs with top_logprobs, streamed and not", async () => {
    const body = {
      model: MODEL,
      messages: [{ role: "user" as const, content: "hello there" }],
      max_completion_tokens: 5,
      temperature: 0,
      ignore_eos: true,
      logprobs: true,
      top_logprobs: 4,
    } as unknown as OpenAI.ChatCompletionCreateParamsNonStreaming;
    const whole = await alpha.chat.completions.create(body);
    const content = whole.choices[0]?.logprobs?.content ?? [];
    expect(content).to.have.length(5);
    for (const t of content) {
      expect(t.top_logprobs).to.have.length(4);
      expect(t.logprob).to.be.at.most(0);
      expect(t.logprob).to.equal(t.top_logprobs[0]?.logprob);
      expect(t.token).to.equal(t.top_logprobs[0]?.token);
      expect(Buffer.from(t.bytes ?? []).toString("utf8")).to.equal(t.token);
      const values = t.top_logprobs.map((x) => x.logprob);
      expect(values).to.deep.equal([...values].sort((a, b) => b - a));
    }
    const streamed: string[] = [];
    const stream = await alpha.chat.completions.create({ ...body, stream: true });
    for await (const chunk of stream)
      for (const c of chunk.choices) streamed.push(...(c.logprobs?.content ?? []).map((t) => t.token));
    expect(streamed).to.deep.equal(content.map((t) => t.token));
    const tooMany = await statusOf(alpha.chat.completions.create({ ...body, top_logprobs: 21 }));
    expect(tooMany.status).to.equal(400);
    expect(tooMany.param).to.equal("top_logprobs");
  });

  it("lists the base model and the tenant's adapters, and gets each by id", async () => {
    const models = await alpha.models.list();
    const ids = models.data.map((m) => m.id);
    expect(ids).to.have.members([MODEL, ...adapterNames(g)]);
    const sql = models.data.find((m) => m.id === "sql-r8") as unknown as { parent: string; root: string };
    expect(sql.parent).to.equal(MODEL);
    expect(sql.root).to.equal(adapterDir(MODEL, "sql-r8"));
    expect((await alpha.models.retrieve("sql-r8")).id).to.equal("sql-r8");
    expect((await alpha.models.retrieve(MODEL)).id).to.equal(MODEL);
    expect((await beta.models.list()).data.map((m) => m.id)).to.deep.equal([MODEL]);
    const missing = await statusOf(alpha.models.retrieve("no-such-model"));
    expect(missing.status).to.equal(404);
    expect(missing.code).to.equal("model_not_found");
  });

  it("loads, uses and unloads an adapter through vLLM's endpoints, and accepts LoRAX's adapter_id", async () => {
    const post = (path: string, body: object): Promise<Response> =>
      fetch(`${baseURL}/${path}`, {
        method: "POST",
        headers: { authorization: "Bearer key-b", "content-type": "application/json" },
        body: JSON.stringify(body),
      });
    const load = await post("load_lora_adapter", { lora_name: "mine", lora_path: adapterDir(MODEL, "pattern-r8") });
    expect(load.status, await load.clone().text()).to.equal(200);
    const ids = (g.prompts[1] as { ids: number[] }).ids;
    const expected = g.cases.find((c) => c.adapter === "pattern-r8" && c.prompt === 1)?.output_ids as number[];
    const viaModel = await completion(beta, {
      model: "mine",
      prompt: ids,
      max_tokens: g.steps,
      temperature: 0,
      ignore_eos: true,
    });
    expect(viaModel.choices[0]?.text).to.equal(tokenizer.decode(expected));
    const viaAdapterId = await completion(beta, {
      model: MODEL,
      adapter_id: "mine",
      prompt: ids,
      max_tokens: g.steps,
      temperature: 0,
      ignore_eos: true,
    });
    expect(viaAdapterId.choices[0]?.text).to.equal(tokenizer.decode(expected));
    expect(viaAdapterId.model).to.equal("mine");
    const unload = await post("unload_lora_adapter", { lora_name: "mine" });
    expect(unload.status).to.equal(200);
    const gone = await statusOf(completion(beta, { model: "mine", prompt: "x", max_tokens: 2 }));
    expect(gone.status).to.equal(404);
    expect(gone.code).to.equal("model_not_found");
    expect((await post("unload_lora_adapter", { lora_name: "mine" })).status).to.equal(404);
    const bad = await post("load_lora_adapter", { lora_name: "broken", lora_path: "/no/such/dir" });
    expect(bad.status).to.equal(400);
  });

  it("maps the bearer key to its tenant: 401 without a known key, another tenant's adapter is model_not_found", async () => {
    // The official client refuses to send without a key; a plain request shows the 401 in OpenAI's shape.
    const noKey = await fetch(`${baseURL}/models`);
    expect(noKey.status).to.equal(401);
    expect(((await noKey.json()) as { error: { type: string } }).error.type).to.equal("authentication_error");
    const wrong = await statusOf(new OpenAI({ baseURL, apiKey: "nope", maxRetries: 0 }).models.list());
    expect(wrong.status).to.equal(401);
    expect((wrong.error as { type: string }).type).to.equal("authentication_error");
    const foreign = await statusOf(completion(beta, { model: "sql-r8", prompt: PROMPT, max_tokens: 2 }));
    expect(foreign.status).to.equal(404);
    expect(foreign.code).to.equal("model_not_found");
  });

  it("refuses what it does not implement with a 400 naming the parameter, and bad values the same way", async () => {
    const cases: Array<[Extra, string]> = [
      [{ presence_penalty: 0.5 }, "presence_penalty"],
      [{ logit_bias: { "5": 10 } }, "logit_bias"],
      [{ logprobs: 6 }, "logprobs"],
      [{ temperature: -1 }, "temperature"],
      [{ top_p: 2 }, "top_p"],
      [{ no_such_field: 1 }, "no_such_field"],
      [{ stop: [""] }, "stop"],
    ];
    for (const [extra, param] of cases) {
      const err = await statusOf(completion(alpha, { model: MODEL, prompt: PROMPT, max_tokens: 2, ...extra }));
      expect(err.status, param).to.equal(400);
      expect(err.param, param).to.equal(param);
      expect((err.error as { type: string }).type).to.equal("invalid_request_error");
    }
    const noPrompt = await statusOf(completion(alpha, { model: MODEL, prompt: [], max_tokens: 2 }));
    expect(noPrompt.param).to.equal("prompt");
    const badToken = await statusOf(completion(alpha, { model: MODEL, prompt: [999_999], max_tokens: 2 }));
    expect(badToken.status).to.equal(400);
  });

  it("answers 413 for a prompt over the model's context", async () => {
    const err = await statusOf(
      completion(alpha, { model: MODEL, prompt: new Array<number>(600).fill(5), max_tokens: 4 }),
    );
    expect(err.status).to.equal(413);
    expect(err.code).to.equal("context_length_exceeded");
  });

  it("honours stop, stop_token_ids and min_tokens", async () => {
    const ids = (g.prompts[0] as { ids: number[] }).ids;
    const expected = g.cases.find((c) => c.adapter === null && c.prompt === 0)?.output_ids as number[];
    const stopId = expected[3] as number;
    const stopped = await completion(alpha, {
      model: MODEL,
      prompt: ids,
      max_tokens: 20,
      temperature: 0,
      stop_token_ids: [stopId],
    });
    expect(stopped.choices[0]?.finish_reason).to.equal("stop");
    expect(stopped.usage?.completion_tokens).to.be.at.most(3);
    const held = await completion(alpha, {
      model: MODEL,
      prompt: ids,
      max_tokens: 20,
      temperature: 0,
      stop_token_ids: [stopId],
      min_tokens: 10,
    });
    expect(held.usage?.completion_tokens).to.be.at.least(10);
  });

  it("cancels the sequence on the worker when the client disconnects mid-stream (its KV blocks are freed)", async () => {
    const worker = cluster.processes.find((p) => p.service === "base-worker")?.address as string;
    const before = await workerStats(worker, cluster.clusterToken);
    const aborter = new AbortController();
    const stream = await completionStream(
      alpha,
      { model: "sql-r8", prompt: PROMPT, max_tokens: 400, temperature: 0, ignore_eos: true },
      aborter.signal,
    );
    let chunks = 0;
    let running = 0;
    try {
      for await (const _ of stream) {
        void _;
        if (++chunks === 3) {
          running = (await workerStats(worker, cluster.clusterToken)).runningSequences;
          aborter.abort();
        }
      }
    } catch (err) {
      expect((err as Error).name).to.match(/Abort/);
    }
    expect(running, "the sequence was running when the client left").to.equal(1);
    // The worker reports the cancellation: wait for that state, not for a time window.
    let after = await workerStats(worker, cluster.clusterToken);
    for (
      let i = 0;
      i < 200 && (after.runningSequences !== 0 || after.cancelledSequences === before.cancelledSequences);
      i++
    ) {
      await new Promise((r) => setTimeout(r, 50));
      after = await workerStats(worker, cluster.clusterToken);
    }
    expect(after.cancelledSequences).to.equal(before.cancelledSequences + 1);
    expect(after.runningSequences).to.equal(0);
    expect(after.kvBlocksUsed).to.equal(0);
    expect(after.generatedTokens - before.generatedTokens).to.be.lessThan(400);
  });
});

describe("OpenAI-compatible HTTP API: admission limits and no worker (official openai client)", function () {
  this.timeout(120_000);
  let cluster: LocalCluster;
  let client: OpenAI;

  before(async () => {
    cluster = await startCluster({
      modelDir: modelDir(MODEL),
      mode: "coupled",
      workers: 1,
      loraServers: 0,
      extraArgs: { router: ["--max-in-flight", "1"], provisioner: ["--heartbeat-ttl-ms", "1500"] },
    });
    client = new OpenAI({ baseURL: `http://${cluster.httpAddress}/v1`, apiKey: "unused", maxRetries: 0 });
  });
  after(async () => {
    await cluster?.stop();
  });

  it("answers 429 when the router's admission refuses a request", async () => {
    const stream = await completionStream(client, { model: MODEL, prompt: PROMPT, max_tokens: 300, ignore_eos: true });
    const iterator = stream[Symbol.asyncIterator]();
    await iterator.next();
    const refused = await statusOf(completion(client, { model: MODEL, prompt: PROMPT, max_tokens: 2 }));
    expect(refused.status).to.equal(429);
    expect((refused.error as { type: string }).type).to.equal("rate_limit_error");
    while (!(await iterator.next()).done);
  });

  it("answers 503 when no base worker can serve", async () => {
    // `up` restarts a worker that dies, so the only worker is stopped (SIGSTOP) instead: the router
    // loses it (keepalive, or the provisioner dropping it when its heartbeat expires); bounded wait.
    const worker = cluster.processes.find((p) => p.service === "base-worker") as { pid: number };
    process.kill(worker.pid, "SIGSTOP");
    try {
      let status = 0;
      for (let i = 0; i < 100 && status !== 503; i++) {
        const err = await completion(client, { model: MODEL, prompt: PROMPT, max_tokens: 1 }).then(
          () => undefined,
          (e: unknown) => e as APIError,
        );
        status = err?.status ?? 200;
        if (status !== 503) await new Promise((r) => setTimeout(r, 100));
      }
      expect(status).to.equal(503);
    } finally {
      process.kill(worker.pid, "SIGCONT");
    }
  });
});
