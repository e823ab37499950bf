/**
 * The tokenizer of a GGUF file, rebuilt from its `tokenizer.ggml.*` metadata as an
 * in-memory tokenizer.json for @huggingface/tokenizers (through ModelTokenizer, so chat
 * templates, streaming detokenization and eos handling are the same as for HF folders).
 *
 * Two vocabulary kinds, as llama.cpp names them in `tokenizer.ggml.model`:
 * - `gpt2`: byte-level BPE with `tokens` and `merges`. The pre-tokenizer is the regex list
 *   llama.cpp applies for `tokenizer.ggml.pre` (llama-vocab.cpp); each regex splits every
 *   piece further and keeps the text between matches, which is a Sequence of `Split`
 *   pre-tokenizers with behaviour Isolated. Llama 3 (`llama-bpe`) also looks a whole
 *   pre-token up in the vocabulary before merging (`ignore_merges`).
 * - `llama`: SentencePiece vocabularies with `tokens`, `scores` and `token_type`, no merges.
 *   llama.cpp merges the adjacent pair whose concatenation is a token with the highest
 *   score; that is BPE with merges ranked by the merged token's score, which is how
 *   transformers converts such vocabularies too (pairs of tokens whose concatenation is a
 *   token, best score first). Spaces become `▁`, one is prepended to each text fragment
 *   between special tokens when `add_space_prefix` (default true), and characters outside
 *   the vocabulary fall back to the `<0xNN>` byte tokens.
 *
 * Token types (llama.cpp's llama_token_type): 1 normal, 2 unknown, 3 control, 4
 * user-defined, 5 unused, 6 byte. Control and unknown tokens become special added tokens,
 * user-defined ones plain added tokens (matched in text, kept when decoding).
 *
 * @example
 * const tok = ggufTokenizer(GgufFile.open('model.gguf'));
 * tok.encode(tok.renderChat([{ role: 'user', content: 'What is a dog?' }]));
 */
import { CheckpointError } from '../../core/errors.js';
import type { GgufFile } from './gguf.js';
import { ModelTokenizer } from './tokenizer.js';

type Json = Record<string, unknown>;

const TOKEN_TYPE = { normal: 1, unknown: 2, control: 3, userDefined: 4, unused: 5, byte: 6 } as const;

const GPT2_REGEX = "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)";
const LLAMA3_REGEX =
  "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
const QWEN2_REGEX =
  "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

/** `tokenizer.ggml.pre` → the regexes llama.cpp splits with, in order. */
const PRE_TOKENIZERS: Record<string, string[]> = {
  default: ['[\\p{P}\\$\\+<=>\\^~\\|]+', GPT2_REGEX, '\\p{N}+', '[0-9][0-9][0-9]'],
  'gpt-2': [GPT2_REGEX],
  mpt: [GPT2_REGEX],
  olmo: [GPT2_REGEX],
  smollm: ['\\p{N}', GPT2_REGEX],
  starcoder: ['\\p{N}', GPT2_REGEX],
  refact: ['\\p{N}', GPT2_REGEX],
  'command-r': ['\\p{N}', GPT2_REGEX],
  codeshell: ['\\p{N}', GPT2_REGEX],
  'llama-bpe': [LLAMA3_REGEX],
  llama3: [LLAMA3_REGEX],
  dbrx: [LLAMA3_REGEX],
  smaug: [LLAMA3_REGEX],
  qwen2: [QWEN2_REGEX],
  stablelm2: [QWEN2_REGEX],
};

/** Pre-tokenizers whose BPE first looks the whole pre-token up (llama.cpp's ignore_merges). */
const IGNORE_MERGES = new Set(['llama-bpe', 'llama3', 'dbrx', 'smaug']);

interface Vocab {
  tokens: string[];
  types: number[] | null;
  scores: number[] | null;
}

function readVocab(g: GgufFile): Vocab {
  const bad = (reason: string) => new CheckpointError({ file: g.file, reason });
  const tokens = g.array('tokenizer.ggml.tokens');
  if (tokens === undefined) throw bad('missing metadata tokenizer.ggml.tokens: this file carries no tokenizer');
  if (!tokens.every((t): t is string => typeof t === 'string')) throw bad('tokenizer.ggml.tokens is not a list of strings');
  const numbers = (key: string): number[] | null => {
    const a = g.array(key);
    if (a === undefined) return null;
    if (a.length !== tokens.length) throw bad(`${key} has ${a.length} entries but there are ${tokens.length} tokens`);
    if (!a.every((x): x is number => typeof x === 'number')) throw bad(`${key} is not a list of numbers`);
    return a;
  };
  return { tokens, types: numbers('tokenizer.ggml.token_type'), scores: numbers('tokenizer.ggml.scores') };
}

function addedTokens(v: Vocab): Json[] {
  const out: Json[] = [];
  if (v.types === null) return out;
  v.types.forEach((type, id) => {
    if (type !== TOKEN_TYPE.control && type !== TOKEN_TYPE.userDefined && type !== TOKEN_TYPE.unknown) return;
    out.push({
      id,
      content: v.tokens[id],
      single_word: false,
      lstrip: false,
      rstrip: false,
      normalized: false,
      special: type !== TOKEN_TYPE.userDefined,
    });
  });
  return out;
}

function vocabObject(tokens: string[]): Record<string, number> {
  const vocab: Record<string, number> = Object.create(null);
  // The first id wins for duplicated strings, as llama.cpp's token_to_id map keeps it.
  tokens.forEach((t, id) => {
    if (!(t in vocab)) vocab[t] = id;
  });
  return vocab;
}

function bosPostProcessor(addBos: boolean, bos: string | null, bosId: number | null): Json | null {
  if (!addBos || bos === null || bosId === null) return null;
  return {
    type: 'TemplateProcessing',
    single: [{ SpecialToken: { id: bos, type_id: 0 } }, { Sequence: { id: 'A', type_id: 0 } }],
    pair: [{ SpecialToken: { id: bos, type_id: 0 } }, { Sequence: { id: 'A', type_id: 0 } }, { Sequence: { id: 'B', type_id: 1 } }],
    special_tokens: { [bos]: { id: bos, ids: [bosId], tokens: [bos] } },
  };
}

function gpt2TokenizerJson(g: GgufFile, v: Vocab): Json {
  const bad = (reason: string) => new CheckpointError({ file: g.file, reason });
  const merges = g.array('tokenizer.ggml.merges');
  if (merges === undefined) throw bad('missing metadata tokenizer.ggml.merges (needed by a gpt2 tokenizer)');
  if (!merges.every((m): m is string => typeof m === 'string' && m.indexOf(' ', 1) > 0)) {
    throw bad('tokenizer.ggml.merges is not a list of "left right" strings');
  }
  const pre = g.string('tokenizer.ggml.pre') ?? 'default';
  const regexes = PRE_TOKENIZERS[pre];
  if (regexes === undefined) {
    throw bad(`unsupported tokenizer.ggml.pre ${JSON.stringify(pre)} (supported: ${Object.keys(PRE_TOKENIZERS).join(', ')})`);
  }
  return {
    normalizer: null,
    pre_tokenizer: {
      type: 'Sequence',
      pretokenizers: [
        ...regexes.map((r) => ({ type: 'Split', pattern: { Regex: r }, behavior: 'Isolated', invert: false })),
        { type: 'ByteLevel', add_prefix_space: false, trim_offsets: false, use_regex: false },
      ],
    },
    decoder: { type: 'ByteLevel', add_prefix_space: false, trim_offsets: false, use_regex: false },
    model: {
      type: 'BPE',
      vocab: vocabObject(v.tokens),
      // Split at the first space after the first character: a merge's left side may itself
      // be a lone space in vocabularies that are not byte-level mapped.
      merges: merges.map((m) => {
        const at = m.indexOf(' ', 1);
        return [m.slice(0, at), m.slice(at + 1)];
      }),
      dropout: null,
      unk_token: null,
      continuing_subword_prefix: null,
      end_of_word_suffix: null,
      fuse_unk: false,
      byte_fallback: false,
      ignore_merges: IGNORE_MERGES.has(pre),
    },
  };
}

/**
 * Merges for a SentencePiece vocabulary: every split of a normal token into two tokens,
 * ranked by the merged token's score (best first), ties by the pieces' ids.
 */
export function mergesFromScores(tokens: string[], scores: number[], types: number[] | null): [string, string][] {
  const ids = new Map<string, number>();
  tokens.forEach((t, id) => {
    if (!ids.has(t)) ids.set(t, id);
  });
  const ranked: { l: string; r: string; score: number; li: number; ri: number }[] = [];
  tokens.forEach((t, id) => {
    if (types !== null && types[id] !== TOKEN_TYPE.normal && types[id] !== TOKEN_TYPE.userDefined) return;
    const chars = Array.from(t);
    for (let i = 1; i < chars.length; i++) {
      const l = chars.slice(0, i).join('');
      const r = chars.slice(i).join('');
      const li = ids.get(l);
      const ri = ids.get(r);
      if (li !== undefined && ri !== undefined) ranked.push({ l, r, score: scores[id]!, li, ri });
    }
  });
  ranked.sort((a, b) => b.score - a.score || a.li - b.li || a.ri - b.ri);
  return ranked.map((m) => [m.l, m.r]);
}

function llamaTokenizerJson(g: GgufFile, v: Vocab): Json {
  if (v.scores === null) throw new CheckpointError({ file: g.file, reason: 'missing metadata tokenizer.ggml.scores (needed by a llama tokenizer)' });
  const addSpacePrefix = g.bool('tokenizer.ggml.add_space_prefix') ?? true;
  const unkId = g.number('tokenizer.ggml.unknown_token_id');
  return {
    // llama.cpp prefixes a space to every text fragment between special tokens, even one
    // that starts with a space, then writes spaces as ▁. The library normalizes each such
    // fragment separately, so Prepend does the same (Metaspace would skip "▁"-led text).
    normalizer: {
      type: 'Sequence',
      normalizers: [
        ...(addSpacePrefix ? [{ type: 'Prepend', prepend: '▁' }] : []),
        { type: 'Replace', pattern: { String: ' ' }, content: '▁' },
      ],
    },
    pre_tokenizer: null,
    decoder: {
      type: 'Sequence',
      decoders: [
        { type: 'Replace', pattern: { String: '▁' }, content: ' ' },
        { type: 'ByteFallback' },
        { type: 'Fuse' },
        ...(addSpacePrefix ? [{ type: 'Strip', content: ' ', start: 1, stop: 0 }] : []),
      ],
    },
    model: {
      type: 'BPE',
      vocab: vocabObject(v.tokens),
      merges: mergesFromScores(v.tokens, v.scores, v.types),
      dropout: null,
      unk_token: unkId !== undefined ? (v.tokens[unkId] ?? null) : null,
      continuing_subword_prefix: null,
      end_of_word_suffix: null,
      fuse_unk: true,
      byte_fallback: true,
      ignore_merges: false,
    },
  };
}

/** Ids that end generation: eos, and eot (end of a chat turn) and eom (Llama 3 tool message). */
export function ggufStopIds(g: GgufFile, vocabSize: number): number[] {
  const ids: number[] = [];
  for (const key of ['tokenizer.ggml.eos_token_id', 'tokenizer.ggml.eot_token_id', 'tokenizer.ggml.eom_token_id']) {
    const id = g.number(key);
    if (id === undefined) continue;
    if (!Number.isSafeInteger(id) || id < 0 || id >= vocabSize) {
      throw new CheckpointError({ file: g.file, reason: `metadata ${key} = ${id} is not a token id (vocabulary of ${vocabSize})` });
    }
    if (!ids.includes(id)) ids.push(id);
  }
  return ids;
}

/** Builds the ModelTokenizer of a GGUF file from its metadata (the file may be closed). */
export function ggufTokenizer(g: GgufFile): ModelTokenizer {
  const v = readVocab(g);
  const kind = g.string('tokenizer.ggml.model');
  let json: Json;
  if (kind === 'gpt2') json = gpt2TokenizerJson(g, v);
  else if (kind === 'llama') json = llamaTokenizerJson(g, v);
  else {
    throw new CheckpointError({ file: g.file, reason: `unsupported tokenizer.ggml.model ${JSON.stringify(kind ?? null)} (supported: gpt2, llama)` });
  }
  const tokenAt = (key: string): string | null => {
    const id = g.number(key);
    if (id === undefined) return null;
    const t = v.tokens[id];
    if (t === undefined) throw new CheckpointError({ file: g.file, reason: `metadata ${key} = ${id} is outside the ${v.tokens.length}-token vocabulary` });
    return t;
  };
  const bos = tokenAt('tokenizer.ggml.bos_token_id');
  const eos = tokenAt('tokenizer.ggml.eos_token_id');
  const bosId = g.number('tokenizer.ggml.bos_token_id') ?? null;
  // llama.cpp adds BOS for SentencePiece vocabularies unless told otherwise.
  const addBos = g.bool('tokenizer.ggml.add_bos_token') ?? kind === 'llama';
  const tokenizerJson: Json = {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: addedTokens(v),
    post_processor: bosPostProcessor(addBos, bos, bosId),
    ...json,
  };
  const chatTemplate = g.string('tokenizer.chat_template');
  const config: Json = { bos_token: bos, eos_token: eos, add_bos_token: addBos, ...(chatTemplate !== undefined ? { chat_template: chatTemplate } : {}) };
  return new ModelTokenizer(tokenizerJson, config, { source: g.file, eosIds: ggufStopIds(g, v.tokens.length), bosId });
}
