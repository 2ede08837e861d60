/**
 * One OpenAI request as domain generations: each prompt × `n` choices runs through the router
 * domain concurrently; deltas are tagged with their choice index.
 */
import { randomUUID } from "node:crypto";
import type { Router } from "../domain/router";
import type { FinishReason, Prompt, Sampling, TokenDelta, TokenLogprob, Usage } from "../domain/types";

export interface ChoiceJob {
  index: number;
  /** Which prompt of the request (usage counts each prompt once, as OpenAI does). */
  promptIndex: number;
  prompt: Prompt;
  sampling: Sampling;
}

export interface ChoiceResult {
  index: number;
  text: string;
  finishReason: "stop" | "length";
  usage: Usage;
  /** Per generated token when the request asked for logprobs; empty otherwise. */
  logprobs: TokenLogprob[];
}

export interface RequestRun {
  tenant: string;
  adapter: string;
  signal: AbortSignal;
  onDelta?: (index: number, delta: TokenDelta) => void;
  /** Called as each choice ends (streams send its finish chunk then). */
  onFinish?: (result: ChoiceResult) => void;
}

/** Prompts × n choices; with a seed, choice i of a prompt uses seed + i so choices differ. */
export function choiceJobs(prompts: Prompt[], n: number, sampling: Sampling): ChoiceJob[] {
  return prompts.flatMap((prompt, p) =>
    Array.from({ length: n }, (_, i) => ({
      index: p * n + i,
      promptIndex: p,
      prompt,
      sampling: sampling.seed !== undefined ? { ...sampling, seed: (sampling.seed + i) >>> 0 } : sampling,
    })),
  );
}

const openAIFinish = (r: FinishReason): "stop" | "length" => (r === "length" ? "length" : "stop");

export async function runChoices(router: Router, jobs: ChoiceJob[], run: RequestRun): Promise<ChoiceResult[]> {
  // One failing choice ends the others too.
  const aborter = new AbortController();
  const abort = (): void => aborter.abort();
  run.signal.addEventListener("abort", abort);
  try {
    return await Promise.all(
      jobs.map(async (job) => {
        let text = "";
        const logprobs: TokenLogprob[] = [];
        const result = await router
          .generate(
            run.tenant,
            {
              requestId: randomUUID(),
              adapter: run.adapter,
              prompt: job.prompt,
              sampling: job.sampling,
              sloClass: "unspecified",
            },
            {
              signal: aborter.signal,
              onDelta: (delta) => {
                text += delta.text;
                if (delta.logprobs) logprobs.push(...delta.logprobs);
                run.onDelta?.(job.index, delta);
              },
            },
          )
          .catch((err: unknown) => {
            aborter.abort();
            throw err;
          });
        const done: ChoiceResult = {
          index: job.index,
          text,
          finishReason: openAIFinish(result.finishReason),
          usage: result.usage,
          logprobs,
        };
        run.onFinish?.(done);
        return done;
      }),
    );
  } finally {
    run.signal.removeEventListener("abort", abort);
  }
}

/** OpenAI usage: each prompt counted once, completions summed over choices. */
export function totalUsage(
  jobs: ChoiceJob[],
  results: ChoiceResult[],
): { prompt_tokens: number; completion_tokens: number; total_tokens: number } {
  const promptTokens = new Map<number, number>();
  let completion = 0;
  for (const r of results) {
    const job = jobs[r.index] as ChoiceJob;
    promptTokens.set(job.promptIndex, r.usage.promptTokens);
    completion += r.usage.completionTokens;
  }
  const prompt = [...promptTokens.values()].reduce((a, b) => a + b, 0);
  return { prompt_tokens: prompt, completion_tokens: completion, total_tokens: prompt + completion };
}
