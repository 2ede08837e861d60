import { expect } from "chai";
import { loadConfig } from "@loramesh/core";
import { ConfigError } from "@loramesh/errors";
import { applyDataplanePriority, executorOptions } from "./executor-options";

describe("executor options: --dataplane-priority", () => {
  const specs = executorOptions("test", "model");
  const base = { PROVISIONER_ADDRESS: "127.0.0.1:1", REDIS_URL: "redis://127.0.0.1:1", LORAMESH_MODEL: "/m" };
  const load = (argv: string[], env: NodeJS.ProcessEnv = {}) => loadConfig(specs, argv, { ...base, ...env }).config;

  it("takes off, nice[:1-20] and fifo[:1-10] from the flag or LORAMESH_DATAPLANE_PRIORITY; empty by default", () => {
    expect(load([]).dataplanePriority).to.equal("");
    for (const v of ["off", "nice", "nice:20", "fifo", "fifo:10"])
      expect(load([`--dataplane-priority=${v}`]).dataplanePriority).to.equal(v);
    expect(load([], { LORAMESH_DATAPLANE_PRIORITY: "fifo:2" }).dataplanePriority).to.equal("fifo:2");
  });

  it("refuses anything else with a ConfigError that names the forms", () => {
    for (const v of ["fifo:11", "nice:0", "rt", "nice:-5", "FIFO"]) {
      let err: unknown;
      try {
        load([`--dataplane-priority=${v}`]);
      } catch (e) {
        err = e;
      }
      expect(err, v).to.be.instanceOf(ConfigError);
      expect(String((err as ConfigError).problems)).to.contain("off, nice[:1-20] or fifo[:1-10]");
    }
  });

  it("hands a set value to the native core through the environment, and leaves it alone when empty", () => {
    const before = process.env["LORAMESH_DATAPLANE_PRIORITY"];
    try {
      delete process.env["LORAMESH_DATAPLANE_PRIORITY"];
      applyDataplanePriority("");
      expect(process.env["LORAMESH_DATAPLANE_PRIORITY"]).to.equal(undefined);
      applyDataplanePriority("fifo:3");
      expect(process.env["LORAMESH_DATAPLANE_PRIORITY"]).to.equal("fifo:3");
    } finally {
      if (before === undefined) delete process.env["LORAMESH_DATAPLANE_PRIORITY"];
      else process.env["LORAMESH_DATAPLANE_PRIORITY"] = before;
    }
  });
});
