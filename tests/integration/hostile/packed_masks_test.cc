// segment-anything-2 between a real gateway and a fake node (support/fake_orchestrator.h): the
// gateway asks nodes for packed float32 masks and prints the Livepeer API's JSON itself
// (gateway/api/packed_masks.h). A node's tensors are hostile input: malformed ones fail the
// attempt on that node with a message naming what is wrong, and the gateway and other clients'
// jobs carry on. Loopback only, every wait bounded.
#include <atomic>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <limits>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <gmock/gmock.h>
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include "absl/strings/str_cat.h"
#include "support/cluster.h"
#include "support/fake_orchestrator.h"
#include "support/media_fixtures.h"

namespace switchyard::testing {
namespace {

namespace fs = std::filesystem;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

v1::FloatTensor Tensor(std::vector<int64_t> shape, const std::vector<float>& values) {
  v1::FloatTensor t;
  for (int64_t d : shape) t.add_shape(d);
  t.mutable_data()->assign(reinterpret_cast<const char*>(values.data()), values.size() * 4);
  return t;
}

// How the fake node answers SegmentAnything2.
enum class Answer { kPacked, kJsonOnly, kShortData, kMismatchedK, kBoth };

class FakeSegmenter final : public FakeOrchestrator {
 public:
  FakeSegmenter(std::string id, Answer answer) : FakeOrchestrator(std::move(id)), answer_(answer) {}
  ~FakeSegmenter() override { Stop(); }

  grpc::Status SegmentAnything2(grpc::ServerContext*, const v1::SegmentAnything2Request* request,
                                v1::MasksResponse* response) override {
    calls_.fetch_add(1);
    if (request->packed_tensors()) asked_packed_.fetch_add(1);
    const float nan = std::numeric_limits<float>::quiet_NaN();
    switch (answer_) {
      case Answer::kPacked:
        *response->mutable_masks_tensor() = Tensor({1, 2, 3}, {0.5f, -1, 2, 0, 1e-7f, nan});
        *response->mutable_scores_tensor() = Tensor({1}, {0.25f});
        *response->mutable_logits_tensor() = Tensor({1, 1, 2}, {-3.5f, 4});
        break;
      case Answer::kJsonOnly:  // a node that does not pack
        response->set_masks("[[[1]]]");
        response->set_scores("[1]");
        response->set_logits("[[[2]]]");
        break;
      case Answer::kShortData: {
        *response->mutable_masks_tensor() = Tensor({1, 2, 3}, {0.5f, -1, 2, 0, 1});  // 5 of 6
        *response->mutable_scores_tensor() = Tensor({1}, {0.25f});
        *response->mutable_logits_tensor() = Tensor({1, 1, 2}, {-3.5f, 4});
        break;
      }
      case Answer::kMismatchedK:
        *response->mutable_masks_tensor() = Tensor({2, 1, 1}, {1, 2});
        *response->mutable_scores_tensor() = Tensor({1}, {0.25f});
        *response->mutable_logits_tensor() = Tensor({2, 1, 1}, {1, 2});
        break;
      case Answer::kBoth:
        response->set_masks("[[[1]]]");
        *response->mutable_masks_tensor() = Tensor({1, 1, 1}, {1});
        *response->mutable_scores_tensor() = Tensor({1}, {1});
        *response->mutable_logits_tensor() = Tensor({1, 1, 1}, {1});
        break;
    }
    response->mutable_job()->set_model_id(request->model_id());
    return grpc::Status::OK;
  }

  int calls() const { return calls_.load(); }
  int asked_packed() const { return asked_packed_.load(); }

 private:
  const Answer answer_;
  std::atomic<int> calls_{0};
  std::atomic<int> asked_packed_{0};
};

class PackedMasksTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(fs::exists(ModelDir() / "esrgan-slim-x2.pt"))
        << "models are not prepared in " << ModelDir() << "; run scripts/prepare-models";
    ClusterOptions options;
    options.orchestrators = 1;
    options.models = {"esrgan-slim-x2"};
    auto st = cluster_.Start(options);
    ASSERT_TRUE(st.ok()) << st << "\n" << cluster_.Logs();
    stub_ = cluster_.GatewayStub();
    png_ = MakeTestImage(tmp_, 3, 2, "png");
  }

  // Registers `node` for segment-anything-2 `model` and waits (bounded) until it is listed.
  void Join(FakeSegmenter& node, const std::string& model) {
    ASSERT_TRUE(node.Serve().ok());
    auto registered = node.Register(cluster_.gateway_address(),
                                    {FakeCapability("segment-anything-2", model, 0, "pixel")});
    ASSERT_TRUE(registered.ok()) << registered << "\n" << cluster_.Logs();
    if (WaitUntilListed(*stub_, node.id(), Scaled(std::chrono::seconds(10)))) return;
    FAIL() << node.id() << " was never listed\n" << cluster_.Logs();
  }

  grpc::Status Segment(const std::string& model, bool packed, v1::MasksResponse* out) {
    v1::SegmentAnything2Request req;
    req.set_model_id(model);
    req.set_image(png_);
    req.add_point_coords(1);
    req.add_point_coords(1);
    req.add_point_labels(1);
    if (packed) req.set_packed_tensors(true);
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + Scaled(std::chrono::seconds(30)));
    return stub_->SegmentAnything2(&ctx, req, out);
  }

  // Another client's job on the real orchestrator still succeeds.
  void ExpectOthersServed() {
    EXPECT_TRUE(cluster_.gateway().Alive());
    v1::UpscaleRequest req;
    req.set_model_id("esrgan-slim-x2");
    req.set_image(png_);
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + Scaled(std::chrono::seconds(30)));
    v1::ImageResponse resp;
    grpc::Status st = stub_->Upscale(&ctx, req, &resp);
    EXPECT_TRUE(st.ok()) << st.error_message() << "\n" << cluster_.Logs();
  }

  TempDir tmp_;
  LocalCluster cluster_;
  std::unique_ptr<v1::Gateway::Stub> stub_;
  std::string png_;
};

// The node is asked for packed tensors whatever the client asked; a client that did not ask gets
// the JSON strings, printed by the gateway (NaN as null, shortest round-trip numbers), and one
// that asked gets the node's tensors as they were sent.
TEST_F(PackedMasksTest, TheGatewayPrintsTheJsonAndPassesPackedTensorsOn) {
  FakeSegmenter node("fake-packer", Answer::kPacked);
  Join(node, "packed-sam");

  v1::MasksResponse json;
  grpc::Status st = Segment("packed-sam", false, &json);
  ASSERT_TRUE(st.ok()) << st.error_message() << "\n" << cluster_.Logs();
  EXPECT_EQ(json.masks(), "[[[0.5,-1,2],[0,1e-07,null]]]");
  EXPECT_EQ(json.scores(), "[0.25]");
  EXPECT_EQ(json.logits(), "[[[-3.5,4]]]");
  EXPECT_FALSE(json.has_masks_tensor() || json.has_scores_tensor() || json.has_logits_tensor());
  EXPECT_EQ(json.job().orchestrator(), "fake-packer");

  v1::MasksResponse packed;
  st = Segment("packed-sam", true, &packed);
  ASSERT_TRUE(st.ok()) << st.error_message();
  EXPECT_TRUE(packed.masks().empty() && packed.scores().empty() && packed.logits().empty());
  EXPECT_THAT(packed.masks_tensor().shape(), ElementsAre(1, 2, 3));
  ASSERT_EQ(packed.masks_tensor().data().size(), 24u);
  float first = 0;
  std::memcpy(&first, packed.masks_tensor().data().data(), 4);
  EXPECT_EQ(first, 0.5f);
  EXPECT_THAT(packed.logits_tensor().shape(), ElementsAre(1, 1, 2));

  EXPECT_EQ(node.calls(), 2);
  EXPECT_EQ(node.asked_packed(), 2);
}

// A node that answers JSON although asked for tensors (one that does not pack): its strings are
// passed on as they are, to both kinds of client.
TEST_F(PackedMasksTest, ANodeThatDoesNotPackIsPassedOnAsJson) {
  FakeSegmenter node("fake-json", Answer::kJsonOnly);
  Join(node, "json-sam");
  for (bool packed : {false, true}) {
    v1::MasksResponse resp;
    grpc::Status st = Segment("json-sam", packed, &resp);
    ASSERT_TRUE(st.ok()) << st.error_message() << "\n" << cluster_.Logs();
    EXPECT_EQ(resp.masks(), "[[[1]]]");
    EXPECT_EQ(resp.logits(), "[[[2]]]");
    EXPECT_FALSE(resp.has_masks_tensor());
  }
}

// Malformed tensors (bytes that do not fill the shape, masks and scores disagreeing on K, both
// forms at once) fail the attempt as the node's fault, named in the error, never crash or hang
// the gateway, and other clients are served.
TEST_F(PackedMasksTest, MalformedTensorsFailTheNodeWithAClearError) {
  struct Case {
    const char* id;
    Answer answer;
    const char* message;
  };
  const Case cases[] = {
      {"fake-short", Answer::kShortData, "masks_tensor holds 20 bytes for 6 float32 values"},
      {"fake-k", Answer::kMismatchedK, "disagree on the number of masks (2, 1, 2"},
      {"fake-both", Answer::kBoth, "both JSON strings and packed tensors"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.id);
    FakeSegmenter node(c.id, c.answer);
    const std::string model = absl::StrCat(c.id, "-sam");
    Join(node, model);
    v1::MasksResponse resp;
    grpc::Status st = Segment(model, false, &resp);
    EXPECT_EQ(st.error_code(), grpc::StatusCode::UNAVAILABLE) << st.error_message();
    EXPECT_THAT(st.error_message(), HasSubstr(absl::StrCat(c.id, " answered a malformed result")));
    EXPECT_THAT(st.error_message(), HasSubstr(c.message));
    // Asked for packed tensors itself, the client gets no malformed ones either (the node may be
    // ejected by now: then the error says so instead).
    v1::MasksResponse packed;
    st = Segment(model, true, &packed);
    EXPECT_FALSE(st.ok());
    EXPECT_FALSE(packed.has_masks_tensor());
    EXPECT_GE(node.calls(), 1);
    ExpectOthersServed();
  }
}

}  // namespace
}  // namespace switchyard::testing
