/** What the mesh benchmark's same-host and cross-host (UCX) parts share: adapters, statistics, the decode step. */
import { join } from "node:path";
import { BUNDLED_ADAPTERS } from "@loramesh/cli";
import { DeadlineExceededError } from "@loramesh/errors";
import { LoraMeshClient } from "@loramesh/sdk";

export const ADAPTERS = ["big-r64", "chat-r16-all", "math-r4-mlp", "pattern-r8", "rslora-r32", "sql-r8"];

export function percentile(values: number[], p: number): number {
  const s = [...values].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((s.length * p) / 100))] as number;
}

export function median(values: number[]): number {
  const s = [...values].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)] as number;
}

export const round = (v: number, digits = 1): number => Number(v.toFixed(digits));

/** Every wait of the benchmark is bounded: a stuck phase fails with what it was waiting for. */
export const PHASE_MS = 180_000;
export async function within<T>(what: string, work: Promise<T>, ms = PHASE_MS): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const limit = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () => reject(new DeadlineExceededError(`mesh bench: ${what} did not finish within ${ms} ms`)),
      ms,
    );
  });
  try {
    return await Promise.race([work, limit]);
  } finally {
    clearTimeout(timer);
  }
}

/** Registers the bundled adapters through the router and waits until each is loaded. */
export async function registerAdapters(routerAddress: string): Promise<void> {
  const client = new LoraMeshClient({ address: routerAddress, defaultDeadlineMs: PHASE_MS });
  try {
    for (const name of ADAPTERS) {
      await within(`registering adapter ${name}`, client.registerAdapter(name, join(BUNDLED_ADAPTERS, name)));
      await within(
        `loading adapter ${name}`,
        (async () => {
          for await (const _ of client.watchAdapterLoad(name)) void _;
        })(),
      );
    }
  } finally {
    client.close();
  }
}

/**
 * Decode step time with `sequences` sequences decoding at once: median over the sequences. `timed`
 * runs just before and after the timed pass (not around the warm-up).
 */
export async function decodeStepMsOn(
  routerAddress: string,
  sequences: number,
  tokens: number,
  timed?: { before(): Promise<void>; after(): Promise<void> },
): Promise<number> {
  const client = new LoraMeshClient({ address: routerAddress, defaultDeadlineMs: 600_000 });
  // Each step emits one token per sequence, so a sequence's decode time over its tokens is the
  // step time (token events may reach the client in bursts, so single gaps mean little).
  const steps: number[] = [];
  const run = async (record: boolean) =>
    Promise.all(
      Array.from({ length: sequences }, async (_, i) => {
        let first: number | undefined;
        let last = 0;
        let count = 0;
        for await (const delta of client.generate({
          prompt: { $case: "text", value: `def forward(self, hidden_states): # sequence ${i}` },
          adapter: ADAPTERS[i % ADAPTERS.length],
          sampling: {
            maxTokens: tokens,
            temperature: 0,
            topP: 1,
            topK: 0,
            stop: [],
            stopTokenIds: [],
            ignoreEos: true,
          },
        })) {
          if (delta.tokenIds.length === 0) continue;
          const now = performance.now();
          if (first === undefined) first = now;
          else count += delta.tokenIds.length;
          last = now;
        }
        if (record && first !== undefined && count > 0) steps.push((last - first) / count);
      }),
    );
  try {
    await within("warm-up decoding", run(false), 600_000);
    await timed?.before();
    await within("decoding", run(true), 600_000);
    await timed?.after();
  } finally {
    client.close();
  }
  return round(percentile(steps, 50), 2);
}
