// The example clients in examples/ against a local cluster. The gRPC ones (Python with Debian's
// python3-grpcio, Node with @grpc/grpc-js) list the capabilities, upscale an image with the real
// ESRGAN-slim x2 model and stream a completion from a tiny LLM; the `openai` package one uses the
// OpenAI-compatible HTTP API. Each exits non-zero on errors.
#include <sys/wait.h>

#include <array>
#include <cstdio>
#include <filesystem>
#include <string>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "absl/strings/str_cat.h"
#include "common/media/image_codec.h"
#include "support/cluster.h"
#include "support/media_fixtures.h"
#include "support/tiny_models.h"

namespace switchyard::testing {
namespace examples {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

fs::path SourceDir() { return fs::path(SWITCHYARD_SOURCE_DIR); }

// Debian's python3-grpcio installs into the system interpreter; a python3 earlier on PATH (a
// virtualenv, pyenv) may not have it, so the system one is preferred.
std::string Python() { return fs::exists("/usr/bin/python3") ? "/usr/bin/python3" : "python3"; }

class ExamplesTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    models_dir_ = new TempDir();
    ClusterOptions options;
    options.orchestrators = 1;
    options.models = {"esrgan-slim-x2"};
    options.extra_models = SaveTinyModels(models_dir_->path());
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
    WriteFile(tmp_.path() / "in.png", MakeTestImage(tmp_, 24, 16, "png"));
  }

  // The example's common arguments: the cluster, a 30 s deadline per call (so the test cannot
  // hang), the upscale and the LLM.
  std::string Args(const fs::path& out) const {
    return absl::StrCat(" --gateway ", cluster_->gateway_address(),
                        " --timeout 30 --upscale-model esrgan-slim-x2 --image ",
                        (tmp_.path() / "in.png").string(), " --out ", out.string(),
                        " --llm-model tiny-llm --prompt hi --max-tokens 100 --temperature 0");
  }

  // Checks what every example prints on success and the image it wrote.
  void ExpectResults(const std::string& log, const fs::path& out) {
    EXPECT_THAT(log, HasSubstr("capabilities (1 orchestrators)"));
    EXPECT_THAT(log, HasSubstr("upscale"));
    EXPECT_THAT(log, HasSubstr("esrgan-slim-x2"));
    EXPECT_THAT(log, HasSubstr("tiny-llm"));
    EXPECT_THAT(log, HasSubstr(absl::StrCat("upscale: ", out.string(), " 48x32 on orch-1")));
    EXPECT_THAT(log, HasSubstr(absl::StrCat("llm: ", kTinyLlmReply, "\n")));
    EXPECT_THAT(log, HasSubstr("completion 23"));
    auto image = media::DecodeImage(ReadFile(out), 1 << 20);
    ASSERT_TRUE(image.ok()) << image.status();
    EXPECT_EQ(image->width, 48);
    EXPECT_EQ(image->height, 32);
  }

  static TempDir* models_dir_;
  static LocalCluster* cluster_;
  static absl::Status* start_status_;
  TempDir tmp_;
};

TempDir* ExamplesTest::models_dir_ = nullptr;
LocalCluster* ExamplesTest::cluster_ = nullptr;
absl::Status* ExamplesTest::start_status_ = nullptr;

TEST_F(ExamplesTest, Python) {
  const std::string client = (SourceDir() / "examples/python/client.py").string();
  std::string log;
  ASSERT_EQ(RunCommand(absl::StrCat(Python(), " -c 'import grpc'"), &log), 0)
      << "python3-grpcio is not installed (scripts/install-deps installs it): " << log;
  const fs::path out = tmp_.path() / "py.png";
  const int rc = RunCommand(absl::StrCat("timeout 120 ", Python(), " ", client, Args(out)), &log);
  ASSERT_EQ(rc, 0) << log << cluster_->Logs();
  ExpectResults(log, out);

  // Errors: an unknown model exits 1 with the gRPC code; a missing input exits 2.
  EXPECT_EQ(RunCommand(absl::StrCat("timeout 120 ", Python(), " ", client, " --gateway ",
                                    cluster_->gateway_address(), " --timeout 30 --llm-model nope"),
                       &log),
            1);
  EXPECT_THAT(log, HasSubstr("error: NOT_FOUND"));
  EXPECT_EQ(
      RunCommand(absl::StrCat("timeout 120 ", Python(), " ", client, " --image /nonexistent.png"),
                 &log),
      2);
  EXPECT_THAT(log, HasSubstr("does not exist"));
}

TEST_F(ExamplesTest, Node) {
  const fs::path dir = SourceDir() / "examples/node";
  if (!fs::exists(dir / "node_modules/@grpc/grpc-js")) {
    // scripts/test runs `npm ci` there, so CI never skips this.
    GTEST_SKIP() << "examples/node/node_modules is missing: run `npm ci` in examples/node "
                    "(scripts/test does)";
  }
  std::string log;
  ASSERT_EQ(RunCommand("node --version", &log), 0) << "node is not installed: " << log;
  const std::string client = (dir / "client.js").string();
  const fs::path out = tmp_.path() / "node.png";
  const int rc = RunCommand(absl::StrCat("timeout 120 node ", client, Args(out)), &log);
  ASSERT_EQ(rc, 0) << log << cluster_->Logs();
  ExpectResults(log, out);

  EXPECT_EQ(RunCommand(absl::StrCat("timeout 120 node ", client, " --gateway ",
                                    cluster_->gateway_address(), " --timeout 30 --llm-model nope"),
                       &log),
            1);
  EXPECT_THAT(log, HasSubstr("error: NOT_FOUND"));
  EXPECT_EQ(
      RunCommand(absl::StrCat("timeout 120 node ", client, " --image /nonexistent.png"), &log), 2);
  EXPECT_THAT(log, HasSubstr("does not exist"));
}

// The official `openai` npm package (pinned in package.json), unchanged, against the gateway's
// OpenAI-compatible HTTP API: models, a chat completion in one piece and streamed with usage, a
// text completion (needs the orchestrator's LLMRequest.prompt) and an APIError for an unknown
// model (docs/openai-api.md).
TEST_F(ExamplesTest, NodeOpenAiPackage) {
  const fs::path dir = SourceDir() / "examples/node";
  if (!fs::exists(dir / "node_modules/openai")) {
    // scripts/test runs `npm ci` there, so CI never skips this.
    GTEST_SKIP() << "examples/node/node_modules is missing: run `npm ci` in examples/node "
                    "(scripts/test does)";
  }
  std::string log;
  ASSERT_EQ(RunCommand("node --version", &log), 0) << "node is not installed: " << log;
  const std::string client = (dir / "openai_client.js").string();
  const std::string base_url =
      absl::StrCat("http://127.0.0.1:", cluster_->gateway().http_port(), "/v1");
  const int rc = RunCommand(absl::StrCat("timeout 120 node ", client, " --base-url ", base_url,
                                         " --model tiny-llm --prompt hi --max-tokens 100 "
                                         "--timeout 30"),
                            &log);
  ASSERT_EQ(rc, 0) << log << cluster_->Logs();
  EXPECT_THAT(log, HasSubstr("models: tiny-llm\n"));
  EXPECT_THAT(log, HasSubstr(absl::StrCat("chat: ", kTinyLlmReply, "\n")));
  EXPECT_THAT(log, HasSubstr("chat finish_reason: stop"));
  EXPECT_THAT(log, HasSubstr("chat usage: prompt 26 completion 23 total 49"));
  EXPECT_THAT(log, HasSubstr(absl::StrCat("chat stream: ", kTinyLlmReply, " (")));
  EXPECT_THAT(log, HasSubstr("chat stream usage: prompt 26 completion 23 total 49"));
  // A raw prompt is not templated: the tiny model counts "Hi" as the start of its reply and
  // continues from there.
  EXPECT_THAT(log,
              HasSubstr(absl::StrCat("completion: ", std::string(kTinyLlmReply).substr(2), "\n")));
  EXPECT_THAT(log, HasSubstr("error case: 404 model_not_found"));
  EXPECT_THAT(log, HasSubstr("no-such-model"));

  // Bad usage exits 2; an unreachable gateway 1 with the library's error.
  EXPECT_EQ(RunCommand(absl::StrCat("timeout 120 node ", client), &log), 2);
  EXPECT_THAT(log, HasSubstr("--model is required"));
  EXPECT_EQ(RunCommand(absl::StrCat("timeout 120 node ", client,
                                    " --base-url http://127.0.0.1:1/v1 --model m --timeout 10"),
                       &log),
            1);
  EXPECT_THAT(log, HasSubstr("error"));
}

}  // namespace
}  // namespace examples
}  // namespace switchyard::testing
