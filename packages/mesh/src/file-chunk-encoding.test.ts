import { randomBytes } from "node:crypto";
import { AdapterFileChunk } from "@loramesh/proto";
import { expect } from "chai";
import { encodeFileChunk } from "./file-chunk-encoding";

describe("peer fetch chunk encoding", () => {
  it("writes the same bytes as the generated encoder, for zero, small, 32-bit and 53-bit fields", () => {
    const cases: AdapterFileChunk[] = [
      { fileName: "", fileSize: 0, offset: 0, data: Buffer.alloc(0) },
      { fileName: "adapter_config.json", fileSize: 5, offset: 0, data: Buffer.from("hello") },
      { fileName: "adapter_model.safetensors", fileSize: 2 ** 32 + 7, offset: 2 ** 31, data: randomBytes(300) },
      { fileName: "é.bin", fileSize: 2 ** 53 - 1, offset: 2 ** 40 + 3, data: randomBytes(256 << 10) },
    ];
    for (const c of cases) {
      const fast = encodeFileChunk(c);
      expect(fast.equals(Buffer.from(AdapterFileChunk.encode(c).finish())), c.fileName).to.equal(true);
      const back = AdapterFileChunk.decode(fast);
      expect({ ...back, data: Buffer.from(back.data) }).to.deep.equal({ ...c, data: Buffer.from(c.data) });
    }
  });
});
