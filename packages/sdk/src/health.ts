import { Metadata } from "@grpc/grpc-js";
import { health } from "@loramesh/proto";
import { channelCredentials, CLIENT_CHANNEL_OPTIONS, type ConnectionOptions } from "./connection";
import { toClientError } from "./errors";

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

/** Polls until the process reports SERVING or the timeout passes (then throws the last error). */
export async function waitForServing(options: ConnectionOptions, timeoutMs: number, service = ""): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  while (Date.now() < deadline) {
    try {
      if ((await checkHealth(options, service, 1_000)) === "SERVING") return;
      last = new Error(`${options.address} is not serving yet`);
    } catch (err) {
      last = err;
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw last instanceof Error ? last : new Error(`${options.address} did not become healthy`);
}
