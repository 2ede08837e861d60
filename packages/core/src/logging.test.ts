import { expect } from "chai";
import { randomBytes } from "node:crypto";
import { context, startTelemetry, trace } from "@loramesh/telemetry";
import { createLogger } from "./logging";

describe("pino logger", () => {
  before(() => startTelemetry("logging-test"));

  it("puts trace_id and span_id of the active span on every JSON line inside it", () => {
    const lines: string[] = [];
    const logger = createLogger({ level: "info", write: (l) => lines.push(l), fields: { service: "t" } });
    // A span as a propagated request context carries it (the tracer may not be recording here).
    const ids = { traceId: randomBytes(16).toString("hex"), spanId: randomBytes(8).toString("hex"), traceFlags: 1 };
    const span = trace.wrapSpanContext(ids);
    context.with(trace.setSpan(context.active(), span), () => {
      logger.child({ step: 1 }).info("inside", { n: 2n });
    });
    logger.info("outside");
    expect(lines).to.have.length(2);
    const inside = JSON.parse(lines[0] as string) as Record<string, unknown>;
    expect(inside).to.include({ level: "info", msg: "inside", service: "t", step: 1, n: "2" });
    expect(inside["trace_id"]).to.equal(ids.traceId);
    expect(inside["span_id"]).to.equal(ids.spanId);
    expect(inside["trace_id"]).to.match(/^[0-9a-f]{32}$/);
    const outside = JSON.parse(lines[1] as string) as Record<string, unknown>;
    expect(outside).to.not.have.property("trace_id");
    // The message stays ahead of the base fields, as log consumers expect.
    expect(lines[1]).to.contain('"msg":"outside","service":"t"');
  });

  it("honours the level", () => {
    const lines: string[] = [];
    const logger = createLogger({ level: "warn", write: (l) => lines.push(l) });
    logger.info("dropped");
    logger.error("kept", { error: new Error("e") });
    expect(lines).to.have.length(1);
    expect(JSON.parse(lines[0] as string)).to.deep.include({ level: "error", msg: "kept" });
  });
});
