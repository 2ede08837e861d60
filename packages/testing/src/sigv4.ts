/**
 * Verification of AWS Signature Version 4 header authentication, as an S3 server does it, written
 * from the AWS spec ("Create a signed AWS API request"): rebuild the canonical request from what
 * arrived, derive the signing key from the secret the server holds for the access key id, and
 * compare signatures. Only header auth (`Authorization: AWS4-HMAC-SHA256 ...`), which the SDK sends;
 * presigned query URLs are not served by the test server.
 */
import { createHash, createHmac, timingSafeEqual } from "node:crypto";
import type { IncomingHttpHeaders } from "node:http";

export type SigV4Failure =
  | { code: "AccessDenied"; message: string }
  | { code: "InvalidAccessKeyId"; message: string }
  | { code: "SignatureDoesNotMatch"; message: string }
  | { code: "RequestTimeTooSkewed"; message: string };

export interface SignedRequest {
  method: string;
  /** The request target as sent: path and query, still percent-encoded. */
  url: string;
  headers: IncomingHttpHeaders;
}

/** How far a request's x-amz-date may be from the server's clock (S3 allows 15 minutes). */
const MAX_SKEW_MS = 15 * 60_000;

const AUTH =
  /^AWS4-HMAC-SHA256 Credential=([^/,]+)\/(\d{8})\/([^/,]+)\/([^/,]+)\/aws4_request, ?SignedHeaders=([a-z0-9;-]+), ?Signature=([0-9a-f]{64})$/;

const sha256Hex = (data: string): string => createHash("sha256").update(data, "utf8").digest("hex");
const hmac = (key: Buffer | string, data: string): Buffer => createHmac("sha256", key).update(data, "utf8").digest();

/** RFC 3986 encoding as SigV4 wants it: everything but A-Z a-z 0-9 - _ . ~ is %XX (upper case). */
const uriEncode = (s: string): string =>
  encodeURIComponent(s).replace(/[!'()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`);

/** The query string sorted by encoded name, then value, each pair re-encoded the canonical way. */
function canonicalQuery(rawQuery: string): string {
  if (!rawQuery) return "";
  const pairs = rawQuery.split("&").map((part) => {
    const eq = part.indexOf("=");
    const decode = (s: string): string => decodeURIComponent(s.replace(/\+/g, "%20"));
    const name = eq < 0 ? part : part.slice(0, eq);
    const value = eq < 0 ? "" : part.slice(eq + 1);
    return [uriEncode(decode(name)), uriEncode(decode(value))] as const;
  });
  pairs.sort(([a, x], [b, y]) => (a < b ? -1 : a > b ? 1 : x < y ? -1 : x > y ? 1 : 0));
  return pairs.map(([n, v]) => `${n}=${v}`).join("&");
}

const headerValue = (headers: IncomingHttpHeaders, name: string): string => {
  const v = headers[name];
  return (Array.isArray(v) ? v.join(",") : (v ?? "")).trim().replace(/\s+/g, " ");
};

/**
 * Checks a request's signature against `secrets` (access key id → secret access key). Returns
 * undefined when it is valid, else the error S3 would answer with (all are HTTP 403).
 */
export function verifySigV4(
  req: SignedRequest,
  secrets: ReadonlyMap<string, string>,
  now: Date = new Date(),
): SigV4Failure | undefined {
  const m = AUTH.exec(headerValue(req.headers, "authorization"));
  if (!m) return { code: "AccessDenied", message: "a Signature V4 Authorization header is required" };
  const [, accessKeyId = "", day = "", region = "", service = "", signedHeaders = "", signature = ""] = m;
  const secret = secrets.get(accessKeyId);
  if (secret === undefined)
    return { code: "InvalidAccessKeyId", message: "The AWS Access Key Id you provided does not exist in our records." };
  const amzDate = headerValue(req.headers, "x-amz-date");
  const when = /^(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})Z$/.exec(amzDate);
  if (!when || !amzDate.startsWith(day))
    return { code: "AccessDenied", message: "x-amz-date is missing or disagrees with the credential scope" };
  const [y = 0, mo = 0, d, h, mi, s] = when.slice(1).map(Number);
  const at = Date.UTC(y, mo - 1, d, h, mi, s);
  if (Math.abs(at - now.getTime()) > MAX_SKEW_MS)
    return {
      code: "RequestTimeTooSkewed",
      message: "The difference between the request time and the server's time is too large.",
    };
  const names = signedHeaders.split(";");
  if (!names.includes("host")) return { code: "AccessDenied", message: "the host header must be signed" };
  const q = req.url.indexOf("?");
  const path = q < 0 ? req.url : req.url.slice(0, q);
  const canonicalRequest = [
    req.method,
    // S3 signs the path as sent (encoded once, not normalised).
    path || "/",
    canonicalQuery(q < 0 ? "" : req.url.slice(q + 1)),
    names.map((n) => `${n}:${headerValue(req.headers, n)}\n`).join(""),
    signedHeaders,
    headerValue(req.headers, "x-amz-content-sha256") || "UNSIGNED-PAYLOAD",
  ].join("\n");
  const scope = `${day}/${region}/${service}/aws4_request`;
  const stringToSign = ["AWS4-HMAC-SHA256", amzDate, scope, sha256Hex(canonicalRequest)].join("\n");
  const key = hmac(hmac(hmac(hmac(`AWS4${secret}`, day), region), service), "aws4_request");
  const expected = hmac(key, stringToSign);
  if (!timingSafeEqual(expected, Buffer.from(signature, "hex")))
    return {
      code: "SignatureDoesNotMatch",
      message:
        "The request signature we calculated does not match the signature you provided. Check your key and signing method.",
    };
  return undefined;
}
