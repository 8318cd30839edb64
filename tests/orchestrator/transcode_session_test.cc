#include "orchestrator/serving/transcode_session.h"

#include <algorithm>
#include <chrono>
#include <string>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "support/media_fixtures.h"

extern "C" {
#include <libavcodec/avcodec.h>
#include <libavformat/avformat.h>
}

namespace switchyard::orchestrator {
namespace {

using ::switchyard::testing::Demux;
using ::switchyard::testing::Demuxed;
using ::switchyard::testing::ReadFile;
using ::switchyard::testing::RunCommand;
using ::switchyard::testing::TempDir;
using ::switchyard::testing::TestRendition;
using ::testing::HasSubstr;

RenditionSpec Spec(int width, int height, int fps_num = 0, int fps_den = 0) {
  return TestRendition(width, height, 200'000, fps_num, fps_den);
}

// One rendition's outputs over a stream: each must demux with increasing DTS, start with a
// keyframe and hold its reported frame count; and across them DTS and PTS keep increasing.
class Timeline {
 public:
  void Add(const RenditionOutput& out, const std::string& what) {
    if (out.frames == 0 && out.data.empty()) return;  // nothing at all (every frame overlapped)
    Demuxed d = Demux(out.data);
    EXPECT_EQ(d.error, "") << what;
    if (!d.audio_dts.empty()) {
      if (!audio_dts_.empty()) {
        EXPECT_GT(d.audio_dts.front(), audio_dts_.back())
            << what << ": audio DTS went back across segments";
      }
      audio_dts_.insert(audio_dts_.end(), d.audio_dts.begin(), d.audio_dts.end());
    }
    EXPECT_EQ(static_cast<int64_t>(d.video_dts.size()), out.frames) << what;
    if (!d.video_key.empty()) {
      EXPECT_TRUE(d.video_key[0]) << what;
    }
    if (out.frames == 0) return;
    if (!dts_.empty()) {
      EXPECT_GT(d.video_dts.front(), dts_.back()) << what << ": DTS went back across segments";
      EXPECT_GT(*std::min_element(d.video_pts.begin(), d.video_pts.end()), max_pts_)
          << what << ": PTS went back across segments";
    }
    dts_.insert(dts_.end(), d.video_dts.begin(), d.video_dts.end());
    max_pts_ = std::max(max_pts_, *std::max_element(d.video_pts.begin(), d.video_pts.end()));
  }

 private:
  std::vector<double> dts_;
  std::vector<double> audio_dts_;
  double max_pts_ = -1e9;
};

double FirstPts(const RenditionOutput& out) {
  Demuxed d = Demux(out.data);
  return d.video_pts.empty() ? -1 : *std::min_element(d.video_pts.begin(), d.video_pts.end());
}

class TranscodeSessionTest : public ::testing::Test {
 protected:
  // A stream of `seconds` at 30 fps with keyframes every second, starting at `offset` seconds,
  // cut into 1 s segments of `format` ("mpegts" or "mp4"); `extra` adds ffmpeg output options.
  std::vector<std::string> Stream(int width, int height, double seconds, bool audio,
                                  const std::string& format, double offset = 0,
                                  const std::string& extra = "-preset ultrafast",
                                  double segment_seconds = 1, double keyframe_seconds = 1,
                                  const std::string& fps = "30") {
    const int id = counter_++;
    const auto whole = dir_.path() / ("whole" + std::to_string(id) + ".ts");
    std::string cmd =
        "ffmpeg -nostdin -loglevel error -y -f lavfi -i testsrc2=size=" + std::to_string(width) +
        "x" + std::to_string(height) + ":rate=" + fps;
    if (audio) cmd += " -f lavfi -i sine=frequency=440:sample_rate=48000";
    cmd += " -t " + std::to_string(seconds) + " -c:v libx264 " + extra +
           " -pix_fmt yuv420p -force_key_frames 'expr:gte(t,n_forced*" +
           std::to_string(keyframe_seconds) + ")'";
    if (audio) cmd += " -c:a aac -b:a 64k";
    cmd += " -output_ts_offset " + std::to_string(offset) +
           " -muxdelay 0 -muxpreload 0 -f mpegts " + whole.string();
    std::string log;
    EXPECT_EQ(RunCommand(cmd, &log), 0) << log;
    const std::string ext = format == "mp4" ? "mp4" : "ts";
    const auto pattern = dir_.path() / ("part" + std::to_string(id) + "-%d." + ext);
    EXPECT_EQ(
        RunCommand("ffmpeg -nostdin -loglevel error -y -i " + whole.string() +
                       " -copyts -c copy -muxdelay 0 -muxpreload 0 -f segment -segment_time " +
                       std::to_string(segment_seconds) +
                       " "
                       "-segment_format " +
                       format + " " + pattern.string(),
                   &log),
        0)
        << log;
    std::vector<std::string> parts;
    for (int i = 0; i < 100; ++i) {
      const auto path =
          dir_.path() / ("part" + std::to_string(id) + "-" + std::to_string(i) + "." + ext);
      if (!std::filesystem::exists(path)) break;
      parts.push_back(ReadFile(path));
    }
    return parts;
  }

  std::unique_ptr<TranscodeSession> Session(std::vector<RenditionSpec> ladder,
                                            const std::string& container = "mpegts") {
    TranscodeOptions options;
    options.container = container;
    auto session = TranscodeSession::Create(std::move(ladder), options);
    EXPECT_TRUE(session.ok()) << session.status();
    return session.ok() ? *std::move(session) : nullptr;
  }

  TempDir dir_;
  int counter_ = 0;
};

TEST_F(TranscodeSessionTest, KeepsDecoderAndScalersBetweenSegments) {
  const auto parts = Stream(160, 90, 4, false, "mpegts");
  ASSERT_EQ(parts.size(), 4u);
  RenditionSpec half_second_gop = Spec(96, 54);
  half_second_gop.gop_seconds = 0.5;
  auto session = Session({half_second_gop, Spec(0, 46, 15, 1), Spec(160, 90, 60, 1)});
  ASSERT_NE(session, nullptr);
  std::vector<Timeline> timelines(3);
  for (size_t i = 0; i < parts.size(); ++i) {
    auto result = session->Transcode(static_cast<int64_t>(i), parts[i]);
    ASSERT_TRUE(result.ok()) << i << ": " << result.status();
    EXPECT_EQ(result->input_frames, 30) << i;
    ASSERT_EQ(result->renditions.size(), 3u);
    EXPECT_EQ(result->renditions[0].frames, 30) << i;
    EXPECT_EQ(result->renditions[1].frames, 15) << i;
    EXPECT_EQ(result->renditions[1].width, 82) << i;
    EXPECT_EQ(result->renditions[2].frames, 60) << i;
    // Every segment's output has its own keyframes on the 0.5 s grid: frames 0 and 15.
    Demuxed gop = Demux(result->renditions[0].data);
    EXPECT_EQ(gop.keyframes(), 2) << i;
    EXPECT_EQ(gop.keyframe_positions(), (std::vector<int>{0, 15})) << i;
    for (size_t r = 0; r < 3; ++r) {
      timelines[r].Add(result->renditions[r],
                       "segment " + std::to_string(i) + " rendition " + std::to_string(r));
    }
    // The same segment on its own gives the same frames.
    auto alone = TranscodeSegment(parts[i], session->ladder(), session->options());
    ASSERT_TRUE(alone.ok()) << alone.status();
    for (size_t r = 0; r < 3; ++r) {
      EXPECT_EQ(alone->renditions[r].frames, result->renditions[r].frames) << i << " " << r;
      EXPECT_EQ(FirstPts(alone->renditions[r]), FirstPts(result->renditions[r])) << i << " " << r;
    }
  }
  EXPECT_EQ(session->segments_done(), 4);
  EXPECT_EQ(session->decoders_opened(), 1);
  // 160x90 -> 160x90 needs no scaler; the other two are made once each.
  EXPECT_EQ(session->scalers_created(), 2);
}

TEST_F(TranscodeSessionTest, FractionalRatesAcrossSegmentBoundaries) {
  // 4 s at 29.97 and at 23.976, cut at the keyframe after each second: frame rate conversion must
  // neither repeat nor drop a frame where segments meet.
  struct Case {
    std::string fps;
    int frames;  // in the whole stream
    double in_rate;
  };
  for (const Case& c :
       {Case{"30000/1001", 120, 30000.0 / 1001}, Case{"24000/1001", 96, 24000.0 / 1001}}) {
    const auto parts = Stream(160, 90, c.frames / c.in_rate - 0.001, false, "mpegts", 0,
                              "-preset ultrafast", 1, 1, c.fps);
    ASSERT_EQ(parts.size(), 4u) << c.fps;
    auto session = Session(
        {Spec(96, 54), Spec(96, 54, 30000, 1001), Spec(96, 54, 24000, 1001), Spec(96, 54, 30, 1)});
    ASSERT_NE(session, nullptr);
    std::vector<Timeline> timelines(4);
    std::vector<int64_t> totals(4, 0);
    int64_t input_frames = 0;
    for (size_t i = 0; i < parts.size(); ++i) {
      auto result = session->Transcode(static_cast<int64_t>(i), parts[i]);
      ASSERT_TRUE(result.ok()) << c.fps << " " << i << ": " << result.status();
      input_frames += result->input_frames;
      for (size_t r = 0; r < 4; ++r) {
        totals[r] += result->renditions[r].frames;
        timelines[r].Add(result->renditions[r], c.fps + " segment " + std::to_string(i));
      }
    }
    const double seconds = c.frames / c.in_rate;
    EXPECT_EQ(input_frames, c.frames) << c.fps;
    EXPECT_EQ(totals[0], c.frames) << c.fps;
    EXPECT_EQ(totals[1], std::lround(seconds * 30000 / 1001)) << c.fps;
    EXPECT_EQ(totals[2], std::lround(seconds * 24000 / 1001)) << c.fps;
    EXPECT_NEAR(totals[3], seconds * 30, 1) << c.fps;
  }
}

TEST_F(TranscodeSessionTest, HevcStream) {
  if (avcodec_find_encoder_by_name("libx265") == nullptr ||
      avcodec_find_decoder(AV_CODEC_ID_HEVC) == nullptr) {
    GTEST_SKIP() << "libx265 or the HEVC decoder is not available";
  }
  // The later -c:v wins: an HEVC stream.
  const auto parts = Stream(160, 90, 3, true, "mpegts", 0,
                            "-c:v libx265 -preset ultrafast -x265-params log-level=error");
  ASSERT_EQ(parts.size(), 3u);
  auto session = Session({Spec(96, 54), Spec(64, 36, 60, 1)});
  ASSERT_NE(session, nullptr);
  std::vector<Timeline> timelines(2);
  for (size_t i = 0; i < parts.size(); ++i) {
    auto result = session->Transcode(static_cast<int64_t>(i), parts[i]);
    ASSERT_TRUE(result.ok()) << i << ": " << result.status();
    EXPECT_EQ(result->input_frames, 30) << i;
    EXPECT_EQ(result->renditions[0].frames, 30) << i;
    EXPECT_EQ(result->renditions[1].frames, 60) << i;
    for (size_t r = 0; r < 2; ++r) {
      timelines[r].Add(result->renditions[r], "hevc segment " + std::to_string(i));
    }
  }
  EXPECT_EQ(session->decoders_opened(), 1);
}

TEST_F(TranscodeSessionTest, ResolutionChangeBetweenSegments) {
  const auto wide = Stream(160, 90, 2, false, "mpegts", 0);
  const auto narrow = Stream(120, 90, 2, false, "mpegts", 2);
  ASSERT_EQ(wide.size(), 2u);
  ASSERT_EQ(narrow.size(), 2u);
  auto session = Session({Spec(0, 46), Spec(80, 46, 30, 1)});
  ASSERT_NE(session, nullptr);
  std::vector<Timeline> timelines(2);
  const std::vector<const std::string*> parts = {&wide[0], &wide[1], &narrow[0], &narrow[1]};
  for (size_t i = 0; i < parts.size(); ++i) {
    auto result = session->Transcode(static_cast<int64_t>(i), *parts[i]);
    ASSERT_TRUE(result.ok()) << i << ": " << result.status();
    const bool is_wide = i < 2;
    EXPECT_EQ(result->renditions[0].width, is_wide ? 82 : 62) << i;  // 46 * 16/9, 46 * 4/3
    EXPECT_EQ(result->renditions[0].height, 46) << i;
    EXPECT_EQ(result->renditions[0].spec.width, is_wide ? 82 : 62) << i;
    EXPECT_EQ(result->renditions[1].width, 80) << i;
    for (size_t r = 0; r < 2; ++r) {
      EXPECT_EQ(result->renditions[r].frames, 30) << i << " " << r;
      timelines[r].Add(result->renditions[r], "segment " + std::to_string(i));
    }
  }
  EXPECT_EQ(session->decoders_opened(), 2);
  EXPECT_EQ(session->scalers_created(), 4);
  // And back to the first size.
  auto again = session->Transcode(10, wide[0]);
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->renditions[0].width, 82);
  EXPECT_EQ(session->decoders_opened(), 3);
}

TEST_F(TranscodeSessionTest, MixedTsAndMp4Segments) {
  const auto ts = Stream(160, 90, 4, true, "mpegts");
  const auto mp4 = Stream(160, 90, 4, true, "mp4");
  ASSERT_EQ(ts.size(), 4u);
  ASSERT_EQ(mp4.size(), 4u);
  for (const char* container : {"mpegts", "mp4"}) {
    auto session = Session({Spec(96, 54), Spec(64, 36, 25, 1)}, container);
    ASSERT_NE(session, nullptr);
    std::vector<Timeline> timelines(2);
    for (size_t i = 0; i < 4; ++i) {
      const std::string& part = i % 2 == 0 ? ts[i] : mp4[i];
      auto result = session->Transcode(static_cast<int64_t>(i), part);
      ASSERT_TRUE(result.ok()) << container << " " << i << ": " << result.status();
      EXPECT_EQ(result->input_frames, 30) << container << " " << i;
      EXPECT_EQ(result->renditions[0].frames, 30) << container << " " << i;
      EXPECT_NEAR(result->renditions[1].frames, 25, 1) << container << " " << i;
      for (size_t r = 0; r < 2; ++r) {
        timelines[r].Add(result->renditions[r],
                         std::string(container) + " segment " + std::to_string(i));
        Demuxed d = Demux(result->renditions[r].data);
        EXPECT_EQ(d.audio_streams, 1) << container << " " << i;
        EXPECT_GT(d.audio_packets, 30) << container << " " << i;
      }
    }
    EXPECT_EQ(session->segments_done(), 4);
    EXPECT_GE(session->decoders_opened(), 2);  // TS and MP4 carry H.264 differently
  }
}

TEST_F(TranscodeSessionTest, OutOfOrderAndSkippedSegments) {
  const auto parts = Stream(160, 90, 5, false, "mpegts");
  ASSERT_EQ(parts.size(), 5u);
  auto session = Session({Spec(96, 54), Spec(64, 36, 15, 1)});
  ASSERT_NE(session, nullptr);
  // 0, 2, 1, 4: 3 never comes.
  for (int sequence : {0, 2, 1, 4}) {
    auto result = session->Transcode(sequence, parts[sequence]);
    ASSERT_TRUE(result.ok()) << sequence << ": " << result.status();
    EXPECT_EQ(result->renditions[0].frames, 30) << sequence;
    EXPECT_EQ(result->renditions[1].frames, 15) << sequence;
    // Each output sits at its segment's place in the stream.
    for (const RenditionOutput& out : result->renditions) {
      Demuxed d = Demux(out.data);
      EXPECT_EQ(d.error, "") << sequence;
      ASSERT_FALSE(d.video_key.empty());
      EXPECT_TRUE(d.video_key[0]);
      EXPECT_NEAR(FirstPts(out), sequence * 1.0, 0.07) << sequence;
    }
  }
  EXPECT_EQ(session->segments_done(), 4);
  EXPECT_EQ(session->decoders_opened(), 1);
}

TEST_F(TranscodeSessionTest, AudioOnlySegmentMidStreamAndAtTheStart) {
  const auto parts = Stream(160, 90, 3, true, "mpegts");
  ASSERT_EQ(parts.size(), 3u);
  // Segment 1 without its video.
  const auto in = dir_.path() / "with-video.ts";
  const auto out = dir_.path() / "audio-only.ts";
  switchyard::testing::WriteFile(in, parts[1]);
  std::string log;
  ASSERT_EQ(
      RunCommand("ffmpeg -nostdin -loglevel error -y -i " + in.string() +
                     " -copyts -vn -c copy -muxdelay 0 -muxpreload 0 -f mpegts " + out.string(),
                 &log),
      0)
      << log;
  const std::string audio_only = ReadFile(out);

  for (const char* container : {"mpegts", "mp4"}) {
    // At the start: rejected, and the session still works after.
    auto session = Session({Spec(96, 54), Spec(0, 46, 15, 1)}, container);
    ASSERT_NE(session, nullptr);
    auto first = session->Transcode(1, audio_only);
    EXPECT_EQ(first.status().code(), absl::StatusCode::kInvalidArgument) << container;
    EXPECT_THAT(first.status().message(), HasSubstr("first segment"));
    EXPECT_EQ(session->segments_done(), 0);

    std::vector<Timeline> timelines(2);
    for (int i = 0; i < 3; ++i) {
      auto result = session->Transcode(i, i == 1 ? audio_only : parts[i]);
      ASSERT_TRUE(result.ok()) << container << " " << i << ": " << result.status();
      ASSERT_EQ(result->renditions.size(), 2u);
      for (size_t r = 0; r < 2; ++r) {
        const RenditionOutput& rendition = result->renditions[r];
        Demuxed d = Demux(rendition.data);
        EXPECT_EQ(d.error, "") << container << " " << i;
        EXPECT_EQ(d.audio_streams, 1) << container << " " << i;
        EXPECT_GT(d.audio_packets, 30) << container << " " << i;
        EXPECT_EQ(rendition.spec.width, r == 0 ? 96 : 82) << container << " " << i;
        if (i == 1) {
          EXPECT_EQ(rendition.frames, 0) << container;
          EXPECT_EQ(rendition.width, 0) << container;
          EXPECT_EQ(d.video_streams, 0) << container;
        } else {
          EXPECT_EQ(rendition.frames, r == 0 ? 30 : 15) << container << " " << i;
        }
        timelines[r].Add(rendition, std::string(container) + " " + std::to_string(i));
      }
      if (i == 1) {
        EXPECT_EQ(result->input_frames, 0);
        EXPECT_NEAR(result->duration_seconds, 1.0, 0.05);
      }
    }
    EXPECT_EQ(session->segments_done(), 3) << container;
    EXPECT_EQ(session->decoders_opened(), 1) << container;
  }
}

TEST_F(TranscodeSessionTest, OutputTimestampsIncreaseWithBFramesFromZero) {
  // A video-only stream whose first frame is at 0, transcoded with B-frames: the first output's
  // DTS would be negative; the outputs must still continue each other.
  const auto parts = Stream(160, 90, 3, false, "mpegts", 0, "-preset ultrafast");
  ASSERT_EQ(parts.size(), 3u);
  for (const char* container : {"mpegts", "mp4"}) {
    RenditionSpec b = Spec(96, 54);
    b.preset = "veryfast";
    RenditionSpec b25 = Spec(64, 36, 25, 1);
    b25.preset = "medium";
    auto session = Session({b, b25}, container);
    ASSERT_NE(session, nullptr);
    std::vector<Timeline> timelines(2);
    for (int i = 0; i < 3; ++i) {
      auto result = session->Transcode(i, parts[i]);
      ASSERT_TRUE(result.ok()) << container << " " << i << ": " << result.status();
      EXPECT_EQ(result->renditions[0].frames, 30) << container << " " << i;
      EXPECT_EQ(result->renditions[1].frames, 25) << container << " " << i;
      for (size_t r = 0; r < 2; ++r) {
        timelines[r].Add(result->renditions[r], std::string(container) + " " + std::to_string(i));
        EXPECT_NEAR(FirstPts(result->renditions[r]), i * 1.0, 0.05) << container << " " << i;
      }
    }
  }
}

TEST_F(TranscodeSessionTest, OverlappingSegmentsInOrderNeverRepeatTimestamps) {
  // Keyframes every 0.5 s, cut in 0.5 s pieces; MPEG-TS pieces concatenate into longer segments.
  const auto pieces = Stream(160, 90, 2, true, "mpegts", 0, "-preset ultrafast", 0.5, 0.5);
  ASSERT_EQ(pieces.size(), 4u);
  const std::string first = pieces[0] + pieces[1];    // [0, 1)
  const std::string overlap = pieces[1] + pieces[2];  // [0.5, 1.5): half of it already done
  const std::string last = pieces[3];                 // [1.5, 2)
  auto session = Session({Spec(96, 54), Spec(64, 36, 60, 1)});
  ASSERT_NE(session, nullptr);
  std::vector<Timeline> timelines(2);
  const std::vector<std::vector<int64_t>> expected = {{30, 60}, {15, 30}, {15, 30}};
  int i = 0;
  for (const std::string* part : {&first, &overlap, &last}) {
    auto result = session->Transcode(i, *part);
    ASSERT_TRUE(result.ok()) << i << ": " << result.status();
    for (size_t r = 0; r < 2; ++r) {
      EXPECT_EQ(result->renditions[r].frames, expected[i][r]) << i << " " << r;
      timelines[r].Add(result->renditions[r], "segment " + std::to_string(i));
    }
    ++i;
  }
  // Sent again out of order, a segment is transcoded whole on its own timestamps.
  auto again = session->Transcode(7, overlap);
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->renditions[0].frames, 30);
  EXPECT_NEAR(FirstPts(again->renditions[0]), 0.5, 0.05);  // video starts 0.021 s in (AAC priming)
}

TEST_F(TranscodeSessionTest, ATimestampResetStartsAfresh) {
  // The sender restarted: the next segment in sequence goes back to 0. It is a discontinuity,
  // not an overlap: transcoded whole.
  const auto parts = Stream(160, 90, 3, false, "mpegts");
  ASSERT_EQ(parts.size(), 3u);
  auto session = Session({Spec(96, 54), Spec(64, 36, 15, 1)});
  ASSERT_NE(session, nullptr);
  for (int i : {0, 1, 2}) ASSERT_TRUE(session->Transcode(i, parts[i]).ok());
  auto reset = session->Transcode(3, parts[0]);
  ASSERT_TRUE(reset.ok()) << reset.status();
  EXPECT_EQ(reset->renditions[0].frames, 30);
  EXPECT_EQ(reset->renditions[1].frames, 15);
  EXPECT_NEAR(FirstPts(reset->renditions[0]), 0, 0.02);
}

TEST_F(TranscodeSessionTest, AFailedSegmentDoesNotEndTheSession) {
  const auto parts = Stream(160, 90, 2, false, "mpegts");
  ASSERT_EQ(parts.size(), 2u);
  auto session = Session({Spec(96, 54)});
  ASSERT_NE(session, nullptr);
  ASSERT_TRUE(session->Transcode(0, parts[0]).ok());
  auto bad = session->Transcode(1, parts[1].substr(0, parts[1].size() / 2 + 7));
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  auto garbage = session->Transcode(1, std::string(5000, 'x'));
  EXPECT_EQ(garbage.status().code(), absl::StatusCode::kInvalidArgument);
  auto cancelled = session->Transcode(1, parts[1], [] { return true; });
  EXPECT_EQ(cancelled.status().code(), absl::StatusCode::kCancelled);
  auto good = session->Transcode(1, parts[1]);
  ASSERT_TRUE(good.ok()) << good.status();
  EXPECT_EQ(good->renditions[0].frames, 30);
  EXPECT_EQ(session->segments_done(), 2);
  EXPECT_EQ(session->decoders_opened(), 1);
}

// A stream's segments each meet the session's limits (transcode.max_segment_seconds / bytes): one
// over them is refused before decoding, and the stream goes on with the next.
TEST_F(TranscodeSessionTest, ASegmentOverTheLimitsIsRefusedAndTheStreamGoesOn) {
  const auto parts = Stream(160, 90, 3, false, "mpegts");
  ASSERT_EQ(parts.size(), 3u);
  const auto long_parts = Stream(160, 90, 2, false, "mpegts", 0, "-preset ultrafast", 2, 1);
  ASSERT_EQ(long_parts.size(), 1u);
  TranscodeOptions options;
  options.max_input_seconds = 1.0;  // the 1 s parts are exactly at the limit
  options.max_input_bytes = static_cast<int64_t>(
      std::max({parts[0].size(), parts[1].size(), parts[2].size(), long_parts[0].size()}));
  auto created = TranscodeSession::Create({Spec(96, 54)}, options);
  ASSERT_TRUE(created.ok()) << created.status();
  TranscodeSession& session = **created;
  auto first = session.Transcode(0, parts[0]);
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_EQ(first->renditions[0].frames, 30);

  auto too_long = session.Transcode(1, long_parts[0]);
  EXPECT_EQ(too_long.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(too_long.status().message(), "segment: 2.000 s of video, more than the limit of 1 s");
  std::string big = parts[1];
  big.resize(static_cast<size_t>(options.max_input_bytes) + 1, '\0');
  auto too_big = session.Transcode(1, big);
  EXPECT_EQ(too_big.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(too_big.status().message(), HasSubstr("bytes, more than the limit of"));

  auto second = session.Transcode(1, parts[1]);
  ASSERT_TRUE(second.ok()) << second.status();
  EXPECT_EQ(second->renditions[0].frames, 30);
  auto third = session.Transcode(2, parts[2]);
  ASSERT_TRUE(third.ok()) << third.status();
  EXPECT_EQ(session.segments_done(), 3);
  EXPECT_EQ(session.decoders_opened(), 1);
}

TEST_F(TranscodeSessionTest, CreateRejectsABadLadder) {
  EXPECT_EQ(TranscodeSession::Create({}, {}).status().code(), absl::StatusCode::kInvalidArgument);
  auto nine = TranscodeSession::Create(std::vector<RenditionSpec>(9, Spec(64, 36)), {});
  EXPECT_EQ(nine.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(nine.status().message(), HasSubstr("at most 8"));
  TranscodeOptions options;
  options.max_renditions = 2;
  EXPECT_EQ(TranscodeSession::Create(std::vector<RenditionSpec>(3, Spec(64, 36)), options)
                .status()
                .code(),
            absl::StatusCode::kInvalidArgument);
  options.container = "avi";
  EXPECT_EQ(TranscodeSession::Create({Spec(64, 36)}, options).status().code(),
            absl::StatusCode::kInvalidArgument);
  // A bad entry is found on the first segment, as TranscodeSegment would.
  RenditionSpec odd = Spec(63, 36);
  auto session = Session({odd});
  ASSERT_NE(session, nullptr);
  const auto parts = Stream(160, 90, 1, false, "mpegts");
  ASSERT_FALSE(parts.empty());
  auto result = session->Transcode(0, parts[0]);
  EXPECT_EQ(result.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(result.status().message(), HasSubstr("renditions[0].width"));
}

TEST_F(TranscodeSessionTest, ManySegmentsInOneSession) {
  // Repeated use of the kept decoder and scalers (run under valgrind/ASan to check for leaks).
  const auto parts = Stream(96, 54, 2, true, "mpegts");
  ASSERT_EQ(parts.size(), 2u);
  auto session = Session({Spec(64, 36), Spec(32, 18, 15, 1)});
  ASSERT_NE(session, nullptr);
  for (int i = 0; i < 20; ++i) {
    auto result = session->Transcode(i, parts[i % 2]);
    ASSERT_TRUE(result.ok()) << i << ": " << result.status();
    EXPECT_EQ(result->renditions[0].frames, 30) << i;
  }
  EXPECT_EQ(session->decoders_opened(), 1);
  EXPECT_EQ(session->scalers_created(), 2);
}

}  // namespace
}  // namespace switchyard::orchestrator
