import { expect } from "chai";
import { createLogger } from "./logging";
import { installGracefulShutdown } from "./shutdown";

const quiet = createLogger({ level: "silent" });
// SIGUSR2 stands in for SIGTERM so the test process itself is never asked to stop.
const SIGNAL: NodeJS.Signals = "SIGUSR2";

describe("graceful shutdown", () => {
  it("runs cleanup once and exits 0 when it finishes", async () => {
    let cleanups = 0;
    const exited = new Promise<number>((resolve) => {
      const remove = installGracefulShutdown(
        async () => {
          cleanups++;
          await new Promise((r) => setTimeout(r, 20));
        },
        { logger: quiet, signals: [SIGNAL], exit: (code) => (remove(), resolve(code)) },
      );
    });
    process.emit(SIGNAL, SIGNAL);
    expect(await exited).to.equal(0);
    expect(cleanups).to.equal(1);
  });

  it("exits 1 when cleanup fails or outlives the timeout, and at once on a second signal", async () => {
    const failing = new Promise<number>((resolve) => {
      const remove = installGracefulShutdown(async () => Promise.reject(new Error("redis gone")), {
        logger: quiet,
        signals: [SIGNAL],
        exit: (code) => (remove(), resolve(code)),
      });
    });
    process.emit(SIGNAL, SIGNAL);
    expect(await failing).to.equal(1);

    const codes: number[] = [];
    const remove = installGracefulShutdown(() => new Promise<void>(() => undefined), {
      logger: quiet,
      signals: [SIGNAL],
      timeoutMs: 50,
      exit: (code) => codes.push(code),
    });
    process.emit(SIGNAL, SIGNAL);
    process.emit(SIGNAL, SIGNAL);
    await new Promise((r) => setTimeout(r, 100));
    remove();
    expect(codes).to.deep.equal([130, 1]);
  });
});
