// Wrong credentials through the router's registration path (router → provisioner → source, real
// processes): an S3 store that checks Signature V4 (a rotated secret, a revoked key) and a gated hub
// repository (no token, another user's token). Each is a typed gRPC status, registers nothing and
// leaves nothing in the host cache; the same registration succeeds once the credentials are right,
// so the refusals are the credentials' doing.
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { LocalCluster } from "@loramesh/cli";
import { GrpcStatus, LoraMeshClient, LoraMeshClientError } from "@loramesh/sdk";
import {
  startAdapterFileServer,
  startTestS3Server,
  type AdapterFileServer,
  type TestS3Server,
} from "@loramesh/testing";
import { expect } from "chai";
import { adapterDir, modelDir, startCluster } from "./mesh-helpers";

const PEFT = ["adapter_config.json", "adapter_model.safetensors"];
const peftFiles = (name: string): Map<string, Buffer> =>
  new Map(PEFT.map((f) => [f, readFileSync(join(adapterDir("tiny-llama", name), f))]));

const failure = (p: Promise<unknown>): Promise<LoraMeshClientError> =>
  p.then(
    () => expect.fail("should have failed"),
    (e: unknown) => e as LoraMeshClientError,
  );

describe("adapter sources: wrong credentials through registration (real processes)", function () {
  this.timeout(180_000);
  let hub: AdapterFileServer;
  let s3: TestS3Server;
  let scratch: string;
  let hostCache: string;
  let tokenFile: string;
  let cluster: LocalCluster;
  let client: LoraMeshClient;

  const cacheEntries = (): string[] =>
    existsSync(join(hostCache, "objects")) ? readdirSync(join(hostCache, "objects")) : [];
  const nothingLeft = async (name: string): Promise<void> => {
    expect((await client.listAdapters()).adapters.map((a) => a.name)).to.not.include(name);
    expect(cacheEntries()).to.deep.equal([]);
    expect(existsSync(join(hostCache, "tmp")) ? readdirSync(join(hostCache, "tmp")) : []).to.deep.equal([]);
  };

  before(async () => {
    scratch = mkdtempSync(join(tmpdir(), "loramesh-creds-"));
    hostCache = join(scratch, "host-cache");
    tokenFile = join(scratch, "hf-token");
    hub = await startAdapterFileServer();
    s3 = await startTestS3Server();
    hub.hub.set("acme/gated", new Map([["main", peftFiles("sql-r8")]]));
    hub.gated.set("acme/gated", "hf_granted");
    s3.buckets.set("adapters", new Map([...peftFiles("rslora-r32")].map(([k, v]) => [`team/rs/${k}`, v])));
    const env: NodeJS.ProcessEnv = {
      ...process.env,
      HF_ENDPOINT: hub.url,
      // The provisioner reads the hub token from the login file on each fetch (no HF_TOKEN).
      HF_TOKEN_PATH: tokenFile,
      AWS_ENDPOINT_URL: s3.endpoint,
      AWS_REGION: "us-east-1",
      AWS_ACCESS_KEY_ID: s3.accessKeyId,
      AWS_SECRET_ACCESS_KEY: s3.secretAccessKey,
      LORAMESH_ADAPTER_CACHE: hostCache,
    };
    delete env["HF_TOKEN"];
    // Registration needs only the router and the provisioner.
    cluster = await startCluster({ modelDir: modelDir("tiny-llama"), workers: 0, loraServers: 0, env });
    client = new LoraMeshClient({ address: cluster.routerAddress });
  });

  after(async () => {
    client?.close();
    await cluster?.stop();
    await hub?.close();
    await s3?.close();
    rmSync(scratch, { recursive: true, force: true });
  });

  it("S3: a rotated secret is SignatureDoesNotMatch, a revoked key InvalidAccessKeyId: PERMISSION_DENIED", async () => {
    const { accessKeyId, secretAccessKey } = s3;
    s3.credentials.set(accessKeyId, "the-secret-after-rotation");
    const wrongSecret = await failure(client.registerAdapter("rs", "s3://adapters/team/rs"));
    expect(wrongSecret.code).to.equal(GrpcStatus.PERMISSION_DENIED);
    expect(wrongSecret.details).to.match(/refused the credentials \(SignatureDoesNotMatch\)/);
    await nothingLeft("rs");

    s3.credentials.clear();
    s3.credentials.set("AKIASOMEONEELSE", secretAccessKey);
    const wrongKey = await failure(client.registerAdapter("rs", "s3://adapters/team/rs"));
    expect(wrongKey.code).to.equal(GrpcStatus.PERMISSION_DENIED);
    expect(wrongKey.details).to.match(/refused the credentials \(InvalidAccessKeyId\)/);
    await nothingLeft("rs");

    s3.credentials.set(accessKeyId, secretAccessKey);
    const ok = await client.registerAdapter("rs", "s3://adapters/team/rs");
    expect(cacheEntries()).to.deep.equal([ok.adapter?.contentHash]);
    await client.deleteAdapter("rs");
  });

  it("hub: a gated repository without a token is UNAUTHENTICATED, with another user's PERMISSION_DENIED", async () => {
    const before = cacheEntries();
    rmSync(tokenFile, { force: true });
    const missing = await failure(client.registerAdapter("gated", "hf://acme/gated"));
    expect(missing.code).to.equal(GrpcStatus.UNAUTHENTICATED);
    expect(missing.details).to.match(/wants credentials \(HTTP 401\)/);

    writeFileSync(tokenFile, "hf_someone_without_access\n");
    const wrong = await failure(client.registerAdapter("gated", "hf://acme/gated"));
    expect(wrong.code).to.equal(GrpcStatus.PERMISSION_DENIED);
    expect(wrong.details).to.match(/refused the credentials \(HTTP 403\)/);
    expect((await client.listAdapters()).adapters.map((a) => a.name)).to.not.include("gated");
    expect(cacheEntries()).to.deep.equal(before);

    writeFileSync(tokenFile, "hf_granted\n");
    const ok = await client.registerAdapter("gated", "hf://acme/gated");
    expect(ok.adapter?.name).to.equal("gated");
    expect(cacheEntries()).to.include(ok.adapter?.contentHash);
  });
});
