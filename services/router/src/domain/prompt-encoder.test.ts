import { expect } from "chai";
import { copyFileSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { FailedPreconditionError, InvalidArgumentError } from "@loramesh/errors";
import { PromptEncoder } from "./prompt-encoder";

const MODEL = resolve(__dirname, "..", "..", "..", "..", "tests", "fixtures", "golden", "models", "tiny-llama");

describe("router prompt encoder", () => {
  let noTemplate: string;

  before(() => {
    // The golden model's tokenizer without its chat template.
    noTemplate = mkdtempSync(join(tmpdir(), "lm-no-template-"));
    copyFileSync(join(MODEL, "tokenizer.json"), join(noTemplate, "tokenizer.json"));
    const config = JSON.parse(readFileSync(join(MODEL, "tokenizer_config.json"), "utf8")) as Record<string, unknown>;
    delete config["chat_template"];
    writeFileSync(join(noTemplate, "tokenizer_config.json"), JSON.stringify(config));
  });
  after(() => rmSync(noTemplate, { recursive: true, force: true }));

  it("encodes a chat through the model's template, as a text prompt with the template would be", () => {
    const encoder = new PromptEncoder(MODEL);
    const chat = encoder.encode({ kind: "chat", messages: [{ role: "user", content: "hi" }] });
    expect(chat).to.deep.equal(encoder.encode({ kind: "text", text: "hi", chatTemplate: true }));
    expect(chat.length).to.be.greaterThan(encoder.encode({ kind: "text", text: "hi" }).length);
  });

  it("refuses a chat for a model without a chat template as a bad request, and keeps gRPC's precondition", () => {
    const encoder = new PromptEncoder(noTemplate);
    expect(() => encoder.encode({ kind: "chat", messages: [{ role: "user", content: "hi" }] })).to.throw(
      InvalidArgumentError,
      /no chat template/,
    );
    expect(() => encoder.encode({ kind: "text", text: "hi", chatTemplate: true })).to.throw(FailedPreconditionError);
    expect(encoder.encode({ kind: "tokens", ids: [1, 2] })).to.deep.equal([1, 2]);
    expect(() => encoder.encode(undefined)).to.throw(InvalidArgumentError, /prompt/);
  });
});
