import { expect } from "chai";
import { createLogger } from "@loramesh/core";
import { PlacementCache } from "./placement-cache";

describe("PlacementCache.until", () => {
  // No provisioner listens here: the cache keeps resubscribing and never sees an update, so every
  // wait below ends by its timeout.
  const unreachable = "127.0.0.1:1";

  it("removes its listener when the timeout passes", async () => {
    const cache = new PlacementCache(unreachable, createLogger({ level: "error" }));
    try {
      const before = cache.listenerCount;
      const waits = [cache.until(() => false, 20), cache.until(() => false, 30), cache.until(() => false, 10)];
      expect(cache.listenerCount).to.equal(before + 3);
      expect(await Promise.all(waits)).to.deep.equal([false, false, false]);
      expect(cache.listenerCount).to.equal(before);
    } finally {
      cache.close();
    }
  });

  it("answers at once, registering nothing, when the check already holds", async () => {
    const cache = new PlacementCache(unreachable, createLogger({ level: "error" }));
    try {
      expect(await cache.until(() => true, 10)).to.equal(true);
      expect(cache.listenerCount).to.equal(0);
    } finally {
      cache.close();
    }
  });
});
