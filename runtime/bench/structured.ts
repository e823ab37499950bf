/**
 * `skein bench structured`: constrained decoding, measured side by side.
 *
 * - Schema tasks: the share of answers that parse and validate (ajv) against the task's
 *   JSON Schema, asked for in the prompt only (without) and decoded under the schema
 *   (with; 100% is required).
 * - Tool tasks: the share of answers that are a call to one of the offered tools with
 *   arguments valid for it, with the tools described in the system prompt only, and with
 *   `tool_choice: required` (the call schema as the constraint).
 * - Overhead: decode tokens/s of the same prompt with and without a grammar, interleaved;
 *   the grammar's masks cold (first request) and warm (cached, the steady state); and
 *   with and without log-probabilities (top 5 per token), which only requests that ask pay.
 * - Mask cost per step on a vocabulary: building a state's mask (first visit) and applying
 *   a cached one, on the served model's vocabulary and on SmolLM2's 49,152 tokens when
 *   its GGUF is present (read with node-llama-cpp's GGUF reader).
 *
 * @example
 * const figures = await getBench('structured')!.run({ log: console.error });
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Ajv } from 'ajv';
import type { OutputConstraint } from '../../core/output.js';
import { MODELS_DIR } from '../checkpoint/load.js';
import { benchModel, interleaved, median, round, timedRun } from '../engine/bench-support.js';
import { createEngine } from '../engine/index.js';
import { loadSpecTokenizer } from '../engine/model-spec.js';
import type { EngineFront } from '../engine/front.js';
import type { ChatMessage } from '../../core/engine.js';
import { compileGrammar, TokenVocabulary } from '../grammar/index.js';
import { mulberry32 } from '../model/random.js';
import { planTools } from '../server/openai-tools.js';
import { registerBench } from './index.js';

interface SchemaTask {
  prompt: string;
  schema: object;
}

const schemaTasks: SchemaTask[] = [
  {
    prompt: 'Describe a person with a name and an age.',
    schema: { type: 'object', properties: { name: { type: 'string', maxLength: 30 }, age: { type: 'integer', minimum: 0, maximum: 130 } }, required: ['name', 'age'], additionalProperties: false },
  },
  {
    prompt: 'Is this review positive or negative? "The soup was cold."',
    schema: { type: 'object', properties: { sentiment: { enum: ['positive', 'negative', 'neutral'] } }, required: ['sentiment'], additionalProperties: false },
  },
  {
    prompt: 'List three colours.',
    schema: { type: 'object', properties: { colours: { type: 'array', items: { type: 'string', maxLength: 15 }, minItems: 3, maxItems: 3 } }, required: ['colours'], additionalProperties: false },
  },
  {
    prompt: 'Give an address in France.',
    schema: {
      type: 'object',
      properties: {
        street: { type: 'string', maxLength: 40 },
        city: { type: 'string', maxLength: 20 },
        zip: { type: 'string', pattern: '^[0-9]{5}$' },
      },
      required: ['street', 'city', 'zip'],
      additionalProperties: false,
    },
  },
  {
    prompt: 'Rate the weather today from 0 to 1, and say if it rains.',
    schema: { type: 'object', properties: { score: { type: 'number', minimum: 0, maximum: 1 }, rain: { type: 'boolean' } }, required: ['score', 'rain'], additionalProperties: false },
  },
  {
    prompt: 'A book with a title and optional year.',
    schema: { type: 'object', properties: { title: { type: 'string', maxLength: 30 }, year: { anyOf: [{ type: 'integer', minimum: 1000, maximum: 2100 }, { type: 'null' }] } }, required: ['title'], additionalProperties: false },
  },
];

const tools = [
  { type: 'function', function: { name: 'get_weather', description: 'Weather in a city.', parameters: { type: 'object', properties: { city: { type: 'string', maxLength: 20 } }, required: ['city'], additionalProperties: false } } },
  { type: 'function', function: { name: 'add', description: 'Adds two integers.', parameters: { type: 'object', properties: { a: { type: 'integer', minimum: -999, maximum: 999 }, b: { type: 'integer', minimum: -999, maximum: 999 } }, required: ['a', 'b'], additionalProperties: false } } },
  { type: 'function', function: { name: 'lookup', description: 'Looks a word up in the dictionary.', parameters: { type: 'object', properties: { word: { type: 'string', maxLength: 20 } }, required: ['word'], additionalProperties: false } } },
];
const toolPrompts = ['What is the weather in Oslo?', 'What is 12 plus 30?', 'What does "ephemeral" mean?', 'Is it raining in Lima?', 'Add 7 and 5.', 'Define the word "tide".'];

const ajv = new Ajv({ strict: false });

function validJson(text: string, schema: object): boolean {
  try {
    return ajv.validate(schema, JSON.parse(text.trim()));
  } catch {
    return false;
  }
}

function validCall(text: string): boolean {
  try {
    const call = JSON.parse(text.trim()) as { name?: unknown; arguments?: unknown };
    const tool = tools.find((t) => t.function.name === call.name);
    return tool !== undefined && ajv.validate(tool.function.parameters, call.arguments);
  } catch {
    return false;
  }
}

async function answer(engine: EngineFront, messages: ChatMessage[], maxTokens: number, output?: OutputConstraint): Promise<string> {
  const { done } = await timedRun(engine, { messages, sampling: { maxTokens }, ...(output ? { output } : {}) });
  return done.text;
}

/** Mask build (first visit) and apply (cached) times over random-model walks of a schema. */
function maskCost(vocab: TokenVocabulary, schema: object, walks: number): { buildMsMean: number; buildMsMax: number; applyUsMedian: number; states: number } {
  const grammar = compileGrammar({ schema }, vocab);
  const builds: number[] = [];
  const applies: number[] = [];
  const logits = new Float32Array(vocab.size);
  const seen = new Set<number>();
  for (let w = 0; w < walks; w++) {
    const rand = mulberry32(w + 1);
    const cursor = grammar.cursor();
    for (let step = 0; step < 200; step++) {
      for (let i = 0; i < logits.length; i++) logits[i] = rand();
      const before = grammar.cachedStates;
      const t0 = performance.now();
      cursor.maskLogits(logits);
      const ms = performance.now() - t0;
      (grammar.cachedStates > before ? builds : applies).push(ms);
      let best = 0;
      for (let i = 1; i < logits.length; i++) if (logits[i]! > logits[best]!) best = i;
      seen.add(best);
      if (grammar.isEos(best) || cursor.accept(best)) break;
    }
  }
  return {
    buildMsMean: round(builds.reduce((a, b) => a + b, 0) / Math.max(1, builds.length)),
    buildMsMax: round(Math.max(0, ...builds)),
    applyUsMedian: round(median(applies) * 1000, 1),
    states: grammar.cachedStates,
  };
}

async function smolLm2Vocabulary(log: (line: string) => void): Promise<TokenVocabulary | null> {
  const file = path.join(MODELS_DIR, 'smollm2-135m-instruct', 'SmolLM2-135M-Instruct.Q4_1.gguf');
  if (!fs.existsSync(file)) {
    log(`structured: ${file} is absent, so SmolLM2's vocabulary is skipped (npx skein pull smollm2-135m-instruct)`);
    return null;
  }
  const { readGgufFileInfo } = await import('node-llama-cpp');
  const info = await readGgufFileInfo(file, { readTensorInfo: false });
  const ggml = (info.metadata as unknown as { tokenizer: { ggml: { tokens: string[]; token_type: number[]; eos_token_id: number } } }).tokenizer.ggml;
  return TokenVocabulary.fromGgufTokens(ggml.tokens, ggml.token_type, [ggml.eos_token_id]);
}

registerBench('structured', {
  description: 'Constrained decoding: valid-output rate with/without a grammar on schema and tool tasks, tok/s overhead, mask cost per step, logprobs overhead',
  async run({ log, args }) {
    const spec = benchModel(args);
    const engine = await createEngine({ model: spec, thread: 'main' });
    try {
      if (!engine.supportsOutput) throw new Error('the bench model has no tokenizer, so its output cannot be constrained');
      const figures: Record<string, unknown> = { model: engine.modelName };

      let freeOk = 0;
      let constrainedOk = 0;
      for (const task of schemaTasks) {
        const ask: ChatMessage[] = [{ role: 'user', content: `${task.prompt}\nAnswer only with JSON valid for this JSON Schema: ${JSON.stringify(task.schema)}` }];
        const free = await answer(engine, ask, 96);
        const constrained = await answer(engine, ask, 96, { schema: task.schema });
        if (validJson(free, task.schema)) freeOk++;
        if (validJson(constrained, task.schema)) constrainedOk++;
        log(`schema task: ${JSON.stringify(task.prompt)}\n  without: ${JSON.stringify(free.slice(0, 100))}\n  with:    ${JSON.stringify(constrained.slice(0, 100))}`);
      }
      figures.schemaValidRate = { without: round(freeOk / schemaTasks.length), with: round(constrainedOk / schemaTasks.length), tasks: schemaTasks.length };
      log(`schema tasks: valid ${freeOk}/${schemaTasks.length} without a grammar, ${constrainedOk}/${schemaTasks.length} with`);

      let freeCalls = 0;
      let constrainedCalls = 0;
      for (const prompt of toolPrompts) {
        const plan = planTools({ tools, tool_choice: 'required' });
        const messages: ChatMessage[] = [{ role: 'system', content: plan.system! }, { role: 'user', content: prompt }];
        if (validCall(await answer(engine, messages, 64))) freeCalls++;
        if (validCall(await answer(engine, messages, 64, plan.output))) constrainedCalls++;
      }
      figures.toolCallSuccessRate = { without: round(freeCalls / toolPrompts.length), with: round(constrainedCalls / toolPrompts.length), tasks: toolPrompts.length };
      log(`tool tasks: valid calls ${freeCalls}/${toolPrompts.length} without a grammar, ${constrainedCalls}/${toolPrompts.length} with`);

      // Overhead: a long JSON answer (an array of strings) against the same prompt unconstrained.
      const longSchema = { type: 'array', items: { type: 'string', maxLength: 60 }, minItems: 50 };
      const prompt: ChatMessage[] = [{ role: 'user', content: 'Write a long list of short sentences about the sea.' }];
      const steps = Number(args?.tokens ?? 64);
      const cold = await timedRun(engine, { messages: prompt, sampling: { maxTokens: steps }, output: { schema: longSchema } });
      const [plain, constrained] = await interleaved(Number(args?.reps ?? 3), [
        () => timedRun(engine, { messages: prompt, sampling: { maxTokens: steps } }),
        () => timedRun(engine, { messages: prompt, sampling: { maxTokens: steps }, output: { schema: longSchema } }),
      ]);
      const rate = (runs: typeof plain) => median(runs.map((r) => r.done.metrics.decodeTokensPerSec));
      const plainTps = rate(plain);
      const warmTps = rate(constrained);
      figures.decodeTokensPerSec = {
        without: round(plainTps),
        withWarm: round(warmTps),
        withCold: round(cold.done.metrics.decodeTokensPerSec),
        overheadWarm: round(1 - warmTps / plainTps, 3),
        tokens: steps,
      };
      log(`decode: ${plainTps.toFixed(1)} tok/s without a grammar, ${warmTps.toFixed(1)} with (warm masks; ${cold.done.metrics.decodeTokensPerSec.toFixed(1)} on the first, cold request): overhead ${((1 - warmTps / plainTps) * 100).toFixed(1)}%`);

      // logprobs are opt-in: what asking for them (5 alternatives per token) costs a decode step.
      const [unscored, scored] = await interleaved(Number(args?.reps ?? 3), [
        () => timedRun(engine, { messages: prompt, sampling: { maxTokens: steps } }),
        () => timedRun(engine, { messages: prompt, sampling: { maxTokens: steps }, logprobs: 5 }),
      ]);
      const unscoredTps = rate(unscored);
      const scoredTps = rate(scored);
      figures.logprobsTokensPerSec = { without: round(unscoredTps), withTop5: round(scoredTps), overhead: round(1 - scoredTps / unscoredTps, 3), tokens: steps };
      log(`logprobs: ${unscoredTps.toFixed(1)} tok/s without, ${scoredTps.toFixed(1)} with top_logprobs 5: overhead ${((1 - scoredTps / unscoredTps) * 100).toFixed(1)}%`);

      const costSchema = schemaTasks[3]!.schema;
      const tokenizer = loadSpecTokenizer(spec)!;
      const tokenizerVocab = TokenVocabulary.fromTokenizer(tokenizer, tokenizer.vocabSize);
      const maskFigures: Record<string, unknown> = { [engine.modelName]: { vocab: tokenizerVocab.size, ...maskCost(tokenizerVocab, costSchema, 5) } };
      const smol = await smolLm2Vocabulary(log);
      if (smol) maskFigures['smollm2-135m-instruct'] = { vocab: smol.size, ...maskCost(smol, costSchema, 5) };
      for (const [name, f] of Object.entries(maskFigures)) {
        const m = f as ReturnType<typeof maskCost> & { vocab: number };
        log(`mask on ${name} (${m.vocab} tokens): build ${m.buildMsMean} ms mean / ${m.buildMsMax} ms max per new state (${m.states} states), apply ${m.applyUsMedian} µs per step`);
      }
      figures.maskCost = maskFigures;
      return figures;
    } finally {
      await engine.close();
    }
  },
});

