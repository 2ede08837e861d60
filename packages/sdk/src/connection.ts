import { credentials, Metadata, type CallOptions, type ChannelCredentials } from "@grpc/grpc-js";

/** How to reach a loramesh endpoint. */
export interface ConnectionOptions {
  /** `host:port` of the router (or of any loramesh service for health checks). */
  address: string;
  /**
   * TLS: `true` for the system roots, an object for explicit roots or a client certificate;
   * absent or false for plaintext (local clusters).
   */
  tls?: boolean | { rootCerts?: Buffer; privateKey?: Buffer; certChain?: Buffer };
  /** API key sent as `authorization: Bearer <key>`; identifies the tenant. */
  apiKey?: string;
  /** Deadline for calls that do not pass their own, in milliseconds; default 60 s. */
  defaultDeadlineMs?: number;
  /**
   * Other routers of the same mesh. A `generate` stream that fails with UNAVAILABLE (its router
   * died or cannot be reached) is resumed on the next one, once per address: the request is sent
   * again with `resume_token_ids` = the tokens already received, so the stream goes on where it
   * broke (greedy output exactly) under the call's original deadline.
   */
  resumeAddresses?: string[];
}

/** Per-call options. */
export interface CallSettings {
  /** Deadline for this call in milliseconds from now. */
  deadlineMs?: number;
  /** Cancels the call when aborted. */
  signal?: AbortSignal;
}

/** Channel options matching the servers' raised message limits. */
export const CLIENT_CHANNEL_OPTIONS = {
  "grpc.max_receive_message_length": 64 * 1024 * 1024,
  "grpc.max_send_message_length": 64 * 1024 * 1024,
} as const;

export function channelCredentials(options: ConnectionOptions): ChannelCredentials {
  if (!options.tls) return credentials.createInsecure();
  if (options.tls === true) return credentials.createSsl();
  return credentials.createSsl(
    options.tls.rootCerts ?? null,
    options.tls.privateKey ?? null,
    options.tls.certChain ?? null,
  );
}

export function callMetadata(options: ConnectionOptions): Metadata {
  const metadata = new Metadata();
  if (options.apiKey !== undefined) metadata.set("authorization", `Bearer ${options.apiKey}`);
  return metadata;
}

export function callOptions(options: ConnectionOptions, settings: CallSettings | undefined): CallOptions {
  const ms = settings?.deadlineMs ?? options.defaultDeadlineMs ?? 60_000;
  return { deadline: new Date(Date.now() + ms) };
}
