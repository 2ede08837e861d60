import { expect } from "chai";
import type { ServerUnaryCall, ServerWritableStream } from "@grpc/grpc-js";
import { NotFoundError, ResourceExhaustedError } from "@loramesh/errors";
import { serverStreamHandler, unaryHandler } from "@loramesh/core";
import {
  InferenceServiceService,
  SERVICE_NAMES,
  type CompleteResponse,
  type GenerateRequest,
  type GenerateResponse,
  type InferenceServiceServer,
} from "@loramesh/proto";
import { GrpcStatus, LoraMeshClient, LoraMeshClientError } from "@loramesh/sdk";
import { captureLogger, startTestGrpcServer, type TestGrpcServer } from "@loramesh/testing";

describe("errors across a real gRPC call (server mapper → SDK typed error)", () => {
  let server: TestGrpcServer;
  let client: LoraMeshClient;
  const seen: { authorization?: unknown; deadline?: unknown } = {};
  const logs = captureLogger();

  before(async () => {
    const implementation: Pick<InferenceServiceServer, "complete" | "generate"> = {
      complete: unaryHandler(
        logs,
        async (request: GenerateRequest, call: ServerUnaryCall<GenerateRequest, CompleteResponse>) => {
          seen.authorization = call.metadata.get("authorization")[0];
          seen.deadline = call.getDeadline();
          if (request.adapter === "missing") throw new NotFoundError(`adapter "missing" not found`);
          if (request.adapter === "big") throw new ResourceExhaustedError("rank 512 is above the limit 128");
          throw new TypeError("cannot read properties of undefined (reading 'secretField')");
        },
      ),
      generate: serverStreamHandler(
        logs,
        async (_request: GenerateRequest, call: ServerWritableStream<GenerateRequest, GenerateResponse>) => {
          call.write({ requestId: "r1", tokenIds: [5], text: "hi", finishReason: 0, logprobs: [] });
          throw new Error("engine exploded at /internal/path");
        },
      ),
    };
    server = await startTestGrpcServer([
      { name: SERVICE_NAMES.router[0], definition: InferenceServiceService, implementation },
    ]);
    client = new LoraMeshClient({ address: server.address, apiKey: "tenant-a-key", defaultDeadlineMs: 5_000 });
  });

  after(async () => {
    client.close();
    await server.stop();
  });

  it("keeps a domain error's code, message and class, and sends the API key and deadline", async () => {
    const err = await client
      .complete({ prompt: { $case: "text", value: "x" }, adapter: "missing" })
      .catch((e: unknown) => e);
    expect(err).to.be.instanceOf(LoraMeshClientError);
    const clientErr = err as LoraMeshClientError;
    expect(clientErr.code).to.equal(GrpcStatus.NOT_FOUND);
    expect(clientErr.details).to.equal('adapter "missing" not found');
    expect(clientErr.errorClass).to.equal("NotFoundError");
    expect(seen.authorization).to.equal("Bearer tenant-a-key");
    // grpc-js gives the deadline as a Date or epoch milliseconds; either way it is in the near future.
    const deadline = seen.deadline instanceof Date ? seen.deadline.getTime() : Number(seen.deadline);
    expect(deadline).to.be.within(Date.now(), Date.now() + 5_000);
    const big = (await client
      .complete({ prompt: { $case: "text", value: "x" }, adapter: "big" })
      .catch((e: unknown) => e)) as LoraMeshClientError;
    expect(big.code).to.equal(GrpcStatus.RESOURCE_EXHAUSTED);
    expect(big.retryable).to.equal(true);
  });

  it("turns an unexpected error into INTERNAL without leaking it, and logs it", async () => {
    const err = (await client
      .complete({ prompt: { $case: "text", value: "x" } })
      .catch((e: unknown) => e)) as LoraMeshClientError;
    expect(err.code).to.equal(GrpcStatus.INTERNAL);
    expect(err.details).to.equal("internal error");
    expect(JSON.stringify(logs.records)).to.contain("secretField");
  });

  it("delivers streamed messages, then the mapped error, through the async iterator", async () => {
    const received: GenerateResponse[] = [];
    let caught: unknown;
    try {
      for await (const delta of client.generate({ prompt: { $case: "text", value: "x" } })) received.push(delta);
    } catch (err) {
      caught = err;
    }
    expect(received.map((r) => r.text)).to.deep.equal(["hi"]);
    expect(caught).to.be.instanceOf(LoraMeshClientError);
    expect((caught as LoraMeshClientError).code).to.equal(GrpcStatus.INTERNAL);
    expect((caught as LoraMeshClientError).details).to.not.contain("/internal/path");
  });

  it("answers UNIMPLEMENTED for methods a process does not serve", async () => {
    const err = (await client.listAdapters().catch((e: unknown) => e)) as LoraMeshClientError;
    expect(err.code).to.equal(GrpcStatus.UNIMPLEMENTED);
  });
});
