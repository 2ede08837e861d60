/**
 * The base model's tokenizer (`tokenizer.json` through @huggingface/tokenizers), its chat template
 * (`tokenizer_config.json` through @huggingface/jinja) and BOS/EOS handling as the configs say.
 */
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { Template } from "@huggingface/jinja";
import * as tokenizers from "@huggingface/tokenizers";
import { FailedPreconditionError, InvalidArgumentError } from "@loramesh/errors";

export interface ChatMessage {
  role: string;
  content: string;
}

type Json = Record<string, unknown>;

/** The part of @huggingface/tokenizers we use (its bundled .d.ts files do not resolve under node16). */
interface HfTokenizer {
  encode(text: string, options: { add_special_tokens: boolean }): { ids: number[] };
  decode(ids: number[], options: { skip_special_tokens: boolean; clean_up_tokenization_spaces: boolean }): string;
  token_to_id(token: string): number | undefined;
}
const HfTokenizerClass = (tokenizers as unknown as { Tokenizer: new (json: object, config: object) => HfTokenizer })
  .Tokenizer;

export class Tokenizer {
  private readonly template: Template | undefined;
  readonly bosToken: string | undefined;
  readonly eosToken: string | undefined;
  /** Token ids that end generation (from the tokenizer and generation configs). */
  readonly eosTokenIds: number[];
  readonly bosTokenId: number | undefined;
  /** Decoding cleans up spaces before punctuation: a rewrite across tokens, so text is not local. */
  readonly cleanUpSpaces: boolean;

  private constructor(
    private readonly inner: HfTokenizer,
    config: Json,
    eosIds: number[],
  ) {
    const tokenText = (v: unknown): string | undefined =>
      typeof v === "string"
        ? v
        : typeof v === "object" && v !== null && typeof (v as Json)["content"] === "string"
          ? ((v as Json)["content"] as string)
          : undefined;
    this.bosToken = tokenText(config["bos_token"]);
    this.eosToken = tokenText(config["eos_token"]);
    this.bosTokenId = this.bosToken !== undefined ? inner.token_to_id(this.bosToken) : undefined;
    const eosFromToken = this.eosToken !== undefined ? inner.token_to_id(this.eosToken) : undefined;
    this.eosTokenIds = [...new Set([...eosIds, ...(eosFromToken !== undefined ? [eosFromToken] : [])])];
    this.cleanUpSpaces = config["clean_up_tokenization_spaces"] === true;
    const chat = config["chat_template"];
    if (typeof chat === "string") this.template = new Template(chat);
  }

  /** Loads tokenizer.json and tokenizer_config.json from a model directory. */
  static load(dir: string, eosTokenIds: number[] = []): Tokenizer {
    const path = join(dir, "tokenizer.json");
    if (!existsSync(path)) throw new FailedPreconditionError(`${dir} has no tokenizer.json`);
    let json: Json,
      config: Json = {};
    try {
      json = JSON.parse(readFileSync(path, "utf8")) as Json;
      const configPath = join(dir, "tokenizer_config.json");
      if (existsSync(configPath)) config = JSON.parse(readFileSync(configPath, "utf8")) as Json;
    } catch (err) {
      throw new InvalidArgumentError(`cannot read the tokenizer in ${dir}: ${(err as Error).message}`, { cause: err });
    }
    let generationEos: number[] = [];
    const genPath = join(dir, "generation_config.json");
    if (existsSync(genPath)) {
      const gen = JSON.parse(readFileSync(genPath, "utf8")) as Json;
      const e = gen["eos_token_id"];
      generationEos = typeof e === "number" ? [e] : Array.isArray(e) ? (e as number[]) : [];
    }
    return new Tokenizer(new HfTokenizerClass(json, config), config, [...eosTokenIds, ...generationEos]);
  }

  /** Token ids of `text`; special tokens (BOS) are added as the tokenizer's post-processor says. */
  encode(text: string, addSpecialTokens = true): number[] {
    return this.inner.encode(text, { add_special_tokens: addSpecialTokens }).ids;
  }

  decode(ids: readonly number[], skipSpecialTokens = true): string {
    return this.inner.decode([...ids], {
      skip_special_tokens: skipSpecialTokens,
      clean_up_tokenization_spaces: this.cleanUpSpaces,
    });
  }

  /** The chat template applied to messages, ending with the generation prompt. */
  applyChatTemplate(messages: ChatMessage[]): string {
    if (!this.template) throw new FailedPreconditionError("the model's tokenizer_config.json has no chat_template");
    return this.template.render({
      messages,
      add_generation_prompt: true,
      bos_token: this.bosToken ?? "",
      eos_token: this.eosToken ?? "",
    });
  }

  /** A decoder for one sequence's generated tokens that yields text as it becomes complete. */
  incremental(): IncrementalDecoder {
    return new IncrementalDecoder(this);
  }
}

/**
 * Streaming detokenization: emits the new suffix of the decoded text, holding it back while it
 * ends in U+FFFD (a UTF-8 character split across tokens). `flush` releases the rest.
 *
 * Only a window is decoded per push, not the whole sequence (that made a sequence's detokenization
 * quadratic in its length: the largest JavaScript cost per streamed token). The window starts at
 * the tokens settled by the previous push, which stay in it as context, so decoders that depend on
 * a token's left neighbour (a stripped leading space, a byte split across tokens) decode it as the
 * whole text would; the window's text past its context's is what the new tokens add. A decoder
 * that rewrites across the seam (its context text is not a prefix of the window's) gets the whole
 * sequence decoded instead, so `fullText` is always the text of all tokens; so does a tokenizer
 * that cleans up spaces (a rewrite a seam check cannot see).
 */
export class IncrementalDecoder {
  private readonly ids: number[] = [];
  private emitted = 0;
  private text = "";
  /** First token of the decoded window (the context's first). */
  private from = 0;
  /** Tokens settled: their text (`settledText`) ended on a whole character. */
  private settled = 0;
  private settledText = "";
  /** The text of the context alone, ids[from, settled). */
  private contextText = "";

  constructor(private readonly tokenizer: Tokenizer) {}

  /** Adds tokens; returns text that is now complete. */
  push(ids: readonly number[]): string {
    for (const id of ids) this.ids.push(id);
    const window = this.tokenizer.cleanUpSpaces ? undefined : this.tokenizer.decode(this.ids.slice(this.from));
    this.text =
      window?.startsWith(this.contextText) === true
        ? this.settledText + window.slice(this.contextText.length)
        : this.tokenizer.decode(this.ids);
    if (this.text.endsWith("\uFFFD")) return "";
    // The tokens since the last settle become the next window's context.
    if (!this.tokenizer.cleanUpSpaces && this.settled < this.ids.length) {
      this.from = this.settled;
      this.settled = this.ids.length;
      this.settledText = this.text;
      this.contextText = this.tokenizer.decode(this.ids.slice(this.from));
    }
    return this.take();
  }

  /** Everything not yet returned. */
  flush(): string {
    return this.take();
  }

  /** All text decoded so far. */
  get fullText(): string {
    return this.text;
  }

  private take(): string {
    const delta = this.text.slice(this.emitted);
    this.emitted = this.text.length;
    return delta;
  }
}
