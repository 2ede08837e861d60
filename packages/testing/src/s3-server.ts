/**
 * A small S3-API server on 127.0.0.1 for tests: ListObjectsV2 (prefix, delimiter) and GetObject,
 * path-style, the subset `@aws-sdk/client-s3` uses to read a prefix. Every request must carry a
 * valid AWS Signature V4 `Authorization` header (`sigv4.ts` recomputes it): an unknown access key
 * id is 403 InvalidAccessKeyId, a wrong secret 403 SignatureDoesNotMatch, as S3 answers.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { verifySigV4 } from "./sigv4";
import { SimulatedLink, type LinkOptions } from "./simulated-link";

export interface TestS3Server {
  /** The endpoint for AWS_ENDPOINT_URL. */
  endpoint: string;
  /** The key pair the server was started with (also in `credentials`). */
  accessKeyId: string;
  secretAccessKey: string;
  /** The keys the server accepts, access key id → secret; tests rotate or revoke them. */
  credentials: Map<string, string>;
  /** Buckets by name, then key → bytes. */
  buckets: Map<string, Map<string, Buffer>>;
  /** GetObject requests served, by "bucket/key". */
  gets: Map<string, number>;
  close(): Promise<void>;
}

const xmlEscape = (s: string): string =>
  s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(/"/g, "&quot;");

function s3Error(res: ServerResponse, status: number, code: string, message: string): void {
  const body = `<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>${code}</Code><Message>${xmlEscape(message)}</Message></Error>`;
  res.writeHead(status, { "content-type": "application/xml", "content-length": Buffer.byteLength(body) });
  res.end(body);
}

function listObjects(res: ServerResponse, bucket: string, objects: Map<string, Buffer>, query: URLSearchParams): void {
  const prefix = query.get("prefix") ?? "";
  const delimiter = query.get("delimiter") ?? "";
  const contents: string[] = [];
  const common = new Set<string>();
  for (const key of [...objects.keys()].sort()) {
    if (!key.startsWith(prefix)) continue;
    const rest = key.slice(prefix.length);
    const cut = delimiter ? rest.indexOf(delimiter) : -1;
    if (cut >= 0) {
      common.add(prefix + rest.slice(0, cut + delimiter.length));
      continue;
    }
    const size = objects.get(key)?.length ?? 0;
    contents.push(
      `<Contents><Key>${xmlEscape(key)}</Key><LastModified>2026-01-01T00:00:00.000Z</LastModified><ETag>"0"</ETag><Size>${size}</Size><StorageClass>STANDARD</StorageClass></Contents>`,
    );
  }
  const prefixes = [...common].map((p) => `<CommonPrefixes><Prefix>${xmlEscape(p)}</Prefix></CommonPrefixes>`);
  const body = `<?xml version="1.0" encoding="UTF-8"?>
<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Name>${xmlEscape(bucket)}</Name><Prefix>${xmlEscape(prefix)}</Prefix><KeyCount>${contents.length + prefixes.length}</KeyCount><MaxKeys>1000</MaxKeys><Delimiter>${xmlEscape(delimiter)}</Delimiter><IsTruncated>false</IsTruncated>${contents.join("")}${prefixes.join("")}</ListBucketResult>`;
  res.writeHead(200, { "content-type": "application/xml", "content-length": Buffer.byteLength(body) });
  res.end(body);
}

export async function startTestS3Server(
  accessKeyId = "AKIATESTLORAMESH",
  secretAccessKey = "test-secret-key",
  /** A simulated WAN link between this server and its clients (default: loopback as it is). */
  linkOptions: LinkOptions = {},
): Promise<TestS3Server> {
  const link = new SimulatedLink(linkOptions);
  const buckets = new Map<string, Map<string, Buffer>>();
  const gets = new Map<string, number>();
  const credentials = new Map([[accessKeyId, secretAccessKey]]);
  const handle = (req: IncomingMessage, res: ServerResponse): void => {
    const refused = verifySigV4(
      { method: req.method ?? "GET", url: req.url ?? "/", headers: req.headers },
      credentials,
    );
    if (refused) return s3Error(res, 403, refused.code, refused.message);
    const url = new URL(req.url ?? "/", "http://x");
    const [, bucket = "", ...rest] = url.pathname.split("/");
    const objects = buckets.get(bucket);
    if (!objects) return s3Error(res, 404, "NoSuchBucket", "The specified bucket does not exist");
    if (req.method !== "GET") return s3Error(res, 405, "MethodNotAllowed", "only GET is served");
    if (rest.length === 0 || (rest.length === 1 && rest[0] === ""))
      return listObjects(res, bucket, objects, url.searchParams);
    const objectKey = decodeURIComponent(rest.join("/"));
    const bytes = objects.get(objectKey);
    if (!bytes) return s3Error(res, 404, "NoSuchKey", "The specified key does not exist.");
    gets.set(`${bucket}/${objectKey}`, (gets.get(`${bucket}/${objectKey}`) ?? 0) + 1);
    res.writeHead(200, { "content-type": "application/octet-stream", "content-length": bytes.length, etag: '"0"' });
    if (!link.limited) return void res.end(bytes);
    void link.write(res, bytes).then(() => res.end());
  };
  const server: Server = createServer((req, res) => {
    if (!link.limited) return handle(req, res);
    void link.delay().then(() => handle(req, res));
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  return {
    endpoint: `http://127.0.0.1:${port}`,
    accessKeyId,
    secretAccessKey,
    credentials,
    buckets,
    gets,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
