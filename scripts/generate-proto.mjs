#!/usr/bin/env node
// Regenerates the committed protocol code: ts-proto sources and the descriptor set used by
// server reflection. With `--out DIR` it writes into DIR instead (the regeneration check uses
// that to compare against what is committed).
import { execFileSync } from "node:child_process";
import { mkdirSync, rmSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const root = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const outFlag = process.argv.indexOf("--out");
const outDir = outFlag >= 0 ? resolve(process.argv[outFlag + 1]) : join(root, "packages/proto");
const bin = (name) => join(root, "node_modules/.bin", name);

const template = {
  version: "v2",
  plugins: [
    {
      local: bin("protoc-gen-ts_proto"),
      out: join(outDir, "src/gen"),
      opt: [
        "outputServices=grpc-js",
        "esModuleInterop=true",
        "env=node",
        "useOptionals=messages",
        "forceLong=number",
        "oneof=unions-value",
      ],
    },
  ],
};

rmSync(join(outDir, "src/gen"), { recursive: true, force: true });
mkdirSync(join(outDir, "src/gen"), { recursive: true });
const protoDir = join(root, "proto");
execFileSync(bin("buf"), ["lint"], { cwd: protoDir, stdio: "inherit" });
execFileSync(bin("buf"), ["generate", "--template", JSON.stringify(template)], {
  cwd: protoDir,
  stdio: "inherit",
});
execFileSync(bin("buf"), ["build", "-o", join(outDir, "descriptors.binpb")], {
  cwd: protoDir,
  stdio: "inherit",
});
