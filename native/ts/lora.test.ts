import { expect } from "chai";
import { native } from "./index";
import { packLoraWeights, type LoraSliceWeights } from "./lora";
import { f32, fromBf16, i32, toBf16 } from "./tensor";
import { NativeArgumentError, NativeShapeError, NativeSlotError } from "./errors";
import { expectClose, randomArray, rng, sameBits } from "./test-helpers";

const RANKS = [1, 2, 4, 8, 16, 64, 128];

interface Site {
  hIn: number;
  widths: number[];
  keys: Array<Array<LoraSliceWeights | null>>;
}

/** Keys with the given ranks; every third key skips slice 1 (an adapter without k_proj, say). */
function makeSite(next: () => number, hIn: number, widths: number[], ranks: number[]): Site {
  const keys = ranks.map((rank, k) =>
    widths.map((width, s) =>
      widths.length > 1 && s === 1 && k % 3 === 2
        ? null
        : {
            rank,
            scale: 16 / Math.sqrt(rank),
            a: randomArray(next, rank * hIn, 0.2),
            b: randomArray(next, width * rank, 0.2),
          },
    ),
  );
  return { hIn, widths, keys };
}

/** fp64 oracle: y[r] + w_r · scale · B·(A·x) per slice, for each row's key. */
function oracle(
  site: Site,
  x: Float32Array,
  rowX: number[],
  rowKey: number[],
  rowWeight: number[] | null,
  y0: Float32Array,
  round: boolean,
): number[] {
  const nOut = site.widths.reduce((a, b) => a + b, 0);
  const y = Array.from(y0);
  const r16 = (a: Float32Array) => (round ? fromBf16(toBf16(a)) : a);
  rowKey.forEach((key, r) => {
    if (key < 0) return;
    let column = 0;
    site.widths.forEach((width, s) => {
      const w = site.keys[key]![s];
      if (w) {
        const A = r16(w.a),
          B = r16(w.b);
        const h = Array.from({ length: w.rank }, (_, j) => {
          let acc = 0;
          for (let i = 0; i < site.hIn; i++)
            acc += (A[j * site.hIn + i] as number) * (x[(rowX[r] as number) * site.hIn + i] as number);
          return acc;
        });
        for (let n = 0; n < width; n++) {
          let acc = 0;
          for (let j = 0; j < w.rank; j++) acc += (B[n * w.rank + j] as number) * (h[j] as number);
          y[r * nOut + column + n] =
            (y[r * nOut + column + n] as number) + acc * w.scale * (rowWeight ? (rowWeight[r] as number) : 1);
        }
      }
      column += width;
    });
  });
  return y;
}

describe("batched heterogeneous-rank LoRA (native) against the fp64 oracle", function () {
  this.timeout(60_000);
  const next = rng(2024);

  it("mixes ranks 1..128, tokens without adapter and unequal slice widths (q/k/v under GQA) in one call", async () => {
    const hIn = 67;
    const widths = [64, 16, 16];
    const site = makeSite(next, hIn, widths, RANKS);
    const T = 53;
    const slots = Array.from({ length: T }, (_, t) => (t % 9 === 4 ? -1 : Math.floor(next() * RANKS.length)));
    const x = randomArray(next, T * hIn);
    const nOut = 96;
    const y0 = randomArray(next, T * nOut);
    for (const dtype of ["f32", "bf16"] as const) {
      const weights = packLoraWeights(site.keys, hIn, widths, dtype);
      const y = f32([T, nOut], y0.slice());
      await native.loraApply(weights, f32([T, hIn], x), i32([T], slots), y);
      const want = oracle(
        site,
        x,
        slots.map((_, t) => t),
        slots,
        null,
        y0,
        dtype === "bf16",
      );
      expectClose(y.data, want, dtype === "f32" ? 1e-5 : 1e-5, `lora ${dtype}`);
    }
  });

  it("stores each adapter at its true rank (no padding to the maximum)", () => {
    const site = makeSite(next, 32, [8], [4, 128]);
    const weights = packLoraWeights(site.keys, 32, [8]);
    expect(weights.aPool.data.length).to.equal((4 + 128) * 32);
    expect(weights.bPool.data.length).to.equal(8 * (4 + 128));
    expect([...weights.rank.data]).to.deep.equal([4, 128]);
  });

  it("accepts bf16 activations", async () => {
    const hIn = 40,
      widths = [24],
      T = 9;
    const site = makeSite(next, hIn, widths, [8, 16]);
    const x = fromBf16(toBf16(randomArray(next, T * hIn)));
    const slots = [0, 1, 1, -1, 0, 0, 1, 0, 1];
    const y0 = new Float32Array(T * 24);
    const y = f32([T, 24]);
    await native.loraApply(
      packLoraWeights(site.keys, hIn, widths),
      { dtype: "bf16", shape: [T, hIn], data: toBf16(x) },
      i32([T], slots),
      y,
    );
    expectClose(
      y.data,
      oracle(
        site,
        x,
        slots.map((_, t) => t),
        slots,
        null,
        y0,
        false,
      ),
      1e-5,
      "bf16 x",
    );
  });

  it("gives identical bits with 1 and 2 threads and on the scalar and AVX2 paths", async () => {
    const hIn = 301,
      widths = [200, 50],
      T = 96;
    const site = makeSite(next, hIn, widths, RANKS);
    const weights = packLoraWeights(site.keys, hIn, widths);
    const x = f32([T, hIn], randomArray(next, T * hIn));
    const slots = i32(
      [T],
      Array.from({ length: T }, () => Math.floor(next() * (RANKS.length + 1)) - 1),
    );
    const y0 = randomArray(next, T * 250);
    const run = async (threads: number, simd: boolean) => {
      native.setNumThreads(threads);
      native.setSimd(simd);
      const y = f32([T, 250], y0.slice());
      await native.loraApply(weights, x, slots, y);
      return y.data;
    };
    const hasSimd = native.simdEnabled();
    try {
      const base = await run(1, hasSimd);
      expect(sameBits(base, await run(2, hasSimd)), "1 vs 2 threads").to.equal(true);
      if (hasSimd) expect(sameBits(base, await run(2, false)), "AVX2 vs scalar").to.equal(true);
      expectClose(
        base,
        oracle(site, x.data, [...Array(T).keys()], [...slots.data], null, y0, false),
        1e-5,
        "vs oracle",
      );
    } finally {
      native.setNumThreads(0);
      native.setSimd(hasSimd);
    }
  });

  it("keeps its bits and never hangs across many thread-pool resizes (a late worker never joins a stale job)", async () => {
    const hIn = 64,
      widths = [32],
      T = 24;
    const site = makeSite(next, hIn, widths, RANKS);
    const weights = packLoraWeights(site.keys, hIn, widths);
    const x = f32([T, hIn], randomArray(next, T * hIn));
    const slots = i32(
      [T],
      Array.from({ length: T }, () => Math.floor(next() * (RANKS.length + 1)) - 1),
    );
    const y0 = randomArray(next, T * 32);
    const run = async (threads: number) => {
      native.setNumThreads(threads);
      const y = f32([T, 32], y0.slice());
      await native.loraApply(weights, x, slots, y);
      return y.data;
    };
    try {
      const base = await run(1);
      for (let i = 0; i < 200; i++) expect(sameBits(base, await run(1 + (i % 2))), `resize ${i}`).to.equal(true);
    } finally {
      native.setNumThreads(0);
    }
  });

  it("MoE variant: keys are (adapter, expert), rows are routed token–expert pairs, routing weight applied", async () => {
    const hIn = 48,
      widths = [40],
      experts = 4,
      slots = 3,
      T = 11,
      topK = 2;
    // key = slot*experts + expert, with ranks varying across experts of one adapter
    const ranks = Array.from({ length: slots * experts }, (_, k) => RANKS[(k * 5) % RANKS.length] as number);
    const site = makeSite(next, hIn, widths, ranks);
    const x = randomArray(next, T * hIn);
    const rowToken: number[] = [],
      rowSlot: number[] = [],
      rowExpert: number[] = [],
      rowWeight: number[] = [];
    for (let t = 0; t < T; t++) {
      const slot = t % 5 === 0 ? -1 : t % slots;
      for (let j = 0; j < topK; j++) {
        rowToken.push(t);
        rowSlot.push(slot);
        rowExpert.push((t + j * 3) % experts);
        rowWeight.push(next());
      }
    }
    const R = rowToken.length;
    const y0 = randomArray(next, R * 40);
    const weights = packLoraWeights(site.keys, hIn, widths);
    for (const withWeight of [true, false]) {
      const y = f32([R, 40], y0.slice());
      await native.loraApplyMoe(
        weights,
        experts,
        f32([T, hIn], x),
        i32([R], rowToken),
        i32([R], rowSlot),
        i32([R], rowExpert),
        withWeight ? f32([R], rowWeight) : null,
        y,
      );
      const keys = rowSlot.map((s, r) => (s < 0 ? -1 : s * experts + (rowExpert[r] as number)));
      expectClose(
        y.data,
        oracle(site, x, rowToken, keys, withWeight ? rowWeight.map((w) => Math.fround(w)) : null, y0, false),
        1e-5,
        `moe weight=${withWeight}`,
      );
    }
  });

  it("rejects bad slots, shapes, ranks and offsets with typed errors and leaves y untouched", async () => {
    const hIn = 16,
      widths = [8];
    const site = makeSite(next, hIn, widths, [4, 8]);
    const weights = packLoraWeights(site.keys, hIn, widths);
    const x = f32([3, hIn], randomArray(next, 3 * hIn));
    const y = f32([3, 8], new Float32Array(24).fill(7));
    const rejects = (p: Promise<void>) =>
      p.then(
        () => expect.fail("should reject"),
        (e: unknown) => e,
      );

    expect(await rejects(native.loraApply(weights, x, i32([3], [0, 2, -1]), y))).to.be.instanceOf(NativeSlotError);
    expect(await rejects(native.loraApply(weights, x, i32([3], [0, -2, 1]), y))).to.be.instanceOf(NativeSlotError);
    expect(await rejects(native.loraApply(weights, x, i32([2], [0, 1]), y))).to.be.instanceOf(NativeShapeError);
    expect(await rejects(native.loraApply(weights, x, i32([3], [0, 1, 1]), f32([3, 9])))).to.be.instanceOf(
      NativeShapeError,
    );
    expect(await rejects(native.loraApply({ ...weights, maxRank: 4 }, x, i32([3], [0, 1, 1]), y))).to.be.instanceOf(
      NativeArgumentError,
    );
    const lying = { ...weights, aOffset: { ...weights.aOffset, data: BigInt64Array.from([0n, 10_000n]) } };
    expect(await rejects(native.loraApply(lying, x, i32([3], [0, 1, 1]), y))).to.be.instanceOf(NativeShapeError);
    expect(
      await rejects(native.loraApplyMoe(weights, 2, x, null, i32([3], [0, 0, 0]), i32([3], [0, 2, 1]), null, y)),
    ).to.be.instanceOf(NativeSlotError);
    expect([...y.data].every((v) => v === 7)).to.equal(true);
    expect(() =>
      packLoraWeights(
        [[{ rank: 300, scale: 1, a: new Float32Array(300 * 16), b: new Float32Array(8 * 300) }]],
        16,
        [8],
      ),
    ).to.throw(NativeArgumentError, /rank 300/);
  });
});
