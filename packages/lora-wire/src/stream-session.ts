/**
 * The LoRA server's end of one Execute stream: reads `open`, decodes each work item, hands it to the server's site executor, and answers
 * in request order while items compute concurrently. A failed item is an error reply; the stream
 * stays open.
 */
import type { ServerDuplexStream } from "@grpc/grpc-js";
import { type Logger } from "@loramesh/core";
import type { LoraSite } from "@loramesh/formats";
import type { LoraResult, LoraStreamRequest } from "@loramesh/proto";
import { decodeOpen, decodeWork, encodeErrorReply, encodeReply, type ReceivedWork } from "./messages";

export interface SiteExecutor {
  /** Input width of a site (work items are validated against it). */
  hInOf(site: LoraSite): number;
  /** Computes one item's delta [rows, nOut]. */
  execute(work: ReceivedWork, streamId: number): Promise<{ delta: Float32Array; nOut: number }>;
}

export interface LoraStreamSessionOptions {
  streamId: number;
  executor: SiteExecutor;
  logger: Logger;
}

/** Serves one stream until the worker ends it. */
export async function serveLoraStream(
  call: ServerDuplexStream<LoraStreamRequest, LoraResult>,
  options: LoraStreamSessionOptions,
): Promise<void> {
  let order: Promise<void> = Promise.resolve();
  const respond = (result: LoraResult): void => {
    if (!call.writableEnded && !call.cancelled) call.write(result);
  };
  for await (const message of call as AsyncIterable<LoraStreamRequest>) {
    const kind = message.kind;
    if (kind?.$case === "open") {
      const open = decodeOpen(kind.value);
      options.logger.info("worker stream opened", { workerId: open.workerId });
      continue;
    }
    if (kind?.$case !== "work") continue;
    const raw = kind.value;
    const reply = (async (): Promise<LoraResult> => {
      try {
        const work = decodeWork(raw, (site) => options.executor.hInOf(site));
        const { delta, nOut } = await options.executor.execute(work, options.streamId);
        return encodeReply(work, delta, nOut);
      } catch (err) {
        return encodeErrorReply(raw, err);
      }
    })();
    // Compute concurrently, answer in request order.
    order = order.then(async () => respond(await reply));
  }
  await order;
}
