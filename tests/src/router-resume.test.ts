// A router lost mid-stream: an SDK given another router's address resumes each broken stream
// there (prompt + the tokens it already received), and the client sees every greedy stream
// token-exact, nothing repeated. The lost "router" is a TCP relay in front of the real one whose
// connections the test destroys: for the client that is a router dying (its streams end
// UNAVAILABLE), while the mesh behind it keeps serving.
import { expect } from "chai";
import { createServer, connect, type Server, type Socket } from "node:net";
import type { LocalCluster } from "@loramesh/cli";
import { LoraMeshClient, type GenerateInput } from "@loramesh/sdk";
import { modelDir, startCluster } from "./mesh-helpers";

const STREAMS = 20;
const TOKENS = 32;

const input = (i: number): GenerateInput => ({
  prompt: { $case: "text", value: `def resume_${i}(request):` },
  sampling: { maxTokens: TOKENS, temperature: 0, topP: 1, topK: 0, stop: [], stopTokenIds: [], ignoreEos: true },
});

/** Relays 127.0.0.1:port → target; `kill()` drops every connection and stops listening. */
async function relay(target: string): Promise<{ address: string; kill: () => void }> {
  const sockets = new Set<Socket>();
  const [host, port] = [target.slice(0, target.lastIndexOf(":")), Number(target.slice(target.lastIndexOf(":") + 1))];
  const server: Server = createServer((inbound) => {
    const outbound = connect(port, host);
    for (const s of [inbound, outbound]) {
      sockets.add(s);
      s.on("error", () => undefined);
      s.once("close", () => sockets.delete(s));
    }
    inbound.pipe(outbound).pipe(inbound);
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const address = server.address();
  if (address === null || typeof address === "string") throw new Error("relay has no port");
  return {
    address: `127.0.0.1:${address.port}`,
    kill: () => {
      server.close();
      for (const s of sockets) s.destroy();
    },
  };
}

describe("router lost mid-stream: the SDK resumes each stream on another router (resume_token_ids)", function () {
  this.timeout(300_000);
  let cluster: LocalCluster;
  let direct: LoraMeshClient;

  before(async () => {
    cluster = await startCluster({ modelDir: modelDir("tiny-llama"), mode: "coupled", workers: 1, loraServers: 0 });
    direct = new LoraMeshClient({ address: cluster.routerAddress, defaultDeadlineMs: 180_000 });
  });
  after(async () => {
    direct?.close();
    await cluster?.stop();
  });

  it(`${STREAMS} greedy streams, the door dies a quarter in: every stream completes token-exact through the other`, async () => {
    const reference = await Promise.all([...Array(STREAMS).keys()].map((i) => direct.complete(input(i))));
    const door = await relay(cluster.routerAddress);
    const client = new LoraMeshClient({
      address: door.address,
      resumeAddresses: [cluster.routerAddress],
      defaultDeadlineMs: 180_000,
    });
    let streamed = 0;
    let atKill: number[] | undefined;
    const received: number[][] = Array.from({ length: STREAMS }, () => []);
    try {
      const outcomes = await Promise.all(
        [...Array(STREAMS).keys()].map(async (i) => {
          try {
            for await (const d of client.generate(input(i))) {
              (received[i] as number[]).push(...d.tokenIds);
              streamed += d.tokenIds.length;
              if (atKill === undefined && streamed >= (STREAMS * TOKENS) / 4) {
                atKill = received.map((r) => r.length);
                door.kill();
              }
            }
            return undefined;
          } catch (err) {
            return (err as Error).message;
          }
        }),
      );
      expect(atKill, "the door died mid-decode").to.not.equal(undefined);
      const midStream = (atKill as number[]).filter((n) => n > 0 && n < TOKENS).length;
      const exact = received.filter((ids, i) => JSON.stringify(ids) === JSON.stringify(reference[i]?.tokenIds)).length;
      const failed = outcomes.filter((o) => o !== undefined);
      console.log(
        `      fault-summary ${JSON.stringify({ fault: "router (the client's door) lost mid-stream; SDK resumes on another router", tried: STREAMS, exact, failed: failed.length, hung: 0, midStream })}`,
      );
      expect(failed.slice(0, 5)).to.deep.equal([]);
      expect(exact).to.equal(STREAMS);
      expect(midStream, "some streams were cut mid-way and resumed").to.be.greaterThan(0);
    } finally {
      client.close();
      door.kill();
    }
  });

  it("refuses more resumed tokens than max_tokens allows (INVALID_ARGUMENT)", async () => {
    const err = await direct
      .complete({ ...input(0), resumeTokenIds: [...Array(TOKENS + 1).keys()] })
      .catch((e: unknown) => e as Error);
    expect((err as Error).message).to.match(/^INVALID_ARGUMENT: resume_token_ids/);
  });
});
