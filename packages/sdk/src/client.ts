import { status, type ClientReadableStream } from "@grpc/grpc-js";
import {
  AdapterServiceClient,
  InferenceServiceClient,
  type Adapter,
  type CompleteResponse,
  type GenerateRequest,
  type GenerateResponse,
  type ListAdaptersResponse,
  type LoadJobStatus,
  type RegisterAdapterResponse,
} from "@loramesh/proto";
import {
  callMetadata,
  callOptions,
  channelCredentials,
  CLIENT_CHANNEL_OPTIONS,
  type CallSettings,
  type ConnectionOptions,
} from "./connection";
import { LoraMeshClientError, toClientError } from "./errors";

/** A generate request in SDK form: every field optional except the prompt. */
export type GenerateInput = Partial<GenerateRequest> & Pick<GenerateRequest, "prompt">;

/**
 * Typed client of the router's public API. Failed calls reject with `LoraMeshClientError`.
 *
 * ```ts
 * const client = new LoraMeshClient({ address: "127.0.0.1:50051" });
 * for await (const delta of client.generate({ prompt: { $case: "text", value: "Hi" } })) process.stdout.write(delta.text);
 * ```
 */
export class LoraMeshClient {
  private readonly inference: InferenceServiceClient;
  private readonly adapters: AdapterServiceClient;
  /** Clients of `resumeAddresses`, made on first use. */
  private readonly resumers = new Map<string, InferenceServiceClient>();

  constructor(private readonly options: ConnectionOptions) {
    const creds = channelCredentials(options);
    this.inference = new InferenceServiceClient(options.address, creds, CLIENT_CHANNEL_OPTIONS);
    this.adapters = new AdapterServiceClient(options.address, creds, CLIENT_CHANNEL_OPTIONS);
  }

  /**
   * Streams token deltas; breaking out of the loop or aborting `signal` cancels the request. With
   * `resumeAddresses`, a stream that fails UNAVAILABLE goes on through the next router.
   */
  async *generate(input: GenerateInput, settings?: CallSettings): AsyncGenerator<GenerateResponse, void, undefined> {
    const received = [...(input.resumeTokenIds ?? [])];
    const routers = [this.inference, ...(this.options.resumeAddresses ?? []).map((a) => this.resumer(a))];
    const options = callOptions(this.options, settings); // one deadline for every router tried
    for (let i = 0; ; i++) {
      const call = (routers[i] as InferenceServiceClient).generate(
        toRequest({ ...input, resumeTokenIds: received }),
        callMetadata(this.options),
        options,
      );
      try {
        for await (const delta of readStream(call, settings?.signal)) {
          received.push(...delta.tokenIds);
          yield delta;
        }
        return;
      } catch (err) {
        const lost = err instanceof LoraMeshClientError && err.code === status.UNAVAILABLE;
        if (!lost || i + 1 >= routers.length || settings?.signal?.aborted) throw err;
      }
    }
  }

  /** The whole generation in one response. */
  complete(input: GenerateInput, settings?: CallSettings): Promise<CompleteResponse> {
    return this.unary((m, o, cb) => this.inference.complete(toRequest(input), m, o, cb), settings);
  }

  /**
   * Registers an adapter from `source`: an absolute directory on the provisioner's host, or a
   * remote source (hf://ORG/NAME[@REVISION][/SUBDIR], s3://BUCKET/PREFIX, http(s)://DIRECTORY/).
   */
  registerAdapter(name: string, source: string, settings?: CallSettings): Promise<RegisterAdapterResponse> {
    const remote = /^[a-z][a-z0-9+.-]*:\/\//i.test(source);
    return this.unary(
      (m, o, cb) =>
        this.adapters.registerAdapter(
          { name, source: { source: remote ? { $case: "uri", value: source } : { $case: "localDir", value: source } } },
          m,
          o,
          cb,
        ),
      settings,
    );
  }

  listAdapters(pageSize = 0, pageToken = "", settings?: CallSettings): Promise<ListAdaptersResponse> {
    return this.unary((m, o, cb) => this.adapters.listAdapters({ pageSize, pageToken }, m, o, cb), settings);
  }

  getAdapter(name: string, settings?: CallSettings): Promise<Adapter> {
    return this.unary((m, o, cb) => this.adapters.getAdapter({ name }, m, o, cb), settings);
  }

  async deleteAdapter(name: string, settings?: CallSettings): Promise<void> {
    await this.unary((m, o, cb) => this.adapters.deleteAdapter({ name }, m, o, cb), settings);
  }

  /** Streams load-job status for an adapter until its jobs end. */
  async *watchAdapterLoad(name: string, settings?: CallSettings): AsyncGenerator<LoadJobStatus, void, undefined> {
    const call = this.adapters.watchAdapterLoad(
      { name },
      callMetadata(this.options),
      callOptions(this.options, settings),
    );
    yield* readStream(call, settings?.signal);
  }

  close(): void {
    this.inference.close();
    this.adapters.close();
    for (const c of this.resumers.values()) c.close();
  }

  private resumer(address: string): InferenceServiceClient {
    let client = this.resumers.get(address);
    if (!client) {
      client = new InferenceServiceClient(address, channelCredentials(this.options), CLIENT_CHANNEL_OPTIONS);
      this.resumers.set(address, client);
    }
    return client;
  }

  private unary<T>(
    start: (
      metadata: ReturnType<typeof callMetadata>,
      options: ReturnType<typeof callOptions>,
      callback: (err: Error | null, value?: T) => void,
    ) => { cancel(): void },
    settings: CallSettings | undefined,
  ): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      const call = start(callMetadata(this.options), callOptions(this.options, settings), (err, value) => {
        settings?.signal?.removeEventListener("abort", onAbort);
        if (err) reject(toClientError(err));
        else resolve(value as T);
      });
      const onAbort = (): void => call.cancel();
      settings?.signal?.addEventListener("abort", onAbort, { once: true });
    });
  }
}

function toRequest(input: GenerateInput): GenerateRequest {
  return {
    prompt: input.prompt,
    adapter: input.adapter ?? "",
    sampling: input.sampling,
    sloClass: input.sloClass ?? 0,
    requestId: input.requestId ?? "",
    applyChatTemplate: input.applyChatTemplate ?? false,
    resumeTokenIds: input.resumeTokenIds ?? [],
  };
}

async function* readStream<T>(
  call: ClientReadableStream<T>,
  signal: AbortSignal | undefined,
): AsyncGenerator<T, void, undefined> {
  const onAbort = (): void => call.cancel();
  signal?.addEventListener("abort", onAbort, { once: true });
  try {
    for await (const message of call) yield message as T;
  } catch (err) {
    throw toClientError(err);
  } finally {
    signal?.removeEventListener("abort", onAbort);
    // Leaving the loop early (break, throw in the body) must stop the server-side work too.
    call.cancel();
  }
}
