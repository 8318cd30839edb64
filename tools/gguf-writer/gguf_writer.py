#!/usr/bin/python3
"""Converts a Hugging Face Llama checkpoint folder (config.json + model.safetensors, as
bench/llm_bench writes with --keep) to a GGUF file of F32 or F16 tensors that llama.cpp loads, so
that llama.cpp runs the very same weights as the engine (bench/llamacpp_bench.mjs).

    /usr/bin/python3 tools/gguf-writer/gguf_writer.py CHECKPOINT_DIR OUT.gguf [--type f32|f16]

Python 3 and numpy (Debian's python3-numpy) only. Scope: LlamaForCausalLM without attention
biases (the smollm2-135m and smollm-360m shapes of llm_bench), one model.safetensors of F32
tensors, no rope scaling. The vocabulary is synthetic (llama.cpp needs one to load a model):
a SentencePiece-style list of <unk>, <s>, </s>, the 256 byte tokens and "t<i>" for the rest, so
text in and out means nothing; the benchmark feeds and reads token ids.

As transformers' convert_hf_to_gguf.py: q_proj and k_proj rows are permuted from the
rotate-half layout of Hugging Face to the interleaved pairs llama.cpp's RoPE uses, 1-D tensors
(norms) stay F32 in an F16 file, and a tied lm_head is left out (llama.cpp then uses
token_embd.weight).
"""
import argparse
import json
import os
import struct
import sys

import numpy as np

GGUF_MAGIC = b"GGUF"
GGUF_VERSION = 3
ALIGNMENT = 32
# gguf value types
T_UINT32, T_INT32, T_FLOAT32, T_BOOL, T_STRING, T_ARRAY, T_UINT64 = 4, 5, 6, 7, 8, 9, 10
# ggml tensor types
GGML_F32, GGML_F16 = 0, 1
# llama_ftype
FTYPE_ALL_F32, FTYPE_MOSTLY_F16 = 0, 1


def read_safetensors(path):
    """Name -> numpy float32 array (memory-mapped) of an F32 safetensors file."""
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        if n > 100_000_000:
            raise ValueError(f"{path}: header of {n} bytes")
        header = json.loads(f.read(n))
    data = np.memmap(path, dtype=np.uint8, mode="r", offset=8 + n)
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        if info["dtype"] != "F32":
            raise ValueError(f"{name}: dtype {info['dtype']}, only F32 is supported")
        begin, end = info["data_offsets"]
        shape = tuple(info["shape"])
        if end - begin != 4 * int(np.prod(shape, dtype=np.int64)):
            raise ValueError(f"{name}: data_offsets do not match shape {shape}")
        out[name] = data[begin:end].view(np.float32).reshape(shape)
    return out


def permute_rope(w, heads):
    # [heads * head_dim, hidden]: within each head, rows (0..d/2, d/2..d) -> interleaved pairs.
    rows = w.shape[0]
    return w.reshape(heads, 2, rows // heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


class Writer:
    def __init__(self):
        self.kv = []  # encoded key/value pairs
        self.tensors = []  # (name, array, ggml type)

    @staticmethod
    def _str(s):
        b = s.encode("utf-8")
        return struct.pack("<Q", len(b)) + b

    def add(self, key, vtype, value):
        enc = self._str(key) + struct.pack("<I", vtype)
        if vtype == T_STRING:
            enc += self._str(value)
        elif vtype == T_UINT32:
            enc += struct.pack("<I", value)
        elif vtype == T_FLOAT32:
            enc += struct.pack("<f", value)
        elif vtype == T_BOOL:
            enc += struct.pack("<?", value)
        else:
            raise ValueError(vtype)
        self.kv.append(enc)

    def add_array(self, key, etype, values):
        enc = self._str(key) + struct.pack("<IIQ", T_ARRAY, etype, len(values))
        if etype == T_STRING:
            enc += b"".join(self._str(v) for v in values)
        elif etype == T_FLOAT32:
            enc += np.asarray(values, dtype="<f4").tobytes()
        elif etype == T_INT32:
            enc += np.asarray(values, dtype="<i4").tobytes()
        else:
            raise ValueError(etype)
        self.kv.append(enc)

    def add_tensor(self, name, array, ggml_type):
        self.tensors.append((name, array, ggml_type))

    def write(self, path):
        infos = b""
        offset = 0
        offsets = []
        for name, array, ggml_type in self.tensors:
            nbytes = array.size * (4 if ggml_type == GGML_F32 else 2)
            dims = list(reversed(array.shape))  # ggml's ne[0] is the innermost dimension
            infos += self._str(name) + struct.pack("<I", len(dims))
            infos += struct.pack(f"<{len(dims)}Q", *dims)
            infos += struct.pack("<IQ", ggml_type, offset)
            offsets.append(offset)
            offset += (nbytes + ALIGNMENT - 1) // ALIGNMENT * ALIGNMENT
        with open(path, "wb") as f:
            f.write(GGUF_MAGIC + struct.pack("<IQQ", GGUF_VERSION, len(self.tensors), len(self.kv)))
            for enc in self.kv:
                f.write(enc)
            f.write(infos)
            f.write(b"\0" * (-f.tell() % ALIGNMENT))
            start = f.tell()
            for (name, array, ggml_type), off in zip(self.tensors, offsets):
                f.write(b"\0" * (start + off - f.tell()))
                dtype = "<f4" if ggml_type == GGML_F32 else "<f2"
                # In slices, so a large embedding is not converted in one piece.
                for i in range(0, array.shape[0], 4096):
                    f.write(np.ascontiguousarray(array[i : i + 4096], dtype=dtype).tobytes())
            f.write(b"\0" * (-f.tell() % ALIGNMENT))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("checkpoint")
    ap.add_argument("out")
    ap.add_argument("--type", choices=["f32", "f16"], default="f32")
    args = ap.parse_args()

    with open(os.path.join(args.checkpoint, "config.json")) as f:
        c = json.load(f)
    if c.get("architectures") != ["LlamaForCausalLM"] or c.get("attention_bias"):
        sys.exit("only LlamaForCausalLM without attention biases is supported")
    if c.get("rope_scaling"):
        sys.exit("rope_scaling is not supported")
    t = read_safetensors(os.path.join(args.checkpoint, "model.safetensors"))
    hidden, heads = c["hidden_size"], c["num_attention_heads"]
    kv_heads = c.get("num_key_value_heads", heads)
    layers, vocab = c["num_hidden_layers"], c["vocab_size"]
    head_dim = c.get("head_dim", hidden // heads)
    f16 = args.type == "f16"
    matrix_type = GGML_F16 if f16 else GGML_F32

    w = Writer()
    w.add("general.architecture", T_STRING, "llama")
    w.add("general.name", T_STRING, os.path.basename(os.path.normpath(args.checkpoint)))
    w.add("general.file_type", T_UINT32, FTYPE_MOSTLY_F16 if f16 else FTYPE_ALL_F32)
    w.add("general.alignment", T_UINT32, ALIGNMENT)
    w.add("llama.context_length", T_UINT32, c["max_position_embeddings"])
    w.add("llama.embedding_length", T_UINT32, hidden)
    w.add("llama.block_count", T_UINT32, layers)
    w.add("llama.feed_forward_length", T_UINT32, c["intermediate_size"])
    w.add("llama.rope.dimension_count", T_UINT32, head_dim)
    w.add("llama.attention.head_count", T_UINT32, heads)
    w.add("llama.attention.head_count_kv", T_UINT32, kv_heads)
    w.add("llama.attention.key_length", T_UINT32, head_dim)
    w.add("llama.attention.value_length", T_UINT32, head_dim)
    w.add("llama.attention.layer_norm_rms_epsilon", T_FLOAT32, c.get("rms_norm_eps", 1e-6))
    w.add("llama.rope.freq_base", T_FLOAT32, c.get("rope_theta", 10000.0))
    w.add("llama.vocab_size", T_UINT32, vocab)
    # The synthetic SentencePiece vocabulary (see the module docstring).
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)]
    tokens += [f"t{i}" for i in range(len(tokens), vocab)]
    types = [2, 3, 3] + [6] * 256 + [1] * (vocab - 259)  # unknown, control, byte, normal
    w.add("tokenizer.ggml.model", T_STRING, "llama")
    w.add_array("tokenizer.ggml.tokens", T_STRING, tokens[:vocab])
    w.add_array("tokenizer.ggml.scores", T_FLOAT32, [0.0] * vocab)
    w.add_array("tokenizer.ggml.token_type", T_INT32, types[:vocab])
    w.add("tokenizer.ggml.unknown_token_id", T_UINT32, 0)
    w.add("tokenizer.ggml.bos_token_id", T_UINT32, 1)
    w.add("tokenizer.ggml.eos_token_id", T_UINT32, 2)
    w.add("tokenizer.ggml.add_bos_token", T_BOOL, False)

    w.add_tensor("token_embd.weight", t["model.embed_tokens.weight"], matrix_type)
    for i in range(layers):
        p = f"model.layers.{i}."
        b = f"blk.{i}."
        w.add_tensor(b + "attn_norm.weight", t[p + "input_layernorm.weight"], GGML_F32)
        q = permute_rope(t[p + "self_attn.q_proj.weight"], heads)
        k = permute_rope(t[p + "self_attn.k_proj.weight"], kv_heads)
        w.add_tensor(b + "attn_q.weight", q, matrix_type)
        w.add_tensor(b + "attn_k.weight", k, matrix_type)
        w.add_tensor(b + "attn_v.weight", t[p + "self_attn.v_proj.weight"], matrix_type)
        w.add_tensor(b + "attn_output.weight", t[p + "self_attn.o_proj.weight"], matrix_type)
        w.add_tensor(b + "ffn_norm.weight", t[p + "post_attention_layernorm.weight"], GGML_F32)
        w.add_tensor(b + "ffn_gate.weight", t[p + "mlp.gate_proj.weight"], matrix_type)
        w.add_tensor(b + "ffn_up.weight", t[p + "mlp.up_proj.weight"], matrix_type)
        w.add_tensor(b + "ffn_down.weight", t[p + "mlp.down_proj.weight"], matrix_type)
    w.add_tensor("output_norm.weight", t["model.norm.weight"], GGML_F32)
    if not c.get("tie_word_embeddings", False):
        w.add_tensor("output.weight", t["lm_head.weight"], matrix_type)
    w.write(args.out)
    print(f"wrote {args.out} ({os.path.getsize(args.out) / 2**20:.1f} MiB, {args.type})")


if __name__ == "__main__":
    main()
