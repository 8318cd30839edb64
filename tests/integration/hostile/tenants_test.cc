// Hostile clients against streams, sessions, ids and KServe limits (issue 18, helper "tenants"):
// with API keys configured, one key cannot continue, reset or close another key's transcode
// stream by naming its stream id; bad first segments and idle streams of one key cannot pin a
// node's session slots; ModelInfer is held to the model's element limit; request and stream ids
// are 128-bit. Each attack goes to a real cluster on loopback, checks the daemons are alive, the
// answer is the documented error, and another client's job still succeeds.
#include <gmock/gmock.h>
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <chrono>
#include <cstring>
#include <filesystem>
#include <memory>
#include <regex>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "inference/open_inference_grpc.grpc.pb.h"
#include "support/cluster.h"
#include "support/media_fixtures.h"
#include "support/tiny_models.h"
#include "switchyard/v1/gateway.grpc.pb.h"

namespace switchyard::testing {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;
using Stream = grpc::ClientReaderWriter<v1::TranscodeRequest, v1::TranscodeStreamResponse>;

// A new key and its entry, made by the operators' tool (`switchyard-gateway --new-api-key`).
nlohmann::json NewKey(const std::string& id, std::string* key) {
  std::string out;
  const int rc = RunCommand(
      absl::StrCat(BinaryPath("switchyard-gateway").string(), " --new-api-key ", id), &out);
  EXPECT_EQ(rc, 0) << out;
  nlohmann::json entry;
  for (absl::string_view line : absl::StrSplit(out, '\n')) {
    if (absl::ConsumePrefix(&line, "key: ")) *key = std::string(line);
    if (absl::ConsumePrefix(&line, "entry: ")) entry = nlohmann::json::parse(line, nullptr, false);
  }
  EXPECT_TRUE(entry.is_object() && absl::StartsWith(*key, "sy_")) << out;
  if (!entry.is_object()) return nlohmann::json::object();
  // No per-key concurrency or rate limits: the tests hold several calls open at once.
  entry.update({{"max_concurrent", 0}, {"rate_per_second", 0}});
  return entry;
}

std::unique_ptr<grpc::ClientContext> Ctx(const std::string& key,
                                         std::chrono::seconds timeout = std::chrono::seconds(30)) {
  auto ctx = std::make_unique<grpc::ClientContext>();
  ctx->set_deadline(std::chrono::system_clock::now() + Scaled(timeout));
  ctx->AddMetadata("authorization", absl::StrCat("Bearer ", key));
  return ctx;
}

v1::TranscodeRequest Segment(const std::string& data, const std::string& stream_id, int height) {
  v1::TranscodeRequest req;
  req.set_segment(data);
  req.set_stream_id(stream_id);
  if (height > 0) {
    auto* r = req.add_renditions();
    r->set_height(height);
    r->set_bitrate_bps(200000);
    r->set_preset("ultrafast");
  }
  return req;
}

std::string RawFloats(int64_t n) { return std::string(static_cast<size_t>(n) * 4, '\0'); }

bool IsHex128(const std::string& id) { return std::regex_match(id, std::regex("[0-9a-f]{32}")); }

constexpr int kCapacity = 4;  // the node's transcode slots; a key may hold half (the default)
// Sessions idle this long close (scaled: sanitizer runs are slower, and a test's own streams
// must not idle out while it runs).
std::chrono::milliseconds IdleTimeout() { return Scaled(std::chrono::milliseconds(5000)); }

class TenantsTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new TempDir();
    alice_ = new std::string();
    bob_ = new std::string();
    nlohmann::json keys = {{"keys", {NewKey("alice", alice_), NewKey("bob", bob_)}}};
    WriteFile(dir_->path() / "keys.json", keys.dump());
    SaveScriptModule(dir_->path() / "pair.pt", R"(
def forward(self, x, y):
    return (x + y, x * 2)
)");
    ClusterOptions options;
    options.orchestrators = 1;  // every stream on one node, so its slots can be counted
    options.models = {};
    options.transcode_capacity = kCapacity;
    options.extra_models = {nlohmann::json{
        {"id", "kpair"},
        {"pipeline", "upscale"},  // default 512 x 512 pixels: 1048576 ModelInfer elements
        {"path", (dir_->path() / "pair.pt").string()},
        {"warm", true},
        {"device", "cpu"},
        {"warmup_size", 0}}};
    // Unary streams cannot be ended by the client: they idle out, between tests too.
    options.orchestrator_config = {
        {"transcode",
         {{"capacity", kCapacity}, {"session_idle_timeout_ms", IdleTimeout().count()}}}};
    options.gateway_config = {{"api_keys_file", (dir_->path() / "keys.json").string()}};
    options.api_key = *alice_;
    cluster_ = new LocalCluster();
    start_ = new absl::Status(cluster_->Start(options));
    segment_ = new std::string();
    if (start_->ok()) {
      SegmentSpec spec;
      spec.width = 160;
      spec.height = 90;
      spec.seconds = 0.5;
      *segment_ = MakeTestSegment(*dir_, spec);
    }
  }
  static void TearDownTestSuite() {
    delete cluster_;
    delete start_;
    delete segment_;
    delete alice_;
    delete bob_;
    delete dir_;
  }

  void SetUp() override {
    ASSERT_TRUE(start_->ok()) << *start_;
    ASSERT_FALSE(segment_->empty());
    stub_ = cluster_->GatewayStub();
    // Each test starts with every slot free: the streams of the one before have idled out.
    ASSERT_TRUE(WaitInUse(0, IdleTimeout() + std::chrono::seconds(5))) << "in use: " << InUse();
  }

  void ExpectAlive() {
    EXPECT_TRUE(cluster_->gateway().Alive()) << cluster_->Logs();
    EXPECT_TRUE(cluster_->orchestrator(0).Alive()) << cluster_->Logs();
  }

  // Transcode slots in use on the node, as the gateway lists them (-1 if not listed).
  int InUse() {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(2));
    ctx.AddMetadata("authorization", absl::StrCat("Bearer ", *alice_));
    v1::ListCapabilitiesRequest req;
    req.set_pipeline("transcode");
    v1::ListCapabilitiesResponse resp;
    if (!stub_->ListCapabilities(&ctx, req, &resp).ok()) return -1;
    for (const auto& o : resp.offers()) return o.in_use();
    return -1;
  }
  bool WaitInUse(int n, std::chrono::milliseconds bound = std::chrono::seconds(5)) {
    const auto end = std::chrono::steady_clock::now() + Scaled(bound);
    while (std::chrono::steady_clock::now() < end) {
      if (InUse() == n) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    return false;
  }
  // True when the count stays `n` for `span` (the node reports load every 500 ms).
  bool StaysInUse(int n, std::chrono::milliseconds span = std::chrono::milliseconds(1500)) {
    const auto end = std::chrono::steady_clock::now() + span;
    while (std::chrono::steady_clock::now() < end) {
      if (InUse() != n) return false;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    return true;
  }

  // One segment on a unary Transcode call as `key`.
  grpc::Status Transcode(const std::string& key, const v1::TranscodeRequest& req,
                         v1::TranscodeResponse* resp) {
    auto ctx = Ctx(key);
    return stub_->Transcode(ctx.get(), req, resp);
  }

  static TempDir* dir_;
  static std::string* alice_;
  static std::string* bob_;
  static LocalCluster* cluster_;
  static absl::Status* start_;
  static std::string* segment_;
  std::unique_ptr<v1::Gateway::Stub> stub_;
};

TempDir* TenantsTest::dir_ = nullptr;
std::string* TenantsTest::alice_ = nullptr;
std::string* TenantsTest::bob_ = nullptr;
LocalCluster* TenantsTest::cluster_ = nullptr;
absl::Status* TenantsTest::start_ = nullptr;
std::string* TenantsTest::segment_ = nullptr;

// Bob names Alice's stream id: his segments run in a session of his own (he gets a fresh
// stream), and ending his stream leaves hers open. Before: sessions and affinity were keyed by
// stream id alone, so Bob's segment joined (and re-laddered) Alice's session, and ending his
// stream closed hers on the node.
TEST_F(TenantsTest, AnotherKeyCannotContinueOrCloseAStream) {
  auto alice_ctx = Ctx(*alice_, std::chrono::seconds(60));
  std::unique_ptr<Stream> alice = stub_->TranscodeStream(alice_ctx.get());
  ASSERT_TRUE(alice->Write(Segment(*segment_, "shared-live", 60)));
  v1::TranscodeStreamResponse a0;
  ASSERT_TRUE(alice->Read(&a0)) << cluster_->Logs();
  ASSERT_EQ(a0.code(), 0) << a0.error();
  EXPECT_TRUE(IsHex128(a0.result().job().request_id())) << a0.result().job().request_id();
  ASSERT_TRUE(WaitInUse(1));

  // Close: Bob opens a stream of that id, sends a bad segment, and ends it. His failed first
  // segment holds no slot, and the end of his stream is not the end of Alice's.
  {
    auto ctx = Ctx(*bob_);
    std::unique_ptr<Stream> bob = stub_->TranscodeStream(ctx.get());
    ASSERT_TRUE(bob->Write(Segment("not a video segment", "shared-live", 30)));
    v1::TranscodeStreamResponse b0;
    ASSERT_TRUE(bob->Read(&b0));
    EXPECT_EQ(b0.code(), grpc::StatusCode::INVALID_ARGUMENT) << b0.error();
    ASSERT_TRUE(bob->WritesDone());
    EXPECT_TRUE(bob->Finish().ok());
  }
  EXPECT_TRUE(WaitInUse(1) && StaysInUse(1))
      << "Alice's session was closed by Bob's stream (in use " << InUse() << ")";

  // Continue: Bob's segment under that id runs with his ladder in a second session.
  v1::TranscodeResponse b1;
  grpc::Status st = Transcode(*bob_, Segment(*segment_, "shared-live", 30), &b1);
  ASSERT_TRUE(st.ok()) << st.error_message();
  ASSERT_EQ(b1.renditions_size(), 1);
  EXPECT_EQ(b1.renditions(0).height(), 30);
  EXPECT_TRUE(WaitInUse(2)) << "Bob's segment ran in Alice's session (in use " << InUse() << ")";

  // Alice's stream goes on with her ladder.
  ASSERT_TRUE(alice->Write(Segment(*segment_, "", 0)));
  v1::TranscodeStreamResponse a1;
  ASSERT_TRUE(alice->Read(&a1));
  ASSERT_EQ(a1.code(), 0) << a1.error();
  ASSERT_EQ(a1.result().renditions_size(), 1);
  EXPECT_EQ(a1.result().renditions(0).height(), 60);
  ASSERT_TRUE(alice->WritesDone());
  EXPECT_TRUE(alice->Finish().ok());

  // Bob's unary stream is his to end (it idles out); Alice's ended with her call.
  EXPECT_TRUE(WaitInUse(1));
  ExpectAlive();
}

// A key's streams are capped per node (transcode.max_sessions_per_key, half the capacity by
// default): one more is refused at once with RESOURCE_EXHAUSTED naming the limit, not queued
// until its deadline, and another key still gets a stream. Before: one key could hold every
// slot of every node with idle streams for their idle timeout.
TEST_F(TenantsTest, StreamsPerKeyAreCappedWithAClearError) {
  std::vector<std::string> opened;
  for (int i = 0; i < kCapacity / 2; ++i) {
    v1::TranscodeResponse resp;
    const std::string id = absl::StrCat("alice-cap-", i);
    grpc::Status st = Transcode(*alice_, Segment(*segment_, id, 60), &resp);
    ASSERT_TRUE(st.ok()) << st.error_message();
    opened.push_back(id);
  }
  const auto start = std::chrono::steady_clock::now();
  v1::TranscodeResponse over;
  grpc::Status st = Transcode(*alice_, Segment(*segment_, "alice-cap-over", 60), &over);
  const auto took = std::chrono::steady_clock::now() - start;
  EXPECT_EQ(st.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << st.error_message();
  EXPECT_THAT(st.error_message(), HasSubstr("max_sessions_per_key"));
  EXPECT_THAT(st.error_message(), HasSubstr("'alice'"));
  EXPECT_LT(took, Scaled(std::chrono::seconds(10))) << "the refusal waited in the queue";

  // Alice's open streams go on, and Bob (another key) still gets one.
  v1::TranscodeResponse more;
  EXPECT_TRUE(Transcode(*alice_, Segment(*segment_, opened[0], 60), &more).ok());
  v1::TranscodeResponse bob;
  st = Transcode(*bob_, Segment(*segment_, "bob-after-cap", 60), &bob);
  EXPECT_TRUE(st.ok()) << st.error_message();
  ExpectAlive();
}

// A stream whose first segment fails gives its slot back at once. Before: it held the slot for
// the idle timeout (30 s), so a client sending bad first segments pinned every slot.
TEST_F(TenantsTest, ABadFirstSegmentHoldsNoSlot) {
  // Alice holds a stream meanwhile: the count must stay at her one slot.
  v1::TranscodeResponse alice;
  ASSERT_TRUE(Transcode(*alice_, Segment(*segment_, "alice-steady", 60), &alice).ok());
  ASSERT_TRUE(WaitInUse(1));
  const int before = 1;
  for (int i = 0; i < 3; ++i) {
    v1::TranscodeResponse resp;
    grpc::Status st =
        Transcode(*bob_, Segment("not a video segment", absl::StrCat("bob-bad-", i), 60), &resp);
    EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << st.error_message();
  }
  // Each bad segment holds a slot while it runs; the node's load report may still show that for
  // a moment. Then the count must settle at Alice's one slot and stay there.
  EXPECT_TRUE(WaitInUse(before) && StaysInUse(before))
      << "failed first segments hold slots (in use " << InUse() << ", was " << before << ")";
  // Alice's stream goes on.
  EXPECT_TRUE(Transcode(*alice_, Segment(*segment_, "alice-steady", 60), &alice).ok());
  ExpectAlive();
}

// Ids other clients may see are 128-bit hex from a CSPRNG, not 64-bit mt19937_64 outputs.
TEST_F(TenantsTest, RequestAndStreamIdsAre128BitHex) {
  auto ctx = Ctx(*bob_);
  std::unique_ptr<Stream> stream = stub_->TranscodeStream(ctx.get());
  ASSERT_TRUE(stream->Write(Segment(*segment_, "", 60)));  // no stream id: the gateway makes one
  v1::TranscodeStreamResponse r;
  ASSERT_TRUE(stream->Read(&r));
  ASSERT_EQ(r.code(), 0) << r.error();
  ASSERT_TRUE(absl::StartsWith(r.stream_id(), "stream-")) << r.stream_id();
  EXPECT_TRUE(IsHex128(r.stream_id().substr(7))) << r.stream_id();
  EXPECT_TRUE(IsHex128(r.result().job().request_id())) << r.result().job().request_id();
  ASSERT_TRUE(stream->WritesDone());
  EXPECT_TRUE(stream->Finish().ok());
  v1::TranscodeResponse one_off;
  ASSERT_TRUE(Transcode(*alice_, Segment(*segment_, "", 60), &one_off).ok());
  EXPECT_TRUE(IsHex128(one_off.job().request_id())) << one_off.job().request_id();
  EXPECT_NE(one_off.job().request_id(), r.result().job().request_id());
  ExpectAlive();
}

// ModelInfer is held to the model's element limit before anything runs (INVALID_ARGUMENT naming
// the input, its size and the limit); a normal call still succeeds. Before: any size the message
// limit let through ran, whatever the model's pixel limit.
TEST_F(TenantsTest, OversizedModelInferIsRefusedWhileANormalOneSucceeds) {
  auto kserve = inference::GRPCInferenceService::NewStub(
      grpc::CreateChannel(cluster_->gateway_address(), grpc::InsecureChannelCredentials()));
  auto request = [](int64_t n) {
    inference::ModelInferRequest req;
    req.set_model_name("kpair");
    for (const char* name : {"x", "y"}) {
      auto* in = req.add_inputs();
      in->set_name(name);
      in->set_datatype("FP32");
      in->add_shape(n);
      req.add_raw_input_contents(RawFloats(n));
    }
    return req;
  };
  inference::ModelInferResponse resp;
  auto ctx = Ctx(*bob_);
  grpc::Status st = kserve->ModelInfer(ctx.get(), request(600000), &resp);  // 1.2M > 1048576
  EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << st.error_message();
  EXPECT_THAT(st.error_message(), HasSubstr("input 'y'"));
  EXPECT_THAT(st.error_message(), HasSubstr("600000 elements"));
  EXPECT_THAT(st.error_message(), HasSubstr("at most 1048576"));

  inference::ModelInferResponse ok;
  auto ok_ctx = Ctx(*alice_);
  st = kserve->ModelInfer(ok_ctx.get(), request(4), &ok);
  EXPECT_TRUE(st.ok()) << st.error_message();
  EXPECT_EQ(ok.outputs_size(), 2);
  ExpectAlive();
}

}  // namespace
}  // namespace switchyard::testing
