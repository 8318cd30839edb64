#include "runner/hf/whisper_transcribe.h"

#include <c10/core/InferenceMode.h>

#include <algorithm>
#include <fstream>
#include <limits>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "runner/hf/json_bounded.h"
#include "runner/hf/log_mel.h"

namespace switchyard::runner::hf {
namespace {

using nlohmann::json;

constexpr uint64_t kMaxJsonBytes = uint64_t{4} << 20;
constexpr double kTimePrecision = 0.02;  // seconds per timestamp token
constexpr double kFrameSeconds = static_cast<double>(kWhisperHop) / kWhisperSampleRate;
constexpr float kNegInf = -std::numeric_limits<float>::infinity();

absl::StatusOr<std::string> ReadSmallFile(const std::filesystem::path& path) {
  std::error_code ec;
  const uint64_t size = std::filesystem::file_size(path, ec);
  if (ec) return absl::NotFoundError(absl::StrCat(path.string(), ": ", ec.message()));
  if (size > kMaxJsonBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat(path.string(), ": ", size, " bytes exceeds the limit of ", kMaxJsonBytes));
  }
  std::ifstream in(path, std::ios::binary);
  std::string text(size, '\0');
  if (!in.read(text.data(), static_cast<std::streamsize>(size))) {
    return absl::InvalidArgumentError(path.string() + ": cannot read");
  }
  return text;
}

// <|xx|> or <|xxx|> with lowercase ASCII letters: Whisper's language tokens.
bool IsLanguageToken(const std::string& t) {
  if (t.size() < 6 || t.size() > 7 || !absl::StartsWith(t, "<|") || !absl::EndsWith(t, "|>")) {
    return false;
  }
  for (size_t i = 2; i + 2 < t.size(); ++i) {
    if (t[i] < 'a' || t[i] > 'z') return false;
  }
  return true;
}

absl::Status ReadIdList(const json& j, const std::string& field, int64_t vocab_size,
                        const std::string& source, std::vector<int64_t>* out) {
  auto it = j.find(field);
  if (it == j.end() || it->is_null()) return absl::OkStatus();
  if (!it->is_array() || it->size() > 65536) {
    return absl::InvalidArgumentError(
        absl::StrCat(source, ": ", field, ": must be a list of at most 65536 token ids"));
  }
  for (const json& x : *it) {
    if (!x.is_number_integer() || x.get<int64_t>() < 0 || x.get<int64_t>() >= vocab_size) {
      return absl::InvalidArgumentError(absl::StrCat(source, ": ", field, ": ",
                                                     x.dump().substr(0, 40),
                                                     " is not a token id of the vocabulary"));
    }
    out->push_back(x.get<int64_t>());
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<WhisperGenerationConfig> ParseWhisperGenerationConfig(const std::string& json_text,
                                                                     int64_t vocab_size,
                                                                     const std::string& source) {
  if (json_text.size() > kMaxJsonBytes) {
    return absl::InvalidArgumentError(absl::StrCat(source, ": over ", kMaxJsonBytes, " bytes"));
  }
  auto parsed = ParseBoundedJson(json_text, source);
  if (!parsed.ok()) return parsed.status();
  const json& j = *parsed;
  if (!j.is_object()) return absl::InvalidArgumentError(source + ": expected a JSON object");
  WhisperGenerationConfig g;
  if (auto s = ReadIdList(j, "suppress_tokens", vocab_size, source, &g.suppress_tokens); !s.ok()) {
    return s;
  }
  if (auto s = ReadIdList(j, "begin_suppress_tokens", vocab_size, source, &g.begin_suppress_tokens);
      !s.ok()) {
    return s;
  }
  if (auto it = j.find("lang_to_id"); it != j.end() && !it->is_null()) {
    if (!it->is_object() || it->size() > 1024) {
      return absl::InvalidArgumentError(
          absl::StrCat(source, ": lang_to_id: must be an object of at most 1024 entries"));
    }
    for (const auto& [name, id] : it->items()) {
      if (!IsLanguageToken(name) || !id.is_number_integer() || id.get<int64_t>() < 0 ||
          id.get<int64_t>() >= vocab_size) {
        return absl::InvalidArgumentError(absl::StrCat(source, ": lang_to_id: entry \"",
                                                       name.substr(0, 40),
                                                       "\" is not <|xx|> -> a token id"));
      }
      g.lang_to_id[name] = id.get<int64_t>();
    }
  }
  if (auto it = j.find("is_multilingual"); it != j.end() && !it->is_null()) {
    if (!it->is_boolean()) {
      return absl::InvalidArgumentError(absl::StrCat(source, ": is_multilingual: not a boolean"));
    }
    g.is_multilingual = it->get<bool>();
  }
  if (auto it = j.find("max_initial_timestamp_index"); it != j.end() && !it->is_null()) {
    if (!it->is_number_integer() || it->get<int64_t>() < 0 || it->get<int64_t>() > 1500) {
      return absl::InvalidArgumentError(
          absl::StrCat(source, ": max_initial_timestamp_index: must be an integer in [0, 1500]"));
    }
    g.max_initial_timestamp_index = it->get<int64_t>();
  }
  return g;
}

absl::StatusOr<std::unique_ptr<WhisperTranscriber>> WhisperTranscriber::Load(
    const std::filesystem::path& folder, at::Device device, at::ScalarType dtype,
    const WhisperLimits& limits) {
  std::unique_ptr<WhisperTranscriber> t(new WhisperTranscriber());
  t->limits_ = limits;
  auto model = WhisperModel::Load(folder, device, dtype);
  if (!model.ok()) return model.status();
  t->model_ = *std::move(model);
  const WhisperConfig& c = t->model_->config();
  auto tokenizer = llm::Tokenizer::CreateFromFile(folder / "tokenizer.json");
  if (!tokenizer.ok()) {
    return absl::Status(tokenizer.status().code(),
                        absl::StrCat(folder.string(), ": ", tokenizer.status().message()));
  }
  t->tokenizer_ = *std::move(tokenizer);
  if (t->tokenizer_->vocab_size() > c.vocab_size) {
    return absl::InvalidArgumentError(absl::StrCat(
        folder.string(), ": tokenizer.json has ids up to ", t->tokenizer_->vocab_size() - 1,
        ", beyond the model's vocab_size ", c.vocab_size));
  }
  const std::filesystem::path gen_path = folder / "generation_config.json";
  if (std::filesystem::exists(gen_path)) {
    auto text = ReadSmallFile(gen_path);
    if (!text.ok()) return text.status();
    auto gen = ParseWhisperGenerationConfig(*text, c.vocab_size, gen_path.string());
    if (!gen.ok()) return gen.status();
    t->generation_ = *std::move(gen);
  }
  auto id = [&](const char* token, int64_t* out) -> absl::Status {
    auto found = t->tokenizer_->TokenId(token);
    if (!found) {
      return absl::InvalidArgumentError(
          absl::StrCat(folder.string(), ": tokenizer.json has no ", token, " token"));
    }
    *out = *found;
    return absl::OkStatus();
  };
  for (auto [token, out] : std::initializer_list<std::pair<const char*, int64_t*>>{
           {"<|endoftext|>", &t->eos_},
           {"<|startoftranscript|>", &t->sot_},
           {"<|transcribe|>", &t->transcribe_},
           {"<|translate|>", &t->translate_},
           {"<|notimestamps|>", &t->no_timestamps_},
           {"<|0.00|>", &t->timestamp_begin_}}) {
    if (auto s = id(token, out); !s.ok()) return s;
  }
  if (t->sot_ != c.decoder_start_token_id) {
    return absl::InvalidArgumentError(
        absl::StrCat(folder.string(), ": decoder_start_token_id ", c.decoder_start_token_id,
                     " is not <|startoftranscript|> (", t->sot_, ")"));
  }
  if (t->timestamp_begin_ <= t->eos_) {
    return absl::InvalidArgumentError(
        absl::StrCat(folder.string(), ": <|0.00|> must come after <|endoftext|>"));
  }
  if (!t->generation_.lang_to_id.empty()) {
    t->languages_ = t->generation_.lang_to_id;
  } else {
    for (const std::string& s : t->tokenizer_->SpecialTokens()) {
      if (IsLanguageToken(s)) t->languages_[s] = *t->tokenizer_->TokenId(s);
    }
  }
  // English-only checkpoints (*.en) have 51864 tokens and no language/task prompt.
  t->multilingual_ =
      t->generation_.is_multilingual.value_or(c.vocab_size != 51864) && !t->languages_.empty();
  return t;
}

void WhisperTranscriber::ApplyTimestampRules(at::Tensor& logits,
                                             const std::vector<int64_t>& generated) const {
  // transformers' WhisperTimeStampLogitsProcessor, for one sequence.
  const int64_t V = logits.size(0), tb = timestamp_begin_;
  logits[no_timestamps_] = kNegInf;
  const size_t n = generated.size();
  const bool last_ts = n >= 1 && generated[n - 1] >= tb;
  const bool penult_ts = n < 2 || generated[n - 2] >= tb;
  if (last_ts) {
    if (penult_ts) {
      logits.narrow(0, tb, V - tb).fill_(kNegInf);  // has to be a text token (or eos)
    } else {
      logits.narrow(0, 0, eos_).fill_(kNegInf);  // cannot be a text token
    }
  }
  int64_t last_timestamp = -1;
  for (int64_t t : generated) {
    if (t >= tb) last_timestamp = t;
  }
  if (last_timestamp >= 0) {
    // Timestamps never decrease; an end timestamp may equal the start that follows it.
    const int64_t limit = (last_ts && !penult_ts) ? last_timestamp : last_timestamp + 1;
    if (limit > tb) logits.narrow(0, tb, std::min(limit, V) - tb).fill_(kNegInf);
  }
  if (n == 0) {
    logits.narrow(0, 0, tb).fill_(kNegInf);
    const int64_t last_allowed = tb + generation_.max_initial_timestamp_index;
    if (last_allowed + 1 < V)
      logits.narrow(0, last_allowed + 1, V - last_allowed - 1).fill_(kNegInf);
  }
  at::Tensor logprobs = at::log_softmax(logits, 0);
  const double ts_logprob = at::logsumexp(logprobs.narrow(0, tb, V - tb), 0).item<double>();
  const double max_text = logprobs.narrow(0, 0, tb).max().item<double>();
  if (ts_logprob > max_text) logits.narrow(0, 0, tb).fill_(kNegInf);
}

absl::StatusOr<std::vector<int64_t>> WhisperTranscriber::DecodeWindow(const at::Tensor& mel,
                                                                      const WhisperRequest& request,
                                                                      int64_t* language) const {
  auto enc = model_->Encode(mel);
  if (!enc.ok()) return enc.status();
  auto state = model_->StartDecoding(*enc);
  if (!state.ok()) return state.status();
  c10::InferenceMode guard;
  auto logits = model_->DecodeStep({sot_}, &*state);
  if (!logits.ok()) return logits.status();
  std::vector<int64_t> rest;
  if (multilingual_) {
    if (*language < 0) {
      // HF's detect_language: argmax over the language tokens after <|startoftranscript|>.
      at::Tensor last = logits->select(0, logits->size(0) - 1);
      float best = kNegInf;
      for (const auto& [name, lang_id] : languages_) {
        const float v = last[lang_id].item<float>();
        if (*language < 0 || v > best) {
          best = v;
          *language = lang_id;
        }
      }
    }
    rest.push_back(*language);
    rest.push_back(request.translate ? translate_ : transcribe_);
  }
  if (!request.timestamps) rest.push_back(no_timestamps_);
  const int64_t prompt_length = 1 + static_cast<int64_t>(rest.size());
  if (!rest.empty()) {
    logits = model_->DecodeStep(rest, &*state);
    if (!logits.ok()) return logits.status();
  }
  const int64_t max_new =
      std::min(request.max_new_tokens, model_->config().max_target_positions - prompt_length);
  std::vector<int64_t> generated;
  const int64_t V = model_->config().vocab_size;
  while (static_cast<int64_t>(generated.size()) < max_new) {
    if (request.keep_going) {
      if (absl::Status s = request.keep_going(); !s.ok()) return s;
    }
    at::Tensor last = logits->select(0, logits->size(0) - 1).clone();
    for (int64_t t : generation_.suppress_tokens) last[t] = kNegInf;
    if (generated.empty()) {
      for (int64_t t : generation_.begin_suppress_tokens) last[t] = kNegInf;
    }
    if (request.timestamps && timestamp_begin_ < V) ApplyTimestampRules(last, generated);
    const int64_t next = last.argmax().item<int64_t>();
    if (next == eos_) break;
    generated.push_back(next);
    if (static_cast<int64_t>(generated.size()) == max_new) break;
    logits = model_->DecodeStep({next}, &*state);
    if (!logits.ok()) return logits.status();
  }
  return generated;
}

absl::StatusOr<WhisperResult> WhisperTranscriber::Transcribe(const std::vector<float>& samples,
                                                             const WhisperRequest& request) const {
  const int64_t count = static_cast<int64_t>(samples.size());
  if (count > limits_.max_samples) {
    return absl::InvalidArgumentError(
        absl::StrCat("audio has ", count, " samples, over the limit of ", limits_.max_samples));
  }
  if (request.max_new_tokens < 1) {
    return absl::InvalidArgumentError("max_new_tokens must be at least 1");
  }
  WhisperResult result;
  int64_t language = -1;
  if (!request.language.empty()) {
    if (!multilingual_) {
      if (request.language != "en" && request.language != "<|en|>") {
        return absl::InvalidArgumentError(absl::StrCat(
            "language \"", request.language.substr(0, 40), "\": this model is English-only"));
      }
    } else {
      const std::string token = absl::StartsWith(request.language, "<|")
                                    ? request.language
                                    : absl::StrCat("<|", request.language, "|>");
      auto it = languages_.find(token);
      if (it == languages_.end()) {
        return absl::InvalidArgumentError(absl::StrCat(
            "language \"", request.language.substr(0, 40), "\" is not one of the model's"));
      }
      language = it->second;
    }
  }
  if (request.translate && !multilingual_) {
    return absl::InvalidArgumentError("translate needs a multilingual model");
  }
  if (count == 0) return result;
  const int64_t n_mels = model_->config().num_mel_bins;
  const int64_t content_frames = std::max<int64_t>(1, count / kWhisperHop);
  auto decode_text = [&](const std::vector<int64_t>& tokens) -> absl::StatusOr<std::string> {
    std::vector<int32_t> text_ids;
    for (int64_t t : tokens) {
      if (t < timestamp_begin_ && !tokenizer_->IsSpecial(static_cast<int32_t>(t))) {
        text_ids.push_back(static_cast<int32_t>(t));
      }
    }
    return tokenizer_->Decode(text_ids, /*skip_special=*/true);
  };
  int64_t seek = 0;  // mel frames
  while (seek < content_frames) {
    if (request.keep_going) {
      if (absl::Status s = request.keep_going(); !s.ok()) return s;
    }
    const int64_t segment = std::min(kWhisperWindowFrames, content_frames - seek);
    const int64_t first = seek * kWhisperHop;
    const int64_t n = std::min(count - first, segment * kWhisperHop);
    auto mel = WhisperLogMel(samples.data() + first, n, n_mels);
    if (!mel.ok()) return mel.status();
    auto tokens = DecodeWindow(*mel, request, &language);
    if (!tokens.ok()) return tokens.status();
    result.window_starts.push_back(seek);
    result.window_tokens.push_back(*tokens);
    const std::vector<int64_t>& tok = *tokens;
    const double offset = static_cast<double>(seek) * kFrameSeconds;
    int64_t advance = segment;
    if (!request.timestamps) {
      auto text = decode_text(tok);
      if (!text.ok()) return text.status();
      result.text += *text;
    } else {
      // openai-whisper's transcribe(): segments between consecutive timestamp pairs.
      auto is_ts = [&](size_t i) { return tok[i] >= timestamp_begin_; };
      const size_t L = tok.size();
      const bool single_ending = L >= 2 && !is_ts(L - 2) && is_ts(L - 1);
      std::vector<size_t> slices;
      for (size_t i = 1; i < L; ++i) {
        if (is_ts(i - 1) && is_ts(i)) slices.push_back(i);
      }
      if (!slices.empty()) {
        if (single_ending) slices.push_back(L);
        size_t last_slice = 0;
        for (size_t cur : slices) {
          std::vector<int64_t> piece(tok.begin() + last_slice, tok.begin() + cur);
          auto text = decode_text(piece);
          if (!text.ok()) return text.status();
          result.chunks.push_back({offset + (piece.front() - timestamp_begin_) * kTimePrecision,
                                   offset + (piece.back() - timestamp_begin_) * kTimePrecision,
                                   *text});
          result.text += *text;
          last_slice = cur;
        }
        if (!single_ending) {
          // Two timestamp tokens = 1 encoder position = 2 mel frames.
          const int64_t last_pos = tok[last_slice - 1] - timestamp_begin_;
          advance = std::min(segment, last_pos * 2);
        }
      } else {
        double duration = static_cast<double>(segment) * kFrameSeconds;
        int64_t last_ts = -1;
        for (int64_t t : tok) {
          if (t >= timestamp_begin_) last_ts = t;
        }
        if (last_ts > timestamp_begin_) duration = (last_ts - timestamp_begin_) * kTimePrecision;
        auto text = decode_text(tok);
        if (!text.ok()) return text.status();
        result.chunks.push_back({offset, offset + duration, *text});
        result.text += *text;
      }
    }
    // A window whose last segment ends at 0.00 would never move on: skip the whole window.
    seek += advance > 0 ? advance : segment;
  }
  if (language >= 0) {
    for (const auto& [name, id] : languages_) {
      if (id == language) result.language = name;
    }
  }
  return result;
}

}  // namespace switchyard::runner::hf
