import { expect } from "chai";
import { execFileSync } from "node:child_process";
import { appendFileSync, cpSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { REPO_ROOT } from "@loramesh/testing";
import { diffTrees } from "./tree-diff";

const committed = join(REPO_ROOT, "packages", "proto");

describe("generated protocol code", function () {
  this.timeout(120_000);
  let scratch: string;

  before(() => {
    scratch = mkdtempSync(join(tmpdir(), "loramesh-proto-"));
    execFileSync(process.execPath, [join(REPO_ROOT, "scripts", "generate-proto.mjs"), "--out", scratch], {
      stdio: "pipe",
    });
  });

  after(() => rmSync(scratch, { recursive: true, force: true }));

  it("is what buf + ts-proto generate from proto/ today (run `pnpm proto:generate` after editing a .proto)", () => {
    expect(diffTrees(join(committed, "src", "gen"), join(scratch, "src", "gen"))).to.deep.equal([]);
    expect(
      readFileSync(join(scratch, "descriptors.binpb")).equals(readFileSync(join(committed, "descriptors.binpb"))),
    ).to.equal(true, "descriptors.binpb is stale");
  });

  it("would notice a hand edit or a missing file", () => {
    const copy = join(scratch, "edited");
    cpSync(join(scratch, "src", "gen"), copy, { recursive: true });
    appendFileSync(join(copy, "loramesh", "v1", "api.ts"), "\n// edited by hand\n");
    rmSync(join(copy, "loramesh", "v1", "tensor.ts"));
    expect(diffTrees(join(committed, "src", "gen"), copy)).to.deep.equal([
      "loramesh/v1/api.ts",
      "loramesh/v1/tensor.ts",
    ]);
  });
});
