// Live transcoding streams through the gateway: affinity, failover, session slots.
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <chrono>
#include <set>
#include <string>
#include <thread>

#include <nlohmann/json.hpp>

#include "common/media/segmenter.h"
#include "support/cluster.h"
#include "support/media_fixtures.h"
#include "switchyard/v1/gateway.grpc.pb.h"

namespace switchyard::testing {
namespace {

using Stream = grpc::ClientReaderWriter<v1::TranscodeRequest, v1::TranscodeStreamResponse>;

std::string SmallSegment(const TempDir& dir) {
  SegmentSpec spec;
  spec.width = 160;
  spec.height = 90;
  spec.seconds = 0.5;
  return MakeTestSegment(dir, spec);
}

v1::TranscodeRequest Segment(const std::string& data, bool with_ladder) {
  v1::TranscodeRequest req;
  req.set_segment(data);
  if (with_ladder) {
    auto* r = req.add_renditions();
    r->set_height(60);
    r->set_bitrate_bps(200000);
    r->set_preset("ultrafast");
  }
  return req;
}

// In use of the transcode capability on `node`, as the gateway lists it (-1 if not listed).
int TranscodeInUse(v1::Gateway::Stub& stub, const std::string& node) {
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(2));
  v1::ListCapabilitiesRequest req;
  req.set_pipeline("transcode");
  v1::ListCapabilitiesResponse resp;
  if (!stub.ListCapabilities(&ctx, req, &resp).ok()) return -1;
  for (const auto& o : resp.offers()) {
    if (o.orchestrator() == node) return o.in_use();
  }
  return -1;
}

bool WaitInUse(v1::Gateway::Stub& stub, const std::string& node, int n) {
  for (int i = 0; i < 300; ++i) {
    if (TranscodeInUse(stub, node) == n) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return false;
}

class TranscodeStreamTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ClusterOptions options;
    options.orchestrators = 2;
    options.models = {};
    auto st = cluster_.Start(options);
    ASSERT_TRUE(st.ok()) << st;
    stub_ = cluster_.GatewayStub();
    segment_ = SmallSegment(tmp_);
    ASSERT_FALSE(segment_.empty());
  }

  TempDir tmp_;
  LocalCluster cluster_;
  std::unique_ptr<v1::Gateway::Stub> stub_;
  std::string segment_;
};

// Consecutive segments of one generated stream (continuing timestamps), cut at its keyframes.
std::vector<std::string> StreamSegments(const TempDir& dir, int count) {
  SegmentSpec spec;
  spec.width = 160;
  spec.height = 90;
  spec.seconds = 0.5 * count;
  spec.gop_seconds = 0.5;
  const auto path = dir.path() / "stream.ts";
  WriteFile(path, MakeTestSegment(dir, spec));
  std::vector<std::string> segments;
  auto st = media::SplitIntoSegments(path.string(), 0.5,
                                     [&](std::string segment, const media::SegmentInfo&) {
                                       segments.push_back(std::move(segment));
                                       return absl::OkStatus();
                                     });
  EXPECT_TRUE(st.ok()) << st;
  return segments;
}

TEST_F(TranscodeStreamTest, SegmentsStayOnOneNodeInOrderAndTheSessionClosesAtTheEnd) {
  const std::vector<std::string> segments = StreamSegments(tmp_, 4);
  ASSERT_EQ(segments.size(), 4u);
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
  std::unique_ptr<Stream> stream = stub_->TranscodeStream(&ctx);
  std::set<std::string> nodes;
  std::string stream_id;
  std::string node;
  for (int i = 0; i < 4; ++i) {
    ASSERT_TRUE(stream->Write(Segment(segments[i], i == 0)));
    v1::TranscodeStreamResponse resp;
    ASSERT_TRUE(stream->Read(&resp)) << cluster_.Logs();
    EXPECT_EQ(resp.code(), 0) << resp.error();
    EXPECT_EQ(resp.sequence(), i);
    ASSERT_EQ(resp.result().renditions_size(), 1);
    EXPECT_EQ(resp.result().renditions(0).height(), 60);
    EXPECT_EQ(resp.result().renditions(0).frames(), 15);  // 0.5 s at 30 fps, none dropped
    if (i == 0) {
      stream_id = resp.stream_id();
      node = resp.result().job().orchestrator();
      // The stream's session holds a slot on its node between segments.
      EXPECT_TRUE(WaitInUse(*stub_, node, 1));
    }
    EXPECT_EQ(resp.stream_id(), stream_id);
    nodes.insert(resp.result().job().orchestrator());
  }
  EXPECT_FALSE(stream_id.empty());
  EXPECT_EQ(nodes.size(), 1u) << "a stream's segments went to several nodes";

  // A bad segment is answered in the stream, which goes on.
  ASSERT_TRUE(stream->Write(Segment("not a video segment", false)));
  v1::TranscodeStreamResponse bad;
  ASSERT_TRUE(stream->Read(&bad));
  EXPECT_EQ(bad.code(), grpc::StatusCode::INVALID_ARGUMENT) << bad.error();
  EXPECT_FALSE(bad.error().empty());
  ASSERT_TRUE(stream->Write(Segment(StreamSegments(tmp_, 6).back(), false)));
  v1::TranscodeStreamResponse after;
  ASSERT_TRUE(stream->Read(&after));
  EXPECT_EQ(after.code(), 0) << after.error();

  ASSERT_TRUE(stream->WritesDone());
  v1::TranscodeStreamResponse extra;
  EXPECT_FALSE(stream->Read(&extra));
  auto st = stream->Finish();
  EXPECT_TRUE(st.ok()) << st.error_message();
  // The gateway closed the session on the node: its slot is free again.
  EXPECT_TRUE(WaitInUse(*stub_, node, 0)) << cluster_.Logs();
}

TEST_F(TranscodeStreamTest, AStreamMovesToAnotherNodeWhenItsNodeDies) {
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
  std::unique_ptr<Stream> stream = stub_->TranscodeStream(&ctx);
  ASSERT_TRUE(stream->Write(Segment(segment_, true)));
  v1::TranscodeStreamResponse first;
  ASSERT_TRUE(stream->Read(&first));
  ASSERT_EQ(first.code(), 0) << first.error();
  const std::string home = first.result().job().orchestrator();
  ASSERT_TRUE(home == "orch-1" || home == "orch-2") << home;
  cluster_.orchestrator(home == "orch-1" ? 0 : 1).Kill();

  // Every later segment still succeeds, now on the other node, and stays there.
  for (int i = 1; i < 4; ++i) {
    ASSERT_TRUE(stream->Write(Segment(segment_, false)));
    v1::TranscodeStreamResponse resp;
    ASSERT_TRUE(stream->Read(&resp));
    EXPECT_EQ(resp.code(), 0) << resp.error() << cluster_.Logs();
    EXPECT_EQ(resp.sequence(), i);
    EXPECT_NE(resp.result().job().orchestrator(), home);
  }
  ASSERT_TRUE(stream->WritesDone());
  EXPECT_TRUE(stream->Finish().ok());
}

TEST_F(TranscodeStreamTest, UnarySegmentsWithAStreamIdKeepAffinity) {
  std::set<std::string> nodes;
  for (int i = 0; i < 4; ++i) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
    v1::TranscodeRequest req = Segment(segment_, true);
    req.set_stream_id("camera-7");
    req.set_sequence(i);
    v1::TranscodeResponse resp;
    auto st = stub_->Transcode(&ctx, req, &resp);
    ASSERT_TRUE(st.ok()) << st.error_message();
    nodes.insert(resp.job().orchestrator());
  }
  EXPECT_EQ(nodes.size(), 1u);
  // Too long a stream id is refused before routing.
  grpc::ClientContext ctx;
  v1::TranscodeRequest req = Segment(segment_, true);
  req.set_stream_id(std::string(200, 'x'));
  v1::TranscodeResponse resp;
  EXPECT_EQ(stub_->Transcode(&ctx, req, &resp).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
}

TEST_F(TranscodeStreamTest, IntraOnlyRenditionsAreAllKeyframesThroughTheGateway) {
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
  v1::TranscodeRequest req = Segment(segment_, true);
  req.mutable_renditions(0)->set_intra_only(true);
  v1::TranscodeResponse resp;
  auto st = stub_->Transcode(&ctx, req, &resp);
  ASSERT_TRUE(st.ok()) << st.error_message();
  ASSERT_EQ(resp.renditions_size(), 1);
  EXPECT_TRUE(resp.renditions(0).rendition().intra_only());
  auto frames = ProbeFrames(tmp_, resp.renditions(0).data(), "ts");
  ASSERT_EQ(frames.size(), 15u);
  for (const auto& f : frames) EXPECT_TRUE(f.key_frame) << f.pts_time;
}

TEST_F(TranscodeStreamTest, AudioIsReencodedToAacThroughTheGateway) {
  SegmentSpec spec;
  spec.width = 160;
  spec.height = 90;
  spec.seconds = 1;
  spec.audio = true;
  spec.audio_codec = "mp2";
  v1::TranscodeRequest req = Segment(MakeTestSegment(tmp_, spec), true);
  req.set_audio_codec("aac");
  req.set_audio_bitrate_bps(64'000);
  for (const char* container : {"mpegts", "mp4"}) {
    req.set_container(container);
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
    v1::TranscodeResponse resp;
    auto st = stub_->Transcode(&ctx, req, &resp);
    ASSERT_TRUE(st.ok()) << container << ": " << st.error_message();
    ASSERT_EQ(resp.renditions_size(), 1);
    const std::string ext = std::string(container) == "mp4" ? "mp4" : "ts";
    const std::filesystem::path out = tmp_.path() / ("aac." + ext);
    WriteFile(out, resp.renditions(0).data());
    std::string log;
    ASSERT_EQ(switchyard::testing::RunCommand(
                  "ffprobe -v error -select_streams a:0 -show_entries stream=codec_name -of csv=p=0 " +
                      out.string(),
                  &log),
              0)
        << log;
    EXPECT_EQ(log.substr(0, 3), "aac") << container << ": " << log;
  }
  req.set_audio_codec("vorbis");
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
  v1::TranscodeResponse resp;
  auto st = stub_->Transcode(&ctx, req, &resp);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(st.error_message().find("audio_codec"), std::string::npos) << st.error_message();
}

TEST_F(TranscodeStreamTest, AFirstMessageWithoutRenditionsEndsTheStream) {
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
  std::unique_ptr<Stream> stream = stub_->TranscodeStream(&ctx);
  stream->Write(Segment(segment_, false));
  v1::TranscodeStreamResponse resp;
  EXPECT_FALSE(stream->Read(&resp));
  auto st = stream->Finish();
  EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(st.error_message().find("renditions"), std::string::npos) << st.error_message();
}

TEST_F(TranscodeStreamTest, TheCliTranscodesAWholeFileThroughAStream) {
  // 5 s at 30 fps with a keyframe every second, in MP4: cut into 2 s segments at 0, 2 and 4 s.
  SegmentSpec spec;
  spec.width = 160;
  spec.height = 90;
  spec.seconds = 5;
  spec.gop_seconds = 1;
  spec.audio = true;
  spec.container = "mp4";
  const std::filesystem::path input = tmp_.path() / "movie.mp4";
  WriteFile(input, MakeTestSegment(tmp_, spec));
  const std::filesystem::path out_dir = tmp_.path() / "out";
  std::string log;
  const int rc =
      RunCommand(BinaryPath("switchyard").string() + " --gateway " + cluster_.gateway_address() +
                     " --timeout 120 --json transcode-file --in " + input.string() + " --out " +
                     out_dir.string() + " --rendition small=0x60:200k --rendition 0x44:100k" +
                     " --segment-seconds 2 --preset ultrafast --audio aac --audio-bitrate 64000",
                 &log);
  ASSERT_EQ(rc, 0) << log << cluster_.Logs();
  auto json = nlohmann::json::parse(log, nullptr, false);
  ASSERT_FALSE(json.is_discarded()) << log;
  EXPECT_EQ(json["segments"], 3);
  EXPECT_EQ(json["input_frames"], 150);
  ASSERT_EQ(json["renditions"].size(), 2u);
  EXPECT_EQ(json["orchestrators"].size(), 1u);  // one stream, one node
  for (const auto& r : json["renditions"]) {
    EXPECT_EQ(r["frames"], 150);
    const std::string data = ReadFile(r["path"].get<std::string>());
    // The reassembled file decodes as one video with every frame.
    ProbeResult probe = ProbeVideo(tmp_, data, "ts");
    ASSERT_TRUE(probe.ok) << probe.error;
    EXPECT_EQ(probe.frames, 150);
    EXPECT_EQ(probe.height, r["height"].get<int>());
    // --audio aac: the input's AAC re-encoded, and still there in every segment.
    EXPECT_GT(ProbePacketDts(tmp_, data, "ts", "a:0").size(), 200u);
  }
  EXPECT_TRUE(std::filesystem::exists(out_dir / "small.ts"));
  EXPECT_TRUE(std::filesystem::exists(out_dir / "44p.ts"));

  // A file that is not a video is a usage error, and nothing is written.
  const std::filesystem::path junk = tmp_.path() / "junk.mp4";
  WriteFile(junk, "this is not a video");
  const int bad =
      RunCommand(BinaryPath("switchyard").string() + " --gateway " + cluster_.gateway_address() +
                     " transcode-file --in " + junk.string() + " --out " +
                     (tmp_.path() / "out2").string() + " --rendition 0x60:200k",
                 &log);
  EXPECT_EQ(bad, 2) << log;
  EXPECT_NE(log.find("junk.mp4"), std::string::npos) << log;
}

}  // namespace
}  // namespace switchyard::testing
