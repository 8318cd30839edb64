#include "orchestrator/pipelines/hf_llm.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <deque>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <system_error>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "orchestrator/pipelines/audio_text_pipelines.h"
#include "runner/hf/decoder.h"
#include "runner/hf/engine.h"
#include "runner/llm/chat_template.h"
#include "runner/llm/tokenizer.h"
#include "runner/torch_model.h"

namespace switchyard::orchestrator {
namespace {

namespace fs = std::filesystem;
constexpr int64_t kMiB = int64_t{1} << 20;
// tokenizer_config.json is small (Qwen3's is 9 KB); a larger one is refused unread.
constexpr int64_t kMaxTokenizerConfigBytes = 4 * kMiB;

absl::StatusOr<std::string> ReadSmallFile(const fs::path& path, int64_t max_bytes) {
  std::error_code ec;
  const auto size = fs::file_size(path, ec);
  if (ec) return absl::NotFoundError(absl::StrCat(path.string(), ": ", ec.message()));
  if (static_cast<int64_t>(size) > max_bytes) {
    return absl::InvalidArgumentError(
        absl::StrCat(path.string(), " is ", size, " bytes, more than ", max_bytes));
  }
  std::ifstream in(path, std::ios::binary);
  std::stringstream text;
  text << in.rdbuf();
  if (!in) return absl::NotFoundError(absl::StrCat(path.string(), ": cannot be read"));
  return text.str();
}

// bos_token / eos_token: a string or {"content": string}; "" when absent.
std::string SpecialTokenText(const nlohmann::json& config, const char* key) {
  auto it = config.find(key);
  if (it == config.end()) return "";
  if (it->is_string()) return it->get<std::string>();
  if (it->is_object() && it->contains("content") && (*it)["content"].is_string()) {
    return (*it)["content"].get<std::string>();
  }
  return "";
}

// chat_template: a string, or a list of {"name", "template"} of which "default" is the chat one.
absl::StatusOr<std::string> ChatTemplateSource(const nlohmann::json& config, const fs::path& file) {
  auto it = config.find("chat_template");
  if (it != config.end() && it->is_string()) return it->get<std::string>();
  if (it != config.end() && it->is_array()) {
    for (const auto& entry : *it) {
      if (entry.is_object() && entry.value("name", "") == "default" && entry.contains("template") &&
          entry["template"].is_string()) {
        return entry["template"].get<std::string>();
      }
    }
  }
  return absl::FailedPreconditionError(
      absl::StrCat(file.string(),
                   " has no chat_template (a string, or a list with a 'default' "
                   "one): the llm pipeline needs the model's own chat format"));
}

// Whether transformers' tokenizer(text) puts BOS first: tokenizer_config.json's add_bos_token
// (Llama 2 style), or a TemplateProcessing post-processor in tokenizer.json (alone or in a
// Sequence) whose "single" template starts with a special token (Llama 3's <|begin_of_text|>).
bool AddsBos(const nlohmann::json& tokenizer_config, const std::string& tokenizer_text) {
  auto flag = tokenizer_config.find("add_bos_token");
  if (flag != tokenizer_config.end() && flag->is_boolean()) return flag->get<bool>();
  if (tokenizer_text.find("TemplateProcessing") == std::string::npos) return false;
  const nlohmann::json tokenizer =
      nlohmann::json::parse(tokenizer_text, nullptr, /*allow_exceptions=*/false);
  if (!tokenizer.is_object() || !tokenizer.contains("post_processor")) return false;
  const nlohmann::json& post = tokenizer["post_processor"];
  auto starts_with_special = [](const nlohmann::json& p) {
    if (!p.is_object() || p.value("type", "") != "TemplateProcessing") return false;
    auto single = p.find("single");
    return single != p.end() && single->is_array() && !single->empty() &&
           (*single)[0].is_object() && (*single)[0].contains("SpecialToken");
  };
  if (starts_with_special(post)) return true;
  if (post.is_object() && post.value("type", "") == "Sequence" && post.contains("processors") &&
      post["processors"].is_array()) {
    for (const auto& p : post["processors"]) {
      if (starts_with_special(p)) return true;
    }
  }
  return false;
}

// The same for a folder with only tokenizer.model: add_bos_token when tokenizer_config.json says,
// else transformers' default for the class, which for LlamaTokenizer (and its fast and CodeLlama
// forms) is true and for the other SentencePiece classes (T5, ...) false.
bool AddsBosWithSentencePiece(const nlohmann::json& tokenizer_config) {
  auto flag = tokenizer_config.find("add_bos_token");
  if (flag != tokenizer_config.end() && flag->is_boolean()) return flag->get<bool>();
  auto it = tokenizer_config.find("tokenizer_class");
  if (it == tokenizer_config.end() || !it->is_string()) return false;
  const std::string& tokenizer_class = it->get_ref<const std::string&>();
  return tokenizer_class == "LlamaTokenizer" || tokenizer_class == "LlamaTokenizerFast" ||
         tokenizer_class == "CodeLlamaTokenizer" || tokenizer_class == "CodeLlamaTokenizerFast";
}

}  // namespace

int64_t SafetensorsBytes(const fs::path& folder) {
  std::error_code ec;
  int64_t total = 0;
  for (fs::directory_iterator it(folder, ec), end; !ec && it != end; it.increment(ec)) {
    if (it->path().extension() != ".safetensors") continue;
    std::error_code size_ec;
    const auto size = fs::file_size(it->path(), size_ec);
    if (!size_ec) total += static_cast<int64_t>(size);
  }
  return total;
}

HfLlm::~HfLlm() = default;

absl::StatusOr<std::shared_ptr<HfLlm>> HfLlm::Load(const ModelConfig& config,
                                                   const std::string& device) {
  auto resolved = runner::ResolveDevice(device);
  if (!resolved.ok()) return resolved.status();
  const at::ScalarType dtype = config.hf.dtype == "bfloat16" ? at::kBFloat16 : at::kFloat;
  std::shared_ptr<HfLlm> model(new HfLlm());
  // The tokenizer files first: they are cheap to check, the weights are not.
  const fs::path config_file = config.path / "tokenizer_config.json";
  auto config_text = ReadSmallFile(config_file, kMaxTokenizerConfigBytes);
  if (!config_text.ok()) return config_text.status();
  nlohmann::json tokenizer_config =
      nlohmann::json::parse(*config_text, nullptr, /*allow_exceptions=*/false);
  if (!tokenizer_config.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(config_file.string(), " is not a JSON object"));
  }
  auto source = ChatTemplateSource(tokenizer_config, config_file);
  if (!source.ok()) return source.status();
  auto chat_template = llm::ChatTemplate::Create(*source);
  if (!chat_template.ok()) {
    return absl::Status(
        chat_template.status().code(),
        absl::StrCat(config_file.string(), ": chat_template: ", chat_template.status().message()));
  }
  model->template_ = *std::move(chat_template);
  model->bos_token_ = SpecialTokenText(tokenizer_config, "bos_token");
  model->eos_token_ = SpecialTokenText(tokenizer_config, "eos_token");
  // tokenizer.json when the folder has one, else SentencePiece's tokenizer.model (Llama 2 style
  // folders that ship only that).
  const fs::path json_file = config.path / "tokenizer.json";
  const fs::path spm_file = config.path / "tokenizer.model";
  const bool use_json = fs::exists(json_file) || !fs::exists(spm_file);
  const fs::path tokenizer_file = use_json ? json_file : spm_file;
  if (!fs::exists(tokenizer_file)) {
    return absl::NotFoundError(
        absl::StrCat(json_file.string(), " is missing, and so is ", spm_file.string()));
  }
  // From the bytes, so that tokenizer_config.json (read and checked above) names bos/eos.
  const llm::TokenizerLimits limits;
  auto tokenizer_text = ReadSmallFile(
      tokenizer_file,
      static_cast<int64_t>(use_json ? limits.max_json_bytes : limits.max_model_bytes));
  if (!tokenizer_text.ok()) return tokenizer_text.status();
  auto tokenizer =
      use_json ? llm::Tokenizer::CreateFromJson(*tokenizer_text, *config_text, limits)
               : llm::Tokenizer::CreateFromSentencePiece(*tokenizer_text, *config_text, limits);
  if (!tokenizer.ok()) {
    return absl::Status(tokenizer.status().code(),
                        absl::StrCat(tokenizer_file.string(), ": ", tokenizer.status().message()));
  }
  model->tokenizer_ = *std::move(tokenizer);
  model->add_bos_ = use_json ? AddsBos(tokenizer_config, *tokenizer_text)
                             : AddsBosWithSentencePiece(tokenizer_config);

  auto decoder = runner::hf::Decoder::Load(config.path, *resolved, dtype);
  if (!decoder.ok()) return decoder.status();
  model->decoder_ = std::shared_ptr<const runner::hf::Decoder>(*std::move(decoder));
  if (model->tokenizer_->vocab_size() > model->decoder_->config().vocab_size) {
    return absl::InvalidArgumentError(
        absl::StrCat(tokenizer_file.filename().string(), " has ", model->tokenizer_->vocab_size(),
                     " ids, the model's vocab_size is ", model->decoder_->config().vocab_size));
  }

  // Stop ids: the model's eos (config.json and tokenizer_config.json) and the end-of-turn
  // tokens the common templates write after each reply, where the vocabulary has them.
  std::vector<int64_t> stops = model->decoder_->config().eos_token_ids;
  if (auto eos = model->tokenizer_->eos_id()) stops.push_back(*eos);
  for (const char* end_of_turn : {"<|im_end|>", "<|eot_id|>", "<|end|>", "<end_of_turn>",
                                  "<|endoftext|>", "<|end_of_text|>"}) {
    if (auto id = model->tokenizer_->TokenId(end_of_turn)) stops.push_back(*id);
  }
  std::sort(stops.begin(), stops.end());
  stops.erase(std::unique(stops.begin(), stops.end()), stops.end());
  model->stop_ids_ = std::move(stops);

  runner::hf::EngineOptions options;
  options.kv_budget_bytes = config.hf.kv_cache_mb * kMiB;
  options.block_tokens = config.hf.block_tokens;
  options.max_batch_sequences = config.hf.max_batch_sequences;
  options.max_batch_tokens = config.hf.max_batch_tokens;
  options.prefix_caching = config.hf.prefix_caching;
  auto engine = runner::hf::Engine::Create(model->decoder_, options);
  if (!engine.ok()) return engine.status();
  model->engine_ = *std::move(engine);
  // Weights as the files hold them (an estimate when dtype converts them) plus the whole KV
  // budget, which the engine may fill.
  model->memory_bytes_ = SafetensorsBytes(config.path) + options.kv_budget_bytes;
  return model;
}

int64_t HfLlm::max_position_embeddings() const {
  return decoder_->config().max_position_embeddings;
}

int64_t HfLlm::kv_blocks_in_use() const { return engine_->Stats().blocks_in_use; }

absl::StatusOr<ChatOutcome> HfLlm::Generate(const RunContext& ctx, const v1::LLMRequest& request,
                                            const LlmOptions& options, const SamplingParams& params,
                                            const EmitDelta& emit) const {
  absl::StatusOr<std::vector<int32_t>> encoded;
  if (request.has_prompt()) {
    // A raw prompt is encoded as transformers' tokenizer(prompt) does: special tokens in the text
    // are parsed, and the BOS the tokenizer's post-processor adds is added.
    encoded = tokenizer_->Encode(request.prompt(), /*allow_special=*/true);
    if (encoded.ok() && add_bos_ && tokenizer_->bos_id()) {
      encoded->insert(encoded->begin(), *tokenizer_->bos_id());
    }
  } else {
    nlohmann::json messages = nlohmann::json::array();
    for (const auto& m : request.messages()) {
      messages.push_back({{"role", m.role()}, {"content", m.content()}});
    }
    auto prompt =
        template_->RenderChat(messages, /*add_generation_prompt=*/true, bos_token_, eos_token_);
    if (!prompt.ok()) return prompt.status();
    // Special tokens allowed: the template writes them (see the header on injection).
    encoded = tokenizer_->Encode(*prompt, /*allow_special=*/true);
  }
  if (!encoded.ok()) return encoded.status();
  ChatOutcome outcome;
  outcome.prompt_tokens = static_cast<int>(encoded->size());
  if (encoded->empty()) {
    return absl::InvalidArgumentError(request.has_prompt() ? "the prompt encodes to no tokens"
                                                           : "messages encode to no tokens");
  }
  const int64_t context =
      std::min<int64_t>(options.max_context_tokens, decoder_->config().max_position_embeddings);
  if (outcome.prompt_tokens >= context) {
    return absl::InvalidArgumentError(
        absl::StrCat(request.has_prompt() ? "the prompt is " : "messages are ",
                     outcome.prompt_tokens, " tokens, the model's context is ", context));
  }

  runner::hf::GenerationRequest job;
  job.prompt.assign(encoded->begin(), encoded->end());
  job.sampling.temperature = params.temperature;
  job.sampling.top_p = params.top_p;
  job.sampling.top_k = params.top_k < 0 ? 0 : params.top_k;
  job.sampling.seed = static_cast<uint64_t>(params.seed);
  // What fits the context ends with "length", as the TorchScript path does, not an error.
  job.sampling.max_tokens = std::min<int64_t>(params.max_tokens, context - outcome.prompt_tokens);
  job.sampling.stop_token_ids = stop_ids_;
  if (options.eos_token_id >= 0) job.sampling.stop_token_ids.push_back(options.eos_token_id);
  if (ctx.deadline != absl::InfiniteFuture()) {
    const absl::Duration left = std::max(ctx.deadline - absl::Now(), absl::ZeroDuration());
    job.deadline = std::chrono::steady_clock::now() + absl::ToChronoNanoseconds(left);
  }
  job.cancel = std::make_shared<std::atomic<bool>>(false);

  // The engine's callbacks run on its scheduler thread; they only queue what this thread reads,
  // so a slow client never stalls the other sequences of the batch.
  struct Shared {
    absl::Mutex mu;
    std::deque<int64_t> tokens ABSL_GUARDED_BY(mu);
    bool done ABSL_GUARDED_BY(mu) = false;
    runner::hf::GenerationResult result ABSL_GUARDED_BY(mu);
  };
  auto shared = std::make_shared<Shared>();
  runner::hf::GenerationCallbacks callbacks;
  callbacks.on_token = [shared](int64_t token) {
    absl::MutexLock lock(&shared->mu);
    shared->tokens.push_back(token);
  };
  callbacks.on_done = [shared](const runner::hf::GenerationResult& result) {
    absl::MutexLock lock(&shared->mu);
    shared->result = result;
    shared->done = true;
  };
  std::vector<int64_t> stops = job.sampling.stop_token_ids;
  auto cancel = job.cancel;
  if (absl::Status st = engine_->Submit(std::move(job), std::move(callbacks)); !st.ok()) return st;

  std::vector<int32_t> generated;
  std::string decoded;
  size_t emitted = 0;
  int received = 0;
  bool client_gone = false;
  for (;;) {
    std::deque<int64_t> tokens;
    bool done = false;
    runner::hf::GenerationResult result;
    {
      absl::MutexLock lock(&shared->mu);
      auto ready = [&]() ABSL_SHARED_LOCKS_REQUIRED(shared->mu) {
        return !shared->tokens.empty() || shared->done;
      };
      // Bounded wait: the client's cancellation is polled, nothing signals it.
      shared->mu.AwaitWithTimeout(absl::Condition(&ready), absl::Milliseconds(50));
      tokens.swap(shared->tokens);
      done = shared->done;
      if (done) result = shared->result;
    }
    if (!client_gone && ctx.is_cancelled && ctx.is_cancelled()) {
      cancel->store(true);
      client_gone = true;
    }
    for (int64_t token : tokens) {
      ++received;
      // The stop token ends the reply; it is not part of it.
      if (std::find(stops.begin(), stops.end(), token) != stops.end()) continue;
      generated.push_back(static_cast<int32_t>(token));
    }
    if (!tokens.empty() && !client_gone) {
      // Special tokens (other than the stop ones) are not text the client should see.
      auto text = tokenizer_->Decode(generated, /*skip_special=*/true);
      if (!text.ok()) {
        cancel->store(true);
        outcome.stopped = text.status();
        client_gone = true;  // stop emitting; still wait for the engine to let go
      } else {
        decoded = *std::move(text);
        const size_t complete = llm::CompleteUtf8Prefix(decoded);
        if (complete > emitted) {
          std::string delta = ValidUtf8(decoded.substr(emitted, complete - emitted));
          emitted = complete;
          if (!emit(delta, outcome.prompt_tokens, received)) {
            cancel->store(true);
            outcome.stopped = absl::CancelledError("the client went away");
            client_gone = true;
          }
        }
      }
    }
    if (done) {
      outcome.prompt_tokens = static_cast<int>(result.prompt_tokens);
      outcome.completion_tokens = static_cast<int>(result.completion_tokens);
      if (outcome.stopped.ok() && !result.status.ok()) {
        outcome.stopped = result.status.code() == absl::StatusCode::kCancelled
                              ? absl::CancelledError("the client cancelled the stream")
                              : result.status;
      }
      if (!result.finish_reason.empty()) outcome.finish_reason = result.finish_reason;
      break;
    }
  }
  if (decoded.size() > emitted) outcome.rest = ValidUtf8(decoded.substr(emitted));
  return outcome;
}

}  // namespace switchyard::orchestrator
