// Request limits checked before heavy work (docs/security.md "Limits"), end to end through the
// gateway: prompt lengths (models' max_prompt_chars) over the Livepeer HTTP API, and segment
// duration and size (transcode.max_segment_seconds / max_segment_bytes) over the gateway's gRPC
// Transcode. Each limit refuses with the client-error status and a message naming the value and
// the limit; a request exactly at the limit passes; the node serves the next job.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>
#include <memory>
#include <string>

#include <grpcpp/grpcpp.h>
#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "support/cluster.h"
#include "support/http_client.h"
#include "support/media_fixtures.h"
#include "support/tiny_models.h"

namespace switchyard::testing {
namespace {

namespace fs = std::filesystem;
using Json = nlohmann::json;
using ::testing::HasSubstr;

// pixel value (len(prompt) + seed) % 256 everywhere.
constexpr const char* kTextToImageModel = R"(
def forward(self, prompt: str, negative_prompt: str, seed: int, num_inference_steps: int,
            guidance_scale: float, height: int, width: int, num_images: int):
    return torch.zeros([num_images, 3, height, width]) + float((len(prompt) + seed) % 256)
)";

// An llm whose tokenizer fails: a request that reaches encode() says so.
constexpr const char* kLlmFailingEncodeModel = R"(
def encode(self, text: str) -> List[int]:
    ids: List[int] = []
    assert len(text) < 0, "encode was called"
    return ids

def decode(self, ids: List[int]) -> str:
    return ""

def forward(self, ids: Tensor) -> Tensor:
    return torch.zeros([1, 257])
)";

// n copies of "é": n characters, 2n bytes.
std::string Accented(int n) {
  std::string s;
  for (int i = 0; i < n; ++i) s += "\xc3\xa9";
  return s;
}

// An HTTPError body ({"detail": {"msg": ...}}) with `status` whose message is `text`.
::testing::AssertionResult IsError(const HttpResult& r, int status, const std::string& text) {
  Json j = Json::parse(r.body, nullptr, false);
  if (r.status != status || j.is_discarded() || !j["detail"]["msg"].is_string() ||
      j["detail"]["msg"].get<std::string>().find(text) == std::string::npos) {
    return ::testing::AssertionFailure()
           << "want " << status << " with '" << text << "', got " << r.status << " " << r.body;
  }
  return ::testing::AssertionSuccess();
}

std::unique_ptr<grpc::ClientContext> Context(std::chrono::milliseconds timeout) {
  auto ctx = std::make_unique<grpc::ClientContext>();
  ctx->set_deadline(std::chrono::system_clock::now() + Scaled(timeout));
  return ctx;
}

constexpr int64_t kMaxSegmentBytes = 1 << 20;

class LimitsTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    models_dir_ = new TempDir();
    const fs::path dir = models_dir_->path();
    ClusterOptions options;
    options.orchestrators = 1;
    options.models = {};
    options.orchestrator_config = {
        {"transcode", {{"max_segment_seconds", 1.0}, {"max_segment_bytes", kMaxSegmentBytes}}}};
    auto add = [&](const std::string& id, const std::string& pipeline, const char* source,
                   Json opts, const ModuleAttributes& attrs = nullptr) {
      const fs::path path = dir / (id + ".pt");
      SaveScriptModule(path, source, attrs);
      options.extra_models.push_back({{"id", id},
                                      {"pipeline", pipeline},
                                      {"path", path.string()},
                                      {"warm", true},
                                      {"device", "cpu"},
                                      {"warmup_size", 16},
                                      {"options", std::move(opts)}});
    };
    add("t2i-short", "text-to-image", kTextToImageModel, {{"max_prompt_chars", 16}});
    add("tts-short", "text-to-speech", kTinyTtsSource, {{"max_prompt_chars", 8}},
        TinyTtsAttributes());
    add("llm-short", "llm", kTinyLlmSource, {{"max_prompt_chars", 10}, {"max_tokens", 16}},
        TinyLlmAttributes(0, "ok"));
    add("llm-failing-encode", "llm", kLlmFailingEncodeModel,
        {{"max_prompt_chars", 10}, {"max_tokens", 16}});
    cluster_ = new LocalCluster();
    start_status_ = new absl::Status(cluster_->Start(options));
  }

  static void TearDownTestSuite() {
    delete cluster_;
    cluster_ = nullptr;
    delete models_dir_;
    models_dir_ = nullptr;
    delete start_status_;
    start_status_ = nullptr;
  }

  void SetUp() override {
    ASSERT_TRUE(start_status_->ok()) << *start_status_ << "\n" << cluster_->Logs();
    port_ = cluster_->gateway().http_port();
  }

  HttpResult PostJson(const std::string& path, const Json& body) {
    return HttpRequest(port_, "POST", path, "application/json", body.dump());
  }

  HttpResult TextToImage(const std::string& prompt, const std::string& negative_prompt = "") {
    return PostJson("/text-to-image", {{"model_id", "t2i-short"},
                                       {"prompt", prompt},
                                       {"negative_prompt", negative_prompt},
                                       {"width", 8},
                                       {"height", 8}});
  }

  HttpResult Llm(const std::string& system, const std::string& user, bool stream) {
    return PostJson(
        "/llm",
        {{"model", "llm-short"},
         {"messages",
          {{{"role", "system"}, {"content", system}}, {{"role", "user"}, {"content", user}}}},
         {"temperature", 0},
         {"stream", stream}});
  }

  grpc::Status Transcode(const std::string& segment, v1::TranscodeResponse* response) {
    v1::TranscodeRequest req;
    req.set_segment(segment);
    auto* r = req.add_renditions();
    r->set_width(64);
    r->set_height(48);
    r->set_bitrate_bps(100000);
    r->set_preset("ultrafast");
    auto stub = cluster_->GatewayStub();
    auto ctx = Context(std::chrono::seconds(60));
    return stub->Transcode(ctx.get(), req, response);
  }

  static TempDir* models_dir_;
  static LocalCluster* cluster_;
  static absl::Status* start_status_;
  int port_ = 0;
  TempDir tmp_;
};

TempDir* LimitsTest::models_dir_ = nullptr;
LocalCluster* LimitsTest::cluster_ = nullptr;
absl::Status* LimitsTest::start_status_ = nullptr;

TEST_F(LimitsTest, PromptsOverMaxPromptCharsAre400NamingTheFieldLengthAndLimit) {
  // text-to-image, max_prompt_chars 16: 16 characters (32 bytes) pass.
  HttpResult r = TextToImage(Accented(16), Accented(16));
  ASSERT_EQ(r.status, 200) << r.body << cluster_->Logs();
  EXPECT_TRUE(IsError(TextToImage(Accented(17)), 400,
                      "prompt is 17 characters, more than the model's max_prompt_chars (16)"));
  EXPECT_TRUE(IsError(TextToImage("ok", std::string(20, 'n')), 400,
                      "negative_prompt is 20 characters, more than the model's "
                      "max_prompt_chars (16)"));

  // text-to-speech, max_prompt_chars 8.
  r = PostJson("/text-to-speech", {{"model_id", "tts-short"}, {"text", Accented(8)}});
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_TRUE(
      IsError(PostJson("/text-to-speech", {{"model_id", "tts-short"}, {"text", "123456789"}}), 400,
              "text is 9 characters, more than the model's max_prompt_chars (8)"));

  // llm, max_prompt_chars 10 over all messages' content: 4 + 6 pass, 4 + 7 do not, streaming
  // or not (the refusal comes before any token, so it is a plain HTTP error either way).
  r = Llm(Accented(4), "abcdef", false);
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(Json::parse(r.body)["choices"][0]["message"]["content"], "ok") << r.body;
  const std::string llm_error =
      "messages' content (all messages together) is 11 characters, more than the model's "
      "max_prompt_chars (10)";
  EXPECT_TRUE(IsError(Llm(Accented(4), "abcdefg", false), 400, llm_error));
  EXPECT_TRUE(IsError(Llm(Accented(4), "abcdefg", true), 400, llm_error));

  // Checked before the prompt is tokenized: over the limit, the failing tokenizer is never
  // reached; within it, it is.
  Json failing = {{"model", "llm-failing-encode"},
                  {"messages", {{{"role", "user"}, {"content", "abcdefghijk"}}}},
                  {"temperature", 0}};
  EXPECT_TRUE(IsError(PostJson("/llm", failing), 400,
                      "is 11 characters, more than the model's max_prompt_chars (10)"));
  failing["messages"][0]["content"] = "abcdefghij";
  r = PostJson("/llm", failing);
  EXPECT_NE(r.status, 200) << r.body;
  EXPECT_NE(r.body.find("encode was called"), std::string::npos) << r.body;

  // The node serves the next jobs.
  r = TextToImage("next");
  EXPECT_EQ(r.status, 200) << r.body;
  r = Llm("s", "u", false);
  EXPECT_EQ(r.status, 200) << r.body;
}

TEST_F(LimitsTest, SegmentsOverMaxSegmentSecondsOrBytesAreInvalidArgument) {
  SegmentSpec one_second;
  one_second.width = 64;
  one_second.height = 48;
  one_second.fps = "10";
  one_second.seconds = 1.0;
  one_second.gop_seconds = 1.0;
  const std::string at_limit = MakeTestSegment(tmp_, one_second);
  SegmentSpec two_seconds = one_second;
  two_seconds.seconds = 2.0;
  const std::string too_long = MakeTestSegment(tmp_, two_seconds);
  ASSERT_FALSE(at_limit.empty());
  ASSERT_FALSE(too_long.empty());

  v1::TranscodeResponse resp;
  grpc::Status st = Transcode(at_limit, &resp);
  ASSERT_TRUE(st.ok()) << st.error_message() << cluster_->Logs();
  EXPECT_EQ(resp.input_frames(), 10);

  st = Transcode(too_long, &resp);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << st.error_message();
  EXPECT_THAT(st.error_message(),
              HasSubstr("segment: 2.000 s of video, more than the limit of 1 s"));

  // The 1 s segment padded with MPEG-TS null packets to just over max_segment_bytes: still 1 s
  // of video, refused on its size.
  std::string padded = at_limit;
  std::string null_packet(188, '\xff');
  null_packet[0] = '\x47';
  null_packet[1] = '\x1f';
  null_packet[2] = '\xff';
  null_packet[3] = '\x10';
  while (static_cast<int64_t>(padded.size()) <= kMaxSegmentBytes) padded += null_packet;
  st = Transcode(padded, &resp);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << st.error_message();
  EXPECT_THAT(st.error_message(),
              HasSubstr(absl::StrCat("segment: ", padded.size(), " bytes, more than the limit of ",
                                     kMaxSegmentBytes)));

  // The node transcodes the next segment.
  st = Transcode(at_limit, &resp);
  ASSERT_TRUE(st.ok()) << st.error_message();
  EXPECT_EQ(resp.input_frames(), 10);
  ASSERT_EQ(resp.renditions_size(), 1);
  EXPECT_EQ(resp.renditions(0).frames(), 10);
}

}  // namespace
}  // namespace switchyard::testing
