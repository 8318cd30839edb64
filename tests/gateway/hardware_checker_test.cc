// The gateway's known-answer hardware checks (gateway/membership/hardware_checker.h) against fake
// orchestrators on loopback: an honest one, a slow one claiming a GPU, one answering wrongly, one
// that does not implement the call, one that never answers (the destructor cancels it), one
// answering more than the channel takes, and one refusing as busy; what is shared with the other
// gateways, through an in-memory store.
#include "gateway/membership/hardware_checker.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <map>
#include <memory>
#include <string>
#include <thread>

#include <grpcpp/grpcpp.h>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/hardware_challenge.h"
#include "common/media/video_challenge.h"
#include "common/metrics.h"
#include "gateway/routing/node_health.h"

namespace switchyard::gateway {
namespace {

using node::v1::HardwareChallengeRequest;
using node::v1::HardwareChallengeResponse;

enum class Behaviour {
  kHonest,
  kWrong,
  kSlow,
  kHang,
  kHuge,       // right, with a device name past the channel's 8 MiB
  kBusy,       // refused as a node running another challenge refuses
  kOutOfRoom,  // another RESOURCE_EXHAUSTED of the node's own
};

class FakeNode final : public node::v1::Orchestrator::Service {
 public:
  explicit FakeNode(Behaviour b) : behaviour(b) {}
  grpc::Status HardwareChallenge(grpc::ServerContext* context,
                                 const HardwareChallengeRequest* request,
                                 HardwareChallengeResponse* response) override {
    calls++;
    const Behaviour how = behaviour.load();
    if (how == Behaviour::kBusy) {
      return grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED, kChallengeBusyMessage);
    }
    if (how == Behaviour::kOutOfRoom) {
      return grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED, "out of device memory");
    }
    if (how == Behaviour::kHang) {
      for (int i = 0; i < 3000 && !context->IsCancelled(); ++i) {  // bounded: 30 s
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
      }
      return grpc::Status(grpc::StatusCode::CANCELLED, "gave up");
    }
    if (how == Behaviour::kSlow) std::this_thread::sleep_for(std::chrono::milliseconds(80));
    for (int m = 0; m < request->matrices(); ++m) {
      response->add_digests(ReferenceChallengeDigest(*request, m));
    }
    if (how == Behaviour::kWrong) (*response->mutable_digests(0))[3] ^= 1;
    response->set_device(how == Behaviour::kHuge ? std::string(9 << 20, 'x') : "fake");
    return grpc::Status::OK;
  }
  std::atomic<int> calls{0};
  std::atomic<Behaviour> behaviour;
};

// How a fake node answers the video challenge of its NVDEC/NVENC claims (the compute one it
// answers right). Honest answers come from the node's own code with the software codecs
// (media::AnswerVideoChallenge, as test_video_challenge_software makes a node answer).
enum class Video {
  kHonest,
  kWrongDigest,    // one h264 frame digest off by a bit
  kMissingDigest,  // one hevc frame digest fewer
  kTruncated,      // the encoded stream cut in half
  kGarbage,        // the encoded stream replaced by noise
  kTooBig,         // the encoded stream padded past kVideoChallengeMaxAnswerBytes
  kFewerFrames,    // an honest encoding of one frame fewer
  kOtherSeed,      // an honest encoding of another seed's frames
  kSlow,           // right, after 1600 ms
  kUnimplemented,  // a node older than the call
  kOversized,      // the encoded stream padded past the channel's 8 MiB
  kBusy,           // refused as a node running another challenge refuses
};

class VideoNode final : public node::v1::Orchestrator::Service {
 public:
  explicit VideoNode(Video b) : behaviour_(b) {}
  grpc::Status HardwareChallenge(grpc::ServerContext*, const HardwareChallengeRequest* request,
                                 HardwareChallengeResponse* response) override {
    for (int m = 0; m < request->matrices(); ++m) {
      response->add_digests(ReferenceChallengeDigest(*request, m));
    }
    return grpc::Status::OK;
  }
  grpc::Status VideoChallenge(grpc::ServerContext*, const node::v1::VideoChallengeRequest* request,
                              node::v1::VideoChallengeResponse* response) override {
    calls++;
    if (behaviour_ == Video::kUnimplemented) {
      return grpc::Status(grpc::StatusCode::UNIMPLEMENTED, "unknown method");
    }
    if (behaviour_ == Video::kBusy) {
      return grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED, kChallengeBusyMessage);
    }
    auto answer = media::AnswerVideoChallenge(*request, /*software=*/true);
    if (!answer.ok()) return grpc::Status(grpc::StatusCode::INTERNAL, answer.status().ToString());
    *response = *std::move(answer);
    std::string* encoded = response->mutable_encoded_h264();
    switch (behaviour_) {
      case Video::kWrongDigest:
        if (response->h264_digests_size() > 2) (*response->mutable_h264_digests(2))[0] ^= 1;
        break;
      case Video::kMissingDigest:
        response->mutable_hevc_digests()->RemoveLast();
        break;
      case Video::kTruncated:
        encoded->resize(encoded->size() / 2);
        break;
      case Video::kGarbage:
        for (size_t i = 0; i < encoded->size(); ++i) (*encoded)[i] = static_cast<char>(i * 131 + 7);
        break;
      case Video::kTooBig:
        encoded->resize(media::kVideoChallengeMaxAnswerBytes + 1, '\0');
        break;
      case Video::kOversized:
        encoded->resize(9 << 20, '\0');
        break;
      case Video::kFewerFrames:
      case Video::kOtherSeed: {
        const bool fewer = behaviour_ == Video::kFewerFrames;
        auto other = media::EncodeVideoChallengeClip(
            fewer ? request->seed() : std::string(32, 'x'), "libx264", request->encode_width(),
            request->encode_height(), request->encode_frames() - (fewer ? 1 : 0), 1);
        if (!other.ok()) return grpc::Status(grpc::StatusCode::INTERNAL, "encode");
        *encoded = *std::move(other);
        break;
      }
      case Video::kSlow:
        std::this_thread::sleep_for(std::chrono::milliseconds(1600));
        break;
      default:
        break;
    }
    return grpc::Status::OK;
  }
  std::atomic<int> calls{0};

 private:
  const Video behaviour_;
};

// A loopback server of `service` and a node view of it.
struct Served {
  std::unique_ptr<grpc::Server> server;
  std::shared_ptr<const NodeView> view;
};
Served Serve(grpc::Service* service, const std::string& id, bool claims_gpu,
             const std::vector<std::string>& video_claims = {}) {
  Served s;
  int port = 0;
  grpc::ServerBuilder builder;
  builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
  builder.RegisterService(service);
  s.server = builder.BuildAndStart();
  auto view = std::make_shared<NodeView>();
  view->id = id;
  view->status.set_node_id(id);
  if (claims_gpu) view->status.add_hardware("cuda");
  for (const auto& claim : video_claims) view->status.add_hardware(claim);
  view->connection = std::make_shared<NodeConnection>("127.0.0.1:" + std::to_string(port),
                                                      8 << 20);  // over the video answer limit
  view->stats = std::make_shared<NodeStats>();
  s.view = view;
  return s;
}

// The other gateways' store, in memory: what a checker shares (it reads back none of theirs).
class MemoryFindings final : public SharedHardwareFindings {
 public:
  absl::Status Record(const HardwareFinding& finding, absl::Time) override {
    findings[finding.node] = finding;
    return absl::OkStatus();
  }
  absl::Status Clear(const std::string& node, const std::string&) override {
    findings.erase(node);
    return absl::OkStatus();
  }
  absl::StatusOr<std::vector<HardwareFinding>> Read(absl::Time) override {
    return std::vector<HardwareFinding>();
  }
  std::map<std::string, HardwareFinding> findings;  // by node
};

class HardwareCheckerTest : public ::testing::Test {
 protected:
  // `shared`: the store its findings are shared through (the test calls SyncShared).
  HardwareCheckerPtr Checker(std::vector<std::shared_ptr<const NodeView>> nodes,
                             bool thread = false, SharedHardwareFindings* shared = nullptr) {
    auto snapshot = std::make_shared<Snapshot>();
    snapshot->nodes = std::move(nodes);
    HardwareChecker::Deps deps;
    deps.snapshot = [snapshot] { return snapshot; };
    // The clock, `later_` ahead (the test moves it on to make a retry due).
    deps.now = [this] { return absl::Now() + later_; };
    deps.shared = shared;
    deps.shared_poll = absl::ZeroDuration();
    deps.metrics = &metrics_;
    deps.random = [n = std::make_shared<std::atomic<uint64_t>>(0)] { return (*n)++ * 7919; };
    deps.gpu_matrices = 3;
    deps.gpu_size = 16;
    deps.cpu_matrices = 2;
    deps.cpu_size = 8;
    deps.video = {128, 96, 8};
    VerificationConfig::Hardware options;
    options.gpu_max_ms = 40;
    options.video_max_ms = 1500;
    options.failed_capacity = 2;
    auto checker = HardwareChecker::Create(options, std::move(deps), thread);
    EXPECT_TRUE(checker.ok()) << checker.status();
    return checker.ok() ? *std::move(checker) : nullptr;
  }
  std::string Series(const std::string& node, const std::string& claimed,
                     const std::string& result) {
    return "switchyard_gateway_hardware_checks_total{claimed=\"" + claimed + "\",orchestrator=\"" +
           node + "\",result=\"" + result + "\"} 1";
  }
  Metrics metrics_{"gateway"};
  absl::Duration later_;  // written only while no checker thread runs
};

TEST(JudgeHardwareAnswerTest, VerdictsAndTheSecondChanceOfASlowGpu) {
  const auto fast = absl::Milliseconds(10), slow = absl::Milliseconds(900);
  const auto max = absl::Milliseconds(500);
  auto j = JudgeHardwareAnswer(true, true, true, fast, max, 0);
  EXPECT_EQ(j.verdict, HardwareVerdict::kOk);
  j = JudgeHardwareAnswer(true, true, true, slow, max, 0);
  EXPECT_EQ(j.verdict, HardwareVerdict::kUnchecked);
  EXPECT_TRUE(j.recheck_soon);
  EXPECT_EQ(j.slow_streak, 1);
  j = JudgeHardwareAnswer(true, true, true, slow, max, 1);
  EXPECT_EQ(j.verdict, HardwareVerdict::kTooSlow);
  EXPECT_FALSE(j.recheck_soon);
  EXPECT_EQ(JudgeHardwareAnswer(false, true, true, slow, max, 0).verdict, HardwareVerdict::kOk);
  EXPECT_EQ(JudgeHardwareAnswer(true, true, false, fast, max, 0).verdict, HardwareVerdict::kWrong);
  EXPECT_EQ(JudgeHardwareAnswer(false, false, false, fast, max, 0).verdict,
            HardwareVerdict::kUnanswered);
}

TEST_F(HardwareCheckerTest, HonestNodesAreOkAndRoutedAsAdvertised) {
  FakeNode cpu_node(Behaviour::kHonest), gpu_node(Behaviour::kHonest);
  Served cpu = Serve(&cpu_node, "cpu-node", false), gpu = Serve(&gpu_node, "gpu-node", true);
  auto checker = Checker({cpu.view, gpu.view});
  ASSERT_NE(checker, nullptr);
  EXPECT_EQ(checker->CheckDue(), 2);
  for (const auto& [served, claimed] : {std::pair{&cpu, "cpu"}, std::pair{&gpu, "gpu"}}) {
    auto record = checker->Lookup(served->view->id);
    ASSERT_TRUE(record.has_value());
    EXPECT_EQ(record->verdict, HardwareVerdict::kOk) << record->detail;
    EXPECT_EQ(record->claimed, claimed);
    EXPECT_TRUE(absl::StrContains(record->detail, "routed as advertised")) << record->detail;
    EXPECT_EQ(served->view->stats->capacity_cap(), 0);
    EXPECT_TRUE(absl::StrContains(metrics_.Render(), Series(served->view->id, claimed, "ok")));
  }
  // Not due again before the interval.
  EXPECT_EQ(checker->CheckDue(), 0);
  cpu.server->Shutdown();
  gpu.server->Shutdown();
}

TEST_F(HardwareCheckerTest, ASlowGpuClaimIsCheckedTwiceThenCapped) {
  FakeNode slow_node(Behaviour::kSlow);
  Served slow = Serve(&slow_node, "liar", true);
  auto checker = Checker({slow.view});
  ASSERT_EQ(checker->CheckDue(), 1);
  auto record = checker->Lookup("liar");
  ASSERT_TRUE(record.has_value());
  EXPECT_EQ(record->verdict, HardwareVerdict::kUnchecked) << record->detail;
  EXPECT_EQ(slow.view->stats->capacity_cap(), 0);  // not judged on one answer
  ASSERT_EQ(checker->CheckDue(), 1);               // due again at once
  record = checker->Lookup("liar");
  EXPECT_EQ(record->verdict, HardwareVerdict::kTooSlow) << record->detail;
  EXPECT_TRUE(absl::StrContains(record->detail, "routed as a CPU node: at most 2"))
      << record->detail;
  EXPECT_GE(record->answer_ms, 80);
  EXPECT_EQ(slow.view->stats->capacity_cap(), 2);
  const std::string metrics = metrics_.Render();
  EXPECT_TRUE(absl::StrContains(metrics, Series("liar", "gpu", "retry"))) << metrics;
  EXPECT_TRUE(absl::StrContains(metrics, Series("liar", "gpu", "too_slow"))) << metrics;
  EXPECT_EQ(slow_node.calls.load(), 2);
  slow.server->Shutdown();
}

TEST_F(HardwareCheckerTest, WrongAnswersAndMissingOnesForAGpuClaimAreCapped) {
  FakeNode wrong_node(Behaviour::kWrong);
  node::v1::Orchestrator::Service old_node;  // answers UNIMPLEMENTED
  node::v1::Orchestrator::Service old_cpu_node;
  Served wrong = Serve(&wrong_node, "wrong", false);
  Served old = Serve(&old_node, "old-gpu", true);
  Served old_cpu = Serve(&old_cpu_node, "old-cpu", false);
  auto checker = Checker({wrong.view, old.view, old_cpu.view});
  ASSERT_EQ(checker->CheckDue(), 3);
  auto record = checker->Lookup("wrong");
  EXPECT_EQ(record->verdict, HardwareVerdict::kWrong) << record->detail;
  EXPECT_EQ(wrong.view->stats->capacity_cap(), 2);
  record = checker->Lookup("old-gpu");
  EXPECT_EQ(record->verdict, HardwareVerdict::kUnanswered) << record->detail;
  EXPECT_TRUE(absl::StrContains(record->detail, "UNIMPLEMENTED")) << record->detail;
  EXPECT_EQ(old.view->stats->capacity_cap(), 2);
  // Nothing claimed, nothing to cap: an older node keeps its advertised capacity.
  record = checker->Lookup("old-cpu");
  EXPECT_EQ(record->verdict, HardwareVerdict::kUnanswered) << record->detail;
  EXPECT_EQ(old_cpu.view->stats->capacity_cap(), 0);
  for (auto* s : {&wrong, &old, &old_cpu}) s->server->Shutdown();
}

TEST_F(HardwareCheckerTest, DestructorCancelsAChallengeInFlight) {
  FakeNode hang_node(Behaviour::kHang);
  Served hang = Serve(&hang_node, "stuck", true);
  auto checker = Checker({hang.view}, /*thread=*/true);
  for (int i = 0; i < 500 && hang_node.calls.load() == 0; ++i) {  // bounded: 5 s
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  ASSERT_EQ(hang_node.calls.load(), 1);
  const auto start = std::chrono::steady_clock::now();
  checker.reset();
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(5));
  EXPECT_EQ(hang.view->stats->capacity_cap(), 0);  // no finding from a cancelled check
  hang.server->Shutdown();
}

TEST_F(HardwareCheckerTest, HonestVideoClaimsAreOkAndEachCounted) {
  VideoNode honest(Video::kHonest);
  Served node = Serve(&honest, "video-node", false, {"nvdec-h264", "nvdec-hevc", "nvenc-h264"});
  auto checker = Checker({node.view});
  ASSERT_EQ(checker->CheckDue(), 1);
  auto record = checker->Lookup("video-node");
  ASSERT_TRUE(record.has_value());
  EXPECT_EQ(record->verdict, HardwareVerdict::kOk) << record->detail;
  EXPECT_EQ(record->video,
            (std::vector<std::string>{"nvdec-h264 ok", "nvdec-hevc ok", "nvenc-h264 ok"}))
      << record->detail;
  EXPECT_TRUE(absl::StrContains(record->detail, "nvenc-h264: encoded 8 frames of 128x96 at"))
      << record->detail;
  EXPECT_EQ(node.view->stats->capacity_cap(), 0);
  EXPECT_EQ(honest.calls.load(), 1);
  const std::string metrics = metrics_.Render();
  for (const char* claimed : {"cpu", "nvdec-h264", "nvdec-hevc", "nvenc-h264"}) {
    EXPECT_TRUE(absl::StrContains(metrics, Series("video-node", claimed, "ok"))) << claimed << "\n"
                                                                                 << metrics;
  }
  node.server->Shutdown();
}

TEST_F(HardwareCheckerTest, WrongVideoAnswersFailTheClaimAndCapTheNode) {
  const std::vector<std::string> all = {"nvdec-h264", "nvdec-hevc", "nvenc-h264"};
  struct Case {
    Video behaviour;
    const char* id;
    const char* claim;     // the claim found wrong
    const char* expected;  // in the detail
  };
  const Case cases[] = {
      {Video::kWrongDigest, "wrong-digest", "nvdec-h264", "decoded frame 2 of a 8-frame h264"},
      {Video::kMissingDigest, "missing-digest", "nvdec-hevc", "answered 7 frame digests"},
      {Video::kTruncated, "truncated", "nvenc-h264", "encoded the challenge's frames wrongly"},
      {Video::kGarbage, "garbage", "nvenc-h264", "encoded the challenge's frames wrongly"},
      {Video::kTooBig, "too-big", "nvenc-h264", "bytes (at most 1048576)"},
      {Video::kFewerFrames, "fewer-frames", "nvenc-h264", "7 frames encoded of 8"},
      {Video::kOtherSeed, "other-seed", "nvenc-h264", "dB against the seed's frames"},
  };
  std::vector<std::unique_ptr<VideoNode>> nodes;
  std::vector<Served> served;
  std::vector<std::shared_ptr<const NodeView>> views;
  for (const Case& c : cases) {
    nodes.push_back(std::make_unique<VideoNode>(c.behaviour));
    served.push_back(Serve(nodes.back().get(), c.id, false, all));
    views.push_back(served.back().view);
  }
  auto checker = Checker(views);
  ASSERT_EQ(checker->CheckDue(), static_cast<int>(std::size(cases)));
  const std::string metrics = metrics_.Render();
  for (size_t i = 0; i < std::size(cases); ++i) {
    const Case& c = cases[i];
    auto record = checker->Lookup(c.id);
    ASSERT_TRUE(record.has_value()) << c.id;
    EXPECT_EQ(record->verdict, HardwareVerdict::kWrong) << c.id << ": " << record->detail;
    EXPECT_TRUE(absl::StrContains(record->detail, c.expected)) << c.id << ": " << record->detail;
    EXPECT_TRUE(absl::StrContains(record->detail, "routed as a CPU node: at most 2"))
        << c.id << ": " << record->detail;
    EXPECT_EQ(served[i].view->stats->capacity_cap(), 2) << c.id;
    EXPECT_TRUE(absl::StrContains(metrics, Series(c.id, c.claim, "wrong"))) << c.id;
    // The compute challenge passed: only the video claim failed.
    EXPECT_TRUE(absl::StrContains(metrics, Series(c.id, "cpu", "ok"))) << c.id;
  }
  for (auto& s : served) s.server->Shutdown();
}

TEST_F(HardwareCheckerTest, ASlowOrOlderNodeFailsItsVideoClaims) {
  VideoNode slow(Video::kSlow), old(Video::kUnimplemented);
  Served s = Serve(&slow, "slow-video", false, {"nvdec-h264"});
  Served o = Serve(&old, "old-video", false, {"nvenc-h264"});
  auto checker = Checker({s.view, o.view});
  ASSERT_EQ(checker->CheckDue(), 2);
  auto record = checker->Lookup("slow-video");
  ASSERT_TRUE(record.has_value());
  EXPECT_EQ(record->verdict, HardwareVerdict::kTooSlow) << record->detail;
  EXPECT_TRUE(absl::StrContains(record->detail, "NVDEC/NVENC answers within 1500 ms"))
      << record->detail;
  EXPECT_EQ(s.view->stats->capacity_cap(), 2);
  record = checker->Lookup("old-video");
  ASSERT_TRUE(record.has_value());
  EXPECT_EQ(record->verdict, HardwareVerdict::kUnanswered) << record->detail;
  EXPECT_TRUE(absl::StrContains(record->detail, "UNIMPLEMENTED")) << record->detail;
  EXPECT_EQ(o.view->stats->capacity_cap(), 2);
  const std::string metrics = metrics_.Render();
  EXPECT_TRUE(absl::StrContains(metrics, Series("slow-video", "nvdec-h264", "too_slow")));
  EXPECT_TRUE(absl::StrContains(metrics, Series("old-video", "nvenc-h264", "unanswered")));
  s.server->Shutdown();
  o.server->Shutdown();
}

TEST(ClassifyChallengeStatusTest, TellsTheNodesBusyRefusalFromGrpcsRefusalOfALargeAnswer) {
  using grpc::StatusCode;
  const auto classify = [](StatusCode code, const std::string& message) {
    return ClassifyChallengeStatus(grpc::Status(code, message), 1024);
  };
  EXPECT_EQ(classify(StatusCode::RESOURCE_EXHAUSTED, kChallengeBusyMessage),
            ChallengeRefusal::kBusy);
  EXPECT_EQ(
      classify(StatusCode::RESOURCE_EXHAUSTED, "Received message larger than max (2048 vs. 1024)"),
      ChallengeRefusal::kOversized);
  // The node's refusal of the request, naming its own limit; a malformed one; another
  // RESOURCE_EXHAUSTED; the busy message under another code; ok.
  EXPECT_EQ(
      classify(StatusCode::RESOURCE_EXHAUSTED, "Received message larger than max (2048 vs. 512)"),
      ChallengeRefusal::kOther);
  EXPECT_EQ(
      classify(StatusCode::RESOURCE_EXHAUSTED, "Received message larger than max (x vs. 1024)"),
      ChallengeRefusal::kOther);
  EXPECT_EQ(
      classify(StatusCode::RESOURCE_EXHAUSTED, "Received message larger than max (512 vs. 1024)"),
      ChallengeRefusal::kOther);
  EXPECT_EQ(classify(StatusCode::RESOURCE_EXHAUSTED, "already running"), ChallengeRefusal::kOther);
  EXPECT_EQ(classify(StatusCode::UNAVAILABLE, kChallengeBusyMessage), ChallengeRefusal::kOther);
  EXPECT_EQ(ClassifyChallengeStatus(grpc::Status::OK, 1024), ChallengeRefusal::kOther);
}

// gRPC refuses an answer over the channel's max receive size as RESOURCE_EXHAUSTED, as a busy node
// refuses a challenge: that answer is wrong, capped and shared at once, for either claim.
TEST_F(HardwareCheckerTest, AnAnswerOverTheChannelsLimitIsWrongAndShared) {
  FakeNode gpu_node(Behaviour::kHuge), cpu_node(Behaviour::kHuge);
  Served gpu = Serve(&gpu_node, "huge-gpu", true), cpu = Serve(&cpu_node, "huge-cpu", false);
  MemoryFindings shared;
  auto checker = Checker({gpu.view, cpu.view}, false, &shared);
  ASSERT_EQ(checker->CheckDue(), 2);
  EXPECT_EQ(checker->SyncShared(), 0);
  for (const auto& [served, work] :
       {std::pair{&gpu, "3 products of 16x16"}, std::pair{&cpu, "2 products of 8x8"}}) {
    const std::string& id = served->view->id;
    auto record = checker->Lookup(id);
    ASSERT_TRUE(record.has_value()) << id;
    EXPECT_EQ(record->verdict, HardwareVerdict::kWrong) << record->detail;
    EXPECT_TRUE(absl::StrContains(record->detail, absl::StrCat("answered more than 8388608 bytes "
                                                               "to a challenge of ",
                                                               work)))
        << record->detail;
    EXPECT_EQ(served->view->stats->capacity_cap(), 2) << id;
    ASSERT_EQ(shared.findings.count(id), 1u) << id;
    EXPECT_EQ(shared.findings[id].verdict, "wrong");
    EXPECT_TRUE(absl::StrContains(shared.findings[id].detail, "answered more than 8388608 bytes"))
        << shared.findings[id].detail;
  }
  gpu.server->Shutdown();
  cpu.server->Shutdown();
}

TEST_F(HardwareCheckerTest, AVideoAnswerOverTheChannelsLimitIsWrongAndShared) {
  VideoNode huge(Video::kOversized);
  Served node = Serve(&huge, "huge-video", false, {"nvdec-h264", "nvenc-h264"});
  MemoryFindings shared;
  auto checker = Checker({node.view}, false, &shared);
  ASSERT_EQ(checker->CheckDue(), 1);
  EXPECT_EQ(checker->SyncShared(), 0);
  auto record = checker->Lookup("huge-video");
  ASSERT_TRUE(record.has_value());
  EXPECT_EQ(record->verdict, HardwareVerdict::kWrong) << record->detail;
  EXPECT_EQ(record->video, (std::vector<std::string>{"nvdec-h264 wrong", "nvenc-h264 wrong"}))
      << record->detail;
  EXPECT_TRUE(absl::StrContains(
      record->detail, "nvenc-h264: answered more than 8388608 bytes to the video challenge"))
      << record->detail;
  EXPECT_EQ(node.view->stats->capacity_cap(), 2);
  ASSERT_EQ(shared.findings.count("huge-video"), 1u);
  EXPECT_EQ(shared.findings["huge-video"].verdict, "wrong");
  node.server->Shutdown();
}

// The node's own busy refusal (another gateway's challenge, most likely) caps a GPU claim here
// but is shared only when it refuses kBusyChecksShared checks in a row; an ok ends the finding.
TEST_F(HardwareCheckerTest, ABusyRefusalIsSharedOnlyWhenRepeated) {
  ASSERT_EQ(kBusyChecksShared, 3);
  FakeNode busy_node(Behaviour::kBusy);
  Served busy = Serve(&busy_node, "busy", true);
  MemoryFindings shared;
  auto checker = Checker({busy.view}, false, &shared);
  for (int i = 1; i <= 3; ++i) {
    ASSERT_EQ(checker->CheckDue(), 1) << i;
    EXPECT_EQ(checker->SyncShared(), 0);
    auto record = checker->Lookup("busy");
    ASSERT_TRUE(record.has_value());
    EXPECT_EQ(record->verdict, HardwareVerdict::kUnanswered) << record->detail;
    EXPECT_EQ(record->busy_streak, i);
    EXPECT_EQ(busy.view->stats->capacity_cap(), 2) << i;  // capped here from the first
    // Asked again in 15 to 45 s (drawn: gateways that met at the node part).
    EXPECT_GE(record->next_check - record->checked, absl::Seconds(15)) << i;
    EXPECT_LE(record->next_check - record->checked, absl::Seconds(45)) << i;
    EXPECT_EQ(checker->CheckDue(), 0);  // not before
    if (i < 3) {
      EXPECT_TRUE(shared.findings.empty()) << i;
    } else {
      ASSERT_EQ(shared.findings.count("busy"), 1u);
      EXPECT_EQ(shared.findings["busy"].verdict, "unanswered");
      EXPECT_TRUE(absl::StrContains(shared.findings["busy"].detail,
                                    "refused 3 challenges in a row as busy (RESOURCE_EXHAUSTED)"))
          << shared.findings["busy"].detail;
      EXPECT_TRUE(absl::StrContains(record->detail, "refused 3 challenges in a row as busy"))
          << record->detail;
    }
    later_ += absl::Seconds(46);
  }
  // The node answers: its finding goes, the cap with it.
  busy_node.behaviour = Behaviour::kHonest;
  ASSERT_EQ(checker->CheckDue(), 1);
  EXPECT_EQ(checker->SyncShared(), 0);
  EXPECT_EQ(checker->Lookup("busy")->verdict, HardwareVerdict::kOk);
  EXPECT_EQ(checker->Lookup("busy")->busy_streak, 0);
  EXPECT_TRUE(shared.findings.empty());
  EXPECT_EQ(busy.view->stats->capacity_cap(), 0);
  busy.server->Shutdown();
}

TEST_F(HardwareCheckerTest, AnAnswerBetweenBusyRefusalsStartsTheCountAgain) {
  FakeNode node(Behaviour::kBusy);
  Served served = Serve(&node, "sometimes-busy", true);
  MemoryFindings shared;
  auto checker = Checker({served.view}, false, &shared);
  const auto check = [&](Behaviour b) {
    node.behaviour = b;
    later_ += absl::Hours(1);  // due, whatever the last check drew
    EXPECT_EQ(checker->CheckDue(), 1);
    EXPECT_EQ(checker->SyncShared(), 0);
  };
  check(Behaviour::kBusy);
  check(Behaviour::kBusy);
  check(Behaviour::kHonest);
  EXPECT_EQ(checker->Lookup("sometimes-busy")->busy_streak, 0);
  check(Behaviour::kBusy);
  check(Behaviour::kBusy);
  EXPECT_TRUE(shared.findings.empty());  // two in a row since the answer
  check(Behaviour::kBusy);
  EXPECT_EQ(shared.findings.count("sometimes-busy"), 1u);
  served.server->Shutdown();
}

// Only the node's busy refusal is spared: another RESOURCE_EXHAUSTED is a challenge unanswered,
// shared at once.
TEST_F(HardwareCheckerTest, AnotherResourceExhaustedIsUnansweredAndSharedAtOnce) {
  FakeNode node(Behaviour::kOutOfRoom);
  Served served = Serve(&node, "no-room", true);
  MemoryFindings shared;
  auto checker = Checker({served.view}, false, &shared);
  ASSERT_EQ(checker->CheckDue(), 1);
  EXPECT_EQ(checker->SyncShared(), 0);
  auto record = checker->Lookup("no-room");
  ASSERT_TRUE(record.has_value());
  EXPECT_EQ(record->verdict, HardwareVerdict::kUnanswered) << record->detail;
  EXPECT_EQ(record->busy_streak, 0);
  EXPECT_EQ(served.view->stats->capacity_cap(), 2);
  ASSERT_EQ(shared.findings.count("no-room"), 1u);
  EXPECT_TRUE(absl::StrContains(shared.findings["no-room"].detail,
                                "RESOURCE_EXHAUSTED: out of device memory"))
      << shared.findings["no-room"].detail;
  served.server->Shutdown();
}

// A node that answers the compute challenge but refuses the video one as busy: the same count.
TEST_F(HardwareCheckerTest, BusyVideoRefusalsAreSharedOnlyWhenRepeated) {
  VideoNode busy(Video::kBusy);
  Served node = Serve(&busy, "busy-video", false, {"nvenc-h264"});
  MemoryFindings shared;
  auto checker = Checker({node.view}, false, &shared);
  for (int i = 1; i <= 3; ++i) {
    ASSERT_EQ(checker->CheckDue(), 1) << i;
    EXPECT_EQ(checker->SyncShared(), 0);
    auto record = checker->Lookup("busy-video");
    ASSERT_TRUE(record.has_value());
    EXPECT_EQ(record->verdict, HardwareVerdict::kUnanswered) << record->detail;
    EXPECT_EQ(node.view->stats->capacity_cap(), 2) << i;
    EXPECT_EQ(shared.findings.count("busy-video"), i < 3 ? 0u : 1u) << i;
    later_ += absl::Seconds(46);
  }
  EXPECT_TRUE(absl::StrContains(shared.findings["busy-video"].detail,
                                "refused 3 challenges in a row as busy"))
      << shared.findings["busy-video"].detail;
  node.server->Shutdown();
}

}  // namespace
}  // namespace switchyard::gateway
