import { expect } from "chai";
import { status } from "@grpc/grpc-js";
import * as errors from "@loramesh/errors";
import { ERROR_CLASS_METADATA_KEY, GENERIC_INTERNAL_MESSAGE, toGrpcStatus } from "./grpc-status";
import { createLogger } from "./logging";

describe("error mapper", () => {
  const cases: Array<[errors.LoraMeshError, status]> = [
    [new errors.InvalidArgumentError("bad"), status.INVALID_ARGUMENT],
    [new errors.NotFoundError("adapter x not found"), status.NOT_FOUND],
    [new errors.AlreadyExistsError("taken"), status.ALREADY_EXISTS],
    [new errors.UnauthenticatedError("no key"), status.UNAUTHENTICATED],
    [new errors.PermissionDeniedError("no"), status.PERMISSION_DENIED],
    [new errors.ResourceExhaustedError("rank 256 above limit 128"), status.RESOURCE_EXHAUSTED],
    [new errors.FailedPreconditionError("loading"), status.FAILED_PRECONDITION],
    [new errors.UnavailableError("redis down"), status.UNAVAILABLE],
    [new errors.DeadlineExceededError("late"), status.DEADLINE_EXCEEDED],
    [new errors.CancelledError("gone"), status.CANCELLED],
    [new errors.UnimplementedError("later"), status.UNIMPLEMENTED],
    [new errors.ConfigError(["x"]), status.INVALID_ARGUMENT],
  ];
  for (const [err, code] of cases) {
    it(`maps ${err.name} to ${status[code]} with its message and class`, () => {
      const mapped = toGrpcStatus(err);
      expect(mapped.code).to.equal(code);
      expect(mapped.details).to.equal(err.message);
      expect(mapped.metadata?.get(ERROR_CLASS_METADATA_KEY)).to.deep.equal([err.name]);
    });
  }

  it("hides unknown errors behind a generic INTERNAL and logs the details", () => {
    const lines: string[] = [];
    const logger = createLogger({ level: "debug", write: (l) => lines.push(l) });
    const mapped = toGrpcStatus(new TypeError("secret path /etc/x undefined"), logger);
    expect(mapped.code).to.equal(status.INTERNAL);
    expect(mapped.details).to.equal(GENERIC_INTERNAL_MESSAGE);
    expect(mapped.details).to.not.contain("secret");
    expect(lines).to.have.length(1);
    expect(lines[0]).to.contain("secret path /etc/x undefined");
  });

  it("treats thrown non-Error values as unknown", () => {
    expect(toGrpcStatus("boom").code).to.equal(status.INTERNAL);
    expect(toGrpcStatus(undefined).code).to.equal(status.INTERNAL);
  });
});
