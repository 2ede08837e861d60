import { expect } from "chai";
import { FailedPreconditionError } from "@loramesh/errors";
import { transportFor, transportPolicy } from "./lora-transport";

describe("base worker: --lora-transport per LoRA server", () => {
  it("auto: the ring on this host, UCX to other hosts when built in, else gRPC", () => {
    const withUcx = transportPolicy("auto", true, true);
    expect(transportFor(withUcx, true)).to.equal("shm");
    expect(transportFor(withUcx, false)).to.equal("ucx");
    const withoutUcx = transportPolicy("auto", true, false);
    expect(transportFor(withoutUcx, true)).to.equal("shm");
    expect(transportFor(withoutUcx, false)).to.equal("grpc");
  });

  it("--shared-memory=false takes the ring out of every choice", () => {
    expect(transportFor(transportPolicy("auto", false, true), true)).to.equal("grpc");
    expect(transportFor(transportPolicy("auto", false, true), false)).to.equal("ucx");
    expect(transportFor(transportPolicy("shm", false, true), true)).to.equal("grpc");
  });

  it("shm keeps the behaviour before UCX; ucx and grpc force one wire", () => {
    const shm = transportPolicy("shm", true, true);
    expect([transportFor(shm, true), transportFor(shm, false)]).to.deep.equal(["shm", "grpc"]);
    const ucx = transportPolicy("ucx", true, true);
    expect([transportFor(ucx, true), transportFor(ucx, false)]).to.deep.equal(["ucx", "ucx"]);
    const grpc = transportPolicy("grpc", true, true);
    expect([transportFor(grpc, true), transportFor(grpc, false)]).to.deep.equal(["grpc", "grpc"]);
  });

  it("refuses a forced UCX when the native core has none, with a typed error", () => {
    expect(() => transportPolicy("ucx", true, false)).to.throw(FailedPreconditionError, /built without UCX/);
  });
});
