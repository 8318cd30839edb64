// Unit tests for the orchestrator's JSON configuration (orchestrator/orchestrator_config.h).
#include "orchestrator/orchestrator_config.h"

#include <filesystem>
#include <string>

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "support/media_fixtures.h"

namespace switchyard::orchestrator {
namespace {

namespace fs = std::filesystem;
using Json = nlohmann::json;
using ::switchyard::testing::TempDir;
using ::switchyard::testing::WriteFile;
using ::testing::HasSubstr;

const fs::path kFile = "/etc/switchyard/orch.json";

Json FullConfig() {
  return Json::parse(R"({
    "node_id": "orch-a",
    "listen": "0.0.0.0:50061",
    "advertise_address": "10.0.0.5:50061",
    "gateways": ["10.0.0.1:50051", "gw.example:50051"],
    "heartbeat_ms": 250,
    "torch": {"intra_op_threads": 4, "inter_op_threads": 2},
    "max_message_bytes": 67108864,
    "models": [
      {"id": "esrgan", "pipeline": "upscale", "path": "models/esrgan.pt", "warm": true,
       "device": "cpu", "instances": 2, "queue_size": 8, "price_per_unit": 0.001,
       "unit": "pixel", "max_input_pixels": 1000000, "warmup_size": 16},
      {"id": "tiny", "pipeline": "upscale", "path": "/abs/tiny.pt"}
    ],
    "transcode": {"enabled": false, "capacity": 3, "max_renditions": 4,
                  "price_per_unit": 0.5, "encoder_threads": 2, "thread_policy": "fixed",
                  "cores": 6, "scale_from_larger": true},
    "log": {"level": "debug", "format": "json"}
  })");
}

absl::StatusOr<OrchestratorConfig> Parse(const Json& json) {
  return ParseOrchestratorConfig(json.dump(), kFile);
}

// Expects INVALID_ARGUMENT whose message names the config file and `field`.
void ExpectError(const Json& json, const std::string& field) {
  auto c = Parse(json);
  ASSERT_FALSE(c.ok()) << "accepted: " << json.dump();
  EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument) << c.status();
  EXPECT_THAT(c.status().message(), HasSubstr(kFile.string())) << json.dump();
  EXPECT_THAT(c.status().message(), HasSubstr(field)) << json.dump();
}

TEST(OrchestratorConfigTest, EmptyObjectGivesDefaults) {
  auto c = Parse(Json::object());
  ASSERT_TRUE(c.ok()) << c.status();
  const OrchestratorConfig d;
  EXPECT_EQ(c->file, kFile);
  EXPECT_EQ(c->node_id, "");  // derived at start: DefaultNodeId
  EXPECT_EQ(c->listen, "127.0.0.1:50061");
  EXPECT_EQ(c->advertise_address, "");
  EXPECT_TRUE(c->gateways.empty());
  EXPECT_EQ(c->heartbeat_ms, 500);
  EXPECT_EQ(c->intra_op_threads, 0);
  EXPECT_EQ(c->inter_op_threads, 0);
  EXPECT_EQ(c->max_message_bytes, 256 << 20);
  EXPECT_TRUE(c->models.empty());
  EXPECT_TRUE(c->transcode.enabled);
  EXPECT_EQ(c->transcode.capacity, 2);
  EXPECT_EQ(c->transcode.max_renditions, 8);
  EXPECT_EQ(c->transcode.encoder_threads, 1);
  EXPECT_EQ(c->transcode.thread_policy, "auto");
  EXPECT_EQ(c->transcode.cores, 0);
  EXPECT_FALSE(c->transcode.scale_from_larger);
  EXPECT_EQ(c->transcode.max_segment_bytes, 64 << 20);
  EXPECT_EQ(c->transcode.max_segment_seconds, 30);
  EXPECT_EQ(c->log_level, "info");
  EXPECT_EQ(c->log_format, "text");
  EXPECT_EQ(c->log_level, d.log_level);
}

TEST(OrchestratorConfigTest, FullConfigParses) {
  auto c = Parse(FullConfig());
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->node_id, "orch-a");
  EXPECT_EQ(c->listen, "0.0.0.0:50061");
  EXPECT_EQ(c->advertise_address, "10.0.0.5:50061");
  EXPECT_EQ(c->gateways, (std::vector<std::string>{"10.0.0.1:50051", "gw.example:50051"}));
  EXPECT_EQ(c->heartbeat_ms, 250);
  EXPECT_EQ(c->intra_op_threads, 4);
  EXPECT_EQ(c->inter_op_threads, 2);
  EXPECT_EQ(c->max_message_bytes, 64 << 20);
  EXPECT_FALSE(c->transcode.enabled);
  EXPECT_EQ(c->transcode.capacity, 3);
  EXPECT_EQ(c->transcode.max_renditions, 4);
  EXPECT_DOUBLE_EQ(c->transcode.price_per_unit, 0.5);
  EXPECT_EQ(c->transcode.encoder_threads, 2);
  EXPECT_EQ(c->transcode.thread_policy, "fixed");
  EXPECT_EQ(c->transcode.cores, 6);
  EXPECT_TRUE(c->transcode.scale_from_larger);
  EXPECT_EQ(c->log_level, "debug");
  EXPECT_EQ(c->log_format, "json");

  ASSERT_EQ(c->models.size(), 2u);
  const ModelConfig& m = c->models[0];
  EXPECT_EQ(m.id, "esrgan");
  EXPECT_EQ(m.pipeline, "upscale");
  EXPECT_EQ(m.path, fs::path("/etc/switchyard/models/esrgan.pt"));
  EXPECT_TRUE(m.warm);
  EXPECT_EQ(m.device, "cpu");
  EXPECT_EQ(m.instances, 2);
  EXPECT_EQ(m.queue_size, 8);
  EXPECT_DOUBLE_EQ(m.price_per_unit, 0.001);
  EXPECT_EQ(m.unit, "pixel");
  EXPECT_EQ(m.max_input_pixels, 1000000);
  EXPECT_EQ(m.warmup_size, 16);

  // The second model only sets the required fields: everything else has its default.
  const ModelConfig& t = c->models[1];
  EXPECT_EQ(t.id, "tiny");
  EXPECT_EQ(t.path, fs::path("/abs/tiny.pt"));
  EXPECT_FALSE(t.warm);
  EXPECT_EQ(t.device, "auto");
  EXPECT_EQ(t.instances, 1);
  EXPECT_EQ(t.queue_size, 4);
  EXPECT_DOUBLE_EQ(t.price_per_unit, 0);
  EXPECT_EQ(t.unit, "pixel");
  EXPECT_EQ(t.max_input_pixels, 512 * 512);
  EXPECT_EQ(t.warmup_size, 32);
}

TEST(OrchestratorConfigTest, AcceptedDeviceSpellings) {
  for (const char* device : {"auto", "cpu", "cuda", "cuda:0", "cuda:3"}) {
    Json j = FullConfig();
    j["models"][1]["device"] = device;
    auto c = Parse(j);
    ASSERT_TRUE(c.ok()) << device << ": " << c.status();
    EXPECT_EQ(c->models[1].device, device);
  }
}

TEST(OrchestratorConfigTest, FormatHfReadsTheEngineOptions) {
  auto model = [](Json fields) {
    Json m = {{"id", "q"}, {"pipeline", "llm"}, {"path", "ckpt"}};
    m.update(fields);
    return Json{{"models", Json::array({m})}};
  };
  auto plain = Parse(model(Json::object()));
  ASSERT_TRUE(plain.ok()) << plain.status();
  EXPECT_EQ(plain->models[0].format, "torchscript");
  auto hf = Parse(model({{"format", "hf"},
                         {"options",
                          {{"dtype", "bfloat16"},
                           {"kv_cache_mb", 64},
                           {"max_batch_sequences", 2},
                           {"max_batch_tokens", 8},
                           {"block_tokens", 8},
                           {"max_new_tokens", 100},
                           {"prefix_caching", false},
                           {"max_tokens", 200},
                           {"seed", 7}}}}));
  ASSERT_TRUE(hf.ok()) << hf.status();
  const ModelConfig& m = hf->models[0];
  EXPECT_EQ(m.format, "hf");
  EXPECT_EQ(m.path, fs::path("/etc/switchyard/ckpt"));
  EXPECT_EQ(m.hf.dtype, "bfloat16");
  EXPECT_EQ(m.hf.kv_cache_mb, 64);
  EXPECT_EQ(m.hf.max_batch_sequences, 2);
  EXPECT_EQ(m.hf.max_batch_tokens, 8);
  EXPECT_EQ(m.hf.block_tokens, 8);
  EXPECT_EQ(m.hf.max_new_tokens, 100);
  EXPECT_FALSE(m.hf.prefix_caching);
  auto defaults = Parse(model({{"format", "hf"}}));
  ASSERT_TRUE(defaults.ok()) << defaults.status();
  EXPECT_EQ(defaults->models[0].hf.dtype, "float32");
  EXPECT_EQ(defaults->models[0].hf.kv_cache_mb, 1024);
  EXPECT_TRUE(defaults->models[0].hf.prefix_caching);

  ExpectError(model({{"format", "onnx"}}), "models[0].format");
  Json upscale = model({{"format", "hf"}});
  upscale["models"][0]["pipeline"] = "upscale";
  ExpectError(upscale, "models[0].format");
  ExpectError(model({{"format", "hf"}, {"options", {{"kv_cache_MB", 1}}}}), "kv_cache_MB");
  ExpectError(model({{"format", "hf"}, {"options", {{"dtype", "float16"}}}}),
              "models[0].options.dtype");
  ExpectError(model({{"format", "hf"}, {"options", {{"kv_cache_mb", 0}}}}),
              "models[0].options.kv_cache_mb");
  ExpectError(
      model({{"format", "hf"}, {"options", {{"max_batch_sequences", 8}, {"max_batch_tokens", 4}}}}),
      "models[0].options.max_batch_tokens");
  ExpectError(model({{"format", "hf"}, {"options", {{"block_tokens", 0}}}}),
              "models[0].options.block_tokens");
  ExpectError(model({{"format", "hf"}, {"options", {{"max_new_tokens", -1}}}}),
              "models[0].options.max_new_tokens");
  ExpectError(model({{"format", "hf"}, {"options", {{"kv_cache_mb", "1"}}}}),
              "models[0].options.kv_cache_mb");
  ExpectError(model({{"format", "hf"}, {"options", {{"prefix_caching", "yes"}}}}),
              "models[0].options.prefix_caching");
}

TEST(OrchestratorConfigTest, FormatHfAudioToTextReadsTheWhisperOptions) {
  auto model = [](Json options) {
    Json m = {{"id", "w"}, {"pipeline", "audio-to-text"}, {"path", "whisper"}, {"format", "hf"}};
    if (!options.is_null()) m["options"] = options;
    return Json{{"models", Json::array({m})}};
  };
  auto defaults = Parse(model(nullptr));
  ASSERT_TRUE(defaults.ok()) << defaults.status();
  EXPECT_EQ(defaults->models[0].hf.language, "");
  EXPECT_EQ(defaults->models[0].hf.task, "transcribe");
  EXPECT_EQ(defaults->models[0].hf.max_new_tokens, 0);
  auto set = Parse(model({{"dtype", "bfloat16"},
                          {"language", "de"},
                          {"task", "translate"},
                          {"max_new_tokens", 100},
                          {"sample_rate", 16000},
                          {"channels", 1},
                          {"max_audio_seconds", 60}}));
  ASSERT_TRUE(set.ok()) << set.status();
  EXPECT_EQ(set->models[0].hf.dtype, "bfloat16");
  EXPECT_EQ(set->models[0].hf.language, "de");
  EXPECT_EQ(set->models[0].hf.task, "translate");
  EXPECT_EQ(set->models[0].hf.max_new_tokens, 100);
  // The llm engine's options and other rates or channel counts are refused by name.
  ExpectError(model({{"kv_cache_mb", 64}}), "kv_cache_mb");
  ExpectError(model({{"sample_rate", 8000}}), "models[0].options.sample_rate");
  ExpectError(model({{"channels", 2}}), "models[0].options.channels");
  ExpectError(model({{"task", "summarize"}}), "models[0].options.task");
  ExpectError(model({{"max_new_tokens", 5000}}), "models[0].options.max_new_tokens");
  ExpectError(model({{"language", std::string(100, 'x')}}), "models[0].options.language");
}

TEST(OrchestratorConfigTest, InvalidJson) {
  auto c = ParseOrchestratorConfig("{\"node_id\": ", kFile);
  EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(c.status().message(), HasSubstr(kFile.string()));
  EXPECT_THAT(c.status().message(), HasSubstr("invalid JSON"));
}

TEST(OrchestratorConfigTest, TopLevelMustBeAnObject) {
  EXPECT_EQ(ParseOrchestratorConfig("[]", kFile).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ParseOrchestratorConfig("42", kFile).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(OrchestratorConfigTest, UnknownTopLevelField) {
  Json j = FullConfig();
  j["listen_adress"] = "127.0.0.1:1";
  ExpectError(j, "listen_adress");
  auto c = Parse(j);
  EXPECT_THAT(c.status().message(), HasSubstr("unknown field"));
}

TEST(OrchestratorConfigTest, UnknownFieldInsideModel) {
  Json j = FullConfig();
  j["models"][1]["instance"] = 2;
  ExpectError(j, "models[1].instance");
}

TEST(OrchestratorConfigTest, UnknownFieldInsideSections) {
  Json j = FullConfig();
  j["torch"]["threads"] = 1;
  ExpectError(j, "torch.threads");
  j = FullConfig();
  j["transcode"]["codec"] = "x265";
  ExpectError(j, "transcode.codec");
  j = FullConfig();
  j["log"]["colour"] = true;
  ExpectError(j, "log.colour");
}

TEST(OrchestratorConfigTest, WrongTypes) {
  Json j = FullConfig();
  j["node_id"] = 5;
  ExpectError(j, "node_id");
  j = FullConfig();
  j["gateways"] = "10.0.0.1:50051";
  ExpectError(j, "gateways");
  j = FullConfig();
  j["models"][0]["warm"] = "yes";
  ExpectError(j, "models[0].warm");
  j = FullConfig();
  j["models"][1]["instances"] = "2";
  ExpectError(j, "models[1].instances");
  j = FullConfig();
  j["models"] = Json::object();
  ExpectError(j, "models");
  j = FullConfig();
  j["models"][1] = "tiny";
  ExpectError(j, "models[1]");
  j = FullConfig();
  j["torch"] = 3;
  ExpectError(j, "torch");
}

TEST(OrchestratorConfigTest, ModelRequiredFields) {
  for (const char* field : {"id", "pipeline", "path"}) {
    Json j = FullConfig();
    j["models"][1].erase(field);
    ExpectError(j, std::string("models[1].") + field);
    auto c = Parse(j);
    EXPECT_THAT(c.status().message(), HasSubstr("required")) << field;
  }
  for (const char* field : {"id", "path"}) {
    Json j = FullConfig();
    j["models"][0][field] = "";
    ExpectError(j, std::string("models[0].") + field);
  }
}

TEST(OrchestratorConfigTest, BadPipeline) {
  Json j = FullConfig();
  j["models"][1]["pipeline"] = "transcode";
  ExpectError(j, "models[1].pipeline");
  j["models"][1]["pipeline"] = "";
  ExpectError(j, "models[1].pipeline");
}

TEST(OrchestratorConfigTest, DuplicateModelId) {
  Json j = FullConfig();
  j["models"][1]["id"] = "esrgan";
  ExpectError(j, "models[1].id");
  EXPECT_THAT(Parse(j).status().message(), HasSubstr("esrgan"));
}

TEST(OrchestratorConfigTest, BadDevice) {
  for (const char* device :
       {"gpu", "CPU", "", "tpu:0", "cuda:", "cuda:abc", "cuda:-1", "cuda:1x"}) {
    Json j = FullConfig();
    j["models"][0]["device"] = device;
    ExpectError(j, "models[0].device");
  }
}

TEST(OrchestratorConfigTest, ModelNumericRanges) {
  struct Case {
    const char* field;
    Json value;
  };
  const Case cases[] = {
      {"instances", 0},        {"instances", -1},     {"instances", 65},
      {"queue_size", -1},      {"queue_size", 10001}, {"price_per_unit", -0.01},
      {"max_input_pixels", 0}, {"warmup_size", -1},   {"warmup_size", 1025},
  };
  for (const auto& c : cases) {
    Json j = FullConfig();
    j["models"][1][c.field] = c.value;
    SCOPED_TRACE(std::string(c.field) + "=" + c.value.dump());
    ExpectError(j, std::string("models[1].") + c.field);
  }
  // The limits themselves are accepted.
  Json j = FullConfig();
  j["models"][1]["instances"] = 64;
  j["models"][1]["queue_size"] = 0;
  j["models"][1]["warmup_size"] = 0;
  EXPECT_TRUE(Parse(j).ok()) << Parse(j).status();
}

TEST(OrchestratorConfigTest, BadAddresses) {
  Json j = FullConfig();
  j["listen"] = "0.0.0.0";
  ExpectError(j, "listen");
  j = FullConfig();
  j["listen"] = "0.0.0.0:99999";
  ExpectError(j, "listen");
  j = FullConfig();
  j["advertise_address"] = "10.0.0.5:port";
  ExpectError(j, "advertise_address");
  j = FullConfig();
  j["gateways"] = {"10.0.0.1:50051", "10.0.0.2"};
  ExpectError(j, "gateways[1]");
}

TEST(OrchestratorConfigTest, TopLevelNumericRanges) {
  Json j = FullConfig();
  j["node_id"] = "";
  ExpectError(j, "node_id");
  j = FullConfig();
  j["heartbeat_ms"] = 49;
  ExpectError(j, "heartbeat_ms");
  j["heartbeat_ms"] = 60001;
  ExpectError(j, "heartbeat_ms");
  j = FullConfig();
  j["max_message_bytes"] = 1000;
  ExpectError(j, "max_message_bytes");
  j["max_message_bytes"] = 1LL << 31;
  ExpectError(j, "max_message_bytes");
  j = FullConfig();
  j["torch"]["intra_op_threads"] = -1;
  ExpectError(j, "torch");
}

TEST(OrchestratorConfigTest, TranscodeRanges) {
  struct Case {
    const char* field;
    Json value;
  };
  const Case cases[] = {{"capacity", 0},
                        {"capacity", -3},
                        {"max_renditions", 0},
                        {"max_renditions", 17},
                        {"price_per_unit", -1},
                        {"encoder_threads", -1},
                        {"encoder_threads", 65},
                        {"hw_decode", "vaapi"},
                        {"hw_encode", "qsv"},
                        {"parallel_renditions", "yes"},
                        {"scale_from_larger", 1},
                        {"thread_policy", "dynamic"},
                        {"cores", -1},
                        {"cores", 1025},
                        {"max_segment_bytes", 1023},
                        {"max_segment_bytes", 1LL << 31},
                        {"max_segment_bytes", 1.5},
                        {"max_segment_seconds", 0},
                        {"max_segment_seconds", 0.05},
                        {"max_segment_seconds", 3601},
                        {"max_segment_seconds", "30"}};
  for (const auto& c : cases) {
    Json j = FullConfig();
    j["transcode"][c.field] = c.value;
    SCOPED_TRACE(std::string(c.field) + "=" + c.value.dump());
    ExpectError(j, std::string("transcode.") + c.field);
  }
}

TEST(OrchestratorConfigTest, TranscodeSegmentLimitsParse) {
  Json j = FullConfig();
  j["transcode"]["max_segment_bytes"] = 1024;
  j["transcode"]["max_segment_seconds"] = 2.5;
  auto c = Parse(j);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->transcode.max_segment_bytes, 1024);
  EXPECT_EQ(c->transcode.max_segment_seconds, 2.5);
  j["transcode"]["max_segment_bytes"] = (1LL << 31) - 1;
  j["transcode"]["max_segment_seconds"] = 3600;
  c = Parse(j);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->transcode.max_segment_bytes, (1LL << 31) - 1);
  EXPECT_EQ(c->transcode.max_segment_seconds, 3600);
}

TEST(OrchestratorConfigTest, LoadResolvesModelPathsFromConfigFolder) {
  TempDir dir;
  fs::create_directories(dir.path() / "conf");
  const fs::path file = dir.path() / "conf" / "orch.json";
  WriteFile(file, FullConfig().dump(2));
  auto c = LoadOrchestratorConfig(file);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->file, file);
  ASSERT_EQ(c->models.size(), 2u);
  EXPECT_EQ(c->models[0].path, dir.path() / "conf" / "models" / "esrgan.pt");
  EXPECT_EQ(c->models[1].path, fs::path("/abs/tiny.pt"));
}

TEST(OrchestratorConfigTest, LoadErrorsNameTheFile) {
  TempDir dir;
  auto missing = LoadOrchestratorConfig(dir.path() / "nope.json");
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(missing.status().message(), HasSubstr("nope.json"));

  const fs::path file = dir.path() / "orch.json";
  Json j = FullConfig();
  j["models"][1]["instances"] = 0;
  WriteFile(file, j.dump());
  auto bad = LoadOrchestratorConfig(file);
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(bad.status().message(), HasSubstr(file.string()));
  EXPECT_THAT(bad.status().message(), HasSubstr("models[1].instances"));

  WriteFile(file, "{ not json");
  EXPECT_EQ(LoadOrchestratorConfig(file).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(OrchestratorConfigTest, ModelsFromASharedModelsFile) {
  switchyard::testing::TempDir dir;
  switchyard::testing::WriteFile(dir.path() / "models.json", R"({"models": [
      {"id": "m", "pipeline": "llm", "path": "weights/m.pt", "max_batch_size": 8,
       "max_queue_delay_ms": 5, "memory_mb": 300, "options": {"max_tokens": 64}}]})");
  Json j = FullConfig();
  j.erase("models");
  j["models_file"] = "models.json";
  j["memory_budget_mb"] = {{"cpu", 2048}, {"cuda:1", 70000}};
  auto c = ParseOrchestratorConfig(j.dump(), dir.path() / "orch.json");
  ASSERT_TRUE(c.ok()) << c.status();
  ASSERT_EQ(c->models.size(), 1u);
  EXPECT_EQ(c->models_file, dir.path() / "models.json");
  EXPECT_EQ(c->models[0].path, dir.path() / "weights" / "m.pt");
  EXPECT_EQ(c->models[0].max_batch_size, 8);
  EXPECT_EQ(c->models[0].max_queue_delay_ms, 5);
  EXPECT_EQ(c->models[0].memory_mb, 300);
  EXPECT_EQ(c->models[0].options["max_tokens"], 64);
  EXPECT_EQ(c->memory_budget_mb.at("cpu"), 2048);
  EXPECT_EQ(c->memory_budget_mb.at("cuda:1"), 70000);

  // Errors inside the models file name that file and the field.
  switchyard::testing::WriteFile(dir.path() / "bad.json",
                                 R"({"models": [{"id": "m", "pipeline": "llm", "path": "x",
                                    "max_batch_size": 0}]})");
  j["models_file"] = "bad.json";
  auto bad = ParseOrchestratorConfig(j.dump(), dir.path() / "orch.json");
  ASSERT_FALSE(bad.ok());
  EXPECT_THAT(bad.status().message(), HasSubstr("bad.json"));
  EXPECT_THAT(bad.status().message(), HasSubstr("models[0].max_batch_size"));

  j["models_file"] = "missing.json";
  EXPECT_EQ(ParseOrchestratorConfig(j.dump(), dir.path() / "orch.json").status().code(),
            absl::StatusCode::kNotFound);
}

TEST(OrchestratorConfigTest, ModelsAndModelsFileTogetherAreRefused) {
  Json j = FullConfig();
  j["models_file"] = "models.json";
  ExpectError(j, "models_file");
}

TEST(OrchestratorConfigTest, BadMemoryBudgets) {
  for (const char* bad :
       {R"({"gpu": 10})", R"({"cpu": 0})", R"({"cpu": "big"})", R"({"cuda:x": 5})", R"([1, 2])"}) {
    Json j = FullConfig();
    j["memory_budget_mb"] = Json::parse(bad);
    ExpectError(j, "memory_budget_mb");
  }
}

TEST(OrchestratorConfigTest, BatchingAndOptionsAreValidated) {
  Json j = FullConfig();
  j["models"][0]["max_batch_size"] = 0;
  ExpectError(j, "models[0].max_batch_size");
  j = FullConfig();
  j["models"][0]["max_queue_delay_ms"] = -1;
  ExpectError(j, "models[0].max_queue_delay_ms");
  j = FullConfig();
  j["models"][0]["options"] = "fast";
  ExpectError(j, "models[0].options");
  j = FullConfig();
  j["models"][0]["memory_mb"] = -5;
  ExpectError(j, "models[0].memory_mb");
}

}  // namespace
}  // namespace switchyard::orchestrator

namespace switchyard::orchestrator {
namespace {

// The configs the README's quick start runs with must load.
// Issue 18, "Node id takeover": every node left at the default node_id used to be "orchestrator",
// so two of them took each other's registration. The default is now per host and port.
TEST(OrchestratorConfigTest, DefaultNodeIdIsUniquePerHostAndPort) {
  OrchestratorConfig c;
  EXPECT_EQ(DefaultNodeId(c, "gpu-box-1"), "gpu-box-1-50061");  // listen's port
  c.listen = "0.0.0.0:50062";
  EXPECT_EQ(DefaultNodeId(c, "gpu-box-1"), "gpu-box-1-50062");
  EXPECT_EQ(DefaultNodeId(c, "gpu-box-2"), "gpu-box-2-50062");
  c.advertise_address = "10.0.0.5:40000";  // the advertised port wins (NAT, containers)
  EXPECT_EQ(DefaultNodeId(c, "gpu-box-1"), "gpu-box-1-40000");
  // Port 0 is picked at bind time: a random suffix keeps two such nodes apart.
  c.advertise_address = "";
  c.listen = "127.0.0.1:0";
  const std::string a = DefaultNodeId(c, "h"), b = DefaultNodeId(c, "h");
  EXPECT_THAT(a, ::testing::MatchesRegex("h-[0-9a-f]{8}"));
  EXPECT_NE(a, b);
  // This machine's hostname; characters a node id may not hold are dropped.
  c.listen = "127.0.0.1:50061";
  EXPECT_THAT(DefaultNodeId(c), ::testing::EndsWith("-50061"));
  EXPECT_NE(DefaultNodeId(c), "orchestrator");
  EXPECT_EQ(DefaultNodeId(c, "bad host\n"), "badhost-50061");
  EXPECT_EQ(DefaultNodeId(c, " "), "orchestrator-50061");
}

TEST(OrchestratorConfigTest, NodeIdAndAdminToken) {
  Json j = FullConfig();
  j["node_id"] = "has space";
  ExpectError(j, "node_id");
  j["node_id"] = std::string(129, 'n');
  ExpectError(j, "node_id");
  j = FullConfig();
  j["admin_token"] = "t0ken";
  auto c = Parse(j);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->admin_token, "t0ken");
  j["admin_token"] = "";
  ExpectError(j, "admin_token");
  TempDir tmp;
  WriteFile(tmp.path() / "token", "from-file\nignored\n");
  j = FullConfig();
  j["admin_token_file"] = (tmp.path() / "token").string();
  c = Parse(j);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->admin_token, "from-file");
  j["admin_token"] = "both";
  ExpectError(j, "admin_token_file");
  j.erase("admin_token");
  j["admin_token_file"] = (tmp.path() / "missing").string();
  ExpectError(j, "admin_token_file");
}

TEST(OrchestratorConfigTest, IdentityKeyFile) {
  // Default: next to the config file (kFile: /etc/switchyard/orchestrator.json).
  Json j = FullConfig();
  auto c = Parse(j);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->identity_key_file, fs::path(kFile).parent_path() / "node-identity.key");
  j["identity_key_file"] = "keys/node.key";  // relative to the config file
  c = Parse(j);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->identity_key_file, fs::path(kFile).parent_path() / "keys/node.key");
  j["identity_key_file"] = "/var/lib/switchyard/node-identity.key";
  EXPECT_EQ(Parse(j)->identity_key_file, "/var/lib/switchyard/node-identity.key");
  j["identity_key_file"] = "";
  ExpectError(j, "identity_key_file");
  j["identity_key_file"] = 7;
  ExpectError(j, "identity_key_file");
  // No config file (defaults in code): no file, a key in memory.
  auto none = ParseOrchestratorConfig("{}", "");
  ASSERT_TRUE(none.ok()) << none.status();
  EXPECT_TRUE(none->identity_key_file.empty());
}

TEST(ShippedConfigs, OrchestratorJsonsLoad) {
  for (const char* name : {"configs/orchestrator-1.json", "configs/orchestrator-2.json"}) {
    auto c = LoadOrchestratorConfig(std::filesystem::path(SWITCHYARD_SOURCE_DIR) / name);
    EXPECT_TRUE(c.ok()) << name << ": " << c.status();
  }
}

TEST(OrchestratorConfigTest, TestOutputFaultIsReadAndChecked) {
  auto none = Parse(Json::object());
  ASSERT_TRUE(none.ok()) << none.status();
  EXPECT_EQ(none->test_output_fault_rate, 0);
  auto c = Parse({{"test_output_fault", {{"rate", 0.3}, {"seed", 7}}}});
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->test_output_fault_rate, 0.3);
  EXPECT_EQ(c->test_output_fault_seed, 7u);
  ExpectError({{"test_output_fault", {{"rate", 1.5}}}}, "test_output_fault.rate");
  ExpectError({{"test_output_fault", {{"seed", 1}}}}, "test_output_fault.rate");  // required
  ExpectError({{"test_output_fault", {{"rate", 0.1}, {"odds", 1}}}}, "test_output_fault.odds");
}

}  // namespace
}  // namespace switchyard::orchestrator
