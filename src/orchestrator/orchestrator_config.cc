#include "orchestrator/orchestrator_config.h"

#include <spdlog/spdlog.h>
#include <unistd.h>

#include <algorithm>
#include <fstream>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/config.h"
#include "common/secure_random.h"
#include "common/status.h"

namespace switchyard::orchestrator {
namespace {

// The options of a "format": "hf" model: the engine's, checked here, and the llm pipeline's
// (checked by ParseLlmOptions when a request comes). Unknown keys are refused so that a typo
// (kv_cache_MB) does not silently leave the default budget.
absl::Status ParseHfOptions(const ConfigObject& options, HfModelOptions* hf) {
  SY_RETURN_IF_ERROR(
      options.CheckKeys({"dtype", "kv_cache_mb", "max_batch_sequences", "max_batch_tokens",
                         "block_tokens", "max_new_tokens", "max_tokens", "max_context_tokens",
                         "seed", "eos_token_id", "max_prompt_chars", "prefix_caching"}));
  SY_RETURN_IF_ERROR(options.Read("dtype", &hf->dtype));
  SY_RETURN_IF_ERROR(options.Read("kv_cache_mb", &hf->kv_cache_mb));
  SY_RETURN_IF_ERROR(options.Read("max_batch_sequences", &hf->max_batch_sequences));
  SY_RETURN_IF_ERROR(options.Read("max_batch_tokens", &hf->max_batch_tokens));
  SY_RETURN_IF_ERROR(options.Read("block_tokens", &hf->block_tokens));
  SY_RETURN_IF_ERROR(options.Read("prefix_caching", &hf->prefix_caching));
  SY_RETURN_IF_ERROR(options.Read("max_new_tokens", &hf->max_new_tokens));
  if (hf->dtype != "float32" && hf->dtype != "bfloat16") {
    return options.Error("dtype", absl::StrCat("'", hf->dtype, "' is not float32 or bfloat16"));
  }
  if (hf->kv_cache_mb < 1 || hf->kv_cache_mb > (int64_t{1} << 20)) {
    return options.Error("kv_cache_mb", "must be 1..1048576");
  }
  if (hf->max_batch_sequences < 1 || hf->max_batch_sequences > 4096) {
    return options.Error("max_batch_sequences", "must be 1..4096");
  }
  if (hf->max_batch_tokens < hf->max_batch_sequences || hf->max_batch_tokens > (1 << 20)) {
    return options.Error("max_batch_tokens", "must be max_batch_sequences..1048576");
  }
  if (hf->block_tokens < 1 || hf->block_tokens > 4096) {
    return options.Error("block_tokens", "must be 1..4096");
  }
  if (hf->max_new_tokens < 0 || hf->max_new_tokens > 10'000'000) {
    return options.Error("max_new_tokens", "must be 0 (no extra cap)..10000000");
  }
  return absl::OkStatus();
}

// The options of a "format": "hf" audio-to-text (Whisper) model: its own and the audio-to-text
// pipeline's (sample_rate and channels can only be Whisper's 16 kHz mono).
absl::Status ParseHfWhisperOptions(const ConfigObject& options, HfModelOptions* hf) {
  SY_RETURN_IF_ERROR(options.CheckKeys({"dtype", "max_new_tokens", "language", "task",
                                        "sample_rate", "channels", "max_audio_seconds"}));
  SY_RETURN_IF_ERROR(options.Read("dtype", &hf->dtype));
  SY_RETURN_IF_ERROR(options.Read("max_new_tokens", &hf->max_new_tokens));
  SY_RETURN_IF_ERROR(options.Read("language", &hf->language));
  SY_RETURN_IF_ERROR(options.Read("task", &hf->task));
  int sample_rate = 16000, channels = 1;
  SY_RETURN_IF_ERROR(options.Read("sample_rate", &sample_rate));
  SY_RETURN_IF_ERROR(options.Read("channels", &channels));
  if (hf->dtype != "float32" && hf->dtype != "bfloat16") {
    return options.Error("dtype", absl::StrCat("'", hf->dtype, "' is not float32 or bfloat16"));
  }
  if (hf->max_new_tokens < 0 || hf->max_new_tokens > 4096) {
    return options.Error("max_new_tokens", "must be 0 (the default, 224)..4096");
  }
  if (hf->language.size() > 16) return options.Error("language", "longer than 16 characters");
  if (hf->task != "transcribe" && hf->task != "translate") {
    return options.Error("task", "must be transcribe or translate");
  }
  if (sample_rate != 16000) return options.Error("sample_rate", "Whisper models take 16000 Hz");
  if (channels != 1) return options.Error("channels", "Whisper models take mono audio (1)");
  return absl::OkStatus();
}

absl::StatusOr<ModelConfig> ParseModel(const ConfigObject& obj) {
  SY_RETURN_IF_ERROR(obj.CheckKeys(
      {"id", "pipeline", "path", "format", "warm", "device", "instances", "queue_size",
       "price_per_unit", "unit", "max_input_pixels", "warmup_size", "max_batch_size",
       "max_queue_delay_ms", "memory_mb", "options", "max_input_elements"}));
  ModelConfig m;
  std::string path;
  SY_RETURN_IF_ERROR(obj.Read("id", &m.id, true));
  SY_RETURN_IF_ERROR(obj.Read("pipeline", &m.pipeline, true));
  SY_RETURN_IF_ERROR(obj.Read("path", &path, true));
  SY_RETURN_IF_ERROR(obj.Read("format", &m.format));
  SY_RETURN_IF_ERROR(obj.Read("warm", &m.warm));
  SY_RETURN_IF_ERROR(obj.Read("device", &m.device));
  SY_RETURN_IF_ERROR(obj.Read("instances", &m.instances));
  SY_RETURN_IF_ERROR(obj.Read("queue_size", &m.queue_size));
  SY_RETURN_IF_ERROR(obj.Read("price_per_unit", &m.price_per_unit));
  SY_RETURN_IF_ERROR(obj.Read("unit", &m.unit));
  SY_RETURN_IF_ERROR(obj.Read("max_input_pixels", &m.max_input_pixels));
  SY_RETURN_IF_ERROR(obj.Read("max_input_elements", &m.max_input_elements));
  SY_RETURN_IF_ERROR(obj.Read("warmup_size", &m.warmup_size));
  SY_RETURN_IF_ERROR(obj.Read("max_batch_size", &m.max_batch_size));
  SY_RETURN_IF_ERROR(obj.Read("max_queue_delay_ms", &m.max_queue_delay_ms));
  SY_RETURN_IF_ERROR(obj.Read("memory_mb", &m.memory_mb));
  if (obj.Has("options")) {
    m.options = obj.json().at("options");
    if (!m.options.is_object()) return obj.Error("options", "must be a JSON object");
  }
  if (m.id.empty()) return obj.Error("id", "must not be empty");
  if (!pipelines::IsModelPipeline(m.pipeline)) {
    return obj.Error("pipeline", absl::StrCat("'", m.pipeline, "' is not one of ",
                                              pipelines::ModelPipelineNames()));
  }
  if (path.empty()) return obj.Error("path", "must not be empty");
  m.path = ResolveConfigPath(obj.file(), path);
  if (m.format != "torchscript" && m.format != "hf") {
    return obj.Error("format", absl::StrCat("'", m.format, "' is not torchscript or hf"));
  }
  if (m.format == "hf") {
    if (m.pipeline == pipelines::kAudioToText) {
      SY_RETURN_IF_ERROR(ParseHfWhisperOptions(obj.Child("options"), &m.hf));
    } else if (m.pipeline != pipelines::kLlm) {
      return obj.Error("format", absl::StrCat("hf (a Hugging Face checkpoint) serves only the llm "
                                              "and audio-to-text pipelines, not '",
                                              m.pipeline, "'"));
    } else {
      SY_RETURN_IF_ERROR(ParseHfOptions(obj.Child("options"), &m.hf));
    }
  }
  const bool cuda_index = m.device.size() > 5 && m.device.rfind("cuda:", 0) == 0 &&
                          m.device.find_first_not_of("0123456789", 5) == std::string::npos;
  if (m.device != "auto" && m.device != "cpu" && m.device != "cuda" && !cuda_index) {
    return obj.Error("device", absl::StrCat("'", m.device, "' is not auto, cpu, cuda or cuda:N"));
  }
  if (m.instances < 1 || m.instances > 64) return obj.Error("instances", "must be 1..64");
  if (m.queue_size < 0 || m.queue_size > 10000) return obj.Error("queue_size", "must be 0..10000");
  if (m.price_per_unit < 0) return obj.Error("price_per_unit", "must be >= 0");
  if (m.max_input_pixels < 1) return obj.Error("max_input_pixels", "must be > 0");
  if (m.max_input_elements < 0 || m.max_input_elements > (int64_t{1} << 34)) {
    return obj.Error("max_input_elements", "must be 0 (the default) .. 17179869184");
  }
  if (m.warmup_size < 0 || m.warmup_size > 1024) return obj.Error("warmup_size", "must be 0..1024");
  if (m.max_batch_size < 1 || m.max_batch_size > 1024) {
    return obj.Error("max_batch_size", "must be 1..1024");
  }
  if (m.max_queue_delay_ms < 0 || m.max_queue_delay_ms > 10000) {
    return obj.Error("max_queue_delay_ms", "must be 0..10000");
  }
  if (m.memory_mb < 0) return obj.Error("memory_mb", "must be >= 0");
  return m;
}

}  // namespace

// The top-level fields a config file may have.
// clang-format off
constexpr absl::string_view kOrchestratorConfigFields[] = {
    "node_id", "listen", "advertise_address", "http_listen", "gateways", "heartbeat_ms", "torch",
    "max_message_bytes", "models", "models_file", "memory_budget_mb", "transcode", "log",
    "test_inflate_units", "test_receipt_fault", "test_output_fault", "test_hardware_claim", "test_challenge_fault", "test_video_challenge_software", "registration_secret", "registration_secrets", "admin_token",
    "admin_token_file", "tls", "http_tls", "gateway_tls", "identity_key_file", "prewarm",
    "prewarm_min_jobs"};
// clang-format on

absl::StatusOr<OrchestratorConfig> ParseOrchestratorConfig(const std::string& json_text,
                                                           const std::filesystem::path& file) {
  auto parsed = ParseConfigJson(json_text, file, kOrchestratorConfigFields);
  if (!parsed.ok()) return parsed.status();
  nlohmann::json json = *std::move(parsed);
  ConfigObject root(json, file.string(), "");
  OrchestratorConfig c;
  c.file = file;
  SY_RETURN_IF_ERROR(root.Read("node_id", &c.node_id));
  if (root.Has("node_id") && c.node_id.empty()) {
    return root.Error("node_id", "must not be empty (omit it for <hostname>-<port>)");
  }
  if (c.node_id.size() > 128 || !std::all_of(c.node_id.begin(), c.node_id.end(),
                                             [](char ch) { return ch > 0x20 && ch < 0x7f; })) {
    return root.Error("node_id", "must be 1..128 printable ASCII characters without spaces");
  }
  {
    std::string token_file;
    SY_RETURN_IF_ERROR(root.Read("admin_token", &c.admin_token));
    SY_RETURN_IF_ERROR(root.Read("admin_token_file", &token_file));
    if (root.Has("admin_token") && c.admin_token.empty()) {
      return root.Error("admin_token", "must not be empty (omit it for none)");
    }
    if (root.Has("admin_token_file")) {
      if (!c.admin_token.empty()) {
        return root.Error("admin_token_file", "give admin_token or this, not both");
      }
      const std::filesystem::path path = ResolveConfigPath(file, token_file);
      std::ifstream in(path);
      if (token_file.empty() || !in || !std::getline(in, c.admin_token) || c.admin_token.empty()) {
        return root.Error(
            "admin_token_file",
            absl::StrCat("cannot read a token (first line) from '", path.string(), "'"));
      }
    }
  }
  SY_RETURN_IF_ERROR(root.Read("test_inflate_units", &c.test_inflate_units));
  if (c.test_inflate_units != 0) {
    spdlog::warn(
        "{}: test_inflate_units is {}: this node misreports every job's units (for "
        "tests only; gateways will not pay it)",
        file.string(), c.test_inflate_units);
  }
  SY_RETURN_IF_ERROR(root.Read("test_receipt_fault", &c.test_receipt_fault));
  if (c.test_receipt_fault != "" && c.test_receipt_fault != "omit" &&
      c.test_receipt_fault != "forge") {
    return root.Error("test_receipt_fault", "must be \"\", \"omit\" or \"forge\"");
  }
  if (!c.test_receipt_fault.empty()) {
    spdlog::warn("{}: test_receipt_fault is '{}': this node's receipts are wrong (for tests only)",
                 file.string(), c.test_receipt_fault);
  }
  if (root.Has("test_output_fault")) {
    ConfigObject fault = root.Child("test_output_fault");
    SY_RETURN_IF_ERROR(fault.CheckKeys({"rate", "seed"}));
    SY_RETURN_IF_ERROR(fault.Read("rate", &c.test_output_fault_rate, /*required=*/true));
    SY_RETURN_IF_ERROR(fault.Read("seed", &c.test_output_fault_seed));
    if (!(c.test_output_fault_rate >= 0 && c.test_output_fault_rate <= 1)) {
      return fault.Error("rate", "must be 0..1 (the share of jobs whose results are perturbed)");
    }
    if (c.test_output_fault_rate > 0) {
      spdlog::warn(
          "{}: test_output_fault rate is {}: this node returns WRONG results on that share of "
          "image and transcode jobs (for tests only; gateways' spot checks will eject it)",
          file.string(), c.test_output_fault_rate);
    }
  }
  SY_RETURN_IF_ERROR(root.Read("test_hardware_claim", &c.test_hardware_claim));
  for (const std::string& name : c.test_hardware_claim) {
    if (name.empty() || name.size() > 32) {
      return root.Error("test_hardware_claim", "names must be 1 to 32 bytes");
    }
  }
  if (!c.test_hardware_claim.empty()) {
    spdlog::warn(
        "{}: test_hardware_claim: this node advertises hardware it may not have: {} (for "
        "tests only; gateways' hardware challenges will find out)",
        file.string(), absl::StrJoin(c.test_hardware_claim, ", "));
  }
  SY_RETURN_IF_ERROR(root.Read("test_challenge_fault", &c.test_challenge_fault));
  if (c.test_challenge_fault) {
    spdlog::warn(
        "{}: test_challenge_fault: this node answers hardware challenges WRONGLY (for "
        "tests only)",
        file.string());
  }
  SY_RETURN_IF_ERROR(root.Read("test_video_challenge_software", &c.test_video_challenge_software));
  if (c.test_video_challenge_software) {
    spdlog::warn(
        "{}: test_video_challenge_software: this node answers video challenges with software "
        "codecs, passing checks of NVDEC/NVENC claims it may not back (for tests only)",
        file.string());
  }
  SY_RETURN_IF_ERROR(root.Read("listen", &c.listen));
  SY_RETURN_IF_ERROR(root.Read("advertise_address", &c.advertise_address));
  SY_RETURN_IF_ERROR(root.Read("http_listen", &c.http_listen));
  if (!c.http_listen.empty()) {
    SY_RETURN_IF_ERROR(
        ValidateHostPort(c.http_listen, absl::StrCat(file.string(), ": http_listen")));
  }
  SY_RETURN_IF_ERROR(root.Read("gateways", &c.gateways));
  {
    std::string key_file;
    SY_RETURN_IF_ERROR(root.Read("identity_key_file", &key_file));
    if (root.Has("identity_key_file") && key_file.empty()) {
      return root.Error("identity_key_file", "must not be empty (omit it for a key in memory)");
    }
    if (!key_file.empty()) {
      c.identity_key_file = ResolveConfigPath(file, key_file);
    } else if (!file.empty()) {
      c.identity_key_file = file.parent_path() / "node-identity.key";
    }
  }
  SY_RETURN_IF_ERROR(root.Read("heartbeat_ms", &c.heartbeat_ms));
  SY_RETURN_IF_ERROR(root.Read("registration_secret", &c.registration_secret));
  if (root.Has("registration_secret") && c.registration_secret.empty()) {
    return root.Error("registration_secret", "must not be empty (omit it to send none)");
  }
  SY_RETURN_IF_ERROR(root.ReadMap(
      "registration_secrets", "gateway address (HOST:PORT) -> secret", &c.registration_secrets,
      [&file](const ConfigObject& o, const std::string& address, const std::string& secret) {
        if (secret.empty()) return o.Error(address, "must not be empty");
        return ValidateHostPort(
            address, absl::StrCat(file.string(), ": registration_secrets key '", address, "'"));
      }));
  SY_RETURN_IF_ERROR(root.Read("max_message_bytes", &c.max_message_bytes));
  SY_RETURN_IF_ERROR(ReadTlsServerConfig(root, "tls", &c.tls));
  SY_RETURN_IF_ERROR(ReadTlsServerConfig(root, "http_tls", &c.http_tls));
  SY_RETURN_IF_ERROR(ReadTlsClientConfig(root, "gateway_tls", &c.gateway_tls));
  SY_RETURN_IF_ERROR(ValidateHostPort(c.listen, absl::StrCat(file.string(), ": listen")));
  if (!c.advertise_address.empty()) {
    SY_RETURN_IF_ERROR(
        ValidateHostPort(c.advertise_address, absl::StrCat(file.string(), ": advertise_address")));
  }
  for (size_t i = 0; i < c.gateways.size(); ++i) {
    SY_RETURN_IF_ERROR(
        ValidateHostPort(c.gateways[i], absl::StrCat(file.string(), ": gateways[", i, "]")));
  }
  if (c.heartbeat_ms < 50 || c.heartbeat_ms > 60000) {
    return root.Error("heartbeat_ms", "must be 50..60000");
  }
  {
    std::string prewarm = "on";
    SY_RETURN_IF_ERROR(root.Read("prewarm", &prewarm));
    if (prewarm != "on" && prewarm != "off") {
      return root.Error("prewarm", "must be \"on\" or \"off\"");
    }
    c.prewarm = prewarm == "on";
    SY_RETURN_IF_ERROR(root.Read("prewarm_min_jobs", &c.prewarm_min_jobs));
    if (c.prewarm_min_jobs < 1 || c.prewarm_min_jobs > 1000000) {
      return root.Error("prewarm_min_jobs", "must be 1..1000000");
    }
  }
  if (c.max_message_bytes < (1 << 20) || c.max_message_bytes > (1LL << 31) - 1) {
    return root.Error("max_message_bytes", "must be 1 MiB .. 2 GiB");
  }

  ConfigObject torch = root.Child("torch");
  SY_RETURN_IF_ERROR(torch.CheckKeys({"intra_op_threads", "inter_op_threads"}));
  SY_RETURN_IF_ERROR(torch.Read("intra_op_threads", &c.intra_op_threads));
  SY_RETURN_IF_ERROR(torch.Read("inter_op_threads", &c.inter_op_threads));
  if (c.intra_op_threads < 0 || c.inter_op_threads < 0) {
    return torch.Error("", "thread counts must be >= 0");
  }

  ConfigObject log = root.Child("log");
  SY_RETURN_IF_ERROR(log.CheckKeys({"level", "format"}));
  SY_RETURN_IF_ERROR(log.Read("level", &c.log_level));
  SY_RETURN_IF_ERROR(log.Read("format", &c.log_format));

  ConfigObject tc = root.Child("transcode");
  SY_RETURN_IF_ERROR(
      tc.CheckKeys({"enabled", "capacity", "max_renditions", "price_per_unit", "encoder_threads",
                    "session_idle_timeout_ms", "parallel_renditions", "hw_decode", "hw_encode",
                    "gpu_scale", "max_segment_bytes", "max_segment_seconds", "max_sessions_per_key",
                    "thread_policy", "cores", "scale_from_larger"}));
  SY_RETURN_IF_ERROR(tc.Read("enabled", &c.transcode.enabled));
  SY_RETURN_IF_ERROR(tc.Read("capacity", &c.transcode.capacity));
  SY_RETURN_IF_ERROR(tc.Read("max_renditions", &c.transcode.max_renditions));
  SY_RETURN_IF_ERROR(tc.Read("price_per_unit", &c.transcode.price_per_unit));
  SY_RETURN_IF_ERROR(tc.Read("encoder_threads", &c.transcode.encoder_threads));
  SY_RETURN_IF_ERROR(tc.Read("parallel_renditions", &c.transcode.parallel_renditions));
  SY_RETURN_IF_ERROR(tc.Read("scale_from_larger", &c.transcode.scale_from_larger));
  SY_RETURN_IF_ERROR(tc.Read("thread_policy", &c.transcode.thread_policy));
  if (c.transcode.thread_policy != "auto" && c.transcode.thread_policy != "fixed") {
    return tc.Error("thread_policy", "must be \"auto\" or \"fixed\"");
  }
  SY_RETURN_IF_ERROR(tc.Read("cores", &c.transcode.cores));
  if (c.transcode.cores < 0 || c.transcode.cores > 1024) {
    return tc.Error("cores", "must be 0 (all of the machine's) .. 1024");
  }
  SY_RETURN_IF_ERROR(tc.Read("hw_decode", &c.transcode.hw_decode));
  if (c.transcode.hw_decode != "auto" && c.transcode.hw_decode != "cuda" &&
      c.transcode.hw_decode != "none") {
    return tc.Error("hw_decode", "must be \"auto\", \"cuda\" or \"none\"");
  }
  SY_RETURN_IF_ERROR(tc.Read("hw_encode", &c.transcode.hw_encode));
  SY_RETURN_IF_ERROR(tc.Read("gpu_scale", &c.transcode.gpu_scale));
  if (c.transcode.hw_encode != "auto" && c.transcode.hw_encode != "nvenc" &&
      c.transcode.hw_encode != "none") {
    return tc.Error("hw_encode", "must be \"auto\", \"nvenc\" or \"none\"");
  }
  SY_RETURN_IF_ERROR(tc.Read("session_idle_timeout_ms", &c.transcode.session_idle_timeout_ms));
  if (c.transcode.capacity < 1) return tc.Error("capacity", "must be >= 1");
  SY_RETURN_IF_ERROR(tc.Read("max_sessions_per_key", &c.transcode.max_sessions_per_key));
  if (c.transcode.max_sessions_per_key < 0 ||
      c.transcode.max_sessions_per_key > c.transcode.capacity) {
    return tc.Error("max_sessions_per_key", "must be 0 (half the capacity) .. capacity");
  }
  if (c.transcode.session_idle_timeout_ms < 100 ||
      c.transcode.session_idle_timeout_ms > 3600 * 1000) {
    return tc.Error("session_idle_timeout_ms", "must be 100..3600000");
  }
  if (c.transcode.max_renditions < 1 || c.transcode.max_renditions > 16) {
    return tc.Error("max_renditions", "must be 1..16");
  }
  if (c.transcode.price_per_unit < 0) return tc.Error("price_per_unit", "must be >= 0");
  if (c.transcode.encoder_threads < 0 || c.transcode.encoder_threads > 64) {
    return tc.Error("encoder_threads", "must be 0..64");
  }
  SY_RETURN_IF_ERROR(tc.Read("max_segment_bytes", &c.transcode.max_segment_bytes));
  if (c.transcode.max_segment_bytes < 1024 || c.transcode.max_segment_bytes > (1LL << 31) - 1) {
    return tc.Error("max_segment_bytes", "must be 1 KiB .. 2 GiB");
  }
  SY_RETURN_IF_ERROR(tc.Read("max_segment_seconds", &c.transcode.max_segment_seconds));
  if (!(c.transcode.max_segment_seconds >= 0.1 && c.transcode.max_segment_seconds <= 3600)) {
    return tc.Error("max_segment_seconds", "must be 0.1 .. 3600");
  }

  SY_RETURN_IF_ERROR(root.ReadMap(
      "memory_budget_mb", "device -> MiB", &c.memory_budget_mb,
      [](const ConfigObject& o, const std::string& device, int64_t mb) {
        const bool cuda_index = device.size() > 5 && device.rfind("cuda:", 0) == 0 &&
                                device.find_first_not_of("0123456789", 5) == std::string::npos;
        if (device != "cpu" && !cuda_index)
          return o.Error(device, "is not a device (cpu or cuda:N)");
        return mb < 1 ? o.Error(device, "must be >= 1 (MiB)") : absl::OkStatus();
      }));

  // Models come inline (`models`) or from a shared file (`models_file`), not both.
  if (json.contains("models") && json.contains("models_file")) {
    return root.Error("models_file", "give either `models` or `models_file`, not both");
  }
  const nlohmann::json* models = nullptr;
  nlohmann::json models_doc;
  std::string models_source = file.string();
  if (json.contains("models_file")) {
    std::string models_file;
    SY_RETURN_IF_ERROR(root.Read("models_file", &models_file));
    c.models_file = ResolveConfigPath(file, models_file);
    auto doc = LoadJsonFile(c.models_file);
    if (!doc.ok()) return doc.status();
    models_doc = std::move(*doc);
    ConfigObject mroot(models_doc, c.models_file.string(), "");
    SY_RETURN_IF_ERROR(mroot.CheckKeys({"models"}));
    if (!models_doc.contains("models")) return mroot.Error("models", "is required");
    models = &models_doc["models"];
    models_source = c.models_file.string();
  } else if (json.contains("models")) {
    models = &json["models"];
  }
  if (models != nullptr) {
    ConfigObject where(*models, models_source, "");
    if (!models->is_array()) return where.Error("models", "must be an array");
    std::set<std::string> ids;
    for (size_t i = 0; i < models->size(); ++i) {
      ConfigObject m((*models)[i], models_source, absl::StrCat("models[", i, "]"));
      auto model = ParseModel(m);
      if (!model.ok()) return model.status();
      if (!ids.insert(model->id).second) {
        return m.Error("id", absl::StrCat("'", model->id, "' is listed twice"));
      }
      c.models.push_back(std::move(*model));
    }
  }
  return c;
}

absl::StatusOr<OrchestratorConfig> LoadOrchestratorConfig(const std::filesystem::path& file) {
  auto json = LoadJsonFile(file);
  if (!json.ok()) return json.status();
  return ParseOrchestratorConfig(json->dump(), file);
}

std::string DefaultNodeId(const OrchestratorConfig& config, std::string hostname) {
  if (hostname.empty()) {
    char buf[256] = {};
    if (gethostname(buf, sizeof(buf) - 1) == 0) hostname = buf;
  }
  // Only characters a node id may hold (printable, no spaces), and bounded.
  hostname.erase(std::remove_if(hostname.begin(), hostname.end(),
                                [](char ch) { return ch <= 0x20 || ch >= 0x7f; }),
                 hostname.end());
  if (hostname.size() > 100) hostname.resize(100);
  if (hostname.empty()) hostname = "orchestrator";
  auto port_of = [](const std::string& host_port) -> std::string {
    const size_t colon = host_port.rfind(':');
    if (colon == std::string::npos) return "";
    std::string port = host_port.substr(colon + 1);
    return port == "0" ? "" : port;
  };
  std::string port = config.advertise_address.empty() ? "" : port_of(config.advertise_address);
  if (port.empty()) port = port_of(config.listen);
  if (port.empty()) port = SecureRandomHex(4);
  return absl::StrCat(hostname, "-", port);
}

std::string OrchestratorConfig::RegistrationSecretFor(const std::string& address) const {
  auto it = registration_secrets.find(address);
  return it != registration_secrets.end() ? it->second : registration_secret;
}

}  // namespace switchyard::orchestrator
