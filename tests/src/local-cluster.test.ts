import { expect } from "chai";
import { execFile, spawn, type ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { promisify } from "node:util";
import { SERVICE_NAMES } from "@loramesh/proto";
import { checkHealth, GrpcStatus, type LoraMeshClientError } from "@loramesh/sdk";
import { processAlive, REPO_ROOT, waitFor } from "@loramesh/testing";

const run = promisify(execFile);
const BUF = join(REPO_ROOT, "node_modules", ".bin", "buf");
const CLI = join(REPO_ROOT, "packages", "cli", "dist", "bin.js");
/** The cluster token `up` hands its services (given here so reflection calls can carry it). */
const CLUSTER_TOKEN = randomBytes(32).toString("hex");
const TOKEN_HEADER = ["--reflect-header", `x-loramesh-cluster-token: ${CLUSTER_TOKEN}`];

interface Started {
  child: ChildProcess;
  services: Array<{ service: string; address: string; pid: number }>;
  routerAddress: string;
  /** Base URL from the `openai http://HOST:PORT/v1` line printed after the ready line. */
  openaiBaseUrl: string;
  stderr: string[];
}

/** Runs `loramesh up` as a user would and reads its stdout until the ready line. */
async function startUp(args: string[]): Promise<Started> {
  const child = spawn(process.execPath, [CLI, "up", ...args], {
    cwd: REPO_ROOT,
    stdio: ["ignore", "pipe", "pipe"],
    env: { ...process.env, LOG_LEVEL: "info", LORAMESH_CLUSTER_TOKEN: CLUSTER_TOKEN },
  });
  const stderr: string[] = [];
  child.stderr?.on("data", (chunk: Buffer) => stderr.push(chunk.toString()));
  const services: Started["services"] = [];
  const lines = createInterface({ input: child.stdout as NodeJS.ReadableStream });
  let readySeen = false;
  let routerAddress = "";
  const openaiBaseUrl = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no ready line; stderr:\n${stderr.join("")}`)), 200_000);
    child.once("exit", (code) => reject(new Error(`up exited with ${code}; stderr:\n${stderr.join("")}`)));
    lines.on("line", (line) => {
      const service = /^service (\S+) (\S+) pid (\d+)$/.exec(line);
      if (service)
        services.push({ service: service[1] as string, address: service[2] as string, pid: Number(service[3]) });
      const ready = /^loramesh ready (\S+)$/.exec(line);
      if (ready) {
        readySeen = true;
        routerAddress = ready[1] as string;
      }
      const openai = /^openai (http:\/\/\S+\/v1)$/.exec(line);
      if (openai && readySeen) {
        clearTimeout(timer);
        resolve(openai[1] as string);
      }
    });
  });
  return { child, services, routerAddress, openaiBaseUrl, stderr };
}

/** Resolves with the match once `up`'s stderr has a line matching `pattern`. */
function logLine(started: Started, pattern: RegExp): Promise<RegExpExecArray> {
  return new Promise((resolve) => {
    const check = (): boolean => {
      const m = pattern.exec(started.stderr.join(""));
      if (m) resolve(m);
      return m !== null;
    };
    if (!check()) {
      const onData = (): void => {
        if (check()) started.child.stderr?.off("data", onData);
      };
      started.child.stderr?.on("data", onData);
    }
  });
}

const EXPECTED_SERVICES: Record<string, readonly string[]> = {
  router: SERVICE_NAMES.router,
  provisioner: SERVICE_NAMES.provisioner,
  "base-worker": SERVICE_NAMES.baseWorker,
  "lora-server": SERVICE_NAMES.loraServer,
};

describe("loramesh up (the README's start command)", function () {
  this.timeout(300_000);
  let started: Started;

  before(async () => {
    started = await startUp([
      "--listen",
      "127.0.0.1:0",
      "--http-listen",
      "127.0.0.1:0",
      "--workers",
      "2",
      "--lora-servers",
      "1",
    ]);
  });

  after(() => {
    if (started.child.exitCode === null) started.child.kill("SIGKILL");
  });

  it("starts Redis and the four services as separate processes", () => {
    const names = started.services.map((s) => s.service).sort();
    expect(names).to.deep.equal(["base-worker", "base-worker", "lora-server", "provisioner", "router"]);
    const pids = new Set(started.services.map((s) => s.pid));
    expect(pids.size).to.equal(5);
    expect(pids.has(started.child.pid as number)).to.equal(false);
    expect(started.services.find((s) => s.service === "router")?.address).to.equal(started.routerAddress);
  });

  it("has every service answer gRPC health, for the server and for each of its services", async () => {
    for (const { service, address } of started.services) {
      expect(await checkHealth({ address }), `${service} overall`).to.equal("SERVING");
      for (const name of EXPECTED_SERVICES[service] ?? [])
        expect(await checkHealth({ address }, name), name).to.equal("SERVING");
      const unknown = (await checkHealth({ address }, "no.such.Service").catch(
        (e: unknown) => e,
      )) as LoraMeshClientError;
      expect(unknown.code).to.equal(GrpcStatus.NOT_FOUND);
    }
  });

  it("has every service answer server reflection, so `buf curl` can list and call it", async () => {
    for (const { service, address } of started.services) {
      // Internal services answer mesh members only: the call carries the cluster token.
      const { stdout } = await run(BUF, [
        "curl",
        "--protocol",
        "grpc",
        "--http2-prior-knowledge",
        ...(service === "router" ? [] : TOKEN_HEADER),
        "--list-services",
        `http://${address}`,
      ]);
      const listed = stdout.trim().split("\n").sort();
      expect(listed, service).to.include.members([...(EXPECTED_SERVICES[service] ?? []), "grpc.health.v1.Health"]);
    }
    const router = started.routerAddress;
    const methods = await run(BUF, [
      "curl",
      "--protocol",
      "grpc",
      "--http2-prior-knowledge",
      "--list-methods",
      `http://${router}`,
    ]);
    expect(methods.stdout).to.contain("loramesh.v1.InferenceService/Generate");
    const health = await run(BUF, [
      "curl",
      "--protocol",
      "grpc",
      "--http2-prior-knowledge",
      "--data",
      "{}",
      `http://${router}/grpc.health.v1.Health/Check`,
    ]);
    expect(JSON.parse(health.stdout)).to.deep.equal({ status: "SERVING" });
  });

  it("refuses anonymous reflection on internal services (UNAUTHENTICATED) and never prints the cluster token", async () => {
    for (const { service, address } of started.services.filter((s) => s.service !== "router")) {
      const anonymous = await run(BUF, [
        "curl",
        "--protocol",
        "grpc",
        "--http2-prior-knowledge",
        "--list-services",
        `http://${address}`,
      ]).catch((e: { stderr?: string }) => e);
      expect(anonymous, service)
        .to.have.property("stderr")
        .that.matches(/not authenticated|unauthenticated/i);
    }
    expect(started.stderr.join("")).to.not.contain(CLUSTER_TOKEN);
  });

  it("prints the OpenAI base URL after the ready line, and the HTTP API answers there", async () => {
    expect(started.openaiBaseUrl).to.match(/^http:\/\/127\.0\.0\.1:\d+\/v1$/);
    expect(started.openaiBaseUrl).to.not.equal("http://127.0.0.1:0/v1");
    const res = await fetch(`${started.openaiBaseUrl}/models`);
    expect(res.status).to.equal(200);
    const body = (await res.json()) as { object: string; data: Array<{ id: string }> };
    expect(body.object).to.equal("list");
    expect(body.data.map((m) => m.id)).to.include("tiny-llama");
  });

  it("restarts a service that exits on its own, at the same address, with a log line; the rest keep running", async () => {
    const lora = started.services.find((s) => s.service === "lora-server") as Started["services"][number];
    const restarted = logLine(started, /"msg":"lora-server restarted"[^\n]*"pid":(\d+)/);
    process.kill(lora.pid, "SIGKILL");
    const pid = Number((await restarted)[1]);
    expect(pid).to.not.equal(lora.pid);
    expect(started.stderr.join("")).to.match(/"msg":"lora-server exited unexpectedly; restarting it in \d+ ms"/);
    expect(started.child.exitCode, "up keeps running").to.equal(null);
    for (const s of started.services.filter((x) => x !== lora)) expect(processAlive(s.pid), s.service).to.equal(true);
    expect(await checkHealth({ address: lora.address })).to.equal("SERVING");
    // The SIGTERM test below checks that the new process stops too.
    started.services.push({ ...lora, pid });
  });

  it("stops every process and the embedded Redis cleanly on SIGTERM", async () => {
    const redisSocket = /"socketPath":"([^"]+)"/.exec(started.stderr.join(""))?.[1];
    expect(redisSocket, "embedded redis socket logged").to.be.a("string");
    expect(existsSync(redisSocket as string)).to.equal(true);
    const exited = new Promise<number | null>((resolve) => started.child.once("exit", (code) => resolve(code)));
    started.child.kill("SIGTERM");
    expect(await exited).to.equal(0);
    for (const { service, pid } of started.services) {
      await waitFor(() => (processAlive(pid) ? undefined : true), 10_000, `${service} (pid ${pid}) to exit`);
    }
    expect(existsSync(redisSocket as string)).to.equal(false);
    const log = started.stderr.join("");
    for (const service of Object.keys(EXPECTED_SERVICES))
      expect(log).to.contain(`"msg":"stopped","service":"${service}"`);
  });
});
