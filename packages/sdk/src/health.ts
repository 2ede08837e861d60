import { Metadata, status } from "@grpc/grpc-js";
import { health } from "@loramesh/proto";
import { channelCredentials, CLIENT_CHANNEL_OPTIONS, type ConnectionOptions } from "./connection";
import { LoraMeshClientError, toClientError } from "./errors";

export type ServingStatus = "SERVING" | "NOT_SERVING" | "UNKNOWN" | "SERVICE_UNKNOWN";

/** Asks a loramesh process for its gRPC health (`service` empty: the whole server). */
export async function checkHealth(
  options: ConnectionOptions,
  service = "",
  deadlineMs = 2_000,
): Promise<ServingStatus> {
  const client = new health.HealthClient(options.address, channelCredentials(options), CLIENT_CHANNEL_OPTIONS);
  try {
    const response = await new Promise<health.HealthCheckResponse>((resolve, reject) => {
      client.check({ service }, new Metadata(), { deadline: new Date(Date.now() + deadlineMs) }, (err, res) =>
        err ? reject(toClientError(err)) : resolve(res),
      );
    });
    return health.healthCheckResponse_ServingStatusToJSON(response.status) as ServingStatus;
  } finally {
    client.close();
  }
}

/**
 * Waits until the process reports SERVING or the timeout passes (then throws the last error). It
 * watches the health service (one stream, no polling); the call waits for the process to come up
 * (grpc-js waitForReady), and a dropped connection is watched again.
 */
export async function waitForServing(options: ConnectionOptions, timeoutMs: number, service = ""): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  const client = new health.HealthClient(options.address, channelCredentials(options), CLIENT_CHANNEL_OPTIONS);
  let last: unknown = new Error(`${options.address} did not become healthy`);
  try {
    while (Date.now() < deadline) {
      const outcome = await watchUntilServing(client, service, deadline);
      if (outcome === "serving") return;
      last = outcome;
      if ((outcome as { code?: unknown }).code !== status.UNAVAILABLE) break;
    }
  } finally {
    client.close();
  }
  if (last instanceof LoraMeshClientError && last.code === status.DEADLINE_EXCEEDED)
    last = new Error(`${options.address} is not serving after ${timeoutMs} ms`, { cause: last });
  throw last instanceof Error ? last : new Error(`${options.address} did not become healthy`);
}

/** One Watch stream: "serving" on the first SERVING, else the error that ended it. */
function watchUntilServing(client: health.HealthClient, service: string, deadline: number): Promise<"serving" | Error> {
  return new Promise((resolve) => {
    const stream = client.watch({ service }, new Metadata({ waitForReady: true }), { deadline: new Date(deadline) });
    stream.on("data", (res: health.HealthCheckResponse) => {
      if (res.status !== health.HealthCheckResponse_ServingStatus.SERVING) return;
      stream.cancel();
      resolve("serving");
    });
    stream.on("error", (err) => resolve(toClientError(err)));
    stream.on("end", () => resolve(new Error(`${client.getChannel().getTarget()} closed the health watch`)));
  });
}
