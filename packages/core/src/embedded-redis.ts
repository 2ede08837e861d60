/**
 * A private Redis for local clusters and tests: the system's `redis-server` (Debian package
 * `redis-server`) on a unix socket in a fresh directory, stopped with its owner. It keeps an
 * append-only file (fsync every second) in that directory, so a restart (`restart()`, or `loramesh
 * up` after a crash) comes back with the registrations, placement and BullMQ jobs it had.
 * No npm package ships a Redis server and BullMQ needs the real one (its Lua scripts), so this
 * starts the real binary.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { connect } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { FailedPreconditionError, UnavailableError } from "@loramesh/errors";
import type { Logger } from "./logging";

export interface EmbeddedRedis {
  /** `unix:<socket path>`, accepted by `redisConnectionOptions` and the services' REDIS_URL. */
  readonly url: string;
  readonly socketPath: string;
  /** The running server's pid (changes on restart). */
  readonly pid: number;
  /** True while the server process runs. */
  readonly running: boolean;
  /** Resolves when the current server process exits on its own (not through stop or restart). */
  exited(): Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** Starts the server again on the same socket and directory (after a crash, or killing it first). */
  restart(): Promise<void>;
  /** Stops the server and removes its directory. */
  stop(): Promise<void>;
}

export interface EmbeddedRedisOptions {
  /** Path of the redis-server binary; defaults to REDIS_SERVER_BIN or `redis-server` on PATH. */
  binary?: string;
  logger?: Logger;
  /** How long to wait for the server to answer PING. */
  startTimeoutMs?: number;
}

/** Starts redis-server on a private unix socket and waits until it answers PING. */
export async function startEmbeddedRedis(options: EmbeddedRedisOptions = {}): Promise<EmbeddedRedis> {
  const binary = options.binary ?? process.env["REDIS_SERVER_BIN"] ?? "redis-server";
  const dir = mkdtempSync(join(tmpdir(), "loramesh-redis-"));
  const socketPath = join(dir, "redis.sock");
  let child: ChildProcess;
  try {
    child = await spawnRedis(binary, dir, socketPath, options.startTimeoutMs ?? 10_000);
  } catch (err) {
    rmSync(dir, { recursive: true, force: true });
    throw err;
  }
  options.logger?.info("embedded redis started", { socketPath, pid: child.pid });
  let expected = false; // set while we stop or restart it ourselves
  return {
    url: `unix:${socketPath}`,
    socketPath,
    get pid() {
      return child.pid as number;
    },
    get running() {
      return child.exitCode === null && child.signalCode === null;
    },
    exited: () =>
      new Promise((resolve) => {
        const current = child;
        const report = (code: number | null, signal: NodeJS.Signals | null): void => {
          if (!expected && current === child) resolve({ code, signal });
        };
        if (current.exitCode !== null || current.signalCode !== null) report(current.exitCode, current.signalCode);
        else current.once("exit", report);
      }),
    restart: async () => {
      expected = true;
      await stopChild(child);
      child = await spawnRedis(binary, dir, socketPath, options.startTimeoutMs ?? 10_000);
      expected = false;
      options.logger?.info("embedded redis restarted", { socketPath, pid: child.pid });
    },
    stop: async () => {
      expected = true;
      await stopChild(child);
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** One redis-server process with the append-only file in `dir`; resolves once it answers PING. */
async function spawnRedis(binary: string, dir: string, socketPath: string, timeoutMs: number): Promise<ChildProcess> {
  const child = spawn(
    binary,
    [
      "--port",
      "0",
      "--unixsocket",
      socketPath,
      "--unixsocketperm",
      "700",
      "--dir",
      dir,
      "--save",
      "",
      "--appendonly",
      "yes",
      "--appendfsync",
      "everysec",
      "--daemonize",
      "no",
      "--loglevel",
      "warning",
    ],
    { stdio: ["ignore", "pipe", "pipe"] },
  );
  let output = "";
  const collect = (chunk: Buffer): void => {
    output = (output + chunk.toString()).slice(-4000);
  };
  child.stdout?.on("data", collect);
  child.stderr?.on("data", collect);

  const exited = new Promise<never>((_, reject) => {
    child.once("error", (err: NodeJS.ErrnoException) => {
      reject(
        err.code === "ENOENT"
          ? new FailedPreconditionError(
              `redis-server not found (${binary}); install it with: apt-get install redis-server`,
            )
          : new UnavailableError(`cannot start redis-server: ${err.message}`, { cause: err }),
      );
    });
    child.once("exit", (code, signal) =>
      reject(new UnavailableError(`redis-server exited (${code ?? signal}) during start-up: ${output.trim()}`)),
    );
  });
  exited.catch(() => undefined);

  try {
    await Promise.race([waitForPong(socketPath, timeoutMs), exited]);
  } catch (err) {
    child.kill("SIGKILL");
    throw err;
  }
  return child;
}

async function stopChild(child: ChildProcess): Promise<void> {
  if (child.exitCode === null && child.signalCode === null) {
    const done = new Promise<void>((resolve) => child.once("exit", () => resolve()));
    child.kill("SIGCONT"); // a stopped server cannot act on SIGTERM
    child.kill("SIGTERM");
    const timer = setTimeout(() => child.kill("SIGKILL"), 5_000);
    await done;
    clearTimeout(timer);
  }
}

async function waitForPong(socketPath: string, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await ping(socketPath)) return;
    if (Date.now() > deadline)
      throw new UnavailableError(`redis-server did not answer on ${socketPath} within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

/** True when a Redis server answers PING on the socket. */
export function ping(socketPath: string): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect(socketPath);
    let reply = "";
    const finish = (ok: boolean): void => {
      socket.destroy();
      resolve(ok);
    };
    socket.setTimeout(1_000, () => finish(false));
    socket.once("error", () => finish(false));
    socket.once("connect", () => socket.write("PING\r\n"));
    socket.on("data", (chunk) => {
      reply += chunk.toString();
      if (reply.includes("\r\n")) finish(reply.startsWith("+PONG"));
    });
  });
}

/** ioredis connection options for a REDIS_URL: `unix:/path`, `unix:///path` or `redis://host:port/db`. */
export function redisConnectionOptions(url: string): { path: string } | { url: string } {
  if (url.startsWith("unix://")) return { path: url.slice("unix://".length) };
  if (url.startsWith("unix:")) return { path: url.slice("unix:".length) };
  return { url };
}
