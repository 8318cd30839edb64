#include "runner/hf/whisper.h"

#include <c10/core/InferenceMode.h>

#include <cmath>
#include <fstream>
#include <optional>
#include <set>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "runner/hf/json_bounded.h"
#include "runner/hf/safetensors.h"

namespace switchyard::runner::hf {
namespace {

using nlohmann::json;

constexpr uint64_t kMaxConfigBytes = uint64_t{4} << 20;
constexpr double kLayerNormEps = 1e-5;  // modeling_whisper's nn.LayerNorm default

// Fields that never change what the model computes: bookkeeping, training-only settings
// (dropout, layerdrop, SpecAugment, the classification head) and generation defaults (decoding
// reads generation_config.json, whisper_transcribe.h).
const std::set<std::string>& IgnoredFields() {
  // clang-format off
  static const auto* fields = new std::set<std::string>{
      "model_type", "transformers_version", "_name_or_path", "name_or_path", "use_cache",
      "is_encoder_decoder", "init_std", "dropout", "attention_dropout", "activation_dropout",
      "encoder_layerdrop", "decoder_layerdrop", "use_weighted_layer_sum", "classifier_proj_size",
      "apply_spec_augment", "mask_time_prob", "mask_time_length", "mask_time_min_masks",
      "mask_feature_prob", "mask_feature_length", "mask_feature_min_masks", "median_filter_width",
      "pad_token_id", "bos_token_id", "suppress_tokens", "begin_suppress_tokens",
      "forced_decoder_ids", "max_length", "min_length", "do_sample", "num_beams", "temperature",
      "top_k", "top_p", "repetition_penalty", "length_penalty", "no_repeat_ngram_size",
      "return_dict", "output_hidden_states", "output_attentions", "torchscript", "use_bfloat16",
      "early_stopping", "num_return_sequences", "bad_words_ids", "id2label", "label2id",
      "task_specific_params", "problem_type", "tokenizer_class", "prefix", "sep_token_id",
      "forced_bos_token_id", "forced_eos_token_id", "chunk_size_feed_forward", "pruned_heads",
      "add_cross_attention", "tie_encoder_decoder", "is_decoder", "finetuning_task",
      "attn_implementation", "_attn_implementation", "_attn_implementation_autoset",
      "architectures",
  };
  // clang-format on
  return *fields;
}

const std::set<std::string>& HandledFields() {
  // clang-format off
  static const auto* fields = new std::set<std::string>{
      "d_model", "encoder_layers", "encoder_attention_heads", "encoder_ffn_dim",
      "decoder_layers", "decoder_attention_heads", "decoder_ffn_dim", "num_mel_bins",
      "max_source_positions", "max_target_positions", "vocab_size", "decoder_start_token_id",
      "eos_token_id", "scale_embedding", "tie_word_embeddings", "activation_function",
      "num_hidden_layers", "torch_dtype", "dtype", "quantization_config",
  };
  // clang-format on
  return *fields;
}

absl::Status FieldError(const std::string& source, const std::string& field,
                        const std::string& reason) {
  return absl::InvalidArgumentError(absl::StrCat(source, ": ", field, ": ", reason));
}

bool Present(const json& j, const std::string& field) {
  auto it = j.find(field);
  return it != j.end() && !it->is_null();
}

absl::Status ReadInt(const json& j, const std::string& source, const std::string& field, int64_t lo,
                     int64_t hi, std::optional<int64_t> dflt, int64_t* out) {
  if (!Present(j, field)) {
    if (!dflt) return FieldError(source, field, "missing");
    *out = *dflt;
    return absl::OkStatus();
  }
  const json& v = j.at(field);
  if (!v.is_number_integer()) return FieldError(source, field, "must be an integer");
  const bool in_range = v.is_number_unsigned() ? v.get<uint64_t>() <= static_cast<uint64_t>(hi) &&
                                                     static_cast<int64_t>(v.get<uint64_t>()) >= lo
                                               : v.get<int64_t>() >= lo && v.get<int64_t>() <= hi;
  if (!in_range) {
    return FieldError(source, field,
                      absl::StrCat("must be in [", lo, ", ", hi, "], is ", v.dump()));
  }
  *out = v.get<int64_t>();
  return absl::OkStatus();
}

absl::Status ReadBool(const json& j, const std::string& source, const std::string& field, bool dflt,
                      bool* out) {
  *out = dflt;
  if (!Present(j, field)) return absl::OkStatus();
  if (!j.at(field).is_boolean()) return FieldError(source, field, "must be true or false");
  *out = j.at(field).get<bool>();
  return absl::OkStatus();
}

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

using WeightList = std::vector<std::pair<std::string, std::vector<int64_t>>>;

void AddAttention(WeightList* w, const std::string& p, int64_t d) {
  w->emplace_back(p + "q_proj.weight", std::vector<int64_t>{d, d});
  w->emplace_back(p + "q_proj.bias", std::vector<int64_t>{d});
  w->emplace_back(p + "k_proj.weight", std::vector<int64_t>{d, d});
  w->emplace_back(p + "v_proj.weight", std::vector<int64_t>{d, d});
  w->emplace_back(p + "v_proj.bias", std::vector<int64_t>{d});
  w->emplace_back(p + "out_proj.weight", std::vector<int64_t>{d, d});
  w->emplace_back(p + "out_proj.bias", std::vector<int64_t>{d});
}

void AddNorm(WeightList* w, const std::string& p, int64_t d) {
  w->emplace_back(p + ".weight", std::vector<int64_t>{d});
  w->emplace_back(p + ".bias", std::vector<int64_t>{d});
}

// Every weight the config implies (transformers' state-dict names), in model order. The
// encoder's embed_positions is optional (computed when absent), listed separately.
WeightList ExpectedWeights(const WhisperConfig& c) {
  const int64_t d = c.d_model;
  WeightList w;
  w.emplace_back("model.encoder.conv1.weight", std::vector<int64_t>{d, c.num_mel_bins, 3});
  w.emplace_back("model.encoder.conv1.bias", std::vector<int64_t>{d});
  w.emplace_back("model.encoder.conv2.weight", std::vector<int64_t>{d, d, 3});
  w.emplace_back("model.encoder.conv2.bias", std::vector<int64_t>{d});
  for (int64_t l = 0; l < c.encoder_layers; ++l) {
    const std::string p = absl::StrCat("model.encoder.layers.", l, ".");
    AddAttention(&w, p + "self_attn.", d);
    AddNorm(&w, p + "self_attn_layer_norm", d);
    w.emplace_back(p + "fc1.weight", std::vector<int64_t>{c.encoder_ffn_dim, d});
    w.emplace_back(p + "fc1.bias", std::vector<int64_t>{c.encoder_ffn_dim});
    w.emplace_back(p + "fc2.weight", std::vector<int64_t>{d, c.encoder_ffn_dim});
    w.emplace_back(p + "fc2.bias", std::vector<int64_t>{d});
    AddNorm(&w, p + "final_layer_norm", d);
  }
  AddNorm(&w, "model.encoder.layer_norm", d);
  w.emplace_back("model.decoder.embed_tokens.weight", std::vector<int64_t>{c.vocab_size, d});
  w.emplace_back("model.decoder.embed_positions.weight",
                 std::vector<int64_t>{c.max_target_positions, d});
  for (int64_t l = 0; l < c.decoder_layers; ++l) {
    const std::string p = absl::StrCat("model.decoder.layers.", l, ".");
    AddAttention(&w, p + "self_attn.", d);
    AddNorm(&w, p + "self_attn_layer_norm", d);
    AddAttention(&w, p + "encoder_attn.", d);
    AddNorm(&w, p + "encoder_attn_layer_norm", d);
    w.emplace_back(p + "fc1.weight", std::vector<int64_t>{c.decoder_ffn_dim, d});
    w.emplace_back(p + "fc1.bias", std::vector<int64_t>{c.decoder_ffn_dim});
    w.emplace_back(p + "fc2.weight", std::vector<int64_t>{d, c.decoder_ffn_dim});
    w.emplace_back(p + "fc2.bias", std::vector<int64_t>{d});
    AddNorm(&w, p + "final_layer_norm", d);
  }
  AddNorm(&w, "model.decoder.layer_norm", d);
  if (!c.tie_word_embeddings) {
    w.emplace_back("proj_out.weight", std::vector<int64_t>{c.vocab_size, d});
  }
  return w;
}

constexpr char kEncoderPositions[] = "model.encoder.embed_positions.weight";

}  // namespace

absl::StatusOr<WhisperConfig> ParseWhisperConfig(const std::string& json_text,
                                                 const std::string& source) {
  if (json_text.size() > kMaxConfigBytes) {
    return absl::InvalidArgumentError(absl::StrCat(source, ": over ", kMaxConfigBytes, " bytes"));
  }
  auto parsed = ParseBoundedJson(json_text, source);
  if (!parsed.ok()) return parsed.status();
  const json& j = *parsed;
  if (!j.is_object()) return absl::InvalidArgumentError(source + ": expected a JSON object");
  for (const auto& [key, value] : j.items()) {
    if (!HandledFields().count(key) && !IgnoredFields().count(key)) {
      return FieldError(source, key,
                        "unknown field; it may change the computation, so the checkpoint is "
                        "refused rather than served wrongly");
    }
  }
  if (Present(j, "architectures")) {
    const json& a = j.at("architectures");
    bool ok = a.is_array() && a.size() == 1 && a[0].is_string() &&
              (a[0] == "WhisperForConditionalGeneration");
    if (!ok) {
      return FieldError(source, "architectures",
                        absl::StrCat("must be [\"WhisperForConditionalGeneration\"], is ",
                                     a.dump().substr(0, 200)));
    }
  }
  if (Present(j, "model_type") && j.at("model_type") != "whisper") {
    return FieldError(source, "model_type",
                      absl::StrCat("must be \"whisper\", is ", j.at("model_type").dump()));
  }
  WhisperConfig c;
  struct IntField {
    const char* name;
    int64_t lo, hi;
    std::optional<int64_t> dflt;
    int64_t* out;
  };
  const IntField ints[] = {
      {"d_model", 1, 8192, std::nullopt, &c.d_model},
      {"encoder_layers", 1, 128, std::nullopt, &c.encoder_layers},
      {"encoder_attention_heads", 1, 256, std::nullopt, &c.encoder_attention_heads},
      {"encoder_ffn_dim", 1, 65536, std::nullopt, &c.encoder_ffn_dim},
      {"decoder_layers", 1, 128, std::nullopt, &c.decoder_layers},
      {"decoder_attention_heads", 1, 256, std::nullopt, &c.decoder_attention_heads},
      {"decoder_ffn_dim", 1, 65536, std::nullopt, &c.decoder_ffn_dim},
      {"num_mel_bins", 1, 1024, 80, &c.num_mel_bins},
      {"max_source_positions", 1, 1 << 16, 1500, &c.max_source_positions},
      {"max_target_positions", 4, 4096, 448, &c.max_target_positions},
      {"vocab_size", 1, 1 << 20, std::nullopt, &c.vocab_size},
      {"decoder_start_token_id", 0, (1 << 20) - 1, 50258, &c.decoder_start_token_id},
  };
  for (const IntField& f : ints) {
    if (auto s = ReadInt(j, source, f.name, f.lo, f.hi, f.dflt, f.out); !s.ok()) return s;
  }
  if (c.num_mel_bins != 80 && c.num_mel_bins != 128) {
    return FieldError(
        source, "num_mel_bins",
        absl::StrCat("must be 80 or 128 (the front ends Whisper ships), is ", c.num_mel_bins));
  }
  if (c.max_source_positions != 1500) {
    return FieldError(source, "max_source_positions",
                      absl::StrCat("must be 1500 (30 s windows of 3000 mel frames), is ",
                                   c.max_source_positions));
  }
  if (c.d_model % c.encoder_attention_heads != 0) {
    return FieldError(
        source, "encoder_attention_heads",
        absl::StrCat(c.encoder_attention_heads, " does not divide d_model ", c.d_model));
  }
  if (c.d_model % c.decoder_attention_heads != 0) {
    return FieldError(
        source, "decoder_attention_heads",
        absl::StrCat(c.decoder_attention_heads, " does not divide d_model ", c.d_model));
  }
  if (c.decoder_start_token_id >= c.vocab_size) {
    return FieldError(
        source, "decoder_start_token_id",
        absl::StrCat(c.decoder_start_token_id, " outside the vocabulary of ", c.vocab_size));
  }
  if (Present(j, "eos_token_id")) {
    const json& e = j.at("eos_token_id");
    if (!e.is_number_integer() || e.get<int64_t>() < 0 || e.get<int64_t>() >= c.vocab_size) {
      return FieldError(source, "eos_token_id", "must be one token id inside the vocabulary");
    }
    c.eos_token_id = e.get<int64_t>();
  }
  int64_t hidden_layers = 0;
  if (auto s = ReadInt(j, source, "num_hidden_layers", 1, 128, c.encoder_layers, &hidden_layers);
      !s.ok()) {
    return s;
  }
  if (hidden_layers != c.encoder_layers) {
    return FieldError(source, "num_hidden_layers",
                      absl::StrCat(hidden_layers, " != encoder_layers ", c.encoder_layers));
  }
  if (Present(j, "activation_function") && j.at("activation_function") != "gelu") {
    return FieldError(source, "activation_function",
                      absl::StrCat("only \"gelu\" is supported, is ",
                                   j.at("activation_function").dump().substr(0, 100)));
  }
  if (Present(j, "quantization_config")) {
    return FieldError(source, "quantization_config", "quantized checkpoints are not supported");
  }
  if (auto s = ReadBool(j, source, "scale_embedding", false, &c.scale_embedding); !s.ok()) return s;
  if (auto s = ReadBool(j, source, "tie_word_embeddings", true, &c.tie_word_embeddings); !s.ok()) {
    return s;
  }
  for (const char* f : {"torch_dtype", "dtype"}) {
    if (Present(j, f)) {
      if (!j.at(f).is_string()) return FieldError(source, f, "must be a string");
      c.torch_dtype = j.at(f).get<std::string>();
    }
  }
  return c;
}

absl::StatusOr<WhisperConfig> LoadWhisperConfig(const std::filesystem::path& folder) {
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
  return ParseWhisperConfig(text, path.string());
}

at::Tensor WhisperSinusoids(int64_t length, int64_t channels) {
  const int64_t half = channels / 2;
  const double increment = std::log(10000.0) / static_cast<double>(std::max<int64_t>(half - 1, 1));
  at::Tensor inv = at::exp(-increment * at::arange(half, at::kDouble));
  at::Tensor t = at::outer(at::arange(length, at::kDouble), inv);
  return at::cat({t.sin(), t.cos()}, 1).to(at::kFloat);
}

absl::StatusOr<std::unique_ptr<WhisperModel>> WhisperModel::Load(
    const std::filesystem::path& folder, at::Device device, at::ScalarType dtype) {
  if (dtype != at::kFloat && dtype != at::kBFloat16 && dtype != at::kHalf) {
    return absl::InvalidArgumentError("compute dtype must be float32, bfloat16 or float16");
  }
  if (dtype == at::kHalf && device.is_cpu()) {
    return absl::InvalidArgumentError("float16 compute needs CUDA; use float32 or bfloat16");
  }
  auto config = LoadWhisperConfig(folder);
  if (!config.ok()) return config.status();
  const WhisperConfig& c = *config;
  if (c.d_model % 2 != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(folder.string(), ": d_model ", c.d_model, " must be even"));
  }
  auto ckpt = Checkpoint::Open(folder);
  if (!ckpt.ok()) return ckpt.status();

  const WeightList weights = ExpectedWeights(c);
  std::set<std::string> expected;
  auto check = [&](const std::string& name, const std::vector<int64_t>& shape) -> absl::Status {
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
    return absl::OkStatus();
  };
  for (const auto& [name, shape] : weights) {
    expected.insert(name);
    if (auto s = check(name, shape); !s.ok()) return s;
  }
  const bool stored_positions = ckpt->Has(kEncoderPositions);
  if (stored_positions) {
    expected.insert(kEncoderPositions);
    if (auto s = check(kEncoderPositions, {c.max_source_positions, c.d_model}); !s.ok()) return s;
  }
  for (const std::string& name : ckpt->Names()) {
    if (expected.count(name) || (c.tie_word_embeddings && name == "proj_out.weight")) continue;
    return absl::InvalidArgumentError(absl::StrCat(
        folder.string(), ": unexpected tensor '", name,
        "' (WhisperForConditionalGeneration with this config.json has no such weight)"));
  }

  std::unique_ptr<WhisperModel> m(new WhisperModel());
  m->config_ = c;
  m->device_ = device;
  m->dtype_ = dtype;
  try {
    c10::InferenceMode guard;
    absl::Status error;
    auto get = [&](const std::string& name) -> at::Tensor {
      if (!error.ok()) return {};
      if (!expected.count(name)) {
        error = absl::InternalError(absl::StrCat("weight '", name, "' not in the expected set"));
        return {};
      }
      auto t = ckpt->Tensor(name);
      if (!t.ok()) {
        error = t.status();
        return {};
      }
      return t->to(device, dtype);
    };
    auto attention = [&](const std::string& p) {
      Attention a;
      a.q_w = get(p + "q_proj.weight");
      a.q_b = get(p + "q_proj.bias");
      a.k_w = get(p + "k_proj.weight");
      a.v_w = get(p + "v_proj.weight");
      a.v_b = get(p + "v_proj.bias");
      a.o_w = get(p + "out_proj.weight");
      a.o_b = get(p + "out_proj.bias");
      return a;
    };
    auto layer = [&](const std::string& p, bool decoder) {
      Layer l;
      l.ln1_w = get(p + "self_attn_layer_norm.weight");
      l.ln1_b = get(p + "self_attn_layer_norm.bias");
      l.self_attn = attention(p + "self_attn.");
      if (decoder) {
        l.ln_x_w = get(p + "encoder_attn_layer_norm.weight");
        l.ln_x_b = get(p + "encoder_attn_layer_norm.bias");
        l.cross_attn = attention(p + "encoder_attn.");
      }
      l.ln2_w = get(p + "final_layer_norm.weight");
      l.ln2_b = get(p + "final_layer_norm.bias");
      l.fc1_w = get(p + "fc1.weight");
      l.fc1_b = get(p + "fc1.bias");
      l.fc2_w = get(p + "fc2.weight");
      l.fc2_b = get(p + "fc2.bias");
      return l;
    };
    m->conv1_w_ = get("model.encoder.conv1.weight");
    m->conv1_b_ = get("model.encoder.conv1.bias");
    m->conv2_w_ = get("model.encoder.conv2.weight");
    m->conv2_b_ = get("model.encoder.conv2.bias");
    m->enc_pos_ = stored_positions
                      ? get(kEncoderPositions)
                      : WhisperSinusoids(c.max_source_positions, c.d_model).to(device, dtype);
    for (int64_t l = 0; l < c.encoder_layers; ++l) {
      m->enc_layers_.push_back(layer(absl::StrCat("model.encoder.layers.", l, "."), false));
    }
    m->enc_ln_w_ = get("model.encoder.layer_norm.weight");
    m->enc_ln_b_ = get("model.encoder.layer_norm.bias");
    m->embed_ = get("model.decoder.embed_tokens.weight");
    m->dec_pos_ = get("model.decoder.embed_positions.weight");
    for (int64_t l = 0; l < c.decoder_layers; ++l) {
      m->dec_layers_.push_back(layer(absl::StrCat("model.decoder.layers.", l, "."), true));
    }
    m->dec_ln_w_ = get("model.decoder.layer_norm.weight");
    m->dec_ln_b_ = get("model.decoder.layer_norm.bias");
    m->proj_out_ = c.tie_word_embeddings ? m->embed_ : get("proj_out.weight");
    if (!error.ok()) return error;
  } catch (const c10::Error& e) {
    return TorchError(e, absl::StrCat(folder.string(), ": loading weights"));
  }
  return m;
}

at::Tensor WhisperModel::Attend(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                int64_t heads, const at::Tensor& mask) const {
  // q [1, Tq, d] (already scaled), k/v [1, heads, Tk, hd] -> [1, Tq, d].
  const int64_t T = q.size(1), hd = config_.d_model / heads;
  at::Tensor qh = q.view({1, T, heads, hd}).transpose(1, 2);
  at::Tensor scores = at::matmul(qh, k.transpose(-1, -2)).to(at::kFloat);
  if (mask.defined()) scores = scores + mask;
  at::Tensor probs = at::softmax(scores, -1).to(v.scalar_type());
  return at::matmul(probs, v).transpose(1, 2).reshape({1, T, heads * hd});
}

at::Tensor WhisperModel::Mlp(const Layer& l, const at::Tensor& x) const {
  at::Tensor h = at::layer_norm(x, {config_.d_model}, l.ln2_w, l.ln2_b, kLayerNormEps);
  h = at::gelu(at::linear(h, l.fc1_w, l.fc1_b));
  return x + at::linear(h, l.fc2_w, l.fc2_b);
}

absl::StatusOr<at::Tensor> WhisperModel::Encode(const at::Tensor& mel) const {
  if (!mel.defined() || (mel.dim() != 2 && mel.dim() != 3) ||
      (mel.dim() == 3 && mel.size(0) != 1)) {
    return absl::InvalidArgumentError(
        "log-mel must be [mel_bins, frames] or [1, mel_bins, frames]");
  }
  const at::Tensor m3 = mel.dim() == 2 ? mel.unsqueeze(0) : mel;
  if (m3.size(1) != config_.num_mel_bins || m3.size(2) != window_frames()) {
    return absl::InvalidArgumentError(absl::StrCat("log-mel has shape ", ShapeString(m3.sizes()),
                                                   ", expected [1, ", config_.num_mel_bins, ", ",
                                                   window_frames(), "]"));
  }
  if (!at::isFloatingType(m3.scalar_type())) {
    return absl::InvalidArgumentError("log-mel must be a floating-point tensor");
  }
  try {
    c10::InferenceMode guard;
    const int64_t d = config_.d_model, heads = config_.encoder_attention_heads;
    const double scaling = std::pow(static_cast<double>(d / heads), -0.5);
    at::Tensor x = m3.to(device_, dtype_);
    x = at::gelu(at::conv1d(x, conv1_w_, conv1_b_, /*stride=*/1, /*padding=*/1));
    x = at::gelu(at::conv1d(x, conv2_w_, conv2_b_, /*stride=*/2, /*padding=*/1));
    x = x.transpose(1, 2) + enc_pos_.unsqueeze(0);  // [1, 1500, d]
    const int64_t T = x.size(1);
    for (const Layer& l : enc_layers_) {
      at::Tensor h = at::layer_norm(x, {d}, l.ln1_w, l.ln1_b, kLayerNormEps);
      const Attention& a = l.self_attn;
      at::Tensor q = at::linear(h, a.q_w, a.q_b) * scaling;
      at::Tensor k = at::linear(h, a.k_w).view({1, T, heads, d / heads}).transpose(1, 2);
      at::Tensor v = at::linear(h, a.v_w, a.v_b).view({1, T, heads, d / heads}).transpose(1, 2);
      x = x + at::linear(Attend(q, k, v, heads, {}), a.o_w, a.o_b);
      x = Mlp(l, x);
    }
    x = at::layer_norm(x, {d}, enc_ln_w_, enc_ln_b_, kLayerNormEps);
    return x.to(at::kFloat);
  } catch (const c10::Error& e) {
    return TorchError(e, "whisper encoder");
  }
}

absl::StatusOr<WhisperDecoderState> WhisperModel::StartDecoding(
    const at::Tensor& encoder_out) const {
  if (!encoder_out.defined() || encoder_out.dim() != 3 || encoder_out.size(0) != 1 ||
      encoder_out.size(1) < 1 || encoder_out.size(1) > config_.max_source_positions ||
      encoder_out.size(2) != config_.d_model) {
    return absl::InvalidArgumentError(absl::StrCat(
        "encoder output has shape ",
        encoder_out.defined() ? ShapeString(encoder_out.sizes()) : std::string("undefined"),
        ", expected [1, <= ", config_.max_source_positions, ", ", config_.d_model, "]"));
  }
  try {
    c10::InferenceMode guard;
    const int64_t d = config_.d_model, heads = config_.decoder_attention_heads;
    const int64_t S = encoder_out.size(1);
    at::Tensor enc = encoder_out.to(device_, dtype_);
    WhisperDecoderState state;
    for (const Layer& l : dec_layers_) {
      const Attention& a = l.cross_attn;
      state.cross_k.push_back(
          at::linear(enc, a.k_w).view({1, S, heads, d / heads}).transpose(1, 2).contiguous());
      state.cross_v.push_back(at::linear(enc, a.v_w, a.v_b)
                                  .view({1, S, heads, d / heads})
                                  .transpose(1, 2)
                                  .contiguous());
      state.self_k.emplace_back();
      state.self_v.emplace_back();
    }
    return state;
  } catch (const c10::Error& e) {
    return TorchError(e, "whisper cross-attention keys");
  }
}

absl::StatusOr<at::Tensor> WhisperModel::DecodeStep(const std::vector<int64_t>& tokens,
                                                    WhisperDecoderState* state) const {
  if (state == nullptr || state->cross_k.size() != dec_layers_.size() ||
      state->self_k.size() != dec_layers_.size()) {
    return absl::InvalidArgumentError("decoder state not made by StartDecoding for this model");
  }
  const int64_t T = static_cast<int64_t>(tokens.size());
  if (T < 1) return absl::InvalidArgumentError("no tokens to decode");
  if (state->length + T > config_.max_target_positions) {
    return absl::OutOfRangeError(absl::StrCat(state->length, " + ", T,
                                              " positions exceed max_target_positions ",
                                              config_.max_target_positions));
  }
  for (int64_t t : tokens) {
    if (t < 0 || t >= config_.vocab_size) {
      return absl::InvalidArgumentError(
          absl::StrCat("token id ", t, " outside the vocabulary [0, ", config_.vocab_size, ")"));
    }
  }
  try {
    c10::InferenceMode guard;
    const int64_t d = config_.d_model, heads = config_.decoder_attention_heads;
    const int64_t past = state->length;
    const double scaling = std::pow(static_cast<double>(d / heads), -0.5);
    at::Tensor ids = at::tensor(tokens, at::kLong).to(device_);
    at::Tensor x = at::embedding(embed_, ids).unsqueeze(0);
    if (config_.scale_embedding) x = x * std::sqrt(static_cast<double>(d));
    x = x + dec_pos_.narrow(0, past, T).unsqueeze(0);
    at::Tensor mask;
    if (T > 1) {
      // Query i (position past + i) sees keys at positions <= past + i.
      mask = at::full({T, past + T}, -std::numeric_limits<float>::infinity(),
                      at::TensorOptions().dtype(at::kFloat).device(device_))
                 .triu(past + 1);
    }
    std::vector<at::Tensor> new_k(dec_layers_.size()), new_v(dec_layers_.size());
    for (size_t i = 0; i < dec_layers_.size(); ++i) {
      const Layer& l = dec_layers_[i];
      at::Tensor h = at::layer_norm(x, {d}, l.ln1_w, l.ln1_b, kLayerNormEps);
      const Attention& a = l.self_attn;
      at::Tensor q = at::linear(h, a.q_w, a.q_b) * scaling;
      at::Tensor k = at::linear(h, a.k_w).view({1, T, heads, d / heads}).transpose(1, 2);
      at::Tensor v = at::linear(h, a.v_w, a.v_b).view({1, T, heads, d / heads}).transpose(1, 2);
      if (past > 0) {
        k = at::cat({state->self_k[i], k}, 2);
        v = at::cat({state->self_v[i], v}, 2);
      }
      new_k[i] = k;
      new_v[i] = v;
      x = x + at::linear(Attend(q, k, v, heads, mask), a.o_w, a.o_b);
      h = at::layer_norm(x, {d}, l.ln_x_w, l.ln_x_b, kLayerNormEps);
      const Attention& c = l.cross_attn;
      q = at::linear(h, c.q_w, c.q_b) * scaling;
      x = x + at::linear(Attend(q, state->cross_k[i], state->cross_v[i], heads, {}), c.o_w, c.o_b);
      x = Mlp(l, x);
    }
    x = at::layer_norm(x, {d}, dec_ln_w_, dec_ln_b_, kLayerNormEps);
    at::Tensor logits = at::linear(x, proj_out_).to(at::kFloat).squeeze(0);
    // Committed only once every layer succeeded.
    state->self_k = std::move(new_k);
    state->self_v = std::move(new_v);
    state->length = past + T;
    return logits;
  } catch (const c10::Error& e) {
    return TorchError(e, "whisper decoder");
  }
}

}  // namespace switchyard::runner::hf
