import { existsSync, readdirSync } from "node:fs";
import { expect } from "chai";
import { status } from "@grpc/grpc-js";
import { bidiStreamHandler, unaryHandler } from "@loramesh/core";
import { InvalidArgumentError, NotFoundError, UnavailableError } from "@loramesh/errors";
import type { LoraSite, ModelConfig } from "@loramesh/formats";
import { f32, i32, native, packLoraWeights } from "@loramesh/native";
import {
  type AttachSharedMemoryRequest,
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
  RingServer,
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
    const received = decodeWork(overWire(encodeWork(7, { ...w, traceparent: "tp" })), hInOf);
    expect(received).to.include({ stepId: 7, layer: 3, site: "gate_up", rows: 5, hIn: H_IN, transport: "grpc" });
    expect(received.traceparent).to.equal("tp");
    expect(received.rowAdapter).to.deep.equal([...w.rowAdapter]);
    expect([...received.x]).to.deep.equal([...w.x]);
    const delta = Float32Array.from({ length: 5 * 4 }, (_, i) => 1 / (i + 1));
    const reply = replyOverWire(encodeReply(received, delta, 4));
    expect([...decodeReply(reply, w, "s1")]).to.deep.equal([...delta]);
  });

  it("rejects malformed work with INVALID_ARGUMENT", function () {
    const good = overWire(encodeWork(1, work(2)));
    expect(() => decodeWork({ ...good, rowAdapter: [0] }, hInOf)).to.throw(
      InvalidArgumentError,
      /1 entries for 2 rows/,
    );
    expect(() => decodeWork({ ...good, rowAdapter: [0, 2] }, hInOf)).to.throw(
      InvalidArgumentError,
      /outside adapter_ids/,
    );
    expect(() => decodeWork(good, () => H_IN + 1)).to.throw(InvalidArgumentError, /activations must be f32/);
    const bare: LoraWork = { ...good, activations: undefined };
    expect(() => decodeWork(bare, hInOf)).to.throw(InvalidArgumentError, /no activations/);
    const shared: LoraWork = {
      ...good,
      activations: { $case: "shared", value: { offset: 0, dtype: 1, shape: [2, H_IN] } },
    };
    // The caller-sent shared-memory path is gone: slices on the stream are refused.
    expect(() => decodeWork(shared, hInOf)).to.throw(InvalidArgumentError, /not accepted on the stream/);
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

  it("serves a real Execute stream end to end over gRPC", async () => {
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
            serveLoraStream(call, { streamId: ++streams, executor, logger: captureLogger() }),
          ),
          loadAdapter: unaryHandler(captureLogger(), async () => ({ sizeBytes: 0, alreadyResident: false })),
          unloadAdapter: unaryHandler(captureLogger(), async () => ({ wasResident: false })),
          getStats: unaryHandler(captureLogger(), async () => ({})),
          attachSharedMemory: unaryHandler(captureLogger(), async () => ({ name: "", bytes: 0 })),
        },
      },
    ]);
    try {
      for (const sharedMemory of [false]) {
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
/** A model just big enough for the rings: every site 8 wide in, qkv 16 and gate_up 16 out. */
const RING_MODEL = {
  numLayers: 2,
  numExperts: 0,
  hiddenSize: 8,
  numHeads: 2,
  numKvHeads: 1,
  headDim: 4,
  intermediateSize: 8,
} as ModelConfig;

const ringSegments = (): string[] => readdirSync("/dev/shm").filter((n) => n.startsWith(`loramesh-${process.pid}-`));

describe("LoRA wire: shared-memory rings", function () {
  before(function () {
    if (process.platform !== "linux") this.skip();
  });

  it("attaches by a server-generated name, computes sites on the ring thread, and leaves nothing in /dev/shm", async () => {
    const ring = new RingServer({ model: RING_MODEL, hostId: "h1", windowMs: 0.2 });
    // One adapter on layer 1's o site, rank 2.
    const a = Float32Array.from({ length: 2 * 8 }, (_, i) => Math.sin(i));
    const b = Float32Array.from({ length: 8 * 2 }, (_, i) => Math.cos(i));
    const weights = packLoraWeights([[{ rank: 2, scale: 0.5, a, b }]], 8, [8]);
    let streamSites = 0;
    ring.setTables(["t.a.1"], [{ layer: 1, site: 1, moe: false, weights }]);
    const server = await startTestGrpcServer([
      {
        name: "loramesh.v1.LoraServerService",
        definition: LoraServerServiceService,
        implementation: {
          // What the ring's table leaves out goes over the stream; this server holds nothing there.
          execute: bidiStreamHandler(captureLogger(), (call) =>
            serveLoraStream(call, {
              streamId: 1,
              executor: {
                hInOf,
                execute: async () => {
                  streamSites++;
                  throw new NotFoundError("adapter t.b.9 is not resident");
                },
              },
              logger: captureLogger(),
            }),
          ),
          loadAdapter: unaryHandler(captureLogger(), async () => ({ sizeBytes: 0, alreadyResident: false })),
          unloadAdapter: unaryHandler(captureLogger(), async () => ({ wasResident: false })),
          getStats: unaryHandler(captureLogger(), async () => ({})),
          attachSharedMemory: unaryHandler(captureLogger(), async (r: AttachSharedMemoryRequest) =>
            ring.attach(r.workerId, r.hostId),
          ),
        },
      },
    ]);
    const client = new LoraStreamClient({
      serverId: "s1",
      address: server.address,
      workerId: "w1",
      hostId: "h1",
      sharedMemory: true,
      logger: captureLogger(),
    });
    try {
      const rows = 3;
      const x = Float32Array.from({ length: rows * 8 }, (_, i) => i * 0.1 - 1);
      const site: SiteWork = {
        layer: 1,
        site: "o",
        adapterIds: ["t.b.9", "t.a.1"],
        rowAdapter: [1, -1, 1],
        rowExpert: [],
        x,
        rows,
        hIn: 8,
        nOut: 8,
      };
      const delta = await client.request(site);
      expect(client.transport).to.equal("shm");
      // The same kernel in this process gives the same bits.
      const y = f32([rows, 8]);
      await native.loraApply(weights, f32([rows, 8], x), i32([rows], Int32Array.from([0, -1, 0])), y);
      expect([...delta]).to.deep.equal([...y.data]);
      const stats = ring.stats();
      expect(stats).to.include({ nativeCalls: 1, workItems: 1, rows: 3, attached: 1 });
      // The one post is counted once, under what the ring thread was doing when it came.
      expect(Object.keys(stats.postsFound).sort()).to.deep.equal(
        ["busy", "contended", "expectSpin", "idle", "late", "noExpectation", "timedNap"].sort(),
      );
      expect(Object.values(stats.postsFound).reduce((a, n) => a + n, 0)).to.equal(1);
      expect(stats.preemptedSpins).to.be.a("number");
      // The worker unlinked the name once both sides had it mapped.
      expect(ringSegments()).to.deep.equal([]);
      // A site no adapter touches is zero. An adapter the ring does not hold (not resident, or
      // still loading layer by layer) goes to the stream, which answers for it: here NOT_FOUND.
      expect([...(await client.request({ ...site, layer: 0 }))].every((v) => v === 0)).to.equal(true);
      await client.request({ ...site, rowAdapter: [0, 0, 0] }).then(
        () => expect.fail("should fail"),
        (err: unknown) => expect(err).to.be.instanceOf(NotFoundError),
      );
      expect(streamSites).to.equal(1);
      // A server that stops detaches the worker: the next site is UNAVAILABLE, not a hang.
      ring.stop();
      await client.request(site).then(
        () => expect.fail("should fail"),
        (err: unknown) => expect(err).to.be.instanceOf(UnavailableError),
      );
    } finally {
      client.close();
      ring.stop();
      await server.stop(0);
    }
    expect(ringSegments()).to.deep.equal([]);
  });

  it("connect() attaches the ring before any request, once; a client closed while attaching lets the ring go", async () => {
    const ring = new RingServer({ model: RING_MODEL, hostId: "h1", windowMs: 0.2 });
    const weights = packLoraWeights(
      [[{ rank: 1, scale: 1, a: new Float32Array(8).fill(0.5), b: new Float32Array(8).fill(2) }]],
      8,
      [8],
    );
    ring.setTables(["t.a.1"], [{ layer: 0, site: 1, moe: false, weights }]);
    let attaches = 0;
    // Holds the next attach's answer until released, to close the client while it is in flight.
    let hold: Promise<void> | undefined;
    const server = await startTestGrpcServer([
      {
        name: "loramesh.v1.LoraServerService",
        definition: LoraServerServiceService,
        implementation: {
          execute: bidiStreamHandler(captureLogger(), (call) =>
            serveLoraStream(call, {
              streamId: 1,
              executor: {
                hInOf,
                execute: async () => {
                  throw new Error("every site here fits the ring");
                },
              },
              logger: captureLogger(),
            }),
          ),
          loadAdapter: unaryHandler(captureLogger(), async () => ({ sizeBytes: 0, alreadyResident: false })),
          unloadAdapter: unaryHandler(captureLogger(), async () => ({ wasResident: false })),
          getStats: unaryHandler(captureLogger(), async () => ({})),
          attachSharedMemory: unaryHandler(captureLogger(), async (r: AttachSharedMemoryRequest) => {
            attaches++;
            await hold;
            return ring.attach(r.workerId, r.hostId);
          }),
        },
      },
    ]);
    const options = { serverId: "s1", address: server.address, hostId: "h1", sharedMemory: true };
    const client = new LoraStreamClient({ ...options, workerId: "w1", logger: captureLogger() });
    const late = new LoraStreamClient({ ...options, workerId: "w2", logger: captureLogger() });
    try {
      // Two calls while attaching share one attach; the server has the worker before any site.
      const [first, second] = await Promise.all([client.connect(), client.connect()]);
      expect([first, second]).to.deep.equal(["shm", "shm"]);
      expect(attaches).to.equal(1);
      expect(ring.stats()).to.include({ attached: 1, workItems: 0 });
      const rows = 2;
      const x = Float32Array.from({ length: rows * 8 }, (_, i) => i * 0.1);
      const delta = await client.request({
        layer: 0,
        site: "o",
        adapterIds: ["t.a.1"],
        rowAdapter: [0, 0],
        rowExpert: [],
        x,
        rows,
        hIn: 8,
        nOut: 8,
      });
      expect(delta.length).to.equal(rows * 8);
      expect(attaches, "the request found the ring connect() opened").to.equal(1);
      expect(await client.connect(), "connect() on an open ring").to.equal("shm");
      expect(attaches).to.equal(1);
      expect(ringSegments()).to.deep.equal([]);

      // Closed while its attach is in flight: the ring that then arrives is closed, not kept.
      let release!: () => void;
      hold = new Promise<void>((r) => (release = r));
      const attaching = late.connect();
      while (attaches < 2) await new Promise((r) => setImmediate(r));
      late.close();
      release();
      expect(await attaching).to.equal("grpc");
      expect(late.ringBackend).to.equal(undefined);
      expect(await late.connect(), "connect() after close").to.equal("grpc");
      expect(attaches, "no attach after close").to.equal(2);
    } finally {
      client.close();
      late.close();
      ring.stop();
      await server.stop(0);
    }
    expect(ringSegments()).to.deep.equal([]);
  });

  it("refuses a worker on another host and names only segments it generated", () => {
    const ring = new RingServer({ model: RING_MODEL, hostId: "h1" });
    try {
      expect(() => ring.attach("w1", "h2")).to.throw(/only for workers on the LoRA server's host/);
      const { name } = ring.attach("w1", "h1");
      expect(name).to.match(new RegExp(`^loramesh-${process.pid}-[0-9a-f]{16}$`));
      expect(existsSync(`/dev/shm/${name}`)).to.equal(true);
      // A worker refuses names that are not ring segments (no path from a peer is ever opened).
      expect(() => native.shmConnect("../etc/passwd")).to.throw(InvalidArgumentError, /not a loramesh ring segment/);
    } finally {
      ring.stop();
    }
    // Stopping removes a segment no worker mapped.
    expect(ringSegments()).to.deep.equal([]);
  });
});
