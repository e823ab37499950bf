"""
An independent oracle: Hugging Face Llama/Qwen2 maths written out in numpy (float64),
following transformers' modeling_llama.py and _compute_llama3_parameters line by line,
reading the safetensors file directly. Used by test/oracle-numpy.test.ts.

usage: python3 test/oracle-numpy.py CHECKPOINT_DIR IDS(comma-separated) LOGITS_JSON
prints: {"maxRelErr": float, "argmaxAgree": bool}
"""
import json, struct, numpy as np, math, sys
d = sys.argv[1]
cfg = json.load(open(f"{d}/config.json"))
raw = open(f"{d}/model.safetensors", "rb").read()
n = struct.unpack("<Q", raw[:8])[0]
hdr = json.loads(raw[8:8+n]); base = 8+n
W = {}
for k, v in hdr.items():
    if k == "__metadata__": continue
    a, b = v["data_offsets"]; assert v["dtype"] == "F32"
    W[k] = np.frombuffer(raw[base+a:base+b], dtype=np.float32).reshape(v["shape"]).astype(np.float64)
H = cfg["num_attention_heads"]; KV = cfg["num_key_value_heads"]; hid = cfg["hidden_size"]
hd = cfg.get("head_dim", hid // H); eps = cfg["rms_norm_eps"]; L = cfg["num_hidden_layers"]
# transformers _compute_default_rope_parameters + _compute_llama3_parameters
inv = 1.0 / (cfg["rope_theta"] ** (np.arange(0, hd, 2, dtype=np.int64).astype(np.float32) / hd))
rs = cfg.get("rope_scaling")
if rs:
    factor = rs["factor"]; lf = rs["low_freq_factor"]; hf = rs["high_freq_factor"]; old = rs["original_max_position_embeddings"]
    low_wl = old / lf; high_wl = old / hf
    wl = 2 * math.pi / inv
    inv_l = np.where(wl > low_wl, inv / factor, inv)
    smooth = (old / wl - lf) / (hf - lf)
    smoothed = (1 - smooth) * inv_l / factor + smooth * inv_l
    med = ~(wl < high_wl) * ~(wl > low_wl)
    inv = np.where(med, smoothed, inv_l)
ids = [int(x) for x in sys.argv[2].split(",")]
T = len(ids)
pos = np.arange(T)
freqs = np.outer(pos, inv); emb = np.concatenate([freqs, freqs], -1); cos = np.cos(emb); sin = np.sin(emb)
def rms(x, w): return w * (x / np.sqrt((x**2).mean(-1, keepdims=True) + eps))
def lin(x, name):
    y = x @ W[name + ".weight"].T
    if name + ".bias" in W: y = y + W[name + ".bias"]
    return y
def rot(x): h = x.shape[-1] // 2; return np.concatenate([-x[..., h:], x[..., :h]], -1)
x = W["model.embed_tokens.weight"][ids]
for l in range(L):
    p = f"model.layers.{l}"
    h = rms(x, W[p + ".input_layernorm.weight"])
    q = lin(h, p + ".self_attn.q_proj").reshape(T, H, hd).transpose(1, 0, 2)
    k = lin(h, p + ".self_attn.k_proj").reshape(T, KV, hd).transpose(1, 0, 2)
    v = lin(h, p + ".self_attn.v_proj").reshape(T, KV, hd).transpose(1, 0, 2)
    q = q * cos + rot(q) * sin; k = k * cos + rot(k) * sin
    k = np.repeat(k, H // KV, axis=0); v = np.repeat(v, H // KV, axis=0)
    s = q @ k.transpose(0, 2, 1) / math.sqrt(hd)
    s = s + np.triu(np.full((T, T), -np.inf), 1)
    s = np.exp(s - s.max(-1, keepdims=True)); s = s / s.sum(-1, keepdims=True)
    o = (s @ v).transpose(1, 0, 2).reshape(T, H * hd)
    x = x + lin(o, p + ".self_attn.o_proj")
    h = rms(x, W[p + ".post_attention_layernorm.weight"])
    g = lin(h, p + ".mlp.gate_proj"); u = lin(h, p + ".mlp.up_proj")
    x = x + lin(g / (1 + np.exp(-g)) * u, p + ".mlp.down_proj")
x = rms(x, W["model.norm.weight"])
lm = W["lm_head.weight"] if "lm_head.weight" in W else W["model.embed_tokens.weight"]
logits = x @ lm.T
ts = np.array(json.load(open(sys.argv[3]))["logits"])
err = np.abs(ts - logits).max(-1) / np.abs(logits).max(-1)
print(json.dumps({"maxRelErr": float(err.max()), "argmaxAgree": bool((ts.argmax(-1) == logits.argmax(-1)).all())}))
