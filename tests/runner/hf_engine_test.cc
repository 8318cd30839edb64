// The LLM engine (src/runner/hf/engine.h): the paged KV cache, the decoder's ragged batched step,
// continuous batching and sampling, on the reference fixtures of tests/fixtures/hf/ (tiny
// random-weight models; their 64 greedy tokens come from the float64 PyTorch reference).
#include <ATen/Parallel.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <mutex>
#include <numeric>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "nlohmann/json.hpp"
#include "runner/hf/decoder.h"
#include "runner/hf/engine.h"
#include "runner/hf/paged_kv_cache.h"
#include "runner/hf/sampling.h"

namespace switchyard::runner::hf {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using std::chrono::seconds;

const fs::path kFixtures = fs::path(SWITCHYARD_SOURCE_DIR) / "tests" / "fixtures" / "hf";
// Every wait in these tests is bounded by this; a hang fails instead of blocking CI.
constexpr auto kWait = seconds(120);

struct Expected {
  std::vector<int64_t> prompt;
  std::vector<int64_t> greedy;
};

Expected LoadExpected(const std::string& name) {
  std::ifstream in(kFixtures / name / "expected.json");
  json j = json::parse(in);
  return {j.at("prompt").get<std::vector<int64_t>>(),
          j.at("greedy_tokens").get<std::vector<int64_t>>()};
}

std::shared_ptr<const Decoder> LoadDecoder(const std::string& name) {
  auto d = Decoder::Load(kFixtures / name);
  EXPECT_TRUE(d.ok()) << d.status();
  if (!d.ok()) return nullptr;
  return std::shared_ptr<const Decoder>(*std::move(d));
}

// KV bytes for `blocks` blocks of `block_tokens` tokens of this decoder.
int64_t Budget(const Decoder& d, int64_t blocks, int64_t block_tokens = 16) {
  return blocks * PagedKvCache::BytesPerBlock(d.config(), block_tokens, d.dtype());
}

// The tokens and the result of one request, filled by the engine's callbacks.
struct Outcome {
  std::vector<int64_t> tokens;
  GenerationResult result;
  int done_calls = 0;
};

// Collects the outcomes of many requests; waits are bounded.
class Collector {
 public:
  GenerationCallbacks Callbacks(int id, std::function<void(int64_t)> also = nullptr) {
    GenerationCallbacks cb;
    cb.on_token = [this, id, also](int64_t token) {
      {
        std::lock_guard<std::mutex> lock(mu_);
        outcomes_[id].tokens.push_back(token);
      }
      cv_.notify_all();
      if (also) also(token);
    };
    cb.on_done = [this, id](const GenerationResult& r) {
      {
        std::lock_guard<std::mutex> lock(mu_);
        outcomes_[id].result = r;
        ++outcomes_[id].done_calls;
        ++finished_;
      }
      cv_.notify_all();
    };
    return cb;
  }
  // True when `n` requests finished in time.
  bool WaitFinished(int n) {
    std::unique_lock<std::mutex> lock(mu_);
    return cv_.wait_for(lock, kWait, [&] { return finished_ >= n; });
  }
  // True when request `id` produced `n` tokens or finished, in time.
  bool WaitTokens(int id, size_t n) {
    std::unique_lock<std::mutex> lock(mu_);
    return cv_.wait_for(lock, kWait, [&] {
      return outcomes_[id].tokens.size() >= n || outcomes_[id].done_calls > 0;
    });
  }
  Outcome Get(int id) {
    std::lock_guard<std::mutex> lock(mu_);
    return outcomes_[id];
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::map<int, Outcome> outcomes_;
  int finished_ = 0;
};

GenerationRequest Request(std::vector<int64_t> prompt, int64_t max_tokens, double temperature = 0) {
  GenerationRequest r;
  r.prompt = std::move(prompt);
  r.sampling.temperature = temperature;
  r.sampling.max_tokens = max_tokens;
  return r;
}

// One request alone in a fresh engine.
Outcome RunAlone(std::shared_ptr<const Decoder> d, GenerationRequest request,
                 EngineOptions options = {}) {
  options.kv_budget_bytes = Budget(*d, 64);
  auto engine = Engine::Create(d, options);
  EXPECT_TRUE(engine.ok()) << engine.status();
  Collector c;
  absl::Status s = (*engine)->Submit(std::move(request), c.Callbacks(0));
  EXPECT_TRUE(s.ok()) << s;
  EXPECT_TRUE(c.WaitFinished(1));
  return c.Get(0);
}

const std::vector<std::string> kModels = {"llama", "llama_bias", "qwen2", "qwen3"};

// ---------------------------------------------------------------------------------------------
// The ragged step

// Runs `steps` (chunk lengths per sequence; 0 means the sequence sits the step out) of three
// sequences through ForwardRagged, with blocks of 4 tokens scattered through the pool, and checks
// every sequence's logits against Forward() on the whole sequence so far (its last token's).
// Returns the positions each sequence reached.
std::vector<int64_t> CheckRaggedSteps(const std::string& name,
                                      const std::vector<std::vector<int64_t>>& steps) {
  auto d = LoadDecoder(name);
  if (d == nullptr) return {};
  Expected e = LoadExpected(name);
  auto cache = PagedKvCache::Create(d->config(), Budget(*d, 64, 4), 4, d->dtype(), d->device());
  EXPECT_TRUE(cache.ok()) << cache.status();
  if (!cache.ok()) return {};
  // Three sequences: the fixture's prompt + greedy tokens, and two shorter other ones.
  std::vector<std::vector<int64_t>> full(3);
  full[0] = e.prompt;
  full[0].insert(full[0].end(), e.greedy.begin(), e.greedy.begin() + 20);  // 28 tokens
  std::mt19937 rng(7);
  for (int i = 1; i < 3; ++i) {
    for (int t = 0; t < 13 + 6 * i; ++t) full[i].push_back(rng() % d->config().vocab_size);
  }
  std::vector<std::vector<int32_t>> tables(3);
  std::vector<int32_t> spacer;
  std::vector<int64_t> past(3, 0);
  for (const auto& chunk : steps) {
    std::vector<std::vector<int64_t>> tokens(3);
    std::vector<RaggedSequence> inputs;
    std::vector<int> which;
    for (int i = 0; i < 3; ++i) {
      if (chunk[i] == 0) continue;
      tokens[i].assign(full[i].begin() + past[i], full[i].begin() + past[i] + chunk[i]);
      EXPECT_TRUE(cache->get()->Reserve(&tables[i], past[i] + chunk[i]));
      // A block taken between sequences' blocks so that no table is contiguous.
      EXPECT_TRUE(cache->get()->Reserve(&spacer, static_cast<int64_t>(spacer.size() + 1) * 4));
      inputs.push_back(RaggedSequence{&tokens[i], past[i], &tables[i]});
      which.push_back(i);
    }
    auto logits = d->ForwardRagged(inputs, cache->get());
    EXPECT_TRUE(logits.ok()) << logits.status();
    if (!logits.ok()) return {};
    EXPECT_EQ(logits->size(0), static_cast<int64_t>(which.size()));
    for (size_t j = 0; j < which.size(); ++j) {
      const int i = which[j];
      past[i] += chunk[i];
      std::vector<int64_t> prefix(full[i].begin(), full[i].begin() + past[i]);
      auto ref = d->Forward(at::tensor(prefix, at::kLong).view({1, -1}), nullptr);
      EXPECT_TRUE(ref.ok()) << ref.status();
      if (!ref.ok()) return {};
      const double err = ((*logits)[j] - (*ref)[0][past[i] - 1]).abs().max().item<double>();
      EXPECT_LT(err, 1e-5) << "sequence " << i << " at " << past[i];
    }
  }
  // Freeing returns every block.
  for (auto& t : tables) cache->get()->Free(&t);
  cache->get()->Free(&spacer);
  EXPECT_EQ(cache->get()->used_blocks(), 0);
  return past;
}

// A ragged step over sequences at different positions equals Forward() on each whole sequence:
// decodes first (as the engine orders them) with prefill chunks after, decodes of different
// lengths alone in a step, prefill chunks alone.
TEST(RaggedStepTest, EqualsForward) {
  for (const std::string& name : kModels) {
    SCOPED_TRACE(name);
    EXPECT_EQ(CheckRaggedSteps(name, {{8, 5, 0}, {1, 7, 19}, {1, 1, 1}, {18, 6, 4}, {0, 0, 1}}),
              (std::vector<int64_t>{28, 19, 25}));
  }
}

// The same with decodes between and after prefill chunks in one step (rows that are not the
// step's first), and decodes of one length alone.
TEST(RaggedStepTest, DecodesAmongPrefillChunksEqualForward) {
  for (const std::string& name : kModels) {
    SCOPED_TRACE(name);
    EXPECT_EQ(
        CheckRaggedSteps(
            name, {{6, 3, 0}, {3, 1, 9}, {1, 4, 1}, {2, 1, 1}, {1, 1, 0}, {0, 1, 1}, {1, 0, 0}}),
        (std::vector<int64_t>{14, 11, 12}));
  }
}

// Prefill chunks of one length at one position attend as a group: three prompts' first chunks
// together, two of them then a decode, groups broken by a different position.
TEST(RaggedStepTest, EqualChunksTogetherEqualForward) {
  for (const std::string& name : kModels) {
    SCOPED_TRACE(name);
    EXPECT_EQ(CheckRaggedSteps(name, {{4, 4, 4}, {3, 3, 1}, {1, 2, 2}, {2, 0, 2}, {1, 1, 1}}),
              (std::vector<int64_t>{11, 10, 10}));
  }
}

TEST(RaggedStepTest, RefusesBadInput) {
  auto d = LoadDecoder("qwen3");
  ASSERT_NE(d, nullptr);
  auto cache = PagedKvCache::Create(d->config(), Budget(*d, 8), 16, d->dtype(), d->device());
  ASSERT_TRUE(cache.ok()) << cache.status();
  std::vector<int64_t> tokens = {1, 2, 3};
  std::vector<int32_t> none;
  EXPECT_FALSE(d->ForwardRagged({RaggedSequence{&tokens, 0, &none}}, cache->get()).ok());
  std::vector<int32_t> table;
  ASSERT_TRUE(cache->get()->Reserve(&table, 3));
  std::vector<int64_t> bad = {1, 256};
  EXPECT_EQ(d->ForwardRagged({RaggedSequence{&bad, 0, &table}}, cache->get()).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_FALSE(d->ForwardRagged({}, cache->get()).ok());
}

// ---------------------------------------------------------------------------------------------
// The paged cache

TEST(PagedKvCacheTest, SizesFromTheBudgetAndNeverExceedsIt) {
  auto d = LoadDecoder("llama");
  ASSERT_NE(d, nullptr);
  const int64_t per_block = PagedKvCache::BytesPerBlock(d->config(), 16, at::kFloat);
  const auto& c = d->config();
  EXPECT_EQ(per_block, 2 * c.num_hidden_layers * 16 * c.num_key_value_heads * c.head_dim * 4);
  // max_position_embeddings 128 = 8 blocks of 16: one block less is refused.
  auto small = PagedKvCache::Create(c, 8 * per_block - 1, 16, at::kFloat, at::kCPU);
  EXPECT_EQ(small.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StrContains(small.status().message(), "needs 8")) << small.status();
  EXPECT_FALSE(PagedKvCache::Create(c, -1, 16, at::kFloat, at::kCPU).ok());
  EXPECT_FALSE(PagedKvCache::Create(c, 1 << 30, 0, at::kFloat, at::kCPU).ok());
  auto cache = PagedKvCache::Create(c, 10 * per_block + per_block / 2, 16, at::kFloat, at::kCPU);
  ASSERT_TRUE(cache.ok()) << cache.status();
  EXPECT_EQ((*cache)->num_blocks(), 10);
  std::vector<int32_t> a, b;
  ASSERT_TRUE((*cache)->Reserve(&a, 100));  // 7 blocks
  EXPECT_EQ((*cache)->used_blocks(), 7);
  EXPECT_FALSE((*cache)->Reserve(&b, 64));  // 4 > 3 free: refused, nothing taken
  EXPECT_TRUE(b.empty());
  EXPECT_EQ((*cache)->used_blocks(), 7);
  ASSERT_TRUE((*cache)->Reserve(&b, 48));
  EXPECT_EQ((*cache)->free_blocks(), 0);
  EXPECT_FALSE((*cache)->Reserve(&a, 113));
  EXPECT_EQ(a.size(), 7u);
  (*cache)->Free(&a);
  EXPECT_EQ((*cache)->used_blocks(), 3);
  EXPECT_TRUE(a.empty());
}

// Published prompt blocks are shared by a later prompt with the same prefix (whole blocks only,
// checked token by token along the chain), held while used, cached when idle, and evicted only
// when the free list is empty.
TEST(PagedKvCacheTest, PublishedPrefixesAreSharedAndEvictedLast) {
  auto d = LoadDecoder("llama");
  ASSERT_NE(d, nullptr);
  const int64_t per_block = PagedKvCache::BytesPerBlock(d->config(), 16, at::kFloat);
  auto made = PagedKvCache::Create(d->config(), 10 * per_block, 16, at::kFloat, at::kCPU);
  ASSERT_TRUE(made.ok()) << made.status();
  PagedKvCache& cache = **made;
  std::vector<int64_t> prompt(40);
  for (int64_t i = 0; i < 40; ++i) prompt[i] = 3 * i + 1;
  std::vector<int32_t> a;
  EXPECT_EQ(cache.MatchPrefix(prompt, 39, &a), 0);  // nothing published yet
  ASSERT_TRUE(cache.Reserve(&a, 40));               // 3 blocks
  cache.Publish(a, prompt, 40);                     // whole blocks: 2 (32 tokens)
  // Held by `a` and shared with `b`: the same two blocks, no new ones used.
  std::vector<int32_t> b;
  EXPECT_EQ(cache.MatchPrefix(prompt, 39, &b), 32);
  EXPECT_EQ(b, std::vector<int32_t>(a.begin(), a.begin() + 2));
  EXPECT_EQ(cache.used_blocks(), 3);
  // A limit inside the second block matches the first only; a change in the second block too.
  std::vector<int32_t> c;
  EXPECT_EQ(cache.MatchPrefix(prompt, 31, &c), 16);
  cache.Free(&c);
  std::vector<int64_t> other = prompt;
  other[20] = 999;
  EXPECT_EQ(cache.MatchPrefix(other, 39, &c), 16);
  cache.Free(&c);
  // The first block's tokens differ: nothing, even though the second block's tokens are equal.
  other = prompt;
  other[0] = 998;
  EXPECT_EQ(cache.MatchPrefix(other, 39, &c), 0);
  // Both let go: the published blocks stay cached (not in use, still free to take), the
  // unpublished third goes back to the free list.
  cache.Free(&a);
  cache.Free(&b);
  EXPECT_EQ(cache.used_blocks(), 0);
  EXPECT_EQ(cache.idle_cached_blocks(), 2);
  EXPECT_EQ(cache.free_blocks(), 10);
  EXPECT_EQ(cache.MatchPrefix(prompt, 40, &b), 32);
  EXPECT_EQ(cache.idle_cached_blocks(), 0);
  cache.Free(&b);
  // Taking 8 blocks uses the free ones first: the cached prefix survives.
  std::vector<int32_t> big;
  ASSERT_TRUE(cache.Reserve(&big, 8 * 16));
  EXPECT_EQ(cache.idle_cached_blocks(), 2);
  EXPECT_EQ(cache.MatchPrefix(prompt, 40, &b), 32);
  cache.Free(&b);
  // The whole pool: the cached blocks are evicted and reused, and the prefix is gone.
  ASSERT_TRUE(cache.Reserve(&big, 10 * 16));
  EXPECT_EQ(cache.idle_cached_blocks(), 0);
  EXPECT_EQ(cache.used_blocks(), 10);
  EXPECT_FALSE(cache.Reserve(&b, 1));
  cache.Free(&big);
  EXPECT_EQ(cache.MatchPrefix(prompt, 40, &b), 0);
  EXPECT_EQ(cache.free_blocks(), 10);
}

// ---------------------------------------------------------------------------------------------
// Sampling

TEST(SamplingTest, GreedyAndTopKOne) {
  const std::vector<float> logits = {0.1f, 2.0f, -1.0f, 2.0f, 1.5f};
  std::mt19937_64 rng(1);
  SamplingParams p;
  p.temperature = 0;
  EXPECT_EQ(SampleToken(logits.data(), 5, p, &rng), 1);  // the first maximum
  p.temperature = 5;
  p.top_k = 1;
  EXPECT_EQ(SampleToken(logits.data(), 5, p, &rng), 1);
}

// Frequencies of 40000 seeded draws from a crafted distribution against the exact probabilities
// of HF's order (temperature, then top_k, then top_p). Deterministic by seed; the bound is about
// 10 standard deviations.
TEST(SamplingTest, TemperatureTopKTopPFrequencies) {
  const std::vector<double> p0 = {0.5, 0.3, 0.15, 0.05};
  std::vector<float> logits;
  for (double q : p0) logits.push_back(static_cast<float>(std::log(q)));
  auto frequencies = [&](const SamplingParams& params) {
    std::mt19937_64 rng(12345);
    std::vector<double> f(4, 0);
    const int n = 40000;
    for (int i = 0; i < n; ++i) f.at(SampleToken(logits.data(), 4, params, &rng)) += 1.0 / n;
    return f;
  };
  auto expect_near = [](const std::vector<double>& got, const std::vector<double>& want) {
    for (size_t i = 0; i < want.size(); ++i) EXPECT_NEAR(got[i], want[i], 0.025) << "token " << i;
  };
  SamplingParams p;
  expect_near(frequencies(p), p0);
  // Temperature 0.5 squares the probabilities.
  p.temperature = 0.5;
  double z = 0.25 + 0.09 + 0.0225 + 0.0025;
  expect_near(frequencies(p), {0.25 / z, 0.09 / z, 0.0225 / z, 0.0025 / z});
  // top_p 0.7: ascending cumulative 0.05, 0.2, 0.5, 1 -> those <= 0.3 go (tokens 3 and 2).
  p.temperature = 1;
  p.top_p = 0.7;
  expect_near(frequencies(p), {0.5 / 0.8, 0.3 / 0.8, 0, 0});
  // Temperature before top_p: at 0.5 the probabilities are (0.685, 0.247, 0.062, 0.007), whose
  // ascending cumulative sums 0.007 and 0.068 are <= 0.1, so top_p 0.9 keeps two tokens (applied
  // before the temperature it would keep three).
  p.temperature = 0.5;
  p.top_p = 0.9;
  expect_near(frequencies(p), {0.25 / 0.34, 0.09 / 0.34, 0, 0});
  p.temperature = 1;
  // top_p 0.4 keeps the most likely token alone.
  p.top_p = 0.4;
  expect_near(frequencies(p), {1, 0, 0, 0});
  // top_k 3, then top_p 0.9 over the renormalised three (0.526, 0.316, 0.158): all three stay.
  p.top_p = 0.9;
  p.top_k = 3;
  expect_near(frequencies(p), {0.5 / 0.95, 0.3 / 0.95, 0.15 / 0.95, 0});
  // top_k 2.
  p.top_p = 1;
  p.top_k = 2;
  expect_near(frequencies(p), {0.5 / 0.8, 0.3 / 0.8, 0, 0});
}

// SampleToken as it was written first (an index stable_sort by logit): the radix order must give
// exactly its tokens.
int64_t ReferenceSampleToken(const float* logits, int64_t n, const SamplingParams& p,
                             std::mt19937_64* rng) {
  if (p.temperature == 0 || p.top_k == 1) return std::max_element(logits, logits + n) - logits;
  std::vector<int64_t> order(n);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&](int64_t a, int64_t b) { return logits[a] > logits[b]; });
  std::vector<double> scaled(n);
  for (int64_t i = 0; i < n; ++i) scaled[i] = static_cast<double>(logits[order[i]]) / p.temperature;
  int64_t keep = n;
  if (p.top_k > 0 && p.top_k < n) {
    const double kth = scaled[p.top_k - 1];
    keep = p.top_k;
    while (keep < n && scaled[keep] >= kth) ++keep;
  }
  std::vector<double> probs(keep);
  double sum = 0;
  for (int64_t i = 0; i < keep; ++i) sum += probs[i] = std::exp(scaled[i] - scaled[0]);
  for (double& q : probs) q /= sum;
  if (p.top_p < 1) {
    double tail = 0;
    int64_t cut = keep;
    for (int64_t i = keep - 1; i >= 1; --i) {
      if (tail + probs[i] > 1 - p.top_p) break;
      tail += probs[i];
      cut = i;
    }
    keep = cut;
    sum = 0;
    for (int64_t i = 0; i < keep; ++i) sum += probs[i];
    for (int64_t i = 0; i < keep; ++i) probs[i] /= sum;
  }
  const double u = static_cast<double>((*rng)() >> 11) * 0x1.0p-53;
  double acc = 0;
  for (int64_t i = 0; i < keep; ++i) {
    acc += probs[i];
    if (u < acc) return order[i];
  }
  return order[keep - 1];
}

// Rows of a vocabulary's size and small ones, with ties (rounded logits), +0 and -0, very
// negative logits and a constant row, under temperature, top_k (with ties at the k-th) and
// top_p: the same tokens as the stable-sort reference, and the generators left in the same
// state.
TEST(SamplingTest, RadixOrderGivesTheStableSortsTokens) {
  std::mt19937_64 gen(99);
  std::normal_distribution<float> normal(0, 3);
  int64_t draws = 0;
  for (int trial = 0; trial < 24; ++trial) {
    const int64_t n = trial % 3 == 0 ? 16384 : (trial % 3 == 1 ? 1000 : 7);
    std::vector<float> logits(n);
    for (int64_t i = 0; i < n; ++i) {
      float v = normal(gen);
      if (trial % 4 == 1) v = std::round(v * 2) / 2;               // many ties
      if (trial % 5 == 2 && i % 3 == 0) v = i % 2 ? -0.0f : 0.0f;  // signed zeros
      if (trial % 7 == 3) v = -std::abs(v) - 100;                  // all negative
      if (trial == 23) v = 1.5f;                                   // one value
      logits[i] = v;
    }
    for (double temperature : {0.3, 1.0, 2.5}) {
      for (int64_t top_k : {0, 2, 50, 5000}) {
        for (double top_p : {1.0, 0.9, 0.3}) {
          SamplingParams p;
          p.temperature = temperature;
          p.top_k = top_k;
          p.top_p = top_p;
          std::mt19937_64 a(trial * 1000 + top_k), b(trial * 1000 + top_k);
          for (int d = 0; d < 3; ++d, ++draws) {
            ASSERT_EQ(SampleToken(logits.data(), n, p, &a),
                      ReferenceSampleToken(logits.data(), n, p, &b))
                << "trial " << trial << " n " << n << " T " << temperature << " top_k " << top_k
                << " top_p " << top_p << " draw " << d;
          }
          EXPECT_EQ(a(), b());
        }
      }
    }
  }
  EXPECT_EQ(draws, 24 * 3 * 4 * 3 * 3);
}

// SampleTokens over a step's rows (spread over two intra-op threads) equals SampleToken row by
// row, for greedy and sampled rows mixed, each with its own seed, over several steps.
TEST(SamplingTest, SampleTokensEqualsRowByRow) {
  const int threads = at::get_num_threads();
  at::set_num_threads(2);
  const int64_t rows = 16, n = 5000;
  std::vector<SamplingParams> params(rows);
  std::vector<std::mt19937_64> batched, single;
  for (int64_t r = 0; r < rows; ++r) {
    SamplingParams& p = params[r];
    p.temperature = r % 4 == 0 ? 0.0 : 0.5 + 0.1 * static_cast<double>(r);
    if (r % 4 == 1) p.top_p = 0.9;
    if (r % 4 == 2) p.top_k = 40;
    if (r % 8 == 3) p.top_k = 1;
    batched.emplace_back(500 + r);
    single.emplace_back(500 + r);
  }
  std::mt19937_64 gen(3);
  std::normal_distribution<float> normal(0, 2);
  std::vector<float> logits(rows * n);
  for (int step = 0; step < 8; ++step) {
    for (float& v : logits) v = normal(gen);
    // The rows in another order than the logits', as the engine's sampled rows can be.
    std::vector<SampleRow> sample;
    for (int64_t r = rows - 1; r >= 0; --r) sample.push_back(SampleRow{r, &params[r], &batched[r]});
    std::vector<int64_t> tokens(rows, -1);
    SampleTokens(logits.data(), n, sample, tokens.data());
    for (int64_t i = 0; i < rows; ++i) {
      const int64_t r = rows - 1 - i;
      EXPECT_EQ(tokens[i], SampleToken(logits.data() + r * n, n, params[r], &single[r]))
          << "step " << step << " row " << r;
    }
  }
  for (int64_t r = 0; r < rows; ++r) EXPECT_EQ(batched[r](), single[r]()) << r;
  at::set_num_threads(threads);
}

TEST(SamplingTest, RefusesOutOfRangeParameters) {
  SamplingParams ok;
  EXPECT_TRUE(ValidateSamplingParams(ok).ok());
  for (double top_p : {0.0, -0.1, 1.01, std::nan("")}) {
    SamplingParams p;
    p.top_p = top_p;
    EXPECT_EQ(ValidateSamplingParams(p).code(), absl::StatusCode::kInvalidArgument) << top_p;
  }
  for (double t : {-0.01, std::nan(""), HUGE_VAL}) {
    SamplingParams p;
    p.temperature = t;
    EXPECT_EQ(ValidateSamplingParams(p).code(), absl::StatusCode::kInvalidArgument) << t;
  }
  SamplingParams k;
  k.top_k = -1;
  EXPECT_FALSE(ValidateSamplingParams(k).ok());
  SamplingParams m;
  m.max_tokens = 0;
  EXPECT_FALSE(ValidateSamplingParams(m).ok());
}

// ---------------------------------------------------------------------------------------------
// The engine

TEST(EngineTest, GreedyTokensEqualTheReference) {
  for (const std::string& name : kModels) {
    SCOPED_TRACE(name);
    auto d = LoadDecoder(name);
    ASSERT_NE(d, nullptr);
    Expected e = LoadExpected(name);
    GenerationRequest r = Request(e.prompt, static_cast<int64_t>(e.greedy.size()));
    r.sampling.ignore_eos = true;  // the reference runs all 64 steps
    // Prefill in chunks of 3 tokens, to go through the chunked path too.
    EngineOptions options;
    options.max_batch_tokens = 3;
    options.max_batch_sequences = 2;
    Outcome o = RunAlone(d, r, options);
    ASSERT_TRUE(o.result.status.ok()) << o.result.status;
    EXPECT_EQ(o.tokens, e.greedy);
    EXPECT_EQ(o.result.finish_reason, "length");
    EXPECT_EQ(o.result.prompt_tokens, static_cast<int64_t>(e.prompt.size()));
    EXPECT_EQ(o.result.completion_tokens, 64);
    EXPECT_EQ(o.done_calls, 1);
  }
}

// Eight requests with different prompts, lengths and sampling, submitted while others run, give
// exactly the tokens each gives alone.
TEST(EngineTest, ContinuousBatchingChangesNothing) {
  auto d = LoadDecoder("qwen2");
  ASSERT_NE(d, nullptr);
  std::mt19937 rng(21);
  std::vector<GenerationRequest> requests;
  for (int i = 0; i < 8; ++i) {
    std::vector<int64_t> prompt(3 + 7 * i);
    for (auto& id : prompt) id = rng() % d->config().vocab_size;
    GenerationRequest r = Request(prompt, 5 + 6 * (7 - i), i % 2 ? 0.8 : 0.0);
    r.sampling.seed = 1000 + i;
    if (i % 4 == 3) r.sampling.top_p = 0.9;
    if (i % 4 == 1) r.sampling.top_k = 20;
    requests.push_back(r);
  }
  std::vector<Outcome> alone;
  for (const auto& r : requests) alone.push_back(RunAlone(d, r));

  EngineOptions options;
  options.kv_budget_bytes = Budget(*d, 64);
  options.max_batch_tokens = 16;  // long prompts are prefilled over several steps
  options.max_batch_sequences = 8;
  auto engine = Engine::Create(d, options);
  ASSERT_TRUE(engine.ok()) << engine.status();
  Collector c;
  for (int i = 0; i < 8; ++i) {
    ASSERT_TRUE((*engine)->Submit(requests[i], c.Callbacks(i)).ok());
    // The next one arrives once this one has produced two tokens: it joins a running batch.
    if (i < 7) {
      ASSERT_TRUE(c.WaitTokens(i, 2));
    }
  }
  ASSERT_TRUE(c.WaitFinished(8));
  for (int i = 0; i < 8; ++i) {
    Outcome o = c.Get(i);
    EXPECT_TRUE(o.result.status.ok()) << i << ": " << o.result.status;
    EXPECT_EQ(o.tokens, alone[i].tokens) << "request " << i;
    EXPECT_EQ(o.result.finish_reason, alone[i].result.finish_reason) << i;
    EXPECT_EQ(o.result.completion_tokens, static_cast<int64_t>(o.tokens.size()));
    EXPECT_EQ(o.result.prompt_tokens, static_cast<int64_t>(requests[i].prompt.size()));
  }
  EXPECT_EQ((*engine)->Stats().blocks_in_use, 0);
  // The counters are final before on_done runs, so they need no waiting here.
  EXPECT_EQ((*engine)->Stats().running, 0);
  EXPECT_EQ((*engine)->Stats().queue_length, 0);
}

// A prompt that starts like an earlier one takes that prefix's blocks instead of computing them,
// and gives exactly the tokens it gives without prefix caching (greedy and sampled); the cached
// blocks are not "in use", and a request that needs the whole pool evicts them.
TEST(EngineTest, SharedPrefixIsComputedOnceAndChangesNothing) {
  for (const std::string& name : kModels) {
    SCOPED_TRACE(name);
    auto d = LoadDecoder(name);
    ASSERT_NE(d, nullptr);
    std::mt19937 rng(5);
    std::vector<int64_t> system(37);
    for (auto& id : system) id = rng() % d->config().vocab_size;
    std::vector<GenerationRequest> requests;
    for (int i = 0; i < 3; ++i) {
      std::vector<int64_t> prompt = system;
      for (int j = 0; j < 4 + i; ++j) prompt.push_back(rng() % d->config().vocab_size);
      GenerationRequest r = Request(prompt, 12, i == 1 ? 0.9 : 0.0);
      r.sampling.seed = 77 + i;
      r.sampling.ignore_eos = true;
      requests.push_back(r);
    }
    requests.push_back(requests[0]);  // the same prompt again
    EngineOptions plain;
    plain.block_tokens = 4;
    plain.prefix_caching = false;
    std::vector<Outcome> alone;
    for (const auto& r : requests) alone.push_back(RunAlone(d, r, plain));

    EngineOptions options;
    options.block_tokens = 4;
    // 32 blocks of 4: one full context (128 positions), the engine's floor.
    options.kv_budget_bytes = Budget(*d, 32, 4);
    auto engine = Engine::Create(d, options);
    ASSERT_TRUE(engine.ok()) << engine.status();
    Collector c;
    // One after another: each finds the blocks the earlier ones published.
    for (int i = 0; i < 4; ++i) {
      ASSERT_TRUE((*engine)->Submit(requests[i], c.Callbacks(i)).ok());
      ASSERT_TRUE(c.WaitFinished(i + 1));
      Outcome o = c.Get(i);
      ASSERT_TRUE(o.result.status.ok()) << o.result.status;
      EXPECT_EQ(o.tokens, alone[i].tokens) << "request " << i;
      EXPECT_EQ(o.result.prompt_tokens, static_cast<int64_t>(requests[i].prompt.size()));
    }
    // The first computes everything; the next two share the system prompt's 9 whole blocks
    // (36 tokens); the repeat shares all 10 whole blocks of its 41 tokens (at least its last
    // token is always computed).
    EXPECT_EQ(c.Get(0).result.cached_prompt_tokens, 0);
    EXPECT_EQ(c.Get(1).result.cached_prompt_tokens, 36);
    EXPECT_EQ(c.Get(2).result.cached_prompt_tokens, 36);
    EXPECT_EQ(c.Get(3).result.cached_prompt_tokens, 40);
    EngineStats stats = (*engine)->Stats();
    EXPECT_EQ(stats.prefix_hit_tokens, 36 + 36 + 40);
    EXPECT_EQ(stats.blocks_in_use, 0);
    EXPECT_GT(stats.cached_blocks, 0);
    // A request for the whole pool: 1 + 127 positions = 32 blocks, all of them.
    GenerationRequest full = Request({1}, 127);
    full.sampling.ignore_eos = true;
    ASSERT_TRUE((*engine)->Submit(full, c.Callbacks(4)).ok());
    ASSERT_TRUE(c.WaitFinished(5));
    EXPECT_TRUE(c.Get(4).result.status.ok()) << c.Get(4).result.status;
    EXPECT_EQ(c.Get(4).tokens.size(), 127u);
    EXPECT_EQ((*engine)->Stats().blocks_in_use, 0);
  }
}

TEST(EngineTest, SeedsReproduceAndDiffer) {
  auto d = LoadDecoder("llama");
  ASSERT_NE(d, nullptr);
  Expected e = LoadExpected("llama");
  GenerationRequest r = Request(e.prompt, 40, 1.0);
  r.sampling.ignore_eos = true;
  r.sampling.seed = 42;
  Outcome a = RunAlone(d, r);
  Outcome b = RunAlone(d, r);
  EXPECT_EQ(a.tokens.size(), 40u);
  EXPECT_EQ(a.tokens, b.tokens);
  GenerationRequest other = r;
  other.sampling.seed = 43;
  EXPECT_NE(RunAlone(d, other).tokens, a.tokens);
  // top_k 1 is greedy whatever the temperature.
  GenerationRequest k1 = r;
  k1.sampling.top_k = 1;
  EXPECT_EQ(RunAlone(d, k1).tokens, std::vector<int64_t>(e.greedy.begin(), e.greedy.begin() + 40));
  // The same seed in a batch with other sampled requests gives the same tokens.
  EngineOptions options;
  options.kv_budget_bytes = Budget(*d, 64);
  auto engine = Engine::Create(d, options);
  ASSERT_TRUE(engine.ok());
  Collector c;
  ASSERT_TRUE((*engine)->Submit(other, c.Callbacks(1)).ok());
  ASSERT_TRUE((*engine)->Submit(r, c.Callbacks(0)).ok());
  ASSERT_TRUE((*engine)->Submit(other, c.Callbacks(2)).ok());
  ASSERT_TRUE(c.WaitFinished(3));
  EXPECT_EQ(c.Get(0).tokens, a.tokens);
}

TEST(EngineTest, StopIdsEndWithStop) {
  auto d = LoadDecoder("qwen3");
  ASSERT_NE(d, nullptr);
  Expected e = LoadExpected("qwen3");
  GenerationRequest r = Request(e.prompt, 64);
  r.sampling.stop_token_ids = {e.greedy[5]};
  Outcome o = RunAlone(d, r);
  ASSERT_TRUE(o.result.status.ok());
  EXPECT_EQ(o.result.finish_reason, "stop");
  // It ends at the first occurrence of the stop id, which is reported.
  const auto first = std::find(e.greedy.begin(), e.greedy.end(), e.greedy[5]);
  EXPECT_EQ(o.tokens, std::vector<int64_t>(e.greedy.begin(), first + 1));
}

// A cancelled request leaves at the next step: its blocks are back before the other request's
// next token, and it computed no token after the cancel.
TEST(EngineTest, CancelFreesBlocksWithinOneStep) {
  auto d = LoadDecoder("llama");
  ASSERT_NE(d, nullptr);
  Expected e = LoadExpected("llama");
  EngineOptions options;
  options.kv_budget_bytes = Budget(*d, 16);
  auto engine = Engine::Create(d, options);
  ASSERT_TRUE(engine.ok());
  Engine* eng = engine->get();
  // Both callbacks run on the scheduler thread, so these need no lock.
  std::atomic<int64_t> b_tokens{0}, blocks_at_cancel_done{-1}, b_tokens_at_cancel_done{-1};
  Collector c;
  GenerationRequest b = Request(std::vector<int64_t>(40, 5), 80);
  b.sampling.ignore_eos = true;
  ASSERT_TRUE(eng->Submit(b, c.Callbacks(1, [&](int64_t) { ++b_tokens; })).ok());
  ASSERT_TRUE(c.WaitTokens(1, 1));
  GenerationRequest a = Request(e.prompt, 100);
  a.sampling.ignore_eos = true;
  a.cancel = std::make_shared<std::atomic<bool>>(false);
  auto cancel = a.cancel;
  GenerationCallbacks cb = c.Callbacks(0, [&, cancel](int64_t) {
    if (c.Get(0).tokens.size() == 3) cancel->store(true);
  });
  auto done = cb.on_done;
  cb.on_done = [&, done](const GenerationResult& r) {
    blocks_at_cancel_done = eng->Stats().blocks_in_use;
    b_tokens_at_cancel_done = b_tokens.load();
    done(r);
  };
  ASSERT_TRUE(eng->Submit(a, cb).ok());
  ASSERT_TRUE(c.WaitFinished(1));
  Outcome o = c.Get(0);
  EXPECT_EQ(o.result.status.code(), absl::StatusCode::kCancelled) << o.result.status;
  EXPECT_EQ(o.result.completion_tokens, 3);
  EXPECT_EQ(o.tokens.size(), 3u);
  // Only b's blocks are in use then: its 40 prompt positions + the generated tokens fed back.
  const int64_t b_positions = 40 + b_tokens_at_cancel_done.load() - 1;
  EXPECT_EQ(blocks_at_cancel_done.load(), (b_positions + 15) / 16);
  ASSERT_TRUE(c.WaitFinished(2));
  EXPECT_EQ(eng->Stats().blocks_in_use, 0);
}

// A pool of 8 blocks, requests of 4 blocks each: at most two run at once, the rest wait and
// complete later with their own tokens; one whose deadline passes while the pool is full gets
// RESOURCE_EXHAUSTED.
TEST(EngineTest, FullBudgetWaitsAndExpires) {
  auto d = LoadDecoder("qwen3");
  ASSERT_NE(d, nullptr);
  EngineOptions options;
  options.kv_budget_bytes = Budget(*d, 8);
  auto engine = Engine::Create(d, options);
  ASSERT_TRUE(engine.ok()) << engine.status();
  Engine* eng = engine->get();
  ASSERT_EQ(eng->Stats().blocks_total, 8);
  std::vector<GenerationRequest> requests;
  for (int i = 0; i < 5; ++i) {
    GenerationRequest r = Request(std::vector<int64_t>(8, 10 + i), 57);  // 64 positions
    r.sampling.ignore_eos = true;
    requests.push_back(r);
  }
  std::vector<Outcome> alone;
  for (const auto& r : requests) alone.push_back(RunAlone(d, r));

  // Scheduler-thread state, touched only from the callbacks.
  std::vector<int> state(6, 0);  // 0 waiting, 1 running, 2 done
  int max_running = 0;
  int64_t max_blocks = 0, max_queue = 0;
  std::atomic<bool> expired_submitted{false};
  Collector c;
  auto observe = [&](int id) {
    return [&, id](int64_t) {
      state[id] = 1;
      int running = 0;
      for (int s : state) running += s == 1;
      max_running = std::max(max_running, running);
      EngineStats st = eng->Stats();
      max_blocks = std::max(max_blocks, st.blocks_in_use);
      max_queue = std::max(max_queue, st.queue_length);
      // Once 0 and 1 both run, the pool is fully committed: a request whose deadline has
      // already passed cannot be admitted and must expire.
      if (state[0] == 1 && state[1] == 1 && !expired_submitted.exchange(true)) {
        GenerationRequest late = Request(std::vector<int64_t>(8, 3), 8);
        late.deadline = std::chrono::steady_clock::now();
        EXPECT_TRUE(eng->Submit(late, c.Callbacks(5)).ok());
      }
    };
  };
  for (int i = 0; i < 5; ++i) {
    GenerationCallbacks cb = c.Callbacks(i, observe(i));
    auto done = cb.on_done;
    cb.on_done = [&, i, done](const GenerationResult& r) {
      state[i] = 2;
      done(r);
    };
    ASSERT_TRUE(eng->Submit(requests[i], cb).ok());
  }
  ASSERT_TRUE(c.WaitFinished(6));
  EXPECT_LE(max_running, 2);
  EXPECT_LE(max_blocks, 8);
  EXPECT_GE(max_queue, 1);
  for (int i = 0; i < 5; ++i) {
    Outcome o = c.Get(i);
    EXPECT_TRUE(o.result.status.ok()) << i << ": " << o.result.status;
    EXPECT_EQ(o.tokens, alone[i].tokens) << i;
  }
  Outcome late = c.Get(5);
  EXPECT_EQ(late.result.status.code(), absl::StatusCode::kResourceExhausted) << late.result.status;
  EXPECT_TRUE(absl::StrContains(late.result.status.message(), "KV cache budget is full"));
  EXPECT_TRUE(late.tokens.empty());
  EXPECT_EQ(late.result.prompt_tokens, 0);
  EXPECT_EQ(eng->Stats().blocks_in_use, 0);
}

TEST(EngineTest, RefusesHostileRequests) {
  auto d = LoadDecoder("qwen2");
  ASSERT_NE(d, nullptr);
  EngineOptions options;
  options.kv_budget_bytes = Budget(*d, 8);
  auto engine = Engine::Create(d, options);
  ASSERT_TRUE(engine.ok());
  std::atomic<int> callbacks{0};
  GenerationCallbacks cb;
  cb.on_token = [&](int64_t) { ++callbacks; };
  cb.on_done = [&](const GenerationResult&) { ++callbacks; };
  auto refused = [&](GenerationRequest r, const std::string& why) {
    absl::Status s = (*engine)->Submit(std::move(r), cb);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << why << ": " << s;
  };
  refused(Request({}, 4), "empty prompt");
  refused(Request({1, 256}, 4), "id past the vocabulary");
  refused(Request({1, -1}, 4), "negative id");
  refused(Request(std::vector<int64_t>(128, 1), 1), "prompt at the context");
  refused(Request(std::vector<int64_t>(1000, 1), 1), "prompt past the context");
  refused(Request({1, 2}, 0), "max_tokens 0");
  refused(Request({1, 2}, -5), "negative max_tokens");
  refused(Request({1, 2}, int64_t{1} << 40), "huge max_tokens");
  refused(Request(std::vector<int64_t>(100, 1), 29), "prompt + max_tokens past the context");
  GenerationRequest r = Request({1, 2}, 4, 1.0);
  r.sampling.top_p = 0;
  refused(r, "top_p 0");
  r.sampling.top_p = 1.5;
  refused(r, "top_p 1.5");
  r.sampling.top_p = 1;
  r.sampling.temperature = -1;
  refused(r, "negative temperature");
  r.sampling.temperature = 1;
  r.sampling.top_k = -2;
  refused(r, "negative top_k");
  // Exactly at the limit is fine: 100 + 28 - 1 = 127 positions.
  GenerationRequest edge = Request(std::vector<int64_t>(100, 1), 28);
  edge.sampling.ignore_eos = true;
  Collector c;
  ASSERT_TRUE((*engine)->Submit(edge, c.Callbacks(0)).ok());
  ASSERT_TRUE(c.WaitFinished(1));
  EXPECT_EQ(c.Get(0).tokens.size(), 28u);
  EXPECT_EQ(callbacks.load(), 0);

  // Engine options out of range.
  EngineOptions bad = options;
  bad.kv_budget_bytes = Budget(*d, 7);
  EXPECT_EQ(Engine::Create(d, bad).status().code(), absl::StatusCode::kInvalidArgument);
  bad = options;
  bad.max_batch_tokens = bad.max_batch_sequences - 1;
  EXPECT_EQ(Engine::Create(d, bad).status().code(), absl::StatusCode::kInvalidArgument);
  bad = options;
  bad.block_tokens = 0;
  EXPECT_EQ(Engine::Create(d, bad).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Engine::Create(nullptr, options).status().code(), absl::StatusCode::kInvalidArgument);
}

// Destroying the engine with requests running and waiting ends each with CANCELLED (or, for one
// that happened to finish, OK), each exactly once, without a hang.
TEST(EngineTest, DestructionCancelsRequestsInFlight) {
  auto d = LoadDecoder("llama");
  ASSERT_NE(d, nullptr);
  EngineOptions options;
  options.kv_budget_bytes = Budget(*d, 8);  // two of these requests at a time
  auto engine = Engine::Create(d, options);
  ASSERT_TRUE(engine.ok());
  Collector c;
  std::atomic<bool> destroying{false};
  for (int i = 0; i < 8; ++i) {
    GenerationRequest r = Request(std::vector<int64_t>(8, 20 + i), 57, 1.0);
    r.sampling.seed = i;
    r.sampling.ignore_eos = true;
    // Request 0's callback holds the scheduler until the test is about to destroy the engine,
    // so that the destruction meets requests in flight (bounded: never a hang).
    ASSERT_TRUE((*engine)
                    ->Submit(r, c.Callbacks(i,
                                            [&, i](int64_t) {
                                              const auto until =
                                                  std::chrono::steady_clock::now() + seconds(10);
                                              while (i == 0 && !destroying &&
                                                     std::chrono::steady_clock::now() < until) {
                                                std::this_thread::sleep_for(
                                                    std::chrono::milliseconds(1));
                                              }
                                            }))
                    .ok());
  }
  ASSERT_TRUE(c.WaitTokens(0, 1));
  destroying = true;
  engine->reset();
  ASSERT_TRUE(c.WaitFinished(8));
  int cancelled = 0;
  for (int i = 0; i < 8; ++i) {
    Outcome o = c.Get(i);
    EXPECT_EQ(o.done_calls, 1) << i;
    EXPECT_TRUE(o.result.status.ok() || o.result.status.code() == absl::StatusCode::kCancelled)
        << o.result.status;
    cancelled += o.result.status.code() == absl::StatusCode::kCancelled;
  }
  // At most two run at once and each needs 57 steps, so the waiting ones cannot all be done.
  EXPECT_GE(cancelled, 6);
}

}  // namespace
}  // namespace switchyard::runner::hf
