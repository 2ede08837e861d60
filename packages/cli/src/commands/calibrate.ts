import { writeFileSync } from "node:fs";
import { hostname, cpus } from "node:os";
import { resolve } from "node:path";
import { credentials, Metadata, Server, ServerCredentials, type ServiceDefinition } from "@grpc/grpc-js";
import { formatOptionsHelp, loadConfig, stringOption } from "@loramesh/core";
import { KvCache, forward, loadAdapter, Model } from "@loramesh/engine";
import { f32, i32, native, packLoraWeights } from "@loramesh/native";
import { DEFAULT_CALIBRATION, fitLine, type Calibration } from "@loramesh/policy";
import type { Command } from "../command";
import { BUNDLED_ADAPTERS, BUNDLED_MODEL } from "./up";

const options = {
  model: stringOption({
    flag: "model",
    default: "",
    description: "model whose base step is measured (default: the bundled tiny-llama)",
  }),
  out: stringOption({ flag: "out", default: "calibration.json", description: "file to write" }),
};

async function median(fn: () => Promise<void>, reps = 15): Promise<number> {
  await fn();
  const t: number[] = [];
  for (let i = 0; i < reps; i++) {
    const s = performance.now();
    await fn();
    t.push((performance.now() - s) * 1000);
  }
  return t.sort((a, b) => a - b)[Math.floor(reps / 2)] as number;
}

/** A loopback gRPC echo of raw bytes: the cost of a round trip carrying `bytes`. */
async function grpcRoundTrips(sizes: number[]): Promise<Array<[number, number]>> {
  const def: ServiceDefinition = {
    echo: {
      path: "/calibrate.Echo/Echo",
      requestStream: false,
      responseStream: false,
      requestSerialize: (b: Buffer) => b,
      requestDeserialize: (b: Buffer) => b,
      responseSerialize: (b: Buffer) => b,
      responseDeserialize: (b: Buffer) => b,
    },
  };
  const server = new Server({ "grpc.max_receive_message_length": 64 << 20, "grpc.max_send_message_length": 64 << 20 });
  server.addService(def, {
    echo: (call: { request: Buffer }, cb: (e: null, r: Buffer) => void) => cb(null, call.request),
  });
  const port = await new Promise<number>((res, rej) =>
    server.bindAsync("127.0.0.1:0", ServerCredentials.createInsecure(), (e, p) => (e ? rej(e) : res(p))),
  );
  const { makeGenericClientConstructor } = await import("@grpc/grpc-js");
  const Client = makeGenericClientConstructor(def, "Echo");
  const client = new Client(`127.0.0.1:${port}`, credentials.createInsecure(), {
    "grpc.max_receive_message_length": 64 << 20,
    "grpc.max_send_message_length": 64 << 20,
  }) as unknown as {
    echo(req: Buffer, md: Metadata, cb: (e: Error | null) => void): void;
    close(): void;
  };
  const out: Array<[number, number]> = [];
  for (const size of sizes) {
    const payload = Buffer.alloc(size, 7);
    out.push([
      size / 1024,
      await median(
        () => new Promise((res, rej) => client.echo(payload, new Metadata(), (e) => (e ? rej(e) : res()))),
        40,
      ),
    ]);
  }
  client.close();
  server.forceShutdown();
  return out;
}

/** `loramesh calibrate`: measures the cost model's parameters on this machine. */
export const calibrateCommand: Command = {
  name: "calibrate",
  summary: "measure the cost model (base step, LoRA per token×rank, transports) on this machine",
  help: () => `Usage: loramesh calibrate [--model DIR] [--out FILE]\n\nOptions:\n${formatOptionsHelp(options)}\n`,
  async run(argv) {
    const { config } = loadConfig(options, argv);
    const modelDir = config.model === "" ? BUNDLED_MODEL : resolve(config.model);
    const model = Model.load(modelDir);
    const c = model.config;
    process.stderr.write("calibrate: base step\n");
    const cache = new KvCache(c.numLayers, 256, 16, c.numKvHeads, c.headDim);
    const base: Array<[number, number]> = [];
    for (const tokens of [1, 4, 16, 64, 256]) {
      const table: number[] = [];
      cache.ensure(table, tokens);
      base.push([
        tokens,
        await median(
          async () =>
            void (await forward(model, cache, undefined, [
              {
                tokens: Array.from({ length: tokens }, (_, i) => (i % 200) + 3),
                startPosition: 0,
                blockTable: table,
                adapterId: undefined,
                logits: "last",
              },
            ])),
        ),
      ]);
      cache.release(table);
    }
    process.stderr.write("calibrate: LoRA site\n");
    const h = c.hiddenSize;
    const lora: Array<[number, number]> = [];
    for (const rank of [8, 32, 128]) {
      for (const tokens of [1, 16, 128]) {
        const keys = [
          [{ rank, scale: 1, a: new Float32Array(rank * h).fill(0.01), b: new Float32Array(h * rank).fill(0.01) }],
        ];
        const w = packLoraWeights(keys, h, [h]);
        const x = f32([tokens, h], new Float32Array(tokens * h).fill(0.1));
        const slots = i32([tokens], new Int32Array(tokens));
        const y = f32([tokens, h]);
        lora.push([tokens * rank, await median(() => native.loraApply(w, x, slots, y), 30)]);
      }
    }
    process.stderr.write("calibrate: transports\n");
    const grpc = await grpcRoundTrips([1024, 64 * 1024, 1024 * 1024]);
    const control = (await grpcRoundTrips([64]))[0]?.[1] ?? 0;
    const copy: Array<[number, number]> = [];
    for (const kib of [1, 64, 1024]) {
      const src = new Float32Array((kib * 1024) / 4).fill(1),
        dst = new Float32Array(src.length);
      copy.push([kib, (await median(async () => void dst.set(src), 40)) * 2]);
    }
    process.stderr.write("calibrate: adapter load from storage\n");
    const adapterDir = resolve(BUNDLED_ADAPTERS, "big-r64");
    let loaded = 0;
    const loadUs = await median(async () => {
      loaded = loadAdapter(adapterDir, c).sizeBytes;
    }, 9);
    const baseFit = fitLine(base),
      loraFit = fitLine(lora),
      grpcFit = fitLine(grpc),
      copyFit = fitLine(copy);
    const calibration: Calibration = {
      ...DEFAULT_CALIBRATION,
      machine: `${hostname()}, ${cpus().length} cores, CPU kernels, ${native.simdEnabled() ? "AVX2" : "scalar"}`,
      measuredAt: new Date().toISOString().slice(0, 10),
      model: modelDir.split("/").pop() ?? modelDir,
      baseFixedUs: baseFit.intercept,
      baseUsPerToken: baseFit.slope,
      loraFixedUs: loraFit.intercept,
      loraUsPerTokenRank: loraFit.slope,
      loraUsPerAdapter: DEFAULT_CALIBRATION.loraUsPerAdapter,
      sitesPerStep: 4 * c.numLayers,
      hiddenSize: h,
      loadSecondsPerMiB: loadUs / 1e6 / (loaded / (1024 * 1024)),
      // A streamed token crosses two gRPC hops (worker → router → client) as a small message:
      // about one small-message round trip.
      tokenStreamUs: control,
      transport: {
        grpc: { fixedUs: grpcFit.intercept, usPerKiB: grpcFit.slope },
        shm: { fixedUs: control, usPerKiB: copyFit.slope },
      },
    };
    writeFileSync(config.out, `${JSON.stringify({ ...calibration, samples: { base, lora, grpc, copy } }, null, 2)}\n`);
    process.stdout.write(`wrote ${config.out}\n${JSON.stringify(calibration, null, 2)}\n`);
    return 0;
  },
};
