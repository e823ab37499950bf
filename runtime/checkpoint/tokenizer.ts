/**
 * The model's tokenizer: @huggingface/tokenizers over tokenizer.json, plus what the
 * runtime needs around it — eos/bos ids, chat rendering with the checkpoint's Jinja chat
 * template (@huggingface/jinja), and an incremental detokenizer for streaming that only
 * ever emits complete text (a multi-byte UTF-8 character split over several byte-level
 * tokens comes out once, whole, when its last byte arrives).
 *
 * Without a chat_template the fallback is ChatML: each message becomes
 * `<|im_start|>{role}\n{content}<|im_end|>\n`, and the generation prompt is
 * `<|im_start|>assistant\n`.
 *
 * @example
 * const tok = ModelTokenizer.fromDir('models/tiny');
 * const ids = tok.encode(tok.renderChat([{ role: 'user', content: 'Hi' }]));
 * const detok = tok.detokenizer();
 * for (const id of ids) process.stdout.write(detok.push(id));
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Tokenizer } from '@huggingface/tokenizers';
import { Template } from '@huggingface/jinja';
import { CheckpointError } from '../../core/errors.js';
import { readJson } from './json.js';

export interface ChatTemplateMessage {
  role: string;
  content: string;
}

export interface RenderChatOptions {
  /** End with the opening of an assistant turn (default true). */
  addGenerationPrompt?: boolean;
  /** Extra variables for the template (tools, documents, enable_thinking, …). */
  variables?: Record<string, unknown>;
}

export interface ModelTokenizerOptions {
  /** Where the tokenizer came from, for error messages. */
  source?: string;
  /** End-of-sequence ids from config.json / generation_config.json (merged with eos_token). */
  eosIds?: number[];
  /** Beginning-of-sequence id from config.json; default: bos_token's id. */
  bosId?: number | null;
  /** A chat template that overrides tokenizer_config.json's (e.g. from chat_template.jinja). */
  chatTemplate?: string;
}

/** The fallback used when a checkpoint has no chat template; see the module header. */
export const CHATML_TEMPLATE =
  "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}{% endfor %}" +
  "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

type Json = Record<string, unknown>;

/** tokenizer_config.json writes special tokens as a string or as a serialised AddedToken. */
function tokenString(v: unknown): string | null {
  if (typeof v === 'string') return v;
  if (v !== null && typeof v === 'object' && typeof (v as Json).content === 'string') return (v as Json).content as string;
  return null;
}

/** chat_template may be a string, or named templates as a list or a record: take 'default'. */
function pickTemplate(raw: unknown): string | null {
  if (typeof raw === 'string') return raw;
  if (Array.isArray(raw)) {
    const named = raw.find((t) => (t as Json)?.name === 'default') ?? raw[0];
    return typeof (named as Json)?.template === 'string' ? ((named as Json).template as string) : null;
  }
  if (raw !== null && typeof raw === 'object') {
    const t = (raw as Json).default ?? Object.values(raw as Json)[0];
    return typeof t === 'string' ? t : null;
  }
  return null;
}

export class ModelTokenizer {
  readonly eosIds: number[];
  readonly bosId: number | null;
  readonly bosToken: string | null;
  readonly eosToken: string | null;
  /** The template renderChat uses: the checkpoint's, or CHATML_TEMPLATE. */
  readonly chatTemplate: string;
  readonly hasChatTemplate: boolean;
  /** One more than the largest id, added tokens included. */
  readonly vocabSize: number;
  /** Prompts start with bos (tokenizer_config.json / GGUF add_bos_token); see encodePrompt. */
  readonly addBos: boolean;
  readonly source: string;
  private readonly tokenizer: Tokenizer;
  private readonly specialIds: Set<number>;
  private compiledTemplate: Template | null = null;

  constructor(tokenizerJson: Json, tokenizerConfig: Json = {}, options: ModelTokenizerOptions = {}) {
    this.source = options.source ?? 'tokenizer.json';
    try {
      this.tokenizer = new Tokenizer(tokenizerJson, tokenizerConfig);
    } catch (err) {
      throw new CheckpointError({ file: this.source, reason: `tokenizer cannot be built: ${(err as Error).message}` });
    }
    this.bosToken = tokenString(tokenizerConfig.bos_token);
    this.eosToken = tokenString(tokenizerConfig.eos_token);
    const eosFromConfig = this.eosToken === null ? undefined : this.tokenizer.token_to_id(this.eosToken);
    const eos = [...(options.eosIds ?? [])];
    if (eosFromConfig !== undefined && !eos.includes(eosFromConfig)) eos.push(eosFromConfig);
    this.eosIds = eos;
    this.bosId = options.bosId ?? (this.bosToken === null ? null : this.tokenizer.token_to_id(this.bosToken) ?? null);
    this.addBos = tokenizerConfig.add_bos_token === true && this.bosId !== null;

    const template = options.chatTemplate ?? pickTemplate(tokenizerConfig.chat_template);
    this.hasChatTemplate = template !== null;
    this.chatTemplate = template ?? CHATML_TEMPLATE;

    const added = this.tokenizer.get_added_tokens_decoder();
    this.specialIds = new Set([...added].filter(([, t]) => t.special).map(([id]) => id));
    let maxId = -1;
    for (const id of this.tokenizer.get_vocab(true).values()) if (id > maxId) maxId = id;
    this.vocabSize = maxId + 1;
  }

  /**
   * Reads tokenizer.json and tokenizer_config.json (optional) from a folder, and
   * chat_template.jinja when tokenizer_config.json carries no template.
   */
  static fromDir(dir: string, options: Omit<ModelTokenizerOptions, 'source'> = {}): ModelTokenizer {
    const file = path.join(dir, 'tokenizer.json');
    if (!fs.existsSync(file)) {
      throw new CheckpointError({ file, reason: 'missing: this operation needs the tokenizer (text in or out)' });
    }
    const configFile = path.join(dir, 'tokenizer_config.json');
    const config = fs.existsSync(configFile) ? (readJson(configFile) as Json) : {};
    let chatTemplate = options.chatTemplate;
    const jinjaFile = path.join(dir, 'chat_template.jinja');
    if (chatTemplate === undefined && config.chat_template === undefined && fs.existsSync(jinjaFile)) {
      chatTemplate = fs.readFileSync(jinjaFile, 'utf8');
    }
    return new ModelTokenizer(readJson(file) as Json, config, { ...options, chatTemplate, source: file });
  }

  encode(text: string, options: { addSpecialTokens?: boolean } = {}): number[] {
    return this.tokenizer.encode(text, { add_special_tokens: options.addSpecialTokens ?? false }).ids;
  }

  /**
   * A prompt's ids: the text with special tokens parsed, and bos in front when the model
   * wants it (addBos) and the text does not already start with it (chat templates often
   * write bos_token themselves).
   */
  encodePrompt(text: string): number[] {
    const ids = this.encode(text);
    if (this.addBos && ids[0] !== this.bosId) ids.unshift(this.bosId!);
    return ids;
  }

  decode(ids: number[], options: { skipSpecialTokens?: boolean } = {}): string {
    // The library rejects an empty list; an empty decode is simply ''.
    if (ids.length === 0) return '';
    return this.tokenizer.decode(ids, { skip_special_tokens: options.skipSpecialTokens ?? false, clean_up_tokenization_spaces: false });
  }

  tokenToId(token: string): number | undefined {
    return this.tokenizer.token_to_id(token);
  }

  idToToken(id: number): string | undefined {
    return this.tokenizer.id_to_token(id);
  }

  isSpecial(id: number): boolean {
    return this.specialIds.has(id);
  }

  isEos(id: number): boolean {
    return this.eosIds.includes(id);
  }

  /** Renders chat messages to a prompt string with the chat template (no tokenisation). */
  renderChat(messages: ChatTemplateMessage[], options: RenderChatOptions = {}): string {
    if (this.compiledTemplate === null) {
      try {
        this.compiledTemplate = new Template(this.chatTemplate);
      } catch (err) {
        throw new CheckpointError({ file: this.source, reason: `chat_template does not parse: ${(err as Error).message}` });
      }
    }
    return this.compiledTemplate.render({
      ...options.variables,
      messages,
      add_generation_prompt: options.addGenerationPrompt ?? true,
      bos_token: this.bosToken ?? '',
      eos_token: this.eosToken ?? '',
    });
  }

  /** A fresh incremental detokenizer for one stream of generated ids. */
  detokenizer(options: { skipSpecialTokens?: boolean } = {}): IncrementalDetokenizer {
    return new IncrementalDetokenizer(this, options.skipSpecialTokens ?? false);
  }
}

/**
 * Streams text from ids one at a time. It decodes a short window — from the last emitted
 * boundary back to the one before it — so that context-dependent decoders (leading-space
 * handling) see the previous token, and it holds text back while the window ends in an
 * incomplete UTF-8 sequence (decoded as U+FFFD). `flush` releases whatever is held.
 */
export class IncrementalDetokenizer {
  private readonly ids: number[] = [];
  /** Start of the context window: ids before it are emitted and never decoded again. */
  private prefixOffset = 0;
  /** Ids before this are emitted; those from prefixOffset to here only provide context. */
  private readOffset = 0;
  private emitted = '';

  constructor(private readonly tokenizer: ModelTokenizer, private readonly skipSpecialTokens: boolean) {}

  /** Adds ids and returns the newly completed text ('' when it is still held back). */
  push(idOrIds: number | number[]): string {
    // One at a time, so that complete text before an incomplete tail is not held back.
    if (typeof idOrIds !== 'number') return idOrIds.map((id) => this.push(id)).join('');
    this.ids.push(idOrIds);
    const opts = { skipSpecialTokens: this.skipSpecialTokens };
    const prefix = this.tokenizer.decode(this.ids.slice(this.prefixOffset, this.readOffset), opts);
    const full = this.tokenizer.decode(this.ids.slice(this.prefixOffset), opts);
    if (full.length <= prefix.length || full.endsWith('\uFFFD')) return '';
    const delta = full.slice(prefix.length);
    this.prefixOffset = this.readOffset;
    this.readOffset = this.ids.length;
    this.emitted += delta;
    return delta;
  }

  /** Returns any text still held back (an incomplete character shows as U+FFFD). */
  flush(): string {
    const opts = { skipSpecialTokens: this.skipSpecialTokens };
    const prefix = this.tokenizer.decode(this.ids.slice(this.prefixOffset, this.readOffset), opts);
    const full = this.tokenizer.decode(this.ids.slice(this.prefixOffset), opts);
    this.prefixOffset = this.readOffset = this.ids.length;
    const delta = full.length > prefix.length ? full.slice(prefix.length) : '';
    this.emitted += delta;
    return delta;
  }

  /** All text emitted so far. */
  get text(): string {
    return this.emitted;
  }
}
