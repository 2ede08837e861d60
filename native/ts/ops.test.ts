import { expect } from "chai";
import { native } from "./index";
import { bf16, f32, fromBf16, i32, toBf16 } from "./tensor";
import { NativeArgumentError, NativeDTypeError, NativeShapeError, NativeSlotError } from "./errors";
import { expectClose, randomArray, rng } from "./test-helpers";

const dot = (a: ArrayLike<number>, ao: number, b: ArrayLike<number>, bo: number, n: number): number => {
  let s = 0;
  for (let i = 0; i < n; i++) s += (a[ao + i] as number) * (b[bo + i] as number);
  return s;
};

describe("native transformer ops against fp64 references", () => {
  const next = rng(42);

  it("reports its build and threads", () => {
    expect(native.version).to.match(/^loramesh-core /);
    expect(native.cudaDeviceCount()).to.be.a("number");
    expect(native.getNumThreads()).to.be.at.least(1);
  });

  it("embedding gathers f32 and bf16 rows and rejects an id outside the table", async () => {
    const V = 37,
      H = 19;
    const table = randomArray(next, V * H);
    const ids = [0, 36, 5, 5, 17];
    for (const tab of [f32([V, H], table), bf16([V, H], toBf16(table))]) {
      const out = f32([ids.length, H]);
      await native.embedding(tab, i32([ids.length], ids), out);
      const source = tab.dtype === "f32" ? table : fromBf16(tab.data);
      const want = ids.flatMap((id) => [...source.subarray(id * H, id * H + H)]);
      expect([...out.data]).to.deep.equal(want);
    }
    const err = await native.embedding(f32([V, H], table), i32([2], [3, V]), f32([2, H])).catch((e: unknown) => e);
    expect(err).to.be.instanceOf(NativeSlotError);
    expect((err as Error).message).to.contain("token id[1] = 37");
  });

  it("rmsnorm matches the Hugging Face formula on odd sizes", async () => {
    for (const [T, H] of [
      [1, 1],
      [3, 67],
      [5, 256],
    ] as const) {
      const x = randomArray(next, T * H, 3);
      const w = randomArray(next, H);
      const out = f32([T, H]);
      await native.rmsnorm(f32([T, H], x), f32([H], w), 1e-6, out);
      const want: number[] = [];
      for (let t = 0; t < T; t++) {
        const ms = dot(x, t * H, x, t * H, H) / H;
        const inv = 1 / Math.sqrt(ms + 1e-6);
        for (let i = 0; i < H; i++) want.push((w[i] as number) * (x[t * H + i] as number) * inv);
      }
      expectClose(out.data, want, 2e-6, `rmsnorm ${T}x${H}`);
    }
  });

  it("matmul x·Wᵀ + bias matches for f32 and bf16 weights on odd shapes", async () => {
    for (const [T, K, N] of [
      [1, 1, 1],
      [7, 33, 5],
      [13, 129, 70],
    ] as const) {
      const x = randomArray(next, T * K);
      const w = randomArray(next, N * K);
      const bias = randomArray(next, N);
      for (const weight of [f32([N, K], w), bf16([N, K], toBf16(w))]) {
        const wf = weight.dtype === "f32" ? w : fromBf16(weight.data);
        for (const b of [null, f32([N], bias)]) {
          const out = f32([T, N]);
          await native.matmul(f32([T, K], x), weight, b, out);
          const want: number[] = [];
          for (let t = 0; t < T; t++)
            for (let n = 0; n < N; n++) want.push(dot(x, t * K, wf, n * K, K) + (b ? (bias[n] as number) : 0));
          expectClose(out.data, want, 1e-5, `matmul ${T}x${K}x${N} ${weight.dtype}`);
        }
      }
    }
  });

  it("matmul results do not depend on the thread count", async () => {
    const x = randomArray(next, 9 * 300);
    const w = randomArray(next, 77 * 300);
    const run = async (threads: number) => {
      native.setNumThreads(threads);
      const out = f32([9, 77]);
      await native.matmul(f32([9, 300], x), f32([77, 300], w), null, out);
      return out.data;
    };
    const one = await run(1);
    const two = await run(2);
    native.setNumThreads(0);
    expect(Buffer.from(one.buffer).equals(Buffer.from(two.buffer))).to.equal(true);
  });

  it("rope rotates with rotate_half and each Hugging Face scaling", async () => {
    const headDim = 16;
    const base = 10000;
    const defaults = Array.from({ length: headDim / 2 }, (_, i) => 1 / Math.pow(base, (2 * i) / headDim));
    const checks: Array<[Parameters<typeof native.ropeInvFreq>[0], number, number[], number]> = [
      [{ type: "default", base, rotaryDim: headDim }, 0, defaults, 1],
      [{ type: "linear", base, rotaryDim: headDim, factor: 4 }, 0, defaults.map((f) => f / 4), 1],
      // dynamic NTK below the trained context is the default rope, above it a larger base
      [{ type: "dynamic", base, rotaryDim: headDim, factor: 2, maxPositionEmbeddings: 64 }, 32, defaults, 1],
      [
        { type: "dynamic", base, rotaryDim: headDim, factor: 2, maxPositionEmbeddings: 64 },
        128,
        (() => {
          const b = base * Math.pow((2 * 128) / 64 - 1, headDim / (headDim - 2));
          return defaults.map((_, i) => 1 / Math.pow(b, (2 * i) / headDim));
        })(),
        1,
      ],
    ];
    for (const [config, seqLen, want, scaling] of checks) {
      const got = native.ropeInvFreq(config, seqLen);
      expectClose(got.invFreq, want, 1e-6, `${config.type} inv_freq`);
      expect(got.attentionScaling).to.be.closeTo(scaling, 1e-7);
    }
    // llama3: long wavelengths divided by the factor, short ones kept, the middle band smoothed.
    const llama3 = native.ropeInvFreq({
      type: "llama3",
      base: 500000,
      rotaryDim: 128,
      factor: 8,
      lowFreqFactor: 1,
      highFreqFactor: 4,
      originalMaxPositionEmbeddings: 8192,
    });
    const raw = Array.from({ length: 64 }, (_, i) => 1 / Math.pow(500000, (2 * i) / 128));
    raw.forEach((f, i) => {
      const wavelen = (2 * Math.PI) / f;
      let want = f;
      if (wavelen > 8192) want = f / 8;
      else if (wavelen >= 8192 / 4) {
        const smooth = (8192 / wavelen - 1) / (4 - 1);
        want = (1 - smooth) * (f / 8) + smooth * f;
      }
      expect(llama3.invFreq[i]).to.be.closeTo(want, Math.abs(want) * 1e-6);
    });
    // yarn: attention scaling 0.1·ln(factor)+1, frequencies between interpolation and extrapolation.
    const yarn = native.ropeInvFreq({ type: "yarn", base, rotaryDim: 64, factor: 4, maxPositionEmbeddings: 2048 });
    expect(yarn.attentionScaling).to.be.closeTo(0.1 * Math.log(4) + 1, 1e-6);
    const pos = Array.from({ length: 32 }, (_, i) => 1 / Math.pow(base, (2 * i) / 64));
    expect(yarn.invFreq[0]).to.be.closeTo(pos[0] as number, 1e-7); // fastest: extrapolated
    expect(yarn.invFreq[31]).to.be.closeTo((pos[31] as number) / 4, ((pos[31] as number) / 4) * 1e-6); // slowest: interpolated
    expect(() => native.ropeInvFreq({ type: "yarn", base, rotaryDim: 7 })).to.throw(NativeArgumentError);

    // The rotation itself, with partial rotary dims and a scaling factor.
    const T = 3,
      heads = 2,
      rotary = 12;
    const x = randomArray(next, T * heads * headDim);
    const inv = native.ropeInvFreq({ type: "default", base, rotaryDim: rotary }).invFreq;
    const positions = [0, 5, 1000];
    const tensor = f32([T, heads, headDim], x.slice());
    await native.rope(tensor, i32([T], positions), f32([rotary / 2], inv), rotary, 1.5);
    const want = Array.from(x);
    for (let t = 0; t < T; t++)
      for (let h = 0; h < heads; h++)
        for (let i = 0; i < rotary / 2; i++) {
          const o = (t * heads + h) * headDim;
          const angle = Math.fround((positions[t] as number) * (inv[i] as number));
          const c = Math.cos(angle) * 1.5,
            s = Math.sin(angle) * 1.5;
          const x1 = x[o + i] as number,
            x2 = x[o + i + rotary / 2] as number;
          want[o + i] = x1 * c - x2 * s;
          want[o + i + rotary / 2] = x2 * c + x1 * s;
        }
    expectClose(tensor.data, want, 2e-6, "rope rotation");
  });

  it("attention over a paged cache matches for a mixed prefill/decode GQA batch, windows and bf16 caches", async () => {
    const heads = 4,
      kvHeads = 2,
      d = 8,
      blockSize = 4,
      blocks = 12,
      maxBlocks = 4;
    // Three sequences with scattered, non-contiguous blocks.
    const tables = [
      [3, 7, 1, 0],
      [5, 0, 0, 0],
      [2, 9, 11, 4],
    ];
    const lengths = [13, 1, 10];
    // Prefill all sequences fully: cache rows for every position.
    const seq: number[] = [],
      pos: number[] = [],
      slots: number[] = [];
    lengths.forEach((len, s) => {
      for (let p = 0; p < len; p++) {
        seq.push(s);
        pos.push(p);
        slots.push((tables[s]![Math.floor(p / blockSize)] as number) * blockSize + (p % blockSize));
      }
    });
    const T = seq.length;
    const k = randomArray(next, T * kvHeads * d),
      v = randomArray(next, T * kvHeads * d),
      q = randomArray(next, T * heads * d);
    for (const cacheType of ["f32", "bf16"] as const) {
      for (const window of [0, 3]) {
        const cacheShape = [blocks, blockSize, kvHeads, d];
        const kc = cacheType === "f32" ? f32(cacheShape) : bf16(cacheShape);
        const vc = cacheType === "f32" ? f32(cacheShape) : bf16(cacheShape);
        await native.kvCacheWrite(f32([T, kvHeads, d], k), f32([T, kvHeads, d], v), kc, vc, i32([T], slots));
        // The batch mixes a prefill chunk (seq 0, all positions), a decode (seq 1) and the last
        // token of seq 2 only.
        const batch = [...Array.from({ length: 13 }, (_, i) => i), 13, T - 1];
        const qb = new Float32Array(batch.length * heads * d);
        batch.forEach((t, b) => qb.set(q.subarray(t * heads * d, (t + 1) * heads * d), b * heads * d));
        const out = f32([batch.length, heads * d]);
        await native.attention(
          f32([batch.length, heads, d], qb),
          kc,
          vc,
          i32([3, maxBlocks], tables.flat()),
          i32(
            [batch.length],
            batch.map((t) => seq[t] as number),
          ),
          i32(
            [batch.length],
            batch.map((t) => pos[t] as number),
          ),
          0.3,
          window,
          out,
        );
        const round = (a: Float32Array) => (cacheType === "f32" ? a : fromBf16(toBf16(a)));
        const kr = round(k),
          vr = round(v);
        const want: number[] = [];
        for (const t of batch) {
          const s = seq[t] as number,
            p = pos[t] as number;
          const keys = seq
            .map((ss, i) => ({ ss, i }))
            .filter(
              ({ ss, i }) => ss === s && (pos[i] as number) <= p && (window === 0 || p - (pos[i] as number) < window),
            );
          for (let h = 0; h < heads; h++) {
            const kvh = Math.floor(h / (heads / kvHeads));
            const scores = keys.map(({ i }) => 0.3 * dot(q, (t * heads + h) * d, kr, (i * kvHeads + kvh) * d, d));
            const m = Math.max(...scores);
            const e = scores.map((x) => Math.exp(x - m));
            const z = e.reduce((a, b) => a + b, 0);
            for (let j = 0; j < d; j++)
              want.push(
                keys.reduce(
                  (acc, { i }, n) => acc + ((e[n] as number) / z) * (vr[(i * kvHeads + kvh) * d + j] as number),
                  0,
                ),
              );
          }
        }
        expectClose(out.data, want, 1e-5, `attention ${cacheType} window ${window}`);
      }
    }
    // A block table naming a block outside the cache is refused before anything runs.
    const bad = native.attention(
      f32([1, heads, d]),
      f32([blocks, blockSize, kvHeads, d]),
      f32([blocks, blockSize, kvHeads, d]),
      i32([1, 1], [blocks]),
      i32([1], [0]),
      i32([1], [0]),
      1,
      0,
      f32([1, heads * d]),
    );
    expect(await bad.catch((e: unknown) => e)).to.be.instanceOf(NativeSlotError);
  });

  it("silu_mul, add, moe routing, argmax and top-k match their definitions", async () => {
    const T = 5,
      I = 11;
    const gu = randomArray(next, T * 2 * I, 4);
    const out = f32([T, I]);
    await native.siluMul(f32([T, 2 * I], gu), out);
    const want: number[] = [];
    for (let t = 0; t < T; t++)
      for (let i = 0; i < I; i++) {
        const g = gu[t * 2 * I + i] as number;
        want.push((g / (1 + Math.exp(-g))) * (gu[t * 2 * I + I + i] as number));
      }
    expectClose(out.data, want, 1e-6, "silu_mul");

    const a = randomArray(next, 9),
      b = randomArray(next, 9);
    const sum = f32([9], a.slice());
    await native.add(sum, f32([9], b));
    expectClose(
      sum.data,
      Array.from(a, (x, i) => x + (b[i] as number)),
      1e-7,
      "add",
    );

    const E = 6,
      K = 2;
    const logits = randomArray(next, T * E, 3);
    logits[0] = 1;
    logits[1] = 1; // a tie: the lower index wins
    for (const renorm of [true, false]) {
      const experts = i32([T, K]),
        weights = f32([T, K]);
      await native.moeRoute(f32([T, E], logits), K, renorm, experts, weights);
      for (let t = 0; t < T; t++) {
        const row = Array.from(logits.subarray(t * E, t * E + E));
        const m = Math.max(...row);
        const p = row.map((x) => Math.exp(x - m));
        const z = p.reduce((x, y) => x + y, 0);
        const order = p
          .map((x, i) => [x / z, i] as const)
          .sort((x, y) => y[0] - x[0] || x[1] - y[1])
          .slice(0, K);
        const picked = order.reduce((s, [x]) => s + x, 0);
        expect([...experts.data.subarray(t * K, t * K + K)]).to.deep.equal(order.map(([, i]) => i));
        expectClose(
          weights.data.subarray(t * K, t * K + K),
          order.map(([x]) => (renorm ? x / picked : x)),
          1e-6,
          "moe weights",
        );
      }
    }

    const V = 101;
    const l = randomArray(next, 3 * V);
    l[V + 7] = 5;
    l[V + 60] = 5; // tie in row 1
    const am = i32([3]);
    await native.argmax(f32([3, V], l), am);
    const idx = i32([3, 4]),
      vals = f32([3, 4]);
    await native.topk(f32([3, V], l), 4, idx, vals);
    for (let r = 0; r < 3; r++) {
      const row = Array.from(l.subarray(r * V, r * V + V))
        .map((x, i) => [x, i] as const)
        .sort((x, y) => y[0] - x[0] || x[1] - y[1]);
      expect(am.data[r]).to.equal(row[0]![1]);
      expect([...idx.data.subarray(r * 4, r * 4 + 4)]).to.deep.equal(row.slice(0, 4).map(([, i]) => i));
    }
    expect(am.data[1]).to.equal(7); // the tie goes to the lower index
  });

  it("rejects bad inputs with typed errors instead of crashing", async () => {
    const rejects = async (p: Promise<void>) =>
      p.then(
        () => expect.fail("should reject"),
        (e: unknown) => e,
      );
    expect(await rejects(native.matmul(f32([2, 3]), f32([4, 5]), null, f32([2, 4])))).to.be.instanceOf(
      NativeShapeError,
    );
    // a typed array that does not match the dtype
    const wrong = { dtype: "f32", shape: [2], data: new Int32Array(2) } as unknown as ReturnType<typeof f32>;
    expect(await rejects(native.add(wrong, f32([2])))).to.be.instanceOf(NativeDTypeError);
    // a shape that does not describe the array
    expect(await rejects(native.add(f32([3], new Float32Array(2)), f32([3])))).to.be.instanceOf(NativeShapeError);
    expect(await rejects(native.rmsnorm(f32([1, 2]), f32([2]), 0, f32([1, 2])))).to.be.instanceOf(NativeArgumentError);
    expect(await rejects(native.topk(f32([1, 3]), 4, i32([1, 4]), f32([1, 4])))).to.be.instanceOf(NativeArgumentError);
    expect(await rejects(native.moeRoute(f32([1, 3]), 2, true, i32([1, 3]), f32([1, 2])))).to.be.instanceOf(
      NativeShapeError,
    );
    expect(await rejects(native.embedding(f32([2, 2]), f32([1]) as never, f32([1, 2])))).to.be.instanceOf(
      NativeDTypeError,
    );
  });

  it("runs off the JS thread: timers fire while a large matmul is in flight", async () => {
    const K = 2048,
      N = 2048,
      T = 32;
    const x = f32([T, K], randomArray(next, T * K));
    const w = f32([N, K], randomArray(next, N * K));
    // A blocking call would settle before any timer could run; an off-thread one lets a timer fire
    // while it is in flight. A busy machine can delay the timer past the end, so try a few times.
    let firedInFlight = false;
    for (let attempt = 0; attempt < 8 && !firedInFlight; attempt++) {
      let settled = false;
      const done = native.matmul(x, w, null, f32([T, N])).then(() => {
        settled = true;
      });
      await new Promise((r) => setTimeout(r, 0));
      firedInFlight = !settled;
      await done;
    }
    expect(firedInFlight, "a timer fired while the matmul was in flight").to.equal(true);
  });
});
