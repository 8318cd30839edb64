// The audio and text pipelines' jobs: llm, text-to-speech (audio_text_jobs.cc).
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "cli/cli_commands.h"
#include "cli_test_fixture.h"

namespace switchyard::cli {
namespace {

using ::testing::HasSubstr;
using ::testing::StartsWith;

TEST_F(CliTest, LlmStreamsTokensAndBuildsTheConversation) {
  EXPECT_EQ(Run({"llm", "--model", "m", "--system", "be brief", "--message", "user=hi", "--message",
                 "assistant=hello", "--prompt", "again", "--temperature", "0"}),
            kExitOk)
      << err_.str();
  EXPECT_EQ(out_.str(), "Hello\n");
  EXPECT_THAT(err_.str(), HasSubstr("7 prompt + 2 completion tokens, finish stop"));
  const v1::LLMRequest request = gateway_.last_llm();
  ASSERT_EQ(request.messages_size(), 4);
  EXPECT_EQ(request.messages(0).role(), "system");
  EXPECT_EQ(request.messages(1).content(), "hi");
  EXPECT_EQ(request.messages(2).role(), "assistant");
  EXPECT_EQ(request.messages(3).role(), "user");
  EXPECT_EQ(request.messages(3).content(), "again");
  EXPECT_TRUE(request.has_temperature());
  EXPECT_FALSE(request.has_max_tokens());

  EXPECT_EQ(Run({"--json", "llm", "--model", "m", "--prompt", "p"}), kExitOk);
  const auto json = nlohmann::json::parse(out_.str());
  EXPECT_EQ(json["text"], "Hello");
  EXPECT_EQ(json["finish_reason"], "stop");
  EXPECT_EQ(json["usage"]["total_tokens"], 9);
  EXPECT_EQ(json["messages"], 3);
  EXPECT_FALSE(gateway_.last_llm().has_temperature());

  // A stream that fails midway: what came is printed, then the error, exit 1.
  gateway_.set_llm_error(grpc::Status(grpc::StatusCode::UNAVAILABLE, "node lost"));
  EXPECT_EQ(Run({"llm", "--model", "m", "--prompt", "p"}), kExitRpcError);
  EXPECT_EQ(out_.str(), "Hel\n");
  EXPECT_THAT(err_.str(), StartsWith("error: UNAVAILABLE: node lost\n"));
}

TEST_F(CliTest, TextToSpeechWritesTheWavAndDescribesIt) {
  EXPECT_EQ(Run({"text-to-speech", "--model", "tts", "--text", "hi", "--out", Path("s.wav")}),
            kExitOk)
      << err_.str();
  EXPECT_EQ(ReadAll(Path("s.wav")).size(), 16044u);
  EXPECT_EQ(out_.str(), "wrote " + Path("s.wav") +
                            " (16044 bytes, audio/wav, 0.50 s, 16000 Hz, 1 channel)\n"
                            "text-to-speech with tts on orch-1 in 812 ms (attempts 1)\n");
  EXPECT_EQ(
      Run({"--json", "text-to-speech", "--model", "tts", "--text", "hi", "--out", Path("s.wav")}),
      kExitOk);
  const auto json = nlohmann::json::parse(out_.str());
  EXPECT_EQ(json["sample_rate"], 16000);
  EXPECT_EQ(json["channels"], 1);
  EXPECT_DOUBLE_EQ(json["duration_seconds"].get<double>(), 0.5);
  EXPECT_EQ(json["job"]["model_id"], "tts");
}

}  // namespace
}  // namespace switchyard::cli
