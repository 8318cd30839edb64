#include "orchestrator/pipelines/llm_pipeline.h"

#include <atomic>
#include <filesystem>
#include <memory>
#include <string>

#include <gtest/gtest.h>
#include <torch/script.h>

#include "support/media_fixtures.h"
#include "support/tiny_models.h"

namespace switchyard::orchestrator {
namespace {

using ::switchyard::testing::kTinyLlmReply;
using ::switchyard::testing::kTinyLlmSource;
using ::switchyard::testing::SaveScriptModule;
using ::switchyard::testing::TempDir;
using ::switchyard::testing::TinyLlmAttributes;

// The tiny byte-level LLM (support/tiny_models.h) behind a real executor.
class LlmPipelineTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const std::filesystem::path path = dir_.path() / "llm.pt";
    SaveScriptModule(path, kTinyLlmSource, TinyLlmAttributes(0, kTinyLlmReply));
    auto model = runner::TorchModel::Load(path, "cpu");
    ASSERT_TRUE(model.ok()) << model.status();
    auto executor = runner::ModelExecutor::Create(*model, {});
    ASSERT_TRUE(executor.ok()) << executor.status();
    executor_ = std::move(*executor);
    config_.id = "tiny-llm";
    config_.pipeline = "llm";
  }

  RunContext Context(std::function<bool()> is_cancelled = [] { return false; }) {
    return RunContext{executor_.get(), &config_, absl::Now() + absl::Seconds(60),
                      std::move(is_cancelled)};
  }

  static v1::LLMRequest Request() {
    v1::LLMRequest request;
    request.set_model("tiny-llm");
    auto* m = request.add_messages();
    m->set_role("user");
    m->set_content("Hi");
    return request;
  }

  static SamplingParams Greedy(int max_tokens = 256) {
    SamplingParams p;
    p.temperature = 0;
    p.max_tokens = max_tokens;
    return p;
  }

  TempDir dir_;
  std::unique_ptr<runner::ModelExecutor> executor_;
  ModelConfig config_;
};

TEST_F(LlmPipelineTest, StreamsTheReplyAndStopsAtEndOfSequence) {
  std::string text;
  int last_completion = 0;
  auto outcome = GenerateChat(Context(), Request(), LlmOptions(), Greedy(),
                              [&](const std::string& delta, int prompt, int completion) {
                                EXPECT_GT(prompt, 0);
                                EXPECT_EQ(completion, last_completion + 1);
                                last_completion = completion;
                                text += delta;
                                return true;
                              });
  ASSERT_TRUE(outcome.ok()) << outcome.status();
  EXPECT_TRUE(outcome->stopped.ok()) << outcome->stopped;
  EXPECT_EQ(text, kTinyLlmReply);
  EXPECT_EQ(outcome->finish_reason, "stop");
  EXPECT_EQ(outcome->completion_tokens, static_cast<int>(std::string(kTinyLlmReply).size()));
  EXPECT_EQ(outcome->rest, "");
}

TEST_F(LlmPipelineTest, ARawPromptIsEncodedAsIsWithoutTheChatTemplate) {
  v1::LLMRequest raw;
  raw.set_model("tiny-llm");
  raw.set_prompt("ab\n");  // the tiny model replies after the prompt's last newline
  std::string text;
  auto outcome = GenerateChat(Context(), raw, LlmOptions(), Greedy(),
                              [&](const std::string& delta, int prompt, int) {
                                EXPECT_EQ(prompt, 3);  // one token a byte, nothing added
                                text += delta;
                                return true;
                              });
  ASSERT_TRUE(outcome.ok()) << outcome.status();
  EXPECT_EQ(outcome->prompt_tokens, 3);
  EXPECT_EQ(text, kTinyLlmReply);
  auto chat = GenerateChat(Context(), Request(), LlmOptions(), Greedy(),
                           [](const std::string&, int, int) { return true; });
  ASSERT_TRUE(chat.ok()) << chat.status();
  EXPECT_GT(chat->prompt_tokens, 2);  // "Hi" inside the template's roles and markers
}

TEST_F(LlmPipelineTest, MaxTokensEndsWithLength) {
  std::string text;
  auto outcome = GenerateChat(Context(), Request(), LlmOptions(), Greedy(3),
                              [&](const std::string& delta, int, int) {
                                text += delta;
                                return true;
                              });
  ASSERT_TRUE(outcome.ok()) << outcome.status();
  EXPECT_EQ(outcome->finish_reason, "length");
  EXPECT_EQ(outcome->completion_tokens, 3);
  EXPECT_EQ(text, std::string(kTinyLlmReply).substr(0, 3));
}

TEST_F(LlmPipelineTest, AClientGoneOrCancelledStopsTheGeneration) {
  int writes = 0;
  auto gone = GenerateChat(Context(), Request(), LlmOptions(), Greedy(),
                           [&](const std::string&, int, int) { return ++writes < 2; });
  ASSERT_TRUE(gone.ok()) << gone.status();
  EXPECT_EQ(gone->stopped.code(), absl::StatusCode::kCancelled);
  EXPECT_EQ(gone->stopped.message(), "the client went away");
  EXPECT_EQ(writes, 2);

  std::atomic<int> polls{0};
  auto cancelled = GenerateChat(Context([&] { return ++polls > 3; }), Request(), LlmOptions(),
                                Greedy(), [](const std::string&, int, int) { return true; });
  ASSERT_TRUE(cancelled.ok()) << cancelled.status();
  EXPECT_EQ(cancelled->stopped.code(), absl::StatusCode::kCancelled);
  EXPECT_LT(cancelled->completion_tokens, static_cast<int>(std::string(kTinyLlmReply).size()));
}

TEST_F(LlmPipelineTest, APromptPastTheContextIsRefusedBeforeAnyToken) {
  LlmOptions options;
  options.max_context_tokens = 4;
  bool emitted = false;
  auto outcome = GenerateChat(Context(), Request(), options, Greedy(),
                              [&](const std::string&, int, int) { return emitted = true; });
  EXPECT_EQ(outcome.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(outcome.status().message().find("the model's context is 4"), std::string::npos)
      << outcome.status();
  EXPECT_FALSE(emitted);
}

}  // namespace
}  // namespace switchyard::orchestrator
