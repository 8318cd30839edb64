#!/usr/bin/python3
"""Independent PyTorch reference for Whisper checkpoints (issue 21, audio-to-text).

Writes a tiny random-weight WhisperForConditionalGeneration checkpoint folder (config.json,
model.safetensors written by hand, tokenizer.json with Whisper's special tokens,
tokenizer_config.json, generation_config.json) to tests/fixtures/hf/whisper/ together with the
expected log-mel, encoder output, decoder logits and greedy transcriptions that
tests/runner/hf_whisper_test.cc compares the libtorch C++ implementation (src/runner/hf/whisper*,
log_mel*) against. Dev-only: run by a developer when regenerating fixtures, never by CI. Uses
Debian's python3-torch (1.13) and numpy; no transformers, no safetensors package.

Written from the semantics of transformers' modeling_whisper.py, feature_extraction_whisper.py /
audio_utils.py (mel_filter_bank, spectrogram), generation_whisper.py and logits_process.py
(WhisperTimeStampLogitsProcessor), and openai-whisper's transcribe() for long audio. Everything is
float64; the log-mel is numpy (framing by hand + np.fft.rfft, not torch.stft); the decoder runs a
full forward over the whole sequence each step (no KV cache). So it shares neither code nor
numerics with the C++ side.
"""

import json
import math
import os
import struct
import sys

import numpy as np
import torch

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
OUT = os.path.join(ROOT, "tests", "fixtures", "hf", "whisper")

D, ENC_LAYERS, DEC_LAYERS, HEADS, FFN, MELS = 64, 2, 2, 4, 128, 80
SRC_POS, TGT_POS = 1500, 64
SEED = 8
MAX_NEW = 24  # greedy tokens per window in the expected transcriptions

# --- tokenizer: GPT-2 byte-level alphabet, three merges, then Whisper's special tokens.
def bytes_to_unicode():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs]))


BYTE = bytes_to_unicode()
VOCAB = {BYTE[b]: b for b in range(256)}
MERGES = [("Ġ", "t"), ("h", "e"), ("Ġt", "he")]
for a, b in MERGES:
    VOCAB[a + b] = len(VOCAB)
TEXT_VOCAB = len(VOCAB)  # 259
LANGS = ["en", "de", "fr"]
SPECIAL = ["<|endoftext|>", "<|startoftranscript|>"] + [f"<|{l}|>" for l in LANGS] + \
    ["<|translate|>", "<|transcribe|>", "<|startoflm|>", "<|startofprev|>", "<|nospeech|>",
     "<|notimestamps|>"]
IDS = {t: TEXT_VOCAB + i for i, t in enumerate(SPECIAL)}
TIMESTAMP_BEGIN = TEXT_VOCAB + len(SPECIAL)
TIMESTAMPS = [f"<|{i * 0.02:.2f}|>" for i in range(1501)]
VOCAB_SIZE = TIMESTAMP_BEGIN + len(TIMESTAMPS)
EOS, SOT = IDS["<|endoftext|>"], IDS["<|startoftranscript|>"]
NO_TS, TRANSCRIBE = IDS["<|notimestamps|>"], IDS["<|transcribe|>"]
LANG_IDS = {f"<|{l}|>": IDS[f"<|{l}|>"] for l in LANGS}
# Control characters and the bytes >= 0x7f (so the expected text is printable ASCII, whose bytes
# the C++ decoder and Python agree on), plus '#' and a merged token.
SUPPRESS = list(range(0, 32)) + list(range(127, 256)) + [35, 256]
BEGIN_SUPPRESS = [220, EOS]  # 'Ġ' and <|endoftext|>, as real checkpoints
MAX_INITIAL_TS = 50


def tokenizer_json():
    added = [{"id": IDS[t], "content": t, "single_word": False, "lstrip": False, "rstrip": False,
              "normalized": False, "special": True} for t in SPECIAL]
    # Recent Whisper tokenizer.json files list the timestamps as non-special added tokens.
    added += [{"id": TIMESTAMP_BEGIN + i, "content": t, "single_word": False, "lstrip": False,
               "rstrip": False, "normalized": False, "special": False}
              for i, t in enumerate(TIMESTAMPS)]
    return {
        "version": "1.0", "truncation": None, "padding": None, "added_tokens": added,
        "normalizer": None,
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True,
                          "use_regex": True},
        "post_processor": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": False,
                           "use_regex": True},
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True,
                    "use_regex": True},
        "model": {"type": "BPE", "dropout": None, "unk_token": None,
                  "continuing_subword_prefix": "", "end_of_word_suffix": "", "fuse_unk": False,
                  "byte_fallback": False, "vocab": VOCAB,
                  "merges": [f"{a} {b}" for a, b in MERGES]},
    }


def decode_text(ids):
    inv = {v: k for k, v in VOCAB.items()}
    byte_of = {c: b for b, c in BYTE.items()}
    out = bytearray()
    for i in ids:
        if i < TEXT_VOCAB:
            out += bytes(byte_of[c] for c in inv[i])
    return out.decode("utf-8", errors="replace")


# --- audio: integer-only, so the C++ test can regenerate it bit for bit (hf_whisper_test.cc).
def make_audio(n, seed):
    x = seed & 0xFFFFFFFF
    out = np.empty(n, dtype=np.int16)
    for i in range(n):
        x = (1103515245 * x + 12345) & 0xFFFFFFFF
        noise = ((x >> 16) & 0xFFFF) - 32768  # [-32768, 32767]
        env = (i // 4000) % 5  # 0.25 s steps of loudness 0..4
        square = 6000 if (i // 19) % 2 == 0 else -6000  # ~421 Hz square wave
        v = (noise * env) // 16 + (square if (i // 16000) % 2 == 0 else 0)
        out[i] = max(-32768, min(32767, v))
    return out


# --- safetensors, by hand.
def write_safetensors(path, tensors, metadata=None):
    header, blobs, offset = {}, [], 0
    if metadata is not None:
        header["__metadata__"] = metadata
    for name, t in tensors.items():
        b = t.contiguous().numpy().astype("<f4").tobytes()
        header[name] = {"dtype": "F32", "shape": list(t.shape),
                        "data_offsets": [offset, offset + len(b)]}
        blobs.append(b)
        offset += len(b)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


# --- log-mel (numpy, float64), from HF's audio_utils.mel_filter_bank / spectrogram.
def hz_to_mel(f):
    f = np.asarray(f, dtype=np.float64)
    mel = 3.0 * f / 200.0
    log_region = f >= 1000.0
    mel = np.where(log_region, 15.0 + np.log(np.maximum(f, 1e-30) / 1000.0) * (27.0 / np.log(6.4)),
                   mel)
    return mel


def mel_to_hz(m):
    m = np.asarray(m, dtype=np.float64)
    f = 200.0 * m / 3.0
    return np.where(m >= 15.0, 1000.0 * np.exp(np.log(6.4) / 27.0 * (m - 15.0)), f)


def mel_filter_bank(n_mels):
    mel_freqs = np.linspace(hz_to_mel(0.0), hz_to_mel(8000.0), n_mels + 2)
    filter_freqs = mel_to_hz(mel_freqs)
    fft_freqs = np.linspace(0, 8000, 201)
    filter_diff = np.diff(filter_freqs)
    slopes = filter_freqs[None, :] - fft_freqs[:, None]
    down = -slopes[:, :-2] / filter_diff[:-1]
    up = slopes[:, 2:] / filter_diff[1:]
    fb = np.maximum(0.0, np.minimum(down, up))
    fb *= (2.0 / (filter_freqs[2:n_mels + 2] - filter_freqs[:n_mels]))[None, :]
    return fb  # [201, n_mels]


def log_mel(samples, n_mels=MELS):
    x = np.zeros(480000, dtype=np.float64)
    n = min(len(samples), 480000)
    x[:n] = samples[:n]
    padded = np.pad(x, 200, mode="reflect")
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(400) / 400)  # periodic Hann
    frames = np.stack([padded[t * 160:t * 160 + 400] for t in range(3001)]) * window
    power = np.abs(np.fft.rfft(frames, axis=-1)) ** 2  # [3001, 201]
    power = power[:-1]
    mel = mel_filter_bank(n_mels).T @ power.T  # [n_mels, 3000]
    lg = np.log10(np.maximum(mel, 1e-10))
    lg = np.maximum(lg, lg.max() - 8.0)
    return (lg + 4.0) / 4.0


# --- the model (float64).
def sinusoids(length, channels):
    inc = math.log(10000) / (channels // 2 - 1)
    inv = torch.exp(-inc * torch.arange(channels // 2, dtype=torch.float64))
    t = torch.arange(length, dtype=torch.float64)[:, None] * inv[None, :]
    return torch.cat([torch.sin(t), torch.cos(t)], dim=1)


def make_weights():
    g = torch.Generator().manual_seed(SEED)

    def lin(o, i):
        return torch.randn(o, i, generator=g) / math.sqrt(i)

    def vec(n, s=0.1):
        return s * torch.randn(n, generator=g)

    w = {}

    def attn(p):
        w[p + "q_proj.weight"], w[p + "q_proj.bias"] = lin(D, D), vec(D)
        w[p + "k_proj.weight"] = lin(D, D)
        w[p + "v_proj.weight"], w[p + "v_proj.bias"] = lin(D, D), vec(D)
        w[p + "out_proj.weight"], w[p + "out_proj.bias"] = lin(D, D), vec(D)

    def norm(p):
        w[p + ".weight"], w[p + ".bias"] = 1.0 + vec(D), vec(D)

    def mlp(p):
        w[p + "fc1.weight"], w[p + "fc1.bias"] = lin(FFN, D), vec(FFN)
        w[p + "fc2.weight"], w[p + "fc2.bias"] = lin(D, FFN), vec(D)

    w["model.encoder.conv1.weight"] = torch.randn(D, MELS, 3, generator=g) / math.sqrt(MELS * 3)
    w["model.encoder.conv1.bias"] = vec(D)
    w["model.encoder.conv2.weight"] = torch.randn(D, D, 3, generator=g) / math.sqrt(D * 3)
    w["model.encoder.conv2.bias"] = vec(D)
    w["model.encoder.embed_positions.weight"] = sinusoids(SRC_POS, D).float()
    for i in range(ENC_LAYERS):
        p = f"model.encoder.layers.{i}."
        attn(p + "self_attn.")
        norm(p + "self_attn_layer_norm")
        mlp(p)
        norm(p + "final_layer_norm")
    norm("model.encoder.layer_norm")
    w["model.decoder.embed_tokens.weight"] = 0.05 * torch.randn(VOCAB_SIZE, D, generator=g)
    w["model.decoder.embed_positions.weight"] = 1.0 * torch.randn(TGT_POS, D, generator=g)
    for i in range(DEC_LAYERS):
        p = f"model.decoder.layers.{i}."
        attn(p + "self_attn.")
        norm(p + "self_attn_layer_norm")
        attn(p + "encoder_attn.")
        norm(p + "encoder_attn_layer_norm")
        mlp(p)
        norm(p + "final_layer_norm")
    norm("model.decoder.layer_norm")
    return {k: v.float().contiguous() for k, v in w.items()}


def layer_norm(x, W, p):
    return torch.nn.functional.layer_norm(x, (D,), W[p + ".weight"], W[p + ".bias"], 1e-5)


def attention(W, p, x, kv, causal):
    hd = D // HEADS
    q = (x @ W[p + "q_proj.weight"].T + W[p + "q_proj.bias"]) * hd ** -0.5
    k = kv @ W[p + "k_proj.weight"].T
    v = kv @ W[p + "v_proj.weight"].T + W[p + "v_proj.bias"]
    T, S = x.shape[0], kv.shape[0]
    outs = []
    for h in range(HEADS):
        s = q[:, h * hd:(h + 1) * hd] @ k[:, h * hd:(h + 1) * hd].T
        if causal:
            s = s + torch.full((T, S), float("-inf"), dtype=torch.float64).triu(1)
        outs.append(torch.softmax(s, -1) @ v[:, h * hd:(h + 1) * hd])
    return torch.cat(outs, -1) @ W[p + "out_proj.weight"].T + W[p + "out_proj.bias"]


def mlp_block(W, p, x):
    h = layer_norm(x, W, p + "final_layer_norm")
    h = torch.nn.functional.gelu(h @ W[p + "fc1.weight"].T + W[p + "fc1.bias"])
    return x + h @ W[p + "fc2.weight"].T + W[p + "fc2.bias"]


def encode(W, mel):
    x = torch.from_numpy(mel)[None]  # [1, mels, 3000]
    x = torch.nn.functional.gelu(torch.nn.functional.conv1d(
        x, W["model.encoder.conv1.weight"], W["model.encoder.conv1.bias"], padding=1))
    x = torch.nn.functional.gelu(torch.nn.functional.conv1d(
        x, W["model.encoder.conv2.weight"], W["model.encoder.conv2.bias"], stride=2, padding=1))
    x = x[0].T + W["model.encoder.embed_positions.weight"]
    for i in range(ENC_LAYERS):
        p = f"model.encoder.layers.{i}."
        h = layer_norm(x, W, p + "self_attn_layer_norm")
        x = x + attention(W, p + "self_attn.", h, h, False)
        x = mlp_block(W, p, x)
    return layer_norm(x, W, "model.encoder.layer_norm")


def decode(W, enc, ids):
    """Logits [len(ids), vocab] for the whole sequence (no cache)."""
    T = len(ids)
    x = W["model.decoder.embed_tokens.weight"][torch.tensor(ids)] + \
        W["model.decoder.embed_positions.weight"][:T]
    for i in range(DEC_LAYERS):
        p = f"model.decoder.layers.{i}."
        h = layer_norm(x, W, p + "self_attn_layer_norm")
        x = x + attention(W, p + "self_attn.", h, h, True)
        h = layer_norm(x, W, p + "encoder_attn_layer_norm")
        x = x + attention(W, p + "encoder_attn.", h, enc, False)
        x = mlp_block(W, p, x)
    x = layer_norm(x, W, "model.decoder.layer_norm")
    return x @ W["model.decoder.embed_tokens.weight"].T


# --- decoding (HF generate with num_beams 1; openai transcribe's seek for long audio).
MARGINS = []


def timestamp_rules(scores, seq):
    tb = TIMESTAMP_BEGIN
    scores[NO_TS] = float("-inf")
    last_ts = len(seq) >= 1 and seq[-1] >= tb
    penult_ts = len(seq) < 2 or seq[-2] >= tb
    if last_ts:
        if penult_ts:
            scores[tb:] = float("-inf")
        else:
            scores[:EOS] = float("-inf")
    ts = [t for t in seq if t >= tb]
    if ts:
        last = ts[-1] if (last_ts and not penult_ts) else ts[-1] + 1
        scores[tb:last] = float("-inf")
    if len(seq) == 0:
        scores[:tb] = float("-inf")
        scores[tb + MAX_INITIAL_TS + 1:] = float("-inf")
    logprobs = torch.log_softmax(scores, -1)
    ts_lp = torch.logsumexp(logprobs[tb:], -1)
    text_max = logprobs[:tb].max()
    if math.isfinite(float(ts_lp)) and math.isfinite(float(text_max)):
        MARGINS.append(abs(float(ts_lp - text_max)))
    if ts_lp > text_max:
        scores[:tb] = float("-inf")
    return scores


def greedy_window(W, mel, lang, timestamps, multilingual=True):
    enc = encode(W, mel)
    detected = None
    if multilingual:
        if lang is None:
            logits = decode(W, enc, [SOT])[-1]
            best = max(LANG_IDS.values(), key=lambda i: float(logits[i]))
            vals = sorted((float(logits[i]) for i in LANG_IDS.values()), reverse=True)
            MARGINS.append(vals[0] - vals[1])
            lang = best
            detected = best
        prompt = [SOT, lang, TRANSCRIBE]
    else:
        prompt = [SOT]
    if not timestamps:
        prompt.append(NO_TS)
    seq = []
    max_new = min(MAX_NEW, TGT_POS - len(prompt))
    while len(seq) < max_new:
        scores = decode(W, enc, prompt + seq)[-1].clone()
        scores[SUPPRESS] = float("-inf")
        if not seq:
            scores[BEGIN_SUPPRESS] = float("-inf")
        if timestamps:
            scores = timestamp_rules(scores, seq)
        top2 = torch.topk(scores, 2).values
        if math.isfinite(float(top2[1])):
            MARGINS.append(float(top2[0] - top2[1]))
        nxt = int(torch.argmax(scores))
        if nxt == EOS:
            break
        seq.append(nxt)
    return seq, lang, detected, prompt


def transcribe(W, audio, lang, timestamps, multilingual=True):
    samples = audio.astype(np.float64) / 32768.0
    content = max(1, len(samples) // 160)
    seek, text, chunks, windows, starts = 0, "", [], [], []
    while seek < content:
        seg = min(3000, content - seek)
        first = seek * 160
        mel = log_mel(samples[first:first + seg * 160])
        tok, lang, _, _ = greedy_window(W, mel, lang, timestamps, multilingual)
        windows.append(tok)
        starts.append(seek)
        offset = seek * 0.01
        advance = seg
        if not timestamps:
            text += decode_text(tok)
        else:
            is_ts = [t >= TIMESTAMP_BEGIN for t in tok]
            single_ending = len(tok) >= 2 and is_ts[-2:] == [False, True]
            slices = [i for i in range(1, len(tok)) if is_ts[i - 1] and is_ts[i]]
            if slices:
                if single_ending:
                    slices.append(len(tok))
                last = 0
                for cur in slices:
                    piece = tok[last:cur]
                    t = decode_text(piece)
                    chunks.append([offset + (piece[0] - TIMESTAMP_BEGIN) * 0.02,
                                   offset + (piece[-1] - TIMESTAMP_BEGIN) * 0.02, t])
                    text += t
                    last = cur
                if not single_ending:
                    advance = min(seg, (tok[last - 1] - TIMESTAMP_BEGIN) * 2)
            else:
                dur = seg * 0.01
                ts = [t for t in tok if t >= TIMESTAMP_BEGIN]
                if ts and ts[-1] != TIMESTAMP_BEGIN:
                    dur = (ts[-1] - TIMESTAMP_BEGIN) * 0.02
                t = decode_text(tok)
                chunks.append([offset, offset + dur, t])
                text += t
        seek += advance if advance > 0 else seg
    return {"text": text, "chunks": chunks, "window_tokens": windows, "window_starts": starts,
            "language": lang}


def main():
    os.makedirs(OUT, exist_ok=True)
    for f in os.listdir(OUT):
        os.remove(os.path.join(OUT, f))
    w = make_weights()
    W = {k: v.double() for k, v in w.items()}
    config = {
        "_name_or_path": "switchyard/whisper-random-tiny", "activation_dropout": 0.0,
        "activation_function": "gelu", "apply_spec_augment": False,
        "architectures": ["WhisperForConditionalGeneration"], "attention_dropout": 0.0,
        "begin_suppress_tokens": BEGIN_SUPPRESS, "bos_token_id": EOS,
        "classifier_proj_size": 256, "d_model": D, "decoder_attention_heads": HEADS,
        "decoder_ffn_dim": FFN, "decoder_layerdrop": 0.0, "decoder_layers": DEC_LAYERS,
        "decoder_start_token_id": SOT, "dropout": 0.0, "encoder_attention_heads": HEADS,
        "encoder_ffn_dim": FFN, "encoder_layerdrop": 0.0, "encoder_layers": ENC_LAYERS,
        "eos_token_id": EOS, "init_std": 0.02, "is_encoder_decoder": True,
        "max_source_positions": SRC_POS, "max_target_positions": TGT_POS,
        "median_filter_width": 7, "model_type": "whisper", "num_hidden_layers": ENC_LAYERS,
        "num_mel_bins": MELS, "pad_token_id": EOS, "scale_embedding": False,
        "torch_dtype": "float32", "transformers_version": "4.46.0", "use_cache": True,
        "use_weighted_layer_sum": False, "vocab_size": VOCAB_SIZE,
    }
    generation = {
        "begin_suppress_tokens": BEGIN_SUPPRESS, "bos_token_id": EOS,
        "decoder_start_token_id": SOT, "eos_token_id": EOS, "is_multilingual": True,
        "lang_to_id": LANG_IDS, "max_initial_timestamp_index": MAX_INITIAL_TS,
        "max_length": TGT_POS, "no_timestamps_token_id": NO_TS, "pad_token_id": EOS,
        "return_timestamps": False, "suppress_tokens": SUPPRESS,
        "task_to_id": {"transcribe": TRANSCRIBE, "translate": IDS["<|translate|>"]},
        "transformers_version": "4.46.0",
    }

    def dump(name, obj):
        with open(os.path.join(OUT, name), "w") as f:
            json.dump(obj, f, indent=1)
            f.write("\n")

    dump("config.json", config)
    dump("generation_config.json", generation)
    dump("tokenizer_config.json", {"bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>",
                                   "model_max_length": 1024})
    dump("tokenizer.json", tokenizer_json())
    write_safetensors(os.path.join(OUT, "model.safetensors"), w, {"format": "pt"})

    short = make_audio(5 * 16000 + 1234, 1)  # ~5.1 s
    long_ = make_audio(65 * 16000, 2)  # 65 s: three windows without timestamps
    mel = log_mel(short.astype(np.float64) / 32768.0)
    enc = encode(W, mel)
    # Logits of every position of the no-timestamp transcription of the short audio.
    res_en = transcribe(W, short, LANG_IDS["<|en|>"], False)
    seq = [SOT, LANG_IDS["<|en|>"], TRANSCRIBE, NO_TS] + res_en["window_tokens"][0]
    logits = decode(W, enc, seq)
    cases = {
        "short_en": res_en,
        "short_detect": transcribe(W, short, None, False),
        "short_en_timestamps": transcribe(W, short, LANG_IDS["<|en|>"], True),
        "short_english_only": transcribe(W, short, None, False, multilingual=False),
        "long_en": transcribe(W, long_, LANG_IDS["<|en|>"], False),
        "long_en_timestamps": transcribe(W, long_, LANG_IDS["<|en|>"], True),
    }
    min_margin = min(MARGINS)
    if min_margin < 1e-3:
        sys.exit(f"greedy margin {min_margin} too small; change the seed")
    write_safetensors(os.path.join(OUT, "expected.safetensors"), {
        "log_mel": torch.from_numpy(mel).float(),
        "encoder": enc.float(),
        "decoder_logits": logits.float(),
        "mel_filters": torch.from_numpy(mel_filter_bank(MELS).T.copy()).float(),
        "mel_filters_128": torch.from_numpy(mel_filter_bank(128).T.copy()).float(),
    })
    dump("expected.json", {
        "audio": {"short": [len(short), 1], "long": [len(long_), 2]},
        "max_new_tokens": MAX_NEW, "decoder_tokens": seq, "cases": cases,
        "min_greedy_margin": min_margin,
        "ids": {"eos": EOS, "sot": SOT, "timestamp_begin": TIMESTAMP_BEGIN, "vocab": VOCAB_SIZE}})
    for name, c in cases.items():
        print(name, "lang", c["language"], "starts", c["window_starts"], "tokens",
              [t[:10] for t in c["window_tokens"]], "chunks", c["chunks"][:3])
    print("min margin", min_margin)


if __name__ == "__main__":
    main()
