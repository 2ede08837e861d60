import { expect } from "chai";
import { existsSync } from "node:fs";
import { FailedPreconditionError } from "@loramesh/errors";
import { ping, startEmbeddedRedis } from "@loramesh/core";
import { startTestRedis } from "./redis";
import { processAlive } from "./wait";

describe("test Redis helper", () => {
  it("starts a private redis-server that real clients can use, and stops it completely", async () => {
    const redis = await startTestRedis();
    expect(redis.url).to.equal(`unix:${redis.socketPath}`);
    const client = redis.client();
    await client.set("loramesh:test", "42");
    expect(await client.get("loramesh:test")).to.equal("42");
    // Lua must work: BullMQ and the placement compare-and-set depend on it.
    expect(await client.eval("return redis.call('GET', KEYS[1])", 1, "loramesh:test")).to.equal("42");
    expect(await ping(redis.socketPath)).to.equal(true);
    await redis.stop();
    expect(processAlive(redis.pid)).to.equal(false);
    expect(existsSync(redis.socketPath)).to.equal(false);
  });

  it("gives two runs two independent servers", async () => {
    const [a, b] = await Promise.all([startTestRedis(), startTestRedis()]);
    try {
      await a.client().set("k", "a");
      expect(await b.client().get("k")).to.equal(null);
    } finally {
      await Promise.all([a.stop(), b.stop()]);
    }
  });

  it("says how to install redis-server when the binary is missing", async () => {
    try {
      await startEmbeddedRedis({ binary: "/nonexistent/redis-server" });
      expect.fail("should have thrown");
    } catch (err) {
      expect(err).to.be.instanceOf(FailedPreconditionError);
      expect((err as Error).message).to.contain("apt-get install redis-server");
    }
  });
});
