// switchyard-orchestrator configuration (JSON), documented field by field in
// docs/configuration.md.
#pragma once

#include <algorithm>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "absl/status/statusor.h"
#include "common/pipelines.h"
#include "common/tls.h"

namespace switchyard::orchestrator {

// The engine options of a "format": "hf" model, read from its `options` with the config
// (docs/hf-checkpoints.md). The llm pipeline's own options (max_tokens, max_context_tokens, seed,
// eos_token_id, max_prompt_chars) sit beside them in the same object.
struct HfModelOptions {
  std::string dtype = "float32";  // float32 | bfloat16 (the weights and the KV cache)
  int64_t kv_cache_mb = 1024;     // the engine's KV budget; counted in the model's memory
  int64_t max_batch_sequences = 16;
  int64_t max_batch_tokens = 512;
  int64_t block_tokens = 16;
  bool prefix_caching = true;  // reuse the KV blocks of earlier prompts' shared prefixes
  int64_t max_new_tokens = 0;  // cap on a request's max_tokens (0: only options.max_tokens)
  // audio-to-text (Whisper) only: max_new_tokens is the cap per 30 s window (0: 224).
  std::string language;             // "en" or "<|en|>"; "": detected per request
  std::string task = "transcribe";  // transcribe | translate
};

struct ModelConfig {
  std::string id;              // model id as clients name it, e.g. "esrgan-slim-x4"
  std::string pipeline;        // a model pipeline of common/pipelines.h
  std::filesystem::path path;  // TorchScript file; relative paths are from the config file
  // "torchscript": `path` is a TorchScript file; "hf": a Hugging Face checkpoint folder
  // (config.json, *.safetensors, tokenizer.json or, for llm, tokenizer.model,
  // tokenizer_config.json), pipelines llm and
  // audio-to-text (Whisper).
  std::string format = "torchscript";
  HfModelOptions hf;            // format "hf" only
  bool warm = false;            // load (and warm up) at start; otherwise on first use
  std::string device = "auto";  // auto | cpu | cuda | cuda:N
  int instances = 1;            // executor threads (jobs that run at once)
  int queue_size = 4;           // jobs that may wait beyond those running
  double price_per_unit = 0;    // price per input pixel
  std::string unit = "pixel";
  int64_t max_input_pixels = 512 * 512;  // larger inputs are refused with INVALID_ARGUMENT
  int warmup_size = 32;                  // side of the blank image run once before READY (0: none)
  int max_batch_size = 1;                // dynamic batching of same-shape inputs (1: off)
  int max_queue_delay_ms = 0;            // how long a job may wait for a batch to fill
  int64_t memory_mb = 0;                 // memory estimate; 0: measured at load
  nlohmann::json options = nlohmann::json::object();  // pipeline options (docs/pipelines.md)
  // Elements of one KServe ModelInfer call's inputs, all together, at most; 0: the default
  // (4 x max_input_pixels for pipelines that take images, else 16M; docs/kserve.md).
  int64_t max_input_elements = 0;
};

struct TranscodeConfig {
  bool enabled = true;
  int capacity = 2;  // streams with an open session plus one-off segments running; more refused
  int session_idle_timeout_ms =
      30000;  // a stream's session closes after this long without a segment
  int max_renditions = 8;
  double price_per_unit = 0;        // price per output pixel
  int encoder_threads = 1;          // libx264 threads per rendition
  bool parallel_renditions = true;  // encode a segment's renditions on a thread each
  bool scale_from_larger = false;   // smaller renditions scaled from the largest one's frame
  // "auto": threads per segment from the cores and the segments in flight (thread_policy.h);
  // "fixed": one decoder thread and encoder_threads per rendition.
  std::string thread_policy = "auto";
  int cores = 0;                   // cores the auto policy shares out; 0: the machine's
  std::string hw_decode = "auto";  // auto | cuda | none (TranscodeOptions::hw_decode)
  std::string hw_encode = "auto";  // auto | nvenc | none (TranscodeOptions::hw_encode)
  bool gpu_scale = true;           // TranscodeOptions::gpu_scale
  // Segment limits, checked before anything is decoded (docs/configuration.md): bytes, and
  // seconds of video measured by demuxing. Livepeer segments are ~2 s and a few MiB; these leave
  // room for long VOD segments while bounding one call's work.
  int64_t max_segment_bytes = 64 << 20;
  double max_segment_seconds = 30;
  // Streams one API key (the tenant the gateway sends) may hold open on this node; 0: half the
  // capacity, at least 1, so one key cannot take every slot. No cap without API keys.
  int max_sessions_per_key = 0;

  // max_sessions_per_key with its default applied.
  int SessionsPerKey() const {
    return max_sessions_per_key > 0 ? max_sessions_per_key : std::max(1, capacity / 2);
  }

  bool operator==(const TranscodeConfig&) const = default;
};

struct OrchestratorConfig {
  std::filesystem::path file;  // where it was read from ("" for defaults)
  // Identity advertised to gateways; one live registration per id. "" (the default): derived at
  // start by DefaultNodeId, unique per host and port.
  std::string node_id;
  std::string listen = "127.0.0.1:50061";
  std::string advertise_address;               // "" = the listen address with its bound port
  std::string http_listen = "127.0.0.1:8936";  // /healthz, /readyz, /metrics; "" disables
  std::vector<std::string> gateways;           // gateways to register with
  // Shared secrets sent when registering (docs/security.md): by gateway address, else the
  // default `registration_secret`; empty: none sent.
  std::string registration_secret;
  std::map<std::string, std::string> registration_secrets;
  // The node's Ed25519 identity key (docs/security.md, "Node identity"), created with mode 0600
  // on first start; relative to the config file; default "node-identity.key" next to it. Empty
  // (no config file): a new key in memory at every start (a gateway that bound this node id to
  // a key refuses it after a restart).
  std::filesystem::path identity_key_file;
  // The operator's token for admin calls (LoadModel, UnloadModel, CloseTranscodeSession), sent as
  // `authorization: Bearer TOKEN`; from `admin_token` or the first line of `admin_token_file`.
  // Those calls also accept any registration secret above; with neither: open (warned at start).
  std::string admin_token;
  int heartbeat_ms = 500;    // load update interval on the registration stream
  // Demand-driven warm-up (`prewarm`: "on" | "off"): load a model this node offers cold when a
  // gateway reports at least `prewarm_min_jobs` of its jobs found no warm capacity in its window,
  // if it fits the memory budget without evicting (orchestrator/prewarmer.h).
  bool prewarm = true;
  int prewarm_min_jobs = 2;
  int intra_op_threads = 0;  // libtorch intra-op threads (0 = libtorch default)
  int inter_op_threads = 0;  // libtorch inter-op threads (0 = libtorch default)
  int64_t max_message_bytes = 256 << 20;
  std::vector<ModelConfig> models;                  // inline `models`, or those of `models_file`
  std::filesystem::path models_file;                // e.g. configs/models.json ("" when inline)
  std::map<std::string, int64_t> memory_budget_mb;  // device -> MiB; unlisted: unbounded
  TranscodeConfig transcode;
  std::string log_level = "info";
  std::string log_format = "text";
  // FOR TESTS ONLY (`test_inflate_units`): added to the units of every job this node reports, so
  // that tests can run an orchestrator that misreports and see the gateway refuse to pay it
  // (docs/metering.md). Never set it in production: the gateway disputes every such job and
  // penalises the node.
  int64_t test_inflate_units = 0;
  // FOR TESTS ONLY (`test_receipt_fault`): "" (sign receipts honestly), "omit" (sign none) or
  // "forge" (sign with a throwaway key instead of the node's), so that tests see the gateway
  // flag and dispute such jobs (docs/security.md, "Receipts"). Never set it in production.
  std::string test_receipt_fault;
  // FOR TESTS ONLY (`test_output_fault`: {"rate": 0..1, "seed": N}): on that share of image and
  // transcode jobs (drawn from a sequence fixed by the seed) the node perturbs its result (inverts
  // the first pixels of each image; cuts each rendition to its first half) and signs the
  // perturbed result, so that tests see gateways' spot checks
  // catch a cheating node (docs/security.md, "Spot checks"). Never set it in production.
  double test_output_fault_rate = 0;
  uint64_t test_output_fault_seed = 0;
  // FOR TESTS ONLY (`test_hardware_claim`: names such as ["cuda"]): added to the hardware the node
  // advertises, so that tests see gateways' hardware challenges find a claim the node cannot back
  // (docs/security.md, "Hardware claims"). Never set it in production.
  std::vector<std::string> test_hardware_claim;
  // FOR TESTS ONLY (`test_challenge_fault`): answer hardware challenges with every digest wrong,
  // and video challenges with every frame digest wrong and the encoded stream cut in half.
  bool test_challenge_fault = false;
  // FOR TESTS ONLY (`test_video_challenge_software`): answer video challenges (the NVDEC/NVENC
  // claims' known-answer checks, common/media/video_challenge.h) with the software codecs
  // (libavcodec's h264/hevc decoders, libx264) instead of NVDEC/NVENC, so that tests on machines
  // without a GPU run the same code. Never set it in production: it passes the checks of
  // claims the node does not back.
  bool test_video_challenge_software = false;
  // TLS (docs/security.md): `tls` for the gRPC port, `http_tls` for http_listen, `gateway_tls`
  // for the registration streams to every gateway. Absent: plaintext.
  TlsServerConfig tls;
  TlsServerConfig http_tls;
  TlsClientConfig gateway_tls;

  // The secret to send to the gateway at `address` ("" for none).
  std::string RegistrationSecretFor(const std::string& address) const;
};

// The node id used when the config gives none: "<hostname>-<port>", the port of
// advertise_address, else of listen; "<hostname>-<8 random hex digits>" when both ports are 0
// (picked at bind time, so unknown here). Unique per host and port, so two nodes left at the
// default do not take each other's id. `hostname` "" means this machine's (gethostname).
std::string DefaultNodeId(const OrchestratorConfig& config, std::string hostname = "");

// Parses and validates; errors name the file, the field and the reason.
absl::StatusOr<OrchestratorConfig> ParseOrchestratorConfig(const std::string& json_text,
                                                           const std::filesystem::path& file);
absl::StatusOr<OrchestratorConfig> LoadOrchestratorConfig(const std::filesystem::path& file);

}  // namespace switchyard::orchestrator
