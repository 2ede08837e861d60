/** gRPC InferenceService: maps Generate/Complete to the router domain and its results back to proto. */
import type { ServerUnaryCall, ServerWritableStream } from "@grpc/grpc-js";
import { serverStreamHandler, unaryHandler, type Logger } from "@loramesh/core";
import type { GenerateResponse, InferenceServiceServer } from "@loramesh/proto";
import { randomUUID } from "node:crypto";
import type { Router } from "../domain/router";
import type { GenerationControl } from "../domain/types";
import { finishToProto, generationFromProto, timingsToProto } from "../proto-mapping";
import type { Tenants } from "../tenants";

/** Cancellation and deadline of a gRPC call, as the domain takes them. */
function controlOf(
  call: ServerUnaryCall<unknown, unknown> | ServerWritableStream<unknown, unknown>,
): GenerationControl {
  const aborter = new AbortController();
  call.on("cancelled", () => aborter.abort());
  return { signal: aborter.signal, deadline: call.getDeadline() };
}

export function inferenceHandlers(router: Router, tenants: Tenants, logger: Logger): InferenceServiceServer {
  return {
    generate: serverStreamHandler(logger, async (request, call) => {
      const tenant = tenants.resolve(call.metadata);
      const requestId = request.requestId || randomUUID();
      const result = await router.generate(tenant, generationFromProto(request, requestId), {
        ...controlOf(call),
        onDelta: (delta) =>
          call.write({
            requestId,
            tokenIds: delta.tokenIds,
            text: delta.text,
            finishReason: 0,
            logprobs: delta.logprobs ?? [],
          } satisfies Partial<GenerateResponse>),
      });
      call.write({
        requestId,
        tokenIds: [],
        text: "",
        logprobs: [],
        finishReason: finishToProto(result.finishReason),
        usage: result.usage,
        timings: timingsToProto(result.timings),
      });
    }),
    complete: unaryHandler(logger, async (request, call) => {
      const tenant = tenants.resolve(call.metadata);
      const requestId = request.requestId || randomUUID();
      const ids: number[] = [];
      let text = "";
      const result = await router.generate(tenant, generationFromProto(request, requestId), {
        ...controlOf(call),
        onDelta: (delta) => {
          ids.push(...delta.tokenIds);
          text += delta.text;
        },
      });
      return {
        requestId,
        tokenIds: ids,
        text,
        finishReason: finishToProto(result.finishReason),
        usage: result.usage,
        timings: timingsToProto(result.timings),
      };
    }),
  };
}
