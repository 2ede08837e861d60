import { expect } from "chai";
import { Metadata, status, type ServiceError } from "@grpc/grpc-js";
import { FailedPreconditionError, InvalidArgumentError, NotFoundError, UnavailableError } from "@loramesh/errors";
import { fromServiceError, PeerInternalError } from "./grpc-client";
import { toGrpcStatus } from "./grpc-status";

function serviceError(code: status, details: string): ServiceError {
  return Object.assign(new Error(details), { code, details, metadata: new Metadata() });
}

describe("client error mapper", () => {
  it("rebuilds the domain error the server mapped (round trip through toGrpcStatus)", () => {
    for (const err of [
      new NotFoundError("no x"),
      new FailedPreconditionError("loading"),
      new UnavailableError("down"),
    ]) {
      const back = fromServiceError(toGrpcStatus(err));
      expect(back).to.be.instanceOf(err.constructor);
      expect(back.message).to.equal(err.message);
    }
  });

  it("maps a ConfigError's trailer to its code's class", () => {
    const back = fromServiceError(toGrpcStatus(new InvalidArgumentError("bad")));
    expect(back).to.be.instanceOf(InvalidArgumentError);
  });

  it("keeps INTERNAL as an internal error without a peer, and hides it behind UNAVAILABLE when relaying", () => {
    expect(fromServiceError(serviceError(status.INTERNAL, "internal error"))).to.be.instanceOf(PeerInternalError);
    const relayed = fromServiceError(serviceError(status.INTERNAL, "internal error"), { peer: "the provisioner" });
    expect(relayed).to.be.instanceOf(UnavailableError);
    expect(relayed.message).to.equal("the provisioner failed");
    const notFound = fromServiceError(serviceError(status.NOT_FOUND, "adapter a not found"), {
      peer: "the provisioner",
    });
    expect(notFound).to.be.instanceOf(NotFoundError);
    expect(notFound.message).to.equal("adapter a not found");
  });

  it("passes other values through", () => {
    const plain = new TypeError("x");
    expect(fromServiceError(plain)).to.equal(plain);
    expect(fromServiceError("boom")).to.be.instanceOf(Error);
  });
});
