// RunCli (cli_commands.cc): help, usage errors and exit codes of every command, request ids.
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "cli/cli_commands.h"
#include "cli_test_fixture.h"

namespace switchyard::cli {
namespace {

using ::testing::HasSubstr;
using ::testing::StartsWith;

TEST(StatusCodeNameTest, NamesCodes) {
  EXPECT_EQ(StatusCodeName(0), "OK");
  EXPECT_EQ(StatusCodeName(3), "INVALID_ARGUMENT");
  EXPECT_EQ(StatusCodeName(4), "DEADLINE_EXCEEDED");
  EXPECT_EQ(StatusCodeName(8), "RESOURCE_EXHAUSTED");
  EXPECT_EQ(StatusCodeName(12), "UNIMPLEMENTED");
  EXPECT_EQ(StatusCodeName(14), "UNAVAILABLE");
  EXPECT_EQ(StatusCodeName(16), "UNAUTHENTICATED");
  EXPECT_EQ(StatusCodeName(99), "CODE_99");
}

TEST(GenerateRequestIdTest, IsRandomHex) {
  const std::string a = GenerateRequestId();
  const std::string b = GenerateRequestId();
  EXPECT_EQ(a.size(), 32u);
  EXPECT_NE(a, b);
  EXPECT_EQ(a.find_first_not_of("0123456789abcdef"), std::string::npos);
}

TEST_F(CliTest, HelpExitsZero) {
  EXPECT_EQ(Run({"--help"}), kExitOk);
  EXPECT_THAT(out_.str(), HasSubstr("upscale"));
  EXPECT_THAT(out_.str(), HasSubstr("transcode"));
  EXPECT_THAT(out_.str(), HasSubstr("capabilities"));
  EXPECT_EQ(Run({"transcode", "--help"}), kExitOk);
  EXPECT_THAT(out_.str(), HasSubstr("--rendition"));
}

TEST_F(CliTest, UsageErrorsExitTwo) {
  EXPECT_EQ(Run({}), kExitUsage);
  EXPECT_EQ(Run({"frobnicate"}), kExitUsage);
  EXPECT_EQ(Run({"upscale", "--in", "x.png"}), kExitUsage);
  EXPECT_EQ(Run({"--timeout", "-1", "capabilities"}), kExitUsage);
  EXPECT_EQ(gateway_.calls(), 0);
}

TEST_F(CliTest, RpcErrorExitsOne) {
  gateway_.set_error(grpc::Status(grpc::StatusCode::NOT_FOUND, "no orchestrator offers m"));
  WriteAll(Path("in.png"), PngHeader(8, 8));
  EXPECT_EQ(Run({"upscale", "--model", "m", "--in", Path("in.png"), "--out", Path("o.png")}),
            kExitRpcError);
  EXPECT_THAT(err_.str(), StartsWith("error: NOT_FOUND: no orchestrator offers m\n"));
  EXPECT_FALSE(fs::exists(Path("o.png")));
}

TEST_F(CliTest, ClosedPortIsUnavailable) {
  std::ostringstream out;
  std::ostringstream err;
  // Port 1 is privileged and closed on test machines.
  EXPECT_EQ(RunCli({"--gateway", "127.0.0.1:1", "--timeout", "5", "capabilities"}, out, err),
            kExitRpcError);
  EXPECT_THAT(err.str(), StartsWith("error: UNAVAILABLE: "));
  EXPECT_EQ(out.str(), "");
}

TEST_F(CliTest, HelpListsEveryPipeline) {
  EXPECT_EQ(Run({"--help"}), kExitOk);
  for (const char* command :
       {"text-to-image", "image-to-image", "image-to-video", "audio-to-text", "segment-anything-2",
        "llm", "image-to-text", "text-to-speech", "live-video-to-video", "orchestrators"}) {
    EXPECT_THAT(out_.str(), HasSubstr(command));
  }
  EXPECT_EQ(Run({"text-to-image", "--help"}), kExitOk);
  EXPECT_THAT(out_.str(), HasSubstr("--num-images"));
  EXPECT_THAT(out_.str(), HasSubstr("--negative-prompt"));
  EXPECT_EQ(Run({"segment-anything-2", "--help"}), kExitOk);
  EXPECT_THAT(out_.str(), HasSubstr("X,Y[,LABEL]"));
}

TEST_F(CliTest, PipelineUsageErrorsExitTwoWithoutCalling) {
  WriteAll(Path("in.png"), PngHeader(8, 8));
  WriteAll(Path("text.txt"), "hello");
  const std::string in = Path("in.png");
  const std::string out = Path("o.png");
  const std::vector<std::pair<std::vector<std::string>, std::string>> cases = {
      {{"text-to-image", "--model", "m", "--out", out}, "--prompt"},
      {{"text-to-image", "--model", "m", "--prompt", "p", "--out", out, "--width", "0"}, "--width"},
      {{"text-to-image", "--model", "m", "--prompt", "p", "--out", out, "--num-images", "99"},
       "--num-images"},
      {{"text-to-image", "--model", "m", "--prompt", "p", "--out", out, "--loras", "[1]"},
       "--loras must be a JSON object"},
      {{"text-to-image", "--model", "m", "--prompt", "p", "--out", Path("nodir/o.png")},
       "does not exist"},
      {{"image-to-image", "--model", "m", "--prompt", "p", "--in", Path("text.txt"), "--out", out},
       "not a PNG or JPEG"},
      {{"image-to-image", "--model", "m", "--prompt", "p", "--in", in, "--out", out, "--strength",
        "1.5"},
       "--strength"},
      {{"image-to-video", "--model", "m", "--in", Path("missing.png"), "--out", Path("v.mp4")},
       "does not exist"},
      {{"image-to-video", "--model", "m", "--in", in, "--out", Path("v.mp4"), "--fps", "abc"},
       "--fps"},
      {{"audio-to-text", "--model", "m", "--in", Path("missing.wav")}, "input audio"},
      {{"audio-to-text", "--model", "m", "--in", Path("text.txt"), "--timestamps", "char"},
       "--timestamps"},
      {{"segment-anything-2", "--model", "m", "--in", in}, "--point"},
      {{"segment-anything-2", "--model", "m", "--in", in, "--point", "1"}, "invalid --point"},
      {{"segment-anything-2", "--model", "m", "--in", in, "--point", "1,2,5"}, "LABEL"},
      {{"segment-anything-2", "--model", "m", "--in", in, "--box", "4,4,1,1"}, "invalid --box"},
      {{"segment-anything-2", "--model", "m", "--in", in, "--point", "1,1", "--mask-input",
        Path("text.txt")},
       "--mask-input"},
      {{"llm", "--model", "m"}, "--prompt"},
      {{"llm", "--model", "m", "--message", "hi"}, "ROLE=CONTENT"},
      {{"llm", "--model", "m", "--prompt", "p", "--max-tokens", "0"}, "--max-tokens"},
      {{"llm", "--model", "m", "--prompt", "p", "--top-p", "2"}, "--top-p"},
      {{"image-to-text", "--model", "m", "--in", Path("missing.png")}, "does not exist"},
      {{"text-to-speech", "--model", "m", "--text", "hi", "--out", dir_.string()},
       "is a directory"},
      {{"text-to-speech", "--model", "m", "--out", Path("a.wav")}, "--text"},
      {{"image-to-text", "--model", "m", "--image", Path("missing.png")}, "does not exist"},
      {{"live-video-to-video", "--model", "m", "--in", Path("missing.ts"), "--out", Path("o.ts")},
       "does not exist"},
      {{"live-video-to-video", "--model", "m", "--in", Path("text.txt"), "--out", Path("o.ts"),
        "--params", "{"},
       "--params must be a JSON object"},
      {{"live-video-to-video", "--model", "m", "--in", Path("text.txt"), "--out", Path("o.ts"),
        "--stream-id", std::string(129, 's')},
       "--stream-id"},
      {{"live-video-to-video", "--model", "m", "--in", Path("text.txt"), Path("text.txt"), "--out",
        Path("text.txt")},
       "not a directory"},
  };
  for (const auto& [args, message] : cases) {
    EXPECT_EQ(Run(args), kExitUsage) << args[0] << " " << message << "\n" << err_.str();
    EXPECT_THAT(err_.str(), HasSubstr(message)) << args[0];
  }
  EXPECT_EQ(gateway_.calls(), 0);
}

}  // namespace
}  // namespace switchyard::cli
