// The dependency rule at build time: ESLint (the repository's own eslint.config.mjs) refuses an
// import that the rule does not allow, so `pnpm run lint` fails a change that breaks it.
import { expect } from "chai";
import { join } from "node:path";
import { ESLint } from "eslint";
import { REPO_ROOT } from "@loramesh/testing";

// Lints a snippet as if it were the content of an existing file of that package (type-aware
// linting needs a file its tsconfig includes).
async function restrictedImports(file: string, code: string): Promise<string[]> {
  const eslint = new ESLint({ cwd: REPO_ROOT });
  const [result] = await eslint.lintText(code, { filePath: join(REPO_ROOT, file) });
  return (result?.messages ?? []).filter((m) => m.ruleId === "no-restricted-imports").map((m) => m.message);
}

describe("dependency rule: the lint rule fails imports it does not allow (ESLint Node API)", function () {
  this.timeout(120_000);

  it("the router may not import @loramesh/native", async () => {
    const messages = await restrictedImports(
      "services/router/src/main.ts",
      'import { native } from "@loramesh/native";\nexport const version = native.version;\n',
    );
    expect(messages).to.have.length(1);
    expect(messages[0]).to.match(/@loramesh\/native.*must not load loramesh_native\.node/s);
  });

  it("the provisioner may not import @loramesh/engine", async () => {
    const messages = await restrictedImports(
      "services/provisioner/src/main.ts",
      'import { loadAdapter } from "@loramesh/engine";\nexport const load = loadAdapter;\n',
    );
    expect(messages).to.have.length(1);
  });

  it("errors may not import gRPC, formats may not import the engine, nobody imports src/ paths", async () => {
    expect(
      await restrictedImports(
        "packages/errors/src/errors.ts",
        'import { status } from "@grpc/grpc-js";\nexport const ok = status.OK;\n',
      ),
    ).to.not.deep.equal([]);
    expect(
      await restrictedImports(
        "packages/formats/src/index.ts",
        'import { Engine } from "@loramesh/engine";\nexport const E = Engine;\n',
      ),
    ).to.not.deep.equal([]);
    expect(
      await restrictedImports(
        "services/base-worker/src/main.ts",
        'import { Engine } from "@loramesh/engine/src/engine";\nexport const E = Engine;\n',
      ),
    ).to.not.deep.equal([]);
  });

  it("allowed imports pass: the base worker may import the engine, the router formats", async () => {
    expect(
      await restrictedImports(
        "services/base-worker/src/main.ts",
        'import { Engine } from "@loramesh/engine";\nexport const E = Engine;\n',
      ),
    ).to.deep.equal([]);
    expect(
      await restrictedImports(
        "services/router/src/main.ts",
        'import { Tokenizer } from "@loramesh/formats";\nexport const T = Tokenizer;\n',
      ),
    ).to.deep.equal([]);
  });
});
