#include "runner/hf/decoder.h"

#include <c10/core/InferenceMode.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <set>
#include <string>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "runner/hf/paged_kv_cache.h"
#include "runner/hf/safetensors.h"

namespace switchyard::runner::hf {
namespace {

absl::Status TorchError(const c10::Error& e, const std::string& context) {
  std::string what = e.what_without_backtrace();
  if (absl::StrContains(what, "out of memory") ||
      absl::StrContains(what, "can't allocate memory")) {
    return absl::ResourceExhaustedError(absl::StrCat(context, ": out of memory: ", what));
  }
  return absl::InternalError(absl::StrCat(context, ": ", what));
}

std::string ShapeString(at::IntArrayRef shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
}

// Rows `index` of `pool` viewed as [rows, width] (contiguous), as [index.size(), width]:
// index_select on the device, or on the CPU (where index_select dispatches one copy per row)
// with `cpu_index` as one memcpy per row.
at::Tensor GatherRows(const at::Tensor& pool, const at::Tensor& index,
                      const std::vector<int64_t>& cpu_index, int64_t width) {
  if (!pool.is_cpu()) return pool.view({-1, width}).index_select(0, index);
  const int64_t n = static_cast<int64_t>(cpu_index.size());
  at::Tensor out = at::empty({n, width}, pool.options());
  const size_t row_bytes = static_cast<size_t>(width) * pool.element_size();
  const char* src = static_cast<const char*>(pool.data_ptr());
  char* dst = static_cast<char*>(out.data_ptr());
  for (int64_t i = 0; i < n; ++i) {
    std::memcpy(dst + static_cast<size_t>(i) * row_bytes,
                src + static_cast<size_t>(cpu_index[static_cast<size_t>(i)]) * row_bytes,
                row_bytes);
  }
  return out;
}

at::Tensor RotateHalf(const at::Tensor& x) {
  const int64_t half = x.size(-1) / 2;
  return at::cat({x.narrow(-1, half, half).neg(), x.narrow(-1, 0, half)}, -1);
}

// transformers' inv_freq = 1 / theta^(2i/d), with modeling_rope_utils' llama3 rescaling: long
// wavelengths are divided by `factor`, short ones kept, the band between interpolated.
at::Tensor InvFreq(const DecoderConfig& c) {
  const int64_t half = c.head_dim / 2;
  at::Tensor inv = at::empty({half}, at::kDouble);
  auto* p = inv.data_ptr<double>();
  for (int64_t i = 0; i < half; ++i) {
    double f = 1.0 / std::pow(c.rope_theta, static_cast<double>(2 * i) / c.head_dim);
    if (c.rope_scaling) {
      const Llama3RopeScaling& s = *c.rope_scaling;
      const double old = static_cast<double>(s.original_max_position_embeddings);
      const double low_wavelen = old / s.low_freq_factor;
      const double high_wavelen = old / s.high_freq_factor;
      const double wavelen = 2 * M_PI / f;
      if (wavelen > low_wavelen) {
        f = f / s.factor;
      } else if (wavelen >= high_wavelen) {
        const double smooth =
            (old / wavelen - s.low_freq_factor) / (s.high_freq_factor - s.low_freq_factor);
        f = (1 - smooth) * f / s.factor + smooth * f;
      }
    }
    p[i] = f;
  }
  return inv;
}

// Every weight the config implies, with its shape (the names of transformers' state dict), in
// model order so that the first error reported is the first weight of the model that is wrong.
using WeightList = std::vector<std::pair<std::string, std::vector<int64_t>>>;
WeightList ExpectedWeights(const DecoderConfig& c) {
  const int64_t H = c.hidden_size, D = c.head_dim, I = c.intermediate_size;
  const int64_t nq = c.num_attention_heads * D, nkv = c.num_key_value_heads * D;
  WeightList w;
  w.emplace_back("model.embed_tokens.weight", std::vector<int64_t>{c.vocab_size, H});
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    const std::string p = absl::StrCat("model.layers.", l, ".");
    w.emplace_back(p + "input_layernorm.weight", std::vector<int64_t>{H});
    w.emplace_back(p + "self_attn.q_proj.weight", std::vector<int64_t>{nq, H});
    w.emplace_back(p + "self_attn.k_proj.weight", std::vector<int64_t>{nkv, H});
    w.emplace_back(p + "self_attn.v_proj.weight", std::vector<int64_t>{nkv, H});
    if (c.qkv_bias) {
      w.emplace_back(p + "self_attn.q_proj.bias", std::vector<int64_t>{nq});
      w.emplace_back(p + "self_attn.k_proj.bias", std::vector<int64_t>{nkv});
      w.emplace_back(p + "self_attn.v_proj.bias", std::vector<int64_t>{nkv});
    }
    if (c.qk_norm) {
      w.emplace_back(p + "self_attn.q_norm.weight", std::vector<int64_t>{D});
      w.emplace_back(p + "self_attn.k_norm.weight", std::vector<int64_t>{D});
    }
    w.emplace_back(p + "self_attn.o_proj.weight", std::vector<int64_t>{H, nq});
    if (c.o_bias) w.emplace_back(p + "self_attn.o_proj.bias", std::vector<int64_t>{H});
    w.emplace_back(p + "post_attention_layernorm.weight", std::vector<int64_t>{H});
    w.emplace_back(p + "mlp.gate_proj.weight", std::vector<int64_t>{I, H});
    w.emplace_back(p + "mlp.up_proj.weight", std::vector<int64_t>{I, H});
    w.emplace_back(p + "mlp.down_proj.weight", std::vector<int64_t>{H, I});
  }
  w.emplace_back("model.norm.weight", std::vector<int64_t>{H});
  if (!c.tie_word_embeddings)
    w.emplace_back("lm_head.weight", std::vector<int64_t>{c.vocab_size, H});
  return w;
}

}  // namespace

absl::StatusOr<std::unique_ptr<ContiguousKvCache>> ContiguousKvCache::Create(
    const DecoderConfig& config, int64_t batch, int64_t capacity, at::ScalarType dtype,
    at::Device device) {
  if (batch < 1 || batch > 4096) {
    return absl::InvalidArgumentError(absl::StrCat("KV cache batch ", batch, " not in [1, 4096]"));
  }
  if (capacity < 1 || capacity > config.max_position_embeddings) {
    return absl::InvalidArgumentError(absl::StrCat(
        "KV cache capacity ", capacity,
        " not in [1, max_position_embeddings = ", config.max_position_embeddings, "]"));
  }
  std::unique_ptr<ContiguousKvCache> cache(new ContiguousKvCache());
  cache->batch_ = batch;
  cache->capacity_ = capacity;
  try {
    c10::InferenceMode guard;
    auto options = at::TensorOptions().dtype(dtype).device(device);
    for (int64_t l = 0; l < config.num_hidden_layers; ++l) {
      cache->keys_.push_back(
          at::empty({batch, config.num_key_value_heads, capacity, config.head_dim}, options));
      cache->values_.push_back(
          at::empty({batch, config.num_key_value_heads, capacity, config.head_dim}, options));
    }
  } catch (const c10::Error& e) {
    absl::Status s = TorchError(e, "KV cache");
    return absl::ResourceExhaustedError(s.message());
  }
  return cache;
}

absl::StatusOr<std::pair<at::Tensor, at::Tensor>> ContiguousKvCache::Append(int64_t layer,
                                                                            const at::Tensor& k,
                                                                            const at::Tensor& v) {
  if (layer < 0 || layer >= static_cast<int64_t>(keys_.size())) {
    return absl::InvalidArgumentError(absl::StrCat("KV cache has no layer ", layer));
  }
  const at::Tensor& kb = keys_[layer];
  if (k.dim() != 4 || k.size(0) != batch_ || k.size(1) != kb.size(1) || k.size(3) != kb.size(3) ||
      !v.sizes().equals(k.sizes())) {
    return absl::InvalidArgumentError(absl::StrCat("KV cache: keys ", ShapeString(k.sizes()),
                                                   " do not fit ", ShapeString(kb.sizes())));
  }
  const int64_t t = k.size(2);
  if (length_ + t > capacity_) {
    return absl::ResourceExhaustedError(absl::StrCat("KV cache full: ", length_, " + ", t,
                                                     " tokens exceed its capacity ", capacity_));
  }
  keys_[layer].narrow(2, length_, t).copy_(k);
  values_[layer].narrow(2, length_, t).copy_(v);
  return std::make_pair(keys_[layer].narrow(2, 0, length_ + t),
                        values_[layer].narrow(2, 0, length_ + t));
}

absl::StatusOr<std::unique_ptr<Decoder>> Decoder::Load(const std::filesystem::path& folder,
                                                       at::Device device, at::ScalarType dtype) {
  if (dtype != at::kFloat && dtype != at::kBFloat16 && dtype != at::kHalf) {
    return absl::InvalidArgumentError("compute dtype must be float32, bfloat16 or float16");
  }
  if (dtype == at::kHalf && device.is_cpu()) {
    // libtorch 1.13 has no float16 matrix multiply on the CPU.
    return absl::InvalidArgumentError("float16 compute needs CUDA; use float32 or bfloat16");
  }
  auto config = LoadDecoderConfig(folder);
  if (!config.ok()) return config.status();
  auto ckpt = Checkpoint::Open(folder);
  if (!ckpt.ok()) return ckpt.status();
  const DecoderConfig& c = *config;

  // The whole checkpoint is checked against the config before any weight is converted.
  const WeightList weights = ExpectedWeights(c);
  std::set<std::string> expected;
  for (const auto& [name, shape] : weights) {
    expected.insert(name);
    const StTensorInfo* info = ckpt->Info(name);
    if (info == nullptr) {
      return absl::InvalidArgumentError(absl::StrCat(folder.string(), ": missing tensor '", name,
                                                     "' (expected shape ", ShapeString(shape),
                                                     ")"));
    }
    if (info->shape != shape) {
      return absl::InvalidArgumentError(absl::StrCat(folder.string(), ": tensor '", name,
                                                     "' has shape ", ShapeString(info->shape),
                                                     ", expected ", ShapeString(shape)));
    }
  }
  // A tensor the config does not account for (say, a bias with attention_bias false) would be
  // silently ignored and the model computed wrongly; older checkpoints carry the rotary
  // inv_freq buffers, and tied checkpoints sometimes also store lm_head (transformers ignores it).
  for (const std::string& name : ckpt->Names()) {
    if (expected.count(name) || absl::EndsWith(name, ".rotary_emb.inv_freq") ||
        (c.tie_word_embeddings && name == "lm_head.weight")) {
      continue;
    }
    return absl::InvalidArgumentError(absl::StrCat(folder.string(), ": unexpected tensor '", name,
                                                   "' (", c.architecture_name,
                                                   " with this config.json has no such weight)"));
  }

  std::unique_ptr<Decoder> d(new Decoder());
  d->config_ = c;
  d->device_ = device;
  d->dtype_ = dtype;
  try {
    c10::InferenceMode guard;
    // Shapes were checked above; a name the loop below asks for that ExpectedWeights did not
    // list is still refused rather than read unchecked.
    auto get = [&](const std::string& name) -> absl::StatusOr<at::Tensor> {
      if (!expected.count(name)) {
        return absl::InternalError(absl::StrCat("weight '", name, "' not in the expected set"));
      }
      auto t = ckpt->Tensor(name);
      if (!t.ok()) return t.status();
      // A no-op (the memory-mapped view) when dtype and device already match.
      return t->to(device, dtype);
    };
#define SY_ASSIGN(lhs, expr)          \
  {                                   \
    auto _r = (expr);                 \
    if (!_r.ok()) return _r.status(); \
    lhs = *std::move(_r);             \
  }
    SY_ASSIGN(d->embed_, get("model.embed_tokens.weight"));
    for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
      const std::string p = absl::StrCat("model.layers.", l, ".");
      Layer layer;
      at::Tensor q, k, v, gate, up;
      SY_ASSIGN(layer.input_norm, get(p + "input_layernorm.weight"));
      SY_ASSIGN(q, get(p + "self_attn.q_proj.weight"));
      SY_ASSIGN(k, get(p + "self_attn.k_proj.weight"));
      SY_ASSIGN(v, get(p + "self_attn.v_proj.weight"));
      // Fused so that one matrix multiply computes q, k and v (and one gate and up).
      layer.qkv_w = at::cat({q, k, v}, 0);
      if (c.qkv_bias) {
        SY_ASSIGN(q, get(p + "self_attn.q_proj.bias"));
        SY_ASSIGN(k, get(p + "self_attn.k_proj.bias"));
        SY_ASSIGN(v, get(p + "self_attn.v_proj.bias"));
        layer.qkv_b = at::cat({q, k, v}, 0);
      }
      if (c.qk_norm) {
        SY_ASSIGN(layer.q_norm, get(p + "self_attn.q_norm.weight"));
        SY_ASSIGN(layer.k_norm, get(p + "self_attn.k_norm.weight"));
      }
      SY_ASSIGN(layer.o_w, get(p + "self_attn.o_proj.weight"));
      if (c.o_bias) SY_ASSIGN(layer.o_b, get(p + "self_attn.o_proj.bias"));
      SY_ASSIGN(layer.post_norm, get(p + "post_attention_layernorm.weight"));
      SY_ASSIGN(gate, get(p + "mlp.gate_proj.weight"));
      SY_ASSIGN(up, get(p + "mlp.up_proj.weight"));
      layer.gate_up_w = at::cat({gate, up}, 0);
      SY_ASSIGN(layer.down_w, get(p + "mlp.down_proj.weight"));
      d->layers_.push_back(std::move(layer));
    }
    SY_ASSIGN(d->final_norm_, get("model.norm.weight"));
    if (c.tie_word_embeddings) {
      d->lm_head_ = d->embed_;
    } else {
      SY_ASSIGN(d->lm_head_, get("lm_head.weight"));
    }
#undef SY_ASSIGN
    d->inv_freq_ = InvFreq(c);
  } catch (const c10::Error& e) {
    return TorchError(e, absl::StrCat(folder.string(), ": loading weights"));
  }
  return d;
}

absl::StatusOr<std::unique_ptr<ContiguousKvCache>> Decoder::NewCache(int64_t batch,
                                                                     int64_t capacity) const {
  return ContiguousKvCache::Create(config_, batch, capacity, dtype_, device_);
}

at::Tensor Decoder::RmsNorm(const at::Tensor& x, const at::Tensor& w) const {
  // As transformers' LlamaRMSNorm: statistics in float32, scaled by the weight in model dtype.
  at::Tensor xf = x.to(at::kFloat);
  xf = xf * at::rsqrt(xf.pow(2).mean(-1, /*keepdim=*/true) + config_.rms_norm_eps);
  return w * xf.to(x.scalar_type());
}

absl::StatusOr<at::Tensor> Decoder::Forward(const at::Tensor& token_ids, KvCache* cache) const {
  if (!token_ids.defined() || token_ids.dim() != 2 || token_ids.size(0) < 1 ||
      token_ids.size(1) < 1) {
    return absl::InvalidArgumentError("token_ids must be a non-empty [batch, tokens] tensor");
  }
  if (token_ids.scalar_type() != at::kLong && token_ids.scalar_type() != at::kInt) {
    return absl::InvalidArgumentError("token_ids must be int64 or int32");
  }
  const int64_t B = token_ids.size(0), T = token_ids.size(1);
  if (cache != nullptr && cache->batch() != B) {
    return absl::InvalidArgumentError(
        absl::StrCat("token_ids batch ", B, " != KV cache batch ", cache->batch()));
  }
  const int64_t past = cache != nullptr ? cache->length() : 0;
  if (past + T > config_.max_position_embeddings) {
    return absl::OutOfRangeError(absl::StrCat(past, " + ", T,
                                              " positions exceed max_position_embeddings ",
                                              config_.max_position_embeddings));
  }
  try {
    c10::InferenceMode guard;
    at::Tensor ids = token_ids.to(device_, at::kLong);
    const int64_t lo = ids.min().item<int64_t>(), hi = ids.max().item<int64_t>();
    if (lo < 0 || hi >= config_.vocab_size) {
      return absl::InvalidArgumentError(absl::StrCat(
          "token id ", lo < 0 ? lo : hi, " outside the vocabulary [0, ", config_.vocab_size, ")"));
    }
    auto logits = ForwardImpl(ids, cache, past);
    if (logits.ok() && cache != nullptr) cache->Commit(T);
    return logits;
  } catch (const c10::Error& e) {
    return TorchError(e, "decoder forward");
  }
}

absl::StatusOr<at::Tensor> Decoder::ForwardImpl(const at::Tensor& ids, KvCache* cache,
                                                int64_t past) const {
  const DecoderConfig& c = config_;
  const int64_t B = ids.size(0), T = ids.size(1), D = c.head_dim;
  const int64_t Hq = c.num_attention_heads, Hkv = c.num_key_value_heads, G = Hq / Hkv;
  const int64_t I = c.intermediate_size;

  // Rotary tables for the new positions only (a full table would be max_position_embeddings x
  // head_dim), computed in float64 and rounded once to the compute dtype.
  at::Tensor pos = at::arange(past, past + T, at::kDouble);
  at::Tensor freqs = at::outer(pos, inv_freq_);
  at::Tensor emb = at::cat({freqs, freqs}, -1);
  at::Tensor cos = emb.cos().to(device_, dtype_).view({1, 1, T, D});
  at::Tensor sin = emb.sin().to(device_, dtype_).view({1, 1, T, D});
  // Causal mask over [new tokens, all tokens]: query i (position past + i) sees keys <= past + i.
  at::Tensor mask;
  if (T > 1) {
    at::Tensor future =
        at::ones({T, past + T}, at::TensorOptions().dtype(at::kBool).device(device_))
            .triu(past + 1);
    mask = at::zeros({T, past + T}, at::TensorOptions().dtype(at::kFloat).device(device_))
               .masked_fill(future, -std::numeric_limits<float>::infinity());
  }
  const double scale = 1.0 / std::sqrt(static_cast<double>(D));

  at::Tensor x = at::embedding(embed_, ids);  // [B, T, hidden]
  for (int64_t l = 0; l < static_cast<int64_t>(layers_.size()); ++l) {
    const Layer& layer = layers_[l];
    at::Tensor h = RmsNorm(x, layer.input_norm);
    at::Tensor qkv = at::linear(h, layer.qkv_w, layer.qkv_b);
    at::Tensor q = qkv.narrow(-1, 0, Hq * D).view({B, T, Hq, D});
    at::Tensor k = qkv.narrow(-1, Hq * D, Hkv * D).view({B, T, Hkv, D});
    at::Tensor v = qkv.narrow(-1, (Hq + Hkv) * D, Hkv * D).view({B, T, Hkv, D});
    if (layer.q_norm.defined()) {
      q = RmsNorm(q, layer.q_norm);
      k = RmsNorm(k, layer.k_norm);
    }
    q = q.transpose(1, 2);  // [B, Hq, T, D]
    k = k.transpose(1, 2);  // [B, Hkv, T, D]
    v = v.transpose(1, 2);
    q = q * cos + RotateHalf(q) * sin;
    k = k * cos + RotateHalf(k) * sin;
    at::Tensor keys = k, values = v;
    if (cache != nullptr) {
      auto kv = cache->Append(l, k, v);
      if (!kv.ok()) return kv.status();
      keys = kv->first;
      values = kv->second;
    }
    const int64_t L = keys.size(2);
    // Grouped-query attention without copying keys: query head j uses kv head j / G (as
    // transformers' repeat_kv), so the G query heads of a kv head are stacked along the rows.
    at::Tensor qg = q.reshape({B, Hkv, G * T, D});
    at::Tensor scores = at::matmul(qg, keys.transpose(-1, -2)).mul_(scale).to(at::kFloat);
    if (mask.defined()) scores = (scores.view({B, Hkv, G, T, L}) + mask).view({B, Hkv, G * T, L});
    at::Tensor probs = at::softmax(scores, -1).to(dtype_);
    at::Tensor attn = at::matmul(probs, values)  // [B, Hkv, G * T, D] = [B, Hq, T, D]
                          .view({B, Hq, T, D})
                          .transpose(1, 2)
                          .reshape({B, T, Hq * D});
    x = x + at::linear(attn, layer.o_w, layer.o_b);
    h = RmsNorm(x, layer.post_norm);
    at::Tensor gate_up = at::linear(h, layer.gate_up_w);
    x = x + at::linear(at::silu(gate_up.narrow(-1, 0, I)) * gate_up.narrow(-1, I, I), layer.down_w);
  }
  x = RmsNorm(x, final_norm_);
  return at::linear(x, lm_head_).to(at::kFloat);
}

absl::StatusOr<at::Tensor> Decoder::ForwardRagged(const std::vector<RaggedSequence>& sequences,
                                                  PagedKvCache* cache) const {
  if (sequences.empty() || cache == nullptr) {
    return absl::InvalidArgumentError("a ragged step needs sequences and a paged cache");
  }
  const DecoderConfig& c = config_;
  std::vector<int64_t> ids, positions, last_rows;
  for (const RaggedSequence& s : sequences) {
    if (s.tokens == nullptr || s.tokens->empty() || s.blocks == nullptr || s.past < 0) {
      return absl::InvalidArgumentError("ragged step: a sequence without tokens or blocks");
    }
    const int64_t t = static_cast<int64_t>(s.tokens->size());
    if (s.past + t > c.max_position_embeddings) {
      return absl::OutOfRangeError(absl::StrCat(s.past, " + ", t,
                                                " positions exceed max_position_embeddings ",
                                                c.max_position_embeddings));
    }
    if (cache->BlocksFor(s.past + t) > static_cast<int64_t>(s.blocks->size())) {
      return absl::InvalidArgumentError(absl::StrCat(
          "ragged step: ", s.blocks->size(), " blocks do not hold ", s.past + t, " positions"));
    }
    for (int64_t j = 0; j < t; ++j) {
      const int64_t id = (*s.tokens)[j];
      if (id < 0 || id >= c.vocab_size) {
        return absl::InvalidArgumentError(
            absl::StrCat("token id ", id, " outside the vocabulary [0, ", c.vocab_size, ")"));
      }
      ids.push_back(id);
      positions.push_back(s.past + j);
    }
    last_rows.push_back(static_cast<int64_t>(ids.size()) - 1);
  }
  const int64_t N = static_cast<int64_t>(ids.size()), D = c.head_dim;
  const int64_t Hq = c.num_attention_heads, Hkv = c.num_key_value_heads, G = Hq / Hkv;
  const int64_t I = c.intermediate_size;
  const double scale = 1.0 / std::sqrt(static_cast<double>(D));
  try {
    c10::InferenceMode guard;
    // Pool rows of every new token, in row order: where this step writes its keys and values.
    const int64_t bt = cache->block_tokens();
    auto pool_row = [bt](const std::vector<int32_t>& table, int64_t pos) {
      return static_cast<int64_t>(table[pos / bt]) * bt + pos % bt;
    };
    std::vector<int64_t> new_rows;
    new_rows.reserve(static_cast<size_t>(N));
    for (const RaggedSequence& s : sequences) {
      const int64_t t = static_cast<int64_t>(s.tokens->size());
      for (int64_t p = s.past; p < s.past + t; ++p) new_rows.push_back(pool_row(*s.blocks, p));
    }
    // Rotary tables per new token, from its own position (float64, rounded once, as Forward).
    at::Tensor freqs = at::outer(at::tensor(positions, at::kLong).to(at::kDouble), inv_freq_);
    at::Tensor emb = at::cat({freqs, freqs}, -1);
    at::Tensor cos = emb.cos().to(device_, dtype_).view({N, 1, D});
    at::Tensor sin = emb.sin().to(device_, dtype_).view({N, 1, D});
    // Sequences with one new token (decode steps) attend as one batch: their keys and values
    // gathered straight into [S, Hkv, Lmax, D] (one index_select of rows of head_dim values from
    // the pool viewed as [rows * Hkv, D], so the batched matmuls read them without another copy),
    // shorter ones padded with their position 0 and masked. A step of many decodes thus costs a
    // few large operations per layer instead of a few small ones per sequence. The others
    // (prefill chunks) attend one by one below. The engine puts its decodes first; when they are
    // rows [0, S) their queries and outputs are narrowed views instead of gathers.
    std::vector<int64_t> decode_rows, decode_cpu_index;
    std::vector<int64_t> decode_lengths;
    int64_t longest = 0;
    {
      int64_t row = 0;
      for (size_t i = 0; i < sequences.size(); ++i) {
        const int64_t t = static_cast<int64_t>(sequences[i].tokens->size());
        if (t == 1) {
          decode_rows.push_back(row);
          decode_lengths.push_back(sequences[i].past + 1);
          longest = std::max(longest, sequences[i].past + 1);
        }
        row += t;
      }
    }
    const int64_t S = static_cast<int64_t>(decode_rows.size());
    const bool decodes_first = S > 0 && decode_rows.back() == S - 1;
    at::Tensor decode_rows_t, decode_index, decode_mask;
    if (S > 0) {
      std::vector<float> mask;
      std::vector<int64_t> index(static_cast<size_t>(S * Hkv * longest));
      int64_t* out = index.data();
      size_t d = 0;
      for (size_t i = 0; i < sequences.size(); ++i) {
        if (sequences[i].tokens->size() != 1) continue;
        const int64_t L = decode_lengths[d];
        const std::vector<int32_t>& table = *sequences[i].blocks;
        if (L < longest && mask.empty()) mask.assign(static_cast<size_t>(S * longest), 0.0f);
        for (int64_t h = 0; h < Hkv; ++h) {
          for (int64_t p = 0; p < longest; ++p) *out++ = pool_row(table, p < L ? p : 0) * Hkv + h;
        }
        if (L < longest) {
          std::fill(mask.begin() + static_cast<int64_t>(d) * longest + L,
                    mask.begin() + static_cast<int64_t>(d + 1) * longest,
                    -std::numeric_limits<float>::infinity());
        }
        ++d;
      }
      if (!decodes_first) decode_rows_t = at::tensor(decode_rows, at::kLong).to(device_);
      if (device_.is_cpu()) {
        decode_cpu_index = std::move(index);
      } else {
        decode_index = at::tensor(index, at::kLong).to(device_);
      }
      if (!mask.empty()) decode_mask = at::tensor(mask).view({S, 1, 1, longest}).to(device_);
    }
    const at::Tensor all_new_slots = at::tensor(new_rows, at::kLong).to(device_);
    // Prefill chunks (more than one new token) attend in groups: consecutive chunks of the same
    // length at the same position (prompts of one length submitted together) as one batch, their
    // keys and values gathered into [m, Hkv, L, D] as the decodes' are, under one causal mask.
    struct PrefillGroup {
      int64_t row = 0;    // first row of the group's tokens
      int64_t count = 0;  // chunks
      int64_t t = 0, past = 0;
      std::vector<int64_t> cpu_index;  // pool rows * Hkv + head, (chunk, head, position) order
      at::Tensor index;                // the same on the device (not on the CPU)
      at::Tensor mask;                 // [t, past + t]: 0, or -inf past each query's position
    };
    std::vector<PrefillGroup> groups;
    {
      int64_t row = 0;
      for (size_t i = 0; i < sequences.size(); ++i) {
        const int64_t t = static_cast<int64_t>(sequences[i].tokens->size());
        const int64_t past = sequences[i].past;
        if (t > 1) {
          if (groups.empty() || groups.back().row + groups.back().count * groups.back().t != row ||
              groups.back().t != t || groups.back().past != past) {
            groups.emplace_back();
            groups.back().row = row;
            groups.back().t = t;
            groups.back().past = past;
          }
          PrefillGroup& g = groups.back();
          ++g.count;
          const std::vector<int32_t>& table = *sequences[i].blocks;
          for (int64_t h = 0; h < Hkv; ++h) {
            for (int64_t p = 0; p < past + t; ++p)
              g.cpu_index.push_back(pool_row(table, p) * Hkv + h);
          }
        }
        row += t;
      }
    }
    for (PrefillGroup& g : groups) {
      at::Tensor future =
          at::ones({g.t, g.past + g.t}, at::TensorOptions().dtype(at::kBool).device(device_))
              .triu(g.past + 1);
      g.mask = at::zeros({g.t, g.past + g.t}, at::TensorOptions().dtype(at::kFloat).device(device_))
                   .masked_fill(future, -std::numeric_limits<float>::infinity());
      if (!device_.is_cpu()) g.index = at::tensor(g.cpu_index, at::kLong).to(device_);
    }

    at::Tensor x = at::embedding(embed_, at::tensor(ids, at::kLong).to(device_));  // [N, hidden]
    for (int64_t l = 0; l < static_cast<int64_t>(layers_.size()); ++l) {
      const Layer& layer = layers_[l];
      at::Tensor h = RmsNorm(x, layer.input_norm);
      at::Tensor qkv = at::linear(h, layer.qkv_w, layer.qkv_b);
      at::Tensor q = qkv.narrow(-1, 0, Hq * D).view({N, Hq, D});
      at::Tensor k = qkv.narrow(-1, Hq * D, Hkv * D).view({N, Hkv, D});
      at::Tensor v = qkv.narrow(-1, (Hq + Hkv) * D, Hkv * D).view({N, Hkv, D});
      if (layer.q_norm.defined()) {
        q = RmsNorm(q, layer.q_norm);
        k = RmsNorm(k, layer.k_norm);
      }
      q = q * cos + RotateHalf(q) * sin;
      k = k * cos + RotateHalf(k) * sin;
      at::Tensor& key_pool = cache->keys(l);
      at::Tensor& value_pool = cache->values(l);
      // Every sequence's new keys and values into the pool at once, before anyone reads them.
      key_pool.index_copy_(0, all_new_slots, k);
      value_pool.index_copy_(0, all_new_slots, v);
      at::Tensor attn;
      if (S > 0) {
        at::Tensor qd = (decodes_first ? q.narrow(0, 0, S) : q.index_select(0, decode_rows_t))
                            .view({S, Hkv, G, D});
        at::Tensor keys = GatherRows(key_pool, decode_index, decode_cpu_index, D)
                              .view({S, Hkv, longest, D});  // contiguous
        at::Tensor values =
            GatherRows(value_pool, decode_index, decode_cpu_index, D).view({S, Hkv, longest, D});
        at::Tensor scores =
            at::matmul(qd, keys.transpose(-1, -2)).mul_(scale).to(at::kFloat);  // [S, Hkv, G, Lmax]
        if (decode_mask.defined()) scores = scores + decode_mask;
        at::Tensor probs = at::softmax(scores, -1).to(dtype_);
        at::Tensor out = at::matmul(probs, values).view({S, Hq * D});  // [S, Hkv, G, D]
        if (S == N) {
          attn = out;
        } else {
          attn = at::empty({N, Hq * D}, q.options());
          if (decodes_first) {
            attn.narrow(0, 0, S).copy_(out);
          } else {
            attn.index_copy_(0, decode_rows_t, out);
          }
        }
      } else {
        attn = at::empty({N, Hq * D}, q.options());
      }
      for (const PrefillGroup& g : groups) {
        const int64_t m = g.count, t = g.t, L = g.past + g.t;
        at::Tensor keys = GatherRows(key_pool, g.index, g.cpu_index, D).view({m, Hkv, L, D});
        at::Tensor values = GatherRows(value_pool, g.index, g.cpu_index, D).view({m, Hkv, L, D});
        // Query head j uses kv head j / G (as Forward): rows of a kv head are (g, token).
        at::Tensor qg = q.narrow(0, g.row, m * t)
                            .view({m, t, Hkv, G, D})
                            .permute({0, 2, 3, 1, 4})
                            .reshape({m, Hkv, G * t, D});
        at::Tensor scores = at::matmul(qg, keys.transpose(-1, -2)).mul_(scale).to(at::kFloat);
        scores = (scores.view({m, Hkv, G, t, L}) + g.mask).view({m, Hkv, G * t, L});
        at::Tensor probs = at::softmax(scores, -1).to(dtype_);
        attn.narrow(0, g.row, m * t)
            .copy_(at::matmul(probs, values)  // [m, Hkv, G * t, D] = [m, Hq, t, D]
                       .view({m, Hkv, G, t, D})
                       .permute({0, 3, 1, 2, 4})
                       .reshape({m * t, Hq * D}));
      }
      x = x + at::linear(attn, layer.o_w, layer.o_b);
      h = RmsNorm(x, layer.post_norm);
      at::Tensor gate_up = at::linear(h, layer.gate_up_w);
      x = x +
          at::linear(at::silu(gate_up.narrow(-1, 0, I)) * gate_up.narrow(-1, I, I), layer.down_w);
    }
    // Only the last token of each sequence needs logits: no [N, vocab] for a prefill.
    x = x.index_select(0, at::tensor(last_rows, at::kLong).to(device_));
    x = RmsNorm(x, final_norm_);
    return at::linear(x, lm_head_).to(at::kFloat);
  } catch (const c10::Error& e) {
    return TorchError(e, "decoder ragged step");
  }
}

absl::StatusOr<std::vector<int64_t>> Decoder::GenerateGreedy(
    const std::vector<int64_t>& prompt, int64_t steps, std::vector<at::Tensor>* step_logits) const {
  if (prompt.empty() || steps < 1) {
    return absl::InvalidArgumentError("greedy decoding needs a prompt and at least one step");
  }
  // The last chosen token is never fed back, hence the - 1.
  auto cache = NewCache(1, static_cast<int64_t>(prompt.size()) + steps - 1);
  if (!cache.ok()) return cache.status();
  std::vector<int64_t> out;
  try {
    c10::InferenceMode guard;
    at::Tensor ids = at::tensor(prompt, at::kLong).view({1, -1});
    for (int64_t step = 0; step < steps; ++step) {
      auto logits = Forward(ids, cache->get());
      if (!logits.ok()) return logits.status();
      at::Tensor last = (*logits)[0][-1];
      if (step_logits != nullptr) step_logits->push_back(last.to(at::kCPU).clone());
      out.push_back(last.argmax().item<int64_t>());
      ids = at::full({1, 1}, out.back(), at::kLong);
    }
  } catch (const c10::Error& e) {
    return TorchError(e, "greedy decoding");
  }
  return out;
}

}  // namespace switchyard::runner::hf
