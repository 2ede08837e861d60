import { expect } from "chai";
import { spawnSync } from "node:child_process";
import { join } from "node:path";
import { REPO_ROOT } from "@loramesh/testing";

const CLI = join(REPO_ROOT, "packages", "cli", "dist", "bin.js");
const cli = (...args: string[]) => spawnSync(process.execPath, [CLI, ...args], { encoding: "utf8", timeout: 30_000 });

describe("loramesh command", () => {
  it("lists its commands with --help", () => {
    const result = cli("--help");
    expect(result.status).to.equal(0);
    expect(result.stdout).to.contain("Usage: loramesh <command>");
    expect(result.stdout).to.match(/\n {2}up\s+start a local cluster/);
  });

  it("shows a command's options", () => {
    const result = cli("up", "--help");
    expect(result.status).to.equal(0);
    expect(result.stdout).to.contain("--workers N");
    expect(result.stdout).to.contain("--lora-servers N");
  });

  it("rejects an unknown command with status 2", () => {
    const result = cli("frobnicate");
    expect(result.status).to.equal(2);
    expect(result.stderr).to.contain('unknown command "frobnicate"');
  });

  it("rejects invalid options with a clear message and starts nothing", () => {
    const result = cli("up", "--workers", "0", "--listen", "nowhere");
    expect(result.status).to.equal(2);
    expect(result.stderr).to.contain("--workers: must be at least 1, got 0");
    expect(result.stderr).to.contain("--listen: expected HOST:PORT");
    expect(result.stdout).to.not.contain("loramesh ready");
  });
});
