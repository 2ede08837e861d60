/**
 * An S3 prefix through the AWS SDK v3: ListObjectsV2 for the files directly under the prefix,
 * GetObject for each. Region, credentials and endpoint come from the standard AWS variables
 * (AWS_REGION or AWS_DEFAULT_REGION, AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or the SDK's other
 * providers, AWS_ENDPOINT_URL_S3 or AWS_ENDPOINT_URL); with an endpoint, addressing is path-style
 * (MinIO, Ceph and other S3-compatible stores).
 */
import type { S3Client } from "@aws-sdk/client-s3";
import { NotFoundError, PermissionDeniedError, UnavailableError, type LoraMeshError } from "@loramesh/errors";
import type { RemoteBody, RemoteFile, RemoteSource } from "./remote-source";

const NOT_FOUND = new Set(["NoSuchBucket", "NoSuchKey", "NotFound"]);
const DENIED = new Set([
  "InvalidAccessKeyId",
  "SignatureDoesNotMatch",
  "AccessDenied",
  "CredentialsProviderError",
  "ExpiredToken",
  "InvalidToken",
]);

type S3Sdk = typeof import("@aws-sdk/client-s3");

/** The SDK, loaded on first use: it is large, and most processes never read from S3. */
let sdk: Promise<S3Sdk> | undefined;
const loadSdk = (): Promise<S3Sdk> => (sdk ??= import("@aws-sdk/client-s3"));

export class S3Source implements RemoteSource {
  readonly description: string;
  private client: S3Client | undefined;

  constructor(
    private readonly bucket: string,
    private readonly prefix: string,
    private readonly env: NodeJS.ProcessEnv = process.env,
  ) {
    this.description = `s3://${bucket}/${prefix}`;
  }

  private async connect(): Promise<{ client: S3Client; s3: S3Sdk }> {
    const s3 = await loadSdk();
    if (this.client) return { client: this.client, s3 };
    const { env } = this;
    const endpoint = env["AWS_ENDPOINT_URL_S3"] || env["AWS_ENDPOINT_URL"];
    const accessKeyId = env["AWS_ACCESS_KEY_ID"];
    const secretAccessKey = env["AWS_SECRET_ACCESS_KEY"];
    const sessionToken = env["AWS_SESSION_TOKEN"];
    this.client = new s3.S3Client({
      region: env["AWS_REGION"] || env["AWS_DEFAULT_REGION"] || "us-east-1",
      // One retry: an unreachable store should fail the registration in seconds, not minutes.
      maxAttempts: 2,
      ...(endpoint ? { endpoint, forcePathStyle: true } : {}),
      // Keys in the environment given; otherwise the SDK's own chain (profiles, SSO, IMDS, ...).
      ...(accessKeyId && secretAccessKey
        ? { credentials: { accessKeyId, secretAccessKey, ...(sessionToken ? { sessionToken } : {}) } }
        : {}),
    });
    return { client: this.client, s3 };
  }

  async list(signal?: AbortSignal): Promise<RemoteFile[]> {
    const { client, s3 } = await this.connect();
    const dir = this.prefix ? `${this.prefix}/` : "";
    const files: RemoteFile[] = [];
    let token: string | undefined;
    do {
      const page = await this.call(this.description, () =>
        client.send(
          new s3.ListObjectsV2Command({
            Bucket: this.bucket,
            Prefix: dir,
            Delimiter: "/",
            ...(token ? { ContinuationToken: token } : {}),
          }),
          signal ? { abortSignal: signal } : {},
        ),
      );
      for (const o of page.Contents ?? []) {
        if (!o.Key?.startsWith(dir)) continue;
        const name = o.Key.slice(dir.length);
        files.push(o.Size !== undefined ? { name, size: o.Size } : { name });
      }
      token = page.IsTruncated ? page.NextContinuationToken : undefined;
    } while (token);
    return files;
  }

  async open(file: RemoteFile, signal?: AbortSignal): Promise<RemoteBody> {
    const key = this.prefix ? `${this.prefix}/${file.name}` : file.name;
    const what = `s3://${this.bucket}/${key}`;
    const { client, s3 } = await this.connect();
    const res = await this.call(what, () =>
      client.send(new s3.GetObjectCommand({ Bucket: this.bucket, Key: key }), signal ? { abortSignal: signal } : {}),
    );
    const chunks = (res.Body ?? (async function* () {})()) as AsyncIterable<Uint8Array>;
    return res.ContentLength !== undefined ? { chunks, size: res.ContentLength } : { chunks };
  }

  close(): void {
    this.client?.destroy();
  }

  private async call<T>(what: string, send: () => Promise<T>): Promise<T> {
    try {
      return await send();
    } catch (err) {
      throw s3Error(what, err);
    }
  }
}

/** An SDK failure as a domain error: missing object or bucket, refused credentials, or no answer. */
function s3Error(what: string, err: unknown): LoraMeshError {
  const e = err as { name?: string; message?: string; $metadata?: { httpStatusCode?: number } };
  const name = e.name ?? "";
  const status = e.$metadata?.httpStatusCode;
  if (NOT_FOUND.has(name) || status === 404) return new NotFoundError(`${what} was not found (${name || "404"})`);
  if (DENIED.has(name) || status === 401 || status === 403)
    return new PermissionDeniedError(`${what}: the store refused the credentials (${name || status})`, { cause: err });
  if (status !== undefined) return new UnavailableError(`${what}: the store answered HTTP ${status} (${name})`);
  return new UnavailableError(`${what}: the store is unreachable (${e.message ?? name})`, { cause: err });
}
