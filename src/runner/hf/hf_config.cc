#include "runner/hf/hf_config.h"

#include <cmath>
#include <fstream>
#include <set>

#include "absl/strings/str_cat.h"
#include "runner/hf/json_bounded.h"

namespace switchyard::runner::hf {
namespace {

using nlohmann::json;

constexpr uint64_t kMaxConfigBytes = uint64_t{4} << 20;

// Fields that never change what the decoder computes: bookkeeping, tokenizer ids it does not use,
// and the generation defaults of PretrainedConfig (the engine has its own sampling settings).
const std::set<std::string>& IgnoredFields() {
  // clang-format off
  static const auto* fields = new std::set<std::string>{
      "model_type", "transformers_version", "initializer_range", "use_cache", "pad_token_id",
      "_name_or_path", "name_or_path", "tokenizer_class", "is_llama_config",
      "transformers.js_config", "return_dict", "output_hidden_states", "output_attentions",
      "torchscript", "use_bfloat16", "pruned_heads", "chunk_size_feed_forward",
      "is_encoder_decoder", "is_decoder", "add_cross_attention", "tie_encoder_decoder",
      "max_length", "min_length", "do_sample", "early_stopping", "num_beams", "num_beam_groups",
      "diversity_penalty", "temperature", "top_k", "top_p", "typical_p", "repetition_penalty",
      "length_penalty", "no_repeat_ngram_size", "encoder_no_repeat_ngram_size", "bad_words_ids",
      "num_return_sequences", "output_scores", "return_dict_in_generate", "forced_bos_token_id",
      "forced_eos_token_id", "remove_invalid_values", "exponential_decay_length_penalty",
      "suppress_tokens", "begin_suppress_tokens", "finetuning_task", "id2label", "label2id",
      "prefix", "sep_token_id", "decoder_start_token_id", "task_specific_params", "problem_type",
      "cross_attention_hidden_size", "tf_legacy_loss",
      // Which attention kernel transformers uses; they all compute the same function.
      "attn_implementation", "_attn_implementation", "_attn_implementation_autoset",
      // Only consulted by transformers when the sliding window is on, which is refused.
      "max_window_layers",
  };
  // clang-format on
  return *fields;
}

// Fields read below (honoured, or checked and refused when they would change the math).
const std::set<std::string>& HandledFields() {
  // clang-format off
  static const auto* fields = new std::set<std::string>{
      "architectures", "hidden_size", "intermediate_size", "num_hidden_layers",
      "num_attention_heads", "num_key_value_heads", "head_dim", "rms_norm_eps", "rope_theta",
      "rope_scaling", "rope_parameters", "vocab_size", "tie_word_embeddings",
      "max_position_embeddings", "attention_bias", "hidden_act", "torch_dtype", "dtype",
      "bos_token_id", "eos_token_id", "sliding_window", "use_sliding_window", "layer_types",
      "mlp_bias", "pretraining_tp", "attention_dropout", "rope_interleaved",
      "quantization_config", "use_mrope",
  };
  // clang-format on
  return *fields;
}

class Reader {
 public:
  Reader(const json& j, const std::string& source) : j_(j), source_(source) {}

  absl::Status Error(const std::string& field, const std::string& reason) const {
    return absl::InvalidArgumentError(absl::StrCat(source_, ": ", field, ": ", reason));
  }

  bool Present(const std::string& field) const {
    auto it = j_.find(field);
    return it != j_.end() && !it->is_null();
  }

  // A required (or defaulted) integer in [lo, hi].
  absl::Status Int(const std::string& field, int64_t lo, int64_t hi, std::optional<int64_t> dflt,
                   int64_t* out) const {
    if (!Present(field)) {
      if (!dflt) return Error(field, "missing");
      *out = *dflt;
      return absl::OkStatus();
    }
    const json& v = j_.at(field);
    if (!v.is_number_integer()) return Error(field, "must be an integer");
    // Unsigned values above int64's range must not wrap into it.
    const bool in_range = v.is_number_unsigned() ? v.get<uint64_t>() <= static_cast<uint64_t>(hi) &&
                                                       static_cast<int64_t>(v.get<uint64_t>()) >= lo
                                                 : v.get<int64_t>() >= lo && v.get<int64_t>() <= hi;
    if (!in_range) {
      return Error(field, absl::StrCat("must be in [", lo, ", ", hi, "], is ", v.dump()));
    }
    *out = v.get<int64_t>();
    return absl::OkStatus();
  }

  // A finite number in (lo, hi), or the default when absent.
  absl::Status Double(const std::string& field, double lo, double hi, double dflt,
                      double* out) const {
    *out = dflt;
    if (!Present(field)) return absl::OkStatus();
    return DoubleOf(j_.at(field), field, lo, hi, out);
  }

  absl::Status DoubleOf(const json& v, const std::string& field, double lo, double hi,
                        double* out) const {
    if (!v.is_number()) return Error(field, "must be a number");
    double d = v.get<double>();
    if (!std::isfinite(d) || d <= lo || d >= hi) {
      return Error(field, absl::StrCat("must be in (", lo, ", ", hi, "), is ", v.dump()));
    }
    *out = d;
    return absl::OkStatus();
  }

  absl::Status Bool(const std::string& field, bool dflt, bool* out) const {
    *out = dflt;
    if (!Present(field)) return absl::OkStatus();
    if (!j_.at(field).is_boolean()) return Error(field, "must be true or false");
    *out = j_.at(field).get<bool>();
    return absl::OkStatus();
  }

  absl::Status TokenIds(const std::string& field, std::vector<int64_t>* out) const {
    out->clear();
    if (!Present(field)) return absl::OkStatus();
    const json& v = j_.at(field);
    auto one = [&](const json& x) -> absl::Status {
      if (!x.is_number_integer() || x.get<int64_t>() < 0) {
        return Error(field, "must be a non-negative integer or a list of them");
      }
      out->push_back(x.get<int64_t>());
      return absl::OkStatus();
    };
    if (!v.is_array()) return one(v);
    if (v.size() > 1024) return Error(field, "more than 1024 ids");
    for (const json& x : v) {
      if (absl::Status s = one(x); !s.ok()) return s;
    }
    return absl::OkStatus();
  }

 private:
  const json& j_;
  const std::string& source_;
};

#define SY_RETURN_IF_ERROR(expr)              \
  do {                                        \
    if (absl::Status _s = (expr); !_s.ok()) { \
      return _s;                              \
    }                                         \
  } while (0)

absl::Status ParseRopeScaling(const Reader& r, const json& v, DecoderConfig* c) {
  if (v.is_null()) return absl::OkStatus();
  if (!v.is_object()) return r.Error("rope_scaling", "must be null or an object");
  // transformers accepts the legacy key `type` as well as `rope_type`.
  std::string type;
  for (const char* key : {"rope_type", "type"}) {
    auto it = v.find(key);
    if (it != v.end() && it->is_string()) {
      type = it->get<std::string>();
      break;
    }
  }
  if (type == "default") return absl::OkStatus();  // transformers' name for "no scaling"
  if (type != "llama3") {
    return r.Error("rope_scaling",
                   absl::StrCat("rope type '", type.substr(0, 64),
                                "' is not supported (only llama3 is; linear, dynamic, yarn, "
                                "longrope and others change the rotary frequencies differently)"));
  }
  Llama3RopeScaling s;
  for (const char* key :
       {"factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings"}) {
    if (!v.contains(key) || v.at(key).is_null()) {
      return r.Error(absl::StrCat("rope_scaling.", key), "missing (required by llama3)");
    }
  }
  SY_RETURN_IF_ERROR(r.DoubleOf(v.at("factor"), "rope_scaling.factor", 0, 1e6, &s.factor));
  SY_RETURN_IF_ERROR(r.DoubleOf(v.at("low_freq_factor"), "rope_scaling.low_freq_factor", 0, 1e6,
                                &s.low_freq_factor));
  SY_RETURN_IF_ERROR(r.DoubleOf(v.at("high_freq_factor"), "rope_scaling.high_freq_factor", 0, 1e6,
                                &s.high_freq_factor));
  // The smoothing divides by (high - low).
  if (s.high_freq_factor <= s.low_freq_factor) {
    return r.Error("rope_scaling", "high_freq_factor must exceed low_freq_factor");
  }
  double omp = 0;
  SY_RETURN_IF_ERROR(r.DoubleOf(v.at("original_max_position_embeddings"),
                                "rope_scaling.original_max_position_embeddings", 0, 1e9, &omp));
  if (omp != std::floor(omp)) {
    return r.Error("rope_scaling.original_max_position_embeddings", "must be an integer");
  }
  s.original_max_position_embeddings = static_cast<int64_t>(omp);
  c->rope_scaling = s;
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<DecoderConfig> ParseDecoderConfig(const std::string& json_text,
                                                 const std::string& source) {
  auto parsed = ParseBoundedJson(json_text, source);
  if (!parsed.ok()) return parsed.status();
  const json& j = *parsed;
  if (!j.is_object()) return absl::InvalidArgumentError(source + ": not a JSON object");
  Reader r(j, source);
  DecoderConfig c;

  if (!r.Present("architectures") || !j.at("architectures").is_array() ||
      j.at("architectures").size() != 1 || !j.at("architectures")[0].is_string()) {
    return r.Error("architectures", "must be a list of exactly one name");
  }
  c.architecture_name = j.at("architectures")[0].get<std::string>();
  if (c.architecture_name == "LlamaForCausalLM" || c.architecture_name == "MistralForCausalLM") {
    // Mistral's modeling is Llama's (same weights, no biases); its sliding window is refused
    // below unless it is off (null, as from v0.2 on).
    c.architecture = Architecture::kLlama;
  } else if (c.architecture_name == "Qwen2ForCausalLM") {
    c.architecture = Architecture::kQwen2;
  } else if (c.architecture_name == "Qwen3ForCausalLM") {
    c.architecture = Architecture::kQwen3;
  } else {
    return r.Error("architectures",
                   absl::StrCat("architecture '", c.architecture_name.substr(0, 100),
                                "' is not supported (LlamaForCausalLM, MistralForCausalLM, "
                                "Qwen2ForCausalLM and Qwen3ForCausalLM are)"));
  }

  for (auto it = j.begin(); it != j.end(); ++it) {
    if (HandledFields().count(it.key()) || IgnoredFields().count(it.key())) continue;
    return r.Error(it.key().substr(0, 100),
                   "unknown field; refused because it may change the computation");
  }
  if (r.Present("quantization_config")) {
    return r.Error("quantization_config", "quantized checkpoints are not supported");
  }

  SY_RETURN_IF_ERROR(r.Int("hidden_size", 1, 65536, std::nullopt, &c.hidden_size));
  SY_RETURN_IF_ERROR(r.Int("intermediate_size", 1, 1 << 20, std::nullopt, &c.intermediate_size));
  SY_RETURN_IF_ERROR(r.Int("num_hidden_layers", 1, 1024, std::nullopt, &c.num_hidden_layers));
  SY_RETURN_IF_ERROR(r.Int("num_attention_heads", 1, 1024, std::nullopt, &c.num_attention_heads));
  SY_RETURN_IF_ERROR(r.Int("num_key_value_heads", 1, c.num_attention_heads, c.num_attention_heads,
                           &c.num_key_value_heads));
  if (c.num_attention_heads % c.num_key_value_heads != 0) {
    return r.Error("num_key_value_heads",
                   absl::StrCat(c.num_key_value_heads, " does not divide num_attention_heads ",
                                c.num_attention_heads));
  }
  if (c.architecture == Architecture::kQwen3 && !r.Present("head_dim")) {
    // transformers' Qwen3Config defaults head_dim to 128, not hidden/heads: guessing either way
    // could compute the wrong model, and real Qwen3 configs always state it.
    return r.Error("head_dim", "missing (required for Qwen3ForCausalLM)");
  }
  if (!r.Present("head_dim") && c.hidden_size % c.num_attention_heads != 0) {
    return r.Error("hidden_size", "not divisible by num_attention_heads and no head_dim given");
  }
  SY_RETURN_IF_ERROR(
      r.Int("head_dim", 2, 1024, c.hidden_size / c.num_attention_heads, &c.head_dim));
  if (c.head_dim % 2 != 0) return r.Error("head_dim", "must be even (rotary embedding halves)");
  SY_RETURN_IF_ERROR(r.Int("vocab_size", 1, int64_t{1} << 23, std::nullopt, &c.vocab_size));
  // transformers' defaults when absent (the cache capacity is bounded by it).
  SY_RETURN_IF_ERROR(r.Int("max_position_embeddings", 1, int64_t{1} << 24,
                           c.architecture == Architecture::kLlama ? 2048 : 32768,
                           &c.max_position_embeddings));
  SY_RETURN_IF_ERROR(r.Double("rms_norm_eps", 0, 1, 1e-6, &c.rms_norm_eps));
  SY_RETURN_IF_ERROR(r.Double("rope_theta", 0, 1e12, 10000.0, &c.rope_theta));
  if (j.contains("rope_scaling")) SY_RETURN_IF_ERROR(ParseRopeScaling(r, j.at("rope_scaling"), &c));
  // transformers 5 writes rope_theta and the scaling together as `rope_parameters`.
  if (r.Present("rope_parameters")) {
    const json& rp = j.at("rope_parameters");
    if (!rp.is_object()) return r.Error("rope_parameters", "must be an object");
    if (rp.contains("rope_theta")) {
      SY_RETURN_IF_ERROR(
          r.DoubleOf(rp.at("rope_theta"), "rope_parameters.rope_theta", 0, 1e12, &c.rope_theta));
    }
    SY_RETURN_IF_ERROR(ParseRopeScaling(r, rp, &c));
  }
  SY_RETURN_IF_ERROR(r.Bool("tie_word_embeddings", false, &c.tie_word_embeddings));

  bool attention_bias = false;
  SY_RETURN_IF_ERROR(r.Bool("attention_bias", false, &attention_bias));
  switch (c.architecture) {
    case Architecture::kLlama:
      c.qkv_bias = c.o_bias = attention_bias;
      break;
    case Architecture::kQwen2:
      // modeling_qwen2 hard-codes q/k/v biases and no o_proj bias (attention_bias is unused).
      c.qkv_bias = true;
      c.o_bias = false;
      break;
    case Architecture::kQwen3:
      c.qkv_bias = c.o_bias = attention_bias;
      c.qk_norm = true;
      break;
  }

  if (r.Present("hidden_act")) {
    if (!j.at("hidden_act").is_string() || j.at("hidden_act").get<std::string>() != "silu") {
      return r.Error("hidden_act", absl::StrCat(j.at("hidden_act").dump().substr(0, 64),
                                                " is not supported (only silu is)"));
    }
  }
  bool mlp_bias = false;
  SY_RETURN_IF_ERROR(r.Bool("mlp_bias", false, &mlp_bias));
  if (mlp_bias) return r.Error("mlp_bias", "true is not supported (MLP biases)");
  int64_t tp = 1;
  SY_RETURN_IF_ERROR(r.Int("pretraining_tp", 1, 1024, 1, &tp));
  if (tp != 1) return r.Error("pretraining_tp", "values other than 1 are not supported");
  // Dropout is off at inference; only a sane value is required.
  if (r.Present("attention_dropout")) {
    const json& v = j.at("attention_dropout");
    if (!v.is_number() || !(v.get<double>() >= 0 && v.get<double>() < 1)) {
      return r.Error("attention_dropout", "must be a number in [0, 1)");
    }
  }
  bool mrope = false;  // Qwen2-VL's multimodal rotary sections
  SY_RETURN_IF_ERROR(r.Bool("use_mrope", false, &mrope));
  if (mrope) return r.Error("use_mrope", "true is not supported (multimodal rotary embedding)");
  bool interleaved = false;
  SY_RETURN_IF_ERROR(r.Bool("rope_interleaved", false, &interleaved));
  if (interleaved) return r.Error("rope_interleaved", "true is not supported (rotate_half only)");

  // Sliding-window attention (Mistral-style, or Qwen's use_sliding_window) is not implemented.
  // Qwen2/3 leave it off unless use_sliding_window is true; a Llama config with a window and no
  // switch is taken as Mistral-style, i.e. on.
  if (r.Present("sliding_window")) {
    if (!j.at("sliding_window").is_number_integer()) {
      return r.Error("sliding_window", "must be null or an integer");
    }
    bool use = false;
    SY_RETURN_IF_ERROR(r.Bool("use_sliding_window", c.architecture == Architecture::kLlama, &use));
    if (use) return r.Error("sliding_window", "sliding-window attention is not supported");
  } else {
    bool use = false;
    SY_RETURN_IF_ERROR(r.Bool("use_sliding_window", false, &use));
  }
  if (r.Present("layer_types")) {
    const json& lt = j.at("layer_types");
    if (!lt.is_array()) return r.Error("layer_types", "must be a list");
    for (const json& t : lt) {
      if (!t.is_string() || t.get<std::string>() != "full_attention") {
        return r.Error("layer_types", absl::StrCat("layer type ", t.dump().substr(0, 64),
                                                   " is not supported (only full_attention is)"));
      }
    }
  }

  for (const char* key : {"torch_dtype", "dtype"}) {
    if (r.Present(key)) {
      if (!j.at(key).is_string()) return r.Error(key, "must be a string");
      c.torch_dtype = j.at(key).get<std::string>();
    }
  }
  SY_RETURN_IF_ERROR(r.TokenIds("bos_token_id", &c.bos_token_ids));
  SY_RETURN_IF_ERROR(r.TokenIds("eos_token_id", &c.eos_token_ids));
  return c;
}

absl::StatusOr<DecoderConfig> LoadDecoderConfig(const std::filesystem::path& folder) {
  const std::filesystem::path path = folder / "config.json";
  std::error_code ec;
  uint64_t size = std::filesystem::file_size(path, ec);
  if (ec) return absl::NotFoundError(absl::StrCat(path.string(), ": ", ec.message()));
  if (size > kMaxConfigBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat(path.string(), ": ", size, " bytes exceeds the limit of ", kMaxConfigBytes));
  }
  std::ifstream in(path, std::ios::binary);
  std::string text(size, '\0');
  if (!in.read(text.data(), static_cast<std::streamsize>(size))) {
    return absl::InvalidArgumentError(path.string() + ": cannot read");
  }
  return ParseDecoderConfig(text, path.string());
}

}  // namespace switchyard::runner::hf
