import { expect } from "chai";
import { DType, Tensor } from "@loramesh/proto";
import { InvalidArgumentError } from "@loramesh/errors";
import { bf16ToFloat, decodeTensor, encodeTensor, floatToBf16 } from "./tensor-codec";

/** Encodes to protobuf bytes and back, as a tensor crosses the wire. */
function throughWire(tensor: Tensor): Tensor {
  return Tensor.decode(Tensor.encode(tensor).finish());
}

describe("tensor codec", () => {
  it("round-trips f32 through protobuf bytes exactly", () => {
    const data = Float32Array.from([1.5, -0, Number.NaN, 3.4028234663852886e38, 1e-45, -7.25]);
    const decoded = decodeTensor(throughWire(encodeTensor({ dtype: DType.DTYPE_F32, shape: [2, 3], data })));
    expect(decoded.dtype).to.equal(DType.DTYPE_F32);
    expect(decoded.shape).to.deep.equal([2, 3]);
    expect(Buffer.from(decoded.data.buffer, decoded.data.byteOffset, decoded.data.byteLength)).to.deep.equal(
      Buffer.from(data.buffer),
    );
  });

  it("round-trips bf16 and i32", () => {
    const bf = Uint16Array.from([0x3f80, 0xc040, 0x7fc0, 0x0001]);
    const i32 = Int32Array.from([-2147483648, 0, 7, 2147483647]);
    expect([
      ...decodeTensor(throughWire(encodeTensor({ dtype: DType.DTYPE_BF16, shape: [4], data: bf }))).data,
    ]).to.deep.equal([...bf]);
    expect([
      ...decodeTensor(throughWire(encodeTensor({ dtype: DType.DTYPE_I32, shape: [2, 2], data: i32 }))).data,
    ]).to.deep.equal([...i32]);
  });

  it("copies misaligned bytes before viewing them as floats", () => {
    const values = Float32Array.from([0.25, -1, 2.5]);
    const backing = Buffer.alloc(13);
    Buffer.from(values.buffer).copy(backing, 1); // starts at byte 1: not 4-byte aligned
    const misaligned = backing.subarray(1);
    expect(misaligned.byteOffset % 4).to.not.equal(0);
    const decoded = decodeTensor({ dtype: DType.DTYPE_F32, shape: [3], data: misaligned });
    expect([...decoded.data]).to.deep.equal([0.25, -1, 2.5]);
    expect(decoded.data.byteOffset % 4).to.equal(0);
  });

  it("decodes a tensor embedded at an odd offset inside a larger protobuf message", () => {
    // A 1-byte field before the tensor shifts its bytes inside the receive buffer.
    const inner = Tensor.encode(
      encodeTensor({ dtype: DType.DTYPE_F32, shape: [2], data: Float32Array.from([3, 4]) }),
    ).finish();
    const outer = Buffer.concat([Buffer.from([0x08, 0x01]), Buffer.from([0x1a, inner.length]), Buffer.from(inner)]);
    const decoded = decodeTensor(Tensor.decode(outer.subarray(4)));
    expect([...decoded.data]).to.deep.equal([3, 4]);
  });

  it("rejects a byte length that does not match the shape", () => {
    const bad = { dtype: DType.DTYPE_F32, shape: [2, 2], data: Buffer.alloc(12) };
    expect(() => decodeTensor(bad)).to.throw(InvalidArgumentError, /needs 16 bytes, got 12/);
  });

  it("rejects an unspecified dtype, negative or huge shapes", () => {
    expect(() => decodeTensor({ dtype: DType.DTYPE_UNSPECIFIED, shape: [1], data: Buffer.alloc(4) })).to.throw(
      InvalidArgumentError,
    );
    expect(() => decodeTensor({ dtype: DType.DTYPE_F32, shape: [65536, 65536], data: Buffer.alloc(0) })).to.throw(
      InvalidArgumentError,
      /too large/,
    );
    expect(() => encodeTensor({ dtype: DType.DTYPE_F32, shape: [3], data: new Float32Array(2) })).to.throw(
      InvalidArgumentError,
    );
  });

  it("rounds floats to bf16 to nearest even and back exactly", () => {
    expect(floatToBf16(1)).to.equal(0x3f80);
    expect(bf16ToFloat(0x3f80)).to.equal(1);
    // 1 + 2^-8 lies exactly between two bf16 values: ties go to the even one (1.0).
    expect(floatToBf16(1 + 2 ** -8)).to.equal(0x3f80);
    // 1 + 3·2^-8 ties between 1+2^-7 (odd mantissa) and 1+2^-6 (even): rounds up.
    expect(floatToBf16(1 + 3 * 2 ** -8)).to.equal(0x3f82);
    expect(Number.isNaN(bf16ToFloat(floatToBf16(Number.NaN)))).to.equal(true);
  });
});
