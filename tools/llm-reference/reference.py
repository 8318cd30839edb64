#!/usr/bin/python3
"""Independent PyTorch reference for the Hugging Face decoder-only checkpoints (issue 21).

Writes tiny random-weight checkpoints of LlamaForCausalLM, Qwen2ForCausalLM and Qwen3ForCausalLM
(config.json + safetensors written by hand) to tests/fixtures/hf/<name>/ together with the
expected logits and greedy tokens that tests/runner/hf_decoder_test.cc compares the libtorch C++
decoder (src/runner/hf/) against. Dev-only: run by a developer when regenerating fixtures, never
by CI. Uses Debian's python3-torch (1.13); no transformers, no safetensors package.

The model is written from the semantics of transformers' modeling_llama.py, modeling_qwen2.py and
modeling_qwen3.py (and modeling_rope_utils.py for the llama3 rope scaling), but computed in
float64 with a plain full-sequence forward (no KV cache), so it shares neither code nor numerics
with the C++ side.
"""

import json
import math
import os
import struct
import sys

import torch

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
OUT = os.path.join(ROOT, "tests", "fixtures", "hf")

PROMPT = [1, 17, 42, 99, 3, 200, 255, 7]
GREEDY_STEPS = 64
LOGIT_STEPS = [0, 1, 31, 63]  # decode steps whose last-position logits are stored

CHECKPOINTS = {
    # Llama 3.1-style: llama3 rope scaling (original context small enough that all three
    # frequency bands occur for head_dim 16), tied embeddings, fp32, sharded in two files.
    "llama": dict(
        arch="LlamaForCausalLM", model_type="llama", seed=1, layers=2, head_dim=None,
        rope_theta=10000.0, tie=True, dtype="float32", shards=2, qkv_bias=False, qk_norm=False,
        rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                      "high_freq_factor": 4.0, "original_max_position_embeddings": 64},
        extra={"attention_bias": False, "mlp_bias": False, "pretraining_tp": 1,
               "attention_dropout": 0.0}),
    # Qwen2.5-style: q/k/v biases, untied lm_head, fp32, one file; a sliding window that is off.
    "qwen2": dict(
        arch="Qwen2ForCausalLM", model_type="qwen2", seed=2, layers=3, head_dim=None,
        rope_theta=1000000.0, tie=False, dtype="float32", shards=1, qkv_bias=True,
        qk_norm=False, rope_scaling=None,
        extra={"sliding_window": 4096, "use_sliding_window": False, "max_window_layers": 3}),
    # Llama with attention_bias (q/k/v/o biases), one layer, fp16 weights, tied.
    "llama_bias": dict(
        arch="LlamaForCausalLM", model_type="llama", seed=4, layers=1, head_dim=None,
        rope_theta=10000.0, tie=True, dtype="float16", shards=1, qkv_bias=True, o_bias=True,
        qk_norm=False, rope_scaling=None,
        extra={"attention_bias": True, "mlp_bias": False}),
    # Qwen3-style: q/k RMSNorm over head_dim, head_dim 32 != hidden/heads (16), bf16 weights.
    "qwen3": dict(
        arch="Qwen3ForCausalLM", model_type="qwen3", seed=3, layers=2, head_dim=32,
        rope_theta=1000000.0, tie=False, dtype="bfloat16", shards=1, qkv_bias=False,
        qk_norm=True, rope_scaling=None,
        extra={"attention_bias": False, "sliding_window": None, "use_sliding_window": False}),
}

HIDDEN, HEADS, KV_HEADS, VOCAB, INTER, EPS, MAX_POS = 64, 4, 2, 256, 128, 1e-6, 128


def make_weights(spec):
    g = torch.Generator().manual_seed(spec["seed"])
    head_dim = spec["head_dim"] or HIDDEN // HEADS

    def lin(out_f, in_f):
        return torch.randn(out_f, in_f, generator=g) / math.sqrt(in_f)

    def norm(n):
        return 1.0 + 0.1 * torch.randn(n, generator=g)

    # Small embeddings: with tied embeddings a unit-scale embedding dominates the residual and
    # greedy decoding only repeats the last token, which would test nothing.
    w = {"model.embed_tokens.weight": 0.05 * torch.randn(VOCAB, HIDDEN, generator=g)}
    for i in range(spec["layers"]):
        p = f"model.layers.{i}."
        w[p + "input_layernorm.weight"] = norm(HIDDEN)
        w[p + "self_attn.q_proj.weight"] = lin(HEADS * head_dim, HIDDEN)
        w[p + "self_attn.k_proj.weight"] = lin(KV_HEADS * head_dim, HIDDEN)
        w[p + "self_attn.v_proj.weight"] = lin(KV_HEADS * head_dim, HIDDEN)
        if spec["qkv_bias"]:
            w[p + "self_attn.q_proj.bias"] = 0.1 * torch.randn(HEADS * head_dim, generator=g)
            w[p + "self_attn.k_proj.bias"] = 0.1 * torch.randn(KV_HEADS * head_dim, generator=g)
            w[p + "self_attn.v_proj.bias"] = 0.1 * torch.randn(KV_HEADS * head_dim, generator=g)
        if spec["qk_norm"]:
            w[p + "self_attn.q_norm.weight"] = norm(head_dim)
            w[p + "self_attn.k_norm.weight"] = norm(head_dim)
        w[p + "self_attn.o_proj.weight"] = lin(HIDDEN, HEADS * head_dim)
        if spec.get("o_bias"):
            w[p + "self_attn.o_proj.bias"] = 0.1 * torch.randn(HIDDEN, generator=g)
        w[p + "post_attention_layernorm.weight"] = norm(HIDDEN)
        w[p + "mlp.gate_proj.weight"] = lin(INTER, HIDDEN)
        w[p + "mlp.up_proj.weight"] = lin(INTER, HIDDEN)
        w[p + "mlp.down_proj.weight"] = lin(HIDDEN, INTER)
    w["model.norm.weight"] = norm(HIDDEN)
    if not spec["tie"]:
        w["lm_head.weight"] = lin(VOCAB, HIDDEN)
    dt = {"bfloat16": torch.bfloat16, "float16": torch.float16}.get(spec["dtype"], torch.float32)
    # Round to the stored dtype now: the reference then computes with exactly the stored values.
    return {k: v.to(dt).contiguous() for k, v in w.items()}


# --- safetensors, by hand: u64 little-endian header length, JSON header, raw little-endian data.
ST_DTYPE = {torch.float32: "F32", torch.bfloat16: "BF16", torch.float16: "F16"}


def tensor_bytes(t):
    if t.dtype == torch.bfloat16 or t.dtype == torch.float16:
        return t.view(torch.int16).numpy().astype("<i2").tobytes()
    return t.numpy().astype("<f4").tobytes()


def write_safetensors(path, tensors, metadata=None):
    header, blobs, offset = {}, [], 0
    if metadata is not None:
        header["__metadata__"] = metadata
    for name, t in tensors.items():
        b = tensor_bytes(t)
        header[name] = {"dtype": ST_DTYPE[t.dtype], "shape": list(t.shape),
                        "data_offsets": [offset, offset + len(b)]}
        blobs.append(b)
        offset += len(b)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)  # the format pads the header with spaces to 8 bytes
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


# --- the model (float64, full forward, written from the HF modeling files' semantics).
def inv_freq_for(spec, head_dim):
    base = spec["rope_theta"]
    inv = 1.0 / (base ** (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim))
    rs = spec["rope_scaling"]
    if rs is None:
        return inv
    # modeling_rope_utils._compute_llama3_parameters
    factor, lo, hi = rs["factor"], rs["low_freq_factor"], rs["high_freq_factor"]
    old = rs["original_max_position_embeddings"]
    lo_wl, hi_wl = old / lo, old / hi
    out = []
    for f in inv.tolist():
        wl = 2 * math.pi / f
        if wl < hi_wl:
            out.append(f)
        elif wl > lo_wl:
            out.append(f / factor)
        else:
            s = (old / wl - lo) / (hi - lo)
            out.append((1 - s) * f / factor + s * f)
    return torch.tensor(out, dtype=torch.float64)


def rms_norm(x, w, eps=EPS):
    return w * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps))


def rotate_half(x):
    d = x.shape[-1] // 2
    return torch.cat((-x[..., d:], x[..., :d]), dim=-1)


def forward(spec, w, ids):
    """Logits [T, vocab] for the token list ids (positions 0..T-1)."""
    head_dim = spec["head_dim"] or HIDDEN // HEADS
    T = len(ids)
    W = {k: v.to(torch.float64) for k, v in w.items()}
    x = W["model.embed_tokens.weight"][torch.tensor(ids)]
    freqs = torch.arange(T, dtype=torch.float64)[:, None] * inv_freq_for(spec, head_dim)[None]
    emb = torch.cat((freqs, freqs), dim=-1)
    cos, sin = emb.cos(), emb.sin()  # [T, head_dim]
    mask = torch.full((T, T), float("-inf"), dtype=torch.float64).triu(1)
    group = HEADS // KV_HEADS
    for i in range(spec["layers"]):
        p = f"model.layers.{i}."
        h = rms_norm(x, W[p + "input_layernorm.weight"])

        def proj(name):
            y = h @ W[p + f"self_attn.{name}.weight"].T
            b = W.get(p + f"self_attn.{name}.bias")
            return y if b is None else y + b

        q = proj("q_proj").view(T, HEADS, head_dim)
        k = proj("k_proj").view(T, KV_HEADS, head_dim)
        v = proj("v_proj").view(T, KV_HEADS, head_dim)
        if spec["qk_norm"]:
            q = rms_norm(q, W[p + "self_attn.q_norm.weight"])
            k = rms_norm(k, W[p + "self_attn.k_norm.weight"])
        q = q * cos[:, None] + rotate_half(q) * sin[:, None]
        k = k * cos[:, None] + rotate_half(k) * sin[:, None]
        heads = []
        for hh in range(HEADS):
            kv = hh // group  # repeat_kv: query head hh reads kv head hh // group
            s = (q[:, hh] @ k[:, kv].T) / math.sqrt(head_dim) + mask
            heads.append(torch.softmax(s, dim=-1) @ v[:, kv])
        a = torch.cat(heads, dim=-1) @ W[p + "self_attn.o_proj.weight"].T
        if p + "self_attn.o_proj.bias" in W:
            a = a + W[p + "self_attn.o_proj.bias"]
        x = x + a
        h = rms_norm(x, W[p + "post_attention_layernorm.weight"])
        g = h @ W[p + "mlp.gate_proj.weight"].T
        u = h @ W[p + "mlp.up_proj.weight"].T
        x = x + (torch.nn.functional.silu(g) * u) @ W[p + "mlp.down_proj.weight"].T
    x = rms_norm(x, W["model.norm.weight"])
    head = W["model.embed_tokens.weight"] if spec["tie"] else W["lm_head.weight"]
    return x @ head.T


def config_json(spec):
    c = {
        "architectures": [spec["arch"]], "model_type": spec["model_type"],
        "hidden_size": HIDDEN, "intermediate_size": INTER,
        "num_hidden_layers": spec["layers"], "num_attention_heads": HEADS,
        "num_key_value_heads": KV_HEADS, "rms_norm_eps": EPS, "rope_theta": spec["rope_theta"],
        "rope_scaling": spec["rope_scaling"], "vocab_size": VOCAB,
        "tie_word_embeddings": spec["tie"], "max_position_embeddings": MAX_POS,
        "hidden_act": "silu", "torch_dtype": spec["dtype"], "bos_token_id": 1,
        "eos_token_id": 2, "initializer_range": 0.02, "use_cache": True,
        "transformers_version": "4.51.0",
    }
    if spec["head_dim"] is not None:
        c["head_dim"] = spec["head_dim"]
    c.update(spec["extra"])
    return c


def main():
    for name, spec in CHECKPOINTS.items():
        d = os.path.join(OUT, name)
        os.makedirs(d, exist_ok=True)
        for f in os.listdir(d):
            os.remove(os.path.join(d, f))
        w = make_weights(spec)
        with open(os.path.join(d, "config.json"), "w") as f:
            json.dump(config_json(spec), f, indent=2)
            f.write("\n")
        if spec["shards"] == 1:
            write_safetensors(os.path.join(d, "model.safetensors"), w, {"format": "pt"})
        else:
            names = list(w)
            n = spec["shards"]
            per = (len(names) + n - 1) // n
            weight_map, total = {}, 0
            for s in range(n):
                fn = f"model-{s + 1:05d}-of-{n:05d}.safetensors"
                part = {k: w[k] for k in names[s * per:(s + 1) * per]}
                write_safetensors(os.path.join(d, fn), part, {"format": "pt"})
                for k, t in part.items():
                    weight_map[k] = fn
                    total += t.numel() * t.element_size()
            with open(os.path.join(d, "model.safetensors.index.json"), "w") as f:
                json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f,
                          indent=2)
                f.write("\n")

        prefill = forward(spec, w, PROMPT)
        ids = list(PROMPT)
        step_logits, min_margin = [], float("inf")
        last = prefill[-1]
        for step in range(GREEDY_STEPS):
            if step in LOGIT_STEPS:
                step_logits.append(last)
            top2 = torch.topk(last, 2).values
            min_margin = min(min_margin, float(top2[0] - top2[1]))
            ids.append(int(torch.argmax(last)))
            if step + 1 < GREEDY_STEPS:
                last = forward(spec, w, ids)[-1]
        # A near tie would make "identical greedy tokens" a test of rounding luck: refuse it.
        if min_margin < 1e-3:
            sys.exit(f"{name}: greedy margin {min_margin} too small; change the seed")
        write_safetensors(os.path.join(d, "expected.safetensors"), {
            "prefill_logits": prefill.to(torch.float32).contiguous(),
            "step_logits": torch.stack(step_logits).to(torch.float32).contiguous()})
        with open(os.path.join(d, "expected.json"), "w") as f:
            json.dump({"prompt": PROMPT, "greedy_tokens": ids[len(PROMPT):],
                       "logit_steps": LOGIT_STEPS, "min_greedy_margin": min_margin}, f)
            f.write("\n")
        print(f"{name}: {sum(t.numel() for t in w.values())} params, greedy "
              f"{ids[len(PROMPT):len(PROMPT) + 12]}..., min margin {min_margin:.4f}, "
              f"distinct tokens {len(set(ids[len(PROMPT):]))}")


if __name__ == "__main__":
    main()
