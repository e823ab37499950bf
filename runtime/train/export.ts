/**
 * Writes a trained model in the Hugging Face layout the runtime loads (config.json,
 * model.safetensors with HF tensor names and (out, in) projections, tokenizer files,
 * generation_config.json), plus a compact resume/ folder (training state and the Adam
 * moments in bf16) so a later session can continue the run from the committed model.
 * And the way back: a run checkpoint rebuilt from such a folder.
 *
 * @example
 * exportModel({ runDir: '.skein/train/skein-mini', modelDir: 'models/skein-mini', tokenizerDir: 'data/tokenizer' });
 */
import fs from 'node:fs';
import path from 'node:path';
import { readSafetensors, writeSafetensors, type FloatTensor, type WriteDtype } from '../checkpoint/safetensors.js';
import { hfConfig, paramTable, type ParamTable, type TrainModelConfig } from './config.js';
import { saveCheckpoint, type TrainState } from './trainer.js';

function transpose(src: Float32Array, rows: number, cols: number): Float32Array {
  const out = new Float32Array(src.length);
  for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) out[c * rows + r] = src[r * cols + c];
  return out;
}

const HF_PROJ: Record<string, string> = {
  wq: 'self_attn.q_proj',
  wk: 'self_attn.k_proj',
  wv: 'self_attn.v_proj',
  wo: 'self_attn.o_proj',
  wGate: 'mlp.gate_proj',
  wUp: 'mlp.up_proj',
  wDown: 'mlp.down_proj',
};
const HF_NORM: Record<string, string> = { inputNorm: 'input_layernorm', postNorm: 'post_attention_layernorm' };

/** Training name → (HF name, whether the HF tensor is the transpose). */
export function hfName(name: string): { hf: string; transposed: boolean } {
  if (name === 'embed') return { hf: 'model.embed_tokens.weight', transposed: false };
  if (name === 'finalNorm') return { hf: 'model.norm.weight', transposed: false };
  const [, l, field] = name.split('.');
  if (HF_PROJ[field] !== undefined) return { hf: `model.layers.${l}.${HF_PROJ[field]}.weight`, transposed: true };
  return { hf: `model.layers.${l}.${HF_NORM[field]}.weight`, transposed: false };
}

/** The flat training parameters as HF-named tensors. */
export function toHfTensors(table: ParamTable, params: Float32Array): Record<string, FloatTensor> {
  const out: Record<string, FloatTensor> = {};
  for (const e of table.entries) {
    const { hf, transposed } = hfName(e.name);
    const data = params.slice(e.offset, e.offset + e.size);
    out[hf] = transposed ? { shape: [e.shape[1], e.shape[0]], data: transpose(data, e.shape[0], e.shape[1]) } : { shape: e.shape.slice(), data };
  }
  return out;
}

/** The inverse of toHfTensors. */
export function fromHfTensors(table: ParamTable, tensors: Record<string, FloatTensor>): Float32Array {
  const params = new Float32Array(table.total);
  for (const e of table.entries) {
    const { hf, transposed } = hfName(e.name);
    const t = tensors[hf];
    if (t === undefined) throw new Error(`missing tensor ${hf}`);
    params.set(transposed ? transpose(t.data, e.shape[1], e.shape[0]) : t.data, e.offset);
  }
  return params;
}

export interface ExportOptions {
  modelDir: string;
  config: TrainModelConfig;
  params: Float32Array;
  /** Folder with tokenizer.json and tokenizer_config.json; omitted → no tokenizer files. */
  tokenizerDir?: string;
  dtype?: WriteDtype;
  /** Training state and moments for resume/; omitted → weights only. */
  resume?: { state: TrainState; m: Float32Array; v: Float32Array; logFile?: string };
}

export function exportModel(o: ExportOptions): void {
  const dtype = o.dtype ?? 'F16';
  const table = paramTable(o.config);
  fs.mkdirSync(o.modelDir, { recursive: true });
  const torchDtype = dtype === 'F16' ? 'float16' : dtype === 'BF16' ? 'bfloat16' : 'float32';
  fs.writeFileSync(path.join(o.modelDir, 'config.json'), JSON.stringify(hfConfig(o.config, torchDtype), null, 2) + '\n');
  writeSafetensors(path.join(o.modelDir, 'model.safetensors'), toHfTensors(table, o.params), dtype, { format: 'pt' });
  const tok = o.tokenizerDir;
  if (tok !== undefined) for (const f of ['tokenizer.json', 'tokenizer_config.json']) fs.copyFileSync(path.join(tok, f), path.join(o.modelDir, f));
  const eos = [o.config.eosTokenId, o.config.bosTokenId].filter((x): x is number => x !== null);
  const gen = {
    bos_token_id: o.config.bosTokenId,
    eos_token_id: eos,
    pad_token_id: o.config.bosTokenId,
    do_sample: false,
    max_new_tokens: 256,
    repetition_penalty: 1.1,
  };
  fs.writeFileSync(path.join(o.modelDir, 'generation_config.json'), JSON.stringify(gen, null, 2) + '\n');
  if (o.resume !== undefined) {
    const dir = path.join(o.modelDir, 'resume');
    fs.mkdirSync(dir, { recursive: true });
    // bf16 keeps the range of the second moment (f16 would flush its small values to zero).
    writeSafetensors(path.join(dir, 'optimizer.safetensors'), {
      adam_m: { shape: [table.total], data: o.resume.m },
      adam_v: { shape: [table.total], data: o.resume.v },
    }, 'BF16');
    fs.writeFileSync(path.join(dir, 'state.json'), JSON.stringify({ ...o.resume.state, weightsDtype: dtype }, null, 1) + '\n');
    // The per-step log travels too, so a later session's model card covers the whole run.
    if (o.resume.logFile !== undefined && fs.existsSync(o.resume.logFile)) fs.copyFileSync(o.resume.logFile, path.join(dir, 'train.log.jsonl'));
  }
}

/**
 * Rebuilds a run checkpoint in `runDir` from an exported model folder with resume/:
 * the f16 weights and bf16 moments are widened to f32 (a rounding of each, once).
 */
export function importForResume(modelDir: string, runDir: string): TrainState {
  const stateFile = path.join(modelDir, 'resume', 'state.json');
  if (!fs.existsSync(stateFile)) throw new Error(`${modelDir} has no resume/state.json`);
  const state = JSON.parse(fs.readFileSync(stateFile, 'utf8')) as TrainState & { weightsDtype?: string };
  delete state.weightsDtype;
  const table = paramTable(state.config);
  const params = fromHfTensors(table, readSafetensors(path.join(modelDir, 'model.safetensors')));
  const opt = readSafetensors(path.join(modelDir, 'resume', 'optimizer.safetensors'));
  saveCheckpoint(runDir, state, params, opt.adam_m.data, opt.adam_v.data);
  const log = path.join(modelDir, 'resume', 'train.log.jsonl');
  if (fs.existsSync(log)) fs.copyFileSync(log, path.join(runDir, 'train.log.jsonl'));
  return state;
}
