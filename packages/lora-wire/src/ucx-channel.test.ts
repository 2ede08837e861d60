// The UCX site transport in one process over TCP on loopback: a real UCP listener and endpoint, the
// real AttachUcx RPC over gRPC, the native server thread computing with the batched kernel.
import { expect } from "chai";
import { bidiStreamHandler, unaryHandler } from "@loramesh/core";
import { NotFoundError, UnavailableError } from "@loramesh/errors";
import type { ModelConfig } from "@loramesh/formats";
import { f32, i32, native, packLoraWeights } from "@loramesh/native";
import { type AttachUcxRequest, LoraServerServiceService } from "@loramesh/proto";
import { captureLogger, startTestGrpcServer } from "@loramesh/testing";
import { LoraStreamClient, serveLoraStream, type SiteWork, ucxSupport, UcxServer } from "./index";

const MODEL = {
  numLayers: 2,
  numExperts: 0,
  hiddenSize: 8,
  numHeads: 2,
  numKvHeads: 1,
  headDim: 4,
  intermediateSize: 8,
} as ModelConfig;

describe("LoRA wire: UCX (tcp on loopback)", function () {
  this.timeout(60_000);
  const savedTls = process.env["UCX_TLS"];

  before(function () {
    const support = ucxSupport();
    if (!support.available) {
      console.log("      skipped: this native core was built without UCX (install libucx-dev and rebuild)");
      this.skip();
    }
    // TCP only, as between two hosts without RDMA hardware (UCX reads this when a context starts).
    process.env["UCX_TLS"] = "tcp";
  });
  after(() => {
    if (savedTls === undefined) delete process.env["UCX_TLS"];
    else process.env["UCX_TLS"] = savedTls;
  });

  it("attaches through AttachUcx, computes sites on the UCX thread with the ring's kernel bits, falls back to the stream, fails typed when the server stops", async () => {
    const ucx = new UcxServer({ model: MODEL, bindHost: "127.0.0.1" });
    const a = Float32Array.from({ length: 2 * 8 }, (_, i) => Math.sin(i));
    const b = Float32Array.from({ length: 8 * 2 }, (_, i) => Math.cos(i));
    const weights = packLoraWeights([[{ rank: 2, scale: 0.5, a, b }]], 8, [8]);
    ucx.setTables(["t.a.1"], [{ layer: 1, site: 1, moe: false, weights }]);
    let streamSites = 0;
    const server = await startTestGrpcServer([
      {
        name: "loramesh.v1.LoraServerService",
        definition: LoraServerServiceService,
        implementation: {
          execute: bidiStreamHandler(captureLogger(), (call) =>
            serveLoraStream(call, {
              streamId: 1,
              executor: {
                hInOf: () => 8,
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
          attachSharedMemory: unaryHandler(captureLogger(), async () => ({ name: "", bytes: 0 })),
          attachUcx: unaryHandler(captureLogger(), async (r: AttachUcxRequest) => ({
            ...ucx.attach(r.workerId),
            ucxVersion: ucxSupport().version,
          })),
        },
      },
    ]);
    const client = new LoraStreamClient({
      serverId: "s1",
      address: server.address,
      workerId: "w1",
      hostId: "h1",
      sharedMemory: false,
      ucx: true,
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
      expect(client.transport).to.equal("ucx");
      expect(client.siteBackend, "the native step's backend").to.not.equal(undefined);
      const y = f32([rows, 8]);
      await native.loraApply(weights, f32([rows, 8], x), i32([rows], Int32Array.from([0, -1, 0])), y);
      expect([...delta]).to.deep.equal([...y.data]);
      expect(ucx.stats()).to.include({ nativeCalls: 1, workItems: 1, rows: 3, connected: 1, rejected: 0 });
      // A big site (rendezvous-sized: 4096 rows × 8 floats each way) arrives whole.
      const big = 4096;
      const bx = Float32Array.from({ length: big * 8 }, (_, i) => Math.sin(i * 0.01));
      const bigDelta = await client.request({
        ...site,
        rows: big,
        x: bx,
        rowAdapter: Array.from({ length: big }, () => 1),
      });
      const by = f32([big, 8]);
      await native.loraApply(weights, f32([big, 8], bx), i32([big], new Int32Array(big)), by);
      expect([...bigDelta]).to.deep.equal([...by.data]);
      // A site no adapter touches is zero; an adapter the server does not hold goes to the stream.
      expect([...(await client.request({ ...site, layer: 0 }))].every((v) => v === 0)).to.equal(true);
      await client.request({ ...site, rowAdapter: [0, 0, 0] }).then(
        () => expect.fail("should fail"),
        (err: unknown) => expect(err).to.be.instanceOf(NotFoundError),
      );
      expect(streamSites).to.equal(1);
      // A bad shape is refused by the server's checks with a typed error, not a crash.
      await native
        .shmSite(client.siteBackend as NonNullable<typeof client.siteBackend>, {
          layer: 1,
          site: 1,
          adapterIds: ["t.a.1"],
          rowAdapter: Int32Array.from([0]),
          x: new Float32Array(7),
          rows: 1,
          hIn: 7,
          nOut: 8,
          timeoutMs: 5_000,
        })
        .then(
          () => expect.fail("should fail"),
          (err: unknown) => expect((err as Error).message).to.match(/does not match the model/),
        );
      // A stopped server closes the connection: the next site is UNAVAILABLE, not a hang.
      ucx.stop();
      await client.request(site).then(
        () => expect.fail("should fail"),
        (err: unknown) => expect(err).to.be.instanceOf(UnavailableError),
      );
    } finally {
      client.close();
      ucx.stop();
      await server.stop(0);
    }
  });

  it("refuses a connection whose session key the server never issued", async () => {
    const ucx = new UcxServer({ model: MODEL, bindHost: "127.0.0.1" });
    try {
      const { host, port } = ucx.attach("w1");
      await native.ucxConnect(host, port, "00".repeat(16), 10_000).then(
        () => expect.fail("should be refused"),
        (err: unknown) => {
          expect(err).to.be.instanceOf(UnavailableError);
          expect((err as Error).message).to.match(/unknown UCX session key/);
        },
      );
      expect(ucx.stats().rejected).to.equal(1);
      await native.ucxConnect(host, port, "not-hex", 1_000).then(
        () => expect.fail("should be refused"),
        (err: unknown) => expect((err as Error).message).to.match(/malformed UCX session key/),
      );
    } finally {
      ucx.stop();
    }
  });
});
