import { expect } from "chai";
import { spawnSync } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { parse, parseAllDocuments } from "yaml";
import { Deployment } from "kubernetes-models/apps/v1/Deployment";
import { HorizontalPodAutoscaler } from "kubernetes-models/autoscaling/v2/HorizontalPodAutoscaler";
import { ConfigMap } from "kubernetes-models/v1/ConfigMap";
import { Namespace } from "kubernetes-models/v1/Namespace";
import { PersistentVolumeClaim } from "kubernetes-models/v1/PersistentVolumeClaim";
import { Service } from "kubernetes-models/v1/Service";
import { options as baseWorkerOptions } from "@loramesh/base-worker";
import { options as loraServerOptions } from "@loramesh/lora-server";
import { options as provisionerOptions } from "@loramesh/provisioner";
import { options as routerOptions } from "@loramesh/router";
import { REPO_ROOT } from "@loramesh/testing";

const DEPLOY = join(REPO_ROOT, "deploy");

/** Environment variables each service reads: its declared options plus what every process reads. */
const COMMON_ENV = ["LOG_LEVEL", "METRICS_ADDRESS", "LORAMESH_HOST_ID", "NODE_ENV", "LORAMESH_CLUSTER_TOKEN"];
const envOf = (options: Record<string, { env?: string }>): Set<string> =>
  new Set([
    ...Object.values(options)
      .map((o) => o.env)
      .filter((e): e is string => e !== undefined),
    ...COMMON_ENV,
  ]);
const SERVICE_ENV: Record<string, Set<string>> = {
  router: envOf(routerOptions),
  provisioner: envOf(provisionerOptions),
  "base-worker": envOf(baseWorkerOptions),
  "lora-server": envOf(loraServerOptions),
};
const readsEnv = (service: string, name: string): boolean =>
  name.startsWith("OTEL_") || (SERVICE_ENV[service]?.has(name) ?? false);
const servicePort = (address: string): string => address.slice(address.lastIndexOf(":") + 1);

interface ComposeService {
  image?: string;
  command?: string[];
  environment?: Record<string, string>;
  depends_on?: Record<string, { condition: string }>;
  ports?: string[];
  volumes?: string[];
  healthcheck?: { test: string[] };
}

describe("deploy: docker-compose (validated offline)", () => {
  const file = join(DEPLOY, "docker-compose.yml");
  const compose = parse(readFileSync(file, "utf8"), { merge: true }) as { services: Record<string, ComposeService> };
  const services = compose.services;
  const loramesh = Object.keys(services).filter((s) => s in SERVICE_ENV);

  it("passes dclint against the compose schema", () => {
    const result = spawnSync(
      join(REPO_ROOT, "node_modules", ".bin", "dclint"),
      ["-c", join(DEPLOY, "dclint.config.json"), file],
      { encoding: "utf8" },
    );
    expect(result.status, `${result.stdout}${result.stderr}`).to.equal(0);
    expect(result.stdout).to.not.match(/warning|error/);
  });

  it("runs the four services, Redis and Jaeger, each loramesh service from the one image with a health check", () => {
    expect(Object.keys(services).sort()).to.deep.equal([
      "base-worker",
      "jaeger",
      "lora-server",
      "provisioner",
      "redis",
      "router",
    ]);
    for (const name of loramesh) {
      const s = services[name] as ComposeService;
      expect(s.image, name).to.equal("loramesh:local");
      const main = s.command?.[0] ?? "";
      expect(main, name).to.equal(`services/${name}/dist/main.js`);
      expect(existsSync(join(REPO_ROOT, "services", name, "src", "main.ts")), main).to.equal(true);
      const listen = s.environment?.["LISTEN_ADDRESS"] ?? "";
      expect(s.healthcheck?.test.slice(-2), name).to.deep.equal(["health", `127.0.0.1:${servicePort(listen)}`]);
    }
  });

  it("only sets environment variables the services actually read", () => {
    for (const name of loramesh) {
      for (const key of Object.keys(services[name]?.environment ?? {}))
        expect(readsEnv(name, key), `${name} reads ${key}`).to.equal(true);
    }
  });

  it("points every dependency and address at a service that exists and listens there", () => {
    const listenPort = (svc: string) => servicePort(services[svc]?.environment?.["LISTEN_ADDRESS"] ?? "");
    for (const [name, s] of Object.entries(services)) {
      for (const dep of Object.keys(s.depends_on ?? {}))
        expect(services, `${name} depends on ${dep}`).to.have.property(dep);
      const env = s.environment ?? {};
      for (const key of ["PROVISIONER_ADDRESS", "ADVERTISE_ADDRESS"]) {
        if (!env[key]) continue;
        const [host, port] = env[key].split(":");
        expect(services, `${name}.${key}`).to.have.property(host as string);
        expect(port, `${name}.${key}`).to.equal(listenPort(host as string));
        if (key === "ADVERTISE_ADDRESS") expect(host).to.equal(name);
      }
      if (env["REDIS_URL"]) expect(new URL(env["REDIS_URL"]).hostname).to.equal("redis");
      if (env["OTEL_EXPORTER_OTLP_ENDPOINT"])
        expect(services).to.have.property(new URL(env["OTEL_EXPORTER_OTLP_ENDPOINT"]).hostname);
      for (const volume of s.volumes ?? []) {
        const source = volume.split(":")[0] as string;
        if (source.startsWith(".")) expect(existsSync(join(DEPLOY, source)), `${name} volume ${source}`).to.equal(true);
      }
    }
    const published = Object.values(services).flatMap((s) =>
      (s.ports ?? []).map((p) => p.split(":").slice(0, -1).join(":")),
    );
    expect(new Set(published).size, "published ports are unique").to.equal(published.length);
    // The default model is in the mounted volume.
    expect(existsSync(join(DEPLOY, "models", "tiny-llama", "config.json"))).to.equal(true);
  });

  it("builds from a Dockerfile that exists and names the service mains", () => {
    const dockerfile = readFileSync(join(DEPLOY, "Dockerfile"), "utf8");
    expect(dockerfile).to.match(/^FROM node:20\S* AS build$/m);
    expect(dockerfile).to.match(/^FROM node:20\S* AS runtime$/m);
    expect(dockerfile).to.contain("pnpm install --frozen-lockfile");
  });
});

type Doc = Record<string, unknown> & { kind: string; apiVersion: string; metadata: { name: string } };

describe("deploy: Kubernetes manifests (validated offline)", () => {
  const dir = join(DEPLOY, "k8s");
  const kustomization = parse(readFileSync(join(dir, "kustomization.yaml"), "utf8")) as { resources: string[] };
  const docs: Doc[] = kustomization.resources.flatMap((f) =>
    parseAllDocuments(readFileSync(join(dir, f), "utf8")).map((d) => d.toJS() as Doc),
  );
  const byKind = (kind: string) => docs.filter((d) => d.kind === kind);
  const deployments = byKind("Deployment") as unknown as Deployment[];

  it("lists only files that exist, and every document validates against the Kubernetes schema", () => {
    const classes: Record<string, new (d: never) => { validate(): void }> = {
      "apps/v1/Deployment": Deployment,
      "v1/Service": Service,
      "v1/ConfigMap": ConfigMap,
      "v1/Namespace": Namespace,
      "v1/PersistentVolumeClaim": PersistentVolumeClaim,
      "autoscaling/v2/HorizontalPodAutoscaler": HorizontalPodAutoscaler,
    };
    expect(docs.length).to.be.greaterThan(10);
    // The validator does reject a broken manifest.
    const broken = { ...(byKind("Deployment")[0] as Doc), spec: { replicas: "two" } };
    expect(() => new Deployment(broken as never).validate()).to.throw(/replicas/);
    for (const d of docs) {
      const Model = classes[`${d.apiVersion}/${d.kind}`];
      expect(Model, `${d.apiVersion} ${d.kind}`).to.not.equal(undefined);
      expect(
        () => new (Model as new (x: Doc) => { validate(): void })(d).validate(),
        `${d.kind}/${d.metadata.name}`,
      ).to.not.throw();
    }
  });

  it("has a Deployment and a Service for every service and Redis, with gRPC health probes", () => {
    for (const name of ["router", "provisioner", "base-worker", "lora-server", "redis"]) {
      expect(deployments.map((d) => d.metadata?.name)).to.include(name);
      expect(byKind("Service").map((d) => d.metadata.name)).to.include(name);
    }
    for (const d of deployments.filter((x) => x.metadata?.name !== "redis")) {
      const container = d.spec?.template.spec?.containers[0];
      const grpcPort = container?.ports?.find((p) => p.name === "grpc")?.containerPort;
      expect(container?.readinessProbe?.grpc?.port, d.metadata?.name).to.equal(grpcPort);
      expect(container?.livenessProbe?.grpc?.port, d.metadata?.name).to.equal(grpcPort);
      const main = container?.args?.[0] ?? "";
      expect(main).to.equal(`services/${d.metadata?.name}/dist/main.js`);
      const listen = container?.env?.find((e) => e.name === "LISTEN_ADDRESS")?.value ?? "";
      expect(Number(servicePort(listen))).to.equal(grpcPort);
    }
  });

  it("keeps selectors, ports, config maps, volumes and the autoscaler pointed at things that exist", () => {
    for (const s of byKind("Service") as unknown as Service[]) {
      const target = deployments.find((d) =>
        Object.entries(s.spec?.selector ?? {}).every(([k, v]) => d.spec?.template.metadata?.labels?.[k] === v),
      );
      expect(target, `service ${s.metadata?.name} selects a deployment`).to.not.equal(undefined);
      const names = target?.spec?.template.spec?.containers.flatMap((c) => (c.ports ?? []).map((p) => p.name));
      for (const p of s.spec?.ports ?? [])
        expect(names, `service ${s.metadata?.name} port ${p.name}`).to.include(p.targetPort);
    }
    const configMaps = byKind("ConfigMap").map((d) => d.metadata.name);
    const claims = byKind("PersistentVolumeClaim").map((d) => d.metadata.name);
    for (const d of deployments) {
      for (const c of d.spec?.template.spec?.containers ?? []) {
        for (const ref of c.envFrom ?? []) {
          // The one secret is the cluster token, which the operator creates (deploy/README.md).
          if (ref.secretRef) expect(ref.secretRef.name).to.equal("loramesh-cluster-token");
          else expect(configMaps).to.include(ref.configMapRef?.name);
        }
      }
      for (const v of d.spec?.template.spec?.volumes ?? [])
        if (v.persistentVolumeClaim) expect(claims).to.include(v.persistentVolumeClaim.claimName);
    }
    const hpa = byKind("HorizontalPodAutoscaler")[0] as unknown as HorizontalPodAutoscaler;
    expect(hpa.spec?.scaleTargetRef.name).to.equal("lora-server");
    expect(hpa.spec?.metrics?.[0]?.external?.metric.name).to.equal("loramesh_recommended_lora_servers");
  });

  it("sets only environment variables the services read", () => {
    const config = byKind("ConfigMap")[0] as unknown as ConfigMap;
    for (const key of Object.keys(config.data ?? {})) {
      expect(
        Object.keys(SERVICE_ENV).some((svc) => readsEnv(svc, key)),
        `some service reads ${key}`,
      ).to.equal(true);
    }
    for (const d of deployments.filter((x) => x.metadata?.name !== "redis")) {
      const name = d.metadata?.name as string;
      for (const e of d.spec?.template.spec?.containers[0]?.env ?? []) {
        if (e.name === "POD_IP") continue; // only substituted into ADVERTISE_ADDRESS
        expect(readsEnv(name, e.name), `${name} reads ${e.name}`).to.equal(true);
      }
    }
    expect(existsSync(dirname(dir))).to.equal(true);
  });
});
