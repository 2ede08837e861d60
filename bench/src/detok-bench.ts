/**
 * Detokenization benchmark (not a test): JavaScript CPU per streamed token of a sequence's
 * incremental detokenization (the worker's per-token text), the window decoder against decoding the
 * whole sequence per token (what it did before), on the bundled tiny-llama tokenizer and real
 * generated text. CPU time of this process (`process.cpuUsage`), median of the repeats.
 *
 *   node bench/dist/detok-bench.js [--tokens 64,256] [--repeats 50]
 */
import { join } from "node:path";
import { intOption, loadConfig, stringOption } from "@loramesh/core";
import { Tokenizer } from "@loramesh/formats";
import { GOLDEN_DIR } from "@loramesh/testing";
import { median, round } from "./mesh-bench-common";

const TEXT =
  "The mesh streams each token as the step produces it: naïve café, Grüße, 世界, ✓. " +
  "A worker decodes the text of its sequences incrementally, and the router forwards it. ";

/** CPU µs per token of streaming `ids` through `push`. */
function cpuUsPerToken(ids: readonly number[], push: (id: number) => void): number {
  const t0 = process.cpuUsage();
  for (const id of ids) push(id);
  const t = process.cpuUsage(t0);
  return (t.user + t.system) / ids.length;
}

function main(): void {
  const { config } = loadConfig(
    {
      tokens: stringOption({ flag: "tokens", default: "64,256", description: "sequence lengths in tokens" }),
      repeats: intOption({ flag: "repeats", default: 50, min: 1, description: "sequences per case (median)" }),
    },
    process.argv.slice(2),
  );
  const tok = Tokenizer.load(join(GOLDEN_DIR, "models", "tiny-llama"), []);
  const all = tok.encode(TEXT.repeat(20), false);
  const out: Record<string, { window_us_per_token: number; whole_us_per_token: number }> = {};
  for (const n of config.tokens.split(",").map(Number)) {
    const ids = all.slice(0, n);
    const window: number[] = [];
    const whole: number[] = [];
    for (let r = 0; r < config.repeats; r++) {
      const dec = tok.incremental();
      window.push(cpuUsPerToken(ids, (id) => dec.push([id])));
      const sofar: number[] = [];
      whole.push(
        cpuUsPerToken(ids, (id) => {
          sofar.push(id);
          tok.decode(sofar);
        }),
      );
    }
    out[String(n)] = { window_us_per_token: round(median(window)), whole_us_per_token: round(median(whole)) };
  }
  console.log(JSON.stringify(out));
}

main();
