import { existsSync } from "node:fs";
import { expect } from "chai";
import { status } from "@grpc/grpc-js";
import { bidiStreamHandler, unaryHandler } from "@loramesh/core";
import { InvalidArgumentError, NotFoundError, UnavailableError } from "@loramesh/errors";
import type { LoraSite } from "@loramesh/formats";
import {
  LoraResult,
  LoraServerServiceService,
  LoraSite as ProtoSite,
  LoraStreamRequest,
  type LoraWork,
} from "@loramesh/proto";
import { captureLogger, startTestGrpcServer } from "@loramesh/testing";
import {
  decodeReply,
  decodeWork,
  encodeErrorReply,
  encodeReply,
  encodeWork,
  errorOfReply,
  LoraStreamClient,
  PendingReplies,
  replyErrorOf,
  serveLoraStream,
  SharedRegion,
  siteFromProto,
  siteToProto,
  type SiteExecutor,
  type SiteWork,
} from "./index";

const H_IN = 8;
const hInOf = (): number => H_IN;

/** Through protobuf bytes, as a message crosses the wire. */
const overWire = (m: LoraStreamRequest): LoraWork => {
  const decoded = LoraStreamRequest.decode(LoraStreamRequest.encode(m).finish());
  if (decoded.kind?.$case !== "work") throw new Error("not a work message");
  return decoded.kind.value;
};
const replyOverWire = (r: LoraResult): LoraResult => LoraResult.decode(LoraResult.encode(r).finish());

function work(rows: number, nOut = 4): SiteWork {
  return {
    layer: 3,
    site: "gate_up",
    adapterIds: ["t.a.1", "t.b.2"],
    rowAdapter: Array.from({ length: rows }, (_, r) => (r % 3) - 1),
    rowExpert: [],
    x: Float32Array.from({ length: rows * H_IN }, (_, i) => i * 0.25 - 3),
    rows,
    hIn: H_IN,
    nOut,
  };
}

describe("LoRA wire", () => {
  it("maps every site both ways and rejects an unknown one as INVALID_ARGUMENT", () => {
    for (const site of ["qkv", "o", "gate_up", "down"] as LoraSite[])
      expect(siteFromProto(siteToProto(site))).to.equal(site);
    expect(siteToProto("down")).to.equal(ProtoSite.LORA_SITE_DOWN);
    expect(() => siteFromProto(ProtoSite.LORA_SITE_UNSPECIFIED)).to.throw(InvalidArgumentError, /unknown LoRA site/);
    expect(() => siteFromProto(99 as ProtoSite)).to.throw(InvalidArgumentError);
  });

  it("round-trips inline work and replies exactly", () => {
    const w = work(5);
    const received = decodeWork(overWire(encodeWork(7, { ...w, traceparent: "tp" }, undefined)), undefined, hInOf);
    expect(received).to.include({ stepId: 7, layer: 3, site: "gate_up", rows: 5, hIn: H_IN, transport: "grpc" });
    expect(received.traceparent).to.equal("tp");
    expect(received.rowAdapter).to.deep.equal([...w.rowAdapter]);
    expect([...received.x]).to.deep.equal([...w.x]);
    const delta = Float32Array.from({ length: 5 * 4 }, (_, i) => 1 / (i + 1));
    const reply = replyOverWire(encodeReply(received, delta, 4));
    expect([...decodeReply(reply, w, "s1")]).to.deep.equal([...delta]);
  });

  it("carries activations and deltas through a shared region both processes map", function () {
    if (!SharedRegion.supported()) this.skip();
    const workerSide = SharedRegion.create("wire-test", 4096);
    const serverSide = SharedRegion.attach(workerSide.path, 4096);
    try {
      const w = work(6);
      const message = encodeWork(1, w, workerSide);
      const raw = overWire(message);
      expect(raw.activations?.$case).to.equal("shared");
      const received = decodeWork(raw, serverSide, hInOf);
      expect(received.transport).to.equal("shm");
      expect([...received.x]).to.deep.equal([...w.x]);
      const delta = Float32Array.from({ length: 6 * 4 }, (_, i) => i - 0.5);
      const reply = replyOverWire(encodeReply(received, delta, 4, serverSide));
      expect(reply.delta?.$case).to.equal("shared");
      expect([...decodeReply(reply, w, "s1", workerSide)]).to.deep.equal([...delta]);
      // Too big for the region: inline instead.
      expect(overWire(encodeWork(2, work(100), workerSide)).activations?.$case).to.equal("inline");
    } finally {
      workerSide.release();
      serverSide.release();
    }
    expect(existsSync(workerSide.path)).to.equal(false);
  });

  it("rejects malformed work with INVALID_ARGUMENT", function () {
    const good = overWire(encodeWork(1, work(2), undefined));
    expect(() => decodeWork({ ...good, rowAdapter: [0] }, undefined, hInOf)).to.throw(
      InvalidArgumentError,
      /1 entries for 2 rows/,
    );
    expect(() => decodeWork({ ...good, rowAdapter: [0, 2] }, undefined, hInOf)).to.throw(
      InvalidArgumentError,
      /outside adapter_ids/,
    );
    expect(() => decodeWork(good, undefined, () => H_IN + 1)).to.throw(InvalidArgumentError, /activations must be f32/);
    const bare: LoraWork = { ...good, activations: undefined };
    expect(() => decodeWork(bare, undefined, hInOf)).to.throw(InvalidArgumentError, /no activations/);
    const shared: LoraWork = {
      ...good,
      activations: { $case: "shared", value: { offset: 0, dtype: 1, shape: [2, H_IN] } },
    };
    expect(() => decodeWork(shared, undefined, hInOf)).to.throw(InvalidArgumentError, /without a shared region/);
    if (!SharedRegion.supported()) return;
    const region = SharedRegion.create("wire-test-bounds", 256);
    try {
      const outside: LoraWork = {
        ...good,
        activations: { $case: "shared", value: { offset: 200, dtype: 1, shape: [2, H_IN] } },
      };
      expect(() => decodeWork(outside, region, hInOf)).to.throw(InvalidArgumentError, /outside the 256-byte region/);
    } finally {
      region.release();
    }
  });

  it("maps reply errors to typed errors: NOT_FOUND stays NOT_FOUND, the rest is UNAVAILABLE", () => {
    const header = { stepId: 4, layer: 1, site: ProtoSite.LORA_SITE_O };
    const notResident = replyOverWire(encodeErrorReply(header, new NotFoundError("adapter x is not resident")));
    expect(notResident.errorCode).to.equal(status.NOT_FOUND);
    expect(() => decodeReply(notResident, { rows: 1, nOut: 1 }, "s9")).to.throw(
      NotFoundError,
      /LoRA server s9: adapter x/,
    );
    expect(replyErrorOf(new InvalidArgumentError("bad")).errorCode).to.equal(status.INVALID_ARGUMENT);
    expect(errorOfReply(replyErrorOf(new InvalidArgumentError("bad")), "s")).to.be.instanceOf(UnavailableError);
    expect(replyErrorOf(new Error("boom"))).to.deep.equal({ error: "boom", errorCode: status.INTERNAL });
    expect(() => decodeReply({ ...header, error: "", errorCode: 0 }, { rows: 1, nOut: 1 }, "s")).to.throw(
      UnavailableError,
      /no delta/,
    );
  });

  it("matches replies to requests by step id, layer and site", async () => {
    const timeouts: Error[] = [];
    const pending = new PendingReplies({ timeoutMs: 60_000, peer: "s1", onTimeout: (e) => timeouts.push(e) });
    const a = pending.expect(1, 0, ProtoSite.LORA_SITE_QKV);
    const b = pending.expect(2, 0, ProtoSite.LORA_SITE_O);
    const reply = (stepId: number, site: ProtoSite): LoraResult => ({
      stepId,
      layer: 0,
      site,
      error: "",
      errorCode: 0,
    });
    expect(pending.settle(reply(2, ProtoSite.LORA_SITE_QKV))).to.equal(false); // wrong site
    expect(pending.settle(reply(3, ProtoSite.LORA_SITE_O))).to.equal(false); // nobody waits
    expect(pending.settle(reply(2, ProtoSite.LORA_SITE_O))).to.equal(true);
    expect((await b).stepId).to.equal(2);
    pending.failAll(new UnavailableError("stream lost"));
    await a.then(
      () => expect.fail("should fail"),
      (err: unknown) => expect(err).to.be.instanceOf(UnavailableError),
    );
    expect(pending.size).to.equal(0);
    const late = new PendingReplies({ timeoutMs: 1, peer: "s1", onTimeout: (e) => timeouts.push(e) });
    await late.expect(9, 0, ProtoSite.LORA_SITE_O).then(
      () => expect.fail("should time out"),
      (err: unknown) => expect(String(err)).to.match(/did not answer within 1 ms/),
    );
    expect(timeouts).to.have.length(1);
  });

  it("serves a real Execute stream end to end, over gRPC and over shared memory", async () => {
    // The executor doubles each row's activations into a delta of the same width, or fails a site.
    const executor: SiteExecutor = {
      hInOf,
      execute: async (w) => {
        if (w.site === "down") throw new NotFoundError("adapter t.a.1 is not resident");
        return { delta: w.x.map((v) => v * 2), nOut: H_IN };
      },
    };
    let streams = 0;
    const server = await startTestGrpcServer([
      {
        name: "loramesh.v1.LoraServerService",
        definition: LoraServerServiceService,
        implementation: {
          execute: bidiStreamHandler(captureLogger(), (call) =>
            serveLoraStream(call, { streamId: ++streams, hostId: "h1", executor, logger: captureLogger() }),
          ),
          loadAdapter: unaryHandler(captureLogger(), async () => ({ sizeBytes: 0, alreadyResident: false })),
          unloadAdapter: unaryHandler(captureLogger(), async () => ({ wasResident: false })),
          getStats: unaryHandler(captureLogger(), async () => ({})),
        },
      },
    ]);
    try {
      for (const sharedMemory of [false, SharedRegion.supported()]) {
        const client = new LoraStreamClient({
          serverId: "s1",
          address: server.address,
          workerId: "w1",
          hostId: "h1",
          sharedMemory,
          logger: captureLogger(),
        });
        try {
          const w = work(3, H_IN);
          const deltas = await Promise.all([client.request(w), client.request({ ...w, layer: 4 })]);
          expect(client.transport).to.equal(sharedMemory ? "shm" : "grpc");
          for (const d of deltas) expect([...d]).to.deep.equal([...w.x].map((v) => v * 2));
          await client.request({ ...w, site: "down" }).then(
            () => expect.fail("should fail"),
            (err: unknown) => expect(err).to.be.instanceOf(NotFoundError),
          );
        } finally {
          client.close();
        }
      }
    } finally {
      await server.stop(0);
    }
  });
});
