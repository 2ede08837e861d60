// The dependency rule at run time: in a running disaggregated cluster, only the processes that
// compute (base workers, LoRA servers) have the native addon mapped into memory.
import { expect } from "chai";
import { readFileSync } from "node:fs";
import type { LocalCluster } from "@loramesh/cli";
import { LoraMeshClient } from "@loramesh/sdk";
import { modelDir, registerAll, startCluster } from "./mesh-helpers";

const ADDON = "loramesh_native.node";

/** Whether the process has the addon mapped (any segment of /proc/PID/maps names the file). */
function mapsAddon(pid: number): boolean {
  return readFileSync(`/proc/${pid}/maps`, "utf8")
    .split("\n")
    .some((line) => line.endsWith(ADDON));
}

describe("dependency rule: which processes load loramesh_native.node (real cluster, /proc/PID/maps)", function () {
  this.timeout(120_000);
  let cluster: LocalCluster;
  let client: LoraMeshClient;

  before(async function () {
    if (process.platform !== "linux") this.skip();
    cluster = await startCluster({ modelDir: modelDir("tiny-llama"), workers: 1, loraServers: 1 });
    client = new LoraMeshClient({ address: cluster.routerAddress });
    // Registration validates the adapter in the provisioner and loads it on the executors, and a
    // request tokenizes in the router: the maps are read after every path that once pulled the addon.
    await registerAll(client, "tiny-llama", ["sql-r8"]);
    const sampling = { maxTokens: 2, temperature: 0, topP: 1, topK: 0, stop: [], stopTokenIds: [], ignoreEos: true };
    const out = await client.complete({ prompt: { $case: "text", value: "hello" }, adapter: "sql-r8", sampling });
    expect(out.usage?.completionTokens).to.equal(2);
  });

  after(async () => {
    client?.close();
    await cluster?.stop();
  });

  const pidsOf = (service: string): number[] =>
    cluster.processes.filter((p) => p.service === service).map((p) => p.pid);

  for (const service of ["router", "provisioner"]) {
    it(`the ${service} process has no ${ADDON} mapped`, () => {
      const pids = pidsOf(service);
      expect(pids).to.have.length.greaterThan(0);
      for (const pid of pids) expect(mapsAddon(pid), `${service} pid ${pid}`).to.equal(false);
    });
  }

  for (const service of ["base-worker", "lora-server"]) {
    it(`the ${service} process does map ${ADDON} (so the check can fail)`, () => {
      const pids = pidsOf(service);
      expect(pids).to.have.length.greaterThan(0);
      for (const pid of pids) expect(mapsAddon(pid), `${service} pid ${pid}`).to.equal(true);
    });
  }
});
