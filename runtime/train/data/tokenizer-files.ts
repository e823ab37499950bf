/**
 * Writes a trained byte-level BPE model in the Hugging Face formats the runtime loads:
 * tokenizer.json (model BPE with vocab and merges, Split+ByteLevel pre-tokenizer,
 * ByteLevel decoder, special tokens as added_tokens) and tokenizer_config.json (bos, eos,
 * pad and a ChatML chat_template rendered with @huggingface/jinja).
 */
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { PRETOKENIZE_PATTERN, type BpeModel } from './bpe.js';

/**
 * ChatML, as used by Qwen: no implicit system message; `add_generation_prompt` opens the
 * assistant turn. Documents in training data are rendered the same way.
 */
export const CHAT_TEMPLATE =
  "{%- for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}{%- endfor %}" +
  "{%- if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{%- endif %}";

export interface ChatMessage {
  role: 'system' | 'user' | 'assistant';
  content: string;
}

/** The template above in plain TypeScript (the packer renders thousands of items). */
export function renderChat(messages: readonly ChatMessage[], addGenerationPrompt = false): string {
  let s = '';
  for (const m of messages) s += `<|im_start|>${m.role}\n${m.content}<|im_end|>\n`;
  if (addGenerationPrompt) s += '<|im_start|>assistant\n';
  return s;
}

export function hfTokenizerJson(model: BpeModel): Record<string, unknown> {
  const base = model.vocab.length - model.specialTokens.length;
  const vocab: Record<string, number> = {};
  for (let i = 0; i < base; i++) vocab[model.vocab[i]] = i;
  return {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: model.specialTokens.map((content, i) => ({
      id: base + i,
      content,
      single_word: false,
      lstrip: false,
      rstrip: false,
      normalized: false,
      special: true,
    })),
    normalizer: null,
    pre_tokenizer: {
      type: 'Sequence',
      pretokenizers: [
        { type: 'Split', pattern: { Regex: PRETOKENIZE_PATTERN }, behavior: 'Isolated', invert: false },
        { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: false },
      ],
    },
    post_processor: { type: 'ByteLevel', add_prefix_space: true, trim_offsets: false, use_regex: true },
    decoder: { type: 'ByteLevel', add_prefix_space: true, trim_offsets: true, use_regex: true },
    model: {
      type: 'BPE',
      dropout: null,
      unk_token: null,
      continuing_subword_prefix: null,
      end_of_word_suffix: null,
      fuse_unk: false,
      byte_fallback: false,
      ignore_merges: false,
      vocab,
      merges: model.merges.map(([a, b]) => [model.vocab[a], model.vocab[b]]),
    },
  };
}

export function hfTokenizerConfig(model: BpeModel): Record<string, unknown> {
  const base = model.vocab.length - model.specialTokens.length;
  return {
    tokenizer_class: 'PreTrainedTokenizerFast',
    bos_token: '<|endoftext|>',
    eos_token: '<|im_end|>',
    pad_token: '<|endoftext|>',
    unk_token: null,
    add_bos_token: false,
    add_eos_token: false,
    clean_up_tokenization_spaces: false,
    model_max_length: 2048,
    chat_template: CHAT_TEMPLATE,
    added_tokens_decoder: Object.fromEntries(
      model.specialTokens.map((content, i) => [
        String(base + i),
        { content, lstrip: false, normalized: false, rstrip: false, single_word: false, special: true },
      ]),
    ),
  };
}

/** Writes tokenizer.json and tokenizer_config.json into `dir`; returns their paths. */
export function writeTokenizerFiles(model: BpeModel, dir: string): { tokenizer: string; config: string } {
  mkdirSync(dir, { recursive: true });
  const tokenizer = join(dir, 'tokenizer.json');
  const config = join(dir, 'tokenizer_config.json');
  writeFileSync(tokenizer, JSON.stringify(hfTokenizerJson(model)));
  writeFileSync(config, JSON.stringify(hfTokenizerConfig(model), null, 2));
  return { tokenizer, config };
}

/** Rebuilds the BPE model from a tokenizer.json written by writeTokenizerFiles. */
export function readBpeModel(tokenizerJsonPath: string): BpeModel {
  const json = JSON.parse(readFileSync(tokenizerJsonPath, 'utf8')) as {
    added_tokens: { id: number; content: string }[];
    model: { vocab: Record<string, number>; merges: [string, string][] | string[] };
  };
  const vocab: string[] = [];
  for (const [tok, id] of Object.entries(json.model.vocab)) vocab[id] = tok;
  const ids = new Map(vocab.map((t, i) => [t, i]));
  const merges = json.model.merges.map((m) => {
    const [a, b] = typeof m === 'string' ? m.split(' ') : m;
    return [ids.get(a)!, ids.get(b)!] as [number, number];
  });
  const added = json.added_tokens.slice().sort((x, y) => x.id - y.id);
  for (const t of added) vocab[t.id] = t.content;
  return { vocab, merges, specialTokens: added.map((t) => t.content) };
}
