/**
 * A SentencePiece-style vocabulary for synthetic models, laid out as Llama's: <unk>, <s>, </s>, the
 * 256 byte tokens <0x00>..<0xFF>, then pieces. Written both as a Hugging Face tokenizer.json (BPE
 * with byte fallback) and as GGUF tokenizer metadata, so both engines agree on every id.
 */
import type { GgufValue } from "./gguf-writer";

export interface Vocab {
  tokens: string[];
  scores: number[];
  /** llama.cpp token types: 1 normal, 2 unknown, 3 control, 6 byte. */
  types: number[];
}

const PIECE_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.,!?'-";

export function buildVocab(size: number): Vocab {
  const tokens = ["<unk>", "<s>", "</s>"];
  const types = [2, 3, 3];
  for (let b = 0; b < 256; b++) {
    tokens.push(`<0x${b.toString(16).toUpperCase().padStart(2, "0")}>`);
    types.push(6);
  }
  const pieces = ["▁", ...PIECE_CHARS];
  for (const c of PIECE_CHARS) pieces.push(`▁${c}`);
  for (let i = 0; tokens.length + pieces.length < size; i++) pieces.push(`▁w${i}`);
  for (const p of pieces) {
    if (tokens.length >= size) break;
    tokens.push(p);
    types.push(1);
  }
  if (tokens.length < size) throw new Error(`vocabulary of ${size} is too small for the byte tokens`);
  const scores = tokens.map((_, i) => (i < 259 ? 0 : -i));
  return { tokens, scores, types };
}

/** Hugging Face tokenizer.json: BPE with byte fallback, Llama's normalizer and decoder. */
export function hfTokenizerJson(v: Vocab): Record<string, unknown> {
  const vocab: Record<string, number> = {};
  v.tokens.forEach((t, i) => (vocab[t] = i));
  const merges: string[] = [];
  for (let i = 259; i < v.tokens.length; i++) {
    const t = v.tokens[i] as string;
    // Two-character pieces are reachable from their characters.
    if ([...t].length === 2 && vocab[t[0] as string] !== undefined && vocab[[...t][1] as string] !== undefined) {
      merges.push(`${t[0]} ${[...t][1]}`);
    }
  }
  const special = (id: number) => ({
    id,
    content: v.tokens[id],
    single_word: false,
    lstrip: false,
    rstrip: false,
    normalized: false,
    special: true,
  });
  return {
    version: "1.0",
    truncation: null,
    padding: null,
    added_tokens: [special(0), special(1), special(2)],
    normalizer: {
      type: "Sequence",
      normalizers: [
        { type: "Prepend", prepend: "▁" },
        { type: "Replace", pattern: { String: " " }, content: "▁" },
      ],
    },
    pre_tokenizer: null,
    post_processor: {
      type: "TemplateProcessing",
      single: [{ SpecialToken: { id: "<s>", type_id: 0 } }, { Sequence: { id: "A", type_id: 0 } }],
      pair: [
        { SpecialToken: { id: "<s>", type_id: 0 } },
        { Sequence: { id: "A", type_id: 0 } },
        { Sequence: { id: "B", type_id: 0 } },
      ],
      special_tokens: { "<s>": { id: "<s>", ids: [1], tokens: ["<s>"] } },
    },
    decoder: {
      type: "Sequence",
      decoders: [
        { type: "Replace", pattern: { String: "▁" }, content: " " },
        { type: "ByteFallback" },
        { type: "Fuse" },
        { type: "Strip", content: " ", start: 1, stop: 0 },
      ],
    },
    model: {
      type: "BPE",
      dropout: null,
      unk_token: "<unk>",
      continuing_subword_prefix: null,
      end_of_word_suffix: null,
      fuse_unk: true,
      byte_fallback: true,
      ignore_merges: false,
      vocab,
      merges,
    },
  };
}

export function ggufTokenizerMetadata(v: Vocab): Array<[string, GgufValue]> {
  return [
    ["tokenizer.ggml.model", { type: "string", value: "llama" }],
    ["tokenizer.ggml.tokens", { type: "string[]", value: v.tokens }],
    ["tokenizer.ggml.scores", { type: "f32[]", value: v.scores }],
    ["tokenizer.ggml.token_type", { type: "i32[]", value: v.types }],
    ["tokenizer.ggml.bos_token_id", { type: "u32", value: 1 }],
    ["tokenizer.ggml.eos_token_id", { type: "u32", value: 2 }],
    ["tokenizer.ggml.unknown_token_id", { type: "u32", value: 0 }],
    ["tokenizer.ggml.add_bos_token", { type: "bool", value: true }],
  ];
}
