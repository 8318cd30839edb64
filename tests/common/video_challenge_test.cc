// The video challenge's shared parts (common/media/video_challenge.h): the node's answer with the
// software codecs (what test_video_challenge_software runs; the NVDEC/NVENC path has not run on
// a GPU in these tests), the gateway's judgement of encoded answers, and the limits a node puts
// on requests from whoever reaches its port.
#include "common/media/video_challenge.h"

#include <gtest/gtest.h>

#include <string>

#include "absl/strings/match.h"
#include "common/media/ffmpeg_util.h"

namespace switchyard::media {
namespace {

node::v1::VideoChallengeRequest Request(const std::string& seed) {
  node::v1::VideoChallengeRequest r;
  r.set_seed(seed);
  auto h264 = EncodeVideoChallengeClip(seed, "libx264", 128, 96, 6, 1);
  EXPECT_TRUE(h264.ok()) << h264.status();
  r.set_h264(h264.ok() ? *h264 : "");
  r.set_encode_frames(6);
  r.set_encode_width(128);
  r.set_encode_height(96);
  return r;
}

TEST(VideoChallengeTest, FramesDependOnTheSeedAndAreDeterministic) {
  AvFramePtr a(av_frame_alloc()), b(av_frame_alloc());
  for (AVFrame* f : {a.get(), b.get()}) {
    f->format = AV_PIX_FMT_YUV420P;
    f->width = 64;
    f->height = 64;
    ASSERT_GE(av_frame_get_buffer(f, 0), 0);
  }
  FillVideoChallengeFrame(std::string(16, 'a'), 3, a.get());
  FillVideoChallengeFrame(std::string(16, 'a'), 3, b.get());
  EXPECT_EQ(*VideoChallengeFrameDigest(*a), *VideoChallengeFrameDigest(*b));
  FillVideoChallengeFrame(std::string(16, 'b'), 3, b.get());
  EXPECT_NE(*VideoChallengeFrameDigest(*a), *VideoChallengeFrameDigest(*b));
  FillVideoChallengeFrame(std::string(16, 'a'), 4, b.get());
  EXPECT_NE(*VideoChallengeFrameDigest(*a), *VideoChallengeFrameDigest(*b));
}

TEST(VideoChallengeTest, TheSoftwareAnswerMatchesTheGatewaysDigestsAndPsnr) {
  const std::string seed(32, 's');
  const node::v1::VideoChallengeRequest request = Request(seed);
  auto answer = AnswerVideoChallenge(request, /*software=*/true);
  ASSERT_TRUE(answer.ok()) << answer.status();
  auto expected = VideoChallengeDigests(request.h264(), AV_CODEC_ID_H264, false, {});
  ASSERT_TRUE(expected.ok()) << expected.status();
  ASSERT_EQ(expected->size(), 6u);
  ASSERT_EQ(answer->h264_digests_size(), 6);
  for (int i = 0; i < 6; ++i) EXPECT_EQ(answer->h264_digests(i), (*expected)[i]) << i;
  const EncodedAnswerCheck check =
      CheckVideoChallengeEncoding(seed, {128, 96, 6}, answer->encoded_h264());
  EXPECT_TRUE(check.ok) << check.problem;
  EXPECT_EQ(check.frames, 6);
  EXPECT_GE(check.psnr_db, kVideoChallengeMinPsnrDb);
  std::printf("VIDEO-CHALLENGE: libx264 answer %zu bytes, %.1f dB\n", answer->encoded_h264().size(),
              check.psnr_db);
  // Another seed's frames, however well encoded, are far below the threshold.
  const EncodedAnswerCheck other =
      CheckVideoChallengeEncoding(std::string(32, 't'), {128, 96, 6}, answer->encoded_h264());
  EXPECT_FALSE(other.ok);
  EXPECT_LT(other.psnr_db, kVideoChallengeMinPsnrDb - 5) << other.psnr_db;
  // HEVC decodes to the digests the gateway computes too.
  auto hevc = EncodeVideoChallengeClip(seed, "libx265", 128, 96, 6, 1);
  ASSERT_TRUE(hevc.ok()) << hevc.status();
  node::v1::VideoChallengeRequest hr;
  hr.set_seed(seed);
  hr.set_hevc(*hevc);
  auto hanswer = AnswerVideoChallenge(hr, true);
  ASSERT_TRUE(hanswer.ok()) << hanswer.status();
  auto hexpected = VideoChallengeDigests(*hevc, AV_CODEC_ID_HEVC, false, {});
  ASSERT_TRUE(hexpected.ok());
  ASSERT_EQ(hanswer->hevc_digests_size(), 6);
  for (int i = 0; i < 6; ++i) EXPECT_EQ(hanswer->hevc_digests(i), (*hexpected)[i]) << i;
}

TEST(VideoChallengeTest, BadEncodedAnswersAreJudgedWrong) {
  const std::string seed(32, 's');
  auto good = EncodeVideoChallengeClip(seed, "libx264", 128, 96, 6, 1);
  ASSERT_TRUE(good.ok());
  const VideoChallengeShape shape{128, 96, 6};
  EXPECT_TRUE(CheckVideoChallengeEncoding(seed, shape, *good).ok);
  const auto problem = [&](const std::string& bitstream, const VideoChallengeShape& s) {
    const EncodedAnswerCheck c = CheckVideoChallengeEncoding(seed, s, bitstream);
    EXPECT_FALSE(c.ok);
    return c.problem;
  };
  EXPECT_EQ(problem("", shape), "no encoded stream");
  EXPECT_TRUE(absl::StrContains(problem(good->substr(0, good->size() / 2), shape), "frames"));
  std::string garbage(good->size(), '\0');
  for (size_t i = 0; i < garbage.size(); ++i) garbage[i] = static_cast<char>(i * 131 + 7);
  EXPECT_FALSE(problem(garbage, shape).empty());
  EXPECT_TRUE(absl::StrContains(
      problem(std::string(kVideoChallengeMaxAnswerBytes + 1, '\0'), shape), "at most 1048576"));
  // More frames than asked for, or of another size.
  EXPECT_TRUE(absl::StrContains(problem(*good, {128, 96, 5}), "more than 5 frames"))
      << problem(*good, {128, 96, 5});
  EXPECT_FALSE(problem(*good, {96, 96, 6}).empty());
  auto big = EncodeVideoChallengeClip(seed, "libx264", 256, 192, 2, 1);
  ASSERT_TRUE(big.ok());
  EXPECT_FALSE(problem(*big, {128, 96, 2}).empty());
}

TEST(VideoChallengeTest, HostileRequestsAreRefusedNamingTheField) {
  const auto refused = [](const node::v1::VideoChallengeRequest& r, const char* field) {
    const absl::Status st = ValidateVideoChallenge(r);
    EXPECT_TRUE(absl::IsInvalidArgument(st)) << st;
    EXPECT_TRUE(absl::StrContains(st.message(), field)) << st;
  };
  node::v1::VideoChallengeRequest ok;
  ok.set_seed(std::string(16, 'a'));
  ok.set_encode_frames(4);
  ok.set_encode_width(64);
  ok.set_encode_height(64);
  EXPECT_TRUE(ValidateVideoChallenge(ok).ok());
  auto r = ok;
  r.set_seed("short");
  refused(r, "seed");
  r = ok;
  r.set_seed(std::string(65, 'a'));
  refused(r, "seed");
  r = ok;
  r.set_h264(std::string(kVideoChallengeMaxClipBytes + 1, '\0'));
  refused(r, "h264");
  r = ok;
  r.set_hevc(std::string(kVideoChallengeMaxClipBytes + 1, '\0'));
  refused(r, "hevc");
  r = ok;
  r.set_encode_frames(kVideoChallengeMaxFrames + 1);
  refused(r, "encode_frames");
  r = ok;
  r.set_encode_frames(-1);
  refused(r, "encode_frames");
  for (const auto& [w, h] : {std::pair{4096, 64}, {64, 4096}, {65, 64}, {62, 64}, {0, 0}}) {
    r = ok;
    r.set_encode_width(w);
    r.set_encode_height(h);
    refused(r, "encode_width");
  }
  r = ok;
  r.set_encode_frames(0);
  refused(r, "nothing");
  // A clip that is not a video: INVALID_ARGUMENT, not a crash.
  r = ok;
  r.set_encode_frames(0);
  r.set_h264(std::string(1000, '\x01'));
  auto answer = AnswerVideoChallenge(r, true);
  EXPECT_FALSE(answer.ok());
  // A NVDEC answer on a machine without a CUDA device fails (FAILED_PRECONDITION) rather than
  // decoding in software (this machine's case when it has no NVIDIA driver).
  node::v1::VideoChallengeRequest d = Request(std::string(32, 'g'));
  d.set_encode_frames(0);
  auto gpu = AnswerVideoChallenge(d, /*software=*/false);
  if (!gpu.ok()) {
    EXPECT_TRUE(absl::IsFailedPrecondition(gpu.status())) << gpu.status();
  } else {
    std::printf("VIDEO-CHALLENGE: answered on %s (a CUDA device is present)\n",
                gpu->device().c_str());
  }
}

}  // namespace
}  // namespace switchyard::media
