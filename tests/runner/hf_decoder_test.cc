// The Hugging Face checkpoint loader and decoder (src/runner/hf/) against the independent float64
// PyTorch reference's fixtures (tools/llm-reference/reference.py, tests/fixtures/hf/), plus the
// hostile-file refusals of the safetensors reader and the config parser.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"
#include "runner/hf/decoder.h"
#include "runner/hf/hf_config.h"
#include "runner/hf/safetensors.h"

namespace switchyard::runner::hf {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

const fs::path kFixtures = fs::path(SWITCHYARD_SOURCE_DIR) / "tests" / "fixtures" / "hf";

// The reference computes in float64 from the same stored weights; the C++ decoder in float32.
constexpr double kFp32Tolerance = 1e-4;
// bfloat16 compute rounds every activation to 8 mantissa bits (relative step 2^-8): logits of
// magnitude ~1-3 move by a few hundredths through 2-3 layers, so only a coarse bound holds.
constexpr double kBf16Tolerance = 0.15;

std::string ReadFile(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

void WriteFile(const fs::path& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

std::string Le64(uint64_t v) {
  std::string s(8, '\0');
  for (int i = 0; i < 8; ++i) s[i] = static_cast<char>((v >> (8 * i)) & 0xff);
  return s;
}

// A .safetensors file from a header text and raw data bytes (for malformed files).
std::string RawSafetensors(const std::string& header, const std::string& data) {
  return Le64(header.size()) + header + data;
}

// A well-formed .safetensors file of CPU tensors (float, half or bfloat16), in order.
std::string Safetensors(const std::vector<std::pair<std::string, at::Tensor>>& tensors) {
  json header = json::object();
  std::string data;
  for (const auto& [name, t] : tensors) {
    at::Tensor c = t.contiguous();
    const char* dtype = c.scalar_type() == at::kFloat  ? "F32"
                        : c.scalar_type() == at::kHalf ? "F16"
                                                       : "BF16";
    const size_t bytes = c.numel() * c.element_size();
    header[name] = {{"dtype", dtype},
                    {"shape", c.sizes().vec()},
                    {"data_offsets", {data.size(), data.size() + bytes}}};
    data.append(static_cast<const char*>(c.data_ptr()), bytes);
  }
  return RawSafetensors(header.dump(), data);
}

// All tensors of a fixture checkpoint, copied out of the mapping, in name order.
std::vector<std::pair<std::string, at::Tensor>> FixtureTensors(const std::string& name) {
  auto ckpt = Checkpoint::Open(kFixtures / name);
  EXPECT_TRUE(ckpt.ok()) << ckpt.status();
  std::vector<std::pair<std::string, at::Tensor>> out;
  for (const std::string& n : ckpt->Names()) out.emplace_back(n, ckpt->Tensor(n)->clone());
  return out;
}

class HfTest : public ::testing::Test {
 protected:
  void SetUp() override {
    static std::atomic<int> counter{0};
    dir_ = fs::temp_directory_path() /
           ("hf_decoder_test_" + std::to_string(::getpid()) + "_" + std::to_string(counter++));
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  // A copy of a fixture checkpoint folder that a test may then damage.
  fs::path CopyFixture(const std::string& name) {
    fs::path dst = dir_ / name;
    fs::create_directories(dst);
    for (const auto& e : fs::directory_iterator(kFixtures / name)) {
      fs::copy_file(e.path(), dst / e.path().filename());
    }
    return dst;
  }

  absl::Status OpenRaw(const std::string& bytes) {
    WriteFile(dir_ / "t.safetensors", bytes);
    return SafetensorsFile::Open(dir_ / "t.safetensors").status();
  }

  fs::path dir_;
};

void ExpectError(const absl::Status& s, const std::string& needle) {
  EXPECT_FALSE(s.ok()) << "expected an error mentioning '" << needle << "'";
  EXPECT_TRUE(absl::StrContains(s.message(), needle))
      << "error '" << s.message() << "' does not mention '" << needle << "'";
}

// ---------------------------------------------------------------------------------------------
// safetensors

TEST_F(HfTest, SafetensorsDecodesF32F16Bf16Exactly) {
  // 1.5, -2, 0.25 written as raw IEEE half and bfloat16 bits, not through libtorch.
  std::string f32, f16, bf16;
  for (float v : {1.5f, -2.0f, 0.25f}) f32.append(reinterpret_cast<const char*>(&v), 4);
  for (uint16_t bits : {0x3E00, 0xC000, 0x3400}) f16.append(reinterpret_cast<char*>(&bits), 2);
  for (uint16_t bits : {0x3FC0, 0xC000, 0x3E80}) bf16.append(reinterpret_cast<char*>(&bits), 2);
  std::string header = R"({"__metadata__":{"format":"pt"},)"
                       R"("a":{"dtype":"F32","shape":[3],"data_offsets":[0,12]},)"
                       R"("b":{"dtype":"F16","shape":[1,3],"data_offsets":[12,18]},)"
                       R"("c":{"dtype":"BF16","shape":[3,1],"data_offsets":[18,24]},)"
                       R"("empty":{"dtype":"F32","shape":[0,4],"data_offsets":[24,24]}})";
  WriteFile(dir_ / "t.safetensors", RawSafetensors(header, f32 + f16 + bf16));
  auto file = SafetensorsFile::Open(dir_ / "t.safetensors");
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_EQ((*file)->metadata().at("format"), "pt");
  at::Tensor a = *(*file)->Tensor("a");
  at::Tensor b = *(*file)->Tensor("b");
  at::Tensor c = *(*file)->Tensor("c");
  EXPECT_EQ(b.scalar_type(), at::kHalf);
  EXPECT_EQ(c.scalar_type(), at::kBFloat16);
  EXPECT_EQ(b.sizes().vec(), (std::vector<int64_t>{1, 3}));
  EXPECT_EQ((*(*file)->Tensor("empty")).numel(), 0);
  file->reset();  // the tensors keep the mapping alive
  at::Tensor want = at::tensor({1.5f, -2.0f, 0.25f});
  EXPECT_TRUE(at::equal(a, want));
  EXPECT_TRUE(at::equal(b.to(at::kFloat).flatten(), want));
  EXPECT_TRUE(at::equal(c.to(at::kFloat).flatten(), want));
  // Copy-on-write: writing through a view never reaches the file.
  a.fill_(7.0f);
  auto again = SafetensorsFile::Open(dir_ / "t.safetensors");
  ASSERT_TRUE(again.ok());
  EXPECT_TRUE(at::equal(*(*again)->Tensor("a"), want));
  ExpectError((*again)->Tensor("nope").status(), "nope");
}

TEST_F(HfTest, SafetensorsCopiesMisalignedTensors) {
  // The format allows any header length; a data area at an odd address cannot be viewed as
  // floats by kernels that assume alignment, so such tensors come back as aligned copies.
  std::string header = R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})";
  while ((8 + header.size()) % 4 != 1) header += ' ';
  std::string data;
  for (float v : {3.0f, -0.5f}) data.append(reinterpret_cast<const char*>(&v), 4);
  WriteFile(dir_ / "t.safetensors", RawSafetensors(header, data));
  auto file = SafetensorsFile::Open(dir_ / "t.safetensors");
  ASSERT_TRUE(file.ok()) << file.status();
  at::Tensor a = *(*file)->Tensor("a");
  EXPECT_EQ(reinterpret_cast<uintptr_t>(a.data_ptr()) % 4, 0u);
  EXPECT_TRUE(at::equal(a, at::tensor({3.0f, -0.5f})));
}

// Deterministic random corruption of a real file's header and first data bytes: every variant
// must be refused or, when it still parses, yield tensors that can be read in full (the sanitizer
// builds catch an out-of-bounds view).
TEST_F(HfTest, SafetensorsSurvivesCorruptedHeaders) {
  const std::string original = ReadFile(kFixtures / "qwen3" / "model.safetensors");
  uint64_t header_len = 0;
  std::memcpy(&header_len, original.data(), 8);
  const size_t span = std::min<size_t>(original.size(), 8 + header_len + 64);
  std::mt19937 rng(21);
  int opened = 0;
  for (int i = 0; i < 600; ++i) {
    std::string bytes = original;
    const int flips = 1 + static_cast<int>(rng() % 4);
    for (int f = 0; f < flips; ++f) {
      const size_t at = rng() % span;
      // Digits and JSON punctuation make plausible-but-wrong headers more often than noise.
      static const char kChars[] = "0123456789[]{},:\"-eE. ";
      bytes[at] = rng() % 2 ? kChars[rng() % (sizeof(kChars) - 1)] : static_cast<char>(rng());
    }
    if (rng() % 8 == 0) bytes.resize(rng() % bytes.size());
    WriteFile(dir_ / "t.safetensors", bytes);
    auto file = SafetensorsFile::Open(dir_ / "t.safetensors");
    if (!file.ok()) continue;
    ++opened;
    for (const auto& [name, info] : (*file)->tensors()) {
      auto t = (*file)->Tensor(name);
      ASSERT_TRUE(t.ok()) << t.status();
      EXPECT_EQ(t->numel() * t->element_size(), info.end - info.begin);
      (void)t->to(at::kFloat).sum().item<float>();  // touches every byte of the view
    }
  }
  std::printf("corrupted variants that still opened: %d of 600\n", opened);
}

TEST_F(HfTest, SafetensorsRefusesTruncatedFiles) {
  ExpectError(OpenRaw("abc"), "truncated");
  std::string whole = ReadFile(kFixtures / "qwen2" / "model.safetensors");
  ASSERT_GT(whole.size(), 1000u);
  ExpectError(OpenRaw(whole.substr(0, whole.size() / 2)), "outside the data area");
  ExpectError(OpenRaw(whole.substr(0, 100)), "runs past the end");
  EXPECT_TRUE(OpenRaw(whole).ok());
}

TEST_F(HfTest, SafetensorsRefusesBadHeaderLengths) {
  ExpectError(OpenRaw(Le64(1000) + "{}"), "runs past the end");
  ExpectError(OpenRaw(Le64(uint64_t{200} << 20) + "{}"), "exceeds the limit");
  ExpectError(OpenRaw(Le64(~uint64_t{0}) + "{}"), "exceeds the limit");
  ExpectError(OpenRaw(RawSafetensors("{not json", "")), "not valid JSON");
  ExpectError(OpenRaw(RawSafetensors("[1]", "")), "not a JSON object");
  ExpectError(OpenRaw(RawSafetensors(std::string(5000, '[') + std::string(5000, ']'), "")),
              "nested deeper");
  ExpectError(OpenRaw(RawSafetensors(R"({"__metadata__":{"a":1}})", "")), "__metadata__");
}

TEST_F(HfTest, SafetensorsRefusesBadOffsetsDtypesAndShapes) {
  const std::string data(16, '\0');
  auto one = [&](const std::string& entry) {
    return OpenRaw(RawSafetensors(R"({"w":)" + entry + "}", data));
  };
  ExpectError(one(R"({"dtype":"F32","shape":[4],"data_offsets":[8,24]})"), "outside the data");
  ExpectError(one(R"({"dtype":"F32","shape":[0],"data_offsets":[9,8]})"), "outside the data");
  ExpectError(one(R"({"dtype":"F32","shape":[4],"data_offsets":[-4,12]})"), "data_offsets");
  ExpectError(one(R"({"dtype":"I64","shape":[2],"data_offsets":[0,16]})"), "I64");
  ExpectError(one(R"({"dtype":"F64","shape":[2],"data_offsets":[0,16]})"), "F64");
  ExpectError(one(R"({"dtype":"Q4_K","shape":[2],"data_offsets":[0,16]})"), "Q4_K");
  ExpectError(one(R"({"dtype":"F32","shape":[3],"data_offsets":[0,16]})"), "needs 12 bytes");
  ExpectError(one(R"({"dtype":"F32","shape":[-1,-4],"data_offsets":[0,16]})"), "negative");
  ExpectError(one(R"({"dtype":"F32","shape":[1,1,1,1,1,1,1,1,4],"data_offsets":[0,16]})"),
              "rank 9");
  ExpectError(one(R"({"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,16]})"),
              "too many elements");
  ExpectError(one(R"({"dtype":"F32","data_offsets":[0,16]})"), "shape");
  ExpectError(OpenRaw(RawSafetensors(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                                     R"("b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
                                     data)),
              "overlap");
  EXPECT_TRUE(one(R"({"dtype":"F32","shape":[2,2],"data_offsets":[0,16]})").ok());
}

TEST_F(HfTest, SafetensorsRefusesTooManyTensors) {
  json header = json::object();
  for (int i = 0; i < 11; ++i) {
    header[absl::StrCat("t", i)] = {{"dtype", "F32"}, {"shape", {0}}, {"data_offsets", {0, 0}}};
  }
  WriteFile(dir_ / "t.safetensors", RawSafetensors(header.dump(), ""));
  SafetensorsLimits limits;
  limits.max_tensors = 10;
  ExpectError(SafetensorsFile::Open(dir_ / "t.safetensors", limits).status(), "limit is 10");
  limits.max_tensors = 11;
  EXPECT_TRUE(SafetensorsFile::Open(dir_ / "t.safetensors", limits).ok());
}

TEST_F(HfTest, ShardedCheckpointRefusesNamesOutsideTheFolder) {
  fs::path folder = CopyFixture("llama");
  const std::string index = ReadFile(folder / "model.safetensors.index.json");
  auto with_shard = [&](const std::string& shard) {
    json j = json::parse(index);
    j["weight_map"]["model.norm.weight"] = shard;
    WriteFile(folder / "model.safetensors.index.json", j.dump());
    return Checkpoint::Open(folder).status();
  };
  fs::copy_file(folder / "model-00002-of-00002.safetensors", dir_ / "outside.safetensors");
  ExpectError(with_shard("../outside.safetensors"), "not a plain file name");
  ExpectError(with_shard((dir_ / "outside.safetensors").string()), "not a plain file name");
  ExpectError(with_shard(".."), "not a plain file name");
  ExpectError(with_shard(""), "not a plain file name");
  ExpectError(with_shard("model-00001-of-00002.safetensors"), "is not in its shard");
  ExpectError(with_shard("absent.safetensors"), "absent.safetensors");
  EXPECT_TRUE(with_shard("model-00002-of-00002.safetensors").ok());
  WriteFile(folder / "model.safetensors.index.json", R"({"weight_map":["x"]})");
  ExpectError(Checkpoint::Open(folder).status(), "weight_map");
  fs::remove(folder / "model.safetensors.index.json");
  ExpectError(Checkpoint::Open(folder).status(), "neither model.safetensors");
}

// ---------------------------------------------------------------------------------------------
// config.json

json FixtureConfig(const std::string& name) {
  return json::parse(ReadFile(kFixtures / name / "config.json"));
}

absl::Status ParseStatus(const json& j) { return ParseDecoderConfig(j.dump()).status(); }

TEST(HfConfigTest, ParsesTheFixtureConfigs) {
  auto llama = LoadDecoderConfig(kFixtures / "llama");
  ASSERT_TRUE(llama.ok()) << llama.status();
  EXPECT_EQ(llama->architecture, Architecture::kLlama);
  EXPECT_EQ(llama->head_dim, 16);
  EXPECT_EQ(llama->num_key_value_heads, 2);
  EXPECT_TRUE(llama->tie_word_embeddings);
  ASSERT_TRUE(llama->rope_scaling.has_value());
  EXPECT_EQ(llama->rope_scaling->factor, 8.0);
  EXPECT_EQ(llama->rope_scaling->original_max_position_embeddings, 64);
  EXPECT_FALSE(llama->qkv_bias);
  EXPECT_EQ(llama->eos_token_ids, std::vector<int64_t>{2});

  auto qwen2 = LoadDecoderConfig(kFixtures / "qwen2");
  ASSERT_TRUE(qwen2.ok()) << qwen2.status();
  EXPECT_TRUE(qwen2->qkv_bias);
  EXPECT_FALSE(qwen2->o_bias);
  EXPECT_FALSE(qwen2->tie_word_embeddings);
  EXPECT_EQ(qwen2->rope_theta, 1e6);

  auto qwen3 = LoadDecoderConfig(kFixtures / "qwen3");
  ASSERT_TRUE(qwen3.ok()) << qwen3.status();
  EXPECT_EQ(qwen3->head_dim, 32);
  EXPECT_TRUE(qwen3->qk_norm);
  EXPECT_EQ(qwen3->torch_dtype, "bfloat16");
}

// Field sets of published configs (Qwen3-0.6B; Qwen2.5-7B-Instruct as transformers 4.56 writes
// it, with dtype and layer_types; Llama-3.2-1B; SmolLM2-360M with its extra keys).
TEST(HfConfigTest, AcceptsPublishedConfigs) {
  auto qwen3 = ParseDecoderConfig(R"({
    "architectures": ["Qwen3ForCausalLM"], "attention_bias": false, "attention_dropout": 0.0,
    "bos_token_id": 151643, "eos_token_id": 151645, "head_dim": 128, "hidden_act": "silu",
    "hidden_size": 1024, "initializer_range": 0.02, "intermediate_size": 3072,
    "max_position_embeddings": 40960, "max_window_layers": 28, "model_type": "qwen3",
    "num_attention_heads": 16, "num_hidden_layers": 28, "num_key_value_heads": 8,
    "rms_norm_eps": 1e-06, "rope_scaling": null, "rope_theta": 1000000, "sliding_window": null,
    "tie_word_embeddings": true, "torch_dtype": "bfloat16", "transformers_version": "4.51.0",
    "use_cache": true, "use_sliding_window": false, "vocab_size": 151936})");
  ASSERT_TRUE(qwen3.ok()) << qwen3.status();
  EXPECT_EQ(qwen3->head_dim, 128);  // != 1024 / 16
  EXPECT_TRUE(qwen3->tie_word_embeddings);

  auto qwen25 = ParseDecoderConfig(R"({
    "architectures": ["Qwen2ForCausalLM"], "attention_dropout": 0.0, "bos_token_id": 151643,
    "dtype": "bfloat16", "eos_token_id": 151645, "hidden_act": "silu", "hidden_size": 3584,
    "initializer_range": 0.02, "intermediate_size": 18944,
    "layer_types": ["full_attention", "full_attention", "full_attention", "full_attention"],
    "max_position_embeddings": 32768, "max_window_layers": 28, "model_type": "qwen2",
    "num_attention_heads": 28, "num_hidden_layers": 28, "num_key_value_heads": 4,
    "pad_token_id": 151643, "rms_norm_eps": 1e-06, "rope_scaling": null,
    "rope_theta": 1000000.0, "sliding_window": null, "tie_word_embeddings": false,
    "transformers_version": "4.56.1", "use_cache": true, "use_mrope": false,
    "use_sliding_window": false, "vocab_size": 152064})");
  ASSERT_TRUE(qwen25.ok()) << qwen25.status();
  EXPECT_EQ(qwen25->head_dim, 128);
  EXPECT_EQ(qwen25->torch_dtype, "bfloat16");

  auto llama32 = ParseDecoderConfig(R"({
    "architectures": ["LlamaForCausalLM"], "attention_bias": false, "attention_dropout": 0.0,
    "bos_token_id": 128000, "eos_token_id": 128001, "head_dim": 64, "hidden_act": "silu",
    "hidden_size": 2048, "initializer_range": 0.02, "intermediate_size": 8192,
    "max_position_embeddings": 131072, "mlp_bias": false, "model_type": "llama",
    "num_attention_heads": 32, "num_hidden_layers": 16, "num_key_value_heads": 8,
    "pretraining_tp": 1, "rms_norm_eps": 1e-05,
    "rope_scaling": {"factor": 32.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                     "original_max_position_embeddings": 8192, "rope_type": "llama3"},
    "rope_theta": 500000.0, "tie_word_embeddings": true, "torch_dtype": "bfloat16",
    "transformers_version": "4.45.0.dev0", "use_cache": true, "vocab_size": 128256})");
  ASSERT_TRUE(llama32.ok()) << llama32.status();
  EXPECT_EQ(llama32->rope_scaling->factor, 32.0);
  EXPECT_EQ(llama32->rope_scaling->original_max_position_embeddings, 8192);

  auto smollm2 = ParseDecoderConfig(R"({
    "architectures": ["LlamaForCausalLM"], "attention_bias": false, "attention_dropout": 0.0,
    "bos_token_id": 1, "eos_token_id": 2, "hidden_act": "silu", "hidden_size": 960,
    "initializer_range": 0.02, "intermediate_size": 2560, "is_llama_config": true,
    "max_position_embeddings": 8192, "mlp_bias": false, "model_type": "llama",
    "num_attention_heads": 15, "num_hidden_layers": 32, "num_key_value_heads": 5,
    "pad_token_id": 2, "pretraining_tp": 1, "rms_norm_eps": 1e-05, "rope_interleaved": false,
    "rope_scaling": null, "rope_theta": 100000, "tie_word_embeddings": true,
    "torch_dtype": "bfloat16",
    "transformers.js_config": {"kv_cache_dtype": {"q4f16": "float16", "fp16": "float16"}},
    "transformers_version": "4.42.3", "use_cache": true, "vocab_size": 49152})");
  ASSERT_TRUE(smollm2.ok()) << smollm2.status();
  EXPECT_EQ(smollm2->head_dim, 64);
  EXPECT_EQ(smollm2->rope_theta, 100000.0);

  // Mistral-7B-Instruct-v0.3 (Llama's math; sliding window off); v0.1's 4096-token window is
  // refused, naming it.
  const char* mistral = R"({
    "architectures": ["MistralForCausalLM"], "attention_dropout": 0.0, "bos_token_id": 1,
    "eos_token_id": 2, "hidden_act": "silu", "hidden_size": 4096, "initializer_range": 0.02,
    "intermediate_size": 14336, "max_position_embeddings": 32768, "model_type": "mistral",
    "num_attention_heads": 32, "num_hidden_layers": 32, "num_key_value_heads": 8,
    "rms_norm_eps": 1e-05, "rope_theta": 1000000.0, "sliding_window": null,
    "tie_word_embeddings": false, "torch_dtype": "bfloat16",
    "transformers_version": "4.42.0.dev0", "use_cache": true, "vocab_size": 32768})";
  auto mistral03 = ParseDecoderConfig(mistral);
  ASSERT_TRUE(mistral03.ok()) << mistral03.status();
  EXPECT_EQ(mistral03->architecture, Architecture::kLlama);
  EXPECT_EQ(mistral03->head_dim, 128);
  EXPECT_EQ(mistral03->num_key_value_heads, 8);
  json mistral01 = json::parse(mistral);
  mistral01["sliding_window"] = 4096;
  ExpectError(ParseStatus(mistral01), "sliding_window");

  // transformers 5 style: rope_theta and the scaling under rope_parameters.
  json v5 = FixtureConfig("llama");
  v5.erase("rope_theta");
  v5.erase("rope_scaling");
  v5["rope_parameters"] = {{"rope_type", "llama3"},   {"rope_theta", 500000.0},
                           {"factor", 4.0},           {"low_freq_factor", 1.0},
                           {"high_freq_factor", 2.0}, {"original_max_position_embeddings", 32}};
  auto parsed = ParseDecoderConfig(v5.dump());
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ(parsed->rope_theta, 500000.0);
  EXPECT_EQ(parsed->rope_scaling->high_freq_factor, 2.0);
}

TEST(HfConfigTest, RefusesWhatChangesTheMath) {
  json j = FixtureConfig("llama");
  auto with = [&](const std::string& key, const json& value) {
    json k = j;
    k[key] = value;
    return ParseStatus(k);
  };
  ExpectError(with("architectures", {"MixtralForCausalLM"}), "MixtralForCausalLM");
  ExpectError(with("architectures", {"LlamaForCausalLM", "Qwen2ForCausalLM"}), "exactly one");
  ExpectError(with("rope_scaling", {{"rope_type", "yarn"}, {"factor", 4.0}}), "yarn");
  ExpectError(with("rope_scaling", {{"type", "linear"}, {"factor", 2.0}}), "linear");
  ExpectError(with("rope_scaling", {{"rope_type", "llama3"}, {"factor", 8.0}}), "low_freq_factor");
  ExpectError(with("qk_layernorm", true), "qk_layernorm");
  ExpectError(with("partial_rotary_factor", 0.5), "partial_rotary_factor");
  ExpectError(with("mlp_bias", true), "mlp_bias");
  ExpectError(with("pretraining_tp", 2), "pretraining_tp");
  ExpectError(with("hidden_act", "gelu"), "hidden_act");
  ExpectError(with("rope_interleaved", true), "rope_interleaved");
  ExpectError(with("use_mrope", true), "use_mrope");
  ExpectError(with("rope_parameters", {{"rope_type", "yarn"}, {"factor", 4.0}}), "yarn");
  ExpectError(with("quantization_config", {{"quant_method", "gptq"}}), "quantization_config");
  ExpectError(with("num_key_value_heads", 3), "num_key_value_heads");
  ExpectError(with("num_key_value_heads", 8), "num_key_value_heads");
  ExpectError(with("hidden_size", -64), "hidden_size");
  ExpectError(with("hidden_size", 1.5), "hidden_size");
  ExpectError(with("head_dim", 15), "head_dim");
  ExpectError(with("rms_norm_eps", 0), "rms_norm_eps");
  ExpectError(with("layer_types", {"full_attention", "sliding_attention"}), "layer_types");
  // Mistral-style window on a Llama config: on unless switched off.
  ExpectError(with("sliding_window", 4096), "sliding_window");
  json off = j;
  off["sliding_window"] = 4096;
  off["use_sliding_window"] = false;
  EXPECT_TRUE(ParseStatus(off).ok());
  // Harmless at inference.
  EXPECT_TRUE(with("attention_dropout", 0.1).ok());
  EXPECT_TRUE(with("attention_dropout", 0).ok());
  ExpectError(with("attention_dropout", -0.5), "attention_dropout");
  ExpectError(with("attention_dropout", "0.1"), "attention_dropout");
  ExpectError(with("num_hidden_layers", 0), "num_hidden_layers");
  ExpectError(with("vocab_size", 18446744073709551615ULL), "vocab_size");
  EXPECT_TRUE(with("sliding_window", nullptr).ok());
  json missing = j;
  missing.erase("vocab_size");
  ExpectError(ParseStatus(missing), "vocab_size");

  json qwen2 = FixtureConfig("qwen2");
  qwen2["use_sliding_window"] = true;
  ExpectError(ParseStatus(qwen2), "sliding_window");
  json qwen3 = FixtureConfig("qwen3");
  qwen3.erase("head_dim");
  ExpectError(ParseStatus(qwen3), "head_dim");
  ExpectError(ParseDecoderConfig(std::string(100, '{')).status(), "nested deeper");
  ExpectError(ParseDecoderConfig("[]").status(), "not a JSON object");
}

// ---------------------------------------------------------------------------------------------
// The decoder against the reference

struct Expected {
  std::vector<int64_t> prompt;
  std::vector<int64_t> greedy;
  std::vector<int64_t> logit_steps;
  at::Tensor prefill_logits;  // [T, vocab]
  at::Tensor step_logits;     // [steps, vocab]
};

Expected LoadExpected(const std::string& name) {
  Expected e;
  json j = json::parse(ReadFile(kFixtures / name / "expected.json"));
  e.prompt = j.at("prompt").get<std::vector<int64_t>>();
  e.greedy = j.at("greedy_tokens").get<std::vector<int64_t>>();
  e.logit_steps = j.at("logit_steps").get<std::vector<int64_t>>();
  auto file = SafetensorsFile::Open(kFixtures / name / "expected.safetensors");
  EXPECT_TRUE(file.ok()) << file.status();
  e.prefill_logits = (*file)->Tensor("prefill_logits")->clone();
  e.step_logits = (*file)->Tensor("step_logits")->clone();
  return e;
}

double MaxAbsDiff(const at::Tensor& a, const at::Tensor& b) {
  EXPECT_EQ(a.sizes(), b.sizes());
  return (a.to(at::kDouble) - b.to(at::kDouble)).abs().max().item<double>();
}

at::Tensor Ids(const std::vector<int64_t>& ids) { return at::tensor(ids, at::kLong).view({1, -1}); }

class DecoderReferenceTest : public ::testing::TestWithParam<std::string> {};

TEST_P(DecoderReferenceTest, MatchesTheReferenceInFloat32) {
  const std::string name = GetParam();
  Expected e = LoadExpected(name);
  auto decoder = Decoder::Load(kFixtures / name);
  ASSERT_TRUE(decoder.ok()) << decoder.status();

  auto logits = (*decoder)->Forward(Ids(e.prompt), nullptr);
  ASSERT_TRUE(logits.ok()) << logits.status();
  const double prefill_err = MaxAbsDiff((*logits)[0], e.prefill_logits);
  std::printf("[%s] prefill logits: max |error| %.3g (logits max |x| %.3g)\n", name.c_str(),
              prefill_err, e.prefill_logits.abs().max().item<double>());
  EXPECT_LT(prefill_err, kFp32Tolerance);

  std::vector<at::Tensor> step_logits;
  const auto start = std::chrono::steady_clock::now();
  auto tokens =
      (*decoder)->GenerateGreedy(e.prompt, static_cast<int64_t>(e.greedy.size()), &step_logits);
  const double ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
  ASSERT_TRUE(tokens.ok()) << tokens.status();
  EXPECT_EQ(*tokens, e.greedy);
  double step_err = 0;
  for (size_t i = 0; i < e.logit_steps.size(); ++i) {
    step_err = std::max(step_err, MaxAbsDiff(step_logits.at(e.logit_steps[i]), e.step_logits[i]));
  }
  std::printf(
      "[%s] greedy: %zu tokens in %.1f ms (%.2f ms/token incl. prefill); step logits "
      "max |error| %.3g\n",
      name.c_str(), tokens->size(), ms, ms / tokens->size(), step_err);
  EXPECT_LT(step_err, kFp32Tolerance);
}

TEST_P(DecoderReferenceTest, CachedPrefillAndDecodeEqualOneFullForward) {
  const std::string name = GetParam();
  Expected e = LoadExpected(name);
  auto decoder = Decoder::Load(kFixtures / name);
  ASSERT_TRUE(decoder.ok()) << decoder.status();
  std::vector<int64_t> seq = e.prompt;
  seq.insert(seq.end(), e.greedy.begin(), e.greedy.begin() + 16);  // 24 tokens
  auto full = (*decoder)->Forward(Ids(seq), nullptr);
  ASSERT_TRUE(full.ok()) << full.status();

  auto cache = (*decoder)->NewCache(1, 32);
  ASSERT_TRUE(cache.ok()) << cache.status();
  std::vector<at::Tensor> parts;
  // Prefill 8, a chunk of 5, then one token at a time.
  std::vector<std::pair<size_t, size_t>> spans = {{0, 8}, {8, 13}};
  for (size_t i = 13; i < seq.size(); ++i) spans.emplace_back(i, i + 1);
  for (auto [b, end] : spans) {
    auto out = (*decoder)->Forward(Ids(std::vector<int64_t>(seq.begin() + b, seq.begin() + end)),
                                   cache->get());
    ASSERT_TRUE(out.ok()) << out.status();
    parts.push_back(*out);
  }
  EXPECT_EQ((*cache)->length(), 24);
  const double err = MaxAbsDiff(at::cat(parts, 1), *full);
  std::printf("[%s] cached vs full forward: max |difference| %.3g\n", name.c_str(), err);
  EXPECT_LT(err, 1e-5);
  // The cache matters: the last token alone (no history, position 0) gives other logits.
  auto alone = (*decoder)->Forward(Ids({seq.back()}), nullptr);
  ASSERT_TRUE(alone.ok());
  EXPECT_GT(MaxAbsDiff((*alone)[0][0], (*full)[0][23]), 1e-2);
}

// KvCache is an interface: a different implementation (here one that grows by concatenation,
// standing in for the paged cache to come) gives the same logits through the same Forward().
class GrowingKvCache : public KvCache {
 public:
  GrowingKvCache(int64_t layers, int64_t batch) : keys_(layers), values_(layers), batch_(batch) {}
  int64_t length() const override { return length_; }
  int64_t batch() const override { return batch_; }
  absl::StatusOr<std::pair<at::Tensor, at::Tensor>> Append(int64_t layer, const at::Tensor& k,
                                                           const at::Tensor& v) override {
    at::Tensor& ks = keys_.at(layer);
    at::Tensor& vs = values_.at(layer);
    // Positions past length() may hold a failed call's keys: drop them before appending.
    ks = ks.defined() ? at::cat({ks.narrow(2, 0, length_), k}, 2) : k.clone();
    vs = vs.defined() ? at::cat({vs.narrow(2, 0, length_), v}, 2) : v.clone();
    return std::make_pair(ks, vs);
  }
  void Commit(int64_t t) override { length_ += t; }

 private:
  std::vector<at::Tensor> keys_, values_;
  int64_t batch_;
  int64_t length_ = 0;
};

TEST_P(DecoderReferenceTest, AnotherKvCacheImplementationGivesTheSameLogits) {
  const std::string name = GetParam();
  Expected e = LoadExpected(name);
  auto decoder = Decoder::Load(kFixtures / name);
  ASSERT_TRUE(decoder.ok()) << decoder.status();
  GrowingKvCache growing((*decoder)->config().num_hidden_layers, 1);
  auto contiguous = (*decoder)->NewCache(1, 16);
  ASSERT_TRUE(contiguous.ok());
  std::vector<at::Tensor> a, b;
  at::Tensor ids = Ids(e.prompt);
  for (int step = 0; step < 4; ++step) {
    auto la = (*decoder)->Forward(ids, &growing);
    auto lb = (*decoder)->Forward(ids, contiguous->get());
    ASSERT_TRUE(la.ok() && lb.ok());
    a.push_back(*la);
    b.push_back(*lb);
    ids = at::full({1, 1}, e.greedy[step], at::kLong);
  }
  EXPECT_EQ(growing.length(), 11);
  EXPECT_LT(MaxAbsDiff(at::cat(a, 1), at::cat(b, 1)), 1e-6);
}

TEST_P(DecoderReferenceTest, BatchRowsEqualSingleSequences) {
  const std::string name = GetParam();
  Expected e = LoadExpected(name);
  auto decoder = Decoder::Load(kFixtures / name);
  ASSERT_TRUE(decoder.ok()) << decoder.status();
  std::vector<int64_t> other = {5, 6, 7, 8, 250, 100, 3, 64};
  at::Tensor batch = at::cat({Ids(e.prompt), Ids(other)}, 0);
  auto cache = (*decoder)->NewCache(2, 12);
  ASSERT_TRUE(cache.ok());
  auto prefill = (*decoder)->Forward(batch, cache->get());
  ASSERT_TRUE(prefill.ok()) << prefill.status();
  auto step = (*decoder)->Forward(at::tensor({9, 10}, at::kLong).view({2, 1}), cache->get());
  ASSERT_TRUE(step.ok()) << step.status();
  at::Tensor got = at::cat({*prefill, *step}, 1);
  std::vector<int64_t> row0 = e.prompt, row1 = other;
  row0.push_back(9);
  row1.push_back(10);
  auto single0 = (*decoder)->Forward(Ids(row0), nullptr);
  auto single1 = (*decoder)->Forward(Ids(row1), nullptr);
  ASSERT_TRUE(single0.ok() && single1.ok());
  EXPECT_LT(MaxAbsDiff(got[0], (*single0)[0]), 1e-5);
  EXPECT_LT(MaxAbsDiff(got[1], (*single1)[0]), 1e-5);
}

TEST_P(DecoderReferenceTest, Bfloat16ComputeIsClose) {
  const std::string name = GetParam();
  Expected e = LoadExpected(name);
  auto decoder = Decoder::Load(kFixtures / name, at::kCPU, at::kBFloat16);
  ASSERT_TRUE(decoder.ok()) << decoder.status();
  auto logits = (*decoder)->Forward(Ids(e.prompt), nullptr);
  ASSERT_TRUE(logits.ok()) << logits.status();
  const double err = MaxAbsDiff((*logits)[0], e.prefill_logits);
  std::printf("[%s] bfloat16 compute: prefill logits max |error| %.3g\n", name.c_str(), err);
  EXPECT_LT(err, kBf16Tolerance);
}

INSTANTIATE_TEST_SUITE_P(Fixtures, DecoderReferenceTest,
                         ::testing::Values("llama", "qwen2", "qwen3", "llama_bias"));

// ---------------------------------------------------------------------------------------------
// Hostile checkpoints and calls

TEST_F(HfTest, LoadNamesWrongMissingAndUnexpectedTensors) {
  fs::path folder = CopyFixture("qwen2");
  const auto tensors = FixtureTensors("qwen2");
  auto write_with = [&](const std::string& drop, const std::string& add, at::Tensor value) {
    std::vector<std::pair<std::string, at::Tensor>> out;
    for (const auto& [n, t] : tensors) {
      if (n != drop) out.emplace_back(n, t);
    }
    if (!add.empty()) out.emplace_back(add, value);
    WriteFile(folder / "model.safetensors", Safetensors(out));
    return Decoder::Load(folder).status();
  };
  const std::string up = "model.layers.1.mlp.up_proj.weight";
  ExpectError(write_with(up, up, at::zeros({127, 64})), "'" + up +
                                                            "' has shape [127, 64], "
                                                            "expected [128, 64]");
  const std::string kb = "model.layers.0.self_attn.k_proj.bias";
  ExpectError(write_with(kb, "", {}), "missing tensor '" + kb + "' (expected shape [32])");
  ExpectError(write_with("lm_head.weight", "", {}), "lm_head.weight");
  ExpectError(write_with("", "model.layers.0.mlp.gate_proj.bias", at::zeros({128})),
              "unexpected tensor 'model.layers.0.mlp.gate_proj.bias'");
  // Older checkpoints carry the rotary buffers; they are recomputed, not read.
  EXPECT_TRUE(write_with("", "model.layers.0.self_attn.rotary_emb.inv_freq", at::zeros({8})).ok());
  // A float16 copy of the weights loads (widened to float32) and still computes the model:
  // rounding the weights to 11 mantissa bits moves the logits by about 1e-3.
  std::vector<std::pair<std::string, at::Tensor>> half;
  for (const auto& [n, t] : tensors) half.emplace_back(n, t.to(at::kHalf));
  WriteFile(folder / "model.safetensors", Safetensors(half));
  auto decoder = Decoder::Load(folder);
  ASSERT_TRUE(decoder.ok()) << decoder.status();
  Expected e = LoadExpected("qwen2");
  auto logits = (*decoder)->Forward(Ids(e.prompt), nullptr);
  ASSERT_TRUE(logits.ok()) << logits.status();
  const double err = MaxAbsDiff((*logits)[0], e.prefill_logits);
  std::printf("[qwen2 as F16] prefill logits max |error| %.3g\n", err);
  EXPECT_LT(err, 2e-2);
}

TEST_F(HfTest, LoadRefusesBadConfigs) {
  fs::path folder = CopyFixture("qwen3");
  json j = FixtureConfig("qwen3");
  j["architectures"] = {"GemmaForCausalLM"};
  WriteFile(folder / "config.json", j.dump());
  ExpectError(Decoder::Load(folder).status(), "GemmaForCausalLM");
  j = FixtureConfig("qwen3");
  j["rope_scaling"] = {{"rope_type", "dynamic"}, {"factor", 2.0}};
  WriteFile(folder / "config.json", j.dump());
  ExpectError(Decoder::Load(folder).status(), "dynamic");
  j = FixtureConfig("qwen3");
  j["head_dim"] = 16;  // the weights say 32
  WriteFile(folder / "config.json", j.dump());
  ExpectError(Decoder::Load(folder).status(), "expected [64, 64]");
  fs::remove(folder / "config.json");
  EXPECT_FALSE(Decoder::Load(folder).ok());
  ExpectError(Decoder::Load(kFixtures / "qwen3", at::kCPU, at::kHalf).status(), "float16");
}

TEST(HfDecoderCallsTest, RefusesBadInputsAndAFullCache) {
  auto decoder = Decoder::Load(kFixtures / "llama");
  ASSERT_TRUE(decoder.ok()) << decoder.status();
  const Decoder& d = **decoder;
  ExpectError(d.Forward(Ids({1, 256}), nullptr).status(), "token id 256");
  ExpectError(d.Forward(Ids({-1}), nullptr).status(), "token id -1");
  ExpectError(d.Forward(at::zeros({3}, at::kLong), nullptr).status(), "[batch, tokens]");
  ExpectError(d.Forward(at::zeros({1, 2}), nullptr).status(), "int64");
  ExpectError(d.Forward(at::zeros({1, 129}, at::kLong), nullptr).status(),
              "max_position_embeddings");
  auto cache = d.NewCache(1, 4);
  ASSERT_TRUE(cache.ok());
  ASSERT_TRUE(d.Forward(Ids({1, 2, 3}), cache->get()).ok());
  auto full = d.Forward(Ids({4, 5}), cache->get());
  EXPECT_EQ(full.status().code(), absl::StatusCode::kResourceExhausted) << full.status();
  EXPECT_EQ((*cache)->length(), 3);  // the failed call left it as it was
  EXPECT_TRUE(d.Forward(Ids({4}), cache->get()).ok());
  ExpectError(d.Forward(at::zeros({2, 1}, at::kLong), cache->get()).status(), "batch");
  ExpectError(d.NewCache(1, 129).status(), "capacity");
  ExpectError(d.GenerateGreedy({}, 3).status(), "prompt");
}

}  // namespace
}  // namespace switchyard::runner::hf
