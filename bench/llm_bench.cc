// The LLM engine (issue 21, src/runner/hf/engine.h) against baselines measured in the same run,
// on a random-weight checkpoint of a real model's shape that the bench writes itself (config.json
// + model.safetensors, float32; the weights are random, so only speed and memory mean anything):
//   1. decode time per token at batch 1: the Engine (continuous batching, paged KV cache, one
//      request) vs the bare libtorch loop. The baseline is the same Decoder's Forward() with a
//      plain ContiguousKvCache (one preallocated [1, kv_heads, capacity, head_dim] buffer per
//      layer), greedy argmax, no scheduler thread, no paging, no gathers: the simplest correct
//      KV-cached loop over the same weights and modules. Target engine / bare <= 1.15.
//   2. total generated tokens/s with --streams concurrent requests vs 1 request through the same
//      engine (target >= 6x at 16 streams).
//   3. time to first token, p50 over the --streams concurrent requests, vs the bare prefill of
//      one prompt alone (Forward() over the prompt; target <= 2x).
//   4. memory: the KV pool's blocks in use (EngineStats, read on every token) never exceed its
//      blocks_total, whose bytes stay within the KV budget; and the process RSS growth over the
//      engine's runs (after a warm-up that touched every weight page).
// For context, not targets: the bare loop batched over the --streams prompts (one static batch
// through Forward, attention as one batched matmul) against the engine's decode step at that many
// sequences, and the model's matrix multiplies alone at 1 and --streams rows (the most batching
// can give on this BLAS).
//
//   build/bin/llm_bench [--config smollm2-135m|smollm-360m|qwen2.5-0.5b] [--tokens 16]
//                       [--prompt 16] [--streams 16] [--repeats 3] [--threads 2]
//                       [--dtype float32|bfloat16] [--max-positions 1024]
//                       [--dir /tmp/llm_bench_<config>_<pid>] [--keep]
//                       [--profile-step PREFIX [--profile-steps N]]
//
// --profile-step only times the engine's decode step at --streams sequences against the bare
// batched step (and the prefill and sampling of the same rows), with libtorch profiler traces.
// Generation is greedy with ignore_eos, so every request generates exactly --tokens tokens.
// Rounds alternate the bare loop and the engine so that both see the same machine load; each
// figure is the median over --repeats rounds.
#include <sys/resource.h>
#include <unistd.h>

#include <ATen/Parallel.h>
#include <c10/core/InferenceMode.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <vector>

#include <torch/csrc/autograd/profiler_legacy.h>
#include <torch/cuda.h>
#include <CLI/CLI.hpp>

#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"
#include "runner/hf/decoder.h"
#include "runner/hf/engine.h"
#include "runner/hf/paged_kv_cache.h"
#include "runner/hf/sampling.h"

namespace fs = std::filesystem;
namespace hf = switchyard::runner::hf;
using Clock = std::chrono::steady_clock;
using nlohmann::json;

namespace {

double Ms(Clock::duration d) { return std::chrono::duration<double, std::milli>(d).count(); }

double Percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  size_t i =
      std::min(v.size() - 1, static_cast<size_t>(p * static_cast<double>(v.size() - 1) + 0.5));
  return v[i];
}
double Median(std::vector<double> v) { return Percentile(std::move(v), 0.5); }

int64_t RssKb() {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("VmRSS:", 0) == 0) return std::stoll(line.substr(6));
  }
  return 0;
}

std::string Fmt(double v, int digits) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", digits, v);
  return buf;
}

// The published shapes (config.json of each model on the Hub), with max_position_embeddings
// lowered to --max-positions: the engine refuses a KV budget below one full-context sequence, and
// a 8192-position pool of SmolLM2 would be 380 MB of float32 for nothing this bench uses.
absl::StatusOr<json> ModelConfig(const std::string& name, int64_t max_positions) {
  json c;
  if (name == "smollm2-135m") {
    c = {{"architectures", {"LlamaForCausalLM"}},
         {"model_type", "llama"},
         {"hidden_size", 576},
         {"intermediate_size", 1536},
         {"num_hidden_layers", 30},
         {"num_attention_heads", 9},
         {"num_key_value_heads", 3},
         {"rms_norm_eps", 1e-5},
         {"rope_theta", 100000.0},
         {"vocab_size", 49152},
         {"tie_word_embeddings", true},
         {"bos_token_id", 1},
         {"eos_token_id", 2}};
  } else if (name == "smollm-360m") {
    c = {{"architectures", {"LlamaForCausalLM"}},
         {"model_type", "llama"},
         {"hidden_size", 960},
         {"intermediate_size", 2560},
         {"num_hidden_layers", 32},
         {"num_attention_heads", 15},
         {"num_key_value_heads", 5},
         {"rms_norm_eps", 1e-5},
         {"rope_theta", 10000.0},
         {"vocab_size", 49152},
         {"tie_word_embeddings", true},
         {"bos_token_id", 0},
         {"eos_token_id", 0}};
  } else if (name == "qwen2.5-0.5b") {
    c = {{"architectures", {"Qwen2ForCausalLM"}},
         {"model_type", "qwen2"},
         {"hidden_size", 896},
         {"intermediate_size", 4864},
         {"num_hidden_layers", 24},
         {"num_attention_heads", 14},
         {"num_key_value_heads", 2},
         {"rms_norm_eps", 1e-6},
         {"rope_theta", 1000000.0},
         {"vocab_size", 151936},
         {"tie_word_embeddings", true},
         {"bos_token_id", 151643},
         {"eos_token_id", 151643}};
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat("unknown --config ", name, " (smollm2-135m, smollm-360m, qwen2.5-0.5b)"));
  }
  c["max_position_embeddings"] = max_positions;
  c["hidden_act"] = "silu";
  c["torch_dtype"] = "float32";
  return c;
}

// Writes config.json and a float32 model.safetensors of random weights (normal, std 0.02; norms
// 1) in transformers' names, streaming each tensor to the file.
absl::Status WriteCheckpoint(const fs::path& dir, const json& config) {
  const int64_t H = config["hidden_size"], I = config["intermediate_size"];
  const int64_t L = config["num_hidden_layers"], V = config["vocab_size"];
  const int64_t heads = config["num_attention_heads"], kv = config["num_key_value_heads"];
  const int64_t D = H / heads;
  const bool bias = config["model_type"] == "qwen2";
  std::vector<std::pair<std::string, std::vector<int64_t>>> shapes;
  shapes.push_back({"model.embed_tokens.weight", {V, H}});
  for (int64_t l = 0; l < L; ++l) {
    const std::string p = absl::StrCat("model.layers.", l, ".");
    shapes.push_back({p + "input_layernorm.weight", {H}});
    shapes.push_back({p + "self_attn.q_proj.weight", {heads * D, H}});
    shapes.push_back({p + "self_attn.k_proj.weight", {kv * D, H}});
    shapes.push_back({p + "self_attn.v_proj.weight", {kv * D, H}});
    if (bias) {
      shapes.push_back({p + "self_attn.q_proj.bias", {heads * D}});
      shapes.push_back({p + "self_attn.k_proj.bias", {kv * D}});
      shapes.push_back({p + "self_attn.v_proj.bias", {kv * D}});
    }
    shapes.push_back({p + "self_attn.o_proj.weight", {H, heads * D}});
    shapes.push_back({p + "post_attention_layernorm.weight", {H}});
    shapes.push_back({p + "mlp.gate_proj.weight", {I, H}});
    shapes.push_back({p + "mlp.up_proj.weight", {I, H}});
    shapes.push_back({p + "mlp.down_proj.weight", {H, I}});
  }
  shapes.push_back({"model.norm.weight", {H}});

  json header = json::object();
  int64_t offset = 0;
  for (const auto& [name, shape] : shapes) {
    int64_t n = 4;
    for (int64_t s : shape) n *= s;
    header[name] = {{"dtype", "F32"}, {"shape", shape}, {"data_offsets", {offset, offset + n}}};
    offset += n;
  }
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');  // 8-byte aligned data (the loader maps it)
  fs::create_directories(dir);
  {
    std::ofstream out(dir / "config.json");
    out << config.dump(2) << "\n";
    if (!out) return absl::InternalError(absl::StrCat("cannot write ", dir.string()));
  }
  std::ofstream out(dir / "model.safetensors", std::ios::binary | std::ios::trunc);
  uint64_t len = text.size();
  char le[8];
  for (int i = 0; i < 8; ++i) le[i] = static_cast<char>((len >> (8 * i)) & 0xff);
  out.write(le, 8);
  out.write(text.data(), static_cast<std::streamsize>(text.size()));
  at::manual_seed(21);
  for (const auto& [name, shape] : shapes) {
    const bool norm = name.find("norm") != std::string::npos;
    at::Tensor t = norm ? at::ones(shape) : at::randn(shape) * 0.02;
    if (name.find(".bias") != std::string::npos) t = at::randn(shape) * 0.02;
    t = t.contiguous();
    out.write(static_cast<const char*>(t.data_ptr()), static_cast<std::streamsize>(t.numel() * 4));
  }
  out.close();
  if (!out) return absl::InternalError(absl::StrCat("cannot write ", dir.string()));
  return absl::OkStatus();
}

std::vector<int64_t> Prompt(int64_t length, int64_t vocab, int64_t salt) {
  std::vector<int64_t> p;
  for (int64_t i = 0; i < length; ++i) p.push_back((i * 7919 + salt * 104729 + 3) % vocab);
  return p;
}

// The bare loop: prefill, then `tokens - 1` single-token forwards (the last token is not fed
// back, as in the engine). Times the prefill and the decode steps separately.
struct BareRun {
  double prefill_ms = 0;
  double decode_ms_per_token = 0;
  std::vector<int64_t> tokens;
};

absl::StatusOr<BareRun> RunBare(const hf::Decoder& d, hf::ContiguousKvCache* cache,
                                const std::vector<int64_t>& prompt, int64_t tokens) {
  c10::InferenceMode guard;
  cache->Reset();
  BareRun r;
  auto t0 = Clock::now();
  auto logits = d.Forward(at::tensor(prompt, at::kLong).view({1, -1}), cache);
  if (!logits.ok()) return logits.status();
  r.tokens.push_back((*logits)[0][-1].argmax().item<int64_t>());
  auto t1 = Clock::now();
  for (int64_t i = 1; i < tokens; ++i) {
    logits = d.Forward(at::full({1, 1}, r.tokens.back(), at::kLong), cache);
    if (!logits.ok()) return logits.status();
    r.tokens.push_back((*logits)[0][-1].argmax().item<int64_t>());
  }
  auto t2 = Clock::now();
  r.prefill_ms = Ms(t1 - t0);
  r.decode_ms_per_token = tokens > 1 ? Ms(t2 - t1) / static_cast<double>(tokens - 1) : 0;
  return r;
}

// The bare loop over `batch` sequences at once (llm_bench's prompts, all of the same length):
// one [batch, prompt] prefill, then [batch, 1] decode steps, attention as one batched matmul over
// a contiguous cache. What a static batch of the same work costs without paging or scheduling;
// milliseconds per decode step.
absl::StatusOr<double> BareBatchedDecodeMs(const hf::Decoder& d, int64_t batch, int64_t prompt_len,
                                           int64_t tokens) {
  auto cache = d.NewCache(batch, prompt_len + tokens);
  if (!cache.ok()) return cache.status();
  c10::InferenceMode guard;
  std::vector<int64_t> ids;
  for (int64_t s = 0; s < batch; ++s) {
    std::vector<int64_t> p = Prompt(prompt_len, d.config().vocab_size, s);
    ids.insert(ids.end(), p.begin(), p.end());
  }
  auto logits = d.Forward(at::tensor(ids, at::kLong).view({batch, prompt_len}), cache->get());
  if (!logits.ok()) return logits.status();
  at::Tensor next = logits->select(1, -1).argmax(-1, /*keepdim=*/true);
  const auto t0 = Clock::now();
  for (int64_t i = 1; i < tokens; ++i) {
    logits = d.Forward(next, cache->get());
    if (!logits.ok()) return logits.status();
    next = logits->select(1, -1).argmax(-1, /*keepdim=*/true);
  }
  next.sum().item<int64_t>();  // waits for the device's queued work (CUDA runs asynchronously)
  return Ms(Clock::now() - t0) / static_cast<double>(tokens - 1);
}

// `streams` requests submitted at once to the engine; what the callbacks saw.
struct EngineRun {
  double wall_ms = 0;                 // first Submit to the last on_done
  std::vector<double> ttft_ms;        // per request: Submit to its first token
  std::vector<double> decode_ms;      // per request: (last token - first token) / (n - 1)
  int64_t tokens = 0;                 // generated, all requests
  int64_t max_blocks_in_use = 0;      // seen from on_token
  std::vector<int64_t> first_tokens;  // request 0's tokens
  int failures = 0;
};

absl::StatusOr<EngineRun> RunEngine(hf::Engine* engine, int64_t streams, int64_t prompt_len,
                                    int64_t tokens, int64_t vocab) {
  struct PerRequest {
    std::vector<Clock::time_point> at;
    std::vector<int64_t> tokens;
  };
  std::vector<PerRequest> per(static_cast<size_t>(streams));
  std::mutex mu;
  std::condition_variable cv;
  int64_t done = 0;
  std::atomic<int> failures{0};
  std::atomic<int64_t> max_blocks{0};
  Clock::time_point last_done;
  int64_t submitted = streams;
  absl::Status submit_error;
  const auto start = Clock::now();
  for (int64_t s = 0; s < streams; ++s) {
    hf::GenerationRequest req;
    req.prompt = Prompt(prompt_len, vocab, s);
    req.sampling.temperature = 0;
    req.sampling.max_tokens = tokens;
    req.sampling.ignore_eos = true;
    req.deadline = Clock::now() + std::chrono::minutes(30);  // bounded
    hf::GenerationCallbacks cb;
    PerRequest* p = &per[static_cast<size_t>(s)];
    cb.on_token = [p, engine, &max_blocks](int64_t token) {
      p->at.push_back(Clock::now());  // the scheduler thread only
      p->tokens.push_back(token);
      const int64_t used = engine->Stats().blocks_in_use;
      int64_t prev = max_blocks.load();
      while (used > prev && !max_blocks.compare_exchange_weak(prev, used)) {
      }
    };
    cb.on_done = [&](const hf::GenerationResult& r) {
      if (!r.status.ok()) {
        std::cerr << "request failed: " << r.status << "\n";
        ++failures;
      }
      std::lock_guard<std::mutex> lock(mu);
      ++done;
      last_done = Clock::now();
      cv.notify_all();
    };
    if (absl::Status st = engine->Submit(std::move(req), std::move(cb)); !st.ok()) {
      submit_error = st;
      submitted = s;
      break;
    }
  }
  {
    // The callbacks use this frame: it is left only once every accepted request has finished.
    std::unique_lock<std::mutex> lock(mu);
    if (!cv.wait_for(lock, std::chrono::minutes(30), [&] { return done == submitted; })) {
      std::cerr << "engine run did not finish within 30 minutes\n";
      std::_Exit(2);
    }
  }
  if (!submit_error.ok()) return submit_error;
  EngineRun r;
  r.wall_ms = Ms(last_done - start);
  r.failures = failures.load();
  r.max_blocks_in_use = max_blocks.load();
  for (const PerRequest& p : per) {
    r.tokens += static_cast<int64_t>(p.tokens.size());
    if (p.at.empty()) continue;
    r.ttft_ms.push_back(Ms(p.at.front() - start));
    if (p.at.size() > 1) {
      r.decode_ms.push_back(Ms(p.at.back() - p.at.front()) / static_cast<double>(p.at.size() - 1));
    }
  }
  r.first_tokens = per[0].tokens;
  return r;
}

// Milliseconds from Submit to the first token of one greedy request for `prompt` (2 tokens).
absl::StatusOr<double> TtftMs(hf::Engine* engine, std::vector<int64_t> prompt) {
  std::mutex mu;
  std::condition_variable cv;
  bool done = false;
  Clock::time_point first{};
  absl::Status status;
  hf::GenerationRequest req;
  req.prompt = std::move(prompt);
  req.sampling.temperature = 0;
  req.sampling.max_tokens = 2;
  req.sampling.ignore_eos = true;
  hf::GenerationCallbacks cb;
  cb.on_token = [&](int64_t) {
    std::lock_guard<std::mutex> lock(mu);
    if (first == Clock::time_point{}) first = Clock::now();
  };
  cb.on_done = [&](const hf::GenerationResult& r) {
    std::lock_guard<std::mutex> lock(mu);
    status = r.status;
    done = true;
    cv.notify_all();
  };
  const auto start = Clock::now();
  if (absl::Status st = engine->Submit(std::move(req), std::move(cb)); !st.ok()) return st;
  std::unique_lock<std::mutex> lock(mu);
  if (!cv.wait_for(lock, std::chrono::minutes(30), [&] { return done; })) {
    std::cerr << "a request did not finish within 30 minutes\n";
    std::_Exit(2);
  }
  if (!status.ok()) return status;
  return Ms(first - start);
}

// Shared prefixes: the time to first token of a request whose first `shared` tokens another
// request prefilled before (prefix caching on), against the same request in an engine with
// prefix caching off; medians over `repeats` pairs, each with its own prefix and question.
absl::Status SharedPrefixRow(std::shared_ptr<const hf::Decoder> decoder, hf::EngineOptions options,
                             int64_t shared, int64_t question, int repeats) {
  options.prefix_caching = true;
  auto cached = hf::Engine::Create(decoder, options);
  if (!cached.ok()) return cached.status();
  options.prefix_caching = false;
  auto plain = hf::Engine::Create(decoder, options);
  if (!plain.ok()) return plain.status();
  const int64_t vocab = decoder->config().vocab_size;
  std::vector<double> with, without;
  for (int r = 0; r < repeats; ++r) {
    std::vector<int64_t> first = Prompt(shared, vocab, 1000 + r);
    std::vector<int64_t> second = first;
    for (int64_t t : Prompt(question, vocab, 2000 + r)) second.push_back(t);
    for (int64_t t : Prompt(question, vocab, 3000 + r)) first.push_back(t);
    auto warm = TtftMs(cached->get(), first);  // publishes the shared blocks
    if (!warm.ok()) return warm.status();
    auto hit = TtftMs(cached->get(), second);
    if (!hit.ok()) return hit.status();
    auto miss = TtftMs(plain->get(), second);
    if (!miss.ok()) return miss.status();
    with.push_back(*hit);
    without.push_back(*miss);
  }
  const hf::EngineStats stats = (*cached)->Stats();
  std::cout << "Shared prefix (one run after the rounds): a " << shared + question
            << "-token prompt whose first " << shared
            << " tokens an earlier request prefilled: TTFT " << Fmt(Median(with), 1)
            << " ms with prefix caching vs " << Fmt(Median(without), 1) << " ms without (median of "
            << repeats << "): " << Fmt(Median(without) / Median(with), 2) << "x faster; "
            << stats.prefix_hit_tokens << " prompt tokens reused in all.\n";
  return absl::OkStatus();
}

// The model's matrix multiplies alone (fresh random weights of the decoder's shapes and dtype:
// fused qkv, o, fused gate/up and down per layer, then the lm_head), for `rows` tokens at once:
// what libtorch's GEMM gives a step of that many tokens with no attention, no norms and no
// scheduling. Milliseconds per pass, median of `passes`.
double MatmulOnlyMs(const hf::DecoderConfig& c, at::ScalarType dtype, at::Device device,
                    int64_t rows, int passes) {
  c10::InferenceMode guard;
  const int64_t H = c.hidden_size, D = c.head_dim, I = c.intermediate_size;
  const auto opt = at::TensorOptions().dtype(dtype).device(device);
  std::vector<std::array<at::Tensor, 4>> layers;
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    layers.push_back({at::randn({(c.num_attention_heads + 2 * c.num_key_value_heads) * D, H}, opt),
                      at::randn({H, c.num_attention_heads * D}, opt), at::randn({2 * I, H}, opt),
                      at::randn({H, I}, opt)});
  }
  const at::Tensor head = at::randn({c.vocab_size, H}, opt);
  const at::Tensor x = at::randn({rows, H}, opt);
  const at::Tensor attn = at::randn({rows, c.num_attention_heads * D}, opt);
  const at::Tensor mid = at::randn({rows, I}, opt);
  std::vector<double> ms;
  for (int p = 0; p <= passes; ++p) {  // pass 0 warms up
    const auto t0 = Clock::now();
    for (const auto& w : layers) {
      at::linear(x, w[0]);
      at::linear(attn, w[1]);
      at::linear(x, w[2]);
      at::linear(mid, w[3]);
    }
    at::linear(x, head).sum().item<double>();  // waits for the device (CUDA is asynchronous)
    if (p > 0) ms.push_back(Ms(Clock::now() - t0));
  }
  return Median(ms);
}

// --profile-step: one engine-shaped decode step at `streams` sequences (Decoder::ForwardRagged
// over a PagedKvCache, then SampleToken per row, as Engine::Step) against one bare batched step
// (Forward over [streams, 1] with a contiguous cache, argmax), both at the same positions after a
// prefill of the bench's prompts. Steps alternate; prints the median of each over `steps` steps
// and writes libtorch profiler traces (chrome trace JSON) of a few steps of each to
// <prefix>.engine.json and <prefix>.bare.json.
absl::Status ProfileStep(const hf::Decoder& d, const hf::EngineOptions& options, int64_t streams,
                         int64_t prompt_len, int64_t steps, const std::string& prefix) {
  const hf::DecoderConfig& c = d.config();
  auto paged = hf::PagedKvCache::Create(c, options.kv_budget_bytes, options.block_tokens, d.dtype(),
                                        d.device());
  if (!paged.ok()) return paged.status();
  auto contiguous = d.NewCache(streams, prompt_len + steps + 1);
  if (!contiguous.ok()) return contiguous.status();
  c10::InferenceMode guard;
  std::vector<std::vector<int64_t>> tokens(streams);
  std::vector<std::vector<int32_t>> tables(streams);
  std::vector<int64_t> ids;
  for (int64_t s = 0; s < streams; ++s) {
    tokens[s] = Prompt(prompt_len, c.vocab_size, s);
    ids.insert(ids.end(), tokens[s].begin(), tokens[s].end());
    if (!(*paged)->Reserve(&tables[s], prompt_len + steps + 1)) {
      return absl::ResourceExhaustedError("profile: pool too small");
    }
  }
  std::vector<hf::RaggedSequence> inputs;
  for (int64_t s = 0; s < streams; ++s) inputs.push_back({&tokens[s], 0, &tables[s]});
  // The prefill of all prompts in one step, alternating with the bare batched prefill (whose
  // cache is reset each time); the last of each is kept.
  std::vector<double> prefill_engine_ms, prefill_bare_ms;
  absl::StatusOr<at::Tensor> first, bare;
  for (int r = 0; r < 5; ++r) {
    auto t0 = Clock::now();
    first = d.ForwardRagged(inputs, paged->get());
    if (!first.ok()) return first.status();
    prefill_engine_ms.push_back(Ms(Clock::now() - t0));
    (*contiguous)->Reset();
    t0 = Clock::now();
    bare = d.Forward(at::tensor(ids, at::kLong).view({streams, prompt_len}), contiguous->get());
    if (!bare.ok()) return bare.status();
    prefill_bare_ms.push_back(Ms(Clock::now() - t0));
  }
  std::cout << "Profile: prefill of " << streams << " x " << prompt_len
            << " tokens in one step, median of 5: engine (ForwardRagged) "
            << Fmt(Median(prefill_engine_ms), 1) << " ms, bare batched Forward "
            << Fmt(Median(prefill_bare_ms), 1)
            << " ms: " << Fmt(Median(prefill_engine_ms) / Median(prefill_bare_ms), 2) << "x\n";
  hf::SamplingParams greedy;
  greedy.temperature = 0;
  std::vector<std::mt19937_64> rngs(streams);
  std::vector<int64_t> next(streams);
  at::Tensor bare_next = bare->select(1, -1).argmax(-1, /*keepdim=*/true);
  auto engine_step = [&](const at::Tensor& logits_in) {
    at::Tensor rows = logits_in.to(at::kCPU).contiguous();
    const float* data = rows.data_ptr<float>();
    for (int64_t s = 0; s < streams; ++s) {
      next[s] = hf::SampleToken(data + s * c.vocab_size, c.vocab_size, greedy, &rngs[s]);
    }
  };
  engine_step(*first);
  int64_t past = prompt_len;
  std::vector<double> engine_ms, bare_ms;
  auto run_engine = [&]() -> absl::Status {
    inputs.clear();
    for (int64_t s = 0; s < streams; ++s) {
      tokens[s].assign(1, next[s]);
      inputs.push_back({&tokens[s], past, &tables[s]});
    }
    auto logits = d.ForwardRagged(inputs, paged->get());
    if (!logits.ok()) return logits.status();
    engine_step(*logits);
    return absl::OkStatus();
  };
  auto run_bare = [&]() -> absl::Status {
    auto logits = d.Forward(bare_next, contiguous->get());
    if (!logits.ok()) return logits.status();
    bare_next = logits->select(1, -1).argmax(-1, /*keepdim=*/true);
    bare_next.sum().item<int64_t>();
    return absl::OkStatus();
  };
  const int64_t profiled = std::min<int64_t>(4, steps / 2);
  for (int64_t i = 0; i < steps; ++i, ++past) {
    const bool profile = i >= steps - profiled;
    {
      std::unique_ptr<torch::autograd::profiler::RecordProfile> rec;
      if (profile && i == steps - profiled) {
        rec = std::make_unique<torch::autograd::profiler::RecordProfile>(prefix + ".engine.json");
      }
      const auto t0 = Clock::now();
      if (absl::Status st = run_engine(); !st.ok()) return st;
      if (!profile) engine_ms.push_back(Ms(Clock::now() - t0));
      for (int64_t k = 1; rec != nullptr && k < profiled; ++k) {
        ++past;  // the profiled steps of one side run back to back
        if (absl::Status st = run_engine(); !st.ok()) return st;
      }
      if (rec != nullptr) past -= profiled - 1;
    }
    {
      std::unique_ptr<torch::autograd::profiler::RecordProfile> rec;
      if (profile && i == steps - profiled) {
        rec = std::make_unique<torch::autograd::profiler::RecordProfile>(prefix + ".bare.json");
      }
      const auto t0 = Clock::now();
      if (absl::Status st = run_bare(); !st.ok()) return st;
      if (!profile) bare_ms.push_back(Ms(Clock::now() - t0));
      for (int64_t k = 1; rec != nullptr && k < profiled; ++k) {
        if (absl::Status st = run_bare(); !st.ok()) return st;
      }
    }
    if (profile) break;
  }
  // The engine's sampling of `streams` rows of these logits for sampled requests (temperature
  // 0.8, top_p 0.9, a seed each), as Engine::Step samples them; median of 5.
  {
    at::Tensor rows = first->to(at::kCPU).contiguous();
    const float* data = rows.data_ptr<float>();
    hf::SamplingParams sampled;
    sampled.temperature = 0.8;
    sampled.top_p = 0.9;
    std::vector<double> ms;
    int64_t sum = 0;
    for (int r = 0; r < 5; ++r) {
      for (int64_t s = 0; s < streams; ++s) rngs[s].seed(s);
      const auto t0 = Clock::now();
      std::vector<hf::SampleRow> sample;
      for (int64_t s = 0; s < streams; ++s) sample.push_back(hf::SampleRow{s, &sampled, &rngs[s]});
      hf::SampleTokens(data, c.vocab_size, sample, next.data());
      ms.push_back(Ms(Clock::now() - t0));
      for (int64_t t : next) sum += t;
    }
    std::cout << "Profile: sampling " << streams
              << " rows (temperature 0.8, top_p 0.9) as the engine does, median of 5: "
              << Fmt(Median(ms), 2) << " ms (token sum " << sum << ")\n";
  }
  std::cout << "Profile: decode step at " << streams << " sequences, median of " << engine_ms.size()
            << " (positions " << prompt_len << "+): engine step " << Fmt(Median(engine_ms), 1)
            << " ms (min " << Fmt(*std::min_element(engine_ms.begin(), engine_ms.end()), 1)
            << "), bare batched " << Fmt(Median(bare_ms), 1) << " ms (min "
            << Fmt(*std::min_element(bare_ms.begin(), bare_ms.end()), 1)
            << "): " << Fmt(Median(engine_ms) / Median(bare_ms), 2) << "x; traces " << prefix
            << ".{engine,bare}.json\n";
  return absl::OkStatus();
}

void Row(const std::string& what, const std::string& engine, const std::string& baseline,
         double ratio, const std::string& target, bool pass) {
  std::cout << "| " << what << " | " << engine << " | " << baseline << " | **" << Fmt(ratio, 2)
            << "** | " << target << " | " << (pass ? "PASS" : "MISS") << " |\n";
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"The LLM engine against a bare libtorch loop (docs/performance.md, 'LLM engine')"};
  std::string config_name = "smollm2-135m";
  int64_t tokens = 16, prompt_len = 16, streams = 16, max_positions = 1024;
  int repeats = 3, threads = 2;
  std::string dir, dtype_name = "float32", device_name = "cpu";
  bool keep = false;
  std::string profile_prefix;
  int64_t profile_steps = 0;
  app.add_option("--config", config_name, "Model shape: smollm2-135m, smollm-360m, qwen2.5-0.5b");
  app.add_option("--tokens", tokens, "Tokens generated per request (2..4096)");
  app.add_option("--prompt", prompt_len, "Prompt tokens per request (1..4096)");
  app.add_option("--streams", streams, "Concurrent requests for 2. and 3. (1..256)");
  app.add_option("--repeats", repeats, "Rounds; each runs every measurement once (1..50)");
  app.add_option("--threads", threads, "libtorch intra-op threads");
  app.add_option("--dtype", dtype_name,
                 "Compute dtype: float32 (libtorch's BLAS: whatever libblas.so.3 is, OpenBLAS "
                 "after scripts/install-deps), bfloat16 "
                 "(oneDNN on CPUs with AVX-512 BF16) or float16 (CUDA only)");
  app.add_option("--device", device_name,
                 "cpu, or cuda / cuda:N with a CUDA libtorch (scripts/build --torch, docs/gpu.md)");
  app.add_option("--max-positions", max_positions,
                 "max_position_embeddings written to config.json");
  app.add_option("--dir", dir, "Checkpoint folder (default /tmp/llm_bench_<config>_<pid>)");
  app.add_flag("--keep", keep, "Keep the checkpoint folder (and reuse it when it exists)");
  app.add_option("--profile-step", profile_prefix,
                 "Only time one engine-shaped decode step at --streams sequences against the bare "
                 "batched step, and write libtorch profiler traces to PREFIX.{engine,bare}.json");
  app.add_option("--profile-steps", profile_steps,
                 "Decode steps timed by --profile-step (default --tokens)");
  CLI11_PARSE(app, argc, argv);
  if (tokens < 2 || tokens > 4096 || prompt_len < 1 || prompt_len > 4096 || streams < 1 ||
      streams > 256 || repeats < 1 || repeats > 50 || threads < 1 ||
      prompt_len + tokens > max_positions) {
    std::cerr << "flags out of range (--tokens 2..4096, --prompt 1..4096, --streams 1..256, "
                 "--repeats 1..50, --threads >= 1, --prompt + --tokens <= --max-positions)\n";
    return 1;
  }
  at::set_num_threads(threads);
  at::set_num_interop_threads(1);
  at::Device device = at::kCPU;
  try {
    device = at::Device(device_name);
  } catch (const c10::Error&) {
    std::cerr << "--device " << device_name << ": not a device (cpu, cuda, cuda:N)\n";
    return 1;
  }
  if (device.is_cuda() && !torch::cuda::is_available()) {
    std::cerr << "--device " << device_name
              << ": this libtorch has no CUDA or the machine no GPU (docs/gpu.md)\n";
    return 1;
  }
  if (!device.is_cpu() && !device.is_cuda()) {
    std::cerr << "--device " << device_name << ": only cpu and cuda are supported\n";
    return 1;
  }
  auto config = ModelConfig(config_name, max_positions);
  if (!config.ok()) {
    std::cerr << config.status() << "\n";
    return 1;
  }
  const fs::path folder = dir.empty() ? fs::temp_directory_path() /
                                            absl::StrCat("llm_bench_", config_name, "_", getpid())
                                      : fs::path(dir);
  const bool reuse = keep && fs::exists(folder / "model.safetensors");
  auto t0 = Clock::now();
  if (!reuse) {
    if (absl::Status st = WriteCheckpoint(folder, *config); !st.ok()) {
      std::cerr << st << "\n";
      return 1;
    }
  }
  std::cerr << (reuse ? "reused " : "wrote ") << folder << " in " << Fmt(Ms(Clock::now() - t0), 0)
            << " ms\n";
  if (dtype_name != "float32" && dtype_name != "bfloat16" &&
      !(dtype_name == "float16" && device.is_cuda())) {
    std::cerr << "--dtype must be float32 or bfloat16 (or float16 on CUDA)\n";
    return 1;
  }
  const at::ScalarType dtype = dtype_name == "float32"    ? at::kFloat
                               : dtype_name == "bfloat16" ? at::kBFloat16
                                                          : at::kHalf;
  auto loaded = hf::Decoder::Load(folder, device, dtype);
  if (!keep) fs::remove_all(folder);  // the mapping stays valid after the unlink
  if (!loaded.ok()) {
    std::cerr << loaded.status() << "\n";
    return 1;
  }
  std::shared_ptr<const hf::Decoder> decoder(*std::move(loaded));
  const hf::DecoderConfig& c = decoder->config();
  int64_t params = c.vocab_size * c.hidden_size;
  params += c.num_hidden_layers *
            (c.hidden_size * c.head_dim * (2 * c.num_attention_heads + 2 * c.num_key_value_heads) +
             3 * c.hidden_size * c.intermediate_size);

  auto bare_cache = decoder->NewCache(1, prompt_len + tokens);
  if (!bare_cache.ok()) {
    std::cerr << bare_cache.status() << "\n";
    return 1;
  }
  // The engine: a KV budget for `streams` full requests plus one full-context sequence (the
  // engine's floor), rounded up to whole blocks.
  hf::EngineOptions options;
  options.block_tokens = 16;
  options.max_batch_sequences = std::max<int64_t>(16, streams);
  options.max_batch_tokens = std::max<int64_t>(512, options.max_batch_sequences);
  // Every round sends the same prompts: reusing their prefixes would skip the prefills measured.
  options.prefix_caching = false;
  const int64_t block_bytes = hf::PagedKvCache::BytesPerBlock(c, options.block_tokens, dtype);
  const int64_t per_request =
      (prompt_len + tokens - 1 + options.block_tokens - 1) / options.block_tokens;
  const int64_t full_context = (max_positions + options.block_tokens - 1) / options.block_tokens;
  options.kv_budget_bytes = (std::max(streams * per_request, full_context) + 1) * block_bytes;

  if (!profile_prefix.empty()) {
    const int64_t n = profile_steps > 0 ? profile_steps : tokens;
    if (prompt_len + n + 1 > max_positions) {
      std::cerr << "--prompt + --profile-steps must stay below --max-positions\n";
      return 1;
    }
    options.kv_budget_bytes = (std::max(streams * ((prompt_len + n + 1 + options.block_tokens - 1) /
                                                   options.block_tokens),
                                        full_context) +
                               1) *
                              block_bytes;
    absl::Status st = ProfileStep(*decoder, options, streams, prompt_len, n, profile_prefix);
    if (!st.ok()) {
      std::cerr << st << "\n";
      return 1;
    }
    return 0;
  }
  std::cout << "# LLM engine vs a bare libtorch loop: " << config_name << " shape ("
            << Fmt(static_cast<double>(params) / 1e6, 1) << "M params, random weights, "
            << dtype_name << " compute on " << device.str() << "), "
            << "prompt " << prompt_len << ", " << tokens << " tokens per request, " << streams
            << " streams, " << threads << " intra-op thread(s), " << repeats << " round(s)\n\n";

  // Warm-up: touches every weight page (the RSS baseline below includes them) and lets the
  // allocator settle. One bare run; one engine run follows in a throwaway engine.
  if (auto w = RunBare(*decoder, bare_cache->get(), Prompt(prompt_len, c.vocab_size, 0), 2);
      !w.ok()) {
    std::cerr << w.status() << "\n";
    return 1;
  }
  const int64_t rss_before_kb = RssKb();
  auto engine = hf::Engine::Create(decoder, options);
  if (!engine.ok()) {
    std::cerr << engine.status() << "\n";
    return 1;
  }
  const int64_t rss_engine_kb = RssKb();
  if (auto w = RunEngine(engine->get(), 1, prompt_len, 2, c.vocab_size); !w.ok()) {
    std::cerr << w.status() << "\n";
    return 1;
  }

  std::vector<double> bare_decode, bare_prefill, engine_decode, engine1_tps, engineN_tps,
      engine1_ttft, engineN_ttft, engineN_decode;
  int64_t max_blocks = 0;
  int failures = 0;
  bool tokens_match = true;
  std::vector<int64_t> bare_tokens;
  for (int r = 0; r < repeats; ++r) {
    auto bare = RunBare(*decoder, bare_cache->get(), Prompt(prompt_len, c.vocab_size, 0), tokens);
    if (!bare.ok()) {
      std::cerr << bare.status() << "\n";
      return 1;
    }
    auto one = RunEngine(engine->get(), 1, prompt_len, tokens, c.vocab_size);
    if (!one.ok()) {
      std::cerr << one.status() << "\n";
      return 1;
    }
    auto many = RunEngine(engine->get(), streams, prompt_len, tokens, c.vocab_size);
    if (!many.ok()) {
      std::cerr << many.status() << "\n";
      return 1;
    }
    bare_decode.push_back(bare->decode_ms_per_token);
    bare_prefill.push_back(bare->prefill_ms);
    engine_decode.push_back(Median(one->decode_ms));
    engine1_ttft.push_back(Median(one->ttft_ms));
    engine1_tps.push_back(1000.0 * static_cast<double>(one->tokens) / one->wall_ms);
    engineN_tps.push_back(1000.0 * static_cast<double>(many->tokens) / many->wall_ms);
    engineN_ttft.push_back(Percentile(many->ttft_ms, 0.5));
    engineN_decode.push_back(Median(many->decode_ms));
    max_blocks = std::max({max_blocks, one->max_blocks_in_use, many->max_blocks_in_use});
    failures += one->failures + many->failures;
    tokens_match = tokens_match && one->first_tokens == bare->tokens;
    bare_tokens = bare->tokens;
    std::cerr << "round " << r + 1 << " of " << repeats << ": bare decode "
              << Fmt(bare->decode_ms_per_token, 1) << " ms/token, engine "
              << Fmt(Median(one->decode_ms), 1) << " ms/token, " << streams << " streams "
              << Fmt(engineN_tps.back(), 1) << " tokens/s\n";
  }
  const hf::EngineStats stats = (*engine)->Stats();
  const int64_t rss_after_kb = RssKb();

  const double decode_ratio = Median(engine_decode) / Median(bare_decode);
  const double tps_ratio = Median(engineN_tps) / Median(engine1_tps);
  const double ttft_ratio = Median(engineN_ttft) / Median(bare_prefill);
  const int64_t pool_bytes = stats.blocks_total * block_bytes;
  const bool pool_ok = max_blocks <= stats.blocks_total && pool_bytes <= options.kv_budget_bytes &&
                       stats.blocks_in_use == 0;

  std::cout
      << "| measurement | engine | baseline | ratio | target | |\n|---|---|---|---|---|---|\n";
  Row("1. decode ms/token, batch 1 (engine / bare Forward + contiguous KV)",
      Fmt(Median(engine_decode), 2), Fmt(Median(bare_decode), 2), decode_ratio, "<= 1.15",
      decode_ratio <= 1.15);
  Row(absl::StrCat("2. tokens/s, ", streams, " streams / 1 stream (same engine)"),
      Fmt(Median(engineN_tps), 1), Fmt(Median(engine1_tps), 1), tps_ratio, ">= 6", tps_ratio >= 6);
  Row(absl::StrCat("3. TTFT p50 ms, ", streams, " streams / bare prefill of one prompt"),
      Fmt(Median(engineN_ttft), 1), Fmt(Median(bare_prefill), 1), ttft_ratio, "<= 2",
      ttft_ratio <= 2);
  Row("4. KV blocks in use, max seen / pool (pool bytes <= budget, 0 in use at the end)",
      std::to_string(max_blocks), std::to_string(stats.blocks_total),
      static_cast<double>(max_blocks) / static_cast<double>(stats.blocks_total), "<= 1", pool_ok);
  std::cout << "\nKV pool: " << stats.blocks_total << " blocks of " << options.block_tokens
            << " tokens, " << Fmt(static_cast<double>(pool_bytes) / (1 << 20), 1) << " MiB of a "
            << Fmt(static_cast<double>(options.kv_budget_bytes) / (1 << 20), 1)
            << " MiB budget; blocks in use at the end " << stats.blocks_in_use << "; "
            << stats.steps << " engine steps.\n";
  std::cout << "RSS: " << Fmt(static_cast<double>(rss_before_kb) / 1024, 1)
            << " MiB after the warm-up (weights touched), +"
            << Fmt(static_cast<double>(rss_engine_kb - rss_before_kb) / 1024, 1)
            << " MiB at engine creation, +"
            << Fmt(static_cast<double>(rss_after_kb - rss_engine_kb) / 1024, 1)
            << " MiB over all engine runs (" << Fmt(static_cast<double>(rss_after_kb) / 1024, 1)
            << " MiB at the end).\n";
  std::cout << "Engine TTFT at 1 stream (median of rounds): " << Fmt(Median(engine1_ttft), 1)
            << " ms (the bare prefill also computes logits for every prompt token, the engine "
               "only for the last); TTFT p50 at "
            << streams << " streams / engine TTFT at 1 stream: "
            << Fmt(Median(engineN_ttft) / Median(engine1_ttft), 2)
            << "; decode ms/token per request at " << streams
            << " streams: " << Fmt(Median(engineN_decode), 1) << ".\n";
  std::cout << "Per round: bare decode ms/token";
  for (double v : bare_decode) std::cout << " " << Fmt(v, 1);
  std::cout << "; engine decode ms/token";
  for (double v : engine_decode) std::cout << " " << Fmt(v, 1);
  std::cout << "; " << streams << "-stream tokens/s";
  for (double v : engineN_tps) std::cout << " " << Fmt(v, 1);
  std::cout << "; 1-stream tokens/s";
  for (double v : engine1_tps) std::cout << " " << Fmt(v, 1);
  std::cout << "\n";
  // After the RSS figures: its cache is not the engine's.
  auto batched = BareBatchedDecodeMs(*decoder, streams, prompt_len, tokens);
  if (!batched.ok()) {
    std::cerr << batched.status() << "\n";
    return 1;
  }
  std::cout << "Decode step at " << streams << " sequences (one run after the rounds): engine "
            << Fmt(Median(engineN_decode), 1) << " ms (median of rounds) vs the bare loop batched ("
            << streams << " x 1 tokens through Forward, contiguous cache) " << Fmt(*batched, 1)
            << " ms: " << Fmt(Median(engineN_decode) / *batched, 2)
            << "x; the bare batched loop decodes "
            << Fmt(static_cast<double>(streams) * Median(bare_decode) / *batched, 2)
            << "x the tokens/s of the bare 1-stream loop.\n";
  if (absl::Status st = SharedPrefixRow(decoder, options,
                                        std::min<int64_t>(256, max_positions - 64), 16, repeats);
      !st.ok()) {
    std::cerr << st << "\n";
    return 1;
  }
  // Last: its weights would count in the RSS figures above.
  const double mm1 = MatmulOnlyMs(c, dtype, device, 1, 5);
  const double mmN = MatmulOnlyMs(c, dtype, device, streams, 5);
  std::cout << "Matrix multiplies alone (the model's linear layers, no attention or scheduling): "
            << Fmt(mm1, 1) << " ms for 1 token, " << Fmt(mmN, 1) << " ms for " << streams
            << " tokens at once, so at most " << Fmt(static_cast<double>(streams) * mm1 / mmN, 2)
            << "x tokens/s from batching " << streams << " decodes on this BLAS.";
  std::cout << "\nGreedy tokens of the engine's request equal the bare loop's: "
            << (tokens_match ? "yes" : "NO") << " (";
  for (size_t i = 0; i < bare_tokens.size() && i < 8; ++i)
    std::cout << (i ? " " : "") << bare_tokens[i];
  std::cout << " ...); failed requests: " << failures << ".\n";
  // Misses of the speed targets are findings; a failed request or a pool over its budget is a bug.
  return failures == 0 && pool_ok ? 0 : 1;
}
