/**
 * A Redis connection failure inside a handler is the provisioner being unavailable for the moment
 * (Redis restarting or unreachable), not an internal error: callers get UNAVAILABLE and retry.
 */
import type { Middleware } from "@loramesh/core";
import { UnavailableError } from "@loramesh/errors";

/** ioredis's errors for a lost or refused connection. */
function isRedisOutage(err: unknown): boolean {
  if (!(err instanceof Error)) return false;
  const code = (err as NodeJS.ErrnoException).code;
  return (
    err.name === "MaxRetriesPerRequestError" ||
    err.message === "Connection is closed." ||
    err.message.startsWith("Stream isn't writeable") ||
    code === "ECONNREFUSED" ||
    code === "ENOENT" ||
    code === "ECONNRESET"
  );
}

export const redisOutageMiddleware: Middleware = async (_ctx, next) => {
  try {
    await next();
  } catch (err) {
    if (isRedisOutage(err)) throw new UnavailableError("Redis is unreachable; retry shortly", { cause: err });
    throw err;
  }
};
