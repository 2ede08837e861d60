import { expect } from "chai";
import {
  credentials,
  makeGenericClientConstructor,
  Metadata,
  Server,
  ServerCredentials,
  status,
  type Client,
  type ServiceDefinition,
  type ServiceError,
  type UntypedServiceImplementation,
} from "@grpc/grpc-js";
import { startTelemetry, telemetry } from "@loramesh/telemetry";
import { DeadlineExceededError, NotFoundError, UnauthenticatedError } from "@loramesh/errors";
import { fromServiceError } from "./grpc-client";
import { unaryHandler } from "./grpc-handlers";
import { authMiddleware, defaultMiddleware, type CallContext } from "./grpc-middleware";
import { ERROR_CLASS_METADATA_KEY } from "./grpc-status";
import { createLogger } from "./logging";

const quiet = createLogger({ level: "silent" });
const raw = (b: Buffer): Buffer => b;
const method = (name: string) => ({
  path: `/test.Echo/${name}`,
  requestStream: false,
  responseStream: false,
  requestSerialize: raw,
  requestDeserialize: raw,
  responseSerialize: raw,
  responseDeserialize: raw,
});
const ECHO: ServiceDefinition = { Say: method("Say"), Slow: method("Slow"), Fail: method("Fail"), Who: method("Who") };

type Call = (name: string, body: Buffer, metadata?: Metadata, deadlineMs?: number) => Promise<Buffer>;

describe("server middleware (real grpc-js server)", () => {
  let server: Server;
  let client: Client;
  let call: Call;
  let sawSlow: (ctx: CallContext) => void = () => undefined;

  before(async () => {
    startTelemetry("middleware-test");
    const impl: UntypedServiceImplementation = {
      Say: unaryHandler<Buffer, Buffer>(quiet, (req) => Promise.resolve(req)),
      Slow: unaryHandler<Buffer, Buffer>(quiet, async (_req, _call, ctx) => {
        // Waits for the abort the middleware turns the deadline into, then reports what it saw.
        await new Promise<void>((resolve) => ctx.signal.addEventListener("abort", () => resolve(), { once: true }));
        sawSlow(ctx);
        return Buffer.alloc(0);
      }),
      Fail: unaryHandler<Buffer, Buffer>(quiet, () => Promise.reject(new NotFoundError("adapter x not found"))),
      Who: unaryHandler<Buffer, Buffer>(
        quiet,
        (_req, _call, ctx) => Promise.resolve(Buffer.from(ctx.principal ?? "")),
        [
          authMiddleware((md) => {
            const key = md.get("x-api-key")[0];
            if (key !== "k1") throw new UnauthenticatedError("unknown API key");
            return "tenant-a";
          }),
          ...defaultMiddleware(),
        ],
      ),
    };
    server = new Server();
    server.addService(ECHO, impl);
    const port = await new Promise<number>((resolve, reject) =>
      server.bindAsync("127.0.0.1:0", ServerCredentials.createInsecure(), (err, p) => (err ? reject(err) : resolve(p))),
    );
    const Ctor = makeGenericClientConstructor(ECHO, "Echo");
    client = new Ctor(`127.0.0.1:${port}`, credentials.createInsecure());
    call = (name, body, metadata = new Metadata(), deadlineMs = 10_000) =>
      new Promise((resolve, reject) => {
        client.makeUnaryRequest(
          `/test.Echo/${name}`,
          raw,
          raw,
          body,
          metadata,
          { deadline: new Date(Date.now() + deadlineMs) },
          (err?: ServiceError | null, res?: Buffer) => (err ? reject(err) : resolve(res as Buffer)),
        );
      });
  });

  after(() => {
    client.close();
    server.forceShutdown();
  });

  it("passes a plain call through the chain", async () => {
    expect((await call("Say", Buffer.from("hi"))).toString()).to.equal("hi");
  });

  it("turns the caller's deadline into an aborted signal with a DeadlineExceededError reason", async () => {
    const seen = new Promise<CallContext>((resolve) => {
      sawSlow = resolve;
    });
    const failed = call("Slow", Buffer.alloc(0), new Metadata(), 1_000).then(
      () => undefined,
      (err: ServiceError) => err,
    );
    const ctx = await seen;
    expect(ctx.signal.aborted).to.equal(true);
    expect(ctx.signal.reason).to.be.instanceOf(DeadlineExceededError);
    expect(Number.isFinite(ctx.deadline)).to.equal(true);
    expect((await failed)?.code).to.equal(status.DEADLINE_EXCEEDED);
  });

  it("maps a domain error to its code with the error-class trailer, and back to the same class", async () => {
    const err = await call("Fail", Buffer.alloc(0)).then(
      () => undefined,
      (e: ServiceError) => e,
    );
    expect(err?.code).to.equal(status.NOT_FOUND);
    expect(err?.details).to.equal("adapter x not found");
    expect(err?.metadata.get(ERROR_CLASS_METADATA_KEY)).to.deep.equal(["NotFoundError"]);
    const typed = fromServiceError(err);
    expect(typed).to.be.instanceOf(NotFoundError);
    expect(typed.message).to.equal("adapter x not found");
  });

  it("counts calls by method and code and records their latency", async () => {
    await call("Say", Buffer.from("x"));
    await call("Fail", Buffer.alloc(0)).catch(() => undefined);
    const { resourceMetrics } = await telemetry().prometheus.collect();
    const all = resourceMetrics.scopeMetrics.flatMap((s) => s.metrics);
    const calls = all.find((m) => m.descriptor.name === "loramesh_rpc_server_calls_total");
    const points = (calls?.dataPoints ?? []) as Array<{ attributes: Record<string, unknown>; value: unknown }>;
    const countOf = (m: string, code: string): number =>
      Number(points.find((p) => p.attributes["method"] === m && p.attributes["code"] === code)?.value ?? 0);
    expect(countOf("/test.Echo/Say", "OK")).to.be.greaterThan(0);
    expect(countOf("/test.Echo/Fail", "NOT_FOUND")).to.be.greaterThan(0);
    const latency = all.find((m) => m.descriptor.name === "loramesh_rpc_server_duration_seconds");
    expect(latency?.dataPoints.some((p) => p.attributes["method"] === "/test.Echo/Say")).to.equal(true);
  });

  it("runs an auth hook before the handler: refused without a key, the principal handed on with one", async () => {
    const refused = await call("Who", Buffer.alloc(0)).then(
      () => undefined,
      (e: ServiceError) => e,
    );
    expect(refused?.code).to.equal(status.UNAUTHENTICATED);
    const md = new Metadata();
    md.set("x-api-key", "k1");
    expect((await call("Who", Buffer.alloc(0), md)).toString()).to.equal("tenant-a");
  });
});
