/** HTTP failures of a source, as the domain's typed errors (shared by the hub and HTTP sources). */
import {
  NotFoundError,
  PermissionDeniedError,
  UnauthenticatedError,
  UnavailableError,
  type LoraMeshError,
} from "@loramesh/errors";

/** The typed error for a response that is not 2xx. */
export function httpStatusError(what: string, status: number): LoraMeshError {
  if (status === 404) return new NotFoundError(`${what} was not found (HTTP 404)`);
  // 401: no or an unknown token (a gated hub repository without HF_TOKEN); 403: a known token without access.
  if (status === 401) return new UnauthenticatedError(`${what}: the source wants credentials (HTTP 401)`);
  if (status === 403) return new PermissionDeniedError(`${what}: the source refused the credentials (HTTP ${status})`);
  return new UnavailableError(`${what}: the source answered HTTP ${status}`);
}

/** The typed error for a request that got no response at all (refused, reset, DNS). */
export function unreachableError(what: string, err: unknown): LoraMeshError {
  const cause = (err as { cause?: { code?: string; message?: string } }).cause;
  const reason = cause?.code ?? cause?.message ?? (err as Error).message;
  return new UnavailableError(`${what}: the source is unreachable (${reason})`, { cause: err });
}

/** fetch() with the failure modes above mapped; the body is left to the caller. */
export async function fetchOk(
  url: string,
  what: string,
  headers: Record<string, string>,
  signal?: AbortSignal,
): Promise<Response> {
  let res: Response;
  try {
    res = await fetch(url, { headers, redirect: "follow", ...(signal ? { signal } : {}) });
  } catch (err) {
    if (signal?.aborted) throw err;
    throw unreachableError(what, err);
  }
  if (!res.ok) {
    await res.body?.cancel().catch(() => undefined);
    throw httpStatusError(what, res.status);
  }
  return res;
}

/** A Response body as chunks, with its Content-Length when the server sent one. */
export function responseBody(res: Response): { chunks: AsyncIterable<Uint8Array>; size?: number } {
  const length = res.headers.get("content-length");
  const size = length !== null && /^\d+$/.test(length) ? Number(length) : undefined;
  const body = res.body;
  const chunks: AsyncIterable<Uint8Array> = body ?? (async function* () {})();
  return size !== undefined ? { chunks, size } : { chunks };
}
